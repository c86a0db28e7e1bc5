"""Shared fixtures: real recordings from the Debian allowlist, and synthetic signals.

The real recordings come from Debian packages that ``.ci/run`` installs
(``alsa-utils``: spoken channel names; ``sound-theme-freedesktop``: recorded
bells and effects). CI sets ``MAEDAW_REQUIRE_REAL_AUDIO=1`` so that a missing
package fails the run instead of silently skipping the real-audio tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REAL_AUDIO_GLOBS = {
    "speech": ("/usr/share/sounds/alsa", "*.wav"),
    "effects": ("/usr/share/sounds/freedesktop/stereo", "*.oga"),
}


def _real_recordings(category: str) -> list[Path]:
    folder, pattern = REAL_AUDIO_GLOBS[category]
    paths = sorted(Path(folder).glob(pattern))
    # Noise.wav in alsa-utils is a test noise burst, not speech.
    paths = [p for p in paths if p.name != "Noise.wav"]
    if not paths:
        message = f"no real {category} recordings under {folder} (install the Debian package)"
        if os.environ.get("MAEDAW_REQUIRE_REAL_AUDIO") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return paths


@pytest.fixture(scope="session")
def real_speech() -> list[Path]:
    """Recorded human speech (48 kHz mono int16 WAV) from alsa-utils."""
    return _real_recordings("speech")


@pytest.fixture(scope="session")
def real_effects() -> list[Path]:
    """Recorded sounds (44.1 kHz stereo Ogg Vorbis) from sound-theme-freedesktop."""
    return _real_recordings("effects")


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def tone_mix(sample_rate: int, seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A harmonic tone with vibrato plus a little noise: music-like, never silent."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    out = np.empty((channels, t.size))
    for c in range(channels):
        f0 = 220.0 * (1.0 + 0.5 * c)
        phase = 2 * np.pi * f0 * t + 0.3 * np.sin(2 * np.pi * 5.0 * t)
        harmonics = sum(np.sin(k * phase) / k for k in range(1, 6))
        out[c] = 0.25 * harmonics + 0.005 * rng.standard_normal(t.size)
    return out


@pytest.fixture()
def private_user_dirs(tmp_path, monkeypatch):
    """Embedding cache, tag library and user models folder in the test's own temp folder."""
    from maedaw.models import tagging

    monkeypatch.setenv("MAEDAW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MAEDAW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MAEDAW_MODELS_DIR", str(tmp_path / "models"))
    tagging._cached_embedder.cache_clear()
