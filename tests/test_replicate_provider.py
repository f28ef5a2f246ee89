"""ReplicateProvider against FakeReplicate over real loopback sockets: the happy path, every
money-relevant retry rule, deadlines, cancel, uploads and reconciling a lost create answer."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import av
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from aivp_batch.errors import AuthError, RequestFailed, SchemaUnavailable, SubmitNotAccepted, TransientError
from aivp_batch.keys import find_key
from aivp_batch.openapi import EndpointSchema
from aivp_batch.providers.base import Download, StatusUpdate
from aivp_batch.providers.replicate import (
    InputRejected,
    ReplicateProvider,
    ReplicateSubmission,
    endpoint_document,
    output_urls,
    parse_endpoint,
    pick_video,
)
from aivp_batch.reconcile import LostSubmit, ReconcilePolicy, Verdict
from aivp_batch.retry import RetryPolicy
from aivp_batch.testing.replicate_server import FakeReplicate, ReplicateFault

TOKEN = "r8_provider-test-SECRET-42"
VEO = "google/veo-3.1"
SEEDANCE = "bytedance/seedance-1-lite"
KLING = "kwaivgi/kling-v2.5-turbo-pro"
FAST = RetryPolicy(attempts=5, base_s=0.01, max_s=0.05)
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def fake(*faults: ReplicateFault, latency_s: float = 0.2, **kw: Any) -> FakeReplicate:
    return FakeReplicate(token=TOKEN, latency_s=latency_s, faults=faults, **kw)


def make(rep: FakeReplicate, key: str | None = TOKEN, **kw: Any) -> ReplicateProvider:
    kw.setdefault("retry", FAST)
    kw.setdefault("poll_interval", 0.02)
    kw.setdefault("poll_max_s", 0.05)
    return ReplicateProvider(key, base_url=rep.url, **kw)


def decoded_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        frames = sum(1 for _ in container.decode(video=0))
        return frames / float(container.streams.video[0].average_rate)


def write_png(path: Path, side: int) -> Path:
    Image.effect_noise((side, side), 64).convert("RGB").save(path)  # noise: does not compress away
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- happy path


def test_create_poll_download_records_the_version(tmp_path: Path) -> None:
    updates: list[StatusUpdate] = []

    async def main(rep: FakeReplicate):
        async with make(rep) as p:
            await p.check_auth([VEO])
            sub = await p.submit(VEO, {"prompt": "a fox", "duration": 4, "seed": 7})
            outcome = await p.wait(sub, updates.append)
            size = await p.download(outcome.video_url, tmp_path / "clip.mp4.part")
            return sub, outcome, size

    with fake(latency_s=0.3) as rep:
        sub, outcome, size = run(main(rep))
        latest = rep.models[VEO]["latest_version"]["id"]
        assert rep.stats.calls["create"] == 1 and rep.stats.duplicate_creates == 0
        assert "Prefer" not in rep.stats.headers[0] and "Cancel-After" not in rep.stats.headers[0]
    assert isinstance(sub, ReplicateSubmission) and sub.endpoint == VEO
    assert sub.version == latest and sub.version_source == "model latest_version"  # the API said "hidden"
    assert sub.status_url == f"{rep.url}/v1/predictions/{sub.request_id}"
    assert sub.to_dict()["version"] == latest  # journalled with the submission
    assert outcome.output["version"] == "hidden" and outcome.output["version_recorded"] == latest
    assert outcome.seed == 7 and outcome.billed_units is None
    assert outcome.timings["running_s"] > 0 and outcome.timings["predict_s"] > 0
    clip = (tmp_path / "clip.mp4.part").read_bytes()
    assert size == Download(len(clip), hashlib.sha256(clip).hexdigest())
    assert abs(decoded_seconds(tmp_path / "clip.mp4.part") - 4.0) < 0.05
    states = [u.state for u in updates]
    assert states[0] == "IN_QUEUE" and states[-1] == "COMPLETED" and "IN_PROGRESS" in states
    logs = [line for u in updates for line in u.logs]
    assert logs == ["Using seed: 7", "Generating video...", "Generating video: 50%", "Generating video: 100%"]


def test_a_pinned_version_is_created_on_v1_predictions() -> None:
    async def main(rep: FakeReplicate, endpoint: str):
        async with make(rep) as p:
            sub = await p.submit(endpoint, {"prompt": "x", "duration": 2})
            return sub, await p.wait(sub), await p.history(endpoint, time.time() - 60)

    with fake() as rep:
        vid = rep.models[SEEDANCE]["latest_version"]["id"]
        other = rep.add_version(SEEDANCE, rep.models[SEEDANCE]["latest_version"]["openapi_schema"])
        rep.inject(SEEDANCE, {"prompt": "x", "duration": 2})  # same input on the latest version
        sub, outcome, rows = run(main(rep, f"{SEEDANCE}:{other}"))
        assert rep.stats.calls["create"] == 1 and rep.stats.calls["model"] == 0
    assert sub.version == other != vid and sub.version_source == "pinned"
    assert outcome.output["version"] == other
    assert [r.request_id for r in rows] == [sub.request_id]  # the history matches the version too


def test_endpoint_ids_and_output_normalisation() -> None:
    assert parse_endpoint("google/veo-3.1") == ("google", "veo-3.1", None)
    assert parse_endpoint("a/b:0123abc").version == "0123abc" and parse_endpoint("a/b").model == "a/b"
    with pytest.raises(RequestFailed, match="not a Replicate model id"):
        parse_endpoint("fal-ai/kling-video/v2.5-turbo/pro/text-to-video")
    assert output_urls("https://x/a.mp4") == ["https://x/a.mp4"]
    assert output_urls([["https://x/a.png"], "https://x/b.mp4", 3, None]) == [
        "https://x/a.png",
        "https://x/b.mp4",
    ]
    assert output_urls({"video": "https://x/v.mp4", "meta": {"poster": "https://x/p.jpg"}}) == [
        "https://x/v.mp4",
        "https://x/p.jpg",
    ]
    assert output_urls(None) == [] and output_urls("not a url") == []
    assert pick_video(["https://x/p.jpg", "https://x/v.MP4?sig=1"]) == "https://x/v.MP4?sig=1"
    assert pick_video(["https://x/out"]) == "https://x/out" and pick_video([]) is None


@pytest.mark.parametrize("shape", ["list", "dict"])
def test_list_and_dict_outputs_are_normalised(tmp_path: Path, shape: str) -> None:
    async def main(rep: FakeReplicate):
        async with make(rep) as p:
            outcome = await p.wait(await p.submit(KLING, {"prompt": "x"}))
            return outcome, await p.download(outcome.video_url, tmp_path / "c.mp4")

    with fake(output_shape=shape) as rep:
        outcome, size = run(main(rep))
    assert outcome.video_url.endswith("/output.mp4") and size.size > 1000


def test_the_yaml_config_instantiates_the_provider(compose_cfg) -> None:
    cfg = compose_cfg("provider=replicate")
    assert cfg.provider.key_env == "REPLICATE_API_TOKEN" and cfg.provider.available is True
    provider = instantiate(cfg.provider.client, key="r8_x")
    assert isinstance(provider, ReplicateProvider) and provider.base_url == "https://api.replicate.com"
    assert provider.retry["create"].retry_on == (429,) and provider.retry["create"].connect_only
    assert provider.retry["get"].retries_status(503) and provider.retry["get"].attempts == 8
    assert provider.start_timeout == provider.cancel_after == 900
    assert provider.upload_scope == "replicate@api.replicate.com"
    container = OmegaConf.to_container(cfg.provider, resolve=True)
    assert container["retry"]["kinds"]["create"] == {"retry_on": [429], "connect_only": True}
    run(provider.aclose())


def test_the_token_is_found_like_the_fal_key(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("REPLICATE_API_TOKEN=r8_from_dotenv\n")
    assert find_key("REPLICATE_API_TOKEN", env={}, cwd=tmp_path, home=tmp_path / "home") == "r8_from_dotenv"
    assert find_key("REPLICATE_API_TOKEN", env={"REPLICATE_API_TOKEN": " r8_env "}, cwd=tmp_path) == "r8_env"


# ---------------------------------------------------------------- auth and schemas


def test_check_auth() -> None:
    async def check(rep: FakeReplicate, key: str | None) -> None:
        async with make(rep, key=key) as p:
            await p.check_auth([VEO])

    with fake() as rep:
        with pytest.raises(AuthError, match="no Replicate API token found; set REPLICATE_API_TOKEN"):
            run(check(rep, None))
        assert rep.stats.calls["account"] == 0
        with pytest.raises(AuthError, match="rejected the API token.*REPLICATE_API_TOKEN") as info:
            run(check(rep, "r8_wrong-SECRET"))
        assert "r8_wrong-SECRET" not in str(info.value)
        run(check(rep, TOKEN))
        assert rep.stats.calls["account"] == 2 and rep.stats.calls["model"] == 1


def test_fetch_schema_validates_with_the_shared_validator() -> None:
    async def main(rep: FakeReplicate, pinned: str):
        async with make(rep) as p:
            return await p.fetch_schema(VEO), await p.fetch_schema(pinned)

    with fake() as rep:
        vid = rep.models[VEO]["latest_version"]["id"]
        latest, pinned = run(main(rep, f"{VEO}:{vid}"))
        with pytest.raises(SchemaUnavailable, match="nobody/nothing"):
            run(main(rep, "nobody/nothing:abc"))
    assert latest == pinned == rep.models[VEO]["latest_version"]["openapi_schema"]
    schema = EndpointSchema(VEO, endpoint_document(latest, VEO))
    assert schema.input_name == "Input" and "aspect_ratio" in schema.properties
    assert schema.allowed_values("aspect_ratio") == ["16:9", "9:16"]  # behind allOf/$ref
    issues = {
        i.path: i.message for i in schema.validate({"prompt": "x", "aspect_ratio": "4:3", "seed": None})
    }
    assert list(issues) == ["aspect_ratio"] and "16:9" in issues["aspect_ratio"]  # seed: nullable
    assert schema.validate({"prompt": "x", "duration": 8, "negative_prompt": None, "image": None}) == []
    assert schema.unknown_keys({"prompt": "x", "image_url": "https://x"}) == ["image_url"]  # a fal-ism
    assert "paths" in latest and "/google/veo-3.1" not in latest["paths"]  # the original is untouched


# ---------------------------------------------------------------- create: what is and is not retried


def test_422_is_final_with_the_invalid_fields() -> None:
    async def main(rep: FakeReplicate):
        async with make(rep) as p:
            await p.submit(VEO, {"prompt": "x", "aspect_ratio": "4:3"})

    with fake() as rep:
        with pytest.raises(InputRejected) as info:
            run(main(rep))
        assert rep.stats.calls["create"] == 1 and rep.stats.creates == 0
    exc = info.value
    assert exc.status_code == 422 and exc.invalid_fields[0]["field"] == "input.aspect_ratio"
    assert "input.aspect_ratio: aspect_ratio must be one of the following" in str(exc)
    assert isinstance(exc, RequestFailed)  # the runner's "refused, nothing spent" path


def test_429_on_create_honours_retry_after_and_creates_once() -> None:
    async def main(rep: FakeReplicate):
        async with make(rep) as p:
            started = time.monotonic()
            sub = await p.submit(VEO, {"prompt": "x"})
            return sub, time.monotonic() - started

    with fake(ReplicateFault("429", on="create", retry_after="0.4", body_retry_after=9)) as rep:
        sub, elapsed = run(main(rep))
        assert rep.stats.calls["create"] == 2 and rep.stats.creates == 1 and rep.stats.duplicate_creates == 0
    assert 0.4 <= elapsed < 5 and sub.request_id  # the header won over the body's 9 s


def test_429_body_retry_after_is_honoured_without_the_header() -> None:
    async def main(rep: FakeReplicate):
        async with make(rep) as p:
            started = time.monotonic()
            await p.submit(VEO, {"prompt": "x"})
            return time.monotonic() - started

    with fake(ReplicateFault("429", on="create", body_retry_after=0.3)) as rep:
        assert run(main(rep)) >= 0.3 and rep.stats.creates == 1


def test_429_until_retries_run_out_is_not_accepted() -> None:
    async def main(rep: FakeReplicate):
        async with make(rep) as p:
            await p.submit(VEO, {"prompt": "x"})

    with fake(ReplicateFault("429", on="create", times=None, retry_after="0")) as rep:
        with pytest.raises(SubmitNotAccepted, match="throttled.*nothing was created"):
            run(main(rep))
        assert rep.stats.calls["create"] == FAST.attempts and rep.stats.creates == 0


@pytest.mark.parametrize("applied", [False, True])
def test_a_5xx_on_create_is_not_retried(applied: bool) -> None:
    async def main(rep: FakeReplicate):
        async with make(rep) as p:
            await p.submit(VEO, {"prompt": "x"})

    with fake(ReplicateFault("500", on="create", applied=applied)) as rep:
        with pytest.raises(TransientError, match="create outcome unknown") as info:
            run(main(rep))
        assert not isinstance(info.value, SubmitNotAccepted)  # the runner must reconcile, not resubmit
        assert rep.stats.calls["create"] == 1 and rep.stats.creates == int(applied)


def test_a_refused_connection_on_create_is_not_accepted() -> None:
    async def main():
        async with ReplicateProvider(TOKEN, base_url=f"http://127.0.0.1:{free_port()}", retry=FAST) as p:
            await p.submit("a/b:0123", {"prompt": "x"})

    with pytest.raises(SubmitNotAccepted, match="nothing was created"):
        run(main())


def test_a_lost_create_answer_is_reconciled_without_a_second_create() -> None:
    payload = {"prompt": "lost answer", "duration": 4}

    async def main(rep: FakeReplicate):
        async with make(rep, cancel_after=600) as p:
            sent_from = time.time()
            with pytest.raises(TransientError, match="create outcome unknown") as info:
                await p.submit(VEO, payload)
            assert not isinstance(info.value, SubmitNotAccepted)
            lost = LostSubmit(VEO, payload, sent_from, time.time(), p.start_timeout)
            policy = ReconcilePolicy()
            rows = await p.history(VEO, sent_from - policy.skew_s)
            assert lost.judge(rows, policy, time.time()) is Verdict.FOUND
            [row] = lost.matches(rows, policy)
            sub = p.attach({"request_id": row.request_id, "endpoint": VEO})  # as the runner adopts it
            return row, sub, await p.wait(sub)

    with fake(ReplicateFault("reset_after", on="create"), page_size=2) as rep:
        rep.inject(VEO, {"prompt": "someone else's", "duration": 4})  # same model, other input
        rep.inject(KLING, payload)  # same input, other model
        rep.inject(VEO, payload, created=time.time() - 3600)  # same input, long before the submit
        row, sub, outcome = run(main(rep))
        assert rep.stats.calls["create"] == 1 and rep.stats.creates == 1 and rep.stats.duplicate_creates == 0
        assert rep.predictions[row.request_id].input == payload
    assert sub.status_url and sub.status_url.endswith(row.request_id) and outcome.video_url


def test_two_matching_predictions_are_ambiguous() -> None:
    payload = {"prompt": "twice"}

    async def main(rep: FakeReplicate):
        async with make(rep) as p:
            rows = await p.history(VEO, time.time() - 60)
        lost = LostSubmit(VEO, payload, time.time() - 10, time.time(), None)
        return lost.judge(rows, ReconcilePolicy(), time.time())

    with fake() as rep:
        rep.inject(VEO, payload)
        rep.inject(VEO, payload)
        assert run(main(rep)) is Verdict.AMBIGUOUS


def test_history_of_a_removed_prediction_has_no_input() -> None:
    async def main(rep: FakeReplicate):
        async with make(rep) as p:
            await p.wait(await p.submit(VEO, {"prompt": "x"}))
            await asyncio.sleep(0.6)
            return await p.history(VEO, time.time() - 60)

    with fake(latency_s=0.05, data_ttl_s=0.5) as rep:
        [row] = run(main(rep))
    assert row.json_input is None and row.json_output is None


# ---------------------------------------------------------------- wait: polling, terminal states


def test_polling_rides_out_5xx_and_resets() -> None:
    faults = (
        ReplicateFault("503", on="get", times=2),
        ReplicateFault("reset", on="get", after=3),
        ReplicateFault("429", on="get", after=4, retry_after="0"),
    )

    async def main(rep: FakeReplicate):
        async with make(rep) as p:
            return await p.wait(await p.submit(VEO, {"prompt": "x"}))

    with fake(*faults) as rep:
        assert run(main(rep)).video_url
        assert rep.stats.faults_fired == {"get:503": 2, "get:reset": 1, "get:429": 1}


def test_a_failed_prediction() -> None:
    async def main(rep: FakeReplicate):
        async with make(rep) as p:
            await p.wait(await p.submit(VEO, {"prompt": "x"}))

    with fake(ReplicateFault("fail", on="create", message="E005: sensitive content")) as rep:
        with pytest.raises(RequestFailed, match="failed: E005: sensitive content") as info:
            run(main(rep))
        assert rep.billed == {}
    assert info.value.may_be_billed and info.value.request_id  # it had started


def test_cancel_after_aborts_a_prediction_that_never_started() -> None:
    async def main(rep: FakeReplicate):
        async with make(rep, cancel_after=0.2) as p:
            await p.wait(await p.submit(VEO, {"prompt": "x"}))

    with fake(latency_s=2.0, queue_fraction=0.9, min_cancel_after_s=0.1) as rep:
        with pytest.raises(RequestFailed, match="aborted.*not billed") as info:
            run(main(rep))
        assert rep.stats.headers[0]["Cancel-After"] == "0.2s" and rep.billed == {}
    assert not info.value.may_be_billed


def test_cancel_after_cancels_a_prediction_still_running() -> None:
    async def main(rep: FakeReplicate):
        async with make(rep, cancel_after=0.5) as p:
            await p.wait(await p.submit(VEO, {"prompt": "x"}))

    with fake(latency_s=2.0, queue_fraction=0.1, min_cancel_after_s=0.1) as rep:
        with pytest.raises(
            RequestFailed, match="canceled: its Cancel-After deadline passed while it ran"
        ) as info:
            run(main(rep))
    assert info.value.may_be_billed


def test_cancel() -> None:
    async def main(rep: FakeReplicate):
        async with make(rep) as p:
            sub = await p.submit(VEO, {"prompt": "x"})
            waiter = asyncio.ensure_future(p.wait(sub))
            await asyncio.sleep(0.1)
            await p.cancel(sub)
            with pytest.raises(RequestFailed, match="canceled: it was cancelled"):
                await waiter
            await p.cancel(ReplicateSubmission("nosuchprediction", VEO))  # 404 is fine

    with fake(latency_s=2.0) as rep:
        run(main(rep))
        assert rep.stats.cancels == 1 and rep.stats.calls["cancel"] == 2 and rep.billed == {}


def test_client_timeout_cancels_and_may_be_billed() -> None:
    async def main(rep: FakeReplicate):
        async with make(rep, client_timeout=0.3) as p:
            await p.wait(await p.submit(VEO, {"prompt": "x"}))

    with fake(latency_s=5.0, queue_fraction=0.01) as rep:
        with pytest.raises(RequestFailed, match="timed out after 0.3s; cancelled") as info:
            run(main(rep))
        assert rep.stats.cancels == 1
    assert info.value.may_be_billed


def test_an_output_removed_before_the_poll_is_a_clear_failure() -> None:
    async def main(rep: FakeReplicate):
        async with make(rep) as p:
            sub = await p.submit(VEO, {"prompt": "x"})
            await asyncio.sleep(0.2)
            await p.wait(sub)

    with fake(latency_s=0.05, data_ttl_s=0.05) as rep:
        with pytest.raises(RequestFailed, match="output was removed"):
            run(main(rep))


def test_attach_rebuilds_urls_and_keeps_the_version() -> None:
    with fake() as rep:
        p = make(rep)
        old = p.attach({"request_id": "abc", "endpoint": VEO})
        assert old.status_url == f"{rep.url}/v1/predictions/abc" and old.cancel_url.endswith("/abc/cancel")
        sub = ReplicateSubmission("abc", VEO, version="v1", version_source="pinned")
        assert p.attach(sub.to_dict()).version == "v1"
        foreign = p.attach({"request_id": "abc", "endpoint": VEO, "status_url": "https://elsewhere/x"})
        assert foreign.status_url == old.status_url  # the token never goes to another host
        run(p.aclose())


# ---------------------------------------------------------------- files


def test_uploads_go_once_per_content_hash(tmp_path: Path) -> None:
    big = write_png(tmp_path / "frame.png", 400)
    copy = tmp_path / "same-bytes.png"
    copy.write_bytes(big.read_bytes())
    small = write_png(tmp_path / "tiny.png", 8)

    async def main(rep: FakeReplicate):
        async with make(rep, data_url_max_bytes=4096) as p:
            urls = await asyncio.gather(p.upload(big), p.upload(big), p.upload(copy))
            inline = await p.upload(small)
            outcome = await p.wait(await p.submit(VEO, {"prompt": "x", "image": urls[0]}))
            return urls, inline, outcome

    with fake() as rep:
        urls, inline, outcome = run(main(rep))
        assert rep.stats.files == 1 and rep.stats.calls["upload"] == 1
        [stored] = rep.files.values()
        assert stored.content_type == "image/png" and stored.size == big.stat().st_size
    assert len(set(urls)) == 1 and urls[0] == f"{rep.url}/v1/files/{stored.id}"
    assert inline.startswith("data:image/png;base64,") and outcome.video_url


def test_upload_retries_a_5xx(tmp_path: Path) -> None:
    async def main(rep: FakeReplicate, path: Path):
        async with make(rep, data_url_max_bytes=0) as p:
            return await p.upload(path)

    with fake(ReplicateFault("502", on="upload")) as rep:
        assert run(main(rep, write_png(tmp_path / "f.png", 64))).startswith(rep.url)
        assert rep.stats.calls["upload"] == 2 and rep.stats.files == 1


def test_a_truncated_download_is_fetched_again(tmp_path: Path) -> None:
    async def main(rep: FakeReplicate):
        async with make(rep) as p:
            outcome = await p.wait(await p.submit(VEO, {"prompt": "x", "duration": 4}))
            return await p.download(outcome.video_url, tmp_path / "c.mp4")

    with fake(ReplicateFault("truncate", on="download")) as rep:
        size = run(main(rep))
        assert rep.stats.calls["download"] == 2
    assert (
        abs(decoded_seconds(tmp_path / "c.mp4") - 4.0) < 0.05
        and size.size == (tmp_path / "c.mp4").stat().st_size
        and size.sha256 == hashlib.sha256((tmp_path / "c.mp4").read_bytes()).hexdigest()
    )


def test_data_url_outputs_are_written_directly(tmp_path: Path) -> None:
    async def main():
        async with ReplicateProvider(TOKEN) as p:
            return await p.download("data:video/mp4;base64,AAAAIGZ0eXA=", tmp_path / "d.mp4")

    data = b"\x00\x00\x00 ftyp"
    assert (
        run(main()) == Download(8, hashlib.sha256(data).hexdigest())
        and (tmp_path / "d.mp4").read_bytes() == data
    )


def test_an_expired_output_and_an_unknown_prediction(tmp_path: Path) -> None:
    async def main(rep: FakeReplicate):
        async with make(rep) as p:
            outcome = await p.wait(await p.submit(VEO, {"prompt": "x"}))
            await asyncio.sleep(0.6)
            with pytest.raises(RequestFailed, match="HTTP 404 .Replicate deletes outputs") as gone:
                await p.download(outcome.video_url, tmp_path / "late.mp4")
            with pytest.raises(RequestFailed, match="not found at Replicate") as unknown:
                await p.wait(ReplicateSubmission("nosuchprediction", VEO))
            return gone.value, unknown.value

    with fake(latency_s=0.05, data_ttl_s=0.5) as rep:
        gone, unknown = run(main(rep))
        assert rep.stats.calls["download"] == 1  # a 404 is final, not retried
    assert gone.status_code == 404 and unknown.status_code == 404 and unknown.request_id == "nosuchprediction"
