"""Collect active-series counts per metric from a Prometheus source."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime

from traceo_finops.prometheus import PrometheusClient

log = logging.getLogger(__name__)

# One query that counts every head series by metric name; the server does the work and
# answers one small sample per metric (never list /api/v1/series for everything).
SERIES_BY_METRIC = 'count by (__name__) ({__name__=~".+"})'


@dataclass(frozen=True)
class MetricSeries:
    source: str
    tenant: str
    metric: str
    series: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class SourceSnapshot:
    """What one source/tenant holds now: head series total and series per metric."""

    source: str
    tenant: str
    head_series: int
    metrics: list[MetricSeries]

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "tenant": self.tenant, "head_series": self.head_series,
                "metrics": [m.as_dict() for m in self.metrics]}


def collect_series_by_metric(client: PrometheusClient, source: str, at: datetime,
                             tenant: str = "") -> SourceSnapshot:
    """Series per metric name at ``at`` (PromQL count) and the head total (``/api/v1/status/tsdb``).

    The head total is the server's current state (the TSDB status has no time parameter); the
    per-metric counts are evaluated at ``at``, the end of the run's window.
    """
    head = client.tsdb_status()["headStats"]["numSeries"]
    result = client.query(SERIES_BY_METRIC, time=at)
    metrics = []
    for sample in result:
        name = sample.get("metric", {}).get("__name__")
        if not name:
            continue
        metrics.append(MetricSeries(source, tenant, name, int(float(sample["value"][1]))))
    metrics.sort(key=lambda m: (-m.series, m.metric))
    log.info("source %s%s: %d head series in %d metrics", source, f" tenant {tenant}" if tenant else "",
             head, len(metrics))
    return SourceSnapshot(source, tenant, int(head), metrics)
