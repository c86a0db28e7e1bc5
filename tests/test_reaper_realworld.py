"""What a REAPER script meets outside a tidy test project (issue #19): replies over 8 KB, host
names, requests too big for a portable datagram, a `maedaw` path with spaces, the user
stopping the script, switching project tabs mid-job, MIDI on a track with FX, looped items,
and the tag actions' undo points and region colours.

The actions run under Lua 5.4 against the stand-in (tests/reaper_standin/), which is strict
where REAPER and LuaSocket are: ExecProcess splits the command line itself and uses no shell,
``receivefrom()`` without a size reads 8192 bytes, ``sendto`` takes numeric addresses and at
most 9216-byte datagrams (macOS loopback), items belong to one of two project tabs, 40209
renders through the track's enabled FX, items may loop their source.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import test_reaper_scripts
from daemon_process import DaemonProcess
from pythonosc import slip
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from test_reaper_scripts import (
    HAS_SOCKET,
    LIB,
    LUA,
    REPAIR,
    SCRIPTS,
    STATUS,
    Project,
    assert_stem_is_region,
    clean,
    needs_socket,
)

from maedaw.dsp.audio_io import read_region

server = test_reaper_scripts.server  # the daemon fixture (one per module, --no-tcp)

TAG = SCRIPTS / "maedaw_Tag selected items.lua"
TAG_TIME = SCRIPTS / "maedaw_Tag time selection.lua"
SIMILAR = SCRIPTS / "maedaw_Find items similar to the selected one.lua"


class FakeDaemon(test_reaper_scripts.SilentDaemon):
    """The scripts' silent daemon (pongs, accepts every job, answers with ``answer``)."""

    def addresses(self) -> list[str]:
        return [a for a, _ in self.received]


@pytest.fixture
def fake():
    daemons = []

    def start(answer=None) -> FakeDaemon:
        daemons.append(FakeDaemon(answer))
        return daemons[-1]

    yield start
    for daemon in daemons:
        daemon.stop()


def lua(code: str) -> str:
    proc = subprocess.run([LUA, "-e", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# --- 1. replies over 8 KB ------------------------------------------------------------------


@needs_socket
def test_a_done_reply_over_8_kb_is_read_whole(tmp_path, fake):
    # a tag summary with long labels: 20 kB in one datagram
    tags = [
        {"tag": f"t{n}", "label": f"label {n} " + "x" * 180, "score": 0.9 - n / 200}
        for n in range(100)
    ]
    summary = json.dumps({"model_id": "m", "start": 0, "end": 1, "tags": tags})
    assert len(summary) > 16_000

    def answer(address, params):
        return [("/maedaw/done", [params[0], "0123456789ab", "", "", summary])]

    daemon = fake(answer)
    project = Project(tmp_path, daemon.port)
    mono = project.take_file("m.wav", 16_000, 1, 1.0, [])
    project.add_item(mono, 0.0, 1.0)
    result = project.run(TAG)
    clean(result)
    assert result["messages"][-1]["text"].startswith("1 of 1 item(s) tagged."), result["messages"]
    assert "label 0 xxx" in result["items"][0]["takes"][0]["name"]


# --- 2. host names ---------------------------------------------------------------------------


@needs_socket
def test_a_host_name_in_settings_is_resolved(server, tmp_path):
    project = Project(tmp_path, server.port, host="studio-server")
    result = project.run(STATUS, hosts={"studio-server": "127.0.0.1"})
    clean(result)
    (message,) = result["messages"]
    assert "contract maedaw-osc/1" in message["text"], message
    assert f"studio-server:{server.port}" in message["text"]


def test_an_unknown_host_name_says_so(tmp_path):
    if not HAS_SOCKET:
        pytest.skip("lua-socket missing")
    project = Project(tmp_path, 9, host="no-such-host.invalid", transport="socket")
    result = project.run(STATUS)
    clean(result)
    assert "cannot resolve the daemon host no-such-host.invalid" in result["messages"][0]["text"]


# --- 3. large requests and replies: TCP/SLIP ---------------------------------------------------


def test_lua_slip_frames_are_python_oscs():
    packets = [b"/a\x00\x00,s\x00\x00\xc0\xdb\xdc\xdd\x00\x00\x00\x00", b"/b\x00\x00,\x00\x00\x00"]
    code = (
        f"local lib = dofile({json.dumps(str(LIB))}) "
        f"for _, hex in ipairs({{'{packets[0].hex()}', '{packets[1].hex()}'}}) do "
        "io.write(lib.hex(lib.slip_encode(lib.unhex(hex))), '\\n') end "
        f"local frames, rest = lib.slip_frames(lib.unhex('{slip.encode(packets[0]).hex()}') .. "
        f"lib.unhex('{slip.encode(packets[1]).hex()}') .. '\\192/c') "
        "for _, f in ipairs(frames) do io.write(lib.hex(f), '\\n') end io.write(lib.hex(rest))"
    )
    lines = lua(code).split("\n")
    assert [slip.decode(bytes.fromhex(line)) for line in lines[:2]] == packets
    assert [bytes.fromhex(line) for line in lines[2:4]] == packets
    assert bytes.fromhex(lines[4]) == b"/c"


def test_which_packets_go_over_tcp():
    code = (
        f"local lib = dofile({json.dumps(str(LIB))}) "
        "local small = lib.request('tag', {client_job='a', source='/x.wav', start=0, ['end']=1,"
        " options={}}) "
        "local big = lib.request('repair', {client_job='b', source='/' .. string.rep('x', 9000),"
        " start=0, ['end']=1, out_dir='/o', options={}}) "
        "local sim = lib.request('similar', {client_job='c', source='/x.wav', start=0, ['end']=1,"
        " candidates='[]', options={}}) "
        "print(lib.needs_stream(small), lib.needs_stream(big), lib.needs_stream(sim),"
        " lib.needs_stream(lib.request('status', {client_job=''})),"
        " lib.needs_stream(lib.request('ping', {client_job='p'})))"
    )
    assert lua(code).split() == ["false", "true", "true", "true", "false"]


@needs_socket
def test_a_similar_request_too_big_for_a_datagram_goes_over_tcp(tmp_path):
    """A candidate list of ~25 kB (over macOS's 9216-byte loopback datagrams) and a done
    summary of ~20 kB (over LuaSocket's default 8192) travel over TCP/SLIP to a real daemon."""
    allowed, outside = tmp_path / "p", tmp_path / "elsewhere"
    project = Project(allowed, 0)
    outside.mkdir()
    daemon = DaemonProcess(tmp_path / "state", "--allow-root", str(allowed))
    try:
        project.extstate.update(port=str(daemon.port), token=daemon.token)
        music = project.take_file("music.wav", 16_000, 1, 4.0, [])
        project.add_item(music, 0.0, 2.0)  # the query
        project.add_item(music, 3.0, 2.0, D_STARTOFFS=2.0)  # the only candidate it may read
        far = outside / ("a-folder-name-that-makes-the-path-long-" * 3)
        far.mkdir()
        other = project.take_file("other.wav", 16_000, 1, 1.0, [])
        for n in range(120):  # the daemon may not read these: skipped, each with its reason
            copy = far / f"take-{n:03d}.wav"
            copy.write_bytes(other.read_bytes())
            project.add_item(copy, 10.0 + n, 1.0)
        for item in project.items[1:]:
            item["selected"] = False
        result = project.run(SIMILAR)
        clean(result)
        text = result["messages"][-1]["text"]
        assert text.startswith('Most similar to "music.wav":'), text
        assert "120 item(s) could not be read." in text, text
        assert result["net"]["tcp_connections"] == 1
    finally:
        daemon.stop()


@needs_socket
def test_without_tcp_a_small_similar_request_falls_back_to_udp(server, tmp_path):
    project = Project(tmp_path, server.port)  # the module's daemon runs with --no-tcp
    music = project.take_file("music.wav", 16_000, 1, 4.0, [])
    project.add_item(music, 0.0, 2.0)
    project.add_item(music, 3.0, 2.0, D_STARTOFFS=2.0)
    project.items[1]["selected"] = False
    result = project.run(SIMILAR)
    clean(result)
    assert result["messages"][-1]["text"].startswith('Most similar to "music.wav":')


# --- 4. the maedaw command: a path with spaces, no shell ---------------------------------------


def test_a_maedaw_command_path_with_spaces(tmp_path, fake):
    daemon = fake(lambda address, params: [("/maedaw/error", [params[0], "", "not_found", "x"])])
    tools = tmp_path / "my tools"
    tools.mkdir()
    helper = tools / "maedaw"
    helper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m maedaw.bridge.cli "$@"\n')
    helper.chmod(0o755)
    project = Project(tmp_path / "a project", daemon.port, helper=str(helper), transport="helper")
    mono = project.take_file("m.wav", 16_000, 1, 1.0, [])
    project.add_item(mono, 0.0, 1.0)
    result = project.run(REPAIR)
    clean(result)
    assert result["exec"][0].startswith(f'"{helper}" send ')
    assert daemon.addresses()[:2] == ["/maedaw/ping", "/maedaw/repair"]
    assert "not_found" in result["messages"][-1]["text"]


def test_reaper_splits_command_lines_without_a_shell():
    standin = Path(__file__).resolve().parent / "reaper_standin" / "reaper.lua"
    code = (
        f"local R = dofile({json.dumps(str(standin))}) "
        'for _, a in ipairs(R.split_command(\'"/a b/maedaw" send --x "c d" $HOME;e\')) do '
        "io.write(a, '|') end"
    )
    assert lua(code) == "/a b/maedaw|send|--x|c d|$HOME;e|"


def test_on_windows_the_helper_starts_minimised():
    code = (
        "local timeouts = {} "
        "reaper = { EnumProjects = function() return 0, '' end,"
        " ExecProcess = function(cmd, t) timeouts[#timeouts + 1] = t return '0\\n' end } "
        f"local lib = dofile({json.dumps(str(LIB))}) "
        "lib.spawn('x') lib.is_windows = function() return true end lib.spawn('x') "
        "io.write(table.concat(timeouts, ' '))"
    )
    assert lua(code) == "-1 -2"


# --- 5. the user stops the script ------------------------------------------------------------


@pytest.mark.parametrize("transport", ["socket", "helper"])
def test_stopping_the_script_cancels_its_jobs(tmp_path, fake, transport):
    if transport == "socket" and not HAS_SOCKET:
        pytest.skip("lua-socket missing")
    from test_reaper_scripts import HELPER

    daemon = fake()  # accepts, never finishes
    project = Project(tmp_path, daemon.port, transport=transport, helper=HELPER)
    mono = project.take_file("m.wav", 16_000, 1, 1.0, [])
    project.add_item(mono, 0.0, 1.0)
    # the user stops it while the progress window shows the job waiting
    result = project.run(REPAIR, stop_when_drawn="0 of 1 done")
    clean(result)
    assert result["stopped_by_user"]
    assert result["messages"] == [] and result["undo_points"] == []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not {"/maedaw/cancel", "/maedaw/repair"} <= set(
        daemon.addresses()
    ):
        time.sleep(0.1)
    repair = next(p for a, p in daemon.received if a == "/maedaw/repair")
    assert ("/maedaw/cancel", [repair[0]]) in daemon.received
    if transport == "helper":  # the helper that waited for replies was told to stop
        tmp = project.resource / "Data" / "maedaw" / "tmp"
        while list(tmp.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(tmp.iterdir()) == []


# --- 6. project tabs ---------------------------------------------------------------------------


@needs_socket
def test_switching_project_tabs_mid_job_lands_in_the_first_project(server, tmp_path):
    project = Project(tmp_path, server.port)
    mono = project.take_file("mono.wav", 16_000, 1, 3.0, [(0, 1.5, 0.01)])
    project.add_item(mono, 0.0, 2.0, D_STARTOFFS=0.5)
    result = project.run(REPAIR, switch_tab_at_cycle=2)
    clean(result)
    assert result["undo_points"] == ["maedaw: repair dropouts (1 item(s))"]
    assert result["other_tab_undo_points"] == []
    takes = result["items"][0]["takes"]
    assert len(takes) == 2 and result["items"][0]["active"] == 2
    assert_stem_is_region(takes[1]["file"], mono, 0.5, 2.5)


@needs_socket
def test_tag_time_selection_after_a_tab_switch_names_the_first_projects_region(
    server,
    tmp_path,
):
    project = Project(tmp_path, server.port)
    music = project.take_file("music.wav", 16_000, 1, 4.0, [])
    project.add_item(music, 0.0, 4.0)
    result = project.run(TAG_TIME, time_selection=[1.0, 3.0], switch_tab_at_cycle=2)
    clean(result)
    assert result["undo_points"] == ["maedaw: tag time selection"]
    assert result["other_tab_undo_points"] == []
    assert [m["name"].startswith("maedaw tags: ") for m in result["markers"]] == [True]


# --- 7. MIDI: the render leaves out the track FX after the instrument ------------------------


def test_midi_is_rendered_without_the_track_fx_after_its_instrument(tmp_path, fake):
    daemon = fake()
    project = Project(tmp_path, daemon.port, timeout_s="0.3")
    wav = project.take_file("w.wav", 16_000, 1, 2.0, [])
    project.add_item(wav, 0.0, 1.0, midi=True)  # the stand-in renders w.wav as its "sound"
    project.add_item(wav, 2.0, 1.0, midi=True)
    project.items[1]["track"] = 2
    tracks = [
        {
            "fx": [
                {"name": "Arpeggiator"},
                {"name": "ReaSynth", "instrument": True},
                {"name": "ReaVerb"},
                {"name": "ReaEQ", "enabled": False},
            ]
        },
        {"fx": [{"name": "ReaComp"}]},  # no instrument on the track: a take-FX synth
    ]
    result = project.run(REPAIR, tracks=tracks)
    clean(result)
    assert result["commands"][0] == 40209
    baked = [item["takes"][1]["baked"] for item in result["items"]]
    assert baked[0]["track_fx"] == ["Arpeggiator", "ReaSynth"]
    assert baked[1]["track_fx"] == []
    # the track FX are as they were
    assert [f["enabled"] for f in result["tracks"][0]["fx"]] == [True, True, True, False]
    assert [f["enabled"] for f in result["tracks"][1]["fx"]] == [True]


# --- 8. looped items ---------------------------------------------------------------------------


@needs_socket
def test_a_looped_item_gets_a_stem_of_the_whole_file(server, tmp_path):
    project = Project(tmp_path, server.port)
    mono = project.take_file("loop.wav", 16_000, 1, 2.0, [(0, 0.2, 0.01), (0, 1.5, 0.01)])
    project.add_item(mono, 0.0, 5.0, D_STARTOFFS=0.5)  # 2.25 passes of the file
    project.add_item(mono, 10.0, 1.0, D_STARTOFFS=0.5)  # plays inside: no wrap
    for item in project.items:
        item["loop"] = True  # the item's "Loop source"
    result = project.run(REPAIR)
    clean(result)
    looped, inside = (item["takes"][1] for item in result["items"])
    # every pass reads the file from 0 after the first: the stem is all of it, the new take
    # keeps the original offset, so the wraps land where the original's do
    assert looped["params"]["D_STARTOFFS"] == pytest.approx(0.5, abs=1e-12)
    assert looped["source_length"] == pytest.approx(2.0, abs=1e-9)
    assert_stem_is_region(looped["file"], mono, 0.0, 2.0)
    assert inside["params"]["D_STARTOFFS"] == pytest.approx(0.0, abs=1e-12)
    assert inside["source_length"] == pytest.approx(1.0, abs=1e-9)
    assert read_region(looped["file"]).samples.shape[1] == 32_000


# --- 9. tag actions: undo points and region colours --------------------------------------------


@needs_socket
def test_tag_makes_no_undo_point_when_nothing_was_tagged(server, tmp_path):
    project = Project(tmp_path, server.port)
    gone = project.take_file("gone.wav", 16_000, 1, 2.0, [])
    project.add_item(gone, 0.0, 1.0, source={"length": 2.0})
    gone.unlink()
    result = project.run(TAG)
    clean(result)
    assert result["messages"][-1]["text"].startswith("0 of 1 item(s) tagged.")
    assert "not_found" in result["messages"][-1]["text"]
    assert result["undo_points"] == []


@needs_socket
def test_tag_time_selection_keeps_the_regions_colour(server, tmp_path):
    project = Project(tmp_path, server.port)
    music = project.take_file("music.wav", 16_000, 1, 4.0, [])
    project.add_item(music, 0.0, 4.0)
    custom = 0x1000000 | 0x3366CC  # REAPER: the 0x1000000 flag marks a custom colour
    ours = {
        "isrgn": True,
        "pos": 1.0,
        "rgnend": 3.0,
        "name": "maedaw tags: old",
        "number": 4,
        "color": custom,
    }
    result = project.run(TAG_TIME, time_selection=[1.0, 3.0], markers=[ours])
    clean(result)
    (region,) = result["markers"]
    assert region["name"] != "maedaw tags: old" and region["number"] == 4
    assert region["color"] == custom


@needs_socket
def test_tag_time_selection_reports_a_region_reaper_would_not_add(tmp_path, fake):
    summary = json.dumps({"tags": [{"tag": "music", "label": "music", "score": 0.9}]})
    daemon = fake(lambda a, p: [("/maedaw/done", [p[0], "0123456789ab", "", "", summary])])
    project = Project(tmp_path, daemon.port)
    music = project.take_file("music.wav", 16_000, 1, 4.0, [])
    project.add_item(music, 0.0, 4.0)
    result = project.run(TAG_TIME, time_selection=[1.0, 3.0], add_marker_fails=True)
    clean(result)
    text = result["messages"][-1]["text"]
    assert text.startswith("REAPER could not add a region over 1.000-3.000 s"), text
    assert "Region -1" not in text


# --- 3, the Python side: `maedaw send` follows the same rule ---------------------------------


def lua_needs_stream(packets: list[bytes]) -> list[bool]:
    hexes = ", ".join(f"'{p.hex()}'" for p in packets)
    code = (
        f"local lib = dofile({json.dumps(str(LIB))}) "
        f"for _, h in ipairs({{{hexes}}}) do print(lib.needs_stream(lib.unhex(h))) end"
    )
    return [line == "true" for line in lua(code).split()]


def osc(address: str, *args) -> bytes:
    builder = OscMessageBuilder(address)
    for value in args:
        builder.add_arg(value)
    return builder.build().dgram


def test_python_and_lua_send_the_same_packets_over_tcp():
    from maedaw.bridge.send import needs_stream

    packets = [
        osc("/maedaw/ping", "p"),
        osc("/maedaw/tag", "t", "/x.wav", 0.0, 1.0, "{}"),
        osc("/maedaw/repair", "r", "/" + "x" * 9000, 0.0, 1.0, "/o", "{}"),
        osc("/maedaw/similar", "s", "/x.wav", 0.0, 1.0, "[]", "{}"),
        osc("/maedaw/status", ""),
        osc("/maedaw/cancel", "c"),
    ]
    expected = [False, False, True, True, True, False]
    assert [needs_stream(p) for p in packets] == expected
    assert lua_needs_stream(packets) == expected


def test_maedaw_send_puts_a_large_request_on_tcp(tmp_path):
    """A daemon that only listens on TCP (its UDP port is closed): the helper's large request
    and its reply (over 8 KB both) go over the SLIP-framed connection."""
    from maedaw.bridge.send import send_and_collect

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    request = osc("/maedaw/similar", "sim-1", "/x.wav", 0.0, 1.0, "[" + " " * 20_000 + "]", "{}")
    summary = json.dumps({"results": [], "skipped": [{"id": "x", "error": "e" * 12_000}]})
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            buffer = b""
            while buffer.count(slip.END) < 2:
                buffer += conn.recv(65_536)
            got.append(slip.decode(buffer))
            conn.sendall(slip.encode(osc("/maedaw/accepted", "sim-1", "0123456789ab", 0)))
            done = osc("/maedaw/done", "sim-1", "0123456789ab", "", "", summary)
            conn.sendall(slip.encode(done))
            time.sleep(0.5)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    replies = tmp_path / "replies"
    why = send_and_collect("127.0.0.1", port, [request], replies, timeout_s=10)
    thread.join(5)
    listener.close()
    assert why == "complete"
    assert got == [request]
    lines = replies.read_text().splitlines()
    assert OscMessage(bytes.fromhex(lines[-2])).params[4] == summary
    assert lines[-1] == "end complete"
