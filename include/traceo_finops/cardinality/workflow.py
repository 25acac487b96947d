"""The steps of ``finops_cardinality``: targets, one source/tenant's audit (census, usage, verdicts,
showback) and config audit, the report build, and the digest."""

from __future__ import annotations

import glob
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from traceo_finops.cardinality.collect import CENSUS_MARK, is_census_query
from traceo_finops.cardinality.dataset import UNATTRIBUTED
from traceo_finops.cardinality.recommend import (
    DEFAULT_PROTECTED_LABELS,
    CountAfter,
    MetricCensus,
    Suggestion,
    Verdict,
    durable_wildcards,
    judge,
    protected_labels,
)
from traceo_finops.config import PROJECT_ROOT, config_path
from traceo_finops.kit.context import RunContext, Target, slug, source_targets
from traceo_finops.kit.outcome import NoTargets, TargetResult, results_of
from traceo_finops.kit.publish import Report, read_committed
from traceo_finops.prometheus import PrometheusClient, quote, sample_int, selector
from traceo_finops.slack import Digest
from traceo_finops.usage import UsageIndex

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class UsageInputs:
    """Where usage is read from, besides the server's own rules."""

    rule_files: Sequence[str] = ()  # paths or globs
    dashboards: Sequence[str] = ()  # Grafana dashboard JSON paths or globs
    query_log: str | None = None  # Prometheus query_log_file (JSON lines)
    mimir_query_stats: str | None = None  # Mimir query-frontend logfmt log
    rules_api: bool = True  # /api/v1/rules (Prometheus) or the Mimir ruler


def _expand(patterns: Iterable[str], root: Path) -> list[Path]:
    found: list[Path] = []
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(root / pattern)
        matches = sorted(glob.glob(full)) if glob.has_magic(full) else [full]
        found += [Path(m) for m in matches]
    return found


def build_usage_index(client: PrometheusClient | None, inputs: UsageInputs, start: datetime, end: datetime,
                      root: Path, tenant: str = "") -> UsageIndex:
    """Usage from the server's rules, rule files, dashboards and the query log of ``[start, end)``."""
    index = UsageIndex(exclude_query=is_census_query)
    if client is not None and inputs.rules_api:
        if client.spec.flavor == "mimir":
            index.add_ruler(client.mimir_ruler_rules(), tenant=tenant)
        else:
            index.add_rules_api(client.rules(), source=client.spec.name)
    for path in _expand(inputs.rule_files, root):
        index.add_rule_file(path)
    for path in _expand(inputs.dashboards, root):
        index.add_dashboard_file(path)
    if inputs.query_log:
        index.add_prometheus_query_log(_expand([inputs.query_log], root)[0], start, end)
    if inputs.mimir_query_stats:
        index.add_mimir_query_stats(_expand([inputs.mimir_query_stats], root)[0], start, end,
                                    tenant=tenant or None)
    log.info("usage: %s", index.summary())
    return index


class ServerCounter:
    """``count(count by (kept) (metric))`` at the audit's instant: series left after merging."""

    def __init__(self, client: PrometheusClient, at: datetime) -> None:
        self.client, self.at = client, at

    def __call__(self, metric: str, kept: tuple[str, ...]) -> int:
        by = ", ".join(kept)
        result = self.client.query(f"{CENSUS_MARK}count(count by ({by}) ({{__name__={quote(metric)}}}))",
                                   time=self.at)
        return sample_int(result[0]) if result else 0


class MimirSeriesCounter:
    """Series left after merging away labels, for one Mimir tenant, in the census's own terms.

    Mimir has no instant to pin a PromQL count to, and PromQL's ``count`` sees another set of series
    than the cardinality API (docs/cardinality.md, "Mimir"). So the metric's series are listed with
    ``/api/v1/cardinality/active_series`` (the ingesters' head postings through the active-series
    tracker: the census's ``active`` set exactly, deduplicated across replicas by the distributor) and
    projected onto ``kept``: ``removed`` = listed - distinct projections are the series the merge folds
    into others. The answer is the census count minus ``removed``: exact with ``active``; with
    ``inmemory`` a lower bound of the saving, since series no longer written cannot collide at ingestion
    (relabeling them creates no duplicate samples) and are left as they are. Whether series merge at all
    is decided on the listing alone, so churn between the census and the listing never turns a merge
    into a ``drop_labels``.
    """

    def __init__(self, client: PrometheusClient, census: Mapping[str, int]) -> None:
        self.client, self.census = client, census

    def __call__(self, metric: str, kept: tuple[str, ...]) -> int:
        listed = self.client.cardinality_active_series(selector(metric))
        merged = len({tuple(s.get(k, "") for k in kept) for s in listed})
        removed = len(listed) - merged
        series = self.census.get(metric, len(listed))
        if removed <= 0:
            return series
        # Below the census, and never below what the listing itself keeps.
        return max(series - removed, min(merged, series - 1))


def mimir_owner_counts(client: PrometheusClient, owner_label: str, count_method: str,
                       series_total: int) -> dict[str, int]:
    """Series per value of ``owner_label`` from Mimir's cardinality API, by the census's ``count_method``.

    ``unattributed`` is the census total minus the series that carry the label, so the showback adds up
    to the census total to the series.
    """
    from traceo_finops.cardinality.collect import mimir_label_series

    owners = mimir_label_series(client, owner_label, count_method)
    out = {k: v for k, v in owners.by_value.items() if v > 0}
    rest = series_total - sum(out.values())
    if rest > 0:
        out[UNATTRIBUTED] = out.get(UNATTRIBUTED, 0) + rest
    elif rest < 0:  # series came between the census and this request
        log.info("showback of %s: %d more series carry %s than the census counted (churn)", client.spec.name,
                 -rest, owner_label)
    return out


def owner_counts(client: PrometheusClient, owner_label: str, at: datetime) -> dict[str, int]:
    """Series per value of ``owner_label``; series without it are ``unattributed``."""
    out: dict[str, int] = defaultdict(int)
    for sample in client.query(f'{CENSUS_MARK}count by ({owner_label}) ({{__name__=~".+"}})', time=at):
        owner = sample["metric"].get(owner_label) or UNATTRIBUTED
        out[owner] += sample_int(sample)
    return dict(out)


def jobs_of(client: PrometheusClient, metrics: Sequence[str], at: datetime, chunk: int = 200) -> dict[str, list[str]]:
    """Scrape jobs each metric comes from (for per-job relabel configs)."""
    jobs: dict[str, list[str]] = defaultdict(list)
    for i in range(0, len(metrics), chunk):
        names = "|".join(metrics[i:i + chunk])
        for s in client.query(f"{CENSUS_MARK}count by (__name__, job) ({{__name__=~{quote(names)}}})", time=at):
            jobs[s["metric"].get("job", "")].append(s["metric"]["__name__"])
    return dict(jobs)


@dataclass
class AuditRows:
    cardinality: list[dict[str, Any]] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)
    showback: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"cardinality": self.cardinality, "labels": self.labels, "showback": self.showback,
                "errors": self.errors}


def audit_rows(source: str, tenant: str, census: Sequence[MetricCensus], index: UsageIndex, count_after: CountAfter,
               usd_per_1k_series_month: float, window: dict[str, Any],
               protected: frozenset[str] = DEFAULT_PROTECTED_LABELS) -> tuple[AuditRows, list[Verdict]]:
    """Verdict and report rows for every metric of one source/tenant."""
    rows = AuditRows()
    total = sum(m.series for m in census) or 1
    price = usd_per_1k_series_month / 1000
    verdicts = []
    wildcards = durable_wildcards(index)
    for i, m in enumerate(sorted(census, key=lambda m: -m.series)):
        if i and i % 500 == 0:
            log.info("judged %d/%d metrics", i, len(census))
        v = judge(m, index, count_after, protected, wildcards)
        verdicts.append(v)
        now, after = m.series * price, v.series_after * price
        rows.cardinality.append({
            "source": source, "tenant": tenant, "metric": m.metric, "series": m.series, "share": m.series / total,
            "labels": len([lbl for lbl in m.labels if lbl != "__name__"]),
            "usage_rules": v.usage["rules"], "usage_dashboards": v.usage["dashboards"],
            "usage_queries": v.usage["queries"], "classification": v.classification.value,
            "suggestion": v.suggestion.value, "unneeded_labels": list(v.unneeded_labels),
            "series_after": v.series_after, "series_if_aggregated": v.series_if_aggregated,
            "blocked_by": v.blocked_by, "monthly_cost_usd": round(now, 6), "monthly_cost_after_usd": round(after, 6),
            "monthly_saving_usd": round(now - after, 6), **window,
        })
        need = index.labels_needed(m.metric)
        per_label = index.label_counts(m.metric)
        for label, distinct in sorted(m.labels.items()):
            if label == "__name__":
                continue
            c = per_label.get(label)
            rows.labels.append({
                "source": source, "tenant": tenant, "metric": m.metric, "label": label,
                "distinct_values": int(distinct),
                "needed": label in need or label in protected,
                "usage_rules": c.rules if c else 0, "usage_dashboards": c.dashboards if c else 0,
                "usage_queries": c.queries if c else 0,
                "usage_kinds": sorted(k.value for k in c.kinds) if c else [], **window,
            })
    for e in index.errors:
        rows.errors.append({"source": source, "tenant": tenant, "source_kind": e.source_kind.value,
                            "source_id": e.source_id, "location": e.location, "expression": e.expression,
                            "error": e.error, **window})
    return rows, verdicts


def showback_rows(source: str, tenant: str, owner_label: str, counts: dict[str, int],
                  usd_per_1k_series_month: float, window: dict[str, Any]) -> list[dict[str, Any]]:
    total = sum(counts.values()) or 1
    return [{"source": source, "tenant": tenant, "owner_label": owner_label, "owner": owner, "series": n,
             "share": n / total, "monthly_cost_usd": round(n * usd_per_1k_series_month / 1000, 6), **window}
            for owner, n in sorted(counts.items(), key=lambda kv: -kv[1])]


def relabel_verdicts(client: PrometheusClient, verdicts: Sequence[Verdict], at: datetime) -> dict[str, list[Verdict]]:
    """Verdicts with a relabel or aggregation suggestion, grouped by the scrape job of their series."""
    actionable = {v.metric: v for v in verdicts
                  if v.suggestion in (Suggestion.DROP_METRIC, Suggestion.DROP_LABELS, Suggestion.AGGREGATE)}
    if not actionable:
        return {}
    return {job: [actionable[m] for m in sorted(names)]
            for job, names in jobs_of(client, sorted(actionable), at).items()}


def audit_source(client: PrometheusClient, source: str, tenant: str, start: datetime, end: datetime,
                 settings: Any, usd_per_1k_series_month: float, root: Path,
                 count_method: str = "inmemory") -> dict[str, Any]:
    """The whole audit of one source/tenant for the window ``[start, end)``: JSON-safe rows and relabel YAML.

    ``settings`` is the configuration's ``workflows.cardinality``. Prometheus series are counted at
    ``end`` with PromQL; Mimir's "now" by its cardinality API and ``count_method`` — census, showback and
    ``series_after`` alike. A Mimir tenant without any series yields a ``tenant_without_series`` finding
    (``findings``) instead of an empty report that would read as a clean audit.
    """
    from traceo_finops.cardinality.collect import check_mimir_call, collect_series_by_metric, mimir_series_count
    from traceo_finops.cardinality.config_audit import config_finding_rows, tenant_without_series
    from traceo_finops.cardinality.relabel import mimir_overrides_yaml, prometheus_yaml

    mimir = client.spec.flavor == "mimir"
    if mimir:
        check_mimir_call(client, count_method)
    window = {"window_start": start, "window_end": end}
    snapshot = collect_series_by_metric(client, source, end, tenant, count_method=count_method,
                                        metric_chunk_size=settings.metric_chunk_size)
    findings: list[dict[str, Any]] = []
    if mimir and not snapshot.metrics:
        inmemory = mimir_series_count(client, "inmemory") if count_method == "active" else None
        log.warning("source %s tenant %s: Mimir counts no %s series: misspelled tenant?", source,
                    tenant or "(connection's)", count_method)
        findings = config_finding_rows([tenant_without_series(source, tenant, count_method, inmemory)], start, end)
    inputs = UsageInputs(rule_files=settings.rule_files, dashboards=settings.dashboards,
                         query_log=settings.query_log, mimir_query_stats=settings.mimir_query_stats,
                         rules_api=settings.rules_api)
    index = build_usage_index(client, inputs, start, end, root, tenant)
    protected = protected_labels(settings.protected_labels, settings.allow_target_labels,
                                 None if client.spec.flavor == "mimir" else client.config_yaml)
    counter: CountAfter = MimirSeriesCounter(client, {m.metric: m.series for m in snapshot.metrics}) if mimir \
        else ServerCounter(client, end)
    rows, verdicts = audit_rows(source, tenant, snapshot.metrics, index, counter, usd_per_1k_series_month, window,
                                protected=protected)
    owners = mimir_owner_counts(client, settings.owner_label, count_method, snapshot.series_total) if mimir \
        else owner_counts(client, settings.owner_label, end)
    rows.showback = showback_rows(source, tenant, settings.owner_label, owners, usd_per_1k_series_month, window)
    if mimir:
        actionable = [v for v in verdicts if v.suggestion is not Suggestion.KEEP]
        relabel = {"mimir_overrides.yaml": mimir_overrides_yaml({tenant or "anonymous": actionable})}
    else:
        relabel = {"metric_relabel_configs.yaml": prometheus_yaml(relabel_verdicts(client, verdicts, end))}
    log.info("source %s%s: %d metrics, %d series, %d usage errors", source, f"/{tenant}" if tenant else "",
             len(snapshot.metrics), snapshot.series_total, len(rows.errors))
    return {**rows.as_dict(), "relabel": relabel, "source": source, "tenant": tenant,
            "series_total": snapshot.series_total, "findings": findings}


# -- the steps the DAG calls (workflow kit) ------------------------------------------------------------
def targets(ctx: RunContext) -> list[dict[str, Any]]:
    """One target per Prometheus source and Mimir tenant."""
    found = source_targets(ctx.cfg)
    if not found:
        raise NoTargets(f"configuration {config_path()} has no sources: nothing to audit")
    return [t.as_dict() for t in found]


def audit(ctx: RunContext, target: Target) -> dict[str, Any]:
    """Census, usage, verdicts and showback of one source/tenant; series are counted at the window's end."""
    count_method = ctx.cfg.source(target.source).census_count_method
    with PrometheusClient(ctx.spec(target)) as client:
        result = audit_source(client, target.source, target.tenant, ctx.window.start, ctx.window.end, ctx.settings,
                              ctx.prices.series_month_per_1k("self_hosted"), PROJECT_ROOT, count_method)
        mimir = client.spec.flavor == "mimir"
    result["note"] = census_note(ctx, mimir, result["series_total"])
    return result


def census_note(ctx: RunContext, mimir: bool, series_total: int) -> str:
    """What a source's rows cannot show: what was read live on a past day, or no series at all.

    Prometheus series and labels are counted with PromQL at the window's end and usage comes from that
    day's query log, so a backfill within retention counts that day; Mimir's cardinality API only knows
    now, and rules, dashboards and config findings (flags, loaded config, head stats) are today's.
    """
    if not mimir and series_total == 0:
        return (f"no series at the window's end {ctx.window.end.isoformat()}: the window is before the source's "
                "data or beyond its retention")
    live = "rules, dashboards and config findings"
    return ctx.live_read_note(f"series counts (Mimir's cardinality API has no history), {live}" if mimir else live)


def config_audit(ctx: RunContext, target: Target) -> list[dict[str, Any]]:
    """Configuration findings of one source/tenant, with estimated savings."""
    from traceo_finops.cardinality.config_audit import audit_config_rows

    with PrometheusClient(ctx.spec(target)) as client:
        return audit_config_rows(client, target.source, target.tenant, ctx.window.end, ctx.prices,
                                 window_start=ctx.window.start)


def build(ctx: RunContext, audits: Sequence[dict[str, Any]],
          findings: Sequence[dict[str, Any]]) -> tuple[Report, list[TargetResult]]:
    """The five cardinality datasets and the relabel YAML of every target that was audited."""
    from traceo_finops.cardinality.config_audit import CONFIG_FINDINGS
    from traceo_finops.cardinality.dataset import CARDINALITY, CARDINALITY_LABELS, SHOWBACK, USAGE_ERRORS

    results = results_of(audits) + results_of(findings)
    done = [r.payload for r in results_of(audits) if r.ok]
    report = Report(datasets=[
        (CARDINALITY, [row for a in done for row in a["cardinality"]]),
        (CARDINALITY_LABELS, [row for a in done for row in a["labels"]]),
        (SHOWBACK, [row for a in done for row in a["showback"]]),
        (USAGE_ERRORS, [row for a in done for row in a["errors"]]),
        (CONFIG_FINDINGS, [row for r in results_of(findings) if r.ok for row in r.payload]
                          + [row for a in done for row in a.get("findings", [])]),
    ])
    report.notes = {r.target.label: r.payload["note"] for r in results_of(audits) if r.ok and r.payload.get("note")}
    for a in done:
        prefix = slug(a["source"], a["tenant"])
        for name, text in sorted(a["relabel"].items()):
            report.artifacts[(CARDINALITY.name, f"{prefix}-{name}")] = text.encode()
    return report, results


def digest(ctx: RunContext, written: Mapping[str, Any]) -> Digest:
    """Totals, the biggest safe savings, the top owners and tenants without series, from the committed report."""
    from traceo_finops.cardinality.config_audit import CONFIG_FINDINGS
    from traceo_finops.cardinality.dataset import CARDINALITY, SHOWBACK, USAGE_ERRORS, cardinality_digest

    day = ctx.report_date
    return cardinality_digest(read_committed(ctx.store, CARDINALITY.name, day).to_pylist(),
                              read_committed(ctx.store, SHOWBACK.name, day).to_pylist(),
                              written["datasets"][CARDINALITY.name]["uri"], day.isoformat(),
                              ctx.settings.top_n_in_digest,
                              read_committed(ctx.store, USAGE_ERRORS.name, day).num_rows,
                              read_committed(ctx.store, CONFIG_FINDINGS.name, day).to_pylist())
