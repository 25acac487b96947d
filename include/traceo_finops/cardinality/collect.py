"""Collect active series per metric, and distinct values per metric and label, from one source/tenant.

Prometheus (plan chosen by measuring a 1,000,000-series head, numbers in docs/benchmarks.md)::

    1. /api/v1/status/tsdb                   once: head stats and the top-10 lists (the call takes a lock)
    2. /api/v1/label/__name__/values         metric names of the window [at - lookback, at]
    3. count by (__name__) ({__name__=~"a|b|c"})   series per metric at ``at``, in chunks of at most
                                             ``max_series_per_query`` series (bounded with the top-10)
                                             and ``metric_chunk_size`` names; a chunk the server times
                                             out on or refuses is split in two and retried (the rules of
                                             ``traceo_finops.prometheus.runner``, like every query here)
    4. /api/v1/labels                        label names of the window (index only, no series walk)
    5. per label L: /api/v1/label/__name__/values?match[]={L!=""}      which metrics carry L
    6. per label L, whichever needs fewer calls:
       - per value v: /api/v1/label/__name__/values?match[]={L="v"}    metrics with that value, or
       - per metric m: /api/v1/label/L/values?match[]={__name__="m"}   values of L on m

The label-values endpoints answer from the TSDB index: no samples are decoded, which is why the label
part is ~10x cheaper than the same counts in PromQL (``count by (__name__) (count by (__name__, L) (…))``
costs ~8-15 µs per series and label on Prometheus 2.42). ``/api/v1/series`` is never listed.

Semantics: series counts are PromQL's (series with a sample in the lookback before ``at``); distinct
label values are counted over the series the TSDB holds for ``[at - lookback, at]`` — the head keeps a
series that stopped (a deleted pod) until its next garbage collection (up to ~3 h), so for churning
metrics a label can show a few more values than the series counted at ``at``.

Grafana Mimir (``spec.flavor == "mimir"``; the tenant is the client's ``X-Scope-OrgID``)::

    1. /api/v1/cardinality/label_values?label_names[]=__name__&limit=500   series per metric (top 500)
       and the number of metrics; beyond 500 metrics, pages with name-prefix selectors
       ``{__name__=~"<prefix>[<range>].*"}``, split until each page has at most 500 names
    2. per metric: /api/v1/cardinality/label_names?selector={__name__="m"}&limit=500
       every label of the metric with its distinct value count

Both use the source's ``count_method`` (Mimir's ``pkg/ingester``: ``inmemory`` counts the postings of
the ingesters' TSDB head — every series in memory, including ones no longer written until head
compaction drops them; ``active`` filters the same postings through the active-series tracker — a
sample within ``-ingester.active-series-metrics-idle-timeout``). Mimir's API has no time parameter:
its counts are "now". The showback (:func:`mimir_label_series` of the owner label) and the series
left after a merge (``workflow.MimirSeriesCounter``) come from the same API, never from PromQL, whose
``count`` sees another set (a sample in the 5 m lookback): docs/cardinality.md, "Mimir".

A metric that vanishes between two calls is kept with what was learned about it (``complete=False``
and its name in ``SourceSnapshot.vanished``); one that appears after the count is left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from traceo_finops.cardinality.errors import CensusSettingError
from traceo_finops.config import mimir_tenant_problem
from traceo_finops.prometheus import (
    LOOKBACK_DELTA,
    PrometheusClient,
    QueryRunner,
    literal_regex,
    quote,
    re2_escape,
    sample_int,
    selector,
)

log = logging.getLogger(__name__)

Window = tuple[datetime, datetime]  # [at - lookback, at]: the range the label endpoints answer for

# Measured on Prometheus 2.42 (docs/benchmarks.md): a count over 250k series takes ~1.5 s, over 1M
# series ~15 s — superlinear (the whole selection is materialised), so counts are chunked.
MAX_SERIES_PER_QUERY = 250_000
METRIC_CHUNK_SIZE = 200  # names per count query (config: workflows.cardinality.metric_chunk_size)
MAX_REGEX_CHARS = 30_000  # keeps a GET URL well below Go's 1 MB header limit
WORKERS = 2  # concurrent requests; the dev box and most Prometheus pods have 2+ cores
MIMIR_LIMIT = 500  # Mimir's cap on `limit` of the cardinality endpoints
COUNT_METHODS = ("inmemory", "active")
_MAX_CODEPOINT = 0x10FFFF

# Every PromQL query of the audit starts with this comment, so the query log shows it for what it
# is and the usage analysis never counts our own census as a user of the metrics it counts.
CENSUS_MARK = "# traceo-finops census\n"


def is_census_query(query: str) -> bool:
    """True for a query the audit itself sent (see ``CENSUS_MARK``)."""
    return query.lstrip().startswith(CENSUS_MARK.strip())


TSDB_TOP_LISTS = ("seriesCountByMetricName", "labelValueCountByLabelName", "memoryInBytesByLabelName",
                  "seriesCountByLabelValuePair")


@dataclass(frozen=True)
class MetricSeries:
    """One metric of one source/tenant: its series, share of the counted total and labels."""

    source: str
    tenant: str
    metric: str
    series: int
    share: float = 0.0  # series / SourceSnapshot.series_total, 0..1
    labels: dict[str, int] = field(default_factory=dict)  # label -> distinct values (no __name__)
    complete: bool = True  # False: labels may be partial (it vanished meanwhile, or Mimir capped its list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class HeadStats:
    """``headStats`` of ``/api/v1/status/tsdb`` (times in unix milliseconds)."""

    num_series: int
    num_label_pairs: int
    chunk_count: int
    min_time_ms: int
    max_time_ms: int


@dataclass(frozen=True)
class SourceSnapshot:
    """What one source/tenant holds at ``at``: head series total and, per metric, series and labels.

    ``head_series`` is the server's own total (Prometheus head incl. not yet collected stale series;
    Mimir ``series_count_total``); ``series_total`` is the sum over ``metrics``, what ``share`` is of.
    JSON-friendly through :meth:`as_dict` / :meth:`from_dict` (Airflow XCom).
    """

    source: str
    tenant: str
    head_series: int
    metrics: list[MetricSeries]
    flavor: str = "prometheus"
    at: str = ""  # ISO-8601 UTC evaluation time
    method: str = ""  # how it was collected, e.g. "promql+label_values" or "mimir_cardinality(inmemory)"
    head: HeadStats | None = None
    top: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # the TSDB status top-10 lists
    vanished: list[str] = field(default_factory=list)
    queries: int = 0  # HTTP requests made
    seconds: float = 0.0  # wall time of the collection

    @property
    def series_total(self) -> int:
        return sum(m.series for m in self.metrics)

    def metric(self, name: str) -> MetricSeries | None:
        return next((m for m in self.metrics if m.metric == name), None)

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["metrics"] = [m.as_dict() for m in self.metrics]
        out["head"] = asdict(self.head) if self.head else None
        out["top"] = {k: [list(p) for p in v] for k, v in self.top.items()}
        out["vanished"] = list(self.vanished)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SourceSnapshot:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        kw["metrics"] = [MetricSeries(**m) for m in data.get("metrics", [])]
        kw["head"] = HeadStats(**data["head"]) if data.get("head") else None
        kw["top"] = {k: [(str(n), int(v)) for n, v in pairs] for k, pairs in (data.get("top") or {}).items()}
        return cls(**kw)


# ---- entry point --------------------------------------------------------------------------------


def collect_series_by_metric(client: PrometheusClient, source: str, at: datetime, tenant: str = "", *,
                             labels: bool = True, count_method: str = "inmemory",
                             lookback: timedelta = LOOKBACK_DELTA, max_series_per_query: int = MAX_SERIES_PER_QUERY,
                             metric_chunk_size: int = METRIC_CHUNK_SIZE, workers: int = WORKERS) -> SourceSnapshot:
    """Series per metric (and, with ``labels``, distinct values per label) of one source/tenant at ``at``.

    Dispatches on ``client.spec.flavor``: Prometheus plan or Mimir cardinality API (see the module
    docstring); ``count_method`` applies to Mimir only. Raises the client's ``PrometheusError``s; a
    401/403 (``PrometheusAuthError``) names the tenant; a server that takes no connection fails within
    seconds (``PrometheusUnreachable``).
    """
    if client.spec.flavor == "mimir":
        return collect_mimir(client, source, tenant, at=at, labels=labels, count_method=count_method,
                             workers=workers)
    return collect_prometheus(client, source, at, tenant, labels=labels, lookback=lookback,
                              max_series_per_query=max_series_per_query, metric_chunk_size=metric_chunk_size,
                              workers=workers)


# ---- Prometheus -----------------------------------------------------------------------------------


def collect_prometheus(client: PrometheusClient, source: str, at: datetime, tenant: str = "", *,
                       labels: bool = True, lookback: timedelta = LOOKBACK_DELTA,
                       max_series_per_query: int = MAX_SERIES_PER_QUERY, metric_chunk_size: int = METRIC_CHUNK_SIZE,
                       workers: int = WORKERS) -> SourceSnapshot:
    """The Prometheus plan of the module docstring, evaluated at ``at``."""
    started = time.monotonic()
    at = _utc(at)
    window: Window = (at - lookback, at)
    with QueryRunner(client.spec, concurrency=workers) as runner:
        status = runner.call(lambda c: c.tsdb_status())
        head = _head_stats(status.get("headStats") or {})
        top = {k: [(str(e["name"]), int(e["value"])) for e in status.get(k) or []] for k in TSDB_TOP_LISTS}
        names = runner.call(lambda c: c.label_values("__name__", None, *window))
        series = _count_series(runner, names, top["seriesCountByMetricName"], at, max_series_per_query,
                               metric_chunk_size)
        by_metric: dict[str, dict[str, int]] = {m: {} for m in series}
        vanished: set[str] = set()
        if labels and series:
            vanished = _label_counts(runner, series, window, by_metric, dict(top["labelValueCountByLabelName"]))
    snap = _snapshot(source, tenant, head.num_series if head else 0, series, by_metric, vanished,
                     flavor="prometheus", at=at, method="promql+label_values" if labels else "promql",
                     head=head, top=top, queries=runner.stats.queries, seconds=time.monotonic() - started)
    log.info("source %s%s: %d head series, %d counted in %d metrics (%d vanished) with %d requests in %.1f s",
             source, f" tenant {tenant}" if tenant else "", snap.head_series, snap.series_total, len(snap.metrics),
             len(snap.vanished), snap.queries, snap.seconds)
    return snap


def _count_series(runner: QueryRunner, names: Sequence[str], top: Sequence[tuple[str, int]], at: datetime,
                  max_series: int, max_names: int) -> dict[str, int]:
    """``count by (__name__)`` at ``at`` for ``names``, in chunks sized by what the TSDB status tells.

    A metric in the top-10 is bounded by its head count, any other by the smallest top-10 count (it
    would be in the list otherwise); unknown names (history only) are bounded the same way.
    """
    known = dict(top)
    floor = min(known.values()) if known else 1
    bound = {n: known.get(n, floor) for n in names}
    chunks = list(_chunks(sorted(names, key=lambda n: (-bound[n], n)), bound, max_series, max_names))

    def count(chunk: list[str]) -> dict[str, int]:
        return runner.split(lambda c, part: _count_chunk(c, part, at), chunk, _halves, lambda a, b: {**a, **b},
                            describe=lambda part: f"count of {len(part)} metrics")

    counts: dict[str, int] = {}
    for part in runner.map(count, chunks):
        counts.update(part)
    return counts


def _count_chunk(client: PrometheusClient, chunk: list[str], at: datetime) -> dict[str, int]:
    query = f"count by (__name__) ({{__name__=~{quote(literal_regex(chunk))}}})"
    wanted = set(chunk)
    out = {}
    for sample in client.query(CENSUS_MARK + query, time=at):
        name = sample.get("metric", {}).get("__name__")
        if name in wanted:  # only the names asked for (the regex is exact; this keeps it so)
            out[name] = sample_int(sample)
    return out


def _halves(chunk: list[str]) -> tuple[list[str], list[str]] | None:
    half = len(chunk) // 2
    return (chunk[:half], chunk[half:]) if half else None


def _chunks(names: Sequence[str], bound: Mapping[str, int], max_series: int, max_names: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    series = chars = 0
    for name in names:
        size = len(re2_escape(name)) + 1
        if chunk and (series + bound[name] > max_series or len(chunk) >= max_names or chars + size > MAX_REGEX_CHARS):
            yield chunk
            chunk, series, chars = [], 0, 0
        chunk.append(name)
        series += bound[name]
        chars += size
    if chunk:
        yield chunk


def _label_counts(runner: QueryRunner, series: Mapping[str, int], window: Window,
                  by_metric: dict[str, dict[str, int]], value_counts: Mapping[str, int]) -> set[str]:
    """Fill ``by_metric[m][label] = distinct values``; return the metrics that vanished meanwhile.

    ``value_counts`` (the TSDB status top-10 of values per label) spares fetching every value of a
    label known to have more values than metrics carrying it.
    """
    counted = set(series)
    label_names = [n for n in runner.call(lambda c: c.labels(None, *window)) if n != "__name__"]
    skipped = [n for n in label_names if not _classic_label(n)]
    if skipped:
        log.warning("labels %s are not classic label names and are not counted", skipped)
    label_names = [n for n in label_names if _classic_label(n)]

    def carriers(c: PrometheusClient, label: str) -> tuple[str, list[str]]:
        return label, [m for m in c.label_values("__name__", f'{{{label}!=""}}', *window) if m in counted]

    carried = {label: ms for label, ms in runner.call_each(carriers, label_names) if ms}
    # Each label: per value (one call per value) or per metric (one call per metric), whichever is fewer.
    jobs: list[tuple[str, str, str]] = []  # (mode, label, value-or-metric)
    for label, metrics in carried.items():
        if value_counts.get(label, 0) > len(metrics):
            jobs += [("metric", label, m) for m in metrics]
            continue
        values = runner.call(_values_of(label, None, window))
        if len(values) == 1:
            for m in metrics:
                by_metric[m][label] = 1
        elif len(values) <= len(metrics):
            jobs += [("value", label, v) for v in values]
        else:
            jobs += [("metric", label, m) for m in metrics]
    vanished: set[str] = set()

    def run(c: PrometheusClient, job: tuple[str, str, str]) -> tuple[tuple[str, str, str], list[str]]:
        mode, label, item = job
        if mode == "value":
            return job, c.label_values("__name__", selector(**{label: item}), *window)
        return job, c.label_values(label, selector(item), *window)

    for (mode, label, item), answer in runner.call_each(run, jobs):
        if mode == "value":
            for m in answer:
                if m in by_metric:
                    by_metric[m][label] = by_metric[m].get(label, 0) + 1
        elif answer:
            by_metric[item][label] = len(answer)
        else:  # it carried the label a moment ago
            vanished.add(item)
    # Metrics no label list mentioned: label-less, or new since the lists were read, or gone.
    for m in sorted(set(series) - {m for ms in carried.values() for m in ms}):
        names = runner.call(_labels_of(selector(m), window))
        if not names:
            vanished.add(m)
            continue
        for label in names:
            if label != "__name__" and _classic_label(label):
                values = runner.call(_values_of(label, selector(m), window))
                by_metric[m][label] = len(values)
    return vanished


def _values_of(label: str, match: str | None, window: Window) -> Callable[[PrometheusClient], list[str]]:
    """One label-values request, as a runner call (a closure binds the loop's current values)."""
    return lambda c: c.label_values(label, match, *window)


def _labels_of(match: str | None, window: Window) -> Callable[[PrometheusClient], list[str]]:
    return lambda c: c.labels(match, *window)


# ---- Mimir ------------------------------------------------------------------------------------------


def collect_mimir(client: PrometheusClient, source: str, tenant: str = "", *, at: datetime | None = None,
                  labels: bool = True, count_method: str = "inmemory", workers: int = WORKERS) -> SourceSnapshot:
    """Series per metric and labels of one Mimir tenant through the cardinality API (see module docstring).

    A tenant that is not a valid Mimir tenant ID is refused before any request (``ValueError`` naming
    it and the rule). A tenant without series yields an empty snapshot: telling a misspelled tenant
    from a quiet one is the caller's finding, not an error here.
    """
    check_mimir_call(client, count_method)
    started = time.monotonic()
    at = _utc(at or datetime.now(tz=UTC))
    with QueryRunner(client.spec, concurrency=workers) as runner:
        names = _mimir_label_series(runner, "__name__", count_method)
        series = names.by_value
        by_metric: dict[str, dict[str, int]] = {m: {} for m in series}
        vanished: set[str] = set()
        capped: set[str] = set()
        if labels and series:
            def label_names(c: PrometheusClient, metric: str) -> tuple[str, dict[str, Any]]:
                return metric, c.cardinality_label_names(selector=selector(metric), count_method=count_method,
                                                         limit=MIMIR_LIMIT)

            for metric, body in runner.call_each(label_names, sorted(series)):
                listed = body.get("cardinality") or []
                found = {e["label_name"]: int(e["label_values_count"]) for e in listed}
                found.pop("__name__", None)
                if not body.get("label_names_count"):
                    vanished.add(metric)
                elif int(body["label_names_count"]) > len(listed):  # more label names than `limit`
                    log.warning("metric %s has %s label names, Mimir listed %d", metric, body["label_names_count"],
                                len(listed))
                    capped.add(metric)
                by_metric[metric] = found
    snap = _snapshot(source, tenant, names.total, series, by_metric, vanished, flavor="mimir", at=at, partial=capped,
                     method=f"mimir_cardinality({count_method})", head=None, top={}, queries=runner.stats.queries,
                     seconds=time.monotonic() - started)
    log.info("source %s tenant %s: %d %s series in %d metrics (%d vanished) with %d requests in %.1f s", source,
             tenant or "(default)", snap.head_series, count_method, len(snap.metrics), len(snap.vanished),
             snap.queries, snap.seconds)
    return snap


def check_mimir_call(client: PrometheusClient, count_method: str) -> None:
    """Refuse, before any request, an unknown ``count_method`` or a tenant Mimir would reject.

    The tenant may come from the connection's ``tenant`` extra, which the configuration file never
    sees; a non-ASCII one would otherwise fail deep inside the HTTP library (headers are latin-1).
    """
    if count_method not in COUNT_METHODS:
        raise CensusSettingError(f"count_method must be one of {COUNT_METHODS}, got {count_method!r}")
    tenant = client.spec.tenant
    problem = mimir_tenant_problem(tenant) if tenant is not None else None
    if problem:
        raise CensusSettingError(f"source {client.spec.name!r}: {problem}")


@dataclass(frozen=True)
class LabelSeries:
    """Series per value of one label, from Mimir's ``label_values`` (one ``count_method``)."""

    label: str
    total: int  # series_count_total: the tenant's series (Mimir takes it from the ingesters' user stats)
    carrying: int  # series that carry the label: Mimir sums every value before applying `limit`
    by_value: dict[str, int]


def mimir_label_series(client: PrometheusClient, label: str, count_method: str = "inmemory",
                       workers: int = WORKERS) -> LabelSeries:
    """Series per value of ``label`` in one Mimir tenant, every value (paged past the 500 cap)."""
    check_mimir_call(client, count_method)
    with QueryRunner(client.spec, concurrency=workers) as runner:
        return _mimir_label_series(runner, label, count_method)


def mimir_series_count(client: PrometheusClient, count_method: str = "inmemory") -> int:
    """How many series one Mimir tenant holds by ``count_method``: one request, no value listed."""
    check_mimir_call(client, count_method)
    body = client.cardinality_label_values(["__name__"], count_method=count_method, limit=0)
    entry = next((e for e in body["labels"] if e.get("label_name") == "__name__"), None)
    return int(entry["series_count"]) if entry else 0


def _mimir_label_series(runner: QueryRunner, label: str, count_method: str) -> LabelSeries:
    """``label_values`` of ``label``: the root answer, then, beyond 500 values, pages of value-prefix
    selectors ``{label=~"<prefix>[<range>].*"}`` split until each page has at most 500 values."""
    counts: dict[str, int] = {}

    def page(regex: str | None) -> tuple[int, int, int, dict[str, int]]:
        sel = None if regex is None else f"{{{label}=~{quote(regex)}}}"
        body = runner.call(lambda c: c.cardinality_label_values([label], selector=sel, count_method=count_method,
                                                               limit=MIMIR_LIMIT))
        entry = next((e for e in body["labels"] if e.get("label_name") == label), None)
        if entry is None:  # no series carries the label (Mimir lists only labels with series)
            return int(body["series_count_total"]), 0, 0, {}
        found = {e["label_value"]: int(e["series_count"]) for e in entry.get("cardinality") or []}
        return (int(body["series_count_total"]), int(entry.get("series_count", sum(found.values()))),
                int(entry.get("label_values_count", len(found))), found)

    total, carrying, n_values, found = page(None)
    counts.update(found)
    if n_values > len(found):  # more values than one page holds: walk value prefixes
        stack: list[tuple[str, int, int, bool]] = [("", 0, _MAX_CODEPOINT, False)]
        while stack:
            prefix, lo, hi, exact = stack.pop()
            _, _, n, found = page(_prefix_regex(prefix, lo, hi, exact))
            if n <= len(found):
                counts.update(found)
            elif lo < hi:
                mid = 0x7F if lo <= 0x7F < hi else (lo + hi) // 2  # ASCII first: names and values mostly are
                stack += [(prefix, mid + 1, hi, False), (prefix, lo, mid, exact)]
            else:
                if exact:
                    _, _, _, one = page(re2_escape(prefix))
                    counts.update(one)
                stack.append((prefix + chr(lo), 0, _MAX_CODEPOINT, True))
        if len(counts) < n_values:
            log.warning("Mimir paging found %d of %d values of %s (values changed meanwhile?)", len(counts),
                        n_values, label)
    return LabelSeries(label, total, carrying, counts)


def _prefix_regex(prefix: str, lo: int, hi: int, exact: bool) -> str:
    """Names starting with ``prefix`` then a character in ``[lo-hi]`` (or ``prefix`` itself if ``exact``)."""
    cls = f"[{_cp(lo)}-{_cp(hi)}]" if lo != hi else f"[{_cp(lo)}]"
    tail = f"{cls}(?s:.*)"
    return re2_escape(prefix) + (f"(?:{tail})?" if exact else tail)


def _cp(codepoint: int) -> str:
    return f"\\x{{{codepoint:x}}}"


# ---- shared helpers --------------------------------------------------------------------------------


def _classic_label(name: str) -> bool:
    return bool(name) and (name[0].isalpha() or name[0] == "_") and all(
        ch.isascii() and (ch.isalnum() or ch == "_") for ch in name)


def _head_stats(raw: Mapping[str, Any]) -> HeadStats | None:
    if not raw:
        return None
    return HeadStats(int(raw.get("numSeries", 0)), int(raw.get("numLabelPairs", 0)), int(raw.get("chunkCount", 0)),
                     int(raw.get("minTime", 0)), int(raw.get("maxTime", 0)))


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _snapshot(source: str, tenant: str, head_series: int, series: Mapping[str, int],
              by_metric: Mapping[str, dict[str, int]], vanished: set[str], *, flavor: str, at: datetime,
              method: str, head: HeadStats | None, top: dict[str, list[tuple[str, int]]], queries: int,
              seconds: float, partial: set[str] | None = None) -> SourceSnapshot:
    total = sum(series.values())
    incomplete = vanished | (partial or set())
    metrics = [MetricSeries(source, tenant, name, n, n / total if total else 0.0, dict(sorted(by_metric[name].items())),
                            name not in incomplete)
               for name, n in series.items() if n > 0]
    metrics.sort(key=lambda m: (-m.series, m.metric))
    return SourceSnapshot(source, tenant, int(head_series), metrics, flavor=flavor, at=at.isoformat(),
                          method=method, head=head, top=top, vanished=sorted(vanished & set(series)),
                          queries=queries, seconds=round(seconds, 3))
