"""Where a shot becomes a payload: mode choice, prompt variant, duration rounding, field mapping,
cost estimate and the job's identity.

Local files go into payloads as `file://` URIs; the runner swaps them for uploaded URLs just
before submitting. A job's identity hashes those files by content, so the same render is
recognised whatever URL the upload got.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .grouping import Fallback, Group, group_shots, scene_setting
from .media import sha256_file
from .models import DEFAULT_MIN_IMAGE_PX, FLF, I2V, REF, T2V, ModelSpec, ModeSpec, MultishotSpec
from .pricing import estimate_usd, priced_keys
from .shots import Shot, portrait_angle, portrait_owner

DEFAULT_ASPECT = "16:9"
DEFAULT_DURATION_S = 5
DEFAULT_MAX_PROMPT_CHARS = 20000  # config.yaml `max_prompt_chars`; far above any real prompt
_TEXT_FIELDS = ("prompt", "negative_prompt")  # generic fields the size cap applies to
_DURATION_TEXT = re.compile(r"\(\s*Duration\s*[:：]\s*\d+(?:\.\d+)?\s*s\s*\)", re.IGNORECASE)
_CN_IMAGE_REF = re.compile(r"@(?:图片|图|image_file_|Image|image)(\d+)")
_ELEMENT_SHAPES = ("element", "frontal_image")  # Kling elements: one per character
_FRONT_ANGLES = ("front", "frontal", "face")


@dataclass(frozen=True)
class Job:
    """One provider request. `shots` has one shot now; a multi-shot group will have several."""

    key: str
    shots: tuple[Shot, ...]
    provider: str
    model: str
    mode: str
    endpoint: str
    payload: dict[str, Any]
    files: dict[str, Path]  # payload path (e.g. "image_url", "image_urls[1]") → local file
    duration_s: int  # what the final payload asks for (payload_extra too); the clip is checked against it
    requested_duration_s: float | None
    duration_note: str | None
    prompt_variant: str
    seed: int
    seed_random: bool
    estimate_usd: float
    settings: dict[str, Any]
    identity: str = ""
    file_hashes: dict[str, str] = field(default_factory=dict)
    seed_field: str | None = None  # None: the endpoint takes no seed (it is recorded, not sent)
    min_image_px: int = DEFAULT_MIN_IMAGE_PX  # the model's floor for input image sides
    rules: tuple[Any, ...] = ()  # models.PayloadRule: list limits the validator checks
    notes: tuple[str, ...] = ()  # what the plan should say: inputs the model does not take
    # A multi-shot group (strategy=multishot): each shot's whole seconds in the group's clip, where
    # the clip is split (split.split_clip), and each shot's prompt as sent (its multi_prompt item).
    shot_durations_s: tuple[int, ...] = ()
    shot_prompts: tuple[str, ...] = ()

    @property
    def prompt(self) -> str:
        if self.shot_prompts:
            return "\n\n".join(self.shot_prompts)
        return str(self.payload.get("prompt", ""))


@dataclass
class Plan:
    jobs: list[Job]
    errors: list[str]  # one line each: shot/file, model, what is wrong
    unplanned: dict[str, str] = field(default_factory=dict)  # shot id → why its spec was unusable
    fallbacks: dict[str, str] = field(default_factory=dict)  # strategy=multishot: shot id → why alone

    @property
    def total_usd(self) -> float:
        return round(sum(j.estimate_usd for j in self.jobs), 4)


def plan_jobs(
    shots: Sequence[Shot],
    spec: ModelSpec,
    *,
    provider: str,
    seed: int | None,
    duration_policy: str = "raise",
    character_refs: bool = True,
    payload_extra: Mapping[str, Any] | None = None,
    rng: random.Random | None = None,
    max_prompt_chars: int | None = None,
    previous_seeds: Mapping[str, int] | None = None,
) -> Plan:
    """Turn shots into jobs for one model; problems are collected, one line per shot.
    `max_prompt_chars` caps each prompt's length (None: DEFAULT_MAX_PROMPT_CHARS)."""
    cap = _prompt_cap(duration_policy, max_prompt_chars)
    rng = rng or random.Random()
    plan = Plan(jobs=[], errors=[])
    for shot in shots:
        try:
            plan.jobs.append(
                _plan_shot(
                    shot,
                    spec,
                    provider=provider,
                    seed=seed,
                    rng=rng,
                    duration_policy=duration_policy,
                    character_refs=character_refs,
                    payload_extra=payload_extra or {},
                    max_prompt_chars=cap,
                    previous_seed=(previous_seeds or {}).get(shot.id),
                )
            )
        except ConfigError as exc:
            plan.errors.append(str(exc))
    return plan


def _prompt_cap(duration_policy: str, max_prompt_chars: int | None) -> int:
    """Check the planning knobs; the prompt length cap (None: DEFAULT_MAX_PROMPT_CHARS)."""
    if duration_policy not in ("raise", "strict"):
        raise ConfigError(f"duration_policy={duration_policy} is not one of raise, strict")
    cap = DEFAULT_MAX_PROMPT_CHARS if max_prompt_chars is None else int(max_prompt_chars)
    if cap < 1:
        raise ConfigError(f"max_prompt_chars={max_prompt_chars} must be at least 1")
    return cap


def _plan_shot(
    shot: Shot,
    spec: ModelSpec,
    *,
    provider: str,
    seed: int | None,
    rng: random.Random,
    duration_policy: str,
    character_refs: bool,
    payload_extra: Mapping[str, Any],
    max_prompt_chars: int,
    previous_seed: int | None = None,
) -> Job:
    mode_spec = choose_mode(shot, spec, character_refs)
    variant, prompt = pick_prompt(shot, spec)
    refs = character_references(shot, mode_spec, prompt, character_refs)
    if refs is not None and mode_spec.ref_token:
        prompt = reference_prompt(prompt, shot, mode_spec.ref_token, refs)
    duration, note = fit_duration(shot, mode_spec, duration_policy)
    if note:  # the prompt must not promise the old length: "(Duration: 6s)" → "(Duration: 10s)"
        prompt = _DURATION_TEXT.sub(f"(Duration: {_fmt(duration)}s)", prompt)
    job_seed = _job_seed(seed, previous_seed, rng)
    generic = _generic_values(shot, mode_spec, prompt, duration, job_seed)
    generic["character_refs"] = refs
    payload, files = _payload(_where(shot), spec, mode_spec, generic)
    payload.update(payload_extra)
    check_text_sizes(shot, mode_spec, payload, max_prompt_chars)
    # Price what is sent: payload_extra may have changed the duration, resolution or audio.
    sent = sent_values(shot, mode_spec, payload, priced_keys(spec.pricing))
    sent_duration = sent.pop("duration", duration)
    if sent_duration != duration:
        field_name = mode_spec.fields["duration"].field
        sent_as = f"{field_name}={payload[field_name]!r}"
        note = f"payload_extra sets {sent_as}: {_fmt(sent_duration)}s, not {_fmt(duration)}s"
        duration = sent_duration
    cost, settings = _priced(spec, mode_spec, duration, sent, generic["aspect_ratio"])
    hashes = {key: _hash_input(shot, path) for key, path in files.items()}
    notes = unused_inputs(shot, spec.name, mode_spec.mode, files.values())
    identity = _identity(provider, mode_spec, payload, files, hashes, seed, job_seed)
    return Job(
        key=shot.id,
        shots=(shot,),
        provider=provider,
        model=spec.name,
        mode=mode_spec.mode,
        endpoint=mode_spec.endpoint,
        payload=payload,
        files=files,
        duration_s=duration,
        requested_duration_s=shot.duration_s,
        duration_note=note,
        prompt_variant=variant,
        seed=job_seed,
        seed_random=seed is None,
        estimate_usd=cost,
        settings=settings,
        identity=identity,
        file_hashes=hashes,
        seed_field=_seed_field(mode_spec),
        min_image_px=spec.min_image_px,
        notes=notes,
        rules=mode_spec.rules,
    )


def unused_inputs(shot: Shot, model: str, mode: str, sent: Iterable[Path]) -> tuple[str, ...]:
    """The shot's inputs that this model's payload does not carry (Sora ignores an end frame; a
    Kling element needs two views of a character). A model that takes no portraits at all is said
    once, in the run's warnings, not on every shot."""
    used = set(sent)
    notes = []
    if shot.end_frame is not None and shot.end_frame not in used:
        notes.append(f"end frame {shot.end_frame.name} not used: model={model} takes none in {mode}")
    unused = [p.name for p in shot.character_refs if p not in used]
    if unused and used & set(shot.character_refs):
        notes.append(f"portraits {', '.join(unused)} not used by model={model} in {mode}")
    return tuple(notes)


def check_text_sizes(shot: Shot, mode_spec: ModeSpec, payload: Mapping[str, Any], cap: int) -> None:
    """A prompt longer than `max_prompt_chars` is a planning error, before anything is sent."""
    for generic in _TEXT_FIELDS:
        fspec = mode_spec.fields.get(generic)
        value = payload.get(fspec.field) if fspec is not None else None
        if isinstance(value, str) and len(value) > cap:
            raise ConfigError(
                f"{_where(shot)}: {generic} is {len(value):,} characters; the limit is max_prompt_chars={cap}"
            )


def sent_values(
    shot: Shot, mode_spec: ModeSpec, payload: Mapping[str, Any], keys: set[str]
) -> dict[str, Any]:
    """The generic values (`keys`: duration, resolution, audio…) the final payload carries, read
    back through the mode's field map ("12" → 12, "8s" → 8); a key the mode does not send, or
    sends as null, is left out."""
    out: dict[str, Any] = {}
    for generic in sorted(keys):
        fspec = mode_spec.fields.get(generic)
        if fspec is None or payload.get(fspec.field) is None:
            continue
        raw = payload[fspec.field]
        try:
            value = fspec.parse(raw, generic)
            if generic == "duration":
                value = _seconds(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{_where(shot)}: {fspec.field}={raw!r} in the payload does not read as a {generic} "
                f"for {mode_spec.endpoint}"
            ) from None
        out[generic] = value
    return out


def _seconds(value: Any) -> int | float:
    if isinstance(value, bool):
        raise TypeError("a duration is a number")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("a duration is a positive number")
    return int(seconds) if seconds.is_integer() else seconds


def _hash_input(shot: Shot, path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError as exc:
        raise ConfigError(f"{_where(shot)}: {path} cannot be read ({exc.strerror or exc})") from None


def choose_mode(shot: Shot, spec: ModelSpec, character_refs: bool) -> ModeSpec:
    """I2V when there is a keyframe (FLF with an end frame the model takes), else REF or T2V."""
    if shot.start_frame is not None:
        if shot.end_frame is not None:
            flf = spec.mode(FLF) or (spec.mode(I2V) if spec.supports_end_frame(I2V) else None)
            if flf is not None:
                return _as_mode(flf, FLF)
        if spec.mode(I2V) is not None:
            return spec.modes[I2V]
    if character_refs and shot.character_refs and spec.mode(REF) is not None:
        return spec.modes[REF]
    if spec.mode(T2V) is None:
        raise ConfigError(
            f"{shot.id}: model={spec.name} has no text-to-video endpoint and the shot has no keyframe"
        )
    return spec.modes[T2V]


def _as_mode(mode_spec: ModeSpec, mode: str) -> ModeSpec:
    return mode_spec if mode_spec.mode == mode else dataclasses.replace(mode_spec, mode=mode)


def pick_prompt(shot: Shot, spec: ModelSpec) -> tuple[str, str]:
    """The storyboard prompt variant the model was written for, else the next best one."""
    for variant in (*spec.prompt_order, *shot.prompts):
        text = (shot.prompts.get(variant) or "").strip()
        if text:
            return variant, text
    raise ConfigError(f"{_where(shot)}: no motion prompt for model={spec.name}")


@dataclass(frozen=True)
class Portraits:
    """One character's portraits, as one Kling element: the front view and the other angles."""

    name: str
    frontal: Path
    others: tuple[Path, ...] = ()


def character_references(
    shot: Shot, mode_spec: ModeSpec, prompt: str, enabled: bool = True
) -> list[Any] | None:
    """The shot's portraits as the mode takes them: one `Portraits` per character, in the order the
    prompt introduces them, for Kling elements; else the files themselves. None when the mode takes
    no references (a REF mode was only chosen with references on).

    Where references are the point (REF), every character goes in and the validator's rules refuse
    an incomplete one. Where they only help (an image-to-video endpoint that also takes elements,
    Kling 3.0's: the keyframe already shows the characters), a character with no portrait besides
    the front one is left out, and the plan notes its portrait as not used."""
    fspec = mode_spec.fields.get("character_refs")
    if fspec is None or not shot.character_refs or not (enabled or mode_spec.mode == REF):
        return None
    if fspec.shape not in _ELEMENT_SHAPES:
        return list(shot.character_refs)
    groups = group_portraits(shot)
    if mode_spec.mode != REF:
        groups = [g for g in groups if g.others]
    return _order_by_prompt(groups, prompt, shot) or None


def group_portraits(shot: Shot) -> list[Portraits]:
    """Group the shot's portrait files by character (the file-stem rule of `find_character_refs`);
    `<name>-front.*` is the frontal view (else the first file), every other angle a reference."""
    groups: dict[str, list[Path]] = {}
    for path in shot.character_refs:
        owner = portrait_owner(path, shot.characters)
        if owner is None:  # listed by hand (manifest): the stem without its angle names the character
            stem = path.stem
            angle = portrait_angle(path, None)
            owner = stem[: -len(angle) - 1] if angle and len(angle) < len(stem) else stem
        groups.setdefault(owner, []).append(path)
    out = []
    for name, paths in groups.items():
        fronts = [p for p in paths if portrait_angle(p, name).lower() in _FRONT_ANGLES]
        frontal = fronts[0] if fronts else paths[0]
        out.append(Portraits(name, frontal, tuple(p for p in paths if p != frontal)))
    return out


def _name_pattern(name: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in re.split(r"[\s_-]+", name.strip().lstrip("@")) if w]
    return re.compile(r"(?<![\w@])(@?)" + r"[\s_-]+".join(words) + r"(?!\w)", re.IGNORECASE)


def _order_by_prompt(groups: list[Portraits], prompt: str, shot: Shot) -> list[Portraits]:
    """Characters in the order the prompt first names them (or points at one of their portraits
    with @图片N / @ImageN); the ones it never names follow in the shot's order."""

    return sorted(groups, key=lambda g: _first_mention(g, prompt, shot))  # stable: unnamed keep their order


def _first_mention(group: Portraits, prompt: str, shot: Shot) -> float:
    """Where `prompt` first names the character (or one of its portraits, @图片N); inf if never."""
    found = [m.start() for m in [_name_pattern(group.name).search(prompt)] if m]
    for m in _CN_IMAGE_REF.finditer(prompt):
        path = _nth(shot.character_refs, int(m.group(1)))
        if path is not None and path in (group.frontal, *group.others):
            found.append(m.start())
    return min(found, default=math.inf)


def _nth(paths: Sequence[Path], n: int) -> Path | None:
    return paths[n - 1] if 1 <= n <= len(paths) else None


def _element_prompt(
    prompt: str, shot: Shot, token: str, groups: list[Portraits], listed: set[str] | None = None
) -> str:
    """Name each character's element in the prompt: `@Name` becomes `@ElementN`, else its first
    mention gets `(@ElementN)` after it; @图片N pointing at a portrait becomes its character's
    element; a character the prompt never names is listed on a last line (only those in `listed`,
    when given: a multi-shot item lists the characters of its own shot, not the whole group's)."""
    if re.search(re.escape(token.format(n=1)), prompt):
        return prompt  # the author numbered the elements already
    index = {p: i for i, g in enumerate(groups, start=1) for p in (g.frontal, *g.others)}

    def image_ref(m: re.Match[str]) -> str:
        n = index.get(_nth(shot.character_refs, int(m.group(1))))  # type: ignore[arg-type]
        return token.format(n=n if n is not None else m.group(1))

    text = _CN_IMAGE_REF.sub(image_ref, prompt)
    unnamed = []
    for i, group in enumerate(groups, start=1):
        tok = token.format(n=i)
        pattern = _name_pattern(group.name)
        text = pattern.sub(lambda m, tok=tok: tok if m.group(1) else m.group(0), text)
        if tok in text:
            continue
        match = pattern.search(text)
        if match:
            text = f"{text[: match.end()]} ({tok}){text[match.end() :]}"
        elif listed is None or group.name in listed:
            unnamed.append(f"{tok}: {group.name}")
    return f"{text}\n{'; '.join(unnamed)}" if unnamed else text


def reference_prompt(prompt: str, shot: Shot, token: str, refs: Sequence[Any] | None = None) -> str:
    """Point the prompt's character references at the uploaded portraits (@Image1, @Element1…)."""
    if refs and isinstance(refs[0], Portraits):
        return _element_prompt(prompt, shot, token, list(refs))
    rewritten = _CN_IMAGE_REF.sub(lambda m: token.format(n=m.group(1)), prompt)
    if token.format(n=1) in rewritten:
        return rewritten
    names = [p.stem for p in shot.character_refs]
    legend = "; ".join(f"{token.format(n=i)}: {name}" for i, name in enumerate(names, start=1))
    return f"{rewritten}\n{legend}"


def fit_duration(shot: Shot, mode_spec: ModeSpec, policy: str) -> tuple[int, str | None]:
    """Raise the shot's duration to the nearest allowed value (never shorten), or refuse when strict."""
    allowed = sorted(mode_spec.durations) or [DEFAULT_DURATION_S]
    wanted = shot.duration_s
    if wanted is None:
        pick = min((d for d in allowed if d >= DEFAULT_DURATION_S), default=allowed[-1])
        return pick, f"no duration in the shot; using {pick}s"
    if wanted in allowed:
        return int(wanted), None
    listing = ", ".join(str(d) for d in allowed)
    if policy == "strict":
        raise ConfigError(
            f"{_where(shot)}: duration {_fmt(wanted)}s is not allowed by {mode_spec.endpoint} "
            f"(allowed: {listing}) and duration_policy=strict"
        )
    longer = [d for d in allowed if d >= wanted]
    if not longer:
        raise ConfigError(
            f"{_where(shot)}: duration {_fmt(wanted)}s is longer than {mode_spec.endpoint} allows "
            f"(allowed: {listing}); split the shot or pick another model"
        )
    return longer[0], f"raised {_fmt(wanted)}s → {longer[0]}s (allowed: {listing})"


def _generic_values(shot: Shot, mode_spec: ModeSpec, prompt: str, duration: int, seed: int) -> dict[str, Any]:
    settings = mode_spec.settings
    return {
        "prompt": prompt,
        "start_frame": shot.start_frame if mode_spec.mode in (I2V, FLF) else None,
        "end_frame": shot.end_frame if mode_spec.mode == FLF else None,
        "character_refs": None,  # _plan_shot sets it: character_references()
        "duration": duration,
        "aspect_ratio": shot.aspect_ratio or DEFAULT_ASPECT,
        "resolution": settings.get("resolution"),
        "audio": settings.get("audio"),
        "seed": seed,
        "camera_fixed": shot.camera_fixed,
        "negative_prompt": shot.negative_prompt,
        "title": shot.id,
        "caption": _caption(shot, prompt),
        "dialogue": shot.dialogue,  # the preview burns it in; hosted models map no such field
    }


def _caption(shot: Shot, prompt: str) -> str:
    """A plain-language line for previews: the motion description, else the Kling prompt."""
    return " ".join((shot.prompts.get("motion") or shot.prompts.get("kling") or prompt).split())


def _job_seed(seed: int | None, previous_seed: int | None, rng: random.Random) -> int:
    """`seed=` when given; else the seed the shot (or group) was last rendered with, so a changed
    input (an edited keyframe) changes only that input; a new one draws a seed."""
    if seed is not None:
        return seed
    return previous_seed if previous_seed is not None else rng.randrange(0, 2**31 - 1)


def _payload(
    where: str, spec: ModelSpec, mode_spec: ModeSpec, generic: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Path]]:
    """`build_payload`, with a value the model's field map has no entry for named at its shot."""
    try:
        return build_payload(mode_spec, generic)
    except ConfigError as exc:
        raise ConfigError(f"{where}: model={spec.name} {mode_spec.endpoint}: {exc}") from None


def _priced(
    spec: ModelSpec, mode_spec: ModeSpec, duration: float, sent: dict[str, Any], aspect_ratio: str
) -> tuple[float, dict[str, Any]]:
    """(estimate, the job's settings) from what its payload sends (`sent_values`, less the
    duration): payload_extra may have changed the resolution or audio the tier asked for."""
    aspect = sent.pop("aspect_ratio", aspect_ratio)
    settings = {**mode_spec.settings, **sent}
    cost = estimate_usd(
        spec.pricing,
        duration_s=duration,
        settings=settings,
        endpoint=mode_spec.endpoint,
        mode=mode_spec.mode,
        aspect_ratio=aspect,
    )
    return cost, settings


def _seed_field(mode_spec: ModeSpec) -> str | None:
    seed_spec = mode_spec.fields.get("seed")
    return seed_spec.field if seed_spec else None


def _identity(
    provider: str,
    mode_spec: ModeSpec,
    payload: Mapping[str, Any],
    files: Mapping[str, Path],
    hashes: Mapping[str, str],
    seed: int | None,
    job_seed: int,
) -> str:
    seed_field = _seed_field(mode_spec)
    return job_identity(
        provider,
        mode_spec.endpoint,
        payload,
        files,
        hashes,
        seed is None,
        seed_field,
        take=job_seed if seed is not None and seed_field is None else None,
    )


def build_payload(mode_spec: ModeSpec, generic: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
    """Map generic values to the endpoint's fields; local files become file:// URIs."""
    payload: dict[str, Any] = dict(mode_spec.params)
    files: dict[str, Path] = {}
    for name, fspec in mode_spec.fields.items():
        value = generic.get(name)
        if value is None:
            continue
        if isinstance(value, Path):
            files[fspec.field] = value
            payload[fspec.field] = value.as_uri()
        elif isinstance(value, list):
            payload[fspec.field] = _file_list(fspec.field, fspec.shape, value, files)
        else:
            payload[fspec.field] = fspec.convert(value, generic)
    return payload, files


def _file_list(name: str, shape: str | None, paths: list[Any], files: dict[str, Path]) -> list[Any]:
    out: list[Any] = []
    for i, path in enumerate(paths):
        if isinstance(path, Portraits):  # one Kling element per character
            files[f"{name}[{i}].frontal_image_url"] = path.frontal
            element: dict[str, Any] = {"frontal_image_url": path.frontal.as_uri()}
            if path.others:
                element["reference_image_urls"] = [p.as_uri() for p in path.others]
                for j, other in enumerate(path.others):
                    files[f"{name}[{i}].reference_image_urls[{j}]"] = other
            out.append(element)
        else:
            files[f"{name}[{i}]"] = path
            out.append(path.as_uri())
    return out


def job_identity(
    provider: str,
    endpoint: str,
    payload: Mapping[str, Any],
    files: Mapping[str, Path],
    hashes: Mapping[str, str],
    seed_random: bool,
    seed_field: str | None = None,
    take: int | None = None,
) -> str:
    """sha256 of the canonical request: files by content, a randomly drawn seed as 'random'.
    `take`: the seed asked for (`seed=N`) on an endpoint that takes none. It is not sent, but it is
    part of the identity, so `seed=1,2,3` there makes three takes (three renders), not one clip
    reused three times; a random seed on such an endpoint stays out (the request is the same)."""
    uri_to_hash = {files[k].as_uri(): f"sha256:{hashes[k]}" for k in files}
    canon = replace_strings(dict(payload), uri_to_hash)
    if seed_random and seed_field and seed_field in canon:
        canon[seed_field] = "random"
    request: dict[str, Any] = {"provider": provider, "endpoint": endpoint, "payload": canon}
    if take is not None:
        request["take"] = take
    blob = json.dumps(
        request,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def replace_strings(value: Any, table: Mapping[str, str]) -> Any:
    """A copy of a JSON value with every string found in `table` swapped (file URIs → hashes or URLs)."""
    if isinstance(value, str):
        return table.get(value, value)
    if isinstance(value, list):
        return [replace_strings(v, table) for v in value]
    if isinstance(value, dict):
        return {k: replace_strings(v, table) for k, v in value.items()}
    return value


def _where(shot: Shot) -> str:
    return shot.id if shot.source is None else f"{shot.id} ({shot.source.name})"


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# --------------------------------------------------------------------------- multi-shot groups


def plan_multishot(
    shots: Sequence[Shot],
    spec: ModelSpec,
    *,
    provider: str,
    seed: int | None,
    duration_policy: str = "raise",
    character_refs: bool = True,
    payload_extra: Mapping[str, Any] | None = None,
    rng: random.Random | None = None,
    max_prompt_chars: int | None = None,
    previous_seeds: Mapping[str, int] | None = None,
    groups: Sequence[Sequence[str]] | None = None,
    scene_settings: Mapping[str, str] | None = None,
) -> Plan:
    """strategy=multishot: the shots grouped (grouping.group_shots, with `groups` as a stated
    grouping on top of each shot's `group` label), one `Job` per group (`plan_group`) and the
    single-shot path (`plan_jobs`) for every shot that renders alone, in shot order; `fallbacks`
    says why each of those is alone. `scene_settings` (grouping.read_scene_settings) is folded into
    the group's items. A model without multi-shot endpoints plans every shot alone."""
    cap = _prompt_cap(duration_policy, max_prompt_chars)
    rng = rng or random.Random()
    previous = previous_seeds or {}
    single = dict(
        provider=provider,
        seed=seed,
        duration_policy=duration_policy,
        character_refs=character_refs,
        payload_extra=payload_extra,
        rng=rng,
        max_prompt_chars=max_prompt_chars,
        previous_seeds=previous,
    )
    if spec.multishot is None:
        plan = plan_jobs(shots, spec, **single)  # type: ignore[arg-type]
        reason = f"model={spec.name} takes no multi-shot groups on provider={provider}"
        plan.fallbacks = {s.id: reason for s in shots}
        return plan
    try:
        planned = group_shots(shots, spec.multishot.limits, policy=duration_policy, explicit=groups)
    except ConfigError as exc:
        return Plan(jobs=[], errors=str(exc).splitlines())
    plan = Plan(jobs=[], errors=[])
    for item in planned:
        if isinstance(item, Fallback):
            plan.fallbacks[item.shot.id] = item.reason
            alone = plan_jobs([item.shot], spec, **single)  # type: ignore[arg-type]
            note = f"renders alone (strategy=multishot): {item.reason}"
            plan.jobs.extend(dataclasses.replace(j, notes=(note, *j.notes)) for j in alone.jobs)
            plan.errors.extend(alone.errors)
            continue
        try:
            plan.jobs.append(
                plan_group(
                    item,
                    spec,
                    provider=provider,
                    seed=seed,
                    rng=rng,
                    character_refs=character_refs,
                    payload_extra=payload_extra,
                    max_prompt_chars=cap,
                    previous_seed=previous.get(item.shots[0].id),
                    scene_settings=scene_settings,
                )
            )
        except ConfigError as exc:
            plan.errors.append(str(exc))
    return plan


def choose_group_mode(group: Group, multishot: MultishotSpec, character_refs: bool = True) -> ModeSpec:
    """The multi-shot mode that carries most of the group: its characters as elements first, then
    its first shot's keyframe (image-to-video only with one); text-to-video when neither fits."""
    keyframe = group.shots[0].start_frame is not None
    characters = character_refs and any(s.character_refs for s in group.shots)
    best: tuple[tuple[bool, bool], ModeSpec] | None = None
    for mode in (I2V, T2V, REF):  # on a tie the earlier one: a keyframe's own endpoint, else plain text
        mode_spec = multishot.modes.get(mode)
        if mode_spec is None or (mode == I2V and not keyframe):
            continue
        score = (
            characters and mode_spec.takes("character_refs"),
            keyframe and mode_spec.takes("start_frame"),
        )
        if best is None or score > best[0]:
            best = (score, mode_spec)
    if best is None:
        raise ConfigError(
            f"{group.key} ({', '.join(s.id for s in group.shots)}): model={_model_of(multishot)} has no "
            "multi-shot endpoint for a group without a keyframe"
        )
    return best[1]


def _model_of(multishot: MultishotSpec) -> str:
    return next(iter(multishot.modes.values())).model if multishot.modes else "?"


def plan_group(
    group: Group,
    spec: ModelSpec,
    *,
    provider: str,
    seed: int | None,
    rng: random.Random | None = None,
    character_refs: bool = True,
    payload_extra: Mapping[str, Any] | None = None,
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
    previous_seed: int | None = None,
    scene_settings: Mapping[str, str] | None = None,
) -> Job:
    """One multi-shot group as one `Job` (key `group-NN`): each shot's prompt (the model's variant,
    the scene's setting folded in, character names as @ElementN) and length become one item of the
    list field (`multi_prompt`); the characters of the whole group become the elements, one per
    character, each file once; the first shot's keyframe is the start image where the mode takes
    one. The call's duration is the shots' sum and is priced as one clip of that length."""
    multishot = spec.multishot
    if multishot is None:
        raise ConfigError(f"model={spec.name} takes no multi-shot groups")
    rng = rng or random.Random()
    mode_spec = choose_group_mode(group, multishot, character_refs)
    first = group.shots[0]
    variants, prompts = [], []
    for shot, seconds in zip(group.shots, group.durations, strict=True):
        variant, prompt = pick_prompt(shot, spec)
        prompt = _DURATION_TEXT.sub(f"(Duration: {seconds}s)", prompt)
        setting = scene_setting(scene_settings or {}, shot.scene)
        if setting and setting not in prompt:  # no prompt is sent beside the items: the setting goes in each
            prompt = f"Setting: {setting}\n{prompt}"
        variants.append(variant)
        prompts.append(prompt)
    refs = group_references(group, mode_spec, prompts, character_refs)
    if refs and mode_spec.ref_token and isinstance(refs[0], Portraits):
        prompts = [
            _element_prompt(prompt, shot, mode_spec.ref_token, refs, listed=_present(refs, shot))
            for shot, prompt in zip(group.shots, prompts, strict=True)
        ]
    total = group.total_s
    job_seed = _job_seed(seed, previous_seed, rng)
    settings = mode_spec.settings
    negatives = list(dict.fromkeys(s.negative_prompt for s in group.shots if s.negative_prompt))
    generic: dict[str, Any] = {
        # Sent only where the mode maps it (the preview's title line); Kling sends items alone.
        "prompt": f"{group.key}: {', '.join(s.id for s in group.shots)}",
        "start_frame": first.start_frame if mode_spec.mode in (I2V, REF) else None,
        "end_frame": None,
        "character_refs": refs,
        "duration": total,
        "aspect_ratio": first.aspect_ratio or DEFAULT_ASPECT,
        "resolution": settings.get("resolution"),
        "audio": settings.get("audio"),
        "seed": job_seed,
        "negative_prompt": ", ".join(negatives) or None,
        "title": group.key,
    }
    payload, files = _payload(group.key, spec, mode_spec, generic)
    payload[multishot.items_field] = multishot.encode_items(
        [
            _item(multishot, shot, prompt, seconds)
            for shot, prompt, seconds in zip(group.shots, prompts, group.durations, strict=True)
        ]
    )  # a list, or one JSON string of it where the model YAML says `items: {encode: json}`
    payload.update(payload_extra or {})
    check_text_sizes(first, mode_spec, payload, max_prompt_chars)
    for shot, prompt in zip(group.shots, prompts, strict=True):
        if len(prompt) > max_prompt_chars:
            raise ConfigError(
                f"{group.key}: {_where(shot)}'s prompt is {len(prompt):,} characters; "
                f"the limit is max_prompt_chars={max_prompt_chars}"
            )
    sent = sent_values(first, mode_spec, payload, priced_keys(spec.pricing))
    if sent.pop("duration", total) != total:
        field_name = mode_spec.fields["duration"].field
        raise ConfigError(
            f"{group.key}: payload_extra sets {field_name}={payload[field_name]!r}, but a multi-shot "
            f"group's duration is the sum of its shots' ({total}s)"
        )
    cost, job_settings = _priced(spec, mode_spec, total, sent, generic["aspect_ratio"])
    hashes = {key: _hash_input(first, path) for key, path in files.items()}
    identity = _identity(provider, mode_spec, payload, files, hashes, seed, job_seed)
    requested = [s.duration_s for s in group.shots]
    return Job(
        key=group.key,
        shots=group.shots,
        provider=provider,
        model=spec.name,
        mode=mode_spec.mode,
        endpoint=mode_spec.endpoint,
        payload=payload,
        files=files,
        duration_s=total,
        requested_duration_s=None if None in requested else sum(requested),  # type: ignore[arg-type]
        duration_note="; ".join(group.notes) or None,
        prompt_variant=",".join(dict.fromkeys(variants)),
        seed=job_seed,
        seed_random=seed is None,
        estimate_usd=cost,
        settings=job_settings,
        identity=identity,
        file_hashes=hashes,
        seed_field=_seed_field(mode_spec),
        min_image_px=spec.min_image_px,
        rules=mode_spec.rules,
        notes=_group_notes(group, spec.name, mode_spec, files.values()),
        shot_durations_s=group.durations,
        shot_prompts=tuple(prompts),
    )


def group_references(
    group: Group, mode_spec: ModeSpec, prompts: Sequence[str], enabled: bool = True
) -> list[Any] | None:
    """The group's portraits as the mode takes them: one `Portraits` per character of any of its
    shots (each file once), ordered by where the items first name them, for Kling elements; else
    the files. As for one shot (`character_references`): None where the mode takes none, and outside
    a reference mode a character with only a front portrait is left out."""
    fspec = mode_spec.fields.get("character_refs")
    paths = tuple(dict.fromkeys(p for s in group.shots for p in s.character_refs))
    if fspec is None or not paths or not (enabled or mode_spec.mode == REF):
        return None
    if fspec.shape not in _ELEMENT_SHAPES:
        return list(paths)
    names = tuple(dict.fromkeys(n for s in group.shots for n in s.characters))
    merged = dataclasses.replace(group.shots[0], characters=names, character_refs=paths)
    portraits = group_portraits(merged)
    if mode_spec.mode != REF:
        portraits = [g for g in portraits if g.others]

    def first_mention(portrait: Portraits) -> tuple[float, float]:
        for k, (shot, prompt) in enumerate(zip(group.shots, prompts, strict=True)):
            at = _first_mention(portrait, prompt, shot)
            if at != math.inf:
                return (k, at)
        return (math.inf, 0)

    return sorted(portraits, key=first_mention) or None


def _present(refs: Sequence[Portraits], shot: Shot) -> set[str]:
    """The characters (of `refs`) whose portraits this shot has: the ones its item must name."""
    own = set(shot.character_refs)
    return {g.name for g in refs if own & {g.frontal, *g.others}}


def _item(multishot: MultishotSpec, shot: Shot, prompt: str, seconds: int) -> dict[str, Any]:
    values = {
        "prompt": prompt,
        "duration": seconds,
        "title": shot.id,
        "caption": _caption(shot, prompt),
        "dialogue": shot.dialogue,
    }
    return {f.field: f.convert(values[g]) for g, f in multishot.items.items() if values.get(g) is not None}


def _group_notes(group: Group, model: str, mode_spec: ModeSpec, sent: Iterable[Path]) -> tuple[str, ...]:
    """The group's inputs its call does not carry: keyframes after the first shot's (one call starts
    from one image), end frames, portraits left out."""
    used = set(sent)
    notes = []
    for k, shot in enumerate(group.shots):
        if shot.start_frame is not None and shot.start_frame not in used:
            why = (
                "a multi-shot call starts from its first shot's keyframe only"
                if k
                else (f"model={model} takes none in a {mode_spec.mode} group")
            )
            notes.append(f"{shot.id}: keyframe {shot.start_frame.name} not used: {why}")
        if shot.end_frame is not None and shot.end_frame not in used:
            notes.append(f"{shot.id}: end frame {shot.end_frame.name} not used: multi-shot calls take none")
    portraits = list(dict.fromkeys(p for s in group.shots for p in s.character_refs))
    unused = [p.name for p in portraits if p not in used]
    if unused and used & set(portraits):
        notes.append(f"portraits {', '.join(unused)} not used by model={model} in {mode_spec.mode}")
    return tuple(notes)
