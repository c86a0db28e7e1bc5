"""Repair a region: read it with context, find (or take) the damaged spans, fill
them, and write a stem that matches the source sample for sample elsewhere.

The written stem covers exactly the requested region. Inside it, only each
span's *written* stretch (the span plus a short crossfade on both sides) differs
from the source; every other sample is the source's, bit for bit.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import ar, regain
from .audio_io import (
    AudioError,
    AudioInfo,
    Region,
    check_region,
    iter_blocks,
    probe,
    read_region,
    stem_format,
    stem_writer,
    to_frames,
)
from .detect import DetectConfig
from .scan import ProgressFn, scan_frames
from .spans import DamageKind, DamageReport, Span

log = logging.getLogger(__name__)

REGAIN_EDGE_MS = 1.0
WINDOW_MARGIN_S = 0.05  # region reach past a span group: crossfades and regain edges
WRITE_BLOCK = 1 << 18  # frames copied per block when writing a stem


def _no_progress(fraction: float, stage: str) -> None:
    del fraction, stage


@dataclass(frozen=True, slots=True)
class RepairConfig:
    """How a region is repaired."""

    context_s: float = 1.0  # audio read on each side of the region, for detection and AR
    crossfade_ms: float = 1.0  # blend at each span edge (part of the written stretch)
    max_ar_ms: float = 60.0  # AR cannot carry longer gaps; those wait for the MAE model
    min_confidence: float = 0.5  # detected spans below this are reported, not repaired
    detect: DetectConfig = field(default_factory=DetectConfig)
    ar: ar.ARConfig = field(default_factory=ar.ARConfig)


@dataclass(frozen=True, slots=True)
class RepairedSpan:
    """One span and what was done about it (absolute frames of the source)."""

    channel: int
    start: int
    end: int
    kind: str
    confidence: float
    method: str  # "ar", or "none" when left alone
    written_start: int  # first sample that may differ from the source
    written_end: int  # one past the last such sample
    reason: str

    def to_dict(self, sample_rate: int, region_start: int) -> dict:
        return {
            "channel": self.channel,
            "kind": self.kind,
            "confidence": round(self.confidence, 4),
            "method": self.method,
            "reason": self.reason,
            "start": self.start,
            "end": self.end,
            "start_s": self.start / sample_rate,
            "end_s": self.end / sample_rate,
            "duration_ms": 1000.0 * (self.end - self.start) / sample_rate,
            "written_start": self.written_start,
            "written_end": self.written_end,
            # where the change sits inside the stem, which starts at the region's start
            "stem_offset": self.written_start - region_start,
        }


@dataclass(frozen=True, slots=True)
class Patch:
    """Repaired samples of one channel, starting at absolute frame ``start``."""

    channel: int
    start: int
    samples: np.ndarray  # float64

    @property
    def end(self) -> int:
        return self.start + self.samples.size


@dataclass(slots=True)
class RepairReport:
    """Everything a caller (CLI, daemon, DAW) needs to know about one repair.

    The repaired audio itself is the source's region with ``patches`` applied; it
    is rebuilt on demand (:meth:`samples`), so a long region never sits in memory.
    """

    source: Path
    output: Path | None
    info: AudioInfo
    start: int  # the region, absolute frames
    end: int
    spans: list[RepairedSpan]
    detection: DamageReport | None
    timings: dict[str, float]
    patches: list[Patch]

    def samples(
        self, lo: int | None = None, hi: int | None = None, repaired: bool = True
    ) -> np.ndarray:
        """Frames ``[lo, hi)`` of the region (default: all of it), repaired or as found."""
        lo = self.start if lo is None else max(self.start, lo)
        hi = self.end if hi is None else min(self.end, hi)
        out = read_region(self.source, lo, hi).samples
        if repaired:
            apply_patches(out, lo, self.patches)
        return out

    @property
    def repaired(self) -> np.ndarray:
        """The whole stem's samples, (channels, region frames)."""
        return self.samples()

    def to_dict(self) -> dict:
        rate = self.info.sample_rate
        return {
            "source": str(self.source),
            "output": None if self.output is None else str(self.output),
            "audio": self.info.to_dict(),
            "region": {
                "start": self.start,
                "end": self.end,
                "start_s": self.start / rate,
                "end_s": self.end / rate,
            },
            "repaired": sum(s.method != "none" for s in self.spans),
            "left_alone": sum(s.method == "none" for s in self.spans),
            "spans": [s.to_dict(rate, self.start) for s in self.spans],
            "detection": None if self.detection is None else self.detection.to_dict(),
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }


def apply_patches(block: np.ndarray, first: int, patches: Sequence[Patch]) -> None:
    """Write the parts of ``patches`` that fall in ``block`` (frames from ``first``) into it."""
    last = first + block.shape[1]
    for patch in patches:
        lo, hi = max(first, patch.start), min(last, patch.end)
        if lo < hi:
            block[patch.channel, lo - first : hi - first] = patch.samples[
                lo - patch.start : hi - patch.start
            ]


def _decide(span: Span, rate: int, config: RepairConfig) -> tuple[str, str]:
    length_ms = 1000.0 * span.length / rate
    if span.kind is not DamageKind.MARKED and span.confidence < config.min_confidence:
        return "none", f"confidence {span.confidence:.2f} below {config.min_confidence:.2f}"
    if length_ms > config.max_ar_ms:
        return "none", (
            f"{length_ms:.0f} ms is longer than AR interpolation carries "
            f"({config.max_ar_ms:.0f} ms); needs the Audio-MAE model"
        )
    return "ar", f"{length_ms:.1f} ms {span.kind}: two-sided least-squares AR"


def _regain_edge(rate: int) -> int:
    """Samples each side of a regained drop's fall and rise that AR re-draws: a step
    located a few samples off would otherwise stay audible."""
    return max(4, round(REGAIN_EDGE_MS * rate / 1000.0))


def _merge(spans: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """Merge spans whose written stretches would touch, so each sample is written once."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start - merged[-1][1] <= gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _repair_channel(
    signal: np.ndarray,
    gaps: list[tuple[int, int]],
    clip_gaps: list[tuple[int, int]],
    fade: int,
    config: ar.ARConfig,
    progress: Callable[[int, int], None],
) -> np.ndarray:
    """Fill ``gaps`` (indices into ``signal``) and return the repaired channel."""
    # Solve each gap widened by its fades: the margins get the model's own
    # estimate, so a boundary a few samples off leaves no step.
    widened = [(max(0, start - fade), min(signal.size, end + fade)) for start, end in gaps]
    filled = ar.fill_gaps(signal, widened, config, progress)
    # A clipped sample's true value lies beyond the clip level, with its sign:
    # keep the AR estimate only where it respects that.
    for start, end in clip_gaps:
        held = signal[start:end]
        filled[start:end] = np.sign(held) * np.maximum(np.abs(filled[start:end]), np.abs(held))
    out = signal.copy()
    for start, end in gaps:
        lo, hi = max(0, start - fade), min(signal.size, end + fade)
        out[lo:hi] = ar.crossfade_edges(signal, filled, start, end, fade)[lo:hi]
    return out


def repair_region(
    region: Region,
    spans: Sequence[Span],
    config: RepairConfig | None = None,
    progress: ProgressFn = _no_progress,
) -> tuple[np.ndarray, list[RepairedSpan]]:
    """Repair ``spans`` of a region already read; return (stem samples, what was done).

    Spans are in absolute frames; only their part inside the region is repaired.
    """
    config = config or RepairConfig()
    rate = region.info.sample_rate
    fade = max(1, round(config.crossfade_ms * rate / 1000.0))
    base = region.context_start
    plan: list[RepairedSpan] = []
    drops: dict[int, regain.LevelDrop] = {}  # plan index -> located level drop
    for span in spans:
        if span.end <= region.start or span.start >= region.end:
            continue
        method, reason = _decide(span, rate, config)
        written = (max(region.start, span.start - fade), min(region.end, span.end + fade))
        drop = None
        if span.kind is DamageKind.LEVEL_DROP:
            # The signal is still there, only quieter: undo the gain when the edges allow.
            # Locating two matching sharp steps is itself the verification, so this
            # does not wait for the detector's confidence.
            drop = regain.locate(
                region.samples[span.channel], span.start - base, span.end - base, rate
            )
        if drop is not None:
            method = "regain"
            reason = f"level drop of {drop.fall_db:.0f}..{drop.rise_db:.0f} dB: gain restored"
            edge = _regain_edge(rate)
            written = (
                max(region.start, drop.fall - edge - fade + base),
                min(region.end, drop.rise + edge + fade + base),
            )
            drops[len(plan)] = drop
        elif method == "none":
            written = (span.start, span.start)  # nothing written
        plan.append(
            RepairedSpan(
                span.channel,
                span.start,
                span.end,
                str(span.kind),
                span.confidence,
                method,
                *written,
                reason,
            )
        )

    repaired = region.samples.copy()
    ar_config = replace(config.ar, sample_rate=rate)  # AR orders are set in time, not samples
    channels = sorted({p.channel for p in plan if p.method != "none"})
    for done, channel in enumerate(channels):
        signal = region.samples[channel]
        for index, drop in drops.items():
            if plan[index].channel == channel:
                signal = regain.restore(signal, drop, rate)
        todo = [p for p in plan if p.channel == channel and p.method == "ar"]
        edges = [
            (max(0, at - edge), min(signal.size, at + edge))
            for index, drop in drops.items()
            if plan[index].channel == channel
            for at in (drop.fall, drop.rise)
            for edge in (_regain_edge(rate),)
        ]
        gaps = _merge([(p.start - base, p.end - base) for p in todo] + edges, 2 * fade)
        clip_gaps = [(p.start - base, p.end - base) for p in todo if p.kind == DamageKind.CLIP]
        stage = f"repairing channel {channel + 1}"

        def step(filled: int, total: int, done: int = done, stage: str = stage) -> None:
            progress((done + filled / total) / len(channels), stage)

        progress(done / len(channels), stage)
        fixed = _repair_channel(signal, gaps, clip_gaps, fade, ar_config, step) if gaps else signal
        # The stem holds the region only; keep the source's samples outside each
        # span's written stretch (that also drops any crossfade past the region).
        keep = np.ones(fixed.size, dtype=bool)
        for p in plan:
            if p.channel == channel and p.method != "none":
                keep[p.written_start - base : p.written_end - base] = False
        repaired[channel] = np.where(keep, region.samples[channel], fixed)
    progress(1.0, "repaired")
    return repaired[:, region.region_slice], sorted(plan, key=lambda p: (p.start, p.channel))


def parse_spans(text: str, rate: int, channels: int) -> list[Span]:
    """``"1.20:1.25,3.5:3.52"`` (seconds) -> spans on every channel."""
    spans = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            start_s, end_s = (float(v) for v in part.split(":"))
        except ValueError as exc:
            raise AudioError(f"span {part!r} is not START:END in seconds") from exc
        start, end = to_frames(start_s, rate), to_frames(end_s, rate)
        if not 0 <= start < end:
            raise AudioError(f"span {part!r} is empty or negative")
        spans += [Span(start, end, c, DamageKind.MARKED, 1.0) for c in range(channels)]
    return spans


def _clusters(spans: list[Span], gap: int) -> list[list[Span]]:
    """Spans grouped so that each group's context window overlaps no other group's."""
    groups: list[list[Span]] = []
    for span in sorted(spans):
        if groups and span.start - max(s.end for s in groups[-1]) < gap:
            groups[-1].append(span)
        else:
            groups.append([span])
    return groups


def repair_file(
    source: str | os.PathLike,
    output: str | os.PathLike | None,
    start_s: float | None = None,
    end_s: float | None = None,
    spans: str | None = None,
    config: RepairConfig | None = None,
    progress: ProgressFn = _no_progress,
    overwrite: bool = False,
) -> RepairReport:
    """Repair ``[start_s, end_s]`` of ``source`` and write the stem to ``output``.

    ``spans`` is ``None`` to detect damage automatically, or ``"S:E,..."`` in
    seconds. ``output=None`` repairs without writing (a dry run).

    Memory stays bounded for any region length: detection streams over the
    region, each group of nearby spans is repaired from a window read around it,
    and the stem is written block by block, source samples with the patches in.
    """
    config = config or RepairConfig()
    timings = dict.fromkeys(("read", "detect", "repair", "write"), 0.0)
    source = Path(source)
    if output is not None:
        output = Path(output)
        if output.exists() and output.resolve() == source.resolve():
            raise AudioError(f"{output}: refusing to overwrite the source file")
        if output.exists() and not overwrite:
            raise AudioError(f"{output}: already exists (pass --overwrite to replace it)")

    info = probe(source)
    if output is not None:
        stem_format(info.sample_format, output.suffix)  # fail before any work
    rate = info.sample_rate
    start, end = check_region(
        info,
        None if start_s is None else to_frames(start_s, rate),
        None if end_s is None else to_frames(end_s, rate),
    )
    context = round(config.context_s * rate)

    detection = None
    if spans is None:
        clock = time.perf_counter()
        scanned = scan_frames(
            source,
            max(0, start - context),
            min(info.frames, end + context),
            config.detect,
            lambda f, s: progress(0.3 * f, "detecting"),
        )
        found = [s for s in scanned.spans if s.end > start and s.start < end]
        detection = DamageReport(rate, info.num_channels, start, end, found, str(source))
        todo = found
        timings["detect"] = time.perf_counter() - clock
    else:
        todo = parse_spans(spans, rate, info.num_channels)
    progress(0.3, "detected")

    # Each group is repaired from a window of its own; the window's region proper
    # reaches past the spans far enough to hold every written stretch.
    margin = round(WINDOW_MARGIN_S * rate)
    groups = _clusters([s for s in todo if s.end > start and s.start < end], 2 * context)
    plan: list[RepairedSpan] = []
    patches: list[Patch] = []
    for done, group in enumerate(groups):
        clock = time.perf_counter()
        lo = max(start, min(s.start for s in group) - margin)
        hi = min(end, max(s.end for s in group) + margin)
        window = read_region(source, lo, hi, context=context)
        timings["read"] += time.perf_counter() - clock
        clock = time.perf_counter()
        fixed, done_here = repair_region(window, group, config)
        timings["repair"] += time.perf_counter() - clock
        for item in done_here:
            if item.method != "none":
                a, b = item.written_start - lo, item.written_end - lo
                patches.append(Patch(item.channel, item.written_start, fixed[item.channel, a:b]))
        plan += done_here
        progress(0.3 + 0.6 * (done + 1) / len(groups), "repairing")

    if output is not None:
        clock = time.perf_counter()
        with stem_writer(output, rate, info.num_channels, info.sample_format) as write:
            for position, block in iter_blocks(source, start, end, WRITE_BLOCK, exact=True):
                apply_patches(block, position, patches)
                write(block)
                progress(0.9 + 0.1 * (position + block.shape[1] - start) / (end - start), "writing")
        timings["write"] = time.perf_counter() - clock
    progress(1.0, "done")
    plan.sort(key=lambda p: (p.start, p.channel))
    return RepairReport(source, output, info, start, end, plan, detection, timings, patches)
