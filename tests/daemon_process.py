"""A real ``maedaw serve`` child process on an ephemeral port, for the tests that talk to one
(daemon, REAPER scripts, Ardour).

It runs as a user's daemon does: every request must be signed with its token (created in
its state folder), which :func:`sign` applies for the tests' own clients; the DAW scripts
get it as their ``token`` setting. Its allowed root is the system's temp folder (where the
tests keep their sessions) unless the test names its own ``--allow-root``."""

from __future__ import annotations

import json
import os
import signal
import socket
import tempfile
import time
from pathlib import Path

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import build_msg

from maedaw.bridge.auth import read_token, seal, token_path
from maedaw.bridge.lifecycle import start_child

TOKENS: dict[int, str] = {}  # port -> the token of the test daemon listening there


def token_for(port: int) -> str | None:
    return TOKENS.get(port)


def sign(port: int, packet: bytes) -> bytes:
    """``packet`` signed for the test daemon on ``port`` (as it is, for any other port)."""
    token = TOKENS.get(port)
    return packet if token is None else seal(packet, token)


class DaemonProcess:
    """``maedaw serve --port 0 --state-dir STATE EXTRA…``; ``port`` is read from its log."""

    def __init__(self, state: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.state = state
        self.log = state.parent / f"serve-{time.monotonic_ns()}.log"
        # The daemon's tag library and embedding cache stay in the test's folder, never the
        # user's (a test that teaches a tag must not change what the user's tagging says).
        env = {
            **os.environ,
            "MAEDAW_DATA_DIR": str(state.parent / "data"),
            "MAEDAW_CACHE_DIR": str(state.parent / "cache"),
            **(env or {}),
        }
        # "--allow-root -": none given, the daemon's own default (the home folder)
        if "--allow-root" in extra:
            at = extra.index("--allow-root")
            extra = extra if extra[at + 1] != "-" else extra[:at] + extra[at + 2 :]
            roots = []
        else:
            roots = ["--allow-root", tempfile.gettempdir()]
        self.process, self.port = start_child(
            ["--state-dir", str(state), *roots, *extra], self.log, env
        )
        self.token = read_token(token_path(state)) if token_path(state).exists() else None
        if self.token is not None:
            TOKENS[self.port] = self.token

    def status(self) -> dict:
        """The daemon's ``/maedaw/status`` JSON for every job (every page of it)."""
        jobs, offset = [], 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            while offset is not None:
                request = build_msg("/maedaw/status", ["", offset]).dgram
                sock.sendto(sign(self.port, request), ("127.0.0.1", self.port))
                data, _ = sock.recvfrom(70_000)
                page = json.loads(OscMessage(data).params[1])
                jobs += page["jobs"]
                offset = page["next"]
        return page | {"jobs": jobs}

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            return self.process.wait(30)
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)
