"""The steps of ``finops_recording_rules``: targets, one source/tenant's mining (read its query logs, group,
suggest, prove), the report build, and the digest."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from traceo_finops.config import PROJECT_ROOT, RecordingRulesSettings, config_path
from traceo_finops.kit.context import RunContext, Target, slug, source_targets
from traceo_finops.kit.outcome import TargetResult, results_of
from traceo_finops.kit.publish import Report, read_committed
from traceo_finops.prometheus.runner import QueryRunner
from traceo_finops.prometheus.spec import Flavor
from traceo_finops.recording_rules.collect import LogReading, read_query_logs, server_rules
from traceo_finops.recording_rules.dataset import (
    ALREADY_RECORDED,
    RECORDING_RULES,
    RECORDING_RULES_INPUTS,
    REJECTED,
    SUGGESTED,
    recording_rules_digest,
)
from traceo_finops.recording_rules.errors import NoQueryLog
from traceo_finops.recording_rules.normalize import Normalizer
from traceo_finops.recording_rules.prove import (
    OWN_QUERY_MARK,
    ProofReport,
    ProofSettings,
    mimir_namespace_yaml,
    prove,
    rule_file_yaml,
)
from traceo_finops.recording_rules.recommend import (
    ExistingRule,
    Grouping,
    GroupPlan,
    RuleSpec,
    group_queries,
    plan_groups,
    representative,
    rewrites_of,
    sites,
)
from traceo_finops.slack import Digest

log = logging.getLogger(__name__)

REWRITES_PER_GROUP = 20  # spellings per group in the rewrites artifact


def _settings(ctx: RunContext) -> RecordingRulesSettings:
    return ctx.cfg.workflows.recording_rules


def log_location(settings: RecordingRulesSettings, target: Target) -> str | None:
    """Where ``target``'s query log is (``{source}``/``{tenant}`` filled in): the Prometheus query log for a
    Prometheus source, the Mimir query-frontend log for a Mimir tenant."""
    pattern = settings.mimir_query_stats if target.flavor is Flavor.MIMIR else settings.query_log
    if not pattern:
        return None
    return pattern.replace("{source}", target.source).replace("{tenant}", target.tenant)


def _proof_settings(settings: RecordingRulesSettings) -> ProofSettings:
    return ProofSettings(interval=int(settings.interval.total_seconds()), runs=settings.speedup_runs,
                         tolerance=settings.float_tolerance, promtool=settings.promtool,
                         prometheus=settings.prometheus, group_name=settings.group_name)


def mine_source(ctx: RunContext, target: Target, settings: RecordingRulesSettings) -> dict[str, Any]:
    """Read, group, suggest and prove for one source/tenant over the run's window; JSON-safe rows and files."""
    location = log_location(settings, target)
    if location is None:
        raise NoQueryLog(f"{target.label}: workflows.recording_rules names no query log for a {target.flavor} source")
    start, end = ctx.window.start, ctx.window.end
    window = {"window_start": start, "window_end": end}
    reading = read_query_logs(location, target.flavor, start, end, root=PROJECT_ROOT, tenant=target.tenant,
                              s3=lambda: ctx.s3_client(settings.log_conn_id))
    normalizer = Normalizer()
    own = [t for t in reading.stats if t.lstrip().startswith(OWN_QUERY_MARK)]
    grouping = group_queries(reading.stats, normalizer, max_query_length=settings.max_query_length,
                             rank_by=settings.rank_by, exclude=own)
    with_site = [g for g in grouping.groups if sites(normalizer.parse(representative(g, reading.stats)))]
    considered = [g for g in with_site if g.count >= settings.min_count][:settings.top_n]
    rank = {g.key: i for i, g in enumerate(grouping.groups, 1)}
    existing: list[ExistingRule] = []
    proofs = ProofReport()
    with QueryRunner(ctx.spec(target)) as runner:
        if settings.rules_api and considered:
            existing = runner.call(lambda c: server_rules(c, normalizer))
        plans = plan_groups(considered, reading.stats, normalizer, existing)
        if plans:
            shapes = {p.group.key: reading.stats[p.text].shape for p in plans}
            proofs = prove(plans, runner, shapes, end.timestamp(), _proof_settings(settings), settings.min_speedup,
                           settings.max_new_series)
    price = ctx.prices.series_month_per_1k("self_hosted") / 1000
    rows = [row for p in plans for row in plan_rows(target, p, proofs, rank[p.group.key], price, window)]
    suggested = list(dict.fromkeys(suggested_rules(rows, plans)))
    interval = int(settings.interval.total_seconds())
    files = {
        "recording_rules.yml": rule_file_yaml(suggested, settings.group_name, interval),
        "mimir_ruler_namespace.yml": mimir_namespace_yaml(suggested, settings.mimir_namespace, settings.group_name,
                                                          interval),
        "rewrites.json": json.dumps({p.group.key: rewrites_of(p, normalizer, REWRITES_PER_GROUP)
                                     for p in plans if any(r["group_key"] == p.group.key and r["validated"]
                                                           for r in rows)}, indent=1, ensure_ascii=False),
    }
    inputs = inputs_row(target, location, reading, grouping, len(with_site), len(considered), rows, window)
    log.info("%s: %d groups (%d with a recordable aggregation, %d considered), %d rules suggested",
             target.label, len(grouping.groups), len(with_site), len(considered), len(suggested))
    return {"rows": rows, "inputs": inputs, "files": files, "source": target.source, "tenant": target.tenant}


def suggested_rules(rows: Sequence[Mapping[str, Any]], plans: Sequence[GroupPlan]) -> list[RuleSpec]:
    """The new rules of the suggested rows, costliest group first."""
    wanted = {r["rule_name"] for r in rows if r["rule_status"] == SUGGESTED}
    return [r for p in plans for r in p.new_rules if r.name in wanted]


def plan_rows(target: Target, plan: GroupPlan, proofs: ProofReport, rank: int, price_per_series: float,
              window: Mapping[str, datetime]) -> list[dict[str, Any]]:
    """One row per rule serving ``plan``'s group, with the group's proof."""
    g = plan.group
    proof = proofs.groups.get(g.key)
    pr = proof.range if proof is not None else None
    base = {"source": target.source, "tenant": target.tenant, "rank": rank, "group_key": g.key,
            "example_query": plan.text, "spellings": len(g.texts), "count": g.count,
            "total_eval_seconds": round(g.seconds, 9), "mean_eval_seconds": round(g.mean_seconds, 9),
            "total_samples": g.samples if g.sampled else None, "rewritten_query": plan.rewritten,
            "original_eval_seconds": proof.original_seconds if proof else None,
            "rewritten_eval_seconds": proof.rewritten_seconds if proof else None,
            "speedup": round(proof.speedup, 3) if proof and proof.speedup else None,
            "proof_points": proof.points if proof else 0,
            "proof_start": datetime.fromtimestamp(pr.start, UTC) if pr else None,
            "proof_end": datetime.fromtimestamp(pr.end, UTC) if pr else None,
            "proof_step_seconds": pr.step if pr else None, **window}
    rows = []
    for sp in {sp.spec.name: sp for sp in plan.sites}.values():
        rule = sp.spec
        if sp.status == "existing":
            status, reason = ALREADY_RECORDED, f"already recorded by the server's rule {sp.existing}"
        elif sp.status == "conflict":
            status, reason = REJECTED, sp.reason
        elif plan.reason:
            status, reason = REJECTED, plan.reason
        elif rule.name in proofs.rule_errors:
            status, reason = REJECTED, proofs.rule_errors[rule.name]
        elif proof is None or not proof.ok:
            status, reason = REJECTED, proof.reason if proof else "not proven"
        else:
            status, reason = SUGGESTED, ""
        series = proofs.new_series.get(rule.name) if sp.status == "new" else None
        rows.append({**base, "rule_name": rule.name, "rule_expr": rule.expr, "rule_status": status,
                     "new_series": series,
                     "monthly_cost_usd": round(series * price_per_series, 6) if series is not None else None,
                     "validated": status == SUGGESTED, "rejection_reason": reason})
    return rows


def inputs_row(target: Target, location: str, reading: LogReading, grouping: Grouping, with_site: int,
               considered: int, rows: Sequence[Mapping[str, Any]], window: Mapping[str, datetime]) -> dict[str, Any]:
    s = reading.summary
    statuses = [r["rule_status"] for r in rows]
    return {"source": target.source, "tenant": target.tenant, "log_location": location, "log_files": s.files,
            "lines": s.lines, "in_window": s.in_window, "before_window": s.before_window,
            "after_window": s.after_window, "bad_lines": s.bad_lines, "without_timing": s.without_timing,
            "unreadable_files": s.unreadable_files, "api_queries": reading.api_executions,
            "rule_evaluations": reading.rule_evaluations, "distinct_queries": len(reading.stats),
            "unparsable_queries": len(grouping.unparsable), "unparsable_executions": grouping.unparsable_executions,
            "enormous_queries": grouping.enormous, "groups": len(grouping.groups), "groups_with_site": with_site,
            "groups_considered": considered, "suggested": statuses.count(SUGGESTED),
            "rejected": statuses.count(REJECTED), "already_recorded": statuses.count(ALREADY_RECORDED),
            "name_conflicts": sum(1 for r in rows if r["rule_status"] == REJECTED and "already has a rule named"
                                  in r["rejection_reason"]),
            "errors": [f"{e.location}: {e.error}" for e in s.errors]
            + [f"unparsable ({n} executions): {text[:200]}: {err}" for text, err, n in grouping.unparsable[:20]],
            **window}


# -- the steps the DAG calls (workflow kit) ------------------------------------------------------------
def targets(ctx: RunContext) -> list[dict[str, Any]]:
    """One target per Prometheus source and Mimir tenant that has a query log configured."""
    settings = _settings(ctx)
    found = [t for t in source_targets(ctx.cfg) if log_location(settings, t)]
    if not found:
        raise NoQueryLog(f"configuration {config_path()}: workflows.recording_rules has no query_log (Prometheus) "
                         "or mimir_query_stats (Mimir) for any source: there is no query log to mine")
    return [t.as_dict() for t in found]


def mine(ctx: RunContext, target: Target) -> dict[str, Any]:
    """Read one source/tenant's query logs of the window, suggest rules for its costliest groups, prove them."""
    return mine_source(ctx, target, _settings(ctx))


def build(ctx: RunContext, mined: Sequence[dict[str, Any]]) -> tuple[Report, list[TargetResult]]:
    """Both datasets and, per source/tenant, the rule file, the Mimir ruler namespace and the rewrites."""
    results = results_of(mined)
    done = [r.payload for r in results if r.ok]
    report = Report(datasets=[
        (RECORDING_RULES, [row for m in done for row in m["rows"]]),
        (RECORDING_RULES_INPUTS, [m["inputs"] for m in done]),
    ])
    report.notes = {r.target.label: (
        f"no user query in the window's query logs ({r.payload['inputs']['before_window']} lines before it, "
        f"{r.payload['inputs']['after_window']} after): nothing to mine for that day")
        for r in results if r.ok and not r.payload["inputs"]["api_queries"]}
    for m in done:
        prefix = slug(m["source"], m["tenant"])
        for name, text in sorted(m["files"].items()):
            report.artifacts[(RECORDING_RULES.name, f"{prefix}-{name}")] = text.encode()
    return report, results


def digest(ctx: RunContext, written: Mapping[str, Any]) -> Digest:
    """The suggested rules with speedup and cost, and what the logs held, from the committed report."""
    day = ctx.report_date
    return recording_rules_digest(read_committed(ctx.store, RECORDING_RULES.name, day).to_pylist(),
                                  read_committed(ctx.store, RECORDING_RULES_INPUTS.name, day).to_pylist(),
                                  written["datasets"][RECORDING_RULES.name]["uri"], day.isoformat(),
                                  _settings(ctx).top_n_in_digest)
