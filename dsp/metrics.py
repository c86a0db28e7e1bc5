"""Repair metrics used by the tests and the benchmarks.

All functions accept 1-D signals or ``(channels, frames)`` arrays (time on the
last axis) and return plain Python floats.  Energy ratios are pooled over
channels (sum of energies, not mean of per-channel dB), so a silent channel
cannot dominate the score.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["gap_snr_db", "log_spectral_distance", "sdr_db"]

LSD_FRAME_S = 0.025  # 25 ms Hann frames (1200 samples at 48 kHz)
LSD_FLOOR_DB = -80.0  # power floor relative to the reference's loudest bin in the region


def rms_dbfs(x: np.ndarray) -> float:
    """RMS level in dBFS; digital silence is -240 (finite, so it fits in JSON)."""
    return 20.0 * math.log10(max(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))), 1e-12))


def _pair(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    if ref.shape != est.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs estimate {est.shape}")
    if ref.ndim not in (1, 2):
        raise ValueError(f"expected 1-D or (channels, frames), got shape {ref.shape}")
    return ref, est


def _ratio_db(signal_energy: float, error_energy: float) -> float:
    # exact reconstruction is +inf even for a silent reference; a silent
    # reference with any error is -inf
    if error_energy == 0.0:
        return math.inf
    if signal_energy == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_energy / error_energy)


def gap_snr_db(reference: np.ndarray, estimate: np.ndarray, start: int, end: int) -> float:
    """``10 log10(sum ref^2 / sum (ref - est)^2)`` over samples ``[start, end)``.

    Works on 1-D signals or ``(C, N)`` arrays (energies summed over channels).
    Identical signals give ``+inf``; an all-zero estimate gives 0 dB.
    """
    ref, est = _pair(reference, estimate)
    if not 0 <= start < end <= ref.shape[-1]:
        raise ValueError(f"span [{start}, {end}) outside signal of length {ref.shape[-1]}")
    r = ref[..., start:end]
    d = r - est[..., start:end]
    return _ratio_db(float(np.sum(r * r)), float(np.sum(d * d)))


def sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Signal-to-distortion ratio over the whole signal, ``10 log10(|ref|^2 / |ref - est|^2)``.

    This is the plain (not scale-invariant, no BSS-eval projection) SDR: a gain
    error counts as distortion, which is what a sample-accurate repair should be
    judged on.
    """
    ref, est = _pair(reference, estimate)
    d = ref - est
    return _ratio_db(float(np.sum(ref * ref)), float(np.sum(d * d)))


def log_spectral_distance(
    reference: np.ndarray,
    estimate: np.ndarray,
    sample_rate: int,
    start: int | None = None,
    end: int | None = None,
) -> float:
    """Log-spectral distance in dB, averaged over the STFT frames that overlap ``[start, end)``.

    Definition:

    * frames: Hann window of ``L = 4 * round(0.025 * sample_rate / 4)`` samples
      (25 ms, 1200 at 48 kHz), hop ``L / 4`` (75 % overlap),
      ``scipy.signal.stft`` without boundary padding, applied to both signals
      over ``[start - L, end + L)`` clipped to the signal (the whole signal when
      ``start``/``end`` are None), so every frame that touches the span is
      complete where the signal allows; ``L`` shrinks to the region if the
      region is shorter;
    * powers ``P = |X|^2`` floored at ``eps = 10^(LSD_FLOOR_DB / 10) * max P_ref``
      (the maximum over all bins of the selected frames of the reference and
      channels; 1e-30 absolute minimum), so the score does not depend on the
      signal's level and an all-zero estimate gives a large, finite distance;
    * per frame ``t``: ``LSD_t = sqrt(mean_f (10 log10 P_ref - 10 log10 P_est)^2)``
      over all one-sided frequency bins;
    * result: mean of ``LSD_t`` over the frames whose samples overlap
      ``[start, end)`` (and over channels for ``(C, N)`` input).

    Identical signals give 0.
    """
    ref, est = _pair(reference, estimate)
    n = ref.shape[-1]
    start = 0 if start is None else int(start)
    end = n if end is None else int(end)
    if not 0 <= start < end <= n:
        raise ValueError(f"span [{start}, {end}) outside signal of length {n}")
    frame = max(4, 4 * round(LSD_FRAME_S * sample_rate / 4))
    lo, hi = max(0, start - frame), min(n, end + frame)
    frame = min(frame, hi - lo)
    hop = max(1, frame // 4)
    kwargs = {
        "window": "hann",
        "nperseg": frame,
        "noverlap": frame - hop,
        "boundary": None,
        "padded": False,
    }
    ref2 = np.atleast_2d(ref)[:, lo:hi]
    est2 = np.atleast_2d(est)[:, lo:hi]
    # Imported here: scipy.signal takes ~1 s to import, and rms_dbfs (the embedder's window
    # levels) is on the path of every cached re-tag, which needs no STFT.
    from scipy import signal

    _, _, z_ref = signal.stft(ref2, fs=sample_rate, **kwargs)
    _, _, z_est = signal.stft(est2, fs=sample_rate, **kwargs)
    # frame t covers [lo + t hop, lo + t hop + frame)
    first = lo + hop * np.arange(z_ref.shape[-1])
    overlap = (first < end) & (first + frame > start)
    p_ref = np.abs(z_ref[..., overlap]) ** 2
    p_est = np.abs(z_est[..., overlap]) ** 2
    eps = max(float(p_ref.max(initial=0.0)) * 10.0 ** (LSD_FLOOR_DB / 10.0), 1e-30)
    diff = 10.0 * np.log10(np.maximum(p_ref, eps)) - 10.0 * np.log10(np.maximum(p_est, eps))
    per_frame = np.sqrt(np.mean(diff**2, axis=-2))  # (channels, frames)
    return float(np.mean(per_frame))
