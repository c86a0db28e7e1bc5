"""``maedaw bench restore`` end to end on two tiny synthetic category folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tone_mix

from maedaw.benchmarks.restore import bench_restore, lsd_band
from maedaw.bridge.cli import main
from maedaw.dsp.audio_io import AudioError, SampleFormat, write_stem


def _data(root: Path) -> Path:
    rate = 16_000
    rng = np.random.default_rng(0)
    for category, seed in (("speech", 1), ("music", 2)):
        folder = root / "data" / category
        folder.mkdir(parents=True)
        x = 0.5 * tone_mix(rate, 2.0, 1, seed=seed) + 0.02 * rng.standard_normal((1, 2 * rate))
        write_stem(folder / "clip.wav", x, rate, SampleFormat.INT16)
    return root / "data"


def test_bench_restore_writes_table_and_plot(tmp_path: Path) -> None:
    data = _data(tmp_path)
    result = bench_restore(
        data, tmp_path / "out", ops=["declip", "bandwidth", "dehum"], max_clips=1, seconds=2.0
    )
    saved = json.loads(Path(result["json"]).read_text())
    assert Path(result["plot"]).stat().st_size > 10_000
    assert saved["clips"] == {"music": 1, "speech": 1}
    by_op = {}
    for row in saved["summary"]:
        by_op.setdefault(row["op"], []).append(row)
    assert set(by_op) == {"declip", "bandwidth", "dehum"}
    assert all(r["sdr_out_db"] > r["sdr_in_db"] for r in by_op["declip"])
    assert all(r["lsd_extended_db"] < r["lsd_limited_db"] for r in by_op["bandwidth"])
    assert all(r["hum_reduction_db"] > 20.0 for r in by_op["dehum"])
    assert "**declip**" in result["markdown"] and "| speech |" in result["markdown"]


def test_bench_restore_refuses_bad_input(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(AudioError, match="not a folder"):
        bench_restore(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AudioError, match="no audio files"):
        bench_restore(tmp_path / "empty", tmp_path / "out")
    monkeypatch.chdir(tmp_path)  # the default --out is bench-restore/ in the current folder
    assert main(["bench", "restore", "--data", str(tmp_path / "empty")]) == 1
    assert not (tmp_path / "bench-restore").exists()  # a run that fails early writes nothing
    with pytest.raises(AudioError, match="no op"):
        bench_restore(_data(tmp_path), tmp_path / "out", ops=["declick"])


def test_lsd_band_is_zero_for_identical_and_large_for_missing_band() -> None:
    rate = 16_000
    x = np.random.default_rng(0).standard_normal((1, rate))
    assert lsd_band(x, x, rate, 4000, 8000) == 0.0
    assert lsd_band(x, np.zeros_like(x), rate, 4000, 8000) > 40.0
