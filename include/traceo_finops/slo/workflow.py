"""The steps of ``finops_slo``: targets (the sources/tenants with SLO specs), one target's evaluation (load its
specs, generate and prove the rules and the Alertmanager fragment, measure every SLO's budget), the report
build with the decision file per service, and the digest. Nothing is applied anywhere."""

from __future__ import annotations

import glob
import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from traceo_finops.config import PROJECT_ROOT, SloSettings, config_path
from traceo_finops.kit.context import RunContext, Target, slug, source_targets
from traceo_finops.kit.outcome import TargetResult, results_of
from traceo_finops.kit.publish import Report, read_committed
from traceo_finops.prometheus.runner import QueryRunner
from traceo_finops.slack import Digest
from traceo_finops.slo.burnrate import prom_duration
from traceo_finops.slo.collect import measure
from traceo_finops.slo.dataset import (
    BURN_WINDOWS,
    EXHAUSTION_WINDOW,
    POLICY,
    SLO_BUDGET,
    decision_filename,
    slo_digest,
)
from traceo_finops.slo.errors import NoSpecs, ProofFailed, SpecError
from traceo_finops.slo.prove import ToolResult, check_rules, run_rule_tests, write_proof
from traceo_finops.slo.recommend import Budget, Decision, strictest
from traceo_finops.slo.routing import TeamReceivers, alertmanager_yaml, check_config
from traceo_finops.slo.rules import mimir_namespace, prometheus_rule_file
from traceo_finops.slo.spec import DEFAULT_PERIOD, SLO, load_specs, spec_paths

log = logging.getLogger(__name__)

RULE_FILE, MIMIR_FILE, ALERTMANAGER_FILE = "slo_rules.yml", "slo_mimir_ruler_namespace.yml", "alertmanager.yml"


def _settings(ctx: RunContext) -> SloSettings:
    return ctx.cfg.workflows.slo


def target_spec_files(settings: SloSettings, target: Target) -> list[Path]:
    """The spec files of ``target``: ``specs`` with ``{source}``/``{tenant}`` filled in. A pattern with a glob
    or a placeholder may match nothing; a plain path must exist (a typo is an error, not a missing SLO)."""
    found: list[Path] = []
    for pattern in settings.specs:
        filled = pattern.replace("{source}", target.source).replace("{tenant}", target.tenant)
        paths = spec_paths([filled], PROJECT_ROOT)
        if filled != pattern or glob.has_magic(filled):
            paths = [p for p in paths if p.is_file()]
        found += paths
    return list(dict.fromkeys(found))


def _check(result: ToolResult, what: str) -> None:
    if not result.ok:
        raise ProofFailed(f"{what} failed: {result.output[-2000:]}")


def generate(slos: Sequence[SLO], receivers: Mapping[str, TeamReceivers] | None,
             settings: SloSettings) -> dict[str, str]:
    """The rule file, the Mimir ruler namespace and the Alertmanager fragment, each checked by its tool and the
    alerts of every SLO proven by a generated ``promtool test rules``; raises before returning anything."""
    files = {RULE_FILE: prometheus_rule_file(slos), MIMIR_FILE: mimir_namespace(slos, settings.mimir_namespace),
             ALERTMANAGER_FILE: alertmanager_yaml(slos, receivers)}  # RoutingError: a team with no receiver
    with tempfile.TemporaryDirectory(prefix="traceo-slo-") as tmp:
        work = Path(tmp)
        for name in (RULE_FILE, ALERTMANAGER_FILE):
            (work / name).write_text(files[name])
        _check(check_rules(work / RULE_FILE, settings.promtool), f"promtool check rules {RULE_FILE}")
        for slo in slos:
            _check(run_rule_tests(write_proof(slo, work / "proof"), settings.promtool),
                   f"promtool test rules of SLO {slo.id}")
        _check(check_config(work / ALERTMANAGER_FILE, settings.amtool), f"amtool check-config {ALERTMANAGER_FILE}")
    return files


def budget_row(target: Target, slo: SLO, budget: Budget, window: Mapping[str, datetime]) -> dict[str, Any]:
    """The ``slo_budget`` row of one measured SLO."""
    end = window["window_end"]
    ratio, remaining = budget.ratio, budget.remaining
    exhaustion = budget.time_to_exhaustion(EXHAUSTION_WINDOW)
    return {
        "source": target.source, "tenant": target.tenant, "service": slo.service, "slo": slo.name,
        "slo_id": slo.id, "spec_file": _relative(slo.file), "team": slo.team, "tier": str(slo.tier),
        "objective": slo.objective, "period": prom_duration(slo.period), "period_start": end - slo.period,
        "period_end": end, "sli": "events" if slo.events else "raw",
        # A raw SLI has a ratio, not events: its errors/requests are not counts and are left out.
        "errors": budget.errors if slo.events else None, "requests": budget.requests if slo.events else None,
        "error_ratio": ratio, "budget_remaining": remaining,
        "unknown_reason": "" if remaining is not None else (budget.reason or "no data"),
        "burn_rate_period": None if ratio is None else ratio / slo.budget,
        **{f"burn_rate_{w}": budget.burn_rates.get(w) for w in BURN_WINDOWS},
        "time_to_exhaustion_hours": None if exhaustion is None else exhaustion.total_seconds() / 3600,
        "decision": str(budget.decision), "alert_name": slo.alert_name, **window,
    }


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return path


def decision_files(target: Target, rows: Sequence[Mapping[str, Any]],
                   measured_at: datetime) -> dict[str, str]:
    """One JSON per service: its decision (the strictest of its SLOs') and each SLO's budget, for a deploy
    pipeline to read (``decision`` is one of deploy, low_risk_only, no_deploy, emergency_hold, unknown)."""
    out: dict[str, str] = {}
    for service in sorted({r["service"] for r in rows}):
        mine = [r for r in rows if r["service"] == service]
        decision = strictest(Decision(r["decision"]) for r in mine)
        body = {"service": service, "source": target.source, "tenant": target.tenant,
                "measured_at": measured_at.isoformat(), "decision": str(decision),
                "deploy_allowed": decision is Decision.DEPLOY, "low_risk_only": decision is Decision.LOW_RISK_ONLY,
                "policy": POLICY,
                "slos": [{k: r[k] for k in ("slo", "tier", "objective", "period", "budget_remaining",
                                            "unknown_reason", "burn_rate_1h", "time_to_exhaustion_hours",
                                            "decision")} for r in mine]}
        out[decision_filename(service)] = json.dumps(body, indent=1, allow_nan=False) + "\n"
    return out


# -- the steps the DAG calls (workflow kit) ------------------------------------------------------------
def targets(ctx: RunContext) -> list[dict[str, Any]]:
    """One target per Prometheus source and Mimir tenant that has at least one SLO spec file."""
    settings = _settings(ctx)
    found = [t for t in source_targets(ctx.cfg) if target_spec_files(settings, t)]
    if not found:
        raise NoSpecs(f"configuration {config_path()}: workflows.slo.specs ({settings.specs or 'empty'}) matches "
                      "no spec file for any source/tenant: there is no SLO to evaluate")
    return [t.as_dict() for t in found]


def evaluate(ctx: RunContext, target: Target) -> dict[str, Any]:
    """Load the target's specs (an invalid file fails the target, naming the file, before anything is
    generated), generate and prove its rules and routing, and measure each SLO's budget at the window's end."""
    settings = _settings(ctx)
    paths = target_spec_files(settings, target)
    if not paths:
        raise SpecError(f"{target.label}: workflows.slo.specs matches no spec file")
    slos = load_specs(paths, settings.period or DEFAULT_PERIOD)
    receivers = None if settings.receivers is None else {
        r.team: TeamReceivers(pager=r.pager, tickets=r.tickets) for r in settings.receivers}
    files = generate(slos, receivers, settings)
    at = ctx.window.end
    window = {"window_start": ctx.window.start, "window_end": at}
    rows = []
    with QueryRunner(ctx.spec(target)) as runner:
        for slo in slos:
            rows.append(budget_row(target, slo, runner.call(partial(measure, slo=slo, at=at)), window))
    prefix = slug(target.source, target.tenant)
    files |= decision_files(target, rows, datetime.now(UTC))
    log.info("%s: %d SLO(s) from %d spec file(s): %s", target.label, len(rows), len(paths),
             ", ".join(f"{r['slo_id']} {r['decision']}" for r in rows))
    return {"rows": rows, "files": files, "prefix": prefix}


def build(ctx: RunContext, evaluated: Sequence[dict[str, Any]]) -> tuple[Report, list[TargetResult]]:
    """``slo_budget`` and, per source/tenant, the rules, the Alertmanager fragment and the decision files."""
    results = results_of(evaluated)
    done = [r.payload for r in results if r.ok]
    report = Report(datasets=[(SLO_BUDGET, [row for e in done for row in e["rows"]])])
    for e in done:
        for name, text in sorted(e["files"].items()):
            report.artifacts[(SLO_BUDGET.name, f"{e['prefix']}-{name}")] = text.encode()
    return report, results


def digest(ctx: RunContext, written: Mapping[str, Any]) -> Digest:
    """A line per SLO (least budget first) from the committed report."""
    day = ctx.report_date
    rows = read_committed(ctx.store, SLO_BUDGET.name, day).to_pylist()
    return slo_digest(rows, written["datasets"][SLO_BUDGET.name]["uri"], day.isoformat(),
                      _settings(ctx).top_n_in_digest)
