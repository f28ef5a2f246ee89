"""Billed cost = the provider's units × its unit price; drift against the model config's estimate."""

from __future__ import annotations

import pytest

from aivp_batch.billing import billed_cost, drift_warning, expected_units
from aivp_batch.providers.base import UnitPrice


def test_billed_cost_is_units_times_price() -> None:
    assert billed_cost(5.04, UnitPrice(0.07, "seconds")) == pytest.approx(0.3528)
    assert billed_cost(None, UnitPrice(0.07, "seconds")) is None
    assert billed_cost(5, None) is None
    assert billed_cost(5, UnitPrice(0.07, "seconds", "EUR")) is None  # never mix currencies


def test_drift_is_reported_beyond_the_tolerance_with_both_figures() -> None:
    price = UnitPrice(0.1, "seconds")
    assert drift_warning("fal-ai/x", 0.50, 0.52, 5.2, price, 0.05) is None
    line = drift_warning("fal-ai/x", 0.26, 0.50, 5, price, 0.05)
    assert line and "fal-ai/x" in line and "$0.5000 (5 seconds × $0.1)" in line and "$0.2600" in line
    assert drift_warning("fal-ai/x", 0.0, 0.5, 5, price, 0.05) is None  # nothing to compare with


@pytest.mark.parametrize(
    ("unit", "units"),
    [
        ("seconds", 6.0),
        ("second", 6.0),
        ("video seconds", 6.0),
        ("5 seconds", 1.2),
        ("videos", 1.0),
        ("video", 1.0),
    ],
)
def test_expected_units_for_plain_units(unit: str, units: float) -> None:
    assert expected_units(unit, 6.0) == pytest.approx(units)


@pytest.mark.parametrize("unit", ["units", "", "1m tokens", "compute seconds", "images"])
def test_other_units_are_compared_only_when_billed(unit: str) -> None:
    assert expected_units(unit, 6.0) is None
