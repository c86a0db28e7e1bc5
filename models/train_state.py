"""A run's saved state: the checkpoint pair, the optimiser state beside it, and what resume checks.

Checkpoints are our safetensors pair (float32, usable as a model at once) plus
``NAME.train.pt`` with the optimiser, scheduler, step, loss history and held-out scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from maedaw.core.util import atomic_path

from .audiomae import AudioMAE
from .checkpoint import CheckpointError, save_model
from .train_config import TrainConfig

# What may change between a run and its resume (everything else must match).
RESUMABLE_CHANGES = {"steps", "save_every", "log_every"}


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".train.pt")


def best_path(out: Path) -> Path:
    """Where the checkpoint with the lowest held-out loss is kept (weights only)."""
    return out.with_name(out.name + ".best")


def save_checkpoint(
    model: AudioMAE,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    out: Path,
    step: int,
    cfg: TrainConfig,
    history: list[tuple[int, float]],
    summary: dict[str, Any],
) -> None:
    """Weights first (usable as a model), then the training state, each written atomically."""
    save_model(model, out, training={**summary, "step": step}, dtype="float32")
    state = {
        "step": step,
        "train_config": cfg.to_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "history": history,
        "wall_seconds": summary.get("wall_seconds", 0.0),
        "evals": summary.get("evals", []),
    }
    with atomic_path(state_path(out)) as tmp:
        torch.save(state, tmp)


def load_state(out: Path, cfg: TrainConfig) -> dict[str, Any]:
    """The training state saved beside ``out``, if ``cfg`` may resume it (else CheckpointError,
    also for a damaged or foreign state file)."""
    path = state_path(out)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises pickle, zip and runtime errors for damaged files
        raise CheckpointError(f"{path}: not a readable training state ({exc})") from exc
    if not isinstance(state, dict) or "train_config" not in state:
        raise CheckpointError(f"{path}: not a maedaw training state")
    check_resumable(state["train_config"], cfg)
    return state


def check_resumable(saved: dict[str, Any], cfg: TrainConfig) -> None:
    now = cfg.to_dict()
    # Settings added after a run was saved take their defaults (what that run used).
    saved = {**TrainConfig().to_dict(), **saved}
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise CheckpointError(f"cannot resume with different settings ({details})")
