"""The steps of ``finops_rightsizing``, as plain functions the DAG's tasks call (no Airflow here).

1. :func:`plan_sources` — per source/tenant: check metrics, choose the resolution, cut namespace batches;
2. :func:`collect` — one batch (one mapped task each): discovery + usage, mergeable pieces;
3. :func:`collect_stack_all` — the observability stack's own processes;
4. :func:`build_report` — merge, recommend, price; rows of the ``rightsizing`` dataset and the files that go
   beside it (patches, ``apply-patches.sh``, optional ``vpa.yaml``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter

from traceo_finops.config import Duration, FinopsConfig
from traceo_finops.prometheus import SourceSpec
from traceo_finops.rightsizing import manifests
from traceo_finops.rightsizing import queries as q
from traceo_finops.rightsizing.collect import collect_batch, plan
from traceo_finops.rightsizing.dataset import RIGHTSIZING, rows
from traceo_finops.rightsizing.model import ContainerUsage, merge
from traceo_finops.rightsizing.recommend import Policy, Prices
from traceo_finops.rightsizing.stack import allocations_from_settings, collect_stack

log = logging.getLogger(__name__)
SpecFor = Callable[[dict[str, str]], SourceSpec]


@dataclass(frozen=True)
class SizingWindow:
    """The history a run reads: ``history`` up to ``end`` (the run's data interval end unless overridden)."""

    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def report_date(self) -> Any:
        return (self.end - timedelta(microseconds=1)).date()

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "report_date": self.report_date.isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> SizingWindow:
        return cls(datetime.fromisoformat(data["start"]), datetime.fromisoformat(data["end"]))


def sizing_window(run_end: datetime, history: timedelta, params: dict[str, Any] | None = None) -> SizingWindow:
    """``[end - history, end]``; DAG params ``history`` (a duration) and ``end`` (ISO time) override either."""
    params = params or {}
    if params.get("history"):
        history = TypeAdapter(Duration).validate_python(str(params["history"]))
    end = run_end
    if params.get("end"):
        end = datetime.fromisoformat(str(params["end"]).replace("Z", "+00:00"))
        if end.tzinfo is None:
            raise ValueError(f"param end={params['end']!r} needs a time zone (e.g. 2026-05-01T00:00:00Z)")
    end = datetime.fromtimestamp(end.timestamp(), UTC)
    return SizingWindow(end - history, end)


def targets(cfg: FinopsConfig) -> list[dict[str, str]]:
    return [{"source": s.name, "conn_id": s.conn_id, "flavor": s.flavor.value, "tenant": t}
            for s in cfg.sources for t in (s.tenants or [""])]


def plan_sources(cfg: FinopsConfig, window: SizingWindow, spec_for: SpecFor) -> list[dict[str, Any]]:
    """Every batch of every source/tenant, ready to be a mapped task's argument."""
    st = cfg.workflows.rightsizing
    out = []
    for target in targets(cfg):
        p = plan(spec_for(target), window.end, window.seconds, rate_window=st.rate_window.total_seconds(),
                 max_points=st.max_points, max_samples_per_query=st.max_samples_per_query,
                 namespaces=st.namespaces)
        for batch in p.batches:
            out.append({**target, "batch": batch.as_dict(), "resolution": p.resolution.as_dict(),
                        "window": window.as_dict()})
    return out


def collect(cfg: FinopsConfig, task: dict[str, Any], spec_for: SpecFor) -> dict[str, Any]:
    st = cfg.workflows.rightsizing
    window = SizingWindow.from_dict(task["window"])
    result = collect_batch(spec_for(task), q.Batch.from_dict(task["batch"]), q.Resolution.from_dict(task["resolution"]),
                           window.end, cpu_percentile=st.cpu_percentile, concurrency=st.query_concurrency)
    return {"source": task["source"], "tenant": task["tenant"], **result.as_dict()}


def collect_stack_all(cfg: FinopsConfig, window: SizingWindow, spec_for: SpecFor,
                      resolution: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The stack's processes per source/tenant (empty when ``stack_jobs`` is empty)."""
    st = cfg.workflows.rightsizing
    out = []
    for target in targets(cfg):
        res = q.Resolution.from_dict(resolution) if resolution else q.choose_resolution(
            window.seconds, st.rate_window.total_seconds(), None, st.max_points)
        containers, workloads = collect_stack(spec_for(target), st.stack_jobs, res, window.end,
                                              allocations_from_settings(st), st.cpu_percentile,
                                              st.query_concurrency)
        out.append({"source": target["source"], "tenant": target["tenant"], "resolution": res.as_dict(),
                    "containers": [c.as_dict() for c in containers], "workloads": [w.as_dict() for w in workloads]})
    return out


def build_report(cfg: FinopsConfig, pieces: Iterable[dict[str, Any]], window: SizingWindow, prices: Prices,
                 resolution: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """Rows of the ``rightsizing`` dataset and the files that go beside it."""
    st = cfg.workflows.rightsizing
    policy = Policy.from_settings(st)
    res = q.Resolution.from_dict(resolution)
    by_source: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for piece in pieces:
        by_source.setdefault((piece["source"], piece["tenant"]), []).append(piece)
    report_rows: list[dict[str, Any]] = []
    for (source, tenant), parts in sorted(by_source.items()):
        containers, workloads = merge(parts)
        r, _ = rows(source, tenant, containers, workloads, policy, prices, res, window.start, window.end)
        report_rows += r
    files = manifests.patches(report_rows)
    if st.vpa_objects:
        files["vpa.yaml"] = manifests.vpa_objects(report_rows)
    return report_rows, files


def summary(pieces: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Queries, splits, retries and skipped series over every batch (for logs and report metadata)."""
    stats: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for p in pieces:
        for k, v in (p.get("stats") or {}).items():
            stats[k] = stats.get(k, 0) + v
        for k, v in (p.get("skipped") or {}).items():
            skipped[k] = skipped.get(k, 0) + v
    return {"batches": len(pieces), **stats, "skipped": skipped}


__all__ = ["RIGHTSIZING", "ContainerUsage", "SizingWindow", "build_report", "collect", "collect_stack_all",
           "plan_sources", "sizing_window", "summary", "targets"]
