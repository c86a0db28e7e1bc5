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
import textwrap
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
# What reapack-index (cfillion/reapack-index) would write for these files: the package is the
# main script; its ``@description`` is the package's ``desc``; its ``@about`` (Markdown) becomes
# the ``<description>``, which ReaPack's About tab loads as **RTF** (reapack-index converts with
# pandoc; on Windows and macOS anything else shows "Could not load RTF document"); its
# ``@provides`` lines are the package's other files, ``[main]`` ones registered as actions.

_TAG = re.compile(r"^--\s*@(\w+)\s*(.*)$")


def reapack_headers(path: Path) -> dict[str, str]:
    """The ``-- @tag value`` header block at the top of a script. A tag with no value on its
    line takes the comment lines below it up to the next tag, dedented, blank lines kept (as
    reapack-index reads ``@about`` and ``@provides``)."""
    tags: dict[str, str] = {}
    block: dict[str, list[str]] = {}
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("--"):
            break
        match = _TAG.match(line)
        if match:
            current = match.group(1)
            tags[current] = match.group(2).strip()
            block[current] = []
        elif current is not None and not tags[current]:
            block[current].append(line[2:])
    for tag, lines in block.items():
        if not tags[tag] and lines:
            tags[tag] = textwrap.dedent("\n".join(lines)).strip("\n")
    return tags


def provides(tags: dict[str, str]) -> list[tuple[str, bool]]:
    """(file, registered as an action) for each ``@provides`` line: ``[main]`` or ``[nomain]``."""
    files = []
    for line in tags.get("provides", "").splitlines():
        match = re.fullmatch(r"\s*(?:\[\s*(\w+)\s*\])?\s*(.+?)\s*", line)
        if match and match.group(2):
            files.append((match.group(2), match.group(1) == "main"))
    return files


_RTF_INLINE = re.compile(r"\\([!-/:-@\[-`{-~])|`([^`]+)`|\*\*(.+?)\*\*|\*(.+?)\*")
# pandoc's fallbacks after \uN for a reader without Unicode: these ASCII look-alikes, else "?"
_RTF_FALLBACK = {"\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"'}
_RTF_FALLBACK["\u201d"] = '"'


def _rtf_text(text: str) -> str:
    """Plain text as RTF the way pandoc writes it: \\ { } escaped, anything past ASCII as
    \\uN and a fallback (UTF-16 units, unsigned: what pandoc writes and RichEdit reads)."""
    out = []
    for char in text:
        if char in "\\{}":
            out.append("\\" + char)
        elif ord(char) <= 127:
            out.append(char)
        elif char in _RTF_FALLBACK:
            out.append(f"\\u{ord(char)}{_RTF_FALLBACK[char]}")
        else:
            units = char.encode("utf-16-be")
            for k in range(0, len(units), 2):
                out.append(f"\\u{int.from_bytes(units[k : k + 2], 'big')} ?")
    return "".join(out)


def _rtf_inline(text: str) -> str:
    """A paragraph's Markdown spans: \\-escapes, `code` in the fixed font, **bold**, *italic*."""
    parts, pos = [], 0
    for match in _RTF_INLINE.finditer(text):
        parts.append(_rtf_text(text[pos : match.start()]))
        escaped, code, bold, italic = match.groups()
        if escaped is not None:
            parts.append(_rtf_text(escaped))
        elif code is not None:
            parts.append("{\\f1 " + _rtf_text(code) + "}")
        elif bold is not None:
            parts.append("{\\b " + _rtf_text(bold) + "}")
        else:
            parts.append("{\\i " + _rtf_text(italic) + "}")
        pos = match.end()
    parts.append(_rtf_text(text[pos:]))
    return "".join(parts)


def _markdown_blocks(markdown: str) -> list[tuple[str, str]]:
    """(kind, text) per block: "h1".."h3" headings, "item" (a ``-``/``*`` list item, its
    indented lines joined), "para" (lines up to a blank line, joined)."""
    blocks: list[tuple[str, str]] = []
    open_block = False  # the last block takes more lines
    for raw in markdown.strip().splitlines():
        line = raw.strip()
        heading = re.match(r"(#{1,3})\s+(.*)", line)
        if not line:
            open_block = False
        elif heading:
            blocks.append((f"h{len(heading.group(1))}", heading.group(2)))
            open_block = False
        elif line.startswith(("- ", "* ")):
            blocks.append(("item", line[2:]))
            open_block = True
        elif open_block and (blocks[-1][0] == "para" or raw[:1].isspace()):
            blocks[-1] = (blocks[-1][0], blocks[-1][1] + " " + line)
        else:
            blocks.append(("para", line))
            open_block = True
    return blocks


_RTF_BLOCK = {
    "para": "{\\pard \\ql \\f0 \\sa180 \\li0 \\fi0 %s\\par}",
    "item": "{\\pard \\ql \\f0 \\sa0 \\li360 \\fi-360 \\bullet \\tx360\\tab %s\\par}",
    "h1": "{\\pard \\ql \\f0 \\sa180 \\li0 \\fi0 \\outlinelevel0 \\b \\fs36 %s\\par}",
    "h2": "{\\pard \\ql \\f0 \\sa180 \\li0 \\fi0 \\outlinelevel1 \\b \\fs32 %s\\par}",
    "h3": "{\\pard \\ql \\f0 \\sa180 \\li0 \\fi0 \\outlinelevel2 \\b \\fs28 %s\\par}",
}


def about_rtf(markdown: str) -> str:
    """``@about`` Markdown as the RTF document ReaPack shows, in the layout pandoc's RTF writer
    gives (what reapack-index runs): headings, paragraphs and ``-`` list items, with `code`,
    **bold** and *italic* spans. Other Markdown is kept as text."""
    parsed = _markdown_blocks(markdown)
    blocks = []
    for n, (kind, text) in enumerate(parsed):
        block = _RTF_BLOCK[kind] % _rtf_inline(text)
        if kind == "item" and (n + 1 == len(parsed) or parsed[n + 1][0] != "item"):
            block = block[: -len("\\par}")] + "\\sa180\\par}"  # space after the list
        blocks.append(block)
    return (
        "{\\rtf1\\ansi\\deff0{\\fonttbl{\\f0 \\fswiss Helvetica;}{\\f1 \\fmodern Courier;}}\n"
        "{\\colortbl;\\red255\\green0\\blue0;\\red0\\green0\\blue255;}\n"
        "\\widowctrl\\hyphauto\n\n" + "\n".join(blocks) + "\n}\n"
    )


MAIN_PACKAGE = "maedaw_Repair dropouts in selected items.lua"


def package_files(source: Path) -> list[tuple[str, bool]]:
    """(file, is an action) for every file of the ReaPack package: the main script, then its
    ``@provides``; every .lua in ``source`` must be there exactly once, and nothing else."""
    tags = reapack_headers(source / MAIN_PACKAGE)
    files = [(MAIN_PACKAGE, True), *provides(tags)]
    names = [name for name, _ in files]
    on_disk = sorted(p.name for p in source.glob("*.lua"))
    if sorted(names) != on_disk:
        missing = sorted(set(on_disk) - set(names))
        extra = sorted(set(names) - set(on_disk))
        twice = sorted({n for n in names if names.count(n) > 1})
        raise InstallError(
            f"{MAIN_PACKAGE}'s @provides does not match the folder: not provided {missing}, "
            f"not there {extra}, provided twice {twice}"
        )
    for name, main in files:
        if main == (name in LIBRARIES):
            raise InstallError(f"@provides: {name} must be {'[nomain]' if main else '[main]'}")
    return files


def reapack_index(source: Path, base_url: str = DEFAULT_BASE_URL) -> str:
    """ReaPack ``index.xml`` text: one package (the repair action's file, whose ``@provides``
    lists the other actions and the libraries), so no two packages provide the same file."""
    base = base_url.rstrip("/")
    main = source / MAIN_PACKAGE
    tags = reapack_headers(main)
    for tag in ("version", "description", "about"):
        if not tags.get(tag):
            raise InstallError(f"{main.name} has no @{tag} header")
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<index version="1" name="maedaw">',
        f"  <category name={quoteattr(PACKAGE)}>",
        f'    <reapack name={quoteattr(main.name)} type="script" '
        f"desc={quoteattr(tags['description'])}>",
        f"      <metadata><description><![CDATA[{about_rtf(tags['about'])}]]></description>"
        "</metadata>",
        f"      <version name={quoteattr(tags['version'])} "
        f"author={quoteattr(tags.get('author', 'maedaw'))}>",
    ]
    if tags.get("changelog"):
        lines.append(f"        <changelog><![CDATA[{tags['changelog']}]]></changelog>")
    for name, is_action in sorted(package_files(source)):
        url = escape(f"{base}/{PACKAGE}/{name}".replace(" ", "%20"))
        main_attr = ' main="main"' if is_action else ""
        lines.append(f"        <source{main_attr} file={quoteattr(name)}>{url}</source>")
    lines += ["      </version>", "    </reapack>", "  </category>", "</index>", ""]
    return "\n".join(lines)
