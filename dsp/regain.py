"""Repair a level drop by undoing its gain, not by guessing the audio.

A wireless-mic or tape level drop leaves the real signal in place, only tens of
dB quieter. Interpolation would throw that signal away; restoring the gain keeps
it. The detector places level drops to within a hop (2 ms), so the exact fall
and rise are found here first, as the sharpest energy steps near each edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_STEP_DB = 12.0  # weaker steps are not a clear drop: leave it to AR
MAX_EDGE_MISMATCH_DB = 10.0  # the fall and the rise must undo about the same gain
EDGE_MS = 1.0  # energy window that locates a step
LEVEL_MS = 5.0  # energy window that measures the gain at an edge
SEARCH_MS = 4.0  # how far from the detector's edge a step is looked for
RAMP_MS = 0.25  # gain ramp at each edge, so a step a sample off leaves no click


@dataclass(frozen=True, slots=True)
class LevelDrop:
    """A located drop: ``[fall, rise)`` is attenuated by ``fall_db`` .. ``rise_db``."""

    fall: int
    rise: int
    fall_db: float
    rise_db: float


def _energy(cumulative: np.ndarray, lo: int, hi: int) -> float:
    return float(cumulative[hi] - cumulative[lo]) / max(1, hi - lo) + 1e-20


def locate(x: np.ndarray, start: int, end: int, rate: int) -> LevelDrop | None:
    """Find the exact fall and rise of a detected drop ``[start, end)`` of 1-D ``x``.

    Returns None when the edges do not look like one gain change undone (too weak,
    or a fall and a rise of clearly different depths): regain would then do harm.
    """
    edge = max(8, round(EDGE_MS * rate / 1000))
    level = max(edge, round(LEVEL_MS * rate / 1000))
    search = max(2 * edge, round(SEARCH_MS * rate / 1000))
    lo = max(0, start - search - level)
    hi = min(x.size, end + search + level)
    if end - start < 2 * edge or start - lo < edge or hi - end < edge:
        return None
    power = np.asarray(x[lo:hi], dtype=np.float64) ** 2
    cumulative = np.concatenate([[0.0], np.cumsum(power)])

    def step_db(n: int) -> float:  # energy after n over energy before n, in dB
        return 10 * np.log10(_energy(cumulative, n, n + edge) / _energy(cumulative, n - edge, n))

    falls = range(max(edge, start - lo - search), min(end - lo - edge, start - lo + search))
    rises = range(max(edge, end - lo - search), min(hi - lo - edge, end - lo + search))
    if not falls or not rises:
        return None
    fall = min(falls, key=step_db)
    rise = max(rises, key=step_db)
    if rise - fall < 2 * edge:
        return None
    # The detector's end can overshoot into later audio; the true rise is then the
    # first step inside the stretch that undoes about as much as the fall did.
    inner = np.arange(fall + 2 * edge, rise - edge)
    if inner.size:
        after = (cumulative[inner + edge] - cumulative[inner]) / edge + 1e-20
        before = (cumulative[inner] - cumulative[inner - edge]) / edge + 1e-20
        steps = 10 * np.log10(after / before)
        fall_step = -step_db(fall)
        big = np.flatnonzero(steps >= max(MIN_STEP_DB, fall_step - MAX_EDGE_MISMATCH_DB))
        if big.size:
            first = big[0]
            rise = int(inner[first + int(np.argmax(steps[first : first + edge]))])
    inside = min(level, (rise - fall) // 2)
    fall_db = 10 * np.log10(
        _energy(cumulative, max(0, fall - level), fall) / _energy(cumulative, fall, fall + inside)
    )
    rise_db = 10 * np.log10(
        _energy(cumulative, rise, min(hi - lo, rise + level))
        / _energy(cumulative, rise - inside, rise)
    )
    if min(fall_db, rise_db) < MIN_STEP_DB or abs(fall_db - rise_db) > MAX_EDGE_MISMATCH_DB:
        return None
    return LevelDrop(fall + lo, rise + lo, float(fall_db), float(rise_db))


def restore(x: np.ndarray, drop: LevelDrop, rate: int) -> np.ndarray:
    """Return a copy of 1-D ``x`` with ``[drop.fall, drop.rise)`` brought back up.

    The gain moves linearly in dB from the fall's depth to the rise's (a drop can
    drift), and ramps in over a fraction of a millisecond at each edge.
    """
    out = np.array(x, dtype=np.float64, copy=True)
    length = drop.rise - drop.fall
    gain_db = np.linspace(drop.fall_db, drop.rise_db, length)
    ramp = min(length // 2, max(1, round(RAMP_MS * rate / 1000)))
    shape = np.ones(length)
    shape[:ramp] = np.linspace(0.0, 1.0, ramp + 2)[1:-1]
    shape[length - ramp :] = np.linspace(1.0, 0.0, ramp + 2)[1:-1]
    out[drop.fall : drop.rise] *= 10.0 ** (gain_db * shape / 20.0)
    return out
