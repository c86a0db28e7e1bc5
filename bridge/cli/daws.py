"""The DAWs' side: install the REAPER and Ardour scripts, and the raw OSC helper REAPER's scripts
call when LuaSocket is missing (``send``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .output import emit_json, stdout


def cmd_install_reaper(args: argparse.Namespace) -> int:
    from maedaw.bridge.reaper_install import (
        DEFAULT_BASE_URL,
        default_resource_path,
        install,
        reapack_index,
        scripts_source,
    )

    if args.write_index:
        text = reapack_index(scripts_source(), args.base_url or DEFAULT_BASE_URL)
        args.write_index.write_text(text, encoding="utf-8")
        stdout.print(f"wrote {args.write_index}")
        return 0
    report = install(args.resource_path or default_resource_path())
    if args.json:
        emit_json(report.to_dict())
        return 0
    stdout.print(f"REAPER resource path: {report.resource_path}", soft_wrap=True)
    stdout.print(f"scripts: {len(report.copied)} copied, {len(report.unchanged)} unchanged")
    for name in report.registered:
        stdout.print(f"registered action: {name}")
    for backup in report.backups:
        stdout.print(f"backup: {backup}", soft_wrap=True)
    if report.registered:
        stdout.print(
            "Restart REAPER (install while it is closed: it rewrites reaper-kb.ini on exit)."
        )
    return 0


def cmd_install_ardour(args: argparse.Namespace) -> int:
    from maedaw.bridge.ardour_install import default_scripts_dir, install

    report = install(args.scripts_dir or default_scripts_dir())
    if args.json:
        emit_json(report.to_dict())
        return 0
    # soft_wrap: a path is never broken across lines (scripts and tests read it back)
    stdout.print(f"Ardour script folder: {report.scripts_dir}", soft_wrap=True)
    stdout.print(f"scripts: {len(report.copied)} copied, {len(report.unchanged)} unchanged")
    for backup in report.backups:
        stdout.print(f"backup: {backup}", soft_wrap=True)
    stdout.print(
        "In Ardour: Edit > Lua Scripts > Script Manager > Action Scripts, add the maedaw actions.",
        soft_wrap=True,
    )
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from maedaw.bridge.auth import client_token
    from maedaw.bridge.send import send_and_collect

    packets = [Path(p).read_bytes() for p in args.packets]
    for path in args.packets:  # the helper owns its packet files once started
        Path(path).unlink(missing_ok=True)
    token = client_token(args.token_file)
    send_and_collect(args.host, args.port, packets, args.replies, args.timeout, token=token)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    reaper = commands.add_parser(
        "install-reaper", help="install the REAPER scripts and register their actions"
    )
    reaper.add_argument(
        "--resource-path",
        type=Path,
        help="REAPER's resource path (default: the standard one for this system)",
    )
    reaper.add_argument(
        "--write-index", type=Path, metavar="FILE", help="only write the ReaPack index.xml"
    )
    reaper.add_argument("--base-url", help="where the scripts are published (for --write-index)")
    reaper.add_argument("--json", action="store_true")
    reaper.set_defaults(run=cmd_install_reaper)

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

    send = commands.add_parser(
        "send", help="send raw OSC packets, write replies as hex lines (REAPER helper)"
    )
    send.add_argument("packets", nargs="+", metavar="PACKET_FILE")
    send.add_argument("--host", default="127.0.0.1")
    send.add_argument("--port", type=int, default=9000)
    send.add_argument("--replies", type=Path, required=True, help="file the replies go to")
    send.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for replies")
    send.add_argument(
        "--token-file",
        type=Path,
        help="sign unsigned packets with this token (default: $MAEDAW_TOKEN, else the local "
        "daemon's token file)",
    )
    send.set_defaults(run=cmd_send)
