"""What every command prints with: the consoles, JSON, progress bars, tables, log lines."""

from __future__ import annotations

import json
import logging
import sys
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
from rich.table import Table

from maedaw.core.util import ProgressFn

if TYPE_CHECKING:  # only the type: importing the loop would import torch with every command
    from maedaw.models.train import StepFn

logger = logging.getLogger(__name__)

stderr = Console(stderr=True)
stdout = Console()


def emit_json(payload: dict) -> None:
    """``--json`` output: the payload on stdout, indented (plain, so scripts can parse it)."""
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def fail(message: object) -> int:
    """One plain ``error:`` line on stderr (no wrapping, no markup: scripts and the DAW parse
    it); returns the exit code 1."""
    sys.stderr.write(f"error: {message}\n")
    return 1


@contextmanager
def progress_bar(enabled: bool) -> Iterator[ProgressFn]:
    """A ``progress(fraction, stage)`` callback drawing a bar on stderr when it is a terminal
    (elsewhere rich would leave a blank line before any ``error:`` line)."""
    if not (enabled and stderr.is_terminal):
        yield lambda fraction, stage: None
        return
    columns = (TextColumn("{task.description:<12}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task("starting", total=1.0)

        def update(fraction: float, stage: str) -> None:
            bar.update(task, completed=min(1.0, fraction), description=stage)

        yield update


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
        console=stderr,
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


def results_table(title: str, columns: tuple[str, ...], text: tuple[str, ...]) -> Table:
    """A benchmark table: the ``text`` columns left-aligned, the numbers right-aligned."""
    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, justify="left" if name in text else "right")
    return table


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, for log collectors (``maedaw serve --log-json``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)
