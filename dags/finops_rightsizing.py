"""
### finops_rightsizing — container requests sized from Prometheus/Mimir alone, priced in dollars

Daily, for every Prometheus source and Mimir tenant in the configuration, over the last
`workflows.rightsizing.history` (default 14 days) up to the end of the run's data interval:

1. **plan** — check that kube-state-metrics and cAdvisor are there (a missing metric fails with its
   name), detect the scrape interval, choose the query resolution (≤ 11,000 points per series) and cut
   the namespaces into batches that stay under the server's sample limit;
2. **collect** — one mapped task per namespace batch: kube-state-metrics discovery (pod → ReplicaSet →
   Deployment / StatefulSet / DaemonSet / Job / CronJob / bare pod, requests, limits, restarts, OOM
   kills, replicas, HPAs) and usage computed **on the server** (CPU p50/p90/p95/p99/max of the rate,
   working-set peak and p99, sample counts) — never raw samples. A batch the server times out on is
   split in two and retried;
3. **size_stack** — the observability stack's own processes (Prometheus, Mimir…) that do not run on
   Kubernetes, from `process_cpu_seconds_total` and Go memory stats;
4. **write_report** — recommend (percentile × margin for CPU, peak × margin or last OOM limit × 1.2 for
   memory), a VPA-style confidence and a status per container, monthly dollars from the pricing table;
   check with Great Expectations and write the `rightsizing` partition, with kubectl strategic-merge
   patches (and optional VPA objects) beside it;
5. **post_digest** — totals and the biggest savings to Slack (`slack_finops`), once per run.

Params `history` (e.g. `4d`) and `end` (an ISO time) size a different window than the scheduled one.
How it decides, and the patches: `docs/rightsizing.md`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

DEFAULT_ARGS = {"owner": "traceo-finops", "retries": 2, "retry_delay": timedelta(minutes=2)}


@dag(
    dag_id="finops_rightsizing",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["finops", "rightsizing", "kubernetes", "prometheus", "mimir"],
    doc_md=__doc__,
    params={
        "history": Param("", type="string",
                         description="Usage history to size from, e.g. 4d; empty: workflows.rightsizing.history."),
        "end": Param("", type="string",
                     description="End of the history as an ISO time with zone; empty: the run's data interval end."),
        "post_to_slack": Param(True, type="boolean", description="Post the digest to the slack_finops webhook."),
    },
)
def finops_rightsizing() -> None:
    @task
    def plan(params: dict | None = None) -> list[dict]:
        """Namespace batches of every source/tenant."""
        from traceo_finops.airflow_adapter import prometheus_spec, run_info
        from traceo_finops.config import load_config
        from traceo_finops.rightsizing.workflow import plan_sources, sizing_window

        cfg = load_config()
        history = cfg.workflows.rightsizing.history
        window = sizing_window(run_info(history).window.end, history, params)
        return plan_sources(cfg, window, lambda t: prometheus_spec(t["conn_id"], t["source"], t["tenant"] or None,
                                                                   t["flavor"]))

    @task(map_index_template="{{ task.op_kwargs['batch']['source'] }} "
                             "{{ task.op_kwargs['batch']['batch']['namespaces'] | join(',') | truncate(60) }}")
    def collect(batch: dict) -> dict:
        """Discovery and server-side usage statistics of one namespace batch."""
        from traceo_finops.airflow_adapter import prometheus_spec
        from traceo_finops.config import load_config
        from traceo_finops.rightsizing.workflow import collect as collect_one

        return collect_one(load_config(), batch, lambda t: prometheus_spec(t["conn_id"], t["source"],
                                                                           t["tenant"] or None, t["flavor"]))

    @task
    def size_stack(batches: list[dict], params: dict | None = None) -> list[dict]:
        """The observability stack's own processes (not on Kubernetes)."""
        from traceo_finops.airflow_adapter import prometheus_spec, run_info
        from traceo_finops.config import load_config
        from traceo_finops.rightsizing.workflow import collect_stack_all, sizing_window

        cfg = load_config()
        history = cfg.workflows.rightsizing.history
        window = sizing_window(run_info(history).window.end, history, params)
        batches = list(batches)
        return collect_stack_all(cfg, window, lambda t: prometheus_spec(t["conn_id"], t["source"],
                                                                        t["tenant"] or None, t["flavor"]),
                                 batches[0]["resolution"] if batches else None)

    @task
    def write_report(batches: list[dict], pieces: list[dict], stack: list[dict], params: dict | None = None) -> dict:
        """Recommend, price, check and write the `rightsizing` partition and the patches beside it."""
        from traceo_finops.airflow_adapter import report_store, run_info
        from traceo_finops.config import load_config
        from traceo_finops.pricing import load_price_table
        from traceo_finops.quality import check
        from traceo_finops.rightsizing.dataset import RIGHTSIZING
        from traceo_finops.rightsizing.recommend import Prices
        from traceo_finops.rightsizing.workflow import build_report, sizing_window, summary

        cfg = load_config()
        history = cfg.workflows.rightsizing.history
        run = run_info(history)
        window = sizing_window(run.window.end, history, params)
        batches, pieces, stack = list(batches), list(pieces), list(stack)
        resolution = (batches[0] if batches else stack[0])["resolution"]
        prices = Prices.from_table(load_price_table(cfg.pricing.profile, cfg.pricing.overrides))
        rows, files = build_report(cfg, pieces + stack, window, prices, resolution)
        table = RIGHTSIZING.table(rows)
        check(RIGHTSIZING.name, table, RIGHTSIZING.expectations)
        store = report_store(cfg)
        written = store.write_partition(RIGHTSIZING, window.report_date, table, metadata={
            "dag_id": run.dag_id, "run_id": run.run_id, **window.as_dict(), "resolution_seconds": resolution["step"]})
        artifacts = [store.write_artifact(RIGHTSIZING.name, window.report_date, name, content)
                     for name, content in sorted(files.items())]
        return {**written.as_dict(), "artifacts": artifacts, "summary": summary(pieces)}

    @task
    def post_digest(written: dict, params: dict | None = None) -> bool:
        """Totals and the biggest savings to Slack, once per run even when the task is retried."""
        import posixpath
        from datetime import date

        from traceo_finops.airflow_adapter import report_store, run_info, slack_poster
        from traceo_finops.config import load_config
        from traceo_finops.rightsizing.dataset import RIGHTSIZING, digest
        from traceo_finops.slack import delivery_key, post_once

        cfg = load_config()
        if not (cfg.slack.enabled and (params or {}).get("post_to_slack", True)):
            return False
        run = run_info(cfg.workflows.rightsizing.history)
        store = report_store(cfg)
        report_date = date.fromisoformat(written["report_date"])
        rows = store.read_partition(RIGHTSIZING.name, report_date).to_pylist()
        folder = posixpath.dirname(written["artifacts"][0]) if written["artifacts"] else ""
        message = digest(rows, written["uri"], written["report_date"], cfg.workflows.rightsizing.top_n_in_digest,
                         folder)
        return post_once(store, report_date, delivery_key(run.dag_id, run.run_id, RIGHTSIZING.name), message,
                         slack_poster(cfg.slack.conn_id))

    batches = plan()
    pieces = collect.expand(batch=batches)
    post_digest(write_report(batches, pieces, size_stack(batches)))


finops_rightsizing()
