"""Audio I/O: exact round trips for every format, region reads, atomic writes, bad input."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from pedalboard.io import AudioFile

from maedaw.dsp.audio_io import (
    AudioError,
    SampleFormat,
    iter_blocks,
    probe,
    read_region,
    stem_format,
    write_stem,
)
from maedaw.dsp.resample import resample

PCM_CASES = [
    ("wav", 16, SampleFormat.INT16),
    ("wav", 24, SampleFormat.INT24),
    ("wav", 32, SampleFormat.FLOAT32),  # pedalboard writes 32-bit WAV as float
    ("flac", 16, SampleFormat.INT16),
    ("flac", 24, SampleFormat.INT24),
    ("aiff", 16, SampleFormat.INT16),
    ("aiff", 24, SampleFormat.INT24),
]


def noise(channels: int, frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(0.3 * rng.standard_normal((channels, frames)), -1, 1).astype(np.float32)


def write_source(path: Path, x: np.ndarray, rate: int, bit_depth: int = 16) -> Path:
    with AudioFile(str(path), "w", rate, x.shape[0], bit_depth=bit_depth) as f:
        f.write(x)
    return path


def write_int32_wav(path: Path, ints: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(ints.shape[0])
        w.setsampwidth(4)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(ints.T).astype("<i4").tobytes())
    return path


def raw_pcm_bytes(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        return w.readframes(w.getnframes())


@pytest.mark.parametrize("channels", [1, 2, 3, 6, 8])
@pytest.mark.parametrize(("container", "bits", "fmt"), PCM_CASES)
def test_region_round_trip_is_exact(tmp_path, container, bits, fmt, channels):
    rate = 44_100
    source = write_source(tmp_path / f"src.{container}", noise(channels, 9000), rate, bits)
    info = probe(source)
    assert (info.sample_rate, info.num_channels, info.frames) == (rate, channels, 9000)
    assert info.sample_format is fmt
    region = read_region(source, 1234, 7777, context=500)
    assert region.samples.shape == (channels, 7777 + 500 - (1234 - 500))
    out = write_stem(tmp_path / "stem.wav", region.region_samples, rate, info.sample_format)
    again = read_region(out)
    assert again.info.sample_format is fmt
    assert again.info.num_channels == channels
    np.testing.assert_array_equal(again.samples, region.region_samples)


def test_stem_pcm_bytes_equal_source_bytes(tmp_path):
    """Not just equal floats: the 24-bit integers on disk are the source's."""
    rate = 48_000
    source = write_source(tmp_path / "src.wav", noise(2, 4000), rate, 24)
    region = read_region(source, 1000, 3000)
    out = write_stem(tmp_path / "stem.wav", region.region_samples, rate, SampleFormat.INT24)
    frame_bytes = 2 * 3
    assert raw_pcm_bytes(out) == raw_pcm_bytes(source)[1000 * frame_bytes : 3000 * frame_bytes]


def test_int32_pcm_source_round_trips_exactly(tmp_path):
    rng = np.random.default_rng(3)
    ints = rng.integers(-(2**31), 2**31 - 1, size=(2, 5000), dtype=np.int64)
    source = write_int32_wav(tmp_path / "int32.wav", ints, 96_000)
    info = probe(source)
    assert info.sample_format is SampleFormat.INT32
    region = read_region(source, 100, 4100)
    out = write_stem(tmp_path / "stem.wav", region.region_samples, 96_000, SampleFormat.INT32)
    assert raw_pcm_bytes(out) == raw_pcm_bytes(source)[100 * 8 : 4100 * 8]


@pytest.mark.parametrize(
    "rate", [8_000, 11_025, 16_000, 22_050, 44_100, 48_000, 88_200, 96_000, 176_400, 192_000]
)
def test_rates_are_kept(tmp_path, rate):
    source = write_source(tmp_path / "src.wav", noise(2, rate // 10), rate)
    region = read_region(source, 10, rate // 20)
    out = write_stem(
        tmp_path / "stem.flac", region.region_samples, rate, probe(source).sample_format
    )
    info = probe(out)
    assert info.sample_rate == rate
    assert info.frames == rate // 20 - 10
    np.testing.assert_array_equal(read_region(out).samples, region.region_samples)


@pytest.mark.parametrize("container", ["ogg", "mp3"])
def test_lossy_sources_read_at_native_rate_and_stay_float(tmp_path, container):
    source = write_source(tmp_path / f"src.{container}", noise(2, 44_100), 44_100)
    info = probe(source)
    assert info.sample_format is SampleFormat.FLOAT32 and not info.lossless
    region = read_region(source, 10_000, 20_000, context=2_000)
    whole = read_region(source)
    # Seeking decodes the same samples as decoding from the start.
    np.testing.assert_array_equal(region.region_samples, whole.samples[:, 10_000:20_000])
    out = write_stem(tmp_path / "stem.wav", region.region_samples, 44_100, info.sample_format)
    np.testing.assert_array_equal(read_region(out).samples, region.region_samples)
    with pytest.raises(AudioError, match="FLAC cannot hold float32"):
        stem_format(info.sample_format, ".flac")


def test_real_recording_reads(real_effects):
    info = probe(real_effects[0])
    assert info.container == "oga" and info.num_channels == 2
    region = read_region(real_effects[0], 100, 2000, context=50)
    assert region.samples.shape == (2, (2000 + 50) - (100 - 50))
    assert np.abs(region.samples).max() > 0


def test_context_is_trimmed_at_file_ends(tmp_path):
    source = write_source(tmp_path / "src.wav", noise(1, 1000), 8000)
    region = read_region(source, 10, 990, context=100)
    assert (region.context_start, region.context_end) == (0, 1000)
    assert region.region_slice == slice(10, 990)


def test_iter_blocks_covers_the_region_once(tmp_path):
    x = noise(2, 10_001)
    source = write_source(tmp_path / "src.wav", x, 16_000)
    blocks = list(iter_blocks(source, 17, 9_999, block=1000))
    assert blocks[0][0] == 17
    joined = np.concatenate([b for _, b in blocks], axis=1)
    assert joined.shape == (2, 9_999 - 17)
    np.testing.assert_allclose(joined, read_region(source, 17, 9_999).samples, atol=1e-7)


def test_resample_to_model_rate_keeps_a_tone():
    rate = 44_100
    t = np.arange(rate) / rate
    x = np.stack([np.sin(2 * np.pi * 1000 * t), np.sin(2 * np.pi * 2500 * t)])
    y = resample(x, rate, 16_000)
    assert y.shape == (2, 16_000)
    t16 = np.arange(16_000) / 16_000
    expected = np.stack([np.sin(2 * np.pi * 1000 * t16), np.sin(2 * np.pi * 2500 * t16)])
    np.testing.assert_allclose(y[:, 100:-100], expected[:, 100:-100], atol=1e-3)


# --- atomic writes -----------------------------------------------------------------


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    out = write_stem(
        tmp_path / "stem.wav", noise(2, 100).astype(np.float64), 8000, SampleFormat.INT16
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stem.wav"]
    assert out == tmp_path / "stem.wav"


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path):
    out = tmp_path / "stem.wav"
    out.write_bytes(b"previous stem")
    bad = np.full((1, 100), np.nan)
    with pytest.raises(AudioError, match="NaN"):
        write_stem(out, bad, 8000, SampleFormat.INT16)
    assert out.read_bytes() == b"previous stem"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stem.wav"]


def test_write_into_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(AudioError, match="output folder does not exist"):
        write_stem(tmp_path / "nope" / "x.wav", np.zeros((1, 10)), 8000, SampleFormat.INT16)


def test_tiny_square_arrays_write(tmp_path):
    for channels in (1, 2, 8):
        x = np.linspace(-0.5, 0.5, channels * channels).reshape(channels, channels)
        out = write_stem(tmp_path / f"sq{channels}.wav", x, 8000, SampleFormat.FLOAT32)
        np.testing.assert_array_equal(read_region(out).samples, x.astype(np.float32))


# --- bad input ---------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        probe(tmp_path / "missing.wav")


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        probe(tmp_path / "empty.wav")


def test_corrupt_file(tmp_path):
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    with pytest.raises(AudioError, match="not a readable audio file"):
        probe(tmp_path / "corrupt.wav")


def test_wrong_extension(tmp_path):
    source = write_source(tmp_path / "src.wav", noise(1, 100), 8000)
    renamed = source.rename(tmp_path / "src.txt")
    with pytest.raises(AudioError, match="unsupported file type"):
        probe(renamed)


def test_mislabelled_content_reads_by_content(tmp_path):
    """A WAV named .flac is decoded by its content, not refused by its name."""
    source = write_source(tmp_path / "src.wav", noise(1, 100), 8000)
    expected = read_region(source).samples
    renamed = source.rename(tmp_path / "src.flac")
    np.testing.assert_array_equal(read_region(renamed).samples, expected)


def test_text_file_with_audio_extension(tmp_path):
    (tmp_path / "notes.wav").write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError, match="not a readable audio file"):
        probe(tmp_path / "notes.wav")


def test_header_only_file_has_no_frames(tmp_path):
    path = tmp_path / "header.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
    with pytest.raises(AudioError):
        probe(path)


def test_rate_outside_range(tmp_path):
    source = write_source(tmp_path / "src.wav", noise(1, 100), 4000)
    with pytest.raises(AudioError, match="outside 8000-192000"):
        probe(source)


def test_nan_in_source(tmp_path):
    x = noise(1, 1000)
    x[0, 500] = np.nan
    source = write_source(tmp_path / "src.wav", x, 8000, bit_depth=32)
    with pytest.raises(AudioError, match="sample 500 of channel 0 is NaN"):
        read_region(source)
    assert read_region(source, 0, 400).samples.shape == (1, 400)  # a clean region still reads


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (0, 2000, "past the end"),
        (1500, 1600, "past the end"),
        (500, 500, "empty region"),
        (-5, 10, "before the file"),
    ],
)
def test_bad_regions(tmp_path, start, end, message):
    source = write_source(tmp_path / "src.wav", noise(1, 1000), 8000)
    with pytest.raises(AudioError, match=message):
        read_region(source, start, end)


def test_unsupported_stem_containers():
    with pytest.raises(AudioError, match=r"\.wav or \.flac"):
        stem_format(SampleFormat.INT16, ".mp3")
    with pytest.raises(AudioError, match="FLAC cannot hold int32"):
        stem_format(SampleFormat.INT32, ".flac")
