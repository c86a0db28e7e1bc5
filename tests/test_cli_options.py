"""Options made from dataclass fields (bridge/cli/options.py) and `maedaw train`'s use of them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from maedaw.bridge.cli import build_parser
from maedaw.bridge.cli.options import add_dataclass_options, dataclass_from_args
from maedaw.models.train_config import TrainConfig


@dataclass(frozen=True)
class Demo:
    name: str = field(default="a", metadata={"help": "what to call it"})
    count: int = field(default=3, metadata={"help": "how many", "flag": "--n"})
    rate: float = 0.5
    loud: bool = False
    pair: tuple[int, int] = (1, 2)  # not an option


def _parser(names=("name", "count", "rate", "loud")) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo")
    add_dataclass_options(parser, Demo, names)
    return parser


def test_round_trip_and_defaults():
    parser = _parser()
    args = parser.parse_args(["--name", "b", "--n", "5", "--rate", "0.25", "--loud"])
    assert dataclass_from_args(Demo, args) == Demo(name="b", count=5, rate=0.25, loud=True)
    assert dataclass_from_args(Demo, parser.parse_args([])) == Demo()


def test_renamed_flag_help_and_order(capsys):
    parser = _parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--count", "5"])  # the field's own name is not an option
    capsys.readouterr()
    text = parser.format_help()
    assert "--n N" in text and "how many" in text and "what to call it" in text
    assert text.index("--name") < text.index("--n N") < text.index("--rate") < text.index("--loud")


def test_a_field_with_no_option_shape_is_refused():
    with pytest.raises(TypeError, match=r"Demo\.pair"):
        _parser(("pair",))


def test_train_options_are_the_config_fields():
    args = build_parser().parse_args(["train", "--out", "m"])
    assert dataclass_from_args(TrainConfig, args) == TrainConfig()
    args = build_parser().parse_args(["train", "--out", "m", "--warmup", "7", "--bf16"])
    assert dataclass_from_args(TrainConfig, args) == TrainConfig(warmup_steps=7, bf16=True)
