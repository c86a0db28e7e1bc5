"""``maedaw train``: pre-train or fine-tune Audio-MAE on audio folders or a portable cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .output import emit_json, stdout


def cmd_train(args: argparse.Namespace) -> int:
    import time

    import torch

    from maedaw.models.registry import resolve
    from maedaw.models.train import (
        TrainConfig,
        build_cache,
        load_portable_cache,
        scan_audio,
        train,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(
        config=args.config,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        min_lr=args.min_lr,
        warmup_steps=args.warmup,
        mask_ratio=args.mask_ratio,
        pack_short=args.pack_short,
        seed=args.seed,
        span_prob=args.span_prob,
        max_span=args.max_span,
        gain_db=args.gain_db,
        mix_prob=args.mix_prob,
        mix_db=args.mix_db,
        save_every=args.save_every,
        log_every=args.log_every,
        bf16=args.bf16,
    )
    stop_at = time.time() + 60.0 * args.minutes if args.minutes else None
    init = resolve(args.init) if args.init else None
    if bool(args.dirs) == bool(args.portable):
        sys.stderr.write("error: give audio folders or --portable FILE (one of the two)\n")
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
        sys.stderr.write(f"error: {exc}\n")
        return 1
    result = train(
        args.dirs,
        args.out,
        cfg,
        init=init,
        resume=args.resume,
        cache_dir=args.cache_dir,
        device=args.device,
        stop_at=stop_at,
        show_progress=not args.no_progress,
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
    train = commands.add_parser("train", help="pre-train or fine-tune Audio-MAE on audio folders")
    train.add_argument(
        "dirs", nargs="*", metavar="DIR", help="folders (or files) of audio (or use --portable)"
    )
    train.add_argument("--out", type=Path, required=True, help="checkpoint stem (NAME)")
    train.add_argument("--config", default="compact", help="model preset (compact, vit_base)")
    train.add_argument("--steps", type=int, default=1000)
    train.add_argument("--batch", type=int, default=8)
    train.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    train.add_argument("--min-lr", type=float, default=1e-5)
    train.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    train.add_argument("--mask-ratio", type=float, default=0.8)
    train.add_argument(
        "--pack-short", type=float, default=0.5, help="chance to fill a short file's window"
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--span-prob", type=float, default=0.0, help="share of windows with a time-span mask"
    )
    train.add_argument("--max-span", type=int, default=16, help="longest span (160 ms steps)")
    train.add_argument("--gain-db", type=float, default=0.0, help="random level offset, +- dB")
    train.add_argument("--mix-prob", type=float, default=0.0, help="chance to mix in a window")
    train.add_argument("--mix-db", type=float, default=15.0, help="mixed window 0..N dB down")
    train.add_argument(
        "--portable", type=Path, help="train from this portable cache (maedaw corpus pack)"
    )
    train.add_argument(
        "--heldout", type=Path, help="held-out audio folder or portable cache: loss per checkpoint"
    )
    train.add_argument("--save-every", type=int, default=200, help="checkpoint every N steps")
    train.add_argument("--log-every", type=int, default=20)
    train.add_argument("--init", help="fine-tune from this model (path, name or id)")
    train.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    train.add_argument("--cache-dir", type=Path, help="fbank cache (default: OUT.cache/)")
    train.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    train.add_argument("--bf16", action="store_true", help="bf16 autocast on CPU too")
    train.add_argument("--threads", type=int, help="torch CPU threads")
    train.add_argument("--minutes", type=float, help="save and stop after this long")
    train.add_argument("--no-progress", action="store_true", help="log lines, no bar")
    train.add_argument("--json", action="store_true")
    train.set_defaults(run=cmd_train)
