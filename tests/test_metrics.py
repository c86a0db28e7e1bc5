"""Known values of the repair metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import tone_mix

from maedaw.dsp.metrics import gap_snr_db, log_spectral_distance, sdr_db

SR = 48_000


@pytest.fixture()
def tone() -> np.ndarray:
    return tone_mix(SR, 0.5)[0]


def test_identical_signals_are_perfect(tone: np.ndarray) -> None:
    assert gap_snr_db(tone, tone.copy(), 1000, 2000) == math.inf
    assert sdr_db(tone, tone.copy()) == math.inf
    assert log_spectral_distance(tone, tone.copy(), SR, 5000, 6000) == 0.0
    assert log_spectral_distance(tone, tone.copy(), SR) == 0.0


def test_zero_estimate_is_zero_db(tone: np.ndarray) -> None:
    estimate = tone.copy()
    estimate[1000:2000] = 0.0
    assert gap_snr_db(tone, estimate, 1000, 2000) == pytest.approx(0.0, abs=1e-12)
    assert sdr_db(tone, np.zeros_like(tone)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("gain", [0.5, 0.9, 1.1, 2.0])
def test_scaled_copy_has_known_snr(tone: np.ndarray, gain: float) -> None:
    # error = (1 - gain) ref, so SNR = -20 log10 |1 - gain|
    expected = -20.0 * math.log10(abs(1.0 - gain))
    estimate = tone.copy()
    estimate[3000:4000] *= gain
    assert gap_snr_db(tone, estimate, 3000, 4000) == pytest.approx(expected, abs=1e-9)
    assert sdr_db(tone, gain * tone) == pytest.approx(expected, abs=1e-9)


def test_gap_snr_only_looks_inside_the_span(tone: np.ndarray) -> None:
    estimate = tone.copy()
    estimate[:1000] = 0.0  # damage outside the span must not count
    estimate[1000:2000] *= 0.9
    assert gap_snr_db(tone, estimate, 1000, 2000) == pytest.approx(20.0, abs=1e-9)


def test_multichannel_pools_energy() -> None:
    ref = tone_mix(SR, 0.2, channels=2)
    est = ref.copy()
    est[0, 100:200] = 0.0  # channel 0 fully wrong, channel 1 perfect
    energy = np.sum(ref[:, 100:200] ** 2)
    expected = 10.0 * math.log10(energy / np.sum(ref[0, 100:200] ** 2))
    assert gap_snr_db(ref, est, 100, 200) == pytest.approx(expected, abs=1e-9)
    assert expected > 0.0  # the perfect channel counts
    assert log_spectral_distance(ref, est, SR, 100, 200) > 0.0


def test_silent_reference() -> None:
    silent = np.zeros(1000)
    assert gap_snr_db(silent, silent, 0, 1000) == math.inf
    assert gap_snr_db(silent, silent + 1e-3, 0, 1000) == -math.inf
    assert math.isfinite(log_spectral_distance(silent, silent + 1e-3, SR))


def test_lsd_grows_with_distortion(tone: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(tone.size)
    start, end = 10_000, 10_960
    values = []
    for level in (1e-4, 1e-3, 1e-2, 1e-1):
        estimate = tone.copy()
        estimate[start:end] += level * noise[start:end]
        values.append(log_spectral_distance(tone, estimate, SR, start, end))
    assert all(np.diff(values) > 0.5), values
    assert values[0] < 1.0  # noise ~65 dB under the tone barely shows


def test_lsd_is_local_to_the_span(tone: np.ndarray) -> None:
    estimate = tone.copy()
    estimate[20_000:20_480] = 0.0
    # frames are 1200 samples: a span far from the damage sees none of it
    assert log_spectral_distance(tone, estimate, SR, 5_000, 6_000) == 0.0
    assert log_spectral_distance(tone, estimate, SR, 20_000, 20_480) > 5.0


def test_lsd_is_level_independent(tone: np.ndarray) -> None:
    estimate = tone.copy()
    estimate[8000:9000] *= 0.5
    a = log_spectral_distance(tone, estimate, SR, 8000, 9000)
    b = log_spectral_distance(1e-3 * tone, 1e-3 * estimate, SR, 8000, 9000)
    assert a == pytest.approx(b, rel=1e-6)
    assert a > 0.1


def test_lsd_short_signal_and_bad_input() -> None:
    x = np.sin(np.arange(300) * 0.1)
    y = x.copy()
    y[100:120] = 0.0
    assert log_spectral_distance(x, y, SR, 100, 120) > 0.0  # frame shrinks to the signal
    with pytest.raises(ValueError):
        log_spectral_distance(x, y[:-1], SR)
    with pytest.raises(ValueError):
        gap_snr_db(x, y, 200, 100)
