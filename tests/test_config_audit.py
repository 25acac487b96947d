"""Config audit rules on synthetic flags/configs (each rule positive and negative), on the recorded
Prometheus flags fixture, and the ``config_findings`` dataset with its expectations."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from tests.support.mimir import FIXTURES as MIMIR_FIXTURES
from traceo_finops.cardinality.config_audit import (
    CHECK_HA,
    CHECK_IDS,
    CHECK_NO_SERIES,
    CHECK_RETENTION,
    CHECK_SCRAPE,
    CHECK_WAL,
    CONFIG_FINDINGS,
    AuditPrices,
    ConfigAuditError,
    ServerFacts,
    audit_config,
    config_finding_rows,
    effective_retention,
    longest_lookback,
    parse_duration,
    parse_size,
    show_duration,
    tenant_without_series,
)
from traceo_finops.pricing import DEFAULT_PRICING_DIR, HOURS_PER_MONTH, load_price_table
from traceo_finops.quality import DataQualityError, check

pytestmark = pytest.mark.unit

FIXTURES = MIMIR_FIXTURES  # ../shared/fixtures/mimir beside the checkout
RECORDED_FLAGS: dict[str, str] = json.loads((FIXTURES / "prometheus_status_flags.json").read_text())["data"]
DISK_USD = 0.08
PUSH = "http://mimir.example:8080/api/v1/push"


@pytest.fixture(scope="module")
def table_with_disk() -> Any:
    """The shipped price table, which prices block storage (compute.disk_gb_month, EBS gp3)."""
    table = load_price_table()
    assert table.value("compute.disk_gb_month") == DISK_USD
    return table


@pytest.fixture(scope="module")
def table_without_disk(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The shipped price table without its block-storage price, as an older or custom table may be."""
    folder = tmp_path_factory.mktemp("pricing")
    lines = (DEFAULT_PRICING_DIR / "aws-us-east-1.yaml").read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("disk_gb_month:"))
    end = start + 1
    while end < len(lines) and lines[end].startswith(" " * (len(lines[start]) - len(lines[start].lstrip()) + 1)):
        end += 1  # the entry's continuation lines
    (folder / "aws-us-east-1.yaml").write_text("".join(lines[:start] + lines[end:]))
    table = load_price_table(pricing_dir=folder)
    assert "compute.disk_gb_month" not in table.paths()
    return table


@pytest.fixture(scope="module")
def prices(table_with_disk: Any) -> AuditPrices:
    return AuditPrices.from_table(table_with_disk)


def _flags(**changes: str) -> dict[str, str]:
    return {**RECORDED_FLAGS, **{k.replace("__", ".").replace("_", "-"): v for k, v in changes.items()}}


def _config(*jobs: tuple[str, str | None], global_interval: str | None = "15s", remote_write: list[str] | None = None,
            external: dict[str, str] | None = None) -> dict[str, Any]:
    glob: dict[str, Any] = {}
    if global_interval:
        glob["scrape_interval"] = global_interval
    if external:
        glob["external_labels"] = external
    cfg: dict[str, Any] = {"global": glob, "scrape_configs": []}
    for name, interval in jobs:
        job: dict[str, Any] = {"job_name": name, "static_configs": [{"targets": ["h:1"]}]}
        if interval:
            job["scrape_interval"] = interval
        cfg["scrape_configs"].append(job)
    if remote_write:
        cfg["remote_write"] = [{"url": u} for u in remote_write]
    return cfg


def _ids(findings: list[Any]) -> list[tuple[str, str]]:
    return [(f.check_id, f.subject) for f in findings]


# ---- parsing -------------------------------------------------------------------------------------------

def test_durations_and_sizes() -> None:
    assert parse_duration("15s") == timedelta(seconds=15)
    assert parse_duration("1d12h") == timedelta(hours=36)
    assert parse_duration("500ms") == timedelta(milliseconds=500)
    assert parse_duration("0s") == timedelta(0)
    assert parse_duration("2w") == timedelta(days=14) and parse_duration("1y") == timedelta(days=365)
    for bad in ("15", "abc", "", "1d 2h", "5x"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_size("0B") == 0 and parse_size("512MB") == 512 * 2**20 and parse_size("10GiB") == 10 * 2**30
    assert parse_size("1KB") == 1024 and parse_size("2TB") == 2 * 2**40
    with pytest.raises(ValueError):
        parse_size("lots")
    assert [show_duration(parse_duration(x)) for x in ("2d", "1d12h", "15s", "0s", "90m")] == \
        ["2d", "1d12h", "15s", "0s", "1h30m"]


@pytest.mark.parametrize(("expr", "reach"), [
    ("up", timedelta(minutes=5)),
    ("rate(x[5m])", timedelta(minutes=5)),
    ("x offset 1h", timedelta(hours=1, minutes=5)),
    ("sum by (job) (rate(x[3d]))", timedelta(days=3)),
    ("max_over_time(rate(x[5m] offset 1h)[1d:5m] offset 30m)", timedelta(days=1, hours=1, minutes=35)),
    ("x / on (a) group_left y offset 2d", timedelta(days=2, minutes=5)),
    ("x @ 100", timedelta(minutes=5)),
    ("-(x offset -10m)", timedelta(minutes=5)),
    ("topk(3, max_over_time(x[2h:1m]))", timedelta(hours=2, minutes=5)),
])
def test_longest_lookback(expr: str, reach: timedelta) -> None:
    assert longest_lookback(expr) == reach


def test_longest_lookback_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="cannot parse"):
        longest_lookback("sum(")


def test_effective_retention_rules() -> None:
    assert effective_retention(RECORDED_FLAGS)[:2] == (timedelta(days=15), None)  # "0s"/"0B": the default
    assert "default 15d" in effective_retention(RECORDED_FLAGS)[2]
    assert effective_retention(_flags(storage__tsdb__retention__time="30d"))[:2] == (timedelta(days=30), None)
    old = _flags(storage__tsdb__retention__time="30d", storage__tsdb__retention="10d")
    assert effective_retention(old)[0] == timedelta(days=10) and "deprecated" in effective_retention(old)[2]
    assert effective_retention(_flags(storage__tsdb__retention__size="50GB"))[:2] == (None, 50 * 2**30)


def test_prices_come_from_the_table(table_with_disk: Any, table_without_disk: Any) -> None:
    p = AuditPrices.from_table(table_with_disk)
    assert p.disk_gb_month == DISK_USD and "ebs" in p.disk_source
    assert p.series_month_per_1k == table_with_disk.series_month_per_1k("self_hosted")
    assert p.vcpu_hour == table_with_disk.vcpu_hour and p.model_scrape_interval_s == 15
    plain = AuditPrices.from_table(table_without_disk)
    assert plain.disk_gb_month is None
    assert AuditPrices.from_table(table_without_disk, disk_gb_month=0.1).disk_gb_month == 0.1


# ---- WAL compression -------------------------------------------------------------------------------------

def test_wal_compression_off(prices: AuditPrices) -> None:
    facts = ServerFacts(head_series=90_000, series_by_job={"node": 60_000, "api": 30_000})
    cfg = _config(("node", "30s"), ("api", None))
    findings = audit_config("p", "", _flags(storage__tsdb__wal_compression="false"), cfg, prices, facts)
    assert _ids(findings) == [(CHECK_WAL, "flag storage.tsdb.wal-compression")]
    f = findings[0]
    assert f.severity == "low" and f.evidence == "storage.tsdb.wal-compression=false"
    rate = 60_000 / 30 + 30_000 / 15  # samples/s
    assert f.monthly_saving_usd == pytest.approx(rate * 3 * 3600 * 13 / 1e9 / 2 * DISK_USD, abs=1e-4)
    assert "--storage.tsdb.wal-compression=true" in f.recommendation
    assert audit_config("p", "", _flags(storage__tsdb__wal_compression="true"), cfg, prices, facts) == []


def test_wal_compression_agent_mode(prices: AuditPrices) -> None:
    agent = _flags(enable_feature="agent", storage__agent__wal_compression="false",
                   storage__tsdb__wal_compression="false")
    findings = audit_config("p", "", agent, _config(("a", None), remote_write=[PUSH]), prices)
    assert _ids(findings) == [(CHECK_WAL, "flag storage.agent.wal-compression")]  # no retention check for agents
    assert findings[0].monthly_saving_usd == 0 and "not estimated" in findings[0].saving_model


# ---- local retention with remote_write -------------------------------------------------------------------

def test_retention_with_remote_write(prices: AuditPrices) -> None:
    facts = ServerFacts(head_series=10_000, series_by_job={"a": 15_000})
    findings = audit_config("p", "t", RECORDED_FLAGS, _config(("a", None), remote_write=[PUSH]), prices, facts)
    assert _ids(findings) == [(CHECK_RETENTION, "flag storage.tsdb.retention.time")]
    f = findings[0]
    assert f.severity == "medium" and f.tenant == "t"
    assert "default 15d" in f.evidence and PUSH in f.evidence
    assert "--storage.tsdb.retention.time=2d" in f.recommendation
    per_day_gb = 15_000 / 15 * 86_400 * 1.5 / 1e9
    assert f.monthly_saving_usd == pytest.approx(13 * per_day_gb * DISK_USD, abs=1e-4)


def test_retention_respects_rule_ranges(prices: AuditPrices) -> None:
    facts = ServerFacts(series_by_job={"a": 15_000})
    cfg = _config(("a", None), remote_write=[PUSH])
    rules = ["sum(rate(x[5m]))", "avg_over_time(slo:ratio[3d])", "broken(("]
    f = audit_config("p", "", _flags(storage__tsdb__retention__time="30d"), cfg, prices, facts, rule_queries=rules)[0]
    assert "retention.time=3d" in f.recommendation and "longest rule range 3d" in f.evidence
    assert "1 rule queries did not parse" in f.evidence
    per_day_gb = 15_000 / 15 * 86_400 * 1.5 / 1e9
    assert f.monthly_saving_usd == pytest.approx(27 * per_day_gb * DISK_USD, abs=1e-4)
    # A rule reading 20 days back needs more than the 15-day default: no finding.
    assert audit_config("p", "", RECORDED_FLAGS, cfg, prices, facts, rule_queries=["x offset 20d"]) == []


@pytest.mark.parametrize(("flags", "config"), [
    (RECORDED_FLAGS, _config(("a", None))),  # no remote_write
    (RECORDED_FLAGS, _config(("a", None), remote_write=["http://vm:8428/api/v1/write"])),  # not Mimir
    (_flags(storage__tsdb__retention__time="2d"), _config(("a", None), remote_write=[PUSH])),  # already short
    (_flags(storage__tsdb__retention__time="36h"), _config(("a", None), remote_write=[PUSH])),
])
def test_retention_negative(prices: AuditPrices, flags: dict[str, str], config: dict[str, Any]) -> None:
    assert audit_config("p", "", flags, config, prices, ServerFacts(series_by_job={"a": 1000})) == []


def test_retention_size_only_and_grafana_cloud_path(prices: AuditPrices) -> None:
    facts = ServerFacts(series_by_job={"a": 15_000})  # 1,000 samples/s: 0.1296 GB/day
    cfg = _config(("a", None), remote_write=["https://prometheus-prod.grafana.net/api/prom/push"])
    f = audit_config("p", "", _flags(storage__tsdb__retention__size="2GB"), cfg, prices, facts)[0]
    held_days = 2 * 2**30 / 1e9 / (1000 * 86_400 * 1.5 / 1e9)
    assert f.check_id == CHECK_RETENTION
    assert f.monthly_saving_usd == pytest.approx((held_days - 2) * 0.1296 * DISK_USD, abs=1e-4)


def test_retention_without_disk_price_is_flagged_not_priced(table_without_disk: Any) -> None:
    plain = AuditPrices.from_table(table_without_disk)
    f = audit_config("p", "", RECORDED_FLAGS, _config(("a", None), remote_write=[PUSH]), plain,
                     ServerFacts(series_by_job={"a": 15_000}))[0]
    assert f.monthly_saving_usd == 0 and "not priced" in f.saving_model and "compute.disk_gb_month" in f.saving_model


# ---- scrape intervals ----------------------------------------------------------------------------------

def _scrape_usd(series: int, interval_s: float) -> float:
    """Independent of the module: the distributor part from the price table's own model re-derived at the
    faster interval, plus ingester CPU scaled by the sample rate."""
    at = load_price_table(overrides={"metrics.self_hosted.scrape_interval_seconds": interval_s})
    base = load_price_table(overrides={"metrics.self_hosted.scrape_interval_seconds": 15})
    distributor = (at.series_month_per_1k() - base.series_month_per_1k()) * series / 1000
    rf = base.value("metrics.self_hosted.replication_factor")
    per_core = base.value("metrics.self_hosted.ingester_series_per_core")
    ingester = series * rf / per_core * (15 / interval_s - 1) * base.vcpu_hour * HOURS_PER_MONTH
    return distributor + ingester


def test_scrape_interval_per_job(prices: AuditPrices) -> None:
    facts = ServerFacts(series_by_job={"fast": 30_000, "blink": 2_000, "ok": 50_000, "slow": 9})
    cfg = _config(("fast", "10s"), ("blink", "5s"), ("ok", "15s"), ("slow", "1m"))
    findings = audit_config("p", "", RECORDED_FLAGS, cfg, prices, facts)
    assert _ids(findings) == [(CHECK_SCRAPE, "job blink"), (CHECK_SCRAPE, "job fast")]
    blink, fast = findings
    assert blink.severity == "high" and fast.severity == "medium"
    assert fast.evidence == "scrape_configs[job_name=fast].scrape_interval=10s (30,000 samples per scrape)"
    assert fast.monthly_saving_usd == pytest.approx(_scrape_usd(30_000, 10), abs=1e-4)
    assert blink.monthly_saving_usd == pytest.approx(_scrape_usd(2_000, 5), abs=1e-4)
    assert "every 15s" in fast.recommendation and "33%" in fast.recommendation
    # A third fewer samples is worth about a third more than the 15 s write path of those series costs.
    assert fast.monthly_saving_usd < 30 * prices.series_month_per_1k


def test_scrape_interval_global_and_inherited(prices: AuditPrices) -> None:
    raw = _config(("a", None), ("b", "30s"), global_interval="10s")  # a file: `a` inherits the global
    findings = audit_config("p", "", RECORDED_FLAGS, raw, prices, ServerFacts(series_by_job={"a": 3000}))
    assert _ids(findings) == [(CHECK_SCRAPE, "job a"), (CHECK_SCRAPE, "global")]
    job, glob = findings
    assert glob.evidence == "global.scrape_interval=10s (jobs at that interval: a)" and glob.monthly_saving_usd == 0
    assert job.monthly_saving_usd == pytest.approx(_scrape_usd(3000, 10), abs=1e-4)
    # No global interval at all: Prometheus' default 1m, nothing to say.
    assert audit_config("p", "", RECORDED_FLAGS, _config(("a", None), global_interval=None), prices) == []


def test_scrape_interval_unknown_series(prices: AuditPrices) -> None:
    f = audit_config("p", "", RECORDED_FLAGS, _config(("x", "1s")), prices, ServerFacts())[0]
    assert f.severity == "high" and f.monthly_saving_usd == 0 and "not estimated" in f.saving_model


# ---- HA pairs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("external", "severity", "missing"), [
    ({"replica": "a"}, "high", "__replica__, cluster"),
    ({"cluster": "eu1", "prometheus_replica": "b"}, "medium", "__replica__"),
    ({"__replica__": "b"}, "high", "cluster"),
    ({"cluster": "eu1", "my_replica_id": "1"}, "medium", "__replica__"),
])
def test_ha_pair_without_dedup(prices: AuditPrices, external: dict[str, str], severity: str, missing: str) -> None:
    cfg = _config(("a", None), remote_write=[PUSH], external=external)
    flags = _flags(storage__tsdb__retention__time="2d")
    findings = audit_config("p", "", flags, cfg, prices, ServerFacts(head_series=250_000))
    assert _ids(findings) == [(CHECK_HA, "external_labels")]
    f = findings[0]
    assert f.severity == severity and f.evidence.endswith(f"HA-tracker label(s): {missing}")
    assert f.monthly_saving_usd == pytest.approx(250 * prices.series_month_per_1k, abs=1e-4)


@pytest.mark.parametrize(("external", "remote"), [
    ({"cluster": "eu1", "__replica__": "a"}, [PUSH]),  # what Mimir's HA tracker expects
    ({"replica": "a"}, None),  # HA pair without remote_write: each keeps its copy by design
    ({"cluster": "eu1", "region": "x"}, [PUSH]),  # not an HA replica
])
def test_ha_negative(prices: AuditPrices, external: dict[str, str], remote: list[str] | None) -> None:
    cfg = _config(("a", None), remote_write=remote, external=external)
    flags = _flags(storage__tsdb__retention__time="2d")
    assert audit_config("p", "", flags, cfg, prices, ServerFacts(head_series=1)) == []


# ---- the recorded fixture, bad input, ordering, dataset ---------------------------------------------------

def test_recorded_prometheus_flags_and_config(prices: AuditPrices) -> None:
    """The recorded server: WAL compression on, 15 s scrapes, remote_write to Mimir, default 15d retention."""
    config = (FIXTURES / "prometheus.yml.used").read_text()
    tsdb = json.loads((FIXTURES / "prometheus_status_tsdb.json").read_text())["data"]
    jobs = json.loads((FIXTURES / "mimir_cardinality_label_values_job_instance.json").read_text())
    by_job = {e["label_value"]: e["series_count"] for lbl in jobs["labels"] if lbl["label_name"] == "job"
              for e in lbl["cardinality"]}
    facts = ServerFacts(head_series=tsdb["headStats"]["numSeries"], series_by_job=by_job)
    findings = audit_config("recorded", "", RECORDED_FLAGS, config, prices, facts)
    assert _ids(findings) == [(CHECK_RETENTION, "flag storage.tsdb.retention.time")]
    f = findings[0]
    assert f.evidence.startswith("storage.tsdb.retention.time=0s, storage.tsdb.retention.size=0B")
    assert "http://127.0.0.1:9009/api/v1/push" in f.evidence
    rate = (2675 + 438) / 15
    assert f.monthly_saving_usd == pytest.approx(13 * rate * 86_400 * 1.5 / 1e9 * DISK_USD, abs=1e-4)


def test_bad_yaml_names_the_source(prices: AuditPrices) -> None:
    with pytest.raises(ConfigAuditError, match="source 'broken': the configuration is not valid YAML"):
        audit_config("broken", "", RECORDED_FLAGS, "global: [unclosed", prices)
    with pytest.raises(ConfigAuditError, match="not a YAML mapping"):
        audit_config("broken", "", RECORDED_FLAGS, "- a\n- b\n", prices)


def test_everything_at_once_is_ordered_by_severity(prices: AuditPrices) -> None:
    cfg = _config(("fast", "10s"), remote_write=[PUSH], external={"replica": "x"})
    flags = _flags(storage__tsdb__wal_compression="false", storage__tsdb__retention__time="30d")
    facts = ServerFacts(head_series=40_000, series_by_job={"fast": 40_000})
    findings = audit_config("p", "t", flags, cfg, prices, facts)
    assert [f.severity for f in findings] == ["high", "medium", "medium", "low"]
    assert {f.check_id for f in findings} == {CHECK_HA, CHECK_RETENTION, CHECK_SCRAPE, CHECK_WAL}
    assert all(f.monthly_saving_usd > 0 for f in findings)


def test_dataset_rows_pass_their_expectations(prices: AuditPrices) -> None:
    cfg = _config(("fast", "10s"), remote_write=[PUSH], external={"replica": "x"})
    flags = _flags(storage__tsdb__wal_compression="false")
    findings = audit_config("p", "", flags, cfg, prices, ServerFacts(head_series=10, series_by_job={"fast": 10}))
    start, end = datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC)
    table = CONFIG_FINDINGS.table(config_finding_rows(findings, start, end))
    assert table.num_rows == 4 and CONFIG_FINDINGS.version == 1
    assert str(table.schema.field("monthly_saving_usd").type) == "double"
    assert check(CONFIG_FINDINGS.name, table, CONFIG_FINDINGS.expectations).success
    bad = config_finding_rows(findings, start, end)
    bad[0] = {**bad[0], "severity": "urgent"}
    bad[1] = {**bad[1], "monthly_saving_usd": -1.0}
    with pytest.raises(DataQualityError) as err:
        check(CONFIG_FINDINGS.name, CONFIG_FINDINGS.table(bad), CONFIG_FINDINGS.expectations)
    assert "severity" in str(err.value) and "monthly_saving_usd" in str(err.value)


def test_devstack_style_yaml_text_is_read(prices: AuditPrices) -> None:
    text = yaml.safe_dump(_config(("a", "15s"), remote_write=[PUSH]))
    assert _ids(audit_config("p", "", RECORDED_FLAGS, text, prices)) == [(CHECK_RETENTION,
                                                                          "flag storage.tsdb.retention.time")]


def test_tenant_without_series_finding_fits_the_dataset() -> None:
    """A Mimir tenant whose census is empty: one high finding naming it, no saving, a valid dataset row."""
    typo = tenant_without_series("prod-mimir", "team-aa", "inmemory")
    paused = tenant_without_series("prod-mimir", "", "active", inmemory_series=1234)
    gone = tenant_without_series("prod-mimir", "old", "active", inmemory_series=0)
    assert CHECK_NO_SERIES in CHECK_IDS and typo.check_id == CHECK_NO_SERIES and typo.severity == "high"
    assert typo.recommendation.startswith("no series: misspelled tenant?") and "'team-aa'" in typo.recommendation
    assert typo.subject == "tenant team-aa" and "count_method=inmemory" in typo.evidence
    assert "in-memory" not in typo.evidence and typo.monthly_saving_usd == 0
    assert paused.subject == "tenant anonymous" and "1,234 in-memory series" in paused.evidence
    assert "none in memory either" in gone.evidence
    start, end = datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC)
    rows = config_finding_rows([typo, paused, gone], start, end)
    assert check(CONFIG_FINDINGS.name, CONFIG_FINDINGS.table(rows), CONFIG_FINDINGS.expectations).success
    with pytest.raises(DataQualityError, match="check_id"):
        check(CONFIG_FINDINGS.name, CONFIG_FINDINGS.table([{**rows[0], "check_id": "tenant_typo"}]),
              CONFIG_FINDINGS.expectations)
