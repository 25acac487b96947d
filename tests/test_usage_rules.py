"""Rules: Prometheus rule files, the ``/api/v1/rules`` answer and Mimir's ruler answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from traceo_finops.usage import (
    ALL,
    AllLabels,
    Occurrence,
    ParseError,
    SourceKind,
    rule_file_occurrences,
    rule_groups_occurrences,
    rule_text_occurrences,
    ruler_occurrences,
    rules_api_occurrences,
)

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data" / "usage"


def split(items: object) -> tuple[dict[str, Occurrence], list[ParseError]]:
    occ, err = {}, []
    for i in items:  # type: ignore[attr-defined]
        if isinstance(i, Occurrence):
            occ[i.source.id] = i
        else:
            err.append(i)
    return occ, err


def test_rule_file_every_rule_with_its_usage() -> None:
    occ, errors = split(rule_file_occurrences(DATA / "rules.yml"))
    assert set(occ) == {
        "rules.yml/http/record:job:http_requests:rate5m",
        "rules.yml/http/record:job_route:http_request_duration_seconds:p99",
        "rules.yml/http/alert:HighErrorRate",
        "rules.yml/nodes/alert:NodeDown",
        "rules.yml/nodes/record:instance:node_cpu:ratio",
    }
    assert occ["rules.yml/http/record:job:http_requests:rate5m"].analysis.need("http_requests_total") == \
        frozenset({"job", "code"})
    assert occ["rules.yml/http/record:job_route:http_request_duration_seconds:p99"].analysis.need(
        "http_request_duration_seconds_bucket") == frozenset({"job", "route", "le"})
    # many side: without (instance, pod); one side: without (instance, pod, code), matched ignoring code.
    assert occ["rules.yml/http/alert:HighErrorRate"].analysis.need("http_requests_total") == \
        AllLabels(frozenset({"instance", "pod"}))
    assert occ["rules.yml/nodes/alert:NodeDown"].analysis.need("up") == ALL
    assert occ["rules.yml/nodes/record:instance:node_cpu:ratio"].analysis.need("node_cpu_seconds_total") == \
        AllLabels(frozenset({"cpu"}))  # `mode` is matched on, so not excluded
    src = occ["rules.yml/nodes/alert:NodeDown"].source
    assert (src.kind, src.name, src.scope, src.group, src.file) == (
        SourceKind.RULE, "NodeDown", "rules.yml", "nodes", str(DATA / "rules.yml"))
    (e,) = errors
    assert (e.source_id, e.expression) == \
        ("rules.yml/nodes/record:broken:rule", "sum(rate(http_requests_total[5m]) by (job)")
    assert "rules.yml" in e.location and "broken:rule" in e.location and "parenthesis" in e.error


def test_yaml_error_names_the_file_and_line() -> None:
    (e,) = list(rule_file_occurrences(DATA / "rules_bad_yaml.yml"))
    assert isinstance(e, ParseError) and e.source_kind == SourceKind.RULE
    assert e.location == f"{DATA / 'rules_bad_yaml.yml'}:6:8"
    assert e.error.startswith("rule file is not valid YAML: ")


def test_not_a_rule_file_and_empty_file() -> None:
    (e,) = list(rule_file_occurrences(DATA / "rules_not_rules.yml"))
    assert isinstance(e, ParseError) and e.error == "not a Prometheus rule file: top level is a list"
    assert list(rule_file_occurrences(DATA / "rules_empty.yml")) == []
    (e2,) = list(rule_text_occurrences("kind: ConfigMap\n", file="cm.yml"))
    assert isinstance(e2, ParseError) and "mapping without 'groups'" in e2.error
    (e3,) = list(rule_file_occurrences(DATA / "missing.yml"))
    assert isinstance(e3, ParseError) and "cannot read rule file" in e3.error


def test_malformed_groups_and_rules_are_recorded() -> None:
    text = """
groups:
  - "not a group"
  - name: g
    rules: {record: x}
  - name: h
    rules:
      - "not a rule"
      - {labels: {a: b}}
      - {record: "r:no_expr"}
      - {alert: A, expr: 1}
      - {alert: A, expr: "up == 0"}
"""
    occ, errors = split(rule_text_occurrences(text, file="/etc/rules/odd.yml"))
    assert [e.error for e in errors] == [
        "group is a str, expected a mapping",
        "'rules' is a dict, expected a list",
        "rule is a str, expected a mapping",
        "rule has neither 'record' nor 'alert' (nor 'name'/'type')",
        "rule has no expression",
    ]
    # Two alerts named A in one group: distinct ids; a YAML number is a valid expression.
    assert set(occ) == {"odd.yml/h/alert:A", "odd.yml/h/alert:A#2"}
    assert occ["odd.yml/h/alert:A"].analysis.selectors == ()
    assert occ["odd.yml/h/alert:A#2"].analysis.need("up") == ALL


def rules_api_answer() -> dict[str, object]:
    return {"status": "success", "data": {"groups": [
        {"name": "http", "file": "/etc/prometheus/rules.yml", "interval": 30, "rules": [
            {"name": "job:http_requests:rate5m", "type": "recording", "health": "ok",
             "query": 'sum by (job) (rate(http_requests_total{code!~"5.."}[5m]))'},
            {"name": "HighLatency", "type": "alerting", "state": "inactive", "duration": 600,
             "query": "histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m]))) > 1", "alerts": []},
            {"name": "Broken", "type": "alerting", "query": "sum("},
        ]}]}}


def test_rules_api_answer_whole_data_or_groups() -> None:
    answer = rules_api_answer()
    for shape in (answer, answer["data"], answer["data"]["groups"]):  # type: ignore[index]
        occ, errors = split(rules_api_occurrences(shape))
        assert set(occ) == {"rules.yml/http/record:job:http_requests:rate5m", "rules.yml/http/alert:HighLatency"}
        assert occ["rules.yml/http/alert:HighLatency"].analysis.need("h_bucket") == frozenset({"le"})
        assert [(e.source_id, e.expression) for e in errors] == [("rules.yml/http/alert:Broken", "sum(")]


def test_rule_read_from_file_and_api_gets_the_same_id() -> None:
    from_file, _ = split(rule_file_occurrences(DATA / "rules.yml"))
    from_api, _ = split(rules_api_occurrences(rules_api_answer()))
    assert "rules.yml/http/record:job:http_requests:rate5m" in set(from_file) & set(from_api)


def test_rules_api_wrong_shape() -> None:
    (e,) = list(rules_api_occurrences({"status": "success", "data": {"groups": "nope"}}))
    assert isinstance(e, ParseError) and e.error == "'groups' is a str, expected a list"


def test_mimir_ruler_mapping_and_yaml_text() -> None:
    mapping = {"team-a": [{"name": "g1", "rules": [{"record": "job:x:sum", "expr": "sum by (job) (x)"}]}],
               "team-b": [{"name": "g1", "rules": [{"alert": "Y", "expr": 'y{env="prod"} > 1'}]}]}
    occ, errors = split(ruler_occurrences(mapping, tenant="tenant-1"))
    assert not errors
    assert set(occ) == {"tenant-1:team-a/g1/record:job:x:sum", "tenant-1:team-b/g1/alert:Y"}
    assert occ["tenant-1:team-b/g1/alert:Y"].analysis.need("y") == ALL
    text = "team-a:\n  - name: g1\n    rules:\n      - record: job:x:sum\n        expr: sum by (job) (x)\n"
    occ2, _ = split(ruler_occurrences(text))
    assert set(occ2) == {"team-a/g1/record:job:x:sum"}
    assert occ2["team-a/g1/record:job:x:sum"].analysis.need("x") == frozenset({"job"})


def test_mimir_ruler_bad_answers() -> None:
    (e,) = list(ruler_occurrences("team-a: [\n", tenant="t"))
    assert isinstance(e, ParseError) and e.error.startswith("rule file is not valid YAML") and "ruler t" in e.location
    (e2,) = list(ruler_occurrences("- a\n- b\n"))
    assert isinstance(e2, ParseError) and "not a ruler answer" in e2.error
    assert list(ruler_occurrences({})) == []


def test_rule_groups_from_client_shape() -> None:
    groups = [{"name": "g", "rules": [{"record": "a:b", "expr": "sum without (pod) (c)"}]}]
    (occ,) = list(rule_groups_occurrences(groups, scope="prom-1"))
    assert isinstance(occ, Occurrence) and occ.source.id == "prom-1/g/record:a:b"
    assert occ.analysis.need("c") == AllLabels(frozenset({"pod"}))
