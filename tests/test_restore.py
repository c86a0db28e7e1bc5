"""Restoration ops (declip, declick, dehum, denoise, bandwidth): each improves its metric
on audio made here, keeps the file's format, changes only what it says, and refuses
bad input cleanly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soxr
from conftest import tone_mix
from scipy import signal

from maedaw.bridge.cli import main
from maedaw.dsp import restore
from maedaw.dsp.audio_io import SampleFormat, probe, read_region, write_stem
from maedaw.dsp.damage import insert_click
from maedaw.dsp.metrics import sdr_db
from maedaw.dsp.restore import OPS, OptionError, restore_file, validate_options


def _write(path: Path, x: np.ndarray, rate: int, fmt: SampleFormat) -> Path:
    write_stem(path, x, rate, fmt)
    return path


def _read(path: Path) -> np.ndarray:
    return read_region(path).samples


def _speechlike(rate: int, seconds: float, channels: int, seed: int = 0) -> np.ndarray:
    """Tone bursts with pauses (syllables), a little noise: speech's on/off envelope."""
    x = tone_mix(rate, seconds, channels, seed)
    t = np.arange(x.shape[1]) / rate
    envelope = signal.savgol_filter(
        (np.sin(2 * np.pi * 1.7 * t) > 0.1).astype(float), 2 * (rate // 40) + 1, 2
    )
    return x * np.clip(envelope, 0.0, 1.0)


def _assert_same_format(src: Path, out: Path) -> None:
    a, b = probe(src), probe(out)
    assert (a.sample_rate, a.num_channels, a.frames, a.sample_format) == (
        b.sample_rate,
        b.num_channels,
        b.frames,
        b.sample_format,
    )
    y = _read(out)
    assert np.isfinite(y).all()


def _hum_power(x: np.ndarray, rate: int, f0: float, harmonics: int) -> float:
    """Power of the least-squares fit of sinusoids at the hum's exact frequencies."""
    t = np.arange(x.shape[-1]) / rate
    basis = np.stack(
        [f(2 * np.pi * f0 * k * t) for k in range(1, harmonics + 1) for f in (np.sin, np.cos)],
        axis=1,
    )
    coef, *_ = np.linalg.lstsq(basis, np.atleast_2d(x).T, rcond=None)
    return float(np.mean((basis @ coef) ** 2))


# ----------------------------------------------------------------------------- options


def test_registry_lists_every_op_with_documented_options() -> None:
    assert set(OPS) == {"declip", "declick", "dehum", "denoise", "bandwidth"}
    for op in OPS.values():
        assert op.summary and op.kind in ("span", "region")
        resolved = validate_options(op.name, {})
        assert set(resolved) == set(op.options)
        assert all(spec.help for spec in op.options.values())


@pytest.mark.parametrize(
    ("op", "options", "message"),
    [
        ("descratch", {}, "unknown restore op"),
        ("dehum", {"frequency": 50}, "has no option frequency"),
        ("dehum", {"freq": "fifty"}, "not a number"),
        ("dehum", {"width_hz": -1}, "outside"),
        ("declip", {"order": 2.5}, "whole number"),
        ("declip", {"consistent": "maybe"}, "true/false"),
        ("denoise", {"reduction_db": float("nan")}, "finite"),
        ("declip", {"method": "magic"}, "one of"),
    ],
)
def test_bad_ops_and_options_are_refused_and_nothing_is_written(
    tmp_path: Path, op: str, options: dict, message: str
) -> None:
    src = _write(tmp_path / "in.wav", tone_mix(16_000, 1.0), 16_000, SampleFormat.INT16)
    out = tmp_path / "out.wav"
    with pytest.raises(OptionError, match=message):
        restore_file(src, out, None, None, op, options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_option_errors_are_value_errors_and_strings_are_parsed() -> None:
    assert issubclass(OptionError, ValueError)
    resolved = validate_options("dehum", {"freq": "60", "harmonics": "8", "search": "wide"})
    assert resolved["freq"] == 60.0 and resolved["harmonics"] == 8
    assert validate_options("dehum", {"freq": "auto"})["freq"] is None
    assert validate_options("declip", {"consistent": "false"})["consistent"] is False


def test_denoise_needs_both_ends_of_a_noise_stretch(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.wav", tone_mix(16_000, 1.0), 16_000, SampleFormat.INT16)
    with pytest.raises(OptionError, match="both"):
        restore_file(src, tmp_path / "o.wav", op="denoise", options={"noise_start": 0.1})
    assert not (tmp_path / "o.wav").exists()


# ----------------------------------------------------------------------------- declip


def test_declip_raises_sdr_and_touches_only_clipped_samples(tmp_path: Path) -> None:
    rate = 22_050
    clean = 0.9 * tone_mix(rate, 1.5, 2, seed=3) / np.abs(tone_mix(rate, 1.5, 2, seed=3)).max()
    level = 0.5 * np.abs(clean).max()
    clipped = np.clip(clean, -level, level)
    src = _write(tmp_path / "clipped.wav", clipped, rate, SampleFormat.INT16)
    out = tmp_path / "declipped.wav"
    report = restore_file(src, out, op="declip")
    _assert_same_format(src, out)
    before, after = _read(src), _read(out)
    lsb = 1.0 / 32768
    top, bottom = before.max(axis=1, keepdims=True), before.min(axis=1, keepdims=True)
    held = (before >= top - lsb / 2) | (before <= bottom + lsb / 2)
    assert report.changed and report.detection["clipped"]
    # untouched samples are the source's, bit for bit
    assert np.array_equal(before[~held], after[~held])
    # redrawn samples lie beyond the clip level, with the held sample's sign
    assert np.all(np.sign(after[held]) == np.sign(before[held]))
    assert np.all(np.abs(after[held]) >= np.abs(before[held]) - lsb)
    assert np.abs(after).max() < 1.0
    gain = sdr_db(clean, after) - sdr_db(clean, before)
    assert gain > 6.0, gain
    # the consistency constraint is worth having
    plain = tmp_path / "plain.wav"
    restore_file(src, plain, op="declip", options={"consistent": False})
    assert sdr_db(clean, after) > sdr_db(clean, _read(plain))
    payload = report.to_dict()
    assert payload["timings_s"]["process"] > 0 and payload["timings_s"]["write"] > 0
    assert payload["changed_samples"] == int(held.sum())
    assert payload["what_changed"].startswith("only the listed spans")


def test_declip_leaves_unclipped_audio_alone(tmp_path: Path) -> None:
    src = _write(tmp_path / "clean.wav", 0.5 * tone_mix(16_000, 1.0, 1), 16_000, SampleFormat.INT24)
    out = tmp_path / "out.wav"
    report = restore_file(src, out, op="declip")
    assert not report.changed and report.detection["clipped"] is False
    assert np.array_equal(_read(src), _read(out))
    assert probe(out).sample_format is SampleFormat.INT24


# ----------------------------------------------------------------------------- declick


def test_declick_removes_clicks_and_keeps_the_rest_bit_identical(tmp_path: Path) -> None:
    rate = 44_100
    clean = 0.6 * tone_mix(rate, 1.2, 2, seed=5)
    damaged = clean.copy()
    rng = np.random.default_rng(2)
    for i in range(6):
        insert_click(damaged, i % 2, 6000 + i * 8000, 3, 0.4, rng)
    src = _write(tmp_path / "clicks.wav", damaged, rate, SampleFormat.FLOAT32)
    out = tmp_path / "declicked.wav"
    report = restore_file(src, out, op="declick")
    _assert_same_format(src, out)
    before, after = _read(src), _read(out)
    assert report.detection["clicks_found"] >= 6
    assert sdr_db(clean, after) > sdr_db(clean, before) + 10.0
    touched = np.zeros(before.shape, dtype=bool)
    for r in report.to_dict()["changed_ranges"]:
        touched[r["channel"], r["start"] : r["end"]] = True
    assert np.array_equal(before[~touched], after[~touched])
    assert touched.sum() < 0.02 * touched.size


# ----------------------------------------------------------------------------- dehum


@pytest.mark.parametrize("f0", [50.0, 59.94])
def test_dehum_removes_hum_harmonics_and_keeps_the_signal(tmp_path: Path, f0: float) -> None:
    rate = 16_000
    t = np.arange(3 * rate) / rate
    # a harmonic tone (263 Hz, vibrato) whose partials stay 9 Hz or more from every
    # line of both hums: a partial within a notch's reach of a hum line loses that band
    phase = 2 * np.pi * 263.0 * t + 0.3 * np.sin(2 * np.pi * 5.0 * t)
    tone = sum(np.sin(k * phase) / k for k in range(1, 4))
    noise = 0.003 * np.random.default_rng(0).standard_normal((2, t.size))
    clean = 0.3 * np.stack([tone, np.roll(tone, 40)]) + noise
    hum = sum(0.03 / k * np.sin(2 * np.pi * f0 * k * t + k) for k in range(1, 6))
    src = _write(tmp_path / "hum.wav", clean + hum, rate, SampleFormat.FLOAT32)
    out = tmp_path / "dehum.wav"
    report = restore_file(src, out, op="dehum")
    _assert_same_format(src, out)
    after = _read(out)
    assert abs(report.detection["fundamental_hz"] - f0) < 0.05
    before_db = 10 * np.log10(_hum_power((clean + hum)[0] - clean[0], rate, f0, 5))
    after_db = 10 * np.log10(_hum_power(after[0] - clean[0], rate, f0, 5))
    assert before_db - after_db > 20.0, (before_db, after_db)
    assert sdr_db(clean, after) > 25.0
    assert report.to_dict()["what_changed"].startswith("every sample of the region")


def test_dehum_finds_no_hum_in_clean_audio_and_copies_it(tmp_path: Path) -> None:
    src = _write(
        tmp_path / "clean.wav", 0.5 * tone_mix(16_000, 2.0, 1, seed=4), 16_000, SampleFormat.INT16
    )
    out = tmp_path / "out.wav"
    report = restore_file(src, out, op="dehum")
    assert not report.changed
    assert np.array_equal(_read(src), _read(out))


# ----------------------------------------------------------------------------- denoise


def test_denoise_raises_snr_and_keeps_the_stereo_image(tmp_path: Path) -> None:
    rate = 16_000
    clean = 0.5 * _speechlike(rate, 3.0, 2, seed=2)
    clean[1] = 0.7 * clean[0] + 0.3 * clean[1]  # correlated channels, off-centre
    noise = 0.02 * np.random.default_rng(0).standard_normal(clean.shape)
    src = _write(tmp_path / "noisy.wav", clean + noise, rate, SampleFormat.INT16)
    out = tmp_path / "clean.wav"
    report = restore_file(src, out, op="denoise")
    _assert_same_format(src, out)
    after = _read(out)
    assert sdr_db(clean, after) > sdr_db(clean, clean + noise) + 6.0
    # the noise profile found is the noise that was added (per channel, dBFS)
    assert abs(report.detection["noise_level_dbfs"] - 20 * np.log10(0.02)) < 3.0
    corr = np.corrcoef(clean)[0, 1]
    assert abs(np.corrcoef(after)[0, 1] - corr) < 0.03
    # the balance between channels does not move
    balance = np.sqrt(np.mean(clean[0] ** 2) / np.mean(clean[1] ** 2))
    assert abs(np.sqrt(np.mean(after[0] ** 2) / np.mean(after[1] ** 2)) - balance) < 0.05


def test_denoise_with_a_marked_noise_stretch(tmp_path: Path) -> None:
    rate = 16_000
    clean = 0.5 * _speechlike(rate, 2.5, 1, seed=6)
    clean[:, : rate // 2] = 0.0  # half a second of noise only at the start
    noisy = clean + 0.02 * np.random.default_rng(1).standard_normal(clean.shape)
    src = _write(tmp_path / "noisy.wav", noisy, rate, SampleFormat.FLOAT32)
    out = tmp_path / "out.wav"
    report = restore_file(src, out, 0.5, None, "denoise", {"noise_start": 0.0, "noise_end": 0.5})
    assert "noise stretch" in report.detection["noise_from"]
    after = _read(out)
    assert after.shape[1] == clean.shape[1] - rate // 2
    assert (
        sdr_db(clean[:, rate // 2 :], after)
        > sdr_db(clean[:, rate // 2 :], noisy[:, rate // 2 :]) + 6.0
    )


# ----------------------------------------------------------------------------- bandwidth


def _lsd_above(ref: np.ndarray, est: np.ndarray, rate: int, lo: float) -> float:
    f, _, a = signal.stft(ref, rate, nperseg=512)
    _, _, b = signal.stft(est, rate, nperseg=512)
    band = f > lo
    pa, pb = np.abs(a[..., band, :]) ** 2, np.abs(b[..., band, :]) ** 2
    eps = pa.max() * 1e-8
    return float(
        np.mean(np.sqrt(np.mean((10 * np.log10(pa + eps) - 10 * np.log10(pb + eps)) ** 2, axis=-2)))
    )


def test_bandwidth_extends_a_band_limited_take(tmp_path: Path) -> None:
    rate, cutoff = 16_000, 4000.0
    rng = np.random.default_rng(3)
    # broadband material: harmonic tone plus syllable-shaped noise (fricatives)
    full = 0.4 * _speechlike(rate, 3.0, 1, seed=3)
    full += 0.05 * rng.standard_normal(full.shape) * (np.abs(full) > 0.02)
    limited = soxr.resample(soxr.resample(full[0], rate, 2 * cutoff), 2 * cutoff, rate)
    limited = limited[None, : full.shape[1]]
    src = _write(tmp_path / "narrow.wav", limited, rate, SampleFormat.INT16)
    out = tmp_path / "wide.wav"
    report = restore_file(src, out, op="bandwidth")
    _assert_same_format(src, out)
    after = _read(out)
    assert report.detection["band_limited"]
    assert 3500.0 < report.detection["cutoff_hz"] < 4100.0

    def high_db(x: np.ndarray) -> float:
        f, p = signal.welch(x, rate, nperseg=1024)
        return float(10 * np.log10(p[..., f > 4500].mean()))

    assert high_db(after) > high_db(limited) + 20.0
    assert high_db(after) < high_db(full) + 6.0  # not louder than the real band
    assert _lsd_above(full, after, rate, 4500) < _lsd_above(full, limited, rate, 4500) - 5.0
    # below the cutoff the take is kept
    low = signal.butter(8, 3000, fs=rate, output="sos")
    assert sdr_db(signal.sosfiltfilt(low, limited), signal.sosfiltfilt(low, after)) > 30.0
    assert np.abs(after).max() < 1.0


def test_bandwidth_leaves_full_band_audio_alone(tmp_path: Path) -> None:
    rate = 16_000
    x = 0.3 * tone_mix(rate, 2.0, 1) + 0.02 * np.random.default_rng(0).standard_normal(
        (1, 2 * rate)
    )
    src = _write(tmp_path / "full.wav", x, rate, SampleFormat.INT16)
    out = tmp_path / "out.wav"
    report = restore_file(src, out, op="bandwidth")
    assert not report.changed and not report.detection["band_limited"]
    assert np.array_equal(_read(src), _read(out))


# ----------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("op", ["dehum", "denoise", "bandwidth"])
def test_region_ops_join_blocks_without_a_seam(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, op: str
) -> None:
    rate = 16_000
    x = 0.4 * _speechlike(rate, 3.0, 2, seed=8)
    t = np.arange(x.shape[1]) / rate
    x += 0.02 * np.sin(2 * np.pi * 50 * t) + 0.01 * np.random.default_rng(0).standard_normal(
        x.shape
    )
    if op == "bandwidth":
        x = signal.sosfiltfilt(signal.butter(10, 3000, fs=rate, output="sos"), x)
    src = _write(tmp_path / "in.wav", x, rate, SampleFormat.FLOAT32)
    whole = tmp_path / "whole.wav"
    restore_file(src, whole, op=op)
    monkeypatch.setattr(restore, "PROCESS_BLOCK_S", 0.37)  # many blocks, odd boundaries
    blocks = tmp_path / "blocks.wav"
    report = restore_file(src, blocks, op=op)
    assert report.changed
    assert np.max(np.abs(_read(whole) - _read(blocks))) < 1e-5


def test_region_and_cancel(tmp_path: Path) -> None:
    rate = 16_000
    src = _write(tmp_path / "in.wav", 0.3 * tone_mix(rate, 2.0, 2), rate, SampleFormat.INT16)
    out = tmp_path / "part.wav"
    restore_file(src, out, 0.5, 1.25, "dehum", {"freq": 50})
    assert probe(out).frames == round(0.75 * rate)

    def cancel(fraction: float, stage: str) -> None:
        if fraction > 0.4:
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        restore_file(src, tmp_path / "never.wav", op="denoise", progress=cancel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "part.wav"]


# ----------------------------------------------------------------------------- CLI


def test_cli_restore_writes_a_stem_and_fails_cleanly_on_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rate = 16_000
    clipped = np.clip(0.9 * tone_mix(rate, 1.0, 1), -0.4, 0.4)
    src = _write(tmp_path / "in.wav", clipped, rate, SampleFormat.INT16)
    out = tmp_path / "out.wav"
    assert main(["restore", str(src), "--op", "declip", "-o", str(out), "--json"]) == 0
    assert '"op": "declip"' in capsys.readouterr().out and out.exists()
    bad = tmp_path / "bad.wav"
    for argv in (
        ["--op", "nope"],
        ["--op", "dehum", "-O", "freq=abc"],
        ["--op", "dehum", "-O", "nokey"],
        ["--op", "declip", "-O", "colour=red"],
    ):
        assert main(["restore", str(src), "-o", str(bad), *argv]) == 1
        assert "error:" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "missing.wav"), "--op", "declip", "-o", str(bad)]) == 1
    assert main(["restore", str(src), "--op", "declip", "-o", str(out)]) == 1  # exists
    assert not bad.exists()
