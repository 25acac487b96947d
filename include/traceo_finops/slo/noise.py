"""Measured alert noise: the generated alert rules replayed over a request history with range queries on a real
Prometheus, honouring ``for:``, and scored against what is known to have happened (issue 13 item 4).

**Replay.** Each SLO's generated page and ticket alerts (``rules.alert_rules``: the very rules the rule file
holds) are evaluated with ``query_range`` at the rule evaluation interval (1 minute) over the history, with every
recorded series they read (``slo:sli_error:ratio_rate<w>``, ``slo:sli_total:rate<w>``) replaced by its
recording rule's own expression — the same answer a Prometheus evaluating the rule file returns, minus the up
to one interval by which a recorded sample lags (Prometheus evaluates an alert on the latest recorded sample).
A range query answers a point for every step where the expression returns a series; the ``for:`` state
machine is then Prometheus': the first step of a run of consecutive answers makes the alert pending, it fires
at the first step at least ``for`` later, and resolves at the first step without an answer. The baseline is
a plain threshold on the 5-minute error ratio, ``error_ratio_5m > (1 - objective)`` for 5 minutes.

**Scoring.** One firing (a pending → firing transition) is one notification. A firing *belongs to* an incident
when it overlaps the incident, or the ``ATTRIBUTION_TAIL`` after it; an incident is *detected* by the first
such firing (its delay is from the incident's first minute to the firing's start), and a firing that belongs
to no incident is *false*. Alertmanager's repeats and the inhibition of a ticket while the page fires are not
counted (they repeat or mute a firing, they are not new ones).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from traceo_finops.prometheus import PrometheusClient
from traceo_finops.quality import between, not_null, one_of, unique_together
from traceo_finops.reports import Dataset
from traceo_finops.reports import column as _f
from traceo_finops.slo.burnrate import parse_duration
from traceo_finops.slo.rules import alert_rules, sli_rules
from traceo_finops.slo.spec import SLO

STEP = timedelta(minutes=1)  # the rule evaluation interval replayed
MAX_POINTS = 10_000  # per range query (Prometheus refuses more than 11,000)
THRESHOLD_FOR = timedelta(minutes=5)
ATTRIBUTION_TAIL = timedelta(hours=6)  # the longest short window: an alert that long after an incident is its echo
MWMB, THRESHOLD = "mwmb", "threshold_5m"
MWMB_NO_GUARD = "mwmb_no_guard"  # an SLO's MWMB rules without its min_events traffic guard (what the guard saves)


class ReplayError(RuntimeError):
    """A rule cannot be replayed (e.g. it reads a recorded series whose recording rule is unknown)."""


@dataclass(frozen=True)
class ReplayRule:
    """One alert rule to replay: its method (``mwmb`` or ``threshold_5m``), severity, PromQL and ``for:``."""

    slo_id: str
    method: str
    severity: str  # page | ticket
    expr: str
    for_: timedelta = timedelta(0)


@dataclass(frozen=True)
class Firing:
    """One alert instance from pending to resolution: it fired at ``start`` and was last firing at ``end``
    (unix seconds); ``active_since`` is when it became pending."""

    active_since: float
    start: float
    end: float
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Event:
    """Something known to have happened: an incident (``expect`` page or ticket) or noise (``expect`` "")."""

    slo_id: str
    kind: str  # fast_burn | slow_burn | blip | low_traffic
    name: str
    start: float
    end: float
    expect: str = ""

    @property
    def incident(self) -> bool:
        return bool(self.expect)


# -- rules ----------------------------------------------------------------------------------------------------
def inline(expr: str, slo: SLO) -> str:
    """``expr`` with every recorded SLI series of ``slo`` replaced by its recording rule's expression."""
    out = expr
    selector = f'{{sloth_id="{slo.id}", sloth_service="{slo.service}", sloth_slo="{slo.name}"}}'
    for rule in sorted(sli_rules(slo), key=lambda r: -len(str(r["record"]))):
        out = out.replace(f"{rule['record']}{selector}", f"(\n{str(rule['expr']).strip()}\n)")
    if selector in out:  # (a user's own query may read recorded "slo:" series: only ours must be gone)
        raise ReplayError(f"SLO {slo.id}: the alert reads a recorded series that has no SLI recording rule: {out}")
    return out


def mwmb_rules(slo: SLO) -> list[ReplayRule]:
    """The SLO's generated page and ticket alerts, recording rules inlined, with their ``for:``."""
    return [ReplayRule(slo.id, MWMB, str(dict(r["labels"])["sloth_severity"]),
                       inline(str(r["expr"]), slo), parse_duration(str(r["for"])) if r.get("for") else timedelta(0))
            for r in alert_rules(slo)]


def threshold_rule(slo: SLO, for_: timedelta = THRESHOLD_FOR) -> ReplayRule:
    """The plain rule MWMB is compared with: the 5-minute error ratio above the budget for ``for_``."""
    five = timedelta(minutes=5)
    if slo.error_query is not None and slo.total_query is not None:
        ratio = f"(\n{slo.query(slo.error_query, five)}\n)\n/\n(\n{slo.query(slo.total_query, five)}\n)"
    else:
        assert slo.error_ratio_query is not None
        ratio = f"(\n{slo.query(slo.error_ratio_query, five)}\n)"
    return ReplayRule(slo.id, THRESHOLD, "page", f"{ratio}\n> {slo.budget!r}", for_)


# -- replay ---------------------------------------------------------------------------------------------------
def firings(steps: Iterable[float], step: timedelta, for_: timedelta,
            labels: tuple[tuple[str, str], ...] = ()) -> list[Firing]:
    """Prometheus' ``for:`` state machine over the evaluation times at which the expression answered."""
    out: list[Firing] = []
    run: list[float] = []
    size, hold = step.total_seconds(), for_.total_seconds()

    def close() -> None:
        fired = [t for t in run if t - run[0] >= hold]
        if fired:
            out.append(Firing(run[0], fired[0], run[-1], labels))

    for t in sorted(set(steps)):
        if run and not math.isclose(t - run[-1], size):
            close()
            run = []
        run.append(t)
    if run:
        close()
    return out


def answered_steps(client: PrometheusClient, expr: str, start: datetime, end: datetime,
                   step: timedelta = STEP) -> dict[tuple[tuple[str, str], ...], list[float]]:
    """Per output series, the evaluation times in ``[start, end]`` at which ``expr`` answered; range queries of
    at most ``MAX_POINTS`` steps."""
    out: dict[tuple[tuple[str, str], ...], list[float]] = {}
    chunk = step * (MAX_POINTS - 1)
    lo = start
    while lo <= end:
        hi = min(lo + chunk, end)
        for series in client.query_range(expr, lo, hi, step):
            key = tuple(sorted((str(k), str(v)) for k, v in dict(series.get("metric") or {}).items()))
            out.setdefault(key, []).extend(float(v[0]) for v in series["values"])
        lo = hi + step
    return out


def replay(client: PrometheusClient, rule: ReplayRule, start: datetime, end: datetime,
           step: timedelta = STEP) -> list[Firing]:
    """Every firing of ``rule`` over ``[start, end]``, earliest first."""
    found = [f for labels, steps in answered_steps(client, rule.expr, start, end, step).items()
             for f in firings(steps, step, rule.for_, labels)]
    return sorted(found, key=lambda f: (f.start, f.labels))


# -- scoring --------------------------------------------------------------------------------------------------
def _overlaps(f: Firing, e: Event, tail: timedelta) -> bool:
    return f.start <= e.end + tail.total_seconds() and f.end >= e.start


@dataclass(frozen=True)
class Detection:
    event: Event
    method: str
    severity: str  # the first matching firing's severity; "" when none
    delay_seconds: float | None  # from the event's start to that firing's start (0 if it was firing already)


def detections(events: Sequence[Event], method: str, fired: Mapping[str, Sequence[Firing]],
               tail: timedelta = ATTRIBUTION_TAIL) -> list[Detection]:
    """For each event, the first firing (of any severity) that overlaps it or its tail."""
    out = []
    for e in events:
        hits = sorted((f.start, sev) for sev, fs in fired.items() for f in fs if _overlaps(f, e, tail))
        out.append(Detection(e, method, hits[0][1] if hits else "",
                             max(0.0, hits[0][0] - e.start) if hits else None))
    return out


def false_firings(fired: Sequence[Firing], incidents: Sequence[Event],
                  tail: timedelta = ATTRIBUTION_TAIL) -> list[Firing]:
    """The firings that belong to no incident."""
    return [f for f in fired if not any(_overlaps(f, e, tail) for e in incidents)]


NOISE_DATASET = Dataset(
    name="slo_alert_noise",
    version=1,
    description="Per SLO and alerting method (multi-window multi-burn-rate vs a plain 5-minute threshold): the "
                "alerts its rules would have sent over a replayed history with known incidents and noise.",
    schema=pa.schema([
        _f("slo_id", pa.string()), _f("service", pa.string()), _f("tier", pa.string()),
        _f("objective", pa.float64()), _f("method", pa.string()),  # mwmb | threshold_5m | mwmb_no_guard
        _f("replay_start", pa.timestamp("s", tz="UTC")), _f("replay_end", pa.timestamp("s", tz="UTC")),
        _f("days", pa.float64()),
        _f("incidents", pa.int64()), _f("incidents_detected", pa.int64()),
        _f("fast_burns", pa.int64()), _f("fast_burns_paged", pa.int64()),
        _f("fast_burn_delay_max_minutes", pa.float64(), True),  # the slowest detection of a fast burn
        _f("slow_burn_delay_max_minutes", pa.float64(), True),
        _f("pages", pa.int64()), _f("tickets", pa.int64()),
        _f("false_pages", pa.int64()), _f("false_tickets", pa.int64()),
        _f("noise_events", pa.int64()), _f("noise_events_paged", pa.int64()),
        _f("pages_per_day", pa.float64()), _f("alerts_per_day", pa.float64()),
    ]),
    expectations=(
        *not_null("slo_id", "method", "pages", "tickets"),
        one_of("method", [MWMB, THRESHOLD, MWMB_NO_GUARD]),
        between("pages_per_day", min_value=0),
        unique_together("slo_id", "method"),
    ),
)


def score(slo: SLO, method: str, fired: Mapping[str, Sequence[Firing]], events: Sequence[Event],
          start: datetime, end: datetime) -> tuple[dict[str, Any], list[Detection]]:
    """The ``slo_alert_noise`` row of one SLO and method, and each event's detection."""
    mine = [e for e in events if e.slo_id == slo.id]
    incidents = [e for e in mine if e.incident]
    noise = [e for e in mine if not e.incident]
    found = detections(mine, method, fired)
    hit = [d for d in found if d.event.incident and d.delay_seconds is not None]

    def slowest(kind: str) -> float | None:
        delays = [d.delay_seconds / 60 for d in hit if d.event.kind == kind and d.delay_seconds is not None]
        return max(delays) if delays else None

    pages, tickets = fired.get("page", ()), fired.get("ticket", ())
    noise_paged = sum(1 for e in noise if any(_overlaps(f, e, ATTRIBUTION_TAIL) for f in pages))
    fast = [e for e in incidents if e.expect == "page"]
    days = (end - start) / timedelta(days=1)
    row = {
        "slo_id": slo.id, "service": slo.service, "tier": str(slo.tier), "objective": slo.objective,
        "method": method, "replay_start": start, "replay_end": end, "days": round(days, 4),
        "incidents": len(incidents), "incidents_detected": len(hit),
        "fast_burns": len(fast),
        "fast_burns_paged": sum(1 for e in fast if any(_overlaps(f, e, ATTRIBUTION_TAIL) for f in pages)),
        "fast_burn_delay_max_minutes": slowest("fast_burn"), "slow_burn_delay_max_minutes": slowest("slow_burn"),
        "pages": len(pages), "tickets": len(tickets),
        "false_pages": len(false_firings(pages, incidents)), "false_tickets": len(false_firings(tickets, incidents)),
        "noise_events": len(noise), "noise_events_paged": noise_paged,
        "pages_per_day": len(pages) / days, "alerts_per_day": (len(pages) + len(tickets)) / days,
    }
    return row, found


@dataclass(frozen=True)
class SloReplay:
    """One SLO's replay: the firings of each method per severity, its noise rows and detections."""

    slo: SLO
    fired: Mapping[str, Mapping[str, list[Firing]]]  # method -> severity -> firings
    rows: list[dict[str, Any]]
    detections: list[Detection]


def replay_slo(client: PrometheusClient, slo: SLO, events: Sequence[Event], start: datetime, end: datetime,
               step: timedelta = STEP) -> SloReplay:
    """Replay the SLO's MWMB page and ticket alerts and the 5-minute threshold, and score both; an SLO with a
    traffic guard also without it (``mwmb_no_guard``)."""
    fired: dict[str, dict[str, list[Firing]]] = {MWMB: {}, THRESHOLD: {}}
    rules = [*mwmb_rules(slo), threshold_rule(slo)]
    if slo.min_events is not None:
        fired[MWMB_NO_GUARD] = {}
        rules += [replace(r, method=MWMB_NO_GUARD) for r in mwmb_rules(replace(slo, min_events=None))]
    for rule in rules:
        fired[rule.method].setdefault(rule.severity, []).extend(replay(client, rule, start, end, step))
    rows, found = [], []
    for method in fired:
        row, det = score(slo, method, fired[method], events, start, end)
        rows.append(row)
        found += det
    return SloReplay(slo, fired, rows, found)


def events_of(truth: Mapping[str, Any]) -> list[Event]:
    """The incidents and noise of a history's ground truth (``incidents``/``noise`` lists with ``slo_id``,
    ``kind``, ``start``, ``end`` in unix seconds; an incident's ``expect``)."""
    out = [Event(i["slo_id"], i["kind"], i.get("name", i["kind"]), float(i["start"]), float(i["end"]),
                 i["expect"]) for i in truth.get("incidents", ())]
    out += [Event(n["slo_id"], n["kind"], n.get("name", n["kind"]), float(n["start"]), float(n["end"]))
            for n in truth.get("noise", ())]
    return out


def reduction(rows: Sequence[Mapping[str, Any]], column: str) -> float | None:
    """1 - MWMB's total of ``column`` over the threshold's (0.8 = 80 % fewer); None when the threshold sent none."""
    mwmb = sum(r[column] for r in rows if r["method"] == MWMB)
    base = sum(r[column] for r in rows if r["method"] == THRESHOLD)
    return None if base == 0 else 1 - mwmb / base
