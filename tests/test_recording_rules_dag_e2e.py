"""finops_recording_rules end to end: real Airflow (dag.test on SQLite), the devstack's Prometheus and query log,
a private Prometheus for the proof, the devstack's Slack sink."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import yaml

from devstack import replayer, slack_sink
from tests.support.dags import load_dag
from tests.support.prometheus import PROMTOOL
from traceo_finops.slack import delivery_key

pytestmark = [pytest.mark.dag, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[1]
# The rate window in the name is the costliest refresh's ($__rate_interval folded), which depends on timing.
HEAVY_RULE = "le_route:http_request_duration_seconds_bucket:rate"


@pytest.fixture
def recording_rules_dag(airflow_db: Path) -> Any:
    return load_dag("finops_recording_rules")


def _posts(env: dict[str, str], dag_id: str, run_id: str) -> list[dict[str, Any]]:
    key = delivery_key(dag_id, run_id, "digest")
    return [r for r in slack_sink.received(env["DEVSTACK_SLACK_URL"])
            if r.get("delivered") and key in json.dumps(r.get("body"))]


def test_run_publishes_proven_rules_posts_once_and_a_rerun_replaces(
        devstack: dict[str, str], prom_truth: dict[str, Any], finops_config: Path, recording_rules_dag: Any) -> None:
    # The devstack's dashboard traffic, now (its own replay ran before the apps' series had any history).
    dashboard = json.loads((ROOT / "devstack/assets/dashboards/services-red.json").read_text())
    replayer.replay(devstack["DEVSTACK_PROM_URL"], [dashboard], seed=prom_truth["seed"])
    cfg = yaml.safe_load(finops_config.read_text())
    cfg["workflows"]["recording_rules"]["lookback"] = "2m"  # the replay, not the rest of the shared log
    # No speed gate: a speedup on this small world depends on the machine's load (bench/ measures speed).
    cfg["workflows"]["recording_rules"]["min_speedup"] = 0
    finops_config.write_text(yaml.safe_dump(cfg))

    run = recording_rules_dag.test(logical_date=datetime.now(UTC))
    assert run.state == "success"
    root = finops_config.parent / "reports"
    files = sorted(root.glob("recording_rules/report_date=*/part-0.parquet"))
    assert len(files) == 1
    table = pq.read_table(files[0])
    assert table.schema.metadata[b"traceo.dag_id"] == b"finops_recording_rules"
    rows = table.to_pylist()
    heavy = [r for r in rows if r["rule_name"].startswith(HEAVY_RULE) and r["validated"]]
    assert heavy, [(r["rule_name"], r["rule_status"], r["rejection_reason"]) for r in rows]
    assert heavy[0]["rule_status"] == "suggested" and heavy[0]["speedup"] > 0 and heavy[0]["new_series"] > 0
    assert {r["run_id"] for r in rows} == {run.run_id}
    [inputs] = pq.read_table(next(root.glob("recording_rules_inputs/report_date=*/part-0.parquet"))).to_pylist()
    assert inputs["source"] == "devstack" and inputs["api_queries"] > 0 and inputs["bad_lines"] == 0

    # The artifacts: a rule file promtool loads with every suggested rule, the Mimir ruler namespace beside it.
    artifacts = root / "_artifacts" / "recording_rules"
    rule_file = next(artifacts.glob("report_date=*/devstack-recording_rules.yml"))
    check = subprocess.run([PROMTOOL, "check", "rules", str(rule_file)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    records = {r["record"] for r in yaml.safe_load(rule_file.read_text())["groups"][0]["rules"]}
    assert records == {r["rule_name"] for r in rows if r["rule_status"] == "suggested"}
    namespace = yaml.safe_load(next(artifacts.glob("report_date=*/devstack-mimir_ruler_namespace.yml")).read_text())
    assert namespace["namespace"] == "traceo-finops" and {r["record"] for r in namespace["groups"][0]["rules"]} == \
        records
    rewrites = json.loads(next(artifacts.glob("report_date=*/devstack-rewrites.json")).read_text())
    assert heavy[0]["rewritten_query"] in {q for group in rewrites.values() for q in group.values()}

    # One digest in the sink, naming the heavy rule with its speedup.
    posts = _posts(devstack, "finops_recording_rules", run.run_id)
    assert len(posts) == 1
    assert heavy[0]["rule_name"] in json.dumps(posts[0]["body"]) and "Recording rules" in posts[0]["body"]["text"]

    # Rerunning the same date replaces the partitions (one file, no duplicate rows, the new run's id).
    run2 = recording_rules_dag.test(logical_date=run.logical_date)
    assert run2.state == "success"
    assert sorted(root.glob("recording_rules/report_date=*/*")) == files
    again = pads.dataset(root / "recording_rules", partitioning="hive").to_table().to_pylist()
    assert len(again) == len({(r["group_key"], r["rule_name"]) for r in again})
    assert {r["run_id"] for r in again} == {run2.run_id}
    assert len(_posts(devstack, "finops_recording_rules", run2.run_id)) == 1
