"""Where models live: the bundled default (package data) and the user's models folder.

Everything is local: listing reads only each checkpoint's JSON (cheap, validated), loading
goes through :func:`checkpoint.load_model`. Nothing is ever downloaded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_data_dir

from .audiomae import PRESETS, AudioMAE
from .checkpoint import CheckpointError, CheckpointMeta, load_model, read_checkpoint_meta
from .concealment_config import FORMAT as CONCEALMENT_FORMAT
from .concealment_config import concealment_id

logger = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "compact-default"


def user_models_dir() -> Path:
    """``<user data dir>/maedaw/models`` (``MAEDAW_MODELS_DIR`` overrides it, e.g. in tests)."""
    override = os.environ.get("MAEDAW_MODELS_DIR")
    return Path(override) if override else Path(user_data_dir("maedaw")) / "models"


@dataclass(frozen=True)
class ModelEntry:
    name: str  # file stem
    model_id: str
    config: str  # preset name, or "custom"
    source: str  # "bundled" or "user"
    size_bytes: int  # weights + json
    path: Path  # the .safetensors file
    meta: CheckpointMeta

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "id": self.model_id,
            "config": self.config,
            "source": self.source,
            "size_bytes": self.size_bytes,
            "dtype": self.meta.dtype,
            "path": str(self.path),
        }


def preset_name(meta: CheckpointMeta) -> str:
    """The preset whose architecture the checkpoint has (ignoring the training-only fields)."""
    ignore = {"mask_ratio", "mask_kind", "num_classes"}
    mine = {k: v for k, v in meta.config.to_dict().items() if k not in ignore}
    for name, config in PRESETS.items():
        if {k: v for k, v in config.to_dict().items() if k not in ignore} == mine:
            return name
    return "custom"


def _entries(folder: Path, source: str) -> list[ModelEntry]:
    entries = []
    if not folder.is_dir():
        return entries
    for json_path in sorted(folder.glob("*.json")):
        try:
            meta = read_checkpoint_meta(json_path)
        except CheckpointError as exc:
            logger.debug("not a model: %s", exc)  # other JSON files may live there too
            continue
        weights = meta.weights_path
        if weights is None or not weights.is_file():
            logger.warning("%s: weights file missing", json_path)
            continue
        size = weights.stat().st_size + json_path.stat().st_size
        entries.append(
            ModelEntry(
                json_path.stem, meta.model_id, preset_name(meta), source, size, weights, meta
            )
        )
    return entries


def list_models() -> list[ModelEntry]:
    """Bundled models first, then the user's."""
    return _entries(BUNDLED_DIR, "bundled") + _entries(user_models_dir(), "user")


def list_concealment() -> list[dict]:
    """The learned concealment pairs (``models/concealment.py``), bundled first, then the
    user's: name, id (as the daemon reports it), source, size, dtype, path. Reads only the
    JSON; :func:`maedaw.models.concealment.load_concealment` checks the weights."""
    import json

    rows = []
    for folder, source in ((BUNDLED_DIR, "bundled"), (user_models_dir(), "user")):
        if not folder.is_dir():
            continue
        for json_path in sorted(folder.glob("*.json")):
            try:
                document = json.loads(json_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if not isinstance(document, dict) or document.get("format") != CONCEALMENT_FORMAT:
                continue
            weights = json_path.with_suffix(".safetensors")
            if not weights.is_file():
                logger.warning("%s: weights file missing", json_path)
                continue
            rows.append(
                {
                    "name": json_path.stem,
                    "id": concealment_id(document.get("weights_sha256")),
                    "config": "concealment",
                    "source": source,
                    "size_bytes": weights.stat().st_size + json_path.stat().st_size,
                    "dtype": document.get("dtype"),
                    "path": str(weights),
                }
            )
    return rows


def resolve(name_or_path: str | os.PathLike[str] | None = None) -> Path:
    """A path to a checkpoint: an existing path as is, else a listed model's name or id
    (default: the bundled default model)."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    candidate = Path(name_or_path)
    if candidate.exists() or candidate.with_suffix(".json").exists():
        return candidate
    for entry in list_models():
        if str(name_or_path) in (entry.name, entry.model_id):
            return entry.path
    known = ", ".join(e.name for e in list_models()) or "none"
    raise CheckpointError(f"no model {name_or_path!r} (installed: {known})")


def load(
    name_or_path: str | os.PathLike[str] | None = None, device: str = "cpu"
) -> tuple[AudioMAE, CheckpointMeta]:
    """Load a model by path, name or id (default: the bundled one), offline."""
    return load_model(resolve(name_or_path), device)
