"""Evaluation baselines on constructed examples; the bundled model lists, loads and inpaints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from maedaw.benchmarks.evaluate import (
    freq_mean_baseline,
    score_batch,
    time_interp_baseline,
)
from maedaw.bridge.cli import main
from maedaw.models import registry
from maedaw.models.audiomae import AudioMAE, preset
from maedaw.models.checkpoint import save_model


def test_baselines_on_a_hand_computed_example():
    # One window, 5 frames x 2 bins; frames 0 and 4 known, 1-3 hidden.
    x = np.array([[[0.0, 1.0], [9.0, 9.0], [9.0, 9.0], [9.0, 9.0], [4.0, 1.0]]])
    known = np.zeros_like(x, dtype=bool)
    known[0, [0, 4]] = True
    interp = time_interp_baseline(x, known)
    assert np.allclose(interp[0, :, 0], [0, 1, 2, 3, 4])  # a straight line
    assert np.allclose(interp[0, :, 1], 1.0)
    mean = freq_mean_baseline(x, known)
    assert np.allclose(mean[0, :, 0], 2.0) and np.allclose(mean[0, :, 1], 1.0)
    # A bin with nothing known falls back to the window's known mean; ends are held.
    known2 = np.zeros_like(x, dtype=bool)
    known2[0, 1, 0] = True
    assert np.allclose(freq_mean_baseline(x, known2)[0, :, 1], 9.0)
    assert np.allclose(time_interp_baseline(x, known2)[0, :, 0], 9.0)


def test_score_batch_counts_only_masked_real_patches():
    # A ramp in time: interpolation is exact inside, per-frequency mean is not.
    t = torch.arange(1024, dtype=torch.float32) / 1024
    x = t[None, :, None].expand(1, 1024, 128).clone()
    mask = torch.zeros(1, 512, dtype=torch.bool)
    mask[0, 8 * 10 : 8 * 12] = True  # time steps 10-11, all bands
    mask[0, 8 * 60 :] = True  # steps 60-63: padding below, must not count
    real = torch.ones(1, 512, dtype=torch.bool)
    real[0, 8 * 60 :] = False
    sse, pixels, patches = score_batch(None, x, mask, real)
    assert patches == 16 and pixels == 16 * 256
    assert sse["time_interp"] == pytest.approx(0.0, abs=1e-9)
    frames = np.arange(160, 192) / 1024
    visible_mean = (t[:960].sum() - t[160:192].sum()) / (960 - 32)
    expected = 128 * ((frames - float(visible_mean)) ** 2).sum()
    assert sse["freq_mean"] == pytest.approx(expected, rel=1e-6)


def test_models_lists_user_models_and_they_load(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAEDAW_MODELS_DIR", str(tmp_path))
    tiny = AudioMAE(preset("compact", depth=1, decoder_depth=2))
    save_model(tiny, tmp_path / "mine", dtype="float16")
    (tmp_path / "notes.json").write_text("{}")  # not a model: skipped, not an error
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    mine = [m for m in listing["models"] if m["source"] == "user"]
    assert [m["name"] for m in mine] == ["mine"] and mine[0]["config"] == "custom"
    model, meta = registry.load("mine")
    assert meta.dtype == "float16" and model.config.depth == 1


@pytest.fixture(scope="module")
def bundled():
    entries = [e for e in registry.list_models() if e.source == "bundled"]
    if not entries:
        pytest.fail("no bundled model under models/weights (it ships with the package)")
    return entries[0]


def test_bundled_model_is_listed_and_small(bundled, capsys):
    assert bundled.name == registry.DEFAULT_MODEL and bundled.config == "compact"
    assert bundled.size_bytes < 30e6 and bundled.meta.dtype == "float16"
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["models"]
    assert [m["name"] for m in listed if m["source"] == "bundled"] == [registry.DEFAULT_MODEL]
    assert main(["models"]) == 0  # the table renders too


def test_bundled_model_loads_offline_and_inpaints(bundled, monkeypatch):
    # Any attempt to open a network connection fails the test.
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("model loading must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    model, meta = registry.load()  # the default = the bundled one
    assert meta.model_id == bundled.model_id and not model.training
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1024, 128, generator=gen) * 0.3
    mask = model.make_mask(2, 0.8, "random", generator=gen)
    out = model.reconstruct(x, mask)
    visible = ~mask.reshape(2, 64, 8).repeat_interleave(16, 1).repeat_interleave(16, 2)
    assert torch.equal(out[visible], x[visible])  # visible patches untouched, bit-exact
    assert torch.isfinite(out).all() and not torch.equal(out[~visible], x[~visible])
