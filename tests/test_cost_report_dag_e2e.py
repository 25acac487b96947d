"""finops_cost_report end to end on the devstack: real Airflow (dag.test on SQLite), after the cardinality,
right-sizing and S3 tiering DAGs ran against the devstack's Prometheus and S3; one Slack post, and a rerun of
the same partition posts nothing more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from devstack import slack_sink
from tests.support.dags import load_dag

pytestmark = [pytest.mark.dag, pytest.mark.integration]
UPSTREAM = ("finops_cardinality", "finops_rightsizing", "finops_s3_tiering")


@pytest.fixture
def dags(airflow_db: Path) -> dict[str, Any]:
    out = {d: load_dag(d) for d in (*UPSTREAM, "finops_cost_report")}
    for dag in out.values():
        for t in dag.tasks:  # dag.test() would wait out the production retry delays
            t.retries = 0
    return out


def _one(root: Path, dataset: str) -> list[dict[str, Any]]:
    (part,) = sorted(root.glob(f"{dataset}/report_date=*/part-0.parquet"))
    return pq.read_table(part).to_pylist()


def _posts(url: str) -> list[dict[str, Any]]:
    return [r for r in slack_sink.received(url) if r.get("delivered")
            and str((r.get("body") or {}).get("text", "")).startswith("Cost report")]


def test_cost_report_after_the_other_dags(devstack: dict[str, str], finops_config: Path,
                                          dags: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    url = devstack["DEVSTACK_SLACK_URL"]
    slack_sink.reset(url)
    # The deployment's UI address ([api] base_url): the cost report links to the FinOps page under it.
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.test/")
    for dag_id in UPSTREAM:
        assert dags[dag_id].test(run_conf={"post_to_slack": False}).state == "success", dag_id
    run = dags["finops_cost_report"].test()
    assert run.state == "success"
    root = finops_config.parent / "reports"

    summary = _one(root, "cost_summary")
    cats: dict[str, float] = {}
    for r in summary:
        cats[r["category"]] = cats.get(r["category"], 0.0) + r["current_monthly_usd"]
        assert r["saving_monthly_usd"] == pytest.approx(r["current_monthly_usd"] - r["projected_monthly_usd"],
                                                        abs=1e-6)
    # Each category equals what its own workflow committed (each line is rounded to a micro-dollar).
    cents = {"abs": 1e-6 * len(summary)}
    assert cats["object_storage"] == pytest.approx(sum(r["current_monthly_usd"] for r in _one(root, "s3_tiering")),
                                                   **cents)
    assert cats["active_series"] == pytest.approx(sum(r["monthly_cost_usd"] for r in _one(root, "showback")), **cents)
    sized = _one(root, "rightsizing")
    assert cats.get("workload_requests", 0.0) + cats.get("stack_compute", 0.0) == pytest.approx(
        sum(r["monthly_cost_now_usd"] for r in sized), **cents)
    assert "local_disk" in cats
    (storage,) = _one(root, "storage")
    assert storage["source"] == "devstack" and storage["status"] == "partial" and storage["blocks_bytes"] > 0

    actions = _one(root, "actions")
    assert sorted(a["rank"] for a in actions) == list(range(1, len(actions) + 1))
    assert {"lifecycle_rule", "request_patch"} <= {a["kind"] for a in actions}
    assert {i["dataset"]: i["status"] for i in _one(root, "cost_inputs")}["cardinality"] == "used"

    posts = _posts(url)
    assert len(posts) == 1
    blocks = str(posts[0]["body"]["blocks"])
    assert "object_storage" in blocks and actions[0]["owner"] in blocks
    assert "https://airflow.example.test/finops/" in blocks

    # The same run again (as clearing it in the UI would): the partition is replaced, and no second Slack post.
    rerun = dags["finops_cost_report"].test(run_after=run.run_after, logical_date=run.logical_date)
    assert rerun.state == "success" and rerun.run_id == run.run_id
    assert len(_one(root, "actions")) == len(actions)
    assert len(_posts(url)) == 1
