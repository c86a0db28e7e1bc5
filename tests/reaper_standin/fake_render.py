"""What REAPER's "Render items to new take" writes, for the stand-in: the item's sound.

``fake_render.py SRC START LENGTH RATE OUT``: ``LENGTH`` seconds of item time, reading the
source from ``START`` at ``RATE`` (nearest sample; REAPER resamples properly, but the
scripts only need a file of the item's length whose content follows the take).
"""

from __future__ import annotations

import sys

import numpy as np

from maedaw.dsp.audio_io import SampleFormat, read_region, write_stem


def main() -> None:
    src, start, length, rate, out = sys.argv[1:6]
    audio = read_region(src)
    sr = audio.info.sample_rate
    frames = round(float(length) * sr)
    index = np.round(float(start) * sr + np.arange(frames) * float(rate)).astype(int)
    index = np.clip(index, 0, audio.samples.shape[1] - 1)
    write_stem(out, np.ascontiguousarray(audio.samples[:, index]), sr, SampleFormat.FLOAT32)


if __name__ == "__main__":
    main()
