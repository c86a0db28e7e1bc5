"""Training: the fbank cache, batches, a tiny run that learns, and exact resume."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from maedaw.dsp.audio_io import SampleFormat, write_stem
from maedaw.models import frontend, load_model
from maedaw.models.audiomae import AudioMAE, preset
from maedaw.models.checkpoint import CheckpointError
from maedaw.models.train import (
    TrainConfig,
    WindowSampler,
    build_cache,
    file_fbank,
    lr_factor,
    real_patches,
    scan_audio,
    state_path,
    train,
)

# A model small enough to train in seconds on two cores (same 1024 x 128 input).
TINY = preset(
    "compact",
    embed_dim=64,
    depth=2,
    num_heads=2,
    mlp_ratio=2.0,
    decoder_embed_dim=64,
    decoder_depth=2,
    decoder_num_heads=2,
    cpb_hidden_dim=32,
)


def _tone_file(path, seconds: float, seed: int, rate: int = 22_050):
    """Stereo harmonic notes with a little noise: structured, learnable spectra."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = rng.uniform(110, 440)
    note = np.zeros_like(t)
    for k in range(1, 6):
        note += np.sin(2 * np.pi * k * f0 * t) / k
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t) ** 2
    mono = 0.2 * note * envelope + 0.01 * rng.standard_normal(len(t))
    stereo = np.stack([mono, 0.8 * mono])
    return write_stem(path, stereo, rate, SampleFormat.INT16)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    (folder / "sub").mkdir()
    for i in range(4):
        _tone_file(folder / f"long{i}.wav", 11.0, seed=i)
    for i in range(3):
        _tone_file(folder / "sub" / f"short{i}.flac", 2.5, seed=10 + i)
    (folder / "notes.txt").write_text("not audio")
    return folder


def test_scan_finds_audio_only(audio_dir):
    paths = scan_audio([audio_dir])
    assert len(paths) == 7 and all(p.suffix in (".wav", ".flac") for p in paths)
    with pytest.raises(FileNotFoundError):
        scan_audio([audio_dir / "missing"])


def test_file_fbank_matches_one_shot_front_end(audio_dir):
    """Chunked decode + resample + blockwise fbank = the front end on the whole signal."""
    from maedaw.dsp.audio_io import read_region
    from maedaw.dsp.resample import resample

    path = audio_dir / "long0.wav"
    region = read_region(path)
    whole = resample(region.samples.mean(axis=0), region.info.sample_rate, 16_000)
    expected = frontend.waveform_to_fbank(torch.from_numpy(whole.astype(np.float32)))
    got = file_fbank(path)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=2e-3)


def test_cache_and_sampler(audio_dir, tmp_path):
    cache = build_cache(scan_audio([audio_dir]), tmp_path / "cache")
    again = build_cache(scan_audio([audio_dir]), tmp_path / "cache")  # reuses, same content
    assert np.array_equal(np.asarray(cache.data), np.asarray(again.data))
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    sampler = WindowSampler(cache, frontend.DEFAULT_FRONTEND, seed=3, pack_short=0.0)
    x, valid = sampler.batch(5, 6)
    y, valid2 = sampler.batch(5, 6)
    assert x.shape == (6, 1024, 128) and torch.equal(x, y) and torch.equal(valid, valid2)
    assert not torch.equal(x, sampler.batch(6, 6)[0])
    pad = frontend.DEFAULT_FRONTEND.pad_value
    for row, n in zip(x, valid, strict=True):
        assert torch.all(row[int(n) :] == pad)  # padding only after the real frames
    packed = WindowSampler(cache, frontend.DEFAULT_FRONTEND, seed=3, pack_short=1.0)
    _, valid_packed = packed.batch(5, 32)
    assert bool((valid_packed == 1024).all())  # short files packed to a full window


def test_real_patches_excludes_partial_columns():
    model = AudioMAE(TINY)
    real = real_patches(torch.tensor([1024, 40]), model)
    assert real[0].all()
    # 40 frames: time steps 0 and 1 (frames 0-31) are real, step 2 (32-47) is partial.
    assert real[1].reshape(64, 8)[:2].all() and not real[1].reshape(64, 8)[2:].any()


def test_lr_schedule():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-5)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(100, cfg) == pytest.approx(1e-2)
    assert lr_factor(55, cfg) < lr_factor(20, cfg)


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=40, batch=4, lr=2e-3, warmup_steps=5, seed=1, save_every=1000, log_every=1000)
    return TrainConfig(**{**base, **kw})


def test_tiny_training_lowers_loss(audio_dir, tmp_path):
    torch.set_num_threads(2)
    result = train(
        [audio_dir],
        tmp_path / "run" / "tiny",
        _cfg(),
        cache_dir=tmp_path / "cache",
        show_progress=False,
        model_config=TINY,
    )
    losses = [loss for _, loss in result.history]
    assert len(losses) == 40
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.5 * first, (first, last)
    _, meta = load_model(tmp_path / "run" / "tiny")
    assert meta.training["step"] == 40 and meta.config == TINY


def test_resume_is_exact(audio_dir, tmp_path):
    cfg = _cfg(steps=6, save_every=3)
    common = dict(cache_dir=tmp_path / "cache", show_progress=False, model_config=TINY)
    straight = train([audio_dir], tmp_path / "a" / "m", cfg, **common)
    # Interrupted after the first step (deadline already passed), then resumed.
    first = train([audio_dir], tmp_path / "b" / "m", cfg, stop_at=time.time() - 1, **common)
    assert first.step == 1 and state_path(tmp_path / "b" / "m").is_file()
    resumed = train([audio_dir], tmp_path / "b" / "m", cfg, resume=True, **common)
    assert resumed.step == 6
    assert resumed.history == straight.history  # every loss, bit for bit
    a, _ = load_model(tmp_path / "a" / "m")
    b, _ = load_model(tmp_path / "b" / "m")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    with pytest.raises(CheckpointError, match="lr"):
        train([audio_dir], tmp_path / "b" / "m", _cfg(steps=6, lr=1e-3), resume=True, **common)


def test_fine_tune_from_init(audio_dir, tmp_path):
    common = dict(cache_dir=tmp_path / "cache", show_progress=False)
    train([audio_dir], tmp_path / "base", _cfg(steps=2), model_config=TINY, **common)
    base, _ = load_model(tmp_path / "base")
    result = train([audio_dir], tmp_path / "ft", _cfg(steps=2), init=tmp_path / "base", **common)
    tuned, meta = load_model(tmp_path / "ft")
    assert result.step == 2 and meta.config == TINY and meta.training["init"]
    assert not torch.equal(base.decoder_pred.weight, tuned.decoder_pred.weight)
