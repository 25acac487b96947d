"""finops_cardinality end to end: real Airflow (dag.test on SQLite), real Prometheus, real Slack sink."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from devstack import slack_sink
from traceo_finops.prometheus import PrometheusClient, SourceSpec

pytestmark = [pytest.mark.dag, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cardinality_dag(airflow_db: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "finops_cardinality.py"))
    assert bag.import_errors == {}
    return bag.get_dag("finops_cardinality")


def _matches_server(table: Any, env: dict[str, str]) -> bool:
    """The report's series per metric equal what the server counts at the report's window end."""
    end = table.column("window_end")[0].as_py()
    client = PrometheusClient(SourceSpec.from_connection_fields(
        name="check", host=env["DEVSTACK_PROM_URL"], port=None, schema=None, login=None, password=None, extra={}))
    direct = {s["metric"]["__name__"]: int(float(s["value"][1]))
              for s in client.query('count by (__name__) ({__name__=~".+"})', time=end)}
    return {r["metric"]: r["series"] for r in table.to_pylist()} == direct


def _slack_posts(env: dict[str, str], title_prefix: str) -> list[dict]:
    return [r for r in slack_sink.received(env["DEVSTACK_SLACK_URL"])
            if r.get("delivered") and str((r.get("body") or {}).get("text", "")).startswith(title_prefix)]


def test_run_writes_partition_and_posts_once(devstack: dict[str, str], prom_truth: dict[str, Any],
                                             finops_config: Path, cardinality_dag: Any) -> None:
    slack_sink.reset(devstack["DEVSTACK_SLACK_URL"])
    run = cardinality_dag.test()
    assert run.state == "success"
    root = Path(finops_config.parent / "reports")
    files = sorted(root.glob("cardinality/report_date=*/part-0.parquet"))
    assert len(files) == 1
    table = pq.read_table(files[0])
    meta = table.schema.metadata
    assert meta[b"traceo.dag_id"] == b"finops_cardinality" and meta[b"traceo.schema_version"] == b"1"
    rows = {r["metric"]: r for r in table.to_pylist()}
    assert _matches_server(table, devstack)
    assert abs(sum(r["share"] for r in rows.values()) - 1) < 1e-9
    unused = prom_truth["cardinality"]["unused_metric"]
    assert rows[unused["name"]]["series"] == unused["series"]
    assert all(r["monthly_cost_usd"] > 0 for r in rows.values())

    # One digest in the sink, naming the top metric.
    posts = _slack_posts(devstack, "Cardinality audit")
    assert len(posts) == 1
    top = max(rows.values(), key=lambda r: r["series"])["metric"]
    assert top in str(posts[0]["body"]["blocks"])

    # Rerunning the same data interval replaces the partition (no duplicate rows, no second file).
    run2 = cardinality_dag.test(logical_date=run.logical_date)
    assert run2.state == "success"
    assert sorted(root.glob("cardinality/report_date=*/*")) == files
    rerun = pads.dataset(root / "cardinality", partitioning="hive").to_table()
    assert rerun.num_rows == len(set(rerun.column("metric").to_pylist()))
    assert _matches_server(pq.read_table(files[0]), devstack)

    # The README's DuckDB example runs as written against this report root.
    readme = (ROOT / "README.md").read_text()
    sql = re.search(r"```sql\n(.*?)```", readme, re.S).group(1)  # type: ignore[union-attr]
    got = duckdb.sql(sql.replace("reports/", f"{root}/")).fetchall()
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


def test_unreachable_prometheus_fails_the_run_and_writes_nothing(
        devstack: dict[str, str], finops_config: Path, cardinality_dag: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", json.dumps(
        {"conn_type": "http", "host": f"http://127.0.0.1:{port}", "extra": {"timeout": 1, "retries": 0}}))
    for t in cardinality_dag.tasks:  # dag.test() would otherwise wait out the production retry delays
        monkeypatch.setattr(t, "retries", 0)
    run = cardinality_dag.test()
    assert run.state == "failed"
    failed = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert failed["collect"] == "failed" and failed["write_report"] == "upstream_failed"
    assert not (finops_config.parent / "reports" / "cardinality").exists()
