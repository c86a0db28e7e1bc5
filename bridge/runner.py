"""What a job does: the bridge's typed call into ``dsp``, then the stem and report on disk."""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maedaw.dsp.repair import repair_file

from .contract import ErrorCode, RequestError
from .jobs import Job

if TYPE_CHECKING:
    from maedaw.models.audiomae import AudioMAE

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]


class ModelCache:
    """The worker's loaded model, kept between jobs and reloaded only when the served
    checkpoint (its path or its files on disk) changes. A model that cannot be loaded
    leaves ``None`` and the reason in ``error``: repair then falls back to AR alone
    instead of failing, and jobs that need a model say why they cannot run."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._model: AudioMAE | None = None
        self.error = "no model is installed"

    @staticmethod
    def _fingerprint(path: Path) -> tuple[Any, ...]:
        stats = [p.stat() for p in (path, path.with_suffix(".safetensors"))]
        return (str(path), *((s.st_mtime_ns, s.st_size) for s in stats))

    def get(self, path: Path | None) -> AudioMAE | None:
        if path is None:
            self._key, self._model, self.error = None, None, "no model is installed"
            return None
        from maedaw.models.checkpoint import CheckpointError, load_model

        try:
            key = self._fingerprint(path)
            if key != self._key:
                self._key, self._model = key, None
                model, meta = load_model(path)
                self._model = model.eval()
                log.info("worker loaded model %s from %s", meta.model_id, path)
        except (CheckpointError, OSError, ValueError) as exc:
            self.error = f"the model {path} cannot be loaded: {exc}"
            log.error("%s", self.error)
        return self._model


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write JSON to a temp name in the same folder, flush, then rename into place."""
    temp = path.with_name(f".{path.stem}.partial-{secrets.token_hex(4)}{path.suffix}")
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def run_repair(job: Job, progress: Progress, model: AudioMAE | None) -> dict:
    """Repair the job's region; write the stem, then its report. Returns the summary."""
    request = job.request
    assert job.stem is not None and job.report is not None
    spans = None if request.options.spans == "auto" else request.options.spans
    if job.stem.exists() or job.report.exists():
        raise RequestError(ErrorCode.INTERNAL, f"{job.stem} already exists; not overwriting")
    # The stem is written (atomically) inside; a cancel during the work raises from
    # ``progress`` and leaves nothing, and one right after is undone by the engine.
    report = repair_file(
        request.source,
        job.stem,
        request.start,
        request.end,
        spans,
        progress=lambda f, s: progress(0.98 * f, s),
    )
    job.check()
    payload = report.to_dict()
    payload.update(output=str(job.stem), job_id=job.job_id, client_job=job.client_job)
    write_json_atomic(job.report, payload)
    progress(1.0, "written")
    return {
        "repaired": payload["repaired"],
        "left_alone": payload["left_alone"],
        "seconds": round(sum(report.timings.values()), 3),
    }


RUNNERS: dict[str, Callable[[Job, Progress, AudioMAE | None], dict]] = {
    "repair": run_repair,
}


def run_job(job: Job, progress: Progress, model: AudioMAE | None = None) -> dict:
    runner = RUNNERS.get(job.request.kind)
    if runner is None:
        raise RequestError(ErrorCode.UNSUPPORTED, f"{job.request.kind} is not available yet")
    return runner(job, progress, model)
