"""A minimal sampler for Gravis UltraSound patches (``.pat``, the freepats set).

No Debian program renders a lone patch (timidity needs a MIDI file and a config), and the
format is small: a 129-byte file header, a 63-byte instrument and a 47-byte layer header, then
per sample a 96-byte header (loop points in bytes, rate, the key range and root pitch in
milli-Hz, mode bits) and its PCM. We play notes by resampling the matching sample
(linear interpolation), holding forward loops while a note sounds, then a short release.

A melodic patch (``Tone_000/NNN_Name.pat``) renders a seeded phrase over its key range; a drum
patch (``Drum_000/NNN_Name.pat``, NNN = the GM drum key) renders a few hits of its one key.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maedaw.core.util import atomic_path
from maedaw.corpus.pretrain import write_wav16

RENDER_RATE = 32_000
HEADER = struct.Struct("<7sBIIIHIIIhB6s6s3s3sBhH36s")  # one sample's header, 96 bytes
FIRST_SAMPLE = 129 + 63 + 47
MODE_16BIT, MODE_UNSIGNED, MODE_LOOP = 0x01, 0x02, 0x04
RELEASE_S = 0.15


@dataclass(frozen=True)
class PatchSample:
    pcm: np.ndarray  # float, -1..1
    rate: int
    loop: tuple[int, int] | None  # [start, end) in frames
    low_hz: float
    high_hz: float
    root_hz: float


def parse_patch(data: bytes) -> list[PatchSample]:
    """The samples of a GUS patch file."""
    if not data.startswith(b"GF1PATCH"):
        raise ValueError("not a GUS patch (no GF1PATCH magic)")
    (count,) = struct.unpack_from("<H", data, 85)
    samples, at = [], FIRST_SAMPLE
    for _ in range(count):
        fields = HEADER.unpack_from(data, at)
        size, loop_start, loop_end, rate, low, high, root = fields[2:9]
        modes = fields[15]
        raw = data[at + HEADER.size : at + HEADER.size + size]
        at += HEADER.size + size
        width = 2 if modes & MODE_16BIT else 1
        kind = (
            ("<u2" if width == 2 else "u1")
            if modes & MODE_UNSIGNED
            else ("<i2" if width == 2 else "i1")
        )
        pcm = np.frombuffer(raw[: len(raw) // width * width], dtype=kind).astype(np.float64)
        if modes & MODE_UNSIGNED:
            pcm -= 2 ** (8 * width - 1)
        pcm /= 2 ** (8 * width - 1)
        loop = (loop_start // width, loop_end // width) if modes & MODE_LOOP else None
        if loop and not 0 <= loop[0] < loop[1] <= len(pcm):
            loop = None
        samples.append(PatchSample(pcm, rate, loop, low / 1000, high / 1000, root / 1000))
    return samples


def _pick(samples: list[PatchSample], hz: float) -> PatchSample:
    inside = [s for s in samples if s.low_hz <= hz <= s.high_hz]
    return (inside or sorted(samples, key=lambda s: abs(np.log2(hz / max(s.root_hz, 1e-3)))))[0]


def play_note(samples: list[PatchSample], key: int, hold_s: float, rate: int = RENDER_RATE):
    """One note: ``hold_s`` of sound (forward loops repeat), then a linear release."""
    hz = 440.0 * 2 ** ((key - 69) / 12)
    s = _pick(samples, hz)
    step = hz / max(s.root_hz, 1e-3) * s.rate / rate
    n = round((hold_s + RELEASE_S) * rate)
    pos = np.arange(n) * step
    if s.loop is not None:
        a, b = s.loop
        beyond = pos >= b
        pos[beyond] = a + np.mod(pos[beyond] - a, b - a)
    else:
        pos = pos[pos < len(s.pcm) - 1]
    out = np.interp(pos, np.arange(len(s.pcm)), s.pcm)
    fade = np.clip((n - np.arange(len(out))) / (RELEASE_S * rate), 0.0, 1.0)
    return out * fade


def patch_phrase(samples: list[PatchSample], key: int | None, rng: random.Random) -> np.ndarray:
    """A drum patch (``key`` given): 6 hits of it; a melodic one: 8 notes over its range."""
    if key is not None:
        notes = [(key, 0.35, rng.uniform(0.5, 1.0)) for _ in range(6)]
    else:
        low = max(24, min(round(69 + 12 * np.log2(max(s.low_hz, 20) / 440)) for s in samples))
        high = min(108, max(round(69 + 12 * np.log2(max(s.high_hz, 20) / 440)) for s in samples))
        low, high = max(low, 36), min(high, 96)
        if low > high:
            low, high = 48, 72
        notes = [
            (rng.randint(low, high), rng.uniform(0.4, 1.2), rng.uniform(0.5, 1.0)) for _ in range(8)
        ]
    pieces = []
    for note, hold, velocity in notes:
        pieces.append(velocity * play_note(samples, note, hold))
        pieces.append(np.zeros(round(0.05 * RENDER_RATE)))
    audio = np.concatenate(pieces)
    peak = float(np.max(np.abs(audio))) or 1.0
    return 0.5 * audio / peak


def render_patch(path: Path, target: Path) -> None:
    """Render a freepats patch to a 16-bit WAV at ``target`` (seeded by the file name)."""
    key = (
        int(path.name[:3])
        if path.parent.name.startswith("Drum") and path.name[:3].isdigit()
        else None
    )
    audio = patch_phrase(parse_patch(path.read_bytes()), key, random.Random(f"gus/{path.name}"))
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as temp:
        write_wav16(temp, audio, RENDER_RATE)
