"""The job journal: every job's state on disk, so a crash never loses one silently.

SQLite in WAL mode with ``synchronous=FULL``: a state change is on disk before
the daemon tells the client about it. After a crash or ``kill -9``, the next
daemon finds the jobs that were queued or running, marks them failed
(``interrupted``), and removes whatever of their output exists.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id      TEXT PRIMARY KEY,
    client_job  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    request     TEXT NOT NULL,
    reply_to    TEXT NOT NULL,
    state       TEXT NOT NULL,
    stem        TEXT,
    report      TEXT,
    error_code  TEXT,
    error       TEXT,
    created     REAL NOT NULL,
    updated     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
"""

UNFINISHED = ("queued", "running")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    job_id: str
    client_job: str
    kind: str
    request: dict
    reply_to: list
    state: str
    stem: str | None
    report: str | None
    error_code: str | None
    error: str | None


class Journal:
    """Thread-safe job journal in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # 256 KiB of page cache, not SQLite's 2 MB: the journal only ever appends and
        # updates recent rows, and a long-running daemon's memory should not grow with it
        self._db.execute("PRAGMA cache_size=-256")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(
        self,
        job_id: str,
        client_job: str,
        kind: str,
        request_json: str,
        reply_to: tuple,
        stem: Path | None,
        report: Path | None,
    ) -> None:
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (job_id, client_job, kind, request, reply_to, state, stem,"
                " report, created, updated) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
                (
                    job_id,
                    client_job,
                    kind,
                    request_json,
                    json.dumps(list(reply_to)),
                    None if stem is None else str(stem),
                    None if report is None else str(report),
                    now,
                    now,
                ),
            )

    def set_state(
        self, job_id: str, state: str, error_code: str | None = None, error: str | None = None
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state = ?, error_code = ?, error = ?, updated = ?"
                " WHERE job_id = ?",
                (state, error_code, error, time.time(), job_id),
            )

    def unfinished(self) -> list[JournalEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT job_id, client_job, kind, request, reply_to, state, stem, report,"
                " error_code, error FROM jobs WHERE state IN (?, ?) ORDER BY created",
                UNFINISHED,
            ).fetchall()
        return [
            JournalEntry(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), *r[5:]) for r in rows
        ]

    def get(self, job_id: str) -> JournalEntry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT job_id, client_job, kind, request, reply_to, state, stem, report,"
                " error_code, error FROM jobs WHERE job_id = ?",
                (job_id,),
            ).fetchone()
        if row is None:
            return None
        return JournalEntry(
            row[0], row[1], row[2], json.loads(row[3]), json.loads(row[4]), *row[5:]
        )

    def recent(self, limit: int = 200) -> list[JournalEntry]:
        with self._lock:
            ids = [
                r[0]
                for r in self._db.execute(
                    "SELECT job_id FROM jobs ORDER BY created DESC LIMIT ?", (limit,)
                )
            ]
        return [entry for job_id in ids if (entry := self.get(job_id)) is not None]
