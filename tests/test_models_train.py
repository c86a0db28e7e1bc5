"""Training: the fbank cache, batches, a tiny run that learns, and exact resume."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from maedaw.dsp.audio_io import SampleFormat, write_stem
from maedaw.models import frontend
from maedaw.models.audiomae import AudioMAE, preset
from maedaw.models.checkpoint import CheckpointError, load_model
from maedaw.models.train import lr_factor, real_patches, train, training_mask
from maedaw.models.train_config import TrainConfig
from maedaw.models.train_data import (
    PORTABLE_STEP,
    WindowSampler,
    augment,
    build_cache,
    dither,
    file_fbank,
    file_weights,
    load_portable_cache,
    save_portable_cache,
    scan_audio,
)
from maedaw.models.train_seeds import TORCH_STREAMS, crop_generator, seed_for, torch_generator
from maedaw.models.train_state import best_path, state_path

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


def test_folder_balance_shares_windows_among_folders():
    from maedaw.models.train_data import FbankCache

    # Folder "big" holds 9 files of 1000 frames, folder "small" one file of 1000 frames.
    paths = [f"/c/big/{i}.wav" for i in range(9)] + ["/c/small/0.wav"]
    lengths = np.full(10, 1000)
    cache = FbankCache(np.zeros((10_000, 128)), np.arange(10) * 1000, lengths, paths)
    by_length = file_weights(cache, 0.0)
    assert np.allclose(by_length, 0.1)
    alike = file_weights(cache, 1.0)
    assert alike[-1] == pytest.approx(0.5) and np.allclose(alike[:9], 0.5 / 9)
    half = file_weights(cache, 0.5)  # shares go as sqrt(9000) : sqrt(1000) = 3 : 1
    assert half[-1] == pytest.approx(0.25) and half.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        file_weights(cache, 1.5)
    sampler = WindowSampler(
        cache, frontend.DEFAULT_FRONTEND, seed=0, pack_short=0.0, folder_balance=1.0
    )
    files = [int(sampler.window_frames(np.random.default_rng(i))[0]) // 1000 for i in range(400)]
    assert 0.4 < np.mean(np.array(files) == 9) < 0.6  # the small folder gets half the windows


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


def test_seed_streams_are_distinct_and_stable():
    for seed in (1, 7, 12_345):
        for step in (0, 5):
            seeds = [seed_for(seed, name, step) for name in TORCH_STREAMS]
            assert len(set(seeds)) == len(seeds), (seed, step)
    # The derivations the bundled model was trained with (changing one changes every run).
    assert seed_for(3, "init") == 3 and seed_for(3, "heldout") == 3 + 12_345
    assert seed_for(3, "mask", 5) == 3 * 1_000_003 + 5
    assert seed_for(3, "dither", 5) == 3 * 104_729 + 5
    assert seed_for(3, "dropout", 5) == 3 * 7_919 + 5
    drawn = torch.rand(4, generator=torch_generator(3, "mask", 5))
    assert torch.equal(drawn, torch.rand(4, generator=torch.Generator().manual_seed(3_000_014)))
    crops = crop_generator(3, 5).integers(0, 1 << 30, 8)
    assert np.array_equal(crops, np.random.default_rng([3, 5]).integers(0, 1 << 30, 8))
    assert not np.array_equal(crops, crop_generator(3, 6).integers(0, 1 << 30, 8))


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
    common = dict(cache_dir=tmp_path / "cache", model_config=TINY)
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


def test_progress_reaches_the_callbacks(audio_dir, tmp_path):
    steps, files = [], []
    train(
        [audio_dir],
        tmp_path / "m",
        _cfg(steps=2),
        cache_dir=tmp_path / "cache",
        model_config=TINY,
        progress=lambda done, total, info: steps.append((done, total, info)),
        cache_progress=lambda done, total: files.append((done, total)),
    )
    assert files == [(i, 7) for i in range(1, 8)]
    assert [(done, total) for done, total, _ in steps] == [(0, 2), (1, 2), (2, 2)]
    assert steps[0][2] == {} and set(steps[1][2]) == {"loss", "windows_per_second", "lr"}


def test_fine_tune_from_init(audio_dir, tmp_path):
    common = dict(cache_dir=tmp_path / "cache")
    train([audio_dir], tmp_path / "base", _cfg(steps=2), model_config=TINY, **common)
    base, _ = load_model(tmp_path / "base")
    result = train([audio_dir], tmp_path / "ft", _cfg(steps=2), init=tmp_path / "base", **common)
    tuned, meta = load_model(tmp_path / "ft")
    assert result.step == 2 and meta.config == TINY and meta.training["init"]
    assert not torch.equal(base.decoder_pred.weight, tuned.decoder_pred.weight)


def test_sampler_gathers_the_same_windows_from_a_device_copy(audio_dir, tmp_path):
    cache = build_cache(scan_audio([audio_dir]), tmp_path / "cache")
    sampler = WindowSampler(cache, frontend.DEFAULT_FRONTEND, seed=2, pack_short=0.5)
    x, valid = sampler.batch(4, 8)
    y, valid_y = sampler.batch(4, 8, source=torch.from_numpy(np.array(cache.data)))
    assert torch.equal(x, y) and torch.equal(valid, valid_y)


def test_portable_cache_round_trip_and_refusals(audio_dir, tmp_path):
    cache = build_cache(scan_audio([audio_dir]), tmp_path / "cache")
    path = save_portable_cache(cache, tmp_path / "corpus.fbq")
    back, fe = load_portable_cache(path)
    assert fe == frontend.DEFAULT_FRONTEND and back.paths == cache.paths
    assert np.array_equal(back.offsets, cache.offsets)
    assert np.array_equal(back.lengths, cache.lengths)
    error = np.abs(back.data.astype(np.float32) - np.asarray(cache.data, dtype=np.float32))
    # Half a step of rounding, plus float16 storage of the result (|x| < 2: 1e-3).
    assert error.max() <= PORTABLE_STEP / 2 + 2e-3
    assert back.quant_step == PORTABLE_STEP
    assert path.stat().st_size < 0.5 * np.asarray(cache.data).nbytes
    (tmp_path / "other.fbq").write_bytes(b"RIFF....WAVEfmt ")
    with pytest.raises(ValueError, match="not a maedaw portable fbank cache"):
        load_portable_cache(tmp_path / "other.fbq")
    (tmp_path / "cut.fbq").write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="damaged"):
        load_portable_cache(tmp_path / "cut.fbq")


def test_dither_spans_one_step_on_real_frames_only():
    fbank = torch.zeros(2, 1024, 128)
    valid = torch.tensor([1024, 100])
    out = dither(fbank, valid, 0.05, torch.Generator().manual_seed(0))
    assert float(out.abs().max()) <= 0.025
    assert float(out[0].std()) == pytest.approx(0.05 / 12**0.5, rel=0.02)  # uniform
    assert torch.all(out[1, 100:] == 0)


def test_augment_gain_and_mix_act_on_log_power():
    fe = frontend.DEFAULT_FRONTEND
    rng = np.random.default_rng(0)
    power = rng.uniform(1e-4, 1.0, (2, 1024, 128))
    fbank = frontend.normalize(torch.tensor(np.log(power), dtype=torch.float32), fe)
    valid = torch.tensor([1024, 600])
    gen = torch.Generator().manual_seed(1)
    gained = augment(fbank, valid, TrainConfig(gain_db=6.0), fe, gen)
    shift = (gained - fbank) * 2 * fe.norm_std / (np.log(10) / 10)  # in dB
    per_row = shift[0].flatten()
    assert float(per_row.std()) < 1e-3 and 0 < abs(float(per_row.mean())) <= 6.0
    assert torch.equal(gained[1, 600:], fbank[1, 600:])  # padding untouched
    mixed = augment(fbank, valid, TrainConfig(mix_prob=1.0, mix_db=10.0), fe, gen)
    # Mixing adds the partner window's power (row 0's partner is row 1), attenuated by one
    # factor per row between 0 and -10 dB, where both windows are real.
    own = np.exp(frontend.denormalize(fbank, fe).double().numpy())
    out = np.exp(frontend.denormalize(mixed, fe).double().numpy())
    # (float32 log power: measurable only where the partner is not far below the window)
    audible = own[1, :600] > 0.1 * own[0, :600]
    factor = ((out[0, :600] - own[0, :600]) / own[1, :600])[audible]
    assert audible.mean() > 0.5 and np.allclose(factor, np.median(factor), rtol=1e-2)
    assert 0.1 - 1e-3 <= np.median(factor) <= 1.0 + 1e-3
    assert torch.equal(mixed[0, 600:], fbank[0, 600:])  # partner is padding there


def test_training_mask_mixes_span_rows_at_one_count():
    model = AudioMAE(TINY)
    cfg = TrainConfig(batch=64, span_prob=0.5, max_span=8)
    mask = training_mask(model, cfg, torch.Generator().manual_seed(0))
    assert mask.sum(1).tolist() == [410] * 64
    full_columns = mask.reshape(64, 64, 8).all(2).sum(1)
    # Random rows rarely mask whole columns (0.8**8 each); span rows have at least one run.
    assert int((full_columns >= 1).sum()) > 32


def test_training_from_a_portable_cache_with_held_out_loss(audio_dir, tmp_path):
    cache = build_cache(scan_audio([audio_dir]), tmp_path / "cache")
    path = save_portable_cache(cache, tmp_path / "corpus.fbq")
    portable = load_portable_cache(path)
    cfg = _cfg(steps=4, save_every=2, span_prob=0.5, gain_db=3.0, mix_prob=0.5)
    out = tmp_path / "run" / "p"
    result = train(
        [],
        out,
        cfg,
        cache=portable,
        eval_cache=portable[0],
        model_config=TINY,
    )
    assert result.step == 4
    _, meta = load_model(out)
    evals = meta.training["evals"]
    assert [e["step"] for e in evals] == [2, 4]
    assert all(np.isfinite(e["random"]) and np.isfinite(e["span"]) for e in evals)
    assert load_model(best_path(out))[1].training["step"] in (2, 4)
    # A cache made for another front end is refused: fine-tuning a model made for the
    # default one, and a fresh model whose input shape it does not fit.
    other = frontend.FrontendConfig(num_mel_bins=64)
    with pytest.raises(ValueError, match="different front end"):
        train([], tmp_path / "x", cfg, cache=(portable[0], other), init=out)
    with pytest.raises(ValueError, match="the model takes"):
        train(
            [],
            tmp_path / "y",
            cfg,
            cache=(portable[0], other),
            model_config=TINY,
        )


def test_resume_accepts_checkpoints_saved_before_new_settings(audio_dir, tmp_path):
    common = dict(cache_dir=tmp_path / "cache", model_config=TINY)
    out = tmp_path / "old" / "m"
    train([audio_dir], out, _cfg(steps=4), stop_at=time.time() - 1, **common)
    state = torch.load(state_path(out), weights_only=False)
    for key in ("span_prob", "max_span", "gain_db", "mix_prob", "mix_db"):
        del state["train_config"][key]  # as a checkpoint from before these settings
    torch.save(state, state_path(out))
    assert train([audio_dir], out, _cfg(steps=4), resume=True, **common).step == 4


def test_cli_packs_a_corpus_and_trains_from_it(audio_dir, tmp_path, capsys):
    from maedaw.bridge.cli import main

    packed = tmp_path / "corpus.fbq"
    assert main(["corpus", "pack", str(audio_dir), "--out", str(packed), "--json"]) == 0
    assert '"files": 7' in capsys.readouterr().out
    out = tmp_path / "run" / "m"
    args = ["train", "--portable", str(packed), "--heldout", str(packed), "--out", str(out)]
    args += ["--steps", "2", "--batch", "2", "--save-every", "2", "--span-prob", "0.5"]
    assert main([*args, "--mix-prob", "0.5", "--gain-db", "3", "--no-progress", "--json"]) == 0
    _, meta = load_model(out)
    assert meta.training["train_config"]["span_prob"] == 0.5
    assert [e["step"] for e in meta.training["evals"]] == [2]
    # Folders and --portable together (or neither) is a usage error; a bad cache, one line.
    assert main(["train", str(audio_dir), "--portable", str(packed), "--out", str(out)]) == 2
    (tmp_path / "bad.fbq").write_text("nope")
    assert main(["train", "--portable", str(tmp_path / "bad.fbq"), "--out", str(out)]) == 1
    assert "not a maedaw portable fbank cache" in capsys.readouterr().err


def test_cli_resume_refusals_are_one_error_line(audio_dir, tmp_path, capsys):
    from maedaw.bridge.cli import main

    out = tmp_path / "run" / "m"
    common = dict(cache_dir=tmp_path / "cache", model_config=TINY)
    train([audio_dir], out, _cfg(steps=4), stop_at=time.time() - 1, **common)
    resume = ["train", str(audio_dir), "--out", str(out), "--resume", "--no-progress"]

    def refused() -> str:
        assert main(resume) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        return err

    assert "cannot resume with different settings" in refused()  # the CLI's default flags
    state_path(out).write_bytes(b"not a torch file")
    assert "training state" in refused()
    out.with_suffix(".safetensors").write_bytes(b"garbage")
    assert "error:" in refused()
