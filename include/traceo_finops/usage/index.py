"""``UsageIndex``: every usage of every metric and label, over rules, dashboards and queries.

Counts are of *distinct sources* (a rule, a dashboard, a distinct query text), per kind of source and per
way of use; query executions are summed. Selectors that pick metrics by a ``__name__`` regex count for
every metric the regex matches. Selectors with no name constraint at all (``{job="x"}``, Grafana's
``label_values(job)``, ``{__name__=~".+"}``) do not single out any metric: they are kept apart as
*wildcard* usages and, unless ``apply_wildcards=True``, do not make a metric used. A selector whose name
is only a Grafana variable with no knowable values names no metric and is no wildcard either: it is
counted (``unresolved_name_selectors``) and the dashboard reader reports it.

Expressions that do not parse are errors, and also keep what a token scan finds in them: ``unparsed_hold``
answers whether one of them may read a metric, so that metric is never freed on the strength of usage we
could not read. Dashboard queries of other datasources (Loki…) are counted per datasource type.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from traceo_finops.usage.grafana import dashboard_file_occurrences, dashboard_occurrences
from traceo_finops.usage.model import (
    NOT_NEEDING_KINDS,
    LabelNeed,
    Occurrence,
    ParseError,
    SelectorUsage,
    SkippedQuery,
    Source,
    SourceKind,
    UsageKind,
    union_need,
)
from traceo_finops.usage.promql import PromQLAnalyzer
from traceo_finops.usage.querylog import (
    QueryLogSummary,
    RuleEvaluation,
    open_log,
    read_mimir_query_stats,
    read_prometheus_query_log,
)
from traceo_finops.usage.rules import (
    rule_file_occurrences,
    rule_text_occurrences,
    ruler_occurrences,
    rules_api_occurrences,
)


@dataclass(frozen=True)
class Usage:
    """One selector of one expression at one place, as seen from the metric it selects."""

    source: Source
    location: str
    expression: str
    selector: SelectorUsage
    executions: int  # query executions in the window (1 for rules and dashboards)
    occurrence: int  # which expression occurrence: one expression counts once per metric
    via_pattern: bool = False  # selected by a __name__ regex, not by name


@dataclass(frozen=True)
class UsageCounts:
    """How many distinct rules, dashboards and queries use a metric (or a label of it), and how."""

    rules: int = 0
    dashboards: int = 0
    queries: int = 0
    query_executions: int = 0
    kinds: Mapping[UsageKind, int] = field(default_factory=dict)  # distinct sources per way of use
    aggregations: Mapping[str, int] = field(default_factory=dict)  # distinct sources per aggregator applied
    consumers: Mapping[str, int] = field(default_factory=dict)  # distinct sources per innermost aggregation

    @property
    def sources(self) -> int:
        return self.rules + self.dashboards + self.queries

    def as_dict(self) -> dict[str, object]:
        return {"rules": self.rules, "dashboards": self.dashboards, "queries": self.queries,
                "query_executions": self.query_executions,
                "kinds": {k.value: v for k, v in sorted(self.kinds.items())},
                "aggregations": dict(sorted(self.aggregations.items())),
                "consumers": dict(sorted(self.consumers.items()))}


class _Tally:
    """Distinct sources per source kind and per way of use, plus executions per distinct occurrence."""

    def __init__(self) -> None:
        self.sources: dict[SourceKind, set[str]] = defaultdict(set)
        self.kinds: dict[UsageKind, set[tuple[SourceKind, str]]] = defaultdict(set)
        self.aggregations: dict[str, set[tuple[SourceKind, str]]] = defaultdict(set)
        self.consumers: dict[str, set[tuple[SourceKind, str]]] = defaultdict(set)
        self.executions: dict[int, int] = {}

    def add(self, u: Usage, kinds: Iterable[UsageKind], aggregations: Iterable[str] = (),
            consumer: str | None = None) -> None:
        key = (u.source.kind, u.source.id)
        self.sources[u.source.kind].add(u.source.id)
        for kind in kinds:
            self.kinds[kind].add(key)
        for op in aggregations:
            self.aggregations[op].add(key)
        if consumer is not None:
            self.consumers[consumer].add(key)
        if u.source.kind == SourceKind.QUERY:
            self.executions[u.occurrence] = u.executions

    def counts(self) -> UsageCounts:
        return UsageCounts(rules=len(self.sources[SourceKind.RULE]),
                           dashboards=len(self.sources[SourceKind.DASHBOARD]),
                           queries=len(self.sources[SourceKind.QUERY]),
                           query_executions=sum(self.executions.values()),
                           kinds={k: len(v) for k, v in self.kinds.items()},
                           aggregations={k: len(v) for k, v in self.aggregations.items()},
                           consumers={k: len(v) for k, v in self.consumers.items()})


def query_source(query: str, file: str = "") -> Source:
    """The source of an ad-hoc query: one per distinct query text, wherever it was logged."""
    digest = hashlib.blake2b(query.encode("utf-8"), digest_size=8).hexdigest()
    return Source(SourceKind.QUERY, f"query:{digest}", query[:200], file)


class UsageIndex:
    """Usage of metrics and labels over all sources added; ask with ``metric_used``, ``labels_needed``,
    ``usages``, ``metric_counts`` and ``label_counts``.

    ``exclude_query`` drops ad-hoc queries from query logs (e.g. the auditor's own census queries).
    """

    def __init__(self, analyzer: PromQLAnalyzer | None = None, *, apply_wildcards: bool = False,
                 exclude_query: Callable[[str], bool] | None = None) -> None:
        self.analyzer = analyzer or PromQLAnalyzer()
        self.apply_wildcards = apply_wildcards
        self.exclude_query = exclude_query
        self._errors: list[ParseError] = []
        self.query_logs: list[QueryLogSummary] = []
        self._occurrences = 0
        self._exact: dict[str, list[Usage]] = defaultdict(list)
        self._patterns: list[Usage] = []
        self._wildcards: list[Usage] = []
        self._rule_keys: dict[tuple[str, str], str] = {}  # (group, expression) → rule id, for log attribution
        self._rule_scoped_keys: dict[tuple[str, str, str], str] = {}
        self._evaluations: Counter[RuleEvaluation] = Counter()
        self._derived: _Derived | None = None
        self._sources: dict[SourceKind, set[str]] = defaultdict(set)
        self._skipped: Counter[str] = Counter()  # dashboard queries of other datasources, per plugin type
        self._unresolved: list[Usage] = []

    # ---- adding -------------------------------------------------------------------------------------

    def add(self, item: Occurrence | ParseError | SkippedQuery) -> None:
        """Record one occurrence (its selectors), one parse error, or a query skipped for its datasource."""
        self._derived = None
        if isinstance(item, SkippedQuery):
            self._skipped[item.datasource] += 1
            return
        if isinstance(item, ParseError):
            self._errors.append(item)
            return
        self._record(item)

    def _record(self, occ: Occurrence) -> None:
        self._occurrences += 1
        n = self._occurrences
        self._sources[occ.source.kind].add(occ.source.id)
        if occ.source.kind == SourceKind.RULE:
            self._remember_rule(occ)
        for s in occ.analysis.selectors:
            u = Usage(occ.source, occ.location, occ.analysis.expression, s, occ.executions, n)
            if s.metric is not None:
                self._exact[s.metric].append(u)
            elif s.unresolved_name:
                self._unresolved.append(u)
            elif s.pattern is not None and not s.pattern.matches_everything:
                self._patterns.append(Usage(u.source, u.location, u.expression, s, u.executions, n, True))
            else:
                self._wildcards.append(u)

    def _remember_rule(self, occ: Occurrence) -> None:
        # Prometheus logs a rule's query as it renders the parsed rule, not as written: match on layout-free text.
        src = occ.source
        text = occ.analysis.canonical or occ.analysis.expression
        self._rule_keys.setdefault((src.group, text), src.id)
        self._rule_scoped_keys.setdefault((src.scope, src.group, text), src.id)

    def add_all(self, items: Iterable[Occurrence | ParseError | SkippedQuery]) -> int:
        """Add every item; returns how many were parse errors."""
        errors = 0
        for item in items:
            errors += isinstance(item, ParseError)
            self.add(item)
        return errors

    def add_expression(self, expression: str, source: Source, location: str = "", executions: int = 1) -> None:
        """One expression from anywhere (e.g. a query typed in a notebook)."""
        analysis = self.analyzer.analyze(expression)
        if not analysis.ok:
            self.add(ParseError(source.kind, source.id, location, expression, str(analysis.error),
                                analysis.mentions))
        else:
            self.add(Occurrence(source, location, analysis, executions))

    def add_rule_file(self, path: str | Path) -> int:
        return self.add_all(rule_file_occurrences(path, self.analyzer))

    def add_rule_text(self, text: str, file: str) -> int:
        return self.add_all(rule_text_occurrences(text, file=file, analyzer=self.analyzer))

    def add_rules_api(self, answer: object, source: str = "") -> int:
        """A Prometheus ``/api/v1/rules`` answer (whole JSON, its ``data`` or the groups list)."""
        return self.add_all(rules_api_occurrences(answer, source=source, analyzer=self.analyzer))

    def add_ruler(self, answer: Mapping[str, Any] | str, tenant: str = "") -> int:
        """A Mimir ruler ``/prometheus/config/v1/rules`` answer (namespace → groups, mapping or YAML)."""
        return self.add_all(ruler_occurrences(answer, tenant=tenant, analyzer=self.analyzer))

    def add_dashboard(self, data: object, file: str = "", library_panels: Mapping[str, Any] | None = None) -> int:
        return self.add_all(dashboard_occurrences(data, file=file, library_panels=library_panels,
                                                  analyzer=self.analyzer))

    def add_dashboard_file(self, path: str | Path, library_panels: Mapping[str, Any] | None = None) -> int:
        return self.add_all(dashboard_file_occurrences(path, library_panels=library_panels, analyzer=self.analyzer))

    def add_query_log(self, summary: QueryLogSummary) -> None:
        """Queries of a read log: each distinct text parsed once; rule evaluations go to their rules."""
        self._derived = None
        self.query_logs.append(summary)
        self._errors.extend(summary.errors)
        for query, executions in summary.queries.items():
            if self.exclude_query is not None and self.exclude_query(query):
                continue
            self.add_expression(query, query_source(query, summary.file), summary.file, executions)
        self._evaluations.update(summary.rule_evaluations)

    def add_prometheus_query_log(self, log: str | Path | Iterable[str | bytes], start: datetime,
                                 end: datetime) -> QueryLogSummary:
        """Read (streaming) and add a Prometheus query log for the window ``[start, end)``."""
        file, lines = _lines(log, "query.log")
        summary = read_prometheus_query_log(lines, start, end, file=file)
        self.add_query_log(summary)
        return summary

    def add_mimir_query_stats(self, log: str | Path | Iterable[str | bytes], start: datetime, end: datetime,
                              tenant: str | None = None) -> QueryLogSummary:
        """Read (streaming) and add Mimir query-frontend "query stats" lines for ``[start, end)``."""
        file, lines = _lines(log, "query-frontend.log")
        summary = read_mimir_query_stats(lines, start, end, file=file, tenant=tenant)
        self.add_query_log(summary)
        return summary

    # ---- asking -------------------------------------------------------------------------------------

    @property
    def errors(self) -> list[ParseError]:
        """Everything that could not be read: files, log lines (the first ones per log), expressions."""
        return self._errors + self._state().errors

    def _state(self) -> _Derived:
        if self._derived is None:
            self._derived = _Derived.build(self)
        return self._derived

    def metrics(self) -> list[str]:
        """Metric names used by exact name, sorted (pattern-only metrics are found by ``metric_used``)."""
        return sorted(self._state().exact)

    def usages(self, name: str) -> list[Usage]:
        """Every usage of ``name``: by exact name, then by ``__name__`` pattern (then wildcards if applied)."""
        return self._state().usages(name)

    def metric_used(self, name: str) -> bool:
        return bool(self.usages(name))

    def labels_needed(self, name: str) -> LabelNeed:
        """The labels of ``name`` that must survive so that every usage's result stays the same.

        The union over its usages of what each needs: the labels it matches on, groups by (``by``),
        matches vectors on (``on``, the ``group_left/right`` extras), copies (``label_replace/label_join``
        sources), sorts by or reads as ``le``; ``ALL`` (an ``AllLabels``) when a usage keeps the series'
        labels in its result (a bare selector, ``rate(x[5m])`` in a panel, a one-to-one match without
        ``on``), and ALL but ``x`` for ``without (x)``/``ignoring (x)``. An unused metric needs nothing.
        Values only survive label removal when the aggregators applied allow it: see
        ``metric_counts(name).aggregations``.
        """
        need: LabelNeed = frozenset()
        for u in self.usages(name):
            need = union_need(need, u.selector.need)
        return need

    def label_needed(self, name: str, label: str) -> bool:
        return label in self.labels_needed(name)

    def metric_counts(self, name: str) -> UsageCounts:
        """Distinct rules/dashboards/queries using ``name``, executions, ways of use and aggregators."""
        tally = _Tally()
        for u in self.usages(name):
            tally.add(u, u.selector.kinds, u.selector.aggregations, u.selector.consumer)
        return tally.counts()

    def label_counts(self, name: str) -> dict[str, UsageCounts]:
        """Per label that some usage of ``name`` names explicitly: who uses it and how (``UsageKind``)."""
        tallies: dict[str, _Tally] = defaultdict(_Tally)
        for u in self.usages(name):
            for label, kinds in u.selector.labels.items():
                tallies[label].add(u, kinds)
        return {label: tallies[label].counts() for label in sorted(tallies)}

    def labels_named_only_as_unneeded(self, name: str) -> set[str]:
        """Labels named only in ``without``/``ignoring``/destination positions: safe to drop for every usage."""
        counts = self.label_counts(name)
        return {label for label, c in counts.items() if set(c.kinds) <= NOT_NEEDING_KINDS}

    def unparsed_hold(self, name: str, labels: Iterable[str] = ()) -> ParseError | None:
        """The first expression that does not parse and may read metric ``name`` (whose series carry
        ``labels``), or None.

        It may read the metric when a token scan finds the name in it (or a ``__name__`` pattern of it
        matches), or — in a rule or a dashboard — when it has a name-less selector whose matchers the
        metric's labels can satisfy. Name-less ad-hoc queries are exploration, as for parsed ones.
        """
        st = self._state()
        found = st.unparsed_exact.get(name)
        if found is not None:
            return found
        present = list(labels)
        for e in st.unparsed_other:
            m = e.mentions
            assert m is not None
            if m.names(name) or (e.source_kind != SourceKind.QUERY and m.may_select(name, present)):
                return e
        return None

    def unparsed(self) -> list[ParseError]:
        """Every expression that does not parse, with what a token scan found in it (``mentions``)."""
        return [e for e in self.errors if e.mentions is not None]

    def unresolved_usages(self) -> list[Usage]:
        """Selectors whose metric name is only a Grafana variable with no knowable values."""
        return list(self._unresolved)

    def skipped_queries(self) -> dict[str, int]:
        """Dashboard queries not read as PromQL, per datasource plugin type."""
        return dict(sorted(self._skipped.items()))

    def pattern_usages(self) -> list[Usage]:
        """Usages that select metrics by a ``__name__`` regex."""
        return list(self._state().patterns)

    def wildcard_usages(self) -> list[Usage]:
        """Usages that name no metric (``{job="x"}``, ``label_values(job)``, ``{__name__=~".+"}``)."""
        return list(self._state().wildcards)

    def rule_evaluations(self) -> dict[str, int]:
        """Rule id → evaluations seen in query logs (rules only known from the log get ids ``.../expr:<hash>``)."""
        return dict(self._state().evaluations)

    def recorded_metrics(self) -> dict[str, set[str]]:
        """Recording rule output metric → the metrics its expression reads (exact names)."""
        out: dict[str, set[str]] = defaultdict(set)
        for metric, uses in self._state().exact.items():
            for u in uses:
                if u.source.kind == SourceKind.RULE and "/record:" in u.source.id:
                    out[u.source.name].add(metric)
        return dict(out)

    def summary(self) -> dict[str, object]:
        """JSON-safe totals, for logs and report metadata."""
        st = self._state()
        sources = {k: set(v) for k, v in self._sources.items()}
        for u in st.extra_rule_usages:
            sources.setdefault(SourceKind.RULE, set()).add(u.source.id)
        return {
            "rules": len(sources.get(SourceKind.RULE, ())),
            "dashboards": len(sources.get(SourceKind.DASHBOARD, ())),
            "queries": len(sources.get(SourceKind.QUERY, ())),
            "query_executions": sum(sum(s.queries.values()) for s in self.query_logs),
            "rule_evaluations": sum(self._evaluations.values()),
            "metrics_by_name": len(st.exact),
            "pattern_usages": len(st.patterns),
            "wildcard_usages": len(st.wildcards),
            "parse_errors": len(self.errors),
            "unparsed_expressions": len(self.unparsed()),
            "sources_with_errors": len({(e.source_kind, e.source_id) for e in self.errors}),
            "unresolved_name_selectors": len(self._unresolved),
            "non_prometheus_targets": sum(self._skipped.values()),
            "non_prometheus_targets_by_datasource": self.skipped_queries(),
            "log_bad_lines_not_listed": sum(s.bad_lines - len(s.errors) for s in self.query_logs),
            "log_lines": sum(s.lines for s in self.query_logs),
            "log_bad_lines": sum(s.bad_lines for s in self.query_logs),
            "expressions_parsed": self.analyzer.parsed,
        }


@dataclass
class _Derived:
    """Views rebuilt after additions: rule evaluations from logs matched to rules, lookups per metric."""

    index: UsageIndex
    exact: dict[str, list[Usage]]
    patterns: list[Usage]
    wildcards: list[Usage]
    evaluations: Counter[str]
    extra_rule_usages: list[Usage]
    errors: list[ParseError]
    unparsed_exact: dict[str, ParseError] = field(default_factory=dict)  # metric named by an unparsed expression
    unparsed_other: list[ParseError] = field(default_factory=list)  # with patterns or name-less selectors
    cache: dict[str, list[Usage]] = field(default_factory=dict)

    @classmethod
    def build(cls, index: UsageIndex) -> _Derived:
        exact = {k: list(v) for k, v in index._exact.items()}
        patterns, wildcards = list(index._patterns), list(index._wildcards)
        evaluations: Counter[str] = Counter()
        extra: list[Usage] = []
        errors: list[ParseError] = []
        orphan_ids: dict[str, int] = {}
        for ev, count in index._evaluations.items():
            analysis = index.analyzer.analyze(ev.query)
            text = analysis.canonical or ev.query
            rid = index._rule_scoped_keys.get((ev.scope, ev.group, text)) or index._rule_keys.get((ev.group, text))
            if rid is not None:
                evaluations[rid] += count
                continue
            # A rule Prometheus evaluates that no rule file/API answer told us about: count it as a rule.
            digest = hashlib.blake2b(ev.query.encode("utf-8"), digest_size=6).hexdigest()
            rid = f"{ev.scope}/{ev.group}/expr:{digest}"
            evaluations[rid] += count
            if rid in orphan_ids:
                continue
            orphan_ids[rid] = -len(orphan_ids) - 1  # negative occurrence ids: not from add()
            source = Source(SourceKind.RULE, rid, "", ev.scope, ev.scope, ev.group)
            if not analysis.ok:
                errors.append(ParseError(SourceKind.RULE, rid, f"query log rule group {ev.group!r}",
                                         ev.query, str(analysis.error), analysis.mentions))
                continue
            for s in analysis.selectors:
                u = Usage(source, f"query log rule group {ev.group!r}", ev.query, s, 1, orphan_ids[rid])
                extra.append(u)
                if s.metric is not None:
                    exact.setdefault(s.metric, []).append(u)
                elif s.pattern is not None and not s.pattern.matches_everything:
                    patterns.append(Usage(u.source, u.location, u.expression, s, 1, u.occurrence, True))
                else:
                    wildcards.append(u)
        derived = cls(index, exact, patterns, wildcards, evaluations, extra, errors)
        for e in index._errors + errors:
            if e.mentions is None:
                continue
            for metric in e.mentions.metrics:
                derived.unparsed_exact.setdefault(metric, e)
            if e.mentions.patterns or e.mentions.nameless:
                derived.unparsed_other.append(e)
        return derived

    def usages(self, name: str) -> list[Usage]:
        found = self.cache.get(name)
        if found is None:
            found = list(self.exact.get(name, ()))
            found += [u for u in self.patterns if u.selector.pattern is not None and u.selector.pattern.matches(name)]
            if self.index.apply_wildcards:
                found += [u for u in self.wildcards if u.selector.pattern is None or u.selector.pattern.matches(name)]
            self.cache[name] = found
        return found


def _lines(log: str | Path | Iterable[str | bytes], default: str) -> tuple[str, Iterable[str | bytes]]:
    if isinstance(log, str | Path):
        return str(log), open_log(log)
    return default, log
