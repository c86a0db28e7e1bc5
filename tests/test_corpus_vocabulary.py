"""corpus.vocabulary (tags, path rules, keywords) and corpus.survey (listening statistics,
splits, the survey of a small work folder built in the test)."""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from maedaw.corpus import survey as sv
from maedaw.corpus import vocabulary as vocab
from maedaw.corpus.pretrain import write_wav16

# A corpus work folder with the packages unpacked (maedaw corpus build --work ...), if any.
REAL = Path(os.environ.get("MAEDAW_CORPUS_WORK", "/nonexistent"))


def test_vocabulary_has_25_plus_tags_in_known_families():
    assert len(vocab.TAGS) >= 25
    assert len(set(vocab.TAG_IDS)) == len(vocab.TAGS)
    for tag in vocab.TAGS:
        assert tag.family in vocab.FAMILIES
        if tag.parent:
            assert vocab.BY_ID[tag.parent].family == tag.family
    assert set(vocab.FAMILIES) == {t.family for t in vocab.TAGS}


def test_every_rule_is_well_formed():
    keyword_tags = {t for kw in (*vocab.KEYWORD_SETS.values(), vocab.DRUM_KEYWORDS) for t in kw}
    assert keyword_tags <= set(vocab.TAG_IDS)
    for package, rules in vocab.PACKAGE_RULES.items():
        for rule in rules:
            re.compile(rule.pattern)
            assert set(rule.tags) <= set(vocab.TAG_IDS), (package, rule)
            assert rule.keywords in ("", "effects", "instruments", "drums"), (package, rule)
            assert rule.group in ("file", "dir", "stem", "up2") or rule.group.startswith("re:")
    table = vocab.rules_markdown()
    assert all(f"| {p} |" in table for p in vocab.PACKAGE_RULES)


def test_tokens_split_case_digits_and_punctuation():
    assert vocab.tokens("WilhelmScream_01") == "wilhelm scream 01"
    assert vocab.tokens("foley_foot_left-01.wv") == "foley foot left 01 wv"
    assert vocab.tokens("fire1") == "fire 1"
    assert vocab.tokens("LRFactory_noise") == "lr factory noise"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("wp_gun_fire-01", ("weapon",)),  # a shot, not flames
        ("car_crash", ("impact", "vehicle")),
        ("campfire", ("fire",)),
        ("alienwind", ("wind",)),
        ("window-opening", ("door",)),  # not wind
        ("birds1", ("animals",)),
        ("machine_die1", ("machine",)),  # a machine does not die with a voice
        ("LRFactory_noise_01_LA", ("machine",)),
        ("bar-x-gr0", ()),
    ],
)
def test_keyword_tags(name, expected):
    assert vocab.keyword_tags(name) == expected


def test_drum_keywords_and_parents():
    assert vocab.keyword_tags("00-kick", "drums") == ("kick",)
    assert vocab.keyword_tags("Closed HH", "drums") == ("hihat",)
    assert vocab.keyword_tags("ride-crash20inch", "drums") == ("cymbal",)
    assert vocab.keyword_tags("Tom Low", "drums") == ("tom",)
    assert vocab.keyword_tags("Cowbell", "drums") == ()
    assert vocab.expand(["kick", "speech_female"]) == ("speech", "speech_female", "drums", "kick")


def test_label_path_examples():
    label = vocab.label_path(
        "hedgewars-data", "/usr/share/games/hedgewars/Data/Sounds/voices/Default_pl/Hello.ogg"
    )
    assert label.tags == ("speech",) and label.lang == "pl"
    assert label.group == "hedgewars-data:/usr/share/games/hedgewars/Data/Sounds/voices/Default_pl"

    kit = "/usr/share/hydrogen/data/drumkits/GMkit/drumkit.xml/00-kick/kick_dry.flac"
    label = vocab.label_path("hydrogen-drumkits", kit)
    assert label.tags == ("drums", "kick") and label.group == "hydrogen-drumkits:GMkit"
    plain = vocab.label_path("hydrogen-drumkits", "/usr/share/hydrogen/data/drumkits/GMkit/k.wav")
    assert plain.excluded and plain.tags == ()

    step = "/usr/share/games/openarena/baseoa/pak0.pk3/sound/player/footsteps/splash1.wav"
    assert vocab.label_path("openarena-data", step).tags == ("footsteps", "water")
    shot = "/usr/share/games/teeworlds/data/audio/wp_gun_fire-01.wv.wav"
    assert vocab.label_path("teeworlds-data", shot).tags == ("weapon",)
    piano = "/usr/share/midi/freepats/Tone_000/000_Acoustic_Grand_Piano.pat.wav"
    assert vocab.label_path("freepats", piano).tags == ("keys",)
    cs = "/usr/share/games/fillets-ng/sound/atlantis/cs/sp-m-costim.ogg"
    label = vocab.label_path("fillets-ng-data-cs", cs)
    assert label.tags == ("speech",) and label.lang == "cs" and label.group.endswith(":m")
    missed = vocab.label_path("wesnoth-1.16-data", "/usr/share/games/wesnoth/1.16/sounds/join.wav")
    assert missed is not None and missed.tags == () and not missed.excluded
    assert vocab.label_path("no-such-package", "/a.wav") is None


# --------------------------------------------------------------------------------------------
# Survey


def test_listening_stats_tell_tone_noise_and_clicks_apart():
    rate = 16_000
    t = np.arange(3 * rate) / rate
    voice_like = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6)) * 0.2
    noise = np.random.default_rng(0).standard_normal(3 * rate) * 0.1
    clicks = np.zeros(3 * rate)
    clicks[:: rate // 4] = 0.9  # 4 clicks a second
    tone, hiss, tick = (sv.listening_stats(x) for x in (voice_like, noise, clicks))
    assert tone["centroid_hz"] < 1000 < hiss["centroid_hz"]
    assert tone["voiced_fraction"] > 0.9 > 0.1 > hiss["voiced_fraction"]
    assert tone["zcr"] < hiss["zcr"]
    assert tick["crest_db"] > 15 > hiss["crest_db"]
    assert 3.0 <= tick["onsets_per_s"] <= 4.5
    assert sv.listening_stats(np.zeros(100))["rms_dbfs"] == -240.0


def test_package_split_holds_out_whole_packages_per_family():
    hours = {
        "a": {"speech": 5.0, "effects": 1.0},
        "b": {"speech": 1.0},
        "c": {"music": 4.0, "effects": 3.0},
        "d": {"music": 1.0, "effects": 1.0},
        "f": {"music": 2.0, "effects": 0.2},
        "e": {"noise": 0.5},  # the only noise package: nothing to hold out
    }
    held = sv.package_split(hours, seed=3)
    assert held == sv.package_split(hours, seed=3)
    for family in ("speech", "music", "effects"):
        holders = [p for p in hours if hours[p].get(family)]
        assert any(p in held for p in holders), family
        total = sum(hours[p].get(family, 0.0) for p in hours)
        assert 0.05 <= sum(hours[p].get(family, 0.0) for p in held) / total <= 0.35
    assert "e" not in held


def tone(tmp_path: Path, name: str, freq: float, seconds: float) -> bytes:
    path = tmp_path / name
    t = np.arange(round(seconds * 16_000)) / 16_000
    write_wav16(path, 0.3 * np.sin(2 * np.pi * freq * t))
    return path.read_bytes()


def small_work(tmp_path):
    """A work folder with an OpenArena pk3 (footsteps, weapons, a duplicate, an unlabelled
    file) and a Wesnoth music folder (one WAV, one undecodable 'ogg')."""
    work = tmp_path / "work"
    root = work / "x" / "openarena-data" / "usr" / "share" / "games" / "openarena" / "baseoa"
    root.mkdir(parents=True)
    with zipfile.ZipFile(root / "pak0.pk3", "w") as pk3:
        for i in range(4):
            pk3.writestr(f"sound/player/footsteps/step{i}.wav", tone(tmp_path, "s.wav", 200 + i, 1))
        pk3.writestr("sound/weapons/rocket/rocket_explode.wav", tone(tmp_path, "r.wav", 90, 2))
        pk3.writestr("sound/weapons/shotgun/sshotf1b.wav", tone(tmp_path, "g.wav", 95, 2))
        pk3.writestr("sound/world/zzz.wav", tone(tmp_path, "z.wav", 300, 1))  # no keyword
        pk3.writestr("sound/weapons/shotgun/copy.wav", tone(tmp_path, "s.wav", 200, 1))  # = step0
    music = work / "x" / "wesnoth-1.16-music" / "usr" / "share" / "music"
    music.mkdir(parents=True)
    (music / "theme.ogg").write_bytes(b"not audio at all")
    (music / "battle.wav").write_bytes(tone(tmp_path, "m.wav", 440, 3))
    return work


def test_survey_of_a_small_work_folder(tmp_path):
    result = sv.survey(small_work(tmp_path), audit_per_tag=2, seed=1)
    oa = result["packages"]["openarena-data"]
    assert (oa["files"], oa["labelled"], oa["duplicates"], oa["unlabelled_count"]) == (8, 6, 1, 1)
    assert result["packages"]["wesnoth-1.16-music"]["undecodable_count"] == 1
    assert result["tags"]["footsteps"]["files"] == 4
    assert result["tags"]["footsteps"]["groups"] == 1
    assert result["tags"]["weapon"]["hours"] == pytest.approx(4 / 3600, abs=1e-4)
    assert result["tags"]["explosion"]["files"] == 1
    assert result["total_hours"] == pytest.approx(11 / 3600, abs=1e-3)
    assert result["audit"]["footsteps"]["n"] == 2
    assert result["audit"]["footsteps"]["median"]["centroid_hz"] < 1000
    for split in result["splits"].values():
        hours = split["hours"]
        for family in vocab.FAMILIES:
            total = hours["train"][family] + hours["heldout"][family]
            assert total == pytest.approx(sum(
                e["seconds"] for e in result["entries"]
                if family in {vocab.family_of(t) for t in e["tags"]}
            ) / 3600, abs=2e-3)  # fmt: skip
    text = sv.survey_markdown(result)
    assert "| `footsteps` | effects | 4 |" in text and "theme.ogg" in text


@pytest.mark.skipif(not REAL.is_dir(), reason="MAEDAW_CORPUS_WORK unset")
def test_real_rules_label_most_audio():
    from maedaw.corpus.sources import package_files

    files = package_files(REAL, "hedgewars-data")
    labels = [vocab.label_path("hedgewars-data", f.relpath) for f in files]
    assert sum(1 for lab in labels if lab and lab.tags) > 0.9 * len(files)


def test_corpus_survey_command(tmp_path, capsys):
    from maedaw.bridge.cli import main

    work, table = small_work(tmp_path), tmp_path / "survey.md"
    assert main(["corpus", "survey", str(work), "--markdown", str(table), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tags"]["footsteps"]["files"] == 4
    text = table.read_text()
    assert "| `footsteps` | effects | 4 |" in text and "## The mapping" in text


def test_every_package_the_rules_name_is_allowlisted_and_no_other_is_fetched(tmp_path):
    from maedaw.corpus.pretrain import DEBIAN_ALLOWLIST, fetch_packages

    assert set(vocab.PACKAGE_RULES) <= DEBIAN_ALLOWLIST
    with pytest.raises(ValueError, match="not on the corpus allowlist"):
        fetch_packages(tmp_path, ["vorbis-tools"])
    assert not (tmp_path / "debs").exists() or not any((tmp_path / "debs").iterdir())
