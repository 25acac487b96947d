"""Plan, safe apply, verify and rollback against a real moto_server over HTTP, and every bad input.

moto gaps this file works around, each said where it matters: moto cannot deny a request (a
botocore ``before-call`` hook answers 403 AccessDenied, and botocore raises its real ClientError
from it); moto drops ObjectSizeGreaterThan/LessThan and always reports all_storage_classes_128K
(those are checked on the request we send, recorded by another ``before-call`` hook); moto does not
implement Intelligent-Tiering configurations (a hook answers what S3 would).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.validate import validate_parameters

from tests.support.s3 import (
    answer,
    aws_conn_env,
    client,
    deny,
    lifecycle_rules,
    record_requests,
    restore_lifecycles,
)
from traceo_finops.config import ConfigError, FinopsConfig
from traceo_finops.pricing import load_price_table
from traceo_finops.quality import check
from traceo_finops.reports import ReportStore
from traceo_finops.s3tiering.apply import BackupStore, read_backup, rollback, safe_apply
from traceo_finops.s3tiering.dataset import s3_tiering_dataset
from traceo_finops.s3tiering.errors import (
    ApplyError,
    BucketAccessDenied,
    BucketNotFound,
    MalformedBlockMeta,
    PlanError,
    S3TieringError,
)
from traceo_finops.s3tiering.lifecycle import transition_rule
from traceo_finops.s3tiering.recommend import age_band_labels
from traceo_finops.s3tiering.workflow import (
    apply_or_rollback,
    plan_artifacts,
    plan_bucket,
    plan_or_error,
    report_rows_for,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
REPORT_DATE = date(2026, 11, 28)


@pytest.fixture(scope="module")
def prices():
    return load_price_table()


@pytest.fixture(scope="module")
def as_of(moto: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(moto["truth"]["anchor_ms"] / 1000, UTC) + timedelta(hours=10)


def config_doc(**bucket_overrides: dict[str, Any]) -> dict[str, Any]:
    buckets = {
        "mimir-blocks": {"layout": "mimir", "apply": True, "retention_overrides": {"team-b": "365d"},
                         "verify_size_filters": False},
        "thanos-blocks": {"layout": "thanos", "apply": True, "retention": "365d", "verify_size_filters": False},
        "misc-logs": {"layout": "generic", "apply": False},
    }
    for name, over in bucket_overrides.items():
        buckets[name] = {**buckets.get(name, {}), **over}
    return {"sources": [{"name": "devstack"}], "buckets": [{"name": n, **b} for n, b in buckets.items()]}


def cfg_of(**bucket_overrides: dict[str, Any]) -> FinopsConfig:
    return FinopsConfig.model_validate(config_doc(**bucket_overrides))


@pytest.fixture
def store(tmp_path: Path) -> ReportStore:
    return ReportStore(str(tmp_path / "reports"))


def test_plan_only_reads_and_counts_what_the_bucket_holds(s3, moto, prices, as_of) -> None:
    truth = moto["truth"]["buckets"]["mimir-blocks"]
    writes = record_requests(s3)
    plan = plan_bucket(s3, cfg_of().bucket("mimir-blocks"), cfg_of().workflows.s3_tiering, prices, as_of)
    assert writes == []
    assert (plan.objects, plan.bytes, plan.blocks) == (truth["totals"]["count"], truth["totals"]["bytes"],
                                                        len(truth["blocks"]))
    per_tenant = {}
    for r in plan.rows:
        per_tenant[r["tenant"]] = per_tenant.get(r["tenant"], 0) + r["objects"]
    for tenant, t in truth["tenants"].items():
        assert per_tenant[tenant] == t["totals"]["count"], tenant
    assert per_tenant[""] == sum(1 for o in truth["objects"] if o["tenant"] is None)  # tmp/, __mimir_cluster/
    rules = {r["ID"]: r for r in plan.finops_rules}
    for rule in rules.values():
        assert rule["ID"].startswith("finops-tier-")
        tenant = rule["ID"].removeprefix("finops-tier-")
        assert rule["Filter"] == {"And": {"Prefix": f"{tenant}/", "ObjectSizeGreaterThan": 131071}}
        assert {t["StorageClass"] for t in rule["Transitions"]} <= {"INTELLIGENT_TIERING", "STANDARD_IA", "GLACIER_IR"}
    assert rules, "the seeded tenants have months of blocks: some transition must pay off"
    # team-b keeps 365 days: no ladder it got lets retention delete inside a minimum duration.
    for d in plan.decisions:
        if d["tenant"] == "team-b" and d["chosen"]:
            for step in d["chosen"]["steps"]:
                minimum = prices.min_storage_days(step["StorageClass"])
                assert not step["Days"] <= 365 < step["Days"] + minimum
    assert plan.current["Rules"] == truth["lifecycle_rules"]
    # meta.json, markers and bucket indexes (all < 128 KB here) are never under a proposed rule.
    assert all(r["proposed_rule_id"] is None for r in plan.rows if r["size_band"] == "<128KB")


def test_apply_keeps_foreign_rules_sends_size_filters_backs_up_and_is_idempotent(s3, moto, prices, as_of,
                                                                                  store) -> None:
    truth = moto["truth"]["buckets"]["mimir-blocks"]
    cfg = cfg_of()
    plan = plan_bucket(s3, cfg.bucket("mimir-blocks"), cfg.workflows.s3_tiering, prices, as_of)
    sent = record_requests(s3)
    outcome = safe_apply(s3, cfg.bucket("mimir-blocks"), plan.finops_rules, BackupStore(store, REPORT_DATE))
    assert outcome.mode == "applied"
    puts = [r for r in sent if r["operation"] == "PutBucketLifecycleConfiguration"]
    assert len(puts) == 1
    # moto drops ObjectSizeGreaterThan and always reports all_storage_classes_128K, so both are
    # checked on the request that went out, not on what moto returns.
    assert puts[0]["headers"]["x-amz-transition-default-minimum-object-size"] == "all_storage_classes_128K"
    body = puts[0]["body"]
    for rule in plan.finops_rules:
        if "Transitions" in rule:
            block = re.search(rf"<Rule><ID>{rule['ID']}</ID>.*?</Rule>", body).group(0)
            assert "<ObjectSizeGreaterThan>131071</ObjectSizeGreaterThan>" in block
    after = lifecycle_rules(s3, "mimir-blocks")
    foreign = [r for r in after if not r["ID"].startswith("finops-")]
    assert foreign == truth["lifecycle_rules"]  # exactly, in order
    assert sorted(r["ID"] for r in after if r["ID"].startswith("finops-")) == sorted(outcome.in_force)
    backup = read_backup(outcome.backup_uri, store.fs, store.base)
    assert backup["Rules"] == truth["lifecycle_rules"] and backup["existed"] is True
    assert outcome.backup_uri.startswith(store.base + "/_artifacts/s3_tiering_backups/")
    # Same plan again: nothing to change, nothing written.
    again = safe_apply(s3, cfg.bucket("mimir-blocks"), plan.finops_rules, BackupStore(store, REPORT_DATE))
    assert again.mode == "unchanged" and len(sent) == 1


def test_dry_run_and_buckets_not_allowlisted_are_never_written(s3, moto, prices, as_of, store) -> None:
    cfg = cfg_of(**{"thanos-blocks": {"apply": False}})
    plans = [plan_or_error(cfg, b.name, as_of, lambda: prices, lambda _b: s3) for b in cfg.buckets]
    assert all("error" not in p for p in plans)
    sent = record_requests(s3)
    dry = apply_or_rollback(cfg, plans, apply=False, rollback_uri="", client_for=lambda _b: s3, store=store,
                            report_date=REPORT_DATE)
    assert {o["bucket"]: o["mode"] for o in dry} == dict.fromkeys(["mimir-blocks", "thanos-blocks", "misc-logs"],
                                                                  "dry-run")
    assert sent == []
    assert not (Path(store.base) / "_artifacts").exists()  # not even a backup
    # The report rows of the run fit the dataset (what write_report checks) and say where objects came from.
    rows = report_rows_for(plans, dry, as_of - timedelta(days=1), as_of)
    dataset = s3_tiering_dataset(age_band_labels(cfg.workflows.s3_tiering.transition_days))
    assert check(dataset.name, dataset.table(rows), dataset.expectations).success
    assert {r["source"] for r in rows} == {"list"} and {r["bucket"] for r in rows} == {b.name for b in cfg.buckets}
    live = apply_or_rollback(cfg, plans, apply=True, rollback_uri="", client_for=lambda _b: s3, store=store,
                             report_date=REPORT_DATE)
    assert {o["bucket"]: o["mode"] for o in live} == {"mimir-blocks": "applied", "thanos-blocks": "not-allowlisted",
                                                       "misc-logs": "not-allowlisted"}
    assert {r["url"] for r in sent} == {"?lifecycle"} and len(sent) == 1  # one put, to mimir-blocks only
    assert lifecycle_rules(s3, "thanos-blocks") is None and lifecycle_rules(s3, "misc-logs") is None
    with pytest.raises(S3TieringError, match="'misc-logs': is not allowlisted"):
        safe_apply(s3, cfg.bucket("misc-logs"), [], BackupStore(store, REPORT_DATE))


def test_rollback_restores_exactly_including_no_configuration(s3, moto, prices, as_of, store) -> None:
    cfg = cfg_of()
    backups = BackupStore(store, REPORT_DATE)
    outcomes = {}
    for name in ("mimir-blocks", "thanos-blocks"):
        plan = plan_bucket(s3, cfg.bucket(name), cfg.workflows.s3_tiering, prices, as_of)
        outcomes[name] = safe_apply(s3, cfg.bucket(name), plan.finops_rules, backups)
        assert outcomes[name].mode == "applied"
    assert lifecycle_rules(s3, "thanos-blocks")  # NoSuchLifecycleConfiguration before: it now has finops rules
    for outcome in outcomes.values():
        undo = apply_or_rollback(cfg, [], apply=False, rollback_uri=outcome.backup_uri, client_for=lambda _b: s3,
                                 store=store, report_date=REPORT_DATE)
        assert undo[0]["mode"] == "rolled-back" and undo[0]["backup_uri"]  # what it replaced is backed up too
    assert lifecycle_rules(s3, "mimir-blocks") == moto["truth"]["buckets"]["mimir-blocks"]["lifecycle_rules"]
    assert lifecycle_rules(s3, "thanos-blocks") is None
    # A backup only goes back onto its own bucket, and only an allowlisted one.
    doc = read_backup(outcomes["mimir-blocks"].backup_uri, store.fs, store.base)
    with pytest.raises(S3TieringError, match="is of bucket 'mimir-blocks'; refusing"):
        rollback(s3, cfg.bucket("thanos-blocks"), doc, backups)
    with pytest.raises(S3TieringError, match="not allowlisted"):
        rollback(s3, cfg_of(**{"mimir-blocks": {"apply": False}}).bucket("mimir-blocks"), doc, backups)
    with pytest.raises(S3TieringError, match="not under the report root"):
        read_backup("/etc/passwd", store.fs, store.base)


def test_access_denied_on_get_is_named_and_nothing_changes(s3, moto, prices, as_of, store) -> None:
    cfg = cfg_of()
    sent = record_requests(s3)
    # moto cannot deny: the hook answers 403 AccessDenied and botocore raises its real ClientError.
    with deny(s3, "GetBucketLifecycleConfiguration"):
        with pytest.raises(BucketAccessDenied, match=r"'mimir-blocks': GetBucketLifecycleConfiguration was denied "
                                                     r"\(AccessDenied\); grant s3:GetLifecycleConfiguration"):
            plan_bucket(s3, cfg.bucket("mimir-blocks"), cfg.workflows.s3_tiering, prices, as_of)
        result = plan_or_error(cfg, "mimir-blocks", as_of, lambda: prices, lambda _b: s3)
        assert "AccessDenied" in result["error"] and "bucket 'mimir-blocks'" in result["error"]
        with pytest.raises(BucketAccessDenied):
            safe_apply(s3, cfg.bucket("mimir-blocks"), [], BackupStore(store, REPORT_DATE))
    for op, permission in (("ListObjectsV2", "ListBucket"), ("GetObject", "GetObject")):
        with deny(s3, op), pytest.raises(BucketAccessDenied, match=rf"{op} was denied .* grant s3:{permission}"):
            plan_bucket(s3, cfg.bucket("thanos-blocks"), cfg.workflows.s3_tiering, prices, as_of)
    assert sent == []
    assert lifecycle_rules(s3, "mimir-blocks") == moto["truth"]["buckets"]["mimir-blocks"]["lifecycle_rules"]


def test_access_denied_on_put_leaves_the_original_and_says_so(s3, moto, prices, as_of, store) -> None:
    cfg = cfg_of()
    plan = plan_bucket(s3, cfg.bucket("mimir-blocks"), cfg.workflows.s3_tiering, prices, as_of)
    # moto cannot deny: the hook answers 403 AccessDenied and botocore raises its real ClientError.
    with deny(s3, "PutBucketLifecycleConfiguration") as denied, pytest.raises(ApplyError) as exc:
        safe_apply(s3, cfg.bucket("mimir-blocks"), plan.finops_rules, BackupStore(store, REPORT_DATE))
    assert len(denied) == 1
    msg = str(exc.value)
    assert "bucket 'mimir-blocks': PutBucketLifecycleConfiguration failed (AccessDenied" in msg
    assert "the previous configuration is unchanged (read back: 2 rules, equal to the backup)" in msg
    assert lifecycle_rules(s3, "mimir-blocks") == moto["truth"]["buckets"]["mimir-blocks"]["lifecycle_rules"]


def test_a_put_that_does_not_verify_is_undone(s3, moto, prices, as_of, store) -> None:
    # With verify_size_filters on, moto's dropped ObjectSizeGreaterThan is a verification failure:
    # the apply must restore the previous configuration and fail.
    cfg = cfg_of(**{"mimir-blocks": {"verify_size_filters": True}})
    plan = plan_bucket(s3, cfg.bucket("mimir-blocks"), cfg.workflows.s3_tiering, prices, as_of)
    with pytest.raises(ApplyError, match="verification after the put failed") as exc:
        safe_apply(s3, cfg.bucket("mimir-blocks"), plan.finops_rules, BackupStore(store, REPORT_DATE))
    assert "reads back as" in str(exc.value) and "previous configuration was restored and verified" in str(exc.value)
    assert lifecycle_rules(s3, "mimir-blocks") == moto["truth"]["buckets"]["mimir-blocks"]["lifecycle_rules"]


def test_no_lifecycle_configuration_is_fine(s3, moto, prices, as_of, store) -> None:
    cfg = cfg_of()
    assert lifecycle_rules(s3, "thanos-blocks") is None  # GET answers NoSuchLifecycleConfiguration
    plan = plan_bucket(s3, cfg.bucket("thanos-blocks"), cfg.workflows.s3_tiering, prices, as_of)
    assert plan.current == {"exists": False, "TransitionDefaultMinimumObjectSize": None, "Rules": []}
    outcome = safe_apply(s3, cfg.bucket("thanos-blocks"), plan.finops_rules, BackupStore(store, REPORT_DATE))
    assert read_backup(outcome.backup_uri, store.fs, store.base)["existed"] is False
    assert outcome.diff["default_min_size"] == [None, "all_storage_classes_128K"]


def test_unknown_and_missing_buckets(s3, moto, prices, as_of) -> None:
    cfg = cfg_of(**{"nope-bucket": {"layout": "thanos"}})
    with pytest.raises(ConfigError, match=r"no bucket named 'not-configured' in the configuration \(known: "
                                          r"mimir-blocks, thanos-blocks, misc-logs, nope-bucket\)"):
        cfg.bucket("not-configured")
    assert "no bucket named 'not-configured'" in plan_or_error(cfg, "not-configured", as_of, lambda: prices,
                                                               lambda _b: s3)["error"]
    with pytest.raises(BucketNotFound, match="'nope-bucket': does not exist"):
        plan_bucket(s3, cfg.bucket("nope-bucket"), cfg.workflows.s3_tiering, prices, as_of)


def test_malformed_meta_json_stops_the_plan_naming_the_key(s3, moto, prices, as_of) -> None:
    truth = moto["truth"]["buckets"]["thanos-blocks"]
    block = truth["blocks"][0]
    s3.create_bucket(Bucket="broken-blocks")
    try:
        for o in truth["objects"]:
            if o["block"] == block["ulid"]:
                s3.copy_object(Bucket="broken-blocks", Key=o["key"],
                               CopySource={"Bucket": "thanos-blocks", "Key": o["key"]})
        key = f"{block['ulid']}/meta.json"
        s3.put_object(Bucket="broken-blocks", Key=key, Body=b'{"ulid": "' + block["ulid"].encode() + b'", "versi')
        cfg = cfg_of(**{"broken-blocks": {"layout": "thanos", "apply": True}})
        sent = record_requests(s3)
        with pytest.raises(MalformedBlockMeta, match=rf"bucket 'broken-blocks': {key}: not valid JSON"):
            plan_bucket(s3, cfg.bucket("broken-blocks"), cfg.workflows.s3_tiering, prices, as_of)
        assert sent == [] and lifecycle_rules(s3, "broken-blocks") is None
    finally:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="broken-blocks"):
            for o in page.get("Contents", []):
                s3.delete_object(Bucket="broken-blocks", Key=o["Key"])
        s3.delete_bucket(Bucket="broken-blocks")


def test_keys_that_are_not_ulids(s3, moto, prices, as_of) -> None:
    # misc-logs has block-shaped keys with invalid ULIDs: configured as Thanos, it is refused, naming them.
    cfg = cfg_of(**{"misc-logs": {"layout": "thanos"}})
    with pytest.raises(PlanError, match=r"layout thanos but holds no block: 4 key\(s\) look like block files") as exc:
        plan_bucket(s3, cfg.bucket("misc-logs"), cfg.workflows.s3_tiering, prices, as_of)
    assert "01HZZZZZZZZZZZZZZZZZZZZZZU/index" in str(exc.value)
    # As a generic bucket they are ordinary objects, aged by LastModified.
    plan = plan_bucket(s3, cfg_of().bucket("misc-logs"), cfg.workflows.s3_tiering, prices, as_of)
    assert plan.blocks == 0 and plan.objects == moto["truth"]["buckets"]["misc-logs"]["totals"]["count"]


def test_cli_lists_backups_and_rolls_back(s3, moto, prices, as_of, store, tmp_path: Path) -> None:
    cfg = cfg_of()
    plan = plan_bucket(s3, cfg.bucket("mimir-blocks"), cfg.workflows.s3_tiering, prices, as_of)
    outcome = safe_apply(s3, cfg.bucket("mimir-blocks"), plan.finops_rules, BackupStore(store, REPORT_DATE))
    cfg_file = tmp_path / "finops.yaml"
    cfg_file.write_text(yaml.safe_dump(config_doc()))
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'include'}:{ROOT}", "FINOPS_CONFIG": str(cfg_file),
           "FINOPS_REPORT_ROOT": store.base, "AIRFLOW_CONN_AWS_DEFAULT": aws_conn_env(moto["endpoint_url"])}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "traceo_finops.s3tiering", *args], capture_output=True,
                              text=True, env=env, timeout=120)

    listed = cli("backups", "--bucket", "mimir-blocks")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[-1:] == [outcome.backup_uri]
    done = cli("rollback", "--bucket", "mimir-blocks", "--backup", outcome.backup_uri)
    assert done.returncode == 0, done.stderr
    # stdout is only the JSON document (Airflow's logging, which the connection lookup starts, goes to stderr).
    assert json.loads(done.stdout)["mode"] == "rolled-back"
    assert lifecycle_rules(s3, "mimir-blocks") == moto["truth"]["buckets"]["mimir-blocks"]["lifecycle_rules"]
    wrong = cli("rollback", "--bucket", "thanos-blocks", "--backup", outcome.backup_uri)
    assert wrong.returncode == 1 and "is of bucket 'mimir-blocks'; refusing" in wrong.stderr
    unknown = cli("rollback", "--bucket", "other-bucket", "--backup", outcome.backup_uri)
    assert unknown.returncode == 1 and "no bucket named 'other-bucket'" in unknown.stderr


def test_the_lifecycle_artifact_is_the_request_the_apply_sends(s3, moto, prices, as_of, store) -> None:
    cfg = cfg_of()
    truth = moto["truth"]["buckets"]["mimir-blocks"]
    plan = plan_or_error(cfg, "mimir-blocks", as_of, lambda: prices, lambda _b: s3)
    files = plan_artifacts(plan)
    assert sorted(files) == ["mimir-blocks.lifecycle.json", "mimir-blocks.plan.json"]
    doc = json.loads(files["mimir-blocks.lifecycle.json"])
    # `aws s3api put-bucket-lifecycle-configuration --cli-input-json` takes the operation's input shape of
    # botocore's service model (the CLI is built on it): check the file against it with botocore's validator.
    op = s3.meta.service_model.operation_model("PutBucketLifecycleConfiguration")
    assert set(doc) == {"Bucket", "LifecycleConfiguration", "TransitionDefaultMinimumObjectSize"}
    assert set(doc) <= set(op.input_shape.members)
    validate_parameters(doc, op.input_shape)
    assert doc["Bucket"] == "mimir-blocks" and doc["TransitionDefaultMinimumObjectSize"] == "all_storage_classes_128K"
    rules = doc["LifecycleConfiguration"]["Rules"]
    assert rules[:2] == truth["lifecycle_rules"] and rules[2:] == plan["finops_rules"]
    # Applying the file by hand sends exactly what the apply sends (moto drops the size filters and the
    # header's effect, so the two requests themselves are compared).
    sent = record_requests(s3)
    assert safe_apply(s3, cfg.bucket("mimir-blocks"), plan["finops_rules"], BackupStore(store, REPORT_DATE)).mode == \
        "applied"
    restore_lifecycles(client(moto["endpoint_url"]), moto["truth"])
    s3.put_bucket_lifecycle_configuration(**doc)
    by_apply, by_hand = [r for r in sent if r["operation"] == "PutBucketLifecycleConfiguration"]
    assert by_apply["body"] == by_hand["body"] and "<ObjectSizeGreaterThan>131071" in by_hand["body"]
    header = "x-amz-transition-default-minimum-object-size"
    assert by_apply["headers"][header] == by_hand["headers"][header] == "all_storage_classes_128K"


IT_CONFIGS = {"IsTruncated": False, "IntelligentTieringConfigurationList": [
    {"Id": "archive-old", "Filter": {"Prefix": "team-a/"}, "Status": "Enabled",
     "Tierings": [{"Days": 90, "AccessTier": "ARCHIVE_ACCESS"}]},
    {"Id": "switched-off", "Status": "Disabled", "Tierings": [{"Days": 180, "AccessTier": "DEEP_ARCHIVE_ACCESS"}]},
]}
IT_OP = "ListBucketIntelligentTieringConfigurations"


def test_intelligent_tiering_is_refused_when_an_archive_tier_is_opted_in(s3, moto, prices, as_of, store) -> None:
    # moto does not implement Intelligent-Tiering configurations (it answers the list with an object
    # listing): a before-call hook answers what S3 would.
    cfg = cfg_of(**{"mimir-blocks": {"storage_classes": ["INTELLIGENT_TIERING", "STANDARD_IA"]}})
    bucket = cfg.bucket("mimir-blocks")
    reason = ("INTELLIGENT_TIERING refused: Intelligent-Tiering configuration 'archive-old' (ARCHIVE_ACCESS after "
              "90 d, prefix 'team-a/') opts objects in to an archive access tier, which store-gateways cannot read")

    def it_candidates(plan: Any) -> list[dict[str, Any]]:
        return [c for d in plan.decisions for c in d["candidates"]
                if any(s["StorageClass"] == "INTELLIGENT_TIERING" for s in c["steps"])]

    with answer(s3, IT_OP, IT_CONFIGS) as calls:
        held = plan_bucket(s3, bucket, cfg.workflows.s3_tiering, prices, as_of)
    assert len(calls) == 1
    assert it_candidates(held) and all(c["refused"].startswith(reason) for c in it_candidates(held))
    assert not any(t["StorageClass"] == "INTELLIGENT_TIERING" for r in held.finops_rules
                   for t in r.get("Transitions", []))
    assert any("archive-old" in w for w in held.warnings) and not any("switched-off" in w for w in held.warnings)
    # Only the disabled configuration: nothing is opted in, INTELLIGENT_TIERING is weighed on its merits.
    with answer(s3, IT_OP, {"IntelligentTieringConfigurationList": IT_CONFIGS["IntelligentTieringConfigurationList"]
                            [1:]}):
        free = plan_bucket(s3, bucket, cfg.workflows.s3_tiering, prices, as_of)
    assert not any((c["refused"] or "").startswith("INTELLIGENT_TIERING refused") for c in it_candidates(free))
    # An archive bucket may archive: its configurations are not even read.
    archive = cfg_of(**{"thanos-blocks": {"role": "archive"}}).bucket("thanos-blocks")
    with answer(s3, IT_OP, IT_CONFIGS) as calls:
        plan_bucket(s3, archive, cfg.workflows.s3_tiering, prices, as_of)
    assert calls == []
    # Configurations that cannot be read: not proposed, and the warning says what to grant.
    with deny(s3, IT_OP):
        denied = plan_bucket(s3, bucket, cfg.workflows.s3_tiering, prices, as_of)
    assert any("grant s3:GetIntelligentTieringConfiguration" in w for w in denied.warnings)
    assert all(c["refused"].startswith("INTELLIGENT_TIERING refused") for c in it_candidates(denied))
    # The apply checks again before it writes: a rule with INTELLIGENT_TIERING is refused, nothing written.
    rules = [transition_rule("finops-tier-team-a", "team-a/", [{"Days": 30, "StorageClass": "INTELLIGENT_TIERING"}])]
    sent = record_requests(s3)
    with answer(s3, IT_OP, IT_CONFIGS), pytest.raises(ApplyError, match="INTELLIGENT_TIERING transitions refused, "
                                                                       "nothing was written: Intelligent-Tiering "
                                                                       "configuration 'archive-old'"):
        safe_apply(s3, bucket, rules, BackupStore(store, REPORT_DATE))
    assert sent == [] and lifecycle_rules(s3, "mimir-blocks") == moto["truth"]["buckets"]["mimir-blocks"][
        "lifecycle_rules"]
