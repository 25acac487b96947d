"""Storage stats: the disk formula and flags (unit), the devstack's Prometheus 2.42 (its real TSDB metrics and
flags), and a real Prometheus that does not scrape itself (a clear row status, no crash)."""

from __future__ import annotations

import re
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.prometheus import local_prometheus, prometheus_client
from traceo_finops.cost_report.collect import prometheus_facts
from traceo_finops.cost_report.dataset import STORAGE
from traceo_finops.cost_report.storage import (
    ASSUMED_BYTES_PER_SAMPLE,
    DISK_GB,
    KIND_PROMETHEUS,
    STATUS_NO_TSDB,
    STATUS_OK,
    STATUS_PARTIAL,
    TsdbFacts,
    parse_size,
    retention_from_flags,
    storage_row,
)
from traceo_finops.pricing import load_price_table
from traceo_finops.quality import check

NOW = datetime(2026, 12, 6, tzinfo=UTC)
DAY = 86400.0


@pytest.mark.unit
@pytest.mark.parametrize(("flags", "expected"), [
    ({"storage.tsdb.retention.time": "30d", "storage.tsdb.retention.size": "0B"}, (30 * DAY, None)),
    ({"storage.tsdb.retention.time": "0s", "storage.tsdb.retention.size": "0B"}, (15 * DAY, None)),  # default
    ({"storage.tsdb.retention.time": "0s", "storage.tsdb.retention.size": "512MB"}, (None, 512 * 2**20)),
    ({"storage.tsdb.retention.time": "0s", "storage.tsdb.retention": "7d"}, (7 * DAY, None)),  # deprecated flag
])
def test_retention_from_flags(flags: dict[str, str], expected: tuple[float | None, float | None]) -> None:
    assert retention_from_flags(flags) == expected


@pytest.mark.unit
def test_sizes_are_base_two_and_garbage_is_refused() -> None:
    assert parse_size("1GB") == parse_size("1GiB") == 2**30 and parse_size("0B") == 0 and parse_size("3TB") == 3 * 2**40
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


@pytest.mark.unit
def test_disk_need_uses_measured_bytes_per_sample_and_the_size_cap() -> None:
    facts = TsdbFacts(instances=1, blocks_bytes=5e9, wal_bytes=2e8, head_chunks_bytes=1e8, chunk_bytes_sum=1.5e6,
                      chunk_samples_sum=1e6, samples_per_second=1000.0, retention_time_seconds=30 * DAY)
    row = storage_row("p", "", KIND_PROMETHEUS, facts, 0.08, NOW - timedelta(days=7), NOW)
    need = 30 * DAY * 1000.0 * 1.5 + 2e8 + 1e8
    assert row["status"] == STATUS_OK and row["bytes_per_sample"] == pytest.approx(1.5)
    assert row["disk_needed_bytes"] == round(need) and row["local_bytes"] == round(5e9 + 2e8 + 1e8)
    assert row["monthly_cost_usd"] == pytest.approx(need / DISK_GB * 0.08, rel=1e-9)
    capped = storage_row("p", "", KIND_PROMETHEUS, TsdbFacts(**{**vars(facts), "retention_size_bytes": 1e9}),
                         0.08, NOW - timedelta(days=7), NOW)
    assert capped["disk_needed_bytes"] == 10**9


@pytest.mark.unit
def test_missing_metrics_are_a_status_not_a_crash() -> None:
    none = storage_row("p", "", KIND_PROMETHEUS, TsdbFacts(retention_time_seconds=DAY), 0.08, NOW - timedelta(1), NOW)
    assert none["status"] == STATUS_NO_TSDB and none["monthly_cost_usd"] == 0 and "scrape the server" in none["notes"]
    partial = storage_row("q", "", KIND_PROMETHEUS, TsdbFacts(blocks_bytes=1e6, samples_per_second=10.0,
                                                              retention_time_seconds=DAY), 0.08,
                          NOW - timedelta(1), NOW)
    assert partial["status"] == STATUS_PARTIAL and "prometheus_tsdb_wal_storage_size_bytes" in partial["notes"]
    assert partial["bytes_per_sample"] == ASSUMED_BYTES_PER_SAMPLE and "assumed" in partial["bytes_per_sample_source"]
    table = STORAGE.table([none, partial])
    assert check("storage", table, STORAGE.expectations, raise_on_failure=False).success


def _own_metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    (value,) = re.findall(rf"^{name} (\S+)$", text, re.M)
    return float(value)


@pytest.mark.integration
def test_the_devstack_prometheus_242(devstack: dict[str, str]) -> None:
    url = devstack["DEVSTACK_PROM_URL"]
    at = datetime.now(UTC).replace(microsecond=0)
    with prometheus_client(url) as client:
        facts = prometheus_facts(client, at, timedelta(days=7))
    # The same figures as the server's own /metrics page (blocks change only when it compacts).
    assert facts.blocks_bytes == pytest.approx(_own_metric(url, "prometheus_tsdb_storage_blocks_bytes"), rel=0.05)
    assert facts.active_series == pytest.approx(_own_metric(url, "prometheus_tsdb_head_series"), rel=0.05)
    assert facts.retention_time_seconds == 30 * DAY  # the devstack's --storage.tsdb.retention.time
    # 2.42 does not export the WAL and head-chunk sizes.
    assert facts.wal_bytes is None and facts.head_chunks_bytes is None
    assert facts.samples_per_second and facts.samples_per_second > 0
    price = load_price_table().value("compute.disk_gb_month")
    row = storage_row("devstack", "", KIND_PROMETHEUS, facts, price, at - timedelta(days=7), at)
    assert row["status"] == STATUS_PARTIAL
    assert row["monthly_cost_usd"] == pytest.approx(row["disk_needed_bytes"] / DISK_GB * price, rel=1e-6)
    assert check("storage", STORAGE.table([row]), STORAGE.expectations, raise_on_failure=False).success


@pytest.mark.integration
def test_a_prometheus_that_does_not_scrape_itself(tmp_path: Path) -> None:
    with local_prometheus(tmp_path, {"global": {"scrape_interval": "15s"}, "scrape_configs": []},
                          "--storage.tsdb.retention.size=512MB") as url, prometheus_client(url) as client:
        facts = prometheus_facts(client, datetime.now(UTC), timedelta(days=7))
    row = storage_row("bare", "", KIND_PROMETHEUS, facts, 0.08, NOW - timedelta(days=7), NOW)
    assert row["status"] == STATUS_NO_TSDB and row["monthly_cost_usd"] == 0
    assert row["retention_size_bytes"] == 512 * 2**20  # the flags still answered


@pytest.mark.integration
def test_a_prometheus_younger_than_one_subquery_step_still_has_an_ingestion_rate(tmp_path: Path) -> None:
    """Seconds after it started there is no 5-minute point to average yet: the last 5 minutes' rate is used."""
    import time

    from tests.support.net import free_port

    port = free_port()
    config = {"global": {"scrape_interval": "1s"},
              "scrape_configs": [{"job_name": "self", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]}
    with local_prometheus(tmp_path, config, port=port) as url, prometheus_client(url) as client:
        deadline = time.monotonic() + 30
        while not client.query("count_over_time(prometheus_tsdb_head_samples_appended_total[1m]) >= 3"):
            assert time.monotonic() < deadline, "the private Prometheus did not scrape itself"
            time.sleep(0.5)
        at = datetime.now(UTC)
        facts = prometheus_facts(client, at, timedelta(days=7))
    # (Unless it started within seconds of a 5-minute boundary, there is no averaged point yet: before the
    # fallback this was None, and the storage row said "no ingestion rate".)
    assert facts.samples_per_second and facts.samples_per_second > 0
