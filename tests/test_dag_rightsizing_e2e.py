"""finops_rightsizing end to end: real Airflow (dag.test on SQLite), the devstack's real Prometheus (4 days of
backfilled cluster history + live head), real Slack sink; checked against the devstack's ground truth."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from devstack import slack_sink
from tests.support.dags import load_dag

pytestmark = [pytest.mark.dag, pytest.mark.integration]


@pytest.fixture
def rightsizing_dag(airflow_db: Path) -> Any:
    return load_dag("finops_rightsizing")


@pytest.fixture
def stack_config(finops_config: Path) -> Path:
    """The default configuration plus the seed's Prometheus VM (4 cores, 16 GiB) and VPA objects."""
    cfg = yaml.safe_load(finops_config.read_text())
    cfg["workflows"]["rightsizing"].update(
        stack_allocations=[{"job": "prometheus", "cpu_cores": 4, "memory_gib": 16}], vpa_objects=True)
    finops_config.write_text(yaml.safe_dump(cfg))
    return finops_config


def test_run_sizes_the_devstack_and_posts_once(devstack: dict[str, str], prom_truth: dict[str, Any],
                                               stack_config: Path, rightsizing_dag: Any) -> None:
    url = devstack["DEVSTACK_SLACK_URL"]
    slack_sink.reset(url)
    # The window starts with the backfilled history and ends now: the ground truth's statistics cover the
    # backfill; the few live minutes after it do not move a 4-day percentile, and they hold Prometheus' own
    # process metrics (it only scrapes itself since it started).
    end = datetime.fromtimestamp(int(time.time()), UTC)
    history = f"{int(end.timestamp()) - prom_truth['history']['start']}s"
    run = rightsizing_dag.test(run_conf={"history": history, "end": end.isoformat()})
    assert run.state == "success"

    root = stack_config.parent / "reports"
    [part] = sorted(root.glob("rightsizing/report_date=*/part-0.parquet"))
    table = pq.read_table(part)
    assert table.schema.metadata[b"traceo.dag_id"] == b"finops_rightsizing"
    rows = table.to_pylist()
    by_key = {(r["namespace"], r["workload_name"], r["container"]): r for r in rows}

    # Every workload container of the ground truth is a row, under the right kind and replicas.
    for w in prom_truth["workloads"]:
        for c in w["containers"]:
            row = by_key[(w["namespace"], w["name"], c["name"])]
            assert row["workload_kind"] == w["kind"], row
            if not w["hpa"] and w["kind"] != "Job":
                assert row["replicas"] == w["replicas"], row

    # The stack row: Prometheus itself, on the seed's 4-core 16 GiB VM. It has scraped itself only since it
    # started (minutes): sized, but flagged as insufficient data and not priced as a saving.
    [prom] = [r for r in rows if r["workload_kind"] == "Process"]
    assert prom["workload_name"] == "prometheus" and prom["current_cpu_request"] == 4
    assert prom["status"] == "insufficient data" and prom["monthly_saving_usd"] == 0
    assert 0 < prom["recommended_memory_request"] < 16 * 2**30 / 4

    # Beside the report: one patch per actionable patchable workload, the script, the VPA objects.
    artifacts = {p.name: p for p in (root / "_artifacts" / "rightsizing").glob("report_date=*/*")}
    actionable = {(r["namespace"], r["workload_kind"], r["workload_name"]) for r in rows
                  if r["status"] in ("over-provisioned", "under-provisioned", "no requests set")
                  and r["workload_kind"] in ("Deployment", "StatefulSet", "DaemonSet")}
    patches = {n for n in artifacts if n.endswith(".patch.yaml")}
    assert patches == {f"{ns}.{kind.lower()}.{name}.patch.yaml" for ns, kind, name in actionable}
    api = prom_truth["workloads"][0]
    patch = yaml.safe_load(artifacts[f"{api['namespace']}.deployment.{api['name']}.patch.yaml"].read_text())
    [container] = patch["spec"]["template"]["spec"]["containers"]
    row = by_key[(api["namespace"], api["name"], container["name"])]
    assert container["resources"]["requests"]["cpu"] == f"{round(row['recommended_cpu_request'] * 1000)}m"
    assert "kubectl -n checkout patch deployment checkout-api" in artifacts["apply-patches.sh"].read_text()
    vpas = list(yaml.safe_load_all(artifacts["vpa.yaml"].read_text()))
    assert {v["spec"]["updatePolicy"]["updateMode"] for v in vpas} == {"Off"}

    # One digest, naming the biggest saving.
    posts = [r for r in slack_sink.received(url) if r.get("delivered")
             and str((r.get("body") or {}).get("text", "")).startswith("Right-sizing")]
    assert len(posts) == 1
    top = max(rows, key=lambda r: r["monthly_saving_usd"])
    assert top["workload_name"] in str(posts[0]["body"]["blocks"])
