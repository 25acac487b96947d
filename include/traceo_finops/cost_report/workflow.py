"""The steps of ``finops_cost_report``, as plain functions the DAG's tasks call (no Airflow here).

1. :func:`targets` — one target per Prometheus source and Mimir tenant (for the storage stats);
2. :func:`storage` — one target's storage stats (mapped): TSDB bytes, retention, ingestion, disk need;
3. :func:`build` — reads every upstream dataset's committed partition (any subset), builds
   ``storage``, ``cost_summary`` (with week-over-week deltas), ``actions``, ``cost_anomalies``,
   ``cost_inputs`` and ``cost_trend`` (the FinOps page's trend chart, built on the previous report's);
4. :func:`digest` — the Slack cost report, from the committed report;
5. :func:`upload_files` — with a bot-token Slack connection, the chart and the actions CSV of the
   committed report, uploaded once per run (a webhook cannot upload files: the digest says so).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from traceo_finops.config import CostReportSettings
from traceo_finops.cost_report.anomaly import Rules, detect
from traceo_finops.cost_report.attachments import ACTIONS_FILE, ARTIFACT_DIR, CHART_FILE, actions_csv, chart_png
from traceo_finops.cost_report.collect import mimir_tenant_facts, prometheus_facts
from traceo_finops.cost_report.dataset import (
    ACTIONS,
    COST_ANOMALIES,
    COST_INPUTS,
    COST_SUMMARY,
    COST_TREND,
    INPUT_USED,
    STORAGE,
    cost_digest,
)
from traceo_finops.cost_report.model import cost_summary
from traceo_finops.cost_report.recommend import actions
from traceo_finops.cost_report.storage import KIND_MIMIR_TENANT, KIND_PROMETHEUS, TsdbFacts, storage_row
from traceo_finops.cost_report.trend import USD_COLUMNS, day_totals, trend_rows
from traceo_finops.cost_report.upstream import SCHEMA_VERSION_KEY, InputRecord, Lake
from traceo_finops.kit.context import RunContext, Target, TargetKind, source_targets
from traceo_finops.kit.outcome import TargetResult, require_work, results_of
from traceo_finops.kit.publish import Report, Written, read_committed
from traceo_finops.prometheus import PrometheusClient
from traceo_finops.shapes import JsonObject
from traceo_finops.slack import Digest, FileUploader, Upload, delivery_key, upload_once

log = logging.getLogger(__name__)

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


def trend(ctx: RunContext, lake: Lake, summary: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ``cost_trend`` rows of this report: the newest committed ``cost_trend`` before this report date, kept
    where its days are still the committed ``cost_summary`` runs, the other days summed from their committed
    ``cost_summary``, and this run's totals (see :mod:`traceo_finops.cost_report.trend`)."""
    day = ctx.report_date
    committed = {d: str(e.get("run_id")) for d, e in lake.index.get(COST_SUMMARY.name, [])
                 if d < day and e.get("dag_id") == ctx.dag_id}
    earlier = [d for d, e in lake.index.get(COST_TREND.name, []) if d < day and e.get("dag_id") == ctx.dag_id]
    previous: list[dict[str, Any]] = []
    if earlier:
        table = lake.read(COST_TREND.name, earlier[-1])
        version = b"" if isinstance(table, str) else (table.schema.metadata or {}).get(SCHEMA_VERSION_KEY, b"")
        if isinstance(table, str):
            log.warning("cost_trend: the earlier trend is not used (%s); summing each day's cost_summary", table)
        elif version != str(COST_TREND.version).encode():
            log.info("cost_trend %s has schema version %s, this report writes %d: summing each day's cost_summary",
                     earlier[-1], version.decode() or "unknown", COST_TREND.version)
        else:
            previous = table.select(["day", "category", *USD_COLUMNS, "summary_run_id"]).to_pylist()

    def read_summary(d: date) -> list[dict[str, Any]] | None:
        table = lake.read(COST_SUMMARY.name, d)
        if isinstance(table, str) or not {"category", *USD_COLUMNS} <= set(table.column_names):
            log.warning("cost_trend: no point for %s: %s", d,
                        table if isinstance(table, str) else "its cost_summary lacks the cost columns")
            return None
        rows: list[dict[str, Any]] = table.select(["category", *USD_COLUMNS]).to_pylist()
        return rows

    return trend_rows(day, day_totals(day, summary, ctx.run_id), previous, committed, read_summary)


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
    action_rows = [{**a, **window} for a in ranked]
    artifacts: dict[tuple[str, str], bytes] = {}
    if snap.upstream_used and summary:  # nothing to draw before any upstream report ("nothing to report yet")
        by_category = {cat: points for (cat, owner), points in series.items() if owner == ALL_OWNERS}
        artifacts[(ARTIFACT_DIR, CHART_FILE)] = chart_png(by_category, day)
        artifacts[(ARTIFACT_DIR, ACTIONS_FILE)] = actions_csv(action_rows, ACTIONS.schema.names)
    report = Report(datasets=[
        (STORAGE, store_rows),
        (COST_SUMMARY, [{**r, **window} for r in summary]),
        (ACTIONS, action_rows),
        (COST_ANOMALIES, [{**a, **window} for a in anomalies]),
        (COST_INPUTS, [{**i.as_row(), **window} for i in inputs]),
        (COST_TREND, [{**r, **window} for r in trend(ctx, lake, summary)]),
    ], artifacts=artifacts, summary={"categories": len({r["category"] for r in summary}), "actions": len(ranked),
                "anomalies": len(anomalies), "upstream": snap.upstream_used})
    return report, results


def digest(ctx: RunContext, written: Written) -> Digest:
    """The Slack cost report, read back from the committed partitions."""
    day = ctx.report_date
    read = {d.name: read_committed(ctx.store, d.name, day).to_pylist()
            for d in (COST_SUMMARY, ACTIONS, COST_ANOMALIES, COST_INPUTS)}
    upstream = [i for i in read[COST_INPUTS.name] if i["status"] == INPUT_USED and i["dataset"] != "storage"]
    summary = read[COST_SUMMARY.name] if upstream else []
    report = cost_digest(day.isoformat(), summary, sorted(read[ACTIONS.name], key=lambda a: int(a["rank"])),
                         read[COST_ANOMALIES.name], read[COST_INPUTS.name],
                         ctx.store.dataset_uri(COST_SUMMARY.name), settings(ctx).top_n_in_digest, ctx.ui_url)
    note = files_note(ctx, written)
    return dataclasses.replace(report, summary=f"{report.summary}\n{note}") if note else report


def attachment_uris(written: Mapping[str, Any]) -> dict[str, str]:
    """file name -> URI of the chart and the CSV in the committed set (none before any upstream report)."""
    wanted = {f"/{ARTIFACT_DIR}/report_date={written['report_date']}/{name}": name
              for name in (CHART_FILE, ACTIONS_FILE)}
    return {name: str(uri) for uri in written.get("artifacts") or [] for suffix, name in wanted.items()
            if str(uri).endswith(suffix)}


def files_note(ctx: RunContext, written: Mapping[str, Any]) -> str:
    """What the digest says about the chart and the CSV: uploaded below, or why not."""
    files = attachment_uris(written)
    if not files:
        return ""
    try:
        poster = ctx.poster
    except RuntimeError:  # a run context without Slack (a test's, the summary CLI's)
        return ""
    if isinstance(poster, FileUploader):
        return "_The cost chart and the ranked actions (CSV) follow in this channel._"
    folder = files[CHART_FILE if CHART_FILE in files else ACTIONS_FILE].rsplit("/", 1)[0]
    return (f"_Chart and actions CSV not uploaded: the `{ctx.cfg.slack.conn_id}` connection is an incoming "
            "webhook, and webhooks cannot upload files (a bot-token `slack` connection with a channel can). "
            f"Both are beside the report: {folder}/_")


def upload_files(ctx: RunContext, written: Mapping[str, Any]) -> bool:
    """Upload the committed chart and actions CSV with a bot token, once per run; True if uploaded now."""
    if not ctx.post_to_slack():
        return False
    files = attachment_uris(written)
    if not files:
        log.info("no chart or actions CSV in this report (nothing to report yet): nothing to upload")
        return False
    poster = ctx.poster
    if not isinstance(poster, FileUploader):
        log.info("chart and actions CSV not uploaded: Slack connection %r is an incoming webhook, which cannot "
                 "upload files; they are at %s", ctx.cfg.slack.conn_id, ", ".join(files.values()))
        return False
    day = date.fromisoformat(str(written["report_date"]))
    uploads = []
    for name in sorted(files, key=lambda n: n != CHART_FILE):  # the chart first
        content = ctx.store.read_artifact(ARTIFACT_DIR, day, name)
        stem, ext = name.rsplit(".", 1)
        if name == CHART_FILE:
            uploads.append(Upload(f"{stem}-{day}.{ext}", content, f"Cost by category up to {day}",
                                  alt_txt=f"Line chart of the monthly cost of each category up to {day}"))
        else:
            uploads.append(Upload(f"{stem}-{day}.{ext}", content, f"Ranked cost actions {day}", snippet_type="csv"))
    key = delivery_key(ctx.dag_id, ctx.run_id, "files")
    return upload_once(ctx.store, day, key, uploads, f"Cost report {day}: chart and ranked actions", poster)
