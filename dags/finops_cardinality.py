"""
### finops_cardinality — which series you pay for, who uses them, and what is safe to cut

Daily, for every Prometheus source and Mimir tenant in the configuration (one mapped task each):

1. **plan** — the sources/tenants to audit;
2. **audit** — count active series per metric and distinct values per label on the server
   (`/api/v1/status/tsdb`, chunked PromQL counts, label-value index lookups; Mimir's
   cardinality API), read who uses each metric and label (rules API / Mimir ruler, rule files,
   Grafana dashboards, the query log of the run's window — all parsed with a real PromQL
   parser), classify every metric as used / partially used / unused, and suggest only changes
   that leave every rule, alert, dashboard and logged query result as it is — with the series
   left after each change counted by the server;
3. **config_audit** — flags and loaded config: WAL compression, retention, scrape intervals,
   HA pairs without deduplication, each finding with its estimated saving;
4. **write_reports** — price everything, check each dataset with Great Expectations and write
   `cardinality`, `cardinality_labels`, `showback`, `usage_errors` and `config_findings` for this
   run's report date (a rerun replaces them), plus ready-to-apply `metric_relabel_configs`
   (Prometheus) or runtime `overrides` (Mimir) YAML beside them;
5. **post_digest** — the savings and top offenders to Slack (`slack_finops`), once per run.

The window is the run's data interval; a manual run uses `workflows.cardinality.lookback`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

DEFAULT_ARGS = {"owner": "traceo-finops", "retries": 2, "retry_delay": timedelta(minutes=2)}


@dag(
    dag_id="finops_cardinality",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["finops", "cardinality", "prometheus", "mimir"],
    doc_md=__doc__,
    params={
        "post_to_slack": Param(True, type="boolean", description="Post the digest to the slack_finops webhook."),
    },
)
def finops_cardinality() -> None:
    @task
    def plan() -> list[dict[str, str]]:
        """One target per source and Mimir tenant."""
        from traceo_finops.config import load_config

        cfg = load_config()
        return [{"source": s.name, "conn_id": s.conn_id, "flavor": s.flavor.value, "tenant": t}
                for s in cfg.sources for t in (s.tenants or [""])]

    @task(map_index_template="{{ task.op_kwargs['target']['source'] }} {{ task.op_kwargs['target']['tenant'] }}")
    def audit(target: dict[str, str]) -> dict:
        """Census, usage, verdicts and showback of one source/tenant."""
        from traceo_finops.airflow_adapter import prometheus_spec, run_info
        from traceo_finops.cardinality.workflow import audit_source
        from traceo_finops.config import PROJECT_ROOT, load_config
        from traceo_finops.pricing import load_price_table
        from traceo_finops.prometheus import PrometheusClient

        cfg = load_config()
        settings = cfg.workflows.cardinality
        run = run_info(settings.lookback)
        prices = load_price_table(cfg.pricing.profile, cfg.pricing.overrides)
        spec = prometheus_spec(target["conn_id"], target["source"], target["tenant"] or None, target["flavor"])
        with PrometheusClient(spec) as client:
            return audit_source(client, target["source"], target["tenant"], run.window.start, run.window.end,
                                settings, prices.series_month_per_1k("self_hosted"), PROJECT_ROOT)

    @task(map_index_template="{{ task.op_kwargs['target']['source'] }} {{ task.op_kwargs['target']['tenant'] }}")
    def config_audit(target: dict[str, str]) -> list[dict]:
        """Configuration findings of one source/tenant, with estimated savings."""
        from traceo_finops.airflow_adapter import prometheus_spec, run_info
        from traceo_finops.cardinality.config_audit import audit_config_rows
        from traceo_finops.config import load_config
        from traceo_finops.pricing import load_price_table
        from traceo_finops.prometheus import PrometheusClient

        cfg = load_config()
        run = run_info(cfg.workflows.cardinality.lookback)
        prices = load_price_table(cfg.pricing.profile, cfg.pricing.overrides)
        spec = prometheus_spec(target["conn_id"], target["source"], target["tenant"] or None, target["flavor"])
        with PrometheusClient(spec) as client:
            return audit_config_rows(client, target["source"], target["tenant"], run.window.end, prices,
                                     window_start=run.window.start)

    @task
    def write_reports(audits: list[dict], findings: list[list[dict]]) -> dict:
        """Check and write every dataset of this run's report date, and the relabel YAML beside them."""
        from traceo_finops.airflow_adapter import report_store, run_info
        from traceo_finops.cardinality.dataset import write_cardinality_reports
        from traceo_finops.config import load_config

        cfg = load_config()
        run = run_info(cfg.workflows.cardinality.lookback)
        return write_cardinality_reports(report_store(cfg), run.window, list(audits),
                                         [row for rows in findings for row in rows],
                                         metadata={"dag_id": run.dag_id, "run_id": run.run_id})

    @task
    def post_digest(written: dict, params: dict | None = None) -> bool:
        """Savings and top offenders to Slack, once per run even when the task is retried."""
        from datetime import date

        from traceo_finops.airflow_adapter import report_store, run_info, slack_poster
        from traceo_finops.cardinality.dataset import CARDINALITY, SHOWBACK, USAGE_ERRORS, cardinality_digest
        from traceo_finops.config import load_config
        from traceo_finops.slack import delivery_key, post_once

        cfg = load_config()
        if not (cfg.slack.enabled and (params or {}).get("post_to_slack", True)):
            return False
        run = run_info(cfg.workflows.cardinality.lookback)
        store = report_store(cfg)
        day = date.fromisoformat(written["report_date"])
        digest = cardinality_digest(store.read_partition(CARDINALITY.name, day).to_pylist(),
                                    store.read_partition(SHOWBACK.name, day).to_pylist(),
                                    written["cardinality"]["uri"], written["report_date"],
                                    cfg.workflows.cardinality.top_n_in_digest,
                                    store.read_partition(USAGE_ERRORS.name, day).num_rows)
        return post_once(store, day, delivery_key(run.dag_id, run.run_id, CARDINALITY.name), digest,
                         slack_poster(cfg.slack.conn_id))

    targets = plan()
    post_digest(write_reports(audit.expand(target=targets), config_audit.expand(target=targets)))


finops_cardinality()
