"""Declarative model configs: which endpoint serves each mode, and how generic shot fields map
onto that endpoint's field names and value types.

A model YAML (conf/model/*.yaml) is data only; this module turns it into a `ModeSpec` for one
(provider, tier, mode). Adding a model means adding YAML, not code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

# Modes, as shown in plan.md and logs.
T2V, I2V, FLF, REF = "T2V", "I2V", "FLF", "REF"
MODE_KEYS = {T2V: "t2v", I2V: "i2v", FLF: "flf", REF: "ref"}

# Keys of a tier block that are not settings.
_TIER_RESERVED = {"fields", "durations", "renders"}
# The smallest side of an input image where neither the endpoint's schema nor the model YAML
# (`min_image_px`) says otherwise: a few pixels are no keyframe, and fal would bill the render.
DEFAULT_MIN_IMAGE_PX = 64


@dataclass(frozen=True)
class FieldSpec:
    """How one generic value becomes one endpoint field."""

    field: str
    format: str | None = None  # e.g. "{}" → "5", "{}s" → "5s"
    type: str | None = None  # "int" | "str" | None (as-is)
    # For character refs: "element" → one {frontal_image_url, reference_image_urls} per character
    # (Kling elements; "frontal_image" is the old name of the same shape); None → one URL per file.
    shape: str | None = None

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
class PayloadRule:
    """A limit on a list field that the endpoint's published schema states only in prose, checked
    by the validator before anything is spent. `path` may step through list items with `[*]`:
    `elements[*].reference_image_urls` — each element's reference images; `image_urls` — the list.
    A missing list counts as empty wherever its parent is in the payload."""

    path: str
    min_items: int | None = None
    max_items: int | None = None
    message: str = ""

    def locations(self, payload: Mapping[str, Any]) -> list[tuple[str, Any]]:
        """(concrete path, value) of every place the rule applies to in `payload`."""
        *parents, leaf = self.path.split(".")
        nodes: list[tuple[str, Any]] = [("", payload)]
        for part in parents:
            name, wildcard = (part[:-3], True) if part.endswith("[*]") else (part, False)
            nxt: list[tuple[str, Any]] = []
            for where, node in nodes:
                value = node.get(name) if isinstance(node, Mapping) else None
                if value is None:
                    continue
                prefix = f"{where}.{name}" if where else name
                if wildcard and isinstance(value, list):
                    nxt.extend((f"{prefix}[{i}]", item) for i, item in enumerate(value))
                elif not wildcard:
                    nxt.append((prefix, value))
            nodes = nxt
        return [
            (f"{where}.{leaf}" if where else leaf, node.get(leaf))
            for where, node in nodes
            if isinstance(node, Mapping)
        ]

    def check(self, value: Any) -> str | None:
        """Why `value` breaks the rule (None: it does not)."""
        count = len(value) if isinstance(value, list) else 0
        low = self.min_items if self.min_items is not None else 0
        high = self.max_items
        if count >= low and (high is None or count <= high):
            return None
        bounds = f"{low}–{high}" if high is not None else f"at least {low}"
        if low == high:
            bounds = str(low)
        return f"{count} item{'s' if count != 1 else ''}, needs {bounds}"


def parse_rules(name: str, raw: Any) -> tuple[PayloadRule, ...]:
    if not raw:
        return ()
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
        raise ConfigError(f"model={name}: rules must be a list of {{path, min_items, max_items, message}}")
    rules = []
    for item in raw:
        if not isinstance(item, Mapping) or "path" not in item:
            raise ConfigError(f"model={name}: a rule needs a path, got {item!r}")
        unknown = set(item) - {"path", "min_items", "max_items", "message"}
        if unknown:
            raise ConfigError(f"model={name}: rule {item['path']!r} has unknown keys {sorted(unknown)}")
        bounds = [item.get("min_items"), item.get("max_items")]
        if all(b is None for b in bounds) or any(
            b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 0) for b in bounds
        ):
            raise ConfigError(
                f"model={name}: rule {item['path']!r} needs min_items and/or max_items as whole numbers ≥ 0"
            )
        rules.append(
            PayloadRule(
                path=str(item["path"]),
                min_items=bounds[0],
                max_items=bounds[1],
                message=str(item.get("message") or ""),
            )
        )
    return tuple(rules)


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
    rules: tuple[PayloadRule, ...] = ()  # list limits the schema states only in prose

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
    """Resolve a model config for a provider and tier (settings overridden by `overrides`).
    A model marked `retired: "<why, and what to use instead>"` is refused, as bad input."""
    name = model.get("name", "?")
    if model.get("retired"):
        raise ConfigError(f"model={name} is retired: {model['retired']}")
    tier_block, settings = tier_settings(model, tier, overrides)
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


def tier_settings(
    model: Mapping[str, Any], tier: str, overrides: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A model's block for `tier` and the settings it gives (`overrides` on top)."""
    tiers = model.get("tiers") or {}
    if tier not in tiers:
        name = model.get("name", "?")
        raise ConfigError(f"model={name} has no settings for tier={tier} (has: {', '.join(tiers)})")
    tier_block = dict(tiers[tier] or {})
    settings = {k: v for k, v in tier_block.items() if k not in _TIER_RESERVED}
    settings.update(dict(overrides or {}))
    return tier_block, settings


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
            settings=_rendered(settings, raw.get("renders"), tier_block.get("renders")),
            ref_token=raw.get("ref_token"),
            rules=parse_rules(name, raw.get("rules")),
        )
    return modes


def _rendered(settings: dict[str, Any], *layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings a mode really renders at: a mode (or tier) whose endpoint takes no field for a
    setting declares what it renders instead (`renders: {resolution: 768P}`), so the estimate and
    the log say what fal makes, not what the tier asked for."""
    fixed: dict[str, Any] = {}
    for layer in layers:
        fixed.update(dict(layer or {}))
    return {**settings, **fixed} if fixed else settings


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
