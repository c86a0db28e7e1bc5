"""A real ``maedaw serve`` process, real clients (python-osc, liblo's oscsend/oscdump), loopback.

Covers: ping, a repair end to end with progress, reply_port, cancel, busy,
timeouts, TCP with SLIP framing, kill -9 mid-job then restart, a second daemon on
the same state, clean SIGTERM, and a bounded fuzz run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from daemon_process import DaemonProcess, sign
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonosc import slip
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import build_msg

from maedaw.bridge.server import bundled_model
from maedaw.dsp.audio_io import SampleFormat, read_region, write_stem
from maedaw.dsp.damage import insert_dropout
from maedaw.dsp.signals import music_clip

RATE = 48_000


class Client:
    """A UDP OSC client with its own socket (replies come back to it)."""

    def __init__(self, port: int) -> None:
        self.server = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    def send(self, address: str, *args) -> None:
        """A request, signed with the daemon's token (as every client's must be)."""
        self.sock.sendto(sign(self.server[1], build_msg(address, list(args)).dgram), self.server)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    def recv(self, timeout: float = 10.0, model_news: bool = False) -> tuple[str, list]:
        """The next reply; the watcher's model announcements are skipped unless asked for
        (the bundled model loads in the background just after start-up)."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data, _ = self.sock.recvfrom(70_000)
            message = OscMessage(data)
            if model_news or not message.address.startswith("/maedaw/model/"):
                return message.address, list(message.params)

    def until(self, *addresses: str, timeout: float = 60.0) -> list[tuple[str, list]]:
        """Collect replies until one of ``addresses`` arrives."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            news = any(a.startswith("/maedaw/model/") for a in addresses)
            address, params = self.recv(max(0.1, deadline - time.monotonic()), news)
            seen.append((address, params))
            if address in addresses:
                return seen
        raise TimeoutError(f"no {addresses} in {seen}")


@pytest.fixture()
def session(tmp_path) -> Path:
    """A 'project folder' with a damaged take."""
    folder = tmp_path / "project"
    folder.mkdir()
    clip = music_clip(RATE, 4.0, channels=2, seed=9)
    insert_dropout(clip, 0, int(1.2 * RATE), int(0.01 * RATE))
    insert_dropout(clip, 1, int(2.7 * RATE), int(0.008 * RATE))
    write_stem(folder / "take.wav", clip, RATE, SampleFormat.INT24)
    return folder


@pytest.fixture()
def long_take(tmp_path) -> Path:
    """A take whose repair (many marked spans) runs for seconds: for cancel/kill tests."""
    folder = tmp_path / "long"
    folder.mkdir()
    write_stem(
        folder / "long.wav", music_clip(RATE, 30.0, channels=2, seed=2), RATE, SampleFormat.INT16
    )
    return folder / "long.wav"


LONG_SPANS = json.dumps({"spans": ",".join(f"{t + 0.5}:{t + 0.54}" for t in range(29))})


@pytest.fixture()
def server(tmp_path):
    daemon = DaemonProcess(tmp_path / "state")
    yield daemon
    daemon.stop()


def test_ping(server):
    client = Client(server.port)
    client.send("/maedaw/ping", "hello")
    address, params = client.recv()
    assert address == "/maedaw/pong"
    assert params[:2] == ["hello", "maedaw-osc/1"]


def test_repair_end_to_end(server, session):
    client = Client(server.port)
    client.send("/maedaw/repair", "take-1", str(session / "take.wav"), 0.5, 3.5, str(session))
    replies = client.until("/maedaw/done", "/maedaw/error")
    kinds = [a for a, _ in replies]
    assert kinds[0] == "/maedaw/accepted" and kinds[-1] == "/maedaw/done", replies
    job_id = replies[0][1][1]
    fractions = [p[2] for a, p in replies if a == "/maedaw/progress"]
    assert fractions and fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    _, (client_job, done_id, stem, report_path, summary) = replies[-1]
    assert (client_job, done_id) == ("take-1", job_id)
    assert Path(stem).name == f"take.repair-{job_id}.wav"
    assert json.loads(summary)["repaired"] == 2
    # The stem is exactly the region, and only the written stretches differ.
    report = json.loads(Path(report_path).read_text())
    source = read_region(session / "take.wav").samples[:, int(0.5 * RATE) : int(3.5 * RATE)]
    stem_samples = read_region(stem).samples
    assert stem_samples.shape == source.shape
    changed = np.zeros(source.shape, dtype=bool)
    for span in report["spans"]:
        lo, hi = span["written_start"] - int(0.5 * RATE), span["written_end"] - int(0.5 * RATE)
        changed[span["channel"], lo:hi] = True
    np.testing.assert_array_equal(stem_samples[~changed], source[~changed])
    assert changed.any()


def test_reply_port_and_status(server, session):
    client, listener = Client(server.port), Client(server.port)
    options = json.dumps({"reply_port": listener.sock.getsockname()[1], "label": "fix"})
    client.send("/maedaw/repair", "rp", str(session / "take.wav"), 0.0, -1.0, str(session), options)
    replies = listener.until("/maedaw/done", "/maedaw/error")
    assert replies[-1][0] == "/maedaw/done"
    assert ".fix-" in replies[-1][1][2]
    client.send("/maedaw/status", "rp")
    address, (client_job, text) = client.recv()
    assert address == "/maedaw/status" and client_job == "rp"
    (job,) = json.loads(text)["jobs"]
    assert job["state"] == "done" and job["stem"] == replies[-1][1][2]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("e1", "/nonexistent/take.wav", 0.0, 1.0, "/tmp"), "not_found"),
        (("e2", "relative.wav", 0.0, 1.0, "/tmp"), "bad_request"),
        (("e3",), "bad_request"),
    ],
)
def test_bad_requests_get_errors(server, args, code):
    client = Client(server.port)
    client.send("/maedaw/repair", *args)
    address, params = client.recv()
    assert address == "/maedaw/error" and params[2] == code


def test_region_past_the_end_fails_cleanly(server, session):
    client = Client(server.port)
    client.send("/maedaw/repair", "late", str(session / "take.wav"), 10.0, 12.0, str(session))
    replies = client.until("/maedaw/error", "/maedaw/done")
    assert replies[-1][1][2] == "bad_audio" and "past the end" in replies[-1][1][3]
    assert sorted(p.name for p in session.iterdir()) == ["take.wav"]


def test_long_gap_is_inpainted_by_the_served_model(server, tmp_path):
    folder = tmp_path / "long-gap"
    folder.mkdir()
    clip = music_clip(RATE, 6.0, channels=2, seed=4)
    clean = clip.copy()
    gap = slice(int(3.0 * RATE), int(3.15 * RATE))  # 150 ms: past what AR carries
    clip[:, gap] = 0.0
    write_stem(folder / "take.wav", clip, RATE, SampleFormat.FLOAT32)
    client = Client(server.port)
    spans = json.dumps({"spans": "3.0:3.15"})
    client.send("/maedaw/repair", "g1", str(folder / "take.wav"), 0.0, 6.0, str(folder), spans)
    replies = client.until("/maedaw/done", "/maedaw/error", timeout=180)
    assert replies[-1][0] == "/maedaw/done", replies
    report = json.loads(Path(replies[-1][1][3]).read_text())
    assert {s["method"] for s in report["spans"]} <= {"mae", "blend"}, report["spans"]
    got = read_region(replies[-1][1][2]).samples
    filled = got[:, gap]
    assert np.isfinite(got).all() and np.abs(filled).max() > 0.0
    # the hole is filled with sound of the right level, not left silent
    level = np.sqrt(np.mean(filled**2)) / np.sqrt(np.mean(clean[:, gap] ** 2))
    assert 0.3 < level < 3.0
    outside = np.ones(got.shape[1], dtype=bool)
    for span in report["spans"]:
        outside[span["written_start"] : span["written_end"]] = False
    source = read_region(folder / "take.wav").samples
    np.testing.assert_array_equal(got[:, outside], source[:, outside])


def test_tag_replies_with_ranked_tags_and_writes_nothing(server, session):
    client = Client(server.port)
    before = sorted(p.name for p in session.iterdir())
    options = json.dumps({"top_k": 3})
    client.send("/maedaw/tag", "t1", str(session / "take.wav"), 0.0, 4.0, options)
    replies = client.until("/maedaw/done", "/maedaw/error", timeout=120)
    assert replies[0][0] == "/maedaw/accepted" and replies[-1][0] == "/maedaw/done", replies
    _, _, stem, report, summary = replies[-1][1]
    assert (stem, report) == ("", "")
    tags = json.loads(summary)["tags"]
    assert 1 <= len(tags) <= 3
    scores = [t["score"] for t in tags]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert all(t["label"] and t["source"] for t in tags)
    assert sorted(p.name for p in session.iterdir()) == before


def test_similar_ranks_candidates_and_reports_unreadable_ones(server, session):
    client = Client(server.port)
    take = session / "take.wav"
    rng = np.random.default_rng(4)
    write_stem(
        session / "hiss.wav", 0.1 * rng.standard_normal((2, 3 * RATE)), RATE, SampleFormat.INT16
    )
    before = sorted(p.name for p in session.iterdir())
    candidates = [
        {"id": "hiss", "source": str(session / "hiss.wav")},
        {"id": "same-take", "source": str(take), "start": 2.0, "end": 4.0},
        {"id": "gone", "source": str(session / "missing.wav")},
        {"id": "past-end", "source": str(take), "start": 9.0, "end": 10.0},
    ]
    options = json.dumps({"top_k": 5})
    client.send("/maedaw/similar", "s1", str(take), 0.0, 2.0, json.dumps(candidates), options)
    replies = client.until("/maedaw/done", "/maedaw/error", timeout=120)
    assert replies[0][0] == "/maedaw/accepted" and replies[-1][0] == "/maedaw/done", replies
    _, _, stem, report, summary = replies[-1][1]
    assert (stem, report) == ("", "")
    result = json.loads(summary)
    ranked = [r["id"] for r in result["results"]]
    assert ranked == ["same-take", "hiss"], result  # the rest of the same music comes first
    sims = [r["similarity"] for r in result["results"]]
    assert -1.0 <= sims[1] < sims[0] <= 1.0
    skipped = {s["id"]: s["error"] for s in result["skipped"]}
    assert set(skipped) == {"gone", "past-end"}
    assert skipped["gone"].startswith("not_found") and "outside the file" in skipped["past-end"]
    assert sorted(p.name for p in session.iterdir()) == before  # nothing written
    client.send("/maedaw/similar", "s2", str(take), 0.0, 2.0, "[]")
    replies = client.until("/maedaw/error")
    assert replies[-1][1][2] == "bad_request" and "regions" in replies[-1][1][3]


def test_teach_adds_an_example_that_later_tag_jobs_use(server, session):
    client = Client(server.port)
    rng = np.random.default_rng(6)
    write_stem(
        session / "buzz.wav",
        0.2 * np.sign(np.sin(np.arange(4 * RATE) * 0.05))[None]
        + 0.01 * rng.standard_normal((1, 4 * RATE)),
        RATE,
        SampleFormat.INT16,
    )
    before = sorted(p.name for p in session.iterdir())
    for n, (start, end) in enumerate(((0.0, 2.0), (2.0, 4.0))):
        client.send("/maedaw/teach", f"teach{n}", "my buzz", str(session / "buzz.wav"), start, end)
        replies = client.until("/maedaw/done", "/maedaw/error", timeout=120)
        assert replies[-1][0] == "/maedaw/done", replies
        summary = json.loads(replies[-1][1][4])
        assert summary["name"] == "my buzz" and summary["examples"] == n + 1
    library = Path(summary["library"])
    assert library.is_relative_to(server.state.parent)  # the test's folder, not the user's
    client.send("/maedaw/tag", "t-buzz", str(session / "buzz.wav"), 0.5, 3.5, '{"top_k": 100}')
    replies = client.until("/maedaw/done", "/maedaw/error", timeout=120)
    tags = json.loads(replies[-1][1][4])["tags"]
    assert "my buzz" in [t["label"] for t in tags], tags
    assert sorted(p.name for p in session.iterdir()) == before  # no stems


def test_restore_writes_a_stem_of_the_region_and_refuses_bad_params(server, session):
    client = Client(server.port)
    take = session / "take.wav"
    client.send("/maedaw/restore", "r1", "dehum", str(take), 0.5, 3.5, str(session))
    replies = client.until("/maedaw/done", "/maedaw/error")
    assert replies[0][0] == "/maedaw/accepted" and replies[-1][0] == "/maedaw/done", replies
    stem, report = Path(replies[-1][1][2]), Path(replies[-1][1][3])
    assert stem.name.startswith("take.dehum-") and json.loads(report.read_text())["op"] == "dehum"
    got, source = read_region(stem), read_region(take)
    assert got.info.sample_format == source.info.sample_format
    assert got.samples.shape == (2, 3 * RATE)
    summary = json.loads(replies[-1][1][4])
    assert summary["op"] == "dehum" and "changed" in summary
    before = sorted(p.name for p in session.iterdir())
    options = json.dumps({"params": {"loudness": 11}})
    client.send("/maedaw/restore", "r2", "dehum", str(take), 0.5, 3.5, str(session), options)
    replies = client.until("/maedaw/done", "/maedaw/error")
    assert replies[-1][1][2] == "bad_request" and "loudness" in replies[-1][1][3]
    assert sorted(p.name for p in session.iterdir()) == before  # nothing written


def test_cancel_running_job_writes_nothing(server, long_take):
    client = Client(server.port)
    folder = long_take.parent
    client.send("/maedaw/repair", "long", str(long_take), 0.0, -1.0, str(folder), LONG_SPANS)
    client.until("/maedaw/progress")
    client.send("/maedaw/cancel", "long")
    replies = client.until("/maedaw/error", "/maedaw/done")
    assert replies[-1][0] == "/maedaw/error" and replies[-1][1][2] == "cancelled"
    assert sorted(p.name for p in folder.iterdir()) == ["long.wav"]
    client.send("/maedaw/cancel", "never-sent")
    assert client.recv()[1][2] == "unknown_job"


def test_timeout(server, long_take):
    client = Client(server.port)
    options = json.loads(LONG_SPANS) | {"timeout_s": 0.5}
    client.send(
        "/maedaw/repair",
        "slow",
        str(long_take),
        0.0,
        -1.0,
        str(long_take.parent),
        json.dumps(options),
    )
    replies = client.until("/maedaw/error", "/maedaw/done")
    assert replies[-1][1][2] == "timeout"
    assert sorted(p.name for p in long_take.parent.iterdir()) == ["long.wav"]


def test_full_queue_answers_busy_at_once(tmp_path, long_take):
    daemon = DaemonProcess(tmp_path / "state", "--max-queue", "1")
    try:
        client = Client(daemon.port)
        for n in range(3):
            client.send(
                "/maedaw/repair",
                f"q{n}",
                str(long_take),
                0.0,
                -1.0,
                str(long_take.parent),
                LONG_SPANS,
            )
        # Every request is answered at once: accepted or busy (one runs, one waits).
        answers: dict[str, str] = {}
        deadline = time.monotonic() + 10
        while len(answers) < 3 and time.monotonic() < deadline:
            address, params = client.recv()
            if address == "/maedaw/accepted":
                answers[params[0]] = "accepted"
            elif address == "/maedaw/error" and params[2] == "busy":
                answers[params[0]] = "busy"
        assert answers["q0"] == "accepted"
        assert sorted(answers.values()) in (
            ["accepted", "accepted", "busy"],
            ["accepted", "busy", "busy"],
        )
        client.send("/maedaw/ping", "still-there")  # the receiver was never blocked
        assert client.until("/maedaw/pong", timeout=5)[-1][1][0] == "still-there"
        for name, answer in answers.items():
            if answer == "accepted":
                client.send("/maedaw/cancel", name)
    finally:
        daemon.stop()


def test_kill_9_mid_job_then_restart_reports_interrupted(tmp_path, long_take):
    state = tmp_path / "state"
    daemon = DaemonProcess(state)
    client = Client(daemon.port)
    client.send(
        "/maedaw/repair", "doomed", str(long_take), 0.0, -1.0, str(long_take.parent), LONG_SPANS
    )
    client.until("/maedaw/progress")
    daemon.kill()  # SIGKILL: no cleanup of any kind
    # Whatever the crash left, a partial stem under the final name it is not.
    leftovers = [p.name for p in long_take.parent.iterdir() if p.name != "long.wav"]
    assert all(name.startswith(".") for name in leftovers), leftovers
    # The job worker process dies with the daemon: an orphan could still write a stem.
    worker = int(daemon.log.read_text().split("job worker process ")[1].split()[0])
    deadline = time.monotonic() + 5
    while running(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(worker)
    restarted = DaemonProcess(state)
    try:
        # The restarted daemon tells the client (still listening) and cleans up.
        address, params = client.until("/maedaw/error", timeout=10)[-1]
        assert address == "/maedaw/error"
        assert params[0] == "doomed" and params[2] == "interrupted"
        assert sorted(p.name for p in long_take.parent.iterdir()) == ["long.wav"]
        status = Client(restarted.port)
        status.send("/maedaw/status", "doomed")
        _, (_, text) = status.recv()
        (job,) = json.loads(text)["jobs"]
        assert job["state"] == "failed" and job["error"]["code"] == "interrupted"
    finally:
        restarted.stop()


def running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has stopped; only its reaping is pending)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_second_daemon_on_same_state_refuses(server):
    other = subprocess.run(
        [
            sys.executable,
            "-m",
            "maedaw.bridge.cli",
            "serve",
            "--port",
            "0",
            "--state-dir",
            str(server.state),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert other.returncode == 1 and "another maedaw serve" in other.stderr


def test_non_loopback_needs_allow_remote(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "maedaw.bridge.cli",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1 and "not a loopback address" in result.stderr


def test_sigterm_is_a_clean_exit(tmp_path):
    daemon = DaemonProcess(tmp_path / "state")
    assert daemon.stop() == 0
    assert "stopped" in daemon.log.read_text()


def test_tcp_slip(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        # Two packets in one write, the second split across writes: framing must cope.
        first = slip.encode(sign(server.port, build_msg("/maedaw/ping", ["tcp-1"]).dgram))
        second = slip.encode(sign(server.port, build_msg("/maedaw/ping", ["tcp-2"]).dgram))
        sock.sendall(first + second[:5])
        time.sleep(0.05)
        sock.sendall(second[5:])
        received = b""
        while received.count(slip.END) < 4:
            received += sock.recv(4096)
        frames = [f for f in received.split(slip.END) if f]
        pongs = [OscMessage(slip.decode(slip.END + f + slip.END)) for f in frames]
        assert [(m.address, m.params[0]) for m in pongs] == [
            ("/maedaw/pong", "tcp-1"),
            ("/maedaw/pong", "tcp-2"),
        ]
    # A client that streams bytes with no frame end is cut off; others carry on.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        with contextlib.suppress(OSError):
            for _ in range(8):
                sock.sendall(b"\x01" * 65_536)
        assert sock.recv(10) == b""  # closed by the daemon
    client = Client(server.port)
    client.send("/maedaw/ping", "after-tcp")
    assert client.recv()[0] == "/maedaw/pong"


@pytest.mark.skipif(
    shutil.which("oscsend") is None and os.environ.get("MAEDAW_REQUIRE_REAL_AUDIO") != "1",
    reason="liblo-tools (oscsend/oscdump) not installed",
)
def test_liblo_oscsend_and_oscdump(tmp_path, session):
    """A client we did not write: liblo's command-line tools (which cannot sign: the daemon
    runs with --no-token, as a user who drives it from such tools would)."""
    server = DaemonProcess(tmp_path / "open-state", "--no-token")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        reply_port = probe.getsockname()[1]
    dump = subprocess.Popen(["oscdump", "-L", str(reply_port)], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        options = json.dumps({"reply_port": reply_port})
        subprocess.run(
            [
                "oscsend",
                "localhost",
                str(server.port),
                "/maedaw/repair",
                "ssddss",
                "liblo-1",
                str(session / "take.wav"),
                "0",
                "4.0",
                str(session),
                options,
            ],
            check=True,
            timeout=10,
        )
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = dump.stdout.readline()
            lines.append(line)
            if "/maedaw/done" in line or "/maedaw/error" in line:
                break
        assert "/maedaw/accepted" in "".join(lines)
        assert "/maedaw/done" in lines[-1] and "liblo-1" in lines[-1], lines
    finally:
        dump.kill()
        dump.wait()
        server.stop()


# --- fuzz ----------------------------------------------------------------------------

REQUEST_ADDRESSES = [
    "/maedaw/ping",
    "/maedaw/repair",
    "/maedaw/restore",
    "/maedaw/tag",
    "/maedaw/similar",
    "/maedaw/teach",
    "/maedaw/cancel",
    "/maedaw/status",
    "/maedaw/model/reload",
    "/maedaw/x",
]
OSC_VALUES = st.one_of(
    st.integers(-(2**31), 2**31 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=300),
    st.binary(max_size=300),
    st.booleans(),
    st.none(),
)


@st.composite
def packets(draw) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:  # random bytes
        return draw(st.binary(max_size=2000))
    address = draw(st.sampled_from(REQUEST_ADDRESSES))
    try:
        message = build_msg(address, draw(st.lists(OSC_VALUES, max_size=8))).dgram
    except Exception:  # a value python-osc cannot encode (an empty blob, say)
        message = build_msg(address, []).dgram
    if kind == 1:  # a well-formed message with wrong arguments
        return message
    if kind == 2:  # truncated
        return message[: draw(st.integers(0, len(message)))]
    cut = draw(st.integers(0, max(0, len(message) - 1)))  # one corrupted byte
    return message[:cut] + bytes([draw(st.integers(0, 255))]) + message[cut + 1 :]


def test_fuzz_daemon_survives_and_answers(server):
    client = Client(server.port)
    sent = 0

    @settings(
        max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(packets())
    def send_one(packet: bytes) -> None:
        nonlocal sent
        # half as they are (the signature check), half signed (the parser behind it)
        client.send_raw(packet if sent % 2 or not packet else sign(server.port, packet))
        sent += 1

    send_one()
    # The largest datagram UDP carries, with a 65 kB string: refused, not choked on.
    client.send_raw(b"/maedaw/ping\x00\x00\x00\x00,s\x00\x00" + b"a" * 65_000 + b"\x00" * 4)
    client.send_raw(b"#bundle\x00" + b"\xff" * 64)  # a broken bundle
    assert sent >= 1500
    # Drain whatever the fuzz provoked, then the daemon must still answer.
    client.sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        while True:
            client.sock.recvfrom(70_000)
    client.send("/maedaw/ping", "after-fuzz")
    assert client.until("/maedaw/pong", timeout=10)[-1][1][0] == "after-fuzz"
    assert server.process.poll() is None
    client.send("/maedaw/status", "")
    daemon = json.loads(client.until("/maedaw/status")[-1][1][1])["daemon"]
    # Most random and corrupted packets are not OSC at all: dropped, and counted.
    assert daemon["dropped_packets"] >= 100
    assert daemon["worker_restarts"] == 0
    print(f"fuzz: {sent + 2} packets sent, {daemon['dropped_packets']} dropped as malformed")


def test_hot_reload_over_osc(tmp_path, session):
    from test_models_watch import tiny_checkpoint

    models = tmp_path / "models"
    daemon = DaemonProcess(tmp_path / "state", "--models-dir", str(models))
    try:
        client = Client(daemon.port)
        client.send("/maedaw/model/reload", "r1")
        params = [""]
        while params[0] != "r1":  # the start-up load may be announced to us first
            address, params = client.until("/maedaw/model/error", "/maedaw/model/loaded")[-1]
        if bundled_model() is None:  # an empty folder and nothing bundled: said so
            assert address == "/maedaw/model/error"
        else:  # an empty folder: the bundled default serves
            assert address == "/maedaw/model/loaded" and params[2] == str(bundled_model())
        # A job keeps running while a model is copied in and swapped.
        client.send("/maedaw/repair", "during", str(session / "take.wav"), 0.0, -1.0, str(session))
        good = tiny_checkpoint(tmp_path / "staging" / "m", 1)
        for suffix in (".safetensors", ".json"):
            shutil.copy(tmp_path / "staging" / f"m{suffix}", models / f"m{suffix}")
        replies = client.until("/maedaw/model/loaded", timeout=30)
        assert replies[-1][1][:2] == ["", good]  # the watcher tells recent clients
        if not any(a in ("/maedaw/done", "/maedaw/error") for a, _ in replies):
            replies = client.until("/maedaw/done", "/maedaw/error")
        assert any(a == "/maedaw/done" for a, _ in replies)
        client.send("/maedaw/ping", "which")
        assert client.until("/maedaw/pong")[-1][1][3] == good
        # A broken checkpoint is reported; the good one keeps serving.
        (models / "broken.safetensors").write_bytes(b"\x00" * 100)
        shutil.copy(models / "m.json", models / "broken.json")
        address, params = client.until("/maedaw/model/error", timeout=30)[-1]
        assert params[1].endswith("broken.json")
        client.send("/maedaw/ping", "still")
        assert client.until("/maedaw/pong")[-1][1][3] == good
    finally:
        daemon.stop()


def test_json_logs(tmp_path):
    daemon = DaemonProcess(tmp_path / "state", "--log-json")
    assert daemon.stop() == 0
    records = [
        json.loads(line) for line in daemon.log.read_text().splitlines() if line.startswith("{")
    ]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any("stopped" in r["message"] for r in records)


def test_the_daemon_serves_and_hot_swaps_the_learned_concealment_model(tmp_path, session):
    """A concealment pair in the models folder is validated, served to repair jobs (the report's
    methods say so) and named in the status; a damaged replacement is refused. The served
    Audio-MAE here is encoder-only (it cannot inpaint), so gaps follow the concealment table
    without the MAE, the one that hands 20-120 ms to the learned model."""
    from test_models_watch import tiny_concealment
    from tiny_models import tiny_model

    from maedaw.dsp.repair import PLC_METHODS, RepairConfig, concealment_choice
    from maedaw.models.checkpoint import save_model

    config = RepairConfig()  # past the periodic-AR range: the take is a tonal clip
    lengths = [
        n
        for n in range(20, 121, 10)
        if n > config.periodic_ar_until_ms
        and concealment_choice(n, config, False, 120.0) in PLC_METHODS
    ]
    if not lengths:
        pytest.skip("the concealment table without the MAE hands no gap length to the model")
    gap_ms = lengths[0]
    models = tmp_path / "models"
    models.mkdir()
    save_model(tiny_model(decoder_depth=0), models / "encoder-only")
    served = tiny_concealment(models / "plc-mine", 7)
    daemon = DaemonProcess(tmp_path / "state", "--models-dir", str(models))
    try:
        client = Client(daemon.port)
        spans = json.dumps({"spans": f"1.0:{1.0 + gap_ms / 1000:.3f}"})
        client.send(
            "/maedaw/repair", "plc", str(session / "take.wav"), 0.0, -1.0, str(session), spans
        )
        replies = client.until("/maedaw/done", "/maedaw/error")
        assert replies[-1][0] == "/maedaw/done", replies
        report = json.loads(Path(replies[-1][1][3]).read_text())
        assert {s["method"] for s in report["spans"]} <= {"plc", "plc-blend"}, report["spans"]
        client.send("/maedaw/status", "")
        status = json.loads(client.until("/maedaw/status")[-1][1][1])
        assert status["daemon"]["concealment"] == served
        # a truncated replacement: refused, and the served one stays
        staging = tmp_path / "staging"
        tiny_concealment(staging / "plc-bad", 8)
        data = (staging / "plc-bad.safetensors").read_bytes()
        (models / "plc-bad.safetensors").write_bytes(data[: len(data) // 3])
        shutil.copy(staging / "plc-bad.json", models / "plc-bad.json")
        params = ["", ""]
        while not params[1].endswith("plc-bad.json"):
            _address, params = client.until("/maedaw/model/error", timeout=30)[-1]
        client.send("/maedaw/status", "")
        status = json.loads(client.until("/maedaw/status")[-1][1][1])
        assert status["daemon"]["concealment"] == served
    finally:
        daemon.stop()
