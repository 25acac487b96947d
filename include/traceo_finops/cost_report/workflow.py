"""The steps of ``finops_cost_report``, as plain functions the DAG's tasks call (no Airflow here).

1. :func:`targets` — one target per Prometheus source and Mimir tenant (for the storage stats);
2. :func:`storage` — one target's storage stats (mapped): TSDB bytes, retention, ingestion, disk need;
3. :func:`build` — reads every upstream dataset's committed partition (any subset), builds
   ``storage``, ``cost_summary`` (with week-over-week deltas), ``actions``, ``cost_anomalies`` and
   ``cost_inputs``;
4. :func:`digest` — the Slack cost report, from the committed report.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from traceo_finops.config import CostReportSettings
from traceo_finops.cost_report.anomaly import Rules, detect
from traceo_finops.cost_report.collect import mimir_tenant_facts, prometheus_facts
from traceo_finops.cost_report.dataset import (
    ACTIONS,
    COST_ANOMALIES,
    COST_INPUTS,
    COST_SUMMARY,
    INPUT_USED,
    STORAGE,
    cost_digest,
)
from traceo_finops.cost_report.model import cost_summary
from traceo_finops.cost_report.recommend import actions
from traceo_finops.cost_report.storage import KIND_MIMIR_TENANT, KIND_PROMETHEUS, TsdbFacts, storage_row
from traceo_finops.cost_report.upstream import InputRecord, Lake
from traceo_finops.kit.context import RunContext, Target, TargetKind, source_targets
from traceo_finops.kit.outcome import TargetResult, require_work, results_of
from traceo_finops.kit.publish import Report, Written, read_committed
from traceo_finops.prometheus import PrometheusClient
from traceo_finops.shapes import JsonObject
from traceo_finops.slack import Digest

DISK_PRICE_PATH = "compute.disk_gb_month"
ALL_OWNERS = "(all)"


def settings(ctx: RunContext) -> CostReportSettings:
    return ctx.cfg.workflows.cost_report


def targets(ctx: RunContext) -> list[JsonObject]:
    """Every Prometheus source and Mimir tenant: never empty (an empty map would skip the report)."""
    return require_work(ctx, [t.as_dict() for t in source_targets(ctx.cfg)], [], "the configuration has no sources")


def storage(ctx: RunContext, target: Target) -> JsonObject:
    """The storage facts of one source or tenant at the window's end (JSON-safe; priced in :func:`build`)."""
    with PrometheusClient(ctx.spec(target)) as client:
        if target.kind is TargetKind.TENANT:
            facts = mimir_tenant_facts(client, target.tenant, ctx.window.end, ctx.window.duration)
        else:
            facts = prometheus_facts(client, ctx.window.end, ctx.window.duration)
    return {"kind": KIND_MIMIR_TENANT if target.kind is TargetKind.TENANT else KIND_PROMETHEUS,
            "facts": {k: v for k, v in vars(facts).items()}}


def storage_rows(ctx: RunContext, results: Sequence[TargetResult], tiering: Sequence[Mapping[str, Any]]
                 ) -> list[dict[str, Any]]:
    """Price every target's facts; a Mimir tenant's stored block bytes come from the s3_tiering report."""
    price = ctx.prices.value(DISK_PRICE_PATH)
    rows = []
    for r in results:
        if not r.ok or not isinstance(r.payload, dict):
            continue
        facts = TsdbFacts(**dict(r.payload["facts"]))
        kind = str(r.payload["kind"])
        if kind == KIND_MIMIR_TENANT:
            mine = [t for t in tiering if t.get("tenant") == r.target.tenant]
            if mine:
                facts = TsdbFacts(**{**vars(facts), "object_bytes": float(sum(int(t["bytes"]) for t in mine)),
                                     "object_files": sum(int(t["objects"]) for t in mine)})
        rows.append(storage_row(r.target.source, r.target.tenant, kind, facts, price, ctx.window.start,
                                ctx.window.end))
    return rows


def _by_key(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = defaultdict(float)
    for r in rows:
        out[(str(r["category"]), str(r["owner"]))] += float(r["current_monthly_usd"])
        out[(str(r["category"]), ALL_OWNERS)] += float(r["current_monthly_usd"])
    return dict(out)


def history(lake: Lake, day: date, s: CostReportSettings, today: Mapping[tuple[str, str], float]
            ) -> dict[tuple[str, str], list[tuple[date, float]]]:
    """Daily current-cost totals per (category, owner) and per category over ``history`` days, ending ``day``."""
    start = day - timedelta(days=int(s.history.total_seconds() // 86400))
    series: dict[tuple[str, str], list[tuple[date, float]]] = defaultdict(list)
    for d in sorted(x for x in lake.days() if start <= x < day):
        snap = lake.snapshot(d, s.max_input_age)
        for key, value in _by_key(cost_summary(snap.rows)).items():
            series[key].append((d, value))
    for key, value in today.items():
        series[key].append((day, value))
    return dict(series)


def _week_over_week(rows: list[dict[str, Any]], series: Mapping[tuple[str, str], list[tuple[date, float]]],
                    day: date) -> None:
    """Fill previous/wow_* from the newest daily total at least 7 days before ``day``."""
    for r in rows:
        points = [(d, v) for d, v in series.get((r["category"], r["owner"]), []) if d <= day - timedelta(days=7)]
        if not points:
            r.update(previous_monthly_usd=None, wow_change_usd=None, wow_change_pct=None)
            continue
        prev = points[-1][1]
        change = float(r["current_monthly_usd"]) - prev
        r.update(previous_monthly_usd=prev, wow_change_usd=round(change, 6),
                 wow_change_pct=(change / prev) if prev else None)


def build(ctx: RunContext, storage_inputs: Sequence[Mapping[str, Any]]) -> tuple[Report, list[TargetResult]]:
    """Every cost report dataset from this run's storage stats and whatever upstream datasets are committed."""
    s = settings(ctx)
    day = ctx.report_date
    results = results_of(storage_inputs)
    lake = Lake(ctx.store)
    snap = lake.snapshot(day, s.max_input_age, skip=("storage",))
    store_rows = storage_rows(ctx, results, snap.rows.get("s3_tiering", []))
    upstream: dict[str, list[dict[str, Any]]] = {**snap.rows, "storage": store_rows}
    inputs = [*snap.inputs, InputRecord("storage", INPUT_USED, day, STORAGE.version, len(store_rows),
                                        ctx.store.dataset_uri("storage"), "collected by this run")]
    summary = cost_summary(upstream) if snap.upstream_used or store_rows else []
    series = history(lake, day, s, _by_key(summary))
    _week_over_week(summary, series, day)
    window = {"window_start": ctx.window.start, "window_end": ctx.window.end}
    anomalies = detect(series, Rules(min_change=s.anomaly_min_change))
    ranked = actions(upstream, snap.provenance)
    report = Report(datasets=[
        (STORAGE, store_rows),
        (COST_SUMMARY, [{**r, **window} for r in summary]),
        (ACTIONS, [{**a, **window} for a in ranked]),
        (COST_ANOMALIES, [{**a, **window} for a in anomalies]),
        (COST_INPUTS, [{**i.as_row(), **window} for i in inputs]),
    ], summary={"categories": len({r["category"] for r in summary}), "actions": len(ranked),
                "anomalies": len(anomalies), "upstream": snap.upstream_used})
    return report, results


def digest(ctx: RunContext, written: Written) -> Digest:
    """The Slack cost report, read back from the committed partitions."""
    day = ctx.report_date
    read = {d.name: read_committed(ctx.store, d.name, day).to_pylist()
            for d in (COST_SUMMARY, ACTIONS, COST_ANOMALIES, COST_INPUTS)}
    upstream = [i for i in read[COST_INPUTS.name] if i["status"] == INPUT_USED and i["dataset"] != "storage"]
    summary = read[COST_SUMMARY.name] if upstream else []
    return cost_digest(day.isoformat(), summary, sorted(read[ACTIONS.name], key=lambda a: int(a["rank"])),
                       read[COST_ANOMALIES.name], read[COST_INPUTS.name], ctx.store.dataset_uri(COST_SUMMARY.name),
                       settings(ctx).top_n_in_digest)
