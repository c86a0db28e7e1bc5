"""Fill a dropout on one channel from a channel that kept playing.

A wireless receiver or one side of a tape head drops out, the other channel of the take is
intact. Whatever AR or the model invent for the gap, the intact channel *heard* it: in most
stereo material the two channels are close to a linear filter of each other (a pan, a spaced
pair's delay and colouring, a shared reverb). So the lost channel is predicted from the intact
one through a short FIR filter fitted on the context around the gap:

1. the bulk delay between the channels, from their cross-correlation on the context (up to
   ``max_delay_ms``: spaced microphones a few metres apart);
2. a least-squares FIR of ``2 * taps + 1`` coefficients centred on that delay (ridge-regularised
   normal equations; rows thinned so a 192 kHz file costs what a 48 kHz one does);
3. its prediction gain on the context, ``10 log10(|target|^2 / |target - prediction|^2)``;
   below ``min_fit_db`` the channels are not related enough and the caller falls back to AR or
   the model;
4. the fill is the prediction plus the residual (target minus prediction) interpolated into the
   gap by AR, so short gaps keep AR's waveform accuracy and long ones the intact channel's.

Only samples that are known on both channels serve as context: the caller passes every
damaged stretch of either channel.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import signal as sps

from . import ar

log = logging.getLogger(__name__)

__all__ = ["ChannelFit", "CrossChannelConfig", "fill_from", "fit", "pick_source"]


@dataclass(frozen=True)
class CrossChannelConfig:
    """How a lost channel is predicted from an intact one."""

    enabled: bool = True
    context_s: float = 0.5  # each side of the gap
    max_delay_ms: float = 10.0  # inter-channel delay searched for
    taps: int = 16  # FIR coefficients each side of the delay
    min_fit_db: float = 12.0  # prediction gain on the context needed to use the channel
    max_rows: int = 24_000  # context samples used in the least-squares fit (evenly thinned)
    min_context_s: float = 0.05  # less known context on both channels: no fit

    def __post_init__(self) -> None:
        if self.context_s <= 0 or self.max_delay_ms < 0 or self.taps < 0:
            raise ValueError("context_s must be > 0, max_delay_ms and taps >= 0")
        if self.max_rows < 16 or self.min_context_s <= 0:
            raise ValueError("max_rows must be >= 16 and min_context_s > 0")


@dataclass(frozen=True)
class ChannelFit:
    """A filter that predicts the target channel from ``source``:
    ``prediction[n] = sum_k coefficients[k] * source[n + delay + k - taps]``."""

    source: int
    delay: int  # samples the source lags the target by (negative: it leads)
    coefficients: np.ndarray  # (2 taps + 1,)
    fit_db: float  # prediction gain on the context

    @property
    def taps(self) -> int:
        return (self.coefficients.size - 1) // 2

    def predict(self, source: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """The prediction of target samples ``[lo, hi)`` (zeros past the source's ends)."""
        a, b = lo + self.delay - self.taps, hi + self.delay + self.taps
        piece = np.zeros(b - a)
        s0, s1 = max(a, 0), min(b, source.size)
        if s0 < s1:
            piece[s0 - a : s1 - a] = source[s0:s1]
        # correlate: out[n] = sum_k c[k] * piece[n + k]
        return np.convolve(piece, self.coefficients[::-1], mode="valid")


def _known_context(
    n: int, gap: tuple[int, int], blocked: Sequence[tuple[int, int]], reach: int, context: int
) -> np.ndarray:
    """Indices of the context around ``gap`` whose filter footprint (``reach`` samples each
    side) touches no blocked stretch and stays inside the signal. Works on the window around
    the gap only, so a long region with many gaps costs no more per gap than a short one."""
    lo, hi = gap
    w0, w1 = max(0, lo - context), min(n, hi + context)
    ok = np.zeros(w1 - w0, dtype=bool)
    ok[: lo - w0] = True
    ok[hi - w0 :] = True
    for s, e in [*blocked, gap]:
        s, e = max(w0, s - reach), min(w1, e + reach)
        if s < e:
            ok[s - w0 : e - w0] = False
    ok[: max(0, reach - w0)] = False
    ok[max(0, n - reach - w0) :] = False
    return np.flatnonzero(ok) + w0


def fit(
    target: np.ndarray,
    source: np.ndarray,
    gap: tuple[int, int],
    blocked: Sequence[tuple[int, int]],
    rate: int,
    source_index: int,
    config: CrossChannelConfig | None = None,
) -> ChannelFit | None:
    """Fit the filter from ``source`` to ``target`` on the context of ``gap``; None when
    there is too little known context or the source is silent there."""
    cfg = config or CrossChannelConfig()
    n = target.size
    max_delay = round(cfg.max_delay_ms * rate / 1000.0)
    reach = max_delay + cfg.taps
    context = round(cfg.context_s * rate)
    idx = _known_context(n, gap, blocked, reach, context)
    if idx.size < max(cfg.min_context_s * rate, 4 * (2 * cfg.taps + 1)):
        return None
    y = target[idx].astype(np.float64)
    lo_c, hi_c = int(idx[0]) - reach, int(idx[-1]) + 1 + reach
    if not (np.isfinite(y).all() and np.isfinite(source[lo_c:hi_c]).all()):
        return None  # non-finite samples in the context: no fit rather than a NaN filter
    if not np.any(source[idx]) or not np.any(y):
        return None
    # bulk delay: peak of the cross-correlation over the context (target vs shifted source)
    lo_i, hi_i = int(idx[0]), int(idx[-1]) + 1
    t_seg = np.zeros(hi_i - lo_i)
    t_seg[idx - lo_i] = y
    s_seg = source[lo_i - max_delay : hi_i + max_delay].astype(np.float64)
    # unknown target samples are zeros in t_seg, so they add nothing at any lag
    xc = sps.correlate(s_seg, t_seg, mode="valid", method="fft")  # lags -max_delay..+max_delay
    delay = int(np.argmax(np.abs(xc))) - max_delay
    # least squares FIR around the delay, on evenly thinned rows
    rows = idx if idx.size <= cfg.max_rows else idx[:: int(np.ceil(idx.size / cfg.max_rows))]
    offsets = np.arange(-cfg.taps, cfg.taps + 1) + delay
    design = source[rows[:, None] + offsets[None, :]].astype(np.float64)
    wanted = target[rows].astype(np.float64)
    gram = design.T @ design
    ridge = 1e-6 * float(np.trace(gram)) / gram.shape[0] + 1e-30
    try:
        coefficients = np.linalg.solve(gram + ridge * np.eye(gram.shape[0]), design.T @ wanted)
    except np.linalg.LinAlgError:
        return None
    error = wanted - design @ coefficients
    energy, error_energy = float(wanted @ wanted), float(error @ error)
    if not (np.isfinite(error_energy) and energy > 0):
        return None
    fit_db = 10.0 * np.log10(energy / max(error_energy, 1e-30 * energy))
    return ChannelFit(source_index, delay, coefficients, float(fit_db))


def pick_source(
    samples: np.ndarray,
    target: int,
    gap: tuple[int, int],
    blocked: dict[int, list[tuple[int, int]]],
    rate: int,
    config: CrossChannelConfig | None = None,
) -> ChannelFit | None:
    """The best-fitting intact channel for ``target``'s ``gap``, or None if none reaches
    ``min_fit_db``. ``blocked[c]`` lists the damaged stretches of channel ``c``; a channel
    with damage within the filter's reach of the gap is not a candidate."""
    cfg = config or CrossChannelConfig()
    if not cfg.enabled or samples.shape[0] < 2:
        return None
    reach = round(cfg.max_delay_ms * rate / 1000.0) + cfg.taps
    lo, hi = gap
    best: ChannelFit | None = None
    for c in range(samples.shape[0]):
        if c == target:
            continue
        own = blocked.get(c, [])
        if any(s < hi + reach and e > lo - reach for s, e in own):
            continue  # lost here too
        if not np.isfinite(samples[c, max(0, lo - reach) : hi + reach]).all():
            continue
        both = [*blocked.get(target, []), *own]
        candidate = fit(samples[target], samples[c], gap, both, rate, c, cfg)
        if candidate is not None and (best is None or candidate.fit_db > best.fit_db):
            best = candidate
    if best is None or best.fit_db < cfg.min_fit_db:
        return None
    return best


def fill_from(
    target: np.ndarray,
    source: np.ndarray,
    channel_fit: ChannelFit,
    gap: tuple[int, int],
    fade: int,
    rate: int,
    other_gaps: Sequence[tuple[int, int]] = (),
    residual_ar: bool = True,
    ar_config: ar.ARConfig | None = None,
) -> np.ndarray:
    """The estimate of ``target`` over ``gap`` widened by ``fade`` (clipped to the signal;
    the stretch :func:`maedaw.dsp.ar.crossfade_edges` takes): the prediction
    from ``source`` plus the residual carried into the gap by AR (``residual_ar``; else the
    residual is taken as zero inside the gap). ``other_gaps`` are other unknown stretches of
    ``target`` near this one (their residual is not used as AR context)."""
    n = target.size
    lo, hi = max(0, gap[0] - fade), min(n, gap[1] + fade)
    if not residual_ar:
        return channel_fit.predict(source, lo, hi)
    margin = max(round(0.05 * rate), 4 * (hi - lo))  # AR context each side
    a, b = max(0, lo - margin), min(n, hi + margin)
    prediction = channel_fit.predict(source, a, b)
    residual = target[a:b].astype(np.float64) - prediction
    holes = [(lo - a, hi - a)] + [
        (max(0, s - a), min(b - a, e - a)) for s, e in other_gaps if s < b and e > a
    ]
    residual = ar.fill_gaps(residual, holes, ar_config)
    return prediction[lo - a : hi - a] + residual[lo - a : hi - a]
