"""Which lifecycle transitions pay off, per tenant prefix (Mimir) or for the whole bucket (Thanos, generic).

For every scope the planner prices each candidate *ladder* — one or two transitions
``(days, class)`` from ``workflows.s3_tiering.transition_days`` and the bucket's allowed classes —
against the objects the rule's filter would match (the scope's prefix, objects of 128 KB or more).

Costs are a steady state: the bucket keeps its present age profile (blocks arrive and retention
removes them at today's pace). *Monthly* = storage + reads (+ the transition fees of the objects
that cross a step's age each month). *One-time* = the transition fees of the backlog (objects
already older than the first step, moved on the first lifecycle run) and the early-deletion charges
of backlog objects that retention or a deletion mark removes before the class's minimum duration.
``break_even_days = one_time / daily saving``; ``net_saving_12m = 12 x monthly saving - one_time``.

A ladder is refused, whatever it saves, when:

- a step targets a class refused for the bucket (``INTELLIGENT_TIERING`` in an ``online`` bucket
  whose Intelligent-Tiering configuration opts in an archive tier);
- a step targets GLACIER or DEEP_ARCHIVE in an ``online`` bucket (never generated) or would archive
  a meta.json, marker or bucket index of 128 KB or more (the size filter could not protect it);
- retention or a deletion mark deletes objects it would move while they are inside the class's
  minimum storage duration (any object lifetime L with ``D <= L < D + minimum``);
- it does not pay off: no monthly saving, a 12-month net saving at or below
  ``min_net_saving_12m``, or a break-even later than ``max_break_even_days``.

The best remaining ladder (largest 12-month net saving; fewer steps on a tie) becomes the scope's
rule; no ladder means no rule.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from traceo_finops.config import Bucket, BucketLayout, BucketRole, S3TieringSettings
from traceo_finops.pricing import ARCHIVE_CLASSES, StorageClass
from traceo_finops.s3tiering.costs import DAYS_PER_MONTH, CostModel, can_transition
from traceo_finops.s3tiering.inventory import LARGE, SMALL
from traceo_finops.s3tiering.layout import CONTROL_ROLES

ONLINE_CLASSES = (StorageClass.INTELLIGENT_TIERING, StorageClass.STANDARD_IA, StorageClass.GLACIER_IR)
ARCHIVE_ROLE_CLASSES = (*ONLINE_CLASSES, StorageClass.GLACIER, StorageClass.DEEP_ARCHIVE)
RULE_PREFIX = "finops-"
BUCKET_SCOPE = "bucket"


def allowed_classes(bucket: Bucket) -> tuple[str, ...]:
    """Target classes for the bucket: configured, else by role; never archive tiers when online."""
    if bucket.storage_classes is not None:
        classes = tuple(bucket.storage_classes)
    else:
        classes = tuple(ONLINE_CLASSES if bucket.role is BucketRole.ONLINE else ARCHIVE_ROLE_CLASSES)
    if bucket.role is BucketRole.ONLINE:
        # Config validation refuses this too; the planner does not rely on it.
        classes = tuple(c for c in classes if StorageClass(c) not in ARCHIVE_CLASSES)
    return tuple(str(c) for c in classes)


def age_bands(days: Sequence[int]) -> list[tuple[int, float, str]]:
    """``(low, high, label)`` bands split at the transition days: 0-30d, 30-60d, ..., 365d+."""
    edges = [0, *sorted(set(days))]
    bands = [(lo, float(hi), f"{lo}-{hi}d") for lo, hi in itertools.pairwise(edges)]
    return [*bands, (edges[-1], math.inf, f"{edges[-1]}d+")]


def age_band_labels(days: Sequence[int]) -> list[str]:
    return [label for _, _, label in age_bands(days)]


@dataclass(frozen=True)
class Step:
    days: int
    storage_class: str

    def as_dict(self) -> dict[str, Any]:
        return {"Days": self.days, "StorageClass": self.storage_class}


@dataclass
class Rows:
    """The object groups a plan is computed on (one entry per group), as numpy arrays."""

    tenant: np.ndarray  # object (str)
    role: np.ndarray
    storage_class: np.ndarray
    small: np.ndarray  # bool: the < 128 KB size band
    age: np.ndarray  # int days since upload
    objects: np.ndarray  # float
    nbytes: np.ndarray  # float
    remaining: np.ndarray  # days until retention / a deletion mark removes it; inf = not known to end

    @property
    def lifetime(self) -> np.ndarray:
        out: np.ndarray = self.age + self.remaining
        return out

    def __len__(self) -> int:
        return len(self.objects)

    @classmethod
    def from_table(cls, t: pa.Table) -> Rows:
        """From a table with tenant, role, storage_class, size_band, age_days, objects, bytes, remaining_days."""
        def np_(name: str) -> np.ndarray:
            out: np.ndarray = t[name].to_numpy(zero_copy_only=False)
            return out

        return cls(np_("tenant").astype(object), np_("role").astype(object), np_("storage_class").astype(object),
                   pc.equal(t["size_band"], SMALL).to_numpy(zero_copy_only=False).astype(bool),
                   np_("age_days").astype(np.int64), np_("objects").astype(float), np_("bytes").astype(float),
                   pc.fill_null(t["remaining_days"], math.inf).to_numpy(zero_copy_only=False).astype(float))


@dataclass
class Candidate:
    """One ladder priced on one scope."""

    steps: tuple[Step, ...]
    current_month: float
    projected_month: float
    one_time: float
    refused: str | None = None

    @property
    def saving_month(self) -> float:
        return self.current_month - self.projected_month

    @property
    def net_12m(self) -> float:
        return 12 * self.saving_month - self.one_time

    @property
    def break_even_days(self) -> float | None:
        if self.saving_month <= 0:
            return None
        return self.one_time / (self.saving_month / DAYS_PER_MONTH)

    def describe(self) -> str:
        return " then ".join(f"{s.storage_class} at {s.days} d" for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {"steps": [s.as_dict() for s in self.steps], "current_month_usd": self.current_month,
                "projected_month_usd": self.projected_month, "one_time_usd": self.one_time,
                "saving_month_usd": self.saving_month, "net_saving_12m_usd": self.net_12m,
                "break_even_days": self.break_even_days, "refused": self.refused}


@dataclass
class ScopeDecision:
    """The rule chosen for one prefix, and every ladder that was weighed."""

    tenant: str  # "" = the whole bucket
    prefix: str
    rule_id: str
    chosen: Candidate | None
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def reason(self) -> str:
        if self.chosen:
            c = self.chosen
            be = f"{c.break_even_days:.0f} d" if c.break_even_days is not None else "n/a"
            return (f"{c.describe()}: saves {c.saving_month:.6g} USD/month, one-time {c.one_time:.6g} USD, "
                    f"break-even {be}, 12-month net {c.net_12m:.6g} USD")
        if not self.candidates:
            return "no candidate ladder (no allowed class or transition day)"
        best = max(self.candidates, key=lambda c: c.net_12m)
        return f"no ladder pays off safely; best was {best.describe()}: {best.refused}"

    def as_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "prefix": self.prefix, "rule_id": self.rule_id,
                "chosen": self.chosen.as_dict() if self.chosen else None, "reason": self.reason,
                "candidates": [c.as_dict() for c in self.candidates]}


def rule_id_for(tenant: str) -> str:
    return f"{RULE_PREFIX}tier-{tenant or BUCKET_SCOPE}"


def scopes(rows: Rows, layout: BucketLayout) -> list[tuple[str, str]]:
    """``(tenant, prefix)`` of every rule scope: one per Mimir tenant, else the whole bucket."""
    if layout is BucketLayout.MIMIR:
        return [(t, f"{t}/") for t in sorted({str(t) for t in rows.tenant if t})]
    return [("", "")] if len(rows) else []


def candidate_ladders(classes: Sequence[str], days: Sequence[int], model: CostModel) -> list[tuple[Step, ...]]:
    """Every one- and two-step ladder S3 accepts: colder each step, IA classes held their 30 days."""
    singles = [Step(d, c) for c in classes for d in days if can_transition(StorageClass.STANDARD, c)]
    ladders: list[tuple[Step, ...]] = [(s,) for s in singles]
    for a, b in itertools.product(singles, singles):
        if can_transition(a.storage_class, b.storage_class) and \
                b.days - a.days >= max(1, model.prices.min_storage_days(a.storage_class)):
            ladders.append((a, b))
    return ladders


@dataclass
class LadderEffect:
    """Per-row result of one ladder on a set of rows."""

    current: np.ndarray
    projected: np.ndarray
    one_time: np.ndarray
    new_class: np.ndarray


def _class_at(steps: tuple[Step, ...], age: np.ndarray) -> np.ndarray:
    out = np.full(len(age), None, dtype=object)
    for s in steps:
        out[age >= s.days] = s.storage_class
    return out


def _next_step_day(steps: tuple[Step, ...], age: np.ndarray) -> np.ndarray:
    out = np.full(len(age), math.inf)
    for s in reversed(steps):
        out[age < s.days] = s.days
    return out


def _monthly_by_class(model: CostModel, classes: np.ndarray, rows: Rows, idx: np.ndarray,
                      it_days: np.ndarray) -> np.ndarray:
    out = np.zeros(len(idx))
    for cls in set(classes.tolist()):
        m = classes == cls
        sel = idx[m]
        out[m] = model.monthly(cls, rows.objects[sel], rows.nbytes[sel], rows.small[sel], it_days[m])
    return out


def current_costs(model: CostModel, rows: Rows, idx: np.ndarray) -> np.ndarray:
    # Objects already in Intelligent-Tiering are taken at their age's tier: the lowest it can be.
    return _monthly_by_class(model, rows.storage_class[idx], rows, idx, rows.age[idx].astype(float))


def ladder_effect(model: CostModel, rows: Rows, idx: np.ndarray, covered: np.ndarray,
                  steps: tuple[Step, ...]) -> LadderEffect:
    """What ``steps`` does to rows ``idx`` (``covered``: matched by the rule's filter)."""
    age = rows.age[idx]
    cur_cls = rows.storage_class[idx]
    current = current_costs(model, rows, idx)
    target = _class_at(steps, age)
    moves = covered & np.array([t is not None and can_transition(c, t) for c, t in zip(cur_cls, target, strict=True)],
                               dtype=bool)
    new_cls = np.where(moves, target, cur_cls)
    step_day = {s.storage_class: s.days for s in steps}
    it_days = np.array([a - step_day[c] if m and c == StorageClass.INTELLIGENT_TIERING else a
                        for a, c, m in zip(age, new_cls, moves, strict=True)], dtype=float)
    projected = np.where(moves, _monthly_by_class(model, new_cls, rows, idx, it_days), current)
    # Steady state: each month the objects now within a month of a step's age cross it and pay its fee.
    for s in steps:
        crossing = covered & (age >= s.days - DAYS_PER_MONTH) & (age < s.days)
        crossing &= rows.lifetime[idx] >= s.days  # deleted before reaching the step: never moved, never billed
        crossing &= np.array([can_transition(c, s.storage_class) for c in cur_cls], dtype=bool)
        if crossing.any():
            projected[crossing] += model.transition(s.storage_class, rows.objects[idx[crossing]])
    one_time = np.zeros(len(idx))
    if moves.any():
        nxt = _next_step_day(steps, age)
        for cls in set(new_cls[moves].tolist()):
            m = moves & (new_cls == cls)
            sel = idx[m]
            stay = np.minimum(rows.remaining[sel], nxt[m] - age[m])
            one_time[m] = model.transition(cls, rows.objects[sel]) + \
                model.early_deletion(cls, rows.objects[sel], rows.nbytes[sel], rows.small[sel], stay)
    return LadderEffect(current, projected, one_time, new_cls)


def _refusal(steps: tuple[Step, ...], rows: Rows, idx: np.ndarray, covered: np.ndarray, model: CostModel,
             cand: Candidate, settings: S3TieringSettings, refused_classes: Mapping[str, str]) -> str | None:
    for s in steps:
        if s.storage_class in refused_classes:
            return f"{s.storage_class} refused: {refused_classes[s.storage_class]}"
    archive_steps = [s for s in steps if StorageClass(s.storage_class) in ARCHIVE_CLASSES]
    if archive_steps:
        big_control = covered & np.isin(rows.role[idx], list(CONTROL_ROLES))
        if big_control.any():
            return (f"{int(rows.objects[idx][big_control].sum())} meta.json/marker/bucket-index object(s) of 128 KB "
                    f"or more would be archived to {archive_steps[0].storage_class} and become unreadable")
    lifetime = rows.lifetime[idx][covered]
    for s in steps:
        minimum = model.prices.min_storage_days(s.storage_class)
        doomed = (lifetime >= s.days) & (lifetime < s.days + minimum)
        if minimum and doomed.any():
            return (f"retention or deletion marks delete {int(rows.objects[idx][covered][doomed].sum())} object(s) "
                    f"between {s.days} and {s.days + minimum} days of age, inside {s.storage_class}'s "
                    f"{minimum}-day minimum storage duration")
    if cand.saving_month == 0 and cand.one_time == 0:
        return "moves nothing: no object of 128 KB or more reaches its transition age"
    if cand.saving_month <= 0:
        return f"no saving: {cand.saving_month:.6g} USD/month (reads and fees outweigh storage)"
    if cand.net_12m <= settings.min_net_saving_12m:
        return (f"12-month net saving {cand.net_12m:.6g} USD is not above min_net_saving_12m "
                f"{settings.min_net_saving_12m:g}")
    be = cand.break_even_days
    if be is not None and be > settings.max_break_even_days:
        return f"break-even after {be:.0f} days, later than max_break_even_days {settings.max_break_even_days}"
    return None


def decide_scope(model: CostModel, rows: Rows, tenant: str, prefix: str, classes: Sequence[str],
                 settings: S3TieringSettings, layout: BucketLayout,
                 refused_classes: Mapping[str, str] | None = None) -> ScopeDecision:
    idx = np.flatnonzero(rows.tenant == tenant) if layout is BucketLayout.MIMIR else np.arange(len(rows))
    covered = ~rows.small[idx]
    decision = ScopeDecision(tenant, prefix, rule_id_for(tenant), None)
    for steps in candidate_ladders(classes, settings.transition_days, model):
        eff = ladder_effect(model, rows, idx, covered, steps)
        cand = Candidate(steps, float(eff.current.sum()), float(eff.projected.sum()), float(eff.one_time.sum()))
        cand.refused = _refusal(steps, rows, idx, covered, model, cand, settings, refused_classes or {})
        decision.candidates.append(cand)
    ok = [c for c in decision.candidates if c.refused is None]
    if ok:
        decision.chosen = min(ok, key=lambda c: (-round(c.net_12m, 12), len(c.steps),
                                                 [(s.days, s.storage_class) for s in c.steps]))
    return decision


def plan_rows(rows: Rows, layout: BucketLayout, bucket: Bucket, settings: S3TieringSettings,
              model: CostModel, *, refused_classes: Mapping[str, str] | None = None
              ) -> tuple[list[ScopeDecision], dict[str, np.ndarray]]:
    """Decide every scope; return the decisions and per-row columns under the chosen rules.

    ``refused_classes``: class -> why no ladder may use it on this bucket (e.g. INTELLIGENT_TIERING
    when an Intelligent-Tiering configuration opts in an archive tier); such ladders are priced and
    kept as refused candidates.
    """
    classes = allowed_classes(bucket)
    model.require(classes)
    decisions = [decide_scope(model, rows, t, p, classes, settings, layout, refused_classes)
                 for t, p in scopes(rows, layout)]
    everything = np.arange(len(rows))
    current = current_costs(model, rows, everything) if len(rows) else np.zeros(0)
    out = {"current": current, "projected": current.copy(), "one_time": np.zeros(len(rows)),
           "rule_id": np.full(len(rows), None, dtype=object)}
    for d in decisions:
        if d.chosen is None:
            continue
        idx = np.flatnonzero(rows.tenant == d.tenant) if layout is BucketLayout.MIMIR else everything
        covered = ~rows.small[idx]
        eff = ladder_effect(model, rows, idx, covered, d.chosen.steps)
        out["projected"][idx] = eff.projected
        out["one_time"][idx] = eff.one_time
        out["rule_id"][idx[covered]] = d.rule_id
    return decisions, out


def report_rows(rows: Rows, costs: dict[str, np.ndarray], bucket: str, days: Sequence[int]) -> list[dict[str, Any]]:
    """Rows of the ``s3_tiering`` dataset: per tenant, class, age band and size band."""
    bands = age_bands(days)
    acc: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for i in range(len(rows)):
        age = rows.age[i]
        band = next(label for lo, hi, label in bands if lo <= age < hi)
        key = (str(rows.tenant[i]), str(rows.storage_class[i]), band, SMALL if rows.small[i] else LARGE)
        r = acc.setdefault(key, {"objects": 0, "bytes": 0, "current": 0.0, "projected": 0.0, "one_time": 0.0,
                                 "rules": set()})
        r["objects"] += int(rows.objects[i])
        r["bytes"] += int(rows.nbytes[i])
        r["current"] += float(costs["current"][i])
        r["projected"] += float(costs["projected"][i])
        r["one_time"] += float(costs["one_time"][i])
        if costs["rule_id"][i]:
            r["rules"].add(costs["rule_id"][i])
    out = []
    for (tenant, cls, band, size), r in sorted(acc.items()):
        saving = r["current"] - r["projected"]
        break_even = r["one_time"] / (saving / DAYS_PER_MONTH) if saving > 0 else None
        out.append({
            "bucket": bucket, "tenant": tenant, "storage_class": cls, "age_band": band, "size_band": size,
            "objects": r["objects"], "bytes": r["bytes"], "current_monthly_usd": r["current"],
            "proposed_rule_id": ",".join(sorted(r["rules"])) or None, "projected_monthly_usd": r["projected"],
            "one_time_transition_usd": r["one_time"], "break_even_days": break_even,
            "net_saving_12m_usd": 12 * saving - r["one_time"],
        })
    return out
