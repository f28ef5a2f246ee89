"""What a render cost: the provider's billable units × its unit price, and when our own estimate
disagrees with it.

fal reports the units on the result (`x-fal-billable-units`: the output's real size, e.g. 5.04 s)
and publishes one unit price per endpoint (`/v1/models/pricing`). The product is what was billed;
the model config's pricing rule stays the estimate used for planning and the budget.
"""

from __future__ import annotations

from .providers.base import UnitPrice


def billed_cost(units: float | None, price: UnitPrice | None) -> float | None:
    """units × unit price in USD, or None when either is unknown (or the price is not in USD)."""
    if units is None or price is None or price.currency.upper() not in ("USD", ""):
        return None
    return round(units * price.unit_price, 6)


def drift_warning(
    endpoint: str,
    estimate_usd: float,
    billed_usd: float,
    units: float | None,
    price: UnitPrice | None,
    tolerance: float,
) -> str | None:
    """One line when the bill and the model config's estimate differ by more than `tolerance`."""
    if estimate_usd <= 0 or price is None or abs(billed_usd - estimate_usd) <= tolerance * estimate_usd:
        return None
    unit = f" {price.unit}" if price.unit else ""
    return (
        f"{endpoint}: fal billed ${billed_usd:.4f} ({units:g}{unit} × ${price.unit_price:g}) where the "
        f"model config estimates ${estimate_usd:.4f}: the config's rate may be stale, or fal's "
        "pricing API off; costs are recorded as billed"
    )
