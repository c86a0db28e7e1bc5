"""The OSC daemon's commands: serve (in the foreground or detached), stop, service files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maedaw.bridge.transport import MAX_TCP_CONNECTIONS, TCP_IDLE_S


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from maedaw.bridge.lifecycle import LISTENING
    from maedaw.bridge.server import Daemon, ServeConfig

    if args.detach:
        return _serve_detached(args)
    config = ServeConfig(
        host=args.host,
        port=args.port,
        allow_remote=args.allow_remote,
        roots=tuple(args.allow_root or ()),
        max_queue=args.max_queue,
        job_timeout_s=args.job_timeout,
        tcp=not args.no_tcp,
        models_dir=args.models_dir,
        max_connections=args.max_connections,
        tcp_idle_s=args.tcp_idle,
        **({"state_dir": args.state_dir} if args.state_dir else {}),
    )
    daemon = Daemon(config)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    daemon.start()
    # One machine-readable line, so scripts and tests know the daemon is up.
    sys.stderr.write(f"{LISTENING} {config.host}:{daemon.port}\n")
    sys.stderr.flush()
    stop.wait()
    daemon.shutdown(grace_s=args.grace)
    return 0


def _state_dir(args: argparse.Namespace) -> Path:
    from maedaw.bridge.server import ServeConfig

    return args.state_dir or ServeConfig().state_dir


def _serve_detached(args: argparse.Namespace) -> int:
    from maedaw.bridge.lifecycle import start_detached

    if args.port == 0:
        sys.stderr.write("error: --detach needs a fixed --port (0 would pick one at random)\n")
        return 2
    serve_args = [a for a in args.argv[1:] if a != "--detach"]
    state_dir = _state_dir(args)
    pid = start_detached(serve_args, state_dir, args.host, args.port)
    sys.stderr.write(
        f"maedaw serve running in the background (pid {pid}) on {args.host}:{args.port}; "
        f"log: {state_dir / 'serve.log'}; stop it with: maedaw stop\n"
    )
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from maedaw.bridge.lifecycle import stop

    pid = stop(_state_dir(args), wait_s=args.wait)
    sys.stderr.write("no maedaw daemon is running\n" if pid is None else f"stopped pid {pid}\n")
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    from maedaw.bridge.service import launchd_plist, systemd_unit

    text = systemd_unit(args.port) if args.kind == "systemd" else launchd_plist(args.port)
    sys.stdout.write(text)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run the OSC daemon (see docs/osc.md)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=9000, help="UDP and TCP port (0: any)")
    serve.add_argument("--state-dir", type=Path, help="journal and lock folder")
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (anyone who can reach it can queue jobs)",
    )
    serve.add_argument(
        "--allow-root",
        action="append",
        type=Path,
        metavar="DIR",
        help="only read and write under these folders (repeatable)",
    )
    serve.add_argument("--max-queue", type=int, default=16, help="queued jobs before 'busy'")
    serve.add_argument("--job-timeout", type=float, default=600.0, help="seconds per job")
    serve.add_argument(
        "--grace", type=float, default=10.0, help="seconds a running job gets to finish on shutdown"
    )
    serve.add_argument("--no-tcp", action="store_true", help="UDP only")
    serve.add_argument(
        "--max-connections",
        type=int,
        default=MAX_TCP_CONNECTIONS,
        help="open TCP connections; more are closed at once",
    )
    serve.add_argument(
        "--tcp-idle",
        type=float,
        default=TCP_IDLE_S,
        help="seconds before a TCP connection with no traffic and no job pending is closed",
    )
    serve.add_argument(
        "--detach",
        action="store_true",
        help="start in the background (log in STATE_DIR/serve.log); returns once it answers",
    )
    serve.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    serve.add_argument(
        "--models-dir",
        type=Path,
        help="checkpoints watched and hot-reloaded (default: STATE_DIR/models)",
    )
    serve.set_defaults(run=cmd_serve)

    stop = commands.add_parser("stop", help="stop the background daemon (SIGTERM, then wait)")
    stop.add_argument("--state-dir", type=Path, help="the daemon's state folder")
    stop.add_argument("--wait", type=float, default=30.0, help="seconds to wait for it to exit")
    stop.set_defaults(run=cmd_stop)

    service = commands.add_parser("service", help="print a systemd unit or launchd plist")
    service.add_argument("kind", choices=["systemd", "launchd"])
    service.add_argument("--port", type=int, default=9000)
    service.set_defaults(run=cmd_service)
