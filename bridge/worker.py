"""Jobs run in a worker *process*, not a thread of the receiver's process.

Why: signal work holds the GIL in long native calls (LAPACK, codecs), which
stalled the OSC receiver for hundreds of milliseconds when jobs ran in a thread;
a native crash in a codec would also take the daemon down. In a child process
the receiver answers pings in well under a millisecond whatever a job does, a
stuck job can be killed outright, and a crashed worker is simply restarted.

Protocol over a pipe (parent -> child): ``("run", spec)``; child -> parent:
``("progress", fraction, stage)``, then ``("done", summary)`` or
``("error", code, message)``. Cancellation is a shared event the child checks at
every progress step; a child that does not stop in time is killed.

The model watchers' checks run here too: ``("validate", path)`` (an Audio-MAE checkpoint) or
``("validate-concealment", path)`` -> ``("valid", model_id)`` or ``("invalid", reason)``.
Importing torch and loading a checkpoint in the daemon's own process held its GIL for seconds
(pings stalled for over a second at start-up); here they cost the receiver nothing, and the
checked model stays loaded for the first job. One lock keeps the pipe to one conversation: a
check waits for the running job, and the reverse.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from maedaw.core.util import ProgressFn

from .contract import ErrorCode, JobRequest, RequestError
from .jobs import Job, JobStopped

log = logging.getLogger(__name__)

STOP_GRACE_S = 3.0  # a cancelled child that has not stopped by then is killed
VALIDATE_TIMEOUT_S = 300.0  # a checkpoint check (torch import + load + one pass) past this hung
_CONTEXT = multiprocessing.get_context("spawn")  # never fork a process that has threads


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What the child needs of a job (picklable)."""

    job_id: str
    request: JobRequest
    stem: Path | None
    report: Path | None
    timeout_s: float
    model_path: Path | None = None  # the checkpoint JSON the daemon serves when the job starts
    concealment_path: Path | None = None  # the learned concealment pair's JSON, likewise


def _die_with_parent(parent_pid: int) -> None:
    """Never outlive the daemon: an orphaned worker could still write a stem that the
    restarted daemon's journal has already declared failed."""
    with contextlib.suppress(OSError, AttributeError):  # Linux: the kernel kills us at once
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    def watch() -> None:  # everywhere else (and as a backstop): poll
        while os.getppid() == parent_pid:
            time.sleep(0.1)
        os._exit(3)

    threading.Thread(target=watch, name="maedaw-parent-watch", daemon=True).start()


def _child_main(conn: Connection, cancel: Any, parent_pid: int) -> None:
    """The worker process: run jobs one at a time until the pipe closes."""
    _die_with_parent(parent_pid)
    from maedaw.dsp.audio_io import AudioError

    from .runner import ConcealerCache, ModelCache, run_job

    models = ModelCache()
    concealers = ConcealerCache()
    validators = {"validate": models.validate, "validate-concealment": concealers.validate}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] in validators:
            try:
                conn.send(("valid", validators[message[0]](message[1])))
            except Exception as exc:
                conn.send(("invalid", f"{type(exc).__name__}: {exc}"))
            continue
        if message[0] != "run":
            continue
        spec: JobSpec = message[1]
        job = Job(spec.request, None, spec.stem, spec.report, spec.timeout_s, job_id=spec.job_id)
        job.cancelled = cancel
        job.started = time.monotonic()

        def progress(fraction: float, stage: str, job: Job = job) -> None:
            job.check()
            conn.send(("progress", float(fraction), str(stage)))

        try:
            model = models.ref(spec.model_path, spec.concealment_path, concealers)
            summary = run_job(job, progress, model)
            job.check()
        except JobStopped as stop:
            conn.send(("error", str(stop.code), str(stop)))
        except RequestError as exc:
            conn.send(("error", str(exc.code), exc.message))
        except AudioError as exc:
            conn.send(("error", str(ErrorCode.BAD_AUDIO), str(exc)))
        except Exception as exc:
            logging.getLogger(__name__).exception("job %s failed", spec.job_id)
            conn.send(("error", str(ErrorCode.INTERNAL), f"{type(exc).__name__}: {exc}"))
        else:
            conn.send(("done", summary))


class WorkerProcess:
    """One child process that runs jobs; restarted if it dies or must be killed."""

    def __init__(self) -> None:
        self._process: Any = None
        self._conn: Connection | None = None
        self._cancel = _CONTEXT.Event()
        self._lock = threading.Lock()  # one conversation on the pipe at a time
        self.restarts = 0

    def start(self) -> None:
        parent, child = _CONTEXT.Pipe()
        self._cancel = _CONTEXT.Event()
        self._process = _CONTEXT.Process(
            target=_child_main,
            args=(child, self._cancel, os.getpid()),
            name="maedaw-job-worker",
            daemon=True,
        )
        self._process.start()
        log.info("job worker process %d started", self._process.pid)
        child.close()
        self._conn = parent

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None:
            self._process.join(2.0)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(2.0)

    def _restart(self) -> None:
        self.restarts += 1
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join(5.0)
        if self._conn is not None:
            self._conn.close()
        self.start()

    def validate(
        self, path: Path, timeout_s: float = VALIDATE_TIMEOUT_S, check: str = "validate"
    ) -> str:
        """Check the checkpoint ``path`` in the child (``ModelCache.validate``): its model id,
        or ValueError with the reason. A child that dies or hangs is restarted."""
        with self._lock:
            if self._process is None or not self._process.is_alive():
                self._restart()
            assert self._conn is not None
            self._conn.send((check, path))
            try:
                if not self._conn.poll(timeout_s):
                    raise TimeoutError
                kind, detail = self._conn.recv()
            except (EOFError, OSError, TimeoutError) as exc:
                log.error("the job worker died or hung checking %s; restarting it", path)
                self._restart()
                raise ValueError(f"the worker process failed while checking it: {exc!r}") from exc
        if kind != "valid":
            raise ValueError(detail)
        return detail

    def validate_concealment(self, path: Path, timeout_s: float = VALIDATE_TIMEOUT_S) -> str:
        """Check a learned concealment pair in the child (``ConcealerCache.validate``)."""
        return self.validate(path, timeout_s, check="validate-concealment")

    def run(
        self,
        job: Job,
        progress: ProgressFn,
        model_path: Path | None = None,
        concealment_path: Path | None = None,
    ) -> dict:
        """Run ``job`` in the child with the model at ``model_path`` and the concealment model
        at ``concealment_path`` (loaded there, kept between jobs); ``progress`` may raise
        JobStopped to stop it."""
        with self._lock:
            return self._run(job, progress, model_path, concealment_path)

    def _run(
        self,
        job: Job,
        progress: ProgressFn,
        model_path: Path | None,
        concealment_path: Path | None = None,
    ) -> dict:
        if self._process is None or not self._process.is_alive():
            self._restart()
        assert self._conn is not None
        self._cancel.clear()
        spec = JobSpec(
            job.job_id,
            job.request,
            job.stem,
            job.report,
            job.timeout_s,
            model_path,
            concealment_path,
        )
        self._conn.send(("run", spec))
        try:
            while True:
                if not self._conn.poll(0.05):
                    job.check()  # cancel and timeout act even between progress steps
                    if not self._process.is_alive():
                        raise EOFError
                    continue
                message = self._conn.recv()
                if message[0] == "progress":
                    progress(message[1], message[2])
                elif message[0] == "done":
                    return message[1]
                elif message[0] == "error":
                    code = ErrorCode(message[1])
                    if code in (ErrorCode.CANCELLED, ErrorCode.TIMEOUT):
                        raise JobStopped(code, message[2])
                    raise RequestError(code, message[2])
        except JobStopped:
            self._stop_child_job()
            raise
        except (EOFError, OSError) as exc:
            log.error("the job worker died during job %s; restarting it", job.job_id)
            self._restart()
            raise RequestError(ErrorCode.INTERNAL, "the job worker process died") from exc

    def _stop_child_job(self) -> None:
        """Ask the child to stop its job; kill it if it does not answer in time."""
        assert self._conn is not None
        self._cancel.set()
        deadline = time.monotonic() + STOP_GRACE_S
        with contextlib.suppress(EOFError, OSError):
            while time.monotonic() < deadline:
                if self._conn.poll(0.05) and self._conn.recv()[0] in ("done", "error"):
                    return
        log.warning("the job worker did not stop in %.0f s; killing it", STOP_GRACE_S)
        self._restart()
