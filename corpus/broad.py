"""The broad labelled corpus: every allowlisted package's real audio in the editor's vocabulary.

``maedaw corpus build OUT_DIR`` (issue #20)::

    apt-get download + dpkg-deb -x     every package of DEBIAN_ALLOWLIST with audio (no install)
    extract containers                 zip/pk3/wz, Qt .rcc, .cat, Opus/WavPack/trackers -> WAV
    label by path rules                :mod:`maedaw.corpus.vocabulary` (37 tags in 7 families;
                                       multi-label, parents included; a *group* per file)
    two held-out splits                package-disjoint (whole packages, :func:`package_split`)
                                       and source-disjoint (whole groups, :func:`source_split`),
                                       the same ones ``maedaw corpus survey`` reports
    + synthesis (training only)        espeak-ng speech, fluidsynth GM renders of instruments,
                                       drum kits and ensembles, noise / hum, silence
    decode -> mono -> 16 kHz -> clips  whole model windows (10.255 s) end to end, and the rest
                                       (:func:`window_spans`): all of every recording
    OUT/{role}/{package}/*.wav + OUT/manifest.csv + OUT/corpus.json

A clip's *role* says which training may see it: ``train`` (training in both splits: the
encoder is pre-trained on this folder only, so neither held-out split is ever seen by it),
``heldout-package`` (held out by package only), ``heldout-source`` (by group only),
``heldout-both``. Evaluating the package-disjoint split = scoring ``heldout-package`` +
``heldout-both`` with a head trained on the rest; likewise for the source-disjoint split.
Synthesised audio is training material only: every held-out clip is a real recording.

Real clips keep the level they were mastered at (augmentation varies level at training
time); synthesised ones get a seeded level. Every random choice comes from the seed and
sources are visited in sorted order, so the same packages give byte-identical clips.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maedaw.core.util import ProgressFn, write_json_atomic
from maedaw.corpus.pretrain import (
    DEBIAN_ALLOWLIST,
    SAMPLE_RATE,
    SILENCE_DBFS,
    SOUNDFONT_PACKAGE,
    dedupe,
    load_mono_16k,
    start_build,
    synth_speech,
    write_manifest,
    write_wav16,
)
from maedaw.corpus.survey import (
    Entry,
    collect_entries,
    package_family_hours,
    package_split,
    source_split,
)
from maedaw.corpus.tags import (
    MAX_CLIP_S,
    MIN_CLIP_S,
    TagSettings,
    render_gm,
    set_level,
    synth_noise,
    synth_silence,
)
from maedaw.corpus.vocabulary import FAMILIES, TAG_IDS, expand, family_of
from maedaw.dsp.audio_io import AudioError
from maedaw.dsp.metrics import rms_dbfs

logger = logging.getLogger(__name__)

ROLES = ("train", "heldout-package", "heldout-source", "heldout-both")
SPLITS = ("package", "source")
# Packages without audio of their own: the soundfont is rendered, espeak-ng synthesises.
RENDERED = (SOUNDFONT_PACKAGE, "espeak-ng")


@dataclass(frozen=True)
class BroadSettings:
    seed: int = 1234
    heldout_fraction: float = 0.15  # of the groups of each family (source-disjoint split)
    max_clips_per_file: int = 60  # windows: 10 minutes; a longer recording is sampled
    espeak_utterances: int = 400
    gm_renders_per_program: int = 8
    gm_ensembles: int = 80
    noise_clips: int = 160
    silence_clips: int = 60


@dataclass
class BroadClip:
    file: str  # relative to OUT_DIR
    role: str  # ROLES
    tags: str  # ";"-joined tag ids, parents included
    families: str  # ";"-joined families of the tags
    package: str
    source: str  # path inside the package, or a description of the synthesis
    group: str  # never on both sides of a split
    lang: str
    synthetic: int  # 1: synthesised here (training only)
    start_s: float
    duration_s: float
    sha256: str

    def split(self, kind: str) -> str:
        """ "train" or "heldout" in the package- or source-disjoint split."""
        return "heldout" if self.role in (f"heldout-{kind}", "heldout-both") else "train"

    @property
    def tag_list(self) -> tuple[str, ...]:
        return tuple(self.tags.split(";")) if self.tags else ()

    @property
    def family_list(self) -> tuple[str, ...]:
        return tuple(self.families.split(";")) if self.families else ()


MANIFEST_FIELDS = tuple(BroadClip.__dataclass_fields__)


def role_of(package_held: bool, source_held: bool) -> str:
    return ROLES[int(package_held) + 2 * int(source_held)]


def read_broad_manifest(path: Path) -> list[BroadClip]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    floats, ints = ("start_s", "duration_s"), ("synthetic",)
    return [
        BroadClip(
            **{
                **r,
                **{k: float(r[k]) for k in floats},
                **{k: int(r[k]) for k in ints},
            }
        )
        for r in rows
    ]


def check_roles(clips: Sequence[BroadClip]) -> None:
    """Raise if a group, a recording or a package is on both sides of its split."""
    for kind, key in (("source", "group"), ("source", "source"), ("package", "package")):
        sides: dict[str, set[str]] = {}
        for clip in clips:
            if not clip.synthetic:
                sides.setdefault(getattr(clip, key), set()).add(clip.split(kind))
        leaked = sorted(name for name, s in sides.items() if len(s) > 1)
        if leaked:
            raise ValueError(f"{len(leaked)} {key}s straddle the {kind} split, e.g. {leaked[0]}")
    synthetic_held = [c.file for c in clips if c.synthetic and c.role != "train"]
    if synthetic_held:
        raise ValueError(f"synthesised clips held out, e.g. {synthetic_held[0]}")


def export_folders(
    corpus: Path, out: Path, split: str, side: str, by: str = "family", real_only: bool = True
) -> dict[str, int]:
    """Links to one side of a split in class folders, ``OUT/{family or first tag}/``: the
    layout ``maedaw bench repair --data`` and ``bench tag --data`` read. Returns clips per
    folder. A clip is filed under its first family (or tag) only, so folders do not overlap."""
    if split not in SPLITS or side not in ("train", "heldout") or by not in ("family", "tag"):
        raise ValueError(f"split {split!r} / side {side!r} / by {by!r}")
    counts: dict[str, int] = {}
    for clip in read_broad_manifest(Path(corpus) / "manifest.csv"):
        if clip.split(split) != side or (real_only and clip.synthetic):
            continue
        folder = clip.family_list[0] if by == "family" else clip.tag_list[0]
        link = Path(out) / folder / clip.file.replace("/", "__")
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to((Path(corpus) / clip.file).resolve())
        counts[folder] = counts.get(folder, 0) + 1
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------------------------
# Synthesised training material


@dataclass(frozen=True)
class Synth:
    tags: tuple[str, ...]
    package: str
    source: str
    group: str
    lang: str
    audio: np.ndarray


def synthesise(work: Path, settings: BroadSettings, soundfont: Path | None) -> list[Synth]:
    """espeak-ng speech, GM renders (instruments, drum kits, ensembles), noise, silence."""
    out: list[Synth] = []
    for s in dedupe(synth_speech(work / "broad", settings.espeak_utterances, settings.seed)):
        voice = s.relpath.split("voice=")[1].split()[0]
        lang = voice.split("+")[0].split("-")[0]
        audio = load_mono_16k(s.path)
        out.append(Synth(("speech",), "espeak-ng", s.relpath, f"espeak-ng:{voice}", lang, audio))
    if soundfont is not None:
        gm = TagSettings(
            seed=settings.seed,
            renders_per_program=settings.gm_renders_per_program,
            ensemble_renders=settings.gm_ensembles,
        )
        for label, group, description, audio in render_gm(work / "broad", soundfont, gm):
            out.append(Synth(expand((label,)), SOUNDFONT_PACKAGE, description, group, "", audio))
    rng = np.random.default_rng(settings.seed)
    for i in range(settings.noise_clips):
        audio, kind = synth_noise(rng, float(rng.uniform(2.0, 10.0)))
        out.append(Synth(("noise",), "synth", f"noise {kind}", f"synth:noise/{i}", "", audio))
    for i in range(settings.silence_clips):
        audio, kind = synth_silence(rng, float(rng.uniform(2.0, 10.0)))
        group = f"synth:silence/{i}"
        out.append(Synth(("silence",), "synth", f"silence {kind}", group, "", audio))
    return out


# --------------------------------------------------------------------------------------------
# Build


def window_spans(
    num_samples: int, max_clips: int, rate: int = SAMPLE_RATE
) -> list[tuple[int, int]]:
    """Whole model windows laid end to end over a recording, and the remainder (at least
    0.25 s) as a last, shorter clip: every second of a recording is used, in the windows the
    tagger scores a long file by. A recording longer than ``max_clips`` windows gives
    ``max_clips`` windows spread evenly over it."""
    window, shortest = round(MAX_CLIP_S * rate), round(MIN_CLIP_S * rate)
    starts = list(range(0, num_samples - window + 1, window))
    spans = [(a, a + window) for a in starts]
    rest = starts[-1] + window if starts else 0
    if num_samples - rest >= shortest:
        spans.append((rest, num_samples))
    if len(spans) > max_clips:
        keep = np.linspace(0, len(spans) - 1, max_clips).round().astype(int)
        spans = [spans[k] for k in keep]
    return spans


def audio_packages() -> list[str]:
    """The allowlisted packages whose own files are audio (not the ones rendered from)."""
    return sorted(p for p in DEBIAN_ALLOWLIST if p not in RENDERED)


def build_broad_corpus(
    out_dir: Path,
    work_dir: Path,
    settings: BroadSettings = BroadSettings(),
    packages: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
) -> dict:
    """Build the corpus into ``out_dir`` (empty or absent) from ``packages`` (default: every
    allowlisted package with audio, plus the soundfont for renders); returns the summary."""
    report = progress or (lambda fraction, stage: None)
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    packages = sorted(packages or audio_packages())
    fetch = [*packages, SOUNDFONT_PACKAGE] if SOUNDFONT_PACKAGE not in packages else packages
    versions = start_build(out_dir, work_dir, fetch, report)
    report(0.02, "extract + label")
    entries, extraction = collect_entries(work_dir, [p for p in packages if p not in RENDERED])
    held_packages = package_split(package_family_hours(entries), settings.seed)
    group_split = source_split(entries, settings.heldout_fraction, settings.seed)

    clips: list[BroadClip] = []
    skipped: dict[str, str] = {}
    quiet = 0

    def emit(tags, role, audio, package, source, group, lang, synthetic, start, name) -> None:
        digest = write_wav16(out_dir / name, audio)
        families = dict.fromkeys(family_of(t) for t in tags)
        clips.append(
            BroadClip(
                name,
                role,
                ";".join(tags),
                ";".join(families),
                package,
                source,
                group,
                lang,
                int(synthetic),
                round(start / SAMPLE_RATE, 4),
                round(len(audio) / SAMPLE_RATE, 4),
                digest,
            )
        )

    for index, e in enumerate(sorted(entries, key=lambda e: (e.package, e.relpath))):
        if index % 50 == 0:
            report(0.05 + 0.75 * index / max(1, len(entries)), f"decode {e.package}")
        try:
            audio = load_mono_16k(Path(e.path))
        except AudioError as exc:
            skipped[f"{e.package}:{e.relpath}"] = str(exc).split(": ", 1)[-1][:160]
            continue
        role = role_of(e.package in held_packages, group_split[e.group] == "heldout")
        stem = _stem(e)
        for start, end in window_spans(len(audio), settings.max_clips_per_file):
            piece = audio[start:end]
            if "silence" not in e.tags and rms_dbfs(piece) < SILENCE_DBFS:
                quiet += 1
                continue
            name = f"{role}/{e.package}/{stem}-{start // SAMPLE_RATE:05d}.wav"
            emit(e.tags, role, piece, e.package, e.relpath, e.group, e.lang, False, start, name)

    report(0.8, "synthesise")
    soundfont = next((work_dir / "x" / SOUNDFONT_PACKAGE).rglob("*.sf2"), None)
    level_rng = random.Random(f"{settings.seed}/synth-level")
    for index, s in enumerate(synthesise(work_dir, settings, soundfont)):
        level = level_rng.uniform(-38.0, -12.0)  # drawn for every clip: builds stay aligned
        piece = s.audio[: round(MAX_CLIP_S * SAMPLE_RATE)]
        if "silence" not in s.tags:
            if rms_dbfs(piece) < SILENCE_DBFS:
                quiet += 1  # a GM preset with no samples in part of its range
                continue
            piece, _ = set_level(piece, level)
        name = f"train/synth-{s.package}/{s.tags[0]}-{index:05d}.wav"
        emit(s.tags, "train", piece, s.package, s.source, s.group, s.lang, True, 0, name)

    check_roles(clips)
    write_manifest(out_dir / "manifest.csv", clips, MANIFEST_FIELDS)
    summary = summarise(clips, held_packages, settings, versions, extraction, skipped, quiet)
    write_json_atomic(out_dir / "corpus.json", summary, indent=2, sort_keys=True)
    report(1.0, "done")
    return summary


def _stem(e: Entry) -> str:
    """A short, unique, readable file stem: the file's name and a hash of its path."""
    name = Path(e.relpath).stem[:40]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
    return f"{safe}-{hashlib.sha256(e.relpath.encode()).hexdigest()[:8]}"


def summarise(
    clips: Sequence[BroadClip],
    held_packages: Sequence[str],
    settings: BroadSettings,
    versions: dict,
    extraction: dict[str, dict],
    skipped: dict[str, str],
    quiet: int,
) -> dict:
    def hours(select, key) -> dict[str, float]:
        out: dict[str, float] = {}
        for c in clips:
            if select(c):
                for k in key(c):
                    out[k] = out.get(k, 0.0) + c.duration_s / 3600
        return {k: round(v, 4) for k, v in sorted(out.items())}

    splits = {}
    for kind in SPLITS:
        splits[kind] = {
            side: {
                "clips": sum(1 for c in clips if c.split(kind) == side and not c.synthetic),
                "hours_by_family": hours(
                    lambda c, k=kind, s=side: c.split(k) == s and not c.synthetic,
                    lambda c: c.family_list,
                ),
                "hours_by_tag": hours(
                    lambda c, k=kind, s=side: c.split(k) == s and not c.synthetic,
                    lambda c: c.tag_list,
                ),
            }
            for side in ("train", "heldout")
        }
    return {
        "settings": {k: getattr(settings, k) for k in BroadSettings.__dataclass_fields__},
        "vocabulary": {"tags": list(TAG_IDS), "families": list(FAMILIES)},
        "heldout_packages": list(held_packages),
        "clips": len(clips),
        "real_hours": round(sum(c.duration_s for c in clips if not c.synthetic) / 3600, 3),
        "synthetic_hours": round(sum(c.duration_s for c in clips if c.synthetic) / 3600, 3),
        "hours_by_role": hours(lambda c: True, lambda c: [c.role]),
        "hours_by_package": hours(lambda c: True, lambda c: [c.package]),
        "splits": splits,
        "versions": versions,
        "missing_decoders": {
            p: info["missing_decoders"]
            for p, info in extraction.items()
            if info.get("missing_decoders")
        },
        "undecodable_files": sum(len(info["undecodable"]) for info in extraction.values()),
        "skipped": skipped,
        "quiet_clips_dropped": quiet,
    }
