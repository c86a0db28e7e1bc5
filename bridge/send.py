"""``maedaw send``: the helper process REAPER scripts use when LuaSocket is not installed.

The script encodes its OSC packets itself (one raw packet per file) and starts this
process without waiting for it. We send every packet from one UDP socket, so the
daemon's replies (and a job's later progress, done or error) come back here, except the
packets that need a stream (``needs_stream``, the rule of docs/osc.md "Large messages" that
maedaw_osc.lua follows too): those go over one TCP connection, SLIP-framed, and their
replies come back on it (a daemon without TCP gets them as datagrams). We append each reply
as one hex line to the replies file, flushed, which the script polls from ``reaper.defer``.
The last line is ``end <why>``: ``complete``
(every request got its final reply), ``timeout`` or ``stopped`` (the script created
``<replies>.stop``, e.g. because it finished or was cancelled). The packet files are ours
once we have started (we delete them after reading); when the stop file is there at the end,
the script is gone, so we delete the replies file and the stop file too.

A packet the script signed already (an ``/maedaw/auth`` envelope, docs/security.md) goes as
it is; any other is signed here with ``token`` (the caller reads the local daemon's token
file when none is given), so a script that knows no token still works on one machine.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from pythonosc import slip
from pythonosc.osc_message import OscMessage, ParseError

from .auth import inner, is_sealed, seal

log = logging.getLogger(__name__)

# Replies that end a request (by the request's address).
FINAL = {
    "/maedaw/ping": {"/maedaw/pong", "/maedaw/error"},
    "/maedaw/status": {"/maedaw/status", "/maedaw/error"},
    "/maedaw/model/reload": {"/maedaw/model/loaded", "/maedaw/model/error", "/maedaw/error"},
}
JOB_FINAL = {"/maedaw/done", "/maedaw/error"}
NO_REPLY = {"/maedaw/cancel"}  # answered only on failure, and then to the job's client

# docs/osc.md, "Large messages": a datagram over this many bytes is not portable (LuaSocket
# reads 8192 unless told more; macOS loopback refuses datagrams over 9216 by default), so
# such a request, and one whose replies may be that big, goes over TCP/SLIP.
UDP_SAFE_BYTES = 8192
STREAM_ADDRESSES = frozenset({"/maedaw/similar", "/maedaw/status"})
MAX_DATAGRAM = 65_507
TCP_CONNECT_S = 5.0


def needs_stream(packet: bytes) -> bool:
    """True when ``packet`` goes over TCP/SLIP rather than as one UDP datagram."""
    address = inner(packet).split(b"\0", 1)[0].decode("utf-8", "replace")
    return len(packet) > UDP_SAFE_BYTES or address in STREAM_ADDRESSES


def _open_stream(host: str, port: int) -> socket.socket | None:
    """A TCP connection to the daemon, or None when it takes none (``--no-tcp``)."""
    try:
        return socket.create_connection((host, port), timeout=TCP_CONNECT_S)
    except OSError as exc:
        log.debug("no TCP connection to %s:%d (%s): datagrams instead", host, port, exc)
        return None


def _request_key(packet: bytes) -> tuple[str, str] | None:
    """(address, client job) of a request packet, or None if it expects no reply."""
    message = OscMessage(inner(packet))
    if message.address in NO_REPLY:
        return None
    params = list(message.params)
    client = str(params[0]) if params else ""
    return message.address, client


def send_and_collect(
    host: str,
    port: int,
    packets: Sequence[bytes],
    replies: Path,
    timeout_s: float,
    poll_s: float = 0.05,
    token: str | None = None,
) -> str:
    """Send ``packets`` (signed with ``token`` unless they are already), append replies to
    ``replies`` as hex lines; returns why it ended."""
    if token:
        packets = [p if is_sealed(p) else seal(p, token) for p in packets]
    waiting: dict[str, set[str]] = {}
    for packet in packets:
        key = _request_key(packet)
        if key is not None:
            address, client = key
            waiting[client] = FINAL.get(address, JOB_FINAL)
    stop_file = replies.with_name(replies.name + ".stop")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    streamed = [p for p in packets if needs_stream(p)]
    stream = _open_stream(host, port) if streamed else None
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.socket(family, socket.SOCK_DGRAM))
        out = stack.enter_context(replies.open("ab"))
        selector = stack.enter_context(selectors.DefaultSelector())
        selector.register(sock, selectors.EVENT_READ)
        if stream is not None:
            stack.enter_context(stream)
            selector.register(stream, selectors.EVENT_READ)
        for packet in packets:
            if stream is not None and needs_stream(packet):
                stream.sendall(slip.encode(packet))
            else:
                try:
                    sock.sendto(packet, (host, port))
                except OSError as exc:  # too big for a datagram here, and no TCP
                    log.warning("could not send a %d-byte packet: %s", len(packet), exc)
        deadline = time.monotonic() + timeout_s
        why = "complete"
        buffer = bytearray()

        def got(data: bytes) -> None:
            out.write(data.hex().encode() + b"\n")
            out.flush()
            try:
                message = OscMessage(data)
            except ParseError:  # not OSC: written for the script to ignore, never fatal
                return
            params = list(message.params)
            client = str(params[0]) if params else ""
            if message.address in waiting.get(client, ()):
                del waiting[client]

        while waiting:
            if time.monotonic() > deadline:
                why = "timeout"
                break
            if stop_file.exists():
                why = "stopped"
                break
            for key, _ in selector.select(poll_s):
                try:
                    if key.fileobj is sock:
                        got(sock.recvfrom(70_000)[0])
                        continue
                    chunk = stream.recv(65_536)
                except OSError as exc:  # e.g. ICMP port unreachable reported on some systems
                    log.debug("recv: %s", exc)
                    time.sleep(poll_s)
                    continue
                if not chunk:  # the daemon closed the connection: nothing more comes on it
                    selector.unregister(stream)
                    continue
                buffer += chunk
                while (end := buffer.find(slip.END, 1)) > 0:
                    frame = bytes(buffer[: end + 1])
                    del buffer[: end + 1]
                    if frame.strip(slip.END):
                        got(slip.decode(frame if frame.startswith(slip.END) else slip.END + frame))
        out.write(f"end {why}\n".encode())
        out.flush()
    if stop_file.exists():
        # the script has finished with us: nobody will read the replies, clean up after it
        replies.unlink(missing_ok=True)
        stop_file.unlink(missing_ok=True)
    return why
