"""Embeddings, cache, tags (session head, AudioSet head, taught tags) on tiny models.

Everything runs on tiny random models (tests/tiny_models.py: 1.28 s windows of 32 mel bins)
and audio made here; no bundled weights are needed except where said.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from maedaw.benchmarks.tag import few_shot_accuracies, neighbour_precision
from maedaw.corpus import tags as tag_corpus
from maedaw.corpus.tags import (
    TagClip,
    check_group_split,
    classify_path,
    clip_spans,
    set_level,
    split_groups,
)
from maedaw.dsp.audio_io import AudioError
from maedaw.models import tagging
from maedaw.models.checkpoint import import_official_state_dict, save_model
from maedaw.models.embed import Embedder, cache_dir
from maedaw.models.feature_space import head_inputs
from maedaw.models.heads import TaggerHead, TaggingError, find_heads
from maedaw.models.tagger_train import LabelledSet, evaluate_head, platt, train_head
from maedaw.models.tagging import audioset_labels, tag_region
from maedaw.models.tags_user import TagLibrary, TagLibraryError, fit_tags
from tests.tiny_models import tiny_model

RATE = 16_000


pytestmark = pytest.mark.usefixtures("private_user_dirs")


def _write(path: Path, x: np.ndarray, rate: int = RATE) -> Path:
    from pedalboard.io import AudioFile

    data = np.atleast_2d(np.asarray(x, np.float32))
    with AudioFile(str(path), "w", rate, data.shape[0]) as f:
        f.write(data)
    return path


def _tone(freq: float, seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return 0.3 * np.sin(2 * np.pi * freq * t) + 0.003 * noise


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return 0.2 * np.random.default_rng(seed).standard_normal(round(seconds * RATE))


def _embedder(model_id: str = "tiny-test", **options) -> Embedder:
    return Embedder(tiny_model(), model_id=model_id, precision="float32", **options)


def _random_head(
    encoder_id: str, dim: int = 32, classes=("tone", "noise", "silence")
) -> TaggerHead:
    rng = np.random.default_rng(0)
    c = len(classes)
    tensors = {
        "mean": np.zeros(dim, np.float32),
        "scale": np.ones(dim, np.float32),
        "w0": rng.standard_normal((16, dim)).astype(np.float32),
        "b0": np.zeros(16, np.float32),
        "w1": rng.standard_normal((c, 16)).astype(np.float32),
        "b1": np.zeros(c, np.float32),
        "calib_a": np.full(c, 0.5, np.float32),
        "calib_b": np.zeros(c, np.float32),
        "background": rng.standard_normal((12, dim)).astype(np.float16),
    }
    return TaggerHead("tagger-test", encoder_id, list(classes), [f"{k}!" for k in classes], tensors)


# ------------------------------------------------------------------------------ embeddings


def test_windows_cover_the_region_with_time_stamps(tmp_path):
    left, right = _tone(440, 4.0, 44_100), _tone(880, 4.0, 44_100, seed=1)
    path = _write(tmp_path / "long.wav", np.stack([left, right]), 44_100)
    emb = _embedder().embed_file(path, 0.5, 3.7)
    window = 1.28  # tiny model: 128 frames
    embedder = _embedder()
    assert emb.windows.shape == (math.ceil(3.2 / window), embedder.dim) == (3, (4 + 1) * 32)
    assert emb.starts[0] == pytest.approx(0.5, abs=1e-4)
    assert np.all(np.diff(emb.starts) > 0)
    assert emb.ends[-1] == pytest.approx(3.7, abs=0.011)  # last window ends with the region
    assert emb.start == pytest.approx(0.5) and emb.end == pytest.approx(3.7)
    assert np.all(np.isfinite(emb.windows)) and emb.clip.shape == (embedder.dim,)
    weights = emb.weights / emb.weights.sum()
    np.testing.assert_allclose(emb.clip, (emb.windows * weights[:, None]).sum(0), rtol=1e-5)


def test_streamed_file_matches_in_memory_waveform(tmp_path):
    x = _tone(300, 3.0) + _noise(3.0, 1)
    path = _write(tmp_path / "a.wav", x)
    embedder = _embedder()
    from_file = embedder.embed_file(path, use_cache=False)
    vectors, offsets, _ = embedder.embed_waveform(x.astype(np.float32))
    # float32 stream vs float64 read of the same samples: bf16-free, so tiny differences only.
    np.testing.assert_allclose(from_file.windows, vectors, atol=1e-3)
    np.testing.assert_array_equal(from_file.starts * RATE, offsets)


def test_short_clip_hides_padding(tmp_path):
    """pool='real': the padded patch columns of a short clip change nothing."""
    embedder = _embedder()
    # 40 frames = 5 whole patch columns (a column with some real frames stays visible).
    x = _tone(500, 6640 / RATE).astype(np.float32)
    a, _, frames = embedder.embed_waveform(x)
    assert frames[0] < 128
    # Same audio, different padding value: identical vector when padding is hidden.
    embedder.frontend = type(embedder.frontend)(
        **{**embedder.frontend.to_dict(), "pad_log_mel": -10.0}
    )
    b, _, _ = embedder.embed_waveform(x)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_cache_is_used_and_invalidated_when_the_file_changes(tmp_path, monkeypatch):
    path = _write(tmp_path / "clip.wav", _tone(440, 2.0))
    embedder = _embedder()
    calls = []
    real_encode = embedder.encode
    monkeypatch.setattr(embedder, "encode", lambda *a: calls.append(1) or real_encode(*a))
    first = embedder.embed_file(path)
    assert calls and len(list(cache_dir().glob("*.npz"))) == 1
    calls.clear()
    again = embedder.embed_file(path)
    assert not calls  # served from the cache
    np.testing.assert_array_equal(first.windows, again.windows)
    # Same length, same name, new content: must be recomputed.
    _write(path, _noise(2.0, 3))
    changed = embedder.embed_file(path)
    assert calls
    assert not np.allclose(changed.clip, first.clip)
    # Another region and another model id are other entries.
    embedder.embed_file(path, 0.0, 1.0)
    Embedder(embedder.model, model_id="other", precision="float32").embed_file(path)
    assert len(list(cache_dir().glob("*.npz"))) == 4


def test_bad_audio_input_is_a_clear_error(tmp_path):
    embedder = _embedder()
    with pytest.raises(AudioError):
        embedder.embed_file(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really")
    with pytest.raises(AudioError):
        embedder.embed_file(tmp_path / "junk.wav")
    path = _write(tmp_path / "ok.wav", _tone(440, 1.0))
    for start, end in ((0.5, 0.5), (-1.0, 0.5), (0.2, 3.0)):
        with pytest.raises(AudioError):
            embedder.embed_file(path, start, end)
    with pytest.raises(ValueError, match="hop"):
        Embedder(tiny_model(), model_id="x", hop_seconds=5.0)


# ------------------------------------------------------------------------------ session head


def test_tag_region_labels_and_scores(tmp_path):
    embedder = _embedder()
    _random_head(embedder.model_id, embedder.dim).save(tmp_path / "models" / "tagger-test")
    path = _write(tmp_path / "clip.wav", np.r_[_tone(220, 2.0), _noise(1.5)])
    result = tag_region(path, model=embedder, top_k=2)
    json.dumps(result)  # plain JSON
    assert result["vocabularies"] == ["session"]
    scores = [t["score"] for t in result["tags"]]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert {t["tag"] for t in result["tags"]} <= {"tone", "noise", "silence"}
    assert all(t["label"] == t["tag"] + "!" for t in result["tags"])
    assert len(result["windows"]) == 3
    # The region score of a tag is its best window score.
    for tag in find_heads(embedder.model_id)[0].classes:
        region = next(
            t["score"] for t in tag_region(path, model=embedder, top_k=3)["tags"] if t["tag"] == tag
        )
        best = max(
            next(t["score"] for t in w["tags"] if t["tag"] == tag) for w in result["windows"]
        )
        assert region == pytest.approx(best, abs=1e-4)
    with pytest.raises(ValueError):
        tag_region(path, model=embedder, top_k=0)
    with pytest.raises(AudioError):
        tag_region(path, 5.0, 6.0, model=embedder)


def test_windows_below_the_silence_level_are_silence_and_nothing_else(tmp_path):
    """A head's silence_dbfs overrides its network on quiet windows only; levels are stored
    per window (and survive the cache)."""
    embedder = _embedder()
    head = _random_head(embedder.model_id, embedder.dim)
    head.silence_dbfs = -66.0
    head.save(tmp_path / "models" / "tagger-test")
    # One window each (windows start every hop and overlap by 15 ms): a tone, digital
    # silence, a noise floor at -80 dBFS RMS.
    hop = embedder.hop_frames * embedder.frontend.frame_shift
    tail = embedder.window_samples - hop
    floor = 10 ** (-80 / 20) * np.random.default_rng(1).standard_normal(hop + tail)
    path = _write(tmp_path / "clip.wav", np.r_[_tone(220, hop / RATE), np.zeros(hop), floor])
    emb = embedder.embed_file(path)
    assert len(emb.levels) == 3 and emb.levels[0] > -20 and emb.levels[1] < -90
    assert emb.levels[2] == pytest.approx(-80, abs=1.5)
    np.testing.assert_array_equal(embedder.embed_file(path).levels, emb.levels)  # cached
    result = tag_region(path, model=embedder, top_k=3)
    loud, silent, quiet = result["windows"]
    for window in (silent, quiet):
        assert window["tags"][0]["tag"] == "silence" and window["tags"][0]["score"] == 1.0
        assert all(t["score"] == 0.0 for t in window["tags"][1:])
    # The loud window is the network's own answer (without the rule: the same numbers).
    plain = head.probabilities(emb.windows[:1])[0]
    for t in loud["tags"]:
        assert t["score"] == pytest.approx(plain[head.classes.index(t["tag"])], abs=1e-4)
    back = TaggerHead.load(tmp_path / "models" / "tagger-test.json")
    assert back.silence_dbfs == -66.0
    # A level without a silence class to give it to is a broken head.
    odd = _random_head(embedder.model_id, embedder.dim, classes=("tone", "noise"))
    odd.silence_dbfs = -66.0
    with pytest.raises(TaggingError, match="silence"):
        odd.validate("odd")


def test_no_vocabulary_and_broken_head_are_clear_errors(tmp_path):
    embedder = _embedder("nobody-trained-for-this")
    path = _write(tmp_path / "clip.wav", _tone(220, 1.0))
    with pytest.raises(TaggingError, match="no tag vocabulary"):
        tag_region(path, model=embedder)
    head = _random_head(embedder.model_id)
    del head.tensors["calib_a"]
    with pytest.raises(TaggingError, match="calib_a"):
        head.validate("test")
    good = _random_head(embedder.model_id)
    good.tensors["w1"] = good.tensors["w1"][:, :5]
    with pytest.raises(TaggingError, match="chain"):
        good.validate("test")


def test_head_save_load_round_trip(tmp_path):
    head = _random_head("enc")
    head.save(tmp_path / "tagger-x")
    back = TaggerHead.load(tmp_path / "tagger-x.json")
    x = np.random.default_rng(1).standard_normal((5, 32)).astype(np.float32)
    np.testing.assert_allclose(head.probabilities(x), back.probabilities(x), rtol=1e-6)
    assert back.classes == head.classes and back.labels == head.labels
    (tmp_path / "tagger-x.json").write_text("{broken")
    with pytest.raises(TaggingError):
        TaggerHead.load(tmp_path / "tagger-x.json")


def test_training_calibrates_and_scores_held_out():
    """train_head on separable synthetic vectors: high held-out top-1, calibrated scores."""
    from maedaw.models.heads import CLASSES

    rng = np.random.default_rng(0)
    c, dim = len(CLASSES), 24
    centers = 3 * rng.standard_normal((c, dim))

    def make(n_per: int) -> LabelledSet:
        y = np.repeat(np.eye(c, dtype=np.float32), n_per, axis=0)
        x = y @ centers + rng.standard_normal((len(y), dim))
        return LabelledSet(x.astype(np.float32), y, [""] * len(y))

    head = train_head(
        {"train": make(30), "val": make(10), "heldout": make(10)},
        "enc",
        hidden=32,
        epochs=80,
        background_per_class=4,
    )
    held = head.info["heldout"]
    assert held["top1"] > 0.95 and held["mAP"] > 0.95 and held["ece"] < 0.1
    # Fitted on train + val; calibrated on logits of rows each cross-fit model never saw.
    assert head.info["crossval"]["single_label_clips"] == 40 * c
    assert head.info["crossval"]["top1"] > 0.95 and head.info["crossval"]["ece"] < 0.1
    assert head.background.shape == (4 * c, dim)
    assert set(held["per_class"]) == set(CLASSES)
    again = evaluate_head(head, make(5))
    assert 0.0 <= again["top1"] <= 1.0
    # Platt scaling keeps the order of scores (a > 0) and fixes a shifted logit.
    z = rng.standard_normal((200, 1)) * 2
    y = (rng.random((200, 1)) < 1 / (1 + np.exp(-(z - 1.0)))).astype(float)
    a, b = platt(z + 3.0, y)
    assert a[0] > 0 and b[0] < -2.0


def test_cross_fitting_keeps_each_group_on_one_side():
    """Labels that only a group's identity gives away (each group: near-copies of one random
    point, a random class) cannot be learnt across groups: the cross-fitted top-1 stays near
    chance, where a row-wise split would score near 1."""
    from maedaw.models.heads import CLASSES

    rng = np.random.default_rng(3)
    c, dim, n_groups, per_group = len(CLASSES), 16, 60, 6
    points = rng.standard_normal((n_groups, dim))
    labels = rng.integers(0, c, n_groups)
    rows = n_groups * per_group
    x = np.repeat(points, per_group, axis=0) + 0.01 * rng.standard_normal((rows, dim))
    y = np.eye(c, dtype=np.float32)[np.repeat(labels, per_group)]
    groups = [f"g{g}" for g in np.repeat(np.arange(n_groups), per_group)]
    half = len(y) // 2
    sets = {
        "train": LabelledSet(x[:half].astype(np.float32), y[:half], [""] * half, groups[:half]),
        "val": LabelledSet(x[half:].astype(np.float32), y[half:], [""] * half, groups[half:]),
    }
    head = train_head(sets, "enc", hidden=64, epochs=400, background_per_class=1)
    assert head.info["crossval"]["top1"] < 0.35
    assert evaluate_head(head, sets["train"])["top1"] > 0.9  # it did learn the rows it saw


# ------------------------------------------------------------------------------ AudioSet


def _official_finetuned_state(num_classes: int = 527) -> dict[str, torch.Tensor]:
    """An official-style finetuned state dict (ViT-S width, one block, 128 x 128 input)."""
    torch.manual_seed(0)
    d, hidden = 384, 1536
    state = {
        "cls_token": torch.zeros(1, 1, d),
        "pos_embed": torch.randn(1, 1 + 8 * 8, d) * 0.02,
        "patch_embed.proj.weight": torch.randn(d, 1, 16, 16) * 0.02,
        "patch_embed.proj.bias": torch.zeros(d),
        "fc_norm.weight": torch.ones(d),
        "fc_norm.bias": torch.zeros(d),
        "head.weight": torch.randn(num_classes, d) * 0.02,
        "head.bias": torch.full((num_classes,), -4.0),
    }
    shapes = {
        "norm1.weight": (d,),
        "norm1.bias": (d,),
        "attn.qkv.weight": (3 * d, d),
        "attn.qkv.bias": (3 * d,),
        "attn.proj.weight": (d, d),
        "attn.proj.bias": (d,),
        "norm2.weight": (d,),
        "norm2.bias": (d,),
        "mlp.fc1.weight": (hidden, d),
        "mlp.fc1.bias": (hidden,),
        "mlp.fc2.weight": (d, hidden),
        "mlp.fc2.bias": (d,),
    }
    for name, shape in shapes.items():
        value = (
            torch.ones(shape)
            if name.endswith("norm1.weight") or name.endswith("norm2.weight")
            else torch.randn(shape) * 0.02
        )
        state[f"blocks.0.{name}"] = value
    state["head.bias"][137 % num_classes] = 6.0  # one class clearly on
    return state


def test_audioset_labels_from_an_official_finetuned_head(tmp_path):
    labels = audioset_labels()
    assert len(labels) == 527 and labels[0] == "Speech" and len(set(labels)) > 500
    model = import_official_state_dict(_official_finetuned_state(), "finetuned")
    assert model.config.num_classes == 527 and model.fc_norm is not None
    save_model(model, tmp_path / "models" / "as-test")  # installed in the user models folder
    path = _write(tmp_path / "clip.wav", _tone(330, 2.0))
    result = tag_region(path, model="as-test", top_k=5)
    assert result["vocabularies"] == ["audioset"]
    assert result["tags"][0]["tag"] == labels[137]
    assert result["tags"][0]["score"] > 0.99
    assert all(t["tag"] in labels and t["source"] == "audioset" for t in result["tags"])
    scores = [t["score"] for t in result["tags"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 5
    # Official pooling (padded window, fc_norm) equals the model's own classify().
    embedder = tagging._cached_embedder("as-test", None)
    assert embedder.pool == "official"
    from maedaw.models.frontend import fit_window, waveform_to_fbank

    fbank, _ = fit_window(
        waveform_to_fbank(torch.from_numpy(_tone(330, 1.0)).float(), embedder.frontend),
        embedder.frontend,
    )
    with torch.no_grad():
        expected = torch.sigmoid(embedder.model.classify(fbank[None])).numpy()
    exact = Embedder(embedder.model, model_id="as-fp32", precision="float32")
    vec = exact.encode(fbank[None], torch.tensor([fbank.shape[0]]))
    got = tagging.audioset_vocabulary(exact).score(vec.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_head_with_unknown_class_count_is_not_used(tmp_path, caplog):
    model = import_official_state_dict(_official_finetuned_state(10), "finetuned")
    embedder = Embedder(model, model_id="ten-classes", precision="float32")
    assert tagging.vocabularies(embedder) == []


# ------------------------------------------------------------------------------ taught tags


def test_taught_tags_round_trip(tmp_path):
    embedder = _embedder()
    hums = [_write(tmp_path / f"hum{i}.wav", _tone(100 + 20 * i, 1.5, seed=i)) for i in range(3)]
    hiss = [_write(tmp_path / f"hiss{i}.wav", _noise(1.5, seed=10 + i)) for i in range(3)]
    library = TagLibrary.open()
    library.teach("hum", hums[:2], embedder)
    library.teach("hiss", hiss[:2], embedder)
    reopened = TagLibrary.open()
    assert [t["name"] for t in reopened.describe()] == ["hiss", "hum"]
    assert reopened.describe()[1]["examples"] == 2
    np.testing.assert_allclose(
        reopened.tags["hum"].vectors["tiny-test"],
        library.tags["hum"].vectors["tiny-test"],
        atol=1e-2,
    )
    for path, expected in ((hums[2], "hum"), (hiss[2], "hiss")):
        result = tag_region(path, model=embedder, top_k=2)
        assert result["vocabularies"] == ["taught"]
        assert result["tags"][0]["tag"] == expected and result["tags"][0]["source"] == "taught"
    # Adding examples keeps the old ones; forgetting removes the tag for good.
    TagLibrary.open().teach("hum", hums[2:], embedder)
    assert TagLibrary.open().describe()[1]["examples"] == 3
    TagLibrary.open().forget("hum")
    assert list(TagLibrary.open()) == ["hiss"]
    with pytest.raises(TagLibraryError, match="no taught tag"):
        TagLibrary.open().forget("hum")


def test_taught_tags_merge_with_the_session_head(tmp_path):
    embedder = _embedder()
    _random_head(embedder.model_id, embedder.dim).save(tmp_path / "models" / "tagger-test")
    hum = _write(tmp_path / "hum.wav", _tone(120, 1.0))
    TagLibrary.open().teach("my hum", [hum], embedder)
    result = tag_region(hum, model=embedder, top_k=4)
    assert result["vocabularies"] == ["session", "taught"]
    assert {t["source"] for t in result["tags"]} == {"session", "taught"}
    assert "my hum" in [t["tag"] for t in result["tags"]]


def test_teach_rejects_bad_input_and_leaves_the_library_alone(tmp_path):
    embedder = _embedder()
    good = _write(tmp_path / "good.wav", _tone(200, 1.0))
    TagLibrary.open().teach("kept", [good], embedder)
    before = (tmp_path / "data" / "tags.json").read_bytes()
    with pytest.raises(AudioError):
        TagLibrary.open().teach("new", [good, tmp_path / "missing.wav"], embedder)
    for name in ("", "a/b", " padded", "x" * 65, "bell\n"):
        with pytest.raises(TagLibraryError):
            TagLibrary.open().teach(name, [good], embedder)
    with pytest.raises(TagLibraryError):
        TagLibrary.open().teach("empty", [], embedder)
    assert (tmp_path / "data" / "tags.json").read_bytes() == before
    (tmp_path / "data" / "tags.json").write_text("not json")
    with pytest.raises(TagLibraryError, match="unreadable"):
        TagLibrary.open()


def test_fit_tags_prototype_fallback_and_probe():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 8)) + 5 * np.eye(8)[0]
    b = rng.standard_normal((4, 8)) + 5 * np.eye(8)[1]
    lone = fit_tags({"a": a})
    assert lone.prototype
    assert lone.probabilities(a).min() > 0.5  # its own examples score above one half
    both = fit_tags({"a": a, "b": b}, background=rng.standard_normal((20, 8)))
    probs = both.probabilities(np.r_[a, b])
    assert np.all(probs[:4, 0] > probs[:4, 1]) and np.all(probs[4:, 1] > probs[4:, 0])


def test_head_hidden_layer_is_the_input_of_its_output_layer():
    head = _random_head("enc")
    t = head.tensors
    x = np.random.default_rng(1).standard_normal((5, head.dim)).astype(np.float32)
    hidden = head.hidden(x)
    np.testing.assert_allclose(hidden, np.maximum(x @ t["w0"].T + t["b0"], 0), rtol=1e-5)
    np.testing.assert_allclose(head.logits(x), hidden @ t["w1"].T + t["b1"], rtol=1e-5)
    assert head.depth == 2 and hidden.min() >= 0 and hidden.max() > 0
    linear = TaggerHead("lin", "enc", ["a"], ["a"], {k: v for k, v in t.items() if k != "w1"})
    linear.tensors["w0"] = t["w0"][:1]
    linear.tensors["b0"] = t["b0"][:1]
    with pytest.raises(TaggingError, match="no hidden layer"):
        linear.hidden(x)


def test_taught_tags_read_the_semantic_layer_they_are_given():
    """Two tags a linear probe on the vector cannot tell apart (loud vs quiet first axis,
    either sign) become separable once a semantic layer carries |x0|."""
    rng = np.random.default_rng(0)

    def draw(n: int, loud: bool) -> np.ndarray:
        x = 0.3 * rng.standard_normal((n, 8)).astype(np.float32)
        x[:, 0] = rng.choice([-1.0, 1.0], n) * (3.0 if loud else 0.2) + 0.1 * x[:, 0]
        return x

    examples = {"loud": draw(10, True), "quiet": draw(10, False)}
    background = draw(20, True) * np.r_[0.0, np.ones(7)].astype(np.float32)  # no x0 at all
    queries = np.r_[draw(200, True), draw(200, False)]
    truth = np.r_[np.zeros(200), np.ones(200)]

    def accuracy(model) -> float:
        best = model.probabilities(queries).argmax(1)
        return float(
            (np.asarray(model.names)[best] == np.where(truth == 0, "loud", "quiet")).mean()
        )

    plain = fit_tags(examples, background)
    semantic = fit_tags(examples, background, semantic=lambda v: np.abs(v[:, :1]))
    assert plain.space(queries).shape == (400, 8)
    assert semantic.space(queries).shape == (400, 9)
    assert accuracy(plain) < 0.8 < 0.95 < accuracy(semantic)


def test_head_inputs_come_from_the_head_with_background():
    assert head_inputs([]) == (None, None)
    bare = _random_head("enc")
    del bare.tensors["background"]
    head = _random_head("enc")
    background, semantic = head_inputs([bare, head])
    assert background is head.background
    x = np.ones((2, head.dim), np.float32)
    np.testing.assert_array_equal(semantic(x), head.hidden(x))


def test_few_shot_accuracy_follows_the_labels():
    rng = np.random.default_rng(0)
    centres = 4.0 * np.eye(6)[:3]
    windows = [
        (centres[k] + 0.3 * rng.standard_normal(6))[None, :] for k in range(3) for _ in range(8)
    ]
    labels = [name for name in "abc" for _ in range(8)]
    assert few_shot_accuracies(windows, labels, None, None, 3, 4, 0) == [1.0] * 4
    shuffled = list(np.random.default_rng(1).permutation(labels))
    assert np.mean(few_shot_accuracies(windows, shuffled, None, None, 3, 4, 0)) < 0.7
    with pytest.raises(ValueError, match="need more than 8"):
        few_shot_accuracies(windows, labels, None, None, 8, 1, 0)


def test_neighbour_precision_counts_the_nearest_others():
    # Two tight pairs far apart: each row's nearest other row shares its label.
    x = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    labels = np.array(["a", "a", "b", "b"])
    every = np.ones(4, bool)
    assert neighbour_precision(x, labels, every, k=1) == 1.0
    assert neighbour_precision(x, labels, every, k=3) == pytest.approx(1 / 3)
    assert neighbour_precision(x, np.array(["a", "b", "a", "b"]), every, k=1) == 0.0
    assert neighbour_precision(x, labels, np.array([True, False, False, False]), k=1) == 1.0


def test_bench_taught_runs_on_a_corpus_layout(tmp_path, capsys):
    """`maedaw bench taught` end to end on a tiny corpus in `corpus tags`'s layout: a head is
    fitted per fold without its classes, and both feature spaces are scored."""
    from maedaw.bridge.cli import main
    from maedaw.models.heads import CLASSES

    save_model(tiny_model(), tmp_path / "models" / "tiny")
    corpus = tmp_path / "tags"
    rows = ["file,split,labels,package,source,group,start_s,duration_s,gain_db,sha256"]
    for k, name in enumerate(CLASSES):
        for split, count in (("train", 3), ("val", 1), ("heldout", 3)):
            for n in range(count):
                file = f"{split}/{name}/{n}.wav"
                (corpus / file).parent.mkdir(parents=True, exist_ok=True)
                _write(corpus / file, _tone(150.0 * (k + 1), 0.6, seed=n))
                rows.append(f"{file},{split},{name},synth,tone,{split}:{name},0,0.6,0,x")
    (corpus / "manifest.csv").write_text("\n".join(rows) + "\n")
    argv = ["bench", "taught", str(corpus), "--model", "tiny", "--shots", "1", "--repeats", "2"]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["novel_classes"]) == 3
    novel = [c for row in result["novel_classes"] for c in row["novel"]]
    assert sorted(novel) == sorted(c for c in CLASSES if c != "silence")
    for row in result["novel_classes"]:
        assert row["clips"] == 3 * len(row["novel"])
        for space in ("vector", "vector + hidden"):
            assert 0.0 <= row[space]["mean"] <= 1.0
            assert 0.0 <= row["neighbours_same_class"][space] <= 1.0
    assert result["sources_as_tags"] is None  # the tiny model has no head of its own
    assert main(argv) == 0 and "never saw" in capsys.readouterr().out
    assert main(["bench", "taught", str(tmp_path / "none"), "--model", "tiny"]) == 1
    assert "error:" in capsys.readouterr().err


# ------------------------------------------------------------------------------ corpus helpers


def test_corpus_rules_and_group_split():
    assert classify_path("hedgewars-data", "/x/Data/Sounds/voices/Pirate/Boom.ogg") == (
        "speech",
        "hedgewars-data:/x/Data/Sounds/voices/Pirate",
    )
    assert classify_path("hedgewars-data", "/x/Data/Sounds/voices/Singer/Boom.ogg") is None
    assert classify_path("megaglest-data", "/t/tilesets/forest/sounds/rain.ogg")[0] == "ambience"
    assert classify_path("megaglest-data", "/t/tilesets/forest/sounds/wolf.wav") is None
    assert classify_path("megaglest-data", "/t/techs/m/units/archer/sounds/archer_ack3.wav") is None
    assert classify_path("wesnoth-1.16-data", "/d/core/sounds/ambient/birds1.ogg")[0] == "ambience"
    assert classify_path("wesnoth-1.16-data", "/d/core/sounds/bow-1.ogg") == (
        "effects",
        "wesnoth-1.16-data:/d/core/sounds/bow",
    )
    assert classify_path("alsa-utils", "/usr/share/sounds/alsa/Noise.wav")[0] == "noise"
    assert classify_path("unknown", "/a.ogg") is None

    groups = {"speech": [f"g{i}" for i in range(20)], "bass": ["p1", "p2", "p3"], "one": ["x"]}
    splits = split_groups(groups, 0.15, 0.2, seed=1)
    assert splits == split_groups(groups, 0.15, 0.2, seed=1)
    for label in ("speech", "bass"):
        assert {splits[(label, g)] for g in groups[label]} == {"train", "val", "heldout"}
    assert splits[("one", "x")] == "train"

    def clip(split, group, source="s"):
        return TagClip("f", split, "speech", "p", source, group, 0, 1, 0, "")

    check_group_split([clip("train", "a"), clip("heldout", "b", "t"), clip("train-mix", "")])
    with pytest.raises(ValueError, match="several splits"):
        check_group_split([clip("train", "a"), clip("val", "a", "t")])


def _midi_messages(track):
    """(absolute tick, bytes) of a delta-timed track."""
    now, out = 0, []
    for delta, data in track:
        now += delta
        out.append((now, data))
    return out


def _nrpn_offsets(messages):
    """Decode CC 99 / 98 / 38 / 6 runs into {generator: offset}, in order."""
    values, out = {}, []
    for _, data in messages:
        if data[0] & 0xF0 == 0xB0 and data[1] in (99, 98, 38, 6):
            values[data[1]] = data[2]
            if data[1] == 6:
                assert values[99] == tag_corpus.NRPN_SOUNDFONT
                out.append((values[98], (values[6] << 7 | values[38]) - 8192))
    return out


def test_variant_track_gives_every_phrase_its_own_timbre():
    import random

    lengths = [3.0, 4.0, 2.5, 5.0, 3.5, 4.5]
    track, words = tag_corpus.variant_track("guitar", 28, lengths, random.Random(0), slot=12.0)
    assert track[0] == (0, bytes((0xC0, 28)))
    messages = _midi_messages(track)
    generators = {gen: (lo, hi) for gen, _, lo, hi, _ in tag_corpus.VARIANT_GENERATORS}
    decoded = _nrpn_offsets(messages)
    # Each phrase sets every generator (zero = reset), so none inherits the last one's.
    assert len(decoded) == len(lengths) * len(generators)
    n = len(generators)
    phrases = [dict(decoded[i : i + n]) for i in range(0, len(decoded), n)]
    assert all(set(p) == set(generators) for p in phrases)
    for p, description in zip(phrases, words, strict=True):
        assert description.split()[0] in tag_corpus.ARTICULATIONS
        for gen, offset in p.items():
            lo, hi = generators[gen]
            assert offset == 0 or lo <= offset <= hi
        named = sum(1 for w in description.split()[1:] if not w.startswith("vibrato"))
        assert named == sum(1 for offset in p.values() if offset)
    assert len({tuple(sorted(p.items())) for p in phrases}) > 1
    # Set-up comes before the phrase's first note, and notes stay inside their slot.
    setup_ticks = [t for t, d in messages if d[0] == 0xB0 and d[1] == 99]
    for k, tick in enumerate(setup_ticks[:: len(generators)]):
        notes = [t for t, d in messages if d[0] == 0x90 and k * 11520 <= t < (k + 1) * 11520]
        assert notes and tick <= min(notes)
        assert max(notes) < (k * 12.0 + lengths[k]) * 960


def test_only_train_and_val_programs_get_variants():
    splits = {("guitar", "gm:guitar/28"): "heldout", ("guitar", "gm:guitar/27"): "val"}
    splits[("bass", "gm:bass/33")] = "train"
    splits[("drums", "gm:drums/0")] = "train"  # drum kits have no variants
    assert tag_corpus.variant_programs(splits) == [("guitar", 27), ("bass", 33)]


def test_variant_offsets_reach_the_synthesiser(tmp_path):
    """fluidsynth honours the NRPN offsets: a shorter release ends the note's tail, a lower
    cutoff darkens it (any installed GM soundfont will do for this check)."""
    from maedaw.corpus.pretrain import midi_file

    fonts = sorted(Path("/usr/share/sounds/sf2").glob("*.sf2"))
    if shutil.which("fluidsynth") is None or not fonts:
        message = "fluidsynth and a GM soundfont are needed (apt install fluidsynth)"
        if os.environ.get("MAEDAW_REQUIRE_REAL_AUDIO") == "1":
            pytest.fail(message)
        pytest.skip(message)

    def render(name, offsets):
        setup = [(0, m) for gen, offset in offsets for m in tag_corpus._nrpn(0, gen, offset)]
        note = [(0, bytes((0x90, 52, 100))), (960, bytes((0x80, 52, 0)))]
        track = [(0, bytes((0xC0, 27))), *setup, *note]
        return tag_corpus._render(midi_file([track]), tmp_path / f"{name}.wav", fonts[0])

    def db(x):
        return 10 * np.log10(np.mean(x**2) + 1e-20)

    plain, short, dark = (
        render("plain", []),
        render("short", [(38, -2400)]),
        render("dark", [(8, -1500)]),
    )
    body, tail = slice(RATE // 10, RATE // 2), slice(int(1.1 * RATE), int(1.6 * RATE))
    assert db(plain[tail]) > -120
    assert db(short[tail]) < db(plain[tail]) - 20
    assert abs(db(short[body]) - db(plain[body])) < 0.5  # release only acts after note-off
    brightness = [db(np.diff(x[body])) - db(x[body]) for x in (plain, dark)]
    assert brightness[1] < brightness[0] - 3


def test_clip_spans_and_levels():
    import random

    rng = random.Random(0)
    assert clip_spans(1000, 5, rng) == []
    assert clip_spans(3 * RATE, 5, rng) == [(0, 3 * RATE)]
    spans = clip_spans(100 * RATE, 5, rng)
    assert len(spans) == 5
    assert all(2 * RATE <= b - a <= 10.255 * RATE + 1 for a, b in spans)
    assert all(b <= c for (_, b), (c, _) in itertools.pairwise(spans))
    x, _gain = set_level(_tone(100, 1.0), -20.0)
    assert 20 * np.log10(np.sqrt(np.mean(x**2))) == pytest.approx(-20.0, abs=0.01)
    loud, _ = set_level(np.r_[np.zeros(999), 1.0], 0.0)
    assert np.max(np.abs(loud)) <= 0.98 + 1e-12


def test_bundled_head_matches_the_bundled_encoder():
    """The shipped head loads offline, names the bundled model and reads its vector size."""
    from maedaw.corpus.vocabulary import BY_ID, TAG_IDS
    from maedaw.models.audiomae import preset
    from maedaw.models.registry import DEFAULT_MODEL, resolve

    encoder_id = json.loads(resolve(DEFAULT_MODEL).with_suffix(".json").read_text())["model_id"]
    (head,) = find_heads(encoder_id)
    config = preset("compact")
    assert head.dim == config.embed_dim * (config.grid_size[1] + 1)
    # The editor's vocabulary of the broad corpus, with its labels.
    assert head.classes == list(TAG_IDS) and head.background.shape[1] == head.dim
    assert head.labels == [BY_ID[t].label for t in TAG_IDS]
    probs = head.probabilities(np.random.default_rng(0).standard_normal((4, head.dim)))
    assert probs.shape == (4, len(TAG_IDS)) and np.all((probs >= 0) & (probs <= 1))
    # The card's numbers travel with it: held-out packages, scored by family.
    assert head.info["split"] == "package" and head.info["heldout"]["single_label_clips"] > 0
    assert 0.0 < head.info["heldout_family"]["top1_family"] <= 1.0


def test_bundled_tagger_calls_digital_silence_silence(tmp_path):
    """Digital silence and a -80 dBFS floor get the one tag their level defines (the v2 head
    had called short digital silence "brass / winds"); a loud tone is not silence."""
    from maedaw.corpus.vocabulary import TAG_IDS
    from maedaw.models.heads import SILENCE_CLASS_DBFS

    every = len(TAG_IDS)
    floor = 10 ** (-80 / 20) * np.random.default_rng(2).standard_normal(RATE)
    for name, x in (("digital", np.zeros(RATE // 2)), ("floor", floor)):
        tags = tag_region(_write(tmp_path / f"{name}.wav", x), top_k=every)["tags"]
        assert tags[0]["tag"] == "silence" and tags[0]["score"] == 1.0
        assert [t["score"] for t in tags[1:]] == [0.0] * (every - 1)
    tone = tag_region(_write(tmp_path / "tone.wav", _tone(440, 2.0)), top_k=every)
    silence = next(t["score"] for t in tone["tags"] if t["tag"] == "silence")
    (head,) = find_heads(tone["model_id"])
    assert silence < 0.5 and head.silence_dbfs == SILENCE_CLASS_DBFS
