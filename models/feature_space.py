"""The space taught tags and "find similar" compare sounds in.

A clip or window vector from the encoder (``embed.py``) is centred and L2-normalised. When the
model has a session tagger head that ships background vectors (the bundled one does), that
head's hidden layer is appended, centred and L2-normalised too, with equal weight. The hidden
layer was trained to tell sounds apart; the encoder vector keeps the detail that training
threw away (two guitars, two rooms), and it is all there is for sounds unlike the head's
classes. Measured on the tag corpus's held-out split (``maedaw bench tag``, ``maedaw bench
taught``; numbers in ``models/weights/tagger-default.md``):

* 5-shot taught tags, the 13 session classes: 0.70 -> 0.83; 37 held-out sources as tags:
  0.75 -> 0.81; classes the head was *not* trained on (three heads, each fitted without four
  classes): 0.848 -> 0.862 (per fold -0.6, +2.0, +2.8 points);
* the 10 nearest held-out clips: share of the same class 0.73 -> 0.85, of the same source
  0.37 -> 0.44; for classes a head was not trained on, same class 0.733 -> 0.761 (per fold
  +2.1, +2.7, +3.8). (Head v4; v3's numbers are in the card.)

In experiments the hidden layer alone scored higher on the head's own classes and lower on the
others, so both halves are kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .heads import TaggerHead, find_heads

Semantic = Callable[[np.ndarray], np.ndarray]  # vectors (N, D) -> a head's hidden layer (N, H)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)


@dataclass
class FeatureSpace:
    """``vectors (N, D) -> features (N, D [+ H])``: see the module docstring."""

    center: np.ndarray  # (D,)
    semantic: Semantic | None = None
    semantic_center: np.ndarray | None = None  # (H,)

    @classmethod
    def fit(cls, vectors: np.ndarray, semantic: Semantic | None = None) -> FeatureSpace:
        """Centres from ``vectors`` (examples and background; varied audio)."""
        vectors = np.asarray(vectors, np.float32)
        if semantic is None:
            return cls(vectors.mean(axis=0))
        return cls(vectors.mean(axis=0), semantic, semantic(vectors).mean(axis=0))

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, np.float32)
        x = unit_rows(vectors - self.center)
        if self.semantic is None:
            return x
        return np.concatenate([x, unit_rows(self.semantic(vectors) - self.semantic_center)], 1)

    @property
    def dim(self) -> int:
        extra = 0 if self.semantic_center is None else len(self.semantic_center)
        return len(self.center) + extra

    def fingerprint(self) -> str:
        """Changes when the centres (so the background or the head) change."""
        digest = hashlib.sha256(np.ascontiguousarray(self.center, "<f4").tobytes())
        if self.semantic_center is not None:
            digest.update(np.ascontiguousarray(self.semantic_center, "<f4").tobytes())
        return digest.hexdigest()[:16]


def head_inputs(heads: Sequence[TaggerHead]) -> tuple[np.ndarray | None, Semantic | None]:
    """From a model's tagger heads: background vectors and the hidden layer to read (the first
    head that ships background vectors; ``(None, None)`` without one)."""
    for head in heads:
        if head.background is not None:
            return head.background, (head.hidden if head.depth > 1 else None)
    return None, None


def space_for(model_id: str) -> FeatureSpace | None:
    """The space of a model with a tagger head that ships background vectors, else None (then
    similarity is the plain cosine of the encoder vectors)."""
    background, semantic = head_inputs(find_heads(model_id))
    if background is None:
        return None
    return FeatureSpace.fit(background, semantic)
