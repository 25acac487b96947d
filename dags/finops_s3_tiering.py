"""
### finops_s3_tiering — block-aware S3 lifecycle plan for Mimir/Thanos buckets, applied only when asked

Daily, for every bucket under `buckets` in the configuration:

1. **targets** — the configured buckets (one mapped `plan` task each);
2. **plan** — *reads* the bucket, never writes it: its lifecycle configuration, its objects (the
   bucket's S3 Inventory when one is configured and fresh, else ListObjectsV2 per tenant prefix in
   parallel), block `meta.json` / bucket index (Mimir versions 1 and 2); prices every candidate
   transition with the pricing table and keeps the one that pays off safely per tenant (never
   GLACIER/DEEP_ARCHIVE for online buckets, nor Intelligent-Tiering with an archive tier opted in,
   meta.json and markers kept in STANDARD, no early deletion by retention). A bucket that cannot be
   read is that bucket's recorded error; the others go on;
3. **apply** — a dry run (nothing written) unless the run's param `apply` is true, and then only for
   buckets with `apply: true`: merge with the bucket's other rules (kept exactly), validate, back up the
   current configuration under `report_root`, put, read back and verify. With `rollback_backup` set to
   a backup's URI it restores that backup instead and applies nothing else;
4. **write_report** — the `s3_tiering` partition (checked by Great Expectations first), with
   `<bucket>.lifecycle.json` (the exact put request, for `aws s3api put-bucket-lifecycle-configuration
   --cli-input-json`) and `<bucket>.plan.json` beside it, published as one set;
5. **post_digest** — cost, 12-month saving and rule diff per bucket to Slack (`slack_finops`), and what
   was written or why not, once per run;
6. **verdict** — fails the run, without retries, if a bucket could not be planned or applied (its error
   is in `run_targets` and the digest).

The window is the run's data interval (daily; a manual run uses `workflows.s3_tiering.lookback`
up to its logical date); object ages are taken at its end. How it decides, the safety rules and the rollback command:
`docs/s3-tiering.md`.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from traceo_finops import airflow_adapter as kit

PARAMS = {
    "apply": Param(False, type="boolean", description="Write the planned lifecycle rules to buckets listed with "
                                                      "apply: true. False: dry run, nothing is written to any bucket."),
    "rollback_backup": Param("", type="string", description="URI of a lifecycle backup (see the digest or `python -m "
                                                            "traceo_finops.s3tiering backups`) to restore instead."),
}


@dag(schedule=kit.daily(), **kit.workflow_dag("finops_s3_tiering", __doc__, tags=["s3", "lifecycle"], params=PARAMS))
def finops_s3_tiering() -> None:
    @task
    def targets() -> list[dict]:
        """The configured buckets."""
        return kit.step("s3_tiering", "targets")

    @task(map_index_template="{{ task.op_kwargs['target']['label'] }}")
    def plan(target: dict) -> dict:
        """Read one bucket and plan its finops- rules."""
        return kit.target_step("s3_tiering", "plan", target)

    @task
    def apply(plans: list[dict]) -> list[dict]:
        """Dry run, or apply to allowlisted buckets, or roll one back: as the run's params say."""
        return kit.step("s3_tiering", "apply", list(plans))

    @task(outlets=kit.assets("s3_tiering", "run_targets", "quality_checks"))
    def write_report(plans: list[dict], outcomes: list[dict]) -> dict:
        """Check and publish this run's `s3_tiering` partition and the lifecycle JSON beside it."""
        return kit.publish_step("s3_tiering", list(plans), outcomes)

    plans = plan.expand(target=targets())
    written = write_report(plans, apply(plans))
    kit.digest_and_verdict("s3_tiering", written)


finops_s3_tiering()
