"""Fill long gaps (about 50 ms to 2 s) with Audio-MAE: spectral inpainting at any sample rate.

AR interpolation continues a waveform; over more than a few tens of milliseconds it decays
towards silence. Here the model supplies what happens *inside* the gap instead, as a spectral
envelope, and the signal around the gap supplies everything the model cannot:

1. **Model view.** The reference channel (the mid, i.e. the mean of the channels) is resampled
   to 16 kHz around the gaps and turned into the model's normalised fbank, one window
   (10.24 s for the bundled model) placed so the gaps sit near its centre and touch as few
   patch columns (160 ms) as possible.
2. **Reconstruct** exactly the patch columns whose frames touch a gap, with everything else of
   the window as context. Frames of those columns that do not touch the gap are real audio: the
   offset between them and the prediction (per mel bin, interpolated across the gap) removes
   the model's level bias, so the envelope meets its context without a step.
3. **Magnitude at the native rate.** Mel -> linear power with the front end's NNLS inverse
   (:func:`~maedaw.models.frontend.fbank_to_magnitude`), moved onto a native-rate STFT grid
   (:class:`StftGrid`). 128 mel bands carry neither harmonics nor anything above 8 kHz, so per
   frequency bin the context's power relative to the model path's power of the same context
   (a gain, clamped to ``fine_structure_db``) puts the context's fine structure back on the
   model's envelope; above ``high_band_hz`` the context's own spectrum is used, scaled frame by
   frame by the model's level in the 4-7 kHz band (so 44.1/48/96 kHz material keeps its air).
4. **Phase.** Fast Griffin-Lim (Perraudin, Balazs & Søndergaard 2013) on the reference channel,
   with every STFT frame that does not touch a gap held fixed at the signal's own value, started
   from phase-vocoder continuation of the frames on either side. Each channel then gets the
   reference's STFT times the per-bin inter-channel transfer measured on the context (level and
   phase), so the stereo image and inter-channel phase stay as they were: no drift between
   channels, and a mono file stays exactly mono.
5. The caller crossfades the synthesis into the original (:func:`maedaw.dsp.ar.crossfade_edges`,
   see :meth:`Inpainter.repair`).

The mel -> native-rate magnitude step (:func:`mel_to_native_power`) and the phase step
(:func:`griffin_lim`, :func:`continue_phase`, :class:`StftGrid`) are public so other operations
(bandwidth extension) can synthesise from model output too.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from maedaw.core.util import merge_intervals
from maedaw.dsp.ar import crossfade_edges
from maedaw.dsp.resample import resample

from .audiomae import AudioMAE
from .frontend import (
    DEFAULT_FRONTEND,
    FrontendConfig,
    fbank_to_magnitude,
    fit_window,
    samples_for_frames,
    waveform_to_fbank,
)

log = logging.getLogger(__name__)

__all__ = [
    "InpaintConfig",
    "Inpainter",
    "StftGrid",
    "continue_phase",
    "griffin_lim",
    "mel_to_native_power",
]


@dataclass(frozen=True)
class InpaintConfig:
    """How gaps are inpainted; the defaults were chosen on training-split clips."""

    stft_ms: float = 32.0  # synthesis frame (rounded to a power of two in samples)
    overlap: int = 4  # frames per window length (75 % overlap)
    iterations: int = 32  # Griffin-Lim passes
    momentum: float = 0.99  # fast Griffin-Lim; 0 gives the classic algorithm
    context_s: float = 0.3  # audio each side of a gap that calibrates level and stereo
    guard_ms: float = 3.0  # 16 kHz frames this close to a gap count as damaged (resampler tails)
    fine_structure_db: float = 12.0  # clamp of the context's per-bin gain over the model
    high_band_hz: float = 7000.0  # above: the context's spectrum (the model sees < 8 kHz)
    reference_band_hz: tuple[float, float] = (4000.0, 7000.0)  # scales that high band
    crossfade_ms: float = 5.0  # blend into the original at each gap edge
    max_gap_s: float = 2.0  # longer gaps are refused (also capped at a quarter of the window)
    bf16: bool = True  # bf16 autocast for the model on CPU
    debias: bool = True  # match the prediction to the real frames of the masked columns

    def __post_init__(self) -> None:
        if self.stft_ms <= 0 or self.overlap < 2 or self.iterations < 0:
            raise ValueError("stft_ms must be > 0, overlap >= 2, iterations >= 0")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError("momentum must be in [0, 1)")
        if self.context_s <= 0 or self.guard_ms < 0 or self.crossfade_ms < 0:
            raise ValueError("context_s must be > 0; guard_ms and crossfade_ms >= 0")
        if self.fine_structure_db < 0 or self.max_gap_s <= 0:
            raise ValueError("fine_structure_db must be >= 0 and max_gap_s > 0")
        low, high = self.reference_band_hz
        if not 0 < low < high <= self.high_band_hz:
            raise ValueError("need 0 < reference band low < high <= high_band_hz")


# --------------------------------------------------------------------------------------------
# STFT on a fixed frame grid (frames never straddle the signal's ends, so "known frame" is exact)


@lru_cache(maxsize=16)
def _hann(n_fft: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)  # periodic: exact OLA


@dataclass(frozen=True)
class StftGrid:
    """Periodic-Hann STFT, frame ``t`` covering samples ``[t hop, t hop + n_fft)``.

    Written out rather than ``torch.stft(center=False)`` because inpainting needs exact frame
    bookkeeping (which frames touch a gap) and an inverse that also works at the ends of a short
    piece, where torch's istft refuses the incomplete overlap-add.
    """

    n_fft: int
    hop: int

    def __post_init__(self) -> None:
        if self.n_fft < 4 or self.hop <= 0 or self.n_fft % self.hop:
            raise ValueError(f"need n_fft >= 4 divisible by hop, got {self.n_fft}/{self.hop}")

    @classmethod
    def for_rate(cls, rate: int, frame_ms: float = 32.0, overlap: int = 4) -> StftGrid:
        """Power-of-two frame nearest ``frame_ms`` (512 at 16 kHz, 2048 at 44.1/48 kHz)."""
        n_fft = 1 << max(4, round(math.log2(rate * frame_ms / 1000.0)))
        return cls(n_fft, n_fft // overlap)

    @property
    def window(self) -> np.ndarray:
        return _hann(self.n_fft)

    def num_frames(self, length: int) -> int:
        return 0 if length < self.n_fft else 1 + (length - self.n_fft) // self.hop

    def length(self, frames: int) -> int:
        """Samples spanned by ``frames`` frames."""
        return 0 if frames <= 0 else (frames - 1) * self.hop + self.n_fft

    def frequencies(self, rate: int) -> np.ndarray:
        return np.arange(self.n_fft // 2 + 1) * (rate / self.n_fft)

    def stft(self, x: np.ndarray) -> np.ndarray:
        """``(..., N)`` -> ``(..., frames, n_fft // 2 + 1)`` complex."""
        frames = self.num_frames(x.shape[-1])
        view = np.lib.stride_tricks.sliding_window_view(x, self.n_fft, axis=-1)
        return np.fft.rfft(view[..., : frames * self.hop : self.hop, :] * self.window, axis=-1)

    def istft(self, spec: np.ndarray) -> np.ndarray:
        """Least-squares inverse (windowed overlap-add / sum of squared windows)."""
        frames = spec.shape[-2]
        if frames == 0:
            return np.zeros((*spec.shape[:-2], 0))
        parts = np.fft.irfft(spec, self.n_fft, axis=-1) * self.window
        overlap = self.n_fft // self.hop
        chunks = parts.reshape(*parts.shape[:-1], overlap, self.hop)
        out = np.zeros((*spec.shape[:-2], frames + overlap - 1, self.hop))
        norm = np.zeros((frames + overlap - 1, self.hop))
        square = (self.window**2).reshape(overlap, self.hop)
        for j in range(overlap):
            out[..., j : j + frames, :] += chunks[..., j, :]
            norm[j : j + frames] += square[j]
        norm = norm.reshape(-1)
        out = out.reshape(*out.shape[:-2], -1)
        safe = norm > 1e-8
        return np.where(safe, out / np.where(safe, norm, 1.0), 0.0)

    def touching(self, length: int, lo: int, hi: int) -> np.ndarray:
        """Bool per frame of a ``length``-sample signal: does it overlap ``[lo, hi)``?"""
        starts = np.arange(self.num_frames(length)) * self.hop
        return (starts < hi) & (starts + self.n_fft > lo)


# --------------------------------------------------------------------------------------------
# Phase


def _principal(angle: np.ndarray) -> np.ndarray:
    return np.mod(angle + np.pi, 2.0 * np.pi) - np.pi


def continue_phase(spec: np.ndarray, known: np.ndarray, grid: StftGrid) -> np.ndarray:
    """Unit phasors for every frame of ``spec`` ``(frames, bins)``: known frames keep theirs,
    each run of unknown frames continues the instantaneous frequency of the known frames before
    it (first half) and, backwards, after it (second half): a phase vocoder across the gap."""
    phase = np.angle(spec)
    frames, bins = spec.shape
    expected = 2.0 * np.pi * np.arange(bins) * grid.hop / grid.n_fft  # bin centre advance
    out = phase.copy()

    def advance(a: int, b: int) -> np.ndarray:
        # per-hop phase advance measured between known frames a and b = a + 1
        return expected + _principal(phase[b] - phase[a] - expected)

    t = 0
    while t < frames:
        if known[t]:
            t += 1
            continue
        end = t
        while end < frames and not known[end]:
            end += 1
        left = t - 1 if t > 0 else None
        right = end if end < frames else None
        for u in range(t, end):
            use_left = left is not None and (right is None or u - left <= right - u)
            if use_left:
                step = advance(left - 1, left) if left >= 1 and known[left - 1] else expected
                out[u] = phase[left] + (u - left) * step
            elif right is not None:
                after = right + 1 < frames and known[right + 1]
                step = advance(right, right + 1) if after else expected
                out[u] = phase[right] - (right - u) * step
            else:
                out[u] = 0.0
        t = end
    return np.exp(1j * out)


def griffin_lim(
    spec: np.ndarray,
    magnitude: np.ndarray,
    fixed: np.ndarray,
    grid: StftGrid,
    iterations: int = 32,
    momentum: float = 0.99,
) -> np.ndarray:
    """Fast Griffin-Lim with part of the STFT held fixed.

    ``spec`` ``(frames, bins)`` holds the fixed cells' values and the starting phase of the
    others; ``magnitude`` is the target of the free cells; ``fixed`` (broadcastable bool) marks
    cells kept as they are. Returns an STFT whose free cells have the target magnitude and a
    phase consistent with their neighbours (and with the fixed cells).
    """

    free = ~np.broadcast_to(fixed, spec.shape)
    target = np.broadcast_to(magnitude, spec.shape)[free]

    def project(estimate: np.ndarray) -> np.ndarray:
        out = spec.copy()  # fixed cells as given; free ones get the target magnitude
        values = estimate[free]
        out[free] = target * values / np.maximum(np.abs(values), 1e-30)
        return out

    current = project(spec)
    previous = current
    for _ in range(iterations):
        consistent = grid.stft(grid.istft(current))
        current = project(consistent + momentum * (consistent - previous))
        previous = consistent
    return current


# --------------------------------------------------------------------------------------------
# Mel -> native-rate power


def mel_to_native_power(
    fbank: np.ndarray | torch.Tensor,
    frame_times: np.ndarray,
    rate: int,
    grid: StftGrid,
    native_times: np.ndarray,
    frontend: FrontendConfig = DEFAULT_FRONTEND,
) -> np.ndarray:
    """Normalised fbank frames -> power on a native-rate STFT grid, absolute scale.

    ``fbank`` ``(T, mel)`` has its frame centres at ``frame_times`` (seconds, increasing);
    the result ``(len(native_times), grid bins)`` is interpolated (linearly, in power) to the
    native frame centres ``native_times`` and native bin frequencies. Bins above the front end's
    Nyquist are 0: the model knows nothing there. The scale is that of a stationary noise seen
    through both frames (power per bin grows with frame length in samples), so tones come out
    a few dB off; callers with real context calibrate against it (see :class:`Inpainter`).
    """
    fb = torch.as_tensor(np.asarray(fbank, dtype=np.float64))
    power16 = fbank_to_magnitude(fb, frontend).numpy() ** 2  # (T, n_fft16 // 2 + 1)
    if len(frame_times) != power16.shape[0]:
        raise ValueError("frame_times must have one entry per fbank frame")
    # time: linear interpolation weights, one pair of source frames per native frame
    times = np.asarray(frame_times, dtype=np.float64)
    position = np.interp(native_times, times, np.arange(times.size))
    left = np.floor(position).astype(int)
    right = np.minimum(left + 1, times.size - 1)
    weight = (position - left)[:, None]
    in_time = (1.0 - weight) * power16[left] + weight * power16[right]
    # frequency: onto the native bins below the 16 kHz Nyquist
    freqs16 = np.arange(power16.shape[1]) * frontend.sample_rate / frontend.n_fft
    native = grid.frequencies(rate)
    inside = native <= freqs16[-1]
    out = np.zeros((len(native_times), native.size))
    columns = np.interp(native[inside], freqs16, np.arange(freqs16.size))
    lo = np.floor(columns).astype(int)
    hi = np.minimum(lo + 1, freqs16.size - 1)
    frac = columns - lo
    out[:, inside] = (1.0 - frac) * in_time[:, lo] + frac * in_time[:, hi]
    # noise through a Hann frame: E|X|^2 = variance * sum(w^2); variance per Hz fixed, so
    # per-bin power scales with rate * sum(w^2)
    window16 = np.hanning(frontend.frame_length)  # kaldi's symmetric Hann
    scale = (rate * np.sum(grid.window**2)) / (frontend.sample_rate * np.sum(window16**2))
    return out * scale


# --------------------------------------------------------------------------------------------
# The inpainter


@dataclass
class _View:
    """One model window: where it sits in the signal and what the model made of it."""

    start: int  # native sample of the 16 kHz segment's first sample
    gaps: list[tuple[int, int]]
    fbank: torch.Tensor  # (frames, mel) normalised input
    valid: int  # real (unpadded) frames
    damaged: np.ndarray  # (frames,) bool: touches a gap or other damage
    mask: torch.Tensor  # (num_patches,) bool
    filled: np.ndarray | None = None  # (frames, mel) input with damaged frames predicted


def _piece(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``x[..., lo:hi]`` with zeros where the range reaches past either end."""
    out = np.zeros((*x.shape[:-1], hi - lo))
    a, b = max(lo, 0), min(hi, x.shape[-1])
    if a < b:
        out[..., a - lo : b - lo] = x[..., a:b]
    return out


class Inpainter:
    """Audio-MAE gap filling for signals at any rate and channel count.

    ``fill`` returns the synthesis over each gap and its crossfade margins; ``repair`` also
    crossfades it in, leaving every other sample bit-identical. ``max_gap_s``, ``fade`` and
    ``fill`` make it a :class:`maedaw.dsp.inpainting.Inpainter` for ``dsp.repair``.
    """

    def __init__(
        self,
        model: AudioMAE,
        frontend: FrontendConfig | None = None,
        config: InpaintConfig | None = None,
    ) -> None:
        if not model.has_decoder:
            raise ValueError("inpainting needs a model with a decoder (decoder_depth > 0)")
        frames, mel = model.config.img_size
        if frontend is None:
            frontend = FrontendConfig(num_mel_bins=mel, target_frames=frames)
        if (frontend.target_frames, frontend.num_mel_bins) != (frames, mel):
            raise ValueError(
                f"front end gives {frontend.target_frames} x {frontend.num_mel_bins}, "
                f"the model wants {frames} x {mel}"
            )
        self.model = model.eval()
        self.frontend = frontend
        self.config = config or InpaintConfig()
        self.window_s = samples_for_frames(frames, frontend) / frontend.sample_rate
        # a gap needs context on both sides inside one window
        self.max_gap_s = min(self.config.max_gap_s, self.window_s / 4.0)

    @classmethod
    def load(
        cls, name_or_path: str | os.PathLike[str] | None = None, config: InpaintConfig | None = None
    ) -> Inpainter:
        """The installed model by name, id or path (default: the bundled one), offline."""
        from .registry import load

        model, meta = load(name_or_path)
        return cls(model, meta.frontend, config)

    # ---------------------------------------------------------------- public

    def fade(self, rate: int) -> int:
        return max(1, round(self.config.crossfade_ms * rate / 1000.0))

    def repair(
        self,
        samples: np.ndarray,
        rate: int,
        gaps: Sequence[tuple[int, int]],
        damaged: Sequence[tuple[int, int]] = (),
    ) -> np.ndarray:
        """A copy of ``samples`` with every gap inpainted and crossfaded in; samples farther
        than the crossfade from every gap are bit-identical (dtype kept)."""
        x = np.asarray(samples)
        estimate = self.fill(x, rate, gaps, damaged)
        fade = self.fade(rate)
        out = np.array(x, copy=True)
        two_d = out.reshape(-1, out.shape[-1])
        est = estimate.reshape(-1, estimate.shape[-1])
        for lo, hi in merge_intervals(gaps, 2 * fade):
            for c in range(two_d.shape[0]):
                two_d[c] = crossfade_edges(two_d[c], est[c], lo, hi, fade)
        return out

    def fill(
        self,
        samples: np.ndarray,
        rate: int,
        gaps: Sequence[tuple[int, int]],
        damaged: Sequence[tuple[int, int]] = (),
    ) -> np.ndarray:
        """Float64 copy of ``samples`` (``(N,)`` or ``(channels, N)``) whose gaps, widened by
        the crossfade, hold the synthesis. Every channel shares the gaps. ``damaged`` lists
        other stretches that must not serve as context (they are not filled)."""
        x = np.array(samples, dtype=np.float64)
        mono = x.ndim == 1
        if mono:
            x = x[None]
        if x.ndim != 2 or x.shape[1] == 0 or x.shape[0] == 0:
            raise ValueError(f"expected (N,) or (channels, N) samples, got {np.shape(samples)}")
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, got {rate}")
        n = x.shape[1]
        fade = self.fade(rate)
        merged = merge_intervals(gaps, 2 * fade)
        if not merged:
            return x[0] if mono else x
        longest = self.max_gap_s * rate
        for lo, hi in merged:
            if not 0 <= lo < hi <= n:
                raise ValueError(f"gap [{lo}, {hi}) outside signal of length {n}")
            if hi - lo > longest:
                raise ValueError(
                    f"gap of {1000 * (hi - lo) / rate:.0f} ms is longer than the model can fill "
                    f"({1000 * self.max_gap_s:.0f} ms)"
                )
        holes = merge_intervals(
            [*merged, *((max(0, a), min(n, b)) for a, b in damaged if b > a)], 0
        )
        bad = ~np.isfinite(x)
        if bad.any():
            raise ValueError("samples contain NaN or infinite values")
        clean = x.copy()
        for lo, hi in holes:
            clean[:, lo:hi] = 0.0  # damaged samples never reach the model or the STFT context
        reference = self._reference(clean, holes)
        views = self._views(reference, rate, merged, holes)
        self._predict(views)
        out = x.copy()
        for view in views:
            for cluster in self._clusters(view.gaps, rate):
                self._synthesise(out, clean, reference, rate, view, cluster, holes)
        return out[0] if mono else out

    # ---------------------------------------------------------------- model view

    @staticmethod
    def _reference(clean: np.ndarray, holes: list[tuple[int, int]]) -> np.ndarray:
        """The mid, unless the channels cancel (anti-phase): then the loudest channel."""
        mid = clean.mean(axis=0)
        energy = np.sum(clean**2, axis=1)
        if clean.shape[0] > 1 and np.sum(mid**2) < 0.1 * energy.mean():
            return clean[int(np.argmax(energy))].copy()
        return mid

    def _segment_length(self, rate: int) -> int:
        return math.ceil(self.window_s * rate) + 1

    def _frame_touching(
        self, start: int, rate: int, spans: Sequence[tuple[int, int]], frames: int
    ) -> np.ndarray:
        """Bool per 16 kHz frame of a window starting at native sample ``start``."""
        fe = self.frontend
        ratio = fe.sample_rate / rate
        guard = self.config.guard_ms * fe.sample_rate / 1000.0
        first = np.arange(frames) * fe.frame_shift
        touched = np.zeros(frames, dtype=bool)
        for lo, hi in spans:
            lo16, hi16 = (lo - start) * ratio - guard, (hi - start) * ratio + guard
            touched |= (first < hi16) & (first + fe.frame_length > lo16)
        return touched

    def _columns(self, touched: np.ndarray) -> np.ndarray:
        patch = self.model.config.patch_size
        return touched.reshape(-1, patch).any(axis=1)

    def _place(self, gaps: list[tuple[int, int]], n: int, rate: int) -> int:
        """Native start of the window: gaps centred, touching the fewest patch columns."""
        length = self._segment_length(rate)
        if n <= length:
            return 0
        frames = self.frontend.target_frames
        centre = (gaps[0][0] + gaps[-1][1]) / 2.0
        base = centre - length / 2.0
        shift = self.frontend.frame_shift * rate / self.frontend.sample_rate
        best: tuple[int, float, int] | None = None
        for k in range(self.model.config.patch_size):
            start = int(min(max(0.0, round(base - k * shift)), n - length))
            columns = int(self._columns(self._frame_touching(start, rate, gaps, frames)).sum())
            key = (columns, abs(start - base), start)
            if best is None or key < best:
                best = key
        assert best is not None
        return best[2]

    def _windowed_groups(self, gaps: list[tuple[int, int]], rate: int) -> list[list[int]]:
        """Gap indices grouped so each group fits one window with context both sides."""
        span = 0.6 * self.window_s * rate
        groups: list[list[int]] = []
        for i, (_, hi) in enumerate(gaps):
            if groups and hi - gaps[groups[-1][0]][0] <= span:
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups

    def _views(
        self,
        reference: np.ndarray,
        rate: int,
        gaps: list[tuple[int, int]],
        holes: list[tuple[int, int]],
    ) -> list[_View]:
        fe = self.frontend
        frames = fe.target_frames
        views = []
        for group in self._windowed_groups(gaps, rate):
            mine = [gaps[i] for i in group]
            start = self._place(mine, reference.size, rate)
            segment = reference[start : start + self._segment_length(rate)]
            x16 = resample(segment, rate, fe.sample_rate)
            fbank = waveform_to_fbank(torch.from_numpy(x16).float(), fe)
            window, valid = fit_window(fbank, fe)
            damaged = self._frame_touching(start, rate, holes, frames)
            damaged[valid:] = False  # padding is not damage (and never context)
            columns = self._columns(self._frame_touching(start, rate, mine, frames)) | (
                self._columns(damaged)
            )
            mask = torch.from_numpy(np.repeat(columns, self.model.config.grid_size[1]))
            views.append(_View(start, mine, window, valid, damaged, mask))
        return views

    def _predict(self, views: list[_View]) -> None:
        """One batched reconstruction for every window, then the bias correction."""
        device = next(self.model.parameters()).device
        fbanks = torch.stack([v.fbank for v in views]).to(device)
        masks = torch.stack([v.mask for v in views]).to(device)
        use_bf16 = self.config.bf16 and device.type == "cpu"
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=use_bf16):
            predicted = self.model.reconstruct(fbanks, masks)
        predicted = predicted.float().cpu().numpy().astype(np.float64)
        patch = self.model.config.patch_size
        for view, pred in zip(views, predicted, strict=True):
            real = view.fbank.numpy().astype(np.float64)
            columns = view.mask.numpy().reshape(self.model.config.grid_size)[:, 0]
            masked_frames = np.repeat(columns, patch)
            if self.config.debias:
                pred = self._debias(real, pred, masked_frames, view.damaged)
            view.filled = np.where(view.damaged[:, None], pred, real)

    @staticmethod
    def _debias(
        real: np.ndarray, pred: np.ndarray, masked: np.ndarray, damaged: np.ndarray
    ) -> np.ndarray:
        """Shift each damaged run by the prediction's error on the real frames of the masked
        columns beside it (per mel bin, linear across the run)."""
        out = pred.copy()
        frames = real.shape[0]
        known = masked & ~damaged
        t = 0
        while t < frames:
            if not damaged[t] or not masked[t]:
                t += 1
                continue
            end = t
            while end < frames and damaged[end] and masked[end]:
                end += 1
            left = [u for u in range(max(0, t - 4), t) if known[u]]
            right = [u for u in range(end, min(frames, end + 4)) if known[u]]
            offset_l = (real[left] - pred[left]).mean(axis=0) if left else None
            offset_r = (real[right] - pred[right]).mean(axis=0) if right else None
            if offset_l is None:
                offset_l = offset_r
            if offset_r is None:
                offset_r = offset_l
            if offset_l is not None and offset_r is not None:
                ramp = (np.arange(end - t) + 0.5)[:, None] / (end - t)
                out[t:end] += (1.0 - ramp) * offset_l + ramp * offset_r
            t = end
        return out

    # ---------------------------------------------------------------- synthesis

    def _clusters(self, gaps: list[tuple[int, int]], rate: int) -> list[list[tuple[int, int]]]:
        """Gaps whose synthesis pieces would overlap are synthesised together."""
        reach = 2 * round(self.config.context_s * rate)
        clusters: list[list[tuple[int, int]]] = []
        for gap in gaps:
            if clusters and gap[0] - clusters[-1][-1][1] < reach:
                clusters[-1].append(gap)
            else:
                clusters.append([gap])
        return clusters

    def _synthesise(
        self,
        out: np.ndarray,
        clean: np.ndarray,
        reference: np.ndarray,
        rate: int,
        view: _View,
        cluster: list[tuple[int, int]],
        holes: list[tuple[int, int]],
    ) -> None:
        cfg = self.config
        fe = self.frontend
        grid = StftGrid.for_rate(rate, cfg.stft_ms, cfg.overlap)
        n = out.shape[1]
        fade = self.fade(rate)
        reach = round(cfg.context_s * rate) + grid.n_fft
        p0 = cluster[0][0] - reach
        frames = grid.num_frames(cluster[-1][1] + reach - p0)
        length = grid.length(frames)
        p1 = p0 + length
        # the piece may reach past the signal's ends: zeros there, never used as context
        spec = grid.stft(_piece(clean, p0, p1))  # (C, T, F)
        ref_spec = grid.stft(_piece(reference, p0, p1))
        unknown = np.zeros(frames, dtype=bool)
        for lo, hi in cluster:
            unknown |= grid.touching(length, lo - p0, hi - p0)
        blocked = np.zeros(frames, dtype=bool)
        for lo, hi in [*holes, (p0, 0), (n, p1)]:
            blocked |= grid.touching(length, lo - p0, hi - p0)
        context = ~blocked

        # model power on this grid (frames of the 16 kHz window, centres in seconds)
        times16 = (
            view.start / rate
            + (np.arange(fe.target_frames) * fe.frame_shift + fe.frame_length / 2.0)
            / fe.sample_rate
        )
        native_times = (p0 + np.arange(frames) * grid.hop + grid.n_fft / 2.0) / rate
        lo16 = max(0, int(np.searchsorted(times16, native_times[0])) - 2)
        hi16 = min(view.valid, int(np.searchsorted(times16, native_times[-1])) + 2)
        if hi16 - lo16 < 2:
            lo16, hi16 = 0, max(2, view.valid)
        assert view.filled is not None
        model_power = mel_to_native_power(
            view.filled[lo16:hi16], times16[lo16:hi16], rate, grid, native_times, fe
        )
        target = self._target_power(ref_spec, model_power, context, grid, rate)

        # phase: Griffin-Lim on the frames that touch the gaps and their neighbours
        margin = grid.n_fft // grid.hop + math.ceil(fade / grid.hop) + 1
        idx = np.flatnonzero(unknown)
        s0, s1 = max(0, idx[0] - margin), min(frames, idx[-1] + margin + 1)
        sub_unknown = unknown[s0:s1]
        start = ref_spec[s0:s1] * np.where(sub_unknown[:, None], 0.0, 1.0)
        init = np.where(
            sub_unknown[:, None],
            np.sqrt(target[s0:s1]) * continue_phase(ref_spec[s0:s1], ~sub_unknown, grid),
            start,
        )
        fixed = ~sub_unknown[:, None]
        filled_ref = griffin_lim(
            init, np.sqrt(target[s0:s1]), fixed, grid, cfg.iterations, cfg.momentum
        )
        # channels: the part coherent with the reference follows it (level and phase per bin,
        # as in the context); the incoherent rest (reverb, independent parts) gets each
        # channel's own Griffin-Lim phase, so channels are exactly as correlated as before
        transfer, residual = self._transfer(spec, ref_spec, context)  # (C, F) each
        reference_mag = np.abs(filled_ref)
        estimate = filled_ref[None] * transfer[:, None, :]
        # (a channel that is nearly all coherent, e.g. panned sources, skips its own pass:
        # its small rest is added at the reference's phase, keeping its level)
        coherent_share = self._coherent_share(transfer, residual, reference_mag)
        for c in np.flatnonzero(coherent_share < 0.9):
            own_mag = reference_mag * np.sqrt(np.abs(transfer[c]) ** 2 + residual[c] ** 2)
            own_init = np.where(
                sub_unknown[:, None],
                own_mag * continue_phase(spec[c, s0:s1], ~sub_unknown, grid),
                spec[c, s0:s1],
            )
            own = griffin_lim(own_init, own_mag, fixed, grid, cfg.iterations, cfg.momentum)
            estimate[c] += residual[c] * reference_mag * own / np.maximum(np.abs(own), 1e-30)
        for c in np.flatnonzero(coherent_share >= 0.9):
            full = np.sqrt(np.abs(transfer[c]) ** 2 + residual[c] ** 2)
            estimate[c] *= full / np.maximum(np.abs(transfer[c]), 1e-30)
        channels = np.where(sub_unknown[None, :, None], estimate, spec[:, s0:s1])
        waves = grid.istft(channels)  # (C, samples of frames s0..s1)
        offset = p0 + s0 * grid.hop
        # Phase reconstruction can stack partials into peaks the source never had: keep the
        # fill below full scale and within 1.5x the context's own peak (a gain, not a clip).
        piece = _piece(clean, p0, p1)
        usable = np.ones(length, dtype=bool)
        for lo, hi in [*holes, (p0, 0), (n, p1)]:
            usable[max(0, lo - p0) : max(0, hi - p0)] = False
        limit = np.minimum(1.0, 1.5 * np.abs(piece[:, usable]).max(axis=1, initial=0.0))
        for lo, hi in cluster:
            a, b = max(0, lo - fade), min(n, hi + fade)
            fill = waves[:, a - offset : b - offset]
            peak = np.abs(fill).max(axis=1)
            scale = np.where(peak > limit, limit / np.maximum(peak, 1e-30), 1.0)
            out[:, a:b] = fill * scale[:, None]

    def _target_power(
        self,
        ref_spec: np.ndarray,
        model_power: np.ndarray,
        context: np.ndarray,
        grid: StftGrid,
        rate: int,
    ) -> np.ndarray:
        """Per frame and bin: the model's envelope with the context's fine structure; above
        ``high_band_hz`` the context's spectrum at the model's level of the reference band."""
        cfg = self.config
        freqs = grid.frequencies(rate)
        nyquist16 = self.frontend.sample_rate / 2.0
        low = freqs < min(cfg.high_band_hz, nyquist16)
        if not context.any():
            log.warning("no clean context around the gap: the model's envelope alone")
            return np.where(low, model_power, 0.0)
        actual = np.mean(np.abs(ref_spec[context]) ** 2, axis=0)  # (F,)
        modelled = np.mean(model_power[context], axis=0)
        limit = 10.0 ** (cfg.fine_structure_db / 10.0)
        floor = 1e-12 * max(float(modelled.max()), 1e-30)
        gain = np.clip(actual / np.maximum(modelled, floor), 1.0 / limit, limit)
        target = np.where(low, model_power * gain, 0.0)
        band = (freqs >= cfg.reference_band_hz[0]) & (freqs < cfg.reference_band_hz[1]) & low
        high = ~low
        if high.any() and band.any():
            level = model_power[:, band].sum(axis=1) / max(float(modelled[band].sum()), floor)
            target[:, high] = level[:, None] * actual[high]
        return target

    @staticmethod
    def _coherent_share(
        transfer: np.ndarray, residual: np.ndarray, reference_mag: np.ndarray
    ) -> np.ndarray:
        """Per channel: the share of its fill's energy that follows the reference."""
        weight = np.sum(reference_mag**2, axis=0)  # (F,)
        coherent = np.sum(np.abs(transfer) ** 2 * weight, axis=1)
        rest = np.sum(residual**2 * weight, axis=1)
        return coherent / np.maximum(coherent + rest, 1e-30)

    @staticmethod
    def _transfer(
        spec: np.ndarray, ref_spec: np.ndarray, context: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per channel and bin, measured on the context frames: the transfer ``H`` from the
        reference (least squares: its coherent level and mean phase) and the level of the
        rest, ``sqrt(|X_c|^2 / |X_ref|^2 - |H|^2)`` (0 where the channel follows the
        reference exactly, e.g. mono or a panned source)."""
        channels, bins = spec.shape[0], spec.shape[-1]
        if channels == 1 or not context.any():
            return np.ones((channels, bins), dtype=complex), np.zeros((channels, bins))
        ref = ref_spec[context]
        chans = spec[:, context]
        ref_power = np.sum(np.abs(ref) ** 2, axis=0)
        cross = np.sum(chans * np.conj(ref)[None], axis=1)
        power = np.sum(np.abs(chans) ** 2, axis=1)
        tiny = 1e-30 + 1e-12 * float(ref_power.max())
        live = ref_power > tiny
        safe = np.where(live, ref_power, 1.0)
        transfer = np.where(live, cross / safe, 0.0)
        rest = np.where(live, power / safe - np.abs(transfer) ** 2, 0.0)
        return transfer, np.sqrt(np.maximum(rest, 0.0))
