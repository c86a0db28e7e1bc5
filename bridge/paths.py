"""Which files a request may read and where it may write, and whose names they are.

The daemon takes paths from the network, so each one is checked before use: absolute, no
``..``, existing, and, resolved with ``realpath`` (every component's symlinks followed),
inside an allowed root. The daemon's roots are the configured folders, else the user's
home. A :class:`PathPolicy` without roots (in-process use) allows the request's own
folders: the source's folder (a symlinked source may not lead out of it) and the output
folder it names.

A studio's editors name the same store by their own mount points: :class:`PathMap` turns a
client's path into the server's (``/Volumes/Projects=/mnt/projects``) and a server path in a
reply back into that client's namespace, through the rule its request came in by.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .contract import ErrorCode, RequestError


def default_state_dir() -> Path:
    """The daemon's state folder (journal, lock, token): the user's data folder for maedaw."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("maedaw"))


def default_config_file() -> Path:
    """``serve.toml`` in the user's config folder for maedaw (roots and path maps)."""
    from platformdirs import user_config_dir

    return Path(user_config_dir("maedaw")) / "serve.toml"


def read_config(path: Path) -> tuple[list[Path], list[str]]:
    """The allowed roots and path maps of a ``serve.toml``::

        roots = ["/mnt/projects"]
        [map]
        "/Volumes/Projects" = "/mnt/projects"

    Raises MapError (a ValueError) for a file that does not say that."""
    import tomllib

    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MapError(f"cannot read {path}: {exc}") from exc
    roots, maps = document.get("roots", []), document.get("map", {})
    if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
        raise MapError(f"{path}: roots must be a list of folder paths")
    if not isinstance(maps, dict) or not all(isinstance(v, str) for v in maps.values()):
        raise MapError(f'{path}: [map] holds "CLIENT PREFIX" = "SERVER PREFIX" lines')
    unknown = sorted(set(document) - {"roots", "map"})
    if unknown:
        raise MapError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    return [Path(r) for r in roots], [f"{client}={server}" for client, server in maps.items()]


def realpath(path: str | Path) -> Path:
    """``path`` with every symlink of every component followed (``os.path.realpath``)."""
    return Path(os.path.realpath(path))


def _forbidden(message: str) -> RequestError:
    return RequestError(ErrorCode.FORBIDDEN, message)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@dataclass(frozen=True, slots=True)
class PathPolicy:
    roots: tuple[Path, ...] = ()  # resolved; empty = each request's own folders

    @classmethod
    def from_dirs(cls, dirs: list[str | Path] | None) -> PathPolicy:
        return cls(tuple(realpath(d) for d in dirs or ()))

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
        resolved = realpath(path)
        if not resolved.is_file():
            raise RequestError(ErrorCode.NOT_FOUND, f"source {path} is not a file")
        if not self.roots and not _inside(resolved, realpath(path.parent)):
            raise _forbidden(f"source {path} is a symlink out of its folder")
        self._within_roots(resolved, "source", path)
        return resolved

    def out_dir(self, path: Path) -> Path:
        """The resolved output folder, or a RequestError saying why not."""
        self._no_traversal(path, "out_dir")
        if not path.is_dir():
            raise RequestError(ErrorCode.NOT_FOUND, f"output folder {path} does not exist")
        resolved = realpath(path)
        self._within_roots(resolved, "out_dir", path)
        return resolved


# --- path maps ---------------------------------------------------------------------------


class MapError(ValueError):
    """A path map that cannot be used (not CLIENT=SERVER with two absolute paths)."""


def _parts(path: str) -> tuple[str, ...]:
    return PurePosixPath(path).parts


@dataclass(frozen=True, slots=True)
class MapRule:
    client: str  # the prefix as the client names it
    server: str  # the same folder on the daemon's machine

    @classmethod
    def parse(cls, text: str) -> MapRule:
        client, sep, server = text.partition("=")
        client, server = client.strip(), server.strip()
        if not sep or not client.startswith("/") or not server.startswith("/"):
            raise MapError(f"a path map is CLIENT=SERVER with two absolute paths, not {text!r}")
        return cls(str(PurePosixPath(client)), str(PurePosixPath(server)))

    def to_server(self, path: Path) -> Path | None:
        """``path`` in the server's namespace, or None when it is not under ``client``."""
        return _swap(path, self.client, self.server)

    def to_client(self, path: str) -> str:
        """A server path (a stem in a reply) in the client's namespace; unchanged when it is
        not under ``server``."""
        swapped = _swap(Path(path), self.server, self.client)
        return path if swapped is None else str(swapped)


def _swap(path: Path, old: str, new: str) -> Path | None:
    parts, prefix = _parts(str(path)), _parts(old)
    if parts[: len(prefix)] != prefix:
        return None
    return Path(new, *parts[len(prefix) :])


@dataclass(frozen=True, slots=True)
class PathMap:
    """Client path prefixes -> server prefixes; the longest matching prefix wins."""

    rules: tuple[MapRule, ...] = ()

    @classmethod
    def parse(cls, texts: list[str] | tuple[str, ...]) -> PathMap:
        rules = [MapRule.parse(t) for t in texts]
        return cls(tuple(sorted(rules, key=lambda r: len(_parts(r.client)), reverse=True)))

    def to_server(self, path: Path) -> tuple[Path, MapRule | None]:
        """``path`` in the server's namespace and the rule that mapped it (None: unmapped)."""
        for rule in self.rules:
            if (mapped := rule.to_server(path)) is not None:
                return mapped, rule
        return path, None
