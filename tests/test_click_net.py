"""The click judge: a small convolutional net over the samples around each click candidate,
trained on real recordings (``maedaw bench click-train``), shipped as
``dsp/click_net.safetensors`` and run in numpy at detect time."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from maedaw.benchmarks.click_train import (
    SHAPES,
    SYNTH_PACKAGE,
    ClickTrainConfig,
    Recording,
    examples_from,
    insert_click_shape,
    synthesised_recordings,
)
from maedaw.bridge.cli import main
from maedaw.dsp.audio_io import SampleFormat, write_stem
from maedaw.dsp.click_net import N_SCALARS, WINDOW, ClickNet, bundled_click_net
from maedaw.dsp.damage import insert_click
from maedaw.dsp.detect import DetectConfig, click_zones, detect, sensitivity
from maedaw.dsp.signals import music_clip
from maedaw.dsp.spans import DamageKind

RATE = 44_100
HELD_OUT = {"gcompris-qt-data", "sound-theme-freedesktop", "warzone2100-data", "widelands-data"}


def _constant_judge(logit: float, like: ClickNet | None = None) -> ClickNet:
    """A judge that gives every sample of every zone the same ``logit``."""
    net = like or bundled_click_net()
    convs = tuple((np.zeros_like(w), np.zeros_like(b)) for w, b in net.convs)
    return replace(net, convs=convs, head=np.zeros_like(net.head), head_bias=logit)


def test_the_bundled_judge_loads_and_says_how_it_was_made() -> None:
    judge = bundled_click_net()
    made = judge.provenance
    assert made["made_by"] == "maedaw bench click-train"
    assert made["click_zones"] > 1000 and made["zones"] > 5 * made["click_zones"]
    # trained only on training packages: no held-out package, nor the drum kits the detect
    # bench uses; the validation packages (which chose the bars) are not trained on
    train, val = set(made["train_packages"]), set(made["validation_packages"])
    assert not (HELD_OUT | {"hydrogen-drumkits"}) & (train | val)
    assert val and not train & val
    # the shipped bars are the ones chosen on the validation packages
    for name in ("low", "normal", "high"):
        bar = made["validation"][name]["bar"]
        assert sensitivity(name).bars[DamageKind.CLICK] == pytest.approx(bar)


def test_numpy_inference_matches_the_torch_layers_it_was_trained_as() -> None:
    torch = pytest.importorskip("torch")
    from maedaw.benchmarks.click_train import _torch_net, to_click_net

    config = ClickTrainConfig(channels=6, layers=4)
    rng = np.random.default_rng(0)
    net = _torch_net(config, rng.normal(size=N_SCALARS), rng.uniform(0.5, 2, N_SCALARS))
    judge = to_click_net(net, {})
    windows = rng.normal(size=(5, 2, WINDOW)).astype(np.float32)
    scalars = rng.normal(size=(5, N_SCALARS)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(windows), torch.from_numpy(scalars)).numpy()
    np.testing.assert_allclose(judge.logits(windows, scalars), want, rtol=1e-4, atol=1e-4)


def test_save_and_load_round_trip_and_bad_files_are_refused(tmp_path: Path) -> None:
    judge = bundled_click_net()
    path = tmp_path / "judge.safetensors"
    judge.save(path)
    again = ClickNet.load(path)
    assert again.provenance == judge.provenance
    rng = np.random.default_rng(1)
    windows = rng.normal(size=(3, 2, WINDOW)).astype(np.float32)
    scalars = rng.normal(size=(3, N_SCALARS)).astype(np.float32)
    np.testing.assert_array_equal(again.logits(windows, scalars), judge.logits(windows, scalars))
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with pytest.raises(ValueError, match="not a click net"):
        ClickNet.load(path)
    with pytest.raises(ValueError, match="not a click net"):
        ClickNet.load(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="finite"):
        replace(judge, head_bias=float("nan"))
    with pytest.raises(ValueError, match="head"):
        replace(judge, head=judge.head[:-1])


def test_a_click_in_music_is_written_and_its_confidence_is_the_judges() -> None:
    x = music_clip(RATE, 3.0, channels=1, seed=4)
    insert_click(x, 0, 60_000, 2, 0.5, np.random.default_rng(1))
    near = [
        s
        for s in detect(x, RATE)
        if s.kind is DamageKind.CLICK and s.start <= 60_002 and s.end >= 60_000
    ]
    assert near and not sensitivity("normal").doubt(near[0])
    zones, windows, scalars = click_zones(x[0], RATE)
    (i,) = [k for k, z in enumerate(zones) if z.lo <= 60_000 < z.hi]
    want = bundled_click_net().probabilities(windows[i : i + 1], scalars[i : i + 1]).max()
    assert near[0].confidence == pytest.approx(float(want), abs=1e-5)
    # a judge that is only lukewarm about everything reports it but leaves it alone, and
    # one that doubts everything does not even report it
    lukewarm = DetectConfig(click_judge=_constant_judge(0.4))
    (span,) = [
        s
        for s in detect(x, RATE, config=lukewarm)
        if s.kind is DamageKind.CLICK and s.start <= 60_002 and s.end >= 60_000
    ]
    bar = sensitivity("normal").bars[DamageKind.CLICK]
    assert (
        sensitivity("normal")
        .doubt(span)
        .startswith(f"confidence {span.confidence:.3f} below {bar:.3f}")
    )
    doubting = DetectConfig(click_judge=_constant_judge(-10.0))
    assert not [s for s in detect(x, RATE, config=doubting) if s.kind is DamageKind.CLICK]


@pytest.mark.parametrize("shape", SHAPES)
def test_each_click_shape_changes_only_the_samples_it_names(shape: str) -> None:
    rng = np.random.default_rng(3)
    x = music_clip(RATE, 0.5, channels=1, seed=1)[0]
    y = x.copy()
    idx = insert_click_shape(y, 4000, shape, rng)
    assert idx.size >= 1 and idx[0] == 4000 and np.all(np.diff(idx) == 1)
    changed = np.flatnonzero(y != x)
    assert set(changed) <= set(idx) and changed.size >= 1
    assert np.abs(y).max() <= 1.0


def test_examples_label_the_zones_that_hold_an_inserted_click(tmp_path: Path) -> None:
    path = tmp_path / "take.wav"
    write_stem(path, music_clip(RATE, 3.0, channels=2, seed=2), RATE, SampleFormat.INT16)
    config = ClickTrainConfig(clicks_per_channel=6)
    windows, scalars, labels, targets, stats = examples_from(Recording(path, "pkg"), config, 0)
    assert stats["inserted"] >= 8 and stats["seconds"] == pytest.approx(6.0)
    assert windows.shape == (labels.size, 2, WINDOW) and scalars.shape == (labels.size, N_SCALARS)
    assert labels.sum() >= 0.4 * stats["inserted"]
    # click windows mark the inserted samples (a few per click); other zones mark none
    assert targets[labels].any(axis=1).all() and not targets[~labels].any()
    assert (targets[labels].sum(axis=1) <= 16).all()


def test_synthesised_recordings_vary_rate_and_are_never_the_demo_clip() -> None:
    config = ClickTrainConfig(synthetic_clips=5, clicks_per_channel=4)
    made = synthesised_recordings(config)
    assert {r.synth_rate for r in made} == {22_050, 32_000, 44_100, 48_000, 96_000}
    assert all(r.package == SYNTH_PACKAGE and r.synth_seed != 0 for r in made)
    x, rate = made[1].read(config.max_seconds)
    again, _ = made[1].read(config.max_seconds)
    assert rate == 32_000 and np.array_equal(x, again)  # reproducible
    assert 4.0 * rate <= x.shape[1] <= 10.0 * rate and 0 < np.abs(x).max() < 1.0
    _, _, labels, _, stats = examples_from(made[1], config, 0)
    assert stats["inserted"] > 0 and labels.any() and not labels.all()


def test_music_clip_takes_any_length() -> None:
    # A length that is not a whole number of samples once was one sample short per note.
    for rate, seconds in ((44_100, 1.2345), (96_000, 0.3333)):
        assert music_clip(rate, seconds, channels=1, seed=3).shape == (1, int(rate * seconds))


def test_click_train_command_trains_on_the_manifest_train_rows(tmp_path: Path, capsys) -> None:
    """``maedaw bench click-train`` on a tiny corpus: only real train rows of packages not
    excluded are read, a whole package is kept apart for the bars, and the written judge
    loads and says so."""
    extracted = tmp_path / "extracted"
    rows = []
    for n, (package, role) in enumerate(
        [("pkg-a", "train"), ("pkg-b", "train"), ("pkg-val", "train"),
         ("pkg-held", "heldout-package"), ("hydrogen-drumkits", "train")]
    ):  # fmt: skip
        for k in range(2):
            rel = f"usr/share/{package}/take{k}.wav"
            path = extracted / package / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            write_stem(path, music_clip(RATE, 3.0, channels=1, seed=10 * n + k), RATE,
                       SampleFormat.INT16)  # fmt: skip
            rows.append({"file": f"{package}-{k}.wav", "role": role, "package": package,
                         "source": "/" + rel, "synthetic": "0"})  # fmt: skip
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "judge.safetensors"
    code = main(["bench", "click-train", str(manifest), "--extracted", str(extracted),
                 "--out", str(out), "--seconds", "3", "--validation-package", "pkg-val",
                 "--channels", "4", "--epochs", "1", "--synthetic", "2"])  # fmt: skip
    assert code == 0, capsys.readouterr()
    made = ClickNet.load(out).provenance
    assert made["train_packages"] == ["pkg-a", "pkg-b", SYNTH_PACKAGE]
    assert made["validation_packages"] == ["pkg-val"]
    assert made["clicks_inserted"] > 0 and 0 < made["click_zones"] < made["zones"]
    assert set(made["validation"]) >= {"low", "normal", "high", "sweep"}


def test_click_train_command_defaults_are_the_recipes() -> None:
    """The CLI repeats ClickTrainConfig's defaults (reading them at start-up would import the
    detector on every command); this keeps the two from drifting apart."""
    from maedaw.bridge.cli import build_parser

    args = build_parser().parse_args(["bench", "click-train", "m.csv", "--extracted", "x"])
    config = ClickTrainConfig()
    assert args.seconds == config.max_seconds
    assert args.max_per_package == config.max_per_package
    assert tuple(args.exclude_package) == config.exclude_packages
    assert args.channels == config.channels and args.epochs == config.epochs
    assert args.synthetic == config.synthetic_clips and args.seed == config.seed
