"""What each batch worker runs (a local pool's process or a Ray actor): the batch's spec,
one file's task, and :class:`Worker`, which loads the model once and runs each file through
the per-file commands' own functions. Below both :mod:`batch` and :mod:`batch_ray`."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maedaw.core.errors import MaedawError

log = logging.getLogger(__name__)

OPERATIONS = ("tag", "detect", "repair", "restore", "index")
NEEDS_EMBEDDER = ("tag", "index")
STEM_TAG = ".maedaw-"  # every stem the CLI or a batch writes has it; a walk never takes one


class BatchError(MaedawError):
    """A batch cannot start or continue (bad folders, a journal that belongs to another job)."""


def stem_beside(source: Path, job: str) -> Path:
    """Where a stem goes by default: beside its source, ``NAME.maedaw-JOB.wav``."""
    return source.with_name(f"{source.stem}{STEM_TAG}{job}.wav")


@dataclass(frozen=True)
class BatchSpec:
    """One batch: the operation, where to look and write, and the per-file options (the same
    as the per-file command's). Picklable: it travels to every worker."""

    op: str
    roots: tuple[str, ...]
    out: str
    stems_beside: bool = False  # repair/restore: stems beside the sources, not under ``out``
    workers: int = 0  # 0: one per CPU core here (Ray: one per GPU, else per free CPU)
    threads: int = 0  # torch / BLAS threads per worker; 0: the cores shared out (Ray: 1)
    resume: bool = False
    retry_errors: bool = False  # resume: also redo the files whose last run failed
    overwrite: bool = False
    model: str | None = None
    # repair: the learned concealment model, as ``maedaw repair --concealment`` (None: the
    # bundled one; "none": without it)
    concealment: str | None = None
    fp32: bool = False
    use_cache: bool = True
    top: int = 5
    taught: bool = True
    sensitivity: str = "normal"
    restore_op: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    ray: str | None = None  # None: the local pool; "auto" or a cluster address

    def settings(self) -> dict:
        """What a resumed run must share with the run that wrote the journal."""
        keep = ("op", "roots", "stems_beside", "model", "fp32", "top", "taught", "sensitivity")
        settings = {k: v for k, v in asdict(self).items() if k in keep}
        settings.update(restore_op=self.restore_op, options=self.options)
        # Only when used: a batch.json from before the option (no concealer) still resumes
        # with --concealment none, and a default resume of it is refused.
        if self.uses_concealer:
            settings["concealment"] = self.concealment
        return json.loads(json.dumps(settings))  # as the journal's folder keeps it

    @property
    def uses_concealer(self) -> bool:
        """Whether repair loads a learned concealment model (unless ``--concealment none``)."""
        return self.op == "repair" and not _is_none(self.concealment)

    @property
    def needs_torch(self) -> bool:
        """Whether a worker runs a model: an embedder, or for repair an inpainter (unless
        ``--model none``) or the concealer (unless ``--concealment none``)."""
        if self.op in NEEDS_EMBEDDER:
            return True
        return self.op == "repair" and (not _is_none(self.model) or self.uses_concealer)

    @property
    def job(self) -> str:
        """The stem name's job part: ``repair`` or the restore op."""
        return self.restore_op if self.op == "restore" and self.restore_op else self.op


def _is_none(choice: str | None) -> bool:
    """A model option spelled ``none`` (as ``load_inpainter`` / ``load_concealer`` read it)."""
    return choice is not None and choice.strip().lower() == "none"


@dataclass(frozen=True, slots=True)
class Task:
    """One file for a worker: where it is, what it is (hash, size, mtime) and its stem."""

    source: str
    sha256: str
    size: int
    mtime_ns: int
    output: str | None = None


# --------------------------------------------------------------------------------------------
# The worker: one model load, then one file at a time


class Worker:
    """What runs in each worker process or Ray actor: loads the model the operation needs
    once, then :meth:`run` turns a :class:`Task` into a journal record (never raises for a
    bad file: the error is the record)."""

    def __init__(self, spec: BatchSpec) -> None:
        from threadpoolctl import threadpool_limits

        self.spec = spec
        self._limits = threadpool_limits(spec.threads)  # BLAS in scipy / numpy
        self.embedder: Any = None
        self.vocabs: list = []
        self.inpainter: Any = None
        self.concealer: Any = None
        if spec.needs_torch:
            import torch

            torch.set_num_threads(spec.threads)
        if spec.op in NEEDS_EMBEDDER:
            from maedaw.models.embed import load_embedder

            precision = "float32" if spec.fp32 else "auto"
            self.embedder = load_embedder(spec.model, precision=precision)
        if spec.op == "tag":
            from maedaw.models.tagging import no_vocabulary, vocabularies

            self.vocabs = vocabularies(self.embedder, taught=spec.taught)
            if not self.vocabs:
                raise no_vocabulary(self.embedder.model_id)
        if spec.op == "repair":
            from .inpainters import load_concealer, load_inpainter

            # Both models, as ``maedaw repair`` loads them: without the concealer, 15-120 ms
            # gaps would take other methods than the per-file command's.
            self.inpainter = load_inpainter(spec.model)  # "none": AR only
            self.concealer = load_concealer(spec.concealment)  # "none": AR and the Audio-MAE

    def describe(self) -> dict:
        """The model this worker runs (the driver checks every Ray actor has the same one),
        and its concealment model's id when it loaded one."""
        if self.embedder is None:
            info: dict[str, Any] = {"model_id": None, "device": "cpu", "pid": os.getpid()}
        else:
            info = {
                "model_id": self.embedder.model_id,
                "settings_key": self.embedder.settings_key(),
                "dim": self.embedder.dim,
                "device": str(self.embedder.device),
                "pid": os.getpid(),
            }
        if self.concealer is not None:
            info["concealment"] = self.concealer.model_id
        return info

    def run(self, task: Task) -> dict:
        record: dict[str, Any] = {"op": self.spec.op, **asdict(task)}
        began = time.perf_counter()
        try:
            record["result"] = self._process(task)
            record["status"] = "ok"
        except MaedawError as exc:
            record.update(status="error", error=str(exc))
        except Exception as exc:  # a bug or a codec's own error: this file only, with its trace
            log.error("%s: %s", task.source, traceback.format_exc())
            record.update(status="error", error=f"internal error: {type(exc).__name__}: {exc}")
        record["seconds"] = round(time.perf_counter() - began, 4)
        record["worker"] = f"{socket.gethostname()}:{os.getpid()}"
        return record

    def _process(self, task: Task) -> dict:
        spec, source = self.spec, Path(task.source)
        if spec.op == "tag":
            from maedaw.models.tagging import score_embeddings

            emb = self.embedder.embed_file(source, use_cache=spec.use_cache)
            return score_embeddings(emb, self.vocabs, spec.top)
        if spec.op == "index":
            emb = self.embedder.embed_file(source, use_cache=spec.use_cache)
            return {"model_id": emb.model_id, "vector": encode_vector(emb.clip)}
        if spec.op == "detect":
            from maedaw.dsp.scan import scan_file

            return scan_file(source, level=spec.sensitivity).to_dict()
        assert task.output is not None
        output = Path(task.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        overwrite = spec.overwrite or spec.resume  # a stem without a journal line is ours
        if spec.op == "repair":
            from maedaw.dsp.repair import RepairConfig, repair_file

            config = RepairConfig(sensitivity=spec.sensitivity)
            report = repair_file(
                source,
                output,
                config=config,
                overwrite=overwrite,
                inpainter=self.inpainter,
                concealer=self.concealer,
            )
        else:
            from maedaw.dsp.restore import restore_file

            assert spec.restore_op is not None
            report = restore_file(
                source, output, op=spec.restore_op, options=spec.options, overwrite=overwrite
            )
        return {**report.to_dict(), "output": str(output)}


def encode_vector(vector: Any) -> str:
    """A clip vector as base64 float32 (exact, a third the size of a JSON list)."""
    import numpy as np

    return base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode("ascii")


def decode_vector(text: str) -> Any:
    import numpy as np

    return np.frombuffer(base64.b64decode(text), "<f4").copy()
