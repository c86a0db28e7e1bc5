"""Build the default training corpus, reproducibly, from the Debian allowlist plus synthesis.

Pipeline (``maedaw corpus build OUT_DIR``)::

    apt-get download PKG           (allowlisted packages only; no install)
    dpkg-deb -x PKG.deb work/x/PKG  (just unpack)
    find audio by path rules        (each rule gives a category: speech / music / effects)
    + espeak-ng utterances          (speech: varied voices, speeds, pitches)
    + fluidsynth renders            (music: hand-written MIDI phrases on FluidR3_GM)
    dedupe sources by content hash, pick sources to a per-category budget (seeded)
    split held-out BY SOURCE FILE   (seeded; a recording never feeds both splits)
    decode -> mono -> 16 kHz -> slice into <= 10.255 s clips -> 16-bit WAV
    OUT/{train,heldout}/{category}/*.wav + OUT/manifest.csv + OUT/corpus.json

Every random choice comes from one seed, sources are visited in sorted order, and the package
versions and .deb hashes are recorded, so the same mirror snapshot gives the same corpus.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import shutil
import struct
import subprocess
import wave
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maedaw.core.errors import MaedawError
from maedaw.core.util import ProgressFn, file_sha256
from maedaw.dsp.audio_io import AudioError, probe, read_region
from maedaw.dsp.metrics import rms_dbfs
from maedaw.dsp.resample import resample

logger = logging.getLogger(__name__)


class CorpusError(MaedawError):
    """A corpus build that cannot start: its output folder is in use, or a tool is missing."""


SAMPLE_RATE = 16_000
CLIP_SAMPLES = 164_080  # exactly one 1024-frame model window
MIN_CLIP_SAMPLES = 4_000  # 0.25 s: shorter pieces carry almost no patches
SILENCE_DBFS = -60.0  # clips quieter than this (RMS) are dropped
AUDIO_SUFFIXES = (".ogg", ".oga", ".wav", ".flac", ".mp3")
CATEGORIES = ("speech", "music", "effects")

# Path rules per package: first regex (searched in the path inside the package) that matches
# decides the category; no match = not used.
PACKAGE_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "wesnoth-1.16-music": ((r"/music/", "music"),),
    "wesnoth-1.16-data": ((r"/sounds/", "effects"),),
    # Opus only: pedalboard cannot decode it here, so it contributes nothing (recorded).
    "warzone2100-music": ((r"/music/", "music"),),
    "hedgewars-data": (
        (r"/Sounds/voices/", "speech"),
        (r"/Music/", "music"),
        (r"/Sounds/", "effects"),
    ),
    "megaglest-data": ((r"/music/", "music"), (r"/(sounds?|water_sounds)/", "effects")),
    "fillets-ng-data": (
        (r"/music/", "music"),
        (r"/sound/share/", "effects"),
        (r"/sound/.*/en/", "speech"),
    ),
    "fillets-ng-data-cs": ((r"/sound/.*/cs/", "speech"),),
    "sound-theme-freedesktop": ((r"/sounds/", "effects"),),
    # Spoken channel names ("Front left") and one noise file.
    "alsa-utils": ((r"/Noise\.wav$", "effects"), (r"/sounds/alsa/", "speech")),
}
SOUNDFONT_PACKAGE = "fluid-soundfont-gm"
# The packages this corpus is built from (every one is on DEBIAN_ALLOWLIST).
ALLOWLIST = (*PACKAGE_RULES, SOUNDFONT_PACKAGE)
# Every Debian package whose audio the project may train on (DEVELOPERS.md), and nothing
# else: fetch_packages refuses any other name. Each corpus picks its packages from these.
DEBIAN_ALLOWLIST = frozenset(
    {
        *ALLOWLIST,
        "freepats",
        "hydrogen-drumkits",
        "gcompris-qt-data",
        "redeclipse-data",
        "supertuxkart-data",
        "flightgear-data-base",
        "openarena-data",
        "freedroidrpg-data",
        "widelands-data",
        "supertux-data",
        "neverball-data",
        "pingus-data",
        "teeworlds-data",
        "lincity-ng-data",
        "openttd-opensfx",
        "trigger-rally-data",
        "freeciv-data",
        "tuxpaint-data",
        "warzone2100-data",
        "espeak-ng",
    }
)
SYNTH_PACKAGES = ("espeak-ng", "fluidsynth")  # programs used to synthesise


@dataclass(frozen=True)
class CorpusSettings:
    seed: int = 1234
    heldout_fraction: float = 0.1
    # Minutes per category (sum of clip durations). Keeps the corpus a few hours at most.
    budget_minutes: dict[str, float] = field(
        default_factory=lambda: {"speech": 50.0, "music": 60.0, "effects": 40.0}
    )
    max_clips_per_source: int = 6  # long tracks give at most 6 windows (spread over the track)
    espeak_utterances: int = 120
    midi_phrases: int = 36


@dataclass(frozen=True)
class Source:
    """One recording: a file from a package or one we synthesised."""

    package: str
    path: Path  # on disk
    relpath: str  # inside the package (or synth/...)
    category: str
    sha256: str


@dataclass
class Clip:
    file: str  # relative to OUT_DIR
    split: str
    category: str
    package: str
    source: str
    source_sha256: str
    start_s: float
    duration_s: float
    sha256: str


# --------------------------------------------------------------------------------------------
# Pure helpers (tested without network)


def categorize(package: str, relpath: str) -> str | None:
    """Category of a file inside a package by the path rules, or None (not used)."""
    import re

    if not relpath.lower().endswith(AUDIO_SUFFIXES):
        return None
    for pattern, category in PACKAGE_RULES.get(package, ()):
        if re.search(pattern, relpath):
            return category
    return None


def slice_spans(
    num_samples: int, max_clips: int, clip: int = CLIP_SAMPLES
) -> list[tuple[int, int]]:
    """``[start, end)`` clip spans of one recording.

    A recording no longer than ``clip`` is one clip. A longer one gives up to ``max_clips``
    non-overlapping full clips spread evenly over it (middles of tracks, not just intros).
    Pieces shorter than ``MIN_CLIP_SAMPLES`` are never returned.
    """
    if num_samples < MIN_CLIP_SAMPLES:
        return []
    if num_samples <= clip:
        return [(0, num_samples)]
    fits = num_samples // clip
    count = min(fits, max_clips)
    if count == fits:
        starts = [i * clip for i in range(count)]
    else:
        # Evenly spaced starts over [0, num_samples - clip]; spacing >= clip since count < fits.
        room = num_samples - clip
        starts = [round(i * room / (count - 1)) if count > 1 else room // 2 for i in range(count)]
    return [(s, s + clip) for s in starts]


def split_by_source(sources: Sequence[Source], fraction: float, seed: int) -> dict[str, str]:
    """sha256 of each source -> "train" or "heldout", chosen per category with a fixed seed.

    At least one source per category is held out (when it has two or more), so every category
    has held-out numbers. The decision is per source, so all clips of a recording share it.
    """
    result: dict[str, str] = {}
    for category in sorted({s.category for s in sources}):
        members = sorted({s.sha256 for s in sources if s.category == category})
        rng = random.Random(f"{seed}/{category}")
        rng.shuffle(members)
        count = max(1, round(fraction * len(members))) if len(members) > 1 else 0
        for i, digest in enumerate(members):
            result[digest] = "heldout" if i < count else "train"
    return result


def select_sources(
    sources: Sequence[Source],
    durations: dict[str, float],
    budget_minutes: dict[str, float],
    max_clips: int,
    seed: int,
) -> list[Source]:
    """Seeded pick of sources per category until its budget (in usable clip seconds) is met."""
    chosen: list[Source] = []
    for category in sorted({s.category for s in sources}):
        members = sorted((s for s in sources if s.category == category), key=lambda s: s.sha256)
        random.Random(f"{seed}/pick/{category}").shuffle(members)
        budget = 60.0 * budget_minutes.get(category, 0.0)
        used = 0.0
        for source in members:
            if used >= budget:
                break
            seconds = durations[source.sha256]
            usable = min(seconds, max_clips * CLIP_SAMPLES / SAMPLE_RATE)
            chosen.append(source)
            used += usable
    return chosen


def dedupe(sources: Iterable[Source]) -> list[Source]:
    """Drop byte-identical files (games ship the same loop in several folders)."""
    seen: dict[str, Source] = {}
    for source in sorted(sources, key=lambda s: (s.package, s.relpath)):
        seen.setdefault(source.sha256, source)
    return list(seen.values())


def write_wav16(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> str:
    """Mono 16-bit PCM WAV (stdlib: no timestamps, byte-reproducible); returns its sha256."""
    ints = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(ints.tobytes())
    return file_sha256(path)


MANIFEST_FIELDS = tuple(Clip.__dataclass_fields__)


def write_manifest(
    path: Path, clips: Sequence[Any], fields: Sequence[str] = MANIFEST_FIELDS
) -> None:
    """One CSV row per clip (a dataclass with ``file`` and ``fields``), sorted by file."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for clip in sorted(clips, key=lambda c: c.file):
            writer.writerow(asdict(clip))


def read_manifest(path: Path) -> list[Clip]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [
        Clip(**{**row, "start_s": float(row["start_s"]), "duration_s": float(row["duration_s"])})
        for row in rows
    ]


def check_split(clips: Sequence[Clip]) -> None:
    """Raise if any recording has clips in both splits."""
    splits: dict[str, set[str]] = {}
    for clip in clips:
        splits.setdefault(clip.source_sha256, set()).add(clip.split)
    leaked = [digest for digest, names in splits.items() if len(names) > 1]
    if leaked:
        raise ValueError(f"{len(leaked)} recordings appear in both splits, e.g. {leaked[0]}")


# --------------------------------------------------------------------------------------------
# Audio


def load_mono_16k(path: Path) -> np.ndarray:
    """Whole file -> mono float64 at 16 kHz (corpus files are minutes long at most)."""
    region = read_region(path)
    mono = region.samples.mean(axis=0)
    return resample(mono, region.info.sample_rate, SAMPLE_RATE)


# --------------------------------------------------------------------------------------------
# Synthesis: speech (espeak-ng) and music (hand-written MIDI rendered by fluidsynth)

SENTENCES = {
    "en": (
        "The quick brown fox jumps over the lazy dog.",
        "Please bring the blue folder to the second floor before noon.",
        "We recorded the interview in a small room with a wooden floor.",
        "Turn left at the bakery, then walk straight for about five minutes.",
        "Nobody expected the concert to sell out in under an hour.",
        "The weather tomorrow will be cloudy with a chance of light rain.",
        "Could you repeat the last number, I think I missed a digit.",
        "Seven hundred and forty two people signed the petition yesterday.",
        "She opened the window and the sound of traffic filled the kitchen.",
        "If the signal drops again, we will switch to the backup line.",
    ),
    "de": (
        "Der Zug nach Hamburg fährt heute von Gleis sieben ab.",
        "Wir haben das Gespräch gestern Abend noch einmal aufgenommen.",
    ),
    "fr": (
        "Le train pour Lyon partira avec vingt minutes de retard.",
        "Nous avons enregistré cette scène trois fois avant le déjeuner.",
    ),
    "es": (
        "La reunión empieza a las nueve en la sala grande.",
        "Mañana vamos a grabar el segundo episodio del programa.",
    ),
    "it": ("Il concerto di stasera comincia alle otto e mezza.",),
    "cs": ("Zítra ráno pojedeme vlakem do Brna na natáčení.",),
    "pl": ("Jutro rano nagramy kolejny odcinek audycji.",),
    "nl": ("We nemen morgen de laatste scène op in de studio.",),
}
ESPEAK_VOICES = {
    "en": ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp"),
    "de": ("de",),
    "fr": ("fr-fr",),
    "es": ("es", "es-419"),
    "it": ("it",),
    "cs": ("cs",),
    "pl": ("pl",),
    "nl": ("nl",),
}
ESPEAK_VARIANTS = ("", "+m1", "+m3", "+m7", "+f1", "+f2", "+f4", "+croak", "+whisper")


def synth_speech(work: Path, count: int, seed: int) -> list[Source]:
    """espeak-ng utterances of 1-3 sentences with seeded voice, speed, pitch and gaps."""
    out = work / "synth" / "espeak-ng"
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{seed}/espeak")
    langs = sorted(SENTENCES)
    sources = []
    for i in range(count):
        lang = "en" if rng.random() < 0.6 else rng.choice(langs)
        voice = rng.choice(ESPEAK_VOICES[lang]) + rng.choice(ESPEAK_VARIANTS)
        text = " ".join(rng.sample(SENTENCES[lang], k=min(len(SENTENCES[lang]), rng.randint(1, 3))))
        speed, pitch, gap = rng.randint(120, 210), rng.randint(15, 85), rng.randint(2, 12)
        path = out / f"espeak-{i:04d}.wav"
        if not path.exists():
            cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-g", str(gap)]
            subprocess.run([*cmd, "-w", str(path), text], check=True, capture_output=True)
        rel = f"synth/espeak-ng/{path.name} voice={voice} s={speed} p={pitch}"
        sources.append(Source("espeak-ng", path, rel, "speech", file_sha256(path)))
    return sources


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def midi_file(tracks: Sequence[Sequence[tuple[int, bytes]]], ticks_per_beat: int = 480) -> bytes:
    """A format-1 standard MIDI file; each track is ``(delta_ticks, event_bytes)`` pairs."""
    chunks = [b"MThd" + struct.pack(">IHHH", 6, 1, len(tracks), ticks_per_beat)]
    for events in tracks:
        body = b"".join(_varlen(delta) + data for delta, data in events)
        body += _varlen(0) + b"\xff\x2f\x00"  # end of track
        chunks.append(b"MTrk" + struct.pack(">I", len(body)) + body)
    return b"".join(chunks)


# One General MIDI program per family, so the renders span the soundfont.
GM_PROGRAMS = {
    "piano": 0,
    "chromatic": 11,
    "organ": 19,
    "guitar": 25,
    "bass": 33,
    "strings": 48,
    "ensemble": 52,
    "brass": 61,
    "reed": 65,
    "pipe": 73,
    "synth_lead": 81,
    "synth_pad": 89,
}
SCALES = ((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10), (0, 2, 4, 7, 9))


def midi_phrase(rng: random.Random, tpb: int = 480) -> tuple[bytes, str]:
    """A ~10 s phrase: a melody, a bass line and optional drums, seeded."""
    family = rng.choice(sorted(GM_PROGRAMS))
    program = GM_PROGRAMS[family]
    tempo_bpm = rng.choice((72, 90, 108, 120, 140))
    root = rng.randint(52, 64)
    scale = rng.choice(SCALES)
    beats = int(10.5 * tempo_bpm / 60)
    tempo = struct.pack(">I", round(60_000_000 / tempo_bpm))[1:]
    melody: list[tuple[int, bytes]] = [(0, b"\xff\x51\x03" + tempo), (0, bytes((0xC0, program)))]
    t_left = beats * tpb
    while t_left > 0:
        length = min(t_left, rng.choice((tpb // 2, tpb, tpb, 2 * tpb)))
        degree = rng.randint(0, len(scale) * 2 - 1)
        note = root + 12 * (degree // len(scale)) + scale[degree % len(scale)]
        velocity = rng.randint(60, 110)
        melody += [(0, bytes((0x90, note, velocity))), (length, bytes((0x80, note, 0)))]
        t_left -= length
    bass = [(0, bytes((0xC1, rng.choice((32, 33, 38)))))]
    for _ in range(beats // 2):
        note = root - 24 + rng.choice(scale[:5])
        bass += [(0, bytes((0x91, note, 90))), (2 * tpb, bytes((0x81, note, 0)))]
    tracks = [melody, bass]
    if rng.random() < 0.6:
        drums: list[tuple[int, bytes]] = []
        for beat in range(beats):
            hit = 36 if beat % 2 == 0 else 38
            drums += [(0, bytes((0x99, hit, 100))), (0, bytes((0x99, 42, 70)))]
            drums += [(tpb, bytes((0x89, hit, 0))), (0, bytes((0x89, 42, 0)))]
        tracks.append(drums)
    return midi_file(tracks, tpb), f"{family} prog={program} bpm={tempo_bpm}"


def synth_music(work: Path, soundfont: Path, count: int, seed: int) -> list[Source]:
    """Render seeded MIDI phrases with fluidsynth (reverb/chorus off: deterministic output)."""
    if shutil.which("fluidsynth") is None:
        logger.warning("fluidsynth not installed (apt-get install fluidsynth): no MIDI renders")
        return []
    out = work / "synth" / "fluidsynth"
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{seed}/midi")
    sources = []
    for i in range(count):
        data, what = midi_phrase(rng)
        mid, wav = out / f"phrase-{i:04d}.mid", out / f"phrase-{i:04d}.wav"
        mid.write_bytes(data)
        if not wav.exists():
            cmd = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-r", "16000", "-g", "0.6"]
            cmd += ["-F", str(wav), str(soundfont), str(mid)]
            subprocess.run(cmd, check=True, capture_output=True)
        rel = f"synth/fluidsynth/{wav.name} {what}"
        sources.append(Source(SOUNDFONT_PACKAGE, wav, rel, "music", file_sha256(wav)))
    return sources


# --------------------------------------------------------------------------------------------
# Packages


def fetch_packages(work: Path, packages: Sequence[str]) -> dict[str, dict[str, str]]:
    """``apt-get download`` + ``dpkg-deb -x`` each allowlisted package; returns versions/hashes."""
    debs, root = work / "debs", work / "x"
    debs.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)  # dpkg-deb -x creates only the last level
    info: dict[str, dict[str, str]] = {}
    for package in packages:
        if package not in DEBIAN_ALLOWLIST:
            raise ValueError(f"{package} is not on the corpus allowlist")
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            logger.info("downloading %s", package)
            subprocess.run(["apt-get", "download", package], cwd=debs, check=True)
            found = sorted(debs.glob(f"{package}_*.deb"))
        deb = found[-1]
        target = root / package
        if not target.exists():
            subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
        version = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
        ).stdout.strip()
        info[package] = {"version": version, "deb": deb.name, "deb_sha256": file_sha256(deb)}
    return info


def package_sources(work: Path, package: str) -> list[Source]:
    root = work / "x" / package
    sources = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = "/" + path.relative_to(root).as_posix()
        category = categorize(package, rel)
        if category is not None:
            sources.append(Source(package, path, rel, category, file_sha256(path)))
    return sources


def start_build(out_dir: Path, work_dir: Path, packages: Sequence[str], report: ProgressFn) -> dict:
    """The first steps of every corpus build: refuse a non-empty ``out_dir`` (a build never
    mixes with old clips), then download and unpack ``packages``; returns their versions."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise CorpusError(f"{out_dir} is not empty")
    report(0.0, "download")
    return fetch_packages(work_dir, packages)


def build_corpus(
    out_dir: Path,
    work_dir: Path,
    settings: CorpusSettings = CorpusSettings(),
    packages: Sequence[str] = ALLOWLIST,
    progress: ProgressFn | None = None,
) -> dict:
    """Build the corpus into ``out_dir`` (must be empty or absent); returns the summary."""
    report = progress or (lambda fraction, stage: None)
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    versions = start_build(out_dir, work_dir, packages, report)
    sources: list[Source] = []
    unsupported: dict[str, int] = {}
    for package in packages:
        if package != SOUNDFONT_PACKAGE:
            sources += package_sources(work_dir, package)
            # Opus (warzone2100-music ships only Opus) is not decodable by pedalboard here.
            opus = sum(1 for _ in (work_dir / "x" / package).rglob("*.opus"))
            if opus:
                unsupported[package] = opus
    report(0.1, "synthesise")
    sources += synth_speech(work_dir, settings.espeak_utterances, settings.seed)
    if SOUNDFONT_PACKAGE in packages:
        sf2 = next((work_dir / "x" / SOUNDFONT_PACKAGE).rglob("*.sf2"))
        sources += synth_music(work_dir, sf2, settings.midi_phrases, settings.seed)
    sources = dedupe(sources)

    report(0.2, "probe")
    durations: dict[str, float] = {}
    skipped: dict[str, str] = {}
    usable = []
    for source in sources:
        try:
            durations[source.sha256] = probe(source.path).duration
            usable.append(source)
        except AudioError as exc:
            skipped[f"{source.package}:{source.relpath}"] = str(exc).split(": ", 1)[-1][:120]
    if skipped:
        logger.warning("%d files could not be decoded (listed in corpus.json)", len(skipped))
    chosen = select_sources(
        usable, durations, settings.budget_minutes, settings.max_clips_per_source, settings.seed
    )
    splits = split_by_source(chosen, settings.heldout_fraction, settings.seed)

    clips: list[Clip] = []
    silent = 0
    for index, source in enumerate(chosen):
        report(0.25 + 0.75 * index / max(1, len(chosen)), "decode")
        try:
            audio = load_mono_16k(source.path)
        except AudioError as exc:
            skipped[f"{source.package}:{source.relpath}"] = str(exc)[:120]
            continue
        split = splits[source.sha256]
        for start, end in slice_spans(len(audio), settings.max_clips_per_source):
            piece = audio[start:end]
            if rms_dbfs(piece) < SILENCE_DBFS:
                silent += 1
                continue
            name = f"{split}/{source.category}/{source.sha256[:12]}-{start // SAMPLE_RATE:05d}.wav"
            digest = write_wav16(out_dir / name, piece)
            clips.append(
                Clip(
                    file=name,
                    split=split,
                    category=source.category,
                    package=source.package,
                    source=source.relpath,
                    source_sha256=source.sha256,
                    start_s=round(start / SAMPLE_RATE, 4),
                    duration_s=round(len(piece) / SAMPLE_RATE, 4),
                    sha256=digest,
                )
            )
    check_split(clips)
    write_manifest(out_dir / "manifest.csv", clips)
    summary = summarise(clips, settings, versions, skipped, silent)
    summary["unsupported_opus_files"] = unsupported
    (out_dir / "corpus.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    report(1.0, "done")
    return summary


def summarise(
    clips: Sequence[Clip],
    settings: CorpusSettings,
    versions: dict[str, dict[str, str]],
    skipped: dict[str, str],
    silent: int,
) -> dict:
    hours: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    by_package: dict[str, float] = {}
    for clip in clips:
        hours.setdefault(clip.split, {}).setdefault(clip.category, 0.0)
        hours[clip.split][clip.category] += clip.duration_s / 3600.0
        counts.setdefault(clip.split, {}).setdefault(clip.category, 0)
        counts[clip.split][clip.category] += 1
        by_package[clip.package] = by_package.get(clip.package, 0.0) + clip.duration_s / 3600.0
    sources = {
        split: len({c.source_sha256 for c in clips if c.split == split})
        for split in ("train", "heldout")
    }
    return {
        "settings": asdict(settings),
        "packages": versions,
        "synthesised_with": list(SYNTH_PACKAGES),
        "clips": counts,
        "sources": sources,
        "hours": {s: {c: round(h, 4) for c, h in v.items()} for s, v in hours.items()},
        "hours_by_package": {p: round(h, 4) for p, h in sorted(by_package.items())},
        "total_hours": round(sum(c.duration_s for c in clips) / 3600.0, 4),
        "silent_clips_dropped": silent,
        "undecodable_files": len(skipped),
        "undecodable_examples": dict(sorted(skipped.items())[:20]),
        "sample_rate": SAMPLE_RATE,
        "clip_samples": CLIP_SAMPLES,
    }


# --------------------------------------------------------------------------------------------
# Multichannel excerpts (for benchmarks that need the sources' own channels and rates)


def export_multichannel(
    corpus_dir: Path,
    work_dir: Path,
    out_dir: Path,
    split: str = "heldout",
    long_s: float = 20.0,
    excerpt_s: float = 10.0,
    positions: Sequence[float] = (0.3, 0.5, 0.7),
) -> dict[str, int]:
    """The ``split``'s packaged sources (0.5 s or longer) that have two or more *different*
    channels (some channel differs from the first by more than -40 dB of its energy: Vorbis
    stereo of a mono recording does not count), at their own rate and channel count:
    ``OUT/{category}/{package}-{name}.wav`` (float WAV); files longer than ``long_s`` as
    ``excerpt_s`` excerpts starting at ``positions`` of their length. The corpus clips are
    mono 16 kHz; this is what `bench repair`'s one-channel dropouts need.
    Returns the file count per category."""
    from maedaw.dsp.audio_io import SampleFormat, write_stem

    manifest = corpus_dir / "manifest.csv"
    if not manifest.is_file():
        raise AudioError(f"{corpus_dir}: no manifest.csv (not a `maedaw corpus build` folder)")
    if not (work_dir / "x").is_dir():
        raise AudioError(f"{work_dir}: no unpacked packages (x/); pass the build's --work folder")
    clips = read_manifest(manifest)
    sources = sorted({(c.category, c.package, c.source) for c in clips if c.split == split})
    counts: dict[str, int] = {}
    for category, package, source in sources:
        path = work_dir / "x" / package / source.lstrip("/")
        if not path.is_file():
            continue  # synthesised sources have no packaged file
        try:
            region = read_region(path)
        except AudioError as exc:
            logger.info("skipped %s: %s", path, exc)
            continue
        x, rate = region.samples, region.info.sample_rate
        if x.shape[0] < 2 or x.shape[1] < 0.5 * rate:
            continue
        energy = float(np.sum(x[0] ** 2))
        if all(float(np.sum((c - x[0]) ** 2)) <= 1e-4 * energy for c in x[1:]):
            continue
        folder = out_dir / category
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{package}-{Path(source).stem}"
        if x.shape[1] > long_s * rate:
            length = round(excerpt_s * rate)
            pieces = {
                f"{stem}-{i}": x[:, round(p * x.shape[1]) :][:, :length]
                for i, p in enumerate(positions)
            }
        else:
            pieces = {stem: x}
        for name, piece in pieces.items():
            write_stem(folder / f"{name}.wav", piece, rate, SampleFormat.FLOAT32)
            counts[category] = counts.get(category, 0) + 1
    return counts
