"""Checkpoints: our safetensors + JSON pair, and the official / timm importer."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import tiny_model

from maedaw.models import audiomae as am
from maedaw.models import checkpoint as ck
from maedaw.models.audiomae import AudioMAE
from maedaw.models.checkpoint import CheckpointError
from maedaw.models.frontend import FrontendConfig


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small workloads are overhead bound: a second thread only adds contention on a busy box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 128, 32, generator=gen)
    mask = am.random_mask(2, 64, 0.5, generator=gen)
    return x, mask


# ------------------------------------------------------------------ our format


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = tiny_model()
    frontend = FrontendConfig(target_frames=128, num_mel_bins=32)
    training = {"clips": 12, "hours": 0.5, "sources": ["synthetic"]}
    saved = ck.save_model(
        model, tmp_path / "tiny", {"note": "test"}, frontend=frontend, training=training
    )
    assert (tmp_path / "tiny.json").is_file() and (tmp_path / "tiny.safetensors").is_file()
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind

    loaded, meta = ck.load_model(tmp_path / "tiny.json")
    assert not loaded.training and meta.model_id == saved.model_id and len(meta.model_id) == 16
    assert meta.config == model.config and meta.frontend == frontend
    assert meta.training == training and meta.meta == {"note": "test"} and meta.dtype == "float32"
    x, mask = inputs()
    with torch.no_grad():
        assert torch.equal(loaded.reconstruct(x, mask), model.reconstruct(x, mask))
        assert torch.equal(loaded.embed(x)[1], model.embed(x)[1])
        assert torch.equal(loaded(x, mask=mask)[0], model(x, mask=mask)[0])
    # The stem, the other file of the pair and the folder all name the same checkpoint.
    assert ck.load_model(tmp_path / "tiny")[1].model_id == saved.model_id
    assert ck.load_model(tmp_path / "tiny.safetensors")[1].model_id == saved.model_id
    assert ck.load_model(tmp_path)[1].model_id == saved.model_id


def test_model_id_is_a_hash_of_the_weights(tmp_path: Path) -> None:
    first = ck.save_model(tiny_model(seed=0), tmp_path / "a")
    again = ck.save_model(tiny_model(seed=0), tmp_path / "b", {"other": "meta"})
    other = ck.save_model(tiny_model(seed=1), tmp_path / "c")
    assert first.model_id == again.model_id != other.model_id
    assert first.weights_sha256 == ck.weights_sha256(tiny_model(seed=0).state_dict())


def test_folder_save_and_float16(tmp_path: Path) -> None:
    model = tiny_model()
    ck.save_model(model, str(tmp_path / "bundle") + "/", dtype="float16")
    assert (tmp_path / "bundle" / "model.json").is_file()
    loaded, meta = ck.load_model(tmp_path / "bundle")
    assert meta.dtype == "float16" and next(loaded.parameters()).dtype == torch.float32
    x, mask = inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.reconstruct(x, mask), model.reconstruct(x, mask), atol=2e-2, rtol=0
        )
    full = ck.save_model(model, tmp_path / "full")
    assert (tmp_path / "bundle" / "model.safetensors").stat().st_size < 0.6 * (
        full.weights_path.stat().st_size
    )


def test_compact_preset_ships_under_30_mb(tmp_path: Path) -> None:
    saved = ck.save_model(AudioMAE(am.preset("compact")), tmp_path / "compact", dtype="float16")
    size = saved.weights_path.stat().st_size
    assert size < 30e6, size


def _saved(tmp_path: Path) -> tuple[Path, Path]:
    ck.save_model(tiny_model(), tmp_path / "m")
    return tmp_path / "m.json", tmp_path / "m.safetensors"


def test_corrupt_json_is_a_checkpoint_error(tmp_path: Path) -> None:
    json_path, _ = _saved(tmp_path)
    json_path.write_text("{ not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ck.load_model(json_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("architecture"), "'architecture' missing"),
        (lambda d: d.update(format_version=2), "format_version 2"),
        (lambda d: d.update(format="something-else"), "format is"),
        (lambda d: d.update(surprise=1), "unknown keys"),
        (lambda d: d.update(dtype="int8"), "dtype"),
        (lambda d: d["architecture"].update(embed_dim=31), "invalid architecture"),
        (lambda d: d["architecture"].update(colour="red"), "invalid architecture"),
        (lambda d: d["frontend"].update(use_energy=True), "invalid frontend"),
        (lambda d: d.update(model_id="0" * 16), "malformed"),
        (lambda d: d.update(weights_file="other.safetensors"), "describes"),
    ],
)
def test_json_schema_is_validated(
    tmp_path: Path, edit: Callable[[dict[str, Any]], object], message: str
) -> None:
    json_path, _ = _saved(tmp_path)
    document = json.loads(json_path.read_text())
    edit(document)
    json_path.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match=message):
        ck.load_model(json_path)


def test_truncated_weights_are_a_checkpoint_error(tmp_path: Path) -> None:
    json_path, weights = _saved(tmp_path)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        ck.load_model(json_path)
    weights.write_bytes(b"\x00" * 7)
    with pytest.raises(CheckpointError):
        ck.load_model(json_path)
    weights.unlink()
    with pytest.raises(CheckpointError):
        ck.load_model(json_path)


def test_flipped_weight_bytes_fail_the_hash(tmp_path: Path) -> None:
    json_path, weights = _saved(tmp_path)
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # inside the last tensor's data: the header still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match model_id"):
        ck.load_model(json_path)


def test_mismatched_pair_names_the_offending_keys(tmp_path: Path) -> None:
    ck.save_model(tiny_model(), tmp_path / "m")
    ck.save_model(tiny_model(embed_dim=64, decoder_depth=0), tmp_path / "other")
    (tmp_path / "other.safetensors").replace(tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError) as info:
        ck.load_model(tmp_path / "m.json")
    text = str(info.value)
    assert "missing keys: decoder_blocks.0.attn.meta_mlp.fc1.bias" in text
    assert "mis-shaped: blocks.0.attn.proj.bias [64] (expected [32])" in text


def test_declared_dtype_must_match_the_tensors(tmp_path: Path) -> None:
    ck.save_model(tiny_model(), tmp_path / "m", dtype="float16")
    json_path = tmp_path / "m.json"
    document = json.loads(json_path.read_text())
    document["dtype"] = "float32"
    json_path.write_text(json.dumps(document))
    with pytest.raises(
        CheckpointError, match=r"not stored as float32: blocks\.0\.attn\.proj\.bias"
    ):
        ck.load_model(json_path)


def test_unexpected_tensor_is_named(tmp_path: Path) -> None:
    model = tiny_model()
    model.register_buffer("stowaway", torch.zeros(3))
    ck.save_model(model, tmp_path / "m")
    with pytest.raises(CheckpointError, match="unexpected keys: stowaway"):
        ck.load_model(tmp_path / "m")


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        ck.load_model(tmp_path / "absent")
    with pytest.raises(CheckpointError, match="exactly one"):
        ck.load_model(tmp_path)


def test_meta_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="JSON"):
        ck.save_model(tiny_model(), tmp_path / "m", {"bad": object()})
    assert not (tmp_path / "m.json").exists()


# ------------------------------------------------------------------ official importer


class Payload:
    """Any class outside torch's allow-list: weights_only loading must refuse it."""


def official_vit_base_keys(decoder: bool = True, depth: int = 12) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the official AS-2M pretrained.pth, from the notes' table
    (``depth`` < 12 only to keep the encoder-only tests fast)."""
    keys: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, 768),
        "pos_embed": (1, 513, 768),
        "patch_embed.proj.weight": (768, 1, 16, 16),
        "patch_embed.proj.bias": (768,),
        "norm.weight": (768,),
        "norm.bias": (768,),
    }
    for n in range(depth):
        b = f"blocks.{n}."
        keys.update({b + "norm1.weight": (768,), b + "norm1.bias": (768,)})
        keys.update({b + "norm2.weight": (768,), b + "norm2.bias": (768,)})
        keys.update({b + "attn.qkv.weight": (2304, 768), b + "attn.qkv.bias": (2304,)})
        keys.update({b + "attn.proj.weight": (768, 768), b + "attn.proj.bias": (768,)})
        keys.update({b + "mlp.fc1.weight": (3072, 768), b + "mlp.fc1.bias": (3072,)})
        keys.update({b + "mlp.fc2.weight": (768, 3072), b + "mlp.fc2.bias": (768,)})
    if not decoder:
        return keys
    keys.update(
        {
            "decoder_embed.weight": (512, 768),
            "decoder_embed.bias": (512,),
            "mask_token": (1, 1, 512),
            "decoder_pos_embed": (1, 513, 512),
            "decoder_norm.weight": (512,),
            "decoder_norm.bias": (512,),
            "decoder_pred.weight": (256, 512),
            "decoder_pred.bias": (256,),
        }
    )
    for n in range(16):
        b = f"decoder_blocks.{n}."
        keys[b + "attn.tau"] = (16,)
        keys.update({b + "attn.qkv.weight": (1536, 512), b + "attn.qkv.bias": (1536,)})
        keys.update({b + "attn.proj.weight": (512, 512), b + "attn.proj.bias": (512,)})
        keys.update(
            {b + "attn.meta_mlp.fc1.weight": (384, 2), b + "attn.meta_mlp.fc1.bias": (384,)}
        )
        keys.update(
            {b + "attn.meta_mlp.fc2.weight": (16, 384), b + "attn.meta_mlp.fc2.bias": (16,)}
        )
        keys.update({b + "norm1.weight": (512,), b + "norm1.bias": (512,)})
        keys.update({b + "norm2.weight": (512,), b + "norm2.bias": (512,)})
        keys.update({b + "mlp.fc1.weight": (2048, 512), b + "mlp.fc1.bias": (2048,)})
        keys.update({b + "mlp.fc2.weight": (512, 2048), b + "mlp.fc2.bias": (512,)})
    return keys


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=gen) * 0.02 for k, s in shapes.items()}


@pytest.fixture(scope="module")
def pretrained_state() -> dict[str, torch.Tensor]:
    state = random_state(official_vit_base_keys())
    # The released file stores the official (8 x 64-grid) sin-cos tables.
    state["pos_embed"] = am.sincos_pos_embed(768, (64, 8), "official").unsqueeze(0)
    state["decoder_pos_embed"] = am.sincos_pos_embed(512, (64, 8), "official").unsqueeze(0)
    return state


def test_key_table_is_the_contract_for_vit_base() -> None:
    config = am.preset("vit_base")
    table = ck.official_key_table(config)
    assert set(table) == set(official_vit_base_keys())
    with torch.device("meta"):
        ours = AudioMAE(config).state_dict()
    assert set(table.values()) == set(ours)
    for official, shape in official_vit_base_keys().items():
        assert tuple(ours[table[official]].shape) == shape, official


def test_official_pretrained_file_loads(
    tmp_path: Path, pretrained_state: dict[str, torch.Tensor], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "pretrained.pth"
    torch.save({"model": pretrained_state, "epoch": 32}, path)
    with caplog.at_level(logging.INFO, logger="maedaw.models.checkpoint"):
        model = ck.load_official(path, kind="pretrained")
    assert "'official' layout" in caplog.text
    config = model.config
    assert config.decoder_attention == "swin" and config.decoder_depth == 16
    assert config.norm_pix_loss and (config.embed_dim, config.depth, config.num_heads) == (
        768,
        12,
        12,
    )
    state = model.state_dict()
    for key in ("blocks.11.mlp.fc2.weight", "decoder_blocks.15.attn.tau", "pos_embed"):
        assert torch.equal(state[key], pretrained_state[key])
    assert not model.training
    with torch.no_grad():
        x = torch.randn(1, 1024, 128)
        mask = am.random_mask(1, 512, 0.8, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(model.reconstruct(x, mask)).all()


def _drop(key: str) -> Callable[[dict[str, torch.Tensor]], object]:
    return lambda state: state.pop(key)


def _put(key: str, *shape: int) -> Callable[[dict[str, torch.Tensor]], object]:
    return lambda state: state.update({key: torch.zeros(shape)})


SWIN_BIAS = "decoder_blocks.7.attn.meta_mlp.fc2.bias"
SWIN_V1_TABLE = "decoder_blocks.0.attn.relative_position_bias_table"


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (_drop(SWIN_BIAS), f"missing keys: {SWIN_BIAS}"),
        (_drop("blocks.3.norm1.weight"), "missing keys: blocks.3.norm1.weight"),
        (_put(SWIN_V1_TABLE, 49, 16), f"unexpected keys: {SWIN_V1_TABLE}"),
        (
            _put("blocks.0.attn.qkv.weight", 768, 768),
            "mis-shaped: blocks.0.attn.qkv.weight [768, 768] (expected [2304, 768])",
        ),
        (_put("decoder_pred.weight", 768, 512), "mis-shaped: decoder_pred.weight [768, 512]"),
    ],
)
def test_official_mismatches_name_the_key(
    pretrained_state: dict[str, torch.Tensor],
    edit: Callable[[dict[str, torch.Tensor]], object],
    named: str,
) -> None:
    state = dict(pretrained_state)
    edit(state)
    with pytest.raises(CheckpointError) as info:
        ck.import_official_state_dict(state)
    assert named in str(info.value)


def test_wrong_decoder_mode_is_refused(pretrained_state: dict[str, torch.Tensor]) -> None:
    # Issue #12: decoder weights of the Swin decoder without the Swin-only tensors must not be
    # quietly loaded as something else; the stray meta-MLP weights are named.
    state = {k: v for k, v in pretrained_state.items() if not k.endswith("attn.tau")}
    with pytest.raises(
        CheckpointError, match=r"unexpected keys: decoder_blocks\.0\.attn\.meta_mlp"
    ):
        ck.import_official_state_dict(state)


def test_official_finetuned_and_timm_encoder(tmp_path: Path) -> None:
    encoder = official_vit_base_keys(decoder=False, depth=2)
    finetuned = {k: v for k, v in encoder.items() if not k.startswith("norm.")}  # del self.norm
    finetuned.update({"fc_norm.weight": (768,), "fc_norm.bias": (768,)})
    finetuned.update({"head.weight": (527, 768), "head.bias": (527,)})
    path = tmp_path / "finetuned.pth"
    torch.save({"model": random_state(finetuned)}, path)
    with pytest.raises(CheckpointError, match="finetuned checkpoint, but a pretrained"):
        ck.load_official(path, kind="pretrained")
    model = ck.load_official(path)
    config = model.config
    assert config.num_classes == 527 and config.fc_norm and not config.final_norm
    assert config.depth == 2 and config.embed_dim == 768
    assert not model.has_decoder
    with torch.no_grad():
        assert model.classify(torch.randn(1, 1024, 128)).shape == (1, 527)

    # timm's encoder-only port: flat state dict (no 'model' wrapper), DDP prefix tolerated.
    timm_state = {"module." + k: v for k, v in random_state(encoder).items()}
    timm_path = tmp_path / "pytorch_model.bin"
    torch.save(timm_state, timm_path)
    assert ck.detect_official_kind(random_state(encoder)) == "encoder"
    model = ck.load_official(timm_path, kind="encoder")
    assert model.config.final_norm and not model.has_decoder and model.head is None
    with torch.no_grad():
        clip, patches = model.embed(torch.randn(1, 1024, 128))
    assert clip.shape == (1, 768) and patches.shape == (1, 512, 768)


def test_unreadable_official_files(tmp_path: Path) -> None:
    path = tmp_path / "broken.pth"
    torch.save({"model": random_state({"cls_token": (1, 1, 384)})}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read"):
        ck.load_official(path)
    with pytest.raises(CheckpointError, match="no such file"):
        ck.load_official(tmp_path / "absent.pth")
    # Pickled code is refused by weights_only loading.
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "hook": Payload()}, evil)
    with pytest.raises(CheckpointError):
        ck.load_official(evil)
    image_mae = tmp_path / "image.pth"
    rgb = {"cls_token": (1, 1, 768), "patch_embed.proj.weight": (768, 3, 16, 16)}
    torch.save({"model": random_state({**rgb, "pos_embed": (1, 197, 768)})}, image_mae)
    with pytest.raises(CheckpointError, match="1-channel"):
        ck.load_official(image_mae)


def test_a_checkpoint_truncated_while_it_loads_cannot_kill_the_process(tmp_path):
    """The weights file is cut short right after it was read, before its tensors are used.
    Memory-mapped (safetensors' load_file), touching them then is SIGBUS: the daemon died of
    it when a served checkpoint was truncated in place. Read into memory, the load just works."""
    import subprocess
    import sys

    stem = tmp_path / "m"
    ck.save_model(tiny_model(), stem, dtype="float32")
    code = f"""
import os
from maedaw.models import checkpoint as ck

original = ck.weights_sha256

def truncate_first(tensors):
    os.truncate({str(stem) + ".safetensors"!r}, 64)
    return original(tensors)

ck.weights_sha256 = truncate_first
model, meta = ck.load_model({str(stem)!r})
print(meta.model_id, sum(float(p.detach().sum()) for p in model.parameters()))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split()[0] == ck.read_checkpoint_meta(stem).model_id
