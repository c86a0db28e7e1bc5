"""Two-sided least-squares autoregressive (LSAR) interpolation of missing samples.

This is the classical baseline every learned repair model has to beat (Janssen,
Veldhuis & Vries 1986; Vaseghi, *Advanced Digital Signal Processing and Noise
Reduction*, ch. "Interpolation").

Model
-----
The signal around a gap is modelled as an order-``p`` AR process,
``e[n] = sum_{k=0..p} a[k] x[n-k]`` with ``a[0] = 1``:

1. *Estimate* ``a`` from the known context on both sides of the gap.  Each run
   of known samples is its own segment and the segments are pooled (their
   normal equations are summed), so the predictor never runs across the gap
   or across another gap's damaged samples.  Default: the covariance
   (least-squares) method with a small ridge; Burg's method is available.
2. *Interpolate*: choose the missing samples ``x_u`` that minimise the total
   squared prediction error over every prediction window that touches the
   gap, ``min ||A_u x_u + A_k x_k||^2``.  The normal matrix ``A_u^T A_u`` is
   symmetric positive definite and banded (bandwidth ``p``); away from the
   ends of the signal it is Toeplitz with entries ``sum_k a[k] a[k+d]``.  It is
   solved by banded Cholesky (``scipy.linalg.solveh_banded``), O(m p^2) for
   ``m`` unknowns, never an explicit inverse.
3. Optionally (``ARConfig.iterations``) re-estimate the model on the context
   *including* the current fill and solve again (Janssen's iteration).

Excitation (``ARConfig.excitation``)
------------------------------------
Minimising the prediction error means aiming for *no* excitation inside the
gap: the classical fill decays toward silence in the middle of a long gap and
loses its voicing, and under packet loss (many gaps sharing short contexts)
the gaps lose a sixth to a quarter of their energy on speech.  With ``"pitch"``
(the default for gaps from ``pitch_from_gap_ms``, 15 ms; shorter ones keep the plain
solve) the solve aims instead for a target error signal: the context's own
prediction error carried in by the context's pitch period (normalised
autocorrelation, 2.5-20 ms, sub-multiples preferred), from the left for the
first half of each gap and from the right for the second; a context with no
clear period gets an error stretch copied from beyond the gap.  The fill still
meets both edges (the target is soft, the solve is the same least squares).
Measured (``benchmarks/results.md``, session 24): PLCMOS under 20 % loss of
20 ms packets on held-out speech from 68 % to 83 % of the way from zero-fill
to clean; LSD 0.6-7.7 dB lower at 40-120 ms on every family, about even at
20 ms, but 0.1-0.6 dB *higher* at 10 ms, and gap SNR up to 3.5 dB lower (the
carried error has its own phase), so short gaps are better left to the plain solve.

Order and context rules (``ARConfig.order_for`` / ``ARConfig.context_for``)
------------------------------------------------------------------------------
* order ``p = clip(3 m + 2, 40, 500)`` at 48 kHz for the longest gap ``m`` of
  a cluster (Janssen's ``3m + 2`` rule with a floor and a cap), the bounds
  scaling linearly with the sample rate (a fixed duration: 0.8 ms to 10.4 ms);
* context per side ``= max(2 p, 480 at 48 kHz)`` samples (10 ms minimum), i.e.
  ~21 ms each side for gaps of 3.5 ms and longer.

  Both were measured on the recorded speech (5 to 50 ms gaps): a cap of 1000
  with 3 p of context (the textbook choice) loses 2 to 4 dB of gap SNR to this
  one because speech is only stationary over a few tens of ms, while a cap
  below ~350 starts to lose spectral detail (log-spectral distance) on long
  gaps.  Janssen iterations gained < 1 dB on speech and were mixed on the
  sound effects at twice the cost, so they are off by default;
* if the available context is short (gap near the start or end of the audio,
  or between other gaps) the order is lowered until the pooled segments give
  at least ``min_rows_per_order * p`` prediction rows.  Prediction windows
  that would reach past the ends of the signal are simply dropped, which
  turns the solve into a one-sided extrapolation; the small diagonal load
  (``gap_ridge``) then pulls samples that the model cannot reach any more
  toward zero (the process mean) instead of letting them blow up.

Robustness: the signal is normalised by the context RMS before estimation;
digital-silence context gives zeros; a failed factorisation or a non-finite
result halves the order and retries; below order 2 the fill falls back to a
straight line between the neighbouring known samples.  The result is always
finite.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy import linalg, signal

from maedaw.core.util import CountFn

log = logging.getLogger(__name__)

REFERENCE_RATE = 48_000  # the rate at which the sample-count defaults below are given

__all__ = [
    "ARConfig",
    "choose_configs",
    "crossfade_edges",
    "fill_gaps",
    "interpolate",
    "linear_fill",
    "repair_span",
    "repeat_fill",
    "zero_fill",
]


@dataclass(frozen=True)
class ARConfig:
    """Settings of the LSAR interpolator; the defaults were tuned on recorded speech.

    Sample counts (``min_order``, ``max_order``, ``min_context``) are given at
    48 kHz and scaled by ``sample_rate / 48000``, so a setting means the same
    duration at every rate.
    """

    sample_rate: int = REFERENCE_RATE  # only used to scale the sample-count settings
    order_per_gap_sample: float = 3.0  # Janssen's rule p = 3 m + 2
    min_order: int = 40  # even a 1-sample gap benefits from a spectral model
    max_order: int = 500  # ~10 ms; higher orders over-fit the short stationary context
    context_multiple: float = 2.0  # known samples used on each side, in units of p
    min_context: int = 480  # 10 ms; floor for the context of very short gaps
    method: Literal["covariance", "burg"] = "covariance"
    iterations: int = 0  # Janssen re-estimation passes including the fill
    ridge: float = 1e-4  # diagonal load on the AR normal equations, relative to mean diagonal
    gap_ridge: float = 1e-3  # diagonal load on the gap system, relative to residual power
    min_rows_per_order: float = 2.0  # prediction rows needed per coefficient
    # Order caps (at 48 kHz) to choose from per gap, by how well each one
    # reconstructs known stretches of the same length beside the gap: speech
    # wants ~500, sustained tonal music ~1000. One value switches selection off.
    order_caps: tuple[int, ...] = (250, 500, 1000)
    # Excitation: plain LSAR asks for the least prediction error inside the gap, i.e. no
    # excitation at all, so a long gap's fill decays toward silence in the middle and loses
    # its pitch. With "pitch", the prediction error the solve aims for inside the gap is the
    # context's own error signal carried in by its pitch period from each side (or copied
    # from the context when it has no clear period), so the fill keeps its level and voicing.
    excitation: Literal["none", "pitch"] = "pitch"  # "pitch" wins from 20 ms (results.md)
    # Shorter gaps keep plain LSAR: over 10 ms the decay costs nothing audible and the
    # carried error adds 0.1-0.6 dB LSD (results.md, session 24); from 20 ms pitch wins.
    pitch_from_gap_ms: float = 15.0
    # A fixed order cap for pitch-excited gaps skips the order search (a seventh of the
    # time). Off by default: no fixed cap kept both measures (session 25, results.md):
    # 500 keeps speech PLCMOS under packet loss but costs tonal music its long orders
    # (20 ms gap SNR on a tone mix 1.2 dB against the search's > 6); 1000 wins single-gap
    # LSD by 0.06-0.27 dB but loses 2-11 PLCMOS points where trains of gaps cut the context.
    pitch_order_cap: int | None = None
    pitch_min_ms: float = 2.5  # 400 Hz
    pitch_max_ms: float = 20.0  # 50 Hz
    voicing: float = 0.1  # normalised correlation below which the context counts as unvoiced

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        if self.min_order < 1 or self.max_order < self.min_order:
            raise ValueError("need 1 <= min_order <= max_order")
        if self.context_multiple < 1.0:
            # the prediction windows touching a gap reach p samples outside it
            raise ValueError("context_multiple must be >= 1")
        if self.iterations < 0 or self.ridge < 0 or self.gap_ridge < 0:
            raise ValueError("iterations, ridge and gap_ridge must be >= 0")
        if not self.order_caps or min(self.order_caps) < self.min_order:
            raise ValueError("order_caps must be non-empty and >= min_order")
        if self.method not in ("covariance", "burg"):
            raise ValueError(f"unknown method {self.method!r}")

    def _scaled(self, samples: int) -> int:
        return max(1, round(samples * self.sample_rate / REFERENCE_RATE))

    def order_for(self, gap_length: int) -> int:
        """AR order for a gap of ``gap_length`` samples (before any context limit)."""
        p = round(self.order_per_gap_sample * gap_length + 2)
        lo, hi = self._scaled(self.min_order), self._scaled(self.max_order)
        return int(min(max(p, lo), hi))

    def pitch_excited(self, gap_length: int) -> bool:
        """Whether a gap of ``gap_length`` samples is solved with pitch excitation."""
        return self.excitation == "pitch" and (
            gap_length >= self.pitch_from_gap_ms * self.sample_rate / 1000.0
        )

    def pitch_lags(self) -> tuple[int, int]:
        """Shortest and longest pitch period searched, in samples at ``sample_rate``."""
        lo = max(2, round(self.pitch_min_ms * self.sample_rate / 1000.0))
        return lo, max(lo + 1, round(self.pitch_max_ms * self.sample_rate / 1000.0))

    def context_for(self, order: int) -> int:
        """Known samples wanted on each side of a gap for an order-``order`` model."""
        return int(max(round(self.context_multiple * order), self._scaled(self.min_context)))


# ----------------------------------------------------------------------------- baselines


def _check_gap(x: np.ndarray, start: int, end: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D signal, got shape {x.shape}")
    if not 0 <= start < end <= x.shape[0]:
        raise ValueError(f"gap [{start}, {end}) outside signal of length {x.shape[0]}")
    return x


def zero_fill(x: np.ndarray, start: int, end: int, config: ARConfig | None = None) -> np.ndarray:
    """Baseline: digital silence (what a dropout already is)."""
    _check_gap(x, start, end)
    return np.zeros(end - start)


def repeat_fill(x: np.ndarray, start: int, end: int, config: ARConfig | None = None) -> np.ndarray:
    """Baseline: repeat the ``end - start`` samples just before the gap (packet repetition).

    The gap continues the preceding stretch periodically (period = that
    stretch's length, shorter when the left context is short); with no left
    context the stretch right after the gap is continued backwards; with no
    context at all, zeros.
    """
    x = _check_gap(x, start, end).astype(np.float64)
    m = end - start
    k = np.arange(m)
    if start > 0:
        source = x[max(0, start - m) : start]
        return source[k % source.size]
    source = x[end : end + m]
    if source.size == 0:
        return np.zeros(m)
    return source[(k - m) % source.size]


def linear_fill(x: np.ndarray, start: int, end: int, config: ARConfig | None = None) -> np.ndarray:
    """Baseline: a straight line between the last sample before and the first after the gap."""
    x = _check_gap(x, start, end).astype(np.float64)
    m = end - start
    left = x[start - 1] if start > 0 else None
    right = x[end] if end < x.shape[0] else None
    if left is None and right is None:
        return np.zeros(m)
    if left is None:
        return np.full(m, right)
    if right is None:
        return np.full(m, left)
    t = np.arange(1, m + 1) / (m + 1)
    return left + (right - left) * t


# ----------------------------------------------------------------------------- AR estimation


def _lagged_gram(s: np.ndarray, p: int) -> np.ndarray:
    """Upper triangle of ``C[i, j] = sum_{n=p}^{L-1} s[n-i] s[n-j]``, ``0 <= i <= j <= p``.

    O(L log L + p^2) instead of the O(L p^2) of forming the (L-p) x (p+1) data
    matrix: the first row is a cross-correlation, and moving one step down a
    diagonal adds the sample that enters the window at the top and removes the
    one that leaves at the bottom, so each diagonal is a cumulative sum.  The
    strict lower triangle of the result is garbage (never read: the Cholesky
    factorisation below uses the upper triangle only).
    """
    n = s.shape[0]
    first = signal.correlate(s, s[p:], mode="valid")[::-1]  # C[0, d]
    # C[i, i+d] = C[0, d] + sum_{k<i} (u[k] u[k+d] - v[k] v[k+d]) with u[k] = s[p-1-k]
    # (enters the window) and v[k] = s[n-1-k] (leaves it); entries with k+d >= p
    # only feed the garbage triangle, so zero padding is harmless
    u = np.concatenate((s[p - 1 :: -1] if p else s[:0], np.zeros(p + 1)))
    v = np.concatenate((s[n - 1 : n - 1 - p : -1] if p else s[:0], np.zeros(p + 1)))
    hu = np.lib.stride_tricks.sliding_window_view(u, p + 1)[:p]  # hu[k, d] = u[k+d]
    hv = np.lib.stride_tricks.sliding_window_view(v, p + 1)[:p]
    skewed = np.empty((p + 1, p + 1))  # skewed[i, d] = C[i, i+d]
    skewed[0] = first
    # in place: at order 1000 these are 8 MB each, and the passes over memory set the pace
    steps = np.multiply(u[:p, None], hu, out=skewed[1:])
    steps -= v[:p, None] * hv
    np.cumsum(skewed, axis=0, out=skewed)
    # un-skew: in a flat buffer, C[i, i+d] sits at i (p+2) + d; the (p+1) x (p+1)
    # view with that row stride never overlaps itself because d < p+2
    flat = np.zeros((p + 1) * (p + 2))  # the unused lower triangle must not be garbage (NaN/inf)
    view = np.lib.stride_tricks.as_strided(
        flat, shape=(p + 1, p + 1), strides=((p + 2) * flat.itemsize, flat.itemsize)
    )
    view[...] = skewed
    return flat[: (p + 1) * (p + 1)].reshape(p + 1, p + 1)


def _covariance_ar(segments: list[np.ndarray], p: int, ridge: float) -> tuple[np.ndarray, float]:
    """Pooled covariance-method (least-squares) AR fit; returns ``(a, residual power)``."""
    c = np.zeros((p + 1, p + 1))
    rows = 0
    for s in segments:
        if s.shape[0] > p:
            c += _lagged_gram(s, p)
            rows += s.shape[0] - p
    if rows == 0:
        raise ValueError("no segment longer than the order")
    r = c[1:, 1:]  # upper triangle valid
    load = ridge * np.trace(r) / p + 1e-12 * c[0, 0] / rows
    r[np.diag_indices(p)] += load
    factor = linalg.cho_factor(r, lower=False, overwrite_a=True, check_finite=False)
    a1 = linalg.cho_solve(factor, -c[0, 1:], check_finite=False)
    # (R + load) a1 = -r, so the residual a^T C a = c00 + a1.r - load |a1|^2
    power = max(float(c[0, 0] + a1 @ c[0, 1:] - load * (a1 @ a1)), 0.0) / rows
    return np.concatenate(([1.0], a1)), power


def _burg_ar(segments: list[np.ndarray], p: int) -> tuple[np.ndarray, float]:
    """Pooled Burg AR fit (reflection coefficients from all segments at once)."""
    fwd = [s.copy() for s in segments if s.shape[0] > p]
    bwd = [s.copy() for s in fwd]
    a = np.array([1.0])
    power = sum(float(s @ s) for s in fwd) / max(sum(s.shape[0] for s in fwd), 1)
    for _ in range(p):
        num = den = 0.0
        for f, b in zip(fwd, bwd, strict=True):
            num += float(f[1:] @ b[:-1])
            den += float(f[1:] @ f[1:]) + float(b[:-1] @ b[:-1])
        k = -2.0 * num / den if den > 0 else 0.0
        for i, (f, b) in enumerate(zip(fwd, bwd, strict=True)):
            fwd[i], bwd[i] = f[1:] + k * b[:-1], b[:-1] + k * f[1:]
        a = np.concatenate((a, [0.0]))
        a = a + k * a[::-1]
        power *= 1.0 - k * k
    return a, power


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open ``[start, end)`` runs of True in a boolean mask."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _feasible_order(lengths: list[int], p: int, rows_per_order: float) -> int:
    """Largest order <= p for which the segments give enough prediction rows."""
    while p >= 1 and sum(max(0, n - p) for n in lengths) < rows_per_order * p:
        p = min(p - 1, int(p * 0.85))
    return max(p, 0)


# ----------------------------------------------------------------------------- gap system


def _solve_gap(
    y: np.ndarray,
    upos: np.ndarray,
    s0: int,
    s1: int,
    a: np.ndarray,
    lam: float,
    target: np.ndarray | None = None,
) -> np.ndarray:
    """Minimise the prediction error of every window touching ``[s0, s1)`` over ``y[upos]``.

    ``y`` holds the known samples (unknown ones are ignored); ``upos`` are the
    sorted unknown positions, all inside ``[s0, s1)``.  Windows reaching past
    either end of ``y`` are dropped.  ``lam`` is the diagonal load.  ``target``
    (rows ``s0 .. s1+p-1``) is the prediction error to aim for instead of zero.
    """
    p = a.shape[0] - 1
    n = y.shape[0]
    y0 = y.copy()
    y0[upos] = 0.0
    # rows n in [r0, r1) are the complete windows that touch the span
    r0, r1 = max(s0, p), min(s1 + p, n)
    width = s1 - s0
    e_full = np.zeros(width + p)  # rows s0 .. s1+p-1; missing rows stay zero
    if r1 > r0:
        e_full[r0 - s0 : r1 - s0] = signal.convolve(y0[r0 - p : r1], a, mode="valid")
        if target is not None:
            e_full[r0 - s0 : r1 - s0] -= target[r0 - s0 : r1 - s0]
    rhs = -signal.correlate(e_full, a, mode="valid")[upos - s0]

    b = signal.correlate(a, a, mode="full")[p:]  # b[d] = sum_k a[k] a[k+d]
    nu = upos.shape[0]
    w = int(min(p, nu - 1))  # in the unknowns' own indexing the band is never wider
    # upper banded storage: ab[w - d, j] = G[j - d, j]; away from the signal ends
    # G is Toeplitz, G[i, j] = b[|upos_i - upos_j|] (zero beyond lag p)
    if upos[-1] - upos[0] == nu - 1:
        # one contiguous block (the usual case): every band row is constant
        # (entries left of the band, ab[w - d, :d], are never read)
        ab = np.repeat(b[w::-1, None], nu, axis=1)
    else:
        ab = np.zeros((w + 1, nu))
        ab[w] = b[0]
        for d in range(1, w + 1):
            lag = upos[d:] - upos[:-d]
            ab[w - d, d:] = np.where(lag <= p, b[np.minimum(lag, p)], 0.0)
    ab[w] += lam
    # windows dropped because they would reach past the signal ends: remove
    # their (low-rank) contribution, formed densely only over the columns they touch
    missing = np.concatenate((np.arange(s0, r0), np.arange(max(r1, s0), s1 + p)))
    if not missing.size and upos[-1] - upos[0] == nu - 1:
        # one block with every window whole: G is exactly Toeplitz, and Levinson's O(nu^2)
        # is 3-7x faster than the banded Cholesky at the 250-1000 orders of 20-40 ms gaps
        column = np.zeros(nu)
        column[: w + 1] = ab[w::-1, -1]
        try:
            fill = linalg.solve_toeplitz(column, rhs, check_finite=False)
        except (linalg.LinAlgError, ValueError):
            fill = None
        if fill is not None and np.all(np.isfinite(fill)):
            return fill
    if missing.size:
        lag = missing[:, None] - upos[None, :]
        touched = np.flatnonzero(((lag >= 0) & (lag <= p)).any(axis=0))
        if touched.size:
            c0, c1 = int(touched[0]), int(touched[-1]) + 1
            lag = lag[:, c0:c1]
            edge = np.where((lag >= 0) & (lag <= p), a[np.clip(lag, 0, p)], 0.0)
            h = edge.T @ edge
            for d in range(min(w, c1 - c0 - 1) + 1):
                ab[w - d, c0 + d : c1] -= np.diagonal(h, d)
    # banded Cholesky: O(nu p^2), and faster than dense LAPACK even when p ~ nu
    return linalg.solveh_banded(ab, rhs, check_finite=False)


def _period(before: np.ndarray, lo: int, hi: int) -> tuple[int, float]:
    """Pitch period (samples, in ``[lo, hi]``) of the stretch ending at ``before[-1]``, and
    its normalised correlation; ``(0, 0.0)`` when the stretch is too short to tell."""
    n = before.shape[0]
    win = min(hi, n - hi)  # the last `win` samples against the same shifted back by each lag
    if win < lo:
        hi = (n - lo) if n - lo >= lo else 0
        win = n - hi
        if hi < lo:
            return 0, 0.0
    tail = before[n - win :]
    lags = np.arange(lo, hi + 1)
    # xc[k] = <tail, before[n-win-lag : n-lag]> for lag = hi - k
    xc = signal.correlate(before[n - win - hi : n - lo], tail, mode="valid")[::-1]
    energy = np.concatenate(([0.0], np.cumsum(before**2)))
    shifted = energy[n - lags] - energy[n - win - lags]
    nc = xc / np.sqrt(shifted * float(tail @ tail) + 1e-20)
    best = int(np.argmax(nc))
    lag, value = int(lags[best]), float(nc[best])
    # prefer a sub-multiple that correlates nearly as well (octave errors)
    for k in (4, 3, 2):
        sub = round(lag / k)
        if sub >= lo and nc[sub - lo] >= 0.85 * value:
            return sub, float(nc[sub - lo])
    return lag, value


def _known_runs(known: np.ndarray, start: int, end: int) -> tuple[int, int]:
    """Lengths of the runs of known samples that end at ``start`` and begin at ``end``."""
    unknown_before = np.flatnonzero(~known[:start])
    left = start - (int(unknown_before[-1]) + 1 if unknown_before.size else 0)
    after = known[end:]
    right = int(np.argmin(after)) if not after.all() else after.shape[0]
    return left, right


def periodicity(
    x: np.ndarray,
    known: np.ndarray,
    start: int,
    end: int,
    config: ARConfig | None = None,
    reach_ms: float = 40.0,
) -> float:
    """How periodic the context of the gap ``[start, end)`` of ``x`` is: the weaker side's
    normalised correlation at its pitch period (0..1; 0 with no usable context).

    Each side is the known run touching the gap, up to ``reach_ms``; ``known`` marks the
    samples that are not damaged (other gaps, clicks) and may be read. Sustained tones
    and voiced speech score near 1, noise and transients low: the repair policy keeps AR
    (with pitch excitation) for periodic gaps where it beats the model's spectral fill.
    """
    cfg = config or ARConfig()
    lo, hi = cfg.pitch_lags()
    reach = max(1, round(reach_ms * cfg.sample_rate / 1000.0))
    left, right = _known_runs(known, start, end)
    # each side ends at the gap (the stretch after it reversed), as _period reads it
    sides = (x[start - min(left, reach) : start], x[end : end + min(right, reach)][::-1])
    scores = []
    for raw in sides:
        side = np.nan_to_num(np.asarray(raw, dtype=np.float64), posinf=0.0, neginf=0.0)
        if side.shape[0] < 2 * lo or not np.any(side):
            return 0.0
        scores.append(max(0.0, _period(side, lo, min(hi, side.shape[0] // 2))[1]))
    return float(min(scores))


def _carried(res: np.ndarray, valid: np.ndarray, rows: np.ndarray, lag: int) -> np.ndarray:
    """``res`` at ``rows`` carried forward by ``lag``: the known value ``lag`` (or a multiple)
    back, zero where there is none. ``rows`` is increasing and contiguous."""
    out = np.zeros(rows.shape[0])
    first = int(rows[0])
    for i in range(0, rows.shape[0], lag):  # block by block: a block's source is known or done
        chunk = rows[i : i + lag]
        src = chunk - lag
        from_res = (src >= 0) & valid[np.maximum(src, 0)]
        inside = ~from_res & (src >= first)
        carried = np.where(inside, out[np.maximum(src - first, 0)], 0.0)
        out[i : i + chunk.shape[0]] = np.where(from_res, res[np.maximum(src, 0)], carried)
    return out


def _excitation_target(
    y: np.ndarray, kn: np.ndarray, s0: int, s1: int, a: np.ndarray, cfg: ARConfig
) -> np.ndarray:
    """The prediction error to aim for on rows ``s0 .. s1+p-1``: the context's own error
    carried across by its pitch period from each side, each side up to half way."""
    p = a.shape[0] - 1
    n = y.shape[0]
    lo, hi = cfg.pitch_lags()
    res = np.zeros(n)
    res[p:] = signal.convolve(y, a, mode="valid")
    bad = np.concatenate(([0], np.cumsum(~kn)))
    valid = np.zeros(n, dtype=bool)
    valid[p:] = bad[p + 1 :] - bad[: n - p] == 0  # the whole window [k-p, k] is known
    rows = np.arange(s0, min(s1 + p, n))

    def side_lag(stretch: np.ndarray) -> int:
        lag, corr = _period(stretch, lo, hi)
        if lag and corr >= cfg.voicing:
            return lag
        # no clear period: copy an error stretch from beyond the gap's reach
        return max(lo, min(s1 - s0 + p, stretch.shape[0] - p - 1))

    left_run, right_run = _known_runs(kn, s0, s1)
    lag_l = side_lag(y[s0 - left_run : s0])
    lag_r = side_lag(y[s1 : s1 + right_run][::-1])
    fwd = _carried(res, valid, rows, lag_l)
    # backward: the same on the time-reversed rows (a row's error lives at its last sample,
    # so reversed rows k map to n-1-k and stay whole windows of the forward model)
    rev_rows = (n - 1 - rows)[::-1]
    bwd = _carried(res[::-1], valid[::-1], rev_rows, lag_r)[::-1]
    # where each row sits between the known rows around it
    known_rows = np.flatnonzero(valid)
    if known_rows.size == 0:
        return np.zeros(s1 - s0 + p)
    before = np.searchsorted(known_rows, rows) - 1
    prev = np.where(before >= 0, known_rows[np.maximum(before, 0)], s0 - 1)
    after = np.minimum(before + 1, known_rows.shape[0] - 1)
    nxt = np.where(before + 1 < known_rows.shape[0], known_rows[after], rows[-1] + 1)
    t = (rows - prev) / np.maximum(nxt - prev, 1)
    # a hard switch half way: a fade would add two pulse trains whose phases need not
    # agree (a fade and pulse alignment at the edges both scored lower in PLCMOS)
    target = np.where(t < 0.5, fwd, bwd)
    out = np.zeros(s1 - s0 + p)
    out[: rows.shape[0]] = target
    return out


def _fit(segments: list[np.ndarray], p: int, cfg: ARConfig) -> tuple[np.ndarray, float]:
    if cfg.method == "burg":
        return _burg_ar(segments, p)
    return _covariance_ar(segments, p, cfg.ridge)


def _fill_cluster(
    x0: np.ndarray, known: np.ndarray, gaps: list[tuple[int, int]], cfg: ARConfig
) -> np.ndarray:
    """Fill the unknown samples of one cluster of gaps; returns ``x0[s0:s1]`` filled."""
    n = x0.shape[0]
    s0, s1 = gaps[0][0], gaps[-1][1]
    m = max(e - s for s, e in gaps)
    p_wanted = cfg.order_for(m)
    ctx = cfg.context_for(p_wanted)
    w0, w1 = max(0, s0 - ctx), min(n, s1 + ctx)
    y = x0[w0:w1].copy()
    kn = known[w0:w1].copy()
    out = x0[s0:s1].copy()
    unknown = ~known[s0:s1]
    upos = np.flatnonzero(unknown) + (s0 - w0)

    context = y[kn]
    scale = float(np.sqrt(np.mean(context**2))) if context.size else 0.0
    if not np.isfinite(scale) or scale == 0.0:
        out[unknown] = 0.0  # digital silence (or nothing) around: silence is the best guess
        return out
    y = y / scale
    r0, r1 = s0 - w0, s1 - w0  # the span in window coordinates
    # With fewer than p known samples before the span, the windows cut off at
    # the signal start would leave the first unknowns to a backward recursion
    # through 1/a[p], which explodes.  Solving the time-reversed problem turns
    # that into forward extrapolation with the reversed signal's own model.
    reverse = r0 < p_wanted and r0 < (w1 - s1)
    if reverse:
        y, kn = y[::-1].copy(), kn[::-1].copy()
        upos = (y.shape[0] - 1 - upos)[::-1].copy()
        r0, r1 = y.shape[0] - r1, y.shape[0] - r0
    target_for = None
    if cfg.pitch_excited(m):
        # a wider window: the pitch search and the error carried in reach further back
        reach = max(ctx, p_wanted + 2 * cfg.pitch_lags()[1], m + 2 * p_wanted + 1)
        b0, b1 = max(0, s0 - reach), min(n, s1 + reach)
        yb, knb = x0[b0:b1] / scale, known[b0:b1]
        q0, q1 = s0 - b0, s1 - b0
        if reverse:
            yb, knb = yb[::-1].copy(), knb[::-1].copy()
            q0, q1 = yb.shape[0] - q1, yb.shape[0] - q0
        yb = np.where(knb, yb, 0.0)

        def target_for(a: np.ndarray) -> np.ndarray:
            return _excitation_target(yb, knb, q0, q1, a, cfg)

    runs = _runs(kn)
    p = _feasible_order([b - a for a, b in runs], p_wanted, cfg.min_rows_per_order)
    if p < p_wanted:
        log.debug("AR order %d -> %d: short context around [%d, %d)", p_wanted, p, s0, s1)
    while p >= 2:
        try:
            fill = _estimate_and_solve(y, kn, runs, upos, r0, r1, p, cfg, target_for)
        except (linalg.LinAlgError, ValueError) as exc:
            log.debug("AR order %d failed at [%d, %d): %s", p, s0, s1, exc)
            fill = None
        if fill is not None and np.all(np.isfinite(fill)):
            out[unknown] = (fill[::-1] if reverse else fill) * scale
            return out
        p //= 2
    log.debug("AR fit impossible at [%d, %d); linear fallback", s0, s1)
    for s, e in gaps:
        out[s - s0 : e - s0] = linear_fill(np.where(known, x0, 0.0), s, e)
    return out


def _select_config(
    x0: np.ndarray, known: np.ndarray, gaps: list[tuple[int, int]], cfg: ARConfig
) -> tuple[ARConfig, np.ndarray | None]:
    """Pick the order cap that best fills known stretches shaped like the gap.

    The stretches of the gap's length just before and just after the cluster
    (a guard of half a gap away) are hidden in turn and filled with each
    candidate cap; the cap with the least squared error wins. Candidates that
    give the same order for this gap are not tried twice. Returns the chosen
    config and, when the search already filled the cluster with it, that fill.
    """
    m = max(e - s for s, e in gaps)
    candidates: dict[int, ARConfig] = {}
    for cap in sorted(cfg.order_caps):
        candidate = replace(cfg, max_order=cap, order_caps=(cap,))
        candidates.setdefault(candidate.order_for(m), candidate)
    if len(candidates) == 1:
        return next(iter(candidates.values())), None
    s0, s1, guard, n = gaps[0][0], gaps[-1][1], max(1, m // 2), x0.shape[0]
    probes = [(s0 - guard - m, s0 - guard), (s1 + guard, s1 + guard + m)]
    probes = [(a, b) for a, b in probes if a >= 0 and b <= n and known[a:b].all()]
    if not probes:
        return replace(cfg, order_caps=(cfg.max_order,)), None  # no clean probe: the default
    # Probe on a copy whose gap holds the default fill, so each probe sees whole
    # context on both sides (with the gap still open, the probe's context would be
    # cut short and the candidates' orders with it).
    default = cfg.order_for(m)
    patched = x0.copy()
    default_fill = _fill_cluster(x0, known, gaps, candidates.get(default, cfg))
    patched[s0:s1] = default_fill
    closed = known.copy()
    closed[s0:s1] = True
    errors = dict.fromkeys(candidates, 0.0)
    energy = sum(float(np.sum(x0[a:b] ** 2)) for a, b in probes)
    for a, b in probes:
        hidden = closed.copy()
        hidden[a:b] = False
        for order, candidate in candidates.items():
            fill = _fill_cluster(patched, hidden, [(a, b)], candidate)
            errors[order] += float(np.sum((fill - x0[a:b]) ** 2))
    best = min(errors, key=errors.__getitem__)
    # Switch away from the default cap only when it is clearly better.
    uninformative = errors[best] > 0.5 * energy  # no candidate filled the probes well
    if default in errors and (
        uninformative or errors[default] <= 1.1 * errors[best] + 1e-4 * energy
    ):
        best = default
    log.debug("AR order for [%d, %d): %d (errors %s)", s0, s1, best, errors)
    # the default's fill of the cluster is already made: the usual choice costs no refill
    return candidates[best], (default_fill if best == default else None)


def _estimate_and_solve(
    y: np.ndarray,
    kn: np.ndarray,
    runs: list[tuple[int, int]],
    upos: np.ndarray,
    s0: int,
    s1: int,
    p: int,
    cfg: ARConfig,
    target_for: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Fit the model on the known runs of ``y``, solve the gap system, iterate if asked."""
    segments = [y[a:b] for a, b in runs if b - a > p]
    a, power = _fit(segments, p, cfg)
    target = target_for(a) if target_for is not None else None
    fill = _solve_gap(y, upos, s0, s1, a, cfg.gap_ridge * power, target)
    if cfg.iterations:
        # the filled cluster joins its context into one continuous segment
        joined = kn.copy()
        joined[upos] = True
        joined_runs = [(a0, b0) for a0, b0 in _runs(joined) if b0 - a0 > p]
        for _ in range(cfg.iterations):
            yf = y.copy()
            yf[upos] = fill
            a, power = _fit([yf[a0:b0] for a0, b0 in joined_runs], p, cfg)
            target = target_for(a) if target_for is not None else None
            fill = _solve_gap(y, upos, s0, s1, a, cfg.gap_ridge * power, target)
    return fill


# ----------------------------------------------------------------------------- public API


def _prepare(x: np.ndarray) -> np.ndarray:
    x = np.array(x, dtype=np.float64, copy=True)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D signal, got shape {x.shape}")
    return x


def interpolate(x: np.ndarray, start: int, end: int, config: ARConfig | None = None) -> np.ndarray:
    """Fill the gap ``[start, end)`` of the 1-D signal ``x`` by LSAR interpolation.

    Values inside the gap are ignored (they may be zeros, garbage or NaN); only
    ``x`` outside the gap is used as context.  Returns the ``(end - start,)``
    filled samples as float64, always finite.
    """
    return fill_gaps(x, [(start, end)], config)[start:end]


def _clusters(gaps: list[tuple[int, int]], cfg: ARConfig) -> list[list[tuple[int, int]]]:
    """Group gaps whose separation is shorter than the context either would use."""
    clusters: list[list[tuple[int, int]]] = []
    for s, e in gaps:
        if clusters:
            cur = clusters[-1]
            longest = max(max(b - a for a, b in cur), e - s)
            if s - cur[-1][1] < cfg.context_for(cfg.order_for(longest)):
                cur.append((s, e))
                continue
        clusters.append([(s, e)])
    return clusters


def _merged_gaps(gaps: Sequence[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    """Sorted gaps with overlapping or touching ones merged; raises on gaps outside ``n``."""
    merged: list[tuple[int, int]] = []
    for s, e in sorted((int(s), int(e)) for s, e in gaps):
        if not 0 <= s < e <= n:
            raise ValueError(f"gap [{s}, {e}) outside signal of length {n}")
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def _zero_unknown(x: np.ndarray, unknown: Sequence[tuple[int, int]]) -> np.ndarray:
    """Zero every unknown stretch and non-finite context sample of ``x`` in place; the
    known mask."""
    known = np.ones(x.shape[0], dtype=bool)
    for s, e in unknown:
        known[s:e] = False
    bad = ~np.isfinite(x) & known
    if bad.any():
        log.warning("%d non-finite context samples treated as zeros", int(bad.sum()))
    x[~known | bad] = 0.0
    return known


def _cluster_config(
    x0: np.ndarray,
    known: np.ndarray,
    cluster: list[tuple[int, int]],
    cfg: ARConfig,
    no_search: Sequence[tuple[int, int]],
) -> tuple[ARConfig, np.ndarray | None]:
    """The settings one cluster is solved with, and its fill when choosing them made it."""
    if all(any(a <= s and e <= b for a, b in no_search) for s, e in cluster):
        # blend edges: plain excitation too (the MAE hybrid scored 0.2-0.3 dB LSD
        # worse at 20-40 ms with pitch-excited edges, results.md session 25)
        return replace(cfg, order_caps=(cfg.max_order,), excitation="none"), None
    if cfg.pitch_order_cap is not None and cfg.pitch_excited(max(e - s for s, e in cluster)):
        cap = max(cfg.pitch_order_cap, cfg.min_order)
        return replace(cfg, max_order=cap, order_caps=(cap,)), None
    return _select_config(x0, known, cluster, cfg)


def choose_configs(
    x: np.ndarray,
    gaps: Sequence[tuple[int, int]],
    config: ARConfig | None = None,
    no_search: Sequence[tuple[int, int]] = (),
    map_fn: Callable = map,
) -> list[ARConfig]:
    """The settings (order cap, excitation) :func:`fill_gaps` would solve each cluster of
    ``gaps`` with, chosen on ``x``. Channels that share their gaps are filled with the
    choice made once on their mix (``fill_gaps(..., configs=)``): half the order search's
    cost in stereo, and the mix's probes are less noisy (session 26, results.md).
    ``map_fn`` (e.g. a thread pool's ``map``) runs the clusters' searches."""
    cfg = config or ARConfig()
    x0 = _prepare(x)
    merged = _merged_gaps(gaps, x0.shape[0])
    known = _zero_unknown(x0, merged)
    clusters = _clusters(merged, cfg)
    return [c for c, _ in map_fn(lambda c: _cluster_config(x0, known, c, cfg, no_search), clusters)]


def fill_gaps(
    x: np.ndarray,
    gaps: Sequence[tuple[int, int]],
    config: ARConfig | None = None,
    progress: CountFn | None = None,
    no_search: Sequence[tuple[int, int]] = (),
    configs: Sequence[ARConfig] | None = None,
    holes: Sequence[tuple[int, int]] = (),
) -> np.ndarray:
    """Return a float64 copy of the 1-D ``x`` with every gap ``[start, end)`` filled.

    Overlapping or touching gaps are merged.  Gaps closer together than their
    context length are solved jointly, as one system with several unknown
    blocks and one AR model fitted on the known samples around and between
    them.  Every AR fit uses only samples outside *all* gaps, so one gap's fill
    is never computed from another gap's damaged samples.

    ``progress(done, total)`` is called after each cluster; it may raise to stop
    the work (that is how a cancelled job stops between gaps).

    Clusters made only of gaps inside ``no_search`` spans skip the order search
    (``order_caps``) and the pitch excitation and use ``max_order``: the search costs
    about five fills, and a caller that keeps only the first and last few ms of the fill
    (a blend into a model's estimate) gains little from either. ``configs`` (from
    :func:`choose_configs` on the same gaps) gives each cluster's settings instead.
    ``holes`` are unknown too (never context) but are left for another call to fill, with
    other settings: a second call with the roles swapped fills them from the same context.
    """
    cfg = config or ARConfig()
    x0 = _prepare(x)
    merged = _merged_gaps(gaps, x0.shape[0])
    out = x0.copy()  # samples outside the gaps are returned untouched, even non-finite ones
    fill = np.zeros(x0.shape[0], dtype=bool)
    for s, e in merged:
        fill[s:e] = True
    known = _zero_unknown(x0, [*merged, *_merged_gaps(holes, x0.shape[0])])
    clusters = _clusters(merged, cfg)
    if configs is not None and len(configs) != len(clusters):
        raise ValueError(f"{len(configs)} configs for {len(clusters)} clusters of gaps")
    for done, cluster in enumerate(clusters, start=1):
        s0, s1 = cluster[0][0], cluster[-1][1]
        if configs is not None:
            chosen, span = configs[done - 1], None
        else:
            chosen, span = _cluster_config(x0, known, cluster, cfg, no_search)
        if span is None:
            span = _fill_cluster(x0, known, cluster, chosen)
        gap = fill[s0:s1]  # a hole inside the cluster is solved with it but not written
        out[s0:s1][gap] = span[gap]
        if progress is not None:
            progress(done, len(clusters))
    return out


def _raised_cosine(fade: int) -> np.ndarray:
    """Equal-gain ramp from 0 to 1 over ``fade`` samples (never exactly 0 or 1)."""
    return 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)


def crossfade_edges(
    original: np.ndarray, filled: np.ndarray, start: int, end: int, fade: int
) -> np.ndarray:
    """Write an AR repair of ``[start, end)`` into a copy of ``original`` with soft edges.

    ``filled`` is the AR interpolation of the *widened* gap
    ``[start - fade, end + fade)``: either that ``(end - start + 2 fade,)``
    stretch itself (or the same clipped to the signal) or a full-length array
    holding it at those positions (e.g.
    ``fill_gaps(original, [(start - fade, end + fade)])``).  Solving the
    widened gap once is the clean choice: the margins get the model's estimate
    without conditioning on samples that may belong to the damage (a span
    boundary a few samples off), and core and margins come from one
    consistent solution, so there is no seam at ``start`` or ``end``.

    Inside ``[start, end)`` the result is the fill; over ``[start - fade, start)``
    it moves from ``original`` to the fill with a raised-cosine (equal-gain)
    ramp, and back over ``[end, end + fade)``.  The widened stretch is clipped
    to the signal.  Only ``[start - fade, end + fade)`` differs from
    ``original``; everything else is bit-identical, and the dtype is kept.
    """
    original = np.asarray(original)
    filled = np.asarray(filled)
    n = original.shape[0]
    if original.ndim != 1 or filled.ndim != 1:
        raise ValueError("crossfade_edges works on 1-D signals")
    if fade < 0 or not 0 <= start < end <= n:
        raise ValueError(f"bad span [{start}, {end}) with fade {fade} for length {n}")
    lo, hi = max(0, start - fade), min(n, end + fade)
    if filled.shape[0] == n:
        est = filled[lo:hi].astype(np.float64)
    elif filled.shape[0] == end - start + 2 * fade:
        est = filled[lo - (start - fade) : filled.shape[0] - (end + fade - hi)].astype(np.float64)
    elif filled.shape[0] == hi - lo:  # the widened fill already clipped to the signal
        est = filled.astype(np.float64)
    else:
        raise ValueError(
            f"filled has length {filled.shape[0]}; expected the widened fill "
            f"({end - start + 2 * fade}, or {hi - lo} clipped) or the full signal ({n})"
        )
    out = original.copy()
    mix = original[lo:hi].astype(np.float64)
    gain = np.ones(hi - lo)  # weight of the AR estimate
    ramp = _raised_cosine(fade)
    gain[: start - lo] = ramp[fade - (start - lo) :]
    gain[end - lo :] = ramp[::-1][: hi - end]
    mix = (1.0 - gain) * mix + gain * est
    out[lo:hi] = mix.astype(original.dtype, copy=False)
    return out


def repair_span(
    x: np.ndarray, start: int, end: int, fade: int = 0, config: ARConfig | None = None
) -> np.ndarray:
    """Convenience: interpolate ``[start - fade, end + fade)`` and cross-fade its edges.

    Returns a full-length copy of ``x`` in which only ``[start - fade, end + fade)``
    (clipped to the signal) differs.
    """
    x = np.asarray(x)
    lo, hi = max(0, start - fade), min(x.shape[0], end + fade)
    widened = fill_gaps(x, [(lo, hi)], config)
    return crossfade_edges(x, widened, start, end, fade)
