"""``maedaw similar FILE --in DIR...``: rank library clips by embedding similarity.

Clip vectors (see ``embed.py``), mapped into the :mod:`feature_space` when the model has a
tagger head with background vectors (the bundled one does: the unit centred vector beside the
unit centred hidden layer of the head; same-class precision of the 10 nearest held-out clips
0.73 -> 0.85), go into a usearch HNSW index (cosine, float16). Why usearch:
a pip wheel with no system dependencies (faiss-cpu is ~10x larger and its HNSW cannot delete;
hnswlib only marks deletions and must be told a capacity up front), add / remove by our own
64-bit keys, so the index is updated in place as files come, change and go, and save / restore
of one file. ``maedaw bench similar`` measures it on 100 000 vectors.

One index per (model id, feature space, set of folders) lives in
``<user cache dir>/maedaw/similar/<key>/``: ``index.usearch`` plus ``entries.json`` (path ->
key, size, mtime); a new tagger head has a new feature space, so a new index. Updating stats
every audio file under the folders; new or changed files (size or mtime) are embedded (through
the embedding cache, so a touched but unchanged file costs a hash, not a model run) and
replace their old vector; vanished files are removed. Both files are written to a temp name
and renamed; if they ever disagree the index is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from usearch.index import Index

from maedaw.core.errors import MaedawError
from maedaw.core.util import FractionFn, ProgressFn, atomic_path, write_json_atomic
from maedaw.dsp.audio_io import READ_EXTENSIONS, AudioError
from maedaw.dsp.audio_io import audio_files as walk_audio

from .embed import Embedder, Embeddings, cache_dir
from .feature_space import FeatureSpace, space_for

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = tuple(sorted(READ_EXTENSIONS))
INDEX_VERSION = 2  # 2: vectors in the feature space


class SimilarityError(MaedawError):
    """Bad folders or query for a similarity search."""


def audio_files(folders: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Every audio file under the folders (:func:`dsp.audio_io.audio_files`)."""
    try:
        return walk_audio(folders)
    except AudioError as exc:
        raise SimilarityError(str(exc)) from exc


def _new_index(dim: int) -> Index:
    # float16 storage: half the memory (100 000 x 2560 values = 0.51 GB), same ranking in practice.
    return Index(ndim=dim, metric="cos", dtype="f16")


def in_space(space: FeatureSpace | None, vector: np.ndarray) -> np.ndarray:
    """One clip vector as similarity compares it: in ``space``, or as it is without one."""
    vector = np.asarray(vector, np.float32)
    return vector if space is None else space(vector[None, :])[0]


class SimilarIndex:
    """A persisted, incrementally updated vector index over the audio files of some folders."""

    def __init__(self, folder: Path, model_id: str, dim: int, space: FeatureSpace | None) -> None:
        self.folder = folder
        self.model_id = model_id
        self.space = space
        self.dim = space.dim if space is not None else dim
        self.entries: dict[str, dict] = {}
        self.next_key = 1
        self.index = _new_index(self.dim)

    @classmethod
    def for_folders(cls, folders: Sequence[str | os.PathLike[str]], embedder: Embedder):
        return cls.at(folders, embedder.settings_key(), embedder.model_id, embedder.dim)

    @classmethod
    def at(
        cls, folders: Sequence[str | os.PathLike[str]], settings_key: str, model_id: str, dim: int
    ):
        """The index of ``folders`` for the embedder with these settings (``maedaw batch
        index`` opens it without loading the model: its workers did the embedding)."""
        roots = sorted(str(Path(f).resolve()) for f in folders)
        if not roots:
            raise SimilarityError("give at least one folder to search in (--in DIR)")
        space = space_for(model_id)
        fingerprint = space.fingerprint() if space is not None else "vector"
        key = f"{settings_key}|{fingerprint}|{roots}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        self = cls(cache_dir().parent / "similar" / digest, model_id, dim, space)
        self._load()
        return self

    # ---------------------------------------------------------------- persistence

    def _load(self) -> None:
        entries_path, index_path = self.folder / "entries.json", self.folder / "index.usearch"
        if not entries_path.exists() or not index_path.exists():
            return
        try:
            document = json.loads(entries_path.read_text(encoding="utf-8"))
            index = Index.restore(str(index_path))
            if (
                document.get("version") != INDEX_VERSION
                or index is None
                or index.ndim != self.dim
                or len(index) != len(document["entries"])
            ):
                raise ValueError("index and entries disagree")
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            logger.warning("rebuilding the similarity index in %s (%s)", self.folder, exc)
            return
        self.index = index
        self.entries = document["entries"]
        self.next_key = int(document["next_key"])

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / "index.usearch") as tmp:
            self.index.save(str(tmp))
        document = {
            "version": INDEX_VERSION,
            "model_id": self.model_id,
            "next_key": self.next_key,
            "entries": self.entries,
        }
        write_json_atomic(self.folder / "entries.json", document)

    # ---------------------------------------------------------------- updating

    def stale(
        self, files: Sequence[Path]
    ) -> tuple[list[tuple[str, Path, os.stat_result]], dict[str, int]]:
        """Drop the entries of files no longer in ``files``; return the files that are new or
        changed (size or mtime) as ``(name, path, stat)``, and the counts so far."""
        wanted = {str(p): p for p in files}
        stats = {"added": 0, "updated": 0, "removed": 0, "unchanged": 0, "failed": 0}
        for path in sorted(set(self.entries) - set(wanted)):
            self.index.remove(self.entries.pop(path)["key"])
            stats["removed"] += 1
        todo = []
        for name, path in wanted.items():
            st = path.stat()
            entry = self.entries.get(name)
            if entry and entry["size"] == st.st_size and entry["mtime_ns"] == st.st_mtime_ns:
                stats["unchanged"] += 1
            else:
                todo.append((name, path, st))
        return todo, stats

    def put(self, name: str, st: os.stat_result, vector: np.ndarray) -> str:
        """Add (or replace) a file's clip vector; returns ``"added"`` or ``"updated"``."""
        old = self.entries.pop(name, None)
        if old is not None:
            self.index.remove(old["key"])
        key = self.next_key
        self.next_key += 1
        self.index.add(key, in_space(self.space, vector))
        self.entries[name] = {"key": key, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        return "updated" if old else "added"

    def update(
        self,
        files: Sequence[Path],
        embedder: Embedder,
        progress: ProgressFn | None = None,
    ) -> dict[str, int]:
        """Bring the index in line with ``files``; returns counts of what changed."""
        todo, stats = self.stale(files)
        for i, (name, path, st) in enumerate(todo):
            if progress:
                progress(i / max(1, len(todo)), "indexing")
            try:
                vector = embedder.embed_file(path).clip
            except AudioError as exc:
                logger.warning("skipping %s: %s", path, exc)
                stats["failed"] += 1
                continue
            stats[self.put(name, st, vector)] += 1
        if todo or stats["removed"]:
            self.save()
        return stats

    # ---------------------------------------------------------------- searching

    def search(self, vector: np.ndarray, top_k: int = 10, exclude: str | None = None) -> list[dict]:
        """Entries nearest to a clip vector (of the same model), best first."""
        if len(self.index) == 0:
            return []
        by_key = {e["key"]: p for p, e in self.entries.items()}
        count = min(len(self.index), top_k + (1 if exclude else 0))
        matches = self.index.search(in_space(self.space, vector), count)
        results = []
        for key, distance in zip(matches.keys, matches.distances, strict=True):
            path = by_key.get(int(key))
            if path is None or path == exclude:
                continue
            results.append({"path": path, "similarity": round(1.0 - float(distance), 4)})
        return results[:top_k]


def find_similar(
    query: str | os.PathLike[str],
    folders: Sequence[str | os.PathLike[str]],
    embedder: Embedder,
    top_k: int = 10,
    start: float | None = None,
    end: float | None = None,
    progress: ProgressFn | None = None,
) -> dict:
    """Files under ``folders`` most similar to ``query`` (or a region of it), best first."""
    if top_k < 1:
        raise SimilarityError(f"--top must be at least 1, got {top_k}")
    files = audio_files(folders)
    target = embedder.embed_file(query, start, end)  # AudioError for a bad query, before indexing
    index = SimilarIndex.for_folders(folders, embedder)
    stats = index.update(files, embedder, progress)
    resolved = str(Path(query).resolve())
    exclude = resolved if start is None and end is None else None
    return {
        "query": resolved,
        "start": round(target.start, 4),
        "end": round(target.end, 4),
        "model_id": embedder.model_id,
        "indexed": len(index.index),
        "index_changes": stats,
        "results": index.search(target.clip, top_k, exclude),
    }


def rank_regions(
    query: Embeddings,
    candidates: Sequence[tuple[str, str | os.PathLike[str], float | None, float | None]],
    embedder: Embedder,
    top_k: int = 10,
    progress: FractionFn | None = None,
) -> tuple[list[dict], list[dict]]:
    """Rank regions ``(id, path, start, end)`` by cosine similarity of their clip vectors to
    ``query``'s (in the model's feature space, as the index), best first (at most ``top_k``).
    A region that cannot be read is returned in the second list with its reason instead of
    failing the ranking. Embeddings go through the embedding cache, so asking again about the
    same project costs a file hash per region."""
    space = space_for(embedder.model_id)

    def unit(vector: np.ndarray) -> np.ndarray:
        x = in_space(space, vector)
        return x / max(float(np.linalg.norm(x)), 1e-12)

    target = unit(query.clip)
    ranked, skipped = [], []
    for n, (ident, path, start, end) in enumerate(candidates):
        try:
            vector = embedder.embed_file(path, start, end).clip
        except AudioError as exc:
            skipped.append({"id": ident, "error": str(exc)})
        else:
            ranked.append({"id": ident, "similarity": round(float(unit(vector) @ target), 4)})
        if progress is not None:
            progress((n + 1) / len(candidates))
    ranked.sort(key=lambda r: -r["similarity"])
    return ranked[:top_k], skipped
