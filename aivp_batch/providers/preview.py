"""The offline preview provider: a real MP4 animatic from a job, for free.

It lets a whole batch run end to end (payloads, files, logs, plan) before anything is paid for:
image-to-video jobs get their keyframe animated with the shot's camera move (and a crossfade to
the end frame), text-to-video jobs get a title card. It publishes its own OpenAPI input schema
so the runner validates preview payloads exactly like a hosted model's.
"""

from __future__ import annotations

import asyncio
import colorsys
import contextlib
import functools
import itertools
import json
import math
import queue
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlparse
from urllib.request import url2pathname

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..errors import InputError, RequestFailed
from ..media import even, frame_size
from .base import ClipSink, Download, Outcome, Provider, StatusCallback, StatusUpdate, Submission

PREVIEW_ENDPOINT = "aivp/preview"

CAMERA_MOVES = ("push_in", "pull_out", "pan_left", "pan_right", "tilt_up", "tilt_down", "static")
ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9")
RESOLUTIONS = ("360p", "480p", "720p", "1080p")

_ZOOM = 1.15  # push/pull range, and the head-room pans and tilts travel through
_FADE_FRACTION = 0.4  # the end frame crossfades in over the last 40% of the clip
_GROUP_HUE_STEP = 0.381966  # 1 - 1/φ: consecutive shots of a group get well-separated card hues
_AUDIO_RATE = 48_000
_BT601 = 6  # AVCOL_SPC/PRI/TRC_SMPTE170M
_MPEG_RANGE = 1  # AVCOL_RANGE_MPEG (limited)

# ---------------------------------------------------------------------------------------------
# Camera words
# ---------------------------------------------------------------------------------------------

# Checked against a lower-cased prompt; the earliest match in the text wins, because prompts
# usually state the camera first and mention other movement ("she looks up") later.
_CAMERA_PATTERNS: dict[str, tuple[str, ...]] = {
    "push_in": (
        r"\b(?:push(?:es|ing)?|dolly(?:ing)?|dollies|zoom(?:s|ing)?|track(?:s|ing)?|move(?:s)?|moving)"
        r"[\s-]+(?:slowly[\s-]+)?in(?:to|ward|wards)?\b",
        r"\bpush[\s-]?in\b",
        r"\bdolly[\s-]+forward\b",
        r"推进|推近|拉近|推(?![开动倒翻门])",
    ),
    "pull_out": (
        r"\b(?:pull(?:s|ing)?|dolly(?:ing)?|dollies|zoom(?:s|ing)?|track(?:s|ing)?)[\s-]+"
        r"(?:slowly[\s-]+)?(?:out|back|away)\b",
        r"\bpull[\s-]?back\b",
        r"拉远|后拉|拉出|远离",
    ),
    "pan_left": (
        r"\b(?:pan(?:s|ning|ned)?|truck(?:s|ing)?)[\s-]+(?:slowly[\s-]+)?(?:to[\s-]+the[\s-]+)?left\b",
        r"左摇|向左|左移",
    ),
    "pan_right": (
        r"\b(?:pan(?:s|ning|ned)?|truck(?:s|ing)?)[\s-]+(?:slowly[\s-]+)?(?:to[\s-]+the[\s-]+)?right\b",
        r"右摇|向右|右移",
    ),
    "tilt_up": (
        r"\b(?:tilt(?:s|ing|ed)?|crane(?:s|ing)?|pedestal(?:s|ing)?)[\s-]+(?:slowly[\s-]+)?up(?:ward|wards)?\b",
        r"上摇|仰",
    ),
    "tilt_down": (
        r"\b(?:tilt(?:s|ing|ed)?|crane(?:s|ing)?|pedestal(?:s|ing)?)[\s-]+(?:slowly[\s-]+)?down(?:ward|wards)?\b",
        r"下摇|俯",
    ),
    "static": (
        r"\b(?:static|fixed|locked(?:[\s-]+off)?|stationary|still[\s-]+camera|tripod)\b",
        r"固定|静止|不动|定镜",
    ),
}
_COMPILED = {move: [re.compile(p) for p in pats] for move, pats in _CAMERA_PATTERNS.items()}
_KLING_CAMERA_TAG = re.compile(r"\[\s*camera\s*[:：]([^\]]*)\]", re.IGNORECASE)


def camera_move(prompt: str) -> str:
    """The camera move a prompt asks for (one of CAMERA_MOVES); `static` when it names none."""
    text = prompt.lower()
    # A Kling `[Camera: …]` tag is explicit, so it outranks words in the prose.
    for tag in _KLING_CAMERA_TAG.findall(text):
        move = _earliest_move(tag)
        if move:
            return move
    return _earliest_move(text) or "static"


def _earliest_move(text: str) -> str | None:
    best: tuple[int, str] | None = None
    for move, patterns in _COMPILED.items():
        for pattern in patterns:
            match = pattern.search(text)
            if match and (best is None or match.start() < best[0]):
                best = (match.start(), move)
    return best[1] if best else None


# ---------------------------------------------------------------------------------------------
# Sizes and the published schema
# ---------------------------------------------------------------------------------------------


def size_for(resolution: str, aspect_ratio: str) -> tuple[int, int]:
    """(width, height) whose short side is the resolution's p number; both even (yuv420p)."""
    try:
        return frame_size(resolution, aspect_ratio)
    except ValueError as exc:
        raise InputError(f"preview: {exc}") from None


def _image_field(title: str) -> dict[str, Any]:
    return {
        "title": title,
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "default": None,
        "description": "URL (or file:// URI) of the image.",
        # Same limits block fal publishes on its image inputs, so the runner checks them alike.
        "x-fal": {
            "min_width": 64,
            "min_height": 64,
            "min_aspect_ratio": 0.2,
            "max_aspect_ratio": 5.0,
            "max_file_size": 52428800,
        },
    }


def preview_openapi() -> dict[str, Any]:
    """The preview endpoint's OpenAPI 3.0 document, shaped like the ones fal publishes."""
    properties: dict[str, Any] = {
        "prompt": {"title": "Prompt", "type": "string", "minLength": 1},
        "image_url": _image_field("Start image"),
        "end_image_url": _image_field("End image"),
        "duration": {"title": "Duration (s)", "type": "integer", "minimum": 1, "maximum": 60},
        "aspect_ratio": {
            "title": "Aspect ratio",
            "type": "string",
            "enum": list(ASPECT_RATIOS),
            "default": "16:9",
        },
        "resolution": {"title": "Resolution", "type": "string", "enum": list(RESOLUTIONS), "default": "720p"},
        "fps": {"title": "Frames per second", "type": "integer", "minimum": 8, "maximum": 60, "default": 24},
        "seed": {"title": "Seed", "anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        "title": {"title": "Title", "type": "string", "default": ""},
        # Text for the T2V card when the prompt is in a script the built-in font can't draw.
        "caption": {"title": "Caption", "anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "dialogue": {
            "title": "Dialogue",
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "default": None,
            "description": "The shot's spoken line, burned in at the bottom of every frame.",
        },
        "camera_move": {
            "title": "Camera move",
            "anyOf": [{"type": "string", "enum": list(CAMERA_MOVES)}, {"type": "null"}],
            "default": None,
            "description": "When null the move is read from the prompt.",
        },
        "multi_prompt": {
            "title": "Shots",
            "anyOf": [
                {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/PreviewShot"}},
                {"type": "null"},
            ],
            "default": None,
            "description": "A multi-shot group: one clip, each shot its own card (the first starts from "
            "image_url) with its own slate, for its duration; `duration` is their sum.",
        },
    }
    shot_properties: dict[str, Any] = {
        "prompt": {"title": "Prompt", "type": "string", "minLength": 1},
        "duration": {"title": "Duration (s)", "type": "integer", "minimum": 1, "maximum": 60},
        "title": {"title": "Title", "type": "string", "default": ""},
        "caption": {"title": "Caption", "anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "dialogue": {"title": "Dialogue", "anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "camera_move": properties["camera_move"],
    }
    schema_ref = {"$ref": "#/components/schemas/PreviewInput"}
    return {
        "openapi": "3.0.4",
        "info": {
            "title": "aivp preview",
            "version": "1.0.0",
            "x-fal-metadata": {"endpointId": PREVIEW_ENDPOINT},
        },
        "components": {
            "schemas": {
                "PreviewInput": {
                    "title": "PreviewInput",
                    "type": "object",
                    "properties": properties,
                    "x-fal-order-properties": list(properties),
                    "required": ["prompt", "duration"],
                },
                "PreviewShot": {
                    "title": "PreviewShot",
                    "type": "object",
                    "properties": shot_properties,
                    "x-fal-order-properties": list(shot_properties),
                    "required": ["prompt", "duration"],
                },
                "PreviewOutput": {
                    "title": "PreviewOutput",
                    "type": "object",
                    "properties": {
                        "video": {"$ref": "#/components/schemas/File"},
                        "seed": {"type": "integer"},
                    },
                    "required": ["video", "seed"],
                },
                "File": {
                    "title": "File",
                    "type": "object",
                    "properties": {"url": {"type": "string"}, "content_type": {"type": "string"}},
                    "required": ["url"],
                },
            }
        },
        "paths": {
            f"/{PREVIEW_ENDPOINT}": {
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": schema_ref}},
                    },
                    "responses": {
                        "200": {
                            "description": "The rendered preview.",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/PreviewOutput"}}
                            },
                        }
                    },
                }
            }
        },
    }


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
#
# Frames are made directly as yuv420p planes (three PIL "L" images): the camera move scales the
# planes (1.5 bytes a pixel instead of RGB's 4) and no frame needs its own RGB→YUV conversion.
# That, and making frames on a helper thread while x264 encodes, renders a 720p preview faster
# than real time on two cores.


class _Stopped(Exception):
    """The render was cancelled between frames."""


class _Planes(NamedTuple):
    """One yuv420p picture: full-size luma, half-size chroma."""

    y: Image.Image
    u: Image.Image
    v: Image.Image

    @property
    def size(self) -> tuple[int, int]:
        return self.y.size

    def frame(self) -> av.VideoFrame:
        w, h = self.size
        flat = np.concatenate([np.asarray(p).reshape(-1) for p in self])
        return av.VideoFrame.from_ndarray(flat.reshape(h * 3 // 2, w), format="yuv420p")


def _to_planes(image: Image.Image, reformatter: VideoReformatter | None = None) -> _Planes:
    """RGB → yuv420p (swscale: BT.601, limited range, as tagged on the stream).

    Pass one `reformatter` for repeated conversions: it keeps its swscale context, whose set-up
    costs several times more than converting a strip of pixels.
    """
    w, h = image.size
    frame = av.VideoFrame.from_image(image)
    yuv = (reformatter or VideoReformatter()).reformat(frame, format="yuv420p")
    flat = yuv.to_ndarray().reshape(-1)
    luma, chroma = w * h, (w // 2) * (h // 2)
    y = flat[:luma].reshape(h, w)
    u = flat[luma : luma + chroma].reshape(h // 2, w // 2)
    v = flat[luma + chroma : luma + 2 * chroma].reshape(h // 2, w // 2)
    return _Planes(*(Image.fromarray(np.ascontiguousarray(p), "L") for p in (y, u, v)))


def render_preview(
    dest: Path,
    *,
    width: int,
    height: int,
    fps: int,
    duration_s: float,
    seed: int,
    prompt: str,
    title: str,
    start_image: Path | None = None,
    end_image: Path | None = None,
    camera: str = "static",
    dialogue: str | None = None,
    overlay: bool = True,
    shots: list[dict[str, Any]] | None = None,
) -> None:
    """Write an H.264/AAC MP4 animatic of exactly round(duration_s*fps) frames to `dest`.

    With `overlay` (the default) every frame carries the burned-in slate: PREVIEW and the shot
    id (`title`), the clip time as mm:ss, and the `dialogue` line when there is one.

    `shots` (a multi-shot group: dicts of duration_s, prompt, title, camera, dialogue) renders
    each shot in turn instead, round(duration_s*fps) frames each, cut hard from one to the next:
    the first starts from `start_image` (else a card), the others are cards of their own colour,
    each with its own slate (its title, its dialogue, its clock from 00:00); `end_image` ends the
    last. `prompt`, `title`, `camera`, `dialogue` and `duration_s` are then not used.
    """
    _render(
        dest,
        width=width,
        height=height,
        fps=fps,
        duration_s=duration_s,
        seed=seed,
        prompt=prompt,
        title=title,
        start_image=start_image,
        end_image=end_image,
        camera=camera,
        dialogue=dialogue,
        overlay=overlay,
        shots=shots,
    )


def _render(
    dest: Path,
    *,
    width: int,
    height: int,
    fps: int,
    duration_s: float,
    seed: int,
    prompt: str,
    title: str,
    start_image: Path | None,
    end_image: Path | None,
    camera: str,
    dialogue: str | None = None,
    overlay: bool = True,
    stop: threading.Event | None = None,
    shots: list[dict[str, Any]] | None = None,
) -> None:
    if width % 2 or height % 2 or width <= 0 or height <= 0:
        raise ValueError(f"preview size must be positive and even (yuv420p), got {width}x{height}")
    if camera not in CAMERA_MOVES:
        raise ValueError(f"unknown camera move {camera!r}; expected one of {', '.join(CAMERA_MOVES)}")
    size = (width, height)
    if shots:  # a multi-shot group: each shot's pictures in turn, a hard cut between them
        for shot in shots:
            if (shot.get("camera") or "static") not in CAMERA_MOVES:
                raise ValueError(f"unknown camera move {shot['camera']!r} in shot {shot.get('title')!r}")
        last = len(shots) - 1
        frames = itertools.chain.from_iterable(
            _pictures(
                size,
                fps,
                max(1, round(float(shot["duration_s"]) * fps)),
                seed,
                str(shot.get("prompt") or ""),
                str(shot.get("title") or ""),
                start_image if k == 0 else None,
                end_image if k == last else None,
                str(shot.get("camera") or "static"),
                shot.get("dialogue"),
                overlay,
                hue_shift=k * _GROUP_HUE_STEP,  # a different card colour per shot: the cuts show
            )
            for k, shot in enumerate(shots)
        )
    else:
        n = max(1, round(duration_s * fps))
        frames = _pictures(
            size, fps, n, seed, prompt, title, start_image, end_image, camera, dialogue, overlay
        )
    _encode(Path(dest), frames, size, fps, stop)


def _pictures(
    size: tuple[int, int],
    fps: int,
    n: int,
    seed: int,
    prompt: str,
    title: str,
    start_image: Path | None,
    end_image: Path | None,
    camera: str,
    dialogue: str | None,
    overlay: bool,
    hue_shift: float = 0.0,
) -> Iterator[_Planes]:
    """One shot's `n` pictures: the keyframe animated, else the title card; the slate burned in.
    A generator, so that even the image loading runs on the frame-making thread."""
    slate = None
    if overlay:
        # On a title card the dialogue sits above the progress bar, not over it.
        above = _bar_top(size) if start_image is None else None
        slate = _Slate(size, fps, title, dialogue, dialogue_bottom=above)
    if start_image is not None:
        pictures = _animate_keyframe(_open_rgb(start_image), size, n, camera)
    else:
        top = slate.top_bottom if slate else 0
        bottom = slate.dialogue_top if slate else None
        pictures = _title_card(size, n, fps, seed, prompt, title, reserved=(top, bottom), hue_shift=hue_shift)
    if end_image is not None:
        end = _to_planes(ImageOps.fit(_open_rgb(end_image), size, Image.LANCZOS))
        pictures = _crossfade_to(pictures, end, n)
    if slate is not None:
        pictures = slate.burn_into(pictures)
    yield from pictures


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)  # phone photos: honour the orientation tag
        return img.convert("RGB")


def _ease(t: float) -> float:
    """Ease in and out, like an operator starting and landing a move."""
    return t * t * (3 - 2 * t)


def _progress(i: int, n: int) -> float:
    return i / (n - 1) if n > 1 else 1.0


def _camera_box(move: str, t: float, bw: float, bh: float) -> tuple[float, float, float, float]:
    """Crop box in the base picture (the frame at zoom _ZOOM) for progress t in [0, 1]."""
    e = _ease(t)
    zoom = {
        "push_in": 1 + (_ZOOM - 1) * e,
        "pull_out": _ZOOM - (_ZOOM - 1) * e,
        "static": 1 + 0.01 * e,  # a breath of movement, so a still shot still reads as video
    }.get(move, _ZOOM)  # pans and tilts travel through the head-room the zoom leaves
    w, h = bw / zoom, bh / zoom
    x, y = (bw - w) / 2, (bh - h) / 2
    # Panning left reveals what is left of the frame: the window travels right → left.
    if move == "pan_left":
        x = (bw - w) * (1 - e)
    elif move == "pan_right":
        x = (bw - w) * e
    elif move == "tilt_up":
        y = (bh - h) * (1 - e)
    elif move == "tilt_down":
        y = (bh - h) * e
    return (x, y, x + w, y + h)


def _animate_keyframe(image: Image.Image, size: tuple[int, int], n: int, move: str) -> Iterator[_Planes]:
    # Fit and convert once at the zoom range's resolution; each frame is then a crop-and-scale.
    bw, bh = even(size[0] * _ZOOM), even(size[1] * _ZOOM)
    base = _to_planes(ImageOps.fit(image, (bw, bh), Image.LANCZOS))
    half = (size[0] // 2, size[1] // 2)
    for i in range(n):
        box = _camera_box(move, _progress(i, n), bw, bh)
        chroma_box = tuple(c / 2 for c in box)
        yield _Planes(
            base.y.resize(size, Image.BILINEAR, box=box),
            base.u.resize(half, Image.BILINEAR, box=chroma_box),
            base.v.resize(half, Image.BILINEAR, box=chroma_box),
        )


def _crossfade_to(frames: Iterator[_Planes], end: _Planes, n: int) -> Iterator[_Planes]:
    # YUV is an affine map of RGB, so blending the planes is blending the pictures.
    start = 1 - _FADE_FRACTION
    for i, frame in enumerate(frames):
        alpha = min(1.0, max(0.0, (_progress(i, n) - start) / _FADE_FRACTION))
        if alpha > 0:
            frame = _Planes(*(Image.blend(a, b, alpha) for a, b in zip(frame, end, strict=True)))
        yield frame


# --- text and fonts -------------------------------------------------------------------------

# PIL's built-in font has no CJK glyphs: it draws boxes. CJK text is set in Noto Sans CJK, the
# Pan-CJK font (hanzi, kana, hangul, full-width punctuation) that the noto-cjk-sans-jp-regular
# dependency ships; `_text_options` picks each line's regional glyph forms. System fonts are
# only a fallback for an install without that package.
_CJK_FONT_PACKAGE = ("noto_cjk_sans_jp_regular", "NotoSansCJKjp-Regular.otf")
_SYSTEM_CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/wqy-microhei/wqy-microhei.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)
_CJK = re.compile(r"[\u1100-\u11ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_CLOSING = frozenset("，。、；：！？）」』》〉】”’…,.;:!?)")


@functools.cache
def _cjk_font_file() -> str | None:
    """The CJK-capable font file: the packaged Noto Sans CJK, else a system one, else None."""
    package, name = _CJK_FONT_PACKAGE
    with contextlib.suppress(ModuleNotFoundError):
        packaged = resources.files(package) / name
        if packaged.is_file():
            return str(packaged)
    return next((font for font in _SYSTEM_CJK_FONTS if Path(font).is_file()), None)


def _font(size: int, text: str = "") -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Loaded per render, not cached: a FreeType face must not be shared by two render threads.
    if _CJK.search(text) and (path := _cjk_font_file()):
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def _text_options(text: str, font: Any) -> dict[str, Any]:
    """Layout options for one line: CJK gets its language's glyph forms (直, 骨 and 角 differ
    between Chinese and Japanese) where libraqm lays the text out."""
    if not _CJK.search(text) or getattr(font, "layout_engine", None) != ImageFont.Layout.RAQM:
        return {}
    language = "ja" if _KANA.search(text) else "ko" if _HANGUL.search(text) else "zh-Hans"
    return {"language": language}


def _wrap(text: str, font: Any, max_width: float, max_lines: int) -> list[str]:
    """Greedy wrap on words, and on single characters for CJK (which has no spaces)."""
    tokens = re.findall(r"\s+|[\u2e80-\u9fff\uff00-\uffef]|[^\s\u2e80-\u9fff\uff00-\uffef]+", text)
    lines: list[str] = []
    line = ""
    for token in tokens:
        candidate = line + token
        # Closing punctuation stays on the line it closes (it never starts one), even a little long.
        if line and token not in _CLOSING and font.getlength(candidate.rstrip()) > max_width:
            lines.append(line.rstrip())
            line = token.lstrip()
        else:
            line = candidate
    if line.strip():
        lines.append(line.rstrip())
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1].rstrip(" .,;") + " …"
    return lines


# --- the text-to-video title card -----------------------------------------------------------


def _card_background(size: tuple[int, int], seed: int, hue_shift: float = 0.0) -> Image.Image:
    """A dark, seed-coloured vertical gradient with seeded grain: the seed is visible (`hue_shift`
    turns the hue: each shot of a multi-shot group has its own)."""
    rng = np.random.default_rng(seed % 2**64)
    hue = (rng.random() + hue_shift) % 1
    top = np.array(colorsys.hsv_to_rgb(hue, 0.55, 0.30)) * 255
    bottom = np.array(colorsys.hsv_to_rgb((hue + 0.08) % 1, 0.65, 0.10)) * 255
    w, h = size
    ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = top * (1 - ramp) + bottom * ramp
    img = np.broadcast_to(img, (h, w, 3)) + rng.normal(0.0, 4.0, (h, w, 1))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _bar_top(size: tuple[int, int]) -> int:
    """The first row of the title card's progress bar."""
    w, h = size
    return h - round(min(w, h) * 0.12)


def _static_card(
    size: tuple[int, int],
    seed: int,
    prompt: str,
    title: str,
    reserved: tuple[int, int | None] = (0, None),
    hue_shift: float = 0.0,
) -> Image.Image:
    """The card's fixed text. `reserved`: the slate's rows at the top (its bottom edge) and
    above the progress bar (the dialogue's top edge, or None), which the text keeps clear of."""
    w, h = size
    card = _card_background(size, seed, hue_shift)
    draw = ImageDraw.Draw(card)
    short = min(w, h)
    margin = round(w * 0.07)
    gap = round(short * 0.02)
    # A small seeded offset, so two seeds differ in layout too, not only in colour.
    dx = (seed % 7) - 3
    title = title or "preview"
    title_font = _font(max(10, round(short * 0.14)), title)
    title_y = max(round(h * 0.10), reserved[0] + gap)
    draw.text(
        (margin + dx, title_y),
        title,
        font=title_font,
        fill=(245, 245, 245),
        **_text_options(title, title_font),
    )
    body_size = max(8, round(short * 0.045))
    body_font = _font(body_size, prompt)
    top = title_y + round(short * 0.14) * 1.5
    end = h * 0.80 if reserved[1] is None else min(h * 0.80, reserved[1] - gap)
    max_lines = max(1, int((end - top) // (body_size * 1.3)))
    for k, line in enumerate(_wrap(prompt, body_font, w - 2 * margin, max_lines)):
        draw.text(
            (margin + dx, top + k * body_size * 1.3),
            line,
            font=body_font,
            fill=(205, 205, 205),
            **_text_options(line, body_font),
        )
    draw.text(
        (margin, h - round(short * 0.07)),
        f"PREVIEW  seed {seed}",
        font=_font(max(8, round(short * 0.035))),
        fill=(150, 150, 150),
    )
    return card


def _title_card(
    size: tuple[int, int],
    n: int,
    fps: int,
    seed: int,
    prompt: str,
    title: str,
    reserved: tuple[int, int | None] = (0, None),
    hue_shift: float = 0.0,
) -> Iterator[_Planes]:
    # The text is drawn and converted once; per frame only the bottom strip (progress bar and
    # timecode) is redrawn and converted, then pasted over a copy of the card's planes.
    card = _static_card(size, seed, prompt, title, reserved, hue_shift)
    base = _to_planes(card)
    reformatter = VideoReformatter()
    w, h = size
    top = max(0, (_bar_top(size) - 2) // 2 * 2)  # even, so the strip's chroma rows line up with the card's
    for i in range(n):
        strip = card.crop((0, top, w, h))
        _draw_progress(strip, (w, h), top, i, n, fps)
        part = _to_planes(strip, reformatter)
        y, u, v = (plane.copy() for plane in base)
        y.paste(part.y, (0, top))
        u.paste(part.u, (0, top // 2))
        v.paste(part.v, (0, top // 2))
        yield _Planes(y, u, v)


def _draw_progress(strip: Image.Image, size: tuple[int, int], top: int, i: int, n: int, fps: int) -> None:
    """Progress bar and timecode, drawn on the strip that starts at row `top` of the frame."""
    w, h = size
    short = min(w, h)
    margin = round(w * 0.07)
    bar_y, bar_h = _bar_top(size) - top, max(2, round(short * 0.012))
    draw = ImageDraw.Draw(strip)
    draw.rectangle((margin, bar_y, w - margin, bar_y + bar_h), fill=(70, 70, 70))
    done = margin + (w - 2 * margin) * _progress(i, n)
    draw.rectangle((margin, bar_y, round(done), bar_y + bar_h), fill=(240, 200, 60))
    timecode = f"{_timecode(i / fps, fps)} / {_timecode(n / fps, fps)}  #{i + 1}/{n}"
    font = _font(max(8, round(short * 0.035)))
    draw.text(
        (w - margin, h - round(short * 0.07) - top), timecode, font=font, fill=(220, 220, 220), anchor="ra"
    )


def _timecode(seconds: float, fps: int) -> str:
    whole = int(seconds)
    frame = round((seconds - whole) * fps)
    return f"{whole // 60:02d}:{whole % 60:02d}:{frame:02d}"


# --- the burned-in slate --------------------------------------------------------------------

_SLATE_BOX = (12, 12, 12)
_SLATE_BOX_ALPHA = 165  # the picture shows through the box, dimmed
_SLATE_MARK = (240, 200, 60)  # the PREVIEW mark, in the progress bar's yellow
_SLATE_TEXT = (240, 240, 240)

_Run = tuple[str, tuple[int, int, int]]  # text and its colour


class _Sprite(NamedTuple):
    """A small yuv picture and its coverage, pasted onto frames at an even (x, y)."""

    x: int
    y: int
    picture: _Planes
    alpha: _Planes  # the coverage at luma size (y) and chroma size (u, v)

    @property
    def bottom(self) -> int:
        return self.y + self.picture.size[1]

    def burn(self, frame: _Planes) -> None:
        frame.y.paste(self.picture.y, (self.x, self.y), self.alpha.y)
        chroma_at = (self.x // 2, self.y // 2)
        frame.u.paste(self.picture.u, chroma_at, self.alpha.u)
        frame.v.paste(self.picture.v, chroma_at, self.alpha.v)


def _even_up(x: float) -> int:
    return max(2, math.ceil(x / 2) * 2)


def _label(
    lines: list[list[_Run]], font: Any, pad: int, centre: bool = False
) -> tuple[Image.Image, Image.Image]:
    """Lines of coloured runs on a translucent dark box: (RGB picture, L coverage), even-sized."""
    ascent, descent = font.getmetrics()
    line_h = ascent + descent
    widths = [sum(font.getlength(text, **_text_options(text, font)) for text, _ in line) for line in lines]
    size = (_even_up(max(widths, default=0) + 2 * pad), _even_up(len(lines) * line_h + 2 * pad))
    picture = Image.new("RGB", size, _SLATE_BOX)
    alpha = Image.new("L", size, _SLATE_BOX_ALPHA)
    ink, cover = ImageDraw.Draw(picture), ImageDraw.Draw(alpha)
    for k, (line, width) in enumerate(zip(lines, widths, strict=True)):
        x, y = ((size[0] - width) / 2 if centre else pad), pad + k * line_h
        for text, colour in line:
            options = _text_options(text, font)
            ink.text((x, y), text, font=font, fill=colour, **options)
            cover.text((x, y), text, font=font, fill=255, **options)
            x += font.getlength(text, **options)
    return picture, alpha


class _Slate:
    """The overlay every preview frame carries, to rehearse a cut against: PREVIEW and the shot
    id top left, the clip time as mm:ss top right, the dialogue line (when there is one) at the
    bottom, or ending at row `dialogue_bottom`.

    Each part is drawn and converted to yuv once, the time once per distinct second; a frame
    only gets them pasted on through their coverage.
    """

    def __init__(
        self,
        size: tuple[int, int],
        fps: int,
        shot: str,
        dialogue: str | None,
        dialogue_bottom: int | None = None,
    ) -> None:
        w, h = size
        short = min(w, h)
        self._size, self._fps = size, fps
        self._margin = round(short * 0.025) // 2 * 2
        px = max(8, round(short * 0.04))
        self._font = _font(px)
        self._pad = max(2, round(px * 0.3))
        self._reformatter = VideoReformatter()
        self._clock: dict[int, _Sprite] = {}
        mark: list[_Run] = [("PREVIEW", _SLATE_MARK)] + ([(f"  {shot}", _SLATE_TEXT)] if shot else [])
        slate = self._sprite(_label([mark], _font(px, shot), self._pad), self._margin, self._margin)
        self._fixed = [slate]
        self.top_bottom = slate.bottom  # the rows the slate covers at the top
        self.dialogue_top: int | None = None
        line = " ".join((dialogue or "").split())
        if line:
            font = _font(max(8, round(short * 0.05)), line)
            lines = _wrap(line, font, w - 2 * (self._margin + self._pad), max_lines=2)
            label = _label([[(text, _SLATE_TEXT)] for text in lines], font, self._pad, centre=True)
            bottom = h - self._margin if dialogue_bottom is None else dialogue_bottom
            sprite = self._sprite(label, (w - label[0].width) // 2, bottom - label[0].height)
            self._fixed.append(sprite)
            self.dialogue_top = sprite.y

    def _sprite(self, label: tuple[Image.Image, Image.Image], x: int, y: int) -> _Sprite:
        picture, alpha = label
        w, h = self._size
        # At even offsets, so the chroma planes line up; kept inside the frame (a tiny one crops).
        x, y = min(max(0, x) // 2 * 2, w - 2), min(max(0, y) // 2 * 2, h - 2)
        box = (0, 0, min(picture.width, w - x), min(picture.height, h - y))
        picture, alpha = picture.crop(box), alpha.crop(box)
        chroma_alpha = alpha.resize((box[2] // 2, box[3] // 2), Image.BOX)
        return _Sprite(
            x, y, _to_planes(picture, self._reformatter), _Planes(alpha, chroma_alpha, chroma_alpha)
        )

    def clock(self, second: int) -> _Sprite:
        """The mm:ss sprite for one second of the clip, made the first time it is needed."""
        sprite = self._clock.get(second)
        if sprite is None:
            label = _label([[(f"{second // 60:02d}:{second % 60:02d}", _SLATE_TEXT)]], self._font, self._pad)
            sprite = self._sprite(label, self._size[0] - self._margin - label[0].width, self._margin)
            self._clock[second] = sprite
        return sprite

    def burn_into(self, frames: Iterator[_Planes]) -> Iterator[_Planes]:
        """Paste the slate onto each frame, in place (every frame here is a picture of its own)."""
        for i, frame in enumerate(frames):
            for sprite in (*self._fixed, self.clock(i // self._fps)):
                sprite.burn(frame)
            yield frame


# --- encoding -------------------------------------------------------------------------------


def _encode(
    dest: Path, frames: Iterator[_Planes], size: tuple[int, int], fps: int, stop: threading.Event | None
) -> None:
    """Mux H.264 video and a silent AAC track of the same length into `dest` (an MP4)."""
    # format= is explicit: the caller writes to a `.part` name, which says nothing about the format.
    with av.open(str(dest), "w", format="mp4", container_options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=fps, options=_x264_options(size[0]))
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        # swscale converts RGB with BT.601 limited-range matrices; say so, or HD players assume BT.709.
        cc = video.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = _BT601, _BT601, _BT601, _MPEG_RANGE
        audio = out.add_stream("aac", rate=_AUDIO_RATE, layout="mono")
        video_tb, audio_tb = Fraction(1, fps), Fraction(1, _AUDIO_RATE)
        samples_done = 0
        # closing(): an early exit (cancel, error) stops the frame-making thread right away.
        with contextlib.closing(_prefetch(planes.frame() for planes in frames)) as yuv_frames:
            for i, frame in enumerate(yuv_frames):
                if stop is not None and stop.is_set():
                    raise _Stopped
                frame.pts, frame.time_base = i, video_tb
                out.mux(video.encode(frame))
                # Audio follows the video frame by frame so the two tracks end together.
                target = round((i + 1) * _AUDIO_RATE / fps)
                out.mux(audio.encode(_silence(samples_done, target - samples_done, audio_tb)))
                samples_done = target
        out.mux(video.encode(None))
        out.mux(audio.encode(None))


def _x264_options(width: int) -> dict[str, str]:
    """x264 settings for a clip `width` pixels wide that give the same output for the same frames.

    The macroblock-tree rate control (mbtree) is turned off unless the width is a whole number
    of 8-macroblock (128-pixel) groups. On AVX-512 CPUs x264 propagates each macroblock row's
    costs 8 macroblocks at a time (`mbtree_propagate_list_avx512`) and does not mask the lanes
    past the end of the row. In a part-filled last group those lanes read whatever follows the
    row in memory, at the bottom row old heap contents, and can add it to real macroblocks.
    When that happens, the same frames encode to different bitstreams from one run to the next,
    and more often on a busy machine. The 16:9 widths (640, 1280, 1920) keep mbtree and its
    smaller files.
    """
    options = {"preset": "veryfast", "crf": "23"}
    if -(-width // 16) % 8:
        options["mbtree"] = "0"
    return options


_T = TypeVar("_T")


def _prefetch(items: Iterator[_T], depth: int = 8) -> Iterator[_T]:
    """Produce `items` in a helper thread while the caller consumes them.

    Pillow's scaling and drawing release the GIL, so frames are made on one core while x264
    encodes on the other.
    """
    box: queue.Queue[tuple[str, Any]] = queue.Queue(depth)
    quit_ = threading.Event()

    def put(kind: str, value: Any) -> bool:
        while not quit_.is_set():
            try:
                box.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put("item", item):
                    return
            put("end", None)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put("error", exc)

    worker = threading.Thread(target=work, name="preview-frames", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = box.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        quit_.set()  # a consumer that stops early (error, cancel) must not strand the producer
        worker.join()


def _silence(pts: int, samples: int, time_base: Fraction) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.float32), format="fltp", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = _AUDIO_RATE, pts, time_base
    return frame


# ---------------------------------------------------------------------------------------------
# The provider
# ---------------------------------------------------------------------------------------------


def _local_path(value: str | Path) -> Path:
    """A payload image field (file:// URI or plain path) as a local path."""
    text = str(value)
    parsed = urlparse(text)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise RequestFailed(f"preview provider reads local files only, got a {parsed.scheme}: URL")
    return Path(text)


class PreviewProvider(Provider):
    """Renders previews locally in worker threads; no key, no network, no cost."""

    name = "preview"

    def __init__(self, work_dir: Path, latency_s: float = 0.0) -> None:
        self.work_dir = Path(work_dir)
        self.latency_s = latency_s
        self._tasks: dict[str, asyncio.Task[int]] = {}
        self._stops: dict[str, threading.Event] = {}

    async def upload(self, path: Path) -> str:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: file not found")
        return path.resolve().as_uri()

    async def submit(self, endpoint: str, payload: dict[str, Any]) -> Submission:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        request_id = uuid.uuid4().hex
        settings = self._settings(payload)
        stop = threading.Event()
        self._stops[request_id] = stop
        self._tasks[request_id] = asyncio.create_task(self._run(request_id, settings, stop))
        return Submission(
            request_id=request_id, endpoint=endpoint, response_url=self._output(request_id).as_uri()
        )

    async def wait(self, submission: Submission, on_status: StatusCallback | None = None) -> Outcome:
        emit: Callable[[StatusUpdate], None] = on_status or (lambda _update: None)
        rid = submission.request_id
        task = self._tasks.get(rid)
        emit(StatusUpdate("IN_PROGRESS", logs=(f"rendering preview {rid}",)))
        if task is None:
            seed = self._resume(rid)
        else:
            # asyncio.wait, not `await task`: a cancelled render must not look like our own cancellation.
            await asyncio.wait({task})
            if task.cancelled():
                raise RequestFailed(f"preview {rid} was cancelled", request_id=rid)
            if (exc := task.exception()) is not None:
                raise RequestFailed(f"preview render failed: {_one_line(exc)}", request_id=rid) from exc
            seed = task.result()
        emit(StatusUpdate("COMPLETED"))
        url = self._output(rid).as_uri()
        return Outcome(
            output={"video": {"url": url, "content_type": "video/mp4"}, "seed": seed},
            video_url=url,
            seed=seed,
        )

    async def download(self, url: str, dest: Path) -> Download:
        source = _local_path(url)
        if not source.is_file():
            raise RequestFailed(f"preview output {source.name} is missing")
        async with ClipSink(Path(dest)) as sink:
            with source.open("rb") as f:
                while block := await asyncio.to_thread(f.read, ClipSink.BLOCK):
                    await sink.write(block)
        return sink.result()

    async def cancel(self, submission: Submission) -> None:
        task = self._tasks.get(submission.request_id)
        if task is not None and not task.done():
            self._stops[submission.request_id].set()  # the worker thread stops at the next frame
            task.cancel()

    async def aclose(self) -> None:
        for stop in self._stops.values():
            stop.set()

    # --- internals ---

    def _output(self, request_id: str) -> Path:
        return self.work_dir / f"{request_id}.mp4"

    @staticmethod
    def _settings(payload: dict[str, Any]) -> dict[str, Any]:
        prompt = str(payload.get("prompt") or "")
        width, height = size_for(
            str(payload.get("resolution") or "720p"), str(payload.get("aspect_ratio") or "16:9")
        )
        seed = payload.get("seed")
        image, end = payload.get("image_url"), payload.get("end_image_url")
        return {
            "width": width,
            "height": height,
            "fps": int(payload.get("fps") or 24),
            "duration_s": float(payload.get("duration") or 5),
            # Like hosted models: no seed asked → pick one and report it, so the take can be redone.
            "seed": int(seed) if seed is not None else secrets.randbelow(2**31),
            "prompt": str(payload.get("caption") or prompt),
            "title": str(payload.get("title") or ""),
            "start_image": _local_path(image) if image else None,
            "end_image": _local_path(end) if end else None,
            "camera": payload.get("camera_move") or camera_move(prompt),
            "dialogue": str(payload.get("dialogue") or "") or None,
            "shots": _shot_settings(payload.get("multi_prompt")),
        }

    async def _run(self, request_id: str, settings: dict[str, Any], stop: threading.Event) -> int:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)  # lets tests and demos see a queue
        await asyncio.to_thread(_render_job, self._output(request_id), stop, settings)
        return settings["seed"]

    def _resume(self, request_id: str) -> int | None:
        final = self._output(request_id)
        if not final.is_file():
            raise RequestFailed(
                f"preview {request_id} is unknown to this renderer; submit it again", request_id=request_id
            )
        sidecar = final.with_suffix(".json")
        try:
            return int(json.loads(sidecar.read_text(encoding="utf-8"))["seed"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _shot_settings(items: Any) -> list[dict[str, Any]] | None:
    """A multi-shot payload's `multi_prompt` items as what each shot's part of the clip shows."""
    if not items:
        return None
    shots = []
    for item in items:
        prompt = str(item.get("prompt") or "")
        shots.append(
            {
                "duration_s": float(item.get("duration") or 5),
                "prompt": str(item.get("caption") or prompt),
                "title": str(item.get("title") or ""),
                "camera": item.get("camera_move") or camera_move(prompt),
                "dialogue": str(item.get("dialogue") or "") or None,
            }
        )
    return shots


def _render_job(final: Path, stop: threading.Event, settings: dict[str, Any]) -> None:
    """Render into `<final>.part` and rename; runs in the worker thread, so it cleans up after
    itself even when the awaiting task was cancelled long before the thread noticed."""
    part = final.with_name(final.name + ".part")
    try:
        _render(part, stop=stop, **settings)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    # A sidecar lets a restarted provider answer `wait` for a finished request (crash resume);
    # written first, so a clip that exists always has its seed beside it.
    final.with_suffix(".json").write_text(json.dumps({"seed": settings["seed"]}), encoding="utf-8")
    part.replace(final)


def _one_line(exc: BaseException) -> str:
    return " ".join((str(exc) or type(exc).__name__).split())
