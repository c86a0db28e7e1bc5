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


def _percentiles(samples_ms: list[float]) -> dict:
    values = np.array(samples_ms)
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "max_ms": float(values.max()),
        "n": int(values.size),
    }


def bench_osc(pings: int = 500) -> dict:
    """Ping round trips (idle and during a repair) and request -> stem latency.

    Starts a real ``maedaw serve`` on an ephemeral port in a temporary folder
    and talks to it over loopback UDP with python-osc's message builder.
    """
    import socket

    from pythonosc.osc_message import OscMessage
    from pythonosc.osc_message_builder import build_msg

    from maedaw.dsp.audio_io import SampleFormat, write_stem
    from maedaw.dsp.damage import insert_dropout as dropout

    with tempfile.TemporaryDirectory(prefix="maedaw-bench-osc-") as folder:
        root = Path(folder)
        clip = music_clip(48_000, 10.0, channels=2, seed=1)
        for k in range(4):
            dropout(clip, k % 2, int((1.3 + 2.1 * k) * 48_000), 480)
        take = write_stem(root / "take.wav", clip, 48_000, SampleFormat.INT24)
        log_path = root / "serve.log"
        command = [
            sys.executable,
            "-m",
            "maedaw.bridge.cli",
            "serve",
            "--port",
            "0",
            "--state-dir",
            str(root / "state"),
            "--models-dir",
            str(root / "models"),
        ]
        with open(log_path, "w") as log_file:
            daemon = subprocess.Popen(command, stderr=log_file)
        try:
            deadline = time.monotonic() + 30
            while "listening on" not in log_path.read_text():
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise RuntimeError(f"daemon did not start: {log_path.read_text()}")
                time.sleep(0.05)
            port = int(log_path.read_text().split("listening on ")[1].split()[0].rsplit(":")[1])
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5.0)
            server = ("127.0.0.1", port)

            def send(address: str, *args: object) -> None:
                sock.sendto(build_msg(address, list(args)).dgram, server)

            def ping_round(tag: str) -> float:
                clock = time.perf_counter()
                send("/maedaw/ping", tag)
                while True:
                    message = OscMessage(sock.recvfrom(70_000)[0])
                    if message.address == "/maedaw/pong" and message.params[0] == tag:
                        return 1000.0 * (time.perf_counter() - clock)

            idle = [ping_round(f"idle{i}") for i in range(pings)]

            # Request -> stem on disk, while pinging: one repair of a 10 s stereo region.
            clock = time.perf_counter()
            send("/maedaw/repair", "bench", str(take), 0.0, 10.0, str(root))
            busy: list[float] = []
            stem_latency = None
            while stem_latency is None:
                tag = f"busy{len(busy)}"
                start = time.perf_counter()
                send("/maedaw/ping", tag)
                while True:
                    message = OscMessage(sock.recvfrom(70_000)[0])
                    if message.address == "/maedaw/done":
                        stem_latency = time.perf_counter() - clock
                    elif message.address == "/maedaw/error":
                        raise RuntimeError(f"repair failed: {message.params}")
                    elif message.address == "/maedaw/pong" and message.params[0] == tag:
                        busy.append(1000.0 * (time.perf_counter() - start))
                        break
                time.sleep(0.002)

            # Hot swap: copy a compact checkpoint in, time until the daemon serves it.
            import shutil

            from maedaw.models.audiomae import AudioMAE, preset
            from maedaw.models.checkpoint import save_model

            save_model(
                AudioMAE(preset("compact")).eval(), root / "staging" / "swap", dtype="float16"
            )
            send("/maedaw/ping", "hello")  # be a recent client, so the watcher tells us
            clock = time.perf_counter()
            for suffix in (".safetensors", ".json"):
                shutil.copy(root / "staging" / f"swap{suffix}", root / "models" / f"swap{suffix}")
            sock.settimeout(60.0)
            while True:
                message = OscMessage(sock.recvfrom(70_000)[0])
                if message.address in ("/maedaw/model/loaded", "/maedaw/model/error"):
                    swap_s = time.perf_counter() - clock
                    swapped = message.address == "/maedaw/model/loaded"
                    break
        finally:
            daemon.terminate()
            daemon.wait(30)
    return {
        "ping_idle": _percentiles(idle),
        "ping_during_repair": _percentiles(busy),
        "request_to_stem_s": stem_latency,
        "hot_swap_s": swap_s if swapped else None,
        "hot_swap_debounce_s": 1.0,
        "region": "10 s, 48 kHz, stereo, 24-bit, 4 dropouts of 10 ms",
    }
