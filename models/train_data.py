"""Training data: scan folders for audio, cache their fbanks once, draw and augment batches.

1. **Scan** the folders for audio pedalboard reads (``dsp.audio_io.READ_EXTENSIONS``).
2. **Cache** each file once: decode at its native rate in bounded chunks
   (``dsp.audio_io.read_region``), mix to mono, resample to 16 kHz (``dsp.resample``), kaldi
   fbank (``models.frontend``), normalised, stored as float16 in one ``.npy`` memmap. On two
   cores decoding + fbank is far slower than a training step's data needs, so paying it once
   means the step never waits for data. The cache key covers paths, sizes, mtimes and the
   front-end config, so a changed corpus rebuilds it. A *portable* cache packs it into one
   smaller file to train on another machine.
3. **Batches**: a window is a random 1024-frame crop of a random file (files drawn in
   proportion to their length, so every second of audio is equally likely). A file shorter
   than a window is padded with the front end's pad value (the official convention the model
   must also understand at inference); with probability ``pack_short`` the rest of the window
   is instead filled with other short files, which spends less compute on padding. Batch ``k``
   depends only on ``(seed, k)`` (``train_seeds``), so a resumed run draws the same batches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from maedaw.core.errors import MaedawError
from maedaw.core.util import CountFn, atomic_path

from . import frontend
from .frontend import DEFAULT_FRONTEND, FrontendConfig
from .train_config import TrainConfig
from .train_seeds import crop_generator

logger = logging.getLogger(__name__)


class TrainDataError(MaedawError, ValueError):
    """Audio or a cache that training cannot use; the message says which and why."""


class NoAudioError(MaedawError, FileNotFoundError):
    """A folder that is missing, or holds no audio training can read."""


CACHE_VERSION = 1
_CHUNK_SECONDS = 60.0  # decode long files in bounded pieces
_CHUNK_CONTEXT_SECONDS = 0.5  # resampler context on each side of a chunk


# --------------------------------------------------------------------------------------------
# 1. Scan


def scan_audio(folders: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Every readable-looking audio file under the folders (or the files given), sorted."""
    # Audio I/O is imported where it is used: training from a portable cache needs neither
    # pedalboard nor soxr (a GPU machine may have only torch and numpy).
    from maedaw.dsp.audio_io import READ_EXTENSIONS

    found: set[Path] = set()
    for folder in folders:
        root = Path(folder)
        if root.is_file():
            found.add(root.resolve())
            continue
        if not root.is_dir():
            raise NoAudioError(f"{root}: no such folder")
        for path in root.rglob("*"):
            if path.suffix.lower() in READ_EXTENSIONS and path.is_file():
                found.add(path.resolve())
    if not found:
        raise NoAudioError(f"no audio files ({', '.join(sorted(READ_EXTENSIONS))}) found")
    return sorted(found)


# --------------------------------------------------------------------------------------------
# 2. Fbank cache


def file_fbank(path: Path, config: FrontendConfig = DEFAULT_FRONTEND) -> torch.Tensor:
    """Normalised fbank ``(frames, mel)`` of a whole file, decoded in bounded chunks."""
    from maedaw.dsp.audio_io import probe, read_region
    from maedaw.dsp.resample import resample

    info = probe(path)
    rate = info.sample_rate
    chunk = int(_CHUNK_SECONDS * rate)
    context = int(_CHUNK_CONTEXT_SECONDS * rate)
    pieces = []
    for start in range(0, info.frames, chunk):
        end = min(start + chunk, info.frames)
        region = read_region(path, start, end, context=context)
        mono = region.samples.mean(axis=0)
        wave16 = resample(mono, rate, config.sample_rate)
        # Keep only the output samples belonging to [start, end) (context was for the filter).
        ratio = config.sample_rate / rate
        lo = round((start - region.context_start) * ratio)
        hi = lo + round(end * ratio) - round(start * ratio)
        pieces.append(wave16[lo:hi])
    wav = torch.from_numpy(np.concatenate(pieces).astype(np.float32))
    total = frontend.num_frames(wav.numel(), config)
    # Frames are independent, so compute them in blocks (bounded memory for long files).
    block = 6000
    out = []
    for f0 in range(0, total, block):
        f1 = min(total, f0 + block)
        s0 = f0 * config.frame_shift
        s1 = (f1 - 1) * config.frame_shift + config.frame_length
        out.append(frontend.waveform_to_fbank(wav[s0:s1], config))
    if not out:
        return torch.zeros(0, config.num_mel_bins)
    return torch.cat(out)


@dataclass
class FbankCache:
    """All files' fbanks in one (frames, mel) float16 memmap plus per-file offsets."""

    data: np.ndarray
    offsets: np.ndarray  # (N,) first frame of each file
    lengths: np.ndarray  # (N,) frames of each file
    paths: list[str]
    # Width of the quantisation step of a portable cache (0: exact). Batches add uniform noise
    # of this width (subtractive-dither style) so the model never sees the step grid.
    quant_step: float = 0.0

    @property
    def total_frames(self) -> int:
        return int(self.lengths.sum())

    def hours(self, config: FrontendConfig) -> float:
        return self.total_frames * config.frame_shift_ms / 3.6e6


def _cache_key(paths: Sequence[Path], config: FrontendConfig) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{json.dumps(config.to_dict())}".encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def build_cache(
    paths: Sequence[Path],
    cache_dir: Path,
    config: FrontendConfig = DEFAULT_FRONTEND,
    progress: CountFn | None = None,
) -> FbankCache:
    """Load the cache for these files, or build it (once) if it is missing or stale."""
    from maedaw.dsp.audio_io import AudioError

    key = _cache_key(paths, config)
    index_path = cache_dir / f"fbank-{key}.json"
    data_path = cache_dir / f"fbank-{key}.npy"
    if index_path.is_file() and data_path.is_file():
        index = json.loads(index_path.read_text())
        data = np.load(data_path, mmap_mode="r")
        logger.info("fbank cache %s: %d files, %d frames", key, len(index["paths"]), len(data))
        return FbankCache(
            data, np.array(index["offsets"]), np.array(index["lengths"]), index["paths"]
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    fbanks, kept, skipped = [], [], 0
    for i, path in enumerate(paths):
        try:
            fb = file_fbank(path, config)
        except AudioError as exc:
            logger.warning("skipping %s", exc)
            skipped += 1
            continue
        if fb.shape[0] >= 16:  # less than one patch column is useless
            fbanks.append(fb.to(torch.float16).numpy())
            kept.append(str(path))
        if progress is not None:
            progress(i + 1, len(paths))
    if not fbanks:
        raise TrainDataError("none of the audio files gave at least 16 fbank frames")
    lengths = np.array([len(f) for f in fbanks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    with atomic_path(data_path) as tmp:
        np.save(tmp, np.concatenate(fbanks))
    index = {"paths": kept, "offsets": offsets.tolist(), "lengths": lengths.tolist()}
    index_path.write_text(json.dumps(index))
    logger.info("built fbank cache %s: %d files (%d skipped)", key, len(kept), skipped)
    return FbankCache(np.load(data_path, mmap_mode="r"), offsets, lengths, kept)


# A portable cache moves a corpus's fbanks to another machine (say a GPU box that has torch but
# no audio libraries) in one file about 5x smaller than the float16 cache: values quantised to
# PORTABLE_STEP (0.05 normalised units = 0.46 nepers of power, +-1 dB), stored as differences
# along the mel axis (smooth, so they compress well) and xz-compressed. The quantisation error
# (RMS 0.014) is small next to a trained model's reconstruction error (RMS ~0.24).
PORTABLE_MAGIC = b"MAEDAW-FBQ1\n"
PORTABLE_STEP = 0.05
_PORTABLE_LOW = -2.0  # normalised fbank is in about [-1.3, 1.5]; 8 bits cover [-2, 10.75]


def save_portable_cache(
    cache: FbankCache, path: str | os.PathLike[str], config: FrontendConfig = DEFAULT_FRONTEND
) -> Path:
    """Write ``cache`` as one compressed, quantised file (see ``PORTABLE_STEP``)."""
    import lzma

    path = Path(path)
    levels = np.rint((np.asarray(cache.data, dtype=np.float32) - _PORTABLE_LOW) / PORTABLE_STEP)
    levels = np.clip(levels, 0, 255).astype(np.uint8)
    deltas = np.diff(levels, axis=1, prepend=np.uint8(0))  # uint8 wraps: exact inverse below
    header = {
        "frames": int(levels.shape[0]),
        "mel": int(levels.shape[1]),
        "step": PORTABLE_STEP,
        "low": _PORTABLE_LOW,
        "frontend": config.to_dict(),
        "offsets": cache.offsets.tolist(),
        "lengths": cache.lengths.tolist(),
        "paths": cache.paths,
    }
    blob = json.dumps(header).encode()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(PORTABLE_MAGIC)
        fh.write(len(blob).to_bytes(8, "little"))
        fh.write(blob)
        fh.write(lzma.compress(deltas.tobytes(), preset=6))
    return path


def load_portable_cache(path: str | os.PathLike[str]) -> tuple[FbankCache, FrontendConfig]:
    """Read a file written by ``save_portable_cache``; refuses anything else by name."""
    import lzma

    path = Path(path)
    with open(path, "rb") as fh:
        if fh.read(len(PORTABLE_MAGIC)) != PORTABLE_MAGIC:
            raise TrainDataError(f"{path}: not a maedaw portable fbank cache")
        try:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
            raw = lzma.decompress(fh.read())
        except (ValueError, lzma.LZMAError) as exc:
            raise TrainDataError(f"{path}: damaged portable fbank cache ({exc})") from exc
    frames, mel = int(header["frames"]), int(header["mel"])
    if len(raw) != frames * mel:
        raise TrainDataError(f"{path}: damaged portable fbank cache (size mismatch)")
    levels = np.cumsum(np.frombuffer(raw, np.uint8).reshape(frames, mel), axis=1, dtype=np.uint8)
    data = (levels.astype(np.float32) * header["step"] + header["low"]).astype(np.float16)
    cache = FbankCache(
        data,
        np.asarray(header["offsets"], dtype=np.int64),
        np.asarray(header["lengths"], dtype=np.int64),
        list(header["paths"]),
        quant_step=float(header["step"]),
    )
    return cache, FrontendConfig(**header["frontend"])


# --------------------------------------------------------------------------------------------
# 3. Batches and augmentation


def file_weights(cache: FbankCache, folder_balance: float = 0.0) -> np.ndarray:
    """Chance of drawing each file: its length, divided by its folder's total length raised to
    ``folder_balance`` (0: by length; 1: every folder the same share, by length within it)."""
    if not 0.0 <= folder_balance <= 1.0:
        raise ValueError(f"folder_balance must be in [0, 1], not {folder_balance}")
    lengths = cache.lengths.astype(np.float64)
    folders = [str(Path(p).parent) for p in cache.paths]
    _, group = np.unique(folders, return_inverse=True)
    folder_total = np.bincount(group, weights=lengths)
    weights = lengths / folder_total[group] ** folder_balance
    return weights / weights.sum()


class WindowSampler:
    """Random 1024-frame windows from the cache; batch ``k`` depends only on ``(seed, k)``."""

    def __init__(
        self,
        cache: FbankCache,
        config: FrontendConfig,
        seed: int,
        pack_short: float,
        folder_balance: float = 0.0,
    ) -> None:
        self.cache = cache
        self.target = config.target_frames
        self.pad = config.pad_value
        self.seed = seed
        self.pack_short = pack_short
        self.weights = file_weights(cache, folder_balance)
        self.short = np.flatnonzero(cache.lengths < self.target)

    def _crop(self, rng: np.random.Generator, index: int, room: int) -> np.ndarray:
        """Frame indices (into the cache) of a random crop of file ``index`` of at most
        ``room`` frames."""
        length = int(self.cache.lengths[index])
        take = min(length, room)
        start = int(self.cache.offsets[index]) + int(rng.integers(0, length - take + 1))
        return np.arange(start, start + take)

    def window_frames(self, rng: np.random.Generator) -> np.ndarray:
        """Cache frame indices of one window's real frames (at most ``target``)."""
        index = int(rng.choice(len(self.weights), p=self.weights))
        parts = [self._crop(rng, index, self.target)]
        filled = len(parts[0])
        if filled < self.target and len(self.short) and rng.random() < self.pack_short:
            # Fill up with other short files (each whole, or cropped to what fits).
            while filled < self.target:
                part = self._crop(rng, int(rng.choice(self.short)), self.target - filled)
                parts.append(part)
                filled += len(part)
        return np.concatenate(parts)

    def batch_frames(self, step: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(frame index (B, T), real frames (B,))`` of step ``step``; padding is -1."""
        rng = crop_generator(self.seed, step)
        index = np.full((size, self.target), -1, dtype=np.int64)
        valid = np.zeros(size, dtype=np.int64)
        for row in range(size):
            frames = self.window_frames(rng)
            index[row, : len(frames)] = frames
            valid[row] = len(frames)
        return index, valid

    def batch(
        self, step: int, size: int, source: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fbank (B, T, F), real frames (B,))`` for training step ``step``, gathered from
        the cache, or from ``source`` (the cache's data already on the training device:
        the gather then runs there instead of in Python threads)."""
        return self.gather(*self.batch_frames(step, size), source)

    def gather(
        self, index: np.ndarray, valid: np.ndarray, source: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The windows ``batch_frames`` chose, from the cache or from ``source``."""
        pad = index < 0
        if source is None:
            fbank = np.asarray(self.cache.data[np.where(pad, 0, index)], dtype=np.float32)
            fbank[pad] = self.pad
            return torch.from_numpy(fbank), torch.from_numpy(valid)
        idx = torch.from_numpy(index).to(source.device, non_blocking=True)
        fbank = source[idx.clamp_min(0)].float()
        fbank = fbank.masked_fill((idx < 0).unsqueeze(-1), self.pad)
        return fbank, torch.from_numpy(valid).to(source.device)


def dither(
    fbank: torch.Tensor, valid: torch.Tensor, width: float, generator: torch.Generator
) -> torch.Tensor:
    """Uniform noise of one quantisation step on the real frames of a portable cache's batch
    (drawn where the batch is: on a GPU this costs nothing, on the CPU it would stall)."""
    noise = torch.rand(fbank.shape, generator=generator, device=fbank.device) - 0.5
    real = torch.arange(fbank.shape[1], device=fbank.device)[None, :] < valid[:, None]
    return fbank + width * noise * real[:, :, None]


def augment(
    fbank: torch.Tensor,
    valid: torch.Tensor,
    cfg: TrainConfig,
    fe: FrontendConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """Level offset and mixing, done on log-mel power so they equal what the same edits to the
    waveform would give (up to the mel filters' cross terms). Padding frames stay padding."""
    if cfg.gain_db <= 0 and cfg.mix_prob <= 0:
        return fbank
    b, t, _ = fbank.shape
    neper = math.log(10.0) / 10.0  # dB of power -> natural log
    real = (torch.arange(t, device=fbank.device)[None, :] < valid[:, None])[:, :, None]
    u = torch.rand(b, 3, generator=generator).to(fbank.device)
    out = fbank
    if cfg.mix_prob > 0:
        log_power = frontend.denormalize(fbank, fe)  # ln(mel power)
        other = log_power.roll(1, dims=0) - (u[:, 0] * cfg.mix_db * neper)[:, None, None]
        mixed = frontend.normalize(torch.logaddexp(log_power, other), fe)
        use = real & real.roll(1, dims=0) & (u[:, 1] < cfg.mix_prob)[:, None, None]
        out = torch.where(use, mixed, out)
    if cfg.gain_db > 0:
        # A level change is a shift of log power; Kaldi's floor (digital silence) stays put.
        shift = ((2.0 * u[:, 2] - 1.0) * cfg.gain_db * neper / (2.0 * fe.norm_std))[:, None, None]
        floor = float(frontend.normalize(torch.tensor(fe.log_floor), fe))
        audible = real & (out > floor + 1e-3)
        out = torch.where(audible, (out + shift).clamp_min(floor), out)
    return out
