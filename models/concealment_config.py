"""The concealment network's and its training run's settings.

Kept free of torch (like :mod:`maedaw.models.train_config`): the command line builds
``maedaw train-concealment``'s options from these fields, and every ``maedaw`` command, the
REAPER helper's ``maedaw send`` included, builds that parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

FORMAT = "maedaw-concealment/2"  # the "format" of a concealment pair's JSON


def concealment_id(weights_sha256: str | None) -> str:
    """A concealment pair's id, as the daemon and ``maedaw models`` report it: ``concealment-``
    and the first 12 hex digits of its weights' sha256."""
    return f"concealment-{(weights_sha256 or 'unsaved')[:12]}"


@dataclass(frozen=True)
class ConcealmentConfig:
    """The network and its STFT (16 kHz)."""

    n_fft: int = 320  # 20 ms frame
    hop: int = 160  # 10 ms
    power: float = 0.3  # magnitude compression
    conv_channels: int = 160
    hidden: int = 128  # GRU units per direction
    layers: int = 2
    guard: int = 16  # samples around a gap whose frames also count as unknown (resampler tails)

    def __post_init__(self) -> None:
        if self.n_fft < 16 or self.hop <= 0 or self.n_fft % self.hop:
            raise ValueError(f"need n_fft >= 16 divisible by hop, got {self.n_fft}/{self.hop}")
        if not 0.0 < self.power <= 1.0:
            raise ValueError("power must be in (0, 1]")
        if min(self.conv_channels, self.hidden, self.layers) <= 0 or self.guard < 0:
            raise ValueError("conv_channels, hidden and layers must be > 0, guard >= 0")

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConcealmentConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class ConcealTrainConfig:
    """One training run's settings (the network's are ``model``)."""

    steps: int = 20000
    batch: int = 16
    excerpt_s: float = 2.0
    lr: float = 1e-3
    min_lr: float = 5e-5
    warmup_steps: int = 200
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    min_gap_ms: float = 10.0
    max_gap_ms: float = 120.0
    max_gaps: int = 4
    augment_prob: float = 0.15
    level_db: tuple[float, float] = (-35.0, -14.0)
    pool: int = 1500  # train clips held in memory
    max_clip_s: float = 20.0
    val_excerpts: int = 48
    seed: int = 0
    # bf16 autocast: measured 5.8x SLOWER on this CPU for the GRU (4.84 vs 0.83 s/step,
    # batch 16, 1 thread), so off by default
    bf16: bool = False
    mr_weight: float = 0.5
    save_every_s: float = 300.0
    model: ConcealmentConfig = field(default_factory=ConcealmentConfig)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["level_db"] = list(self.level_db)
        return out
