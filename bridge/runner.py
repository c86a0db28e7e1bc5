"""What a job does: the bridge's typed call into ``dsp``, then the stem and report on disk."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from maedaw.dsp.repair import repair_file

from .contract import ErrorCode, RequestError
from .jobs import Job


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


def run_repair(job: Job, progress: Callable[[float, str], None]) -> dict:
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


RUNNERS: dict[str, Callable[[Job, Callable[[float, str], None]], dict]] = {
    "repair": run_repair,
}


def run_job(job: Job, progress: Callable[[float, str], None]) -> dict:
    runner = RUNNERS.get(job.request.kind)
    if runner is None:
        raise RequestError(ErrorCode.UNSUPPORTED, f"{job.request.kind} is not available yet")
    return runner(job, progress)
