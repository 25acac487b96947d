"""Error budgets and the deploy decision, from what was measured (pure, no I/O).

The budget is request-weighted over the period: ``remaining = 1 - (errors / requests) / (1 - objective)``,
where errors and requests are the period's counter increases (``increase`` handles counter resets). A period
without requests (0/0) or a query that returns nothing gives an *unknown* budget — never 100 %: silence is not
reliability. A budget can be overspent (remaining below 0).

The deploy decision is the seed's: more than 50 % remaining: deploy; 25–50 %: low-risk changes only;
10–25 %: no deploy; below 10 %: emergency hold. An unknown budget gives ``unknown``, which a deploy pipeline
must treat as "no deploy" until someone looks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum


class Decision(StrEnum):
    DEPLOY = "deploy"
    LOW_RISK_ONLY = "low_risk_only"
    NO_DEPLOY = "no_deploy"
    EMERGENCY_HOLD = "emergency_hold"
    UNKNOWN = "unknown"


# (lowest remaining share, decision), strictest last: the seed's thresholds.
DECISION_THRESHOLDS: tuple[tuple[float, Decision], ...] = (
    (0.50, Decision.DEPLOY), (0.25, Decision.LOW_RISK_ONLY), (0.10, Decision.NO_DEPLOY),
)


def decide(remaining: float | None) -> Decision:
    """The deploy decision for a remaining budget share (0.5 = 50 %); exactly 50 % is low-risk only."""
    if remaining is None or math.isnan(remaining):
        return Decision.UNKNOWN
    if remaining > DECISION_THRESHOLDS[0][0]:
        return Decision.DEPLOY
    for floor, decision in DECISION_THRESHOLDS[1:]:
        if remaining >= floor:
            return decision
    return Decision.EMERGENCY_HOLD


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) or math.isinf(value) else value


def error_ratio(errors: float | None, requests: float | None) -> float | None:
    """Errors over requests; None for no data or no requests (0/0)."""
    errors, requests = _finite(errors), _finite(requests)
    if errors is None or requests is None or requests <= 0:
        return None
    return min(max(errors / requests, 0.0), 1.0)


@dataclass(frozen=True)
class Budget:
    """One SLO's budget over its period, and what it means for deploys."""

    objective: float  # percent
    period: timedelta
    errors: float | None  # the period's error events (counter increase)
    requests: float | None
    burn_rates: Mapping[str, float | None]  # window ("5m", "1h", …) → error ratio / budget
    reason: str = ""  # why the budget is unknown

    @property
    def budget(self) -> float:
        return round(1 - self.objective / 100, 12)

    @property
    def ratio(self) -> float | None:
        return error_ratio(self.errors, self.requests)

    @property
    def remaining(self) -> float | None:
        """Share of the period's error budget left (1.0 = untouched, negative = overspent)."""
        ratio = self.ratio
        return None if ratio is None else 1 - ratio / self.budget

    @property
    def decision(self) -> Decision:
        return decide(self.remaining)

    def time_to_exhaustion(self, window: str = "1h") -> timedelta | None:
        """At ``window``'s burn rate, how long the remaining budget lasts: a burn rate of 1 spends the whole
        budget in one period. None when unknown or not burning; zero when already spent."""
        remaining, burn = self.remaining, _finite(self.burn_rates.get(window))
        if remaining is None or burn is None:
            return None
        if remaining <= 0:
            return timedelta(0)
        if burn <= 0:
            return None
        return self.period * (remaining / burn)


def burn_rate(ratio: float | None, objective: float) -> float | None:
    """Error ratio over the error budget (1.0 spends the budget in exactly one period)."""
    ratio = _finite(ratio)
    return None if ratio is None else ratio / round(1 - objective / 100, 12)


# From the least to the most restrictive: a service's decision is the strictest of its SLOs'. Unknown blocks a
# deploy but yields to a measured no-deploy or hold, which say more.
STRICTNESS: tuple[Decision, ...] = (Decision.DEPLOY, Decision.LOW_RISK_ONLY, Decision.UNKNOWN, Decision.NO_DEPLOY,
                                    Decision.EMERGENCY_HOLD)


def strictest(decisions: Iterable[Decision]) -> Decision:
    """The most restrictive of ``decisions`` (a service with no SLO is unknown)."""
    return max(decisions, key=STRICTNESS.index, default=Decision.UNKNOWN)
