"""Session tagger heads, and the vocabulary types tagging, taught tags and the feature space
share.

A *tagger head* is a small calibrated MLP on an encoder's window vectors, stored beside the
models (``tagger-*.json`` + ``.safetensors``, matched by the encoder's model id). The session
vocabulary it is trained on (:data:`CLASSES`, and the level that defines ``silence``) is set
here too: the corpus builder (``maedaw.corpus.tags``) and the head trainer
(``tagger_train``) both read it from this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from maedaw.core.errors import MaedawError
from maedaw.core.util import atomic_path, blas_controller, write_text_atomic

from .registry import BUNDLED_DIR, user_models_dir

TAGGER_FORMAT = "maedaw-tagger"
TAGGER_VERSION = 1

# Class id -> what the editor sees. The order is the head's output order.
CLASSES: dict[str, str] = {
    "speech": "speech / dialogue",
    "drums": "drums / percussion",
    "bass": "bass",
    "guitar": "guitar",
    "keys": "piano / keys",
    "strings": "strings",
    "winds": "brass / winds",
    "synth": "synth",
    "music": "music (mix)",
    "ambience": "ambience / nature",
    "effects": "foley / effects",
    "noise": "noise / hum",
    "silence": "silence",
}
# What the `silence` class means: a clip (window) whose RMS is below this. The tagger applies
# the same definition to the windows it scores (TaggerHead.silence_dbfs). Not corpus.py's
# SILENCE_DBFS, the level under which the pre-training corpus drops a clip.
SILENCE_CLASS_DBFS = -66.0


class TaggingError(MaedawError):
    """Tagging cannot run: no vocabulary for this model, a broken head file, ..."""


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
        with blas_controller().limit(limits=1, user_api="blas"):
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
        # 0644 each: a head is meant to be shared, like a model
        with atomic_path(weights, mode=0o644) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in self.tensors.items()}, str(tmp))
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
        write_text_atomic(meta, json.dumps(document, indent=2, sort_keys=True) + "\n", mode=0o644)
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


@dataclass
class Vocabulary:
    """What one model can say: (kind, names, labels, per-window probability function of the
    window vectors and their levels in dBFS)."""

    kind: str  # "session", "audioset", "taught"
    names: list[str]
    labels: list[str]
    score: Callable[[np.ndarray, np.ndarray | None], np.ndarray]
