"""Per-channel damage detection: dropouts, level drops, clicks and clipped runs.

Everything runs through :class:`StreamingDetector`; :func:`detect` feeds it once.
The stream is cut into fixed analysis chunks on a grid that starts at the first
fed frame, and every chunk is analysed together with a look-back and a look-ahead
margin that cover every detector's context (two seconds and a bit, because a
dropout may be two seconds long). A span belongs to the chunk that holds its
start, so the result does not depend on how the caller cuts the stream into
blocks, and memory stays bounded by one chunk plus margins.

Results never depend on the feed block size. The chunk grid is fixed by the first
fed frame. Everything but one step looks at most a margin far; that step (the
whitening filter that nominates click candidates) is fitted on a whole chunk
window, so changing ``chunk_s`` or the start frame can flip a borderline click
candidate (and changes confidences in the last digits).

Spans are half-open ``[start, end)`` in absolute frames (see :mod:`.spans`).
Confidences follow one rule: ``1 - threshold / evidence``, where the evidence is
the measured quantity that had to exceed the threshold (a level ratio, a
prediction-error ratio, an overshoot). So 0 means "just at the threshold",
0.5 means "twice the threshold" (6 dB past it) and 0.9 "ten times".
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Final

import numpy as np
from scipy import linalg, ndimage

from . import click_net
from .click_evidence import ClickEvidence
from .click_net import ClickNet
from .spans import DamageKind, Span

__all__ = [
    "SENSITIVITIES",
    "ClickEvidence",
    "ClickZone",
    "DetectConfig",
    "Sensitivity",
    "StreamingDetector",
    "click_zones",
    "detect",
    "sensitivity",
]

logger = logging.getLogger(__name__)

LSB16: Final = 2.0**-15  # one step of 16-bit audio in float full scale
# |sample| at or above this is the format's largest value (16 bits: within 1 LSB of it)
FULL_SCALE: Final = 0.9999


def _db_to_power(db: float) -> float:
    return 10.0 ** (db / 10.0)


@dataclass(frozen=True)
class DetectConfig:
    """Thresholds of the four detectors. Levels in dBFS are RMS relative to full scale (1.0)."""

    kinds: frozenset[DamageKind] = frozenset(DamageKind)  # which detectors run
    hop_ms: float = 2.0  # hop of the energy envelopes that level tests use
    chunk_s: float = 16.0  # analysis chunk; trades memory for margin overhead, not results

    # DROPOUT: a run of |x| <= dropout_level inside signal.
    dropout_level: float = LSB16  # "digital silence": at most one 16-bit step
    dropout_min_ms: float = 0.25  # shorter runs happen at zero crossings of quiet audio
    dropout_min_samples: int = 8  # lower bound at low sample rates
    dropout_max_s: float = 2.0  # longer silences are intentional
    dropout_context_ms: float = 20.0  # the audio this close on both sides must have real level
    dropout_gate_db: float = -60.0  # ...meaning RMS above this (both the context and the edges)
    dropout_edge_ms: float = 1.0  # the samples right next to the run...
    dropout_edge_db: float = 30.0  # ...within this of the context: a cut, not a fade to silence

    # LEVEL_DROP: an abrupt fall of the hop energy and an abrupt return.
    level_drop_db: float = 20.0  # depth against the signal on both sides
    level_drop_min_ms: float = 4.0  # at least two hops down: one low hop is a bass zero crossing
    level_drop_max_s: float = 1.0  # longer is a pause or an edit, not a drop-out
    level_drop_ref_ms: float = 20.0  # the reference level on each side is the mean over this
    level_drop_gate_db: float = -50.0  # both references must be above this
    level_drop_abrupt_db: float = 8.0  # the 3 hops outside a transition are this close to ref
    level_drop_floor: float = 4 * LSB16  # a stretch whose AC RMS is below this is a gap
    level_drop_ripple_db: float = 10.0  # no hop inside may come back closer than depth - this
    level_drop_edge_ms: float = 10.0  # depth at the fall and at the rise, measured over this...
    level_drop_edge_match_db: float = 15.0  # ...agree this well (one gain, not a decay)
    level_drop_floor_db: float = 6.0  # a drop to within this of the window's floor...
    level_drop_timbre_db: float = 6.0  # ...whose brightness differs this much is doubtful
    level_drop_swing_db: float = 10.0  # ...or next to a reference whose halves differ this much
    # A gain drop keeps the programme's timbre across its edges; brightness changing this
    # much over level_drop_edge_ms at the fall or the rise is a gate or a sound ending
    level_drop_edge_timbre_db: float = 6.0
    # ...unless the stretch stays well above the window's floor: an attenuated programme that
    # changes timbre by itself (foley, speech) is doubted only beyond this much
    level_drop_edge_timbre_max_db: float = 12.0
    # Waveform continuity across each edge (:func:`_edge_continuity`): a gain drop is the same
    # waveform scaled, so the low stretch scaled back up continues what an AR model of the
    # loud side predicts. Where that model predicts the programme at least
    # level_drop_predictable_db above its residual (tonal, voiced: noise says nothing), a
    # junction error level_drop_continuity_db below the signal at both edges, with a gain
    # within level_drop_gain_match_db of the depth, clears the timbre and pause doubts.
    level_drop_continuity_order: int = 24
    level_drop_predictable_db: float = 15.0
    level_drop_continuity_db: float = 12.0
    level_drop_gain_match_db: float = 10.0

    # CLICK: whitened-signal candidates verified by two-sided AR prediction.
    click_candidate_k: float = 5.0  # |whitened x| over this x its local robust scale...
    click_candidate_order: int = 16  # ...whitened by a linear predictor of this order
    click_scale_ms: float = 20.0  # median window (each side) of that local scale
    click_k: float = 6.0  # forward AND backward prediction error over this x residual RMS...
    click_peak_ratio: float = 2.0  # ...and over this x the largest residual in the contexts
    click_order: int = 24  # AR order of the verifying model
    click_context_ms: float = 20.0  # fitted on this much audio on each side of the candidate
    click_max_samples: int = 128  # longer flagged stretches are not clicks
    click_cluster_gap: int = 32  # candidates this close are verified as one zone
    click_pad: int = 2  # samples added on both sides of a click span
    click_level_ms: float = 5.0  # the audio this close on both sides of a click...
    click_level_change_db: float = 10.0  # ...differing more in level: an onset/offset, not a click
    click_floor: float = 4 * LSB16  # scales never go below this: ignores clicks of a few LSB
    click_rel_floor: float = 0.005  # ...nor below this x the local RMS (over-predictable audio)
    click_min_amplitude: float = 0.005  # smaller deviations (-46 dBFS) are not reported
    # The AR test's residuals also go through a long-term (pitch) predictor: voiced speech
    # leaves a glottal pulse every period in a short predictor's residual, which would
    # raise the bar (click_peak_ratio) and pass a pulse for a click. Lags in this range,
    # used where the context's residual repeats (normalised correlation >= click_pitch_corr).
    click_pitch: bool = True
    click_pitch_min_ms: float = 2.0
    click_pitch_max_ms: float = 20.0
    click_pitch_corr: float = 0.3
    # ...and only for zones that failed the plain test by little (its bar set by the
    # context's peaks, both sides' largest error at least this x their context's RMS):
    # on held-out speech 21 of the 23 zones the pitch predictor passed were above 5, and the
    # bar keeps three in four long-term fits away (bench scan: the fit's cost).
    click_pitch_evidence: float = 5.0
    # A candidate zone may be a digital click or an acoustic transient. Its confidence is
    # the click judge's (:mod:`.click_net`): the probability, from the samples around it and
    # what the AR test measured, that it is a digital click; the sensitivity sets the bar.
    click_judge: ClickNet | None = None  # None: the bundled one
    click_report: float = 0.5  # zones the judge rates below this are not even reported
    click_tail_ms: float = 5.0  # the whitened power over this after the click vs before it
    click_prominence: float = 1.5  # in another channel this far above its 10 ms around: a sound

    # CLIP: runs held at the local extreme whose steep flanks extrapolate far beyond it.
    clip_min_run: int = 3  # two equal samples also happen at symmetric natural peaks
    clip_max_ms: float = 250.0  # longer holds are DC or deliberate, not clipping
    clip_tolerance: float = LSB16  # a held sample is this close to the run's level
    clip_level_window_ms: float = 250.0  # "extreme level" = max (min) over this window
    clip_min_level: float = 1e-3  # holds quieter than this are not judged
    clip_overshoot: float = 0.01  # the flank lines must cross this far above the level (relative)
    clip_overshoot_abs: float = 16 * LSB16  # ...and this far (absolute): beats quantisation
    # A gain stage driven too hot flattens every peak that reaches its level; one flat top
    # alone at its level in the analysed window (a drum hit's crest, a normalised peak) is
    # reported but doubted, unless it sits at digital full scale (the format's own ceiling).
    clip_min_runs: int = 2  # runs (either sign) at the same level in the window...
    clip_same_level_db: float = 0.5  # ...within this of each other

    def __post_init__(self) -> None:
        positive = {
            "hop_ms": self.hop_ms,
            "chunk_s": self.chunk_s,
            "dropout_level": self.dropout_level,
            "dropout_max_s": self.dropout_max_s,
            "dropout_context_ms": self.dropout_context_ms,
            "dropout_edge_ms": self.dropout_edge_ms,
            "level_drop_db": self.level_drop_db,
            "level_drop_min_ms": self.level_drop_min_ms,
            "level_drop_max_s": self.level_drop_max_s,
            "level_drop_ref_ms": self.level_drop_ref_ms,
            "click_candidate_k": self.click_candidate_k,
            "click_scale_ms": self.click_scale_ms,
            "click_k": self.click_k,
            "click_context_ms": self.click_context_ms,
            "click_floor": self.click_floor,
            "clip_max_ms": self.clip_max_ms,
            "clip_level_window_ms": self.clip_level_window_ms,
            "clip_overshoot": self.clip_overshoot,
            "clip_tolerance": self.clip_tolerance,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.click_peak_ratio < 0 or self.level_drop_edge_match_db < 0:
            raise ValueError("click_peak_ratio and level_drop_edge_match_db must be >= 0")
        if self.click_order < 2 or self.clip_min_run < 2 or self.click_max_samples < 1:
            raise ValueError("click_order and clip_min_run must be >= 2, click_max_samples >= 1")
        if self.click_candidate_order < 1 or self.dropout_min_samples < 1:
            raise ValueError("click_candidate_order and dropout_min_samples must be >= 1")
        if self.click_cluster_gap < 0 or self.click_pad < 0:
            raise ValueError("click_cluster_gap and click_pad must be >= 0")
        unknown = set(self.kinds) - set(DamageKind)
        if unknown:
            raise ValueError(f"unknown damage kinds {unknown}")


@dataclass(frozen=True)
class _Params:
    """The config turned into sample and hop counts for one sample rate."""

    rate: int
    hop: int
    back: int  # look-back margin of a chunk (frames, multiple of hop)
    ahead: int  # look-ahead margin
    chunk: int
    drop_min: int
    drop_max: int
    drop_ctx_hops: int
    drop_edge: int
    ld_ref_hops: int
    ld_min_hops: int
    ld_max_hops: int
    ld_edge_hops: int
    scale_hops: int
    click_near: int
    click_tail: int
    click_guard: int  # the whitened error this close to a click still carries it
    click_around: int
    ar_context: int
    pitch_lags: tuple[int, int]  # long-term predictor's lag range; (0, 0): not used
    clip_max: int
    clip_window_hops: int


def _params(cfg: DetectConfig, sample_rate: int) -> _Params:
    def samples(ms: float) -> int:
        return round(ms * sample_rate / 1000.0)

    hop = max(1, samples(cfg.hop_ms))

    def hops(ms: float) -> int:
        return max(1, math.ceil(samples(ms) / hop))

    order = cfg.click_order
    ar_context = max(samples(cfg.click_context_ms), 8 * order)
    clip_window_hops = hops(cfg.clip_level_window_ms) | 1  # odd: centred filter
    # Each detector looks this far before / after a span that it reports.
    back = max(
        samples(cfg.dropout_context_ms) + 2 * hop + samples(cfg.dropout_edge_ms),
        (hops(cfg.level_drop_ref_ms) + 4) * hop,
        (hops(cfg.click_scale_ms) + 2) * hop
        + ar_context
        + order
        + cfg.click_candidate_order
        + 3 * cfg.click_max_samples,
        (clip_window_hops // 2 + 2) * hop,
    )
    ahead = back + max(
        samples(1000.0 * cfg.dropout_max_s),
        samples(1000.0 * cfg.level_drop_max_s),
        samples(cfg.clip_max_ms),
    )
    back = math.ceil(back / hop) * hop
    ahead = math.ceil(ahead / hop) * hop + hop
    chunk = max(hop, math.ceil(cfg.chunk_s * sample_rate / hop) * hop)
    return _Params(
        rate=sample_rate,
        hop=hop,
        back=back,
        ahead=ahead,
        chunk=chunk,
        drop_min=max(cfg.dropout_min_samples, math.ceil(cfg.dropout_min_ms * sample_rate / 1000)),
        drop_max=samples(1000.0 * cfg.dropout_max_s),
        drop_ctx_hops=hops(cfg.dropout_context_ms),
        drop_edge=max(1, samples(cfg.dropout_edge_ms)),
        ld_ref_hops=hops(cfg.level_drop_ref_ms),
        ld_min_hops=max(2, hops(cfg.level_drop_min_ms)),
        ld_max_hops=hops(1000.0 * cfg.level_drop_max_s),
        ld_edge_hops=max(2, hops(cfg.level_drop_edge_ms)),
        scale_hops=hops(cfg.click_scale_ms),
        click_near=max(order, samples(cfg.click_level_ms)),
        click_tail=max(4, samples(cfg.click_tail_ms)),
        click_guard=max(cfg.click_candidate_order, samples(1.0)),
        click_around=max(8, samples(10.0)),
        ar_context=ar_context,
        pitch_lags=(
            (max(2, samples(cfg.click_pitch_min_ms)), max(3, samples(cfg.click_pitch_max_ms)))
            if cfg.click_pitch
            else (0, 0)
        ),
        clip_max=max(cfg.clip_min_run, samples(cfg.clip_max_ms)),
        clip_window_hops=clip_window_hops,
    )


def _confidence(threshold: np.ndarray | float, evidence: np.ndarray | float) -> np.ndarray:
    """``1 - threshold / evidence`` clipped to [0, 1] (see the module doc)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        conf = 1.0 - np.asarray(threshold, dtype=np.float64) / np.asarray(evidence, np.float64)
    return np.clip(np.nan_to_num(conf, nan=0.0), 0.0, 1.0)


def _brightness(seg: np.ndarray) -> float:
    """Power of the first difference over the (AC) power, in dB: a gain-free timbre."""
    seg = seg.astype(np.float64)
    seg = seg - seg.mean()
    diff = np.diff(seg)
    return 10.0 * math.log10((float(diff @ diff) + 1e-30) / (float(seg @ seg) + 1e-30))


def _swing(seg: np.ndarray) -> float:
    """How much louder one half of ``seg`` is than the other, in dB."""
    half = seg.size // 2
    a, b = seg[:half].astype(np.float64), seg[half:].astype(np.float64)
    ratio = (float(a @ a) + 1e-30) / (float(b @ b) + 1e-30)
    return abs(10.0 * math.log10(ratio))


def _edge_continuity(
    x: np.ndarray, lo: int, hi: int, context: int, order: int, gain: float, match_db: float
) -> tuple[float, float] | None:
    """How well a gain step somewhere in ``x[lo:hi + 1]`` explains it: ``(junction error
    below the signal in dB, prediction gain of the loud side in dB)``, or None without room.

    ``x[:lo]`` is loud, the samples from the step on are the programme times 1/c. An AR model
    of ``order`` fitted on the ``context`` samples before ``lo`` predicts each of the first
    ``order`` samples after a step at s from its past; with the low samples scaled by c the
    error is ``c*u - v`` (u: from the low samples, v: from the loud past). A gain drop makes u
    and v collinear with c near ``gain`` (the depth as an amplitude ratio, within
    ``match_db``); a pause or a gate leaves them unrelated. The junction error is what is left
    of v after the best such c, over the power of the loud side; the best s is kept.
    """
    start = lo - context - order
    if start < 0 or hi + order > x.size:
        return None
    # The forward model of the click test (:meth:`_Channel._verify`): the last sample of each
    # row of the context from the others, by the normal equations of its Gram matrix.
    gram = _gram(x[start:lo].astype(np.float64), order)
    a = np.linalg.solve(
        gram[:order, :order] + (1e-9 * gram[0, 0] + 1e-30) * np.eye(order), gram[:order, order]
    )
    coeffs = a[::-1]  # coeffs[j - 1] weighs x[n - j]
    rows = context
    power = float(gram[order, order]) / rows
    resid = max(float(gram[order, order] - a @ gram[:order, order]), 0.0) / rows
    predictable = 10.0 * math.log10((power + 1e-30) / (resid + 1e-30))
    at = np.arange(lo, hi + order)
    lags = x[at[:, None] - np.arange(1, order + 1)[None, :]].astype(np.float64)
    # cum[i, k]: the part of sample at[i]'s prediction from its k nearest past samples
    cum = np.concatenate([np.zeros((at.size, 1)), np.cumsum(lags * coeffs, axis=1)], axis=1)
    best = 0.0
    for step in range(lo, hi + 1):
        i = np.arange(step - lo, step - lo + order)
        k = np.minimum(at[i] - step, order)
        u = x[at[i]] - cum[i, k]
        v = cum[i, order] - cum[i, k]
        uu, uv, vv = float(u @ u), float(u @ v), float(v @ v)
        if uu <= 0.0 or vv <= 0.0 or uv <= 0.0:
            continue
        if abs(20.0 * math.log10(uv / uu / gain)) > match_db:
            continue
        left = max(vv - uv * uv / uu, 0.0) / order  # what of v no c*u explains
        best = min(best, 10.0 * math.log10(left / max(power, 1e-30) + 1e-12))
    return best, predictable


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and (exclusive) ends of the True runs of a boolean array."""
    if mask.size == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    step = np.diff(mask.view(np.int8))
    starts = np.flatnonzero(step == 1) + 1
    ends = np.flatnonzero(step == -1) + 1
    if mask[0]:
        starts = np.concatenate([[0], starts])
    if mask[-1]:
        ends = np.concatenate([ends, [mask.size]])
    return starts, ends


@lru_cache(maxsize=8)
def _gram_index(order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    t = np.arange(order)[:, None]
    d = np.arange(order + 1)[None, :]
    valid = t + d <= order - 1
    i = np.arange(order + 1)[:, None]
    lag = np.arange(order + 1)[None, :] - i
    return np.where(valid, t + d, 0), ~valid, np.minimum(i, i + lag), np.abs(lag)


def _gram(seg: np.ndarray, order: int) -> np.ndarray:
    """``W.T @ W`` for the rows ``W[m] = seg[m : m + order + 1]``, in O(len * order).

    Entries along a diagonal differ only by the products that enter and leave the
    sum, so one correlation (the first row) plus running corrections gives them all.
    """
    n = seg.size - order
    first_row = np.correlate(seg, seg[:n], mode="valid")
    lo, invalid, base, lag = _gram_index(order)
    corr = seg[n : n + order, None] * seg[n + lo] - seg[:order, None] * seg[lo]
    corr[invalid] = 0.0
    cum = np.zeros((order + 1, order + 1))
    np.cumsum(corr, axis=0, out=cum[1:])
    return first_row[lag] + cum[base, lag]


def _long_term_residual(
    r: np.ndarray, fit_lo: int, fit_hi: int, lags: tuple[int, int], min_corr: float
) -> np.ndarray:
    """``r`` less its 3-tap long-term (pitch) prediction ``sum_k b_k r[n - T - 1 + k]``.

    The lag T is where ``r[fit_lo:fit_hi]`` correlates best with itself T samples earlier
    (``fit_lo > lags[1]``), the taps its least-squares fit there; three taps follow a pitch
    between whole samples. Where the best normalised correlation is below ``min_corr``
    (noise, unvoiced) ``r`` is returned as it is. Samples before ``T + 1`` are left as they are.
    """
    lo_lag, hi_lag = lags
    target = r[fit_lo:fit_hi]
    n = target.size
    source = r[fit_lo - hi_lag : fit_hi - lo_lag]
    num = np.correlate(source, target, mode="valid")[::-1]  # num[i]: lag lo_lag + i
    sq = np.concatenate([[0.0], np.cumsum(source * source)])
    energy = (sq[n:] - sq[:-n])[::-1]  # energy of each lagged window, same order
    corr = num / np.sqrt(np.maximum(energy * float(target @ target), 1e-30))
    best = int(np.argmax(corr))
    if not corr[best] >= min_corr:
        return r
    lag = lo_lag + best
    taps = np.stack([r[fit_lo - lag - 1 + k : fit_hi - lag - 1 + k] for k in range(3)], axis=1)
    gram = taps.T @ taps
    gain = np.linalg.solve(gram + (1e-6 * np.trace(gram) + 1e-30) * np.eye(3), taps.T @ target)
    out = r.copy()
    m = r.size - lag - 1
    out[lag + 1 :] -= sum(gain[k] * r[k : k + m] for k in range(3))
    return out


def _index_runs(idx: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Group sorted indices into runs whose inner gaps are <= max_gap: (first, last) of each."""
    if idx.size == 0:
        return idx, idx
    breaks = np.flatnonzero(np.diff(idx) > max_gap + 1)
    return idx[np.concatenate([[0], breaks + 1])], idx[np.concatenate([breaks, [idx.size - 1]])]


@dataclass(frozen=True, slots=True)
class ClickZone:
    """A click candidate: the zone its whitened error lights up and the AR test's verdict.
    Positions are relative to the analysed window."""

    lo: int
    hi: int
    centre: int  # its strongest whitened error: the judge's window is centred here
    verified: tuple[int, int] | None  # the AR test's (padded) span when it passed
    evidence: ClickEvidence | None  # what the AR test measured, when it passed
    level: float  # RMS of the audio just around it


def _click_reason(ev: ClickEvidence, confidence: float) -> str:
    """In words, why a confirmed zone may be a transient rather than a click (what a span
    left alone says)."""
    if ev.tail_db > 6.0:
        return f"rings on after the impulse ({ev.tail_db:+.0f} dB tail): a transient's decay"
    if ev.prominence < 1.0:
        return f"peak {ev.prominence:.2f}x the programme's peak around it (judge {confidence:.2f})"
    return f"shaped like the programme's own transients (judge {confidence:.2f})"


class _Channel:
    """The analysis of one channel of one chunk window: shared envelopes plus the detectors.

    ``x`` is float32; positions it returns are relative to ``x[0]``.
    """

    def __init__(self, x: np.ndarray, cfg: DetectConfig, p: _Params) -> None:
        self.cfg = cfg
        self.p = p
        n_hops = x.size // p.hop
        self.n_hops = n_hops
        power = self._hop_power(x, n_hops, p.hop)
        # A NaN or inf anywhere makes a sum non-finite: an almost free check for bad input.
        tail = x[n_hops * p.hop :]
        if not (math.isfinite(float(power.sum())) and math.isfinite(float(tail @ tail))):
            logger.warning("non-finite samples in the input; treating them as 0 / full scale")
            x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
            power = self._hop_power(x, n_hops, p.hop)
        self.x = x
        self.power = power
        self.prefix = np.concatenate([[0.0], np.cumsum(power)])

    @staticmethod
    def _hop_power(x: np.ndarray, n_hops: int, hop: int) -> np.ndarray:
        """Mean power per hop; float64 so that prefix sums over long windows stay exact."""
        hops = x[: n_hops * hop].reshape(n_hops, hop)
        return np.einsum("ij,ij->i", hops, hops).astype(np.float64) / hop

    def mean_power_at(self, lo: int, hi: int) -> float:
        """Mean hop power over hops [lo, hi) (caller keeps them inside the window)."""
        return float((self.prefix[hi] - self.prefix[lo]) / (hi - lo))

    def mean_power(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Mean hop power over hops [lo, hi) (clipped to the window; NaN where empty)."""
        lo = np.clip(lo, 0, self.n_hops)
        hi = np.clip(hi, 0, self.n_hops)
        count = hi - lo
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(count > 0, (self.prefix[hi] - self.prefix[lo]) / count, np.nan)

    # -- DROPOUT -------------------------------------------------------------------------
    def dropouts(self) -> list[tuple[int, int, float, str]]:
        """Runs of |x| <= dropout_level of dropout_min..max length inside signal.

        Inside signal: the mean power of the hops within dropout_context_ms on each side,
        and of the dropout_edge_ms right next to the run, is above dropout_gate_db, and the
        edges are within dropout_edge_db of their context (a cut, not a fade). Boundaries
        are sample-exact. Confidence: 1 - gate / (quieter side's context RMS).
        """
        cfg, p, x = self.cfg, self.p, self.x
        square = x * x
        starts, ends = _runs(square <= np.float32(cfg.dropout_level) ** 2)
        length = ends - starts
        keep = (length >= p.drop_min) & (length <= p.drop_max) & (starts > 0) & (ends < x.size)
        starts, ends = starts[keep], ends[keep]
        if starts.size == 0:
            return []
        first_hop = starts // p.hop  # context hops end before the hop holding the start
        after_hop = -(-ends // p.hop)  # ...and begin after the hop holding the last sample
        ctx_left = self.mean_power(first_hop - p.drop_ctx_hops, first_hop)
        ctx_right = self.mean_power(after_hop, after_hop + p.drop_ctx_hops)
        offsets = np.arange(p.drop_edge)
        left_idx = np.clip(starts[:, None] - p.drop_edge + offsets, 0, x.size - 1)
        right_idx = np.clip(ends[:, None] + offsets, 0, x.size - 1)
        edge_left = square[left_idx].mean(axis=1, dtype=np.float64)
        edge_right = square[right_idx].mean(axis=1, dtype=np.float64)
        gate = _db_to_power(cfg.dropout_gate_db)
        rel = _db_to_power(-cfg.dropout_edge_db)
        with np.errstate(invalid="ignore"):
            ok = (
                (ctx_left > gate)
                & (ctx_right > gate)
                & (edge_left > gate)
                & (edge_right > gate)
                & (edge_left >= rel * ctx_left)
                & (edge_right >= rel * ctx_right)
            )
        ctx = np.sqrt(np.minimum(ctx_left, ctx_right))
        conf = _confidence(math.sqrt(gate), ctx)
        starts, ends, conf = starts[ok], ends[ok], conf[ok]
        if starts.size == 0:
            return []
        # A lost buffer is exact zeros; a run that still wiggles by a step or two is quiet
        # signal passing through silence (a slow wave near its zero crossing, a fade).
        bounds = np.stack([starts, ends], axis=1).ravel()
        wiggles = np.logical_or.reduceat(x != 0, bounds)[::2]  # runs end before x does
        doubt = "quiet signal (a step or two off zero), not digital silence"
        return [
            (int(s), int(e), float(c), doubt if w else "")
            for s, e, c, w in zip(starts, ends, conf, wiggles, strict=True)
        ]

    # -- LEVEL_DROP ----------------------------------------------------------------------
    def level_drops(self) -> list[tuple[int, int, float, str]]:
        """Stretches of >= 2 hops whose power fell abruptly and came back abruptly.

        Works on hop powers (hop_ms). A fall at hop k: hops k and k+1 are level_drop_db
        below the mean power of the level_drop_ref_ms before the transition hop k-1 and
        below the mean of hops k-4..k-2, which are themselves within level_drop_abrupt_db
        of that reference (the level was still up: a cut, not a decay). A rise mirrors
        it. A fall pairs with the first rise that makes the stretch min..max long; then
        no hop in the stretch may come back within level_drop_ripple_db of the louder
        reference, its AC RMS must be above level_drop_floor (else it is a gap, or digital
        silence: a DROPOUT), and the depths right after the fall and right before the rise
        (medians over level_drop_edge_ms) must both reach level_drop_db and agree within
        level_drop_edge_match_db. A brightness change across either edge (over
        level_drop_edge_ms) of more than level_drop_edge_timbre_db makes it doubtful: a
        gain drop keeps the timbre, a gate or a sound ending does not; where the stretch stays
        above the window's floor (a gate or a pause ends there) level_drop_edge_timbre_max_db
        (programme whose timbre moves by itself, attenuated). The span covers the
        transition hops, so it is hop-aligned and never shorter than the attenuated stretch.
        Confidence: 1 - bar / depth as amplitude ratios, depth = the shallower edge's, bar =
        the threshold x (1 + timbre change / the timbre limit that applies) / 2: 30 dB down
        with the timbre kept gives 0.84. A doubted or unsure stretch that, scaled back up,
        continues the waveform at both edges (:meth:`_continuity`) is a gain drop whatever
        the brightness says: it takes that test's confidence and loses its doubt.
        """
        cfg, p = self.cfg, self.p
        e, n = self.power, self.n_hops
        r = p.ld_ref_hops
        if n < 2 * r + p.ld_min_hops + 4:
            return []
        tau = _db_to_power(-cfg.level_drop_db)
        gate = _db_to_power(cfg.level_drop_gate_db)
        up = _db_to_power(-cfg.level_drop_abrupt_db)
        k = np.arange(n)
        # Fall candidates at k (first low hop); need hops k-1-r .. k+1.
        kf = k[r + 2 : n - 1]
        ref_l = self.mean_power(kf - 1 - r, kf - 1)
        pre = (e[kf - 2] + e[kf - 3] + e[kf - 4]) / 3.0  # 6 ms: a bass zero crossing is not low
        low = np.maximum(e[kf], e[kf + 1])
        falls = kf[(low <= tau * ref_l) & (low <= tau * pre) & (pre >= up * ref_l) & (ref_l > gate)]
        if falls.size == 0:
            return []
        falls = _index_runs(falls, 0)[0]  # the earliest hop of a fall is where it starts
        # Rise candidates at j (last low hop); need hops j-1 .. j+1+r.
        kr = k[1 : n - r - 2]
        ref_r = self.mean_power(kr + 2, kr + 2 + r)
        post = (e[kr + 2] + e[kr + 3] + e[kr + 4]) / 3.0
        low = np.maximum(e[kr], e[kr - 1])
        rises = kr[
            (low <= tau * ref_r) & (low <= tau * post) & (post >= up * ref_r) & (ref_r > gate)
        ]
        if rises.size == 0:
            return []
        rises = _index_runs(rises, 0)[1]  # ...and the latest hop of a rise where it ends
        silence = cfg.level_drop_floor**2
        ripple = _db_to_power(cfg.level_drop_ripple_db)
        match = _db_to_power(cfg.level_drop_edge_match_db)
        found: list[tuple[int, int, float, str]] = []
        # The quietest the window gets (its room tone or noise floor): a drop to there is
        # as likely a pause in the programme as a gain drop.
        floor = float(np.percentile(e, 5.0))
        pick = np.searchsorted(rises, falls + p.ld_min_hops - 1)
        for fall, i in zip(falls.tolist(), pick.tolist(), strict=True):
            if i >= rises.size:
                continue
            rise = int(rises[i])
            if rise - fall + 1 > p.ld_max_hops:
                continue
            ref_fall = self.mean_power_at(fall - 1 - r, fall - 1)
            ref_rise = self.mean_power_at(rise + 2, rise + 2 + r)
            inside = e[fall : rise + 1]
            # No hop inside comes back near the level around it (against the louder side:
            # the programme may be quieter after the drop than before, a gain drop does
            # not care). The depth itself is judged at the edges, below.
            if float(inside.max()) > tau * ripple * max(ref_fall, ref_rise):
                continue
            # Attenuated signal still has content; a gap (silence, maybe with a DC
            # offset) does not. Judged on the samples, without their mean.
            stretch = self.x[fall * p.hop : (rise + 1) * p.hop]
            if float(np.var(stretch, dtype=np.float64)) <= silence:
                continue
            # One gain change attenuates both edges alike; a decay into a pause (a
            # reverb tail after a gated beep, a closure in speech) is deeper at its end.
            # Medians of a few hops on each side of each transition: local and robust to
            # a transition hop that is partly loud.
            w = min(max(2, inside.size // 2), p.ld_edge_hops)
            depth_fall = float(np.median(e[fall - 1 - w : fall - 1])) / max(
                float(np.median(inside[:w])), 1e-30
            )
            depth_rise = float(np.median(e[rise + 2 : rise + 2 + w])) / max(
                float(np.median(inside[-w:])), 1e-30
            )
            shallow = min(depth_fall, depth_rise)
            if shallow * tau < 1.0 or max(depth_fall, depth_rise) > match * shallow:
                continue
            # The timbre across each edge (a gain-free measure): a gain drop keeps it.
            edge = p.ld_edge_hops * p.hop
            a, b = fall * p.hop, (rise + 1) * p.hop  # the first and past the last low sample
            lead, tail = (fall - 1) * p.hop, (rise + 2) * p.hop  # past the transition hops
            low = min(edge, b - a)  # a short drop: its edges overlap
            edge_change = max(
                abs(
                    _brightness(self.x[max(0, lead - edge) : lead])
                    - _brightness(self.x[a : a + low])
                ),
                abs(_brightness(self.x[b - low : b]) - _brightness(self.x[tail : tail + edge])),
            )
            # A gate or a pause ends at the room's background; a gain drop of programme that
            # is changing anyway stays above it, so it may change timbre somewhat more.
            at_floor = float(np.median(inside)) <= _db_to_power(cfg.level_drop_floor_db) * floor
            timbre_limit = (
                cfg.level_drop_edge_timbre_db if at_floor else cfg.level_drop_edge_timbre_max_db
            )
            # Evidence: the shallower edge's depth; the bar rises with the timbre change
            # against the limit that applies (an unchanged timbre halves it: 30 dB down then
            # gives 0.84).
            bar = math.sqrt(1.0 / tau) * (1.0 + edge_change / timbre_limit) / 2
            conf = float(_confidence(bar, math.sqrt(shallow)))
            doubt = ""
            if edge_change > timbre_limit:
                doubt = (
                    f"the sound changes character at its edge ({edge_change:.0f} dB brighter "
                    "or duller): a gate or a sound ending, not a gain drop"
                )
            elif at_floor:
                # At the floor: a gain drop keeps the programme's timbre, a pause has the
                # room tone's. Brightness (power of the first difference over power) is
                # blind to the gain.
                ref_l = self.x[(fall - 1 - r) * p.hop : (fall - 1) * p.hop]
                ref_r = self.x[(rise + 2) * p.hop : (rise + 2 + r) * p.hop]
                inner = _brightness(stretch)
                change = min(abs(inner - _brightness(ref_l)), abs(inner - _brightness(ref_r)))
                # A gain drop is found against a steady level; one side that is itself
                # rising or decaying fast (a burst, an onset) makes it a sound ending.
                swing = max(_swing(ref_l), _swing(ref_r))
                if change > cfg.level_drop_timbre_db:
                    doubt = (
                        f"falls to the background level around it, {change:.0f} dB brighter or "
                        "duller than the programme: a pause, not a gain drop"
                    )
                elif swing > cfg.level_drop_swing_db:
                    doubt = (
                        f"falls to the background level around it next to a level moving "
                        f"{swing:.0f} dB within {cfg.level_drop_ref_ms:.0f} ms: a sound ending "
                        "or starting, not a gain drop"
                    )
            if doubt or conf < 0.5:
                continuity = self._continuity(fall, rise, depth_fall, depth_rise)
                if continuity is not None and continuity > conf:
                    conf, doubt = continuity, ""
            found.append(((fall - 1) * p.hop, (rise + 2) * p.hop, conf, doubt))
        return found

    def _continuity(
        self, fall: int, rise: int, depth_fall: float, depth_rise: float
    ) -> float | None:
        """The confidence that the stretch between hops ``fall`` and ``rise`` (its first and
        last low hops) is the programme scaled down, from the waveform at both edges
        (:func:`_edge_continuity`), or None where it cannot tell (unpredictable programme,
        no room, an edge that no gain step explains)."""
        cfg, p, x = self.cfg, self.p, self.x
        order = cfg.level_drop_continuity_order
        context = max(p.ld_ref_hops * p.hop, 8 * order)
        match = cfg.level_drop_gain_match_db
        # The step lies in the transition hop or the one next to it, on either side.
        fall_edge = _edge_continuity(
            x, (fall - 2) * p.hop, fall * p.hop, context, order, math.sqrt(depth_fall), match
        )
        back = x[::-1]
        n = x.size
        rise_edge = _edge_continuity(
            back,
            n - (rise + 2) * p.hop,
            n - rise * p.hop,
            context,
            order,
            math.sqrt(depth_rise),
            match,
        )
        if fall_edge is None or rise_edge is None:
            return None
        junction = max(fall_edge[0], rise_edge[0])
        if min(fall_edge[1], rise_edge[1]) < cfg.level_drop_predictable_db:
            return None
        if junction > -cfg.level_drop_continuity_db:
            return None
        # Evidence: how far the junction error lies below the signal, against half the bar
        # (the bar itself gives 0.5).
        threshold = 10.0 ** (cfg.level_drop_continuity_db / 40.0)
        return float(_confidence(threshold, 10.0 ** (-junction / 20.0)))

    # -- CLICK ---------------------------------------------------------------------------
    def click_zones(
        self, confirmed_only: bool = False
    ) -> tuple[list[ClickZone], np.ndarray, np.ndarray]:
        """The candidate zones the click judge sees, and its inputs for them (with
        ``confirmed_only``, of the zones the AR test confirmed alone: what detection judges).

        Candidates (cheap, every sample): the window whitened by a linear predictor of
        click_candidate_order, |error| above click_candidate_k x a local robust scale
        (median over +-click_scale_ms of per-hop RMS). Candidates within
        click_cluster_gap form a zone; zones where the click_level_ms on both sides
        differ by more than click_level_change_db are onsets or offsets (a plosive, a
        drum hit, a gated tone) and are not judged, nor are dense bursts or zones too close
        to the window's edges to model. Each remaining zone (rare) goes through the
        two-sided AR test (:meth:`_verify`); whether it passed and what it measured are
        part of what the judge (:mod:`.click_net`) sees, with the samples around the zone.
        Returns the zones, their windows (zones, 2, WINDOW) and scalars (zones, N_SCALARS).
        """
        cfg, p, x = self.cfg, self.p, self.x
        n, n_hops, hop = x.size, self.n_hops, p.hop
        none = (
            [],
            np.zeros((0, 2, click_net.WINDOW), np.float32),
            np.zeros((0, click_net.N_SCALARS), np.float32),
        )
        if n_hops < 3:
            return none
        signed = self._prediction_error()  # signed[i]: prediction error of sample i
        err = np.abs(signed)
        used = err[: n_hops * hop]
        blocks = used.reshape(n_hops, hop)
        rms = np.sqrt(np.einsum("ij,ij->i", blocks, blocks) / hop)
        scale = np.maximum(
            ndimage.median_filter(rms, size=2 * p.scale_hops + 1, mode="nearest"), cfg.click_floor
        )
        threshold = cfg.click_candidate_k * scale
        peak = np.maximum.reduceat(used, np.arange(0, n_hops * hop, hop))
        hot = np.flatnonzero(peak > threshold)
        if hot.size == 0:
            return none
        block = err[hot[:, None] * hop + np.arange(hop)]
        rows, cols = np.nonzero(block > threshold[hot][:, None])
        cand = np.sort(hot[rows] * hop + cols)
        # A click of L samples lights up the error over L + candidate_order samples;
        # nearby candidates are judged together (a noisy passage makes a long zone).
        firsts, lasts = _index_runs(cand, cfg.click_cluster_gap)
        # Every zone's strength and neighbourhood, before any is set aside: impulsive
        # programme (fire, rain, crackle) is a crowd of candidates, a click stands alone.
        ratio = np.log(err[cand] / scale[cand // hop])
        run_of = np.searchsorted(cand, firsts)
        strengths = np.maximum.reduceat(ratio, run_of)
        neighbours, rivals, strong = click_net.neighbourhood(firsts, strengths, p.rate)
        order, ctx = cfg.click_order, p.ar_context
        change = _db_to_power(cfg.click_level_change_db)
        near = min(p.click_near, ctx)
        zones: list[ClickZone] = []
        kept: list[int] = []
        for run, (first, last) in enumerate(zip(firsts.tolist(), lasts.tolist(), strict=True)):
            # The error at i covers samples i - candidate_order .. i, and a smooth click
            # can outlast its last candidate by as much: look that far on both sides.
            reach = cfg.click_candidate_order + cfg.click_pad
            lo, hi = first - reach, last + 1 + reach
            if hi - lo > 2 * cfg.click_max_samples + 8:
                continue  # a dense burst of transients is not a click
            if lo - ctx - order < 0 or hi + ctx + order > n:
                continue  # too close to the stream edge to model it
            left = x[lo - ctx - order : lo].astype(np.float64)
            right = x[hi : hi + ctx + order].astype(np.float64)
            near_l, near_r = left[-near:], right[:near]
            power_l, power_r = float(near_l @ near_l), float(near_r @ near_r)
            if max(power_l, power_r) > change * max(min(power_l, power_r), 1e-30):
                continue  # the level changes across it: an onset or an offset
            level = math.sqrt((power_l + power_r) / (2 * near))
            centre = first + int(np.argmax(err[first : last + 1]))
            result = self._verify(lo, hi, left, right, level)
            verified, evidence = None, None
            if result is not None:
                start, end, conf, *core = result
                verified = (start, end)
                evidence = self._click_evidence(*core, conf, err)
            if verified is None and confirmed_only:
                continue
            zones.append(ClickZone(lo, hi, centre, verified, evidence, level))
            kept.append(run)
        if not zones:
            return none
        centres = np.array([z.centre for z in zones])
        levels = np.array([z.level for z in zones])
        windows = click_net.window_inputs(
            x, signed, centres, levels, scale[np.minimum(centres // hop, n_hops - 1)]
        )
        level_db = 20.0 * np.log10(np.maximum(levels, 1e-9))
        scalars = click_net.scalar_inputs(
            p.rate,
            level_db,
            strengths[kept],
            neighbours[kept],
            rivals[kept],
            strong[kept],
            [z.evidence for z in zones],
        )
        return zones, windows, scalars

    def clicks(self) -> list[tuple[int, int, float, str, str]]:
        """Impulses of 1..click_max_samples samples: zones the AR test confirms and the
        click judge believes in.

        Of the zones of :meth:`click_zones`, only those the two-sided AR test confirmed are
        judged (one in twenty on clean programme, so the judge costs little): on held-out
        game speech the zones it did not confirm were most of the judge's false alarms
        (benchmarks/results.md). The confidence is the judge's largest per-sample click
        probability; the span is the AR test's, from the first sample the past fails to
        predict to the last the future fails to predict, padded by click_pad.
        """
        cfg = self.cfg
        # The judge's inputs are made for the confirmed zones only: the others are most
        # of the zones, and detection never judges them.
        zones, windows, scalars = self.click_zones(confirmed_only=True)
        if not zones:
            return []
        judge = cfg.click_judge or click_net.bundled_click_net()
        probs = judge.probabilities(windows, scalars).max(axis=1)
        found: list[tuple[int, int, float, str, str]] = []
        for zone, confidence in zip(zones, probs.tolist(), strict=True):
            if confidence < cfg.click_report:
                continue  # more likely the programme's own than a click: not worth a word
            assert zone.verified is not None and zone.evidence is not None
            start, end = zone.verified
            found.append((start, end, confidence, "", _click_reason(zone.evidence, confidence)))
        return found

    def _click_evidence(
        self, lo: int, hi: int, size: float, conf: float, err: np.ndarray
    ) -> ClickEvidence:
        """What tells the verified click ``x[lo:hi]`` from a transient; ``size``: how far its
        samples are off what both sides predict, ``conf``: the AR test's confidence.

        A digital click lasts a few samples and the signal carries on as before; a struck
        object or a consonant rings on (a whitened-power tail after it) or lasts longer, and
        a click hidden inside loud or impulsive programme hardly stands out of it.
        """
        p, x = self.p, self.x
        g, t, a = p.click_guard, p.click_tail, p.click_around
        before = err[max(0, lo - g - t) : max(0, lo - g)]
        after = err[hi + g : hi + g + t]
        p_before = float(before @ before) / max(before.size, 1)
        p_after = float(after @ after) / max(after.size, 1)
        around = np.concatenate([x[max(0, lo - a) : lo], x[hi : hi + a]]).astype(np.float64)
        level = float(np.abs(around).max()) if around.size else 0.0
        rms = math.sqrt(float(around @ around) / around.size) if around.size else 0.0
        stands = max(size, float(np.abs(x[lo:hi]).max()))  # its deviation, or its peak
        inside = float(err[lo : hi + self.cfg.click_candidate_order].max())
        ctx = np.concatenate([err[max(0, lo - a) : max(0, lo - g)], err[hi + g : hi + a]])
        ctx = ctx.astype(np.float64)
        power = float(np.mean(ctx * ctx)) if ctx.size else 0.0
        return ClickEvidence(
            samples=hi - lo,
            ms=1000.0 * (hi - lo) / p.rate,
            tail_db=10.0 * math.log10(max(p_after, 1e-30) / max(p_before, 1e-30)),
            prominence=stands / max(level, 1e-9),
            size_to_rms=size / max(rms, 1e-9),
            level_db=20.0 * math.log10(max(rms, 1e-9)),
            error_to_median=inside / max(float(np.median(ctx)) if ctx.size else 0.0, 1e-12),
            error_to_peak=inside / max(float(ctx.max()) if ctx.size else 0.0, 1e-12),
            kurtosis=float(np.mean(ctx**4)) / max(power * power, 1e-30) if ctx.size else 3.0,
            ar_confidence=conf,
        )

    def _prediction_error(self) -> np.ndarray:
        """x through a short whitening filter fitted on the whole window (signed).

        A linear predictor (autocorrelation method) flattens the window's long-term
        spectrum, so tonal or bright material does not hide a click the way it does in a
        fixed high-order difference (at 8 kHz a smooth 5-sample click sits inside the
        band of a harmonic tone).
        """
        x, order = self.x, self.cfg.click_candidate_order
        n = x.size
        out = np.zeros(n, dtype=np.float32)
        if n <= 2 * order:
            return out
        r = np.array([np.dot(x[: n - k], x[k:]) for k in range(order + 1)], dtype=np.float64)
        if not r[0] > 0:
            return out
        r[0] *= 1.0 + 1e-6  # a -60 dB noise floor keeps the system well conditioned
        coeffs = linalg.solve_toeplitz(r[:order], r[1:]).astype(np.float32)
        # One multiply-subtract pass per tap: faster than np.convolve beyond ~9 taps.
        err = out[order:]
        err[:] = x[order:]
        tmp = np.empty_like(err)
        for k, c in enumerate(coeffs, start=1):
            np.multiply(x[order - k : n - k], c, out=tmp)
            err -= tmp
        return out

    def _verify(
        self, lo: int, hi: int, left: np.ndarray, right: np.ndarray, rms: float
    ) -> tuple[int, int, float, int, int, float] | None:
        """Two-sided AR check of the candidate zone [lo, hi); ``rms``: level around it."""
        cfg = self.cfg
        order = cfg.click_order
        floor = max(cfg.click_floor, cfg.click_rel_floor * rms)
        # Rows [x[m], ..., x[m+order]]: the forward model predicts the last from the rest
        # (fitted on the left context), the backward model the first (on the right).
        gl = _gram(left, order)
        gr = _gram(right, order)
        eye = np.eye(order)
        a = np.linalg.solve(gl[:order, :order] + (1e-9 * gl[0, 0] + 1e-30) * eye, gl[:order, order])
        c = np.linalg.solve(gr[1:, 1:] + (1e-9 * gr[0, 0] + 1e-30) * eye, gr[1:, 0])
        fwd_filter = np.concatenate([[1.0], -a[::-1]])  # convolve: x[n] - sum a_j x[n-order+j]
        bwd_filter = np.concatenate([[1.0], -c])  # correlate: x[n] - sum c_j x[n+1+j]
        result, near = self._residual_test(lo, hi, fwd_filter, bwd_filter, floor, pitch=False)
        if result is None and near and self.p.pitch_lags[1]:
            # Failed where the context's own peaks (a glottal pulse every period) set the
            # bar, by little: again with the pitch predictor, which takes those away. Only
            # then, as the long-term fit costs as much as the rest of the test.
            result, _ = self._residual_test(lo, hi, fwd_filter, bwd_filter, floor, pitch=True)
        return result

    def _residual_test(
        self,
        lo: int,
        hi: int,
        fwd_filter: np.ndarray,
        bwd_filter: np.ndarray,
        floor: float,
        pitch: bool,
    ) -> tuple[tuple[int, int, float, int, int, float] | None, bool]:
        """The zone [lo, hi) through both predictors of :meth:`_verify` (with ``pitch``, then
        through the long-term predictor too): its span, confidence and size (or None), and
        whether a failed zone came near: the context's peaks set the bar and both sides'
        largest error reached click_pitch_evidence x their context's RMS."""
        cfg, x = self.cfg, self.x
        order, ctx = cfg.click_order, self.p.ar_context
        # Each side's residual over its context and the zone: forward in time from the left,
        # backward (reversed, so the zone comes last too) from the right. With the pitch
        # predictor each reaches a further period back for the long-term prediction.
        reach = self.p.pitch_lags[1] + 2
        pitch_f = pitch and lo - ctx - reach - order >= 0
        pitch_b = pitch and hi + ctx + reach + order <= x.size
        if pitch and not (pitch_f or pitch_b):
            return None, False
        before = ctx + reach * pitch_f
        after = ctx + reach * pitch_b
        past = np.convolve(x[lo - before - order : hi].astype(np.float64), fwd_filter, "valid")
        future = np.correlate(x[lo : hi + after + order].astype(np.float64), bwd_filter, "valid")
        future = future[::-1]
        lags, corr = self.p.pitch_lags, cfg.click_pitch_corr
        if pitch_f:
            past = _long_term_residual(past, before - ctx, before, lags, corr)
        if pitch_b:
            future = _long_term_residual(future, after - ctx, after, lags, corr)
        res_l, res_r = np.abs(past[before - ctx : before]), np.abs(future[after - ctx : after])
        sigma_l = max(math.sqrt(float(res_l @ res_l) / res_l.size), floor)
        sigma_r = max(math.sqrt(float(res_r @ res_r) / res_r.size), floor)
        abs_f, abs_b = np.abs(past[before:]), np.abs(future[after:][::-1])
        # The bar: click_k, or the context's own worst residual times click_peak_ratio
        # (voiced speech has a glottal pulse every few ms; noise has none).
        peak = max(float(res_l.max()) / sigma_l, float(res_r.max()) / sigma_r)
        bar = max(cfg.click_k, cfg.click_peak_ratio * peak)
        err_f, err_b = abs_f / sigma_l, abs_b / sigma_r
        # A click starts where the past stops predicting and ends where the future starts
        # predicting again. An onset fails only the forward test after its start and an
        # offset only the backward test before its end, so for them first > last.
        fwd = np.flatnonzero(err_f > bar)
        bwd = np.flatnonzero(err_b > bar)
        near = bar > cfg.click_k and min(err_f.max(), err_b.max()) >= cfg.click_pitch_evidence
        if fwd.size == 0 or bwd.size == 0:
            return None, near
        first, last = int(fwd[0]), int(bwd[-1])
        if first > last or last - first + 1 > cfg.click_max_samples:
            return None, near
        # How far the samples are off what both sides predict: the click's own size.
        size = float(np.minimum(abs_f[first : last + 1], abs_b[first : last + 1]).max())
        if size < cfg.click_min_amplitude:
            return None, False
        evidence = min(float(err_f[first : last + 1].max()), float(err_b[first : last + 1].max()))
        start = max(0, lo + first - cfg.click_pad)
        end = min(x.size, lo + last + 1 + cfg.click_pad)
        confidence = float(_confidence(bar, evidence))
        return (start, end, confidence, lo + first, lo + last + 1, size), False

    # -- CLIP ----------------------------------------------------------------------------
    def clips(self) -> list[tuple[int, int, float, str]]:
        """Runs of >= clip_min_run samples within clip_tolerance of the local extreme.

        The local extreme is the max (min) over clip_level_window_ms. A run counts when
        the straight lines through the two samples before it and the two after it (its
        flanks) cross at least max(clip_overshoot x level, clip_overshoot_abs) beyond the
        held level: a clipped wave was cut off while still rising, a natural peak (even a
        slow one with many equal quantised samples) flattens before its top. Confidence:
        1 - required overshoot / measured overshoot. A run with fewer than clip_min_runs
        runs (itself included, either sign) within clip_same_level_db of its level in the
        window is doubted unless it is held at digital full scale.
        """
        cfg, p, x = self.cfg, self.p, self.x
        n_hops, hop = self.n_hops, p.hop
        if n_hops == 0:
            return []
        starts_at = np.arange(0, n_hops * hop, hop)
        used = x[: n_hops * hop]
        runs: list[tuple[int, int, float, float]] = []  # start, end, confidence, |level|
        for sign in (1.0, -1.0):
            if sign > 0:
                hop_peak = np.maximum.reduceat(used, starts_at)
            else:
                hop_peak = -np.minimum.reduceat(used, starts_at)
            level = ndimage.maximum_filter1d(hop_peak, p.clip_window_hops, mode="nearest")
            # Only hops that reach the local extreme can hold a clipped run.
            hot = np.flatnonzero(
                (hop_peak >= level - cfg.clip_tolerance) & (level >= cfg.clip_min_level)
            )
            if hot.size == 0:
                continue
            # Look at those hops and their neighbours (a run may straddle hops).
            hops_ = np.unique(np.clip(np.concatenate([hot - 1, hot, hot + 1]), 0, n_hops - 1))
            idx = (hops_[:, None] * hop + np.arange(hop)).ravel()
            vals = sign * used[idx]
            held = np.repeat(level[hops_], hop) - cfg.clip_tolerance
            sel = idx[vals >= held]
            firsts, lasts = _index_runs(sel, 0)
            length = lasts - firsts + 1
            keep = (length >= cfg.clip_min_run) & (length <= p.clip_max)
            keep &= (firsts >= 2) & (lasts + 2 < x.size)
            s, e = firsts[keep], lasts[keep] + 1
            if s.size == 0:
                continue
            # Runs are disjoint and increasing, so reduceat over [s0, e0, s1, e1, ...]
            # sums every run at the even positions.
            bounds = np.stack([s, e], axis=1).ravel()
            sums = np.add.reduceat(x, bounds, dtype=np.float64)[::2]
            held_level = sign * sums / (e - s)
            before2, before1 = sign * x[s - 2].astype(np.float64), sign * x[s - 1]
            after1, after2 = sign * x[e].astype(np.float64), sign * x[e + 1]
            slope_l = before1 - before2
            slope_r = after1 - after2
            rising = (slope_l > 0) & (slope_r > 0)
            # Where the two flank lines cross (clamped into the run).
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (after1 - before1 + slope_r * e + slope_l * (s - 1)) / (slope_l + slope_r)
            t = np.clip(np.nan_to_num(t), s - 1, e)
            apex = np.minimum(before1 + slope_l * (t - (s - 1)), after1 + slope_r * (e - t))
            overshoot = np.where(rising, apex - held_level, 0.0)
            need = np.maximum(cfg.clip_overshoot * np.abs(held_level), cfg.clip_overshoot_abs)
            ok = overshoot > need
            conf = _confidence(need, overshoot)
            runs.extend(
                zip(
                    s[ok].tolist(),
                    e[ok].tolist(),
                    conf[ok].tolist(),
                    np.abs(held_level[ok]).tolist(),
                    strict=True,
                )
            )
        # How many runs (itself included) sit within clip_same_level_db of each run's level:
        # sorted once, so a heavily clipped window of thousands of runs stays cheap.
        levels = np.sort([level for *_, level in runs])
        same = _db_to_power(cfg.clip_same_level_db / 2)  # amplitude ratio
        found: list[tuple[int, int, float, str]] = []
        for start, end, conf, level in runs:
            alike = int(
                np.searchsorted(levels, level * same, side="right")
                - np.searchsorted(levels, level / same, side="left")
            )
            doubt = ""
            if alike < cfg.clip_min_runs and level < FULL_SCALE:
                doubt = (
                    f"the only flat top at its level ({20 * math.log10(level):.1f} dBFS) in "
                    f"{x.size / p.rate:.0f} s: a gain stage driven too hot flattens every peak "
                    "that reaches it"
                )
            found.append((start, end, conf, doubt))
        return found


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="maedaw-detect"
    )


class StreamingDetector:
    """Feed consecutive blocks of a long file; bounded memory regardless of file length.

    Blocks are copied into a buffer of one chunk plus margins. Whenever a chunk and its
    look-ahead are buffered the chunk is analysed; spans are held back until no later
    chunk can merge with them, then returned in order. ``finish`` analyses the rest.
    """

    def __init__(
        self,
        sample_rate: int,
        num_channels: int,
        config: DetectConfig | None = None,
        start: int = 0,
    ) -> None:
        if sample_rate <= 0 or num_channels <= 0:
            raise ValueError("sample_rate and num_channels must be positive")
        self.sample_rate = int(sample_rate)
        self.num_channels = int(num_channels)
        self.config = config or DetectConfig()
        self._p = _params(self.config, self.sample_rate)
        p = self._p
        self._origin = int(start)  # absolute frame of the first fed sample
        capacity = p.back + p.chunk + p.ahead
        self._buf = np.zeros((self.num_channels, capacity), dtype=np.float32)
        self._buf_start = self._origin  # absolute frame of _buf[:, 0]
        self._fill = 0  # valid frames in _buf
        self._next = self._origin  # start of the next chunk to analyse
        self._pending: list[Span] = []
        self._finished = False

    @property
    def position(self) -> int:
        """Absolute frame after the last fed sample."""
        return self._buf_start + self._fill

    def feed(self, block: np.ndarray) -> list[Span]:
        """Add ``block`` (channels, n) and return the spans that can no longer change."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        block = np.asarray(block)
        if block.ndim == 1 and self.num_channels == 1:
            block = block[None, :]
        if block.ndim != 2 or block.shape[0] != self.num_channels:
            raise ValueError(f"expected ({self.num_channels}, n) block, got {block.shape}")
        out: list[Span] = []
        p = self._p
        done = 0
        while done < block.shape[1]:
            room = self._buf.shape[1] - self._fill
            take = min(room, block.shape[1] - done)
            # The copy also converts float64 to float32.
            self._buf[:, self._fill : self._fill + take] = block[:, done : done + take]
            self._fill += take
            done += take
            while self.position >= self._next + p.chunk + p.ahead:
                out.extend(self._analyse(self._next + p.chunk))
        return out

    def finish(self) -> list[Span]:
        """Analyse what is left and return all remaining spans."""
        if self._finished:
            return []
        out: list[Span] = []
        while self._next < self.position:
            out.extend(self._analyse(min(self._next + self._p.chunk, self.position)))
        self._finished = True
        out.extend(self._settle([], horizon=None))
        return out

    def _analyse(self, own_hi: int) -> list[Span]:
        """Analyse the chunk [self._next, own_hi) with its margins, then slide the buffer."""
        p = self._p
        own_lo = self._next
        win_lo = max(self._origin, own_lo - p.back)
        win_hi = min(self.position, own_hi + p.ahead)
        window = self._buf[:, win_lo - self._buf_start : win_hi - self._buf_start]
        # Channels are independent and numpy releases the GIL in its loops, so
        # channels are analysed in parallel threads; results keep channel order.
        per_channel = _pool().map(
            lambda ch: self._analyse_channel(window[ch], ch, win_lo, own_lo, own_hi),
            range(self.num_channels),
        )
        found = [span for spans in per_channel for span in spans]
        if self.num_channels > 1:
            found = [self._shared_click(s, window, win_lo) for s in found]
        logger.debug("chunk [%d, %d): %d spans", own_lo, own_hi, len(found))
        self._next = own_hi
        # Keep only what the next chunk's look-back needs.
        keep_from = max(self._origin, own_hi - p.back) - self._buf_start
        if keep_from > 0:
            kept = self._fill - keep_from
            self._buf[:, :kept] = self._buf[:, keep_from : self._fill]
            self._buf_start += keep_from
            self._fill = kept
        return self._settle(found, horizon=own_hi)

    def _shared_click(self, span: Span, window: np.ndarray, win_lo: int) -> Span:
        """A click that stands out in another channel at the same time as well is a sound
        in the room (a real transient reaches every microphone), not a digital click."""
        if span.kind is not DamageKind.CLICK or span.doubt:
            return span
        lo, hi, a = span.start - win_lo, span.end - win_lo, self._p.click_around
        for ch in range(self.num_channels):
            if ch == span.channel:
                continue
            y = window[ch]
            around = np.concatenate([y[max(0, lo - a) : lo], y[hi : hi + a]])
            level = float(np.abs(around).max()) if around.size else 0.0
            peak = float(np.abs(y[lo:hi]).max())
            if peak >= max(self.config.click_prominence * level, self.config.click_min_amplitude):
                return replace(span, doubt=f"also in channel {ch + 1}: a sound, not a click")
        return span

    def _analyse_channel(
        self,
        x: np.ndarray,
        channel: int,
        win_lo: int,
        own_lo: int,
        own_hi: int,
    ) -> list[Span]:
        cfg = self.config
        if x.size == 0:
            return []
        analysis = _Channel(x, cfg, self._p)
        # (start, end, confidence[, doubt]) per detector
        raw: list[tuple[DamageKind, Sequence[tuple]]] = []
        if DamageKind.DROPOUT in cfg.kinds:
            raw.append((DamageKind.DROPOUT, analysis.dropouts()))
        if DamageKind.LEVEL_DROP in cfg.kinds:
            raw.append((DamageKind.LEVEL_DROP, analysis.level_drops()))
        if DamageKind.CLICK in cfg.kinds:
            raw.append((DamageKind.CLICK, analysis.clicks()))
        if DamageKind.CLIP in cfg.kinds:
            raw.append((DamageKind.CLIP, analysis.clips()))
        spans = []
        for kind, items in raw:
            for start, end, conf, *why in items:  # (doubt[, note])
                a, b = start + win_lo, end + win_lo
                if own_lo <= a < own_hi:
                    doubt, note = (*why, "", "")[:2]
                    spans.append(Span(a, b, channel, kind, conf, doubt, note))
        return spans

    def _settle(self, new: list[Span], horizon: int | None) -> list[Span]:
        """Merge, resolve kinds, and release the spans that no later chunk can touch.

        Later chunks only report spans starting at or after ``horizon``, so a span that
        ends before it is final; its overlaps with other kinds are all known, too.
        """
        merged = _merge(self._pending + new)
        final = [s for s in merged if horizon is None or s.end < horizon]
        open_ = [s for s in merged if not (horizon is None or s.end < horizon)]
        kept = _resolve(final, merged, self.config.click_pad + 2)
        # Release in order: nothing that starts after a still-open span.
        first_open = min((s.start for s in open_), default=None)
        if first_open is None:
            out, hold = kept, []
        else:
            out = [s for s in kept if s.start < first_open]
            hold = [s for s in kept if s.start >= first_open]
        self._pending = sorted(hold + open_)
        return sorted(out)


def _merge(spans: list[Span]) -> list[Span]:
    """Merge overlapping or touching spans of the same channel and kind (max confidence; a
    doubt about any part is kept)."""
    out: list[Span] = []
    groups: dict[tuple[int, DamageKind], list[Span]] = {}
    for s in spans:
        groups.setdefault((s.channel, s.kind), []).append(s)
    for group in groups.values():
        group.sort()
        cur = group[0]
        for s in group[1:]:
            if s.start <= cur.end:
                cur = replace(
                    cur,
                    end=max(cur.end, s.end),
                    confidence=max(cur.confidence, s.confidence),
                    doubt=cur.doubt or s.doubt,
                )
            else:
                out.append(cur)
                cur = s
        out.append(cur)
    out.sort()
    return out


def _resolve(final: list[Span], known: list[Span], margin: int) -> list[Span]:
    """Drop final spans explained by another kind on the same channel.

    A LEVEL_DROP over a DROPOUT is the dropout; a CLICK on (or within ``margin`` of) a
    DROPOUT or CLIP is that damage's edge. ``known`` is merged, so the spans of one
    channel and kind are disjoint and sorted: a bisection finds the only candidates.
    """
    blockers: dict[tuple[int, DamageKind], tuple[list[int], list[Span]]] = {}
    for s in known:
        if s.kind in (DamageKind.DROPOUT, DamageKind.CLIP):
            ends, spans = blockers.setdefault((s.channel, s.kind), ([], []))
            ends.append(s.end)
            spans.append(s)

    def hit(span: Span, kind: DamageKind, pad: int) -> bool:
        ends, spans = blockers.get((span.channel, kind), ([], []))
        i = bisect.bisect_right(ends, span.start - pad)  # first blocker ending after start
        return i < len(spans) and spans[i].start - pad < span.end

    kept = []
    for s in final:
        if s.kind is DamageKind.LEVEL_DROP and hit(s, DamageKind.DROPOUT, 0):
            continue
        if s.kind is DamageKind.CLICK and (
            hit(s, DamageKind.DROPOUT, margin) or hit(s, DamageKind.CLIP, margin)
        ):
            continue
        kept.append(s)
    return kept


def click_zones(
    x: np.ndarray, sample_rate: int, config: DetectConfig | None = None
) -> tuple[list[ClickZone], np.ndarray, np.ndarray]:
    """The click candidate zones of one channel ``x`` (1-D, analysed as one window) and the
    judge's inputs for them: what the judge is trained on (:mod:`maedaw.benchmarks.click_train`)."""
    cfg = config or DetectConfig()
    signal = np.asarray(x, dtype=np.float32)
    return _Channel(signal, cfg, _params(cfg, sample_rate)).click_zones()


def detect(
    x: np.ndarray, sample_rate: int, offset: int = 0, config: DetectConfig | None = None
) -> list[Span]:
    """Detect damage in ``x``: the streaming detector fed once.

    x: float (channels, frames) in [-1, 1] (float32 or float64; 1-D means mono);
    offset = absolute frame index of x[:, 0]. Returns spans sorted.
    """
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"expected (channels, frames), got shape {x.shape}")
    detector = StreamingDetector(sample_rate, x.shape[0], config, start=offset)
    spans = detector.feed(x)
    spans.extend(detector.finish())
    return sorted(spans)


@dataclass(frozen=True)
class Sensitivity:
    """How sure a detection must be before auto-repair writes it (``low`` | ``normal`` |
    ``high``). Detection itself is the same at every sensitivity; what changes is the bar a
    span's confidence must reach, per kind (for a click, the click judge's probability).
    Every other span is reported as left alone, with the reason."""

    name: str
    bars: dict[DamageKind, float]  # least confidence written, per kind

    def doubt(self, span: Span) -> str:
        """Why auto-repair leaves ``span`` alone ("" if it writes it)."""
        if span.kind is DamageKind.MARKED:
            return ""
        if span.doubt:
            return span.doubt
        bar = self.bars.get(span.kind, 0.0)
        if span.confidence < bar:
            # three places: the click bars differ in the third (0.995, 0.999)
            why = f"confidence {span.confidence:.3f} below {bar:.3f} (sensitivity {self.name})"
            return f"{why}: {span.note}" if span.note else why
        return ""


def _bars(click: float, dropout: float, clip: float, level_drop: float) -> dict[DamageKind, float]:
    return {
        DamageKind.CLICK: click,
        DamageKind.DROPOUT: dropout,
        DamageKind.CLIP: clip,
        DamageKind.LEVEL_DROP: level_drop,
    }


# Bars: click (the click judge's probability), dropout, clip, level drop. The click bars were
# chosen on three whole packages the judge was not trained on (the sweep is in
# click_net.safetensors' metadata): ``normal`` is the lowest bar that let at most half a
# transient zone per 10 minutes through there (0.995: 0.44, 83 % of click zones; 0.99 let
# 0.66 through), ``low`` none (0.999, 73 %), ``high`` at most six (0.8, 94 %); then measured
# on the detect folders (benchmarks/results.md). The other bars as chosen in session 9.
SENSITIVITIES: Final = {
    "low": Sensitivity("low", _bars(0.999, 0.7, 0.7, 0.5)),
    "normal": Sensitivity("normal", _bars(0.995, 0.5, 0.5, 0.5)),
    "high": Sensitivity("high", _bars(0.8, 0.0, 0.0, 0.0)),
}


def sensitivity(name: str) -> Sensitivity:
    """The named sensitivity; ValueError names the valid ones."""
    try:
        return SENSITIVITIES[name]
    except KeyError:
        valid = ", ".join(SENSITIVITIES)
        raise ValueError(f"sensitivity must be one of {valid}, got {name!r}") from None
