"""Atomic file writes: a temp file in the same folder, then a rename, so a crash leaves the old
version or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """`durable` also fsyncs before the rename (the journal needs it; views and caches don't)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, *, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_json(
    path: Path, data: Mapping[str, Any], *, durable: bool = True, pretty: bool = True
) -> None:
    # indent=None lets json use its C encoder: the journal is for machines, logs are for people.
    text = json.dumps(data, indent=2 if pretty else None, ensure_ascii=False, default=str) + "\n"
    atomic_write_text(path, text, durable=durable)
