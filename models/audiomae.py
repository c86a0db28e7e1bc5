"""Audio-MAE (Huang et al., "Masked Autoencoders that Listen", 2022) in one file.

Input is a normalised kaldi fbank (see ``frontend.py``) shaped ``(B, T, F)`` or ``(B, 1, T, F)``
with ``T = 1024`` frames (time) and ``F = 128`` mel bins. A 16x16 conv cuts it into a
``64 x 8`` grid of patches; patch ``k`` sits at time step ``k // 8`` and frequency step ``k % 8``
(time-major, 8 frequency patches per 160 ms time step), exactly the order of the official code's
``Conv2d(...).flatten(2)`` on a ``(B, 1, 1024, 128)`` image. ``True`` in a mask means *masked*
(hidden from the encoder, to be predicted), like the official ``1 = remove``.

Position embeddings are fixed 2-D sin-cos tables stored as buffers (they are in the state dict,
so official checkpoints load theirs verbatim). Two layouts exist:

* ``"time_freq"`` (ours): the first half of the channels encodes the time step, the second half
  the frequency step of each patch.
* ``"official"``: what the official code actually computes. Its ``PatchEmbed_org`` reports the
  grid as ``(8, 64)`` (width first), so the table is built on an 8 x 64 grid and then added to
  tokens that are ordered 64 x 8: token ``k`` gets time-ish code ``k % 64`` and freq-ish code
  ``k // 64``. Still a unique code per patch (the model learns it), just not a true (t, f)
  embedding. The ``vit_base`` preset uses it so a fresh model matches the released weights.

The decoder is either global self-attention (MAE's pre-norm ViT blocks, cls token kept) or the
official Swin-v2-style local decoder: shifted (4, 4) windows on the 64 x 8 grid, shifts
alternating (0, 0) / (2, 0), scaled cosine attention with a learned per-head temperature
``tau`` and a continuous position bias from a 2 -> 384 -> heads MLP over log-spaced relative
coordinates, post-norm residuals. Parameter names follow the official checkpoints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from torch import nn

__all__ = [
    "PRESETS",
    "AudioMAE",
    "AudioMAEConfig",
    "count_parameters",
    "encoder_parameters",
    "freq_mask",
    "patchify",
    "preset",
    "random_mask",
    "sincos_pos_embed",
    "time_freq_mask",
    "time_mask",
    "unpatchify",
]

DecoderAttention = Literal["global", "swin"]
PosEmbedLayout = Literal["time_freq", "official"]
MaskKind = Literal["random", "time", "freq"]

# Additive mask between windows of a shifted Swin block. The official code uses -100 (not
# -inf); keep it so imported weights behave identically.
_SHIFT_MASK_VALUE = -100.0


@dataclass(frozen=True)
class AudioMAEConfig:
    """Architecture and masking settings; saved with every checkpoint."""

    img_size: tuple[int, int] = (1024, 128)  # (time frames, mel bins)
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    pos_embed_layout: PosEmbedLayout = "time_freq"
    # Encoder output norms. Pretrained MAE: ``final_norm`` on every token. Official fine-tuned
    # classifier: no token norm, ``fc_norm`` after global average pooling.
    final_norm: bool = True
    fc_norm: bool = False
    num_classes: int = 0  # 0 = no classification head
    # Decoder (decoder_depth = 0: encoder only).
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    decoder_attention: DecoderAttention = "global"
    window_size: tuple[int, int] = (4, 4)  # swin, on the (time, freq) patch grid
    shift_size: tuple[int, int] = (2, 0)  # used by every odd block
    cpb_hidden_dim: int = 384  # continuous position bias meta-MLP width
    cpb_dropout: float = 0.1  # official meta-MLP dropout (active in training only)
    # Pre-training objective.
    norm_pix_loss: bool = False
    mask_ratio: float = 0.8
    mask_kind: MaskKind = "random"

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so configs compare and hash.
        for name in ("img_size", "window_size", "shift_size"):
            value = getattr(self, name)
            object.__setattr__(self, name, tuple(int(v) for v in value))
        p = self.patch_size
        if p <= 0 or any(s <= 0 or s % p for s in self.img_size):
            raise ValueError(f"img_size {self.img_size} must be positive multiples of patch {p}")
        if self.embed_dim % self.num_heads or self.embed_dim % 4:
            raise ValueError("embed_dim must divide by num_heads and by 4 (2-D sin-cos)")
        if self.depth <= 0:
            raise ValueError("depth must be positive")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.pos_embed_layout not in ("time_freq", "official"):
            raise ValueError(f"unknown pos_embed_layout {self.pos_embed_layout!r}")
        if self.mask_kind not in ("random", "time", "freq"):
            raise ValueError(f"unknown mask_kind {self.mask_kind!r}")
        if self.num_classes < 0 or self.decoder_depth < 0:
            raise ValueError("num_classes and decoder_depth must be >= 0")
        if self.decoder_depth == 0:
            return
        if not self.final_norm:
            raise ValueError("the decoder reads the final-normed encoder tokens: final_norm=True")
        dd, dh = self.decoder_embed_dim, self.decoder_num_heads
        if dd % dh or dd % 4:
            raise ValueError("decoder_embed_dim must divide by decoder_num_heads and by 4")
        if self.decoder_attention not in ("global", "swin"):
            raise ValueError(f"unknown decoder_attention {self.decoder_attention!r}")
        if self.decoder_attention == "swin":
            grid = self.grid_size
            for g, w, s in zip(grid, self.window_size, self.shift_size, strict=True):
                if w <= 0 or g % w or not 0 <= s < w:
                    raise ValueError(
                        f"swin window {self.window_size} / shift {self.shift_size} "
                        f"do not tile the patch grid {grid}"
                    )

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid (time steps, frequency steps): (64, 8) for 1024 x 128."""
        return (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("img_size", "window_size", "shift_size"):
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AudioMAEConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        return cls(**data)


PRESETS: dict[str, AudioMAEConfig] = {
    # The released AS-2M ViT-B/16: 12 x 768 encoder, 16 Swin decoder blocks of 512, norm-pix.
    "vit_base": AudioMAEConfig(
        embed_dim=768,
        depth=12,
        num_heads=12,
        decoder_embed_dim=512,
        decoder_depth=16,
        decoder_num_heads=16,
        decoder_attention="swin",
        pos_embed_layout="official",
        norm_pix_loss=True,
    ),
    # Sized for CPU inference: encoder ~39 ms fp32 / ~25 ms bf16 per 10.24 s window on two
    # Zen 5 cores. MLP ratio 3 rather than 4 buys ~28 % (depth 6 at ratio 4 was ~54 ms fp32).
    # No norm-pix: an inpainting model should predict absolute levels rather than borrow them
    # from neighbours.
    "compact": AudioMAEConfig(
        embed_dim=256,
        depth=6,
        num_heads=4,
        mlp_ratio=3.0,
        decoder_embed_dim=256,
        decoder_depth=4,
        decoder_num_heads=8,
        decoder_attention="swin",
        pos_embed_layout="time_freq",
        norm_pix_loss=False,
    ),
}


def preset(name: str, **overrides: Any) -> AudioMAEConfig:
    """A named configuration, optionally with fields replaced (e.g. ``num_classes=527``)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


# --------------------------------------------------------------------------------------------
# Patches, position embeddings and masks


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(B, 1, T, F)`` -> ``(B, L, p*p)``; patches time-major, pixels (time, freq) row-major."""
    b, c, t, f = images.shape
    if c != 1:
        raise ValueError(f"expected one channel, got {c}")
    p = patch_size
    x = images.reshape(b, t // p, p, f // p, p)
    return x.permute(0, 1, 3, 2, 4).reshape(b, (t // p) * (f // p), p * p)


def unpatchify(patches: torch.Tensor, grid_size: tuple[int, int], patch_size: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, L, p*p)`` -> ``(B, 1, T, F)``."""
    b = patches.shape[0]
    gt, gf = grid_size
    p = patch_size
    x = patches.reshape(b, gt, gf, p, p).permute(0, 1, 3, 2, 4)
    return x.reshape(b, 1, gt * p, gf * p)


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / (10000.0**omega)
    angles = positions.to(torch.float64).reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_pos_embed(
    dim: int, grid_size: tuple[int, int], layout: PosEmbedLayout = "time_freq"
) -> torch.Tensor:
    """Fixed 2-D sin-cos table ``(1 + L, dim)``; row 0 (cls token) is zeros.

    Row ``1 + k`` belongs to patch ``k = t * grid_f + f``. See the module docstring for the two
    layouts.
    """
    gt, gf = grid_size
    k = torch.arange(gt * gf)
    if layout == "time_freq":
        first, second = k // gf, k % gf  # time step, frequency step
    elif layout == "official":
        # Official: table built on a (gf, gt) grid, flattened, added to (gt, gf)-ordered tokens.
        first, second = k % gt, k // gt
    else:
        raise ValueError(f"unknown pos_embed_layout {layout!r}")
    table = torch.cat([_sincos_1d(dim // 2, first), _sincos_1d(dim // 2, second)], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=table.dtype), table]).float()


def _noise(
    shape: tuple[int, ...], device: torch.device | str | None, generator: Any
) -> torch.Tensor:
    if generator is not None:
        return torch.rand(shape, generator=generator, device=generator.device).to(device)
    return torch.rand(shape, device=device)


def _mask_lowest(noise: torch.Tensor, keep: int) -> torch.Tensor:
    """Per row, keep the ``keep`` lowest-noise entries visible; mask the rest."""
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ranks >= keep


def random_mask(
    batch: int,
    num_patches: int,
    ratio: float,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Unstructured mask: exactly ``num_patches - int(num_patches * (1 - ratio))`` per row
    (the official count: 410 of 512 at 0.8)."""
    keep = int(num_patches * (1.0 - ratio))
    return _mask_lowest(_noise((batch, num_patches), device, generator), keep)


def time_mask(
    batch: int,
    grid_size: tuple[int, int],
    ratio: float,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mask whole time steps (all frequency patches of a 160 ms column)."""
    gt, gf = grid_size
    steps = _mask_lowest(_noise((batch, gt), device, generator), int(gt * (1.0 - ratio)))
    return steps.unsqueeze(2).expand(batch, gt, gf).reshape(batch, gt * gf)


def freq_mask(
    batch: int,
    grid_size: tuple[int, int],
    ratio: float,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mask whole frequency rows (one 16-bin band over the whole window)."""
    gt, gf = grid_size
    rows = _mask_lowest(_noise((batch, gf), device, generator), int(gf * (1.0 - ratio)))
    return rows.unsqueeze(1).expand(batch, gt, gf).reshape(batch, gt * gf)


def span_mask(
    batch: int,
    grid_size: tuple[int, int],
    ratio: float,
    max_span: int,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One contiguous run of 1..``max_span`` whole time steps per row (the shape of a dropout
    being inpainted), topped up with random patches to the same count as ``random_mask``.

    Every row masks exactly as many patches as ``random_mask`` at this ratio, so a batch can
    mix the two kinds and still take the encoder's equal-count fast path.
    """
    gt, gf = grid_size
    num = gt * gf
    keep = int(num * (1.0 - ratio))
    widest = max(1, min(max_span, (num - keep) // gf, gt))
    u = _noise((batch, 2), None, generator)
    width = 1 + (u[:, 0] * widest).long().clamp_max(widest - 1)  # (B,) columns
    start = (u[:, 1] * (gt - width + 1)).long()
    column = torch.arange(gt).unsqueeze(0)
    in_span = (column >= start.unsqueeze(1)) & (column < (start + width).unsqueeze(1))
    noise = _noise((batch, num), None, generator)
    # Noise above 1 sorts the span's patches last, so they are always among the masked.
    noise = noise + 2.0 * in_span.unsqueeze(2).expand(batch, gt, gf).reshape(batch, num)
    return _mask_lowest(noise, keep).to(device)


def time_freq_mask(
    batch: int,
    grid_size: tuple[int, int],
    time_ratio: float,
    freq_ratio: float,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Union of a time and a frequency mask (the official ``mask_2d``)."""
    t = time_mask(batch, grid_size, time_ratio, device, generator)
    f = freq_mask(batch, grid_size, freq_ratio, device, generator)
    return t | f


# --------------------------------------------------------------------------------------------
# Building blocks


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # (B, D, T/p, F/p) -> (B, L, D): flatten is time-major, freq fastest.
        return self.proj(images).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    def __init__(
        self,
        dim: int,
        hidden: int,
        out: int | None = None,
        act: type[nn.Module] = nn.GELU,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.fc2 = nn.Linear(hidden, out or dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Global multi-head self-attention (timm/MAE layout: fused qkv, proj)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block (encoder and global decoder)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attn_mask)
        return x + self.mlp(self.norm2(x))


class WindowAttention(nn.Module):
    """Swin-v2 window attention: scaled cosine similarity and a continuous position bias."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: tuple[int, int],
        cpb_hidden_dim: int,
        cpb_dropout: float,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.meta_mlp = Mlp(2, cpb_hidden_dim, num_heads, act=nn.ReLU, dropout=cpb_dropout)
        self.tau = nn.Parameter(torch.ones(num_heads))
        wt, wf = window_size
        coords = torch.stack(
            torch.meshgrid(torch.arange(wt), torch.arange(wf), indexing="ij")
        ).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).reshape(-1, 2)
        relative = relative.float()
        # Log-spaced so the bias MLP sees small, smoothly growing inputs.
        log_relative = relative.sign() * torch.log1p(relative.abs())
        self.register_buffer("relative_coords_log", log_relative, persistent=False)

    def position_bias(self) -> torch.Tensor:
        """``(heads, W, W)`` bias, W = window area; entry (i, j) from coords(i) - coords(j)."""
        area = self.window_size[0] * self.window_size[1]
        bias = self.meta_mlp(self.relative_coords_log)  # (W*W, heads)
        return bias.transpose(0, 1).reshape(self.num_heads, area, area)

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor | None) -> torch.Tensor:
        """``x``: (B, windows, W, D); ``shift_mask``: (windows, W, W) additive or None."""
        b, nw, n, d = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(b, nw, n, 3, h, d // h).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)  # (B, windows, heads, W, head_dim)
        # cos(q, k) / tau == dot(q / (|q| tau), k / |k|): fold tau into q, then plain SDPA.
        tau = self.tau.clamp(min=0.01).to(q.dtype).reshape(h, 1, 1)
        q = F.normalize(q, dim=-1) / tau
        k = F.normalize(k, dim=-1)
        bias = self.position_bias().to(q.dtype).unsqueeze(0)  # (1, heads, W, W)
        if shift_mask is not None:
            bias = bias + shift_mask.to(q.dtype).unsqueeze(1)  # (windows, heads, W, W)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
        return self.proj(out.transpose(2, 3).reshape(b, nw, n, d))


class SwinBlock(nn.Module):
    """Post-norm shifted-window block on the (time, freq) patch grid."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid_size: tuple[int, int],
        window_size: tuple[int, int],
        shift_size: tuple[int, int],
        mlp_ratio: float,
        eps: float,
        cpb_hidden_dim: int,
        cpb_dropout: float,
    ) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.window_size = window_size
        self.shift_size = shift_size
        self.attn = WindowAttention(dim, num_heads, window_size, cpb_hidden_dim, cpb_dropout)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.register_buffer("shift_mask", self._shift_mask(), persistent=False)

    def _shift_mask(self) -> torch.Tensor | None:
        """After a cyclic roll, windows at the far edge mix tokens from both ends of the grid;
        label the regions and forbid attention across labels."""
        if not any(self.shift_size):
            return None
        gt, gf = self.grid_size
        labels = torch.zeros(gt, gf)
        regions = []
        for size, window, shift in zip(
            self.grid_size, self.window_size, self.shift_size, strict=True
        ):
            if shift == 0:
                regions.append([slice(0, size)])
            else:
                regions.append([slice(0, size - window), slice(size - window, size - shift),
                                slice(size - shift, size)])  # fmt: skip
        for i, rows in enumerate(regions[0]):
            for j, cols in enumerate(regions[1]):
                labels[rows, cols] = i * 3 + j
        windows = self._partition(labels.reshape(1, gt, gf, 1)).reshape(-1, self._area)
        different = windows.unsqueeze(1) != windows.unsqueeze(2)
        return torch.where(different, _SHIFT_MASK_VALUE, 0.0)

    @property
    def _area(self) -> int:
        return self.window_size[0] * self.window_size[1]

    def _partition(self, x: torch.Tensor) -> torch.Tensor:
        """(B, gt, gf, D) -> (B, windows, W, D), windows in (time, freq) raster order."""
        b, gt, gf, d = x.shape
        wt, wf = self.window_size
        x = x.reshape(b, gt // wt, wt, gf // wf, wf, d).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, (gt // wt) * (gf // wf), wt * wf, d)

    def _merge(self, windows: torch.Tensor) -> torch.Tensor:
        b, _, _, d = windows.shape
        gt, gf = self.grid_size
        wt, wf = self.window_size
        x = windows.reshape(b, gt // wt, gf // wf, wt, wf, d).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, gt, gf, d)

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        x = x.reshape(b, *self.grid_size, d)
        st, sf = self.shift_size
        if st or sf:
            x = torch.roll(x, shifts=(-st, -sf), dims=(1, 2))
        x = self._merge(self.attn(self._partition(x), self.shift_mask))
        if st or sf:
            x = torch.roll(x, shifts=(st, sf), dims=(1, 2))
        return x.reshape(b, n, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.norm1(self._window_attention(x))
        return x + self.norm2(self.mlp(x))


# --------------------------------------------------------------------------------------------
# The model


class AudioMAE(nn.Module):
    """Audio-MAE encoder, optional decoder (pre-training / inpainting) and optional classifier."""

    def __init__(self, config: AudioMAEConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.patch_embed = PatchEmbed(c.patch_size, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        table = sincos_pos_embed(c.embed_dim, c.grid_size, c.pos_embed_layout)
        self.register_buffer("pos_embed", table.unsqueeze(0))
        self.blocks = nn.ModuleList(
            Block(c.embed_dim, c.num_heads, c.mlp_ratio, c.norm_eps) for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps) if c.final_norm else None
        self.fc_norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps) if c.fc_norm else None
        self.head = nn.Linear(c.embed_dim, c.num_classes) if c.num_classes else None

        if c.decoder_depth:
            dd = c.decoder_embed_dim
            self.decoder_embed = nn.Linear(c.embed_dim, dd)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
            table = sincos_pos_embed(dd, c.grid_size, c.pos_embed_layout)
            self.register_buffer("decoder_pos_embed", table.unsqueeze(0))
            self.decoder_blocks = nn.ModuleList(
                self._decoder_block(i) for i in range(c.decoder_depth)
            )
            self.decoder_norm = nn.LayerNorm(dd, eps=c.norm_eps)
            self.decoder_pred = nn.Linear(dd, c.patch_dim)
        self._init_weights()

    def _decoder_block(self, index: int) -> nn.Module:
        c = self.config
        if c.decoder_attention == "global":
            return Block(c.decoder_embed_dim, c.decoder_num_heads, c.mlp_ratio, c.norm_eps)
        shift = c.shift_size if index % 2 else (0, 0)
        return SwinBlock(
            c.decoder_embed_dim,
            c.decoder_num_heads,
            c.grid_size,
            c.window_size,
            shift,
            c.mlp_ratio,
            c.norm_eps,
            c.cpb_hidden_dim,
            c.cpb_dropout,
        )

    def _init_weights(self) -> None:
        # MAE's recipe: xavier-uniform linears (and the patch conv seen as a linear), zero biases.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        if self.config.decoder_depth:
            nn.init.normal_(self.mask_token, std=0.02)
        if self.head is not None:
            # MAE fine-tuning starts the classifier near zero.
            nn.init.trunc_normal_(self.head.weight, std=2e-5)

    @property
    def has_decoder(self) -> bool:
        return self.config.decoder_depth > 0

    # ---------------------------------------------------------------- shapes

    def _as_images(self, fbank: torch.Tensor) -> torch.Tensor:
        if fbank.dim() == 3:
            fbank = fbank.unsqueeze(1)
        if (
            fbank.dim() != 4
            or fbank.shape[1] != 1
            or tuple(fbank.shape[2:]) != self.config.img_size
        ):
            t, f = self.config.img_size
            raise ValueError(
                f"expected fbank (B, {t}, {f}) or (B, 1, {t}, {f}), got {tuple(fbank.shape)}"
            )
        return fbank

    def _check_mask(self, mask: torch.Tensor, batch: int) -> torch.Tensor:
        expected = (batch, self.config.num_patches)
        if tuple(mask.shape) != expected:
            raise ValueError(f"mask must be {expected} (True = masked), got {tuple(mask.shape)}")
        return mask.to(torch.bool)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        return patchify(self._as_images(images), self.config.patch_size)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        return unpatchify(patches, self.config.grid_size, self.config.patch_size)

    def make_mask(
        self,
        batch: int,
        ratio: float | None = None,
        kind: MaskKind | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """A training mask ``(batch, L)`` of the configured (or given) kind and ratio."""
        ratio = self.config.mask_ratio if ratio is None else ratio
        kind = kind or self.config.mask_kind
        if kind == "random":
            return random_mask(batch, self.config.num_patches, ratio, device, generator)
        if kind == "time":
            return time_mask(batch, self.config.grid_size, ratio, device, generator)
        if kind == "freq":
            return freq_mask(batch, self.config.grid_size, ratio, device, generator)
        raise ValueError(f"unknown mask kind {kind!r}")

    # ---------------------------------------------------------------- encoder

    def forward_encoder(
        self, images: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Encode the visible patches only.

        Returns ``(tokens, ids_keep, valid)``: ``tokens`` (B, 1 + V, D) after the blocks (cls
        first, *before* the final norm), ``ids_keep`` (B, V) the patch index of each visible
        token (None without a mask) and ``valid`` (B, V) which slots are real. Rows of an
        explicit mask may hide different numbers of patches: visible tokens are then packed
        left, padded to the longest row, and padded slots are excluded as attention keys, so
        each row's result equals encoding that row alone. ``valid`` is None when all rows
        have the same count (no padding, no attention mask: the fast path).
        """
        x = self.patch_embed(images) + self.pos_embed[:, 1:].to(images.dtype)
        ids_keep = valid = None
        attn_mask = None
        if mask is not None:
            counts = (~mask).sum(dim=1)
            longest = int(counts.max()) if counts.numel() else 0
            # Stable sort on the mask puts visible patches first, in grid order.
            ids_keep = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)[:, :longest]
            x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
            if bool((counts != longest).any()):
                valid = torch.arange(longest, device=x.device).unsqueeze(0) < counts.unsqueeze(1)
                x = x * valid.unsqueeze(-1).to(x.dtype)
                keys = torch.cat([valid.new_ones(valid.shape[0], 1), valid], dim=1)
                attn_mask = keys[:, None, None, :]  # (B, 1, 1, 1 + V): True = may attend
        cls = (self.cls_token + self.pos_embed[:, :1]).to(x.dtype).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x, attn_mask)
        return x, ids_keep, valid

    def _pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Clip vector: fc_norm(mean of raw patch tokens) when the model has fc_norm (official
        fine-tuned), else the mean of the final-normed patch tokens."""
        if self.fc_norm is not None:
            return self.fc_norm(tokens[:, 1:].mean(dim=1))
        return self._final(tokens)[:, 1:].mean(dim=1)

    def _final(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(tokens) if self.norm is not None else tokens

    def embed(self, fbank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unmasked encoding: ``(clip (B, D), patches (B, L, D))``, patches in grid order."""
        tokens, _, _ = self.forward_encoder(self._as_images(fbank))
        return self._pool(tokens), self._final(tokens)[:, 1:]

    def classify(self, fbank: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` (global average pooling + fc_norm + head, as official)."""
        if self.head is None:
            raise RuntimeError("this model has no classification head (num_classes=0)")
        tokens, _, _ = self.forward_encoder(self._as_images(fbank))
        return self.head(self._pool(tokens))

    # ---------------------------------------------------------------- decoder

    def forward_decoder(
        self, tokens: torch.Tensor, mask: torch.Tensor, ids_keep: torch.Tensor
    ) -> torch.Tensor:
        """Predict every patch ``(B, L, p*p)`` from encoder tokens (output of
        :meth:`forward_encoder`)."""
        if not self.has_decoder:
            raise RuntimeError("this model has no decoder (decoder_depth=0)")
        x = self.decoder_embed(self._final(tokens))
        b, _, dd = x.shape
        grid = x.new_zeros(b, self.config.num_patches, dd)
        # Put each visible token back at its patch index; padded slots point at masked patches
        # (the stable sort puts those after the visible ones) and are overwritten below.
        grid = grid.scatter(1, ids_keep.unsqueeze(-1).expand(-1, -1, dd), x[:, 1:])
        grid = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), grid)
        x = torch.cat([x[:, :1], grid], dim=1) + self.decoder_pos_embed.to(x.dtype)
        if self.config.decoder_attention == "swin":
            x = x[:, 1:]  # the official local decoder drops the cls token before its blocks
            for block in self.decoder_blocks:
                x = block(x)
        else:
            for block in self.decoder_blocks:
                x = block(x)
            x = x[:, 1:]
        return self.decoder_pred(self.decoder_norm(x))

    def loss(self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over masked patches (per-patch normalised targets if norm-pix)."""
        # In float32 even under autocast: a bf16 mean over 256 pixels loses the small errors.
        pred = pred.float()
        target = patchify(images, self.config.patch_size).float()
        if self.config.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (
                target.var(-1, keepdim=True) + 1e-6
            ).sqrt()
        per_patch = (pred - target).pow(2).mean(dim=-1)
        weight = mask.to(per_patch.dtype)
        return (per_patch * weight).sum() / weight.sum().clamp_min(1.0)

    def forward(
        self,
        fbank: torch.Tensor,
        mask_ratio: float | None = None,
        *,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pre-training step: ``(loss, pred (B, L, p*p), mask (B, L) bool)``.

        Without an explicit ``mask`` one is drawn with ``config.mask_kind`` at ``mask_ratio``
        (default ``config.mask_ratio``).
        """
        images = self._as_images(fbank)
        if mask is None:
            mask = self.make_mask(images.shape[0], mask_ratio, None, images.device, generator)
        mask = self._check_mask(mask, images.shape[0]).to(images.device)
        tokens, ids_keep, _ = self.forward_encoder(images, mask)
        pred = self.forward_decoder(tokens, mask, ids_keep)
        return self.loss(images, pred, mask), pred, mask

    @torch.no_grad()
    def reconstruct(self, fbank: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Inpaint: masked patches replaced by predictions, visible ones returned bit-exact.

        ``mask`` is (B, L) bool, True = replace. Output has the input's shape and dtype. With a
        norm-pix model the predictions are per-patch standardised, so each masked patch gets a
        mean and std estimated from visible patches (:meth:`estimate_patch_stats`).
        """
        images = self._as_images(fbank)
        mask = self._check_mask(mask, images.shape[0]).to(images.device)
        tokens, ids_keep, _ = self.forward_encoder(images, mask)
        pred = self.forward_decoder(tokens, mask, ids_keep).to(images.dtype)
        if self.config.norm_pix_loss:
            mean, std = self.estimate_patch_stats(patchify(images, self.config.patch_size), mask)
            pred = (pred * std.unsqueeze(-1) + mean.unsqueeze(-1)).to(images.dtype)
        patch = self.config.patch_size
        pixel_mask = mask.reshape(-1, 1, *self.config.grid_size)
        pixel_mask = pixel_mask.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
        out = torch.where(pixel_mask, self.unpatchify(pred), images)
        return out.reshape(fbank.shape)

    def estimate_patch_stats(
        self,
        patches: torch.Tensor,
        mask: torch.Tensor,
        time_scale: float = 2.0,
        freq_scale: float = 0.5,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-patch (mean, std) ``(B, L)``: the patch's own for visible patches; for masked
        ones a Gaussian-weighted average over visible patches, distance measured in patches
        and scaled by ``time_scale`` / ``freq_scale``. The small frequency scale keeps the
        estimate in the same band (spectral tilt is steep), the larger time scale blends both
        edges of a gap. A heuristic: a model trained without norm-pix needs none of it.
        """
        with torch.autocast(patches.device.type, enabled=False):
            return self._patch_stats(patches.float(), mask, time_scale, freq_scale)

    def _patch_stats(
        self, patches: torch.Tensor, mask: torch.Tensor, time_scale: float, freq_scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean = patches.mean(dim=-1)
        std = (patches.var(dim=-1) + 1e-6).sqrt()
        gt, gf = self.config.grid_size
        k = torch.arange(gt * gf, device=patches.device)
        t = (k // gf).to(patches.dtype) / time_scale
        f = (k % gf).to(patches.dtype) / freq_scale
        dist2 = (t[:, None] - t[None, :]).pow(2) + (f[:, None] - f[None, :]).pow(2)  # (L, L)
        if bool(mask.all(dim=1).any()):
            raise ValueError("a row has no visible patch to estimate levels from")
        logits = (-dist2).unsqueeze(0).masked_fill(mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(logits, dim=-1)  # (B, L target, L source), visible sources only
        est_mean = torch.einsum("bij,bj->bi", weights, mean)
        est_std = torch.einsum("bij,bj->bi", weights, std)
        return torch.where(mask, est_mean, mean), torch.where(mask, est_std, std)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def encoder_parameters(model: AudioMAE) -> int:
    """Parameters used by :meth:`AudioMAE.embed` (no decoder, no head)."""
    parts: list[nn.Module | None] = [model.patch_embed, model.blocks, model.norm]
    return model.cls_token.numel() + sum(count_parameters(p) for p in parts if p is not None)
