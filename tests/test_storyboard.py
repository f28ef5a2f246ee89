"""Reading shot specs in every upstream layout, the bundled example project, and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from aivp_batch.errors import StoryboardError
from aivp_batch.storyboard import (
    NO_MOTION_PROMPT,
    Shot,
    ShotProblem,
    Storyboard,
    check_shot_id,
    find_character_refs,
    parse_aspect_ratio,
    parse_camera_fixed,
    parse_duration,
    read_storyboard,
    select_shots,
)

SEED = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "seed-repo"
TEMPLATE = SEED / "skills" / "aivp-storyboard" / "assets" / "shot-spec-template.md"
FILLED = SEED / "extracted" / "shot-spec-example-shot-1.3.md"
FRAME_PLAN_EXAMPLE = SEED / "extracted" / "frame-plan-example.md"
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


# --------------------------------------------------------------------------- upstream formats


def test_template_fenced_layout(tmp_path: Path) -> None:
    shot = only_shot(read_storyboard(make_project(tmp_path, {"shot-01.md": TEMPLATE})))
    assert (shot.id, shot.number) == ("shot-01", 1)
    assert shot.source == (tmp_path / SHOTS / "shot-01.md").resolve()
    assert shot.prompts["seedance"].splitlines()[0] == "【整体描述】"
    assert shot.prompts["seedance"].endswith("角色面部稳定不变形，动作自然流畅，4K超高清，电影质感，画面稳定")
    assert "@图片1 作为角色形象参考" in shot.prompts["seedance"]
    assert shot.prompts["kling"].splitlines() == [
        "[Camera: {movement}, {shot_type}, {angle}]",
        "{Subject action using visual appearance}",
        "{Lighting/atmosphere}",
        '[{Character}, {tone}]: "{dialogue}"',
        "(Duration: {N}s)",
    ]
    # The template's `### Motion` is one `{…}` instruction, and `{N}s` etc. are not values.
    assert "motion" not in shot.prompts
    assert shot.duration_s is None
    assert shot.aspect_ratio is None
    assert shot.camera_fixed is None
    assert shot.input_frames is None
    assert shot.shot_code is None and shot.scene is None and shot.camera is None
    assert shot.characters == ()
    assert (shot.dialogue, shot.bgm, shot.sfx) == (None, None, None)
    assert (shot.start_frame, shot.end_frame, shot.character_refs) == (None, None, ())


def test_filled_example_blockquote_layout(tmp_path: Path) -> None:
    shot = only_shot(read_storyboard(make_project(tmp_path, {"shot-02.md": FILLED})))
    assert (shot.id, shot.number, shot.shot_code) == ("shot-02", 2, "1.3")
    assert (shot.scene, shot.camera, shot.variation) == ("kitchen-morning", "cam_2 (CU, eye-level)", "small")
    assert shot.emotion == "↑↑ (tension rising)"
    assert shot.duration_s == 5.0
    assert shot.aspect_ratio == "16:9"
    assert shot.camera_fixed is True  # "static (unfixed camera = NO)"
    assert shot.input_frames == "first-frame only (small variation)"
    assert shot.characters == ("Elena",)
    assert shot.dialogue == '[Elena, barely audible]: "It was all a lie."'
    assert shot.bgm == "(continue — tense strings from previous shot)"
    assert shot.sfx == "Paper rustling, sharp exhale"
    seedance = shot.prompts["seedance"].splitlines()
    assert seedance[:3] == ["【整体描述】", "电影写实风格，5秒，16:9横屏，紧张压抑的室内氛围", ""]
    assert "0-2秒：近景固定机位，灰色西装外套女人的手紧握一封皱巴巴的信，指关节发白" in seedance
    assert not any(line.startswith(">") for line in seedance)
    assert shot.prompts["kling"] == (
        "[Camera: static, close-up, eye-level]\n"
        "The woman's hand slowly unclenches, crumpled letter slipping from trembling fingers.\n"
        "Warm side lighting. Shallow depth of field.\n"
        '[Elena, barely audible]: "It was all a lie."\n'
        "(Duration: 5s)"
    )
    assert shot.prompts["motion"] == (
        "Static camera. The woman's hand (gray blazer sleeve visible) slowly unclenches,\n"
        "fingers trembling. The crumpled letter begins to slip from her loosening grip.\n"
        "Her jaw tightens subtly."
    )
    # "Negative guidance" belongs to the image section, not to the video model.
    assert shot.negative_prompt is None


def test_template_and_example_side_by_side_in_number_order(tmp_path: Path) -> None:
    board = read_storyboard(make_project(tmp_path, {"shot-02.md": FILLED, "shot-01.md": TEMPLATE}))
    assert [s.id for s in board.shots] == ["shot-01", "shot-02"]
    assert [s.shot_code for s in board.shots] == [None, "1.3"]


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fixed", True),
        ("static", True),
        ("static (unfixed camera = NO)", True),
        ("unfixed", False),
        ("unfixed (tilt up)", False),
        ("moving", False),
        ("slow push in", False),
        ("{fixed / unfixed}", None),
        ("", None),
        (None, None),
        ("whatever", None),
    ],
)
def test_parse_camera_fixed(text: str | None, expected: bool | None) -> None:
    assert parse_camera_fixed(text) is expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("5 s", 5.0),
        ("5.5 seconds", 5.5),
        ("7秒", 7.0),
        ("4", 4.0),
        (6, 6.0),
        ("{N}s", None),
        (None, None),
    ],
)
def test_parse_duration(text: str | int | None, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["five", "0s", "-3s", "s5", True])
def test_parse_duration_rejects(text: str | bool) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


def test_parse_aspect_ratio() -> None:
    assert parse_aspect_ratio("16:9 widescreen") == "16:9"
    assert parse_aspect_ratio("9 : 16") == "9:16"
    assert parse_aspect_ratio("{ratio}") is None
    with pytest.raises(ValueError, match="bad aspect ratio"):
        parse_aspect_ratio("widescreen")


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
    assert refs == [["elena-front.png", "marco-front.png"]] * 2 + [["elena-front.png"], ["marco-front.png"]]
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
        "marco-front.png",
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


def test_upstream_frame_plan_example(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"shot-03.md": FILLED})
    shutil.copy(FRAME_PLAN_EXAMPLE, tmp_path / SHOTS.parent / "frame-plan.md")
    board = read_storyboard(project)
    assert board.warnings == [
        "frame-plan.md names Shot 1.1, but no shot file has that Shot ID",
        "frame-plan.md names Shot 1.2, but no shot file has that Shot ID",
    ]


def test_no_frame_plan_no_warning(tmp_path: Path) -> None:
    assert read_storyboard(make_project(tmp_path, {"shot-01.md": GOOD})).warnings == []


def test_character_refs_match_name_prefix(tmp_path: Path) -> None:
    folder = tmp_path / "image" / "characters"
    folder.mkdir(parents=True)
    for name in (
        "elena-front.png",
        "Elena_side.JPG",
        "elenaxyz.png",
        "elena.txt",
        "marco.webp",
        "old-man.png",
    ):
        (folder / name).write_bytes(b"x")
    refs = find_character_refs(tmp_path, ["Elena", "Old Man"])
    assert [p.name for p in refs] == ["Elena_side.JPG", "elena-front.png", "old-man.png"]
    assert all(p.is_absolute() for p in refs)


def test_symlinked_frame_escaping_the_project(tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"png")
    project = make_project(tmp_path / "film", {"shot-01.md": GOOD})
    (project / "image" / "frames").mkdir(parents=True)
    (project / "image" / "frames" / "shot-01-ff.png").symlink_to(outside)
    with pytest.raises(StoryboardError, match="resolves outside the project directory") as exc:
        read_storyboard(project)
    assert exc.value.file == "image/frames/shot-01-ff.png"


# --------------------------------------------------------------------------- ids and selection


@pytest.mark.parametrize("shot_id", ["shot-01", "clip-01", "A", "intro_2.take-3", "x" * 64])
def test_check_shot_id_accepts(shot_id: str) -> None:
    assert check_shot_id(shot_id, "manifest") == shot_id


@pytest.mark.parametrize("shot_id", ["../../etc/x", "a..b", "", ".hidden", "-x", "a/b", "a b", "x" * 65, "ü"])
def test_check_shot_id_rejects(shot_id: str) -> None:
    with pytest.raises(StoryboardError, match="invalid shot id") as exc:
        check_shot_id(shot_id, "manifest")
    assert exc.value.file == "manifest"


def test_select_shots() -> None:
    board = read_storyboard(EXAMPLE)
    assert [s.id for s in select_shots(board, [3, "shot-01"]).shots] == ["shot-01", "shot-03"]
    assert [s.id for s in select_shots(board, ["02", "2", "shot-2"]).shots] == ["shot-02"]
    assert [s.id for s in select_shots(board, "4").shots] == ["shot-04"]
    assert select_shots(board, None) is board
    with pytest.raises(
        StoryboardError, match=r"no such shot: 9 \(have: shot-01, shot-02, shot-03, shot-04\)"
    ):
        select_shots(board, [1, 9])


def test_select_shots_keeps_only_the_selected_problems(tmp_path: Path) -> None:
    board = read_storyboard(make_project(tmp_path, {"shot-01.md": GOOD, "shot-02.md": "nothing here"}))
    assert [p.shot for p in select_shots(board, ["shot-02"]).problems] == ["shot-02"]
    chosen = select_shots(board, [1])
    assert ([s.id for s in chosen.shots], chosen.problems) == (["shot-01"], [])
