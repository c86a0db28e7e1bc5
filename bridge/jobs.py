"""The job engine: a bounded queue fair between clients, one worker per device, cancellation,
timeouts.

The receiver thread only ever calls :meth:`JobEngine.reserve` (and ``status``), which
never block: a full queue raises ``busy`` at once; the intake thread then journals the
job and :meth:`JobEngine.submit` queues it in the place held for it. Clients take turns
(``fairqueue``): one client's many jobs never make another's one wait behind all of them.
The engine's lock guards memory only, never a journal write. The worker runs one job at a
time and reports through ``notify`` (the server turns that into OSC replies). Every state
change reaches the journal before the client hears of it.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maedaw.core.util import ProgressFn
from maedaw.dsp.audio_io import AudioError

from .contract import Address, ErrorCode, JobRequest, RequestError
from .fairqueue import FairQueue
from .journal import Journal, JournalEntry

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.1  # at most ten progress replies a second per job
# Finished jobs status remembers (the most recent ones); the journal keeps every job. Without
# a bound a daemon that ran for weeks held every job it ever did (~6 KB each).
KEEP_FINISHED = 256


class JobStopped(Exception):
    """Raised inside a running job when it is cancelled or runs out of time."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(eq=False)
class Job:
    """One job, as the engine tracks it in memory."""

    request: JobRequest
    reply_to: Any  # the server's reply target; opaque here
    stem: Path | None
    report: Path | None
    timeout_s: float
    job_id: str = field(default_factory=lambda: secrets.token_hex(6))
    state: str = "queued"
    fraction: float = 0.0
    stage: str = "queued"
    error: tuple[str, str] | None = None
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    client: str = ""  # who sent it (its reply address): the fair queue's turn
    outward: Callable[[str], str] | None = None  # a server path in the client's namespace
    _last_progress: float = 0.0

    @property
    def client_job(self) -> str:
        return self.request.client_job

    def check(self) -> None:
        """Stop the job here if it was cancelled or is past its deadline."""
        if self.cancelled.is_set():
            raise JobStopped(ErrorCode.CANCELLED, "cancelled by the client")
        if self.started is not None and time.monotonic() - self.started > self.timeout_s:
            raise JobStopped(ErrorCode.TIMEOUT, f"ran past its {self.timeout_s:g} s limit")

    def client_path(self, path: Path | None) -> str:
        """``path`` as the client names it ("" for none): a path map's rule applied back."""
        if path is None:
            return ""
        return str(path) if self.outward is None else self.outward(str(path))

    def to_dict(self) -> dict:
        return {
            "client_job": self.client_job,
            "job_id": self.job_id,
            "kind": self.request.kind,
            "state": self.state,
            "fraction": round(self.fraction, 3),
            "stage": self.stage,
            "stem": None
            if self.stem is None or self.state != "done"
            else self.client_path(self.stem),
            "error": None
            if self.error is None
            else {"code": self.error[0], "message": self.error[1]},
        }


@dataclass(frozen=True, slots=True)
class FinishedJob:
    """What status says of a job that has ended: its reply, frozen; the Job (its request,
    events, paths) is let go."""

    job_id: str
    client_job: str
    created: float
    reply: dict

    @classmethod
    def of(cls, job: Job) -> FinishedJob:
        return cls(job.job_id, job.client_job, job.created, job.to_dict())

    def to_dict(self) -> dict:
        return dict(self.reply)


Notify = Callable[[Job, Address, tuple], None]
Runner = Callable[[Job, ProgressFn], dict]


def remove_outputs(stem: Path | None, report: Path | None) -> None:
    """Delete a job's stem, report and any partial temp files of them."""
    for path in (stem, report):
        if path is None:
            continue
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            for partial in path.parent.glob(f".{path.stem}.partial-*"):
                partial.unlink(missing_ok=True)


class JobEngine:
    """Queue + worker thread(s). ``runner`` does the work, ``notify`` talks to clients."""

    def __init__(
        self,
        journal: Journal,
        runner: Runner,
        notify: Notify,
        max_queue: int = 16,
        workers: int = 1,
    ) -> None:
        self.journal = journal
        self.runner = runner
        self.notify = notify
        self.max_queue = max_queue
        self._queue = FairQueue(max_queue)
        self._jobs: dict[str, Job | FinishedJob] = {}
        self._finished: deque[str] = deque()  # finished job ids, the oldest first
        # re-entrant: stop() finishes queued jobs while it holds the lock
        self._lock = threading.RLock()
        self._threads = [
            threading.Thread(target=self._work, name=f"maedaw-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        self.running = False

    # --- the receiver thread's side: never blocks ---------------------------------

    def start(self) -> None:
        self.running = True
        for thread in self._threads:
            thread.start()

    def reserve(self, client: str = "") -> None:
        """Hold a queue place for ``client``'s job about to be submitted; RequestError(BUSY)
        when the queue is full (``fairqueue`` says when). Never blocks."""
        if not self.running:
            raise RequestError(ErrorCode.BUSY, "the daemon is shutting down")
        self._queue.reserve(client)

    def release(self, client: str = "") -> None:
        """Give back a place :meth:`reserve` held, for a job that was not submitted."""
        self._queue.release(client)

    def submit(self, job: Job, reserved: bool = False) -> int:
        """Journal and queue a job (in its reserved place, or reserving one now); return its
        queue position (jobs that run before it). Raises RequestError(BUSY) when full."""
        if not reserved:
            self.reserve(job.client)
        self.journal.add(
            job.job_id,
            job.client_job,
            job.request.kind,
            job.request.to_json(),
            _reply_tuple(job.reply_to),
            job.stem,
            job.report,
        )
        with self._lock:
            self._jobs[job.job_id] = job
            return self._queue.put(job, job.client)  # fits: the place was held

    def queued_by_client(self) -> dict[str, int]:
        return self._queue.by_client()

    def cancel(self, client_job: str) -> Job:
        """Cancel the newest unfinished job with this client id."""
        with self._lock:
            candidates = [j for j in self._unfinished() if j.client_job == client_job]
            if not candidates:
                raise RequestError(
                    ErrorCode.UNKNOWN_JOB, f"no queued or running job {client_job!r}"
                )
            job = max(candidates, key=lambda j: j.created)
            job.cancelled.set()
            queued = job.state == "queued"
            if queued:  # claimed here: the worker will skip it
                job.state = "cancelled"
                self._queue.discard(job, job.client)
        if queued:
            self._finish(job, "cancelled", ErrorCode.CANCELLED, "cancelled before it ran")
        return job

    def adopt_failed(self, entry: JournalEntry, code: ErrorCode, message: str) -> None:
        """Show a job a previous daemon left unfinished in this run's status, as failed."""
        job = Job(
            JobRequest.from_dict(entry.request),
            None,
            Path(entry.stem) if entry.stem else None,
            Path(entry.report) if entry.report else None,
            0.0,
            job_id=entry.job_id,
            state="failed",
            error=(str(code), message),
        )
        self._retire(job)

    def status(self, client_job: str | None = None) -> list[dict]:
        with self._lock:
            jobs = [j for j in self._jobs.values() if client_job in (None, j.client_job)]
        if client_job and not jobs:
            raise RequestError(ErrorCode.UNKNOWN_JOB, f"no job {client_job!r}")
        return [j.to_dict() for j in sorted(jobs, key=lambda j: j.created)]

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop taking jobs; let the running one finish within ``grace_s``, else cancel it."""
        with self._lock:
            self.running = False
            for job in self._unfinished():
                if job.state == "queued":
                    job.cancelled.set()
                    self._finish(
                        job,
                        "failed",
                        ErrorCode.INTERRUPTED,
                        "the daemon shut down before the job ran",
                    )
        self._queue.close()
        deadline = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                with self._lock:
                    for job in self._unfinished():
                        if job.state == "running":
                            job.cancelled.set()
                thread.join(5.0)

    def _unfinished(self) -> list[Job]:
        """The queued and running jobs (call with the lock held)."""
        return [
            j
            for j in self._jobs.values()
            if isinstance(j, Job) and j.state in ("queued", "running")
        ]

    def _retire(self, job: Job) -> None:
        """Keep only ``job``'s status reply, and forget the oldest finished jobs beyond
        ``KEEP_FINISHED`` (the journal still has them)."""
        with self._lock:
            if not isinstance(self._jobs.get(job.job_id), FinishedJob):
                self._finished.append(job.job_id)
            self._jobs[job.job_id] = FinishedJob.of(job)
            while len(self._finished) > KEEP_FINISHED:
                self._jobs.pop(self._finished.popleft(), None)

    # --- the worker's side -------------------------------------------------------

    def _finish(
        self, job: Job, state: str, code: ErrorCode | None = None, message: str | None = None
    ) -> None:
        job.state = state
        job.error = None if code is None else (str(code), message or "")
        self.journal.set_state(job.job_id, state, None if code is None else str(code), message)
        self._retire(job)  # before the client hears: a status then already says so
        if code is not None:
            self.notify(job, Address.ERROR, (str(code), message or ""))

    def _progress(self, job: Job) -> ProgressFn:
        def report(fraction: float, stage: str) -> None:
            job.check()
            fraction = max(job.fraction, min(1.0, float(fraction)))
            now = time.monotonic()
            changed = stage != job.stage
            job.fraction, job.stage = fraction, stage
            if changed or now - job._last_progress >= PROGRESS_INTERVAL_S:
                job._last_progress = now
                self.notify(job, Address.PROGRESS, (fraction, stage))

        return report

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:  # closed: the daemon is stopping
                return
            if job.cancelled.is_set():
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        with self._lock:
            if job.cancelled.is_set():  # cancelled between the queue and here
                return
            job.state, job.started = "running", time.monotonic()
        self.journal.set_state(job.job_id, "running")
        try:
            job.check()
            summary = self.runner(job, self._progress(job))
            job.check()
        except JobStopped as stop:
            remove_outputs(job.stem, job.report)
            state = "cancelled" if stop.code is ErrorCode.CANCELLED else "failed"
            self._finish(job, state, stop.code, str(stop))
        except RequestError as exc:
            remove_outputs(job.stem, job.report)
            self._finish(job, "failed", exc.code, exc.message)
        except AudioError as exc:
            remove_outputs(job.stem, job.report)
            self._finish(job, "failed", ErrorCode.BAD_AUDIO, str(exc))
        except Exception as exc:
            log.exception("job %s failed", job.job_id)
            remove_outputs(job.stem, job.report)
            self._finish(job, "failed", ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        else:
            job.fraction = 1.0
            self._finish(job, "done")
            stem, report = (job.client_path(p) for p in (job.stem, job.report))
            self.notify(job, Address.DONE, (stem, report, summary))


def _reply_tuple(reply_to: Any) -> tuple:
    describe = getattr(reply_to, "describe", None)
    return tuple(describe()) if callable(describe) else (str(reply_to),)
