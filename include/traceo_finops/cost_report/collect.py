"""Storage facts from a Prometheus source's own TSDB metrics and flags, or from Mimir's metrics of a tenant.

Names checked against Prometheus 2.42's /metrics (the devstack's): ``prometheus_tsdb_storage_blocks_bytes``,
``prometheus_tsdb_compaction_chunk_{size_bytes,samples}_sum``, ``prometheus_tsdb_head_samples_appended_total``
and ``prometheus_tsdb_head_series`` are there; ``prometheus_tsdb_wal_storage_size_bytes`` and
``prometheus_tsdb_head_chunks_storage_size_bytes`` are not (later releases export them), so a 2.42 row
is ``partial`` and says so.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from traceo_finops.cost_report.storage import TsdbFacts, retention_from_flags
from traceo_finops.prometheus import PrometheusClient, PrometheusError, quote, sample_value

# One gauge or ratio each, summed over the Prometheus instances the source scrapes.
_PROMETHEUS = {
    "blocks_bytes": "sum(prometheus_tsdb_storage_blocks_bytes)",
    "wal_bytes": "sum(prometheus_tsdb_wal_storage_size_bytes)",
    "head_chunks_bytes": "sum(prometheus_tsdb_head_chunks_storage_size_bytes)",
    "chunk_bytes_sum": "sum(prometheus_tsdb_compaction_chunk_size_bytes_sum)",
    "chunk_samples_sum": "sum(prometheus_tsdb_compaction_chunk_samples_sum)",
    # The 5-minute rate, averaged over the window's points (see _ingestion): a rate over the whole window would
    # be divided by the whole window even where the server has only hours of its own metrics.
    "samples_per_second": "sum(rate(prometheus_tsdb_head_samples_appended_total[5m]))",
    "active_series": "sum(prometheus_tsdb_head_series)",
}
_MIMIR = {
    "samples_per_second": "sum(rate(cortex_distributor_received_samples_total{{user={tenant}}}[5m]))",
    "active_series": "sum(cortex_ingester_active_series{{user={tenant}}})",
}


def _range(window: timedelta) -> str:
    # The rate is averaged over the whole window; at least 5 minutes so a short manual window still has points.
    return f"{max(int(window.total_seconds()), 300)}s"


def _scalar(client: PrometheusClient, promql: str, at: datetime) -> float | None:
    answer = client.query(promql, time=at)
    return sample_value(answer[0]) if answer else None


def _ingestion(client: PrometheusClient, rate: str, window: timedelta, at: datetime) -> float | None:
    """The 5-minute ingestion ``rate`` averaged over the window's 5-minute points; for a server younger than
    one point, the rate of its last 5 minutes."""
    value = _scalar(client, f"avg_over_time({rate}[{_range(window)}:5m])", at)
    return value if value is not None else _scalar(client, rate, at)


def prometheus_facts(client: PrometheusClient, at: datetime, window: timedelta) -> TsdbFacts:
    """The TSDB self-metrics of the Prometheus behind ``client`` at ``at``, and its retention flags."""
    values = {k: _ingestion(client, q, window, at) if k == "samples_per_second" else _scalar(client, q, at)
              for k, q in _PROMETHEUS.items()}
    count = client.query("count(prometheus_tsdb_head_series)", time=at)
    try:
        retention_s, retention_b = retention_from_flags(client.flags())
    except (PrometheusError, ValueError):
        retention_s, retention_b = None, None  # no flags endpoint, or a value we cannot read: disk need unknown
    return TsdbFacts(instances=int(sample_value(count[0]) or 0) if count else 0, retention_time_seconds=retention_s,
                     retention_size_bytes=retention_b, blocks_bytes=values["blocks_bytes"],
                     wal_bytes=values["wal_bytes"], head_chunks_bytes=values["head_chunks_bytes"],
                     chunk_bytes_sum=values["chunk_bytes_sum"], chunk_samples_sum=values["chunk_samples_sum"],
                     samples_per_second=values["samples_per_second"], active_series=values["active_series"])


def mimir_tenant_facts(client: PrometheusClient, tenant: str, at: datetime, window: timedelta) -> TsdbFacts:
    """Ingestion rate and active series of ``tenant`` from Mimir's own metrics, when they are scraped."""
    queries = {k: q.format(tenant=quote(tenant)) for k, q in _MIMIR.items()}
    values = {k: _ingestion(client, q, window, at) if k == "samples_per_second" else _scalar(client, q, at)
              for k, q in queries.items()}
    return TsdbFacts(samples_per_second=values["samples_per_second"], active_series=values["active_series"])
