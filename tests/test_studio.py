"""Studio mode: path maps, fair queueing between clients, ``maedaw status --remote``.

The end-to-end test is two "editors" against one real daemon: each names the shared store
by its own mount point (two client folders that do not exist on the server, mapped onto one
store folder, one map from the command line and one from the TOML config), sends its jobs
from its own socket, and gets its stems back in its own namespace; the editor with one job
is not made to wait behind the other's six.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_process import DaemonProcess
from pythonosc.osc_message import OscMessage
from test_daemon import Client

from maedaw.bridge.contract import ErrorCode, RequestError
from maedaw.bridge.fairqueue import FairQueue
from maedaw.bridge.paths import MapError, MapRule, PathMap, read_config
from maedaw.dsp.audio_io import SampleFormat, write_stem
from maedaw.dsp.signals import music_clip

# --- path maps -----------------------------------------------------------------------------


def test_path_maps_take_the_longest_prefix_by_whole_components():
    maps = PathMap.parse(["/Volumes/Projects=/mnt/projects", "/Volumes/Projects/big=/mnt/big"])
    path, rule = maps.to_server(Path("/Volumes/Projects/song/take.wav"))
    assert path == Path("/mnt/projects/song/take.wav") and rule.client == "/Volumes/Projects"
    assert maps.to_server(Path("/Volumes/Projects/big/a.wav"))[0] == Path("/mnt/big/a.wav")
    # a folder whose name only starts like the prefix is not under it
    assert maps.to_server(Path("/Volumes/Projects2/a.wav")) == (
        Path("/Volumes/Projects2/a.wav"),
        None,
    )
    assert rule.to_client("/mnt/projects/song/take.repair-1.wav") == (
        "/Volumes/Projects/song/take.repair-1.wav"
    )
    assert rule.to_client("/elsewhere/x.wav") == "/elsewhere/x.wav"
    for bad in ("/a", "a=/b", "/a=b", "=/b"):
        with pytest.raises(MapError):
            MapRule.parse(bad)


def test_the_config_file_gives_roots_and_maps(tmp_path):
    config = tmp_path / "serve.toml"
    config.write_text('roots = ["/mnt/projects"]\n[map]\n"/Volumes/P" = "/mnt/projects"\n')
    assert read_config(config) == ([Path("/mnt/projects")], ["/Volumes/P=/mnt/projects"])
    for text in ('roots = "/x"\n', "[map]\n'/a' = 1\n", "colour = 1\n", "not toml ="):
        config.write_text(text)
        with pytest.raises(MapError):
            read_config(config)


# --- fair queueing -------------------------------------------------------------------------


def _queued(queue: FairQueue, client: str, name: str) -> int:
    queue.reserve(client)
    return queue.put(name, client)


def test_clients_take_turns_and_a_newcomer_is_never_turned_away():
    queue = FairQueue(limit=4)
    positions = [_queued(queue, "a", f"a{n}") for n in range(4)]
    assert positions == [0, 1, 2, 3]
    with pytest.raises(RequestError) as caught:  # full, and "a" already has jobs queued
        queue.reserve("a")
    assert caught.value.code is ErrorCode.BUSY
    assert _queued(queue, "b", "b0") == 1  # after a0 only, though the queue was full
    assert _queued(queue, "c", "c0") == 2
    assert queue.by_client() == {"a": 4, "b": 1, "c": 1}
    order = [queue.get() for _ in range(6)]
    assert order == ["a0", "b0", "c0", "a1", "a2", "a3"]
    for n in range(4):  # up to twice the limit, one place per newcomer
        _queued(queue, f"new{n}", "x")
    for n in range(4):
        _queued(queue, f"more{n}", "x")
    with pytest.raises(RequestError):
        queue.reserve("one-too-many")
    queue.discard("x", "new0")
    assert queue.qsize() == 7
    queue.close()
    assert queue.get() is None


# --- two editors, one daemon ---------------------------------------------------------------

RATE = 16_000
SPANS = json.dumps({"spans": "0.2:0.204,0.5:0.504,0.8:0.804"})


@pytest.fixture()
def studio(tmp_path):
    store = tmp_path / "store"
    (store / "out").mkdir(parents=True)
    clip = music_clip(RATE, 1.0, channels=1, seed=5)
    write_stem(store / "take.wav", clip, RATE, SampleFormat.INT16)
    config = tmp_path / "serve.toml"
    config.write_text(f'[map]\n"{tmp_path / "editor-b"}" = "{store}"\n')
    daemon = DaemonProcess(
        tmp_path / "state",
        "--allow-root",
        str(store),
        "--max-queue",
        "4",
        "--map",
        f"{tmp_path / 'editor-a'}={store}",
        "--config",
        str(config),
    )
    yield daemon, tmp_path
    daemon.stop()


def _finished_in_order(clients: list[Client], count: int) -> list[tuple[str, str]]:
    """(client job, stem) of the next ``count`` done replies to any of ``clients``, in the
    order they arrive (the order the jobs finished: one worker runs them one at a time)."""
    done: list[tuple[str, str]] = []
    deadline = time.monotonic() + 90
    while len(done) < count and time.monotonic() < deadline:
        ready, _, _ = select.select([c.sock for c in clients], [], [], 1.0)
        for sock in ready:
            message = OscMessage(sock.recvfrom(70_000)[0])
            assert message.address != "/maedaw/error", message.params
            if message.address == "/maedaw/done":
                done.append((message.params[0], message.params[2]))
    assert len(done) == count, done
    return done


def test_two_editors_get_their_stems_in_their_own_namespaces_and_take_turns(studio):
    daemon, root = studio
    a, b = Client(daemon.port), Client(daemon.port)
    folder_a, folder_b = root / "editor-a", root / "editor-b"  # neither exists here
    for n in range(6):
        a.send(
            "/maedaw/repair",
            f"a-{n}",
            str(folder_a / "take.wav"),
            0.0,
            1.0,
            str(folder_a / "out"),
            SPANS,
        )
    accepted_a = [a.until("/maedaw/accepted", "/maedaw/error")[-1] for _ in range(6)]
    b.send(
        "/maedaw/repair", "b-0", str(folder_b / "take.wav"), 0.0, 1.0, str(folder_b / "out"), SPANS
    )
    accepted_b = b.until("/maedaw/accepted", "/maedaw/error")[-1]
    # queue 4: editor a's first four are taken, the rest busy; b, a newcomer, is taken
    assert [r[0] for r in accepted_a].count("/maedaw/accepted") >= 4, accepted_a
    assert accepted_b[0] == "/maedaw/accepted" and accepted_b[1][2] <= 1, accepted_b
    wanted = sum(r[0] == "/maedaw/accepted" for r in accepted_a) + 1
    done = _finished_in_order([a, b], wanted)  # (client job, stem)
    stems = dict(done)
    for client_job, stem in stems.items():
        folder = folder_a if client_job.startswith("a-") else folder_b
        assert Path(stem).parent == folder / "out", stem  # in the editor's own names
        assert (root / "store" / "out" / Path(stem).name).is_file()  # on the store
    status = daemon.status()
    started = [j["client_job"] for j in status["jobs"]]
    # fairness: b's one job ran after at most one of a's jobs still queued (FIFO: after all)
    order = [client_job for client_job, _ in done]
    assert order.index("b-0") <= 2, order
    assert {j["client_job"]: j["stem"] for j in status["jobs"]}["b-0"] == stems["b-0"]
    assert len(started) == wanted
    # the studio admin's view: every job, the counters, over TCP
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "maedaw.bridge.cli",
            "status",
            "--remote",
            f"127.0.0.1:{daemon.port}",
            "--token-file",
            str(daemon.state / "token"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"jobs: {len(started)} ({len(started)} done)" in shown.stdout, shown.stdout
    assert "token required" in shown.stdout
