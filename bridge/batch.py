"""``maedaw batch``: one operation over every audio file of some folders, resumable.

The driver (this process) walks the folders, hashes each file, skips what the journal already
holds, and hands the rest to workers: a local process pool by default, Ray actors with
``--ray`` (:mod:`batch_ray`, the only module that imports Ray). A worker loads the model
once (:class:`batch_worker.Worker`) and runs each file through the same functions as the
per-file commands (``score_embeddings`` for ``tag``, ``scan_file`` for ``detect``,
``repair_file``, ``restore_file``, ``Embedder.embed_file`` for ``index``), so a file's result
is the one ``maedaw tag --json FILE`` would give.

The journal is ``OUT/results.jsonl``: one JSON line per finished file (result or error),
appended by the driver only (fsync'd at most every ``SYNC_S``), keyed by the file's path and
content hash. It is both the results and the resume state, so the two can never disagree.
``kill -9`` at any moment leaves every line whole except perhaps the last, which a resume
drops; files without a line are done again (their stems are written to a temp name and
renamed, so a half-written stem never exists). ``report.csv`` (one row per file, errors
included) and ``summary.json`` are rewritten from the journal at the end of every run;
``index`` also brings the similarity index of the folders (the one ``maedaw similar --in
DIR...`` searches) up to date from the vectors in the journal. docs/batch.md is the user's
account.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import io
import json
import logging
import multiprocessing
import os
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from maedaw.core.util import CountFn, file_sha256, write_json_atomic, write_text_atomic

from .batch_worker import (
    OPERATIONS,
    STEM_TAG,
    BatchError,
    BatchSpec,
    Task,
    Worker,
    decode_vector,
    stem_beside,
)

log = logging.getLogger(__name__)

JOURNAL, REPORT, SUMMARY, SETTINGS = "results.jsonl", "report.csv", "summary.json", "batch.json"
DIED = "a worker process died while this file was in it"
SYNC_S = 0.25  # the journal's fsync interval
RAY_MISSING = 'the --ray option needs Ray: pip install "maedaw[cluster]"'


_WORKER: Worker | None = None  # the local pool's per-process worker


def _exit_with(pid: int) -> None:
    """Exit as soon as process ``pid`` (the driver) does: kill -9 of the driver must not leave
    workers writing stems. Not the parent-death signal: a worker's parent is the fork server,
    which itself waits for the workers (they hold its pipe) to end."""

    def watch() -> None:
        try:
            handle = os.pidfd_open(pid)  # Linux: readable when the process has exited
        except (AttributeError, OSError):
            handle = None
        if handle is not None:
            select.select([handle], [], [])
        else:
            while _running(pid):
                time.sleep(0.2)
        os._exit(3)

    threading.Thread(target=watch, name="maedaw-driver-watch", daemon=True).start()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_READY: Any = None  # a barrier of all the pool's workers (see LocalPool.describe)


def _init_local(spec: BatchSpec, driver: int, ready: Any) -> None:
    global _WORKER, _READY
    _exit_with(driver)
    _WORKER, _READY = Worker(spec), ready


def _run_local(task: Task) -> dict:
    assert _WORKER is not None
    return _WORKER.run(task)


def _describe_local() -> dict:
    assert _WORKER is not None
    _READY.wait()  # so each worker answers one of the pool's describe calls
    return _WORKER.describe()


# --------------------------------------------------------------------------------------------
# Pools: the local one here, Ray's in batch_ray.py


class Pool(Protocol):
    """Runs tasks on workers; the driver keeps at most ``slots`` of them in flight."""

    spec: BatchSpec  # with the worker and thread counts it resolved
    slots: int

    def describe(self) -> dict: ...
    def submit(self, task: Task) -> None: ...
    def pending(self) -> int: ...
    def next_done(self) -> list[dict]: ...
    def close(self) -> None: ...


def _context(spec: BatchSpec) -> multiprocessing.context.BaseContext:
    """Workers come from a fork server: a fresh single-threaded process that imports torch
    and the model code once, then forks each worker (a spawned worker would import torch
    itself, seconds each; forking the driver is unsafe once it has threads). Where there is
    no fork server (Windows), spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    preload = ["maedaw.bridge.batch", "maedaw.dsp.scan", "maedaw.dsp.repair", "maedaw.dsp.restore"]
    if spec.needs_torch:
        preload += ["torch", "maedaw.models.tagging", "maedaw.models.inpaint"]
        preload += ["maedaw.models.concealment"]
    context.set_forkserver_preload(preload)  # only the first pool of a process starts it
    return context


class LocalPool:
    """``workers`` processes from a fork server (:func:`_context`), each with
    its own :class:`Worker`. A worker that dies (a native crash) fails the files in flight,
    which a resume retries, and the pool is started afresh."""

    def __init__(self, spec: BatchSpec) -> None:
        self.spec = spec
        self.slots = 2 * spec.workers  # a queued file per worker: no idle gap between files
        self._futures: dict[cf.Future, Task] = {}
        self._context = _context(spec)
        self._ready = self._context.Barrier(spec.workers)
        self._executor = self._start()

    def _start(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            max_workers=self.spec.workers,
            mp_context=self._context,
            initializer=_init_local,
            initargs=(self.spec, os.getpid(), self._ready),
        )

    def describe(self) -> dict:
        """The model, once every worker has loaded it (so the start-up time is the whole
        pool's; each submit starts one more process, each answer waits for all of them)."""
        try:
            calls = [self._executor.submit(_describe_local) for _ in range(self.spec.workers)]
            infos = [call.result() for call in calls]
            return infos[0]
        except cf.process.BrokenProcessPool as exc:  # the initializer raised: say why
            Worker(self.spec)  # the same load here raises the MaedawError the worker hit
            raise BatchError(f"the workers could not start: {exc}") from exc

    def submit(self, task: Task) -> None:
        self._futures[self._executor.submit(_run_local, task)] = task

    def pending(self) -> int:
        return len(self._futures)

    def next_done(self) -> list[dict]:
        done, _ = cf.wait(self._futures, return_when=cf.FIRST_COMPLETED)
        records, broken = [], False
        for future in done:
            task = self._futures.pop(future)
            try:
                records.append(future.result())
            except cf.process.BrokenProcessPool:
                broken = True
                records.append(_failed(self.spec.op, task, DIED))
        if broken:  # every other file in flight went down with the pool
            for task in self._futures.values():
                records.append(_failed(self.spec.op, task, DIED))
            self._futures.clear()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._start()
        return records

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _failed(op: str, task: Task, error: str) -> dict:
    """The record of a file that never got a fair run (a resume tries it again)."""
    record = {"op": op, **asdict(task), "status": "error", "error": error, "seconds": 0.0}
    return {**record, "retry": True}


def cpu_cores() -> int:
    """The cores this process may use (a container's or taskset's limit, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def open_pool(spec: BatchSpec) -> Pool:
    if spec.ray is None:
        workers = spec.workers or cpu_cores()
        threads = spec.threads or max(1, cpu_cores() // workers)  # N workers never oversubscribe
        return LocalPool(replace(spec, workers=workers, threads=threads))
    return ray_support().RayPool(replace(spec, threads=spec.threads or 1))


def ray_support() -> ModuleType:
    """:mod:`batch_ray`, or a :class:`BatchError` saying how to install Ray."""
    try:
        from . import batch_ray
    except ImportError as exc:
        raise BatchError(RAY_MISSING) from exc
    return batch_ray


# --------------------------------------------------------------------------------------------
# The journal


class BatchJournal:
    """``OUT/results.jsonl``, appended one fsync'd line per finished file."""

    def __init__(self, out: Path, spec: BatchSpec) -> None:
        self.path = out / JOURNAL
        out.mkdir(parents=True, exist_ok=True)
        settings_path = out / SETTINGS
        if self.path.exists() and not spec.resume:
            raise BatchError(
                f"{out} already holds a batch ({JOURNAL}): add --resume to continue it, "
                "or choose another --out"
            )
        if spec.resume and settings_path.exists():
            before = json.loads(settings_path.read_text(encoding="utf-8"))
            if before != spec.settings():
                raise BatchError(
                    f"{out} holds a batch with other settings ({before}); "
                    "resume it with the same command, or choose another --out"
                )
        write_json_atomic(settings_path, spec.settings(), indent=2)
        self.records = list(read_journal(self.path))
        self._handle = open(self.path, "ab")  # noqa: SIM115 (open until close(), like a log)
        self._synced = time.monotonic()

    def done(self, retry_errors: bool = False) -> set[tuple[str, str]]:
        """(path, sha256) of every file a resume skips: those with a result, and those whose
        bytes failed (the same bytes fail the same way) unless ``retry_errors``. A file whose
        worker died, or that could not be read at all, is always tried again."""
        return {
            (r["source"], r["sha256"])
            for r in self.latest()
            if r["status"] == "ok" or not (retry_errors or r.get("retry"))
        }

    def append(self, record: dict) -> None:
        """Write the line at once (a kill -9 of this process keeps it: it is in the kernel);
        fsync at most every ``SYNC_S`` (a power cut loses at most that much, which a resume
        does again), since an fsync per file costs more than detecting a short clip."""
        self._handle.write(json.dumps(record).encode() + b"\n")
        self._handle.flush()
        if time.monotonic() - self._synced >= SYNC_S:
            self._sync()
        self.records.append(record)

    def _sync(self) -> None:
        os.fsync(self._handle.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        self._sync()
        self._handle.close()

    def latest(self) -> list[dict]:
        """The last record of each file (a retried error is replaced by its new result)."""
        by_source: dict[str, dict] = {}
        for record in self.records:
            by_source[record["source"]] = record
        return sorted(by_source.values(), key=lambda r: r["source"])


def read_journal(path: Path) -> Iterator[dict]:
    """The journal's whole lines. A torn last line (kill -9 mid-write) is cut off the file,
    so the next append starts on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    whole = data.rfind(b"\n") + 1
    if whole < len(data):
        log.warning("%s: dropping a torn last line (%d bytes)", path, len(data) - whole)
        with open(path, "rb+") as handle:
            handle.truncate(whole)
            os.fsync(handle.fileno())
    for number, line in enumerate(data[:whole].splitlines(), 1):
        try:
            yield json.loads(line)
        except json.JSONDecodeError:  # only a torn line can be bad; whole ones never are
            log.warning("%s:%d: not a journal line, ignored", path, number)


# --------------------------------------------------------------------------------------------
# The driver


def library_files(roots: Sequence[str | os.PathLike[str]], out: Path | None) -> list[Path]:
    """The audio files of the folders (as ``maedaw similar`` sees them), without the stems and
    batch output of earlier runs."""
    from maedaw.dsp.audio_io import audio_files

    files = audio_files(roots)  # AudioError for a folder that is not one
    skip = None if out is None else out.resolve()
    return [p for p in files if STEM_TAG not in p.name and (skip is None or skip not in p.parents)]


def _stem_path(spec: BatchSpec, source: Path, roots: Sequence[Path]) -> str | None:
    """repair / restore: beside the source, or mirrored under ``OUT/<root name>/``."""
    if spec.op not in ("repair", "restore"):
        return None
    if spec.stems_beside:
        return str(stem_beside(source, spec.job))
    for number, root in enumerate(roots):
        if root in source.parents:
            name = root.name if number == 0 else f"{root.name}-{number + 1}"
            rel = source.relative_to(root)
            return str(stem_beside(Path(spec.out) / name / rel, spec.job))
    # A symlink inside a folder resolves to somewhere else: mirror its full path.
    return str(
        stem_beside(Path(spec.out) / "elsewhere" / source.relative_to(source.anchor), spec.job)
    )


@dataclass
class BatchSummary:
    op: str
    out: str
    files: int
    processed: int  # this run
    skipped: int  # done by an earlier run
    failed: int  # this run
    errors: list[dict]  # every file whose latest record is an error
    seconds: float
    startup_seconds: float  # until every worker had loaded its model (in ``seconds``)
    files_per_second: float
    workers: int
    engine: str  # "local" or "ray"
    index: dict | None = None
    report: str = ""
    journal: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def run_batch(spec: BatchSpec, progress: CountFn | None = None) -> BatchSummary:
    """Run ``spec`` to the end (or until interrupted: the journal keeps what finished).
    ``progress(done, total)`` counts the files this run processes; files an earlier run
    finished are taken off the total as they are found."""
    if spec.op not in OPERATIONS:
        raise BatchError(f"unknown batch operation {spec.op!r} (one of {', '.join(OPERATIONS)})")
    if spec.op == "tag" and spec.top < 1:
        raise BatchError(f"--top must be at least 1, got {spec.top}")
    if spec.op == "restore":
        from maedaw.dsp.restore import get_op

        get_op(spec.restore_op or "")  # an unknown op fails here, not once per file
    if spec.workers < 0 or spec.threads < 0:
        raise BatchError("--workers and --threads must be positive")
    out = Path(spec.out)
    roots = [Path(r).resolve() for r in spec.roots]
    files = library_files(roots, out)
    journal = BatchJournal(out, spec)
    done_before = journal.done(spec.retry_errors)
    began = time.perf_counter()
    processed = skipped = failed = 0
    total = len(files)

    def record(rec: dict) -> None:
        nonlocal processed, failed
        journal.append(rec)
        processed += 1
        failed += rec["status"] != "ok"
        if progress is not None:
            progress(processed, total)

    pool: Pool | None = None  # started at the first file to do: a finished resume needs none
    worker_info: dict = {}
    startup = 0.0

    def started() -> Pool:
        nonlocal pool, worker_info, startup
        if pool is None:
            pool = open_pool(spec)
            worker_info = pool.describe()
            startup = time.perf_counter() - began
        return pool

    try:
        for task in _tasks(spec, files, roots, done_before, record):
            if task is None:  # finished by an earlier run
                skipped += 1
                total -= 1
                if progress is not None:
                    progress(processed, total)
                continue
            workers = started()
            while workers.pending() >= workers.slots:
                for rec in workers.next_done():
                    record(rec)
            workers.submit(task)
        while pool is not None and pool.pending():
            for rec in pool.next_done():
                record(rec)
        if spec.op == "index":
            started()  # the index is keyed by the model's settings, which the workers know
    finally:
        if pool is not None:
            pool.close()
        journal.close()
    seconds = time.perf_counter() - began
    latest = journal.latest()
    index = _update_index(spec, roots, files, latest, worker_info) if spec.op == "index" else None
    summary = BatchSummary(
        op=spec.op,
        out=str(out),
        files=len(files),
        processed=processed,
        skipped=skipped,
        failed=failed,
        errors=[{"source": r["source"], "error": r["error"]} for r in latest if "error" in r],
        seconds=round(seconds, 3),
        startup_seconds=round(startup, 3),
        files_per_second=round(processed / seconds, 3) if seconds > 0 else 0.0,
        workers=0 if pool is None else pool.spec.workers,
        engine="local" if spec.ray is None else "ray",
        index=index,
        report=str(write_report(out / REPORT, latest)),
        journal=str(journal.path),
    )
    write_json_atomic(out / SUMMARY, summary.to_dict(), indent=2)
    return summary


def _tasks(
    spec: BatchSpec,
    files: Iterable[Path],
    roots: Sequence[Path],
    done: set[tuple[str, str]],
    record: Callable[[dict], None],
) -> Iterator[Task | None]:
    """Hash each file as it is reached (so work starts at once); None for a finished one.
    A file that cannot even be read is recorded as an error here."""
    for path in files:
        try:
            st = path.stat()
            sha = file_sha256(path)
        except OSError as exc:
            unread = Task(str(path), "", 0, 0)
            record(_failed(spec.op, unread, f"{path}: cannot read: {exc}"))
            continue
        if (str(path), sha) in done:
            yield None
            continue
        yield Task(str(path), sha, st.st_size, st.st_mtime_ns, _stem_path(spec, path, roots))


def _update_index(
    spec: BatchSpec, roots: Sequence[Path], files: Sequence[Path], latest: list[dict], info: dict
) -> dict:
    """Bring the folders' similarity index in line with the vectors in the journal."""
    from maedaw.models.similar import SimilarIndex

    index = SimilarIndex.at(roots, info["settings_key"], info["model_id"], info["dim"])
    todo, stats = index.stale(files)
    vectors = {
        (r["source"], r["size"], r["mtime_ns"]): r["result"]["vector"]
        for r in latest
        if r["status"] == "ok"
    }
    for name, _, st in todo:
        vector = vectors.get((name, st.st_size, st.st_mtime_ns))
        if vector is None:
            stats["failed"] += 1
        else:
            stats[index.put(name, st, decode_vector(vector))] += 1
    index.save()
    return {"folder": str(index.folder), "size": len(index.index), **stats, "model": info}


# --------------------------------------------------------------------------------------------
# The report


def _summary_text(record: dict) -> str:
    """One readable cell per file for the CSV."""
    result = record.get("result") or {}
    op = record.get("op")
    if op == "tag":
        return "; ".join(f"{t['label']} {t['score']:.2f}" for t in result.get("tags", []))
    if op == "detect":
        counts = result.get("counts", {})
        return ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no damage found"
    if op == "repair":
        return f"{result.get('repaired', 0)} repaired, {result.get('left_alone', 0)} left alone"
    if op == "restore":
        return f"{result.get('what_changed', '')} ({result.get('changed_samples', 0)} samples)"
    if op == "index":
        return "indexed"
    return ""


def write_report(path: Path, records: Sequence[dict]) -> Path:
    """``report.csv``: one row per file, errors included."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(("source", "status", "summary", "output", "error", "seconds", "sha256"))
    for r in records:
        ok = r["status"] == "ok"
        writer.writerow(
            (
                r["source"],
                r["status"],
                _summary_text(r) if ok else "",
                (r.get("result") or {}).get("output", "") if ok else "",
                r.get("error", ""),
                r.get("seconds", ""),
                r.get("sha256", ""),
            )
        )
    return write_text_atomic(path, buffer.getvalue())
