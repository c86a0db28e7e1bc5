"""``maedaw bench tag`` and ``maedaw bench similar``.

``bench tag --data DIR [--train DIR]``: sub-folders of DIR are classes. On DIR it reports, in
one table, top-1 accuracy and mAP (mean over classes of one-vs-rest average precision) of

* the bundled session tagger (classes whose folder name is one of its tags),
* a linear probe on our clip embeddings (logistic regression, standardised features),
* the "traditional features" baseline: MFCC (20 + deltas, mean and std over time) + logistic
  regression,

the probe and the baseline fitted on ``--train`` (same folder layout; use a split that shares
no recording with DIR) or, without it, 5-fold cross-validation on DIR. It also reports N-shot
accuracy of taught tags (N examples per class taught through ``tags_user.fit_tags``, every
other clip classified by the best taught tag; repeated with different picks) and throughput:
seconds of audio tagged per second of wall time, cold (no embedding cache), on this machine.

``bench similar``: a usearch index over N synthetic clustered vectors: build time, query
latency (one query at a time), recall@10 against exact search, memory.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from maedaw.core.errors import MaedawError
from maedaw.core.util import ProgressFn
from maedaw.dsp.audio_io import read_region
from maedaw.dsp.resample import resample
from maedaw.models.embed import Embedder
from maedaw.models.feature_space import FeatureSpace, Semantic, head_inputs
from maedaw.models.heads import find_heads
from maedaw.models.similar import AUDIO_SUFFIXES
from maedaw.models.tags_user import fit_tags

logger = logging.getLogger(__name__)


class BenchDataError(MaedawError, ValueError):
    """The benchmark's data cannot answer it: no class folders, too few files per class..."""


def class_folders(root: Path) -> dict[str, list[Path]]:
    """Class name -> sorted audio files, for every sub-folder holding audio."""
    if not root.is_dir():
        raise BenchDataError(f"{root}: not a folder")
    out = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
        if files:
            out[folder.name] = files
    if len(out) < 2:
        raise BenchDataError(
            f"{root}: need at least two class sub-folders with audio, found {len(out)}"
        )
    return out


def mfcc_features(path: Path, rate: int = 16_000) -> np.ndarray:
    """MFCC 20 + deltas, mean and std over time (80 values)."""
    import torchaudio

    region = read_region(path)
    mono = resample(region.samples.mean(axis=0), region.info.sample_rate, rate)
    wave = torch.from_numpy(mono.astype(np.float32))
    if wave.numel() < 400:
        wave = torch.nn.functional.pad(wave, (0, 400 - wave.numel()))
    transform = torchaudio.transforms.MFCC(
        rate, n_mfcc=20, melkwargs={"n_fft": 400, "hop_length": 160, "n_mels": 64}
    )
    mfcc = transform(wave)  # (20, frames)
    delta = torchaudio.functional.compute_deltas(mfcc.unsqueeze(0))[0]
    feats = torch.cat([mfcc, delta])
    return torch.cat([feats.mean(1), feats.std(1, unbiased=False)]).numpy()


def _probe_scores(x_train, y_train, x_test, n_classes: int, c: float = 1.0) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
    model.fit(x_train, y_train)
    probs = np.zeros((len(x_test), n_classes))
    probs[:, model.classes_] = model.predict_proba(x_test)
    return probs


def _cv_scores(x, y, n_classes: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold

    folds = min(5, int(np.bincount(y).min()))
    if folds < 2:
        raise BenchDataError("cross-validation needs at least two files per class (or use --train)")
    probs = np.zeros((len(x), n_classes))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        probs[test] = _probe_scores(x[train], y[train], x[test], n_classes)
    return probs


def _top1_map(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import average_precision_score

    top1 = float((probs.argmax(1) == y).mean())
    aps = [average_precision_score(y == k, probs[:, k]) for k in np.unique(y)]
    return top1, float(np.mean(aps))


def few_shot_accuracies(
    windows: list[np.ndarray],
    labels: list[str],
    background: np.ndarray | None,
    semantic: Semantic | None,
    shots: int,
    repeats: int,
    seed: int,
) -> list[float]:
    """N-shot accuracy of taught tags, once per draw: ``shots`` clips of every label teach a
    tag (``fit_tags``), every other clip is classified by its best-scoring taught tag."""
    rng = np.random.default_rng(seed)
    labels_array = np.asarray(labels)
    accuracies = []
    for _ in range(repeats):
        support, queries = {}, []
        for name in sorted(set(labels)):
            members = np.flatnonzero(labels_array == name)
            if len(members) <= shots:
                raise BenchDataError(f"class {name}: {len(members)} files, need more than {shots}")
            chosen = set(rng.choice(members, shots, replace=False).tolist())
            support[name] = np.concatenate([windows[i] for i in sorted(chosen)])
            queries += [i for i in members if i not in chosen]
        taught = fit_tags(support, background, semantic=semantic)
        hits = [
            taught.names[int(taught.probabilities(windows[i]).max(0).argmax())] == labels[i]
            for i in queries
        ]
        accuracies.append(float(np.mean(hits)))
    return accuracies


def neighbour_precision(
    features: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int = 10
) -> float:
    """Mean over the ``queries`` rows (a boolean mask) of the share of their ``k`` nearest
    other rows (cosine) that have their label."""
    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    similarity = x[queries] @ x.T
    similarity[np.arange(int(queries.sum())), np.flatnonzero(queries)] = -np.inf  # not itself
    nearest = np.argsort(-similarity, axis=1)[:, :k]
    return float((labels[nearest] == labels[queries][:, None]).mean())


def bench_tag(
    data: Path,
    embedder: Embedder,
    train: Path | None = None,
    shots: int = 5,
    repeats: int = 10,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> dict:
    report = progress or (lambda f, s: None)
    classes = class_folders(data)
    names = sorted(classes)
    files = [f for n in names for f in classes[n]]
    y = np.array([i for i, n in enumerate(names) for _ in classes[n]])

    # Throughput: cold embeddings (decode + resample + fbank + encoder) plus head scoring.
    heads = find_heads(embedder.model_id)
    head = heads[0] if heads else None
    started = time.perf_counter()
    audio_seconds = 0.0
    windows, levels, clip_vectors = [], [], []
    for i, path in enumerate(files):
        report(0.6 * i / len(files), "embedding")
        emb = embedder.embed_file(path, use_cache=False)
        audio_seconds += emb.duration
        windows.append(emb.windows)
        levels.append(emb.levels)
        clip_vectors.append(emb.clip)
        if head is not None:
            head.probabilities(emb.windows, emb.levels)
    wall = time.perf_counter() - started
    x = np.stack(clip_vectors)

    rows = []
    if head is not None:
        known = [n for n in names if n in head.classes]
        if known:
            mask = np.isin(y, [names.index(n) for n in known])
            probs = np.stack(
                [head.probabilities(w, v).max(0) for w, v in zip(windows, levels, strict=True)]
            )
            columns = [head.classes.index(n) for n in known]
            # Top-1 over the head's whole vocabulary; mAP over the classes present here.
            predicted = [head.classes[k] for k in probs[mask].argmax(1)]
            truth = [names[k] for k in y[mask]]
            top1 = float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))
            sub_y = np.array([known.index(t) for t in truth])
            _, m_ap = _top1_map(probs[mask][:, columns], sub_y)
            rows.append(
                {
                    "method": f"bundled tagger ({head.name})",
                    "top1": top1,
                    "mAP": m_ap,
                    "clips": int(mask.sum()),
                    "classes": len(known),
                    "fitted_on": "its corpus",
                }
            )

    report(0.6, "MFCC")
    mfcc = np.stack([mfcc_features(f) for f in files])
    if train is not None:
        train_classes = class_folders(train)
        missing = sorted(set(names) - set(train_classes))
        if missing:
            raise BenchDataError(f"{train}: no training folder for classes {missing}")
        train_files = [f for n in names for f in train_classes[n]]
        y_train = np.array([i for i, n in enumerate(names) for _ in train_classes[n]])
        report(0.7, "embedding train")
        x_train = np.stack([embedder.embed_file(f).clip for f in train_files])
        report(0.85, "MFCC train")
        mfcc_train = np.stack([mfcc_features(f) for f in train_files])
        probe = _probe_scores(x_train, y_train, x, len(names))
        baseline = _probe_scores(mfcc_train, y_train, mfcc, len(names))
        fitted = f"{train} ({len(train_files)} files)"
    else:
        probe = _cv_scores(x, y, len(names), seed)
        baseline = _cv_scores(mfcc, y, len(names), seed)
        fitted = "5-fold CV on --data"
    for method, probs in (
        ("linear probe on embeddings", probe),
        ("MFCC + logistic regression", baseline),
    ):
        top1, m_ap = _top1_map(probs, y)
        rows.append(
            {
                "method": method,
                "top1": top1,
                "mAP": m_ap,
                "clips": len(y),
                "classes": len(names),
                "fitted_on": fitted,
            }
        )

    report(0.95, f"{shots}-shot")
    background, semantic = head_inputs(heads)
    accuracies = few_shot_accuracies(
        windows, [names[k] for k in y], background, semantic, shots, repeats, seed
    )
    return {
        "data": str(data),
        "train": str(train) if train else None,
        "model_id": embedder.model_id,
        "precision": embedder.precision,
        "threads": torch.get_num_threads(),
        "classes": {n: len(classes[n]) for n in names},
        "rows": rows,
        "few_shot": {
            "shots": shots,
            "repeats": repeats,
            "accuracy_mean": float(np.mean(accuracies)),
            "accuracy_std": float(np.std(accuracies)),
            "background_vectors": 0 if background is None else len(background),
            "reads_head_hidden_layer": semantic is not None,
        },
        "throughput": {
            "audio_seconds": audio_seconds,
            "wall_seconds": wall,
            "x_real_time": audio_seconds / wall,
            "files": len(files),
        },
    }


def bench_taught(
    corpus: Path,
    embedder: Embedder,
    folds: int = 3,
    shots: int = 5,
    repeats: int = 10,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> dict:
    """Do taught tags gain from reading the tagger head's hidden layer on sounds the head was
    *not* trained for? On a ``maedaw corpus tags`` corpus:

    * **novel classes**: the session classes but silence are cut into ``folds`` groups; for
      each, a head is trained (as ``train_head`` does, no calibration) on ``train`` + ``val``
      without that group's classes, and N-shot taught tags for those classes alone are
      scored on ``heldout``, reading the encoder vector only vs vector + that head's hidden
      layer;
    * **sources as tags**: every held-out source (GM program, voice, unit, ...) with more
      than N clips is a tag of its own, finer than any session class; encoder vector only vs
      vector + the bundled head's hidden layer.

    The same for "find similar": the share of each held-out clip's 10 nearest held-out clips
    (cosine in the feature space; silence left out) of its own class (for novel-class clips,
    with each fold's head) or its own source (with the bundled head).
    """
    from maedaw.models.heads import CLASSES
    from maedaw.models.tagger_train import (
        background_rows,
        embed_corpus,
        fit_mlp,
        make_head,
        pooled,
    )

    report = progress or (lambda f, s: None)
    sets = embed_corpus(corpus, embedder, progress=lambda f, s: report(0.5 * f, s))
    pool, held = pooled(sets["train"], sets["val"]), sets["heldout"]
    classes = list(CLASSES)
    single = pool.single
    held_rows = np.flatnonzero(held.single)
    held_label = {i: classes[int(held.targets[i].argmax())] for i in held_rows}
    rng = np.random.default_rng(seed)
    candidates = [c for c in classes if c != "silence"]
    order = rng.permutation(len(candidates))
    splits = [[candidates[k] for k in order[f::folds]] for f in range(folds)]

    def compare(queries, labels, background, semantic) -> dict:
        windows = [held.vectors[i][None, :] for i in queries]
        out = {}
        for name, layer in (("vector", None), ("vector + hidden", semantic)):
            acc = few_shot_accuracies(windows, labels, background, layer, shots, repeats, seed)
            out[name] = {"mean": float(np.mean(acc)), "std": float(np.std(acc))}
        return out

    library = np.array([i for i in held_rows if held_label[i] != "silence"])

    def neighbours(keys: dict[str, Callable[[int], str]], queries, background, semantic) -> dict:
        """``{"neighbours_same_<key>": {space: precision}}``, each space computed once."""
        mine = np.isin(library, queries)
        spaces = {
            name: FeatureSpace.fit(background, layer)(held.vectors[library])
            for name, layer in (("vector", None), ("vector + hidden", semantic))
        }
        out = {}
        for what, key in keys.items():
            labels = np.array([key(i) for i in library])
            out[f"neighbours_same_{what}"] = {
                name: neighbour_precision(x, labels, mine) for name, x in spaces.items()
            }
        return out

    novel_rows = []
    for f, novel in enumerate(splits):
        report(0.5 + 0.4 * f / folds, f"head without {', '.join(novel)}")
        seen = [c for c in classes if c not in novel]
        columns = [classes.index(c) for c in seen]
        rows = np.flatnonzero(single & (pool.targets[:, columns].sum(1) == 1))
        fitted = fit_mlp(pool.vectors[rows], pool.targets[rows][:, columns])
        head = make_head("novel-probe", embedder.model_id, fitted, classes=seen)
        background = pool.vectors[background_rows(pool, columns, 32, rng)]
        queries = [i for i in held_rows if held_label[i] in novel]
        scores = compare(queries, [held_label[i] for i in queries], background, head.hidden)
        scores |= neighbours({"class": held_label.get}, queries, background, head.hidden)
        novel_rows.append({"novel": novel, "clips": len(queries), **scores})

    report(0.9, "sources as tags")
    heads = find_heads(embedder.model_id)
    background, semantic = head_inputs(heads)
    groups = np.asarray(held.groups)
    sources = [i for i in held_rows if (groups[held_rows] == groups[i]).sum() > shots]
    by_source = None
    if semantic is not None:
        by_source = {
            "sources": len(set(groups[sources])),
            "clips": len(sources),
            **compare(sources, [str(groups[i]) for i in sources], background, semantic),
            **neighbours(
                {"class": held_label.get, "source": lambda i: str(groups[i])},
                library,
                background,
                semantic,
            ),
        }
    return {
        "corpus": str(corpus),
        "model_id": embedder.model_id,
        "shots": shots,
        "repeats": repeats,
        "novel_classes": novel_rows,
        "novel_classes_mean": {
            name: float(np.mean([r[name]["mean"] for r in novel_rows]))
            for name in ("vector", "vector + hidden")
        },
        "novel_classes_neighbours_mean": {
            name: float(np.mean([r["neighbours_same_class"][name] for r in novel_rows]))
            for name in ("vector", "vector + hidden")
        },
        "sources_as_tags": by_source,
    }


def bench_similar(size: int = 100_000, dim: int = 256, queries: int = 500, seed: int = 0) -> dict:
    """usearch HNSW on ``size`` clustered vectors vs exact search."""
    from usearch.index import Index

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(1, size // 100), dim)).astype(np.float32)
    data = centers[rng.integers(0, len(centers), size)]
    data += 0.5 * rng.standard_normal((size, dim)).astype(np.float32)
    query = data[rng.choice(size, queries, replace=False)]
    query = query + 0.3 * rng.standard_normal(query.shape).astype(np.float32)

    index = Index(ndim=dim, metric="cos", dtype="f16")  # as models/similar.py
    started = time.perf_counter()
    index.add(np.arange(size, dtype=np.uint64), data)
    build = time.perf_counter() - started

    latencies, found = [], []
    for q in query:
        t0 = time.perf_counter()
        matches = index.search(q, 10, threads=1)
        latencies.append(time.perf_counter() - t0)
        found.append(set(int(k) for k in matches.keys))
    normed = data / np.linalg.norm(data, axis=1, keepdims=True)
    exact_lat, recall = [], []
    for q, got in zip(query, found, strict=True):
        t0 = time.perf_counter()
        sims = normed @ (q / np.linalg.norm(q))
        truth = set(np.argpartition(-sims, 10)[:10].tolist())
        exact_lat.append(time.perf_counter() - t0)
        recall.append(len(truth & got) / 10)

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"maedaw-bench-{os.getpid()}.usearch"
    t0 = time.perf_counter()
    index.save(str(tmp))
    save = time.perf_counter() - t0
    t0 = time.perf_counter()
    Index.restore(str(tmp))
    load = time.perf_counter() - t0
    file_bytes = tmp.stat().st_size
    tmp.unlink()
    # Incremental update: remove and re-add 1 % of the keys.
    changed = np.arange(0, size, 100, dtype=np.uint64)
    t0 = time.perf_counter()
    index.remove(changed)
    index.add(changed, data[changed.astype(np.int64)])
    update = time.perf_counter() - t0
    lat = np.array(latencies) * 1e3
    return {
        "size": size,
        "dim": dim,
        "queries": queries,
        "build_seconds": build,
        "query_ms_p50": float(np.percentile(lat, 50)),
        "query_ms_p99": float(np.percentile(lat, 99)),
        "exact_numpy_ms_p50": float(np.percentile(np.array(exact_lat) * 1e3, 50)),
        "recall_at_10": float(np.mean(recall)),
        "save_seconds": save,
        "load_seconds": load,
        "file_mb": file_bytes / 1e6,
        "update_1pct_seconds": update,
        "memory_mb": index.memory_usage / 1e6,
    }
