"""Build the labelled corpus the bundled session tagger is trained and scored on.

``maedaw corpus tags OUT_DIR`` (same Debian allowlist and unpack folder as ``corpus build``)::

    package files       -> classes by path rules (dialogue, game music, tileset ambiences, effects)
    fluidsynth renders  -> one GM program per render, labelled by its family (bass, guitar, ...),
                           plus ensemble renders (several families + drums) labelled music;
                           train / val programs are also rendered as timbre variants (below)
    espeak-ng           -> more speech (many voices / languages)
    numpy               -> noise / hum and silence
    split BY GROUP      -> train / val / heldout; a group is a recording, or everything that
                           shares one (a Hedgewars voice pack, a GM program, a MegaGlest unit),
                           so held-out clips come from voices, instruments and recordings the
                           head never saw; val (for calibration) is disjoint from both
    clips               -> random length 2-10.255 s, random level, 16 kHz mono 16-bit WAV
    OUT/{split}/{class}/*.wav, OUT/{split}-mix/*.wav (two-class mixtures), OUT/manifest.csv

Every random choice comes from one seed and sources are visited in sorted order, so the same
packages give the same corpus. The classes, and why some an editor would like are missing
(singing, room tone), are documented in ``models/weights/tagger-default.md``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from maedaw.core.util import ProgressFn
from maedaw.corpus.pretrain import (
    ALLOWLIST,
    SAMPLE_RATE,
    SOUNDFONT_PACKAGE,
    CorpusError,
    dedupe,
    load_mono_16k,
    midi_file,
    package_sources,
    start_build,
    synth_speech,
    write_manifest,
    write_wav16,
)
from maedaw.dsp.audio_io import AudioError
from maedaw.models.heads import CLASSES, SILENCE_CLASS_DBFS  # the head's vocabulary

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "heldout")
MAX_CLIP_S = 10.255  # one model window
AUDIBLE_RMS = 1e-3  # -60 dBFS: a clip of a sounding class must be louder than this
MIN_CLIP_S = 0.25

# GM programs per instrument class (0-based). Left out on purpose: chromatic percussion (8-15,
# mallets: keys or percussion?), harp / timpani (46-47), choir / voices (52-54: sampled vowels,
# not singing), orchestra hit (55), synth strings / brass (50-51, 62-63: synth or strings?),
# synth effects / ethnic / percussive / sound effects (96-127).
GM_FAMILIES: dict[str, tuple[int, ...]] = {
    "keys": (*range(0, 8), *range(16, 24)),
    "guitar": tuple(range(24, 32)),
    "bass": tuple(range(32, 40)),
    "strings": (40, 41, 42, 43, 44, 45, 48, 49),
    "winds": (*range(56, 62), *range(64, 80)),
    "synth": tuple(range(80, 96)),
}
# FluidR3_GM drum kits (bank 128): standard, room, power, electronic, TR-808, jazz, brush, orch.
GM_DRUM_KITS = (0, 8, 16, 24, 25, 32, 40, 48)

# Package path rules: (package, regex on the path inside the package, class, group rule).
# Group rules: "file" (each recording its own group), "dir" (the parent folder), "stem" (the
# file name without trailing digits: "archer_ack3" -> "archer_ack").
_VOICE_LIKE = re.compile(r"(_ack|_select|_ready|_yes|_hello)\d*\.", re.IGNORECASE)
PACKAGE_RULES: tuple[tuple[str, str, str, str], ...] = (
    # Hedgewars "Singer" sings its lines: neither speech nor a usable singing class (one voice).
    ("hedgewars-data", r"/Sounds/voices/Singer/", "", "dir"),
    ("hedgewars-data", r"/Sounds/voices/", "speech", "dir"),
    ("hedgewars-data", r"/Music/", "music", "file"),
    ("hedgewars-data", r"/Sounds/", "effects", "stem"),
    ("fillets-ng-data", r"/music/", "music", "file"),
    ("fillets-ng-data", r"/sound/share/", "effects", "stem"),
    ("fillets-ng-data", r"/sound/[^/]+/en/", "speech", "dir"),
    ("fillets-ng-data-cs", r"/sound/[^/]+/cs/", "speech", "dir"),
    ("alsa-utils", r"/Noise\.wav$", "noise", "file"),
    ("alsa-utils", r"/sounds/alsa/", "speech", "dir"),
    ("wesnoth-1.16-music", r"/music/", "music", "file"),
    # Wesnoth ambient loops: birds, campfire, morning, night, ship; war drums and horns are not.
    ("wesnoth-1.16-data", r"/ambient/wardrums", "", "file"),
    ("wesnoth-1.16-data", r"/ambient/", "ambience", "file"),
    ("wesnoth-1.16-data", r"/horn-signals/", "", "file"),
    ("wesnoth-1.16-data", r"/sounds/", "effects", "stem"),
    ("megaglest-data", r"/music/", "music", "file"),
    # Tileset loops (day, night, rain, wind, hell); the one-shot animal calls are left out.
    (
        "megaglest-data",
        r"/tilesets/[^/]+/sounds/(day|night|nightime|rain|wind|hell|"
        r"desertday|sunny_day)\.",
        "ambience",
        "file",
    ),
    ("megaglest-data", r"/techs/.*/sounds?/", "effects", "dir"),
    ("sound-theme-freedesktop", r"/sounds/", "effects", "stem"),
)


@dataclass(frozen=True)
class TagSettings:
    seed: int = 4321
    val_fraction: float = 0.15  # of the groups of each class
    heldout_fraction: float = 0.2
    clips_per_class: int = 360  # over all splits, before mixtures
    max_clips_per_source: int = 12
    max_sources_per_group: int = 12  # spread a class over many voices / units / programs
    renders_per_program: int = 16
    # Extra phrases per train / val melodic program, each with its own articulation and
    # envelope / filter offsets (`variant_track`); held-out keeps the plain renders.
    variants_per_program: int = 32
    ensemble_renders: int = 60
    espeak_utterances: int = 90
    noise_clips: int = 240
    silence_clips: int = 160
    mixtures: dict[str, int] | None = None  # per split; default below

    def mixture_counts(self) -> dict[str, int]:
        return self.mixtures or {"train": 240, "val": 60, "heldout": 90}


@dataclass(frozen=True)
class TagSource:
    """One recording with its class and the group it is split by."""

    label: str
    group: str
    package: str
    path: Path
    relpath: str
    sha256: str


@dataclass
class TagClip:
    file: str  # relative to OUT_DIR
    split: str
    labels: str  # ";"-joined class ids
    package: str
    source: str
    group: str
    start_s: float
    duration_s: float
    gain_db: float
    sha256: str


MANIFEST_FIELDS = tuple(TagClip.__dataclass_fields__)


# --------------------------------------------------------------------------------------------
# Pure helpers


def classify_path(package: str, relpath: str) -> tuple[str, str] | None:
    """``(class, group)`` of a packaged file by the path rules, or None (not used)."""
    if not relpath.lower().endswith((".ogg", ".wav", ".flac", ".mp3")):
        return None
    for rule_package, pattern, label, group_rule in PACKAGE_RULES:
        if rule_package != package or not re.search(pattern, relpath):
            continue
        if not label:
            return None
        if label == "effects" and _VOICE_LIKE.search(relpath):
            return None  # unit acknowledgements are spoken lines, not effects
        parent, name = relpath.rsplit("/", 1)
        if group_rule == "dir":
            group = parent
        elif group_rule == "stem":
            group = parent + "/" + re.sub(r"[-_]?\d+$", "", name.rsplit(".", 1)[0])
        else:
            group = relpath
        return label, f"{package}:{group}"
    return None


def split_groups(
    groups_by_class: dict[str, Sequence[str]], val: float, heldout: float, seed: int
) -> dict[tuple[str, str], str]:
    """(class, group) -> split. Per class, seeded; every split gets at least one group when the
    class has three or more, so each class has validation and held-out numbers."""
    result: dict[tuple[str, str], str] = {}
    for label in sorted(groups_by_class):
        groups = sorted(set(groups_by_class[label]))
        random.Random(f"{seed}/split/{label}").shuffle(groups)
        n = len(groups)
        n_held = max(1, round(heldout * n)) if n >= 3 else 0
        n_val = max(1, round(val * n)) if n >= 3 else 0
        for i, group in enumerate(groups):
            split = "heldout" if i < n_held else "val" if i < n_held + n_val else "train"
            result[(label, group)] = split
    return result


def check_group_split(clips: Sequence[TagClip]) -> None:
    """Raise if a group or a recording feeds more than one split."""
    for key in ("group", "source"):
        seen: dict[str, set[str]] = {}
        for clip in clips:
            if clip.split.endswith("-mix"):
                continue
            seen.setdefault(getattr(clip, key), set()).add(clip.split)
        leaked = [name for name, splits in seen.items() if len(splits) > 1]
        if leaked:
            raise ValueError(f"{len(leaked)} {key}s appear in several splits, e.g. {leaked[0]}")


def read_tag_manifest(path: Path) -> list[TagClip]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    numeric = ("start_s", "duration_s", "gain_db")
    return [TagClip(**{**r, **{k: float(r[k]) for k in numeric}}) for r in rows]


def clip_spans(
    num_samples: int, max_clips: int, rng: random.Random, rate: int = SAMPLE_RATE
) -> list[tuple[int, int]]:
    """Clips of random length (2 s to one window) spread over a recording; a recording shorter
    than a window is one clip (effects and lines are short: length must not give the class away,
    so long recordings are cut to varied lengths too)."""
    longest, shortest = round(MAX_CLIP_S * rate), round(MIN_CLIP_S * rate)
    if num_samples < shortest:
        return []
    if num_samples <= longest:
        return [(0, num_samples)]
    count = max(1, min(max_clips, num_samples // longest))
    slot = num_samples // count
    spans = []
    for i in range(count):
        length = min(slot, rng.randint(2 * rate, longest))
        start = i * slot + rng.randint(0, slot - length)
        spans.append((start, start + length))
    return spans


def set_level(x: np.ndarray, rms_db: float) -> tuple[np.ndarray, float]:
    """Scale to an RMS level (dBFS), never past a 0.98 peak; returns (audio, gain in dB)."""
    rms = float(np.sqrt(np.mean(x**2)))
    if rms < 1e-9:
        return x, 0.0
    gain = 10 ** (rms_db / 20) / rms
    peak = float(np.max(np.abs(x))) * gain
    if peak > 0.98:
        gain *= 0.98 / peak
    return x * gain, 20 * np.log10(gain)


# --------------------------------------------------------------------------------------------
# Synthesis: GM renders (fluidsynth), noise / hum, silence


PHRASE_SLOT_S = 12.0  # phrases of one render start this far apart (longer than any clip)


def _note_messages(
    notes: Sequence[tuple[float, float, int, int]], channel: int
) -> list[tuple[int, bytes]]:
    """(start s, length s, pitch, velocity) -> (absolute tick, message) at 120 bpm, 480 tpb
    (1 tick = 1/960 s), note-offs first at a tick."""
    events = []
    for start, length, pitch, velocity in notes:
        events.append((round(start * 960), bytes((0x90 | channel, pitch, velocity))))
        events.append((round((start + length) * 960), bytes((0x80 | channel, pitch, 0))))
    events.sort(key=lambda e: (e[0], e[1][0] & 0xF0 == 0x90))
    return events


def _delta_times(timed: Sequence[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Sorted (absolute tick, message) -> the (delta ticks, message) pairs of a track."""
    out, now = [], 0
    for tick, data in timed:
        out.append((tick - now, data))
        now = tick
    return out


def _note_events(notes: Sequence[tuple[float, float, int, int]], channel: int) -> list:
    """The notes as delta-timed MIDI events (see :func:`_note_messages`)."""
    return _delta_times(_note_messages(notes, channel))


def _phrases(audio: np.ndarray, lengths: Sequence[float]) -> list[np.ndarray]:
    """Cut a render back into its phrases (``PHRASE_SLOT_S`` apart), each with 0.3 s of tail."""
    slots = [round(k * PHRASE_SLOT_S * SAMPLE_RATE) for k in range(len(lengths))]
    return [
        audio[a : a + round((s + 0.3) * SAMPLE_RATE)] for a, s in zip(slots, lengths, strict=True)
    ]


def _renders_folder(work: Path) -> Path:
    out = work / "synth" / "tags"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _melodic_notes(
    rng: random.Random, start: float, seconds: float, low: int, high: int, chords: bool
) -> list[tuple[float, float, int, int]]:
    scale = rng.choice(((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10), (0, 2, 4, 7, 9)))
    root = rng.randint(low, max(low, high - 12))
    beat = 60.0 / rng.choice((70, 90, 110, 130, 150))
    notes, t = [], 0.0
    while t < seconds - 0.2:
        length = min(seconds - t, beat * rng.choice((0.5, 1, 1, 2, 3)))
        degree = rng.randint(0, 2 * len(scale) - 1)
        pitch = min(high, root + 12 * (degree // len(scale)) + scale[degree % len(scale)])
        velocity = rng.randint(55, 115)
        legato = length * rng.uniform(0.6, 1.0)
        notes.append((start + t, legato, pitch, velocity))
        if chords and rng.random() < 0.5:
            for step in (4, 7):
                notes.append((start + t, legato, min(127, pitch + step), velocity - 10))
        t += length
    return notes


def _drum_notes(rng: random.Random, start: float, seconds: float):
    beat = 60.0 / rng.choice((80, 96, 110, 128, 150, 174))
    kick, snare = rng.choice(((35, 38), (36, 40), (36, 38))), rng.random()
    hats = rng.choice(((42,), (42, 46), (51,), (44, 42), (70, 54)))
    toms = (41, 43, 45, 47, 48, 50)
    notes, step, t = [], beat / 2, 0.0
    while t < seconds - 0.1:
        i = round(t / step)
        if i % 4 == 0 and rng.random() < 0.95:
            notes.append(
                (start + t, 0.1, kick[0] if snare < 0.5 else kick[1], rng.randint(90, 120))
            )
        if i % 4 == 2 and rng.random() < 0.9:
            notes.append((start + t, 0.1, 38 if snare < 0.5 else 40, rng.randint(80, 120)))
        if rng.random() < 0.8:
            notes.append((start + t, 0.05, rng.choice(hats), rng.randint(50, 100)))
        if rng.random() < 0.08:
            notes.append((start + t, 0.1, rng.choice(toms), rng.randint(70, 110)))
        if i % 16 == 0 and rng.random() < 0.3:
            notes.append((start + t, 0.5, rng.choice((49, 57, 55)), rng.randint(70, 110)))
        t += step
    return notes


_RANGES = {
    "bass": (28, 55),
    "keys": (40, 88),
    "guitar": (40, 80),
    "strings": (45, 88),
    "winds": (50, 86),
    "synth": (40, 88),
}


def _render(midi: bytes, wav: Path, soundfont: Path) -> np.ndarray:
    # Named by content: a render is reused only for the very same MIDI.
    wav = wav.with_name(f"{wav.stem}-{hashlib.sha256(midi).hexdigest()[:12]}.wav")
    mid = wav.with_suffix(".mid")
    mid.write_bytes(midi)
    if not wav.exists():
        cmd = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-r", str(SAMPLE_RATE)]
        cmd += ["-g", "0.5", "-F", str(wav), str(soundfont), str(mid)]
        subprocess.run(cmd, check=True, capture_output=True)
    return load_mono_16k(wav)


# Timbre variants. One soundfont gives one sampled instrument per program, and a head learns
# those programs rather than their family: v3 missed 33 of the 80 held-out guitar and synth
# clips (unseen programs). The muted electric guitar it called a bass is still missed.
# SoundFont 2.01 NRPNs (MSB 120, LSB = generator number) offset a preset's generators per
# channel, so each training program is also played shorter, darker, slower or with vibrato.
# (generator, name, low, high, probability); units: timecents for envelope times,
# centibels for sustain attenuation and filter Q, 2 cents per step for the filter cutoff.
VARIANT_GENERATORS = (
    (36, "decay", -2400, 600, 0.6),
    (37, "sustain", 0, 300, 0.4),
    (38, "release", -1200, 1200, 0.5),
    (34, "attack", 0, 1200, 0.2),
    (8, "cutoff", -1500, 0, 0.5),
    (9, "q", 0, 120, 0.3),
)
# Note-length factors (the phrase's own legato is 0.6-1.0 of the note's slot).
ARTICULATIONS = {"staccato": (0.1, 0.45), "normal": (0.75, 1.25), "legato": (1.2, 1.25)}
NRPN_SOUNDFONT = 120


def _nrpn(channel: int, generator: int, offset: int) -> list[bytes]:
    """CC 99 / 98 select the generator, CC 38 / 6 carry the 14-bit offset (8192 = none)."""
    value = int(np.clip(8192 + offset, 0, 16383))
    return [
        bytes((0xB0 | channel, cc, v))
        for cc, v in ((99, NRPN_SOUNDFONT), (98, generator), (38, value & 127), (6, value >> 7))
    ]


def variant_track(
    family: str,
    program: int,
    lengths: Sequence[float],
    rng: random.Random,
    slot: float = PHRASE_SLOT_S,
) -> tuple[list[tuple[int, bytes]], list[str]]:
    """One MIDI track of ``len(lengths)`` phrases, ``slot`` seconds apart, each with its own
    articulation and generator offsets. Every phrase first resets all offsets and the mod
    wheel, so no phrase inherits the last one's timbre. Returns (events, descriptions)."""
    low, high = _RANGES[family]
    chords = family in ("keys", "guitar", "strings", "synth")
    timed: list[tuple[int, bytes]] = []
    descriptions = []
    for k, seconds in enumerate(lengths):
        articulation = rng.choice(("staccato", "normal", "normal", "legato"))
        notes = [
            (start, length * rng.uniform(*ARTICULATIONS[articulation]), pitch, velocity)
            for start, length, pitch, velocity in _melodic_notes(
                rng, k * slot, seconds, low, high, chords
            )
        ]
        offsets = {gen: 0 for gen, *_ in VARIANT_GENERATORS}
        words = [articulation]
        for gen, name, lo, hi, p in VARIANT_GENERATORS:
            if rng.random() < p:
                offsets[gen] = round(rng.uniform(lo, hi))
                words.append(f"{name}{offsets[gen]:+d}")
        wheel = rng.randint(20, 90) if rng.random() < 0.3 else 0
        if wheel:
            words.append(f"vibrato{wheel}")
        setup = [m for gen, offset in offsets.items() for m in _nrpn(0, gen, offset)]
        setup.append(bytes((0xB0, 1, wheel)))
        at = max(0, round(k * slot * 960) - 5)  # just before the phrase's first note
        timed += [(at, message) for message in setup]
        timed += _note_messages(notes, 0)
        descriptions.append(" ".join(words))
    timed.sort(key=lambda e: e[0])  # stable: a phrase's set-up stays in order
    return [(0, bytes((0xC0, program))), *_delta_times(timed)], descriptions


def variant_programs(splits: dict[tuple[str, str], str]) -> list[tuple[str, int]]:
    """The melodic (family, program) pairs whose renders are in train or val: only those get
    variants, so held-out stays the plain sampled instruments."""
    return [
        (family, program)
        for family, programs in GM_FAMILIES.items()
        for program in programs
        if splits.get((family, f"gm:{family}/{program}"), "heldout") != "heldout"
    ]


def render_gm_variants(
    work: Path, soundfont: Path, settings: TagSettings, programs: Sequence[tuple[str, int]]
) -> list[tuple[str, str, str, np.ndarray]]:
    """``settings.variants_per_program`` variant phrases of each (family, program), in the
    program's group; same ``(label, group, description, audio)`` rows as ``render_gm``."""
    out = _renders_folder(work)
    pieces = []
    for family, program in programs:
        rng = random.Random(f"{settings.seed}/gm-variant/{family}/{program}")
        lengths = [rng.uniform(2.0, MAX_CLIP_S - 0.3) for _ in range(settings.variants_per_program)]
        track, descriptions = variant_track(family, program, lengths, rng)
        audio = _render(midi_file([track]), out / f"variant-{family}-{program:03d}.wav", soundfont)
        group = f"gm:{family}/{program}"
        cut = _phrases(audio, lengths)
        for k, (piece, words) in enumerate(zip(cut, descriptions, strict=True)):
            pieces.append((family, group, f"variant {k} {words}", piece))
    return pieces


def render_gm(
    work: Path, soundfont: Path, settings: TagSettings
) -> list[tuple[str, str, str, np.ndarray]]:
    """Solo renders per program (labelled by family) and ensemble renders (labelled music).

    Each program's phrases go into one MIDI file, 12 s apart, so fluidsynth loads the
    soundfont once per program. Returns ``(label, group, description, audio)`` per phrase.
    """
    if shutil.which("fluidsynth") is None:
        raise CorpusError(
            "fluidsynth is needed for the instrument classes (apt install fluidsynth)"
        )
    out = _renders_folder(work)
    slot = PHRASE_SLOT_S
    pieces = []
    jobs: list[tuple[str, int]] = [(f, p) for f, ps in GM_FAMILIES.items() for p in ps]
    jobs += [("drums", kit) for kit in GM_DRUM_KITS]
    for family, program in jobs:
        rng = random.Random(f"{settings.seed}/gm/{family}/{program}")
        lengths = [rng.uniform(2.0, MAX_CLIP_S - 0.3) for _ in range(settings.renders_per_program)]
        channel = 9 if family == "drums" else 0
        notes = []
        for k, seconds in enumerate(lengths):
            if family == "drums":
                notes += _drum_notes(rng, k * slot, seconds)
            else:
                low, high = _RANGES[family]
                chords = family in ("keys", "guitar", "strings", "synth")
                notes += _melodic_notes(rng, k * slot, seconds, low, high, chords)
        track = [(0, bytes((192 | channel, program))), *_note_events(notes, channel)]
        audio = _render(midi_file([track]), out / f"{family}-{program:03d}.wav", soundfont)
        for k, piece in enumerate(_phrases(audio, lengths)):
            pieces.append((family, f"gm:{family}/{program}", f"phrase {k}", piece))
    # Ensembles: 2-4 families + drums (70 %), each phrase its own group (a "recording").
    rng = random.Random(f"{settings.seed}/gm/ensemble")
    tracks: list[list] = [[] for _ in range(5)]
    lengths = [rng.uniform(3.0, MAX_CLIP_S - 0.3) for _ in range(settings.ensemble_renders)]
    per_channel: list[list] = [[] for _ in range(5)]
    programs: list[list] = [[] for _ in range(5)]
    for k, seconds in enumerate(lengths):
        families = rng.sample(sorted(GM_FAMILIES), k=rng.randint(2, 4))
        if "bass" not in families and rng.random() < 0.7:
            families[0] = "bass"
        for ch, family in enumerate(families):
            low, high = _RANGES[family]
            program = rng.choice(GM_FAMILIES[family])
            programs[ch].append((k * slot, program))
            per_channel[ch] += _melodic_notes(rng, k * slot, seconds, low, high, ch > 0)
        if rng.random() < 0.7:
            per_channel[4] += _drum_notes(rng, k * slot, seconds)
    for ch in range(4):
        # Program changes interleaved with the notes: merge as zero-length events.
        events = [(round(t * 960), bytes((0xC0 | ch, p))) for t, p in programs[ch]]
        events += _note_messages(per_channel[ch], ch)
        tracks[ch] = _delta_times(sorted(events, key=lambda e: (e[0], e[1][0] & 0xF0 != 0xC0)))
    tracks[4] = [(0, bytes((201, rng.choice(GM_DRUM_KITS)))), *_note_events(per_channel[4], 9)]
    audio = _render(midi_file(tracks), out / "ensemble.wav", soundfont)
    for k, piece in enumerate(_phrases(audio, lengths)):
        pieces.append(("music", f"gm:ensemble/{k}", f"ensemble phrase {k}", piece))
    return pieces


def synth_noise(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, str]:
    """Broadband noise of a random colour, mains hum / buzz, or a mix (the stuff an editor
    wants flagged): white, pink, brown, band-passed hiss, 50/60 Hz hum with harmonics,
    rectified-sawtooth buzz, fan-like rumble with a tone."""
    n = round(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    kind = rng.choice(["white", "pink", "brown", "hiss", "hum", "buzz", "fan", "hum+hiss"])
    white = rng.standard_normal(n)

    def coloured(exponent: float) -> np.ndarray:
        spectrum = np.fft.rfft(white)
        f = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 10.0)
        return np.fft.irfft(spectrum / f ** (exponent / 2), n)

    def hum() -> np.ndarray:
        f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.995, 1.005)
        out = np.zeros(n)
        for h in range(1, rng.integers(3, 12)):
            out += rng.uniform(0.05, 1.0) / h * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6))
        return out

    if kind == "white":
        x = white
    elif kind == "pink":
        x = coloured(1.0)
    elif kind == "brown":
        x = coloured(2.0)
    elif kind == "hiss":
        low = rng.uniform(1000, 4000)
        sos = signal.butter(
            4, [low, min(7800, low * rng.uniform(1.5, 4))], "band", fs=SAMPLE_RATE, output="sos"
        )
        x = signal.sosfilt(sos, white)
    elif kind == "hum":
        x = hum() + 0.01 * white
    elif kind == "buzz":
        f0 = rng.choice([50.0, 60.0, 100.0, 120.0])
        x = np.abs(signal.sawtooth(2 * np.pi * f0 * t)) - 0.5
        sos = signal.butter(2, rng.uniform(800, 5000), "low", fs=SAMPLE_RATE, output="sos")
        x = signal.sosfilt(sos, x) + 0.02 * white
    elif kind == "fan":
        sos = signal.butter(2, rng.uniform(150, 600), "low", fs=SAMPLE_RATE, output="sos")
        x = signal.sosfilt(sos, white)
        x = x / np.std(x) + 0.3 * np.sin(2 * np.pi * rng.uniform(80, 400) * t)
    else:
        x = hum()
        x = x / np.std(x) + rng.uniform(0.2, 1.0) * coloured(1.0) / np.std(coloured(1.0))
    return x / max(float(np.std(x)), 1e-12), kind


def synth_silence(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, str]:
    """Digital silence, dither-level noise, or a very quiet noise floor (< -66 dBFS RMS)."""
    n = round(seconds * SAMPLE_RATE)
    kind = rng.choice(["digital", "dither", "floor"])
    if kind == "digital":
        return np.zeros(n), kind
    if kind == "dither":
        return (rng.random(n) - rng.random(n)) / 32768.0, kind  # TPDF dither, one LSB
    level = 10 ** (rng.uniform(-90, SILENCE_CLASS_DBFS) / 20)
    return level * rng.standard_normal(n), kind


# --------------------------------------------------------------------------------------------
# Build


def _package_tag_sources(work: Path, packages: Sequence[str]) -> list[TagSource]:
    sources = []
    for package in packages:
        if package == SOUNDFONT_PACKAGE:
            continue
        for s in package_sources(work, package):
            found = classify_path(package, s.relpath)
            if found is not None:
                sources.append(TagSource(found[0], found[1], package, s.path, s.relpath, s.sha256))
    # Byte-identical files (MegaGlest ships the same loop in many tilesets): keep one.
    unique = {s.sha256: s for s in sorted(sources, key=lambda s: (s.package, s.relpath))[::-1]}
    return sorted(unique.values(), key=lambda s: (s.label, s.group, s.relpath))


def build_tag_corpus(
    out_dir: Path,
    work_dir: Path,
    settings: TagSettings = TagSettings(),
    packages: Sequence[str] = ALLOWLIST,
    progress: ProgressFn | None = None,
) -> dict:
    """Build the labelled tagging corpus into ``out_dir`` (empty or absent); returns a summary."""
    report = progress or (lambda fraction, stage: None)
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    versions = start_build(out_dir, work_dir, packages, report)
    sources = _package_tag_sources(work_dir, packages)
    report(0.05, "espeak-ng")
    # Own folder: corpus.py caches renders by file name, and ours use another seed.
    for s in dedupe(synth_speech(work_dir / "tags", settings.espeak_utterances, settings.seed)):
        voice = s.relpath.split("voice=")[1].split()[0]
        sources.append(
            TagSource("speech", f"espeak-ng:{voice}", s.package, s.path, s.relpath, s.sha256)
        )
    report(0.1, "fluidsynth")
    rendered: list[tuple[str, str, str, np.ndarray]] = []
    sf2 = None
    if SOUNDFONT_PACKAGE in packages:
        sf2 = next((work_dir / "x" / SOUNDFONT_PACKAGE).rglob("*.sf2"))
        rendered = render_gm(work_dir, sf2, settings)

    # Groups and splits: package sources, renders, synthesised noise/silence (own groups).
    groups: dict[str, list[str]] = {}
    for s in sources:
        groups.setdefault(s.label, []).append(s.group)
    for label, group, _, _ in rendered:
        groups.setdefault(label, []).append(group)
    noise_groups = [f"synth:noise/{i}" for i in range(settings.noise_clips)]
    silence_groups = [f"synth:silence/{i}" for i in range(settings.silence_clips)]
    groups.setdefault("noise", []).extend(noise_groups)
    groups["silence"] = silence_groups
    splits = split_groups(groups, settings.val_fraction, settings.heldout_fraction, settings.seed)

    rng = random.Random(f"{settings.seed}/clips")
    nrng = np.random.default_rng(settings.seed)
    clips: list[TagClip] = []
    pool: dict[tuple[str, str], list[np.ndarray]] = {}  # (split, label) -> audio, for mixtures
    counts: dict[str, int] = {}
    skipped: dict[str, str] = {}
    silent: list[str] = []

    def emit(
        label: str,
        split: str,
        piece: np.ndarray,
        package: str,
        source: str,
        group: str,
        start: float,
        sha: str = "",
    ) -> None:
        index = counts.get(label, 0)
        counts[label] = index + 1
        if label == "silence":
            gain = 0.0
        else:
            level = rng.uniform(-38.0, -12.0)
            if np.sqrt(np.mean(piece**2)) < AUDIBLE_RMS:
                # A render can be empty: some GM presets have no samples for part of the
                # range (contrabass, tuba high up). Dropped after its number and level are
                # drawn, so every other clip is the same as in a build that kept it.
                silent.append(source)
                return
            piece, gain = set_level(piece, level)
        name = f"{split}/{label}/{label}-{index:05d}.wav"
        digest = write_wav16(out_dir / name, piece)
        clips.append(
            TagClip(
                name,
                split,
                label,
                package,
                source,
                group,
                round(start, 4),
                round(len(piece) / SAMPLE_RATE, 4),
                round(gain, 2),
                digest,
            )
        )
        if len(pool.setdefault((split, label), [])) < 400:
            pool[(split, label)].append(piece)

    # Package sources: a seeded pick, at most N sources per group, until the class budget.
    by_label: dict[str, list[TagSource]] = {}
    for s in sources:
        by_label.setdefault(s.label, []).append(s)
    total_labels = len(by_label)
    for li, (label, members) in enumerate(sorted(by_label.items())):
        report(0.3 + 0.4 * li / total_labels, f"decode {label}")
        random.Random(f"{settings.seed}/pick/{label}").shuffle(members)
        per_group: dict[str, int] = {}
        budget = settings.clips_per_class
        for s in members:
            if counts.get(label, 0) >= budget:
                break
            if per_group.get(s.group, 0) >= settings.max_sources_per_group:
                continue
            per_group[s.group] = per_group.get(s.group, 0) + 1
            try:
                audio = load_mono_16k(s.path)
            except AudioError as exc:
                skipped[f"{s.package}:{s.relpath}"] = str(exc)[:120]
                continue
            for a, b in clip_spans(len(audio), settings.max_clips_per_source, rng):
                piece = audio[a:b]
                if np.sqrt(np.mean(piece**2)) < AUDIBLE_RMS:  # not this class, silence
                    continue
                emit(
                    label,
                    splits[(label, s.group)],
                    piece,
                    s.package,
                    s.relpath,
                    s.group,
                    a / SAMPLE_RATE,
                    s.sha256,
                )
    report(0.7, "renders")
    for label, group, what, piece in rendered:
        emit(label, splits[(label, group)], piece, SOUNDFONT_PACKAGE, f"{group} {what}", group, 0)
    report(0.75, "noise")
    for group in noise_groups:
        piece, kind = synth_noise(nrng, nrng.uniform(1.0, MAX_CLIP_S))
        emit("noise", splits[("noise", group)], piece, "synth", f"{group} {kind}", group, 0)
    for group in silence_groups:
        piece, kind = synth_silence(nrng, nrng.uniform(1.0, MAX_CLIP_S))
        emit("silence", splits[("silence", group)], piece, "synth", f"{group} {kind}", group, 0)

    report(0.85, "mixtures")
    beds = ("music", "ambience", "noise", "drums", "keys", "guitar")
    for split, count in settings.mixture_counts().items():
        for i in range(count):
            fg_label = "speech" if i % 4 else "effects"
            bed_label = rng.choice(beds) if fg_label == "speech" else "ambience"
            fg_pool, bed_pool = pool.get((split, fg_label)), pool.get((split, bed_label))
            if not fg_pool or not bed_pool:
                continue
            fg, bed = rng.choice(fg_pool), rng.choice(bed_pool)
            if len(bed) < len(fg):
                bed = np.resize(bed, len(fg))  # loop a short bed under the line
            offset = rng.randint(0, len(bed) - len(fg))
            bed = bed[offset : offset + len(fg)]
            snr = rng.uniform(0.0, 15.0)
            bed_rms, fg_rms = np.sqrt(np.mean(bed**2)) + 1e-12, np.sqrt(np.mean(fg**2)) + 1e-12
            mix = fg + bed * (fg_rms / bed_rms) * 10 ** (-snr / 20)
            mix, gain = set_level(mix, rng.uniform(-30.0, -12.0))
            name = f"{split}-mix/mix-{i:05d}.wav"
            digest = write_wav16(out_dir / name, mix)
            clips.append(
                TagClip(
                    name,
                    f"{split}-mix",
                    f"{fg_label};{bed_label}",
                    "mix",
                    f"{fg_label}+{bed_label} snr={snr:.1f}",
                    "",
                    0.0,
                    round(len(mix) / SAMPLE_RATE, 4),
                    round(gain, 2),
                    digest,
                )
            )
    # Last, so every clip above is the same with or without them.
    if sf2 is not None and settings.variants_per_program:
        report(0.9, "timbre variants")
        varied = variant_programs(splits)
        for label, group, what, piece in render_gm_variants(work_dir, sf2, settings, varied):
            emit(
                label, splits[(label, group)], piece, SOUNDFONT_PACKAGE, f"{group} {what}", group, 0
            )
    check_group_split(clips)
    write_manifest(out_dir / "manifest.csv", clips, MANIFEST_FIELDS)
    if silent:
        logger.info("dropped %d silent renders, e.g. %s", len(silent), silent[0])
    summary = _summarise(clips, settings, versions, skipped, silent)
    (out_dir / "tags.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    report(1.0, "done")
    return summary


def _summarise(
    clips: Sequence[TagClip],
    settings: TagSettings,
    versions: dict,
    skipped: dict,
    silent: Sequence[str] = (),
):
    table: dict[str, dict[str, dict[str, float]]] = {}
    for clip in clips:
        cell = table.setdefault(clip.split, {}).setdefault(
            clip.labels, {"clips": 0, "hours": 0.0, "groups": 0}
        )
        cell["clips"] += 1
        cell["hours"] += clip.duration_s / 3600
    for split, labels in table.items():
        for label, cell in labels.items():
            cell["hours"] = round(cell["hours"], 4)
            cell["groups"] = len({c.group for c in clips if c.split == split and c.labels == label})
    return {
        "settings": asdict(settings),
        "classes": CLASSES,
        "packages": versions,
        "splits": table,
        "total_hours": round(sum(c.duration_s for c in clips) / 3600, 4),
        "undecodable_files": len(skipped),
        "undecodable_examples": dict(sorted(skipped.items())[:20]),
        "silent_renders_dropped": len(silent),
        "silent_render_examples": sorted(silent)[:20],
    }
