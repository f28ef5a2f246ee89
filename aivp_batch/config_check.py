"""The composed config, checked before anything runs: each run knob's type and range, the names of
top-level keys and `settings.*`, and whether the output and store folders can be written. Every
problem is one line naming its key (`seed=abc: …`), raised together as one `ConfigError` (exit 2),
so a bad value never reaches an `int()` halfway through a run or a request that costs money.

Hydra checks none of this: the run knobs are untyped, `+settings.audo=false` adds a key silently.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError
from .models import _TIER_RESERVED as TIER_RESERVED  # keys of a model's tier block that are not settings
from .user_conf import PACKAGED_CONF, shadowing_primary, user_config_dirs

PRIMARY_CONFIG = PACKAGED_CONF / "config.yaml"
GROUPS = ("provider", "model", "tier", "manifest", "experiment")

Check = Callable[[Any], str | None]  # a value → what is wrong with it, or None


# --------------------------------------------------------------------------- public API


def check_config(cfg: DictConfig) -> list[str]:
    """Raise `ConfigError` (one line per problem, each naming its key) when a value of the composed
    config is of the wrong type, out of range or an unknown name. Returns warnings: settings the
    chosen model does not use."""
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        raise ConfigError(f"{key}: {_first_line(exc)}") from None
    assert isinstance(data, dict)
    problems = [*_unknown_keys(data), *_value_problems(data)]
    settings = data.get("settings")
    warnings: list[str] = []
    if isinstance(settings, Mapping):
        problems += _setting_problems(settings, data.get("model"))
        warnings = _unused_settings(settings, data.get("model"), data.get("provider"))
    if problems:
        raise ConfigError("\n".join(problems))
    return warnings


def check_writable_dir(path: Path, label: str, *, create: bool, subdirs: tuple[str, ...] = ()) -> None:
    """`label` (e.g. `output_dir=out`) must be a folder this process can write in. With `create`
    (a real run) it is made and a probe file written and removed there and in those of `subdirs`
    that exist; without (a dry run writes nothing there) the nearest existing folder is checked."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{label}: {path} is a file, not a directory")
    if not create:
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise ConfigError(f"{label}: {existing} is a file, so {path} cannot be created")
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{label}: {existing} is not writable")
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{label}: {path} cannot be created ({_os_reason(exc)})") from None
    for folder in (path, *(path / name for name in subdirs if (path / name).is_dir())):
        try:
            fd, probe = tempfile.mkstemp(prefix=".aivp-write-check-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise ConfigError(f"{label}: cannot write in {folder} ({_os_reason(exc)})") from None


@functools.cache
def declared() -> tuple[frozenset[str], frozenset[str]]:
    """(the packaged primary config's top-level keys, its declared `settings` names)."""
    primary = OmegaConf.load(PRIMARY_CONFIG)
    settings = primary.get("settings") or {}
    return frozenset(k for k in primary if k != "defaults"), frozenset(settings)


def model_settings(model: Any) -> frozenset[str]:
    """The setting names a model config's tier blocks use."""
    tiers = model.get("tiers") if isinstance(model, Mapping) else None
    if not isinstance(tiers, Mapping):
        return frozenset()
    return frozenset(
        name
        for block in tiers.values()
        if isinstance(block, Mapping)
        for name in block
        if name not in TIER_RESERVED
    )


# --------------------------------------------------------------------------- the rules


def _show(value: Any) -> str:
    """A value as it is written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def number(
    minimum: float = 0.0, *, above: bool = False, null: str | None = None, what: str = "a number of seconds"
) -> Check:
    """A finite number ≥ `minimum` (> with `above`); `null` says what null means (None: not allowed)."""
    expect = f"{what} {'>' if above else '≥'} {minimum:g}" + (f", or null {null}" if null else "")

    def check(value: Any) -> str | None:
        if value is None:
            return None if null else f"must be {expect}"
        fits = _is_number(value) and (value > minimum if above else value >= minimum)
        return None if fits else f"must be {expect}"

    return check


def whole(minimum: int = 0, *, null: str | None = None, what: str = "a whole number") -> Check:
    expect = f"{what} ≥ {minimum}" + (f", or null {null}" if null else "")

    def check(value: Any) -> str | None:
        if value is None:
            return None if null else f"must be {expect}"
        if isinstance(value, str) and value.strip().isdigit():  # `seed='42'`
            value = int(value)
        fits = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        return None if fits else f"must be {expect}"

    return check


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def path(null: str | None = None) -> Check:
    expect = "a path" + (f", or null {null}" if null else "")

    def check(value: Any) -> str | None:
        if (value is None and null) or (isinstance(value, str) and value.strip()):
            return None
        if _is_number(value):
            return f"must be a path; quote one that looks like a number ('{_show(value)}')"
        return f"must be {expect}"

    return check


def mapping(value: Any) -> str | None:
    return None if isinstance(value, Mapping) else "must be a mapping of names to values"


def shot_list(*, empty_ok: bool) -> Check:
    def one(item: Any) -> bool:
        return isinstance(item, int | float | str) and not isinstance(item, bool) and str(item).strip() != ""

    def check(value: Any) -> str | None:
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        if not all(one(item) for item in items):
            return "each shot is a number (2), a file stem (shot-02) or a Shot ID (1.2)"
        if not items and not empty_ok:
            return "selects no shot; leave shots out (or shots=null) to render all"
        return None

    return check


RULES: dict[str, Check] = {
    "project_dir": path("for no project (manifest=prompt)"),
    "output_dir": path("for <project_dir>/video"),
    "store_dir": path("for the default store"),
    "lock_wait_s": number(
        null="to wait as long as it takes",
    ),
    "rerender": shot_list(empty_ok=True),
    "seed": whole(null="for a random seed per job"),
    "dry_run": boolean,
    "shots": shot_list(empty_ok=False),
    "duration_policy": one_of("raise", "strict"),
    "strategy": one_of("single", "multishot"),
    "character_refs": boolean,
    "budget_usd": number(null="for no budget", what="an amount in US dollars"),
    "settings": mapping,
    "payload_extra": mapping,
    "offline": boolean,
    "max_prompt_chars": whole(1, what="a number of characters"),
    "resubmit_unknown": boolean,
    "price_drift": number(what="a fraction (0.05 is 5 %)"),
    "log_interval_s": number(what="a number of seconds"),
    "schema_cache_dir": path(),
    "schema_ttl_s": number(),
    "provider.max_in_flight": whole(1, what="a number of concurrent requests"),
    "provider.poll_interval": number(
        above=True,
    ),
    "provider.start_timeout": number(
        above=True,
        null="for no deadline",
    ),
    "provider.client_timeout": number(
        above=True,
        null="for no timeout",
    ),
    "provider.use_stream": boolean,
    "provider.upload_ttl_s": number(),
    "provider.price_ttl_s": number(),
    "provider.retry.attempts": whole(1, what="a number of attempts"),
    "provider.retry.base_s": number(),
    "provider.retry.max_s": number(),
    "provider.reconcile.wait_s": number(),
    "provider.reconcile.margin_s": number(),
    "provider.reconcile.skew_s": number(),
    "provider.latency_s": number(),
    "provider.base_url": lambda v: (
        None if isinstance(v, str) and v.startswith(("http://", "https://")) else "must be an http(s) URL"
    ),
    "provider.poll_max_s": number(above=True),
    "provider.cancel_after": number(5, null="for no deadline"),
    "provider.data_url_max_bytes": whole(0, what="a number of bytes"),
    "provider.retry.max_retry_after_s": number(),
    "provider.retry.kinds": mapping,
    "provider.fps": whole(1, what="frames per second"),
}
SETTING_RULES: dict[str, Check] = {"audio": lambda v: None if v is None else boolean(v)}


def _lookup(data: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _value_problems(data: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, check in RULES.items():
        present, value = _lookup(data, key)
        if present and (problem := check(value)):
            problems.append(f"{key}={_show(value)}: {problem}")
    return problems


def _unknown_keys(data: Mapping[str, Any]) -> list[str]:
    if shadowing_primary():  # the user's own config.yaml declares its own keys
        return []
    known = declared()[0] | set(GROUPS)
    return [unknown_key(key) for key in data if key not in known and key != "hydra"]


def _setting_problems(settings: Mapping[str, Any], model: Any) -> list[str]:
    known = declared()[1] | model_settings(model)
    problems = []
    for name, value in settings.items():
        if name not in known:
            problems.append(unknown_setting(name, known))
        elif (check := SETTING_RULES.get(name)) and (problem := check(value)):
            problems.append(f"settings.{name}={_show(value)}: {problem}")
    return problems


def _unused_settings(settings: Mapping[str, Any], model: Any, provider: Any) -> list[str]:
    """Settings given a value that the chosen model (on this provider) never reads."""
    if not isinstance(model, Mapping) or not isinstance(provider, Mapping) or model.get("auto"):
        return []  # model=auto derives its fields from the endpoint's schema: only it knows
    if provider.get("endpoint"):  # a provider with its own fields and no price (the preview)
        used = set(provider.get("fields") or {})
    else:
        used = set(model_settings(model))  # tier keys feed endpoint templates and prices too
        block = model.get(str(provider.get("name"))) or {}
        used |= set(block.get("fields") or {})
        for mode in (block.get("modes") or {}).values():
            used |= set((mode or {}).get("fields") or {})
        for tier in (block.get("tiers") or {}).values():  # a provider's own spelling of a tier
            used |= set(tier or {})
        pricing = block.get("pricing") or model.get("pricing") or {}  # the provider's own rates win
        for rate in pricing.get("rates") or ():
            used |= set((rate or {}).get("when") or {})
    model_name, provider_name = model.get("name", "?"), provider.get("name", "?")
    return [
        f"settings.{name}={_show(value)} is not used by model={model_name} on provider={provider_name}"
        for name, value in settings.items()
        if value is not None and name not in used
    ]


def unknown_setting(name: str, known: set[str] | frozenset[str] | None = None) -> str:
    known = declared()[1] if known is None else known
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f", did you mean settings.{close[0]}?" if close else ""
    return f"settings.{name}: unknown setting{hint} (known: {', '.join(sorted(known))})"


def unknown_key(key: str) -> str:
    """`sed: unknown key, did you mean seed?` for a top-level key; for a key inside a group
    (`provider.max_inflight`, `manifest.prompt` without manifest=prompt) where to look."""
    head, _, last = key.rpartition(".")
    if head:
        group = head.split(".")[0]
        where = f"the chosen {group}" if group in GROUPS else head
        return f"{key}: {where} has no such key (--cfg job lists them; +{key}=… adds one)"
    return f"{key}: unknown key{_did_you_mean(last, declared()[0] | set(GROUPS))}"


def _did_you_mean(name: str, known: set[str] | frozenset[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f", did you mean {close[0]}?" if close else ""


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def models_allowing(seconds: float) -> list[tuple[str, int]]:
    """(model, longest duration) of each model config (the user's and the packaged, first of a name
    wins) whose durations reach `seconds`, longest first. Retired and `auto` models are left out."""
    found: dict[str, int] = {}
    for folder in (*user_config_dirs(), PACKAGED_CONF):
        for path in sorted((folder / "model").glob("*.yaml")):
            if path.stem in found:
                continue
            try:
                model = OmegaConf.to_container(OmegaConf.load(path))
            except (OSError, OmegaConfBaseException):
                continue
            if not isinstance(model, dict) or model.get("retired") or model.get("auto"):
                continue
            durations = [d for d in model.get("durations") or () if _is_number(d)]
            if durations and max(durations) >= seconds:
                found[path.stem] = int(max(durations))
    return sorted(found.items(), key=lambda item: (-item[1], item[0]))
