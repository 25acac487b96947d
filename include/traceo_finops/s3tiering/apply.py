"""Write a bucket's lifecycle configuration without ever breaking it, and undo it.

:func:`safe_apply`, in this order, stopping at the first problem:

1. refuse a bucket that is not allowlisted (``buckets[].apply: true``);
2. read the current configuration (none is fine: ``NoSuchLifecycleConfiguration``);
3. merge by rule ID — only ``finops-`` rules change — and validate the merged configuration;
4. nothing to change: stop, nothing written;
5. write the current configuration as a JSON backup under ``report_root`` and read it back;
6. read the bucket's configuration again: if someone changed it meanwhile, stop;
7. put the merged configuration (:func:`put_request`, also what ``<bucket>.lifecycle.json`` holds);
   a put that fails is checked by reading the bucket again: still the previous configuration (a
   refusal), or the one sent (the answer was lost, the put took effect: applied), or the error says
   it could not be told;
8. read back and verify: every foreign rule exactly as before, every ``finops-`` rule as sent,
   ``TransitionDefaultMinimumObjectSize`` as sent. A mismatch restores the backup and fails.

An online bucket's ``INTELLIGENT_TIERING`` transitions are refused (nothing written) when one of
its Intelligent-Tiering configurations opts in an archive tier (:func:`intelligent_tiering_archive`).

A retry of the same run (same ``run_id``) that finds the configuration already as planned reports
the change an earlier attempt made, with that attempt's backup (:meth:`BackupStore.by_run`), instead
of "unchanged".

:func:`rollback` puts a chosen backup back exactly (deleting the configuration if the bucket had
none), after backing up what it replaces, and verifies it.

Every S3 failure — an error answer or a network fault — is the bucket's domain error naming the
operation (:func:`traceo_finops.s3tiering.inventory.s3_error`).
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow.fs as pafs

from traceo_finops.config import Bucket, BucketRole
from traceo_finops.pricing import StorageClass
from traceo_finops.reports import ARTIFACTS_DIR, ReportError
from traceo_finops.s3tiering.errors import ApplyError, BucketAccessDenied, S3TieringError
from traceo_finops.s3tiering.inventory import describe, error_code, s3_error
from traceo_finops.s3tiering.lifecycle import (
    DEFAULT_MIN_SIZE,
    canonical,
    diff,
    is_finops,
    merge,
    validate,
)

log = logging.getLogger(__name__)

BACKUP_KIND = "traceo.s3_tiering.lifecycle_backup"
BACKUP_DATASET = "s3_tiering_backups"
GET_OP, PUT_OP, DELETE_OP = ("GetBucketLifecycleConfiguration", "PutBucketLifecycleConfiguration",
                             "DeleteBucketLifecycle")
IT_LIST_OP = "ListBucketIntelligentTieringConfigurations"
IT_ARCHIVE_TIERS = ("ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS")
APPLY_REASON = "before apply"


@dataclass(frozen=True)
class LifecycleState:
    """A bucket's lifecycle configuration as S3 returned it."""

    exists: bool
    rules: tuple[dict[str, Any], ...] = ()
    default_min_size: str | None = None

    def backup_doc(self, bucket: str, reason: str, run_id: str = "") -> dict[str, Any]:
        return {"kind": BACKUP_KIND, "version": 1, "bucket": bucket, "reason": reason, "run_id": run_id,
                "taken_at": datetime.now(UTC).isoformat(timespec="microseconds"), "existed": self.exists,
                "TransitionDefaultMinimumObjectSize": self.default_min_size, "Rules": list(self.rules)}

    @classmethod
    def from_backup(cls, doc: dict[str, Any]) -> LifecycleState:
        return cls(bool(doc["existed"]), tuple(doc.get("Rules") or ()), doc.get("TransitionDefaultMinimumObjectSize"))


def read_lifecycle(client: Any, bucket: str) -> LifecycleState:
    """The bucket's configuration; a bucket without one gives ``exists=False``."""
    try:
        resp = client.get_bucket_lifecycle_configuration(Bucket=bucket)
    except Exception as exc:  # an S3 answer or a network fault
        if error_code(exc) == "NoSuchLifecycleConfiguration":
            return LifecycleState(False)
        raise s3_error(exc, bucket, GET_OP) from None
    return LifecycleState(True, tuple(resp.get("Rules") or ()), resp.get("TransitionDefaultMinimumObjectSize"))


def intelligent_tiering_archive(client: Any, bucket: str) -> list[str]:
    """The bucket's enabled Intelligent-Tiering configurations that opt in an archive tier, described.

    Objects in the Archive / Deep Archive Access tiers answer GET with ``InvalidObjectState`` until
    restored, like GLACIER: a store-gateway cannot read them (thanos#7975).
    """
    found: list[str] = []
    token: str | None = None
    while True:
        kwargs = {"Bucket": bucket, **({"ContinuationToken": token} if token else {})}
        try:
            resp = client.list_bucket_intelligent_tiering_configurations(**kwargs)
        except Exception as exc:  # an S3 answer or a network fault
            raise s3_error(exc, bucket, IT_LIST_OP) from None
        for conf in resp.get("IntelligentTieringConfigurationList") or []:
            tiers = [f"{t.get('AccessTier')} after {t.get('Days')} d" for t in conf.get("Tierings") or []
                     if t.get("AccessTier") in IT_ARCHIVE_TIERS]
            if conf.get("Status") == "Enabled" and tiers:
                filt = conf.get("Filter") or {}
                prefix = (filt.get("And") or filt).get("Prefix")
                scope = f", prefix {prefix!r}" if prefix else ", whole bucket"
                found.append(f"{conf.get('Id')!r} ({', '.join(tiers)}{scope})")
        token = resp.get("NextContinuationToken")
        if not resp.get("IsTruncated") or not token:
            return found


def it_archive_refusal(client: Any, bucket: Bucket) -> str | None:
    """Why ``INTELLIGENT_TIERING`` may not be proposed for this bucket (None: it may).

    Only online buckets are concerned. A denied read refuses it too (what the configurations say
    cannot be known); any other S3 failure is the bucket's error.
    """
    if bucket.role is not BucketRole.ONLINE:
        return None
    try:
        archived = intelligent_tiering_archive(client, bucket.name)
    except BucketAccessDenied as exc:
        return f"its Intelligent-Tiering configurations cannot be checked for archive tiers: {exc}"
    if not archived:
        return None
    return (f"Intelligent-Tiering configuration {'; '.join(archived)} opts objects in to an archive access tier, "
            "which store-gateways cannot read (thanos#7975)")


# -- backups ----------------------------------------------------------------------------------------------
class BackupStore:
    """JSON backups ``<bucket>.<UTC stamp>.json`` under
    ``<report_root>/_artifacts/s3_tiering_backups/report_date=…/`` of a ReportStore."""

    def __init__(self, store: Any, report_date: Any):
        self.store = store
        self.report_date = report_date

    def write(self, doc: dict[str, Any]) -> str:
        stamp = doc["taken_at"].replace("-", "").replace(":", "").replace("+0000", "Z").replace(".", "")
        name = f"{doc['bucket']}.{stamp}.json"
        try:
            uri = self.store.write_artifact(BACKUP_DATASET, self.report_date, name,
                                            json.dumps(doc, indent=1, sort_keys=True).encode())
        except ReportError as exc:
            raise ApplyError(doc["bucket"], f"the backup could not be written ({exc}); nothing was changed") from None
        if read_backup(uri, self.store.fs, self.store.base) != doc:
            raise ApplyError(doc["bucket"], f"backup {uri} does not read back as written; nothing was changed")
        return str(uri)

    def _uri(self, path: str) -> str:
        return f"s3://{path}" if isinstance(self.store.fs, pafs.S3FileSystem) else path

    def uris(self, bucket: str, *, all_dates: bool = False) -> list[str]:
        """URIs of the bucket's backups, oldest first: of this report date, or of every date."""
        base = posixpath.join(self.store.base, ARTIFACTS_DIR, BACKUP_DATASET) if all_dates else \
            self.store.artifact_dir(BACKUP_DATASET, self.report_date)
        name = re.compile(rf"^{re.escape(bucket)}\.(\d{{8}}T\d{{12}}Z)\.json$")
        try:
            infos = self.store.fs.get_file_info(pafs.FileSelector(base, recursive=all_dates, allow_not_found=True))
        except OSError as exc:
            raise S3TieringError(bucket, f"the backups under {self._uri(base)} cannot be listed: {exc}") from None
        found = [(m.group(1), i.path) for i in infos
                 if i.type == pafs.FileType.File and (m := name.match(i.base_name))]
        return [self._uri(path) for _, path in sorted(found)]

    def by_run(self, bucket: str, run_id: str, reason: str) -> list[tuple[str, dict[str, Any]]]:
        """``(uri, doc)`` of the bucket's backups of this report date taken by run ``run_id`` for
        ``reason``, oldest first: what earlier attempts (Airflow retries) of the run saved."""
        if not run_id:
            return []
        docs = [(uri, read_backup(uri, self.store.fs, self.store.base)) for uri in self.uris(bucket)]
        return [(uri, doc) for uri, doc in docs if doc.get("run_id") == run_id and doc.get("reason") == reason]


def backup_path(uri: str, root: str) -> str:
    """Filesystem path of a backup URI, which must lie under the report root ``root``."""
    path = uri.removeprefix("s3://").removeprefix("file://")
    root = root.rstrip("/")
    if not posixpath.normpath(path).startswith(root + "/"):
        raise S3TieringError("?", f"backup {uri} is not under the report root {root}; refusing to read it")
    return posixpath.normpath(path)


def read_backup(uri: str, fs: pafs.FileSystem, root: str) -> dict[str, Any]:
    """A backup document, checked: the right kind and version, a bucket, its rules."""
    path = backup_path(uri, root)
    try:
        with fs.open_input_stream(path) as src:
            doc = json.loads(src.read())
    except FileNotFoundError:
        raise S3TieringError("?", f"backup {uri} does not exist") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise S3TieringError("?", f"backup {uri} cannot be read as JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != BACKUP_KIND or doc.get("version") != 1 \
            or not isinstance(doc.get("Rules"), list) or "existed" not in doc or not doc.get("bucket"):
        raise S3TieringError(str(doc.get("bucket", "?")) if isinstance(doc, dict) else "?",
                             f"{uri} is not a Traceo lifecycle backup (kind {BACKUP_KIND}, version 1)")
    return doc


# -- outcome ----------------------------------------------------------------------------------------------
@dataclass
class ApplyOutcome:
    bucket: str
    mode: str  # dry-run | not-allowlisted | unchanged | applied | rolled-back | failed
    diff: dict[str, Any] = field(default_factory=dict)
    backup_uri: str | None = None
    in_force: list[str] = field(default_factory=list)  # finops rule IDs in force after the run
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "mode": self.mode, "diff": self.diff, "backup_uri": self.backup_uri,
                "in_force": self.in_force, "warnings": self.warnings, "error": self.error}


# -- apply ------------------------------------------------------------------------------------------------
def put_request(bucket: str, rules: Sequence[dict[str, Any]], default_min_size: str | None) -> dict[str, Any]:
    """The request that writes ``rules``: PutBucketLifecycleConfiguration's parameters, in the shape
    ``aws s3api put-bucket-lifecycle-configuration --cli-input-json`` takes; with no rules (S3
    refuses an empty list: no rules means no configuration) DeleteBucketLifecycle's, ``{"Bucket"}``."""
    if not rules:
        return {"Bucket": bucket}
    request: dict[str, Any] = {"Bucket": bucket, "LifecycleConfiguration": {"Rules": list(rules)}}
    if default_min_size:
        request["TransitionDefaultMinimumObjectSize"] = default_min_size
    return request


def _put(client: Any, bucket: str, rules: Sequence[dict[str, Any]], default_min_size: str | None) -> None:
    request = put_request(bucket, rules, default_min_size)
    if "LifecycleConfiguration" in request:
        client.put_bucket_lifecycle_configuration(**request)
    else:
        client.delete_bucket_lifecycle(**request)


def verify(before: LifecycleState, sent: Sequence[dict[str, Any]], after: LifecycleState, *,
           size_filters: bool = True) -> list[str]:
    """Differences between what S3 holds now and what it should hold after putting ``sent``."""
    problems = []
    if sent and not after.exists:
        return ["the bucket has no lifecycle configuration after the put"]
    if sent and after.default_min_size != DEFAULT_MIN_SIZE:
        problems.append(f"TransitionDefaultMinimumObjectSize is {after.default_min_size!r}, sent {DEFAULT_MIN_SIZE}")
    got = {str(r.get("ID")): r for r in after.rules}
    want = {str(r.get("ID")): r for r in sent}
    if set(got) != set(want):
        problems.append(f"rule IDs differ: missing {sorted(set(want) - set(got))}, "
                        f"unexpected {sorted(set(got) - set(want))}")
    foreign_before = {r.get("ID"): r for r in before.rules if not is_finops(r)}
    for rid, rule in want.items():
        if rid not in got:
            continue
        if not is_finops(rule):
            if got[rid] != foreign_before.get(rid):
                problems.append(f"foreign rule {rid!r} changed: {foreign_before.get(rid)} -> {got[rid]}")
        elif canonical(got[rid], drop_size=not size_filters) != canonical(rule, drop_size=not size_filters):
            problems.append(f"rule {rid!r} reads back as {got[rid]}, sent {rule}")
    return problems


def _fail_put(client: Any, bucket: str, before: LifecycleState, backup_uri: str, exc: Exception,
              now: LifecycleState | None = None, op: str = PUT_OP) -> ApplyError:
    """The error of a write ``op`` that failed, saying what the bucket holds now (read again unless ``now``)."""
    try:
        now = read_lifecycle(client, bucket) if now is None else now
        state = ("the previous configuration is unchanged (read back: "
                 f"{len(now.rules)} rules, equal to the backup)" if now == before else
                 "the configuration now differs from the backup: restore it with the rollback command")
    except S3TieringError as read_exc:
        state = (f"its configuration could not be read back to check ({read_exc}); the put may have taken "
                 "effect: a retry of this run reports it, or restore the backup with the rollback command")
    return ApplyError(bucket, f"{op} failed ({describe(exc)}); {state}; backup at {backup_uri}")


def _applied_by_earlier_attempt(bucket: Bucket, backups: BackupStore, run_id: str, reason: str,
                                now: LifecycleState) -> tuple[str, LifecycleState] | None:
    """The newest backup an earlier attempt of run ``run_id`` took for ``reason``, if the bucket no
    longer holds what it saved (that attempt's write took effect)."""
    earlier = backups.by_run(bucket.name, run_id, reason)
    if not earlier:
        return None
    uri, doc = earlier[-1]
    prior = LifecycleState.from_backup(doc)
    return None if _same(prior, now, bucket.verify_size_filters) else (uri, prior)


def check_intelligent_tiering(client: Any, bucket: Bucket, rules: Sequence[dict[str, Any]]) -> None:
    """Refuse (nothing written) ``finops-`` INTELLIGENT_TIERING transitions an archive tier would break."""
    it = StorageClass.INTELLIGENT_TIERING.value
    if not any(is_finops(r) and any(t.get("StorageClass") == it for t in r.get("Transitions") or []) for r in rules):
        return
    why = it_archive_refusal(client, bucket)
    if why:
        raise ApplyError(bucket.name, f"INTELLIGENT_TIERING transitions refused, nothing was written: {why}")


def safe_apply(client: Any, bucket: Bucket, finops_rules: Sequence[dict[str, Any]], backups: BackupStore, *,
               run_id: str = "") -> ApplyOutcome:
    """Merge ``finops_rules`` into the bucket's configuration, following the steps of the module doc."""
    name = bucket.name
    if not bucket.apply:
        raise S3TieringError(name, "is not allowlisted (buckets[].apply is false); nothing was written")
    lossy = not bucket.verify_size_filters
    before = read_lifecycle(client, name)
    merged = merge(before.rules, finops_rules)
    change = diff(list(before.rules), merged, before.default_min_size, drop_size=lossy)
    warnings = validate(bucket, merged)
    in_force = [r["ID"] for r in merged if is_finops(r)]
    if change.empty:
        earlier = _applied_by_earlier_attempt(bucket, backups, run_id, APPLY_REASON, before)
        if earlier is not None:  # an earlier attempt's put took effect, its answer was lost
            uri, prior = earlier
            done = diff(list(prior.rules), merged, prior.default_min_size, drop_size=lossy)
            log.info("bucket %s: applied by an earlier attempt of run %s (%s); backup %s", name, run_id,
                     done.summary(), uri)
            return ApplyOutcome(name, "applied", done.as_dict(), uri, in_force, [
                *warnings, f"applied by an earlier attempt of run {run_id} (whose outcome was lost); the bucket "
                           "holds the planned configuration; backup of the one it replaced: " + uri])
        log.info("bucket %s: lifecycle configuration already as planned; nothing written", name)
        return ApplyOutcome(name, "unchanged", change.as_dict(), None, in_force, warnings)
    check_intelligent_tiering(client, bucket, merged)
    backup_uri = backups.write(before.backup_doc(name, APPLY_REASON, run_id))
    if read_lifecycle(client, name) != before:
        raise ApplyError(name, f"its lifecycle configuration changed while applying; nothing was written "
                               f"(backup of the earlier one: {backup_uri})")
    op = PUT_OP if merged else DELETE_OP
    try:
        _put(client, name, merged, DEFAULT_MIN_SIZE)
    except Exception as exc:  # a refusal or a lost answer: either way, say what the bucket holds now
        try:
            now = read_lifecycle(client, name)
        except S3TieringError:
            raise _fail_put(client, name, before, backup_uri, exc, op=op) from None
        if now == before or verify(before, merged, now, size_filters=bucket.verify_size_filters):
            raise _fail_put(client, name, before, backup_uri, exc, now, op=op) from None
        warnings.append(f"{op} failed ({describe(exc)}), but the bucket holds the configuration sent: it took "
                        "effect")
    after = read_lifecycle(client, name)
    problems = verify(before, merged, after, size_filters=bucket.verify_size_filters)
    if problems:
        restored = _restore(client, name, before, size_filters=bucket.verify_size_filters)
        raise ApplyError(name, "verification after the put failed:\n  " + "\n  ".join(problems)
                         + f"\n{restored}; backup at {backup_uri}")
    if not bucket.verify_size_filters:
        warnings.append("ObjectSizeGreaterThan was sent but not verified (verify_size_filters: false)")
    log.info("bucket %s: lifecycle configuration applied (%s); backup %s", name, change.summary(), backup_uri)
    return ApplyOutcome(name, "applied", change.as_dict(), backup_uri, in_force, warnings)


def _restore(client: Any, bucket: str, state: LifecycleState, *, size_filters: bool) -> str:
    """Put ``state`` back and say whether that worked."""
    try:
        _put(client, bucket, state.rules if state.exists else [], state.default_min_size)
        now = read_lifecycle(client, bucket)
    except Exception as exc:  # report, do not mask the original failure
        return f"restoring the previous configuration FAILED ({exc}): use the rollback command"
    if _same(now, state, size_filters):
        return "the previous configuration was restored and verified"
    return "restoring the previous configuration did not verify: use the rollback command"


def _same(a: LifecycleState, b: LifecycleState, size_filters: bool) -> bool:
    if a.exists != b.exists:
        return False
    if not a.exists:
        return True
    if size_filters:
        return list(a.rules) == list(b.rules)
    return [canonical(r, drop_size=True) for r in a.rules] == [canonical(r, drop_size=True) for r in b.rules]


# -- rollback ---------------------------------------------------------------------------------------------
def rollback(client: Any, bucket: Bucket, backup: dict[str, Any], backups: BackupStore, *,
             run_id: str = "", backup_uri: str = "") -> ApplyOutcome:
    """Restore ``backup`` on ``bucket`` exactly, after backing up the configuration it replaces."""
    name = bucket.name
    if backup.get("bucket") != name:
        raise S3TieringError(name, f"backup {backup_uri or ''} is of bucket {backup.get('bucket')!r}; refusing "
                                   "to restore it here")
    if not bucket.apply:
        raise S3TieringError(name, "is not allowlisted (buckets[].apply is false); rollback refused, nothing written")
    target = LifecycleState.from_backup(backup)
    before = read_lifecycle(client, name)
    lossy = not bucket.verify_size_filters
    change = diff(list(before.rules), list(target.rules), before.default_min_size,
                  target.default_min_size or DEFAULT_MIN_SIZE, drop_size=lossy)
    in_force = [r["ID"] for r in target.rules if is_finops(r)]
    reason = f"before rollback to {backup_uri}"
    if _same(before, target, size_filters=True):
        earlier = _applied_by_earlier_attempt(bucket, backups, run_id, reason, before)
        if earlier is not None:  # an earlier attempt's write took effect, its answer was lost
            uri, prior = earlier
            done = diff(list(prior.rules), list(target.rules), prior.default_min_size,
                        target.default_min_size or DEFAULT_MIN_SIZE, drop_size=lossy)
            return ApplyOutcome(name, "rolled-back", done.as_dict(), uri, in_force, [
                f"rolled back by an earlier attempt of run {run_id} (whose outcome was lost); backup of the "
                f"configuration it replaced: {uri}"])
        return ApplyOutcome(name, "unchanged", change.as_dict(), None, in_force)
    saved = backups.write(before.backup_doc(name, reason, run_id))
    op = PUT_OP if target.exists and target.rules else DELETE_OP
    try:
        _put(client, name, list(target.rules) if target.exists else [], target.default_min_size)
    except Exception as exc:
        raise _fail_put(client, name, before, saved, exc, op=op) from None
    after = read_lifecycle(client, name)
    if not _same(after, target, bucket.verify_size_filters):
        raise ApplyError(name, f"rollback did not verify: the bucket holds {list(after.rules)}, the backup "
                               f"{list(target.rules)}; the configuration before the rollback is at {saved}")
    log.info("bucket %s: lifecycle configuration rolled back to %s", name, backup_uri)
    return ApplyOutcome(name, "rolled-back", change.as_dict(), saved, in_force)
