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

from maedaw.dsp.audio_io import read_region
from maedaw.dsp.resample import resample
from maedaw.models.embed import Embedder
from maedaw.models.similar import AUDIO_SUFFIXES
from maedaw.models.tagging import find_heads
from maedaw.models.tags_user import fit_tags

logger = logging.getLogger(__name__)


def class_folders(root: Path) -> dict[str, list[Path]]:
    """Class name -> sorted audio files, for every sub-folder holding audio."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    out = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
        if files:
            out[folder.name] = files
    if len(out) < 2:
        raise ValueError(
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
        raise ValueError("cross-validation needs at least two files per class (or use --train)")
    probs = np.zeros((len(x), n_classes))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        probs[test] = _probe_scores(x[train], y[train], x[test], n_classes)
    return probs


def _top1_map(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import average_precision_score

    top1 = float((probs.argmax(1) == y).mean())
    aps = [average_precision_score(y == k, probs[:, k]) for k in np.unique(y)]
    return top1, float(np.mean(aps))


def bench_tag(
    data: Path,
    embedder: Embedder,
    train: Path | None = None,
    shots: int = 5,
    repeats: int = 10,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
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
            raise ValueError(f"{train}: no training folder for classes {missing}")
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
    background = next((h.background for h in heads if h.background is not None), None)
    rng = np.random.default_rng(seed)
    accuracies = []
    for _ in range(repeats):
        support, queries = {}, []
        for k, name in enumerate(names):
            members = np.flatnonzero(y == k)
            if len(members) <= shots:
                raise ValueError(f"class {name}: {len(members)} files, need more than {shots}")
            chosen = rng.choice(members, shots, replace=False)
            support[name] = np.concatenate([windows[i] for i in chosen])
            queries += [i for i in members if i not in set(chosen)]
        taught = fit_tags(support, background)
        predicted = [
            taught.names[int(taught.probabilities(windows[i]).max(0).argmax())] for i in queries
        ]
        accuracies.append(
            np.mean([p == names[y[i]] for p, i in zip(predicted, queries, strict=True)])
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
        },
        "throughput": {
            "audio_seconds": audio_seconds,
            "wall_seconds": wall,
            "x_real_time": audio_seconds / wall,
            "files": len(files),
        },
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
