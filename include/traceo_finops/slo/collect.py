"""Measure an SLO on its source: the period's errors and requests, and the error ratio of every alert window.

An events SLI's queries are rates (``sum(rate(x[{{.window}}]))``); over the period, rate × period is the
counter increase, with counter resets handled by Prometheus' ``rate``. The period ratio is therefore
request-weighted. A raw SLI has only a ratio: its period ratio stands for errors per request. A query that
returns several series is summed (an SLO is one ratio); one that returns nothing leaves the value unknown.
"""

from __future__ import annotations

from datetime import datetime

from traceo_finops.prometheus import PrometheusClient
from traceo_finops.prometheus.client import sample_value
from traceo_finops.slo.burnrate import SLI_WINDOWS, prom_duration
from traceo_finops.slo.recommend import Budget, burn_rate, error_ratio
from traceo_finops.slo.spec import SLO


def _value(client: PrometheusClient, promql: str, at: datetime) -> float | None:
    values = [v for v in (sample_value(s) for s in client.query(promql, at)) if v is not None]
    return sum(values) if values else None


def measure(client: PrometheusClient, slo: SLO, at: datetime) -> Budget:
    """The SLO's budget over the period ending at ``at``, with the burn rate of every SLI window."""
    seconds = slo.period.total_seconds()
    burns: dict[str, float | None] = {}
    if slo.error_query is not None and slo.total_query is not None:
        err_rate = _value(client, slo.query(slo.error_query, slo.period), at)
        total_rate = _value(client, slo.query(slo.total_query, slo.period), at)
        errors = None if err_rate is None else err_rate * seconds
        requests = None if total_rate is None else total_rate * seconds
        for window in SLI_WINDOWS:
            ratio = error_ratio(_value(client, slo.query(slo.error_query, window), at),
                                _value(client, slo.query(slo.total_query, window), at))
            burns[prom_duration(window)] = burn_rate(ratio, slo.objective)
    else:
        assert slo.error_ratio_query is not None
        ratio = _value(client, slo.query(slo.error_ratio_query, slo.period), at)
        errors, requests = ratio, (None if ratio is None else 1.0)
        for window in SLI_WINDOWS:
            burns[prom_duration(window)] = burn_rate(
                _value(client, slo.query(slo.error_ratio_query, window), at), slo.objective)
    reason = ""
    if requests is None or errors is None:
        reason = "the SLI query returned no data"
    elif requests <= 0:
        reason = "no requests in the period (0/0)"
    return Budget(slo.objective, slo.period, errors, requests, burns, reason)
