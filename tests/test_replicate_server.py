"""The fake Replicate server speaks Replicate's HTTP API, over real sockets."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from aivp_batch.testing.replicate_server import (
    SCHEMAS_DIR,
    FakeReplicate,
    ReplicateFault,
    input_hash,
    load_models,
    parse_cancel_after,
)

TOKEN = "r8_server-test"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
VEO = "google/veo-3.1"
SEEDANCE = "bytedance/seedance-1-lite"
KLING = "kwaivgi/kling-v2.5-turbo-pro"


@pytest.fixture
def rep() -> Iterator[FakeReplicate]:
    with FakeReplicate(token=TOKEN, latency_s=0.3) as server:
        yield server


@pytest.fixture
def client(rep: FakeReplicate) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=rep.url, timeout=10) as c:
        yield c


def create(
    client: httpx.Client, payload: dict | None = None, model: str = VEO, **headers: str
) -> httpx.Response:
    return client.post(
        f"/v1/models/{model}/predictions",
        json={"input": payload or {"prompt": "a fox"}},
        headers={**AUTH, **headers},
    )


def until_terminal(client: httpx.Client, pred: dict, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(pred["urls"]["get"], headers=AUTH).json()
        if body["status"] in ("succeeded", "failed", "canceled", "aborted"):
            return body
        time.sleep(0.02)
    raise AssertionError("never finished")


def decoded_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        frames = sum(1 for _ in container.decode(video=0))
        return frames / float(container.streams.video[0].average_rate)


# ---------------------------------------------------------------- auth, models


def test_a_missing_or_wrong_token_is_401_problem_json(client: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Key {TOKEN}"}):
        r = client.get("/v1/account", headers=headers)
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        assert r.json() == {
            "title": "Unauthenticated",
            "detail": "You did not pass a valid authentication token",
            "status": 401,
        }
    assert client.get("/v1/account", headers={"Authorization": f"Token {TOKEN}"}).status_code == 200
    account = client.get("/v1/account", headers=AUTH).json()
    assert account["type"] == "user" and account["username"]


def test_bundled_models_are_cog_documents_with_enums_behind_allof() -> None:
    models = load_models()
    assert set(models) == {
        *(VEO, VEO + "-fast", SEEDANCE, "bytedance/seedance-1-pro", KLING, "kwaivgi/kling-v3-omni-video"),
        *("minimax/hailuo-02", "wan-video/wan-2.5-t2v", "wan-video/wan-2.5-i2v"),
    }
    assert json.loads((SCHEMAS_DIR / "_about.json").read_text())["files"] == sorted(
        p.name for p in SCHEMAS_DIR.glob("*__*.json")
    )
    for name, model in models.items():
        schema = model["latest_version"]["openapi_schema"]
        schemas = schema["components"]["schemas"]
        assert len(model["latest_version"]["id"]) == 64 and model["is_official"]
        assert schemas["Output"] == {"type": "string", "title": "Output", "format": "uri"}
        assert "prompt" in schemas["Input"]["required"], name
        refs = [p for p in schemas["Input"]["properties"].values() if "allOf" in p]
        assert refs and all(
            r["allOf"][0]["$ref"].removeprefix("#/components/schemas/") in schemas for r in refs
        )
        assert any(p.get("nullable") for p in schemas["Input"]["properties"].values())
    assert (SCHEMAS_DIR / "_about.json").is_file()


def test_model_and_version_objects(rep: FakeReplicate, client: httpx.Client) -> None:
    model = client.get(f"/v1/models/{VEO}", headers=AUTH).json()
    vid = model["latest_version"]["id"]
    assert model["owner"] == "google" and model["name"] == "veo-3.1"
    assert "Input" in model["latest_version"]["openapi_schema"]["components"]["schemas"]
    version = client.get(f"/v1/models/{VEO}/versions/{vid}", headers=AUTH).json()
    assert version["id"] == vid and version["openapi_schema"]
    assert client.get(f"/v1/models/{VEO}/versions/{'0' * 64}", headers=AUTH).status_code == 404
    missing = client.get("/v1/models/nobody/nothing", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["status"] == 404
    assert rep.stats.calls["model"] == 2 and rep.stats.calls["version"] == 2


# ---------------------------------------------------------------- predictions


def test_create_poll_succeed_and_download_a_real_clip(
    rep: FakeReplicate, client: httpx.Client, tmp_path: Path
):
    r = create(client, {"prompt": "a fox", "duration": 4, "seed": 11, "negative_prompt": None})
    assert r.status_code == 201, r.text
    pred = r.json()
    assert pred["status"] == "starting" and pred["version"] == "hidden" and pred["model"] == VEO
    assert r.headers["Location"] == pred["urls"]["get"] and pred["output"] is None
    assert pred["urls"]["cancel"].endswith(f"/v1/predictions/{pred['id']}/cancel")
    assert len(pred["id"]) == 26 and pred["source"] == "api" and "deadline" not in pred
    seen = set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        body = client.get(pred["urls"]["get"], headers=AUTH).json()
        seen.add(body["status"])
        if body["status"] == "succeeded":
            break
        time.sleep(0.02)
    assert seen >= {"starting", "processing", "succeeded"}
    assert body["logs"].startswith("Using seed: 11\n") and body["logs"].endswith("100%\n")
    assert (
        body["metrics"]["predict_time"] > 0
        and body["metrics"]["total_time"] >= body["metrics"]["predict_time"]
    )
    assert body["started_at"] and body["completed_at"] and body["error"] is None
    assert isinstance(body["output"], str) and body["output"].endswith(".mp4")
    clip = client.get(body["output"])  # like replicate.delivery: no token needed
    assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4"
    (tmp_path / "out.mp4").write_bytes(clip.content)
    assert abs(decoded_seconds(tmp_path / "out.mp4") - 4.0) < 0.05
    assert rep.stats.creates == 1 and rep.billed == {pred["id"]: 4.0}


def test_pinned_versions_go_through_v1_predictions(rep: FakeReplicate, client: httpx.Client) -> None:
    vid = rep.models[SEEDANCE]["latest_version"]["id"]
    for version in (vid, f"{SEEDANCE}:{vid}", SEEDANCE):
        r = client.post("/v1/predictions", json={"version": version, "input": {"prompt": "x"}}, headers=AUTH)
        assert r.status_code == 201, r.text
        assert r.json()["version"] == vid and r.json()["model"] == SEEDANCE
    for bad in ("0" * 64, f"{VEO}:{vid}", ""):
        r = client.post("/v1/predictions", json={"version": bad, "input": {"prompt": "x"}}, headers=AUTH)
        assert r.status_code == 422, bad
    wrong = client.post("/v1/predictions", json={"version": "0" * 64, "input": {}}, headers=AUTH).json()
    assert wrong["title"] == "Invalid version or not permitted"
    assert rep.stats.creates == 3


def test_schema_invalid_input_is_422_with_invalid_fields(rep: FakeReplicate, client: httpx.Client) -> None:
    r = create(client, {"prompt": "x", "aspect_ratio": "4:3", "duration": 5, "seed": None})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["title"] == "Input validation failed" and body["status"] == 422
    by_field = {f["field"]: f for f in body["invalid_fields"]}
    assert by_field["input.aspect_ratio"]["type"] == "enum"
    assert '"16:9", "9:16"' in by_field["input.aspect_ratio"]["description"]
    assert by_field["input.duration"]["type"] == "enum"  # 5 is no Veo duration; the enum is behind allOf
    assert "input.seed" not in by_field  # nullable
    assert body["detail"].startswith("- input.")
    missing = create(client, {"aspect_ratio": "16:9"}).json()["invalid_fields"]
    assert missing == [{"type": "required", "field": "input", "description": "prompt is required"}]
    too_long = create(client, {"prompt": "x", "duration": 20}, model=SEEDANCE).json()["invalid_fields"]
    assert too_long[0]["type"] == "number_lte" and too_long[0]["field"] == "input.duration"
    typed = create(client, {"prompt": "x", "camera_fixed": "yes"}, model=SEEDANCE).json()["invalid_fields"]
    assert typed[0]["type"] == "invalid_type"
    extra = client.post(
        f"/v1/models/{VEO}/predictions", json={"input": {"prompt": "x"}, "model": VEO}, headers=AUTH
    )
    assert (
        extra.status_code == 422
        and extra.json()["invalid_fields"][0]["type"] == "additional_property_not_allowed"
    )
    assert rep.stats.creates == 0
    # Undeclared input keys pass (Cog ignores them): only local validation catches fal-style names.
    assert create(client, {"prompt": "x", "image_url": "https://x/y.png"}).status_code == 201


def test_429_with_retry_after_creates_nothing() -> None:
    fault = ReplicateFault("429", on="create", retry_after=5, body_retry_after=5)
    with FakeReplicate(token=TOKEN, faults=[fault]) as rep, httpx.Client(base_url=rep.url) as client:
        r = create(client)
        assert r.status_code == 429 and r.headers["Retry-After"] == "5"
        assert r.json() == {
            "detail": "Request was throttled. Your rate limit resets in ~5s.",
            "status": 429,
            "retry_after": 5,
        }
        assert rep.stats.creates == 0 and rep.stats.faults_fired["create:429"] == 1
        assert create(client).status_code == 201 and rep.stats.creates == 1


def test_cancel_after_aborts_unstarted_and_cancels_running() -> None:
    with FakeReplicate(token=TOKEN, latency_s=1.0, queue_fraction=0.5, min_cancel_after_s=0.05) as rep:
        with httpx.Client(base_url=rep.url) as client:
            aborted = create(client, **{"Cancel-After": "0.2s"}).json()
            cut = create(client, {"prompt": "b"}, **{"Cancel-After": "0.7"}).json()
            assert aborted["deadline"] and cut["deadline"]
            a, c = until_terminal(client, aborted), until_terminal(client, cut)
            assert a["status"] == "aborted" and a["started_at"] is None and a["output"] is None
            assert c["status"] == "canceled" and c["started_at"] is not None
            assert rep.billed == {} and rep.stats.headers[0]["Cancel-After"] == "0.2s"
            for bad in ("soon", "0.01s"):
                r = create(client, **{"Cancel-After": bad})
                assert r.status_code == 422 and "Cancel-After" in r.json()["detail"]
    assert parse_cancel_after("1h30m45s") == 5445 and parse_cancel_after("5m") == 300
    assert parse_cancel_after("90") == 90 and parse_cancel_after("1.5s") == 1.5
    assert parse_cancel_after("ten") is None and parse_cancel_after("") is None


def test_cancel(rep: FakeReplicate, client: httpx.Client) -> None:
    pred = create(client).json()
    r = client.post(pred["urls"]["cancel"], headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    done = create(client, {"prompt": "b"}).json()
    assert until_terminal(client, done)["status"] == "succeeded"
    assert client.post(done["urls"]["cancel"], headers=AUTH).json()["status"] == "succeeded"
    assert client.post("/v1/predictions/nope/cancel", headers=AUTH).status_code == 404
    assert rep.stats.cancels == 2 and rep.billed.keys() == {done["id"]}


def test_list_is_newest_first_paged_and_filtered_by_creation_time() -> None:
    with FakeReplicate(token=TOKEN, page_size=2) as rep, httpx.Client(base_url=rep.url) as client:
        t0 = time.time()
        old = rep.inject(VEO, {"prompt": "old"}, created=t0 - 3600)
        ids = [create(client, {"prompt": f"p{i}"}).json()["id"] for i in range(5)]
        web = rep.inject(KLING, {"prompt": "web"}, source="web")
        first = client.get("/v1/predictions", params={"created_after": _iso(t0 - 1)}, headers=AUTH).json()
        assert len(first["results"]) == 2 and first["next"] and first["previous"] is None
        assert "created_after" in first["next"] and "cursor=" in first["next"]
        listed, url = [], "/v1/predictions"
        params: dict[str, str] | None = {"created_after": _iso(t0 - 1)}
        while url:
            page = client.get(url, params=params, headers=AUTH).json()
            listed += [p["id"] for p in page["results"]]
            url, params = page["next"], None
        assert listed == [web.id, *reversed(ids)] and old.id not in listed
        every = _all(client, {})
        assert old.id in every and len(every) == 7
        assert _all(client, {"source": "web"}) == [web.id]
        assert old.id in _all(client, {"created_before": _iso(t0 - 1)})
        inclusive = _all(client, {"created_after": _iso(old.created)})
        assert old.id in inclusive  # created_after is inclusive
        row = client.get("/v1/predictions", headers=AUTH).json()["results"][0]
        assert row["input"] == {"prompt": "web"} and row["model"] == KLING
        assert (
            client.get("/v1/predictions", params={"created_after": "yesterday"}, headers=AUTH).status_code
            == 400
        )
        assert rep.stats.creates == 5  # injected ones were never created through the API


def test_list_lag_hides_new_predictions() -> None:
    with FakeReplicate(token=TOKEN, list_lag_s=0.3) as rep, httpx.Client(base_url=rep.url) as client:
        pid = create(client).json()["id"]
        assert _all(client, {}) == []
        time.sleep(0.35)
        assert _all(client, {}) == [pid]


def test_files_api_multipart_upload(rep: FakeReplicate, client: httpx.Client) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10
    r = client.post(
        "/v1/files",
        files={"content": ("frame.png", data, "image/png")},
        data={"filename": "frame.png", "type": "image/png", "metadata": json.dumps({"shot": "s1"})},
        headers=AUTH,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert (
        body["size"] == len(data)
        and body["content_type"] == "image/png"
        and body["metadata"] == {"shot": "s1"}
    )
    assert body["urls"]["get"] == f"{rep.url}/v1/files/{body['id']}" and body["expires_at"]
    assert body["checksums"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert client.get(body["urls"]["get"], headers=AUTH).json()["id"] == body["id"]
    assert client.get(body["urls"]["get"] + "/download", headers=AUTH).content == data
    assert client.get(body["urls"]["get"]).status_code == 401
    assert rep.stats.files == 1 and rep.stats.files_by_hash[hashlib.sha256(data).hexdigest()] == 1
    used = create(client, {"prompt": "x", "image": body["urls"]["get"]}).json()
    assert until_terminal(client, used)["status"] == "succeeded"
    gone = create(client, {"prompt": "x", "image": f"{rep.url}/v1/files/nosuchfile"}).json()
    failed = until_terminal(client, gone)
    assert failed["status"] == "failed" and "Could not download input file" in failed["error"]
    assert client.post("/v1/files", data={"filename": "x"}, headers=AUTH).status_code == 400


def test_files_over_the_limit_are_413() -> None:
    with FakeReplicate(token=TOKEN, max_file_bytes=1000) as rep, httpx.Client(base_url=rep.url) as client:
        r = client.post("/v1/files", files={"content": ("big.bin", b"0" * 5000)}, headers=AUTH)
        assert r.status_code == 413 and r.json()["detail"] == "Files must be less than 100MB in size"
        assert rep.stats.files == 0


def test_data_urls_are_accepted_as_inputs(client: httpx.Client) -> None:
    image = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    pred = create(client, {"prompt": "x", "image": image}).json()
    assert pred["input"]["image"] == image and until_terminal(client, pred)["status"] == "succeeded"


def test_outputs_and_inputs_are_removed_after_the_data_ttl() -> None:
    with (
        FakeReplicate(token=TOKEN, latency_s=0.1, data_ttl_s=0.5) as rep,
        httpx.Client(base_url=rep.url) as client,
    ):
        pred = until_terminal(client, create(client).json())
        assert pred["output"] and client.get(pred["output"]).status_code == 200
        time.sleep(0.55)
        later = client.get(pred["urls"]["get"], headers=AUTH).json()
        assert later["data_removed"] is True and later["output"] is None and later["input"] == {}
        assert later["status"] == "succeeded" and client.get(pred["output"]).status_code == 404


def test_prefer_wait_holds_the_answer_until_done(client: httpx.Client) -> None:
    r = create(client, **{"Prefer": "wait=5"})
    assert r.status_code == 201 and r.json()["status"] == "succeeded"
    assert r.headers["Preference-Applied"] == "wait"


@pytest.mark.parametrize(("shape", "expect"), [("list", list), ("dict", dict), ("str", str)])
def test_output_shapes(shape: str, expect: type) -> None:
    with (
        FakeReplicate(token=TOKEN, latency_s=0.05, output_shape=shape) as rep,
        httpx.Client(base_url=rep.url) as c,
    ):
        assert isinstance(until_terminal(c, create(c).json())["output"], expect)


# ---------------------------------------------------------------- faults and accounting


def test_a_create_that_succeeds_then_loses_its_answer() -> None:
    with FakeReplicate(token=TOKEN, faults=[ReplicateFault("reset_after", on="create")]) as rep:
        with httpx.Client(base_url=rep.url) as client:
            with pytest.raises(httpx.TransportError):
                create(client, {"prompt": "lost"})
            assert rep.stats.creates == 1 and rep.stats.calls["create"] == 1
            [row] = client.get("/v1/predictions", headers=AUTH).json()["results"]
            assert row["input"] == {"prompt": "lost"}


def test_duplicate_creates_are_counted(rep: FakeReplicate, client: httpx.Client) -> None:
    create(client, {"prompt": "same"})
    create(client, {"prompt": "same"})
    create(client, {"prompt": "other"})
    vid = rep.models[VEO]["latest_version"]["id"]
    assert rep.stats.creates == 3 and rep.stats.duplicate_creates == 1
    assert rep.stats.creates_by_input[input_hash(VEO, vid, {"prompt": "same"})] == 2


def test_5xx_slow_and_reset_faults() -> None:
    faults = [
        ReplicateFault("503", on="get"),
        ReplicateFault("500", on="get"),
        ReplicateFault("slow", on="account", seconds=0.3),
        ReplicateFault("reset", on="model"),
    ]
    with FakeReplicate(token=TOKEN, faults=faults) as rep, httpx.Client(base_url=rep.url) as client:
        pred = create(client).json()
        edge = client.get(pred["urls"]["get"], headers=AUTH)
        assert edge.status_code == 503 and edge.headers["content-type"] == "text/html"
        api = client.get(pred["urls"]["get"], headers=AUTH)
        assert api.status_code == 500 and api.json()["title"] == "Internal Server Error"
        assert client.get(pred["urls"]["get"], headers=AUTH).status_code == 200
        started = time.monotonic()
        assert (
            client.get("/v1/account", headers=AUTH).status_code == 200 and time.monotonic() - started >= 0.3
        )
        with pytest.raises(httpx.TransportError):
            client.get(f"/v1/models/{VEO}", headers=AUTH)
        assert rep.stats.faults_fired == {"get:503": 1, "get:500": 1, "account:slow": 1, "model:reset": 1}


def test_a_failing_model_and_a_truncated_download() -> None:
    faults = [
        ReplicateFault("fail", on="create", match='"doomed"', message="NSFW content detected"),
        ReplicateFault("truncate", on="download"),
    ]
    with (
        FakeReplicate(token=TOKEN, latency_s=0.1, faults=faults) as rep,
        httpx.Client(base_url=rep.url) as client,
    ):
        failed = until_terminal(client, create(client, {"prompt": "doomed"}).json())
        assert failed["status"] == "failed" and failed["error"] == "NSFW content detected"
        assert failed["output"] is None and "NSFW content detected" in failed["logs"]
        ok = until_terminal(client, create(client, {"prompt": "fine"}).json())
        with pytest.raises(httpx.TransportError):
            client.get(ok["output"]).read()
        assert client.get(ok["output"]).status_code == 200
        assert rep.billed.keys() == {ok["id"]}


def test_fault_kinds_and_targets_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        ReplicateFault("teapot")
    with pytest.raises(ValueError, match="unknown fault target"):
        ReplicateFault("429", on="submit")


# ---------------------------------------------------------------- helpers


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _all(client: httpx.Client, params: dict[str, Any]) -> list[str]:
    out, url, query = [], "/v1/predictions", dict(params)
    while url:
        page = client.get(url, params=query or None, headers=AUTH).json()
        out += [p["id"] for p in page["results"]]
        url, query = page["next"], {}
    return out
