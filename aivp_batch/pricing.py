"""Cost estimates from a model's declarative pricing rule.

Rules (conf/model/*.yaml `pricing`):
  unit: second  rates: [{when: {...}, usd: 0.14}, {usd: 0.07}]           $/s
  unit: token   fps: 24  rates: [{when: {...}, usd_per_million: 2.4}]     tokens = h×w×fps×s/1024
  unit: video   rates: [{usd: 0.5}]                                        per clip
  unit: free
The first rate whose `when` matches wins. `when` keys compare with the job's settings (audio,
resolution, tier variables); `endpoint` and `mode` match as substrings of the endpoint id / mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ConfigError
from .media import frame_size


def estimate_usd(
    rule: Mapping[str, Any],
    *,
    duration_s: float,
    settings: Mapping[str, Any],
    endpoint: str = "",
    mode: str = "",
    aspect_ratio: str | None = None,
) -> float:
    """Estimated cost of one clip, in USD, rounded to 1/10000 of a dollar."""
    unit = rule.get("unit", "free")
    if unit == "free":
        return 0.0
    context = {**settings, "endpoint": endpoint, "mode": mode}
    rate = _first_match(rule.get("rates") or [], context)
    if unit == "second":
        return round(float(rate["usd"]) * duration_s, 4)
    if unit == "video":
        return round(float(rate["usd"]), 4)
    if unit == "token":
        try:
            width, height = frame_size(settings.get("resolution") or "720p", aspect_ratio or "16:9")
        except ValueError as exc:
            raise ConfigError(f"pricing: {exc}") from None
        tokens = width * height * float(rule.get("fps", 24)) * duration_s / 1024
        return round(tokens / 1e6 * float(rate["usd_per_million"]), 4)
    raise ConfigError(f"pricing unit {unit!r} is not one of second, token, video, free")


def priced_keys(rule: Mapping[str, Any]) -> set[str]:
    """The generic values an estimate under `rule` depends on: the clip's duration, resolution
    and aspect ratio (token pricing) and every key a rate's `when` compares."""
    keys = {"duration", "resolution", "aspect_ratio"}
    for rate in rule.get("rates") or []:
        keys.update(str(k) for k in (rate.get("when") or {}))
    return keys - {"endpoint", "mode"}


def _first_match(rates: list[Mapping[str, Any]], context: Mapping[str, Any]) -> Mapping[str, Any]:
    for rate in rates:
        if all(_matches(key, want, context.get(key)) for key, want in (rate.get("when") or {}).items()):
            return rate
    raise ConfigError(f"no pricing rate matches {dict(context)}")


def _matches(key: str, want: Any, have: Any) -> bool:
    if key in ("endpoint", "mode"):
        return str(want) in str(have or "")
    if isinstance(want, str) and isinstance(have, str):
        return want.lower() == have.lower()
    return want == have
