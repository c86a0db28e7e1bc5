"""Hot reload: good checkpoints are swapped in, bad or half-copied ones never are."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_model

from maedaw.bridge.models_watch import ModelManager, validate_checkpoint
from maedaw.models.checkpoint import save_model


def tiny_checkpoint(path: Path, seed: int) -> str:
    return save_model(tiny_model(seed), path).model_id


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, str, str, str]] = []
        self.cond = threading.Condition()

    def __call__(self, kind: str, client: str, detail: str, path: str) -> None:
        with self.cond:
            self.items.append((kind, client, detail, path))
            self.cond.notify_all()

    def wait(self, count: int, timeout: float = 20.0) -> list[tuple[str, str, str, str]]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.items) >= count, timeout)
            return list(self.items)


@pytest.fixture()
def manager(tmp_path):
    events = Events()
    folder = tmp_path / "models"
    watched = ModelManager(folder, events, debounce_s=0.3)
    watched.start()
    yield watched, events, tmp_path
    watched.stop()


def test_validate_checkpoint_runs_a_reconstruction(tmp_path):
    model_id = tiny_checkpoint(tmp_path / "a", 0)
    assert validate_checkpoint(tmp_path / "a.json") == model_id


def test_an_encoder_only_checkpoint_is_valid_and_a_broken_one_is_not(tmp_path):
    """An imported AudioSet classifier has no decoder: it tags, so the daemon must serve it
    (its smoke test is an embedding, not a reconstruction); NaN weights still fail."""
    model = tiny_model(1, decoder_depth=0)
    model_id = save_model(model, tmp_path / "enc").model_id
    assert validate_checkpoint(tmp_path / "enc.json") == model_id
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_model(model, tmp_path / "nan")
    with pytest.raises(ValueError, match="smoke embedding"):
        validate_checkpoint(tmp_path / "nan.json")


def test_new_checkpoint_is_loaded_and_swapped(manager):
    watched, events, tmp = manager
    assert watched.model_id == ""
    first = tiny_checkpoint(tmp / "staging" / "one", 1)
    for suffix in (".safetensors", ".json"):
        shutil.copy(tmp / "staging" / f"one{suffix}", watched.folder / f"one{suffix}")
    kind, client, detail, path = events.wait(1)[-1]
    assert (kind, client, detail) == ("loaded", "", first)
    assert watched.model_id == first and path.endswith("one.json")
    second = tiny_checkpoint(tmp / "staging" / "two", 2)
    for suffix in (".safetensors", ".json"):
        shutil.copy(tmp / "staging" / f"two{suffix}", watched.folder / f"two{suffix}")
    assert events.wait(2)[-1][:3] == ("loaded", "", second)
    assert watched.model_id == second
    assert watched.swap_seconds is not None and watched.swap_seconds < 10


def test_corrupt_checkpoint_is_refused_and_the_old_model_keeps_serving(manager):
    watched, events, tmp = manager
    good = tiny_checkpoint(watched.folder / "good", 3)
    watched.reload("ask-1")
    assert events.wait(1)[-1][:3] == ("loaded", "ask-1", good)
    # A truncated weights file with a valid-looking JSON beside it.
    tiny_checkpoint(tmp / "staging" / "bad", 4)
    data = (tmp / "staging" / "bad.safetensors").read_bytes()
    (watched.folder / "bad.safetensors").write_bytes(data[: len(data) // 2])
    shutil.copy(tmp / "staging" / "bad.json", watched.folder / "bad.json")
    kind, _, detail, path = events.wait(2)[-1]
    assert kind == "error" and path.endswith("bad.json") and detail
    assert watched.model_id == good


def test_json_that_lies_about_shapes_is_refused(manager):
    watched, events, tmp = manager
    tiny_checkpoint(tmp / "staging" / "liar", 5)
    meta = json.loads((tmp / "staging" / "liar.json").read_text())
    meta["architecture"]["embed_dim"] = 48
    shutil.copy(tmp / "staging" / "liar.safetensors", watched.folder / "liar.safetensors")
    (watched.folder / "liar.json").write_text(json.dumps(meta))
    kind, _, detail, _ = events.wait(1)[-1]
    assert kind == "error" and "shape" in detail.lower(), detail
    assert watched.model_id == ""


def test_slow_copy_is_not_loaded_half_written(manager):
    watched, events, tmp = manager
    model_id = tiny_checkpoint(tmp / "staging" / "slow", 6)
    data = (tmp / "staging" / "slow.safetensors").read_bytes()
    shutil.copy(tmp / "staging" / "slow.json", watched.folder / "slow.json")
    with open(watched.folder / "slow.safetensors", "wb") as handle:
        for k in range(0, len(data), len(data) // 8 + 1):
            handle.write(data[k : k + len(data) // 8 + 1])
            handle.flush()
            time.sleep(0.1)  # slower than nothing, faster than the debounce
    kind, _, detail, _ = events.wait(1)[-1]
    assert (kind, detail) == ("loaded", model_id), events.items
    assert all(item[0] == "loaded" for item in events.items)


def test_reload_with_an_empty_folder_says_so(manager):
    watched, events, _ = manager
    watched.reload("ask-2")
    kind, client, detail, _ = events.wait(1)[-1]
    assert (kind, client) == ("error", "ask-2") and "no checkpoint" in detail


def test_other_files_beside_the_models_are_not_taken_for_checkpoints(manager):
    from maedaw.bridge.models_watch import MODEL_FORMAT
    from maedaw.models.checkpoint import FORMAT

    assert MODEL_FORMAT == FORMAT  # the watcher's copy (no torch import in the daemon)
    watched, events, tmp = manager
    head = watched.folder / "tagger-mine"
    head.with_suffix(".json").write_text(json.dumps({"format": "maedaw-tagger"}))
    head.with_suffix(".safetensors").write_bytes(b"\0" * 64)
    good = tiny_checkpoint(tmp / "staging" / "good", 3)
    time.sleep(0.5)  # the head is seen first; it must neither load nor raise an error
    for suffix in (".safetensors", ".json"):
        shutil.copy(tmp / "staging" / f"good{suffix}", watched.folder / f"good{suffix}")
    events.wait(1)
    time.sleep(1.0)
    assert [(kind, detail) for kind, _, detail, _ in events.items] == [("loaded", good)]
    watched.reload("ask")
    kind, client, detail, _ = events.wait(2)[-1]
    assert (kind, client, detail) == ("loaded", "ask", good)


# --- the learned concealment model, served beside the Audio-MAE from the same folder ---------


def tiny_concealment(path: Path, seed: int) -> str:
    import torch

    from maedaw.models.concealment import (
        Concealer,
        ConcealmentConfig,
        ConcealmentNet,
        save_concealment,
    )

    torch.manual_seed(seed)
    net = ConcealmentNet(ConcealmentConfig(conv_channels=8, hidden=8, layers=1))
    save_concealment(net, path)
    return Concealer.load(path).model_id


@pytest.fixture()
def both(tmp_path):
    """An Audio-MAE manager and a concealment manager on one folder, as the daemon runs them."""
    from maedaw.bridge.models_watch import CONCEALMENT_FORMAT
    from maedaw.bridge.runner import ConcealerCache

    folder = tmp_path / "models"
    mae_events, plc_events = Events(), Events()
    mae = ModelManager(folder, mae_events, debounce_s=0.3)
    plc = ModelManager(
        folder,
        plc_events,
        validate=ConcealerCache().validate,
        debounce_s=0.3,
        model_format=CONCEALMENT_FORMAT,
    )
    mae.start()
    plc.start()
    yield mae, mae_events, plc, plc_events, tmp_path
    mae.stop()
    plc.stop()


def copy_pair(staging: Path, folder: Path, name: str) -> None:
    for suffix in (".safetensors", ".json"):
        shutil.copy(staging / f"{name}{suffix}", folder / f"{name}{suffix}")


def test_each_manager_serves_its_own_kind_from_one_folder(both):
    from maedaw.bridge.models_watch import CONCEALMENT_FORMAT
    from maedaw.models.concealment import FORMAT

    assert CONCEALMENT_FORMAT == FORMAT  # the watcher reads the torch-free config's
    mae, mae_events, plc, plc_events, tmp = both
    staging = tmp / "staging"
    conceal_id = tiny_concealment(staging / "plc-one", 1)
    mae_id = tiny_checkpoint(staging / "mae-one", 2)
    copy_pair(staging, mae.folder, "plc-one")
    copy_pair(staging, mae.folder, "mae-one")
    assert plc_events.wait(1)[-1][:3] == ("loaded", "", conceal_id)
    assert mae_events.wait(1)[-1][:3] == ("loaded", "", mae_id)
    time.sleep(1.0)  # neither takes the other's pair for a bad one of its own
    assert [e[:3] for e in plc_events.items] == [("loaded", "", conceal_id)]
    assert [e[:3] for e in mae_events.items] == [("loaded", "", mae_id)]
    assert plc.served is not None and plc.served.path.name == "plc-one.json"
    assert mae.served is not None and mae.served.path.name == "mae-one.json"
    # a new concealment pair is hot-swapped in; the Audio-MAE stays
    second = tiny_concealment(staging / "plc-two", 3)
    assert second != conceal_id
    copy_pair(staging, mae.folder, "plc-two")
    assert plc_events.wait(2)[-1][:3] == ("loaded", "", second)
    assert plc.model_id == second and mae.model_id == mae_id


def test_a_truncated_concealment_pair_is_refused_and_the_previous_one_keeps_serving(both):
    _, _, plc, plc_events, tmp = both
    good = tiny_concealment(plc.folder / "good", 4)
    plc.reload("ask")
    assert plc_events.wait(1)[-1][:3] == ("loaded", "ask", good)
    tiny_concealment(tmp / "staging" / "bad", 5)
    data = (tmp / "staging" / "bad.safetensors").read_bytes()
    (plc.folder / "bad.safetensors").write_bytes(data[: len(data) // 2])
    shutil.copy(tmp / "staging" / "bad.json", plc.folder / "bad.json")
    kind, _, detail, path = plc_events.wait(2)[-1]
    assert kind == "error" and path.endswith("bad.json") and "tensors" in detail, detail
    assert plc.model_id == good
