"""Where shots come from: kind=storyboard, kind=list and kind=prompt."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from aivp_batch.errors import ConfigError, StoryboardError
from aivp_batch.manifest import load_shots
from aivp_batch.shots import ShotProblem

EXAMPLE = (Path(__file__).resolve().parents[1] / "examples" / "short-film").resolve()
FRAMES = EXAMPLE / "image" / "frames"
PORTRAITS = EXAMPLE / "image" / "characters"


def listed(*shots: dict) -> dict:
    return {"kind": "list", "shots": list(shots)}


# --------------------------------------------------------------------------- kind=storyboard


def test_storyboard_kind_reads_the_project() -> None:
    board = load_shots({"kind": "storyboard"}, EXAMPLE)
    assert [s.id for s in board.shots] == ["shot-01", "shot-02", "shot-03", "shot-04"]
    assert board.problems == []


def test_storyboard_kind_needs_project_dir() -> None:
    with pytest.raises(ConfigError, match="project_dir is required for manifest=storyboard"):
        load_shots({"kind": "storyboard"}, None)


def test_unknown_kind() -> None:
    with pytest.raises(ConfigError, match="manifest.kind must be storyboard, list or prompt"):
        load_shots({"kind": "csv"}, EXAMPLE)


# --------------------------------------------------------------------------- kind=list


def test_list_kind_all_fields() -> None:
    board = load_shots(
        listed(
            {
                "id": "opening",
                "prompts": {"seedance": "推镜头", "kling": "[Camera: push in]"},
                "start_frame": "image/frames/shot-02-ff.png",
                "end_frame": str(FRAMES / "shot-02-lf.png"),  # absolute, inside the project
                "characters": ["@Elena", "Marco"],
                "duration": "6s",
                "aspect_ratio": "9:16",
                "camera_fixed": False,
                "negative_prompt": "blurry",
                "scene": "kitchen-morning",
            },
            {"id": "second", "prompt": "  Static shot of the table.  ", "duration": 4},
        ),
        EXAMPLE,
    )
    assert board.problems == []
    first, second = board.shots
    assert (first.id, first.number, second.id, second.number) == ("opening", 1, "second", 2)
    assert first.prompts == {"seedance": "推镜头", "kling": "[Camera: push in]"}
    assert (first.start_frame, first.end_frame) == (FRAMES / "shot-02-ff.png", FRAMES / "shot-02-lf.png")
    assert first.characters == ("Elena", "Marco")
    views = ("elena-front.png", "elena-side.png", "marco-front.png", "marco-side.png")
    assert first.character_refs == tuple(PORTRAITS / name for name in views)
    assert (first.duration_s, first.aspect_ratio, first.camera_fixed) == (6.0, "9:16", False)
    assert (first.negative_prompt, first.scene, first.source) == ("blurry", "kitchen-morning", None)
    assert second.prompts == {"motion": "Static shot of the table."}
    assert (second.duration_s, second.start_frame, second.character_refs) == (4.0, None, ())


def test_list_kind_from_omegaconf() -> None:
    cfg = OmegaConf.create(
        "kind: list\n"
        "shots:\n"
        "  - id: shot-01\n"
        "    prompt: Pan left.\n"
        "    character_refs: [image/characters/marco-front.png]\n"
    )
    (shot,) = load_shots(cfg, EXAMPLE).shots
    assert shot.character_refs == (PORTRAITS / "marco-front.png",)
    assert shot.characters == ()


def test_list_unknown_key_names_manifest_and_key() -> None:
    with pytest.raises(StoryboardError, match="unknown key 'promt'") as exc:
        load_shots(listed({"id": "a", "promt": "typo"}), EXAMPLE)
    assert exc.value.file == "manifest"


def test_list_id_escaping_the_project_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(StoryboardError, match="invalid shot id '../../etc/passwd'") as exc:
        load_shots(listed({"id": "../../etc/passwd", "prompt": "x"}), tmp_path)
    assert exc.value.file == "manifest"


@pytest.mark.parametrize("entry", [{"prompt": "x"}, {"id": "", "prompt": "x"}, "shot-01"])
def test_list_entry_without_id(entry: object) -> None:
    with pytest.raises(StoryboardError, match=r"shots\[1\]"):
        load_shots(listed(entry), EXAMPLE)  # type: ignore[arg-type]


def test_list_duplicate_id() -> None:
    with pytest.raises(StoryboardError, match="duplicate shot id: a"):
        load_shots(listed({"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}), EXAMPLE)


def test_missing_keyframe_is_a_problem_not_t2v() -> None:
    board = load_shots(
        listed(
            {"id": "shot-01", "prompt": "x", "start_frame": "image/frames/x.png"},
            {"id": "shot-02", "prompt": "y", "start_frame": "image/frames/shot-01-ff.png"},
        ),
        EXAMPLE,
    )
    assert board.problems == [
        ShotProblem("manifest", "shot-01: start_frame not found: image/frames/x.png", "shot-01")
    ]
    assert [(s.id, s.start_frame) for s in board.shots] == [("shot-02", FRAMES / "shot-01-ff.png")]


def test_frame_path_escaping_the_project(tmp_path: Path) -> None:
    (tmp_path / "secret.png").write_bytes(b"x")
    project = tmp_path / "film"
    project.mkdir()
    for path in ("../secret.png", str(tmp_path / "secret.png")):
        with pytest.raises(StoryboardError, match="resolves outside the project directory") as exc:
            load_shots(listed({"id": "a", "prompt": "x", "start_frame": path}), project)
        assert exc.value.file == "manifest"


NO_PROMPT = "no prompt (give prompt: … or prompts: {seedance, kling, motion})"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, NO_PROMPT),
        ({"prompt": "   "}, NO_PROMPT),
        ({"prompt": "x", "duration": "soon"}, "bad duration 'soon' (expected seconds, e.g. 5s)"),
        ({"prompt": "x", "aspect_ratio": "wide"}, "bad aspect ratio 'wide' (expected W:H, e.g. 16:9)"),
        ({"prompt": "x", "camera_fixed": "yes"}, "camera_fixed must be true or false, not 'yes'"),
        (
            {"prompt": "x", "character_refs": ["image/characters/nobody.png"]},
            "character_refs not found: image/characters/nobody.png",
        ),
    ],
)
def test_list_shot_problems(extra: dict, message: str) -> None:
    board = load_shots(listed({"id": "a", **extra}, {"id": "b", "prompt": "fine"}), EXAMPLE)
    assert board.problems == [ShotProblem("manifest", f"a: {message}", "a")]
    assert [s.id for s in board.shots] == ["b"]


def test_list_prompt_structure_errors() -> None:
    with pytest.raises(StoryboardError, match="give prompt or prompts, not both"):
        load_shots(listed({"id": "a", "prompt": "x", "prompts": {"kling": "y"}}), EXAMPLE)
    with pytest.raises(StoryboardError, match="unknown prompt key 'veo'"):
        load_shots(listed({"id": "a", "prompts": {"veo": "y"}}), EXAMPLE)


@pytest.mark.parametrize("shots", [None, [], "shot-01"])
def test_list_needs_shots(shots: object) -> None:
    with pytest.raises(ConfigError, match="manifest=list needs shots="):
        load_shots({"kind": "list", "shots": shots}, EXAMPLE)


# --------------------------------------------------------------------------- kind=prompt


def test_prompt_kind_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "still.png").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    board = load_shots({"kind": "prompt", "prompt": " A cat on a roof. ", "image": "still.png"}, None)
    (shot,) = board.shots
    assert (shot.id, shot.number, shot.prompts) == ("clip-01", 1, {"motion": "A cat on a roof."})
    assert shot.start_frame == (tmp_path / "still.png").resolve()
    assert (shot.end_frame, shot.duration_s, shot.aspect_ratio) == (None, None, None)


def test_prompt_kind_with_project_and_options() -> None:
    manifest = {
        "kind": "prompt",
        "prompt": "Tilt up.",
        "id": "teaser",
        "image": "image/frames/shot-04-ff.png",
        "end_image": "image/frames/shot-02-lf.png",
        "duration": 7,
        "aspect_ratio": "16:9",
    }
    (shot,) = load_shots(manifest, EXAMPLE).shots
    assert (shot.id, shot.duration_s, shot.aspect_ratio) == ("teaser", 7.0, "16:9")
    assert (shot.start_frame, shot.end_frame) == (FRAMES / "shot-04-ff.png", FRAMES / "shot-02-lf.png")


def test_prompt_kind_unquoted_yaml_aspect_ratio() -> None:
    # YAML 1.1 turns an unquoted 16:9 into 969 (base 60); it is read back as 16:9.
    cfg = OmegaConf.create("kind: prompt\nprompt: x\naspect_ratio: 16:9\nimage: null\nduration: null\n")
    assert cfg.aspect_ratio == 969
    assert load_shots(cfg, None).shots[0].aspect_ratio == "16:9"


@pytest.mark.parametrize("prompt", [None, "", "   ", 5])
def test_prompt_kind_needs_prompt(prompt: object) -> None:
    with pytest.raises(ConfigError, match="manifest=prompt needs prompt=…"):
        load_shots({"kind": "prompt", "prompt": prompt}, None)


def test_prompt_kind_missing_image_and_bad_id(tmp_path: Path) -> None:
    board = load_shots({"kind": "prompt", "prompt": "x", "image": "nope.png"}, tmp_path)
    assert board.shots == []
    assert board.problems == [ShotProblem("manifest", "clip-01: image not found: nope.png", "clip-01")]
    with pytest.raises(StoryboardError, match="invalid shot id"):
        load_shots({"kind": "prompt", "prompt": "x", "id": "../x"}, tmp_path)
