"""Every proposed change of every workflow as one ranked ``actions`` list (pure).

- ``drop_metric`` / ``drop_labels`` / ``aggregate``: ``cardinality`` suggestions (effort low; risk low
  for dropping an unused metric, medium for labels);
- ``config_change``: ``config_findings`` with a saving (low effort, medium risk);
- ``request_patch``: ``rightsizing`` over-/under-provisioned or without requests (a negative saving: fixing costs);
- ``lifecycle_rule``: ``s3_tiering`` proposed rules per bucket x tenant (now - projected; low, low);
- ``recording_rule``: ``recording_rules`` suggestions; the series a rule adds are its (negative) saving.

Ranked by $/month saved (largest first), then by lower risk and effort. ``status`` is ``applied``
when the upstream says the change is in force (a lifecycle rule present on the bucket), else ``proposed``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from traceo_finops.cost_report.model import STACK_OWNER_PREFIX, Row, where

PROPOSED, APPLIED = "proposed", "applied"
LEVELS = ("low", "medium", "high")
KINDS = ("drop_metric", "drop_labels", "aggregate", "config_change", "request_patch", "lifecycle_rule",
         "recording_rule")
_CARDINALITY_KINDS = {"drop_metric": ("low", "low"), "drop_labels": ("low", "medium"),
                      "aggregate": ("medium", "medium")}
_REQUEST_STATUSES = ("over-provisioned", "under-provisioned", "no requests set")


@dataclass(frozen=True)
class Provenance:
    """Where an upstream dataset's committed partition and its artifacts are."""

    uri: str = ""
    artifacts: Sequence[str] = field(default_factory=tuple)

    def artifact(self, folder: str, hint: str = "") -> str:
        """The artifact under ``_artifacts/<folder>/`` named with ``hint`` (else the first), else the partition."""
        mine = [a for a in self.artifacts if f"/_artifacts/{folder}/" in a or a.startswith(f"_artifacts/{folder}/")]
        hinted = [a for a in mine if hint and hint in a.rsplit("/", 1)[-1]]
        return (hinted or mine or [self.uri])[0]


def _id(*parts: object) -> str:
    return hashlib.sha256("\x00".join(map(str, parts)).encode()).hexdigest()[:16]


def _action(workflow: str, kind: str, target: str, owner: str, saving: float, effort: str, risk: str,
            status: str, artifact: str, detail: str) -> dict[str, Any]:
    return {"action_id": _id(workflow, kind, target), "workflow": workflow, "kind": kind, "target": target,
            "owner": owner, "monthly_saving_usd": round(float(saving), 6), "effort": effort, "risk": risk,
            "status": status, "artifact_uri": artifact, "detail": detail[:500]}


def actions(upstream: Mapping[str, Sequence[Row]], where_from: Mapping[str, Provenance]) -> list[dict[str, Any]]:
    """The ranked ``actions`` rows (without window columns); ``rank`` 1 saves most."""
    p = {name: where_from.get(name, Provenance()) for name in
         ("cardinality", "config_findings", "rightsizing", "s3_tiering", "recording_rules")}
    out: list[dict[str, Any]] = []
    for r in upstream.get("cardinality", ()):
        kind = str(r["suggestion"])
        if kind not in _CARDINALITY_KINDS:
            continue
        effort, risk = _CARDINALITY_KINDS[kind]
        if kind == "drop_metric" and r.get("classification") == "unused":
            risk = "low"
        labels = ", ".join(r.get("unneeded_labels") or [])
        out.append(_action("cardinality", kind, f"{_place(r)} {r['metric']}", where(r), r["monthly_saving_usd"],
                           effort, risk, PROPOSED, p["cardinality"].artifact("cardinality", where(r)),
                           f"{int(r['series']):,} → {int(r['series_after']):,} series" + (f"; labels {labels}"
                                                                                          if labels else "")))
    for r in upstream.get("config_findings", ()):
        if float(r["monthly_saving_usd"]) <= 0:
            continue
        out.append(_action("cardinality", "config_change", f"{_place(r)} {r['check_id']} {r['subject']}", where(r),
                           r["monthly_saving_usd"], "low", "medium", PROPOSED, p["config_findings"].uri,
                           str(r["recommendation"])))
    for r in upstream.get("rightsizing", ()):
        if r.get("status") not in _REQUEST_STATUSES or not float(r["monthly_saving_usd"]):
            continue
        owner = str(r["namespace"]) if r.get("namespace") else STACK_OWNER_PREFIX + str(r["workload_name"])
        name = f"{r['namespace']}/{r['workload_name']}" if r.get("namespace") else str(r["workload_name"])
        out.append(_action("rightsizing", "request_patch", f"{name} {r['container']}", owner, r["monthly_saving_usd"],
                           "low", "medium", PROPOSED, p["rightsizing"].artifact("rightsizing", str(r["workload_name"])),
                           f"{r['status']}: {r.get('reason') or ''}"))
    rules: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in upstream.get("s3_tiering", ()):
        if not r.get("proposed_rule_id"):
            continue
        key = (str(r["bucket"]), str(r.get("tenant") or ""), str(r["proposed_rule_id"]))
        agg = rules.setdefault(key, {"saving": 0.0, "applied": True})
        agg["saving"] += float(r["current_monthly_usd"]) - float(r["projected_monthly_usd"])
        agg["applied"] = agg["applied"] and bool(r.get("applied"))
    for (bucket, tenant, rule), agg in rules.items():
        out.append(_action("s3_tiering", "lifecycle_rule", f"{bucket} {tenant or '(all)'} {rule}",
                           tenant or f"bucket {bucket}", agg["saving"], "low", "low",
                           APPLIED if agg["applied"] else PROPOSED, p["s3_tiering"].artifact("s3_tiering", bucket),
                           f"lifecycle rule {rule} on s3://{bucket}/{tenant}"))
    seen: set[tuple[str, str]] = set()
    for r in upstream.get("recording_rules", ()):
        if r.get("rule_status") != "suggested" or (where(r), str(r["rule_name"])) in seen:
            continue
        seen.add((where(r), str(r["rule_name"])))
        speed = f", {float(r['speedup']):.1f}× faster" if r.get("speedup") else ""
        out.append(_action("recording_rules", "recording_rule", f"{_place(r)} {r['rule_name']}", where(r),
                           -float(r.get("monthly_cost_usd") or 0.0), "low", "low", PROPOSED,
                           p["recording_rules"].artifact("recording_rules", where(r)),
                           f"adds {int(r.get('new_series') or 0):,} series{speed}"))
    out.sort(key=lambda a: (-a["monthly_saving_usd"], LEVELS.index(a["risk"]), LEVELS.index(a["effort"]),
                            a["action_id"]))
    return [{**a, "rank": i} for i, a in enumerate(out, start=1)]


def _place(row: Row) -> str:
    """``source/tenant`` (or the source): unique across sources, unlike the owner."""
    return f"{row['source']}/{row['tenant']}" if row.get("tenant") else str(row["source"])
