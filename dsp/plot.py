"""Before/after pictures of a repair: spectrograms of the region and close-ups of spans."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
from scipy.signal import spectrogram

from .repair import RepairReport

MAX_CLOSEUPS = 4
PLOT_SECONDS = 60  # longer regions are shown around their first repair


def _spectrogram_db(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    window = max(64, int(0.02 * rate))
    freqs, times, power = spectrogram(x, rate, nperseg=window, noverlap=window * 3 // 4)
    return freqs, times, 10.0 * np.log10(power + 1e-12)


def plot_repair(report: RepairReport, path: str | os.PathLike) -> Path:
    """Write a PNG: region spectrogram before and after, then up to four span close-ups."""
    rate = report.info.sample_rate
    repaired_spans = [s for s in report.spans if s.method != "none"]
    channel = repaired_spans[0].channel if repaired_spans else 0
    # A long region is shown as the minute around its first repair.
    centre = repaired_spans[0].start if repaired_spans else report.start
    lo = max(report.start, centre - PLOT_SECONDS * rate // 2)
    hi = min(report.end, lo + PLOT_SECONDS * rate)
    before = report.samples(lo, hi, repaired=False)[channel]
    after = report.samples(lo, hi)[channel]
    closeups = [s for s in repaired_spans if s.channel == channel and lo <= s.start < hi]
    closeups = closeups[:MAX_CLOSEUPS]

    rows = 2 + (1 if closeups else 0)
    fig = plt.figure(figsize=(12, 3.2 * rows), constrained_layout=True)
    grid = fig.add_gridspec(rows, max(1, len(closeups)))
    vmax = None
    for row, (title, signal) in enumerate((("before", before), ("after", after))):
        axis = fig.add_subplot(grid[row, :])
        freqs, times, db = _spectrogram_db(signal, rate)
        vmax = db.max() if vmax is None else vmax
        axis.pcolormesh(
            times + lo / rate,
            freqs / 1000.0,
            db,
            shading="auto",
            vmin=vmax - 100,
            vmax=vmax,
            cmap="magma",
        )
        for span in repaired_spans:
            if span.channel == channel:
                axis.axvspan(span.start / rate, span.end / rate, color="cyan", alpha=0.25)
        axis.set_title(f"{report.source.name}, channel {channel + 1}: {title}")
        axis.set_ylabel("kHz")
    axis.set_xlabel("seconds in source")

    for col, span in enumerate(closeups):
        axis = fig.add_subplot(grid[2, col])
        pad = max(span.end - span.start, int(0.005 * rate))
        a = max(lo, span.start - pad)
        b = min(hi, span.end + pad)
        t = np.arange(a, b) / rate * 1000.0
        axis.plot(t, before[a - lo : b - lo], lw=0.9, label="before")
        axis.plot(t, after[a - lo : b - lo], lw=0.9, label="after")
        axis.axvspan(span.start / rate * 1000.0, span.end / rate * 1000.0, color="cyan", alpha=0.2)
        axis.set_title(f"{span.kind} at {span.start / rate:.3f} s ({span.method})", fontsize=9)
        axis.set_xlabel("ms")
        if col == 0:
            axis.legend(fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
