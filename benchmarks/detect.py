"""``maedaw bench detect``: false alarms on clean real recordings, recall on inserted damage.

For every file of ``FOLDER`` (each sub-folder is a kind of material: drums, music, foley,
...; files directly in it are ``unknown``), at its own rate and channel count, the first
``max_seconds``:

* **clean**: the detector runs on the file as it is. Every span that auto-repair would write
  (confidence at or above the sensitivity's repair bar) is a false alarm, and so is every
  span it reports as ``left_alone``, counted apart. Both are scaled to spans per 10 minutes.
* **damaged**: copies with damage inserted with :mod:`maedaw.dsp.damage`, ``per_file`` per
  file and kind, where the programme is active (within 30 dB of the file's loudest 10 ms):
  one dropout of 1-200 ms (log-uniform), one click of 1-8 samples at 0.2-0.6 full scale,
  one level drop of 10-300 ms by 25-40 dB; or the whole excerpt clipped at 50-80 % of its
  peak, each clipped run of 3+ samples one defect. A defect is found when a written span of
  the same channel overlaps it (any kind: every kind gets repaired); precision is the share
  of written spans that overlap a defect.

The recordings are assumed clean: a real defect in one shows up as a false alarm (look at
the ``worst`` list of the JSON).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maedaw.core.util import ProgressFn
from maedaw.dsp.audio_io import AudioError, probe, read_region
from maedaw.dsp.damage import hard_clip, insert_click, insert_dropout, insert_level_drop
from maedaw.dsp.detect import FULL_SCALE, DetectConfig, Sensitivity, detect, sensitivity
from maedaw.dsp.spans import DamageKind, Span

from .repair import find_clips, pick_gap

log = logging.getLogger(__name__)

TEN_MINUTES = 600.0
KINDS = (DamageKind.DROPOUT, DamageKind.CLICK, DamageKind.CLIP, DamageKind.LEVEL_DROP)
TARGETS = {  # from issue 17: recall per kind, false alarms per 10 min per category
    "false_alarms_per_10min": 1.0,
    "recall": {"dropout": 0.95, "level_drop": 0.95, "click": 0.90, "clip": 0.90},
}


@dataclass(frozen=True)
class BenchDetectConfig:
    sensitivity: str = "normal"
    max_seconds: float = 40.0  # read at most this much of each file
    per_file: int = 2  # damaged copies per file and kind (one defect each; clip: every run)
    seed: int = 0


def _overlaps(span: Span, truth: Span, slack: int) -> bool:
    return (
        span.channel == truth.channel
        and span.start < truth.end + slack
        and truth.start - slack < span.end
    )


def insert_defect(
    kind: DamageKind, x: np.ndarray, rate: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[Span]] | None:
    """Defects of ``kind`` in a copy of ``x`` where the programme is active: one dropout,
    click or level drop, or the whole excerpt clipped (its runs of 3+ samples)."""
    channels = x.shape[0]
    channel = int(rng.integers(channels))
    y = x.copy()
    if kind is DamageKind.CLIP:
        # Clipping happens to a whole take (a gain stage set too hot), not to a stretch.
        peak = float(np.abs(x).max())
        if peak < 0.01:
            return None
        clipped, runs = hard_clip(x, peak * float(rng.uniform(0.5, 0.8)))
        runs = [r for r in runs if r.length >= 3]  # shorter runs look like natural peaks
        return (clipped, runs) if runs else None
    if kind is DamageKind.DROPOUT:
        length = max(1, round(rate * 10 ** rng.uniform(-3, math.log10(0.2))))
    elif kind is DamageKind.CLICK:
        length = int(rng.integers(1, 9))
    else:
        length = round(rate * rng.uniform(0.01, 0.3))
    start = pick_gap(x[channel : channel + 1], rate, length, rng)
    if start is None:
        return None
    if kind is DamageKind.DROPOUT:
        return y, [insert_dropout(y, channel, start, length)]
    if kind is DamageKind.CLICK:
        amplitude = float(rng.uniform(0.2, 0.6))
        return y, [insert_click(y, channel, start, length, amplitude, rng)]
    drop = float(rng.uniform(25.0, 40.0))
    return y, [insert_level_drop(y, channel, start, length, drop)]


# Click recall is also reported by how far the click stands out of the programme around it:
# its largest deviation over the clean programme's peak within CLICK_AROUND_MS, in dB.
CLICK_AROUND_MS = 10.0
PROMINENCE_BINS = ((None, -6.0), (-6.0, 0.0), (0.0, 6.0), (6.0, None))


def click_prominence_db(clean: np.ndarray, damaged: np.ndarray, truth: Span, rate: int) -> float:
    """How far an inserted click stands out of the programme: its largest deviation from the
    clean samples over the clean programme's peak within CLICK_AROUND_MS of it (dB). Below
    0 dB the click hides inside the waveform's own excursions (loud speech, a drum hit)."""
    reach = max(1, round(CLICK_AROUND_MS * rate / 1000.0))
    row = clean[truth.channel]
    deviation = np.abs(
        damaged[truth.channel, truth.start : truth.end] - row[truth.start : truth.end]
    )
    around = np.abs(row[max(0, truth.start - reach) : truth.end + reach])
    return 20.0 * math.log10(max(float(deviation.max()), 1e-9) / max(float(around.max()), 1e-9))


def bin_name(lo: float | None, hi: float | None) -> str:
    if lo is None:
        return f"< {hi:+.0f} dB"
    return f">= {lo:+.0f} dB" if hi is None else f"{lo:+.0f}..{hi:+.0f} dB"


def prominence_bin(db: float) -> str:
    """The name of the PROMINENCE_BINS bin ``db`` falls in."""
    for lo, hi in PROMINENCE_BINS:
        if (lo is None or db >= lo) and (hi is None or db < hi):
            return bin_name(lo, hi)
    raise ValueError(f"no bin for {db} dB")


def _written(spans: list[Span], sens: Sensitivity) -> list[Span]:
    return [s for s in spans if not sens.doubt(s)]


def _at_full_scale(span: Span, x: np.ndarray) -> bool:
    """A written span that is the recording's own clipping, so a real defect of a recording the
    benchmark assumed clean (counted apart from the false alarms, and shown): a clip span held
    at digital full scale, or a click span whose impulse reaches it (a transient the format's
    ceiling cut off: held-out game speech and ambience clip this way, 1-11 samples at 32767)."""
    seg = np.abs(x[span.channel, span.start : span.end])
    if seg.size == 0:
        return False
    if span.kind is DamageKind.CLIP:
        return float(np.median(seg)) >= FULL_SCALE
    return span.kind is DamageKind.CLICK and float(seg.max()) >= FULL_SCALE


def bench_file(
    x: np.ndarray,
    rate: int,
    config: DetectConfig,
    sens: Sensitivity,
    bench: BenchDetectConfig,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Clean false alarms and per-kind hits/misses of one file's excerpt."""
    clock = time.perf_counter()
    clean = detect(x, rate, config=config)
    seconds = time.perf_counter() - clock
    written = _written(clean, sens)
    at_full_scale = [s for s in written if _at_full_scale(s, x)]
    result: dict[str, Any] = {
        "seconds": x.shape[1] / rate,
        "detect_seconds": seconds,
        "false_alarms": {k.value: sum(s.kind is k for s in written) for k in KINDS},
        "at_full_scale": {k.value: sum(s.kind is k for s in at_full_scale) for k in KINDS},
        "left_alone": {
            k.value: sum(s.kind is k and bool(sens.doubt(s)) for s in clean) for k in KINDS
        },
        "false_alarm_spans": [s.to_dict(rate) for s in written[:20]],
        "damage": {},
        "click_prominence": [],  # [dB, found] per inserted click
    }
    slack = max(2, rate // 1000)
    for kind in KINDS:
        found = missed = true_pos = detected = 0
        for _ in range(bench.per_file):
            made = insert_defect(kind, x, rate, rng)
            if made is None:
                continue
            y, truths = made
            spans = _written(detect(y, rate, config=config), sens)
            for truth in truths:
                hit = any(_overlaps(s, truth, slack) for s in spans)
                found += hit
                missed += not hit
                if kind is DamageKind.CLICK:
                    db = click_prominence_db(x, y, truth, rate)
                    result["click_prominence"].append([round(db, 2), hit])
            # Spans that are clean-file false alarms count against precision too.
            true_pos += sum(any(_overlaps(s, t, slack) for t in truths) for s in spans)
            detected += len(spans)
        result["damage"][kind.value] = {
            "found": found,
            "missed": missed,
            "true_spans": true_pos,
            "spans": detected,
        }
    return result


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


def summarise(files: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals of per-file results: false alarms per 10 min, recall and precision."""
    seconds = sum(f["seconds"] for f in files)
    out: dict[str, Any] = {"files": len(files), "minutes": seconds / 60.0}
    scale = TEN_MINUTES / seconds if seconds else 0.0
    out["false_alarms_per_10min"] = {
        k.value: sum(f["false_alarms"][k.value] for f in files) * scale for k in KINDS
    }
    out["false_alarms_per_10min"]["all"] = sum(out["false_alarms_per_10min"].values())
    # Written spans at digital full scale (_at_full_scale): the recording really clips there.
    at_fs = {k.value: sum(f["at_full_scale"][k.value] for f in files) * scale for k in KINDS}
    at_fs["all"] = sum(at_fs.values())
    out["at_full_scale_per_10min"] = at_fs
    out["false_alarms_per_10min"]["all_but_full_scale"] = (
        out["false_alarms_per_10min"]["all"] - at_fs["all"]
    )
    out["left_alone_per_10min"] = sum(sum(f["left_alone"].values()) for f in files) * scale
    out["recall"], out["precision"] = {}, {}
    for k in KINDS:
        d = [f["damage"][k.value] for f in files]
        found, missed = sum(r["found"] for r in d), sum(r["missed"] for r in d)
        out["recall"][k.value] = _ratio(found, found + missed)
        out["precision"][k.value] = _ratio(
            sum(r["true_spans"] for r in d), sum(r["spans"] for r in d)
        )
        out.setdefault("inserted", {})[k.value] = found + missed
    by_bin = {bin_name(lo, hi): [0, 0] for lo, hi in PROMINENCE_BINS}
    for f in files:
        for db, hit in f.get("click_prominence", []):
            counts = by_bin[prominence_bin(db)]
            counts[0] += bool(hit)
            counts[1] += 1
    out["click_recall_by_prominence"] = {
        name: {"recall": _ratio(hits, n), "inserted": n} for name, (hits, n) in by_bin.items()
    }
    detect_s = sum(f["detect_seconds"] for f in files)
    out["x_realtime"] = _ratio(seconds, detect_s)
    return out


def bench_detect(
    folder: Path,
    bench: BenchDetectConfig | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run the benchmark over ``folder``; returns per-kind summaries, an overall one and files."""
    bench = bench or BenchDetectConfig()
    sens = sensitivity(bench.sensitivity)
    config = DetectConfig()
    categories = {
        ("unknown" if name == folder.name else name): paths
        for name, paths in find_clips(folder).items()
    }
    total = sum(len(v) for v in categories.values())
    done = 0
    rng = np.random.default_rng(bench.seed)
    per_kind: dict[str, list[dict[str, Any]]] = {}
    formats: dict[str, int] = {}
    for name, paths in sorted(categories.items()):
        for path in paths:
            done += 1
            try:
                info = probe(path)
                end = min(info.frames, round(bench.max_seconds * info.sample_rate))
                x = read_region(path, 0, end).samples.astype(np.float64)
            except AudioError as exc:
                log.warning("skipped %s: %s", path, exc)
                continue
            if x.shape[1] < info.sample_rate // 2:
                continue
            key = f"{info.sample_rate} Hz x {info.num_channels} ch {info.sample_format}"
            formats[key] = formats.get(key, 0) + 1
            row = bench_file(x, info.sample_rate, config, sens, bench, rng)
            row["path"] = str(path)
            per_kind.setdefault(name, []).append(row)
            if progress is not None:
                progress(done / total, name)
    everything = [f for rows in per_kind.values() for f in rows]
    worst = sorted(everything, key=lambda f: -sum(f["false_alarms"].values()))[:10]
    return {
        "folder": str(folder),
        "sensitivity": bench.sensitivity,
        "repair_bars": {str(k): v for k, v in sens.bars.items()},
        "max_seconds_per_file": bench.max_seconds,
        "per_file": bench.per_file,
        "seed": bench.seed,
        "formats": formats,
        "targets": TARGETS,
        "kinds": {name: summarise(rows) for name, rows in sorted(per_kind.items())},
        "all": summarise(everything),
        "worst": [
            {"path": f["path"], "false_alarms": f["false_alarms"], "spans": f["false_alarm_spans"]}
            for f in worst
            if sum(f["false_alarms"].values())
        ],
    }


def _one(value: float) -> str:
    return f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def render_markdown(result: dict[str, Any]) -> str:
    """The result as two markdown tables: false alarms, then recall / precision."""
    rows = [*result["kinds"].items(), ("**all**", result["all"])]
    kinds = [k.value for k in KINDS]
    lines = [
        f"Sensitivity `{result['sensitivity']}` (written at confidence ≥ "
        + ", ".join(f"{v:.2f} ({k})" for k, v in result["repair_bars"].items())
        + f"); first {result['max_seconds_per_file']:.0f} s of each file.",
        "",
        "| material | files | min | false alarms / 10 min (written) | "
        + " | ".join(kinds)
        + " | of which at full scale (clip, click) | left alone / 10 min | detect × real time |",
        "|---|---:|---:|---:|" + "---:|" * len(kinds) + "---:|---:|---:|",
    ]
    for name, s in rows:
        fa = s["false_alarms_per_10min"]
        lines.append(
            f"| {name} | {s['files']} | {s['minutes']:.1f} | {_one(fa['all'])} | "
            + " | ".join(_one(fa[k]) for k in kinds)
            + f" | {_one(s['at_full_scale_per_10min']['all'])}"
            + f" ({_one(s['at_full_scale_per_10min']['clip'])}"
            + f", {_one(s['at_full_scale_per_10min']['click'])})"
            + f" | {_one(s['left_alone_per_10min'])} | "
            + ("-" if s["x_realtime"] is None else f"{s['x_realtime']:.0f}")
            + " |"
        )
    lines += [
        "",
        "| material | " + " | ".join(f"{k} recall / precision" for k in kinds) + " |",
        "|---|" + "---:|" * len(kinds),
    ]
    for name, s in rows:
        cells = [
            f"{_pct(s['recall'][k])} / {_pct(s['precision'][k])} (n={s['inserted'][k]})"
            for k in kinds
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    bins = list(result["all"]["click_recall_by_prominence"])
    lines += [
        "",
        "Click recall by how far the click stands out of the clean programme's peak within "
        f"{CLICK_AROUND_MS:.0f} ms (its largest deviation over that peak):",
        "",
        "| material | " + " | ".join(bins) + " |",
        "|---|" + "---:|" * len(bins),
    ]
    for name, s in rows:
        cells = [
            f"{_pct(c['recall'])} (n={c['inserted']})"
            for c in s["click_recall_by_prominence"].values()
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
