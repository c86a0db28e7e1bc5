"""maedaw.core: the error root and the shared helpers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from maedaw.core.errors import MaedawError
from maedaw.core.util import (
    atomic_path,
    file_sha256,
    merge_intervals,
    temp_beside,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def test_temp_name_is_beside_hidden_and_keeps_the_suffix(tmp_path: Path) -> None:
    final = tmp_path / "take.repair-1.wav"
    temp = temp_beside(final)
    assert temp.parent == tmp_path
    assert temp.name.startswith(".take.repair-1.partial-")
    assert temp.suffix == ".wav"
    assert temp != temp_beside(final)


def test_atomic_path_replaces_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "a.json"
    final.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(final) as temp:
        temp.write_text("half")
        raise RuntimeError("interrupted")
    assert final.read_text() == "old"
    assert list(tmp_path.iterdir()) == [final]  # no temp left behind
    with atomic_path(final, mode=0o600) as temp:
        temp.write_text("new")
    assert final.read_text() == "new"
    assert final.stat().st_mode & 0o777 == 0o600
    assert list(tmp_path.iterdir()) == [final]


def test_write_helpers(tmp_path: Path) -> None:
    assert write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert write_text_atomic(tmp_path / "t.txt", "é\n").read_text(encoding="utf-8") == "é\n"
    path = write_json_atomic(tmp_path / "d.json", {"b": 1, "a": [2]}, indent=1, sort_keys=True)
    assert path.read_text() == json.dumps({"a": [2], "b": 1}, indent=1, sort_keys=True)


@pytest.mark.parametrize(
    ("spans", "join", "merged"),
    [
        ([], 0, []),
        ([(5, 9), (0, 3)], 0, [(0, 3), (5, 9)]),  # sorted, apart
        ([(0, 3), (3, 6)], 0, [(0, 6)]),  # touching
        ([(0, 5), (2, 3)], 0, [(0, 5)]),  # contained
        ([(0, 3), (5, 9)], 2, [(0, 9)]),  # a gap of 2 joins at join=2 ...
        ([(0, 3), (5, 9)], 1, [(0, 3), (5, 9)]),  # ... not at join=1
    ],
)
def test_merge_intervals(spans: list, join: int, merged: list) -> None:
    assert merge_intervals(spans, join) == merged


def test_file_sha256(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_every_purposeful_error_is_a_maedaw_error() -> None:
    from maedaw.bridge.contract import RequestError
    from maedaw.dsp.audio_io import AudioError
    from maedaw.models.checkpoint import CheckpointError
    from maedaw.models.tagging import TaggingError

    for error in (AudioError, CheckpointError, RequestError, TaggingError):
        assert issubclass(error, MaedawError)
