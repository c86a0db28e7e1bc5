"""Audio-MAE model: patch order, position tables, masks, encoder/decoder invariants, training."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from tiny_models import TINY as BASE_TINY
from tiny_models import tiny_model

from maedaw.models import audiomae as am
from maedaw.models.audiomae import AudioMAE, AudioMAEConfig

TINY = replace(BASE_TINY, mask_ratio=0.75)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models are op-overhead bound: a second thread only adds contention on a busy box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**overrides: object) -> AudioMAE:
    return tiny_model(0, **{"mask_ratio": 0.75, **overrides})


def fbanks(batch: int, seed: int = 0, shape: tuple[int, int] = (128, 32)) -> torch.Tensor:
    """Spectrogram-like images: a smooth spectral envelope times a time envelope, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    t, f = shape
    freqs = torch.linspace(0, 1, f)
    centre = torch.rand(batch, 1, generator=gen)
    width = 0.1 + 0.3 * torch.rand(batch, 1, generator=gen)
    spectral = torch.exp(-(((freqs - centre) / width) ** 2))  # (B, F)
    times = torch.linspace(0, 1, t)
    rate = 1 + 3 * torch.rand(batch, 1, generator=gen)
    phase = 2 * math.pi * torch.rand(batch, 1, generator=gen)
    temporal = 0.5 + 0.5 * torch.sin(2 * math.pi * rate * times + phase)  # (B, T)
    level = torch.rand(batch, 1, 1, generator=gen) - 0.5
    image = level + temporal.unsqueeze(2) * spectral.unsqueeze(1)
    return image + 0.02 * torch.randn(batch, t, f, generator=gen)


# ------------------------------------------------------------------ config


def test_presets_and_config_round_trip() -> None:
    base = am.preset("vit_base")
    assert (base.embed_dim, base.depth, base.num_heads) == (768, 12, 12)
    assert (base.decoder_embed_dim, base.decoder_depth, base.decoder_num_heads) == (512, 16, 16)
    assert base.decoder_attention == "swin" and base.norm_pix_loss
    assert base.grid_size == (64, 8) and base.num_patches == 512
    compact = am.preset("compact")
    assert 256 <= compact.embed_dim <= 384
    for config in (base, compact, TINY, am.preset("compact", num_classes=10)):
        assert AudioMAEConfig.from_dict(config.to_dict()) == config
    with pytest.raises(KeyError):
        am.preset("nope")
    with pytest.raises(ValueError, match="unknown"):
        AudioMAEConfig.from_dict({**TINY.to_dict(), "extra": 1})


@pytest.mark.parametrize(
    "overrides",
    [
        {"img_size": (100, 32)},  # not a multiple of the patch
        {"embed_dim": 30},  # not divisible by heads / 4
        {"window_size": (3, 4)},  # does not tile 16 x 4
        {"shift_size": (4, 0)},  # shift >= window
        {"final_norm": False},  # decoder needs normed tokens
        {"mask_ratio": 1.0},
        {"decoder_attention": "local"},
    ],
)
def test_bad_configs_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        AudioMAEConfig.from_dict({**TINY.to_dict(), **overrides})


def test_parameter_counts_of_presets() -> None:
    with torch.device("meta"):
        base = AudioMAE(am.preset("vit_base"))
    # ViT-B/16 encoder on 1-channel input, and the 16-block Swin decoder.
    assert am.encoder_parameters(base) == pytest.approx(85.25e6, rel=0.01)
    assert am.count_parameters(base) == pytest.approx(136.3e6, rel=0.01)


# ------------------------------------------------------------------ patches and positions


def test_patch_order_is_time_major() -> None:
    p, (gt, gf) = TINY.patch_size, TINY.grid_size
    t = torch.arange(128).div(p, rounding_mode="floor").reshape(128, 1)
    f = torch.arange(32).div(p, rounding_mode="floor").reshape(1, 32)
    image = (t * 100 + f).float().expand(128, 32).reshape(1, 1, 128, 32)
    patches = am.patchify(image, p)
    assert patches.shape == (1, gt * gf, p * p)
    for k in range(gt * gf):
        assert torch.all(patches[0, k] == (k // gf) * 100 + (k % gf))
    # Inside a patch, pixels run (time, freq) row-major like the official einsum.
    pixel = torch.arange(128 * 32).float().reshape(1, 1, 128, 32)
    first = am.patchify(pixel, p)[0, 0]
    assert torch.equal(first[:p], pixel[0, 0, 0, :p]) and first[p] == pixel[0, 0, 1, 0]
    assert torch.equal(am.unpatchify(am.patchify(pixel, p), (gt, gf), p), pixel)


def test_conv_patch_embedding_uses_the_same_order() -> None:
    model = tiny()
    images = fbanks(2).unsqueeze(1)
    tokens = model.patch_embed(images)
    weight = model.patch_embed.proj.weight.reshape(TINY.embed_dim, -1)
    expected = am.patchify(images, TINY.patch_size) @ weight.T + model.patch_embed.proj.bias
    torch.testing.assert_close(tokens, expected, rtol=1e-4, atol=1e-5)


def _official_pos_embed_numpy(dim: int, grid_time: int, grid_freq: int) -> np.ndarray:
    """The official code's table, written out: PatchEmbed_org reports (freq, time) steps."""
    grid_h, grid_w = np.arange(grid_freq, dtype=np.float64), np.arange(grid_time, dtype=np.float64)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape(2, 1, grid_freq, grid_time)

    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    table = np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)
    return np.concatenate([np.zeros((1, dim)), table], axis=0)


def test_official_pos_embed_layout_matches_the_official_formula() -> None:
    ours = am.sincos_pos_embed(768, (64, 8), "official").double().numpy()
    np.testing.assert_allclose(ours, _official_pos_embed_numpy(768, 64, 8), atol=1e-6)
    # ... which is *not* a (time, freq) table: token 1 (t=0, f=1) gets time code 1.
    fair = am.sincos_pos_embed(768, (64, 8), "time_freq")
    assert not torch.allclose(fair, torch.from_numpy(ours).float())


def test_time_freq_pos_embed_encodes_time_then_freq() -> None:
    gt, gf = 16, 4
    table = am.sincos_pos_embed(64, (gt, gf), "time_freq")
    assert torch.all(table[0] == 0)
    grid = table[1:].reshape(gt, gf, 64)
    # First half depends on time only, second half on frequency only.
    assert torch.allclose(grid[:, :1, :32].expand(gt, gf, 32), grid[:, :, :32])
    assert torch.allclose(grid[:1, :, 32:].expand(gt, gf, 32), grid[:, :, 32:])
    assert len({tuple(row.tolist()) for row in table[1:]}) == gt * gf


# ------------------------------------------------------------------ masks


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.75, 0.8])
def test_random_mask_hides_an_exact_count(ratio: float) -> None:
    mask = am.random_mask(5, 512, ratio, generator=torch.Generator().manual_seed(1))
    expected = 512 - int(512 * (1 - ratio))
    assert mask.dtype == torch.bool and mask.shape == (5, 512)
    assert mask.sum(1).tolist() == [expected] * 5
    if ratio == 0.8:
        assert expected == 410  # the official count
    if ratio > 0:
        assert not torch.equal(mask[0], mask[1])  # per-row randomness


def test_structured_masks_hide_whole_columns_and_rows() -> None:
    gen = torch.Generator().manual_seed(3)
    grid = (64, 8)
    tm = am.time_mask(4, grid, 0.5, generator=gen).reshape(4, 64, 8)
    assert torch.all(tm == tm[:, :, :1])  # a time step is masked across every frequency
    assert tm[:, :, 0].sum(1).tolist() == [32] * 4
    fm = am.freq_mask(4, grid, 0.25, generator=gen).reshape(4, 64, 8)
    assert torch.all(fm == fm[:, :1, :])  # a band is masked across the whole window
    assert fm[:, 0, :].sum(1).tolist() == [2] * 4
    both = am.time_freq_mask(4, grid, 0.5, 0.25, generator=gen).reshape(4, 64, 8)
    visible = ~both
    assert visible.sum((1, 2)).tolist() == [32 * 6] * 4  # kept times x kept bands


def _longest_full_run(columns: torch.Tensor) -> int:
    best = run = 0
    for full in columns.tolist():
        run = run + 1 if full else 0
        best = max(best, run)
    return best


def test_span_mask_hides_a_contiguous_run_and_the_random_count() -> None:
    gen = torch.Generator().manual_seed(5)
    mask = am.span_mask(200, (64, 8), 0.8, 12, generator=gen)
    assert mask.sum(1).tolist() == [410] * 200  # same count as random_mask: one fast path
    full = mask.reshape(200, 64, 8).all(2)  # (B, 64) whole time steps masked
    runs = [_longest_full_run(row) for row in full]
    assert min(runs) >= 1  # every row has its span
    assert max(runs) >= 10  # widths reach the maximum (random columns can only lengthen it)
    # A low ratio caps the span at what the masked count can hold.
    small = am.span_mask(50, (64, 8), 0.05, 16, generator=gen)
    assert small.sum(1).tolist() == [512 - int(512 * 0.95)] * 50
    assert all(_longest_full_run(r) <= 3 for r in small.reshape(50, 64, 8).all(2))


def test_make_mask_follows_the_config() -> None:
    model = tiny(mask_kind="time", mask_ratio=0.5)
    mask = model.make_mask(3, generator=torch.Generator().manual_seed(0)).reshape(3, 16, 4)
    assert torch.all(mask == mask[:, :, :1]) and mask[:, :, 0].sum(1).tolist() == [8] * 3


# ------------------------------------------------------------------ encoder


def test_forward_shapes_and_explicit_mask_is_respected() -> None:
    model = tiny()
    x = fbanks(3)
    loss, pred, mask = model(x)
    assert loss.ndim == 0 and pred.shape == (3, 64, 64) and mask.sum(1).tolist() == [48] * 3
    explicit = torch.zeros(3, 64, dtype=torch.bool)
    explicit[:, 10:20] = True
    _, _, returned = model(x, mask=explicit)
    assert torch.equal(returned, explicit)
    with pytest.raises(ValueError, match="mask"):
        model(x, mask=torch.zeros(3, 63, dtype=torch.bool))
    with pytest.raises(ValueError, match="fbank"):
        model(torch.zeros(3, 100, 32))


def test_encoder_processes_only_visible_patches() -> None:
    model = tiny()
    seen: list[tuple[int, ...]] = []
    model.blocks[0].register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    x = fbanks(2)
    mask = am.random_mask(2, 64, 0.75, generator=torch.Generator().manual_seed(0))
    tokens, ids_keep, valid = model.forward_encoder(x.unsqueeze(1), mask)
    assert seen == [(2, 1 + 16, 32)] and tokens.shape == (2, 17, 32) and valid is None
    assert torch.equal(ids_keep.sort(1).values, (~mask).nonzero()[:, 1].reshape(2, 16))

    # Whatever hides under the mask cannot reach the encoder.
    images = x.unsqueeze(1)
    scrambled = images.clone()
    pixel_mask = mask.reshape(2, 1, 16, 4).repeat_interleave(8, 2).repeat_interleave(8, 3)
    scrambled[pixel_mask] = 123.0
    again, _, _ = model.forward_encoder(scrambled, mask)
    assert torch.equal(tokens, again)


def test_rows_with_different_visible_counts_match_one_by_one() -> None:
    model = tiny()
    x = fbanks(3)
    mask = torch.zeros(3, 64, dtype=torch.bool)
    mask[0, 8:24] = True  # 48 visible
    mask[1, ::2] = True  # 32 visible
    mask[2, :60] = True  # 4 visible
    tokens, _, valid = model.forward_encoder(x.unsqueeze(1), mask)
    assert tokens.shape[1] == 1 + 48 and valid is not None
    assert valid.sum(1).tolist() == [48, 32, 4]
    _, pred, _ = model(x, mask=mask)
    for row in range(3):
        alone, _, _ = model.forward_encoder(x[row : row + 1].unsqueeze(1), mask[row : row + 1])
        count = int((~mask[row]).sum())
        torch.testing.assert_close(tokens[row, : 1 + count], alone[0], rtol=1e-4, atol=1e-5)
        _, pred_alone, _ = model(x[row : row + 1], mask=mask[row : row + 1])
        torch.testing.assert_close(pred[row], pred_alone[0], rtol=1e-4, atol=1e-5)


def test_global_attention_matches_the_textbook_formula() -> None:
    torch.manual_seed(0)
    attn = am.Attention(16, 4)
    x = torch.randn(2, 5, 16)
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 4, 4).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ swin decoder


def _official_region_labels(grid: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]):
    """The official slicing, including its degenerate 'shift 0' slices, on a (gt, gf) grid."""
    labels = torch.zeros(grid)
    count = 0
    for h in (slice(0, -window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
        for w in (slice(0, -window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
            labels[h, w] = count
            count += 1
    return labels


def _reference_swin_block(block: am.SwinBlock, x: torch.Tensor) -> torch.Tensor:
    """The official Swin-v2 block, one window and one head at a time."""
    (gt, gf), (wt, wf), (st, sf) = block.grid_size, block.window_size, block.shift_size
    attn = block.attn
    heads = attn.num_heads
    b, n, d = x.shape
    grid = torch.roll(x.reshape(b, gt, gf, d), shifts=(-st, -sf), dims=(1, 2))
    shifted = st or sf
    labels = _official_region_labels((gt, gf), (wt, wf), (st, sf)) if shifted else None
    coords = [(i, j) for i in range(wt) for j in range(wf)]
    rel = torch.tensor([[ci[0] - cj[0], ci[1] - cj[1]] for ci in coords for cj in coords]).float()
    rel = rel.sign() * torch.log(1 + rel.abs())
    bias = attn.meta_mlp(rel).T.reshape(heads, wt * wf, wt * wf)
    out = torch.zeros_like(grid)
    for bi in range(b):
        for ti in range(0, gt, wt):
            for fi in range(0, gf, wf):
                tokens = grid[bi, ti : ti + wt, fi : fi + wf].reshape(-1, d)
                q, k, v = attn.qkv(tokens).reshape(-1, 3, heads, d // heads).permute(1, 2, 0, 3)
                denom = q.norm(dim=-1, keepdim=True) @ k.norm(dim=-1, keepdim=True).transpose(
                    -1, -2
                )
                logits = q @ k.transpose(-1, -2) / denom.clamp(min=1e-6)
                logits = logits / attn.tau.clamp(min=0.01).reshape(heads, 1, 1) + bias
                if labels is not None:
                    lab = labels[ti : ti + wt, fi : fi + wf].reshape(-1)
                    logits = logits + (lab[:, None] != lab[None, :]).float() * -100.0
                mixed = (logits.softmax(-1) @ v).transpose(0, 1).reshape(-1, d)
                out[bi, ti : ti + wt, fi : fi + wf] = attn.proj(mixed).reshape(wt, wf, d)
    out = torch.roll(out, shifts=(st, sf), dims=(1, 2)).reshape(b, n, d)
    x = x + block.norm1(out)
    return x + block.norm2(block.mlp(x))


@pytest.mark.parametrize("index", [0, 1])  # unshifted and shifted blocks
def test_swin_block_matches_the_official_computation(index: int) -> None:
    model = tiny()
    block = model.decoder_blocks[index]
    assert block.shift_size == ((0, 0) if index == 0 else (2, 0))
    with torch.no_grad():  # make tau and the bias matter
        block.attn.tau.uniform_(0.05, 0.5)
        for p in block.attn.meta_mlp.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(2, 64, 32)
    torch.testing.assert_close(block(x), _reference_swin_block(block, x), rtol=1e-4, atol=1e-5)


def test_global_decoder_variant_runs() -> None:
    model = tiny(decoder_attention="global")
    loss, pred, _ = model(fbanks(2))
    assert torch.isfinite(loss) and pred.shape == (2, 64, 64)
    assert not any(isinstance(b, am.SwinBlock) for b in model.decoder_blocks)


# ------------------------------------------------------------------ reconstruct / embed / classify


def test_reconstruct_keeps_visible_patches_bit_exact() -> None:
    model = tiny()
    x = fbanks(2)
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[0, 20:36] = True
    mask[1, 40:44] = True
    out = model.reconstruct(x, mask)
    assert out.shape == x.shape and out.dtype == x.dtype
    pixel_mask = mask.reshape(2, 16, 4).repeat_interleave(8, 1).repeat_interleave(8, 2)
    assert torch.equal(out[~pixel_mask], x[~pixel_mask])
    assert not torch.equal(out[pixel_mask], x[pixel_mask])
    # Channel-first input comes back channel-first; predictions equal the decoder output.
    out4 = model.reconstruct(x.unsqueeze(1), mask)
    assert out4.shape == (2, 1, 128, 32) and torch.equal(out4[:, 0], out)
    _, pred, _ = model(x, mask=mask)
    expected = model.unpatchify(pred)[:, 0]
    torch.testing.assert_close(out[pixel_mask], expected[pixel_mask])


def test_reconstruct_denormalises_norm_pix_predictions_from_neighbours() -> None:
    model = tiny(norm_pix_loss=True)
    # Each frequency row of patches sits at its own level: 0, 1, 2, 3.
    x = (torch.arange(32) // 8).float().expand(1, 128, 32).clone()
    x += 0.01 * torch.randn(1, 128, 32, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 64, dtype=torch.bool)
    mask[0, 24:40] = True  # four time steps, all bands: a dropout
    patches = am.patchify(x.unsqueeze(1), 8)
    mean, std = model.estimate_patch_stats(patches, mask)
    assert torch.equal(mean[~mask], patches.mean(-1)[~mask])
    torch.testing.assert_close(mean[0, 24:40], torch.arange(4.0).repeat(4), atol=0.02, rtol=0)
    assert float(std[0, 24:40].max()) < 0.05
    out = model.reconstruct(x, mask)
    hole = out[0, 48:80]  # time frames of patch rows 6..9
    torch.testing.assert_close(hole.mean(0), (torch.arange(32) // 8).float(), atol=0.1, rtol=0)
    with pytest.raises(ValueError, match="visible"):
        model.reconstruct(x, torch.ones(1, 64, dtype=torch.bool))


def test_embed_and_classify() -> None:
    model = tiny(num_classes=5, fc_norm=True)
    x = fbanks(3)
    clip, patches = model.embed(x)
    assert clip.shape == (3, 32) and patches.shape == (3, 64, 32)
    logits = model.classify(x)
    assert logits.shape == (3, 5)
    tokens, _, _ = model.forward_encoder(x.unsqueeze(1))
    expected = model.head(model.fc_norm(tokens[:, 1:].mean(1)))
    torch.testing.assert_close(logits, expected)
    with pytest.raises(RuntimeError, match="head"):
        tiny().classify(x)
    encoder_only = tiny(decoder_depth=0)
    assert not encoder_only.has_decoder and encoder_only.embed(x)[0].shape == (3, 32)
    with pytest.raises(RuntimeError, match="decoder"):
        encoder_only(x)


def test_bf16_autocast_on_cpu() -> None:
    model = tiny()
    x = fbanks(2)
    mask = am.random_mask(2, 64, 0.75, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference, _, _ = model(x, mask=mask)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _, _ = model(x, mask=mask)
        out = model.reconstruct(x, mask)
        clip, _ = model.embed(x)
    assert torch.isfinite(loss) and abs(float(loss) - float(reference)) < 0.05 * float(reference)
    assert out.dtype == torch.float32 and torch.isfinite(clip.float()).all()
    visible = ~mask.reshape(2, 16, 4).repeat_interleave(8, 1).repeat_interleave(8, 2)
    assert torch.equal(out[visible], x[visible])


# ------------------------------------------------------------------ learning


# Norm-pix standardises each patch, so noise-only patches keep an irreducible unit-scale error.
@pytest.mark.parametrize(("norm_pix", "target"), [(False, 0.2), (True, 0.6)])
def test_a_short_training_run_lowers_the_loss(norm_pix: bool, target: float) -> None:
    torch.manual_seed(0)
    model = tiny(norm_pix_loss=norm_pix).train()
    held_out = fbanks(32, seed=99)
    held_mask = am.random_mask(32, 64, 0.75, generator=torch.Generator().manual_seed(5))

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            loss, _, _ = model(held_out, mask=held_mask)
        model.train()
        return float(loss)

    before = evaluate()
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    for step in range(250):
        loss, _, _ = model(fbanks(16, seed=step), generator=gen)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = evaluate()
    assert after < target * before, (before, after)


def test_loss_is_mean_squared_error_on_masked_patches_only() -> None:
    model = tiny()
    x = fbanks(2)
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[:, :10] = True
    loss, pred, _ = model(x, mask=mask)
    target = am.patchify(x.unsqueeze(1), 8)
    expected = F.mse_loss(pred[mask], target[mask])
    torch.testing.assert_close(loss, expected)
