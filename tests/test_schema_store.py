"""Tests of aivp_batch.schema_store: fetching, the disk cache, the ttl, offline use and the bundled
snapshot, with fal's documents served from a loopback HTTP server (so the fetch/cache code runs for
real, offline), and `schema_store_for` picking a provider's source."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import fal_document

from aivp_batch.errors import SchemaUnavailable
from aivp_batch.openapi import EndpointSchema
from aivp_batch.schema_sources import FAL_SCHEMA_PATH, FalSchemaSource, ReplicateSchemaSource
from aivp_batch.schema_store import SchemaStore, safe_name, schema_store_for
from aivp_batch.snapshot import SNAPSHOT_DIR, Snapshot, reduce_document

SCHEMA_DIR = SNAPSHOT_DIR

KLING_V3_I2V = "fal-ai/kling-video/v3/pro/image-to-video"
VEO = "fal-ai/veo3.1"


# ---------------------------------------------------------------- a tiny fal schema server


@dataclass
class SchemaServer:
    url: str = ""
    requests: list[str] = field(default_factory=list)  # endpoint ids asked for, in order
    auth_headers: list[str | None] = field(default_factory=list)
    overrides: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # endpoint id → (status, body)

    def answer(self, path: str, endpoint_id: str) -> tuple[int, bytes]:
        if endpoint_id in self.overrides:
            return self.overrides[endpoint_id]
        file = SCHEMA_DIR / (endpoint_id.replace("/", "__") + ".json")
        if path != FAL_SCHEMA_PATH or not endpoint_id or not file.is_file():
            return 404, b'{"detail": "Not Found"}'
        return 200, file.read_bytes()


def _handler(state: SchemaServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlsplit(self.path)
            endpoint_id = parse_qs(url.query).get("endpoint_id", [""])[0]
            state.requests.append(endpoint_id)
            state.auth_headers.append(self.headers.get("Authorization"))
            status, body = state.answer(url.path, endpoint_id)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # keep pytest output quiet
            pass

    return Handler


@pytest.fixture(scope="module")
def _server() -> Iterator[SchemaServer]:
    state = SchemaServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def fal(_server: SchemaServer, monkeypatch: pytest.MonkeyPatch) -> SchemaServer:
    """The module's server with a fresh request count and no overrides."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # loopback must not go through a proxy
    _server.requests.clear()
    _server.auth_headers.clear()
    _server.overrides.clear()
    return _server


@pytest.fixture
def store(fal: SchemaServer, tmp_path: Path) -> SchemaStore:
    return SchemaStore(fal.url, tmp_path / "cache", timeout_s=5, bundled=None)


# ---------------------------------------------------------------- fetching and caching


def test_memo_and_disk_cache_avoid_requests(fal: SchemaServer, store: SchemaStore, tmp_path: Path) -> None:
    first = store.get(KLING_V3_I2V)
    assert store.get(KLING_V3_I2V) is first
    assert fal.requests == [KLING_V3_I2V]
    again = SchemaStore(fal.url, tmp_path / "cache").get(KLING_V3_I2V)
    assert fal.requests == [KLING_V3_I2V]
    assert again.sha256 == first.sha256 and again.document == first.document
    folder = tmp_path / "cache" / safe_name(KLING_V3_I2V)
    index = json.loads((folder / "index.json").read_text())
    assert index["endpoint_id"] == KLING_V3_I2V and index["sha256"] == first.sha256
    raw = (folder / f"{first.sha256}.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == first.sha256


def test_no_key_is_sent(fal: SchemaServer, store: SchemaStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAL_KEY", "secret-key")
    store.get(VEO)
    assert fal.auth_headers == [None]


def test_expired_cache_is_refetched(fal: SchemaServer, store: SchemaStore, tmp_path: Path) -> None:
    store.get(VEO)
    later = SchemaStore(fal.url, tmp_path / "cache", ttl_s=60, clock=lambda: time.time() + 61)
    later.get(VEO)
    assert fal.requests == [VEO, VEO]
    assert later.warnings == []


def test_expired_cache_is_used_when_the_refetch_fails(
    fal: SchemaServer, store: SchemaStore, tmp_path: Path
) -> None:
    cached = store.get(VEO)
    fal.overrides[VEO] = (500, b"oops")
    later = SchemaStore(fal.url, tmp_path / "cache", ttl_s=60, clock=lambda: time.time() + 61)
    assert later.get(VEO).sha256 == cached.sha256
    assert len(fal.requests) == 2
    [warning] = later.warnings
    assert VEO in warning and "HTTP 500" in warning and "cached copy" in warning


def test_offline_uses_the_cache_of_any_age(fal: SchemaServer, store: SchemaStore, tmp_path: Path) -> None:
    store.get(VEO)
    offline = SchemaStore(fal.url, tmp_path / "cache", ttl_s=1, offline=True, clock=lambda: time.time() + 1e6)
    assert offline.get(VEO).input_name == "Veo31Input"
    assert fal.requests == [VEO]


def test_offline_without_cache_is_unavailable(fal: SchemaServer, tmp_path: Path) -> None:
    with pytest.raises(SchemaUnavailable, match="run once online"):
        SchemaStore(fal.url, tmp_path / "cache", offline=True, bundled=None).get(VEO)
    assert fal.requests == []


def test_offline_without_cache_uses_the_bundled_snapshot(fal: SchemaServer, tmp_path: Path) -> None:
    schema = SchemaStore(fal.url, tmp_path / "cache", offline=True).get(VEO)
    assert fal.requests == []
    assert schema.source.startswith("bundled snapshot (2026-06-11)")
    assert schema.sha256 == Snapshot().sources[VEO]["sha256"]
    assert schema.validate({"prompt": "a cat", "duration": "6s"}) == []
    assert schema.allowed_values("duration") == ["4s", "6s", "8s"]


def test_resolution_order_live_then_cache_then_bundled(fal: SchemaServer, tmp_path: Path) -> None:
    live = SchemaStore(fal.url, tmp_path / "cache").get(VEO)
    assert live.source.startswith("live (http://127.0.0.1:") and fal.requests == [VEO]
    fal.overrides[VEO] = (503, b"down")
    stale = SchemaStore(fal.url, tmp_path / "cache", ttl_s=0)
    assert stale.get(VEO).source.startswith("cached copy (fetched ") and "HTTP 503" in stale.warnings[0]
    fresh_install = SchemaStore(fal.url, tmp_path / "empty")
    bundled = fresh_install.get(VEO)
    assert bundled.source.startswith("bundled snapshot") and bundled.sha256 == live.sha256  # served from it
    [warning] = fresh_install.warnings
    assert "HTTP 503" in warning and "validating against the bundled snapshot (2026-06-11)" in warning


def test_the_snapshot_is_fals_document_without_prose() -> None:
    document = Snapshot().get(KLING_V3_I2V).document
    text = json.dumps(document)
    assert '"description"' not in text and '"examples"' not in text and '"title"' not in text
    props = document["components"]["schemas"]["KlingVideoV3ProImageToVideoInput"]["properties"]
    assert props["duration"]["enum"] == [str(n) for n in range(3, 16)]
    assert props["start_image_url"]["x-fal"]["max_file_size"] > 0
    # A field called `title` or `description` is a name, not prose: it stays.
    doc = {"properties": {"title": {"type": "string", "title": "Title"}}, "description": "prose"}
    assert reduce_document(doc) == {"properties": {"title": {"type": "string"}}}


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        (None, "HTTP 404"),
        ((200, b"<html>not json</html>"), "not JSON"),
        ((200, b"[1, 2]"), "not an OpenAPI document"),
        ((200, b'{"openapi": "3.0.4", "paths": {}}'), "no input schema found"),
    ],
)
def test_unusable_answers_are_schema_unavailable(
    fal: SchemaServer, store: SchemaStore, override: tuple[int, bytes] | None, reason: str
) -> None:
    endpoint_id = "fal-ai/no-such-model"
    if override:
        fal.overrides[endpoint_id] = override
    with pytest.raises(SchemaUnavailable) as caught:
        store.get(endpoint_id)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{endpoint_id}: could not fetch its OpenAPI schema from {fal.url}")
    assert f"{reason})" in message and message.endswith("run once online or check the endpoint id")
    assert not (store.cache_dir / safe_name(endpoint_id)).exists()


def test_unreachable_server_is_schema_unavailable(fal: SchemaServer, tmp_path: Path) -> None:
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{closed.server_address[1]}"
    closed.server_close()
    with pytest.raises(SchemaUnavailable, match="ConnectError"):
        SchemaStore(url, tmp_path / "cache", timeout_s=2, bundled=None).get(VEO)


def test_sha256_is_stable(fal: SchemaServer, store: SchemaStore, tmp_path: Path) -> None:
    fetched = store.get(VEO).sha256
    cached = SchemaStore(fal.url, tmp_path / "cache", offline=True).get(VEO).sha256
    reordered = dict(reversed(list(fal_document(VEO).items())))
    assert fetched == cached == EndpointSchema(VEO, reordered).sha256
    assert (
        fetched
        == EndpointSchema(VEO, fal_document(VEO)).sha256
        == hashlib.sha256(
            json.dumps(fal_document(VEO), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        ).hexdigest()
    )
    changed = fal_document(VEO)
    changed["info"]["version"] = "2.0.0"
    assert EndpointSchema(VEO, changed).sha256 != fetched


def test_registered_document_wins_over_fetch(fal: SchemaServer, store: SchemaStore) -> None:
    document = fal_document(VEO)
    document["components"]["schemas"]["Veo31Input"]["properties"]["duration"]["enum"] = ["2s"]
    store.register(VEO, document)
    assert store.get(VEO).allowed_values("duration") == ["2s"]
    assert fal.requests == []


def test_safe_name_never_leaves_the_cache_dir() -> None:
    assert safe_name(KLING_V3_I2V) == "fal-ai__kling-video__v3__pro__image-to-video"
    for hostile in ("..", ".", "../../etc/passwd", "a/../../b", ""):
        name = safe_name(hostile)
        assert "/" not in name and name not in ("", ".", "..") and not name.startswith(".")


# ---------------------------------------------------------------- the run's store and its source


def test_schema_store_for_picks_the_providers_source(compose_cfg, tmp_path: Path) -> None:
    cache = f"schema_cache_dir={tmp_path / 'schemas'}"
    fal_store = schema_store_for(compose_cfg(cache))
    assert isinstance(fal_store.source, FalSchemaSource) and fal_store.bundled is not None
    assert (
        fal_store.source.schema_url == "https://fal.ai" and fal_store.source.api_url == "https://api.fal.ai"
    )
    assert fal_store.cache_dir == tmp_path / "schemas" and fal_store.ttl_s == 86400
    rep_store = schema_store_for(
        compose_cfg("provider=replicate", "provider.base_url=http://127.0.0.1:9", "offline=true", cache)
    )
    assert isinstance(rep_store.source, ReplicateSchemaSource) and rep_store.bundled is None
    assert rep_store.source.base_url == "http://127.0.0.1:9" and rep_store.offline
    assert rep_store.source.key_env == "REPLICATE_API_TOKEN"
    preview = schema_store_for(compose_cfg("provider=preview", cache))
    assert preview.get("aivp/preview").source == "registered"


def test_the_fal_store_is_unchanged_by_the_sources(fal: SchemaServer, tmp_path: Path) -> None:
    store = SchemaStore(fal.url, tmp_path / "cache", timeout_s=5, bundled=None)
    assert isinstance(store.source, FalSchemaSource) and store.source.schema_url == fal.url
    store.get(VEO)
    assert (tmp_path / "cache" / safe_name(VEO) / "index.json").is_file()  # fal's copies stay at the root
    assert store.url_for(VEO) == f"{fal.url}{FAL_SCHEMA_PATH}?endpoint_id={VEO.replace('/', '%2F')}"
