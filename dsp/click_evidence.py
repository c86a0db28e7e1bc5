"""What the two-sided AR click test measured about a candidate that passed it.

The click test of :mod:`.detect` flags every stretch that neither side of the signal
predicts. Real transients fail it too: a struck object, a consonant, a mechanical tick, a
crackle of fire. These ten measurements of the candidate and its surroundings (how long it
is, whether it rings on, how it stands out of the programme around it) are part of what the
click judge (:mod:`.click_net`) sees, and they give the reason a span is left alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

__all__ = ["FEATURES", "ClickEvidence"]


@dataclass(frozen=True, slots=True)
class ClickEvidence:
    """What the click test measured about one verified candidate."""

    samples: int  # length of the stretch neither side predicts
    ms: float  # the same in milliseconds
    tail_db: float  # whitened power just after it over just before it (a transient rings on)
    prominence: float  # its peak (or deviation) over the signal's peak within 10 ms around it
    size_to_rms: float  # its deviation from both sides' prediction over the RMS around it
    level_db: float  # RMS of the 10 ms around it, dBFS
    error_to_median: float  # its whitened error over the median whitened error around it
    error_to_peak: float  # ...over the largest whitened error around it (peaky programme)
    kurtosis: float  # of the whitened error around it (impulsive programme: crackle, ticks)
    ar_confidence: float  # the AR test's own confidence, 1 - bar / evidence

    def features(self) -> np.ndarray:
        """As the click judge takes them: ratios on a log scale, clipped to a sane range."""

        def log(v: float) -> float:
            return math.log(max(v, 1e-3))

        return np.array(
            [
                log(self.samples),
                self.ms,
                min(max(self.tail_db, -30.0), 30.0),
                log(self.prominence),
                log(self.size_to_rms),
                max(self.level_db, -90.0),
                log(self.error_to_median),
                log(self.error_to_peak),
                log(self.kurtosis),
                self.ar_confidence,
            ]
        )


FEATURES: Final = (
    "log_samples",
    "ms",
    "tail_db",
    "log_prominence",
    "log_size_to_rms",
    "level_db",
    "log_error_to_median",
    "log_error_to_peak",
    "log_kurtosis",
    "ar_confidence",
)
