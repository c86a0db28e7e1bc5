"""Repair end to end on files: alignment, bit identity outside spans, quality, refusals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from maedaw.dsp.audio_io import AudioError, SampleFormat, read_region, write_stem
from maedaw.dsp.damage import hard_clip, insert_dropout, insert_level_drop
from maedaw.dsp.metrics import gap_snr_db, log_spectral_distance
from maedaw.dsp.repair import RepairConfig, decide, parse_spans, repair_array, repair_file
from maedaw.dsp.signals import music_clip
from maedaw.dsp.spans import DamageKind, Span

RATE = 48_000


def damaged_music(
    tmp_path: Path, fmt: SampleFormat, gaps_ms=(5, 10, 20)
) -> tuple[Path, np.ndarray, list]:
    """A 3 s stereo clip on disk with dropouts; returns (path, clean as read, truth)."""
    clean = music_clip(RATE, 3.0, channels=2, seed=3)
    clean_path = write_stem(tmp_path / "clean.wav", clean, RATE, fmt)
    clean = read_region(clean_path).samples
    damaged = clean.copy()
    truth = []
    for i, ms in enumerate(gaps_ms):
        start = int((0.7 + 0.75 * i) * RATE) + 137  # mid-note, away from onsets
        truth.append(insert_dropout(damaged, i % 2, start, int(ms * RATE / 1000)))
    path = write_stem(tmp_path / "damaged.wav", damaged, RATE, fmt)
    return path, clean, truth


def written_mask(report, channel: int, region_start: int, frames: int) -> np.ndarray:
    mask = np.zeros(frames, dtype=bool)
    for span in report.spans:
        if span.channel == channel and span.method != "none":
            mask[span.written_start - region_start : span.written_end - region_start] = True
    return mask


@pytest.mark.parametrize("fmt", [SampleFormat.INT16, SampleFormat.INT24, SampleFormat.FLOAT32])
def test_auto_repair_changes_only_written_stretches(tmp_path, fmt):
    source, clean, truth = damaged_music(tmp_path, fmt)
    before = source.read_bytes()
    report = repair_file(source, tmp_path / "stem.wav")
    assert source.read_bytes() == before  # the source is never touched
    stem = read_region(tmp_path / "stem.wav")
    assert stem.info.sample_format is fmt
    original = read_region(source).samples
    assert stem.samples.shape == original.shape
    for channel in range(2):
        mask = written_mask(report, channel, 0, original.shape[1])
        np.testing.assert_array_equal(stem.samples[channel, ~mask], original[channel, ~mask])
    # Every inserted dropout was found, repaired, and is now close to the clean signal.
    for span in truth:
        hits = [
            s
            for s in report.spans
            if s.channel == span.channel
            and s.method == "ar"
            and s.start <= span.start
            and s.end >= span.end
        ]
        assert hits, f"dropout at {span.start} not repaired"
        snr = gap_snr_db(clean[span.channel], stem.samples[span.channel], span.start, span.end)
        assert snr > 6.0, f"gap SNR only {snr:.1f} dB for {span.length} samples"


def test_region_stem_is_aligned_with_the_region(tmp_path):
    source, _, truth = damaged_music(tmp_path, SampleFormat.INT24)
    start_s, end_s = 0.6, 1.9  # contains the first two dropouts only
    report = repair_file(source, tmp_path / "stem.wav", start_s, end_s)
    start, end = round(start_s * RATE), round(end_s * RATE)
    stem = read_region(tmp_path / "stem.wav").samples
    original = read_region(source).samples[:, start:end]
    assert stem.shape == original.shape
    assert {s.start for s in report.spans} == {t.start for t in truth[:2]}
    for channel in range(2):
        mask = written_mask(report, channel, start, end - start)
        np.testing.assert_array_equal(stem[channel, ~mask], original[channel, ~mask])
        assert mask.sum() > 0 or channel not in {t.channel for t in truth[:2]}


def test_span_across_the_region_edge_is_repaired_inside_only(tmp_path):
    source, clean, truth = damaged_music(tmp_path, SampleFormat.INT16, gaps_ms=(20,))
    gap = truth[0]
    cut = (gap.start + gap.end) // 2  # the region starts in the middle of the dropout
    report = repair_file(source, tmp_path / "stem.wav", cut / RATE, 2.0)
    (span,) = [s for s in report.spans if s.method == "ar"]
    assert span.written_start == cut
    stem = read_region(tmp_path / "stem.wav").samples[gap.channel]
    repaired_part = stem[: gap.end - cut]
    reference = clean[gap.channel, cut : gap.end]
    assert gap_snr_db(reference, repaired_part, 0, reference.size) > 3.0


def test_marked_spans_apply_to_every_channel(tmp_path):
    source, _, _ = damaged_music(tmp_path, SampleFormat.INT16, gaps_ms=())
    report = repair_file(source, tmp_path / "stem.wav", spans="1.0:1.005, 2.0:2.01")
    assert {(s.channel, s.kind) for s in report.spans} == {(0, "marked"), (1, "marked")}
    assert len(report.spans) == 4 and all(s.method == "ar" for s in report.spans)


def test_too_long_span_is_left_alone_and_said_so(tmp_path):
    source, _, _ = damaged_music(tmp_path, SampleFormat.INT16, gaps_ms=())
    config = RepairConfig(max_ar_ms=50.0)
    report = repair_file(source, tmp_path / "stem.wav", spans="1.0:1.2", config=config)
    assert all(s.method == "none" and "Audio-MAE" in s.reason for s in report.spans)
    np.testing.assert_array_equal(
        read_region(tmp_path / "stem.wav").samples, read_region(source).samples
    )


def test_repair_beats_zero_fill_on_real_speech(tmp_path, real_speech):
    """5-20 ms dropouts in recorded speech: AR repair scores well above zero-fill."""
    rng = np.random.default_rng(11)
    snr_gain, lsd_gain = [], []
    for path in real_speech[:4]:
        clean = read_region(path).samples
        rate = read_region(path).info.sample_rate
        envelope = np.convolve(np.abs(clean[0]), np.ones(480) / 480, mode="same")
        voiced = np.flatnonzero(envelope > 0.3 * envelope.max())
        damaged = clean.copy()
        truth = []
        for ms in (5, 10, 20):
            start = int(
                rng.choice(voiced[(voiced > rate // 10) & (voiced < clean.shape[1] - rate // 10)])
            )
            if any(abs(start - t.start) < rate // 20 for t in truth):
                continue
            truth.append(insert_dropout(damaged, 0, start, int(ms * rate / 1000)))
        source = write_stem(tmp_path / f"d-{path.stem}.wav", damaged, rate, SampleFormat.INT16)
        report = repair_file(source, tmp_path / f"r-{path.stem}.wav")
        repaired = report.repaired
        for span in truth:
            zero = gap_snr_db(clean[0], damaged[0], span.start, span.end)
            fixed = gap_snr_db(clean[0], repaired[0], span.start, span.end)
            snr_gain.append(fixed - zero)
            lsd_zero = log_spectral_distance(clean[0], damaged[0], rate, span.start, span.end)
            lsd_fixed = log_spectral_distance(clean[0], repaired[0], rate, span.start, span.end)
            lsd_gain.append(lsd_zero - lsd_fixed)
    assert len(snr_gain) >= 8
    assert np.median(snr_gain) > 3.0, snr_gain
    assert np.median(lsd_gain) > 1.0, lsd_gain


def test_clipped_speech_is_repaired_beyond_the_clip_level(tmp_path, real_speech):
    clean = read_region(real_speech[0]).samples
    level = 0.3 * np.abs(clean).max()
    clipped, truth = hard_clip(clean, level)
    source = write_stem(tmp_path / "clipped.wav", clipped, 48_000, SampleFormat.FLOAT32)
    report = repair_file(source, tmp_path / "stem.wav")
    clip_spans = [s for s in report.spans if s.kind == DamageKind.CLIP and s.method == "ar"]
    # Most clipped runs of 3+ samples are found (short ones can be natural peaks).
    long_runs = [t for t in truth if t.length >= 3]
    found = [t for t in long_runs if any(s.start <= t.start and s.end >= t.end for s in clip_spans)]
    assert len(found) >= 0.8 * len(long_runs)
    stem = report.repaired[0]
    for span in clip_spans:
        held = clipped[0, span.start : span.end]
        fixed = stem[span.start : span.end]
        assert np.all(np.abs(fixed) >= np.abs(held) - 1e-7)
        assert np.all(np.sign(fixed) == np.sign(held))
    # Peaks come back above the clip level somewhere.
    assert np.abs(stem).max() > level * 1.05


# --- refusals: nothing written -----------------------------------------------------


def test_refuses_to_overwrite_the_source(tmp_path):
    source, _, _ = damaged_music(tmp_path, SampleFormat.INT16, gaps_ms=(5,))
    before = source.read_bytes()
    with pytest.raises(AudioError, match="refusing to overwrite the source"):
        repair_file(source, source)
    assert source.read_bytes() == before


def test_existing_output_needs_overwrite(tmp_path):
    source, _, _ = damaged_music(tmp_path, SampleFormat.INT16, gaps_ms=(5,))
    out = tmp_path / "stem.wav"
    out.write_bytes(b"keep me")
    with pytest.raises(AudioError, match="already exists"):
        repair_file(source, out)
    assert out.read_bytes() == b"keep me"
    repair_file(source, out, overwrite=True)
    assert read_region(out).info.frames == read_region(source).info.frames


@pytest.mark.parametrize(
    ("start", "end", "message"), [(2.0, 5.0, "past the end"), (1.0, 1.0, "empty region")]
)
def test_bad_region_writes_nothing(tmp_path, start, end, message):
    source, _, _ = damaged_music(tmp_path, SampleFormat.INT16, gaps_ms=(5,))
    listing = sorted(tmp_path.iterdir())
    with pytest.raises(AudioError, match=message):
        repair_file(source, tmp_path / "stem.wav", start, end)
    assert sorted(tmp_path.iterdir()) == listing


def test_float_source_cannot_become_flac(tmp_path):
    source, _, _ = damaged_music(tmp_path, SampleFormat.FLOAT32, gaps_ms=(5,))
    with pytest.raises(AudioError, match="FLAC cannot hold float32"):
        repair_file(source, tmp_path / "stem.flac")
    assert not (tmp_path / "stem.flac").exists()


@pytest.mark.parametrize("text", ["1.0", "a:b", "2.0:1.0", "-1:0.5"])
def test_bad_span_text(text):
    with pytest.raises(AudioError):
        parse_spans(text, RATE, 2)


def test_progress_reaches_done(tmp_path):
    source, _, _ = damaged_music(tmp_path, SampleFormat.INT16, gaps_ms=(5,))
    seen: list[tuple[float, str]] = []
    repair_file(source, tmp_path / "stem.wav", progress=lambda f, s: seen.append((f, s)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_level_drops_get_their_gain_back(tmp_path, real_speech):
    """A 30 dB drop keeps the real signal: restoring the gain beats re-drawing it."""
    rng = np.random.default_rng(5)
    regained, scores = 0, []
    for path in real_speech:
        clean = read_region(path).samples
        envelope = np.convolve(np.abs(clean[0]), np.ones(480) / 480, mode="same")
        voiced = np.flatnonzero(envelope > 0.3 * envelope.max())
        voiced = voiced[(voiced > 5000) & (voiced < clean.shape[1] - 10_000)]
        damaged = clean.copy()
        truth = insert_level_drop(damaged, 0, int(rng.choice(voiced)), 1440, 30.0)
        source = write_stem(
            tmp_path / f"drop-{path.stem}.wav", damaged, 48_000, SampleFormat.FLOAT32
        )
        report = repair_file(source, tmp_path / f"fixed-{path.stem}.wav")
        drops = [
            s
            for s in report.spans
            if s.kind == "level_drop" and s.start < truth.end and s.end > truth.start
        ]
        if drops and drops[0].method == "regain":
            regained += 1
            scores.append(gap_snr_db(clean[0], report.repaired[0], truth.start, truth.end))
        untouched = np.ones(clean.shape[1], dtype=bool)
        for span in report.spans:
            untouched[span.written_start : span.written_end] = False
        on_disk = read_region(source).samples  # float32, as the stem's samples are
        np.testing.assert_array_equal(report.repaired[0, untouched], on_disk[0, untouched])
    assert regained >= 0.6 * len(real_speech), regained
    assert np.median(scores) > 12.0, scores


# --- the hybrid policy with an Audio-MAE model ------------------------------------


@pytest.fixture(scope="module")
def inpainter():
    from maedaw.models.inpaint import Inpainter
    from tests.tiny_models import tiny_model

    return Inpainter(tiny_model(seed=1))  # 1.28 s window: fills gaps up to 320 ms


def _span(ms: float, kind: DamageKind = DamageKind.DROPOUT, confidence: float = 1.0) -> Span:
    return Span(48_000, 48_000 + round(ms * RATE / 1000), 0, kind, confidence)


def test_policy_picks_a_method_by_length_and_kind():
    config = RepairConfig()
    with_model = 2000.0
    assert decide(_span(10), RATE, config, with_model)[0] == "ar"
    assert decide(_span(45), RATE, config, with_model)[0] == "blend"
    method, reason = decide(_span(200), RATE, config, with_model)
    assert method == "mae" and "Audio-MAE" in reason
    method, reason = decide(_span(3000), RATE, config, with_model)
    assert method == "none" and "longer than the Audio-MAE model fills" in reason
    # without a model: exactly the old behaviour
    assert decide(_span(45), RATE, config, None)[0] == "ar"
    method, reason = decide(_span(200), RATE, config, None)
    assert method == "none" and "needs the Audio-MAE model" in reason
    # clipped runs and clicks stay with AR (the clip constraint, waveform-exact), model or not
    assert decide(_span(10, DamageKind.CLIP), RATE, config, with_model)[0] == "ar"
    assert decide(_span(200, DamageKind.CLICK), RATE, config, with_model)[0] == "none"
    assert decide(_span(200, confidence=0.1), RATE, config, with_model)[0] == "none"


def _zeroed(tmp_path: Path, stretches_s: list[tuple[float, float]]):
    clean = music_clip(RATE, 3.0, channels=2, seed=3)
    clean_path = write_stem(tmp_path / "clean.wav", clean, RATE, SampleFormat.INT24)
    clean = read_region(clean_path).samples
    damaged = clean.copy()
    for a, b in stretches_s:
        damaged[:, round(a * RATE) : round(b * RATE)] = 0.0
    return write_stem(tmp_path / "damaged.wav", damaged, RATE, SampleFormat.INT24), clean


def test_long_marked_span_is_inpainted_with_a_model(tmp_path, inpainter):
    source, clean = _zeroed(tmp_path, [(1.2, 1.35)])
    report = repair_file(source, tmp_path / "stem.wav", spans="1.2:1.35", inpainter=inpainter)
    assert [s.method for s in report.spans] == ["mae", "mae"]
    assert all("Audio-MAE" in s.reason for s in report.spans)
    assert report.to_dict()["spans"][0]["method"] == "mae"
    stem = read_region(tmp_path / "stem.wav")
    original = read_region(source)
    assert stem.info.sample_format is SampleFormat.INT24
    assert stem.samples.shape == original.samples.shape and np.isfinite(stem.samples).all()
    fade = inpainter.fade(RATE)
    for channel in range(2):
        mask = written_mask(report, channel, 0, original.samples.shape[1])
        span = next(s for s in report.spans if s.channel == channel)
        assert (span.written_start, span.written_end) == (span.start - fade, span.end + fade)
        np.testing.assert_array_equal(
            stem.samples[channel, ~mask], original.samples[channel, ~mask]
        )
    start, end = round(1.2 * RATE), round(1.35 * RATE)
    zero = log_spectral_distance(clean, original.samples, RATE, start, end)
    filled = log_spectral_distance(clean, stem.samples, RATE, start, end)
    assert filled < zero - 3.0, (filled, zero)


def test_short_gaps_are_unchanged_by_the_model_and_mid_gaps_blend(tmp_path, inpainter):
    source, clean, _ = damaged_music(tmp_path, SampleFormat.INT16, gaps_ms=(5, 10))
    without = repair_file(source, tmp_path / "ar.wav")
    with_model = repair_file(source, tmp_path / "hybrid.wav", inpainter=inpainter)
    assert [s.method for s in with_model.spans] == [s.method for s in without.spans]
    assert (tmp_path / "ar.wav").read_bytes() == (tmp_path / "hybrid.wav").read_bytes()

    (tmp_path / "mid").mkdir()
    source, clean = _zeroed(tmp_path / "mid", [(1.5, 1.545)])  # 45 ms on both channels
    report = repair_file(source, tmp_path / "blend.wav", spans="1.5:1.545", inpainter=inpainter)
    assert {s.method for s in report.spans} == {"blend"}
    stem = read_region(tmp_path / "blend.wav").samples
    original = read_region(source).samples
    for channel in range(2):
        mask = written_mask(report, channel, 0, original.shape[1])
        np.testing.assert_array_equal(stem[channel, ~mask], original[channel, ~mask])
    start, end = round(1.5 * RATE), round(1.545 * RATE)
    assert log_spectral_distance(clean, stem, RATE, start, end) < log_spectral_distance(
        clean, original, RATE, start, end
    )


def test_repair_array_refuses_a_wrong_model_type():
    x = music_clip(RATE, 1.0, channels=1, seed=1)
    with pytest.raises(TypeError, match="an Inpainter or None"):
        repair_array(x, RATE, [_span(100)], inpainter="compact-default")


# --- the inpainter seam: any object with max_gap_s, fade and fill ---------------------------


class FakeInpainter:
    """Fills every gap (and its fade margins) with a constant, and records each call: enough
    to see where repair hands a gap to the inpainter, with no model at all."""

    max_gap_s = 0.5
    level = 0.25

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[tuple[int, int]]]] = []

    def fade(self, rate: int) -> int:
        return round(0.002 * rate)

    def fill(self, samples, rate, gaps, damaged=()):
        self.calls.append((samples.shape[0], [tuple(g) for g in gaps]))
        out = np.array(samples, dtype=np.float64)
        fade = self.fade(rate)
        for lo, hi in gaps:
            out[:, max(0, lo - fade) : hi + fade] = self.level
        return out


def test_a_gap_too_long_for_ar_goes_to_the_inpainter():
    x = music_clip(RATE, 3.0, channels=1, seed=2)
    span = _span(200)  # > max_ar_ms (60): AR cannot carry it
    damaged = x.copy()
    damaged[0, span.start : span.end] = 0.0
    fake = FakeInpainter()
    out, report = repair_array(damaged, RATE, [span], inpainter=fake)
    (done,) = report
    assert done.method == "mae" and "Audio-MAE spectral inpainting" in done.reason
    fade = fake.fade(RATE)
    assert (done.written_start, done.written_end) == (span.start - fade, span.end + fade)
    (call,) = fake.calls
    assert call == (1, [(span.start, span.end)])
    np.testing.assert_array_equal(out[0, span.start : span.end], FakeInpainter.level)
    keep = np.ones(x.shape[1], dtype=bool)
    keep[done.written_start : done.written_end] = False
    np.testing.assert_array_equal(out[0, keep], damaged[0, keep])


def test_mid_gaps_blend_the_inpainter_and_short_ones_never_call_it():
    x = music_clip(RATE, 3.0, channels=1, seed=2)
    fake = FakeInpainter()
    _, report = repair_array(x, RATE, [_span(10)], inpainter=fake)
    assert report[0].method == "ar" and not fake.calls
    _, report = repair_array(x, RATE, [_span(45)], inpainter=fake)
    assert report[0].method == "blend" and len(fake.calls) == 1


def _tone_and_noise(seconds: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(round(seconds * RATE)) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 196.0 * t) + 0.1 * np.sin(2 * np.pi * 392.0 * t + 0.4)
    noise = 0.2 * np.random.default_rng(5).standard_normal(t.shape[0])
    return tone[None, :], noise[None, :]


def test_periodic_mid_gaps_stay_with_ar_and_noisy_ones_blend():
    tone, noise = _tone_and_noise()
    span = _span(30)  # between ar_only_ms (15) and periodic_ar_until_ms (40)
    for signal, expected in ((tone, "ar"), (noise, "blend")):
        damaged = signal.copy()
        damaged[0, span.start : span.end] = 0.0
        fake = FakeInpainter()
        out, (done,) = repair_array(damaged, RATE, [span], inpainter=fake)
        assert done.method == expected, done.reason
        assert bool(fake.calls) == (expected == "blend")
    # the tone's AR fill carries the waveform (the fake's constant would not)
    damaged = tone.copy()
    damaged[0, span.start : span.end] = 0.0
    out, (done,) = repair_array(damaged, RATE, [span], inpainter=FakeInpainter())
    assert "periodic context" in done.reason
    assert gap_snr_db(tone, out, span.start, span.end) > 20.0
    # past periodic_ar_until_ms the model's blend takes over again, periodic or not
    long = _span(50)
    damaged = tone.copy()
    damaged[0, long.start : long.end] = 0.0
    assert repair_array(damaged, RATE, [long], inpainter=FakeInpainter())[1][0].method == "blend"


def test_periodicity_ignores_other_damage_in_the_context():
    tone, _ = _tone_and_noise()
    span = _span(30)
    damaged = tone.copy()
    damaged[0, span.start : span.end] = 0.0
    # a burst of noise right before the gap, marked as damage too: not periodic context
    burst = Span(span.start - 200, span.start - 20, 0, DamageKind.MARKED, 1.0)
    damaged[0, burst.start : burst.end] = np.random.default_rng(1).standard_normal(180)
    _, report = repair_array(damaged, RATE, [burst, span], inpainter=FakeInpainter())
    # only 20 known samples between the burst and the gap: too little to call periodic
    assert [d.method for d in report] == ["ar", "blend"]
    config = RepairConfig(periodic_ar_min=1.01)  # the switch off: the old policy
    _, (done,) = repair_array(damaged, RATE, [span], config, inpainter=FakeInpainter())
    assert done.method == "blend"


def test_train_counts_match_counting_every_pair():
    # the sorted count must equal the plain definition: other gap-like spans on the same
    # channel whose stretch reaches within the window (identical spans not counted)
    from maedaw.dsp.repair import GAP_KINDS, _train_counts

    rng = np.random.default_rng(4)
    kinds = [DamageKind.MARKED, DamageKind.DROPOUT, DamageKind.CLICK, DamageKind.LEVEL_DROP]
    spans = []
    for _ in range(300):
        start = int(rng.integers(0, 200_000))
        spans.append(
            Span(
                start,
                start + int(rng.integers(1, 3000)),
                int(rng.integers(0, 3)),
                kinds[int(rng.integers(0, 4))],
                1.0,
            )
        )
    spans += spans[:5]  # exact duplicates: they do not count as each other's train
    damaged, spans = spans[250:], spans[:250]
    window = 12_000

    def plain(span):
        if span.kind not in GAP_KINDS:
            return 0
        return sum(
            1
            for o in (*spans, *damaged)
            if o.channel == span.channel
            and o.kind in GAP_KINDS
            and o.end > span.start - window
            and o.start < span.end + window
            and (o.start, o.end) != (span.start, span.end)
        )

    counts = _train_counts(spans, damaged, window)
    assert counts == [plain(s) for s in spans]
    assert max(counts) > 2 and 0 in counts  # both trains and lone spans were drawn


def test_a_train_of_gaps_stays_with_ar_and_a_lone_gap_of_the_same_length_does_not():
    _, noise = _tone_and_noise()  # not periodic: only the train rule can keep AR
    length = round(0.05 * RATE)  # 50 ms: past periodic_ar_until_ms, inside max_ar_ms
    starts = [30_000, 42_000, 54_000]  # within train_window_s of each other
    train = [Span(s, s + length, 0, DamageKind.MARKED, 1.0) for s in starts]
    damaged = noise.copy()
    for span in train:
        damaged[0, span.start : span.end] = 0.0
    fake = FakeInpainter()
    _, report = repair_array(damaged, RATE, train, inpainter=fake)
    assert [d.method for d in report] == ["ar"] * 3 and not fake.calls
    assert all("train of 3 gaps" in d.reason for d in report)
    # the same gap alone, or the train with the rule off: the model's blend
    _, (alone,) = repair_array(damaged, RATE, train[1:2], inpainter=FakeInpainter())
    assert alone.method == "blend"
    off = RepairConfig(train_min_others=99)
    _, report = repair_array(damaged, RATE, train, off, inpainter=FakeInpainter())
    assert {d.method for d in report} == {"blend"}
    # gaps on another channel are not this channel's train
    other = 0.2 * np.random.default_rng(9).standard_normal(damaged.shape)  # predicts nothing
    stereo = np.vstack([damaged, other])
    channels = (0, 1, 0)
    spread = [
        Span(s.start, s.end, c, DamageKind.MARKED, 1.0)
        for s, c in zip(train, channels, strict=True)
    ]
    _, report = repair_array(stereo, RATE, spread, inpainter=FakeInpainter())
    assert [d.method for d in report] == ["blend"] * 3


def test_no_inpainter_means_ar_only(tmp_path):
    source, _ = _zeroed(tmp_path, [(1.2, 1.4)])
    report = repair_file(source, tmp_path / "stem.wav", spans="1.2:1.4", inpainter=None)
    payload = report.to_dict()
    assert payload["repaired"] == 0 and payload["left_alone"] == 2
    assert all(s["method"] == "none" for s in payload["spans"])
    assert all("needs the Audio-MAE model" in s["reason"] for s in payload["spans"])
    np.testing.assert_array_equal(
        read_region(tmp_path / "stem.wav").samples, read_region(source).samples
    )
    fake = FakeInpainter()
    report = repair_file(source, tmp_path / "fake.wav", spans="1.2:1.4", inpainter=fake)
    assert [s["method"] for s in report.to_dict()["spans"]] == ["mae", "mae"]
    assert [channels for channels, _ in fake.calls] == [2]  # both channels in one call


def test_cli_model_option(tmp_path, inpainter):
    from maedaw.bridge.cli import main
    from maedaw.models.checkpoint import save_model

    source, _ = _zeroed(tmp_path, [(1.0, 1.2)])
    out = tmp_path / "stem.wav"
    marked = ["repair", str(source), "-o", str(out), "--spans", "1.0:1.2"]
    assert main([*marked, "--model", "nope"]) == 1  # "error: model 'nope': no model ..."
    assert not out.exists()
    assert main([*marked, "--model", "none"]) == 0  # AR only: 200 ms is left alone
    np.testing.assert_array_equal(read_region(out).samples, read_region(source).samples)
    weights = save_model(inpainter.model, tmp_path / "tiny", frontend=inpainter.frontend)
    out2 = tmp_path / "stem2.wav"
    args = ["repair", str(source), "-o", str(out2), "--spans", "1.0:1.2"]
    assert main([*args, "--model", str(weights.json_path)]) == 0
    assert not np.array_equal(read_region(out2).samples, read_region(source).samples)


# ----------------------------------------------------------------------------- channels in parallel


def stereo_gaps(channels: tuple[int, ...] = (0, 1), count: int = 3) -> tuple[np.ndarray, list]:
    """Stereo music with ``count`` 20 ms dropouts at the same places in ``channels``, 0.6 s
    apart (not a train)."""
    x = music_clip(RATE, 0.6 * count + 0.4, channels=2, seed=4).astype(np.float64)
    spans = []
    for i in range(count):
        start = int((0.3 + 0.6 * i) * RATE) + 91
        for channel in channels:
            spans.append(Span(start, start + 960, channel, DamageKind.DROPOUT, 1.0))
            x[channel, start : start + 960] = 0.0
    return x, spans


def test_channels_repaired_side_by_side_equal_the_serial_repair(monkeypatch) -> None:
    from maedaw.dsp import repair

    x, spans = stereo_gaps()
    monkeypatch.setattr(repair, "blas_threads", lambda: 1)
    serial, _ = repair_array(x, RATE, spans)
    monkeypatch.setattr(repair, "blas_threads", lambda: 2)
    parallel, _ = repair_array(x, RATE, spans)
    # the same solves (one BLAS thread each instead of a shared pool: rounding only)
    np.testing.assert_allclose(parallel, serial, rtol=0, atol=1e-9)
    assert not np.array_equal(serial, x)


def test_channels_sharing_their_gaps_search_the_ar_order_once_on_their_mix(monkeypatch) -> None:
    from maedaw.dsp import ar

    searched: list[float] = []
    select = ar._select_config

    def counting(x0, known, gaps, cfg):
        searched.append(float(np.sum(x0**2)))
        return select(x0, known, gaps, cfg)

    monkeypatch.setattr(ar, "_select_config", counting)
    x, spans = stereo_gaps()
    repaired, _ = repair_array(x, RATE, spans)
    assert len(searched) == 3  # one search per gap, on the mix, not one per channel
    # the mix's choices are what each channel is then filled with
    known = np.ones(x.shape[1], dtype=bool)
    for s in spans:
        known[s.start : s.end] = False
    mix = x.mean(axis=0)
    fade = max(1, round(RepairConfig().crossfade_ms * RATE / 1000.0))
    gaps = [(s.start - fade, s.end + fade) for s in spans if s.channel == 0]
    configs = ar.choose_configs(mix, gaps, ar.ARConfig(sample_rate=RATE))
    for channel in range(2):
        filled = ar.fill_gaps(x[channel], gaps, ar.ARConfig(sample_rate=RATE), configs=configs)
        for s in spans[channel::2]:
            np.testing.assert_allclose(
                repaired[channel, s.start : s.end], filled[s.start : s.end], atol=1e-12
            )
    # gaps in one channel only: that channel searches its own, as before
    searched.clear()
    x, spans = stereo_gaps(channels=(1,))
    repair_array(x, RATE, spans)
    assert len(searched) == 3


def test_channels_in_anti_phase_are_not_searched_on_their_mix(monkeypatch) -> None:
    from maedaw.dsp import ar

    calls: list[int] = []
    choose = ar.choose_configs
    monkeypatch.setattr(ar, "choose_configs", lambda *a, **k: calls.append(1) or choose(*a, **k))
    x, spans = stereo_gaps()
    x[1] = -x[0]  # the mix is silence: it cannot tell the orders apart
    repaired, _ = repair_array(x, RATE, spans)
    assert not calls
    assert np.all(np.isfinite(repaired))


def test_a_cancelled_repair_stops_every_channel(monkeypatch) -> None:
    from maedaw.dsp import ar, repair
    from maedaw.dsp.audio_io import AudioInfo, Region

    monkeypatch.setattr(repair, "blas_threads", lambda: 2)
    x, spans = stereo_gaps(count=4)
    # each channel's fills, told apart by their context (the mix's search fills are neither)
    fills = {0: 0, 1: 0}
    fill = ar._fill_cluster

    def counting(x0, known, gaps, cfg):
        for channel in (0, 1):
            if np.array_equal(x0[:4800], x[channel, :4800]):
                fills[channel] += 1
        return fill(x0, known, gaps, cfg)

    monkeypatch.setattr(ar, "_fill_cluster", counting)
    info = AudioInfo(Path("<memory>"), RATE, 2, x.shape[1], SampleFormat.FLOAT32, "wav", True)
    region = Region(info, 0, x.shape[1], 0, x.shape[1], x)

    class Stop(Exception):
        pass

    def progress(fraction: float, stage: str) -> None:
        if stage == "repairing (AR)" and fraction > 0:
            raise Stop  # cancelled once the first gap of either channel is done

    with pytest.raises(Stop):
        repair.repair_region(region, spans, progress=progress)
    assert fills[0] + fills[1] >= 1 and max(fills.values()) < 4, fills
    fills.update({0: 0, 1: 0})
    repair.repair_region(region, spans)
    assert fills == {0: 4, 1: 4}


def test_a_train_of_gaps_is_filled_with_the_train_settings_and_the_rest_without(
    monkeypatch,
) -> None:
    from maedaw.dsp import ar

    calls: list[tuple[list, list, ar.ARConfig]] = []
    fill = ar.fill_gaps

    def recording(x, gaps, config=None, progress=None, no_search=(), configs=None, holes=()):
        calls.append((list(gaps), list(holes), config))
        return fill(x, gaps, config, progress, no_search, configs, holes)

    monkeypatch.setattr(ar, "fill_gaps", recording)
    x = music_clip(RATE, 2.0, channels=1, seed=6)
    packets = [(int(t * RATE), int(t * RATE) + 960) for t in (0.40, 0.46, 0.55, 0.63)]
    lone = (int(1.6 * RATE), int(1.6 * RATE) + 960)
    spans = [Span(a, b, 0, DamageKind.DROPOUT, 1.0) for a, b in [*packets, lone]]
    for a, b in [*packets, lone]:
        x[0, a:b] = 0.0
    config = RepairConfig()
    repaired, plan = repair_array(x, RATE, spans, config)
    assert {p.method for p in plan} == {"ar"}
    (lone_gaps, lone_holes, lone_cfg), (train_gaps, train_holes, train_cfg) = calls
    assert len(lone_gaps) == 1 and lone_gaps[0][0] < lone[0] < lone[1] < lone_gaps[0][1]
    assert train_holes == lone_gaps and lone_holes == train_gaps and len(train_gaps) == 4
    assert lone_cfg.context_multiple == config.ar.context_multiple
    assert lone_cfg.iterations == config.ar.iterations
    assert train_cfg.context_multiple == config.train_ar_context_multiple
    assert train_cfg.iterations == config.train_ar_iterations
    # without the train's own settings the packets come out differently, the lone gap the same
    calls.clear()
    same = replace(
        config,
        train_ar_context_multiple=config.ar.context_multiple,
        train_ar_iterations=config.ar.iterations,
    )
    plain, _ = repair_array(x, RATE, spans, same)
    a, b = packets[1]
    assert not np.allclose(plain[0, a:b], repaired[0, a:b])
    np.testing.assert_array_equal(plain[0, lone[0] : lone[1]], repaired[0, lone[0] : lone[1]])
