"""Survey of the real audio the allowlisted packages hold, in the editor's vocabulary.

``survey(work_dir)`` extracts what hides in containers (:mod:`maedaw.corpus.sources`), labels
every readable file by the path rules (:mod:`maedaw.corpus.vocabulary`), and reports:

- per package and per tag: files and hours (``probe`` durations; byte-identical files once);
- per package: audio the rules leave unlabelled (what they miss), what they exclude on
  purpose, and what cannot be decoded, with why;
- an *audit by listening statistics*: for a seeded sample of labelled files per tag, RMS level,
  crest factor, spectral centroid, zero-crossing rate, onset rate and voiced-frame fraction, so
  a tag whose numbers look wrong (footsteps with the centroid of music) stands out;
- two held-out splits with their hours per family: source-disjoint (by group: a voice pack, a
  unit, a kit, a recording) and package-disjoint (:func:`package_split`: whole packages).

``survey_markdown(result)`` renders it as the tables of ``docs/corpus-survey.md``.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from maedaw.core.util import file_sha256
from maedaw.corpus.pretrain import SAMPLE_RATE, load_mono_16k
from maedaw.corpus.sources import extract_package, package_files, unhandled_audio
from maedaw.corpus.tags import split_groups
from maedaw.corpus.vocabulary import FAMILIES, TAG_IDS, family_of, label_path
from maedaw.dsp.audio_io import AudioError, probe
from maedaw.dsp.metrics import rms_dbfs

logger = logging.getLogger(__name__)

AUDIT_SECONDS = 30.0  # the audit listens to the first 30 s of a file
EXAMPLES = 12  # file names listed per package for unlabelled / undecodable audio


@dataclass(frozen=True)
class Entry:
    """One unique labelled file."""

    package: str
    relpath: str
    path: str
    tags: tuple[str, ...]
    group: str
    lang: str
    seconds: float

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(family_of(t) for t in self.tags))


# --------------------------------------------------------------------------------------------
# Listening statistics


def listening_stats(x: np.ndarray, rate: int = SAMPLE_RATE) -> dict[str, float]:
    """Numbers that tell a class apart without listening: level (RMS dBFS), crest factor (dB),
    spectral centroid (Hz), zero-crossing rate (per sample), onsets per second (peaks of
    the positive log-spectral flux) and the fraction of frames that are voiced (sounding
    frames whose normalised autocorrelation peaks above 0.6 at a 60-400 Hz lag)."""
    x = np.asarray(x, dtype=np.float64)
    rms = float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    frame, hop = 512, 256
    padded = np.pad(x, (0, max(0, frame - len(x))))  # a click shorter than one frame
    _, _, spec = signal.stft(padded, fs=rate, nperseg=frame, noverlap=frame - hop, boundary=None)
    mag = np.abs(spec)
    freqs = np.fft.rfftfreq(frame, 1 / rate)
    centroid = float(np.sum(freqs[:, None] * mag) / max(float(np.sum(mag)), 1e-12))
    flux = np.sum(np.maximum(np.diff(np.log1p(100 * mag), axis=1), 0.0), axis=0)
    onsets = 0
    if flux.size > 2 and np.std(flux) > 0:
        peaks, _ = signal.find_peaks(flux, height=np.mean(flux) + 1.5 * np.std(flux), distance=4)
        onsets = len(peaks)
    return {
        "rms_dbfs": round(rms_dbfs(x), 2),
        "crest_db": round(float(20 * np.log10(max(peak, 1e-12) / max(rms, 1e-12))), 2),
        "centroid_hz": round(centroid, 1),
        "zcr": round(float(np.mean(np.abs(np.diff(np.signbit(x).astype(np.int8))))), 4),
        "onsets_per_s": round(onsets / max(len(x) / rate, 1e-9), 3),
        "voiced_fraction": round(voiced_fraction(x, rate), 3),
    }


def voiced_fraction(x: np.ndarray, rate: int = SAMPLE_RATE, frame: int = 640) -> float:
    """Fraction of 40 ms frames (of all frames) with a clear pitch in 60-400 Hz."""
    count = len(x) // frame
    if count == 0:
        return 0.0
    frames = x[: count * frame].reshape(count, frame)
    frames = frames - frames.mean(axis=1, keepdims=True)
    sounding = np.sqrt(np.mean(frames**2, axis=1)) > 10 ** (-50 / 20)
    spectrum = np.fft.rfft(frames, n=2 * frame, axis=1)
    acf = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :frame]
    lo, hi = rate // 400, rate // 60
    strength = acf[:, lo : hi + 1].max(axis=1) / np.maximum(acf[:, 0], 1e-12)
    return float(np.mean(sounding & (strength > 0.6)))


# --------------------------------------------------------------------------------------------
# Splits


def _family_hours(entries: Sequence[Entry]) -> dict[str, float]:
    hours: dict[str, float] = {}
    for e in entries:
        for family in e.families:
            hours[family] = hours.get(family, 0.0) + e.seconds / 3600
    return hours


def package_split(
    hours: Mapping[str, Mapping[str, float]],
    seed: int = 1234,
    target: float = 0.15,
    min_share: float = 0.05,
    max_share: float = 0.35,
) -> list[str]:
    """Whole packages to hold out: ``hours[package][family]`` -> held-out package names.

    Families are visited in a seeded order; one whose held-out share is still under
    ``min_share`` gets the package that brings its share closest to ``target`` while no
    family's share passes ``max_share`` (so each keeps most of its hours in training). A family
    only one package holds cannot be held out and stays in training; one no package fits is
    logged and left short.
    """
    families = sorted({f for per in hours.values() for f, h in per.items() if h > 0})
    totals = {f: sum(per.get(f, 0.0) for per in hours.values()) for f in families}
    rng = random.Random(f"{seed}/package-split")
    order = list(families)
    rng.shuffle(order)
    held: list[str] = []

    def share(chosen: Sequence[str], family: str) -> float:
        return sum(hours[p].get(family, 0.0) for p in chosen) / max(totals[family], 1e-12)

    for family in order:
        holders = sorted(p for p in hours if hours[p].get(family, 0.0) > 0 and p not in held)
        if share(held, family) >= min_share or len(holders) + len(held) < 2:
            continue
        rng.shuffle(holders)  # seeded tie-break among equally good packages
        fits = [p for p in holders if all(share([*held, p], f) <= max_share for f in families)]
        if fits:
            held.append(min(fits, key=lambda p: abs(share([*held, p], family) - target)))
        else:
            logger.info("%s: no package fits a held-out share <= %.2f", family, max_share)
    return sorted(held)


def source_split(entries: Sequence[Entry], fraction: float, seed: int) -> dict[str, str]:
    """group -> "train" / "heldout": :func:`maedaw.corpus.tags.split_groups` with each group
    under the family of its first tag (a group never straddles the splits)."""
    by_family: dict[str, set[str]] = {}
    for e in entries:
        by_family.setdefault(e.families[0], set()).add(e.group)
    splits = split_groups({f: sorted(g) for f, g in by_family.items()}, 0.0, fraction, seed)
    out: dict[str, str] = {}
    for (_, group), split in sorted(splits.items()):
        # split_groups also sets aside a validation group per family: that is training data
        # here (the survey only asks what is held out).
        out.setdefault(group, "heldout" if split == "heldout" else "train")
    return out


def split_hours(entries: Sequence[Entry], split_of: Callable[[Entry], str]) -> dict:
    out: dict[str, dict[str, float]] = {}
    for split in ("train", "heldout"):
        hours = _family_hours([e for e in entries if split_of(e) == split])
        out[split] = {f: round(hours.get(f, 0.0), 3) for f in FAMILIES}
    return out


# --------------------------------------------------------------------------------------------
# The survey


def collect_entries(
    work_dir: Path, packages: Sequence[str] | None = None, extract: bool = True
) -> tuple[list[Entry], dict[str, dict]]:
    """Every unique labelled file of the unpacked packages (``work_dir/x/PACKAGE``; containers
    extracted into ``extracted/`` when ``extract``), and per package what was counted: files,
    duplicates, files excluded on purpose, unlabelled ones (with their hours), undecodable ones
    (with why) and decoders that are missing. Packages are visited in sorted order and a
    byte-identical file is kept once (the first seen), so the result is reproducible."""
    work = Path(work_dir)
    names = sorted(packages or (p.name for p in (work / "x").iterdir() if p.is_dir()))
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    report: dict[str, dict] = {}
    for package in names:
        info: dict = {"files": 0, "labelled": 0, "duplicates": 0, "excluded": 0}
        info["unlabelled_hours"] = 0.0
        info["unlabelled"], info["undecodable"] = [], {}
        if extract:
            extracted = extract_package(work, package)
            info["undecodable"].update(extracted.failed)
            info["missing_decoders"] = extracted.missing_decoders
        for rel in unhandled_audio(work, package):
            info["undecodable"].setdefault(rel, "no decoder for this format")
        for f in package_files(work, package):
            info["files"] += 1
            label = label_path(package, f.relpath)
            if label is not None and label.excluded:
                info["excluded"] += 1
                continue
            if label is None or not label.tags:
                info["unlabelled"].append(f.relpath)
                with contextlib.suppress(AudioError):  # unreadable: counted, without hours
                    info["unlabelled_hours"] += probe(f.path).duration / 3600
                continue
            digest = file_sha256(f.path)
            if digest in seen:
                info["duplicates"] += 1
                continue
            try:
                seconds = probe(f.path).duration
            except AudioError as exc:
                info["undecodable"][f.relpath] = str(exc).split(": ", 1)[-1][:160]
                continue
            seen[digest] = f.relpath
            info["labelled"] += 1
            entries.append(
                Entry(package, f.relpath, str(f.path), label.tags, label.group, label.lang, seconds)
            )
        report[package] = info
    return entries, report


def package_family_hours(entries: Sequence[Entry]) -> dict[str, dict[str, float]]:
    """``hours[package][family]``: what :func:`package_split` chooses from."""
    per_package: dict[str, dict[str, float]] = {}
    for e in entries:
        fam = per_package.setdefault(e.package, {})
        for family in e.families:
            fam[family] = fam.get(family, 0.0) + e.seconds / 3600
    return per_package


def survey(
    work_dir: Path,
    packages: Sequence[str] | None = None,
    audit_per_tag: int = 8,
    seed: int = 1234,
    heldout_fraction: float = 0.15,
    extract: bool = True,
) -> dict:
    """Survey ``work_dir`` (``x/PACKAGE`` unpacked; ``extracted/`` is filled when ``extract``);
    returns a JSON-able dict (see the module docstring)."""
    work = Path(work_dir)
    entries, report = collect_entries(work, packages, extract)

    per_tag: dict[str, dict] = {t: {"files": 0, "hours": 0.0, "packages": {}} for t in TAG_IDS}
    for e in entries:
        for tag in e.tags:
            cell = per_tag[tag]
            cell["files"] += 1
            cell["hours"] += e.seconds / 3600
            cell["packages"][e.package] = cell["packages"].get(e.package, 0.0) + e.seconds / 3600
    per_package = package_family_hours(entries)
    for cell in per_tag.values():
        cell["hours"] = round(cell["hours"], 4)
        cell["packages"] = {p: round(h, 4) for p, h in sorted(cell["packages"].items())}
        cell["groups"] = 0
    for tag in TAG_IDS:
        per_tag[tag]["groups"] = len({e.group for e in entries if tag in e.tags})

    held_packages = package_split(per_package, seed)
    groups = source_split(entries, heldout_fraction, seed)
    audit = audit_tags(entries, audit_per_tag, seed)
    languages: dict[str, float] = {}
    for e in entries:
        if "speech" in e.tags:
            key = e.lang or "unknown"
            languages[key] = round(languages.get(key, 0.0) + e.seconds / 3600, 4)
    return {
        "work_dir": str(work),
        "total_hours": round(sum(e.seconds for e in entries) / 3600, 3),
        "labelled_files": len(entries),
        "unlabelled_hours": round(sum(i["unlabelled_hours"] for i in report.values()), 3),
        "packages": {
            p: {
                **{
                    k: v
                    for k, v in info.items()
                    if k not in ("unlabelled", "undecodable", "unlabelled_hours")
                },
                "hours": round(sum(e.seconds for e in entries if e.package == p) / 3600, 4),
                "hours_by_family": {f: round(h, 4) for f, h in per_package.get(p, {}).items()},
                "unlabelled_count": len(info["unlabelled"]),
                "unlabelled_hours": round(info["unlabelled_hours"], 4),
                "unlabelled_examples": info["unlabelled"][:EXAMPLES],
                "undecodable_count": len(info["undecodable"]),
                "undecodable": dict(sorted(info["undecodable"].items())[:EXAMPLES]),
            }
            for p, info in report.items()
        },
        "tags": per_tag,
        "speech_hours_by_language": dict(sorted(languages.items())),
        "audit": audit,
        "splits": {
            "package_disjoint": {
                "heldout_packages": held_packages,
                "hours": split_hours(
                    entries, lambda e: "heldout" if e.package in held_packages else "train"
                ),
            },
            "source_disjoint": {
                "heldout_fraction": heldout_fraction,
                "hours": split_hours(entries, lambda e: groups[e.group]),
            },
        },
        "entries": [asdict(e) for e in entries],
    }


def audit_tags(entries: Sequence[Entry], per_tag: int, seed: int) -> dict[str, dict]:
    """Listening statistics of a seeded sample of files per tag: the per-file numbers and
    their medians."""
    out: dict[str, dict] = {}
    for tag in TAG_IDS:
        members = sorted((e for e in entries if tag in e.tags), key=lambda e: e.relpath)
        random.Random(f"{seed}/audit/{tag}").shuffle(members)
        rows = []
        for e in members[:per_tag]:
            try:
                x = load_mono_16k(Path(e.path))[: round(AUDIT_SECONDS * SAMPLE_RATE)]
            except AudioError as exc:
                logger.info("audit skipped %s: %s", e.relpath, exc)
                continue
            rows.append({"package": e.package, "file": e.relpath, **listening_stats(x)})
        keys = ("rms_dbfs", "crest_db", "centroid_hz", "zcr", "onsets_per_s", "voiced_fraction")
        medians = (
            {k: round(float(np.median([r[k] for r in rows])), 3) for k in keys} if rows else {}
        )
        out[tag] = {"n": len(rows), "median": medians, "files": rows}
    return out


# --------------------------------------------------------------------------------------------
# Markdown


def survey_markdown(result: dict) -> str:
    """The survey's tables (hours per tag, per package, audit medians, both splits)."""
    lines = [
        f"Total labelled real audio: **{result['total_hours']:.2f} h** in "
        f"{result['labelled_files']} unique files; audio the rules leave unlabelled: "
        f"{result['unlabelled_hours']:.2f} h.",
        "",
    ]
    lines += ["### Hours per tag", "", "| tag | family | files | groups | hours | packages |"]
    lines += ["|---|---|---:|---:|---:|---|"]
    for tag, cell in result["tags"].items():
        top = sorted(cell["packages"].items(), key=lambda kv: -kv[1])[:4]
        where = ", ".join(f"{p} {h:.2f}" for p, h in top)
        lines.append(
            f"| `{tag}` | {family_of(tag)} | {cell['files']} | {cell['groups']} "
            f"| {cell['hours']:.3f} | {where} |"
        )
    lines += ["", "### Speech hours by language", ""]
    lines += [", ".join(f"{k}: {v:.2f} h" for k, v in result["speech_hours_by_language"].items())]
    lines += ["", "### Per package", ""]
    lines += [
        "| package | audio files | labelled | dup. | excluded | unlabelled | undecodable "
        "| hours | unlabelled h | examples of unlabelled |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p, info in result["packages"].items():
        examples = " ".join(e.rsplit("/", 1)[-1] for e in info["unlabelled_examples"][:6])
        lines.append(
            f"| {p} | {info['files']} | {info['labelled']} | {info['duplicates']} "
            f"| {info['excluded']} | {info['unlabelled_count']} | {info['undecodable_count']} "
            f"| {info['hours']:.3f} | {info['unlabelled_hours']:.3f} | {examples} |"
        )
    undecodable = [
        f"- {p}: {rel} — {why}"
        for p, info in result["packages"].items()
        for rel, why in info["undecodable"].items()
    ]
    lines += ["", "### Undecodable / unhandled", "", *(undecodable or ["(none)"])]
    lines += ["", "### Audit by listening statistics (medians of a seeded sample per tag)", ""]
    lines += ["| tag | n | RMS dBFS | crest dB | centroid Hz | ZCR | onsets/s | voiced |"]
    lines += ["|---|---:|---:|---:|---:|---:|---:|---:|"]
    for tag, cell in result["audit"].items():
        m = cell["median"]
        if not m:
            lines.append(f"| `{tag}` | 0 | | | | | | |")
            continue
        lines.append(
            f"| `{tag}` | {cell['n']} | {m['rms_dbfs']:.1f} | {m['crest_db']:.1f} "
            f"| {m['centroid_hz']:.0f} | {m['zcr']:.3f} | {m['onsets_per_s']:.2f} "
            f"| {m['voiced_fraction']:.2f} |"
        )
    splits = result["splits"]
    lines += ["", "### Splits: hours per family", ""]
    held = ", ".join(splits["package_disjoint"]["heldout_packages"]) or "(none)"
    lines += [f"Package-disjoint held-out packages: {held}", ""]
    lines += [
        "| family | pkg-disjoint train | pkg-disjoint held-out | src-disjoint train "
        "| src-disjoint held-out |",
        "|---|---:|---:|---:|---:|",
    ]
    pkg, src = splits["package_disjoint"]["hours"], splits["source_disjoint"]["hours"]
    for f in FAMILIES:
        lines.append(
            f"| {f} | {pkg['train'][f]:.2f} | {pkg['heldout'][f]:.2f} "
            f"| {src['train'][f]:.2f} | {src['heldout'][f]:.2f} |"
        )
    return "\n".join(lines) + "\n"
