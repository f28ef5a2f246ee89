"""Reading shot specs in every upstream layout, the bundled example project, and bad input."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from aivp_batch.errors import StoryboardError
from aivp_batch.shots import Shot, ShotProblem, Storyboard
from aivp_batch.storyboard import NO_MOTION_PROMPT, read_storyboard

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "storyboards"
FENCED = FIXTURES / "fenced-template"  # `### Seedance 2.0` / `### Kling 3.0` headings over fenced prompts
BLOCKQUOTE = FIXTURES / "blockquote-example"  # `**Motion prompt** (… format):` labels over `>` quotes
OLD_KLING = FIXTURES / "kling-first"  # older files: `## Kling 3.0 (Primary)` first, plain `Duration: 8s`
MAKE_IMAGES = Path(__file__).resolve().parents[1] / "scripts" / "make_fixture_images.py"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "short-film"
SHOTS = Path("storyboard/storyboard-final/shots")


def make_project(root: Path, shots: dict[str, str | bytes | Path], frame_plan: str | None = None) -> Path:
    folder = root / SHOTS
    folder.mkdir(parents=True)
    for name, content in shots.items():
        if isinstance(content, Path):
            shutil.copy(content, folder / name)
        elif isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content, encoding="utf-8")
    if frame_plan is not None:
        (folder.parent / "frame-plan.md").write_text(frame_plan, encoding="utf-8")
    return root


def only_shot(board: Storyboard) -> Shot:
    assert board.problems == []
    assert len(board.shots) == 1
    return board.shots[0]


# --------------------------------------------------------------------------- upstream layouts, our fixtures


def fixture_shot(project: Path, shot_id: str) -> Shot:
    (shot,) = [s for s in read_storyboard(project).shots if s.id == shot_id]
    return shot


def frame(project: Path, name: str) -> Path:
    return (project / "image" / "frames" / name).resolve()


def portraits(project: Path, *names: str) -> tuple[Path, ...]:
    return tuple((project / "image" / "characters" / name).resolve() for name in names)


def test_fenced_template_project() -> None:
    board = read_storyboard(FENCED)
    assert (board.problems, board.warnings) == ([], [])  # frame-plan.md names every shot
    assert [(s.id, s.number, s.shot_code) for s in board.shots] == [
        ("shot-01", 1, "1.1"),
        ("shot-02", 2, "1.2"),
        ("shot-03", 3, None),
    ]


def test_fenced_template_two_character_shot() -> None:
    shot = fixture_shot(FENCED, "shot-01")
    assert shot.source == (FENCED / SHOTS / "shot-01.md").resolve()
    assert (shot.scene, shot.camera, shot.variation) == ("lamp-room-dusk", "cam_0 (WS, low angle)", "medium")
    assert shot.emotion == "→ (quiet waiting)"
    assert (shot.duration_s, shot.aspect_ratio) == (6.0, "16:9")
    assert shot.camera_fixed is False  # "unfixed (slow push in)"
    assert shot.input_frames == "first + last frame"
    assert shot.characters == ("Ines", "Tomas")
    assert shot.dialogue == '[Tomas, out of breath]: "Parcel for the lighthouse!"'
    assert shot.bgm == "Low cello drone, slowly rising"
    assert shot.sfx == "Rain on glass, iron hinge creak, boots on rungs"
    assert set(shot.prompts) == {"seedance", "kling", "motion"}
    seedance = shot.prompts["seedance"].splitlines()
    assert seedance[:3] == [
        "【整体描述】",
        "电影写实风格，6秒，16:9横屏，黄昏的灯塔灯室，紫色天空，安静的等待",
        "",
    ]
    assert "0-3秒：低角度全景缓慢推镜头，穿黄色油布雨衣的老妇人站在高窗前，地板上的活板门被推开" in seedance
    assert seedance[-4:] == [
        "@图片1 作为老妇人形象参考",
        "@图片2 作为年轻人形象参考",
        "",
        "人物面部保持一致，动作连贯自然，高清画质，电影感光影",
    ]
    assert shot.prompts["kling"].splitlines() == [
        "[Camera: slow push in, wide shot, low angle]",
        "A young man in a green rain jacket and red cap climbs up through a trapdoor,"
        " a brown parcel in his arms.",
        "An older woman in a yellow oilskin coat turns from a tall window to face him.",
        "Dusk light, violet sky, rain streaking the glass.",
        '[Tomas, out of breath]: "Parcel for the lighthouse!"',
        "(Duration: 6s)",
    ]
    # `### Motion` of the Shot Decomposition, without the `> ` markers.
    assert shot.prompts["motion"] == (
        "Slow push in. The trapdoor swings up and the young man climbs the last rungs,\n"
        "rain dripping from his cap. The woman turns from the window, gently surprised."
    )
    # The `**Prompt**:` quotes of `## For aivp-image` are for the image model, not the video model.
    assert "lighthouse lamp room" not in " ".join(shot.prompts.values())
    assert shot.negative_prompt is None
    assert (shot.start_frame, shot.end_frame) == (
        frame(FENCED, "shot-01-ff.png"),
        frame(FENCED, "shot-01-lf.png"),
    )
    assert shot.character_refs == portraits(FENCED, "ines-front.png", "tomas-front.png")


def test_fenced_template_negative_prompt_section_and_chinese_dialogue() -> None:
    shot = fixture_shot(FENCED, "shot-02")
    assert (shot.shot_code, shot.variation, shot.duration_s, shot.camera_fixed) == ("1.2", "small", 4.0, True)
    assert shot.input_frames == "first-frame only"
    assert shot.characters == ("Ines",)
    assert shot.dialogue == '[Ines, 轻声]: "这么晚了，是谁寄来的？"'
    assert (shot.bgm, shot.sfx) == ("(continue)", "Wet paper creasing, string creaking")
    assert shot.negative_prompt == "text overlays, watermark, extra fingers, warped string"
    assert "negative" not in shot.prompts
    assert shot.prompts["seedance"].splitlines()[5] == (
        '2-4秒：双手缓缓把包裹翻过来，拇指擦去地址标签上的雨水，手指微微发抖，老妇人轻声问"这么晚了，是谁寄来的？"'
    )
    assert shot.prompts["kling"].splitlines()[-2:] == [
        '[Ines, softly]: "Who would send this so late?"',
        "(Duration: 4s)",
    ]
    assert shot.prompts["motion"].startswith("Fixed camera. The hands turn the parcel over slowly;")
    assert (shot.start_frame, shot.end_frame) == (frame(FENCED, "shot-02-ff.png"), None)  # small variation
    assert shot.character_refs == portraits(FENCED, "ines-front.png")


def test_fenced_template_placeholders_are_not_values() -> None:
    # shot-03 is a draft: only the Seedance prompt is written, everything else is still `{…}`.
    shot = fixture_shot(FENCED, "shot-03")
    assert shot.prompts["seedance"] == (
        "【整体描述】\n电影写实风格，5秒，16:9横屏，夜色中的灯塔外景\n\n"
        "【分镜描述】\n0-5秒：远景固定机位，灯塔的光束第一次扫过漆黑的海面\n\n"
        "【声音说明】\n海浪声 + 远处的雾笛"
    )
    # A fenced block that merely contains placeholders is kept as written …
    assert shot.prompts["kling"].splitlines() == [
        "[Camera: {move}, {size}, {angle}]",
        "{What the subject does, described by appearance}",
        "{Light and mood}",
        "(Duration: {seconds}s)",
    ]
    # … but a `### Motion` that is one `{…}` instruction is no prompt, and `{seconds}s` etc. are no values.
    assert "motion" not in shot.prompts
    assert (shot.duration_s, shot.aspect_ratio, shot.camera_fixed, shot.input_frames) == (None,) * 4
    assert (shot.shot_code, shot.scene, shot.camera, shot.variation, shot.emotion) == (None,) * 5
    assert shot.characters == ()  # `@{Character}`
    assert (shot.dialogue, shot.bgm, shot.sfx) == (None, None, None)
    assert (shot.start_frame, shot.end_frame, shot.character_refs) == (None, None, ())


def test_blockquote_example_project() -> None:
    board = read_storyboard(BLOCKQUOTE)
    assert [(s.id, s.shot_code) for s in board.shots] == [("shot-01", "2.1"), ("shot-02", "2.2")]
    # shot-03 has no video prompt yet; its `## For aivp-image` `**Prompt**` does not count as one.
    assert board.problems == [
        ShotProblem("storyboard/storyboard-final/shots/shot-03.md", NO_MOTION_PROMPT, "shot-03")
    ]
    assert board.warnings == [
        "storyboard/storyboard-final/shots/shot-02.md: its Duration line says 4.5s but its metadata table "
        "says 4s; rendering 4.5s (make them agree)",
        "frame-plan.md names Shot 2.4, but no shot file has that Shot ID",
        "shot-03 is not mentioned in frame-plan.md",
    ]


def test_blockquote_labels_and_quoted_prompts() -> None:
    shot = fixture_shot(BLOCKQUOTE, "shot-01")
    assert (shot.scene, shot.camera, shot.variation) == ("lamp-room-night", "cam_0 (MS, eye-level)", "medium")
    assert shot.emotion == "↑ (wary curiosity)"
    assert (shot.duration_s, shot.aspect_ratio) == (5.0, "16:9")  # the `**Parameters**:` list
    assert shot.camera_fixed is False  # "- Camera: slow pan right"
    assert shot.input_frames == "first + last frame (medium variation)"
    assert shot.characters == ("Tomas", "Ines")
    assert shot.dialogue == '[Ines, wary]: "Nobody has written to me in years."'
    assert shot.bgm == "(continue — low cello drone)"
    assert shot.sfx == "Storm wind, rain drumming on the lantern glass"
    seedance = shot.prompts["seedance"].splitlines()
    assert seedance[:3] == ["【整体描述】", "电影写实风格，5秒，16:9横屏，风雨夜的灯塔灯室，昏黄的油灯光", ""]
    assert "0-2秒：中景缓慢向右摇，穿绿色雨衣的年轻人双手递出湿透的棕色包裹" in seedance
    assert seedance[-1] == "人物面部保持一致，动作连贯自然，高清画质，电影感光影"
    assert not any(line.startswith(">") for line in seedance)
    assert shot.prompts["kling"] == (
        "[Camera: slow pan right, medium shot, eye-level]\n"
        "A young man in a green rain jacket holds out a soaked brown parcel with both hands.\n"
        "An older woman in a yellow oilskin coat takes it and turns it over, frowning.\n"
        "Warm lamplight, storm beyond the glass.\n"
        '[Ines, wary]: "Nobody has written to me in years."\n'
        "(Duration: 5s)"
    )
    assert shot.prompts["motion"] == (
        "Slow pan right. The young man offers the parcel with both hands; the woman hesitates,\n"
        "then takes it and turns it over, frowning. He tugs his wet cap off."
    )
    # "Negative guidance" belongs to the image section, not to the video model.
    assert shot.negative_prompt is None
    ends = (frame(BLOCKQUOTE, "shot-01-ff.png"), frame(BLOCKQUOTE, "shot-01-lf.png"))
    assert (shot.start_frame, shot.end_frame) == ends
    assert shot.character_refs == portraits(BLOCKQUOTE, "ines-front.png", "tomas-front.png")  # file order


def test_blockquote_inline_motion_prompt_and_parameters() -> None:
    shot = fixture_shot(BLOCKQUOTE, "shot-02")
    # No Kling fallback written; the inline English motion prompt beats the `### Motion` decomposition.
    assert set(shot.prompts) == {"seedance", "motion"}
    assert shot.prompts["motion"] == "Static close-up; her eyes track the address, then her lips part."
    assert shot.prompts["seedance"].splitlines()[4] == (
        '0-4.5秒：特写固定机位，老妇人的目光扫过地址，嘴唇微微张开，低声说"这是我哥哥的字迹"'
    )
    assert shot.duration_s == 4.5  # "- Duration: 4.5 seconds" beats the metadata table's 4s
    assert shot.aspect_ratio == "16:9"  # "16:9 widescreen"
    assert shot.camera_fixed is True  # "static (unfixed camera = NO)"
    assert shot.dialogue == '[Ines, 低声]: "这是我哥哥的字迹。"'
    assert (shot.bgm, shot.sfx) == ("Cello drops out; a single held piano note", None)
    assert (shot.start_frame, shot.end_frame) == (frame(BLOCKQUOTE, "shot-02-ff.png"), None)
    assert shot.character_refs == portraits(BLOCKQUOTE, "ines-front.png")


def test_kling_first_project() -> None:
    board = read_storyboard(OLD_KLING)
    assert [(s.id, s.shot_code) for s in board.shots] == [("shot-01", "3.1"), ("shot-02", "3.2")]
    assert board.problems == [
        ShotProblem("storyboard/storyboard-final/shots/shot-03.md", "not UTF-8 text", "shot-03"),
        ShotProblem(
            "storyboard/storyboard-final/shots/shot-04.md",
            "bad aspect ratio 'tall' (expected W:H, e.g. 16:9)",
            "shot-04",
        ),
    ]
    # The old frame plan names shots by file; unreadable shots still count as mentioned.
    assert board.warnings == [
        "frame-plan.md names shot-05, but there is no storyboard/storyboard-final/shots/shot-05.md"
    ]


def test_kling_first_primary_then_seedance_alternative() -> None:
    shot = fixture_shot(OLD_KLING, "shot-01")
    assert shot.prompts == {
        "kling": (
            "[Camera: crane down, wide shot, high angle]\n"
            "A young man in a green rain jacket and red cap walks along a wet stone quay at dawn,"
            " a parcel under his arm.\n"
            "A heavy-set man in a navy peacoat watches him from a harbour office doorway."
        ),
        "seedance": (
            "【整体描述】\n黎明的码头，8秒，竖屏\n\n"
            "【分镜描述】\n0-8秒：高角度远景，镜头缓缓下降，年轻人夹着包裹沿湿漉漉的石砌码头走来"
        ),
    }
    assert (shot.shot_code, shot.scene, shot.camera) == ("3.1", "quay-dawn", "cam_0 (WS, high angle)")
    assert (shot.duration_s, shot.aspect_ratio, shot.camera_fixed) == (8.0, "9:16", False)  # "moving"
    assert shot.characters == ("Tomas", "Harbour Master")  # "@Harbour Master (doorway)"
    assert shot.negative_prompt == "lens flare, duplicated boats, warped lettering"
    assert (shot.variation, shot.emotion, shot.input_frames, shot.dialogue) == (None, None, None, None)
    assert (shot.start_frame, shot.end_frame) == (frame(OLD_KLING, "shot-01-ff.png"), None)
    assert shot.character_refs == portraits(
        OLD_KLING, "harbour-master-front.png", "tomas-front.png", "tomas-side.png"
    )


def test_kling_first_kling_only_with_full_width_colons() -> None:
    shot = fixture_shot(OLD_KLING, "shot-02")
    assert set(shot.prompts) == {"kling"}
    line = '[Harbour Master, gruff]: "You\'re the lad from the mainland?"'
    assert shot.prompts["kling"].splitlines()[-1] == line
    assert shot.dialogue == line  # from the metadata table
    assert shot.duration_s == 7.0  # "Duration：7秒"
    assert shot.aspect_ratio == "9:16"  # "Aspect ratio：9：16"
    assert shot.camera_fixed is True  # "tripod"
    assert shot.characters == ("Harbour Master", "Tomas")
    assert (shot.start_frame, shot.end_frame) == (None, None)  # text-to-video
    assert [p.name for p in shot.character_refs] == [
        "harbour-master-front.png",
        "tomas-front.png",
        "tomas-side.png",
    ]


def test_kling_first_broken_file_is_really_not_utf8() -> None:
    # Saved by an old editor in GBK: a real spec, but not UTF-8. Guard the fixture against re-saving.
    raw = (OLD_KLING / SHOTS / "shot-03.md").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    text = raw.decode("gbk")
    assert text.startswith("# 镜头 3.3") and "## Kling 3.0 (Primary)" in text


def test_three_layouts_side_by_side_in_number_order(tmp_path: Path) -> None:
    shots = {
        "shot-03.md": FENCED / SHOTS / "shot-01.md",
        "shot-01.md": BLOCKQUOTE / SHOTS / "shot-01.md",
        "shot-02.md": OLD_KLING / SHOTS / "shot-01.md",
    }
    board = read_storyboard(make_project(tmp_path, shots))
    assert (board.problems, board.warnings) == ([], [])
    assert [(s.id, s.shot_code) for s in board.shots] == [
        ("shot-01", "2.1"),
        ("shot-02", "3.1"),
        ("shot-03", "1.1"),
    ]
    assert [set(s.prompts) for s in board.shots] == [
        {"seedance", "kling", "motion"},
        {"seedance", "kling"},
        {"seedance", "kling", "motion"},
    ]
    # Frames and portraits come from the project the files sit in: this one has none.
    assert {(s.start_frame, s.end_frame, s.character_refs) for s in board.shots} == {(None, None, ())}


# --------------------------------------------------------------------------- the fixture images


FIXTURE_IMAGES = {
    "blockquote-example/image/characters/ines-front.png": (192, 256),
    "blockquote-example/image/characters/tomas-front.png": (192, 256),
    "blockquote-example/image/frames/shot-01-ff.png": (320, 180),
    "blockquote-example/image/frames/shot-01-lf.png": (320, 180),
    "blockquote-example/image/frames/shot-02-ff.png": (320, 180),
    "fenced-template/image/characters/ines-front.png": (192, 256),
    "fenced-template/image/characters/tomas-front.png": (192, 256),
    "fenced-template/image/frames/shot-01-ff.png": (320, 180),
    "fenced-template/image/frames/shot-01-lf.png": (320, 180),
    "fenced-template/image/frames/shot-02-ff.png": (320, 180),
    "kling-first/image/characters/harbour-master-front.png": (192, 256),
    "kling-first/image/characters/tomas-front.png": (192, 256),
    "kling-first/image/characters/tomas-side.png": (192, 256),
    "kling-first/image/frames/shot-01-ff.png": (180, 320),  # 9:16
    "kling-first/image/frames/shot-04-ff.png": (180, 320),
}


def pixels(path: Path) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(path) as image:
        return image.mode, image.size, image.tobytes()


def test_fixture_images_are_small_and_sized() -> None:
    pngs = sorted(p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*.png"))
    assert pngs == sorted(FIXTURE_IMAGES)
    for rel, size in FIXTURE_IMAGES.items():
        assert (FIXTURES / rel).stat().st_size < 20_000, rel
        assert pixels(FIXTURES / rel)[:2] == ("RGB", size), rel
    for project in (FENCED, BLOCKQUOTE):  # the end frame is a different picture from the start frame
        assert pixels(project / "image/frames/shot-01-ff.png") != pixels(
            project / "image/frames/shot-01-lf.png"
        )
    assert pixels(OLD_KLING / "image/characters/tomas-front.png") != pixels(
        OLD_KLING / "image/characters/tomas-side.png"
    )


def test_fixture_images_regenerate_identically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("make_fixture_images", MAKE_IMAGES)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, script)  # its dataclasses look their module up
    spec.loader.exec_module(script)
    written = script.main(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(FIXTURE_IMAGES)
    for rel in FIXTURE_IMAGES:  # pixels, not bytes: zlib may pack the same picture differently
        assert pixels(tmp_path / rel) == pixels(FIXTURES / rel), rel


KLING_FIRST = """\
# Shot 2.1 — Hallway

| Field | Value |
|---|---|
| Shot ID | 2.1 |
| Scene | hallway-night |
| Duration | 8s |

## Characters
| Character | Role |
|---|---|
| @Marco | walks |
| @Old Man (left) | watches |

## Video prompts

## Kling 3.0 (Primary)
```text
[Camera: dolly forward, wide shot]
A man in a blue sweater walks down a dark hallway.
```

#### Seedance 2.0 Prompt — alternative
```
【整体描述】
走廊，8秒
```

Duration: 8s
Aspect ratio: 9:16
Camera mode: moving
Negative prompt: blurry, extra limbs
"""

ENGLISH_ONLY = """\
# Shot 3

| Field | Value |
|---|---|
| Duration | 6 seconds |

## For aivp-video

**Motion prompt** (English):
```
Slow pan right across an empty street at dawn.
```

- Aspect ratio: 1:1
- Camera mode: fixed
"""

MOTION_ONLY = """\
# Shot 4

## Shot Decomposition

### Motion
> Tilt up from the table to the window.
> The curtains sway.

## Audio

| Layer | Content |
|---|---|
| Dialogue | (none) |
| SFX | Wind |
"""


def test_kling_first_layout(tmp_path: Path) -> None:
    shot = only_shot(read_storyboard(make_project(tmp_path, {"shot-07.md": KLING_FIRST})))
    assert shot.prompts == {
        "seedance": "【整体描述】\n走廊，8秒",
        "kling": "[Camera: dolly forward, wide shot]\nA man in a blue sweater walks down a dark hallway.",
    }
    assert (shot.shot_code, shot.scene, shot.duration_s) == ("2.1", "hallway-night", 8.0)
    assert (shot.aspect_ratio, shot.camera_fixed) == ("9:16", False)
    assert shot.characters == ("Marco", "Old Man")
    assert shot.negative_prompt == "blurry, extra limbs"


def test_english_motion_prompt_only(tmp_path: Path) -> None:
    shot = only_shot(read_storyboard(make_project(tmp_path, {"shot-03.md": ENGLISH_ONLY})))
    assert shot.prompts == {"motion": "Slow pan right across an empty street at dawn."}
    assert (shot.duration_s, shot.aspect_ratio, shot.camera_fixed) == (6.0, "1:1", True)


def test_motion_decomposition_only(tmp_path: Path) -> None:
    shot = only_shot(read_storyboard(make_project(tmp_path, {"shot-04.md": MOTION_ONLY})))
    assert shot.prompts == {"motion": "Tilt up from the table to the window.\nThe curtains sway."}
    assert (shot.dialogue, shot.sfx, shot.duration_s) == (None, "Wind", None)


def test_video_motion_prompt_beats_decomposition(tmp_path: Path) -> None:
    text = MOTION_ONLY + "\n## For aivp-video\n\n**Motion prompt**: Push in on the window.\n"
    shot = only_shot(read_storyboard(make_project(tmp_path, {"shot-01.md": text})))
    assert shot.prompts == {"motion": "Push in on the window."}


def test_video_duration_beats_metadata_and_placeholders_fall_back(tmp_path: Path) -> None:
    override = "| Field | Value |\n|---|---|\n| Duration | 5s |\n\n### Motion\n> Pan.\n\n**Duration**: 8s\n"
    placeholder = (
        "| Field | Value |\n|---|---|\n| Duration | 6s |\n\n### Motion\n> Pan.\n\n**Duration**: {N}s\n"
    )
    board = read_storyboard(make_project(tmp_path, {"shot-01.md": override, "shot-02.md": placeholder}))
    assert [s.duration_s for s in board.shots] == [8.0, 6.0]


# --------------------------------------------------------------------------- the example project


def test_example_project() -> None:
    board = read_storyboard(EXAMPLE)
    assert board.problems == [] and board.warnings == []
    assert [s.id for s in board.shots] == ["shot-01", "shot-02", "shot-03", "shot-04"]
    assert [s.shot_code for s in board.shots] == ["1.1", "1.2", "1.3", "1.4"]
    assert [s.duration_s for s in board.shots] == [5.0, 6.0, 4.0, 7.0]
    assert {s.aspect_ratio for s in board.shots} == {"16:9"}
    assert [s.camera_fixed for s in board.shots] == [False, False, True, False]
    frames = EXAMPLE.resolve() / "image" / "frames"
    # I2V, first+last frame, T2V, I2V
    assert [(s.start_frame, s.end_frame) for s in board.shots] == [
        (frames / "shot-01-ff.png", None),
        (frames / "shot-02-ff.png", frames / "shot-02-lf.png"),
        (None, None),
        (frames / "shot-04-ff.png", None),
    ]
    refs = [[p.name for p in s.character_refs] for s in board.shots]
    elena, marco = ["elena-front.png", "elena-side.png"], ["marco-front.png", "marco-side.png"]
    assert refs == [elena + marco] * 2 + [elena, marco]  # a front and a side view each
    assert [s.characters for s in board.shots][2:] == [("Elena",), ("Marco",)]
    for shot in board.shots:
        assert set(shot.prompts) == {"seedance", "kling", "motion"}, shot.id


@pytest.mark.parametrize(
    ("number", "english", "chinese"),
    [(1, "push in", "推镜头"), (2, "pan left", "向左摇"), (3, "static", "固定机位"), (4, "tilt up", "上摇")],
)
def test_example_prompts_name_the_camera_move(number: int, english: str, chinese: str) -> None:
    shot = read_storyboard(EXAMPLE).shots[number - 1]
    assert english in shot.prompts["kling"].lower()
    assert english in shot.prompts["motion"].lower()
    assert chinese in shot.prompts["seedance"]


def test_example_images_are_small_and_sized() -> None:
    pngs = sorted((EXAMPLE / "image").rglob("*.png"))
    assert [p.name for p in pngs] == [
        "elena-front.png",
        "elena-side.png",
        "marco-front.png",
        "marco-side.png",
        "shot-01-ff.png",
        "shot-02-ff.png",
        "shot-02-lf.png",
        "shot-04-ff.png",
    ]
    for png in pngs:
        assert png.stat().st_size < 150_000, png
        with Image.open(png) as image:
            assert image.size == ((768, 1024) if png.parent.name == "characters" else (1280, 720)), png


# --------------------------------------------------------------------------- bad input


GOOD = "### Motion\n> Slow push in.\n\n**Duration**: 5s\n"


def test_missing_motion_prompt_is_one_problem_and_others_still_read(tmp_path: Path) -> None:
    no_prompt = "# Shot\n\n| Field | Value |\n|---|---|\n| Duration | 5s |\n"
    board = read_storyboard(
        make_project(tmp_path, {"shot-01.md": GOOD, "shot-02.md": no_prompt, "shot-03.md": GOOD})
    )
    assert [s.id for s in board.shots] == ["shot-01", "shot-03"]
    assert board.problems == [
        ShotProblem("storyboard/storyboard-final/shots/shot-02.md", NO_MOTION_PROMPT, "shot-02")
    ]
    assert "Seedance 2.0, Kling 3.0 or Motion" in NO_MOTION_PROMPT


def test_unreadable_duration(tmp_path: Path) -> None:
    bad = "| Field | Value |\n|---|---|\n| Duration | about five |\n\n### Motion\n> Pan left.\n"
    board = read_storyboard(make_project(tmp_path, {"shot-01.md": GOOD, "shot-02.md": bad}))
    assert [s.id for s in board.shots] == ["shot-01"]
    (problem,) = board.problems
    assert problem.file == "storyboard/storyboard-final/shots/shot-02.md"
    assert problem.message.startswith("bad duration 'about five'")


def test_not_utf8(tmp_path: Path) -> None:
    board = read_storyboard(make_project(tmp_path, {"shot-01.md": b"### Motion\n> caf\xe9 \xff\n"}))
    assert board.shots == []
    assert board.problems == [
        ShotProblem("storyboard/storyboard-final/shots/shot-01.md", "not UTF-8 text", "shot-01")
    ]


def test_no_storyboard(tmp_path: Path) -> None:
    with pytest.raises(
        StoryboardError, match=r"no storyboard/storyboard-final/shots/shot-NN\.md files found"
    ) as exc:
        read_storyboard(tmp_path)
    assert exc.value.file == str(tmp_path)


def test_order_is_numeric_not_frame_plan_order(tmp_path: Path) -> None:
    plan = "shot-10 first, then shot-2, then shot-01"
    board = read_storyboard(
        make_project(tmp_path, {"shot-10.md": GOOD, "shot-2.md": GOOD, "shot-01.md": GOOD}, plan)
    )
    assert [(s.id, s.number) for s in board.shots] == [("shot-01", 1), ("shot-2", 2), ("shot-10", 10)]
    assert board.warnings == []


def test_duplicate_number_and_ignored_files(tmp_path: Path) -> None:
    board = read_storyboard(make_project(tmp_path, {"shot-01.md": GOOD, "shot-1.md": GOOD, "notes.md": GOOD}))
    assert [s.id for s in board.shots] == ["shot-01"]
    assert board.problems == [
        ShotProblem("storyboard/storyboard-final/shots/shot-1.md", "duplicate shot number 1", "shot-1")
    ]
    assert board.warnings == ["ignored storyboard/storyboard-final/shots/notes.md (not named shot-NN.md)"]


def test_frame_plan_cross_check(tmp_path: Path) -> None:
    shot_11 = "| Field | Value |\n|---|---|\n| Shot ID | 1.1 |\n\n" + GOOD
    shot_12 = "| Field | Value |\n|---|---|\n| Shot ID | 1.2 |\n\n" + GOOD
    plan = "#### Frame 1 — Shot 1.1 first-frame\n#### Frame 2 — Shot 1.9 first-frame\n- see shot-07\n"
    board = read_storyboard(make_project(tmp_path, {"shot-01.md": shot_11, "shot-02.md": shot_12}, plan))
    assert [s.id for s in board.shots] == ["shot-01", "shot-02"]
    assert board.warnings == [
        "frame-plan.md names Shot 1.9, but no shot file has that Shot ID",
        "frame-plan.md names shot-07, but there is no storyboard/storyboard-final/shots/shot-07.md",
        "shot-02 is not mentioned in frame-plan.md",
    ]


def test_fixture_frame_plan_against_fewer_shots(tmp_path: Path) -> None:
    # Only Shot 2.2 of the blockquote project, with that project's frame plan.
    project = make_project(tmp_path, {"shot-02.md": BLOCKQUOTE / SHOTS / "shot-02.md"})
    shutil.copy(BLOCKQUOTE / SHOTS.parent / "frame-plan.md", tmp_path / SHOTS.parent / "frame-plan.md")
    board = read_storyboard(project)
    assert [s.shot_code for s in board.shots] == ["2.2"]
    assert board.warnings == [
        "storyboard/storyboard-final/shots/shot-02.md: its Duration line says 4.5s but its metadata table "
        "says 4s; rendering 4.5s (make them agree)",
        "frame-plan.md names Shot 2.1, but no shot file has that Shot ID",
        "frame-plan.md names Shot 2.4, but no shot file has that Shot ID",
    ]


def test_no_frame_plan_no_warning(tmp_path: Path) -> None:
    assert read_storyboard(make_project(tmp_path, {"shot-01.md": GOOD})).warnings == []


def test_symlinked_frame_escaping_the_project(tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"png")
    project = make_project(tmp_path / "film", {"shot-01.md": GOOD})
    (project / "image" / "frames").mkdir(parents=True)
    (project / "image" / "frames" / "shot-01-ff.png").symlink_to(outside)
    with pytest.raises(StoryboardError, match="resolves outside the project directory") as exc:
        read_storyboard(project)
    assert exc.value.file == "image/frames/shot-01-ff.png"


# --------------------------------------------------------------------------- folders for frames, durations


def _coded(code: str, duration: str = "5s") -> str:
    return f"| Field | Value |\n|---|---|\n| Shot ID | {code} |\n| Duration | {duration} |\n\n{GOOD}"


def test_a_keyframe_that_is_a_directory_is_a_problem_not_t2v(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"shot-01.md": GOOD, "shot-02.md": GOOD})
    (project / "image/frames/shot-02-ff.png").mkdir(parents=True)
    board = read_storyboard(project)
    assert [s.id for s in board.shots] == ["shot-01"]
    assert board.problems == [
        ShotProblem(
            "storyboard/storyboard-final/shots/shot-02.md",
            "image/frames/shot-02-ff.png is a directory, not an image file",
            "shot-02",
        )
    ]


def test_a_duration_line_and_metadata_table_that_disagree_are_said(tmp_path: Path) -> None:
    board = read_storyboard(
        make_project(tmp_path, {"shot-01.md": _coded("1.1", "6s"), "shot-02.md": _coded("1.2")})
    )
    assert [s.duration_s for s in board.shots] == [5.0, 5.0]  # the Duration line still wins
    assert board.warnings == [
        "storyboard/storyboard-final/shots/shot-01.md: its Duration line says 5s but its metadata table "
        "says 6s; rendering 5s (make them agree)"
    ]
