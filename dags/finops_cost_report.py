"""
### finops_cost_report — what the whole observability stack costs, and what to do next

Weekly (Monday 00:00 UTC, covering the week before) **and** whenever another finops DAG publishes one of
the datasets it reads (Airflow asset scheduling, `AssetOrTimeSchedule`: a fresh cardinality or tiering
report updates it). A manual or asset-triggered run covers `workflows.cost_report.lookback` up to the
moment it was triggered. It reads whatever the other finops DAGs committed, any subset of them:

1. **targets** — one target per Prometheus source and Mimir tenant;
2. **storage** — one target's storage stats (mapped): TSDB blocks/WAL/head bytes, bytes per sample,
   retention, ingestion rate, the disk its retention needs (Mimir tenants: Mimir's own metrics);
3. **write_report** — reads every upstream dataset's committed partition (any subset), builds
   `storage`, `cost_summary` (now, after the proposed actions, saving, week-over-week), `actions`
   (ranked), `cost_anomalies` (robust z-score and IsolationForest), `cost_inputs` and `cost_trend`
   (the page's chart), checks each with Great Expectations and publishes them as one set, with a cost
   chart (PNG) and the ranked actions (CSV) beside it (a failed check publishes nothing, keeps the
   previous report and alerts Slack);
4. **post_digest** — the cost report to Slack (`slack_finops`), once per run;
5. **upload_files** — with a bot-token connection, the chart and the CSV into the channel, once per run
   (a webhook cannot upload files; the digest says so);
6. **verdict** — fails the run, without retries, if a source's storage stats failed.

See `docs/cost-report.md`.
"""

from __future__ import annotations

from airflow.sdk import AssetAny, AssetOrTimeSchedule, dag, task

from traceo_finops import airflow_adapter as kit

WORKFLOW = "cost_report"
OUTPUTS = ("storage", "cost_summary", "actions", "cost_anomalies", "cost_inputs", "cost_trend", "run_targets",
           "quality_checks")
# The other DAGs' datasets this report reads: any one of them updated triggers a run. Never the kit's own
# run_targets/quality_checks, which this DAG publishes too (it would trigger itself).
UPSTREAM = ("cardinality", "showback", "config_findings", "rightsizing", "recording_rules", "s3_tiering")
SCHEDULE = AssetOrTimeSchedule(timetable=kit.weekly(), assets=AssetAny(*kit.assets(*UPSTREAM)))


@dag(schedule=SCHEDULE, **kit.workflow_dag("finops_cost_report", __doc__, tags=["cost", "report"]))
def finops_cost_report() -> None:
    @task
    def targets() -> list[dict]:
        return kit.step(WORKFLOW, "targets")

    @task(map_index_template="{{ task.op_kwargs['target']['label'] }}")
    def storage(target: dict) -> dict:
        return kit.target_step(WORKFLOW, "storage", target)

    @task(outlets=kit.assets(*OUTPUTS))
    def write_report(stats: list[dict]) -> dict:
        return kit.publish_step(WORKFLOW, list(stats))

    @task
    def upload_files(written: dict) -> bool:
        """The chart and the actions CSV to Slack with a bot token, once per run."""
        return kit.step(WORKFLOW, "upload_files", written)

    written = write_report(storage.expand(target=targets()))
    kit.digest_and_verdict(WORKFLOW, written) >> upload_files(written)


finops_cost_report()
