"""What the preview draws (providers/preview_cards.py): the text-to-video title card, its
CJK text, and the slate burned into every frame (shot id, clock, dialogue)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_preview_render import (
    _BOTTOM,
    _MIDDLE,
    _TOP_LEFT,
    _TOP_RIGHT,
    FPS,
    SH,
    SW,
    H,
    _flat,
    _frames,
    _mad,
    _render,
    _slated,
)

from aivp_batch.media import probe
from aivp_batch.providers import preview_cards

# ------------------------------------------------------------------ the title card


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
    path = Path(preview_cards._cjk_font_file() or "")
    assert path.is_file() and path.name == "NotoSansCJKjp-Regular.otf"
    assert path.parent.name == "noto_cjk_sans_jp_regular"


_ZH_A, _ZH_B = "夕阳下的灯塔，镜头缓缓推进。" * 4, "海浪拍打礁石，女孩抬头看天。" * 4


def _card(path: Path, prompt: str) -> np.ndarray:
    return _frames(_render(path, width=320, height=180, duration_s=0.25, prompt=prompt, title="镜头-01"))[0]


def test_t2v_card_draws_cjk_glyphs_not_tofu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    noto_a, noto_b = _card(tmp_path / "a.mp4", _ZH_A), _card(tmp_path / "b.mp4", _ZH_B)
    monkeypatch.setattr(preview_cards, "_cjk_font_file", lambda: None)  # the built-in font alone
    tofu_a, tofu_b = _card(tmp_path / "ta.mp4", _ZH_A), _card(tmp_path / "tb.mp4", _ZH_B)
    assert _mad(noto_a, tofu_a) > 3  # the card is not the one the fallback font draws
    # The fallback draws every character as the same box, so two texts of one length look alike;
    # real glyphs tell them apart.
    assert _mad(tofu_a, tofu_b) < 0.5
    assert _mad(noto_a, noto_b) > 1


# ------------------------------------------------------------------ the burned-in slate


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
