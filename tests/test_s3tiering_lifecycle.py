"""Lifecycle rules: build, merge (foreign rules kept exactly), diff, validate."""

from __future__ import annotations

import copy

import pytest

from traceo_finops.config import Bucket
from traceo_finops.s3tiering.errors import LifecycleValidationError
from traceo_finops.s3tiering.lifecycle import (
    ABORT_MPU_ID,
    SIZE_FILTER,
    build_rules,
    canonical,
    diff,
    merge,
    transition_rule,
    validate,
)
from traceo_finops.s3tiering.recommend import Candidate, ScopeDecision, Step

pytestmark = pytest.mark.unit

FOREIGN = [
    {"ID": "expire-tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 7}},
    {"ID": "abort-incomplete-mpu", "Filter": {"Prefix": ""}, "Status": "Enabled",
     "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 3}},
    {"ID": "logs-ia", "Filter": {"And": {"Prefix": "logs/", "Tags": [{"Key": "k", "Value": "v"}]}},
     "Status": "Disabled", "Transitions": [{"Days": 45, "StorageClass": "STANDARD_IA"}]},
]
ONLINE = Bucket(name="mimir-blocks", layout="mimir")


def tier(rule_id: str, *steps: tuple[int, str], prefix: str = "team-a/") -> dict:
    return transition_rule(rule_id, prefix, [{"Days": d, "StorageClass": c} for d, c in steps])


def decision(tenant: str, *steps: tuple[int, str]) -> ScopeDecision:
    chosen = Candidate(tuple(Step(d, c) for d, c in steps), 1.0, 0.5, 0.1) if steps else None
    return ScopeDecision(tenant, f"{tenant}/" if tenant else "", f"finops-tier-{tenant or 'bucket'}", chosen)


def test_built_rules_are_prefixed_size_filtered_and_abort_mpu_only_when_missing() -> None:
    rules = build_rules(ONLINE, [decision("team-a", (30, "STANDARD_IA"), (90, "GLACIER_IR")), decision("team-b")],
                        FOREIGN)
    assert [r["ID"] for r in rules] == ["finops-tier-team-a"]  # a foreign rule already aborts MPUs bucket-wide
    assert rules[0]["Filter"] == {"And": {"Prefix": "team-a/", "ObjectSizeGreaterThan": SIZE_FILTER}}
    assert SIZE_FILTER == 128 * 1024 - 1  # objects of 128 KiB and more move; meta.json and markers never
    rules = build_rules(Bucket(name="thanos-blocks", layout="thanos"), [decision("", (30, "STANDARD_IA"))], [])
    assert [r["ID"] for r in rules] == ["finops-tier-bucket", ABORT_MPU_ID]
    assert rules[0]["Filter"] == {"ObjectSizeGreaterThan": SIZE_FILTER}
    assert all("Expiration" not in r for r in rules)  # no expiration unless the config asks


def test_expiration_only_when_allowed_and_after_retention() -> None:
    bucket = Bucket(name="mimir-blocks", allow_expiration=True, retention="400d",
                    retention_overrides={"team-b": "365d"}, deletion_delay="2d", abort_incomplete_multipart_days=None)
    rules = build_rules(bucket, [decision("team-a"), decision("team-b")], [])
    assert {r["ID"]: r["Expiration"]["Days"] for r in rules} == {"finops-expire-team-a": 409,
                                                                "finops-expire-team-b": 374}
    assert validate(bucket, rules) == []
    with pytest.raises(LifecycleValidationError, match="allow_expiration: false"):
        validate(ONLINE, rules)


def test_merge_keeps_every_foreign_rule_exactly_and_in_place() -> None:
    current = [*copy.deepcopy(FOREIGN[:2]), tier("finops-tier-old", (30, "STANDARD_IA")), *copy.deepcopy(FOREIGN[2:])]
    new = [tier("finops-tier-team-a", (60, "GLACIER_IR"))]
    merged = merge(current, new)
    assert merged[:3] == FOREIGN  # same dicts, same order, untouched
    assert merged[3:] == new
    d = diff(current, merged, "all_storage_classes_128K")
    assert [r["ID"] for r in d.added] == ["finops-tier-team-a"]
    assert [r["ID"] for r in d.removed] == ["finops-tier-old"]
    assert d.changed == [] and d.default_min_size is None
    changed = diff(merged, merge(merged, [tier("finops-tier-team-a", (90, "GLACIER_IR"))]), "all_storage_classes_128K")
    assert [(b["Transitions"][0]["Days"], a["Transitions"][0]["Days"]) for b, a in changed.changed] == [(60, 90)]
    same = diff(merged, merge(merged, new), "all_storage_classes_128K")
    assert same.empty and same.unchanged == ["finops-tier-team-a"]
    # From a bucket without configuration, the default size setting is part of the change.
    assert diff([], new, None).default_min_size == (None, "all_storage_classes_128K")


def test_canonical_sees_through_what_moto_echoes() -> None:
    sent = tier("finops-tier-team-a", (30, "STANDARD_IA"))
    moto_echo = {**sent, "Filter": {"And": {"Prefix": "team-a/"}}}  # moto drops ObjectSizeGreaterThan
    assert canonical(sent) != canonical(moto_echo)
    assert canonical(sent, drop_size=True) == canonical(moto_echo, drop_size=True)
    whole = transition_rule("finops-tier-bucket", "", [{"Days": 30, "StorageClass": "STANDARD_IA"}])
    assert canonical({**whole, "Filter": {}}, drop_size=True) == canonical(whole, drop_size=True)


@pytest.mark.parametrize(("rules", "problem"), [
    ([tier(f"finops-{i}", (30, "STANDARD_IA")) for i in range(1001)], "1001 rules, S3 allows at most 1000"),
    ([tier("finops-a", (30, "STANDARD_IA")), tier("finops-a", (60, "GLACIER_IR"))], "not unique: finops-a"),
    ([tier("finops-a", (10, "STANDARD_IA"))], "STANDARD_IA needs at least 30 days, got 10"),
    ([tier("finops-a", (20, "ONEZONE_IA"))], "ONEZONE_IA needs at least 30 days"),
    ([tier("finops-a", (30, "GLACIER_IR"), (90, "STANDARD_IA"))], "GLACIER_IR -> STANDARD_IA is not toward a colder"),
    ([tier("finops-a", (30, "INTELLIGENT_TIERING"), (90, "STANDARD_IA"))], "INTELLIGENT_TIERING -> STANDARD_IA"),
    ([tier("finops-a", (30, "ONEZONE_IA"), (90, "GLACIER_IR"))], "ONEZONE_IA -> GLACIER_IR"),
    ([tier("finops-a", (30, "STANDARD_IA"), (40, "GLACIER_IR"))], "stay 30 days in STANDARD_IA before GLACIER_IR"),
    ([tier("finops-a", (30, "STANDARD"))], "cannot transition to 'STANDARD'"),
    ([tier("finops-a", (30, "STANDARD_IA"), (90, "GLACIER"))], "GLACIER in an online bucket"),
    ([{**tier("finops-a", (30, "STANDARD_IA")), "Filter": {"Prefix": "team-a/"}}], "need ObjectSizeGreaterThan"),
    ([{"ID": "x", "Status": "On", "Filter": {}, "Expiration": {"Days": 3}}], "Status must be Enabled or Disabled"),
    ([{"ID": "x", "Status": "Enabled", "Filter": {}}], "has no action"),
    ([{"ID": "foreign", "Status": "Enabled", "Filter": {},
       "Transitions": [{"Days": 3, "StorageClass": "STANDARD_IA"}]}],
     "rule 'foreign': STANDARD_IA needs at least 30 days"),
])
def test_validation_refuses(rules: list[dict], problem: str) -> None:
    with pytest.raises(LifecycleValidationError, match=problem) as exc:
        validate(ONLINE, rules)
    assert "bucket 'mimir-blocks'" in str(exc.value) and "nothing was written" in str(exc.value)


def test_validation_insists_on_the_128k_default() -> None:
    with pytest.raises(LifecycleValidationError, match="must be all_storage_classes_128K"):
        validate(ONLINE, FOREIGN, default_min_size="varies_by_storage_class")


def test_a_foreign_archive_rule_on_an_online_bucket_is_kept_with_a_warning() -> None:
    foreign = {"ID": "someone-elses", "Status": "Enabled", "Filter": {"Prefix": ""},
               "Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"}, {"Days": 90, "StorageClass": "GLACIER"}]}
    warnings = validate(ONLINE, [*FOREIGN, foreign, tier("finops-tier-team-a", (30, "STANDARD_IA"))])
    assert len(warnings) == 1 and "someone-elses" in warnings[0] and "thanos#7975" in warnings[0]
    archive = Bucket(name="archive-blocks", role="archive")
    assert validate(archive, [tier("finops-tier-team-a", (30, "STANDARD_IA"), (90, "DEEP_ARCHIVE"))]) == []
