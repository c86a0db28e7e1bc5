"""A Python client's one request over TCP/SLIP, signed with the token: ``maedaw status``.

TCP, because a status reply may be larger than any datagram (docs/osc.md, "Large
messages"), and a studio admin's status crosses a network.
"""

from __future__ import annotations

import socket
import time

from pythonosc import slip
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import build_msg

from maedaw.core.errors import MaedawError

from .auth import seal
from .contract import Address


class ClientError(MaedawError):
    """The daemon could not be reached or did not answer."""


def host_port(text: str, default_port: int) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT`` as (host, port)."""
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, number = text.partition(":")
        port = _port(number, text)
    if not host:
        raise ClientError(f"no host in {text!r}")
    return host, port


def _port(number: str, text: str) -> int:
    if not number.isdigit() or not 1 <= int(number) <= 65535:
        raise ClientError(f"bad port in {text!r}")
    return int(number)


def request_tcp(
    host: str,
    port: int,
    address: str,
    args: list,
    token: str | None,
    timeout_s: float = 10.0,
) -> list:
    """Send one request (its first argument is the client job id) and return the arguments
    of its reply (the reply of the same address, or ``/maedaw/error``)."""
    packet = build_msg(address, args).dgram
    deadline = time.monotonic() + timeout_s
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(slip.encode(seal(packet, token) if token else packet))
            buffer = bytearray()
            while time.monotonic() < deadline:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                while (end := buffer.find(slip.END, 1)) > 0:
                    frame = bytes(buffer[: end + 1])
                    del buffer[: end + 1]
                    if not frame.strip(slip.END):
                        continue
                    message = OscMessage(slip.decode(slip.END + frame.lstrip(slip.END)))
                    if message.address in (address, Address.ERROR):
                        return list(message.params)
    except OSError as exc:
        raise ClientError(f"no answer from the daemon at {host}:{port}: {exc}") from exc
    raise ClientError(f"no answer from the daemon at {host}:{port} within {timeout_s:g} s")
