"""``maedaw serve``: the OSC daemon (UDP, and TCP with SLIP framing) around the job engine.

Receiving is cheap and never blocks: a packet is size-checked, parsed by
python-osc, routed by its dispatcher to a handler here, validated against the
contract, and answered or queued. Anything malformed is dropped or answered
with ``/maedaw/error``; nothing a client sends can stop the receiver.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pythonosc import slip
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import build_msg

from maedaw.core.errors import MaedawError
from maedaw.core.util import ProgressFn

from .contract import (
    CONTRACT,
    MAX_PACKET,
    PREFIX,
    Address,
    Candidate,
    ErrorCode,
    RequestError,
    client_job_id,
    job_client_id,
    parse_job,
)
from .jobs import Job, JobEngine, remove_outputs
from .journal import Journal
from .models_watch import ModelManager
from .paths import PathPolicy
from .worker import WorkerProcess

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "::1", "localhost")
CLIENT_MEMORY_S = 3600.0  # watcher-initiated replies go to clients heard from this recently


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("maedaw")
    except PackageNotFoundError:
        return "unknown"


# --- where replies go -----------------------------------------------------------------


class UdpReply:
    """Replies to a UDP client, from the server's own socket."""

    def __init__(self, sock: socket.socket, address: tuple[str, int]) -> None:
        self.sock = sock
        self.address = (address[0], address[1])

    def with_port(self, port: int | None) -> UdpReply:
        return self if port is None else UdpReply(self.sock, (self.address[0], port))

    def send(self, address: str, args: tuple | list) -> None:
        with contextlib.suppress(OSError):  # a client that went away is not our failure
            self.sock.sendto(build_msg(address, list(args)).dgram, self.address)

    def describe(self) -> tuple:
        return ("udp", *self.address)


class TcpReply:
    """Replies on an open TCP connection, SLIP-framed; silently dropped once it closes."""

    def __init__(self, sock: socket.socket, address: tuple[str, int]) -> None:
        self.sock = sock
        self.address = (address[0], address[1])
        self.lock = threading.Lock()
        self.closed = False

    def with_port(self, port: int | None) -> TcpReply:
        del port  # replies stay on the connection
        return self

    def send(self, address: str, args: tuple | list) -> None:
        if self.closed:
            return
        data = slip.encode(build_msg(address, list(args)).dgram)
        with self.lock, contextlib.suppress(OSError):
            self.sock.sendall(data)

    def describe(self) -> tuple:
        return ("tcp", *self.address)


# --- configuration -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 9000
    state_dir: Path = field(default_factory=lambda: _default_state_dir())
    allow_remote: bool = False
    roots: tuple[Path, ...] = ()
    max_queue: int = 16
    job_timeout_s: float = 600.0
    tcp: bool = True
    models_dir: Path | None = None  # default: <state_dir>/models


def bundled_model() -> Path | None:
    """The default model shipped inside the package, if this install has one."""
    from importlib.resources import files

    path = Path(str(files("maedaw.models"))) / "weights" / "compact-default.json"
    return path if path.exists() else None


def _default_state_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("maedaw"))


MODEL_STARTUP_WAIT_S = 60.0  # a first torch import + validation on a slow, busy machine


class ServeError(MaedawError):
    """The daemon cannot start (port taken, another daemon, non-loopback host)."""


# --- the daemon ------------------------------------------------------------------------


class _UdpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        self.server.daemon.handle_packet(data, UdpReply(sock, self.client_address))


class _UdpServer(socketserver.UDPServer):
    max_packet_size = MAX_PACKET + 1  # read one byte more, to see oversized packets
    allow_reuse_address = False

    def __init__(self, address: tuple[str, int], daemon: Daemon) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.daemon = daemon
        super().__init__(address, _UdpHandler)


class _TcpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        reply = TcpReply(self.request, self.client_address)
        buffer = bytearray()
        try:
            while chunk := self.request.recv(65536):
                buffer += chunk
                while (end := buffer.find(slip.END)) >= 0:
                    frame = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if frame:
                        self._frame(frame, reply)
                if len(buffer) > 2 * MAX_PACKET:  # no frame end in sight: not OSC 1.1
                    log.warning("closing TCP client %s: unframed data", self.client_address)
                    return
        except OSError:
            return
        finally:
            reply.closed = True

    def _frame(self, frame: bytes, reply: TcpReply) -> None:
        try:
            data = slip.decode(slip.END + frame + slip.END)
        except ValueError:
            self.server.daemon.dropped += 1
            return
        self.server.daemon.handle_packet(data, reply)


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], daemon: Daemon) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.daemon = daemon
        super().__init__(address, _TcpHandler)


class Daemon:
    """Owns the sockets, the dispatcher, the journal and the job engine."""

    def __init__(self, config: ServeConfig) -> None:
        if config.host not in LOOPBACK and not config.allow_remote:
            raise ServeError(
                f"refusing to listen on {config.host}: not a loopback address "
                "(pass --allow-remote if you really mean it)"
            )
        self.config = config
        self.policy = PathPolicy.from_dirs(list(config.roots))
        self.dropped = 0  # malformed packets, for the log and the fuzz test
        self._clients: dict[tuple, tuple[Any, float]] = {}
        self._lock_file = self._take_lock()
        self.journal = Journal(config.state_dir / "journal.sqlite3")
        self.worker = WorkerProcess()
        self.engine = JobEngine(self.journal, self._run_job, self._notify, config.max_queue)
        self.models = ModelManager(
            config.models_dir or config.state_dir / "models",
            self._on_model_event,
            fallback=bundled_model(),
        )
        self._reload_requests: dict[str, UdpReply | TcpReply] = {}
        self.dispatcher = self._build_dispatcher()
        try:
            self.udp = _UdpServer((config.host, config.port), self)
            self.tcp = _TcpServer((config.host, self.port), self) if config.tcp else None
        except OSError as exc:
            self.journal.close()
            self._release_lock()
            raise ServeError(f"cannot listen on {config.host}:{config.port}: {exc}") from exc
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return self.udp.server_address[1]

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
        servers = [self.udp] + ([self.tcp] if self.tcp else [])
        for server in servers:
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"maedaw-{type(server).__name__}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        log.info(
            "maedaw serve: %s on %s:%d (UDP%s), state in %s",
            CONTRACT,
            self.config.host,
            self.port,
            " + TCP/SLIP" if self.tcp else "",
            self.config.state_dir,
        )

    def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop receiving, finish (or cancel) the running job, close the journal."""
        for server in (self.udp, self.tcp):
            if server is not None:
                server.shutdown()
                server.server_close()
        self.models.stop()
        self.engine.stop(grace_s)
        self.worker.stop()
        self.journal.close()
        self._release_lock()
        log.info("maedaw serve stopped")

    def recover(self) -> None:
        """Fail every job a previous daemon left unfinished, and remove its output."""
        for entry in self.journal.unfinished():
            remove_outputs(
                Path(entry.stem) if entry.stem else None,
                Path(entry.report) if entry.report else None,
            )
            message = "the daemon stopped before the job finished; no stem was written"
            self.journal.set_state(entry.job_id, "failed", str(ErrorCode.INTERRUPTED), message)
            log.warning("job %s (%s) was interrupted", entry.job_id, entry.client_job)
            if entry.reply_to and entry.reply_to[0] == "udp":
                reply = UdpReply(self.udp.socket, (entry.reply_to[1], entry.reply_to[2]))
                reply.send(
                    Address.ERROR,
                    (entry.client_job, entry.job_id, str(ErrorCode.INTERRUPTED), message),
                )
            self.engine.adopt_failed(entry, ErrorCode.INTERRUPTED, message)

    # --- receiving --------------------------------------------------------------------

    def handle_packet(self, data: bytes, reply: UdpReply | TcpReply) -> None:
        """Everything a client sends comes through here; nothing it sends escapes."""
        if len(data) > MAX_PACKET or not (
            OscBundle.dgram_is_bundle(data) or OscMessage.dgram_is_message(data)
        ):
            self.dropped += 1
            return
        try:
            self.dispatcher.call_handlers_for_packet(data, reply)
        except Exception:  # a parser corner python-osc does not wrap: drop the packet
            self.dropped += 1
            log.debug("dropped a malformed packet", exc_info=True)

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
        def guarded(reply: UdpReply | TcpReply, address: str, *args: Any) -> None:
            try:
                handler(reply, address, *args)
            except RequestError as exc:
                reply.send(Address.ERROR, (job_client_id(args), "", str(exc.code), exc.message))
            except Exception as exc:
                log.exception("handler for %s failed", address)
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

    def _seen(self, reply: UdpReply | TcpReply) -> None:
        now = time.monotonic()
        self._clients[reply.describe()] = (reply, now)
        if len(self._clients) > 256:  # forget the oldest, keep memory bounded
            stale = sorted(self._clients.items(), key=lambda kv: kv[1][1])[:128]
            for key, _ in stale:
                self._clients.pop(key, None)

    def on_unknown(self, reply: UdpReply | TcpReply, address: str, *args: Any) -> None:
        if address.startswith(PREFIX + "/"):
            raise RequestError(ErrorCode.BAD_REQUEST, f"unknown address {address[:200]}")
        self.dropped += 1  # someone else's OSC: not ours to answer

    def on_ping(self, reply: UdpReply | TcpReply, address: str, *args: Any) -> None:
        self._seen(reply)
        if len(args) != 1:
            raise RequestError(ErrorCode.BAD_REQUEST, "expected client_job")
        client = client_job_id(args[0])
        reply.send(Address.PONG, (client, CONTRACT, _version(), self.model_id()))

    def on_job(self, reply: UdpReply | TcpReply, address: str, *args: Any) -> None:
        self._seen(reply)
        request = parse_job(address, args)
        source = self.policy.source(request.source)
        if request.candidates:
            request = replace(request, candidates=self._checked(request.candidates))
        out_dir = None if request.out_dir is None else self.policy.out_dir(request.out_dir)
        job = Job(
            request,
            reply.with_port(request.options.reply_port),
            None,
            None,
            request.options.timeout_s or self.config.job_timeout_s,
        )
        if out_dir is not None:  # tag jobs write nothing: their tags travel in the reply
            label = request.options.label or request.op or request.kind
            stem = out_dir / f"{source.stem}.{label}-{job.job_id}.{request.options.format}"
            if stem.resolve() == source:
                raise RequestError(ErrorCode.FORBIDDEN, "the stem would overwrite the source")
            job.stem, job.report = stem, stem.with_suffix(".json")
        position = self.engine.submit(job)
        job.reply_to.send(Address.ACCEPTED, (job.client_job, job.job_id, position))

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

    def on_cancel(self, reply: UdpReply | TcpReply, address: str, *args: Any) -> None:
        if len(args) != 1:
            raise RequestError(ErrorCode.BAD_REQUEST, "expected client_job")
        self.engine.cancel(client_job_id(args[0]))

    def on_status(self, reply: UdpReply | TcpReply, address: str, *args: Any) -> None:
        if len(args) > 1:
            raise RequestError(ErrorCode.BAD_REQUEST, "expected [client_job]")
        client = client_job_id(args[0]) if args and args[0] != "" else None
        jobs = self.engine.status(client)
        daemon = {
            "contract": CONTRACT,
            "model": self.model_id(),
            "dropped_packets": self.dropped,
            "worker_restarts": self.worker.restarts,
        }
        reply.send(Address.STATUS, (client or "", json.dumps({"jobs": jobs, "daemon": daemon})))

    def on_model_reload(self, reply: UdpReply | TcpReply, address: str, *args: Any) -> None:
        self._seen(reply)
        if len(args) != 1:
            raise RequestError(ErrorCode.BAD_REQUEST, "expected client_job")
        client = client_job_id(args[0])
        self._reload_requests[client] = reply
        self.models.reload(client)

    def model_id(self) -> str:
        return self.models.model_id

    def _run_job(self, job: Job, progress: ProgressFn) -> dict:
        """Each job runs with the model served when it starts: a swap lands between jobs.
        A job that arrives while the daemon is still loading its first model waits for it."""
        if not self.models.wait_ready(MODEL_STARTUP_WAIT_S):
            log.warning("no model ready after %.0f s; the job runs without", MODEL_STARTUP_WAIT_S)
        served = self.models.served
        return self.worker.run(job, progress, None if served is None else served.path)

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
