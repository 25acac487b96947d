"""
### finops_cardinality — which series you pay for, who uses them, and what is safe to cut

Daily, for every Prometheus source and Mimir tenant in the configuration (one mapped task each):

1. **targets** — the sources/tenants to audit (one mapped task each below);
2. **audit** — count active series per metric and distinct values per label on the server
   (`/api/v1/status/tsdb`, chunked PromQL counts, label-value index lookups; Mimir's
   cardinality API with the source's `count_method`, `inmemory` or `active`), read who uses
   each metric and label (rules API / Mimir ruler, rule files, Grafana dashboards, the query
   log of the run's window — all parsed with a real PromQL parser), classify every metric as
   used / partially used / unused, and suggest only changes that leave every rule, alert,
   dashboard and logged query result as it is — with the series left after each change
   counted by the server;
3. **config_audit** — flags and loaded config: WAL compression, retention, scrape intervals,
   HA pairs without deduplication, each finding with its estimated saving;
4. **write_reports** — price everything, check each dataset with Great Expectations and publish
   `cardinality`, `cardinality_labels`, `showback`, `usage_errors` and `config_findings` for this
   run's report date as one committed set (a rerun replaces it), plus ready-to-apply
   `metric_relabel_configs` (Prometheus) or runtime `overrides` (Mimir) YAML beside them;
5. **post_digest** — the savings and top offenders to Slack (`slack_finops`), once per run;
6. **verdict** — fails the run, without retries, if a source/tenant failed (the others are reported,
   and `run_targets` says which failed and why).

The window is the run's data interval (daily, midnight to midnight UTC); a manual run uses
`workflows.cardinality.lookback`.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from traceo_finops import airflow_adapter as kit

DATASETS = ("cardinality", "cardinality_labels", "showback", "usage_errors", "config_findings")
TARGET = "{{ task.op_kwargs['target']['label'] }}"


@dag(schedule=kit.daily(), **kit.workflow_dag("finops_cardinality", __doc__, tags=["cardinality", "mimir"]))
def finops_cardinality() -> None:
    @task
    def targets() -> list[dict]:
        """One target per source and Mimir tenant."""
        return kit.step("cardinality", "targets")

    @task(map_index_template=TARGET)
    def audit(target: dict) -> dict:
        """Census, usage, verdicts and showback of one source/tenant."""
        return kit.target_step("cardinality", "audit", target)

    @task(map_index_template=TARGET)
    def config_audit(target: dict) -> dict:
        """Configuration findings of one source/tenant, with estimated savings."""
        return kit.target_step("cardinality", "config_audit", target)

    @task(outlets=kit.assets(*DATASETS, "run_targets", "quality_checks"))
    def write_reports(audits: list[dict], findings: list[dict]) -> dict:
        """Check and publish every dataset of this run's report date, and the relabel YAML beside them."""
        return kit.publish_step("cardinality", list(audits), list(findings))

    each = targets()
    written = write_reports(audit.expand(target=each), config_audit.expand(target=each))
    kit.digest_and_verdict("cardinality", written)


finops_cardinality()
