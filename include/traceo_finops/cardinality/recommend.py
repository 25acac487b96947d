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

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from traceo_finops.usage import AllLabels, SourceKind, Usage, UsageIndex

# Labels never removed by a suggestion: `job` identifies the scrape (Prometheus naming
# practice: always keep it); `le` and `quantile` are the structure of histograms and summaries.
DEFAULT_PROTECTED_LABELS = frozenset({"job", "le", "quantile"})
# Series Prometheus makes itself, after metric relabeling (per target) or from alerting rules:
# relabel configs cannot drop them, and alerting depends on them.
SYNTHETIC_METRICS = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped",
                               "scrape_samples_post_metric_relabeling", "scrape_series_added",
                               "ALERTS", "ALERTS_FOR_STATE"})
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


def durable_wildcards(index: UsageIndex) -> list[Usage]:
    """Name-less or ``__name__``-regex selectors in rules and dashboards (``{job="x"}``, ``{__name__=~"a.*"}``).

    Their results include every metric they match, so such a metric must keep all of its series
    and labels. Ad-hoc queries of that shape in the query log (Explore, census tools — our own
    census included) are exploration, not consumers, and do not hold a metric back.
    """
    return [u for u in index.wildcard_usages() if u.source.kind in (SourceKind.RULE, SourceKind.DASHBOARD)]


def _wildcard_hit(metric: str, wildcards: Sequence[Usage]) -> Usage | None:
    for u in wildcards:
        if u.selector.pattern is None or u.selector.pattern.matches(metric):
            return u
    return None


def judge(census: MetricCensus, index: UsageIndex, count_after: CountAfter,
          protected: frozenset[str] = DEFAULT_PROTECTED_LABELS, wildcards: Sequence[Usage] = ()) -> Verdict:
    """The classification and the safe suggestion for one metric.

    ``wildcards`` are :func:`durable_wildcards`: a metric one of them may select is left alone.
    """
    counts = index.metric_counts(census.metric)
    usage = {"rules": counts.rules, "dashboards": counts.dashboards, "queries": counts.queries}
    if census.metric in SYNTHETIC_METRICS:
        used = Classification.USED if index.metric_used(census.metric) else Classification.UNUSED
        return Verdict(census.metric, census.series, used, Suggestion.KEEP, series_after=census.series,
                       blocked_by="made by Prometheus itself (per target or by alerting rules)", usage=usage)
    hit = _wildcard_hit(census.metric, wildcards)
    if hit is not None:
        used = Classification.USED if index.metric_used(census.metric) else Classification.PARTIALLY_USED
        return Verdict(census.metric, census.series, used, Suggestion.BLOCKED, series_after=census.series,
                       blocked_by=f"selected without its name by {hit.source.kind.value} {hit.source.id}: "
                                  f"{hit.expression[:120]}", usage=usage)
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
