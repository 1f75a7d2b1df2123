"""Atomic writes leave the old file or the new one, never a torn one."""

import json

import pytest

from memrl.utils.io import atomic_open, atomic_write_json, atomic_write_jsonl, atomic_write_text


def test_atomic_write_replaces_content(tmp_path):
    p = tmp_path / "a" / "f.json"
    atomic_write_json(p, {"x": 1})
    atomic_write_json(p, {"x": 2})
    assert json.loads(p.read_text()) == {"x": 2}
    assert [q.name for q in p.parent.iterdir()] == ["f.json"]  # no temp file left


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(p) as f:
            f.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["f.txt"]


def test_jsonl_rows(tmp_path):
    p = tmp_path / "s.jsonl"
    atomic_write_jsonl(p, [{"a": 1}, {"b": [1, 2]}])
    assert [json.loads(line) for line in p.read_text().splitlines()] == [{"a": 1}, {"b": [1, 2]}]


def test_read_jsonl_tolerant_skips_torn_lines(tmp_path):
    from memrl.utils.io import read_jsonl_tolerant

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3, "x": ')  # the last line torn by a kill
    assert read_jsonl_tolerant(path) == [{"step": 1}, {"step": 2}]
    assert read_jsonl_tolerant(tmp_path / "absent.jsonl") == []
