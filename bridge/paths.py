"""Which files a request may read and where it may write.

The daemon takes paths from the network, so each one is checked before use:
absolute, no ``..``, existing, and (after following symlinks) inside an
allowed root. With no roots configured, the roots are the request's own: the
source's folder (a symlinked source may not lead out of it) and the output
folder it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .contract import ErrorCode, RequestError


def _forbidden(message: str) -> RequestError:
    return RequestError(ErrorCode.FORBIDDEN, message)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@dataclass(frozen=True, slots=True)
class PathPolicy:
    roots: tuple[Path, ...] = ()  # resolved; empty = each request's own folders

    @classmethod
    def from_dirs(cls, dirs: list[str | Path] | None) -> PathPolicy:
        return cls(tuple(Path(d).resolve() for d in dirs or ()))

    def _within_roots(self, resolved: Path, what: str, given: Path) -> None:
        if self.roots and not any(_inside(resolved, root) for root in self.roots):
            raise _forbidden(f"{what} {given} is outside the allowed folders")

    @staticmethod
    def _no_traversal(path: Path, what: str) -> None:
        if ".." in path.parts:
            raise _forbidden(f"{what} {path} contains '..'")

    def source(self, path: Path) -> Path:
        """The resolved source file, or a RequestError saying why not."""
        self._no_traversal(path, "source")
        if not path.exists():
            raise RequestError(ErrorCode.NOT_FOUND, f"source {path} does not exist")
        resolved = path.resolve()
        if not resolved.is_file():
            raise RequestError(ErrorCode.NOT_FOUND, f"source {path} is not a file")
        if not self.roots and not _inside(resolved, path.parent.resolve()):
            raise _forbidden(f"source {path} is a symlink out of its folder")
        self._within_roots(resolved, "source", path)
        return resolved

    def out_dir(self, path: Path) -> Path:
        """The resolved output folder, or a RequestError saying why not."""
        self._no_traversal(path, "out_dir")
        if not path.is_dir():
            raise RequestError(ErrorCode.NOT_FOUND, f"output folder {path} does not exist")
        resolved = path.resolve()
        self._within_roots(resolved, "out_dir", path)
        return resolved
