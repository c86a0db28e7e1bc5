"""Where inserted clicks are lost, stage by stage (a diagnostic beside ``maedaw bench detect``).

``python -m maedaw.benchmarks.click_stages FOLDER [--kind K] [--bar 0.995] [-c FIELD=VALUE]``

For every file of ``FOLDER`` (sub-folders are kinds, as in ``bench detect``), the first 40 s of
its first channel: two clicks of the bench's kind (1-8 samples, 0.2-0.6 FS, rng seed 5) are
inserted one at a time, and each is classified by the furthest stage it reached:
``no zone`` (no candidate zone over it), ``unconfirmed`` (a zone the two-sided AR test did not
confirm), ``judged low`` (confirmed, the click judge below the bar) or ``written``. The clean file's
zones, confirmed zones and zones the judge passes are counted too (what the same settings cost
on clean audio). ``-c`` overrides :class:`~maedaw.dsp.detect.DetectConfig` fields; ``--judge``
loads another judge (``maedaw bench click-train --out``).
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np

from maedaw.dsp import click_net
from maedaw.dsp.audio_io import probe, read_region
from maedaw.dsp.damage import insert_click
from maedaw.dsp.detect import DetectConfig, click_zones

from .detect import PROMINENCE_BINS, bin_name, click_prominence_db, prominence_bin
from .repair import find_clips, pick_gap

STAGES = ("no zone", "unconfirmed", "judged low", "written")
MAX_SECONDS = 40.0


def _value(text: str) -> bool | int | float:
    if text in ("True", "False"):
        return text == "True"
    return float(text) if "." in text or "e" in text else int(text)


def _stage(zones, probs: np.ndarray, start: int, end: int, slack: int, bar: float) -> str:
    """The furthest stage any zone over [start, end) reached."""
    best = 0
    for zone, prob in zip(zones, probs.tolist(), strict=True):
        if zone.lo < end + slack and start - slack < zone.hi:
            reached = 1 if zone.verified is None else 3 if prob >= bar else 2
            best = max(best, reached)
    return STAGES[best]


def run(
    folder: Path,
    config: DetectConfig,
    judge: click_net.ClickNet,
    bar: float,
    kinds: set[str] | None = None,
) -> tuple[dict[str, collections.Counter], collections.Counter]:
    """Per kind: stage counts and clean-file counts; and (prominence bin, written) counts."""
    stats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    prominence: collections.Counter = collections.Counter()
    rng = np.random.default_rng(5)

    def judged(x: np.ndarray, rate: int):
        zones, windows, scalars = click_zones(x, rate, config)
        probs = judge.probabilities(windows, scalars).max(axis=1) if zones else np.zeros(0)
        return zones, probs

    for kind, paths in sorted(find_clips(folder).items()):
        if kinds and kind not in kinds:
            continue
        for path in paths:
            info = probe(path)
            rate = info.sample_rate
            end = min(info.frames, round(MAX_SECONDS * rate))
            x = read_region(path, 0, end).samples[:1].astype(np.float64)
            if x.shape[1] < rate // 2:
                continue
            zones, probs = judged(x[0], rate)
            counts = stats[kind]
            counts["clean seconds"] += x.shape[1] / rate
            counts["clean zones"] += len(zones)
            counts["clean confirmed"] += sum(z.verified is not None for z in zones)
            counts["clean written"] += sum(
                z.verified is not None and p >= bar
                for z, p in zip(zones, probs.tolist(), strict=True)
            )
            for _ in range(2):
                length = int(rng.integers(1, 9))
                start = pick_gap(x, rate, length, rng)
                if start is None:
                    continue
                y = x.copy()
                truth = insert_click(y, 0, start, length, float(rng.uniform(0.2, 0.6)), rng)
                zones, probs = judged(y[0], rate)
                stage = _stage(zones, probs, truth.start, truth.end, max(2, rate // 1000), bar)
                counts[stage] += 1
                band = prominence_bin(click_prominence_db(x, y, truth, rate))
                prominence[(band, stage == "written")] += 1
    return stats, prominence


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--kind", action="append", help="only this kind (repeatable)")
    parser.add_argument("--bar", type=float, default=0.995, help="the judge's bar (normal)")
    parser.add_argument("--judge", type=Path, help="click judge weights (default: bundled)")
    parser.add_argument("-c", "--config", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.config)
    config = DetectConfig(**{k: _value(v) for k, v in overrides.items()})
    judge = click_net.ClickNet.load(args.judge) if args.judge else click_net.bundled_click_net()
    stats, prominence = run(args.folder, config, judge, args.bar, set(args.kind or ()))
    total: collections.Counter = collections.Counter()
    for counts in stats.values():
        total.update(counts)
    for kind, counts in [*sorted(stats.items()), ("all", total)]:
        n = sum(counts[s] for s in STAGES) or 1
        shares = " ".join(f"{s} {counts[s] / n:.1%}" for s in STAGES)
        print(
            f"{kind:9s} n={n:4d} {shares} | clean {counts['clean seconds'] / 60:.1f} min: "
            f"zones {counts['clean zones']} confirmed {counts['clean confirmed']} "
            f"written {counts['clean written']}"
        )
    for band in (bin_name(lo, hi) for lo, hi in PROMINENCE_BINS):
        hit, miss = prominence[(band, True)], prominence[(band, False)]
        print(f"prominence {band:12s} n={hit + miss:4d} written {hit / max(1, hit + miss):.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
