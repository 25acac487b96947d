"""The one cost model: every upstream dataset's dollars as categories × owners, now and after the proposals (pure).

Each category is read from the dataset that prices it; whatever is not committed is simply absent
(any subset works), and each row's ``basis`` names the dataset it came from:

- ``active_series``: ``cardinality`` (now/after per metric), split by the ``showback`` owner when
  present (each owner takes its place's after/now ratio), else owned by the tenant or source;
- ``local_disk``: ``storage`` (the disk needed at retention x the disk price), per tenant or source;
- ``object_storage``: ``s3_tiering`` (now / projected with the proposed lifecycle rules), per tenant or bucket;
- ``stack_compute``: ``rightsizing`` rows of the stack's own processes (no namespace), per job;
- ``workload_requests``: ``rightsizing`` rows of Kubernetes workloads, per namespace;
- ``queries``: ``recording_rules``: query compute is not priced (0 now); the suggested rules add series.

``config_findings`` savings that are not disk (scrape interval, HA dedup) lower ``active_series``.
A saving is never counted where its category has no current cost on record for that owner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Row = Mapping[str, Any]

ACTIVE_SERIES = "active_series"
LOCAL_DISK = "local_disk"
OBJECT_STORAGE = "object_storage"
STACK_COMPUTE = "stack_compute"
WORKLOAD_REQUESTS = "workload_requests"
QUERIES = "queries"
CATEGORIES = (ACTIVE_SERIES, LOCAL_DISK, OBJECT_STORAGE, STACK_COMPUTE, WORKLOAD_REQUESTS, QUERIES)
STACK_OWNER_PREFIX = "stack:"


@dataclass
class Line:
    """One category × owner: what it costs now and after the proposed actions."""

    category: str
    owner: str
    current: float = 0.0
    projected: float = 0.0
    basis: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def add(self, current: float, projected: float, basis: str) -> None:
        self.current += current
        self.projected += projected
        self.basis.add(basis)


def where(row: Row) -> str:
    """The owner of a row that has no team: its tenant, else its source."""
    return str(row.get("tenant") or row.get("source") or "unknown")


class CostModel:
    """Accumulates :class:`Line` s by (category, owner)."""

    def __init__(self) -> None:
        self.lines: dict[tuple[str, str], Line] = {}

    def line(self, category: str, owner: str) -> Line:
        return self.lines.setdefault((category, owner), Line(category, owner))

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for (cat, owner), ln in sorted(self.lines.items(), key=lambda kv: (CATEGORIES.index(kv[0][0]), kv[0][1])):
            current, projected = round(ln.current, 6), round(ln.projected, 6)
            out.append({"category": cat, "owner": owner, "current_monthly_usd": current,
                        "projected_monthly_usd": projected, "saving_monthly_usd": round(current - projected, 6),
                        "basis": ", ".join(sorted(ln.basis)), "notes": "; ".join(ln.notes)})
        return out


def _f(value: Any) -> float:
    return float(value) if value is not None else 0.0


def _active_series(model: CostModel, cardinality: Sequence[Row], showback: Sequence[Row]) -> None:
    by_place: dict[tuple[str, str], tuple[float, float]] = {}
    for r in cardinality:
        key = (str(r["source"]), str(r["tenant"]))
        now, after = by_place.get(key, (0.0, 0.0))
        by_place[key] = (now + _f(r["monthly_cost_usd"]), after + _f(r["monthly_cost_after_usd"]))
    shown = {(str(r["source"]), str(r["tenant"])) for r in showback}
    for r in showback:
        key = (str(r["source"]), str(r["tenant"]))
        now, after = by_place.get(key, (0.0, 0.0))
        ratio = after / now if now else 1.0  # the place's after/now, applied to each owner's share
        cost = _f(r["monthly_cost_usd"])
        ln = model.line(ACTIVE_SERIES, str(r["owner"]))
        ln.add(cost, cost * ratio, "showback+cardinality")
    for (source, tenant), (now, after) in by_place.items():
        if (source, tenant) not in shown:
            model.line(ACTIVE_SERIES, tenant or source).add(now, after, "cardinality")


def _local_disk(model: CostModel, storage: Sequence[Row]) -> None:
    for r in storage:
        if r.get("kind") == "prometheus":
            cost = _f(r["monthly_cost_usd"])
            ln = model.line(LOCAL_DISK, where(r))
            ln.add(cost, cost, "storage")
            if r.get("status") not in ("ok", None):
                ln.notes.append(f"{r['source']}: {r['status']}")


def _config_findings(model: CostModel, findings: Sequence[Row]) -> None:
    for r in findings:
        saving = _f(r["monthly_saving_usd"])
        if saving <= 0:
            continue
        category = LOCAL_DISK if "of disk" in str(r.get("saving_model", "")) else ACTIVE_SERIES
        key = (category, where(r))
        ln = model.lines.get(key)
        if ln is None or ln.current <= 0:
            continue  # no current cost on record to take it from: counted as an action only
        taken = min(saving, max(ln.projected, 0.0))
        ln.projected -= taken
        ln.basis.add("config_findings")


def _object_storage(model: CostModel, tiering: Sequence[Row]) -> None:
    for r in tiering:
        owner = str(r["tenant"]) if r.get("tenant") else f"bucket {r['bucket']}"
        model.line(OBJECT_STORAGE, owner).add(_f(r["current_monthly_usd"]), _f(r["projected_monthly_usd"]),
                                              "s3_tiering")


def _rightsizing(model: CostModel, rows: Sequence[Row]) -> None:
    for r in rows:
        if r.get("namespace"):
            ln = model.line(WORKLOAD_REQUESTS, str(r["namespace"]))
        else:
            ln = model.line(STACK_COMPUTE, STACK_OWNER_PREFIX + str(r["workload_name"]))
        ln.add(_f(r["monthly_cost_now_usd"]), _f(r["monthly_cost_after_usd"]), "rightsizing")


def _queries(model: CostModel, rules: Sequence[Row]) -> None:
    seen: set[tuple[str, str, str]] = set()
    for r in rules:
        if r.get("rule_status") != "suggested":
            continue
        key = (str(r["source"]), str(r["tenant"]), str(r["rule_name"]))
        if key in seen:
            continue  # one rule can serve several query groups: its series are paid once
        seen.add(key)
        ln = model.line(QUERIES, where(r))
        ln.add(0.0, _f(r.get("monthly_cost_usd")), "recording_rules")
        if not ln.notes:
            ln.notes.append("query compute is not priced; the suggested recording rules add series")


def cost_summary(upstream: Mapping[str, Sequence[Row]]) -> list[dict[str, Any]]:
    """The ``cost_summary`` rows (without window columns) of whatever ``upstream`` holds."""
    model = CostModel()
    _active_series(model, upstream.get("cardinality", ()), upstream.get("showback", ()))
    _local_disk(model, upstream.get("storage", ()))
    _object_storage(model, upstream.get("s3_tiering", ()))
    _rightsizing(model, upstream.get("rightsizing", ()))
    _queries(model, upstream.get("recording_rules", ()))
    _config_findings(model, upstream.get("config_findings", ()))
    return model.rows()


def totals(rows: Iterable[Row]) -> dict[str, float]:
    rows = list(rows)
    return {k: round(sum(_f(r[f"{k}_monthly_usd"]) for r in rows), 6) for k in ("current", "projected", "saving")}


def by_category(rows: Iterable[Row]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        c = out.setdefault(str(r["category"]), {"current": 0.0, "projected": 0.0, "saving": 0.0})
        for k in c:
            c[k] += _f(r[f"{k}_monthly_usd"])
    return out
