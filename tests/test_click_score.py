"""The click score: a logistic model over what the click test measured, fitted on real
recordings (``maedaw bench click-fit``), shipped as ``dsp/click_score.json``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from maedaw.bridge.cli import main
from maedaw.dsp.audio_io import SampleFormat, write_stem
from maedaw.dsp.click_score import FEATURES, ClickEvidence, ClickModel, bundled_click_model
from maedaw.dsp.damage import insert_click
from maedaw.dsp.detect import DetectConfig, click_evidence, detect, sensitivity
from maedaw.dsp.signals import music_clip
from maedaw.dsp.spans import DamageKind

RATE = 44_100


def _evidence(**over: float) -> ClickEvidence:
    base = dict(
        samples=3, ms=0.07, tail_db=0.0, prominence=2.0, size_to_rms=8.0, level_db=-20.0,
        error_to_median=40.0, error_to_peak=3.0, kurtosis=4.0, ar_confidence=0.6,
    )  # fmt: skip
    base.update(over)
    return ClickEvidence(**base)  # type: ignore[arg-type]


def _with_ticks(x: np.ndarray) -> np.ndarray:
    """Mechanical ticks (sharp, ringing a few ms) every 0.25 s: transients for the fit."""
    rng = np.random.default_rng(int(1e3 * abs(x[0, 1000])))
    ring = np.exp(-np.arange(200) / 30.0) * np.sin(2 * np.pi * 3000 * np.arange(200) / RATE)
    for at in range(RATE // 8, x.shape[1] - 400, RATE // 4):
        x[:, at : at + 200] += 0.3 * rng.uniform(0.5, 1.0) * ring
    return np.clip(x, -1.0, 1.0)


def test_the_bundled_model_loads_and_says_how_it_was_made() -> None:
    model = bundled_click_model()
    made = model.provenance
    assert made["made_by"] == "maedaw bench click-fit"
    assert made["recordings"] > 100 and made["clicks_verified"] > 100 and made["transients"] > 100
    # fitted only on training packages: none of the held-out ones, nor the excluded drum kits
    held = {"gcompris-qt-data", "sound-theme-freedesktop", "warzone2100-data", "widelands-data"}
    assert not held & set(made["packages"]) and "hydrogen-drumkits" not in made["packages"]
    assert ClickModel.from_dict(json.loads(json.dumps(model.to_dict()))) == model


def test_the_score_is_monotone_in_what_it_should_be() -> None:
    """A click that rings on, hides under the programme's peak or is long scores lower."""
    model = bundled_click_model()
    sharp = model.score(_evidence())
    assert model.score(_evidence(tail_db=12.0)) < sharp
    assert model.score(_evidence(prominence=0.5, size_to_rms=1.0)) < sharp
    assert model.score(_evidence(samples=60, ms=1.4)) < sharp
    assert 0.0 <= model.score(_evidence(tail_db=30, prominence=0.1)) <= 1.0
    # the reason names the measurement that weighs most against it
    assert "rings on" in model.against(_evidence(tail_db=30.0))


def test_a_bad_model_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "click.json"
    bad.write_text('{"features": ["x"], "mean": [0]}')
    with pytest.raises(ValueError, match="not a click model"):
        ClickModel.load(bad)
    bad.write_text("{ truncated")
    with pytest.raises(ValueError, match="not a click model"):
        ClickModel.load(bad)
    n = len(FEATURES)
    with pytest.raises(ValueError, match="finite"):
        ClickModel((0.0,) * n, (0.0,) * n, (1.0,) * n, 0.0)


def test_fit_separates_what_it_is_shown() -> None:
    rng = np.random.default_rng(0)
    clicks = [_evidence(tail_db=float(rng.normal(-2, 1))) for _ in range(60)]
    transients = [_evidence(tail_db=float(rng.normal(8, 1))) for _ in range(60)]
    model = ClickModel.fit(clicks + transients, [True] * 60 + [False] * 60)
    assert min(model.score(e) for e in clicks) > 0.5 > max(model.score(e) for e in transients)
    with pytest.raises(ValueError, match="both"):
        ClickModel.fit(clicks, [True] * 60)


def test_a_click_in_music_is_written_and_the_score_is_its_confidence() -> None:
    x = music_clip(RATE, 3.0, channels=1, seed=4)
    insert_click(x, 0, 60_000, 2, 0.5, np.random.default_rng(1))
    found = [s for s in detect(x, RATE) if s.kind is DamageKind.CLICK]
    near = [s for s in found if s.start <= 60_002 and s.end >= 60_000]
    assert near and not sensitivity("normal").doubt(near[0])
    candidates = [c for c in click_evidence(x[0], RATE) if c[0] <= 60_002 <= c[1] + 2]
    evidence = candidates[0][2]
    assert near[0].confidence == pytest.approx(bundled_click_model().score(evidence), abs=1e-6)
    # a model that doubts everything leaves it alone, and says why
    n = len(FEATURES)
    doubting = ClickModel((0.0,) * n, (1.0,) * n, (0.0,) * n, bias=-10.0)
    (span,) = [
        s
        for s in detect(x, RATE, config=DetectConfig(click_model=doubting))
        if s.kind is DamageKind.CLICK and s.start <= 60_002 and s.end >= 60_000
    ]
    why = sensitivity("normal").doubt(span)
    assert why.startswith("confidence 0.00 below 0.85 (sensitivity normal): ")


def test_click_fit_command_fits_on_the_manifest_train_rows(tmp_path: Path, capsys) -> None:
    """``maedaw bench click-fit`` on a tiny corpus: only real train rows of packages not
    excluded are read; the written model loads and records the packages it saw."""
    extracted = tmp_path / "extracted"
    rows = []
    for n, (package, role) in enumerate(
        [("pkg-a", "train"), ("pkg-b", "train"), ("pkg-held", "heldout-package"),
         ("hydrogen-drumkits", "train")]
    ):  # fmt: skip
        for k in range(2):
            rel = f"usr/share/{package}/take{k}.wav"
            path = extracted / package / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            write_stem(path, _with_ticks(music_clip(RATE, 4.0, channels=2, seed=10 * n + k)),
                       RATE, SampleFormat.INT16)  # fmt: skip
            rows.append({"file": f"{package}-{k}.wav", "role": role, "package": package,
                         "source": "/" + rel, "synthetic": "0"})  # fmt: skip
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "click.json"
    code = main(["bench", "click-fit", str(manifest), "--extracted", str(extracted),
                 "--out", str(out), "--seconds", "4"])  # fmt: skip
    assert code == 0, capsys.readouterr()
    model = ClickModel.load(out)
    assert model.provenance["packages"] == ["pkg-a", "pkg-b"]
    assert model.provenance["recordings"] == 4 and model.provenance["clicks_inserted"] == 8
    assert model.provenance["clicks_verified"] > 0 and model.provenance["transients"] > 0
    # C was chosen by leaving one package out at a time (two packages: two folds)
    losses = model.provenance["held_out_log_loss"]
    assert len(losses) == 6 and losses[f"{model.provenance['c']:g}"] == min(losses.values())
