"""``maedaw bench scan``: how fast, and in how much memory, a long file is scanned.

The scan runs as a separate ``maedaw detect`` process, so the numbers are what
a user gets (start-up and file decoding included) and the peak RSS is that
process's alone, not the benchmark's.
"""

from __future__ import annotations

import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pedalboard.io import AudioFile

from maedaw.dsp.damage import insert_click, insert_dropout
from maedaw.dsp.signals import music_clip

log = logging.getLogger(__name__)

LOOP_SECONDS = 37.0  # a loop length that is no multiple of the scan's block size


def write_long_file(path: Path, minutes: float, rate: int, channels: int, seed: int = 0) -> int:
    """Write ``minutes`` of 16-bit music-like audio with sparse damage; return frames."""
    rng = np.random.default_rng(seed)
    loop = music_clip(rate, LOOP_SECONDS, channels, seed=seed)
    total = int(minutes * 60 * rate)
    written = 0
    with AudioFile(str(path), "w", rate, channels, bit_depth=16) as f:
        while written < total:
            block = loop[:, : min(loop.shape[1], total - written)].copy()
            block *= rng.uniform(0.3, 1.0)  # vary the level loop to loop
            block += 1e-3 * rng.standard_normal(block.shape)
            # A few real defects per loop, so the scan does its full work.
            for _ in range(2):
                channel = int(rng.integers(channels))
                start = int(rng.integers(rate, max(rate + 1, block.shape[1] - rate)))
                insert_dropout(block, channel, start, int(0.01 * rate))
                insert_click(block, channel, start + rate // 2, 3, 0.5, rng)
            f.write(np.clip(block * 32767.0, -32768, 32767).astype(np.int16))
            written += block.shape[1]
    return written


def bench_scan(
    minutes: float = 60.0, rate: int = 48_000, channels: int = 2, keep: Path | None = None
) -> dict:
    """Scan a synthetic file in a child process; report × real time and peak RSS."""
    with tempfile.TemporaryDirectory(prefix="maedaw-bench-") as folder:
        path = keep or Path(folder) / "long.wav"
        log.info("writing %.0f min of %d Hz × %d ch to %s", minutes, rate, channels, path)
        frames = write_long_file(path, minutes, rate, channels)
        command = [sys.executable, "-m", "maedaw.bridge.cli", "detect", str(path), "--json"]
        clock = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - clock
        if done.returncode != 0:
            raise RuntimeError(f"scan failed: {done.stderr.strip()}")
        spans = len(json.loads(done.stdout)["spans"])
    # ru_maxrss of waited-for children, in KiB on Linux.
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    audio_seconds = frames / rate
    return {
        "audio_minutes": audio_seconds / 60.0,
        "rate": rate,
        "channels": channels,
        "seconds": seconds,
        "x_realtime": audio_seconds / seconds,
        "peak_rss_mb": peak_kib / 1024.0,
        "spans_found": spans,
        "command": " ".join(command[1:]),
    }
