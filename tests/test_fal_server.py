"""The fake fal server speaks fal's queue protocol, over real sockets."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from aivp_batch.snapshot import SNAPSHOT_DIR
from aivp_batch.testing.fal_server import FakeFal, Fault, FaultPlan, parse_duration, payload_hash

SCHEMAS = SNAPSHOT_DIR
KEY = {"Authorization": "Key test-key"}
T2V = "fal-ai/kling-video/v3/pro/text-to-video"


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal(latency_s=0.3, keepalive_s=0.05) as server:
        yield server


@pytest.fixture
def client(fal: FakeFal) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fal.url, timeout=10) as c:
        yield c


def submit(client: httpx.Client, payload: dict | None = None, endpoint: str = T2V) -> dict:
    r = client.post(f"/{endpoint}", json=payload or {"prompt": "a fox"}, headers=KEY)
    assert r.status_code == 200, r.text
    return r.json()


def wait_done(client: httpx.Client, sub: dict) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r = client.get(sub["status_url"], headers=KEY)
        if r.status_code == 200:
            return r.json()
        time.sleep(0.02)
    raise AssertionError("never completed")


def test_submit_returns_app_only_urls_from_the_request_host(fal: FakeFal, client: httpx.Client) -> None:
    r = client.post(f"/{T2V}", json={"prompt": "x"}, headers={**KEY, "X-Fal-Request-Timeout": "30"})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "IN_QUEUE"
    rid = body["request_id"]
    app_url = f"{fal.url}/fal-ai/kling-video/requests/{rid}"
    assert body["response_url"] == app_url
    assert body["status_url"] == f"{app_url}/status"
    assert body["cancel_url"] == f"{app_url}/cancel"
    assert isinstance(body["queue_position"], int)
    assert fal.jobs[rid].headers["X-Fal-Request-Timeout"] == "30"
    assert fal.stats.calls["submit"] == 1
    assert fal.stats.submits_by_payload[payload_hash({"prompt": "x"})] == 1


def test_workflows_ids_keep_three_segments(client: httpx.Client) -> None:
    body = submit(client, endpoint="workflows/me/my-flow/run")
    assert f"/workflows/me/my-flow/requests/{body['request_id']}" in body["status_url"]


def test_status_goes_202_then_200_with_logs_and_metrics(client: httpx.Client) -> None:
    sub = submit(client)
    first = client.get(sub["status_url"], params={"logs": "0"}, headers=KEY)
    assert first.status_code == 202 and first.json()["status"] in ("IN_QUEUE", "IN_PROGRESS")
    assert "logs" in first.json() and first.json()["logs"] is None
    done = wait_done(client, sub)
    assert done["status"] == "COMPLETED" and done["metrics"]["inference_time"] > 0
    for spelling in ("1", "true"):
        logs = client.get(sub["status_url"], params={"logs": spelling}, headers=KEY).json()["logs"]
        assert [entry["message"] for entry in logs][-1] == "Generation complete"
        assert {"message", "level", "source", "timestamp"} <= set(logs[0])
    assert client.get(sub["status_url"], params={"logs": "false"}, headers=KEY).json()["logs"] is None


def test_queue_position_decreases_then_runs(fal: FakeFal, client: httpx.Client) -> None:
    fal.latency_s = 0.6
    sub = submit(client)
    seen = []
    while (body := client.get(sub["status_url"], headers=KEY).json())["status"] != "COMPLETED":
        seen.append((body["status"], body.get("queue_position")))
        time.sleep(0.03)
    queued = [p for s, p in seen if s == "IN_QUEUE"]
    assert queued == sorted(queued, reverse=True) and len(set(queued)) > 1
    assert ("IN_PROGRESS", None) in seen


def test_unknown_id_is_404_and_sub_path_is_405(client: httpx.Client) -> None:
    r = client.get("/fal-ai/kling-video/requests/bogus/status", headers=KEY)
    assert r.status_code == 404 and r.json() == {"status": "NOT_FOUND"}
    sub = submit(client)
    r = client.get(f"/{T2V}/requests/{sub['request_id']}/status", headers=KEY)
    assert r.status_code == 405


def test_auth_401_without_key_403_with_wrong_key(client: httpx.Client) -> None:
    r = client.post(f"/{T2V}", json={})
    assert r.status_code == 401 and "detail" in r.json()
    r = client.post(f"/{T2V}", json={}, headers={"Authorization": "Key wrong"})
    assert r.status_code == 403
    assert client.post("/storage/auth/token", headers={"Authorization": "Bearer x"}).status_code == 403


def test_sse_stream_sends_each_state_keepalives_and_closes(client: httpx.Client) -> None:
    sub = submit(client)
    events, comments = [], 0
    with client.stream("GET", sub["status_url"] + "/stream", params={"logs": 1}, headers=KEY) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            elif line.startswith(":"):
                comments += 1
    states = [e["status"] for e in events]
    assert states[-1] == "COMPLETED" and "IN_PROGRESS" in states and states[0] == "IN_QUEUE"
    assert comments >= 1  # keepalive_s=0.05
    messages = [log["message"] for e in events for log in e["logs"]]
    assert messages == ["Starting generation", "Generating: 50%", "Generation complete"]  # only new lines


def test_result_before_and_after_completion(client: httpx.Client) -> None:
    sub = submit(client, {"prompt": "x", "seed": 42, "duration": "2s"})
    assert client.get(sub["response_url"], headers=KEY).status_code == 400
    wait_done(client, sub)
    for url in (sub["response_url"], sub["response_url"] + "/response"):
        r = client.get(url, headers=KEY)
        assert r.status_code == 200 and r.headers["x-fal-request-id"] == sub["request_id"]
        out = r.json()
        assert out["seed"] == 42 and out["video"]["content_type"] == "video/mp4"
    video = client.get(out["video"]["url"])
    assert video.status_code == 200 and int(video.headers["content-length"]) == out["video"]["file_size"]


def test_video_duration_follows_the_payload_and_decodes(client: httpx.Client, tmp_path: Path) -> None:
    assert [parse_duration(v) for v in ("5", "8s", 5, 6.5, None, "junk")] == [5, 8, 5, 6.5, 5, 5]
    sub = submit(client, {"prompt": "x", "duration": "2s"})
    wait_done(client, sub)
    url = client.get(sub["response_url"], headers=KEY).json()["video"]["url"]
    path = tmp_path / "clip.mp4"
    path.write_bytes(client.get(url).content)
    with av.open(str(path)) as container:
        assert abs(container.duration / 1e6 - 2.0) < 0.1
        assert {s.type for s in container.streams} == {"video", "audio"}
        assert sum(1 for _ in container.decode(video=0)) == 48


def test_padded_video_has_the_asked_size_and_still_decodes(tmp_path: Path) -> None:
    with FakeFal(latency_s=0.05, video_size_bytes=3_000_000) as fal, httpx.Client(base_url=fal.url) as c:
        sub = submit(c, {"prompt": "x", "duration": 2})
        wait_done(c, sub)
        out = c.get(sub["response_url"], headers=KEY).json()
        path = tmp_path / "big.mp4"
        with c.stream("GET", out["video"]["url"]) as r, path.open("wb") as f:
            for chunk in r.iter_bytes():
                f.write(chunk)
    assert path.stat().st_size == 3_000_000 == out["video"]["file_size"]
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 48


def test_cancel_requested_then_completed_with_error(fal: FakeFal, client: httpx.Client) -> None:
    fal.latency_s = 5
    sub = submit(client)
    r = client.put(sub["cancel_url"], headers=KEY)
    assert r.status_code == 202 and r.json() == {"status": "CANCELLATION_REQUESTED"}
    status = client.get(sub["status_url"], headers=KEY)
    assert status.status_code == 200 and status.json()["status"] == "COMPLETED"
    assert status.json()["error_type"] == "client_cancelled"
    assert client.get(sub["response_url"], headers=KEY).status_code == 499
    r = client.put(sub["cancel_url"], headers=KEY)
    assert r.status_code == 400 and r.json() == {"status": "ALREADY_COMPLETED"}
    assert client.put("/fal-ai/kling-video/requests/nope/cancel", headers=KEY).status_code == 404


def test_storage_token_and_upload(fal: FakeFal, client: httpx.Client) -> None:
    token = client.post(
        "/storage/auth/token", params={"storage_type": "fal-cdn-v3"}, json={}, headers=KEY
    ).json()
    assert token["token_type"] == "Bearer" and token["base_url"] == fal.url and "expires_at" in token
    data = b"\x89PNG fake image bytes"
    bad = client.post("/files/upload", content=data, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    r = client.post(
        "/files/upload",
        content=data,
        headers={
            "Authorization": f"Bearer {token['token']}",
            "Content-Type": "image/png",
            "X-Fal-File-Name": "ff.png",
        },
    )
    url = r.json()["access_url"]
    digest = hashlib.sha256(data).hexdigest()
    assert url == f"{fal.url}/files/up/{digest}.png"
    assert client.get(url).content == data
    assert fal.stats.uploads_by_hash[digest] == 1 and fal.stats.calls["upload"] == 2


def test_schema_endpoint_serves_the_bundled_snapshot_without_auth(client: httpx.Client) -> None:
    r = client.get("/api/openapi/queue/openapi.json", params={"endpoint_id": T2V})
    assert r.status_code == 200
    assert r.json() == json.loads((SCHEMAS / f"{T2V.replace('/', '__')}.json").read_text())
    assert client.get("/api/openapi/queue/openapi.json", params={"endpoint_id": "no/such"}).status_code == 404
    assert client.get("/api/openapi/queue/openapi.json", params={"endpoint_id": "../x"}).status_code == 404


def test_models_search(client: httpx.Client) -> None:
    found = client.get("/v1/models", params={"endpoint_id": T2V, "expand": "openapi-3.0"}).json()
    assert [m["endpoint_id"] for m in found["models"]] == [T2V]
    assert found["models"][0]["openapi"]["info"]["x-fal-metadata"]["endpointId"] == T2V
    assert found["has_more"] is False and found["next_cursor"] is None
    veo = client.get("/v1/models", params={"q": "veo", "category": "image-to-video"}).json()["models"]
    assert veo and all(
        "veo" in m["endpoint_id"] and m["metadata"]["category"] == "image-to-video" for m in veo
    )
    assert all("openapi" not in m for m in veo)
    page = client.get("/v1/models", params={"limit": 5}).json()
    assert len(page["models"]) == 5 and page["has_more"]
    rest = client.get("/v1/models", params={"limit": 50, "cursor": page["next_cursor"]}).json()
    assert len(page["models"]) + len(rest["models"]) == 32


def test_fault_rules_fire_by_after_every_and_times(fal: FakeFal, client: httpx.Client) -> None:
    rule = fal.faults.add(Fault("429", on="status", after=1, every=2, times=2, retry_after=3))
    sub = submit(client)
    codes = [client.get(sub["status_url"], headers=KEY).status_code for _ in range(7)]
    assert [c == 429 for c in codes] == [False, False, True, False, True, False, False]
    assert rule.fired == 2 and fal.stats.faults_fired["status:429"] == 2


def test_ingress_and_timeout_faults_look_like_fal(fal: FakeFal, client: httpx.Client) -> None:
    fal.faults.add(Fault("ingress_503", on="status"))
    fal.faults.add(Fault("timeout_504", on="result"))
    sub = submit(client)
    r = client.get(sub["status_url"], headers=KEY)
    assert r.status_code == 503 and "nginx" in r.text and "x-fal-request-id" not in r.headers
    r = client.get(sub["response_url"], headers=KEY)
    assert r.status_code == 504 and r.headers["X-Fal-Request-Timeout-Type"] == "user"


def test_reset_after_submit_creates_the_job_but_loses_the_answer(client: httpx.Client) -> None:
    plan = FaultPlan([Fault("reset_after", on="submit")])
    with FakeFal(faults=plan) as fal, httpx.Client(base_url=fal.url) as c:
        with pytest.raises(httpx.TransportError):
            c.post(f"/{T2V}", json={"prompt": "x"}, headers=KEY)
        assert len(fal.jobs) == 1 and fal.stats.calls["submit"] == 1
    plan = FaultPlan([Fault("reset_before", on="submit")])
    with FakeFal(faults=plan) as fal, httpx.Client(base_url=fal.url) as c:
        with pytest.raises(httpx.TransportError):
            c.post(f"/{T2V}", json={"prompt": "x"}, headers=KEY)
        assert len(fal.jobs) == 0 and fal.stats.calls["submit"] == 1


def test_fail_generation_completes_with_error_then_422(fal: FakeFal, client: httpx.Client) -> None:
    fal.faults.add(Fault("fail_generation", on="submit", match="forbidden"))
    ok = submit(client, {"prompt": "fine"})
    bad = submit(client, {"prompt": "forbidden"})
    assert wait_done(client, bad)["error_type"] == "content_policy_violation"
    r = client.get(bad["response_url"], headers=KEY)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "prompt"]
    wait_done(client, ok)
    assert client.get(ok["response_url"], headers=KEY).status_code == 200


def test_unknown_fault_kind_is_rejected() -> None:
    with pytest.raises(ValueError):
        Fault("explode")
    assert Fault("503", on="result").kind == "ingress_503"


# --------------------------------------------------------------------------- platform APIs

HISTORY = "/v1/models/requests/by-endpoint"


def history(client: httpx.Client, **params: object) -> httpx.Response:
    return client.get(HISTORY, params={"endpoint_id": T2V, **params}, headers=KEY)


def rows(client: httpx.Client, **params: object) -> list[dict]:
    r = history(client, **params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError("condition never held")


def test_history_needs_a_key_and_valid_params(fal: FakeFal, client: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Key wrong"}, {"Authorization": "Bearer test-key"}):
        r = client.get(HISTORY, params={"endpoint_id": T2V}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authorization_error"
        assert r.json()["error"]["message"]
    for params in (
        {},
        {"endpoint_id": ""},
        {"endpoint_id": ",".join(f"a/b{i}" for i in range(51))},
        {"endpoint_id": T2V, "status": "queued"},
        {"endpoint_id": T2V, "limit": 0},
        {"endpoint_id": T2V, "limit": 101},
        {"endpoint_id": T2V, "start": "yesterday"},
        {"endpoint_id": T2V, "cursor": "not base64!"},
        {"endpoint_id": T2V, "request_id": "nope"},
    ):
        r = client.get(HISTORY, params=params, headers=KEY)
        assert r.status_code == 400 and r.json()["error"]["type"] == "validation_error", params
    r = history(client)
    assert r.status_code == 200 and r.json() == {"items": [], "next_cursor": None, "has_more": False}
    assert fal.stats.calls["history"] == 13


def test_history_lists_a_request_only_once_started_plus_lag() -> None:
    with (
        FakeFal(latency_s=2.0, queue_fraction=0.25, history_lag_s=0.5) as fal,
        httpx.Client(base_url=fal.url, timeout=10) as c,
    ):
        t_before = time.monotonic()
        sub = submit(c)
        assert rows(c) == []  # queued: no row
        wait_for(lambda: c.get(sub["status_url"], headers=KEY).json()["status"] == "IN_PROGRESS")
        assert rows(c) == []  # started, but within the listing lag
        [row] = wait_for(lambda: rows(c))
        assert time.monotonic() - t_before >= 0.5 + 0.5  # start (queue 0.5 s) + lag 0.5 s
        assert row["request_id"] == sub["request_id"] and row["endpoint_id"] == T2V
        assert row["ended_at"] is None and row["status_code"] is None and row["duration"] is None
        assert "json_input" not in row and "json_output" not in row
        sent, started = (datetime.fromisoformat(row[k]) for k in ("sent_at", "started_at"))
        assert row["sent_at"].endswith("Z") and sent.tzinfo is not None
        assert 0.45 < (started - sent).total_seconds() < 0.55
        wait_done(c, sub)
        [row] = rows(c)
        assert row["status_code"] == 200 and row["ended_at"].endswith("Z")
        assert abs(row["duration"] - 2.0) < 0.05
        assert rows(c, status="success") == [row]
        assert rows(c, status="error") == rows(c, status="user_error") == []
        assert rows(c, request_id=sub["request_id"]) == [row]
        assert rows(c, endpoint_id=f"other/app,{T2V}") == [row]
        assert rows(c, endpoint_id="fal-ai/kling-video") == []  # exact endpoint ids only


def test_history_payloads_are_exactly_what_was_posted(fal: FakeFal, client: httpx.Client) -> None:
    payload = {
        "prompt": "a fox ✓ «quoted»",
        "duration": "5",
        "seed": 7,
        "cfg": 0.5,
        "strength": 1.0,
        "flags": [True, None, 0],
        "nested": {"b": [1, 2], "a": {}},
    }
    fal.latency_s = 1.0
    sub = submit(client, payload)
    [row] = wait_for(lambda: rows(client, expand="payloads"))
    assert row["json_input"] == payload and row["json_output"] is None
    assert type(row["json_input"]["strength"]) is float and type(row["json_input"]["seed"]) is int
    wait_done(client, sub)
    [row] = rows(client, expand="payloads")
    result = client.get(sub["response_url"], headers=KEY).json()
    assert row["json_input"] == payload and row["json_output"] == result


def test_history_pages_with_limit_and_cursor(fal: FakeFal, client: httpx.Client) -> None:
    subs = [submit(client, {"prompt": f"shot {i}"}) for i in range(3)]
    for sub in subs:
        wait_done(client, sub)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        body = history(client, **params).json()
        pages += 1
        assert len(body["items"]) == 1
        seen += [item["request_id"] for item in body["items"]]
        if pages == 1:
            assert body["next_cursor"] == "Mg=="  # base64("2"): the page number
        if not body["has_more"]:
            assert body["next_cursor"] is None
            break
        cursor = body["next_cursor"]
    assert pages == 3 and seen == [s["request_id"] for s in reversed(subs)]  # newest sent_at first
    everything = history(client, limit=100).json()
    assert [i["request_id"] for i in everything["items"]] == seen and everything["has_more"] is False


def test_history_window_filters_on_sent_at(fal: FakeFal, client: httpx.Client) -> None:
    now = datetime.now(UTC)
    old = fal.inject_history(T2V, {"prompt": "old"}, sent_at=now - timedelta(days=3))
    recent = fal.inject_history(T2V, {"prompt": "recent"}, sent_at=now - timedelta(hours=2))
    fresh = fal.inject_history(T2V, {"prompt": "fresh"})

    def ids(**params: object) -> list[str]:
        return [row["request_id"] for row in rows(client, **params)]

    assert ids() == [fresh.id, recent.id]  # default window: the last 24 h
    four_days_ago = (now - timedelta(days=4)).date().isoformat()
    assert ids(start=four_days_ago) == [fresh.id, recent.id, old.id]
    [recent_row] = rows(client, request_id=recent.id)
    sent = recent_row["sent_at"]
    assert ids(start=four_days_ago, end=sent) == [old.id]  # end is exclusive
    assert ids(start=sent) == [fresh.id, recent.id]  # start is inclusive
    assert ids(start=sent, end=(now - timedelta(hours=1)).isoformat()) == [recent.id]
    assert ids(request_id=old.id) == [old.id]  # with request_id the default start is 90 days back
    assert ids(start=(now + timedelta(days=1)).date().isoformat()) == []


def test_reset_after_submit_is_listed_and_billed_reset_before_never_existed() -> None:
    payload = {"prompt": "lost answer", "duration": 8}
    plan = FaultPlan([Fault("reset_after", on="submit")])
    with FakeFal(latency_s=0.3, faults=plan) as fal, httpx.Client(base_url=fal.url) as c:
        with pytest.raises(httpx.TransportError):
            c.post(f"/{T2V}", json=payload, headers=KEY)
        [row] = wait_for(lambda: rows(c, expand="payloads"))
        assert row["json_input"] == payload
        rid = row["request_id"]
        wait_for(lambda: rows(c)[0]["status_code"] == 200)
        assert fal.stats.billed == {rid: 8.0} and fal.stats.billed_requests == 1
        assert fal.jobs[rid].result_calls == 0  # billed although nobody fetched the result
        r = c.get(f"/fal-ai/kling-video/requests/{rid}", headers=KEY)  # re-attach by request id
        assert r.status_code == 200 and r.headers["x-fal-billable-units"] == "8"
    plan = FaultPlan([Fault("reset_before", on="submit")])
    with FakeFal(latency_s=0.1, faults=plan) as fal, httpx.Client(base_url=fal.url) as c:
        with pytest.raises(httpx.TransportError):
            c.post(f"/{T2V}", json=payload, headers=KEY)
        time.sleep(0.3)
        assert rows(c) == [] and fal.stats.billed == {} and not fal.jobs


def test_start_timeout_drops_the_job_unbilled_and_unlisted() -> None:
    with FakeFal(latency_s=1.0, queue_fraction=0.8) as fal, httpx.Client(base_url=fal.url, timeout=10) as c:
        r = c.post(f"/{T2V}", json={"prompt": "slow queue"}, headers={**KEY, "X-Fal-Request-Timeout": "0.3"})
        dropped = r.json()
        ok = c.post(
            f"/{T2V}", json={"prompt": "patient"}, headers={**KEY, "X-Fal-Request-Timeout": "5"}
        ).json()
        t0 = time.monotonic()
        status = wait_done(c, dropped)
        assert time.monotonic() - t0 < 0.6  # ended at its deadline, not at the 1 s completion
        assert status["status"] == "COMPLETED" and status["error_type"] == "request_timeout"
        r = c.get(dropped["response_url"], headers=KEY)
        assert r.status_code == 504 and r.headers["X-Fal-Request-Timeout-Type"] == "user"
        assert r.json()["detail"] == "Request timed out before it started"
        assert r.headers["x-fal-billable-units"] == "0"
        logs = c.get(dropped["status_url"], params={"logs": 1}, headers=KEY).json()["logs"]
        assert "Starting generation" not in [log["message"] for log in logs]
        wait_done(c, ok)
        assert c.get(ok["response_url"], headers=KEY).status_code == 200
        assert [row["request_id"] for row in rows(c)] == [ok["request_id"]]
        assert set(fal.stats.billed) == {ok["request_id"]}
        for bad in ("0.05", "soon", "nan"):
            r = c.post(f"/{T2V}", json={}, headers={**KEY, "X-Fal-Request-Timeout": bad})
            assert r.status_code == 400 and r.json()["error_type"] == "bad_request"
        assert len(fal.jobs) == 2


def test_inject_history_gives_identical_rows(fal: FakeFal, client: httpx.Client) -> None:
    payload = {"prompt": "retake", "seed": 1}
    sent = datetime.now(UTC) - timedelta(minutes=3)
    a = fal.inject_history(T2V, payload, sent_at=sent)
    b = fal.inject_history(T2V, payload, sent_at=sent)
    found = rows(client, expand="payloads")
    assert {row["request_id"] for row in found} == {a.id, b.id}
    strip = [{k: v for k, v in row.items() if k not in ("request_id", "json_output")} for row in found]
    assert strip[0] == strip[1] and strip[0]["json_input"] == payload
    assert datetime.fromisoformat(found[0]["sent_at"]) == sent
    assert all(row["status_code"] == 200 and row["json_output"]["video"] for row in found)
    assert set(fal.stats.billed) == {a.id, b.id}
    assert fal.stats.calls["submit"] == 0 and fal.stats.duplicate_submits == 0
    status = client.get(f"/fal-ai/kling-video/requests/{a.id}/status", headers=KEY).json()
    assert status["status"] == "COMPLETED"


def test_history_429_uses_the_platform_error_shape(fal: FakeFal, client: httpx.Client) -> None:
    fal.faults.add(Fault("429", on="history", retry_after=2))
    r = history(client)
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limited"
    assert r.headers["Retry-After"] == "2" and history(client).status_code == 200


def test_pricing_returns_configured_prices_and_checks_the_key() -> None:
    prices = {T2V: (0.112, "seconds"), "fal-ai/flux/dev": (0.025, "images")}
    with FakeFal(prices=prices) as fal, httpx.Client(base_url=fal.url) as c:
        r = c.get("/v1/models/pricing", params={"endpoint_id": f"{T2V},no/such"}, headers=KEY)
        assert r.status_code == 200
        assert r.json() == {
            "prices": [{"endpoint_id": T2V, "unit_price": 0.112, "unit": "seconds", "currency": "USD"}],
            "next_cursor": None,
            "has_more": False,
        }
        both = c.get("/v1/models/pricing", params=[("endpoint_id", T2V), ("endpoint_id", "fal-ai/flux/dev")])
        assert both.status_code == 401 and both.json()["error"]["type"] == "authorization_error"
        both = c.get(
            "/v1/models/pricing",
            params=[("endpoint_id", T2V), ("endpoint_id", "fal-ai/flux/dev")],
            headers=KEY,
        )
        assert [p["endpoint_id"] for p in both.json()["prices"]] == [T2V, "fal-ai/flux/dev"]
        wrong = c.get("/v1/models/pricing", params={"endpoint_id": T2V}, headers={"Authorization": "Key no"})
        assert wrong.status_code == 401
        many = ",".join(f"a/b{i}" for i in range(51))
        assert c.get("/v1/models/pricing", params={"endpoint_id": many}, headers=KEY).status_code == 400
        assert c.get("/v1/models/pricing", headers=KEY).json()["error"]["type"] == "validation_error"
        assert fal.stats.calls["pricing"] == 6
    with FakeFal() as fal, httpx.Client(base_url=fal.url) as c:  # no prices: still a key check
        r = c.get("/v1/models/pricing", params={"endpoint_id": "fal-ai/flux/dev"}, headers=KEY)
        assert r.status_code == 200 and r.json()["prices"] == []
        r = c.post("/v1/models/pricing/estimate", json={}, headers=KEY)  # not an app submit
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found" and not fal.jobs


def test_result_carries_billable_units_and_failures_bill_zero(fal: FakeFal, client: httpx.Client) -> None:
    fal.faults.add(Fault("fail_generation", on="submit", match="forbidden"))
    eight = submit(client, {"prompt": "x", "duration": "8s"})
    default = submit(client, {"prompt": "y"})
    bad = submit(client, {"prompt": "forbidden", "duration": 8})
    fal.latency_s = 5
    cancelled = submit(client, {"prompt": "z"})
    assert client.put(cancelled["cancel_url"], headers=KEY).status_code == 202
    for sub in (eight, default, bad):
        wait_done(client, sub)
    assert fal.stats.billed == {eight["request_id"]: 8.0, default["request_id"]: 5.0}
    assert fal.stats.billed_requests == 2 and fal.stats.billed_units == 13.0
    assert client.get(eight["response_url"], headers=KEY).headers["x-fal-billable-units"] == "8"
    assert client.get(default["response_url"], headers=KEY).headers["x-fal-billable-units"] == "5"
    for sub, code in ((bad, 422), (cancelled, 499)):
        r = client.get(sub["response_url"], headers=KEY)
        assert r.status_code == code and r.headers["x-fal-billable-units"] == "0"


def test_billable_units_hook() -> None:
    def units(payload: dict) -> float | None:
        return None if payload.get("prompt") == "unmetered" else 3.008

    with FakeFal(latency_s=0.05, billable_units=units) as fal, httpx.Client(base_url=fal.url) as c:
        metered, unmetered = submit(c, {"prompt": "a"}), submit(c, {"prompt": "unmetered"})
        wait_done(c, metered)
        wait_done(c, unmetered)
        assert c.get(metered["response_url"], headers=KEY).headers["x-fal-billable-units"] == "3.008"
        r = c.get(unmetered["response_url"], headers=KEY)
        assert r.status_code == 200 and "x-fal-billable-units" not in r.headers
    assert fal.stats.billed == {metered["request_id"]: 3.008, unmetered["request_id"]: None}
    assert fal.stats.billed_units == 3.008
