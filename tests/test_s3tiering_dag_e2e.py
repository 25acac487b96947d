"""finops_s3_tiering end to end: real Airflow (dag.test on SQLite), a real moto_server, a real Slack sink.

Runs on a private moto and Slack sink rather than the shared devstack because it writes lifecycle
configurations. Three runs of the DAG: a dry run (nothing written to any bucket), an apply run
(only the allowlisted bucket is written; foreign rules kept exactly; the size filters checked on
the request sent, since moto drops them), and a rollback run restoring the apply's backup.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from devstack import slack_sink
from tests.support.dags import load_dag
from tests.support.s3 import aws_conn_env, client, lifecycle_rules, private_s3, record_requests
from tests.support.slack import webhook_conn
from traceo_finops import airflow_adapter

pytestmark = [pytest.mark.dag, pytest.mark.integration]


@pytest.fixture
def env(finops_config: Path, sink: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    moto = private_s3()
    cfg = yaml.safe_load(finops_config.read_text())
    cfg["buckets"] = [
        {"name": "mimir-blocks", "layout": "mimir", "role": "online", "apply": True,
         "retention_overrides": {"team-b": "365d"}, "verify_size_filters": False},
        {"name": "thanos-blocks", "layout": "thanos", "role": "online", "apply": False, "retention": "365d"},
        {"name": "misc-logs", "layout": "generic", "apply": False},
    ]
    finops_config.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_conn_env(moto["endpoint_url"]))
    webhook_conn(monkeypatch, "slack_finops", sink, slack_sink.WEBHOOK_PATH.lstrip("/"))
    # Record every write any task sends: dag.test() runs the tasks in this process.
    sent: list[dict[str, Any]] = []
    real = airflow_adapter.s3_client

    def recording_client(conn_id: str) -> Any:
        c = real(conn_id)
        sent_by_this = record_requests(c)
        sent.append({"requests": sent_by_this})
        return c

    monkeypatch.setattr(airflow_adapter, "s3_client", recording_client)
    slack_sink.reset(sink)
    return {"moto": moto, "s3": client(moto["endpoint_url"]), "sent": sent, "sink": sink,
            "reports": finops_config.parent / "reports"}


@pytest.fixture
def tiering_dag(airflow_db: Path) -> Any:
    return load_dag("finops_s3_tiering")


def _writes(env: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for c in env["sent"] for r in c["requests"]]


def _report(env: dict[str, Any]) -> list[dict[str, Any]]:
    (part,) = sorted(env["reports"].glob("s3_tiering/report_date=*/part-0.parquet"))
    return pq.read_table(part).to_pylist()


def test_dry_run_apply_and_rollback(env: dict[str, Any], tiering_dag: Any) -> None:
    s3, truth = env["s3"], env["moto"]["truth"]["buckets"]
    try:
        # 1. Dry run (the default): a full report and lifecycle JSON, nothing written to any bucket.
        run = tiering_dag.test()
        assert run.state == "success"
        assert len(env["sent"]) >= 3  # the recorder sat on every bucket's client...
        assert _writes(env) == []  # ...and saw no write at all
        assert lifecycle_rules(s3, "mimir-blocks") == truth["mimir-blocks"]["lifecycle_rules"]
        assert lifecycle_rules(s3, "thanos-blocks") is None
        rows = _report(env)
        assert {r["bucket"] for r in rows} == {"mimir-blocks", "thanos-blocks", "misc-logs"}
        assert sum(r["objects"] for r in rows if r["bucket"] == "mimir-blocks") == truth["mimir-blocks"]["totals"][
            "count"]
        assert not any(r["applied"] for r in rows)
        proposed = {r["proposed_rule_id"] for r in rows if r["bucket"] == "mimir-blocks"} - {None}
        assert proposed and all(p.startswith("finops-tier-") for p in proposed)
        assert {r["source"] for r in rows} == {"list"}  # no inventory configured: listed
        (lifecycle_json,) = env["reports"].glob("_artifacts/s3_tiering/report_date=*/mimir-blocks.lifecycle.json")
        request = json.loads(lifecycle_json.read_text())  # what `aws s3api put-bucket-lifecycle-configuration
        assert request["Bucket"] == "mimir-blocks"        # --cli-input-json file://…` takes
        assert request["TransitionDefaultMinimumObjectSize"] == "all_storage_classes_128K"
        planned = request["LifecycleConfiguration"]["Rules"]
        assert planned[:2] == truth["mimir-blocks"]["lifecycle_rules"]  # the JSON to put keeps the foreign rules
        assert {r["ID"] for r in planned[2:]} >= proposed
        posts = [r for r in slack_sink.received(env["sink"]) if r.get("delivered")]
        assert len(posts) == 1 and "Nothing was written to any bucket (dry run)" in json.dumps(posts[0]["body"])

        # 2. Apply: only mimir-blocks (apply: true) is written.
        run = tiering_dag.test(run_conf={"apply": True})
        assert run.state == "success"
        puts = [r for r in _writes(env) if r["operation"] == "PutBucketLifecycleConfiguration"]
        assert len(puts) == 1 and len(_writes(env)) == 1
        # moto drops ObjectSizeGreaterThan and always reports all_storage_classes_128K: check the request sent.
        assert puts[0]["headers"]["x-amz-transition-default-minimum-object-size"] == "all_storage_classes_128K"
        for rule_id in proposed:
            rule_xml = re.search(rf"<Rule><ID>{rule_id}</ID>.*?</Rule>", puts[0]["body"]).group(0)
            assert "<ObjectSizeGreaterThan>131071</ObjectSizeGreaterThan>" in rule_xml
        after = lifecycle_rules(s3, "mimir-blocks")
        assert [r for r in after if not r["ID"].startswith("finops-")] == truth["mimir-blocks"]["lifecycle_rules"]
        assert {r["ID"] for r in after if r["ID"].startswith("finops-")} >= proposed
        assert lifecycle_rules(s3, "thanos-blocks") is None
        rows = _report(env)
        assert all(r["applied"] for r in rows if r["bucket"] == "mimir-blocks" and r["proposed_rule_id"])
        assert not any(r["applied"] for r in rows if r["bucket"] != "mimir-blocks")
        (backup,) = env["reports"].glob("_artifacts/s3_tiering_backups/report_date=*/mimir-blocks.*.json")
        assert json.loads(backup.read_text())["Rules"] == truth["mimir-blocks"]["lifecycle_rules"]
        digest = json.dumps(slack_sink.received(env["sink"])[-1]["body"])
        assert "Written: mimir-blocks" in digest and "+finops-tier-" in digest
        assert "Not written: misc-logs, thanos-blocks not allowlisted" in digest

        # 3. Rollback through the DAG param: the bucket holds exactly what it held before.
        run = tiering_dag.test(run_conf={"rollback_backup": str(backup)})
        assert run.state == "success"
        assert lifecycle_rules(s3, "mimir-blocks") == truth["mimir-blocks"]["lifecycle_rules"]
        assert [r["operation"] for r in _writes(env)] == ["PutBucketLifecycleConfiguration"] * 2
    finally:
        from tests.support.s3 import restore_lifecycles

        restore_lifecycles(s3, env["moto"]["truth"])
