"""Learned concealment (models/concealment.py): shapes, training, checkpoints, policy, CLI."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from maedaw.dsp.audio_io import SampleFormat, write_stem
from maedaw.dsp.inpainting import Inpainter
from maedaw.dsp.repair import RepairConfig, decide, parse_spans, repair_array
from maedaw.dsp.spans import DamageKind, Span
from maedaw.models.checkpoint import CheckpointError
from maedaw.models.concealment import (
    Concealer,
    ConcealmentConfig,
    ConcealmentNet,
    compress,
    load_concealment,
    prior,
    save_concealment,
    stft,
)
from maedaw.models.concealment_train import (
    ConcealTrainConfig,
    concealment_loss,
    gapped,
    make_batch,
    state_path,
    train_concealment,
)

TINY = ConcealmentConfig(conv_channels=16, hidden=16, layers=1)


def _tones(count: int = 4, seconds: float = 2.5) -> list[np.ndarray]:
    t = np.arange(round(seconds * 16000)) / 16000
    return [
        (0.2 * np.sin(2 * np.pi * (200 + 90 * k) * t) + 0.05 * np.sin(2 * np.pi * 1500 * t)).astype(
            np.float32
        )
        for k in range(count)
    ]


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_fill_shapes_and_untouched_outside(rate: int, channels: int) -> None:
    torch.manual_seed(0)
    concealer = Concealer(ConcealmentNet(TINY))
    assert isinstance(concealer, Inpainter)
    rng = np.random.default_rng(1)
    x = 0.1 * rng.standard_normal((channels, 2 * rate))
    gaps = [(rate // 2, rate // 2 + rate // 40), (rate, rate + rate // 10)]
    y = concealer.fill(x, rate, gaps)
    assert y.shape == x.shape and y.dtype == np.float64
    fade = concealer.fade(rate)
    allowed = np.zeros(x.shape[1], dtype=bool)
    for a, b in gaps:
        allowed[a - fade : b + fade] = True
    assert np.array_equal(y[:, ~allowed], x[:, ~allowed])
    assert not np.array_equal(y[:, allowed], x[:, allowed])
    assert np.all(np.isfinite(y))


def test_repair_with_concealer_keeps_samples_outside_written() -> None:
    torch.manual_seed(0)
    concealer = Concealer(ConcealmentNet(TINY))
    rate = 48000
    x = 0.1 * np.random.default_rng(2).standard_normal((2, rate * 2))
    spans = parse_spans("0.5:0.54,1.2:1.29", rate, 2)
    out, plan = repair_array(x, rate, spans, concealer=concealer)
    assert {p.method for p in plan} <= {"plc", "plc-blend", "ar"}
    assert any(p.method.startswith("plc") for p in plan)
    keep = np.ones(x.shape[1], dtype=bool)
    for p in plan:
        keep[p.written_start : p.written_end] = False
    assert np.array_equal(out[:, keep], x[:, keep])


def test_blended_gaps_skip_ar_order_search_and_ar_gaps_keep_it(monkeypatch) -> None:
    """plc-blend keeps AR for its edges only: the order search (five fills' cost, the bulk of
    a 48 kHz repair) is skipped there and still run for gaps AR fills alone."""
    from maedaw.dsp import ar

    searched: list[int] = []
    select = ar._select_config

    def counting(x0, known, gaps, cfg):
        searched.append(gaps[0][1] - gaps[0][0])
        return select(x0, known, gaps, cfg)

    monkeypatch.setattr(ar, "_select_config", counting)
    concealer = Concealer(ConcealmentNet(TINY))
    rate = 48000
    x = 0.1 * np.random.default_rng(2).standard_normal((1, rate * 2))
    cfg = RepairConfig(plc_without_mae=((5.0, "ar"), (60.0, "plc-blend"), (120.0, "plc")))
    _, plan = repair_array(
        x, rate, parse_spans("0.5:0.502,1.2:1.24", rate, 1), cfg, concealer=concealer
    )
    assert sorted(p.method for p in plan) == ["ar", "plc-blend"]
    fade = max(1, round(cfg.crossfade_ms * rate / 1000.0))
    assert searched == [96 + 2 * fade]  # the 2 ms AR gap, widened by its fades


def test_an_untrained_network_is_the_prior() -> None:
    """The head starts at zero: before any training the fill is the interpolated level with
    the continued phase, which alone beats format 1's trained networks."""
    cfg = ConcealTrainConfig(batch=2, excerpt_s=1.0, model=TINY)
    clean, mask, gaps = make_batch(_tones(), cfg, np.random.default_rng(3), augment=False)
    model = ConcealmentNet(TINY)
    with torch.no_grad():
        _, pred_c = model.conceal(gapped(clean, gaps), mask)
        spec = stft(gapped(clean, gaps), TINY)
        expected = compress(prior(spec, mask, TINY), TINY.power)
    assert torch.allclose(pred_c, expected, atol=1e-6)
    # and on a steady tone the prior is close: the fill has the truth's level within 1 dB
    assert abs(concealment_loss(model, clean, mask, gaps, cfg)[1]["level_db"]) < 1.0


def test_tiny_model_lowers_loss() -> None:
    torch.manual_seed(0)
    cfg = ConcealTrainConfig(batch=4, excerpt_s=1.0, lr=3e-3, warmup_steps=1, model=TINY)
    pool = _tones()
    model = ConcealmentNet(TINY)
    torch.nn.init.constant_(model.head.bias, 0.5)  # a fill ~17 dB too loud: learn it back
    fixed = make_batch(pool, cfg, np.random.default_rng(5), augment=False)
    with torch.no_grad():
        before = float(concealment_loss(model, *fixed, cfg)[0])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    for step in range(40):
        batch = make_batch(pool, cfg, np.random.default_rng(step), augment=False)
        loss = concealment_loss(model, *batch, cfg)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(concealment_loss(model, *fixed, cfg)[0])
    assert after < 0.8 * before


def test_checkpoint_round_trip_and_damage(tmp_path: Path) -> None:
    model = ConcealmentNet(TINY)
    weights, meta = save_concealment(model, tmp_path / "plc", training={"step": 3})
    loaded, document = load_concealment(tmp_path / "plc")
    assert loaded.config == TINY and document["training"]["step"] == 3
    # truncated weights
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read tensors"):
        load_concealment(tmp_path / "plc")
    # weights that do not match the recorded hash
    save_concealment(ConcealmentNet(TINY), tmp_path / "other")
    weights.write_bytes((tmp_path / "other.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="sha256"):
        load_concealment(tmp_path / "plc")
    # damaged description
    meta.write_text("{not json")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_concealment(tmp_path / "plc")
    meta.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a maedaw-concealment"):
        load_concealment(tmp_path / "plc")
    with pytest.raises(CheckpointError, match="no concealment model"):
        load_concealment(tmp_path / "missing")


def _gap(ms: float, rate: int = 48000) -> Span:
    return Span(rate, rate + round(ms * rate / 1000), 0, DamageKind.MARKED, 1.0)


def test_policy_table_choices() -> None:
    cfg = RepairConfig(
        plc_with_mae=((30.0, "ar"), (60.0, "plc"), (120.0, "hybrid")),
        plc_without_mae=((20.0, "ar"), (50.0, "plc-blend"), (120.0, "plc")),
    )
    rate = 48000
    # without the MAE
    assert decide(_gap(10), rate, cfg, None, 120.0)[0] == "ar"
    assert decide(_gap(40), rate, cfg, None, 120.0)[0] == "plc-blend"
    method, reason = decide(_gap(100), rate, cfg, None, 120.0)
    assert method == "plc" and "without the Audio-MAE" in reason
    # with the MAE: "hybrid" rows go to the MAE policy
    assert decide(_gap(45), rate, cfg, 2000.0, 120.0)[0] == "plc"
    assert decide(_gap(100), rate, cfg, 2000.0, 120.0)[0] == "mae"
    # longer than the concealer fills: as without it
    assert decide(_gap(300), rate, cfg, 2000.0, 120.0)[0] == "mae"
    assert decide(_gap(300), rate, cfg, None, 120.0)[0] == "none"
    # no concealer: the old policy
    assert decide(_gap(40), rate, cfg, 2000.0, None)[0] == "blend"
    # clicks and clips never go to the concealer
    click = replace(_gap(2), kind=DamageKind.CLICK)
    assert decide(click, rate, cfg, None, 120.0)[0] == "ar"
    bad = RepairConfig(plc_without_mae=((50.0, "magic"),))
    with pytest.raises(ValueError, match="magic"):
        decide(_gap(40), rate, bad, None, 120.0)


def test_shipped_tables_hand_mid_gaps_to_the_mae_or_else_the_concealer() -> None:
    """The default tables (results.md, sessions 20 and 25): AR up to 15 ms, up to 40 ms where
    the context is periodic and up to 60 ms in a train of gaps; with the MAE its policy
    beyond; without it AR edges + the concealer."""
    cfg, rate = RepairConfig(), 48000
    for ms in (5, 10, 15):
        assert decide(_gap(ms), rate, cfg, 2000.0, 120.0)[0] == "ar"
        assert decide(_gap(ms), rate, cfg, None, 120.0)[0] == "ar"
    for ms in (20, 40, 60):
        assert decide(_gap(ms), rate, cfg, 2000.0, 120.0, train=2)[0] == "ar"
        assert decide(_gap(ms), rate, cfg, None, 120.0, train=2)[0] == "ar"
    assert decide(_gap(80), rate, cfg, 2000.0, 120.0, train=5)[0] == "mae"  # past max_ar_ms
    for ms in (20, 30, 40, 60):
        assert decide(_gap(ms), rate, cfg, 2000.0, 120.0)[0] == "blend"
        assert decide(_gap(ms), rate, cfg, 2000.0, 120.0, periodicity=0.2)[0] == "blend"
    for ms in (20, 30, 40):  # periodic context: AR, with either model
        assert decide(_gap(ms), rate, cfg, 2000.0, 120.0, periodicity=0.9)[0] == "ar"
        assert decide(_gap(ms), rate, cfg, None, 120.0, periodicity=0.9)[0] == "ar"
    assert decide(_gap(60), rate, cfg, 2000.0, 120.0, periodicity=0.9)[0] == "blend"
    assert decide(_gap(100), rate, cfg, 2000.0, 120.0)[0] == "mae"
    for ms in (20, 60, 120):
        assert decide(_gap(ms), rate, cfg, None, 120.0)[0] == "plc-blend"
    assert decide(_gap(130), rate, cfg, None, 120.0)[0] == "none"


def test_the_bundled_concealer_loads_offline_and_fills_only_its_gap() -> None:
    """concealment-default ships in the package (float16, its sha256 checked on load), is what
    --concealment picks by default, and keeps the < 30 MB bundle."""
    from maedaw.bridge.inpainters import load_concealer
    from maedaw.models.concealment import WEIGHTS_DIR, bundled_concealment

    stem = bundled_concealment()
    assert stem is not None and stem.name == "concealment-default"
    _, document = load_concealment(stem)
    assert document["dtype"] == "float16" and document["training"]["step"] > 0
    assert sum(p.stat().st_size for p in WEIGHTS_DIR.iterdir()) < 30e6
    concealer = load_concealer(None)
    assert isinstance(concealer, Concealer)
    rate = 44100
    t = np.arange(rate) / rate
    x = np.stack([0.3 * np.sin(2 * np.pi * 330 * t), 0.2 * np.sin(2 * np.pi * 495 * t)])
    gap = (rate // 2, rate // 2 + round(0.04 * rate))
    damaged = x.copy()
    damaged[:, gap[0] : gap[1]] = 0.0
    y = concealer.fill(damaged, rate, [gap])
    fade = concealer.fade(rate)
    outside = np.ones(x.shape[1], dtype=bool)
    outside[gap[0] - fade : gap[1] + fade] = False
    assert np.array_equal(y[:, outside], damaged[:, outside]) and np.all(np.isfinite(y))
    inside = slice(*gap)
    # a steady tone comes back close to itself, far closer than the silence it replaced
    assert np.mean((y[:, inside] - x[:, inside]) ** 2) < 0.1 * np.mean(x[:, inside] ** 2)


def _manifest(tmp_path: Path) -> Path:
    rows = []
    for role, k in (("train", 0), ("train", 1), ("train", 2), ("heldout-source", 3)):
        rel = f"{role}/pkg/clip{k}.wav"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        write_stem(
            tmp_path / rel, _tones(4)[k][None].astype(np.float64), 16000, SampleFormat.FLOAT32
        )
        rows.append({"file": rel, "role": role})
    path = tmp_path / "manifest.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["file", "role"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_cli_train_resume_and_init(tmp_path: Path) -> None:
    from maedaw.bridge.cli import main

    manifest = _manifest(tmp_path)
    out = tmp_path / "run" / "plc"
    common = ["train-concealment", "--out", str(out), "--manifest", str(manifest)]
    small = ["--batch", "2", "--pool", "3", "--no-progress", "--json"]
    assert main([*common, "--steps", "2", *small]) == 0
    assert state_path(out).exists()
    saved = torch.load(state_path(out), weights_only=False)
    assert saved["step"] == 2
    # validated on the source-disjoint clip (never the package-disjoint benchmark side)
    assert math.isfinite(saved["evals"][-1][1])
    assert main([*common, "--steps", "3", *small, "--resume"]) == 0
    state = torch.load(state_path(out), weights_only=False)
    assert state["step"] == 3 and len(state["history"]) == 3
    # other settings cannot resume
    assert main([*common, "--steps", "4", "--batch", "3", "--pool", "3", "--resume"]) == 1
    # warm start from float16 weights when the optimiser state is gone
    model, _ = load_concealment(out)
    save_concealment(model, tmp_path / "shipped", dtype="float16")
    other = tmp_path / "run2" / "plc"
    args = ["train-concealment", "--out", str(other), "--manifest", str(manifest)]
    assert main([*args, "--steps", "1", *small, "--init", str(tmp_path / "shipped")]) == 0


def test_train_function_stops_and_saves(tmp_path: Path) -> None:
    cfg = ConcealTrainConfig(batch=2, excerpt_s=1.0, steps=5, model=TINY, val_excerpts=2)
    result = train_concealment(
        tmp_path / "none.csv",
        tmp_path / "plc",
        cfg,
        pool=_tones(),
        val_pool=_tones(2),
        stop_at=0.0,
    )
    assert result.step == 1 and (tmp_path / "plc.safetensors").exists()
    assert result.best_val is not None and (tmp_path / "plc.best.json").exists()
