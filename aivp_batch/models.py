"""Declarative model configs: which endpoint serves each mode, and how generic shot fields map
onto that endpoint's field names and value types.

A model YAML (conf/model/*.yaml) is data only; this module turns it into a `ModeSpec` for one
(provider, tier, mode). Adding a model means adding YAML, not code.

Each hosted provider has its own block in the model YAML, named after it (`fal:`, `replicate:`):
`fields`, `rules`, `modes` (endpoint and field map per mode) and, optionally, `pricing` (its own
rates: it wins over the top-level `pricing`, which is fal's) and `tiers` (per tier, settings and
tier keys merged over the model's own `tiers` block, e.g. a variant spelt differently there).
"""

from __future__ import annotations

import json
import re
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
    # A table from generic values to the endpoint's own (Wan's `size`: "720p 9:16" → "720*1280"),
    # looked up by `key`, a template over the shot's generic values (default: this value alone).
    values: Mapping[str, Any] | None = None
    key: str | None = None

    def convert(self, value: Any, generic: Mapping[str, Any] | None = None) -> Any:
        if self.values is not None:
            key = self.key.format_map(dict(generic or {})) if self.key else str(_plain_number(value))
            if key not in self.values:
                raise ConfigError(f"{self.field} has no value for {key!r}: it takes {', '.join(self.values)}")
            return self.values[key]
        if self.format is not None:
            return self.format.format(_plain_number(value))
        if self.type == "int":
            return int(round(float(value)))
        if self.type == "str":
            return str(value)
        return value

    def parse(self, value: Any, name: str | None = None) -> Any:
        """The generic value an endpoint value stands for: the inverse of `convert`
        ("12" → 12, "8s" → 8 for a duration; "1080p" stays; a `values` table read backwards, `name`
        picking this value out of a composite key). ValueError when it does not fit."""
        if self.values is not None:
            keys = [k for k, v in self.values.items() if v == value]
            if not keys:
                raise ValueError(f"{value!r} is none of {sorted(map(str, self.values.values()))}")
            if not self.key or name is None:
                return keys[0]
            parts = _unformat(self.key, keys[0])
            return parts.get(name, keys[0])
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


def _unformat(template: str, text: str) -> dict[str, str]:
    """`"{resolution} {aspect_ratio}"`, `"720p 9:16"` → {resolution: 720p, aspect_ratio: 9:16}."""
    pattern, pos = "", 0
    for m in re.finditer(r"\{(\w+)\}", template):
        pattern += re.escape(template[pos : m.start()]) + f"(?P<{m.group(1)}>.+?)"
        pos = m.end()
    match = re.fullmatch(pattern + re.escape(template[pos:]), text)
    return match.groupdict() if match else {}


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
        unknown = set(raw) - {"field", "format", "type", "shape", "values", "key"}
        if unknown:
            raise ConfigError(f"field map for '{name}': unknown keys {sorted(unknown)}")
        values = raw.get("values")
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(f"field map for '{name}': values must be a table of value: endpoint value")
        return FieldSpec(
            field=raw["field"],
            format=raw.get("format"),
            type=raw.get("type"),
            shape=raw.get("shape"),
            values=None if values is None else {str(k): v for k, v in values.items()},
            key=raw.get("key"),
        )
    raise ConfigError(f"field map for '{name}' must be a field name or {{field: …}}, got {raw!r}")


@dataclass(frozen=True)
class PayloadRule:
    """A limit that the endpoint's published schema states only in prose, checked by the validator
    before anything is spent. `path` may step through list items with `[*]`:
    `elements[*].reference_image_urls` — each element's reference images; `image_urls` — the list.
    `min_items`/`max_items` bound a list (a missing list counts as empty wherever its parent is in
    the payload); `excludes` names fields that must not be set beside `path` where it is set
    (Kling: `multi_prompt` excludes `prompt`)."""

    path: str
    min_items: int | None = None
    max_items: int | None = None
    message: str = ""
    excludes: tuple[str, ...] = ()

    def locations(self, payload: Mapping[str, Any]) -> list[tuple[str, Any]]:
        """(concrete path, value) of every place the rule applies to in `payload`."""
        leaf = self.path.split(".")[-1]
        return [
            (f"{where}.{leaf}" if where else leaf, node.get(leaf)) for where, node in self._parents(payload)
        ]

    def violations(self, payload: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(concrete path, why) of every place `payload` breaks the rule."""
        leaf = self.path.split(".")[-1]
        out: list[tuple[str, str]] = []
        for where, node in self._parents(payload):
            at, value = (f"{where}.{leaf}" if where else leaf), node.get(leaf)
            if self.min_items is not None or self.max_items is not None:
                if (why := self.check(value)) is not None:
                    out.append((at, why))
            clash = [k for k in self.excludes if value is not None and node.get(k) is not None]
            if clash:
                out.append((at, f"sent together with {', '.join(clash)}"))
        return out

    def _parents(self, payload: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
        """(concrete path, object) of every object that holds the rule's last field."""
        *parents, _leaf = self.path.split(".")
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
        return [(where, node) for where, node in nodes if isinstance(node, Mapping)]

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
        raise ConfigError(
            f"model={name}: rules must be a list of {{path, min_items, max_items, excludes, message}}"
        )
    rules = []
    for item in raw:
        if not isinstance(item, Mapping) or "path" not in item:
            raise ConfigError(f"model={name}: a rule needs a path, got {item!r}")
        unknown = set(item) - {"path", "min_items", "max_items", "excludes", "message"}
        if unknown:
            raise ConfigError(f"model={name}: rule {item['path']!r} has unknown keys {sorted(unknown)}")
        bounds = [item.get("min_items"), item.get("max_items")]
        excludes = item.get("excludes")
        if excludes is not None and (
            isinstance(excludes, (str, bytes))
            or not isinstance(excludes, Sequence)
            or not all(isinstance(k, str) and k for k in excludes)
        ):
            raise ConfigError(f"model={name}: rule {item['path']!r}: excludes must be a list of field names")
        if (all(b is None for b in bounds) and not excludes) or any(
            b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 0) for b in bounds
        ):
            raise ConfigError(
                f"model={name}: rule {item['path']!r} needs min_items and/or max_items as whole numbers ≥ 0"
                " (or excludes: [fields])"
            )
        rules.append(
            PayloadRule(
                path=str(item["path"]),
                min_items=bounds[0],
                max_items=bounds[1],
                message=str(item.get("message") or ""),
                excludes=tuple(excludes or ()),
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
    multishot: MultishotSpec | None = None  # strategy=multishot: None where the model takes no groups

    def mode(self, mode: str) -> ModeSpec | None:
        return self.modes.get(mode)

    def supports_end_frame(self, mode: str) -> bool:
        spec = self.modes.get(mode)
        return spec is not None and spec.takes("end_frame")


@dataclass(frozen=True)
class MultishotLimits:
    """What one multi-shot call allows (the model YAML's `multishot:`): how many shots, the lengths
    one shot may have (the item's duration enum) and the lengths the whole call may have."""

    max_shots: int
    shot_durations: tuple[int, ...]  # sorted
    total_durations: tuple[int, ...]  # sorted

    @property
    def max_total_s(self) -> int:
        return self.total_durations[-1]

    @property
    def min_total_s(self) -> int:
        return self.total_durations[0]


@dataclass(frozen=True)
class MultishotSpec:
    """A model's multi-shot groups for one provider and tier: the limits, the modes (endpoint and
    field map, as `ModeSpec`s) that take a group, and how each shot becomes one item of the
    group's list field (`items_field`, e.g. `multi_prompt`). `items: {encode: json}` sends that
    list as one JSON string (Replicate's Kling takes `multi_prompt` so), not as a list."""

    limits: MultishotLimits
    modes: dict[str, ModeSpec]
    items_field: str
    items: dict[str, FieldSpec]  # generic shot value (prompt, duration, title…) → item field
    items_encode: str | None = None  # None: the list as it is; "json": one JSON string of it

    def encode_items(self, items: list[dict[str, Any]]) -> Any:
        """The group's items as its list field takes them."""
        if self.items_encode == "json":
            return json.dumps(items, ensure_ascii=False, separators=(",", ":"))
        return items


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
    own_endpoint = bool(provider.get("endpoint"))  # a provider with its own single endpoint (the preview)
    pname = str(provider.get("name", "?"))
    if not own_endpoint:
        provider_block(model, pname)  # a model the provider does not serve: one clear line first
    tier_block, settings = tier_settings(model, tier, overrides, provider=None if own_endpoint else pname)
    durations = tuple(int(d) for d in tier_block.get("durations") or model.get("durations") or ())
    order = (model.get("prompt_variant", "motion"), *(model.get("prompt_fallback") or ()))
    if own_endpoint:
        modes = _provider_modes(name, provider, durations, settings)
        pricing: dict[str, Any] = {"unit": "free"}
    else:
        modes = _model_modes(name, model, provider, tier_block, durations, settings)
        pricing = provider_pricing(model, pname)
    multishot = _multishot(name, model, provider, tier_block, modes, settings)
    return ModelSpec(
        name=name,
        label=model.get("label", name),
        prompt_order=tuple(dict.fromkeys(order)),
        durations=durations,
        settings=settings,
        pricing=pricing,
        modes=modes,
        min_image_px=_min_image_px(name, model.get("min_image_px")),
        multishot=multishot,
    )


def tier_settings(
    model: Mapping[str, Any],
    tier: str,
    overrides: Mapping[str, Any] | None = None,
    provider: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A model's block for `tier` and the settings it gives (`overrides` on top). With `provider`,
    that provider's own `tiers.<tier>` block (in the model's provider block) is merged over it, key
    by key: `replicate: {tiers: {hero: {speed: "", resolution: 1080p}}}`."""
    tiers = model.get("tiers") or {}
    if tier not in tiers:
        name = model.get("name", "?")
        raise ConfigError(f"model={name} has no settings for tier={tier} (has: {', '.join(tiers)})")
    tier_block = dict(tiers[tier] or {})
    if provider is not None:
        block = model.get(provider)
        ptiers = block.get("tiers") if isinstance(block, Mapping) else None
        if ptiers is not None and not isinstance(ptiers, Mapping):
            name = model.get("name", "?")
            raise ConfigError(f"model={name}: {provider}.tiers must map tier names to settings")
        tier_block.update(dict((ptiers or {}).get(tier) or {}))
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
    block = provider_block(model, str(provider.get("name", "?")))
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
            # `rules:` beside `modes:` hold for every mode (Kling: prompt and multi_prompt exclude each other)
            rules=parse_rules(name, block.get("rules")) + parse_rules(name, raw.get("rules")),
        )
    return modes


# The provider the top-level `pricing:` of a model YAML prices (it predates per-provider blocks).
TOP_LEVEL_PRICING_PROVIDER = "fal"


def provider_block(model: Mapping[str, Any], provider: str) -> Mapping[str, Any]:
    """The model's block for a hosted `provider` (`fal:`, `replicate:`); a ConfigError of one line
    (bad input, exit 2) naming the models that provider does serve when it has none."""
    block = model.get(provider)
    if isinstance(block, Mapping) and block.get("modes"):
        return block
    name = model.get("name", "?")
    served = [m for m in models_on(provider) if m != name]
    listed = ", ".join(served) if served else "none"
    raise ConfigError(f"model={name} has no {provider} endpoints; models on {provider}: {listed}")


def provider_pricing(model: Mapping[str, Any], provider: str) -> dict[str, Any]:
    """The pricing rule for `model` on `provider`: the provider block's own `pricing`, else the
    top-level `pricing` where that provider is fal (whose rates it has always been). Another
    provider never inherits fal's rates: without its own `pricing` the model cannot be priced, and
    an unpriced run would defeat every budget, so that is a ConfigError."""
    block = model.get(provider)
    own = block.get("pricing") if isinstance(block, Mapping) else None
    if own is not None:
        if not isinstance(own, Mapping):
            raise ConfigError(f"model={model.get('name', '?')}: {provider}.pricing must be a pricing rule")
        return dict(own)
    if provider == TOP_LEVEL_PRICING_PROVIDER:
        return dict(model.get("pricing") or {})
    raise ConfigError(
        f"model={model.get('name', '?')} has no pricing for provider={provider}: add {provider}.pricing "
        "to its model YAML (the top-level pricing is fal's)"
    )


def models_on(provider: str) -> list[str]:
    """Names of the model configs (the user's and the packaged, first of a name wins) that have
    endpoints on `provider`, sorted. Retired and `auto` models are left out."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from .user_conf import PACKAGED_CONF, user_config_dirs

    seen: set[str] = set()
    found: list[str] = []
    for folder in (*user_config_dirs(), PACKAGED_CONF):
        for path in sorted((folder / "model").glob("*.yaml")):
            if path.stem in seen:
                continue
            seen.add(path.stem)
            try:
                data = OmegaConf.to_container(OmegaConf.load(path))
            except (OSError, OmegaConfBaseException):
                continue
            if not isinstance(data, dict) or data.get("retired") or data.get("auto"):
                continue
            block = data.get(provider)
            if isinstance(block, dict) and block.get("modes"):
                found.append(str(data.get("name") or path.stem))
    return sorted(found)


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


# --------------------------------------------------------------------------- multi-shot groups

_MULTISHOT_KEYS = {"max_shots", "shot_durations", "total_durations"}
_MULTISHOT_BLOCK_KEYS = {"items", "fields", "params", "rules", "modes"}


def _multishot(
    name: str,
    model: Mapping[str, Any],
    provider: Mapping[str, Any],
    tier_block: Mapping[str, Any],
    modes: dict[str, ModeSpec],
    settings: dict[str, Any],
) -> MultishotSpec | None:
    """The model's `multishot:` limits with the provider's way of sending a group: a hosted
    provider's `<provider>.multishot` block in the model YAML (its modes inherit the endpoint,
    fields and rules of the same single-shot mode), or, for a provider with its own endpoint (the
    preview), the provider config's `multishot` block over its own modes. None where either is
    missing: the model (or provider) takes no groups."""
    raw_limits = model.get("multishot")
    if not raw_limits:
        return None
    limits = _multishot_limits(name, raw_limits)
    own_endpoint = bool(provider.get("endpoint"))
    block = (
        provider.get("multishot")
        if own_endpoint
        else (model.get(provider.get("name", "?")) or {}).get("multishot")
    )
    if not block:
        return None
    where = f"model={name}: {provider.get('name', '?')}.multishot"
    if unknown := set(block) - _MULTISHOT_BLOCK_KEYS:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}")
    items_field, items, encode = _item_fields(where, block.get("items"))
    params = dict(block.get("params") or {})
    rules = parse_rules(name, block.get("rules"))
    out: dict[str, ModeSpec] = {}
    if own_endpoint:
        for mode in (T2V, I2V):
            base = modes.get(mode)
            if base is not None:
                fields = dict(base.fields)
                for generic, raw_field in dict(block.get("fields") or {}).items():
                    spec = parse_field(raw_field, f"{name}.{generic}")
                    if spec is None:  # `prompt: null`: the group does not send it
                        fields.pop(generic, None)
                    else:
                        fields[generic] = spec
                out[mode] = _with(base, fields, params, rules, limits)
        return MultishotSpec(
            limits=limits, modes=out, items_field=items_field, items=items, items_encode=encode
        )
    pblock = model.get(provider.get("name", "?")) or {}
    for mode, key in MODE_KEYS.items():
        if mode == FLF or key not in (block.get("modes") or {}):
            continue
        raw = dict((block.get("modes") or {}).get(key) or {})
        base = dict((pblock.get("modes") or {}).get(key) or {})
        fields = _merge_fields(
            name,
            pblock.get("fields"),
            base.get("fields"),
            tier_block.get("fields"),
            block.get("fields"),
            raw.get("fields"),
        )
        mode_rules = (
            parse_rules(name, pblock.get("rules"))
            + parse_rules(name, base.get("rules"))
            + rules
            + parse_rules(name, raw.get("rules"))
        )
        out[mode] = ModeSpec(
            model=name,
            mode=mode,
            endpoint=_endpoint(name, raw.get("endpoint") or base.get("endpoint"), settings),
            fields=fields,
            durations=limits.total_durations,
            settings=_rendered(settings, base.get("renders"), raw.get("renders"), tier_block.get("renders")),
            ref_token=raw.get("ref_token", base.get("ref_token")),
            params={**params, **dict(raw.get("params") or {})},
            rules=mode_rules,
        )
    if not out:
        raise ConfigError(f"{where} names no modes (t2v, i2v, ref)")
    return MultishotSpec(limits=limits, modes=out, items_field=items_field, items=items, items_encode=encode)


def _with(
    base: ModeSpec,
    fields: dict[str, FieldSpec],
    params: dict[str, Any],
    rules: tuple[PayloadRule, ...],
    limits: MultishotLimits,
) -> ModeSpec:
    return ModeSpec(
        model=base.model,
        mode=base.mode,
        endpoint=base.endpoint,
        fields=fields,
        durations=limits.total_durations,
        settings=base.settings,
        ref_token=base.ref_token,
        params={**base.params, **params},
        rules=base.rules + rules,
    )


def _multishot_limits(name: str, raw: Any) -> MultishotLimits:
    where = f"model={name}: multishot"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping of {sorted(_MULTISHOT_KEYS)}")
    if unknown := set(raw) - _MULTISHOT_KEYS:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}")
    max_shots = raw.get("max_shots")
    if isinstance(max_shots, bool) or not isinstance(max_shots, int) or max_shots < 2:
        raise ConfigError(f"{where}.max_shots must be a whole number ≥ 2, not {max_shots!r}")
    lists = {}
    for key in ("shot_durations", "total_durations"):
        value = raw.get(key)
        if (
            isinstance(value, (str, bytes))
            or not isinstance(value, Sequence)
            or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            raise ConfigError(f"{where}.{key} must be a list of whole seconds > 0, not {value!r}")
        lists[key] = tuple(sorted(set(value)))
    return MultishotLimits(max_shots=max_shots, **lists)


# How `items.encode` may send the list: "json" as one JSON string.
ITEM_ENCODINGS = ("json",)


def _item_fields(where: str, raw: Any) -> tuple[str, dict[str, FieldSpec], str | None]:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("field"), str):
        raise ConfigError(f"{where}.items must be {{field: <list field>, prompt: …, duration: …}}")
    encode = raw.get("encode")
    if encode is not None and encode not in ITEM_ENCODINGS:
        raise ConfigError(
            f"{where}.items.encode must be one of {', '.join(ITEM_ENCODINGS)} "
            f"(or absent: a list), not {encode!r}"
        )
    items = {}
    for generic, value in raw.items():
        if generic in ("field", "encode"):
            continue
        spec = parse_field(value, f"{where}.items.{generic}")
        if spec is not None:
            items[generic] = spec
    if "prompt" not in items or "duration" not in items:
        raise ConfigError(f"{where}.items must map prompt and duration")
    return raw["field"], items, encode
