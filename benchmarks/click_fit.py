"""``maedaw bench click-fit``: fit the click score (:mod:`maedaw.dsp.click_score`) on the corpus.

Material: the source recordings of the corpus's ``train`` rows (real, not synthesised), read at
their own rate and channel count from the folder ``maedaw corpus build`` extracted the Debian
packages into. Held-out packages and sources never appear there; packages named in
``exclude_packages`` are dropped as well (by default hydrogen-drumkits, whose kits the
``bench detect`` folders use for drums), so every folder the score is measured on stays unseen.

For the first ``max_seconds`` of each file, every channel:

* **transients**: every candidate the click test verifies on the clean recording (the
  recordings are assumed clean; a real click in one is a wrong label, rare enough not to
  matter);
* **clicks**: ``clicks_per_file`` copies with one click inserted as ``bench detect`` inserts
  it (1-8 samples, 0.2-0.6 full scale, where the programme is active); the candidate that
  overlaps it is a click.

The logistic fit weighs a transient three times a click (see :meth:`ClickModel.fit`). The
written file carries the parameters and the provenance: files, counts, the excluded packages
and the share of clicks and transients above each sensitivity's bar on this material.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from maedaw.core.util import ProgressFn
from maedaw.dsp.audio_io import AudioError, probe, read_region
from maedaw.dsp.click_score import ClickEvidence, ClickModel
from maedaw.dsp.detect import SENSITIVITIES, DetectConfig, click_evidence
from maedaw.dsp.spans import DamageKind

from .detect import insert_defect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClickFitConfig:
    max_seconds: float = 40.0  # read at most this much of each recording
    clicks_per_file: int = 2  # damaged copies per recording, one click each
    max_files: int | None = None  # a seeded sample of the recordings (None: all)
    exclude_packages: tuple[str, ...] = ("hydrogen-drumkits",)
    seed: int = 0


def training_recordings(manifest: Path, extracted: Path, exclude: tuple[str, ...]) -> list[Path]:
    """The source files of the manifest's real ``train`` rows that exist under ``extracted``
    (``<extracted>/<package>/<path in the package>``), each once, sorted."""
    found: set[Path] = set()
    with manifest.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["role"] != "train" or row["synthetic"] not in ("", "0"):
                continue
            if row["package"] in exclude:
                continue
            path = extracted / row["package"] / row["source"].lstrip("/")
            if path.is_file():
                found.add(path)
    return sorted(found)


def _overlapping(
    candidates: list[tuple[int, int, ClickEvidence]], start: int, end: int
) -> ClickEvidence | None:
    for lo, hi, evidence in candidates:
        if lo < end + 2 and start - 2 < hi:
            return evidence
    return None


def collect(
    paths: list[Path], config: ClickFitConfig, progress: ProgressFn | None = None
) -> tuple[list[ClickEvidence], list[bool], list[int], dict[str, Any]]:
    """Evidence, labels (True: an inserted click) and the index of the recording each came
    from, for ``paths``."""
    rng = np.random.default_rng(config.seed)
    detect_config = DetectConfig()
    evidence: list[ClickEvidence] = []
    labels: list[bool] = []
    origin: list[int] = []
    read = inserted = 0
    for n, path in enumerate(paths):
        if progress:
            progress(n / max(len(paths), 1), path.name)
        try:
            info = probe(path)
            frames = min(info.frames, round(config.max_seconds * info.sample_rate))
            x = read_region(path, 0, frames).samples
        except AudioError as exc:
            log.warning("skipped %s: %s", path, exc)
            continue
        rate = info.sample_rate
        if x.shape[1] < rate // 2:
            continue
        read += 1
        for channel in range(x.shape[0]):
            for _, _, found in click_evidence(x[channel], rate, detect_config):
                evidence.append(found)
                labels.append(False)
                origin.append(n)
        for _ in range(config.clicks_per_file):
            made = insert_defect(DamageKind.CLICK, x, rate, rng)
            if made is None:
                continue
            damaged, (truth,) = made
            inserted += 1
            hit = _overlapping(
                click_evidence(damaged[truth.channel], rate, detect_config), truth.start, truth.end
            )
            if hit is not None:
                evidence.append(hit)
                labels.append(True)
                origin.append(n)
    stats = {
        "recordings": read,
        "clicks_inserted": inserted,
        "clicks_verified": sum(labels),
        "transients": len(labels) - sum(labels),
    }
    return evidence, labels, origin, stats


REGULARISATION: Final = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)  # the C values tried
DEFAULT_C: Final = 0.1  # with a single package there is nothing to leave out


def held_out_loss(
    evidence: list[ClickEvidence], labels: list[bool], groups: list[str], folds: int = 5
) -> dict[float, float]:
    """Per regularisation C: the weighted log loss on packages left out of the fit (grouped
    k-fold, at most ``folds``), which picks C without looking at any benchmark folder. Empty
    with fewer than two packages."""
    from sklearn.metrics import log_loss
    from sklearn.model_selection import GroupKFold

    y = np.asarray(labels, dtype=bool)
    weight = np.where(y, 1.0, 3.0)
    folds = min(folds, len(set(groups)))
    out: dict[float, float] = {}
    if folds < 2:
        return out
    for c in REGULARISATION:
        total = 0.0
        for train, test in GroupKFold(n_splits=folds).split(evidence, y, groups):
            if not 0 < y[train].sum() < train.size or not 0 < y[test].sum() < test.size:
                continue
            model = ClickModel.fit([evidence[i] for i in train], list(y[train]), c=c)
            p = np.array([model.score(evidence[i]) for i in test])
            total += log_loss(y[test], p, sample_weight=weight[test], labels=[False, True])
        out[c] = total / folds
    return out


def above_bars(model: ClickModel, evidence: list[ClickEvidence], labels: list[bool]) -> dict:
    """Per sensitivity (and for a sweep of bars: ``[clicks, transients]``): the share of
    verified clicks and the count of transients scored at or above its click bar."""
    scores = np.array([model.score(e) for e in evidence])
    is_click = np.asarray(labels, dtype=bool)
    out: dict[str, Any] = {
        "sweep": {
            f"{bar:.2f}": [
                round(float((scores[is_click] >= bar).mean()), 4),
                int((scores[~is_click] >= bar).sum()),
            ]
            for bar in np.arange(0.3, 0.96, 0.05)
        }
    }
    for name, sens in SENSITIVITIES.items():
        bar = sens.bars[DamageKind.CLICK]
        out[name] = {
            "bar": bar,
            "clicks_above": round(float((scores[is_click] >= bar).mean()), 4),
            "transients_above": int((scores[~is_click] >= bar).sum()),
        }
    return out


def fit_click_score(
    manifest: Path,
    extracted: Path,
    config: ClickFitConfig | None = None,
    progress: ProgressFn | None = None,
) -> ClickModel:
    """Collect the material, fit the model, and record how (``provenance``)."""
    config = config or ClickFitConfig()
    paths = training_recordings(manifest, extracted, config.exclude_packages)
    if not paths:
        raise ValueError(f"no training recordings of {manifest} under {extracted}")
    if config.max_files is not None and config.max_files < len(paths):
        pick = np.random.default_rng(config.seed).choice(len(paths), config.max_files, False)
        paths = [paths[i] for i in sorted(pick)]
    evidence, labels, origin, stats = collect(paths, config, progress)
    package_of = [p.relative_to(extracted).parts[0] for p in paths]
    packages = sorted(set(package_of))
    losses = held_out_loss(evidence, labels, [package_of[i] for i in origin])
    c = min(losses, key=losses.__getitem__) if losses else DEFAULT_C
    provenance = {
        "made_by": "maedaw bench click-fit",
        "manifest": manifest.name,
        "packages": packages,
        "excluded_packages": list(config.exclude_packages),
        "max_seconds": config.max_seconds,
        "clicks_per_file": config.clicks_per_file,
        "seed": config.seed,
        **stats,
        "c": c,
        "held_out_log_loss": {f"{k:g}": round(v, 5) for k, v in losses.items()},
    }
    model = ClickModel.fit(evidence, labels, c=c, provenance=provenance)
    model.provenance["on_this_material"] = above_bars(model, evidence, labels)
    return model
