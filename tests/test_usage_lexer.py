"""The token scan of expressions the parser refuses: names are found, strings/durations/comments are not names."""

from __future__ import annotations

import random

import pytest

from traceo_finops.usage import analyze_expression
from traceo_finops.usage.lexer import mentions, tokens

pytestmark = pytest.mark.unit


def test_tokens_follow_promql_lexing() -> None:
    text = 'max_over_time(job:x:rate5m{a=~"b\\"c"}[5m:30s] offset 1h) # sum(y)\n> 1e3'
    assert [(t.kind, t.text) for t in tokens(text)] == [
        ("ident", "max_over_time"), ("open", "("), ("ident", "job:x:rate5m"), ("open", "{"), ("ident", "a"),
        ("op", "=~"), ("string", 'b"c'), ("close", "}"), ("open", "["), ("number", "5m"), ("op", ":"),
        ("number", "30s"), ("close", "]"), ("ident", "offset"), ("number", "1h"), ("close", ")"), ("op", ">"),
        ("number", "1e3")]
    assert [t.kind for t in tokens("rate(x[$__rate_interval]) * ${k} + [[v]]")].count("variable") == 3


@pytest.mark.parametrize(("expr", "metrics", "labels"), [
    ("sum by (route) (rate(http_requests_total{job=\"api\"}[5m])", {"http_requests_total"}, {"route", "job"}),
    ("topk(, sum without (pod) (container_memory_rss))", {"container_memory_rss"}, {"pod"}),
    ("a / on (instance) group_left (nodename) node_uname_info +", {"a", "node_uname_info"}, {"instance", "nodename"}),
    ('sum(rate(x{path="/api/sum(y)"}[5m]) # z_total\n', {"x"}, {"path"}),  # strings and comments name nothing
    ('{"my.service.requests", "http.route"="/"} or', {"my.service.requests"}, {"http.route"}),
    ('{__name__="node_load1", instance="a"', {"node_load1"}, {"instance"}),
    ("SUM BY (a) (b) AND ON (c)", {"b"}, {"a", "c"}),  # keywords are case-insensitive
])
def test_mentions_of_broken_expressions(expr: str, metrics: set[str], labels: set[str]) -> None:
    assert not analyze_expression(expr).ok
    m = mentions(expr)
    assert set(m.metrics) == metrics and set(m.labels) == labels


def test_name_patterns_and_nameless_selectors() -> None:
    m = mentions('sum by (job) ({__name__=~"api_.+", env="prod"}) / count({team="x", pod!=""}')
    (pattern,) = m.patterns
    assert pattern.matches("api_requests_total") and not pattern.matches("db_total")
    (group,) = m.nameless
    assert {(x.label, x.op, x.value) for x in group} == {("team", "=", "x"), ("pod", "!=", "")}
    assert m.may_select("kube_pod_info", ["team", "pod"]) and not m.may_select("kube_pod_info", ["team"])
    assert mentions('{__name__=~".+"} +').nameless == ((),)  # a match-everything pattern is name-less


def test_a_failed_analysis_carries_its_mentions() -> None:
    a = analyze_expression("histogram_quantile(0.9, sum by (le) (rate(lat_bucket[5m]))")
    assert not a.ok and a.mentions is not None and a.mentions.metrics == {"lat_bucket"}
    assert analyze_expression("sum(x)").mentions is None


def test_the_scan_never_raises() -> None:
    rng = random.Random(10)
    alphabet = 'abc_:{}()[]"\'`\\#=~!<>,$ 5m.\n'
    for _ in range(2_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        result = mentions(text)  # whatever the text: no exception, and no empty name
        assert all(result.metrics) and all(result.labels)
