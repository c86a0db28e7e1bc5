"""Ardour end to end: a real Ardour 7 session, the scripts' request code under ``ardour7-lua``,
a real ``maedaw serve`` over real UDP, the stem put back into the session and the session
exported with ``ardour7-export``.

Needs Debian's ``ardour`` (``.ci/run`` installs it). Without ``ardour7-lua`` these tests skip,
unless ``MAEDAW_REQUIRE_REAL_AUDIO=1`` (CI), where a missing Ardour fails them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ardour_session import LUA, ArdourSession, have_ardour
from daemon_process import DaemonProcess, token_for

from maedaw.dsp.audio_io import SampleFormat, read_region, write_stem
from maedaw.dsp.damage import insert_dropout
from maedaw.dsp.signals import music_clip

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "ardour_scripts"
HEADLESS = SCRIPTS / "maedaw" / "headless.lua"
STANDIN = Path(__file__).resolve().parent / "ardour_gui_standin.lua"
HELPER = f"{sys.executable} -m maedaw.bridge.cli"  # the `maedaw` command, as this Python runs it
RATE = 48_000
FADE = 64  # Ardour's default region fade-in/out length, in samples


@pytest.fixture(scope="module")
def ardour() -> None:
    if not have_ardour():
        message = "Ardour's command-line tools (ardour7-lua, ...) are missing (apt install ardour)"
        if os.environ.get("MAEDAW_REQUIRE_REAL_AUDIO") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def server(ardour, tmp_path_factory):
    daemon = DaemonProcess(tmp_path_factory.mktemp("daemon") / "state", "--no-tcp")
    yield daemon
    daemon.stop()


def run_headless(session: ArdourSession, port: int, **options: str) -> tuple[list[dict], str]:
    """The headless runner on ``session``: its results (one dict per request) and its output."""
    results = session.folder.parent / f"results-{time.monotonic_ns()}.jsonl"
    args = [f"port={port}", f"helper={HELPER}", f"results={results}", "ping_timeout_s=5"]
    args += [f"token={token_for(port)}"] if token_for(port) else []
    args += [f"{key}={value}" for key, value in options.items()]
    done = session.lua(HEADLESS, *args, timeout=120)
    lines = results.read_text().splitlines() if results.exists() else []
    return [json.loads(line) for line in lines], done.stdout


def damaged_take(
    path: Path, channels: int, seconds: float, seed: int, drops, repeat: int = 1
) -> tuple[Path, np.ndarray]:
    """A music-like take (``seconds`` of music, ``repeat`` times) with digital-silence
    dropouts; returns (file, the clean signal)."""
    clean = np.tile(music_clip(RATE, seconds, channels=channels, seed=seed), repeat)
    damaged = clean.copy()
    for channel, at, length in drops:
        insert_dropout(damaged, channel, at, length)
    fmt = SampleFormat.INT24 if channels == 2 else SampleFormat.INT16
    write_stem(path, damaged, RATE, fmt)
    # the clean signal as the file would hold it (same quantisation) for the energy checks
    write_stem(path.with_name(path.stem + "-clean.wav"), clean, RATE, fmt)
    return path, read_region(path.with_name(path.stem + "-clean.wav")).samples


def written(report: dict) -> list[tuple[int, int, int]]:
    """(channel, first, end) source samples the daemon changed, from the stem's JSON report."""
    return [
        (span["channel"], span["written_start"], span["written_end"])
        for span in report["spans"]
        if span.get("written_start") is not None
    ]


def check_stem(result: dict, clean: np.ndarray, drops) -> np.ndarray:
    """The stem is the region, sample for sample, except around the dropouts, which are
    filled. Returns the stem's samples."""
    source = read_region(result["file"]).samples
    stem = read_region(result["stem"])
    first, count = result["start"], result["length"]
    assert stem.info.sample_rate == RATE
    # aligned sample-exactly: the stem holds exactly the region's samples...
    assert stem.samples.shape == (source.shape[0], count)
    expected = source[:, first : first + count]
    changed = np.zeros(expected.shape, dtype=bool)
    report = json.loads(Path(result["report"]).read_text())
    for channel, lo, hi in written(report):
        # ...changed only next to a dropout we made
        assert any(
            c == channel and at - 480 <= lo and hi <= at + length + 480 for c, at, length in drops
        ), (channel, lo, hi)
        changed[channel, lo - first : hi - first] = True
    assert changed.any()
    np.testing.assert_array_equal(stem.samples[~changed], expected[~changed])
    # ...and the gaps inside the region hold sound again, close to what was lost
    for channel, at, length in drops:
        if first <= at and at + length <= first + count:
            gap = slice(at - first, at - first + length)
            lost = clean[channel, at : at + length]
            got = stem.samples[channel, gap]
            assert np.sqrt(np.mean(got**2)) > 0.3 * np.sqrt(np.mean(lost**2))
            snr = 10 * np.log10(np.sum(lost**2) / np.sum((got - lost) ** 2))
            assert snr > 6.0, f"gap SNR {snr:.1f} dB"
    return stem.samples


def test_repair_regions_in_a_real_session_and_export_the_mix(server, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    session = ArdourSession.create(tmp_path / "session", "album", RATE)

    # Track "Take": one stereo file (both region channels read it). The region plays
    # source samples [24000, 144000) at session sample 48000; a dropout outside it must not
    # be touched (it is not part of the request).
    take_drops = [(0, 60_000, 240), (1, 100_000, 180), (0, 170_000, 200)]
    take, take_clean = damaged_take(media / "take.wav", 2, 4.0, 1, take_drops)
    session.add_tracks(("Take", 2), ("Split", 2))
    session.place("Take", [(take, 0), (take, 1)], 24_000, 120_000, 48_000, "take.1")

    # Track "Split": a stereo region made of two mono files, as Ardour records them:
    # one request per file, both stems placed together.
    left, left_clean = damaged_take(media / "split-L.wav", 1, 3.0, 2, [(0, 40_000, 220)])
    right, right_clean = damaged_take(media / "split-R.wav", 1, 3.0, 3, [(0, 70_000, 160)])
    session.place("Split", [(left, 0), (right, 0)], 12_000, 96_000, 240_000, "split.1")
    sources_before = {p: p.read_bytes() for p in (take, left, right)}

    results, output = run_headless(session, server.port, write_back="1")

    assert [r["state"] for r in results] == ["done"] * 3, output
    by_file = {Path(r["file"]).name: r for r in results}
    assert by_file["take.wav"]["channels"] == [0, 1]
    assert by_file["take.wav"]["position"] == 48_000 and by_file["take.wav"]["start_s"] == 0.5
    assert by_file["split-R.wav"]["region_channels"] == [1]
    take_stem = check_stem(by_file["take.wav"], take_clean, take_drops)
    left_stem = check_stem(by_file["split-L.wav"], left_clean, [(0, 40_000, 220)])
    right_stem = check_stem(by_file["split-R.wav"], right_clean, [(0, 70_000, 160)])
    assert all(p.read_bytes() == data for p, data in sources_before.items())  # never written
    assert all(Path(r["stem"]).parent == session.folder / "maedaw" for r in results)
    assert (
        "Take (maedaw repair)" in session.tracks() and "Split (maedaw repair)" in session.tracks()
    )

    # Put the stems back where their regions play, mute the originals, export the mix.
    for track, files in (("Take", ["take.wav"]), ("Split", ["split-L.wav", "split-R.wav"])):
        placed = [by_file[f] for f in files]
        channels = [(Path(r["stem"]), c) for r in placed for c in range(len(r["channels"]))]
        first = placed[0]
        session.place(
            first["new_track"], channels, 0, first["length"], first["position"], f"{track} repaired"
        )
        session.mute(track)
    mix = read_region(session.export(tmp_path / "mix.wav")).samples

    def interior(samples: np.ndarray, position: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        inner = slice(position + FADE, position + length - FADE)  # past the default fades
        return mix[:, inner], samples[:, FADE:-FADE]

    got, want = interior(take_stem, 48_000, 120_000)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    got, want = interior(np.vstack([left_stem, right_stem]), 240_000, 96_000)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    # the mix holds sound in the former gaps (the originals, muted, would give silence there)
    gap = slice(48_000 + 60_000 - 24_000, 48_000 + 60_000 - 24_000 + 240)
    assert np.sqrt(np.mean(mix[0, gap] ** 2)) > 0.3 * np.sqrt(
        np.mean(take_clean[0, 60_000:60_240] ** 2)
    )
    silent = np.r_[0:48_000, 168_000:240_000]
    assert np.abs(mix[:, silent]).max() == 0.0


@pytest.fixture(scope="module")
def takes(ardour, tmp_path_factory) -> ArdourSession:
    """One session for the tests below: track "Take" (2 s stereo, one dropout), track "Long"
    (30 s stereo, many dropouts: a job that runs long enough to be cancelled) and track "Pair"
    (mono, two regions of one file)."""
    root = tmp_path_factory.mktemp("takes")
    session = ArdourSession.create(root / "session", "takes", RATE)
    take, _ = damaged_take(root / "take.wav", 2, 2.0, 4, [(0, 30_000, 120)])
    session.add_tracks(("Take", 2), ("Long", 2), ("Pair", 1))
    session.place("Take", [(take, 0), (take, 1)], 0, 72_000, 0, "take.1")
    pair, _ = damaged_take(root / "pair.wav", 1, 2.0, 7, [(0, 20_000, 150), (0, 70_000, 150)])
    session.place("Pair", [(pair, 0)], 0, 48_000, 0, "pair.1")
    session.place("Pair", [(pair, 0)], 48_000, 48_000, 96_000, "pair.2")
    drops = [(c, at, 200) for c in (0, 1) for at in range(20_000, 30 * RATE, 9_000)]
    long, _ = damaged_take(root / "long.wav", 2, 2.0, 5, drops, repeat=15)
    session.place("Long", [(long, 0), (long, 1)], 0, 30 * RATE, 0, "long.1")
    return session


def test_restore_gets_the_contracts_answer(server, takes):
    """Restore is sent per the contract; whatever the daemon answers (a stem or its error)
    comes back as such and leaves the session as it should. (Tag: see the tag action test.)"""
    results, output = run_headless(
        takes, server.port, track="Take", write_back="1", kind="restore", op="declip"
    )
    (result,) = results
    new_track = "Take (maedaw declip)" in takes.tracks()
    if result["state"] == "error":  # the daemon's own code and message, passed through
        assert result["code"] in {"unsupported", "bad_request"}, result
        assert result["message"] and result["message"] in output
        assert result.get("stem") is None and not new_track
    else:
        assert result["state"] == "done", result
        assert read_region(result["stem"]).samples.shape == (2, 72_000)
        assert new_track and "declip" in output


def test_cancel_through_luaosc_leaves_no_stem(server, takes):
    """A job cancelled as soon as it is accepted (the /maedaw/cancel goes out signed, through
    the helper) ends as cancelled and leaves no stem behind."""
    results, output = run_headless(takes, server.port, track="Long", cancel_after_accepted="1")

    assert [r["state"] for r in results] == ["cancelled"], output
    assert results[0]["code"] == "cancelled" and results[0]["job_id"]
    assert not list((takes.folder / "maedaw").glob("long.*"))


def test_no_daemon_gives_a_clear_message(takes):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody reads it: the ping gets no answer
        done = subprocess.run(
            [
                LUA,
                str(HEADLESS),
                str(takes.folder),
                takes.name,
                f"port={port}",
                f"helper={HELPER}",
                "ping_timeout_s=1",
                "track=Take",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert "not answering" in done.stdout + done.stderr
    assert "maedaw serve" in done.stdout + done.stderr


# --- the editor actions, with stand-ins for Ardour's GUI objects --------------------------


def run_action(session: ArdourSession, port: int, action: str, **options: str) -> dict:
    """One editor action (ardour_scripts/<action>) on ``session`` under ardour7-lua, with the
    Editor / LuaDialog stand-ins of tests/ardour_gui_standin.lua; returns what they saw."""
    results = session.folder.parent / f"gui-{time.monotonic_ns()}.json"
    args = [f"port={port}", f"helper={HELPER}", "ping_timeout_s=5"]
    args += [f"token={token_for(port)}"] if token_for(port) else []
    args += [f"{key}={value}" for key, value in options.items()]
    command = [LUA, str(STANDIN), str(session.folder), session.name, str(SCRIPTS / action)]
    done = subprocess.run(
        [*command, str(results), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MAEDAW_ARDOUR_SCRIPTS": str(SCRIPTS)},
    )
    assert done.returncode == 0 and results.exists(), done.stdout + done.stderr
    return json.loads(results.read_text())


def test_every_action_has_an_editor_action_header(ardour, tmp_path):
    """Ardour lists a script when its ardour{} header says EditorAction; the library files must
    not have one (the script manager would offer them)."""
    probe = tmp_path / "probe.lua"
    probe.write_text(
        "for k = 1, #arg do\n"
        "  local header\n"
        "  function ardour(t) header = t end\n"
        "  assert(loadfile(arg[k]))()\n"
        "  print(table.concat({arg[k], header and header.type or '-',\n"
        "    header and header.name or '-', type(factory), type(action_params)}, '|'))\n"
        "  header, factory, action_params = nil, nil, nil\n"
        "end\n"
    )
    actions = sorted(SCRIPTS.glob("*.lua"))
    assert [p.name for p in actions] == [
        "maedaw_repair_regions.lua",
        "maedaw_restore_regions.lua",
        "maedaw_tag_regions.lua",
    ]
    done = subprocess.run(
        [LUA, str(probe), *map(str, actions), str(SCRIPTS / "maedaw" / "maedaw_lib.lua")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line.split("|") for line in done.stdout.splitlines() if line.startswith("/")]
    assert len(lines) == 4, done.stdout + done.stderr
    for path, kind, name, factory, params in lines[:3]:
        assert (kind, factory, params) == ("EditorAction", "function", "function"), path
        assert name.startswith("maedaw: ")
    assert lines[3][1:4] == ["-", "-", "nil"]  # the library: no header, no factory


def test_repair_action_embeds_each_stem_at_its_region(server, takes):
    seen = run_action(takes, server.port, "maedaw_repair_regions.lua", select="pair.1,pair.2")

    assert seen["progress_done"] and len(seen["messages"]) == 1, seen
    assert seen["messages"][0]["text"].count("repaired") == 2, seen["messages"]
    first, second = seen["embeds"]
    # one embed per region, at its position; the first makes the new track, the second joins it
    assert (first["position"], second["position"]) == (0, 96_000)
    assert first["mode"] == "ImportAsTrack" and first["track"] == ""
    assert second["mode"] == "ImportToTrack" and second["track"] == "Pair (maedaw repair)"
    assert {first["disposition"], second["disposition"]} == {"ImportMergeFiles"}
    for call, length in ((first, 48_000), (second, 48_000)):
        (stem,) = call["files"]
        assert Path(stem).parent == takes.folder / "maedaw"
        assert read_region(stem).samples.shape == (1, length)
    assert "Pair (maedaw repair)" in seen["tracks"]


def test_tag_action_names_regions_and_marks_them(server, takes):
    # pair.2: no later test selects it (a tag renames the region in the saved session)
    seen = run_action(takes, server.port, "maedaw_tag_regions.lua", select="pair.2")
    (message,) = seen["messages"]
    tagged = [r for r in seen["regions"] if r.startswith("pair.2 [")]
    assert tagged and seen["marks"] == [96_000], (message, seen)  # at the region's position
    assert not seen["embeds"]


def test_restore_dialog_no_selection_and_a_cancelled_job(server, takes):
    seen = run_action(takes, server.port, "maedaw_restore_regions.lua", select="take.1", op="")
    assert seen["dialogs"] == [{"keys": ["op"], "title": "maedaw: restore"}]
    assert not seen["embeds"] and not seen["messages"]  # the user said no: nothing at all
    seen = run_action(takes, server.port, "maedaw_restore_regions.lua", select="no-such-region")
    assert [m["text"] for m in seen["messages"]] == ["Select one or more audio regions first."]
    assert not seen["dialogs"]  # asked before anything else

    # Cancel pressed at once, before the daemon has even accepted the job: the cancel goes out
    # as soon as it has (a repair of 30 s runs long enough to be stopped)
    seen = run_action(takes, server.port, "maedaw_repair_regions.lua", select="long.1", cancel="1")
    (message,) = seen["messages"]
    assert "(cancelled)" in message["text"] and not seen["embeds"], seen
    assert not list((takes.folder / "maedaw").glob("long.repair-*"))
