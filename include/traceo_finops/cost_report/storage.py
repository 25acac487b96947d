"""Storage stats of a Prometheus source or a Mimir tenant, and the disk each needs at its retention (pure).

The disk a Prometheus needs is the Prometheus documentation's own formula
(https://prometheus.io/docs/prometheus/latest/storage/#operational-aspects):
``retention_time_seconds * ingested_samples_per_second * bytes_per_sample``, capped by the size
retention when one is set, plus what the WAL and the head chunks hold. Bytes per sample come from
the compaction metrics (chunk bytes / chunk samples written so far); a server that has not compacted
yet uses the documentation's upper figure ("around 1-2 bytes per sample"), and its row says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from traceo_finops.prometheus import parse_duration

# "On average, Prometheus uses only around 1-2 bytes per sample" (the page above): the upper end, so an
# estimate never under-sizes a disk.
ASSUMED_BYTES_PER_SAMPLE = 2.0
ASSUMED_SOURCE = "assumed 2 B/sample (prometheus.io storage docs: 1-2 B/sample); no compaction yet"
# Prometheus' default retention when neither storage.tsdb.retention.time nor .size is set.
DEFAULT_RETENTION = timedelta(days=15)
# EBS volumes are sized and billed in GiB (the console's "GiB"; the price page's "GB-month").
DISK_GB = 2**30

KIND_PROMETHEUS = "prometheus"
KIND_MIMIR_TENANT = "mimir_tenant"
STATUS_OK = "ok"
STATUS_PARTIAL = "partial"  # some TSDB metrics are missing (older Prometheus): the row says which
STATUS_NO_TSDB = "no_tsdb_metrics"  # the source has none of Prometheus' TSDB self-metrics
STATUS_NO_MIMIR = "no_mimir_metrics"  # Mimir's own metrics of this tenant are not scraped
STATUSES = (STATUS_OK, STATUS_PARTIAL, STATUS_NO_TSDB, STATUS_NO_MIMIR)

# Prometheus' size flag uses base-2 units (units.Base2Bytes): 512MB = 512 MiB; the flags API answers "512MiB".
_SIZE_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTPE]?)(?:I?B)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class TsdbFacts:
    """What was measured for one source/tenant; None = the server did not say."""

    instances: int = 0
    blocks_bytes: float | None = None
    wal_bytes: float | None = None
    head_chunks_bytes: float | None = None
    chunk_bytes_sum: float | None = None
    chunk_samples_sum: float | None = None
    samples_per_second: float | None = None
    active_series: float | None = None
    retention_time_seconds: float | None = None
    retention_size_bytes: float | None = None
    object_bytes: float | None = None  # Mimir tenant: stored block bytes (the s3_tiering report)
    object_files: int | None = None


def parse_size(text: str) -> float:
    """``512MB`` or ``512MiB`` → bytes (base 2, as Prometheus reads the flag); ``0B`` → 0."""
    match = _SIZE.match(text or "")
    if not match:
        raise ValueError(f"{text!r} is not a size such as 512MB or 1TB")
    return float(match.group(1)) * float(1024 ** _SIZE_POWERS[match.group(2).upper()])


def retention_from_flags(flags: dict[str, str]) -> tuple[float | None, float | None]:
    """(retention seconds, retention bytes) from /api/v1/status/flags; None = no limit of that kind."""
    size_text = flags.get("storage.tsdb.retention.size", "0B") or "0B"
    size = parse_size(size_text) or None
    time_text = flags.get("storage.tsdb.retention.time") or "0s"
    if time_text in ("0s", "0"):
        old = flags.get("storage.tsdb.retention") or "0s"  # deprecated flag, still honoured
        time_text = old if old not in ("0s", "0") else time_text
    seconds = parse_duration(time_text).total_seconds() if time_text not in ("0s", "0") else 0.0
    if not seconds:
        # Prometheus keeps 15 days when no retention is set at all; a size limit alone means no time limit.
        return (None if size else DEFAULT_RETENTION.total_seconds()), size
    return seconds, size


def bytes_per_sample(facts: TsdbFacts) -> tuple[float, str]:
    """Measured bytes per sample from the compaction metrics, else the documented assumption."""
    if facts.chunk_samples_sum and facts.chunk_bytes_sum:
        return facts.chunk_bytes_sum / facts.chunk_samples_sum, "compaction metrics (chunk bytes / chunk samples)"
    return ASSUMED_BYTES_PER_SAMPLE, ASSUMED_SOURCE


def disk_needed(facts: TsdbFacts) -> tuple[float | None, float, str]:
    """(bytes the source needs at its retention or None, bytes per sample, where that figure came from)."""
    bps, bps_source = bytes_per_sample(facts)
    overhead = (facts.wal_bytes or 0.0) + (facts.head_chunks_bytes or 0.0)
    if facts.samples_per_second is None:
        return None, bps, bps_source
    if facts.retention_time_seconds is None and facts.retention_size_bytes is None:
        return None, bps, bps_source
    blocks = (facts.retention_time_seconds * facts.samples_per_second * bps
              if facts.retention_time_seconds is not None else float("inf"))
    need = blocks + overhead
    if facts.retention_size_bytes:
        need = min(need, facts.retention_size_bytes)  # size retention counts blocks, WAL and chunks
    return need, bps, bps_source


_MISSING_NAMES = {"blocks_bytes": "prometheus_tsdb_storage_blocks_bytes",
                  "wal_bytes": "prometheus_tsdb_wal_storage_size_bytes",
                  "head_chunks_bytes": "prometheus_tsdb_head_chunks_storage_size_bytes",
                  "samples_per_second": "prometheus_tsdb_head_samples_appended_total"}


def storage_row(source: str, tenant: str, kind: str, facts: TsdbFacts, disk_gb_month: float,
                window_start: datetime, window_end: datetime) -> dict[str, Any]:
    """One ``storage`` row: what is stored, what the retention needs, and its monthly disk cost."""
    notes: list[str] = []
    need: float | None = None
    bps: float | None = None
    bps_source = ""
    if kind == KIND_PROMETHEUS:
        missing = [m for f, m in _MISSING_NAMES.items() if getattr(facts, f) is None]
        if len(missing) == len(_MISSING_NAMES):
            status = STATUS_NO_TSDB
            notes.append("none of Prometheus' TSDB self-metrics answered: scrape the server itself "
                         "(a job for its own /metrics) to get its storage stats")
        else:
            status = STATUS_PARTIAL if missing else STATUS_OK
            if missing:
                notes.append("not exported by this Prometheus: " + ", ".join(missing))
            need, bps, bps_source = disk_needed(facts)
            if need is None:
                notes.append("disk need unknown (no ingestion rate or retention)")
    else:
        status = STATUS_OK if facts.samples_per_second is not None or facts.active_series is not None \
            else STATUS_NO_MIMIR
        if status == STATUS_NO_MIMIR:
            notes.append("Mimir's own metrics of this tenant (cortex_ingester_active_series, "
                         "cortex_distributor_received_samples_total) are not scraped")
        if facts.object_bytes is None:
            notes.append("no s3_tiering report of this tenant's blocks")
    local = [v for v in (facts.blocks_bytes, facts.wal_bytes, facts.head_chunks_bytes) if v is not None]
    cost = (need / DISK_GB * disk_gb_month) if need is not None else 0.0
    return {
        "source": source, "tenant": tenant, "kind": kind, "status": status, "notes": "; ".join(notes),
        "instances": int(facts.instances),
        "blocks_bytes": _int(facts.blocks_bytes), "wal_bytes": _int(facts.wal_bytes),
        "head_chunks_bytes": _int(facts.head_chunks_bytes),
        "local_bytes": _int(sum(local)) if local else None,
        "object_bytes": _int(facts.object_bytes), "object_files": facts.object_files,
        "bytes_per_sample": bps, "bytes_per_sample_source": bps_source,
        "retention_time_seconds": facts.retention_time_seconds,
        "retention_size_bytes": _int(facts.retention_size_bytes),
        "samples_per_second": facts.samples_per_second, "active_series": _int(facts.active_series),
        "disk_needed_bytes": _int(need), "disk_gb_month_usd": disk_gb_month, "monthly_cost_usd": cost,
        "window_start": window_start, "window_end": window_end,
    }


def _int(value: float | None) -> int | None:
    return None if value is None else round(value)
