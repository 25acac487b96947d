"""Replay Grafana-like dashboard traffic against Prometheus, and extract what rules/dashboards/queries use.

Replay (:func:`replay`): for each dashboard, resolve its template variables like Grafana does
(``label_values(...)`` through ``/api/v1/label/<name>/values``, ``query_result(...)`` as an instant
query plus the variable's regex), pick values with a seeded RNG, then send every panel target (rows and
collapsed rows included) for a couple of time ranges: range queries with Grafana's step
(``range / maxDataPoints`` rounded, at least the scrape interval) and start/end aligned to it, instant
queries for ``instant`` targets; ``$__interval``, ``$__rate_interval``, ``$__range``, ``$var``,
``${var}``, ``${var:regex}`` and ``[[var]]`` are substituted first. Extra (e.g. right-sizing) queries
can be appended. The number of requests is bounded.

Usage (:func:`promql_refs`, :func:`usage_summary`): per metric name, which label names an expression
mentions (matchers, ``by``/``without``, ``on``/``ignoring``, ``group_left/right``, ``label_replace`` /
``label_join`` sources, all taken from the metric's own selector and every enclosing aggregation or
binary operation) and whether some use passes the metric's full label set through (``all_labels``:
no enclosing ``by``-aggregation or one-to-one ``on`` match that drops labels).
"""

from __future__ import annotations

import json
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import promql_parser as pp
import yaml

SCRAPE_INTERVAL_S = 15
DEFAULT_RANGES_S = (6 * 3600, 24 * 3600)
_INSTANT_PANEL_TYPES = {"stat", "gauge", "bargauge", "table", "piechart"}

# ---------------------------------------------------------------- dashboards


@dataclass(frozen=True)
class PanelTarget:
    dashboard_uid: str
    dashboard_title: str
    panel_title: str
    panel_type: str
    ref_id: str
    expr: str
    instant: bool
    min_interval_s: int | None
    max_data_points: int


def iter_panels(panels: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every non-row panel, including the ones nested in (collapsed) rows."""
    for p in panels:
        if p.get("type") == "row":
            yield from iter_panels(p.get("panels") or [])
        else:
            yield p
            yield from iter_panels(p.get("panels") or [])  # old-style nested panels


def parse_duration(text: str) -> int:
    """Seconds of a Grafana/Prometheus duration such as ``1m``, ``90s``, ``1h30m``."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return int(sum(int(n) * units[u] for n, u in parts))


def format_duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def dashboard_targets(dashboard: dict[str, Any]) -> list[PanelTarget]:
    out = []
    for panel in iter_panels(dashboard.get("panels") or []):
        width = (panel.get("gridPos") or {}).get("w", 12)
        min_interval = panel.get("interval")
        for t in panel.get("targets") or []:
            expr = t.get("expr")
            if not expr or t.get("hide"):
                continue
            instant = bool(t.get("instant")) and not t.get("range", False)
            out.append(PanelTarget(
                dashboard_uid=dashboard.get("uid", ""), dashboard_title=dashboard.get("title", ""),
                panel_title=panel.get("title", ""), panel_type=panel.get("type", ""), ref_id=t.get("refId", ""),
                expr=expr, instant=instant or (panel.get("type") in _INSTANT_PANEL_TYPES and t.get("instant", False)),
                min_interval_s=parse_duration(t.get("interval") or min_interval) if (t.get("interval") or min_interval)
                else None,
                max_data_points=int(panel.get("maxDataPoints") or width * 1920 // 24),
            ))
    return out


def template_variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return list((dashboard.get("templating") or {}).get("list") or [])


def variable_query(var: dict[str, Any]) -> str:
    query = var.get("query")
    if isinstance(query, dict):
        query = query.get("query", "")
    return str(query or var.get("definition") or "")


_VAR_RE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]|\$(\w+)")
_REGEX_SPECIAL = re.compile(r"([$^*{}\[\]'+?.()|])")


def _regex_escape(value: str) -> str:
    """Grafana's prometheusSpecialRegexEscape: a regex escape written inside a PromQL string (so doubled)."""
    return _REGEX_SPECIAL.sub(r"\\\\\1", value.replace("\\", "\\\\\\\\"))


@dataclass
class VarValue:
    values: list[str]
    multi: bool  # a multi-value or include-all variable (Grafana then regex-escapes and ORs the values)
    raw: str | None = None  # used verbatim, like an "All" variable's custom all-value (".*")


def substitute(expr: str, variables: dict[str, VarValue], builtins: dict[str, str]) -> str:
    """Grafana's interpolation for a Prometheus data source (unknown variables are left as they are)."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3) or m.group(5)
        fmt = m.group(2) or m.group(4)
        if name in builtins:
            return builtins[name]
        var = variables.get(name)
        if var is None:
            return m.group(0)
        if var.raw is not None:
            return var.raw
        values = var.values or [""]
        if fmt == "regex" or (fmt is None and var.multi):
            escaped = [_regex_escape(v) for v in values]
            return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
        if fmt == "pipe":
            return "|".join(values)
        return values[0]

    return _VAR_RE.sub(repl, expr)


def static_builtins(range_s: int = 86400, interval_s: int = 60) -> dict[str, str]:
    rate = max(interval_s + SCRAPE_INTERVAL_S, 4 * SCRAPE_INTERVAL_S)
    return {
        "__interval": format_duration(interval_s), "__interval_ms": str(interval_s * 1000),
        "__rate_interval": format_duration(rate), "__range": format_duration(range_s),
        "__range_s": str(range_s), "__range_ms": str(range_s * 1000),
    }


def placeholder_variables(dashboard: dict[str, Any]) -> dict[str, VarValue]:
    """Values good enough to parse a dashboard's expressions without a Prometheus to ask."""
    out: dict[str, VarValue] = {}
    for var in template_variables(dashboard):
        name = var.get("name", "")
        if var.get("type") in ("custom", "interval", "constant", "textbox"):
            current = (var.get("current") or {}).get("value")
            first = str(variable_query(var)).split(",")[0].strip()
            out[name] = VarValue([str(current or first)], False)
        else:
            out[name] = VarValue(["placeholder"], bool(var.get("multi") or var.get("includeAll")))
    return out


_LABEL_VALUES_RE = re.compile(r"^\s*label_values\(\s*(?:(.*)\s*,\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$", re.S)
_QUERY_RESULT_RE = re.compile(r"^\s*query_result\((.*)\)\s*$", re.S)


def variable_promql(query: str) -> tuple[str | None, str | None]:
    """(PromQL inside a variable query, label it lists) for label_values / query_result variables."""
    m = _LABEL_VALUES_RE.match(query)
    if m:
        return (m.group(1).strip() or None) if m.group(1) else None, m.group(2)
    m = _QUERY_RESULT_RE.match(query)
    if m:
        return m.group(1).strip(), None
    return None, None


# ---------------------------------------------------------------- PromQL references


@dataclass
class MetricUse:
    labels: set[str] = field(default_factory=set)
    all_labels: bool = False

    def merge(self, other: MetricUse) -> None:
        self.labels |= other.labels
        self.all_labels = self.all_labels or other.all_labels


_LABEL_DROPPING_FUNCS = {"absent", "absent_over_time", "scalar", "vector", "time", "count_values"}
_KEEP_ALL_AGGS = {"topk", "bottomk", "limitk", "limit_ratio"}


def _record(sel: Any, ctx: frozenset[str], keep: bool, out: dict[str, MetricUse]) -> None:
    name = sel.name
    labels = set(ctx)
    matchers = list(sel.matchers.matchers) + [m for group in sel.matchers.or_matchers for m in group]
    for m in matchers:
        if m.name == "__name__":
            if name is None and str(m.op) == "MatchOp.Equal":
                name = m.value
        else:
            labels.add(m.name)
    if name is None:
        return  # a selector by regex on __name__: no single metric to attribute
    out.setdefault(name, MetricUse()).merge(MetricUse(labels, keep))


def _walk(node: Any, ctx: frozenset[str], keep: bool, out: dict[str, MetricUse]) -> None:
    if isinstance(node, pp.VectorSelector):
        _record(node, ctx, keep, out)
    elif isinstance(node, pp.MatrixSelector):
        _record(node.vector_selector, ctx, keep, out)
    elif isinstance(node, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
        _walk(node.expr, ctx, keep, out)
    elif isinstance(node, pp.AggregateExpr):
        mod = node.modifier
        grouping = frozenset(mod.labels) if mod is not None else frozenset()
        op = str(node.op)
        if op in _KEEP_ALL_AGGS:
            inner_keep = keep
        elif mod is None or mod.type == pp.AggModifierType.By:
            inner_keep = False
        else:  # without (...)
            inner_keep = keep
        _walk(node.expr, ctx | grouping, inner_keep, out)
        if node.param is not None and not isinstance(node.param, pp.StringLiteral | pp.NumberLiteral):
            _walk(node.param, ctx, keep, out)
    elif isinstance(node, pp.BinaryExpr):
        mod = node.modifier
        keep_l = keep_r = keep
        labels = ctx
        if mod is not None:
            matching = mod.matching
            on = matching is not None and matching.type == pp.LabelModifierType.Include
            labels = ctx | frozenset(matching.labels if matching else ()) | frozenset(mod.group_labels or ())
            card = mod.card
            op = str(node.op)
            if card == pp.VectorMatchCardinality.OneToOne:
                keep_l = keep_r = keep and not on
            elif card == pp.VectorMatchCardinality.ManyToOne:
                keep_r = keep and not on
            elif card == pp.VectorMatchCardinality.OneToMany:
                keep_l = keep and not on
            elif op in ("and", "unless"):  # the right side only filters
                keep_r = keep and not on
        _walk(node.lhs, labels, keep_l, out)
        _walk(node.rhs, labels, keep_r, out)
    elif isinstance(node, pp.Call):
        fname = node.func.name
        args = list(node.args)
        extra: set[str] = set()
        if fname == "label_replace" and len(args) >= 4:
            extra.add(args[3].val)
        elif fname == "label_join" and len(args) >= 4:
            extra |= {a.val for a in args[3:]}
        inner_keep = keep and fname not in _LABEL_DROPPING_FUNCS
        for arg in args:
            if not isinstance(arg, pp.StringLiteral | pp.NumberLiteral):
                _walk(arg, ctx | extra, inner_keep, out)


def promql_refs(expr: str) -> dict[str, MetricUse]:
    """Metric name -> labels the expression uses for it. Raises ValueError if ``expr`` does not parse."""
    try:
        ast = pp.parse(expr)
    except Exception as exc:  # the parser raises its own error types
        raise ValueError(str(exc)) from exc
    out: dict[str, MetricUse] = {}
    _walk(ast, frozenset(), True, out)
    return out


def variable_refs(query: str) -> dict[str, MetricUse]:
    """References of a template variable query (``label_values(sel, label)`` / ``query_result(expr)``)."""
    promql, label = variable_promql(query)
    refs = promql_refs(promql) if promql else {}
    if label:
        for use in refs.values():
            use.labels.add(label)
            use.all_labels = False
    return refs


def _merge_into(total: dict[str, MetricUse], refs: dict[str, MetricUse]) -> None:
    for name, use in refs.items():
        total.setdefault(name, MetricUse()).merge(use)


def rule_expressions(rule_files: Iterable[Path]) -> list[tuple[str, str, str]]:
    """(file name, group, expr) for every recording and alerting rule."""
    out = []
    for path in rule_files:
        doc = yaml.safe_load(path.read_text()) or {}
        for group in doc.get("groups") or []:
            for rule in group.get("rules") or []:
                out.append((path.name, group.get("name", ""), str(rule["expr"])))
    return out


def dashboard_usage(dashboards: Iterable[dict[str, Any]]) -> tuple[dict[str, MetricUse], list[dict[str, str]]]:
    """References of every panel target and variable query, plus the expressions that do not parse."""
    refs: dict[str, MetricUse] = {}
    unparsable: list[dict[str, str]] = []
    for dash in dashboards:
        variables = placeholder_variables(dash)
        builtins = static_builtins()
        for var in template_variables(dash):
            if var.get("type") != "query":
                continue
            query = substitute(variable_query(var), variables, builtins)
            try:
                _merge_into(refs, variable_refs(query))
            except ValueError as exc:
                unparsable.append({"dashboard": dash.get("uid", ""), "panel": f"variable {var.get('name')}",
                                   "expr": variable_query(var), "error": str(exc)})
        for target in dashboard_targets(dash):
            try:
                _merge_into(refs, promql_refs(substitute(target.expr, variables, builtins)))
            except ValueError as exc:
                unparsable.append({"dashboard": target.dashboard_uid, "panel": target.panel_title,
                                   "expr": target.expr, "error": str(exc)})
    return refs, unparsable


def _refs_json(refs: dict[str, MetricUse]) -> dict[str, dict[str, Any]]:
    return {name: {"labels": sorted(use.labels), "all_labels": use.all_labels} for name, use in sorted(refs.items())}


def usage_summary(rule_files: list[Path], dashboards: list[dict[str, Any]], queries: list[str]) -> dict[str, Any]:
    """What the rules, the dashboards and the replayed queries reference (ground-truth ``usage``)."""
    rules: dict[str, MetricUse] = {}
    for _, _, expr in rule_expressions(rule_files):
        _merge_into(rules, promql_refs(expr))
    dash, unparsable = dashboard_usage(dashboards)
    replayed: dict[str, MetricUse] = {}
    for q in queries:
        _merge_into(replayed, promql_refs(q))
    merged: dict[str, dict[str, Any]] = {}
    for source, refs in (("rules", rules), ("dashboards", dash), ("queries", replayed)):
        for name, use in refs.items():
            entry = merged.setdefault(name, {"labels": set(), "all_labels": False, "sources": []})
            entry["labels"] |= use.labels
            entry["all_labels"] = entry["all_labels"] or use.all_labels
            entry["sources"].append(source)
    metrics = {name: {"labels": sorted(e["labels"]), "all_labels": e["all_labels"], "sources": e["sources"]}
               for name, e in sorted(merged.items())}
    return {
        "sources": {"rules": _refs_json(rules), "dashboards": _refs_json(dash), "queries": _refs_json(replayed)},
        "metrics": metrics,
        "labels": sorted({label for e in metrics.values() for label in e["labels"]}),
        "unparsable": unparsable,
    }


# ---------------------------------------------------------------- replay


@dataclass
class QueryRecord:
    kind: str  # range | instant
    expr: str
    source: str  # "<dashboard uid> / <panel>", "variable <name>" or the extra query's label
    time: float | None = None
    start: float | None = None
    end: float | None = None
    step: int | None = None
    status: int = 0
    seconds: float = 0.0
    error: str | None = None
    series: int | None = None


@dataclass
class ReplayReport:
    queries: list[QueryRecord]
    label_value_calls: int

    @property
    def ok(self) -> list[QueryRecord]:
        return [q for q in self.queries if q.status == 200]

    def to_json(self) -> dict[str, Any]:
        return {"label_value_calls": self.label_value_calls, "queries": [asdict(q) for q in self.queries]}


def _grafana_interval(range_s: int, max_points: int, min_interval_s: int | None) -> int:
    """Grafana's ``$__interval``: range / max data points, rounded to a 'nice' interval."""
    raw = max(range_s / max(max_points, 1), float(min_interval_s or SCRAPE_INTERVAL_S))
    nice = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
    for n in nice:
        if raw <= n:
            return n
    return 86400


class _Client:
    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout

    def call(self, path: str, params: dict[str, Any] | list[tuple[str, Any]],
             method: str = "POST") -> tuple[int, dict[str, Any] | None, str | None]:
        """POST form-encoded like Grafana (GET where Prometheus 2.42 only allows GET)."""
        query = urllib.parse.urlencode(params)
        headers = {"User-Agent": "Grafana/11.3.0 (devstack replayer)"}
        if method == "GET":
            req = urllib.request.Request(f"{self.base}{path}?{query}", headers=headers)
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            req = urllib.request.Request(self.base + path, data=query.encode(), method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, json.loads(resp.read()), None
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                return exc.code, None, json.loads(text).get("error", text)
            except json.JSONDecodeError:
                return exc.code, None, text


def _format_result_line(item: dict[str, Any]) -> str:
    """A query_result() row as Grafana renders it before applying the variable regex."""
    metric = dict(item.get("metric") or {})
    name = metric.pop("__name__", "")
    labels = ",".join(f'{k}="{v}"' for k, v in metric.items())
    value = item.get("value") or [0, ""]
    return f"{name}{{{labels}}} {value[1]} {int(float(value[0]) * 1000)}"


def _js_regex(regex: str) -> re.Pattern[str] | None:
    if not regex:
        return None
    m = re.match(r"^/(.*)/([gimsuy]*)$", regex, re.S)
    pattern, flags = (m.group(1), m.group(2)) if m else (regex, "")
    return re.compile(pattern, re.I if "i" in flags else 0)


def replay(base_url: str, dashboards: list[dict[str, Any]], *, seed: int = 42, now: float | None = None,
           ranges_s: tuple[int, ...] = DEFAULT_RANGES_S, extra: list[tuple[str, str, float]] | None = None,
           max_queries: int = 200, workers: int = 2) -> ReplayReport:
    """Send the dashboards' queries (and ``extra`` = [(label, instant expr, time)]) to Prometheus."""
    client = _Client(base_url)
    rng = random.Random(seed)
    now = time.time() if now is None else now
    records: list[QueryRecord] = []
    label_calls = 0
    planned: list[QueryRecord] = []

    for dash in dashboards:
        uid = dash.get("uid", "")
        variables: dict[str, VarValue] = {}
        for var in template_variables(dash):
            name, vtype = var.get("name", ""), var.get("type")
            multi = bool(var.get("multi") or var.get("includeAll"))
            if vtype == "datasource":
                continue
            if vtype in ("custom", "interval", "constant"):
                options = [o.strip() for o in variable_query(var).split(",") if o.strip()]
                current = (var.get("current") or {}).get("value")
                variables[name] = VarValue([str(current)] if current else options[:1], False)
                continue
            query = substitute(variable_query(var), variables, static_builtins(ranges_s[0]))
            promql, label = variable_promql(query)
            found: list[str] = []
            if label is not None:  # label_values([selector,] label)
                params: list[tuple[str, Any]] = [("start", now - ranges_s[0]), ("end", now)]
                if promql:
                    params.append(("match[]", promql))
                status, data, _ = client.call(f"/api/v1/label/{label}/values", params, method="GET")
                label_calls += 1
                found = list(data.get("data") or []) if status == 200 and data else []
            elif promql:  # query_result(expr): an instant query, shown in the query log
                rec = QueryRecord("instant", promql, f"{uid} / variable {name}", time=now)
                found = [_format_result_line(r) for r in _run(client, rec)]
                records.append(rec)
            pattern = _js_regex(var.get("regex", ""))
            if pattern is not None:
                found = [m.group(1) if m.groups() else m.group(0) for m in map(pattern.search, found) if m]
            found = sorted(dict.fromkeys(found))
            if not found:  # Grafana would show an empty variable; match anything instead
                variables[name] = VarValue([], multi, raw=".*")
            elif multi and var.get("includeAll") and rng.random() < 0.5:
                variables[name] = VarValue(found, True)  # "All"
            elif multi:
                variables[name] = VarValue(sorted(rng.sample(found, min(len(found), rng.randint(1, 3)))), True)
            else:
                variables[name] = VarValue([rng.choice(found)], False)

        for range_s in ranges_s:
            for t in dashboard_targets(dash):
                interval = _grafana_interval(range_s, t.max_data_points, t.min_interval_s)
                expr = substitute(t.expr, variables, static_builtins(range_s, interval))
                source = f"{uid} / {t.panel_title}"
                if t.instant:
                    planned.append(QueryRecord("instant", expr, source, time=round(now, 3)))
                else:
                    end = (int(now) // interval) * interval
                    planned.append(QueryRecord("range", expr, source, start=end - range_s, end=end, step=interval))

    for label, expr, at in extra or []:
        planned.append(QueryRecord("instant", expr, label, time=at))

    budget = max(0, max_queries - len(records))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda r: _run(client, r), planned[:budget]))
    records += planned[:budget]
    return ReplayReport(records, label_calls)


def _run(client: _Client, rec: QueryRecord) -> list[dict[str, Any]]:
    """Send ``rec`` and fill in its outcome; return the vector/matrix result (empty on failure)."""
    t0 = time.monotonic()
    if rec.kind == "range":
        status, data, err = client.call("/api/v1/query_range",
                                        {"query": rec.expr, "start": rec.start, "end": rec.end, "step": rec.step})
    else:
        status, data, err = client.call("/api/v1/query", {"query": rec.expr, "time": rec.time})
    rec.seconds = round(time.monotonic() - t0, 4)
    rec.status, rec.error = status, err
    if status != 200 or not data:
        return []
    result = (data.get("data") or {}).get("result") or []
    if not isinstance(result, list):  # scalar / string results
        rec.series = 1
        return []
    rec.series = len(result)
    return result
