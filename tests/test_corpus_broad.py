"""The broad labelled corpus (``maedaw corpus build``), the augmentation chain, and the
package-disjoint tagging benchmark on it, all on fake packages (no download, no espeak)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from maedaw.corpus import broad, pretrain
from maedaw.corpus.broad import BroadClip, BroadSettings, build_broad_corpus, read_broad_manifest
from maedaw.corpus.pretrain import write_wav16
from maedaw.dsp.augment import augment

# (package, path pattern, files, seconds): speech in three packages (two voice packs in one),
# music in two, so the package-disjoint split can hold out one package of each family.
FAKE = (
    ("hedgewars-data", "/usr/share/games/hedgewars/Data/Sounds/voices/Default/v{i}.wav", 8, 2.0),
    ("hedgewars-data", "/usr/share/games/hedgewars/Data/Sounds/voices/Pirate/v{i}.wav", 8, 2.0),
    ("hedgewars-data", "/usr/share/games/hedgewars/Data/Music/m{i}.wav", 2, 24.0),
    ("wesnoth-1.16-music", "/usr/share/games/wesnoth/1.16/data/core/music/t{i}.wav", 1, 24.0),
    ("openarena-data", "/usr/share/games/openarena/baseoa/sound/voices/Sarge/s{i}.wav", 4, 2.0),
)
PACKAGES = sorted({p for p, *_ in FAKE})
SMALL = BroadSettings(seed=5, noise_clips=3, silence_clips=2, max_clips_per_file=3)


def _fake_work(work: Path) -> None:
    rng = np.random.default_rng(0)
    for package, pattern, count, seconds in FAKE:
        for i in range(count):
            path = work / "x" / package / pattern.format(i=i).lstrip("/")
            tone = np.sin(
                2 * np.pi * rng.uniform(100, 2000) * np.arange(int(seconds * 16_000)) / 16_000
            )
            write_wav16(path, 0.1 * tone + 0.02 * rng.standard_normal(tone.size))


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(
        pretrain, "fetch_packages", lambda work, packages: {p: {} for p in packages}
    )
    monkeypatch.setattr(broad, "synth_speech", lambda work, count, seed: [])


def _build(tmp_path: Path, name: str) -> tuple[dict, list[BroadClip]]:
    summary = build_broad_corpus(tmp_path / name, tmp_path / "work", SMALL, packages=PACKAGES)
    return summary, read_broad_manifest(tmp_path / name / "manifest.csv")


def test_build_holds_out_whole_packages_and_groups(tmp_path, offline):
    _fake_work(tmp_path / "work")
    summary, clips = _build(tmp_path, "out")
    broad.check_roles(clips)  # no package / group / recording on both sides
    held = summary["heldout_packages"]
    assert held and set(held) < set(PACKAGES)
    for clip in clips:
        assert (clip.package in held) == (clip.split("package") == "heldout")
        folder = f"synth-{clip.package}" if clip.synthetic else clip.package
        assert clip.file.startswith(f"{clip.role}/{folder}/")
        assert 0.25 <= clip.duration_s <= 10.255 + 1e-9
        assert (tmp_path / "out" / clip.file).is_file()
    real = [c for c in clips if not c.synthetic]
    assert {c.split("source") for c in real} == {"train", "heldout"}
    # Synthesised noise / silence: training only, in every split.
    synthetic = [c for c in clips if c.synthetic]
    assert {c.tags for c in synthetic} == {"noise", "silence"} and len(synthetic) == 5
    assert all(c.role == "train" for c in synthetic)
    assert summary["splits"]["package"]["heldout"]["clips"] == sum(
        1 for c in real if c.split("package") == "heldout"
    )
    # Parents travel with the tag (openarena's male voices are speech too).
    assert {"speech", "speech_male"} <= set(next(c for c in real if "Sarge" in c.source).tag_list)
    # Class folders of the held-out packages' real clips, for bench repair / bench tag.
    counts = broad.export_folders(tmp_path / "out", tmp_path / "held", "package", "heldout")
    held_real = [c for c in real if c.split("package") == "heldout"]
    assert sum(counts.values()) == len(held_real)
    linked = sorted((tmp_path / "held").rglob("*.wav"))
    assert len(linked) == len(held_real) and all(p.resolve().is_file() for p in linked)
    assert {p.parent.name for p in linked} == {c.families.split(";")[0] for c in held_real}


def test_build_is_reproducible(tmp_path, offline):
    _fake_work(tmp_path / "work")
    _build(tmp_path, "a")
    _build(tmp_path, "b")
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (
        tmp_path / "b" / "manifest.csv"
    ).read_bytes()


def test_check_roles_catches_a_group_on_both_sides():
    def clip(name: str, role: str, group: str) -> BroadClip:
        return BroadClip(name, role, "speech", "speech", "p", name, group, "", 0, 0.0, 1.0, "")

    broad.check_roles([clip("a", "train", "g1"), clip("b", "heldout-source", "g2")])
    with pytest.raises(ValueError, match="groups straddle the source split"):
        broad.check_roles([clip("a", "train", "g1"), clip("b", "heldout-source", "g1")])


def test_augment_keeps_length_and_level_and_is_seeded():
    rng = np.random.default_rng(0)
    x = 0.1 * np.sin(2 * np.pi * 440 * np.arange(32_000) / 16_000) + 0.01 * rng.standard_normal(
        32_000
    )
    changed = 0
    for seed in range(12):
        y, chain = augment(x, 16_000, np.random.default_rng(seed))
        again, _ = augment(x, 16_000, np.random.default_rng(seed))
        assert y.shape == x.shape and np.isfinite(y).all()
        np.testing.assert_array_equal(y, again)
        assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-6)
        changed += chain != "none" and not np.allclose(y, x)
    assert changed >= 9  # most draws do something
    silent, chain = augment(np.zeros(16_000), 16_000, np.random.default_rng(1))
    assert chain == "none" and not silent.any()


def test_balanced_caps_tags_and_spreads_over_groups():
    from maedaw.benchmarks.generalise import balanced

    def clip(i: int, group: str, tags: str) -> BroadClip:
        return BroadClip(f"f{i:03d}", "train", tags, "x", "p", "", group, "", 0, 0.0, 1.0, "")

    clips = [clip(i, "big", "speech") for i in range(50)]
    clips += [clip(100 + i, f"small{i}", "speech") for i in range(3)]
    clips += [clip(200 + i, "g", "door") for i in range(4)]
    picked = balanced(clips, per_tag=6, seed=0)
    speech = [c for c in picked if c.tags == "speech"]
    assert len(speech) == 6
    assert {c.group for c in speech} == {"big", "small0", "small1", "small2"}  # round-robin
    assert sum(c.tags == "door" for c in picked) == 4  # fewer than the cap: all of them
    assert picked == balanced(clips, per_tag=6, seed=0)


def test_bench_generalise_end_to_end(tmp_path, offline, private_user_dirs):
    """Tiny model on the fake corpus: it runs, scores only real held-out clips of held-out
    packages, writes a head over the tags it trained on, and the numbers are in range."""
    from tiny_models import tiny_model

    from maedaw.benchmarks.generalise import bench_generalise
    from maedaw.models.embed import Embedder
    from maedaw.models.heads import TaggerHead

    _fake_work(tmp_path / "work")
    summary, _ = _build(tmp_path, "out")
    embedder = Embedder(tiny_model(), model_id="tiny", precision="float32")
    result = bench_generalise(
        tmp_path / "out",
        embedder,
        "package",
        per_tag=20,
        heldout_per_tag=20,
        copies=1,
        hidden=16,
        epochs=20,
        shots=2,
        repeats=2,
        save_head=tmp_path / "head",
    )
    assert result["heldout_packages"] == summary["heldout_packages"]
    assert result["train_vectors"] == 2 * result["train_clips"]  # one augmented copy each
    assert 0.0 <= result["top1_family"] <= 1.0 and 0.0 <= result["ece"] <= 1.0
    head = TaggerHead.load(tmp_path / "head")
    assert head.classes == result["classes"] and "speech" in head.classes
    with open(tmp_path / "out" / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    held = [r for r in rows if r["role"] in ("heldout-package", "heldout-both")]
    assert result["heldout_clips"] == len(held)  # all of them: fewer than the caps


def test_window_spans_use_the_whole_recording():
    window = round(10.255 * 16_000)
    spans = broad.window_spans(2 * window + 8_000, max_clips=10)
    assert spans == [(0, window), (window, 2 * window), (2 * window, 2 * window + 8_000)]
    assert broad.window_spans(window + 100, 10) == [(0, window)]  # a 6 ms rest is dropped
    assert broad.window_spans(3_000, 10) == []  # under 0.25 s: nothing
    long = broad.window_spans(100 * window, max_clips=5)
    assert len(long) == 5 and long[0] == (0, window) and long[-1][1] == 100 * window


def test_augmented_copies_are_seeded_and_cached(tmp_path, monkeypatch, private_user_dirs):
    """The same clip, seed and copy number give the same vector, the second time from the
    embedding cache; another seed gives another chain."""
    from tiny_models import tiny_model

    from maedaw.models.embed import Embedder
    from maedaw.models.tagger_train import ClipRow, embed_rows

    rng = np.random.default_rng(3)
    write_wav16(tmp_path / "c" / "a.wav", 0.1 * rng.standard_normal(40_000))
    rows = [ClipRow("a.wav", ("noise",), "g")]
    embedder = Embedder(tiny_model(), model_id="tiny", precision="float32")
    first = embed_rows(tmp_path / "c", rows, ["noise"], embedder, copies=2, seed=1)
    assert len(first.targets) == 3 and not np.allclose(first.vectors[1], first.vectors[2])

    def no_encoding(*args, **kwargs):
        raise AssertionError("should come from the cache")

    monkeypatch.setattr(Embedder, "_embed_stream", no_encoding)
    again = embed_rows(tmp_path / "c", rows, ["noise"], embedder, copies=2, seed=1)
    np.testing.assert_array_equal(again.vectors, first.vectors)
    assert again.files == first.files  # the chain descriptions too
    monkeypatch.undo()
    other = embed_rows(tmp_path / "c", rows, ["noise"], embedder, copies=1, seed=2)
    assert not np.allclose(other.vectors[1], first.vectors[1])
