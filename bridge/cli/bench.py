"""``maedaw bench``: every benchmark suite (speed, OSC latency, model, repair, restore, tagging)."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path

from .options import add_model_options, load_embedder
from .output import emit_json, progress_bar, results_table, stdout

log = logging.getLogger(__name__)


def cmd_bench_scan(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.scan import bench_scan

    result = bench_scan(args.minutes, args.rate, args.channels, keep=args.keep)
    if args.json:
        emit_json(result)
    else:
        stdout.print(
            f"scanned {result['audio_minutes']:.0f} min of {result['rate']} Hz × "
            f"{result['channels']} ch in {result['seconds']:.1f} s: "
            f"[bold]{result['x_realtime']:.0f}× real time[/], peak RSS "
            f"[bold]{result['peak_rss_mb']:.0f} MB[/] (target ≥ 300×, ≤ 1024 MB)"
        )
    return 0


def cmd_bench_detect(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.detect import BenchDetectConfig, bench_detect, render_markdown

    config = BenchDetectConfig(args.sensitivity, args.seconds, args.per_file, args.seed)
    with progress_bar(not args.json) as progress:
        result = bench_detect(args.folder, config, progress)
    result["markdown"] = render_markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-detect.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "bench-detect.md").write_text(result["markdown"])
    if args.json:
        emit_json(result)
    else:
        stdout.print(result["markdown"])
        stdout.print(f"written: {args.out / 'bench-detect.json'}, {args.out / 'bench-detect.md'}")
    return 0


def cmd_bench_click_train(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.click_train import ClickTrainConfig, train_click_net

    config = ClickTrainConfig(
        max_seconds=args.seconds,
        max_per_package=args.max_per_package,
        exclude_packages=tuple(args.exclude_package),
        validation_packages=tuple(args.validation_package or ClickTrainConfig.validation_packages),
        channels=args.channels,
        epochs=args.epochs,
        synthetic_clips=args.synthetic,
        seed=args.seed,
    )
    with progress_bar(not args.json) as progress:
        judge = train_click_net(args.manifest, args.extracted, config, args.cache, progress)
    judge.save(args.out)
    made = judge.provenance
    if args.json:
        emit_json(made)
        return 0
    stdout.print(
        f"trained on {len(made['train_packages'])} packages: {made['click_zones']} click zones "
        f"of {made['zones']}; written {args.out}"
    )
    for side in ("train", "validation"):
        for name in ("low", "normal", "high"):
            row = made.get(side, {}).get(name)
            if row:
                stdout.print(
                    f"  {side} {name}: bar {row['bar']:.2f}, click zones above "
                    f"{100 * row['clicks_above']:.0f} %, transient zones above "
                    f"{row['transients_per_10min']:.1f} per 10 min"
                )
    return 0


def cmd_bench_osc(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.osc import bench_osc

    result = bench_osc(args.pings)
    if args.json:
        emit_json(result)
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


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.soak import bench_soak

    result = bench_soak(args.jobs, args.in_flight, args.clients, args.per_client)
    if args.json:
        emit_json(result)
        return 1 if result["missed"] else 0
    soak, ping, burst = result["soak"], result["ping_during_jobs"], result["burst"]
    growth = result["rss_growth"]
    stdout.print(
        f"soak: {soak['done']} of {result['jobs']} jobs done ({soak['failed']} failed) in "
        f"{result['soak_s']:.0f} s; daemon RSS {soak['rss_warm_mb']} -> {soak['rss_end_mb']} MB "
        f"({'?' if growth is None else f'{100 * growth:+.1f} %'}, target ≤ 5 %)"
    )
    stdout.print(
        f"ping during jobs: p50 {ping['p50_ms']:.2f} ms, p99 {ping['p99_ms']:.2f} ms, "
        f"max {ping['max_ms']:.1f} ms over {ping['n']} pings (target p99 ≤ 5 ms)"
    )
    stdout.print(
        f"burst: {burst['answered']} of {burst['requests']} requests answered "
        f"({burst.get('accepted', 0)} accepted, {burst.get('busy', 0)} busy; target: all); "
        f"kernel drops {result['daemon']['kernel_drops']}"
    )
    for miss in result["missed"]:
        log.error("soak target missed: %s", miss)
    return 1 if result["missed"] else 0


def cmd_bench_model(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.model import bench_model

    result = bench_model(tuple(args.configs), repeats=args.repeats, threads=args.threads)
    if args.json:
        emit_json(result)
        return 0
    title = (
        f"encoder forward, 1 window, {result['threads']} threads, "
        f"torch {result['torch']}, timm {result['timm'] or 'not installed'}"
    )
    columns = (
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
    table = results_table(title, columns, text=())
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


def cmd_bench_repair(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.repair import BenchRepairConfig, bench_repair, plot, render_table
    from maedaw.bridge.inpainters import load_concealer, load_inpainter
    from maedaw.dsp.ar import ARConfig
    from maedaw.dsp.repair import RepairConfig

    config = BenchRepairConfig(
        gaps_ms=tuple(args.gaps),
        seed=args.seed,
        max_clips=args.max_clips,
        **({"loss_rates": tuple(args.loss_rates)} if args.loss_rates else {}),
        plcmos=not args.no_plcmos,
        channel=not args.no_channel,
        speed=not args.no_speed,
        repair=RepairConfig(ar=ARConfig(excitation=args.ar_excitation)),
    )
    model = load_inpainter(args.model)
    concealer = load_concealer(args.concealment)
    with progress_bar(not args.json) as progress:
        result = bench_repair(
            args.data,
            model,
            config,
            progress,
            args.model or "compact-default",
            concealer,
            args.concealment or "concealment-default",
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-repair.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "bench-repair.png")
    if args.json:
        emit_json(result)
    else:
        stdout.print(render_table(result))
        stdout.print(f"written: {args.out / 'bench-repair.json'}, {args.out / 'bench-repair.png'}")
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
        emit_json(result)
    else:
        stdout.print(result["markdown"])
        stdout.print(f"table: {result['json']}  plot: {result['plot']}")
    return 0


def _run_bench(
    args: argparse.Namespace,
    bench: Callable[..., dict],
    show: Callable[[dict], None],
    **options,
) -> int:
    """A taught-tag benchmark on the chosen model with a progress bar; its result as JSON
    (``--json``) or through ``show``. Returns the exit code."""
    embedder = load_embedder(args)
    with progress_bar(not args.json) as progress:
        result = bench(
            embedder=embedder,
            shots=args.shots,
            repeats=args.repeats,
            seed=args.seed,
            progress=progress,
            **options,
        )
    if args.json:
        emit_json(result)
    else:
        show(result)
    return 0


def cmd_bench_tag(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.tag import bench_tag

    return _run_bench(args, bench_tag, _show_bench_tag, data=args.data, train=args.train)


def _show_bench_tag(result: dict) -> None:
    table = results_table(
        f"tagging on {result['data']} ({len(result['classes'])} classes)",
        ("method", "top-1", "mAP", "clips", "fitted on"),
        text=("method", "fitted on"),
    )
    for r in result["rows"]:
        table.add_row(
            r["method"], f"{r['top1']:.3f}", f"{r['mAP']:.3f}", str(r["clips"]), r["fitted_on"]
        )
    stdout.print(table)
    few, speed = result["few_shot"], result["throughput"]
    stdout.print(
        f"{few['shots']}-shot taught tags: {few['accuracy_mean']:.3f} "
        f"± {few['accuracy_std']:.3f} ({few['repeats']} draws)"
    )
    stdout.print(
        f"throughput: {speed['x_real_time']:.0f}x real time "
        f"({speed['audio_seconds']:.0f} s of audio in {speed['wall_seconds']:.1f} s, "
        f"{result['threads']} threads, {result['precision']})"
    )


def cmd_bench_generalise(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.generalise import bench_generalise

    return _run_bench(
        args,
        bench_generalise,
        _show_bench_generalise,
        corpus=args.corpus,
        split=args.split,
        per_tag=args.per_tag,
        heldout_per_tag=args.heldout_per_tag,
        copies=args.copies,
        epochs=args.epochs,
        save_head=args.save_head,
    )


def _show_bench_generalise(result: dict) -> None:
    held = result["heldout_packages"]
    where = f"held-out packages {', '.join(held)}" if held else "held-out groups"
    table = results_table(
        f"{result['split']}-disjoint tagging ({where}; {result['heldout_clips']} clips)",
        ("family", "clips", "top-1 in family"),
        text=("family",),
    )
    for family, cell in result["per_family"].items():
        table.add_row(family, str(cell["clips"]), f"{cell['top1']:.3f}")
    table.add_row("all", str(result["heldout_clips"]), f"{result['top1_family']:.3f}")
    stdout.print(table)
    few = result["few_shot"]
    shot = "n/a" if few["accuracy_mean"] is None else f"{few['accuracy_mean']:.3f}"
    speech = result["speech_median"]
    stdout.print(
        f"ECE {result['ece']:.3f} (best tag's: {result['ece_top1']:.3f}), "
        f"mAP {result['mAP']:.3f}, "
        f"speech median {'n/a' if speech is None else f'{speech:.2f}'}; "
        f"family probe {result['probe_family_top1']:.3f} vs MFCC "
        f"{result['mfcc_family_top1']:.3f}; {few['shots']}-shot taught tags {shot} "
        f"({len(few['tags'])} tags)"
    )


def cmd_bench_taught(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.tag import bench_taught

    return _run_bench(args, bench_taught, _show_bench_taught, corpus=args.corpus, folds=args.folds)


def _show_bench_taught(result: dict) -> None:
    table = results_table(
        f"{result['shots']}-shot taught tags on {result['corpus']}/heldout",
        ("taught tags for", "clips", "vector", "vector + hidden"),
        text=("taught tags for",),
    )

    def cells(row: dict) -> list[str]:
        return [
            f"{row[k]['mean']:.3f} ± {row[k]['std']:.3f}" for k in ("vector", "vector + hidden")
        ]

    for row in result["novel_classes"]:
        table.add_row(
            f"classes the head never saw: {', '.join(row['novel'])}", str(row["clips"]), *cells(row)
        )
    mean = result["novel_classes_mean"]
    table.add_row(
        "  mean over folds", "", f"{mean['vector']:.3f}", f"{mean['vector + hidden']:.3f}"
    )
    if result["sources_as_tags"]:
        row = result["sources_as_tags"]
        table.add_row(f"{row['sources']} held-out sources", str(row["clips"]), *cells(row))
    stdout.print(table)

    near = results_table(
        "of the 10 nearest held-out clips, the share that",
        ("share", "vector", "vector + hidden"),
        text=("share",),
    )
    for row in result["novel_classes"]:
        shares = row["neighbours_same_class"]
        near.add_row(
            f"share the class ({', '.join(row['novel'])}; head never saw it)",
            *(f"{shares[k]:.3f}" for k in ("vector", "vector + hidden")),
        )
    mean = result["novel_classes_neighbours_mean"]
    near.add_row("  mean over folds", f"{mean['vector']:.3f}", f"{mean['vector + hidden']:.3f}")
    if result["sources_as_tags"]:
        for what in ("class", "source"):
            shares = result["sources_as_tags"][f"neighbours_same_{what}"]
            near.add_row(
                f"share the {what} (bundled head)",
                *(f"{shares[k]:.3f}" for k in ("vector", "vector + hidden")),
            )
    stdout.print(near)


def cmd_bench_similar(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.tag import bench_similar

    result = bench_similar(args.size, args.dim, args.queries)
    if args.json:
        emit_json(result)
        return 0
    stdout.print(
        f"usearch HNSW, {result['size']} x {result['dim']}: build {result['build_seconds']:.1f} s, "
        f"query p50 {result['query_ms_p50']:.3f} ms / p99 {result['query_ms_p99']:.3f} ms "
        f"(exact numpy {result['exact_numpy_ms_p50']:.2f} ms), recall@10 "
        f"{result['recall_at_10']:.3f}, update 1 % {result['update_1pct_seconds']:.2f} s, "
        f"file {result['file_mb']:.0f} MB"
    )
    return 0


def cmd_bench_batch(args: argparse.Namespace) -> int:
    from maedaw.benchmarks.batch import bench_batch, render_markdown

    result = bench_batch(args.folder, tuple(args.ops), args.limit, ray=not args.no_ray)
    result["markdown"] = render_markdown(result)
    if args.json:
        emit_json(result)
    else:
        stdout.print(result["markdown"])
    return 0


def _few_shot_options(parser: argparse.ArgumentParser) -> None:
    """What :func:`_run_bench` reads: the N-shot draws and the model to embed with."""
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    add_model_options(parser)


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="benchmarks")
    suites = bench.add_subparsers(dest="suite", required=True, metavar="SUITE")
    scan = suites.add_parser("scan", help="detection speed and memory on a long synthetic file")
    scan.add_argument("--minutes", type=float, default=60.0)
    scan.add_argument("--rate", type=int, default=48_000)
    scan.add_argument("--channels", type=int, default=2)
    scan.add_argument("--keep", type=Path, help="keep the synthetic file here")
    scan.add_argument("--json", action="store_true")
    scan.set_defaults(run=cmd_bench_scan)
    bdetect = suites.add_parser(
        "detect", help="false alarms on clean recordings and recall on inserted damage, FOLDER"
    )
    bdetect.add_argument("folder", type=Path, help="sub-folders are kinds of material")
    bdetect.add_argument("--out", type=Path, default=Path("bench-detect"), help="output folder")
    bdetect.add_argument("--sensitivity", choices=("low", "normal", "high"), default="normal")
    bdetect.add_argument("--seconds", type=float, default=40.0, help="read at most this per file")
    bdetect.add_argument("--per-file", type=int, default=2, help="defects of each kind per file")
    bdetect.add_argument("--seed", type=int, default=0)
    bdetect.add_argument("--json", action="store_true")
    bdetect.set_defaults(run=cmd_bench_detect)

    ctrain = suites.add_parser(
        "click-train",
        help="train the click judge on the corpus's training recordings (dsp/click_net...)",
    )
    ctrain.add_argument("manifest", type=Path, help="manifest.csv of `maedaw corpus build`")
    ctrain.add_argument(
        "--extracted",
        type=Path,
        action="append",
        required=True,
        help="a folder the build extracted packages into (repeatable; first match wins)",
    )
    ctrain.add_argument("--out", type=Path, default=Path("click_net.safetensors"))
    ctrain.add_argument("--seconds", type=float, default=30.0, help="read at most this per file")
    ctrain.add_argument("--max-per-package", type=int, default=400, help="recordings per package")
    ctrain.add_argument(
        "--exclude-package",
        action="append",
        default=["hydrogen-drumkits"],
        help="leave this package out too (repeatable; default: hydrogen-drumkits)",
    )
    ctrain.add_argument(
        "--validation-package",
        action="append",
        help="keep this whole package apart to choose the bars (repeatable)",
    )
    ctrain.add_argument("--channels", type=int, default=24, help="width of the convolutions")
    ctrain.add_argument("--epochs", type=int, default=20)
    ctrain.add_argument(
        "--synthetic",
        type=int,
        default=200,
        help="synthesised plucked-string clips trained on besides the corpus (0: none)",
    )
    ctrain.add_argument("--cache", type=Path, help="keep the collected examples here (.npz)")
    ctrain.add_argument("--seed", type=int, default=0)
    ctrain.add_argument("--json", action="store_true")
    ctrain.set_defaults(run=cmd_bench_click_train)
    osc = suites.add_parser("osc", help="daemon ping latency and request-to-stem time")
    osc.add_argument("--pings", type=int, default=500)
    osc.add_argument("--json", action="store_true")
    osc.set_defaults(run=cmd_bench_osc)
    soak = suites.add_parser(
        "soak", help="daemon: N-job soak (RSS growth, ping p99 during jobs) and a burst"
    )
    soak.add_argument("--jobs", type=int, default=1000)
    soak.add_argument("--in-flight", type=int, default=4, help="jobs sent before one ends")
    soak.add_argument("--clients", type=int, default=20, help="burst: clients at once")
    soak.add_argument("--per-client", type=int, default=25, help="burst: requests each")
    soak.add_argument("--json", action="store_true")
    soak.set_defaults(run=cmd_bench_soak)

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
    brepair.add_argument(
        "--concealment", help="learned concealment weights (default: bundled); 'none': without"
    )
    brepair.add_argument("--gaps", type=float, nargs="+", default=[10, 20, 50, 100, 200, 500])
    brepair.add_argument(
        "--max-clips",
        type=int,
        help="a seeded sample of this many clips per category (default: all)",
    )
    brepair.add_argument("--seed", type=int, default=0)
    brepair.add_argument(
        "--loss-rates",
        type=float,
        nargs="+",
        help="packet-loss rates for PLCMOS on speech (20 ms packets; default 0.1 0.2 0.3)",
    )
    brepair.add_argument(
        "--ar-excitation",
        choices=("pitch", "none"),
        default="pitch",
        help="AR's in-gap excitation for gaps from 15 ms: pitch (the context's error carried "
        "in by its pitch period; default, as maedaw repair does) or none (plain LSAR: the "
        "fill decays toward silence)",
    )
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
    btag = suites.add_parser("tag", help="tagger vs linear probe vs MFCC, N-shot, speed")
    btag.add_argument("--data", type=Path, required=True, help="sub-folders are classes")
    btag.add_argument("--train", type=Path, help="fit the probe / MFCC baseline here")
    _few_shot_options(btag)
    btag.set_defaults(run=cmd_bench_tag)
    bgen = suites.add_parser(
        "generalise", help="tagging on held-out packages / sources of a `corpus build` corpus"
    )
    bgen.add_argument("corpus", type=Path, metavar="CORPUS_DIR", help="from `corpus build`")
    bgen.add_argument("--split", choices=("package", "source"), default="package")
    bgen.add_argument("--per-tag", type=int, default=200, help="training clips per tag")
    bgen.add_argument("--heldout-per-tag", type=int, default=120, help="held-out clips per tag")
    bgen.add_argument("--copies", type=int, default=1, help="augmented copies per training clip")
    bgen.add_argument("--epochs", type=int, default=300, help="head training epochs")
    bgen.add_argument("--save-head", type=Path, help="write the trained head (PATH.safetensors)")
    _few_shot_options(bgen)
    bgen.set_defaults(run=cmd_bench_generalise, repeats=5)
    btaught = suites.add_parser(
        "taught", help="taught tags on classes the tagger head never saw, and on sources"
    )
    btaught.add_argument("corpus", type=Path, metavar="CORPUS_DIR", help="from `corpus tags`")
    btaught.add_argument("--folds", type=int, default=3, help="groups of held-back classes")
    _few_shot_options(btaught)
    btaught.set_defaults(run=cmd_bench_taught)
    bbatch = suites.add_parser(
        "batch", help="maedaw batch files/s: 1 and 2 local workers and Ray, per operation"
    )
    bbatch.add_argument("folder", type=Path, help="audio files (the first --limit are used)")
    bbatch.add_argument("--ops", nargs="+", default=["tag", "detect"], help="batch operations")
    bbatch.add_argument("--limit", type=int, default=300, help="files (default 300)")
    bbatch.add_argument("--no-ray", action="store_true", help="local pool only")
    bbatch.add_argument("--json", action="store_true")
    bbatch.set_defaults(run=cmd_bench_batch)
    bsim = suites.add_parser("similar", help="vector index speed and recall")
    bsim.add_argument("--size", type=int, default=100_000)
    bsim.add_argument("--dim", type=int, default=2560, help="2560: the bundled model's index")
    bsim.add_argument("--queries", type=int, default=500)
    bsim.add_argument("--json", action="store_true")
    bsim.set_defaults(run=cmd_bench_similar)
