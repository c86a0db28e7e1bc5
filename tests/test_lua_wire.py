"""The REAPER and the Ardour Lua libraries speak OSC through one file,
``reaper_scripts/maedaw/maedaw_osc.lua``: both resolve the wire's functions there, a request
built by the Ardour library is the bytes the REAPER library builds for the same fields (and what
python-osc reads as the contract's arguments), and no other Lua file encodes OSC or JSON.

Needs ``lua5.4`` (Debian: lua5.4); without it these tests skip, unless ``MAEDAW_REQUIRE_LUA=1``
or ``MAEDAW_REQUIRE_REAL_AUDIO=1`` (CI), where a missing interpreter fails them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pythonosc.osc_message import OscMessage

ROOT = Path(__file__).resolve().parents[1]
WIRE = ROOT / "reaper_scripts" / "maedaw" / "maedaw_osc.lua"
REAPER_LIB = ROOT / "reaper_scripts" / "maedaw" / "maedaw_lib.lua"
ARDOUR_DIR = ROOT / "ardour_scripts" / "maedaw"
LUA = shutil.which("lua5.4")

REQUIRE = bool(os.environ.get("MAEDAW_REQUIRE_LUA") or os.environ.get("MAEDAW_REQUIRE_REAL_AUDIO"))
needs_lua = pytest.mark.skipif(not LUA and not REQUIRE, reason="lua5.4 not installed")

# What the wire provides; each library must reach these in maedaw_osc.lua, not define its own.
WIRE_FUNCTIONS = [
    "osc_encode",
    "osc_decode",
    "hex",
    "unhex",
    "json_string",
    "json_object",
    "json_field",
    "parse_tags",
    "parse_marks",
    "request",
    "pong",
    "apply_reply",
    "jobs",
    "helper_transport",
]

BOTH_LIBRARIES = r"""
local reaper_lib = dofile(REAPER_LIB)
local ardour_lib = assert(loadfile(ARDOUR_DIR .. 'maedaw_lib.lua'))(ARDOUR_DIR)
for _, name in ipairs(WIRE_FUNCTIONS) do
  for side, lib in pairs({ reaper = reaper_lib, ardour = ardour_lib }) do
    local fn = lib[name]
    print('source', side, name, type(fn) == 'function' and debug.getinfo(fn, 'S').source or '-')
  end
end
-- one repair request, built by the Ardour library's own code, then by the REAPER library's
-- encoder for the same fields
local settings = { timeout_s = 600, format = 'flac', out_dir = '/out' }
local req = { file = '/media/ä take.wav', start_s = 0.5, end_s = 2.75 }
local client_job, packet = ardour_lib.request_packet('repair', req, settings)
local same = reaper_lib.request('repair', {
  client_job = client_job, source = req.file, start = req.start_s, ['end'] = req.end_s,
  out_dir = '/out', options = { timeout_s = 600, format = 'flac' },
})
print('ardour', ardour_lib.hex(packet))
print('reaper', reaper_lib.hex(same))
"""


def lua_text(value: object) -> str:
    if isinstance(value, list):
        return "{" + ", ".join(lua_text(v) for v in value) + "}"
    return json.dumps(str(value), ensure_ascii=False)


@needs_lua
def test_both_libraries_use_the_one_codec():
    code = (
        f"REAPER_LIB = {lua_text(REAPER_LIB)}\n"
        f"ARDOUR_DIR = {lua_text(str(ARDOUR_DIR) + '/')}\n"
        f"WIRE_FUNCTIONS = {lua_text(WIRE_FUNCTIONS)}\n" + BOTH_LIBRARIES
    )
    proc = subprocess.run([LUA, "-e", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]  # print() separates by tabs
    sources = {(row[1], row[2]): row[3] for row in rows if row[0] == "source"}
    assert len(sources) == 2 * len(WIRE_FUNCTIONS)
    for (side, name), source in sources.items():
        assert Path(source.removeprefix("@")).resolve() == WIRE, (side, name, source)

    packets = {row[0]: bytes.fromhex(row[1]) for row in rows if len(row) == 2}
    assert packets["ardour"] == packets["reaper"]
    message = OscMessage(packets["ardour"])
    client_job, source, start, end, out_dir, options = message.params
    assert message.address == "/maedaw/repair" and client_job.startswith("ardour-repair-")
    assert (source, start, end, out_dir) == ("/media/ä take.wav", 0.5, 2.75, "/out")
    assert json.loads(options) == {"format": "flac", "timeout_s": 600}


def lua_files() -> list[Path]:
    files = sorted((ROOT / "reaper_scripts").rglob("*.lua")) + sorted(
        (ROOT / "ardour_scripts").rglob("*.lua")
    )
    assert WIRE in files and ARDOUR_DIR / "maedaw_lib.lua" in files
    return [path for path in files if path != WIRE]


def test_no_osc_or_json_codec_outside_the_wire():
    defined = re.compile(r"function\s+[\w.:]*\b(" + "|".join(WIRE_FUNCTIONS) + r")\s*\(")
    for path in lua_files():
        text = path.read_text(encoding="utf-8")
        assert "string.pack" not in text and "string.unpack" not in text, path
        assert not defined.search(text), (path, defined.search(text))
    # one copy of the wire in the repository: the Ardour tree loads it, it does not carry it
    assert [p.name for p in ROOT.glob("*_scripts/**/maedaw_osc.lua")] == ["maedaw_osc.lua"]


@needs_lua
def test_lua_reads_the_marks_of_a_repair_summary():
    """The done summary's markers as the daemon sends them (``json.dumps``: non-ASCII as
    \\u escapes, nested parentheses in a label) come out of ``parse_marks`` unchanged."""
    marks = [
        {"at": 0.7, "length": 0.01, "label": "dropout 10 ms ch1: repaired (AR)"},
        {"at": 1.25, "length": 0.0001, "label": "click 0.1 ms: left alone (rings on (4 dB tail))"},
        {"at": 2.0, "length": 0.3, "label": "level drop 300 ms: left alone (prise coupée)"},
    ]
    summary = json.dumps(
        {"repaired": 1, "left_alone": 2, "seconds": 0.1, "marks": marks, "marks_total": 40}
    )
    code = (
        f"local wire = dofile({lua_text(WIRE)})\n"
        f"local marks, total = wire.parse_marks({lua_text(summary)})\n"
        "print(total)\n"
        "for _, m in ipairs(marks) do print(m.at, m.length, m.label) end\n"
        "local none, zero = wire.parse_marks('{\"repaired\": 0}')\n"
        "print(#none, zero)\n"
    )
    proc = subprocess.run([LUA, "-e", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "40" and lines[-1] == "0\t0"
    got = [line.split("\t") for line in lines[1:-1]]
    assert [(float(a), float(b), c) for a, b, c in got] == [
        (m["at"], m["length"], m["label"]) for m in marks
    ]
