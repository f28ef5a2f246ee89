"""Where shots come from: an AIVP storyboard, a declarative shot list, or one standalone prompt.

`manifest` is the `manifest` config group (`kind: storyboard | list | prompt`). Structural mistakes
(unknown keys, unsafe ids) are a `StoryboardError` naming `manifest`; a shot that is well formed but
can't be rendered (a named keyframe that doesn't exist, no prompt) is a `ShotProblem`, like a bad
shot file in a storyboard, so the other shots still run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from aivp_batch.errors import ConfigError, StoryboardError
from aivp_batch.shots import (
    PROMPT_KEYS,
    Shot,
    ShotProblem,
    Storyboard,
    UnusableShot,
    check_shot_id,
    find_character_refs,
    parse_aspect_ratio,
    parse_duration,
    resolve_in_project,
)
from aivp_batch.storyboard import read_storyboard

LIST_KEYS = frozenset(
    {
        "id",
        "prompt",
        "prompts",
        "start_frame",
        "end_frame",
        "characters",
        "character_refs",
        "duration",
        "aspect_ratio",
        "camera_fixed",
        "negative_prompt",
        "scene",
        "group",
    }
)
_FILE = "manifest"


def load_shots(manifest: Mapping[str, Any], project_dir: Path | None) -> Storyboard:
    """The shots a run renders, from `manifest.kind` = storyboard, list or prompt."""
    if OmegaConf.is_config(manifest):
        manifest = OmegaConf.to_container(manifest, resolve=True)  # type: ignore[assignment]
    kind = manifest.get("kind")
    base = Path(project_dir) if project_dir is not None else None
    if kind == "storyboard":
        if base is None:
            raise ConfigError("project_dir is required for manifest=storyboard")
        return read_storyboard(base)
    if kind == "list":
        return _from_list(manifest.get("shots"), base)
    if kind == "prompt":
        return _from_prompt(manifest, base)
    raise ConfigError(f"manifest.kind must be storyboard, list or prompt (got {kind!r})")


# --------------------------------------------------------------------------- kind=list


def _from_list(entries: Any, project_dir: Path | None) -> Storyboard:
    if not isinstance(entries, Sequence) or isinstance(entries, str) or not entries:
        raise ConfigError("manifest=list needs shots=[{id: …, prompt: …}, …]")
    board = Storyboard()
    seen: set[str] = set()
    for number, entry in enumerate(entries, start=1):
        shot_id = _entry_id(entry, number)
        if shot_id in seen:
            raise StoryboardError(_FILE, f"duplicate shot id: {shot_id}")
        seen.add(shot_id)
        try:
            board.shots.append(_list_shot(entry, shot_id, number, project_dir))
        except UnusableShot as exc:
            board.problems.append(ShotProblem(_FILE, f"{shot_id}: {exc}", shot_id))
    return board


def _entry_id(entry: Any, number: int) -> str:
    if not isinstance(entry, Mapping):
        raise StoryboardError(_FILE, f"shots[{number}] must be a mapping with id and prompt")
    raw = entry.get("id")
    if raw is None or isinstance(raw, bool) or raw == "":
        raise StoryboardError(_FILE, f"shots[{number}] has no id")
    unknown = sorted(str(k) for k in entry if k not in LIST_KEYS)
    if unknown:
        known = ", ".join(sorted(LIST_KEYS))
        raise StoryboardError(_FILE, f"shots[{number}] ({raw}): unknown key {unknown[0]!r} (known: {known})")
    return check_shot_id(str(raw), _FILE)


def _list_shot(entry: Mapping[str, Any], shot_id: str, number: int, project_dir: Path | None) -> Shot:
    names = _names(entry.get("characters"))
    if entry.get("character_refs") is not None:
        refs = tuple(_image(project_dir, p, "character_refs") for p in _list(entry, "character_refs"))
    else:
        refs = find_character_refs(project_dir, names) if project_dir is not None else ()
    return Shot(
        id=shot_id,
        number=number,
        scene=_text(entry, "scene"),
        duration_s=parse_duration(entry.get("duration")),
        aspect_ratio=parse_aspect_ratio(entry.get("aspect_ratio")),
        camera_fixed=_flag(entry.get("camera_fixed")),
        prompts=_prompts(entry),
        characters=names,
        start_frame=_image(project_dir, entry.get("start_frame"), "start_frame"),
        end_frame=_image(project_dir, entry.get("end_frame"), "end_frame"),
        character_refs=refs,
        negative_prompt=_text(entry, "negative_prompt"),
        group=_group(entry.get("group")),
    )


def _group(value: Any) -> str | None:
    """A shot's multi-shot group label (`group: 1` or `group: opening`); shots sharing one render
    in one call under strategy=multishot."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UnusableShot(f"group must be a label (a name or a number), not {value!r}")
    return str(value).strip() or None


def _prompts(entry: Mapping[str, Any]) -> dict[str, str]:
    prompt, prompts = entry.get("prompt"), entry.get("prompts")
    if prompt is not None and prompts is not None:
        raise StoryboardError(_FILE, f"{entry.get('id')}: give prompt or prompts, not both")
    if prompts is None:
        prompts = {"motion": prompt} if prompt is not None else {}
    if not isinstance(prompts, Mapping):
        raise StoryboardError(_FILE, f"{entry.get('id')}: prompts must map seedance/kling/motion to text")
    unknown = sorted(str(k) for k in prompts if k not in PROMPT_KEYS)
    if unknown:
        known = ", ".join(PROMPT_KEYS)
        raise StoryboardError(_FILE, f"{entry.get('id')}: unknown prompt key {unknown[0]!r} (known: {known})")
    if any(not isinstance(v, str) for v in prompts.values() if v is not None):
        raise UnusableShot("prompt text must be a string")
    result = {k: v.strip() for k, v in prompts.items() if isinstance(v, str) and v.strip()}
    if not result:
        raise UnusableShot("no prompt (give prompt: … or prompts: {seedance, kling, motion})")
    return result


# --------------------------------------------------------------------------- kind=prompt


def _from_prompt(manifest: Mapping[str, Any], project_dir: Path | None) -> Storyboard:
    prompt = manifest.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError("manifest=prompt needs prompt=…")
    shot_id = check_shot_id(str(manifest.get("id") or "clip-01"), _FILE)
    try:
        shot = Shot(
            id=shot_id,
            number=1,
            duration_s=parse_duration(manifest.get("duration")),
            aspect_ratio=parse_aspect_ratio(manifest.get("aspect_ratio")),
            camera_fixed=_flag(manifest.get("camera_fixed")),
            prompts={"motion": prompt.strip()},
            # Paths typed on the command line: the user's own choice, so not confined to a project.
            start_frame=_image(project_dir, manifest.get("image"), "image", confine=False),
            end_frame=_image(project_dir, manifest.get("end_image"), "end_image", confine=False),
            negative_prompt=_text(manifest, "negative_prompt"),
        )
    except UnusableShot as exc:
        return Storyboard(problems=[ShotProblem(_FILE, f"{shot_id}: {exc}", shot_id)])
    return Storyboard(shots=[shot])


# --------------------------------------------------------------------------- values


def _image(project_dir: Path | None, value: Any, label: str, *, confine: bool = True) -> Path | None:
    """A keyframe/portrait path: relative to the project (or the cwd without one), and it must exist."""
    if value is None or value == "":
        return None
    if not isinstance(value, str | os.PathLike):
        raise UnusableShot(f"{label} must be a path, not {value!r}")
    raw = Path(value).expanduser()
    if confine and project_dir is not None:
        path = resolve_in_project(project_dir, raw, _FILE)
    else:
        path = ((project_dir or Path.cwd()) / raw).resolve()
    if path.is_dir():
        raise UnusableShot(f"{label} is a directory, not an image file: {Path(value).as_posix()}")
    if not path.is_file():
        # A named frame that is missing must not silently turn an I2V shot into T2V.
        raise UnusableShot(f"{label} not found: {Path(value).as_posix()}")
    return path


def _flag(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise UnusableShot(f"camera_fixed must be true or false, not {value!r}")


def _text(entry: Mapping[str, Any], key: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise UnusableShot(f"{key} must be text, not {value!r}")
    return value.strip() or None


def _list(entry: Mapping[str, Any], key: str) -> list[Any]:
    value = entry.get(key)
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise UnusableShot(f"{key} must be a list")
    return list(value)


def _names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise UnusableShot("characters must be a list of names")
    return tuple(dict.fromkeys(str(n).strip().lstrip("@") for n in value if str(n).strip()))
