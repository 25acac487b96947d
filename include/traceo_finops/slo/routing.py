"""The Alertmanager side of the SLO alerts: routes per team and tier, grouping, repetition, inhibition.

What Alertmanager controls is routing, grouping, repetition and inhibition. An escalation chain (page the
on-call, then the secondary after 5 minutes …) is the pager's policy (PagerDuty, Opsgenie), configured there
on the receiver this file names; Alertmanager has none, so none is generated here.

- a route per team (``slo_team``), under it one per tier (``slo_tier``) with the tier's timings;
- critical and high page alerts (``sloth_severity="page"``) go to the team's pager — critical at once,
  high only during the team's working hours (a ``time_intervals`` entry to edit); everything else of a
  team (tickets of every tier, pages of standard and best-effort SLOs) opens a ticket;
- alerts are grouped by service and SLO; a ticket alert is inhibited while the page alert of the same SLO
  (same ``sloth_id``) fires;
- receivers are named placeholders (``<team>-pager``, ``<team>-tickets``) unless the configuration names them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from traceo_finops.shapes import Json
from traceo_finops.slo.errors import RoutingError
from traceo_finops.slo.prove import ToolResult, run_tool
from traceo_finops.slo.spec import SLO, Tier

GROUP_BY = ["sloth_service", "sloth_slo"]
UNROUTED = "slo-unrouted"  # an alert without a known team lands here (nothing matches it by design)


@dataclass(frozen=True)
class Timing:
    group_wait: str
    group_interval: str
    repeat_interval: str


# How fast each tier's first notification goes out, how often a changed group is re-sent, and how often an
# unchanged firing group is repeated.
TIMINGS: dict[Tier, Timing] = {
    Tier.CRITICAL: Timing("0s", "1m", "1h"),
    Tier.HIGH: Timing("30s", "5m", "4h"),
    Tier.STANDARD: Timing("5m", "30m", "24h"),
    Tier.BEST_EFFORT: Timing("10m", "1h", "72h"),
}
PAGING_TIERS = (Tier.CRITICAL, Tier.HIGH)
# A default to edit: the hours a high-tier SLO may page its team (Alertmanager evaluates them in UTC unless a
# location is set).
WORKING_HOURS: list[Json] = [{"weekdays": ["monday:friday"], "times": [{"start_time": "09:00", "end_time": "18:00"}]}]


@dataclass(frozen=True)
class TeamReceivers:
    pager: str
    tickets: str


def placeholders(team: str) -> TeamReceivers:
    return TeamReceivers(pager=f"{team}-pager", tickets=f"{team}-tickets")


def _matcher(label: str, value: str) -> str:
    return f'{label}="{value}"'


def alertmanager_config(slos: Iterable[SLO], receivers: Mapping[str, TeamReceivers] | None = None) -> dict[str, Json]:
    """The ``route``, ``receivers``, ``inhibit_rules`` and ``time_intervals`` for ``slos``.

    With ``receivers`` (team → receiver names), every team of the specs must be in it, else
    :class:`RoutingError` names the teams and their spec files; without, placeholders are named.
    """
    tiers_of: dict[str, set[Tier]] = {}
    files_of: dict[str, set[str]] = {}
    for slo in slos:
        tiers_of.setdefault(slo.team, set()).add(slo.tier)
        files_of.setdefault(slo.team, set()).add(slo.file)
    if not tiers_of:
        raise RoutingError("no SLOs: there is nothing to route")
    if receivers is not None:
        missing = sorted(t for t in tiers_of if t not in receivers)
        if missing:
            raise RoutingError("no receiver for team " + ", ".join(
                f"{t!r} (from {', '.join(sorted(files_of[t]))})" for t in missing))
    names = {t: (receivers[t] if receivers is not None else placeholders(t)) for t in sorted(tiers_of)}

    team_routes: list[Json] = []
    time_intervals: list[Json] = []
    for team, recv in names.items():
        tier_routes: list[Json] = []
        for tier in Tier:  # strictest first
            if tier not in tiers_of[team]:
                continue
            timing = TIMINGS[tier]
            route: dict[str, Json] = {"matchers": [_matcher("slo_tier", str(tier))], "receiver": recv.tickets,
                                      "group_wait": timing.group_wait, "group_interval": timing.group_interval,
                                      "repeat_interval": timing.repeat_interval}
            if tier in PAGING_TIERS:
                page: dict[str, Json] = {"matchers": [_matcher("sloth_severity", "page")], "receiver": recv.pager}
                if tier is Tier.HIGH:
                    page["active_time_intervals"] = [f"{team}-working-hours"]
                route["routes"] = [page]
            tier_routes.append(route)
        if Tier.HIGH in tiers_of[team]:
            time_intervals.append({"name": f"{team}-working-hours", "time_intervals": WORKING_HOURS})
        team_routes.append({"matchers": [_matcher("slo_team", team)], "receiver": recv.tickets,
                            "routes": tier_routes})

    receiver_names = sorted({UNROUTED} | {n for r in names.values() for n in (r.pager, r.tickets)})
    config: dict[str, Json] = {
        "route": {"receiver": UNROUTED, "group_by": GROUP_BY, "routes": team_routes},
        "inhibit_rules": [{"source_matchers": [_matcher("sloth_severity", "page")],
                           "target_matchers": [_matcher("sloth_severity", "ticket")],
                           "equal": ["sloth_id"]}],
        "receivers": [{"name": n} for n in receiver_names],
    }
    if time_intervals:
        config["time_intervals"] = time_intervals
    return config


HEADER = ("# Generated by Traceo FinOps (finops_slo) from SLO specs: merge into alertmanager.yml and give the\n"
          "# placeholder receivers their pager / Slack / ticket configuration.\n")


def alertmanager_yaml(slos: Iterable[SLO], receivers: Mapping[str, TeamReceivers] | None = None) -> str:
    return HEADER + yaml.safe_dump(alertmanager_config(slos, receivers), sort_keys=False, width=1000)


def check_config(path: Path, amtool: str = "amtool") -> ToolResult:
    """``amtool check-config``."""
    return run_tool([amtool, "check-config", str(path)])


def route_test(path: Path, labels: Mapping[str, str], expect: str, amtool: str = "amtool") -> ToolResult:
    """``amtool config routes test``: ``ok`` when the label set reaches exactly the ``expect`` receiver."""
    return run_tool([amtool, "config", "routes", "test", f"--config.file={path}", f"--verify.receivers={expect}",
                 *(f"{k}={v}" for k, v in labels.items())])
