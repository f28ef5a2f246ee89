"""Declarative model configs: which endpoint serves each mode, and how generic shot fields map
onto that endpoint's field names and value types.

A model YAML (conf/model/*.yaml) is data only; this module turns it into a `ModeSpec` for one
(provider, tier, mode). Adding a model means adding YAML, not code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

# Modes, as shown in plan.md and logs.
T2V, I2V, FLF, REF = "T2V", "I2V", "FLF", "REF"
MODE_KEYS = {T2V: "t2v", I2V: "i2v", FLF: "flf", REF: "ref"}

# Keys of a tier block that are not settings.
_TIER_RESERVED = {"fields", "durations"}
# The smallest side of an input image where neither the endpoint's schema nor the model YAML
# (`min_image_px`) says otherwise: a few pixels are no keyframe, and fal would bill the render.
DEFAULT_MIN_IMAGE_PX = 64


@dataclass(frozen=True)
class FieldSpec:
    """How one generic value becomes one endpoint field."""

    field: str
    format: str | None = None  # e.g. "{}" → "5", "{}s" → "5s"
    type: str | None = None  # "int" | "str" | None (as-is)
    shape: str | None = None  # for character refs: "frontal_image" → [{"frontal_image_url": url}]

    def convert(self, value: Any) -> Any:
        if self.format is not None:
            return self.format.format(_plain_number(value))
        if self.type == "int":
            return int(round(float(value)))
        if self.type == "str":
            return str(value)
        return value

    def parse(self, value: Any) -> Any:
        """The generic value an endpoint value stands for: the inverse of `convert`
        ("12" → 12, "8s" → 8 for a duration; "1080p" stays). ValueError when it does not fit."""
        if self.format is not None and isinstance(value, str):
            head, sep, tail = self.format.partition("{}")
            if not sep or not value.startswith(head) or not value.endswith(tail):
                raise ValueError(f"{value!r} does not read as {self.format!r}")
            value = value[len(head) : len(value) - len(tail)]
            try:
                return _plain_number(float(value))
            except ValueError:
                return value
        if self.type == "int":
            return int(round(float(value)))
        return value


def _plain_number(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def parse_field(raw: Any, name: str) -> FieldSpec | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return FieldSpec(field=raw)
    if isinstance(raw, Mapping) and "field" in raw:
        unknown = set(raw) - {"field", "format", "type", "shape"}
        if unknown:
            raise ConfigError(f"field map for '{name}': unknown keys {sorted(unknown)}")
        return FieldSpec(
            field=raw["field"], format=raw.get("format"), type=raw.get("type"), shape=raw.get("shape")
        )
    raise ConfigError(f"field map for '{name}' must be a field name or {{field: …}}, got {raw!r}")


@dataclass(frozen=True)
class ModeSpec:
    """Everything needed to build one mode's payload for one model, provider and tier."""

    model: str
    mode: str
    endpoint: str
    fields: dict[str, FieldSpec]
    durations: tuple[int, ...]
    settings: dict[str, Any]
    ref_token: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # fixed extra fields (provider-level)

    def takes(self, generic: str) -> bool:
        return generic in self.fields


@dataclass(frozen=True)
class ModelSpec:
    """A model config for one provider and tier."""

    name: str
    label: str
    prompt_order: tuple[str, ...]
    durations: tuple[int, ...]
    settings: dict[str, Any]
    pricing: dict[str, Any]
    modes: dict[str, ModeSpec]
    min_image_px: int = DEFAULT_MIN_IMAGE_PX  # input images' smallest side, where x-fal gives none

    def mode(self, mode: str) -> ModeSpec | None:
        return self.modes.get(mode)

    def supports_end_frame(self, mode: str) -> bool:
        spec = self.modes.get(mode)
        return spec is not None and spec.takes("end_frame")


def build_model_spec(
    model: Mapping[str, Any],
    provider: Mapping[str, Any],
    tier: str,
    overrides: Mapping[str, Any] | None = None,
) -> ModelSpec:
    """Resolve a model config for a provider and tier (settings overridden by `overrides`)."""
    name = model.get("name", "?")
    tiers = model.get("tiers") or {}
    if tier not in tiers:
        raise ConfigError(f"model={name} has no settings for tier={tier} (has: {', '.join(tiers)})")
    tier_block = dict(tiers[tier] or {})
    settings = {k: v for k, v in tier_block.items() if k not in _TIER_RESERVED}
    settings.update(dict(overrides or {}))
    durations = tuple(int(d) for d in tier_block.get("durations") or model.get("durations") or ())
    order = (model.get("prompt_variant", "motion"), *(model.get("prompt_fallback") or ()))
    pricing = dict(model.get("pricing") or {})
    if provider.get("endpoint"):  # a provider with its own single endpoint (the preview)
        modes = _provider_modes(name, provider, durations, settings)
        pricing = {"unit": "free"}
    else:
        modes = _model_modes(name, model, provider, tier_block, durations, settings)
    return ModelSpec(
        name=name,
        label=model.get("label", name),
        prompt_order=tuple(dict.fromkeys(order)),
        durations=durations,
        settings=settings,
        pricing=pricing,
        modes=modes,
        min_image_px=_min_image_px(name, model.get("min_image_px")),
    )


def _min_image_px(name: str, raw: Any) -> int:
    if raw is None:
        return DEFAULT_MIN_IMAGE_PX
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise ConfigError(f"model={name}: min_image_px must be a whole number of pixels ≥ 1, not {raw!r}")
    return raw


def _model_modes(
    name: str,
    model: Mapping[str, Any],
    provider: Mapping[str, Any],
    tier_block: Mapping,
    durations: tuple[int, ...],
    settings: dict[str, Any],
) -> dict[str, ModeSpec]:
    pname = provider.get("name", "?")
    block = model.get(pname)
    if not block or not block.get("modes"):
        raise ConfigError(f"model={name} has no endpoints for provider={pname}")
    modes: dict[str, ModeSpec] = {}
    for mode, key in MODE_KEYS.items():
        raw = block["modes"].get(key)
        if raw is None:
            continue
        fields = _merge_fields(name, block.get("fields"), raw.get("fields"), tier_block.get("fields"))
        endpoint = _endpoint(name, raw.get("endpoint"), settings)
        mode_durations = tuple(int(d) for d in raw.get("durations") or durations)
        modes[mode] = ModeSpec(
            model=name,
            mode=mode,
            endpoint=endpoint,
            fields=fields,
            durations=mode_durations,
            settings=settings,
            ref_token=raw.get("ref_token"),
        )
    return modes


def _provider_modes(
    name: str, provider: Mapping[str, Any], durations: tuple[int, ...], settings: dict[str, Any]
) -> dict[str, ModeSpec]:
    fields = _merge_fields(name, provider.get("fields"))
    params = dict(provider.get("params") or {})
    return {
        mode: ModeSpec(
            model=name,
            mode=mode,
            endpoint=provider["endpoint"],
            fields=fields,
            durations=durations,
            settings=settings,
            params=params,
        )
        for mode in (T2V, I2V, FLF)
    }


def _merge_fields(name: str, *layers: Mapping[str, Any] | None) -> dict[str, FieldSpec]:
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(dict(layer or {}))
    out = {}
    for generic, raw in merged.items():
        spec = parse_field(raw, f"{name}.{generic}")
        if spec is not None:
            out[generic] = spec
    return out


def _endpoint(name: str, template: str | None, settings: Mapping[str, Any]) -> str:
    if not template:
        raise ConfigError(f"model={name}: a mode has no endpoint")
    try:
        return template.format(**settings)
    except KeyError as exc:
        raise ConfigError(f"model={name}: endpoint {template!r} needs tier setting {exc}") from None
