"""``maedaw bench repair``: how well each method fills gaps, on the user's own clips.

For every clip of ``DIR`` (sub-folders are categories) and every gap length, one seeded
position where the clip is active (within 30 dB of its loudest 10 ms, clean context on both
sides) is zeroed on every channel, then filled by each method:

* ``zero`` (the dropout as found), ``repeat`` (the preceding stretch again), ``linear``;
* ``ar``: two-sided least-squares AR, exactly as ``maedaw repair --model none`` does it;
* ``mae``: Audio-MAE spectral inpainting alone (:mod:`maedaw.models.inpaint`);
* ``hybrid``: the repair policy with the model (:func:`maedaw.dsp.repair.decide`), i.e. what
  ``maedaw repair --concealment none`` does with a model loaded;
* with a learned concealment model (:mod:`maedaw.models.concealment`, ``--concealment``):
  ``plc`` (the network alone at every length up to 120 ms), ``plc-blend`` (AR edges into the
  network's middle) and ``plc-policy`` (``maedaw repair`` as shipped: the concealment table
  with the Audio-MAE too when one is loaded).

Scores: log-spectral distance (dB, lower is better) and gap SNR (dB, higher is better) over the
gap against the clean clip. Speech folders are also scored with PLCMOS (Microsoft's packet-loss
concealment MOS model, ``speechmos``, runs offline from its bundled ONNX file) under 20 ms
packet loss at 10 % and 20 %. Clips with two or more different channels are also scored on
one-channel dropouts (the gap on one channel only): AR and the hybrid without the other
channel against the repair policy, which predicts the lost channel from an intact one
(:mod:`maedaw.dsp.crosschannel`). A speed figure repairs a 10 s 48 kHz stereo file with three
200 ms gaps through ``repair_file``; a second one three 20 ms gaps in held notes (periodic: the
policy keeps them with pitch AR and its order search); a third 50 ms gaps with the concealer.
"""

from __future__ import annotations

import logging
import math
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from maedaw.core.util import ProgressFn
from maedaw.dsp import ar
from maedaw.dsp.audio_io import AudioError, SampleFormat, read_region, write_stem
from maedaw.dsp.metrics import gap_snr_db, log_spectral_distance
from maedaw.dsp.repair import RepairConfig, decide, repair_array, repair_file
from maedaw.dsp.resample import resample
from maedaw.dsp.signals import held_notes, music_clip
from maedaw.dsp.spans import DamageKind, Span

if TYPE_CHECKING:
    from maedaw.models.inpaint import Inpainter

log = logging.getLogger(__name__)

METHODS = ("zero", "repeat", "linear", "ar", "mae", "hybrid", "plc", "plc-blend", "plc-policy")
PLC_BENCH_METHODS = ("plc", "plc-blend", "plc-policy")
GAPS_MS = (10, 20, 50, 100, 200, 500)
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff"}
EDGE_S = 0.1  # clean context a gap keeps from the clip's ends
ACTIVE_DB = 30.0  # gaps sit where the clip is within this of its loudest 10 ms
PLCMOS_RATE = 16_000


@dataclass(frozen=True)
class BenchRepairConfig:
    gaps_ms: tuple[float, ...] = GAPS_MS
    seed: int = 0
    max_clips: int | None = None  # per category (a seeded sample, see find_clips)
    loss_rates: tuple[float, ...] = (0.1, 0.2, 0.3)
    packet_ms: float = 20.0
    plcmos: bool = True
    channel: bool = True  # one-channel dropouts, on clips with distinct channels
    speed: bool = True
    repair: RepairConfig = field(default_factory=RepairConfig)


# --------------------------------------------------------------------------------------------
# Data


def find_clips(data: Path, max_clips: int | None = None, seed: int = 0) -> dict[str, list[Path]]:
    """Audio files by category: each sub-folder is one; files directly in ``data`` form a
    category named after ``data``. ``max_clips`` keeps a seeded sample of each category (in
    name order): the first N by name would all come from one package of an exported corpus."""
    if not data.is_dir():
        raise AudioError(f"{data}: not a folder")
    categories: dict[str, list[Path]] = {}
    for path in sorted(data.rglob("*")):
        if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file():
            continue
        rel = path.relative_to(data)
        name = rel.parts[0] if len(rel.parts) > 1 else data.name
        categories.setdefault(name, []).append(path)
    if not categories:
        raise AudioError(f"{data}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
    if max_clips is not None:
        rng = random.Random(seed)
        categories = {
            k: sorted(rng.sample(v, max_clips)) if len(v) > max_clips else v
            for k, v in categories.items()
        }
    return categories


def is_speech(category: str) -> bool:
    return "speech" in category.lower()


def pick_gap(x: np.ndarray, rate: int, length: int, rng: np.random.Generator) -> int | None:
    """A start where the gap and 10 ms around it are active, or None if the clip is too short."""
    edge = round(EDGE_S * rate)
    n = x.shape[-1]
    if n < length + 2 * edge:
        return None
    hop = max(1, rate // 100)
    power = np.convolve(np.mean(x**2, axis=0), np.ones(hop) / hop, mode="same")
    loud = power.max()
    if loud <= 0:
        return None
    active = power >= loud * 10 ** (-ACTIVE_DB / 10)
    # the gap's first and last samples must both be active
    starts = np.arange(edge, n - edge - length)
    ok = active[starts] & active[starts + length - 1]
    if not ok.any():
        return None
    return int(rng.choice(starts[ok]))


# --------------------------------------------------------------------------------------------
# Methods


def _baseline(x: np.ndarray, start: int, end: int, fill: Callable[..., np.ndarray]) -> np.ndarray:
    out = x.copy()
    for c in range(x.shape[0]):
        out[c, start:end] = fill(x[c], start, end)
    return out


def fill_all(
    damaged: np.ndarray,
    rate: int,
    gaps: Sequence[tuple[int, int]],
    inpainter: Inpainter | None,
    config: RepairConfig,
    methods: Sequence[str] = METHODS,
    concealer: Inpainter | None = None,
) -> dict[str, np.ndarray]:
    """Every method's repair of ``gaps`` (zeroed on every channel) of ``damaged``.

    ``ar`` and ``hybrid`` go through :func:`repair_array`, the code path of ``maedaw repair``
    (marked spans on every channel); ``mae`` is the inpainter alone. When the policy sends
    every gap to one method, ``hybrid`` *is* that method's result (the same call with the
    same inputs), so it is reused instead of computed twice.
    """
    channels = damaged.shape[0]
    spans = [Span(s, e, c, DamageKind.MARKED, 1.0) for s, e in gaps for c in range(channels)]
    out: dict[str, np.ndarray] = {}
    if "zero" in methods:
        out["zero"] = damaged.copy()
    for name, fill in (("repeat", ar.repeat_fill), ("linear", ar.linear_fill)):
        if name in methods:
            result = damaged.copy()
            for s, e in gaps:
                result = _baseline(result, s, e, fill)
            out[name] = result
    if "ar" in methods or "hybrid" in methods:
        long_ar = replace(config, max_ar_ms=math.inf)  # the AR column scores every length
        out["ar"] = repair_array(damaged, rate, spans, long_ar)[0]
    if ("mae" in methods or "hybrid" in methods) and inpainter is not None:
        out["mae"] = inpainter.repair(damaged, rate, gaps)
    if "hybrid" in methods and inpainter is not None:
        max_ms = 1000.0 * inpainter.max_gap_s
        chosen = {decide(s, rate, config, max_ms)[0] for s in spans}
        if chosen == {"ar"}:
            out["hybrid"] = out["ar"]
        elif chosen == {"mae"}:
            out["hybrid"] = out["mae"]
        else:
            out["hybrid"] = repair_array(damaged, rate, spans, config, inpainter=inpainter)[0]
    if concealer is not None:
        reach = 1000.0 * concealer.max_gap_s
        for name, row in (("plc", "plc"), ("plc-blend", "plc-blend")):
            if name in methods:
                table = ((reach, row),)
                only = replace(config, plc_with_mae=table, plc_without_mae=table)
                out[name] = repair_array(damaged, rate, spans, only, concealer=concealer)[0]
        if "plc-policy" in methods:
            out["plc-policy"] = repair_array(
                damaged, rate, spans, config, inpainter=inpainter, concealer=concealer
            )[0]
    return {k: v for k, v in out.items() if k in methods}


# --------------------------------------------------------------------------------------------
# Gap benchmark


def _summary(values: list[float]) -> dict[str, float | int | None]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"n": len(values), "mean": None, "median": None}
    return {
        "n": len(values),
        "mean": round(statistics.fmean(finite), 3),
        "median": round(statistics.median(finite), 3),
    }


def _scores(values: dict[str, list[float]]) -> dict[str, Any]:
    """Summaries of one method's ``{"lsd": [...], "snr": [...]}`` in one cell."""
    return {"lsd": _summary(values["lsd"]), "gap_snr": _summary(values["snr"])}


def usable_methods(inpainter: Inpainter | None, concealer: Inpainter | None = None) -> list[str]:
    """Every method, less those that need a model that is not loaded."""
    return [
        m
        for m in METHODS
        if (inpainter is not None or m not in ("mae", "hybrid"))
        and (concealer is not None or m not in PLC_BENCH_METHODS)
    ]


def bench_gaps(
    clips: dict[str, list[Path]],
    inpainter: Inpainter | None,
    config: BenchRepairConfig,
    progress: ProgressFn,
    concealer: Inpainter | None = None,
) -> dict[str, Any]:
    methods = usable_methods(inpainter, concealer)
    scores: dict[str, dict[str, dict[str, dict[str, list[float]]]]] = {}
    skipped = 0
    total = sum(len(v) for v in clips.values())
    done = 0
    for category, paths in clips.items():
        for index, path in enumerate(paths):
            clean = read_region(path).samples
            rate = read_region(path).info.sample_rate
            for gap_ms in config.gaps_ms:
                rng = np.random.default_rng([config.seed, index, round(gap_ms * 10)])
                length = max(1, round(gap_ms * rate / 1000.0))
                start = pick_gap(clean, rate, length, rng)
                if start is None:
                    skipped += 1
                    continue
                end = start + length
                damaged = clean.copy()
                damaged[:, start:end] = 0.0
                filled = fill_all(
                    damaged, rate, [(start, end)], inpainter, config.repair, methods, concealer
                )
                cell = scores.setdefault(category, {}).setdefault(f"{gap_ms:g}", {})
                for name, result in filled.items():
                    lsd = log_spectral_distance(clean, result, rate, start, end)
                    snr = gap_snr_db(clean, result, start, end)
                    cell.setdefault(name, {"lsd": [], "snr": []})
                    cell[name]["lsd"].append(lsd)
                    cell[name]["snr"].append(snr)
            done += 1
            progress(done / total, f"gaps {category}")
    table = {
        category: {
            gap: {name: _scores(v) for name, v in by_method.items()}
            for gap, by_method in by_gap.items()
        }
        for category, by_gap in scores.items()
    }
    return {"methods": methods, "table": table, "skipped": skipped}


def check_targets(table: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's LSD targets (hybrid vs AR, mean LSD per category)."""
    rules = (("10", "le_ar_plus", 0.05), ("50", "le_ar_times", 0.8), ("200", "le_ar_times", 0.5))
    rows = []
    for category, by_gap in table.items():
        for gap, kind, value in rules:
            cell = by_gap.get(gap, {})
            if "hybrid" not in cell or "ar" not in cell:
                continue
            hybrid, ar_lsd = cell["hybrid"]["lsd"]["mean"], cell["ar"]["lsd"]["mean"]
            if hybrid is None or ar_lsd is None:
                continue
            limit = ar_lsd + value if kind == "le_ar_plus" else ar_lsd * value
            rows.append(
                {
                    "category": category,
                    "gap_ms": gap,
                    "hybrid_lsd": hybrid,
                    "ar_lsd": ar_lsd,
                    "limit": round(limit, 3),
                    "ratio": round(hybrid / ar_lsd, 3) if ar_lsd else None,
                    "met": hybrid <= limit,
                }
            )
    return rows


# --------------------------------------------------------------------------------------------
# One-channel dropouts


def bench_channel(
    clips: dict[str, list[Path]],
    inpainter: Inpainter | None,
    config: BenchRepairConfig,
    progress: ProgressFn,
) -> dict[str, Any]:
    """Per category and gap length: a seeded gap on one channel (the clip index picks which)
    of every clip whose channels differ, repaired by ``ar`` and ``hybrid`` (the policy with
    the cross-channel step off) and by ``policy`` (``maedaw repair`` as it is); LSD and gap
    SNR on the lost channel, and how many gaps the policy took from another channel."""
    without = replace(config.repair, cross=replace(config.repair.cross, enabled=False))
    long_ar = replace(without, max_ar_ms=math.inf)
    variants: list[tuple[str, RepairConfig, Inpainter | None]] = [("ar", long_ar, None)]
    if inpainter is not None:
        variants.append(("hybrid", without, inpainter))
    variants.append(("policy", config.repair, inpainter))
    scores: dict[str, dict[str, dict[str, Any]]] = {}
    total = sum(len(v) for v in clips.values())
    done = 0
    for category, paths in clips.items():
        for index, path in enumerate(paths):
            done += 1
            progress(done / total, f"one-channel gaps {category}")
            region = read_region(path)
            clean, rate = region.samples, region.info.sample_rate
            if clean.shape[0] < 2 or all(np.array_equal(clean[0], c) for c in clean[1:]):
                continue
            channel = index % clean.shape[0]
            for gap_ms in config.gaps_ms:
                rng = np.random.default_rng([config.seed, index, round(gap_ms * 10), 7])
                length = max(1, round(gap_ms * rate / 1000.0))
                start = pick_gap(clean[channel : channel + 1], rate, length, rng)
                if start is None:
                    continue
                end = start + length
                damaged = clean.copy()
                damaged[channel, start:end] = 0.0
                spans = [Span(start, end, channel, DamageKind.MARKED, 1.0)]
                cell = scores.setdefault(category, {}).setdefault(f"{gap_ms:g}", {"used": 0})
                for name, repair_config, filler in variants:
                    out, report = repair_array(damaged, rate, spans, repair_config, filler)
                    if name == "policy":
                        cell["used"] += int(report[0].method == "channel")
                    entry = cell.setdefault(name, {"lsd": [], "snr": []})
                    entry["lsd"].append(
                        log_spectral_distance(clean[channel], out[channel], rate, start, end)
                    )
                    entry["snr"].append(gap_snr_db(clean[channel], out[channel], start, end))
    table = {
        category: {
            gap: {
                "from_other_channel": cell["used"],
                **{name: _scores(v) for name, v in cell.items() if name != "used"},
            }
            for gap, cell in by_gap.items()
        }
        for category, by_gap in scores.items()
    }
    return {"methods": [name for name, _, _ in variants], "table": table}


# --------------------------------------------------------------------------------------------
# PLCMOS under packet loss


def plcmos_scorer() -> Callable[[np.ndarray], float]:
    """PLCMOS v2 from ``speechmos`` (bundled ONNX model, offline). Its rater embeddings are
    drawn from numpy's global generator: seeded per call so scores are reproducible."""
    try:
        from speechmos.plcmos import PLCMOS
    except ImportError as exc:
        raise AudioError(
            "PLCMOS needs the 'bench' extra: pip install 'maedaw[bench]' (speechmos, onnxruntime)"
        ) from exc
    model = PLCMOS()

    def score(x: np.ndarray) -> float:
        np.random.seed(0)
        return float(model.get_mos(np.clip(x, -1.0, 1.0).astype(np.float32)))

    return score


def packet_loss(n: int, rate: int, packet_ms: float, loss: float, rng: np.random.Generator):
    """Runs of lost packets as merged ``(start, end)`` gaps (the first packet is never lost)."""
    packet = round(packet_ms * rate / 1000.0)
    count = n // packet
    lost = rng.random(count) < loss
    lost[0] = False
    gaps: list[tuple[int, int]] = []
    for i in np.flatnonzero(lost):
        s, e = int(i) * packet, int(i + 1) * packet
        if gaps and gaps[-1][1] == s:
            gaps[-1] = (gaps[-1][0], e)
        else:
            gaps.append((s, e))
    return gaps


def bench_plcmos(
    clips: dict[str, list[Path]],
    inpainter: Inpainter | None,
    config: BenchRepairConfig,
    progress: ProgressFn,
    concealer: Inpainter | None = None,
) -> dict[str, Any]:
    score = plcmos_scorer()
    methods = usable_methods(inpainter, concealer)
    results: dict[str, Any] = {}
    speech = {k: v for k, v in clips.items() if is_speech(k)}
    total = sum(len(v) for v in speech.values()) * len(config.loss_rates)
    done = 0
    for category, paths in speech.items():
        for loss in config.loss_rates:
            values: dict[str, list[float]] = {"clean": []}
            for index, path in enumerate(paths):
                region = read_region(path)
                rate = region.info.sample_rate
                clean = region.samples
                rng = np.random.default_rng([config.seed, index, round(loss * 1000)])
                gaps = packet_loss(clean.shape[1], rate, config.packet_ms, loss, rng)
                done += 1
                progress(done / max(1, total), f"plcmos {category} {loss:.0%}")
                if not gaps:
                    continue
                damaged = clean.copy()
                for s, e in gaps:
                    damaged[:, s:e] = 0.0
                filled = fill_all(damaged, rate, gaps, inpainter, config.repair, methods, concealer)

                def mono16(x: np.ndarray, rate: int = rate) -> np.ndarray:
                    return resample(x.mean(axis=0), rate, PLCMOS_RATE)

                values["clean"].append(score(mono16(clean)))
                for name, result in filled.items():
                    values.setdefault(name, []).append(score(mono16(result)))
            summary = {name: _summary(v) for name, v in values.items()}
            clean_mean = summary["clean"]["mean"]
            zero_mean = summary.get("zero", {}).get("mean")
            for cell in summary.values():
                if None in (clean_mean, zero_mean, cell["mean"]) or clean_mean == zero_mean:
                    continue
                # share of the way from zero-fill to clean (the 80 % target)
                cell["recovered"] = round((cell["mean"] - zero_mean) / (clean_mean - zero_mean), 3)
            results.setdefault(category, {})[f"{loss:g}"] = summary
    return results


# --------------------------------------------------------------------------------------------
# Speed


def bench_speed(
    inpainter: Inpainter | None,
    repeats: int = 3,
    concealer: Inpainter | None = None,
    gap_s: float = 0.2,
    clip: Callable[..., np.ndarray] = music_clip,
    starts: tuple[float, ...] = (2.0, 5.0, 8.0),
) -> dict[str, Any]:
    """10 s of 48 kHz stereo 24-bit ``clip`` with ``gap_s`` dropouts at ``starts`` (s),
    repaired from disk to disk with marked spans (the models already loaded, as in the
    daemon's worker)."""
    rate = 48_000
    clean = clip(rate, 10.0, channels=2, seed=5)
    damaged = clean.copy()
    for s in starts:
        damaged[:, round(s * rate) : round((s + gap_s) * rate)] = 0.0
    spans = ",".join(f"{s}:{s + gap_s}" for s in starts)
    times, detect_times = [], []
    with tempfile.TemporaryDirectory(prefix="maedaw-bench-") as folder:
        source = write_stem(Path(folder) / "damaged.wav", damaged, rate, SampleFormat.INT24)
        for i in range(repeats + 1):  # the first run warms caches and is not counted
            out = Path(folder) / f"stem{i}.wav"
            clock = time.perf_counter()
            report = repair_file(source, out, spans=spans, inpainter=inpainter, concealer=concealer)
            elapsed = time.perf_counter() - clock
            out_auto = Path(folder) / f"auto{i}.wav"
            clock = time.perf_counter()
            auto = repair_file(source, out_auto, inpainter=inpainter, concealer=concealer)
            elapsed_auto = time.perf_counter() - clock
            if i:
                times.append(elapsed)
                detect_times.append(elapsed_auto)
    methods = sorted({s.method for s in report.spans})
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "audio": (
            f"10 s of {clip.__name__}, 48 kHz, stereo, 24-bit WAV, "
            f"{len(starts)} {1000 * gap_s:.0f} ms dropouts"
        ),
        "marked_spans_s": {"median": round(statistics.median(times), 3), "runs": times},
        "detected_spans_s": {
            "median": round(statistics.median(detect_times), 3),
            "runs": detect_times,
            "spans_found": len(auto.spans),
        },
        "methods": methods,
        "target_s": 0.5,
        "load_average_1min": None if load is None else round(load, 2),
        "cpu_count": os.cpu_count(),
    }


# --------------------------------------------------------------------------------------------
# Report


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = result["gaps"]["table"]
    categories = sorted(table)
    fig, axes = plt.subplots(
        1, len(categories), figsize=(4.5 * len(categories), 3.8), squeeze=False, sharey=True
    )
    for ax, category in zip(axes[0], categories, strict=True):
        gaps = sorted(table[category], key=float)
        for method in result["gaps"]["methods"]:
            values = [table[category][g].get(method, {}).get("lsd", {}).get("mean") for g in gaps]
            xs = [float(g) for g, v in zip(gaps, values, strict=True) if v is not None]
            ys = [v for v in values if v is not None]
            ax.plot(xs, ys, marker="o", label=method)
        ax.set_xscale("log")
        ax.set_xticks([float(g) for g in gaps], labels=gaps)
        ax.set_title(category)
        ax.set_xlabel("gap (ms)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("log-spectral distance (dB, mean)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _method_table(
    by_gap: dict[str, dict[str, Any]], gaps: list[str], methods: Sequence[str]
) -> list[str]:
    """Markdown rows: a method per row, "mean LSD / median gap SNR" per gap length."""
    lines = ["| method | " + " | ".join(f"{g} ms" for g in gaps) + " |"]
    lines.append("|---|" + "---|" * len(gaps))
    for method in methods:
        cells = []
        for g in gaps:
            entry = by_gap[g].get(method)
            if entry is None:
                cells.append("–")
                continue
            lsd, snr = entry["lsd"]["mean"], entry["gap_snr"]["median"]
            cells.append(f"{_cell(lsd)} / {_cell(snr, 1)}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def render_table(result: dict[str, Any]) -> str:
    """Markdown: per category, mean LSD / median gap SNR of each method per gap length; then
    the targets, PLCMOS and speed."""
    lines: list[str] = []
    table = result["gaps"]["table"]
    for category in sorted(table):
        by_gap = table[category]
        gaps = sorted(by_gap, key=float)
        counts = "/".join(str(by_gap[g].get("zero", {}).get("lsd", {}).get("n", 0)) for g in gaps)
        lines.append(f"**{category}** (gaps per length: {counts}); mean LSD dB / median gap SNR dB")
        lines.append("")
        lines += _method_table(by_gap, gaps, result["gaps"]["methods"])
        lines.append("")
    if result.get("targets"):
        lines.append("**Targets** (mean LSD, hybrid vs AR)")
        lines.append("")
        lines.append("| category | gap | hybrid | AR | limit | hybrid/AR | met |")
        lines.append("|---|---|---|---|---|---|---|")
        for row in result["targets"]:
            lines.append(
                f"| {row['category']} | {row['gap_ms']} ms | {row['hybrid_lsd']:.2f} | "
                f"{row['ar_lsd']:.2f} | {row['limit']:.2f} | {row['ratio']:.2f} | "
                f"{'yes' if row['met'] else 'no'} |"
            )
        lines.append("")
    for category, by_loss in (result.get("plcmos") or {}).items():
        methods = ["clean", *result["gaps"]["methods"]]
        lines.append(
            f"**PLCMOS, {category}**, 20 ms packets (mean; in brackets the share of the way "
            "from zero-fill to clean)"
        )
        lines.append("")
        lines.append("| loss | " + " | ".join(methods) + " |")
        lines.append("|---|" + "---|" * len(methods))
        for loss, summary in by_loss.items():
            cells = []
            for m in methods:
                cell = summary.get(m, {})
                text = _cell(cell.get("mean"))
                if "recovered" in cell and m not in ("clean", "zero"):
                    text += f" ({100 * cell['recovered']:.0f} %)"
                cells.append(text)
            n = summary["clean"]["n"]
            lines.append(f"| {float(loss):.0%} (n={n}) | " + " | ".join(cells) + " |")
        lines.append("")
    channel = result.get("channel") or {}
    for category, by_gap in sorted((channel.get("table") or {}).items()):
        gaps = sorted(by_gap, key=float)
        lines.append(
            f"**One-channel dropouts, {category}** (mean LSD dB / median gap SNR dB on the "
            "lost channel; `policy` is `maedaw repair`, the other channel used when it fits)"
        )
        lines.append("")
        lines += _method_table(by_gap, gaps, channel["methods"])
        used = [f"{by_gap[g]['from_other_channel']}/{by_gap[g]['ar']['lsd']['n']}" for g in gaps]
        lines.append("| gaps taken from the other channel | " + " | ".join(used) + " |")
        lines.append("")
    for key in ("speed", "speed_ar", "speed_concealment"):
        speed = result.get(key)
        if not speed:
            continue
        lines.append(
            f"**Speed**: {speed['audio']}: marked spans {speed['marked_spans_s']['median']:.3f} s, "
            f"with detection {speed['detected_spans_s']['median']:.3f} s (median of "
            f"{len(speed['marked_spans_s']['runs'])}; target {speed['target_s']} s; methods "
            f"{', '.join(speed['methods'])}; 1-min load average {speed['load_average_1min']} "
            f"on {speed['cpu_count']} CPUs)"
        )
        lines.append("")
    return "\n".join(lines)


def bench_repair(
    data: Path,
    inpainter: Inpainter | None,
    config: BenchRepairConfig | None = None,
    progress: ProgressFn = lambda fraction, stage: None,
    model_name: str | None = None,
    concealer: Inpainter | None = None,
    concealer_name: str | None = None,
) -> dict[str, Any]:
    """Run every part; returns the JSON-ready result."""
    config = config or BenchRepairConfig()
    clips = find_clips(data, config.max_clips, config.seed)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "data": str(data),
        "clips": {k: len(v) for k, v in clips.items()},
        "config": {
            "gaps_ms": list(config.gaps_ms),
            "seed": config.seed,
            "max_clips": config.max_clips,
            "loss_rates": list(config.loss_rates),
            "packet_ms": config.packet_ms,
        },
        "model": model_name if inpainter is not None else None,
        "concealment": concealer_name if concealer is not None else None,
    }
    result["gaps"] = bench_gaps(clips, inpainter, config, progress, concealer)
    result["targets"] = check_targets(result["gaps"]["table"])
    if config.plcmos and any(is_speech(k) for k in clips):
        result["plcmos"] = bench_plcmos(clips, inpainter, config, progress, concealer)
    if config.channel:
        result["channel"] = bench_channel(clips, inpainter, config, progress)
    if config.speed and inpainter is not None:
        progress(1.0, "speed")
        result["speed"] = bench_speed(inpainter)
    if config.speed and inpainter is not None:
        # gaps the policy keeps with pitch AR (periodic context): the order search's cost
        progress(1.0, "speed (AR)")
        result["speed_ar"] = bench_speed(
            inpainter, gap_s=0.02, clip=held_notes, starts=(2.5, 5.5, 8.5)
        )
    if config.speed and concealer is not None:
        progress(1.0, "speed (concealment)")
        result["speed_concealment"] = bench_speed(inpainter, concealer=concealer, gap_s=0.05)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result
