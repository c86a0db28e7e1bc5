"""``maedaw install-ardour`` into a temporary script folder: the actions, their library and
the wire they share with the REAPER scripts, and an installed library that finds that wire
beside itself."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from maedaw.bridge.ardour_install import ardour_source, default_scripts_dir, install
from maedaw.bridge.reaper_install import InstallError

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "ardour_scripts"
WIRE = ROOT / "reaper_scripts" / "maedaw" / "maedaw_osc.lua"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "maedaw.bridge.cli", *args], capture_output=True, text=True
    )


def expected_files(scripts: Path) -> dict[Path, Path]:
    """Installed path -> the repository file it is a copy of."""
    files = {scripts / p.name: p for p in SOURCE.glob("*.lua")}
    files |= {scripts / "maedaw" / p.name: p for p in (SOURCE / "maedaw").glob("*.lua")}
    files[scripts / "maedaw" / "maedaw_osc.lua"] = WIRE
    return files


def test_install_twice_is_idempotent_and_backs_up(tmp_path):
    scripts = tmp_path / "ardour7" / "scripts"  # created by the install
    first = run_cli("install-ardour", "--scripts-dir", str(scripts), "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    files = expected_files(scripts)
    assert sorted(report["copied"]) == sorted(map(str, files)) and report["backups"] == []
    assert sorted(p for p in scripts.rglob("*") if p.is_file()) == sorted(files)
    for installed, source in files.items():
        assert installed.read_bytes() == source.read_bytes()
    # the actions Ardour lists: the three region actions, at the top of the folder
    assert sorted(p.name for p in scripts.glob("*.lua")) == [
        "maedaw_repair_regions.lua",
        "maedaw_restore_regions.lua",
        "maedaw_tag_regions.lua",
    ]

    again = json.loads(run_cli("install-ardour", "--scripts-dir", str(scripts), "--json").stdout)
    assert again["copied"] == [] and again["backups"] == []
    assert sorted(again["unchanged"]) == sorted(map(str, files))

    # a changed installed file is backed up before it is replaced
    target = scripts / "maedaw" / "maedaw_osc.lua"
    target.write_text("-- edited by the user\n")
    third = install(scripts)
    assert third.copied == [target]
    (backup,) = third.backups
    assert backup.read_text() == "-- edited by the user\n"
    assert target.read_bytes() == WIRE.read_bytes()


def test_text_output_says_what_to_do_next(tmp_path):
    proc = run_cli("install-ardour", "--scripts-dir", str(tmp_path / "s"))
    assert proc.returncode == 0, proc.stderr
    assert f"Ardour script folder: {tmp_path / 's'}" in proc.stdout
    assert f"{len(expected_files(tmp_path / 's'))} copied, 0 unchanged" in proc.stdout
    assert "Script Manager" in proc.stdout


@pytest.mark.skipif(not shutil.which("lua5.4"), reason="lua5.4 not installed")
def test_installed_library_loads_the_wire_beside_it(tmp_path):
    """Moved out of the repository, the installed library needs nothing but its own folder."""
    scripts = tmp_path / "scripts"
    install(scripts)
    here = f"{scripts}/maedaw/"
    code = (
        f"local here = {json.dumps(here)} "
        "local lib = assert(loadfile(here .. 'maedaw_lib.lua'))(here) "
        "print(debug.getinfo(lib.osc_encode, 'S').source)"
    )
    proc = subprocess.run(["lua5.4", "-e", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"@{here}maedaw_osc.lua"


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {"HOME": "/home/u"}, "/home/u/.config/ardour7/scripts"),
        ("linux", {"HOME": "/home/u", "XDG_CONFIG_HOME": "/x"}, "/x/ardour7/scripts"),
        ("darwin", {"HOME": "/Users/u"}, "/Users/u/Library/Preferences/Ardour7/scripts"),
    ],
)
def test_standard_script_folders(platform, env, expected):
    assert default_scripts_dir(platform, env) == Path(expected)


def test_windows_is_refused():
    with pytest.raises(InstallError, match="Linux and macOS"):
        default_scripts_dir("win32", {"APPDATA": "C:/x"})


def test_source_is_the_repository_folder():
    assert ardour_source() == SOURCE
