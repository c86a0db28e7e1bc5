"""Small helpers several layers need: atomic writes, interval merging, file hashes, progress types.

Nothing here knows about audio or models; anything that does belongs in its own layer.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from threadpoolctl import ThreadpoolController

ProgressFn = Callable[[float, str], None]
"""Progress of one job: the fraction done (0..1) and the stage it is in."""

CountFn = Callable[[int, int], None]
"""Progress of a loop over known work: items done, items in all."""

FractionFn = Callable[[float], None]
"""Progress of one step of a job: the fraction of it done (0..1)."""


PARTIAL = ".partial-"  # the infix of every temp name (corpus scans and .gitignore skip it)
_PARTIAL_NAME = re.compile(r"\..+\.partial-(\d+)-[0-9a-f]{8}(\.[^.]*)?")


def temp_beside(final: Path) -> Path:
    """A fresh temporary name in ``final``'s folder (so the rename is atomic).

    It reads ``.NAME.partial-PID-XXXXXXXX.EXT``: the suffix stays last because writers pick
    the format from it; the ``.partial-`` infix is what the journal's clean-up and
    ``.gitignore`` look for; the writer's pid lets :func:`sweep_partials` tell a temp whose
    writer was killed (``kill -9`` skips every clean-up) from one still being written.
    """
    name = f".{final.stem}{PARTIAL}{os.getpid()}-{secrets.token_hex(4)}{final.suffix}"
    return final.with_name(name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def sweep_partials(folder: Path) -> list[Path]:
    """Remove the temp files in ``folder`` (not below) whose writing process is dead; return
    them. A live writer's temp, and any name without a pid, is left alone."""
    removed = []
    with contextlib.suppress(OSError):
        for path in folder.iterdir():
            match = _PARTIAL_NAME.fullmatch(path.name)
            if match and not _alive(int(match.group(1))) and path.is_file():
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; when the block ends without an error, sync it
    and rename it over ``final``. On any error (or interruption) it is removed and ``final`` is
    left as it was: a reader sees the old file or the whole new one, never half of one."""
    final = Path(final)
    temp = temp_beside(final)
    try:
        yield temp
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)


def write_bytes_atomic(
    path: str | os.PathLike[str], data: bytes, *, mode: int | None = None
) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_path`; return the path."""
    with atomic_path(path, mode=mode) as temp:
        temp.write_bytes(data)
    return Path(path)


def write_text_atomic(
    path: str | os.PathLike[str], text: str, *, mode: int | None = None, errors: str = "strict"
) -> Path:
    """Write UTF-8 ``text`` to ``path`` through :func:`atomic_path`; return the path."""
    return write_bytes_atomic(path, text.encode("utf-8", errors), mode=mode)


def write_json_atomic(
    path: str | os.PathLike[str], document: Any, *, mode: int | None = None, **dump_options: Any
) -> Path:
    """Write ``document`` as JSON (``json.dumps`` options pass through); return the path."""
    return write_text_atomic(path, json.dumps(document, **dump_options), mode=mode)


def merge_intervals(spans: Iterable[tuple[int, int]], join: int = 0) -> list[tuple[int, int]]:
    """Sort half-open ``(start, end)`` intervals and merge those less than ``join`` + 1 apart.

    ``join=0`` merges overlapping and touching intervals; a larger ``join`` also merges
    intervals whose gap is at most ``join``.
    """
    merged: list[tuple[int, int]] = []
    for start, end in sorted((int(a), int(b)) for a, b in spans):
        if merged and start - merged[-1][1] <= join:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (any size, bounded memory)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@functools.cache
def blas_controller() -> ThreadpoolController:
    """The process's BLAS libraries (finding them takes milliseconds: done once)."""
    return ThreadpoolController()


def blas_threads() -> int:
    """Threads the BLAS libraries may use now (a batch worker limits them to its share)."""
    pools = blas_controller().select(user_api="blas").lib_controllers
    return max((pool.num_threads for pool in pools), default=1)
