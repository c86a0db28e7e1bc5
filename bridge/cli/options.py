"""Flags several command groups share, and the embedder the tagging flags pick."""

from __future__ import annotations

import argparse


def add_region(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", type=float, help="region start, seconds into the file")
    parser.add_argument("--end", type=float, help="region end, seconds into the file")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The embedding model and how it runs (read by :func:`load_embedder`), and ``--json``."""
    parser.add_argument("--model", help="model name, id or path (default: the bundled one)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--fp32", action="store_true", help="float32 instead of bf16 autocast")
    parser.add_argument("--json", action="store_true")


def load_embedder(args: argparse.Namespace):
    """The embedder :func:`add_model_options` chose (torch is imported only here)."""
    import torch

    from maedaw.models.embed import load_embedder as load

    if args.threads:
        torch.set_num_threads(args.threads)
    return load(args.model, precision="float32" if args.fp32 else "auto")
