"""finops_cardinality end to end: real Airflow (dag.test on SQLite), real Prometheus, real Slack sink."""

from __future__ import annotations

import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from devstack import slack_sink
from tests.support.dags import load_dag
from tests.support.net import free_port
from traceo_finops.prometheus import PrometheusClient, SourceSpec

pytestmark = [pytest.mark.dag, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[1]
SETTLED = timedelta(seconds=30)  # > the devstack's scrape_timeout (10 s) + interval (15 s)


@pytest.fixture
def cardinality_dag(airflow_db: Path) -> Any:
    return load_dag("finops_cardinality")


def _differences(table: Any, env: dict[str, str]) -> dict[str, tuple[int | None, int | None]]:
    """Metrics whose series in the report differ from what the server counts at the report's window end:
    {metric: (report, server)}."""
    report = {r["metric"]: r["series"] for r in table.to_pylist()}
    direct = {s["metric"]["__name__"]: int(float(s["value"][1])) for s in _server_count(
        env, 'count by (__name__) ({__name__=~".+"})', table.column("window_end")[0].as_py())}
    # Alert-state series (ALERTS, ALERTS_FOR_STATE) appear and go stale as the devstack's alerts fire and resolve:
    # the head index still lists a just-resolved alert's series that an instant count no longer sees.
    return {m: (report.get(m), direct.get(m)) for m in sorted(set(report) | set(direct))
            if report.get(m) != direct.get(m) and m not in ("ALERTS", "ALERTS_FOR_STATE")}


def _slack_posts(env: dict[str, str], title_prefix: str) -> list[dict]:
    return [r for r in slack_sink.received(env["DEVSTACK_SLACK_URL"])
            if r.get("delivered") and str((r.get("body") or {}).get("text", "")).startswith(title_prefix)]


def _query_log_as_generated(truth: dict[str, Any], config: Path, tmp_path: Path) -> None:
    """Point the test config's query log at the devstack's log as it stood when the devstack was made."""
    import json
    from datetime import datetime

    import yaml

    made = float(truth["generated_at"]) if not isinstance(truth["generated_at"], str) else \
        datetime.fromisoformat(truth["generated_at"]).timestamp()
    kept = []
    for line in Path(truth["paths"]["query_log"]).read_text().splitlines():
        try:
            ts = datetime.fromisoformat(json.loads(line)["ts"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError):
            continue
        if ts <= made:
            kept.append(line)
    assert kept, "the devstack's replayer left no query log lines"
    log = tmp_path / "query.log"
    log.write_text("\n".join(kept) + "\n")
    cfg = yaml.safe_load(config.read_text())
    cfg["workflows"]["cardinality"]["query_log"] = str(log)
    config.write_text(yaml.safe_dump(cfg))


def _server_count(env: dict[str, str], promql: str, at: Any) -> list[dict]:
    client = PrometheusClient(SourceSpec.from_connection_fields(
        name="check", host=env["DEVSTACK_PROM_URL"], port=None, schema=None, login=None, password=None, extra={}))
    return client.query(promql, time=at)


def test_run_writes_reports_and_posts_once(devstack: dict[str, str], prom_truth: dict[str, Any],
                                           finops_config: Path, cardinality_dag: Any, tmp_path: Path) -> None:
    slack_sink.reset(devstack["DEVSTACK_SLACK_URL"])
    # The usage the devstack made (dashboards, rules, its replayed queries) — not the queries other
    # tests of this session sent to the same Prometheus to check their own results.
    _query_log_as_generated(prom_truth, finops_config, tmp_path)
    # A manual run whose window ended SETTLED ago, so the server's own count at that instant cannot move
    # while the test compares: a scrape's samples land when it ends, and a scrape that times out marks its
    # series stale at its own start time — up to scrape_timeout (10 s) after the fact. Not before the
    # devstack's first scrapes, though (a bounded wait right after it was made).
    made = datetime.fromtimestamp(float(prom_truth["generated_at"]), UTC)
    while (end := datetime.now(UTC) - SETTLED) < made:
        time.sleep((made - end).total_seconds())
    run = cardinality_dag.test(logical_date=end)
    assert run.state == "success"
    root = Path(finops_config.parent / "reports")
    files = sorted(root.glob("cardinality/report_date=*/part-0.parquet"))
    assert len(files) == 1
    table = pq.read_table(files[0])
    meta = table.schema.metadata
    assert meta[b"traceo.dag_id"] == b"finops_cardinality" and meta[b"traceo.schema_version"] == b"2"
    rows = {r["metric"]: r for r in table.to_pylist()}
    assert _differences(table, devstack) == {}
    end = table.column("window_end")[0].as_py()

    # The devstack's unused metric: found, with its exact series count, and dropped.
    unused = prom_truth["cardinality"]["unused_metric"]
    u = rows[unused["name"]]
    assert (u["series"], u["classification"], u["suggestion"], u["series_after"]) == (
        unused["series"], "unused", "drop_metric", 0)
    assert u["monthly_saving_usd"] == pytest.approx(u["monthly_cost_usd"]) and u["monthly_saving_usd"] > 0

    # Its high-cardinality label: found unneeded with its exact distinct values; the series left after
    # merging it away is what the server counts.
    hc = prom_truth["cardinality"]["high_cardinality"]
    labels = {(r["metric"], r["label"]): r for r in
              pq.read_table(next(root.glob("cardinality_labels/report_date=*/part-0.parquet"))).to_pylist()}
    hl = labels[(hc["metric"], hc["label"])]
    assert hl["distinct_values"] == hc["distinct_values"] and hl["needed"] is False
    h = rows[hc["metric"]]
    assert h["series"] == hc["series"] and h["classification"] == "partially_used"
    assert hc["label"] in h["unneeded_labels"]
    kept = sorted(k for (m, k), r in labels.items() if m == hc["metric"] and k not in h["unneeded_labels"])
    direct = _server_count(devstack, f"count(count by ({', '.join(kept)}) ({hc['metric']}))", end)
    assert h["series_if_aggregated"] == int(float(direct[0]["value"][1])) < h["series"]
    if h["suggestion"] == "blocked":  # a usage counts or averages series: merging would change its result
        assert h["series_after"] == h["series"] and h["blocked_by"]
    else:
        assert h["suggestion"] == "aggregate" and h["series_after"] == h["series_if_aggregated"]
    assert all(r["monthly_saving_usd"] == pytest.approx(r["monthly_cost_usd"] - r["monthly_cost_after_usd"])
               for r in rows.values())

    # Showback adds up to every series the server holds, with the series lacking the owner label unattributed.
    showback = pq.read_table(next(root.glob("showback/report_date=*/part-0.parquet"))).to_pylist()
    total = int(float(_server_count(devstack, 'count({__name__=~".+"})', end)[0]["value"][1]))
    assert sum(r["series"] for r in showback) == total
    assert "unattributed" in {r["owner"] for r in showback}
    # Every owner is one of the devstack's teams (or unattributed), and the biggest one has series.
    assert {r["owner"] for r in showback} - {"unattributed"} <= set(prom_truth["namespaces"].values())
    assert len(showback) >= 2

    # The deliberately broken dashboard panel is recorded, not fatal.
    errors = pq.read_table(next(root.glob("usage_errors/report_date=*/part-0.parquet"))).to_pylist()
    assert any(e["source_kind"] == "dashboard" for e in errors)
    assert next(root.glob("config_findings/report_date=*/part-0.parquet")).exists()

    # The relabel config beside the report drops the unused metric and passes promtool.
    relabel = next(root.glob("_artifacts/cardinality/report_date=*/*metric_relabel_configs.yaml"))
    assert unused["name"] in relabel.read_text()
    check = subprocess.run(["promtool", "check", "config", str(relabel)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    # One digest in the sink.
    posts = _slack_posts(devstack, "Cardinality audit")
    assert len(posts) == 1
    assert unused["name"] in str(posts[0]["body"]["blocks"])

    # Rerunning the same data interval replaces the partitions (no duplicate rows, no second file).
    run2 = cardinality_dag.test(logical_date=run.logical_date)
    assert run2.state == "success"
    assert sorted(root.glob("cardinality/report_date=*/*")) == files
    rerun = pads.dataset(root / "cardinality", partitioning="hive").to_table()
    assert rerun.num_rows == len(set(rerun.column("metric").to_pylist()))
    assert _differences(pq.read_table(files[0]), devstack) == {}

    # The README's DuckDB example runs as written against this report root.
    readme = (ROOT / "README.md").read_text()
    sql = re.search(r"```sql\n(.*?)```", readme, re.S).group(1)  # type: ignore[union-attr]
    got = duckdb.sql(sql.replace("reports/", f"{root}/")).fetchall()
    top = max(rerun.to_pylist(), key=lambda r: r["series"])["metric"]
    assert got and got[0][2] == top


def test_slack_500_then_200_is_retried(devstack: dict[str, str], finops_config: Path, cardinality_dag: Any) -> None:
    url = devstack["DEVSTACK_SLACK_URL"]
    slack_sink.reset(url)
    slack_sink.script_failures(url, [500])
    run = cardinality_dag.test()
    assert run.state == "success"
    attempts = [r for r in slack_sink.received(url) if str((r.get("body") or {}).get("text", "")).startswith(
        "Cardinality audit")]
    assert [r["status"] for r in attempts] == [500, 200]


def test_unreachable_prometheus_fails_the_run_and_records_why(
        devstack: dict[str, str], finops_config: Path, cardinality_dag: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    port = free_port()  # nothing listens on it
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", json.dumps(
        {"conn_type": "http", "host": f"http://127.0.0.1:{port}", "extra": {"timeout": 1, "retries": 0}}))
    for t in cardinality_dag.tasks:  # dag.test() would otherwise wait out the production retry delays
        monkeypatch.setattr(t, "retries", 0)
    run = cardinality_dag.test()
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    # The failure policy: the target's error is recorded, and with every target failed nothing but that
    # record is published (an empty set would replace the date's last good report).
    assert states["audit"] == "success" and states["write_reports"] == "failed"
    root = finops_config.parent / "reports"
    assert not (root / "cardinality").exists()
    record = pq.read_table(next(root.glob("run_targets/dag_id=finops_cardinality/report_date=*/part-0.parquet")))
    [row] = record.to_pylist()
    assert row["status"] == "failed" and row["target"] == "devstack"
    assert f"127.0.0.1:{port}" in row["error"] and "devstack" in row["error"]
