"""What a render cost: the provider's billable units × its unit price, and when our own estimate
disagrees with it.

fal reports the units on the result (`x-fal-billable-units`: the output's real size, e.g. 5.04 s)
and publishes one unit price per endpoint (`/v1/models/pricing`). The product is what was billed;
the model config's pricing rule stays the estimate used for planning and the budget.
"""

from __future__ import annotations

import re

from .providers.base import UnitPrice


def billed_cost(units: float | None, price: UnitPrice | None) -> float | None:
    """units × unit price in USD, or None when either is unknown (or the price is not in USD)."""
    if units is None or price is None or price.currency.upper() not in ("USD", ""):
        return None
    return round(units * price.unit_price, 6)


def expected_units(unit: str, duration_s: float) -> float | None:
    """How many of fal's billing units a clip of `duration_s` should cost, for the units whose
    meaning is plain ("seconds", "5 seconds", "videos"); None for the rest (tokens, "units", "")."""
    match = re.fullmatch(
        r"\s*(\d+(?:\.\d+)?)?\s*(?:video\s+)?(seconds?|s|secs?|videos?|clips?)\s*", unit.lower()
    )
    if not match:
        return None
    per = float(match.group(1) or 1)
    return duration_s / per if match.group(2).startswith("s") else 1.0 / per


def drift_warning(
    endpoint: str,
    estimate_usd: float,
    fal_usd: float,
    units: float | None,
    price: UnitPrice | None,
    tolerance: float,
    billed: bool = True,
) -> str | None:
    """One line when fal's figure (its bill, or its price × the expected units) and the model
    config's estimate differ by more than `tolerance`."""
    if estimate_usd <= 0 or price is None or abs(fal_usd - estimate_usd) <= tolerance * estimate_usd:
        return None
    unit = f" {price.unit}" if price.unit else ""
    said = "fal billed" if billed else "fal's unit price gives"
    return (
        f"{endpoint}: {said} ${fal_usd:.4f} ({units:g}{unit} × ${price.unit_price:g}) where the "
        f"model config estimates ${estimate_usd:.4f}: the config's rate may be stale, or fal's "
        "pricing API off; costs are recorded as billed"
    )
