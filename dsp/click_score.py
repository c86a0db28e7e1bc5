"""Digital click or acoustic transient? A logistic score over what the click test measured.

The two-sided AR test of :mod:`.detect` flags every stretch that neither side of the signal
predicts. Real transients fail it too: a struck object, a consonant, a mechanical tick, a
crackle of fire. Hand-set guards (rings on after it, longer than 0.5 ms, not above the
programme's peak) kept most of them out but also most inserted clicks (45 % recall), and their
false alarms tripled on a folder they were not tuned on. This module replaces them with one
score, the probability that a verified candidate is a digital click, from ten measurements of
the candidate and its surroundings (:class:`ClickEvidence`), combined by a logistic regression
fitted on real recordings: clicks inserted into, and candidates found in, clean clips of the
corpus's training packages at their own sample rates (``maedaw bench click-fit``). The
parameters live in ``click_score.json`` beside this module, with how they were made.

Why logistic regression (fitted with scikit-learn): ten numbers, one weight each, readable
and monotone; a candidate is rare (the AR test runs first), so the score costs nothing; and
the weights say which measurement speaks against a candidate, which becomes the reason a span
is left alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import numpy as np

__all__ = ["FEATURES", "ClickEvidence", "ClickModel", "bundled_click_model"]

BUNDLED: Final = Path(__file__).with_name("click_score.json")


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
        """The model's inputs: ratios on a log scale, everything clipped to a sane range."""

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

# When a feature weighs most against a candidate, this is what the user reads.
_AGAINST: Final = {
    "log_samples": "{e.samples} samples long: could be a transient",
    "ms": "{e.ms:.2f} ms long: could be a transient",
    "tail_db": "rings on after the impulse ({e.tail_db:+.0f} dB tail): a transient's decay",
    "log_prominence": "peak {e.prominence:.2f}x the programme's peak around it: part of it?",
    "log_size_to_rms": "small against the level around it ({e.size_to_rms:.1f}x its RMS)",
    "level_db": "in quiet material ({e.level_db:.0f} dBFS around it)",
    "log_error_to_median": "barely stands out of the whitened signal ({e.error_to_median:.0f}x)",
    "log_error_to_peak": "no larger than the programme's own impulses ({e.error_to_peak:.1f}x)",
    "log_kurtosis": "impulsive programme around it (kurtosis {e.kurtosis:.0f}): crackle or ticks",
    "ar_confidence": "only just fails the prediction test ({e.ar_confidence:.2f})",
}


@dataclass(frozen=True)
class ClickModel:
    """``P(click) = sigmoid(weights . (features - mean) / scale + bias)``."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        n = len(FEATURES)
        if not len(self.mean) == len(self.scale) == len(self.weights) == n:
            raise ValueError(f"a click model needs {n} means, scales and weights")
        values = (*self.mean, *self.scale, *self.weights, self.bias)
        if not all(math.isfinite(v) for v in values) or min(self.scale) <= 0:
            raise ValueError("click model parameters must be finite, scales > 0")

    def _terms(self, evidence: ClickEvidence) -> np.ndarray:
        z = (evidence.features() - np.asarray(self.mean)) / np.asarray(self.scale)
        return np.asarray(self.weights) * z

    def score(self, evidence: ClickEvidence) -> float:
        """The probability that the candidate is a digital click, in [0, 1]."""
        logit = float(self._terms(evidence).sum()) + self.bias
        return 1.0 / (1.0 + math.exp(-min(max(logit, -60.0), 60.0)))

    def against(self, evidence: ClickEvidence) -> str:
        """In words, the measurement that weighs most against it being a click."""
        terms = self._terms(evidence)
        worst = int(np.argmin(terms))
        return _AGAINST[FEATURES[worst]].format(e=evidence)

    @classmethod
    def fit(
        cls,
        evidence: list[ClickEvidence],
        is_click: list[bool],
        c: float = 1.0,
        negative_weight: float = 3.0,
        provenance: dict[str, Any] | None = None,
    ) -> ClickModel:
        """L2-regularised logistic regression (scikit-learn, inverse strength ``c``) on
        standardised features. Transients are weighted ``negative_weight`` times a click: a
        false alarm writes over clean audio, a miss only leaves a click where it was."""
        from sklearn.linear_model import LogisticRegression  # fitting only: not at detect time

        x = np.stack([e.features() for e in evidence])
        y = np.asarray(is_click, dtype=bool)
        if not 0 < y.sum() < y.size:
            raise ValueError("fitting needs both clicks and transients")
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
        fitted = LogisticRegression(C=c, max_iter=1000).fit(
            (x - mean) / scale, y, sample_weight=np.where(y, 1.0, negative_weight)
        )
        return cls(
            tuple(mean.tolist()),
            tuple(scale.tolist()),
            tuple(fitted.coef_[0].tolist()),
            float(fitted.intercept_[0]),
            dict(provenance or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(FEATURES), **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClickModel:
        if data.get("features") != list(FEATURES):
            raise ValueError(f"click model features {data.get('features')} are not {FEATURES}")
        return cls(
            tuple(float(v) for v in data["mean"]),
            tuple(float(v) for v in data["scale"]),
            tuple(float(v) for v in data["weights"]),
            float(data["bias"]),
            dict(data.get("provenance", {})),
        )

    @classmethod
    def load(cls, path: Path) -> ClickModel:
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a click model ({exc})") from exc


@lru_cache(maxsize=1)
def bundled_click_model() -> ClickModel:
    """The model that ships with maedaw (``click_score.json``)."""
    return ClickModel.load(BUNDLED)
