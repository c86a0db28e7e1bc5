"""Denoise: stationary noise reduction by a smoothed Wiener gain on the STFT.

Noise profile: per frequency bin, a low percentile (``percentile``) of its power
over the region, corrected by the same percentile of pure noise's distribution
(minimum-statistics style; digital silence skipped), found in one streaming pass
with per-bin level histograms, then its low running percentile across frequency
(noise is smooth across frequency, held notes are peaks); or, with
``noise_start``/``noise_end``, of every frame of a stretch the user marked as noise
only (anywhere in the source).

Gain per time-frequency bin: the maximum-likelihood a-priori SNR
``xi = max(P_s / (strength * N) - 1, 0)`` from the power ``P_s`` smoothed over
+-2 frames and +-1 bin, the Wiener gain ``xi / (1 + xi)``, floored at
``-reduction_db`` and smoothed once more over 3 x 3 bins. Smoothing before the gain
(rather than gating raw bins) and the floor are what keep isolated noise peaks from
turning into "musical noise": a lone bin never gets a gain of its own. All channels
get one gain, from their summed power, so the stereo image does not move.

Every sample of the region changes (the report says so). Frames sit on a grid of
absolute frame positions and the gain looks a fixed number of frames around each
one, so blocks processed with context join exactly.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from scipy import ndimage, signal, stats

from maedaw.core.util import ProgressFn

from .audio_io import AudioInfo, check_region, iter_blocks, probe, to_frames
from .ops import Op, Option, OptionError, RegionPlan

log = logging.getLogger(__name__)

FRAME_S = 0.032  # STFT frame: 2048 at 48 kHz (power of two nearest this)
OVERLAP = 4  # hop = frame / 4
SMOOTH_FRAMES, SMOOTH_BINS = 5, 3  # power smoothing before the gain (odd sizes)
FLOOR_SPAN_HZ, FLOOR_PERCENTILE = 400.0, 20  # noise floor: low percentile across frequency
HIST_LEVELS = np.arange(-200.0, 40.0, 0.25)  # dB levels of the per-bin histograms


def frame_size(rate: int) -> int:
    return 2 ** round(math.log2(FRAME_S * rate))


def stft(x: np.ndarray, nperseg: int) -> np.ndarray:
    """STFT of ``(channels, n)``: ``(channels, bins, frames)``, frames centred on multiples
    of the hop counted from ``x[0]`` (zero-padded at both ends)."""
    _, _, z = signal.stft(
        x,
        window="hann",
        nperseg=nperseg,
        noverlap=nperseg - nperseg // OVERLAP,
        boundary="zeros",
        padded=True,
        axis=-1,
    )
    return z


def istft(z: np.ndarray, nperseg: int, length: int) -> np.ndarray:
    _, x = signal.istft(
        z,
        window="hann",
        nperseg=nperseg,
        noverlap=nperseg - nperseg // OVERLAP,
        boundary=True,
        time_axis=-1,
        freq_axis=-2,
    )
    return x[..., :length]


def _frame_powers(block: np.ndarray, nperseg: int) -> np.ndarray:
    """Power spectra (frames, bins), channels summed, of the frames wholly inside ``block``."""
    _, _, z = signal.stft(
        block,
        window="hann",
        nperseg=nperseg,
        noverlap=nperseg - nperseg // OVERLAP,
        boundary=None,
        padded=False,
        axis=-1,
    )
    return (np.abs(z) ** 2).sum(axis=0).T


def noise_profile(
    source: Path,
    info: AudioInfo,
    start: int,
    end: int,
    percentile: float | None,
    nperseg: int,
    progress: ProgressFn,
) -> tuple[np.ndarray, int]:
    """Noise power per bin of ``[start, end)``: (profile, frames used).

    ``percentile`` None: the mean over every frame (a noise-only stretch). Otherwise
    each bin's ``percentile``-th percentile over time, divided by that percentile of
    the noise power's own distribution (so a noise-only signal gives its mean): a bin
    is quiet between the notes and words that cross it, even in music without
    pauses. Percentiles come from per-bin histograms of the level (0.25 dB steps),
    so memory stays bounded for any region length. Digital-silence frames are skipped.
    """
    bins = nperseg // 2 + 1
    total = np.zeros(bins)
    counts = np.zeros((bins, HIST_LEVELS.size + 1), dtype=np.int64)
    used = 0
    hop = nperseg // OVERLAP
    block = max(nperseg, (1 << 18) // hop * hop)
    rows = np.arange(bins)[:, None]
    for position, data in iter_blocks(source, start, end, block):
        if data.shape[1] < nperseg:
            continue
        powers = _frame_powers(data, nperseg)
        powers = powers[powers.sum(axis=1) > 1e-20]  # digital silence says nothing
        used += powers.shape[0]
        if percentile is None:
            total += powers.sum(axis=0)
        else:
            levels = np.searchsorted(HIST_LEVELS, 10.0 * np.log10(powers.T + 1e-30))
            np.add.at(counts, (np.broadcast_to(rows, levels.shape), levels), 1)
        progress((position + data.shape[1] - start) / (end - start), "measuring noise")
    if used == 0:
        return total, 0
    if percentile is None:
        return total / used, used
    cumulative = np.cumsum(counts, axis=1)
    index = np.argmax(cumulative >= percentile * used, axis=1)
    level = HIST_LEVELS[np.clip(index, 0, HIST_LEVELS.size - 1)]
    # the channels' summed noise power is Gamma(channels)-distributed (chi-square, 2 dof each)
    channels = info.num_channels
    quantile = stats.gamma.ppf(percentile, channels) / channels
    level = level - 10.0 * np.log10(quantile)
    # Steady tones (held notes, drones) are as stationary as noise; but noise is
    # smooth across frequency and tones are peaks. A low running percentile across
    # frequency keeps the smooth floor and drops the peaks.
    bin_hz = info.sample_rate / nperseg
    width = max(3, round(FLOOR_SPAN_HZ / bin_hz) | 1)
    floor = ndimage.percentile_filter(level, FLOOR_PERCENTILE, size=width, mode="nearest")
    floor = ndimage.uniform_filter1d(floor, width, mode="nearest")
    return 10.0 ** (np.minimum(level, floor) / 10.0), used


def wiener_gain(power: np.ndarray, noise: np.ndarray, strength: float, floor: float) -> np.ndarray:
    """Smoothed Wiener gain for ``power`` (bins, frames) against ``noise`` (bins,)."""
    smoothed = ndimage.uniform_filter(power, size=(SMOOTH_BINS, SMOOTH_FRAMES), mode="nearest")
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = np.maximum(smoothed / (strength * noise[:, None]) - 1.0, 0.0)
    xi = np.nan_to_num(xi, nan=0.0, posinf=1e12)
    gain = np.maximum(xi / (1.0 + xi), floor)
    return ndimage.uniform_filter(gain, size=3, mode="nearest")


def denoise_analysis(
    source: Path, info: AudioInfo, start: int, end: int, options: dict, progress: ProgressFn
) -> RegionPlan:
    rate = info.sample_rate
    nperseg = frame_size(rate)
    hop = nperseg // OVERLAP
    given = options["noise_start"], options["noise_end"]
    if (given[0] is None) != (given[1] is None):
        raise OptionError("give both noise_start and noise_end (seconds), or neither")
    if given[0] is not None:
        noise_lo, noise_hi = check_region(
            probe(source), to_frames(given[0], rate), to_frames(given[1], rate)
        )
        if noise_hi - noise_lo < nperseg:
            raise OptionError(
                f"the noise stretch is shorter than one analysis frame ({nperseg / rate:.3f} s)"
            )
        profile, used = noise_profile(source, info, noise_lo, noise_hi, None, nperseg, progress)
        where = f"noise stretch {given[0]:.3f}-{given[1]:.3f} s"
    else:
        if end - start < 4 * nperseg:
            raise OptionError(
                f"the region is too short ({(end - start) / rate:.3f} s) to find its quietest "
                "frames; mark a noise stretch (noise_start/noise_end)"
            )
        profile, used = noise_profile(
            source, info, start, end, options["percentile"], nperseg, progress
        )
        where = f"{options['percentile']:.0%} percentile of each bin over {used} frames"
    detection = {
        "noise_from": where,
        "noise_frames": used,
        "noise_level_dbfs": _level_db(profile, nperseg, info.num_channels),
        "frame": nperseg,
        "hop": hop,
    }
    if used == 0 or not np.any(profile > 0):
        return RegionPlan(detection, None, reason=f"no noise to measure in the {where}")
    floor = 10.0 ** (-options["reduction_db"] / 20.0)
    strength = options["strength"]

    def process(block: np.ndarray) -> np.ndarray:
        z = stft(block, nperseg)
        gain = wiener_gain((np.abs(z) ** 2).sum(axis=0), profile, strength, floor)
        return istft(z * gain[None], nperseg, block.shape[1])

    # the gain at a frame looks (SMOOTH_FRAMES // 2 + 1) frames each way, each nperseg long
    context = (SMOOTH_FRAMES + 4) * hop + 2 * nperseg
    reason = (
        f"stationary noise at {detection['noise_level_dbfs']:.1f} dBFS (from the {where}) "
        f"reduced by up to {options['reduction_db']:g} dB"
    )
    return RegionPlan(detection, process, context=context, align=hop, reason=reason)


def _level_db(profile: np.ndarray, nperseg: int, channels: int) -> float:
    """RMS level (dBFS per channel) of noise whose mean STFT power per bin is ``profile``."""
    window = signal.get_window("hann", nperseg)
    # scipy.signal.stft scales by 1/sum(w): |Z|^2 summed over the full spectrum equals
    # sum(x^2 w^2) / sum(w)^2 per frame; one-sided bins count twice (except DC/Nyquist).
    one_sided = 2.0 * profile.sum() - profile[0] - profile[-1]
    mean_square = one_sided * window.sum() ** 2 / (window**2).sum() / nperseg / channels
    return round(10.0 * math.log10(max(mean_square, 1e-30)), 2)


OP = Op(
    name="denoise",
    summary="reduce stationary noise (hiss, hum-free room tone) by a smoothed Wiener gain",
    options={
        "reduction_db": Option(float, 18.0, "most a bin is turned down (dB)", low=0.0, high=60.0),
        "strength": Option(
            float, 1.5, "noise over-estimate factor (more: cleaner, duller)", low=0.5, high=8.0
        ),
        "percentile": Option(
            float,
            0.1,
            "each bin's noise level is this percentile of its power over the region",
            low=0.01,
            high=0.9,
        ),
        "noise_start": Option(
            float, None, "start (s) of a noise-only stretch of the source", low=0.0, auto=True
        ),
        "noise_end": Option(float, None, "end (s) of that stretch", low=0.0, auto=True),
    },
    region_analysis=denoise_analysis,
)
