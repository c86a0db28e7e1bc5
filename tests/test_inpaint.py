"""Audio-MAE inpainting: invariants, the synthesis path, the bundled model on a long gap, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maedaw.bridge.inpainters import load_inpainter
from maedaw.dsp import inpainting
from maedaw.dsp.audio_io import AudioError
from maedaw.dsp.metrics import log_spectral_distance
from maedaw.models.frontend import FrontendConfig
from maedaw.models.inpaint import (
    InpaintConfig,
    Inpainter,
    StftGrid,
    griffin_lim,
    mel_to_native_power,
)
from tests.conftest import tone_mix
from tests.tiny_models import tiny_model


@pytest.fixture(scope="module")
def tiny() -> Inpainter:
    return Inpainter(tiny_model(seed=1))


def test_it_is_the_inpainter_dsp_repair_takes(tiny):
    assert isinstance(tiny, inpainting.Inpainter)  # structurally: max_gap_s, fade, fill


@pytest.fixture(scope="module")
def bundled() -> Inpainter:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return Inpainter.load()


def harmonic(rate: int, seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    return tone_mix(rate, seconds, channels, seed)


def changed_outside(before: np.ndarray, after: np.ndarray, gaps, fade: int) -> np.ndarray:
    outside = np.ones(before.shape[-1], dtype=bool)
    for lo, hi in gaps:
        outside[max(0, lo - fade) : hi + fade] = False
    return np.atleast_2d(before)[:, outside] != np.atleast_2d(after)[:, outside]


@pytest.mark.parametrize(("rate", "channels"), [(16_000, 1), (44_100, 2), (96_000, 2)])
def test_repair_keeps_shape_and_every_sample_outside_the_gaps(tiny, rate, channels):
    clean = harmonic(rate, 2.0, channels)
    gaps = [(int(0.6 * rate), int(0.75 * rate)), (int(1.3 * rate), int(1.36 * rate))]
    damaged = clean.copy()
    for lo, hi in gaps:
        damaged[:, lo:hi] = 0.0
    damaged = damaged.astype(np.float32)  # dtype is kept too
    out = tiny.repair(damaged, rate, gaps)
    assert out.shape == damaged.shape and out.dtype == damaged.dtype
    assert np.isfinite(out).all()
    assert not changed_outside(damaged, out, gaps, tiny.fade(rate)).any()
    for lo, hi in gaps:  # something was put into the gap
        assert np.sqrt(np.mean(out[:, lo:hi].astype(np.float64) ** 2)) > 0.01


def test_one_dimensional_input_and_gap_at_the_very_end(tiny):
    rate = 16_000
    x = harmonic(rate, 1.5)[0]
    gaps = [(x.size - 1600, x.size)]  # the last 100 ms
    x[-1600:] = 0.0
    out = tiny.repair(x, rate, gaps)
    assert out.shape == x.shape and np.isfinite(out).all()
    assert np.array_equal(
        out[: x.size - 1600 - tiny.fade(rate)], x[: x.size - 1600 - tiny.fade(rate)]
    )


def test_no_clipping_is_introduced(tiny):
    rate = 16_000
    clean = harmonic(rate, 2.0)
    clean *= 0.99 / np.abs(clean).max()  # at the edge of full scale
    gap = (int(0.8 * rate), int(1.1 * rate))
    damaged = clean.copy()
    damaged[:, gap[0] : gap[1]] = 0.0
    out = tiny.repair(damaged, rate, [gap])
    assert np.abs(out).max() <= 1.0


def test_stereo_image_is_kept(tiny):
    """A source panned left (R = 0.3 L) stays panned and in phase; an independent pair of
    channels stays independent: the channels share the reference's phase only as much as
    they did in the context."""
    rate = 48_000
    source = harmonic(rate, 2.0, 1, seed=2)[0]
    panned = np.stack([source, 0.3 * source])
    independent = harmonic(rate, 2.0, 2, seed=3)  # 220 Hz left, 330 Hz right
    gap = (int(0.9 * rate), int(1.1 * rate))
    for clean in (panned, independent):
        damaged = clean.copy()
        damaged[:, gap[0] : gap[1]] = 0.0
        out = tiny.repair(damaged, rate, [gap])[:, gap[0] : gap[1]]
        truth = clean[:, gap[0] : gap[1]]
        corr_out = np.corrcoef(out)[0, 1]
        corr_true = np.corrcoef(truth)[0, 1]
        assert abs(corr_out - corr_true) < 0.2, (corr_out, corr_true)
        ratio_out = np.sqrt(np.mean(out[1] ** 2) / np.mean(out[0] ** 2))
        ratio_true = np.sqrt(np.mean(truth[1] ** 2) / np.mean(truth[0] ** 2))
        assert abs(20 * np.log10(ratio_out / ratio_true)) < 2.0


@pytest.mark.parametrize("rate", [16_000, 48_000])
def test_bundled_model_beats_zero_fill_on_a_long_gap(bundled, rate):
    clean = harmonic(rate, 6.0, seed=4)
    gap = (int(3.0 * rate), int(3.3 * rate))  # 300 ms
    damaged = clean.copy()
    damaged[:, gap[0] : gap[1]] = 0.0
    out = bundled.repair(damaged, rate, [gap])
    zero = log_spectral_distance(clean, damaged, rate, *gap)
    mae = log_spectral_distance(clean, out, rate, *gap)
    assert mae < 0.5 * zero, (mae, zero)
    level = 10 * np.log10(
        np.mean(out[:, gap[0] : gap[1]] ** 2) / np.mean(clean[:, gap[0] : gap[1]] ** 2)
    )
    assert abs(level) < 4.0, level


def test_stft_grid_reconstructs_and_griffin_lim_keeps_fixed_frames():
    grid = StftGrid.for_rate(48_000)
    assert (grid.n_fft, grid.hop) == (2048, 512)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(grid.length(40))
    spec = grid.stft(x)
    assert spec.shape == (40, grid.n_fft // 2 + 1)
    inner = slice(grid.hop, -grid.hop)  # the ends have a near-zero window: not recoverable
    np.testing.assert_allclose(grid.istft(spec)[inner], x[inner], atol=1e-9)
    # hide frames 15-24: Griffin-Lim from random phase, the rest held fixed
    fixed = np.ones(40, dtype=bool)
    fixed[15:25] = False
    start = np.where(
        fixed[:, None], spec, np.abs(spec) * np.exp(2j * np.pi * rng.random(spec.shape))
    )
    out = griffin_lim(start, np.abs(spec), fixed[:, None], grid, iterations=30)
    np.testing.assert_array_equal(out[fixed], spec[fixed])
    np.testing.assert_allclose(np.abs(out[~fixed]), np.abs(spec[~fixed]))

    def inconsistency(s: np.ndarray) -> float:
        return float(np.linalg.norm(grid.stft(grid.istft(s)) - s) / np.linalg.norm(s))

    assert inconsistency(out) < 0.7 * inconsistency(start)


def test_mel_to_native_power_has_the_scale_of_noise():
    rate = 48_000
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(rate * 2) * 0.1
    from maedaw.dsp.resample import resample
    from maedaw.models.frontend import waveform_to_fbank

    fe = FrontendConfig()
    fbank = waveform_to_fbank(torch.from_numpy(resample(noise, rate, 16_000)).float(), fe)
    times = (np.arange(fbank.shape[0]) * fe.frame_shift + fe.frame_length / 2) / fe.sample_rate
    grid = StftGrid.for_rate(rate)
    spec = grid.stft(noise)
    native_times = (np.arange(spec.shape[0]) * grid.hop + grid.n_fft / 2) / rate
    power = mel_to_native_power(fbank, times, rate, grid, native_times, fe)
    freqs = grid.frequencies(rate)
    band = (freqs > 300) & (freqs < 7000)
    measured = np.mean(np.abs(spec[:, band]) ** 2)
    predicted = np.mean(power[:, band])
    assert abs(10 * np.log10(predicted / measured)) < 1.5
    assert np.all(power[:, freqs > 8000] == 0.0)


def test_bad_input_gives_clear_errors(tiny):
    rate = 16_000
    x = harmonic(rate, 1.5)
    with pytest.raises(ValueError, match="longer than the model can fill"):
        tiny.fill(x, rate, [(1000, 1000 + rate)])
    with pytest.raises(ValueError, match="outside signal"):
        tiny.fill(x, rate, [(x.shape[1] - 10, x.shape[1] + 10)])
    bad = x.copy()
    bad[0, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tiny.fill(bad, rate, [(100, 200)])
    with pytest.raises(ValueError, match="sample rate"):
        tiny.fill(x, 0, [(100, 200)])
    with pytest.raises(ValueError, match="decoder"):
        Inpainter(tiny_model(decoder_depth=0))
    with pytest.raises(ValueError, match="front end"):
        Inpainter(tiny_model(), FrontendConfig())
    with pytest.raises(ValueError, match="momentum"):
        InpaintConfig(momentum=1.0)
    with pytest.raises(AudioError, match="no model"):
        load_inpainter("no-such-model")
    assert load_inpainter("none") is None
    assert load_inpainter("NONE") is None
