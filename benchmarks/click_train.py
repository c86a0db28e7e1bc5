"""``maedaw bench click-train``: train the click judge (:mod:`maedaw.dsp.click_net`) on the corpus.

Material: the source recordings of the corpus manifest's real ``train`` rows, read at their
own rate and channel count from the folders ``maedaw corpus build`` extracted the Debian
packages into (``<root>/<package>/<path in the package>``, first root that has it). Held-out
packages and sources never appear; ``exclude_packages`` are dropped too (hydrogen-drumkits,
whose kits the ``bench detect`` folders use). Besides them, ``synthetic_clips``
plucked-string clips synthesised at 22.05-96 kHz (the strummed attacks the game audio lacks).
Whole packages (``validation_packages``) are kept apart to choose the sensitivity bars and to
report what the judge does on packages it was not trained on.

For the first ``max_seconds`` of each recording, each channel (at most two): a copy with
``clicks_per_channel`` clicks inserted at random places where the programme is active, at
least 40 ms apart. Half are inserted as ``bench detect`` inserts them (a Hann bump of 1-8
samples at 0.2-0.6 full scale), half in other shapes real clicks take (single-sample spikes,
doublets, short decaying impulses, stuck samples) at 0.03-0.8 full scale, so the judge does
not learn one benchmark's click. Every candidate zone the click test nominates on that copy
is an example: a click when it holds an inserted click sample (its per-sample target marks
those samples), a transient otherwise. The recordings are assumed clean: a real click in one
is a wrong label, rare enough not to matter, and it teaches caution.

Training (torch, CPU): per-sample binary cross-entropy on click windows, plus the window's
largest logit against its label, transients weighted ``negative_weight`` times (a false alarm
writes over clean audio, a miss leaves a click where it was). The bars: per sensitivity, the
lowest bar that lets at most ``allowed_per_10min`` transient zones of the validation packages
through per 10 minutes of their audio (low: none, and at least one step stricter than
normal; normal: a half; high: six), where a zone the AR test does not confirm counts
at its own score (so the bars are, if anything, strict for them).
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from maedaw.core.util import ProgressFn
from maedaw.dsp.audio_io import AudioError, probe, read_region
from maedaw.dsp.click_net import HALF, KERNEL, N_SCALARS, WINDOW, ClickNet
from maedaw.dsp.detect import DetectConfig, click_zones
from maedaw.dsp.signals import music_clip

log = logging.getLogger(__name__)

SHAPES: Final = ("hann", "spike", "doublet", "decay", "stuck")


@dataclass(frozen=True)
class ClickTrainConfig:
    max_seconds: float = 30.0  # read at most this much of each recording
    clicks_per_channel: int = 8
    max_per_package: int = 400  # a seeded sample of each package's recordings
    exclude_packages: tuple[str, ...] = ("hydrogen-drumkits",)
    validation_packages: tuple[str, ...] = (
        "wesnoth-1.16-data",
        "supertuxkart-data",
        "teeworlds-data",
    )
    channels: int = 24  # width of every convolution
    layers: int = 5
    epochs: int = 20
    batch: int = 512
    lr: float = 2e-3
    negative_weight: float = 3.0
    allowed_per_10min: tuple[tuple[str, float], ...] = (
        ("low", 0.0),
        ("normal", 0.5),
        ("high", 6.0),
    )
    synthetic_clips: int = 200  # synthesised plucked-string clips trained on besides
    seed: int = 0
    workers: int = 2


SYNTH_PACKAGE: Final = "synthesised-plucks"
SYNTH_RATES: Final = (22_050, 32_000, 44_100, 48_000, 96_000)


@dataclass(frozen=True)
class Recording:
    """A file of a package, or (``synth_seed`` set) a plucked-string clip synthesised at
    ``synth_rate`` by :func:`maedaw.dsp.signals.music_clip`."""

    path: Path
    package: str
    synth_seed: int | None = None
    synth_rate: int = 48_000

    def read(self, max_seconds: float) -> tuple[np.ndarray, int]:
        """(channels, frames) float samples and their rate; raises AudioError."""
        if self.synth_seed is not None:
            rng = np.random.default_rng(self.synth_seed)
            seconds = min(max_seconds, float(rng.uniform(4.0, 10.0)))
            clip = music_clip(self.synth_rate, seconds, int(rng.integers(1, 3)), self.synth_seed)
            # -3 dBFS peaks as made; real programme sits anywhere below that.
            return clip * 10.0 ** (-float(rng.uniform(0.0, 24.0)) / 20.0), self.synth_rate
        info = probe(self.path)
        frames = min(info.frames, round(max_seconds * info.sample_rate))
        return read_region(self.path, 0, frames).samples, info.sample_rate


def synthesised_recordings(config: ClickTrainConfig) -> list[Recording]:
    """``synthetic_clips`` plucked-string clips at the rates of SYNTH_RATES in turn: tonal
    programme with a strum of sharp attacks every half second, which the corpus's game audio
    has little of (the demo's material; its seed 0 is never used here)."""
    return [
        Recording(
            Path(f"{SYNTH_PACKAGE}/{i:04d}.wav"),
            SYNTH_PACKAGE,
            synth_seed=1000 + i,
            synth_rate=SYNTH_RATES[i % len(SYNTH_RATES)],
        )
        for i in range(config.synthetic_clips)
    ]


def training_recordings(
    manifest: Path, roots: Sequence[Path], config: ClickTrainConfig
) -> list[Recording]:
    """The real ``train`` rows' source files found under ``roots``, each once, at most
    ``max_per_package`` per package (a seeded sample), sorted."""
    by_package: dict[str, set[Path]] = {}
    with manifest.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["role"] != "train" or row["synthetic"] not in ("", "0"):
                continue
            if row["package"] in config.exclude_packages:
                continue
            for root in roots:
                path = root / row["package"] / row["source"].lstrip("/")
                if path.is_file():
                    by_package.setdefault(row["package"], set()).add(path)
                    break
    rng = np.random.default_rng(config.seed)
    out: list[Recording] = []
    for package in sorted(by_package):
        paths = sorted(by_package[package])
        if len(paths) > config.max_per_package:
            keep = rng.choice(len(paths), config.max_per_package, replace=False)
            paths = [paths[i] for i in sorted(keep)]
        out += [Recording(p, package) for p in paths]
    return out


def insert_click_shape(
    y: np.ndarray, start: int, shape: str, rng: np.random.Generator
) -> np.ndarray:
    """Add one click of ``shape`` to the 1-D ``y`` at ``start`` in place; return the indices
    of the samples it changed."""
    if shape == "hann":  # exactly as bench detect inserts it (dsp.damage.insert_click)
        length = int(rng.integers(1, 9))
        amplitude = float(rng.uniform(0.2, 0.6))
        bump = np.hanning(length + 2)[1:-1] if length > 2 else np.ones(length)
        bump = bump * rng.uniform(0.7, 1.0, length)
    else:
        amplitude = float(np.exp(rng.uniform(math.log(0.03), math.log(0.8))))
        if shape == "spike":
            bump = np.ones(1)
        elif shape == "doublet":
            bump = np.array([1.0, -float(rng.uniform(0.5, 1.0))])
        elif shape == "decay":
            length = int(rng.integers(3, 17))
            bump = np.exp(-np.arange(length) / rng.uniform(0.7, 4.0))
            bump *= np.where(rng.random(length) < 0.2, -1.0, 1.0)
        else:  # stuck: samples frozen at one wrong value (a buffer glitch)
            length = int(rng.integers(2, 9))
            value = float(rng.choice([-1.0, 1.0])) * amplitude
            idx = np.arange(start, start + length)
            y[idx] = value
            return idx
    sign = float(rng.choice([-1.0, 1.0]))
    idx = np.arange(start, start + bump.size)
    y[idx] = np.clip(y[idx] + sign * amplitude * bump, -1.0, 1.0)
    return idx


def _active_starts(y: np.ndarray, rate: int) -> np.ndarray:
    """Samples where the programme is within 30 dB of its loudest 10 ms, 50 ms from the ends."""
    hop = max(1, rate // 100)
    power = np.convolve(y * y, np.ones(hop) / hop, mode="same")
    loud = float(power.max()) if power.size else 0.0
    edge = rate // 20
    if loud <= 0 or y.size <= 2 * edge:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(power >= loud * 1e-3)
    return starts[(starts >= edge) & (starts < y.size - edge)]


def examples_from(
    recording: Recording, config: ClickTrainConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Windows, scalars, window labels and per-sample targets (click windows only, else an
    all-zero row) of one recording, and how much was read."""
    rng = np.random.default_rng(seed)
    empty = (
        np.zeros((0, 2, WINDOW), np.float32),
        np.zeros((0, N_SCALARS), np.float32),
        np.zeros(0, bool),
        np.zeros((0, WINDOW), bool),
    )
    try:
        x, rate = recording.read(config.max_seconds)
    except AudioError as exc:
        log.warning("skipped %s: %s", recording.path, exc)
        return (*empty, {"seconds": 0.0, "inserted": 0})
    if x.shape[1] < rate // 2:
        return (*empty, {"seconds": 0.0, "inserted": 0})
    detect_config = DetectConfig()
    parts: list[tuple[np.ndarray, ...]] = []
    inserted = 0
    for channel in range(min(x.shape[0], 2)):
        y = x[channel].copy()
        clicked = np.zeros(y.size, bool)
        starts = _active_starts(y, rate)
        gap = round(0.04 * rate)
        for _ in range(config.clicks_per_channel):
            if starts.size == 0:
                break
            start = int(rng.choice(starts))
            if clicked[max(0, start - gap) : start + gap].any():
                continue
            shape = SHAPES[0] if rng.random() < 0.5 else str(rng.choice(SHAPES[1:]))
            clicked[insert_click_shape(y, start, shape, rng)] = True
            inserted += 1
        zones, windows, scalars = click_zones(y, rate, detect_config)
        if not zones:
            continue
        labels = np.array([clicked[z.lo : z.hi].any() for z in zones])
        targets = np.zeros((len(zones), WINDOW), bool)
        for i, z in enumerate(zones):
            if labels[i]:
                lo, hi = z.centre - HALF, z.centre - HALF + WINDOW
                inside = np.arange(max(lo, 0), min(hi, y.size))
                targets[i, inside - lo] = clicked[inside]
        parts.append((windows, scalars, labels, targets))
    if not parts:
        return (*empty, {"seconds": x.shape[1] / rate, "inserted": inserted})
    w, s, lab, t = (np.concatenate(p) for p in zip(*parts, strict=True))
    return w, s, lab, t, {"seconds": min(x.shape[0], 2) * x.shape[1] / rate, "inserted": inserted}


def _examples_job(args: tuple[Recording, ClickTrainConfig, int]) -> tuple:
    return examples_from(*args)


def collect(
    recordings: list[Recording], config: ClickTrainConfig, progress: ProgressFn | None = None
) -> dict[str, np.ndarray]:
    """All examples of ``recordings``, with the package each came from (index into the
    sorted package names, in ``packages``) and the channel-seconds read per package."""
    packages = sorted({r.package for r in recordings})
    jobs = [(r, config, config.seed * 1_000_003 + i) for i, r in enumerate(recordings)]
    parts = []
    seconds = np.zeros(len(packages))
    inserted = 0
    with ProcessPoolExecutor(max_workers=config.workers) as pool:
        for n, (rec, result) in enumerate(
            zip(recordings, pool.map(_examples_job, jobs, chunksize=4), strict=True)
        ):
            if progress:
                progress(n / max(len(recordings), 1), rec.path.name)
            w, s, lab, t, stats = result
            seconds[packages.index(rec.package)] += stats["seconds"]
            inserted += stats["inserted"]
            parts.append((w, s, lab, t, np.full(lab.size, packages.index(rec.package))))
    w, s, lab, t, pkg = (np.concatenate(p) for p in zip(*parts, strict=True))
    return {
        "windows": w,
        "scalars": s,
        "labels": lab,
        "targets": t,
        "package": pkg,
        "packages": np.array(packages),
        "seconds": seconds,
        "inserted": np.array(inserted),
    }


# -- training ------------------------------------------------------------------------------
def _torch_net(config: ClickTrainConfig, mean: np.ndarray, scale: np.ndarray):
    import torch
    from torch import nn

    class Net(nn.Module):
        """The layers of :class:`ClickNet`, in torch."""

        def __init__(self) -> None:
            super().__init__()
            chans = [2] + [config.channels] * config.layers
            self.convs = nn.ModuleList(
                nn.Conv1d(a, b, KERNEL, padding=2**i * (KERNEL - 1) // 2, dilation=2**i)
                for i, (a, b) in enumerate(itertools.pairwise(chans))
            )
            self.head = nn.Linear(2 * config.channels + N_SCALARS, 1)
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

        def forward(self, windows: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
            h = windows
            for conv in self.convs:
                h = torch.relu(conv(h))
            z = (scalars - self.mean) / self.scale
            c = h.shape[1]
            per_zone = h.mean(dim=2) @ self.head.weight[0, c : 2 * c]
            per_zone = per_zone + z @ self.head.weight[0, 2 * c :] + self.head.bias[0]
            return torch.einsum("c,bcw->bw", self.head.weight[0, :c], h) + per_zone[:, None]

    return Net()


def to_click_net(net: Any, provenance: dict[str, Any]) -> ClickNet:
    """The numpy judge with ``net``'s weights."""
    convs = tuple(
        (c.weight.detach().numpy().copy(), c.bias.detach().numpy().copy()) for c in net.convs
    )
    return ClickNet(
        convs,
        net.head.weight.detach().numpy()[0].copy(),
        float(net.head.bias.detach()[0]),
        net.mean.numpy().copy(),
        net.scale.numpy().copy(),
        provenance,
    )


def zone_scores(judge: ClickNet, windows: np.ndarray, scalars: np.ndarray) -> np.ndarray:
    """Each zone's confidence (its largest per-sample probability), in batches."""
    out = [
        judge.probabilities(windows[i : i + 4096], scalars[i : i + 4096]).max(axis=1)
        for i in range(0, len(windows), 4096)
    ]
    return np.concatenate(out) if out else np.zeros(0)


def train(
    data: dict[str, np.ndarray], config: ClickTrainConfig, progress: ProgressFn | None = None
) -> tuple[Any, np.ndarray]:
    """Fit the torch net on the non-validation packages; returns it and the training mask."""
    import torch

    torch.manual_seed(config.seed)
    names = list(data["packages"])
    val = np.isin(
        data["package"], [names.index(p) for p in config.validation_packages if p in names]
    )
    fit = ~val
    scalars = data["scalars"]
    mean = scalars[fit].mean(axis=0)
    scale = scalars[fit].std(axis=0) + 1e-3
    net = _torch_net(config, mean, scale)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    pos = np.flatnonzero(fit & data["labels"])
    neg = np.flatnonzero(fit & ~data["labels"])
    if pos.size == 0 or neg.size == 0:
        raise ValueError("training needs both clicks and transients")
    rng = np.random.default_rng(config.seed)
    steps_per_epoch = max(1, (pos.size + neg.size) // config.batch)
    total = config.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=total)
    w_all = torch.from_numpy(data["windows"])
    s_all = torch.from_numpy(scalars)
    t_all = torch.from_numpy(data["targets"].astype(np.float32))
    l_all = torch.from_numpy(data["labels"].astype(np.float32))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    step = 0
    for epoch in range(config.epochs):
        running = 0.0
        for _ in range(steps_per_epoch):
            # A quarter of every batch are clicks: they are rare among the zones.
            n_pos = config.batch // 4
            idx = np.concatenate([rng.choice(pos, n_pos), rng.choice(neg, config.batch - n_pos)])
            idx_t = torch.from_numpy(idx)
            logits = net(w_all[idx_t], s_all[idx_t])
            label = l_all[idx_t]
            weight = torch.where(label > 0, 1.0, config.negative_weight)
            window_loss = bce(logits.max(dim=1).values, label, weight=weight)
            is_click = label > 0
            sample_loss = bce(logits[is_click], t_all[idx_t][is_click])
            loss = window_loss + 0.5 * sample_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            running += float(loss.detach())
            step += 1
            if progress:
                progress(step / total, f"epoch {epoch + 1} loss {running / (_ + 1):.4f}")
        log.info("epoch %d: loss %.4f", epoch + 1, running / steps_per_epoch)
    return net, fit


def choose_bars(
    scores: np.ndarray, labels: np.ndarray, seconds: float, config: ClickTrainConfig
) -> dict[str, Any]:
    """Per sensitivity, the lowest bar (0.05 steps, finer above 0.95) whose transient zones
    per 10 minutes of ``seconds`` of audio stay within its allowance, and the clicks it
    keeps."""
    neg, pos = scores[~labels], scores[labels]
    per_10min = 600.0 / max(seconds, 1e-9)
    sweep = {}
    for bar in (*np.round(np.arange(0.05, 0.96, 0.05), 2), 0.97, 0.98, 0.99, 0.995):
        sweep[f"{bar:g}"] = [
            round(float((pos >= bar).mean()) if pos.size else 0.0, 4),
            round(float((neg >= bar).sum()) * per_10min, 3),
        ]
    bars: dict[str, Any] = {}
    steps = [float(b) for b in sweep]
    # low last: it is held one step stricter than normal where they would meet
    for name, allowed in sorted(config.allowed_per_10min, key=lambda kv: kv[0] == "low"):
        ok = [float(b) for b, (_, fa) in sweep.items() if fa <= allowed]
        bar = min(ok) if ok else 0.999
        stricter = [b for b in steps if b > bars.get("normal", {}).get("bar", 1.0)]
        if name == "low" and "normal" in bars and bar <= bars["normal"]["bar"]:
            # A short validation side cannot tell "none" from "one in an hour": low then
            # stays one step stricter than normal.
            bar = min(stricter) if stricter else 0.999
        bars[name] = {
            "bar": bar,
            "clicks_above": round(float((pos >= bar).mean()) if pos.size else 0.0, 4),
            "transients_per_10min": round(float((neg >= bar).sum()) * per_10min, 3),
        }
    return {"sweep": sweep, **bars}


def train_click_net(
    manifest: Path,
    roots: Sequence[Path],
    config: ClickTrainConfig | None = None,
    cache: Path | None = None,
    progress: ProgressFn | None = None,
) -> ClickNet:
    """Collect (or load ``cache``), train, choose the bars on the validation packages."""
    config = config or ClickTrainConfig()
    began = time.monotonic()
    if cache is not None and cache.is_file():
        with np.load(cache) as f:
            data = {k: f[k] for k in f.files}
    else:
        recordings = training_recordings(manifest, roots, config)
        if not recordings:
            raise ValueError(f"no train recordings of {manifest} under {list(map(str, roots))}")
        recordings += synthesised_recordings(config)
        data = collect(recordings, config, progress)
        if cache is not None:
            np.savez(cache, **data)
    net, fit = train(data, config, progress)
    names = [str(p) for p in data["packages"]]
    val_names = [p for p in config.validation_packages if p in names]
    val = ~fit
    provenance: dict[str, Any] = {
        "made_by": "maedaw bench click-train",
        "manifest": manifest.name,
        "config": {k: v for k, v in asdict(config).items() if k != "workers"},
        "train_packages": [p for p in names if p not in val_names],
        "validation_packages": val_names,
        "zones": int(data["labels"].size),
        "click_zones": int(data["labels"].sum()),
        "clicks_inserted": int(data["inserted"]),
        "seconds_read": round(float(data["seconds"].sum()), 1),
        "minutes_to_make": round((time.monotonic() - began) / 60.0, 1),
    }
    judge = to_click_net(net, provenance)
    seconds_of = dict(zip(names, data["seconds"].tolist(), strict=True))
    sides = (
        ("train", fit, sum(t for p, t in seconds_of.items() if p not in val_names)),
        ("validation", val, sum(t for p, t in seconds_of.items() if p in val_names)),
    )
    for side, mask, seconds in sides:
        if not mask.any():
            continue
        idx = np.flatnonzero(mask)
        scores = zone_scores(judge, data["windows"][idx], data["scalars"][idx])
        provenance[side] = choose_bars(scores, data["labels"][idx], seconds, config)
    return judge
