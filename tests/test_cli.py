"""The ``maedaw`` command as a user runs it: exit codes, JSON, files written or not."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from maedaw.bridge.cli import main
from maedaw.dsp.audio_io import SampleFormat, read_region, write_stem
from maedaw.dsp.damage import insert_dropout
from maedaw.dsp.signals import music_clip

RATE = 44_100


@pytest.fixture()
def damaged(tmp_path) -> Path:
    x = music_clip(RATE, 2.0, channels=2, seed=5)
    insert_dropout(x, 0, int(0.7 * RATE), int(0.01 * RATE))
    insert_dropout(x, 1, int(1.3 * RATE), int(0.005 * RATE))
    return write_stem(tmp_path / "take.wav", x, RATE, SampleFormat.INT24)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Through the installed console script, as a user (or the daemon) would."""
    exe = shutil.which("maedaw") or sys.executable
    prefix = [] if exe.endswith("maedaw") else ["-m", "maedaw.bridge.cli"]
    return subprocess.run([exe, *prefix, *args], capture_output=True, text=True, check=False)


def test_detect_json(damaged, capsys):
    assert main(["detect", str(damaged), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sample_rate"] == RATE and report["num_channels"] == 2
    found = {(s["channel"], s["kind"]) for s in report["spans"]}
    assert {(0, "dropout"), (1, "dropout")} <= found
    dropout = next(s for s in report["spans"] if s["channel"] == 0 and s["kind"] == "dropout")
    assert dropout["start"] == int(0.7 * RATE)
    assert dropout["end"] == int(0.7 * RATE) + int(0.01 * RATE)


def test_detect_region_only_reports_inside(damaged, capsys):
    assert main(["detect", str(damaged), "--start", "1.0", "--end", "2.0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["channel"] for s in report["spans"] if s["kind"] == "dropout"] == [1]


def test_repair_writes_stem_report_and_plot(damaged, tmp_path, capsys):
    out, plot = tmp_path / "fixed.wav", tmp_path / "fixed.png"
    assert main(["repair", str(damaged), "-o", str(out), "--plot", str(plot), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["output"] == str(out) and report["repaired"] >= 2
    assert {s["method"] for s in report["spans"] if s["kind"] == "dropout"} == {"ar"}
    assert "read" in report["timings_s"] and "repair" in report["timings_s"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_region(out).info.frames == read_region(damaged).info.frames


def test_repair_default_output_sits_next_to_the_source(damaged, capsys):
    assert main(["repair", str(damaged), "--json"]) == 0
    out = Path(json.loads(capsys.readouterr().out)["output"])
    assert out.parent == damaged.parent and out.name == "take.maedaw-repair.wav"


def test_console_script_runs_and_reports_errors(tmp_path):
    ok = run_cli("info", str(tmp_path / "missing.wav"))
    assert ok.returncode == 1
    assert "error:" in ok.stderr and "no such file" in ok.stderr
    assert ok.stdout == ""


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda p: p.write_bytes(b""), [], "empty"),
        (lambda p: p.write_bytes(b"RIFF1234WAVEfmt garbage" * 4), [], "not a readable audio"),
        (None, ["--start", "5", "--end", "6"], "past the end"),
        (None, ["--start", "1", "--end", "1"], "empty region"),
    ],
)
def test_bad_input_exits_nonzero_and_writes_nothing(damaged, tmp_path, make, args, message):
    source = damaged
    if make is not None:
        source = tmp_path / "bad.wav"
        make(source)
    listing = sorted(tmp_path.iterdir())
    result = run_cli("repair", str(source), "-o", str(tmp_path / "out.wav"), *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert sorted(tmp_path.iterdir()) == listing


def test_nan_source_is_refused(tmp_path):
    x = np.zeros((1, 8000), dtype=np.float32)
    x[0, 100] = np.inf
    from pedalboard.io import AudioFile

    with AudioFile(str(tmp_path / "nan.wav"), "w", 8000, 1, bit_depth=32) as f:
        f.write(x)
    result = run_cli("detect", str(tmp_path / "nan.wav"))
    assert result.returncode == 1 and "NaN or infinite" in result.stderr


def test_usage_error_is_exit_2():
    result = run_cli("repair")
    assert result.returncode == 2 and "usage" in result.stderr


def test_demo_end_to_end(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for name in ("clean.wav", "damaged.wav", "repaired.wav", "repair.png"):
        assert (tmp_path / "demo" / name).stat().st_size > 0
    assert summary["recall"] >= 0.9
    assert summary["false_positives"] <= 1
    # The demo repairs as `maedaw repair` does, with the bundled models: its 16-20 ms dropouts
    # (on a context not periodic enough for the periodic-AR rule) go to AR edges + the
    # Audio-MAE, the shorter ones to AR.
    dropouts = [r for r in summary["truth"] if r["kind"] == "dropout"]
    assert {"ar", "blend"} <= {r["method"] for r in dropouts}
    # Every repair lands closer to the clean clip than the damage did; AR's, which continue
    # the waveform itself, far closer (a model's fill matches the spectrum, not the phase).
    assert all(r["repair_snr_db"] > r["damaged_snr_db"] + 1.0 for r in dropouts)
    assert np.median([r["repair_snr_db"] for r in dropouts if r["method"] == "ar"]) > 10.0
    # the short AR repairs are spectrally closer too (the demo rows carry LSD as well)
    short = [r for r in dropouts if r["method"] == "ar"]
    assert all(r["repair_lsd_db"] < r["damaged_lsd_db"] - 0.5 for r in short)


def test_service_files(capsys):
    import plistlib

    assert main(["service", "systemd", "--port", "9100"]) == 0
    unit = capsys.readouterr().out
    assert "[Service]" in unit and "serve --port 9100" in unit and "KillSignal=SIGTERM" in unit
    assert main(["service", "launchd"]) == 0
    plist = plistlib.loads(capsys.readouterr().out.encode())
    assert plist["Label"] == "org.maedaw.serve"
    assert plist["ProgramArguments"][-3:] == ["serve", "--port", "9000"]


@pytest.mark.parametrize(
    "region", [["--end", "nan"], ["--end", "inf"], ["--start", "nan"], ["--start=-inf"]]
)
def test_non_finite_region_is_one_error_line(damaged, tmp_path, capsys, region):
    assert main(["repair", str(damaged), "-o", str(tmp_path / "out.wav"), *region]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "not a finite number of seconds" in err
    assert not (tmp_path / "out.wav").exists()


def test_region_errors_are_in_seconds(damaged, tmp_path, capsys):
    args = ["repair", str(damaged), "-o", str(tmp_path / "out.wav")]
    assert main([*args, "--start", "1.5", "--end", "0.5"]) == 1
    assert "empty region [1.500 s, 0.500 s]" in capsys.readouterr().err
    assert main([*args, "--start", "-0.25"]) == 1
    assert "starts before the file (-0.250 s)" in capsys.readouterr().err


def test_repair_plot_says_where_the_png_went(damaged, tmp_path, capsys):
    plot = tmp_path / "fixed.png"
    assert (
        main(["repair", str(damaged), "-o", str(tmp_path / "fixed.wav"), "--plot", str(plot)]) == 0
    )
    out = capsys.readouterr().out
    assert "before/after picture:" in out and str(plot) in out.replace("\n", "")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_explains_a_negative_click_snr():
    from maedaw.bridge.cli.audio import click_snr_note

    click = {"kind": "click", "found": True, "damaged_snr_db": -25.0, "repair_snr_db": -0.5}
    note = click_snr_note([click, {**click, "damaged_snr_db": -13.0, "repair_snr_db": -1.5}])
    assert note is not None and "11.5 to 24.5 dB" in note and "damaged samples only" in note
    # Nothing to explain: clicks above 0 dB, a missed click (no repair), other damage.
    assert click_snr_note([{**click, "repair_snr_db": 8.0}]) is None
    assert click_snr_note([{**click, "found": False}]) is None
    assert click_snr_note([{**click, "kind": "dropout"}]) is None


def test_models_table_fits_80_columns(tmp_path):
    import os

    from maedaw.models.registry import BUNDLED_DIR

    user = tmp_path / "models"
    user.mkdir()
    long_name = "a-fine-tuned-model-with-a-name-far-too-long-for-one-column-of-the-table"
    meta = json.loads((BUNDLED_DIR / "compact-default.json").read_text())
    meta["weights_file"] = f"{long_name}.safetensors"
    (user / f"{long_name}.json").write_text(json.dumps(meta))
    shutil.copy(BUNDLED_DIR / "compact-default.safetensors", user / meta["weights_file"])
    env = {**os.environ, "COLUMNS": "80", "MAEDAW_MODELS_DIR": str(user)}
    exe = shutil.which("maedaw")
    command = [exe] if exe else [sys.executable, "-m", "maedaw.bridge.cli"]
    table = subprocess.run([*command, "models"], capture_output=True, text=True, env=env)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), table.stdout
    rows = [line for line in lines if "compact" in line and "MB" in line]
    assert len(rows) == 2  # one line per model, id and size beside the name
    assert any("compact-default" in r for r in rows) and any("…" in r for r in rows)
    listing = subprocess.run(
        [*command, "models", "--json"], capture_output=True, text=True, env=env
    )
    names = [m["name"] for m in json.loads(listing.stdout)["models"]]
    assert long_name in names  # the full value stays in --json
    # the learned concealment model is listed too, with the id the daemon reports
    (concealment,) = json.loads(listing.stdout)["concealment"]
    assert concealment["name"] == "concealment-default" and concealment["source"] == "bundled"
    assert concealment["id"].startswith("concealment-") and concealment["dtype"] == "float16"
    assert any(concealment["id"] in line and "MB" in line for line in lines)


def test_train_on_a_missing_folder_is_one_error_line(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"error: {tmp_path / 'nowhere'}: no such folder"]
