"""``maedaw send``: the helper process REAPER scripts use when LuaSocket is not installed.

The script encodes its OSC packets itself (one raw packet per file) and starts this
process without waiting for it. We send every packet from one UDP socket, so the
daemon's replies (and a job's later progress, done or error) come back here, and
append each reply datagram as one hex line to the replies file, flushed, which the
script polls from ``reaper.defer``. The last line is ``end <why>``: ``complete``
(every request got its final reply), ``timeout`` or ``stopped`` (the script created
``<replies>.stop``, e.g. because it finished or was cancelled). The packet files are ours
once we have started (we delete them after reading); when the stop file is there at the end,
the script is gone, so we delete the replies file and the stop file too.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from pythonosc.osc_message import OscMessage, ParseError

log = logging.getLogger(__name__)

# Replies that end a request (by the request's address).
FINAL = {
    "/maedaw/ping": {"/maedaw/pong", "/maedaw/error"},
    "/maedaw/status": {"/maedaw/status", "/maedaw/error"},
    "/maedaw/model/reload": {"/maedaw/model/loaded", "/maedaw/model/error", "/maedaw/error"},
}
JOB_FINAL = {"/maedaw/done", "/maedaw/error"}
NO_REPLY = {"/maedaw/cancel"}  # answered only on failure, and then to the job's client


def _request_key(packet: bytes) -> tuple[str, str] | None:
    """(address, client job) of a request packet, or None if it expects no reply."""
    message = OscMessage(packet)
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
) -> str:
    """Send ``packets``, append replies to ``replies`` as hex lines; returns why it ended."""
    waiting: dict[str, set[str]] = {}
    for packet in packets:
        key = _request_key(packet)
        if key is not None:
            address, client = key
            waiting[client] = FINAL.get(address, JOB_FINAL)
    stop_file = replies.with_name(replies.name + ".stop")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock, replies.open("ab") as out:
        sock.settimeout(poll_s)
        for packet in packets:
            sock.sendto(packet, (host, port))
        deadline = time.monotonic() + timeout_s
        why = "complete"
        while waiting:
            if time.monotonic() > deadline:
                why = "timeout"
                break
            if stop_file.exists():
                why = "stopped"
                break
            try:
                data, _ = sock.recvfrom(70_000)
            except TimeoutError:
                continue
            except OSError as exc:  # e.g. ICMP port unreachable reported on some systems
                log.debug("recv: %s", exc)
                time.sleep(poll_s)
                continue
            out.write(data.hex().encode() + b"\n")
            out.flush()
            try:
                message = OscMessage(data)
            except ParseError:  # not OSC: written for the script to ignore, never fatal
                continue
            params = list(message.params)
            client = str(params[0]) if params else ""
            if message.address in waiting.get(client, ()):
                del waiting[client]
        out.write(f"end {why}\n".encode())
        out.flush()
    if stop_file.exists():
        # the script has finished with us: nobody will read the replies, clean up after it
        replies.unlink(missing_ok=True)
        stop_file.unlink(missing_ok=True)
    return why
