"""Where a run's endpoint schemas are kept: fetched from a source, cached on disk, memoised.

Where a document comes from is the store's `source` (aivp_batch.schema_sources: fal's, the
default, or Replicate's); caching, the ttl, offline use and the fallback to the bundled snapshot
(aivp_batch.snapshot) are the same for all. A document becomes an `EndpointSchema`
(aivp_batch.openapi), which validates payloads.

Cache layout (under `cache_dir`, in the source's `cache_namespace` sub-folder where it has one:
`replicate/` for Replicate's): `<safe endpoint>/<sha256>.json` holds the canonical document
bytes (so the file name verifies its content) and `<safe endpoint>/index.json` holds
`{endpoint_id, url, sha256, fetched_at}` for the current copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from .errors import SchemaUnavailable
from .files import atomic_write_bytes, atomic_write_json
from .openapi import EndpointSchema, canonical_bytes
from .schema_sources import FalSchemaSource, SchemaSource
from .schema_sources import SourceUnavailable as _Unavailable
from .snapshot import Snapshot

if TYPE_CHECKING:
    from omegaconf import DictConfig

BUNDLED = Snapshot()


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "aivp-batch" / "fal-schemas"


def safe_name(endpoint_id: str) -> str:
    """A file name for an endpoint id: `/` → `__` (as fal's ids read), anything odd %-escaped."""
    name = re.sub(
        r"[^A-Za-z0-9._-]", lambda m: "__" if m.group() == "/" else f"%{ord(m.group()):02X}", endpoint_id
    )
    # No hidden names and no `.`/`..`: the id must never climb out of cache_dir.
    return "%2E" + name[1:] if name.startswith(".") else name or "%00"


class SchemaStore:
    """Endpoint schemas from a `source` (fal's by default), cached on disk (ttl), memoised in
    memory, or registered locally. `schema_url`, `api_url`, `timeout_s` and `transport` configure
    the default fal source; a `source` given brings its own."""

    def __init__(
        self,
        schema_url: str = "https://fal.ai",
        cache_dir: Path | str | None = None,
        ttl_s: float = 86400,
        offline: bool = False,
        timeout_s: float = 30,
        transport: httpx.BaseTransport | None = None,
        *,
        api_url: str | None = None,
        clock: Callable[[], float] = time.time,
        bundled: Snapshot | None = BUNDLED,
        source: SchemaSource | None = None,
    ) -> None:
        self.schema_url = schema_url.rstrip("/")
        self.api_url = api_url.rstrip("/") if api_url else None
        self.source: SchemaSource = source or FalSchemaSource(
            self.schema_url, self.api_url, timeout_s=timeout_s, transport=transport
        )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self.ttl_s = ttl_s
        self.offline = offline
        self.timeout_s = timeout_s
        self.transport = transport
        self.clock = clock
        self.bundled = bundled
        self.warnings: list[str] = []
        self._memo: dict[str, EndpointSchema] = {}
        self._registered: dict[str, EndpointSchema] = {}
        self._lock = threading.Lock()

    def url_for(self, endpoint_id: str) -> str:
        return self.source.url_for(endpoint_id)

    def register(self, endpoint_id: str, document: dict) -> EndpointSchema:
        """Add a local document (e.g. the preview provider's own); it wins over any fetch."""
        try:
            schema = EndpointSchema(endpoint_id, document)
        except ValueError as exc:
            message = f"{endpoint_id}: the registered OpenAPI document is unusable ({exc})"
            raise SchemaUnavailable(message) from None
        with self._lock:
            self._registered[endpoint_id] = schema
            self._memo[endpoint_id] = schema
        return schema

    def get(self, endpoint_id: str) -> EndpointSchema:
        with self._lock:
            if endpoint_id in self._registered:
                return self._registered[endpoint_id]
            if endpoint_id not in self._memo:
                self._memo[endpoint_id] = self._load(endpoint_id)
            return self._memo[endpoint_id]

    def _load(self, endpoint_id: str) -> EndpointSchema:
        """Live fetch (a disk copy younger than the ttl counts as one) → older disk copy → the
        bundled snapshot. Offline, the disk cache and then the snapshot, without trying the network."""
        cached = self._read_cache(endpoint_id)
        if cached is not None and (self.offline or self.clock() - cached[1] < self.ttl_s):
            return cached[0]
        reason = "offline, and it is in neither the schema cache nor the bundled snapshot"
        if not self.offline:
            try:
                return self._fetch(endpoint_id)
            except _Unavailable as exc:
                reason = str(exc)
        if cached is not None:
            self.warnings.append(
                f"{endpoint_id}: could not refresh its OpenAPI schema ({reason}); "
                f"using the {cached[0].source}"
            )
            return cached[0]
        bundled = self._read_bundled(endpoint_id)
        if bundled is not None:
            if not self.offline:
                self.warnings.append(
                    f"{endpoint_id}: could not fetch its OpenAPI schema ({reason}); "
                    f"validating against the {bundled.source}"
                )
            return bundled
        raise self._unavailable(endpoint_id, reason)

    def _read_bundled(self, endpoint_id: str) -> EndpointSchema | None:
        entry = self.bundled.get(endpoint_id) if self.bundled is not None else None
        if entry is None:
            return None
        try:
            return EndpointSchema(endpoint_id, entry.document, source=entry.label)
        except ValueError as exc:
            self.warnings.append(f"{endpoint_id}: the bundled snapshot's document is unusable ({exc})")
            return None

    def _unavailable(self, endpoint_id: str, reason: str) -> SchemaUnavailable:
        return SchemaUnavailable(
            f"{endpoint_id}: could not fetch its OpenAPI schema from {self.url_for(endpoint_id)} ({reason}); "
            "run once online or check the endpoint id"
        )

    # -- network

    def _fetch(self, endpoint_id: str) -> EndpointSchema:
        document = self.fetch_document(endpoint_id)
        try:
            schema = EndpointSchema(endpoint_id, document, source=self.source.label(endpoint_id))
        except ValueError as exc:
            raise _Unavailable(str(exc)) from None
        self._write_cache(endpoint_id, schema)
        return schema

    def fetch_document(self, endpoint_id: str) -> dict:
        """The source's document for `endpoint_id` (raises the source's one-line reason)."""
        return self.source.fetch(endpoint_id)

    # -- disk cache

    def _dir(self, endpoint_id: str) -> Path:
        namespace = getattr(self.source, "cache_namespace", None)
        root = self.cache_dir / safe_name(namespace) if namespace else self.cache_dir
        return root / safe_name(endpoint_id)

    def _read_cache(self, endpoint_id: str) -> tuple[EndpointSchema, float] | None:
        folder = self._dir(endpoint_id)
        try:
            index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
            if index.get("endpoint_id") != endpoint_id:  # a safe_name collision, not ours
                return None
            sha = index["sha256"]
            raw = (folder / f"{sha}.json").read_bytes()
            if hashlib.sha256(raw).hexdigest() != sha:
                raise ValueError("content does not match its sha256")
            fetched_at = float(index["fetched_at"])
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(fetched_at))
            schema = EndpointSchema(endpoint_id, json.loads(raw), sha, source=f"cached copy (fetched {when})")
            return schema, fetched_at
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.warnings.append(f"{endpoint_id}: ignoring damaged schema cache {folder} ({_one_line(exc)})")
            return None

    def _write_cache(self, endpoint_id: str, schema: EndpointSchema) -> None:
        folder = self._dir(endpoint_id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(
                folder / f"{schema.sha256}.json", canonical_bytes(schema.document), durable=False
            )
            index = {
                "endpoint_id": endpoint_id,
                "url": self.url_for(endpoint_id),
                "sha256": schema.sha256,
                "fetched_at": self.clock(),
            }
            atomic_write_json(folder / "index.json", index, durable=False)
        except OSError as exc:
            # A read-only cache must not stop a run that has the schema in hand.
            self.warnings.append(f"{endpoint_id}: could not write schema cache {folder} ({_one_line(exc)})")


def schema_store_for(cfg: DictConfig) -> SchemaStore:
    """The run's schema store: the provider config's `schema_source` (a `_target_` node; none:
    fal's documents at `provider.schema_url`/`api_url`), the run's cache dir, ttl and offline
    switch, and a provider's own published document (`schema_document`, the preview's) registered."""
    from hydra.utils import get_method, instantiate

    provider = cfg.provider
    node = provider.get("schema_source")
    source = instantiate(node) if node is not None else None
    store = SchemaStore(
        schema_url=provider.get("schema_url") or "https://fal.ai",
        cache_dir=Path(cfg.schema_cache_dir).expanduser(),
        ttl_s=float(cfg.schema_ttl_s),
        offline=bool(cfg.offline),
        api_url=provider.get("api_url"),
        source=source,
        # fal's bundled snapshot serves fal's ids only; another source has none of its own
        **({} if source is None or isinstance(source, FalSchemaSource) else {"bundled": None}),
    )
    if provider.get("schema_document"):  # a provider that publishes its own schema (the preview)
        store.register(str(provider.endpoint), get_method(provider.schema_document)())
    return store


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
