"""The job engine in memory: a long-running daemon remembers a bounded number of finished
jobs (the journal keeps all of them), and what it remembers is only their status reply."""

from __future__ import annotations

import threading
from pathlib import Path

from maedaw.bridge.contract import Address, JobRequest, Options
from maedaw.bridge.jobs import KEEP_FINISHED, FinishedJob, Job, JobEngine
from maedaw.bridge.journal import Journal


def _job(n: int, tmp_path: Path) -> Job:
    request = JobRequest("tag", f"take-{n}", tmp_path / "a.wav", 0.0, 1.0, None, Options())
    return Job(request, None, None, None, timeout_s=10.0)


def _engine(
    tmp_path: Path, runner, workers: int = 1
) -> tuple[JobEngine, list, threading.Event, int]:
    events: list = []
    total = KEEP_FINISHED + 40
    all_done = threading.Event()

    def notify(job: Job, address: Address, params: tuple) -> None:
        events.append((job.client_job, address, params))
        if sum(1 for e in events if e[1] in (Address.DONE, Address.ERROR)) == total:
            all_done.set()

    engine = JobEngine(
        Journal(tmp_path / "journal.db"), runner, notify, max_queue=total, workers=workers
    )
    return engine, events, all_done, total


def test_status_keeps_the_latest_finished_jobs_and_the_journal_keeps_all(tmp_path):
    engine, events, all_done, total = _engine(tmp_path, lambda job, progress: {"n": 1})
    jobs = [_job(n, tmp_path) for n in range(total)]
    engine.start()
    for job in jobs:
        engine.submit(job)
    assert all_done.wait(30), len(events)
    listed = engine.status()
    assert [j["client_job"] for j in listed] == [j.client_job for j in jobs[-KEEP_FINISHED:]]
    assert {j["state"] for j in listed} == {"done"}
    assert all(isinstance(j, FinishedJob) for j in engine._jobs.values())
    # the journal still knows the forgotten ones, and says they are done
    assert engine.journal.get(jobs[0].job_id).state == "done"
    assert not engine.journal.unfinished()
    engine.stop(grace_s=1.0)


def test_an_unfinished_job_is_never_forgotten(tmp_path):
    release = threading.Event()

    def runner(job: Job, progress) -> dict:
        if job.client_job == "take-0":
            release.wait(30)  # the first job runs on while every other one finishes
        return {}

    engine, _, all_done, total = _engine(tmp_path, runner, workers=2)
    jobs = [_job(n, tmp_path) for n in range(total)]
    engine.start()
    for job in jobs:
        engine.submit(job)
    latest = [j.client_job for j in jobs[-KEEP_FINISHED:]]
    for _ in range(300):
        listed = {j["client_job"]: j["state"] for j in engine.status()}
        if all(listed.get(c) == "done" for c in latest):
            break
        release.wait(0.1)
    assert listed["take-0"] == "running" and len(listed) == KEEP_FINISHED + 1
    cancelled = engine.cancel("take-0")  # still cancellable: the engine holds the Job
    assert cancelled.cancelled.is_set()
    release.set()
    assert all_done.wait(30)
    assert engine.status("take-0")[0]["state"] == "cancelled"
    engine.stop(grace_s=1.0)
