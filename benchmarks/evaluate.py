"""Held-out reconstruction error of an Audio-MAE against two simple baselines.

Protocol (what the model card reports, reproduced by ``maedaw eval-model``):

* Data: every audio file under ``DIR``; the category is the name of the first folder level
  below ``DIR`` (the corpus writes ``heldout/{speech,music,effects}/``).
* Each file gives one window: its first 1024 frames, padded per the front end's rule.
* Window ``i`` gets an unstructured mask at ratio 0.8 from a generator seeded with
  ``(seed, i)``; files are taken in sorted order, so the masks do not depend on batching.
* Scored: masked patches whose 16 frames are all real audio (padding is never scored), in
  normalised fbank units (the model's input scale). MSE is pooled over all scored pixels of a
  category.
* Baselines see the same visible (unmasked, real) pixels as the model:
  (a) ``freq_mean``: each mel bin predicted by the mean of that bin over the visible frames;
  (b) ``time_interp``: each mel bin linearly interpolated across time between the nearest
  visible frames (held constant beyond the first/last visible frame).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from maedaw.core.util import ProgressFn
from maedaw.models.audiomae import AudioMAE, random_mask
from maedaw.models.frontend import FrontendConfig, fit_window
from maedaw.models.train import real_patches
from maedaw.models.train_data import file_fbank, scan_audio

logger = logging.getLogger(__name__)

METHODS = ("model", "freq_mean", "time_interp")


@dataclass
class CategoryScore:
    windows: int
    scored_patches: int
    mse: dict[str, float]  # method -> MSE

    def to_dict(self) -> dict:
        return {
            "windows": self.windows,
            "scored_patches": self.scored_patches,
            "mse": {k: round(v, 5) for k, v in self.mse.items()},
        }


def pixel_mask(patch_mask: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
    """``(B, L)`` patch mask -> ``(B, T, F)`` pixel mask."""
    m = patch_mask.reshape(-1, *grid)
    return m.repeat_interleave(patch, 1).repeat_interleave(patch, 2)


def freq_mean_baseline(x: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Per window and mel bin, the mean of the known frames; bins with none known get the
    window's mean of all known pixels (0 if nothing is known)."""
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        k = known[b]
        total = k.sum()
        fallback = float(x[b][k].mean()) if total else 0.0
        counts = k.sum(axis=0)
        sums = np.where(k, x[b], 0.0).sum(axis=0)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), fallback)
        out[b] = means[None, :]
    return out


def time_interp_baseline(x: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Per window and mel bin, linear interpolation across time between known frames
    (``np.interp``: constant beyond the ends); bins with no known frame use the freq-mean
    fallback."""
    out = freq_mean_baseline(x, known)
    frames = np.arange(x.shape[1])
    for b in range(x.shape[0]):
        for f in range(x.shape[2]):
            t = np.flatnonzero(known[b, :, f])
            if len(t):
                out[b, :, f] = np.interp(frames, t, x[b, t, f])
    return out


def score_batch(
    model: AudioMAE | None, x: torch.Tensor, mask: torch.Tensor, real: torch.Tensor
) -> tuple[dict[str, float], int, int]:
    """Sum of squared errors per method over masked real pixels, the pixel and patch counts.

    ``model`` None scores the baselines only.
    """
    cfg_grid, p = (64, 8), 16
    if model is not None:
        cfg_grid, p = model.config.grid_size, model.config.patch_size
    scored = mask & real
    pix = pixel_mask(scored, cfg_grid, p).numpy()
    known = pixel_mask(~mask & real, cfg_grid, p).numpy()
    xn = x.numpy().astype(np.float64)
    preds = {
        "freq_mean": freq_mean_baseline(xn, known),
        "time_interp": time_interp_baseline(xn, known),
    }
    if model is not None:
        with torch.no_grad():
            preds["model"] = model.reconstruct(x, mask).numpy().astype(np.float64)
    sse = {name: float(((pred - xn) ** 2)[pix].sum()) for name, pred in preds.items()}
    return sse, int(pix.sum()), int(scored.sum())


def category_of(path: Path, root: Path) -> str:
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else "all"


def evaluate(
    model: AudioMAE,
    data: str | os.PathLike[str],
    frontend: FrontendConfig,
    seed: int = 0,
    ratio: float = 0.8,
    batch: int = 16,
    progress: ProgressFn | None = None,
) -> dict[str, CategoryScore]:
    """Per-category (and ``"all"``) MSE of the model and both baselines on ``data``."""
    root = Path(data).resolve()
    paths = scan_audio([root])
    model = model.eval()
    by_cat: dict[str, list[tuple[int, Path]]] = {}
    for index, path in enumerate(paths):
        by_cat.setdefault(category_of(path, root), []).append((index, path))
    totals: dict[str, dict[str, float]] = {}
    counts: dict[str, list[int]] = {}
    done = 0
    for category, items in sorted(by_cat.items()):
        sse = dict.fromkeys(METHODS, 0.0)
        pixels = patches = 0
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            windows, valid, masks = [], [], []
            for index, path in chunk:
                window, real_frames = fit_window(file_fbank(path, frontend), frontend)
                windows.append(window)
                valid.append(real_frames)
                gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
                masks.append(random_mask(1, model.config.num_patches, ratio, generator=gen))
            x = torch.stack(windows).float()
            mask = torch.cat(masks)
            real = real_patches(torch.tensor(valid), model)
            part, n_pix, n_patch = score_batch(model, x, mask, real)
            for name, value in part.items():
                sse[name] += value
            pixels += n_pix
            patches += n_patch
            done += len(chunk)
            if progress is not None:
                progress(done / len(paths), category)
        totals[category] = sse
        counts[category] = [len(items), patches, pixels]
    result = {
        c: CategoryScore(
            counts[c][0], counts[c][1], {m: totals[c][m] / max(1, counts[c][2]) for m in METHODS}
        )
        for c in totals
    }
    if len(result) > 1:
        pix = sum(counts[c][2] for c in totals)
        result["all"] = CategoryScore(
            sum(counts[c][0] for c in totals),
            sum(counts[c][1] for c in totals),
            {m: sum(totals[c][m] for c in totals) / max(1, pix) for m in METHODS},
        )
    return result


def results_table_markdown(results: dict[str, CategoryScore]) -> str:
    lines = [
        "| category | windows | scored patches | model MSE | (a) freq mean | (b) time interp "
        "| model vs best baseline |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for category, score in results.items():
        best = min(score.mse["freq_mean"], score.mse["time_interp"])
        change = 100.0 * (score.mse["model"] - best) / best if best else 0.0
        lines.append(
            f"| {category} | {score.windows} | {score.scored_patches} | "
            f"{score.mse['model']:.4f} | {score.mse['freq_mean']:.4f} | "
            f"{score.mse['time_interp']:.4f} | {change:+.1f} % |"
        )
    return "\n".join(lines)
