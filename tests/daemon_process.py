"""A real ``maedaw serve`` child process on an ephemeral port, for the tests that talk to one
(daemon, REAPER scripts, Ardour)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import build_msg


class DaemonProcess:
    """``maedaw serve --port 0 --state-dir STATE EXTRA…``; ``port`` is read from its log."""

    def __init__(self, state: Path, *extra: str) -> None:
        self.state = state
        self.log = state.parent / f"serve-{time.monotonic_ns()}.log"
        command = [sys.executable, "-m", "maedaw.bridge.cli", "serve", "--port", "0"]
        command += ["--state-dir", str(state), *extra]
        # The daemon's tag library and embedding cache stay in the test's folder, never the
        # user's (a test that teaches a tag must not change what the user's tagging says).
        env = {
            **os.environ,
            "MAEDAW_DATA_DIR": str(state.parent / "data"),
            "MAEDAW_CACHE_DIR": str(state.parent / "cache"),
        }
        self.process = subprocess.Popen(command, stderr=open(self.log, "w"), env=env)  # noqa: SIM115
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.log.read_text()
            if "listening on" in text:
                return int(text.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited: {text}")
            time.sleep(0.05)
        raise RuntimeError("daemon did not start")

    def status(self) -> dict:
        """The daemon's ``/maedaw/status`` JSON for every job."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(build_msg("/maedaw/status", []).dgram, ("127.0.0.1", self.port))
            data, _ = sock.recvfrom(70_000)
        return json.loads(OscMessage(data).params[1])

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            return self.process.wait(30)
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)
