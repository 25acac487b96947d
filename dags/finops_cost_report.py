"""
### finops_cost_report — what the whole observability stack costs, and what to do next

Weekly (Monday 00:00 UTC, covering the week before; a manual run covers `workflows.cost_report.lookback`
up to its logical date). It reads whatever the other finops DAGs committed, any subset of them:

1. **targets** — one target per Prometheus source and Mimir tenant;
2. **storage** — one target's storage stats (mapped): TSDB blocks/WAL/head bytes, bytes per sample,
   retention, ingestion rate, the disk its retention needs (Mimir tenants: Mimir's own metrics);
3. **write_report** — reads every upstream dataset's committed partition (any subset), builds
   `storage`, `cost_summary` (now, after the proposed actions, saving, week-over-week), `actions`
   (ranked), `cost_anomalies` (robust z-score and IsolationForest) and `cost_inputs`, checks each
   with Great Expectations and publishes them as one set (a failed check publishes nothing);
4. **post_digest** — the cost report to Slack (`slack_finops`), once per run;
5. **verdict** — fails the run, without retries, if a source's storage stats failed.

See `docs/cost-report.md`.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from traceo_finops import airflow_adapter as kit

WORKFLOW = "cost_report"
OUTPUTS = ("storage", "cost_summary", "actions", "cost_anomalies", "cost_inputs", "run_targets", "quality_checks")


@dag(schedule=kit.weekly(), **kit.workflow_dag("finops_cost_report", __doc__, tags=["cost", "report"]))
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

    written = write_report(storage.expand(target=targets()))
    kit.digest_and_verdict(WORKFLOW, written)


finops_cost_report()
