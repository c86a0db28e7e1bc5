"""The types a restoration op is made of: its options, its work, and its errors.

Each op module (``declip``, ``declick``, ``dehum``, ``denoise``, ``bandwidth``) builds one
:class:`Op` from these; :mod:`maedaw.dsp.restore` collects them into its registry and
drives them. This module imports neither, so both import it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from maedaw.core.util import ProgressFn

from .audio_io import AudioError, AudioInfo
from .repair import Patch

Result = TypeVar("Result", covariant=True)


class RestoreError(AudioError):
    """A restoration that cannot run as asked (the CLI prints it as ``error: ...``)."""


class OptionError(RestoreError, ValueError):
    """An unknown op, an unknown option, or an option value out of range."""


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class Option:
    """One op option: its type, default, allowed range and a line of help.

    ``kind`` is ``float``, ``int``, ``bool`` or ``str``; ``auto`` allows the string
    ``"auto"`` (meaning: detect it) besides numbers; ``choices`` limits strings.
    """

    kind: type
    default: Any
    help: str
    low: float | None = None  # inclusive bounds for numbers
    high: float | None = None
    auto: bool = False
    choices: tuple[str, ...] = ()

    def parse(self, name: str, value: Any) -> Any:
        if self.auto and (value is None or (isinstance(value, str) and value.lower() == "auto")):
            return None
        if self.kind is bool:
            return _parse_bool(name, value)
        if self.kind is str:
            text = str(value)
            if self.choices and text not in self.choices:
                allowed = ", ".join(self.choices)
                raise OptionError(f"option {name}: {text!r} is not one of {allowed}")
            return text
        try:
            if isinstance(value, bool):
                raise TypeError
            number = self.kind(float(value)) if self.kind is float else _to_int(value)
        except (TypeError, ValueError):
            what = "a number" if self.kind is float else "a whole number"
            extra = " or 'auto'" if self.auto else ""
            raise OptionError(f"option {name}: {value!r} is not {what}{extra}") from None
        if self.kind is float and not math.isfinite(number):
            raise OptionError(f"option {name}: {value!r} is not a finite number")
        if (self.low is not None and number < self.low) or (
            self.high is not None and number > self.high
        ):
            raise OptionError(f"option {name}: {number} is outside [{self.low}, {self.high}]")
        return number


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise OptionError(f"option {name}: {value!r} is not true/false")


def _to_int(value: Any) -> int:
    number = float(value)
    if not number.is_integer():
        raise ValueError
    return int(number)


# ----------------------------------------------------------------------------- ops


@dataclass(slots=True)
class SpanResult:
    """What a span op did: the patches to write, and report lines for each span."""

    patches: list[Patch]
    spans: list[dict]  # channel, start, end, method, reason ... (absolute frames)
    detection: dict  # what was found (levels, counts); goes into the report


@dataclass(slots=True)
class RegionPlan:
    """A region op's analysis: whether to change anything, and the block processor."""

    detection: dict  # what was found; goes into the report
    process: Callable[[np.ndarray], np.ndarray] | None  # (ch, n) -> (ch, n); None: no change
    context: int = 0  # frames of context each block needs on each side
    align: int = 1  # block reads start on multiples of this (STFT hop: seamless joins)
    reason: str = ""  # why nothing changes, or what changes


class OpWork(Protocol[Result]):
    """What an op runs on ``[start, end)`` frames of ``source`` with its resolved options."""

    def __call__(
        self,
        source: Path,
        info: AudioInfo,
        start: int,
        end: int,
        options: dict,
        progress: ProgressFn,
    ) -> Result: ...


SpanWork = OpWork[SpanResult]
RegionAnalysis = OpWork[RegionPlan]


@dataclass(frozen=True, slots=True)
class Op:
    """A restoration operation: either span work or a region analysis (never both)."""

    name: str
    summary: str
    options: Mapping[str, Option]
    span_work: SpanWork | None = None
    region_analysis: RegionAnalysis | None = None

    @property
    def kind(self) -> str:
        return "span" if self.span_work is not None else "region"
