"""The OSC contract of ``docs/osc.md``, in Python: addresses, argument checks, error codes.

Everything a packet says is validated here, before anything else sees it; a
request that does not fit raises :class:`RequestError` with a contract error
code and a message for the editor.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from maedaw.core.errors import MaedawError

CONTRACT = "maedaw-osc/1"
PREFIX = "/maedaw"
MAX_STRING = 4096
MAX_PACKET = 65_536
CLIENT_JOB = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
LABEL = re.compile(r"[A-Za-z0-9_\-]{1,32}")
TAG_NAME = re.compile(r"[^\x00-\x1f/\\]{1,64}")  # as the tag library's rule


class Address(StrEnum):
    """Every address of the contract, requests and replies."""

    # requests
    PING = f"{PREFIX}/ping"
    REPAIR = f"{PREFIX}/repair"
    RESTORE = f"{PREFIX}/restore"
    TAG = f"{PREFIX}/tag"
    SIMILAR = f"{PREFIX}/similar"
    TEACH = f"{PREFIX}/teach"
    CANCEL = f"{PREFIX}/cancel"
    STATUS = f"{PREFIX}/status"  # also the reply's address
    MODEL_RELOAD = f"{PREFIX}/model/reload"
    AUTH = f"{PREFIX}/auth"  # the signed envelope every request travels in (bridge/auth.py)
    # replies
    PONG = f"{PREFIX}/pong"
    ACCEPTED = f"{PREFIX}/accepted"
    PROGRESS = f"{PREFIX}/progress"
    DONE = f"{PREFIX}/done"
    ERROR = f"{PREFIX}/error"
    MODEL_LOADED = f"{PREFIX}/model/loaded"
    MODEL_ERROR = f"{PREFIX}/model/error"


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    BAD_AUDIO = "bad_audio"
    FORBIDDEN = "forbidden"
    BUSY = "busy"
    UNKNOWN_JOB = "unknown_job"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    UNSUPPORTED = "unsupported"
    INTERRUPTED = "interrupted"
    INTERNAL = "internal"


RESTORE_OPS = ("declip", "declick", "bandwidth", "denoise", "dehum")


class RequestError(MaedawError):
    """A request the daemon refuses, with the contract's error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Options:
    """The JSON options a job request may carry (all optional)."""

    reply_port: int | None = None
    spans: str = "auto"
    format: str = "wav"
    timeout_s: float | None = None
    label: str | None = None
    params: dict[str, Any] | None = None  # the restore operation's own settings
    top_k: int = 10  # tag: how many tags to return
    sensitivity: str = "normal"  # repair: how sure a detection must be to be written


MAX_JSON_DEPTH = 8  # nesting of options/params/candidates: deeper is refused, never recursed into
# The names of maedaw.dsp.detect.SENSITIVITIES, kept here so that the contract stays free of
# numpy (tests/test_detect_harm.py checks they agree).
SENSITIVITIES = ("low", "normal", "high")
MAX_CANDIDATES_BYTES = 60_000  # the candidates JSON of a similar request (fits one datagram)
MAX_CANDIDATES = 1000


@dataclass(frozen=True, slots=True)
class Candidate:
    """A region a similar request ranks: the client's id for it and where its audio is.
    ``error`` is set by the daemon when it will not read the file (missing, forbidden)."""

    id: str
    source: Path
    start: float
    end: float | None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": str(self.source),
            "start": self.start,
            "end": self.end,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A validated repair/restore/tag/similar request."""

    kind: str  # "repair", "restore", "tag", "similar" or "teach"
    client_job: str
    source: Path
    start: float
    end: float | None  # None: to the end of the file
    out_dir: Path | None  # tag jobs write no stem
    options: Options
    op: str | None = None  # restore operation; teach: the tag name
    candidates: tuple[Candidate, ...] = ()  # similar: the regions to rank

    @classmethod
    def from_dict(cls, data: dict) -> JobRequest:
        """Rebuild a request from :meth:`to_json`'s output (the journal's copy)."""
        options = Options(**data.get("options", {}))
        out_dir = data.get("out_dir")
        return cls(
            data["kind"],
            data["client_job"],
            Path(data["source"]),
            data["start"],
            data["end"],
            None if out_dir is None else Path(out_dir),
            options,
            data.get("op"),
            tuple(
                Candidate(c["id"], Path(c["source"]), c["start"], c["end"], c.get("error", ""))
                for c in data.get("candidates", ())
            ),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "client_job": self.client_job,
                "source": str(self.source),
                "start": self.start,
                "end": self.end,
                "out_dir": None if self.out_dir is None else str(self.out_dir),
                "op": self.op,
                "candidates": [c.to_dict() for c in self.candidates],
                "options": {
                    "reply_port": self.options.reply_port,
                    "spans": self.options.spans,
                    "format": self.options.format,
                    "timeout_s": self.options.timeout_s,
                    "label": self.options.label,
                    "params": self.options.params,
                    "top_k": self.options.top_k,
                    "sensitivity": self.options.sensitivity,
                },
            }
        )


def _bad(message: str) -> RequestError:
    return RequestError(ErrorCode.BAD_REQUEST, message)


def _string(value: Any, what: str, limit: int = MAX_STRING) -> str:
    if not isinstance(value, str):
        raise _bad(f"{what} must be a string (OSC type s), got {type(value).__name__}")
    if len(value.encode("utf-8", "surrogatepass")) > limit:
        raise _bad(f"{what} is longer than {limit} bytes")
    if "\x00" in value:
        raise _bad(f"{what} contains a NUL character")
    return value


def client_job_id(value: Any) -> str:
    text = _string(value, "client job id")
    if not CLIENT_JOB.fullmatch(text):
        raise _bad("client job id must be 1-128 characters of A-Z a-z 0-9 _ - . :")
    return text


def _seconds(value: Any, what: str) -> float:
    # bool is an int in Python, and OSC T/F arrive as bools: refuse them.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{what} must be a number of seconds (OSC type d), got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds):
        raise _bad(f"{what} must be finite")
    return seconds


def _path(value: Any, what: str) -> Path:
    text = _string(value, what)
    path = Path(text)
    if not text or not path.is_absolute():
        raise _bad(f"{what} must be an absolute path, got {text!r}")
    return path


def _depth(value: Any, limit: int) -> int:
    """How deeply ``value`` nests lists and objects, counting no further than ``limit + 1``."""
    if not isinstance(value, dict | list) or limit < 0:
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, limit - 1) for child in children), default=0)


def _json(text: str, what: str) -> Any:
    """Parse a JSON argument; nesting past :data:`MAX_JSON_DEPTH` is a ``bad_request`` (the
    parser's own recursion limit would otherwise surface as an internal error, and a deep
    value that parses could still fail the job later, when it is copied or written)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(f"{what} are not valid JSON: {exc.msg}") from exc
    except RecursionError as exc:
        raise _bad(f"{what} nest deeper than {MAX_JSON_DEPTH} levels") from exc
    if _depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise _bad(f"{what} nest deeper than {MAX_JSON_DEPTH} levels")
    return data


def parse_options(value: Any) -> Options:
    text = _string(value, "options")
    if not text.strip():
        return Options()
    data = _json(text, "options")
    if not isinstance(data, dict):
        raise _bad("options must be a JSON object")
    unknown = sorted(set(data) - set(Options.__slots__))
    if unknown:
        raise _bad(f"unknown option(s): {', '.join(unknown)}")
    port = data.get("reply_port")
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
    ):
        raise _bad("reply_port must be an integer 1-65535")
    spans = data.get("spans", "auto")
    if not isinstance(spans, str) or len(spans) > MAX_STRING:
        raise _bad('spans must be "auto" or "START:END,..." in seconds')
    fmt = data.get("format", "wav")
    if fmt not in ("wav", "flac"):
        raise _bad('format must be "wav" or "flac"')
    timeout = data.get("timeout_s")
    if timeout is not None:
        timeout = _seconds(timeout, "timeout_s")
        if timeout <= 0:
            raise _bad("timeout_s must be positive")
    label = data.get("label")
    if label is not None and (not isinstance(label, str) or not LABEL.fullmatch(label)):
        raise _bad("label must be 1-32 characters of A-Z a-z 0-9 _ -")
    params = data.get("params")
    if params is not None and not isinstance(params, dict):
        raise _bad("params must be a JSON object of the operation's settings")
    top_k = data.get("top_k", 10)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 100:
        raise _bad("top_k must be an integer 1-100")
    level = data.get("sensitivity", "normal")
    if level not in SENSITIVITIES:
        raise _bad(f"sensitivity must be one of {', '.join(map(repr, SENSITIVITIES))}")
    return Options(port, spans, fmt, timeout, label, params, top_k, level)


def _arity(args: tuple, least: int, most: int, usage: str) -> None:
    if not least <= len(args) <= most:
        raise _bad(f"expected {usage}, got {len(args)} argument(s)")


def _region(args: tuple, what: str) -> tuple[Path, float, float | None]:
    source = _path(args[0], "source")
    start = _seconds(args[1], "start")
    end = _seconds(args[2], "end")
    if start < 0:
        raise RequestError(ErrorCode.BAD_AUDIO, f"{what}: start {start} is before the file")
    if end >= 0 and end <= start:
        raise RequestError(ErrorCode.BAD_AUDIO, f"{what}: empty region [{start}, {end}]")
    return source, start, (None if end < 0 else end)


def parse_candidates(value: Any) -> tuple[Candidate, ...]:
    """The candidates JSON of a similar request: ``[{"id", "source", "start", "end"}...]``."""
    data = _json(_string(value, "candidates", MAX_CANDIDATES_BYTES), "candidates")
    if not isinstance(data, list) or not 1 <= len(data) <= MAX_CANDIDATES:
        raise _bad(f"candidates must be a JSON array of 1-{MAX_CANDIDATES} regions")
    out, seen = [], set()
    for n, item in enumerate(data):
        where = f"candidate {n + 1}"
        if not isinstance(item, dict) or set(item) - {"id", "source", "start", "end"}:
            raise _bad(f"{where} must be an object with id, source, start, end")
        ident = client_job_id(item.get("id"))
        if ident in seen:
            raise _bad(f"{where}: id {ident!r} is used twice")
        seen.add(ident)
        source, start, end = _region(
            (item.get("source"), item.get("start", 0.0), item.get("end", -1.0)), where
        )
        out.append(Candidate(ident, source, start, end))
    return tuple(out)


def parse_job(address: str, args: tuple) -> JobRequest:
    """Validate a repair, restore, tag or similar request (everything after the address)."""
    if address == Address.REPAIR:
        usage = "client_job, source, start, end, out_dir [, options]"
        _arity(args, 5, 6, usage)
        client = client_job_id(args[0])
        source, start, end = _region(args[1:4], "repair")
        out_dir = _path(args[4], "out_dir")
        options = parse_options(args[5]) if len(args) == 6 else Options()
        return JobRequest("repair", client, source, start, end, out_dir, options)
    if address == Address.RESTORE:
        usage = "client_job, op, source, start, end, out_dir [, options]"
        _arity(args, 6, 7, usage)
        client = client_job_id(args[0])
        op = _string(args[1], "op")
        if op not in RESTORE_OPS:
            raise _bad(f"unknown restore op {op!r} (one of {', '.join(RESTORE_OPS)})")
        source, start, end = _region(args[2:5], "restore")
        out_dir = _path(args[5], "out_dir")
        options = parse_options(args[6]) if len(args) == 7 else Options()
        return JobRequest("restore", client, source, start, end, out_dir, options, op)
    if address == Address.TAG:
        _arity(args, 4, 5, "client_job, source, start, end [, options]")
        client = client_job_id(args[0])
        source, start, end = _region(args[1:4], "tag")
        options = parse_options(args[4]) if len(args) == 5 else Options()
        return JobRequest("tag", client, source, start, end, None, options)
    if address == Address.SIMILAR:
        _arity(args, 5, 6, "client_job, source, start, end, candidates [, options]")
        client = client_job_id(args[0])
        source, start, end = _region(args[1:4], "similar")
        candidates = parse_candidates(args[4])
        options = parse_options(args[5]) if len(args) == 6 else Options()
        return JobRequest(
            "similar", client, source, start, end, None, options, candidates=candidates
        )
    if address == Address.TEACH:
        _arity(args, 5, 6, "client_job, name, source, start, end [, options]")
        client = client_job_id(args[0])
        name = _string(args[1], "name")
        if not TAG_NAME.fullmatch(name) or name.strip() != name:
            raise _bad("name must be 1-64 characters, no slashes or control characters")
        source, start, end = _region(args[2:5], "teach")
        options = parse_options(args[5]) if len(args) == 6 else Options()
        return JobRequest("teach", client, source, start, end, None, options, name)
    raise _bad(f"{address} is not a job request")


def _count(value: Any, what: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise _bad(f"{what} must be an integer >= {least} (OSC type i)")
    return value


def parse_status(args: tuple) -> tuple[str | None, int, int | None]:
    """``[client_job [, offset [, limit]]]`` of a status request: (the client job or None for
    every job, the first job's index, the most jobs to list or None for as many as fit)."""
    _arity(args, 0, 3, "[client_job [, offset [, limit]]]")
    client = client_job_id(args[0]) if args and args[0] != "" else None
    offset = _count(args[1], "offset", 0) if len(args) > 1 else 0
    limit = _count(args[2], "limit", 1) if len(args) > 2 else None
    return client, offset, limit


def job_client_id(args: tuple) -> str:
    """The client job id of a message, or "" when there is no usable one (for error replies)."""
    if args and isinstance(args[0], str) and CLIENT_JOB.fullmatch(args[0]):
        return args[0]
    return ""
