"""Synthesised music, so the demo and the benchmarks need no download.

:func:`music_clip`: plucked strings (Karplus-Strong) playing a chord progression over a bass
line, panned across the channels, over a soft noise floor: tonal, with decays and attacks,
never digitally silent — the material a repair has to get right. :func:`held_notes`: the
chords' roots held (harmonic tones with a slow vibrato), the sustained, periodic material
on which a repair keeps AR's pitch-carrying fill.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

# A-minor progression, MIDI note numbers: Am, F, C, G
CHORDS = ((57, 60, 64), (53, 57, 60), (48, 52, 55), (55, 59, 62))


def _pluck(frequency: float, frames: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """One Karplus-Strong string of ``frames`` samples: a noise burst through a damped
    feedback delay."""
    delay = max(2, round(rate / frequency))
    burst = np.zeros(frames)
    excitation = rng.uniform(-1.0, 1.0, min(delay, frames))
    burst[: excitation.size] = excitation - excitation.mean()  # no DC in the loop
    feedback = np.zeros(delay + 2)
    feedback[0] = 1.0
    feedback[delay] = feedback[delay + 1] = -0.4985  # averaging loop filter, slow decay
    return lfilter([1.0], feedback, burst)


def _pan_gains(pan: float, channels: int) -> np.ndarray:
    """Each channel's gain for a source at ``pan`` (0 left .. 1 right): a gentle law
    (-8 dB at the far side), so every channel hears every source."""
    positions = np.full(channels, 0.5) if channels == 1 else np.linspace(0.0, 1.0, channels)
    return 1.0 - 0.6 * np.abs(positions - pan)


def music_clip(
    rate: int = 48_000, seconds: float = 8.0, channels: int = 2, seed: int = 0
) -> np.ndarray:
    """Return a ``(channels, frames)`` float64 clip peaking at about -3 dBFS."""
    rng = np.random.default_rng(seed)
    frames = int(rate * seconds)
    out = np.zeros((channels, frames))
    beat = 0.5  # seconds per strum
    for step, onset in enumerate(np.arange(0.0, seconds, beat)):
        chord = CHORDS[(step // 4) % len(CHORDS)]
        notes = [chord[0] - 12, *chord]  # bass note under the chord
        for voice, note in enumerate(notes):
            frequency = 440.0 * 2.0 ** ((note - 69) / 12.0)
            start = int((onset + 0.012 * voice) * rate)  # strummed, not struck at once
            length = min(frames - start, int(2.0 * rate))
            if length <= 0:
                continue
            tone = _pluck(frequency, length, rate, rng) * rng.uniform(0.5, 0.9)
            gains = _pan_gains((voice + 0.5) / len(notes), channels)
            out[:, start : start + length] += gains[:, None] * tone
    out += 10 ** (-60 / 20) * rng.standard_normal(out.shape)  # room/preamp noise floor
    return out * (10 ** (-3 / 20) / np.abs(out).max())


def held_notes(
    rate: int = 48_000, seconds: float = 8.0, channels: int = 2, seed: int = 0
) -> np.ndarray:
    """Return a ``(channels, frames)`` float64 clip of a held melody (the chords' roots, 2 s
    each: six harmonics, 5 Hz vibrato, 20 ms ramps), panned a little per note, over the
    same noise floor, peaking at about -3 dBFS."""
    rng = np.random.default_rng(seed)
    frames = int(rate * seconds)
    t = np.arange(frames) / rate
    out = np.zeros((channels, frames))
    hold = round(2.0 * rate)
    ramp = np.minimum(1.0, np.minimum(np.arange(hold), np.arange(hold)[::-1]) / (0.02 * rate))
    for step, start in enumerate(range(0, frames, hold)):
        frequency = 440.0 * 2.0 ** ((CHORDS[step % len(CHORDS)][0] - 69) / 12.0)
        stop = min(frames, start + hold)
        span = t[start:stop]
        phase = 2 * np.pi * frequency * span + 0.002 * frequency * np.sin(2 * np.pi * 5 * span)
        tone = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k**1.5 for k in range(1, 7))
        gains = _pan_gains(rng.uniform(0.3, 0.7), channels)
        out[:, start:stop] += gains[:, None] * (tone * ramp[: stop - start])
    out += 10 ** (-60 / 20) * rng.standard_normal(out.shape)
    return out * (10 ** (-3 / 20) / np.abs(out).max())
