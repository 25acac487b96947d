"""The steps of ``finops_s3_tiering`` as plain functions: plan a bucket, apply or roll back, report.

The DAG wires these together and hands in what only Airflow knows (S3 clients from connections,
the report store, the run's window); tests call them directly against moto.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from traceo_finops.config import Bucket, BucketLayout, ConfigError, FinopsConfig, S3TieringSettings, config_path
from traceo_finops.kit.context import RunContext, Target, TargetKind, bucket_targets
from traceo_finops.kit.outcome import NoTargets, TargetResult, results_of
from traceo_finops.kit.publish import Report, Written, read_committed
from traceo_finops.pricing import PriceTable, PricingError, StorageClass
from traceo_finops.reports import ReportStore
from traceo_finops.s3tiering.apply import (
    ApplyOutcome,
    BackupStore,
    it_archive_refusal,
    put_request,
    read_backup,
    read_lifecycle,
    rollback,
    safe_apply,
)
from traceo_finops.s3tiering.blocks import read_block_states
from traceo_finops.s3tiering.collect import objects, remaining_days
from traceo_finops.s3tiering.costs import CostModel
from traceo_finops.s3tiering.dataset import DATASET_NAME
from traceo_finops.s3tiering.errors import (
    LifecycleValidationError,
    PlanError,
    S3TieringError,
)
from traceo_finops.s3tiering.lifecycle import DEFAULT_MIN_SIZE, build_rules, canonical, diff, is_finops, merge, validate
from traceo_finops.s3tiering.recommend import Rows, allowed_classes, plan_rows, report_rows
from traceo_finops.shapes import Json, JsonObject, S3Client
from traceo_finops.slack import Digest

log = logging.getLogger(__name__)
DOMAIN_ERRORS = (S3TieringError, PricingError, ConfigError)


@dataclass
class BucketPlan:
    """Everything decided for one bucket; :meth:`as_dict` is what travels between tasks."""

    bucket: str
    layout: str
    role: str
    apply_allowed: bool
    source: str  # list | inventory
    source_detail: str  # which inventory, or why the configured one was not used
    objects: int
    bytes: int
    blocks: int
    rows: list[JsonObject]  # rows of the s3_tiering dataset
    finops_rules: list[JsonObject]  # S3 lifecycle rules, as the S3 API takes them
    current: JsonObject
    proposed: JsonObject
    diff: JsonObject
    in_force: list[str]
    decisions: list[JsonObject]
    warnings: list[str] = field(default_factory=list)
    blocking: list[str] = field(default_factory=list)  # problems that stop an apply

    def as_dict(self) -> JsonObject:
        return dict(self.__dict__)


def plan_bucket(client: S3Client, bucket: Bucket, settings: S3TieringSettings, prices: PriceTable, as_of: datetime,
                inventory_fs: Callable[[], pafs.FileSystem] | None = None) -> BucketPlan:
    """Read the bucket (configuration, objects, block metadata) and plan its ``finops-`` rules.

    Only reads: nothing is written to the bucket. Prices are checked before the first S3 call.
    """
    name, layout = bucket.name, bucket.layout
    model = CostModel(prices, bucket.monthly_read_ratio)
    try:
        model.require(allowed_classes(bucket))
    except PricingError as exc:
        raise PricingError(f"bucket {name!r}: cannot price its storage classes: {exc}") from None
    current = read_lifecycle(client, name)
    agg, source_detail, warnings = objects(client, bucket, settings, as_of, inventory_fs)
    groups = agg.groups
    has_blocks = pc.any(pc.not_equal(groups["block"], "")).as_py() if groups.num_rows else False
    if agg.bad_ulid_count:
        msg = (f"{agg.bad_ulid_count} key(s) look like block files but their directory is not a ULID "
               f"(e.g. {', '.join(agg.bad_ulid_examples)}); they are treated as ordinary objects")
        if layout is not BucketLayout.GENERIC and not has_blocks:
            raise PlanError(name, f"is configured with layout {layout.value} but holds no block: {msg}")
        warnings.append(msg)
    if layout is not BucketLayout.GENERIC and groups.num_rows and not has_blocks:
        raise PlanError(name, f"is configured with layout {layout.value} but holds no block (no <ULID>/ directory)")
    with_meta = groups.filter(pc.equal(groups["role"], "meta.json")).select(["tenant", "block"]).to_pylist()
    in_blocks = groups.filter(pc.not_equal(groups["block"], ""))
    all_blocks = set(zip(in_blocks["tenant"].to_pylist(), in_blocks["block"].to_pylist(), strict=True))
    meta_blocks = {(r["tenant"], r["block"]) for r in with_meta}
    partial = all_blocks - meta_blocks
    if partial:
        warnings.append(f"{len(partial)} block(s) have no meta.json (partial uploads), e.g. "
                        f"{', '.join(f'{t}/{b}'.lstrip('/') for t, b in sorted(partial)[:3])}")
    states = read_block_states(client, name, layout, meta_blocks, agg.deletion_marked,
                               use_bucket_index=agg.source == "inventory")
    as_of_ms = int(as_of.timestamp() * 1000)
    remaining = remaining_days(bucket, layout, states, as_of_ms)
    joined = groups.join(remaining, keys=["tenant", "block"], join_type="left outer") if remaining.num_rows \
        else groups.append_column("remaining_days", pa.nulls(groups.num_rows, pa.float64()))
    reduced = joined.group_by(["tenant", "role", "storage_class", "size_band", "age_days", "remaining_days"]) \
        .aggregate([("objects", "sum"), ("bytes", "sum")])
    reduced = reduced.rename_columns([{"objects_sum": "objects", "bytes_sum": "bytes"}.get(n, n)
                                      for n in reduced.schema.names])
    # A fixed order: listing threads and group_by return rows in any order, and float sums depend on it.
    reduced = reduced.sort_by([(k, "ascending") for k in ("tenant", "role", "storage_class", "size_band", "age_days",
                                                          "remaining_days")])
    rows = Rows.from_table(reduced)
    refused: dict[str, str] = {}
    if StorageClass.INTELLIGENT_TIERING.value in allowed_classes(bucket):
        why = it_archive_refusal(client, bucket)
        if why:
            refused[StorageClass.INTELLIGENT_TIERING.value] = why
            warnings.append(f"INTELLIGENT_TIERING is not proposed: {why}")
    decisions, costs = plan_rows(rows, layout, bucket, settings, model, refused_classes=refused)
    finops_rules = build_rules(bucket, decisions, list(current.rules))
    merged = merge(current.rules, finops_rules)
    blocking: list[str] = []
    try:
        warnings += validate(bucket, merged)
    except LifecycleValidationError as exc:
        blocking += exc.problems
    lossy = not bucket.verify_size_filters
    change = diff(list(current.rules), merged, current.default_min_size, drop_size=lossy)
    now = {r["ID"]: r for r in current.rules if is_finops(r)}
    in_force = [r["ID"] for r in finops_rules
                if r["ID"] in now and canonical(now[r["ID"]], drop_size=lossy) == canonical(r, drop_size=lossy)]
    overlapping = [r["ID"] for r in current.rules if not is_finops(r) and r.get("Status") == "Enabled"
                   and r.get("Transitions")]
    if overlapping:
        warnings.append(f"foreign rule(s) {', '.join(overlapping)} also transition objects; the projection "
                        "assumes only the finops- rules act")
    return BucketPlan(
        bucket=name, layout=layout.value, role=bucket.role.value, apply_allowed=bucket.apply, source=agg.source,
        source_detail=source_detail,
        objects=int(pc.sum(groups["objects"]).as_py() or 0), bytes=int(pc.sum(groups["bytes"]).as_py() or 0),
        blocks=len(all_blocks), rows=report_rows(rows, costs, name, settings.transition_days),
        finops_rules=finops_rules,
        current={"exists": current.exists, "TransitionDefaultMinimumObjectSize": current.default_min_size,
                 "Rules": list(current.rules)},
        proposed={"Rules": merged, "TransitionDefaultMinimumObjectSize": DEFAULT_MIN_SIZE},
        diff=change.as_dict(), in_force=in_force, decisions=[d.as_dict() for d in decisions],
        warnings=warnings, blocking=blocking)


def _unexpected(bucket: str, step: str, exc: Exception) -> str:
    # A bug or a failure no domain error foresaw: still this bucket's error, never the others'.
    log.exception("bucket %s: unexpected error while %s", bucket, step)
    return f"bucket {bucket!r}: {step} failed unexpectedly ({type(exc).__name__}: {exc})"


def plan_or_error(cfg: FinopsConfig, bucket_name: str, as_of: datetime, prices: Callable[[], PriceTable],
                  client_for: Callable[[Bucket], S3Client],
                  inventory_fs: Callable[[Bucket], pafs.FileSystem] | None = None) -> JsonObject:
    """:func:`plan_bucket` as a dict; any failure becomes ``{"bucket", "error"}`` so other buckets go on."""
    try:
        bucket = cfg.bucket(bucket_name)
        plan = plan_bucket(client_for(bucket), bucket, cfg.workflows.s3_tiering, prices(), as_of,
                           (lambda: inventory_fs(bucket)) if inventory_fs else None)
    except (*DOMAIN_ERRORS, LookupError) as exc:
        log.error("bucket %s: %s", bucket_name, exc)
        return {"bucket": bucket_name, "error": str(exc)}
    except Exception as exc:
        return {"bucket": bucket_name, "error": _unexpected(bucket_name, "planning", exc)}
    return plan.as_dict()


def _json_default(value: object) -> str:
    # Rules read back from S3 can hold datetimes (Expiration.Date, Transition.Date): ISO 8601, as the CLI takes.
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def plan_artifacts(plan: Mapping[str, Json]) -> dict[str, bytes]:
    """``<bucket>.lifecycle.json`` and ``<bucket>.plan.json``, to go beside the report.

    ``<bucket>.lifecycle.json`` is the request the apply would send (:func:`put_request`): the
    whole merged configuration with ``TransitionDefaultMinimumObjectSize``, as ``aws s3api
    put-bucket-lifecycle-configuration --cli-input-json file://…`` takes it.
    """
    bucket = plan["bucket"]
    request = put_request(bucket, plan["proposed"]["Rules"], plan["proposed"]["TransitionDefaultMinimumObjectSize"])
    detail = {k: v for k, v in plan.items() if k != "rows"}
    return {f"{bucket}.lifecycle.json": json.dumps(request, indent=1, default=_json_default).encode(),
            f"{bucket}.plan.json": json.dumps(detail, indent=1, default=_json_default).encode()}


def _backup_bucket(uri: str) -> str:
    # Backups are named <bucket>.<stamp>.json: the bucket a rollback was about, before its backup is read.
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 2)[0] if name.count(".") >= 2 else "?"


def apply_or_rollback(cfg: FinopsConfig, plans: Sequence[Mapping[str, Json]], *, apply: bool, rollback_uri: str,
                      client_for: Callable[[Bucket], S3Client], store: ReportStore, report_date: date,
                      run_id: str = "") -> list[JsonObject]:
    """Apply allowlisted plans (``apply``), or restore one backup (``rollback_uri``), or write nothing.

    A rollback run applies nothing else. A bucket that is not allowlisted is never written. Every
    failure is that bucket's outcome (mode ``failed`` with its error), never the others'.
    """
    backups = BackupStore(store, report_date)
    if rollback_uri:
        name = _backup_bucket(rollback_uri)
        try:
            doc = read_backup(rollback_uri, store.fs, store.base)
            name = doc["bucket"]
            bucket = cfg.bucket(name)
            outcome = rollback(client_for(bucket), bucket, doc, backups, run_id=run_id, backup_uri=rollback_uri)
        except (*DOMAIN_ERRORS, LookupError) as exc:
            log.error("rollback %s: %s", rollback_uri, exc)
            outcome = ApplyOutcome(name, "failed", error=str(exc))
        except Exception as exc:
            outcome = ApplyOutcome(name, "failed", error=_unexpected(name, "rolling back", exc))
        return [outcome.as_dict()]
    outcomes = []
    for plan in plans:
        if "error" in plan:
            continue
        name = plan["bucket"]
        try:
            bucket = cfg.bucket(name)
            if not apply or not bucket.apply:
                mode = "dry-run" if not apply else "not-allowlisted"
                outcomes.append(ApplyOutcome(name, mode, plan["diff"], None, plan["in_force"],
                                             plan["warnings"]).as_dict())
                continue
            if plan["blocking"]:
                outcomes.append(ApplyOutcome(name, "failed", plan["diff"], None, plan["in_force"], plan["warnings"],
                                             "; ".join(plan["blocking"])).as_dict())
                continue
            outcome = safe_apply(client_for(bucket), bucket, plan["finops_rules"], backups, run_id=run_id)
        except (*DOMAIN_ERRORS, LookupError) as exc:
            log.error("bucket %s: %s", name, exc)
            outcome = ApplyOutcome(name, "failed", plan["diff"], None, plan["in_force"], plan["warnings"], str(exc))
        except Exception as exc:
            outcome = ApplyOutcome(name, "failed", plan["diff"], None, plan["in_force"], plan["warnings"],
                                   _unexpected(name, "applying", exc))
        outcomes.append(outcome.as_dict())
    return outcomes


def report_rows_for(plans: Sequence[Mapping[str, Json]], outcomes: Sequence[Mapping[str, Json]],
                    window_start: datetime, window_end: datetime) -> list[dict[str, object]]:
    """The dataset's rows: each plan's rows with ``applied`` (rule in force after this run) and the window."""
    in_force = {o["bucket"]: set(o.get("in_force") or ()) for o in outcomes}
    rows = []
    for plan in plans:
        if "error" in plan:
            continue
        force = in_force.get(plan["bucket"], set(plan["in_force"]))
        for r in plan["rows"]:
            rid = r["proposed_rule_id"]
            rows.append({**r, "applied": bool(rid) and all(x in force for x in rid.split(",")),
                         "source": plan.get("source", "list"), "window_start": window_start,
                         "window_end": window_end})
    return rows



# -- the steps the DAG calls (workflow kit) ------------------------------------------------------------
def targets(ctx: RunContext) -> list[JsonObject]:
    """One target per configured bucket."""
    found = bucket_targets(ctx.cfg)
    if not found:
        raise NoTargets(f"configuration {config_path()} lists no buckets: nothing to plan (add one under "
                        "`buckets`, or pause finops_s3_tiering)")
    return [t.as_dict() for t in found]


def plan(ctx: RunContext, target: Target) -> JsonObject:
    """Read one bucket and plan its ``finops-`` rules (reads only); a failure is this bucket's recorded error."""
    bucket = ctx.cfg.bucket(target.bucket)
    result = plan_or_error(ctx.cfg, bucket.name, ctx.window.end, prices=lambda: ctx.prices,
                           client_for=lambda b: ctx.s3_client(b.conn_id),
                           inventory_fs=lambda b: pafs.S3FileSystem(**ctx.s3_options(b.conn_id)))
    if "error" in result:
        raise PlanError(bucket.name, result["error"].removeprefix(f"bucket {bucket.name!r}: "))
    return result


def apply(ctx: RunContext, plans: Sequence[Mapping[str, Json]]) -> list[JsonObject]:
    """Dry run, or apply to allowlisted buckets, or roll one back — as the run's params say."""
    planned = [r.payload for r in results_of(plans) if r.ok]
    return apply_or_rollback(ctx.cfg, planned, apply=bool(ctx.param("apply", False)),
                             rollback_uri=str(ctx.param("rollback_backup", "")).strip(),
                             client_for=lambda b: ctx.s3_client(b.conn_id), store=ctx.store,
                             report_date=ctx.report_date, run_id=ctx.run_id)


def build(ctx: RunContext, plans: Sequence[Mapping[str, Json]],
          outcomes: Sequence[Mapping[str, Json]]) -> tuple[Report, list[TargetResult]]:
    """The ``s3_tiering`` rows, the lifecycle and plan JSON of every planned bucket, and each bucket's outcome."""
    from traceo_finops.s3tiering.dataset import s3_tiering_dataset
    from traceo_finops.s3tiering.recommend import age_band_labels

    results = results_of(plans)
    planned = [r.payload for r in results if r.ok]
    failed_apply = {o["bucket"]: o["error"] for o in outcomes if o.get("mode") == "failed" and o.get("error")}
    results = [TargetResult(r.target, error=failed_apply[r.target.bucket]) if r.ok and r.target.bucket in failed_apply
               else r for r in results]
    known = {r.target.bucket for r in results}
    results += [TargetResult(Target(TargetKind.BUCKET, bucket=name), error=error)
                for name, error in failed_apply.items() if name not in known]  # a rollback of another bucket
    dataset = s3_tiering_dataset(age_band_labels(ctx.cfg.workflows.s3_tiering.transition_days))
    report = Report(datasets=[(dataset, report_rows_for(planned, outcomes, ctx.window.start, ctx.window.end))],
                    summary={"outcomes": [dict(o) for o in outcomes]})
    for p in planned:
        report.artifacts.update({(DATASET_NAME, name): content for name, content in plan_artifacts(p).items()})
    # A bucket is read as it is now: a backfill's rows are today's objects and rules under a past date.
    read = {"list": "objects (a ListObjectsV2 listing)", "inventory": "objects (the newest S3 Inventory)"}
    report.notes = {r.target.label: note for r in results if r.ok and (note := ctx.live_read_note(
        read.get(str((r.payload or {}).get("source")), "objects") + " and lifecycle rules"))}
    return report, results


def digest(ctx: RunContext, written: Written) -> Digest:
    """Per bucket: cost now and planned, 12-month saving, the rule diff, and what was written (or why not)."""
    from traceo_finops.s3tiering.dataset import tiering_digest

    day = ctx.report_date
    rows = read_committed(ctx.store, DATASET_NAME, day).to_pylist()
    errors = [{"bucket": f["target"].removeprefix("bucket "), "error": f["error"]}
              for f in written.get("failed_targets") or []]
    lifecycle = [uri for uri in written.get("artifacts") or [] if uri.endswith(".lifecycle.json")]
    return tiering_digest(day.isoformat(), rows, written["summary"]["outcomes"], errors,
                          written["datasets"][DATASET_NAME]["uri"], lifecycle)
