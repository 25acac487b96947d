"""The ``rightsizing`` dataset (one row per workload × container), its rows and the Slack digest."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

from traceo_finops.quality import Expect, between, not_null, one_of, unique_together
from traceo_finops.reports import Dataset
from traceo_finops.reports import column as _f
from traceo_finops.rightsizing.model import BATCH_KINDS, ContainerUsage, WorkloadInfo
from traceo_finops.rightsizing.queries import Resolution
from traceo_finops.rightsizing.recommend import Policy, Prices, Recommendation, Status, costs, recommend
from traceo_finops.slack import Digest

DATASET_NAME = "rightsizing"
F64, I64, STR, BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()




RIGHTSIZING = Dataset(
    name=DATASET_NAME,
    version=2,  # v2: statuses (every status that applies), runs (batch workloads)
    description="Per workload container: current and recommended CPU/memory requests and limits, the usage "
                "percentiles behind them, confidence, statuses and monthly cost now/after/saving.",
    schema=pa.schema([
        _f("source", STR), _f("tenant", STR),
        _f("namespace", STR),  # "" for observability-stack processes
        _f("workload_kind", STR), _f("workload_name", STR), _f("container", STR),
        _f("replicas", I64), _f("billed_replicas", F64), _f("pods_seen", I64),
        _f("runs", I64, True),  # batch workloads (Job, CronJob): pods that ran in the window; null otherwise
        _f("hpa", STR, True),
        # Sizes: CPU in cores, memory in bytes; null = not set (current) or no data (recommended).
        _f("current_cpu_request", F64, True), _f("current_cpu_limit", F64, True),
        _f("current_memory_request", F64, True), _f("current_memory_limit", F64, True),
        _f("recommended_cpu_request", F64, True), _f("recommended_cpu_limit", F64, True),
        _f("recommended_memory_request", F64, True), _f("recommended_memory_limit", F64, True),
        _f("cpu_percentile", F64),  # which percentile the CPU request is built on (0.95 = p95)
        _f("cpu_p50", F64, True), _f("cpu_p90", F64, True), _f("cpu_p95", F64, True), _f("cpu_p99", F64, True),
        _f("cpu_max", F64, True), _f("cpu_baseline", F64, True),
        _f("memory_p99", F64, True), _f("memory_peak", F64, True),
        _f("oom_killed", BOOL), _f("restarts", I64), _f("last_oom_limit", F64, True),
        _f("history_days", F64), _f("coverage", F64), _f("confidence_days", F64), _f("confidence", F64),
        _f("status", STR),  # the first of statuses
        _f("statuses", pa.list_(STR)),  # every status that applies, in the order of precedence
        _f("reason", STR),
        _f("monthly_cost_now_usd", F64), _f("monthly_cost_after_usd", F64), _f("monthly_saving_usd", F64),
        _f("resolution_seconds", I64), _f("rate_window_seconds", I64),
        _f("window_start", pa.timestamp("s", tz="UTC")), _f("window_end", pa.timestamp("s", tz="UTC")),
    ]),
    expectations=(
        *not_null("source", "namespace", "workload_kind", "workload_name", "container", "status", "statuses",
                  "replicas", "monthly_cost_now_usd", "monthly_cost_after_usd", "monthly_saving_usd", "confidence"),
        one_of("status", [s.value for s in Status]),
        unique_together("source", "tenant", "namespace", "workload_kind", "workload_name", "container"),
        between("confidence", 0, 1), between("coverage", 0, 1), between("history_days", min_value=0),
        between("replicas", min_value=0), between("billed_replicas", min_value=0), between("runs", min_value=0),
        between("monthly_cost_now_usd", min_value=0), between("monthly_cost_after_usd", min_value=0),
        between("recommended_cpu_request", min_value=0.001), between("recommended_memory_request", min_value=2**20),
        between("cpu_max", min_value=0), between("memory_peak", min_value=0),
        Expect("ExpectColumnPairValuesAToBeGreaterThanB",
               {"column_A": "cpu_max", "column_B": "cpu_p50", "or_equal": True,
                "ignore_row_if": "either_value_is_missing"}),
        Expect("ExpectColumnPairValuesAToBeGreaterThanB",
               {"column_A": "recommended_memory_limit", "column_B": "recommended_memory_request", "or_equal": True,
                "ignore_row_if": "either_value_is_missing"}),
    ),
)


def rows(source: str, tenant: str, containers: Iterable[ContainerUsage],
         workloads: dict[tuple[str, str, str], WorkloadInfo], policy: Policy, prices: Prices, res: Resolution,
         window_start: datetime, window_end: datetime) -> tuple[list[dict[str, Any]], list[Recommendation]]:
    """Recommend and price every workload container; returns the rows and their recommendations."""
    containers = list(containers)
    alive_by_workload: dict[tuple[str, str, str], int] = {}
    for c in containers:  # bare pods and kinds without a replicas series: the pods running at the end
        key = (c.namespace, c.kind, c.name)
        alive_by_workload[key] = max(alive_by_workload.get(key, 0), c.alive_pods)
    window = (window_end - window_start).total_seconds()
    out, recs = [], []
    for c in containers:
        key = (c.namespace, c.kind, c.name)
        info = workloads.get(key) or WorkloadInfo(*key)
        replicas = info.replicas if info.replicas is not None else alive_by_workload[key]
        batch = c.kind in BATCH_KINDS
        if info.hpa is None and info.replicas is not None and not batch:
            billed = float(replicas)  # fixed replicas: what runs now is what will run
        elif info.avg_replicas is not None:
            billed = info.avg_replicas  # HPA-scaled workloads and Jobs: what ran on average
        elif batch:
            # No job metrics (kube_job_status_active): the runs' running time over the window. Pods that
            # exist at the end have mostly finished (kept for their logs) and reserve nothing.
            billed = sum(r.seconds for r in c.runs) / window if window > 0 else 0.0
        else:
            billed = float(replicas)
        billed = round(billed, 4)  # the dollars use exactly the figure the row shows
        # Calendar time observed: pod lifetimes over the pods that exist side by side (never past the window).
        c.history_seconds = min(window, c.pod_seconds / max(1.0, info.avg_replicas or alive_by_workload[key] or 1))
        rec = recommend(c, policy, info.hpa)
        now, after, saving = costs(c, rec, billed, prices)
        out.append({
            "source": source, "tenant": tenant, "namespace": c.namespace, "workload_kind": c.kind,
            "workload_name": c.name, "container": c.container, "replicas": int(replicas),
            "billed_replicas": billed, "pods_seen": len(c.pods), "runs": rec.confidence.runs, "hpa": info.hpa,
            "current_cpu_request": c.cpu_request, "current_cpu_limit": c.cpu_limit,
            "current_memory_request": c.memory_request, "current_memory_limit": c.memory_limit,
            "recommended_cpu_request": rec.cpu_request, "recommended_cpu_limit": rec.cpu_limit,
            "recommended_memory_request": rec.memory_request, "recommended_memory_limit": rec.memory_limit,
            "cpu_percentile": policy.cpu_percentile,
            # Batch workloads: each percentile over the runs of the runs' own (recommend.run_cpu).
            **{f"cpu_{k}": rec.cpu.get(k) for k in ("p50", "p90", "p95", "p99", "max")},
            "cpu_baseline": rec.cpu_baseline,
            "memory_p99": c.memory_p99, "memory_peak": c.memory_peak,
            "oom_killed": c.oom_killed, "restarts": c.restarts, "last_oom_limit": c.last_oom_limit,
            "history_days": round(rec.confidence.history_days, 4), "coverage": round(rec.confidence.coverage, 4),
            "confidence_days": round(rec.confidence.days, 4), "confidence": round(rec.confidence.score, 4),
            "status": rec.status.value, "statuses": [s.value for s in rec.statuses], "reason": rec.reason,
            "monthly_cost_now_usd": now, "monthly_cost_after_usd": after, "monthly_saving_usd": saving,
            "resolution_seconds": res.step, "rate_window_seconds": res.rate_window,
            "window_start": window_start, "window_end": window_end,
        })
        recs.append(rec)
    return out, recs


def digest(report_rows: Sequence[dict[str, Any]], report_uri: str, report_date: str, top_n: int,
           artifacts: str = "") -> Digest:
    """Totals by status and the biggest savings."""
    def total(key: str, status: str | None = None) -> float:
        return sum(float(r[key]) for r in report_rows if status is None or r["status"] == status)

    saving = total("monthly_saving_usd")
    fixing = -total("monthly_saving_usd", Status.UNDER) - total("monthly_saving_usd", Status.NO_REQUESTS)
    by_status: dict[str, int] = {}
    for r in report_rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    top = sorted(report_rows, key=lambda r: -float(r["monthly_saving_usd"]))[:top_n]
    return Digest(
        title=f"Right-sizing {report_date}",
        summary=(f"*{len(report_rows):,}* containers: requests cost *${total('monthly_cost_now_usd'):,.2f}/month*; "
                 f"applying the proposed requests saves *${saving:,.2f}/month* "
                 f"(over-provisioned *${total('monthly_saving_usd', Status.OVER):,.2f}*, fixing under-provisioned "
                 f"and missing requests costs *${fixing:,.2f}*)."),
        facts={s.value: f"{by_status.get(s.value, 0):,}" for s in Status},
        table_header=("workload", "container", "cpu now→rec", "mem now→rec", "$/month"),
        table_rows=[(f"{r['namespace']}/{r['workload_name']}" if r["namespace"] else r["workload_name"],
                     r["container"], f"{_cpu(r['current_cpu_request'])}→{_cpu(r['recommended_cpu_request'])}",
                     f"{_mem(r['current_memory_request'])}→{_mem(r['recommended_memory_request'])}",
                     f"{float(r['monthly_saving_usd']):,.2f}") for r in top],
        footer=f"Report: {report_uri}" + (f" · patches: {artifacts}" if artifacts else ""),
    )


def _cpu(cores: float | None) -> str:
    return "-" if cores is None else f"{cores * 1000:.0f}m"


def _mem(nbytes: float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**20:.0f}Mi"
