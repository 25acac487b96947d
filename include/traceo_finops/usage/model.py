"""The vocabulary of usage analysis: which metric and label an expression uses, and how.

Everything here is an immutable value; the walker (``promql``), the sources (``rules``, ``grafana``,
``querylog``) and the index (``index``) only exchange these types.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property


class SourceKind(StrEnum):
    """Where an expression comes from; usage counts are kept per kind."""

    RULE = "rule"
    DASHBOARD = "dashboard"
    QUERY = "query"


class UsageKind(StrEnum):
    """How an expression refers to a label (or, for the first group, to a metric as a whole)."""

    # Metric-level
    ALL_LABELS = "all_labels"  # the result keeps every label (bare selector, `without`, one-to-one match ...)
    AGGREGATED = "aggregated"  # reaches the result through an aggregation
    NAME_PATTERN = "name_pattern"  # selected by a `__name__` regex, not by its exact name
    EXISTENCE = "existence"  # only whether series exist matters (`absent`)
    # Label-level
    MATCHER = "matcher"
    BY = "by"
    WITHOUT = "without"
    ON = "on"
    IGNORING = "ignoring"
    GROUP_LEFT = "group_left"
    GROUP_RIGHT = "group_right"
    LABEL_REPLACE_SRC = "label_replace_src"
    LABEL_REPLACE_DST = "label_replace_dst"
    LABEL_JOIN_SRC = "label_join_src"
    LABEL_JOIN_DST = "label_join_dst"
    SORT_BY_LABEL = "sort_by_label"
    HISTOGRAM_LE = "histogram_le"  # histogram_quantile/histogram_fraction read the `le` label
    TEMPLATE_VARIABLE = "template_variable"  # Grafana `label_values(metric, label)`
    DYNAMIC = "dynamic"  # a Grafana variable stands where a label (or metric) name goes


# Kinds that name a label without needing it: the label may go away and the result stays the same.
NOT_NEEDING_KINDS = frozenset({UsageKind.WITHOUT, UsageKind.IGNORING, UsageKind.LABEL_REPLACE_DST,
                               UsageKind.LABEL_JOIN_DST})


@dataclass(frozen=True)
class AllLabels:
    """Every label of the series except ``excluded`` (``without (x)`` needs all labels but ``x``)."""

    excluded: frozenset[str] = frozenset()

    def __contains__(self, label: object) -> bool:
        return label not in self.excluded

    def __repr__(self) -> str:
        return "ALL" if not self.excluded else f"ALL-{sorted(self.excluded)}"


ALL = AllLabels()

LabelNeed = frozenset[str] | AllLabels
"""Which labels of a metric must survive: a finite set, or ALL (possibly minus some)."""


def union_need(a: LabelNeed, b: LabelNeed) -> LabelNeed:
    """Labels needed by either ``a`` or ``b``."""
    if isinstance(a, AllLabels):
        if isinstance(b, AllLabels):
            return AllLabels(a.excluded & b.excluded)
        return AllLabels(a.excluded - b)
    if isinstance(b, AllLabels):
        return AllLabels(b.excluded - a)
    return a | b


@dataclass(frozen=True)
class NameMatcher:
    """A matcher on ``__name__``; the value of a regex matcher is a Prometheus (fully anchored) RE2 regex."""

    op: str  # "=", "!=", "=~", "!~"
    value: str

    @cached_property
    def _regex(self) -> re.Pattern[str] | None:
        if self.op not in ("=~", "!~"):
            return None
        try:
            return re.compile(self.value)
        except re.error:  # RE2 syntax Python does not know: match nothing rather than crash
            return re.compile(r"(?!)")

    def matches(self, name: str) -> bool:
        if self.op == "=":
            return name == self.value
        if self.op == "!=":
            return name != self.value
        regex = self._regex  # set for =~ and !~
        hit = regex is not None and regex.fullmatch(name) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"__name__{self.op}{self.value!r}"


_ANY = (".*", ".+", "(.*)", "(.+)", "(?:.*)", "(?:.+)")


def _wraps(regex: str, start: str, end: str) -> bool:
    """True when ``regex`` is ``start`` + one balanced group + ``end`` (the group's brackets pair up)."""
    if not (regex.startswith(start) and regex.endswith(end)) or len(regex) < len(start) + len(end):
        return False
    depth = 1
    for c in regex[len(start):len(regex) - len(end)]:
        depth += {"(": 1, ")": -1}.get(c, 0)
        if depth == 0:
            return False
    return depth == 1


def _any_name(regex: str) -> bool:
    """``.*``, ``.+`` and the same wrapped, as Grafana's unanchored ``metrics(.*)`` becomes (``.*(?:.*).*``)."""
    while True:
        if _wraps(regex, ".*(?:", ").*"):
            regex = regex[5:-3]
        elif _wraps(regex, "(?:", ")"):
            regex = regex[3:-1]
        else:
            return regex in _ANY


@dataclass(frozen=True)
class NamePattern:
    """Metric names a selector without a plain name picks: all of ``matchers`` must match."""

    matchers: tuple[NameMatcher, ...]

    def matches(self, name: str) -> bool:
        return all(m.matches(name) for m in self.matchers)

    @property
    def matches_everything(self) -> bool:
        """True for ``.*``/``.+``-like patterns that do not single out metrics (e.g. a cardinality census)."""
        return all(m.op == "=~" and _any_name(m.value) for m in self.matchers)

    def __str__(self) -> str:
        return ",".join(str(m) for m in self.matchers)


@dataclass(frozen=True)
class LabelMatcher:
    """A label matcher as written; the value may hold any unicode, quotes or newlines."""

    label: str
    op: str
    value: str

    @property
    def requires_label(self) -> bool:
        """True when only series that carry the label can match (``a="x"``, ``a=~"x.+"``, ``a!=""``)."""
        if self.op == "=":
            return self.value != ""
        if self.op == "!=":
            return self.value == ""
        if self.op == "=~":
            try:
                return re.fullmatch(self.value, "") is None
            except re.error:  # RE2 syntax Python does not know: it might match the empty value
                return False
        return False  # `!~` matches series without the label unless the regex matches ""


def may_select(matchers: tuple[LabelMatcher, ...], labels: Iterable[str]) -> bool:
    """Whether a selector with ``matchers`` can select series of a metric that has ``labels``."""
    present = set(labels)
    return all(m.label in present for m in matchers if m.requires_label)


@dataclass(frozen=True)
class Mentions:
    """What a token scan (``lexer.mentions``) finds in an expression the parser refused.

    ``metrics`` are the identifiers (and quoted names) that may be metric names, ``patterns`` the
    ``__name__`` regex matchers, ``nameless`` the matchers of every selector without a metric name (one
    tuple per selector), ``labels`` the label names. Used to hold back what the expression might read.
    """

    metrics: frozenset[str] = frozenset()
    patterns: tuple[NamePattern, ...] = ()
    nameless: tuple[tuple[LabelMatcher, ...], ...] = ()
    labels: frozenset[str] = frozenset()

    def names(self, metric: str) -> bool:
        """True when the expression names ``metric`` or one of its ``__name__`` patterns matches it."""
        return metric in self.metrics or any(p.matches(metric) for p in self.patterns)

    def may_select(self, metric: str, labels: Iterable[str]) -> bool:
        """True when the expression names ``metric`` or has a name-less selector that may select it."""
        return self.names(metric) or any(may_select(group, labels) for group in self.nameless)


@dataclass(frozen=True)
class SelectorUsage:
    """One vector selector in an expression and what the expression needs from its series.

    ``metric`` is the exact name (from ``name{...}`` or ``{__name__="name"}``); otherwise ``pattern`` holds
    the ``__name__`` matchers, or is None when the selector has no name constraint at all (``{job="x"}``).
    ``labels`` maps every label the expression mentions for this selector to how it does so; ``need`` is
    what must survive for the result to stay unchanged (see ``index.UsageIndex.labels_needed``).
    """

    metric: str | None
    pattern: NamePattern | None
    need: LabelNeed
    labels: dict[str, frozenset[UsageKind]] = field(hash=False, compare=True)
    matchers: tuple[LabelMatcher, ...] = ()
    aggregations: tuple[str, ...] = ()  # aggregation operators applied, innermost first
    functions: tuple[str, ...] = ()  # functions applied, innermost first
    kinds: frozenset[UsageKind] = frozenset()  # metric-level kinds
    dynamic_labels: frozenset[str] = frozenset()  # Grafana variables used as label names, unresolved
    # The innermost aggregation that consumes these series, and the functions and operators between it (or
    # the root, without one) and the selector (innermost first, e.g. ("rate",) or ("series * scalar",)):
    # only they see the series themselves; every operator further out sees the aggregation's output.
    consumer: str | None = None
    consumer_path: tuple[str, ...] = ()
    # A Grafana variable that stands for the whole metric name and whose values cannot be known: the
    # selector names no metric (``metric`` and ``pattern`` are None) and is not a name-less selector either.
    unresolved_name: str = ""

    @property
    def all_labels(self) -> bool:
        return isinstance(self.need, AllLabels)


@dataclass(frozen=True)
class ExpressionAnalysis:
    """What one expression uses; ``error`` and ``mentions`` are set (``selectors`` empty) when it does not parse."""

    expression: str
    selectors: tuple[SelectorUsage, ...] = ()
    error: str | None = None
    canonical: str | None = None  # the parser's rendering: equal for texts that differ only in layout
    mentions: Mentions | None = None  # when it does not parse: the names a token scan finds in it

    @property
    def ok(self) -> bool:
        return self.error is None

    def metrics(self) -> set[str]:
        return {s.metric for s in self.selectors if s.metric is not None}

    def for_metric(self, metric: str) -> list[SelectorUsage]:
        return [s for s in self.selectors if s.metric == metric]

    def need(self, metric: str) -> LabelNeed:
        """Union of what every selector of ``metric`` in this expression needs."""
        out: LabelNeed = frozenset()
        for s in self.for_metric(metric):
            out = union_need(out, s.need)
        return out


@dataclass(frozen=True)
class Source:
    """A rule, a dashboard or a distinct ad-hoc query: the unit usage is counted in."""

    kind: SourceKind
    id: str  # stable and unique within its kind, e.g. "rules.yml/group/record:job:x:rate5m"
    name: str = ""
    file: str = ""
    scope: str = ""  # rules: the rule file's base name or the Mimir namespace
    group: str = ""  # rules: the rule group


@dataclass(frozen=True)
class Occurrence:
    """One expression at one place in a source (a panel target, a rule, a log query)."""

    source: Source
    location: str
    analysis: ExpressionAnalysis
    executions: int = 1  # for queries: how often it ran in the window


@dataclass(frozen=True)
class ParseError:
    """Something that could not be read: a file, a log line or an expression. Recorded, never raised.

    ``mentions`` is set for an expression that does not parse: what it names is held back.
    """

    source_kind: SourceKind
    source_id: str
    location: str
    expression: str
    error: str
    mentions: Mentions | None = None

    def __str__(self) -> str:
        expr = f" in {self.expression[:200]!r}" if self.expression else ""
        return f"{self.source_kind.value} {self.source_id} at {self.location}: {self.error}{expr}"


@dataclass(frozen=True)
class SkippedQuery:
    """A dashboard query whose datasource is not Prometheus-compatible (Loki, Tempo, SQL…): not PromQL."""

    source: Source
    location: str
    datasource: str  # the datasource's plugin type, e.g. "loki"
