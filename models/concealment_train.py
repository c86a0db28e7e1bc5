"""Training the concealment network (:mod:`maedaw.models.concealment`): data, loss, the loop.

1. **Data**: a seeded pool of the corpus's ``train`` clips (16 kHz wav from the manifest); each
   step draws ``batch`` excerpts of ``excerpt_s`` seconds at a random level, some through the
   augmentation chain (:mod:`maedaw.dsp.augment`), and cuts 1-``max_gaps`` gaps of 10-120 ms
   (log-uniform) into each. The batch of step ``k`` comes from a generator seeded by
   ``(seed, k)``, so a resumed run replays what an uninterrupted one would have done.
2. **Loss** on the gap frames: compressed magnitude MSE (the phase is the prior's; format 1's
   complex term made a near-silent fill optimal), and a multi-resolution STFT term on the
   synthesised waveform (compressed magnitudes of the frames that overlap a gap), which also
   covers the edges where the gap frames overlap the context.
3. **Optimiser**: AdamW, linear warm-up then cosine decay, gradient clipping; bf16 autocast on
   CPU when asked (measured 5.8x slower for the GRU on this machine, so off by default).
4. **Saved state**: ``OUT`` pair (float32 weights), ``OUT.train.pt`` (optimiser, step, history,
   config), ``OUT.best`` pair (lowest loss on the source-disjoint held-out clips, never on the
   package-disjoint ones the benchmark reports), each written atomically. ``--resume``
   continues from them; ``--init`` warm-starts from any weights (the shipped float16 ones)
   when the optimiser state is gone (a new machine).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maedaw.core.util import atomic_path
from maedaw.dsp.audio_io import AudioError, probe, read_region

from .checkpoint import CheckpointError
from .concealment import (
    RATE,
    ConcealmentNet,
    compress,
    gap_frame_mask,
    load_concealment,
    save_concealment,
    stft,
)
from .concealment_config import ConcealTrainConfig

log = logging.getLogger(__name__)

StepFn = Callable[[int, int, dict[str, float]], None]
RESUMABLE_CHANGES = {"steps", "save_every_s", "pool_seed_note"}
VALIDATION_ROLES = ("heldout-source",)  # the held-out loss and the .best checkpoint


# --------------------------------------------------------------------------------------------
# Data


def read_manifest(path: Path, roles: tuple[str, ...]) -> list[Path]:
    """Clip files of ``roles`` in the corpus manifest (paths relative to its folder)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the manifest: {exc}") from exc
    if rows and ("file" not in rows[0] or "role" not in rows[0]):
        raise CheckpointError(f"{path}: not a corpus manifest (needs file and role columns)")
    return [path.parent / r["file"] for r in rows if r["role"] in roles]


def load_pool(files: list[Path], count: int, seed: int, max_s: float) -> list[np.ndarray]:
    """A seeded sample of ``count`` clips (mono float32 at 16 kHz, at least 0.6 s)."""
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(len(files))
    pool: list[np.ndarray] = []
    for index in order:
        if len(pool) >= count:
            break
        try:
            info = probe(files[index])
            if info.sample_rate != RATE or info.frames < 0.6 * RATE:
                continue
            region = read_region(files[index], 0, min(info.frames, round(max_s * RATE)))
        except AudioError as exc:
            log.warning("skipping %s: %s", files[index], exc)
            continue
        pool.append(np.ascontiguousarray(region.samples.mean(axis=0), dtype=np.float32))
    if not pool:
        raise CheckpointError("no usable 16 kHz clips of at least 0.6 s in the manifest")
    return pool


def draw_gaps(
    rng: np.random.Generator, length: int, cfg: ConcealTrainConfig
) -> list[tuple[int, int]]:
    edge = round(0.12 * RATE)
    gaps: list[tuple[int, int]] = []
    for _ in range(int(rng.integers(1, cfg.max_gaps + 1))):
        for _attempt in range(8):
            ms = math.exp(rng.uniform(math.log(cfg.min_gap_ms), math.log(cfg.max_gap_ms)))
            size = round(ms * RATE / 1000.0)
            if length - 2 * edge - size <= 0:
                break
            start = int(rng.integers(edge, length - edge - size))
            if all(start + size + 800 < a or start > b + 800 for a, b in gaps):
                gaps.append((start, start + size))
                break
    if not gaps:
        size = round(cfg.min_gap_ms * RATE / 1000.0)
        gaps.append((length // 2, length // 2 + size))
    return sorted(gaps)


def make_batch(
    pool: list[np.ndarray], cfg: ConcealTrainConfig, rng: np.random.Generator, augment: bool
) -> tuple[torch.Tensor, torch.Tensor, list[list[tuple[int, int]]]]:
    """(clean ``(B, N)``, gap-frame mask ``(B, T)``, gaps per row)."""
    from maedaw.dsp import augment as aug

    length = round(cfg.excerpt_s * RATE)
    rows, masks, all_gaps = [], [], []
    for _ in range(cfg.batch):
        for _attempt in range(6):
            clip = pool[int(rng.integers(len(pool)))]
            if clip.size > length:
                at = int(rng.integers(0, clip.size - length))
                x = clip[at : at + length].astype(np.float64)
            else:
                x = np.zeros(length)
                at = int(rng.integers(0, length - clip.size + 1))
                x[at : at + clip.size] = clip
            rms = float(np.sqrt(np.mean(x**2)))
            if rms > 1e-4:
                break
        if augment and rng.random() < cfg.augment_prob:
            x, _ = aug.augment(x, RATE, rng)
        rms = max(float(np.sqrt(np.mean(x**2))), 1e-9)
        x = x * (10.0 ** (rng.uniform(*cfg.level_db) / 20.0) / rms)
        peak = float(np.max(np.abs(x)))
        if peak > 0.99:
            x *= 0.99 / peak
        gaps = draw_gaps(rng, length, cfg)
        rows.append(x.astype(np.float32))
        masks.append(gap_frame_mask(length, gaps, cfg.model))
        all_gaps.append(gaps)
    return torch.from_numpy(np.stack(rows)), torch.from_numpy(np.stack(masks)), all_gaps


def gapped(clean: torch.Tensor, gaps: list[list[tuple[int, int]]]) -> torch.Tensor:
    x = clean.clone()
    for row, row_gaps in enumerate(gaps):
        for a, b in row_gaps:
            x[row, a:b] = 0.0
    return x


# --------------------------------------------------------------------------------------------
# Loss


MR_RESOLUTIONS = ((512, 128), (256, 64), (128, 32))


def gap_samples(clean: torch.Tensor, gaps: list[list[tuple[int, int]]]) -> torch.Tensor:
    """``(B, N)`` float: 1 inside the gaps."""
    inside = torch.zeros_like(clean)
    for row, row_gaps in enumerate(gaps):
        for a, b in row_gaps:
            inside[row, a:b] = 1.0
    return inside


def _touched_frames(inside: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """``(B, 1, frames)``: 1 where a centred ``n_fft`` frame of ``torch.stft`` overlaps a gap."""
    pooled = torch.nn.functional.max_pool1d(
        inside.unsqueeze(1), n_fft, hop, padding=n_fft // 2, ceil_mode=False
    )
    frames = inside.shape[-1] // hop + 1
    pooled = torch.nn.functional.pad(pooled, (0, max(0, frames - pooled.shape[-1])))
    return pooled[..., :frames]


def concealment_loss(
    model: ConcealmentNet,
    clean: torch.Tensor,
    mask: torch.Tensor,
    gaps: list[list[tuple[int, int]]],
    cfg: ConcealTrainConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Compressed-magnitude error on the gap frames, plus the multi-resolution error of the
    resynthesised waveform on the frames that overlap a gap. Magnitude only: the phase is the
    prior's, and a complex error against a phase that cannot be matched is least for a
    near-silent fill (format 1's failure)."""
    mcfg = model.config
    synth, pred_c = model.conceal(gapped(clean, gaps), mask)
    target_c = compress(stft(clean, mcfg), mcfg.power)
    m = mask.unsqueeze(-1).float()
    count = m.sum().clamp_min(1.0) * mcfg.bins
    spectral = ((pred_c.abs() - target_c.abs()) ** 2 * m).sum() / count
    inside = gap_samples(clean, gaps)
    mr = clean.new_zeros(())
    for n_fft, hop in MR_RESOLUTIONS:
        window = torch.hann_window(n_fft, device=clean.device)
        a = torch.stft(synth, n_fft, hop, window=window, return_complex=True).abs()
        b = torch.stft(clean, n_fft, hop, window=window, return_complex=True).abs()
        ac, bc = (a + 1e-8) ** mcfg.power, (b + 1e-8) ** mcfg.power
        touched = _touched_frames(inside, n_fft, hop)[..., : a.shape[-1]]
        frames = touched.sum().clamp_min(1.0) * a.shape[1]
        mr = mr + ((ac - bc) ** 2 * touched).sum() / frames
    mr = mr / len(MR_RESOLUTIONS)
    loss = spectral + cfg.mr_weight * mr
    # the fill's energy against the truth's, over the gap samples (0 dB: right level)
    with torch.no_grad():
        fill = float((synth.detach() ** 2 * inside).sum())
        truth = float((clean**2 * inside).sum())
    level_db = 10.0 * math.log10((fill + 1e-12) / (truth + 1e-12))
    return loss, {
        "spectral": float(spectral.detach()),
        "mr": float(mr.detach()),
        "level_db": level_db,
    }


# --------------------------------------------------------------------------------------------
# The loop


@dataclass
class ConcealTrainResult:
    step: int
    final_loss: float
    best_val: float | None
    wall_seconds: float
    checkpoint: Path
    history: list[tuple[int, float]]


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".train.pt")


def best_path(out: Path) -> Path:
    return out.with_name(out.name + ".best")


def _lr(step: int, cfg: ConcealTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * t))


def _check_resumable(saved: dict[str, Any], cfg: ConcealTrainConfig) -> None:
    now = cfg.to_dict()
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise CheckpointError(f"cannot resume with different settings ({details})")


def evaluate(
    model: ConcealmentNet, batches: list[tuple[torch.Tensor, torch.Tensor, list]], cfg
) -> float:
    model.eval()
    total, levels = 0.0, []
    with torch.no_grad():
        for clean, mask, gaps in batches:
            loss, parts = concealment_loss(model, clean, mask, gaps, cfg)
            total += float(loss)
            levels.append(parts["level_db"])
    model.train()
    if levels:
        log.info("held-out fill level %+.1f dB against the truth", float(np.mean(levels)))
    return total / max(1, len(batches))


def train_concealment(
    manifest: Path,
    out: Path,
    cfg: ConcealTrainConfig,
    *,
    resume: bool = False,
    init: str | Path | None = None,
    stop_at: float | None = None,
    progress: StepFn | None = None,
    pool: list[np.ndarray] | None = None,
    val_pool: list[np.ndarray] | None = None,
) -> ConcealTrainResult:
    """Train (or resume) the run saved at ``out``; returns where it stopped."""
    torch.manual_seed(cfg.seed)
    model = ConcealmentNet(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, history, best_val, evals = 0, [], math.inf, []
    wall = 0.0
    if resume:
        try:
            state = torch.load(state_path(out), map_location="cpu", weights_only=False)
        except Exception as exc:  # damaged or missing state: say which file
            raise CheckpointError(
                f"{state_path(out)}: not a readable training state ({exc})"
            ) from exc
        if not isinstance(state, dict) or "train_config" not in state:
            raise CheckpointError(f"{state_path(out)}: not a concealment training state")
        _check_resumable(state["train_config"], cfg)
        weights, _ = load_concealment(out)
        model.load_state_dict(weights.state_dict())
        optimizer.load_state_dict(state["optimizer"])
        step, history = state["step"], [tuple(h) for h in state["history"]]
        best_val, evals, wall = state.get("best_val", math.inf), state.get("evals", []), 0.0
        wall = float(state.get("wall_seconds", 0.0))
        log.info("resumed %s at step %d", out, step)
    elif init is not None:
        weights, _ = load_concealment(init)
        if weights.config != cfg.model:
            raise CheckpointError(f"{init}: its config {weights.config} is not this run's")
        model.load_state_dict(weights.state_dict())
        log.info("warm start from %s", init)
    if pool is None:
        pool = load_pool(read_manifest(manifest, ("train",)), cfg.pool, cfg.seed, cfg.max_clip_s)
    if val_pool is None:
        # The source-disjoint side: the package-disjoint one is what `bench repair` reports,
        # and picking the best checkpoint on it would flatter the benchmark.
        files = read_manifest(manifest, VALIDATION_ROLES)
        val_pool = load_pool(files, 200, cfg.seed + 1, cfg.max_clip_s) if files else []
    val_batches = []
    if val_pool:
        vrng = np.random.default_rng([cfg.seed, 999])
        for _ in range(max(1, cfg.val_excerpts // cfg.batch)):
            val_batches.append(make_batch(val_pool, cfg, vrng, augment=False))
    model.train()
    clock = time.perf_counter()
    last_save = time.monotonic()
    loss_value = math.nan

    def save() -> None:
        nonlocal best_val
        val = evaluate(model, val_batches, cfg) if val_batches else math.nan
        evals.append((step, val))
        summary = {"step": step, "val_loss": val, "train_config": cfg.to_dict()}
        save_concealment(model, out, training=summary, dtype="float32")
        if val_batches and val < best_val:
            best_val = val
            save_concealment(model, best_path(out), training=summary, dtype="float32")
        state = {
            "step": step,
            "train_config": cfg.to_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
            "best_val": best_val,
            "evals": evals,
            "wall_seconds": wall + time.perf_counter() - clock,
        }
        with atomic_path(state_path(out)) as tmp:
            torch.save(state, tmp)
        log.info("step %d: saved %s (held-out loss %.4f)", step, out, val)

    if progress:
        progress(step, cfg.steps, {})
    while step < cfg.steps:
        rng = np.random.default_rng([cfg.seed, step])
        clean, mask, gaps = make_batch(pool, cfg, rng, augment=True)
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, cfg)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss, parts = concealment_loss(model, clean, mask, gaps, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        optimizer.step()
        step += 1
        loss_value = float(loss.detach())
        history.append((step, loss_value))
        if progress:
            progress(step, cfg.steps, {"loss": loss_value, "lr": _lr(step, cfg), **parts})
        stopping = stop_at is not None and time.time() >= stop_at
        if time.monotonic() - last_save >= cfg.save_every_s or step == cfg.steps or stopping:
            save()
            last_save = time.monotonic()
        if stopping:
            break
    if not state_path(out).exists() or step == 0:
        save()
    return ConcealTrainResult(
        step,
        loss_value,
        None if math.isinf(best_val) else best_val,
        wall + time.perf_counter() - clock,
        out,
        history,
    )
