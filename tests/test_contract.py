"""The OSC contract: the doc and the code agree, requests are validated, paths are policed."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from maedaw.bridge.contract import (
    Address,
    ErrorCode,
    JobRequest,
    RequestError,
    parse_job,
    parse_options,
)
from maedaw.bridge.paths import PathPolicy

DOC = Path(__file__).resolve().parents[1] / "docs" / "osc.md"


def test_every_address_and_code_is_documented_and_back():
    text = DOC.read_text()
    documented = set(re.findall(r"`(/maedaw/[a-z/]+)`", text))
    assert documented == {str(a) for a in Address}
    codes = set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE))
    assert {str(c) for c in ErrorCode} <= codes


def repair(*args):
    return parse_job(Address.REPAIR, args)


def test_valid_repair():
    request = repair("job-1", "/a/take.wav", 1.5, 3.25, "/a/out", '{"reply_port": 9001}')
    assert request.kind == "repair" and request.client_job == "job-1"
    assert (request.start, request.end) == (1.5, 3.25)
    assert request.options.reply_port == 9001 and request.options.spans == "auto"
    assert JobRequest.from_dict(json.loads(request.to_json())) == request


def test_negative_end_means_end_of_file():
    assert repair("j", "/a/take.wav", 0, -1, "/a").end is None


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("j", "/a/t.wav", 0.0, 1.0), ErrorCode.BAD_REQUEST, "expected"),
        ((1, "/a/t.wav", 0.0, 1.0, "/a"), ErrorCode.BAD_REQUEST, "client job id"),
        (("bad id!", "/a/t.wav", 0.0, 1.0, "/a"), ErrorCode.BAD_REQUEST, "client job id"),
        (("j", "t.wav", 0.0, 1.0, "/a"), ErrorCode.BAD_REQUEST, "absolute"),
        (("j", "/a/t.wav", "0", 1.0, "/a"), ErrorCode.BAD_REQUEST, "number of seconds"),
        (("j", "/a/t.wav", True, 1.0, "/a"), ErrorCode.BAD_REQUEST, "number of seconds"),
        (("j", "/a/t.wav", math.nan, 1.0, "/a"), ErrorCode.BAD_REQUEST, "finite"),
        (("j", "/a/t.wav", 2.0, 1.0, "/a"), ErrorCode.BAD_AUDIO, "empty region"),
        (("j", "/a/t.wav", -1.0, 1.0, "/a"), ErrorCode.BAD_AUDIO, "before the file"),
        (("j", "/a/t.wav", 0.0, 1.0, "/a", "{"), ErrorCode.BAD_REQUEST, "not valid JSON"),
        (("j", "/a/t.wav", 0.0, 1.0, "/a", "[]"), ErrorCode.BAD_REQUEST, "JSON object"),
        (
            ("j", "/a/t.wav", 0.0, 1.0, "/a", '{"replyport": 1}'),
            ErrorCode.BAD_REQUEST,
            "unknown option",
        ),
        (
            ("j", "/a/t.wav", 0.0, 1.0, "/a", '{"reply_port": 70000}'),
            ErrorCode.BAD_REQUEST,
            "reply_port",
        ),
        (("j", "/a/t.wav", 0.0, 1.0, "/a", '{"format": "mp3"}'), ErrorCode.BAD_REQUEST, "format"),
        (("j", "/a/t.wav", 0.0, 1.0, "/a", '{"label": "../x"}'), ErrorCode.BAD_REQUEST, "label"),
        (("j", "/a/" + "x" * 5000, 0.0, 1.0, "/a"), ErrorCode.BAD_REQUEST, "longer than"),
        (("j", "/a/t\x00.wav", 0.0, 1.0, "/a"), ErrorCode.BAD_REQUEST, "NUL"),
    ],
)
def test_bad_repairs(args, code, fragment):
    with pytest.raises(RequestError) as caught:
        repair(*args)
    assert caught.value.code is code
    assert fragment in caught.value.message


def test_restore_and_tag_parse():
    restore = parse_job(Address.RESTORE, ("j", "declip", "/a/t.wav", 0.0, 2.0, "/a"))
    assert restore.op == "declip" and restore.kind == "restore"
    with pytest.raises(RequestError, match="unknown restore op"):
        parse_job(Address.RESTORE, ("j", "fix", "/a/t.wav", 0.0, 2.0, "/a"))
    tag = parse_job(Address.TAG, ("j", "/a/t.wav", 0.0, 2.0))
    assert tag.kind == "tag" and tag.out_dir is None


def test_similar_parses_candidates_and_round_trips_through_the_journal():
    cands = json.dumps(
        [
            {"id": "item-1", "source": "/a/b.wav", "start": 1.0, "end": 3.0},
            {"id": "item-2", "source": "/a/c.flac"},  # whole file
        ]
    )
    request = parse_job(Address.SIMILAR, ("q", "/a/t.wav", 0.0, 2.0, cands, '{"top_k": 1}'))
    assert request.kind == "similar" and request.out_dir is None and request.options.top_k == 1
    assert [c.id for c in request.candidates] == ["item-1", "item-2"]
    assert request.candidates[1].start == 0.0 and request.candidates[1].end is None
    assert JobRequest.from_dict(json.loads(request.to_json())) == request
    for bad, fragment in (
        ("[]", "1-1000 regions"),
        ("{}", "JSON array"),
        ("[1", "not valid JSON"),
        ('[{"id": "a", "source": "rel.wav"}]', "absolute path"),
        ('[{"id": "a b", "source": "/x.wav"}]', "client job id"),
        ('[{"id": "a", "source": "/x.wav"}, {"id": "a", "source": "/y.wav"}]', "used twice"),
        ('[{"id": "a", "source": "/x.wav", "gain": 2}]', "id, source, start, end"),
        ('[{"id": "a", "source": "/x.wav", "start": 3, "end": 2}]', "empty region"),
        ("x" * 60_001, "longer than 60000 bytes"),
    ):
        with pytest.raises(RequestError, match=fragment):
            parse_job(Address.SIMILAR, ("q", "/a/t.wav", 0.0, 2.0, bad))
    with pytest.raises(RequestError, match="expected client_job, source"):
        parse_job(Address.SIMILAR, ("q", "/a/t.wav", 0.0, 2.0))


def test_teach_parses_a_tag_name_and_round_trips():
    request = parse_job(Address.TEACH, ("t", "door creak", "/a/t.wav", 1.0, 2.0))
    assert (request.kind, request.op, request.out_dir) == ("teach", "door creak", None)
    assert JobRequest.from_dict(json.loads(request.to_json())) == request
    for bad in ("", "a/b", "x" * 65, " padded", "tab\there"):
        with pytest.raises(RequestError, match="name must be"):
            parse_job(Address.TEACH, ("t", bad, "/a/t.wav", 0.0, 1.0))


def test_restore_params_and_tag_top_k_round_trip_through_the_journal():
    request = parse_job(
        Address.RESTORE,
        ("j", "dehum", "/a/t.wav", 0.0, 2.0, "/a", '{"params": {"base_hz": 60}, "top_k": 3}'),
    )
    assert request.options.params == {"base_hz": 60} and request.options.top_k == 3
    again = JobRequest.from_dict(json.loads(request.to_json()))
    assert again == request
    for bad, fragment in (
        ('{"params": [1]}', "params must be a JSON object"),
        ('{"top_k": 0}', "top_k"),
        ('{"top_k": true}', "top_k"),
        ('{"top_k": 101}', "top_k"),
    ):
        with pytest.raises(RequestError, match=fragment) as caught:
            parse_options(bad)
        assert caught.value.code == ErrorCode.BAD_REQUEST


def test_empty_options_are_defaults():
    assert parse_options("") == parse_options("  ") == parse_options("{}")


# --- path policy ---------------------------------------------------------------------


def test_paths_default_policy(tmp_path):
    (tmp_path / "take.wav").write_bytes(b"x")
    policy = PathPolicy()
    assert policy.source(tmp_path / "take.wav") == (tmp_path / "take.wav").resolve()
    assert policy.out_dir(tmp_path) == tmp_path.resolve()
    with pytest.raises(RequestError) as caught:
        policy.source(tmp_path / "missing.wav")
    assert caught.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(RequestError) as caught:
        policy.source(tmp_path / "sub" / ".." / "take.wav")
    assert caught.value.code is ErrorCode.FORBIDDEN
    with pytest.raises(RequestError) as caught:
        policy.out_dir(tmp_path / "take.wav")
    assert caught.value.code is ErrorCode.NOT_FOUND


def test_symlink_out_of_its_folder_is_refused(tmp_path):
    secret = tmp_path / "private" / "secret.wav"
    secret.parent.mkdir()
    secret.write_bytes(b"x")
    session = tmp_path / "session"
    session.mkdir()
    (session / "take.wav").symlink_to(secret)
    with pytest.raises(RequestError) as caught:
        PathPolicy().source(session / "take.wav")
    assert caught.value.code is ErrorCode.FORBIDDEN


def test_configured_roots(tmp_path):
    inside, outside = tmp_path / "projects", tmp_path / "elsewhere"
    for folder in (inside, outside):
        folder.mkdir()
        (folder / "take.wav").write_bytes(b"x")
    policy = PathPolicy.from_dirs([inside])
    assert policy.source(inside / "take.wav").parent == inside.resolve()
    for call in (lambda: policy.source(outside / "take.wav"), lambda: policy.out_dir(outside)):
        with pytest.raises(RequestError) as caught:
            call()
        assert caught.value.code is ErrorCode.FORBIDDEN
    link = inside / "link"
    link.symlink_to(outside)
    with pytest.raises(RequestError):
        policy.out_dir(link)
