"""Scan a whole file (or a long region) for damage in bounded memory."""

from __future__ import annotations

import os

from .audio_io import AudioError, iter_blocks, probe, to_frames
from .detect import DetectConfig, StreamingDetector
from .repair import ProgressFn
from .spans import DamageReport

SCAN_BLOCK_S = 2.0  # seconds decoded at a time: memory stays flat however long the file


def scan_file(
    path: str | os.PathLike,
    start_s: float | None = None,
    end_s: float | None = None,
    config: DetectConfig | None = None,
    progress: ProgressFn | None = None,
) -> DamageReport:
    """Detect damage in ``[start_s, end_s]`` of ``path``, block by block."""
    info = probe(path)
    rate = info.sample_rate
    start = 0 if start_s is None else to_frames(start_s, rate)
    end = info.frames if end_s is None else to_frames(end_s, rate)
    if not 0 <= start < end <= info.frames:
        raise AudioError(
            f"{info.path}: region [{start / rate:.3f} s, {end / rate:.3f} s] is empty or "
            f"runs past the end of the file ({info.duration:.3f} s)"
        )
    detector = StreamingDetector(rate, info.num_channels, config, start=start)
    spans = []
    for position, block in iter_blocks(path, start, end, block=int(SCAN_BLOCK_S * rate)):
        spans += detector.feed(block)
        if progress is not None:
            progress((position + block.shape[1] - start) / (end - start), "scanning")
    spans += detector.finish()
    return DamageReport(rate, info.num_channels, start, end, sorted(spans), str(info.path))
