"""Atomic file writes: a temp file in the same folder, then a rename, so a crash leaves the old
version or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

_MADE: set[Path] = set()


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


# mkstemp makes files 0600; what we write is ordinary output and gets the user's usual mode.
FILE_MODE = 0o666 & ~_umask()


def ensure_dir(path: Path) -> Path:
    """mkdir -p, once per folder per process (file-system calls are the runner's main cost)."""
    if path not in _MADE:
        path.mkdir(parents=True, exist_ok=True)
        _MADE.add(path)
    return path


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """`durable` also fsyncs before the rename (the journal needs it; views and caches don't)."""
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_SYNC = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


def append_bytes(path: Path, data: bytes, *, durable: bool = True) -> int:
    """Append `data` in one write and return the file's size after it. No new inode and nothing
    deleted, unlike a rename (ext4 pays for each recently deleted inode on every allocation)."""
    ensure_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        view = memoryview(data)
        while view:  # a regular file takes it in one write unless the disk is full or a signal lands
            view = view[os.write(fd, view) :]
        if durable:
            _SYNC(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def appended_records(data: bytes, *, newest_first: bool = False) -> Iterator[dict[str, Any]]:
    """The JSON objects of a file written by `append_bytes`, one a line (each starting on a new
    line). A line a crash tore does not parse and is skipped: the one before it stands."""
    lines = data.split(b"\n")
    for line in reversed(lines) if newest_first else lines:
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def atomic_write_text(path: Path, text: str, *, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_json(
    path: Path, data: Mapping[str, Any], *, durable: bool = True, pretty: bool = True
) -> None:
    atomic_write_text(path, dumps(data, pretty=pretty), durable=durable)


_ENCODER = json.JSONEncoder(
    ensure_ascii=False, default=str
)  # built once: json.dumps with options builds one a call


def dumps(data: Mapping[str, Any], *, pretty: bool = True) -> str:
    """JSON text; `pretty` puts each top-level key on its own line. Values are encoded compactly so
    json's C encoder does the work (indent=… would switch it to the pure-Python one, 5× slower), and
    strings, most of a log's values, go straight to its string escaper (a third of the time)."""
    if not pretty:
        return _ENCODER.encode(data) + "\n"
    encode = _ENCODER.encode
    items = [
        f"  {encode_basestring(str(k))}: {encode_basestring(v) if type(v) is str else encode(v)}"
        for k, v in data.items()
    ]
    return "{\n" + ",\n".join(items) + "\n}\n"
