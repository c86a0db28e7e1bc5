"""`maedaw serve --detach` and `maedaw stop`: what the DAW's start/stop buttons run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maedaw.bridge.lifecycle import LifecycleError, ping, running_pid, start_detached


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", port))  # the daemon also takes the TCP port
    return port


def _maedaw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maedaw.bridge.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_start_detached_is_idempotent_and_stop_frees_the_lock(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = _free_port()
    assert running_pid(state) is None
    started = _maedaw("serve", "--detach", "--port", str(port), "--state-dir", str(state))
    assert started.returncode == 0, started.stderr
    pid = running_pid(state)
    assert pid is not None and pid > 0
    try:
        assert ping("127.0.0.1", port, timeout_s=2.0)
        again = _maedaw("serve", "--detach", "--port", str(port), "--state-dir", str(state))
        assert again.returncode == 0 and running_pid(state) == pid  # no second daemon
        stopped = _maedaw("stop", "--state-dir", str(state))
        assert stopped.returncode == 0 and f"stopped pid {pid}" in stopped.stderr
        assert running_pid(state) is None
        assert not ping("127.0.0.1", port, timeout_s=0.3)
        assert "maedaw serve stopped" in (state / "serve.log").read_text()
    finally:
        if running_pid(state) is not None:
            os.kill(pid, signal.SIGKILL)
    nothing = _maedaw("stop", "--state-dir", str(state))
    assert nothing.returncode == 0 and "no maedaw daemon" in nothing.stderr


def test_a_killed_daemon_leaves_no_stale_lock(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = _free_port()
    started = _maedaw("serve", "--detach", "--port", str(port), "--state-dir", str(state))
    assert started.returncode == 0, started.stderr
    pid = running_pid(state)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while running_pid(state) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running_pid(state) is None  # the kernel released the lock with the process


def test_a_daemon_on_another_port_is_not_taken_for_ours(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port, other = _free_port(), _free_port()
    started = _maedaw("serve", "--detach", "--port", str(port), "--state-dir", str(state))
    assert started.returncode == 0, started.stderr
    try:
        with pytest.raises(LifecycleError, match="does not answer"):
            start_detached([], state, "127.0.0.1", other, wait_s=1.0)
    finally:
        assert _maedaw("stop", "--state-dir", str(state)).returncode == 0


def test_detach_failure_is_reported_with_the_log(tmp_path: Path) -> None:
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    try:
        port = busy.getsockname()[1]
        result = _maedaw("serve", "--detach", "--port", str(port), "--state-dir", str(tmp_path))
    finally:
        busy.close()
    assert result.returncode == 1
    assert "exited at once" in result.stderr and "cannot listen" in result.stderr


def test_detach_needs_a_fixed_port(tmp_path: Path) -> None:
    result = _maedaw("serve", "--detach", "--port", "0", "--state-dir", str(tmp_path))
    assert result.returncode == 2 and "fixed --port" in result.stderr
