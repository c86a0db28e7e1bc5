"""The security model (docs/security.md): the token, signed requests, roots, reply_port.

Unit tests of the token file, the signature and replay checks, the Lua signer against the
Python one, and the path policy's symlink cases; then one real daemon: unsigned, wrongly
signed and replayed requests are ``forbidden`` with nothing read or written, a daemon with
no root of its own allows only its home folder, and --allow-remote needs the token.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_process import DaemonProcess
from pythonosc.osc_message_builder import build_msg
from test_daemon import Client

from maedaw.bridge.auth import (
    AuthError,
    Verifier,
    ensure_token,
    inner,
    read_token,
    seal,
    token_path,
)
from maedaw.bridge.contract import ErrorCode, RequestError
from maedaw.bridge.paths import PathPolicy
from maedaw.bridge.transport import Counters, RateLimitedLog, UdpReply
from maedaw.dsp.audio_io import SampleFormat, write_stem
from maedaw.dsp.signals import music_clip

ROOT = Path(__file__).resolve().parents[1]
OSC_LUA = ROOT / "reaper_scripts" / "maedaw" / "maedaw_osc.lua"
LUA = shutil.which("lua5.4")
PING = build_msg("/maedaw/ping", ["p-1"]).dgram


# --- the token file ------------------------------------------------------------------------


def test_token_is_created_once_private_and_checked(tmp_path):
    state = tmp_path / "state"
    token = ensure_token(state)
    path = token_path(state)
    assert len(token) == 64 and int(token, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token(state) == token  # the second start reads it, never replaces it
    path.chmod(0o644)  # readable by others: it no longer proves anything
    with pytest.raises(AuthError, match="readable by other users"):
        read_token(path)
    path.chmod(0o600)
    path.write_text("short\n")
    with pytest.raises(AuthError, match="does not hold a token"):
        read_token(path)


# --- signatures, clocks, replays ---------------------------------------------------------


def test_a_signed_request_opens_once_and_only_with_its_token():
    token, now = "a" * 64, 1_800_000_000.0
    verifier = Verifier(token)
    sealed = seal(PING, token, now=now)
    assert inner(sealed) == PING
    assert verifier.open(sealed, now=now + 5) == PING
    refusals = {
        "replayed": sealed,
        "wrong token": seal(PING, "b" * 64, now=now),
        "unsigned": PING,
        "old": seal(PING, token, now=now - 500),
        "future": seal(PING, token, now=now + 500),
    }
    # one changed byte of the request inside: the MAC no longer matches
    tampered = bytearray(seal(PING, token, now=now))
    tampered[-3] ^= 0x01
    refusals["tampered"] = bytes(tampered)
    for why, packet in refusals.items():
        with pytest.raises(AuthError):
            verifier.open(packet, now=now + 5)
            pytest.fail(f"{why} request was accepted")


def test_forgotten_nonces_can_never_be_replayed():
    token = "c" * 64
    verifier = Verifier(token, max_nonces=2)
    first = seal(PING, token, now=1000)
    for when, packet in ((1000, first), (1001, None), (1002, None)):
        verifier.open(packet or seal(PING, token, now=when), now=1002)
    with pytest.raises(AuthError, match="replayed"):  # evicted, but signed before the floor
        verifier.open(first, now=1003)
    assert verifier.open(seal(PING, token, now=1003), now=1003) == PING


@pytest.mark.skipif(not LUA, reason="lua5.4 not installed")
def test_the_lua_signer_writes_the_same_bytes_as_python():
    """REAPER and Ardour sign in pure Lua (maedaw_osc.lua): its SHA-256 across the padding
    boundaries, its HMAC and its envelope must be byte-identical to Python's."""
    token, nonce, when = "0123456789abcdef" * 4, "n" * 20, 1_800_000_123
    lengths = (0, 1, 55, 56, 63, 64, 65, 200)
    code = (
        f"local osc = dofile({str(OSC_LUA)!r})\n"
        f"for _, n in ipairs({{{', '.join(map(str, lengths))}}}) do"
        " print(osc.hex(osc.sha256(string.rep('x', n)))) end\n"
        f"print(osc.hex(osc.seal(osc.request('ping', {{client_job = 'p-1'}}), {token!r}, {when},"
        f" {nonce!r})))\n"
        f"local env = {{MAEDAW_TOKEN = {token!r}}}\n"
        "print(osc.token({token = ''}, function(k) return env[k] end))"
    )
    out = subprocess.run([LUA, "-e", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    import hashlib

    assert lines[: len(lengths)] == [hashlib.sha256(b"x" * n).hexdigest() for n in lengths]
    assert lines[len(lengths)] == seal(PING, token, now=when, nonce=nonce).hex()
    assert lines[len(lengths) + 1] == token


# --- paths: realpath at every component -------------------------------------------------


def test_symlinks_out_of_a_root_are_refused_at_any_component(tmp_path):
    root, outside = tmp_path / "projects", tmp_path / "elsewhere"
    (root / "session").mkdir(parents=True)
    outside.mkdir()
    for folder in (root / "session", outside):
        (folder / "take.wav").write_bytes(b"x")
    (root / "linked-take.wav").symlink_to(outside / "take.wav")  # the file itself
    (root / "linked-folder").symlink_to(outside)  # a parent folder (the old hole)
    (root / "inside-link").symlink_to(root / "session")  # a link that stays inside: fine
    policy = PathPolicy.from_dirs([root])
    for path in (root / "linked-take.wav", root / "linked-folder" / "take.wav"):
        with pytest.raises(RequestError) as caught:
            policy.source(path)
        assert caught.value.code is ErrorCode.FORBIDDEN
    with pytest.raises(RequestError):
        policy.out_dir(root / "linked-folder")
    assert policy.source(root / "inside-link" / "take.wav") == root / "session" / "take.wav"
    # a root given through a symlink is its real folder
    (tmp_path / "alias").symlink_to(root)
    assert PathPolicy.from_dirs([tmp_path / "alias"]).roots == (root.resolve(),)


def test_reply_port_only_aims_at_the_senders_host():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        counters = Counters()
        reply = UdpReply(sock, ("192.0.2.7", 5000), counters, RateLimitedLog(counters))
        assert reply.with_port(9999).address == ("192.0.2.7", 9999)


# --- a real daemon ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A daemon with the defaults a user gets (token required, no --allow-root: its home,
    here a folder of the test's), --allow-remote on loopback (every client host logged)."""
    root = tmp_path_factory.mktemp("security")
    home = root / "home"
    (home / "project").mkdir(parents=True)
    clip = music_clip(16_000, 1.0, channels=1, seed=4)
    write_stem(home / "project" / "take.wav", clip, 16_000, SampleFormat.INT16)
    (root / "outside").mkdir()
    write_stem(root / "outside" / "take.wav", clip, 16_000, SampleFormat.INT16)
    daemon = DaemonProcess(
        root / "state", "--allow-root", "-", "--allow-remote", env={"HOME": str(home)}
    )
    yield daemon, root
    daemon.kill()


def _send(daemon: DaemonProcess, packet: bytes, client: Client | None = None) -> list:
    client = client or Client(daemon.port)
    client.send_raw(packet)
    return client.until("/maedaw/error", "/maedaw/pong", "/maedaw/accepted", timeout=15)[-1]


def test_unsigned_or_wrongly_signed_requests_touch_nothing(guarded):
    daemon, root = guarded
    project = root / "home" / "project"
    before = sorted(project.iterdir())
    missing = str(project / "no-such-file.wav")  # not_found would mean it was looked at
    repair = build_msg("/maedaw/repair", ["r-1", missing, 0.0, 1.0, str(project)]).dgram
    wrong = "f" * 64
    for packet in (repair, seal(repair, wrong), PING, seal(PING, wrong)):
        address, params = _send(daemon, packet)
        assert address == "/maedaw/error" and params[2] == "forbidden", params
        assert params[0] in ("r-1", "p-1")  # which request it was, for the client
    assert sorted(project.iterdir()) == before
    assert token_path(daemon.state).stat().st_mode & 0o077 == 0
    # the same signed ping twice: the second is a replay
    client = Client(daemon.port)
    signed = seal(PING, daemon.token)
    assert _send(daemon, signed, client)[0] == "/maedaw/pong"
    address, params = _send(daemon, signed, client)
    assert address == "/maedaw/error" and params[2] == "forbidden" and "replay" in params[3]
    status = daemon.status()["daemon"]
    assert status["forbidden"] >= 5 and status["token"] is True
    assert "client 127.0.0.1: first UDP request" in daemon.log.read_text()


def test_the_default_root_is_the_home_folder(guarded):
    daemon, root = guarded
    client = Client(daemon.port)
    outside = root / "outside"
    client.send("/maedaw/repair", "out-1", str(outside / "take.wav"), 0.0, 1.0, str(outside))
    address, params = client.until("/maedaw/error", "/maedaw/accepted")[-1]
    assert address == "/maedaw/error" and params[2] == "forbidden", params
    project = root / "home" / "project"
    client.send("/maedaw/repair", "in-1", str(project / "take.wav"), 0.0, 1.0, str(project))
    assert client.until("/maedaw/error", "/maedaw/accepted")[-1][0] == "/maedaw/accepted"
    assert client.until("/maedaw/done", "/maedaw/error", timeout=60)[-1][0] == "/maedaw/done"
    assert not list(outside.glob("*.repair-*"))


def test_allow_remote_refuses_to_run_without_the_token(tmp_path):
    command = [sys.executable, "-m", "maedaw.bridge.cli", "serve", "--port", "0"]
    done = subprocess.run(
        [*command, "--state-dir", str(tmp_path), "--allow-remote", "--no-token"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert done.returncode != 0 and "--allow-remote needs the token" in done.stderr
    assert not token_path(tmp_path).exists()  # nothing started
