"""The bundled schema snapshot: fal's per-endpoint OpenAPI documents reduced to their machine-readable
contract, shipped inside the package so that validation works offline on a fresh install.

A reduced document keeps everything a validator or a payload builder reads — paths, components and
`$ref`s, types, enums, defaults, required lists, limits, `x-fal*` keys — and drops the prose
(`description`, `title`, `examples`, …), which is most of a document's size and changes weekly.

Layout of `SNAPSHOT_DIR`: `<safe endpoint id>.json` per endpoint, and `_sources.json`:
`{endpoint_id: {origin, retrieved_at, original_sha256, sha256, display_name?, category?}}` saying
where and when each document came from. `scripts/snapshot_schemas.py` rebuilds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import atomic_write_text
from .openapi import document_sha256

SNAPSHOT_DIR = Path(__file__).parent / "fal_schemas"
SOURCES_FILE = "_sources.json"

# Schema keywords that carry prose only. They are dropped wherever they are keywords, never where
# they are names: inside `properties` (a field may well be called `title`) every key is kept.
PROSE_KEYS = frozenset(
    {"description", "title", "examples", "example", "summary", "about", "limit_description"}
)
_NAME_MAPS = frozenset({"properties", "patternProperties", "schemas", "paths", "responses", "content"})


def reduce_document(document: Any, parent_key: str | None = None) -> Any:
    """`document` without its prose; key order kept (so diffs against fal's stay readable)."""
    if isinstance(document, list):
        return [reduce_document(value) for value in document]
    if not isinstance(document, dict):
        return document
    names = parent_key in _NAME_MAPS
    return {
        key: reduce_document(value, key) for key, value in document.items() if names or key not in PROSE_KEYS
    }


def file_name(endpoint_id: str) -> str:
    """`fal-ai/veo3.1/fast` → `fal-ai__veo3.1__fast.json` (fal's ids hold no `__`)."""
    return endpoint_id.strip("/").replace("/", "__") + ".json"


@dataclass(frozen=True)
class SnapshotEntry:
    """One bundled document and where it came from."""

    endpoint_id: str
    document: dict
    origin: str  # a URL, or the file it was read from
    retrieved_at: str  # ISO 8601, when fal produced or we fetched the original
    metadata: dict = field(default_factory=dict)  # catalogue facts: display_name, category, status

    @property
    def label(self) -> str:
        return f"bundled snapshot ({self.retrieved_at[:10]})"


class Snapshot:
    """Read access to a snapshot folder (the bundled one by default)."""

    def __init__(self, folder: Path = SNAPSHOT_DIR) -> None:
        self.folder = Path(folder)
        self._sources: dict[str, dict] | None = None

    @property
    def sources(self) -> dict[str, dict]:
        if self._sources is None:
            path = self.folder / SOURCES_FILE
            self._sources = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return self._sources

    def endpoints(self) -> list[str]:
        return sorted(self.sources)

    def get(self, endpoint_id: str) -> SnapshotEntry | None:
        source = self.sources.get(endpoint_id)
        path = self.folder / file_name(endpoint_id)
        if source is None or not path.is_file():
            return None
        document = json.loads(path.read_text(encoding="utf-8"))
        metadata = source.get("metadata") or {}
        return SnapshotEntry(endpoint_id, document, source["origin"], source["retrieved_at"], metadata)


def write_snapshot(entries: list[SnapshotEntry], originals: dict[str, dict], folder: Path) -> dict[str, dict]:
    """Write reduced documents and `_sources.json` into `folder` (replacing entries of the same id,
    keeping the others). `originals` maps endpoint id → the unreduced document, for its hash."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = Snapshot(folder).sources
    for entry in entries:
        reduced = reduce_document(entry.document)
        text = json.dumps(reduced, indent=1, ensure_ascii=False) + "\n"
        atomic_write_text(folder / file_name(entry.endpoint_id), text, durable=False)
        sources[entry.endpoint_id] = {
            "origin": entry.origin,
            "retrieved_at": entry.retrieved_at,
            "original_sha256": document_sha256(originals.get(entry.endpoint_id, entry.document)),
            "sha256": document_sha256(reduced),
            "metadata": entry.metadata,
        }
    ordered = dict(sorted(sources.items()))
    atomic_write_text(folder / SOURCES_FILE, json.dumps(ordered, indent=1) + "\n", durable=False)
    return ordered
