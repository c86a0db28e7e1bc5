"""Restoration operations on a region: the registry, option checking and the streaming driver.

Two kinds of operation:

* **span ops** (``declip``, ``declick``) find damaged spans and redraw only those
  samples; every other sample of the stem is the source's, bit for bit.
* **region ops** (``dehum``, ``denoise``, ``bandwidth``) analyse the region first
  (hum frequency, noise profile, cutoff), then filter every sample of it; the
  report says so. They run block by block over the region, each block read with
  enough context on both sides that the blocks join without a seam, so a long
  region is processed in bounded memory.

Every op can also find nothing to do (no clipping, no hum, full-band audio); the stem
is then an exact copy of the region and the report says why.

:func:`restore_file` is the one entry point (CLI, daemon); ``OPS`` maps op names
to their :class:`~maedaw.dsp.ops.Op`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maedaw.core.util import ProgressFn

from . import bandwidth, declick, declip, dehum, denoise
from .audio_io import AudioInfo, iter_blocks, prepare_stem_job, read_region, stem_writer
from .ops import Op, OptionError, RegionPlan
from .repair import WRITE_BLOCK, report_header, write_patched  # span ops write like repair

log = logging.getLogger(__name__)

PROCESS_BLOCK_S = 8.0  # region ops filter this much audio (plus context) at a time

OPS: dict[str, Op] = {
    op.name: op for op in (declip.OP, declick.OP, dehum.OP, denoise.OP, bandwidth.OP)
}


def _no_progress(fraction: float, stage: str) -> None:
    del fraction, stage


def get_op(name: str) -> Op:
    if name not in OPS:
        raise OptionError(f"unknown restore op {name!r} (available: {', '.join(sorted(OPS))})")
    return OPS[name]


def validate_options(op: str | Op, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check ``options`` against the op's table; return every option with its value.

    Values may be typed or strings (from a command line); ``"auto"`` (or None) means
    "detect" where the option allows it. Unknown names are refused, so a typo never
    passes silently.
    """
    op = get_op(op) if isinstance(op, str) else op
    options = dict(options or {})
    unknown = sorted(set(options) - set(op.options))
    if unknown:
        known = ", ".join(sorted(op.options)) or "none"
        raise OptionError(f"{op.name} has no option {', '.join(unknown)} (its options: {known})")
    resolved = {}
    for name, spec in op.options.items():
        resolved[name] = spec.parse(name, options[name]) if name in options else spec.default
    return resolved


# ----------------------------------------------------------------------------- report


@dataclass(slots=True)
class RestoreReport:
    """What one restoration did; ``to_dict()`` is the JSON report."""

    op: str
    options: dict[str, Any]
    source: Path
    output: Path | None
    info: AudioInfo
    start: int
    end: int
    kind: str  # "span" or "region"
    changed: bool
    reason: str
    detection: dict
    spans: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def changed_ranges(self) -> list[dict]:
        """Sample ranges (absolute frames, per channel) that may differ from the source."""
        if not self.changed:
            return []
        if self.kind == "region":
            return [
                {"channel": c, "start": self.start, "end": self.end}
                for c in range(self.info.num_channels)
            ]
        return [
            {"channel": s["channel"], "start": s["written_start"], "end": s["written_end"]}
            for s in self.spans
            if s["written_end"] > s["written_start"]
        ]

    def to_dict(self) -> dict:
        ranges = self.changed_ranges()
        return {
            "op": self.op,
            "kind": self.kind,
            "options": self.options,
            **report_header(self.source, self.output, self.info, self.start, self.end),
            "changed": self.changed,
            "what_changed": (
                "every sample of the region (a filter over the whole region)"
                if self.changed and self.kind == "region"
                else "only the listed spans; every other sample is the source's"
                if self.changed
                else "nothing: the stem is an exact copy of the region"
            ),
            "reason": self.reason,
            "detection": self.detection,
            "repaired": sum(s.get("method", "none") != "none" for s in self.spans),
            "left_alone": sum(s.get("method", "none") == "none" for s in self.spans),
            "spans": self.spans,
            "changed_ranges": ranges,
            "changed_samples": sum(r["end"] - r["start"] for r in ranges),
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }

    def summary(self) -> dict:
        """The short summary a daemon sends with ``/maedaw/done``."""
        payload = self.to_dict()
        return {
            "op": self.op,
            "changed": self.changed,
            "repaired": payload["repaired"],
            "left_alone": payload["left_alone"],
            "seconds": round(sum(self.timings.values()), 3),
        }


# ----------------------------------------------------------------------------- driver


def _region_blocks(source: Path, info: AudioInfo, start: int, end: int, plan: RegionPlan) -> Any:
    """Yield ``(first frame, processed block)`` over ``[start, end)``, seamlessly.

    Each block is read with ``plan.context`` frames of real audio on both sides
    (from outside the region where the file has it), aligned to ``plan.align``, so
    an STFT or filter sees the same samples around every output frame wherever the
    block boundaries fall.
    """
    assert plan.process is not None
    block = max(plan.align, round(PROCESS_BLOCK_S * info.sample_rate) // plan.align * plan.align)
    position = start
    while position < end:
        stop = min(end, position + block)
        lo = max(0, (position - plan.context) // plan.align * plan.align)
        hi = min(info.frames, stop + plan.context)
        window = read_region(source, lo, hi).samples
        out = plan.process(window)
        if out.shape != window.shape:
            raise RuntimeError(f"op returned shape {out.shape} for {window.shape}")
        yield position, out[:, position - lo : stop - lo]
        position = stop


def _peak_guard(block: np.ndarray, info: AudioInfo) -> tuple[np.ndarray, int]:
    """Integer stems cannot hold |x| >= 1: soft-limit such peaks, count the samples touched."""
    over = np.abs(block) > 0.999
    if not over.any():
        return block, 0
    knee = 0.95
    mag = np.abs(block)
    limited = np.where(
        mag > knee, knee + (0.999 - knee) * np.tanh((mag - knee) / (0.999 - knee)), mag
    )
    return np.sign(block) * limited, int(over.sum()) if not info.sample_format.is_float else 0


def restore_file(
    source: str | os.PathLike,
    output: str | os.PathLike | None,
    start: float | None = None,
    end: float | None = None,
    op: str = "declip",
    options: Mapping[str, Any] | None = None,
    progress: ProgressFn | None = None,
    overwrite: bool = False,
) -> RestoreReport:
    """Run restoration ``op`` on ``[start, end]`` (seconds; None: the file's ends) of
    ``source`` and write the stem of exactly that region to ``output``.

    The stem has the source's rate, channel count and sample format and is written
    atomically (temporary name, then rename); ``output=None`` analyses and
    processes without writing. ``progress(fraction, stage)`` is called often; it may
    raise to cancel, and then nothing is written. Bad ops/options raise
    :class:`OptionError` before any file is touched.
    """
    progress = progress or _no_progress
    spec = get_op(op)
    resolved = validate_options(spec, options)
    timings = dict.fromkeys(("analyse", "process", "write"), 0.0)
    source = Path(source)
    output = None if output is None else Path(output)
    info, first, last = prepare_stem_job(source, output, start, end, overwrite)
    rate = info.sample_rate
    progress(0.0, "analysing")

    if spec.span_work is not None:
        clock = time.perf_counter()
        result = spec.span_work(
            source, info, first, last, resolved, lambda f, s: progress(0.85 * f, s)
        )
        timings["process"] = time.perf_counter() - clock
        patches = result.patches
        changed = bool(patches)
        report = RestoreReport(
            spec.name,
            resolved,
            source,
            output,
            info,
            first,
            last,
            "span",
            changed,
            f"{sum(s['method'] != 'none' for s in result.spans)} spans redrawn"
            if changed
            else "nothing found to repair",
            result.detection,
            sorted(result.spans, key=lambda s: (s["start"], s["channel"])),
        )
        if output is not None:
            timings["write"] = write_patched(
                source,
                output,
                info,
                first,
                last,
                patches,
                lambda f: progress(0.85 + 0.15 * f, "writing"),
            )
    else:
        assert spec.region_analysis is not None
        clock = time.perf_counter()
        plan = spec.region_analysis(
            source, info, first, last, resolved, lambda f, s: progress(0.3 * f, s)
        )
        timings["analyse"] = time.perf_counter() - clock
        report = RestoreReport(
            spec.name,
            resolved,
            source,
            output,
            info,
            first,
            last,
            "region",
            plan.process is not None,
            plan.reason,
            plan.detection,
        )
        limited = 0
        if output is not None:
            with stem_writer(output, rate, info.num_channels, info.sample_format) as write:
                if plan.process is None:  # nothing to do: an exact copy
                    blocks = iter_blocks(source, first, last, WRITE_BLOCK, exact=True)
                else:
                    blocks = _region_blocks(source, info, first, last, plan)
                for position, block in _timed(blocks, timings, "process"):
                    clock = time.perf_counter()
                    if plan.process is not None:
                        block, touched = _peak_guard(block, info)
                        limited += touched
                    write(block)
                    timings["write"] += time.perf_counter() - clock
                    progress(
                        0.3 + 0.7 * (position + block.shape[1] - first) / (last - first),
                        "filtering" if plan.process is not None else "copying",
                    )
        if limited:
            report.detection["soft_limited_samples"] = limited
    report.timings = timings
    progress(1.0, "done")
    return report


def _timed(items: Any, timings: dict[str, float], key: str) -> Any:
    """Iterate ``items``, adding the time spent producing each one to ``timings[key]``."""
    iterator = iter(items)
    while True:
        clock = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        timings[key] += time.perf_counter() - clock
        yield item


def process_array(
    samples: np.ndarray,
    rate: int,
    op: str,
    options: Mapping[str, Any] | None = None,
    sample_format: str = "float32",
) -> tuple[np.ndarray, RestoreReport]:
    """Restore an in-memory ``(channels, frames)`` float array (benchmarks, notebooks).

    Runs the same code path as :func:`restore_file` through a temporary WAV file, so
    results are the ones the CLI would give.
    """
    import tempfile

    from .audio_io import SampleFormat, write_stem

    with tempfile.TemporaryDirectory(prefix="maedaw-restore-") as folder:
        src = Path(folder) / "in.wav"
        dst = Path(folder) / "out.wav"
        write_stem(src, np.atleast_2d(samples), rate, SampleFormat(sample_format))
        report = restore_file(src, dst, None, None, op, options)
        out = read_region(dst).samples
    return out, report
