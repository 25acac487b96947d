"""The PromQL walker: which labels of which metric an expression needs, and how it names them."""

from __future__ import annotations

import pytest

from traceo_finops.usage import ALL, AllLabels, PromQLAnalyzer, UsageKind, analyze_expression, analyze_selector
from traceo_finops.usage.model import ExpressionAnalysis, SelectorUsage

pytestmark = pytest.mark.unit

K = UsageKind


def one(expr: str, metric: str | None = None) -> SelectorUsage:
    """The single selector of ``metric`` (or the only selector) in ``expr``."""
    a = analyze_expression(expr)
    assert a.ok, a.error
    found = [s for s in a.selectors if metric is None or s.metric == metric]
    assert len(found) == 1, found
    return found[0]


def kinds(expr: str, metric: str) -> dict[str, set[UsageKind]]:
    out: dict[str, set[UsageKind]] = {}
    for s in analyze_expression(expr).for_metric(metric):
        for label, how in s.labels.items():
            out.setdefault(label, set()).update(how)
    return out


# --- selectors --------------------------------------------------------------------------------------


def test_bare_selector_needs_all_labels() -> None:
    s = one("up")
    assert s.metric == "up"
    assert s.need == ALL and s.all_labels
    assert s.labels == {}
    assert K.ALL_LABELS in s.kinds and K.AGGREGATED not in s.kinds


def test_rate_in_a_panel_keeps_every_label_and_matchers_are_recorded() -> None:
    s = one('rate(http_requests_total{job="api", code=~"5..", method!="GET", path!~"/health.*"}[5m])')
    assert s.need == ALL
    assert s.functions == ("rate",)
    assert {(m.label, m.op, m.value) for m in s.matchers} == {
        ("job", "=", "api"), ("code", "=~", "5.."), ("method", "!=", "GET"), ("path", "!~", "/health.*")}
    assert s.labels == {label: {K.MATCHER} for label in ("job", "code", "method", "path")}


def test_name_label_matcher_gives_the_exact_metric() -> None:
    s = one('{__name__="node_load1", instance="a"}')
    assert s.metric == "node_load1" and s.pattern is None
    assert s.labels == {"instance": {K.MATCHER}}


def test_name_regex_gives_a_pattern_that_matches_names_fully() -> None:
    s = one('sum by (job) ({__name__=~"foo_.*", job!=""})')
    assert s.metric is None and s.pattern is not None
    assert str(s.pattern) == "__name__=~'foo_.*'"
    assert s.pattern.matches("foo_total") and not s.pattern.matches("bar_foo_total")
    assert s.need == frozenset({"job"})
    assert K.NAME_PATTERN in s.kinds
    assert not s.pattern.matches_everything


def test_negative_name_matcher_and_match_everything() -> None:
    s = one('{__name__=~".+", __name__!~"go_.*"}')
    assert s.pattern is not None and s.pattern.matches("up") and not s.pattern.matches("go_goroutines")
    assert not s.pattern.matches_everything  # the negative matcher singles out names
    assert one('count by (__name__) ({__name__=~".+"})').pattern.matches_everything  # type: ignore[union-attr]


def test_selector_without_name_has_neither_metric_nor_pattern() -> None:
    s = one('{job="api"}')
    assert s.metric is None and s.pattern is None
    assert s.labels == {"job": {K.MATCHER}}


def test_or_matchers_give_one_usage_per_alternative() -> None:
    a = analyze_expression('{__name__="a", x="1" or __name__="b", y="2"}')
    assert [(s.metric, set(s.labels)) for s in a.selectors] == [("a", {"x"}), ("b", {"y"})]


def test_unicode_quotes_and_newlines_in_label_values() -> None:
    expr = 'count(m{path="/café \\"quoted\\"\\nline ☃", raw=`a"b\nc`, e="\\u00e9"})'
    s = one(expr)
    assert {m.label: m.value for m in s.matchers} == {"path": '/café "quoted"\nline ☃', "raw": 'a"b\nc', "e": "é"}
    assert s.need == frozenset({"path", "raw", "e"})


def test_offset_and_at_modifiers_do_not_change_usage() -> None:
    plain = one("sum by (a) (rate(x[5m]))")
    for expr in ("sum by (a) (rate(x[5m] offset 1h))", "sum by (a) (rate(x[5m] @ 1700000000))",
                 "sum by (a) (rate(x[5m] @ end() offset -5m))", "sum by (a) (rate(x[5m]))[1h:] offset 10m"):
        s = one(expr)
        assert (s.metric, s.need, s.labels, s.functions) == (plain.metric, plain.need, plain.labels, plain.functions)


# --- aggregations -----------------------------------------------------------------------------------


def test_sum_by_uses_only_its_labels_plus_matchers() -> None:
    s = one('sum by (job, route) (rate(http_requests_total{code="500"}[5m]))')
    assert s.need == frozenset({"job", "route", "code"})
    assert s.labels == {"job": {K.BY}, "route": {K.BY}, "code": {K.MATCHER}}
    assert s.aggregations == ("sum",) and s.functions == ("rate",)
    assert K.AGGREGATED in s.kinds and K.ALL_LABELS not in s.kinds


def test_trailing_by_clause_is_the_same_as_leading() -> None:
    assert one("sum(x) by (a)").need == one("sum by (a) (x)").need == frozenset({"a"})


def test_aggregation_without_grouping_needs_no_label() -> None:
    assert one("sum(rate(x[5m]))").need == frozenset()
    assert one("count(x)").need == frozenset()


def test_without_needs_all_labels_but_the_excluded() -> None:
    s = one("sum without (instance, pod) (x)")
    assert s.need == AllLabels(frozenset({"instance", "pod"}))
    assert "job" in s.need and "pod" not in s.need
    assert s.labels == {"instance": {K.WITHOUT}, "pod": {K.WITHOUT}}


def test_without_does_not_exclude_a_label_that_is_matched_on() -> None:
    s = one('sum without (mode) (x{mode="idle"})')
    assert s.need == ALL  # the matcher needs `mode`
    assert s.labels == {"mode": {K.WITHOUT, K.MATCHER}}


def test_nested_aggregations_inner_grouping_wins() -> None:
    s = one("sum by (a) (sum by (a, b) (x))")
    assert s.need == frozenset({"a", "b"})  # count-like outer ops would see b's groups: keep b
    assert s.aggregations == ("sum", "sum")
    assert s.labels == {"a": {K.BY}, "b": {K.BY}}
    # The outer `by (c)` cannot reach x: the inner sum already dropped c.
    assert one("max by (c) (sum by (b) (x))").need == frozenset({"b"})


def test_topk_keeps_the_input_series_labels() -> None:
    assert one("topk(5, x)").need == ALL
    s = one("topk by (job) (3, sum by (job, instance) (x))")
    assert s.need == frozenset({"job", "instance"})
    assert s.aggregations == ("sum", "topk")
    assert one("sum(topk by (job) (3, x))").need == frozenset({"job"})


def test_aggregation_parameters_are_walked() -> None:
    a = analyze_expression("topk(scalar(k), x)")
    assert {s.metric: s.need for s in a.selectors} == {"k": ALL, "x": ALL}
    assert one("quantile without (i) (0.9, x)").need == AllLabels(frozenset({"i"}))
    s = one('count_values("value", x) by (job)')
    assert s.need == frozenset({"job"})  # "value" is the output label, not one of x
    assert s.aggregations == ("count_values",)


# --- binary operators -------------------------------------------------------------------------------


def test_one_to_one_without_modifier_matches_on_all_labels() -> None:
    a = analyze_expression("a / b")
    assert {s.metric: s.need for s in a.selectors} == {"a": ALL, "b": ALL}


def test_on_restricts_both_sides() -> None:
    a = analyze_expression("sum by (job, instance) (a) / on (job) sum by (job) (b)")
    assert a.need("a") == frozenset({"job", "instance"})
    assert a.need("b") == frozenset({"job"})
    assert kinds("sum by (job, instance) (a) / on (job) sum by (job) (b)", "b") == {"job": {K.BY, K.ON}}
    # One-to-one `on`: the result only has the `on` labels, so the bare sides need nothing else.
    b = analyze_expression("x / on (job) y")
    assert b.need("x") == frozenset({"job"}) and b.need("y") == frozenset({"job"})


def test_ignoring_needs_all_but_the_ignored_labels() -> None:
    a = analyze_expression("x / ignoring (code) y")
    assert a.need("x") == AllLabels(frozenset({"code"})) == a.need("y")
    assert kinds("x / ignoring (code) y", "y") == {"code": {K.IGNORING}}


def test_group_left_many_side_keeps_all_one_side_gives_match_and_extra_labels() -> None:
    expr = "x * on (instance) group_left (nodename, kernel) node_uname_info"
    a = analyze_expression(expr)
    assert a.need("x") == ALL
    assert a.need("node_uname_info") == frozenset({"instance", "nodename", "kernel"})
    assert kinds(expr, "node_uname_info") == {"instance": {K.ON}, "nodename": {K.GROUP_LEFT},
                                              "kernel": {K.GROUP_LEFT}}
    assert kinds(expr, "x") == {"instance": {K.ON}}


def test_group_right_mirrors_group_left() -> None:
    expr = "sum by (job) (info_metric) * on (job) group_right (team) sum by (job, route) (x)"
    a = analyze_expression(expr)
    assert a.need("info_metric") == frozenset({"job"})  # the `one` side, already aggregated to job
    assert a.need("x") == frozenset({"job", "route"})
    expr2 = "owner * ignoring (pod) group_right (team) usage"
    b = analyze_expression(expr2)
    assert b.need("usage") == ALL
    assert b.need("owner") == AllLabels(frozenset({"pod"}))  # matches on all but pod; `team` is needed
    assert kinds(expr2, "owner") == {"pod": {K.IGNORING}, "team": {K.GROUP_RIGHT}}


def test_group_left_with_ignoring_on_the_many_side_still_keeps_everything() -> None:
    a = analyze_expression("x / ignoring (code) group_left y")
    assert a.need("x") == ALL  # x's series are the result, `code` included
    assert a.need("y") == AllLabels(frozenset({"code"}))


def test_set_operators() -> None:
    a = analyze_expression("x and on (job) y")
    assert a.need("x") == ALL and a.need("y") == frozenset({"job"})
    b = analyze_expression("sum by (job) (x) unless on (job) y")
    assert b.need("x") == frozenset({"job"}) and b.need("y") == frozenset({"job"})
    c = analyze_expression("x or on (job) y")
    assert c.need("y") == ALL  # `or` returns right-hand series too
    d = analyze_expression("x and y")
    assert d.need("y") == ALL  # matching on every label


def test_vector_scalar_operators_pass_through() -> None:
    assert one("sum by (a) (x) * 100").need == frozenset({"a"})
    assert one("sum by (a) (x) > bool 0.5").need == frozenset({"a"})
    assert one("2 ^ sum by (a) (x)").need == frozenset({"a"})
    assert one("-sum by (a) (x)").need == frozenset({"a"})
    assert one("(sum by (a) (x))").need == frozenset({"a"})
    assert one("sum by (a) (x) > time() - 3600").need == frozenset({"a"})


def test_scalar_of_a_vector_needs_all_its_labels() -> None:
    a = analyze_expression("sum by (a) (x) / scalar(y)")
    assert a.need("x") == frozenset({"a"}) and a.need("y") == ALL
    assert a.for_metric("y")[0].functions == ("scalar",)


def test_number_and_string_literals_use_nothing() -> None:
    for expr in ("1", "1 + 2 * 3", '"text"', "vector(1)", "time()", "pi() * 2", "-(1)"):
        a = analyze_expression(expr)
        assert a.ok and a.selectors == ()


# --- functions ----------------------------------------------------------------------------------------


def test_label_replace_source_is_needed_destination_is_only_named() -> None:
    expr = 'sum by (service) (label_replace(rate(x[5m]), "service", "$1", "job", "(.*)-svc"))'
    s = one(expr)
    assert s.need == frozenset({"service", "job"})
    assert s.labels == {"job": {K.LABEL_REPLACE_SRC}, "service": {K.BY, K.LABEL_REPLACE_DST}}
    assert s.functions == ("rate", "label_replace")


def test_label_join_sources() -> None:
    s = one('sum by (id) (label_join(x, "id", "/", "namespace", "pod"))')
    assert s.need == frozenset({"id", "namespace", "pod"})
    assert s.labels["namespace"] == {K.LABEL_JOIN_SRC} and s.labels["pod"] == {K.LABEL_JOIN_SRC}
    assert K.LABEL_JOIN_DST in s.labels["id"]


def test_histogram_quantile_reads_le() -> None:
    s = one("histogram_quantile(0.99, sum by (le, route) (rate(h_bucket[5m])))")
    assert s.need == frozenset({"le", "route"})
    assert s.labels["le"] == {K.BY, K.HISTOGRAM_LE}
    # A bare bucket inside keeps all labels anyway, `le` is still recorded as read.
    assert kinds("histogram_quantile(0.9, rate(h_bucket[5m]))", "h_bucket") == {"le": {K.HISTOGRAM_LE}}


def test_sort_by_label() -> None:
    s = one('sort_by_label(sum by (a, b) (x), "b")')
    assert s.need == frozenset({"a", "b"}) and s.labels["b"] == {K.BY, K.SORT_BY_LABEL}


def test_absent_needs_only_its_matchers() -> None:
    s = one('absent(up{job="api"})')
    assert s.need == frozenset({"job"}) and K.EXISTENCE in s.kinds
    assert one("absent_over_time(x[1h])").need == frozenset()


def test_nested_functions_and_subqueries() -> None:
    s = one("max_over_time(deriv(rate(x[5m])[30m:1m])[1h:])")
    assert s.need == ALL
    assert s.functions == ("rate", "deriv", "max_over_time")
    t = one("max_over_time(sum by (job) (rate(x[5m]))[1h:5m] offset 1d)")
    assert t.need == frozenset({"job"}) and t.aggregations == ("sum",)


def test_functions_with_scalar_arguments() -> None:
    a = analyze_expression("clamp(sum by (a) (x), scalar(lo), 10) + round(y, 5)")
    assert a.need("x") == frozenset({"a"}) and a.need("lo") == ALL and a.need("y") == ALL
    assert one("predict_linear(x[1h], 3600)").need == ALL


def test_same_metric_twice_unions_needs() -> None:
    a = analyze_expression("sum by (a) (x) + on () group_left sum by (b) (x{c='1'} == bool 1)")
    assert a.need("x") == frozenset({"a", "b", "c"})


# --- errors and caching -----------------------------------------------------------------------------


@pytest.mark.parametrize("expr", ["sum(", "rate(x[5m]", "x{a=~\"(unclosed\"}", "foo bar", "sum by (a (x)",
                                  "x{é=\"1\"}", 'x{a="line1\nline2"}', "   ", ""])
def test_expressions_that_do_not_parse_are_errors_not_exceptions(expr: str) -> None:
    a = analyze_expression(expr)
    assert not a.ok and a.selectors == ()
    assert a.error and isinstance(a.error, str)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    assert analyze_expression("(" * 300 + "x" + ")" * 300).need("x") == ALL
    # Past ~5,000 levels the parser would overflow its native stack: refused before parsing.
    for expr in ("(" * 100_000 + "x" + ")" * 100_000, "-" * 50_000 + "x", " or ".join(["x"] * 50_000)):
        a = analyze_expression(expr)
        assert not a.ok and "too deeply nested" in str(a.error)
    # Deep enough for Python's recursion limit but under the parser limit: still an error, not an exception.
    a = analyze_expression(" or ".join(["x"] * 1_500))
    assert not a.ok and a.error


def test_long_but_flat_expressions_are_fine() -> None:
    value = "((-" * 5_000  # brackets and operators inside a string do not count
    s = one(f'sum by (job) (x{{a="{value}"}})')
    assert s.need == frozenset({"job", "a"}) and s.matchers[0].value == value


def test_each_distinct_expression_is_parsed_once() -> None:
    analyzer = PromQLAnalyzer()
    first = analyzer.analyze("sum by (a) (x)")
    for _ in range(5):
        assert analyzer.analyze("sum by (a) (x)") is first
    analyzer.analyze("sum(")
    analyzer.analyze("sum(")
    assert analyzer.parsed == 2 and analyzer.cache_hits == 6


def test_cache_is_bounded() -> None:
    analyzer = PromQLAnalyzer(cache_size=2)
    for expr in ("a", "b", "c", "a"):
        analyzer.analyze(expr)
    assert analyzer.parsed == 4  # "a" was evicted by "c"


def test_analyze_selector_reads_only_the_given_labels() -> None:
    a = analyze_selector('up{job=~"api|web"}', ["instance"], K.TEMPLATE_VARIABLE)
    s = a.selectors[0]
    assert s.metric == "up" and s.need == frozenset({"instance", "job"})
    assert s.labels == {"instance": {K.TEMPLATE_VARIABLE}, "job": {K.MATCHER}}
    assert isinstance(analyze_selector("up{", ["x"], K.TEMPLATE_VARIABLE), ExpressionAnalysis)
    assert not analyze_selector("up{", ["x"], K.TEMPLATE_VARIABLE).ok


# --- the consumer: the innermost aggregation and what lies between it and the selector ----------------------


@pytest.mark.parametrize(("expr", "consumer", "path"), [
    ("topk(5, sum by (route) (rate(x[5m])))", "sum", ("rate",)),
    ("sum by (route) (topk(5, rate(x[5m])))", "topk", ("rate",)),
    ("count(sum by (a) (x))", "sum", ()),
    ("sort_desc(quantile(0.9, x))", "quantile", ()),
    ("max by (a) (x > 5) * 2", "max", ("series > scalar",)),
    ("sum(-label_replace(x, 'b', '$1', 'a', '(.*)') / 60)", "sum", ("label_replace", "-series", "series / scalar")),
    ("rate(x[5m])", None, ("rate",)),  # no aggregation: everything up to the root
    ("max_over_time(sum by (a) (rate(x[5m]))[1h:])", "sum", ("rate",)),
])
def test_consumer_is_the_innermost_aggregation(expr: str, consumer: str | None, path: tuple[str, ...]) -> None:
    s = one(expr, "x")
    assert (s.consumer, s.consumer_path) == (consumer, path)


def test_aggregation_parameters_and_set_operands_have_their_own_steps() -> None:
    k = one("topk(scalar(sum(k)), sum by (a) (x))", "k")
    assert k.consumer == "sum" and k.consumer_path == ()
    y = one("sum by (a) (x) unless on (a) y", "y")
    assert y.consumer is None and K.EXISTENCE in y.kinds and y.consumer_path == ("vector unless series",)
