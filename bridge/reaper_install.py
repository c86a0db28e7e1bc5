"""``maedaw install-reaper``: copy the REAPER scripts into a resource path and register them.

REAPER keeps its scripts under ``<resource path>/Scripts`` and the actions it knows in
``<resource path>/reaper-kb.ini``, one ``SCR`` line per script:
``SCR 4 0 RS<id> "Custom: <file name>" "<path relative to Scripts>"``. We copy
``reaper_scripts/maedaw/*.lua`` to ``Scripts/maedaw/`` and add the missing ``SCR`` lines
for the actions (not the two libraries, which ReaPack's ``@noindex`` also leaves out:
``maedaw_lib.lua``, REAPER's glue, and ``maedaw_osc.lua``, the wire it shares with the Ardour
scripts). Running
it again changes nothing; any file it does change is first copied to
``<name>.maedaw-backup-<UTC time>``. REAPER rewrites ``reaper-kb.ini`` when it exits, so
install while REAPER is closed.

The same module writes the ReaPack ``index.xml`` for the scripts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from maedaw.core.errors import MaedawError
from maedaw.core.util import write_bytes_atomic, write_text_atomic

log = logging.getLogger(__name__)

PACKAGE = "maedaw"  # folder under Scripts/, and the ReaPack category
LIBRARY = "maedaw_lib.lua"  # the REAPER library
WIRE = "maedaw_osc.lua"  # OSC, JSON and transports: shared with the Ardour scripts
LIBRARIES = (LIBRARY, WIRE)
SECTION_MAIN = 0
DEFAULT_BASE_URL = "https://raw.githubusercontent.com/maedaw/maedaw/main/reaper_scripts"


class InstallError(MaedawError):
    """The install cannot go on; the message says why."""


@dataclass(kw_only=True)
class Copies:
    """What an install did with each file (copy_file): copied, found unchanged, backed up."""

    copied: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    backups: list[Path] = field(default_factory=list)

    def paths(self, name: str) -> list[str]:
        return [str(p) for p in getattr(self, name)]


@dataclass
class InstallReport(Copies):
    resource_path: Path
    registered: list[str] = field(default_factory=list)
    already_registered: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "resource_path": str(self.resource_path),
            "copied": self.paths("copied"),
            "unchanged": self.paths("unchanged"),
            "registered": self.registered,
            "already_registered": self.already_registered,
            "backups": self.paths("backups"),
        }


def default_resource_path(platform: str | None = None, env: dict | None = None) -> Path:
    """REAPER's standard (non-portable) resource path on this platform."""
    platform = platform or sys.platform
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    if platform.startswith("win"):
        appdata = env.get("APPDATA")
        if not appdata:
            raise InstallError("APPDATA is not set; pass --resource-path")
        return Path(appdata) / "REAPER"
    if platform == "darwin":
        return home / "Library" / "Application Support" / "REAPER"
    config = env.get("XDG_CONFIG_HOME")
    return (Path(config) if config else home / ".config") / "REAPER"


def scripts_source() -> Path:
    """The repository's ``reaper_scripts/maedaw`` folder (a source or editable install)."""
    override = os.environ.get("MAEDAW_REAPER_SCRIPTS")
    candidates = [Path(override)] if override else []
    # Installed as package data (a namespace package: no importlib.resources on 3.11).
    spec = importlib.util.find_spec("maedaw.reaper_scripts")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if Path(location).is_dir():
            candidates.append(Path(location) / PACKAGE)
    candidates.append(Path(__file__).resolve().parents[1] / "reaper_scripts" / PACKAGE)
    for folder in candidates:
        if (folder / LIBRARY).is_file():
            return folder
    raise InstallError(
        "the REAPER scripts were not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); run from a clone of the repository or set MAEDAW_REAPER_SCRIPTS"
    )


def action_files(source: Path) -> list[Path]:
    """The action scripts (every .lua but the libraries), sorted."""
    return sorted(p for p in source.glob("*.lua") if p.name not in LIBRARIES)


def command_id(relative: str) -> str:
    """A stable ``RS…`` id for a script path relative to Scripts/ (same path, same id)."""
    return "RS" + hashlib.sha1(relative.encode()).hexdigest()


def scr_line(relative: str) -> str:
    name = relative.rsplit("/", 1)[-1]
    return f'SCR 4 {SECTION_MAIN} {command_id(relative)} "Custom: {name}" "{relative}"'


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _backup(path: Path, report: Copies) -> None:
    backup = path.with_name(f"{path.name}.maedaw-backup-{_stamp()}")
    n = 1
    while backup.exists():
        backup = path.with_name(f"{path.name}.maedaw-backup-{_stamp()}-{n}")
        n += 1
    shutil.copy2(path, backup)
    report.backups.append(backup)


_SCR_PATH = re.compile(r'^SCR\s+\d+\s+(\d+)\s+\S+\s+"[^"]*"\s+"([^"]*)"\s*$')


def registered_paths(kb_text: str) -> set[tuple[int, str]]:
    """(section, script path) of every SCR line, paths with forward slashes."""
    found = set()
    for line in kb_text.splitlines():
        match = _SCR_PATH.match(line.strip())
        if match:
            found.add((int(match.group(1)), match.group(2).replace("\\", "/")))
    return found


def copy_file(source: Path, dest: Path, report: Copies) -> None:
    """Copy ``source`` to ``dest`` (atomically) unless it is there already; a different file
    there is backed up first."""
    data = source.read_bytes()
    if dest.exists():
        if dest.read_bytes() == data:
            report.unchanged.append(dest)
            return
        _backup(dest, report)
    write_bytes_atomic(dest, data)
    report.copied.append(dest)


def install(resource_path: Path, source: Path | None = None) -> InstallReport:
    """Copy the scripts into ``resource_path`` and register the actions, idempotently."""
    source = source or scripts_source()
    resource_path = resource_path.expanduser()
    if not resource_path.is_dir():
        raise InstallError(f"{resource_path} is not a folder (REAPER's resource path)")
    report = InstallReport(resource_path)
    target = resource_path / "Scripts" / PACKAGE
    target.mkdir(parents=True, exist_ok=True)
    for script in sorted(source.glob("*.lua")):
        copy_file(script, target / script.name, report)

    kb = resource_path / "reaper-kb.ini"
    text = kb.read_text(encoding="utf-8", errors="surrogateescape") if kb.exists() else ""
    known = registered_paths(text)
    new_lines = []
    for script in action_files(source):
        relative = f"{PACKAGE}/{script.name}"
        if (SECTION_MAIN, relative) in known:
            report.already_registered.append(relative)
        else:
            new_lines.append(scr_line(relative))
            report.registered.append(relative)
    if new_lines:
        if kb.exists():
            _backup(kb, report)
        if text and not text.endswith("\n"):
            text += "\n"
        write_text_atomic(kb, text + "\n".join(new_lines) + "\n", errors="surrogateescape")
    log.info("installed into %s", target)
    return report


# --- ReaPack --------------------------------------------------------------------------

_TAG = re.compile(r"^--\s*@(\w+)\s*(.*)$")


def reapack_headers(path: Path) -> dict[str, str]:
    """The ``-- @tag value`` header block at the top of a script (``@about`` multi-line)."""
    tags: dict[str, str] = {}
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("--"):
            break
        match = _TAG.match(line)
        if match:
            current = match.group(1)
            tags[current] = match.group(2).strip()
        elif current and line.startswith("--  "):
            tags[current] = (tags[current] + "\n" + line[4:]).strip("\n")
    return tags


MAIN_PACKAGE = "maedaw_Repair dropouts in selected items.lua"


def reapack_index(source: Path, base_url: str = DEFAULT_BASE_URL) -> str:
    """ReaPack ``index.xml`` text: one package (the repair action's file, whose ``@provides``
    lists the other actions and the libraries), so no two packages provide the same file."""
    base = base_url.rstrip("/")
    main = source / MAIN_PACKAGE
    tags = reapack_headers(main)
    if "version" not in tags:
        raise InstallError(f"{main.name} has no @version header")
    desc = "maedaw: Audio-MAE repair for REAPER (actions)"
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<index version="1" name="maedaw">',
        f"  <category name={quoteattr(PACKAGE)}>",
        f'    <reapack name={quoteattr(main.name)} type="script" desc={quoteattr(desc)}>',
        f"      <metadata><description><![CDATA[{tags.get('about', desc)}]]></description>"
        "</metadata>",
        f"      <version name={quoteattr(tags['version'])} "
        f"author={quoteattr(tags.get('author', 'maedaw'))}>",
    ]
    for script in sorted(source.glob("*.lua")):
        url = escape(f"{base}/{PACKAGE}/{script.name}".replace(" ", "%20"))
        if script.name in LIBRARIES:
            lines.append(f"        <source file={quoteattr(script.name)}>{url}</source>")
        else:
            lines.append(
                f'        <source main="main" file={quoteattr(script.name)}>{url}</source>'
            )
    lines += ["      </version>", "    </reapack>", "  </category>", "</index>", ""]
    return "\n".join(lines)
