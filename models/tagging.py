"""Semantic tags for a region: the bundled session tagger, AudioSet labels, taught tags.

Which vocabulary answers depends on the model:

* a model with a 527-class head (the official AudioSet-finetuned Audio-MAE, imported with
  ``checkpoint.load_official`` and saved to the models folder) tags with its own classes and
  the AudioSet ontology names in ``models/data/audioset_labels.csv``;
* otherwise a *tagger head* trained for that encoder (``models/weights/tagger-*.json``, matched
  by the encoder's model id) gives the session vocabulary (speech, drums, ... silence) with
  calibrated probabilities; the bundled one belongs to ``compact-default``;
* tags the user taught (``tags_user``) are scored on the same embeddings and merged in.

Each window of the region is scored on its own; the region's score for a tag is the highest
window score (a tag applies to a region when it is heard somewhere in it). ``tag_region``
returns plain JSON-able data: the CLI prints it and the daemon's ``tag`` job sends it.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from threadpoolctl import ThreadpoolController

from maedaw.core.errors import MaedawError

from .embed import Embedder, Embeddings, load_embedder
from .registry import BUNDLED_DIR, user_models_dir

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _blas_controller() -> ThreadpoolController:
    """Finding the loaded BLAS libraries takes milliseconds: do it once per process."""
    return ThreadpoolController()


AUDIOSET_LABELS = Path(__file__).resolve().parent / "data" / "audioset_labels.csv"
AUDIOSET_CLASSES = 527
TAGGER_FORMAT = "maedaw-tagger"
TAGGER_VERSION = 1


class TaggingError(MaedawError):
    """Tagging cannot run: no vocabulary for this model, a broken head file, ..."""


@lru_cache(maxsize=1)
def audioset_labels() -> tuple[str, ...]:
    """The 527 AudioSet display names in head order."""
    with open(AUDIOSET_LABELS, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if [int(r["index"]) for r in rows] != list(range(AUDIOSET_CLASSES)):
        raise TaggingError(f"{AUDIOSET_LABELS}: expected indices 0..526 in order")
    return tuple(r["display_name"] for r in rows)


# --------------------------------------------------------------------------------------------
# Tagger heads


@dataclass
class TaggerHead:
    """A small MLP on standardised window vectors with per-class Platt calibration.

    ``probabilities(x) = sigmoid(a * logit(x) + b)``; ``a``, ``b`` fitted on logits of
    recordings (voices, instruments, units) the fitted network never saw.

    ``silence_dbfs``: a head with a ``silence`` class may carry the level below which its
    corpus *defined* a window as silence. Such windows are silence and nothing else,
    whatever the network says: digital silence is far outside the audio it learnt from (the
    v2 head called two digital-silence clips "brass / winds" at 0.84).
    """

    name: str
    encoder_id: str  # model id of the encoder whose embeddings it reads
    classes: list[str]
    labels: list[str]  # display names
    tensors: dict[str, np.ndarray]  # mean, scale, w0, b0[, w1, b1 ...], calib_a, calib_b
    info: dict[str, Any] = field(default_factory=dict)  # training data, metrics (the card)
    silence_dbfs: float | None = None

    @property
    def dim(self) -> int:
        return int(self.tensors["mean"].shape[0])

    @property
    def background(self) -> np.ndarray | None:
        """Window vectors of varied training audio: negatives for taught tags."""
        return self.tensors.get("background")

    @property
    def depth(self) -> int:
        """Number of linear layers."""
        layer = 0
        while f"w{layer}" in self.tensors:
            layer += 1
        return layer

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        return self._forward(vectors, self.depth)

    def hidden(self, vectors: np.ndarray) -> np.ndarray:
        """The last hidden layer's activations ``(N, hidden)``: what the network learnt to
        tell sounds apart by. Taught tags read it next to the encoder vector."""
        if self.depth < 2:
            raise TaggingError(f"tagger head {self.name} is linear: it has no hidden layer")
        return self._forward(vectors, self.depth - 1)

    def _forward(self, vectors: np.ndarray, layers: int) -> np.ndarray:
        """The first ``layers`` linear layers, ReLU between them (and after the last of them
        when it is not the output layer)."""
        depth = self.depth
        x = (np.asarray(vectors, np.float32) - self.tensors["mean"]) / self.tensors["scale"]
        # One BLAS thread: these products are tiny, and a multi-threaded OpenBLAS leaves its
        # workers spinning afterwards, fighting torch's threads for the cores. Measured on
        # the two-core machine (640 clips embedded and tagged): 73x real time with the
        # default pool, 272x with this limit.
        with _blas_controller().limit(limits=1, user_api="blas"):
            for layer in range(layers):
                x = x @ self.tensors[f"w{layer}"].T + self.tensors[f"b{layer}"]
                if layer + 1 < depth:
                    x = np.maximum(x, 0.0)
        return x

    def probabilities(self, vectors: np.ndarray, levels: np.ndarray | None = None) -> np.ndarray:
        """Calibrated ``(N, classes)``; ``levels``: each window's dBFS (see ``silence_dbfs``)."""
        return self.calibrated(self.logits(vectors), levels)

    def calibrated(self, logits: np.ndarray, levels: np.ndarray | None = None) -> np.ndarray:
        """:meth:`probabilities` from logits already computed."""
        z = self.tensors["calib_a"] * logits + self.tensors["calib_b"]
        probs = 1.0 / (1.0 + np.exp(-z))
        if levels is not None and self.silence_dbfs is not None:
            quiet = np.asarray(levels) < self.silence_dbfs
            probs[quiet] = 0.0
            probs[quiet, self.classes.index("silence")] = 1.0
        return probs

    def save(self, path: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``NAME.safetensors`` + ``NAME.json`` (temp name + rename each)."""
        stem = Path(path).with_suffix("")
        weights, meta = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
        stem.parent.mkdir(parents=True, exist_ok=True)
        tmp = weights.with_name(f".{weights.name}.tmp")
        save_file({k: np.ascontiguousarray(v) for k, v in self.tensors.items()}, str(tmp))
        os.chmod(tmp, 0o644)  # a head is meant to be shared, like a model
        os.replace(tmp, weights)
        document = {
            "format": TAGGER_FORMAT,
            "format_version": TAGGER_VERSION,
            "name": self.name,
            "encoder_id": self.encoder_id,
            "weights_file": weights.name,
            "classes": [
                {"id": c, "label": lab} for c, lab in zip(self.classes, self.labels, strict=True)
            ],
            "info": self.info,
        }
        if self.silence_dbfs is not None:
            document["silence_dbfs"] = self.silence_dbfs
        tmp = meta.with_name(f".{meta.name}.tmp")
        tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, meta)
        return weights, meta

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TaggerHead:
        meta = Path(path).with_suffix(".json")
        try:
            document = json.loads(meta.read_text(encoding="utf-8"))
            if document.get("format") != TAGGER_FORMAT:
                raise TaggingError(f"{meta}: not a tagger head")
            if document.get("format_version") != TAGGER_VERSION:
                raise TaggingError(f"{meta}: unsupported version {document.get('format_version')}")
            tensors = load_file(str(meta.with_name(document["weights_file"])))
            classes = [c["id"] for c in document["classes"]]
            labels = [c["label"] for c in document["classes"]]
        except TaggingError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TaggingError(f"{meta}: cannot read tagger head: {exc}") from exc
        head = cls(
            document["name"],
            document["encoder_id"],
            classes,
            labels,
            tensors,
            document.get("info", {}),
            document.get("silence_dbfs"),
        )
        head.validate(str(meta))
        return head

    def validate(self, where: str) -> None:
        need = {"mean", "scale", "w0", "b0", "calib_a", "calib_b"}
        missing = need - set(self.tensors)
        if missing:
            raise TaggingError(f"{where}: missing tensors {sorted(missing)}")
        try:
            out = self.logits(np.zeros((1, self.dim), np.float32))
        except ValueError as exc:
            raise TaggingError(f"{where}: layer shapes do not chain: {exc}") from exc
        if out.shape[1] != len(self.classes) or self.tensors["calib_a"].shape != (
            len(self.classes),
        ):
            raise TaggingError(f"{where}: {out.shape[1]} outputs for {len(self.classes)} classes")
        if self.silence_dbfs is not None and (
            "silence" not in self.classes or not isinstance(self.silence_dbfs, int | float)
        ):
            raise TaggingError(f"{where}: silence_dbfs needs a numeric level and a silence class")


def find_heads(encoder_id: str) -> list[TaggerHead]:
    """Tagger heads for an encoder: bundled ones first, then the user's models folder."""
    heads = []
    for folder in (BUNDLED_DIR, user_models_dir()):
        if not folder.is_dir():
            continue
        for meta in sorted(folder.glob("tagger-*.json")):
            try:
                document = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if document.get("format") == TAGGER_FORMAT and document.get("encoder_id") == encoder_id:
                heads.append(TaggerHead.load(meta))
    return heads


# --------------------------------------------------------------------------------------------
# Scoring


@dataclass
class Vocabulary:
    """What one model can say: (kind, names, labels, per-window probability function of the
    window vectors and their levels in dBFS)."""

    kind: str  # "session", "audioset", "taught"
    names: list[str]
    labels: list[str]
    score: Callable[[np.ndarray, np.ndarray | None], np.ndarray]


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
        from .tags_user import TagLibrary

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
    progress: Callable[[float], None] | None = None,
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
