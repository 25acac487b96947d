"""Classify each metric by its usage and suggest reductions that change no existing result.

A metric is *unused* when no rule, dashboard or logged query reads it; *partially used* when
some of its labels are needed by nothing; else *used*. Suggestions:

- ``drop_metric`` — unused: drop it at scrape time.
- ``drop_labels`` — the unneeded labels are redundant (dropping them merges no series, as the
  server counts): remove them from that metric at scrape time; every result stays the same.
- ``aggregate`` — dropping them merges series, and every usage aggregates with one operator
  (all ``sum``, all ``max`` or all ``min``) that gives the same answer on pre-aggregated
  series: aggregate at ingestion (Mimir/Adaptive-Metrics style, or a recording rule).
- ``blocked`` — labels are unneeded by name, but a usage's result would change (``count``,
  ``avg``, ``quantile``… count or weigh series): nothing is suggested; ``blocked_by`` says why.
- ``keep`` — every label is needed.

``series_after`` always comes from the server (``count(count by (kept) (metric))``), never a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from traceo_finops.usage import AllLabels, UsageIndex

# Labels never removed by a suggestion: `job` identifies the scrape (Prometheus naming
# practice: always keep it); `le` and `quantile` are the structure of histograms and summaries.
DEFAULT_PROTECTED_LABELS = frozenset({"job", "le", "quantile"})
# Pre-aggregating with the same operator leaves these aggregations' answers unchanged.
IDEMPOTENT_AGGREGATORS = ("sum", "max", "min")


class Classification(StrEnum):
    USED = "used"
    PARTIALLY_USED = "partially_used"
    UNUSED = "unused"


class Suggestion(StrEnum):
    KEEP = "keep"
    DROP_METRIC = "drop_metric"
    DROP_LABELS = "drop_labels"
    AGGREGATE = "aggregate"
    BLOCKED = "blocked"


class MetricCensus(Protocol):
    """What collection knows of one metric: its series and each label's distinct values."""

    metric: str
    series: int
    labels: Mapping[str, int]


@dataclass(frozen=True)
class Verdict:
    metric: str
    series: int
    classification: Classification
    suggestion: Suggestion
    unneeded_labels: tuple[str, ...] = ()
    kept_labels: tuple[str, ...] = ()
    series_after: int = 0  # if the suggestion is applied (== series for keep/blocked/drop_labels)
    series_if_aggregated: int | None = None  # what merging away the unneeded labels would leave
    aggregator: str | None = None  # for `aggregate`
    blocked_by: str = ""
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def series_saved(self) -> int:
        return self.series - self.series_after


CountAfter = Callable[[str, tuple[str, ...]], int]
"""(metric, kept labels) → number of series left when every other label is merged away."""


def unneeded_labels(index: UsageIndex, metric: str, labels: Iterable[str],
                    protected: frozenset[str] = DEFAULT_PROTECTED_LABELS) -> tuple[str, ...]:
    """Labels of ``metric`` that no usage needs (and that are not protected)."""
    need = index.labels_needed(metric)
    present = {label for label in labels if label != "__name__"} - protected
    if isinstance(need, AllLabels):
        return tuple(sorted(present & need.excluded))
    return tuple(sorted(present - need))


def judge(census: MetricCensus, index: UsageIndex, count_after: CountAfter,
          protected: frozenset[str] = DEFAULT_PROTECTED_LABELS) -> Verdict:
    """The classification and the safe suggestion for one metric."""
    counts = index.metric_counts(census.metric)
    usage = {"rules": counts.rules, "dashboards": counts.dashboards, "queries": counts.queries}
    if not index.metric_used(census.metric):
        return Verdict(census.metric, census.series, Classification.UNUSED, Suggestion.DROP_METRIC,
                       series_after=0, usage=usage)
    unneeded = unneeded_labels(index, census.metric, census.labels, protected)
    if not unneeded:
        return Verdict(census.metric, census.series, Classification.USED, Suggestion.KEEP,
                       series_after=census.series, usage=usage)
    kept = tuple(sorted(set(census.labels) - set(unneeded) - {"__name__"}))
    merged = count_after(census.metric, kept)
    base = dict(metric=census.metric, series=census.series, classification=Classification.PARTIALLY_USED,
                unneeded_labels=unneeded, kept_labels=kept, series_if_aggregated=merged, usage=usage)
    if merged >= census.series:
        # No two series differ only in those labels: removing them merges nothing.
        return Verdict(**base, suggestion=Suggestion.DROP_LABELS, series_after=census.series)
    aggregators = set(counts.aggregations)
    for op in IDEMPOTENT_AGGREGATORS:
        if aggregators == {op}:
            return Verdict(**base, suggestion=Suggestion.AGGREGATE, series_after=merged, aggregator=op)
    others = sorted(aggregators - {"sum"}) or sorted(aggregators)
    reason = (f"merging {census.series} series into {merged} would change {', '.join(others)}() results"
              if others else "a usage reads every series without aggregating")
    return Verdict(**base, suggestion=Suggestion.BLOCKED, series_after=census.series, blocked_by=reason)
