"""FalProvider against FakeFal over real loopback sockets: the happy path and every fault kind."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import av
import httpx
import pytest
from hydra.utils import instantiate

from aivp_batch.errors import AuthError, RequestFailed, SubmitNotAccepted, TransientError
from aivp_batch.media import sha256_file
from aivp_batch.providers.base import StatusUpdate, Submission
from aivp_batch.providers.fal import FalProvider, app_id, failure_message
from aivp_batch.retry import RetryPolicy
from aivp_batch.testing.fal_server import FakeFal, Fault, FaultPlan

T2V = "fal-ai/kling-video/v3/pro/text-to-video"
FAST = RetryPolicy(attempts=5, base_s=0.01, max_s=0.05)
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def make(fal: FakeFal, key: str | None = "test-key", **kw: Any) -> FalProvider:
    kw.setdefault("retry", FAST)
    kw.setdefault("poll_interval", 0.02)
    return FalProvider(key, queue_url=fal.url, rest_url=fal.url, cdn_url=fal.url, api_url=fal.url, **kw)


def faulty(*faults: Fault, latency_s: float = 0.1, **kw: Any) -> FakeFal:
    return FakeFal(latency_s=latency_s, faults=FaultPlan(faults), **kw)


async def generate(provider: FalProvider, payload: dict | None = None, on_status: Any = None):
    sub = await provider.submit(T2V, payload or {"prompt": "a fox", "duration": "2"})
    return sub, await provider.wait(sub, on_status)


def decoded_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        frames = sum(1 for _ in container.decode(video=0))
        return frames / float(container.streams.video[0].average_rate)


# ---------------------------------------------------------------- happy paths


@pytest.mark.parametrize("use_stream", [True, False])
def test_submit_wait_download_gives_a_decodable_clip(tmp_path: Path, use_stream: bool) -> None:
    updates: list[StatusUpdate] = []

    async def main(fal: FakeFal):
        async with make(fal, use_stream=use_stream, start_timeout=30) as p:
            sub, outcome = await generate(p, {"prompt": "a fox", "duration": "2s", "seed": 7}, updates.append)
            size = (await p.download(outcome.video_url, tmp_path / "clip.mp4.part")).size
            return sub, outcome, size

    with FakeFal(latency_s=0.3) as fal:
        sub, outcome, size = run(main(fal))
        job = fal.jobs[sub.request_id]
        calls = fal.stats.calls
        assert (calls["stream"] > 0) == use_stream and (calls["status"] > 0) == (not use_stream)
        assert fal.stats.duplicate_submits == 0 and job.headers["X-Fal-Request-Timeout"] == "30"
    assert sub.status_url and sub.status_url.endswith(f"/fal-ai/kling-video/requests/{sub.request_id}/status")
    assert outcome.seed == 7 and outcome.output["video"]["file_size"] == size
    assert set(outcome.timings) >= {"queued_s", "running_s"} and outcome.timings["running_s"] > 0
    assert abs(decoded_seconds(tmp_path / "clip.mp4.part") - 2.0) < 0.05
    states = [u.state for u in updates]
    assert states[0] == "IN_QUEUE" and states[-1] == "COMPLETED" and "IN_PROGRESS" in states
    logs = [line for u in updates for line in u.logs]
    assert logs == [
        "Starting generation",
        "Generating: 50%",
        "Generation complete",
    ]  # no repeats when polling


def test_sixty_concurrent_streams() -> None:
    async def one(p: FalProvider, i: int):
        return await generate(p, {"prompt": f"shot {i}", "duration": "2"})

    async def main(fal: FakeFal):
        async with make(fal, max_in_flight=64) as p:
            return await asyncio.gather(*(one(p, i) for i in range(64)))

    with FakeFal(latency_s=1.0) as fal:
        results = run(main(fal))
        assert len({sub.request_id for sub, _ in results}) == 64
        assert fal.stats.max_open_streams >= 60 and fal.stats.open_streams == 0
        assert fal.stats.duplicate_submits == 0 and fal.stats.calls["status"] == 0


def test_big_download_streams_to_disk(tmp_path: Path) -> None:
    async def main(fal: FakeFal):
        async with make(fal) as p:
            _, outcome = await generate(p)
            start = time.monotonic()
            got = await p.download(outcome.video_url, tmp_path / "big.mp4")
            return got, time.monotonic() - start

    with FakeFal(latency_s=0.05, video_size_bytes=20_000_000) as fal:
        got, seconds = run(main(fal))
    assert got.size == 20_000_000 == (tmp_path / "big.mp4").stat().st_size
    assert got.sha256 == sha256_file(tmp_path / "big.mp4")  # hashed on the way in, blocks and all
    assert seconds < 5
    assert abs(decoded_seconds(tmp_path / "big.mp4") - 2.0) < 0.05


def test_attach_rebuilds_app_only_urls_for_an_old_record() -> None:
    async def main(fal: FakeFal):
        async with make(fal) as p:
            sub = await p.submit(T2V, {"prompt": "x"})
            old = p.attach({"request_id": sub.request_id, "endpoint": T2V})
            assert old == sub
            return await p.wait(old)

    with FakeFal(latency_s=0.05) as fal:
        assert run(main(fal)).video_url.endswith(".mp4")
    assert app_id("workflows/me/flow/run") == "workflows/me/flow"
    assert app_id("fal-ai/veo3.1") == "fal-ai/veo3.1" and app_id("123-myapp") == "123/myapp"


# ---------------------------------------------------------------- transient faults are retried


def test_429_retry_after_is_honoured_on_status() -> None:
    async def main(fal: FakeFal):
        async with make(fal, use_stream=False) as p:
            start = time.monotonic()
            await generate(p)
            return time.monotonic() - start

    with faulty(Fault("429", on="status", retry_after=0.6), latency_s=0.05) as fal:
        elapsed = run(main(fal))
        assert fal.stats.faults_fired["status:429"] == 1
    assert elapsed >= 0.6  # FAST backoff alone would wait ≤ 0.05 s


def test_submit_429_is_retried_and_makes_one_job() -> None:
    async def main(fal: FakeFal):
        async with make(fal) as p:
            return await p.submit(T2V, {"prompt": "x"})

    with faulty(Fault("429", on="submit", times=2, retry_after=0.1)) as fal:
        sub = run(main(fal))
        assert fal.stats.calls["submit"] == 3 and list(fal.jobs) == [sub.request_id]


def test_submit_retries_connection_refused_until_fal_is_up() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fal = FakeFal(latency_s=0.05, port=port)
    timer = threading.Timer(0.3, fal.start)
    timer.start()
    url = f"http://127.0.0.1:{port}"

    async def main():
        retry = RetryPolicy(attempts=30, base_s=0.05, max_s=0.1, jitter=False)
        async with FalProvider("test-key", queue_url=url, rest_url=url, cdn_url=url, retry=retry) as p:
            return await p.submit(T2V, {"prompt": "x"})

    try:
        sub = run(main())
        assert list(fal.jobs) == [sub.request_id] and fal.stats.calls["submit"] == 1
    finally:
        timer.join()
        fal.stop()


def test_ingress_503_is_retried_on_status_and_result() -> None:
    async def main(fal: FakeFal):
        async with make(fal, use_stream=False) as p:
            return await generate(p)

    with faulty(
        Fault("ingress_503", on="status", times=2), Fault("ingress_502", on="result", times=2)
    ) as fal:
        _, outcome = run(main(fal))
        assert outcome.video_url and fal.stats.calls["result"] == 3


def test_reset_on_status_and_download_is_retried(tmp_path: Path) -> None:
    async def main(fal: FakeFal):
        async with make(fal, use_stream=False) as p:
            _, outcome = await generate(p)
            return await p.download(outcome.video_url, tmp_path / "clip.mp4")

    faults = (
        Fault("reset", on="status", times=2),
        Fault("truncate", on="download"),
        Fault("reset", on="download"),
    )
    with faulty(*faults) as fal:
        got = run(main(fal))
        assert fal.stats.calls["download"] == 3 and fal.stats.faults_fired["status:reset"] == 2
    assert got.size == (tmp_path / "clip.mp4").stat().st_size
    assert got.sha256 == sha256_file(tmp_path / "clip.mp4")  # the retried transfer's hash, not a mix
    assert abs(decoded_seconds(tmp_path / "clip.mp4") - 2.0) < 0.05


def test_stream_that_keeps_failing_falls_back_to_polling() -> None:
    async def main(fal: FakeFal):
        async with make(fal) as p:
            return await generate(p)

    with faulty(Fault("reset", on="stream", times=None)) as fal:
        _, outcome = run(main(fal))
        assert fal.stats.calls["stream"] == 3 and fal.stats.calls["status"] >= 1


def test_stream_closed_early_is_reopened() -> None:
    async def main(fal: FakeFal):
        async with make(fal) as p:
            return await generate(p)

    with faulty(Fault("truncate", on="stream"), latency_s=0.3) as fal:
        run(main(fal))
        assert fal.stats.calls["stream"] == 2 and fal.stats.calls["status"] == 0


def test_retries_are_bounded() -> None:
    async def main(fal: FakeFal):
        async with make(fal, use_stream=False) as p:
            return await generate(p)

    with faulty(Fault("ingress_503", on="result", times=None)) as fal:
        with pytest.raises(TransientError, match="result failed after 5 attempts"):
            run(main(fal))
        assert fal.stats.calls["result"] == FAST.attempts


def test_each_retry_is_one_warning_in_fals_words(caplog: pytest.LogCaptureFixture) -> None:
    async def main(fal: FakeFal):
        async with make(fal, use_stream=False) as p:
            return await generate(p)

    caplog.set_level(logging.DEBUG)
    with faulty(Fault("ingress_503", on="status"), Fault("429", on="result", retry_after=0.01)) as fal:
        run(main(fal))
    retries = [r for r in caplog.records if "; retry " in r.getMessage()]
    assert [r.getMessage().split("; retry ")[0] for r in retries] == [
        "fal status: HTTP 503 from fal's ingress",
        "fal result: HTTP 429 (rate limited)",
    ]
    assert all(r.name == "aivp_batch.providers.fal" and r.levelno == logging.WARNING for r in retries)


def test_fals_error_mapping_says_which_answers_are_transient() -> None:
    provider = FalProvider("test-key")
    transient = provider._transient  # the kind's policy (fal.yaml retry.kinds) and fal's mapping

    def ingress(code: int) -> httpx.Response:
        return httpx.Response(code, text="<html><center>nginx</center></html>")

    def app(code: int, **headers: str) -> httpx.Response:
        return httpx.Response(code, json={"detail": "boom"}, headers={"x-fal-request-id": "r-1", **headers})

    # submit may bill: a 429 only, never a 5xx (not even the ingress's: a 504 may hide an accepted request)
    assert transient(httpx.Response(429), "submit") == "HTTP 429 (rate limited)"
    assert all(
        transient(r, "submit") is None for r in (ingress(503), app(500), app(503), httpx.Response(408))
    )
    # a result's 5xx is the model's own answer, unless fal's ingress sent it
    assert transient(ingress(502), "result") == "HTTP 502 from fal's ingress"
    assert transient(httpx.Response(408), "result") == "HTTP 408 (request timeout)"
    assert transient(app(502), "result") is None and transient(app(500), "result") is None
    # the reads retry any 500/502/503/504 but fal's start timeout
    for kind in ("status", "download", "token", "upload", "cancel", "pricing", "history"):
        assert transient(app(500), kind) == "HTTP 500" and transient(ingress(504), kind) is not None
        assert transient(app(504, **{"x-fal-request-timeout-type": "user"}), kind) is None
        assert transient(app(501), kind) is None and transient(app(404), kind) is None
    run(provider.aclose())


def test_the_yaml_config_spells_out_the_code_defaults(compose_cfg) -> None:
    cfg = compose_cfg("provider=fal")
    provider = instantiate(cfg.provider.client, key="test-key")
    default = FalProvider("test-key")
    try:
        assert isinstance(provider, FalProvider) and provider.retry == default.retry
        submit, status, result = (provider.retry[k] for k in ("submit", "status", "result"))
        assert submit.retry_on == (429,) and submit.connect_only and not status.connect_only
        assert status.retries_status(500) and not result.retries_status(500) and result.retries_status(502)
        assert status.attempts == 8 and status.max_retry_after_s == 60.0
    finally:
        run(provider.aclose())
        run(default.aclose())
    tuned = instantiate(compose_cfg("provider.retry.attempts=2").provider.client, key="test-key")
    assert {p.attempts for p in tuned.retry.values()} == {2}
    run(tuned.aclose())


# ---------------------------------------------------------------- submit must not duplicate


@pytest.mark.parametrize("kind", ["reset_after", "reset", "ingress_503"])
def test_submit_lost_answer_is_unknown_and_never_resubmitted(kind: str) -> None:
    async def main(fal: FakeFal):
        async with make(fal) as p:
            return await p.submit(T2V, {"prompt": "x"})

    with faulty(Fault(kind, on="submit")) as fal:
        with pytest.raises(TransientError, match="may have accepted"):
            run(main(fal))
        assert fal.stats.calls["submit"] == 1
        assert len(fal.jobs) == (0 if kind == "ingress_503" else 1)


def test_submit_429_until_retries_run_out_is_not_accepted() -> None:
    async def main(fal: FakeFal):
        async with make(fal) as p:
            return await p.submit(T2V, {"prompt": "x"})

    with faulty(Fault("429", on="submit", times=None, retry_after=0.01)) as fal:
        with pytest.raises(SubmitNotAccepted) as err:
            run(main(fal))
        assert fal.stats.calls["submit"] == FAST.attempts and not fal.jobs
    assert str(err.value) == (
        f"{T2V}: submit not accepted (HTTP 429 (rate limited)) after 5 attempts; nothing was queued"
    )


def test_an_unreachable_fal_gives_up_in_words_naming_the_host() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"

    async def main():
        retry = RetryPolicy(attempts=3, base_s=0.01, max_s=0.02)
        async with FalProvider(
            "test-key", queue_url=url, rest_url=url, cdn_url=url, api_url=url, retry=retry
        ) as p:
            with pytest.raises(SubmitNotAccepted) as submit:
                await p.submit(T2V, {"prompt": "x"})
            with pytest.raises(TransientError) as cancel:
                await p.cancel(Submission("req-1", T2V))
            return submit.value, cancel.value

    submit, cancel = run(main())
    assert (
        str(submit) == f"{T2V}: submit not accepted (connection refused) after 3 attempts; nothing was queued"
    )
    assert not isinstance(cancel, SubmitNotAccepted)
    assert re.fullmatch(
        rf"fal cancel: cannot reach {re.escape(url)} \(connection refused\) "
        r"after 3 attempts over \d+(\.\d+)? s",
        str(cancel),
    ), str(cancel)


def test_submit_reset_before_is_also_not_retried() -> None:
    async def main(fal: FakeFal):
        async with make(fal) as p:
            return await p.submit(T2V, {"prompt": "x"})

    # The client can't tell "before" from "after" once the request was sent: both are unknown.
    with faulty(Fault("reset_before", on="submit")) as fal:
        with pytest.raises(TransientError, match="may have accepted"):
            run(main(fal))
        assert fal.stats.calls["submit"] == 1 and not fal.jobs


# ---------------------------------------------------------------- final failures


def test_failed_generation_is_request_failed_and_not_retried() -> None:
    async def main(fal: FakeFal):
        async with make(fal) as p:
            return await generate(p)

    with faulty(Fault("fail_generation", on="submit")) as fal:
        with pytest.raises(RequestFailed) as err:
            run(main(fal))
        job = next(iter(fal.jobs.values()))
        assert job.result_calls == 1
    assert str(err.value) == (
        f"{T2V}: 422 The content was flagged by a content checker. at body.prompt (content_policy_violation)"
    )
    assert err.value.status_code == 422 and err.value.request_id == job.id


def test_gateway_5xx_result_is_final_and_start_timeout_504_too() -> None:
    async def main(fal: FakeFal):
        async with make(fal) as p:
            return await generate(p)

    with faulty(
        Fault(
            "fail_generation",
            on="submit",
            status_code=503,
            message="No runner",
            error_type="runner_scheduling_failure",
        )
    ) as fal:
        with pytest.raises(RequestFailed, match=r"503 No runner \(runner_scheduling_failure\)"):
            run(main(fal))
        assert fal.stats.calls["result"] == 1
    with faulty(Fault("timeout_504", on="submit")) as fal:
        with pytest.raises(RequestFailed, match=r"504 Request timed out \(startup_timeout\)"):
            run(main(fal))


def test_failure_message_handles_plain_detail_and_empty_bodies() -> None:
    plain = httpx.Response(500, json={"detail": "Internal error", "error_type": "internal_error"})
    assert failure_message("a/b", plain) == "a/b: 500 Internal error (internal_error)"
    empty = httpx.Response(502, content=b"", headers={"x-fal-error-type": "runner_incomplete_response"})
    assert failure_message("a/b", empty) == "a/b: 502 Bad Gateway (runner_incomplete_response)"
    status = {"error": "boom", "error_type": "x"}
    assert failure_message("a/b", httpx.Response(500, content=b"{}"), status) == "a/b: 500 boom (x)"


# ---------------------------------------------------------------- cancel and timeouts


def test_cancel_then_wait_reports_the_499() -> None:
    async def main(fal: FakeFal):
        async with make(fal) as p:
            sub = await p.submit(T2V, {"prompt": "x"})
            await p.cancel(sub)
            with pytest.raises(RequestFailed) as err:
                await p.wait(sub)
            await p.cancel(sub)  # 400 ALREADY_COMPLETED: fine
            await p.cancel(Submission("no-such-id", T2V))  # 404: fine
            return sub, err.value

    with FakeFal(latency_s=5) as fal:
        sub, err = run(main(fal))
        assert fal.jobs[sub.request_id].cancelled
        assert fal.stats.calls["cancel"] == 3
    assert err.status_code == 499 and "client_cancelled" in str(err)


def test_client_timeout_cancels_the_request() -> None:
    async def main(fal: FakeFal):
        async with make(fal, client_timeout=0.3) as p:
            sub = await p.submit(T2V, {"prompt": "x"})
            start = time.monotonic()
            with pytest.raises(RequestFailed) as err:
                await p.wait(sub)
            return sub, err.value, time.monotonic() - start

    with FakeFal(latency_s=10) as fal:
        sub, err, elapsed = run(main(fal))
        assert fal.jobs[sub.request_id].cancelled and fal.stats.calls["cancel"] == 1
    assert str(err) == f"{T2V}: timed out after 0.3s; cancelled request {sub.request_id}"
    assert elapsed < 2


# ---------------------------------------------------------------- keys


def test_rejected_key_is_an_auth_error_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-very-secret-123"

    async def main(fal: FakeFal):
        async with make(fal, key=secret) as p:
            with pytest.raises(AuthError) as at_check:
                await p.check_auth()
            with pytest.raises(AuthError) as at_submit:
                await p.submit(T2V, {"prompt": "x"})
            return at_check.value, at_submit.value, repr(p)

    caplog.set_level(logging.DEBUG)
    with faulty(Fault("429", on="pricing", retry_after=0.01)) as fal:
        check, submit, text = run(main(fal))
        assert not fal.jobs
    assert str(check) == (
        "fal rejected the API key (HTTP 401); set FAL_KEY in the environment or in ./.env, "
        "~/.env or ~/.aivp/.env"
    )
    assert "HTTP 403" in str(submit)
    for blob in (str(check), str(submit), text, caplog.text):
        assert secret not in blob


def test_missing_key_says_how_to_set_it() -> None:
    async def main(fal: FakeFal):
        async with make(fal, key=None) as p:
            with pytest.raises(AuthError, match="set FAL_KEY in the environment") as err:
                await p.check_auth()
            with pytest.raises(AuthError):
                await p.submit(T2V, {"prompt": "x"})
            return err.value

    with FakeFal() as fal:
        run(main(fal))
        assert sum(fal.stats.calls.values()) == 0


# ---------------------------------------------------------------- uploads


def test_upload_once_per_content_under_concurrency(tmp_path: Path) -> None:
    same_a, same_b, other = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.jpg"
    same_a.write_bytes(b"frame-bytes" * 1000)
    same_b.write_bytes(b"frame-bytes" * 1000)
    other.write_bytes(b"other-bytes")

    async def main(fal: FakeFal):
        async with make(fal) as p:
            urls = await asyncio.gather(*(p.upload(path) for path in [same_a, same_b, other] * 5))
            async with httpx.AsyncClient() as c:
                body = (await c.get(urls[0])).content
            return urls, body

    with faulty(Fault("reset", on="upload")) as fal:
        urls, body = run(main(fal))
        assert fal.stats.calls["token"] == 1
        assert sorted(fal.stats.uploads_by_hash.values()) == [1, 1]  # one reset attempt didn't store
        assert fal.stats.calls["upload"] == 3
    assert (
        len(set(urls)) == 2 and urls[0] == urls[1] and urls[0].endswith(".png") and urls[2].endswith(".jpg")
    )
    assert body == same_a.read_bytes()


# ---------------------------------------------------------------- Platform API: prices and history


def test_check_auth_loads_unit_prices_and_results_carry_billable_units() -> None:
    with FakeFal(latency_s=0.1, prices={T2V: (0.112, "seconds")}) as fal:

        async def go() -> tuple:
            async with make(fal) as provider:
                await provider.check_auth([T2V, "fal-ai/unpriced"])
                _, outcome = await generate(provider, {"prompt": "a fox", "duration": "3"})
                return await provider.unit_price(T2V), await provider.unit_price("fal-ai/unpriced"), outcome

        price, missing, outcome = run(go())
        assert (price.unit_price, price.unit, price.currency) == (0.112, "seconds", "USD")
        assert missing is None and outcome.billed_units == 3.0
        assert fal.stats.calls["pricing"] == 1 and fal.stats.calls["token"] == 0


def test_check_auth_with_a_bad_key_is_one_line() -> None:
    with FakeFal(latency_s=0.1) as fal:
        with pytest.raises(AuthError, match="FAL_KEY") as err:
            run(make(fal, key="nope-SECRET").check_auth([T2V]))
        assert "nope-SECRET" not in str(err.value)


def test_history_pages_through_every_row_with_its_payload() -> None:
    with FakeFal(latency_s=0.05) as fal:
        bodies = [{"prompt": f"take {i}", "duration": "2"} for i in range(130)]
        for body in bodies:
            fal.inject_history(T2V, body)

        async def go() -> list:
            async with make(fal) as provider:
                return await provider.history(T2V, time.time() - 60)

        rows = run(go())
        assert sorted(r.json_input["prompt"] for r in rows) == sorted(b["prompt"] for b in bodies)
        assert len({r.request_id for r in rows}) == 130 and fal.stats.calls["history"] == 2
        assert all(r.endpoint == T2V and abs(r.sent_at - time.time()) < 60 for r in rows)
