"""Commands on one audio file: info, detect, repair, restore, and the demo that scores a repair."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from maedaw.bridge.batch_worker import stem_beside

from .options import add_region
from .output import emit_json, progress_bar, stdout


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


def parse_options(items: Sequence[str] | None) -> dict[str, str]:
    """``-O KEY=VALUE`` options of a restore op as a dict."""
    from maedaw.dsp.restore import OptionError

    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise OptionError(f"--option {item!r} is not KEY=VALUE")
        options[key.strip()] = value.strip()
    return options


def cmd_info(args: argparse.Namespace) -> int:
    from maedaw.dsp.audio_io import probe

    info = probe(args.file).to_dict()
    if args.json:
        emit_json(info)
    else:
        for key, value in info.items():
            stdout.print(f"[bold]{key:>14}[/] {value}")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from maedaw.dsp.scan import scan_file

    with progress_bar(not args.json and not args.quiet) as progress:
        report = scan_file(
            args.file, args.start, args.end, progress=progress, level=args.sensitivity
        )
    payload = report.to_dict()
    if args.json:
        emit_json(payload)
    elif not args.quiet:
        counts = ", ".join(f"{n} {k}" for k, n in payload["counts"].items())
        title = f"{args.file}: {len(report.spans)} damaged spans ({counts})"
        stdout.print(_span_table(title, payload["spans"], with_method=False))
        if report.left_alone:
            rows = [dict(r, method="none", reason=r["doubt"]) for r in payload["left_alone"]]
            title = f"{len(rows)} doubtful, repair leaves them alone (--sensitivity)"
            stdout.print(_span_table(title, rows, with_method=True))
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from maedaw.bridge.inpainters import load_concealer, load_inpainter
    from maedaw.dsp.repair import RepairConfig, repair_file

    output = args.output or stem_beside(Path(args.file), "repair")
    spans = None if args.spans in (None, "auto") else args.spans
    inpainter = load_inpainter(args.model)  # "none": AR only
    concealer = load_concealer(args.concealment)  # "none": AR and the Audio-MAE only
    with progress_bar(not args.json) as progress:
        report = repair_file(
            args.file,
            output,
            args.start,
            args.end,
            spans,
            RepairConfig(sensitivity=args.sensitivity),
            progress=progress,
            overwrite=args.overwrite,
            inpainter=inpainter,
            concealer=concealer,
        )
    payload = report.to_dict()
    if args.plot:
        from maedaw.dsp.plot import plot_repair

        payload["plot"] = str(plot_repair(report, args.plot))
    if args.json:
        emit_json(payload)
        return 0
    title = f"{args.file} -> {output}: {payload['repaired']} spans repaired"
    stdout.print(_span_table(title, payload["spans"], with_method=True))
    if args.plot:
        stdout.print(f"before/after picture: {payload['plot']}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from maedaw.dsp.restore import restore_file

    options = parse_options(args.option)
    output = args.output or stem_beside(Path(args.file), args.op)
    with progress_bar(not args.json) as progress:
        report = restore_file(
            args.file, output, args.start, args.end, args.op, options, progress, args.overwrite
        )
    payload = report.to_dict()
    if args.json:
        emit_json(payload)
    else:
        stdout.print(f"{args.file} -> {output}: [bold]{args.op}[/] {payload['reason']}")
        stdout.print(f"changed: {payload['what_changed']} ({payload['changed_samples']} samples)")
    return 0


def click_snr_note(rows: Sequence[dict]) -> str | None:
    """Why a repaired click can show a negative "SNR after", or None when none does.

    Gap SNR (``dsp.metrics.gap_snr_db``) is the clean signal's energy over the error's on the
    damaged samples only. A click covers a handful of samples, often near a zero crossing
    where the clean signal has little energy, so a small error already scores near or below
    0 dB. Both SNRs share that clean energy: their difference is how much the error shrank.
    """
    clicks = [r for r in rows if r["kind"] == "click" and r["found"] and r["repair_snr_db"] < 0]
    if not clicks:
        return None
    shrank = [r["repair_snr_db"] - r["damaged_snr_db"] for r in clicks]
    return (
        "note: SNR is measured on the damaged samples only. A click spans a few samples, "
        "where the clean signal may carry little energy, so a repaired click can stay below "
        "0 dB; SNR after minus SNR before is how much the error shrank "
        f"({min(shrank):.1f} to {max(shrank):.1f} dB for the clicks below 0 dB)."
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from maedaw.bridge.demo import run_demo
    from maedaw.bridge.inpainters import load_concealer, load_inpainter

    inpainter = load_inpainter(args.model)  # the bundled models, as maedaw repair uses them
    concealer = load_concealer(args.concealment)
    with progress_bar(not args.json) as progress:
        summary = run_demo(
            args.out,
            args.input,
            seed=args.seed,
            progress=progress,
            inpainter=inpainter,
            concealer=concealer,
        )
    if args.json:
        emit_json(summary)
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
    note = click_snr_note(summary["truth"])
    if note:
        stdout.print(note)
    stdout.print(f"before/after picture: {summary['plot']}")
    return 0


def add_sensitivity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sensitivity",
        choices=("low", "normal", "high"),
        default="normal",
        help="how sure a detection must be to be repaired; the rest is reported as left alone "
        "(low: only the clearest damage; high: also borderline spans, may touch real "
        "transients)",
    )


def register(commands: argparse._SubParsersAction) -> None:
    info = commands.add_parser("info", help="describe an audio file")
    info.add_argument("file")
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=cmd_info)

    detect = commands.add_parser("detect", help="find dropouts, level drops, clicks and clipping")
    detect.add_argument("file")
    add_region(detect)
    detect.add_argument("--json", action="store_true", help="print the report as JSON")
    detect.add_argument("-q", "--quiet", action="store_true", help="no table, no progress")
    add_sensitivity(detect)
    detect.set_defaults(run=cmd_detect)

    repair = commands.add_parser("repair", help="repair a region and write a stem")
    repair.add_argument("file")
    repair.add_argument("-o", "--output", type=Path, help="stem path (.wav or .flac)")
    add_region(repair)
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
    repair.add_argument(
        "--concealment",
        help="learned concealment model for 10-120 ms gaps: name or path (default: the "
        "bundled concealment-default); 'none' = without it",
    )
    add_sensitivity(repair)
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
    add_region(restore)
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
    demo.add_argument(
        "--model", help="Audio-MAE model, as for repair (default: the bundled one); 'none' = AR"
    )
    demo.add_argument(
        "--concealment",
        help="learned concealment model, as for repair (default: the bundled one); 'none'",
    )
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(run=cmd_demo)
