"""Prometheus rules of an SLO: SLI recordings, meta recordings and the MWMB page and ticket alerts.

Series names and labels are Sloth's (``slo:sli_error:ratio_rate<window>``, ``sloth_id``, ``sloth_service``,
``sloth_slo``, ``sloth_window``, ``sloth_severity``), so Sloth's Grafana dashboards keep working. Where we
differ, on purpose:

- **Request-weighted period ratio.** Sloth's period ratio is the mean of 5-minute ratios (sloth#332): a quiet
  night weighs as much as the peak. We also record the 5-minute error and total *rates* of an events SLI and
  divide their sums over the period: ``sum_over_time(errors[30d]) / sum_over_time(total[30d])``. A rate
  sample is an increase per second, so this is the period's errors over its requests, computed from recorded
  series (cheap on a Mimir ruler, unlike a raw ``increase(...[30d])``, pyrra#1503). A raw SLI has no events:
  its period ratio stays the mean of 5-minute ratios, and says so in its ``slo_ratio`` label.
- **Traffic guard.** With ``min_events``, a window pair alerts only when its long window saw that many events.
- **Routing labels.** Alerts carry ``slo_tier`` and ``slo_team``, which the generated Alertmanager routes use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta

import yaml

from traceo_finops.shapes import Json
from traceo_finops.slo.burnrate import SLI_WINDOWS, AlertWindow, Severity, prom_duration, windows_of
from traceo_finops.slo.spec import SLO, Alert

RATIO = "slo:sli_error:ratio_rate"
ERROR_RATE = "slo:sli_error:rate"  # events SLI: errors per second (our addition)
TOTAL_RATE = "slo:sli_total:rate"  # events SLI: events per second (our addition; sloth#526)
BASE_WINDOW = SLI_WINDOWS[0]


def _selector(slo: SLO) -> str:
    return f'{{sloth_id="{slo.id}", sloth_service="{slo.service}", sloth_slo="{slo.name}"}}'


def _id_labels(slo: SLO) -> dict[str, str]:
    return {**slo.labels, "sloth_id": slo.id, "sloth_service": slo.service, "sloth_slo": slo.name}


def _num(value: float) -> str:
    return repr(round(value, 12))


def sli_rules(slo: SLO) -> list[dict[str, Json]]:
    """Error ratio (and, for an events SLI, error and total rates) for every window, then the period's."""
    rules: list[dict[str, Json]] = []
    for window in SLI_WINDOWS:
        w = prom_duration(window)
        labels: dict[str, Json] = {**_id_labels(slo), "sloth_window": w}
        if slo.error_query is not None and slo.total_query is not None:
            err, tot = slo.query(slo.error_query, window), slo.query(slo.total_query, window)
            rules.append({"record": f"{RATIO}{w}", "expr": f"({err})\n/\n({tot})\n", "labels": labels})
            if window == BASE_WINDOW or slo.min_events is not None:
                rules.append({"record": f"{TOTAL_RATE}{w}", "expr": tot, "labels": labels})
            if window == BASE_WINDOW:
                rules.append({"record": f"{ERROR_RATE}{w}", "expr": err, "labels": labels})
        else:
            assert slo.error_ratio_query is not None
            rules.append({"record": f"{RATIO}{w}", "expr": slo.query(slo.error_ratio_query, window),
                          "labels": labels})
    p, b, sel = prom_duration(slo.period), prom_duration(BASE_WINDOW), _selector(slo)
    if slo.events:
        expr = (f"sum_over_time({ERROR_RATE}{b}{sel}[{p}])\n/ ignoring (sloth_window)\n"
                f"sum_over_time({TOTAL_RATE}{b}{sel}[{p}])\n")
        kind = "request_weighted"
    else:
        expr = (f"sum_over_time({RATIO}{b}{sel}[{p}])\n/ ignoring (sloth_window)\n"
                f"count_over_time({RATIO}{b}{sel}[{p}])\n")
        kind = "mean_of_5m_ratios"
    rules.append({"record": f"{RATIO}{p}", "expr": expr,
                  "labels": {**_id_labels(slo), "sloth_window": p, "slo_ratio": kind}})
    return rules


def meta_rules(slo: SLO) -> list[dict[str, Json]]:
    """Objective, budget, period and the burn rates Sloth's dashboards read."""
    labels: dict[str, Json] = {**_id_labels(slo), "slo_tier": str(slo.tier), "slo_team": slo.team}
    sel, p, b = _selector(slo), prom_duration(slo.period), prom_duration(BASE_WINDOW)
    on = "/ on (sloth_id, sloth_slo, sloth_service) group_left\n"
    return [
        {"record": "slo:objective:ratio", "expr": f"vector({_num(slo.objective / 100)})", "labels": labels},
        {"record": "slo:error_budget:ratio", "expr": f"vector({_num(slo.budget)})", "labels": labels},
        {"record": "slo:time_period:days", "expr": f"vector({_num(slo.period / timedelta(days=1))})",
         "labels": labels},
        {"record": "slo:current_burn_rate:ratio",
         "expr": f"{RATIO}{b}{sel}\n{on}slo:error_budget:ratio{sel}\n", "labels": labels},
        {"record": "slo:period_burn_rate:ratio",
         "expr": f"{RATIO}{p}{sel}\n{on}slo:error_budget:ratio{sel}\n", "labels": labels},
        {"record": "slo:period_error_budget_remaining:ratio", "expr": f"1 - slo:period_burn_rate:ratio{sel}",
         "labels": labels},
    ]


def _pair(slo: SLO, window: AlertWindow) -> str:
    # Each side drops sloth_window (as Sloth does since v0.11): which pair fired must not change the alert's
    # identity in Alertmanager.
    sel, k = _selector(slo), window.factor(slo.period)
    threshold = f"({_num(k)} * {_num(slo.budget)})"
    short, long = prom_duration(window.short), prom_duration(window.long)
    parts = [f"max({RATIO}{short}{sel} > {threshold}) without (sloth_window)",
             f"max({RATIO}{long}{sel} > {threshold}) without (sloth_window)"]
    if slo.min_events is not None:
        seconds = int(window.long.total_seconds())
        parts.append(f"max({TOTAL_RATE}{long}{sel} * {seconds} >= {slo.min_events}) without (sloth_window)")
    return "(\n    " + "\n    and\n    ".join(parts) + "\n)"


def alert_expr(slo: SLO, severity: Severity) -> str:
    return "\nor\n".join(_pair(slo, w) for w in windows_of(severity)) + "\n"


def alert_rules(slo: SLO) -> list[dict[str, Json]]:
    rules: list[dict[str, Json]] = []
    alerts: Sequence[tuple[Severity, Alert]] = (("page", slo.page), ("ticket", slo.ticket))
    for severity, alert in alerts:
        if alert.disable:
            continue
        labels: dict[str, Json] = {**slo.alert_labels, **alert.labels, "sloth_severity": severity,
                                   "slo_tier": str(slo.tier), "slo_team": slo.team}
        annotations: dict[str, Json] = {
            "title": f"({severity}) {{{{$labels.sloth_service}}}} {{{{$labels.sloth_slo}}}} SLO error budget "
                     "burn rate is too fast.",
            **slo.alert_annotations, **alert.annotations}
        rule: dict[str, Json] = {"alert": slo.alert_name, "expr": alert_expr(slo, severity)}
        if alert.for_:
            rule["for"] = alert.for_
        rule |= {"labels": labels, "annotations": annotations}
        rules.append(rule)
    return rules


def rule_groups(slos: Iterable[SLO]) -> dict[str, Json]:
    """Sloth's three groups per SLO, as one Prometheus rule file's content."""
    groups: list[Json] = []
    for slo in slos:
        groups.append({"name": f"sloth-slo-sli-recordings-{slo.id}", "rules": sli_rules(slo)})
        groups.append({"name": f"sloth-slo-meta-recordings-{slo.id}", "rules": meta_rules(slo)})
        alerts = alert_rules(slo)
        if alerts:
            groups.append({"name": f"sloth-slo-alerts-{slo.id}", "rules": alerts})
    return {"groups": groups}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (rule expressions) as literal blocks, the way people write rule files."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def _dump(data: Json) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)


HEADER = "# Generated by Traceo FinOps (finops_slo) from SLO specs. Do not edit: edit the spec.\n"


def prometheus_rule_file(slos: Iterable[SLO]) -> str:
    """A Prometheus rule file (``rule_files:``; ``promtool check rules``)."""
    return HEADER + _dump(rule_groups(slos))


def mimir_namespace(slos: Iterable[SLO], namespace: str) -> str:
    """The same groups as a Mimir ruler namespace file (``mimirtool rules load``)."""
    return HEADER + _dump({"namespace": namespace, **rule_groups(slos)})
