"""``maedaw train``: pre-train or fine-tune Audio-MAE; its settings are ``TrainConfig``'s fields."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from maedaw.models.train_config import TrainConfig

from .options import add_dataclass_options, dataclass_from_args
from .output import emit_json, fail, log_cache_progress, stdout, step_bar

# TrainConfig's options, in the order ``maedaw train --help`` lists them.
_MODEL_OPTIONS = (
    "config",
    "steps",
    "batch",
    "lr",
    "min_lr",
    "warmup_steps",
    "mask_ratio",
    "pack_short",
    "seed",
    "span_prob",
    "max_span",
    "gain_db",
    "mix_prob",
    "mix_db",
    "folder_balance",
)
_CHECKPOINT_OPTIONS = ("save_every", "log_every")


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from maedaw.models.registry import resolve
    from maedaw.models.train import train
    from maedaw.models.train_data import build_cache, load_portable_cache, scan_audio

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dataclass_from_args(TrainConfig, args)
    stop_at = time.time() + 60.0 * args.minutes if args.minutes else None
    init = resolve(args.init) if args.init else None
    if bool(args.dirs) == bool(args.portable):
        fail("give audio folders or --portable FILE (one of the two)")
        return 2
    try:
        cache = load_portable_cache(args.portable) if args.portable else None
        heldout = None
        if args.heldout is not None:
            if args.heldout.is_dir():
                folder = args.out.parent / f"{args.out.name}.heldout-cache"
                heldout = build_cache(scan_audio([args.heldout]), folder)
            else:
                heldout = load_portable_cache(args.heldout)[0]
    except (OSError, ValueError) as exc:
        return fail(exc)
    show = not args.no_progress
    with step_bar() as bar:
        result = train(
            args.dirs,
            args.out,
            cfg,
            init=init,
            resume=args.resume,
            cache_dir=args.cache_dir,
            device=args.device,
            stop_at=stop_at,
            progress=bar if show else None,
            cache_progress=log_cache_progress if show else None,
            cache=cache,
            eval_cache=heldout,
        )
    payload = {
        "checkpoint": str(result.checkpoint),
        "step": result.step,
        "final_loss": result.final_loss,
        "wall_seconds": round(result.wall_seconds, 1),
        "windows_per_second": round(result.windows_per_second, 3),
    }
    if args.json:
        emit_json(payload)
    else:
        stdout.print(
            f"step {result.step}: loss {result.final_loss:.4f}, "
            f"{result.windows_per_second:.2f} windows/s, {result.wall_seconds:.0f} s "
            f"-> {result.checkpoint}"
        )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``maedaw train`` to the command line's subcommands."""
    train = commands.add_parser("train", help="pre-train or fine-tune Audio-MAE on audio folders")
    train.add_argument(
        "dirs", nargs="*", metavar="DIR", help="folders (or files) of audio (or use --portable)"
    )
    train.add_argument("--out", type=Path, required=True, help="checkpoint stem (NAME)")
    add_dataclass_options(train, TrainConfig, _MODEL_OPTIONS)
    train.add_argument(
        "--portable", type=Path, help="train from this portable cache (maedaw corpus pack)"
    )
    train.add_argument(
        "--heldout", type=Path, help="held-out audio folder or portable cache: loss per checkpoint"
    )
    add_dataclass_options(train, TrainConfig, _CHECKPOINT_OPTIONS)
    train.add_argument("--init", help="fine-tune from this model (path, name or id)")
    train.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    train.add_argument("--cache-dir", type=Path, help="fbank cache (default: OUT.cache/)")
    train.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    add_dataclass_options(train, TrainConfig, ("bf16",))
    train.add_argument("--threads", type=int, help="torch CPU threads")
    train.add_argument("--minutes", type=float, help="save and stop after this long")
    train.add_argument("--no-progress", action="store_true", help="log lines, no bar")
    train.add_argument("--json", action="store_true")
    train.set_defaults(run=cmd_train)
    register_concealment(commands)


_CONCEAL_OPTIONS = (
    "steps",
    "batch",
    "lr",
    "min_lr",
    "warmup_steps",
    "excerpt_s",
    "max_gaps",
    "augment_prob",
    "pool",
    "seed",
    "save_every_s",
    "bf16",
)


def cmd_train_concealment(args: argparse.Namespace) -> int:
    import logging

    import torch

    from maedaw.models.concealment_train import ConcealTrainConfig, train_concealment

    torch.set_num_threads(args.threads or 1)
    cfg = dataclass_from_args(ConcealTrainConfig, args)
    stop_at = time.time() + 60.0 * args.minutes if args.minutes else None
    if not args.manifest.is_file():
        return fail(f"{args.manifest}: no such manifest (build it with maedaw corpus build)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger("maedaw.train_concealment")
    last = [0.0]

    def log_step(step: int, total: int, info: dict[str, float]) -> None:
        if info and (time.monotonic() - last[0] > 30.0 or step == total):
            last[0] = time.monotonic()
            log.warning("step %d/%d loss %.4f lr %.1e", step, total, info["loss"], info["lr"])

    with step_bar() as bar:
        result = train_concealment(
            args.manifest,
            args.out,
            cfg,
            resume=args.resume,
            init=args.init,
            stop_at=stop_at,
            progress=log_step if args.no_progress else bar,
        )
    payload = {
        "checkpoint": str(result.checkpoint),
        "step": result.step,
        "final_loss": result.final_loss,
        "best_heldout_loss": result.best_val,
        "wall_seconds": round(result.wall_seconds, 1),
    }
    if args.json:
        emit_json(payload)
    else:
        stdout.print(
            f"step {result.step}: loss {result.final_loss:.4f}, held-out best "
            f"{result.best_val}, {result.wall_seconds:.0f} s -> {result.checkpoint}"
        )
    return 0


def register_concealment(commands: argparse._SubParsersAction) -> None:
    """Add ``maedaw train-concealment``."""
    from maedaw.models.concealment_config import ConcealTrainConfig

    sub = commands.add_parser(
        "train-concealment", help="train the learned concealment model (10-120 ms gaps)"
    )
    sub.add_argument("--out", type=Path, required=True, help="checkpoint stem (DIR/NAME)")
    sub.add_argument("--manifest", type=Path, required=True, help="corpus manifest.csv")
    add_dataclass_options(sub, ConcealTrainConfig, _CONCEAL_OPTIONS)
    sub.add_argument("--init", help="warm start from these weights (e.g. the shipped ones)")
    sub.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    sub.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    sub.add_argument("--minutes", type=float, help="save and stop after this long")
    sub.add_argument("--no-progress", action="store_true", help="log lines, no bar")
    sub.add_argument("--json", action="store_true")
    sub.set_defaults(run=cmd_train_concealment)
