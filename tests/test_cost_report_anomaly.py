"""Anomaly flags on daily cost totals: an injected spike is flagged by both detectors, a flat or merely noisy
series is not, and each flag explains itself in one line."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest

from traceo_finops.cost_report.anomaly import ISOLATION_FOREST, ROBUST_Z, Rules, detect

pytestmark = pytest.mark.unit
START = date(2026, 11, 1)


def series(values: list[float]) -> list[tuple[date, float]]:
    return [(START + timedelta(days=i), v) for i, v in enumerate(values)]


def noisy(n: int, level: float, spread: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [level * (1 + rng.uniform(-spread, spread)) for _ in range(n)]


def test_an_injected_spike_is_flagged_by_both_detectors_with_an_explanation() -> None:
    values = [*noisy(28, 100.0, 0.02, seed=1), 138.0]
    flags = detect({("active_series", "payments"): series(values)}, drivers={
        ("active_series", "payments"): "metric shop_cart_items"})
    assert {f["method"] for f in flags} == {ROBUST_Z, ISOLATION_FOREST}
    for f in flags:
        assert f["day"] == START + timedelta(days=28) and f["value_usd"] == 138.0
        assert f["change_pct"] == pytest.approx(138.0 / f["baseline_usd"] - 1)
        line = f["explanation"]
        assert "\n" not in line and "active_series of payments" in line and "shop_cart_items" in line
        assert f"{f['change_pct']:+.0%}" in line


def test_a_drop_is_flagged_too() -> None:
    flags = detect({("object_storage", "team-a"): series([*noisy(20, 50.0, 0.01, seed=2), 20.0])})
    assert ROBUST_Z in {f["method"] for f in flags}
    assert all(f["change_pct"] < 0 for f in flags)


@pytest.mark.parametrize("values", [
    [100.0] * 29,  # flat
    noisy(29, 100.0, 0.03, seed=3),  # ordinary noise
    [*[100.0] * 28, 100.5],  # a flat series moving by half a percent
], ids=["flat", "noise", "tiny-move"])
def test_quiet_series_raise_nothing(values: list[float]) -> None:
    assert detect({("local_disk", "prom"): series(values)}) == []


def test_a_short_history_is_not_judged() -> None:
    assert detect({("queries", "prom"): series([1.0, 1.0, 1.0, 50.0])}, Rules(min_points=7)) == []
    assert detect({("queries", "prom"): series([*[1.0] * 7, 50.0])}, Rules(min_points=7)) != []
