"""What :mod:`maedaw.dsp.repair` needs from a gap filler that is not DSP (a learnt model).

dsp never loads a model: the caller passes an object with these members, or None for AR
only. ``maedaw.models.inpaint.Inpainter`` (Audio-MAE) has them; ``maedaw.bridge.inpainters``
loads one by name. Any other filler (a test's fake, another model) works the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Inpainter(Protocol):
    """Fills gaps of a signal from the audio around them."""

    max_gap_s: float  # the longest gap it fills, seconds

    def fade(self, rate: int) -> int:
        """Samples of crossfade each side of a gap its fill is blended in with."""
        ...

    def fill(
        self,
        samples: np.ndarray,
        rate: int,
        gaps: Sequence[tuple[int, int]],
        damaged: Sequence[tuple[int, int]] = (),
    ) -> np.ndarray:
        """Float64 copy of ``samples`` (``(channels, N)``) whose ``gaps`` (sample ranges shared
        by every channel), widened by :meth:`fade`, hold the fill; ``damaged`` lists other
        stretches that must not serve as context."""
        ...
