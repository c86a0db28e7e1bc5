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

from maedaw.bridge import cli_ardour, cli_train
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


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, for log collectors (``maedaw serve --log-json``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


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
    from maedaw.bridge.inpainters import load_inpainter
    from maedaw.dsp.repair import repair_file

    output = args.output or _default_output(Path(args.file), "repair")
    spans = None if args.spans in (None, "auto") else args.spans
    inpainter = load_inpainter(args.model)  # "none": AR only
    with progress_bar(not args.json) as progress:
        report = repair_file(
            args.file,
            output,
            args.start,
            args.end,
            spans,
            progress=progress,
            overwrite=args.overwrite,
            inpainter=inpainter,
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


def cmd_restore(args: argparse.Namespace) -> int:
    from maedaw.dsp.restore import OptionError, restore_file

    options = {}
    for item in args.option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise OptionError(f"--option {item!r} is not KEY=VALUE")
        options[key.strip()] = value.strip()
    output = args.output or _default_output(Path(args.file), args.op)
    with progress_bar(not args.json) as progress:
        report = restore_file(
            args.file, output, args.start, args.end, args.op, options, progress, args.overwrite
        )
    payload = report.to_dict()
    if args.json:
        _emit_json(payload)
    else:
        stdout.print(f"{args.file} -> {output}: [bold]{args.op}[/] {payload['reason']}")
        stdout.print(f"changed: {payload['what_changed']} ({payload['changed_samples']} samples)")
    return 0


def cmd_bench_restore(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.restore import bench_restore

    with progress_bar(not args.json) as progress:
        result = bench_restore(
            args.data,
            args.out,
            ops=args.ops,
            max_clips=args.max_clips,
            seconds=args.seconds,
            dnsmos=not args.no_dnsmos,
            progress=progress,
        )
    if args.json:
        _emit_json(result)
    else:
        stdout.print(result["markdown"])
        stdout.print(f"table: {result['json']}  plot: {result['plot']}")
    return 0


def cmd_bench_repair(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.repair import BenchRepairConfig, bench_repair, plot, render_table
    from maedaw.bridge.inpainters import load_inpainter

    config = BenchRepairConfig(
        gaps_ms=tuple(args.gaps),
        seed=args.seed,
        max_clips=args.max_clips,
        plcmos=not args.no_plcmos,
        channel=not args.no_channel,
        speed=not args.no_speed,
    )
    model = load_inpainter(args.model)
    with progress_bar(not args.json) as progress:
        result = bench_repair(args.data, model, config, progress, args.model or "compact-default")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-repair.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "bench-repair.png")
    if args.json:
        _emit_json(result)
    else:
        stdout.print(render_table(result))
        stdout.print(f"written: {args.out / 'bench-repair.json'}, {args.out / 'bench-repair.png'}")
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
    from maedaw.benchmarks.scan import bench_scan

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


def _state_dir(args: argparse.Namespace) -> Path:
    from maedaw.bridge.server import ServeConfig

    return args.state_dir or ServeConfig().state_dir


def _serve_detached(args: argparse.Namespace) -> int:
    from maedaw.bridge.lifecycle import LifecycleError, start_detached

    if args.port == 0:
        sys.stderr.write("error: --detach needs a fixed --port (0 would pick one at random)\n")
        return 2
    serve_args = [a for a in args.argv[1:] if a != "--detach"]
    state_dir = _state_dir(args)
    try:
        pid = start_detached(serve_args, state_dir, args.host, args.port)
    except LifecycleError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stderr.write(
        f"maedaw serve running in the background (pid {pid}) on {args.host}:{args.port}; "
        f"log: {state_dir / 'serve.log'}; stop it with: maedaw stop\n"
    )
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from maedaw.bridge.lifecycle import LifecycleError, stop

    try:
        pid = stop(_state_dir(args), wait_s=args.wait)
    except LifecycleError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stderr.write("no maedaw daemon is running\n" if pid is None else f"stopped pid {pid}\n")
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    from maedaw.bridge.service import launchd_plist, systemd_unit

    text = systemd_unit(args.port) if args.kind == "systemd" else launchd_plist(args.port)
    sys.stdout.write(text)
    return 0


def cmd_bench_osc(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.osc import bench_osc

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


def cmd_corpus_pack(args: argparse.Namespace) -> int:
    from maedaw.models.frontend import DEFAULT_FRONTEND
    from maedaw.models.train_data import build_cache, save_portable_cache, scan_audio

    paths = scan_audio(args.dirs)
    cache_dir = args.out.parent / f"{args.out.name}.cache"
    cache = build_cache(paths, cache_dir)
    save_portable_cache(cache, args.out)
    payload = {
        "out": str(args.out),
        "files": len(cache.paths),
        "hours": round(cache.hours(DEFAULT_FRONTEND), 4),
        "bytes": args.out.stat().st_size,
    }
    if args.json:
        _emit_json(payload)
    else:
        stdout.print(
            f"{payload['files']} files, {payload['hours']} h -> {args.out} "
            f"({payload['bytes'] / 1e6:.1f} MB)"
        )
    return 0


def cmd_corpus_multichannel(args: argparse.Namespace) -> int:
    from maedaw.corpus.pretrain import export_multichannel

    work = args.work or args.corpus.parent / f"{args.corpus.name}.work"
    counts = export_multichannel(args.corpus, work, args.out, args.split)
    if args.json:
        _emit_json({"out": str(args.out), "files": counts})
    else:
        parts = ", ".join(f"{c} {n}" for c, n in sorted(counts.items())) or "none"
        stdout.print(f"multichannel files -> {args.out}: {parts}")
    return 0


def cmd_corpus_build(args: argparse.Namespace) -> int:
    from maedaw.corpus.pretrain import CorpusSettings, build_corpus

    work = args.work or args.out.parent / f"{args.out.name}.work"
    settings = CorpusSettings(seed=args.seed, heldout_fraction=args.heldout)
    with progress_bar(not args.json) as progress:
        summary = build_corpus(args.out, work, settings, progress=progress)
    if args.json:
        _emit_json(summary)
    else:
        for split, hours in summary["hours"].items():
            parts = ", ".join(f"{c} {h:.2f} h" for c, h in sorted(hours.items()))
            stdout.print(f"{split:>8}: {parts}")
        stdout.print(f"manifest: {args.out / 'manifest.csv'}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from maedaw.models.registry import list_models, user_models_dir

    entries = [e.to_dict() for e in list_models()]
    if args.json:
        _emit_json({"user_models_dir": str(user_models_dir()), "models": entries})
        return 0
    table = Table(title=f"models (user folder: {user_models_dir()})", title_justify="left")
    for name in ("name", "id", "config", "source", "size"):
        table.add_column(name, no_wrap=True)
    table.add_column("path", overflow="fold")
    for e in entries:
        size = f"{e['size_bytes'] / 1e6:.1f} MB"
        table.add_row(e["name"], e["id"], e["config"], e["source"], size, e["path"])
    stdout.print(table)
    return 0


def cmd_eval_model(args: argparse.Namespace) -> int:
    import torch

    from maedaw.benchmarks.evaluate import evaluate, results_table_markdown
    from maedaw.models.registry import load

    if args.threads:
        torch.set_num_threads(args.threads)
    model, meta = load(args.model)
    with progress_bar(not args.json) as progress:
        results = evaluate(
            model,
            args.data,
            meta.frontend,
            seed=args.seed,
            ratio=args.mask_ratio,
            progress=progress,
        )
    payload = {
        "model": str(meta.weights_path),
        "model_id": meta.model_id,
        "data": str(args.data),
        "seed": args.seed,
        "mask_ratio": args.mask_ratio,
        "results": {c: r.to_dict() for c, r in results.items()},
    }
    if args.json:
        _emit_json(payload)
    else:
        stdout.print(f"{meta.model_id} on {args.data} (seed {args.seed}, mask {args.mask_ratio})")
        sys.stdout.write(results_table_markdown(results) + "\n")
    return 0


def cmd_bench_model(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.model import bench_model

    result = bench_model(tuple(args.configs), repeats=args.repeats, threads=args.threads)
    if args.json:
        _emit_json(result)
        return 0
    table = Table(
        title=f"encoder forward, 1 window, {result['threads']} threads, "
        f"torch {result['torch']}, timm {result['timm'] or 'not installed'}",
        title_justify="left",
    )
    names = (
        "config",
        "precision",
        "ours ms",
        "timm ms",
        "ours/timm",
        "GFLOP",
        "GFLOP/s",
        "matmul GFLOP/s",
        "share",
    )
    for name in names:
        table.add_column(name, justify="right")
    for r in result["rows"]:
        table.add_row(
            r["config"],
            r["precision"],
            f"{r['ours_ms']:.1f}",
            "-" if r["timm_ms"] is None else f"{r['timm_ms']:.1f}",
            "-" if r["ours_over_timm"] is None else f"{r['ours_over_timm']:.2f}",
            f"{r['gflop']:.1f}",
            f"{r['ours_gflops']:.0f}",
            f"{r['matmul_gflops']:.0f}",
            f"{r['share_of_matmul']:.0%}",
        )
    stdout.print(table)
    return 0


def cmd_install_reaper(args: argparse.Namespace) -> int:
    from maedaw.bridge.reaper_install import (
        DEFAULT_BASE_URL,
        InstallError,
        default_resource_path,
        install,
        reapack_index,
        scripts_source,
    )

    try:
        if args.write_index:
            text = reapack_index(scripts_source(), args.base_url or DEFAULT_BASE_URL)
            args.write_index.write_text(text, encoding="utf-8")
            stdout.print(f"wrote {args.write_index}")
            return 0
        resource = args.resource_path or default_resource_path()
        report = install(resource)
    except InstallError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    if args.json:
        _emit_json(report.to_dict())
        return 0
    stdout.print(f"REAPER resource path: {report.resource_path}")
    stdout.print(f"scripts: {len(report.copied)} copied, {len(report.unchanged)} unchanged")
    for name in report.registered:
        stdout.print(f"registered action: {name}")
    for backup in report.backups:
        stdout.print(f"backup: {backup}")
    if report.registered:
        stdout.print(
            "Restart REAPER (install while it is closed: it rewrites reaper-kb.ini on exit)."
        )
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from maedaw.bridge.send import send_and_collect

    packets = [Path(p).read_bytes() for p in args.packets]
    for path in args.packets:  # the helper owns its packet files once started
        Path(path).unlink(missing_ok=True)
    send_and_collect(args.host, args.port, packets, args.replies, args.timeout)
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
    repair.add_argument(
        "--model",
        help="Audio-MAE model for long gaps: name, id or path (default: the bundled one); "
        "'none' = AR only",
    )
    repair.add_argument("--plot", type=Path, help="write a before/after PNG here")
    repair.add_argument("--overwrite", action="store_true", help="replace an existing output")
    repair.add_argument("--json", action="store_true", help="print the report as JSON")
    repair.set_defaults(run=cmd_repair)

    restore = commands.add_parser(
        "restore", help="declip, declick, dehum, denoise or extend the bandwidth of a region"
    )
    restore.add_argument("file")
    restore.add_argument("-o", "--output", type=Path, help="stem path (.wav or .flac)")
    restore.add_argument("--op", required=True, help="declip, declick, dehum, denoise or bandwidth")
    _add_region(restore)
    restore.add_argument(
        "-O",
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="op option, repeatable (e.g. -O freq=60; see README 'Restoration')",
    )
    restore.add_argument("--overwrite", action="store_true", help="replace an existing output")
    restore.add_argument("--json", action="store_true", help="print the report as JSON")
    restore.set_defaults(run=cmd_restore)

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

    cli_train.register(commands)

    corpus = commands.add_parser("corpus", help="training corpus tools")
    corpus_cmds = corpus.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")
    build = corpus_cmds.add_parser("build", help="build the default corpus (Debian allowlist)")
    build.add_argument("out", type=Path, metavar="OUT_DIR")
    build.add_argument("--work", type=Path, help="download/unpack folder (default OUT.work)")
    build.add_argument("--seed", type=int, default=1234)
    build.add_argument("--heldout", type=float, default=0.1, help="held-out share of sources")
    build.add_argument("--json", action="store_true")
    build.set_defaults(run=cmd_corpus_build)
    pack = corpus_cmds.add_parser(
        "pack", help="write audio folders' fbanks as one portable cache (to train elsewhere)"
    )
    pack.add_argument("dirs", nargs="+", metavar="DIR")
    pack.add_argument("--out", type=Path, required=True, help="FILE.fbq")
    pack.add_argument("--json", action="store_true")
    pack.set_defaults(run=cmd_corpus_pack)
    multi = corpus_cmds.add_parser(
        "multichannel",
        help="a split's packaged sources with different channels, at their own rate (benchmarks)",
    )
    multi.add_argument("corpus", type=Path, metavar="CORPUS_DIR", help="maedaw corpus build's OUT")
    multi.add_argument("--out", type=Path, required=True, metavar="DIR")
    multi.add_argument("--work", type=Path, help="its download/unpack folder (default OUT.work)")
    multi.add_argument("--split", choices=("train", "heldout"), default="heldout")
    multi.add_argument("--json", action="store_true")
    multi.set_defaults(run=cmd_corpus_multichannel)

    models = commands.add_parser("models", help="list installed models (bundled and user)")
    models.add_argument("--json", action="store_true")
    models.set_defaults(run=cmd_models)

    evalm = commands.add_parser(
        "eval-model", help="held-out masked reconstruction error vs two baselines"
    )
    evalm.add_argument("model", nargs="?", help="path, name or id (default: bundled model)")
    evalm.add_argument("--data", type=Path, required=True, help="folder of held-out audio")
    evalm.add_argument("--seed", type=int, default=0)
    evalm.add_argument("--mask-ratio", type=float, default=0.8)
    evalm.add_argument("--threads", type=int, help="torch CPU threads")
    evalm.add_argument("--json", action="store_true")
    evalm.set_defaults(run=cmd_eval_model)

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
    cli_ardour.register(commands)

    send = commands.add_parser(
        "send", help="send raw OSC packets, write replies as hex lines (REAPER helper)"
    )
    send.add_argument("packets", nargs="+", metavar="PACKET_FILE")
    send.add_argument("--host", default="127.0.0.1")
    send.add_argument("--port", type=int, default=9000)
    send.add_argument("--replies", type=Path, required=True, help="file the replies go to")
    send.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for replies")
    send.set_defaults(run=cmd_send)

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

    bmodel = suites.add_parser("model", help="encoder forward time vs timm and matmul GFLOP/s")
    bmodel.add_argument("--configs", nargs="+", default=["vit_base", "compact"])
    bmodel.add_argument("--repeats", type=int, default=10)
    bmodel.add_argument("--threads", type=int, help="torch CPU threads")
    bmodel.add_argument("--json", action="store_true")
    bmodel.set_defaults(run=cmd_bench_model)

    brepair = suites.add_parser(
        "repair", help="gap-filling quality of zero/repeat/linear/AR/MAE/hybrid on DIR"
    )
    brepair.add_argument("--data", type=Path, required=True, help="folder of category folders")
    brepair.add_argument("--out", type=Path, default=Path("bench-repair"), help="output folder")
    brepair.add_argument("--model", help="name, id or path (default: bundled); 'none': no MAE")
    brepair.add_argument("--gaps", type=float, nargs="+", default=[10, 20, 50, 100, 200, 500])
    brepair.add_argument("--max-clips", type=int, help="clips per category (default: all)")
    brepair.add_argument("--seed", type=int, default=0)
    brepair.add_argument("--no-plcmos", action="store_true", help="skip PLCMOS on speech")
    brepair.add_argument(
        "--no-channel", action="store_true", help="skip one-channel dropouts on multichannel clips"
    )
    brepair.add_argument("--no-speed", action="store_true", help="skip the speed figure")
    brepair.add_argument("--json", action="store_true")
    brepair.set_defaults(run=cmd_bench_repair)

    brestore = suites.add_parser(
        "restore", help="restoration quality (declip, bandwidth, denoise, dehum) on DIR"
    )
    brestore.add_argument("--data", type=Path, required=True, help="folder of category folders")
    brestore.add_argument("--out", type=Path, default=Path("bench-restore"), help="output folder")
    brestore.add_argument(
        "--ops", nargs="+", help="declip bandwidth denoise dehum (default: all four)"
    )
    brestore.add_argument("--max-clips", type=int, default=12, help="clips per category")
    brestore.add_argument("--seconds", type=float, default=8.0, help="longest clip excerpt")
    brestore.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS on speech")
    brestore.add_argument("--json", action="store_true")
    brestore.set_defaults(run=cmd_bench_restore)

    # tag, tags, similar, corpus tags, bench tag / similar (bridge/cli_tag.py)
    from maedaw.bridge.cli_tag import add_commands as add_tag_commands

    add_tag_commands(commands, corpus_cmds, suites)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
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
