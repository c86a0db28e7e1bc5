"""Kaldi-compatible log-mel front end for Audio-MAE, and its approximate inverse.

Forward path (exactly what the official Audio-MAE data loader does)::

    16 kHz mono waveform
      -> subtract the clip mean                     (official ``waveform - waveform.mean()``)
      -> torchaudio.compliance.kaldi.fbank(...)     (log mel *power*, 128 bins, 25 ms / 10 ms)
      -> (fbank - (-4.2677393)) / (4.5689974 * 2)   (AudioSet statistics; note the ``* 2``)
      -> pad / crop to 1024 frames (10.24 s)         -> model input (1024 time, 128 mel)

Frame geometry (kaldi ``snip_edges=True``): frame ``i`` covers samples ``[160 i, 160 i + 400)``, so
``n`` samples give ``1 + (n - 400) // 160`` frames, and 1024 frames need 164 080 samples (10.255 s),
not 163 840. One 16-frame patch column is 160 ms.

Kaldi's log: ``log(max(mel_energy, eps))`` with ``eps = float32 eps = 1.19e-7`` on the *power*
spectrum of the DC-removed, pre-emphasised (0.97), symmetric-Hann-windowed 400-sample frame,
zero-padded to a 512-point FFT. Digital silence therefore sits at ``log(eps) = -15.94``
(normalised: -1.277), and one of the 128 mel filters (index 3) covers no FFT bin at all, so that
channel is always at the floor.

Padding. The official loader zero-pads the *log-mel* fbank after computing it, i.e. padded frames
have log mel energy 0 (normalised value 0.467, a moderate level, not silence). Every AudioSet clip
is ~998 frames, so the released models saw ~26 such frames at the end of every training window:
for them this constant *is* "padding". Padding the waveform with zeros instead would give
digital-silence frames (-1.277), a different signal. We keep the official convention
(``FrontendConfig.pad_log_mel = 0``) so the official weights see what they were trained on, and
report how many frames are real so callers never treat padding as audio. For inpainting the
better answer is to avoid padding altogether: :func:`split_windows` aligns the last window with
the end of the signal (more real context) and only pads when the whole signal is shorter than one
window.

Inverse path (for synthesis later): normalised fbank -> mel power -> linear power spectrum
(257 bins) by a non-negative least-squares fit to the kaldi mel matrix -> magnitude. See
:func:`fbank_to_magnitude` for what it can and cannot recover.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any, NamedTuple

import torch
import torchaudio.compliance.kaldi as kaldi

__all__ = [
    "FbankWindows",
    "FrontendConfig",
    "analysis_window",
    "denormalize",
    "fbank_to_magnitude",
    "fbank_to_mel_power",
    "fit_window",
    "log_mel",
    "mel_filterbank",
    "mel_power_to_linear_power",
    "merge_windows",
    "normalize",
    "num_frames",
    "power_spectrum",
    "samples_for_frames",
    "split_windows",
    "waveform_to_fbank",
]

# float32 machine epsilon: the floor kaldi.fbank applies before its log.
KALDI_EPSILON = float(torch.finfo(torch.float32).eps)


@dataclass(frozen=True)
class FrontendConfig:
    """Every number of the front end; saved with checkpoints so features can be reproduced."""

    sample_rate: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    window_type: str = "hanning"
    dither: float = 0.0
    preemphasis: float = 0.97
    low_freq: float = 20.0
    high_freq: float = 0.0  # kaldi: <= 0 means offset from Nyquist
    htk_compat: bool = True
    use_energy: bool = False
    remove_clip_mean: bool = True  # official; kaldi's per-frame DC removal makes it ~a no-op
    norm_mean: float = -4.2677393
    norm_std: float = 4.5689974  # the official code divides by 2 * std
    target_frames: int = 1024
    pad_log_mel: float = 0.0  # raw log-mel value of padded frames (official zero-pad)

    def __post_init__(self) -> None:
        if self.use_energy:
            raise ValueError("use_energy=True adds a 129th column; Audio-MAE expects mel bins only")
        if self.sample_rate <= 0 or self.num_mel_bins < 4 or self.target_frames <= 0:
            raise ValueError(f"invalid front-end sizes in {self}")
        if self.frame_length <= 0 or self.frame_shift <= 0:
            raise ValueError("frame length and shift must be at least one sample")
        if self.norm_std <= 0:
            raise ValueError("norm_std must be positive")

    @property
    def frame_length(self) -> int:
        """Samples per analysis frame (400 at 16 kHz)."""
        return int(self.sample_rate * self.frame_length_ms * 0.001)

    @property
    def frame_shift(self) -> int:
        """Samples between frame starts (160 at 16 kHz)."""
        return int(self.sample_rate * self.frame_shift_ms * 0.001)

    @property
    def n_fft(self) -> int:
        """Kaldi rounds the frame up to a power of two for the FFT (512)."""
        return 1 << (self.frame_length - 1).bit_length()

    @property
    def num_fft_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def log_floor(self) -> float:
        """Raw log-mel value of digital silence (kaldi's epsilon floor)."""
        return math.log(KALDI_EPSILON)

    @property
    def pad_value(self) -> float:
        """Normalised value of a padded frame."""
        return (self.pad_log_mel - self.norm_mean) / (2.0 * self.norm_std)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontendConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown front-end config keys: {unknown}")
        return cls(**data)


DEFAULT_FRONTEND = FrontendConfig()


def _as_mono(waveform: torch.Tensor) -> torch.Tensor:
    if waveform.dim() == 2 and waveform.shape[0] == 1:
        waveform = waveform[0]
    if waveform.dim() != 1:
        raise ValueError(
            f"expected a mono waveform (N,) or (1, N), got shape {tuple(waveform.shape)}"
        )
    if not waveform.is_floating_point():
        raise TypeError(f"expected a float waveform, got {waveform.dtype}")
    if not bool(torch.isfinite(waveform).all()):
        raise ValueError("waveform contains NaN or infinite samples")
    return waveform


def num_frames(num_samples: int, config: FrontendConfig = DEFAULT_FRONTEND) -> int:
    """Frames kaldi produces for ``num_samples`` samples (``snip_edges=True``)."""
    if num_samples < config.frame_length:
        return 0
    return 1 + (num_samples - config.frame_length) // config.frame_shift


def samples_for_frames(frames: int, config: FrontendConfig = DEFAULT_FRONTEND) -> int:
    """Fewest samples that yield ``frames`` frames (164 080 for 1024)."""
    if frames <= 0:
        return 0
    return config.frame_length + (frames - 1) * config.frame_shift


def log_mel(waveform: torch.Tensor, config: FrontendConfig = DEFAULT_FRONTEND) -> torch.Tensor:
    """Raw kaldi log-mel fbank ``(frames, num_mel_bins)`` of a mono waveform at ``sample_rate``.

    Resampling is the caller's job (``maedaw.dsp``); this function never guesses a rate.
    Fewer than one frame of samples gives a ``(0, num_mel_bins)`` tensor.
    """
    wav = _as_mono(waveform)
    out_dtype = wav.dtype
    wav = wav.to(torch.float32)
    if config.remove_clip_mean and wav.numel() > 0:
        wav = wav - wav.mean()
    if wav.numel() < config.frame_length:
        return wav.new_zeros((0, config.num_mel_bins), dtype=out_dtype)
    fbank = kaldi.fbank(
        wav.unsqueeze(0),
        htk_compat=config.htk_compat,
        sample_frequency=float(config.sample_rate),
        use_energy=config.use_energy,
        window_type=config.window_type,
        num_mel_bins=config.num_mel_bins,
        dither=config.dither,
        frame_shift=config.frame_shift_ms,
        frame_length=config.frame_length_ms,
        preemphasis_coefficient=config.preemphasis,
        low_freq=config.low_freq,
        high_freq=config.high_freq,
    )
    return fbank.to(out_dtype)


def normalize(fbank: torch.Tensor, config: FrontendConfig = DEFAULT_FRONTEND) -> torch.Tensor:
    """Raw log-mel -> model scale (AudioSet mean / (2 * std), as the official loader)."""
    return (fbank - config.norm_mean) / (2.0 * config.norm_std)


def denormalize(fbank: torch.Tensor, config: FrontendConfig = DEFAULT_FRONTEND) -> torch.Tensor:
    """Model scale -> raw log-mel."""
    return fbank * (2.0 * config.norm_std) + config.norm_mean


def waveform_to_fbank(
    waveform: torch.Tensor, config: FrontendConfig = DEFAULT_FRONTEND
) -> torch.Tensor:
    """Normalised fbank ``(frames, num_mel_bins)``, any length (see :func:`fit_window`)."""
    return normalize(log_mel(waveform, config), config)


def fit_window(
    fbank: torch.Tensor, config: FrontendConfig = DEFAULT_FRONTEND
) -> tuple[torch.Tensor, int]:
    """Pad or crop a normalised fbank to exactly ``target_frames`` frames.

    Shorter inputs are padded at the end with ``config.pad_value`` (the official zero-pad of the
    log-mel); longer ones keep their first ``target_frames`` frames (official crop). Returns the
    window and the number of real (unpadded) frames in it.
    """
    if fbank.dim() != 2 or fbank.shape[1] != config.num_mel_bins:
        raise ValueError(f"expected (frames, {config.num_mel_bins}), got {tuple(fbank.shape)}")
    frames = fbank.shape[0]
    target = config.target_frames
    if frames >= target:
        return fbank[:target], target
    pad = fbank.new_full((target - frames, fbank.shape[1]), config.pad_value)
    return torch.cat([fbank, pad], dim=0), frames


class FbankWindows(NamedTuple):
    """Fixed-size windows cut from one long fbank."""

    windows: torch.Tensor  # (N, target_frames, mel)
    offsets: torch.Tensor  # (N,) first frame of each window in the long fbank
    num_valid: torch.Tensor  # (N,) real frames in each window (the rest is padding)


def split_windows(
    fbank: torch.Tensor,
    hop_frames: int = 512,
    config: FrontendConfig = DEFAULT_FRONTEND,
) -> FbankWindows:
    """Cut a normalised fbank into overlapping ``target_frames`` windows.

    Windows start at ``0, hop, 2 hop, ...``; the last one is moved back to end exactly at the
    last frame, so every window but a lone short one is full of real audio (better context for
    inpainting than padding). Only an fbank shorter than one window is padded.
    """
    if fbank.dim() != 2 or fbank.shape[1] != config.num_mel_bins:
        raise ValueError(f"expected (frames, {config.num_mel_bins}), got {tuple(fbank.shape)}")
    target = config.target_frames
    if not 0 < hop_frames <= target:
        raise ValueError(f"hop_frames must be in (0, {target}], got {hop_frames}")
    total = fbank.shape[0]
    if total <= target:
        window, valid = fit_window(fbank, config)
        return FbankWindows(
            window.unsqueeze(0), torch.zeros(1, dtype=torch.long), torch.tensor([valid])
        )
    starts = list(range(0, total - target + 1, hop_frames))
    if starts[-1] != total - target:
        starts.append(total - target)
    windows = torch.stack([fbank[s : s + target] for s in starts])
    return FbankWindows(
        windows,
        torch.tensor(starts, dtype=torch.long),
        torch.full((len(starts),), target, dtype=torch.long),
    )


def merge_windows(
    windows: torch.Tensor,
    offsets: torch.Tensor,
    total_frames: int,
    num_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Overlap-add windows back into one ``(total_frames, mel)`` fbank.

    Each window is weighted by a tent peaking at its centre, so a frame takes most from the
    window in which it has the most context; frames seen by one window get that window exactly.
    Padded frames (beyond ``num_valid``) are ignored.
    """
    count, length, mel = windows.shape
    weights = torch.arange(length, device=windows.device, dtype=windows.dtype)
    tent = torch.minimum(weights + 1, length - weights)
    out = windows.new_zeros((total_frames, mel))
    norm = windows.new_zeros((total_frames, 1))
    last = windows.new_zeros((total_frames, mel))  # exact copy where only one window covers
    covered = torch.zeros(total_frames, dtype=torch.long, device=windows.device)
    for i in range(count):
        start = int(offsets[i])
        valid = length if num_valid is None else int(num_valid[i])
        stop = min(start + valid, total_frames)
        if stop <= start:
            continue
        w = tent[: stop - start].unsqueeze(1)
        out[start:stop] += windows[i, : stop - start] * w
        norm[start:stop] += w
        last[start:stop] = windows[i, : stop - start]
        covered[start:stop] += 1
    if bool((covered == 0).any()):
        raise ValueError("windows do not cover every frame")
    return torch.where((covered == 1).unsqueeze(1), last, out / norm)


# --------------------------------------------------------------------------------------------
# Inverse path


def analysis_window(config: FrontendConfig = DEFAULT_FRONTEND) -> torch.Tensor:
    """The frame window kaldi applies ('hanning' = symmetric Hann over ``frame_length``)."""
    if config.window_type != "hanning":
        raise ValueError("only the 'hanning' window of Audio-MAE is supported")
    return torch.hann_window(config.frame_length, periodic=False, dtype=torch.float64)


@lru_cache(maxsize=8)
def _mel_filterbank64(config: FrontendConfig) -> torch.Tensor:
    banks, _ = kaldi.get_mel_banks(
        config.num_mel_bins,
        config.n_fft,
        float(config.sample_rate),
        config.low_freq,
        config.high_freq,
        100.0,  # vtln_low / vtln_high / warp: kaldi defaults, VTLN off
        -500.0,
        1.0,
    )
    # kaldi.fbank appends a zero-weight Nyquist column; do the same so shapes match the FFT.
    return torch.nn.functional.pad(banks.to(torch.float64), (0, 1))


def mel_filterbank(config: FrontendConfig = DEFAULT_FRONTEND) -> torch.Tensor:
    """Kaldi's triangular mel matrix ``(num_mel_bins, n_fft // 2 + 1)`` (float64), exactly the
    one ``kaldi.fbank`` multiplies the power spectrum with."""
    return _mel_filterbank64(config).clone()


def power_spectrum(
    waveform: torch.Tensor,
    config: FrontendConfig = DEFAULT_FRONTEND,
    preemphasis: bool = True,
) -> torch.Tensor:
    """The power spectrum ``(frames, n_fft // 2 + 1)`` kaldi computes before the mel matrix.

    Same framing, per-frame DC removal, pre-emphasis and window as :func:`log_mel`, so
    ``log(max(power_spectrum(x) @ mel_filterbank().T, eps))`` equals ``log_mel(x)``. With
    ``preemphasis=False`` it is the plain STFT power of the (DC-removed) frames: the target a
    synthesiser using :func:`analysis_window`, hop ``frame_shift`` and ``n_fft`` should match.
    """
    wav = _as_mono(waveform).to(torch.float64)
    if config.remove_clip_mean and wav.numel() > 0:
        wav = wav - wav.mean()
    frames = num_frames(wav.numel(), config)
    if frames == 0:
        return wav.new_zeros((0, config.num_fft_bins))
    strided = wav.unfold(0, config.frame_length, config.frame_shift)[:frames]
    strided = strided - strided.mean(dim=1, keepdim=True)
    if preemphasis and config.preemphasis != 0.0:
        previous = torch.cat([strided[:, :1], strided[:, :-1]], dim=1)
        strided = strided - config.preemphasis * previous
    strided = strided * analysis_window(config).to(strided.device)
    spectrum = torch.fft.rfft(strided, n=config.n_fft)
    return spectrum.abs().pow(2)


def fbank_to_mel_power(
    fbank: torch.Tensor, config: FrontendConfig = DEFAULT_FRONTEND
) -> torch.Tensor:
    """Normalised fbank -> mel-band power (``exp`` of the raw log-mel)."""
    return denormalize(fbank, config).exp()


def mel_power_to_linear_power(
    mel_power: torch.Tensor,
    config: FrontendConfig = DEFAULT_FRONTEND,
    iterations: int = 30,
) -> torch.Tensor:
    """Non-negative least-squares estimate of the linear power spectrum behind mel powers.

    Solves ``min ||M p - m||^2, p >= 0`` per frame (``M`` = :func:`mel_filterbank`): start from
    the pseudo-inverse solution clamped at a small positive floor, then run multiplicative
    (Lee-Seung) updates, which keep ``p`` non-negative and decrease the residual monotonically.
    Returns ``(..., n_fft // 2 + 1)`` in the dtype of ``mel_power``.

    Limits: 128 triangles cannot resolve detail inside a band (above ~1 kHz a band spans several
    harmonics, so the result is a band-smoothed envelope); bins with no filter weight (DC, below
    20 Hz, Nyquist) come back as 0; mel channels at kaldi's floor (silence, or the empty channel
    3) carry no information; below ~300 Hz several filters share one FFT bin, so that region is
    over-determined and fits well.
    """
    bank = _mel_filterbank64(config)
    used = bank.sum(dim=1) > 0  # drop filters that cover no FFT bin
    mat = bank[used].to(device=mel_power.device)
    pinv = torch.linalg.pinv(mat)
    target = mel_power.to(torch.float64)[..., used].clamp_min(0.0)
    power = (target @ pinv.T).clamp_min(0.0)
    # Multiplicative updates cannot revive exact zeros: lift everything to a small floor.
    floor = 1e-3 * power.mean(dim=-1, keepdim=True).clamp_min(1e-30)
    power = power + floor
    numerator = target @ mat  # M^T m, fixed
    mat_t = mat.T.contiguous()
    for _ in range(iterations):
        # (p M^T) M rather than p (M^T M): two thin products are cheaper than one square one.
        update = power * numerator / ((power @ mat_t) @ mat).clamp_min(1e-30)
        # Decaying entries would turn subnormal and make every later product crawl.
        power = update.clamp_min(1e-30)
    # Bins no filter sees (DC, Nyquist) carry no information: exactly zero.
    power = torch.where(numerator > 0, power, torch.zeros_like(power))
    return power.to(mel_power.dtype)


def _preemphasis_gain(config: FrontendConfig, device: torch.device) -> torch.Tensor:
    """|1 - a e^{-jw}|^2 per FFT bin: the power gain of kaldi's pre-emphasis."""
    omega = torch.linspace(0.0, math.pi, config.num_fft_bins, dtype=torch.float64, device=device)
    a = config.preemphasis
    return 1.0 + a * a - 2.0 * a * torch.cos(omega)


def fbank_to_magnitude(
    fbank: torch.Tensor,
    config: FrontendConfig = DEFAULT_FRONTEND,
    iterations: int = 30,
    undo_preemphasis: bool = True,
    max_preemphasis_boost: float = 100.0,
) -> torch.Tensor:
    """Normalised fbank ``(frames, mel)`` -> linear magnitude spectrogram ``(frames, 257)``.

    The magnitude is of ``rfft(window * frame, n_fft)`` with :func:`analysis_window`, hop
    ``frame_shift`` (i.e. the scale of :func:`power_spectrum`). With ``undo_preemphasis`` the
    pre-emphasis filter is divided out (power boost capped at ``max_preemphasis_boost``, since
    it is -30 dB at 31 Hz and any estimation error there would be amplified as much).
    See :func:`mel_power_to_linear_power` for the resolution limits.
    """
    power = mel_power_to_linear_power(
        fbank_to_mel_power(fbank.to(torch.float64), config), config, iterations
    )
    if undo_preemphasis and config.preemphasis != 0.0:
        gain = _preemphasis_gain(config, power.device).clamp_min(1.0 / max_preemphasis_boost)
        power = power / gain
    return power.sqrt().to(fbank.dtype if fbank.is_floating_point() else torch.float32)
