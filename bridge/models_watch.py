"""Hot reload: a watchdog observer on the models folder, with validation before a swap.

A checkpoint that appears or changes is loaded and checked in the background
(config, tensor names and shapes, then one reconstruction that must come out
finite), only once its files have stopped changing (a half-copied file is never
loaded). A good one replaces the served model in one reference swap, between
jobs; a bad one is reported and the previous model keeps serving, once per change of its
bytes (reading a file makes the watcher see "opened" events; a refused checkpoint is
remembered by its sizes, times and hashes, so it is not re-validated and re-announced forever).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from maedaw.core.util import file_sha256
from maedaw.models import concealment_config

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".safetensors", ".json")
_RESCAN = Path("\0rescan")  # a queue entry meaning "rescan the whole folder"
DEBOUNCE_S = 1.0  # quiet time after the last change before a checkpoint is read
# Events that say a file was read, not changed: our own validation causes them.
READ_EVENTS = ("opened", "closed_no_write")


@dataclass(frozen=True, slots=True)
class ServedModel:
    model_id: str
    path: Path  # the checkpoint's JSON file
    loaded_at: float


# on_event(kind, client_job, detail, path): kind "loaded" (detail = model id) or "error"
ModelEvent = Callable[[str, str, str, str], None]


def validate_checkpoint(path: Path) -> str:
    """Load ``path`` fully and run one reconstruction; return its model id or raise. (The
    daemon runs this in its job worker process, ``WorkerProcess.validate``: torch's import
    and the load would hold the receiver's GIL for seconds.)"""
    from maedaw.models.checkpoint import load_model

    model, meta = load_model(path)
    smoke_test(model, meta.config)
    return meta.model_id


def smoke_test(model: Any, config: Any) -> None:
    """One seeded masked reconstruction, which must come out finite and of the right shape;
    for an encoder-only model (an imported AudioSet classifier: it tags but cannot inpaint),
    one embedding instead."""
    import torch

    generator = torch.Generator().manual_seed(0)
    fbank = torch.randn(1, *config.img_size, generator=generator)
    with torch.no_grad():
        if not model.has_decoder:
            vector = model.embed(fbank)[0]
            if vector.shape[0] != 1 or not torch.isfinite(vector).all():
                raise ValueError("smoke embedding gave non-finite or mis-shaped output")
            return
        mask = model.make_mask(1, 0.5, generator=generator)
        out = model.reconstruct(fbank, mask)
    if out.shape != fbank.shape or not torch.isfinite(out).all():
        raise ValueError("smoke reconstruction gave non-finite or mis-shaped output")


def smoke_test_concealer(concealer: Any) -> None:
    """One 40 ms gap in a second of seeded noise: the fill must be finite, the right shape,
    and leave every sample outside the gap and its crossfade untouched."""
    import numpy as np

    rate = 16000
    signal = 0.1 * np.random.default_rng(0).standard_normal((1, rate))
    gap = (rate // 2, rate // 2 + 640)
    out = concealer.fill(signal, rate, [gap])
    fade = concealer.fade(rate)
    outside = np.ones(rate, dtype=bool)
    outside[gap[0] - fade : gap[1] + fade] = False
    if out.shape != signal.shape or not np.isfinite(out).all():
        raise ValueError("smoke concealment gave non-finite or mis-shaped output")
    if not np.array_equal(out[:, outside], signal[:, outside]):
        raise ValueError("smoke concealment changed samples outside the gap")


MODEL_FORMAT = "maedaw-audiomae"  # the "format" of our checkpoint JSON (models/checkpoint.py)
CONCEALMENT_FORMAT = concealment_config.FORMAT  # a learned concealment pair's JSON


def _declared_format(json_path: Path) -> str | None:
    """The "format" a checkpoint JSON declares, or None when it cannot say (then the full
    validation reads it and reports what is wrong)."""
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kind = document.get("format") if isinstance(document, dict) else None
    return kind if isinstance(kind, str) else None


def _stat_key(*paths: Path) -> tuple | None:
    """Sizes and modification times: the quick "same file?" look."""
    try:
        return tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    except OSError:
        return None


def _stem(path: Path) -> Path | None:
    """The checkpoint pair a file belongs to (``NAME`` of ``NAME.json``), if any."""
    if path.suffix in CHECKPOINT_SUFFIXES and not path.name.startswith("."):
        return path.with_suffix("")
    return None


class ModelManager:
    """Serves one model at a time out of ``folder``; swaps in good new checkpoints.

    ``model_format`` picks the kind it serves: the Audio-MAE checkpoints (``MODEL_FORMAT``;
    a JSON that declares no format is tried as one) or the learned concealment pairs
    (``CONCEALMENT_FORMAT``; only files that say so). The daemon runs one manager of each
    on the same folder; each leaves the other's files alone."""

    def __init__(
        self,
        folder: Path,
        on_event: ModelEvent,
        validate: Callable[[Path], str] = validate_checkpoint,
        debounce_s: float = DEBOUNCE_S,
        fallback: Path | None = None,
        model_format: str = MODEL_FORMAT,
    ) -> None:
        self.folder = folder
        self.model_format = model_format
        self.fallback = fallback  # served when the folder holds no good checkpoint
        self.on_event = on_event
        self.validate = validate
        self.debounce_s = debounce_s
        self.served: ServedModel | None = None  # replaced whole, never mutated
        self.swap_seconds: float | None = None  # validation + swap time of the last load
        self._changed: dict[Path, float] = {}  # checkpoint stem -> last event time
        # refused checkpoints: stem -> (stat key, content hashes, the reason), see _refused_before
        self._refused: dict[Path, tuple[tuple, tuple[str, ...], str]] = {}
        self._rescan_for = ""  # client job that asked for the pending rescan
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._first_scan = threading.Event()  # set once the start-up scan has finished
        self._observer: Observer | None = None
        self._thread = threading.Thread(target=self._run, name="maedaw-models", daemon=True)

    # --- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        manager = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.is_directory or event.event_type in READ_EVENTS:
                    return
                for raw in (event.src_path, getattr(event, "dest_path", "")):
                    if raw and (stem := _stem(Path(str(raw)))) is not None:
                        manager._touch(stem)

        self._observer = Observer()
        self._observer.schedule(Handler(), str(self.folder), recursive=False)
        self._observer.start()
        self._thread.start()
        self.reload("")  # serve what is already there

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5.0)
        # A validation in progress is allowed to finish: torch torn down under a running
        # thread aborts the interpreter at exit.
        self._thread.join(120.0)

    # --- requests --------------------------------------------------------------------------

    def reload(self, client_job: str) -> None:
        """Rescan the folder now (in the background); the newest good checkpoint wins."""
        with self._lock:
            self._changed[_RESCAN] = 0.0
            self._rescan_for = client_job
        self._wake.set()

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the start-up scan is done (a job then gets the model the user
        installed, not "none yet"); False if it took longer than ``timeout_s``."""
        return self._first_scan.wait(timeout_s)

    @property
    def model_id(self) -> str:
        served = self.served
        return "" if served is None else served.model_id

    # --- the background thread ---------------------------------------------------------------

    def _touch(self, stem: Path) -> None:
        with self._lock:
            self._changed[stem] = time.monotonic()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.debounce_s / 4)
            self._wake.clear()
            now = time.monotonic()
            with self._lock:
                ready = [s for s, t in self._changed.items() if now - t >= self.debounce_s]
                for stem in ready:
                    del self._changed[stem]
                client_job = self._rescan_for
            for stem in ready:
                if stem == _RESCAN:
                    try:
                        self._rescan(client_job)
                    finally:
                        self._first_scan.set()
                else:
                    self._try(stem, "")

    def _rescan(self, client_job: str) -> None:
        pairs = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        candidates = [p for p in pairs if p.with_suffix(".safetensors").exists()]
        if self.fallback is not None and self.fallback.exists():
            candidates.append(self.fallback)
        if not candidates:
            if client_job:
                self.on_event(
                    "error", client_job, f"no checkpoint in {self.folder}", str(self.folder)
                )
            return
        for json_path in candidates:
            if self._try(json_path.with_suffix(""), client_job, quiet=json_path != candidates[0]):
                return

    def _try(self, stem: Path, client_job: str, quiet: bool = False) -> bool:
        json_path, weights = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
        if not (json_path.exists() and weights.exists()):
            return False  # half of a pair (or a deletion): wait for the other half
        if not self._stable(json_path, weights):
            self._touch(stem)  # still being written: look again after the debounce
            return False
        kind = _declared_format(json_path)
        if kind != self.model_format and not (kind is None and self.model_format == MODEL_FORMAT):
            log.debug("%s is a %s file, not a %s; not served", json_path, kind, self.model_format)
            return False  # e.g. a tagger head beside the models: another reader's file
        if (reason := self._refused_before(stem, json_path, weights)) is not None:
            if client_job and not quiet:  # asked for: answered again; the watcher stays quiet
                self.on_event("error", client_job, reason, str(json_path))
            return False
        clock = time.perf_counter()
        before = _stat_key(json_path, weights)
        try:
            model_id = self.validate(json_path)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("refusing checkpoint %s: %s", json_path, reason[:500])
            self._remember_refusal(stem, before, (json_path, weights), reason)
            if not quiet:
                self.on_event("error", client_job, reason, str(json_path))
            return False
        self._refused.pop(stem, None)
        served = self.served
        if served is not None and served.model_id == model_id and served.path == json_path:
            if client_job:
                self.on_event("loaded", client_job, model_id, str(json_path))
            return True
        self.served = ServedModel(model_id, json_path, time.time())  # the atomic swap
        self.swap_seconds = time.perf_counter() - clock
        log.info(
            "serving model %s from %s (%.2f s to validate)", model_id, json_path, self.swap_seconds
        )
        self.on_event("loaded", client_job, model_id, str(json_path))
        return True

    def _refused_before(self, stem: Path, *paths: Path) -> str | None:
        """The reason a checkpoint with exactly these bytes was refused, or None. Sizes and
        times are the quick check; same-looking files with new times are hashed."""
        known = self._refused.get(stem)
        if known is None:
            return None
        stat_key = _stat_key(*paths)
        if stat_key is None:
            return None
        if stat_key == known[0]:
            return known[2]
        try:
            same = tuple(file_sha256(p) for p in paths) == known[1]
        except OSError:
            return None
        if same:  # touched or rewritten with the same bytes: still the same bad checkpoint
            self._refused[stem] = (stat_key, known[1], known[2])
            return known[2]
        return None

    def _remember_refusal(
        self, stem: Path, before: tuple | None, paths: tuple[Path, ...], reason: str
    ) -> None:
        """Remember the refused bytes, unless they changed while being validated (then the
        watcher's next event validates the new ones)."""
        try:
            hashes = tuple(file_sha256(p) for p in paths)
            unchanged = before is not None and _stat_key(*paths) == before
        except OSError:
            unchanged = False
        if unchanged:
            self._refused[stem] = (before, hashes, reason)
        else:
            self._refused.pop(stem, None)

    def _stable(self, *paths: Path) -> bool:
        """Sizes and times unchanged over a short look: no copy in progress."""
        before = _stat_key(*paths)
        time.sleep(0.05)
        return before is not None and _stat_key(*paths) == before
