"""The named random streams of a training run, and how each is seeded.

Every random draw of a run comes from a stream seeded by the run's seed, the stream's name and
the step, so step ``k`` of a resumed run draws exactly what an uninterrupted run drew. The
numbers behind the names are the derivations the bundled model was trained with, kept so that
runs stay reproducible bit for bit: a torch stream's seed at step ``k`` is
``seed * multiplier + offset + k``; the numpy crop stream is seeded with the entropy
``[seed, k]``. (With seed 0 the multiplied streams get the same seed at a step: a quirk of that
derivation, kept because changing it would change every run.)
"""

from __future__ import annotations

import numpy as np
import torch

# name -> (multiplier, offset) of the torch streams.
TORCH_STREAMS: dict[str, tuple[int, int]] = {
    "init": (1, 0),  # the model's initial weights (global RNG, once before the loop)
    "mask": (1_000_003, 0),  # a step's masks and augmentation (CPU generator)
    "dither": (104_729, 0),  # a step's portable-cache dither (generator on the device)
    "dropout": (7_919, 0),  # a step's global RNG: dropout inside the model
    "heldout": (1, 12_345),  # the held-out masks, the same at every checkpoint
}


def seed_for(seed: int, stream: str, step: int = 0) -> int:
    """The seed of torch stream ``stream`` at ``step`` of a run seeded with ``seed``."""
    multiplier, offset = TORCH_STREAMS[stream]
    return seed * multiplier + offset + step


def torch_generator(
    seed: int, stream: str, step: int = 0, device: torch.device | None = None
) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed_for(seed, stream, step))


def crop_generator(seed: int, step: int) -> np.random.Generator:
    """The crops stream: which files and windows make up the batch of ``step``."""
    return np.random.default_rng([seed, step])
