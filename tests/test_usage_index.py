"""UsageIndex: usage per metric and per label over rules, dashboards and query logs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from traceo_finops.usage import (
    ALL,
    AllLabels,
    ParseError,
    Source,
    SourceKind,
    UsageIndex,
    UsageKind,
    query_source,
    union_need,
)

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data" / "usage"
START = datetime(2024, 5, 1, 10, tzinfo=UTC)
END = datetime(2024, 5, 1, 11, tzinfo=UTC)
K = UsageKind


def q(query: str, ts: str = "2024-05-01T10:00:00Z", rule: tuple[str, str] | None = None) -> str:
    d: dict[str, object] = {"params": {"query": query}, "ts": ts}
    d["ruleGroup" if rule else "httpRequest"] = {"file": rule[0], "name": rule[1]} if rule else {"path": "/q"}
    return json.dumps(d)


def full_index(**kwargs: object) -> UsageIndex:
    index = UsageIndex(**kwargs)  # type: ignore[arg-type]
    index.add_rule_file(DATA / "rules.yml")
    library = json.loads((DATA / "library_panels.json").read_text())
    for name in ("dashboard_nested.json", "dashboard_legacy_api.json", "dashboard_not_json.json",
                 "dashboard_not_grafana.json"):
        index.add_dashboard_file(DATA / name, library_panels=library)
    index.add_rule_file(DATA / "rules_bad_yaml.yml")
    index.add_prometheus_query_log(DATA / "query.log", START, END)
    index.add_mimir_query_stats(DATA / "query-frontend.log", START, END)
    return index


def test_label_need_algebra() -> None:
    assert union_need(frozenset({"a"}), frozenset({"b"})) == frozenset({"a", "b"})
    assert union_need(frozenset({"a"}), AllLabels(frozenset({"a", "b"}))) == AllLabels(frozenset({"b"}))
    assert union_need(AllLabels(frozenset({"a", "b"})), AllLabels(frozenset({"b", "c"}))) == AllLabels(frozenset({"b"}))
    assert union_need(ALL, frozenset({"x"})) == ALL
    assert "anything" in ALL and "b" not in AllLabels(frozenset({"b"}))


def test_counts_per_source_kind_and_per_label() -> None:
    index = full_index()
    c = index.metric_counts("http_requests_total")
    # rules: job:http_requests:rate5m and HighErrorRate (the broken rule does not count);
    # dashboards: svc-overview (panel 1 and the $top variable, once);
    # queries: the log's `sum by (job)` (2 runs) and `count(...)`, Mimir's `sum by (route)`.
    assert (c.rules, c.dashboards, c.queries, c.query_executions) == (2, 1, 3, 4)
    assert c.aggregations == {"sum": 5, "count": 1, "topk": 1}
    labels = index.label_counts("http_requests_total")
    assert set(labels) == {"code", "instance", "pod", "job", "route", "method", "path"}
    assert (labels["code"].rules, labels["code"].dashboards, labels["code"].queries) == (2, 0, 0)
    assert labels["code"].kinds == {K.MATCHER: 2, K.IGNORING: 1, K.WITHOUT: 1}
    assert labels["job"].kinds == {K.BY: 2, K.MATCHER: 1}  # rule by, log query by, panel matcher
    assert labels["route"].kinds == {K.BY: 2, K.DYNAMIC: 1, K.MATCHER: 1}
    assert labels["path"].queries == 1 and labels["path"].query_executions == 1
    assert index.labels_named_only_as_unneeded("http_requests_total") == {"instance", "pod"}


def test_labels_needed_union_over_every_usage() -> None:
    index = full_index()
    # HighErrorRate keeps all but instance/pod; the rest name specific labels.
    assert index.labels_needed("http_requests_total") == AllLabels(frozenset({"instance", "pod"}))
    assert index.labels_needed("http_request_duration_seconds_bucket") == frozenset({"job", "route", "le"})
    assert index.labels_needed("node_disk_io_time_seconds_total") == frozenset({"device"})
    assert index.labels_needed("node_uname_info") == frozenset({"nodename", "job"})
    assert index.labels_needed("up") == ALL
    assert index.label_needed("http_requests_total", "job") and not index.label_needed("http_requests_total", "pod")
    assert index.labels_needed("never_seen") == frozenset() and not index.metric_used("never_seen")


def test_metric_used_by_name_pattern_and_not_by_wildcards() -> None:
    index = full_index()
    # `metrics(node_memory_.*_bytes)` in a template variable: names matter, no label does.
    assert index.metric_used("node_memory_Cached_bytes")
    assert index.labels_needed("node_memory_Cached_bytes") == frozenset()
    assert [u.via_pattern for u in index.usages("node_memory_Cached_bytes")] == [True]
    assert "node_memory_Cached_bytes" not in index.metrics()
    # `label_values(namespace)` names no metric: kept apart.
    (w,) = index.wildcard_usages()
    assert w.location == "variable $ns" and set(w.selector.labels) == {"namespace"}
    assert not index.metric_used("kube_pod_info")
    with_wildcards = full_index(apply_wildcards=True)
    assert with_wildcards.metric_used("kube_pod_info")
    assert with_wildcards.labels_needed("kube_pod_info") == frozenset({"namespace"})


def test_rule_evaluations_are_attributed_to_rules_not_queries() -> None:
    index = full_index()
    evaluations = index.rule_evaluations()
    assert evaluations["rules.yml/http/record:job:http_requests:rate5m"] == 1
    # A group no rule file described: counted as a rule of its own, once, with its evaluations.
    orphan = [rid for rid in evaluations if rid.startswith("extra.yml/extra/expr:")]
    assert len(orphan) == 1 and evaluations[orphan[0]] == 2
    c = index.metric_counts("go_goroutines")
    assert (c.rules, c.queries) == (1, 0)
    # The rule's evaluation did not become an ad-hoc query.
    assert all(u.source.kind != SourceKind.QUERY for u in index.usages("http_requests_total")
               if "5.." in u.expression and "!~" in u.expression)


def test_rule_evaluation_matches_a_rule_written_differently() -> None:
    index = UsageIndex()
    index.add_rule_text('groups:\n- name: g\n  rules:\n  - record: r\n    expr: |\n      sum by (a) (\n'
                        '        x{job="j", env="e"}\n      )\n', file="r.yml")
    # Prometheus logs its own rendering: one line, matchers sorted.
    index.add_prometheus_query_log([q('sum by (a) (x{env="e",job="j"})', rule=("/etc/r.yml", "g"))], START, END)
    assert index.rule_evaluations() == {"r.yml/g/record:r": 1}
    assert index.metric_counts("x").rules == 1


def test_rule_evaluations_seen_before_their_rules_still_count_once() -> None:
    index = UsageIndex()
    index.add_prometheus_query_log([q("sum by (a) (x)", rule=("/etc/r.yml", "g"))], START, END)
    assert index.metric_counts("x").rules == 1  # not known yet: an orphan rule
    index.add_rule_text("groups:\n- name: g\n  rules:\n  - record: r\n    expr: sum by (a) (x)\n", file="r.yml")
    assert index.metric_counts("x").rules == 1
    assert index.rule_evaluations() == {"r.yml/g/record:r": 1}


def test_same_query_from_two_logs_is_one_query_with_summed_executions() -> None:
    index = UsageIndex()
    index.add_prometheus_query_log([q("sum by (a) (x)"), q("sum by (a) (x)")], START, END)
    index.add_mimir_query_stats(['ts=2024-05-01T10:10:00Z msg="query stats" param_query="sum by (a) (x)" '
                                 'status=success'], START, END)
    c = index.metric_counts("x")
    assert (c.queries, c.query_executions) == (1, 3)
    assert index.usages("x")[0].source == query_source("sum by (a) (x)", "query.log")


def test_one_expression_using_a_metric_twice_counts_once() -> None:
    index = UsageIndex()
    index.add_prometheus_query_log([q("x / x offset 1d")] * 4, START, END)
    c = index.metric_counts("x")
    assert (c.queries, c.query_executions) == (1, 4)
    assert len(index.usages("x")) == 2


def test_same_dashboard_added_twice_counts_once() -> None:
    index = UsageIndex()
    for _ in range(2):
        index.add_dashboard_file(DATA / "dashboard_legacy_api.json")
    assert index.metric_counts("node_filesystem_avail_bytes").dashboards == 1


def test_exclude_query_drops_own_census_queries() -> None:
    census = 'count by (__name__) ({__name__=~".+"})'
    index = UsageIndex(exclude_query=lambda text: text == census)
    index.add_prometheus_query_log([q(census), q("up")], START, END)
    assert index.metrics() == ["up"] and index.wildcard_usages() == []
    plain = UsageIndex()
    plain.add_prometheus_query_log([q(census)], START, END)
    assert len(plain.wildcard_usages()) == 1 and not plain.metric_used("up")  # matches everything: a wildcard


def test_unicode_quote_and_newline_label_values_in_every_source(tmp_path: Path) -> None:
    value = 'caf\u00e9 "q" \\ \n ☃'
    quoted = json.dumps(value, ensure_ascii=False)  # a valid PromQL double-quoted string
    expr = f"sum by (team) (x{{path={quoted}}})"
    rules = tmp_path / "r.yml"
    rules.write_text("groups:\n- name: g\n  rules:\n  - record: r\n    expr: " + json.dumps(expr) + "\n", "utf-8")
    dash = tmp_path / "d.json"
    dash.write_text(json.dumps({"uid": "u", "panels": [{"targets": [{"expr": expr}]}]}, ensure_ascii=False), "utf-8")
    index = UsageIndex()
    index.add_rule_file(rules)
    index.add_dashboard_file(dash)
    index.add_prometheus_query_log([q(expr).encode("utf-8")], START, END)
    logfmt_value = expr.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    index.add_mimir_query_stats([f'ts=2024-05-01T10:00:00Z msg="query stats" param_query="{logfmt_value}"'],
                                START, END)
    assert index.errors == []
    c = index.metric_counts("x")
    assert (c.rules, c.dashboards, c.queries, c.query_executions) == (1, 1, 1, 2)
    assert index.labels_needed("x") == frozenset({"team", "path"})
    assert {m.value for u in index.usages("x") for m in u.selector.matchers} == {value}


def test_errors_cover_every_bad_input_with_source_and_location() -> None:
    index = full_index()
    by_kind: dict[SourceKind, list[ParseError]] = {}
    for e in index.errors:
        by_kind.setdefault(e.source_kind, []).append(e)
    assert sorted(e.location for e in by_kind[SourceKind.RULE]) == [
        f"{DATA / 'rules.yml'} group 'nodes' record 'broken:rule'", f"{DATA / 'rules_bad_yaml.yml'}:6:8"]
    dashboards = {e.source_id: e.error for e in by_kind[SourceKind.DASHBOARD]}
    assert dashboards[str(DATA / "dashboard_not_json.json")].startswith("dashboard file is not JSON")
    assert dashboards[str(DATA / "dashboard_not_grafana.json")].startswith("not a Grafana dashboard")
    assert set(dashboards) == {"svc-overview", "legacy", str(DATA / "dashboard_not_json.json"),
                               str(DATA / "dashboard_not_grafana.json")}
    queries = [e.location for e in by_kind[SourceKind.QUERY]]
    log = str(DATA / "query.log")
    assert queries == [f"{log}:9", f"{log}:10", f"{log}:11", f"{log}:12", f"{log}:14", log,
                       f"{DATA / 'query-frontend.log'}:5"]
    assert next(e for e in by_kind[SourceKind.QUERY] if e.location == log).expression == "sum("
    assert all(str(e) for e in index.errors)


def test_summary_totals() -> None:
    s = full_index().summary()
    assert s["rules"] == 6  # five in rules.yml that parse, one only seen in the log
    assert s["dashboards"] == 2 and s["queries"] == 5
    assert s["query_executions"] == 8  # 5 ad-hoc in the Prometheus log window, 3 in Mimir's
    assert s["rule_evaluations"] == 3 and s["log_lines"] == 23 and s["log_bad_lines"] == 6
    assert s["parse_errors"] == 13 and s["wildcard_usages"] == 1 and s["pattern_usages"] == 1


def test_recorded_metrics_and_add_expression() -> None:
    index = full_index()
    recorded = index.recorded_metrics()
    assert recorded["job:http_requests:rate5m"] == {"http_requests_total"}
    assert recorded["instance:node_cpu:ratio"] == {"node_cpu_seconds_total"}
    notebook = Source(SourceKind.QUERY, "notebook:1", "capacity notebook")
    index.add_expression("sum by (zone) (kube_node_info)", notebook, "cell 3", executions=7)
    index.add_expression("sum by (", notebook, "cell 4")
    assert index.metric_counts("kube_node_info").query_executions == 7
    assert index.errors[-1].location == "cell 4"
