"""The ``maedaw`` command: every job the DAW can ask for, offline.

Each command group lives in a module of its own that registers its parsers with
``register(commands)`` and keeps heavy imports (torch ...) inside its command functions, so
``maedaw --help`` stays fast. :func:`main` turns any :class:`MaedawError` into one
``error:`` line and exit code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rich.logging import RichHandler

from maedaw.core.errors import MaedawError

from . import audio, batch, bench, corpus, daemon, daws, models, tag, train
from .output import JsonLogFormatter, fail, stderr

# In the order ``maedaw --help`` lists them.
GROUPS = (audio, daemon, train, corpus, models, daws, bench, tag, batch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maedaw", description="Audio-MAE for the DAW: find and repair damaged audio."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(commands)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    if args.command == "serve":
        # A daemon's log is read by journald/files: plain lines, lifecycle at INFO.
        level = logging.INFO - 10 * min(args.verbose, 1)
        handler = logging.StreamHandler()
        handler.setFormatter(
            JsonLogFormatter()
            if args.log_json
            else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        logging.basicConfig(level=level, handlers=[handler])
    else:
        level = logging.WARNING - 10 * min(args.verbose, 2)
        handler = RichHandler(console=stderr, show_path=False)
        logging.basicConfig(level=level, format="%(message)s", handlers=[handler])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    _configure_logging(args)
    try:
        return args.run(args)
    except MaedawError as exc:
        return fail(exc)
    except KeyboardInterrupt:
        stderr.print("interrupted")
        return 130
