"""Budgets measured on a private Prometheus holding 30 days of backfilled request counters (with a counter
reset and a quiet stretch) match an independent computation from the raw counter values within 0.5 points;
an SLI query that parses but matches nothing gives an unknown budget, never 100 %."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.prometheus import KEEP_HISTORY, backfill_openmetrics, local_prometheus, om_sample, prometheus_client
from traceo_finops.slo.collect import measure
from traceo_finops.slo.recommend import Decision
from traceo_finops.slo.spec import parse_spec

AT = datetime(2026, 5, 1, tzinfo=UTC)
STEP = 300  # seconds between samples
SPAN = timedelta(days=31)
SPEC = """version: prometheus/v1
service: api
slos:
  - name: availability
    objective: 99.5
    sli:
      events:
        error_query: sum(rate(reqs_total{service="api",code=~"5.."}[{{.window}}]))
        total_query: sum(rate(reqs_total{service="api"}[{{.window}}]))
  - name: ghost
    objective: 99.5
    sli:
      events:
        error_query: sum(rate(reqs_total{service="ghost",code=~"5.."}[{{.window}}]))
        total_query: sum(rate(reqs_total{service="ghost"}[{{.window}}]))
"""


def history() -> tuple[str, dict[str, list[tuple[int, float]]]]:
    """Counters of ok and 5xx requests every 5 minutes; traffic varies by hour, errors come in bursts, the
    process restarts (counter reset) on day 12, and days 20–21 are quiet (no requests)."""
    start = int((AT - SPAN).timestamp())
    series: dict[str, list[tuple[int, float]]] = {"200": [], "500": []}
    values = {"200": 0.0, "500": 0.0}
    for i, t in enumerate(range(start, int(AT.timestamp()) + 1, STEP)):
        day, hour = divmod((t - start) // 3600, 24)
        if i and (t - start) == 12 * 86400:
            values = {"200": 0.0, "500": 0.0}  # restart
        quiet = 20 <= day < 22
        ok = 0 if quiet else 100 + 80 * (hour % 12)
        bad = 0 if quiet else (40 if day % 7 == 3 and 10 <= hour < 12 else 1)
        values["200"] += ok
        values["500"] += bad
        for code in series:
            series[code].append((t, values[code]))
    text = "".join(om_sample("reqs_total", {"service": "api", "code": code}, v, t)
                   for t_index in range(len(series["200"])) for code in series
                   for (t, v) in [series[code][t_index]])
    return "# TYPE reqs_total counter\n" + text + "# EOF\n", series


def increase(samples: list[tuple[int, float]], since: int) -> float:
    """The counter's increase after ``since``, resets handled: a drop means the counter restarted from 0."""
    total, prev = 0.0, None
    for t, v in samples:
        if prev is not None and t > since:
            total += v - prev if v >= prev else v
        prev = v
    return total


@pytest.mark.integration
def test_budget_matches_raw_counters_and_no_data_is_unknown(tmp_path: Path) -> None:
    openmetrics, series = history()
    backfill_openmetrics(openmetrics, tmp_path / "data")
    since = int((AT - timedelta(days=30)).timestamp())
    errors, total = increase(series["500"], since), increase(series["200"], since) + increase(series["500"], since)
    expected_remaining = 1 - (errors / total) / 0.005
    avail, ghost = parse_spec(SPEC, "api.yml").slos
    with local_prometheus(tmp_path, {"global": {"scrape_interval": "1m"}}, KEEP_HISTORY) as url:
        client = prometheus_client(url)
        budget = measure(client, avail, AT)
        unknown = measure(client, ghost, AT)
    assert budget.remaining is not None
    assert budget.remaining * 100 == pytest.approx(expected_remaining * 100, abs=0.5)
    assert 0.25 < expected_remaining < 0.5  # the history is built to land in "low-risk only"
    assert budget.decision is Decision.LOW_RISK_ONLY
    assert set(budget.burn_rates) == {"5m", "30m", "1h", "2h", "6h", "1d", "3d"}
    assert unknown.remaining is None and unknown.decision is Decision.UNKNOWN
    assert unknown.reason == "the SLI query returned no data"


@pytest.mark.integration
def test_quiet_windows_have_no_burn_rate_and_do_not_make_the_budget_unknown(tmp_path: Path) -> None:
    """0/0: in the middle of the two quiet days every window up to 1 day saw no request — its error ratio is
    unknown (None: not 0, which would read as perfect, nor NaN), while the 3-day window and the 30-day budget,
    which hold traffic, are measured."""
    openmetrics, _ = history()
    backfill_openmetrics(openmetrics, tmp_path / "data")
    quiet = AT - SPAN + timedelta(days=21)  # days 20-21 of the history have no requests
    [avail] = [s for s in parse_spec(SPEC, "api.yml").slos if s.name == "availability"]
    with local_prometheus(tmp_path, {"global": {"scrape_interval": "1m"}}, KEEP_HISTORY) as url:
        budget = measure(prometheus_client(url), avail, quiet)
    assert {w for w, b in budget.burn_rates.items() if b is None} == {"5m", "30m", "1h", "2h", "6h", "1d"}
    assert budget.burn_rates["3d"] is not None and budget.burn_rates["3d"] > 0
    assert budget.remaining is not None and budget.decision is not Decision.UNKNOWN
    assert budget.time_to_exhaustion("1h") is None  # no 1h burn rate: not "never", not "now"
