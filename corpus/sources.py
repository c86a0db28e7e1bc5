"""Audio out of every allowlisted package, containers and odd codecs included.

``work/x/PACKAGE/...`` (the unpacked .debs, see :func:`maedaw.corpus.pretrain.fetch_packages`)
-> ``work/extracted/PACKAGE/...``, so that the path rules (:mod:`maedaw.corpus.vocabulary`)
always see a path::

    zip archives (.pk3 .wz .zip)   members as they are        CONTAINER/member/path.wav
    Qt resources (.rcc)            entries (zlib / zstd)      CONTAINER/entry/path.ogg
    OpenTTD samples (.cat)         each RIFF WAV, by title    CONTAINER/NN-title.wav
    Opus (.opus)                   opusdec (opus-tools)       FILE.opus.wav
    WavPack (.wv)                  wvunpack (wavpack)         FILE.wv.wav
    tracker modules (.it .xm ...)  openmpt123                 FILE.it.wav
    hydrogen drumkits              linked by instrument name  KIT/drumkit.xml/NN-Instrument/file
    GUS patches (.pat, freepats)   our sampler (corpus.gus)   FILE.pat.wav

The decoders are Debian programs (tools, not data); a missing one is reported, never fatal.
Extraction is idempotent (existing outputs are kept) and each output is written atomically.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from maedaw.core.util import atomic_path, write_bytes_atomic
from maedaw.corpus.gus import render_patch
from maedaw.dsp.audio_io import READ_EXTENSIONS

logger = logging.getLogger(__name__)

ZIP_SUFFIXES = (".pk3", ".wz", ".zip")
RCC_SUFFIX, CAT_SUFFIX, PATCH_SUFFIX = ".rcc", ".cat", ".pat"
# Decoded by a Debian program into WAV: suffix -> (program, its Debian package).
DECODERS = {
    ".opus": ("opusdec", "opus-tools"),
    ".wv": ("wvunpack", "wavpack"),
    ".it": ("openmpt123", "openmpt123"),
    ".xm": ("openmpt123", "openmpt123"),
    ".s3m": ("openmpt123", "openmpt123"),
    ".mod": ("openmpt123", "openmpt123"),
}
# What counts as audio when a file is reported as unusable (neither readable nor handled).
AUDIO_LIKE = (*READ_EXTENSIONS, *DECODERS, PATCH_SUFFIX, ".mid", ".midi", ".spx", ".au", ".snd")
TRACKER_SECONDS = 600  # openmpt123 stops there: some modules loop for ever


@dataclass(frozen=True)
class PackageFile:
    """One readable audio file of a package; ``relpath`` is where it is inside the package
    (for an extracted file: the container's path, then the member's)."""

    package: str
    relpath: str
    path: Path


@dataclass
class ExtractReport:
    package: str
    written: int = 0
    kept: int = 0  # already there from an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # relpath -> why
    missing_decoders: dict[str, int] = field(default_factory=dict)  # program -> files


# --------------------------------------------------------------------------------------------
# Containers (pure: bytes in, (name, bytes) out)


def is_audio_name(name: str) -> bool:
    return name.lower().endswith(tuple(READ_EXTENSIONS))


def zip_audio(data: bytes) -> Iterator[tuple[str, bytes]]:
    """The readable audio members of a zip archive (.pk3, .wz, .zip), in stored order."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if not info.is_dir() and is_audio_name(info.filename):
                yield info.filename, archive.read(info)


RCC_COMPRESSED, RCC_DIRECTORY, RCC_ZSTD = 0x01, 0x02, 0x04


def rcc_entries(data: bytes) -> dict[str, bytes]:
    """Every file in a Qt resource file (``rcc`` binary output), by its path.

    Layout (qtbase ``src/corelib/io/qresource.cpp``, ``tools/rcc/rcc.cpp``), big-endian:
    header ``"qres"``, version, then the offsets of the tree, data and names sections (version
    3 adds a flags word). The tree is an array of nodes (14 bytes; 22 from version 2, with a
    modification time): name offset u32, flags u16, then for a directory child count u32 and
    first child index u32, for a file territory u16, language u16 and data offset u32. A name
    is length u16 (UTF-16 units), hash u32, UTF-16BE text; a data entry is size u32 then the
    bytes: zlib entries start with the uncompressed size (``qCompress``), zstd ones are a frame.
    """
    magic, version, tree, payload, names = struct.unpack_from(">4sIIII", data, 0)
    if magic != b"qres":
        raise ValueError("not a Qt resource file (no 'qres' magic)")
    node_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        (length,) = struct.unpack_from(">H", data, names + offset)
        start = names + offset + 6
        return data[start : start + 2 * length].decode("utf-16-be")

    out: dict[str, bytes] = {}
    pending = [(0, "")]  # (node index, its path); node 0 is the root directory
    while pending:
        index, path = pending.pop()
        at = tree + index * node_size
        _, flags = struct.unpack_from(">IH", data, at)
        if flags & RCC_DIRECTORY:
            count, first = struct.unpack_from(">II", data, at + 6)
            for child in range(first, first + count):
                (child_name,) = struct.unpack_from(">I", data, tree + child * node_size)
                pending.append((child, f"{path}/{name_at(child_name)}"))
            continue
        (offset,) = struct.unpack_from(">I", data, at + 10)
        (size,) = struct.unpack_from(">I", data, payload + offset)
        blob = data[payload + offset + 4 : payload + offset + 4 + size]
        if flags & RCC_COMPRESSED:
            blob = zlib.decompress(blob[4:])
        elif flags & RCC_ZSTD:
            blob = _unzstd(blob)
        out[path.lstrip("/")] = blob
    return dict(sorted(out.items()))


def _unzstd(blob: bytes) -> bytes:
    """zstd has no decoder in Python 3.11's standard library: the Debian ``zstd`` program."""
    if shutil.which("zstd") is None:
        raise ValueError("zstd-compressed entry and no zstd program (apt-get install zstd)")
    return subprocess.run(["zstd", "-dcq"], input=blob, capture_output=True, check=True).stdout


def cat_entries(data: bytes) -> list[tuple[str, bytes]]:
    """The samples of an OpenTTD sound catalogue (``opensfx.cat``) as ``(title, RIFF bytes)``.

    Layout (OpenTTD ``src/sound.cpp``), little-endian: a table of (offset u32, size u32) pairs,
    the first offset (top bit = "new format") also giving the table's length; each entry is a
    name length byte, the NUL-terminated name, then the WAV file. For opensfx the name is the
    sample's title and licence (``"Explosion". By ... License: ...``); the title is returned.
    """
    (first,) = struct.unpack_from("<I", data, 0)
    count = (first & 0x7FFFFFFF) // 8
    out = []
    for i in range(count):
        offset, size = struct.unpack_from("<II", data, 8 * i)
        offset &= 0x7FFFFFFF
        length = data[offset]
        name = data[offset + 1 : offset + 1 + length].rstrip(b"\0").decode("utf-8", "replace")
        title = re.match(r'\s*"([^"]*)"', name)
        out.append((title.group(1) if title else name, data[offset + 1 + length : offset + size]))
    return out


def slug(text: str) -> str:
    """A file-name-safe lower-case title ("Toyland: Bubble plop" -> toyland-bubble-plop)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unnamed"


def drumkit_instruments(xml_text: str) -> list[tuple[str, list[str]]]:
    """``(instrument name, [sample file names])`` of a hydrogen ``drumkit.xml``, in kit order
    (namespaced or not; layered instruments list every layer's file)."""
    root = ET.fromstring(xml_text)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    out = []
    for instrument in root.iter(f"{ns}instrument"):
        name = (instrument.findtext(f"{ns}name") or "").strip()
        files = [f.text.strip() for f in instrument.iter(f"{ns}filename") if f.text]
        if files:
            out.append((name, files))
    return out


# --------------------------------------------------------------------------------------------
# Extraction into work/extracted/PACKAGE


def extracted_root(work: Path, package: str) -> Path:
    return Path(work) / "extracted" / package


def _member_path(root: Path, container_rel: str, member: str) -> Path:
    """Where a container member lands; refuses names that climb out (``..``, absolute)."""
    parts = [p for p in PurePosixPath(member).parts if p not in ("", "/")]
    if any(p == ".." for p in parts):
        raise ValueError(f"unsafe member name {member!r}")
    return root / container_rel.lstrip("/") / Path(*parts)


def _write_members(
    report: ExtractReport, root: Path, rel: str, members: Iterator[tuple[str, bytes]]
) -> None:
    for name, blob in members:
        target = _member_path(root, rel, name)
        if target.exists():
            report.kept += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, blob)
        report.written += 1


def _decode(source: Path, target: Path) -> None:
    """Decode one file with its Debian program into ``target`` (a WAV), atomically."""
    program = DECODERS[source.suffix.lower()][0]
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as temp:
        if program == "opusdec":
            cmd = ["opusdec", "--quiet", str(source), str(temp)]
        elif program == "wvunpack":
            cmd = ["wvunpack", "-q", "-y", str(source), "-o", str(temp)]
        else:
            cmd = ["openmpt123", "--batch", "-q", "--force", "--no-float", "--end-time"]
            cmd += [str(TRACKER_SECONDS), "-o", str(temp), str(source)]
        subprocess.run(cmd, check=True, capture_output=True, stdin=subprocess.DEVNULL)


def _link_drumkit(report: ExtractReport, root: Path, kit_xml: Path, rel: str) -> None:
    """Each sample of a hydrogen kit, linked under ``drumkit.xml/NN-Instrument name/``."""
    instruments = drumkit_instruments(kit_xml.read_text(encoding="utf-8", errors="replace"))
    for number, (name, files) in enumerate(instruments):
        folder = root / rel.lstrip("/") / f"{number:02d}-{slug(name) if name else 'unnamed'}"
        for file_name in files:
            sample = kit_xml.parent / file_name
            target = folder / Path(file_name).name
            if not sample.is_file() or not is_audio_name(file_name):
                report.failed[f"{rel}/{file_name}"] = "sample named in drumkit.xml is missing"
                continue
            if target.is_symlink() or target.exists():
                report.kept += 1
                continue
            folder.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(sample, folder), target)
            report.written += 1


def extract_package(work: Path, package: str) -> ExtractReport:
    """Extract / decode / render every audio-bearing container of one unpacked package into
    ``work/extracted/PACKAGE``; returns what was written and what could not be."""
    source_root, root = Path(work) / "x" / package, extracted_root(work, package)
    report = ExtractReport(package)
    for path in sorted(p for p in source_root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = "/" + path.relative_to(source_root).as_posix()
        suffix = path.suffix.lower()
        try:
            if suffix in ZIP_SUFFIXES:
                _write_members(report, root, rel, zip_audio(path.read_bytes()))
            elif suffix == RCC_SUFFIX:
                entries = rcc_entries(path.read_bytes()).items()
                _write_members(report, root, rel, ((n, b) for n, b in entries if is_audio_name(n)))
            elif suffix == CAT_SUFFIX:
                samples = cat_entries(path.read_bytes())
                named = ((f"{i:02d}-{slug(t)}.wav", b) for i, (t, b) in enumerate(samples))
                _write_members(report, root, rel, (m for m in named if len(m[1]) > 44))
            elif path.name == "drumkit.xml":
                _link_drumkit(report, root, path, rel)
            elif suffix in DECODERS or suffix == PATCH_SUFFIX:
                target = root / (rel.lstrip("/") + ".wav")
                if target.exists():
                    report.kept += 1
                    continue
                if suffix == PATCH_SUFFIX:
                    render_patch(path, target)
                else:
                    program, debian = DECODERS[suffix]
                    if shutil.which(program) is None:
                        key = f"{program} ({debian})"
                        report.missing_decoders[key] = report.missing_decoders.get(key, 0) + 1
                        continue
                    _decode(path, target)
                report.written += 1
        except (ValueError, OSError, zipfile.BadZipFile, ET.ParseError, struct.error) as exc:
            report.failed[rel] = f"{type(exc).__name__}: {exc}"[:200]
        except subprocess.CalledProcessError as exc:
            report.failed[rel] = (exc.stderr or b"").decode("utf-8", "replace").strip()[-200:]
    if report.failed:
        logger.warning("%s: %d files could not be extracted", package, len(report.failed))
    return report


def package_files(work: Path, package: str) -> list[PackageFile]:
    """The readable audio of a package: plain files under ``x/PACKAGE`` plus everything under
    ``extracted/PACKAGE`` (relpaths of both are paths inside the package), sorted."""
    out = []
    for base in (Path(work) / "x" / package, extracted_root(work, package)):
        if not base.is_dir():
            continue
        for path in base.rglob("*"):
            # ".partial-" names are writes still under way (or killed): never audio.
            if is_audio_name(path.name) and ".partial-" not in path.name and path.is_file():
                rel = "/" + path.relative_to(base).as_posix()
                out.append(PackageFile(package, rel, path))
    return sorted(out, key=lambda f: f.relpath)


def unhandled_audio(work: Path, package: str) -> list[str]:
    """Audio-like files of a package that neither a reader nor an extractor turns into audio
    (relpaths): what a survey must own up to."""
    source_root, root = Path(work) / "x" / package, extracted_root(work, package)
    out = []
    for path in sorted(source_root.rglob("*")):
        suffix = path.suffix.lower()
        if not path.is_file() or suffix not in AUDIO_LIKE or suffix in READ_EXTENSIONS:
            continue
        rel = "/" + path.relative_to(source_root).as_posix()
        if not (root / (rel.lstrip("/") + ".wav")).exists():
            out.append(rel)
    return out
