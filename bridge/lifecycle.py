"""Start the daemon in the background, find it, stop it: what a DAW's start/stop buttons call.

The daemon holds an exclusive lock on ``<state_dir>/serve.lock`` (with its pid inside) for
its whole life, so "is it running?" is "is that lock held?", which is never stale after a
crash, unlike a bare PID file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import build_msg

from maedaw.core.errors import MaedawError

log = logging.getLogger(__name__)

LOCK_NAME = "serve.lock"
LOG_NAME = "serve.log"
# The one line ``maedaw serve`` writes to stderr once it listens: "<this> HOST:PORT".
LISTENING = "maedaw serve listening on"


class LifecycleError(MaedawError):
    """The daemon could not be started or stopped; the message says why."""


def running_pid(state_dir: Path) -> int | None:
    """The pid of the daemon that holds ``state_dir``'s lock, or None when none does."""
    path = state_dir / LOCK_NAME
    try:
        handle = open(path)  # noqa: SIM115 - closed below in every case
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # held: a daemon is alive
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def ping(host: str, port: int, timeout_s: float = 0.5, token: str | None = None) -> bool:
    """True when a maedaw daemon answers ``/maedaw/ping`` on ``host:port`` (UDP), signed with
    ``token`` when given (docs/security.md): with a pong, or, without the right token, with
    its ``forbidden`` error (it is up all the same)."""
    import socket

    from .auth import seal

    packet = build_msg("/maedaw/ping", ["lifecycle"]).dgram
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.sendto(seal(packet, token) if token else packet, (host, port))
            data, _ = sock.recvfrom(65536)
        except OSError:
            return False
    with contextlib.suppress(Exception):
        message = OscMessage(data)
        if message.address == "/maedaw/error":
            return list(message.params)[2:3] == ["forbidden"]
        return message.address == "/maedaw/pong"
    return False


def start_detached(
    serve_args: Sequence[str], state_dir: Path, host: str, port: int, wait_s: float = 30.0
) -> int:
    """Run ``maedaw serve SERVE_ARGS`` in its own session, logging to ``state_dir/serve.log``;
    return its pid once it answers a ping. Idempotent: a daemon already running there is
    left alone and its pid returned."""
    from .auth import client_token

    deadline = time.monotonic() + wait_s
    while (pid := running_pid(state_dir)) is not None:
        if ping(host, port, token=client_token(state_dir=state_dir)):
            log.info("a maedaw daemon (pid %s) is already running for %s", pid, state_dir)
            return pid
        if time.monotonic() > deadline:  # not shutting down either: on another port, or hung
            raise LifecycleError(
                f"a maedaw daemon (pid {pid}) holds {state_dir} but does not answer on "
                f"{host}:{port}; stop it first (maedaw stop)"
            )
        time.sleep(0.2)  # one that is shutting down stops answering before it lets go
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / LOG_NAME
    command = [sys.executable, "-m", "maedaw.bridge.cli", "serve", *serve_args]
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(  # our own interpreter and module, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,  # survives the terminal or DAW that started it
            close_fds=True,
        )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LifecycleError(
                f"maedaw serve exited at once (code {process.returncode}):\n{_tail(log_path)}"
            )
        if ping(host, port, token=client_token(state_dir=state_dir)):  # created at its start
            return process.pid
        time.sleep(0.2)
    process.terminate()
    raise LifecycleError(f"maedaw serve did not answer within {wait_s:.0f} s:\n{_tail(log_path)}")


def start_child(
    serve_args: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    wait_s: float = 30.0,
) -> tuple[subprocess.Popen, int]:
    """Run ``maedaw serve --port 0 SERVE_ARGS`` as a child of this process (benchmarks, tests),
    its stderr to ``log_path``; return the process and the port it picked, read from its
    :data:`LISTENING` line. The caller stops it (``terminate()``)."""
    command = [sys.executable, "-m", "maedaw.bridge.cli", "serve", "--port", "0", *serve_args]
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(command, stderr=log_file, env=env)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if LISTENING in text:
            return process, int(text.split(LISTENING)[1].split()[0].rsplit(":", 1)[1])
        if process.poll() is not None:
            raise LifecycleError(f"maedaw serve exited (code {process.returncode}):\n{text}")
        time.sleep(0.05)
    process.terminate()
    raise LifecycleError(f"maedaw serve did not start within {wait_s:.0f} s:\n{_tail(log_path)}")


def stop(state_dir: Path, wait_s: float = 30.0) -> int | None:
    """SIGTERM the daemon of ``state_dir`` (it finishes or fails its running job cleanly) and
    wait until its lock is free. Returns the pid stopped, or None if none was running."""
    pid = running_pid(state_dir)
    if pid is None:
        return None
    if pid <= 0:
        raise LifecycleError(f"a daemon holds {state_dir / LOCK_NAME} but its pid is unreadable")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + wait_s
    while running_pid(state_dir) is not None:
        if time.monotonic() > deadline:
            raise LifecycleError(f"the daemon (pid {pid}) did not stop within {wait_s:.0f} s")
        time.sleep(0.1)
    return pid


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""
