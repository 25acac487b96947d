"""Usage from Grafana dashboards: panels (nested rows, library panels), annotations and template variables.

Grafana variables are Grafana's text templating, not PromQL: they are replaced *before* parsing, by a
value of the type their position needs, so the expression parses:

- a duration inside ``[...]`` and after ``offset``, a timestamp after ``@``, Grafana's own values for
  ``$__range_s``-like built-ins;
- a placeholder identifier (``__grafana_var_<name>__``, a valid label name, metric name and regex-safe
  string) inside strings (matcher values), in label-name positions (``by (…)``, ``{$label="x"}``) and
  where it is part of a metric name (``${prefix}_total``, ``$metric{job="x"}``, ``$metric[5m]``);
- anywhere else the variable stands for a value (``topk($limit, …)``, ``x > $threshold``,
  ``quantile_over_time($q, …)``): its numeric current value, or a placeholder identifier when the
  variable lists metric names (``metrics(…)``, ``label_values(…, __name__)``, names as custom values),
  else a number. When the expression still does not parse, value positions get the other type once more.

After the walk, a placeholder that stands where a label name goes is resolved to the variable's known
values (custom and constant variables) or, when those are not knowable (query variables), recorded as a
*dynamic* label — and, because the viewer may pick any label, the selector then needs ALL labels. A
placeholder in a metric name becomes a ``__name__`` pattern from the variable's own definition: its
values, the regex of ``metrics(regex)`` (variables inside it resolved in turn, a variable that refers to
itself stopped and reported), or the values the dashboard saved. When none is knowable the selector names
no metric at all (``SelectorUsage.unresolved_name``) — it never becomes a match-everything pattern — and a
row in the errors says so. Expressions that still do not parse keep the names a token scan finds in them
(``ParseError.mentions``), resolved the same way.

Only PromQL is read: each target's datasource is resolved (the target's, else the panel's; datasource
variables; the dashboard's ``__inputs``; other references with the same uid) and queries of datasources
that are not Prometheus-compatible (Loki, Tempo, SQL, server-side expressions…) are skipped and counted
(``SkippedQuery``). A reference that cannot be resolved, or a plugin type not known either way, is read as
PromQL (never a wrong drop) and reported.

Grafana's Prometheus variable functions (``label_values``, ``label_names``, ``metrics``, ``query_result``)
are recognised with Grafana's own grammar; the PromQL inside them goes through the real parser.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from traceo_finops.usage.model import (
    ALL,
    AllLabels,
    ExpressionAnalysis,
    LabelNeed,
    Mentions,
    NameMatcher,
    NamePattern,
    Occurrence,
    ParseError,
    SelectorUsage,
    SkippedQuery,
    Source,
    SourceKind,
    UsageKind,
)
from traceo_finops.usage.promql import PromQLAnalyzer, analyze_selector

PLACEHOLDER_PREFIX = "__grafana_var_"
RANGE_VALUE = "5m"  # any valid duration: the range never changes which labels are used
NUMBER_VALUE = "300"
TIMESTAMP_VALUE = "1700000000"
SCALAR_VALUE = "1"  # a variable standing for a number (topk's k, a threshold): any number names nothing

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
_ALL_VALUES = {"$__all", "All", "all", "", "*"}
_FIXED_VALUE_TYPES = {"custom", "constant", "textbox", "interval"}
_LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}

# Datasource plugin types. PromQL: Prometheus and what speaks its API (Mimir, Cortex and Thanos use the
# Prometheus plugin; Amazon/Azure managed Prometheus; VictoriaMetrics' MetricsQL is a superset).
_PROMQL_TYPES = frozenset({"prometheus", "grafana-amazonprometheus-datasource", "grafana-azureprometheus-datasource",
                           "victoriametrics-datasource", "victoriametrics-metrics-datasource"})
# Not PromQL: Grafana's own (built-in annotations, "-- Dashboard --", server-side expressions) and the
# words of other query languages' plugin ids (also matched in legacy datasource *names*).
_OTHER_TYPES = frozenset({"grafana", "__expr__", "dashboard"})
_OTHER_WORDS = ("loki", "tempo", "elastic", "opensearch", "influx", "graphite", "cloudwatch", "sql", "postgres",
                "jaeger", "zipkin", "testdata", "opentsdb", "stackdriver", "pyroscope", "parca", "alertmanager",
                "clickhouse", "splunk", "logs", "azure-monitor", "x-ray", "datadog", "newrelic", "mongodb")


def promql_datasource(plugin_type: str) -> bool | None:
    """True for a Prometheus-compatible plugin type, False for one that is not, None when unknown."""
    t = plugin_type.strip().lower()
    if t in _PROMQL_TYPES or "prometheus" in t or ("victoriametrics" in t and "logs" not in t):
        return True
    if t in _OTHER_TYPES or any(w in t for w in _OTHER_WORDS):
        return False
    return None


@dataclass(frozen=True)
class Variable:
    """A dashboard template variable, as far as usage analysis cares."""

    name: str
    type: str
    query: str = ""  # for datasource variables: the plugin type
    values: tuple[str, ...] = ()  # the values it can take, when the dashboard lists them (options, custom values)
    current: str = ""
    selected: tuple[str, ...] = ()  # every current value saved with the dashboard

    @property
    def fixed(self) -> bool:
        """True when the dashboard lists every value (a query variable's come from the data at view time)."""
        return self.type in _FIXED_VALUE_TYPES and bool(self.values)

    @property
    def saved_values(self) -> list[str]:
        """Every value the dashboard saved (options and current), "All" markers left out."""
        return [v for v in dict.fromkeys((*self.values, *self.selected, self.current)) if v not in _ALL_VALUES]


@dataclass
class Substituted:
    """An expression with Grafana variables replaced; ``placeholders`` maps placeholder → variable name."""

    text: str
    placeholders: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, bool] = field(default_factory=dict)  # variable read as a number → whether it is declared
    values: bool = False  # some variable stood in a value position (the retry may change its type)


def placeholder(name: str) -> str:
    return f"{PLACEHOLDER_PREFIX}{name}__"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_name_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in "_:")


def _is_metric_name(text: str) -> bool:
    return bool(text) and not text[0].isdigit() and all(_is_name_char(c) for c in text)


def _last_word(text: str) -> str:
    """The identifier ``text`` ends with (after trailing spaces), lowercased."""
    text = text.rstrip()
    i = len(text)
    while i and _is_name_char(text[i - 1]):
        i -= 1
    return text[i:].lower()


def _builtin(name: str, fmt: str | None) -> str | None:
    if name in _BUILTIN_DURATIONS or name.startswith("__auto_interval"):
        return RANGE_VALUE
    if name in _BUILTIN_NUMBERS:
        if name in ("__from", "__to") and fmt and "seconds" in fmt:
            return TIMESTAMP_VALUE
        return _BUILTIN_NUMBERS[name]
    return None


def _lists_metric_names(var: Variable) -> bool:
    """True when the variable's values are metric names (so in a value position it is a selector)."""
    query = var.query.strip()
    if var.type == "query":
        if _METRICS.match(query):
            return True
        m = _LABEL_VALUES.match(query)
        return m is not None and m.group(2) == "__name__"
    values = [v for v in var.values if v not in _ALL_VALUES] or [v for v in var.selected if v not in _ALL_VALUES]
    return bool(values) and all(_is_metric_name(v) and not _is_number(v) for v in values)


def substitute(expression: str, variables: Mapping[str, Variable] | None = None, *, flip: bool = False,
               names: bool = False) -> Substituted:
    """Replace Grafana variables in ``expression`` by values of the type their position needs (module doc).

    Known variables (``variables`` plus Grafana's built-ins) are replaced everywhere; an unknown ``$name``
    only outside string literals, so ``label_replace(..., "$1", ...)`` keeps its capture-group references.
    ``flip`` gives every variable in a value position the other type (number ↔ placeholder); ``names``
    makes them all placeholders (the arguments of Grafana's ``label_values``/``metrics`` are names).
    """
    variables = variables or {}
    sub = Substituted("")
    out: list[str] = []
    quote: str | None = None
    stack: list[str] = []  # open brackets outside strings: "[", "{", "(" or "L" for a label list
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
                value = _replacement(m, expression, variables, quote, stack, "".join(out[-40:]), sub, flip, names)
                if value is not None:
                    out.append(value)
                    i = m.end()
                    continue
        if quote is not None:
            if c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c in "[{":
            stack.append(c)
        elif c == "(":
            stack.append("L" if _last_word("".join(out[-40:])) in _LABEL_LIST_KEYWORDS else "(")
        elif c in ")]}" and stack:
            stack.pop()
        out.append(c)
        i += 1
    sub.text = "".join(out)
    return sub


def _replacement(m: re.Match[str], expression: str, variables: Mapping[str, Variable], quote: str | None,
                 stack: list[str], before: str, sub: Substituted, flip: bool, names: bool) -> str | None:
    name = m.group(1) or m.group(2) or m.group(4)
    fmt = m.group(3) or m.group(6)
    if name.isdigit():  # `$1`: a regex capture group reference, never a Grafana variable
        return None
    builtin = _builtin(name, fmt)
    if quote is not None:  # a matcher value or a function's string argument
        if builtin is not None:
            return builtin
        return _token(name, sub) if name in variables else None
    if "[" in stack or _last_word(before) == "offset":
        return RANGE_VALUE
    if before.rstrip().endswith("@"):
        return TIMESTAMP_VALUE
    if builtin is not None:
        return builtin
    after = expression[m.end():]
    glued = (before[-1:] != "" and _is_name_char(before[-1])) or (after[:1] != "" and (_is_name_char(after[0])
                                                                                       or after[0] in "$["))
    if (stack and stack[-1] in "{L") or glued or after.lstrip()[:1] in ("{", "["):
        return _token(name, sub)  # a label name, or (part of) a metric name
    sub.values = True  # a value: `topk($k, …)`, `x > $threshold`, or a whole metric name
    var = variables.get(name)
    if var is not None and var.current and _is_number(var.current):
        return var.current
    if names or (var is not None and _lists_metric_names(var)) != flip:
        return _token(name, sub)
    sub.numbers[name] = var is not None
    return SCALAR_VALUE


def _token(name: str, sub: Substituted) -> str:
    token = placeholder(name)
    sub.placeholders[token] = name
    return token


# --- resolving placeholders after the walk -------------------------------------------------------------


def _placeholders_in(text: str, placeholders: Mapping[str, str]) -> list[str]:
    return [p for p in placeholders if p in text]


def _all_placeholders(text: str, variables: Mapping[str, Variable]) -> tuple[str, dict[str, str]]:
    """``text`` (a regex, not PromQL) with every variable of ``variables`` replaced by its placeholder."""
    found: dict[str, str] = {}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        if name not in variables:
            return m.group(0)
        found[placeholder(name)] = name
        return placeholder(name)

    return _VARIABLE.sub(repl, text), found


def _alternation(values: list[str]) -> str:
    return "|".join(re.escape(v) for v in values)


def variable_names_regex(name: str, variables: Mapping[str, Variable], notes: list[str],
                         seen: frozenset[str] = frozenset()) -> str | None:
    """A regex of the metric names variable ``name`` can stand for, from its own definition; None (and why,
    appended to ``notes``) when they cannot be known."""
    var = variables.get(name)
    if var is None:
        notes.append(f"variable ${name} is not declared in the dashboard")
        return None
    if name in seen:
        notes.append(f"variable ${name} refers to itself")
        return None
    if var.fixed:
        values = [v for v in var.values if v not in _ALL_VALUES]
        return _alternation(values) if values else None
    saved = var.saved_values
    m = _METRICS.match(var.query.strip()) if var.type == "query" else None
    if m is not None:
        text, found = _all_placeholders(m.group(1).strip(), variables)
        regex = _name_regex(text, found, variables, False, notes, seen | {name})
        if regex is not None:
            try:
                re.compile(regex)
            except re.error:
                notes.append(f"variable ${name}: metrics() regex {m.group(1).strip()!r} is not a regex Python reads")
            else:
                return f".*(?:{regex}).*"  # Grafana tests metrics(regex) unanchored
        if saved:
            return _alternation(saved)
        return None
    refs = {g.group(1) or g.group(2) or g.group(4) for g in _VARIABLE.finditer(var.query)}
    if name in refs:
        notes.append(f"variable ${name} refers to itself in its own query")
    if saved:  # what the data gave when the dashboard was saved: the most that can be known
        return _alternation(saved)
    if var.type == "query":
        notes.append(f"variable ${name} (query: {var.query}) takes its values from the data and the dashboard "
                     "saved none")
    else:
        notes.append(f"variable ${name} ({var.type or 'untyped'}) has no value saved in the dashboard")
    return None


def _name_regex(text: str, placeholders: Mapping[str, str], variables: Mapping[str, Variable], literal: bool,
                notes: list[str], seen: frozenset[str] = frozenset()) -> str | None:
    """A regex for metric names written as ``text`` with placeholders (literal parts escaped if ``literal``).

    None when the name is only variables whose values cannot be known: then it names nothing, rather
    than everything. A variable part that cannot be known next to literal text becomes ``.+``.
    """
    if not placeholders:
        return re.escape(text) if literal else text
    tokens = re.split("(" + "|".join(re.escape(p) for p in sorted(placeholders, key=len, reverse=True)) + ")",
                      text)
    parts: list[str] = []
    unknown = named = False
    for tok in tokens:
        if tok in placeholders:
            regex = variable_names_regex(placeholders[tok], variables, notes, seen)
            unknown |= regex is None
            parts.append(".+" if regex is None else f"(?:{regex})")
        elif tok:
            named |= any(ch.isalnum() for ch in tok)
            parts.append(re.escape(tok) if literal else tok)
    if unknown and not named:
        return None
    return "".join(parts)


def _label_values(label: str, placeholders: Mapping[str, str], variables: Mapping[str, Variable]) -> list[str] | None:
    """The label names a placeholder label can stand for, or None when they cannot be known."""
    var = variables.get(placeholders.get(label, ""))
    if var is None or not var.fixed:
        return None
    values = [v for v in var.values if v not in _ALL_VALUES]
    return [label for v in values for label in re.split(r"\s*,\s*", v) if label]


def resolve(analysis: ExpressionAnalysis, sub: Substituted, variables: Mapping[str, Variable],
            notes: list[str] | None = None) -> ExpressionAnalysis:
    """Turn placeholders left by ``substitute`` into dynamic labels and metric-name patterns.

    ``notes`` receives why a variable's values could not be known, for the errors.
    """
    if not sub.placeholders or not analysis.ok:
        return analysis
    notes = notes if notes is not None else []
    return replace(analysis, selectors=tuple(_resolve_selector(s, sub.placeholders, variables, notes)
                                             for s in analysis.selectors))


def undeclared_in_names(analysis: ExpressionAnalysis, variables: Mapping[str, Variable]) -> list[str]:
    """Variables a ``__name__`` matcher value names but the dashboard does not declare: Grafana leaves them as
    text, so the selector picks no metric (said, since a dashboard exported without them loses that usage)."""
    found = []
    for s in analysis.selectors:
        for m in s.pattern.matchers if s.pattern is not None else ():
            for g in _VARIABLE.finditer(m.value):
                name = g.group(1) or g.group(2) or g.group(4)
                if not name.isdigit() and name not in variables and _builtin(name, None) is None:
                    found.append(f"variable ${name} in the metric-name matcher {m} is not declared in the "
                                 "dashboard: the selector picks no metric")
    return found


def _resolve_name(s: SelectorUsage, placeholders: Mapping[str, str], variables: Mapping[str, Variable],
                  notes: list[str]) -> tuple[str | None, NamePattern | None, str]:
    """(metric, pattern, unresolved variable) of a selector whose name holds placeholders."""
    if s.metric is not None:
        regex = _name_regex(s.metric, placeholders, variables, True, notes)
        if regex is None:
            return None, None, ",".join(placeholders[p] for p in _placeholders_in(s.metric, placeholders))
        return None, NamePattern((NameMatcher("=~", regex),)), ""
    assert s.pattern is not None
    kept: list[NameMatcher] = []
    unknown: list[str] = []
    for m in s.pattern.matchers:
        if not _placeholders_in(m.value, placeholders):
            kept.append(m)
            continue
        positive = m.op in ("=", "=~")
        regex = _name_regex(m.value, placeholders, variables, m.op in ("=", "!="), notes)
        if regex is not None:
            kept.append(NameMatcher("=~" if positive else "!~", regex))
        elif positive:
            unknown += [placeholders[p] for p in _placeholders_in(m.value, placeholders)]
    if any(m.op in ("=", "=~") for m in kept):
        return None, NamePattern(tuple(kept)), ""
    if unknown:
        return None, None, ",".join(unknown)
    # Only negative matchers (one on a value that cannot be known): the selector stays broad.
    return None, NamePattern((*kept, NameMatcher("=~", ".+"))), ""


def _resolve_selector(s: SelectorUsage, placeholders: Mapping[str, str],
                      variables: Mapping[str, Variable], notes: list[str]) -> SelectorUsage:
    metric, pattern, kinds, unresolved = s.metric, s.pattern, set(s.kinds), s.unresolved_name
    if (metric is not None and _placeholders_in(metric, placeholders)) or (
            pattern is not None and any(_placeholders_in(m.value, placeholders) for m in pattern.matchers)):
        metric, pattern, unresolved = _resolve_name(s, placeholders, variables, notes)
        kinds |= {UsageKind.DYNAMIC}
        kinds |= {UsageKind.NAME_PATTERN} if pattern is not None else set()
        if unresolved:
            kinds.discard(UsageKind.NAME_PATTERN)
            notes.append(f"the metric name is only the variable ${unresolved}, whose values cannot be known: "
                         "this selector counts for no metric")
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
                   dynamic_labels=frozenset(dynamic), unresolved_name=unresolved)


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


def resolve_mentions(mentions: Mentions, placeholders: Mapping[str, str], variables: Mapping[str, Variable],
                     notes: list[str]) -> Mentions:
    """The names of an expression that does not parse, with placeholders resolved like a selector's name:
    a name that is only an unknowable variable names nothing; a label placeholder is no label name."""
    if not placeholders:
        return mentions
    metrics: set[str] = set()
    patterns: list[NamePattern] = []
    for name in mentions.metrics:
        if not _placeholders_in(name, placeholders):
            metrics.add(name)
        elif (regex := _name_regex(name, placeholders, variables, True, notes)) is not None:
            patterns.append(NamePattern((NameMatcher("=~", regex),)))
    for pattern in mentions.patterns:
        fake = SelectorUsage(None, pattern, frozenset(), {})
        _, resolved, _ = _resolve_name(fake, placeholders, variables, notes)
        if resolved is not None and not resolved.matches_everything:
            patterns.append(resolved)
    nameless = tuple(tuple(m for m in group if not _placeholders_in(m.label, placeholders))
                     for group in mentions.nameless)
    labels = frozenset(label for label in mentions.labels if not _placeholders_in(label, placeholders))
    return Mentions(frozenset(metrics), tuple(patterns), nameless, labels)


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
        selected = [str(v) for v in (cur if isinstance(cur, list) else [cur]) if isinstance(v, str | int | float)]
        out[str(item["name"])] = Variable(str(item["name"]), vtype, query, tuple(values),
                                          selected[0] if selected else "", tuple(selected))
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


_VARIABLE_REF = re.compile(r"^\s*(?:\$(\w+)|\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)\]\])\s*$")


def _variable_ref(text: str) -> str | None:
    """The variable a datasource reference names (``$ds``, ``${DS_PROMETHEUS}``, ``[[ds]]``), if any."""
    m = _VARIABLE_REF.match(text)
    return (m.group(1) or m.group(2) or m.group(3)) if m else None


class Datasources:
    """Which datasource plugin a panel, target, annotation or variable queries, as far as the dashboard says.

    ``plugin`` answers with the plugin type, or None for "the default datasource / let the panel decide"; a
    reference the dashboard cannot resolve is reported once in ``problems`` and treated as unknown.
    """

    def __init__(self, dashboard: Mapping[str, Any], variables: Mapping[str, Variable]) -> None:
        inputs = dashboard.get("__inputs")
        self.inputs = {str(i.get("name")): str(i.get("pluginId") or "") for i in inputs if isinstance(i, Mapping)
                       and i.get("type") == "datasource"} if isinstance(inputs, list) else {}
        self.variables = {v.name: v.query.strip() for v in variables.values() if v.type == "datasource"}
        self.uids: dict[str, str] = {}
        self._collect_uids(dashboard, 0)
        self.problems: dict[str, str] = {}  # reference → why it could not be resolved (reported once)

    def _collect_uids(self, node: object, depth: int) -> None:
        """uid → type from every reference that has both: a reference with only the uid is then known."""
        if depth > 64:
            return
        if isinstance(node, Mapping):
            ref = node.get("datasource")
            if isinstance(ref, Mapping) and isinstance(ref.get("uid"), str) and isinstance(ref.get("type"), str):
                uid, dtype = ref["uid"], ref["type"]
                if dtype and dtype != "datasource" and not _variable_ref(uid) and not _variable_ref(dtype):
                    self.uids.setdefault(uid, dtype)
            for value in node.values():
                self._collect_uids(value, depth + 1)
        elif isinstance(node, list):
            for value in node:
                self._collect_uids(value, depth + 1)

    def plugin(self, ref: object) -> str | None:
        if isinstance(ref, str):
            text = ref.strip()
            low = text.lower()
            if not text or low in ("-- mixed --", "default"):
                return None
            if low == "-- dashboard --":
                return "dashboard"
            if low == "-- grafana --":
                return "grafana"
            if (var := _variable_ref(text)) is not None:
                return self._variable(var, text, None)
            word = next((w for w in _OTHER_WORDS if w in low), None)
            return word  # a legacy datasource *name*: only its words can tell; else the default
        if isinstance(ref, Mapping):
            raw_type, raw_uid = ref.get("type"), ref.get("uid")
            dtype = raw_type if isinstance(raw_type, str) else ""
            uid = raw_uid if isinstance(raw_uid, str) else ""
            if dtype == "datasource" or uid in ("-- Mixed --", "-- Dashboard --", "-- Grafana --"):
                return {"-- Dashboard --": "dashboard", "-- Grafana --": "grafana"}.get(uid)
            var = _variable_ref(uid) or _variable_ref(dtype)
            if var is not None:
                concrete = dtype if dtype and not _variable_ref(dtype) else None
                return self._variable(var, uid or dtype, concrete)
            if dtype:
                return dtype
            return self.uids.get(uid)
        return None

    def _variable(self, name: str, ref: str, declared_type: str | None) -> str | None:
        if name in self.variables:
            if self.variables[name]:
                return self.variables[name]
            self.problems.setdefault(ref, f"datasource variable ${name} names no plugin type: its queries are read "
                                          f"as {'PromQL' if declared_type is None else declared_type}")
            return declared_type
        if self.inputs.get(name):
            return self.inputs[name]
        if declared_type is not None:  # the reference says what it is itself
            return declared_type
        self.problems.setdefault(ref, f"datasource {ref} is neither a datasource variable nor an __inputs entry of "
                                      "the dashboard: its queries are read as PromQL")
        return None


def _library_model(ref: Mapping[str, Any], library: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for key in (ref.get("uid"), ref.get("name")):
        if key is None or key not in library:
            continue
        found = library[key]
        if isinstance(found, Mapping) and isinstance(found.get("result"), Mapping):  # /api/library-elements/:uid
            found = found["result"]
        if isinstance(found, Mapping):
            model = found.get("model")
            return model if isinstance(model, Mapping) else found
    model = ref.get("model")
    return model if isinstance(model, Mapping) else None


Item = Occurrence | ParseError | SkippedQuery


class _DashboardReader:
    def __init__(self, dashboard: Mapping[str, Any], file: str, library: Mapping[str, Any],
                 analyzer: PromQLAnalyzer) -> None:
        self.dashboard = dashboard
        self.source = _source(dashboard, file)
        self.variables = _variables(dashboard)
        self.datasources = Datasources(dashboard, self.variables)
        elements = dashboard.get("__elements")
        self.library: dict[str, Any] = dict(elements) if isinstance(elements, Mapping) else {}
        self.library.update(library)
        self.analyzer = analyzer
        self.reported: set[str] = set()  # datasource problems already reported for this dashboard

    def error(self, location: str, message: str, expression: str = "", mentions: Mentions | None = None) -> ParseError:
        return ParseError(SourceKind.DASHBOARD, self.source.id, location, expression, message, mentions)

    def read(self) -> Iterator[Item]:
        yield from self.panels(self.dashboard.get("panels"), "")
        rows = self.dashboard.get("rows")  # dashboards older than schema 16
        for r, row in enumerate(rows if isinstance(rows, list) else []):
            if isinstance(row, Mapping):
                yield from self.panels(row.get("panels"), f"row {r} {str(row.get('title') or '')!r} > ",
                                       row.get("datasource"))
        yield from self.annotations()
        yield from self.template_variables()

    def panels(self, panels: object, prefix: str, default_ds: object = None) -> Iterator[Item]:
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
                yield from self.panels(panel.get("panels"), f"{where} > ", panel.get("datasource", default_ds))
            yield from self.targets(panel, where, panel.get("datasource", default_ds))

    def datasource(self, refs: list[object], location: str) -> tuple[str | None, list[ParseError]]:
        """The plugin type of the first reference that says (target before panel; None: the default
        datasource, read as PromQL), and the problems not reported yet for this dashboard."""
        plugin: str | None = None
        for ref in refs:
            plugin = self.datasources.plugin(ref)
            if plugin is not None:
                break
        problems = dict(self.datasources.problems)
        if plugin is not None and promql_datasource(plugin) is None:
            problems[plugin] = (f"datasource type {plugin!r} is not known as Prometheus-compatible or not: "
                                "its queries are read as PromQL")
        errors = [self.error(location, why) for ref, why in problems.items() if ref not in self.reported]
        self.reported.update(problems)
        return plugin, errors

    def skipped(self, refs: list[object], location: str) -> Iterator[Item]:
        """Rows for datasource problems, then a ``SkippedQuery`` if the datasource does not speak PromQL."""
        plugin, errors = self.datasource(refs, location)
        yield from errors
        if plugin is not None and promql_datasource(plugin) is False:
            yield SkippedQuery(self.source, location, plugin)

    def targets(self, panel: Mapping[str, Any], where: str, panel_ds: object) -> Iterator[Item]:
        targets = panel.get("targets")
        if targets is None:
            return
        if not isinstance(targets, list):
            yield self.error(where, f"'targets' is a {type(targets).__name__}, expected a list")
            return
        for j, target in enumerate(targets):
            if not isinstance(target, Mapping):
                yield self.error(f"{where} target {j}", f"target is a {type(target).__name__}, expected an object")
                continue
            location = f"{where} target {target.get('refId') or j}"
            expr = target.get("expr")
            if expr is None and target.get("datasource") is None:
                continue  # no query at all (e.g. a panel reusing another's results)
            skipped = list(self.skipped([target.get("datasource"), panel_ds], location))
            yield from skipped
            if expr is None or any(isinstance(i, SkippedQuery) for i in skipped):
                continue
            if not isinstance(expr, str):
                yield self.error(location, f"'expr' is a {type(expr).__name__}, expected a string")
                continue
            if expr.strip():
                yield from self.expression(expr, location)

    def annotations(self) -> Iterator[Item]:
        annotations = self.dashboard.get("annotations")
        items = annotations.get("list") if isinstance(annotations, Mapping) else None
        for i, item in enumerate(items if isinstance(items, list) else []):
            if isinstance(item, Mapping) and isinstance(item.get("expr"), str) and item["expr"].strip():
                location = f"annotation {item.get('name') or i!r}"
                skipped = list(self.skipped([item.get("datasource")], location))
                yield from skipped
                if not any(isinstance(i, SkippedQuery) for i in skipped):
                    yield from self.expression(item["expr"], location)

    def template_variables(self) -> Iterator[Item]:
        templating = self.dashboard.get("templating")
        items = templating.get("list") if isinstance(templating, Mapping) else None
        refs = {str(i.get("name")): i.get("datasource") for i in items if isinstance(i, Mapping)} \
            if isinstance(items, list) else {}
        for var in self.variables.values():
            if var.type == "query" and var.query.strip():
                location = f"variable ${var.name}"
                skipped = list(self.skipped([refs.get(var.name)], location))
                yield from skipped
                if not any(isinstance(i, SkippedQuery) for i in skipped):
                    names = any(g.match(var.query.strip()) for g in (_LABEL_VALUES, _LABEL_NAMES, _METRICS))
                    yield from self.expression(var.query, location,
                                               lambda text: variable_query_analysis(text, self.analyzer), names)

    def expression(self, expr: str, location: str, analyze: Callable[[str], ExpressionAnalysis] | None = None,
                   names: bool = False) -> Iterator[Item]:
        """The usage of one query (``analyze``: PromQL by default), then rows for what could not be known.

        ``names``: variables in value positions are names first (Grafana's ``label_values(…)`` arguments).
        """
        analyze = analyze or self.analyzer.analyze
        sub = substitute(expr, self.variables, names=names)
        analysis = analyze(sub.text)
        if not analysis.ok and sub.values:  # a variable in a value position may have the other type
            retry = substitute(expr, self.variables, flip=not names)
            second = analyze(retry.text)
            if second.ok:
                sub, analysis = retry, second
        notes = [f"variable ${name} is not declared in the dashboard: read as a number, it names no metric"
                 for name, declared in sub.numbers.items() if not declared]
        if analysis.ok:
            notes += undeclared_in_names(analysis, self.variables)
            yield Occurrence(self.source, location, resolve(replace(analysis, expression=expr), sub, self.variables,
                                                            notes))
        else:
            mentions = analysis.mentions
            if mentions is not None:
                mentions = resolve_mentions(mentions, sub.placeholders, self.variables, notes)
            yield self.error(location, str(analysis.error), expr, mentions)
        for note in dict.fromkeys(notes):
            yield self.error(location, note, expr)


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
                          analyzer: PromQLAnalyzer | None = None) -> Iterator[Item]:
    """Every PromQL usage in one dashboard (already decoded JSON), what could not be read, and a
    ``SkippedQuery`` for each query of a datasource that is not Prometheus-compatible.

    ``library_panels`` maps a library panel's uid (or name) to its model, its library element, or the
    ``/api/library-elements/:uid`` answer; a dashboard's own ``__elements`` are used too.
    """
    dashboard = _unwrap(data)
    if isinstance(dashboard, str):
        yield ParseError(SourceKind.DASHBOARD, file or "unnamed", file or "dashboard", "", dashboard)
        return
    yield from _DashboardReader(dashboard, file, library_panels or {}, analyzer or PromQLAnalyzer()).read()


def dashboard_file_occurrences(path: str | Path, *, library_panels: Mapping[str, Any] | None = None,
                               analyzer: PromQLAnalyzer | None = None) -> Iterator[Item]:
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
