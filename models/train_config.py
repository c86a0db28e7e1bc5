"""The settings of a training run (``maedaw train``'s options are made from these fields).

Kept free of torch so the command line can build its parser without importing it. A field's
``metadata`` holds its option's ``help`` and, where the option is not ``--field-name``, its
``flag``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run (saved in the checkpoint; resume refuses a mismatch)."""

    config: str = field(default="compact", metadata={"help": "model preset (compact, vit_base)"})
    steps: int = 1000
    batch: int = 8
    # peak, for batch 8 (no automatic scaling: say what you use)
    lr: float = field(default=5e-4, metadata={"help": "peak learning rate"})
    min_lr: float = 1e-5
    warmup_steps: int = field(default=100, metadata={"help": "warm-up steps", "flag": "--warmup"})
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    mask_ratio: float = 0.8
    pack_short: float = field(
        default=0.5, metadata={"help": "chance to fill a short file's window"}
    )
    seed: int = 0
    save_every: int = field(default=200, metadata={"help": "checkpoint every N steps"})
    log_every: int = 20  # steps
    # CPU only; CUDA always uses bf16 autocast
    bf16: bool = field(default=False, metadata={"help": "bf16 autocast on CPU too"})
    # Share of windows whose mask is one contiguous run of whole time steps (the dropout shape
    # inpainting fills) topped up with random patches; the rest are unstructured.
    span_prob: float = field(
        default=0.0, metadata={"help": "share of windows with a time-span mask"}
    )
    max_span: int = field(default=16, metadata={"help": "longest span (160 ms steps)"})
    # Augmentation in the log-mel domain: a random level offset of up to +-gain_db, and with
    # probability mix_prob another window added (power sum) 0..mix_db dB below.
    gain_db: float = field(default=0.0, metadata={"help": "random level offset, +- dB"})
    mix_prob: float = field(default=0.0, metadata={"help": "chance to mix in a window"})
    mix_db: float = field(default=15.0, metadata={"help": "mixed window 0..N dB down"})
    # How windows are shared among folders (a file's parent folder: a package in a corpus built
    # by `maedaw corpus build`). 0 draws files in proportion to their length, so the largest
    # folders dominate (in the broad corpus, 13 of 16.8 training hours are music); 1 gives
    # every folder the same share; between, a folder's share goes as its length ** (1 - x).
    folder_balance: float = field(
        default=0.0, metadata={"help": "0: by length .. 1: every folder alike"}
    )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["betas"] = list(self.betas)
        return data
