"""Reading an AIVP project's storyboard: `storyboard/storyboard-final/shots/shot-NN.md` → `Shot`s.

The upstream aivp-storyboard skill writes shot specs by hand (or by an LLM) in several layouts: the
template's fenced `### Seedance 2.0` / `### Kling 3.0` sections, the filled example's blockquoted
`**Motion prompt** (… format):` labels, older Kling-first files. So sections are found by their
heading or label *text*, never by position, and one bad file becomes a `ShotProblem` instead of
stopping the whole storyboard.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aivp_batch.errors import StoryboardError

SHOTS_DIR = Path("storyboard/storyboard-final/shots")
FRAME_PLAN = Path("storyboard/storyboard-final/frame-plan.md")
FRAMES_DIR = Path("image/frames")
CHARACTERS_DIR = Path("image/characters")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
PROMPT_KEYS = ("seedance", "kling", "motion")
NO_MOTION_PROMPT = "no motion prompt (expected a Seedance 2.0, Kling 3.0 or Motion section)"

_SHOT_FILE = re.compile(r"^shot-(\d+)\.md$")
_SHOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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
    shots: list[Shot] = field(default_factory=list)
    problems: list[ShotProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Shot ID (metadata "Shot ID") of each problem's shot, where its file gave one: `shots=[1.2]`
    # must select (and report) a shot that cannot be rendered as well as one that can.
    problem_codes: dict[str, str] = field(default_factory=dict)


class _Unusable(Exception):
    """A shot file that can't be turned into a Shot; becomes a ShotProblem."""


# --------------------------------------------------------------------------- public API


def read_storyboard(project_dir: Path) -> Storyboard:
    """Read every `shot-NN.md` of an AIVP project, in NN order, and cross-check `frame-plan.md`."""
    project = Path(project_dir).resolve()
    files = _shot_files(project)
    if not files:
        raise StoryboardError(str(project_dir), f"no {SHOTS_DIR.as_posix()}/shot-NN.md files found")
    board = Storyboard()
    seen: dict[int, tuple[str, str | None]] = {}  # number → (id, Shot ID code), for frame-plan.md
    for number, path in files:
        rel = _rel(project, path)
        if number in seen:
            board.problems.append(ShotProblem(rel, f"duplicate shot number {number}", path.stem))
            continue
        spec = _read_spec(path, rel, board)
        seen[number] = (path.stem, _value(spec.table.get("shot id")) if spec else None)
        if spec is None:
            continue
        try:
            board.shots.append(_build_shot(project, path, number, spec))
        except _Unusable as exc:
            board.problems.append(ShotProblem(rel, str(exc), path.stem))
            if code := seen[number][1]:
                board.problem_codes[path.stem] = code
        else:
            if conflict := _duration_conflict(spec):
                board.warnings.append(f"{rel}: {conflict}")
    board.warnings.extend(_ignored_files(project))
    board.warnings.extend(_frame_plan_warnings(project, seen))
    return board


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


def check_shot_id(shot_id: str, file: str) -> str:
    """Reject ids that are not safe file stems: clips and logs are written as `<id>.mp4` / `<id>.json`."""
    if not isinstance(shot_id, str) or not _SHOT_ID.match(shot_id) or ".." in shot_id:
        raise StoryboardError(
            file, f"invalid shot id {shot_id!r} (use letters, digits, '.', '_', '-'; no '..'; at most 64)"
        )
    return shot_id


def parse_duration(text: str | float | None) -> float | None:
    """`5s`, `5 sec`, `5.5 seconds`, `5秒`, `5` → seconds. A `{N}s` placeholder → None. Else ValueError."""
    if isinstance(text, bool):
        raise ValueError(f"bad duration {text!r} (expected seconds, e.g. 5s)")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        value = _value(text)
        if value is None:
            return None
        match = re.match(r"^(\d+(?:\.\d+)?)\s*(?:s|secs?|seconds?|秒)?(?=$|[\s(,;~])", value, re.IGNORECASE)
        seconds = float(match.group(1)) if match else 0.0
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"bad duration {text!r} (expected seconds, e.g. 5s)")
    return seconds


def parse_aspect_ratio(text: str | None) -> str | None:
    """`16:9`, `16:9 widescreen`, `9 : 16` → `16:9` / `9:16`. A placeholder → None. Else ValueError."""
    value = _value(text)
    if value is None:
        return None
    match = re.search(r"(\d+(?:\.\d+)?)\s*[:：]\s*(\d+(?:\.\d+)?)", value)
    if not match:
        raise ValueError(f"bad aspect ratio {text!r} (expected W:H, e.g. 16:9)")
    return f"{match.group(1)}:{match.group(2)}"


def resolve_in_project(project_dir: Path, path: Path | str, file: str) -> Path:
    """Resolve `path` (relative to the project or absolute); one that escapes the project is an error."""
    project = Path(project_dir).resolve()
    resolved = (project / path).resolve()
    if not resolved.is_relative_to(project):
        raise StoryboardError(file, f"{Path(path).as_posix()} resolves outside the project directory")
    return resolved


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
            resolved = resolve_in_project(project, path, _rel(project, path))
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


# --------------------------------------------------------------------------- files


def _shot_files(project: Path) -> list[tuple[int, Path]]:
    folder = project / SHOTS_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _SHOT_FILE.match(p.name))]
    return sorted(found, key=lambda item: (item[0], item[1].name))


def _ignored_files(project: Path) -> list[str]:
    # A `shot-1.3.md` or `Shot-01.md` is silently skipped by the glob otherwise; say so.
    folder = project / SHOTS_DIR
    return [
        f"ignored {_rel(project, p)} (not named shot-NN.md)"
        for p in sorted(folder.glob("*.md"))
        if not _SHOT_FILE.match(p.name)
    ]


def _read_spec(path: Path, rel: str, board: Storyboard) -> _Spec | None:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        board.problems.append(ShotProblem(rel, "not UTF-8 text", path.stem))
        return None
    except OSError as exc:
        board.problems.append(ShotProblem(rel, f"unreadable: {exc.strerror or exc}", path.stem))
        return None
    return _parse_spec(text)


def _rel(project: Path, path: Path) -> str:
    try:
        return path.relative_to(project).as_posix()
    except ValueError:
        return path.as_posix()


# --------------------------------------------------------------------------- markdown


@dataclass
class _Block:
    kind: str  # heading | fence | quote | row | line
    text: str
    level: int = 0
    cells: tuple[str, ...] = ()


@dataclass
class _Spec:
    table: dict[str, str] = field(default_factory=dict)  # metadata + audio rows, key lowercased
    characters: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # `**Duration**: 5s`, `- Camera: static`
    prompts: dict[str, str] = field(default_factory=dict)  # seedance/kling/motion/motion_decomp/negative


_FENCE = re.compile(r"^(`{3,}|~{3,})")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BOLD_LABEL = re.compile(
    r"^(?:[-*+]\s+)?\*\*(?P<name>[^*]+?)(?P<c1>:)?\*\*\s*(?P<qual>\([^)]*\))?\s*(?P<c2>[:：])?\s*(?P<value>.*)$"
)
_BULLET_LABEL = re.compile(r"^[-*+]\s+(?P<name>[A-Za-z][A-Za-z0-9 /_-]{0,40}?)\s*:\s*(?P<value>.*)$")
_PLAIN_LABEL = re.compile(  # older files write `Duration: 5s` without bold or bullet
    r"^(?P<name>duration|aspect ratio|camera mode|input frames|negative prompt)\s*[:：]\s*(?P<value>.*)$",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def _blocks(text: str) -> Iterator[_Block]:
    """Split markdown into headings, fenced blocks, blockquotes, table rows and plain lines."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if fence := _FENCE.match(stripped):
            body, i = _take_fence(lines, i + 1, fence.group(1))
            yield _Block("fence", body)
            continue
        if stripped.startswith(">"):
            body, i = _take_quote(lines, i)
            yield _Block("quote", body)
            continue
        if heading := _HEADING.match(stripped):
            yield _Block("heading", heading.group(2), level=len(heading.group(1)))
        elif stripped.startswith("|"):
            yield _Block("row", stripped, cells=tuple(c.strip() for c in stripped.strip("|").split("|")))
        else:
            yield _Block("line", stripped)
        i += 1


def _take_fence(lines: list[str], start: int, marker: str) -> tuple[str, int]:
    end = start
    while end < len(lines) and not lines[end].strip().startswith(marker):
        end += 1
    body = textwrap.dedent("\n".join(line.rstrip() for line in lines[start:end]))
    return body.strip("\n"), end + 1


def _take_quote(lines: list[str], start: int) -> tuple[str, int]:
    end = start
    while end < len(lines) and lines[end].strip().startswith(">"):
        end += 1
    body = [re.sub(r"^\s*>\s?", "", line).rstrip() for line in lines[start:end]]
    return "\n".join(body).strip("\n"), end


def _parse_spec(text: str) -> _Spec:
    spec = _Spec()
    pending: str | None = None  # the prompt key whose fenced/quoted block comes next
    in_image = False  # `## For aivp-image` has its own `**Prompt**` labels: not video prompts
    header: tuple[str, ...] | None = None  # header row of the table being read
    for block in _blocks(text):
        if block.kind != "row":
            header = None
        if block.kind == "heading":
            in_image = _is_image_section(block) if block.level <= 2 else in_image
            pending = None if in_image else _heading_key(block.text)
        elif block.kind == "line":
            pending = _read_label(spec, block.text, pending, in_image)
        elif block.kind in ("fence", "quote"):
            if pending and block.text.strip() and not _is_placeholder(block.text):
                spec.prompts.setdefault(pending, block.text.strip())
            pending = None
        elif header is None:
            header = block.cells
        else:
            _read_row(spec, header, block.cells)
    return spec


def _is_image_section(block: _Block) -> bool:
    text = block.text.lower()
    return "image" in text and "video" not in text


def _heading_key(heading: str) -> str | None:
    text = heading.lower()
    if "negative" in text:
        return "negative" if "prompt" in text else None
    if "seedance" in text:
        return "seedance"
    if "kling" in text:
        return "kling"
    if text.startswith("motion"):
        # `### Motion` is the Shot Decomposition; `### Motion prompt` is written for the video model.
        return "motion" if "prompt" in text else "motion_decomp"
    return None


def _label_key(name: str, qualifier: str) -> str | None:
    if "prompt" not in name and name != "motion":
        return None
    if "negative" in name:
        return "negative"
    text = f"{name} {qualifier}"
    if "seedance" in text:
        return "seedance"
    if "kling" in text:
        return "kling"
    return "motion" if "motion" in name or "video" in name else None


def _read_label(spec: _Spec, line: str, pending: str | None, in_image: bool) -> str | None:
    """Record a `**Label**: value` / `- Label: value` line; return the prompt key still pending."""
    match = _BOLD_LABEL.match(line)
    if match and not (match.group("c1") or match.group("c2")):
        match = None  # bold emphasis, not a label
    match = match or _BULLET_LABEL.match(line) or _PLAIN_LABEL.match(line)
    if not match:
        return pending
    if in_image:
        return None
    name = match.group("name").strip().rstrip(":").strip().lower()
    qualifier = (match.groupdict().get("qual") or "").lower()
    value = match.group("value").strip()
    key = _label_key(name, qualifier)
    if key and value:
        spec.prompts.setdefault(key, value)  # an inline prompt on the label's own line
        return None
    if key:
        return key
    if value:
        spec.labels.setdefault(name, value)
    return None


def _read_row(spec: _Spec, header: tuple[str, ...], cells: tuple[str, ...]) -> None:
    if all(re.fullmatch(r":?-+:?", c) for c in cells if c):
        return  # the |---|---| separator
    if header and header[0].lower().startswith("character"):
        name = cells[0].lstrip("@").split("(")[0].strip() if cells else ""
        if name and not _is_placeholder(name) and name not in spec.characters:
            spec.characters.append(name)
    elif len(cells) >= 2 and cells[0]:
        spec.table.setdefault(cells[0].lower(), cells[1])


def _is_placeholder(text: str) -> bool:
    return bool(re.fullmatch(r"\s*\{[^{}]*\}\s*", text))


def _value(text: str | None) -> str | None:
    """A field value, or None for empty, `(none)` and template placeholders like `{N}s`."""
    if text is None:
        return None
    value = text.strip()
    if not value or value.lower() in ("(none)", "none", "-", "n/a") or _PLACEHOLDER.search(value):
        return None
    return value


# --------------------------------------------------------------------------- Shot


def _build_shot(project: Path, path: Path, number: int, spec: _Spec) -> Shot:
    prompts = {k: spec.prompts[k] for k in PROMPT_KEYS if k in spec.prompts}
    if "motion" not in prompts and "motion_decomp" in spec.prompts:
        prompts["motion"] = spec.prompts["motion_decomp"]
    if not prompts:
        raise _Unusable(NO_MOTION_PROMPT)
    shot_id = check_shot_id(path.stem, _rel(project, path))
    return Shot(
        id=shot_id,
        number=number,
        source=resolve_in_project(project, path, _rel(project, path)),
        shot_code=_value(spec.table.get("shot id")),
        scene=_value(spec.table.get("scene")),
        camera=_value(spec.table.get("camera")),
        variation=_value(spec.table.get("variation")),
        emotion=_value(spec.table.get("emotion")),
        duration_s=_spec_duration(spec),
        aspect_ratio=_spec_aspect(spec),
        camera_fixed=parse_camera_fixed(spec.labels.get("camera mode") or spec.labels.get("camera")),
        prompts=prompts,
        characters=tuple(spec.characters),
        dialogue=_value(spec.table.get("dialogue")),
        bgm=_value(spec.table.get("bgm")),
        sfx=_value(spec.table.get("sfx")),
        start_frame=_frame(project, f"{shot_id}-ff.png"),
        end_frame=_frame(project, f"{shot_id}-lf.png"),
        character_refs=find_character_refs(project, spec.characters),
        negative_prompt=_value(spec.labels.get("negative prompt") or spec.prompts.get("negative")),
        input_frames=_value(spec.labels.get("input frames")),
        group=_value(spec.table.get("group")),
    )


def _spec_duration(spec: _Spec) -> float | None:
    # "For aivp-video" Duration / Parameters beat the metadata table: they are what the clip needs.
    for text in (spec.labels.get("duration"), spec.table.get("duration")):
        try:
            if (seconds := parse_duration(text)) is not None:
                return seconds
        except ValueError as exc:
            raise _Unusable(str(exc)) from None
    return None


def _duration_conflict(spec: _Spec) -> str | None:
    """Where the Duration line and the metadata table both give a length and differ: which one is
    rendered (and paid for) must not go unsaid."""
    try:
        line, table = parse_duration(spec.labels.get("duration")), parse_duration(spec.table.get("duration"))
    except ValueError:
        return None  # _spec_duration has made it a problem
    if line is None or table is None or line == table:
        return None
    return (
        f"its Duration line says {_seconds(line)} but its metadata table says {_seconds(table)}; "
        f"rendering {_seconds(line)} (make them agree)"
    )


def _seconds(value: float) -> str:
    return f"{int(value)}s" if value.is_integer() else f"{value}s"


def _spec_aspect(spec: _Spec) -> str | None:
    try:
        return parse_aspect_ratio(spec.labels.get("aspect ratio") or spec.table.get("aspect ratio"))
    except ValueError as exc:
        raise _Unusable(str(exc)) from None


def parse_camera_fixed(text: str | None) -> bool | None:
    """`fixed`/`static` → True; `unfixed`/a camera move → False; the example's
    `static (unfixed camera = NO)` → True; unknown or placeholder → None."""
    value = (_value(text) or "").lower()
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


def _frame(project: Path, name: str) -> Path | None:
    path = project / FRAMES_DIR / name
    if path.is_dir():  # not "no keyframe": that would silently render the shot as T2V
        raise _Unusable(f"{(FRAMES_DIR / name).as_posix()} is a directory, not an image file")
    if not path.is_file():
        return None
    return resolve_in_project(project, FRAMES_DIR / name, (FRAMES_DIR / name).as_posix())


def _name_key(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lstrip("@").lower())


def _stem_matches(stem: str, key: str) -> bool:
    # `ana` must not pick up `anastasia.png`: the name has to end at a separator.
    stem = _name_key(stem)
    return stem == key or (stem.startswith(key) and stem[len(key)] in "-_. ")


# --------------------------------------------------------------------------- selection & frame plan


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


def _frame_plan_warnings(project: Path, seen: dict[int, tuple[str, str | None]]) -> list[str]:
    """frame-plan.md is a human document: compare it with the shot files, don't take order from it."""
    path = project / FRAME_PLAN
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return [f"{FRAME_PLAN.as_posix()} is unreadable; not cross-checked"]
    named_codes = list(dict.fromkeys(re.findall(r"\bShot\s+(\d+(?:\.\d+)+)", text, re.IGNORECASE)))
    named_numbers = list(dict.fromkeys(int(n) for n in re.findall(r"\bshot-(\d+)\b", text, re.IGNORECASE)))
    codes = {code for _, code in seen.values() if code}
    warnings = [
        f"frame-plan.md names Shot {code}, but no shot file has that Shot ID"
        for code in named_codes
        if code not in codes
    ]
    warnings += [
        f"frame-plan.md names shot-{n:02d}, but there is no {SHOTS_DIR.as_posix()}/shot-{n:02d}.md"
        for n in named_numbers
        if n not in seen
    ]
    warnings += [
        f"{shot_id} is not mentioned in frame-plan.md"
        for n, (shot_id, code) in seen.items()
        if n not in named_numbers and code not in named_codes
    ]
    return warnings
