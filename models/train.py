"""Self-supervised pre-training (and fine-tuning) of Audio-MAE on folders of audio: the loop.

The run, top to bottom (the data, the settings, the seeds and the saved state each have their
own module):

1. **Data** (``train_data``): scan the folders, cache every file's fbank once, draw batches of
   random 1024-frame windows, augment them.
2. **Loss**: MSE on masked patches (mask ratio 0.8, unstructured), counting only patches whose
   16 frames are all real audio: predicting padding teaches nothing.
3. **Optimiser**: AdamW (betas 0.9/0.95, weight decay on matrices only), linear warm-up then
   cosine decay to ``min_lr``, gradient-norm clipping.
4. **Determinism / resume**: the batch, the mask and the dropout RNG of step ``k`` are all drawn
   from generators seeded by ``(seed, k)`` (the named streams of ``train_seeds``), so a run
   resumed from a checkpoint at step ``k`` replays exactly what an uninterrupted run would have
   done (bit-for-bit on CPU; CUDA kernels may differ in the last bits). What a checkpoint holds
   and what resume checks is ``train_state``.

Progress goes to the caller's ``progress`` callback (the command line draws a bar from it);
the loop itself only logs.

Precision: bf16 autocast on CUDA. On CPU float32 by default; ``--bf16`` turns on bf16 autocast
there too. Measured on the 2-core Zen 5 dev machine (compact, batch 8, same batches and masks):
0.38 s/step bf16 vs 0.70 s/step fp32, and the first 16 losses agree to 3-4 digits (1.2562 ->
0.1910 vs 0.1911), so the bundled model was trained with it. CPUs without native bf16
instructions (no AVX512-BF16 / AMX) run it slower than fp32: keep the default there.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maedaw.core.util import CountFn

from . import frontend
from .audiomae import AudioMAE, AudioMAEConfig, preset, random_mask, span_mask
from .checkpoint import CheckpointError, load_model, save_model
from .frontend import DEFAULT_FRONTEND, FrontendConfig
from .train_config import TrainConfig
from .train_data import (
    FbankCache,
    TrainDataError,
    WindowSampler,
    augment,
    build_cache,
    dither,
    scan_audio,
)
from .train_seeds import seed_for, torch_generator
from .train_state import best_path, load_state, save_checkpoint, state_path

logger = logging.getLogger(__name__)

StepFn = Callable[[int, int, dict[str, float]], None]
"""Training progress: steps done, steps in all, and that step's ``loss``, ``windows_per_second``
and ``lr``. Called once before the first step (with an empty dict), then after every step."""


@dataclass
class TrainResult:
    step: int
    final_loss: float
    wall_seconds: float
    windows_per_second: float
    checkpoint: Path
    history: list[tuple[int, float]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Masks and loss


def training_mask(model: AudioMAE, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """This step's mask: unstructured rows, and a ``span_prob`` share of span rows."""
    batch, grid = cfg.batch, model.config.grid_size
    mask = random_mask(batch, model.config.num_patches, cfg.mask_ratio, None, generator)
    if cfg.span_prob > 0:
        spans = span_mask(batch, grid, cfg.mask_ratio, cfg.max_span, None, generator)
        pick = torch.rand(batch, generator=generator) < cfg.span_prob
        mask = torch.where(pick[:, None], spans, mask)
    return mask


def real_patches(valid_frames: torch.Tensor, model: AudioMAE) -> torch.Tensor:
    """``(B, L)`` True where all 16 frames of the patch are real audio (not padding)."""
    gt, gf = model.config.grid_size
    p = model.config.patch_size
    ends = (torch.arange(gt, device=valid_frames.device) + 1) * p
    columns = ends.unsqueeze(0) <= valid_frames.unsqueeze(1)  # (B, gt)
    return columns.unsqueeze(2).expand(-1, gt, gf).reshape(-1, gt * gf)


def masked_loss(
    model: AudioMAE, fbank: torch.Tensor, mask: torch.Tensor, real: torch.Tensor
) -> torch.Tensor:
    """MSE over masked patches that hold real audio."""
    images = fbank.unsqueeze(1)
    tokens, ids_keep, _ = model.forward_encoder(images, mask)
    pred = model.forward_decoder(tokens, mask, ids_keep)
    return model.loss(images, pred, mask & real)


# --------------------------------------------------------------------------------------------
# Optimiser and schedule


def make_optimizer(model: AudioMAE, cfg: TrainConfig) -> torch.optim.AdamW:
    # No decay on biases, norms, tokens (1-D or scalar-like): the usual ViT/MAE recipe.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak lr at ``step``: linear warm-up, then cosine to ``min_lr``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------------------------
# The loop


def heldout_loss(
    model: AudioMAE,
    cache: FbankCache,
    cfg: TrainConfig,
    fe: FrontendConfig,
    device: torch.device,
    batch: int = 32,
) -> dict[str, float]:
    """Masked MSE on held-out windows (each file's first 1024 frames) under the training's two
    mask kinds, with masks fixed by ``cfg.seed``: comparable across checkpoints of a run."""
    gen = torch_generator(cfg.seed, "heldout")
    totals = {"random": [0.0, 0], "span": [0.0, 0]}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for first in range(0, len(cache.lengths), batch):
            rows, valid = [], []
            for i in range(first, min(first + batch, len(cache.lengths))):
                offset = int(cache.offsets[i])
                take = min(int(cache.lengths[i]), fe.target_frames)
                frames = np.asarray(cache.data[offset : offset + take], dtype=np.float32)
                window, real_frames = frontend.fit_window(torch.from_numpy(frames), fe)
                rows.append(window)
                valid.append(real_frames)
            x = torch.stack(rows).to(device)
            real = real_patches(torch.tensor(valid, device=device), model)
            n = x.shape[0]
            masks = {
                "random": random_mask(n, model.config.num_patches, cfg.mask_ratio, None, gen),
                "span": span_mask(
                    n, model.config.grid_size, cfg.mask_ratio, cfg.max_span, None, gen
                ),
            }
            for kind, mask in masks.items():
                mask = mask.to(device)
                count = int((mask & real).sum())
                if count == 0:
                    continue
                # The training's precision: bf16 on CUDA, and on the CPU where asked.
                with torch.autocast(
                    device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" or cfg.bf16
                ):
                    loss = masked_loss(model, x, mask, real)
                totals[kind][0] += float(loss) * count
                totals[kind][1] += count
    model.train(was_training)
    return {k: (v[0] / v[1] if v[1] else float("nan")) for k, v in totals.items()}


def pick_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(
    folders: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    cfg: TrainConfig,
    *,
    init: str | os.PathLike[str] | None = None,
    resume: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | None = None,
    stop_at: float | None = None,
    progress: StepFn | None = None,
    cache_progress: CountFn | None = None,
    model_config: AudioMAEConfig | None = None,
    cache: tuple[FbankCache, FrontendConfig] | None = None,
    eval_cache: FbankCache | None = None,
) -> TrainResult:
    """Train (or fine-tune from ``init``, or resume ``out``) and return the last checkpoint.

    ``stop_at`` is a ``time.time()`` deadline: the loop saves and returns when it passes
    (a scheduled stop; ``--resume`` continues it later). ``model_config`` replaces the preset
    for a fresh model (tests use tiny ones). ``cache`` trains from a prebuilt (e.g. portable)
    cache and its front end instead of ``folders``; ``eval_cache`` adds a held-out loss at
    every checkpoint and keeps the best weights at ``best_path(out)``. ``progress`` hears of
    every step, ``cache_progress`` of every file cached.
    """
    out = Path(out)
    dev = pick_device(device)
    torch.manual_seed(seed_for(cfg.seed, "init"))
    paths = scan_audio(folders) if cache is None else []
    fe = DEFAULT_FRONTEND if cache is None else cache[1]
    # Model: fresh, fine-tuned from --init, or resumed from out.
    state: dict[str, Any] | None = None
    if resume and state_path(out).is_file():
        model, meta = load_model(out)
        fe = meta.frontend
        state = load_state(out, cfg)
        logger.info("resuming %s at step %d", out, state["step"])
    elif resume:
        raise CheckpointError(f"{state_path(out)}: nothing to resume")
    elif init is not None:
        model, meta = load_model(init)
        fe = meta.frontend
        if not model.has_decoder:
            raise CheckpointError(f"{init}: has no decoder; cannot continue MAE training")
        logger.info("fine-tuning %s (%s)", meta.model_id, init)
    else:
        model = AudioMAE(model_config or preset(cfg.config, mask_ratio=cfg.mask_ratio))
    model.to(dev).train()

    if cache is None:
        cache_root = Path(cache_dir) if cache_dir else out.parent / f"{out.name}.cache"
        data = build_cache(paths, cache_root, fe, cache_progress)
    else:
        data, cache_fe = cache
        if cache_fe != fe:
            raise TrainDataError("the cache was made with a different front end than the model's")
    if (fe.target_frames, fe.num_mel_bins) != tuple(model.config.img_size):
        raise TrainDataError(
            f"front end gives {fe.target_frames}x{fe.num_mel_bins} windows, the model takes "
            f"{tuple(model.config.img_size)}"
        )
    sampler = WindowSampler(data, fe, cfg.seed, cfg.pack_short, cfg.folder_balance)

    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    history: list[tuple[int, float]] = []
    step, wall_before = 0, 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history = int(state["step"]), [tuple(h) for h in state["history"]]
        wall_before = float(state.get("wall_seconds", 0.0))

    summary = {
        "data": {
            "folders": [str(f) for f in folders],
            "files": len(data.paths),
            "hours": round(data.hours(fe), 4),
        },
        "train_config": cfg.to_dict(),
        "init": str(init) if init else None,
        "device": str(dev),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    autocast = dev.type == "cuda" or cfg.bf16
    started = time.time()
    seen_windows = 0
    last_loss = float("nan")
    evals: list[dict[str, float]] = list(state.get("evals", [])) if state else []

    def checkpoint() -> None:
        summary["wall_seconds"] = round(wall_before + time.time() - started, 1)
        summary["final_loss"] = last_loss if math.isfinite(last_loss) else None
        if eval_cache is not None:
            scores = heldout_loss(model, eval_cache, cfg, fe, dev)
            scores = {"step": step, **{k: round(v, 5) for k, v in scores.items()}}
            best = min((e["random"] + e["span"] for e in evals), default=math.inf)
            evals.append(scores)
            summary["heldout"] = scores
            logger.info("held-out loss at step %d: %s", step, scores)
            if scores["random"] + scores["span"] < best:
                save_model(model, best_path(out), training={**summary, "step": step})
        summary["evals"] = evals
        save_checkpoint(model, optimizer, scheduler, out, step, cfg, history, summary)
        logger.info("checkpoint at step %d -> %s", step, out)

    # On a GPU the whole cache goes to device memory (2 h of audio is ~200 MB) and windows are
    # gathered there; the window choice (a few integers per window, drawn from (seed, step)
    # only, so resume is unaffected) is done ahead in a thread. Cropping on the CPU instead
    # held an H100 to ~640 windows/s.
    source = None
    pool = None
    pending: dict[int, Future[tuple[np.ndarray, np.ndarray]]] = {}
    if dev.type == "cuda":
        source = torch.from_numpy(np.array(data.data)).to(dev)
        pool = ThreadPoolExecutor(max_workers=2)

    def next_batch(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if pool is None or source is None:
            return sampler.batch(k, cfg.batch)
        for j in range(k, min(k + 4, cfg.steps)):
            if j not in pending:
                pending[j] = pool.submit(sampler.batch_frames, j, cfg.batch)
        return sampler.gather(*pending.pop(k).result(), source)

    if progress is not None:
        progress(step, cfg.steps, {})
    while step < cfg.steps:
        fbank, valid = next_batch(step)
        fbank, valid = fbank.to(dev, non_blocking=True), valid.to(dev)
        # Mask, augmentation, dither and dropout of this step depend on (seed, step) only.
        gen = torch_generator(cfg.seed, "mask", step)
        mask = training_mask(model, cfg, gen).to(dev)
        if data.quant_step > 0:
            dev_gen = torch_generator(cfg.seed, "dither", step, dev)
            fbank = dither(fbank, valid, data.quant_step, dev_gen)
        fbank = augment(fbank, valid, cfg, fe, gen)
        torch.manual_seed(seed_for(cfg.seed, "dropout", step))
        real = real_patches(valid, model)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            loss = masked_loss(model, fbank, mask, real)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        seen_windows += cfg.batch
        last_loss = float(loss.detach())
        history.append((step, last_loss))
        rate = seen_windows / max(1e-9, time.time() - started)
        if progress is not None:
            lr = scheduler.get_last_lr()[0]
            progress(step, cfg.steps, {"loss": last_loss, "windows_per_second": rate, "lr": lr})
        if step % cfg.log_every == 0 or step == cfg.steps:
            recent = [v for _, v in history[-cfg.log_every :]]
            logger.info(
                "step %d/%d loss %.4f (mean of last %d: %.4f) lr %.2e %.2f windows/s",
                step,
                cfg.steps,
                last_loss,
                len(recent),
                sum(recent) / len(recent),
                scheduler.get_last_lr()[0],
                rate,
            )
        deadline = stop_at is not None and time.time() >= stop_at
        if step % cfg.save_every == 0 or step == cfg.steps or deadline:
            checkpoint()
        if deadline:
            logger.info("deadline reached at step %d; resume with --resume", step)
            break
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
    if step == 0 or (history and history[-1][0] != step):
        checkpoint()
    wall = wall_before + time.time() - started
    return TrainResult(
        step=step,
        final_loss=last_loss,
        wall_seconds=wall,
        windows_per_second=seen_windows / max(1e-9, time.time() - started),
        checkpoint=out,
        history=history,
    )
