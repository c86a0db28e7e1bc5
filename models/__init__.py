"""Audio-MAE and everything learned: front end, model, checkpoints.

Pure tensors in, tensors out; the only files touched are checkpoints.
"""

from importlib import import_module
from typing import Any

# The names below are loaded on first use, not with the package: importing a light module
# (the training settings the command line builds ``maedaw train``'s options from) must not
# import torch, which would add seconds to every ``maedaw`` command.
_EXPORTS = {
    "AudioMAE": "audiomae",
    "AudioMAEConfig": "audiomae",
    "preset": "audiomae",
    "CheckpointError": "checkpoint",
    "CheckpointMeta": "checkpoint",
    "load_model": "checkpoint",
    "load_official": "checkpoint",
    "save_model": "checkpoint",
    "FrontendConfig": "frontend",
    "fit_window": "frontend",
    "split_windows": "frontend",
    "waveform_to_fbank": "frontend",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
