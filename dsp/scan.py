"""Scan a whole file (or a long region) for damage in bounded memory."""

from __future__ import annotations

import os
from dataclasses import replace

from maedaw.core.util import ProgressFn

from .audio_io import check_region, iter_blocks, probe, to_frames
from .detect import DetectConfig, StreamingDetector, sensitivity
from .spans import DamageReport

SCAN_BLOCK_S = 2.0  # seconds decoded at a time: memory stays flat however long the file


def scan_frames(
    path: str | os.PathLike,
    start: int | None,
    end: int | None,
    config: DetectConfig | None = None,
    progress: ProgressFn | None = None,
    level: str | None = None,
) -> DamageReport:
    """Detect damage in frames ``[start, end)`` of ``path``, block by block.

    ``level`` (a sensitivity name) sorts the findings: ``spans`` are what auto-repair would
    write, ``left_alone`` the rest with the reason; None keeps every finding in ``spans``.
    """
    info = probe(path)
    start, end = check_region(info, start, end)
    rate = info.sample_rate
    detector = StreamingDetector(rate, info.num_channels, config, start=start)
    spans = []
    for position, block in iter_blocks(path, start, end, block=int(SCAN_BLOCK_S * rate)):
        spans += detector.feed(block)
        if progress is not None:
            progress((position + block.shape[1] - start) / (end - start), "scanning")
    spans += detector.finish()
    report = DamageReport(rate, info.num_channels, start, end, sorted(spans), str(info.path))
    if level is not None:
        doubt = sensitivity(level).doubt
        report.left_alone = [replace(s, doubt=doubt(s)) for s in report.spans if doubt(s)]
        report.spans = [s for s in report.spans if not doubt(s)]
    return report


def scan_file(
    path: str | os.PathLike,
    start_s: float | None = None,
    end_s: float | None = None,
    config: DetectConfig | None = None,
    progress: ProgressFn | None = None,
    level: str | None = None,
) -> DamageReport:
    """Detect damage in ``[start_s, end_s]`` (seconds; None: the file's ends); ``level``: as
    :func:`scan_frames`."""
    rate = probe(path).sample_rate
    start = None if start_s is None else to_frames(start_s, rate)
    end = None if end_s is None else to_frames(end_s, rate)
    return scan_frames(path, start, end, config, progress, level)
