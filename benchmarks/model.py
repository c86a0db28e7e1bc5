"""Encoder speed on this machine: ours vs timm's VisionTransformer, and vs a plain matmul.

For each config (official ViT-B/16 and ``compact``) and precision (float32, bf16 autocast):
the median wall time of one unmasked encoder forward on one 10.24 s window (batch 1, 513
tokens), the same for timm's ``VisionTransformer`` of identical shape when timm is importable
(ratio = ours / timm), and the achieved GFLOP/s (analytic multiply-add count x 2) next to a
large square ``torch.mm`` of the same dtype, the practical ceiling of this CPU.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from maedaw.models.audiomae import AudioMAE, AudioMAEConfig, preset

logger = logging.getLogger(__name__)


def encoder_flops(config: AudioMAEConfig) -> float:
    """Floating-point operations of one unmasked encoder forward (matmuls and attention)."""
    d, p = config.embed_dim, config.patch_size
    n = config.num_patches + 1
    hidden = int(d * config.mlp_ratio)
    per_block = 2 * n * d * (3 * d) + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * hidden
    return 2.0 * config.num_patches * p * p * d + config.depth * per_block


def _median_time(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _paired_times(
    first: Callable[[torch.Tensor], Any],
    second: Callable[[torch.Tensor], Any] | None,
    x: torch.Tensor,
    repeats: int,
    warmup: int = 2,
) -> tuple[float, float | None]:
    """Median times of two functions run alternately, so load changes hit both alike."""
    for _ in range(warmup):
        first(x)
        if second is not None:
            second(x)
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        first(x)
        a.append(time.perf_counter() - start)
        if second is not None:
            start = time.perf_counter()
            second(x)
            b.append(time.perf_counter() - start)
    return statistics.median(a), (statistics.median(b) if b else None)


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    with torch.inference_mode():
        seconds = _median_time(lambda: torch.mm(a, b), repeats)
    return 2.0 * size**3 / seconds / 1e9


def timm_encoder(config: AudioMAEConfig) -> torch.nn.Module | None:
    """timm's VisionTransformer of the same shape (pre-norm, cls token, final norm), or None."""
    try:
        from timm.models.vision_transformer import VisionTransformer
    except Exception as exc:  # missing, or a torchvision that does not match torch
        logger.info("timm not usable: %s", exc)
        return None
    model = VisionTransformer(
        img_size=config.img_size,
        patch_size=config.patch_size,
        in_chans=1,
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
        qkv_bias=True,
        num_classes=0,
    )
    return model.eval()


def bench_model(
    configs: tuple[str, ...] = ("vit_base", "compact"),
    repeats: int = 10,
    threads: int | None = None,
) -> dict[str, Any]:
    if threads:
        torch.set_num_threads(threads)
    x = torch.randn(1, 1, 1024, 128)
    peaks = {
        "float32": matmul_gflops(torch.float32),
        "bf16": matmul_gflops(torch.bfloat16),
    }
    rows = []
    for name in configs:
        config = preset(name, decoder_depth=0)
        ours = AudioMAE(config).eval()
        theirs = timm_encoder(config)
        flops = encoder_flops(config)
        for precision in ("float32", "bf16"):
            autocast = precision == "bf16"

            timm_call = theirs.forward_features if theirs is not None else None
            with (
                torch.inference_mode(),
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
            ):
                ours_s, timm_s = _paired_times(ours.embed, timm_call, x, repeats)
            rows.append(
                {
                    "config": name,
                    "precision": precision,
                    "ours_ms": round(1e3 * ours_s, 2),
                    "timm_ms": round(1e3 * timm_s, 2) if timm_s else None,
                    "ours_over_timm": round(ours_s / timm_s, 3) if timm_s else None,
                    "gflop": round(flops / 1e9, 2),
                    "ours_gflops": round(flops / ours_s / 1e9, 1),
                    "matmul_gflops": round(peaks[precision], 1),
                    "share_of_matmul": round(flops / ours_s / 1e9 / peaks[precision], 3),
                }
            )
            logger.info("%s", rows[-1])
    return {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": _timm_version(),
        "rows": rows,
    }


def _timm_version() -> str | None:
    try:
        import timm
    except Exception:
        return None
    return str(timm.__version__)
