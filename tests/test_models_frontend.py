"""Front end: kaldi fbank parity, normalisation, windowing and the approximate inverse."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from maedaw.models import frontend as fe

SR = 16000


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small workloads are overhead bound: a second thread only adds contention on a busy box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def harmonic(seconds: float, f0: float = 220.0, seed: int = 0) -> torch.Tensor:
    """Seven harmonics with a slow tremolo plus a little noise: never silent, clear peaks."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(SR * seconds), dtype=torch.float64) / SR
    tone = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 8))
    envelope = 0.6 + 0.4 * torch.sin(2 * math.pi * 0.5 * t)
    noise = 0.01 * torch.randn(t.shape, generator=gen, dtype=torch.float64)
    return (0.2 * envelope * tone + noise).float()


def reference_fbank(wave: torch.Tensor) -> torch.Tensor:
    """The official Audio-MAE call, spelled out independently of our config."""
    wave = wave - wave.mean()
    return kaldi.fbank(
        wave.unsqueeze(0),
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    )


def test_log_mel_matches_official_kaldi_call() -> None:
    wave = harmonic(2.0)
    ours = fe.log_mel(wave)
    ref = reference_fbank(wave)
    assert ours.shape == (1 + (wave.numel() - 400) // 160, 128) == ref.shape
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_dc_offset_does_not_change_features() -> None:
    wave = harmonic(1.0)
    torch.testing.assert_close(fe.log_mel(wave + 0.25), fe.log_mel(wave), rtol=0, atol=2e-4)
    # kaldi also removes each frame's mean, so the official clip-mean step only matters for
    # rounding; it is kept to reproduce the official features bit for bit.
    raw = fe.FrontendConfig(remove_clip_mean=False)
    torch.testing.assert_close(fe.log_mel(wave + 0.25, raw), fe.log_mel(wave), rtol=0, atol=2e-3)


def test_normalisation_constants_and_inverse() -> None:
    raw = fe.log_mel(harmonic(1.0))
    norm = fe.normalize(raw)
    torch.testing.assert_close(norm, (raw + 4.2677393) / (4.5689974 * 2))
    torch.testing.assert_close(fe.denormalize(norm), raw)
    assert fe.DEFAULT_FRONTEND.pad_value == pytest.approx(4.2677393 / 9.1379948)
    assert fe.DEFAULT_FRONTEND.log_floor == pytest.approx(-15.942385, abs=1e-5)
    # Digital silence sits at kaldi's floor.
    silence = fe.log_mel(torch.zeros(SR))
    torch.testing.assert_close(silence, torch.full_like(silence, fe.DEFAULT_FRONTEND.log_floor))


def test_frame_geometry() -> None:
    assert fe.num_frames(163840) == 1022  # 10.24 s of audio is *not* 1024 frames
    assert fe.samples_for_frames(1024) == 164080
    assert fe.num_frames(fe.samples_for_frames(1024)) == 1024
    assert fe.num_frames(fe.samples_for_frames(1024) - 1) == 1023
    assert fe.num_frames(399) == 0
    assert fe.log_mel(torch.zeros(399)).shape == (0, 128)
    assert fe.log_mel(harmonic(0.5)).shape[0] == fe.num_frames(SR // 2)


def test_bad_waveforms_are_refused() -> None:
    with pytest.raises(ValueError, match="mono"):
        fe.log_mel(torch.zeros(2, 1000))
    with pytest.raises(TypeError):
        fe.log_mel(torch.zeros(1000, dtype=torch.int16))
    nan = torch.zeros(1000)
    nan[10] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fe.log_mel(nan)
    with pytest.raises(ValueError):
        fe.FrontendConfig(use_energy=True)
    with pytest.raises(ValueError, match="unknown"):
        fe.FrontendConfig.from_dict({"sample_rate": 16000, "bogus": 1})


def test_config_round_trip() -> None:
    config = fe.FrontendConfig()
    assert fe.FrontendConfig.from_dict(config.to_dict()) == config
    assert (config.frame_length, config.frame_shift, config.n_fft) == (400, 160, 512)


def test_fit_window_pads_short_and_crops_long() -> None:
    short = fe.waveform_to_fbank(harmonic(3.0))
    window, valid = fe.fit_window(short)
    assert window.shape == (1024, 128) and valid == short.shape[0]
    assert torch.equal(window[:valid], short)
    assert torch.all(window[valid:] == fe.DEFAULT_FRONTEND.pad_value)

    long = torch.randn(1500, 128)
    window, valid = fe.fit_window(long)
    assert valid == 1024 and torch.equal(window, long[:1024])
    with pytest.raises(ValueError):
        fe.fit_window(torch.zeros(10, 64))


def test_split_windows_offsets_and_merge() -> None:
    long = torch.randn(2500, 128)
    parts = fe.split_windows(long, hop_frames=512)
    # Regular hops, then one window flush with the end: no padding anywhere.
    assert parts.offsets.tolist() == [0, 512, 1024, 1476]
    assert parts.windows.shape == (4, 1024, 128)
    assert parts.num_valid.tolist() == [1024] * 4
    for window, offset in zip(parts.windows, parts.offsets.tolist(), strict=True):
        assert torch.equal(window, long[offset : offset + 1024])
    merged = fe.merge_windows(parts.windows, parts.offsets, long.shape[0], parts.num_valid)
    torch.testing.assert_close(merged, long)

    exact = fe.split_windows(torch.randn(2048, 128), hop_frames=1024)
    assert exact.offsets.tolist() == [0, 1024]

    short = torch.randn(300, 128)
    parts = fe.split_windows(short)
    assert parts.offsets.tolist() == [0] and parts.num_valid.tolist() == [300]
    merged = fe.merge_windows(parts.windows, parts.offsets, 300, parts.num_valid)
    assert torch.equal(merged, short)
    with pytest.raises(ValueError):
        fe.split_windows(long, hop_frames=0)


def test_merge_prefers_the_window_with_more_context() -> None:
    # Two windows disagree on the overlap: the centre of window 1 should win near its centre.
    windows = torch.stack([torch.zeros(1024, 1), torch.ones(1024, 1)])
    merged = fe.merge_windows(windows, torch.tensor([0, 512]), 1536)
    assert merged[0, 0] == 0 and merged[-1, 0] == 1
    assert merged[1000, 0] > 0.5 > merged[600, 0]


def test_mel_filterbank_reproduces_kaldi_exactly() -> None:
    wave = harmonic(1.5)
    bank = fe.mel_filterbank()
    assert bank.shape == (128, 257)
    assert float(bank[:, 0].sum()) == 0.0 and float(bank[:, -1].sum()) == 0.0
    power = fe.power_spectrum(wave)
    mine = (power @ bank.T).clamp_min(fe.KALDI_EPSILON).log()
    torch.testing.assert_close(mine.float(), fe.log_mel(wave), rtol=0, atol=2e-3)


def _band_db(estimate: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """dB error of the power in 32 bands of 8 FFT bins (about the mel resolution up there)."""

    def bands(p: torch.Tensor) -> torch.Tensor:
        return p[:, 1:257].reshape(p.shape[0], 32, 8).sum(-1)

    return 10 * torch.log10(bands(estimate).clamp_min(1e-20) / bands(truth).clamp_min(1e-20))


def test_inverse_recovers_mel_powers_and_band_energies() -> None:
    wave = harmonic(3.0)
    fbank = fe.waveform_to_fbank(wave)
    truth = fe.power_spectrum(wave)
    estimate = fe.mel_power_to_linear_power(fe.fbank_to_mel_power(fbank.double()))
    assert estimate.shape == truth.shape and bool((estimate >= 0).all())
    assert float(estimate[:, 0].abs().max()) == 0.0  # no filter sees DC: nothing invented

    # 1) Consistency: the estimate maps back onto the observed mel powers.
    bank = fe.mel_filterbank()
    used = bank.sum(1) > 0
    mel_true = truth @ bank.T
    mel_back = estimate @ bank.T
    mel_db = 10 * torch.log10(mel_back[:, used] / mel_true[:, used])
    assert float(mel_db.abs().median()) < 0.05
    assert float(mel_db.abs().quantile(0.95)) < 0.5

    # 2) Band energies within about 1 dB; a flat spectrum of the right energy is ~10 dB off.
    err = _band_db(estimate, truth).abs()
    flat = truth.sum(1, keepdim=True).expand_as(truth) / truth.shape[1]
    flat_err = _band_db(flat, truth).abs()
    assert float(err.median()) < 0.4
    assert float(err.quantile(0.95)) < 1.5
    assert float(flat_err.median()) > 5 * float(err.median())

    # 3) Low harmonics (where mel filters are narrower than FFT bins) land on the right bin.
    frame = 100
    assert int(estimate[frame, 1:20].argmax()) + 1 == round(220 / 31.25)


def test_magnitude_undoes_preemphasis() -> None:
    wave = harmonic(3.0, f0=330.0, seed=1)
    fbank = fe.waveform_to_fbank(wave)
    magnitude = fe.fbank_to_magnitude(fbank)
    assert magnitude.shape == (fbank.shape[0], 257) and magnitude.dtype == fbank.dtype
    plain = fe.power_spectrum(wave, preemphasis=False)
    err = _band_db(magnitude.double() ** 2, plain).abs()
    # The lowest band holds the pre-emphasis notch (-30 dB at 31 Hz); judge the rest.
    assert float(err[:, 1:].median()) < 0.4
    kept = fe.fbank_to_magnitude(fbank, undo_preemphasis=False).double() ** 2
    # Without the correction the low bands are clearly too weak (pre-emphasis tilt).
    assert float(_band_db(kept, plain)[:, 1:4].median()) < -3.0
