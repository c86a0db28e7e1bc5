"""Random "real world" chains for training data: rooms, EQ, compression, noise and codecs.

A model that only heard game audio as the sound designers bounced it must still know a line
of dialogue recorded in a small room, through a phone codec, or under air-conditioning hum.
:func:`augment` passes a clip through a seeded, randomly drawn chain of what happens to audio
between a source and an editor's session:

- **room**: a synthetic room impulse response (exponentially decaying noise with a random
  RT60 of 0.15-1.2 s and a direct-to-reverberant ratio), or pedalboard's Freeverb;
- **EQ**: high-pass (rumble filter), low-pass (band limit), a peak and a shelf;
- **dynamics**: a compressor with a random threshold/ratio, sometimes a limiter;
- **noise**: white, pink or brown noise, or mains hum, at 5-40 dB SNR;
- **codec**: MP3 at a random VBR quality, GSM full-rate (telephone, 8 kHz), or a band limit
  by resampling.

Each stage is applied with its own probability, so many clips get only one or two. The
output keeps the input's length and RMS level (the level is not what a tag depends on), and
a short description of the chain says what was done.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pedalboard
from scipy import signal

Stage = Callable[[np.ndarray, int, np.random.Generator], tuple[np.ndarray, str]]


def _board(x: np.ndarray, rate: int, *plugins: pedalboard.Plugin) -> np.ndarray:
    out = pedalboard.Pedalboard(list(plugins))(x[None, :].astype(np.float32), rate)
    return out[0].astype(np.float64)


def room(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    if rng.random() < 0.3:
        size = float(rng.uniform(0.1, 0.8))
        wet = float(rng.uniform(0.1, 0.4))
        return _board(x, rate, pedalboard.Reverb(room_size=size, wet_level=wet)), "freeverb"
    rt60 = float(rng.uniform(0.15, 1.2))
    n = int(rt60 * rate)
    t = np.arange(n) / rate
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    # Walls absorb highs faster: a gentle low-pass on the tail.
    sos = signal.butter(1, float(rng.uniform(2000, 7000)), "low", fs=rate, output="sos")
    tail = signal.sosfilt(sos, tail)
    drr_db = float(rng.uniform(-3, 12))
    ir = tail / np.sqrt(np.sum(tail**2)) * 10 ** (-drr_db / 20)
    ir[0] += 1.0
    wet = signal.fftconvolve(x, ir)[: len(x)]
    return wet, f"room rt60={rt60:.2f} drr={drr_db:.0f}dB"


def eq(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    nyquist = rate / 2
    plugins: list[pedalboard.Plugin] = []
    if rng.random() < 0.5:
        plugins.append(pedalboard.HighpassFilter(float(rng.uniform(40, 300))))
    if rng.random() < 0.5:
        plugins.append(pedalboard.LowpassFilter(float(rng.uniform(2500, 0.95 * nyquist))))
    plugins.append(
        pedalboard.PeakFilter(
            float(rng.uniform(150, 0.8 * nyquist)),
            float(rng.uniform(-9, 9)),
            float(rng.uniform(0.5, 3)),
        )
    )
    shelf = pedalboard.LowShelfFilter if rng.random() < 0.5 else pedalboard.HighShelfFilter
    plugins.append(shelf(float(rng.uniform(200, 0.6 * nyquist)), float(rng.uniform(-6, 6))))
    return _board(x, rate, *plugins), "eq"


def dynamics(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    peak_db = 20 * np.log10(max(float(np.max(np.abs(x))), 1e-9))
    threshold = peak_db - float(rng.uniform(3, 24))
    ratio = float(rng.uniform(2, 10))
    plugins: list[pedalboard.Plugin] = [
        pedalboard.Compressor(
            threshold, ratio, float(rng.uniform(1, 30)), float(rng.uniform(40, 300))
        )
    ]
    if rng.random() < 0.3:
        plugins.append(pedalboard.Limiter(threshold_db=threshold + 3))
    return _board(x, rate, *plugins), f"compressor {ratio:.0f}:1"


def noise(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    n = len(x)
    kind = str(rng.choice(["white", "pink", "brown", "hum"]))
    if kind == "hum":
        t = np.arange(n) / rate
        f0 = float(rng.choice([50.0, 60.0]))
        bed = sum(np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6)) / h for h in range(1, 6))
    else:
        white = rng.standard_normal(n)
        exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind]
        f = np.maximum(np.fft.rfftfreq(n, 1 / rate), 20.0)
        bed = np.fft.irfft(np.fft.rfft(white) / f ** (exponent / 2), n)
    snr = float(rng.uniform(5, 40))
    power = np.mean(x**2)
    bed = np.asarray(bed, np.float64)
    bed *= np.sqrt(power / max(np.mean(bed**2), 1e-20)) * 10 ** (-snr / 20)
    return x + bed, f"{kind} noise {snr:.0f}dB"


def codec(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    choice = rng.random()
    if choice < 0.45:
        quality = float(rng.uniform(2, 9))
        return _board(x, rate, pedalboard.MP3Compressor(vbr_quality=quality)), f"mp3 q{quality:.0f}"
    if choice < 0.7:
        return _board(x, rate, pedalboard.GSMFullRateCompressor()), "gsm"
    target = float(rng.choice([8000, 11025, 12000]))
    return _board(x, rate, pedalboard.Resample(target_sample_rate=target)), f"band {target:.0f}"


# (stage, probability): rooms and EQ are the most common differences between sources.
CHAIN: tuple[tuple[Stage, float], ...] = (
    (room, 0.5),
    (eq, 0.6),
    (dynamics, 0.4),
    (noise, 0.4),
    (codec, 0.3),
)


def augment(x: np.ndarray, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """``x`` (mono float) through a random chain; same length and RMS level; description."""
    x = np.asarray(x, np.float64)
    rms = float(np.sqrt(np.mean(x**2)))
    if rms < 1e-6:  # silence stays silence: a noise floor would change what it is
        return x.copy(), "none"
    y, done = x, []
    for stage, probability in CHAIN:
        if rng.random() < probability:
            y, what = stage(y, rate, rng)
            done.append(what)
    y = np.nan_to_num(y[: len(x)])
    y *= rms / max(float(np.sqrt(np.mean(y**2))), 1e-12)
    peak = float(np.max(np.abs(y)))
    if peak > 0.99:
        y *= 0.99 / peak
    return y, " + ".join(done) or "none"
