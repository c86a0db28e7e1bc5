"""Semantic tags for a region: the bundled session tagger, AudioSet labels, taught tags.

Which vocabulary answers depends on the model:

* a model with a 527-class head (the official AudioSet-finetuned Audio-MAE, imported with
  ``checkpoint.load_official`` and saved to the models folder) tags with its own classes and
  the AudioSet ontology names in ``models/data/audioset_labels.csv``;
* otherwise a *tagger head* (:mod:`heads`) trained for that encoder
  (``models/weights/tagger-*.json``, matched by the encoder's model id) gives the session
  vocabulary (speech, drums, ... silence) with calibrated probabilities; the bundled one
  belongs to ``compact-default``;
* tags the user taught (``tags_user``) are scored on the same embeddings and merged in.

Each window of the region is scored on its own; the region's score for a tag is the highest
window score (a tag applies to a region when it is heard somewhere in it). ``tag_region``
returns plain JSON-able data: the CLI prints it and the daemon's ``tag`` job sends it.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from maedaw.core.util import FractionFn

from .embed import Embedder, Embeddings, load_embedder
from .heads import TaggingError, Vocabulary, find_heads
from .tags_user import TagLibrary

logger = logging.getLogger(__name__)

AUDIOSET_LABELS = Path(__file__).resolve().parent / "data" / "audioset_labels.csv"
AUDIOSET_CLASSES = 527


@lru_cache(maxsize=1)
def audioset_labels() -> tuple[str, ...]:
    """The 527 AudioSet display names in head order."""
    with open(AUDIOSET_LABELS, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if [int(r["index"]) for r in rows] != list(range(AUDIOSET_CLASSES)):
        raise TaggingError(f"{AUDIOSET_LABELS}: expected indices 0..526 in order")
    return tuple(r["display_name"] for r in rows)


def audioset_vocabulary(embedder: Embedder) -> Vocabulary:
    model = embedder.model
    head = model.head
    assert head is not None

    def score(vectors: np.ndarray, levels: np.ndarray | None = None) -> np.ndarray:
        with torch.no_grad():
            logits = head(torch.from_numpy(np.asarray(vectors, np.float32)).to(embedder.device))
        return torch.sigmoid(logits).float().cpu().numpy()

    names = list(audioset_labels())
    return Vocabulary("audioset", names, names, score)


def vocabularies(embedder: Embedder, taught: bool = True) -> list[Vocabulary]:
    """Every vocabulary that applies to this embedder's model."""
    found: list[Vocabulary] = []
    classes = embedder.model.config.num_classes
    if classes == AUDIOSET_CLASSES:
        found.append(audioset_vocabulary(embedder))
    elif classes:
        logger.warning("model has a %d-class head with no label list; ignoring it", classes)
    for head in find_heads(embedder.model_id):
        if head.dim != embedder.dim:
            raise TaggingError(f"tagger {head.name} expects {head.dim}-d vectors")
        found.append(Vocabulary("session", head.classes, head.labels, head.probabilities))
    if taught:
        vocab = TagLibrary.open().vocabulary(embedder)
        if vocab is not None:
            found.append(vocab)
    return found


def no_vocabulary(model_id: str) -> TaggingError:
    return TaggingError(
        f"no tag vocabulary for model {model_id}: no tagger head matches it, it has no "
        "AudioSet head, and no tags were taught (maedaw tags teach NAME FILES...)"
    )


def _ranked(
    names: Sequence[str],
    labels: Sequence[str],
    kinds: Sequence[str],
    scores: np.ndarray,
    top_k: int,
) -> list[dict]:
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [
        {
            "tag": names[i],
            "label": labels[i],
            "score": round(float(scores[i]), 4),
            "source": kinds[i],
        }
        for i in order
    ]


def score_embeddings(
    emb: Embeddings, vocabs: Sequence[Vocabulary], top_k: int = 5, window_top_k: int = 3
) -> dict:
    """Tags for embeddings already computed (the part of :func:`tag_region` after the model)."""
    if not vocabs:
        raise no_vocabulary(emb.model_id)
    names: list[str] = []
    labels: list[str] = []
    kinds: list[str] = []
    columns = []
    for vocab in vocabs:
        probs = np.asarray(vocab.score(emb.windows, emb.levels), np.float64)
        columns.append(probs)
        names += vocab.names
        labels += vocab.labels
        kinds += [vocab.kind] * len(vocab.names)
    window_scores = np.concatenate(columns, axis=1)  # (N windows, tags)
    if not np.all(np.isfinite(window_scores)):
        raise TaggingError("tag scores are not finite (a broken head?)")
    region = window_scores.max(axis=0)
    return {
        "source": emb.source,
        "start": round(emb.start, 4),
        "end": round(emb.end, 4),
        "model_id": emb.model_id,
        "vocabularies": [v.kind for v in vocabs],
        "tags": _ranked(names, labels, kinds, region, top_k),
        "windows": [
            {
                "start": round(float(s), 3),
                "end": round(float(e), 3),
                "tags": _ranked(names, labels, kinds, window_scores[i], window_top_k),
            }
            for i, (s, e) in enumerate(zip(emb.starts, emb.ends, strict=True))
        ],
    }


@lru_cache(maxsize=2)
def _cached_embedder(model: str | None, device: str | None) -> Embedder:
    return load_embedder(model, device)


def tag_region(
    source: str | os.PathLike[str],
    start: float | None = None,
    end: float | None = None,
    model: str | os.PathLike[str] | Embedder | None = None,
    top_k: int = 5,
    *,
    device: str | None = None,
    taught: bool = True,
    use_cache: bool = True,
    progress: FractionFn | None = None,
) -> dict:
    """Tags of ``[start, end)`` seconds of ``source`` (None: the file's ends) as a JSON-able dict:
    ``{"source", "start", "end", "model_id", "vocabularies", "tags": [{"tag", "label", "score",
    "source"}...top_k], "windows": [{"start", "end", "tags": [...]}]}``. Scores are
    probabilities in [0, 1], best first. ``model`` is a model name, id or path (default: the
    bundled one) or a loaded :class:`Embedder`. Raises ``AudioError`` for unusable audio and
    :class:`TaggingError` when the model has nothing to tag with.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if isinstance(model, Embedder):
        embedder = model
    else:
        embedder = _cached_embedder(None if model is None else str(model), device)
    vocabs = vocabularies(embedder, taught)
    emb = embedder.embed_file(source, start, end, use_cache=use_cache, progress=progress)
    return score_embeddings(emb, vocabs, top_k)
