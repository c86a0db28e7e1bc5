"""Synthetic damage with ground truth, for the demo, the tests and the benchmarks.

Each function returns a damaged *copy* and the spans it damaged, so a caller can
score a detector (recall/precision) or a repair (gap SNR against the original).
Signals are float arrays shaped ``(channels, frames)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spans import DamageKind, Span


@dataclass(frozen=True, slots=True)
class DamagePlan:
    """How much damage :func:`damage_randomly` inserts, per channel."""

    dropouts: int = 2
    dropout_ms: tuple[float, float] = (5.0, 20.0)
    level_drops: int = 1
    level_drop_ms: tuple[float, float] = (10.0, 40.0)
    level_drop_db: float = 30.0
    clicks: int = 3
    click_samples: tuple[int, int] = (1, 8)
    click_amplitude: float = 0.5


def insert_dropout(x: np.ndarray, channel: int, start: int, length: int) -> Span:
    """Zero ``length`` samples of one channel in place (a digital-silence dropout)."""
    x[channel, start : start + length] = 0.0
    return Span(start, start + length, channel, DamageKind.DROPOUT, 1.0)


def insert_level_drop(
    x: np.ndarray, channel: int, start: int, length: int, drop_db: float = 30.0
) -> Span:
    """Attenuate a stretch of one channel in place by ``drop_db`` (a wireless-mic fade-out)."""
    x[channel, start : start + length] *= 10.0 ** (-drop_db / 20.0)
    return Span(start, start + length, channel, DamageKind.LEVEL_DROP, 1.0)


def insert_click(
    x: np.ndarray, channel: int, start: int, length: int, amplitude: float, rng: np.random.Generator
) -> Span:
    """Add an impulsive disturbance of ``length`` samples in place."""
    shape = np.hanning(length + 2)[1:-1] if length > 2 else np.ones(length)
    sign = rng.choice([-1.0, 1.0])
    x[channel, start : start + length] += sign * amplitude * shape * rng.uniform(0.7, 1.0, length)
    np.clip(x[channel, start : start + length], -1.0, 1.0, out=x[channel, start : start + length])
    return Span(start, start + length, channel, DamageKind.CLICK, 1.0)


def hard_clip(x: np.ndarray, level: float) -> tuple[np.ndarray, list[Span]]:
    """Clip a copy at ``±level``; return it with the clipped runs as spans."""
    clipped = np.clip(x, -level, level)
    spans: list[Span] = []
    for channel in range(x.shape[0]):
        held = np.abs(x[channel]) >= level
        edges = np.flatnonzero(np.diff(np.concatenate([[0], held.astype(np.int8), [0]])))
        for start, end in zip(edges[::2], edges[1::2], strict=True):
            spans.append(Span(int(start), int(end), channel, DamageKind.CLIP, 1.0))
    return clipped, spans


def damage_randomly(
    x: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    plan: DamagePlan | None = None,
    margin_s: float = 0.1,
) -> tuple[np.ndarray, list[Span]]:
    """Insert dropouts, level drops and clicks at random, non-overlapping places.

    Damage keeps ``margin_s`` away from the ends and from other damage, so every
    span has clean context on both sides (what a detector and a repair need).
    """
    plan = plan or DamagePlan()
    damaged = np.array(x, dtype=np.float64, copy=True)
    channels, frames = damaged.shape
    margin = int(margin_s * sample_rate)
    truth: list[Span] = []
    for channel in range(channels):
        taken: list[tuple[int, int]] = []

        def place(length: int, channel_taken: list[tuple[int, int]] = taken) -> int | None:
            for _ in range(200):
                start = int(rng.integers(margin, max(margin + 1, frames - margin - length)))
                lo, hi = start - margin, start + length + margin
                if all(hi <= a or lo >= b for a, b in channel_taken):
                    channel_taken.append((lo, hi))
                    return start
            return None

        def ms(bounds: tuple[float, float]) -> int:
            return max(1, int(rng.uniform(*bounds) * sample_rate / 1000.0))

        for _ in range(plan.dropouts):
            length = ms(plan.dropout_ms)
            if (start := place(length)) is not None:
                truth.append(insert_dropout(damaged, channel, start, length))
        for _ in range(plan.level_drops):
            length = ms(plan.level_drop_ms)
            if (start := place(length)) is not None:
                truth.append(insert_level_drop(damaged, channel, start, length, plan.level_drop_db))
        for _ in range(plan.clicks):
            length = int(rng.integers(plan.click_samples[0], plan.click_samples[1] + 1))
            if (start := place(length)) is not None:
                truth.append(
                    insert_click(damaged, channel, start, length, plan.click_amplitude, rng)
                )
    truth.sort()
    return damaged, truth
