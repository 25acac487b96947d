"""
### finops_recording_rules — recording rules for the queries that cost most, proven equal and measured faster

Daily, for every Prometheus source and Mimir tenant with a query log in the configuration:

1. **targets** — the sources/tenants whose query log (`workflows.recording_rules.query_log` /
   `mimir_query_stats`, local files or S3 objects, gzip'd and rotated) is configured;
2. **mine** — one mapped task each: stream the log's lines of the run's window (rule evaluations kept apart:
   they are not user queries), group the queries by their canonical PromQL with Grafana's per-refresh parts
   folded, rank the groups by evaluation time, and for the costliest ones suggest the aggregation over
   `rate`/`increase` worth recording, named `level:metric:operations`, unless a rule of the server already
   records it; then prove each on real servers — `promtool check rules`, the rule's history written with
   promtool into a private Prometheus, the rewritten query's answer equal to the original's over the same
   range, the speedup measured, the series it adds counted and priced;
3. **write_report** — check and publish `recording_rules` and `recording_rules_inputs` for this run's report
   date as one committed set (a rerun replaces it), with the rule file, the Mimir ruler namespace file and the
   rewritten queries beside them;
4. **post_digest** — the suggested rules with speedup and cost to Slack (`slack_finops`), once per run;
5. **verdict** — fails the run, without retries, if a source/tenant failed.

The window is the run's data interval; a manual run uses `workflows.recording_rules.lookback`.
How it decides and proves: `docs/recording-rules.md`.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from traceo_finops import airflow_adapter as kit

WORKFLOW = "recording_rules"
DATASETS = ("recording_rules", "recording_rules_inputs")


@dag(schedule=kit.daily(), **kit.workflow_dag("finops_recording_rules", __doc__, tags=["recording-rules", "promql"]))
def finops_recording_rules() -> None:
    @task
    def targets() -> list[dict]:
        """One target per source and Mimir tenant with a query log."""
        return kit.step(WORKFLOW, "targets")

    @task(map_index_template="{{ task.op_kwargs['target']['label'] }}")
    def mine(target: dict) -> dict:
        """Read, group, suggest and prove for one source/tenant."""
        return kit.target_step(WORKFLOW, "mine", target)

    @task(outlets=kit.assets(*DATASETS, "run_targets", "quality_checks"))
    def write_report(mined: list[dict]) -> dict:
        """Check and publish both datasets of this run's report date, and the rule files beside them."""
        return kit.publish_step(WORKFLOW, list(mined))

    written = write_report(mine.expand(target=targets()))
    kit.digest_and_verdict(WORKFLOW, written)


finops_recording_rules()
