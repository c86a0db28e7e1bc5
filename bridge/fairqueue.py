"""The job queue, fair between clients: one queue per client, served round-robin.

A studio daemon serves several editors; with one FIFO, an editor who sends 200 jobs makes
everyone else wait for all of them. Here each client (one reply address: a DAW session's
socket or connection) has its own queue, and the worker takes the next job from each client
in turn, so another editor's one job runs after at most one job of each other client.

Places are bounded: ``limit`` jobs queued, but a client with nothing queued still gets a
place while fewer than ``2 * limit`` are (so a full queue of one editor's jobs never turns
another editor away); anything more is ``busy``. Places are reserved before a job is
journalled (the receiver thread refuses at once) and filled by :meth:`FairQueue.put`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Any

from .contract import ErrorCode, RequestError


class FairQueue:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._queues: OrderedDict[str, deque] = OrderedDict()  # rotation order: first runs next
        self._reserved: dict[str, int] = {}
        self._cond = threading.Condition()
        self._closed = False

    def _held(self, client: str) -> int:
        return len(self._queues.get(client, ())) + self._reserved.get(client, 0)

    def reserve(self, client: str) -> None:
        """Hold a place for ``client``'s next job, or raise RequestError(BUSY). Never blocks."""
        with self._cond:
            if self._closed:
                raise RequestError(ErrorCode.BUSY, "the daemon is shutting down")
            total = self.qsize() + sum(self._reserved.values())
            if total >= 2 * self.limit or (total >= self.limit and self._held(client)):
                raise RequestError(ErrorCode.BUSY, f"the queue is full ({self.limit} jobs)")
            self._reserved[client] = self._reserved.get(client, 0) + 1

    def release(self, client: str) -> None:
        """Give back a place :meth:`reserve` held, for a job that was not queued."""
        with self._cond:
            left = self._reserved.get(client, 0) - 1
            if left > 0:
                self._reserved[client] = left
            else:
                self._reserved.pop(client, None)

    def put(self, job: Any, client: str) -> int:
        """Queue ``job`` in the place reserved for it; return how many jobs run before it."""
        with self._cond:
            self.release(client)
            position = self._position(client)
            self._queues.setdefault(client, deque()).append(job)
            self._cond.notify()
        return position

    def _position(self, client: str) -> int:
        """Jobs the round-robin runs before ``client``'s next one: up to as many of each
        client's as ``client`` has queued (one more of each client ahead of it in the turn)."""
        own = len(self._queues.get(client, ()))
        ahead = True
        position = own
        for other, jobs in self._queues.items():
            if other == client:
                ahead = False
                continue
            position += min(len(jobs), own + 1 if ahead else own)
        return position

    def get(self) -> Any | None:
        """The next job, in turn (blocks); None once the queue is closed."""
        with self._cond:
            while not self._closed and not self._queues:
                self._cond.wait()
            if self._closed:
                return None
            client, jobs = next(iter(self._queues.items()))
            job = jobs.popleft()
            del self._queues[client]
            if jobs:
                self._queues[client] = jobs  # to the back of the turn
            return job

    def discard(self, job: Any, client: str) -> None:
        """Take a job that will not run (cancelled) out of the queue, freeing its place."""
        with self._cond:
            jobs = self._queues.get(client)
            if jobs is not None and job in jobs:
                jobs.remove(job)
                if not jobs:
                    del self._queues[client]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def qsize(self) -> int:
        return sum(len(jobs) for jobs in self._queues.values())

    def by_client(self) -> dict[str, int]:
        """Queued jobs per client, in the order of the turn."""
        with self._cond:
            return {client: len(jobs) for client, jobs in self._queues.items()}
