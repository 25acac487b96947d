"""Classification and safe suggestions, on usage parsed from real PromQL."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from traceo_finops.cardinality.recommend import Classification, Suggestion, judge
from traceo_finops.cardinality.relabel import mimir_overrides_yaml, prometheus_yaml, relabel_rules
from traceo_finops.usage import UsageIndex
from traceo_finops.usage.model import Source, SourceKind

pytestmark = pytest.mark.unit


@dataclass
class Census:
    metric: str
    series: int
    labels: dict[str, int] = field(default_factory=dict)


def index_of(*exprs: str) -> UsageIndex:
    idx = UsageIndex()
    for i, e in enumerate(exprs):
        idx.add_expression(e, Source(SourceKind.DASHBOARD, f"dash-{i}"), location=f"panel {i}")
    return idx


class ServerCount:
    """Stands in for `count(count by (kept) (metric))` with a table the test states explicitly."""

    def __init__(self, answers: dict[tuple[str, tuple[str, ...]], int]) -> None:
        self.answers, self.asked = answers, []

    def __call__(self, metric: str, kept: tuple[str, ...]) -> int:
        self.asked.append((metric, kept))
        return self.answers[(metric, kept)]


def test_unused_metric_is_dropped() -> None:
    v = judge(Census("legacy_total", 24, {"job": 1, "instance": 3}), index_of("sum(rate(other_total[5m]))"),
              ServerCount({}))
    assert (v.classification, v.suggestion, v.series_after, v.series_saved) == (
        Classification.UNUSED, Suggestion.DROP_METRIC, 0, 24)


def test_bare_selector_needs_every_label() -> None:
    count = ServerCount({})
    v = judge(Census("up", 10, {"job": 2, "instance": 10}), index_of("up"), count)
    assert (v.classification, v.suggestion, v.series_after) == (Classification.USED, Suggestion.KEEP, 10)
    assert count.asked == []  # nothing to ask the server


def test_sum_only_usage_is_aggregated_with_server_count() -> None:
    count = ServerCount({("http_requests_total", ("job", "method", "status")): 12})
    idx = index_of('sum by (method) (rate(http_requests_total{status="500"}[5m]))',
                   "sum by (job) (increase(http_requests_total[1h]))")
    v = judge(Census("http_requests_total", 400, {"job": 2, "method": 3, "status": 2, "pod": 200}), idx, count)
    assert v.classification is Classification.PARTIALLY_USED
    assert v.unneeded_labels == ("pod",) and v.kept_labels == ("job", "method", "status")
    assert (v.suggestion, v.aggregator, v.series_after, v.series_if_aggregated) == (Suggestion.AGGREGATE, "sum", 12, 12)


def test_count_usage_blocks_aggregation() -> None:
    count = ServerCount({("carts", ("job", "service")): 6})
    idx = index_of("sum by (service) (carts)", "count by (service) (carts)")
    v = judge(Census("carts", 1320, {"job": 1, "service": 6, "session_id": 1000}), idx, count)
    assert v.suggestion is Suggestion.BLOCKED and v.series_after == 1320 and v.series_if_aggregated == 6
    assert "count()" in v.blocked_by and v.unneeded_labels == ("session_id",)


def test_redundant_label_is_dropped_without_merging() -> None:
    count = ServerCount({("kube_pod_info", ("job", "pod")): 50})
    v = judge(Census("kube_pod_info", 50, {"job": 1, "pod": 50, "uid": 50}),
              index_of("count by (pod) (kube_pod_info)"), count)
    assert (v.suggestion, v.unneeded_labels, v.series_after) == (Suggestion.DROP_LABELS, ("uid",), 50)


def test_without_keeps_all_but_the_excluded_and_protected_labels_stay() -> None:
    count = ServerCount({("lat_bucket", ("instance", "job", "le")): 30})
    idx = index_of("histogram_quantile(0.9, sum without (instance, pod) (rate(lat_bucket[5m])))",
                   "sum without (pod) (rate(lat_bucket[5m]))")
    v = judge(Census("lat_bucket", 300, {"job": 1, "le": 10, "instance": 3, "pod": 10}), idx, count)
    assert v.unneeded_labels == ("pod",)  # instance is needed by the second usage; job/le are protected
    assert v.suggestion is Suggestion.AGGREGATE and v.series_after == 30


def test_relabel_yaml_passes_promtool(tmp_path: Path) -> None:
    idx = index_of("sum by (service) (carts)", "count by (pod) (kube_pod_info)")
    verdicts = [
        judge(Census("legacy_total", 24, {"job": 1}), idx, ServerCount({})),
        judge(Census("legacy:ratio", 3, {"job": 1}), idx, ServerCount({})),
        judge(Census("kube_pod_info", 50, {"job": 1, "pod": 50, "uid": 50}), idx,
              ServerCount({("kube_pod_info", ("job", "pod")): 50})),
        judge(Census("carts", 1320, {"job": 1, "service": 6, "session_id": 1000}), idx,
              ServerCount({("carts", ("job", "service")): 6})),
    ]
    rules = relabel_rules(verdicts)
    assert rules[0] == {"source_labels": ["__name__"], "regex": "legacy:ratio|legacy_total", "action": "drop"}
    assert rules[1]["target_label"] == "uid" and rules[1]["regex"] == "kube_pod_info" and rules[1]["replacement"] == ""
    assert len(rules) == 2  # the aggregation is not a relabel rule
    text = prometheus_yaml({"apps": verdicts, "kube-state-metrics": verdicts[2:3]})
    assert "carts: sum by (job, service) -> 6 series (now 1320)" in text
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(text)
    out = subprocess.run(["promtool", "check", "config", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    mimir = yaml.safe_load(mimir_overrides_yaml({"team-a": verdicts}))
    assert mimir["overrides"]["team-a"]["metric_relabel_configs"] == rules


def test_prometheus_own_series_are_never_dropped() -> None:
    v = judge(Census("up", 12, {"job": 3, "instance": 12}), index_of("sum(rate(x_total[5m]))"), ServerCount({}))
    assert v.classification is Classification.UNUSED and v.suggestion is Suggestion.KEEP and v.series_after == 12
    assert "Prometheus itself" in v.blocked_by


def test_a_nameless_selector_in_a_dashboard_holds_every_metric_it_may_select() -> None:
    from traceo_finops.cardinality.recommend import durable_wildcards

    idx = index_of('{job="billing"}', 'sum by (job) ({__name__=~"billing_.+"})')
    idx.add_expression('count by (__name__) ({__name__=~".+"})', Source(SourceKind.QUERY, "q1"))
    wild = durable_wildcards(idx)
    assert {u.source.kind for u in wild} == {SourceKind.DASHBOARD}  # the ad-hoc census query does not count
    v = judge(Census("billing_invoices_total", 8, {"job": 1, "pod": 8}), idx, ServerCount({}), wildcards=wild)
    assert v.suggestion is Suggestion.BLOCKED and "dash-0" in v.blocked_by
    assert judge(Census("x", 3, {"job": 1}), idx, ServerCount({})).suggestion is Suggestion.DROP_METRIC
