"""Learned concealment of 10-120 ms gaps: a small two-sided network on the compressed STFT.

The DAW has the future, so unlike real-time packet-loss concealment the model sees both sides
of a gap. At 16 kHz (20 ms Hann frames, 10 ms hop) every frame becomes its power-law
compressed spectrum ``|X|^0.3 e^{j angle X}`` (real and imaginary parts); frames that touch a
gap are zeroed and flagged in a mask channel.

The network corrects an estimate that needs none (:func:`prior`): per bin, the log magnitude
interpolated across the gap between the nearest known frames, the phase continued from both
sides by a phase vocoder. A small conv front and a bidirectional GRU over the frames see the
masked spectrum and that estimate and predict a per-bin log gain for it; the head starts at
zero, so an untrained network *is* the estimate. (Format 1 predicted the complex spectrum from
nothing: its complex loss made near-silent fills optimal and it lost to AR at every gap
length.) The masked frames take the corrected estimate, the rest keep the signal's own STFT,
and the inverse STFT gives a waveform that meets its context with matching phase.

:class:`Concealer` makes that a :class:`maedaw.dsp.inpainting.Inpainter` for ``dsp.repair``:
any rate, any channel count (each channel on its own: measured better than mid/side on the
first training run, see the model card), the band above 8 kHz of native-rate sources continued
from the context's own spectrum (level interpolated across the gap, phase continued by the
phase vocoder of :mod:`maedaw.models.inpaint`), since the model only sees 16 kHz.

Checkpoints are a safetensors file plus a JSON description (format, config, sha256 of the
weights); a damaged, truncated or foreign pair raises :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from maedaw.core.util import merge_intervals, write_text_atomic
from maedaw.dsp.resample import resample

from .checkpoint import CheckpointError, weights_sha256
from .concealment_config import FORMAT, ConcealmentConfig, concealment_id

log = logging.getLogger(__name__)

RATE = 16000
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_NAME = "concealment-default"

__all__ = [
    "DEFAULT_NAME",
    "Concealer",
    "ConcealmentConfig",
    "ConcealmentNet",
    "gap_frame_mask",
    "load_concealment",
    "prior",
    "save_concealment",
]


# --------------------------------------------------------------------------------------------
# STFT and masks


def _window(cfg: ConcealmentConfig, device: torch.device | None = None) -> torch.Tensor:
    return torch.hann_window(cfg.n_fft, periodic=True, device=device)


def stft(x: torch.Tensor, cfg: ConcealmentConfig) -> torch.Tensor:
    """``(B, N)`` -> ``(B, frames, bins)`` complex; frame ``t`` centred on sample ``t hop``."""
    spec = torch.stft(
        x,
        cfg.n_fft,
        cfg.hop,
        window=_window(cfg, x.device),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return spec.transpose(1, 2)


def istft(spec: torch.Tensor, cfg: ConcealmentConfig, length: int) -> torch.Tensor:
    return torch.istft(
        spec.transpose(1, 2),
        cfg.n_fft,
        cfg.hop,
        window=_window(cfg, spec.device),
        center=True,
        length=length,
    )


def compress(spec: torch.Tensor, power: float) -> torch.Tensor:
    magnitude = spec.abs()
    return spec * (magnitude.clamp_min(1e-12) ** (power - 1.0))


def decompress(spec: torch.Tensor, power: float) -> torch.Tensor:
    magnitude = spec.abs()
    return spec * (magnitude.clamp_min(1e-12) ** (1.0 / power - 1.0))


def gap_frame_mask(
    length: int, gaps: Sequence[tuple[int, int]], cfg: ConcealmentConfig
) -> np.ndarray:
    """Bool per STFT frame of a ``length``-sample signal: does it touch a gap (with guard)?"""
    frames = 1 + length // cfg.hop
    centres = np.arange(frames) * cfg.hop
    half = cfg.n_fft // 2
    out = np.zeros(frames, dtype=bool)
    for lo, hi in gaps:
        out |= (centres - half < hi + cfg.guard) & (centres + half > lo - cfg.guard)
    return out


def _interpolation(known: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each frame: the nearest known frame at or before it, at or after it (the other
    one where a side has none), and the weight of the later one."""
    frames = np.arange(known.size)
    left = np.maximum.accumulate(np.where(known, frames, -1))
    right = np.minimum.accumulate(np.where(known, frames, known.size)[::-1])[::-1]
    left = np.where(left < 0, right, left)
    right = np.where(right >= known.size, left, right)
    span = np.maximum(right - left, 1)
    return left, right, (frames - left) / span


def prior(spec: torch.Tensor, mask: torch.Tensor, cfg: ConcealmentConfig) -> torch.Tensor:
    """The estimate of the masked frames that needs no network, ``(B, T, F)`` complex: per
    bin, log magnitude interpolated linearly between the nearest known frames, phase continued
    across the gap from both sides (:func:`maedaw.models.inpaint.continue_phase`). Known frames
    keep ``spec``; a row with no known frame gets zeros."""
    from .inpaint import continue_phase

    rows = spec.detach().cpu().numpy()
    masks = mask.cpu().numpy()
    out = rows.copy()
    for b, (row, gap) in enumerate(zip(rows, masks, strict=True)):
        known = ~gap
        if not gap.any():
            continue
        if not known.any():
            out[b] = 0.0
            continue
        left, right, w = _interpolation(known)
        level = np.log(np.abs(row) + 1e-9)
        interp = (1.0 - w)[:, None] * level[left] + w[:, None] * level[right]
        phasors = continue_phase(row, known, cfg)
        out[b, gap] = (np.exp(interp) * phasors)[gap]
    return torch.from_numpy(out).to(spec.device)


# --------------------------------------------------------------------------------------------
# The network


class ConcealmentNet(nn.Module):
    """Masked compressed STFT frames and the :func:`prior` -> the prior with a per-bin gain."""

    max_gain_db = 30.0  # the correction is bounded: it refines the estimate, never replaces it

    def __init__(self, config: ConcealmentConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ConcealmentConfig()
        features = 3 * cfg.bins + 1
        self.front = nn.Sequential(
            nn.Conv1d(features, cfg.conv_channels, 3, padding=1),
            nn.GELU(),
            nn.Conv1d(cfg.conv_channels, cfg.conv_channels, 3, padding=1),
            nn.GELU(),
        )
        self.gru = nn.GRU(
            cfg.conv_channels, cfg.hidden, cfg.layers, batch_first=True, bidirectional=True
        )
        self.head = nn.Linear(2 * cfg.hidden, cfg.bins)
        nn.init.zeros_(self.head.weight)  # untrained: the prior, exactly
        nn.init.zeros_(self.head.bias)

    def forward(
        self, spec_c: torch.Tensor, mask: torch.Tensor, prior_c: torch.Tensor
    ) -> torch.Tensor:
        """``spec_c`` ``(B, T, F)`` compressed complex, ``mask`` ``(B, T)`` bool (True: gap
        frame), ``prior_c`` the compressed :func:`prior` -> ``(B, T, F)`` compressed complex
        prediction (float32): the prior's phase, its magnitude times the predicted gain."""
        keep = (~mask).unsqueeze(-1).to(spec_c.real.dtype)
        level = prior_c.abs()
        x = torch.cat(
            [spec_c.real * keep, spec_c.imag * keep, level, mask.unsqueeze(-1).float()], -1
        )
        h = self.front(x.transpose(1, 2)).transpose(1, 2)
        h, _ = self.gru(h)
        # log gain of the compressed magnitude, within +-max_gain_db of the uncompressed one
        bound = self.max_gain_db * self.config.power * math.log(10.0) / 20.0
        gain = bound * torch.tanh(self.head(h).float() / bound)
        return prior_c * torch.exp(gain)

    def conceal(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms ``(B, N)`` with gap frames ``mask`` ``(B, T)`` -> (waveforms with the
        masked frames synthesised, compressed prediction). ``x`` inside gaps is ignored."""
        cfg = self.config
        spec = stft(x, cfg)
        spec_c = compress(spec, cfg.power)
        prior_c = compress(prior(spec, mask, cfg), cfg.power)
        pred_c = self(spec_c, mask, prior_c)
        merged = torch.where(mask.unsqueeze(-1), decompress(pred_c, cfg.power), spec)
        return istft(merged, cfg, x.shape[-1]), pred_c


# --------------------------------------------------------------------------------------------
# Checkpoints


def _pair(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_concealment(
    model: ConcealmentNet,
    path: str | os.PathLike[str],
    training: Mapping[str, Any] | None = None,
    dtype: str = "float16",
) -> tuple[Path, Path]:
    """Write the pair ``PATH.safetensors`` + ``PATH.json`` (each atomically)."""
    from safetensors.torch import save_file

    from maedaw.core.util import atomic_path

    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    weights, meta = _pair(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch_dtype = torch.float16 if dtype == "float16" else torch.float32
    tensors = {
        k: v.detach().to("cpu", torch_dtype).contiguous() for k, v in model.state_dict().items()
    }
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp))
    document = {
        "format": FORMAT,
        "dtype": dtype,
        "config": model.config.to_dict(),
        "weights_sha256": weights_sha256(tensors),
        "parameters": sum(t.numel() for t in tensors.values()),
        "training": dict(training or {}),
    }
    write_text_atomic(meta, json.dumps(document, indent=2) + "\n")
    return weights, meta


def bundled_concealment() -> Path | None:
    """The shipped weights' stem, or None when this install has none."""
    weights, meta = _pair(WEIGHTS_DIR / DEFAULT_NAME)
    return weights.with_suffix("") if weights.exists() and meta.exists() else None


def resolve_concealment(name_or_path: str | os.PathLike[str] | None = None) -> Path:
    """A name of the shipped weights folder (default ``concealment-default``) or a path."""
    choice = str(name_or_path or DEFAULT_NAME)
    candidates = [Path(choice), WEIGHTS_DIR / choice]
    for candidate in candidates:
        weights, meta = _pair(candidate)
        if weights.exists() or meta.exists():
            return weights.with_suffix("")
    raise CheckpointError(f"no concealment model {choice!r} (looked in {WEIGHTS_DIR} and ./)")


def load_concealment(
    name_or_path: str | os.PathLike[str] | None = None,
) -> tuple[ConcealmentNet, dict[str, Any]]:
    """The model (float32, eval mode) and its JSON description; CheckpointError naming the
    file for anything missing, damaged, truncated or foreign."""
    from safetensors.torch import load_file

    weights, meta = _pair(resolve_concealment(name_or_path))
    try:
        document = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta}: not a readable concealment description: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{meta}: not a {FORMAT} description")
    try:
        config = ConcealmentConfig.from_dict(document.get("config") or {})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{meta}: invalid config: {exc}") from exc
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error type for damaged files
        raise CheckpointError(f"{weights}: cannot read tensors: {exc}") from exc
    if weights_sha256(tensors) != document.get("weights_sha256"):
        raise CheckpointError(f"{weights}: weights do not match the sha256 in {meta.name}")
    model = ConcealmentNet(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        shaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        raise CheckpointError(
            f"{weights}: tensors do not fit the config (missing {missing[:6]}, "
            f"unexpected {extra[:6]}, wrong shape {shaped[:6]})"
        )
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    return model.eval(), document


# --------------------------------------------------------------------------------------------
# The inpainter


class Concealer:
    """The network as a :class:`maedaw.dsp.inpainting.Inpainter` for gaps up to 120 ms."""

    max_gap_s = 0.120
    context_s = 0.5  # audio each side of a gap cluster the network sees
    crossfade_ms = 2.0
    high_band_hz = 7500.0  # above: continued from the context's spectrum (native rates)

    def __init__(self, model: ConcealmentNet, description: Mapping[str, Any] | None = None):
        self.model = model.eval()
        self.description = dict(description or {})

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str] | None = None) -> Concealer:
        model, document = load_concealment(name_or_path)
        return cls(model, document)

    @property
    def model_id(self) -> str:
        """``concealment-`` and the first 12 hex digits of the weights' sha256."""
        return concealment_id(self.description.get("weights_sha256"))

    def fade(self, rate: int) -> int:
        return max(1, round(self.crossfade_ms * rate / 1000.0))

    def fill(
        self,
        samples: np.ndarray,
        rate: int,
        gaps: Sequence[tuple[int, int]],
        damaged: Sequence[tuple[int, int]] = (),
    ) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"expected (channels, frames) samples, got shape {x.shape}")
        out = x.copy()
        size = x.shape[1]
        fade = self.fade(rate)
        reach = round(self.context_s * rate)
        for cluster in _clusters(merge_intervals(gaps, 2 * fade), 2 * reach):
            lo = max(0, cluster[0][0] - reach)
            hi = min(size, cluster[-1][1] + reach)
            local = [(a - lo, b - lo) for a, b in cluster]
            other = [
                (max(0, a - lo), min(hi - lo, b - lo)) for a, b in damaged if b > lo and a < hi
            ]
            piece = self._fill_piece(x[:, lo:hi], rate, local, other)
            for a, b in local:
                a0, b0 = max(0, a - fade), min(hi - lo, b + fade)
                out[:, lo + a0 : lo + b0] = piece[:, a0:b0]
        return out

    # ---------------------------------------------------------------- internals

    @torch.no_grad()
    def _fill_piece(
        self,
        x: np.ndarray,
        rate: int,
        gaps: list[tuple[int, int]],
        damaged: list[tuple[int, int]],
    ) -> np.ndarray:
        cfg = self.model.config
        holes = np.ones(x.shape[1], dtype=bool)
        for a, b in [*gaps, *damaged]:
            holes[max(0, a) : b] = False
        clean = np.where(holes, x, 0.0)
        low = resample(clean, rate, RATE) if rate != RATE else clean.copy()
        scale = RATE / rate
        gaps16 = [(math.floor(a * scale), math.ceil(b * scale)) for a, b in [*gaps, *damaged]]
        mask = torch.from_numpy(gap_frame_mask(low.shape[1], gaps16, cfg))
        wave = torch.from_numpy(low.astype(np.float32))
        masks = mask.unsqueeze(0).expand(wave.shape[0], -1)
        synth, _ = self.model.conceal(wave, masks)
        synth = synth.double().numpy()
        if rate == RATE:
            return synth
        native = resample(synth, RATE, rate)[:, : x.shape[1]]
        if native.shape[1] < x.shape[1]:
            native = np.pad(native, ((0, 0), (0, x.shape[1] - native.shape[1])))
        if rate > 2 * self.high_band_hz:
            native += self._high_band(clean, rate, gaps, damaged)
        return native

    def _high_band(
        self,
        x: np.ndarray,
        rate: int,
        gaps: list[tuple[int, int]],
        damaged: list[tuple[int, int]],
    ) -> np.ndarray:
        """The band above ``high_band_hz`` over the gaps: per bin, the level of the nearest
        known frames interpolated across (in dB), the phase continued from both sides."""
        from .inpaint import StftGrid, continue_phase

        grid = StftGrid.for_rate(rate, 16.0, 4)
        pad = grid.n_fft
        padded = np.pad(x, ((0, 0), (pad, pad)))
        spec = grid.stft(padded)  # (C, frames, bins)
        frames = spec.shape[1]
        unknown = np.zeros(frames, dtype=bool)
        for a, b in [*gaps, *damaged]:
            unknown |= grid.touching(padded.shape[1], a + pad, b + pad)
        high = grid.frequencies(rate) >= self.high_band_hz
        known_idx = np.flatnonzero(~unknown)
        out = np.zeros_like(x)
        if known_idx.size < 2 or not unknown.any():
            return out
        for c in range(x.shape[0]):
            level = np.log(np.abs(spec[c]) + 1e-9)
            interp = np.zeros_like(level)  # bins below the band stay 0 (exp -> 1, then zeroed)
            for k in np.flatnonzero(high):
                interp[:, k] = np.interp(np.arange(frames), known_idx, level[known_idx, k])
            phasors = continue_phase(spec[c], ~unknown, grid)
            synth = np.where(unknown[:, None], np.exp(interp) * phasors, 0.0)
            synth[:, ~high] = 0.0
            out[c] = grid.istft(synth)[pad : pad + x.shape[1]]
        return out


def _clusters(gaps: list[tuple[int, int]], join: int) -> list[list[tuple[int, int]]]:
    groups: list[list[tuple[int, int]]] = []
    for gap in sorted(gaps):
        if groups and gap[0] - groups[-1][-1][1] < join:
            groups[-1].append(gap)
        else:
            groups.append([gap])
    return groups
