"""`maedaw similar`: ranking, incremental index, bad input; the tag/similar CLI on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from maedaw.bridge.cli import main
from maedaw.dsp.audio_io import AudioError
from maedaw.models.checkpoint import save_model
from maedaw.models.embed import Embedder
from maedaw.models.feature_space import space_for
from maedaw.models.heads import TaggerHead
from maedaw.models.similar import (
    SimilarIndex,
    SimilarityError,
    audio_files,
    find_similar,
    rank_regions,
)
from tests.tiny_models import tiny_model

RATE = 16_000


pytestmark = pytest.mark.usefixtures("private_user_dirs")


def _write(path: Path, x: np.ndarray) -> Path:
    from pedalboard.io import AudioFile

    path.parent.mkdir(parents=True, exist_ok=True)
    with AudioFile(str(path), "w", RATE, 1) as f:
        f.write(np.asarray(x, np.float32)[None])
    return path


def _signal(kind: int, seconds: float = 2.5) -> np.ndarray:
    """Five clearly different sounds."""
    rng = np.random.default_rng(kind)
    t = np.arange(round(seconds * RATE)) / RATE
    if kind == 0:
        return 0.3 * np.sin(2 * np.pi * 110 * t)
    if kind == 1:
        return 0.3 * np.sin(2 * np.pi * (300 + 1500 * (t % 0.5)) * t)  # repeating chirps
    if kind == 2:
        return 0.2 * rng.standard_normal(len(t))
    if kind == 3:
        clicks = np.zeros(len(t))
        clicks[:: RATE // 8] = 0.9
        return clicks + 0.001 * rng.standard_normal(len(t))
    return 0.3 * np.sign(np.sin(2 * np.pi * 1800 * t)) * (t % 0.3 < 0.15)  # beeping square


def _embedder() -> Embedder:
    return Embedder(tiny_model(), model_id="tiny-test", precision="float32")


def test_own_excerpt_ranks_first_and_index_updates_incrementally(tmp_path):
    library = tmp_path / "library"
    paths = [_write(library / f"sound{k}.wav", _signal(k)) for k in range(5)]
    embedder = _embedder()
    for k in range(5):
        excerpt = _write(tmp_path / f"excerpt{k}.wav", _signal(k)[RATE // 2 : 2 * RATE])
        result = find_similar(excerpt, [library], embedder, top_k=3)
        assert result["results"][0]["path"] == str(paths[k].resolve()), result
        sims = [r["similarity"] for r in result["results"]]
        assert sims == sorted(sims, reverse=True) and all(-1.0 <= s <= 1.0 + 1e-6 for s in sims)
    assert result["indexed"] == 5
    assert result["index_changes"]["unchanged"] == 5  # built once, then reused

    # A file inside the library is not its own neighbour.
    inside = find_similar(paths[2], [library], embedder, top_k=10)
    assert str(paths[2].resolve()) not in [r["path"] for r in inside["results"]]
    assert len(inside["results"]) == 4

    # Add one, change one, delete one: only those are touched.
    _write(library / "sub" / "new.wav", _signal(1, 2.0))
    _write(paths[0], _signal(3))
    paths[4].unlink()
    index = SimilarIndex.for_folders([library], embedder)
    stats = index.update(audio_files([library]), embedder)
    assert stats == {"added": 1, "updated": 1, "removed": 1, "unchanged": 3, "failed": 0}
    reopened = SimilarIndex.for_folders([library], embedder)
    assert len(reopened.index) == 5 and len(reopened.entries) == 5
    assert str(paths[4].resolve()) not in reopened.entries


def _head_for(embedder: Embedder, hidden: int = 16) -> TaggerHead:
    """A random two-layer tagger head with background vectors for the embedder's model."""
    rng = np.random.default_rng(3)
    d = embedder.dim
    tensors = {
        "mean": np.zeros(d, np.float32),
        "scale": np.ones(d, np.float32),
        "w0": rng.standard_normal((hidden, d)).astype(np.float32),
        "b0": np.zeros(hidden, np.float32),
        "w1": rng.standard_normal((2, hidden)).astype(np.float32),
        "b1": np.zeros(2, np.float32),
        "calib_a": np.ones(2, np.float32),
        "calib_b": np.zeros(2, np.float32),
        "background": rng.standard_normal((8, d)).astype(np.float16),
    }
    return TaggerHead("tagger-test", embedder.model_id, ["a", "b"], ["a", "b"], tensors)


def test_a_tagger_head_puts_the_index_in_its_feature_space(tmp_path):
    """With a head for the model, vectors are indexed in its feature space (vector + hidden
    layer), in an index of their own; ranking and the REAPER path use the same space."""
    library = tmp_path / "library"
    paths = [_write(library / f"sound{k}.wav", _signal(k)) for k in range(5)]
    embedder = _embedder()
    excerpt = _write(tmp_path / "excerpt.wav", _signal(3)[RATE // 2 : 2 * RATE])
    plain = find_similar(excerpt, [library], embedder)
    assert SimilarIndex.for_folders([library], embedder).dim == embedder.dim

    head = _head_for(embedder)
    head.save(tmp_path / "models" / "tagger-test")
    space = space_for(embedder.model_id)
    assert space is not None and space.dim == embedder.dim + 16
    result = find_similar(excerpt, [library], embedder)
    assert result["index_changes"]["added"] == 5  # a new space is a new index, not a mix
    index = SimilarIndex.for_folders([library], embedder)
    assert index.dim == space.dim == index.index.ndim
    assert result["results"][0]["path"] == str(paths[3].resolve())
    assert [r["path"] for r in result["results"]] != [] and plain["results"]

    query = embedder.embed_file(excerpt)
    ranked, _ = rank_regions(query, [(k, p, None, None) for k, p in enumerate(paths)], embedder)
    features = space(np.stack([embedder.embed_file(p).clip for p in paths]))
    target = space(query.clip[None, :])[0]
    cosines = features @ target / (np.linalg.norm(features, axis=1) * np.linalg.norm(target))
    assert [r["id"] for r in ranked] == list(np.argsort(-cosines))
    np.testing.assert_allclose([r["similarity"] for r in ranked], np.sort(cosines)[::-1], atol=2e-4)


def test_bad_input(tmp_path):
    library = tmp_path / "library"
    _write(library / "a.wav", _signal(0))
    (library / "broken.wav").write_bytes(b"RIFF....WAVE")
    embedder = _embedder()
    with pytest.raises(SimilarityError, match="not a folder"):
        find_similar(library / "a.wav", [tmp_path / "nope"], embedder)
    with pytest.raises(AudioError):
        find_similar(tmp_path / "missing.wav", [library], embedder)
    with pytest.raises(SimilarityError):
        find_similar(library / "a.wav", [library], embedder, top_k=0)
    # An undecodable library file is skipped and counted, not fatal.
    result = find_similar(library / "a.wav", [library], embedder)
    assert result["index_changes"]["failed"] == 1 and result["indexed"] == 1


def test_cli_tag_similar_and_tags(tmp_path, capsys):
    model = tmp_path / "models" / "tiny"
    save_model(tiny_model(), model)
    library = tmp_path / "library"
    clips = [_write(library / f"s{k}.wav", _signal(k)) for k in range(3)]

    assert main(["tags", "teach", "beeps", str(clips[1]), "--model", "tiny", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 1
    assert main(["tag", *map(str, clips), "--model", "tiny", "--json", "--top", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["results"]) == 3 and out["errors"] == []
    assert all(r["tags"][0]["tag"] == "beeps" for r in out["results"])

    # A bad file among good ones: the good ones are tagged, the exit code says it failed.
    assert (
        main(["tag", str(clips[0]), str(tmp_path / "missing.wav"), "--model", "tiny", "--json"])
        == 1
    )
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)["results"]) == 1
    assert main(["tag", str(clips[0]), "--model", "no-such-model"]) == 1
    assert "error:" in capsys.readouterr().err

    assert main(["similar", str(clips[2]), "--in", str(library), "--model", "tiny", "--json"]) == 0
    similar = json.loads(capsys.readouterr().out)
    assert len(similar["results"]) == 2

    assert main(["tags", "list", "--json"]) == 0
    assert [t["name"] for t in json.loads(capsys.readouterr().out)["tags"]] == ["beeps"]
    assert main(["tags", "forget", "beeps"]) == 0
    assert main(["tags", "forget", "beeps"]) == 1
    assert "no taught tag" in capsys.readouterr().err
    # Nothing left to tag with: a clear error, not an empty answer.
    assert main(["tag", str(clips[0]), "--model", "tiny"]) == 1
    assert "no tag vocabulary" in capsys.readouterr().err
