"""Showing a training run's progress: a rich bar on stderr for the steps, log lines for the cache.

The training loop (``maedaw.models.train``) only calls back; what the user sees is made here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:  # only the types: importing the loop would import torch with every command
    from maedaw.models.train import StepFn

logger = logging.getLogger(__name__)


def log_cache_progress(done: int, total: int) -> None:
    """The fbank cache's ``CountFn``: a log line every 200 files and at the end."""
    if done == total or done % 200 == 0:
        logger.info("fbank cache: %d/%d files", done, total)


@contextmanager
def step_bar() -> Iterator[StepFn]:
    """A ``StepFn`` drawing the steps, loss, windows/s and lr as a bar on stderr. The bar starts
    at the first call (the loop's start: the cache is built by then) and stops on leaving."""
    progress = Progress(
        TextColumn("train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.2f} win/s"),
        TextColumn("lr {task.fields[lr]:.1e}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    task: TaskID | None = None

    def update(step: int, total: int, info: dict[str, float]) -> None:
        nonlocal task
        fields = {
            "loss": info.get("loss", float("nan")),
            "rate": info.get("windows_per_second", 0.0),
            "lr": info.get("lr", 0.0),
        }
        if task is None:
            progress.start()
            task = progress.add_task("train", total=total, completed=step, **fields)
        else:
            progress.update(task, total=total, completed=step, **fields)

    try:
        yield update
    finally:
        if task is not None:
            progress.stop()
