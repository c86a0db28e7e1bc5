"""Declicking: the repair pipeline restricted to clicks.

Detection is :mod:`dsp.detect`'s click detector (whitened-signal candidates verified
by two-sided AR prediction, streaming over the region); each click is redrawn by
two-sided LSAR interpolation with short crossfades (:mod:`dsp.repair`), so only the
clicks' written stretches change. ``sensitivity`` scales the detector's thresholds
(2 = half the evidence needed: more, smaller clicks; 0.5 = only loud ones).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from maedaw.core.util import ProgressFn

from .audio_io import AudioInfo
from .detect import DetectConfig
from .ops import Op, Option, SpanResult
from .repair import Patch, RepairConfig, repair_file
from .spans import DamageKind


def click_config(options: dict) -> RepairConfig:
    """The repair settings that make ``repair_file`` a click-only declicker."""
    base = DetectConfig()
    sensitivity = options["sensitivity"]
    detect = replace(
        base,
        kinds=frozenset({DamageKind.CLICK}),
        click_k=base.click_k / sensitivity,
        click_candidate_k=base.click_candidate_k / sensitivity,
        click_min_amplitude=base.click_min_amplitude / sensitivity,
        click_max_samples=max(1, options["max_samples"]),
    )
    # The user chose this op and its thresholds: no auto-repair sensitivity on top.
    return RepairConfig(detect=detect, min_confidence=options["min_confidence"], sensitivity=None)


def declick_work(
    source: Path, info: AudioInfo, start: int, end: int, options: dict, progress: ProgressFn
) -> SpanResult:
    rate = info.sample_rate
    # A dry run (no output) of the repair pipeline gives the patches without writing;
    # the restore driver writes the stem.
    report = repair_file(
        source, None, start / rate, end / rate, None, click_config(options), progress
    )
    if (report.start, report.end) != (start, end):  # seconds -> frames must round-trip
        raise RuntimeError(f"region moved: {(report.start, report.end)} != {(start, end)}")
    patches = [Patch(p.channel, p.start, p.samples) for p in report.patches]
    spans = [s.to_dict(rate, start) for s in report.spans]
    detection = {
        "clicks_found": len(report.spans),
        "sensitivity": options["sensitivity"],
    }
    return SpanResult(patches, spans, detection)


OP = Op(
    name="declick",
    summary="find clicks and redraw them by two-sided AR interpolation",
    options={
        "sensitivity": Option(
            float, 1.0, "detector sensitivity (x thresholds^-1)", low=0.25, high=4.0
        ),
        "min_confidence": Option(
            float, 0.25, "clicks found with less confidence are left alone", low=0.0, high=1.0
        ),
        "max_samples": Option(
            int, 128, "longer impulsive stretches are not clicks", low=1, high=4096
        ),
    },
    span_work=declick_work,
)
