"""Draw the keyframes and character portraits of examples/short-film (deterministic, Pillow only).

    .venv/bin/python scripts/make_example_images.py [project_dir]

The pictures are flat shapes, not art: enough for an offline preview render to show which shot is
which, where the characters stand and whether a first/last-frame pair differs. Re-running it
rewrites the same files.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FRAME_SIZE = (1280, 720)
PORTRAIT_SIZE = (768, 1024)
COLOURS = 48  # a small palette keeps each PNG well under 150 KB

SKIN = (231, 190, 160)
WALL_TOP, WALL_BOTTOM = (250, 226, 180), (214, 168, 112)  # warm morning kitchen
FLOOR = (120, 84, 60)
WOOD = (156, 104, 64)
WINDOW = (190, 222, 245)


@dataclass(frozen=True)
class Person:
    name: str
    hair: tuple[int, int, int]
    clothes: tuple[int, int, int]
    long_hair: bool


ELENA = Person("Elena", hair=(150, 62, 34), clothes=(128, 128, 136), long_hair=True)  # auburn, gray blazer
MARCO = Person("Marco", hair=(40, 32, 28), clothes=(44, 86, 150), long_hair=False)  # dark hair, blue sweater


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font still reads
        return ImageFont.load_default()


def _gradient(size: tuple[int, int], top: tuple[int, ...], bottom: tuple[int, ...]) -> Image.Image:
    width, height = size
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / max(height - 1, 1)
        draw.line(
            [(0, y), (width, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        )
    return image


def _kitchen(window_x: int) -> Image.Image:
    """Wall gradient, a window with morning sky, a floor and a counter along the back wall."""
    width, height = FRAME_SIZE
    image = _gradient(FRAME_SIZE, WALL_TOP, WALL_BOTTOM)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, int(height * 0.78), width, height], fill=FLOOR)
    draw.rectangle([window_x, 90, window_x + 260, 330], fill=WINDOW, outline=(255, 255, 255), width=10)
    draw.line([(window_x + 130, 90), (window_x + 130, 330)], fill=(255, 255, 255), width=6)
    draw.ellipse([window_x + 170, 120, window_x + 230, 180], fill=(255, 214, 110))  # the sun
    return image


def _person(draw: ImageDraw.ImageDraw, who: Person, cx: int, feet_y: int, scale: float, seated: bool) -> None:
    """A body trapezoid and a head, so the two characters differ in colour and outline."""
    head = int(46 * scale)
    body_h = int((150 if seated else 260) * scale)
    top = feet_y - body_h
    half_top, half_bottom = int(48 * scale), int(70 * scale)
    draw.polygon(
        [(cx - half_top, top), (cx + half_top, top), (cx + half_bottom, feet_y), (cx - half_bottom, feet_y)],
        fill=who.clothes,
    )
    head_box = [cx - head, top - 2 * head - 6, cx + head, top - 6]
    if who.long_hair:
        draw.rectangle([cx - head - 8, top - head - 10, cx + head + 8, top + int(20 * scale)], fill=who.hair)
    draw.ellipse(head_box, fill=SKIN)
    draw.chord(
        [head_box[0] - 4, head_box[1] - 6, head_box[2] + 4, head_box[3] - head], 180, 360, fill=who.hair
    )
    eye_y = top - head - 4
    eye = max(4, head // 10)
    for dx in (-head // 3, head // 3):
        draw.ellipse([cx + dx - eye, eye_y - eye, cx + dx + eye, eye_y + eye], fill=(40, 30, 30))
    draw.arc(
        [cx - head // 3, eye_y, cx + head // 3, eye_y + head // 2], 30, 150, fill=(150, 70, 60), width=eye
    )


def _label(image: Image.Image, text: str) -> None:
    draw = ImageDraw.Draw(image)
    font = _font(42)
    left, top, right, bottom = draw.textbbox((44, 30), text, font=font)
    draw.rectangle([24, 20, right + 20, bottom + 12], fill=(20, 20, 24))
    draw.text((44, 30), text, fill=(255, 255, 255), font=font)


def _table(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int]) -> None:
    draw.rectangle(box, fill=WOOD)
    x0, y0, x1, _ = box
    for cup_x in (x0 + (x1 - x0) // 3, x0 + 2 * (x1 - x0) // 3):
        draw.rectangle(
            [cup_x - 22, y0 - 44, cup_x + 22, y0], fill=(245, 245, 240), outline=(90, 90, 90), width=3
        )


def shot_01_ff() -> Image.Image:
    """Wide: Elena at the counter (right), Marco in the doorway (left)."""
    image = _kitchen(window_x=820)
    draw = ImageDraw.Draw(image)
    draw.rectangle([620, 400, 1280, 560], fill=WOOD)  # counter
    draw.rectangle([60, 180, 260, 562], fill=(110, 78, 54))  # doorway
    _person(draw, MARCO, 160, 560, 0.9, seated=False)
    _person(draw, ELENA, 900, 600, 1.0, seated=False)
    return image


def shot_02_ff() -> Image.Image:
    """Medium two-shot: Marco standing by the table, Elena turned to the counter."""
    image = _kitchen(window_x=120)
    draw = ImageDraw.Draw(image)
    _table(draw, (380, 520, 900, 600))
    _person(draw, MARCO, 460, 640, 1.3, seated=False)
    _person(draw, ELENA, 1050, 660, 1.3, seated=False)
    return image


def shot_02_lf() -> Image.Image:
    """Same framing, later: Marco has sat down, Elena stands across the table."""
    image = _kitchen(window_x=40)  # the camera has panned left
    draw = ImageDraw.Draw(image)
    _table(draw, (300, 520, 820, 600))
    _person(draw, MARCO, 420, 600, 1.3, seated=True)
    _person(draw, ELENA, 900, 660, 1.3, seated=False)
    return image


def shot_04_ff() -> Image.Image:
    """Low on the table top (the camera will tilt up to Marco's face)."""
    image = _gradient(FRAME_SIZE, (214, 168, 112), (150, 100, 64))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 360, 1280, 720], fill=WOOD)
    draw.rectangle(
        [470, 420, 810, 640], fill=(250, 250, 245), outline=(200, 190, 170), width=4
    )  # the postcard
    draw.rectangle([150, 300, 260, 420], fill=(245, 245, 240), outline=(90, 90, 90), width=4)  # a cup
    draw.polygon([(520, 360), (760, 360), (820, 0), (460, 0)], fill=MARCO.clothes)  # Marco's chest above
    return image


def portrait(who: Person, side: bool = False) -> Image.Image:
    """A bust, from the front or turned to the side (a Kling element wants both angles)."""
    image = _gradient(PORTRAIT_SIZE, (236, 236, 240), (180, 186, 196))
    draw = ImageDraw.Draw(image)
    # A bust: the feet are below the frame so the head sits in the upper half.
    cx = PORTRAIT_SIZE[0] // 2 - (60 if side else 0)
    _person(draw, who, cx, PORTRAIT_SIZE[1] + 200, 2.6, seated=False)
    if side:  # turned right: a nose past the cheek, the far eye hidden behind it
        head, eye_y = int(46 * 2.6), PORTRAIT_SIZE[1] + 200 - int(260 * 2.6) - int(46 * 2.6) - 4
        draw.polygon(
            [(cx + head - 6, eye_y + 6), (cx + head + 26, eye_y + 40), (cx + head - 6, eye_y + 52)], fill=SKIN
        )
        draw.ellipse([cx - head // 3 - 14, eye_y - 14, cx - head // 3 + 14, eye_y + 14], fill=SKIN)
    _label(image, who.name.upper() + (" · SIDE" if side else ""))
    return image


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True
    )


def main(project: Path) -> None:
    frames = {
        "shot-01-ff": shot_01_ff,
        "shot-02-ff": shot_02_ff,
        "shot-02-lf": shot_02_lf,
        "shot-04-ff": shot_04_ff,
    }
    for name, draw in frames.items():
        image = draw()
        _label(image, f"SHOT {name[5:7]}" + (" END" if name.endswith("lf") else ""))
        _save(image, project / "image" / "frames" / f"{name}.png")
    for who in (ELENA, MARCO):
        _save(portrait(who), project / "image" / "characters" / f"{who.name.lower()}-front.png")
        _save(portrait(who, side=True), project / "image" / "characters" / f"{who.name.lower()}-side.png")


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[1] / "examples" / "short-film"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
