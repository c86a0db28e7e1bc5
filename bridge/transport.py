"""The daemon's sockets: one UDP receiver thread and one TCP (SLIP) selector thread.

Neither thread ever waits on work: each reads a packet and hands it to ``handle``, which only
parses, answers the cheap requests and queues (or refuses with ``busy``) the rest. The UDP
socket asks for a large receive buffer, so a burst waits in the kernel instead of being
dropped, and (Linux) has the kernel count what it still drops. TCP connections are bounded
in number and closed when idle, all served by one thread. Every reply that cannot be sent,
and every bad packet, is counted; their log lines are rate-limited and truncated.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from pythonosc import slip
from pythonosc.osc_message_builder import build_msg

from .contract import MAX_PACKET

log = logging.getLogger(__name__)

UDP_RCVBUF = 4 << 20  # asked for; the kernel grants up to net.core.rmem_max (Linux)
# Linux's SO_RXQ_OVFL (not in the socket module): each datagram then carries the socket's
# count of datagrams the kernel dropped because the receive buffer was full.
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40 if sys.platform.startswith("linux") else None)
MAX_TCP_CONNECTIONS = 64
TCP_IDLE_S = 60.0  # a connection with nothing sent either way and no job pending is closed
TCP_SEND_TIMEOUT_S = 2.0  # a client that stops reading is cut off, not waited for
LOG_LINE_CHARS = 200  # bad-packet log lines are cut here
LOG_BURST, LOG_WINDOW_S = 10, 10.0  # at most this many bad-packet lines per window


@dataclass(slots=True)
class Counters:
    """What went wrong on the wire, for ``/maedaw/status``'s ``daemon`` object."""

    dropped_packets: int = 0  # malformed or oversized packets we read and threw away
    kernel_drops: int | None = None  # datagrams the kernel dropped (None: it cannot say)
    busy_replies: int = 0  # requests refused because the queue was full
    forbidden: int = 0  # requests refused for a missing or wrong signature
    send_errors: int = 0  # replies that could not be sent
    log_suppressed: int = 0  # bad-packet log lines left out by the rate limit
    udp_rcvbuf: int = 0  # the receive buffer the kernel granted, in bytes
    tcp_connections: int = 0  # open now
    tcp_refused: int = 0  # connections closed at once: the cap was reached
    tcp_idle_closed: int = 0  # connections closed for being idle

    def to_dict(self) -> dict:
        return asdict(self)


class RateLimitedLog:
    """Warnings about what clients send: truncated, and at most ``burst`` lines of each kind
    (its format string) per ``window_s``, so a flood of bad packets cannot flood the log (nor
    hide another kind of trouble); what was left out is counted."""

    def __init__(
        self, counters: Counters, burst: int = LOG_BURST, window_s: float = LOG_WINDOW_S
    ) -> None:
        self.counters = counters
        self.burst, self.window_s = burst, window_s
        self._kinds: dict[str, list] = {}  # format -> [window start, lines logged, left out]
        self._lock = threading.Lock()

    def warning(
        self, message: str, *args: object, exc_info: bool = False, level: int = logging.WARNING
    ) -> None:
        now = time.monotonic()
        with self._lock:
            kind = self._kinds.setdefault(message, [now, 0, 0])
            if now - kind[0] >= self.window_s:
                if kind[2]:
                    log.warning("%d similar lines suppressed: %s", kind[2], message[:60])
                kind[:] = [now, 0, 0]
            if kind[1] >= self.burst:
                kind[2] += 1
                self.counters.log_suppressed += 1
                return
            kind[1] += 1
        text = message % args if args else message
        if len(text) > LOG_LINE_CHARS:
            text = text[:LOG_LINE_CHARS] + f"... ({len(text)} chars)"
        log.log(level, "%s", text, exc_info=exc_info)


# --- where replies go -----------------------------------------------------------------


class _Reply:
    """Where one client's replies go: its socket address, and the counters a failed send
    is added to."""

    kind = ""

    def __init__(
        self, sock: socket.socket, address: tuple, counters: Counters, bad: RateLimitedLog
    ) -> None:
        self.sock = sock
        self.address = (address[0], address[1])
        self.counters, self.bad = counters, bad

    def _failed(self, address: str, exc: OSError) -> bool:
        self.counters.send_errors += 1
        self.bad.warning("cannot send %s to %s: %s", address, self.describe(), exc)
        return False

    def describe(self) -> tuple:
        return (self.kind, *self.address)


class UdpReply(_Reply):
    """Replies to a UDP client, from the server's own socket."""

    kind = "udp"

    def with_port(self, port: int | None) -> UdpReply:
        if port is None:
            return self
        return UdpReply(self.sock, (self.address[0], port), self.counters, self.bad)

    def send(self, address: str, args: tuple | list) -> bool:
        """Send one reply; False (counted and logged) when it could not be sent."""
        try:
            self.sock.sendto(build_msg(address, list(args)).dgram, self.address)
        except OSError as exc:  # gone, unreachable, or too big for a datagram
            return self._failed(address, exc)
        return True


class TcpReply(_Reply):
    """Replies on an open TCP connection, SLIP-framed; dropped (not counted) once it closed."""

    kind = "tcp"

    def __init__(
        self, sock: socket.socket, address: tuple, counters: Counters, bad: RateLimitedLog
    ) -> None:
        super().__init__(sock, address, counters, bad)
        self.lock = threading.Lock()
        self.closed = False
        self.last_active = time.monotonic()
        self.pending: set[str] = set()  # job ids whose final reply is still to come

    def with_port(self, port: int | None) -> TcpReply:
        del port  # replies stay on the connection
        return self

    def send(self, address: str, args: tuple | list) -> bool:
        if self.closed:
            return False
        data = slip.encode(build_msg(address, list(args)).dgram)
        try:
            with self.lock:
                self.sock.sendall(data)
        except OSError as exc:  # closed, reset, or not read for TCP_SEND_TIMEOUT_S
            self.close()
            return self._failed(address, exc)
        self.last_active = time.monotonic()
        return True

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # the selector thread sees EOF and closes it


Reply = UdpReply | TcpReply
Handler = Callable[[bytes, Reply], None]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# --- UDP ---------------------------------------------------------------------------------


class UdpReceiver:
    """The UDP socket and the thread that reads it."""

    def __init__(
        self, address: tuple[str, int], handle: Handler, counters: Counters, bad: RateLimitedLog
    ) -> None:
        self.handle, self.counters, self.bad = handle, counters, bad
        self.socket = socket.socket(_family(address[0]), socket.SOCK_DGRAM)
        try:
            self.socket.bind(address)
        except OSError:
            self.socket.close()
            raise
        with contextlib.suppress(OSError):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        counters.udp_rcvbuf = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self._overflow = False
        if SO_RXQ_OVFL is not None:
            with contextlib.suppress(OSError):
                self.socket.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
                self._overflow = True
                counters.kernel_drops = 0
        log.info(
            "UDP receive buffer: %d bytes granted (%d asked for); kernel drop counter: %s",
            counters.udp_rcvbuf,
            UDP_RCVBUF,
            "on" if self._overflow else "not available",
        )
        self.socket.settimeout(0.2)  # the loop looks at the stop flag this often
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="maedaw-udp", daemon=True)

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    def reply_to(self, address: tuple) -> UdpReply:
        return UdpReply(self.socket, address, self.counters, self.bad)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop reading; the socket stays open for the last replies until :meth:`close`."""
        self._stop.set()
        self._thread.join(5.0)

    def close(self) -> None:
        self.socket.close()

    def _run(self) -> None:
        space = socket.CMSG_SPACE(4) if self._overflow else 0
        while not self._stop.is_set():
            try:
                data, ancillary, _, sender = self.socket.recvmsg(MAX_PACKET + 1, space)
            except TimeoutError:
                continue
            except OSError as exc:  # e.g. an ICMP error reported on the socket
                if self._stop.is_set():
                    return
                log.debug("UDP receive: %s", exc)
                continue
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
                    self.counters.kernel_drops = struct.unpack("=I", value[:4])[0]
            self.handle(data, self.reply_to(sender))


# --- TCP ---------------------------------------------------------------------------------


class _Connection:
    def __init__(self, reply: TcpReply) -> None:
        self.reply = reply
        self.buffer = bytearray()


class TcpServer:
    """TCP with SLIP framing (OSC 1.1): one selector thread for every connection."""

    def __init__(
        self,
        address: tuple[str, int],
        handle: Handler,
        counters: Counters,
        bad: RateLimitedLog,
        max_connections: int = MAX_TCP_CONNECTIONS,
        idle_s: float = TCP_IDLE_S,
    ) -> None:
        self.handle, self.counters, self.bad = handle, counters, bad
        self.max_connections, self.idle_s = max_connections, idle_s
        self.socket = socket.socket(_family(address[0]), socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind(address)
            self.socket.listen(128)
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.socket, selectors.EVENT_READ, None)
        self._connections: dict[socket.socket, _Connection] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="maedaw-tcp", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and reading; open connections still carry the last replies until
        :meth:`close`."""
        self._stop.set()
        self._thread.join(5.0)

    def close(self) -> None:
        for sock in list(self._connections):
            self._close(sock)
        self._selector.close()
        self.socket.close()

    def _run(self) -> None:
        last_sweep = time.monotonic()
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                if key.fileobj is self.socket:
                    self._accept()
                else:
                    self._read(key.fileobj)  # type: ignore[arg-type]
            now = time.monotonic()
            if now - last_sweep >= min(1.0, self.idle_s / 4):
                last_sweep = now
                self._close_idle(now)

    def _accept(self) -> None:
        try:
            sock, address = self.socket.accept()
        except OSError:
            return
        if len(self._connections) >= self.max_connections:
            self.counters.tcp_refused += 1
            self.bad.warning(
                "refusing TCP client %s: %d connections open", address, self.max_connections
            )
            with contextlib.suppress(OSError):
                sock.close()
            return
        # Blocking with a timeout: reads happen only when the selector says there is data,
        # and a reply to a client that has stopped reading gives up after the timeout.
        sock.settimeout(TCP_SEND_TIMEOUT_S)
        reply = TcpReply(sock, address, self.counters, self.bad)
        self._connections[sock] = _Connection(reply)
        self._selector.register(sock, selectors.EVENT_READ, None)
        self.counters.tcp_connections = len(self._connections)

    def _read(self, sock: socket.socket) -> None:
        connection = self._connections.get(sock)
        if connection is None:
            return
        try:
            chunk = sock.recv(65536)
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(sock)
            return
        connection.reply.last_active = time.monotonic()
        buffer = connection.buffer
        buffer += chunk
        while (end := buffer.find(slip.END)) >= 0:
            frame = bytes(buffer[:end])
            del buffer[: end + 1]
            if frame:
                self._frame(frame, connection.reply)
        if len(buffer) > 2 * MAX_PACKET:  # no frame end in sight: not OSC 1.1
            self.bad.warning("closing TCP client %s: unframed data", connection.reply.address)
            self._close(sock)

    def _frame(self, frame: bytes, reply: TcpReply) -> None:
        try:
            data = slip.decode(slip.END + frame + slip.END)
        except ValueError:
            self.counters.dropped_packets += 1
            self.bad.warning("dropped a bad SLIP frame from %s", reply.address)
            return
        self.handle(data, reply)

    def _close_idle(self, now: float) -> None:
        for sock, connection in list(self._connections.items()):
            reply = connection.reply
            if not reply.pending and now - reply.last_active > self.idle_s:
                self.counters.tcp_idle_closed += 1
                log.info("closing idle TCP client %s", reply.address)
                self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        connection = self._connections.pop(sock, None)
        if connection is not None:
            connection.reply.closed = True
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)  # a FIN first: the client reads the end, not a reset
        with contextlib.suppress(OSError):
            sock.close()
        self.counters.tcp_connections = len(self._connections)
