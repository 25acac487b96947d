"""Usage from Grafana dashboards: panels (nested rows, library panels), annotations and template variables.

Grafana variables are Grafana's text templating, not PromQL: they are replaced *before* parsing, by what
keeps the expression parseable in its position — a duration inside ``[...]`` and after ``offset``, a
number for ``$__range_s``-like variables and numeric values, and otherwise a placeholder identifier
(``__grafana_var_<name>__``), which is a valid label name, metric name and string. After the walk, a
placeholder that stands where a label name goes is resolved to the variable's known values (custom and
constant variables) or, when those are not knowable (query variables), recorded as a *dynamic* label —
and, because the viewer may pick any label, the selector then needs ALL labels. A placeholder in a
metric name becomes a ``__name__`` pattern.

Grafana's Prometheus variable functions (``label_values``, ``label_names``, ``metrics``, ``query_result``)
are recognised with Grafana's own grammar; the PromQL inside them goes through the real parser.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from traceo_finops.usage.model import (
    ALL,
    AllLabels,
    ExpressionAnalysis,
    LabelNeed,
    NameMatcher,
    NamePattern,
    Occurrence,
    ParseError,
    SelectorUsage,
    Source,
    SourceKind,
    UsageKind,
)
from traceo_finops.usage.promql import PromQLAnalyzer, analyze_selector

PLACEHOLDER_PREFIX = "__grafana_var_"
RANGE_VALUE = "5m"  # any valid duration: the range never changes which labels are used
NUMBER_VALUE = "300"
TIMESTAMP_VALUE = "1700000000"

# Grafana's variable syntax ($var, [[var]], [[var:fmt]], ${var}, ${var.field}, ${var:fmt}), as Grafana matches it.
_VARIABLE = re.compile(r"\$(\w+)|\[\[\s*(\w+)(?::(\w+))?\s*\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")
_BUILTIN_DURATIONS = {"__interval", "__rate_interval", "__range", "__auto", "__auto_interval"}
_BUILTIN_NUMBERS = {"__range_s": NUMBER_VALUE, "__range_ms": "300000", "__interval_ms": "300000",
                    "__rate_interval_ms": "300000", "__from": "1700000000000", "__to": "1700000000000"}
# Grafana's Prometheus variable-query grammar (public/app/plugins/datasource/prometheus/metric_find_query.ts).
_LABEL_NAMES = re.compile(r"^label_names\(\s*(.*?)\s*\)\s*$", re.DOTALL)
_LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?([a-zA-Z_$][a-zA-Z0-9_]*)\)\s*$", re.DOTALL)
_METRICS = re.compile(r"^metrics\((.+)\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^query_result\((.+)\)\s*$", re.DOTALL)
_PROMETHEUS_TYPES = {"prometheus", "grafana-amazonprometheus-datasource", "grafana-azureprometheus-datasource"}
_OTHER_DATASOURCE_NAMES = ("loki", "tempo", "elasticsearch", "influx", "graphite", "cloudwatch", "mysql",
                           "postgres", "jaeger", "zipkin")
_ALL_VALUES = {"$__all", "All", "all", ""}
_FIXED_VALUE_TYPES = {"custom", "constant", "textbox", "interval"}


@dataclass(frozen=True)
class Variable:
    """A dashboard template variable, as far as usage analysis cares."""

    name: str
    type: str
    query: str = ""
    values: tuple[str, ...] = ()  # the values it can take, when the dashboard fixes them (custom, constant)
    current: str = ""

    @property
    def fixed(self) -> bool:
        """True when the dashboard lists every value (a query variable's come from the data at view time)."""
        return self.type in _FIXED_VALUE_TYPES and bool(self.values)


@dataclass
class Substituted:
    """An expression with Grafana variables replaced; ``placeholders`` maps placeholder → variable name."""

    text: str
    placeholders: dict[str, str] = field(default_factory=dict)


def placeholder(name: str) -> str:
    return f"{PLACEHOLDER_PREFIX}{name}__"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _builtin(name: str, fmt: str | None) -> str | None:
    if name in _BUILTIN_DURATIONS or name.startswith("__auto_interval"):
        return RANGE_VALUE
    if name in _BUILTIN_NUMBERS:
        if name in ("__from", "__to") and fmt and "seconds" in fmt:
            return TIMESTAMP_VALUE
        return _BUILTIN_NUMBERS[name]
    return None


def substitute(expression: str, variables: Mapping[str, Variable] | None = None) -> Substituted:
    """Replace Grafana variables in ``expression`` by values that keep it parseable in their position.

    Known variables (``variables`` plus Grafana's built-ins) are replaced everywhere; an unknown ``$name``
    only outside string literals, so ``label_replace(..., "$1", ...)`` keeps its capture-group references.
    """
    variables = variables or {}
    out: list[str] = []
    found: dict[str, str] = {}
    quote: str | None = None
    depth = 0
    i, n = 0, len(expression)
    while i < n:
        c = expression[i]
        if quote is not None and c == "\\" and quote != "`":
            out.append(expression[i:i + 2])
            i += 2
            continue
        if c in "$[":
            m = _VARIABLE.match(expression, i)
            if m is not None:
                value = _replacement(m, variables, quote, depth, "".join(out[-16:]), found)
                if value is not None:
                    out.append(value)
                    i = m.end()
                    continue
        if quote is not None:
            if c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c == "[":
            depth += 1
        elif c == "]":
            depth = max(0, depth - 1)
        out.append(c)
        i += 1
    return Substituted("".join(out), found)


def _replacement(m: re.Match[str], variables: Mapping[str, Variable], quote: str | None, depth: int,
                 before: str, found: dict[str, str]) -> str | None:
    name = m.group(1) or m.group(2) or m.group(4)
    fmt = m.group(3) or m.group(6)
    if name.isdigit():  # `$1`: a regex capture group reference, never a Grafana variable
        return None
    known = name in variables
    builtin = _builtin(name, fmt)
    if quote is not None:
        if builtin is not None:
            return builtin
        if not known:
            return None
    else:
        tail = before.rstrip()
        if depth > 0 or re.search(r"(?<![\w:])offset\Z", tail):
            return RANGE_VALUE
        if tail.endswith("@"):
            return TIMESTAMP_VALUE
        if builtin is not None:
            return builtin
        var = variables.get(name)
        if var is not None and var.current and _is_number(var.current):
            return var.current
    token = placeholder(name)
    found[token] = name
    return token


# --- resolving placeholders after the walk -------------------------------------------------------------


def _placeholders_in(text: str, placeholders: Mapping[str, str]) -> list[str]:
    return [p for p in placeholders if p in text]


def _name_regex(text: str, placeholders: Mapping[str, str], variables: Mapping[str, Variable],
                literal: bool) -> str:
    """A regex for metric names written as ``text`` with placeholders; literal parts escaped if ``literal``."""
    tokens = re.split("(" + "|".join(re.escape(p) for p in sorted(placeholders, key=len, reverse=True)) + ")",
                      text)
    parts: list[str] = []
    for tok in tokens:
        if tok in placeholders:
            var = variables.get(placeholders[tok])
            values = [v for v in var.values if v not in _ALL_VALUES] if var is not None and var.fixed else []
            parts.append("(?:" + "|".join(re.escape(v) for v in values) + ")" if values else ".+")
        else:
            parts.append(re.escape(tok) if literal else tok)
    return "".join(parts)


def _label_values(label: str, placeholders: Mapping[str, str], variables: Mapping[str, Variable]) -> list[str] | None:
    """The label names a placeholder label can stand for, or None when they cannot be known."""
    var = variables.get(placeholders.get(label, ""))
    if var is None or not var.fixed:
        return None
    values = [v for v in var.values if v not in _ALL_VALUES]
    return [label for v in values for label in re.split(r"\s*,\s*", v) if label]


def resolve(analysis: ExpressionAnalysis, sub: Substituted, variables: Mapping[str, Variable]) -> ExpressionAnalysis:
    """Turn placeholders left by ``substitute`` into dynamic labels and metric-name patterns."""
    if not sub.placeholders or not analysis.ok:
        return analysis
    return replace(analysis, selectors=tuple(_resolve_selector(s, sub.placeholders, variables)
                                             for s in analysis.selectors))


def _resolve_selector(s: SelectorUsage, placeholders: Mapping[str, str],
                      variables: Mapping[str, Variable]) -> SelectorUsage:
    metric, pattern, kinds = s.metric, s.pattern, set(s.kinds)
    if metric is not None and _placeholders_in(metric, placeholders):
        pattern = NamePattern((NameMatcher("=~", _name_regex(metric, placeholders, variables, literal=True)),))
        metric = None
        kinds |= {UsageKind.NAME_PATTERN, UsageKind.DYNAMIC}
    elif pattern is not None and any(_placeholders_in(m.value, placeholders) for m in pattern.matchers):
        matchers = []
        for m in pattern.matchers:
            if _placeholders_in(m.value, placeholders):
                op = "=~" if m.op in ("=", "=~") else "!~"
                regex = _name_regex(m.value, placeholders, variables, literal=m.op in ("=", "!="))
                # A negative match on an unknown value could exclude anything: keep the selector broad.
                matchers.append(NameMatcher(op, regex) if op == "=~" else NameMatcher("=~", ".+"))
            else:
                matchers.append(m)
        pattern = NamePattern(tuple(matchers))
        kinds.add(UsageKind.DYNAMIC)
    labels: dict[str, frozenset[UsageKind]] = {}
    dynamic = set(s.dynamic_labels)
    unresolved_needed = False
    expansions: dict[str, list[str]] = {}
    for label, how in s.labels.items():
        if label not in placeholders:
            labels[label] = labels.get(label, frozenset()) | how
            continue
        values = _label_values(label, placeholders, variables)
        if values is None:
            dynamic.add(placeholders[label])
            if label in s.need:
                unresolved_needed = True
            continue
        expansions[label] = values
        for v in values:
            labels[v] = labels.get(v, frozenset()) | how | {UsageKind.DYNAMIC}
    need = _resolve_need(s.need, placeholders, expansions, unresolved_needed)
    if dynamic or expansions:
        kinds.add(UsageKind.DYNAMIC)
    if isinstance(need, AllLabels):
        kinds.add(UsageKind.ALL_LABELS)
    return replace(s, metric=metric, pattern=pattern, need=need, labels=labels, kinds=frozenset(kinds),
                   dynamic_labels=frozenset(dynamic))


def _resolve_need(need: LabelNeed, placeholders: Mapping[str, str], expansions: Mapping[str, list[str]],
                  unresolved: bool) -> LabelNeed:
    if unresolved:  # the viewer may pick any label: keep them all
        return ALL
    if isinstance(need, AllLabels):
        # `without ($var)`: whichever label is picked, the others are needed; only a fixed single one is excluded.
        excluded = set()
        for label in need.excluded:
            if label not in placeholders:
                excluded.add(label)
            elif len(expansions.get(label, [])) == 1:
                excluded.update(expansions[label])
        return AllLabels(frozenset(excluded))
    out: set[str] = set()
    for label in need:
        if label in placeholders:
            out.update(expansions.get(label, []))
        else:
            out.add(label)
    return frozenset(out)


# --- dashboards ----------------------------------------------------------------------------------------


def _source(dashboard: Mapping[str, Any], file: str) -> Source:
    uid = str(dashboard.get("uid") or "")
    title = str(dashboard.get("title") or "")
    return Source(SourceKind.DASHBOARD, uid or file or title or "unnamed", title, file)


def _variables(dashboard: Mapping[str, Any]) -> dict[str, Variable]:
    out: dict[str, Variable] = {}
    templating = dashboard.get("templating")
    items = templating.get("list") if isinstance(templating, Mapping) else None
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping) or not item.get("name"):
            continue
        vtype = str(item.get("type") or "")
        query = _query_text(item)
        values: list[str] = [str(o.get("value")) for o in item.get("options") or []
                             if isinstance(o, Mapping) and o.get("value") is not None]
        if not values and vtype in ("custom", "interval"):
            values = _custom_values(query)
        if not values and vtype in ("constant", "textbox") and query:
            values = [query]
        current = item.get("current")
        cur = current.get("value") if isinstance(current, Mapping) else None
        cur_text = cur[0] if isinstance(cur, list) and cur else cur
        out[str(item["name"])] = Variable(str(item["name"]), vtype, query, tuple(values),
                                          str(cur_text) if isinstance(cur_text, str | int | float) else "")
    return out


def _custom_values(query: str) -> list[str]:
    """Values of a custom variable: ``a, b`` or ``text : value`` pairs; ``\\,`` escapes a comma."""
    values = []
    for part in re.split(r"(?<!\\),", query):
        part = part.replace("\\,", ",").strip()
        if " : " in part:
            part = part.split(" : ", 1)[1].strip()
        if part:
            values.append(part)
    return values


def _query_text(item: Mapping[str, Any]) -> str:
    query = item.get("query")
    if isinstance(query, Mapping):  # newer Grafana: {"query": "...", "refId": ..., "qryType": ...}
        query = query.get("query")
    if not query and isinstance(item.get("definition"), str):
        query = item["definition"]
    return str(query) if isinstance(query, str | int | float) else ""


def _is_prometheus(datasource: object) -> bool | None:
    """True/False when the datasource says what it is, None when it does not (then the panel decides)."""
    if isinstance(datasource, Mapping):
        dtype = datasource.get("type")
        if isinstance(dtype, str) and dtype and dtype != "datasource":  # "datasource": -- Mixed -- / -- Dashboard --
            return dtype in _PROMETHEUS_TYPES or dtype.endswith("prometheus")
        return None
    if isinstance(datasource, str) and any(k in datasource.lower() for k in _OTHER_DATASOURCE_NAMES):
        return False  # a legacy datasource name that says what it is
    return None  # a legacy name string, a ${DS_...} variable, or nothing: assume the dashboard's default


def _library_model(ref: Mapping[str, Any], library: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for key in (ref.get("uid"), ref.get("name")):
        if key is None or key not in library:
            continue
        found = library[key]
        if isinstance(found, Mapping) and isinstance(found.get("result"), Mapping):  # /api/library-elements/:uid
            found = found["result"]
        if isinstance(found, Mapping) and isinstance(found.get("model"), Mapping):
            return found["model"]  # type: ignore[no-any-return]
        if isinstance(found, Mapping):
            return found
    model = ref.get("model")
    return model if isinstance(model, Mapping) else None


class _DashboardReader:
    def __init__(self, dashboard: Mapping[str, Any], file: str, library: Mapping[str, Any],
                 analyzer: PromQLAnalyzer) -> None:
        self.dashboard = dashboard
        self.source = _source(dashboard, file)
        self.variables = _variables(dashboard)
        elements = dashboard.get("__elements")
        self.library: dict[str, Any] = dict(elements) if isinstance(elements, Mapping) else {}
        self.library.update(library)
        self.analyzer = analyzer
        self.skipped_targets = 0

    def error(self, location: str, message: str, expression: str = "") -> ParseError:
        return ParseError(SourceKind.DASHBOARD, self.source.id, location, expression, message)

    def read(self) -> Iterator[Occurrence | ParseError]:
        yield from self.panels(self.dashboard.get("panels"), "")
        rows = self.dashboard.get("rows")  # dashboards older than schema 16
        for r, row in enumerate(rows if isinstance(rows, list) else []):
            if isinstance(row, Mapping):
                yield from self.panels(row.get("panels"), f"row {r} {str(row.get('title') or '')!r} > ")
        yield from self.annotations()
        yield from self.template_variables()

    def panels(self, panels: object, prefix: str) -> Iterator[Occurrence | ParseError]:
        if panels is None:
            return
        if not isinstance(panels, list):
            yield self.error(prefix + "panels", f"'panels' is a {type(panels).__name__}, expected a list")
            return
        for i, panel in enumerate(panels):
            where = f"{prefix}panel {i}"
            if not isinstance(panel, Mapping):
                yield self.error(where, f"panel is a {type(panel).__name__}, expected an object")
                continue
            where = f"{prefix}panel {panel.get('id', i)} {str(panel.get('title') or '')!r}"
            ref = panel.get("libraryPanel")
            if isinstance(ref, Mapping) and not panel.get("targets"):
                model = _library_model(ref, self.library)
                if model is None:
                    yield self.error(where, f"library panel {ref.get('uid') or ref.get('name')!r} not found "
                                            "(pass its model in library_panels)")
                    continue
                panel = {**model, "datasource": model.get("datasource", panel.get("datasource"))}
                where += f" (library panel {ref.get('uid') or ref.get('name')!r})"
            if panel.get("type") == "row" or "panels" in panel:  # collapsed rows keep their panels inside
                yield from self.panels(panel.get("panels"), f"{where} > ")
            yield from self.targets(panel, where)

    def targets(self, panel: Mapping[str, Any], where: str) -> Iterator[Occurrence | ParseError]:
        targets = panel.get("targets")
        if targets is None:
            return
        if not isinstance(targets, list):
            yield self.error(where, f"'targets' is a {type(targets).__name__}, expected a list")
            return
        panel_prom = _is_prometheus(panel.get("datasource"))
        for j, target in enumerate(targets):
            if not isinstance(target, Mapping):
                yield self.error(f"{where} target {j}", f"target is a {type(target).__name__}, expected an object")
                continue
            prom = _is_prometheus(target.get("datasource"))
            if prom is None:
                prom = panel_prom
            expr = target.get("expr")
            if prom is False or expr is None:  # Loki, server-side expressions, other datasources
                self.skipped_targets += 1
                continue
            location = f"{where} target {target.get('refId') or j}"
            if not isinstance(expr, str):
                yield self.error(location, f"'expr' is a {type(expr).__name__}, expected a string")
                continue
            if expr.strip():
                yield self.expression(expr, location)

    def annotations(self) -> Iterator[Occurrence | ParseError]:
        annotations = self.dashboard.get("annotations")
        items = annotations.get("list") if isinstance(annotations, Mapping) else None
        for i, item in enumerate(items if isinstance(items, list) else []):
            if isinstance(item, Mapping) and isinstance(item.get("expr"), str) and item["expr"].strip() \
                    and _is_prometheus(item.get("datasource")) is not False:
                yield self.expression(item["expr"], f"annotation {item.get('name') or i!r}")

    def template_variables(self) -> Iterator[Occurrence | ParseError]:
        for var in self.variables.values():
            if var.type == "query" and var.query.strip():
                yield self.variable_query(var)

    def expression(self, expr: str, location: str) -> Occurrence | ParseError:
        sub = substitute(expr, self.variables)
        analysis = self.analyzer.analyze(sub.text)
        if not analysis.ok:
            return self.error(location, str(analysis.error), expr)
        return Occurrence(self.source, location, resolve(replace(analysis, expression=expr), sub, self.variables))

    def variable_query(self, var: Variable) -> Occurrence | ParseError:
        location = f"variable ${var.name}"
        sub = substitute(var.query, self.variables)
        analysis = variable_query_analysis(sub.text, self.analyzer)
        if not analysis.ok:
            return self.error(location, str(analysis.error), var.query)
        return Occurrence(self.source, location, resolve(replace(analysis, expression=var.query), sub, self.variables))


def variable_query_analysis(query: str, analyzer: PromQLAnalyzer | None = None) -> ExpressionAnalysis:
    """Usage of a Grafana Prometheus variable query (after variable substitution).

    ``label_values(metric{sel}, label)`` uses the metric's ``label`` and matchers; ``label_values(label)``
    uses ``label`` on no metric in particular; ``metrics(regex)`` uses metric names matching the (unanchored,
    as in Grafana) regex; ``query_result(expr)`` and a bare expression read every label of the result.
    """
    analyzer = analyzer or PromQLAnalyzer()
    text = query.strip()
    if m := _LABEL_VALUES.match(text):
        selector, label = m.group(1), m.group(2)
        if selector is None or not selector.strip():
            usage = SelectorUsage(None, None, frozenset({label}), {label: frozenset({UsageKind.TEMPLATE_VARIABLE})})
            return ExpressionAnalysis(query, (usage,))
        return analyze_selector(selector.strip(), [label], UsageKind.TEMPLATE_VARIABLE)
    if m := _LABEL_NAMES.match(text):
        if not m.group(1):
            return ExpressionAnalysis(query)
        return analyzer.analyze(m.group(1))  # lists every label name of the matched series
    if m := _METRICS.match(text):
        regex = m.group(1).strip()
        try:
            re.compile(regex)
        except re.error as exc:
            return ExpressionAnalysis(query, error=f"metrics(): invalid regex {regex!r}: {exc}")
        pattern = NamePattern((NameMatcher("=~", f".*(?:{regex}).*"),))
        usage = SelectorUsage(None, pattern, frozenset(), {},
                              kinds=frozenset({UsageKind.NAME_PATTERN, UsageKind.TEMPLATE_VARIABLE}))
        return ExpressionAnalysis(query, (usage,))
    if m := _QUERY_RESULT.match(text):
        return analyzer.analyze(m.group(1))
    return analyzer.analyze(text)  # Grafana lists the series of a bare expression


def _unwrap(data: object) -> Mapping[str, Any] | str:
    """The dashboard object, or why ``data`` is not one."""
    if isinstance(data, Mapping) and isinstance(data.get("dashboard"), Mapping):  # /api/dashboards/uid/:uid
        data = data["dashboard"]
    if not isinstance(data, Mapping):
        return f"not a Grafana dashboard: the JSON is a {type(data).__name__}, expected an object"
    if not any(k in data for k in ("panels", "rows", "templating")):
        keys = ", ".join(sorted(map(str, data))[:8]) or "none"
        return f"not a Grafana dashboard: no 'panels', 'rows' or 'templating' (keys: {keys})"
    return data


def dashboard_occurrences(data: object, *, file: str = "", library_panels: Mapping[str, Any] | None = None,
                          analyzer: PromQLAnalyzer | None = None) -> Iterator[Occurrence | ParseError]:
    """Every PromQL usage in one dashboard (already decoded JSON), and what could not be read.

    ``library_panels`` maps a library panel's uid (or name) to its model, its library element, or the
    ``/api/library-elements/:uid`` answer; a dashboard's own ``__elements`` are used too.
    """
    dashboard = _unwrap(data)
    if isinstance(dashboard, str):
        yield ParseError(SourceKind.DASHBOARD, file or "unnamed", file or "dashboard", "", dashboard)
        return
    yield from _DashboardReader(dashboard, file, library_panels or {}, analyzer or PromQLAnalyzer()).read()


def dashboard_file_occurrences(path: str | Path, *, library_panels: Mapping[str, Any] | None = None,
                               analyzer: PromQLAnalyzer | None = None) -> Iterator[Occurrence | ParseError]:
    """Like ``dashboard_occurrences`` for a file; unreadable or non-JSON files give one ``ParseError``."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        yield ParseError(SourceKind.DASHBOARD, name, name, "", f"cannot read dashboard file: {exc}")
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        yield ParseError(SourceKind.DASHBOARD, name, f"{name}:{exc.lineno}:{exc.colno}", "",
                         f"dashboard file is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
        return
    yield from dashboard_occurrences(data, file=name, library_panels=library_panels, analyzer=analyzer)
