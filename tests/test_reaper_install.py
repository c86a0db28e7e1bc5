"""``maedaw install-reaper`` into a temporary resource path, and the ReaPack index."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from maedaw.bridge.reaper_install import (
    LIBRARIES,
    InstallError,
    action_files,
    command_id,
    default_resource_path,
    install,
    reapack_index,
    registered_paths,
    scripts_source,
)

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "reaper_scripts" / "maedaw"
EXISTING_KB = (
    'KEY 1 65 40001 0\nSCR 4 0 RSabc "Custom: other.lua" "Other/other.lua"\nACT 0 0 "x" "y" 1\n'
)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "maedaw.bridge.cli", *args], capture_output=True, text=True
    )


def test_install_twice_is_idempotent_and_backs_up(tmp_path):
    resource = tmp_path / "REAPER"
    resource.mkdir()
    (resource / "reaper-kb.ini").write_text(EXISTING_KB)

    first = run_cli("install-reaper", "--resource-path", str(resource), "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    installed = resource / "Scripts" / "maedaw"
    assert sorted(p.name for p in installed.glob("*.lua")) == sorted(
        p.name for p in SOURCE.glob("*.lua")
    )
    for path in SOURCE.glob("*.lua"):
        assert (installed / path.name).read_bytes() == path.read_bytes()
    kb = (resource / "reaper-kb.ini").read_text()
    assert kb.startswith(EXISTING_KB)  # nothing of the user's is lost
    actions = {f"maedaw/{p.name}" for p in action_files(SOURCE)}
    assert {path for _, path in registered_paths(kb)} == actions | {"Other/other.lua"}
    assert not any(name in kb for name in LIBRARIES)  # the libraries are not actions
    (backup,) = report["backups"]
    assert Path(backup).read_text() == EXISTING_KB

    second = run_cli("install-reaper", "--resource-path", str(resource), "--json")
    again = json.loads(second.stdout)
    assert again["copied"] == [] and again["registered"] == [] and again["backups"] == []
    assert sorted(again["already_registered"]) == sorted(actions)
    assert (resource / "reaper-kb.ini").read_text() == kb

    # a changed installed script is backed up before it is replaced
    target = installed / "maedaw_lib.lua"
    target.write_text("-- edited by the user\n")
    third = install(resource, SOURCE)
    assert [p.name for p in third.copied] == ["maedaw_lib.lua"]
    (lib_backup,) = third.backups
    assert lib_backup.read_text() == "-- edited by the user\n"
    assert target.read_bytes() == (SOURCE / "maedaw_lib.lua").read_bytes()


def test_scr_lines_look_like_reapers(tmp_path):
    resource = tmp_path / "R"
    resource.mkdir()
    install(resource, SOURCE)
    lines = (resource / "reaper-kb.ini").read_text().splitlines()
    assert len(lines) == len(action_files(SOURCE))
    for line in lines:
        parts = line.split(" ", 4)
        assert parts[:3] == ["SCR", "4", "0"] and parts[3].startswith("RS")
        name = line.split('"')[3].split("/")[-1]
        assert line.endswith(f'"Custom: {name}" "maedaw/{name}"')
    assert command_id("maedaw/a.lua") == command_id("maedaw/a.lua") != command_id("maedaw/b.lua")


def test_missing_resource_path_is_an_error(tmp_path):
    with pytest.raises(InstallError):
        install(tmp_path / "nope", SOURCE)
    proc = run_cli("install-reaper", "--resource-path", str(tmp_path / "nope"))
    assert proc.returncode == 1 and proc.stderr.startswith("error:")


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {"HOME": "/home/u"}, "/home/u/.config/REAPER"),
        ("linux", {"HOME": "/home/u", "XDG_CONFIG_HOME": "/x"}, "/x/REAPER"),
        ("darwin", {"HOME": "/Users/u"}, "/Users/u/Library/Application Support/REAPER"),
        ("win32", {"APPDATA": "C:/Users/u/AppData/Roaming"}, "C:/Users/u/AppData/Roaming/REAPER"),
    ],
)
def test_standard_resource_paths(platform, env, expected):
    assert default_resource_path(platform, env) == Path(expected)


def test_reapack_index_is_valid_and_current():
    assert scripts_source() == SOURCE
    text = reapack_index(SOURCE)
    root = ET.fromstring(text.encode())
    assert root.tag == "index" and root.get("version") == "1"
    (package,) = root.iter("reapack")
    assert package.get("type") == "script"
    (version,) = package.iter("version")
    assert version.get("name")[0].isdigit()
    sources = {s.get("file"): s.get("main") for s in version.iter("source")}
    assert sources == {
        p.name: (None if p.name in LIBRARIES else "main") for p in SOURCE.glob("*.lua")
    }
    # the checked-in index is what the generator writes now
    assert (ROOT / "reaper_scripts" / "index.xml").read_text() == text
