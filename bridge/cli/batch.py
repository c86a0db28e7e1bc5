"""``maedaw batch tag|detect|repair|restore|index DIR...``: a whole library, resumable."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from maedaw.core.util import CountFn

from .audio import add_sensitivity, parse_options
from .output import emit_json, stderr, stdout


@contextmanager
def files_bar(enabled: bool) -> Iterator[CountFn]:
    """A ``CountFn`` drawing files done / to do, files/s and the time left on stderr."""
    if not (enabled and stderr.is_terminal):
        yield lambda done, total: None
        return
    columns = (
        TextColumn("batch"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} files/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    began = time.perf_counter()
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task("batch", total=None, rate=0.0)

        def update(done: int, total: int) -> None:
            rate = done / max(time.perf_counter() - began, 1e-9)
            bar.update(task, completed=done, total=total, rate=rate)

        yield update


def cmd_batch(args: argparse.Namespace) -> int:
    from maedaw.bridge.batch import run_batch
    from maedaw.bridge.batch_worker import BatchSpec

    restore_op = getattr(args, "restore_op", None)
    out = args.out or Path(f"maedaw-batch-{restore_op or args.operation}")
    spec = BatchSpec(
        op=args.operation,
        roots=tuple(str(Path(d).resolve()) for d in args.folders),
        out=str(out),
        stems_beside=getattr(args, "beside", False),
        workers=args.workers or 0,
        threads=args.threads or 0,
        resume=args.resume,
        retry_errors=args.retry_errors,
        overwrite=getattr(args, "overwrite", False),
        model=getattr(args, "model", None),
        concealment=getattr(args, "concealment", None),
        fp32=getattr(args, "fp32", False),
        use_cache=not getattr(args, "no_cache", False),
        top=getattr(args, "top", 5),
        taught=not getattr(args, "no_taught", False),
        sensitivity=getattr(args, "sensitivity", "normal"),
        restore_op=restore_op,
        options=parse_options(getattr(args, "option", None)),
        ray=args.ray,
    )
    with files_bar(not args.json) as progress:
        summary = run_batch(spec, progress).to_dict()
    if args.json:
        emit_json(summary)
    else:
        stdout.print(
            f"{summary['op']}: {summary['processed']} files in {summary['seconds']:.1f} s "
            f"({summary['files_per_second']:.1f} files/s, {summary['workers']} "
            f"{summary['engine']} workers), {summary['skipped']} done before, "
            f"{len(summary['errors'])} with errors"
        )
        for error in summary["errors"]:
            stdout.print(f"  [red]error[/] {error['source']}: {error['error']}", highlight=False)
        if summary["index"]:
            stdout.print(f"similarity index: {summary['index']['size']} files")
        stdout.print(f"results: {summary['journal']}, report: {summary['report']}")
    return 1 if summary["errors"] else 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folders", nargs="+", type=Path, metavar="DIR")
    parser.add_argument(
        "--out", type=Path, help="results, report and stems (default: ./maedaw-batch-OPERATION)"
    )
    parser.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    parser.add_argument("--threads", type=int, help="torch/BLAS threads per worker")
    parser.add_argument("--resume", action="store_true", help="continue the batch in --out")
    parser.add_argument(
        "--retry-errors", action="store_true", help="with --resume: redo the files that failed"
    )
    parser.add_argument(
        "--ray",
        metavar="auto|ADDRESS",
        help="run on a Ray cluster (auto: the one started here, else a local one); "
        'needs pip install "maedaw[cluster]"',
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _embedding(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model name, id or path (default: the bundled one)")
    parser.add_argument("--fp32", action="store_true", help="float32 instead of bf16 autocast")
    parser.add_argument("--no-cache", action="store_true", help="ignore the embedding cache")


def _stems(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--beside", action="store_true", help="stems beside the sources, not under --out"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing stems")


def register(commands: argparse._SubParsersAction) -> None:
    batch = commands.add_parser(
        "batch", help="tag, detect, repair, restore or index every audio file of folders"
    )
    ops = batch.add_subparsers(dest="operation", required=True, metavar="OPERATION")
    tag = ops.add_parser("tag", help="semantic tags of every file (as `maedaw tag`)")
    _common(tag)
    _embedding(tag)
    tag.add_argument("--top", type=int, default=5, help="tags per file (default 5)")
    tag.add_argument("--no-taught", action="store_true", help="bundled tags only")
    detect = ops.add_parser("detect", help="damage report of every file (as `maedaw detect`)")
    _common(detect)
    add_sensitivity(detect)
    repair = ops.add_parser("repair", help="repaired stem of every file (as `maedaw repair`)")
    _common(repair)
    _stems(repair)
    repair.add_argument("--model", help="Audio-MAE for long gaps (default: bundled); 'none'")
    repair.add_argument(
        "--concealment",
        help="learned concealment model for 10-120 ms gaps, as for repair (default: the "
        "bundled concealment-default); 'none' = without it",
    )
    add_sensitivity(repair)
    restore = ops.add_parser("restore", help="restored stem of every file (as `maedaw restore`)")
    _common(restore)
    _stems(restore)
    restore.add_argument(
        "--op", dest="restore_op", required=True, help="declip, declick, dehum, denoise, bandwidth"
    )
    restore.add_argument("-O", "--option", action="append", metavar="KEY=VALUE")
    index = ops.add_parser("index", help="the similarity index `maedaw similar --in DIR` uses")
    _common(index)
    _embedding(index)
    for parser in (tag, detect, repair, restore, index):
        parser.set_defaults(run=cmd_batch)
