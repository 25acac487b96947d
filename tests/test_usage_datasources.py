"""Datasources decide what is PromQL (issue 10, item 4, and the unknown-datasource bad input).

Each target's datasource is resolved the way Grafana does (target, else panel; datasource variables;
``__inputs``; a uid another reference types): queries of datasources that do not speak PromQL are skipped
and counted, never parsed; a reference the dashboard cannot resolve is read as PromQL and reported.
"""

from __future__ import annotations

from typing import Any

import pytest

from traceo_finops.usage import Occurrence, ParseError, SkippedQuery, UsageIndex, dashboard_occurrences
from traceo_finops.usage.grafana import promql_datasource

pytestmark = pytest.mark.unit

LOGQL = '{app="checkout"} |= "error" | json | line_format "{{.msg}}"'


def items(dashboard: dict[str, Any]) -> tuple[list[Occurrence], list[ParseError], list[SkippedQuery]]:
    out = list(dashboard_occurrences(dashboard))
    return ([i for i in out if isinstance(i, Occurrence)], [i for i in out if isinstance(i, ParseError)],
            [i for i in out if isinstance(i, SkippedQuery)])


def test_a_loki_datasource_variable_with_a_neutral_name_is_skipped_and_counted() -> None:
    dashboard = {"uid": "shop", "templating": {"list": [
        {"name": "events", "type": "datasource", "query": "loki"},
        {"name": "metrics", "type": "datasource", "query": "prometheus"},
        {"name": "pod", "type": "query", "datasource": {"type": "loki", "uid": "${events}"},
         "query": 'label_values({app="checkout"}, pod)'}]},
        "annotations": {"list": [{"name": "deploys", "datasource": "${events}", "expr": LOGQL}]},
        "panels": [
            {"id": 1, "datasource": "$events", "targets": [{"refId": "A", "expr": LOGQL}]},
            {"id": 2, "datasource": {"uid": "${metrics}"},
             "targets": [{"refId": "A", "expr": "sum(rate(orders_total[5m]))"}]},
        ]}
    occurrences, errors, skipped = items(dashboard)
    assert errors == []  # the LogQL is not reported as PromQL that does not parse
    assert [o.analysis.metrics() for o in occurrences] == [{"orders_total"}]
    assert sorted(s.location for s in skipped) == ["annotation 'deploys'", "panel 1 '' target A", "variable $pod"]
    assert {s.datasource for s in skipped} == {"loki"}
    index = UsageIndex()
    index.add_dashboard(dashboard)
    summary = index.summary()
    assert summary["non_prometheus_targets"] == 3
    assert summary["non_prometheus_targets_by_datasource"] == {"loki": 3}
    assert summary["parse_errors"] == 0


def test_inputs_mixed_panels_and_uid_only_references() -> None:
    dashboard = {"uid": "imported",
                 "__inputs": [{"name": "DS_LOGS", "type": "datasource", "pluginId": "loki"},
                              {"name": "DS_PROM", "type": "datasource", "pluginId": "prometheus"}],
                 "panels": [
                     {"id": 1, "datasource": {"uid": "${DS_LOGS}"}, "targets": [{"refId": "A", "expr": LOGQL}]},
                     {"id": 2, "datasource": {"type": "datasource", "uid": "-- Mixed --"}, "targets": [
                         {"refId": "A", "datasource": {"uid": "${DS_PROM}"}, "expr": "sum(up)"},
                         {"refId": "B", "datasource": {"type": "tempo", "uid": "t1"}, "expr": "{ .x = 1 }"},
                         {"refId": "C", "datasource": {"type": "__expr__"}, "expression": "$A * 2", "type": "math"}]},
                     {"id": 3, "datasource": {"uid": "t1"}, "targets": [{"refId": "A", "expr": "{ span.x }"}]},
                     {"id": 4, "datasource": {"type": "grafana-amazonprometheus-datasource", "uid": "amp"},
                      "targets": [{"refId": "A", "expr": "max(node_load1)"}]},
                 ]}
    occurrences, errors, skipped = items(dashboard)
    assert errors == []
    assert sorted(m for o in occurrences for m in o.analysis.metrics()) == ["node_load1", "up"]
    assert sorted((s.location, s.datasource) for s in skipped) == [
        ("panel 1 '' target A", "loki"), ("panel 2 '' target B", "tempo"), ("panel 2 '' target C", "__expr__"),
        ("panel 3 '' target A", "tempo")]


def test_bad_input_a_datasource_variable_pointing_at_an_unknown_datasource() -> None:
    dashboard = {"uid": "lost", "templating": {"list": [{"name": "ds", "type": "datasource", "query": ""}]},
                 "panels": [
                     {"id": 1, "datasource": {"uid": "${nowhere}"}, "targets": [
                         {"refId": "A", "expr": "sum by (route) (rate(checkout_requests_total[5m]))"},
                         {"refId": "B", "expr": "sum(rate(checkout_errors_total[5m]))"}]},
                     {"id": 2, "datasource": "$ds", "targets": [{"refId": "A", "expr": "max(queue_depth)"}]},
                     {"id": 3, "datasource": {"type": "acme-metrics-datasource", "uid": "a"},
                      "targets": [{"refId": "A", "expr": "sum(acme_total)"}]}]}
    occurrences, errors, skipped = items(dashboard)
    # Read as PromQL (never a wrong drop), and each unresolvable reference said once.
    assert sorted(m for o in occurrences for m in o.analysis.metrics()) == [
        "acme_total", "checkout_errors_total", "checkout_requests_total", "queue_depth"]
    assert skipped == []
    messages = sorted(e.error for e in errors)
    assert len(messages) == 3
    assert any("${nowhere}" in m and "neither a datasource variable nor an __inputs entry" in m for m in messages)
    assert any("$ds names no plugin type" in m for m in messages)
    assert any("'acme-metrics-datasource' is not known" in m for m in messages)
    assert all(e.source_id == "lost" and e.mentions is None for e in errors)


@pytest.mark.parametrize(("plugin", "promql"), [
    ("prometheus", True), ("grafana-amazonprometheus-datasource", True), ("victoriametrics-metrics-datasource", True),
    ("loki", False), ("grafana-postgresql-datasource", False), ("victoriametrics-logs-datasource", False),
    ("__expr__", False), ("grafana", False), ("acme-metrics-datasource", None),
])
def test_plugin_types(plugin: str, promql: bool | None) -> None:
    assert promql_datasource(plugin) is promql


def test_legacy_datasource_names_only_skip_when_the_name_says_so() -> None:
    dashboard = {"uid": "old", "rows": [{"panels": [
        {"id": 1, "datasource": "Loki (prod)", "targets": [{"expr": LOGQL}]},
        {"id": 2, "datasource": "Prod", "targets": [{"expr": "up"}]}]}]}
    occurrences, errors, skipped = items(dashboard)
    assert [o.analysis.metrics() for o in occurrences] == [{"up"}]
    assert [s.datasource for s in skipped] == ["loki"] and errors == []
