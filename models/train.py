"""Self-supervised pre-training (and fine-tuning) of Audio-MAE on folders of audio.

Everything the run does is in this file, top to bottom:

1. **Scan** the folders for audio pedalboard reads (``dsp.audio_io.READ_EXTENSIONS``).
2. **Cache** each file once: decode at its native rate in bounded chunks
   (``dsp.audio_io.read_region``), mix to mono, resample to 16 kHz (``dsp.resample``), kaldi
   fbank (``models.frontend``), normalised, stored as float16 in one ``.npy`` memmap. On two
   cores decoding + fbank is far slower than a training step's data needs, so paying it once
   means the step never waits for data. The cache key covers paths, sizes, mtimes and the
   front-end config, so a changed corpus rebuilds it.
3. **Batches**: a window is a random 1024-frame crop of a random file (files drawn in
   proportion to their length, so every second of audio is equally likely). A file shorter
   than a window is padded with the front end's pad value (the official convention the model
   must also understand at inference); with probability ``pack_short`` the rest of the window
   is instead filled with other short files, which spends less compute on padding.
4. **Loss**: MSE on masked patches (mask ratio 0.8, unstructured), counting only patches whose
   16 frames are all real audio: predicting padding teaches nothing.
5. **Optimiser**: AdamW (betas 0.9/0.95, weight decay on matrices only), linear warm-up then
   cosine decay to ``min_lr``, gradient-norm clipping.
6. **Determinism / resume**: the batch, the mask and the dropout RNG of step ``k`` are all drawn
   from generators seeded by ``(seed, k)``, so a run resumed from a checkpoint at step ``k``
   replays exactly what an uninterrupted run would have done (bit-for-bit on CPU; CUDA kernels
   may differ in the last bits). Checkpoints are our safetensors pair (float32, usable as a
   model at once) plus ``NAME.train.pt`` with the optimiser, scheduler, step and loss history.

Precision: bf16 autocast on CUDA. On CPU float32 by default; ``--bf16`` turns on bf16 autocast
there too. Measured on the 2-core Zen 5 dev machine (compact, batch 8, same batches and masks):
0.38 s/step bf16 vs 0.70 s/step fp32, and the first 16 losses agree to 3-4 digits (1.2562 ->
0.1910 vs 0.1911), so the bundled model was trained with it. CPUs without native bf16
instructions (no AVX512-BF16 / AMX) run it slower than fp32: keep the default there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import frontend
from .audiomae import AudioMAE, AudioMAEConfig, preset, random_mask, span_mask
from .checkpoint import CheckpointError, load_model, read_checkpoint_meta, save_model
from .frontend import DEFAULT_FRONTEND, FrontendConfig

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
_CHUNK_SECONDS = 60.0  # decode long files in bounded pieces
_CHUNK_CONTEXT_SECONDS = 0.5  # resampler context on each side of a chunk


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run (saved in the checkpoint; resume refuses a mismatch)."""

    config: str = "compact"
    steps: int = 1000
    batch: int = 8
    lr: float = 5e-4  # peak, for batch 8 (no automatic scaling: say what you use)
    min_lr: float = 1e-5
    warmup_steps: int = 100
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    mask_ratio: float = 0.8
    pack_short: float = 0.5
    seed: int = 0
    save_every: int = 200  # steps
    log_every: int = 20  # steps
    bf16: bool = False  # CPU only; CUDA always uses bf16 autocast
    # Share of windows whose mask is one contiguous run of whole time steps (the dropout shape
    # inpainting fills) topped up with random patches; the rest are unstructured.
    span_prob: float = 0.0
    max_span: int = 16  # time steps (160 ms each)
    # Augmentation in the log-mel domain: a random level offset of up to +-gain_db, and with
    # probability mix_prob another window added (power sum) 0..mix_db dB below.
    gain_db: float = 0.0
    mix_prob: float = 0.0
    mix_db: float = 15.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["betas"] = list(self.betas)
        return data


# What may change between a run and its resume (everything else must match).
_RESUMABLE_CHANGES = {"steps", "save_every", "log_every"}


@dataclass
class TrainResult:
    step: int
    final_loss: float
    wall_seconds: float
    windows_per_second: float
    checkpoint: Path
    history: list[tuple[int, float]] = field(default_factory=list)


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
            raise FileNotFoundError(f"{root}: no such folder")
        for path in root.rglob("*"):
            if path.suffix.lower() in READ_EXTENSIONS and path.is_file():
                found.add(path.resolve())
    if not found:
        raise FileNotFoundError(f"no audio files ({', '.join(sorted(READ_EXTENSIONS))}) found")
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
    progress: Callable[[int, int], None] | None = None,
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
        raise ValueError("none of the audio files gave at least 16 fbank frames")
    lengths = np.array([len(f) for f in fbanks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    tmp = data_path.with_suffix(".tmp.npy")
    np.save(tmp, np.concatenate(fbanks))
    os.replace(tmp, data_path)
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
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(PORTABLE_MAGIC)
        fh.write(len(blob).to_bytes(8, "little"))
        fh.write(blob)
        fh.write(lzma.compress(deltas.tobytes(), preset=6))
    os.replace(tmp, path)
    return path


def load_portable_cache(path: str | os.PathLike[str]) -> tuple[FbankCache, FrontendConfig]:
    """Read a file written by ``save_portable_cache``; refuses anything else by name."""
    import lzma

    path = Path(path)
    with open(path, "rb") as fh:
        if fh.read(len(PORTABLE_MAGIC)) != PORTABLE_MAGIC:
            raise ValueError(f"{path}: not a maedaw portable fbank cache")
        try:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
            raw = lzma.decompress(fh.read())
        except (ValueError, lzma.LZMAError) as exc:
            raise ValueError(f"{path}: damaged portable fbank cache ({exc})") from exc
    frames, mel = int(header["frames"]), int(header["mel"])
    if len(raw) != frames * mel:
        raise ValueError(f"{path}: damaged portable fbank cache (size mismatch)")
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
# 3. Batches


class WindowSampler:
    """Random 1024-frame windows from the cache; batch ``k`` depends only on ``(seed, k)``."""

    def __init__(
        self, cache: FbankCache, config: FrontendConfig, seed: int, pack_short: float
    ) -> None:
        self.cache = cache
        self.target = config.target_frames
        self.pad = config.pad_value
        self.seed = seed
        self.pack_short = pack_short
        self.weights = cache.lengths / cache.lengths.sum()
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
        rng = np.random.default_rng([self.seed, step])
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


def training_mask(model: AudioMAE, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """This step's mask: unstructured rows, and a ``span_prob`` share of span rows."""
    batch, grid = cfg.batch, model.config.grid_size
    mask = random_mask(batch, model.config.num_patches, cfg.mask_ratio, None, generator)
    if cfg.span_prob > 0:
        spans = span_mask(batch, grid, cfg.mask_ratio, cfg.max_span, None, generator)
        pick = torch.rand(batch, generator=generator) < cfg.span_prob
        mask = torch.where(pick[:, None], spans, mask)
    return mask


# --------------------------------------------------------------------------------------------
# 4. Loss


def real_patches(valid_frames: torch.Tensor, model: AudioMAE) -> torch.Tensor:
    """``(B, L)`` True where all 16 frames of the patch are real audio (not padding)."""
    gt, gf = model.config.grid_size
    p = model.config.patch_size
    ends = (torch.arange(gt, device=valid_frames.device) + 1) * p
    columns = ends.unsqueeze(0) <= valid_frames.unsqueeze(1)  # (B, gt)
    return columns.unsqueeze(2).expand(-1, gt, gf).reshape(-1, gt * gf)


def masked_loss(
    model: AudioMAE, fbank: torch.Tensor, mask: torch.Tensor, real: torch.Tensor
) -> torch.Tensor:
    """MSE over masked patches that hold real audio."""
    images = fbank.unsqueeze(1)
    tokens, ids_keep, _ = model.forward_encoder(images, mask)
    pred = model.forward_decoder(tokens, mask, ids_keep)
    return model.loss(images, pred, mask & real)


# --------------------------------------------------------------------------------------------
# 5. Optimiser and schedule


def make_optimizer(model: AudioMAE, cfg: TrainConfig) -> torch.optim.AdamW:
    # No decay on biases, norms, tokens (1-D or scalar-like): the usual ViT/MAE recipe.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak lr at ``step``: linear warm-up, then cosine to ``min_lr``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------------------------
# 6. Checkpoints


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".train.pt")


def save_checkpoint(
    model: AudioMAE,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    out: Path,
    step: int,
    cfg: TrainConfig,
    history: list[tuple[int, float]],
    summary: dict[str, Any],
) -> None:
    """Weights first (usable as a model), then the training state, each written atomically."""
    save_model(model, out, training={**summary, "step": step}, dtype="float32")
    state = {
        "step": step,
        "train_config": cfg.to_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "history": history,
        "wall_seconds": summary.get("wall_seconds", 0.0),
        "evals": summary.get("evals", []),
    }
    tmp = state_path(out).with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, state_path(out))


def _load_state(path: Path) -> dict[str, Any]:
    """The run state saved beside a checkpoint, or a CheckpointError if it is damaged."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises pickle, zip and runtime errors for damaged files
        raise CheckpointError(f"{path}: not a readable training state ({exc})") from exc
    if not isinstance(state, dict) or "train_config" not in state:
        raise CheckpointError(f"{path}: not a maedaw training state")
    return state


def _check_resumable(saved: dict[str, Any], cfg: TrainConfig) -> None:
    now = cfg.to_dict()
    # Settings added after a run was saved take their defaults (what that run used).
    saved = {**TrainConfig().to_dict(), **saved}
    changed = sorted(k for k in now if k not in _RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise CheckpointError(f"cannot resume with different settings ({details})")


# --------------------------------------------------------------------------------------------
# The loop


def heldout_loss(
    model: AudioMAE,
    cache: FbankCache,
    cfg: TrainConfig,
    fe: FrontendConfig,
    device: torch.device,
    batch: int = 32,
) -> dict[str, float]:
    """Masked MSE on held-out windows (each file's first 1024 frames) under the training's two
    mask kinds, with masks fixed by ``cfg.seed``: comparable across checkpoints of a run."""
    gen = torch.Generator().manual_seed(cfg.seed + 12_345)
    totals = {"random": [0.0, 0], "span": [0.0, 0]}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for first in range(0, len(cache.lengths), batch):
            rows, valid = [], []
            for i in range(first, min(first + batch, len(cache.lengths))):
                offset = int(cache.offsets[i])
                take = min(int(cache.lengths[i]), fe.target_frames)
                frames = np.asarray(cache.data[offset : offset + take], dtype=np.float32)
                window, real_frames = frontend.fit_window(torch.from_numpy(frames), fe)
                rows.append(window)
                valid.append(real_frames)
            x = torch.stack(rows).to(device)
            real = real_patches(torch.tensor(valid, device=device), model)
            n = x.shape[0]
            masks = {
                "random": random_mask(n, model.config.num_patches, cfg.mask_ratio, None, gen),
                "span": span_mask(
                    n, model.config.grid_size, cfg.mask_ratio, cfg.max_span, None, gen
                ),
            }
            for kind, mask in masks.items():
                mask = mask.to(device)
                count = int((mask & real).sum())
                if count == 0:
                    continue
                with torch.autocast(
                    device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
                ):
                    loss = masked_loss(model, x, mask, real)
                totals[kind][0] += float(loss) * count
                totals[kind][1] += count
    model.train(was_training)
    return {k: (v[0] / v[1] if v[1] else float("nan")) for k, v in totals.items()}


def best_path(out: Path) -> Path:
    """Where the checkpoint with the lowest held-out loss is kept (weights only)."""
    return out.with_name(out.name + ".best")


def pick_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(
    folders: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    cfg: TrainConfig = TrainConfig(),
    *,
    init: str | os.PathLike[str] | None = None,
    resume: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | None = None,
    stop_at: float | None = None,
    show_progress: bool = True,
    model_config: AudioMAEConfig | None = None,
    cache: tuple[FbankCache, FrontendConfig] | None = None,
    eval_cache: FbankCache | None = None,
) -> TrainResult:
    """Train (or fine-tune from ``init``, or resume ``out``) and return the last checkpoint.

    ``stop_at`` is a ``time.time()`` deadline: the loop saves and returns when it passes
    (a scheduled stop; ``--resume`` continues it later). ``model_config`` replaces the preset
    for a fresh model (tests use tiny ones). ``cache`` trains from a prebuilt (e.g. portable)
    cache and its front end instead of ``folders``; ``eval_cache`` adds a held-out loss at
    every checkpoint and keeps the best weights at ``best_path(out)``.
    """
    out = Path(out)
    dev = pick_device(device)
    torch.manual_seed(cfg.seed)
    paths = scan_audio(folders) if cache is None else []
    fe = DEFAULT_FRONTEND if cache is None else cache[1]
    # Model: fresh, fine-tuned from --init, or resumed from out.
    state: dict[str, Any] | None = None
    if resume and state_path(out).is_file():
        model, meta = load_model(out)
        fe = meta.frontend
        state = _load_state(state_path(out))
        _check_resumable(state["train_config"], cfg)
        logger.info("resuming %s at step %d", out, state["step"])
    elif resume:
        raise CheckpointError(f"{state_path(out)}: nothing to resume")
    elif init is not None:
        model, meta = load_model(init)
        fe = meta.frontend
        if not model.has_decoder:
            raise CheckpointError(f"{init}: has no decoder; cannot continue MAE training")
        logger.info("fine-tuning %s (%s)", meta.model_id, init)
    else:
        model = AudioMAE(model_config or preset(cfg.config, mask_ratio=cfg.mask_ratio))
    model.to(dev).train()

    if cache is None:
        cache_root = Path(cache_dir) if cache_dir else out.parent / f"{out.name}.cache"
        data = build_cache(paths, cache_root, fe, _cache_progress(show_progress))
    else:
        data, cache_fe = cache
        if cache_fe != fe:
            raise ValueError("the cache was made with a different front end than the model's")
    if (fe.target_frames, fe.num_mel_bins) != tuple(model.config.img_size):
        raise ValueError(
            f"front end gives {fe.target_frames}x{fe.num_mel_bins} windows, the model takes "
            f"{tuple(model.config.img_size)}"
        )
    sampler = WindowSampler(data, fe, cfg.seed, cfg.pack_short)

    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    history: list[tuple[int, float]] = []
    step, wall_before = 0, 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history = int(state["step"]), [tuple(h) for h in state["history"]]
        wall_before = float(state.get("wall_seconds", 0.0))

    summary = {
        "data": {
            "folders": [str(f) for f in folders],
            "files": len(data.paths),
            "hours": round(data.hours(fe), 4),
        },
        "train_config": cfg.to_dict(),
        "init": str(init) if init else None,
        "device": str(dev),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    autocast = dev.type == "cuda" or cfg.bf16
    started = time.time()
    seen_windows = 0
    last_loss = float("nan")
    evals: list[dict[str, float]] = list(state.get("evals", [])) if state else []

    def checkpoint() -> None:
        summary["wall_seconds"] = round(wall_before + time.time() - started, 1)
        summary["final_loss"] = last_loss if math.isfinite(last_loss) else None
        if eval_cache is not None:
            scores = heldout_loss(model, eval_cache, cfg, fe, dev)
            scores = {"step": step, **{k: round(v, 5) for k, v in scores.items()}}
            best = min((e["random"] + e["span"] for e in evals), default=math.inf)
            evals.append(scores)
            summary["heldout"] = scores
            logger.info("held-out loss at step %d: %s", step, scores)
            if scores["random"] + scores["span"] < best:
                save_model(model, best_path(out), training={**summary, "step": step})
        summary["evals"] = evals
        save_checkpoint(model, optimizer, scheduler, out, step, cfg, history, summary)
        logger.info("checkpoint at step %d -> %s", step, out)

    # On a GPU the whole cache goes to device memory (2 h of audio is ~200 MB) and windows are
    # gathered there; the window choice (a few integers per window, drawn from (seed, step)
    # only, so resume is unaffected) is done ahead in a thread. Cropping on the CPU instead
    # held an H100 to ~640 windows/s.
    source = None
    pool = None
    pending: dict[int, Future[tuple[np.ndarray, np.ndarray]]] = {}
    if dev.type == "cuda":
        source = torch.from_numpy(np.array(data.data)).to(dev)
        pool = ThreadPoolExecutor(max_workers=2)

    def next_batch(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if pool is None or source is None:
            return sampler.batch(k, cfg.batch)
        for j in range(k, min(k + 4, cfg.steps)):
            if j not in pending:
                pending[j] = pool.submit(sampler.batch_frames, j, cfg.batch)
        return sampler.gather(*pending.pop(k).result(), source)

    with _train_progress(show_progress, cfg.steps, step) as advance:
        while step < cfg.steps:
            fbank, valid = next_batch(step)
            fbank, valid = fbank.to(dev, non_blocking=True), valid.to(dev)
            # Mask, augmentation, dither and dropout of this step depend on (seed, step) only.
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            mask = training_mask(model, cfg, gen).to(dev)
            if data.quant_step > 0:
                dev_gen = torch.Generator(device=dev).manual_seed(cfg.seed * 104_729 + step)
                fbank = dither(fbank, valid, data.quant_step, dev_gen)
            fbank = augment(fbank, valid, cfg, fe, gen)
            torch.manual_seed(cfg.seed * 7_919 + step)
            real = real_patches(valid, model)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                loss = masked_loss(model, fbank, mask, real)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            seen_windows += cfg.batch
            last_loss = float(loss.detach())
            history.append((step, last_loss))
            rate = seen_windows / max(1e-9, time.time() - started)
            advance(step, last_loss, rate, scheduler.get_last_lr()[0])
            if step % cfg.log_every == 0 or step == cfg.steps:
                recent = [v for _, v in history[-cfg.log_every :]]
                logger.info(
                    "step %d/%d loss %.4f (mean of last %d: %.4f) lr %.2e %.2f windows/s",
                    step,
                    cfg.steps,
                    last_loss,
                    len(recent),
                    sum(recent) / len(recent),
                    scheduler.get_last_lr()[0],
                    rate,
                )
            deadline = stop_at is not None and time.time() >= stop_at
            if step % cfg.save_every == 0 or step == cfg.steps or deadline:
                checkpoint()
            if deadline:
                logger.info("deadline reached at step %d; resume with --resume", step)
                break
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
    if step == 0 or (history and history[-1][0] != step):
        checkpoint()
    wall = wall_before + time.time() - started
    return TrainResult(
        step=step,
        final_loss=last_loss,
        wall_seconds=wall,
        windows_per_second=seen_windows / max(1e-9, time.time() - started),
        checkpoint=out,
        history=history,
    )


def export_model(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    dtype: str = "float16",
    extra_training: dict[str, Any] | None = None,
) -> Path:
    """Copy a trained checkpoint to a shippable pair (float16 by default; decoder kept)."""
    model, meta = load_model(src)
    training = {**meta.training, **(extra_training or {})}
    save_model(model, dst, meta.meta, frontend=meta.frontend, training=training, dtype=dtype)
    return Path(dst)


def checkpoint_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    return dict(read_checkpoint_meta(path).training)


# --------------------------------------------------------------------------------------------
# Progress display (rich bar in a terminal; log lines otherwise)


def _cache_progress(enabled: bool) -> Callable[[int, int], None] | None:
    if not enabled:
        return None

    def report(done: int, total: int) -> None:
        if done == total or done % 200 == 0:
            logger.info("fbank cache: %d/%d files", done, total)

    return report


class _NullBar:
    def __enter__(self) -> Callable[[int, float, float, float], None]:
        return lambda step, loss, rate, lr: None

    def __exit__(self, *exc: object) -> None:
        return None


class _RichBar:
    def __init__(self, total: int, start: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:.2f} win/s"),
            TextColumn("lr {task.fields[lr]:.1e}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.task = self.progress.add_task(
            "train", total=total, completed=start, loss=float("nan"), rate=0.0, lr=0.0
        )

    def __enter__(self) -> Callable[[int, float, float, float], None]:
        self.progress.start()

        def advance(step: int, loss: float, rate: float, lr: float) -> None:
            self.progress.update(self.task, completed=step, loss=loss, rate=rate, lr=lr)

        return advance

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def _train_progress(enabled: bool, total: int, start: int) -> _RichBar | _NullBar:
    return _RichBar(total, start) if enabled else _NullBar()
