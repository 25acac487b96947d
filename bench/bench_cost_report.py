"""Benchmark: ``finops_cost_report`` over a year of daily partitions of every dataset it reads, and the FinOps
page's API on the same root, on local disk and on the devstack's S3.

1. **Lake** (``bench/out/cost-report-lake/``, cached; ``--regenerate`` rebuilds it): 365 report dates of every
   upstream dataset the cost report reads (``cost_report.upstream.known_versions``), written with the real
   writer (``ReportStore.write_partition``: schema cast, ``run_id`` column, zstd) and committed with the kit's
   layout (one ``_commits/<dag_id>/report_date=D.json`` marker per DAG and day, ``run_targets`` and
   ``quality_checks`` under ``dag_id=``), one DAG each as in production: ``finops_cardinality`` (``cardinality``,
   ``showback``, ``config_findings``), ``finops_rightsizing``, ``finops_s3_tiering``, ``finops_recording_rules``
   (+ ``recording_rules_inputs``), ``finops_slo`` (``slo_budget``, read by the page only), and the cost
   report's own 364 earlier days (``storage``, ``cost_summary``, ``actions``, ``cost_anomalies``,
   ``cost_inputs``, computed from that day's upstream rows with the report's own ``cost_summary`` and
   ``actions``; ``cost_trend`` as the build makes it: the previous day's trend + that day's totals, through
   ``cost_report.trend.trend_rows``). The Great Expectations step of the history is skipped (it does not change
   what is read).
   Rows per partition are the other benchmarks' outputs (x ``--scale``): one Prometheus with the 1M-series
   source's 244 metrics plus the S3 inventory bench's 40 Mimir tenants with as many (10,004 ``cardinality``
   rows), 3,609 ``rightsizing`` rows (the 10,000-container run), 1,440 ``s3_tiering`` rows (40 tenants x 3
   storage classes x 6 age bands x 2 size bands), ``recording_rules`` top 10 per place (410 rows), 100 SLOs.
   Dollars follow a trend with a weekly cycle and noise, so the history and anomaly steps have work to do.
2. **Build** of the last day, in a fresh process, exactly as the DAG's ``write_report`` and ``post_digest``
   tasks do it: ``cost_report.workflow.build`` (the storage step's 41 results given as its input) →
   ``kit.publish.publish`` (Great Expectations, write, commit) → ``cost_report.workflow.digest`` (Slack blocks,
   not posted). Wall and peak RSS are the kernel's for that child (``os.wait4``). Side by side, each in its own
   child: the **floor** — pyarrow reading the same files the build reads (every partition of the read
   datasets in the history window) — and the **year** — pyarrow reading every partition of them.
3. **Page API** — ``traceo_finops.ui.report_page`` + ``json.dumps`` (what ``GET /finops/api/report``
   answers), first request in a fresh process and warm, on the local root and on the same root uploaded to
   the devstack's moto_server S3 (``DEVSTACK_S3_ENDPOINT`` from ``.devstack/env.sh``; a bucket of its own,
   removed afterwards unless ``--keep-s3``). Side by side, the **baseline**: the first request reading every
   commit marker (``ui.markers_by_dag``, as the page did before it read only the markers it shows), and the
   trend drawn from each day's ``cost_summary`` (as before ``cost_trend``: one partition and one marker per day);
   every run must answer the same page (its JSON's hash; the trend's points to the cent), and on S3 each request's
   calls are counted. ``--runs 0`` measures only the page.

    .venv/bin/python bench/bench_cost_report.py [--days 365] [--scale 1] [--runs 2] [--no-s3] [--profile]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "include"), str(ROOT)]

END = date(2026, 12, 6)  # the report date that is built (a Sunday: the weekly run's report date)
GEN_VERSION = 4  # bump when the generated lake changes shape
TENANTS = [f"tenant-{i:02d}" for i in range(40)]
PLACES = [("prom", "")] + [("mimir", t) for t in TENANTS]
METRICS = 244
NAMESPACES = [f"ns-{i:02d}" for i in range(41)]
TEAMS = [f"team-{i:02d}" for i in range(20)]
AGE_BANDS = ["0-30d", "30-60d", "60-90d", "90-180d", "180-365d", "365d+"]
CLASSES = ["STANDARD", "STANDARD_IA", "GLACIER_IR"]
BUCKET = "mimir-blocks"
S3_BUCKET = "finops-bench-cost-report"


def _window(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def factor(n: int, rng_seed: int = 7) -> float:
    """The day's cost multiplier: +0.1 %/day trend, a weekly cycle, 1 % noise (deterministic per day)."""
    import numpy as np

    noise = np.random.default_rng(rng_seed * 100_003 + n).normal(0, 0.01)
    return (1 + 0.001 * n) * (1 + 0.03 * math.sin(2 * math.pi * n / 7)) * (1 + noise)


# -- the base rows of each dataset (one day; dollars scaled per day) -----------------------------------------
def base_tables(scale: int) -> dict[str, tuple[pa.Table, list[str]]]:
    """dataset -> (one day's rows at factor 1, its dollar columns)."""
    import numpy as np

    from traceo_finops.cardinality.config_audit import CHECK_HA, CHECK_RETENTION, CHECK_SCRAPE, CHECK_WAL

    rng = np.random.default_rng(42)
    out: dict[str, tuple[pa.Table, list[str]]] = {}
    places = [(s, f"{t}-{k}" if t and k else t) for k in range(scale) for s, t in PLACES]
    # cardinality: 244 metrics per place; 60 % keep, 20 % unused (drop_metric), 15 % drop_labels, 5 % aggregate.
    rows = []
    sugg = rng.choice(["keep", "drop_metric", "drop_labels", "aggregate"], size=METRICS, p=[0.6, 0.2, 0.15, 0.05])
    series = np.maximum(1, rng.lognormal(7.5, 1.2, size=METRICS)).astype(int)
    for source, tenant in places:
        total = int(series.sum())
        for m in range(METRICS):
            s = int(series[m])
            kind = str(sugg[m])
            after = {"drop_metric": 0, "drop_labels": s // 3, "aggregate": s // 2}.get(kind, s)
            cost = s * 0.0025
            rows.append({"source": source, "tenant": tenant, "metric": f"metric_{m:03d}_total", "series": s,
                         "share": s / total, "labels": 6, "usage_rules": int(kind == "keep"), "usage_dashboards": 1,
                         "usage_queries": 3, "classification": "unused" if kind == "drop_metric" else
                         "partially_used" if kind != "keep" else "used", "suggestion": kind,
                         "unneeded_labels": ["pod", "instance"] if kind in ("drop_labels", "aggregate") else [],
                         "series_after": after, "series_if_aggregated": after if kind == "aggregate" else None,
                         "blocked_by": "", "monthly_cost_usd": cost, "monthly_cost_after_usd": after * 0.0025,
                         "monthly_saving_usd": cost - after * 0.0025})
    out["cardinality"] = (_table(rows), ["monthly_cost_usd", "monthly_cost_after_usd", "monthly_saving_usd"])
    rows = []
    for source, tenant in places:
        for i, team in enumerate(TEAMS):
            rows.append({"source": source, "tenant": tenant, "owner_label": "team", "owner": team,
                         "series": 30_000 - 1000 * i, "share": 1 / len(TEAMS), "monthly_cost_usd": 75.0 - 2.5 * i})
    out["showback"] = (_table(rows), ["monthly_cost_usd"])
    checks = [(CHECK_WAL, "medium", "of disk"), (CHECK_RETENTION, "high", "of disk"),
              (CHECK_SCRAPE, "medium", "series x price"), (CHECK_HA, "low", "series x price")]
    rows = [{"source": "prom", "tenant": "", "check_id": c, "severity": sev, "subject": f"job-{k}-{i}",
             "evidence": "flag value", "recommendation": "change it", "monthly_saving_usd": 12.5 * (i + 1),
             "saving_model": model} for k in range(scale) for i, (c, sev, model) in enumerate(checks)]
    out["config_findings"] = (_table(rows), ["monthly_saving_usd"])
    # rightsizing: 3,609 rows (the 10,000-container bench's output), 9 of them the stack's own processes.
    n_rs = 3609 * scale
    status = rng.choice(["over-provisioned", "under-provisioned", "ok", "insufficient data", "HPA-managed",
                         "no requests set"], size=n_rs, p=[0.45, 0.1, 0.3, 0.05, 0.05, 0.05])
    now = rng.lognormal(2.0, 1.0, size=n_rs)
    after = np.where(status == "over-provisioned", now * 0.55, np.where(status == "under-provisioned", now * 1.3, now))
    rows = []
    for i in range(n_rs):
        stack = i < 9 * scale
        cpu = float(rng.uniform(0.01, 2))
        rows.append({"source": "prom", "tenant": "", "namespace": "" if stack else NAMESPACES[i % len(NAMESPACES)],
                     "workload_kind": "StatefulSet" if stack else "Deployment",
                     "workload_name": f"stack-{i}" if stack else f"app-{i // 2}", "container": f"c{i % 2}",
                     "replicas": 3, "billed_replicas": 3.0, "pods_seen": 4, "runs": None, "hpa": None,
                     "current_cpu_request": cpu, "current_cpu_limit": None, "current_memory_request": 2.0**28,
                     "current_memory_limit": 2.0**29, "recommended_cpu_request": cpu * 0.6,
                     "recommended_cpu_limit": None, "recommended_memory_request": 2.0**27,
                     "recommended_memory_limit": 2.0**28, "cpu_percentile": 0.95, "cpu_p50": cpu * 0.3,
                     "cpu_p90": cpu * 0.4, "cpu_p95": cpu * 0.45, "cpu_p99": cpu * 0.5, "cpu_max": cpu * 0.7,
                     "cpu_baseline": None, "memory_p99": 2.0**26, "memory_peak": 2.0**26.5, "oom_killed": False,
                     "restarts": 0, "last_oom_limit": None, "history_days": 14.0, "coverage": 1.0,
                     "confidence_days": 14.0, "confidence": 1.0, "status": str(status[i]), "statuses": [str(status[i])],
                     "reason": "p95 well under the request", "monthly_cost_now_usd": float(now[i]),
                     "monthly_cost_after_usd": float(after[i]), "monthly_saving_usd": float(now[i] - after[i]),
                     "resolution_seconds": 300, "rate_window_seconds": 1200})
    out["rightsizing"] = (_table(rows), ["monthly_cost_now_usd", "monthly_cost_after_usd", "monthly_saving_usd"])
    # s3_tiering: 40 tenants x 3 classes x 6 age bands x 2 size bands.
    rows = []
    for k in range(scale):
        for tenant in TENANTS:
            for cls in CLASSES:
                for b, band in enumerate(AGE_BANDS):
                    for size in ("<128KB", ">=128KB"):
                        objects = int(rng.integers(50, 5000))
                        nbytes = objects * (2**16 if size == "<128KB" else 2**29)
                        cur = nbytes / 2**30 * {"STANDARD": 0.023, "STANDARD_IA": 0.0125}.get(cls, 0.004)
                        tiered = cls == "STANDARD" and b >= 1 and size != "<128KB"
                        rule = f"finops-{tenant}-{k}-tier" if tiered else None
                        rows.append({"bucket": f"{BUCKET}-{k}", "tenant": tenant, "storage_class": cls,
                                     "age_band": band, "size_band": size, "objects": objects, "bytes": nbytes,
                                     "current_monthly_usd": cur, "proposed_rule_id": rule,
                                     "projected_monthly_usd": cur * 0.55 if rule else cur,
                                     "one_time_transition_usd": objects * 0.00001 if rule else 0.0,
                                     "break_even_days": 3.0 if rule else None,
                                     "net_saving_12m_usd": cur * 0.45 * 12 if rule else 0.0,
                                     "applied": False, "source": "inventory"})
    out["s3_tiering"] = (_table(rows), ["current_monthly_usd", "projected_monthly_usd", "one_time_transition_usd",
                                        "net_saving_12m_usd"])
    # recording_rules: top_n (10) groups per source/tenant.
    rows = []
    for source, tenant in places:
        for r in range(10):
            rows.append({"source": source, "tenant": tenant, "rank": r + 1,
                         "group_key": f"sum by (job) (rate(m{r}[5m]))",
                         "example_query": f"sum by (job) (rate(m{r}[5m]))", "spellings": 12, "count": 1000 - r,
                         "total_eval_seconds": 500.0 - r, "mean_eval_seconds": 0.5, "total_samples": None,
                         "rule_name": f"job:m{r}:rate5m", "rule_expr": f"sum by (job) (rate(m{r}[5m]))",
                         "rule_status": "suggested" if r < 7 else "rejected",
                         "rewritten_query": f"job:m{r}:rate5m", "new_series": 20, "monthly_cost_usd": 0.05,
                         "original_eval_seconds": 0.5, "rewritten_eval_seconds": 0.01, "speedup": 50.0,
                         "proof_points": 60, "proof_start": None, "proof_end": None, "proof_step_seconds": 60,
                         "validated": r < 7, "rejection_reason": "" if r < 7 else "no speedup"})
    out["recording_rules"] = (_table(rows), ["total_eval_seconds", "monthly_cost_usd"])
    rows = [{"source": source, "tenant": tenant, "log_location": "/var/log/prometheus/query.log",
             "log_files": ["query.log"], "lines": 1_000_000, "in_window": 920_798, "before_window": 40_000,
             "after_window": 37_227, "bad_lines": 1975, "without_timing": 0, "unreadable_files": 0,
             "api_queries": 828_873, "rule_evaluations": 91_925, "distinct_queries": 58_824, "unparsable_queries": 1,
             "unparsable_executions": 537, "enormous_queries": 1, "groups": 36_884, "groups_with_site": 8600,
             "groups_considered": 10, "suggested": 7, "rejected": 3, "already_recorded": 0, "name_conflicts": 0,
             "errors": []} for source, tenant in places]
    out["recording_rules_inputs"] = (_table(rows), [])
    rows = []
    for i in range(100 * scale):
        rows.append({"source": "prom", "tenant": "", "service": f"svc-{i:03d}", "slo": "availability",
                     "slo_id": f"svc-{i:03d}-availability", "spec_file": f"slos/svc-{i:03d}.yaml",
                     "team": TEAMS[i % len(TEAMS)], "tier": "standard", "objective": 99.9, "period": "30d",
                     "period_start": None, "period_end": None, "sli": "events", "errors": 10.0, "requests": 1e6,
                     "error_ratio": 1e-5, "budget_remaining": 0.9, "unknown_reason": "", "burn_rate_period": 0.1,
                     **{f"burn_rate_{w}": 0.1 for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d")},
                     "time_to_exhaustion_hours": None, "decision": "deploy", "alert_name": f"Svc{i}HighErrorRate"})
    out["slo_budget"] = (_table(rows), [])
    return out


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    import pyarrow as pa

    return pa.Table.from_pylist(rows)


def datasets() -> dict[str, Any]:
    """dataset name -> the producers' own Dataset objects (schemas, versions)."""
    from traceo_finops.cardinality.config_audit import CONFIG_FINDINGS
    from traceo_finops.cardinality.dataset import CARDINALITY, SHOWBACK
    from traceo_finops.cost_report.dataset import (
        ACTIONS,
        COST_ANOMALIES,
        COST_INPUTS,
        COST_SUMMARY,
        COST_TREND,
        STORAGE,
    )
    from traceo_finops.recording_rules.dataset import RECORDING_RULES, RECORDING_RULES_INPUTS
    from traceo_finops.rightsizing.dataset import RIGHTSIZING
    from traceo_finops.s3tiering.dataset import s3_tiering_dataset
    from traceo_finops.slo.dataset import SLO_BUDGET

    return {d.name: d for d in (CARDINALITY, SHOWBACK, CONFIG_FINDINGS, RIGHTSIZING, RECORDING_RULES,
                                RECORDING_RULES_INPUTS, s3_tiering_dataset(AGE_BANDS), SLO_BUDGET, STORAGE,
                                COST_SUMMARY, ACTIONS, COST_ANOMALIES, COST_INPUTS, COST_TREND)}


DAGS = {
    "finops_cardinality": ("cardinality", "showback", "config_findings"),
    "finops_rightsizing": ("rightsizing",),
    "finops_s3_tiering": ("s3_tiering",),
    "finops_recording_rules": ("recording_rules", "recording_rules_inputs"),
    "finops_slo": ("slo_budget",),
}


def day_table(base: pa.Table, dollars: list[str], f: float, day: date, with_window: bool) -> pa.Table:
    import pyarrow as pa
    import pyarrow.compute as pc

    table = base
    for c in dollars:
        i = table.column_names.index(c)
        table = table.set_column(i, c, pc.multiply(table.column(c), pa.scalar(f)))
    if with_window:
        start, end = _window(day)
        ts = pa.timestamp("s", tz="UTC")
        table = table.append_column("window_start", pa.array([start] * table.num_rows, ts))
        table = table.append_column("window_end", pa.array([end] * table.num_rows, ts))
    return table


def commit(store: Any, dag_id: str, day: date, run_id: str, parts: list[tuple[Any, Any]], coverage: str) -> None:
    """Write ``parts`` and the kit's ``run_targets``/``quality_checks``, then the commit marker last (kit layout)."""
    from traceo_finops.kit.datasets import QUALITY_CHECKS, RUN_TARGETS
    from traceo_finops.kit.publish import commit_path

    start, end = _window(day)
    meta = {"dag_id": dag_id, "window_start": start.isoformat(), "window_end": end.isoformat()}
    written: dict[str, Any] = {}
    for dataset, rows in parts:
        w = store.write_partition(dataset, day, rows, meta, run_id=run_id)
        written[dataset.name] = {**w.as_dict(), "run_id": run_id}
    kit = {"dag_id": dag_id}
    targets = [{"target": s if not t else f"{s}/{t}", "kind": "tenant" if t else "source", "source": s, "tenant": t,
                "bucket": "", "status": "ok", "error": "", "rows_written": 1, "note": "", "window_start": start,
                "window_end": end} for s, t in PLACES]
    checks = [{"dataset": d.name, "suite": f"{d.name}_suite", "rows": int(w["rows"]), "expectations_run": 10,
               "failures": [], "success": True, "checked_at": end} for d, _ in parts for w in [written[d.name]]]
    for dataset, rows in ((RUN_TARGETS, targets), (QUALITY_CHECKS, checks)):
        w = store.write_partition(dataset, day, rows, meta, run_id=run_id, partition=kit)
        written[dataset.name] = {**w.as_dict(), "run_id": run_id, "partition": kit}
    marker = {"dag_id": dag_id, "run_id": run_id, "report_date": day.isoformat(),
              "committed_at": end.isoformat(), "window": {"start": start.isoformat(), "end": end.isoformat(),
                                                          "from_lookback": False},
              "datasets": written, "artifacts": [], "coverage": coverage, "failed_targets": []}
    store.write_file(commit_path(store, dag_id, day), json.dumps(marker, indent=1, default=str).encode())


def storage_facts(n: int) -> list[dict[str, Any]]:
    """The storage step's results for every target (what 41 mapped ``storage`` tasks hand to ``write_report``)."""
    from traceo_finops.kit.context import Target, TargetKind
    from traceo_finops.kit.outcome import TargetResult

    f = factor(n)
    out = [TargetResult(Target(TargetKind.SOURCE, "prom", conn_id="prometheus_default"), payload={
        "kind": "prometheus", "facts": {"instances": 2, "blocks_bytes": 4.0e11 * f, "chunk_bytes_sum": 1.3e9,
                                        "chunk_samples_sum": 1.0e9, "samples_per_second": 333_000.0 * f,
                                        "active_series": 1.0e6, "retention_time_seconds": 15 * 86400.0}}).as_dict()]
    for t in TENANTS:
        out.append(TargetResult(Target(TargetKind.TENANT, "mimir", t, conn_id="mimir"), payload={
            "kind": "mimir_tenant", "facts": {"samples_per_second": 8000.0 * f, "active_series": 250_000.0}}).as_dict())
    return out


def config_dict(root: str) -> dict[str, Any]:
    return {"report_root": root, "sources": [{"name": "prom"},
                                             {"name": "mimir", "conn_id": "mimir", "flavor": "mimir",
                                              "tenants": TENANTS}]}


def run_context(root: str, day: date, run_id: str) -> Any:
    from traceo_finops.config import FinopsConfig
    from traceo_finops.kit.context import RunContext
    from traceo_finops.reports import ReportStore
    from traceo_finops.window import Window

    start, end = _window(day)
    return RunContext(cfg=FinopsConfig.model_validate(config_dict(root)), workflow="cost_report",
                      dag_id="finops_cost_report", run_id=run_id, window=Window(start, end),
                      store_factory=lambda _c: ReportStore(root))


def generate(root: Path, days: int, scale: int) -> dict[str, Any]:
    """Write the year (see the module docstring); the cost report's own last day is left to the build."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from traceo_finops.cost_report import workflow as wf
    from traceo_finops.cost_report.dataset import INPUT_USED
    from traceo_finops.cost_report.model import cost_summary
    from traceo_finops.cost_report.recommend import Provenance, actions
    from traceo_finops.cost_report.trend import day_totals, trend_rows
    from traceo_finops.kit.outcome import TargetResult
    from traceo_finops.reports import ReportStore

    shutil.rmtree(root, ignore_errors=True)
    store = ReportStore(str(root))
    ds = datasets()
    bases = base_tables(scale)
    # The cost report's history: its own model on factor-1 rows, scaled per day (the model is linear in dollars).
    upstream1 = {name: t.to_pylist() for name, (t, _) in bases.items()}
    ctx1 = run_context(str(root), END, "gen")
    storage1 = wf.storage_rows(ctx1, [TargetResult.from_dict(r) for r in storage_facts(0)], upstream1["s3_tiering"])
    for r in storage1:
        r.pop("window_start", None)
        r.pop("window_end", None)
    prov = {n: Provenance(store.dataset_uri(n)) for n in upstream1}
    summary1 = cost_summary({**upstream1, "storage": storage1})
    actions1 = actions(upstream1, prov)
    tables = {
        "storage": (pa.Table.from_pylist(storage1), ["monthly_cost_usd"]),
        "cost_summary": (pa.Table.from_pylist(summary1),
                         ["current_monthly_usd", "projected_monthly_usd", "saving_monthly_usd"]),
        "actions": (pa.Table.from_pylist(actions1), ["monthly_saving_usd"]),
    }
    t0 = time.perf_counter()
    counts: dict[str, int] = {}
    trend: list[dict[str, Any]] = []  # the newest committed cost_trend's rows (what the build reads back)
    trend_runs: dict[date, str] = {}  # report date -> committed cost_summary run
    for n in range(days):
        day = END - timedelta(days=days - 1 - n)
        f = factor(n)
        for dag_id, names in DAGS.items():
            parts = [(ds[name], day_table(bases[name][0], bases[name][1], f, day, name not in ("slo_budget",)))
                     for name in names]
            if dag_id == "finops_slo":
                start, end = _window(day)
                parts = [(ds["slo_budget"], day_table(bases["slo_budget"][0], [], f, day, True)
                          .set_column(bases["slo_budget"][0].column_names.index("period_start"), "period_start",
                                      pa.array([start - timedelta(days=29)] * bases["slo_budget"][0].num_rows,
                                               pa.timestamp("s", tz="UTC")))
                          .set_column(bases["slo_budget"][0].column_names.index("period_end"), "period_end",
                                      pa.array([end] * bases["slo_budget"][0].num_rows, pa.timestamp("s", tz="UTC"))))]
            commit(store, dag_id, day, f"{dag_id}-{day}", parts, f"{len(PLACES)} of {len(PLACES)} targets")
            for d, t in parts:
                counts[d.name] = t.num_rows
        if day == END:
            continue
        prev = factor(n - 7) if n >= 7 else None
        summary = day_table(*tables["cost_summary"], f, day, True)
        cur = summary.column("current_monthly_usd")
        if prev is None:
            nulls = pa.nulls(summary.num_rows, pa.float64())
            wow = {"previous_monthly_usd": nulls, "wow_change_usd": nulls, "wow_change_pct": nulls}
        else:
            previous = pc.multiply(cur, pa.scalar(prev / f))
            change = pc.subtract(cur, previous)
            wow = {"previous_monthly_usd": previous, "wow_change_usd": change,
                   "wow_change_pct": pc.divide(change, previous)}
        for name, col in wow.items():
            summary = summary.append_column(name, col)
        start, end = _window(day)
        run_id = f"finops_cost_report-{day}"
        trend = trend_rows(day, day_totals(day, summary.select(["category", "current_monthly_usd",
                                                                  "projected_monthly_usd", "saving_monthly_usd"])
                                           .to_pylist(), run_id),
                           trend, trend_runs, lambda _d: None)
        trend_runs[day] = run_id
        inputs = [{"dataset": name, "status": INPUT_USED, "report_date": day, "schema_version": ds[name].version,
                   "rows": counts.get(name, 0), "uri": store.dataset_uri(name), "reason": "",
                   "window_start": start, "window_end": end}
                  for name in ("cardinality", "config_findings", "recording_rules", "rightsizing", "s3_tiering",
                               "showback", "storage")]
        commit(store, "finops_cost_report", day, run_id, [
            (ds["storage"], day_table(*tables["storage"], f, day, True)),
            (ds["cost_summary"], summary),
            (ds["actions"], day_table(*tables["actions"], f, day, True)),
            (ds["cost_anomalies"], []),
            (ds["cost_inputs"], inputs),
            (ds["cost_trend"], [{**r, "window_start": start, "window_end": end} for r in trend])],
            f"{len(PLACES)} of {len(PLACES)} sources")
        if n % 30 == 0:
            print(f"  generated {n + 1}/{days} days ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    files = [p for p in root.rglob("*") if p.is_file()]
    meta = {"version": GEN_VERSION, "days": days, "scale": scale, "end": END.isoformat(), "files": len(files),
            "bytes": sum(p.stat().st_size for p in files), "rows_per_partition": counts,
            "cost_summary_rows": len(summary1), "actions_rows": len(actions1),
            "generated_in_s": round(time.perf_counter() - t0, 1)}
    (root / "_bench.json").write_text(json.dumps(meta, indent=1))
    return meta


# -- children ----------------------------------------------------------------------------------------------------
def child_build(root: str, profile: bool) -> dict[str, Any]:
    """The DAG's write_report + post_digest steps for END (in a fresh process)."""
    from traceo_finops.cost_report import workflow as wf
    from traceo_finops.kit.publish import publish

    days = int(json.loads((Path(root) / "_bench.json").read_text())["days"])
    inputs = storage_facts(days - 1)
    ctx = run_context(root, END, f"bench-{os.getpid()}")
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    report, results = wf.build(ctx, inputs)
    t1 = time.perf_counter()
    written = publish(ctx, report, results)
    t2 = time.perf_counter()
    digest = wf.digest(ctx, written)
    t3 = time.perf_counter()
    out: dict[str, Any] = {"build_s": t1 - t0, "publish_s": t2 - t1, "digest_s": t3 - t2, "total_s": t3 - t0,
                           "rows": {n: e["rows"] for n, e in written["datasets"].items()},
                           "summary": report.summary, "digest_title": digest.title,
                           "maxrss_self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if prof is not None:
        import pstats

        prof.disable()
        stats = pstats.Stats(prof)
        wanted = {"__init__": "upstream.py", "snapshot": "upstream.py", "history": "workflow.py",
                  "detect": "anomaly.py", "cost_summary": "model.py", "actions": "recommend.py",
                  "read_committed": "publish.py", "check": "quality.py", "_markers_of": "publish.py",
                  "to_pylist": "", "commits": "publish.py"}
        cum: dict[str, float] = {}
        for (file, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            if name in wanted and wanted[name] in file:
                key = f"{Path(file).name}:{name}" if wanted[name] else name
                cum[key] = max(cum.get(key, 0.0), ct)
        out["profile_cumulative_s"] = {k: round(v, 2) for k, v in sorted(cum.items(), key=lambda kv: -kv[1])}
    return out


def read_set(root: str, history_days: int, whole_year: bool) -> list[str]:
    """The partition files of the datasets the build reads: the history window's days, or every day."""
    from traceo_finops.cost_report.upstream import known_versions

    files = []
    start = END - timedelta(days=history_days)
    for name in known_versions():
        for p in sorted((Path(root) / name).glob("report_date=*/part-0.parquet")):
            day = date.fromisoformat(p.parent.name.split("=", 1)[1])
            if whole_year or start <= day <= END:
                files.append(str(p))
    return files


def child_floor(root: str, whole_year: bool) -> dict[str, Any]:
    """pyarrow reading the same files (all columns, threaded) — the floor of any reader of them."""
    import pyarrow.parquet as pq

    files = read_set(root, 28, whole_year)
    t0 = time.perf_counter()
    rows = sum(pq.read_table(f).num_rows for f in files)
    return {"total_s": time.perf_counter() - t0, "files": len(files), "rows": rows,
            "maxrss_self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def s3_options() -> dict[str, Any]:
    endpoint = os.environ.get("DEVSTACK_S3_ENDPOINT", "http://127.0.0.1:19500")
    scheme, _, host = endpoint.partition("://")
    return {"access_key": "testing", "secret_key": "testing", "region": "us-east-1", "endpoint_override": host,
            "scheme": scheme}


def child_page(root: str, repeats: int, *flags: str) -> dict[str, Any]:
    """``report_page`` + ``json.dumps`` (the API route's work): the first request of a fresh process, then warm.

    Flags: ``full`` — S3 folders listed whole on every request (as every ``FULL_LISTING_EVERY`` seconds), not only
    their newest keys; ``every-marker`` — the baseline: every commit marker read (``ui.markers_by_dag``, what the
    page did before it read only the markers it shows). On S3 the requests of each call are counted (boto3's
    ``before-call`` event)."""
    from traceo_finops import ui
    from traceo_finops.reports import ReportStore

    if "full" in flags:
        ui.FULL_LISTING_EVERY = -1.0
    if "every-marker" in flags:
        ui.page_markers = lambda store, *_a, **_k: ui.markers_by_dag(store)  # type: ignore[misc]
    if "old-trend" in flags:  # the page before cost_trend: the trend from each day's cost_summary
        ui.COST_TREND = "(cost_trend not read)"

    store = ReportStore(root, s3_options=s3_options() if root.startswith("s3://") else None)
    calls: dict[str, int] = {}
    if store.is_s3:
        def count(model: Any, **_: Any) -> None:
            calls[model.name] = calls.get(model.name, 0) + 1

        ui._s3(store).meta.events.register("before-call.s3", count)
    times, size, page, requests = [], 0, {}, []
    for _ in range(repeats):
        calls.clear()
        t0 = time.perf_counter()
        page = ui.report_page(store, END)
        size = len(json.dumps(page))
        times.append(time.perf_counter() - t0)
        requests.append(dict(calls))
    return {"times_s": times, "json_bytes": size, "trend": len(page.get("trend") or []),
            "actions": len(page.get("actions") or []), "datasets": len(page.get("datasets") or []),
            "totals": page.get("totals"), "status": page.get("status"), "requests": requests,
            "page_sha256": hashlib.sha256(json.dumps({**page, "trend": None}, sort_keys=True).encode()).hexdigest(),
            "trend_points": page.get("trend") or [],
            "maxrss_self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def in_child(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run this file's ``args`` sub-command in a fresh interpreter; its wall and peak RSS from ``os.wait4``."""
    t0 = time.perf_counter()
    # stderr to a file: Great Expectations draws progress bars there; shown only when the child fails.
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, "PYTHONPATH": f"{ROOT / 'include'}:{ROOT}", **(env or {})})
        out = proc.stdout.read() if proc.stdout else ""
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            raise SystemExit(f"child {args} failed with exit code {code}:\n{err.read()[-4000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # KiB on Linux
    return result


def upload_s3(root: Path, prefix: str) -> float:
    """Copy the lake to ``s3://S3_BUCKET/prefix`` on the devstack's moto (threaded); return seconds."""
    import boto3
    import pyarrow.fs as pafs

    opts = s3_options()
    client = boto3.client("s3", endpoint_url=f"{opts['scheme']}://{opts['endpoint_override']}",
                          aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket=S3_BUCKET)
    t0 = time.perf_counter()
    s3 = pafs.S3FileSystem(**opts)
    from concurrent.futures import ThreadPoolExecutor

    files = [p for p in root.rglob("*") if p.is_file() and "_staging" not in p.parts and p.name != "_bench.json"]

    def put(p: Path) -> None:
        with s3.open_output_stream(f"{S3_BUCKET}/{prefix}/{p.relative_to(root).as_posix()}") as out:
            out.write(p.read_bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, files))
    return time.perf_counter() - t0


def drop_s3() -> None:
    import boto3

    opts = s3_options()
    client = boto3.client("s3", endpoint_url=f"{opts['scheme']}://{opts['endpoint_override']}",
                          aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):
            client.delete_objects(Bucket=S3_BUCKET, Delete={"Objects": keys[i:i + 1000]})
    client.delete_bucket(Bucket=S3_BUCKET)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        cmd, *rest = sys.argv[1:]
        result = {"_build": lambda: child_build(rest[0], rest[1] == "1"),
                  "_floor": lambda: child_floor(rest[0], rest[1] == "1"),
                  "_page": lambda: child_page(rest[0], int(rest[1]), *rest[2:]),
                  "_generate": lambda: generate(Path(rest[0]), int(rest[1]), int(rest[2]))}[cmd]()
        print(json.dumps(result, default=str))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--scale", type=int, default=1, help="multiply every dataset's rows per partition")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--root", default=None)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--no-s3", action="store_true", help="skip the page on the devstack's S3")
    parser.add_argument("--keep-s3", action="store_true", help="leave the uploaded lake on the devstack's S3")
    parser.add_argument("--profile", action="store_true", help="one more build under cProfile: where the time goes")
    args = parser.parse_args()
    root = Path(args.root or ROOT / "bench" / "out" / f"cost-report-lake-x{args.scale}")
    meta_file = root / "_bench.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    if args.regenerate or (meta.get("version"), meta.get("days"), meta.get("scale")) != (GEN_VERSION, args.days,
                                                                                       args.scale):
        print(f"generating {args.days} days at scale {args.scale} into {root} …", flush=True)
        meta = in_child("_generate", str(root), str(args.days), str(args.scale))
    print(f"lake: {meta['days']} days, {meta['files']:,} files, {meta['bytes'] / 2**20:.0f} MiB; rows per partition "
          f"{meta['rows_per_partition']}; cost_summary {meta['cost_summary_rows']} rows, actions "
          f"{meta['actions_rows']} rows", flush=True)
    print(f"machine: {os.cpu_count()} cpu, load {os.getloadavg()[0]:.2f}", flush=True)
    for run in range(1, args.runs + 1):
        load = os.getloadavg()[0]
        ours = in_child("_build", str(root), "0")
        floor = in_child("_floor", str(root), "0")
        year = in_child("_floor", str(root), "1")
        print(json.dumps({"run": run, "load": round(load, 2), "ours": ours, "floor_window": floor, "floor_year": year},
                         default=str), flush=True)
        print(f"run {run} (load {load:.2f}): build {ours['total_s']:.2f} s (build {ours['build_s']:.2f} + publish "
              f"{ours['publish_s']:.2f} + digest {ours['digest_s']:.2f}), process {ours['process_wall_s']:.2f} s, "
              f"peak RSS {ours['peak_rss_mib']:.0f} MiB | floor (same {floor['files']} files) "
              f"{floor['total_s']:.2f} s {floor['peak_rss_mib']:.0f} MiB → ratio "
              f"{ours['total_s'] / floor['total_s']:.1f}x"
              f" | whole year ({year['files']} files) {year['total_s']:.2f} s {year['peak_rss_mib']:.0f} MiB",
              flush=True)
        goal = ours["process_wall_s"] <= 60 and ours["peak_rss_mib"] <= 1024
        print(f"  goal ≤ 60 s and ≤ 1 GB: {'met' if goal else 'MISSED'}", flush=True)
    if args.profile:
        prof = in_child("_build", str(root), "1")
        print(f"profiled build {prof['total_s']:.2f} s; cumulative: {prof.get('profile_cumulative_s')}", flush=True)
    pages = {"local": measure_page(str(root))}
    if not args.no_s3:
        prefix = f"lake-x{args.scale}"
        took = upload_s3(root, prefix)
        print(f"uploaded to s3://{S3_BUCKET}/{prefix} in {took:.0f} s", flush=True)
        try:
            pages["s3"] = measure_page(f"s3://{S3_BUCKET}/{prefix}")
        finally:
            if not args.keep_s3:
                drop_s3()
    if "s3" in pages:
        same = all(pages["s3"][k]["totals"] == pages["local"][k]["totals"] and
                   pages["s3"][k]["trend"] == pages["local"][k]["trend"] for k in pages["local"])
        print(f"S3 pages show the same totals and trend as local: {same}", flush=True)


def measure_page(root: str) -> dict[str, Any]:
    """The page API on ``root``: a fresh process with no cache anywhere, then fresh processes with the disk cache
    the first one left (a restarted api-server, another worker); 5 requests each (the first, then warm)."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="finops-ui-cache-") as cache:
        env = {"FINOPS_UI_CACHE_DIR": cache}
        runs = [("no cache", ()), ("disk cache", ()), ("disk cache again", ())]
        if root.startswith("s3://"):
            runs.append(("disk cache, S3 folders listed whole each request", ("full",)))
        for label, extra in runs:
            out[label] = _page_run(root, label, extra, env)
    with tempfile.TemporaryDirectory(prefix="finops-ui-cache-") as cache:  # the baselines, side by side
        out["baseline: trend"] = _page_run(root, "baseline: no cache, trend from each day's cost_summary (before "
                                           "cost_trend)", ("old-trend",), {"FINOPS_UI_CACHE_DIR": cache})
    with tempfile.TemporaryDirectory(prefix="finops-ui-cache-") as cache:
        out["baseline"] = _page_run(root, "baseline: no cache, every marker read, trend from each cost_summary",
                                    ("every-marker", "old-trend"), {"FINOPS_UI_CACHE_DIR": cache})
    same = len({r["page_sha256"] for r in out.values()}) == 1
    ref = out["no cache"]["trend_points"]
    trend_same = all([p["report_date"] for p in r["trend_points"]] == [p["report_date"] for p in ref] and all(
        abs(p[k] - q[k]) <= 0.011 for p, q in zip(r["trend_points"], ref, strict=True)
        for k in ("current", "projected", "saving")) for r in out.values())
    print(f"page API {root}: every run above answers the same page: {same}; the same trend to the cent: "
          f"{trend_same}", flush=True)
    return out


def _page_run(root: str, label: str, flags: tuple[str, ...], env: dict[str, str]) -> dict[str, Any]:
    load = os.getloadavg()[0]
    r = in_child("_page", root, "5", *flags, env=env)
    ms = [round(t * 1000) for t in r["times_s"]]
    first = ", ".join(f"{k} {v}" for k, v in sorted(r["requests"][0].items())) if r["requests"][0] else ""
    print(f"page API {root} [{label}]: first {ms[0]} ms, warm {min(ms[1:])}-{max(ms[1:])} ms; trend "
          f"{r['trend']} points, {r['actions']} actions, {r['datasets']} datasets, JSON "
          f"{r['json_bytes'] / 1e3:.0f} kB; peak RSS {r['peak_rss_mib']:.0f} MiB; load {load:.2f} → "
          f"{os.getloadavg()[0]:.2f}" + (f"; first request's S3 calls: {first}" if first else ""), flush=True)
    return r


if __name__ == "__main__":
    main()
