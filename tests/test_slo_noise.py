"""The alert-noise replay's pure parts: Prometheus' ``for:`` state machine over answered steps, the generated alert
rules with their recording rules inlined, the 5-minute threshold baseline, and the scoring against known events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import promql_parser
import pytest

from traceo_finops.slo import noise
from traceo_finops.slo.noise import Event, Firing
from traceo_finops.slo.spec import parse_spec

pytestmark = pytest.mark.unit
MIN = 60.0
SPEC = """version: prometheus/v1
service: api
slos:
  - name: availability
    objective: 99.9
    min_events: 100
    sli:
      events:
        error_query: sum(rate(reqs_total{code=~"5.."}[{{.window}}]))
        total_query: sum(rate(reqs_total[{{.window}}]))
    alerting:
      page_alert:
        for: 2m
  - name: latency
    objective: 99.5
    sli:
      raw:
        error_ratio_query: 1 - avg(rate(fast_total[{{.window}}]) / rate(all_total[{{.window}}]))
"""


@pytest.mark.parametrize("steps, hold, expected", [
    ([0, 60, 120, 180, 240, 300], 300, [(0, 300, 300)]),  # fires once active for `for`
    ([0, 60, 120, 180, 240], 300, []),  # resolved one step too early: pending only
    ([0, 60, 120], 0, [(0, 0, 120)]),  # no `for`: fires at the first answer
    ([0, 60, 180, 240, 300], 60, [(0, 60, 60), (180, 240, 300)]),  # a missing step resolves it
    ([300, 0, 60, 60, 120], 0, [(0, 0, 120), (300, 300, 300)]),  # unsorted, duplicated (chunk edges)
])
def test_for_state_machine(steps: list[float], hold: int, expected: list[tuple[int, int, int]]) -> None:
    got = noise.firings(steps, timedelta(minutes=1), timedelta(seconds=hold))
    assert [(f.active_since, f.start, f.end) for f in got] == expected


def test_generated_alerts_are_replayed_with_recording_rules_inlined() -> None:
    avail, latency = parse_spec(SPEC, "api.yml").slos
    rules = noise.mwmb_rules(avail)
    assert [(r.severity, r.for_) for r in rules] == [("page", timedelta(minutes=2)), ("ticket", timedelta(0))]
    for rule in [*rules, *noise.mwmb_rules(latency)]:
        assert "slo:" not in rule.expr and rule.method == noise.MWMB
        promql_parser.parse(rule.expr)
    page = rules[0].expr
    # Both page pairs' windows, at their factors, with the traffic guard on the long window.
    for window in ("5m", "1h", "30m", "6h"):
        assert f'sum(rate(reqs_total{{code=~"5.."}}[{window}]))' in page
    assert "(14.4 * 0.001)" in page and "(6.0 * 0.001)" in page and "* 3600 >= 100" in page
    assert "[3d]" in rules[1].expr and "[1h]" not in rules[1].expr


def test_threshold_baseline_is_the_5m_ratio_above_the_budget() -> None:
    avail, latency = parse_spec(SPEC, "api.yml").slos
    rule = noise.threshold_rule(avail)
    assert (rule.method, rule.severity, rule.for_) == (noise.THRESHOLD, "page", timedelta(minutes=5))
    assert rule.expr.endswith("> 0.001") and "[5m]" in rule.expr and "[1h]" not in rule.expr
    promql_parser.parse(rule.expr)
    assert noise.threshold_rule(latency).expr.endswith("> 0.005")
    with pytest.raises(noise.ReplayError, match="no SLI recording rule"):
        noise.inline(f'slo:sli_error:ratio_rate7m{{sloth_id="{avail.id}", sloth_service="api", '
                     'sloth_slo="availability"} > 1', avail)


def test_scoring_against_known_events() -> None:
    avail = parse_spec(SPEC, "api.yml").slos[0]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    s = t0.timestamp()
    events = [Event(avail.id, "fast_burn", "fast", s + 100 * MIN, s + 160 * MIN, "page"),
              Event(avail.id, "slow_burn", "slow", s + 1000 * MIN, s + 2000 * MIN, "ticket"),
              Event(avail.id, "blip", "blip", s + 3000 * MIN, s + 3010 * MIN),
              Event("other", "fast_burn", "theirs", s, s + MIN, "page")]
    fired = {"page": [Firing(s + 110 * MIN, s + 112 * MIN, s + 170 * MIN),  # the fast burn, 12 min late
                      Firing(s + 3001 * MIN, s + 3006 * MIN, s + 3014 * MIN),  # the blip: a false page
                      Firing(s + 5000 * MIN, s + 5000 * MIN, s + 5002 * MIN)],  # nothing: a false page
             "ticket": [Firing(s + 1300 * MIN, s + 1300 * MIN, s + 2100 * MIN),  # the slow burn
                        Firing(s + 2000 * MIN + 5 * 3600, s + 2000 * MIN + 5 * 3600, s + 2100 * MIN + 5 * 3600)]}
    row, found = noise.score(avail, noise.MWMB, fired, events, t0, t0 + timedelta(days=4))
    assert (row["incidents"], row["incidents_detected"], row["fast_burns"], row["fast_burns_paged"]) == (2, 2, 1, 1)
    assert row["fast_burn_delay_max_minutes"] == 12 and row["slow_burn_delay_max_minutes"] == 300
    # The late ticket (5 h after the slow burn ended) is its echo, not a false alert; the two stray pages are.
    assert (row["pages"], row["tickets"], row["false_pages"], row["false_tickets"]) == (3, 2, 2, 0)
    assert (row["noise_events"], row["noise_events_paged"]) == (1, 1)
    assert row["pages_per_day"] == pytest.approx(3 / 4) and row["alerts_per_day"] == pytest.approx(5 / 4)
    assert [(d.event.name, d.severity) for d in found] == [("fast", "page"), ("slow", "ticket"), ("blip", "page")]
    quiet, _ = noise.score(avail, noise.THRESHOLD, {}, events, t0, t0 + timedelta(days=4))
    assert (quiet["incidents_detected"], quiet["pages"], quiet["fast_burn_delay_max_minutes"]) == (0, 0, None)
    rows = [row, quiet | {"pages": 30}]
    assert noise.reduction(rows, "pages") == pytest.approx(0.9)
    assert noise.reduction([row, quiet], "pages") is None
    assert noise.NOISE_DATASET.table(rows).num_rows == 2


def test_events_of_ground_truth() -> None:
    truth = {"incidents": [{"slo_id": "a", "kind": "fast_burn", "name": "f", "start": 1, "end": 2, "expect": "page"}],
             "noise": [{"slo_id": "a", "kind": "blip", "start": 3, "end": 4}]}
    assert noise.events_of(truth) == [Event("a", "fast_burn", "f", 1.0, 2.0, "page"),
                                      Event("a", "blip", "blip", 3.0, 4.0)]
