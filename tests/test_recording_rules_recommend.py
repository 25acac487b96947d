"""What to record, its name, what the server already records, merging, and the rewritten queries (pure)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from traceo_finops.recording_rules.normalize import Normalizer
from traceo_finops.recording_rules.recommend import (
    ExistingRule,
    Matcher,
    RuleSpec,
    TextStats,
    existing_rules,
    group_queries,
    plan_groups,
    rewrites_of,
    ruler_recording_rules,
    rules_api_recording_rules,
    sites,
)

pytestmark = pytest.mark.unit

LATENCY = ('histogram_quantile({q}, sum by (le, route) (rate(http_request_duration_seconds_bucket'
           '{{service=~"{svc}", route=~"(/a|/b)"}}[{w}])))')
SERVER_RULE = ("service_le:http_request_duration_seconds_bucket:rate5m",
               "sum by (service, le) (rate(http_request_duration_seconds_bucket[5m]))", "http.rules", None)


def _stats(*runs: tuple[str, float, int]) -> dict[str, TextStats]:
    out: dict[str, TextStats] = {}
    for text, seconds, n in runs:
        s = out.setdefault(text, TextStats())
        for _ in range(n):
            s.add(21600.0, 30.0, seconds, None)
    return out


def _plans(stats: dict[str, TextStats], existing: list[tuple] = ()):  # type: ignore[assignment,no-untyped-def]
    n = Normalizer()
    grouping = group_queries(stats, n, max_query_length=10_000)
    return grouping, plan_groups(grouping.groups, stats, n, existing_rules(existing, n))


# -- sites ------------------------------------------------------------------------------------------------
def test_the_aggregation_over_the_rate_is_recorded_and_histogram_quantile_stays_outside() -> None:
    [site] = sites(Normalizer().parse(LATENCY.format(q=0.99, svc="a", w="5m")))
    assert site.expression() == ('sum by (le, route) (rate(http_request_duration_seconds_bucket'
                                 '{route=~"(/a|/b)", service=~"a"}[5m]))')
    assert site.path == (1,)  # the second argument of histogram_quantile


@pytest.mark.parametrize("query, expected", [
    ("sum by (job) (rate(x_total[5m])) / sum by (job) (rate(y_total[5m]))", 2),
    ("topk(5, max by (a) (irate(x[1m])))", 1),
    ("sum(increase(x[1h]))", 1),
    ("avg by (a) (rate(x[5m]))", 1),
    # not recordable: no rate, a rate not aggregated, a subquery, offset/@, without, a rate of a subquery
    ("sum by (a) (x)", 0),
    ("rate(x[5m])", 0),
    ("max_over_time(sum by (a) (rate(x[5m]))[1h:1m])", 0),
    ("sum by (a) (rate(x[5m] offset 1h))", 0),
    ("sum by (a) (rate(x[5m] @ end()))", 0),
    ("sum without (a) (rate(x[5m]))", 0),
    ("sum by (a) (rate(sum(x)[5m:1m]))", 0),
    ("topk(5, rate(x[5m]))", 0),
    ('sum(rate({__name__=~"x.*"}[5m]))', 0),
])
def test_which_subexpressions_are_recordable(query: str, expected: int) -> None:
    assert len(sites(Normalizer().parse(query))) == expected


# -- names ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op, by, func, metric, window, name", [
    ("sum", ("job",), "rate", "http_requests_total", "5m", "job:http_requests:rate5m"),
    ("sum", ("le", "route"), "rate", "x_bucket", "5m", "le_route:x_bucket:rate5m"),
    ("max", ("pod",), "irate", "cpu_seconds_total", "1m", "pod:cpu_seconds:max_irate1m"),
    ("count", (), "increase", "restarts_total", "1h", ":restarts:count_increase1h"),
    ("sum", ("a",), "rate", "x", "135s", "a:x:rate2m15s"),
])
def test_names_follow_level_metric_operations(op: str, by: tuple[str, ...], func: str, metric: str, window: str,
                                              name: str) -> None:
    from traceo_finops.prometheus.promql import parse_duration

    assert RuleSpec(op, by, func, parse_duration(window), metric, ()).name == name


# -- what the rule keeps, what it lifts --------------------------------------------------------------------
def test_a_filter_the_same_in_every_spelling_stays_in_the_rule() -> None:
    stats = _stats((LATENCY.format(q=0.99, svc="(a|b)", w="1m"), 0.02, 3),
                   (LATENCY.format(q=0.95, svc="(a|b)", w="135s"), 0.01, 2))
    grouping, [plan] = _plans(stats)
    assert len(grouping.groups) == 1 and grouping.groups[0].count == 5
    [rule] = plan.new_rules
    assert rule.name == "le_route:http_request_duration_seconds_bucket:rate1m"  # the costliest spelling's window
    assert rule.kept == (Matcher("route", "=~", "(/a|/b)"), Matcher("service", "=~", "(a|b)"))
    assert plan.rewritten == "histogram_quantile(0.99, le_route:http_request_duration_seconds_bucket:rate1m)"
    # The 135s spelling reads another window: the 1m rule cannot serve it, and says so (None).
    rewrites = rewrites_of(plan, Normalizer(), 10)
    assert rewrites[LATENCY.format(q=0.95, svc="(a|b)", w="135s")] is None
    assert rewrites[LATENCY.format(q=0.99, svc="(a|b)", w="1m")] == plan.rewritten


def test_a_filter_that_varies_is_lifted_into_the_rule_and_kept_in_the_query() -> None:
    stats = _stats((LATENCY.format(q=0.99, svc="a", w="1m"), 0.02, 3),
                   (LATENCY.format(q=0.99, svc="(b|c)", w="1m"), 0.01, 2))
    _, [plan] = _plans(stats)
    [rule] = plan.new_rules
    assert rule.expr == ('sum by (le, route, service) (rate(http_request_duration_seconds_bucket'
                         '{route=~"(/a|/b)"}[1m]))')
    assert rule.name == "le_route_service:http_request_duration_seconds_bucket:rate1m"
    assert plan.rewritten == ('histogram_quantile(0.99, sum by (le, route) '
                              '(le_route_service:http_request_duration_seconds_bucket:rate1m{service=~"a"}))')
    # Every spelling is served by the one rule.
    assert all(v is not None for v in rewrites_of(plan, Normalizer(), 10).values())


def test_count_is_summed_again_and_avg_is_recorded_only_as_written() -> None:
    stats = _stats(('count by (a) (rate(x{b="1"}[5m]))', 1.0, 2), ('count by (a) (rate(x{b="2"}[5m]))', 1.0, 2),
                   ('avg by (a) (rate(y{b="1"}[5m]))', 0.5, 2))
    _, plans = _plans(stats)
    count_plan = next(p for p in plans if "count" in p.text)
    assert count_plan.new_rules[0].expr == "count by (a, b) (rate(x[5m]))"
    assert count_plan.rewritten == 'sum by (a) (a_b:x:count_rate5m{b="1"})'
    avg_plan = next(p for p in plans if "avg" in p.text)
    assert avg_plan.new_rules[0].expr == 'avg by (a) (rate(y{b="1"}[5m]))'
    assert avg_plan.rewritten == 'avg by (a) (a:y:avg_rate5m)'


# -- merging --------------------------------------------------------------------------------------------------
def test_one_rule_serves_the_numerator_and_the_denominator() -> None:
    ratio = ('sum by (service) (rate(http_requests_total{service="a", status_code=~"5.."}[1m])) '
             '/ sum by (service) (rate(http_requests_total{service="a"}[1m]))')
    _, [plan] = _plans(_stats((ratio, 0.01, 4)))
    [rule] = plan.new_rules  # the two same-named candidates merged by lifting the filter they differ in
    assert rule.expr == 'sum by (service, status_code) (rate(http_requests_total{service="a"}[1m]))'
    assert plan.rewritten == ('sum by (service) (service_status_code:http_requests:rate1m{status_code=~"5.."}) '
                              '/ sum by (service) (service_status_code:http_requests:rate1m)')


def test_the_finer_rule_of_another_group_serves_a_coarser_one() -> None:
    by_route = 'sum by (route, service) (rate(http_requests_total[1m]))'
    by_service = 'sum by (service) (rate(http_requests_total[1m]))'
    _, plans = _plans(_stats((by_route, 0.02, 3), (by_service, 0.01, 3)))
    assert [p.new_rules for p in plans] == [[plans[0].new_rules[0]]] * 2
    assert plans[1].rewritten == "sum by (service) (route_service:http_requests:rate1m)"


# -- existing rules -------------------------------------------------------------------------------------------
def test_what_the_server_already_records_is_not_suggested_again() -> None:
    # The same expression in another spelling (label order): compared as normalised ASTs, not as text.
    stats = _stats(("histogram_quantile(0.9, sum(rate(http_request_duration_seconds_bucket[5m])) by (le, service))",
                    0.2, 5))
    _, [plan] = _plans(stats, [SERVER_RULE])
    assert plan.new_rules == []
    assert plan.reason == "already recorded by the server's rule service_le:http_request_duration_seconds_bucket:rate5m"
    assert plan.rewritten == "histogram_quantile(0.9, service_le:http_request_duration_seconds_bucket:rate5m)"


def test_a_coarser_query_is_served_by_the_finer_server_rule() -> None:
    stats = _stats(("histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))", 0.2, 5))
    _, [plan] = _plans(stats, [SERVER_RULE])
    assert plan.new_rules == [] and plan.sites[0].existing == SERVER_RULE[0]
    assert plan.rewritten == ("histogram_quantile(0.9, sum by (le) "
                              "(service_le:http_request_duration_seconds_bucket:rate5m))")


def test_a_server_rule_with_extra_labels_or_another_window_does_not_count() -> None:
    stats = _stats(("histogram_quantile(0.9, sum by (le, service) (rate(http_request_duration_seconds_bucket[5m])))",
                    0.2, 5))
    labelled = (*SERVER_RULE[:3], {"cluster": "eu"})
    other_window = (SERVER_RULE[0], SERVER_RULE[1].replace("5m", "1m"), "g", None)
    for rule in (labelled, other_window):
        _, [plan] = _plans(stats, [rule])
        assert [r.name for r in plan.new_rules] == ["le_service:http_request_duration_seconds_bucket:rate5m"]


def test_a_server_rule_with_our_name_and_another_expression_is_a_conflict_never_a_second_meaning() -> None:
    stats = _stats(("histogram_quantile(0.9, sum by (le, service) (rate(http_request_duration_seconds_bucket[5m])))",
                    0.2, 5))
    impostor = ("le_service:http_request_duration_seconds_bucket:rate5m",
                'sum by (le, service) (rate(http_request_duration_seconds_bucket{job="other"}[5m]))', "legacy", None)
    _, [plan] = _plans(stats, [impostor])
    assert plan.sites[0].status == "conflict"
    assert "already has a rule named le_service:http_request_duration_seconds_bucket:rate5m" in plan.reason
    assert plan.new_rules == []
    # The same name with the same expression (another spelling) is that rule: recorded, no conflict.
    same = ("le_service:http_request_duration_seconds_bucket:rate5m",
            "sum(rate(http_request_duration_seconds_bucket[5m])) by (service, le)", "legacy", None)
    _, [plan] = _plans(stats, [same])
    assert plan.sites[0].status == "existing" and plan.reason.startswith("already recorded")


def test_rules_api_and_ruler_answers_are_read() -> None:
    api = [{"name": "g", "rules": [{"type": "recording", "name": "a:b:rate5m", "query": "sum(rate(b[5m]))"},
                                   {"type": "alerting", "name": "Alert", "query": "up == 0"}]}]
    assert rules_api_recording_rules(api) == [("a:b:rate5m", "sum(rate(b[5m]))", "g", None)]
    ruler = {"ns": [{"name": "g", "rules": [{"record": "a:b:rate5m", "expr": "sum(rate(b[5m]))"},
                                            {"alert": "A", "expr": "up == 0"}]}]}
    assert ruler_recording_rules(ruler) == [("a:b:rate5m", "sum(rate(b[5m]))", "ns/g", None)]
    parsed = existing_rules([("x:y:z", "sum(", "g", None)], Normalizer())
    assert parsed == [ExistingRule("x:y:z", "sum(", "g", None, None)]  # unparsable: kept for name checks only


# -- groups and their cost ----------------------------------------------------------------------------------
def test_groups_are_ranked_by_cost_and_bad_texts_counted() -> None:
    stats = _stats(("sum by (a) (rate(x[5m]))", 0.001, 1000), ("sum by (a) (rate(x[1m]))", 0.001, 10),
                   ("sum by (b) (rate(y[5m]))", 2.0, 3), ("sum(", 1.0, 7), ("up" + " " * 200, 1.0, 2))
    grouping = group_queries(stats, Normalizer(), max_query_length=100)
    assert [g.count for g in grouping.groups] == [3, 1010]  # 6 s before 1.01 s
    assert grouping.groups[1].texts == ["sum by (a) (rate(x[5m]))", "sum by (a) (rate(x[1m]))"]
    assert grouping.groups[0].mean_seconds == pytest.approx(2.0)
    assert (grouping.unparsable_executions, grouping.enormous, grouping.enormous_executions) == (7, 1, 2)
    samples = _stats(("sum by (a) (rate(x[5m]))", 0.001, 1), ("sum by (b) (rate(y[5m]))", 2.0, 1))
    samples["sum by (a) (rate(x[5m]))"].add(0, 0, 0.001, 10**9)
    ranked = group_queries(samples, Normalizer(), max_query_length=1000, rank_by="samples").groups
    assert ranked[0].key.startswith("sum by (a)")


def test_shape_is_the_costliest_one_of_a_text() -> None:
    s = TextStats()
    s.add(3600, 15, 0.1, None)
    s.add(86400, 120, 0.5, None)
    s.add(3600, 15, 0.1, None)
    assert s.shape == (86400, 120) and s.count == 3 and s.seconds == pytest.approx(0.7)
    assert timedelta(seconds=s.shape[0]) == timedelta(days=1)
