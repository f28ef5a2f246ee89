"""A shot to render, and the parsing of its values that every shot reader shares.

`storyboard.py` reads shots from an AIVP project's markdown files, `manifest.py` from a YAML shot
list or a single prompt. Both return a `Storyboard` (the `Shot`s and the `ShotProblem`s of the
shots that can't be rendered), and both check a shot's id, duration, aspect ratio, project paths
and character portraits with the functions here. `select_shots` narrows either one's result to the
shots a run asked for.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aivp_batch.errors import StoryboardError

CHARACTERS_DIR = Path("image/characters")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
PROMPT_KEYS = ("seedance", "kling", "motion")

_SHOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


@dataclass(frozen=True)
class Shot:
    """One shot to render. Every path is absolute and resolved inside the project directory."""

    id: str
    number: int
    source: Path | None = None
    shot_code: str | None = None
    scene: str | None = None
    camera: str | None = None
    variation: str | None = None
    emotion: str | None = None
    duration_s: float | None = None
    aspect_ratio: str | None = None
    camera_fixed: bool | None = None
    prompts: dict[str, str] = field(default_factory=dict)
    characters: tuple[str, ...] = ()
    dialogue: str | None = None
    bgm: str | None = None
    sfx: str | None = None
    start_frame: Path | None = None
    end_frame: Path | None = None
    character_refs: tuple[Path, ...] = ()
    negative_prompt: str | None = None
    input_frames: str | None = None
    group: str | None = None  # strategy=multishot: shots sharing a label render in one call


@dataclass(frozen=True)
class ShotProblem:
    """A shot that can't be rendered. `file` is relative to the project dir (or `manifest`)."""

    file: str
    message: str
    shot: str | None = None  # the shot id when known, so `select_shots` can keep or drop it


@dataclass
class Storyboard:
    """The shots of a run, from whichever reader: what renders, what can't, and what to say."""

    shots: list[Shot] = field(default_factory=list)
    problems: list[ShotProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Shot ID (metadata "Shot ID") of each problem's shot, where its file gave one: `shots=[1.2]`
    # must select (and report) a shot that cannot be rendered as well as one that can.
    problem_codes: dict[str, str] = field(default_factory=dict)


class UnusableShot(ValueError):
    """A shot that is well formed but can't be rendered (a bad duration, a keyframe that is a
    folder, no prompt); its reader records it as a `ShotProblem` and reads the other shots."""


# --------------------------------------------------------------------------- values


def check_shot_id(shot_id: str, file: str) -> str:
    """Reject ids that are not safe file stems: clips and logs are written as `<id>.mp4` / `<id>.json`."""
    if not isinstance(shot_id, str) or not _SHOT_ID.match(shot_id) or ".." in shot_id:
        raise StoryboardError(
            file, f"invalid shot id {shot_id!r} (use letters, digits, '.', '_', '-'; no '..'; at most 64)"
        )
    return shot_id


def field_value(text: str | None) -> str | None:
    """A field value, or None for empty, `(none)` and template placeholders like `{N}s`."""
    if text is None:
        return None
    value = text.strip()
    if not value or value.lower() in ("(none)", "none", "-", "n/a") or _PLACEHOLDER.search(value):
        return None
    return value


def parse_duration(text: str | float | None) -> float | None:
    """`5s`, `5 sec`, `5.5 seconds`, `5秒`, `5` → seconds. A `{N}s` placeholder → None. Else
    `UnusableShot` (a ValueError)."""
    if isinstance(text, bool) or not isinstance(text, int | float | str | None):
        raise UnusableShot(f"bad duration {text!r} (expected seconds, e.g. 5s)")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        value = field_value(text)
        if value is None:
            return None
        match = re.match(r"^(\d+(?:\.\d+)?)\s*(?:s|secs?|seconds?|秒)?(?=$|[\s(,;~])", value, re.IGNORECASE)
        seconds = float(match.group(1)) if match else 0.0
    if not math.isfinite(seconds) or seconds <= 0:
        raise UnusableShot(f"bad duration {text!r} (expected seconds, e.g. 5s)")
    return seconds


def parse_aspect_ratio(text: str | int | None) -> str | None:
    """`16:9`, `16:9 widescreen`, `9 : 16` → `16:9` / `9:16`. A placeholder → None. Else
    `UnusableShot` (a ValueError)."""
    if isinstance(text, int) and not isinstance(text, bool) and text >= 60:
        # YAML 1.1 reads an unquoted 16:9 as the sexagesimal int 969; undo that rather than fail.
        text = "{}:{}".format(*divmod(text, 60))
    if text is not None and not isinstance(text, str):
        raise UnusableShot(f'bad aspect ratio {text!r} (expected W:H, e.g. "16:9")')
    value = field_value(text)
    if value is None:
        return None
    match = re.search(r"(\d+(?:\.\d+)?)\s*[:：]\s*(\d+(?:\.\d+)?)", value)
    if not match:
        raise UnusableShot(f"bad aspect ratio {text!r} (expected W:H, e.g. 16:9)")
    return f"{match.group(1)}:{match.group(2)}"


def parse_camera_fixed(text: str | None) -> bool | None:
    """`fixed`/`static` → True; `unfixed`/a camera move → False; the example's
    `static (unfixed camera = NO)` → True; unknown or placeholder → None. (A shot list's
    `camera_fixed` is a YAML bool, checked by `manifest.py`.)"""
    value = (field_value(text) or "").lower()
    if not value:
        return None
    if answer := re.search(r"unfixed camera\s*[=:]\s*(yes|no|true|false)", value):
        return answer.group(1) in ("no", "false")
    if re.match(r"(unfixed|not fixed|non-fixed|free|moving|handheld|dynamic)", value):
        return False
    if re.match(r"(fixed|static|locked|tripod)", value):
        return True
    if re.search(r"\b(push|pull|pan|tilt|dolly|zoom|orbit|track|crane|truck)", value):
        return False
    return None


def resolve_in_project(project_dir: Path, path: Path | str, file: str) -> Path:
    """Resolve `path` (relative to the project or absolute); one that escapes the project is an error."""
    project = Path(project_dir).resolve()
    resolved = (project / path).resolve()
    if not resolved.is_relative_to(project):
        raise StoryboardError(file, f"{Path(path).as_posix()} resolves outside the project directory")
    return resolved


# --------------------------------------------------------------------------- character portraits


def find_character_refs(project_dir: Path, names: Iterable[str]) -> tuple[Path, ...]:
    """Portraits in `image/characters/` whose file stem starts with a character's name (`elena-front.png`)."""
    project = Path(project_dir).resolve()
    folder = project / CHARACTERS_DIR
    if not folder.is_dir():
        return ()
    keys = [_name_key(n) for n in names if _name_key(n)]
    refs: list[Path] = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and any(_stem_matches(path.stem, k) for k in keys):
            resolved = resolve_in_project(project, path, (CHARACTERS_DIR / path.name).as_posix())
            if resolved.is_file():
                refs.append(resolved)
    return tuple(refs)


def portrait_owner(path: Path, names: Iterable[str]) -> str | None:
    """The character a portrait belongs to, by the same file-stem rule as `find_character_refs`:
    the longest name its stem starts with (`harbour-master-side.png` → "Harbour Master")."""
    matches = [n for n in names if _name_key(n) and _stem_matches(Path(path).stem, _name_key(n))]
    return max(matches, key=lambda n: len(_name_key(n)), default=None)


def portrait_angle(path: Path, name: str | None) -> str:
    """What follows the character's name in a portrait's stem: `elena-front` → "front", "" if nothing."""
    stem = _name_key(Path(path).stem)
    key = _name_key(name or "")
    rest = stem[len(key) :] if key and stem.startswith(key) else stem.rpartition("-")[2]
    return rest.strip("-_. ")


def _name_key(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lstrip("@").lower())


def _stem_matches(stem: str, key: str) -> bool:
    # `ana` must not pick up `anastasia.png`: the name has to end at a separator.
    stem = _name_key(stem)
    return stem == key or (stem.startswith(key) and stem[len(key)] in "-_. ")


# --------------------------------------------------------------------------- selection


def select_shots(
    storyboard: Storyboard, selection: Iterable[int | float | str] | int | float | str | None
) -> Storyboard:
    """Keep the shots named by `selection`: `1`, `"1"`, `"01"`, `"shot-01"`, any shot id, or the
    storyboard's own Shot ID (`"1.2"`, or `1.2` as Hydra reads `shots=[1.2]`)."""
    if selection is None:
        return storyboard
    if isinstance(selection, int | float | str):
        selection = [selection]
    known = [_Known(s.id, s.number, s.shot_code) for s in storyboard.shots]
    codes = storyboard.problem_codes
    known += [_Known(p.shot, _number_of(p.shot), codes.get(p.shot)) for p in storyboard.problems if p.shot]
    wanted: set[str] = set()
    for item in selection:
        wanted |= _match_selection(item, known)
    return Storyboard(
        shots=[s for s in storyboard.shots if s.id in wanted],
        problems=[p for p in storyboard.problems if p.shot is None or p.shot in wanted],
        warnings=list(storyboard.warnings),
        problem_codes={k: v for k, v in storyboard.problem_codes.items() if k in wanted},
    )


def _number_of(shot_id: str | None) -> int | None:
    match = re.fullmatch(r"(?:shot-)?(\d+)", shot_id or "")
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class _Known:
    id: str
    number: int | None
    code: str | None  # the metadata table's Shot ID


def _match_selection(item: int | float | str, known: list[_Known]) -> set[str]:
    """An id, else a shot number (`2`, `02`, `shot-02`), else a Shot ID (`1.2`)."""
    token = str(item).strip()
    ids = {k.id for k in known if k.id == token}
    if not ids and not isinstance(item, float) and (number := _number_of(token)) is not None:
        ids = {k.id for k in known if k.number == number}
    if not ids:
        codes = {k.code for k in known if k.code and _same_code(k.code, item)}
        if len(codes) > 1:  # `shots=[1.10]` reaches us as the float 1.1
            either = " or ".join(sorted(codes))
            raise StoryboardError(
                "shots", f"{token} could be Shot ID {either}; quote it: shots=['{max(codes)}']"
            )
        ids = {k.id for k in known if k.code in codes}
    if not ids:
        have = ", ".join(sorted({k.id for k in known})) or "none"
        codes = ", ".join(sorted({k.code for k in known if k.code}))
        by_code = f", or by Shot ID: {codes}" if codes else ""
        raise StoryboardError("shots", f"no such shot: {token} (have: {have}){by_code}")
    return ids


def _same_code(code: str, item: int | float | str) -> bool:
    if code == str(item).strip():
        return True
    if isinstance(item, float):
        try:
            return float(code) == item
        except ValueError:
            return False
    return False
