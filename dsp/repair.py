"""Repair a region: read it with context, find (or take) the damaged spans, fill
them, and write a stem that matches the source sample for sample elsewhere.

The written stem covers exactly the requested region. Inside it, only each
span's *written* stretch (the span plus a short crossfade on both sides) differs
from the source; every other sample is the source's, bit for bit.

Which method fills a span (the hybrid policy, :func:`decide`): level drops get their
gain back; clipped runs and clicks, and every gap when no model is loaded, go to
two-sided AR interpolation (exact waveform continuation, reliable up to a few tens
of ms). With an inpainter (:class:`~maedaw.dsp.inpainting.Inpainter`: the caller's, e.g.
the Audio-MAE model of ``maedaw.models.inpaint``; dsp loads none), gaps up to
``ar_only_ms`` stay with AR, gaps up to ``blend_until_ms`` are AR at the edges fading
into the model's spectral inpainting in the middle, and longer ones (up to what the
model can fill) are inpainted; with any model loaded, gaps up to ``periodic_ar_until_ms``
whose context is periodic (:func:`~maedaw.dsp.ar.periodicity`) stay with AR, whose pitch
excitation carries sustained tones and voiced speech through, and so do gaps up to
``max_ar_ms`` in a train of gaps (packet loss). A dropout or marked gap on
one channel while another channel is intact and predicts it well is taken from that
channel instead, at any length and with or without a model (:mod:`maedaw.dsp.crosschannel`).
With a learned concealment model (``concealer``, e.g. ``maedaw.models.concealment``), gaps
up to its reach follow a table per length (``RepairConfig.plc_with_mae`` /
``plc_without_mae``), measured per method. The report says which method was used and why.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from maedaw.core.util import (
    CountFn,
    FractionFn,
    ProgressFn,
    blas_controller,
    blas_threads,
    merge_intervals,
)

from . import ar, crosschannel, regain
from .audio_io import (
    AudioError,
    AudioInfo,
    Region,
    SampleFormat,
    iter_blocks,
    prepare_stem_job,
    read_region,
    stem_writer,
    to_frames,
)
from .detect import DetectConfig, sensitivity
from .inpainting import Inpainter
from .scan import scan_frames
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
    max_ar_ms: float = 60.0  # AR cannot carry longer gaps; without a model they are left alone
    # Detected spans the sensitivity doubts (low confidence for their kind, or a transient
    # guard: see dsp.detect.Sensitivity) are reported, not repaired; min_confidence is an
    # extra floor for every kind. None: min_confidence alone decides (the declick op, which
    # the user runs on purpose with its own thresholds).
    sensitivity: str | None = "normal"
    min_confidence: float = 0.0
    # With a model (hybrid policy): AR up to ar_only_ms, AR edges blended into the
    # model's fill up to blend_until_ms, the model alone beyond. Measured on training-split
    # clips with plain AR: the blend beat AR from 20 ms and the model alone at every
    # length; past 60 ms its gain over the model alone is 0.1-0.5 dB LSD while the AR solve
    # grows as length x order^2, so long gaps go to the model alone.
    # (Session 25: raising this to 21 ms, one 20 ms packet, cost 0.26 dB mean LSD at 20 ms
    # against the periodic rule below and gained no PLCMOS once the train rule was in.)
    ar_only_ms: float = 15.0
    blend_until_ms: float = 60.0
    # Whatever the models: a gap-like span up to periodic_ar_until_ms whose context is
    # periodic (ar.periodicity >= periodic_ar_min on both sides: sustained tones, voiced
    # speech) stays with AR, whose pitch excitation carries the waveform through where
    # the model's spectral fill smears it. Chosen per clip on the tuning split (results.md,
    # session 25): 7-family mean LSD at 20/30/40 ms 6.02/7.17/7.21 (hybrid) ->
    # 5.73/6.93/6.91 (a looser 0.5: 5.84/7.12/7.15). At 60 ms AR on voiced speech loses
    # 0.3-0.8 dB, so the rule stops at 40.
    periodic_ar_until_ms: float = 40.0
    periodic_ar_min: float = 0.85
    # A gap-like span up to max_ar_ms with at least train_min_others other gap-like spans on
    # its channel within train_window_s (packet loss: a train of short losses) stays with
    # AR too: AR solves neighbouring gaps jointly, while the models' fills lose the context
    # the train has punched full of holes. Speech PLCMOS on the tuning split, 20 ms packets
    # at 10/20/30 % loss: 0.808/0.749/0.679 without it -> 0.850/0.830/0.743 (results.md,
    # session 25); single gaps (every LSD cell of bench repair) are not trains.
    train_window_s: float = 0.5
    train_min_others: int = 2
    # AR fills the gaps of a train from a shorter context (train_ar_context_multiple x its
    # order each side instead of ARConfig.context_multiple) and re-fits once on its own fill
    # (train_ar_iterations): speech does not hold still for 2 x 10 ms around each packet.
    # Speech PLCMOS on the tuning split, 20 ms packets at 10/20/30 % loss: 0.850/0.830/0.743
    # -> 0.902/0.841/0.788 (1.5 alone 0.892/0.839; 1.0 0.894/0.839/0.768; 3.0 0.831/0.800;
    # results.md, session 26). On single gaps the shorter context cost up to 0.09 dB mean LSD
    # at 40 ms, so it stays with trains.
    train_ar_context_multiple: float = 1.5
    train_ar_iterations: int = 1
    blend_ramp_ms: float = 10.0  # AR -> model transition inside a blended gap
    # With the learned concealment model (models/concealment.py) loaded: per gap length
    # (rows: up to that many ms -> method), one table when the Audio-MAE is also loaded, one
    # when it is not. "hybrid" hands the gap to the MAE policy above; longer gaps than the
    # last row (or than the concealer fills) go on as without it. Chosen on the tuning split
    # (source-disjoint held-out, 36 clips per family, the shipped concealer; results.md,
    # session 20): AR wins at 10 ms everywhere; from 20 ms the MAE policy beats the
    # concealer (AR edges or alone) by 0.1-0.8 dB LSD per family (one exception: speech at
    # 120 ms, 0.3 dB the other way) and in PLCMOS at 10/20 % loss, so with the MAE the
    # concealer is not used; without it, AR edges + the concealer beat AR from 20 ms and
    # the concealer alone at every length (120 ms included).
    # (The periodic and train rules below come first, with either table.)
    plc_with_mae: tuple[tuple[float, str], ...] = (
        (15.0, "ar"),
        (120.0, "hybrid"),
    )
    plc_without_mae: tuple[tuple[float, str], ...] = (
        (15.0, "ar"),
        (120.0, "plc-blend"),
    )
    mae_context_s: float = 5.2  # read around spans the model fills (half its 10.24 s window)
    mae_group_s: float = 8.0  # model spans this close share one window (one model call)
    detect: DetectConfig = field(default_factory=DetectConfig)
    ar: ar.ARConfig = field(default_factory=ar.ARConfig)
    # A gap on one channel while another channel is intact: predicted from that channel
    # when it fits well enough (dsp/crosschannel.py), whatever the gap's length.
    cross: crosschannel.CrossChannelConfig = field(default_factory=crosschannel.CrossChannelConfig)


@dataclass(frozen=True, slots=True)
class RepairedSpan:
    """One span and what was done about it (absolute frames of the source)."""

    channel: int
    start: int
    end: int
    kind: str
    confidence: float
    # "ar", "regain", "mae", "blend" (AR edges, model middle), "channel" (predicted from an
    # intact channel), "none" = left alone
    method: str
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


def write_patched(
    source: Path,
    output: Path,
    info: AudioInfo,
    start: int,
    end: int,
    patches: Sequence[Patch],
    progress: FractionFn,
) -> float:
    """Copy frames ``[start, end)`` of ``source`` to the stem ``output`` block by block with
    ``patches`` applied (every other sample bit-identical); returns the seconds it took."""
    clock = time.perf_counter()
    with stem_writer(output, info.sample_rate, info.num_channels, info.sample_format) as write:
        for position, block in iter_blocks(source, start, end, WRITE_BLOCK, exact=True):
            apply_patches(block, position, patches)
            write(block)
            progress((position + block.shape[1] - start) / (end - start))
    return time.perf_counter() - clock


def report_header(source: Path, output: Path | None, info: AudioInfo, start: int, end: int) -> dict:
    """The part every stem report opens with: where from, where to, the audio, the region."""
    rate = info.sample_rate
    return {
        "source": str(source),
        "output": None if output is None else str(output),
        "audio": info.to_dict(),
        "region": {"start": start, "end": end, "start_s": start / rate, "end_s": end / rate},
    }


# DAW markers travel in the done reply's summary, which must stay one datagram
# (docs/osc.md): at most this many, labels at most this long.
MARKS_MAX = 32
MARK_LABEL_MAX = 96
_METHOD_WORDS = {
    "ar": "AR",
    "plc": "learned concealment",
    "plc-blend": "AR + learned concealment",
    "regain": "gain restored",
    "mae": "Audio-MAE",
    "blend": "AR + Audio-MAE",
    "channel": "from another channel",
}
_MARK_UNSAFE = str.maketrans({c: " " for c in '"\\{}[]\n\r\t'})


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

    def marks(self, limit: int = MARKS_MAX) -> list[dict]:
        """Markers for the DAW, in time order, at most ``limit``: where each span starts in
        the stem (seconds; the stem starts at the region's start), how long it is and a
        one-line label saying what was done or why it was left alone."""
        multichannel = self.info.num_channels > 1
        rate = self.info.sample_rate
        out = []
        for span in sorted(self.spans, key=lambda s: (s.start, s.channel))[:limit]:
            ms = 1000.0 * (span.end - span.start) / rate
            length = f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"
            where = f" ch{span.channel + 1}" if multichannel else ""
            if span.method == "none":
                # the reason's first clause: "rings on after the impulse (4 dB tail)"
                why = re.split(r"[:,;] ", span.reason.removeprefix("left alone: "))[0]
                done = f"left alone ({why})"
            else:
                done = f"repaired ({_METHOD_WORDS.get(span.method, span.method)})"
            label = f"{span.kind.replace('_', ' ')} {length}{where}: {done}"
            # One line without JSON's special characters: the DAW side parses it simply.
            label = textwrap.shorten(
                label.translate(_MARK_UNSAFE), MARK_LABEL_MAX, placeholder="..."
            )
            out.append(
                {
                    "at": round((span.start - self.start) / rate, 6),
                    "length": round((span.end - span.start) / rate, 6),
                    "label": label,
                }
            )
        return out

    def to_dict(self) -> dict:
        rate = self.info.sample_rate
        return {
            **report_header(self.source, self.output, self.info, self.start, self.end),
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


GAP_KINDS = (DamageKind.DROPOUT, DamageKind.MARKED, DamageKind.LEVEL_DROP)
MODEL_METHODS = ("mae", "blend")
PLC_METHODS = ("plc", "plc-blend")
CONCEALMENT_METHODS = ("ar", "plc", "plc-blend", "hybrid")
CONCEALMENT_TABLE_NOTE = (
    "chosen by gap length on the source-disjoint held-out clips (benchmarks/results.md, "
    "session 20): LSD and gap SNR per method and length, PLCMOS at 10/20/30 % loss"
)


def _doubt(span: Span, config: RepairConfig) -> str:
    """Why the configured sensitivity leaves ``span`` alone ("": it does not)."""
    return "" if config.sensitivity is None else sensitivity(config.sensitivity).doubt(span)


def concealment_choice(
    length_ms: float, config: RepairConfig, with_mae: bool, plc_max_ms: float
) -> str | None:
    """The concealment table's method for a gap (None: the table has no row for it)."""
    if length_ms > plc_max_ms:
        return None
    for up_to, method in config.plc_with_mae if with_mae else config.plc_without_mae:
        if method not in CONCEALMENT_METHODS:
            raise ValueError(
                f"concealment table method {method!r} is not one of "
                f"{', '.join(CONCEALMENT_METHODS)}"
            )
        if length_ms <= up_to:
            return method
    return None


def decide(
    span: Span,
    rate: int,
    config: RepairConfig,
    model_max_ms: float | None = None,
    plc_max_ms: float | None = None,
    periodicity: float | None = None,
    train: int = 0,
) -> tuple[str, str]:
    """The method for one span and why: ``("ar" | "mae" | "blend" | "plc" | "plc-blend" |
    "none", reason)``.

    ``model_max_ms`` is the longest gap the loaded Audio-MAE fills, ``plc_max_ms`` the
    longest the learned concealment model fills (None: not loaded). ``periodicity`` is
    :func:`maedaw.dsp.ar.periodicity` of the span's context (None: not measured), ``train``
    the number of other gap-like spans on its channel within ``train_window_s``. Level
    drops are planned like gaps here; :func:`repair_region` restores their gain instead
    when their edges can be located.
    """
    length_ms = 1000.0 * span.length / rate
    if span.kind is not DamageKind.MARKED and span.confidence < config.min_confidence:
        return "none", f"confidence {span.confidence:.2f} below {config.min_confidence:.2f}"
    doubt = _doubt(span, config)
    if doubt:
        return "none", f"left alone: {doubt}"
    gap_like = span.kind in GAP_KINDS
    models = model_max_ms is not None or plc_max_ms is not None
    if (
        models
        and gap_like
        and train >= config.train_min_others
        and config.ar_only_ms < length_ms <= config.max_ar_ms
    ):
        return "ar", (
            f"{length_ms:.1f} ms {span.kind}: AR with pitch excitation (one of a train of "
            f"{train + 1} gaps within {config.train_window_s:g} s, e.g. packet loss: AR fills "
            "them together, the models would read a context full of holes)"
        )
    if (
        models
        and gap_like
        and periodicity is not None
        and periodicity >= config.periodic_ar_min
        and config.ar_only_ms < length_ms <= min(config.periodic_ar_until_ms, config.max_ar_ms)
    ):
        return "ar", (
            f"{length_ms:.1f} ms {span.kind}: AR with pitch excitation (periodic context, "
            f"{periodicity:.2f} >= {config.periodic_ar_min:.2f}: it carries the waveform "
            "through, which the models' fills cannot)"
        )
    if plc_max_ms is not None and gap_like:
        with_mae = model_max_ms is not None
        choice = concealment_choice(length_ms, config, with_mae, plc_max_ms)
        table = "with the Audio-MAE" if with_mae else "without the Audio-MAE"
        if choice == "plc":
            return "plc", (
                f"{length_ms:.0f} ms {span.kind}: learned concealment (two-sided network; "
                f"concealment table {table})"
            )
        if choice == "plc-blend":
            return "plc-blend", (
                f"{length_ms:.1f} ms {span.kind}: AR at the edges, learned concealment in the "
                f"middle (concealment table {table})"
            )
        if choice == "ar" and length_ms <= config.max_ar_ms:
            return "ar", (
                f"{length_ms:.1f} ms {span.kind}: AR (concealment table {table}: AR "
                "continues the waveform best this short)"
            )
    if model_max_ms is None or not gap_like:
        if length_ms > config.max_ar_ms:
            need = "needs the Audio-MAE model" if gap_like else "too long to interpolate"
            return "none", (
                f"{length_ms:.0f} ms is longer than AR interpolation carries "
                f"({config.max_ar_ms:.0f} ms); {need}"
            )
        if span.kind is DamageKind.CLIP:
            return "ar", f"{length_ms:.1f} ms clip: AR, kept beyond the clip level"
        return "ar", f"{length_ms:.1f} ms {span.kind}: two-sided least-squares AR"
    if length_ms > model_max_ms:
        return "none", (
            f"{length_ms:.0f} ms is longer than the Audio-MAE model fills ({model_max_ms:.0f} ms)"
        )
    if length_ms <= config.ar_only_ms:
        return "ar", (
            f"{length_ms:.1f} ms {span.kind}: AR (up to {config.ar_only_ms:.0f} ms it continues "
            "the waveform itself, which the model cannot)"
        )
    if length_ms <= config.blend_until_ms:
        return "blend", (
            f"{length_ms:.1f} ms {span.kind}: AR at the edges, Audio-MAE inpainting in the "
            f"middle ({config.ar_only_ms:.0f}-{config.blend_until_ms:.0f} ms)"
        )
    return "mae", (
        f"{length_ms:.0f} ms {span.kind}: Audio-MAE spectral inpainting (AR decays over "
        f"gaps longer than {config.blend_until_ms:.0f} ms)"
    )


def _regain_edge(rate: int) -> int:
    """Samples each side of a regained drop's fall and rise that AR re-draws: a step
    located a few samples off would otherwise stay audible."""
    return max(4, round(REGAIN_EDGE_MS * rate / 1000.0))


def _repair_channel(
    signal: np.ndarray,
    gaps: list[tuple[int, int]],
    clip_gaps: list[tuple[int, int]],
    fade: int,
    config: ar.ARConfig,
    progress: CountFn,
    edges_only: Sequence[tuple[int, int]] = (),
    configs: Sequence[ar.ARConfig] | None = None,
    in_train: Sequence[tuple[int, int]] = (),
    train_config: ar.ARConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fill ``gaps`` (indices into ``signal``); return (repaired channel, raw AR estimate).
    Of the gaps inside ``edges_only`` only the edges are kept (blended into a model's
    fill): they skip AR's order search. ``configs``: each cluster's AR settings, already
    chosen (on the channels' mix). The gaps in ``in_train`` (some of ``gaps``) are filled
    with ``train_config`` in a second pass; each pass holds the other's gaps as unknown."""
    widened, no_search = _widened(gaps, edges_only, fade, signal.size)
    if in_train and train_config is not None:
        trains = set(in_train)
        others = [w for g, w in zip(gaps, widened, strict=True) if g not in trains]
        train = [w for g, w in zip(gaps, widened, strict=True) if g in trains]

        def first(done: int, total: int) -> None:
            progress(done, 2 * total)

        def second(done: int, total: int) -> None:
            progress(total + done, 2 * total)

        filled = ar.fill_gaps(signal, others, config, first, no_search, holes=train)
        filled_train = ar.fill_gaps(signal, train, train_config, second, no_search, holes=others)
        for a, b in train:
            filled[a:b] = filled_train[a:b]
    else:
        filled = ar.fill_gaps(signal, widened, config, progress, no_search, configs)
    # A clipped sample's true value lies beyond the clip level, with its sign:
    # keep the AR estimate only where it respects that.
    for start, end in clip_gaps:
        held = signal[start:end]
        filled[start:end] = np.sign(held) * np.maximum(np.abs(filled[start:end]), np.abs(held))
    out = signal.copy()
    for start, end in gaps:
        lo, hi = max(0, start - fade), min(signal.size, end + fade)
        out[lo:hi] = ar.crossfade_edges(signal, filled, start, end, fade)[lo:hi]
    return out, filled


def _blend(ar_fill: np.ndarray, model_fill: np.ndarray, start: int, end: int, ramp: int) -> None:
    """In place: ``ar_fill[start:end]`` becomes AR at both edges, the model in the middle.

    Equal-power ramps: a few ms into a gap the two estimates are uncorrelated, and an
    equal-gain mix of uncorrelated signals would dip by up to 3 dB.
    """
    length = end - start
    ramp = max(1, min(ramp, length // 2))
    t = np.ones(length)
    edge = np.sin(0.5 * np.pi * (np.arange(ramp) + 0.5) / ramp)
    t[:ramp] = edge
    t[length - ramp :] = np.minimum(t[length - ramp :], edge[::-1])
    mix = np.sqrt(1.0 - t**2) * ar_fill[start:end] + t * model_fill[start:end]
    ar_fill[start:end] = mix


def _check_inpainter(inpainter: Inpainter | None) -> None:
    """Refuse early what cannot fill gaps (e.g. a model's name: callers load models)."""
    if inpainter is not None and not isinstance(inpainter, Inpainter):
        raise TypeError(
            "inpainter must be an Inpainter or None (it needs max_gap_s, fade and fill), "
            f"not {type(inpainter).__name__}"
        )


def _model_max_ms(inpainter: Inpainter | None) -> float | None:
    return None if inpainter is None else 1000.0 * inpainter.max_gap_s


def _train_counts(spans: Sequence[Span], damaged: Sequence[Span], window: int) -> list[int]:
    """For each of ``spans``: how many other gap-like spans (of ``spans`` and ``damaged``)
    lie on its channel within ``window`` frames; 0 for spans that are not gap-like.
    Per channel the starts and ends are sorted once, so a region with thousands of
    packet losses is counted in O(n log n), not O(n^2)."""
    by_channel: dict[int, list[tuple[int, int]]] = {}
    for other in (*spans, *damaged):
        if other.kind in GAP_KINDS:
            by_channel.setdefault(other.channel, []).append((other.start, other.end))
    sorted_edges = {
        channel: (np.sort([a for a, _ in pairs]), np.sort([b for _, b in pairs]), Counter(pairs))
        for channel, pairs in by_channel.items()
    }
    counts = []
    for span in spans:
        if span.kind not in GAP_KINDS:
            counts.append(0)
            continue
        starts, ends, same = sorted_edges[span.channel]
        # others overlapping (start - window, end + window): those starting before its far
        # end, less those ending before its near end; spans identical to it do not count
        near = int(np.searchsorted(starts, span.end + window, side="left"))
        gone = int(np.searchsorted(ends, span.start - window, side="right"))
        counts.append(near - gone - same[(span.start, span.end)])
    return counts


def _undamaged(region: Region, channel: int, spans: Sequence[Span]) -> np.ndarray:
    """Which samples of ``channel`` in the region's window no span covers."""
    base = region.context_start
    known = np.ones(region.samples.shape[1], dtype=bool)
    for other in spans:
        if other.channel == channel:
            known[max(0, other.start - base) : max(0, other.end - base)] = False
    return known


def _context_periodicity(
    region: Region,
    span: Span,
    undamaged: Callable[[int], np.ndarray],
    config: RepairConfig,
    inpainter: Inpainter | None,
    concealer: Inpainter | None,
) -> float | None:
    """:func:`ar.periodicity` of ``span``'s context when the policy would use it (a model
    loaded, a gap-like span in the periodic range), else None. ``undamaged(channel)`` marks
    the samples that may be context (other spans and known damage may not)."""
    if inpainter is None and concealer is None:
        return None
    if span.kind not in GAP_KINDS:
        return None
    rate = region.info.sample_rate
    length_ms = 1000.0 * span.length / rate
    if not config.ar_only_ms < length_ms <= config.periodic_ar_until_ms:
        return None
    base = region.context_start
    samples = region.samples[span.channel]
    start, end = max(0, span.start - base), min(samples.shape[0], span.end - base)
    return ar.periodicity(
        samples, undamaged(span.channel), start, end, replace(config.ar, sample_rate=rate)
    )


def _widened(
    gaps: Sequence[tuple[int, int]], edges_only: Sequence[tuple[int, int]], fade: int, n: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The gaps AR solves, each widened by its fades: the margins get the model's own
    estimate, so a boundary a few samples off leaves no step."""

    def widen(start: int, end: int) -> tuple[int, int]:
        return max(0, start - fade), min(n, end + fade)

    return [widen(*gap) for gap in gaps], [widen(*gap) for gap in edges_only]


class _ChannelWork(NamedTuple):
    """One channel's AR job (indices into the region's window)."""

    signal: np.ndarray  # the channel with its level drops regained
    gaps: list[tuple[int, int]]  # what AR fills (spans merged where their writes touch)
    clip_gaps: list[tuple[int, int]]  # of those, clipped stretches (keep sign and level)
    edges_only: list[tuple[int, int]]  # blends: AR keeps only their edges
    in_train: list[tuple[int, int]]  # gaps holding a span of a train (second pass)

    def same_gaps(self, other: _ChannelWork) -> bool:
        return self[1:] == other[1:]


def _shared_configs(
    work: dict[int, _ChannelWork],
    busy: list[int],
    config: ar.ARConfig,
    fade: int,
    map_fn: Callable,
) -> list[ar.ARConfig] | None:
    """AR settings chosen once on the mix of channels that share all their gaps (a dropout
    in every channel), or None (each channel searches its own). The mix is only trusted
    when it keeps most of the channels' energy: near anti-phase channels cancel in it."""
    if len(busy) < 2 or not all(work[c].same_gaps(work[busy[0]]) for c in busy[1:]):
        return None
    if any(work[c].in_train for c in busy):
        return None  # trains are solved in two passes, each choosing its own
    signals = np.stack([work[c].signal for c in busy])
    mix = signals.mean(axis=0)
    if np.sum(mix**2) < 0.25 * np.mean(np.sum(signals**2, axis=1)):
        return None
    first = work[busy[0]]
    widened, no_search = _widened(first.gaps, first.edges_only, fade, mix.size)
    return ar.choose_configs(mix, widened, config, no_search, map_fn)


def repair_region(
    region: Region,
    spans: Sequence[Span],
    config: RepairConfig | None = None,
    progress: ProgressFn = _no_progress,
    inpainter: Inpainter | None = None,
    damaged: Sequence[Span] = (),
    concealer: Inpainter | None = None,
) -> tuple[np.ndarray, list[RepairedSpan]]:
    """Repair ``spans`` of a region already read; return (stem samples, what was done).

    Spans are in absolute frames; only their part inside the region is repaired.
    ``inpainter`` (None: AR only) enables the model's methods; ``damaged`` lists other
    known damage in the region's context, which the model must not take as context.
    """
    config = config or RepairConfig()
    _check_inpainter(inpainter)
    _check_inpainter(concealer)
    rate = region.info.sample_rate
    fade = max(1, round(config.crossfade_ms * rate / 1000.0))
    model_fade = inpainter.fade(rate) if inpainter is not None else fade
    plc_fade = concealer.fade(rate) if concealer is not None else fade
    base = region.context_start
    plan: list[RepairedSpan] = []
    drops: dict[int, regain.LevelDrop] = {}  # plan index -> located level drop

    @functools.cache
    def undamaged(channel: int) -> np.ndarray:  # one mask per channel, not per span
        return _undamaged(region, channel, (*spans, *damaged))

    trains: list[tuple[int, int, int]] = []  # (channel, start, end) of spans in a train
    in_reach = _train_counts(spans, damaged, round(config.train_window_s * rate))
    for span, train in zip(spans, in_reach, strict=True):
        if span.end <= region.start or span.start >= region.end:
            continue
        if train >= config.train_min_others:
            trains.append((span.channel, span.start - base, span.end - base))
        method, reason = decide(
            span,
            rate,
            config,
            _model_max_ms(inpainter),
            _model_max_ms(concealer),
            _context_periodicity(region, span, undamaged, config, inpainter, concealer),
            train,
        )
        reach = {"mae": model_fade, "plc": plc_fade}.get(method, fade)
        written = (max(region.start, span.start - reach), min(region.end, span.end + reach))
        drop = None
        if span.kind is DamageKind.LEVEL_DROP and not _doubt(span, config):
            # The signal is still there, only quieter: undo the gain when the edges allow.
            # Locating two matching sharp steps is itself the verification, so this
            # does not wait for min_confidence (the sensitivity's doubts still hold).
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

    fits = _cross_channel_plan(region, plan, spans, damaged, config, fade)
    model_fills = _model_fills(region, plan, damaged, inpainter, rate)
    plc_fills = _model_fills(region, plan, damaged, concealer, rate, PLC_METHODS)
    repaired = region.samples.copy()
    ar_config = replace(config.ar, sample_rate=rate)  # AR orders are set in time, not samples
    channels = sorted({p.channel for p in plan if p.method != "none"})
    solved = _ar_channels(region, plan, drops, ar_config, fade, progress, trains, config)
    for channel in channels:
        signal, fixed, ar_fill = solved[channel]
        # MAE and concealment fills land alike: alone (crossfaded with the filler's own
        # fade) or blended into AR's edges (crossfaded like AR).
        fillers = (
            (MODEL_METHODS, "blend", model_fills, model_fade),
            (PLC_METHODS, "plc-blend", plc_fills, plc_fade),
        )
        for methods, blend, fills, own_fade in fillers:
            for p in plan:
                if p.channel != channel or p.method not in methods:
                    continue
                lo, hi = max(0, p.start - base), min(signal.size, p.end - base)
                fill = fills[(p.start, p.end, channel)]
                if p.method == blend:
                    estimate = ar_fill.copy()
                    _blend(estimate, fill, lo, hi, round(config.blend_ramp_ms * rate / 1000.0))
                    fixed = ar.crossfade_edges(fixed, estimate, lo, hi, fade)
                else:
                    fixed = ar.crossfade_edges(fixed, fill, lo, hi, own_fade)
        for p in plan:
            if p.channel != channel or p.method != "channel":
                continue
            lo, hi = max(0, p.start - base), min(signal.size, p.end - base)
            channel_fit, residual_ar = fits[(p.start, p.end, channel)]
            others = [
                (q.start - base, q.end - base) for q in plan if q.channel == channel and q is not p
            ]
            estimate = crosschannel.fill_from(
                fixed,
                region.samples[channel_fit.source],
                channel_fit,
                (lo, hi),
                fade,
                rate,
                others,
                residual_ar=residual_ar,
                ar_config=ar_config,
            )
            fixed = ar.crossfade_edges(fixed, estimate, lo, hi, fade)
        # The stem holds the region only; keep the source's samples outside each
        # span's written stretch (that also drops any crossfade past the region).
        keep = np.ones(fixed.size, dtype=bool)
        for p in plan:
            if p.channel == channel and p.method != "none":
                keep[p.written_start - base : p.written_end - base] = False
        repaired[channel] = np.where(keep, region.samples[channel], fixed)
    progress(1.0, "repaired")
    return repaired[:, region.region_slice], sorted(plan, key=lambda p: (p.start, p.channel))


def _ar_channels(
    region: Region,
    plan: list[RepairedSpan],
    drops: dict[int, regain.LevelDrop],
    ar_config: ar.ARConfig,
    fade: int,
    progress: ProgressFn,
    trains: Sequence[tuple[int, int, int]],
    config: RepairConfig,
) -> dict[int, tuple[np.ndarray, ...]]:
    """AR's part of every channel: ``channel -> (signal with its drops regained, AR-repaired
    signal, raw AR estimate)``. Channels are independent here, so they are solved side by
    side on the CPU's cores (the solves run in LAPACK and numpy, outside the GIL); the
    ``progress`` calls are serialised, and once one raises (a cancelled job) every channel
    stops at its next gap."""
    rate, base = region.info.sample_rate, region.context_start
    channels = sorted({p.channel for p in plan if p.method != "none"})
    work: dict[int, _ChannelWork] = {}
    for channel in channels:
        signal = region.samples[channel]
        for index, drop in drops.items():
            if plan[index].channel == channel:
                signal = regain.restore(signal, drop, rate)
        todo = [
            p for p in plan if p.channel == channel and p.method in ("ar", "blend", "plc-blend")
        ]
        edges = [
            (max(0, at - edge), min(signal.size, at + edge))
            for index, drop in drops.items()
            if plan[index].channel == channel
            for at in (drop.fall, drop.rise)
            for edge in (_regain_edge(rate),)
        ]
        # spans whose written stretches would touch are merged, so each sample is written once
        gaps = merge_intervals([(p.start - base, p.end - base) for p in todo] + edges, 2 * fade)
        clip_gaps = [(p.start - base, p.end - base) for p in todo if p.kind == DamageKind.CLIP]
        # the blends keep AR for their first and last blend_ramp_ms only
        edges_only = [
            (p.start - base, p.end - base) for p in todo if p.method in ("blend", "plc-blend")
        ]
        # gaps that hold a span of a train are solved with the train's AR settings
        ours = [(a, b) for c, a, b in trains if c == channel]
        in_train = [g for g in gaps if any(a < g[1] and b > g[0] for a, b in ours)]
        work[channel] = _ChannelWork(signal, gaps, clip_gaps, edges_only, in_train)
    train_config = replace(
        ar_config,
        context_multiple=config.train_ar_context_multiple,
        iterations=config.train_ar_iterations,
    )

    lock = threading.Lock()
    shares = dict.fromkeys(channels, 0.0)
    stopped: list[BaseException] = []

    def step(channel: int, filled: int, total: int) -> None:
        with lock:
            if stopped:
                raise stopped[0]
            shares[channel] = filled / total
            try:
                progress(sum(shares.values()) / len(channels), "repairing (AR)")
            except BaseException as exc:
                stopped.append(exc)
                raise

    def solve(channel: int, configs: list[ar.ARConfig] | None) -> tuple[np.ndarray, ...]:
        job = work[channel]
        if not job.gaps:
            return job.signal, job.signal, job.signal
        fixed, ar_fill = _repair_channel(
            job.signal,
            job.gaps,
            job.clip_gaps,
            fade,
            ar_config,
            functools.partial(step, channel),
            job.edges_only,
            None if job.in_train else configs,
            job.in_train,
            train_config,
        )
        return job.signal, fixed, ar_fill

    # The channels share the BLAS threads this process may use (one per channel, each
    # solving with one BLAS thread): a batch worker limited to one thread stays serial.
    busy = [c for c in channels if work[c].gaps]
    workers = min(blas_threads(), len(busy))
    if workers <= 1:
        configs = _shared_configs(work, busy, ar_config, fade, map)
        return {channel: solve(channel, configs) for channel in channels}
    progress(0.0, "repairing (AR)")
    pool = _ar_pool(workers)
    with blas_controller().limit(limits=1, user_api="blas"):
        configs = _shared_configs(work, busy, ar_config, fade, pool.map)
        results = pool.map(functools.partial(solve, configs=configs), channels)
        return dict(zip(channels, results, strict=True))


@functools.cache
def _ar_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="maedaw-ar")


def _cross_channel_plan(
    region: Region,
    plan: list[RepairedSpan],
    spans: Sequence[Span],
    damaged: Sequence[Span],
    config: RepairConfig,
    fade: int,
) -> dict[tuple[int, int, int], tuple[crosschannel.ChannelFit, bool]]:
    """In place: gaps on one channel that another, intact channel predicts well become
    "channel" spans. Returns, keyed (start, end, channel), each one's filter and whether AR
    carries the residual into it (gaps AR can carry: up to ``max_ar_ms``)."""
    if not config.cross.enabled or region.samples.shape[0] < 2:
        return {}
    rate = region.info.sample_rate
    base = region.context_start
    sure = {
        (s.start, s.end, s.channel)
        for s in spans
        if s.confidence >= config.min_confidence and not _doubt(s, config)
    }
    blocked: dict[int, list[tuple[int, int]]] = {}
    for s in [*spans, *damaged]:
        blocked.setdefault(s.channel, []).append((s.start - base, s.end - base))
    fits = {}
    for i, p in enumerate(plan):
        gap_like = p.kind in (DamageKind.DROPOUT, DamageKind.MARKED)
        wanted = p.method in ("ar", "blend", "mae", *PLC_METHODS) or (
            p.method == "none"
            and (p.kind == DamageKind.MARKED or (p.start, p.end, p.channel) in sure)
        )
        if not (gap_like and wanted):
            continue
        gap = (max(0, p.start - base), min(region.samples.shape[1], p.end - base))
        found = crosschannel.pick_source(
            region.samples, p.channel, gap, blocked, rate, config.cross
        )
        if found is None:
            continue
        length_ms = 1000.0 * (p.end - p.start) / rate
        residual_ar = length_ms <= config.max_ar_ms
        fits[(p.start, p.end, p.channel)] = (found, residual_ar)
        residual = " + AR of the residual" if residual_ar else ""
        plan[i] = replace(
            p,
            method="channel",
            written_start=max(region.start, p.start - fade),
            written_end=min(region.end, p.end + fade),
            reason=(
                f"{length_ms:.1f} ms {p.kind} on this channel only: predicted from channel "
                f"{found.source + 1} (filter fits the context to {found.fit_db:.0f} dB)"
                f"{residual}"
            ),
        )
    return fits


def _model_fills(
    region: Region,
    plan: list[RepairedSpan],
    damaged: Sequence[Span],
    inpainter: Inpainter | None,
    rate: int,
    methods: tuple[str, ...] = MODEL_METHODS,
) -> dict[tuple[int, int, int], np.ndarray]:
    """The model's fill of every span planned with one of ``methods`` ("mae"/"blend" for the
    Audio-MAE, "plc"/"plc-blend" for the concealer), keyed (start, end, channel), each a
    full-length channel of the region window. Channels that share their gaps are inpainted
    together (one reference, shared phase: the stereo image is kept)."""
    todo = [p for p in plan if p.method in methods]
    if not todo:
        return {}
    assert inpainter is not None
    base = region.context_start
    size = region.samples.shape[1]
    by_channels: dict[tuple[int, ...], list[tuple[int, int]]] = {}
    spans = sorted({(p.start, p.end) for p in todo})
    for start, end in spans:
        chans = tuple(sorted(p.channel for p in todo if (p.start, p.end) == (start, end)))
        by_channels.setdefault(chans, []).append((start, end))
    known = [(s.start, s.end, s.channel) for s in damaged] + [
        (p.start, p.end, p.channel) for p in plan
    ]
    fills: dict[tuple[int, int, int], np.ndarray] = {}
    for chans, gaps in by_channels.items():
        # damage on these channels must not serve as the model's context
        other = [
            (max(0, s - base), min(size, e - base))
            for s, e, c in known
            if c in chans and e > base and s < base + size
        ]
        local = [(max(0, s - base), min(size, e - base)) for s, e in gaps]
        filled = inpainter.fill(region.samples[list(chans)], rate, local, other)
        for start, end in gaps:
            for i, channel in enumerate(chans):
                fills[(start, end, channel)] = filled[i]
    return fills


def repair_array(
    samples: np.ndarray,
    rate: int,
    spans: Sequence[Span],
    config: RepairConfig | None = None,
    inpainter: Inpainter | None = None,
    concealer: Inpainter | None = None,
) -> tuple[np.ndarray, list[RepairedSpan]]:
    """Repair ``spans`` of an in-memory ``(channels, frames)`` signal (the benchmarks' and
    tests' entry point): exactly :func:`repair_region` on the whole array as the region."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"expected (channels, frames) samples, got shape {x.shape}")
    info = AudioInfo(
        Path("<memory>"), rate, x.shape[0], x.shape[1], SampleFormat.FLOAT32, "wav", True
    )
    region = Region(info, 0, x.shape[1], 0, x.shape[1], x)
    return repair_region(region, spans, config, inpainter=inpainter, concealer=concealer)


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


def _join_model_groups(
    groups: list[list[Span]], needs_model: set[Span], longest: int
) -> list[list[Span]]:
    """Join neighbouring groups that both need the model while the joined group spans at
    most ``longest`` frames: they then share one window and one model call."""
    joined: list[list[Span]] = []
    for group in groups:
        if joined and needs_model.intersection(group) and needs_model.intersection(joined[-1]):
            first = min(s.start for s in joined[-1])
            if max(s.end for s in group) - first <= longest:
                joined[-1] = joined[-1] + group
                continue
        joined.append(group)
    return joined


def repair_file(
    source: str | os.PathLike,
    output: str | os.PathLike | None,
    start_s: float | None = None,
    end_s: float | None = None,
    spans: str | None = None,
    config: RepairConfig | None = None,
    progress: ProgressFn = _no_progress,
    overwrite: bool = False,
    inpainter: Inpainter | None = None,
    concealer: Inpainter | None = None,
) -> RepairReport:
    """Repair ``[start_s, end_s]`` of ``source`` and write the stem to ``output``.

    ``spans`` is ``None`` to detect damage automatically, or ``"S:E,..."`` in
    seconds. ``output=None`` repairs without writing (a dry run). ``inpainter`` (None: AR
    only) lets long gaps be inpainted; without one, gaps longer than ``max_ar_ms`` are
    reported and left alone.

    Memory stays bounded for any region length: detection streams over the
    region, each group of nearby spans is repaired from a window read around it
    (``mae_context_s`` each side for spans the model fills, at most ``mae_group_s``
    of spans per window), and the stem is written block by block, source samples
    with the patches in.
    """
    config = config or RepairConfig()
    _check_inpainter(inpainter)
    _check_inpainter(concealer)
    timings = dict.fromkeys(("read", "detect", "repair", "write"), 0.0)
    source = Path(source)
    output = None if output is None else Path(output)
    info, start, end = prepare_stem_job(source, output, start_s, end_s, overwrite)
    rate = info.sample_rate
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
    inside = [s for s in todo if s.end > start and s.start < end]
    max_ms = _model_max_ms(inpainter)
    plc_ms = _model_max_ms(concealer)
    needs_model = {s for s in inside if decide(s, rate, config, max_ms, plc_ms)[0] in MODEL_METHODS}
    groups = _clusters(inside, 2 * context)
    groups = _join_model_groups(groups, needs_model, round(config.mae_group_s * rate))
    plan: list[RepairedSpan] = []
    patches: list[Patch] = []
    for done, group in enumerate(groups):
        clock = time.perf_counter()
        lo = max(start, min(s.start for s in group) - margin)
        hi = min(end, max(s.end for s in group) + margin)
        reach = context
        if needs_model.intersection(group):
            reach = max(context, round(config.mae_context_s * rate))
        window = read_region(source, lo, hi, context=reach)
        timings["read"] += time.perf_counter() - clock
        clock = time.perf_counter()
        nearby = [
            s
            for s in todo
            if s.end > window.context_start and s.start < window.context_end and s not in group
        ]
        fixed, done_here = repair_region(
            window, group, config, inpainter=inpainter, damaged=nearby, concealer=concealer
        )
        timings["repair"] += time.perf_counter() - clock
        for item in done_here:
            if item.method != "none":
                a, b = item.written_start - lo, item.written_end - lo
                patches.append(Patch(item.channel, item.written_start, fixed[item.channel, a:b]))
        plan += done_here
        progress(0.3 + 0.6 * (done + 1) / len(groups), "repairing")

    if output is not None:
        timings["write"] = write_patched(
            source, output, info, start, end, patches, lambda f: progress(0.9 + 0.1 * f, "writing")
        )
    progress(1.0, "done")
    plan.sort(key=lambda p: (p.start, p.channel))
    return RepairReport(source, output, info, start, end, plan, detection, timings, patches)
