"""``maedaw batch --ray``: the batch's workers as Ray actors (the only module importing Ray).

Each actor is a :class:`batch_worker.Worker`: one model load per actor, then one file per call,
with two calls queued at each actor so it never waits for the driver between files (a
one-call-per-actor pool idled each actor for a round trip per file: 20 % slower than the local
pool on 20 ms tagging calls). An actor asks for one CPU per torch thread, or one GPU when the
cluster has GPUs (Ray then makes only that GPU visible to it and the embedder runs on CUDA).
Actors read the files and write the stems at the paths the driver gives them, so those paths
must mean the same on every node; only the records (a few kB) travel back, and the driver
journals them as the local pool's. See docs/batch.md.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import replace

import ray

from .batch_worker import BatchError, BatchSpec, Task, Worker

log = logging.getLogger(__name__)

CALLS_PER_ACTOR = 2  # queued at each actor: the next file is there when one finishes


def connect(address: str) -> None:
    """``auto``: the cluster ``ray start`` runs here (or ``RAY_ADDRESS``); a new local one when
    there is none. Anything else: that cluster's address. A driver that already called
    ``ray.init`` (a test, a notebook) keeps its connection."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except ConnectionError as exc:
        if address != "auto":
            raise BatchError(f"cannot reach the Ray cluster at {address}: {exc}") from exc
        log.info("no Ray cluster running here; starting a local one")
        ray.init(include_dashboard=False, log_to_driver=False)


def start_local(cpus: int) -> float:
    """Start a local cluster of ``cpus`` CPUs for this process (the benchmark); its seconds."""
    began = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    return time.perf_counter() - began


def stop() -> None:
    ray.shutdown()


class RayPool:
    """``spec.workers`` actors (default: one per GPU, else one per ``spec.threads`` CPUs)."""

    def __init__(self, spec: BatchSpec) -> None:
        assert spec.ray is not None
        connect(spec.ray)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1))
        count = spec.workers or (gpus or max(1, cpus // spec.threads))
        options = {"num_cpus": spec.threads, "num_gpus": 1 if gpus else 0}
        if gpus and count > gpus:
            options["num_gpus"] = gpus / count  # several actors share each GPU
        self.spec = replace(spec, workers=count)
        remote = ray.remote(Worker).options(**options)
        self._actors = [remote.remote(self.spec) for _ in range(count)]
        self._in_flight: dict[ray.ObjectRef, int] = {}  # call -> the actor's index
        self.slots = CALLS_PER_ACTOR * count
        log.info("Ray: %d actors (%s) on %s", count, options, resources)

    def describe(self) -> dict:
        """The first actor's model; every actor must run the same one (and the same
        concealment model)."""
        try:
            infos = ray.get([actor.describe.remote() for actor in self._actors])
        except ray.exceptions.RayActorError as exc:  # the constructor raised on some node
            raise BatchError(f"a Ray worker could not start: {exc}") from exc
        models = {(info["model_id"], info.get("concealment")) for info in infos}
        if len(models) > 1:
            raise BatchError(
                f"the Ray workers loaded different models ({sorted(map(str, models))}): "
                "install the same models folder on every node"
            )
        return infos[0]

    def submit(self, task: Task) -> None:
        queued = Counter(self._in_flight.values())  # calls waiting at each actor
        index = min(range(len(self._actors)), key=queued.__getitem__)
        self._in_flight[self._actors[index].run.remote(task)] = index

    def pending(self) -> int:
        return len(self._in_flight)

    def next_done(self) -> list[dict]:
        (ready,), _ = ray.wait(list(self._in_flight), num_returns=1)
        del self._in_flight[ready]
        try:
            record = ray.get(ready)
        except ray.exceptions.RayActorError as exc:
            raise BatchError(
                f"a Ray worker died ({exc}); what finished is journaled: run again with --resume"
            ) from exc
        return [record]

    def close(self) -> None:
        for actor in self._actors:
            ray.kill(actor)
