"""``maedaw install-reaper`` into a temporary resource path, and the ReaPack index."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from maedaw.bridge.reaper_install import (
    LIBRARIES,
    MAIN_PACKAGE,
    InstallError,
    about_rtf,
    action_files,
    command_id,
    default_resource_path,
    install,
    package_files,
    provides,
    reapack_headers,
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


def rtf_text(rtf: str) -> str:
    """The words of an RTF document (its header tables, control words and groups' braces
    dropped, escapes undone), as ReaPack's plain-text fallback shows it."""
    body = rtf.split("\\widowctrl\\hyphauto", 1)[1]  # after the font and colour tables
    body = re.sub(r"\\u(\d+)(?: \?|[-'\"])", lambda m: chr(int(m.group(1))), body)
    body = re.sub(r"\\([a-z]+)-?\d* ?", "", body)
    body = re.sub(r"(?<!\\)[{}]", "", body).replace("\\{", "{").replace("\\}", "}")
    return " ".join(body.replace("\\\\", "\\").split())


def markdown_words(markdown: str) -> str:
    text = re.sub(r"^\s*(#+|-|\*)\s+", "", markdown, flags=re.M)
    return " ".join(text.replace("`", "").replace("**", "").replace("*", "").split())


def test_reapack_index_agrees_with_the_headers():
    """What reapack-index would build from the headers: the main script's @description is the
    package's desc, its @about (Markdown) the <description> as RTF (ReaPack's About tab reads
    RTF: anything else shows "Could not load RTF document" on Windows and macOS), its
    @changelog the version's, and its @provides every other file of the folder ([main]: the
    actions, [nomain]: the two libraries); every other action is @noindex (no second package)."""
    main = reapack_headers(SOURCE / MAIN_PACKAGE)
    root = ET.fromstring(reapack_index(SOURCE).encode())
    (package,) = root.iter("reapack")
    assert package.get("desc") == main["description"]
    description = package.find("metadata/description").text
    assert description.startswith("{\\rtf1") and description.endswith("}\n")
    assert rtf_text(description) == markdown_words(main["about"])
    assert "Could not" not in description and "#" not in rtf_text(description)
    (version,) = package.iter("version")
    assert version.get("name") == main["version"]
    assert version.find("changelog").text == main["changelog"]
    provided = dict(provides(main))
    actions = {p.name for p in action_files(SOURCE)} - {MAIN_PACKAGE}
    assert {name for name, is_main in provided.items() if is_main} == actions
    assert {name for name, is_main in provided.items() if not is_main} == set(LIBRARIES)
    sources = {s.get("file"): s.get("main") for s in version.iter("source")}
    assert sources == {
        name: ("main" if is_main else None) for name, is_main in package_files(SOURCE)
    }
    for path in action_files(SOURCE):
        if path.name != MAIN_PACKAGE:
            assert "noindex" in reapack_headers(path), path.name


def test_about_is_dedented_and_keeps_its_paragraphs():
    about = reapack_headers(SOURCE / MAIN_PACKAGE)["about"]
    assert about.startswith("# maedaw for REAPER\n\nSends ")
    assert not any(
        line.startswith(" ") and not line.startswith("  ") for line in about.splitlines()
    )


def test_a_file_left_out_of_provides_is_refused(tmp_path):
    folder = tmp_path / "maedaw"
    shutil.copytree(SOURCE, folder)
    main = folder / MAIN_PACKAGE
    main.write_text(main.read_text().replace("--   [main] maedaw_Tag time selection.lua\n", ""))
    with pytest.raises(
        InstallError, match=re.escape("not provided ['maedaw_Tag time selection.lua']")
    ):
        reapack_index(folder)


def test_the_reaper_guide_names_every_action_and_none_as_missing():
    """docs/reaper.md lists each action under its name in REAPER ("maedaw: " + the file name
    after "maedaw_"), and no "not here yet" line names one that exists."""
    guide = (ROOT / "docs" / "reaper.md").read_text()
    missing_lines = [line.lower() for line in guide.splitlines() if "not here yet" in line.lower()]
    for path in action_files(SOURCE):
        name = path.stem.removeprefix("maedaw_")
        assert f"| maedaw: {name} |" in guide, name
        assert not any(name.lower() in line for line in missing_lines), name


PANDOC = os.environ.get("MAEDAW_PANDOC") or shutil.which("pandoc")


@pytest.mark.skipif(not PANDOC, reason="pandoc (what reapack-index converts @about with) missing")
def test_about_rtf_is_what_reapack_index_gets_from_pandoc():
    """reapack-index converts @about with `pandoc -f commonmark -t rtf --standalone`; where
    pandoc is installed (or MAEDAW_PANDOC names it), our RTF is byte for byte the same."""
    samples = [
        reapack_headers(SOURCE / MAIN_PACKAGE)["about"],
        "# T\n\nH\u00e9llo \u2013 \u2018q\u2019 {x} \\\\ \u2265 \U0001f600"
        " `a{b}` **b** *i* \\*x\\*\n\nmore\ntext",
        "## Sub\n\n- a\n- b\n  more\n\npara",
    ]
    for markdown in samples:
        pandoc = subprocess.run(
            [PANDOC, "-f", "commonmark", "-t", "rtf", "--standalone"],
            input=markdown,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert about_rtf(markdown) == pandoc, markdown
