"""The ``maedaw`` command: every job the DAW can ask for, offline."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from maedaw.dsp.audio_io import AudioError

log = logging.getLogger("maedaw")
stderr = Console(stderr=True)
stdout = Console()


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Callable[[float, str], None]]:
    """A ``progress(fraction, stage)`` callback drawing a bar on stderr."""
    if not enabled:
        yield lambda fraction, stage: None
        return
    columns = (TextColumn("{task.description:<12}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task("starting", total=1.0)

        def update(fraction: float, stage: str) -> None:
            bar.update(task, completed=min(1.0, fraction), description=stage)

        yield update


def _emit_json(payload: dict) -> None:
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def _span_table(title: str, rows: Sequence[dict], with_method: bool) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("ch", "kind", "start s", "ms", "conf"):
        table.add_column(name, justify="right" if name != "kind" else "left")
    if with_method:
        table.add_column("method")
        table.add_column("why", overflow="fold")
    for row in rows:
        cells = [
            str(row["channel"] + 1),
            row["kind"],
            f"{row['start_s']:.4f}",
            f"{row['duration_ms']:.1f}",
            f"{row['confidence']:.2f}",
        ]
        if with_method:
            cells += [row["method"], row["reason"]]
        table.add_row(*cells)
    return table


def cmd_info(args: argparse.Namespace) -> int:
    from maedaw.dsp.audio_io import probe

    info = probe(args.file).to_dict()
    if args.json:
        _emit_json(info)
    else:
        for key, value in info.items():
            stdout.print(f"[bold]{key:>14}[/] {value}")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from maedaw.dsp.scan import scan_file

    with progress_bar(not args.json and not args.quiet) as progress:
        report = scan_file(args.file, args.start, args.end, progress=progress)
    payload = report.to_dict()
    if args.json:
        _emit_json(payload)
    elif not args.quiet:
        counts = ", ".join(f"{n} {k}" for k, n in payload["counts"].items())
        title = f"{args.file}: {len(report.spans)} damaged spans ({counts})"
        stdout.print(_span_table(title, payload["spans"], with_method=False))
    return 0


def _default_output(source: Path, job: str) -> Path:
    return source.with_name(f"{source.stem}.maedaw-{job}.wav")


def cmd_repair(args: argparse.Namespace) -> int:
    from maedaw.dsp.repair import repair_file

    output = args.output or _default_output(Path(args.file), "repair")
    spans = None if args.spans in (None, "auto") else args.spans
    with progress_bar(not args.json) as progress:
        report = repair_file(
            args.file,
            output,
            args.start,
            args.end,
            spans,
            progress=progress,
            overwrite=args.overwrite,
        )
    if args.plot:
        from maedaw.dsp.plot import plot_repair

        plot_repair(report, args.plot)
    payload = report.to_dict()
    if args.plot:
        payload["plot"] = str(args.plot)
    if args.json:
        _emit_json(payload)
    else:
        title = f"{args.file} -> {output}: {payload['repaired']} spans repaired"
        stdout.print(_span_table(title, payload["spans"], with_method=True))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from maedaw.bridge.demo import run_demo

    with progress_bar(not args.json) as progress:
        summary = run_demo(args.out, args.input, seed=args.seed, progress=progress)
    if args.json:
        _emit_json(summary)
        return 0
    table = Table(title=f"demo: {summary['damaged']} -> {summary['repaired']}")
    columns = ("ch", "kind", "start s", "ms", "found", "method", "SNR before", "SNR after")
    for name in columns:
        table.add_column(name)
    for row in summary["truth"]:
        table.add_row(
            str(row["channel"] + 1),
            row["kind"],
            f"{row['start_s']:.3f}",
            f"{row['duration_ms']:.1f}",
            "yes" if row["found"] else "[red]no[/]",
            row["method"],
            f"{row['damaged_snr_db']:.1f} dB",
            f"{row['repair_snr_db']:.1f} dB",
        )
    stdout.print(table)
    stdout.print(
        f"found {summary['recall']:.0%} of the inserted damage, "
        f"{summary['false_positives']} false alarms; "
        f"median gap SNR {summary['median_repair_snr_db']:.1f} dB "
        f"(zero-fill {summary['median_zero_fill_snr_db']:.1f} dB)"
    )
    stdout.print(f"before/after picture: {summary['plot']}")
    return 0


def cmd_bench_scan(args: argparse.Namespace) -> int:
    from maedaw.bridge.bench import bench_scan

    result = bench_scan(args.minutes, args.rate, args.channels, keep=args.keep)
    if args.json:
        _emit_json(result)
    else:
        stdout.print(
            f"scanned {result['audio_minutes']:.0f} min of {result['rate']} Hz × "
            f"{result['channels']} ch in {result['seconds']:.1f} s: "
            f"[bold]{result['x_realtime']:.0f}× real time[/], peak RSS "
            f"[bold]{result['peak_rss_mb']:.0f} MB[/] (target ≥ 300×, ≤ 1024 MB)"
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from maedaw.bridge.server import Daemon, ServeConfig, ServeError

    config = ServeConfig(
        host=args.host,
        port=args.port,
        allow_remote=args.allow_remote,
        roots=tuple(args.allow_root or ()),
        max_queue=args.max_queue,
        job_timeout_s=args.job_timeout,
        tcp=not args.no_tcp,
        models_dir=args.models_dir,
        **({"state_dir": args.state_dir} if args.state_dir else {}),
    )
    try:
        daemon = Daemon(config)
    except ServeError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    daemon.start()
    # One machine-readable line, so scripts and tests know the daemon is up.
    sys.stderr.write(f"maedaw serve listening on {config.host}:{daemon.port}\n")
    sys.stderr.flush()
    stop.wait()
    daemon.shutdown(grace_s=args.grace)
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    from maedaw.bridge.service import launchd_plist, systemd_unit

    text = systemd_unit(args.port) if args.kind == "systemd" else launchd_plist(args.port)
    sys.stdout.write(text)
    return 0


def cmd_bench_osc(args: argparse.Namespace) -> int:
    from maedaw.bridge.bench import bench_osc

    result = bench_osc(args.pings)
    if args.json:
        _emit_json(result)
        return 0
    for name in ("ping_idle", "ping_during_repair"):
        r = result[name]
        stdout.print(
            f"{name:>20}: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
            f"max {r['max_ms']:.2f} ms over {r['n']} pings (target p99 ≤ 5 ms)"
        )
    stdout.print(
        f"{'request → stem':>20}: {result['request_to_stem_s']:.2f} s ({result['region']})"
    )
    if result["hot_swap_s"] is not None:
        stdout.print(
            f"{'hot swap':>20}: {result['hot_swap_s']:.2f} s from copy to serving a compact "
            f"checkpoint ({result['hot_swap_debounce_s']:.1f} s of it is the copy debounce)"
        )
    return 0


def _add_region(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", type=float, help="region start, seconds into the file")
    parser.add_argument("--end", type=float, help="region end, seconds into the file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maedaw", description="Audio-MAE for the DAW: find and repair damaged audio."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="describe an audio file")
    info.add_argument("file")
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=cmd_info)

    detect = commands.add_parser("detect", help="find dropouts, level drops, clicks and clipping")
    detect.add_argument("file")
    _add_region(detect)
    detect.add_argument("--json", action="store_true", help="print the report as JSON")
    detect.add_argument("-q", "--quiet", action="store_true", help="no table, no progress")
    detect.set_defaults(run=cmd_detect)

    repair = commands.add_parser("repair", help="repair a region and write a stem")
    repair.add_argument("file")
    repair.add_argument("-o", "--output", type=Path, help="stem path (.wav or .flac)")
    _add_region(repair)
    repair.add_argument(
        "--spans",
        default="auto",
        help="'auto' (detect) or START:END[,START:END...] in seconds, on every channel",
    )
    repair.add_argument("--plot", type=Path, help="write a before/after PNG here")
    repair.add_argument("--overwrite", action="store_true", help="replace an existing output")
    repair.add_argument("--json", action="store_true", help="print the report as JSON")
    repair.set_defaults(run=cmd_repair)

    demo = commands.add_parser("demo", help="damage a clip, repair it, and score the result")
    demo.add_argument("--out", type=Path, default=Path("maedaw-demo"), help="output folder")
    demo.add_argument("--input", type=Path, help="your own clip (default: a synthesised one)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(run=cmd_demo)

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
        "--models-dir",
        type=Path,
        help="checkpoints watched and hot-reloaded (default: STATE_DIR/models)",
    )
    serve.set_defaults(run=cmd_serve)

    service = commands.add_parser("service", help="print a systemd unit or launchd plist")
    service.add_argument("kind", choices=["systemd", "launchd"])
    service.add_argument("--port", type=int, default=9000)
    service.set_defaults(run=cmd_service)

    bench = commands.add_parser("bench", help="benchmarks")
    suites = bench.add_subparsers(dest="suite", required=True, metavar="SUITE")
    scan = suites.add_parser("scan", help="detection speed and memory on a long synthetic file")
    scan.add_argument("--minutes", type=float, default=60.0)
    scan.add_argument("--rate", type=int, default=48_000)
    scan.add_argument("--channels", type=int, default=2)
    scan.add_argument("--keep", type=Path, help="keep the synthetic file here")
    scan.add_argument("--json", action="store_true")
    scan.set_defaults(run=cmd_bench_scan)
    osc = suites.add_parser("osc", help="daemon ping latency and request-to-stem time")
    osc.add_argument("--pings", type=int, default=500)
    osc.add_argument("--json", action="store_true")
    osc.set_defaults(run=cmd_bench_osc)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        # A daemon's log is read by journald/files: plain lines, lifecycle at INFO.
        level = logging.INFO - 10 * min(args.verbose, 1)
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    else:
        level = logging.WARNING - 10 * min(args.verbose, 2)
        handler = RichHandler(console=stderr, show_path=False)
        logging.basicConfig(level=level, format="%(message)s", handlers=[handler])
    try:
        return args.run(args)
    except AudioError as exc:
        # One plain line (no wrapping, no markup): scripts and the DAW parse it.
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        stderr.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
