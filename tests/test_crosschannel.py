"""A gap on one channel filled from an intact channel (dsp/crosschannel.py via repair)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from maedaw.dsp import crosschannel
from maedaw.dsp.audio_io import SampleFormat, read_region, write_stem
from maedaw.dsp.metrics import gap_snr_db
from maedaw.dsp.repair import RepairConfig, repair_array, repair_file
from maedaw.dsp.signals import music_clip
from maedaw.dsp.spans import DamageKind, Span

RATE = 48_000
NO_CROSS = replace(RepairConfig(), cross=replace(RepairConfig().cross, enabled=False))


def spaced_pair(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Two microphones on one source (a plucked chord over a hiss-like room, which AR cannot
    continue): the right hears it 0.8 ms later, duller and quieter, plus its own noise 40 dB
    down."""
    rng = np.random.default_rng(seed)
    left = music_clip(RATE, seconds, channels=1, seed=seed)[0]
    left = 0.7 * left + 0.05 * rng.standard_normal(left.size)
    delayed = np.concatenate([np.zeros(38), left[:-38]])
    dull = np.convolve(delayed, [0.45, 0.3, 0.15], mode="same")
    right = dull + 10 ** (-40 / 20) * np.std(dull) * rng.standard_normal(left.size)
    return np.stack([left, right])


def one_channel_gap(x: np.ndarray, channel: int, start: int, ms: float):
    length = round(ms * RATE / 1000)
    damaged = x.copy()
    damaged[channel, start : start + length] = 0.0
    return damaged, [Span(start, start + length, channel, DamageKind.DROPOUT, 0.9)]


def written_outside_is_source(out, damaged, report) -> None:
    for c in range(damaged.shape[0]):
        keep = np.ones(damaged.shape[1], dtype=bool)
        for p in report:
            if p.channel == c and p.method != "none":
                keep[p.written_start : p.written_end] = False
        np.testing.assert_array_equal(out[c, keep], damaged[c, keep])


def test_fit_finds_the_delay_and_predicts_the_other_channel():
    x = spaced_pair()
    gap = (RATE, RATE + 2400)
    found = crosschannel.fit(x[1], x[0], gap, [gap], RATE, 0)
    assert found is not None
    assert abs(found.delay + 38) <= 2  # the right lags by 38 samples
    assert found.fit_db > 30.0
    predicted = found.predict(x[0], *gap)
    assert gap_snr_db(x[1, gap[0] : gap[1]], predicted, 0, gap[1] - gap[0]) > 30.0


@pytest.mark.parametrize("ms", [5, 30, 150])
def test_one_channel_dropout_is_taken_from_the_other_channel(ms):
    x = spaced_pair()
    damaged, spans = one_channel_gap(x, 1, int(1.3 * RATE) + 11, ms)
    out, report = repair_array(damaged, RATE, spans)
    assert [p.method for p in report] == ["channel"]
    assert "from channel 1" in report[0].reason
    written_outside_is_source(out, damaged, report)
    np.testing.assert_array_equal(out[0], damaged[0])  # the intact channel is untouched
    s, e = spans[0].start, spans[0].end
    snr = gap_snr_db(x[1], out[1], s, e)
    assert snr > 25.0
    if ms <= 60:  # AR carries it too, much less well
        ar_only, ar_report = repair_array(damaged, RATE, spans, NO_CROSS)
        assert [p.method for p in ar_report] == ["ar"]
        assert snr > gap_snr_db(x[1], ar_only[1], s, e) + 10.0


def test_long_one_channel_gap_needs_no_model():
    x = spaced_pair()
    damaged, spans = one_channel_gap(x, 0, RATE, 400)
    _, without = repair_array(damaged, RATE, spans, NO_CROSS)
    assert without[0].method == "none"  # too long for AR, and there is no model
    out, report = repair_array(damaged, RATE, spans)
    assert report[0].method == "channel" and "residual" not in report[0].reason
    assert gap_snr_db(x[0], out[0], spans[0].start, spans[0].end) > 25.0
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0


def test_unrelated_channels_fall_back_to_ar():
    rng = np.random.default_rng(1)
    x = np.stack([music_clip(RATE, 2.0, 1, seed=1)[0], 0.1 * rng.standard_normal(2 * RATE)])
    damaged, spans = one_channel_gap(x, 0, RATE, 10)
    _, report = repair_array(damaged, RATE, spans)
    assert report[0].method == "ar"


def test_a_channel_lost_at_the_same_time_is_no_source():
    x = spaced_pair()
    damaged, spans = one_channel_gap(x, 1, RATE, 20)
    damaged[0, RATE + 100 : RATE + 300] = 0.0
    spans.append(Span(RATE + 100, RATE + 300, 0, DamageKind.DROPOUT, 0.9))
    _, report = repair_array(damaged, RATE, spans)
    assert {p.method for p in report} == {"ar"}


def test_the_best_intact_channel_is_chosen():
    x = spaced_pair()
    rng = np.random.default_rng(2)
    x = np.stack([0.2 * rng.standard_normal(x.shape[1]), x[0], x[1]])  # 0 unrelated
    damaged, spans = one_channel_gap(x, 2, RATE, 25)
    _, report = repair_array(damaged, RATE, spans)
    assert report[0].method == "channel" and "from channel 2" in report[0].reason


def test_disabled_and_mono_leave_the_policy_alone():
    x = spaced_pair()
    damaged, spans = one_channel_gap(x, 1, RATE, 10)
    assert repair_array(damaged, RATE, spans, NO_CROSS)[1][0].method == "ar"
    mono = damaged[1:].copy()
    mono_spans = [replace(spans[0], channel=0)]
    assert repair_array(mono, RATE, mono_spans)[1][0].method == "ar"


def test_detected_dropout_in_a_file_is_repaired_from_the_other_channel(tmp_path):
    x = 0.5 * spaced_pair(seconds=2.0, seed=4)
    clean_path = write_stem(tmp_path / "clean.wav", x, RATE, SampleFormat.INT24)
    clean = read_region(clean_path).samples
    damaged = clean.copy()
    start = RATE + 333
    damaged[1, start : start + 960] = 0.0  # 20 ms of digital silence on the right only
    source = write_stem(tmp_path / "damaged.wav", damaged, RATE, SampleFormat.INT24)
    report = repair_file(source, tmp_path / "stem.wav")
    stem = read_region(tmp_path / "stem.wav").samples
    used = [s for s in report.spans if s.method == "channel"]
    assert used and all(s.channel == 1 for s in used)
    assert gap_snr_db(clean[1], stem[1], start, start + 960) > 20.0
    np.testing.assert_array_equal(stem[0], damaged[0])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        crosschannel.CrossChannelConfig(context_s=0)
    with pytest.raises(ValueError):
        crosschannel.CrossChannelConfig(max_rows=3)


def test_non_finite_context_gives_no_fit():
    x = spaced_pair()
    x[0, RATE - 2000] = np.nan
    assert crosschannel.fit(x[1], x[0], (RATE, RATE + 480), [], RATE, 0) is None
