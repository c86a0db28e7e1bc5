"""The ``maedaw install-ardour`` command (its work is maedaw.bridge.ardour_install)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_install_ardour(args: argparse.Namespace) -> int:
    from maedaw.bridge.ardour_install import InstallError, default_scripts_dir, install

    try:
        report = install(args.scripts_dir or default_scripts_dir())
    except InstallError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
        return 0
    lines = [
        f"Ardour script folder: {report.scripts_dir}",
        f"scripts: {len(report.copied)} copied, {len(report.unchanged)} unchanged",
        *(f"backup: {backup}" for backup in report.backups),
        "In Ardour: Edit > Lua Scripts > Script Manager > Action Scripts, add the maedaw actions.",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Adds ``install-ardour`` to the ``maedaw`` command line."""
    ardour = commands.add_parser(
        "install-ardour", help="copy the Ardour scripts into Ardour's script folder"
    )
    ardour.add_argument(
        "--scripts-dir",
        type=Path,
        metavar="DIR",
        help="Ardour's script folder (default: ~/.config/ardour7/scripts, on macOS "
        "~/Library/Preferences/Ardour7/scripts)",
    )
    ardour.add_argument("--json", action="store_true")
    ardour.set_defaults(run=cmd_install_ardour)
