"""Draw the keyframes and portraits of the test storyboards in tests/fixtures/storyboards.

    .venv/bin/python scripts/make_fixture_images.py [fixtures_dir]

Flat rectangles only (no text, no fonts, no anti-aliased shapes), so the pixels come out the
same on every Pillow version and re-running the script rewrites identical files. Frames are
320x180 (180x320 for the 9:16 kling-first project), portraits 192x256, each a few KB.
A shot's number is drawn as that many small white squares in the top-left corner; an end
frame (`-lf`) also has a white bar along the bottom-left edge.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

Colour = tuple[int, int, int]

WIDE = (320, 180)  # 16:9 frames
TALL = (180, 320)  # 9:16 frames (kling-first project)
PORTRAIT = (192, 256)

SKIN: Colour = (226, 186, 150)
SHOES: Colour = (40, 36, 34)
PARCEL: Colour = (150, 104, 60)
STRING: Colour = (222, 206, 170)
WHITE: Colour = (255, 255, 255)


@dataclass(frozen=True)
class Person:
    slug: str
    coat: Colour
    hair: Colour
    hat: Colour | None = None  # a cap drawn over the hair
    beard: Colour | None = None


INES = Person("ines", coat=(222, 178, 40), hair=(176, 176, 180))  # yellow oilskin, grey bun
TOMAS = Person("tomas", coat=(52, 120, 70), hair=(92, 62, 40), hat=(190, 40, 40))  # green jacket, red cap
HARBOUR_MASTER = Person("harbour-master", coat=(30, 40, 82), hair=(60, 60, 64), hat=(24, 24, 30), beard=WHITE)


def _box(draw: ImageDraw.ImageDraw, x0: float, y0: float, x1: float, y1: float, fill: Colour) -> None:
    draw.rectangle([round(x0), round(y0), round(x1) - 1, round(y1) - 1], fill=fill)


def _canvas(size: tuple[int, int], wall: Colour, floor: Colour, floor_from: float) -> Image.Image:
    image = Image.new("RGB", size, wall)
    _box(ImageDraw.Draw(image), 0, size[1] * floor_from, size[0], size[1], floor)
    return image


def _figure(
    draw: ImageDraw.ImageDraw,
    who: Person,
    cx: float,
    feet: float,
    height: float,
    side: bool = False,
    parcel: bool = False,
) -> None:
    """A standing person of `height` pixels whose feet touch `feet`: legs, coat, head, hair."""
    u = height / 10  # head is 2u tall, coat 4.5u, legs 3.5u
    head_top = feet - height
    _box(draw, cx - 1.2 * u, feet - 3.5 * u, cx + 1.2 * u, feet, SHOES)
    _box(draw, cx - 1.6 * u, head_top + 2 * u, cx + 1.6 * u, feet - 3.5 * u, who.coat)
    shift = 0.3 * u if side else 0  # a profile: the face turns towards screen-right
    _box(draw, cx - u + shift, head_top, cx + u + shift, head_top + 2 * u, SKIN)
    _box(draw, cx - u + shift, head_top - 0.3 * u, cx + u + shift, head_top + 0.5 * u, who.hair)
    if who.hat is None:  # a bun on top
        _box(draw, cx - 0.4 * u + shift, head_top - 0.8 * u, cx + 0.4 * u + shift, head_top, who.hair)
    else:
        brim = (cx + shift, cx + 1.6 * u + shift) if side else (cx - 1.3 * u, cx + 1.3 * u)
        _box(draw, cx - u + shift, head_top - 0.6 * u, cx + u + shift, head_top + 0.3 * u, who.hat)
        _box(draw, brim[0], head_top + 0.2 * u, brim[1], head_top + 0.45 * u, who.hat)
    if who.beard is not None:
        _box(draw, cx - u + shift, head_top + 1.4 * u, cx + u + shift, head_top + 2 * u, who.beard)
    eyes = (0.6,) if side else (-0.45, 0.45)
    for dx in eyes:
        ex = cx + shift + dx * u
        _box(draw, ex - 0.15 * u, head_top + 0.8 * u, ex + 0.15 * u, head_top + 1.1 * u, SHOES)
    if parcel:
        _box(draw, cx - 1.3 * u, head_top + 3 * u, cx + 1.3 * u, head_top + 4.6 * u, PARCEL)
        _box(draw, cx - 0.1 * u, head_top + 3 * u, cx + 0.1 * u, head_top + 4.6 * u, STRING)


def _mark(image: Image.Image, number: int, end: bool) -> None:
    draw = ImageDraw.Draw(image)
    for i in range(number):
        _box(draw, 6 + 10 * i, 6, 12 + 10 * i, 12, WHITE)
    if end:
        _box(draw, 6, image.height - 10, 60, image.height - 6, WHITE)


# --------------------------------------------------------------------------- fenced-template (dusk)


def _lamp_room(trapdoor_open: bool) -> Image.Image:
    image = _canvas(WIDE, wall=(62, 52, 74), floor=(84, 62, 46), floor_from=0.75)
    draw = ImageDraw.Draw(image)
    _box(draw, 200, 20, 290, 130, (124, 92, 166))  # tall window, violet sky
    _box(draw, 243, 20, 247, 130, (40, 34, 48))  # mullion
    _box(draw, 30, 146, 110, 160, (20, 16, 14) if trapdoor_open else (112, 84, 58))  # trapdoor
    if trapdoor_open:
        _box(draw, 30, 96, 110, 100, (112, 84, 58))  # the lid, swung up
    return image


def fenced_shot_01_ff() -> Image.Image:
    image = _lamp_room(trapdoor_open=False)
    _figure(ImageDraw.Draw(image), INES, 240, 160, 110)
    return image


def fenced_shot_01_lf() -> Image.Image:
    image = _lamp_room(trapdoor_open=True)
    draw = ImageDraw.Draw(image)
    _figure(draw, INES, 240, 160, 110)
    _figure(draw, TOMAS, 90, 150, 104, parcel=True)
    return image


def fenced_shot_02_ff() -> Image.Image:
    """Close-up: the parcel in her hands, yellow sleeves at the edges."""
    image = _canvas(WIDE, wall=(110, 80, 56), floor=(88, 64, 46), floor_from=0.85)
    draw = ImageDraw.Draw(image)
    _box(draw, 0, 100, 70, 180, INES.coat)
    _box(draw, 250, 100, 320, 180, INES.coat)
    _box(draw, 90, 50, 230, 150, PARCEL)
    _box(draw, 156, 50, 164, 150, STRING)
    _box(draw, 90, 96, 230, 104, STRING)
    _box(draw, 110, 60, 150, 86, (236, 230, 214))  # the smudged label
    _box(draw, 60, 110, 100, 150, SKIN)
    _box(draw, 220, 110, 260, 150, SKIN)
    return image


# --------------------------------------------------------------------------- blockquote-example (night)


def _night_room(offset: int) -> Image.Image:
    image = _canvas(WIDE, wall=(40, 36, 52), floor=(70, 52, 40), floor_from=0.78)
    draw = ImageDraw.Draw(image)
    for x in (40, 140, 240):  # storm-dark panes
        _box(draw, x - offset, 18, x - offset + 70, 100, (18, 24, 40))
    _box(draw, 150 - offset, 104, 190 - offset, 110, (96, 70, 50))  # shelf
    _box(draw, 162 - offset, 88, 178 - offset, 104, (250, 210, 90))  # oil lamp
    return image


def blockquote_shot_01_ff() -> Image.Image:
    image = _night_room(offset=0)
    draw = ImageDraw.Draw(image)
    _figure(draw, TOMAS, 100, 168, 120, parcel=True)
    _figure(draw, INES, 220, 168, 116)
    return image


def blockquote_shot_01_lf() -> Image.Image:
    image = _night_room(offset=40)  # the camera has panned right
    draw = ImageDraw.Draw(image)
    _figure(draw, TOMAS, 18, 168, 120)
    _box(draw, 30, 100, 46, 110, TOMAS.hat or WHITE)  # the cap, in his hand
    _figure(draw, INES, 180, 168, 116, parcel=True)
    return image


def blockquote_shot_02_ff() -> Image.Image:
    """Close-up of her face lit from below, the parcel's corner at the bottom edge."""
    image = Image.new("RGB", WIDE, (34, 30, 44))
    draw = ImageDraw.Draw(image)
    _box(draw, 100, 170, 220, 180, INES.coat)
    _box(draw, 110, 40, 210, 160, SKIN)
    _box(draw, 110, 28, 210, 56, INES.hair)
    _box(draw, 140, 8, 180, 30, INES.hair)  # bun
    _box(draw, 124, 44, 196, 52, (60, 60, 66))  # glasses pushed up
    _box(draw, 130, 80, 146, 90, SHOES)
    _box(draw, 174, 80, 190, 90, SHOES)
    _box(draw, 146, 124, 174, 132, (150, 70, 60))  # lips parting
    _box(draw, 220, 150, 300, 180, PARCEL)
    return image


# --------------------------------------------------------------------------- kling-first (quay, 9:16)


def _quay() -> Image.Image:
    image = _canvas(TALL, wall=(176, 184, 196), floor=(92, 110, 128), floor_from=0.2)  # dawn sky, sea
    draw = ImageDraw.Draw(image)
    _box(draw, 40, 64, 140, 320, (132, 130, 124))  # the stone quay running away from camera
    _box(draw, 140, 200, 180, 320, (150, 120, 96))  # harbour office
    _box(draw, 148, 240, 172, 300, (40, 30, 26))  # its doorway
    return image


def kling_first_shot_01_ff() -> Image.Image:
    image = _quay()
    draw = ImageDraw.Draw(image)
    _figure(draw, TOMAS, 90, 230, 60, parcel=True)
    _figure(draw, HARBOUR_MASTER, 160, 300, 56)
    return image


def kling_first_shot_04_ff() -> Image.Image:
    image = _quay()
    draw = ImageDraw.Draw(image)
    _box(draw, 20, 40, 160, 66, (236, 236, 232))  # the ferry at the end of the quay
    _box(draw, 20, 60, 160, 70, (40, 40, 48))
    _box(draw, 70, 24, 110, 40, (190, 40, 40))  # funnel
    _figure(draw, TOMAS, 90, 280, 70, side=True)
    return image


# --------------------------------------------------------------------------- portraits


def portrait(who: Person, side: bool = False) -> Image.Image:
    """A bust: feet below the frame, so the head fills the upper half."""
    image = Image.new("RGB", PORTRAIT, (222, 224, 230))
    _figure(ImageDraw.Draw(image), who, 96, 470, 440, side=side)
    return image


def _frame(draw: Callable[[], Image.Image], number: int, end: bool = False) -> Callable[[], Image.Image]:
    def make() -> Image.Image:
        image = draw()
        _mark(image, number, end)
        return image

    return make


IMAGES: dict[str, Callable[[], Image.Image]] = {
    "fenced-template/image/frames/shot-01-ff.png": _frame(fenced_shot_01_ff, 1),
    "fenced-template/image/frames/shot-01-lf.png": _frame(fenced_shot_01_lf, 1, end=True),
    "fenced-template/image/frames/shot-02-ff.png": _frame(fenced_shot_02_ff, 2),
    "fenced-template/image/characters/ines-front.png": lambda: portrait(INES),
    "fenced-template/image/characters/tomas-front.png": lambda: portrait(TOMAS),
    "blockquote-example/image/frames/shot-01-ff.png": _frame(blockquote_shot_01_ff, 1),
    "blockquote-example/image/frames/shot-01-lf.png": _frame(blockquote_shot_01_lf, 1, end=True),
    "blockquote-example/image/frames/shot-02-ff.png": _frame(blockquote_shot_02_ff, 2),
    "blockquote-example/image/characters/ines-front.png": lambda: portrait(INES),
    "blockquote-example/image/characters/tomas-front.png": lambda: portrait(TOMAS),
    "kling-first/image/frames/shot-01-ff.png": _frame(kling_first_shot_01_ff, 1),
    "kling-first/image/frames/shot-04-ff.png": _frame(kling_first_shot_04_ff, 4),
    "kling-first/image/characters/harbour-master-front.png": lambda: portrait(HARBOUR_MASTER),
    "kling-first/image/characters/tomas-front.png": lambda: portrait(TOMAS),
    "kling-first/image/characters/tomas-side.png": lambda: portrait(TOMAS, side=True),
}


def main(root: Path) -> list[Path]:
    """Write every fixture image under `root`; return the paths written, in IMAGES order."""
    written = []
    for rel, draw in IMAGES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        draw().save(path, optimize=True)
        written.append(path)
    return written


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "storyboards"
    for written in main(Path(sys.argv[1]) if len(sys.argv) > 1 else default):
        print(written)
