"""Sample-rate conversion with soxr (the model runs at 16 kHz; sources run at anything)."""

from __future__ import annotations

import numpy as np
import soxr


def resample(x: np.ndarray, from_rate: int, to_rate: int, quality: str = "HQ") -> np.ndarray:
    """Resample ``(channels, frames)`` or 1-D ``x`` from ``from_rate`` to ``to_rate``.

    soxr's HQ preset is a linear-phase filter with no audible passband ripple;
    output length is ``round(frames * to_rate / from_rate)`` and the signal is
    aligned with the input (soxr compensates its own delay).
    """
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if from_rate == to_rate:
        return np.array(x, copy=True)
    dtype = np.float32 if x.dtype == np.float32 else np.float64
    if x.ndim == 1:
        return soxr.resample(x.astype(dtype), from_rate, to_rate, quality=quality)
    # soxr wants frames first; keep channels first for everyone else.
    out = soxr.resample(np.ascontiguousarray(x.T, dtype=dtype), from_rate, to_rate, quality)
    return np.ascontiguousarray(out.T)
