"""Tests of aivp_batch.schemas against the 32 real fal OpenAPI documents of the bundled snapshot.

The documents are served from a loopback HTTP server, so the fetch/cache code runs for real, offline.
"""

from __future__ import annotations

import copy
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
from PIL import Image

from aivp_batch.errors import SchemaUnavailable
from aivp_batch.schemas import SCHEMA_PATH, EndpointSchema, SchemaIssue, SchemaStore, safe_name
from aivp_batch.snapshot import SNAPSHOT_DIR, Snapshot

SCHEMA_DIR = SNAPSHOT_DIR
ENDPOINTS = Snapshot().endpoints()

KLING_V3_I2V = "fal-ai/kling-video/v3/pro/image-to-video"
KLING_V3_T2V = "fal-ai/kling-video/v3/pro/text-to-video"
KLING_O3_REF = "fal-ai/kling-video/o3/pro/reference-to-video"
KLING_O3_EDIT = "fal-ai/kling-video/o3/pro/video-to-video/edit"
VEO = "fal-ai/veo3.1"


def _document(endpoint_id: str) -> dict:
    return json.loads((SCHEMA_DIR / (endpoint_id.replace("/", "__") + ".json")).read_text(encoding="utf-8"))


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
        if path != SCHEMA_PATH or not endpoint_id or not file.is_file():
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


def _minimal_payload(schema: EndpointSchema) -> dict:
    """Required fields filled from their default, first choice, or a sample of their type (the
    snapshot carries no `examples`: they are prose)."""
    return {name: _sample(schema, name) for name in schema.required}


def _sample(schema: EndpointSchema, field: str) -> object:
    node = schema.field_schema(field) or {}
    if "default" in node:
        return node["default"]
    if schema.allowed_values(field):
        return schema.allowed_values(field)[0]
    kind = next((b.get("type") for b in schema._branches(node) if b.get("type") not in (None, "null")), None)
    if kind == "array":
        item = schema.field_schema(field + "[0]") or {}
        needed = list(item.get("required") or [])
        value = (
            {k: _sample(schema, f"{field}[0].{k}") for k in needed}
            if needed
            else _sample(schema, field + "[0]")
        )
        return [value] * max(1, int(node.get("minItems", 1)))
    if kind == "object":
        return {k: _sample(schema, f"{field}.{k}") for k in node.get("required") or []}
    if kind in ("integer", "number"):
        return node.get("minimum", 1)
    return (
        "https://example.com/a.png"
        if field.endswith("url") or "url" in field.rsplit(".", 1)[-1]
        else "a test"
    )


# ---------------------------------------------------------------- all 32 documents


def test_bundled_documents_are_all_there() -> None:
    assert len(ENDPOINTS) == 32


@pytest.mark.parametrize("endpoint_id", ENDPOINTS)
def test_every_document_loads_and_a_minimal_payload_validates(store: SchemaStore, endpoint_id: str) -> None:
    schema = store.get(endpoint_id)
    body = schema.document["paths"]["/" + endpoint_id]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/" + schema.input_name)
    assert schema.input_name.endswith("Input")
    assert schema.properties and "properties" in schema.input_schema
    payload = _minimal_payload(schema)
    assert schema.validate(payload) == []
    assert schema.unknown_keys(payload) == []
    assert schema.missing_refs == []


# ---------------------------------------------------------------- validation messages


def test_kling_duration_outside_its_enum_lists_the_allowed_values(store: SchemaStore) -> None:
    schema = store.get(KLING_V3_I2V)
    issues = schema.validate({"start_image_url": "https://x/a.png", "duration": "2"})
    assert len(issues) == 1
    issue = issues[0]
    assert issue.path == "duration"
    assert issue.allowed == [str(n) for n in range(3, 16)]
    assert issue.message.startswith("'2' is not one of '3', '4', '5'")
    assert str(issue).startswith("duration: '2' is not one of")


def test_kling_duration_as_integer_is_rejected(store: SchemaStore) -> None:
    issues = store.get(KLING_V3_I2V).validate({"start_image_url": "https://x/a.png", "duration": 5})
    assert issues and {i.path for i in issues} == {"duration"}
    assert any("not of type 'string'" in i.message for i in issues)
    assert all(i.allowed and "5" in i.allowed for i in issues)


def test_veo_duration_needs_its_unit(store: SchemaStore) -> None:
    schema = store.get(VEO)
    [issue] = schema.validate({"prompt": "a cat", "duration": "5s"})
    assert issue.path == "duration"
    assert issue.allowed == ["4s", "6s", "8s"]
    assert issue.message == "'5s' is not one of '4s', '6s', '8s'"
    assert schema.validate({"prompt": "a cat", "duration": "6s"}) == []


def test_null_is_accepted_where_the_schema_allows_it(store: SchemaStore) -> None:
    assert store.get(VEO).validate({"prompt": "a cat", "seed": None}) == []
    payload = {"start_image_url": "https://x/a.png", "end_image_url": None, "elements": None}
    assert store.get(KLING_V3_I2V).validate(payload) == []


def test_anyof_failures_name_the_real_field_and_problem(store: SchemaStore) -> None:
    [seed] = store.get(VEO).validate({"prompt": "a cat", "seed": "abc"})
    assert seed.path == "seed" and seed.message == "'abc' is not of type 'integer'"
    shots = [{"prompt": "a", "duration": "5"}, {"prompt": "b", "duration": "20"}]
    payload = {"prompt": None, "multi_prompt": shots}
    [issue] = store.get(KLING_V3_T2V).validate(payload)
    assert issue.path == "multi_prompt[1].duration"
    assert issue.allowed == [str(n) for n in range(1, 16)]
    assert "'20' is not one of '1', '2'" in issue.message
    assert "any of the given schemas" not in issue.message


def test_missing_required_field_is_named_by_its_path(store: SchemaStore) -> None:
    issues = store.get(KLING_V3_I2V).validate({"prompt": "a"})
    assert [i.path for i in issues] == ["start_image_url"]
    [nested] = store.get(KLING_V3_T2V).validate({"multi_prompt": [{"duration": "5"}]})
    assert nested.path == "multi_prompt[0].prompt"


def test_paths_in_payload_validate_as_strings(store: SchemaStore, tmp_path: Path) -> None:
    # Payloads are planned with local files before upload; a Path is sent as a string later.
    assert store.get(KLING_V3_I2V).validate({"start_image_url": tmp_path / "a.png"}) == []


def test_lookups(store: SchemaStore) -> None:
    schema = store.get(KLING_V3_I2V)
    assert schema.required == ["start_image_url"]
    assert "multi_prompt" in schema.properties and "multi_shot_prompts" not in schema.properties
    assert schema.allowed_values("duration") == [str(n) for n in range(3, 16)]
    assert schema.allowed_values("shot_type") == ["customize", "intelligent"]
    assert schema.allowed_values("prompt") is None
    assert schema.allowed_values("no_such_field") is None
    assert store.get("fal-ai/veo3.1/reference-to-video").allowed_values("duration") == ["8s"]  # a const
    assert store.get("fal-ai/sora-2/text-to-video/pro").allowed_values("duration") == [4, 8, 12, 16, 20]


# ---------------------------------------------------------------- unknown keys


def test_upstream_wrong_kling_field_names_are_unknown_keys(store: SchemaStore) -> None:
    schema = store.get(KLING_V3_I2V)
    wrong = {
        "start_image_url": "https://x/a.png",
        "multi_shot_prompts": [{"prompt": "a", "duration": "5"}],
        "elements": [{"image_url": "https://x/c.png", "description": "the hero"}],
    }
    # JSON Schema alone accepts it (no additionalProperties: false): that is why unknown_keys exists.
    assert schema.validate(wrong) == []
    expected = ["multi_shot_prompts", "elements[0].image_url", "elements[0].description"]
    assert schema.unknown_keys(wrong) == expected
    right = {
        "start_image_url": "https://x/a.png",
        "multi_prompt": [{"prompt": "a", "duration": "5"}, {"prompt": "b", "foo": 1}],
        "elements": [{"frontal_image_url": "https://x/c.png", "reference_image_urls": ["https://x/d.png"]}],
    }
    assert schema.unknown_keys(right) == ["multi_prompt[1].foo"]


def test_unknown_keys_on_endpoints_without_the_field(store: SchemaStore) -> None:
    # Hailuo-02 pro has no duration: fal would silently ignore it.
    schema = store.get("fal-ai/minimax/hailuo-02/pro/text-to-video")
    assert schema.unknown_keys({"prompt": "a", "duration": "6"}) == ["duration"]


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
    from aivp_batch.snapshot import reduce_document

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
    reordered = dict(reversed(list(_document(VEO).items())))
    assert fetched == cached == EndpointSchema(VEO, reordered).sha256
    assert (
        fetched
        == EndpointSchema(VEO, _document(VEO)).sha256
        == hashlib.sha256(
            json.dumps(_document(VEO), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        ).hexdigest()
    )
    changed = _document(VEO)
    changed["info"]["version"] = "2.0.0"
    assert EndpointSchema(VEO, changed).sha256 != fetched


def test_registered_document_wins_over_fetch(fal: SchemaServer, store: SchemaStore) -> None:
    document = _document(VEO)
    document["components"]["schemas"]["Veo31Input"]["properties"]["duration"]["enum"] = ["2s"]
    store.register(VEO, document)
    assert store.get(VEO).allowed_values("duration") == ["2s"]
    assert fal.requests == []


def test_safe_name_never_leaves_the_cache_dir() -> None:
    assert safe_name(KLING_V3_I2V) == "fal-ai__kling-video__v3__pro__image-to-video"
    for hostile in ("..", ".", "../../etc/passwd", "a/../../b", ""):
        name = safe_name(hostile)
        assert "/" not in name and name not in ("", ".", "..") and not name.startswith(".")


# ---------------------------------------------------------------- synthetic documents


def _synthetic() -> dict:
    schemas = {
        "DrawInput": {
            "type": "object",
            "required": ["prompt"],
            "properties": {
                "prompt": {"type": "string"},
                "points": {"type": "array", "items": {"$ref": "#/components/schemas/TrackPoint"}},
                "style": {"type": "string", "enum": ["a", "b"], "nullable": True},
            },
        },
        "DrawOutput": {"type": "object", "properties": {"video": {"$ref": "#/components/schemas/File"}}},
    }
    return {"openapi": "3.0.4", "paths": {}, "components": {"schemas": schemas}}


def test_missing_ref_target_is_tolerated() -> None:
    # No `paths` entry either: the input schema is found as the one unreferenced `*Input`.
    schema = EndpointSchema("acme/draw", _synthetic())
    assert schema.input_name == "DrawInput"
    assert sorted(schema.missing_refs) == ["#/components/schemas/File", "#/components/schemas/TrackPoint"]
    assert schema.validate({"prompt": "p", "points": [{"x": 1}, 2]}) == []
    assert schema.unknown_keys({"prompt": "p", "points": [{"x": 1}]}) == []
    points = schema.document["components"]["schemas"]["DrawInput"]["properties"]["points"]
    assert points["items"] == {"$ref": "#/components/schemas/TrackPoint"}  # the document is left alone


def test_openapi30_nullable_also_accepts_null() -> None:
    schema = EndpointSchema("acme/draw", _synthetic())
    assert schema.validate({"prompt": "p", "style": None}) == []
    [issue] = schema.validate({"prompt": "p", "style": "c"})
    assert issue == SchemaIssue("style", "'c' is not one of 'a', 'b'", ["a", "b"])
    assert schema.allowed_values("style") == ["a", "b"]
    # The published document itself is left as it was.
    assert schema.document["components"]["schemas"]["DrawInput"]["properties"]["style"]["nullable"] is True


# ---------------------------------------------------------------- local files against x-fal limits


def _png(path: Path, width: int, height: int) -> Path:
    Image.new("RGB", (width, height), (90, 120, 150)).save(path)
    return path


def test_file_limits_come_from_x_fal(store: SchemaStore) -> None:
    limits = store.get(KLING_V3_I2V).file_limits("start_image_url")
    assert limits["max_file_size"] == 10485760 and limits["min_width"] == 300
    assert limits["min_aspect_ratio"] == 0.4 and limits["max_aspect_ratio"] == 2.5
    assert store.get(KLING_V3_I2V).file_limits("end_image_url") == limits  # inside anyOf
    assert store.get(KLING_O3_REF).file_limits("image_urls")["min_height"] == 300  # array items
    assert store.get(KLING_V3_I2V).file_limits("elements[0].video_url")["min_fps"] == 24
    assert store.get(VEO).file_limits("prompt") == {}


def test_small_image_fails_with_file_name_and_limit(store: SchemaStore, tmp_path: Path) -> None:
    image = _png(tmp_path / "shot-01-ff.png", 200, 150)
    [issue] = store.get(KLING_V3_I2V).check_local_file("start_image_url", image)
    assert issue.path == "start_image_url"
    expected = f"shot-01-ff.png is 200x150; {KLING_V3_I2V} start_image_url needs at least 300x300"
    assert issue.message == expected


def test_good_image_passes(store: SchemaStore, tmp_path: Path) -> None:
    image = _png(tmp_path / "shot-01-ff.png", 1280, 720)
    assert store.get(KLING_V3_I2V).check_local_file("start_image_url", image) == []
    assert store.get(KLING_O3_REF).check_local_file("image_urls", image) == []


def test_extreme_aspect_ratio_fails(store: SchemaStore, tmp_path: Path) -> None:
    image = _png(tmp_path / "wide.png", 1600, 400)
    [issue] = store.get(KLING_V3_I2V).check_local_file("start_image_url", image)
    assert "wide.png is 1600x400 (aspect 4.00)" in issue.message and "between 0.4 and 2.5" in issue.message


def test_oversize_file_fails_before_upload(store: SchemaStore, tmp_path: Path) -> None:
    image = _png(tmp_path / "huge.png", 1280, 720)
    with image.open("r+b") as handle:  # sparse tail: the header still reads, the size is 10 MB + 1
        handle.truncate(10485760 + 1)
    [issue] = store.get(KLING_V3_I2V).check_local_file("start_image_url", image)
    assert issue.message.startswith("huge.png is 10.0 MB (10485761 bytes)")
    assert issue.message.endswith(f"{KLING_V3_I2V} start_image_url allows at most 10.0 MB")


def test_oversize_against_a_patched_limit(tmp_path: Path) -> None:
    document = copy.deepcopy(_document(KLING_V3_I2V))
    schemas = document["components"]["schemas"]
    prop = schemas["KlingVideoV3ProImageToVideoInput"]["properties"]["start_image_url"]
    prop["x-fal"]["max_file_size"] = 100
    image = _png(tmp_path / "shot-02-ff.png", 1280, 720)
    [issue] = EndpointSchema(KLING_V3_I2V, document).check_local_file("start_image_url", image)
    assert "shot-02-ff.png" in issue.message and issue.message.endswith("allows at most 100 bytes")


def test_missing_and_unreadable_files_are_issues(store: SchemaStore, tmp_path: Path) -> None:
    schema = store.get(KLING_V3_I2V)
    [missing] = schema.check_local_file("start_image_url", tmp_path / "nope.png")
    assert "nope.png: file not found" in missing.message
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    [unreadable] = schema.check_local_file("start_image_url", junk)
    assert unreadable.message.startswith("junk.png cannot be read as an image")


def test_video_limits_use_duration_fps_and_size(store: SchemaStore, tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    clip = tmp_path / "tiny.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(10):
            frame = av.VideoFrame.from_image(Image.new("RGB", (64, 64), (200, 30, 30)))
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    messages = [i.message for i in store.get(KLING_O3_EDIT).check_local_file("video_url", clip)]
    assert len(messages) == 3, messages
    assert messages[0] == f"tiny.mp4 is 64x64; {KLING_O3_EDIT} video_url needs at least 720x720"
    assert messages[1].startswith("tiny.mp4 is 1 s long") and messages[1].endswith("needs at least 3 s")
    assert messages[2] == f"tiny.mp4 runs at 10 fps; {KLING_O3_EDIT} video_url needs at least 24 fps"


# ---------------------------------------------------------------- long values, every image decoded

HAILUO_T2V = "fal-ai/minimax/hailuo-02/standard/text-to-video"  # prompt maxLength 2000


def test_a_huge_prompt_is_not_echoed_whole() -> None:
    schema = EndpointSchema(HAILUO_T2V, _document(HAILUO_T2V))
    [issue] = schema.validate({"prompt": "a" * 10_000_000})
    assert issue.path == "prompt" and len(issue.message) <= 300
    assert issue.message.startswith("'aaaa") and issue.message.endswith("... is too long")


@pytest.mark.parametrize(
    "payload",
    [
        {"prompt": "a cat", "duration": "9" * 100_000},  # enum
        {"prompt": ["a" * 100_000]},  # type
        {"prompt": "a cat", "seed": "x" * 100_000},  # anyOf [integer, null]
    ],
)
def test_every_validation_message_is_short(payload: dict) -> None:
    issues = EndpointSchema(VEO, _document(VEO)).validate(payload)
    assert issues and all(len(i.message) <= 300 for i in issues), [len(i.message) for i in issues]


def test_an_image_is_decoded_on_an_endpoint_without_x_fal_limits(tmp_path: Path) -> None:
    schema = EndpointSchema("fal-ai/veo3.1/image-to-video", _document("fal-ai/veo3.1/image-to-video"))
    assert schema.file_limits("image_url") == {}
    assert schema.check_local_file("image_url", _png(tmp_path / "ok.png", 640, 360)) == []
    [tiny] = schema.check_local_file("image_url", _png(tmp_path / "tiny.png", 5, 5))
    assert tiny.message.startswith("tiny.png is 5x5; images for fal-ai/veo3.1/image-to-video image_url")
    assert tiny.message.endswith("must be at least 64x64 (the model's min_image_px)")
    assert schema.check_local_file("image_url", tmp_path / "tiny.png", min_image_px=4) == []
    cut = tmp_path / "cut.png"
    whole = (tmp_path / "ok.png").read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])  # the header reads, the pixel data ends early
    [truncated] = schema.check_local_file("image_url", cut)
    assert truncated.message.startswith("cut.png cannot be read as an image")
    webp = tmp_path / "still.webp"
    Image.new("RGB", (640, 360)).save(webp, format="PNG")
    [named] = schema.check_local_file("image_url", webp)
    assert named.message == "still.webp: its bytes are PNG but its extension says WEBP; rename or convert it"
    [folder] = schema.check_local_file("image_url", tmp_path)
    assert folder.message.endswith("a directory, not a file (for fal-ai/veo3.1/image-to-video image_url)")


# ---------------------------------------------------------------- Replicate's documents (schema_sources)

REPLICATE_TOKEN = "r8_schema-test-SECRET-77"
VEO_R = "google/veo-3.1"


@pytest.fixture
def rep(monkeypatch: pytest.MonkeyPatch):
    from aivp_batch.testing.replicate_server import FakeReplicate

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    with FakeReplicate(token=REPLICATE_TOKEN) as server:
        yield server


def replicate_store(rep, tmp_path: Path, token: str | None = REPLICATE_TOKEN, **kw) -> SchemaStore:
    from aivp_batch.schema_sources import ReplicateSchemaSource

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
    from aivp_batch.errors import AuthError

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
    from aivp_batch.schema_sources import ReplicateSchemaSource

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    source = ReplicateSchemaSource(rep.url, timeout_s=5)  # key_env REPLICATE_API_TOKEN
    store = SchemaStore(cache_dir=tmp_path / "cache", bundled=None, source=source)
    monkeypatch.setenv("REPLICATE_API_TOKEN", REPLICATE_TOKEN)
    assert store.get(VEO_R).input_name == "Input"
    assert REPLICATE_TOKEN not in repr(source)


def test_schema_store_for_picks_the_providers_source(compose_cfg, tmp_path: Path) -> None:
    from aivp_batch.schema_sources import FalSchemaSource, ReplicateSchemaSource, schema_store_for

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
    from aivp_batch.schema_sources import FalSchemaSource

    store = SchemaStore(fal.url, tmp_path / "cache", timeout_s=5, bundled=None)
    assert isinstance(store.source, FalSchemaSource) and store.source.schema_url == fal.url
    store.get(VEO)
    assert (tmp_path / "cache" / safe_name(VEO) / "index.json").is_file()  # fal's copies stay at the root
    assert store.url_for(VEO) == f"{fal.url}{SCHEMA_PATH}?endpoint_id={VEO.replace('/', '%2F')}"
