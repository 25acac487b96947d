"""
### finops_cardinality — what your active series are and what they cost

Daily, for every Prometheus source and Mimir tenant in the configuration:

1. **plan** — list the sources/tenants to audit (one mapped task each);
2. **collect** — count active series per metric on the server (`/api/v1/status/tsdb` and a
   PromQL `count by (__name__)`), never listing every series;
3. **write_report** — price them from the pricing table, check the rows with Great
   Expectations and write the `cardinality` Parquet partition of this run's report date
   (rerunning replaces it; a report that fails its checks is not written);
4. **post_digest** — post the top metrics to Slack (`slack_finops`), once per run.

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
    def collect(target: dict[str, str]) -> dict:
        """Series per metric of one source/tenant."""
        from traceo_finops.airflow_adapter import prometheus_spec, run_info
        from traceo_finops.cardinality.collect import collect_series_by_metric
        from traceo_finops.config import load_config
        from traceo_finops.prometheus import PrometheusClient

        run = run_info(load_config().workflows.cardinality.lookback)
        spec = prometheus_spec(target["conn_id"], target["source"], target["tenant"] or None, target["flavor"])
        with PrometheusClient(spec) as client:
            snapshot = collect_series_by_metric(client, target["source"], run.window.end, target["tenant"])
        return snapshot.as_dict()

    @task
    def write_report(snapshots: list[dict]) -> dict:
        """Price the series and write this run's `cardinality` partition."""
        from traceo_finops.airflow_adapter import report_store, run_info
        from traceo_finops.cardinality.collect import MetricSeries, SourceSnapshot
        from traceo_finops.cardinality.report import CARDINALITY, cardinality_rows
        from traceo_finops.config import load_config
        from traceo_finops.pricing import load_price_table
        from traceo_finops.quality import check

        cfg = load_config()
        run = run_info(cfg.workflows.cardinality.lookback)
        prices = load_price_table(cfg.pricing.profile, cfg.pricing.overrides)
        snaps = [SourceSnapshot(s["source"], s["tenant"], s["head_series"],
                                [MetricSeries(**m) for m in s["metrics"]]) for s in snapshots]
        rows = cardinality_rows(snaps, prices.series_month_per_1k("self_hosted"), run.window.start, run.window.end)
        table = CARDINALITY.table(rows)
        check(CARDINALITY.name, table, CARDINALITY.expectations)
        written = report_store(cfg).write_partition(
            CARDINALITY, run.window.report_date, table,
            metadata={"dag_id": run.dag_id, "run_id": run.run_id, **run.window.as_dict()})
        return {**written.as_dict(), "window": run.window.as_dict()}

    @task
    def post_digest(written: dict, params: dict | None = None) -> bool:
        """Top metrics and totals to Slack, once per run even when the task is retried."""
        from datetime import date

        from traceo_finops.airflow_adapter import report_store, run_info, slack_poster
        from traceo_finops.cardinality.report import CARDINALITY, cardinality_digest
        from traceo_finops.config import load_config
        from traceo_finops.slack import delivery_key, post_once

        cfg = load_config()
        if not (cfg.slack.enabled and (params or {}).get("post_to_slack", True)):
            return False
        run = run_info(cfg.workflows.cardinality.lookback)
        store = report_store(cfg)
        report_date = date.fromisoformat(written["report_date"])
        rows = store.read_partition(CARDINALITY.name, report_date).to_pylist()
        digest = cardinality_digest(rows, written["uri"], written["report_date"],
                                    cfg.workflows.cardinality.top_n_in_digest)
        return post_once(store, report_date, delivery_key(run.dag_id, run.run_id, CARDINALITY.name), digest,
                         slack_poster(cfg.slack.conn_id))

    post_digest(write_report(collect.expand(target=plan())))


finops_cardinality()
