"""Classify each metric by its usage and suggest reductions that change no existing result.

A metric is *unused* when no rule, dashboard or logged query reads it; *partially used* when
some of its labels are needed by nothing; else *used*. Suggestions:

- ``drop_metric`` — unused: drop it at scrape time.
- ``drop_labels`` — the unneeded labels are redundant (dropping them merges no series, as the
  server counts): remove them from that metric at scrape time; every result stays the same.
- ``aggregate`` — dropping them merges series, and one ingestion-time aggregation (``sum``,
  ``max`` or ``min``) leaves every usage's result unchanged: aggregate at ingestion
  (Mimir/Adaptive-Metrics style, or a recording rule).
- ``blocked`` — labels are unneeded by name, but a usage's result would change (``count``,
  ``avg``, ``quantile``… count or weigh series), or something we could not read may use the
  metric: nothing is suggested; ``blocked_by`` says why.
- ``keep`` — every label is needed.

Whether merging is safe is decided per usage by the aggregation that consumes the series — the
innermost one (``SelectorUsage.consumer``) — and the functions and operators between it and the
selector (``consumer_path``). Operators further out (``topk``, ``count``, ``quantile``, ``sort``
around a ``sum``) only see that aggregation's output, which merging does not change.

Never freed: a metric an expression that does not parse may read (a token scan names it, or a
name-less selector in it may select it) is ``blocked``; ``blocked_by`` names the expression.

Protected labels are never removed: ``le``/``quantile`` (histogram and summary structure) and the
labels that identify a scrape target — ``job``, ``instance``, every label the scrape configuration
attaches to targets (``relabel_configs`` ``target_label``, ``static_configs`` labels) and their
``exported_`` twins (where a scrape without ``honor_labels`` keeps a scraped ``job``/``instance``)
— unless the configuration allows them (``allow_target_labels``). Blanking ``instance`` on a metric
that has one target today makes the series of a second replica collide tomorrow.

``series_after`` always comes from the server, never a guess: ``count(count by (kept) (metric))`` on Prometheus,
the cardinality API's ``active_series`` listing with the source's ``count_method`` on Mimir (docs/cardinality.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

import yaml

from traceo_finops.prometheus.errors import PrometheusError
from traceo_finops.usage import AllLabels, SourceKind, Usage, UsageIndex, UsageKind
from traceo_finops.usage.model import SelectorUsage, may_select

log = logging.getLogger(__name__)

# Labels that identify a scrape target: Prometheus attaches them to every series of the target.
TARGET_LABELS = frozenset({"job", "instance"})
# Labels never removed by a suggestion: the target's identity, and `le`/`quantile`, the structure of
# histograms and summaries.
DEFAULT_PROTECTED_LABELS = TARGET_LABELS | {"le", "quantile"}
# Series Prometheus makes itself, after metric relabeling (per target) or from alerting rules:
# relabel configs cannot drop them, and alerting depends on them.
SYNTHETIC_METRICS = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped",
                               "scrape_samples_post_metric_relabeling", "scrape_series_added",
                               "ALERTS", "ALERTS_FOR_STATE"})
# Pre-aggregating with the same operator leaves these aggregations' answers unchanged.
IDEMPOTENT_AGGREGATORS = ("sum", "max", "min")
_ALL_OPS = frozenset(IDEMPOTENT_AGGREGATORS)
# Between the consuming aggregation and the selector, these keep "aggregate, then apply" equal to
# "apply, then aggregate". Label and ordering functions touch no value.
_LABEL_STEPS = frozenset({"label_replace", "label_join", "sort", "sort_desc", "sort_by_label", "sort_by_label_desc"})
# Set operators keep or drop whole series by their (kept) matching labels: merged series go together.
_SET_STEPS = frozenset({f"series {op} vector" for op in ("and", "or", "unless")} | {"vector or series"})
_COMMUTING_STEPS = {
    # Linear in the samples: a sum of rates is the rate of the summed counter (ingestion-time
    # aggregation keeps counters as counters), likewise increases, deltas, sums over time, and
    # multiplying or dividing by a number — or by a vector: it is matched on labels the merge keeps
    # (matching labels are needed), so every merged series meets the same factor.
    "sum": {"rate", "irate", "increase", "delta", "idelta", "sum_over_time", "series * scalar",
            "scalar * series", "series / scalar", "series * vector", "vector * series", "series / vector",
            "-series"},
    # Non-decreasing: the largest input stays the largest; max_over_time of a max is the max of max_over_times;
    # an upper-threshold filter keeps the maximum exactly when it passes.
    "max": {"max_over_time", "ceil", "floor", "round", "clamp", "clamp_min", "clamp_max", "series + scalar",
            "scalar + series", "series - scalar", "series + vector", "vector + series", "series - vector",
            "series > scalar", "series >= scalar", "scalar < series", "scalar <= series"},
    "min": {"min_over_time", "ceil", "floor", "round", "clamp", "clamp_min", "clamp_max", "series + scalar",
            "scalar + series", "series - scalar", "series + vector", "vector + series", "series - vector",
            "series < scalar", "series <= scalar", "scalar > series", "scalar >= series"},
}
_WHY = {"count": "counts series", "count_values": "counts series", "avg": "averages series",
        "quantile": "ranks series", "topk": "picks series", "bottomk": "picks series", "limitk": "picks series",
        "limit_ratio": "picks series", "stddev": "weighs series", "stdvar": "weighs series"}
_FILTERS = ("==", "!=", ">", "<", ">=", "<=")


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
    """What collection knows of one metric: its series and each label's distinct values (read-only)."""

    @property
    def metric(self) -> str: ...

    @property
    def series(self) -> int: ...

    @property
    def labels(self) -> Mapping[str, int]: ...


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


def target_labels(scrape_config: Mapping[str, Any] | None) -> frozenset[str]:
    """Labels that identify scrape targets: ``job``, ``instance``, what the configuration's target
    relabeling and static configs attach, and their ``exported_`` twins (a scrape without
    ``honor_labels`` renames a scraped ``job`` to ``exported_job``, so the original identity lives on there).

    ``labelmap`` rules attach labels whose names depend on service discovery: they cannot be named from
    the configuration and are logged, to be listed in ``protected_labels``.
    """
    labels = set(TARGET_LABELS)
    jobs = scrape_config.get("scrape_configs") if isinstance(scrape_config, Mapping) else None
    for job in jobs if isinstance(jobs, list) else []:
        if not isinstance(job, Mapping):
            continue
        for rule in job.get("relabel_configs") or []:
            if not isinstance(rule, Mapping):
                continue
            action = str(rule.get("action") or "replace").lower()
            target = rule.get("target_label")
            if action == "labelmap":
                log.warning("scrape job %r: a labelmap rule attaches labels named by service discovery; list them "
                            "in protected_labels to keep them", job.get("job_name"))
            elif isinstance(target, str) and target and not target.startswith("__"):
                labels.add(target)
        for static in job.get("static_configs") or []:
            if isinstance(static, Mapping) and isinstance(static.get("labels"), Mapping):
                labels.update(str(k) for k in static["labels"] if not str(k).startswith("__"))
    return frozenset(labels | {f"exported_{label}" for label in labels})


def protected_labels(configured: Iterable[str], allow_target_labels: Iterable[str] = (),
                     scrape_config: Mapping[str, Any] | str | Callable[[], str] | None = None) -> frozenset[str]:
    """Labels no suggestion removes: ``configured`` plus the target labels (``target_labels``) not explicitly
    allowed. ``scrape_config`` is Prometheus' loaded configuration (``/api/v1/status/config``): a mapping,
    its YAML, or a function returning it; when it cannot be had, only ``job`` and ``instance`` are known."""
    config: Any = scrape_config
    try:
        if callable(config):
            config = config()
        if isinstance(config, str):
            config = yaml.safe_load(config)
    except (PrometheusError, yaml.YAMLError) as exc:  # without it, fewer labels are known: not fatal
        log.warning("scrape configuration not available (%s): protecting job and instance only", exc)
        config = None
    allowed = set(allow_target_labels)
    return frozenset(configured) | (target_labels(config if isinstance(config, Mapping) else None) - allowed)


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


def _wildcard_hit(census: MetricCensus, wildcards: Sequence[Usage]) -> Usage | None:
    """The first name-less selector that may select ``census.metric``: its ``__name__`` pattern (if any)
    matches, and the metric has every label its matchers (and a ``label_values(label)``) require."""
    for u in wildcards:
        s = u.selector
        if s.pattern is not None and not s.pattern.matches(census.metric):
            continue
        listed = [label for label, kinds in s.labels.items() if UsageKind.TEMPLATE_VARIABLE in kinds]
        if may_select(s.matchers, census.labels) and all(label in census.labels for label in listed):
            return u
    return None


def _show(step: str) -> str:
    return f"`{step}`" if " " in step or step.startswith("-") else f"{step}()"


def _filters(step: str) -> bool:
    words = step.split()
    return len(words) == 3 and words[1] in _FILTERS


def merge_ops(selector: SelectorUsage) -> tuple[frozenset[str], str]:
    """The ingestion-time aggregations (of ``sum``, ``max``, ``min``) that leave this usage's result
    unchanged when series differing only in unneeded labels are merged; if none, why.

    Decided by the aggregation that consumes the series and the steps between it and the selector.
    Without one, only existence (``absent``, the right side of ``and``/``unless``) or a ``label_values``
    list survive merging, as long as no filter below reads individual values.
    """
    op = selector.consumer
    path = [step for step in selector.consumer_path if step not in _LABEL_STEPS and step not in _SET_STEPS]
    # Where only existence counts (per group, or per kept label set), merging keeps it unless a filter
    # below looks at individual values.
    filtering = next((step for step in path if _filters(step) or step.endswith(" parameter")), None)
    if op is None:
        if not ({UsageKind.EXISTENCE, UsageKind.TEMPLATE_VARIABLE} & selector.kinds):
            return frozenset(), "reads the series without aggregating them"
        return (frozenset(), f"{_show(filtering)} filters the series") if filtering else (_ALL_OPS, "")
    if op == "group":  # one output per group whatever the inputs
        return (frozenset(), f"{_show(filtering)} between group() and the series") if filtering else (_ALL_OPS, "")
    if op in _COMMUTING_STEPS:
        bad = next((step for step in path if step not in _COMMUTING_STEPS[op]), None)
        if bad is not None:
            return frozenset(), f"{_show(bad)} between {op}() and the series"
        return frozenset({op}), ""
    return frozenset(), f"{op}() {_WHY.get(op, 'reads individual series')}"


def _merge_ops(usages: Sequence[Usage]) -> tuple[frozenset[str], str]:
    """The aggregations every usage allows (``merge_ops``), or why there is none."""
    allowed = _ALL_OPS
    narrowed: Usage | None = None
    for u in usages:
        ops, why = merge_ops(u.selector)
        where = f"{u.source.kind.value} {u.source.id} ({u.location})"
        if not ops:
            return frozenset(), f"{why} in {where}: {u.expression[:120]}"
        if not allowed & ops:
            assert narrowed is not None
            return frozenset(), (f"{'/'.join(sorted(allowed))}() in {narrowed.source.kind.value} "
                                 f"{narrowed.source.id} and {'/'.join(sorted(ops))}() in {where} need different "
                                 "ingestion aggregations")
        if ops != allowed:
            narrowed = u
        allowed = allowed & ops
    return allowed, ""


def judge(census: MetricCensus, index: UsageIndex, count_after: CountAfter,
          protected: frozenset[str] = DEFAULT_PROTECTED_LABELS, wildcards: Sequence[Usage] = ()) -> Verdict:
    """The classification and the safe suggestion for one metric.

    ``wildcards`` are :func:`durable_wildcards`: a metric one of them may select is left alone, as is
    a metric an expression that does not parse may read (``UsageIndex.unparsed_hold``).
    """
    counts = index.metric_counts(census.metric)
    usage = {"rules": counts.rules, "dashboards": counts.dashboards, "queries": counts.queries}
    used = index.metric_used(census.metric)
    if census.metric in SYNTHETIC_METRICS:
        return Verdict(census.metric, census.series, Classification.USED if used else Classification.UNUSED,
                       Suggestion.KEEP, series_after=census.series,
                       blocked_by="made by Prometheus itself (per target or by alerting rules)", usage=usage)
    maybe = Classification.USED if used else Classification.PARTIALLY_USED
    hit = _wildcard_hit(census, wildcards)
    if hit is not None:
        return Verdict(census.metric, census.series, maybe, Suggestion.BLOCKED, series_after=census.series,
                       blocked_by=f"selected without its name by {hit.source.kind.value} {hit.source.id}: "
                                  f"{hit.expression[:120]}", usage=usage)
    held = index.unparsed_hold(census.metric, census.labels)
    if held is not None:
        return Verdict(census.metric, census.series, maybe, Suggestion.BLOCKED, series_after=census.series,
                       blocked_by=f"may be read by an expression that does not parse: {held.source_kind.value} "
                                  f"{held.source_id} at {held.location}: {held.expression[:120]}", usage=usage)
    if not used:
        return Verdict(census.metric, census.series, Classification.UNUSED, Suggestion.DROP_METRIC,
                       series_after=0, usage=usage)
    unneeded = unneeded_labels(index, census.metric, census.labels, protected)
    if not unneeded:
        return Verdict(census.metric, census.series, Classification.USED, Suggestion.KEEP,
                       series_after=census.series, usage=usage)
    kept = tuple(sorted(set(census.labels) - set(unneeded) - {"__name__"}))
    merged = count_after(census.metric, kept)
    base = Verdict(census.metric, census.series, Classification.PARTIALLY_USED, Suggestion.BLOCKED,
                   unneeded_labels=unneeded, kept_labels=kept, series_after=census.series,
                   series_if_aggregated=merged, usage=usage)
    if merged >= census.series:
        # No two series differ only in those labels: removing them merges nothing.
        return replace(base, suggestion=Suggestion.DROP_LABELS)
    ops, why = _merge_ops(index.usages(census.metric))
    op = next((op for op in IDEMPOTENT_AGGREGATORS if op in ops), None)
    if op is not None:
        return replace(base, suggestion=Suggestion.AGGREGATE, series_after=merged, aggregator=op)
    return replace(base, blocked_by=f"merging {census.series} series into {merged} would change a result: {why}")
