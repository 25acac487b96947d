"""The cost report's datasets (``storage``, ``cost_summary``, ``actions``, ``cost_anomalies``, ``cost_inputs``,
``cost_trend``) and its Slack digest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from traceo_finops.cost_report.anomaly import METHODS
from traceo_finops.cost_report.model import CATEGORIES, by_category, totals
from traceo_finops.cost_report.recommend import APPLIED, KINDS, LEVELS, PROPOSED
from traceo_finops.cost_report.storage import KIND_MIMIR_TENANT, KIND_PROMETHEUS, STATUSES
from traceo_finops.quality import Expect, between, not_null, one_of, unique_together
from traceo_finops.reports import WINDOW_COLUMNS, Dataset
from traceo_finops.reports import column as _f
from traceo_finops.slack import Digest

F64, I64, STR = pa.float64(), pa.int64(), pa.string()
# A month of the whole stack above this is a unit mistake, not a bill (plausible-range check).
MAX_MONTHLY_USD = 10_000_000.0
INPUT_USED, INPUT_MISSING, INPUT_STALE, INPUT_REJECTED = "used", "missing", "stale", "rejected"
INPUT_STATUSES = (INPUT_USED, INPUT_MISSING, INPUT_STALE, INPUT_REJECTED)






def _a_ge_b(a: str, b: str) -> Expect:
    return Expect("ExpectColumnPairValuesAToBeGreaterThanB",
                  {"column_A": a, "column_B": b, "or_equal": True, "ignore_row_if": "either_value_is_missing"})


STORAGE = Dataset(
    name="storage",
    version=1,
    description="Per Prometheus source: local TSDB bytes (blocks, WAL, head chunks), bytes per sample, retention, "
                "ingestion rate, the disk its retention needs and its monthly cost; per Mimir tenant: stored block "
                "bytes (s3_tiering), ingestion rate and active series from Mimir's own metrics.",
    schema=pa.schema([
        _f("source", STR), _f("tenant", STR), _f("kind", STR), _f("status", STR), _f("notes", STR),
        _f("instances", I64),
        _f("blocks_bytes", I64, True), _f("wal_bytes", I64, True), _f("head_chunks_bytes", I64, True),
        _f("local_bytes", I64, True), _f("object_bytes", I64, True), _f("object_files", I64, True),
        _f("bytes_per_sample", F64, True), _f("bytes_per_sample_source", STR),
        _f("retention_time_seconds", F64, True), _f("retention_size_bytes", I64, True),
        _f("samples_per_second", F64, True), _f("active_series", I64, True),
        _f("disk_needed_bytes", I64, True), _f("disk_gb_month_usd", F64), _f("monthly_cost_usd", F64),
        *WINDOW_COLUMNS,
    ]),
    expectations=(
        *not_null("source", "kind", "status", "monthly_cost_usd", "disk_gb_month_usd"),
        one_of("kind", [KIND_PROMETHEUS, KIND_MIMIR_TENANT]),
        one_of("status", list(STATUSES)),
        between("monthly_cost_usd", 0, MAX_MONTHLY_USD),
        between("bytes_per_sample", 0.1, 64),  # Gorilla-compressed samples are ~1-2 B; 64 is a broken counter
        between("samples_per_second", min_value=0),
        between("disk_needed_bytes", min_value=0),
        unique_together("source", "tenant"),
    ),
)

COST_SUMMARY = Dataset(
    name="cost_summary",
    version=1,
    description="Monthly cost per category and owner now, projected after every proposed action, the saving, "
                "and the change since the previous week's report.",
    schema=pa.schema([
        _f("category", STR), _f("owner", STR),
        _f("current_monthly_usd", F64), _f("projected_monthly_usd", F64), _f("saving_monthly_usd", F64),
        _f("previous_monthly_usd", F64, True), _f("wow_change_usd", F64, True), _f("wow_change_pct", F64, True),
        _f("basis", STR), _f("notes", STR),
        *WINDOW_COLUMNS,
    ]),
    expectations=(
        # not-null on every dollar column also refuses NaN (pandas reads NaN as missing).
        *not_null("category", "owner", "current_monthly_usd", "projected_monthly_usd", "saving_monthly_usd"),
        one_of("category", list(CATEGORIES)),
        between("current_monthly_usd", 0, MAX_MONTHLY_USD),
        between("projected_monthly_usd", 0, MAX_MONTHLY_USD),
        _a_ge_b("current_monthly_usd", "saving_monthly_usd"),
        unique_together("category", "owner"),
    ),
)

ACTIONS = Dataset(
    name="actions",
    version=1,
    description="Every proposed change of every workflow, ranked by $/month saved: owner, effort, risk, status "
                "and the URI of its artifact.",
    schema=pa.schema([
        _f("rank", I64), _f("action_id", STR), _f("workflow", STR), _f("kind", STR), _f("target", STR),
        _f("owner", STR), _f("monthly_saving_usd", F64), _f("effort", STR), _f("risk", STR), _f("status", STR),
        _f("artifact_uri", STR), _f("detail", STR),
        *WINDOW_COLUMNS,
    ]),
    expectations=(
        *not_null("rank", "action_id", "kind", "owner", "monthly_saving_usd", "status"),
        one_of("kind", list(KINDS)), one_of("effort", list(LEVELS)), one_of("risk", list(LEVELS)),
        one_of("status", [PROPOSED, APPLIED]),
        between("monthly_saving_usd", -MAX_MONTHLY_USD, MAX_MONTHLY_USD),
        between("rank", min_value=1),
        unique_together("action_id"), unique_together("rank"),
    ),
)

COST_ANOMALIES = Dataset(
    name="cost_anomalies",
    version=1,
    description="Cost anomalies of the newest day per category and owner (robust z-score, IsolationForest), "
                "each with a one-line explanation.",
    schema=pa.schema([
        _f("day", pa.date32()), _f("category", STR), _f("owner", STR), _f("method", STR),
        _f("value_usd", F64), _f("baseline_usd", F64), _f("change_pct", F64, True), _f("score", F64, True),
        _f("explanation", STR),
        *WINDOW_COLUMNS,
    ]),
    expectations=(*not_null("category", "owner", "method", "explanation", "value_usd"),
                  one_of("method", list(METHODS)), unique_together("category", "owner", "method")),
)

COST_INPUTS = Dataset(
    name="cost_inputs",
    version=1,
    description="Which upstream dataset partition each figure of the report comes from, or why a dataset was "
                "not used (missing, stale, or an unreadable schema version).",
    schema=pa.schema([
        _f("dataset", STR), _f("status", STR), _f("report_date", pa.date32(), True),
        _f("schema_version", I64, True), _f("rows", I64), _f("uri", STR), _f("reason", STR),
        *WINDOW_COLUMNS,
    ]),
    expectations=(*not_null("dataset", "status"), one_of("status", list(INPUT_STATUSES)),
                  unique_together("dataset")),
)

COST_TREND = Dataset(
    name="cost_trend",
    version=1,
    description="The daily totals the FinOps page's trend chart draws, committed with each report: per report date "
                "of the trailing year (this one included) and category, the monthly cost now, after the proposed "
                "actions and the saving, summed from that date's committed cost_summary, and that run's id.",
    schema=pa.schema([
        _f("day", pa.date32()), _f("category", STR),
        _f("current_monthly_usd", F64), _f("projected_monthly_usd", F64), _f("saving_monthly_usd", F64),
        _f("summary_run_id", STR),
        *WINDOW_COLUMNS,
    ]),
    expectations=(
        *not_null("day", "category", "current_monthly_usd", "projected_monthly_usd", "saving_monthly_usd",
                  "summary_run_id"),
        one_of("category", list(CATEGORIES)),
        between("current_monthly_usd", 0, MAX_MONTHLY_USD),
        between("projected_monthly_usd", 0, MAX_MONTHLY_USD),
        _a_ge_b("current_monthly_usd", "saving_monthly_usd"),
        unique_together("day", "category"),
    ),
)

DATASETS = (STORAGE, COST_SUMMARY, ACTIONS, COST_ANOMALIES, COST_INPUTS, COST_TREND)


def usd(value: float) -> str:
    return f"${value:,.2f}"


def cost_digest(report_date: str, summary: Sequence[Mapping[str, Any]], actions: Sequence[Mapping[str, Any]],
                anomalies: Sequence[Mapping[str, Any]], inputs: Sequence[Mapping[str, Any]], report_uri: str,
                top_n: int = 5, page_url: str = "") -> Digest:
    """Totals now → after, saving by category, the top actions, anomalies and what changed since last week.

    ``page_url`` is the FinOps page in the Airflow UI (from ``[api] base_url``); without it the footer
    names the page's path.
    """
    page = f"FinOps page: {page_url}" if page_url else "FinOps page: /finops/ in the Airflow UI"
    used = [i for i in inputs if i["status"] == INPUT_USED]
    not_used = [f"{i['dataset']} ({i['status']}: {i['reason']})" for i in inputs
                if i["status"] in (INPUT_STALE, INPUT_REJECTED)]
    if not summary:
        return Digest(title=f"Cost report {report_date}",
                      summary="*Nothing to report yet*: no other finops workflow (cardinality, rightsizing, "
                              "s3_tiering, recording_rules) has a committed report for this window; run them first. "
                              "This run's storage stats are in the `storage` dataset."
                              + (f" Not used: {'; '.join(not_used)}." if not_used else ""),
                      footer=f"Report: {report_uri} · {page}")
    t = totals(summary)
    pct = t["saving"] / t["current"] if t["current"] else 0.0
    cats = by_category(summary)
    facts = {c: f"{usd(v['current'])} → {usd(v['projected'])} (save {usd(v['saving'])})" for c, v in cats.items()}
    prev = [r for r in summary if r.get("previous_monthly_usd") is not None]
    if prev:
        before = sum(float(r["previous_monthly_usd"]) for r in prev)
        now = sum(float(r["current_monthly_usd"]) for r in prev)
        movers = sorted(prev, key=lambda r: -abs(float(r["wow_change_usd"] or 0)))[:3]
        facts["Since last week"] = f"{usd(before)} → {usd(now)} ({now - before:+,.2f}); " + ", ".join(
            f"{r['category']}/{r['owner']} {float(r['wow_change_usd'] or 0):+,.2f}" for r in movers)
    else:
        facts["Since last week"] = "no report of a week ago to compare with"
    facts["Anomalies"] = "; ".join(str(a["explanation"]) for a in anomalies[:3]) or "none"
    if not_used:
        facts["Inputs not used"] = "; ".join(not_used)
    top = list(actions)[:top_n]
    return Digest(
        title=f"Cost report {report_date}",
        summary=(f"The observability stack costs *{usd(t['current'])}/month*; after the *{len(actions)}* proposed "
                 f"actions *{usd(t['projected'])}/month*: a saving of *{usd(t['saving'])}/month* ({pct:.0%}). "
                 f"From {', '.join(sorted(i['dataset'] for i in used))}."),
        facts=facts,
        table_header=("#", "action", "owner", "$/month", "risk"),
        table_rows=[(a["rank"], f"{a['kind']} {a['target']}"[:60], a["owner"], f"{float(a['monthly_saving_usd']):,.2f}",
                     a["risk"]) for a in top],
        footer=f"{page} · report: {report_uri} · the ranked actions are in the `actions` dataset with their artifacts",
    )
