"""The one publish path: a run's datasets and artifacts go out as one committed set.

``publish(ctx, report, results)``:

1. checks every dataset with Great Expectations before anything is written (a failure writes
   only the ``quality_checks`` record of it and raises, so the previous report stays);
2. takes the lock of this DAG and report date (exclusive create locally, a conditional PUT on
   S3), so two runs of one date (a manual run beside a scheduled one) publish one after the
   other, never interleaved;
3. removes what killed publishers of this DAG and date left under ``_staging/``;
4. writes every partition (each row carries the ``run_id``), the artifacts, ``run_targets`` and
   ``quality_checks``;
5. writes the commit marker ``_commits/<dag_id>/report_date=D.json`` last.

A reader in the project reads a partition only when its ``run_id`` is the one the marker names
(:func:`read_committed`): a publish killed half-way leaves a date that is visibly uncommitted,
never one that silently mixes two runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal, NotRequired, TypedDict

import pyarrow as pa
import pyarrow.fs as pafs

from traceo_finops.kit.context import RunContext, Target
from traceo_finops.kit.datasets import QUALITY_CHECKS, RUN_TARGETS, TARGET_FAILED, TARGET_OK
from traceo_finops.kit.outcome import TargetFailure, TargetResult, TargetsFailed, coverage_of, failures
from traceo_finops.reports import (
    RUN_ID_COLUMN,
    STAGING_DIR,
    Dataset,
    PartitionDict,
    ReportError,
    ReportStore,
    TableRows,
    WrittenPartition,
)
from traceo_finops.shapes import Json, JsonObject

log = logging.getLogger(__name__)

LOCKS_DIR = "_locks"
COMMITS_DIR = "_commits"
# A publish writes a few files in seconds; a lock older than this was left by a killed run.
LOCK_STALE_AFTER = timedelta(minutes=30)
LOCK_WAIT = timedelta(minutes=10)
# Taking over a dead lock takes milliseconds; a takeover claim older than this was left by a killed taker.
CLAIM_STALE_AFTER = timedelta(minutes=1)


class PublishError(ReportError):
    """The set could not be published; the message names the DAG, the date and the problem."""


@dataclass
class Report:
    """What a workflow's build step hands to :func:`publish`."""

    datasets: list[tuple[Dataset, TableRows]]  # (dataset, rows or an Arrow table)
    # (dataset name, file name) -> content, written under _artifacts/<dataset>/report_date=D/.
    artifacts: dict[tuple[str, str], bytes] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)  # extra file metadata for every dataset
    summary: JsonObject = field(default_factory=dict)  # small, JSON-safe: goes back to the DAG
    # target label -> what its rows cannot show (no data in the window, a live read on a past day);
    # written to that target's ``run_targets`` row.
    notes: dict[str, str] = field(default_factory=dict)


class DatasetEntry(PartitionDict):
    """One dataset of a committed set: where its partition went and which run wrote it."""

    run_id: str
    partition: NotRequired[dict[str, str]]  # the Hive keys before report_date (the kit's own datasets)


class CommitMarker(TypedDict):
    """``_commits/<dag_id>/report_date=D.json`` as :func:`publish` writes it."""

    dag_id: str
    run_id: str
    report_date: str
    committed_at: str
    window: dict[str, str | bool]
    datasets: dict[str, DatasetEntry]
    artifacts: list[str]
    coverage: str  # e.g. "2 of 3 sources"
    failed_targets: list[TargetFailure]


class Written(CommitMarker):
    """What :func:`publish` returns to the DAG (XCom): the commit marker and the build step's summary."""

    summary: JsonObject


class RunTargetRow(TypedDict):
    """One row of the ``run_targets`` dataset."""

    target: str
    kind: str
    source: str
    tenant: str
    bucket: str
    status: str
    error: str
    rows_written: int
    note: str
    window_start: datetime
    window_end: datetime


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# -- lock ------------------------------------------------------------------------------------------------
def _lock_path(store: ReportStore, dag_id: str, day: date) -> str:
    return store.path(LOCKS_DIR, dag_id, f"report_date={day.isoformat()}.lock")


@contextlib.contextmanager
def publish_lock(store: ReportStore, dag_id: str, day: date, run_id: str, *, wait: timedelta = LOCK_WAIT,
                 stale_after: timedelta = LOCK_STALE_AFTER, poll: float = 0.5) -> Iterator[None]:
    """Hold the publish lock of ``dag_id`` and ``day``; wait for another run's publish to finish.

    A lock left by an earlier attempt of the same run, by a process of this host that is gone
    (``kill -9``), or older than ``stale_after``, was left by a killed publisher and is taken over.
    """
    path = _lock_path(store, dag_id, day)
    token = uuid.uuid4().hex
    body = json.dumps({"run_id": run_id, "token": token, "host": socket.gethostname(), "pid": os.getpid(),
                       "pid_started": _process_start(os.getpid()), "acquired_at": _now().isoformat()}).encode()
    deadline = time.monotonic() + wait.total_seconds()
    while not store.create_exclusive(path, body):
        raw = store.read_file(path)
        if raw is None:
            continue  # released between our create and our read
        held = _parse_lock(raw)
        since = _parse_time(held.get("acquired_at"))
        if held.get("run_id") == run_id or since is None or _now() - since > stale_after or _holder_gone(held):
            _take_over(store, path, raw, f"{dag_id} {day}: taking over the publish lock left by run "
                                         f"{held.get('run_id')!r} (pid {held.get('pid')} on {held.get('host')}) "
                                         f"at {held.get('acquired_at')}")
            continue
        if time.monotonic() > deadline:
            raise PublishError(f"{dag_id} report date {day}: run {held.get('run_id')!r} has been publishing since "
                               f"{held.get('acquired_at')} ({store.uri_of(path)}); gave up waiting after {wait}")
        time.sleep(poll)
    try:
        yield
    finally:
        current = _read_json(store, path)
        if current is not None and current.get("token") == token:
            store.delete_file(path)


def _take_over(store: ReportStore, path: str, raw: bytes, why: str) -> None:
    """Remove the lock at ``path`` if it still holds ``raw``: one taker at a time.

    Two waiters that both find a dead lock must not both delete "the" lock: the second would delete
    the first one's new lock. A claim file per dead lock (exclusive create) lets one of them in, and
    it deletes the lock only if it is still the dead one.
    """
    claim = f"{path}.takeover-{hashlib.sha256(raw).hexdigest()[:16]}"
    if not store.create_exclusive(claim, _now().isoformat().encode()):
        # Someone else is taking it over (milliseconds); a claim older than that was left by a killed taker.
        since = _parse_time((store.read_file(claim) or b"").decode(errors="replace"))
        if since is None or _now() - since > CLAIM_STALE_AFTER:
            store.delete_file(claim)
        time.sleep(0.05)
        return
    try:
        if store.read_file(path) == raw:
            log.warning("%s", why)
            store.delete_file(path)
    finally:
        store.delete_file(claim)


def _parse_lock(raw: bytes) -> JsonObject:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (Linux clock ticks since boot), to tell a reused pid from the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 else None


def _holder_gone(held: Mapping[str, Json]) -> bool:
    """True when the lock's publisher ran on this host and its process is gone (killed, or a zombie).

    Only a process on this host can be checked; a lock from elsewhere waits for ``stale_after``.
    """
    pid = held.get("pid")
    if held.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, under another user
    started = _process_start(pid)
    if started is None:
        return False  # no /proc: cannot tell a zombie or a reused pid; wait for staleness
    if held.get("pid_started") and started != held.get("pid_started"):
        return True  # the pid now belongs to another process
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")  # killed, not yet reaped by its parent


def _read_json(store: ReportStore, path: str) -> JsonObject | None:
    raw = store.read_file(path)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _parse_time(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _clean_staging(store: ReportStore) -> int:
    """Remove the staging folders that killed publishers of this scope left; return how many."""
    if store.is_s3:
        return 0  # S3 publishes with one PUT per file: nothing is staged there
    try:
        infos = store.fs.get_file_info(pafs.FileSelector(store.staging_root, allow_not_found=True))
    except OSError:
        return 0
    removed = 0
    for info in infos:
        if info.type == pafs.FileType.Directory:
            store.fs.delete_dir(info.path)
            removed += 1
    if removed:
        log.info("removed %d staging folder(s) left by killed runs under %s", removed, store.staging_root)
    return removed


# -- commit marker ---------------------------------------------------------------------------------------
def commit_path(store: ReportStore, dag_id: str, day: date) -> str:
    return store.path(COMMITS_DIR, dag_id, f"report_date={day.isoformat()}.json")


def read_commit(store: ReportStore, dag_id: str, day: date) -> JsonObject | None:
    """The commit marker of ``dag_id``'s report date ``day``, or None when nothing was committed."""
    return _read_json(store, commit_path(store, dag_id, day))


def commits(store: ReportStore) -> list[JsonObject]:
    """Every commit marker under the root (one per DAG and report date)."""
    out = []
    base = store.path(COMMITS_DIR)
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    for info in store.fs.get_file_info(selector):
        if info.type == pafs.FileType.File and info.base_name.endswith(".json"):
            marker = _read_json(store, info.path)
            if marker:
                out.append(marker)
    return sorted(out, key=lambda m: (m.get("dag_id", ""), m.get("report_date", "")))


def _markers_of(store: ReportStore, day: date) -> list[JsonObject]:
    """The commit markers of report date ``day`` (one per DAG that committed it)."""
    name = f"report_date={day.isoformat()}.json"
    selector = pafs.FileSelector(store.path(COMMITS_DIR), recursive=True, allow_not_found=True)
    paths = sorted(i.path for i in store.fs.get_file_info(selector)
                   if i.type == pafs.FileType.File and i.base_name == name)
    return [m for m in (_read_json(store, p) for p in paths) if m]


def read_committed(store: ReportStore, dataset: str, day: date, dag_id: str | None = None) -> pa.Table:
    """The partition of ``dataset`` for ``day`` if it belongs to the committed run; else a clear error.

    ``dag_id`` is needed for the kit's own datasets (``run_targets``, ``quality_checks``), which
    every DAG publishes.
    """
    markers = [m for m in _markers_of(store, day) if dataset in (m.get("datasets") or {})
               and (dag_id is None or m.get("dag_id") == dag_id)]
    if not markers:
        raise ReportError(f"dataset {dataset!r} has no committed report for {day}"
                          f"{f' from {dag_id}' if dag_id else ''} under {store.uri}")
    if len(markers) > 1:
        raise ReportError(f"dataset {dataset!r} {day} was committed by several DAGs "
                          f"({', '.join(str(m.get('dag_id')) for m in markers)}): name the dag_id")
    marker = markers[0]
    entry = marker["datasets"][dataset]
    table = store.read_partition(dataset, day, entry.get("partition") or None)
    # The file's own run id too: an empty partition has no run_id values to compare.
    file_run = (table.schema.metadata or {}).get(b"traceo.run_id", b"").decode()
    runs = set(table.column(RUN_ID_COLUMN).to_pylist()) if RUN_ID_COLUMN in table.column_names else set()
    runs |= {file_run} if file_run else set()
    committed_run = entry.get("run_id", marker["run_id"])
    if runs != {committed_run}:
        raise ReportError(f"dataset {dataset!r} {day} is uncommitted: the partition comes from run(s) "
                          f"{sorted(runs) or 'unknown'} but the committed run of {marker['dag_id']} is "
                          f"{committed_run!r} (a later run is publishing or was killed); rerun that date")
    return table


# -- publish ---------------------------------------------------------------------------------------------
def _rows_by_target(tables: Sequence[tuple[Dataset, pa.Table]], target: Target) -> int:
    """Rows of this run's datasets that belong to ``target`` (by bucket, or by source and tenant)."""
    count = 0
    for _, table in tables:
        names = table.column_names
        if target.bucket and "bucket" in names:
            count += table.column("bucket").to_pylist().count(target.bucket)
        elif target.source and "source" in names:
            sources = table.column("source").to_pylist()
            tenants = table.column("tenant").to_pylist() if "tenant" in names else [""] * len(sources)
            count += sum(1 for s, t in zip(sources, tenants, strict=True)
                         if s == target.source and (t or "") == target.tenant)
    return count


def run_target_rows(ctx: RunContext, results: Sequence[TargetResult],
                    tables: Sequence[tuple[Dataset, pa.Table]],
                    notes: Mapping[str, str] | None = None) -> list[RunTargetRow]:
    """One ``run_targets`` row per source/tenant/bucket (batches are counted in their owner)."""
    owners: dict[Target, str] = {}
    for r in results:
        owner = r.target.owner
        if not r.ok and not owners.get(owner):
            owners[owner] = r.error
        owners.setdefault(owner, "")
    return [{"target": t.label, "kind": t.kind.value, "source": t.source, "tenant": t.tenant, "bucket": t.bucket,
             "status": TARGET_FAILED if err else TARGET_OK, "error": err,
             "rows_written": _rows_by_target(tables, t), "note": (notes or {}).get(t.label, ""),
             "window_start": ctx.window.start,
             "window_end": ctx.window.end} for t, err in owners.items()]


def publish(ctx: RunContext, report: Report, results: Sequence[TargetResult] = ()) -> Written:
    """Check, then write ``report`` as this run's one committed set; return what was written (XCom-safe)."""
    from traceo_finops.quality import DataQualityError, check

    day = ctx.report_date
    tables = [(dataset, dataset.table(rows)) for dataset, rows in report.datasets]
    run_targets = RUN_TARGETS.table(run_target_rows(ctx, results, tables, report.notes))
    checked_at = _now()
    quality = [check(d.name, t, d.expectations, raise_on_failure=False) for d, t in (*tables, (RUN_TARGETS,
                                                                                              run_targets))]
    quality_rows = [{"dataset": q.dataset, "suite": f"{q.dataset}_suite", "rows": q.rows,
                     "expectations_run": q.checked, "failures": q.failed, "success": q.success,
                     "checked_at": checked_at} for q in quality]
    store = ctx.store.scoped(ctx.dag_id, f"report_date={day.isoformat()}")
    kit_partition = {"dag_id": ctx.dag_id}
    meta = {"dag_id": ctx.dag_id, **{k: str(v) for k, v in ctx.window.as_dict().items()}, **report.metadata}
    bad = [q for q in quality if not q.success]
    everything_failed = bool(results) and not any(r.ok for r in results)
    with publish_lock(store, ctx.dag_id, day, ctx.run_id):
        if everything_failed:
            # Nothing to report: an empty set would replace this date's last good report. The failure
            # itself is on record in run_targets (and the marker says which run each partition is from).
            _record_only(store, ctx, RUN_TARGETS, run_targets, meta, kit_partition, "last_failed_run")
            failed = failures(results)
            raise TargetsFailed(f"every target of {ctx.dag_id} failed, nothing was published for {day}: "
                                + "; ".join(f"{f['target']}: {f['error']}" for f in failed))
        if bad:
            # The record of the refusal is written; the datasets are not, so the last good report stays.
            _record_only(store, ctx, QUALITY_CHECKS, quality_rows, meta, kit_partition, "last_refused_run")
            raise DataQualityError("; ".join(
                f"dataset {q.dataset!r} failed {len(q.failed)} of {q.checked} expectations: " + " | ".join(q.failed)
                for q in bad) + " — nothing was published; the previous report of this date stays")
        _clean_staging(store)
        written: dict[str, DatasetEntry] = {}
        for dataset, table in tables:
            written[dataset.name] = _entry(store.write_partition(dataset, day, table, meta, run_id=ctx.run_id),
                                           ctx.run_id)
        for dataset, rows in ((RUN_TARGETS, run_targets), (QUALITY_CHECKS, quality_rows)):
            entry = store.write_partition(dataset, day, rows, meta, run_id=ctx.run_id, partition=kit_partition)
            written[dataset.name] = _entry(entry, ctx.run_id, kit_partition)
        artifacts = [store.write_artifact(name, day, filename, content)
                     for (name, filename), content in sorted(report.artifacts.items())]
        failed = failures(results)
        marker: CommitMarker = {"dag_id": ctx.dag_id, "run_id": ctx.run_id, "report_date": day.isoformat(),
                  "committed_at": _now().isoformat(), "window": ctx.window.as_dict(),
                  "datasets": written, "artifacts": artifacts, "coverage": coverage_of(results),
                  "failed_targets": failed}
        store.write_file(commit_path(store, ctx.dag_id, day), json.dumps(marker, indent=1, default=str).encode())
    log.info("published %s %s (run %s): %s; coverage %s", ctx.dag_id, day, ctx.run_id,
             ", ".join(f"{n} {w['rows']} rows" for n, w in written.items()), marker["coverage"])
    return {**marker, "summary": report.summary}


def _entry(part: WrittenPartition, run_id: str, partition: Mapping[str, str] | None = None) -> DatasetEntry:
    """The commit marker's entry of one written partition."""
    entry = DatasetEntry(dataset=part.dataset, report_date=part.report_date, uri=part.uri, rows=part.rows,
                         bytes=part.bytes, run_id=run_id)
    if partition is not None:
        entry["partition"] = dict(partition)
    return entry


def _record_only(store: ReportStore, ctx: RunContext, dataset: Dataset, rows: TableRows, meta: Mapping[str, str],
                 partition: Mapping[str, str], why: Literal["last_failed_run", "last_refused_run"]) -> None:
    """Write one record dataset of a run that publishes nothing else, and say so in the date's marker.

    The marker keeps naming the committed run of every other dataset; its entry for ``dataset``
    names this run, so the record is readable and the date's report stays the last good one.
    """
    day = ctx.report_date
    entry = store.write_partition(dataset, day, rows, meta, run_id=ctx.run_id, partition=partition)
    marker = read_commit(store, ctx.dag_id, day) or {
        "dag_id": ctx.dag_id, "run_id": ctx.run_id, "report_date": day.isoformat(), "window": ctx.window.as_dict(),
        "datasets": {}, "artifacts": [], "coverage": "nothing committed", "failed_targets": []}
    marker["datasets"][dataset.name] = _entry(entry, ctx.run_id, partition)
    marker[why] = {"run_id": ctx.run_id, "at": _now().isoformat()}
    store.write_file(commit_path(store, ctx.dag_id, day), json.dumps(marker, indent=1, default=str).encode())


def staging_leftovers(store: ReportStore) -> list[str]:
    """Staging folders under the root (for tests and the summary CLI)."""
    base = store.path(STAGING_DIR)
    infos = store.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return [i.path for i in infos if i.type == pafs.FileType.File]


def committed_partitions(store: ReportStore) -> dict[str, list[Mapping[str, Json]]]:
    """dataset -> the committed partitions ``{report_date, run_id, uri, rows, dag_id}``, oldest first."""
    out: dict[str, list[Mapping[str, Json]]] = {}
    for marker in commits(store):
        for name, entry in (marker.get("datasets") or {}).items():
            out.setdefault(name, []).append({**entry, "report_date": marker["report_date"],
                                             "run_id": entry.get("run_id", marker["run_id"]),
                                             "dag_id": marker["dag_id"]})
    return out
