"""``maedaw install-ardour``: copy the Ardour scripts into Ardour's script folder.

Ardour lists the ``.lua`` files at the top of its script folder (``~/.config/ardour7/scripts``
on Linux, ``~/Library/Preferences/Ardour7/scripts`` on macOS) and does not look into
subfolders. We copy the three editor actions (``ardour_scripts/*.lua``) there, their library
(``ardour_scripts/maedaw/*.lua``) to ``scripts/maedaw/``, and beside it the wire the library
shares with the REAPER scripts, ``maedaw_osc.lua`` (kept once, in ``reaper_scripts/maedaw/``).
Running it again changes nothing; a file it does change is first copied to
``<name>.maedaw-backup-<UTC time>`` (as ``maedaw install-reaper`` does).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from maedaw.bridge.reaper_install import WIRE, Copies, InstallError, copy_file, scripts_source

log = logging.getLogger(__name__)

LIBRARY_FOLDER = "maedaw"  # under the script folder: the library, not listed as scripts


@dataclass
class ArdourInstallReport(Copies):
    scripts_dir: Path

    def to_dict(self) -> dict:
        files = {name: self.paths(name) for name in ("copied", "unchanged", "backups")}
        return {"scripts_dir": str(self.scripts_dir), **files}


def default_scripts_dir(platform: str | None = None, env: dict | None = None) -> Path:
    """Ardour 7's user script folder on this platform."""
    platform = platform or sys.platform
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    if platform.startswith("win"):
        raise InstallError("maedaw for Ardour runs on Linux and macOS only")
    if platform == "darwin":
        return home / "Library" / "Preferences" / "Ardour7" / "scripts"
    config = env.get("XDG_CONFIG_HOME")
    return (Path(config) if config else home / ".config") / "ardour7" / "scripts"


def ardour_source() -> Path:
    """The repository's ``ardour_scripts`` folder (package data, or a source checkout)."""
    candidates = []
    spec = importlib.util.find_spec("maedaw.ardour_scripts")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidates.append(Path(location))
    candidates.append(Path(__file__).resolve().parents[1] / "ardour_scripts")
    for folder in candidates:
        if (folder / LIBRARY_FOLDER / "maedaw_lib.lua").is_file():
            return folder
    raise InstallError(
        "the Ardour scripts were not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); run from a clone of the repository"
    )


def install(
    scripts_dir: Path, source: Path | None = None, wire: Path | None = None
) -> ArdourInstallReport:
    """Copy the actions, their library and the shared wire into ``scripts_dir``, idempotently."""
    source = source or ardour_source()
    wire = wire or scripts_source() / WIRE
    scripts_dir = scripts_dir.expanduser()
    report = ArdourInstallReport(scripts_dir)
    library = scripts_dir / LIBRARY_FOLDER
    library.mkdir(parents=True, exist_ok=True)
    for action in sorted(source.glob("*.lua")):
        copy_file(action, scripts_dir / action.name, report)
    for script in sorted((source / LIBRARY_FOLDER).glob("*.lua")):
        copy_file(script, library / script.name, report)
    copy_file(wire, library / WIRE, report)
    log.info("installed into %s", scripts_dir)
    return report
