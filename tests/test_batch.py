"""``maedaw batch``: the local pool (identical results to the per-file commands, a corrupt file
in the middle, resume after ``kill -9``), the similarity index, and a real local Ray cluster.

Real recordings (alsa-utils speech, freedesktop effects) in a small library; one Ray cluster
for the module (two CPUs, no dashboard) to keep its start-up to one.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from maedaw.bridge.batch import (
    JOURNAL,
    REPORT,
    SETTINGS,
    BatchError,
    BatchSpec,
    open_pool,
    read_journal,
    run_batch,
)
from maedaw.bridge.batch_worker import decode_vector
from maedaw.bridge.cli import main
from maedaw.core.util import file_sha256

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def user_dirs(tmp_path_factory):
    """Cache, tag library and models folder of this module's own (the spawned workers and
    the Ray workers inherit the environment)."""
    base = tmp_path_factory.mktemp("user")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("CACHE", "DATA", "MODELS"):
            patch.setenv(f"MAEDAW_{name}_DIR", str(base / name.lower()))
        yield base


@pytest.fixture(scope="module")
def library(tmp_path_factory, real_speech, real_effects) -> Path:
    """Real speech in one folder, real effects in a sub-folder, and an unreadable ``.wav``
    sorted between them."""
    root = tmp_path_factory.mktemp("library")
    for path in real_speech[:3]:
        shutil.copy(path, root / path.name)
    (root / "Middle_corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + os.urandom(2000))
    (root / "effects").mkdir()
    for path in real_effects[:2]:
        shutil.copy(path, root / "effects" / path.name)
    return root


def _sources(library: Path) -> list[str]:
    return sorted(str(p) for p in library.rglob("*") if p.is_file())


def _records(out: Path) -> list[dict]:
    return list(read_journal(out / JOURNAL))


@pytest.fixture(scope="module")
def tagged(library, tmp_path_factory) -> Path:
    """``batch tag`` of the library on two local workers (no embedding cache)."""
    out = tmp_path_factory.mktemp("tagged")
    spec = BatchSpec("tag", (str(library),), str(out), workers=2, use_cache=False)
    summary = run_batch(spec)
    assert (summary.workers, summary.engine, summary.processed) == (2, "local", 6)
    return out


def test_tag_matches_the_per_file_command_and_lists_the_corrupt_file(
    library, tagged, capsys
) -> None:
    records = {r["source"]: r for r in _records(tagged)}
    assert sorted(records) == _sources(library)
    corrupt = str(library / "Middle_corrupt.wav")
    assert records[corrupt]["status"] == "error"
    assert "not a readable audio file" in records[corrupt]["error"]
    good = [s for s in records if s != corrupt]
    assert all(records[s]["status"] == "ok" for s in good)
    assert all(records[s]["sha256"] == file_sha256(s) for s in good)

    assert main(["tag", "--json", "--no-cache", *good[:3]]) == 0
    cli = json.loads(capsys.readouterr().out)["results"]
    assert [r["source"] for r in cli] == good[:3]
    for result in cli:  # the same function on the same file: the same numbers
        assert records[result["source"]]["result"] == result

    with open(tagged / REPORT, newline="", encoding="utf-8") as handle:
        rows = {row["source"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == _sources(library)
    assert rows[corrupt]["status"] == "error" and rows[corrupt]["error"]
    best = cli[0]["tags"][0]
    assert rows[good[0]]["summary"].startswith(f"{best['label']} {best['score']:.2f}")


def test_detect_resumes_after_kill_9_without_doing_a_file_twice(real_speech, tmp_path) -> None:
    library = tmp_path / "many"
    library.mkdir()
    for n in range(40):  # enough work that the kill lands mid-batch
        shutil.copy(real_speech[n % len(real_speech)], library / f"take{n:02d}.wav")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "maedaw.bridge.cli", "batch", "detect", str(library)]
    command += ["--out", str(out), "--workers", "1", "--json"]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / JOURNAL
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    before = _records(out)
    assert 3 <= len(before) < 40, "the kill did not land mid-batch"
    worker = int(before[0]["worker"].rpartition(":")[2])
    for _ in range(100):  # the worker exits with the driver, writing nothing more
        if not Path(f"/proc/{worker}").exists():
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{worker}").exists(), "a worker outlived its killed driver"
    assert _records(out) == before
    with open(journal, "ab") as handle:  # a write torn by the kill
        handle.write(b'{"op": "detect", "source": "')

    spec = BatchSpec("detect", (str(library),), str(out), workers=1)
    with pytest.raises(BatchError, match="--resume"):
        run_batch(spec)
    with pytest.raises(BatchError, match="other settings"):
        run_batch(BatchSpec("detect", (str(library),), str(out), resume=True, sensitivity="high"))
    summary = run_batch(BatchSpec("detect", (str(library),), str(out), workers=1, resume=True))
    left = 40 - len(before)
    assert (summary.skipped, summary.processed, summary.failed) == (len(before), left, 0)
    after = _records(out)
    assert after[: len(before)] == before  # appended after the torn line was cut off
    assert sorted(r["source"] for r in after) == _sources(library)  # each file exactly once
    assert all(r["status"] == "ok" for r in after)


def test_repair_mirrors_stems_under_out_as_the_per_file_command(library, tmp_path) -> None:
    sources = {s: file_sha256(s) for s in _sources(library)}
    out = tmp_path / "out"
    spec = BatchSpec("repair", (str(library),), str(out), workers=1, model="none")
    summary = run_batch(spec)
    assert [e["source"] for e in summary.errors] == [str(library / "Middle_corrupt.wav")]
    ok = [r for r in _records(out) if r["status"] == "ok"]
    assert len(ok) == 5
    for record in ok:
        source = Path(record["source"])
        stem = Path(record["result"]["output"])
        rel = source.relative_to(library)
        assert stem == out / library.name / rel.parent / f"{source.stem}.maedaw-repair.wav"
        single = tmp_path / f"{source.stem}-cli.wav"
        assert main(["repair", str(source), "-o", str(single), "--model", "none", "--json"]) == 0
        assert stem.read_bytes() == single.read_bytes()
    assert {s: file_sha256(s) for s in _sources(library)} == sources  # sources untouched
    again = run_batch(BatchSpec("repair", (str(library),), str(out), model="none", resume=True))
    assert (again.processed, again.skipped) == (0, 6)  # the corrupt file's bytes fail alike


@pytest.fixture(scope="module")
def gapped(tmp_path_factory, real_speech) -> Path:
    """A folder of one real speech file with a 40 ms dropout in voiced speech: a gap the
    concealment table without the Audio-MAE sends to the learned concealer (AR edges), where
    without it AR alone fills. Placed in voiced signal so detection finds it."""
    from maedaw.dsp.audio_io import SampleFormat, read_region, write_stem
    from maedaw.dsp.damage import insert_dropout

    region = read_region(real_speech[0])
    clean, rate = region.samples, region.info.sample_rate
    envelope = np.convolve(np.abs(clean[0]), np.ones(480) / 480, mode="same")
    voiced = np.flatnonzero(envelope > 0.3 * envelope.max())
    damaged = clean.copy()
    insert_dropout(damaged, 0, int(np.median(voiced)), int(0.040 * rate))
    root = tmp_path_factory.mktemp("gapped")
    write_stem(root / "gap40.wav", damaged, rate, SampleFormat.INT16)
    return root


def _repair_cli(source: Path, stem: Path, capsys, *options: str) -> list[dict]:
    """``maedaw repair --model none``'s spans (and its stem at ``stem``)."""
    capsys.readouterr()
    command = ["repair", str(source), "-o", str(stem), "--model", "none", *options]
    assert main([*command, "--json"]) == 0
    return json.loads(capsys.readouterr().out)["spans"]


def test_repair_uses_the_concealer_as_the_per_file_command(gapped, tmp_path, capsys) -> None:
    source = gapped / "gap40.wav"
    assert main(["detect", str(source), "--json"]) == 0  # the test means nothing without it
    found = json.loads(capsys.readouterr().out)["spans"]
    assert [(s["kind"], round(s["duration_ms"])) for s in found] == [("dropout", 40)]

    cli = _repair_cli(source, tmp_path / "cli.wav", capsys)
    assert "plc-blend" in {s["method"] for s in cli}
    out = tmp_path / "out"
    spec = BatchSpec("repair", (str(gapped),), str(out), workers=1, model="none")
    assert spec.needs_torch  # the concealer is a torch model even without the Audio-MAE
    assert run_batch(spec).failed == 0
    (record,) = _records(out)
    assert record["result"]["spans"] == cli  # the same methods, reasons and written stretches
    assert Path(record["result"]["output"]).read_bytes() == (tmp_path / "cli.wav").read_bytes()
    assert json.loads((out / SETTINGS).read_text())["concealment"] is None  # the bundled one
    with pytest.raises(BatchError, match="other settings"):
        run_batch(replace(spec, concealment="none", resume=True))

    # --concealment none: AR alone, again as the per-file command, and a different stem.
    bare = _repair_cli(source, tmp_path / "cli-bare.wav", capsys, "--concealment", "none")
    assert "plc-blend" not in {s["method"] for s in bare}
    spec = replace(spec, out=str(tmp_path / "bare"), concealment="none")
    assert not spec.needs_torch
    assert run_batch(spec).failed == 0
    (record,) = _records(tmp_path / "bare")
    assert record["result"]["spans"] == bare
    stem = Path(record["result"]["output"]).read_bytes()
    assert stem == (tmp_path / "cli-bare.wav").read_bytes() != (tmp_path / "cli.wav").read_bytes()
    assert "concealment" not in json.loads((tmp_path / "bare" / SETTINGS).read_text())


def test_index_fills_the_index_that_similar_searches(library, tmp_path) -> None:
    from maedaw.models.similar import SimilarIndex, audio_files

    summary = run_batch(BatchSpec("index", (str(library),), str(tmp_path / "out"), workers=1))
    info = summary.index
    assert info is not None
    assert (info["size"], info["added"], info["failed"]) == (5, 5, 1)
    # The index `maedaw similar --in LIBRARY` opens (for_folders -> at), with nothing to embed.
    model = info["model"]
    index = SimilarIndex.at([library], model["settings_key"], model["model_id"], model["dim"])
    todo, stats = index.stale(audio_files([library]))
    assert [name for name, _, _ in todo] == [str(library / "Middle_corrupt.wav")]
    assert stats["unchanged"] == 5
    record = next(r for r in _records(tmp_path / "out") if r["status"] == "ok")
    nearest = index.search(decode_vector(record["result"]["vector"]), top_k=1)
    assert nearest[0]["path"] == record["source"] and nearest[0]["similarity"] > 0.99


def test_ray_missing_says_how_to_install_it(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    monkeypatch.delitem(sys.modules, "maedaw.bridge.batch_ray", raising=False)
    spec = BatchSpec("detect", (str(tmp_path),), str(tmp_path / "out"), ray="auto")
    with pytest.raises(BatchError, match=r'pip install "maedaw\[cluster\]"'):
        open_pool(spec)


def test_only_batch_ray_imports_ray() -> None:
    importers = []
    for path in ROOT.glob("*/**/*.py"):
        if path.relative_to(ROOT).parts[0] in ("tests", "corpus") or "/." in str(path):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "ray" or n.startswith("ray.") for n in names):
                importers.append(path.relative_to(ROOT).as_posix())
    assert sorted(set(importers)) == ["bridge/batch_ray.py"]


@pytest.fixture(scope="module")
def ray_cluster(user_dirs):
    """A real local cluster (the cluster extra is part of the test install: never skipped)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_batch_gives_the_local_pool_results(library, tagged, ray_cluster, tmp_path) -> None:
    out = tmp_path / "ray"
    spec = BatchSpec("tag", (str(library),), str(out), use_cache=False, ray="auto")
    summary = run_batch(spec)
    assert (summary.engine, summary.workers, summary.processed, summary.failed) == (
        "ray",
        2,
        6,
        1,
    )
    local = {r["source"]: r for r in _records(tagged)}
    remote = _records(out)
    assert sorted(r["source"] for r in remote) == _sources(library)
    for record in remote:
        mine = local[record["source"]]
        assert (record["status"], record.get("result")) == (mine["status"], mine.get("result"))


def test_ray_repair_uses_the_concealer(gapped, ray_cluster, tmp_path, capsys) -> None:
    cli = _repair_cli(gapped / "gap40.wav", tmp_path / "cli.wav", capsys)
    out = tmp_path / "ray"
    spec = BatchSpec("repair", (str(gapped),), str(out), model="none", ray="auto")
    assert run_batch(spec).failed == 0
    (record,) = _records(out)
    assert record["result"]["spans"] == cli
    assert Path(record["result"]["output"]).read_bytes() == (tmp_path / "cli.wav").read_bytes()
