"""The steps of ``finops_example``, as plain functions the DAG's tasks call (no Airflow here).

1. :func:`targets` — one target per Prometheus source and Mimir tenant;
2. :func:`probe` — one target (one mapped task each): ``up`` at the window's end;
3. :func:`build` — the ``example_up`` rows of every target that answered, and every target's result;
4. :func:`digest` — how many scrape targets are up, from the committed report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tests.example_workflow.dataset import EXAMPLE_UP
from tests.example_workflow.dataset import digest as up_digest
from traceo_finops.kit.context import RunContext, Target, source_targets
from traceo_finops.kit.outcome import TargetResult, require_work, results_of
from traceo_finops.kit.publish import Report, read_committed
from traceo_finops.prometheus import PrometheusClient, sample_value
from traceo_finops.slack import Digest


def targets(ctx: RunContext) -> list[dict[str, Any]]:
    """What the DAG maps over: never empty (an empty map would skip the rest and the run would "succeed")."""
    return require_work(ctx, [t.as_dict() for t in source_targets(ctx.cfg)], [], "the configuration has no sources")


def probe(ctx: RunContext, target: Target) -> list[dict[str, Any]]:
    """``up`` of every scrape target of one source/tenant at the window's end."""
    with PrometheusClient(ctx.spec(target)) as client:
        answer = client.query("up", time=ctx.window.end)
    return [{"source": target.source, "tenant": target.tenant, "job": s["metric"].get("job", ""),
             "instance": s["metric"].get("instance", ""), "up": int(sample_value(s) or 0),
             "window_end": ctx.window.end} for s in answer]


def build(ctx: RunContext, probes: Sequence[Mapping[str, Any]]) -> tuple[Report, list[TargetResult]]:
    """The report of every target that answered; the results say which did not."""
    results = results_of(probes)
    rows = [row for r in results if r.ok for row in r.payload]
    return Report(datasets=[(EXAMPLE_UP, rows)], summary={"rows": len(rows)}), results


def digest(ctx: RunContext, written: Mapping[str, Any]) -> Digest:
    rows = read_committed(ctx.store, EXAMPLE_UP.name, ctx.report_date).to_pylist()
    return up_digest(rows, ctx.report_date.isoformat())
