"""The ``slo_budget`` dataset, the per-service deploy decision file, and the Slack digest.

``slo_budget``: one row per SLO and source/tenant: the objective and period, the period's errors and requests
(request-weighted, from counter increases), the budget remaining, the burn rate of the period and of every
alert window, the time to exhaustion at the 1-hour burn rate, and the deploy decision. A budget that could not
be measured is ``unknown`` with its reason — never 100 %.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from traceo_finops.quality import between, not_null, one_of, unique_together
from traceo_finops.reports import Dataset
from traceo_finops.reports import column as _f
from traceo_finops.slack import Digest
from traceo_finops.slo.burnrate import SLI_WINDOWS, prom_duration
from traceo_finops.slo.recommend import Decision

F64, STR = pa.float64(), pa.string()
TS = pa.timestamp("s", tz="UTC")
BURN_WINDOWS = tuple(prom_duration(w) for w in SLI_WINDOWS)  # 5m, 30m, 1h, 2h, 6h, 1d, 3d
EXHAUSTION_WINDOW = "1h"  # the burn rate time to exhaustion is extrapolated from
POLICY = ("more than 50 % of the error budget remaining: deploy; 25-50 %: low-risk changes only; 10-25 %: no "
          "deploy; below 10 %: emergency hold; unknown (no data): no deploy until someone looks")




SLO_BUDGET = Dataset(
    name="slo_budget",
    version=1,
    description="Per SLO: the error budget remaining over its period (request-weighted), burn rates per alert "
                "window, time to exhaustion and the deploy decision.",
    schema=pa.schema([
        _f("source", STR), _f("tenant", STR),
        _f("service", STR), _f("slo", STR), _f("slo_id", STR),  # slo_id: Sloth's sloth_id (service-slo)
        _f("spec_file", STR), _f("team", STR), _f("tier", STR),
        _f("objective", F64),  # percent
        _f("period", STR),  # 30d, 28d, 7d …
        _f("period_start", TS), _f("period_end", TS),
        _f("sli", STR),  # events | raw
        _f("errors", F64, True), _f("requests", F64, True),  # the period's increases (events SLIs)
        _f("error_ratio", F64, True),
        _f("budget_remaining", F64, True),  # share of the period's budget left; negative = overspent
        _f("unknown_reason", STR),  # why budget_remaining is null; "" when known
        _f("burn_rate_period", F64, True),
        *(_f(f"burn_rate_{w}", F64, True) for w in BURN_WINDOWS),
        _f("time_to_exhaustion_hours", F64, True),  # at the 1h burn rate; null when not burning or unknown
        _f("decision", STR),
        _f("alert_name", STR),
        _f("window_start", TS), _f("window_end", TS),
    ]),
    expectations=(
        *not_null("source", "service", "slo", "objective", "period", "decision", "unknown_reason"),
        one_of("decision", [str(d) for d in Decision]),
        one_of("tier", ["critical", "high", "standard", "best_effort"]),
        between("objective", min_value=0, max_value=100),
        between("budget_remaining", max_value=1),
        between("error_ratio", min_value=0, max_value=1),
        unique_together("source", "tenant", "slo_id"),
    ),
)


def decision_filename(service: str) -> str:
    """``<service>.decision.json`` (the report prefixes it with the source/tenant); characters a file name cannot
    hold become ``_``."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', service)}.decision.json"


def _pct(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1%}"


def _hours(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 24:.1f}d" if value >= 48 else f"{value:.1f}h"


def _burn(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def worst_first(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Unknown budgets first (someone must look), then the least budget remaining."""
    return sorted(rows, key=lambda r: (r["budget_remaining"] is not None, r["budget_remaining"] or 0.0,
                                       r["service"], r["slo"]))


def slo_digest(rows: Sequence[Mapping[str, Any]], report_uri: str, report_date: str, top_n: int) -> Digest:
    """One line per SLO (the ``top_n`` with least budget), and the count of each decision."""
    counts = {d: sum(1 for r in rows if r["decision"] == str(d)) for d in Decision}
    summary = (f"*{len(rows)}* SLO(s) of *{len({r['service'] for r in rows})}* service(s): "
               + ", ".join(f"{n} {d.value.replace('_', ' ')}" for d, n in counts.items() if n) + ".")
    shown = worst_first(rows)[:top_n]
    if len(rows) > len(shown):
        summary += f" The {len(shown)} with least budget are listed."
    return Digest(
        title=f"SLO error budgets {report_date}",
        summary=summary,
        facts={"Deploy policy": POLICY},
        table_header=("SLO", "tier", "objective", "budget left", "burn 1h", "exhausted in", "decision"),
        table_rows=[(f"{r['service']}/{r['slo']}", r["tier"], f"{float(r['objective']):g}%",
                     _pct(r["budget_remaining"]), _burn(r[f"burn_rate_{EXHAUSTION_WINDOW}"]),
                     _hours(r["time_to_exhaustion_hours"]), r["decision"]) for r in shown],
        footer=f"Report: {report_uri} · rules, alertmanager.yml and per-service decision files beside it under "
               f"_artifacts/{SLO_BUDGET.name}/",
    )
