"""Verdicts that hold on data we have never seen (issue 10, items 1–3 and 5, and their bad inputs).

Each test builds usage from real PromQL through the real sources (rule files, dashboards, template
variables, query logs) and asks ``judge`` what to do with a metric; the server's merge count is a table
the test states.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from traceo_finops.cardinality.recommend import (
    DEFAULT_PROTECTED_LABELS,
    Classification,
    Suggestion,
    Verdict,
    durable_wildcards,
    judge,
    merge_ops,
    protected_labels,
    target_labels,
)
from traceo_finops.cardinality.relabel import relabel_rules
from traceo_finops.prometheus.errors import PrometheusUnavailable
from traceo_finops.usage import Source, SourceKind, UsageIndex, analyze_expression

pytestmark = pytest.mark.unit

START = datetime(2024, 5, 1, 10, tzinfo=UTC)
END = datetime(2024, 5, 1, 11, tzinfo=UTC)
M = "api_requests_total"


@dataclass
class Census:
    metric: str
    series: int
    labels: dict[str, int] = field(default_factory=dict)


# One API's request counter: a 15,000-value user label that only multiplies series (~19,000 → 60).
API = Census(M, 19_000, {"job": 1, "instance": 1, "route": 60, "user_id": 15_000})


def merged_to(n: int):  # type: ignore[no-untyped-def]
    """Stands in for the server's ``count(count by (kept) (m))``: ``n`` whatever is kept."""
    return lambda metric, kept: n


def verdict(index: UsageIndex, census: Census = API, after: int = 60) -> Verdict:
    return judge(census, index, merged_to(after), wildcards=durable_wildcards(index))


# --- one expression, from each kind of source ------------------------------------------------------------


def in_rule(expr: str) -> UsageIndex:
    index = UsageIndex()
    index.add_rule_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "r", "expr": expr}]}]}),
                        file="rules.yml")
    return index


def in_dashboard(expr: str) -> UsageIndex:
    index = UsageIndex()
    index.add_dashboard({"uid": "d", "panels": [{"id": 1, "targets": [{"refId": "A", "expr": expr}]}]})
    return index


def in_template_variable(expr: str) -> UsageIndex:
    index = UsageIndex()
    index.add_dashboard({"uid": "d", "templating": {"list": [
        {"name": "top", "type": "query", "query": f"query_result({expr})"}]}})
    return index


def in_query_log(expr: str) -> UsageIndex:
    index = UsageIndex()
    line = json.dumps({"params": {"query": expr}, "ts": "2024-05-01T10:30:00Z", "httpRequest": {"path": "/q"}})
    index.add_prometheus_query_log([line], START, END)
    return index


SOURCES = {"rule": in_rule, "dashboard": in_dashboard, "template_variable": in_template_variable,
           "query_log": in_query_log}

# Outside the sum: they rank, count or order the summed result, which merging user_id away leaves unchanged.
OUTSIDE = [
    f"topk(5, sum by (route) (rate({M}[5m])))",
    f"bottomk(3, sum by (route) (rate({M}[5m])))",
    f"count(sum by (route) (rate({M}[5m])))",
    f"quantile(0.9, sum by (route) (rate({M}[5m])))",
    f"sort_desc(sum by (route) (rate({M}[5m])))",
    f"topk(5, sort(sum by (route) (increase({M}[1h]))))",
]
# Inside the sum: they see the individual series, which merging changes.
INSIDE = [
    (f"sum by (route) (topk(5, rate({M}[5m])))", "topk()"),
    (f"sum by (route) (bottomk(5, rate({M}[5m])))", "bottomk()"),
    (f"sum by (route) (count by (route, user_id) ({M}))", "keeps"),  # needs user_id: nothing to merge
    (f"sum by (route) (count by (route, instance) ({M}))", "count()"),
    (f"sum(quantile by (route) (0.9, rate({M}[5m])))", "quantile()"),
]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("expr", OUTSIDE)
def test_an_outer_operator_does_not_block_merging_what_the_sum_removed(source: str, expr: str) -> None:
    v = verdict(SOURCES[source](expr))
    assert v.unneeded_labels == ("user_id",)
    assert (v.suggestion, v.aggregator, v.series_after) == (Suggestion.AGGREGATE, "sum", 60), v.blocked_by


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(("expr", "why"), INSIDE)
def test_an_operator_inside_the_sum_decides(source: str, expr: str, why: str) -> None:
    v = verdict(SOURCES[source](expr))
    if why == "keeps":
        assert v.suggestion is Suggestion.KEEP and v.series_after == API.series
        return
    assert v.suggestion is Suggestion.BLOCKED and v.series_after == API.series and v.series_if_aggregated == 60
    assert why in v.blocked_by and expr[:60] in v.blocked_by


def test_sort_inside_a_sum_touches_no_value() -> None:
    v = verdict(in_dashboard(f"sum by (route) (sort_desc(rate({M}[5m])))"))
    assert v.suggestion is Suggestion.AGGREGATE and v.aggregator == "sum"


def test_every_usage_must_allow_the_same_aggregation_and_the_blocking_one_is_named() -> None:
    index = in_rule(f"topk(5, sum by (route) (rate({M}[5m])))")
    index.add_expression(f"sum by (route) (topk(5, {M}))", Source(SourceKind.QUERY, "q:adhoc"), "query.log")
    v = verdict(index)
    assert v.suggestion is Suggestion.BLOCKED and "q:adhoc" in v.blocked_by and "topk()" in v.blocked_by
    index = in_rule(f"sum by (route) (rate({M}[5m]))")
    index.add_expression(f"max by (route) (max_over_time({M}[1h]))", Source(SourceKind.DASHBOARD, "d"), "panel")
    v = verdict(index)
    assert v.suggestion is Suggestion.BLOCKED and "need different ingestion aggregations" in v.blocked_by


@pytest.mark.parametrize(("expr", "ops"), [
    ("sum by (a) (rate(x[5m]))", {"sum"}),
    ("sum by (a) (x * 8)", {"sum"}),
    ("sum by (a) (x + 1)", set()),  # adds 1 per series: a sum of fewer series is smaller
    # A factor matched on kept labels (k8s-mixin style) is the same for every merged series; a divisor is not.
    ("sum by (namespace) (rate(x[5m]) * on (namespace, pod) group_left (workload) owner)", {"sum"}),
    ("sum by (a) (y / on (a, b) x)", set()),
    ("sum by (a) (x > 5)", set()),  # filters series
    ("max by (a) (x > 5)", {"max"}),  # the maximum passes exactly when the max passes
    ("max by (a) (rate(x[5m]))", set()),  # the rate of a max is not the max of rates
    ("min by (a) (min_over_time(x[1h]))", {"min"}),
    ("group by (a) (rate(x[5m]))", {"sum", "max", "min"}),
    ("group by (a) (x > 5)", set()),
    ("absent(x)", {"sum", "max", "min"}),
    ("absent(x > 5)", set()),  # whether some single series passes: merged series may not
    ("x unless on (a) sum by (a) (y)", set()),  # x is read series by series
    ("sum by (a) (label_replace(rate(x[5m]), 'b', '$1', 'a', '(.*)'))", {"sum"}),
    ("avg by (a) (x)", set()),
])
def test_merge_ops_follow_the_consumer_and_the_steps_below_it(expr: str, ops: set[str]) -> None:
    (s,) = analyze_expression(expr).for_metric("x")
    allowed, why = merge_ops(s)
    assert set(allowed) == ops and (bool(why) == (not ops))


def test_the_right_side_of_unless_only_needs_existence() -> None:
    (s,) = analyze_expression("x unless on (a) y").for_metric("y")
    assert set(merge_ops(s)[0]) == {"sum", "max", "min"}


# --- item 2: an expression that does not parse never frees a metric ----------------------------------------


def test_an_empty_textbox_in_a_scalar_position_now_parses_and_counts() -> None:
    index = UsageIndex()
    index.add_dashboard({"uid": "d", "templating": {"list": [
        {"name": "limit", "type": "textbox", "query": "", "current": {"value": ""}},
        {"name": "q", "type": "custom", "query": "", "options": []}]},
        "panels": [{"targets": [{"expr": f"topk($limit, sum by (route) (rate({M}[5m])))"},
                                {"expr": "quantile_over_time($q, latency_seconds[5m])"}]}]})
    assert index.errors == []
    assert verdict(index).suggestion is Suggestion.AGGREGATE
    assert index.metric_used("latency_seconds")


@pytest.mark.parametrize("source", SOURCES)
def test_a_metric_named_only_in_a_broken_expression_is_held_back(source: str) -> None:
    broken = f"sum by (route) (rate({M}[5m])"
    index = SOURCES[source](broken)
    assert not index.metric_used(M) and index.errors
    v = verdict(index)
    assert v.suggestion is Suggestion.BLOCKED and v.series_after == API.series
    assert "does not parse" in v.blocked_by and broken[:40] in v.blocked_by
    assert verdict(index, Census("other_total", 5, {"job": 1})).suggestion is Suggestion.DROP_METRIC


def test_a_broken_expression_holds_back_what_it_names_even_when_parsed_usages_free_labels() -> None:
    index = in_rule(f"sum by (route) (rate({M}[5m]))")
    index.add_dashboard({"uid": "broken", "panels": [{"targets": [{"expr": f"sum by (user_id) ({M}"}]}]})
    v = verdict(index)
    assert v.suggestion is Suggestion.BLOCKED and "dashboard broken" in v.blocked_by


def test_a_broken_nameless_selector_holds_metrics_that_have_its_labels_only_in_durable_sources() -> None:
    index = in_dashboard('sum by (job) ({team="payments"')
    assert verdict(index, Census("payments_total", 10, {"job": 1, "team": 1})).suggestion is Suggestion.BLOCKED
    assert verdict(index, Census("node_load1", 10, {"job": 1})).suggestion is Suggestion.DROP_METRIC
    explore = in_query_log('sum by (job) ({team="payments"')
    assert verdict(explore, Census("payments_total", 10, {"job": 1, "team": 1})).suggestion is Suggestion.DROP_METRIC


def test_a_broken_name_pattern_holds_the_metrics_it_matches() -> None:
    index = in_rule('sum by (job) (rate({__name__=~"api_.+_total"}[5m])')
    assert verdict(index).suggestion is Suggestion.BLOCKED
    assert verdict(index, Census("db_queries_total", 10, {"job": 1})).suggestion is Suggestion.DROP_METRIC


def test_bad_input_a_dashboard_whose_every_expression_fails_to_parse() -> None:
    exprs = [f"sum(rate({M}[5m])", "histogram_quantile(0.9, sum by (le) (rate(lat_bucket[5m]))",
             "topk(, queue_depth)", "node_load1 +"]
    index = UsageIndex()
    index.add_dashboard({"uid": "all-broken", "panels": [{"id": i, "targets": [{"refId": "A", "expr": e}]}
                                                         for i, e in enumerate(exprs)]})
    rows = [e for e in index.errors if e.source_id == "all-broken"]
    assert sorted(e.expression for e in rows) == sorted(exprs) and all(e.error for e in rows)
    for metric in (M, "lat_bucket", "queue_depth", "node_load1"):
        v = verdict(index, Census(metric, 10, {"job": 1}))
        assert v.suggestion is Suggestion.BLOCKED, metric
        assert "all-broken" in v.blocked_by
    assert index.summary()["unparsed_expressions"] == 4
    assert verdict(index, Census("unrelated_total", 10, {"job": 1})).suggestion is Suggestion.DROP_METRIC


# --- item 3: one unresolved variable does not block every metric ------------------------------------------


def test_an_undeclared_threshold_is_a_number_not_a_match_everything_metric() -> None:
    index = in_dashboard("node_load1 > $threshold")
    assert index.wildcard_usages() == [] and index.pattern_usages() == []
    assert index.metric_used("node_load1")
    assert verdict(index, Census("unrelated_total", 10, {"job": 1})).suggestion is Suggestion.DROP_METRIC
    (note,) = index.errors
    assert "$threshold" in note.error and "not declared" in note.error and note.mentions is None


def test_a_metrics_regex_variable_selects_by_its_regex() -> None:
    index = UsageIndex()
    index.add_dashboard({"uid": "explore", "templating": {"list": [
        {"name": "metric", "type": "query", "query": "metrics(node_memory_.*_bytes)"}]},
        "panels": [{"targets": [{"expr": 'sum by (instance) ({__name__=~"$metric"})'}]}]})
    assert verdict(index, Census("node_memory_Active_bytes", 4, {"job": 1, "instance": 4})).suggestion \
        is Suggestion.KEEP
    assert verdict(index, Census("node_cpu_seconds_total", 40, {"job": 1, "cpu": 4})).suggestion \
        is Suggestion.DROP_METRIC
    assert index.errors == []


def test_a_metric_name_variable_without_knowable_values_names_nothing_and_says_so() -> None:
    index = UsageIndex()
    index.add_dashboard({"uid": "d", "templating": {"list": [{"name": "m", "type": "textbox", "query": ""}]},
        "panels": [{"targets": [{"expr": 'rate($m{job="x"}[5m])'}, {"expr": f"sum by (route) (rate({M}[5m]))"}]}]})
    assert index.wildcard_usages() == [] and index.summary()["unresolved_name_selectors"] == 1
    assert verdict(index).suggestion is Suggestion.AGGREGATE
    assert any("$m" in e.error and "counts for no metric" in e.error for e in index.errors)


def test_bad_input_a_variable_referencing_itself() -> None:
    index = UsageIndex()
    index.add_dashboard({"uid": "loop", "templating": {"list": [
        {"name": "m", "type": "query", "query": "metrics(${m}_total)", "current": {"value": M}}]},
        "panels": [{"targets": [{"expr": 'sum by (route) (rate({__name__=~"$m"}[5m]))'}]}]})
    assert any(e.source_id == "loop" and "$m refers to itself" in e.error for e in index.errors)
    v = verdict(index)
    assert v.suggestion is not Suggestion.DROP_METRIC and index.metric_used(M)


# --- item 5: target labels are protected by default -------------------------------------------------------


def test_instance_of_a_single_target_is_not_blanked() -> None:
    single = Census("billing_jobs_total", 3, {"job": 1, "instance": 1, "queue": 3})
    index = in_rule("sum by (queue) (rate(billing_jobs_total[5m]))")
    v = judge(single, index, merged_to(3))
    assert "instance" in DEFAULT_PROTECTED_LABELS and v.suggestion is Suggestion.KEEP
    assert relabel_rules([v]) == []
    allowed = judge(single, index, merged_to(3), protected_labels(["job", "le", "quantile"], ["instance"]))
    assert allowed.suggestion is Suggestion.DROP_LABELS and allowed.unneeded_labels == ("instance",)


K8S_SCRAPE_CONFIG = """
global: {scrape_interval: 15s}
scrape_configs:
- job_name: kubernetes-pods
  kubernetes_sd_configs: [{role: pod}]
  relabel_configs:
  - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], action: keep, regex: "true"}
  - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
  - {source_labels: [__meta_kubernetes_pod_name], action: replace, target_label: pod}
  - {source_labels: [__address__], target_label: __param_target}
  - {action: labelmap, regex: __meta_kubernetes_pod_label_(.+)}
- job_name: pushgateway
  honor_labels: true
  static_configs: [{targets: ["pushgateway:9091"], labels: {env: prod}}]
"""


def test_target_labels_come_from_relabeling_static_labels_and_their_exported_twins(caplog: Any) -> None:
    labels = target_labels(yaml.safe_load(K8S_SCRAPE_CONFIG))
    assert {"job", "instance", "namespace", "pod", "env", "exported_job", "exported_instance"} <= labels
    assert "__param_target" not in labels
    assert "labelmap" in caplog.text  # named by service discovery: the log says to list them
    protected = protected_labels(["le", "quantile"], ["pod"], K8S_SCRAPE_CONFIG)
    assert {"job", "instance", "namespace", "env", "le"} <= protected and "pod" not in protected
    v = judge(Census("http_requests_total", 100, {"job": 1, "instance": 5, "namespace": 2, "pod": 5, "path": 20}),
              in_rule("sum by (path) (rate(http_requests_total[5m]))"), merged_to(40), protected)
    assert v.unneeded_labels == ("pod",)


def test_protected_labels_fall_back_to_job_and_instance_when_the_config_cannot_be_read() -> None:
    def unreachable() -> str:
        raise PrometheusUnavailable("connection refused", source="s")

    assert protected_labels([], [], unreachable) == target_labels(None) >= {"job", "instance"}
    assert protected_labels([], [], "::: not yaml [") == target_labels(None)
    assert protected_labels(["job"], ["job"]) >= {"job"}  # protected_labels wins over allow_target_labels


def test_a_metric_held_back_by_an_unparsed_expression_is_not_counted_as_unused() -> None:
    index = in_dashboard(f"sum(rate({M}[5m])")
    v = verdict(index)
    assert v.classification is Classification.PARTIALLY_USED and v.series_saved == 0
