"""`model=auto model.endpoint=<fal endpoint id>`: a model spec derived from the endpoint's own
OpenAPI schema, for the endpoints no model YAML describes yet.

The derivation reads the input schema (live → cache → bundled snapshot, via `SchemaStore`) and
finds the fields a shot can fill: the prompt, the start/end image (`image_url`, `start_image_url`,
`first_frame_url`, `end_image_url`, `tail_image_url`, …), the character references (`elements`,
`image_urls`), the duration with its value type (`"5"`, `5`, `"5s"`) and allowed values, aspect
ratio, resolution, audio, seed, negative prompt and camera_fixed. The result is the same
`ModelSpec`/`ModeSpec`/`FieldSpec` a model YAML gives (models.build_model_spec), so planning is
unchanged: one place still turns a shot into a payload.

The mode comes from the endpoint id (`text-to-video`, `image-to-video`, `first-last-frame`,
`reference-to-video`), else from its fields: a required start image → I2V (FLF too when it takes
an end image, or FLF only when the end image is required as well), reference images → REF, else
T2V. `model.endpoints: {t2v: …, i2v: …, flf: …, ref: …}` names one endpoint per mode instead.

Tier settings (`settings.*`) work as for a YAML model; `resolution: lowest|highest` picks from the
endpoint's allowed resolutions. Pricing: `model.pricing` (the YAML rule format) when given, else
estimates are $0 with a warning (fal's pricing API needs a key; see `pricing_from_unit_price`).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .media import frame_size
from .models import (
    DEFAULT_MIN_IMAGE_PX,
    FLF,
    I2V,
    MODE_KEYS,
    REF,
    T2V,
    FieldSpec,
    ModelSpec,
    ModeSpec,
    _endpoint,
    _min_image_px,
    tier_settings,
)
from .openapi import EndpointSchema
from .providers.base import UnitPrice
from .schema_store import SchemaStore

# Candidate endpoint fields per generic field, best first; a regex catches other spellings.
_PROMPT = ("prompt", "text_prompt", "text", "input_text")
_START = (
    "image_url",
    "start_image_url",
    "first_frame_url",
    "first_frame_image_url",
    "start_frame_url",
    "first_image_url",
    "input_image_url",
)
_START_RE = re.compile(r"^(start|first|begin|input|init)_?(image|frame)\w*_url$")
_END = (
    "end_image_url",
    "tail_image_url",
    "last_frame_url",
    "last_image_url",
    "end_frame_url",
    "last_frame_image_url",
    "final_frame_url",
)
_END_RE = re.compile(r"^(end|last|tail|final)_?(image|frame)\w*_url$")
_REFS = ("elements", "image_urls", "reference_image_urls", "reference_images", "ref_image_urls")
_DURATION = ("duration", "duration_seconds", "num_seconds", "seconds", "video_length")
_ASPECT = ("aspect_ratio", "aspect")
_RESOLUTION = ("resolution", "video_resolution")
_AUDIO = ("generate_audio", "with_audio", "enable_audio", "audio", "generate_sound", "sound")
_SEED = ("seed",)
_NEGATIVE = ("negative_prompt",)
_CAMERA_FIXED = ("camera_fixed",)
_SECONDS = re.compile(r"^(\d+(?:\.\d+)?)(\s*(?:s|sec|secs|seconds))?$")
# Ids say the mode more reliably than optional fields do.
_ID_MODES = (
    ("first-last-frame", FLF),
    ("reference-to-video", REF),
    ("image-to-video", I2V),
    ("text-to-video", T2V),
)
# Defaults by model family (the endpoint id): the storyboard prompt variant it was written for,
# the reference token of the prompt, the smallest image side. `model.*` overrides each.
_FAMILIES = (
    ("seedance", {"prompt_variant": "seedance", "ref_token": "@Image{n}", "min_image_px": None}),
    ("kling", {"prompt_variant": "kling", "ref_token": "@Element{n}", "min_image_px": 300}),
)
_FALLBACK = {
    "seedance": ("kling", "motion"),
    "kling": ("motion", "seedance"),
    "motion": ("kling", "seedance"),
}
_ORDER = ("prompt", "start_frame", "end_frame", "character_refs", "duration", "aspect_ratio")
_ORDER += ("resolution", "audio", "seed", "negative_prompt", "camera_fixed")
NO_PRICE = (
    "model=auto: no price known for {endpoints}, so estimates are $0 and budget_usd cannot stop "
    "spending: pass model.pricing=… (e.g. 'model.pricing={{unit: second, rates: [{{usd: 0.1}}]}}'; "
    "fal's pricing API needs a key)"
)


@dataclass(frozen=True)
class Derived:
    """What was derived for one mode: the spec and what the dry run shows about it."""

    mode: ModeSpec
    schema: EndpointSchema
    unfilled: tuple[str, ...] = ()  # required endpoint fields a shot cannot fill


@dataclass
class AutoSpec:
    spec: ModelSpec
    derived: list[Derived]
    warnings: list[str] = field(default_factory=list)


def is_auto(model: Mapping[str, Any]) -> bool:
    return bool(model.get("auto"))


def build_auto_spec(
    model: Mapping[str, Any],
    provider: Mapping[str, Any],
    tier: str,
    overrides: Mapping[str, Any] | None,
    store: SchemaStore,
) -> AutoSpec:
    """The ModelSpec for `model=auto`, derived from the schema(s) of `model.endpoint(s)`."""
    name = str(model.get("name") or "auto")
    if provider.get("endpoint"):  # the preview renders anything: the YAML path handles it
        from .models import build_model_spec

        return AutoSpec(build_model_spec(model, provider, tier, overrides), [])
    tier_block, settings = tier_settings(model, tier, overrides)
    chosen = _endpoints(name, model, settings)
    family = _family(chosen)
    given_durations = tuple(int(d) for d in tier_block.get("durations") or model.get("durations") or ())
    derived: list[Derived] = []
    modes: dict[str, ModeSpec] = {}
    for wanted, endpoint in chosen:
        schema = store.get(endpoint)
        mode = wanted or _mode_of(endpoint, schema)
        if mode in modes:
            raise ConfigError(f"model={name}: {endpoint} and {modes[mode].endpoint} both serve {mode}")
        spec = _mode_spec(name, mode, schema, settings, given_durations, model, family)
        modes[mode] = spec
        derived.append(Derived(spec, schema, _unfilled(schema, spec)))
    variant = model.get("prompt_variant") or family.get("prompt_variant") or "motion"
    fallback = model.get("prompt_fallback") or _FALLBACK.get(variant, ("motion", "kling", "seedance"))
    pricing = dict(model.get("pricing") or {})
    warnings = []
    if not pricing:
        pricing = {"unit": "free"}
        endpoints = ", ".join(dict.fromkeys(m.endpoint for m in modes.values()))
        warnings.append(NO_PRICE.format(endpoints=endpoints))
    min_px = model.get("min_image_px")
    if min_px is None:
        min_px = family.get("min_image_px") or DEFAULT_MIN_IMAGE_PX
    first = next(iter(modes.values()))
    spec = ModelSpec(
        name=name,
        label=f"auto: {', '.join(dict.fromkeys(m.endpoint for m in modes.values()))}",
        prompt_order=tuple(dict.fromkeys((variant, *fallback))),
        durations=first.durations,
        settings=first.settings,
        pricing=pricing,
        modes=modes,
        min_image_px=_min_image_px(name, min_px),
    )
    return AutoSpec(spec, derived, warnings)


# ---------------------------------------------------------------- endpoints and modes


def _endpoints(
    name: str, model: Mapping[str, Any], settings: Mapping[str, Any]
) -> list[tuple[str | None, str]]:
    """[(mode or None when the schema decides, endpoint id)] from `model.endpoints` / `model.endpoint`."""
    out: list[tuple[str | None, str]] = []
    per_mode = dict(model.get("endpoints") or {})
    keys = {v: k for k, v in MODE_KEYS.items()}
    unknown = set(per_mode) - set(keys)
    if unknown:
        raise ConfigError(
            f"model={name}: model.endpoints keys must be t2v, i2v, flf, ref (not {sorted(unknown)})"
        )
    for key, template in per_mode.items():
        if template:
            out.append((keys[key], _endpoint(name, str(template), settings)))
    if model.get("endpoint"):
        out.append((None, _endpoint(name, str(model["endpoint"]), settings)))
    if not out:
        raise ConfigError(
            f"model={name} needs the endpoint to derive from: model.endpoint=<fal endpoint id> "
            "(e.g. model.endpoint=fal-ai/kling-video/v2.6/pro/image-to-video), or "
            "one per mode: model.endpoints.t2v=… model.endpoints.i2v=…"
        )
    return out


def _family(chosen: list[tuple[str | None, str]]) -> dict[str, Any]:
    ids = " ".join(e.lower() for _, e in chosen)
    return next((facts for key, facts in _FAMILIES if key in ids), {})


def _mode_of(endpoint: str, schema: EndpointSchema) -> str:
    """The mode one endpoint serves, from its id, else from its fields. An I2V endpoint that also
    takes an end image serves FLF too (planning.choose_mode uses it for shots with an end frame)."""
    start, end = _find(schema, _START, _START_RE, "string"), _find(schema, _END, _END_RE, "string")
    by_id = next((mode for key, mode in _ID_MODES if key in endpoint.lower()), None)
    if by_id in (I2V, FLF) or (by_id is None and start and start in schema.required):
        return FLF if by_id == FLF or (end and end in schema.required) else I2V
    if by_id == REF or (by_id is None and _ref_field(schema) and set(schema.required) & set(_REFS)):
        return REF
    return T2V


def _mode_spec(
    name: str,
    mode: str,
    schema: EndpointSchema,
    settings: Mapping[str, Any],
    given_durations: tuple[int, ...],
    model: Mapping[str, Any],
    family: Mapping[str, Any],
) -> ModeSpec:
    endpoint = schema.endpoint_id
    fields = derive_fields(schema, mode)
    if "prompt" not in fields:
        raise ConfigError(
            f"model={name}: {endpoint} has no prompt field (has: {', '.join(schema.properties)}); "
            "is it a text/image-to-video endpoint?"
        )
    if mode in (I2V, FLF) and "start_frame" not in fields:
        raise ConfigError(f"model={name}: {endpoint} has no start image field for {mode}")
    if mode == FLF and "end_frame" not in fields:
        raise ConfigError(f"model={name}: {endpoint} has no end image field for {mode}")
    if mode == REF and "character_refs" not in fields:
        raise ConfigError(f"model={name}: {endpoint} has no reference image field for {mode}")
    durations = given_durations or derive_durations(schema, fields.get("duration"))
    if not durations:
        what = "takes no duration" if "duration" not in fields else "publishes no allowed durations"
        raise ConfigError(
            f"model={name}: {endpoint} {what}; pass model.durations=[N] (seconds, the clip "
            "length it renders) so the plan and the clip check know it"
        )
    ref_token = None
    if "character_refs" in fields:
        ref_token = model.get("ref_token") or family.get("ref_token")
    return ModeSpec(
        model=name,
        mode=mode,
        endpoint=endpoint,
        fields=fields,
        durations=durations,
        settings=resolve_settings(schema, fields, settings),
        ref_token=ref_token or None,
    )


# ---------------------------------------------------------------- fields


def derive_fields(schema: EndpointSchema, mode: str) -> dict[str, FieldSpec]:
    """The generic-field → endpoint-field map a model YAML would write for this endpoint and mode."""
    fields: dict[str, FieldSpec] = {}

    def put(generic: str, found: str | None, spec: FieldSpec | None = None) -> None:
        if found:
            fields[generic] = spec or FieldSpec(field=found)

    put("prompt", _find(schema, _PROMPT, None, "string"))
    ref = _ref_field(schema)
    if mode in (I2V, FLF):
        put("start_frame", _find(schema, _START, _START_RE, "string"))
        put("end_frame", _find(schema, _END, _END_RE, "string"))
        if ref and ref[1] == "element":  # Kling 3.0's I2V also takes character elements
            put("character_refs", ref[0], FieldSpec(field=ref[0], shape=ref[1]))
    if mode == REF and ref:
        put("character_refs", ref[0], FieldSpec(field=ref[0], shape=ref[1]))
    duration = _find(schema, _DURATION, None, "string", "integer", "number")
    if duration:
        put("duration", duration, _duration_spec(schema, duration))
    put("aspect_ratio", _find(schema, _ASPECT, None, "string"))
    put("resolution", _find(schema, _RESOLUTION, None, "string"))
    put("audio", _find(schema, _AUDIO, None, "boolean"))
    put("seed", _find(schema, _SEED, None, "integer", "number"))
    put("negative_prompt", _find(schema, _NEGATIVE, None, "string"))
    put("camera_fixed", _find(schema, _CAMERA_FIXED, None, "boolean"))
    return fields


def _types(schema: EndpointSchema, name: str) -> set[str]:
    node = schema.field_schema(name)
    if node is None:
        return set()
    out: set[str] = set()
    for branch in schema._branches(node):
        kind = branch.get("type")
        out.update([kind] if isinstance(kind, str) else kind if isinstance(kind, list) else [])
        for value in branch.get("enum") or ([branch["const"]] if "const" in branch else []):
            out.add(_json_type(value))
    return out - {"null"}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string" if isinstance(value, str) else "object"


def _find(
    schema: EndpointSchema, names: tuple[str, ...], pattern: re.Pattern | None, *types: str
) -> str | None:
    """The first of `names` (then of the properties matching `pattern`) of one of `types`."""
    props = schema.properties
    candidates = [n for n in names if n in props]
    if pattern is not None:
        candidates += [p for p in props if pattern.match(p) and p not in candidates]
    for name in candidates:
        if _types(schema, name) & set(types):
            return name
    return None


def _ref_field(schema: EndpointSchema) -> tuple[str, str | None] | None:
    """The reference-image field and its shape: Kling-style `elements` (one object per character,
    `frontal_image_url` + `reference_image_urls`: shape "element") first, then a list of image URLs."""
    for name in _REFS:
        if name not in schema.properties or "array" not in _types(schema, name):
            continue
        item = schema.field_schema(f"{name}[0]") or {}
        props: dict = {}
        for branch in schema._branches(item):
            props.update(branch.get("properties") or {})
        if "frontal_image_url" in props:
            return name, "element"
        if not props and "string" in _types(schema, f"{name}[0]"):
            return name, None
    return None


def _duration_spec(schema: EndpointSchema, name: str) -> FieldSpec:
    """`"5"` → format "{}", `"5s"` → "{}s", `5` → int, from the allowed values, else the type."""
    for value in schema.allowed_values(name) or []:
        if isinstance(value, str):
            match = _SECONDS.match(value.strip())
            if match:
                return FieldSpec(field=name, format="{}" + (match.group(2) or ""))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            return FieldSpec(field=name, type="int" if isinstance(value, int) else None)
    types = _types(schema, name)
    if "integer" in types:
        return FieldSpec(field=name, type="int")
    if "number" in types:
        return FieldSpec(field=name)
    return FieldSpec(field=name, format="{}")


def derive_durations(schema: EndpointSchema, spec: FieldSpec | None) -> tuple[int, ...]:
    """Whole seconds the duration field allows: its enum (`"auto"` skipped), else its range."""
    if spec is None:
        return ()
    found: set[int] = set()
    for value in schema.allowed_values(spec.field) or []:
        try:
            seconds = float(spec.parse(value)) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            continue
        if not isinstance(value, bool) and seconds.is_integer() and seconds > 0:
            found.add(int(seconds))
    if found:
        return tuple(sorted(found))
    node = schema.field_schema(spec.field) or {}
    for branch in schema._branches(node):
        low, high = branch.get("minimum"), branch.get("maximum")
        if isinstance(low, int | float) and isinstance(high, int | float) and high - low <= 600:
            return tuple(range(max(1, math.ceil(low)), math.floor(high) + 1))
    return ()


def resolve_settings(
    schema: EndpointSchema, fields: Mapping[str, FieldSpec], settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The tier's settings for this endpoint: `resolution: lowest|highest` picked from the allowed
    resolutions (dropped where the endpoint takes none)."""
    out = dict(settings)
    wanted = out.get("resolution")
    if isinstance(wanted, str) and wanted.lower() in ("lowest", "highest"):
        spec = fields.get("resolution")
        ranked = _ranked_resolutions(schema.allowed_values(spec.field) or []) if spec else []
        if ranked:
            out["resolution"] = ranked[0] if wanted.lower() == "lowest" else ranked[-1]
        else:
            out.pop("resolution")
    return out


def _ranked_resolutions(values: list) -> list[str]:
    sized = []
    for value in values:
        try:
            sized.append((min(frame_size(str(value), "16:9")), str(value)))
        except ValueError:
            continue  # "auto" and other names without a size
    return [value for _, value in sorted(sized)]


def _unfilled(schema: EndpointSchema, spec: ModeSpec) -> tuple[str, ...]:
    filled = {f.field for f in spec.fields.values()}
    return tuple(r for r in schema.required if r not in filled)


# ---------------------------------------------------------------- pricing


def pricing_from_unit_price(price: UnitPrice) -> dict[str, Any] | None:
    """A pricing rule (the model YAML format) from fal's unit price, where its unit is plain:
    "second(s)", "N seconds", "video(s)"; None for tokens and units whose meaning is not."""
    match = re.fullmatch(
        r"\s*(\d+(?:\.\d+)?)?\s*(?:video\s+)?(seconds?|s|secs?|videos?|clips?)\s*", price.unit.lower()
    )
    if not match or price.currency.upper() not in ("USD", ""):
        return None
    per = float(match.group(1) or 1)
    unit = "second" if match.group(2).startswith("s") else "video"
    return {"unit": unit, "rates": [{"usd": price.unit_price / per}]}


# ---------------------------------------------------------------- dry run


def format_derived(auto: AutoSpec) -> str:
    """A few lines per endpoint: generic field → endpoint field, with type and allowed values."""
    lines = []
    for item in auto.derived:
        mode, schema = item.mode, item.schema
        serves = "I2V+FLF" if mode.mode == I2V and mode.takes("end_frame") else mode.mode
        lines.append(f"auto {serves} {mode.endpoint} (schema: {schema.source})")
        for generic in sorted(mode.fields, key=lambda g: _ORDER.index(g) if g in _ORDER else 99):
            lines.append(f"  {generic:<16} → {_describe(schema, mode, generic)}")
        missing = [g for g in _ORDER if g not in mode.fields and g not in _MODE_ONLY.get(mode.mode, ())]
        if missing:
            lines.append(f"  {'not taken':<16}   {', '.join(missing)}")
        if item.unfilled:
            lines.append(f"  {'unfilled':<16}   required {', '.join(item.unfilled)} (payload_extra.…)")
        if mode.ref_token:
            lines.append(f"  {'ref token':<16}   {mode.ref_token}")
    return "\n".join(lines)


# Generic fields a mode never sends (no point listing them as "not taken").
_MODE_ONLY = {
    T2V: ("start_frame", "end_frame", "character_refs"),
    I2V: ("character_refs",),
    FLF: ("character_refs",),
    REF: ("start_frame", "end_frame"),
}


def _describe(schema: EndpointSchema, mode: ModeSpec, generic: str) -> str:
    spec = mode.fields[generic]
    types = "|".join(sorted(_types(schema, spec.field))) or "any"
    parts = [spec.field]
    if generic == "duration":
        shown = ", ".join(repr(spec.convert(d)) for d in mode.durations)
        parts.append(f"{types}, {shown}")
    elif spec.shape:  # what planning sends: one element per character
        parts.append(f"{types} of {{frontal_image_url, reference_image_urls}}, one per character")
    else:
        allowed = schema.allowed_values(spec.field)
        parts.append(f"{types}" + (f", {', '.join(map(str, allowed))}" if allowed else ""))
    if spec.field in schema.required:
        parts.append("required")
    if generic in ("resolution", "audio") and mode.settings.get(generic) is not None:
        parts.append(f"tier: {mode.settings[generic]}")
    return f"{parts[0]} ({'; '.join(parts[1:])})"


def auto_model_spec(
    cfg: Any, provider: Mapping[str, Any], settings: Mapping[str, Any], store: SchemaStore
) -> ModelSpec:
    """The hook app.build_plan calls for `model=auto`: derive the spec, print its warnings (stderr)
    and, on a dry run, the derived field map (stdout)."""
    from omegaconf import OmegaConf

    def plain(node: Any) -> dict[str, Any]:
        return OmegaConf.to_container(node, resolve=True) if node is not None else {}  # type: ignore[return-value]

    auto = build_auto_spec(plain(cfg.model), provider, str(cfg.tier.name), settings, store)
    for warning in auto.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if cfg.get("dry_run") and auto.derived:
        print(format_derived(auto))
    return auto.spec
