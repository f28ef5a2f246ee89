"""Atomic writes and the JSON text of records (`aivp_batch/files.py`)."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path

import pytest

from aivp_batch.files import FILE_MODE, atomic_write_json, atomic_write_text, dumps


class _State(StrEnum):
    DONE = "done"


def test_pretty_json_is_one_top_level_key_a_line_and_reads_back() -> None:
    data = {"id": "shot-01", "prompt": 'a "quoted" café\nline', "seed": 7, "cost_usd": 0.26,
            "clip": {"sha256": "ab", "bytes": 3}, "refs": ["x", None, True], "status": _State.DONE,
            "file": Path("video/clips/shot-01.mp4")}  # fmt: skip
    text = dumps(data)
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}" and len(lines) == len(data) + 2
    assert lines[2] == '  "prompt": "a \\"quoted\\" café\\nline",'  # escaped, not ASCII-folded
    assert json.loads(text) == {**data, "file": "video/clips/shot-01.mp4"}
    compact = dumps(data, pretty=False)
    assert json.loads(compact) == json.loads(text) and compact.count("\n") == 1


def test_an_atomic_write_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "log.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2}, durable=False)
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["log.json"]  # no temp file left
    assert path.stat().st_mode & 0o777 == FILE_MODE


def test_a_failed_write_leaves_the_old_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "plan.md"
    atomic_write_text(path, "old")

    def no_rename(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["plan.md"]
