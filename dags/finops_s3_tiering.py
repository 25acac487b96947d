"""
### finops_s3_tiering — block-aware S3 lifecycle plan for Mimir/Thanos buckets, applied only when asked

Daily, for every bucket under `buckets` in the configuration:

1. **targets** — the configured buckets (one mapped `plan` task each);
2. **plan** — *reads* the bucket, never writes it: its lifecycle configuration, its objects
   (ListObjectsV2 per tenant prefix in parallel, or the bucket's S3 Inventory above
   `workflows.s3_tiering.list_objects_max`), block `meta.json` / bucket index; prices every candidate
   transition with the pricing table and keeps the one that pays off safely per tenant (never
   GLACIER/DEEP_ARCHIVE for online buckets, meta.json and markers kept in STANDARD, no early deletion
   by retention); writes `<bucket>.lifecycle.json` and `<bucket>.plan.json` beside the report;
3. **apply** — a dry run (nothing written) unless the run's param `apply` is true, and then only for
   buckets with `apply: true`: merge with the bucket's other rules (kept exactly), validate, back up the
   current configuration under `report_root`, put, read back and verify. With `rollback_backup` set to
   a backup's URI it restores that backup instead and applies nothing else;
4. **write_report** — the `s3_tiering` Parquet partition (checked by Great Expectations first);
5. **post_digest** — cost, 12-month saving and rule diff per bucket to Slack (`slack_finops`), once
   per run; then fails the run if a bucket could not be planned or applied.

The window is the run's data interval (a manual run uses `workflows.s3_tiering.lookback`); object
ages are taken at its end. How it decides, the safety rules and the rollback command:
`docs/s3-tiering.md`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

DEFAULT_ARGS = {"owner": "traceo-finops", "retries": 2, "retry_delay": timedelta(minutes=2)}


@dag(
    dag_id="finops_s3_tiering",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["finops", "s3", "lifecycle", "mimir", "thanos"],
    doc_md=__doc__,
    params={
        "apply": Param(False, type="boolean",
                       description="Write the planned lifecycle rules to buckets listed with apply: true. "
                                   "False: dry run, nothing is written to any bucket."),
        "rollback_backup": Param("", type="string",
                                 description="URI of a lifecycle backup (see the digest or `python -m "
                                             "traceo_finops.s3tiering backups`) to restore instead of applying."),
        "post_to_slack": Param(True, type="boolean", description="Post the digest to the slack_finops webhook."),
    },
)
def finops_s3_tiering() -> None:
    @task
    def targets() -> list[str]:
        """The configured buckets."""
        from traceo_finops.config import load_config

        return [b.name for b in load_config().buckets]

    @task(map_index_template="{{ task.op_kwargs['bucket'] }}")
    def plan(bucket: str) -> dict:
        """Read one bucket and plan its finops- rules; write the lifecycle JSON beside the report."""
        import pyarrow.fs as pafs

        from traceo_finops.airflow_adapter import report_store, run_info, s3_client, s3_filesystem_options
        from traceo_finops.config import load_config
        from traceo_finops.pricing import load_price_table
        from traceo_finops.s3tiering.workflow import plan_or_error, write_plan_artifacts

        cfg = load_config()
        run = run_info(cfg.workflows.s3_tiering.lookback)
        result = plan_or_error(
            cfg, bucket, run.window.end,
            prices=lambda: load_price_table(cfg.pricing.profile, cfg.pricing.overrides),
            client_for=lambda b: s3_client(b.conn_id),
            inventory_fs=lambda b: pafs.S3FileSystem(**s3_filesystem_options(b.conn_id)))
        if "error" not in result:
            result["artifacts"] = write_plan_artifacts(report_store(cfg), run.window.report_date, result)
            # Every candidate is in <bucket>.plan.json; keep the XCom small.
            result["decisions"] = [{k: v for k, v in d.items() if k != "candidates"} for d in result["decisions"]]
        return result

    @task
    def apply(plans: list[dict], params: dict | None = None) -> list[dict]:
        """Dry run, or apply to allowlisted buckets, or roll one back: as the run's params say."""
        from traceo_finops.airflow_adapter import report_store, run_info, s3_client
        from traceo_finops.config import load_config
        from traceo_finops.s3tiering.workflow import apply_or_rollback

        cfg = load_config()
        run = run_info(cfg.workflows.s3_tiering.lookback)
        p = params or {}
        return apply_or_rollback(cfg, list(plans), apply=bool(p.get("apply")),
                                 rollback_uri=str(p.get("rollback_backup") or "").strip(),
                                 client_for=lambda b: s3_client(b.conn_id), store=report_store(cfg),
                                 report_date=run.window.report_date, run_id=run.run_id)

    @task
    def write_report(plans: list[dict], outcomes: list[dict]) -> dict:
        """Check the rows with Great Expectations and write this run's `s3_tiering` partition."""
        from traceo_finops.airflow_adapter import report_store, run_info
        from traceo_finops.config import load_config
        from traceo_finops.quality import check
        from traceo_finops.s3tiering.dataset import s3_tiering_dataset
        from traceo_finops.s3tiering.recommend import age_band_labels
        from traceo_finops.s3tiering.workflow import report_rows_for

        cfg = load_config()
        run = run_info(cfg.workflows.s3_tiering.lookback)
        dataset = s3_tiering_dataset(age_band_labels(cfg.workflows.s3_tiering.transition_days))
        plans = list(plans)
        table = dataset.table(report_rows_for(plans, outcomes, run.window.start, run.window.end))
        check(dataset.name, table, dataset.expectations)
        written = report_store(cfg).write_partition(
            dataset, run.window.report_date, table,
            metadata={"dag_id": run.dag_id, "run_id": run.run_id, **run.window.as_dict()})
        errors = [{"bucket": p["bucket"], "error": p["error"]} for p in plans if "error" in p]
        errors += [{"bucket": o["bucket"], "error": o["error"]} for o in outcomes if o.get("error")]
        artifacts = [uri for p in plans for uri in p.get("artifacts", []) if uri.endswith(".lifecycle.json")]
        return {**written.as_dict(), "errors": errors, "artifacts": artifacts}

    @task
    def post_digest(written: dict, outcomes: list[dict], params: dict | None = None) -> bool:
        """Savings and rule diffs to Slack once per run; then fail the run if any bucket failed."""
        from datetime import date

        from traceo_finops.airflow_adapter import report_store, run_info, slack_poster
        from traceo_finops.config import load_config
        from traceo_finops.s3tiering.dataset import DATASET_NAME, tiering_digest
        from traceo_finops.s3tiering.errors import S3TieringError
        from traceo_finops.slack import delivery_key, post_once

        cfg = load_config()
        posted = False
        if cfg.slack.enabled and (params or {}).get("post_to_slack", True):
            run = run_info(cfg.workflows.s3_tiering.lookback)
            store = report_store(cfg)
            report_date = date.fromisoformat(written["report_date"])
            rows = store.read_partition(DATASET_NAME, report_date).to_pylist()
            digest = tiering_digest(written["report_date"], rows, outcomes, written["errors"], written["uri"],
                                    written["artifacts"])
            posted = post_once(store, report_date, delivery_key(run.dag_id, run.run_id, DATASET_NAME), digest,
                               slack_poster(cfg.slack.conn_id))
        if written["errors"]:
            raise S3TieringError(", ".join(sorted({e["bucket"] for e in written["errors"]})),
                                 "failed:\n" + "\n".join(f"{e['bucket']}: {e['error']}" for e in written["errors"]))
        return posted

    plans = plan.expand(bucket=targets())
    outcomes = apply(plans)
    post_digest(write_report(plans, outcomes), outcomes)


finops_s3_tiering()
