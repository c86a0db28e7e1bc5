"""Audio files in and out, through pedalboard, without losing a bit.

Reading keeps the source's rate and channel count and decodes only the region
asked for plus a little context (the file is seeked, never decoded whole).
Samples are carried in the file's own precision (:class:`SampleFormat`) so that a
stem written back holds *exactly* the source's samples outside repaired spans.

Exactness notes (measured on pedalboard 0.9.26):
- 16-bit PCM: ``read_raw`` gives the integers; writing ``int16`` arrays is exact.
- 24-bit PCM: ``read_raw`` refuses; ``read`` gives ``int / 8388607`` in float32,
  from which ``round(x * 8388607)`` recovers every one of the 2**24 values.
  Writing ``int32`` arrays holding ``value << 8`` at ``bit_depth=24`` is exact.
- 32-bit integer PCM: ``read_raw`` gives the integers, but pedalboard writes
  32 bits only as float, so those stems are written with the standard library's
  ``wave`` module (the one format pedalboard cannot write).
- float (WAV float, and everything decoded from Ogg/MP3): float32 both ways.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import wave
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from pedalboard.io import AudioFile

from maedaw.core.errors import MaedawError
from maedaw.core.util import atomic_path

log = logging.getLogger(__name__)

READ_EXTENSIONS = frozenset({".wav", ".flac", ".aif", ".aiff", ".ogg", ".oga", ".mp3"})
WRITE_EXTENSIONS = frozenset({".wav", ".flac"})
MIN_RATE, MAX_RATE = 8_000, 192_000


class AudioError(MaedawError):
    """A file or region that cannot be used, with a message an editor can act on."""


class SampleFormat(StrEnum):
    """How one sample is stored in the file."""

    INT16 = "int16"
    INT24 = "int24"
    INT32 = "int32"
    FLOAT32 = "float32"

    @property
    def bits(self) -> int:
        return {"int16": 16, "int24": 24, "int32": 32, "float32": 32}[self.value]

    @property
    def is_float(self) -> bool:
        return self is SampleFormat.FLOAT32

    @property
    def full_scale(self) -> float:
        """Integer value that maps to 1.0 in our float convention (int / 2**(bits-1))."""
        return float(2 ** (self.bits - 1))


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What a file is, as far as a stem has to match it."""

    path: Path
    sample_rate: int
    num_channels: int
    frames: int
    sample_format: SampleFormat
    container: str  # file extension without the dot, lower case
    lossless: bool

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "sample_rate": self.sample_rate,
            "num_channels": self.num_channels,
            "frames": self.frames,
            "duration_s": self.duration,
            "sample_format": str(self.sample_format),
            "container": self.container,
            "lossless": self.lossless,
        }


@dataclass(slots=True)
class Region:
    """A region of a file plus the context read around it.

    ``samples`` covers ``[context_start, context_end)`` in absolute frames and is
    float64 in ``[-1, 1)`` (int formats: ``int / 2**(bits-1)``, exactly). The
    region proper is ``[start, end)``.
    """

    info: AudioInfo
    start: int
    end: int
    context_start: int
    context_end: int
    samples: np.ndarray

    @property
    def region_slice(self) -> slice:
        """Where the region proper lies inside ``samples``."""
        return slice(self.start - self.context_start, self.end - self.context_start)

    @property
    def region_samples(self) -> np.ndarray:
        return self.samples[:, self.region_slice]


def audio_files(folders: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Every file with a suffix pedalboard reads under the folders (recursive, resolved,
    sorted; hidden files and folders skipped)."""
    found: set[Path] = set()
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise AudioError(f"{root}: not a folder")
        for path in root.rglob("*"):
            if (
                path.suffix.lower() in READ_EXTENSIONS
                and not any(p.startswith(".") for p in path.relative_to(root).parts)
                and path.is_file()
            ):
                found.add(path.resolve())
    return sorted(found)


def _sample_format(dtype_name: str, path: Path) -> SampleFormat:
    try:
        return SampleFormat(dtype_name)
    except ValueError:
        # 8-bit WAV and other rarities decode to float; stems of them are float.
        log.info("%s: sample type %s is carried as float32", path, dtype_name)
        return SampleFormat.FLOAT32


def _check_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if not path.is_file():
        raise AudioError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty")
    if path.suffix.lower() not in READ_EXTENSIONS:
        kinds = ", ".join(sorted(READ_EXTENSIONS))
        raise AudioError(f"{path}: unsupported file type {path.suffix!r} (supported: {kinds})")
    return path


@contextlib.contextmanager
def _open(path: Path) -> Iterator[AudioFile]:
    try:
        handle = AudioFile(str(path))
    except Exception as exc:  # pedalboard raises several types for unreadable files
        raise AudioError(f"{path}: not a readable audio file ({exc})") from exc
    with handle as f:
        yield f


def probe(path: str | os.PathLike) -> AudioInfo:
    """Describe a file, with a clear :class:`AudioError` if it is missing or unusable."""
    path = _check_path(path)
    with _open(path) as f:
        rate = f.samplerate
        if rate != int(rate) or not MIN_RATE <= rate <= MAX_RATE:
            raise AudioError(f"{path}: sample rate {rate:g} Hz is outside {MIN_RATE}-{MAX_RATE} Hz")
        if f.frames <= 0:
            raise AudioError(f"{path}: the file holds no audio frames")
        container = path.suffix.lower().lstrip(".")
        return AudioInfo(
            path=path,
            sample_rate=int(rate),
            num_channels=int(f.num_channels),
            frames=int(f.frames),
            sample_format=_sample_format(f.file_dtype, path),
            container=container,
            lossless=container in {"wav", "flac", "aif", "aiff"},
        )


def _read_native(f: AudioFile, fmt: SampleFormat, count: int) -> np.ndarray:
    """Read ``count`` frames at the file's position, as exact float64."""
    if fmt is SampleFormat.INT16 or fmt is SampleFormat.INT32:
        raw = f.read_raw(count)
        return raw.astype(np.float64) / fmt.full_scale
    data = f.read(count)
    if fmt is SampleFormat.INT24:
        ints = np.round(data.astype(np.float64) * (fmt.full_scale - 1.0))
        return ints / fmt.full_scale
    return data.astype(np.float64)


def _check_finite(samples: np.ndarray, path: Path, first_frame: int) -> None:
    finite = np.isfinite(samples)
    if not finite.all():
        channel, frame = np.argwhere(~finite)[0]
        raise AudioError(
            f"{path}: sample {first_frame + int(frame)} of channel {int(channel)} is "
            "NaN or infinite; the file is damaged beyond what maedaw repairs"
        )


def to_frames(seconds: float, sample_rate: int) -> int:
    """Seconds to the nearest frame (DAWs send region times in seconds)."""
    if not math.isfinite(seconds):
        raise AudioError(f"region time {seconds} is not a finite number of seconds")
    return round(seconds * sample_rate)


def check_region(info: AudioInfo, start: int | None, end: int | None) -> tuple[int, int]:
    """``[start, end)`` in frames (None: the file's ends), or an AudioError saying why not."""
    start = 0 if start is None else int(start)
    end = info.frames if end is None else int(end)
    rate = info.sample_rate
    if start < 0:
        raise AudioError(f"{info.path}: region starts before the file ({start / rate:.3f} s)")
    if end <= start:
        raise AudioError(
            f"{info.path}: empty region [{start / rate:.3f} s, {end / rate:.3f} s] "
            "(the end must come after the start)"
        )
    if start >= info.frames or end > info.frames:
        raise AudioError(
            f"{info.path}: region [{start / rate:.3f} s, "
            f"{end / rate:.3f} s] runs past the end of the file "
            f"({info.duration:.3f} s)"
        )
    return start, end


def read_region(
    path: str | os.PathLike,
    start: int | None = None,
    end: int | None = None,
    context: int = 0,
) -> Region:
    """Read frames ``[start, end)`` plus up to ``context`` frames on each side.

    ``None`` means the start/end of the file. The region must lie inside the
    file; the context is trimmed at the file's ends.
    """
    info = probe(path)
    start, end = check_region(info, start, end)
    context_start = max(0, start - context)
    context_end = min(info.frames, end + context)
    with _open(info.path) as f:
        f.seek(context_start)
        samples = _read_native(f, info.sample_format, context_end - context_start)
    if samples.shape[1] < end - context_start:
        # Compressed files can report more frames than they decode to.
        raise AudioError(
            f"{info.path}: only {context_start + samples.shape[1]} frames could be decoded; "
            f"the region ends at {end}"
        )
    context_end = context_start + samples.shape[1]
    _check_finite(samples, info.path, context_start)
    return Region(info, start, end, context_start, context_end, samples)


def iter_blocks(
    path: str | os.PathLike,
    start: int | None = None,
    end: int | None = None,
    block: int = 1 << 17,
    exact: bool = False,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_frame, (channels, n))`` blocks of ``[start, end)``.

    For long files in bounded memory. By default blocks are float32, plenty for
    detection; ``exact=True`` gives float64 holding the file's samples exactly
    (as :func:`read_region`), for copying them into a stem.
    """
    info = probe(path)
    start = 0 if start is None else start
    end = info.frames if end is None else min(end, info.frames)
    if not 0 <= start < end:
        raise AudioError(f"{info.path}: nothing to scan in [{start}, {end})")
    fmt = info.sample_format
    with _open(info.path) as f:
        f.seek(start)
        position = start
        while position < end:
            count = min(block, end - position)
            if exact:
                data = _read_native(f, fmt, count)
            elif fmt is SampleFormat.INT16:
                data = f.read_raw(count).astype(np.float32)
                data *= np.float32(1.0 / fmt.full_scale)
            else:
                data = f.read(count)
            if data.shape[1] == 0:
                break
            _check_finite(data, info.path, position)
            yield position, data
            position += data.shape[1]


def stem_format(source: SampleFormat, suffix: str) -> SampleFormat:
    """The sample format a stem of ``source`` gets in a ``suffix`` container."""
    suffix = suffix.lower()
    if suffix not in WRITE_EXTENSIONS:
        raise AudioError(f"stems are written as .wav or .flac, not {suffix!r}")
    if suffix == ".flac" and source not in (SampleFormat.INT16, SampleFormat.INT24):
        raise AudioError(
            f"FLAC cannot hold {source} samples exactly; write the stem as .wav instead"
        )
    return source


def _to_native(samples: np.ndarray, fmt: SampleFormat) -> np.ndarray:
    """float64 in our convention -> the array pedalboard writes exactly."""
    if fmt.is_float:
        return samples.astype(np.float32)
    scale = fmt.full_scale
    ints = np.clip(np.round(samples * scale), -scale, scale - 1).astype(np.int64)
    if fmt is SampleFormat.INT16:
        return ints.astype(np.int16)
    if fmt is SampleFormat.INT24:
        return (ints << 8).astype(np.int32)
    return ints.astype(np.int32)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _BlockWriter:
    """Writes float64 blocks in the stem's exact native format."""

    def __init__(self, path: Path, rate: int, channels: int, fmt: SampleFormat) -> None:
        self.fmt = fmt
        self.channels = channels
        self._wave: wave.Wave_write | None = None
        self._file: Any = None
        if fmt is SampleFormat.INT32:  # pedalboard writes 32 bits only as float
            self._wave = wave.open(str(path), "wb")  # noqa: SIM115 - closed by close()
            self._wave.setnchannels(channels)
            self._wave.setsampwidth(4)
            self._wave.setframerate(rate)
        else:
            self._file = AudioFile(str(path), "w", rate, channels, bit_depth=fmt.bits)

    def write(self, samples: np.ndarray) -> None:
        if samples.ndim != 2 or samples.shape[0] != self.channels:
            raise AudioError(f"expected ({self.channels}, n) samples, got {samples.shape}")
        if samples.shape[1] == 0:
            return
        if not np.isfinite(samples).all():
            raise AudioError("refusing to write NaN or infinite samples")
        native = np.ascontiguousarray(_to_native(samples, self.fmt))
        if self._wave is not None:
            self._wave.writeframes(np.ascontiguousarray(native.T).astype("<i4").tobytes())
            return
        # pedalboard infers the layout from the shape and refuses a square array;
        # splitting off the last frame makes both parts non-square.
        channels, frames = native.shape
        split = frames - 1 if channels == frames > 1 else frames
        self._file.write(native[:, :split])
        if split < frames:
            self._file.write(native[:, split:])

    def close(self) -> None:
        if self._wave is not None:
            self._wave.close()
        if self._file is not None:
            self._file.close()


@contextlib.contextmanager
def stem_writer(
    path: str | os.PathLike, sample_rate: int, channels: int, sample_format: SampleFormat
) -> Iterator[Callable[[np.ndarray], None]]:
    """Write a stem block by block, atomically: yields ``write(samples)``.

    The data goes to a hidden temporary name in the same folder, is flushed to
    disk, and is renamed over ``path`` only when the ``with`` block ends without
    an error; otherwise the temporary file is removed. A crash never leaves a
    partial file under the final name.
    """
    path = Path(path)
    fmt = stem_format(sample_format, path.suffix)
    if not path.parent.is_dir():
        raise AudioError(f"{path.parent}: output folder does not exist")
    with atomic_path(path) as temp:
        writer = _BlockWriter(temp, sample_rate, channels, fmt)
        try:
            yield writer.write
        except BaseException:
            with contextlib.suppress(Exception):  # the error that stopped us is the one to see
                writer.close()
            raise
        writer.close()
    _fsync_dir(path.parent)
    log.info("wrote %s (%d ch, %s)", path, channels, fmt)


def write_stem(
    path: str | os.PathLike,
    samples: np.ndarray,
    sample_rate: int,
    sample_format: SampleFormat,
) -> Path:
    """Write ``samples`` (float64, channels × frames) atomically; return the path."""
    if samples.ndim != 2 or samples.shape[1] == 0:
        raise AudioError(f"{path}: nothing to write (shape {samples.shape})")
    if not np.isfinite(samples).all():
        raise AudioError(f"{path}: refusing to write NaN or infinite samples")
    with stem_writer(path, sample_rate, samples.shape[0], sample_format) as write:
        write(samples)
    return Path(path)


def prepare_stem_job(
    source: Path,
    output: Path | None,
    start_s: float | None,
    end_s: float | None,
    overwrite: bool = False,
) -> tuple[AudioInfo, int, int]:
    """The checks every stem-writing job makes before any work: the output is not the
    source, not (without ``overwrite``) an existing file, in an existing folder, and in a
    container that can hold the source's sample format; the region lies in the file.
    Returns the source's info and the region's first and end frames."""
    if output is not None:
        if output.exists() and output.resolve() == source.resolve():
            raise AudioError(f"{output}: refusing to overwrite the source file")
        if output.exists() and not overwrite:
            raise AudioError(f"{output}: already exists (pass --overwrite to replace it)")
        if not output.parent.is_dir():
            raise AudioError(f"{output.parent}: output folder does not exist")
    info = probe(source)
    if output is not None:
        stem_format(info.sample_format, output.suffix)  # fail before any work
    rate = info.sample_rate
    first, end = check_region(
        info,
        None if start_s is None else to_frames(start_s, rate),
        None if end_s is None else to_frames(end_s, rate),
    )
    return info, first, end
