"""Tags the user teaches from a few examples (``maedaw tags teach NAME FILES...``).

The library is one JSON file (``<user data dir>/maedaw/tags.json``; ``MAEDAW_DATA_DIR``
overrides the folder), rewritten atomically (temp file + rename). Per tag it keeps the example
files (path, sha256, region) and, per encoder model id, the window vectors of those examples
(float16, base64), so tagging never re-reads the examples; a model the examples were not
embedded with re-embeds them from their files when it is first used.

Scoring is a linear probe per tag: logistic regression (balanced class weights), the tag's
example windows against negatives = the tagger head's background vectors (varied training
audio, shipped with the bundled head) plus the other taught tags' examples, in the
:mod:`feature_space` (the encoder vector and the head's hidden layer, each centred and
L2-normalised). A lone tag on a model without background vectors falls back to cosine
similarity to the examples' mean (prototype), squashed to (0, 1).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import numpy as np
from platformdirs import user_data_dir

from maedaw.core.errors import MaedawError
from maedaw.core.util import ProgressFn, file_sha256, write_json_atomic

from .embed import Embedder
from .feature_space import FeatureSpace, Semantic, head_inputs, unit_rows
from .heads import Vocabulary, find_heads

logger = logging.getLogger(__name__)

LIBRARY_FORMAT = "maedaw-tags"
LIBRARY_VERSION = 1
_NAME = re.compile(r"^[^\x00-\x1f/\\]{1,64}$")


class TagLibraryError(MaedawError):
    """A tag name, example or library file that cannot be used."""


def library_path() -> Path:
    root = os.environ.get("MAEDAW_DATA_DIR")
    return (Path(root) if root else Path(user_data_dir("maedaw"))) / "tags.json"


def _encode(vectors: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vectors, "<f2").tobytes()).decode("ascii")


def _decode(text: str, dim: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), "<f2").astype(np.float32).reshape(-1, dim)


# --------------------------------------------------------------------------------------------
# The probe (also used by `maedaw bench tag` for the 5-shot numbers)


@dataclass
class TaughtModel:
    """Per-tag linear scores on the feature space (or prototypes as a fallback)."""

    names: list[str]
    space: FeatureSpace
    weights: np.ndarray  # (T, F)
    bias: np.ndarray  # (T,)
    prototype: bool = False  # True: cosine to prototypes, not a fitted probe

    def probabilities(self, vectors: np.ndarray, levels: np.ndarray | None = None) -> np.ndarray:
        """``(N, tags)``; ``levels`` is not used: a taught tag is whatever its examples are,
        at whatever level they were recorded."""
        z = self.space(vectors) @ self.weights.T + self.bias
        return 1.0 / (1.0 + np.exp(-z))


def fit_tags(
    examples: Mapping[str, np.ndarray],
    background: np.ndarray | None = None,
    c: float = 1.0,
    semantic: Semantic | None = None,
) -> TaughtModel:
    """One probe per tag: its windows vs background and the other tags' windows.

    ``semantic``: a tagger head's :meth:`~heads.TaggerHead.hidden` for these vectors; the
    probes then read it too (:mod:`feature_space`)."""
    from sklearn.linear_model import LogisticRegression

    names = sorted(examples)
    if not names:
        raise TagLibraryError("no tags to fit")
    pool = np.concatenate(
        [examples[n] for n in names] + ([background] if background is not None else [])
    )
    has_negatives = (background is not None and len(background) > 0) or len(names) > 1
    if not has_negatives:
        # Prototype: cos = 1 at the mean of the examples; 0.5 at the loosest example - 0.1.
        space = FeatureSpace.fit(pool)
        x = space(examples[names[0]])
        proto = unit_rows(x.mean(axis=0, keepdims=True))[0]
        threshold = float((x @ proto).min()) - 0.1
        scale = 20.0
        return TaughtModel(
            names, space, (scale * proto)[None, :], np.array([-scale * threshold]), True
        )
    space = FeatureSpace.fit(pool, semantic)
    features = {n: space(examples[n]) for n in names}
    background_x = space(background) if background is not None else None
    weights, bias = [], []
    for name in names:
        negatives = [features[n] for n in names if n != name]
        if background_x is not None:
            negatives.append(background_x)
        negatives_x = np.concatenate(negatives)
        x = np.concatenate([features[name], negatives_x])
        y = np.r_[np.ones(len(features[name])), np.zeros(len(negatives_x))]
        probe = LogisticRegression(C=c, class_weight="balanced", max_iter=1000)
        probe.fit(x, y)
        weights.append(probe.coef_[0].astype(np.float32))
        bias.append(float(probe.intercept_[0]))
    return TaughtModel(names, space, np.stack(weights), np.array(bias, np.float32))


# --------------------------------------------------------------------------------------------
# The library


@dataclass
class TaughtTag:
    name: str
    created: str
    examples: list[dict]  # {"path", "sha256", "start", "end"}
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # model id -> (n, D)

    def to_json(self) -> dict:
        return {
            "created": self.created,
            "examples": self.examples,
            "vectors": {
                mid: {"dim": int(v.shape[1]), "count": int(v.shape[0]), "f16": _encode(v)}
                for mid, v in sorted(self.vectors.items())
            },
        }

    @classmethod
    def from_json(cls, name: str, data: dict) -> TaughtTag:
        vectors = {
            mid: _decode(v["f16"], int(v["dim"])) for mid, v in data.get("vectors", {}).items()
        }
        return cls(name, data["created"], list(data["examples"]), vectors)


class TagLibrary:
    """The user's taught tags, one JSON file."""

    def __init__(self, path: Path, tags: dict[str, TaughtTag] | None = None) -> None:
        self.path = path
        self.tags: dict[str, TaughtTag] = tags or {}

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None) -> TagLibrary:
        p = Path(path) if path else library_path()
        if not p.exists():
            return cls(p)
        try:
            document = json.loads(p.read_text(encoding="utf-8"))
            if document.get("format") != LIBRARY_FORMAT:
                raise TagLibraryError(f"{p}: not a maedaw tag library")
            if document.get("format_version") != LIBRARY_VERSION:
                raise TagLibraryError(f"{p}: unsupported version {document.get('format_version')}")
            tags = {n: TaughtTag.from_json(n, d) for n, d in document["tags"].items()}
        except TagLibraryError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TagLibraryError(f"{p}: unreadable tag library: {exc}") from exc
        return cls(p, tags)

    def save(self) -> None:
        document = {
            "format": LIBRARY_FORMAT,
            "format_version": LIBRARY_VERSION,
            "tags": {n: t.to_json() for n, t in sorted(self.tags.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # 0600: what a user taught (file paths of their sessions) is theirs alone
        write_json_atomic(self.path, document, mode=0o600, indent=1, sort_keys=True)

    # ---------------------------------------------------------------- editing

    def teach(
        self,
        name: str,
        files: Sequence[str | os.PathLike[str]],
        embedder: Embedder,
        *,
        replace: bool = False,
        regions: Sequence[tuple[float | None, float | None]] | None = None,
        progress: ProgressFn | None = None,
    ) -> TaughtTag:
        """Add example files (optionally regions of them) to a tag, creating it; saves the
        library. All examples are embedded before anything is written, so a bad file leaves
        the library as it was."""
        if not _NAME.match(name) or name.strip() != name:
            raise TagLibraryError(
                f"bad tag name {name!r}: 1-64 characters, no slashes or control characters, "
                "no leading/trailing spaces"
            )
        if not files:
            raise TagLibraryError("teach needs at least one example file")
        regions = list(regions) if regions else [(None, None)] * len(files)
        if len(regions) != len(files):
            raise TagLibraryError("one region per file")
        new_examples, new_vectors = [], []
        for i, (path, (start, end)) in enumerate(zip(files, regions, strict=True)):
            if progress:
                progress(i / len(files), "embedding")
            emb = embedder.embed_file(path, start, end)
            new_vectors.append(emb.windows)
            new_examples.append(
                {
                    "path": str(Path(path).resolve()),
                    "sha256": file_sha256(Path(path)),
                    "start": emb.start,
                    "end": emb.end,
                }
            )
        tag = self.tags.get(name)
        if tag is None or replace:
            tag = TaughtTag(name, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), [])
        vectors = tag.vectors.get(embedder.model_id) if tag.examples else None
        stacked = np.concatenate(new_vectors)
        tag.vectors = {embedder.model_id: stacked if vectors is None else np.r_[vectors, stacked]}
        tag.examples = tag.examples + new_examples
        self.tags[name] = tag
        self.save()
        return tag

    def forget(self, name: str) -> None:
        if name not in self.tags:
            raise TagLibraryError(f"no taught tag {name!r} (known: {', '.join(self) or 'none'})")
        del self.tags[name]
        self.save()

    def __iter__(self):
        return iter(sorted(self.tags))

    def describe(self) -> list[dict]:
        return [
            {
                "name": t.name,
                "created": t.created,
                "examples": len(t.examples),
                "windows": {m: int(v.shape[0]) for m, v in t.vectors.items()},
                "files": [e["path"] for e in t.examples],
            }
            for t in (self.tags[n] for n in self)
        ]

    # ---------------------------------------------------------------- scoring

    def vectors_for(self, embedder: Embedder) -> dict[str, np.ndarray]:
        """Example vectors of every tag for this model, re-embedding where needed (saved)."""
        found, changed = {}, False
        for name in self:
            tag = self.tags[name]
            if embedder.model_id not in tag.vectors:
                parts = []
                for ex in tag.examples:
                    path = Path(ex["path"])
                    if not path.exists():
                        logger.warning("tag %s: example %s is gone; skipping it", name, path)
                        continue
                    if file_sha256(path) != ex["sha256"]:
                        logger.warning("tag %s: example %s changed since teaching", name, path)
                    parts.append(embedder.embed_file(path, ex["start"], ex["end"]).windows)
                if not parts:
                    logger.warning(
                        "tag %s has no usable example for model %s", name, embedder.model_id
                    )
                    continue
                tag.vectors[embedder.model_id] = np.concatenate(parts)
                changed = True
            found[name] = tag.vectors[embedder.model_id]
        if changed:
            self.save()
        return found

    def vocabulary(self, embedder: Embedder) -> Vocabulary | None:
        """The taught tags as a :class:`~heads.Vocabulary` for this model, or None."""
        if not self.tags:
            return None
        examples = self.vectors_for(embedder)
        if not examples:
            return None
        background, semantic = head_inputs(find_heads(embedder.model_id))
        fitted = _fit_cached(
            self.path, _stamp(self.path), embedder.model_id, examples, background, semantic
        )
        return Vocabulary("taught", fitted.names, fitted.names, fitted.probabilities)


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
        return st.st_mtime_ns, st.st_size
    except OSError:
        return 0, 0


class _Key:
    """Hashable wrapper: the fit depends on the library file's state and the model only."""

    def __init__(self, path, stamp, model_id, examples, background, semantic) -> None:
        self.key = (str(path), stamp, model_id)
        self.examples, self.background, self.semantic = examples, background, semantic

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Key) and self.key == other.key


@lru_cache(maxsize=8)
def _fit(key: _Key) -> TaughtModel:
    return fit_tags(key.examples, key.background, semantic=key.semantic)


def _fit_cached(path, stamp, model_id, examples, background, semantic) -> TaughtModel:
    if stamp == (0, 0):  # not saved yet (in-memory library): no caching
        return fit_tags(examples, background, semantic=semantic)
    return _fit(_Key(path, stamp, model_id, examples, background, semantic))
