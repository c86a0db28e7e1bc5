"""Corpus helpers on synthetic inputs (no network, no apt)."""

from __future__ import annotations

import itertools
import wave
from pathlib import Path

import numpy as np
import pytest

from maedaw.corpus import pretrain as corpus
from maedaw.corpus.pretrain import (
    CLIP_SAMPLES,
    MIN_CLIP_SAMPLES,
    Clip,
    Source,
    categorize,
    check_split,
    dedupe,
    midi_file,
    read_manifest,
    select_sources,
    slice_spans,
    split_by_source,
    write_manifest,
    write_wav16,
)
from maedaw.dsp.audio_io import probe, read_region


def _source(i: int, category: str, digest: str | None = None) -> Source:
    digest = digest or f"{i:064x}"
    return Source("pkg", Path(f"/x/{i}.ogg"), f"/{i}.ogg", category, digest)


def test_categorize_rules():
    assert categorize("hedgewars-data", "/usr/share/Data/Sounds/voices/Pirate/Boom.ogg") == "speech"
    assert categorize("hedgewars-data", "/usr/share/Data/Sounds/splash.ogg") == "effects"
    assert categorize("hedgewars-data", "/usr/share/Data/Music/main.ogg") == "music"
    assert categorize("alsa-utils", "/usr/share/sounds/alsa/Front_Left.wav") == "speech"
    assert categorize("alsa-utils", "/usr/share/sounds/alsa/Noise.wav") == "effects"
    assert categorize("hedgewars-data", "/usr/share/Data/Music/readme.txt") is None
    assert categorize("some-other-package", "/music/a.ogg") is None  # not on the allowlist


def test_slice_spans():
    assert slice_spans(MIN_CLIP_SAMPLES - 1, 6) == []
    assert slice_spans(50_000, 6) == [(0, 50_000)]
    # Three clips fit exactly and max is higher: back to back from the start.
    assert slice_spans(3 * CLIP_SAMPLES + 10, 6) == [
        (i * CLIP_SAMPLES, (i + 1) * CLIP_SAMPLES) for i in range(3)
    ]
    # Twenty fit, six wanted: spread over the whole track, no overlap, last one at the end.
    spans = slice_spans(20 * CLIP_SAMPLES, 6)
    assert len(spans) == 6 and spans[0][0] == 0 and spans[-1][1] == 20 * CLIP_SAMPLES
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans))
    assert all(e - s == CLIP_SAMPLES for s, e in spans)


def test_split_by_source_is_per_recording_seeded_and_covers_categories():
    sources = [_source(i, "speech") for i in range(30)] + [
        _source(100 + i, "music") for i in range(5)
    ]
    a = split_by_source(sources, 0.1, seed=7)
    assert a == split_by_source(list(reversed(sources)), 0.1, seed=7)  # order-independent
    assert a != split_by_source(sources, 0.1, seed=8)
    held = {
        c: sum(a[s.sha256] == "heldout" for s in sources if s.category == c)
        for c in ("speech", "music")
    }
    assert held == {"speech": 3, "music": 1}


def test_select_sources_respects_budget():
    sources = [_source(i, "music") for i in range(50)]
    durations = {s.sha256: 30.0 for s in sources}
    chosen = select_sources(sources, durations, {"music": 2.0}, max_clips=6, seed=1)
    assert len(chosen) == 4  # 4 x 30 s = 2 min
    assert chosen == select_sources(sources, durations, {"music": 2.0}, max_clips=6, seed=1)


def test_dedupe_keeps_one_copy():
    a, b = _source(1, "effects", "ab" * 32), _source(2, "effects", "ab" * 32)
    assert len(dedupe([a, b, _source(3, "effects")])) == 2


def test_wav_manifest_round_trip_and_leak_check(tmp_path):
    x = 0.5 * np.sin(np.linspace(0, 200, 16_000))
    digest = write_wav16(tmp_path / "train" / "music" / "a.wav", x)
    assert digest == write_wav16(tmp_path / "again.wav", x)  # byte-reproducible
    info = probe(tmp_path / "train" / "music" / "a.wav")
    assert (info.sample_rate, info.num_channels, info.frames) == (16_000, 1, 16_000)
    back = read_region(tmp_path / "again.wav").samples[0]
    assert np.max(np.abs(back - x)) <= 1 / 32768
    clips = [
        Clip("train/music/a.wav", "train", "music", "pkg", "/a.ogg", "s1", 0.0, 1.0, digest),
        Clip("heldout/music/b.wav", "heldout", "music", "pkg", "/b.ogg", "s2", 0.0, 1.0, digest),
    ]
    write_manifest(tmp_path / "manifest.csv", clips)
    assert sorted(read_manifest(tmp_path / "manifest.csv"), key=lambda c: c.file) == sorted(
        clips, key=lambda c: c.file
    )
    check_split(clips)
    leaked = [
        *clips,
        Clip("train/music/c.wav", "train", "music", "pkg", "/b.ogg", "s2", 10.0, 1.0, digest),
    ]
    with pytest.raises(ValueError, match="both splits"):
        check_split(leaked)


def test_build_corpus_offline(tmp_path, monkeypatch):
    """The whole build on fake packages: split by source, manifest, summary."""
    work = tmp_path / "work"
    root = work / "x" / "hedgewars-data" / "usr" / "share" / "Data"
    rng = np.random.default_rng(0)
    for folder, n, seconds in (
        ("Sounds/voices/A", 12, 1.5),
        ("Music", 3, 25.0),
        ("Sounds", 12, 0.8),
    ):
        for i in range(n):
            path = root / folder / f"f{i}.wav"
            write_wav16(path, 0.1 * rng.standard_normal(int(seconds * 16_000)))
    monkeypatch.setattr(corpus, "fetch_packages", lambda w, p: {"hedgewars-data": {"version": "t"}})
    monkeypatch.setattr(corpus, "synth_speech", lambda w, n, s: [])
    settings = corpus.CorpusSettings(seed=3, heldout_fraction=0.25, max_clips_per_source=2)
    summary = corpus.build_corpus(tmp_path / "out", work, settings, packages=("hedgewars-data",))
    clips = read_manifest(tmp_path / "out" / "manifest.csv")
    check_split(clips)
    assert {c.category for c in clips} == {"speech", "music", "effects"}
    assert {c.split for c in clips if c.category == "music"} == {"train", "heldout"}
    music = [c for c in clips if c.category == "music"]
    assert len(music) == 6 and all(
        c.duration_s == pytest.approx(CLIP_SAMPLES / 16_000) for c in music
    )
    for clip in clips:
        assert (tmp_path / "out" / clip.file).is_file()
        assert clip.file.startswith(f"{clip.split}/{clip.category}/")
    assert summary["sources"]["heldout"] == 3 + 1 + 3
    with wave.open(str(tmp_path / "out" / clips[0].file)) as w:
        assert w.getsampwidth() == 2 and w.getframerate() == 16_000


def test_midi_file_is_well_formed():
    data = midi_file([[(0, b"\x90\x3c\x40"), (480, b"\x80\x3c\x00")]])
    assert data[:4] == b"MThd" and data[14:18] == b"MTrk"
    assert data.endswith(b"\xff\x2f\x00")
    phrase, what = corpus.midi_phrase(__import__("random").Random(1))
    assert phrase.startswith(b"MThd") and "prog=" in what


def test_multichannel_export_keeps_rate_and_channels_of_held_out_stereo(tmp_path):
    from maedaw.dsp.audio_io import SampleFormat, write_stem

    work = tmp_path / "work"
    root = work / "x" / "pkg" / "usr" / "share"
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    left = 0.1 * rng.standard_normal(44_100 * 30)
    write_stem(root / "long.wav", np.stack([left, 0.5 * left]), 44_100, SampleFormat.FLOAT32)
    short = 0.1 * rng.standard_normal((2, 48_000))
    write_stem(root / "short.wav", short, 48_000, SampleFormat.FLOAT32)
    same = np.tile(0.1 * rng.standard_normal(48_000), (2, 1))  # stereo file of a mono sound
    write_stem(root / "same.wav", same, 48_000, SampleFormat.FLOAT32)
    write_stem(root / "train.wav", short, 48_000, SampleFormat.FLOAT32)
    clips = [
        Clip(
            "heldout/music/a.wav", "heldout", "music", "pkg", "/usr/share/long.wav", "1", 0, 1, ""
        ),
        Clip(
            "heldout/music/b.wav", "heldout", "music", "pkg", "/usr/share/long.wav", "1", 9, 1, ""
        ),
        Clip(
            "heldout/speech/c.wav",
            "heldout",
            "speech",
            "pkg",
            "/usr/share/short.wav",
            "2",
            0,
            1,
            "",
        ),
        Clip(
            "heldout/speech/d.wav", "heldout", "speech", "pkg", "/usr/share/same.wav", "3", 0, 1, ""
        ),
        Clip(
            "heldout/speech/e.wav", "heldout", "speech", "synth", "synth/x.wav voice", "4", 0, 1, ""
        ),
        Clip("train/speech/f.wav", "train", "speech", "pkg", "/usr/share/train.wav", "5", 0, 1, ""),
    ]
    (tmp_path / "corpus").mkdir()
    write_manifest(tmp_path / "corpus" / "manifest.csv", clips)
    out = tmp_path / "multi"
    counts = corpus.export_multichannel(tmp_path / "corpus", work, out)
    assert counts == {"music": 3, "speech": 1}
    excerpts = sorted((out / "music").iterdir())
    assert [p.name for p in excerpts] == [f"pkg-long-{i}.wav" for i in range(3)]
    first = read_region(excerpts[0])
    assert (first.info.sample_rate, first.info.num_channels) == (44_100, 2)
    assert first.samples.shape[1] == 441_000
    np.testing.assert_allclose(
        first.samples[0], left[round(0.3 * left.size) :][:441_000], atol=1e-7
    )
    speech = read_region(out / "speech" / "pkg-short.wav")
    assert speech.info.sample_rate == 48_000
    np.testing.assert_allclose(speech.samples, short, atol=1e-7)


def test_multichannel_export_refuses_a_folder_that_is_no_corpus(tmp_path):
    from maedaw.dsp.audio_io import AudioError

    with pytest.raises(AudioError, match=r"no manifest\.csv"):
        corpus.export_multichannel(tmp_path, tmp_path, tmp_path / "out")
    write_manifest(tmp_path / "manifest.csv", [])
    with pytest.raises(AudioError, match="unpacked packages"):
        corpus.export_multichannel(tmp_path, tmp_path / "nowhere", tmp_path / "out")
