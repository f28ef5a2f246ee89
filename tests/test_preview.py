"""The preview provider (providers/preview.py): the OpenAPI schema it publishes, and
PreviewProvider's submit/wait/download/cancel/resume cycle, single shots and multi-shot groups.
What the clips look like is tested in test_preview_render and test_preview_cards."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from test_preview_render import _grid

from aivp_batch.errors import RequestFailed
from aivp_batch.media import probe
from aivp_batch.providers.base import StatusUpdate
from aivp_batch.providers.preview import PREVIEW_ENDPOINT, PreviewProvider, preview_openapi

# ------------------------------------------------------------------ the published schema


def _input_validator() -> Draft202012Validator:
    doc = preview_openapi()
    return Draft202012Validator({**doc, "$ref": "#/components/schemas/PreviewInput"})


def test_openapi_document_is_shaped_like_fals() -> None:
    doc = preview_openapi()
    body = doc["paths"][f"/{PREVIEW_ENDPOINT}"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"] == "#/components/schemas/PreviewInput"
    schema = doc["components"]["schemas"]["PreviewInput"]
    assert schema["required"] == ["prompt", "duration"]
    assert schema["properties"]["image_url"]["x-fal"]["max_file_size"] == 52428800
    assert schema["properties"]["end_image_url"]["x-fal"]["min_width"] == 64
    assert schema["properties"]["fps"]["default"] == 24
    Draft202012Validator.check_schema({**doc, "$ref": "#/components/schemas/PreviewInput"})


def test_openapi_validates_a_typical_payload() -> None:
    payload = {
        "prompt": "A lighthouse at dusk, slow push in",
        "duration": 5,
        "image_url": "file:///tmp/shot-01-ff.png",
        "end_image_url": None,
        "aspect_ratio": "9:16",
        "resolution": "720p",
        "fps": 24,
        "seed": 42,
        "title": "shot-01",
        "dialogue": "林夏：我们走吧。",
        "camera_move": None,
    }
    assert list(_input_validator().iter_errors(payload)) == []
    assert (
        list(_input_validator().iter_errors({"prompt": "x", "duration": 1, "camera_move": "pan_left"})) == []
    )


@pytest.mark.parametrize(
    "payload",
    [
        {"duration": 5},
        {"prompt": "", "duration": 5},
        {"prompt": "x", "duration": 0},
        {"prompt": "x", "duration": 61},
        {"prompt": "x", "duration": 5.5},
        {"prompt": "x", "duration": 5, "aspect_ratio": "2:1"},
        {"prompt": "x", "duration": 5, "resolution": "4k"},
        {"prompt": "x", "duration": 5, "fps": 120},
        {"prompt": "x", "duration": 5, "seed": "abc"},
        {"prompt": "x", "duration": 5, "camera_move": "orbit"},
        {"prompt": "x", "duration": 5, "image_url": 3},
        {"prompt": "x", "duration": 5, "dialogue": 3},
    ],
)
def test_openapi_rejects_bad_payloads(payload: dict) -> None:
    assert list(_input_validator().iter_errors(payload))


# ------------------------------------------------------------------ the provider


def _payload(**kw: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"prompt": "push in on the door", "duration": 1, "resolution": "360p", "fps": 8}
    payload.update(kw)
    return payload


def test_provider_full_cycle(tmp_path: Path) -> None:
    key = _grid(tmp_path / "ff.png")
    statuses: list[StatusUpdate] = []

    async def go() -> tuple[Any, Any, int, list[str]]:
        async with PreviewProvider(tmp_path / "renders") as provider:
            uri = await provider.upload(key)
            sub = await provider.submit(
                PREVIEW_ENDPOINT, _payload(image_url=uri, seed=None, aspect_ratio="9:16")
            )
            outcome = await provider.wait(sub, statuses.append)
            size = (await provider.download(outcome.video_url, tmp_path / "out" / "clip.mp4.part")).size
            return uri, outcome, size, [sub.request_id, sub.endpoint]

    uri, outcome, size, (request_id, endpoint) = asyncio.run(go())
    assert uri.startswith("file://") and uri == key.resolve().as_uri()
    assert endpoint == PREVIEW_ENDPOINT and len(request_id) == 32
    assert [s.state for s in statuses] == ["IN_PROGRESS", "COMPLETED"]
    assert isinstance(outcome.seed, int) and outcome.output["seed"] == outcome.seed
    assert outcome.output["video"] == {"url": outcome.video_url, "content_type": "video/mp4"}
    assert outcome.video_url == (tmp_path / "renders" / f"{request_id}.mp4").resolve().as_uri()
    clip = tmp_path / "out" / "clip.mp4.part"
    assert size == clip.stat().st_size
    info = probe(clip)
    assert (info.width, info.height, info.frames, info.has_audio) == (360, 640, 8, True)
    assert not list((tmp_path / "renders").glob("*.part"))


def test_provider_passes_the_dialogue_and_shot_id_to_the_slate() -> None:
    settings = PreviewProvider._settings(_payload(title="shot-04", dialogue="  林夏：走吧。 "))
    assert settings["title"] == "shot-04" and settings["dialogue"] == "  林夏：走吧。 "
    assert PreviewProvider._settings(_payload(dialogue=None))["dialogue"] is None
    assert PreviewProvider._settings(_payload(dialogue=""))["dialogue"] is None


def test_provider_keeps_a_given_seed_and_accepts_plain_paths(tmp_path: Path) -> None:
    key = _grid(tmp_path / "ff.png")

    async def go() -> int | None:
        async with PreviewProvider(tmp_path / "renders", latency_s=0.01) as provider:
            sub = await provider.submit(
                PREVIEW_ENDPOINT, _payload(seed=1234, image_url=str(key), title="shot-02")
            )
            return (await provider.wait(sub)).seed

    assert asyncio.run(go()) == 1234


def test_provider_reports_a_failed_render(tmp_path: Path) -> None:
    async def go() -> None:
        provider = PreviewProvider(tmp_path / "renders")
        sub = await provider.submit(PREVIEW_ENDPOINT, _payload(image_url=(tmp_path / "missing.png").as_uri()))
        await provider.wait(sub)

    with pytest.raises(RequestFailed, match="preview render failed"):
        asyncio.run(go())
    assert not list((tmp_path / "renders").glob("*.part"))


def test_provider_cancel(tmp_path: Path) -> None:
    async def go() -> None:
        provider = PreviewProvider(tmp_path / "renders", latency_s=5)
        sub = await provider.submit(PREVIEW_ENDPOINT, _payload())
        await provider.cancel(sub)
        await provider.wait(sub)

    with pytest.raises(RequestFailed, match="cancelled"):
        asyncio.run(go())


def test_provider_resumes_a_finished_request_after_a_restart(tmp_path: Path) -> None:
    async def go() -> tuple[Any, Any]:
        first = PreviewProvider(tmp_path / "renders")
        sub = await first.submit(PREVIEW_ENDPOINT, _payload(seed=77))
        done = await first.wait(sub)
        again = PreviewProvider(tmp_path / "renders")  # a new process: no task, only files
        return done, await again.wait(again.attach(sub.to_dict()))

    done, resumed = asyncio.run(go())
    assert resumed.video_url == done.video_url and resumed.seed == 77


def test_provider_unknown_request_and_remote_urls(tmp_path: Path) -> None:
    async def unknown() -> None:
        provider = PreviewProvider(tmp_path / "renders")
        await provider.wait(provider.attach({"request_id": "nope", "endpoint": PREVIEW_ENDPOINT}))

    async def remote() -> None:
        await PreviewProvider(tmp_path).download("https://example.com/x.mp4", tmp_path / "x.mp4")

    with pytest.raises(RequestFailed, match="unknown"):
        asyncio.run(unknown())
    with pytest.raises(RequestFailed, match="local files only"):
        asyncio.run(remote())


def test_provider_cancel_stops_a_running_render(tmp_path: Path) -> None:
    async def go() -> None:
        provider = PreviewProvider(tmp_path / "renders")
        sub = await provider.submit(PREVIEW_ENDPOINT, _payload(duration=60, fps=24))
        await asyncio.sleep(0.3)  # the worker thread is encoding now
        await provider.cancel(sub)
        await provider.wait(sub)

    started = time.monotonic()
    with pytest.raises(RequestFailed, match="cancelled"):
        asyncio.run(go())  # returns once the worker thread has stopped, too
    assert time.monotonic() - started < 5
    assert not list((tmp_path / "renders").glob("*.mp4*"))


# ------------------------------------------------------------------ multi-shot groups


def test_the_schema_takes_a_multi_prompt_list() -> None:
    item = {"prompt": "A lighthouse", "duration": 2, "title": "shot-01", "caption": None, "dialogue": "Hi"}
    ok = {
        "prompt": "group-01: shot-01, shot-02",
        "duration": 5,
        "multi_prompt": [item, {**item, "duration": 3}],
    }
    assert list(_input_validator().iter_errors(ok)) == []
    for bad in (
        {**item, "duration": 0},
        {"duration": 2},
        {**item, "prompt": ""},
        {**item, "camera_move": "orbit"},
    ):
        assert list(_input_validator().iter_errors({**ok, "multi_prompt": [bad]})), bad
    assert list(_input_validator().iter_errors({**ok, "multi_prompt": []}))


def test_provider_renders_a_multi_prompt_payload(tmp_path: Path) -> None:
    items = [
        {"prompt": "Static: a lighthouse", "duration": 1, "title": "shot-01"},
        {"prompt": "pan left over the sea", "duration": 2, "title": "shot-02", "dialogue": "Look!"},
    ]
    settings = PreviewProvider._settings(_payload(duration=3, multi_prompt=items))
    assert settings["duration_s"] == 3.0
    assert [(s["title"], s["duration_s"], s["camera"], s["dialogue"]) for s in settings["shots"]] == [
        ("shot-01", 1.0, "static", None),
        ("shot-02", 2.0, "pan_left", "Look!"),
    ]
    assert PreviewProvider._settings(_payload())["shots"] is None

    async def go() -> Path:
        async with PreviewProvider(tmp_path / "renders") as provider:
            sub = await provider.submit(PREVIEW_ENDPOINT, _payload(duration=3, multi_prompt=items))
            outcome = await provider.wait(sub)
            await provider.download(outcome.video_url, tmp_path / "group.mp4")
            return tmp_path / "group.mp4"

    info = probe(asyncio.run(go()))
    assert (info.frames, info.has_audio) == (24, True)  # 3 s at 8 fps
