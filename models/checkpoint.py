"""Checkpoints: our safetensors + JSON format, and the importer for the official Audio-MAE files.

Our format is a pair ``NAME.safetensors`` (weights only: nothing executes on load) and
``NAME.json`` (everything needed to rebuild and trust them)::

    {
      "format": "maedaw-audiomae", "format_version": 1,
      "model_id": "<first 16 hex of weights_sha256>", "weights_sha256": "<64 hex>",
      "created": "2025-01-01T00:00:00Z", "weights_file": "NAME.safetensors", "dtype": "float16",
      "architecture": {AudioMAEConfig fields}, "frontend": {FrontendConfig fields},
      "training": {free-form summary of the training data / run}, "meta": {free-form}
    }

``weights_sha256`` hashes every tensor's name, dtype, shape and bytes in name order, so it
identifies the weights themselves, not the file layout. Saving writes the weights first and
the JSON last, each through a temporary name and an atomic rename: a watcher that reloads on
JSON changes never sees a half-written pair, and a mixed-up pair fails the hash check.

Loading validates, in this order and before any real model is allocated: the JSON (schema,
format, version), both configs, then every tensor name and shape in the safetensors header
against the architecture (built on the ``meta`` device), then the weight hash. Any problem
raises :class:`CheckpointError` with a message that names the file and the offending keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from maedaw.core.errors import MaedawError
from maedaw.core.util import atomic_path, write_text_atomic

from .audiomae import AudioMAE, AudioMAEConfig, preset, sincos_pos_embed
from .frontend import DEFAULT_FRONTEND, FrontendConfig

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "OFFICIAL_KEY_TABLE",
    "CheckpointError",
    "CheckpointMeta",
    "detect_official_kind",
    "import_official_state_dict",
    "load_model",
    "load_official",
    "official_config",
    "official_key_table",
    "read_checkpoint_meta",
    "save_model",
    "weights_sha256",
]

logger = logging.getLogger(__name__)

FORMAT = "maedaw-audiomae"
FORMAT_VERSION = 1
_MAX_JSON_BYTES = 4 * 1024 * 1024  # a config is a few kB; refuse anything absurd early
_SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "format_version": int,
    "model_id": str,
    "weights_sha256": str,
    "created": str,
    "weights_file": str,
    "dtype": str,
    "architecture": dict,
    "frontend": dict,
    "training": dict,
    "meta": dict,
}


class CheckpointError(MaedawError):
    """A checkpoint cannot be used; the message says which file and what is wrong."""


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint's JSON says about its weights."""

    model_id: str
    weights_sha256: str
    created: str
    dtype: str
    config: AudioMAEConfig
    frontend: FrontendConfig
    training: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    json_path: Path | None = None
    weights_path: Path | None = None
    format_version: int = FORMAT_VERSION


# --------------------------------------------------------------------------------------------
# Our format


def _safetensors_header(data: bytes) -> dict[str, dict[str, Any]]:
    """The tensor entries (``dtype``, ``shape``, ``data_offsets``) of a safetensors file in
    memory: an 8-byte little-endian length, then that many bytes of JSON."""
    if len(data) < 8:
        raise ValueError(f"{len(data)} bytes: shorter than a safetensors header")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError(f"header of {size} bytes runs past the end ({len(data)} bytes)")
    entries = json.loads(data[8 : 8 + size])
    entries.pop("__metadata__", None)
    return entries


def weights_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """Hash of tensor names, dtypes, shapes and bytes, in name order (layout-independent)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        header = f"{name}|{str(tensor.dtype).removeprefix('torch.')}|{list(tensor.shape)}\n"
        digest.update(header.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _pair_paths(path: str | os.PathLike[str], *, saving: bool) -> tuple[Path, Path]:
    """Resolve a folder, a stem, or either file of a pair to (json, safetensors)."""
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        stem = p.with_suffix("")
    elif p.is_dir() or (saving and str(path).endswith(("/", os.sep))):
        if saving:
            stem = p / "model"
        else:
            candidates = sorted(p.glob("*.json"))
            if len(candidates) != 1:
                raise CheckpointError(
                    f"{p}: expected exactly one NAME.json in the folder, found "
                    f"{[c.name for c in candidates]}"
                )
            stem = candidates[0].with_suffix("")
    else:
        stem = p
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".safetensors")


def save_model(
    model: AudioMAE,
    path: str | os.PathLike[str],
    meta: Mapping[str, Any] | None = None,
    *,
    frontend: FrontendConfig = DEFAULT_FRONTEND,
    training: Mapping[str, Any] | None = None,
    dtype: Literal["float32", "float16", "bfloat16"] = "float32",
) -> CheckpointMeta:
    """Write ``NAME.safetensors`` + ``NAME.json``; ``path`` is a stem, either file, or a folder.

    ``training`` summarises the data and run (free-form, JSON-serialisable); ``meta`` is any
    other JSON-serialisable information. ``dtype`` is the storage dtype (float16 halves the
    file; loading always computes in float32).
    """
    if dtype not in _SAVE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_SAVE_DTYPES)}, got {dtype!r}")
    json_path, weights_path = _pair_paths(path, saving=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: value.detach().to("cpu", _SAVE_DTYPES[dtype]).contiguous()
        for name, value in model.state_dict().items()
    }
    digest = weights_sha256(tensors)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_id": digest[:16],
        "weights_sha256": digest,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "weights_file": weights_path.name,
        "dtype": dtype,
        "architecture": model.config.to_dict(),
        "frontend": frontend.to_dict(),
        "training": dict(training or {}),
        "meta": dict(meta or {}),
    }
    try:
        text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"training/meta must be JSON-serialisable: {exc}") from exc
    # 0644 each: a model is meant to be shared
    with atomic_path(weights_path, mode=0o644) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "model_id": digest[:16]})
    write_text_atomic(json_path, text + "\n", mode=0o644)
    logger.info("saved model %s to %s", digest[:16], weights_path)
    return _meta_from_document(document, json_path, weights_path)


def _meta_from_document(
    document: dict[str, Any], json_path: Path, weights_path: Path
) -> CheckpointMeta:
    try:
        config = AudioMAEConfig.from_dict(document["architecture"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{json_path}: invalid architecture: {exc}") from exc
    try:
        frontend = FrontendConfig.from_dict(document["frontend"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{json_path}: invalid frontend: {exc}") from exc
    return CheckpointMeta(
        model_id=document["model_id"],
        weights_sha256=document["weights_sha256"],
        created=document["created"],
        dtype=document["dtype"],
        config=config,
        frontend=frontend,
        training=document["training"],
        meta=document["meta"],
        json_path=json_path,
        weights_path=weights_path,
        format_version=document["format_version"],
    )


def read_checkpoint_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """Read and validate a checkpoint's JSON only (cheap: for listings and hot-reload checks)."""
    json_path, weights_path = _pair_paths(path, saving=False)
    try:
        size = json_path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"{json_path}: cannot read checkpoint description: {exc}") from exc
    if size > _MAX_JSON_BYTES:
        raise CheckpointError(f"{json_path}: {size} bytes is too large for a checkpoint JSON")
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{json_path}: not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise CheckpointError(f"{json_path}: top level must be an object")
    problems = [
        f"'{key}' missing" if key not in document else f"'{key}' must be {kind.__name__}"
        for key, kind in _REQUIRED_KEYS.items()
        if not isinstance(document.get(key), kind) or isinstance(document.get(key), bool)
    ]
    unknown = sorted(set(document) - set(_REQUIRED_KEYS))
    if unknown:
        problems.append(f"unknown keys {unknown}")
    if problems:
        raise CheckpointError(f"{json_path}: bad checkpoint JSON: {'; '.join(problems)}")
    if document["format"] != FORMAT:
        raise CheckpointError(f"{json_path}: format is {document['format']!r}, expected {FORMAT!r}")
    if document["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path}: format_version {document['format_version']} is not supported "
            f"(this code reads version {FORMAT_VERSION})"
        )
    if document["dtype"] not in _SAVE_DTYPES:
        raise CheckpointError(f"{json_path}: unsupported dtype {document['dtype']!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", document["weights_sha256"]) or (
        document["model_id"] != document["weights_sha256"][:16]
    ):
        raise CheckpointError(f"{json_path}: model_id / weights_sha256 are malformed")
    if document["weights_file"] != weights_path.name:
        raise CheckpointError(
            f"{json_path}: describes {document['weights_file']!r}, not {weights_path.name!r}"
        )
    return _meta_from_document(document, json_path, weights_path)


def _expected_shapes(config: AudioMAEConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict entry of the architecture, without allocating it (meta device)."""
    with torch.device("meta"):
        model = AudioMAE(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _name_list(names: set[str], limit: int = 12) -> str:
    ordered = sorted(names)
    shown = ", ".join(ordered[:limit])
    return shown + (f", ... ({len(ordered)} in all)" if len(ordered) > limit else "")


def _compare_keys(
    found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]], where: str
) -> None:
    """Raise one CheckpointError naming every missing, unexpected and mis-shaped tensor."""
    missing = set(expected) - set(found)
    unexpected = set(found) - set(expected)
    misshaped = {
        f"{name} {list(found[name])} (expected {list(expected[name])})"
        for name in set(found) & set(expected)
        if tuple(found[name]) != tuple(expected[name])
    }
    problems = []
    if missing:
        problems.append(f"missing keys: {_name_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_name_list(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped: {_name_list(misshaped)}")
    if problems:
        raise CheckpointError(
            f"{where}: weights do not match the architecture; " + "; ".join(problems)
        )


def load_model(
    path: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> tuple[AudioMAE, CheckpointMeta]:
    """Load our checkpoint pair; returns the model in eval mode (float32) and its metadata."""
    info = read_checkpoint_meta(path)
    weights_path = info.weights_path
    assert weights_path is not None
    # Read into memory, never memory-mapped: a mapped file that is truncated or rewritten in
    # place while its tensors are read kills the whole process with SIGBUS (the daemon's
    # watcher validates files as they change); read() only ever sees fewer bytes.
    try:
        data = weights_path.read_bytes()
        entries = _safetensors_header(data)
        header = {name: tuple(entry["shape"]) for name, entry in entries.items()}
        dtypes = {name: entry["dtype"] for name, entry in entries.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{weights_path}: unreadable or truncated safetensors: {exc}"
        ) from exc
    # The model the weights go into doubles as the shape reference (a model built on the meta
    # device would import torch's decompositions first: ~1.5 s of every start-up).
    model = AudioMAE(info.config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    _compare_keys(header, expected, str(weights_path))
    wrong = {n for n, d in dtypes.items() if d != _SAFETENSORS_DTYPES[info.dtype]}
    if wrong:
        raise CheckpointError(
            f"{weights_path}: tensors not stored as {info.dtype}: {_name_list(wrong)}"
        )
    try:
        tensors = load_safetensors(data)
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        raise CheckpointError(f"{weights_path}: cannot read tensors: {exc}") from exc
    if weights_sha256(tensors) != info.weights_sha256:
        raise CheckpointError(
            f"{weights_path}: weights do not match model_id {info.model_id} in {info.json_path} "
            "(files from different saves, or modified)"
        )
    model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=True)
    return model.to(device).eval(), info


# --------------------------------------------------------------------------------------------
# Official checkpoints (facebookresearch/AudioMAE) and timm's encoder ports

# The contract between official / timm names and ours, "{i}" standing for a block index. Ours
# were chosen equal to the official ones so the table is an identity today; it stays the one
# place to change if either side is renamed. Groups say when an entry applies.
# The parameters of one transformer block (encoder, and the official global decoder).
_BLOCK_PARAMS = (
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
)

OFFICIAL_KEY_TABLE: dict[str, tuple[tuple[str, str], ...]] = {
    "encoder": (
        ("cls_token", "cls_token"),
        ("pos_embed", "pos_embed"),
        ("patch_embed.proj.weight", "patch_embed.proj.weight"),
        ("patch_embed.proj.bias", "patch_embed.proj.bias"),
    ),
    "encoder_block": tuple(
        (f"blocks.{{i}}.{name}", f"blocks.{{i}}.{name}") for name in _BLOCK_PARAMS
    ),
    "final_norm": (("norm.weight", "norm.weight"), ("norm.bias", "norm.bias")),
    "fc_norm": (("fc_norm.weight", "fc_norm.weight"), ("fc_norm.bias", "fc_norm.bias")),
    "head": (("head.weight", "head.weight"), ("head.bias", "head.bias")),
    "decoder": (
        ("decoder_embed.weight", "decoder_embed.weight"),
        ("decoder_embed.bias", "decoder_embed.bias"),
        ("mask_token", "mask_token"),
        ("decoder_pos_embed", "decoder_pos_embed"),
        ("decoder_norm.weight", "decoder_norm.weight"),
        ("decoder_norm.bias", "decoder_norm.bias"),
        ("decoder_pred.weight", "decoder_pred.weight"),
        ("decoder_pred.bias", "decoder_pred.bias"),
    ),
    "decoder_block": tuple(
        (f"decoder_blocks.{{i}}.{name}", f"decoder_blocks.{{i}}.{name}") for name in _BLOCK_PARAMS
    ),
    "swin_block": tuple(
        (f"decoder_blocks.{{i}}.attn.{name}", f"decoder_blocks.{{i}}.attn.{name}")
        for name in (
            "tau",
            "meta_mlp.fc1.weight",
            "meta_mlp.fc1.bias",
            "meta_mlp.fc2.weight",
            "meta_mlp.fc2.bias",
        )
    ),
}

# ViT widths of the official family -> heads (head dim 64 for S/B, as released).
_HEADS_BY_WIDTH = {384: 6, 768: 12, 1024: 16, 1280: 16}
OfficialKind = Literal["pretrained", "finetuned", "encoder"]


def official_key_table(config: AudioMAEConfig) -> dict[str, str]:
    """Official/timm name -> our name for every tensor a model of ``config`` has."""
    groups = ["encoder"]
    groups += ["final_norm"] if config.final_norm else []
    groups += ["fc_norm"] if config.fc_norm else []
    groups += ["head"] if config.num_classes else []
    table = {src: dst for g in groups for src, dst in OFFICIAL_KEY_TABLE[g]}
    for i in range(config.depth):
        table.update({s.format(i=i): d.format(i=i) for s, d in OFFICIAL_KEY_TABLE["encoder_block"]})
    if config.decoder_depth:
        table.update(dict(OFFICIAL_KEY_TABLE["decoder"]))
        block_groups = ["decoder_block"] + (
            ["swin_block"] if config.decoder_attention == "swin" else []
        )
        for i in range(config.decoder_depth):
            for g in block_groups:
                table.update({s.format(i=i): d.format(i=i) for s, d in OFFICIAL_KEY_TABLE[g]})
    return table


def detect_official_kind(state_dict: Mapping[str, Any]) -> OfficialKind:
    """'pretrained' (has the MAE decoder), 'finetuned' (has a classifier head) or 'encoder'
    (neither: e.g. timm's ``vit_base_patch16_1024_128.audiomae_as2m`` port)."""
    if any(k.startswith("decoder_") or k == "mask_token" for k in state_dict):
        return "pretrained"
    if "head.weight" in state_dict:
        return "finetuned"
    return "encoder"


def _block_count(state_dict: Mapping[str, Any], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    indices = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    if indices and indices != set(range(max(indices) + 1)):
        missing = sorted(set(range(max(indices) + 1)) - indices)
        raise CheckpointError(f"{prefix}: block indices have gaps (missing {missing})")
    return len(indices)


def _shape(state_dict: Mapping[str, Any], key: str, where: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise CheckpointError(f"{where}: missing keys: {key}")
    return tuple(state_dict[key].shape)


def official_config(state_dict: Mapping[str, Any], where: str = "checkpoint") -> AudioMAEConfig:
    """Infer our config from an official/timm state dict's names and shapes.

    Heads are not stored, so the width must be one of the official family's; the decoder of a
    Swin checkpoint tells its heads through the bias MLP, a global decoder is assumed to use the
    official 16. The pretrained recipe (norm-pix loss, mask 0.8) is recorded in the config.
    """
    embed_dim = _shape(state_dict, "cls_token", where)[-1]
    if embed_dim not in _HEADS_BY_WIDTH:
        raise CheckpointError(
            f"{where}: encoder width {embed_dim} is not an official Audio-MAE size"
        )
    proj = _shape(state_dict, "patch_embed.proj.weight", where)
    if len(proj) != 4 or proj[1] != 1 or proj[2] != proj[3]:
        raise CheckpointError(
            f"{where}: patch_embed.proj.weight {list(proj)} is not a 1-channel square patch "
            "(an image MAE, or overlapping-patch variant?)"
        )
    patch = proj[2]
    tokens = _shape(state_dict, "pos_embed", where)[1] - 1
    freq_steps = 128 // patch
    if tokens <= 0 or tokens % freq_steps:
        raise CheckpointError(f"{where}: pos_embed has {tokens + 1} rows; not a (T, 128) grid")
    depth = _block_count(state_dict, "blocks")
    if depth == 0:
        raise CheckpointError(f"{where}: no encoder blocks found (missing keys: blocks.0.*)")
    hidden = _shape(state_dict, "blocks.0.mlp.fc1.weight", where)[0]
    kind = detect_official_kind(state_dict)
    decoder: dict[str, Any] = {"decoder_depth": 0}
    if kind == "pretrained":
        decoder_depth = _block_count(state_dict, "decoder_blocks")
        swin = "decoder_blocks.0.attn.tau" in state_dict
        heads = _shape(state_dict, "decoder_blocks.0.attn.tau", where)[0] if swin else 16
        decoder = {
            "decoder_embed_dim": _shape(state_dict, "mask_token", where)[-1],
            "decoder_depth": decoder_depth,
            "decoder_num_heads": heads,
            "decoder_attention": "swin" if swin else "global",
        }
        if decoder_depth == 0:
            raise CheckpointError(f"{where}: decoder keys but no decoder blocks")
    head = state_dict.get("head.weight")
    try:
        return preset(
            "vit_base",
            img_size=(tokens // freq_steps * patch, 128),
            patch_size=patch,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=_HEADS_BY_WIDTH[embed_dim],
            mlp_ratio=hidden / embed_dim,
            final_norm="norm.weight" in state_dict,
            fc_norm="fc_norm.weight" in state_dict,
            num_classes=0 if head is None else int(head.shape[0]),
            **decoder,
        )
    except ValueError as exc:
        raise CheckpointError(f"{where}: inconsistent checkpoint: {exc}") from exc


def _read_official(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            payload: Any = load_safetensors(path.read_bytes())  # in memory: see load_model
        else:
            # weights_only: a checkpoint must never run code; the official file is plain tensors.
            payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and safetensors errors have no common base
        raise CheckpointError(
            f"{path}: cannot read checkpoint (corrupt, truncated or unsafe): {exc}"
        ) from exc
    if isinstance(payload, Mapping):
        for wrapper in ("model", "state_dict"):
            if wrapper in payload and isinstance(payload[wrapper], Mapping):
                payload = payload[wrapper]
                break
    if not isinstance(payload, Mapping) or not payload:
        raise CheckpointError(f"{path}: no state dict found (expected a 'model' entry)")
    state: dict[str, torch.Tensor] = {}
    for key, value in payload.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is not a tensor")
        # DistributedDataParallel saves add 'module.'; it is not part of any name.
        state[key.removeprefix("module.")] = value
    return state


def load_official(
    path: str | os.PathLike[str],
    kind: OfficialKind | None = None,
    device: torch.device | str = "cpu",
) -> AudioMAE:
    """Import an official Audio-MAE ``pretrained.pth`` / ``finetuned.pth`` or a timm port.

    Reads with ``torch.load(weights_only=True)`` (or safetensors), unwraps the ``model`` entry
    and hands the state dict to :func:`import_official_state_dict`. Never downloads anything.
    """
    p = Path(path)
    return import_official_state_dict(_read_official(p), kind, str(p)).to(device)


def import_official_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    kind: OfficialKind | None = None,
    where: str = "state dict",
) -> AudioMAE:
    """Build our model from an official/timm state dict (eval mode, float32, CPU).

    Detects the kind, infers the config, maps every name through :data:`OFFICIAL_KEY_TABLE`
    and refuses any missing, unexpected or mis-shaped tensor before building anything (issue
    #12 of the official repo: a lenient load into the wrong decoder silently produced noise).
    ``kind`` asserts what the caller needs, e.g. ``"pretrained"`` for inpainting.
    """
    found = detect_official_kind(state_dict)
    if kind is not None and found != kind:
        raise CheckpointError(
            f"{where}: this is a {found} checkpoint, but a {kind} one was required"
        )
    config = official_config(state_dict, where)
    table = official_key_table(config)
    # Names outside the table stay as they are, so the check below reports them as unexpected
    # together with anything missing or mis-shaped.
    mapped = {table.get(k, k): v for k, v in state_dict.items()}
    _compare_keys(
        {k: tuple(v.shape) for k, v in mapped.items()},
        _expected_shapes(config),
        f"{where} ({found} checkpoint)",
    )
    model = AudioMAE(config)
    model.load_state_dict({k: v.to(torch.float32) for k, v in mapped.items()}, strict=True)
    _log_pos_embed_layout(model, where)
    logger.info("imported %s checkpoint %s (%s)", found, where, config)
    return model.eval()


def _log_pos_embed_layout(model: AudioMAE, where: str) -> None:
    """Say which sin-cos layout the stored table follows (fine-tuned tables may have drifted)."""
    c = model.config
    stored = model.pos_embed[0].detach()
    for layout in ("official", "time_freq"):
        if torch.allclose(stored, sincos_pos_embed(c.embed_dim, c.grid_size, layout), atol=1e-4):
            logger.info("%s: position table follows the %r layout", where, layout)
            return
    logger.info("%s: position table matches no fixed sin-cos layout (trained?)", where)
