from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from jsonschema import Draft202012Validator
from PIL import Image, ImageOps

from aivp_batch.errors import MediaError, RequestFailed
from aivp_batch.media import probe
from aivp_batch.providers import preview
from aivp_batch.providers.base import StatusUpdate
from aivp_batch.providers.preview import (
    PREVIEW_ENDPOINT,
    PreviewProvider,
    camera_move,
    preview_openapi,
    render_preview,
    size_for,
)

W, H, FPS = 160, 90, 12


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24").astype(np.float32) for f in container.decode(video=0)]


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def _grid(path: Path, size: tuple[int, int] = (320, 180), cell: int = 40, shift: int = 0) -> Path:
    """A keyframe with structure everywhere, so any move or zoom shows up in the pixels."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack(
        [
            ((xx // cell + shift) * 53 % 256),
            ((yy // cell + shift) * 97 % 256),
            (((xx // cell) + (yy // cell)) % 2) * 200 + 30,
        ],
        axis=-1,
    ).astype(np.uint8)
    Image.fromarray(img, "RGB").save(path)
    return path


def _render(dest: Path, **kw: Any) -> Path:
    args: dict[str, Any] = dict(
        width=W, height=H, fps=FPS, duration_s=1.0, seed=3, prompt="p", title="shot-01"
    )
    args.update(kw)
    render_preview(dest, **args)
    return dest


# ------------------------------------------------------------------ camera words


@pytest.mark.parametrize(
    ("prompt", "move"),
    [
        ("Slow push in on her face as she turns.", "push_in"),
        ("The camera dollies in toward the door", "push_in"),
        ("Zoom in on the clock", "push_in"),
        ("镜头缓缓推进，女孩抬头", "push_in"),
        ("镜头拉近到手部特写", "push_in"),
        ("Camera pulls out to reveal the city", "pull_out"),
        ("zoom out slowly", "pull_out"),
        ("镜头拉远，展现整个山谷", "pull_out"),
        ("The camera pans left across the market", "pan_left"),
        ("镜头左摇，跟随人物", "pan_left"),
        ("镜头向左移动", "pan_left"),
        ("pan right over the skyline", "pan_right"),
        ("镜头右摇", "pan_right"),
        ("Tilt up to the tower top", "tilt_up"),
        ("镜头上摇至天空", "tilt_up"),
        ("仰拍高楼", "tilt_up"),
        ("tilt down to the street", "tilt_down"),
        ("镜头下摇", "tilt_down"),
        ("Static shot of a quiet room", "static"),
        ("Locked-off camera, rain on the window", "static"),
        ("固定镜头，人物说话", "static"),
        ("A cat sleeps on a sofa", "static"),
        ("", "static"),
        ("[Camera: static, eye level] the wind moves the curtains; she pans left her gaze", "static"),
        ("She walks forward. [Camera: push in, slow]", "push_in"),
        ("[camera：向右] 街景", "pan_right"),
        # The camera is usually stated first; later movement words describe the subject.
        ("The camera pans right as she tilts up her head", "pan_right"),
        ("Ecstatic crowd cheering", "static"),
    ],
)
def test_camera_move_reads_english_chinese_and_kling_tags(prompt: str, move: str) -> None:
    assert camera_move(prompt) == move


def test_camera_move_does_not_read_words_it_does_not_know() -> None:
    assert camera_move("He pushes the door open") == "static"
    assert camera_move("他推开门走进房间") == "static"


# ------------------------------------------------------------------ sizes and schema


@pytest.mark.parametrize(
    ("resolution", "aspect", "size"),
    [
        ("720p", "16:9", (1280, 720)),
        ("720p", "9:16", (720, 1280)),
        ("720p", "1:1", (720, 720)),
        ("720p", "4:3", (960, 720)),
        ("720p", "3:4", (720, 960)),
        ("720p", "21:9", (1680, 720)),
        ("480p", "16:9", (854, 480)),
        ("1080p", "9:16", (1080, 1920)),
        ("360p", "16:9", (640, 360)),
    ],
)
def test_size_for(resolution: str, aspect: str, size: tuple[int, int]) -> None:
    assert size_for(resolution, aspect) == size


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


# ------------------------------------------------------------------ rendering


@pytest.mark.parametrize("aspect", ["16:9", "9:16", "1:1", "21:9"])
def test_render_has_exact_frames_duration_audio_and_size(tmp_path: Path, aspect: str) -> None:
    width, height = size_for("96p", aspect)
    clip = _render(tmp_path / "clip.mp4.part", width=width, height=height, duration_s=1.5)
    info = probe(clip)
    assert (info.width, info.height) == (width, height)
    assert info.frames == 18
    assert info.duration_s == pytest.approx(1.5, abs=1e-6)
    assert info.fps == pytest.approx(FPS)
    assert info.has_audio and info.video_codec == "h264"
    with av.open(str(clip)) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac"
        assert float(audio.duration * audio.time_base) == pytest.approx(1.5, abs=0.05)
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"


def test_render_rejects_odd_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        _render(tmp_path / "odd.mp4", width=161)


def test_i2v_push_in_zooms_the_centre(tmp_path: Path) -> None:
    key = _grid(tmp_path / "ff.png")
    frames = _frames(_render(tmp_path / "push.mp4", start_image=key, camera="push_in", overlay=False))
    first, last = frames[0], frames[-1]
    # The first frame is the keyframe cover-fitted to the frame.
    fitted = np.asarray(ImageOps.fit(Image.open(key).convert("RGB"), (W, H), Image.LANCZOS), np.float32)
    assert _mad(first, fitted) < 8
    # The last frame is the first one's centre, scaled by 1.15.
    cw, ch = W / 1.15, H / 1.15
    box = ((W - cw) / 2, (H - ch) / 2, (W + cw) / 2, (H + ch) / 2)
    zoomed = np.asarray(
        Image.fromarray(first.astype(np.uint8)).resize((W, H), Image.BILINEAR, box=box), np.float32
    )
    assert _mad(last, first) > 20
    assert _mad(last, zoomed) < _mad(last, first) / 3


def test_i2v_pull_out_is_the_reverse(tmp_path: Path) -> None:
    key = _grid(tmp_path / "ff.png")
    push = _frames(_render(tmp_path / "push.mp4", start_image=key, camera="push_in"))
    pull = _frames(_render(tmp_path / "pull.mp4", start_image=key, camera="pull_out"))
    assert _mad(push[0], pull[-1]) < 8
    assert _mad(push[-1], pull[0]) < 8


@pytest.mark.parametrize(
    ("move", "axis", "sign"), [("pan_left", 1, 1), ("pan_right", 1, -1), ("tilt_up", 0, 1)]
)
def test_i2v_pan_and_tilt_move_the_window(tmp_path: Path, move: str, axis: int, sign: int) -> None:
    key = _grid(tmp_path / "ff.png")
    frames = _frames(_render(tmp_path / f"{move}.mp4", start_image=key, camera=move, overlay=False))
    first, last = frames[0], frames[-1]
    # The window travels the 15% head-room: content slides by that many pixels, the other way.
    travel = round(0.15 * (W if axis == 1 else H))
    shifted = np.roll(first, sign * travel, axis=axis)
    keep = [slice(None), slice(None)]
    keep[axis] = slice(travel, -travel)
    assert _mad(last[tuple(keep)], shifted[tuple(keep)]) < 10
    assert _mad(last, first) > 20


def test_i2v_static_barely_moves(tmp_path: Path) -> None:
    key = _grid(tmp_path / "ff.png")
    frames = _frames(_render(tmp_path / "static.mp4", start_image=key, camera="static"))
    assert 0 < _mad(frames[0], frames[-1]) < 10


def test_i2v_crossfades_to_the_end_frame(tmp_path: Path) -> None:
    key = _grid(tmp_path / "ff.png")
    end = tmp_path / "lf.png"
    Image.new("RGB", (400, 300), (230, 40, 40)).save(end)
    frames = _frames(
        _render(tmp_path / "fade.mp4", start_image=key, end_image=end, duration_s=2.0, overlay=False)
    )
    target = np.asarray(ImageOps.fit(Image.open(end).convert("RGB"), (W, H)), np.float32)
    assert len(frames) == 24
    assert _mad(frames[-1], target) < 4  # the clip lands on the end frame
    assert _mad(frames[len(frames) // 2], target) > 40  # the first 60% are the keyframe alone
    blend = frames[int(len(frames) * 0.8)]
    assert _mad(blend, target) > 10 and _mad(blend, frames[0]) > 10


def test_t2v_title_card_moves_and_is_dark(tmp_path: Path) -> None:
    frames = _frames(_render(tmp_path / "card.mp4", prompt="A lighthouse at dusk. " * 12, title="shot-07"))
    first, last = frames[0], frames[-1]
    assert first.mean() < 100  # dark background
    assert first[: H // 2].max() > 200  # the title is drawn in light text
    assert 0.5 < _mad(first, last) < 30  # the progress bar and timecode move; the card stays


def test_t2v_card_draws_chinese_prompts(tmp_path: Path) -> None:
    clip = _render(
        tmp_path / "zh.mp4", prompt="夕阳下的灯塔，镜头缓缓推进，海浪拍打礁石。" * 5, title="镜头-01"
    )
    assert probe(clip).frames == FPS


def test_the_cjk_font_comes_from_the_package_dependency() -> None:
    # Not a system font: CI installs only what pyproject names.
    path = Path(preview._cjk_font_file() or "")
    assert path.is_file() and path.name == "NotoSansCJKjp-Regular.otf"
    assert path.parent.name == "noto_cjk_sans_jp_regular"


_ZH_A, _ZH_B = "夕阳下的灯塔，镜头缓缓推进。" * 4, "海浪拍打礁石，女孩抬头看天。" * 4


def _card(path: Path, prompt: str) -> np.ndarray:
    return _frames(_render(path, width=320, height=180, duration_s=0.25, prompt=prompt, title="镜头-01"))[0]


def test_t2v_card_draws_cjk_glyphs_not_tofu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    noto_a, noto_b = _card(tmp_path / "a.mp4", _ZH_A), _card(tmp_path / "b.mp4", _ZH_B)
    monkeypatch.setattr(preview, "_cjk_font_file", lambda: None)  # the built-in font alone
    tofu_a, tofu_b = _card(tmp_path / "ta.mp4", _ZH_A), _card(tmp_path / "tb.mp4", _ZH_B)
    assert _mad(noto_a, tofu_a) > 3  # the card is not the one the fallback font draws
    # The fallback draws every character as the same box, so two texts of one length look alike;
    # real glyphs tell them apart.
    assert _mad(tofu_a, tofu_b) < 0.5
    assert _mad(noto_a, noto_b) > 1


# ------------------------------------------------------------------ the burned-in slate

SW, SH = 320, 180
_TOP_LEFT = (slice(0, int(SH * 0.12)), slice(0, int(SW * 0.3)))  # PREVIEW and the shot id
_TOP_RIGHT = (slice(0, int(SH * 0.12)), slice(int(SW * 0.8), SW))  # mm:ss
_MIDDLE = (slice(int(SH * 0.3), int(SH * 0.7)), slice(None))
_BOTTOM = (slice(int(SH * 0.8), SH), slice(None))  # the dialogue line


def _flat(path: Path, colour: tuple[int, int, int]) -> tuple[Path, np.ndarray]:
    """A one-colour keyframe (the camera move can't show on it) and the frame it fills."""
    Image.new("RGB", (400, 300), colour).save(path)
    return path, np.full((SH, SW, 3), colour, np.float32)


def _slated(path: Path, **kw: Any) -> list[np.ndarray]:
    args: dict[str, Any] = dict(width=SW, height=SH, duration_s=2.5, camera="push_in")
    args.update(kw)
    return _frames(_render(path, **args))


def test_i2v_frames_carry_the_slate_and_the_clock_ticks(tmp_path: Path) -> None:
    key, grey = _flat(tmp_path / "ff.png", (128, 128, 128))
    frames = _slated(tmp_path / "i2v.mp4", start_image=key)
    assert len(frames) == 30
    for frame in frames[::7]:
        assert _mad(frame[_TOP_LEFT], grey[_TOP_LEFT]) > 15  # the slate is burned in
        assert _mad(frame[_MIDDLE], grey[_MIDDLE]) < 2  # and the picture is left alone
        assert _mad(frame[_BOTTOM], grey[_BOTTOM]) < 2  # no dialogue, no dialogue box
    clean = _slated(tmp_path / "clean.mp4", start_image=key, overlay=False)
    assert _mad(clean[0][_TOP_LEFT], grey[_TOP_LEFT]) < 2
    # mm:ss: one picture through each second, a new one each second (frames 0, 12, 24 at 12 fps).
    clock = [frame[_TOP_RIGHT] for frame in frames]
    assert np.abs(clock[0] - clock[11]).max() < 16
    assert np.abs(clock[12] - clock[23]).max() < 16
    assert np.abs(clock[0] - clock[12]).max() > 60
    assert np.abs(clock[12] - clock[24]).max() > 60
    assert _mad(clock[0], grey[_TOP_RIGHT]) > 10


def test_flf_frames_carry_the_slate_and_the_dialogue(tmp_path: Path) -> None:
    key, _grey = _flat(tmp_path / "ff.png", (128, 128, 128))
    end, red = _flat(tmp_path / "lf.png", (200, 40, 40))
    frames = _slated(tmp_path / "flf.mp4", start_image=key, end_image=end, dialogue="林夏：我们走吧。")
    last = frames[-1]
    assert _mad(last[_MIDDLE], red[_MIDDLE]) < 3  # it lands on the end frame…
    assert _mad(last[_TOP_LEFT], red[_TOP_LEFT]) > 15  # …under the slate
    assert _mad(last[_BOTTOM], red[_BOTTOM]) > 4  # and the dialogue line
    quiet = _slated(tmp_path / "quiet.mp4", start_image=key, end_image=end)
    assert _mad(quiet[-1][_BOTTOM], red[_BOTTOM]) < 2
    assert _mad(quiet[-1][_TOP_LEFT], last[_TOP_LEFT]) < 8  # the same slate (up to x264's noise)


def test_the_slate_shows_the_shot_id(tmp_path: Path) -> None:
    key, _grey = _flat(tmp_path / "ff.png", (128, 128, 128))
    one = _slated(tmp_path / "one.mp4", start_image=key, title="shot-01", duration_s=0.25)
    two = _slated(tmp_path / "two.mp4", start_image=key, title="shot-29", duration_s=0.25)
    assert np.abs(one[0][_TOP_LEFT] - two[0][_TOP_LEFT]).max() > 60


def test_t2v_dialogue_sits_above_the_progress_bar(tmp_path: Path) -> None:
    plain = _slated(tmp_path / "plain.mp4", prompt="A lighthouse at dusk.", duration_s=0.25)[0]
    spoken = _slated(
        tmp_path / "spoken.mp4",
        prompt="A lighthouse at dusk.",
        duration_s=0.25,
        dialogue="Let's go, the tide is coming in.",
    )[0]
    bar, centre = SH - round(SH * 0.12), slice(int(SW * 0.35), int(SW * 0.65))
    assert _mad(spoken[bar - 30 : bar, centre], plain[bar - 30 : bar, centre]) > 5  # just above the bar
    assert _mad(spoken[bar:], plain[bar:]) < 1  # bar, timecode and footer untouched


@pytest.mark.parametrize("with_image", [False, True])
def test_same_seed_same_frames_other_seed_other_frames(tmp_path: Path, with_image: bool) -> None:
    extra = {"start_image": _grid(tmp_path / "ff.png")} if with_image else {}
    a = _frames(_render(tmp_path / "a.mp4", seed=11, **extra))
    b = _frames(_render(tmp_path / "b.mp4", seed=11, **extra))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    if not with_image:
        c = _frames(_render(tmp_path / "c.mp4", seed=12))
        assert _mad(a[0], c[0]) > 1


@pytest.mark.parametrize(("width", "mbtree"), [(W, b"mbtree=0"), (256, b"mbtree=1")])
def test_mbtree_is_off_where_x264_would_make_it_nondeterministic(
    tmp_path: Path, width: int, mbtree: bytes
) -> None:
    # x264's AVX-512 mbtree step handles 8 macroblocks at a time, so on a width that is not a
    # multiple of 128 pixels it can mix memory left over from earlier into the result
    # (preview._x264_options). x264 writes its settings into the stream, so they can be read back.
    clip = _render(tmp_path / "w.mp4", width=width, height=H)
    assert mbtree in clip.read_bytes()


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


def test_render_output_passes_verify(tmp_path: Path) -> None:
    from aivp_batch.media import verify_clip

    clip = _render(tmp_path / "v.mp4", duration_s=2.0)
    assert verify_clip(clip, 2.0).frames == 24
    with pytest.raises(MediaError):
        verify_clip(clip, 3.0)


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

_GROUP = [
    {"duration_s": 1, "prompt": "A lighthouse at dusk.", "title": "shot-01", "camera": "static"},
    {"duration_s": 2, "prompt": "Waves on the rocks.", "title": "shot-02", "dialogue": "Hold on!"},
    {"duration_s": 1, "prompt": "The lamp turns.", "title": "shot-03", "camera": "push_in"},
]


def test_multishot_renders_one_clip_with_a_cut_and_a_slate_per_shot(tmp_path: Path) -> None:
    frames = _slated(tmp_path / "group.mp4", shots=_GROUP)
    assert len(frames) == 4 * FPS  # 1 + 2 + 1 s
    cuts = (FPS, 3 * FPS)
    card = (slice(int(SH * 0.3), int(SH * 0.45)), slice(int(SW * 0.8), SW))  # background, clear of text
    for cut in cuts:
        # A hard cut: each shot its own card colour, while within a shot the card holds still.
        assert _mad(frames[cut - 1][card], frames[cut][card]) > 8
        assert _mad(frames[cut][card], frames[cut + 1][card]) < 2
    # Each shot's own slate: its id top left, its clock from 00:00 again.
    assert np.abs(frames[0][_TOP_LEFT] - frames[FPS][_TOP_LEFT]).max() > 60

    def clock(frame: np.ndarray) -> np.ndarray:  # the light digits, whatever the card's colour
        return frame[_TOP_RIGHT].mean(axis=-1) > 150

    def changed(a: int, b: int) -> int:  # pixels of the digits that differ between two frames
        return int((clock(frames[a]) != clock(frames[b])).sum())

    assert changed(FPS, 0) <= 2  # shot-02 starts at 00:00 again
    assert changed(2 * FPS, FPS) > 6  # its 00:01
    assert changed(3 * FPS, 0) <= 2  # shot-03 starts at 00:00
    # shot-02's dialogue sits above its progress bar, on its frames only.
    bar, centre = SH - round(SH * 0.12), slice(int(SW * 0.35), int(SW * 0.65))
    line = (slice(bar - 30, bar), centre)
    assert _mad(frames[FPS + 2][line], frames[2][line]) > 5


def test_multishot_starts_from_the_keyframe_and_ends_on_the_end_frame(tmp_path: Path) -> None:
    key, grey = _flat(tmp_path / "ff.png", (128, 128, 128))
    end, red = _flat(tmp_path / "lf.png", (200, 40, 40))
    frames = _slated(tmp_path / "group.mp4", shots=_GROUP, start_image=key, end_image=end)
    assert _mad(frames[0][_MIDDLE], grey[_MIDDLE]) < 2  # shot-01 is the keyframe
    assert _mad(frames[FPS][_MIDDLE], grey[_MIDDLE]) > 30  # shot-02 is a card
    assert _mad(frames[-1][_MIDDLE], red[_MIDDLE]) < 3  # the last shot lands on the end frame


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
