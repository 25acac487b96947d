"""Write a bucket's lifecycle configuration without ever breaking it, and undo it.

:func:`safe_apply`, in this order, stopping at the first problem:

1. refuse a bucket that is not allowlisted (``buckets[].apply: true``);
2. read the current configuration (none is fine: ``NoSuchLifecycleConfiguration``);
3. merge by rule ID — only ``finops-`` rules change — and validate the merged configuration;
4. nothing to change: stop, nothing written;
5. write the current configuration as a JSON backup under ``report_root`` and read it back;
6. read the bucket's configuration again: if someone changed it meanwhile, stop;
7. put the merged configuration; a refused put is checked by reading the bucket again and the
   error says whether the previous configuration is still there (it is, unless S3 lied);
8. read back and verify: every foreign rule exactly as before, every ``finops-`` rule as sent,
   ``TransitionDefaultMinimumObjectSize`` as sent. A mismatch restores the backup and fails.

:func:`rollback` puts a chosen backup back exactly (deleting the configuration if the bucket had
none), after backing up what it replaces, and verifies it.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow.fs as pafs

from traceo_finops.config import Bucket
from traceo_finops.s3tiering.errors import ApplyError, S3TieringError
from traceo_finops.s3tiering.inventory import s3_error
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
    except Exception as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
            return LifecycleState(False)
        raise s3_error(exc, bucket, GET_OP) from None
    return LifecycleState(True, tuple(resp.get("Rules") or ()), resp.get("TransitionDefaultMinimumObjectSize"))


# -- backups ----------------------------------------------------------------------------------------------
class BackupStore:
    """JSON backups under ``<report_root>/_artifacts/s3_tiering_backups/report_date=…/`` of a ReportStore."""

    def __init__(self, store: Any, report_date: Any):
        self.store = store
        self.report_date = report_date

    def write(self, doc: dict[str, Any]) -> str:
        stamp = doc["taken_at"].replace("-", "").replace(":", "").replace("+0000", "Z").replace(".", "")
        name = f"{doc['bucket']}.{stamp}.json"
        uri = self.store.write_artifact(BACKUP_DATASET, self.report_date, name,
                                        json.dumps(doc, indent=1, sort_keys=True).encode())
        if read_backup(uri, self.store.fs, self.store.base) != doc:
            raise ApplyError(doc["bucket"], f"backup {uri} does not read back as written; nothing was changed")
        return uri


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
def _put(client: Any, bucket: str, rules: Sequence[dict[str, Any]], default_min_size: str | None) -> None:
    if not rules:  # S3 refuses an empty rule list: no rules means no configuration
        client.delete_bucket_lifecycle(Bucket=bucket)
        return
    kwargs: dict[str, Any] = {"Bucket": bucket, "LifecycleConfiguration": {"Rules": list(rules)}}
    if default_min_size:
        kwargs["TransitionDefaultMinimumObjectSize"] = default_min_size
    client.put_bucket_lifecycle_configuration(**kwargs)


def verify(before: LifecycleState, sent: Sequence[dict[str, Any]], after: LifecycleState, *,
           size_filters: bool = True) -> list[str]:
    """Differences between what S3 holds now and what it should hold after putting ``sent``."""
    problems = []
    if sent and not after.exists:
        return ["the bucket has no lifecycle configuration after the put"]
    if sent and after.default_min_size != DEFAULT_MIN_SIZE:
        problems.append(f"TransitionDefaultMinimumObjectSize is {after.default_min_size!r}, sent {DEFAULT_MIN_SIZE}")
    got = {r.get("ID"): r for r in after.rules}
    want = {r.get("ID"): r for r in sent}
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


def _fail_put(client: Any, bucket: str, before: LifecycleState, backup_uri: str, exc: Exception) -> ApplyError:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
    try:
        now = read_lifecycle(client, bucket)
        state = ("the previous configuration is unchanged (read back: "
                 f"{len(now.rules)} rules, equal to the backup)" if now == before else
                 "the configuration now differs from the backup: restore it with the rollback command")
    except S3TieringError as read_exc:
        state = f"its configuration could not be read back to check ({read_exc})"
    return ApplyError(bucket, f"{PUT_OP} failed ({code}: {exc}); {state}; backup at {backup_uri}")


def safe_apply(client: Any, bucket: Bucket, finops_rules: Sequence[dict[str, Any]], backups: BackupStore, *,
               run_id: str = "") -> ApplyOutcome:
    """Merge ``finops_rules`` into the bucket's configuration, following the steps of the module doc."""
    name = bucket.name
    if not bucket.apply:
        raise S3TieringError(name, "is not allowlisted (buckets[].apply is false); nothing was written")
    before = read_lifecycle(client, name)
    merged = merge(before.rules, finops_rules)
    change = diff(list(before.rules), merged, before.default_min_size, drop_size=not bucket.verify_size_filters)
    warnings = validate(bucket, merged)
    in_force = [r["ID"] for r in merged if is_finops(r)]
    if change.empty:
        log.info("bucket %s: lifecycle configuration already as planned; nothing written", name)
        return ApplyOutcome(name, "unchanged", change.as_dict(), None, in_force, warnings)
    backup_uri = backups.write(before.backup_doc(name, "before apply", run_id))
    if read_lifecycle(client, name) != before:
        raise ApplyError(name, f"its lifecycle configuration changed while applying; nothing was written "
                               f"(backup of the earlier one: {backup_uri})")
    try:
        _put(client, name, merged, DEFAULT_MIN_SIZE)
    except Exception as exc:  # a refusal or a lost connection: either way, say what the bucket holds now
        raise _fail_put(client, name, before, backup_uri, exc) from None
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
    change = diff(list(before.rules), list(target.rules), before.default_min_size,
                  target.default_min_size or DEFAULT_MIN_SIZE, drop_size=not bucket.verify_size_filters)
    if _same(before, target, size_filters=True):
        return ApplyOutcome(name, "unchanged", change.as_dict(), None,
                            [r["ID"] for r in target.rules if is_finops(r)])
    saved = backups.write(before.backup_doc(name, f"before rollback to {backup_uri}", run_id))
    try:
        _put(client, name, list(target.rules) if target.exists else [], target.default_min_size)
    except Exception as exc:
        raise _fail_put(client, name, before, saved, exc) from None
    after = read_lifecycle(client, name)
    if not _same(after, target, bucket.verify_size_filters):
        raise ApplyError(name, f"rollback did not verify: the bucket holds {list(after.rules)}, the backup "
                               f"{list(target.rules)}; the configuration before the rollback is at {saved}")
    log.info("bucket %s: lifecycle configuration rolled back to %s", name, backup_uri)
    return ApplyOutcome(name, "rolled-back", change.as_dict(), saved,
                        [r["ID"] for r in target.rules if is_finops(r)])

