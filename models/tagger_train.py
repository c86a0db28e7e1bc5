"""Train, calibrate and score a session tagger head on a corpus from ``maedaw corpus tags``.

``maedaw tags train-head CORPUS --out models/weights/tagger-default``:

1. embed every clip of ``train``, ``val``, ``heldout`` and their ``-mix`` folders with the
   encoder (one window vector per clip: clips are at most one window long);
2. fit a one-hidden-layer MLP with a sigmoid per class (multi-label: mixtures carry two labels)
   on ``train`` + ``val``, full-batch AdamW, fixed epochs and seed. Instruments generalise by
   program, and each program is one group: ``val``'s programs are worth more as training
   data than as a calibration set (held-out top-1 0.877 -> 0.891 on the bundled corpus);
3. calibrate each class by Platt scaling (``sigmoid(a z + b)``) on *cross-fitted* logits:
   the same MLP trained on four fifths of the groups of ``train`` + ``val`` scores the
   fifth it never saw (``GroupKFold``: no recording, voice, unit or GM program on both
   sides), so the calibration sees logits of unseen groups, as tagging will;
4. score ``heldout`` (disjoint from both): top-1 on single-label clips, per-class precision /
   recall at 0.5, average precision, both labels of mixtures found; all of it goes into the
   head's JSON ``info`` and the model card.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from maedaw.core.util import ProgressFn, file_sha256

from .embed import Embedder
from .heads import CLASSES, SILENCE_CLASS_DBFS, TaggerHead, TaggingError

logger = logging.getLogger(__name__)


@dataclass
class LabelledSet:
    vectors: np.ndarray  # (N, D)
    targets: np.ndarray  # (N, C) 0/1
    files: list[str]
    groups: list[str] | None = None  # the corpus's split groups ("" for mixtures)
    levels: np.ndarray | None = None  # (N,) loudest window's RMS, dBFS

    @property
    def single(self) -> np.ndarray:
        """Rows with exactly one label."""
        return self.targets.sum(1) == 1


def embed_corpus(
    corpus: Path,
    embedder: Embedder,
    splits: Sequence[str] = ("train", "val", "heldout"),
    classes: Sequence[str] = tuple(CLASSES),
    progress: ProgressFn | None = None,
) -> dict[str, LabelledSet]:
    """Vectors and multi-hot targets per split (``X-mix`` rows join split ``X``)."""
    if not (corpus / "manifest.csv").is_file():
        raise TaggingError(f"{corpus}: no manifest.csv (not a `maedaw corpus tags` folder)")
    with open(corpus / "manifest.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, LabelledSet] = {}
    done = 0
    for split in splits:
        mine = [r for r in rows if r["split"] in (split, f"{split}-mix")]
        vectors, targets, levels = [], [], []
        for r in mine:
            if progress:
                progress(done / len(rows), f"embed {split}")
            done += 1
            emb = embedder.embed_file(corpus / r["file"], use_cache=False)
            vectors.append(emb.clip)
            levels.append(emb.levels.max())  # silence only if every window is quiet
            target = np.zeros(len(classes), np.float32)
            for label in r["labels"].split(";"):
                target[index[label]] = 1.0
            targets.append(target)
        out[split] = LabelledSet(
            np.stack(vectors),
            np.stack(targets),
            [r["file"] for r in mine],
            [r["group"] for r in mine],
            np.array(levels, np.float32),
        )
    return out


@dataclass(frozen=True)
class ClipRow:
    """One labelled clip of a corpus folder (any layout: the caller picks the rows)."""

    file: str  # relative to the corpus folder
    tags: tuple[str, ...]
    group: str  # what never straddles two folds


def embed_rows(
    root: Path,
    rows: Sequence[ClipRow],
    classes: Sequence[str],
    embedder: Embedder,
    copies: int = 0,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> LabelledSet:
    """Clip vectors and multi-hot targets of ``rows``; with ``copies``, each clip also gives
    that many versions through a random room / EQ / dynamics / noise / codec chain
    (:func:`maedaw.dsp.augment.augment`, seeded per file), in the clip's group. Both go
    through the embedding cache (an augmented version is keyed by the clip's content, the
    seed and its number: the chain is a function of those)."""
    from maedaw.dsp.audio_io import read_region
    from maedaw.dsp.augment import augment

    index = {c: i for i, c in enumerate(classes)}
    vectors, targets, levels, files, groups = [], [], [], [], []
    for n, row in enumerate(rows):
        if progress and n % 20 == 0:
            progress(n / max(1, len(rows)), "embed")
        target = np.zeros(len(classes), np.float32)
        target[[index[t] for t in row.tags if t in index]] = 1.0
        emb = embedder.embed_file(root / row.file)
        found = [(emb.clip, float(emb.levels.max()), row.file)]
        if copies:
            region = read_region(root / row.file)
            if region.info.sample_rate != embedder.sample_rate:
                raise TaggingError(
                    f"{row.file}: augmentation needs {embedder.sample_rate} Hz clips"
                )
            mono = region.samples.mean(axis=0)
            rng = np.random.default_rng([seed, _name_seed(row.file)])
            content = file_sha256(root / row.file)
            for k in range(copies):
                audio, chain = augment(mono, embedder.sample_rate, rng)
                key = f"augment|{content}|{row.file}|{seed}|{k}"
                vector, level = embedder.embed_clip(audio, cache_key=key)
                found.append((vector, level, f"{row.file}#{k} {chain}"))
        for vector, level, name in found:
            vectors.append(vector)
            levels.append(level)
            targets.append(target)
            files.append(name)
            groups.append(row.group)
    return LabelledSet(
        np.stack(vectors), np.stack(targets), files, groups, np.array(levels, np.float32)
    )


def _name_seed(name: str) -> int:
    """A stable number for a file name (seeds its augmentation; ``hash()`` is salted)."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def pooled(*sets: LabelledSet) -> LabelledSet:
    """Several sets as one, rows in order (a row without a group becomes a group of its own)."""
    names = [g for s in sets for g in (s.groups or [""] * len(s.targets))]
    levels = None
    if all(s.levels is not None for s in sets):
        levels = np.concatenate([s.levels for s in sets])
    return LabelledSet(
        np.concatenate([s.vectors for s in sets]),
        np.concatenate([s.targets for s in sets]),
        [f for s in sets for f in s.files],
        [g or f"#row{i}" for i, g in enumerate(names)],
        levels,
    )


def _mlp(dim: int, hidden: int, classes: int) -> nn.Module:
    if hidden == 0:
        return nn.Sequential(nn.Linear(dim, classes))
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, classes)
    )


def fit_mlp(
    x: np.ndarray,
    y: np.ndarray,
    hidden: int = 256,
    epochs: int = 400,
    lr: float = 3e-3,
    weight_decay: float = 1e-2,
    seed: int = 0,
    noise: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Standardise, then train; returns (mean, scale, [(weight, bias) per layer])."""
    torch.manual_seed(seed)
    mean = x.mean(0)
    scale = x.std(0) + 1e-6
    xt = torch.from_numpy((x - mean) / scale).float()
    yt = torch.from_numpy(y).float()
    net = _mlp(x.shape[1], hidden, y.shape[1])
    # Classes are unbalanced (speech / music / effects have many more clips than bass):
    # weight positives so each class counts about the same.
    pos = yt.sum(0).clamp_min(1.0)
    pos_weight = ((len(yt) - pos) / pos).sqrt()
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    net.train()
    for _ in range(epochs):
        opt.zero_grad()
        # Feature noise: a cheap regulariser against memorising the few groups per class.
        loss = loss_fn(net(xt + noise * torch.randn_like(xt)), yt)
        loss.backward()
        opt.step()
        sched.step()
    layers = [
        (m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy())
        for m in net
        if isinstance(m, nn.Linear)
    ]
    return mean.astype(np.float32), scale.astype(np.float32), layers


def platt(logits: np.ndarray, targets: np.ndarray, prior: float = 1e-2) -> tuple[np.ndarray, ...]:
    """Per-class ``a, b`` minimising BCE of ``sigmoid(a z + b)`` on validation data, with a
    small pull towards (1, 0) so a class with few validation positives stays sane."""
    z = torch.from_numpy(logits).double()
    y = torch.from_numpy(targets).double()
    a = torch.ones(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([a, b], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(a * z + b, y, reduction="sum")
        loss = loss / len(z) + prior * ((a - 1) ** 2 + b**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return a.detach().numpy().astype(np.float32), b.detach().numpy().astype(np.float32)


def calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: mean |predicted probability - observed frequency| over
    equal-width probability bins, weighted by the share of predictions in each."""
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(
        sum(
            abs(confidence[index == k].mean() - correct[index == k].mean()) * (index == k).mean()
            for k in range(bins)
            if (index == k).any()
        )
    )


def evaluate_head(head: TaggerHead, data: LabelledSet) -> dict:
    """Held-out metrics: top-1 (single-label rows), per-class P/R at 0.5, AP, mixtures."""
    probs = head.probabilities(data.vectors, data.levels)
    return score_probabilities(head.classes, probs, data.targets)


def score_probabilities(classes: Sequence[str], probs: np.ndarray, y: np.ndarray) -> dict:
    """:func:`evaluate_head`'s metrics for probabilities already computed."""
    from sklearn.metrics import average_precision_score

    single = y.sum(1) == 1
    top1 = float((probs[single].argmax(1) == y[single].argmax(1)).mean())
    predicted = probs >= 0.5
    per_class = {}
    aps = []
    for i, name in enumerate(classes):
        tp = int((predicted[:, i] & (y[:, i] == 1)).sum())
        fp = int((predicted[:, i] & (y[:, i] == 0)).sum())
        fn = int((~predicted[:, i] & (y[:, i] == 1)).sum())
        ap = float(average_precision_score(y[:, i], probs[:, i])) if y[:, i].any() else None
        if ap is not None:
            aps.append(ap)
        single_rows = single & (y[:, i] == 1)
        per_class[name] = {
            "positives": int(y[:, i].sum()),
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
            "ap": ap,
            "top1": float((probs[single_rows].argmax(1) == i).mean())
            if single_rows.any()
            else None,
        }
    mix = ~single
    both = None
    if mix.any():
        top2 = np.argsort(-probs[mix], axis=1)[:, :2]
        both = float(
            np.mean([set(t) == set(np.flatnonzero(r)) for t, r in zip(top2, y[mix], strict=True)])
        )
    ece = calibration_error(probs.ravel(), y.ravel())
    return {
        "clips": len(y),
        "single_label_clips": int(single.sum()),
        "top1": top1,
        "mAP": float(np.mean(aps)),
        "mixtures": int(mix.sum()),
        "mixtures_both_in_top2": both,
        "ece": float(ece),
        "per_class": per_class,
    }


def background_rows(
    data: LabelledSet, columns: Iterable[int], per_class: int, rng: np.random.Generator
) -> np.ndarray:
    """Sorted rows of a sample of up to ``per_class`` single-label clips of each class column:
    varied audio, the negatives of taught tags."""
    picks = []
    for i in columns:
        rows = np.flatnonzero(data.single & (data.targets[:, i] == 1))
        picks += list(rng.choice(rows, min(per_class, len(rows)), replace=False))
    return np.sort(np.array(picks, dtype=np.int64))


def make_head(
    name: str,
    encoder_id: str,
    fitted: tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]],
    calibration: tuple[np.ndarray, np.ndarray] | None = None,
    classes: Sequence[str] = tuple(CLASSES),
    labels: Mapping[str, str] = CLASSES,
) -> TaggerHead:
    """A head from :func:`fit_mlp`'s output for ``classes`` (in its output order), shown to
    the user as ``labels[class]``."""
    mean, scale, layers = fitted
    tensors = {"mean": mean, "scale": scale}
    for i, (w, b) in enumerate(layers):
        tensors[f"w{i}"], tensors[f"b{i}"] = w, b
    classes = list(classes)
    ones, zeros = np.ones(len(classes), np.float32), np.zeros(len(classes), np.float32)
    tensors["calib_a"], tensors["calib_b"] = calibration or (ones, zeros)
    return TaggerHead(name, encoder_id, classes, [labels[k] for k in classes], tensors)


def train_head(
    sets: dict[str, LabelledSet],
    encoder_id: str,
    name: str = "tagger-default",
    hidden: int = 256,
    epochs: int = 400,
    seed: int = 0,
    background_per_class: int = 32,
    folds: int = 5,
    labels: Mapping[str, str] = CLASSES,
) -> TaggerHead:
    """Fit on ``train`` + ``val`` (when there is one), calibrate on cross-fitted logits, score
    ``heldout``. The classes are the keys of ``labels``, in order."""
    from sklearn.model_selection import GroupKFold

    classes = list(labels)
    fitting = [k for k in ("train", "val") if k in sets]
    pool = pooled(*(sets[k] for k in fitting))
    # Cross-fitting on the single-label rows only: a mixture holds clips of two groups, so
    # it could not sit on one side of a fold without leaking the other group across.
    single = np.flatnonzero(pool.single)
    groups = np.asarray(pool.groups)[single]
    cross = np.zeros((len(single), pool.targets.shape[1]), np.float32)
    for fit_rows, score_rows in GroupKFold(folds).split(single, groups=groups):
        rows = single[fit_rows]
        fitted = fit_mlp(pool.vectors[rows], pool.targets[rows], hidden, epochs, seed=seed)
        cross[score_rows] = make_head(name, encoder_id, fitted, None, classes, labels).logits(
            pool.vectors[single[score_rows]]
        )
    a, b = platt(cross, pool.targets[single])
    fitted = fit_mlp(pool.vectors, pool.targets, hidden, epochs, seed=seed)
    head = make_head(name, encoder_id, fitted, (a, b), classes, labels)
    if "silence" in head.classes:
        head.silence_dbfs = SILENCE_CLASS_DBFS
    # Background for taught tags: a fixed-seed sample of single-label clips per class.
    rng = np.random.default_rng(seed)
    picks = background_rows(pool, range(len(head.classes)), background_per_class, rng)
    head.tensors["background"] = pool.vectors[picks].astype(np.float16)
    head.validate(name)
    levels = None if pool.levels is None else pool.levels[single]
    head.info = {
        "hidden": hidden,
        "epochs": epochs,
        "seed": seed,
        "fitted_on": " + ".join(fitting),
        **{f"{k}_clips": len(sets[k].targets) for k in fitting},
        "calibration": f"Platt on {folds}-fold group cross-fitted logits of {' + '.join(fitting)}",
        "crossval": score_probabilities(
            head.classes, head.calibrated(cross, levels), pool.targets[single]
        ),
    }
    if "heldout" in sets:
        head.info["heldout"] = evaluate_head(head, sets["heldout"])
    return head
