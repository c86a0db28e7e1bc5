"""What every command prints with: the consoles, JSON, progress bars, tables, log lines."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

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
def progress_bar(enabled: bool) -> Iterator[Callable[[float, str], None]]:
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
