"""``maedaw bench osc``: daemon ping latency (idle and during a repair), request -> stem, hot swap.

A real ``maedaw serve`` runs as a child process, so the numbers are a client's.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from maedaw.bridge.auth import read_token, seal, token_path
from maedaw.bridge.lifecycle import start_child
from maedaw.dsp.signals import music_clip

log = logging.getLogger(__name__)


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
        daemon, port = start_child(
            [
                "--state-dir",
                str(root / "state"),
                "--allow-root",
                str(root),
                "--models-dir",
                str(root / "models"),
            ],
            root / "serve.log",
        )
        token = read_token(token_path(root / "state"))  # every request is signed, as a DAW's
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5.0)
            server = ("127.0.0.1", port)

            def send(address: str, *args: object) -> None:
                sock.sendto(seal(build_msg(address, list(args)).dgram, token), server)

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
