"""``maedaw bench batch DIR``: files/s of ``maedaw batch`` on 1 and 2 local workers and on Ray.

The first ``--limit`` audio files of DIR are copied into a scratch library, then each
operation runs on it once per engine (local pool with 1 worker, with 2, and a local Ray
cluster with 2 actors), from a fresh output folder and without the embedding cache, so every
file is really processed. Reported per run: the wall time (including the workers' start:
fork, model load; for Ray also the actors' start), that start on its own, files/s and times
real time after the start (the rate a long library runs at), and times real time per core
(÷ the workers: each runs one torch / BLAS thread, so 1 -> 2 workers is 1 -> 2
cores). Ray's cluster start (``ray.init``) is timed apart: a
render farm's cluster is already running. The load average is recorded beside the numbers:
on a shared machine other work slows every row alike.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from maedaw.bridge.batch import cpu_cores, ray_support, run_batch
from maedaw.bridge.batch_worker import BatchSpec
from maedaw.core.util import CountFn
from maedaw.dsp.audio_io import audio_files, probe

log = logging.getLogger(__name__)

ENGINES = (("local", 1), ("local", 2), ("ray", 2))


def _library(folder: Path, limit: int, scratch: Path) -> tuple[Path, float]:
    """Copy the first ``limit`` readable files into ``scratch/library``; their seconds."""
    library = scratch / "library"
    library.mkdir()
    seconds = 0.0
    for n, path in enumerate(audio_files([folder])[:limit]):
        seconds += probe(path).duration
        shutil.copy(path, library / f"{n:05d}-{path.name}")
    return library, seconds


def bench_batch(
    folder: Path,
    ops: tuple[str, ...] = ("tag", "detect"),
    limit: int = 300,
    ray: bool = True,
    progress: CountFn | None = None,
) -> dict:
    """Run every op on every engine; returns the rows and the machine's state."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="maedaw-bench-batch-") as tmp:
        scratch = Path(tmp)
        library, audio_seconds = _library(folder, limit, scratch)
        files = len(audio_files([library]))
        ray_init = None
        if ray:  # the cluster extra; `maedaw bench batch --no-ray` without it
            ray_init = round(ray_support().start_local(cpu_cores()), 2)
        rows = []
        try:
            for op in ops:
                for engine, workers in ENGINES:
                    if engine == "ray" and not ray:
                        continue
                    out = scratch / f"{op}-{engine}-{workers}"
                    spec = BatchSpec(
                        op,
                        (str(library),),
                        str(out),
                        workers=workers,
                        threads=1,  # a worker is a core: 1 -> 2 workers is 1 -> 2 cores
                        use_cache=False,
                        ray="auto" if engine == "ray" else None,
                    )
                    summary = run_batch(spec, progress)
                    rows.append(_row(summary.to_dict(), files, audio_seconds, spec.threads))
                    log.info("%s", rows[-1])
        finally:
            if ray:
                ray_support().stop()
    return {
        "folder": str(folder),
        "files": files,
        "audio_seconds": round(audio_seconds, 1),
        "cores": cpu_cores(),
        "ray_init_seconds": ray_init,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
        "scaling": _scaling(rows),
    }


def _row(summary: dict, files: int, audio_seconds: float, threads: int) -> dict:
    steady = max(summary["seconds"] - summary["startup_seconds"], 1e-9)
    done = summary["processed"] - len(summary["errors"])
    x_realtime = audio_seconds * done / max(files, 1) / steady
    cores = summary["workers"] * threads
    return {
        "op": summary["op"],
        "engine": summary["engine"],
        "workers": summary["workers"],
        "threads": threads,
        "files": summary["processed"],
        "errors": len(summary["errors"]),
        "wall_s": summary["seconds"],
        "startup_s": summary["startup_seconds"],
        "files_per_s": round(summary["processed"] / steady, 2),
        "files_per_s_wall": summary["files_per_second"],
        "x_realtime": round(x_realtime, 1),
        "x_realtime_per_core": round(x_realtime / cores, 1),
    }


def _scaling(rows: list[dict]) -> dict:
    """Per op: 1 -> 2 local workers (files/s after start), and Ray's overhead against the
    2-worker local pool (how much lower Ray's rate is)."""
    out = {}
    for op in dict.fromkeys(r["op"] for r in rows):
        rate = {(r["engine"], r["workers"]): r["files_per_s"] for r in rows if r["op"] == op}
        entry = {}
        if ("local", 1) in rate and ("local", 2) in rate:
            entry["speedup_1_to_2"] = round(rate[("local", 2)] / rate[("local", 1)], 2)
        if ("ray", 2) in rate and ("local", 2) in rate:
            entry["ray_overhead"] = round(1 - rate[("ray", 2)] / rate[("local", 2)], 3)
        out[op] = entry
    return out


def render_markdown(result: dict) -> str:
    head = (
        f"{result['files']} files, {result['audio_seconds'] / 60:.1f} min of audio, "
        f"{result['cores']} cores; load average {result['load_average_before'][0]:.1f} before, "
        f"{result['load_average_after'][0]:.1f} after (1 min)"
    )
    if result["ray_init_seconds"] is not None:
        head += f"; Ray cluster start {result['ray_init_seconds']} s (not in the rows)"
    lines = [
        head,
        "",
        "| op | engine | workers × threads | wall s | start s | files/s | × real time "
        "| × real time per core | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['op']} | {r['engine']} | {r['workers']} × {r['threads']} | {r['wall_s']:.1f} "
            f"| {r['startup_s']:.1f} | {r['files_per_s']:.2f} | {r['x_realtime']:.0f} "
            f"| {r['x_realtime_per_core']:.0f} | {r['errors']} |"
        )
    lines.append("")
    for op, entry in result["scaling"].items():
        parts = []
        if "speedup_1_to_2" in entry:
            parts.append(f"1 → 2 workers {entry['speedup_1_to_2']:.2f}×")
        if "ray_overhead" in entry:
            parts.append(f"Ray overhead {100 * entry['ray_overhead']:.1f} %")
        lines.append(f"- {op}: " + ", ".join(parts))
    return "\n".join(lines) + "\n"
