"""The OSC daemon's commands: serve (in the foreground or detached), stop, status (of a local
or remote daemon), token, service files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maedaw.bridge.transport import MAX_TCP_CONNECTIONS, TCP_IDLE_S


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from maedaw.bridge.lifecycle import LISTENING
    from maedaw.bridge.paths import MapError, PathMap, default_config_file, read_config
    from maedaw.bridge.server import Daemon, ServeConfig

    if args.detach:
        return _serve_detached(args)
    roots, maps = list(args.allow_root or ()), []
    config_file = args.config or default_config_file()
    if args.config or config_file.exists():
        try:
            file_roots, maps = read_config(config_file)
        except MapError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
        roots = roots or file_roots  # folders on the command line replace the file's
    maps += args.map or []
    try:
        PathMap.parse(maps)
    except MapError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    config = ServeConfig(
        host=args.host,
        port=args.port,
        allow_remote=args.allow_remote,
        roots=tuple(roots),
        path_map=tuple(maps),
        token=not args.no_token,
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


def cmd_status(args: argparse.Namespace) -> int:
    """Every job and the counters of a daemon, local or ``--remote HOST[:PORT]`` (over TCP:
    the whole list in one reply), signed with the token."""
    import json

    from maedaw.bridge.auth import AuthError, client_token
    from maedaw.bridge.client import ClientError, host_port, request_tcp

    try:
        host, port = host_port(args.remote or "127.0.0.1", args.port)
        token = client_token(args.token_file, args.state_dir)
        params = request_tcp(host, port, "/maedaw/status", [""], token)
    except (AuthError, ClientError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    if len(params) == 4:  # an /maedaw/error: client, job, code, message
        sys.stderr.write(f"error: {params[2]}: {params[3]}\n")
        return 1
    status = json.loads(params[1])
    if args.json:
        sys.stdout.write(json.dumps(status, indent=2) + "\n")
        return 0
    daemon, jobs = status["daemon"], status["jobs"]
    states: dict[str, int] = {}
    for job in jobs:
        states[job["state"]] = states.get(job["state"], 0) + 1
    lines = [
        f"maedaw daemon at {host}:{port}: {daemon['contract']}, model "
        f"{daemon['model'] or '(none)'}, token {'required' if daemon.get('token') else 'OFF'}",
        f"jobs: {status['total']} ("
        + (", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none")
        + ")",
    ]
    for client, queued in daemon.get("queued_by_client", {}).items():
        lines.append(f"  queued for {client}: {queued}")
    counters = ("busy_replies", "forbidden", "dropped_packets", "kernel_drops", "send_errors")
    lines.append(", ".join(f"{name} {daemon.get(name)}" for name in counters))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Print the daemon's token (created if there is none yet), to give a studio client."""
    from maedaw.bridge.auth import AuthError, ensure_token

    try:
        sys.stdout.write(ensure_token(_state_dir(args)) + "\n")
    except (AuthError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
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
        help="allow a non-loopback --host: a studio server (every client must sign with the "
        "token, see `maedaw token`; each client host is logged)",
    )
    serve.add_argument(
        "--no-token",
        action="store_true",
        help="accept unsigned requests (loopback only; any local user can then use the daemon)",
    )
    serve.add_argument(
        "--map",
        action="append",
        metavar="CLIENT=SERVER",
        help="path map: a client path prefix and the same folder here (repeatable; also [map] "
        "in the config file); stems in replies go back in the client's names",
    )
    serve.add_argument(
        "--config",
        type=Path,
        help="TOML file with roots and [map] (default: serve.toml in the user config folder)",
    )
    serve.add_argument(
        "--allow-root",
        action="append",
        type=Path,
        metavar="DIR",
        help="only read and write under these folders (repeatable; default: the config "
        "file's roots, else your home folder)",
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

    status = commands.add_parser("status", help="jobs and counters of a local or remote daemon")
    status.add_argument("--remote", metavar="HOST[:PORT]", help="a studio daemon (default: here)")
    status.add_argument("--port", type=int, default=9000, help="port when --remote names none")
    status.add_argument(
        "--token-file", type=Path, help="the daemon's token (default: $MAEDAW_TOKEN, else local)"
    )
    status.add_argument("--state-dir", type=Path, help="the local daemon's state folder")
    status.add_argument("--json", action="store_true", help="the status JSON as it came")
    status.set_defaults(run=cmd_status)

    token = commands.add_parser("token", help="print the daemon's token (for studio clients)")
    token.add_argument("--state-dir", type=Path, help="the daemon's state folder")
    token.set_defaults(run=cmd_token)

    service = commands.add_parser("service", help="print a systemd unit or launchd plist")
    service.add_argument("kind", choices=["systemd", "launchd"])
    service.add_argument("--port", type=int, default=9000)
    service.set_defaults(run=cmd_service)
