"""Config audit against real Prometheus 2.42 servers: the devstack (a clean config: no findings) and a
throwaway one started with every problem the audit knows (WAL compression off, 30d retention while
remote-writing to a Mimir push URL, 10 s global and 1 s job intervals, an HA replica label)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from tests.support.net import free_port
from tests.support.prometheus import local_prometheus, prometheus_client
from tests.support.servers import Answer, LocalServer, Request
from traceo_finops.cardinality.config_audit import (
    CHECK_HA,
    CHECK_RETENTION,
    CHECK_SCRAPE,
    CHECK_WAL,
    CONFIG_FINDINGS,
    AuditPrices,
    audit_config,
    audit_config_rows,
    audit_source,
    server_facts,
)
from traceo_finops.pricing import HOURS_PER_MONTH, load_price_table
from traceo_finops.quality import check

pytestmark = pytest.mark.integration

FAST_SERIES = 50


def test_devstack_config_is_clean(devstack: dict[str, str], prom_truth: dict[str, Any]) -> None:
    prices = AuditPrices.from_table(load_price_table(), disk_gb_month=0.08)
    at = datetime.now(tz=UTC)
    with prometheus_client(devstack["DEVSTACK_PROM_URL"], retries=1) as client:
        assert audit_source(client, "devstack", at, prices) == []
        facts = server_facts(client, at)
        flags, config = client.flags(), client.config_yaml()
        rules = [r["query"] for g in client.rules() for r in g["rules"]]
    # Samples per scrape of the `apps` job are the exporter's series, exactly.
    assert facts.series_by_job["apps"] == prom_truth["cardinality"]["exporter_series_total"]
    assert set(facts.series_by_job) == {"prometheus", *prom_truth["head"]["exporter_jobs"]}
    assert facts.head_series is not None and facts.head_series >= sum(facts.series_by_job.values())
    # The same real config, remote-writing to Mimir: its 30d retention (devstack flag) becomes a finding.
    loaded = yaml.safe_load(config)
    loaded["remote_write"] = [{"url": "http://mimir:8080/api/v1/push"}]
    findings = audit_config("devstack", "", flags, yaml.safe_dump(loaded), prices, facts, rule_queries=rules)
    assert [(f.check_id, f.severity) for f in findings] == [(CHECK_RETENTION, "medium")]
    assert findings[0].evidence.startswith("storage.tsdb.retention.time=30d")
    assert "retention.time=2d" in findings[0].recommendation  # the devstack's rules read at most minutes back
    rate = sum(n / 15 for n in facts.series_by_job.values())  # every devstack job scrapes every 15 s
    assert findings[0].monthly_saving_usd == pytest.approx(28 * rate * 86_400 * 1.5 / 1e9 * 0.08, abs=1e-4)


@pytest.fixture(scope="module")
def misconfigured(tmp_path_factory: pytest.TempPathFactory) -> Any:
    body = "".join(f'fast_metric_total{{shard="{i}"}} {i}\n' for i in range(FAST_SERIES)).encode()

    def exposition(request: Request) -> Answer:
        payload = b"" if request.path == "/empty" else body  # the 15 s job scrapes nothing
        return Answer(200, payload, "text/plain; version=0.0.4")

    tmp = tmp_path_factory.mktemp("bad-prom")
    nowhere = free_port()
    (tmp / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "slo", "rules": [
        {"record": "job:fast_metric:rate3d", "expr": "sum by (job) (rate(fast_metric_total[3d]))"}]}]}))
    with LocalServer(exposition) as exporter:
        target = f"127.0.0.1:{exporter.port}"
        config = {
            "global": {"scrape_interval": "10s", "external_labels": {"cluster": "eu1", "replica": "a"}},
            "rule_files": [str(tmp / "rules.yml")],
            "scrape_configs": [
                {"job_name": "fast", "scrape_interval": "1s", "static_configs": [{"targets": [target]}]},
                {"job_name": "normal", "scrape_interval": "15s", "metrics_path": "/empty",
                 "static_configs": [{"targets": [target]}]},
            ],
            "remote_write": [{"url": f"http://127.0.0.1:{nowhere}/api/v1/push"}],
        }
        with local_prometheus(tmp, config, "--no-storage.tsdb.wal-compression", "--storage.tsdb.retention.time=30d",
                              "--scrape.discovery-reload-interval=1s",
                              "--storage.remote.flush-deadline=1s") as url:  # nothing listens there
            with prometheus_client(url, retries=1) as client:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not server_facts(client, datetime.now(tz=UTC)).series_by_job:
                    time.sleep(0.3)
            yield url, nowhere


def test_misconfigured_prometheus_has_every_finding(misconfigured: Any) -> None:
    url, nowhere = misconfigured
    table = load_price_table()
    prices = AuditPrices.from_table(table, disk_gb_month=0.08)
    at = datetime.now(tz=UTC)
    with prometheus_client(url, retries=1) as client:
        facts = server_facts(client, at)
        findings = audit_source(client, "bad", at, prices, "t", head_series=120_000)
    assert facts.series_by_job["fast"] == FAST_SERIES and facts.series_by_job.get("normal", 0) == 0
    got = {(f.check_id, f.subject): f for f in findings}
    assert sorted(got) == sorted([(CHECK_HA, "external_labels"), (CHECK_SCRAPE, "global"), (CHECK_SCRAPE, "job fast"),
                                  (CHECK_RETENTION, "flag storage.tsdb.retention.time"),
                                  (CHECK_WAL, "flag storage.tsdb.wal-compression")])
    assert all(f.source == "bad" and f.tenant == "t" for f in findings)

    wal = got[(CHECK_WAL, "flag storage.tsdb.wal-compression")]
    assert wal.evidence == "storage.tsdb.wal-compression=false"  # as the real flags endpoint spells it
    rate = FAST_SERIES / 1  # samples/s: the `normal` job scrapes an empty page
    assert wal.monthly_saving_usd == pytest.approx(rate * 3 * 3600 * 13 / 1e9 / 2 * 0.08, abs=1e-4)

    retention = got[(CHECK_RETENTION, "flag storage.tsdb.retention.time")]
    assert f"http://127.0.0.1:{nowhere}/api/v1/push" in retention.evidence
    assert "longest rule range 3d" in retention.evidence and "retention.time=3d" in retention.recommendation
    assert retention.monthly_saving_usd == pytest.approx(27 * rate * 86_400 * 1.5 / 1e9 * 0.08, abs=1e-4)

    fast = got[(CHECK_SCRAPE, "job fast")]
    assert fast.severity == "high" and fast.evidence.endswith("scrape_interval=1s (50 samples per scrape)")
    samples = FAST_SERIES * (1 - 1 / 15)
    s = "metrics.self_hosted."
    cores = samples / table.value(s + "distributor_samples_per_second_per_core") + FAST_SERIES * table.value(
        s + "replication_factor") / table.value(s + "ingester_series_per_core") * (15 - 1)
    gib = samples / table.value(s + "distributor_samples_per_second_per_gb") * table.value(s + "memory_headroom") \
        * 1e9 / 2**30
    assert fast.monthly_saving_usd == pytest.approx((cores * table.vcpu_hour + gib * table.gib_hour) * HOURS_PER_MONTH,
                                                    abs=1e-4)
    glob = got[(CHECK_SCRAPE, "global")]
    assert glob.severity == "medium" and glob.evidence == "global.scrape_interval=10s"  # no job inherits it

    ha = got[(CHECK_HA, "external_labels")]
    assert ha.severity == "medium" and "replica='a'" in ha.evidence and ha.evidence.endswith("label(s): __replica__")
    assert ha.monthly_saving_usd == pytest.approx(120 * table.series_month_per_1k("self_hosted"), abs=1e-4)


def test_misconfigured_prometheus_rows_fit_the_dataset(misconfigured: Any) -> None:
    """What the DAG's config_audit task returns: rows that fit ``config_findings`` and pass its checks."""
    url, _ = misconfigured
    at = (datetime.now(tz=UTC) + timedelta(seconds=1)).replace(microsecond=0)  # not before the first scrape
    with prometheus_client(url, retries=1) as client:
        rows = audit_config_rows(client, "bad", "", at, load_price_table(), window_start=at - timedelta(days=1))
    table = CONFIG_FINDINGS.table(rows)
    assert table.num_rows == 5 and set(table.column("window_end").to_pylist()) == {at}
    assert check(CONFIG_FINDINGS.name, table, CONFIG_FINDINGS.expectations).success
    # The shipped table prices the disk (EBS gp3): the disk-based savings are priced and say from what.
    by_check = {r["check_id"]: r for r in rows}
    assert by_check[CHECK_WAL]["monthly_saving_usd"] > 0 and "ebs" in by_check[CHECK_WAL]["saving_model"].lower()
    assert by_check[CHECK_HA]["monthly_saving_usd"] > 0
