"""corpus.sources and corpus.gus: containers built in the test, no real package needed
(the real-package checks skip unless MAEDAW_CORPUS_WORK names an unpacked work folder)."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from maedaw.corpus import gus, sources
from maedaw.corpus.pretrain import write_wav16
from maedaw.dsp.audio_io import probe

# A corpus work folder with the packages unpacked (maedaw corpus build --work ...), if any.
REAL = Path(os.environ.get("MAEDAW_CORPUS_WORK", "/nonexistent"))


def wav_bytes(tmp_path: Path, seconds: float = 0.5, freq: float = 440.0) -> bytes:
    path = tmp_path / f"tone-{freq:g}-{seconds:g}.wav"
    t = np.arange(round(seconds * 16_000)) / 16_000
    write_wav16(path, 0.3 * np.sin(2 * np.pi * freq * t))
    return path.read_bytes()


def make_zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def make_rcc(files: dict[str, bytes], version: int = 2, compress: tuple[str, ...] = ()) -> bytes:
    """A Qt resource file laid out as rcc writes it: nodes breadth-first (a directory's
    children contiguous), then the names and the payload sections."""
    tree: dict = {}
    for path, data in files.items():
        *dirs, leaf = path.split("/")
        node = tree
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = (path, data)
    names, payload, tree_bytes = bytearray(), bytearray(), bytearray()
    pad = b"" if version == 1 else bytes(8)  # version 2+: a modification time per node
    nodes: list[tuple[str, object]] = [("", tree)]
    index = 0
    while index < len(nodes):
        name, content = nodes[index]
        name_at = len(names)
        names.extend(struct.pack(">HI", len(name), 0) + name.encode("utf-16-be"))
        if isinstance(content, dict):
            first = len(nodes)
            nodes.extend(sorted(content.items()))
            record = struct.pack(">IHII", name_at, sources.RCC_DIRECTORY, len(content), first)
        else:
            path, data = content
            flags = 0
            if path in compress:
                data, flags = struct.pack(">I", len(data)) + zlib.compress(data), 1
            record = struct.pack(">IHHHI", name_at, flags, 0, 0, len(payload))
            payload.extend(struct.pack(">I", len(data)) + data)
        tree_bytes.extend(record + pad)
        index += 1
    header = 20 if version < 3 else 24
    names_at = header + len(tree_bytes)
    data_at = names_at + len(names)
    head = struct.pack(">4sIIII", b"qres", version, header, data_at, names_at)
    head += struct.pack(">I", 0) if version >= 3 else b""
    return head + bytes(tree_bytes) + bytes(names) + bytes(payload)


def make_cat(entries: list[tuple[str, bytes]]) -> bytes:
    table = 8 * len(entries)
    body = bytearray()
    offsets = []
    for name, data in entries:
        raw = name.encode() + b"\0"
        offsets.append((table + len(body), 1 + len(raw) + len(data)))
        body.extend(bytes([len(raw)]) + raw + data)
    head = b"".join(
        struct.pack("<II", off | (0x80000000 if i == 0 else 0), size)
        for i, (off, size) in enumerate(offsets)
    )
    return head + bytes(body)


# --------------------------------------------------------------------------------------------


def test_zip_audio_yields_only_audio_members(tmp_path):
    data = make_zip({"sound/a.wav": b"A", "readme.txt": b"x", "music/b.OGG": b"B"})
    assert list(sources.zip_audio(data)) == [("sound/a.wav", b"A"), ("music/b.OGG", b"B")]


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rcc_entries_reads_nested_and_compressed_files(version):
    files = {
        "gcompris/src/core/resource/intro.ogg": b"OggS-intro",
        "gcompris/src/core/resource/sounds/bleep.wav": b"RIFF-bleep" * 20,
        "gcompris/qmldir": b"module",
    }
    data = make_rcc(files, version, compress=("gcompris/src/core/resource/sounds/bleep.wav",))
    assert sources.rcc_entries(data) == dict(sorted(files.items()))


def test_rcc_entries_refuses_other_files():
    with pytest.raises(ValueError, match="qres"):
        sources.rcc_entries(b"PK\x03\x04" + bytes(20))


def test_cat_entries_titles_and_riff_payloads():
    data = make_cat(
        [
            ('"Explosion". By someone. License: CC0.', b"RIFF1234WAVEdata"),
            ("no quotes here", b"RIFF5678WAVEdata"),
        ]
    )
    assert sources.cat_entries(data) == [
        ("Explosion", b"RIFF1234WAVEdata"),
        ("no quotes here", b"RIFF5678WAVEdata"),
    ]


def test_slug():
    assert sources.slug("Toyland: Bubble plop") == "toyland-bubble-plop"
    assert sources.slug("???") == "unnamed"


def test_drumkit_instruments_namespaced():
    xml = """<?xml version="1.0"?>
    <drumkit_info xmlns="http://www.hydrogen-music.org/drumkit"><name>Kit</name>
    <instrumentList>
      <instrument><id>0</id><name>Kick</name><layer><filename>k1.wav</filename></layer>
        <layer><filename>k2.wav</filename></layer></instrument>
      <instrument><id>1</id><name>Empty</name></instrument>
      <instrument><id>2</id><name>Closed HH</name><filename>hh.flac</filename></instrument>
    </instrumentList></drumkit_info>"""
    assert sources.drumkit_instruments(xml) == [
        ("Kick", ["k1.wav", "k2.wav"]),
        ("Closed HH", ["hh.flac"]),
    ]


def test_member_path_refuses_climbing_out(tmp_path):
    with pytest.raises(ValueError):
        sources._member_path(tmp_path, "/a.zip", "../../etc/passwd")


def test_extract_package_end_to_end_and_idempotent(tmp_path, monkeypatch):
    work = tmp_path / "work"
    pkg = work / "x" / "pkg" / "usr" / "share" / "game"
    pkg.mkdir(parents=True)
    tone = wav_bytes(tmp_path)
    (pkg / "pak0.pk3").write_bytes(make_zip({"sound/player/footsteps/step1.wav": tone}))
    (pkg / "res.rcc").write_bytes(make_rcc({"res/sounds/bleep.wav": tone}))
    (pkg / "sfx.cat").write_bytes(make_cat([('"Big crash". By x.', tone), ('"Empty"', tone[:44])]))
    kit = pkg / "drumkits" / "Kit"
    kit.mkdir(parents=True)
    (kit / "k1.wav").write_bytes(tone)
    (kit / "drumkit.xml").write_text(
        "<drumkit_info><instrument><name>Kick 1</name><filename>k1.wav</filename>"
        "</instrument><instrument><name>Gone</name><filename>gone.wav</filename>"
        "</instrument></drumkit_info>"
    )
    (pkg / "plain.wav").write_bytes(tone)
    (pkg / "odd.wv").write_bytes(b"wvpk")
    monkeypatch.setattr(sources.shutil, "which", lambda name: None)  # no decoders installed

    report = sources.extract_package(work, "pkg")
    assert report.written == 4
    assert report.missing_decoders == {"wvunpack (wavpack)": 1}
    assert list(report.failed) == ["/usr/share/game/drumkits/Kit/drumkit.xml/gone.wav"]
    rels = [f.relpath for f in sources.package_files(work, "pkg")]
    assert rels == [
        "/usr/share/game/drumkits/Kit/drumkit.xml/00-kick-1/k1.wav",
        "/usr/share/game/drumkits/Kit/k1.wav",
        "/usr/share/game/pak0.pk3/sound/player/footsteps/step1.wav",
        "/usr/share/game/plain.wav",
        "/usr/share/game/res.rcc/res/sounds/bleep.wav",
        "/usr/share/game/sfx.cat/00-big-crash.wav",
    ]
    for f in sources.package_files(work, "pkg"):
        assert probe(f.path).frames == 8000
    assert sources.unhandled_audio(work, "pkg") == ["/usr/share/game/odd.wv"]

    again = sources.extract_package(work, "pkg")
    assert (again.written, again.kept) == (0, 4)


def make_patch(pcm: np.ndarray, loop: tuple[int, int] | None, root_hz: float = 261.63) -> bytes:
    header = b"GF1PATCH110\0ID#000002\0" + bytes(60) + bytes([1, 14, 0])
    header += struct.pack("<HHI", 1, 127, 0) + bytes(36)
    instrument = struct.pack("<H16sIB", 0, b"test", 0, 1) + bytes(40)
    layer = struct.pack("<BBIB", 0, 0, 0, 1) + bytes(40)
    data = (np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes()
    modes = gus.MODE_16BIT | (gus.MODE_LOOP if loop else 0)
    start, end = (2 * loop[0], 2 * loop[1]) if loop else (0, 0)
    sample = gus.HEADER.pack(
        b"wave\0\0\0", 0, len(data), start, end, 16_000, 20_000, 20_000_000, round(root_hz * 1000),
        0, 7, bytes(6), bytes(6), bytes(3), bytes(3), modes, 1024, 1024, bytes(36),
    )  # fmt: skip
    assert len(header) == 129 and len(instrument) == 63 and len(layer) == 47
    return header + instrument + layer + sample + data


def test_gus_parse_and_play_a_looped_patch(tmp_path):
    t = np.arange(1600) / 16_000
    pcm = 0.5 * np.sin(2 * np.pi * 261.63 * t)
    samples = gus.parse_patch(make_patch(pcm, (800, 1600)))
    assert len(samples) == 1 and samples[0].loop == (800, 1600)
    assert np.allclose(samples[0].pcm, pcm, atol=1e-4)
    note = gus.play_note(samples, 60, hold_s=1.0)  # longer than the sample: the loop holds it
    assert len(note) == round((1.0 + gus.RELEASE_S) * gus.RENDER_RATE)
    assert np.sqrt(np.mean(note[: gus.RENDER_RATE] ** 2)) > 0.2

    path = tmp_path / "Tone_000" / "000_Test.pat"
    path.parent.mkdir()
    path.write_bytes(make_patch(pcm, (800, 1600)))
    target = tmp_path / "out" / "000_Test.pat.wav"
    gus.render_patch(path, target)
    info = probe(target)
    assert info.sample_rate == gus.RENDER_RATE and info.duration > 3.0


def test_gus_refuses_other_files():
    with pytest.raises(ValueError, match="GF1PATCH"):
        gus.parse_patch(b"RIFF" + bytes(300))


@pytest.mark.skipif(not REAL.is_dir(), reason="MAEDAW_CORPUS_WORK unset")
def test_real_containers():
    rcc = next((REAL / "x" / "gcompris-qt-data").rglob("core.rcc"))
    entries = sources.rcc_entries(rcc.read_bytes())
    assert any(name.endswith("/intro.ogg") for name in entries)
    cat = next((REAL / "x" / "openttd-opensfx").rglob("*.cat"))
    samples = sources.cat_entries(cat.read_bytes())
    assert len(samples) == 73 and samples[18][0] == "Explosion"
    assert all(blob[:4] == b"RIFF" for _, blob in samples if blob)  # two are empty
