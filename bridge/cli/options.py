"""Flags several command groups share, the embedder the tagging flags pick, and options made
from a dataclass's fields (``maedaw train``'s from ``TrainConfig``).

A dataclass field becomes ``--field-name`` (or its ``metadata["flag"]``) with the field's type,
default and ``metadata["help"]``; a ``bool`` field (default False) becomes a switch. The
option's destination is the field's name, so the parsed arguments build the dataclass back.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")


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


def _flag(item: dataclasses.Field[Any]) -> str:
    return item.metadata.get("flag", "--" + item.name.replace("_", "-"))


def add_dataclass_options(
    parser: argparse.ArgumentParser, cls: type[Any], names: Sequence[str]
) -> None:
    """Add the fields ``names`` of dataclass ``cls`` as options, in that order."""
    types = typing.get_type_hints(cls)
    fields = {item.name: item for item in dataclasses.fields(cls)}
    for name in names:
        item, kind = fields[name], types[name]
        options: dict[str, Any] = {
            "dest": name,
            "default": item.default,
            "help": item.metadata.get("help"),
        }
        if kind is bool and item.default is False:
            parser.add_argument(_flag(item), action="store_true", **options)
        elif kind in (str, int, float) and item.default is not dataclasses.MISSING:
            # The metavar argparse would derive from the flag (not from the field's name).
            metavar = _flag(item).lstrip("-").replace("-", "_").upper()
            parser.add_argument(_flag(item), type=kind, metavar=metavar, **options)
        else:
            raise TypeError(f"{cls.__name__}.{name}: no option for a {kind} field like this")


def dataclass_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """``cls`` with the values of the options ``add_dataclass_options`` added; its other
    fields keep their defaults."""
    names = [item.name for item in dataclasses.fields(cls) if hasattr(args, item.name)]
    return cls(**{name: getattr(args, name) for name in names})
