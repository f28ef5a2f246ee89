"""What the preview draws: the text-to-video title card, and the slate on every frame.

A job without a keyframe gets a title card: a dark, seed-coloured gradient with the shot's title
and prompt, a progress bar and a frame timecode. Every frame (with the overlay on) carries the
slate, to rehearse a cut against: PREVIEW and the shot id, the clip time as mm:ss, and the
dialogue line. Both are drawn in RGB with PIL once and converted to yuv420p planes
(`preview_frames`); per frame only the card's progress strip is redrawn, and the slate's parts
are pasted on through their coverage.

Text in Chinese, Japanese or Korean is set in Noto Sans CJK (PIL's built-in font would draw
boxes), with each line's regional glyph forms. The renderer (`preview_render`) decides which
pictures a shot gets; this module only draws them.
"""

from __future__ import annotations

import colorsys
import contextlib
import functools
import math
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageDraw, ImageFont

from .preview_frames import Planes, frame_progress, to_planes

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


def bar_top(size: tuple[int, int]) -> int:
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


def title_card(
    size: tuple[int, int],
    n: int,
    fps: int,
    seed: int,
    prompt: str,
    title: str,
    reserved: tuple[int, int | None] = (0, None),
    hue_shift: float = 0.0,
) -> Iterator[Planes]:
    # The text is drawn and converted once; per frame only the bottom strip (progress bar and
    # timecode) is redrawn and converted, then pasted over a copy of the card's planes.
    card = _static_card(size, seed, prompt, title, reserved, hue_shift)
    base = to_planes(card)
    reformatter = VideoReformatter()
    w, h = size
    top = max(0, (bar_top(size) - 2) // 2 * 2)  # even, so the strip's chroma rows line up with the card's
    for i in range(n):
        strip = card.crop((0, top, w, h))
        _draw_progress(strip, (w, h), top, i, n, fps)
        part = to_planes(strip, reformatter)
        y, u, v = (plane.copy() for plane in base)
        y.paste(part.y, (0, top))
        u.paste(part.u, (0, top // 2))
        v.paste(part.v, (0, top // 2))
        yield Planes(y, u, v)


def _draw_progress(strip: Image.Image, size: tuple[int, int], top: int, i: int, n: int, fps: int) -> None:
    """Progress bar and timecode, drawn on the strip that starts at row `top` of the frame."""
    w, h = size
    short = min(w, h)
    margin = round(w * 0.07)
    bar_y, bar_h = bar_top(size) - top, max(2, round(short * 0.012))
    draw = ImageDraw.Draw(strip)
    draw.rectangle((margin, bar_y, w - margin, bar_y + bar_h), fill=(70, 70, 70))
    done = margin + (w - 2 * margin) * frame_progress(i, n)
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
    picture: Planes
    alpha: Planes  # the coverage at luma size (y) and chroma size (u, v)

    @property
    def bottom(self) -> int:
        return self.y + self.picture.size[1]

    def burn(self, frame: Planes) -> None:
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


class Slate:
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
        return _Sprite(x, y, to_planes(picture, self._reformatter), Planes(alpha, chroma_alpha, chroma_alpha))

    def clock(self, second: int) -> _Sprite:
        """The mm:ss sprite for one second of the clip, made the first time it is needed."""
        sprite = self._clock.get(second)
        if sprite is None:
            label = _label([[(f"{second // 60:02d}:{second % 60:02d}", _SLATE_TEXT)]], self._font, self._pad)
            sprite = self._sprite(label, self._size[0] - self._margin - label[0].width, self._margin)
            self._clock[second] = sprite
        return sprite

    def burn_into(self, frames: Iterator[Planes]) -> Iterator[Planes]:
        """Paste the slate onto each frame, in place (every frame here is a picture of its own)."""
        for i, frame in enumerate(frames):
            for sprite in (*self._fixed, self.clock(i // self._fps)):
                sprite.burn(frame)
            yield frame
