"""Canonical PromQL and group keys: one spelling per query, one group per dashboard panel."""

from __future__ import annotations

import promql_parser as pp
import pytest

from traceo_finops.recording_rules.normalize import Normalizer, render

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("a, b", [
    # label-matcher order and whitespace
    ('sum by (job) (rate(x_total{b="2",a=~"1"}[5m]))', 'sum  by(job)(rate(x_total{ a=~"1" , b="2" }[5m]))'),
    # `by` label order, and by written after the expression
    ("sum by (route, le) (rate(x[5m]))", "sum(rate(x[5m])) by (le, route)"),
    # equivalent durations
    ("rate(x[60s])", "rate(x[1m])"),
    ("rate(x[90m])", "rate(x[1h30m])"),
    ("max_over_time(x[1h:60s])", "max_over_time(x[60m:1m])"),
    # redundant parentheses, number notation, {__name__=...}
    ("(((a)) + b) * 2", "(a + b) * 2.0"),
    ('{__name__="up", job="x"}', 'up{job="x"}'),
    ("a / on(y, x) group_left(z) b", "a / on (x, y) group_left (z) b"),
])
def test_equivalent_spellings_have_one_canonical_form(a: str, b: str) -> None:
    n = Normalizer()
    assert n.canonical(a) == n.canonical(b)


@pytest.mark.parametrize("a, b", [
    ("rate(x[5m])", "irate(x[5m])"),
    ("sum by (a) (x)", "sum without (a) (x)"),
    ("a - b", "b - a"),
    ("a - (b - c)", "(a - b) - c"),
    ('x{a="1"}', 'x{a=~"1"}'),
    ("rate(x[5m] offset 1h)", "rate(x[5m])"),
    ("max_over_time(rate(x[5m])[1h:])", "max_over_time(rate(x[5m])[1h:1m])"),
])
def test_different_queries_stay_apart(a: str, b: str) -> None:
    n = Normalizer()
    assert n.canonical(a) != n.canonical(b)


@pytest.mark.parametrize("text", [
    'histogram_quantile(0.99, sum by (le, route) (rate(x_bucket{service=~"a|b", route!=""}[2m15s])))',
    "a ^ b ^ c", "2 ^ -x", "-(a + b) * c", "max_over_time(rate(x[5m])[1h:])", "(a + b)[5m:1m] offset 5m",
    'label_replace(x, "dst", "$1", "src", "(.*)")', "a > bool 1", "a and ignoring (z) b", "topk(5, x)",
    'count_values("v", x)', "x @ end()", "x offset -5m @ 100", 'x{a="q\\"uote\\\\d\\n"}', "sum(x)[5m:]",
    "a / on (b) group_right (c) d", "-x offset 1h", "time()", "vector(1) or absent(up)",
])
def test_the_canonical_form_is_promql_with_the_same_meaning(text: str) -> None:
    """Written back, parsed again: valid PromQL and a fixpoint (that the meaning is the same is checked on a
    real Prometheus in test_recording_rules_devstack)."""
    n = Normalizer()
    canonical = n.canonical(text)
    assert render(pp.parse(canonical)) == canonical


def test_group_key_folds_what_grafana_substitutes() -> None:
    """One dashboard panel over a 6 h and a 24 h range, with two variable selections: one group."""
    n = Normalizer()
    six = ('histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket'
           '{service=~"(a|b)", route=~"(/x)"}[1m])))')
    day = ('histogram_quantile(0.95, sum by (route, le) (rate(http_request_duration_seconds_bucket'
           '{route=~"(/y|/z)", service=~"c"}[135s])))')
    assert n.group_key(six) == n.group_key(day)
    assert n.canonical(six) != n.canonical(day)
    # $__range, a subquery's range and step, topk's k
    assert n.group_key("sum(increase(x[6h]))") == n.group_key("sum(increase(x[1d]))")
    assert n.group_key("max_over_time(rate(x[5m])[6h:5m])") == n.group_key("max_over_time(rate(x[1m])[1d:1m])")
    assert n.group_key("topk(5, x)") == n.group_key("topk(10, x)")
    # ...but not the labels a panel filters on, their operators, or its structure.
    assert n.group_key('rate(x{a="1"}[5m])') != n.group_key('rate(x{b="1"}[5m])')
    assert n.group_key('rate(x{a="1"}[5m])') != n.group_key('rate(x{a=~"1"}[5m])')
    assert n.group_key("sum by (a) (rate(x[5m]))") != n.group_key("sum by (b) (rate(x[5m]))")
    assert n.group_key("sum(rate(x[5m]))") != n.group_key("max(rate(x[5m]))")


def test_each_distinct_text_is_parsed_once() -> None:
    n = Normalizer()
    for _ in range(1000):
        n.canonical("sum by (a) (rate(x[5m]))")
        n.group_key("sum by (a) (rate(x[5m]))")
    assert n.parsed == 1 and n.cache_hits == 1999
    with pytest.raises(ValueError):
        n.parse("sum(")
    with pytest.raises(ValueError):  # a refused text is remembered too
        n.parse("sum(")
    assert n.parsed == 2


def test_bounded_cache_drops_the_oldest() -> None:
    n = Normalizer(cache_size=2)
    for q in ("a", "b", "c", "a"):
        n.parse(q)
    assert n.parsed == 4  # "a" was dropped when "c" came


@pytest.mark.parametrize("text", ["", "   ", "sum(", "rate(x[5m]", "{}", "x{a=}",
                                  "(" * 3000 + "x" + ")" * 3000])
def test_unreadable_queries_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        Normalizer().parse(text)
