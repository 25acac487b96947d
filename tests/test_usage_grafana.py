"""Grafana dashboards: variable substitution, nested rows, library panels, template variables, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from traceo_finops.usage import (
    ALL,
    AllLabels,
    Occurrence,
    ParseError,
    SourceKind,
    UsageKind,
    Variable,
    dashboard_file_occurrences,
    dashboard_occurrences,
    substitute,
    variable_query_analysis,
)
from traceo_finops.usage.grafana import placeholder

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data" / "usage"
K = UsageKind


def custom(name: str, *values: str) -> Variable:
    return Variable(name, "custom", ",".join(values), tuple(values), values[0] if values else "")


# --- substitution -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("expr", "expected"), [
    ("rate(x[$__rate_interval])", "rate(x[5m])"),
    ("rate(x[$__interval])", "rate(x[5m])"),
    ("increase(x[$__range])", "increase(x[5m])"),
    ("increase(x[${__range}])", "increase(x[5m])"),
    ("max_over_time(x[$__range:$__interval])", "max_over_time(x[5m:5m])"),
    ("x / $__range_s", "x / 300"),
    ("x / $__interval_ms", "x / 300000"),
    ("x @ ${__to:date:seconds}", "x @ 1700000000"),
    ("rate(x[[[interval]]])", "rate(x[5m])"),  # old [[var]] syntax inside a range
    ("rate(x[$custom_range])", "rate(x[5m])"),  # any variable in a range is a duration
    ("x offset $shift", "x offset 5m"),
    ('label_replace(x, "a", "$1", "b", "(.*)")', 'label_replace(x, "a", "$1", "b", "(.*)")'),
    ('x{a="$undefined"}', 'x{a="$undefined"}'),  # Grafana leaves unknown variables alone
    ('x{a="\\"$__interval\\""}', 'x{a="\\"5m\\""}'),
])
def test_substitute_keeps_expressions_parseable(expr: str, expected: str) -> None:
    assert substitute(expr).text == expected


def test_substitute_all_variable_syntaxes_in_label_values() -> None:
    variables = {"job": Variable("job", "query"), "env": custom("env", "prod")}
    sub = substitute('x{job=~"$job", a=~"${job:regex}", b=~"${job:pipe}", c="[[env]]", d="[[env:csv]]"}', variables)
    job, env = placeholder("job"), placeholder("env")
    assert sub.text == f'x{{job=~"{job}", a=~"{job}", b=~"{job}", c="{env}", d="{env}"}}'
    assert sub.placeholders == {job: "job", env: "env"}


def test_substitute_numeric_variables_outside_strings() -> None:
    variables = {"n": Variable("n", "textbox", "5", ("5",), "5"),
                 "threshold": Variable("threshold", "constant", "0.5", ("0.5",), "0.5")}
    sub = substitute("topk($n, x) > $threshold", variables)
    assert sub.text == "topk(5, x) > 0.5" and sub.placeholders == {}


def test_substitute_label_name_position_uses_placeholder() -> None:
    sub = substitute("sum by ($groupby) (x)", {"groupby": custom("groupby", "job")})
    assert sub.text == f"sum by ({placeholder('groupby')}) (x)"


# --- dynamic labels and metric names ------------------------------------------------------------------


def one_dashboard(expr: str, variables: list[dict[str, object]] | None = None) -> list[Occurrence | ParseError]:
    dashboard = {"uid": "d", "title": "D", "templating": {"list": variables or []},
                 "panels": [{"id": 1, "title": "P", "targets": [{"refId": "A", "expr": expr}]}]}
    return list(dashboard_occurrences(dashboard))


def only_selector(items: list[Occurrence | ParseError], metric: str | None = None):  # type: ignore[no-untyped-def]
    occurrences = [i for i in items if isinstance(i, Occurrence) and i.location.startswith("panel")]
    assert len(occurrences) == 1, items
    found = [s for s in occurrences[0].analysis.selectors if metric is None or s.metric == metric]
    assert len(found) == 1
    return found[0]


def test_dynamic_group_by_resolves_to_custom_variable_values() -> None:
    s = only_selector(one_dashboard("sum by ($groupby) (rate(x[$__rate_interval]))",
                                    [{"name": "groupby", "type": "custom", "query": "route, method : method_label"}]))
    assert s.need == frozenset({"route", "method_label"})
    assert s.labels == {"route": {K.BY, K.DYNAMIC}, "method_label": {K.BY, K.DYNAMIC}}
    assert s.dynamic_labels == frozenset() and K.DYNAMIC in s.kinds


def test_dynamic_group_by_from_a_query_variable_needs_all_labels() -> None:
    s = only_selector(one_dashboard("sum by ($lbl) (x)", [{"name": "lbl", "type": "query", "query": "label_names()"}]))
    assert s.need == ALL  # the viewer may group by any label
    assert s.dynamic_labels == frozenset({"lbl"})
    assert s.labels == {}  # the placeholder never shows up as a label name


def test_dynamic_without_keeps_only_fixed_exclusions() -> None:
    s = only_selector(one_dashboard("sum without (pod, $drop) (x)", [{"name": "drop", "type": "query", "query": "x"}]))
    assert s.need == AllLabels(frozenset({"pod"}))
    assert s.dynamic_labels == frozenset({"drop"})
    s2 = only_selector(one_dashboard("sum without ($drop) (x)", [{"name": "drop", "type": "custom", "query": "pod"}]))
    assert s2.need == AllLabels(frozenset({"pod"}))


def test_dynamic_label_replace_source() -> None:
    s = only_selector(one_dashboard('sum by (svc) (label_replace(x, "svc", "$1", "$src", "(.*)"))',
                                    [{"name": "src", "type": "custom", "query": "job"}]))
    assert s.need == frozenset({"svc", "job"})
    assert s.labels["job"] == {K.LABEL_REPLACE_SRC, K.DYNAMIC}


def test_label_value_variables_keep_the_matcher_label() -> None:
    s = only_selector(one_dashboard('sum by (route) (x{job=~"$job", instance=~"${instance:regex}"})',
                                    [{"name": "job", "type": "query", "query": "label_values(job)"},
                                     {"name": "instance", "type": "query", "query": "label_values(instance)"}]),
                      "x")
    assert s.need == frozenset({"route", "job", "instance"})
    assert s.dynamic_labels == frozenset()


def test_dynamic_metric_name_becomes_a_pattern() -> None:
    items = one_dashboard("rate(${metric}_total[5m])",
                          [{"name": "metric", "type": "custom", "query": "http_requests,rpc"}])
    s = only_selector(items)
    assert s.metric is None and s.pattern is not None
    assert s.pattern.matches("http_requests_total") and s.pattern.matches("rpc_total")
    assert not s.pattern.matches("other_total") and not s.pattern.matches("http_requests")
    assert {K.NAME_PATTERN, K.DYNAMIC} <= s.kinds
    unknown = only_selector(one_dashboard("$metric", [{"name": "metric", "type": "query", "query": "metrics(.*)"}]))
    assert unknown.pattern is not None and unknown.pattern.matches_everything


def test_unknown_variable_outside_strings_is_still_parseable() -> None:
    s = only_selector(one_dashboard('sum by ($nowhere) (x{a="$nowhere"})'))
    assert s.need == ALL and s.dynamic_labels == frozenset({"nowhere"})


# --- template variable queries ------------------------------------------------------------------------


def test_label_values_with_metric_uses_metric_label_and_matchers() -> None:
    a = variable_query_analysis('label_values(node_uname_info{job=~"node|edge"}, nodename)')
    (s,) = a.selectors
    assert s.metric == "node_uname_info"
    assert s.need == frozenset({"nodename", "job"})
    assert s.labels == {"nodename": {K.TEMPLATE_VARIABLE}, "job": {K.MATCHER}}
    assert K.TEMPLATE_VARIABLE in s.kinds


def test_label_values_of_a_bare_metric_and_of_a_label_alone() -> None:
    (s,) = variable_query_analysis("label_values(up, job)").selectors
    assert s.metric == "up" and s.need == frozenset({"job"})
    (w,) = variable_query_analysis("label_values(namespace)").selectors
    assert w.metric is None and w.pattern is None and w.need == frozenset({"namespace"})


def test_metrics_function_is_an_unanchored_name_pattern() -> None:
    (s,) = variable_query_analysis("metrics(node_memory_)").selectors
    assert s.pattern is not None and s.need == frozenset()
    assert s.pattern.matches("node_memory_Active_bytes") and not s.pattern.matches("node_cpu_seconds_total")
    assert not variable_query_analysis("metrics(([)").ok


def test_query_result_and_bare_queries_read_all_labels() -> None:
    a = variable_query_analysis("query_result(topk(3, sum by (route) (rate(x[5m]))))")
    assert a.need("x") == frozenset({"route"})
    assert variable_query_analysis("query_result(up)").need("up") == ALL
    assert variable_query_analysis('up{job="a"}').need("up") == ALL
    assert variable_query_analysis("label_names()").selectors == ()
    assert not variable_query_analysis("query_result(sum()").ok


# --- whole dashboards ---------------------------------------------------------------------------------


def nested_items() -> list[Occurrence | ParseError]:
    library = json.loads((DATA / "library_panels.json").read_text())
    return list(dashboard_file_occurrences(DATA / "dashboard_nested.json", library_panels=library))


def test_nested_dashboard_finds_every_prometheus_query() -> None:
    items = nested_items()
    occurrences = [i for i in items if isinstance(i, Occurrence)]
    by_location = {o.location: o for o in occurrences}
    assert set(by_location) == {
        "panel 1 'Requests' target A",
        "panel 2 'Nodes' > panel 3 'CPU' target A",
        "panel 2 'Nodes' > panel 4 '' (library panel 'lib-mem') target A",
        "panel 6 'p99' target A",
        "panel 7 'Top by label' target A",
        "panel 8 'Load' target A",
        "annotation 'Restarts'",
        "variable $job", "variable $instance", "variable $lbl", "variable $mem", "variable $ns", "variable $top",
    }
    assert {o.source.id for o in occurrences} == {"svc-overview"}
    assert {o.source.kind for o in occurrences} == {SourceKind.DASHBOARD}
    assert all(o.source.name == "Service overview" for o in occurrences)
    # The Loki target of panel 6 is skipped, the original text (with variables) is kept.
    assert by_location["panel 8 'Load' target A"].analysis.expression == "node_load1 > $threshold"


def test_nested_dashboard_label_usage() -> None:
    by_location = {i.location: i for i in nested_items() if isinstance(i, Occurrence)}
    requests = by_location["panel 1 'Requests' target A"].analysis
    assert requests.need("http_requests_total") == frozenset({"route", "method", "job"})
    cpu = by_location["panel 2 'Nodes' > panel 3 'CPU' target A"].analysis
    assert cpu.need("node_cpu_seconds_total") == ALL
    memory = by_location["panel 2 'Nodes' > panel 4 '' (library panel 'lib-mem') target A"].analysis
    assert memory.need("node_memory_MemAvailable_bytes") == frozenset({"instance"})
    assert by_location["panel 6 'p99' target A"].analysis.need("http_request_duration_seconds_bucket") == \
        frozenset({"le", "route", "job"})
    assert by_location["variable $job"].analysis.need("up") == frozenset({"job", "env"})
    assert by_location["variable $instance"].analysis.need("node_uname_info") == frozenset({"nodename", "job"})
    assert by_location["annotation 'Restarts'"].analysis.need("process_start_time_seconds") == ALL


def test_nested_dashboard_records_the_broken_panel() -> None:
    errors = [i for i in nested_items() if isinstance(i, ParseError)]
    assert len(errors) == 1
    (e,) = errors
    assert (e.source_kind, e.source_id, e.location) == \
        (SourceKind.DASHBOARD, "svc-overview", "panel 9 'Broken' target A")
    assert e.expression == "sum(rate(http_requests_total[5m])" and "parenthesis" in e.error


def test_legacy_rows_api_wrapper_and_embedded_library_panels() -> None:
    items = list(dashboard_file_occurrences(DATA / "dashboard_legacy_api.json"))
    occurrences = {i.location: i for i in items if isinstance(i, Occurrence)}
    assert set(occurrences) == {"row 0 'Disk' > panel 1 'Free' target A",
                                "panel 10 '' (library panel 'embedded') target A"}
    assert occurrences["row 0 'Disk' > panel 1 'Free' target A"].analysis.need("node_filesystem_avail_bytes") == ALL
    assert occurrences["panel 10 '' (library panel 'embedded') target A"].analysis.need(
        "node_disk_io_time_seconds_total") == frozenset({"device"})
    errors = [i for i in items if isinstance(i, ParseError)]
    assert [(e.source_id, e.location) for e in errors] == [("legacy", "panel 11 ''")]
    assert "library panel 'missing' not found" in errors[0].error


def test_library_panel_map_accepts_the_api_answer_shape() -> None:
    dashboard = {"uid": "u", "panels": [{"id": 1, "libraryPanel": {"uid": "lp"}}]}
    answer = {"result": {"uid": "lp", "model": {"targets": [{"refId": "A", "expr": "sum by (a) (x)"}]}}}
    (occ,) = dashboard_occurrences(dashboard, library_panels={"lp": answer})
    assert isinstance(occ, Occurrence) and occ.analysis.need("x") == frozenset({"a"})


@pytest.mark.parametrize(("name", "message"), [
    ("dashboard_not_json.json", "dashboard file is not JSON: Expecting value at line 1 column 1"),
    ("dashboard_not_grafana.json", "not a Grafana dashboard: no 'panels', 'rows' or 'templating' "
                                   "(keys: apiVersion, data, kind)"),
    ("dashboard_list.json", "not a Grafana dashboard: the JSON is a list, expected an object"),
])
def test_bad_dashboard_files_give_one_clear_error_naming_the_file(name: str, message: str) -> None:
    (item,) = list(dashboard_file_occurrences(DATA / name))
    assert isinstance(item, ParseError)
    assert item.source_kind == SourceKind.DASHBOARD
    assert item.source_id == str(DATA / name) and str(DATA / name) in item.location
    assert item.error == message


def test_missing_dashboard_file_is_an_error() -> None:
    (item,) = list(dashboard_file_occurrences(DATA / "nope.json"))
    assert isinstance(item, ParseError) and "cannot read dashboard file" in item.error


def test_malformed_panels_are_recorded_and_the_rest_is_read() -> None:
    dashboard = {"uid": "m", "panels": [
        "not a panel",
        {"id": 2, "targets": {"expr": "x"}},
        {"id": 3, "targets": ["nope", {"refId": "A", "expr": 42}, {"refId": "B", "expr": "sum by (a) (ok)"},
                              {"refId": "C", "expr": "   "}]},
        {"id": 4, "type": "row", "panels": "nope"},
    ]}
    items = list(dashboard_occurrences(dashboard))
    errors = [(i.location, i.error) for i in items if isinstance(i, ParseError)]
    assert errors == [
        ("panel 0", "panel is a str, expected an object"),
        ("panel 2 ''", "'targets' is a dict, expected a list"),
        ("panel 3 '' target 0", "target is a str, expected an object"),
        ("panel 3 '' target A", "'expr' is a int, expected a string"),
        ("panel 4 '' > panels", "'panels' is a str, expected a list"),
    ]
    (occ,) = [i for i in items if isinstance(i, Occurrence)]
    assert occ.analysis.need("ok") == frozenset({"a"})


def test_non_prometheus_targets_are_skipped() -> None:
    dashboard = {"uid": "s", "panels": [
        {"id": 1, "datasource": {"type": "loki"}, "targets": [{"expr": '{app="x"} |= "e"'}]},
        {"id": 2, "datasource": "Loki logs", "targets": [{"expr": '{app="x"}'}]},
        {"id": 3, "datasource": {"type": "datasource", "uid": "-- Mixed --"}, "targets": [
            {"datasource": {"type": "__expr__"}, "expression": "$A * 2"},
            {"datasource": {"type": "tempo"}, "expr": "nope"},
            {"datasource": {"type": "prometheus"}, "expr": "kept"}]},
    ]}
    items = list(dashboard_occurrences(dashboard))
    assert [i.analysis.metrics() for i in items if isinstance(i, Occurrence)] == [{"kept"}]
    assert not [i for i in items if isinstance(i, ParseError)]


def test_dashboard_without_uid_is_identified_by_file(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"title": "No uid", "panels": [{"targets": [{"expr": "up"}]}]}))
    (occ,) = list(dashboard_file_occurrences(path))
    assert isinstance(occ, Occurrence) and occ.source.id == str(path) and occ.source.file == str(path)


# --- typed placeholders: a variable gets a value of the type its position needs ----------------------------


@pytest.mark.parametrize(("expr", "variables", "expected"), [
    ("topk($limit, x)", {"limit": Variable("limit", "textbox")}, "topk(1, x)"),  # an empty textbox
    ("quantile_over_time($q, x[5m])", {}, "quantile_over_time(1, x[5m])"),  # undeclared
    ("x > bool $threshold", {}, "x > bool 1"),
    ("histogram_quantile($q, sum by (le) (rate(h[5m])))", {"q": custom("q", "0.5", "0.99")},
     "histogram_quantile(0.5, sum by (le) (rate(h[5m])))"),  # its numeric current value
    ("sum($metric)", {"metric": Variable("metric", "query", "metrics(node_.*)")},
     f"sum({placeholder('metric')})"),  # the variable lists metric names
    ('$metric{job="a"}', {}, f'{placeholder("metric")}{{job="a"}}'),  # followed by a selector: a name
    ("rate($m[5m])", {}, f"rate({placeholder('m')}[5m])"),
    ("${prefix}_total", {}, f"{placeholder('prefix')}_total"),  # part of a name
    ("sum by (a, $lbl) (x)", {}, f"sum by (a, {placeholder('lbl')}) (x)"),
    ("x * on ($l) group_left ($g) y", {}, f"x * on ({placeholder('l')}) group_left ({placeholder('g')}) y"),
])
def test_variables_get_the_type_of_their_position(expr: str, variables: dict[str, Variable], expected: str) -> None:
    assert substitute(expr, variables).text == expected


def test_undeclared_numbers_are_recorded_and_flip_swaps_value_types() -> None:
    sub = substitute("x > $threshold", {})
    assert sub.numbers == {"threshold": False} and sub.values and sub.placeholders == {}
    assert substitute("x > $threshold", {}, flip=True).text == f"x > {placeholder('threshold')}"
    assert substitute("sum by (a) ($k)", {}).numbers == {"k": False}


def test_a_value_variable_that_only_parses_as_a_selector_gets_the_retry() -> None:
    (occ,) = [i for i in one_dashboard("sum by (job) ($series)") if isinstance(i, Occurrence)]
    (s,) = occ.analysis.selectors
    assert s.metric is None and s.pattern is None and s.unresolved_name == "series"
    assert s.need == frozenset({"job"})


def test_label_values_arguments_are_names_first() -> None:
    items = one_dashboard("up", [{"name": "m", "type": "custom", "query": "node_load1,node_load5"},
                                 {"name": "v", "type": "query", "query": "label_values($m, instance)"}])
    (var,) = [i for i in items if isinstance(i, Occurrence) and i.location == "variable $v"]
    (s,) = var.analysis.selectors
    assert s.pattern is not None and s.pattern.matches("node_load5") and not s.pattern.matches("node_load15")
    assert s.need == frozenset({"instance"})


def test_an_undeclared_variable_in_a_name_matcher_is_reported() -> None:
    items = one_dashboard('rate({__name__=~"$gone"}[5m])')
    errors = [i.error for i in items if isinstance(i, ParseError)]
    assert len(errors) == 1 and "$gone" in errors[0] and "picks no metric" in errors[0]
