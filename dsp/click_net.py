"""Digital click or acoustic transient? A small convolutional judge over the waveform.

The click test of :mod:`.detect` nominates candidate zones (the whitened signal jumps out of
its local scale) and checks each with two-sided AR models. A logistic score over ten numbers
measured there then kept transients out, but it also kept out half of
the inserted clicks on held-out folders, and 29 % of clicks never pass the AR test at all.
(The logistic score is gone; its measurements, :mod:`.click_evidence`, are inputs here.)
This judge looks at the samples themselves: a window of ``WINDOW`` samples around the zone's
strongest error, in two channels (the signal over its local RMS and the whitening filter's
signed error over its local scale), plus the AR test's measurements when it passed. It gives
a click probability for every sample of the window: the zone's confidence is the largest, the
span to repair the samples near it.

Why a network: a click is a shape (a few samples that leave the waveform and come back, the
signal carrying on as before); a transient is another shape (an attack that rings on, a
pulse the programme repeats). Thresholds on summary numbers cannot tell them apart where the
programme is loud and peaky (game speech); a few thousand weights looking at the samples can.

Inference is plain numpy (dilated 1-D convolutions as batched matrix products): detection
stays torch-free and cheap, since only candidate zones (a few dozen per second) are judged.
Training (:mod:`maedaw.benchmarks.click_train`) builds the same layers in torch; the weights
ship as ``click_net.safetensors`` beside this module, with how they were made in its metadata.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import numpy as np

from maedaw.core.util import atomic_path

from .click_evidence import FEATURES, ClickEvidence

__all__ = [
    "HALF",
    "KERNEL",
    "N_SCALARS",
    "WINDOW",
    "ClickNet",
    "bundled_click_net",
    "neighbourhood",
    "scalar_inputs",
    "window_inputs",
]

BUNDLED: Final = Path(__file__).with_name("click_net.safetensors")
WINDOW: Final = 192  # samples judged per zone, centred on its strongest whitened error
HALF: Final = WINDOW // 2
KERNEL: Final = 5  # every convolution: this many taps, dilated 1, 2, 4, ... (5 layers: 125)
FORMAT: Final = "maedaw-click-net/2"
NEAR_S: Final = 0.1  # candidates this close count as the zone's neighbours
FAR_S: Final = 1.0  # ...and as strong ones within this, the programme's own impulses
# Scalars per zone: log2(rate / 16 kHz), level (dBFS / 20), its strength (log of its peak
# whitened error over the local scale), how many candidates are near it and how the
# strongest of them compares, how many at least half as strong lie within a second (fire,
# rain, crackle and ticking are made of impulses; a click stands alone), "the AR test
# passed", and the AR test's ten measurements (zeros when it did not).
N_SCALARS: Final = 7 + len(FEATURES)


def _squash(v: np.ndarray) -> np.ndarray:
    """asinh: linear near 0, logarithmic for the huge ratios a click produces."""
    return np.arcsinh(v, out=v)


def window_inputs(
    x: np.ndarray,
    err: np.ndarray,
    centres: np.ndarray,
    x_scale: np.ndarray,
    err_scale: np.ndarray,
) -> np.ndarray:
    """(zones, 2, WINDOW) float32: ``x`` over ``x_scale`` and the signed whitened error
    ``err`` over ``err_scale`` (one scale per zone), around each centre; zeros past the
    ends."""
    n = x.size
    idx = centres[:, None] + np.arange(-HALF, WINDOW - HALF)[None, :]
    inside = (idx >= 0) & (idx < n)
    safe = np.clip(idx, 0, max(n - 1, 0))
    out = np.empty((centres.size, 2, WINDOW), dtype=np.float32)
    out[:, 0] = np.where(inside, x[safe], 0.0) / np.maximum(x_scale, 1e-9)[:, None]
    out[:, 1] = np.where(inside, err[safe], 0.0) / np.maximum(err_scale, 1e-9)[:, None]
    return _squash(out)


def neighbourhood(
    positions: np.ndarray, strengths: np.ndarray, rate: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per candidate (sorted ``positions``, their log ``strengths``): how many others lie
    within NEAR_S, the strongest of those over its own strength (log; -5 when alone), and
    how many others at least half as strong lie within FAR_S."""
    near, far = round(NEAR_S * rate), round(FAR_S * rate)
    lo = np.searchsorted(positions, positions - near, side="left")
    hi = np.searchsorted(positions, positions + near, side="right")
    far_lo = np.searchsorted(positions, positions - far, side="left")
    far_hi = np.searchsorted(positions, positions + far, side="right")
    count = hi - lo - 1
    rival = np.full(positions.size, -5.0)
    strong = np.zeros(positions.size, dtype=np.int64)
    half = math.log(2.0)
    for i in np.flatnonzero(far_hi - far_lo > 1):  # only where there are neighbours
        around = strengths[far_lo[i] : far_hi[i]]
        strong[i] = int((around >= strengths[i] - half).sum()) - 1
        if count[i] > 0:
            others = np.concatenate([strengths[lo[i] : i], strengths[i + 1 : hi[i]]])
            rival[i] = max(float(others.max() - strengths[i]), -5.0)
    return count, rival, strong


def scalar_inputs(
    rate: int,
    level_db: np.ndarray,
    strength: np.ndarray,
    neighbours: np.ndarray,
    rival: np.ndarray,
    strong: np.ndarray,
    evidence: list[ClickEvidence | None],
) -> np.ndarray:
    """(zones, N_SCALARS) float32, unstandardised (the net standardises them); ``strength``
    and ``rival`` are logs, ``neighbours`` and ``strong`` counts (see :func:`neighbourhood`)."""
    out = np.zeros((len(evidence), N_SCALARS), dtype=np.float32)
    out[:, 0] = math.log2(rate / 16000.0)
    out[:, 1] = np.maximum(level_db, -120.0) / 20.0
    out[:, 2] = strength
    out[:, 3] = np.log1p(neighbours)
    out[:, 4] = rival
    out[:, 5] = np.log1p(strong)
    for i, ev in enumerate(evidence):
        if ev is not None:
            out[i, 6] = 1.0
            out[i, 7:] = ev.features()
    return out


@dataclass(frozen=True)
class ClickNet:
    """Dilated convolutions (ReLU) over the window, then per sample a linear head over the
    last layer's channels there, their mean over the window (what the whole window looks
    like) and the standardised scalars: a click logit per sample."""

    convs: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weight (out, in, KERNEL), bias (out,))
    head: np.ndarray  # (2 * channels + N_SCALARS,): per sample, window mean, scalars
    head_bias: float
    scalar_mean: np.ndarray  # (N_SCALARS,)
    scalar_scale: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        channels = 2
        for weight, bias in self.convs:
            if weight.ndim != 3 or weight.shape[1:] != (channels, KERNEL):
                raise ValueError(f"conv weight {weight.shape} does not take {channels} channels")
            if bias.shape != (weight.shape[0],):
                raise ValueError("conv bias does not match its weight")
            channels = weight.shape[0]
        if self.head.shape != (2 * channels + N_SCALARS,):
            raise ValueError(f"head {self.head.shape} is not ({2 * channels + N_SCALARS},)")
        if self.scalar_mean.shape != (N_SCALARS,) or self.scalar_scale.shape != (N_SCALARS,):
            raise ValueError("scalar standardisation has the wrong size")
        arrays = [a for pair in self.convs for a in pair]
        arrays += [self.head, self.scalar_mean, self.scalar_scale]
        finite = all(np.isfinite(a).all() for a in arrays) and math.isfinite(self.head_bias)
        if not finite or (self.scalar_scale <= 0).any():
            raise ValueError("click net parameters must be finite, scales > 0")

    def logits(self, windows: np.ndarray, scalars: np.ndarray) -> np.ndarray:
        """(zones, WINDOW) per-sample click logits for ``window_inputs``/``scalar_inputs``."""
        h = np.asarray(windows, dtype=np.float32)
        batch, width = h.shape[0], h.shape[-1]
        if batch == 0:
            return np.zeros((0, width), dtype=np.float32)
        for layer, (weight, bias) in enumerate(self.convs):
            dilation = 2**layer
            pad = dilation * (KERNEL - 1) // 2
            padded = np.pad(h, ((0, 0), (0, 0), (pad, pad)))
            # Taps stacked as (batch, in * KERNEL, width): one matrix product per layer.
            taps = np.stack(
                [padded[:, :, t * dilation : t * dilation + width] for t in range(KERNEL)], axis=2
            ).reshape(batch, -1, width)
            h = np.matmul(weight.reshape(weight.shape[0], -1), taps)
            h += bias[:, None]
            np.maximum(h, 0.0, out=h)
        channels = h.shape[1]
        z = (np.asarray(scalars, dtype=np.float32) - self.scalar_mean) / self.scalar_scale
        per_zone = h.mean(axis=2) @ self.head[channels : 2 * channels]
        per_zone += z @ self.head[2 * channels :] + self.head_bias
        return np.einsum("c,bcw->bw", self.head[:channels], h) + per_zone[:, None]

    def probabilities(self, windows: np.ndarray, scalars: np.ndarray) -> np.ndarray:
        """(zones, WINDOW) per-sample click probabilities."""
        logits = np.clip(self.logits(windows, scalars), -60.0, 60.0)
        return 1.0 / (1.0 + np.exp(-logits))

    # -- files ---------------------------------------------------------------------------
    def tensors(self) -> dict[str, np.ndarray]:
        out = {f"conv{i}.weight": w for i, (w, _) in enumerate(self.convs)}
        out |= {f"conv{i}.bias": b for i, (_, b) in enumerate(self.convs)}
        out["head.weight"] = self.head
        out["head.bias"] = np.array([self.head_bias], dtype=np.float32)
        out["scalar.mean"] = self.scalar_mean
        out["scalar.scale"] = self.scalar_scale
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}

    def save(self, path: Path) -> None:
        """Write the weights (float32 safetensors) with the format and provenance."""
        from safetensors.numpy import save_file

        meta = {"format": FORMAT, "provenance": json.dumps(self.provenance, sort_keys=True)}
        with atomic_path(path) as temp:
            save_file(self.tensors(), str(temp), metadata=meta)

    @classmethod
    def load(cls, path: Path) -> ClickNet:
        """Read a click net; ValueError when the file is missing, corrupt or another format."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r} is not {FORMAT}")
            layers = sum(1 for k in tensors if k.endswith(".weight") and k.startswith("conv"))
            convs = tuple(
                (tensors[f"conv{i}.weight"], tensors[f"conv{i}.bias"]) for i in range(layers)
            )
            return cls(
                convs,
                tensors["head.weight"],
                float(tensors["head.bias"][0]),
                tensors["scalar.mean"],
                tensors["scalar.scale"],
                json.loads(meta.get("provenance", "{}")),
            )
        except (OSError, SafetensorError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"{path}: not a click net ({exc})") from exc


@lru_cache(maxsize=1)
def bundled_click_net() -> ClickNet:
    """The judge that ships with maedaw (``click_net.safetensors``)."""
    return ClickNet.load(BUNDLED)
