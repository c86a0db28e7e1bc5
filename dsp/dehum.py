"""Dehum: find mains hum (50/60 Hz, or off-nominal) and notch it and its harmonics.

Detection: the region's long-term spectrum (Welch, ~0.4 Hz bins, coarser for regions
under 8 s, accumulated block by block) in dB. A line at f "stands out" by how far it
rises above the mean (in dB) of the spectrum 2.5 bins away on either side (the skirt
of a nearby music partial slopes through f and does not stand out). Every candidate
fundamental in 49.8-50.2 and 59.8-60.2 Hz (``search="wide"``: 45-65 Hz, for tape
or varispeed; 0.005 Hz steps) is scored by how far its first 10 harmonics stand out
(30 dB at most each); the best one is the hum if one of its first three harmonics
stands out by ``min_db``, and is then refined to ~0.01 Hz on one long Hann-windowed
DFT (:func:`refine_fundamental`). Harmonics 1-4 and any others that stand out (up to
``harmonics``, below ``max_freq``) are notched; harmonics that do not are left alone,
so a clean band is not cut for nothing (a hum harmonic buried under the programme is
also masked by it). A music partial within a few Hz of a notched harmonic loses that
band too.

Filter: a zero-phase notch per harmonic, built as complex demodulation: the
harmonic is shifted to 0 Hz, low-passed forward and backward (``sosfiltfilt``,
Butterworth at ``width_hz / 2``), shifted back and subtracted (:func:`remove_lines`).
Zero phase, so the rest of the spectrum keeps its timing; and the ends are padded
in the shifted domain, where a steady hum is a constant, so the hum is removed up
to the file's first and last sample (an IIR notch rings in from them). Like any
zero-phase notch it rings symmetrically around a transient at the notched
frequency, for ~2/(pi * width) s, at the level the transient had in that narrow
band. Blocks are filtered with many such time constants of real audio on each
side, so they join without a seam.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import soxr
from scipy import signal

from maedaw.core.util import ProgressFn

from .audio_io import AudioInfo, iter_blocks, read_region
from .ops import Op, Option, OptionError, RegionPlan

log = logging.getLogger(__name__)

NOMINAL_HZ = ((49.8, 50.2), (59.8, 60.2))  # mains: grids hold +-0.2 Hz (a wider window
# lets a music comb win)
WIDE_HZ = ((45.0, 65.0),)  # search="wide": tape/varispeed moves it a few Hz
SEARCH_HARMONICS = 10  # harmonics that vote for a fundamental
SEARCH_STEP_HZ = 0.005
RESOLUTION_S = 2.0  # Welch segment length at most (2^n frames above this)
LOW_RATE_MIN = 2000  # lines are estimated at 4x the highest line, at least this rate
ALWAYS_NOTCHED = 4  # harmonics notched whenever hum is found (others must stand out)
SIDE_LOBES = 2.5  # a line is compared with the spectrum this many Welch bins each side
MIN_REGION_S = 0.5
REFINE_S, REFINE_HZ, REFINE_POINTS, REFINE_HARMONICS = 30.0, 0.5, 501, 6
PAD = 4  # zero padding of each segment: the spectrum is sampled finely enough that a
# line's peak (and so the comb fit) lands within a few hundredths of a Hz


def long_term_spectrum(
    source: Path,
    info: AudioInfo,
    start: int,
    end: int,
    progress: ProgressFn,
    nperseg: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectrum of ``[start, end)``, channels summed: (freqs, power).

    ``nperseg`` (a power of two) sets the resolution, by default 0.7-1.5 Hz; each
    segment is zero-padded ``PAD`` times, so the spectrum is sampled ``PAD`` times finer.
    """
    rate = info.sample_rate
    length = end - start
    if length < 256:
        raise OptionError(f"the region ({length} samples) is too short to measure hum in")
    # ~0.4 Hz bins, but at least 7 averaged (half-overlapping) segments in short
    # regions: a single periodogram is too noisy to tell a hum line from a noise peak
    if nperseg is None:
        nperseg = min(
            2 ** math.ceil(math.log2(RESOLUTION_S * rate)), 2 ** int(math.log2(length / 4))
        )
    total: np.ndarray | None = None
    count = 0
    # Segments are taken inside each block (a few straddling block edges are skipped).
    for position, data in iter_blocks(source, start, end, 8 * nperseg):
        if data.shape[1] < nperseg and count:
            break  # a short tail adds little and would need its own resolution
        size = min(nperseg, 2 ** int(math.log2(data.shape[1])))
        _, power = signal.welch(
            data,
            rate,
            window="hann",
            nperseg=size,
            noverlap=size // 2,
            nfft=PAD * size,
            axis=-1,
            detrend=False,
        )
        segments = 1 + (data.shape[1] - size) // (size // 2)
        total = power.sum(axis=0) * segments if total is None else total + power.sum(0) * segments
        count += segments
        progress((position + data.shape[1] - start) / length, "measuring spectrum")
    assert total is not None
    freqs = np.fft.rfftfreq(2 * (total.size - 1), 1.0 / rate)
    return freqs, total / count


def find_hum(
    freqs: np.ndarray,
    power: np.ndarray,
    freq: float | None,
    harmonics: int,
    max_freq: float,
    min_db: float,
    search: tuple[tuple[float, float], ...] = NOMINAL_HZ,
) -> dict:
    """The hum fundamental and the harmonics that stand out by ``min_db``."""
    level = 10.0 * np.log10(power + 1e-30)
    bin_hz = freqs[1] - freqs[0]
    # A line stands above the spectrum just outside its own main lobe on both sides;
    # the skirt of a music partial a few Hz away only slopes, so against the mean
    # of the two sides (in dB) it does not stand out.
    side = SIDE_LOBES * bin_hz * PAD

    def prom_at(f: np.ndarray) -> np.ndarray:
        at = np.interp(f, freqs, level)
        sides = 0.5 * (np.interp(f - side, freqs, level) + np.interp(f + side, freqs, level))
        return at - sides

    top = min(max_freq, freqs[-1] * 0.95)
    if freq is None:
        grid = np.concatenate([np.arange(lo, hi, SEARCH_STEP_HZ) for lo, hi in search])
        ks = np.arange(1, min(harmonics, SEARCH_HARMONICS) + 1)
        at = grid[:, None] * ks[None, :]
        # a harmonic counts up to 30 dB: one loud music partial must not outvote a comb
        scores = np.where(at <= top, np.clip(prom_at(at), 0.0, 30.0), 0.0).sum(axis=1)
        fundamental = float(grid[int(np.argmax(scores))])
    else:
        fundamental = float(freq)
    ks = np.arange(1, harmonics + 1)
    ks = ks[ks * fundamental <= top]
    proms = prom_at(ks * fundamental)
    standing = [
        {
            "harmonic": int(k),
            "freq_hz": round(float(k * fundamental), 3),
            "stands_out_db": round(float(p), 1),
        }
        for k, p in zip(ks, proms, strict=True)
    ]
    found = [h for h in standing if h["stands_out_db"] >= min_db]
    present = any(h["harmonic"] <= 3 for h in found) or (freq is not None and bool(found))
    if present:
        # Where there is hum its first harmonics are nearly always in it, and a notch
        # costs ~width_hz of spectrum: notch them even when a nearby partial hides one.
        found = [h for h in standing if h["harmonic"] <= ALWAYS_NOTCHED or h in found]
    return {
        "fundamental_hz": round(fundamental, 3),
        "hum_found": present,
        "notched": found if present else [],
        "resolution_hz": round(float(bin_hz * PAD), 4),
    }


def refine_fundamental(
    source: Path, info: AudioInfo, start: int, end: int, coarse: float, harmonics: list[int]
) -> float:
    """``coarse`` refined to ~0.01 Hz on up to REFINE_S s of the region.

    The Welch spectrum's lines are a few tenths of a Hz wide, which leaves the 10th
    harmonic's notch a few Hz off. Here the whole stretch is one Hann-windowed DFT,
    evaluated on a fine grid around each harmonic with the chirp-z transform
    (``scipy.signal.zoom_fft``); the grid point where the harmonics together peak
    (each normalised to its own peak) is the fundamental.
    """
    rate = info.sample_rate
    middle = (start + end) // 2
    half = min(end - start, round(REFINE_S * rate)) // 2
    mono = read_region(source, middle - half, middle + half).samples.mean(axis=0)
    mono *= signal.get_window("hann", mono.size)
    grid = coarse + np.linspace(-REFINE_HZ, REFINE_HZ, REFINE_POINTS)
    score = np.zeros(grid.size)
    for k in harmonics[:REFINE_HARMONICS]:
        band = [k * grid[0], k * grid[-1]]
        spectrum = signal.zoom_fft(mono, band, m=REFINE_POINTS, fs=rate, endpoint=True)
        power = np.abs(spectrum) ** 2
        score += power / max(float(power.max()), 1e-30)
    return float(grid[int(np.argmax(score))])


def remove_lines(
    block: np.ndarray, freqs_hz: list[float], width_hz: float, rate: int, pad: int
) -> np.ndarray:
    """Subtract the narrow band ``f +- width/2`` around each frequency, zero phase.

    Each line is shifted to 0 Hz (complex demodulation), low-passed forward and
    backward (2nd-order Butterworth at width/2: together a notch ~``width_hz`` wide),
    shifted back and subtracted. Ends are extended *evenly in the shifted domain*,
    where a steady hum is a constant: the estimate stays right up to the file's
    first and last sample instead of ringing in from them as a notch filter would.

    The lines are estimated on a copy resampled (soxr) to a few times the highest
    line, and their slowly varying envelopes are interpolated back to full rate;
    only the subtraction runs at the full rate.
    """
    frames = block.shape[-1]
    low_rate = min(rate, max(LOW_RATE_MIN, math.ceil(4.0 * max(freqs_hz) / 100.0) * 100))
    low = block if low_rate == rate else soxr.resample(block.T, rate, low_rate, "VHQ").T
    low = np.atleast_2d(low)
    lowpass = signal.butter(2, width_hz / 2.0, fs=low_rate, output="sos")
    padlen = min(round(pad * low_rate / rate), low.shape[-1] - 1)
    t_low = np.arange(low.shape[-1]) / low_rate
    t_full = np.arange(frames) / rate
    out = block.copy()
    for f in freqs_hz:
        shifted = low * np.exp(-2j * np.pi * f * t_low)
        base = signal.sosfiltfilt(lowpass, shifted.real, axis=-1, padtype="even", padlen=padlen)
        base = base + 1j * signal.sosfiltfilt(
            lowpass, shifted.imag, axis=-1, padtype="even", padlen=padlen
        )
        carrier = np.exp(2j * np.pi * f * t_full)
        for c in range(out.shape[0]):
            envelope = np.interp(t_full, t_low, base[c].real) + 1j * np.interp(
                t_full, t_low, base[c].imag
            )
            out[c] -= 2.0 * np.real(envelope * carrier)
    return out


def dehum_analysis(
    source: Path, info: AudioInfo, start: int, end: int, options: dict, progress: ProgressFn
) -> RegionPlan:
    rate = info.sample_rate
    if options["freq"] is None and (end - start) < MIN_REGION_S * rate:
        raise OptionError(
            f"the region is shorter than {MIN_REGION_S} s: too short to find the hum "
            "frequency; give it (freq=50 or freq=60)"
        )
    if options["freq"] is not None and options["freq"] >= rate / 2:
        raise OptionError(f"option freq: {options['freq']} Hz is above the Nyquist frequency")
    freqs, power = long_term_spectrum(source, info, start, end, progress)
    search = WIDE_HZ if options["search"] == "wide" else NOMINAL_HZ
    found = find_hum(
        freqs,
        power,
        options["freq"],
        options["harmonics"],
        options["max_freq"],
        options["min_db"],
        search,
    )
    if found["hum_found"] and options["freq"] is None:
        strongest = sorted(found["notched"], key=lambda h: -h["stands_out_db"])
        fine = refine_fundamental(
            source,
            info,
            start,
            end,
            found["fundamental_hz"],
            [h["harmonic"] for h in strongest],
        )
        found = find_hum(
            freqs, power, fine, options["harmonics"], options["max_freq"], options["min_db"]
        )
    found["width_hz"] = options["width_hz"]
    if not found["hum_found"]:
        reason = (
            f"no hum: no harmonic of {found['fundamental_hz']} Hz stands "
            f"{options['min_db']} dB above the spectrum around it"
        )
        return RegionPlan(found, None, reason=reason)
    targets = [h["freq_hz"] for h in found["notched"]]
    # The band filter decays with tau ~ 1 / (pi * width / 2); 10 tau leaves < 1e-4.
    context = round(max(1.0, 20.0 / (math.pi * options["width_hz"])) * rate)

    def process(block: np.ndarray) -> np.ndarray:
        return remove_lines(block, targets, options["width_hz"], rate, context)

    reason = (
        f"hum at {found['fundamental_hz']} Hz: {len(targets)} harmonics notched "
        f"({', '.join(f'{f:g}' for f in targets)} Hz)"
    )
    log.info("dehum: %s", reason)
    return RegionPlan(found, process, context=context, reason=reason)


OP = Op(
    name="dehum",
    summary="find 50/60 Hz (or off-nominal) hum and notch its harmonics, zero phase",
    options={
        "freq": Option(
            float, None, "hum fundamental in Hz (auto: detect)", low=1.0, high=20000.0, auto=True
        ),
        "search": Option(
            str,
            "mains",
            "fundamentals searched: mains (50/60 +- 0.2 Hz) or wide (45-65 Hz)",
            choices=("mains", "wide"),
        ),
        "harmonics": Option(int, 24, "highest harmonic considered", low=1, high=400),
        "max_freq": Option(
            float, 4000.0, "no notch above this frequency (Hz)", low=20.0, high=96000.0
        ),
        "width_hz": Option(
            float, 1.5, "notch bandwidth (Hz); wider follows a drifting hum", low=0.05, high=50.0
        ),
        "min_db": Option(
            float,
            6.0,
            "a harmonic is notched when it stands this far above the spectrum around it",
            low=0.0,
            high=60.0,
        ),
    },
    region_analysis=dehum_analysis,
)
