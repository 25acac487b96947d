"""What the recording-rule workflow reads: query logs (local files or S3 objects), the server's recording rules,
and query answers with their evaluation time. No decisions here (see ``recommend`` and ``prove``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from statistics import median
from time import perf_counter
from typing import Any

import requests

from traceo_finops.prometheus import PrometheusClient, PrometheusError
from traceo_finops.prometheus.errors import PrometheusBadResponse, PrometheusHTTPError
from traceo_finops.prometheus.runner import QueryRunner
from traceo_finops.prometheus.spec import Flavor, SourceSpec
from traceo_finops.recording_rules.normalize import Normalizer
from traceo_finops.recording_rules.recommend import (
    ExistingRule,
    TextStats,
    existing_rules,
    ruler_recording_rules,
    rules_api_recording_rules,
)
from traceo_finops.shapes import Json, S3Client
from traceo_finops.usage.querylog import (
    Origin,
    QueryExecution,
    QueryLogSummary,
    is_s3,
    iter_mimir_query_stats,
    iter_prometheus_query_log,
    log_sources,
    read_logs,
)

log = logging.getLogger(__name__)

# One point of a range answer: (timestamp, value text) as Prometheus writes it.
Matrix = list[dict[str, Json]]


@dataclass
class LogReading:
    """The window's logged queries: per distinct API query text, its executions; everything else counted."""

    summary: QueryLogSummary
    stats: dict[str, TextStats] = field(default_factory=dict)
    api_executions: int = 0
    rule_evaluations: int = 0  # rule-group evaluations in the log: never counted as user queries


def read_query_logs(pattern: str, flavor: Flavor, start: datetime, end: datetime, *, root: Path,
                    s3: Callable[[], S3Client] | None = None, tenant: str | None = None) -> LogReading:
    """Stream every file/object ``pattern`` stands for (a Prometheus query log, or Mimir query-frontend logfmt
    for a Mimir ``flavor``) and keep the executions of ``[start, end)``."""
    summary = QueryLogSummary(pattern)
    reading = LogReading(summary)
    client = s3() if is_s3(pattern) and s3 is not None else None
    try:
        uris = log_sources(pattern, root, client)
    except Exception as exc:  # listing an S3 prefix: botocore errors, connection errors
        summary.unreadable(pattern, f"cannot list the log location: {exc}")
        return reading
    if not uris:
        summary.unreadable(pattern, "no log file matches")
        return reading

    def read(lines: Iterable[bytes], s: QueryLogSummary) -> Iterator[QueryExecution]:
        if flavor is Flavor.MIMIR:
            return iter_mimir_query_stats(lines, start, end, s, tenant=tenant or None)
        return iter_prometheus_query_log(lines, start, end, s)

    stats = reading.stats
    for ex in read_logs(uris, summary, read, client):
        if ex.origin is Origin.RULE:
            reading.rule_evaluations += 1
            continue
        reading.api_executions += 1
        s = stats.get(ex.query)
        if s is None:
            s = stats[ex.query] = TextStats()
        s.add(ex.range_seconds, ex.step_seconds, ex.eval_seconds, ex.samples)
    summary.file = pattern
    log.info("query logs %s: %d files, %d lines, %d API queries (%d distinct), %d rule evaluations, %d bad lines",
             pattern, len(summary.files), summary.lines, reading.api_executions, len(stats),
             reading.rule_evaluations, summary.bad_lines)
    return reading


def server_rules(client: PrometheusClient, normalizer: Normalizer) -> list[ExistingRule]:
    """The recording rules the server evaluates: Prometheus' rules API, or the Mimir ruler of the tenant."""
    if client.spec.flavor is Flavor.MIMIR:
        namespaces = client.mimir_ruler_rules()
        return existing_rules(ruler_recording_rules(namespaces), normalizer)
    return existing_rules(rules_api_recording_rules(client.rules("record")), normalizer)


# -- range answers, split in time when the server refuses a long one ------------------------------------------
def range_query(runner: QueryRunner, promql: str, start: int, end: int, step: int) -> Matrix:
    """``promql`` over ``[start, end]`` every ``step`` seconds (bounds on the step grid); a range the server times
    out on or refuses as too large is asked in halves."""

    def ask(c: PrometheusClient, piece: tuple[int, int]) -> Matrix:
        return c.query_range(promql, float(piece[0]), float(piece[1]), step)

    def halves(piece: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]] | None:
        lo, hi = piece
        points = (hi - lo) // step
        if points < 2:
            return None
        mid = lo + (points // 2) * step
        return (lo, mid), (mid + step, hi)

    def join(a: Matrix, b: Matrix) -> Matrix:
        by_labels: dict[tuple[tuple[str, str], ...], dict[str, Json]] = {}
        for s in [*a, *b]:
            key = tuple(sorted(s["metric"].items()))
            if key in by_labels:
                by_labels[key]["values"] = [*by_labels[key]["values"], *s["values"]]
            else:
                by_labels[key] = {"metric": s["metric"], "values": list(s["values"])}
        return list(by_labels.values())

    return runner.split(ask, (start, end), halves, join, lambda p: f"{p[0]}..{p[1]}")


# -- evaluation time ------------------------------------------------------------------------------------------
class StatsClient:
    """Queries with ``stats=all``: the answer and the server's own evaluation time (``evalTotalTime``).

    The shared client hands back ``data.result`` only; the timing lives beside it in ``data.stats``. The
    session carries the source's headers, tenant, basic auth and TLS settings like the shared client's.
    """

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self._session = requests.Session()
        self._session.verify = spec.verify
        self._session.headers.update(spec.headers)
        if spec.tenant:
            self._session.headers["X-Scope-OrgID"] = spec.tenant
        password = spec.password.get_secret_value() if spec.password else ""
        if spec.login or password:
            self._session.auth = (spec.login or "", password)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> StatsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def eval_seconds(self, promql: str, *, time: int | None = None, start: int | None = None,
                     end: int | None = None, step: int | None = None, wall: bool = False) -> float:
        """The server's evaluation time of one run (instant at ``time``, or a range); with ``wall`` (a server that
        does not answer ``stats``), the request's wall time. Raises :class:`NoStats` when ``stats`` is missing."""
        if time is not None:
            path, params = "/api/v1/query", {"query": promql, "time": time, "stats": "all"}
        else:
            path, params = "/api/v1/query_range", {"query": promql, "start": start, "end": end, "step": step,
                                                   "stats": "all"}
        url = self.spec.api_url + path
        began = perf_counter()
        try:
            resp = self._session.post(url, data=params, timeout=self.spec.timeout)
        except requests.RequestException as exc:
            raise PrometheusError(f"source {self.spec.name!r}: {path} failed: {exc}", source=self.spec.name,
                                  url=url) from exc
        if not resp.ok:
            raise PrometheusHTTPError(f"source {self.spec.name!r}: {path} answered HTTP {resp.status_code}: "
                                      f"{resp.text[:200]}", source=self.spec.name, url=url, status=resp.status_code)
        if wall:
            return perf_counter() - began
        try:
            seconds = resp.json()["data"]["stats"]["timings"]["evalTotalTime"]
        except (ValueError, KeyError, TypeError):
            raise NoStats(f"source {self.spec.name!r}: {path} answered without data.stats.timings "
                          f"(stats=all unsupported)", source=self.spec.name, url=url) from None
        return float(seconds)


class NoStats(PrometheusBadResponse):
    """The server does not answer ``stats=all`` (evaluation timings): only wall time can be measured."""


def paired_medians(first: Callable[[], float], second: Callable[[], float], runs: int) -> tuple[float, float]:
    """The medians of ``runs`` runs of each, taken in turns (first, second, first, …) after one warming run of
    each: on a shared machine both see the same load, so their ratio does not move with it as much as when one's
    runs all come before the other's."""
    first()
    second()
    a: list[float] = []
    b: list[float] = []
    for _ in range(runs):
        a.append(first())
        b.append(second())
    return float(median(a)), float(median(b))


def series_count(runner: QueryRunner, expr: str, at: int, mark: str = "") -> int:
    """How many series ``expr`` yields at ``at`` (what a rule recording it adds); ``mark`` prefixes the query."""
    result: list[dict[str, Any]] = runner.call(lambda c: c.query(f"{mark}count({expr})", time=float(at)))
    return int(float(result[0]["value"][1])) if result else 0
