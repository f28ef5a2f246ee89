"""One contract, every provider: what the runner relies on of `providers.base.Provider`, checked
the same way for fal (on FakeFal), Replicate (on FakeReplicate) and the offline preview, over real
loopback HTTP where there is a service.

Covered: submit → wait → outcome (a video URL, the seed, status updates ending COMPLETED);
download (a `Download` whose size and sha256 are the file's); cancel (then `wait` is a final
`RequestFailed`); upload (a URL that works in a payload, one upload per content); check_auth with
a bad key (one line, no key in it; the preview needs no key at all); the schema source (the
document a payload is validated against, cached for the next run); a busy answer (429) retried
without sending the request again; a refused request (`RequestFailed`, nothing created);
reconcile (a lost submit answer found in `history` by its exact body, with no second submit;
where the provider keeps no history, `history` is None); and
resume (a fresh provider `attach`es the journalled submission dict and gets the same request).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import av
import pytest
from conftest import write_png

from aivp_batch.errors import AuthError, RequestFailed, SubmitNotAccepted, TransientError
from aivp_batch.providers.base import Download, Outcome, Provider, StatusUpdate, Submission
from aivp_batch.providers.fal import FalProvider
from aivp_batch.providers.fal import RetryPolicy as FalRetry
from aivp_batch.providers.preview import PREVIEW_ENDPOINT, PreviewProvider, preview_openapi
from aivp_batch.providers.replicate import ReplicateProvider
from aivp_batch.reconcile import LostSubmit, ReconcilePolicy, Verdict
from aivp_batch.retry import RetryPolicy
from aivp_batch.schema_sources import ReplicateSchemaSource
from aivp_batch.schema_store import SchemaStore
from aivp_batch.testing.fal_server import FakeFal, Fault
from aivp_batch.testing.replicate_server import FakeReplicate, ReplicateFault

T = TypeVar("T")
FAL_KEY = "fal-contract-SECRET-1"
REPLICATE_TOKEN = "r8_contract-SECRET-2"
BAD_KEY = "bad-key-SECRET-3"
PROVIDERS = ["fal", "replicate", "preview"]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass
class Kit:
    """One provider under the contract: how to make it, what to send it, what its server saw."""

    name: str
    endpoint: str  # text-to-video
    i2v_endpoint: str
    image_field: str  # where an uploaded keyframe goes in an image-to-video payload
    payload: Callable[[int], dict[str, Any]]  # a valid text-to-video payload with this seed
    new: Callable[..., Provider]  # new(key=...) for hosted providers; new() for the preview
    server: Any = None  # FakeFal | FakeReplicate | None
    refused: dict[str, Any] = field(default_factory=dict)  # how to make a request the service refuses

    def submits(self) -> int:
        """Requests the service created (0 where there is no service)."""
        if isinstance(self.server, FakeFal):
            return len(self.server.jobs)
        if isinstance(self.server, FakeReplicate):
            return self.server.stats.creates
        return 0

    def duplicates(self) -> int:
        if isinstance(self.server, FakeFal):
            return self.server.stats.duplicate_submits
        if isinstance(self.server, FakeReplicate):
            return self.server.stats.duplicate_creates
        return 0

    def uploads(self) -> int:
        if isinstance(self.server, FakeFal):
            return sum(self.server.stats.uploads_by_hash.values())
        if isinstance(self.server, FakeReplicate):
            return self.server.stats.files
        return 0

    def lose_next_submit_answer(self) -> None:
        """The service does the next submit, then drops the connection before answering."""
        if isinstance(self.server, FakeFal):
            self.server.faults.add(Fault("reset_after", on="submit"))
        elif isinstance(self.server, FakeReplicate):
            self.server.faults.add(ReplicateFault("reset_after", on="create"))

    def slow_down(self, latency_s: float) -> None:
        if self.server is not None:
            self.server.latency_s = latency_s

    def schema_store(self, cache: Path) -> SchemaStore:
        """The run's schema store for this provider: its own schema source, no bundled fallback."""
        if isinstance(self.server, FakeFal):
            return SchemaStore(self.server.url, cache_dir=cache, bundled=None)
        if isinstance(self.server, FakeReplicate):
            source = ReplicateSchemaSource(self.server.url, token=REPLICATE_TOKEN)
            return SchemaStore(cache_dir=cache, bundled=None, source=source)
        store = SchemaStore(cache_dir=cache, offline=True, bundled=None)
        store.register(PREVIEW_ENDPOINT, preview_openapi())  # the preview publishes its own
        return store

    def busy_once(self) -> None:
        """The next status read is a 429 with `Retry-After: 0` (the service is busy, not broken)."""
        if isinstance(self.server, FakeFal):
            self.server.faults.add(Fault("429", on="status", retry_after=0))
        elif isinstance(self.server, FakeReplicate):
            self.server.faults.add(ReplicateFault("429", on="get", retry_after=0))

    def schema_fetches(self) -> int:
        if isinstance(self.server, FakeFal):
            return self.server.stats.calls.get("schema", 0)
        if isinstance(self.server, FakeReplicate):
            return self.server.stats.calls.get("model", 0)
        return 0


@pytest.fixture(params=PROVIDERS)
def kit(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kit]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # loopback must not go through a proxy
    if request.param == "fal":
        with FakeFal(key=FAL_KEY, latency_s=0.3) as fal:

            def new_fal(key: str | None = FAL_KEY, **kw: Any) -> Provider:
                kw.setdefault("retry", FalRetry(attempts=4, base_s=0.01, max_s=0.05))
                kw.setdefault("poll_interval", 0.02)
                kw.setdefault("use_stream", False)
                url = fal.url
                return FalProvider(key, queue_url=url, rest_url=url, cdn_url=url, api_url=url, **kw)

            yield Kit(
                name="fal",
                endpoint="fal-ai/kling-video/v3/pro/text-to-video",
                i2v_endpoint="fal-ai/kling-video/v3/pro/image-to-video",
                image_field="start_image_url",
                payload=lambda seed: {"prompt": f"a fox, take {seed}", "duration": "3", "seed": seed},
                new=new_fal,
                server=fal,
                refused={"start_timeout": 0.05},  # fal: 400 "Invalid X-Fal-Request-Timeout"
            )
    elif request.param == "replicate":
        with FakeReplicate(token=REPLICATE_TOKEN, latency_s=0.3) as rep:

            def new_replicate(key: str | None = REPLICATE_TOKEN, **kw: Any) -> Provider:
                kw.setdefault("retry", RetryPolicy(attempts=4, base_s=0.01, max_s=0.05))
                kw.setdefault("poll_interval", 0.02)
                kw.setdefault("poll_max_s", 0.05)
                kw.setdefault("data_url_max_bytes", 0)  # every file through the files API
                return ReplicateProvider(key, base_url=rep.url, **kw)

            yield Kit(
                name="replicate",
                endpoint="google/veo-3.1",
                i2v_endpoint="google/veo-3.1",
                image_field="image",
                payload=lambda seed: {"prompt": f"a fox, take {seed}", "duration": 4, "seed": seed},
                new=new_replicate,
                server=rep,
                refused={"aspect_ratio": "4:3"},  # Replicate: 422 "Input validation failed"
            )
    else:
        work = tmp_path / "renders"

        def new_preview(**kw: Any) -> Provider:
            return PreviewProvider(work, **kw)

        yield Kit(
            name="preview",
            endpoint=PREVIEW_ENDPOINT,
            i2v_endpoint=PREVIEW_ENDPOINT,
            image_field="image_url",
            payload=lambda seed: {
                "prompt": f"a fox, take {seed}",
                "duration": 1,
                "seed": seed,
                "resolution": "360p",
                "fps": 12,
            },
            new=new_preview,
            # the preview reads local files only: a remote keyframe is refused before any render
            refused={"image_url": "https://example.invalid/frame.png"},
        )


def _refusing(kit: Kit) -> tuple[Provider, dict[str, Any]]:
    """A provider and a payload the service refuses (fal refuses the request's header, the
    others the payload)."""
    if kit.name == "fal":
        return kit.new(**kit.refused), kit.payload(1)
    return kit.new(), {**kit.payload(1), **kit.refused}


def decoded_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        frames = sum(1 for _ in container.decode(video=0))
        return frames / float(container.streams.video[0].average_rate)


# ---------------------------------------------------------------- the happy path


def test_submit_wait_outcome_and_download(kit: Kit, tmp_path: Path) -> None:
    updates: list[StatusUpdate] = []
    dest = tmp_path / "out" / "clip.mp4.part"

    async def main() -> tuple[Submission, Outcome, Download]:
        async with kit.new() as p:
            await p.check_auth([kit.endpoint])
            sub = await p.submit(kit.endpoint, kit.payload(7))
            outcome = await p.wait(sub, updates.append)
            return sub, outcome, await p.download(outcome.video_url, dest)

    sub, outcome, download = run(main())
    assert isinstance(sub, Submission) and sub.request_id and sub.endpoint == kit.endpoint
    assert isinstance(outcome, Outcome) and outcome.video_url and outcome.seed == 7
    assert updates and updates[-1].state == "COMPLETED"
    data = dest.read_bytes()
    assert isinstance(download, Download)
    assert download == Download(len(data), hashlib.sha256(data).hexdigest()) and download.size > 1000
    assert decoded_seconds(dest) > 0.5  # a real, decodable clip
    assert kit.submits() == (0 if kit.server is None else 1)


def test_upload_gives_a_url_a_payload_can_carry(kit: Kit, tmp_path: Path) -> None:
    frame = write_png(tmp_path / "frame.png", (1280, 720))
    copy = tmp_path / "again.png"
    copy.write_bytes(frame.read_bytes())

    async def main() -> tuple[str, str, Outcome]:
        async with kit.new() as p:
            first, second = await asyncio.gather(p.upload(frame), p.upload(copy))
            sub = await p.submit(kit.i2v_endpoint, {**kit.payload(3), kit.image_field: first})
            return first, second, await p.wait(sub)

    first, second, outcome = run(main())
    assert first.startswith(("http://", "https://", "file://")) and outcome.video_url
    if kit.server is None:  # the preview reads each local file where it is: nothing goes anywhere
        assert {first, second} == {frame.resolve().as_uri(), copy.resolve().as_uri()}
    else:  # a service: one upload per content, whatever the file's name
        assert first == second and kit.uploads() == 1


def test_cancel_makes_wait_a_final_failure(kit: Kit) -> None:
    kit.slow_down(10)

    async def main() -> tuple[Submission, RequestFailed]:
        async with kit.new(**({"latency_s": 10} if kit.server is None else {})) as p:
            sub = await p.submit(kit.endpoint, kit.payload(5))
            await p.cancel(sub)
            with pytest.raises(RequestFailed) as failed:
                await asyncio.wait_for(p.wait(sub), 5)
            await p.cancel(sub)  # cancelling again is harmless
            return sub, failed.value

    sub, failed = run(main())
    assert not isinstance(failed, TransientError)
    assert failed.request_id in (None, sub.request_id)
    assert "cancel" in str(failed).lower()


def test_the_schema_source_gives_the_document_payloads_are_checked_on(kit: Kit, tmp_path: Path) -> None:
    store = kit.schema_store(tmp_path / "cache")
    schema = store.get(kit.endpoint)
    # The kit's payload as this endpoint declares it (fal's Kling 3.0 takes no seed: it is dropped).
    payload = {k: v for k, v in kit.payload(4).items() if k in schema.properties}
    assert {"prompt", "duration"} <= set(payload)
    assert schema.validate(payload) == [] and schema.unknown_keys(payload) == []
    assert [str(issue) for issue in schema.validate({**payload, "prompt": 7})]  # a wrong type is named
    assert schema.unknown_keys({**payload, "no_such_field": 1}) == ["no_such_field"]
    again = kit.schema_store(tmp_path / "cache").get(kit.endpoint)  # a new run: the disk cache
    assert again.sha256 == schema.sha256 and kit.schema_fetches() == (0 if kit.server is None else 1)


@pytest.mark.parametrize("kit", ["fal", "replicate"], indirect=True)
def test_a_busy_answer_is_retried_and_the_request_is_not_sent_again(kit: Kit, tmp_path: Path) -> None:
    kit.busy_once()

    async def main() -> Outcome:
        async with kit.new() as p:
            return await p.wait(await p.submit(kit.endpoint, kit.payload(2)))

    assert run(main()).video_url
    assert kit.submits() == 1 and kit.duplicates() == 0


# ---------------------------------------------------------------- keys and refusals


def test_check_auth_with_a_bad_key_is_one_line(kit: Kit) -> None:
    if kit.server is None:  # the preview: no key at all, and nothing to refuse it
        assert "key" not in PreviewProvider.__init__.__code__.co_varnames
        run(kit.new().check_auth([kit.endpoint]))
        return

    async def main() -> AuthError:
        async with kit.new(key=BAD_KEY) as p:
            with pytest.raises(AuthError) as refused:
                await p.check_auth([kit.endpoint])
            with pytest.raises(AuthError):
                await p.submit(kit.endpoint, kit.payload(1))
            return refused.value

    error = run(main())
    assert "\n" not in str(error) and BAD_KEY not in str(error)
    assert kit.submits() == 0


def test_a_refused_request_is_request_failed_and_creates_nothing(kit: Kit) -> None:
    provider, payload = _refusing(kit)

    async def main() -> RequestFailed:
        async with provider as p:
            with pytest.raises(RequestFailed) as refused:
                await p.submit(kit.endpoint, payload)
            return refused.value

    error = run(main())
    assert not isinstance(error, TransientError | SubmitNotAccepted)  # final: never resubmitted
    assert "\n" not in str(error)
    if kit.server is not None:
        assert error.status_code is not None and 400 <= error.status_code < 500
    assert kit.submits() == 0


# ---------------------------------------------------------------- reconcile and resume


def test_a_lost_submit_answer_is_found_in_the_history(kit: Kit) -> None:
    async def no_history() -> Any:
        async with kit.new() as p:
            return await p.history(kit.endpoint, time.time() - 60)

    if kit.server is None:  # the preview keeps none: a lost submit cannot be looked up there
        assert run(no_history()) is None
        return
    kit.lose_next_submit_answer()
    payload = kit.payload(11)
    policy = ReconcilePolicy(skew_s=5)

    async def main() -> tuple[Verdict, Outcome]:
        async with kit.new() as p:
            sent_from = time.time()
            with pytest.raises(TransientError):  # outcome unknown: not "not accepted"
                await p.submit(kit.endpoint, payload)
            lost = LostSubmit(kit.endpoint, payload, sent_from, time.time(), p.start_timeout)
            verdict, deadline = Verdict.NOT_YET, time.monotonic() + 10
            while verdict is Verdict.NOT_YET and time.monotonic() < deadline:
                rows = await p.history(kit.endpoint, sent_from - policy.skew_s)
                assert rows is not None
                verdict = lost.judge(rows, policy, time.time())
                if verdict is Verdict.NOT_YET:
                    await asyncio.sleep(0.1)  # fal lists a request once it has started
            [row] = lost.matches(rows, policy)
            outcome = await p.wait(p.attach({"request_id": row.request_id, "endpoint": kit.endpoint}))
            return verdict, outcome

    verdict, outcome = run(main())
    assert verdict is Verdict.FOUND and outcome.seed == 11
    assert kit.submits() == 1 and kit.duplicates() == 0


def test_resume_attaches_to_the_same_request(kit: Kit, tmp_path: Path) -> None:
    async def submit_and_crash() -> dict[str, Any]:
        async with kit.new() as p:
            sub = await p.submit(kit.endpoint, kit.payload(21))
            if kit.server is None:  # the preview renders in this process: let it finish first
                await p.wait(sub)
            return sub.to_dict()  # what the runner journals before it waits

    async def resume(journalled: dict[str, Any]) -> tuple[Submission, Outcome, Download]:
        async with kit.new() as p:  # a fresh process: nothing in memory
            sub = p.attach(journalled)
            outcome = await p.wait(sub)
            return sub, outcome, await p.download(outcome.video_url, tmp_path / "resumed.mp4")

    journalled = run(submit_and_crash())
    sub, outcome, download = run(resume(journalled))
    assert sub.request_id == journalled["request_id"] and sub.endpoint == kit.endpoint
    assert sub.status_url or kit.server is None
    assert outcome.seed == 21 and download.size == (tmp_path / "resumed.mp4").stat().st_size
    assert kit.submits() == (0 if kit.server is None else 1)
