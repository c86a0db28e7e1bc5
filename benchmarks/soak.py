"""``maedaw bench soak``: the daemon under a long run and a burst (issue #18's targets).

A real ``maedaw serve`` child process gets ``jobs`` small repairs, a few in flight at a
time, while a second client pings it; its resident memory is read after a warm-up and at
the end. Then a burst (``clients`` x ``per_client`` repairs at once into the queue) must be
answered in full: every request ``accepted`` or ``busy``, nothing silently lost.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
import time
from pathlib import Path

from maedaw.bridge.auth import read_token, token_path
from maedaw.bridge.lifecycle import start_child
from maedaw.dsp.signals import music_clip

from .osc import _percentiles

log = logging.getLogger(__name__)

WARMUP_JOBS = 50  # the model loaded and every cache filled before the first RSS reading

# Issue #18's targets: what a run must show for ``maedaw bench soak`` to exit 0.
MAX_RSS_GROWTH = 0.05
MAX_PING_P99_MS = 5.0


def _rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` (Linux /proc; None elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


_TOKENS: dict[int, str] = {}  # port -> the bench daemon's token (every request is signed)


class _Client:
    def __init__(self, port: int) -> None:
        self.server = ("127.0.0.1", port)
        self.token = _TOKENS.get(port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    def send(self, address: str, *args: object) -> None:
        from pythonosc.osc_message_builder import build_msg

        from maedaw.bridge.auth import seal

        packet = build_msg(address, list(args)).dgram
        self.sock.sendto(seal(packet, self.token) if self.token else packet, self.server)

    def recv(self, timeout_s: float) -> tuple[str, list]:
        from pythonosc.osc_message import OscMessage

        self.sock.settimeout(timeout_s)
        message = OscMessage(self.sock.recvfrom(70_000)[0])
        return message.address, list(message.params)


def _pinger(port: int, stop: threading.Event, warm: threading.Event, out: list[float]) -> None:
    """Ping every 10 ms; round trips are kept once ``warm`` is set (the start-up model load
    runs in the daemon's process and is not what a job costs)."""
    client = _Client(port)
    n = 0
    while not stop.is_set():
        tag = f"p{n}"
        n += 1
        clock = time.perf_counter()
        client.send("/maedaw/ping", tag)
        try:
            while True:
                address, params = client.recv(2.0)
                if address == "/maedaw/pong" and params[0] == tag:
                    if warm.is_set():
                        out.append(1000.0 * (time.perf_counter() - clock))
                    break
        except TimeoutError:
            out.append(2000.0)  # a lost ping counts as the worst case
        time.sleep(0.01)


def _soak(
    client: _Client, take: Path, jobs: int, in_flight: int, pid: int, warm: threading.Event
) -> dict:
    sent = done = failed = 0
    open_jobs: set[str] = set()
    rss_warm = None
    while done + failed < jobs:
        while sent < jobs and len(open_jobs) < in_flight:
            name = f"soak{sent}"
            client.send("/maedaw/repair", name, str(take), 0.0, -1.0, str(take.parent))
            open_jobs.add(name)
            sent += 1
        address, params = client.recv(120.0)
        if address in ("/maedaw/done", "/maedaw/error") and params[0] in open_jobs:
            open_jobs.discard(params[0])
            if address == "/maedaw/done":
                done += 1
            else:
                failed += 1
                log.warning("soak job %s: %s", params[0], params[2:])
            if done + failed == min(WARMUP_JOBS, jobs // 2):
                rss_warm = _rss_mb(pid)
                warm.set()
    return {"done": done, "failed": failed, "rss_warm_mb": rss_warm, "rss_end_mb": _rss_mb(pid)}


def _burst(port: int, take: Path, clients: int, per_client: int) -> dict:
    sockets = [_Client(port) for _ in range(clients)]
    answers: list[dict[str, str]] = [{} for _ in sockets]
    barrier = threading.Barrier(clients)

    def run(n: int) -> None:
        client = sockets[n]
        barrier.wait()
        for k in range(per_client):
            client.send("/maedaw/repair", f"burst{n}-{k}", str(take), 0.0, -1.0, str(take.parent))
        deadline = time.monotonic() + 30
        while len(answers[n]) < per_client and time.monotonic() < deadline:
            try:
                address, params = client.recv(max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                return
            if address == "/maedaw/accepted" or (address == "/maedaw/error" and not params[1]):
                answers[n].setdefault(params[0], "accepted" if params[1] else params[2])

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    codes = [code for per in answers for code in per.values()]
    return {
        "requests": clients * per_client,
        "answered": len(codes),
        **{code: codes.count(code) for code in sorted(set(codes))},
    }


def bench_soak(
    jobs: int = 1000, in_flight: int = 4, clients: int = 20, per_client: int = 25
) -> dict:
    """Run the soak and the burst against a fresh daemon; return what was measured."""
    import json

    from maedaw.dsp.audio_io import SampleFormat, write_stem

    with tempfile.TemporaryDirectory(prefix="maedaw-bench-soak-") as folder:
        root = Path(folder)
        (root / "media").mkdir()
        take = write_stem(
            root / "media" / "take.wav",
            music_clip(48_000, 0.5, channels=1, seed=2),
            48_000,
            SampleFormat.INT16,
        )
        daemon, port = start_child(
            ["--state-dir", str(root / "state"), "--max-queue", "16", "--allow-root", str(root)],
            root / "serve.log",
        )
        _TOKENS[port] = read_token(token_path(root / "state"))
        try:
            pings: list[float] = []
            stop, warm = threading.Event(), threading.Event()
            pinger = threading.Thread(target=_pinger, args=(port, stop, warm, pings), daemon=True)
            pinger.start()
            clock = time.perf_counter()
            soak = _soak(_Client(port), take, jobs, in_flight, daemon.pid, warm)
            soak_s = time.perf_counter() - clock
            stop.set()
            pinger.join(5)
            burst = _burst(port, take, clients, per_client)
            status = _Client(port)
            status.send("/maedaw/status", "", 0, 1)
            while (reply := status.recv(10.0))[0] != "/maedaw/status":
                pass
            counters = json.loads(reply[1][1])["daemon"]
            total = json.loads(reply[1][1])["total"]
        finally:
            daemon.terminate()
            daemon.wait(60)
    warm, end = soak["rss_warm_mb"], soak["rss_end_mb"]
    result = {
        "jobs": jobs,
        "soak": soak,
        "soak_s": soak_s,
        "rss_growth": None if not warm or not end else end / warm - 1.0,
        "ping_during_jobs": _percentiles(pings),
        "burst": burst,
        "jobs_known": total,
        "daemon": counters,
    }
    result["missed"] = missed_targets(result)
    return result


def missed_targets(result: dict) -> list[str]:
    """The targets a soak result misses, in words (empty: every target held). A regression
    in any of them makes the bench fail, not just print a worse number."""
    missed = []
    soak, burst = result["soak"], result["burst"]
    if soak["failed"] or soak["done"] < result["jobs"]:
        missed.append(f"{soak['done']} of {result['jobs']} jobs done, {soak['failed']} failed")
    growth = result["rss_growth"]
    if growth is None:
        missed.append("daemon RSS could not be read")
    elif growth > MAX_RSS_GROWTH:
        missed.append(f"RSS grew {100 * growth:.1f} % (target <= {100 * MAX_RSS_GROWTH:.0f} %)")
    p99 = result["ping_during_jobs"].get("p99_ms")
    if p99 is None or p99 > MAX_PING_P99_MS:
        missed.append(f"ping p99 {p99} ms during jobs (target <= {MAX_PING_P99_MS} ms)")
    if burst["answered"] < burst["requests"]:
        missed.append(f"burst: {burst['requests'] - burst['answered']} requests got no reply")
    return missed
