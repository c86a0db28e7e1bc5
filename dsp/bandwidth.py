"""Bandwidth extension: find where band-limited material stops, and continue it above.

Detection: the region's long-term spectrum (~10 Hz bins) in dB. The cutoff is the
frequency with the largest level step between the band just below it
(-1.5 .. -0.2 kHz) and the band just above (+0.2 .. +2 kHz); it counts when that
step is at least ``min_drop_db`` *and* nothing above comes back within half of it
(an 8 kHz telephone/16 kHz-resampled take, a 16 kHz MP3 cut). The band then ends
(and the extension starts) where the level first falls 6 dB below the passband's
trend on the way up to that edge. A natural roll-off is far less steep than a
codec's or a resampler's lowpass, so full-band audio is left alone.

Extension (spectral band replication, the method of HE-AAC's SBR): in every STFT
frame the band ``[fc - W, fc)`` is copied upwards, again and again, to fill
``[fc, max_freq)``. ``W`` is a multiple of the frame/hop ratio, so each copy is a
frequency shift whose phase advances consistently from frame to frame (no
frame-rate modulation). Each copied bin is whitened by the smoothed source
spectrum and coloured with that frame's spectral envelope continued past the
cutoff: a straight line in dB over log-frequency fitted to the octave below the
cutoff (slope clamped to ``[-30, -3]`` dB/octave unless ``slope_db`` is given), plus
``gain_db``. So the new band follows the material's own fine structure in time
(onsets, voicing) and its own tilt. The result is high-passed at the cutoff
(zero-phase Butterworth) and *added* to the source: below the cutoff the region is
the source plus only that filter's leakage.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from scipy import ndimage, signal

from maedaw.core.util import ProgressFn

from .audio_io import AudioInfo
from .dehum import long_term_spectrum
from .denoise import OVERLAP, frame_size, istft, stft
from .ops import Op, Option, OptionError, RegionPlan

log = logging.getLogger(__name__)

ANALYSIS_HZ = 10.0  # long-term spectrum resolution for the cutoff search
SMOOTH_HZ = 200.0  # the long-term spectrum is smoothed over this before the search
BELOW_HZ = (1500.0, 200.0)  # reference band below a candidate cutoff (offsets)
ABOVE_HZ = (200.0, 2000.0)  # band above it
SLOPE_LIMITS = (-30.0, -3.0)  # dB per octave
ENVELOPE_BINS = 9  # smoothing of the per-frame source spectrum (whitening)


def find_cutoff(freqs: np.ndarray, power: np.ndarray, min_drop_db: float) -> dict:
    """The band limit of a long-term spectrum, or ``{"band_limited": False}``."""
    bin_hz = float(freqs[1] - freqs[0])
    level = 10.0 * np.log10(power + 1e-30)
    level = ndimage.uniform_filter1d(level, max(1, round(SMOOTH_HZ / bin_hz)), mode="nearest")
    nyquist = float(freqs[-1])
    prefix = np.concatenate([[0.0], np.cumsum(level)])

    def mean(lo_hz: np.ndarray, hi_hz: np.ndarray) -> np.ndarray:
        lo = np.clip(np.round(lo_hz / bin_hz).astype(int), 0, level.size - 1)
        hi = np.clip(np.round(hi_hz / bin_hz).astype(int), 1, level.size)
        hi = np.maximum(hi, lo + 1)
        return (prefix[hi] - prefix[lo]) / (hi - lo)

    candidates = freqs[(freqs >= 2000.0) & (freqs <= 0.97 * nyquist)]
    if candidates.size == 0:
        return {"band_limited": False, "why": "the rate is too low to judge a cutoff"}
    below = mean(candidates - BELOW_HZ[0], candidates - BELOW_HZ[1])
    above = mean(candidates + ABOVE_HZ[0], np.minimum(candidates + ABOVE_HZ[1], nyquist))
    drop = below - above
    best = int(np.argmax(drop))
    edge, step = float(candidates[best]), float(drop[best])
    # the highest level anywhere above the edge: does any content come back?
    top = float(level[round((edge + ABOVE_HZ[0]) / bin_hz) :].max(initial=-300.0))
    info = {"edge_hz": round(edge, 1), "step_db": round(step, 1)}
    if step < min_drop_db:
        return {"band_limited": False, "why": f"no edge steeper than {min_drop_db} dB", **info}
    if top > below[best] - step / 2:
        return {"band_limited": False, "why": "content returns above the edge", **info}
    # The edge is where the level has finished falling; the band ends where it starts
    # to fall: the highest frequency still within 6 dB of the passband's trend (a line
    # in dB over log-frequency fitted to the octave below the edge's transition).
    lo_k = max(1, round(edge / 2 / bin_hz))
    hi_k = max(lo_k + 2, round((edge - BELOW_HZ[0]) / bin_hz))
    octaves = np.log2(freqs[lo_k:hi_k])
    slope, offset = np.polyfit(octaves, level[lo_k:hi_k], 1)
    k = round(edge / bin_hz)
    while k > lo_k and level[k] < slope * np.log2(freqs[k]) + offset - 6.0:
        k -= 1
    cutoff = float(freqs[k])
    return {"band_limited": True, "cutoff_hz": round(cutoff, 1), **info}


def _envelope_line(
    level_db: np.ndarray, freqs: np.ndarray, lo: int, hi: int, slope: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the fitted level (dB) at log2 f = 0 offset and slope over bins [lo, hi).

    ``level_db`` is (bins, frames). Returns (level at the cutoff, slope per octave),
    each (frames,), where the cutoff is ``freqs[hi]``.
    """
    octaves = np.log2(freqs[lo:hi] / freqs[hi])  # <= 0
    y = level_db[lo:hi]
    if slope is None:
        x = octaves - octaves.mean()
        fitted = (x[:, None] * (y - y.mean(axis=0))).sum(axis=0) / (x @ x)
        slopes = np.clip(fitted, *SLOPE_LIMITS)
    else:
        slopes = np.full(y.shape[1], slope)
    # the level at the cutoff: the band mean carried along the (clamped) slope
    at_cutoff = y.mean(axis=0) - slopes * octaves.mean()
    return at_cutoff, slopes


def replicate(
    z: np.ndarray,
    freqs: np.ndarray,
    k_cut: int,
    k_max: int,
    slope: float | None,
    gain_db: float,
) -> np.ndarray:
    """The new band ``[k_cut, k_max)`` of STFT ``z`` (channels, bins, frames), zeros elsewhere."""
    width = max(OVERLAP, (k_cut // 2) // OVERLAP * OVERLAP)  # phase-consistent shifts
    power = (np.abs(z) ** 2).sum(axis=0)  # channels share one envelope
    smooth = ndimage.uniform_filter1d(power, ENVELOPE_BINS, axis=0, mode="nearest")
    smooth = np.maximum(smooth, 0.0)  # running sums can leave -1e-20
    level_db = 10.0 * np.log10(smooth + 1e-30)
    lo = max(1, k_cut - width)
    at_cutoff, slopes = _envelope_line(level_db, freqs, lo, k_cut, slope)
    targets = np.arange(k_cut, k_max)
    sources = k_cut - width + (targets - k_cut) % width
    octaves = np.log2(freqs[targets] / freqs[k_cut])
    target_db = at_cutoff[None, :] + slopes[None, :] * octaves[:, None] + gain_db
    gain = np.sqrt(10.0 ** (target_db / 10.0) / (smooth[sources] + 1e-30))
    # silent frames stay silent: never lift a bin above what the target level allows
    out = np.zeros_like(z)
    out[:, targets] = z[:, sources] * gain[None]
    return out


def bandwidth_analysis(
    source: Path, info: AudioInfo, start: int, end: int, options: dict, progress: ProgressFn
) -> RegionPlan:
    rate = info.sample_rate
    nyquist = rate / 2.0
    nperseg = frame_size(rate)
    found: dict
    if options["cutoff"] is None:
        if end - start < 4 * nperseg:
            raise OptionError(
                f"the region is too short ({(end - start) / rate:.3f} s) to find its cutoff; "
                "give it (cutoff=HZ)"
            )
        analysis = 2 ** round(math.log2(rate / ANALYSIS_HZ))
        freqs, power = long_term_spectrum(
            source, info, start, end, progress, nperseg=min(analysis, nperseg * 4)
        )
        found = find_cutoff(freqs, power, options["min_drop_db"])
    else:
        if not 500.0 <= options["cutoff"] < 0.95 * nyquist:
            raise OptionError(
                f"option cutoff: {options['cutoff']} Hz is outside 500 Hz .. 95% of Nyquist "
                f"({0.95 * nyquist:.0f} Hz)"
            )
        found = {"band_limited": True, "cutoff_hz": options["cutoff"]}
    top = min(options["max_freq"] or nyquist, nyquist)
    found["max_freq_hz"] = top
    if not found["band_limited"]:
        return RegionPlan(found, None, reason=f"not band-limited: {found['why']}")
    cutoff = found["cutoff_hz"]
    if top <= cutoff * 1.02:
        return RegionPlan(found, None, reason=f"the cutoff {cutoff:g} Hz is already at the top")
    bins = np.fft.rfftfreq(nperseg, 1.0 / rate)
    k_cut = int(np.searchsorted(bins, cutoff))
    k_max = int(np.searchsorted(bins, top, side="right"))
    highpass = signal.butter(8, cutoff, "highpass", fs=rate, output="sos")
    slope, gain_db = options["slope_db"], options["gain_db"]

    def process(block: np.ndarray) -> np.ndarray:
        new = istft(
            replicate(stft(block, nperseg), bins, k_cut, k_max, slope, gain_db),
            nperseg,
            block.shape[1],
        )
        return block + signal.sosfiltfilt(highpass, new, axis=-1)

    hop = nperseg // OVERLAP
    reason = f"band-limited at {cutoff:g} Hz: extended to {top:g} Hz by band replication"
    log.info("bandwidth: %s", reason)
    return RegionPlan(found, process, context=4 * nperseg, align=hop, reason=reason)


OP = Op(
    name="bandwidth",
    summary="find the cutoff of band-limited audio and extend it above by band replication",
    options={
        "cutoff": Option(float, None, "band limit in Hz (auto: detect)", low=1.0, auto=True),
        "max_freq": Option(
            float, None, "extend up to this frequency (auto: Nyquist)", low=1.0, auto=True
        ),
        "slope_db": Option(
            float,
            None,
            "envelope slope above the cutoff, dB/octave (auto: fitted per frame)",
            low=-60.0,
            high=0.0,
            auto=True,
        ),
        "gain_db": Option(
            float, 0.0, "level of the new band against the continued envelope", low=-40.0, high=12.0
        ),
        "min_drop_db": Option(
            float, 25.0, "least level step that counts as a cutoff", low=6.0, high=120.0
        ),
    },
    region_analysis=bandwidth_analysis,
)
