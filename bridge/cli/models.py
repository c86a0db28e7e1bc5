"""The installed models: list them, and score one on held-out audio."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.table import Table

from .output import emit_json, progress_bar, stdout


def cmd_models(args: argparse.Namespace) -> int:
    from maedaw.models.registry import BUNDLED_DIR, list_concealment, list_models, user_models_dir

    entries = [e.to_dict() for e in list_models()]
    concealment = list_concealment()
    if args.json:
        emit_json(
            {
                "user_models_dir": str(user_models_dir()),
                "models": entries,
                "concealment": concealment,
            }
        )
        return 0
    # One line per model in 80 columns: each model is FOLDER/NAME.safetensors, so the
    # table names the two folders instead of a path per row (--json has the full paths).
    table = Table(title=f"models (user folder: {user_models_dir()})", title_justify="left")
    table.add_column("name", overflow="ellipsis")  # the one column that gives way
    for name in ("id", "config", "source", "size"):
        table.add_column(name, no_wrap=True)
    for e in [*entries, *concealment]:
        size = f"{e['size_bytes'] / 1e6:.1f} MB"
        table.add_row(e["name"], e["id"], e["config"], e["source"], size)
    stdout.print(table)
    stdout.print(f"bundled folder: {BUNDLED_DIR}")
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
        emit_json(payload)
    else:
        stdout.print(f"{meta.model_id} on {args.data} (seed {args.seed}, mask {args.mask_ratio})")
        sys.stdout.write(results_table_markdown(results) + "\n")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
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
