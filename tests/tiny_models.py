"""One tiny Audio-MAE for every model test: 128 x 32 "fbank", 8 x 8 patches.

The patch grid is 16 time x 4 freq, which the Swin decoder's (4, 4) windows tile.
"""

from __future__ import annotations

import torch

from maedaw.models.audiomae import AudioMAE, AudioMAEConfig

TINY = AudioMAEConfig(
    img_size=(128, 32),
    patch_size=8,
    embed_dim=32,
    depth=2,
    num_heads=2,
    mlp_ratio=2.0,
    decoder_embed_dim=32,
    decoder_depth=2,
    decoder_num_heads=4,
    decoder_attention="swin",
    cpb_hidden_dim=16,
)


def tiny_model(seed: int = 0, **overrides: object) -> AudioMAE:
    """A freshly initialised tiny model in eval mode, ``overrides`` applied to TINY."""
    torch.manual_seed(seed)
    return AudioMAE(AudioMAEConfig.from_dict({**TINY.to_dict(), **overrides})).eval()
