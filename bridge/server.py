"""``maedaw serve``: the OSC daemon (UDP, and TCP with SLIP framing) around the job engine.

Receiving is cheap and never blocks (``transport``): a packet is size-checked,
parsed by python-osc, routed by its dispatcher to a handler here, validated
against the contract, and answered at once (ping, status, errors, ``busy``) or
handed to the intake thread, which does what touches the disk (path checks, the
journal) before ``/maedaw/accepted``. Anything malformed is dropped (counted) or
answered with ``/maedaw/error``; nothing a client sends can stop the receiver.

Every request must come signed with the user's token (``auth``, docs/security.md) unless
the daemon runs with ``--no-token`` (loopback only): an unsigned or wrongly signed one is
answered ``forbidden`` before anything is parsed, read or written.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage

from maedaw.core.errors import MaedawError
from maedaw.core.util import ProgressFn, sweep_partials

from .auth import AuthError, Verifier, ensure_token, inner
from .contract import (
    CONTRACT,
    MAX_PACKET,
    PREFIX,
    Address,
    Candidate,
    ErrorCode,
    JobRequest,
    RequestError,
    client_job_id,
    job_client_id,
    parse_job,
    parse_status,
)
from .jobs import Job, JobEngine, remove_outputs
from .journal import Journal
from .models_watch import CONCEALMENT_FORMAT, ModelManager
from .packets import READABLE_TAGS, unreadable_tags
from .paths import PathMap, PathPolicy, default_state_dir
from .transport import (
    MAX_TCP_CONNECTIONS,
    TCP_IDLE_S,
    Counters,
    RateLimitedLog,
    Reply,
    TcpReply,
    TcpServer,
    UdpReceiver,
)
from .worker import WorkerProcess

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "::1", "localhost")
CLIENT_MEMORY_S = 3600.0  # watcher-initiated replies go to clients heard from this recently
# Cancels waiting for the intake thread before busy (jobs there are bounded by the queue).
INTAKE_MAX = 256
# A UDP status page stays under this many bytes: macOS refuses datagrams over 9216 by default.
STATUS_UDP_BYTES = 8192


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("maedaw")
    except PackageNotFoundError:
        return "unknown"


def status_page(
    jobs: list[dict], daemon: dict, offset: int, limit: int | None, budget: int | None
) -> str:
    """The status JSON for ``jobs[offset:]``: at most ``limit`` jobs and, for UDP, as many as
    fit in ``budget`` bytes of reply (always one, if one is left: a page makes progress).
    ``next`` is the offset of the next page, or null after the last."""
    head = {"total": len(jobs), "offset": offset, "next": None, "daemon": daemon}
    size = len(json.dumps(head)) + 200  # the OSC framing, the client id, the "jobs" key, next
    page: list[str] = []
    for job in jobs[offset : None if limit is None else offset + limit]:
        text = json.dumps(job)
        if budget is not None and page and size + len(text) + 2 > budget:
            break
        page.append(text)
        size += len(text) + 2
    if offset + len(page) < len(jobs):
        head["next"] = offset + len(page)
    return '{"jobs": [' + ", ".join(page) + "], " + json.dumps(head)[1:]


# --- configuration -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 9000
    state_dir: Path = field(default_factory=default_state_dir)
    allow_remote: bool = False
    roots: tuple[Path, ...] = ()  # empty: the user's home
    path_map: tuple[str, ...] = ()  # "CLIENT=SERVER" prefixes (paths.PathMap)
    token: bool = True  # False (--no-token, loopback only): requests need no signature
    max_queue: int = 16
    job_timeout_s: float = 600.0
    tcp: bool = True
    models_dir: Path | None = None  # default: <state_dir>/models
    max_connections: int = MAX_TCP_CONNECTIONS
    tcp_idle_s: float = TCP_IDLE_S


def bundled_model() -> Path | None:
    """The default model shipped inside the package, if this install has one."""
    from importlib.resources import files

    path = Path(str(files("maedaw.models"))) / "weights" / "compact-default.json"
    return path if path.exists() else None


def bundled_concealment_model() -> Path | None:
    """The learned concealment pair shipped inside the package (its JSON), if any."""
    from importlib.resources import files

    path = Path(str(files("maedaw.models"))) / "weights" / "concealment-default.json"
    return path if path.exists() else None


MODEL_STARTUP_WAIT_S = 60.0  # a first torch import + validation on a slow, busy machine


class ServeError(MaedawError):
    """The daemon cannot start (port taken, another daemon, non-loopback host)."""


# --- the daemon ------------------------------------------------------------------------


class Daemon:
    """Owns the sockets, the dispatcher, the journal and the job engine."""

    def __init__(self, config: ServeConfig) -> None:
        if config.host not in LOOPBACK and not config.allow_remote:
            raise ServeError(
                f"refusing to listen on {config.host}: not a loopback address "
                "(pass --allow-remote if you really mean it)"
            )
        if config.allow_remote and not config.token:
            raise ServeError("--allow-remote needs the token: it cannot run with --no-token")
        self.config = config
        self.policy = PathPolicy.from_dirs(list(config.roots) or [Path.home()])
        self.path_map = PathMap.parse(config.path_map)
        self.verifier: Verifier | None = None
        if config.token:
            try:
                self.verifier = Verifier(ensure_token(config.state_dir))
            except (AuthError, OSError) as exc:
                raise ServeError(f"no usable token, so the daemon will not start: {exc}") from exc
        self._hosts: set[str] = set()  # every client host heard from, logged once each
        self.counters = Counters()  # drops, refusals, send errors: reported in status
        self.bad = RateLimitedLog(self.counters)  # what clients get wrong, rate-limited
        self._clients: dict[tuple, tuple[Any, float]] = {}
        self._lock_file = self._take_lock()
        self.journal = Journal(config.state_dir / "journal.sqlite3")
        self.worker = WorkerProcess()
        self.engine = JobEngine(self.journal, self._run_job, self._notify, config.max_queue)
        self.models = ModelManager(
            config.models_dir or config.state_dir / "models",
            self._on_model_event,
            validate=self.worker.validate,  # in the worker process: never stalls the receiver
            fallback=bundled_model(),
        )
        # The learned concealment model (10-120 ms gaps) is served the same way, from the
        # same folder: a concealment pair dropped there replaces the bundled one.
        self.concealment = ModelManager(
            config.models_dir or config.state_dir / "models",
            self._on_model_event,
            validate=self.worker.validate_concealment,
            fallback=bundled_concealment_model(),
            model_format=CONCEALMENT_FORMAT,
        )
        self._reload_requests: dict[str, Reply] = {}
        self.dispatcher = self._build_dispatcher()
        # What must not run on a receiver thread (it touches the disk): one FIFO, so a
        # client's cancel is handled after the job it sent before it.
        self._intake: queue.Queue[tuple | None] = queue.Queue(config.max_queue + INTAKE_MAX)
        self._intake_thread = threading.Thread(
            target=self._intake_loop, name="maedaw-intake", daemon=True
        )
        self.tcp: TcpServer | None = None
        try:
            self.udp = UdpReceiver(
                (config.host, config.port), self.handle_packet, self.counters, self.bad
            )
            if config.tcp:
                self.tcp = TcpServer(
                    (config.host, self.port),
                    self.handle_packet,
                    self.counters,
                    self.bad,
                    config.max_connections,
                    config.tcp_idle_s,
                )
        except OSError as exc:
            if getattr(self, "udp", None) is not None:
                self.udp.close()
            self.journal.close()
            self._release_lock()
            raise ServeError(f"cannot listen on {config.host}:{config.port}: {exc}") from exc

    @property
    def port(self) -> int:
        return self.udp.port

    # --- life cycle -------------------------------------------------------------------

    def _take_lock(self) -> Any:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.config.state_dir / "serve.lock"
        handle = open(path, "a+")  # noqa: SIM115 - held open for the daemon's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.seek(0)
            other = handle.read().strip() or "?"
            handle.close()
            raise ServeError(
                f"another maedaw serve (pid {other}) is using {self.config.state_dir}"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return handle

    def _release_lock(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()

    def start(self) -> None:
        """Recover from any crash, then start the worker and the receivers."""
        self.recover()
        self.worker.start()
        self.engine.start()
        self.models.start()
        self.concealment.start()
        self._intake_thread.start()
        self.udp.start()
        if self.tcp is not None:
            self.tcp.start()
        log.info(
            "maedaw serve: %s on %s:%d (UDP%s), state in %s, %s; reads and writes under %s",
            CONTRACT,
            self.config.host,
            self.port,
            " + TCP/SLIP" if self.tcp else "",
            self.config.state_dir,
            "every request signed with the token" if self.verifier else "NO TOKEN (--no-token)",
            ", ".join(map(str, self.policy.roots)),
        )
        for rule in self.path_map.rules:
            log.info("path map: client %s = server %s", rule.client, rule.server)

    def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop receiving, finish (or cancel) the running job, close the journal."""
        for server in (self.udp, self.tcp):
            if server is not None:
                server.stop()
        with contextlib.suppress(queue.Full):
            self._intake.put(None, timeout=5.0)
        self._intake_thread.join(10.0)
        self.engine.stop(grace_s)  # its last replies (interrupted, done) still go out
        self.models.stop()  # after the job: a check waiting for the worker can then run
        self.concealment.stop()
        for server in (self.udp, self.tcp):
            if server is not None:
                server.close()
        self.worker.stop()
        self.journal.close()
        self._release_lock()
        log.info("maedaw serve stopped")

    def recover(self) -> None:
        """Fail every job a previous daemon left unfinished, and remove its output, and any
        temp file in its output folder whose writer is dead (a live writer's is kept)."""
        for entry in self.journal.unfinished():
            stem = Path(entry.stem) if entry.stem else None
            remove_outputs(stem, Path(entry.report) if entry.report else None)
            if stem is not None:
                for path in sweep_partials(stem.parent):
                    log.info("removed %s, left by a writer that died", path)
            message = "the daemon stopped before the job finished; no stem was written"
            self.journal.set_state(entry.job_id, "failed", str(ErrorCode.INTERRUPTED), message)
            log.warning("job %s (%s) was interrupted", entry.job_id, entry.client_job)
            if entry.reply_to and entry.reply_to[0] == "udp":
                reply = self.udp.reply_to((entry.reply_to[1], entry.reply_to[2]))
                reply.send(
                    Address.ERROR,
                    (entry.client_job, entry.job_id, str(ErrorCode.INTERRUPTED), message),
                )
            self.engine.adopt_failed(entry, ErrorCode.INTERRUPTED, message)

    # --- receiving --------------------------------------------------------------------

    def handle_packet(self, data: bytes, reply: Reply) -> None:
        """Everything a client sends comes through here; nothing it sends escapes."""
        if len(data) > MAX_PACKET or not (
            OscBundle.dgram_is_bundle(data) or OscMessage.dgram_is_message(data)
        ):
            self._drop(data, reply, "not OSC" if len(data) <= MAX_PACKET else "over 64 KiB")
            return
        if self._has_unreadable_tags(data, reply):
            return
        if self.verifier is not None:
            try:
                data = self.verifier.open(data)
            except AuthError as exc:
                self._refuse(data, reply, str(exc))
                return
            if not (OscBundle.dgram_is_bundle(data) or OscMessage.dgram_is_message(data)):
                self._drop(data, reply, "signed, but not OSC inside")
                return
        else:
            data = inner(data)  # --no-token: a signed request is taken as it is
        if self._has_unreadable_tags(data, reply):
            return
        self._log_client(reply)
        try:
            self.dispatcher.call_handlers_for_packet(data, reply)
        except Exception as exc:  # a parser corner python-osc does not wrap: drop the packet
            self._drop(data, reply, f"{type(exc).__name__}: {exc}")

    def _has_unreadable_tags(self, data: bytes, reply: Reply) -> bool:
        """Drop (and, when it is ours, answer) a packet with type tags python-osc cannot
        read, before python-osc logs a line for each of them."""
        tags = unreadable_tags(data)
        if not tags:
            return False
        why = f"unsupported OSC type tags {tags[:16]!r}"
        self._drop(data, reply, why)
        if data.startswith((PREFIX.encode() + b"/", b"#bundle")):
            reply.send(
                Address.ERROR,
                (
                    "",
                    "",
                    str(ErrorCode.BAD_REQUEST),
                    f"{why}; readable: {''.join(sorted(READABLE_TAGS))}",
                ),
            )
        return True

    def _refuse(self, data: bytes, reply: Reply, why: str) -> None:
        """An unsigned or badly signed request: ``forbidden``, before anything is parsed
        beyond the client job id (so the client can tell which request it was)."""
        if not data.startswith((PREFIX.encode() + b"/", b"#bundle")):
            self.counters.dropped_packets += 1  # someone else's OSC: not ours to answer
            return
        client = ""
        with contextlib.suppress(Exception):  # the id of the request (inside an envelope)
            client = job_client_id(tuple(OscMessage(inner(data)).params[:1]))
        self.counters.forbidden += 1
        self.bad.warning("refused a request from %s: %s", reply.address[0], why)
        reply.send(Address.ERROR, (client, "", str(ErrorCode.FORBIDDEN), why))

    def _log_client(self, reply: Reply) -> None:
        host = reply.address[0]
        if host not in self._hosts and len(self._hosts) < 4096:
            self._hosts.add(host)
            log.info("client %s: first %s request", host, reply.kind.upper())

    def _drop(self, data: bytes, reply: Reply, why: str) -> None:
        self.counters.dropped_packets += 1
        self.bad.warning(
            "dropped a packet from %s (%d bytes, %s): %r", reply.address, len(data), why, data[:64]
        )

    def _build_dispatcher(self) -> Dispatcher:
        dispatcher = Dispatcher(strict_timing=False)  # a future timetag must not stall us
        routes = {
            Address.PING: self.on_ping,
            Address.REPAIR: self.on_job,
            Address.RESTORE: self.on_job,
            Address.TAG: self.on_job,
            Address.SIMILAR: self.on_job,
            Address.TEACH: self.on_job,
            Address.CANCEL: self.on_cancel,
            Address.STATUS: self.on_status,
            Address.MODEL_RELOAD: self.on_model_reload,
        }
        for address, handler in routes.items():
            dispatcher.map(str(address), self._guard(handler), needs_reply_address=True)
        dispatcher.set_default_handler(self._guard(self.on_unknown), needs_reply_address=True)
        return dispatcher

    def _guard(self, handler: Any) -> Any:
        def guarded(reply: Reply, address: str, *args: Any) -> None:
            try:
                handler(reply, address, *args)
            except RequestError as exc:
                if exc.code is ErrorCode.BUSY:
                    self.counters.busy_replies += 1
                reply.send(Address.ERROR, (job_client_id(args), "", str(exc.code), exc.message))
            except Exception as exc:
                self.bad.warning(  # a bug: the traceback, but no flood of them
                    "handler for %s failed", address, exc_info=True, level=logging.ERROR
                )
                reply.send(
                    Address.ERROR,
                    (
                        job_client_id(args),
                        "",
                        str(ErrorCode.INTERNAL),
                        f"{type(exc).__name__}: {exc}",
                    ),
                )

        return guarded

    def _seen(self, reply: Reply) -> None:
        now = time.monotonic()
        self._clients[reply.describe()] = (reply, now)
        if len(self._clients) > 256:  # forget the oldest, keep memory bounded
            stale = sorted(self._clients.items(), key=lambda kv: kv[1][1])[:128]
            for key, _ in stale:
                self._clients.pop(key, None)

    def on_unknown(self, reply: Reply, address: str, *args: Any) -> None:
        if address.startswith(PREFIX + "/"):
            raise RequestError(ErrorCode.BAD_REQUEST, f"unknown address {address[:200]}")
        self.counters.dropped_packets += 1  # someone else's OSC: not ours to answer

    def on_ping(self, reply: Reply, address: str, *args: Any) -> None:
        self._seen(reply)
        if len(args) != 1:
            raise RequestError(ErrorCode.BAD_REQUEST, "expected client_job")
        client = client_job_id(args[0])
        reply.send(Address.PONG, (client, CONTRACT, _version(), self.model_id()))

    def on_job(self, reply: Reply, address: str, *args: Any) -> None:
        """Validate, then hold a queue place (or refuse with busy, at once); the intake
        thread checks the paths and journals the job before it is accepted."""
        self._seen(reply)
        request = parse_job(address, args)
        client = _client_key(reply)
        self.engine.reserve(client)
        try:
            self._defer(functools.partial(self._accept_job, request), reply, address, args)
        except RequestError:
            self.engine.release(client)
            raise

    def _defer(self, handler: Callable, reply: Reply, address: str, args: tuple) -> None:
        try:
            self._intake.put_nowait((handler, reply, address, args))
        except queue.Full:
            raise RequestError(ErrorCode.BUSY, "the daemon is overloaded; try again") from None

    def _intake_loop(self) -> None:
        while (item := self._intake.get()) is not None:
            handler, reply, address, args = item
            self._guard(handler)(reply, address, *args)

    def _accept_job(self, request: JobRequest, reply: Reply, address: str, *args: Any) -> None:
        try:
            job = self._make_job(request, reply)
        except BaseException:
            self.engine.release(_client_key(reply))
            raise
        tcp = job.reply_to if isinstance(job.reply_to, TcpReply) else None
        if tcp is not None:
            tcp.pending.add(job.job_id)  # the connection is not idle while the job is pending
        try:
            position = self.engine.submit(job, reserved=True)
        except BaseException:
            self.engine.release(job.client)
            if tcp is not None:
                tcp.pending.discard(job.job_id)
            raise
        job.reply_to.send(Address.ACCEPTED, (job.client_job, job.job_id, position))

    def _make_job(self, request: JobRequest, reply: Reply) -> Job:
        request, rule = self._mapped(request)
        source = self.policy.source(request.source)
        if request.candidates:
            request = replace(request, candidates=self._checked(request.candidates))
        out_dir = None if request.out_dir is None else self.policy.out_dir(request.out_dir)
        job = Job(
            request,
            reply.with_port(request.options.reply_port),  # the sender's host, always
            None,
            None,
            request.options.timeout_s or self.config.job_timeout_s,
            client=_client_key(reply),
            outward=None if rule is None else rule.to_client,
        )
        if out_dir is not None:  # tag jobs write nothing: their tags travel in the reply
            label = request.options.label or request.op or request.kind
            stem = out_dir / f"{source.stem}.{label}-{job.job_id}.{request.options.format}"
            if stem.resolve() == source:
                raise RequestError(ErrorCode.FORBIDDEN, "the stem would overwrite the source")
            job.stem, job.report = stem, stem.with_suffix(".json")
        return job

    def _mapped(self, request: JobRequest) -> tuple[JobRequest, Any]:
        """The request's paths in the server's namespace (``--map``), and the rule that
        maps its output folder (or source) there: the stem goes back through it."""
        if not self.path_map.rules:
            return request, None
        source, rule = self.path_map.to_server(request.source)
        out_dir = request.out_dir
        if out_dir is not None:
            out_dir, out_rule = self.path_map.to_server(out_dir)
            rule = out_rule or rule
        candidates = tuple(
            replace(c, source=self.path_map.to_server(c.source)[0]) for c in request.candidates
        )
        return replace(request, source=source, out_dir=out_dir, candidates=candidates), rule

    def _checked(self, candidates: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
        """Candidates with the path policy applied: a file the daemon will not read (missing,
        outside the allowed folders) is kept with its reason, and the job reports it as
        skipped instead of failing the whole search (projects often have offline media)."""
        checked = []
        for candidate in candidates:
            try:
                checked.append(replace(candidate, source=self.policy.source(candidate.source)))
            except RequestError as exc:
                checked.append(replace(candidate, error=f"{exc.code}: {exc.message}"))
        return tuple(checked)

    def on_cancel(self, reply: Reply, address: str, *args: Any) -> None:
        if len(args) != 1:
            raise RequestError(ErrorCode.BAD_REQUEST, "expected client_job")
        client = client_job_id(args[0])
        # after any job this client sent before (FIFO), and off this thread (journal)
        self._defer(lambda *_: self.engine.cancel(client), reply, address, args)

    def on_status(self, reply: Reply, address: str, *args: Any) -> None:
        client, offset, limit = parse_status(args)
        jobs = self.engine.status(client)
        daemon = {
            "contract": CONTRACT,
            "model": self.model_id(),
            "concealment": self.concealment.model_id,
            "worker_restarts": self.worker.restarts,
            "token": self.verifier is not None,
            "queued_by_client": self.engine.queued_by_client(),
            **self.counters.to_dict(),
        }
        budget = None if isinstance(reply, TcpReply) else STATUS_UDP_BYTES
        reply.send(Address.STATUS, (client or "", status_page(jobs, daemon, offset, limit, budget)))

    def on_model_reload(self, reply: Reply, address: str, *args: Any) -> None:
        self._seen(reply)
        if len(args) != 1:
            raise RequestError(ErrorCode.BAD_REQUEST, "expected client_job")
        client = client_job_id(args[0])
        self._reload_requests[client] = reply
        self.models.reload(client)
        self.concealment.reload("")  # its outcome goes to recent clients, like the watcher's

    def model_id(self) -> str:
        return self.models.model_id

    def _run_job(self, job: Job, progress: ProgressFn) -> dict:
        """Each job runs with the model served when it starts: a swap lands between jobs.
        A job that arrives while the daemon is still loading its first model waits for it."""
        if not self.models.wait_ready(MODEL_STARTUP_WAIT_S):
            log.warning("no model ready after %.0f s; the job runs without", MODEL_STARTUP_WAIT_S)
        if not self.concealment.wait_ready(MODEL_STARTUP_WAIT_S):
            log.warning("no concealment model ready after %.0f s", MODEL_STARTUP_WAIT_S)
        served, concealment = self.models.served, self.concealment.served
        return self.worker.run(
            job,
            progress,
            None if served is None else served.path,
            None if concealment is None else concealment.path,
        )

    def _on_model_event(self, kind: str, client_job: str, detail: str, path: str) -> None:
        """A (re)load finished: tell whoever asked, or every recent client."""
        if kind == "loaded":
            address, args = Address.MODEL_LOADED, (client_job, detail, path)
        else:
            address, args = Address.MODEL_ERROR, (client_job, path, detail)
        asked = self._reload_requests.pop(client_job, None) if client_job else None
        if asked is not None:
            asked.send(address, args)
            return
        cutoff = time.monotonic() - CLIENT_MEMORY_S
        for reply, seen in list(self._clients.values()):
            if seen >= cutoff:
                reply.send(address, args)

    # --- replies from the worker ---------------------------------------------------------

    def _notify(self, job: Job, address: Address, args: tuple) -> None:
        payload = tuple(json.dumps(a) if isinstance(a, dict) else a for a in args)
        job.reply_to.send(address, (job.client_job, job.job_id, *payload))
        if address in (Address.DONE, Address.ERROR) and isinstance(job.reply_to, TcpReply):
            job.reply_to.pending.discard(job.job_id)  # the connection may go idle now


def _client_key(reply: Reply) -> str:
    """Who a request comes from, for the fair queue: its reply address ("udp:HOST:PORT",
    "tcp:HOST:PORT"), one DAW session's socket or connection."""
    return ":".join(str(part) for part in reply.describe())
