"""``maedaw bench restore``: how much each restoration op recovers on real audio.

For up to ``--max-clips`` clips per ``DATA/<category>/`` folder (spread over the
folder; clips under a second or near-silent are passed over), an excerpt of
``--seconds`` from each clip's middle at its own rate and channel count, the benchmark
damages a copy the way the op is meant to undo, restores it through
:func:`dsp.restore.restore_file` (the CLI's code path, via a temporary WAV) and scores
it against the clean clip:

* ``declip``: hard clipping at 25/50/75 % of the clip's peak; SDR of the clipped and
  of the declipped clip (dB), and their difference.
* ``bandwidth``: the clip band-limited by resampling (soxr) to 2 x cutoff and back,
  cutoffs 4 kHz (every rate), 8 and 16 kHz (rates that have them); log-spectral
  distance above the cutoff, band-limited vs extended. A cutoff is skipped (and
  counted) where the clip itself already stops below 1.1 x it (Vorbis sources often
  end at 16 kHz): there is nothing true to compare the extension with.
* ``denoise``: white and pink noise at 5 and 15 dB SNR; SNR after our denoiser and
  after ``noisereduce`` (its default non-stationary gating, and stationary gating
  given 1 s of the true noise: an oracle advantage); on speech also
  DNSMOS (``speechmos``, its bundled ONNX model, 16 kHz) of noisy, ours,
  noisereduce and clean.
* ``dehum``: 50 Hz hum with 8 harmonics, 20 dB below the clip's RMS; hum removed
  (dB: the filter is linear, so the hum left is the output minus the same notches
  applied to the clean clip), and SDR before/after (which also counts what the
  notches take from the clip itself).

Writes ``restore.json`` (every clip's numbers and the medians) and ``restore.png``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soxr
from scipy import signal

from maedaw.core.util import ProgressFn
from maedaw.dsp.audio_io import READ_EXTENSIONS, AudioError, probe, read_region
from maedaw.dsp.bandwidth import find_cutoff
from maedaw.dsp.dehum import remove_lines
from maedaw.dsp.metrics import sdr_db
from maedaw.dsp.restore import process_array

log = logging.getLogger(__name__)

CLIP_FRACTIONS = (0.25, 0.5, 0.75)
CUTOFFS_HZ = (4000.0, 8000.0, 16000.0)
NOISE_SNRS_DB = (5.0, 15.0)
NOISE_KINDS = ("white", "pink")
HUM_HZ, HUM_HARMONICS, HUM_BELOW_DB = 50.0, 8, 20.0
DNSMOS_RATE = 16_000


def _clips(data: Path) -> dict[str, list[Path]]:
    """Category folder -> its audio files, in a spread order (every file, visited by a
    stride through the sorted list, so any prefix samples the whole folder)."""
    found: dict[str, list[Path]] = {}
    folders = sorted(p for p in data.iterdir() if p.is_dir()) or [data]
    for folder in folders:
        files = sorted(
            p for p in folder.rglob("*") if p.suffix.lower() in READ_EXTENSIONS and p.is_file()
        )
        stride = max(1, round(math.sqrt(len(files))))
        if files:
            found[folder.name] = [
                files[i] for r in range(stride) for i in range(r, len(files), stride)
            ]
    if not found:
        raise AudioError(f"{data}: no audio files found (expected DATA/<category>/*.wav ...)")
    return found


def _excerpt(path: Path, seconds: float) -> tuple[np.ndarray, int] | None:
    """The middle ``seconds`` of a file, or None when it is too short or silent."""
    try:
        info = probe(path)
    except AudioError as exc:
        log.warning("skipping %s: %s", path, exc)
        return None
    length = min(info.frames, round(seconds * info.sample_rate))
    if length < info.sample_rate:  # under a second says little about any op
        return None
    start = (info.frames - length) // 2
    x = read_region(path, start, start + length).samples
    if 20 * math.log10(float(np.sqrt(np.mean(x**2))) + 1e-12) < -50.0:
        return None
    return x, info.sample_rate


def _hum(frames: int, rate: int, rms: float) -> np.ndarray:
    t = np.arange(frames) / rate
    hum = sum(np.sin(2 * np.pi * HUM_HZ * k * t + k) / k for k in range(1, HUM_HARMONICS + 1))
    hum *= rms * 10 ** (-HUM_BELOW_DB / 20) / np.sqrt(np.mean(hum**2))
    return hum


def _hum_power(x: np.ndarray, rate: int) -> float:
    """Power of the least-squares fit of the hum's harmonics (fixed, known frequencies)."""
    t = np.arange(x.shape[-1]) / rate
    basis = np.stack(
        [
            f(2 * np.pi * HUM_HZ * k * t)
            for k in range(1, HUM_HARMONICS + 1)
            for f in (np.sin, np.cos)
        ],
        axis=1,
    )
    coef, *_ = np.linalg.lstsq(basis, np.atleast_2d(x).T, rcond=None)
    return float(np.mean((basis @ coef) ** 2))


def _noise(shape: tuple[int, ...], kind: str, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(shape)
    if kind == "white":
        return white
    # pink: white shaped by 1/sqrt(f) in the frequency domain
    spectrum = np.fft.rfft(white, axis=-1)
    f = np.arange(spectrum.shape[-1])
    spectrum /= np.sqrt(np.maximum(f, 1))
    return np.fft.irfft(spectrum, n=shape[-1], axis=-1)


def lsd_band(
    reference: np.ndarray, estimate: np.ndarray, rate: int, lo_hz: float, hi_hz: float
) -> float:
    """Log-spectral distance (dB) over the bins in ``[lo_hz, hi_hz)`` only.

    Same frames and floor as :func:`dsp.metrics.log_spectral_distance` (25 ms Hann,
    75 % overlap, powers floored 80 dB below the reference's loudest bin).
    """
    frame = max(4, 4 * round(0.025 * rate / 4))
    kwargs = {"nperseg": frame, "noverlap": frame - frame // 4, "boundary": None, "padded": False}
    f, _, z_ref = signal.stft(np.atleast_2d(reference), rate, **kwargs)
    _, _, z_est = signal.stft(np.atleast_2d(estimate), rate, **kwargs)
    p_ref, p_est = np.abs(z_ref) ** 2, np.abs(z_est) ** 2
    eps = max(float(p_ref.max()) * 1e-8, 1e-30)
    band = (f >= lo_hz) & (f < hi_hz)
    diff = 10 * np.log10(np.maximum(p_ref[:, band], eps)) - 10 * np.log10(
        np.maximum(p_est[:, band], eps)
    )
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=-2))))


def _own_cutoff(x: np.ndarray, rate: int) -> float | None:
    """Where the clip itself is band-limited (None: full band), by the op's own detector."""
    nperseg = 2 ** round(math.log2(rate / 10.0))
    freqs, power = signal.welch(x, rate, nperseg=min(nperseg, x.shape[1]), axis=-1)
    found = find_cutoff(freqs, power.sum(axis=0), 25.0)
    return found["cutoff_hz"] if found["band_limited"] else None


def _band_limit(x: np.ndarray, rate: int, cutoff: float) -> np.ndarray:
    low = soxr.resample(x.T, rate, round(2 * cutoff), quality="VHQ")
    back = soxr.resample(low, round(2 * cutoff), rate, quality="VHQ").T
    out = np.zeros_like(x)
    n = min(out.shape[1], back.shape[1])
    out[:, :n] = back[:, :n]
    return out


class _Dnsmos:
    """DNSMOS from ``speechmos`` (loaded once; None when the package is missing)."""

    def __init__(self, enabled: bool) -> None:
        self.run: Callable | None = None
        if not enabled:
            return
        try:
            from speechmos import dnsmos

            self.run = dnsmos.run
        except ImportError as exc:  # optional: pip install 'maedaw[bench]'
            log.warning("DNSMOS skipped: %s", exc)

    def __call__(self, x: np.ndarray, rate: int) -> float | None:
        if self.run is None:
            return None
        mono = np.atleast_2d(x).mean(axis=0)
        if rate != DNSMOS_RATE:
            mono = soxr.resample(mono, rate, DNSMOS_RATE)
        mono = np.clip(mono, -1.0, 1.0).astype(np.float32)
        return float(self.run(mono, DNSMOS_RATE)["ovrl_mos"])


def _timed_restore(x: np.ndarray, rate: int, op: str, options: dict | None = None) -> tuple:
    clock = time.perf_counter()
    out, report = process_array(x, rate, op, options)
    return out, report, time.perf_counter() - clock


def _bench_clip(
    x: np.ndarray,
    rate: int,
    category: str,
    ops: list[str],
    rng: np.random.Generator,
    dnsmos: _Dnsmos,
) -> list[dict]:
    rows: list[dict] = []
    seconds = x.shape[1] / rate
    x = x * (0.9 / max(float(np.abs(x).max()), 1e-9))  # room for declipped peaks
    base = {"category": category, "rate": rate, "channels": x.shape[0], "seconds": seconds}
    if "declip" in ops:
        peak = float(np.abs(x).max())
        for fraction in CLIP_FRACTIONS:
            clipped = np.clip(x, -fraction * peak, fraction * peak)
            out, report, took = _timed_restore(clipped, rate, "declip")
            rows.append(
                {
                    **base,
                    "op": "declip",
                    "clip_fraction": fraction,
                    "clipped_share": float(np.mean(np.abs(clipped) >= fraction * peak - 1e-9)),
                    "sdr_in_db": sdr_db(x, clipped),
                    "sdr_out_db": sdr_db(x, out),
                    "detected": bool(report.detection.get("clipped")),
                    "rtf": took / seconds,
                }
            )
    if "bandwidth" in ops:
        nyquist = rate / 2
        own = _own_cutoff(x, rate)
        for cutoff in CUTOFFS_HZ:
            if cutoff > 0.8 * nyquist:
                continue
            if own is not None and own < 1.1 * cutoff:
                # the "clean" clip itself stops near here (e.g. a Vorbis lowpass at 16 kHz):
                # no ground truth above the cutoff to score against
                rows.append(
                    {**base, "op": "bandwidth_skipped", "cutoff_hz": cutoff, "own_cutoff_hz": own}
                )
                continue
            limited = _band_limit(x, rate, cutoff)
            out, report, took = _timed_restore(limited, rate, "bandwidth")
            top = min(0.95 * nyquist, 20_000.0)
            rows.append(
                {
                    **base,
                    "op": "bandwidth",
                    "cutoff_hz": cutoff,
                    "detected_cutoff_hz": report.detection.get("cutoff_hz"),
                    "lsd_limited_db": lsd_band(x, limited, rate, 1.05 * cutoff, top),
                    "lsd_extended_db": lsd_band(x, out, rate, 1.05 * cutoff, top),
                    "lsd_full_limited_db": lsd_band(x, limited, rate, 0.0, nyquist + 1),
                    "lsd_full_extended_db": lsd_band(x, out, rate, 0.0, nyquist + 1),
                    "rtf": took / seconds,
                }
            )
    if "denoise" in ops:
        try:
            import noisereduce
        except ImportError as exc:  # the baseline is a bench extra, not a runtime dependency
            raise RuntimeError(
                "the denoise benchmark compares with noisereduce: pip install 'maedaw[bench]'"
            ) from exc

        rms = float(np.sqrt(np.mean(x**2)))
        for kind in NOISE_KINDS:
            for snr in NOISE_SNRS_DB:
                noise = _noise(x.shape, kind, rng)
                noise *= rms * 10 ** (-snr / 20) / np.sqrt(np.mean(noise**2))
                noisy = np.clip(x + noise, -0.999, 0.999)
                ours, _, took = _timed_restore(noisy, rate, "denoise")
                clock = time.perf_counter()
                gated = noisereduce.reduce_noise(y=noisy, sr=rate)  # its default (adaptive)
                took_nr = time.perf_counter() - clock
                # stationary gating told the true noise (1 s of it): an oracle advantage
                oracle = noisereduce.reduce_noise(
                    y=noisy, sr=rate, stationary=True, y_noise=noise[:, :rate]
                )
                row = {
                    **base,
                    "op": "denoise",
                    "noise": kind,
                    "snr_in_db": sdr_db(x, noisy),
                    "snr_ours_db": sdr_db(x, ours),
                    "snr_noisereduce_db": sdr_db(x, gated),
                    "snr_noisereduce_oracle_db": sdr_db(x, oracle),
                    "rtf": took / seconds,
                    "rtf_noisereduce": took_nr / seconds,
                }
                if category == "speech" and dnsmos.run is not None:
                    row.update(
                        dnsmos_noisy=dnsmos(noisy, rate),
                        dnsmos_ours=dnsmos(ours, rate),
                        dnsmos_noisereduce=dnsmos(gated, rate),
                        dnsmos_clean=dnsmos(x, rate),
                    )
                rows.append(row)
    if "dehum" in ops:
        rms = float(np.sqrt(np.mean(x**2)))
        hummed = x + _hum(x.shape[1], rate, rms)[None]
        out, report, took = _timed_restore(hummed, rate, "dehum")
        # The filter is linear: the hum left is the output minus the same filter applied
        # to the clean clip (what it removes of the clip itself is counted in the SDR).
        targets = [h["freq_hz"] for h in report.detection.get("notched", [])]
        width = report.options["width_hz"]
        filtered = remove_lines(x, targets, width, rate, x.shape[1]) if targets else x
        hum_left = max(float(np.mean((out - filtered) ** 2)), 1e-30)
        fit_left = max(_hum_power(out - x, rate), 1e-30)
        rows.append(
            {
                **base,
                "op": "dehum",
                "detected_hz": report.detection.get("fundamental_hz"),
                "harmonics_notched": float(len(targets)),
                "hum_reduction_db": 10 * math.log10(float(np.mean((hummed - x) ** 2)) / hum_left),
                "hum_fit_reduction_db": 10 * math.log10(_hum_power(hummed - x, rate) / fit_left),
                "sdr_in_db": sdr_db(x, hummed),
                "sdr_out_db": sdr_db(x, out),
                "rtf": took / seconds,
            }
        )
    return rows


def _median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
    return float(np.median(values)) if values else None


def summarise(rows: list[dict]) -> list[dict]:
    """Median of every metric per (op, category, condition)."""
    conditions = {
        "declip": ("clip_fraction",),
        "bandwidth": ("cutoff_hz", "rate"),
        "denoise": ("noise", "snr_target"),
        "dehum": (),
    }
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["op"] not in conditions:
            continue
        if row["op"] == "denoise":
            row.setdefault("snr_target", round(row["snr_in_db"] / 5) * 5)
        key = (row["op"], row["category"], *(row[c] for c in conditions[row["op"]]))
        groups.setdefault(key, []).append(row)
    table = []
    for key, members in sorted(groups.items(), key=lambda kv: [str(k) for k in kv[0]]):
        op = key[0]
        entry = {"op": op, "category": key[1], "clips": len(members)}
        entry.update(zip(conditions[op], key[2:], strict=True))
        metrics = sorted(
            {k for m in members for k, v in m.items() if isinstance(v, float)}
            - {"seconds", "clip_fraction", "cutoff_hz"}
        )
        entry.update({m: _median(members, m) for m in metrics})
        table.append(entry)
    return table


OPS = ("declip", "bandwidth", "denoise", "dehum")  # what the benchmark measures, in order


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _section(title: str, columns: Sequence[str], rows: Sequence[str]) -> str:
    """One markdown table under a bold title ("" when there are no rows)."""
    if not rows:
        return ""
    head = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join([title, "", *head, *rows])


def _dnsmos(t: dict) -> str:
    if t.get("dnsmos_ours") is None:
        return "–"
    keys = ("dnsmos_noisy", "dnsmos_ours", "dnsmos_noisereduce", "dnsmos_clean")
    return " / ".join(_fmt(t.get(k), 2) for k in keys)


def markdown(table: list[dict]) -> str:
    """The summary as markdown tables, one per op."""
    by_op = {op: [t for t in table if t["op"] == op] for op in OPS}
    sections = [
        _section(
            "**declip** (median SDR, dB)",
            ["category", "clip at", "clipped samples", "SDR clipped", "SDR declipped", "gain"],
            [
                f"| {t['category']} | {t['clip_fraction']:.0%} of peak | "
                f"{_fmt(100 * t['clipped_share'])} % | {_fmt(t['sdr_in_db'])} | "
                f"{_fmt(t['sdr_out_db'])} | {_fmt(t['sdr_out_db'] - t['sdr_in_db'])} |"
                for t in by_op["declip"]
            ],
        ),
        _section(
            "**bandwidth** (median LSD above the cutoff, dB; lower is better)",
            ["category", "rate", "cutoff", "LSD band-limited", "LSD extended", "detected cutoff"],
            [
                f"| {t['category']} | {t['rate']} | {t['cutoff_hz'] / 1000:g} kHz | "
                f"{_fmt(t['lsd_limited_db'])} | {_fmt(t['lsd_extended_db'])} | "
                f"{_fmt(t.get('detected_cutoff_hz'), 0)} |"
                for t in by_op["bandwidth"]
            ],
        ),
        _section(
            "**denoise** (median SNR, dB; DNSMOS OVRL on speech, 1-5)",
            [
                "category",
                "noise",
                "SNR in",
                "ours",
                "noisereduce",
                "noisereduce stationary + true noise clip",
                "DNSMOS noisy / ours / noisereduce / clean",
            ],
            [
                f"| {t['category']} | {t['noise']} | {_fmt(t['snr_in_db'])} | "
                f"{_fmt(t['snr_ours_db'])} | {_fmt(t['snr_noisereduce_db'])} | "
                f"{_fmt(t.get('snr_noisereduce_oracle_db'))} | {_dnsmos(t)} |"
                for t in by_op["denoise"]
            ],
        ),
        _section(
            "**dehum** (50 Hz + 8 harmonics, 20 dB below the clip; medians)",
            ["category", "hum removed (dB)", "harmonics notched", "SDR with hum", "SDR dehummed"],
            [
                f"| {t['category']} | {_fmt(t['hum_reduction_db'])} | "
                f"{_fmt(t.get('harmonics_notched'), 0)} | {_fmt(t['sdr_in_db'])} | "
                f"{_fmt(t['sdr_out_db'])} |"
                for t in by_op["dehum"]
            ],
        ),
    ]
    return "\n\n".join(section for section in sections if section)


def plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    cats = sorted({t["category"] for t in table})
    colours = dict(zip(cats, plt.cm.tab10.colors, strict=False))
    ax = axes[0]
    for cat in cats:
        rows = [t for t in table if t["op"] == "declip" and t["category"] == cat]
        if rows:
            ax.plot(
                [r["clip_fraction"] for r in rows],
                [r["sdr_out_db"] - r["sdr_in_db"] for r in rows],
                "o-",
                color=colours[cat],
                label=cat,
            )
    ax.set(title="declip: SDR gain (dB)", xlabel="clip level / peak")
    ax = axes[1]
    rows = [t for t in table if t["op"] == "bandwidth"]
    labels = [f"{r['category'][:3]} {r['cutoff_hz'] / 1000:g}k@{r['rate'] // 1000}k" for r in rows]
    pos = np.arange(len(rows))
    ax.bar(pos - 0.2, [r["lsd_limited_db"] for r in rows], 0.4, label="band-limited")
    ax.bar(pos + 0.2, [r["lsd_extended_db"] for r in rows], 0.4, label="extended")
    ax.set_xticks(pos, labels, rotation=60, fontsize=7)
    ax.set(title="bandwidth: LSD above cutoff (dB)")
    ax.legend(fontsize=7)
    ax = axes[2]
    rows = [t for t in table if t["op"] == "denoise"]
    labels = [f"{r['category'][:3]} {r['noise'][:2]} {r['snr_in_db']:.0f}" for r in rows]
    pos = np.arange(len(rows))
    ax.bar(pos - 0.2, [r["snr_ours_db"] - r["snr_in_db"] for r in rows], 0.4, label="ours")
    ax.bar(
        pos + 0.2,
        [r["snr_noisereduce_db"] - r["snr_in_db"] for r in rows],
        0.4,
        label="noisereduce",
    )
    ax.set_xticks(pos, labels, rotation=60, fontsize=7)
    ax.set(title="denoise: SNR gain (dB)")
    ax.legend(fontsize=7)
    ax = axes[3]
    rows = [t for t in table if t["op"] == "dehum"]
    ax.bar([r["category"] for r in rows], [r["hum_reduction_db"] for r in rows])
    ax.set(title="dehum: hum removed (dB)")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench_restore(
    data: Path,
    out: Path,
    ops: list[str] | None = None,
    max_clips: int = 12,
    seconds: float = 8.0,
    dnsmos: bool = True,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> dict:
    """Run the benchmark over ``data``; write ``out/restore.json`` and ``out/restore.png``."""
    ops = list(ops or OPS)
    unknown = set(ops) - set(OPS)
    if unknown:
        raise AudioError(f"bench restore has no op {', '.join(sorted(unknown))}")
    data, out = Path(data), Path(out)
    if not data.is_dir():
        raise AudioError(f"{data}: not a folder")
    clips = _clips(data)
    scorer = _Dnsmos(dnsmos and "denoise" in ops and "speech" in clips)
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    total = max_clips * len(clips)
    done = 0
    clock = time.perf_counter()
    used: dict[str, int] = {}
    for category, paths in clips.items():
        used[category] = 0
        for path in paths:  # the first max_clips usable clips (a second or longer, not silent)
            if used[category] == max_clips:
                break
            loaded = _excerpt(path, seconds)
            if loaded is None:
                continue
            used[category] += 1
            done += 1
            if progress is not None:
                progress(done / total, f"{category} {used[category]}/{max_clips}")
            x, rate = loaded
            for row in _bench_clip(x, rate, category, ops, rng, scorer):
                rows.append({"file": str(path), **row})
    table = summarise(rows)
    result = {
        "data": str(data),
        "ops": ops,
        "max_clips": max_clips,
        "seconds": seconds,
        "clips": used,
        "wall_s": time.perf_counter() - clock,
        "bandwidth_skipped": [
            {"file": r["file"], "cutoff_hz": r["cutoff_hz"], "own_cutoff_hz": r["own_cutoff_hz"]}
            for r in rows
            if r["op"] == "bandwidth_skipped"
        ],
        "summary": table,
        "rows": rows,
    }
    result["markdown"] = markdown(table)
    if result["bandwidth_skipped"]:
        result["markdown"] += (
            f"\n\n{len(result['bandwidth_skipped'])} bandwidth cases skipped: the clip itself "
            "already stops near the cutoff (no ground truth above it)."
        )
    out.mkdir(parents=True, exist_ok=True)  # only now: a run that fails early leaves nothing
    json_path, png_path = out / "restore.json", out / "restore.png"
    json_path.write_text(json.dumps(result, indent=2, default=float))
    plot(table, png_path)
    result["json"], result["plot"] = str(json_path), str(png_path)
    return {k: v for k, v in result.items() if k != "rows"}
