"""Error budget arithmetic and the deploy decision (pure): the seed's thresholds, unknown never reads 100 %,
0/0, overspent budgets and time to exhaustion."""

from __future__ import annotations

from datetime import timedelta

import pytest

from traceo_finops.slo.recommend import Budget, Decision, burn_rate, decide, error_ratio

pytestmark = pytest.mark.unit
MONTH = timedelta(days=30)


@pytest.mark.parametrize("remaining, decision", [
    (1.0, Decision.DEPLOY), (0.5001, Decision.DEPLOY), (0.5, Decision.LOW_RISK_ONLY),
    (0.25, Decision.LOW_RISK_ONLY), (0.2499, Decision.NO_DEPLOY), (0.10, Decision.NO_DEPLOY),
    (0.0999, Decision.EMERGENCY_HOLD), (-0.4, Decision.EMERGENCY_HOLD), (None, Decision.UNKNOWN),
    (float("nan"), Decision.UNKNOWN),
])
def test_deploy_decision_thresholds(remaining: float | None, decision: Decision) -> None:
    assert decide(remaining) is decision


def test_budget_is_request_weighted_from_increases() -> None:
    # 99.9 %: 1,000,000 requests allow 1,000 errors; 400 were spent -> 60 % left.
    b = Budget(99.9, MONTH, errors=400, requests=1_000_000, burn_rates={})
    assert b.remaining == pytest.approx(0.6)
    assert b.decision is Decision.DEPLOY


@pytest.mark.parametrize("errors, requests, reason", [
    (None, None, "query returned nothing"), (0.0, 0.0, "0/0: no requests in the period"),
    (5.0, None, "no total"), (float("nan"), 10.0, "NaN from the server"),
])
def test_unknown_budget_is_never_full(errors: float | None, requests: float | None, reason: str) -> None:
    b = Budget(99.5, MONTH, errors=errors, requests=requests, burn_rates={"1h": 2.0})
    assert b.remaining is None, reason
    assert b.decision is Decision.UNKNOWN
    assert b.time_to_exhaustion() is None


def test_overspent_budget_and_time_to_exhaustion() -> None:
    spent = Budget(99.0, MONTH, errors=30, requests=1000, burn_rates={"1h": 5.0})
    assert spent.remaining == pytest.approx(-2.0)
    assert spent.decision is Decision.EMERGENCY_HOLD
    assert spent.time_to_exhaustion() == timedelta(0)
    # Half the budget left, burning at 2x: half a period's budget at double speed lasts a quarter period.
    half = Budget(99.0, MONTH, errors=5, requests=1000, burn_rates={"1h": 2.0, "6h": 0.0})
    assert half.time_to_exhaustion("1h") == MONTH / 4
    assert half.time_to_exhaustion("6h") is None  # not burning


def test_error_ratio_and_burn_rate() -> None:
    assert error_ratio(0.0, 0.0) is None
    assert error_ratio(3.0, 0.0) is None
    assert error_ratio(1.0, 4.0) == 0.25
    assert burn_rate(0.0144, 99.9) == pytest.approx(14.4)
    assert burn_rate(None, 99.9) is None
