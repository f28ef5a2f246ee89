"""The values every shot reader parses the same way, and the selection of shots from either reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from aivp_batch.errors import StoryboardError
from aivp_batch.shots import (
    Shot,
    ShotProblem,
    Storyboard,
    UnusableShot,
    check_shot_id,
    find_character_refs,
    parse_aspect_ratio,
    parse_camera_fixed,
    parse_duration,
    portrait_angle,
    portrait_owner,
    select_shots,
)
from aivp_batch.storyboard import read_storyboard

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "short-film"


# --------------------------------------------------------------------------- values


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


@pytest.mark.parametrize("text", ["five", "0s", "-3s", "s5", True, [5]])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)  # type: ignore[arg-type]


def test_parse_aspect_ratio() -> None:
    assert parse_aspect_ratio("16:9 widescreen") == "16:9"
    assert parse_aspect_ratio("9 : 16") == "9:16"
    assert parse_aspect_ratio("{ratio}") is None
    with pytest.raises(ValueError, match="bad aspect ratio"):
        parse_aspect_ratio("widescreen")


def test_parse_aspect_ratio_from_yaml() -> None:
    # YAML 1.1 turns an unquoted 16:9 into 969 (base 60); it is read back as 16:9.
    assert parse_aspect_ratio(969) == "16:9"
    assert parse_aspect_ratio(None) is None
    for value in (1.5, True, 12):
        with pytest.raises(UnusableShot, match=r"expected W:H, e\.g\. \"16:9\""):
            parse_aspect_ratio(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("shot_id", ["shot-01", "clip-01", "A", "intro_2.take-3", "x" * 64])
def test_check_shot_id_accepts(shot_id: str) -> None:
    assert check_shot_id(shot_id, "manifest") == shot_id


@pytest.mark.parametrize("shot_id", ["../../etc/x", "a..b", "", ".hidden", "-x", "a/b", "a b", "x" * 65, "ü"])
def test_check_shot_id_rejects(shot_id: str) -> None:
    with pytest.raises(StoryboardError, match="invalid shot id") as exc:
        check_shot_id(shot_id, "manifest")
    assert exc.value.file == "manifest"


# --------------------------------------------------------------------------- character portraits


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


def test_portrait_owner_and_angle() -> None:
    names = ["Harbour", "Harbour Master", "Elena"]
    assert portrait_owner(Path("harbour-master-side.png"), names) == "Harbour Master"
    assert portrait_owner(Path("Elena_front.png"), names) == "Elena"
    assert portrait_owner(Path("elenaxyz.png"), names) is None
    assert portrait_angle(Path("harbour-master-side.png"), "Harbour Master") == "side"
    assert portrait_angle(Path("Elena_front.png"), "Elena") == "front"
    assert portrait_angle(Path("elena.png"), "Elena") == ""
    assert portrait_angle(Path("someone-back.png"), None) == "back"


# --------------------------------------------------------------------------- selection


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


def test_select_shots_keeps_only_the_selected_problems() -> None:
    problem = ShotProblem("storyboard/storyboard-final/shots/shot-02.md", "no motion prompt", "shot-02")
    board = Storyboard(shots=[Shot("shot-01", 1)], problems=[problem])
    assert [p.shot for p in select_shots(board, ["shot-02"]).problems] == ["shot-02"]
    chosen = select_shots(board, [1])
    assert ([s.id for s in chosen.shots], chosen.problems) == (["shot-01"], [])


def test_select_shots_by_the_storyboards_own_shot_id() -> None:
    board = read_storyboard(EXAMPLE)
    assert [s.shot_code for s in board.shots] == ["1.1", "1.2", "1.3", "1.4"]
    # `shots=[1.2]` reaches select_shots as the float 1.2; quoted, as the string "1.2".
    assert [s.id for s in select_shots(board, [1.2]).shots] == ["shot-02"]
    assert [s.id for s in select_shots(board, ["1.3", 1]).shots] == ["shot-01", "shot-03"]
    with pytest.raises(StoryboardError, match=r"no such shot: 1\.9 .*or by Shot ID: 1\.1, 1\.2, 1\.3, 1\.4"):
        select_shots(board, [1.9])


def test_a_shot_number_beats_a_shot_id_and_an_ambiguous_float_is_refused() -> None:
    codes = ("1.1", "1.10", "2")
    board = Storyboard(shots=[Shot(f"shot-0{n}", n, shot_code=c) for n, c in enumerate(codes, start=1)])
    assert [s.id for s in select_shots(board, [2]).shots] == ["shot-02"]  # shot number 2, not Shot ID 2
    assert [s.id for s in select_shots(board, ["1.10"]).shots] == ["shot-02"]
    assert [s.id for s in select_shots(board, ["1.1"]).shots] == ["shot-01"]
    with pytest.raises(
        StoryboardError, match=r"1\.1 could be Shot ID 1\.1 or 1\.10; quote it: shots=\['1\.10'\]"
    ):
        select_shots(board, [1.1])  # `shots=[1.10]`, as Hydra reads it


def test_a_problem_shot_is_selected_by_its_shot_id() -> None:
    problem = ShotProblem("storyboard/storyboard-final/shots/shot-02.md", "bad duration", "shot-02")
    board = Storyboard(
        shots=[Shot("shot-01", 1, shot_code="1.1")], problems=[problem], problem_codes={"shot-02": "1.2"}
    )
    chosen = select_shots(board, [1.2])
    assert (chosen.shots, chosen.problems, chosen.problem_codes) == ([], [problem], {"shot-02": "1.2"})
