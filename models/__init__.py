"""Audio-MAE and everything learned: front end, model, checkpoints.

Pure tensors in, tensors out; the only files touched are checkpoints.
"""

from .audiomae import AudioMAE, AudioMAEConfig, preset
from .checkpoint import CheckpointError, CheckpointMeta, load_model, load_official, save_model
from .frontend import FrontendConfig, fit_window, split_windows, waveform_to_fbank

__all__ = [
    "AudioMAE",
    "AudioMAEConfig",
    "CheckpointError",
    "CheckpointMeta",
    "FrontendConfig",
    "fit_window",
    "load_model",
    "load_official",
    "preset",
    "save_model",
    "split_windows",
    "waveform_to_fbank",
]
