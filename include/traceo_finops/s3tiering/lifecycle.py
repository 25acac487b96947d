"""Lifecycle configurations: build the ``finops-`` rules, merge them into what a bucket has, validate, diff.

Traceo owns the rules whose ID starts with ``finops-`` and nothing else. A merge keeps every other
rule exactly as S3 returned it, in its order, and replaces the ``finops-`` rules by the plan's.
``PutBucketLifecycleConfiguration`` replaces the whole configuration, so the merged one is what
gets sent, always with ``TransitionDefaultMinimumObjectSize = all_storage_classes_128K`` and every
``finops-`` transition rule also carrying ``ObjectSizeGreaterThan`` — two guards that keep
meta.json, markers and bucket indexes (all under 128 KB) in STANDARD.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from traceo_finops.config import Bucket, BucketRole
from traceo_finops.pricing import ARCHIVE_CLASSES, StorageClass
from traceo_finops.s3tiering.costs import can_transition
from traceo_finops.s3tiering.errors import LifecycleValidationError
from traceo_finops.s3tiering.inventory import SIZE_BAND_BYTES
from traceo_finops.s3tiering.recommend import RULE_PREFIX, ScopeDecision

MAX_RULES = 1000
MAX_ID_LENGTH = 255
DEFAULT_MIN_SIZE = "all_storage_classes_128K"
# Strictly greater than this many bytes: objects of 128 KiB and more, the report's ">=128KB" band.
SIZE_FILTER = SIZE_BAND_BYTES - 1
IA_CLASSES = (StorageClass.STANDARD_IA, StorageClass.ONEZONE_IA)
IA_MIN_DAYS = 30
# Expiration backstop: this long after retention + deletion delay, so the compactor always goes first.
EXPIRATION_MARGIN_DAYS = 7
ABORT_MPU_ID = f"{RULE_PREFIX}abort-incomplete-mpu"
_SIZE_KEYS = ("ObjectSizeGreaterThan", "ObjectSizeLessThan")


def is_finops(rule: dict[str, Any]) -> bool:
    return str(rule.get("ID", "")).startswith(RULE_PREFIX)


# -- building ---------------------------------------------------------------------------------------------
def transition_rule(rule_id: str, prefix: str, steps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    size = {"ObjectSizeGreaterThan": SIZE_FILTER}
    return {"ID": rule_id, "Status": "Enabled",
            "Filter": {"And": {"Prefix": prefix, **size}} if prefix else size,
            "Transitions": [dict(s) for s in steps]}


def expiration_days(retention_days: float, deletion_delay_days: float) -> int:
    return math.ceil(retention_days + deletion_delay_days) + EXPIRATION_MARGIN_DAYS


def _covers_whole_bucket(rule: dict[str, Any]) -> bool:
    filt = rule.get("Filter", {"Prefix": rule.get("Prefix", "")})
    return filt in ({}, {"Prefix": ""})


def build_rules(bucket: Bucket, decisions: Sequence[ScopeDecision], current_rules: Sequence[dict[str, Any]]
                ) -> list[dict[str, Any]]:
    """The ``finops-`` rules of a plan: transitions per scope, abort-MPU, expiration if asked for."""
    rules = [transition_rule(d.rule_id, d.prefix, [s.as_dict() for s in d.chosen.steps])
             for d in decisions if d.chosen is not None]
    if bucket.allow_expiration:
        delay = bucket.deletion_delay.total_seconds() / 86400
        for d in decisions:
            retention = bucket.retention_overrides.get(d.tenant, bucket.retention) if d.tenant else bucket.retention
            if retention is None:
                continue
            rules.append({"ID": f"{RULE_PREFIX}expire-{d.tenant or 'bucket'}", "Status": "Enabled",
                          "Filter": {"Prefix": d.prefix},
                          "Expiration": {"Days": expiration_days(retention.total_seconds() / 86400, delay)}})
    if bucket.abort_incomplete_multipart_days:
        foreign_abort = any(not is_finops(r) and r.get("Status") == "Enabled" and "AbortIncompleteMultipartUpload" in r
                            and _covers_whole_bucket(r) for r in current_rules)
        if not foreign_abort:
            rules.append({"ID": ABORT_MPU_ID, "Status": "Enabled", "Filter": {"Prefix": ""},
                          "AbortIncompleteMultipartUpload": {
                              "DaysAfterInitiation": bucket.abort_incomplete_multipart_days}})
    return rules


# -- canonical form, merge and diff ------------------------------------------------------------------------
def canonical(rule: dict[str, Any], *, drop_size: bool = False) -> dict[str, Any]:
    """A rule with its filter flattened ({Prefix, Tags, sizes}), so equal rules compare equal.

    ``drop_size`` leaves the size conditions out: for servers that do not echo them (moto).
    """
    r = copy.deepcopy(rule)
    filt = r.pop("Filter", None)
    conds: dict[str, Any] = {}
    if filt is None:
        conds["Prefix"] = r.pop("Prefix", "")
    else:
        r.pop("Prefix", None)
        inner = filt.get("And", filt)
        conds["Prefix"] = inner.get("Prefix", "")
        tags = list(inner.get("Tags", [])) + ([inner["Tag"]] if "Tag" in inner else []) + \
            ([filt["Tag"]] if "Tag" in filt and "And" in filt else [])
        if tags:
            conds["Tags"] = sorted((t["Key"], t["Value"]) for t in tags)
        for k in _SIZE_KEYS:
            if k in inner and not drop_size:
                conds[k] = int(inner[k])
    r["Filter"] = conds
    if "Transitions" in r:
        r["Transitions"] = sorted(r["Transitions"], key=lambda t: (t.get("Days", -1), str(t.get("Date", ""))))
    return r


@dataclass
class Diff:
    added: list[dict[str, Any]] = field(default_factory=list)
    changed: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)  # (before, after)
    removed: list[dict[str, Any]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    default_min_size: tuple[str | None, str] | None = None  # (before, after) when it changes

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed or self.default_min_size)

    def summary(self) -> str:
        parts = [f"+{len(self.added)} added", f"~{len(self.changed)} changed", f"-{len(self.removed)} removed"]
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"added": self.added, "changed": [{"before": b, "after": a} for b, a in self.changed],
                "removed": self.removed, "unchanged": self.unchanged,
                "default_min_size": list(self.default_min_size) if self.default_min_size else None,
                "summary": self.summary()}


def merge(current_rules: Sequence[dict[str, Any]], finops_rules: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Foreign rules exactly as they are and where they are, then the plan's ``finops-`` rules."""
    return [copy.deepcopy(r) for r in current_rules if not is_finops(r)] + [copy.deepcopy(r) for r in finops_rules]


def diff(current_rules: Sequence[dict[str, Any]], merged_rules: Sequence[dict[str, Any]],
         current_default: str | None = None, new_default: str = DEFAULT_MIN_SIZE, *, drop_size: bool = False) -> Diff:
    """``finops-`` rules added, changed, removed; foreign rules never appear (merge keeps them).

    ``drop_size`` compares rules without their size conditions, for servers that do not echo them.
    """
    before = {r["ID"]: r for r in current_rules if is_finops(r)}
    after = {r["ID"]: r for r in merged_rules if is_finops(r)}
    out = Diff()
    for rid, rule in after.items():
        if rid not in before:
            out.added.append(rule)
        elif canonical(before[rid], drop_size=drop_size) != canonical(rule, drop_size=drop_size):
            out.changed.append((before[rid], rule))
        else:
            out.unchanged.append(rid)
    out.removed = [r for rid, r in before.items() if rid not in after]
    if current_default != new_default and (current_default is not None or out.added or out.changed):
        out.default_min_size = (current_default, new_default)
    return out


# -- validation --------------------------------------------------------------------------------------------
def validate(bucket: Bucket, rules: Sequence[dict[str, Any]], default_min_size: str = DEFAULT_MIN_SIZE) -> list[str]:
    """Warnings for a configuration that is valid; :class:`LifecycleValidationError` listing every problem."""
    problems: list[str] = []
    warnings: list[str] = []
    if len(rules) > MAX_RULES:
        problems.append(f"{len(rules)} rules, S3 allows at most {MAX_RULES}")
    ids = [str(r.get("ID", "")) for r in rules]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        problems.append(f"rule IDs are not unique: {', '.join(dupes)}")
    if default_min_size != DEFAULT_MIN_SIZE:
        problems.append(f"TransitionDefaultMinimumObjectSize must be {DEFAULT_MIN_SIZE} (got {default_min_size}): "
                        "the other setting transitions meta.json and markers too")
    for rule in rules:
        rid = str(rule.get("ID", ""))
        where = f"rule {rid!r}"
        if not rid or len(rid) > MAX_ID_LENGTH:
            problems.append(f"{where}: an ID of 1 to {MAX_ID_LENGTH} characters is required")
        if rule.get("Status") not in ("Enabled", "Disabled"):
            problems.append(f"{where}: Status must be Enabled or Disabled, got {rule.get('Status')!r}")
        if "Filter" in rule and "Prefix" in rule:
            problems.append(f"{where}: has both Filter and the legacy Prefix")
        actions = ("Transitions", "Expiration", "AbortIncompleteMultipartUpload", "NoncurrentVersionTransitions",
                   "NoncurrentVersionExpiration")
        if not any(a in rule for a in actions):
            problems.append(f"{where}: has no action")
        problems += _check_transitions(where, rule.get("Transitions") or [])
        problems += _check_transitions(where + " (noncurrent versions)", rule.get("NoncurrentVersionTransitions") or [],
                                       day_key="NoncurrentDays")
        if is_finops(rule):
            problems += _check_finops(bucket, where, rule)
        elif bucket.role is BucketRole.ONLINE and rule.get("Status") == "Enabled":
            archived = [t.get("StorageClass") for t in rule.get("Transitions") or []
                        if t.get("StorageClass") in ARCHIVE_CLASSES]
            if archived:
                warnings.append(f"foreign {where} moves objects of this online bucket to {', '.join(archived)}, "
                                "which store-gateways cannot read (thanos#7975); it is kept as it is")
    if problems:
        raise LifecycleValidationError(bucket.name, problems)
    return warnings


def _check_transitions(where: str, transitions: Sequence[dict[str, Any]], day_key: str = "Days") -> list[str]:
    problems = []
    prev: dict[str, Any] | None = None
    prev_cls = StorageClass.STANDARD.value
    for t in sorted(transitions, key=lambda t: t.get(day_key, -1)):
        cls = t.get("StorageClass")
        days = t.get(day_key)
        if cls not in {c.value for c in StorageClass} or cls == StorageClass.STANDARD:
            problems.append(f"{where}: cannot transition to {cls!r}")
            continue
        if day_key in t and (not isinstance(days, int) or days < 0):
            problems.append(f"{where}: {day_key} must be a whole number >= 0, got {days!r}")
            continue
        if cls in IA_CLASSES and isinstance(days, int) and days < IA_MIN_DAYS:
            problems.append(f"{where}: {cls} needs at least {IA_MIN_DAYS} days, got {days}")
        if not can_transition(prev_cls, cls):
            problems.append(f"{where}: {prev_cls} -> {cls} is not toward a colder class S3 allows")
        if prev is not None and isinstance(days, int) and isinstance(prev.get(day_key), int):
            gap = days - prev[day_key]
            if gap <= 0:
                problems.append(f"{where}: two transitions at {days} days")
            elif prev_cls in IA_CLASSES and gap < IA_MIN_DAYS:
                problems.append(f"{where}: objects must stay {IA_MIN_DAYS} days in {prev_cls} before {cls} "
                                f"(got {gap})")
        prev, prev_cls = t, cls
    return problems


def _check_finops(bucket: Bucket, where: str, rule: dict[str, Any]) -> list[str]:
    problems = []
    transitions = rule.get("Transitions") or []
    if bucket.role is BucketRole.ONLINE:
        archived = [t["StorageClass"] for t in transitions if t.get("StorageClass") in ARCHIVE_CLASSES]
        if archived:
            problems.append(f"{where}: {', '.join(archived)} in an online bucket (store-gateways cannot read it)")
    if transitions:
        size = canonical(rule)["Filter"].get("ObjectSizeGreaterThan")
        if size is None or size < SIZE_FILTER:
            problems.append(f"{where}: transitions need ObjectSizeGreaterThan >= {SIZE_FILTER} to keep meta.json, "
                            "markers and bucket indexes in STANDARD")
    if "Expiration" in rule and not bucket.allow_expiration:
        problems.append(f"{where}: expires objects but the bucket's configuration has allow_expiration: false")
    return problems
