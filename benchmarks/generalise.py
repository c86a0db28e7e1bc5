"""``maedaw bench generalise CORPUS``: tagging on packages (or sources) the model never met.

On a corpus from ``maedaw corpus build`` (:mod:`maedaw.corpus.broad`) and one of its two
held-out splits (``--split package``: whole packages held out; ``--split source``: whole
groups), this

1. picks a tag-balanced sample of each side (at most N clips per tag, spread round-robin
   over the tag's groups, so a big voice pack or a long album does not fill a tag);
2. embeds it with the model; each training clip also gives ``--copies`` versions through a
   random room / EQ / dynamics / noise / codec chain (:mod:`maedaw.dsp.augment`);
3. trains a tagger head over the vocabulary's tags that have training clips
   (:func:`maedaw.models.tagger_train.train_head`: MLP, cross-fitted Platt calibration);
4. scores the held-out side (real recordings only): **top-1 in family** (the best tag's family
   is one of the clip's families), per family; **ECE** over every (clip, tag) probability;
   the **median score of the true tag** on speech (and on every tag); average precision;
5. a **linear probe** on the embeddings vs **MFCC + logistic regression**, both predicting the
   family, fitted on the same training clips (originals only), scored on the held-out side;
6. **N-shot taught tags** on the held-out side: N clips of each tag (with enough clips in
   two or more groups) teach it, every other clip of those tags is classified.

``--save-head PATH`` writes the head it trained (the shipped ``tagger-default`` is the one
trained on the package-disjoint split, so the card's numbers are those of the shipped file).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from maedaw.core.util import ProgressFn
from maedaw.corpus.broad import BroadClip, read_broad_manifest
from maedaw.corpus.vocabulary import BY_ID, FAMILIES, TAG_IDS, family_of
from maedaw.models.embed import Embedder
from maedaw.models.feature_space import head_inputs
from maedaw.models.tagger_train import (
    ClipRow,
    calibration_error,
    embed_rows,
    score_probabilities,
    train_head,
)

from .tag import BenchDataError, _probe_scores, few_shot_accuracies, mfcc_features

logger = logging.getLogger(__name__)


def balanced(clips: Sequence[BroadClip], per_tag: int, seed: int) -> list[BroadClip]:
    """At most ``per_tag`` clips of every tag, taken round-robin over the tag's groups in a
    seeded order; a clip picked for one tag counts for its other tags too."""
    chosen: dict[str, BroadClip] = {}
    for tag in TAG_IDS:
        by_group: dict[str, list[BroadClip]] = {}
        for clip in clips:
            if tag in clip.tag_list:
                by_group.setdefault(clip.group, []).append(clip)
        rng = random.Random(f"{seed}/{tag}")
        queues = [rng.sample(members, len(members)) for _, members in sorted(by_group.items())]
        rng.shuffle(queues)
        have = sum(1 for c in chosen.values() if tag in c.tag_list)
        while have < per_tag and any(queues):
            for queue in queues:
                if queue and have < per_tag:
                    clip = queue.pop()
                    if clip.file not in chosen:
                        chosen[clip.file] = clip
                        have += 1
    return sorted(chosen.values(), key=lambda c: c.file)


def _rows(clips: Sequence[BroadClip]) -> list[ClipRow]:
    return [ClipRow(c.file, c.tag_list, c.group) for c in clips]


def family_scores(
    classes: Sequence[str], probs: np.ndarray, clips: Sequence[BroadClip]
) -> dict[str, object]:
    """Top-1 in family over all clips and per family; median true-tag score per tag."""
    best = [family_of(classes[k]) for k in probs.argmax(1)]
    hits = np.array([b in c.family_list for b, c in zip(best, clips, strict=True)])
    per_family = {}
    for family in FAMILIES:
        rows = np.array([family in c.family_list for c in clips])
        if rows.any():
            per_family[family] = {"clips": int(rows.sum()), "top1": float(hits[rows].mean())}
    medians = {}
    for k, tag in enumerate(classes):
        rows = np.array([tag in c.tag_list for c in clips])
        if rows.any():
            medians[tag] = float(np.median(probs[rows, k]))
    # Calibration of the answer the user sees first: the best tag's score against how often
    # that tag is right (10 bins). The flat ECE over every (clip, tag) pair is mostly easy
    # negatives near 0 and is reported too, by score_probabilities.
    confidence = probs.max(1)
    right = np.array(
        [classes[k] in c.tag_list for k, c in zip(probs.argmax(1), clips, strict=True)]
    )
    ece_top = calibration_error(confidence, right.astype(np.float64))
    return {
        "top1_family": float(hits.mean()),
        "per_family": per_family,
        "median_true": medians,
        "ece_top1": float(ece_top),
        "top1_tag": float(right.mean()),
    }


def bench_generalise(
    corpus: Path,
    embedder: Embedder,
    split: str = "package",
    per_tag: int = 200,
    heldout_per_tag: int = 120,
    copies: int = 1,
    hidden: int = 256,
    epochs: int = 300,
    shots: int = 5,
    repeats: int = 5,
    seed: int = 0,
    save_head: Path | None = None,
    progress: ProgressFn | None = None,
) -> dict:
    report = progress or (lambda f, s: None)
    corpus = Path(corpus)
    manifest = corpus / "manifest.csv"
    if not manifest.is_file():
        raise BenchDataError(f"{corpus}: no manifest.csv (build one with `maedaw corpus build`)")
    clips = read_broad_manifest(manifest)
    if split not in ("package", "source"):
        raise BenchDataError(f"split must be package or source, not {split!r}")
    train_side = [c for c in clips if c.split(split) == "train"]
    held_side = [c for c in clips if c.split(split) == "heldout" and not c.synthetic]
    train_clips = balanced(train_side, per_tag, seed)
    held_clips = balanced(held_side, heldout_per_tag, seed)
    if not train_clips or not held_clips:
        raise BenchDataError(f"{corpus}: the {split} split has an empty side")
    classes = [t for t in TAG_IDS if any(t in c.tag_list for c in train_clips)]
    labels = {t: BY_ID[t].label for t in classes}

    def stage(start: float, width: float) -> ProgressFn:
        return lambda f, s: report(start + width * f, s)

    train = embed_rows(corpus, _rows(train_clips), classes, embedder, copies, seed, stage(0.0, 0.6))
    held = embed_rows(corpus, _rows(held_clips), classes, embedder, 0, seed, stage(0.6, 0.2))
    report(0.8, "train head")
    name = save_head.name if save_head else "tagger-default"
    head = train_head(
        {"train": train, "heldout": held},
        embedder.model_id,
        name,
        hidden,
        epochs,
        seed,
        labels=labels,
    )
    probs = head.probabilities(held.vectors, held.levels)
    scores = score_probabilities(classes, probs, held.targets)
    families = family_scores(classes, probs, held_clips)
    head.info["split"] = split
    head.info["heldout_family"] = families
    if save_head is not None:
        head.save(save_head)

    report(0.85, "probe vs MFCC")
    family_ids = {f: i for i, f in enumerate(FAMILIES)}
    y_train = np.array([family_ids[c.family_list[0]] for c in train_clips])
    y_held = np.array([family_ids[c.family_list[0]] for c in held_clips])
    originals = np.array(["#" not in f for f in train.files])
    probe = _probe_scores(train.vectors[originals], y_train, held.vectors, len(FAMILIES))
    mfcc_train = np.stack([mfcc_features(corpus / c.file) for c in train_clips])
    mfcc_held = np.stack([mfcc_features(corpus / c.file) for c in held_clips])
    baseline = _probe_scores(mfcc_train, y_train, mfcc_held, len(FAMILIES))

    report(0.95, f"{shots}-shot")
    first_tag = [c.tag_list[0] for c in held_clips]
    teachable = sorted(
        t
        for t in set(first_tag)
        if first_tag.count(t) > shots + 2
        and len({c.group for c, f in zip(held_clips, first_tag, strict=True) if f == t}) > 1
    )
    keep = [i for i, t in enumerate(first_tag) if t in teachable]
    background, semantic = head_inputs([head])
    accuracies = (
        few_shot_accuracies(
            [held.vectors[i][None] for i in keep],
            [first_tag[i] for i in keep],
            background,
            semantic,
            shots,
            repeats,
            seed,
        )
        if len(teachable) > 1
        else []
    )
    report(1.0, "done")
    return {
        "corpus": str(corpus),
        "split": split,
        "model_id": embedder.model_id,
        "heldout_packages": sorted({c.package for c in held_clips}) if split == "package" else None,
        "train_clips": len(train_clips),
        "train_vectors": len(train.targets),
        "augmented_copies": copies,
        "heldout_clips": len(held_clips),
        "classes": classes,
        "top1_family": families["top1_family"],
        "per_family": families["per_family"],
        "median_true_tag": families["median_true"],
        "speech_median": families["median_true"].get("speech"),
        "ece": scores["ece"],
        "ece_top1": families["ece_top1"],
        "top1_tag": families["top1_tag"],
        "mAP": scores["mAP"],
        "top1_tag_single_label": scores["top1"],
        "probe_family_top1": float((probe.argmax(1) == y_held).mean()),
        "mfcc_family_top1": float((baseline.argmax(1) == y_held).mean()),
        "few_shot": {
            "shots": shots,
            "repeats": repeats,
            "tags": teachable,
            "accuracy_mean": float(np.mean(accuracies)) if accuracies else None,
            "accuracy_std": float(np.std(accuracies)) if accuracies else None,
        },
        "crossval": {k: head.info["crossval"][k] for k in ("top1", "mAP", "ece")},
    }
