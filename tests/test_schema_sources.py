"""Tests of aivp_batch.schema_sources: Replicate's documents, read with the API token from a fake
Replicate server, through the store (validated at `components.schemas.Input`, cached in their own
namespace, pinned versions, token problems as one clear line)."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest

from aivp_batch.errors import AuthError, SchemaUnavailable
from aivp_batch.schema_sources import ReplicateSchemaSource
from aivp_batch.schema_store import SchemaStore
from aivp_batch.testing.replicate_server import FakeReplicate

REPLICATE_TOKEN = "r8_schema-test-SECRET-77"
VEO_R = "google/veo-3.1"


@pytest.fixture
def rep(monkeypatch: pytest.MonkeyPatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    with FakeReplicate(token=REPLICATE_TOKEN) as server:
        yield server


def replicate_store(rep, tmp_path: Path, token: str | None = REPLICATE_TOKEN, **kw) -> SchemaStore:
    source = ReplicateSchemaSource(rep.url, token=token, key_env=None, timeout_s=5)
    return SchemaStore(cache_dir=tmp_path / "cache", bundled=None, source=source, **kw)


def test_replicate_documents_validate_at_input_with_the_token(rep, tmp_path: Path) -> None:
    store = replicate_store(rep, tmp_path)
    schema = store.get(VEO_R)
    assert rep.stats.calls["model"] == 1 and schema.input_name == "Input"
    latest = rep.models[VEO_R]["latest_version"]["id"]
    assert schema.source == f"live ({rep.url}, version {latest[:12]})"
    assert store.url_for(VEO_R) == f"{rep.url}/v1/models/{VEO_R}"
    # enums behind allOf/$ref, OpenAPI-3.0 nullable, and the fal-style name nobody declares
    assert schema.validate({"prompt": "x", "duration": 8, "seed": None}) == []
    [issue] = schema.validate({"prompt": "x", "aspect_ratio": "4:3"})
    assert issue.path == "aspect_ratio" and issue.allowed == ["16:9", "9:16"]
    assert schema.unknown_keys({"prompt": "x", "image_url": "https://x/y.png"}) == ["image_url"]
    assert schema.allowed_values("duration") == [4, 6, 8]
    # cached under its own namespace, beside (never among) fal's copies
    index = json.loads((tmp_path / "cache/replicate/google__veo-3.1/index.json").read_text())
    assert index["endpoint_id"] == VEO_R and index["url"] == f"{rep.url}/v1/models/{VEO_R}"
    again = replicate_store(rep, tmp_path).get(VEO_R)
    assert again.sha256 == schema.sha256 and rep.stats.calls["model"] == 1  # the disk copy, not a fetch


def test_a_pinned_version_reads_that_versions_document(rep, tmp_path: Path) -> None:
    doc = copy.deepcopy(rep.models[VEO_R]["latest_version"]["openapi_schema"])
    doc["components"]["schemas"]["duration"]["enum"] = [8]
    old = rep.add_version(VEO_R, doc)  # not the latest
    schema = replicate_store(rep, tmp_path).get(f"{VEO_R}:{old}")
    assert rep.stats.calls["version"] == 1 and rep.stats.calls["model"] == 0
    assert schema.allowed_values("duration") == [8] and schema.source.endswith(f"version {old[:12]})")
    with pytest.raises(SchemaUnavailable, match=r"HTTP 404: Replicate has no version 0+ of google/veo-3.1"):
        replicate_store(rep, tmp_path).get(f"{VEO_R}:{'0' * 64}")


def test_replicate_ttl_and_offline_rules_are_fals(rep, tmp_path: Path) -> None:
    replicate_store(rep, tmp_path).get(VEO_R)
    later = replicate_store(rep, tmp_path, ttl_s=60, clock=lambda: time.time() + 61)
    later.get(VEO_R)
    assert rep.stats.calls["model"] == 2  # expired: fetched again
    offline = replicate_store(rep, tmp_path, offline=True, clock=lambda: time.time() + 1e6)
    assert offline.get(VEO_R).source.startswith("cached copy") and rep.stats.calls["model"] == 2
    with pytest.raises(SchemaUnavailable, match="offline, and it is in neither"):
        replicate_store(rep, tmp_path, offline=True).get("bytedance/seedance-1-pro")
    url = rep.url
    rep.stop()
    stale = replicate_store(rep, tmp_path, ttl_s=60, clock=lambda: time.time() + 1e6)
    assert stale.source.base_url == url  # and the server is gone now
    assert stale.get(VEO_R).source.startswith("cached copy")
    assert "could not refresh its OpenAPI schema" in stale.warnings[0]


def test_replicate_token_problems_are_one_clear_line(rep, tmp_path: Path) -> None:
    with pytest.raises(AuthError) as missing:
        replicate_store(rep, tmp_path, token=None).get(VEO_R)
    assert str(missing.value) == (
        "no REPLICATE_API_TOKEN found: set REPLICATE_API_TOKEN in the environment or in ./.env, "
        "~/.env or ~/.aivp/.env"
    )
    assert rep.stats.calls["model"] == 0  # nothing is asked without a token
    wrong = "r8_wrong-SECRET-token"
    with pytest.raises(AuthError) as refused:
        replicate_store(rep, tmp_path, token=wrong).get(VEO_R)
    message = str(refused.value)
    assert message.startswith("Replicate rejected the API token (HTTP 401, reading google/veo-3.1's schema)")
    assert "\n" not in message and wrong not in message and REPLICATE_TOKEN not in message
    with pytest.raises(SchemaUnavailable, match="HTTP 404: Replicate has no model nobody/nothing"):
        replicate_store(rep, tmp_path).get("nobody/nothing")
    with pytest.raises(SchemaUnavailable, match="is not a Replicate model id"):
        replicate_store(rep, tmp_path).get("fal-ai/veo3.1/fast")
    # a fresh cached copy needs no token at all
    replicate_store(rep, tmp_path).get(VEO_R)
    assert replicate_store(rep, tmp_path, token=None).get(VEO_R).source.startswith("cached copy")


def test_the_token_is_found_only_when_a_document_is_fetched(
    rep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    source = ReplicateSchemaSource(rep.url, timeout_s=5)  # key_env REPLICATE_API_TOKEN
    store = SchemaStore(cache_dir=tmp_path / "cache", bundled=None, source=source)
    monkeypatch.setenv("REPLICATE_API_TOKEN", REPLICATE_TOKEN)
    assert store.get(VEO_R).input_name == "Input"
    assert REPLICATE_TOKEN not in repr(source)
