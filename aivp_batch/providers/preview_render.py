"""The preview renderer: a job's settings in, a real MP4 animatic out (`render_preview`).

It is what the offline preview provider (`providers.preview`) runs in its worker threads, and what
tests and tools call to make a real clip without a provider. An image-to-video job gets its
keyframe animated with the shot's camera move (and a crossfade to the end frame when there is
one); a text-to-video job gets a title card; a multi-shot group gets each shot in turn, cut hard
from one to the next; every frame carries the burned-in slate unless `overlay` is off. The same
settings and seed always give the same bytes.

Here: the moves it can make (`CAMERA_MOVES`) and the words in a prompt that ask for one
(`camera_move`), the sizes it renders (`RESOLUTIONS`, `ASPECT_RATIOS`, `size_for`), which
pictures a shot gets, and the keyframe's motion. The title card and slate are drawn in
`preview_cards`; the yuv420p planes the frames are made of, and their encoding, are in
`preview_frames`.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from ..errors import InputError
from ..media import even, frame_size
from .preview_cards import Slate, bar_top, title_card
from .preview_frames import Planes, encode_frames, frame_progress, to_planes

CAMERA_MOVES = ("push_in", "pull_out", "pan_left", "pan_right", "tilt_up", "tilt_down", "static")
ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9")
RESOLUTIONS = ("360p", "480p", "720p", "1080p")

_ZOOM = 1.15  # push/pull range, and the head-room pans and tilts travel through
_FADE_FRACTION = 0.4  # the end frame crossfades in over the last 40% of the clip
_GROUP_HUE_STEP = 0.381966  # 1 - 1/φ: consecutive shots of a group get well-separated card hues

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
# Sizes
# ---------------------------------------------------------------------------------------------


def size_for(resolution: str, aspect_ratio: str) -> tuple[int, int]:
    """(width, height) whose short side is the resolution's p number; both even (yuv420p)."""
    try:
        return frame_size(resolution, aspect_ratio)
    except ValueError as exc:
        raise InputError(f"preview: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


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
    stop: threading.Event | None = None,
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

    `stop`, when set, ends the render early (the provider's cancel).
    """
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
    encode_frames(Path(dest), frames, size, fps, stop)


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
) -> Iterator[Planes]:
    """One shot's `n` pictures: the keyframe animated, else the title card; the slate burned in.
    A generator, so that even the image loading runs on the frame-making thread."""
    slate = None
    if overlay:
        # On a title card the dialogue sits above the progress bar, not over it.
        above = bar_top(size) if start_image is None else None
        slate = Slate(size, fps, title, dialogue, dialogue_bottom=above)
    if start_image is not None:
        pictures = _animate_keyframe(_open_rgb(start_image), size, n, camera)
    else:
        top = slate.top_bottom if slate else 0
        bottom = slate.dialogue_top if slate else None
        pictures = title_card(size, n, fps, seed, prompt, title, reserved=(top, bottom), hue_shift=hue_shift)
    if end_image is not None:
        end = to_planes(ImageOps.fit(_open_rgb(end_image), size, Image.LANCZOS))
        pictures = _crossfade_to(pictures, end, n)
    if slate is not None:
        pictures = slate.burn_into(pictures)
    yield from pictures


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)  # phone photos: honour the orientation tag
        return img.convert("RGB")


# --- the keyframe's camera move, and the crossfade to the end frame -------------------------


def _ease(t: float) -> float:
    """Ease in and out, like an operator starting and landing a move."""
    return t * t * (3 - 2 * t)


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


def _animate_keyframe(image: Image.Image, size: tuple[int, int], n: int, move: str) -> Iterator[Planes]:
    # Fit and convert once at the zoom range's resolution; each frame is then a crop-and-scale.
    bw, bh = even(size[0] * _ZOOM), even(size[1] * _ZOOM)
    base = to_planes(ImageOps.fit(image, (bw, bh), Image.LANCZOS))
    half = (size[0] // 2, size[1] // 2)
    for i in range(n):
        box = _camera_box(move, frame_progress(i, n), bw, bh)
        chroma_box = tuple(c / 2 for c in box)
        yield Planes(
            base.y.resize(size, Image.BILINEAR, box=box),
            base.u.resize(half, Image.BILINEAR, box=chroma_box),
            base.v.resize(half, Image.BILINEAR, box=chroma_box),
        )


def _crossfade_to(frames: Iterator[Planes], end: Planes, n: int) -> Iterator[Planes]:
    # YUV is an affine map of RGB, so blending the planes is blending the pictures.
    start = 1 - _FADE_FRACTION
    for i, frame in enumerate(frames):
        alpha = min(1.0, max(0.0, (frame_progress(i, n) - start) / _FADE_FRACTION))
        if alpha > 0:
            frame = Planes(*(Image.blend(a, b, alpha) for a, b in zip(frame, end, strict=True)))
        yield frame
