"""The REAPER actions, run under Lua 5.4 against the REAPER API stand-in (tests/reaper_standin/),
talking to a real ``maedaw serve`` over real UDP (LuaSocket) or through ``maedaw send``.

Needs ``lua5.4`` and ``luac5.4`` (Debian: lua5.4, lua-socket); without them these tests skip
locally and fail in CI (``MAEDAW_REQUIRE_LUA=1`` or ``MAEDAW_REQUIRE_REAL_AUDIO=1``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from daemon_process import DaemonProcess, token_for
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from maedaw.dsp.audio_io import SampleFormat, read_region, write_stem
from maedaw.dsp.damage import insert_dropout
from maedaw.dsp.signals import music_clip

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "reaper_scripts" / "maedaw"
LIB = SCRIPTS / "maedaw_lib.lua"
STANDIN = Path(__file__).resolve().parent / "reaper_standin"
REPAIR = SCRIPTS / "maedaw_Repair dropouts in selected items.lua"
STATUS = SCRIPTS / "maedaw_Daemon status.lua"
SETTINGS = SCRIPTS / "maedaw_Settings.lua"
START = SCRIPTS / "maedaw_Start daemon.lua"
STOP = SCRIPTS / "maedaw_Stop daemon.lua"
LUA, LUAC = shutil.which("lua5.4"), shutil.which("luac5.4")
HELPER = f"{sys.executable} -m maedaw.bridge.cli"

# CI installs lua5.4 and lua-socket with the real-audio packages: there, missing is a failure
REQUIRE = bool(os.environ.get("MAEDAW_REQUIRE_LUA") or os.environ.get("MAEDAW_REQUIRE_REAL_AUDIO"))
if not (LUA and LUAC):
    if REQUIRE:
        raise RuntimeError("lua5.4/luac5.4 are required here (apt-get install lua5.4 lua-socket)")
    pytest.skip("lua5.4 not installed", allow_module_level=True)


def _has_luasocket() -> bool:
    probe = subprocess.run([LUA, "-e", "require('socket')"], capture_output=True)
    return probe.returncode == 0


HAS_SOCKET = _has_luasocket()
needs_socket = pytest.mark.skipif(not HAS_SOCKET and not REQUIRE, reason="lua-socket missing")


# --- a real daemon -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    daemon = DaemonProcess(tmp_path_factory.mktemp("daemon") / "state", "--no-tcp")
    yield daemon
    daemon.stop()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the stand-in ------------------------------------------------------------------------


def lua_literal(value) -> str:
    """A Python value as a Lua table constructor."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nil"
    if isinstance(value, int | float):
        return repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items())
            + "}"
        )
    return "{" + ", ".join(lua_literal(v) for v in value) + "}"


class Project:
    """A project folder with takes on disk, and the spec the stand-in loads."""

    def __init__(self, root: Path, port: int, **settings: str) -> None:
        self.root = root
        self.media = root / "media"
        self.resource = root / "resource"
        self.media.mkdir(parents=True)
        self.resource.mkdir()
        self.items: list[dict] = []
        self.extstate = {"port": str(port), "ping_timeout_s": "3", "timeout_s": "60"}
        if token := token_for(port):  # the test daemon's token, as a studio client is given
            self.extstate["token"] = token
        self.extstate.update(settings)
        self.runs = 0

    def take_file(
        self, name: str, rate: int, channels: int, seconds: float, drops, repeat: int = 1
    ) -> Path:
        clip = np.tile(music_clip(rate, seconds, channels=channels, seed=len(name)), repeat)
        for channel, at, length in drops:
            insert_dropout(clip, channel, int(at * rate), int(length * rate))
        fmt = SampleFormat.INT24 if channels == 2 else SampleFormat.INT16
        return write_stem(self.media / name, clip, rate, fmt)

    def hiss_file(self, name: str, seconds: float, seed: int, rate: int = 48_000) -> Path:
        """Mono white noise at -20 dBFS RMS: a sound unlike the music clips."""
        noise = 0.1 * np.random.default_rng(seed).standard_normal((1, int(seconds * rate)))
        return write_stem(self.media / name, noise, rate, SampleFormat.INT16)

    def add_item(self, file: Path | str, position: float, length: float, **take) -> int:
        params = {k: take.pop(k) for k in list(take) if k.startswith(("D_", "I_"))}
        take_spec = {"name": take.pop("name", Path(file).name), "params": params}
        take_spec["source"] = {"file": str(file), **take.pop("source", {})}
        take_spec.update(take)
        self.items.append(
            {"position": position, "length": length, "track": 1, "takes": [take_spec]}
        )
        return len(self.items) - 1

    def run(self, script: Path, env: dict[str, str] | None = None, **extra) -> dict:
        self.runs += 1
        spec = {
            "project_path": str(self.media),
            "resource_path": str(self.resource),
            "extstate": self.extstate,
            "items": self.items,
            "render_cmd": f'{sys.executable} "{STANDIN / "fake_render.py"}" '
            '"{src}" {start} {len} {rate} "{out}"',
            "max_s": 120,
            **extra,
        }
        spec_file = self.root / f"spec-{self.runs}.lua"
        spec_file.write_text("return " + lua_literal(spec) + "\n")
        result_file = self.root / f"result-{self.runs}.json"
        proc = subprocess.run(
            [LUA, str(STANDIN / "run.lua"), str(spec_file), str(script), str(result_file)],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=self.root,
            env=None if env is None else {**os.environ, **env},
        )
        assert result_file.exists(), proc.stderr
        result = json.loads(result_file.read_text())
        result["stderr"] = proc.stderr
        return result


def region(path: Path | str, start_s: float, end_s: float) -> np.ndarray:
    full = read_region(path)
    rate = full.info.sample_rate
    return full.samples[:, round(start_s * rate) : round(end_s * rate)]


def assert_stem_is_region(stem: Path | str, source: Path, start_s: float, end_s: float) -> None:
    """The stem is the source's region sample for sample, except the written stretches."""
    report = json.loads(Path(stem).with_suffix(".json").read_text())
    expected = region(source, start_s, end_s)
    got = read_region(stem).samples
    assert got.shape == expected.shape
    changed = np.zeros(expected.shape, dtype=bool)
    first = round(start_s * read_region(source).info.sample_rate)
    for span in report["spans"]:
        if span.get("written_start") is not None:
            lo, hi = span["written_start"] - first, span["written_end"] - first
            changed[span["channel"], lo:hi] = True
    np.testing.assert_array_equal(got[~changed], expected[~changed])


def clean(result: dict) -> None:
    assert result["error"] is False, result["error"]
    assert result["violations"] == [], result["violations"]
    assert result["undo_depth"] == 0 and result["refresh_depth"] == 0


# --- static checks -----------------------------------------------------------------------


def test_every_script_parses():
    files = sorted(SCRIPTS.glob("*.lua")) + sorted(STANDIN.glob("*.lua"))
    assert len(files) >= 6
    for path in files:
        proc = subprocess.run([LUAC, "-p", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_actions_have_reapack_headers():
    from maedaw.bridge.reaper_install import LIBRARIES, reapack_headers

    for path in SCRIPTS.glob("*.lua"):
        tags = reapack_headers(path)
        if path.name in LIBRARIES:
            assert "noindex" in tags
        else:
            assert tags["version"][0].isdigit() and tags["description"], path.name


# --- OSC bytes, both ways ----------------------------------------------------------------

LUA_ENCODE = r"""
local lib = dofile(arg[1])
local function out(address, types, args)
  io.write(lib.hex(lib.osc_encode(address, types, args)), '\n')
end
out('/maedaw/ping', 's', {'job-1'})
out('/maedaw/repair', 'ssddss',
    {'rpr-1', '/tmp/ä take.wav', 0.5, 1234.567890123, '/tmp/out', '{"format":"wav"}'})
out('/maedaw/x', 'ifhd', {-7, 0.25, 1 << 40, -1.0})
out('/maedaw/status', '', {})
out('/maedaw/cancel', 's', {'abc'})
"""


def test_lua_encoder_bytes_decode_in_python_osc():
    proc = subprocess.run(
        [LUA, "-e", LUA_ENCODE.replace("arg[1]", json.dumps(str(LIB)))],
        capture_output=True,
        text=True,
        check=True,
    )
    packets = [bytes.fromhex(line) for line in proc.stdout.split()]
    decoded = [(m.address, list(m.params)) for m in map(OscMessage, packets)]
    assert decoded == [
        ("/maedaw/ping", ["job-1"]),
        (
            "/maedaw/repair",
            ["rpr-1", "/tmp/ä take.wav", 0.5, 1234.567890123, "/tmp/out", '{"format":"wav"}'],
        ),
        ("/maedaw/x", [-7, 0.25, 1 << 40, -1.0]),
        ("/maedaw/status", []),
        ("/maedaw/cancel", ["abc"]),
    ]
    # and byte for byte what python-osc builds with the same type tags
    builder = OscMessageBuilder("/maedaw/repair")
    for value, kind in zip(decoded[1][1], "ssddss", strict=True):
        builder.add_arg(value, {"s": "s", "d": "d"}[kind])
    assert packets[1] == builder.build().dgram
    assert all(len(p) % 4 == 0 for p in packets)


LUA_DECODE = r"""
local lib = dofile(arg[1])
for line in io.lines() do
  local msg = assert(lib.osc_decode(lib.unhex(line)))
  local parts = {msg.address, msg.types}
  for n = 1, #msg.types do
    local v = msg.args[n]
    parts[#parts + 1] = type(v) == 'number' and string.format('%.17g', v) or tostring(v)
  end
  io.write(table.concat(parts, '\t'), '\n')
end
"""


def test_lua_decodes_python_osc_replies():
    replies = [
        ("/maedaw/pong", [("c1", "s"), ("maedaw-osc/1", "s"), ("0.1.0", "s"), ("", "s")]),
        ("/maedaw/accepted", [("c1", "s"), ("0123456789ab", "s"), (3, "i")]),
        ("/maedaw/progress", [("c1", "s"), ("0123456789ab", "s"), (0.625, "f"), ("scan", "s")]),
        (
            "/maedaw/done",
            [
                ("c1", "s"),
                ("j", "s"),
                ("/p/x é.wav", "s"),
                ("/p/x.json", "s"),
                ('{"repaired": 2}', "s"),
            ],
        ),
        ("/maedaw/x", [(1 << 40, "h"), (-2.5, "d"), (True, "T"), (False, "F")]),
    ]
    lines = []
    for address, args in replies:
        builder = OscMessageBuilder(address)
        for value, kind in args:
            builder.add_arg(value, kind)
        lines.append(builder.build().dgram.hex())
    proc = subprocess.run(
        [LUA, "-e", LUA_DECODE.replace("arg[1]", json.dumps(str(LIB)))],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert rows[0] == ["/maedaw/pong", "ssss", "c1", "maedaw-osc/1", "0.1.0", ""]
    assert rows[1] == ["/maedaw/accepted", "ssi", "c1", "0123456789ab", "3"]
    assert rows[2] == ["/maedaw/progress", "ssfs", "c1", "0123456789ab", "0.625", "scan"]
    assert rows[3][4] == "/p/x é.wav" and rows[3][6] == '{"repaired": 2}'
    assert rows[4] == ["/maedaw/x", "hdTF", str(1 << 40), "-2.5", "true", "false"]


def test_lua_decoder_refuses_garbage():
    code = (
        f"local lib = dofile({json.dumps(str(LIB))}) "
        "for _, d in ipairs({'', 'abc', '/x\\0\\0', '/x\\0\\0,i\\0\\0', 'nope\\0\\0\\0\\0'}) do "
        "assert(lib.osc_decode(d) == nil, d) end print('ok')"
    )
    proc = subprocess.run([LUA, "-e", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "ok", proc.stderr


# --- the repair action -------------------------------------------------------------------


@needs_socket
def test_repair_selected_items_over_luasocket(server, tmp_path):
    project = Project(tmp_path, server.port)
    stereo = project.take_file("stereo.wav", 48_000, 2, 6.0, [(0, 1.2, 0.01), (1, 2.7, 0.008)])
    mono = project.take_file("mono.wav", 44_100, 1, 4.0, [(0, 1.5, 0.01)])
    a = project.add_item(stereo, 10.0, 3.0, D_STARTOFFS=0.5, name="dialogue A")
    b = project.add_item(mono, 0.0, 2.0, D_STARTOFFS=0.8, D_VOL=0.5)
    c = project.add_item(stereo, 20.0, 2.0, D_STARTOFFS=1.0, D_PLAYRATE=1.25, name="fast")
    d = project.add_item(stereo, 30.0, 1.0)
    project.items[d]["selected"] = False
    project.items[b]["track"] = 2

    result = project.run(REPAIR)
    clean(result)
    assert result["undo_points"] == [
        "maedaw: render 1 item(s) to send",
        "maedaw: repair dropouts (3 item(s))",
    ]
    items = result["items"]
    # A: offset 0.5, length 3 -> the stem is source [0.5, 3.5], placed with offset 0
    takes = items[a]["takes"]
    assert len(takes) == 2 and items[a]["active"] == 2
    assert takes[0]["file"] == str(stereo) and takes[0]["params"]["D_STARTOFFS"] == 0.5
    new = takes[1]
    assert new["params"]["D_STARTOFFS"] == 0.0 and new["params"]["D_PLAYRATE"] == 1.0
    assert new["name"].startswith("dialogue A [maedaw repair: ") and "fixed" in new["name"]
    assert Path(new["file"]).parent == project.media and new["channels"] == 2
    assert new["source_length"] == pytest.approx(3.0, abs=1e-9)
    assert_stem_is_region(new["file"], stereo, 0.5, 3.5)
    assert json.loads(Path(new["file"]).with_suffix(".json").read_text())["repaired"] >= 2
    # a take marker on the stem at each dropout (source 1.2 s ch 1 and 2.7 s ch 2, so 0.7 s
    # and 2.2 s into the stem), green: repaired; none on the original take
    marks = new["markers"]
    assert [m["position"] for m in marks] == pytest.approx([0.7, 2.2], abs=2e-3)
    assert [m["name"][:20] for m in marks] == ["maedaw dropout 10 ms", "maedaw dropout 8.0 m"]
    assert "ch1: repaired (AR" in marks[0]["name"] and "ch2: repaired (AR" in marks[1]["name"]
    assert {m["color"] for m in marks} == {(64 | 192 << 8 | 96 << 16) | 0x1000000}
    assert takes[0]["markers"] == []
    # B: mono at 44.1 kHz, take volume carried over
    new_b = items[b]["takes"][1]
    assert [m["position"] for m in new_b["markers"]] == pytest.approx([0.7], abs=2e-3)
    assert " ch" not in new_b["markers"][0]["name"]
    assert new_b["channels"] == 1 and new_b["params"]["D_VOL"] == 0.5
    assert_stem_is_region(new_b["file"], mono, 0.8, 2.8)
    # C: playrate 1.25 -> REAPER rendered it first; the render (offset 0) was repaired
    takes_c = items[c]["takes"]
    assert [t["name"] for t in takes_c][:2] == ["fast", "fast render"]
    assert len(takes_c) == 3 and items[c]["active"] == 3
    assert takes_c[0]["params"]["D_PLAYRATE"] == 1.25  # the original is untouched
    assert takes_c[2]["params"]["D_STARTOFFS"] == 0.0 and takes_c[2]["params"]["D_PLAYRATE"] == 1
    assert_stem_is_region(takes_c[2]["file"], Path(takes_c[1]["file"]), 0.0, 2.0)
    # D: not selected, untouched; every selected item is selected again afterwards
    assert len(items[d]["takes"]) == 1 and not items[d]["selected"]
    assert all(items[i]["selected"] for i in (a, b, c))
    assert result["gfx_inits"] == 1 and not result["gfx_open"]
    assert result["messages"][-1]["text"].startswith("3 of 3 item(s) repaired")
    assert '"dialogue A": repair: 2 fixed (2 take marker(s))' in result["messages"][-1]["text"]
    assert 41999 in result["commands"]


def test_repair_through_the_helper_without_luasocket(server, tmp_path):
    project = Project(tmp_path, server.port, helper=HELPER)  # transport "auto"
    mono = project.take_file("mono.wav", 44_100, 1, 4.0, [(0, 1.5, 0.01)])
    # a path relative to the project file's folder, as REAPER keeps media next to the .rpp
    item = project.add_item("media/mono.wav", 5.0, 2.5, D_STARTOFFS=0.25)
    project.items[item]["takes"][0]["source"]["length"] = 4.0
    result = project.run(REPAIR, hide_socket=True, project_file=str(tmp_path / "show.rpp"))
    clean(result)
    assert any(" send " in cmd for cmd in result["exec"])  # LuaSocket was not there
    new = result["items"][item]["takes"][1]
    assert new["params"]["D_STARTOFFS"] == 0.0
    assert_stem_is_region(new["file"], mono, 0.25, 2.75)
    assert result["undo_points"] == ["maedaw: repair dropouts (1 item(s))"]
    # the helper's packet and reply files are removed; a helper still waiting is told to stop
    tmp = project.resource / "Data" / "maedaw" / "tmp"
    deadline = time.monotonic() + 5
    while list(tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize("transport", ["socket", "helper"])
def test_missing_daemon_says_how_to_start_it(tmp_path, transport):
    if transport == "socket" and not HAS_SOCKET:
        pytest.skip("lua-socket missing")
    port = free_udp_port()
    project = Project(tmp_path, port, transport=transport, helper=HELPER, ping_timeout_s="1")
    mono = project.take_file("mono.wav", 44_100, 1, 2.0, [])
    project.add_item(mono, 0.0, 1.0)
    project.add_item(mono, 2.0, 1.0, D_PLAYRATE=2.0)  # would need a render: not without a daemon
    started = time.monotonic()
    result = project.run(REPAIR)
    clean(result)
    assert time.monotonic() - started < 15
    assert result["commands"] == []
    (message,) = result["messages"]
    assert f"not answering at 127.0.0.1:{port}" in message["text"]
    assert "maedaw serve" in message["text"]
    assert result["undo_points"] == [] and all(len(i["takes"]) == 1 for i in result["items"])
    tmp = project.resource / "Data" / "maedaw" / "tmp"
    deadline = time.monotonic() + 5  # a helper still waiting for a pong is told to stop
    while tmp.exists() and list(tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not tmp.exists() or list(tmp.iterdir()) == []


@needs_socket
def test_error_reply_is_reported_and_the_rest_still_lands(server, tmp_path):
    project = Project(tmp_path, server.port)
    good = project.take_file("good.wav", 48_000, 2, 3.0, [(0, 1.0, 0.01)])
    gone = project.take_file("gone.wav", 48_000, 2, 3.0, [])
    project.add_item(good, 0.0, 2.0)
    # REAPER still knows the length of a file that was moved away after it was loaded
    bad = project.add_item(gone, 4.0, 2.0, source={"length": 3.0})
    gone.unlink()
    result = project.run(REPAIR)
    clean(result)
    assert len(result["items"][0]["takes"]) == 2
    assert len(result["items"][bad]["takes"]) == 1
    text = result["messages"][-1]["text"]
    assert text.startswith("1 of 2 item(s) repaired") and "not_found" in text
    assert result["undo_points"] == ["maedaw: repair dropouts (1 item(s))"]


@needs_socket
def test_cancel_from_the_progress_window_stops_the_job(server, tmp_path):
    project = Project(tmp_path, server.port)
    long = project.take_file("long.wav", 48_000, 2, 4.0, [(0, 3.0, 0.01)], repeat=15)
    project.add_item(long, 0.0, 60.0)
    before = {j["client_job"] for j in server.status()["jobs"]}
    result = project.run(REPAIR, gfx_close_after=3)
    clean(result)
    assert result["gfx_closed_by_user"]
    assert result["undo_points"] == [] and len(result["items"][0]["takes"]) == 1
    assert "Cancelled" in result["messages"][-1]["text"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        jobs = [j for j in server.status()["jobs"] if j["client_job"] not in before]
        if jobs and jobs[-1]["state"] in ("cancelled", "failed", "done"):
            break
        time.sleep(0.2)
    assert len(jobs) == 1 and jobs[0]["state"] == "cancelled", jobs
    assert not list(project.media.glob("long.repair-*.wav"))


def test_nothing_selected_and_midi_items(tmp_path):
    project = Project(tmp_path, free_udp_port())
    project.add_item("", 0.0, 1.0, source={"type": "MIDI"}, midi=True)
    project.items[0]["selected"] = False
    result = project.run(REPAIR)
    clean(result)
    assert result["messages"][0]["text"].startswith("Select one or more items")


# --- status and settings -----------------------------------------------------------------


@needs_socket
def test_status_action_shows_the_daemon(server, tmp_path):
    project = Project(tmp_path, server.port)
    result = project.run(STATUS)
    clean(result)
    (message,) = result["messages"]
    assert "contract maedaw-osc/1" in message["text"]
    assert f"127.0.0.1:{server.port}" in message["text"]


@pytest.mark.parametrize("transport", ["socket", "helper"])
def test_a_wrong_token_is_told_to_the_user_and_nothing_is_sent(server, tmp_path, transport):
    """Signed with another token, the ping is refused: the action says so (and how to fix
    it), sends no job and changes nothing."""
    if transport == "socket" and not HAS_SOCKET:
        pytest.skip("lua-socket missing")
    project = Project(tmp_path, server.port, token="0" * 64, transport=transport, helper=HELPER)
    take = project.take_file("take.wav", 16_000, 1, 1.0, [(0, 0.5, 0.005)])
    project.add_item(take, 0.0, 1.0)
    result = project.run(REPAIR)
    clean(result)
    (message,) = result["messages"]
    assert "refused the request: wrong token" in message["text"], message
    assert "maedaw token" in message["text"]
    assert not list(project.media.rglob("*.repair-*"))  # no stem: no job was sent


@pytest.mark.parametrize("transport", ["socket", "helper"])
def test_start_and_stop_the_daemon_from_reaper(tmp_path, transport):
    if transport == "socket" and not HAS_SOCKET:
        pytest.skip("lua-socket missing")
    port = free_udp_port()
    project = Project(tmp_path, port, transport=transport, helper=HELPER)
    # the daemon's default state folder follows XDG_DATA_HOME: keep it inside the test
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    from maedaw.bridge.lifecycle import ping, running_pid

    state = tmp_path / "xdg" / "maedaw"
    try:
        started = project.run(START, env=env)
        clean(started)
        (message,) = started["messages"]
        assert f"maedaw daemon running on 127.0.0.1:{port}" in message["text"], message
        assert any("serve --detach --port" in cmd for cmd in started["exec"])
        assert ping("127.0.0.1", port, timeout_s=2.0) and running_pid(state) is not None
        stopped = project.run(STOP, env=env)
        clean(stopped)
        (message,) = stopped["messages"]
        assert "has stopped" in message["text"]
        assert not ping("127.0.0.1", port, timeout_s=0.3)
        deadline = time.monotonic() + 20  # it stops answering first, then exits
        while running_pid(state) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running_pid(state) is None
    finally:
        pid = running_pid(state)
        if pid:
            os.kill(pid, signal.SIGKILL)


def test_settings_are_checked_and_persisted(tmp_path):
    project = Project(tmp_path, 9000)
    values = ["10.0.0.5", "9100", str(tmp_path / "stems"), "flac", "120", "helper", "maedaw"]
    result = project.run(SETTINGS, user_inputs={"ok": True, "csv": "\n".join(values)})
    clean(result)
    saved = result["extstate"]
    assert saved["maedaw/port"] == {"value": "9100", "persist": True}
    assert saved["maedaw/format"]["value"] == "flac"
    assert saved["maedaw/out_dir"]["value"] == str(tmp_path / "stems")
    assert "separator=\n" in result["dialogs"][0]["captions"]
    values[1] = "99999"
    result = project.run(SETTINGS, user_inputs={"ok": True, "csv": "\n".join(values)})
    clean(result)
    assert "port must be 1-65535" in result["messages"][0]["text"]
    assert result["extstate"]["maedaw/port"]["value"] == "9000"  # nothing was saved


def test_token_setting(tmp_path):
    project = Project(tmp_path, 9000)
    values = ["10.0.0.5", "9000", "", "wav", "600", "auto", "maedaw", "normal", "short"]
    result = project.run(SETTINGS, user_inputs={"ok": True, "csv": "\n".join(values)})
    clean(result)
    assert "token must be blank" in result["messages"][0]["text"]
    assert "maedaw/token" not in result["extstate"]  # nothing was saved
    values[-1] = "ab" * 32  # what `maedaw token` prints
    result = project.run(SETTINGS, user_inputs={"ok": True, "csv": "\n".join(values)})
    clean(result)
    assert result["extstate"]["maedaw/token"] == {"value": "ab" * 32, "persist": True}


def test_repair_sensitivity_setting(tmp_path):
    project = Project(tmp_path, 9000)
    values = ["127.0.0.1", "9000", "", "wav", "600", "auto", "maedaw", "low"]
    result = project.run(SETTINGS, user_inputs={"ok": True, "csv": "\n".join(values)})
    clean(result)
    assert result["extstate"]["maedaw/sensitivity"]["value"] == "low"
    values[-1] = "max"
    result = project.run(SETTINGS, user_inputs={"ok": True, "csv": "\n".join(values)})
    clean(result)
    assert "sensitivity must be low, normal or high" in result["messages"][0]["text"]
    assert "maedaw/sensitivity" not in result["extstate"]  # nothing was saved


# --- the time-selection action -----------------------------------------------------------

TIME_SELECTION = SCRIPTS / "maedaw_Repair time selection on selected tracks.lua"


@needs_socket
def test_repair_time_selection_splits_and_adds_takes(server, tmp_path):
    project = Project(tmp_path, server.port)
    stereo = project.take_file("ts.wav", 48_000, 2, 5.0, [(0, 2.0, 0.01)])
    mono = project.take_file("tsm.wav", 48_000, 1, 4.0, [(0, 0.2, 0.01)])
    project.add_item(stereo, 0.0, 4.0, D_STARTOFFS=0.5)  # track 1: inside [1, 3] -> [1.5, 3.5]
    project.add_item(mono, 2.5, 3.0)  # track 1: [2.5, 3] -> source [0, 0.5]
    other = project.add_item(stereo, 0.0, 4.0)
    project.items[other]["track"] = 2  # not a selected track
    for item in project.items:
        item["selected"] = False
    result = project.run(
        TIME_SELECTION, tracks=[{"selected": True}, {"selected": False}], time_selection=[1.0, 3.0]
    )
    clean(result)
    assert result["undo_points"] == ["maedaw: repair time selection (2 item(s))"]
    on_track = sorted(
        ((i["position"], i["length"], i) for i in result["items"] if i["track"] == 1),
        key=lambda row: (row[0], row[1]),
    )
    assert [(p, round(n, 9)) for p, n, _ in on_track] == [
        (0.0, 1.0),
        (1.0, 2.0),
        (2.5, 0.5),
        (3.0, 1.0),
        (3.0, 2.5),
    ]
    middle = on_track[1][2]
    assert len(middle["takes"]) == 2 and middle["active"] == 2
    assert middle["takes"][0]["params"]["D_STARTOFFS"] == pytest.approx(1.5, abs=1e-12)
    assert abs(middle["takes"][1]["params"]["D_STARTOFFS"]) < 1e-9
    assert_stem_is_region(middle["takes"][1]["file"], stereo, 1.5, 3.5)
    short = on_track[2][2]
    assert len(short["takes"]) == 2 and abs(short["takes"][1]["params"]["D_STARTOFFS"]) < 1e-9
    assert_stem_is_region(short["takes"][1]["file"], mono, 0.0, 0.5)
    for _, _, outside in (on_track[0], on_track[3], on_track[4]):
        assert len(outside["takes"]) == 1  # outside the time selection: only split, not changed
    assert len(result["items"][other]["takes"]) == 1


def test_time_selection_needed(tmp_path):
    project = Project(tmp_path, free_udp_port())
    project.add_item(ROOT / "nothing.wav", 0.0, 1.0)
    result = project.run(TIME_SELECTION, tracks=[{"selected": True}])
    clean(result)
    assert result["messages"][0]["text"] == "Make a time selection first."


# --- restore ---------------------------------------------------------------------------------

RESTORE = SCRIPTS / "maedaw_Restore selected items.lua"


@needs_socket
def test_restore_adds_a_take_of_the_same_region(server, tmp_path):
    project = Project(tmp_path, server.port)
    mono = project.take_file("r.wav", 48_000, 1, 2.0, [])
    project.add_item(mono, 0.0, 1.5, D_STARTOFFS=0.25)
    result = project.run(RESTORE, user_inputs={"ok": True, "csv": " Dehum "})
    clean(result)
    assert result["undo_points"] == ["maedaw: dehum (1 item(s))"]
    text = result["messages"][-1]["text"]
    assert text.startswith("1 of 1 item(s) restored (dehum)"), text
    (item,) = result["items"]
    _, new = item["takes"]
    assert item["active"] == 2 and new["name"] == "r.wav [maedaw dehum]"
    # the stem holds exactly the played region, so the new take starts at offset 0
    assert new["params"]["D_STARTOFFS"] == pytest.approx(0.0, abs=1e-12)
    report = json.loads(Path(new["file"]).with_suffix(".json").read_text())
    assert report["op"] == "dehum" and report["region"]["start"] == 12_000
    got, expected = read_region(new["file"]).samples, region(mono, 0.25, 1.75)
    assert got.shape == expected.shape
    assert result["extstate"]["maedaw/restore_op"]["value"] == "dehum"
    assert not result["gfx_open"]


TAG = SCRIPTS / "maedaw_Tag selected items.lua"


@needs_socket
def test_tag_names_takes_and_notes_items_and_a_rerun_replaces_its_own_text(server, tmp_path):
    project = Project(tmp_path, server.port)
    mono = project.take_file("m.wav", 44_100, 1, 4.0, [])
    stereo = project.take_file("s.wav", 48_000, 2, 3.0, [])
    project.add_item(mono, 0.0, 2.0, D_STARTOFFS=1.0)
    project.add_item(stereo, 3.0, 3.0)
    project.items[1]["notes"] = "mic 2, keep"
    first = project.run(TAG)
    clean(first)
    assert first["undo_points"] == ["maedaw: tag (2 item(s))"]
    assert first["messages"][-1]["text"].startswith("2 of 2 item(s) tagged."), first["messages"]
    for item in first["items"]:
        (take,) = item["takes"]  # audio is not touched: no new take
        assert take["name"].endswith("]") and " [tags: " in take["name"]
        assert item["notes"].splitlines()[-1].startswith("maedaw tags: ")
    assert first["items"][1]["notes"].startswith("mic 2, keep\n")
    assert "music" in first["items"][1]["takes"][0]["name"]  # a plucked-string clip
    # run it again on the result: one suffix, one tags line, the user's note kept
    for spec, item in zip(project.items, first["items"], strict=True):
        spec["takes"][0]["name"], spec["notes"] = item["takes"][0]["name"], item["notes"]
    second = project.run(TAG)
    clean(second)
    for item in second["items"]:
        assert item["takes"][0]["name"].count("[tags: ") == 1
        assert sum(line.startswith("maedaw tags:") for line in item["notes"].splitlines()) == 1
    assert second["items"][1]["notes"].startswith("mic 2, keep\n")


SIMILAR = SCRIPTS / "maedaw_Find items similar to the selected one.lua"


@needs_socket
def test_find_similar_selects_the_closest_items(server, tmp_path):
    project = Project(tmp_path, server.port)
    music = project.take_file("music.wav", 44_100, 2, 6.0, [])
    hiss = project.hiss_file("hiss.wav", 3.0, seed=1)
    project.add_item(music, 0.0, 3.0)  # the query: the first three seconds of the music
    project.add_item(hiss, 4.0, 3.0)
    project.add_item(music, 8.0, 3.0, D_STARTOFFS=3.0)  # the rest of the same music
    project.add_item(project.media / "offline.wav", 12.0, 1.0)  # missing file
    project.add_item("", 14.0, 1.0, source={"type": "MIDI"}, midi=True)
    for item in project.items[1:]:
        item["selected"] = False
    result = project.run(SIMILAR)
    clean(result)
    assert result["undo_points"] == ["maedaw: select 2 similar item(s)"], result["messages"]
    text = result["messages"][-1]["text"]
    assert text.startswith('Most similar to "music.wav":'), text
    lines = [line for line in text.splitlines() if line[:1].isdigit()]
    assert lines[0].startswith("1. music.wav") and lines[1].startswith("2. hiss.wav"), text
    # the offline file is left out before sending, with its reason; MIDI silently
    assert text.endswith('"offline.wav": the item plays none of its file'), text
    assert [item["selected"] for item in result["items"]] == [True, True, True, False, False]
    for item in result["items"]:  # nothing but the selection changed
        assert len(item["takes"]) == 1


def test_find_similar_needs_a_selected_item(tmp_path):
    project = Project(tmp_path, free_udp_port())
    project.add_item(ROOT / "nothing.wav", 0.0, 1.0)
    project.items[0]["selected"] = False
    result = project.run(SIMILAR)
    clean(result)
    assert result["messages"][0]["text"].startswith("Select the item to compare first.")


TAG_TIME = SCRIPTS / "maedaw_Tag time selection.lua"


@needs_socket
def test_tag_time_selection_names_one_region_and_a_rerun_renames_it(server, tmp_path):
    project = Project(tmp_path, server.port)
    music = project.take_file("music.wav", 44_100, 2, 6.0, [])
    hiss = project.hiss_file("hiss.wav", 4.0, seed=2)
    project.add_item(music, 0.0, 6.0)
    project.add_item(hiss, 2.0, 4.0)
    project.items[1]["track"] = 2
    project.add_item(music, 20.0, 2.0)  # outside the time selection: not sent
    user_marker = {"isrgn": False, "pos": 0.5, "name": "take 3", "number": 1}
    user_region = {"isrgn": True, "pos": 1.0, "rgnend": 4.0, "name": "verse", "number": 1}
    first = project.run(TAG_TIME, time_selection=[1.0, 4.0], markers=[user_marker, user_region])
    clean(first)
    assert first["undo_points"] == ["maedaw: tag time selection"]
    ours = [m for m in first["markers"] if m["name"].startswith("maedaw tags: ")]
    assert len(ours) == 1 and ours[0]["isrgn"] and (ours[0]["pos"], ours[0]["rgnend"]) == (1, 4)
    assert ours[0]["number"] == 2  # the user's region 1 keeps its number
    text = first["messages"][-1]["text"]
    assert text.startswith(f'Region 2: "{ours[0]["name"]}"') and "(2 part(s) of items)" in text
    assert {m["name"] for m in first["markers"]} >= {"take 3", "verse"}
    # again, on the result: the same region is renamed, nothing added
    second = project.run(TAG_TIME, time_selection=[1.0, 4.0], markers=first["markers"])
    clean(second)
    assert len(second["markers"]) == 3
    assert sum(m["name"].startswith("maedaw tags: ") for m in second["markers"]) == 1
    for item in second["items"]:
        assert len(item["takes"]) == 1  # audio untouched


def test_tag_time_selection_needs_one(tmp_path):
    project = Project(tmp_path, free_udp_port())
    project.add_item(ROOT / "nothing.wav", 0.0, 1.0)
    result = project.run(TAG_TIME)
    clean(result)
    assert result["messages"][0]["text"].startswith("Make a time selection first.")


TEACH = SCRIPTS / "maedaw_Teach a tag from selected items.lua"


@needs_socket
def test_teach_a_tag_from_named_items_then_tagging_uses_it(tmp_path):
    daemon = DaemonProcess(tmp_path / "state", "--no-tcp")  # its own tag library
    try:
        project = Project(tmp_path / "p", daemon.port)
        rng = np.random.default_rng(3)
        for n in range(3):
            buzz = 0.2 * np.sign(np.sin(np.arange(3 * 48_000) * (0.04 + 0.005 * n)))
            noisy = buzz + 0.02 * rng.standard_normal(3 * 48_000)
            write_stem(project.media / f"buzz{n}.wav", noisy[None], 48_000, SampleFormat.INT16)
        project.add_item(project.media / "buzz0.wav", 0.0, 3.0, name="door creak [tags: noise]")
        project.add_item(project.media / "buzz1.wav", 4.0, 3.0, name="door creak.wav")
        taught = project.run(TEACH, user_inputs={"ok": True})
        clean(taught)
        assert taught["dialogs"][0]["defaults"] == "door creak"  # the items' common name
        assert taught["messages"][-1]["text"] == (
            'Taught "door creak" from 2 of 2 item(s). The tag has 2 example(s).'
        )
        assert taught["undo_points"] == []  # the project is not changed
        assert [i["takes"][0]["name"] for i in taught["items"]] == [
            "door creak [tags: noise]",
            "door creak.wav",
        ]
        # a third, unnamed take of the same kind of sound now gets the taught tag
        project.items = []
        project.add_item(project.media / "buzz2.wav", 0.0, 3.0, name="Audio 07")
        tagged = project.run(TAG)
        clean(tagged)
        assert "door creak" in tagged["items"][0]["notes"], tagged["items"][0]["notes"]
        # a bad name is refused before anything is sent
        refused = project.run(TEACH, user_inputs={"ok": True, "csv": "a/b"})
        clean(refused)
        assert refused["messages"][0]["text"].startswith("A tag name is 1-64 characters")
    finally:
        daemon.stop()


def test_restore_refuses_an_unknown_operation(tmp_path):
    project = Project(tmp_path, free_udp_port())
    project.add_item(ROOT / "nothing.wav", 0.0, 1.0)
    result = project.run(RESTORE, user_inputs={"ok": True, "csv": "louder"})
    clean(result)
    assert result["messages"][0]["text"].startswith('Unknown operation "louder"')
    assert result["exec"] == [] and result["gfx_inits"] == 0


# --- a daemon that stops answering: the script cancels and says so ---------------------------


class SilentDaemon:
    """Answers pings, accepts jobs, then never says another word unless ``answer(address,
    params)`` gives the replies to a job ([(address, args)...]); records what it got."""

    def __init__(self, answer=None) -> None:
        import threading

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.received: list[tuple[str, list]] = []
        self.answer = answer or (lambda address, params: [])
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def reply(self, address: str, args: list, to) -> None:
        builder = OscMessageBuilder(address)
        for value in args:
            builder.add_arg(value)
        self.sock.sendto(builder.build().dgram, to)

    def serve(self) -> None:
        while self.running:
            try:
                data, sender = self.sock.recvfrom(70_000)
            except TimeoutError:
                continue
            message = OscMessage(data)
            self.received.append((message.address, list(message.params)))
            client = message.params[0]
            if message.address == "/maedaw/ping":
                self.reply("/maedaw/pong", [client, "maedaw-osc/1", "0", ""], sender)
            elif message.address != "/maedaw/cancel":
                self.reply("/maedaw/accepted", [client, "0123456789ab", 0], sender)
                for address, args in self.answer(message.address, list(message.params)):
                    self.reply(address, args, sender)

    def stop(self) -> None:
        self.running = False
        self.thread.join(5)
        self.sock.close()


@pytest.mark.parametrize("transport", ["socket", "helper"])
def test_a_silent_daemon_times_out_and_the_job_is_cancelled(tmp_path, transport):
    if transport == "socket" and not HAS_SOCKET:
        pytest.skip("lua-socket missing")
    daemon = SilentDaemon()
    try:
        project = Project(
            tmp_path, daemon.port, timeout_s="0.5", transport=transport, helper=HELPER
        )
        mono = project.take_file("m.wav", 16_000, 1, 1.0, [])
        project.add_item(mono, 0.0, 1.0)
        started = time.monotonic()
        result = project.run(REPAIR)
        clean(result)
        assert time.monotonic() - started < 20
        text = result["messages"][-1]["text"]
        assert "Timed out" in text and "timeout" in text
        assert result["undo_points"] == [] and len(result["items"][0]["takes"]) == 1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "/maedaw/cancel" not in dict(daemon.received):
            time.sleep(0.05)
        addresses = [a for a, _ in daemon.received]
        assert addresses == ["/maedaw/ping", "/maedaw/repair", "/maedaw/cancel"]
        assert daemon.received[2][1] == [daemon.received[1][1][0]]  # the job it sent
    finally:
        daemon.stop()


def test_takes_whose_sound_is_not_their_file_are_rendered_first(tmp_path):
    daemon = SilentDaemon()  # accepts the jobs; the renders are what this test is about
    try:
        project = Project(tmp_path, daemon.port, timeout_s="0.3")
        wav = project.take_file("w.wav", 16_000, 1, 3.0, [])
        reasons = [
            {"fx": 1},
            {"D_PITCH": 2.0},
            {"stretch_markers": 3},
            {"source": {"type": "SECTION", "parent": {"file": str(wav)}}},
            {"midi": True},
            {},
        ]
        for n, extra in enumerate(reasons):
            project.add_item(wav, 2.0 * n, 1.0, D_STARTOFFS=0.5, **extra)
        result = project.run(REPAIR)
        clean(result)
        assert result["undo_points"] == ["maedaw: render 5 item(s) to send"]
        assert result["commands"] == [41999, 40209]  # audio renders, then MIDI through the FX
        for item in result["items"][:5]:
            assert len(item["takes"]) == 2 and item["active"] == 2
            assert item["takes"][1]["name"].endswith(" render")
        assert len(result["items"][5]["takes"]) == 1
        sent = [params for address, params in daemon.received if address == "/maedaw/repair"]
        files = [Path(p[1]).name for p in sent]
        assert sorted(files) == [f"render-00{k}.wav" for k in range(1, 6)] + ["w.wav"]
        plain = next(p for p in sent if p[1] == str(wav))
        assert (plain[2], plain[3]) == (0.5, 1.5)
        assert all(p[2:4] == [0.0, 1.0] for p in sent if p[1] != str(wav))
        assert all(i["selected"] for i in result["items"])  # the selection is as it was
    finally:
        daemon.stop()
