"""Declipping: find hard-clipped samples and redraw them consistently with the clip level.

Detection (per channel and polarity): the highest level the region reaches, and how
many runs of two or more consecutive samples sit at it. A natural peak almost never
repeats its exact value on neighbouring samples; a clipper does it at every peak, so
``min_runs`` such runs mark the polarity as clipped and every sample at that level
as unknown. The level can also be given (``level``: fraction of full scale).

Reconstruction: consistent least-squares AR interpolation (Janssen et al. 1986 with
the clipping constraint, as in "consistent" declipping): the clipped samples are
filled by two-sided LSAR (:func:`dsp.ar.fill_gaps`, AR fitted on the unclipped
samples around them), then every redrawn sample that falls back inside the clip
level — which the true signal cannot do, it was clipped because it went beyond —
is pinned to the level and the rest are solved again (an active-set iteration),
until the fill respects ``|x| >= level`` with the held sample's sign everywhere.

Only the clipped samples change; every other sample is the source's. Reconstructed
peaks can exceed full scale (a take clipped at 0 dBFS); they are compressed
smoothly into the headroom between the clip level and full scale, and the report
says how far above full scale the reconstruction went.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from maedaw.core.util import ProgressFn

from . import ar
from .audio_io import AudioInfo, SampleFormat, iter_blocks, read_region
from .ops import Op, Option, SpanResult
from .repair import Patch

log = logging.getLogger(__name__)

BLOCK_S = 0.5  # region core solved at a time (its runs are one AR problem)
FULL_SCALE = 0.999  # stems of integer formats cannot hold +1.0


@dataclass(slots=True)
class _Polarity:
    """Running clip evidence of one channel and sign."""

    level: float = 0.0
    runs: int = 0  # runs of >= 2 samples within tolerance of ``level``
    samples: int = 0


def tolerance(fmt: SampleFormat) -> float:
    """Samples this close to the clip level count as held at it (half a quantisation step
    of integer formats; float files clip at an exact value)."""
    return 1e-7 if fmt.is_float else 0.5 / fmt.full_scale


def _run_bounds(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.view(np.int8), [0]))))
    return edges[::2], edges[1::2]


def find_levels(
    source: Path,
    info: AudioInfo,
    start: int,
    end: int,
    level: float | None,
    min_runs: int,
    progress: ProgressFn,
) -> list[list[_Polarity]]:
    """Per channel, the (+, -) clip evidence over ``[start, end)``, in one streaming pass."""
    tol = tolerance(info.sample_format)
    state = [[_Polarity(), _Polarity()] for _ in range(info.num_channels)]
    for position, block in iter_blocks(source, start, end, 1 << 18, exact=True):
        for channel, polarities in enumerate(state):
            for pol, sign in zip(polarities, (1.0, -1.0), strict=True):
                values = sign * block[channel]
                if level is None:
                    peak = float(values.max())
                    if peak > pol.level + tol:  # a new, higher level: earlier runs were lower
                        pol.level, pol.runs, pol.samples = peak, 0, 0
                    threshold = pol.level - tol
                else:
                    pol.level = level
                    threshold = level - tol
                held = values >= threshold
                if held.any():
                    starts, ends = _run_bounds(held)
                    pol.runs += int(np.count_nonzero(ends - starts >= 2))
                    pol.samples += int(held.sum())
        progress((position + block.shape[1] - start) / (end - start), "finding clip level")
    for polarities in state:
        for pol in polarities:
            if pol.runs < min_runs or pol.level < 1e-3:
                pol.level = np.inf  # not clipped: no sample is held at an infinite level
    return state


def _declip_channel(
    x: np.ndarray,
    clipped: np.ndarray,
    signs: np.ndarray,
    config: ar.ARConfig,
    iterations: int,
    consistent: bool,
    pad: bool = False,
) -> tuple[np.ndarray, int]:
    """Redraw ``x[clipped]``; returns the filled signal and the active-set passes used.

    ``pad``: the window is the whole file; silence is appended so that no gap system
    has prediction windows cut off at both ends (ar.py then forms a dense matrix over
    every unknown).
    """
    if pad:
        extra = config.context_for(config.order_for(x.size)) + 1
        out, passes = _declip_channel(
            np.concatenate([x, np.zeros(extra)]),
            np.concatenate([clipped, np.zeros(extra, bool)]),
            np.concatenate([signs, np.ones(extra)]),
            config,
            iterations,
            consistent,
        )
        return out[: x.size], passes
    pinned = np.zeros_like(clipped)
    y = x.copy()
    filled = x
    passes = 0
    while passes <= iterations:
        passes += 1
        free = clipped & ~pinned
        starts, ends = _run_bounds(free)
        if starts.size == 0:
            break
        filled = ar.fill_gaps(y, list(zip(starts.tolist(), ends.tolist(), strict=True)), config)
        if not consistent:
            break
        # The true sample lies beyond the level with the held sample's sign.
        wrong = free & (signs * filled < signs * x)
        if not wrong.any():
            break
        pinned |= wrong  # y already holds the level there
    if consistent:  # whatever the passes left: project onto the constraint
        filled = np.where(clipped, signs * np.maximum(signs * filled, signs * x), filled)
    return np.where(clipped, filled, x), passes


def _adapt(config: ar.ARConfig, clipped: np.ndarray, order: int) -> ar.ARConfig:
    """The AR order for one window: well below the typical unclipped stretch, so that the
    fit has many rows (heavy clipping leaves only short stretches between runs)."""
    starts, ends = _run_bounds(~clipped)
    lengths = ends - starts
    typical = float(np.median(lengths)) if lengths.size else float(order)
    scaled = max(2, min(order, round(typical / 3.0)))
    lowest = max(2, round(16 * config.sample_rate / ar.REFERENCE_RATE))
    cap = max(lowest, scaled) * ar.REFERENCE_RATE / config.sample_rate  # ARConfig is at 48 kHz
    cap = max(1, round(cap))
    return replace(config, min_order=min(config.min_order, cap), max_order=cap, order_caps=(cap,))


def _limit(values: np.ndarray, level: float) -> np.ndarray:
    """Compress magnitudes above ``knee`` into [knee, FULL_SCALE) (monotone, so still >= level)."""
    knee = min(max(level, 0.9), FULL_SCALE - 1e-3)
    mag = np.abs(values)
    room = FULL_SCALE - knee
    squeezed = np.where(mag > knee, knee + room * np.tanh((mag - knee) / room), mag)
    return np.sign(values) * squeezed


def declip_work(
    source: Path, info: AudioInfo, start: int, end: int, options: dict, progress: ProgressFn
) -> SpanResult:
    rate = info.sample_rate
    state = find_levels(
        source,
        info,
        start,
        end,
        options["level"],
        options["min_runs"],
        lambda f, s: progress(0.2 * f, s),
    )
    order = max(2, round(options["order"] * rate / ar.REFERENCE_RATE))
    config = ar.ARConfig(
        sample_rate=rate,
        min_order=min(40, options["order"]),
        max_order=options["order"],
        order_caps=(options["order"],),
        method=options["method"],
    )
    detection = {
        "channels": [
            {
                "positive_level": None if not np.isfinite(p.level) else round(p.level, 6),
                "negative_level": None if not np.isfinite(n.level) else round(-n.level, 6),
                "held_runs": p.runs + n.runs if np.isfinite(p.level) or np.isfinite(n.level) else 0,
            }
            for p, n in state
        ],
        "order": order,
    }
    if not any(np.isfinite(p.level) for channel in state for p in channel):
        detection["clipped"] = False
        return SpanResult([], [], detection)
    detection["clipped"] = True

    # Many small banded solves: one BLAS thread is 10-100x faster than a contended pool.
    with threadpool_limits(1):
        return _redraw(source, info, start, end, options, progress, state, config, order, detection)


def _redraw(
    source: Path,
    info: AudioInfo,
    start: int,
    end: int,
    options: dict,
    progress: ProgressFn,
    state: list[list[_Polarity]],
    config: ar.ARConfig,
    order: int,
    detection: dict,
) -> SpanResult:
    rate = info.sample_rate
    tol = tolerance(info.sample_format)
    max_run = max(1, round(options["max_run_ms"] * rate / 1000.0))
    context = config.context_for(order) + max_run
    patches: list[Patch] = []
    spans: list[dict] = []
    block = max(1, round(BLOCK_S * rate))
    peak = 0.0
    passes_used = 0
    position = start
    while position < end:
        stop = min(end, position + block)
        lo, hi = max(0, position - context), min(info.frames, stop + context + max_run)
        window = read_region(source, lo, hi).samples
        for channel, (pos, neg) in enumerate(state):
            x = window[channel]
            up, down = x >= pos.level - tol, x <= -(neg.level - tol)
            clipped = up | down
            if not clipped.any():
                continue
            signs = np.where(up, 1.0, -1.0)
            starts, ends = _run_bounds(clipped)
            # Runs longer than max_run are beyond interpolation (a held DC offset, a
            # deliberate square wave): they stay as they are, and stay out of the fit.
            long_ = ends - starts > max_run
            keep = clipped.copy()
            for s, e in zip(starts[long_], ends[long_], strict=True):
                keep[s:e] = False
            fixed, passes = x, 0
            if keep.any():
                fixed, passes = _declip_channel(
                    x,
                    keep,
                    signs,
                    _adapt(config, keep, order),
                    options["iterations"],
                    options["consistent"],
                    pad=lo == 0 and hi == info.frames,
                )
            passes_used = max(passes_used, passes)
            for s0, e, too_long in zip(starts, ends, long_, strict=True):
                # a run belongs to the block holding its start; only its part in the region
                a, b = max(s0 + lo, start), min(e + lo, end)
                if not (position <= a < stop and a < b):
                    continue
                s = a - lo
                entry = {
                    "channel": channel,
                    "kind": "clip",
                    "start": int(a),
                    "end": int(b),
                    "start_s": a / rate,
                    "end_s": b / rate,
                    "duration_ms": 1000.0 * (b - a) / rate,
                    "level": round(float(x[s]), 6),
                }
                if too_long:
                    entry.update(
                        method="none",
                        written_start=int(a),
                        written_end=int(a),
                        reason=f"held longer than {options['max_run_ms']} ms",
                    )
                else:
                    values = fixed[s : s + (b - a)]
                    peak = max(peak, float(np.abs(values).max()))
                    limited = _limit(values, abs(float(x[s])))
                    patches.append(Patch(channel, int(a), limited.astype(np.float32)))
                    entry.update(
                        method="ar-consistent" if options["consistent"] else "ar",
                        written_start=int(a),
                        written_end=int(b),
                        reason="clipped run redrawn by constrained LSAR",
                    )
                spans.append(entry)
        progress(0.2 + 0.8 * (stop - start) / (end - start), "declipping")
        position = stop
    detection["reconstructed_peak_dbfs"] = round(20 * np.log10(max(peak, 1e-12)), 2)
    detection["peaks_compressed"] = bool(peak > FULL_SCALE)
    detection["active_set_passes"] = passes_used
    log.info("declip: %d runs redrawn, peak %.2f", len(patches), peak)
    return SpanResult(patches, spans, detection)


OP = Op(
    name="declip",
    summary="find hard-clipped runs and redraw them by AR interpolation constrained beyond "
    "the clip level",
    options={
        "level": Option(
            float,
            None,
            "clip level, fraction of full scale (auto: detect)",
            low=1e-3,
            high=1.0,
            auto=True,
        ),
        "min_runs": Option(
            int, 3, "runs of >= 2 held samples that mark a polarity as clipped", low=1, high=10**9
        ),
        "order": Option(
            int,
            160,
            "highest AR order at 48 kHz (scaled with the rate; lower "
            "where clipping leaves only short stretches)",
            low=8,
            high=1000,
        ),
        "iterations": Option(int, 8, "active-set passes enforcing |x| >= level", low=0, high=100),
        "method": Option(str, "covariance", "AR fit", choices=("covariance", "burg")),
        "consistent": Option(bool, True, "enforce |x| >= level on redrawn samples"),
        "max_run_ms": Option(float, 20.0, "longer held runs are left alone", low=0.01, high=1000.0),
    },
    span_work=declip_work,
)
