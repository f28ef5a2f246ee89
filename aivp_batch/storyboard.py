"""Reading an AIVP project's storyboard: `storyboard/storyboard-final/shots/shot-NN.md` → `Shot`s.

The upstream aivp-storyboard skill writes shot specs by hand (or by an LLM) in several layouts: the
template's fenced `### Seedance 2.0` / `### Kling 3.0` sections, the filled example's blockquoted
`**Motion prompt** (… format):` labels, older Kling-first files. So sections are found by their
heading or label *text*, never by position, and one bad file becomes a `ShotProblem` instead of
stopping the whole storyboard.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aivp_batch.errors import StoryboardError
from aivp_batch.shots import (
    PROMPT_KEYS,
    Shot,
    ShotProblem,
    Storyboard,
    UnusableShot,
    check_shot_id,
    field_value,
    find_character_refs,
    parse_aspect_ratio,
    parse_camera_fixed,
    parse_duration,
    resolve_in_project,
)

SHOTS_DIR = Path("storyboard/storyboard-final/shots")
FRAME_PLAN = Path("storyboard/storyboard-final/frame-plan.md")
FRAMES_DIR = Path("image/frames")
NO_MOTION_PROMPT = "no motion prompt (expected a Seedance 2.0, Kling 3.0 or Motion section)"

_SHOT_FILE = re.compile(r"^shot-(\d+)\.md$")


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
        seen[number] = (path.stem, field_value(spec.table.get("shot id")) if spec else None)
        if spec is None:
            continue
        try:
            board.shots.append(_build_shot(project, path, number, spec))
        except UnusableShot as exc:
            board.problems.append(ShotProblem(rel, str(exc), path.stem))
            if code := seen[number][1]:
                board.problem_codes[path.stem] = code
        else:
            if conflict := _duration_conflict(spec):
                board.warnings.append(f"{rel}: {conflict}")
    board.warnings.extend(_ignored_files(project))
    board.warnings.extend(_frame_plan_warnings(project, seen))
    return board


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


# --------------------------------------------------------------------------- Shot


def _build_shot(project: Path, path: Path, number: int, spec: _Spec) -> Shot:
    prompts = {k: spec.prompts[k] for k in PROMPT_KEYS if k in spec.prompts}
    if "motion" not in prompts and "motion_decomp" in spec.prompts:
        prompts["motion"] = spec.prompts["motion_decomp"]
    if not prompts:
        raise UnusableShot(NO_MOTION_PROMPT)
    shot_id = check_shot_id(path.stem, _rel(project, path))
    return Shot(
        id=shot_id,
        number=number,
        source=resolve_in_project(project, path, _rel(project, path)),
        shot_code=field_value(spec.table.get("shot id")),
        scene=field_value(spec.table.get("scene")),
        camera=field_value(spec.table.get("camera")),
        variation=field_value(spec.table.get("variation")),
        emotion=field_value(spec.table.get("emotion")),
        duration_s=_spec_duration(spec),
        aspect_ratio=parse_aspect_ratio(spec.labels.get("aspect ratio") or spec.table.get("aspect ratio")),
        camera_fixed=parse_camera_fixed(spec.labels.get("camera mode") or spec.labels.get("camera")),
        prompts=prompts,
        characters=tuple(spec.characters),
        dialogue=field_value(spec.table.get("dialogue")),
        bgm=field_value(spec.table.get("bgm")),
        sfx=field_value(spec.table.get("sfx")),
        start_frame=_frame(project, f"{shot_id}-ff.png"),
        end_frame=_frame(project, f"{shot_id}-lf.png"),
        character_refs=find_character_refs(project, spec.characters),
        negative_prompt=field_value(spec.labels.get("negative prompt") or spec.prompts.get("negative")),
        input_frames=field_value(spec.labels.get("input frames")),
        group=field_value(spec.table.get("group")),
    )


def _spec_duration(spec: _Spec) -> float | None:
    # "For aivp-video" Duration / Parameters beat the metadata table: they are what the clip needs.
    line = parse_duration(spec.labels.get("duration"))
    return line if line is not None else parse_duration(spec.table.get("duration"))


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


def _frame(project: Path, name: str) -> Path | None:
    path = project / FRAMES_DIR / name
    if path.is_dir():  # not "no keyframe": that would silently render the shot as T2V
        raise UnusableShot(f"{(FRAMES_DIR / name).as_posix()} is a directory, not an image file")
    if not path.is_file():
        return None
    return resolve_in_project(project, FRAMES_DIR / name, (FRAMES_DIR / name).as_posix())


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
