"""`maedaw bench repair` on a tiny folder the test makes: structure, scores, files, errors."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from maedaw.benchmarks.repair import (
    BenchRepairConfig,
    bench_repair,
    check_targets,
    fill_all,
    find_clips,
    packet_loss,
    pick_gap,
    plot,
    render_table,
)
from maedaw.dsp.audio_io import AudioError, SampleFormat, write_stem
from maedaw.dsp.repair import RepairConfig
from maedaw.models.inpaint import Inpainter
from tests.conftest import tone_mix
from tests.tiny_models import tiny_model

RATE = 16_000


@pytest.fixture(scope="module")
def inpainter() -> Inpainter:
    return Inpainter(tiny_model(seed=1))


def make_folder(root, clips_per_category: int = 2):
    for c, category in enumerate(("music", "speech")):
        folder = root / category
        folder.mkdir(parents=True)
        for i in range(clips_per_category):
            x = tone_mix(RATE, 1.2, 1, seed=10 * c + i)
            write_stem(folder / f"clip{i}.wav", x, RATE, SampleFormat.INT16)
    return root


def test_bench_on_a_small_folder(tmp_path, inpainter):
    data = make_folder(tmp_path / "data", clips_per_category=1)
    config = BenchRepairConfig(gaps_ms=(10, 100), plcmos=False, speed=False)
    result = bench_repair(data, inpainter, config, model_name="tiny")
    assert result["clips"] == {"music": 1, "speech": 1}
    table = result["gaps"]["table"]
    assert set(table) == {"music", "speech"} and set(table["music"]) == {"10", "100"}
    cell = table["music"]["100"]
    assert set(cell) == {"zero", "repeat", "linear", "ar", "mae", "hybrid"}
    assert cell["zero"]["lsd"]["n"] == 1
    # zero-fill is the worst on spectra; every real method does better on a steady tone
    for method in ("ar", "mae", "hybrid"):
        assert cell[method]["lsd"]["mean"] < cell["zero"]["lsd"]["mean"]
    # the hybrid sends 10 ms to AR and 100 ms to the model: identical scores
    assert table["music"]["10"]["hybrid"] == table["music"]["10"]["ar"]
    assert table["music"]["100"]["hybrid"] == table["music"]["100"]["mae"]
    assert {row["gap_ms"] for row in result["targets"]} == {"10"}  # 50/200 not run
    text = render_table(result)
    assert "| hybrid |" in text and "**music**" in text and "Targets" in text
    json.dumps(result)  # JSON-ready
    plot(result, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_without_a_model_only_the_classic_methods_run(tmp_path):
    data = make_folder(tmp_path / "data", clips_per_category=1)
    config = BenchRepairConfig(gaps_ms=(20,), plcmos=False, speed=False)
    result = bench_repair(data, None, config)
    assert result["gaps"]["methods"] == ["zero", "repeat", "linear", "ar"]
    assert result["targets"] == [] and "speed" not in result


def test_plcmos_scores_speech_folders(tmp_path, inpainter):
    pytest.importorskip("speechmos")
    data = make_folder(tmp_path / "data", clips_per_category=1)
    config = BenchRepairConfig(gaps_ms=(), loss_rates=(0.2,), speed=False)
    result = bench_repair(data, inpainter, config)
    summary = result["plcmos"]["speech"]["0.2"]
    assert set(summary) == {"clean", "zero", "repeat", "linear", "ar", "mae", "hybrid"}
    assert all(1.0 <= summary[m]["mean"] <= 5.0 for m in summary)
    assert "PLCMOS, speech" in render_table(result)


def test_gap_picking_packet_loss_and_fills():
    rng = np.random.default_rng(0)
    x = tone_mix(RATE, 1.0, 1)
    assert pick_gap(x, RATE, 100, rng) is not None
    assert pick_gap(x[:, :3000], RATE, 2000, rng) is None  # too short for gap + context
    assert pick_gap(np.zeros((1, RATE)), RATE, 100, rng) is None  # silence
    gaps = packet_loss(RATE * 4, RATE, 20.0, 0.2, np.random.default_rng(1))
    assert gaps and gaps[0][0] > 0
    assert all(s % 320 == 0 and e % 320 == 0 and e > s for s, e in gaps)
    assert all(b[0] > a[1] for a, b in itertools.pairwise(gaps))  # merged runs
    damaged = x.copy()
    damaged[:, 4000:4160] = 0.0
    filled = fill_all(damaged, RATE, [(4000, 4160)], None, RepairConfig(), ("zero", "ar"))
    assert set(filled) == {"zero", "ar"}
    assert np.array_equal(filled["ar"][:, :3900], damaged[:, :3900])


def test_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(AudioError, match="not a folder"):
        find_clips(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    with pytest.raises(AudioError, match="no audio files"):
        find_clips(tmp_path / "empty")
    assert check_targets({}) == []


def test_max_clips_is_a_seeded_sample_not_the_first_names(tmp_path):
    # An exported corpus names clips by package: the first N by name are one package.
    folder = tmp_path / "speech"
    folder.mkdir()
    for i in range(40):
        (folder / f"clip-{i:02d}.wav").write_bytes(b"")
    picked = find_clips(tmp_path, max_clips=6, seed=0)["speech"]
    assert len(picked) == 6
    assert picked == sorted(picked)
    assert [p.name for p in picked] != [f"clip-{i:02d}.wav" for i in range(6)]
    assert picked == find_clips(tmp_path, max_clips=6, seed=0)["speech"]
    assert picked != find_clips(tmp_path, max_clips=6, seed=1)["speech"]
    assert len(find_clips(tmp_path, max_clips=100)["speech"]) == 40


def test_one_channel_dropouts_on_stereo_clips(tmp_path):
    rng = np.random.default_rng(3)
    left = tone_mix(RATE, 1.5, 1, seed=3)[0] + 0.05 * rng.standard_normal(round(1.5 * RATE))
    right = 0.6 * np.concatenate([np.zeros(9), left[:-9]]) + 1e-3 * rng.standard_normal(left.size)
    folder = tmp_path / "data" / "pair"
    folder.mkdir(parents=True)
    write_stem(folder / "pair.wav", np.stack([left, right]) * 0.5, RATE, SampleFormat.FLOAT32)
    mono = tmp_path / "data" / "mono"
    mono.mkdir()
    write_stem(mono / "m.wav", tone_mix(RATE, 1.2, 1, seed=1), RATE, SampleFormat.INT16)
    config = BenchRepairConfig(gaps_ms=(20, 300), plcmos=False, speed=False)
    result = bench_repair(tmp_path / "data", None, config)
    channel = result["channel"]
    assert channel["methods"] == ["ar", "policy"]
    assert set(channel["table"]) == {"pair"}  # the mono clip has no other channel
    for gap in ("20", "300"):
        cell = channel["table"]["pair"][gap]
        assert cell["from_other_channel"] == 1
        assert cell["policy"]["gap_snr"]["median"] > cell["ar"]["gap_snr"]["median"] + 10.0
    assert "One-channel dropouts, pair" in render_table(result)
    json.dumps(result)


def test_the_ar_speed_figure_times_gaps_the_policy_keeps_with_ar(inpainter):
    """The second speed figure is only a measure of AR's cost if its gaps stay with AR."""
    from maedaw.benchmarks.repair import bench_speed
    from maedaw.dsp.signals import held_notes

    speed = bench_speed(inpainter, repeats=1, gap_s=0.02, clip=held_notes, starts=(2.5, 5.5, 8.5))
    assert speed["methods"] == ["ar"]
    assert "held_notes" in speed["audio"] and len(speed["marked_spans_s"]["runs"]) == 1
