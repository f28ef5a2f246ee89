"""The preview renderer (providers/preview_render.py): camera words, sizes, and real clips:
exact frame counts, the keyframe's camera moves, the crossfade, multi-shot cuts, determinism.

Its helpers (rendering a small clip, decoding its frames, comparing them) serve the other
preview tests too: test_preview_cards, test_preview_frames, test_preview.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image, ImageOps

from aivp_batch.errors import MediaError
from aivp_batch.media import probe
from aivp_batch.providers.preview_render import camera_move, render_preview, size_for

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


# ------------------------------------------------------------------ sizes


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


# ------------------------------------------------------------------ slate-sized clips and their regions
# (also used by test_preview_cards)

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


# ------------------------------------------------------------------ same bytes, and a clip that verifies


@pytest.mark.parametrize("with_image", [False, True])
def test_same_seed_same_frames_other_seed_other_frames(tmp_path: Path, with_image: bool) -> None:
    extra = {"start_image": _grid(tmp_path / "ff.png")} if with_image else {}
    a = _frames(_render(tmp_path / "a.mp4", seed=11, **extra))
    b = _frames(_render(tmp_path / "b.mp4", seed=11, **extra))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    if not with_image:
        c = _frames(_render(tmp_path / "c.mp4", seed=12))
        assert _mad(a[0], c[0]) > 1


def test_render_output_passes_verify(tmp_path: Path) -> None:
    from aivp_batch.media import verify_clip

    clip = _render(tmp_path / "v.mp4", duration_s=2.0)
    assert verify_clip(clip, 2.0).frames == 24
    with pytest.raises(MediaError):
        verify_clip(clip, 3.0)


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
