"""The steps of ``finops_rightsizing``, as plain functions the DAG's tasks call (no Airflow here).

1. :func:`targets` — per source/tenant: check metrics, choose the resolution, cut namespace batches
   (a source that fails here is recorded and the others go on);
2. :func:`collect` — one batch (one mapped task each): discovery + usage, mergeable pieces;
3. :func:`size_stack` — the observability stack's own processes, per source at that source's resolution;
4. :func:`build` — merge, recommend, price; the ``rightsizing`` dataset and the files that go beside it
   (patches, ``apply-patches.sh``, optional ``vpa.yaml``);
5. :func:`digest` — totals and the biggest savings.

The history read is :func:`run_window`: ``workflows.rightsizing.history`` up to the end of the run's
window, or the run's params ``history`` / ``end``.
"""

from __future__ import annotations

import functools
import logging
import posixpath
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypedDict

from pydantic import TypeAdapter, ValidationError

from traceo_finops.config import Duration, RightsizingSettings, config_path
from traceo_finops.kit.context import LIVE_READ_SLACK, RunContext, Target, source_targets
from traceo_finops.kit.outcome import (
    NoTargets,
    PermanentError,
    TargetResult,
    TargetResultDict,
    require_work,
    results_of,
    run_target,
)
from traceo_finops.kit.publish import Report, Written, read_committed
from traceo_finops.rightsizing import manifests
from traceo_finops.rightsizing import queries as q
from traceo_finops.rightsizing.collect import collect_batch, plan
from traceo_finops.rightsizing.dataset import RIGHTSIZING, rows
from traceo_finops.rightsizing.dataset import digest as rightsizing_digest
from traceo_finops.rightsizing.model import merge
from traceo_finops.rightsizing.recommend import Policy, Prices
from traceo_finops.rightsizing.stack import allocations_from_settings, collect_stack
from traceo_finops.shapes import Json, JsonObject
from traceo_finops.slack import Digest
from traceo_finops.window import Window, parse_utc

log = logging.getLogger(__name__)


class PlanPayload(TypedDict):
    """One source/tenant's plan: the payload of its ``plan`` target result."""

    resolution: JsonObject  # Resolution.as_dict()
    batches: list[JsonObject]  # Target.as_dict() of each namespace batch
    series: int


class Planned(TypedDict):
    """What :func:`targets` returns: every source's plan (or error), and the batches the DAG maps over."""

    plans: list[TargetResultDict]
    batches: list[JsonObject]


def _settings(ctx: RunContext) -> RightsizingSettings:
    return ctx.cfg.workflows.rightsizing


def run_window(ctx: RunContext) -> Window:
    """``[end - history, end)``: the run's window end and ``history``, or the params ``history`` / ``end``."""
    history = _settings(ctx).history
    if ctx.param("history"):
        try:
            history = TypeAdapter(Duration).validate_python(str(ctx.param("history")))
        except ValidationError as exc:
            raise PermanentError(f"param history={ctx.param('history')!r}: {exc.errors()[0]['msg']}") from None
    try:
        end = parse_utc(str(ctx.param("end")), "param end") if ctx.param("end") else None
        return ctx.window.with_history(history, end=end)
    except ValueError as exc:
        raise PermanentError(str(exc)) from None


def _plan_one(ctx: RunContext, target: Target) -> PlanPayload:
    st = _settings(ctx)
    p = plan(ctx.spec(target), ctx.window.end, ctx.window.seconds, rate_window=st.rate_window.total_seconds(),
             max_points=st.max_points, max_samples_per_query=st.max_samples_per_query, namespaces=st.namespaces)
    resolution = p.resolution.as_dict()
    batches = [target.batch(",".join(b.namespaces)[:60], batch=b.as_dict(), resolution=resolution).as_dict()
               for b in p.batches]
    return {"resolution": resolution, "batches": batches, "series": p.series}


def targets(ctx: RunContext) -> Planned:
    """Every source/tenant planned: its resolution and namespace batches (``batches`` is what is mapped over)."""
    found = source_targets(ctx.cfg)
    if not found:
        raise NoTargets(f"configuration {config_path()} has no sources: nothing to size")
    plans = [run_target(t, functools.partial(_plan_one, ctx, t), "plan") for t in found]
    batches = [b for p in plans if not p["error"] for b in p["payload"]["batches"]]
    nothing = (f"no namespace matching workflows.rightsizing.namespaces {_settings(ctx).namespaces!r} has container "
               f"series on {', '.join(t.label for t in found)}: nothing to size")
    return {"plans": plans, "batches": require_work(ctx, batches, results_of(plans), nothing,
                                                    no_data=lambda: _before_data_notes(ctx, plans))}


def _before_data_notes(ctx: RunContext, plans: Sequence[Mapping[str, Json]]) -> dict[str, str]:
    """target label -> note, when every planned source has no container series in a past window but has some now.

    Only then is an empty window "no data that day" rather than a namespace filter that matches
    nothing (which stays a :class:`NoTargets` error).
    """
    st = _settings(ctx)
    results = results_of(plans)
    if not ctx.is_past_day():
        return {}
    notes = {}
    for r in results:
        probe = plan(ctx.spec(r.target), datetime.now(UTC), LIVE_READ_SLACK.total_seconds(),
                     rate_window=st.rate_window.total_seconds(), max_points=st.max_points,
                     max_samples_per_query=st.max_samples_per_query, namespaces=st.namespaces)
        if not probe.series:
            return {}
        notes[r.target.label] = (f"no container series in the window {ctx.window.start.isoformat()} – "
                                 f"{ctx.window.end.isoformat()}: before the source's data or beyond its retention "
                                 f"({probe.series} series now)")
    return notes


def collect(ctx: RunContext, target: Target) -> JsonObject:
    """Discovery and server-side usage statistics of one namespace batch."""
    st = _settings(ctx)
    res = q.Resolution.from_dict(target.detail["resolution"])
    result = collect_batch(ctx.spec(target), q.Batch.from_dict(target.detail["batch"]), res, ctx.window.end,
                           cpu_percentile=st.cpu_percentile, concurrency=st.query_concurrency)
    return {"source": target.source, "tenant": target.tenant, "resolution": res.as_dict(), **result.as_dict()}


def size_stack(ctx: RunContext, plans: Sequence[Mapping[str, Json]]) -> list[TargetResultDict]:
    """The stack's processes per planned source/tenant, each at its own source's resolution."""
    st = _settings(ctx)
    out = []
    for planned in results_of(plans):
        if not planned.ok:
            continue
        target, res = planned.target, q.Resolution.from_dict(planned.payload["resolution"])

        def one(target: Target = target, res: q.Resolution = res) -> JsonObject:
            containers, workloads = collect_stack(ctx.spec(target), st.stack_jobs, res, ctx.window.end,
                                                  allocations_from_settings(st), st.cpu_percentile,
                                                  st.query_concurrency)
            return {"source": target.source, "tenant": target.tenant, "resolution": res.as_dict(),
                    "containers": [c.as_dict() for c in containers], "workloads": [w.as_dict() for w in workloads]}

        out.append(run_target(target, one, "size_stack"))
    return out


def build(ctx: RunContext, planned: Planned, pieces: Sequence[Mapping[str, Json]],
          stack: Sequence[Mapping[str, Json]]) -> tuple[Report, list[TargetResult]]:
    """Rows of the ``rightsizing`` dataset, each source/tenant at its own resolution, and the files beside it."""
    st = _settings(ctx)
    policy = Policy.from_settings(st)
    prices = Prices.from_table(ctx.prices)
    results = results_of(planned["plans"]) + results_of(pieces) + results_of(stack)
    by_source: dict[tuple[str, str], list[JsonObject]] = {}
    for r in results_of(pieces) + results_of(stack):
        if r.ok:
            by_source.setdefault((r.payload["source"], r.payload["tenant"]), []).append(r.payload)
    report_rows: list[dict[str, Any]] = []
    resolutions: dict[str, int] = {}
    cpu_sources: dict[str, str] = {}  # rate() or recorded:<rule>, per source/tenant
    for (source, tenant), parts in sorted(by_source.items()):
        res = q.Resolution.from_dict(parts[0]["resolution"])
        containers, workloads = merge(parts)
        built, _ = rows(source, tenant, containers, workloads, policy, prices, res, ctx.window.start,
                        ctx.window.end)
        report_rows += built
        resolutions["/".join(p for p in (source, tenant) if p)] = res.step
        cpu_sources["/".join(p for p in (source, tenant) if p)] = res.cpu_rate_source
    files = manifests.patches(report_rows)
    if st.vpa_objects:
        files["vpa.yaml"] = manifests.vpa_objects(report_rows)
    report = Report(datasets=[(RIGHTSIZING, report_rows)],
                    artifacts={(RIGHTSIZING.name, name): content for name, content in files.items()},
                    metadata={"resolution_seconds": ",".join(f"{k}={v}" for k, v in resolutions.items()),
                              "cpu_rate_source": ",".join(f"{k}={v}" for k, v in cpu_sources.items())},
                    summary=summary([r.payload for r in results_of(pieces) if r.ok]))
    return report, results


def digest(ctx: RunContext, written: Written) -> Digest:
    """Totals and the biggest savings, from the committed report."""
    day = ctx.report_date
    report_rows = read_committed(ctx.store, RIGHTSIZING.name, day).to_pylist()
    artifacts = written.get("artifacts") or []
    folder = posixpath.dirname(artifacts[0]) if artifacts else ""
    return rightsizing_digest(report_rows, written["datasets"][RIGHTSIZING.name]["uri"], day.isoformat(),
                              _settings(ctx).top_n_in_digest, folder)


def summary(pieces: Sequence[Mapping[str, Json]]) -> JsonObject:
    """Queries, splits, retries and skipped series over every batch (for logs and the task's return value)."""
    stats: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for p in pieces:
        for k, v in (p.get("stats") or {}).items():
            stats[k] = stats.get(k, 0) + v
        for k, v in (p.get("skipped") or {}).items():
            skipped[k] = skipped.get(k, 0) + v
    return {"batches": len(pieces), **stats, "skipped": skipped}


__all__ = ["build", "collect", "digest", "run_window", "size_stack", "summary", "targets"]
