"""The kit's one publish path: a run's datasets go out as one committed set, locally and on S3.

What is checked: the commit marker names the run and is written last; every row carries the run id;
``read_committed`` refuses a partition from another run (also an empty one); a Great Expectations
failure writes only its ``quality_checks`` record and the last committed set stays readable;
``run_targets`` has one row per source/tenant/bucket with the rows written; the S3 lock is a
conditional PUT that moto answers 412.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from botocore.exceptions import ClientError

from tests.support.s3 import report_root_bucket
from traceo_finops.config import FinopsConfig
from traceo_finops.kit.context import RunContext, Target, TargetKind
from traceo_finops.kit.outcome import TargetResult
from traceo_finops.kit.publish import (
    LOCK_STALE_AFTER,
    PublishError,
    Report,
    commit_path,
    publish,
    publish_lock,
    read_commit,
    read_committed,
    staging_leftovers,
)
from traceo_finops.quality import DataQualityError, between, not_null
from traceo_finops.reports import Dataset, ReportError, ReportStore
from traceo_finops.window import Window

DAG = "kit_test_dag"
DAY = date(2026, 11, 27)
WINDOW = Window(datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC))

SERIES = Dataset("kit_series", 1, pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("tenant", pa.string(), nullable=False),
    pa.field("metric", pa.string(), nullable=False),
    pa.field("series", pa.int64(), nullable=False),
]), expectations=(*not_null("metric"), between("series", 0)))
BLOCKS = Dataset("kit_blocks", 1, pa.schema([
    pa.field("bucket", pa.string(), nullable=False),
    pa.field("block", pa.string(), nullable=False),
    pa.field("bytes", pa.int64(), nullable=False),
]), expectations=(between("bytes", 0),))

PROM = Target(TargetKind.SOURCE, "prom-a", conn_id="prometheus_default")
TEAM_A = Target(TargetKind.TENANT, "mimir", "team-a", conn_id="mimir")
TEAM_B = Target(TargetKind.TENANT, "mimir", "team-b", conn_id="mimir")
BUCKET = Target(TargetKind.BUCKET, bucket="blocks-eu", conn_id="aws_default")


def series_rows(tag: str, bad: bool = False) -> list[dict[str, Any]]:
    rows = [{"source": "prom-a", "tenant": "", "metric": f"{tag}_m{i}", "series": 10 + i} for i in range(3)]
    rows += [{"source": "mimir", "tenant": "team-a", "metric": f"{tag}_t{i}", "series": 100 + i} for i in range(2)]
    if bad:
        rows[0]["series"] = -5
    return rows


def block_rows(tag: str) -> list[dict[str, Any]]:
    return [{"bucket": "blocks-eu", "block": f"{tag}-b{i}", "bytes": 1000 * (i + 1)} for i in range(4)]


def results() -> list[TargetResult]:
    """prom-a in two batches (one failed), a good and a failed tenant, and a bucket."""
    return [TargetResult(PROM.batch("ns-1")), TargetResult(PROM.batch("ns-2"), error="prom-a ns-2: query timed out"),
            TargetResult(TEAM_A), TargetResult(TEAM_B, error="mimir/team-b: HTTP 401"), TargetResult(BUCKET)]


def report(tag: str, bad: bool = False) -> Report:
    return Report(datasets=[(SERIES, series_rows(tag, bad)), (BLOCKS, block_rows(tag))],
                  artifacts={("kit_blocks", "plan.json"): json.dumps({"tag": tag}).encode()})


def context(store: ReportStore, run_id: str) -> RunContext:
    return RunContext(cfg=FinopsConfig.model_construct(), workflow="cardinality", dag_id=DAG, run_id=run_id,
                      window=WINDOW, store_factory=lambda _cfg: store)


def without_run_id(table: pa.Table) -> list[dict[str, Any]]:
    return table.drop_columns(["run_id"]).to_pylist()


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
            if p.is_file()}


# -- local disk --------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_publish_commits_one_set_named_by_its_run(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path))
    written = publish(context(store, "run-1"), report("one"), results())

    marker = read_commit(store, DAG, DAY)
    assert marker is not None and marker["run_id"] == written["run_id"] == "run-1"
    assert set(marker["datasets"]) == {"kit_series", "kit_blocks", "run_targets", "quality_checks"}
    assert marker["coverage"] == "2 of 4 targets"
    assert {f["target"] for f in marker["failed_targets"]} == {"prom-a ns-2", "mimir/team-b"}
    for dataset, rows in ((SERIES, series_rows("one")), (BLOCKS, block_rows("one"))):
        table = read_committed(store, dataset.name, DAY)
        assert set(table.column("run_id").to_pylist()) == {"run-1"}
        assert without_run_id(table) == rows
    checks = read_committed(store, "quality_checks", DAY, dag_id=DAG).to_pylist()
    assert {c["dataset"]: c["success"] for c in checks} == {"kit_series": True, "kit_blocks": True,
                                                           "run_targets": True}
    assert all(c["expectations_run"] > 0 for c in checks)
    assert json.loads(store.read_artifact("kit_blocks", DAY, "plan.json")) == {"tag": "one"}

    # The marker is written last: no file of the set is newer than it.
    marker_file = Path(commit_path(store, DAG, DAY))
    others = [p for p in tmp_path.rglob("*") if p.is_file() and p != marker_file]
    assert others and max(p.stat().st_mtime_ns for p in others) <= marker_file.stat().st_mtime_ns
    assert not list((tmp_path / "_locks").rglob("*.lock")) and staging_leftovers(store) == []


@pytest.mark.unit
def test_run_targets_has_one_row_per_source_tenant_and_bucket(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path))
    publish(context(store, "run-1"), report("one"), results())
    rows = {r["target"]: r for r in read_committed(store, "run_targets", DAY, dag_id=DAG).to_pylist()}
    assert sorted(rows) == ["bucket blocks-eu", "mimir/team-a", "mimir/team-b", "prom-a"]  # batches fold in
    got = {t: (r["kind"], r["status"], r["rows_written"]) for t, r in rows.items()}
    series, blocks = series_rows("one"), block_rows("one")
    assert got == {
        "prom-a": ("source", "failed", sum(r["source"] == "prom-a" for r in series)),
        "mimir/team-a": ("tenant", "ok", sum(r["tenant"] == "team-a" for r in series)),
        "mimir/team-b": ("tenant", "failed", 0),
        "bucket blocks-eu": ("bucket", "ok", len(blocks)),
    }
    assert rows["prom-a"]["error"] == "prom-a ns-2: query timed out"
    assert rows["mimir/team-b"]["error"] == "mimir/team-b: HTTP 401"
    assert {r["window_end"] for r in rows.values()} == {WINDOW.end}


@pytest.mark.unit
def test_a_targets_note_lands_in_its_run_targets_row(tmp_path: Path) -> None:
    """What rows cannot show (a live read on a past day, no data in the window) is stated per target."""
    store = ReportStore(str(tmp_path))
    rep = report("one")
    rep.notes = {"bucket blocks-eu": "objects read live"}
    publish(context(store, "run-1"), rep, results())
    notes = {r["target"]: r["note"] for r in read_committed(store, "run_targets", DAY, dag_id=DAG).to_pylist()}
    assert notes == {"prom-a": "", "mimir/team-a": "", "mimir/team-b": "", "bucket blocks-eu": "objects read live"}


@pytest.mark.unit
def test_a_live_read_is_noted_only_long_after_the_windows_end() -> None:
    from traceo_finops.kit.context import LIVE_READ_SLACK

    ctx = context(ReportStore("/nonexistent"), "run-1")
    assert not ctx.is_past_day(WINDOW.end + LIVE_READ_SLACK)
    assert ctx.live_read_note("bucket listing", WINDOW.end + timedelta(minutes=5)) == ""
    late = WINDOW.end + LIVE_READ_SLACK + timedelta(seconds=1)
    assert ctx.is_past_day(late)
    note = ctx.live_read_note("bucket listing", late)
    assert note.startswith("bucket listing read live at") and WINDOW.end.isoformat() in note


@pytest.mark.unit
def test_read_committed_refuses_a_partition_of_another_run(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path))
    publish(context(store, "run-1"), report("one"), results())
    # A later run that wrote one dataset and died before its marker.
    store.write_partition(SERIES, DAY, series_rows("two"), run_id="run-2")
    with pytest.raises(ReportError, match=r"kit_series.*uncommitted.*run-2.*'run-1'"):
        read_committed(store, "kit_series", DAY)
    assert without_run_id(read_committed(store, "kit_blocks", DAY)) == block_rows("one")
    # An empty partition has no run_id values to compare: the file's own run id still tells.
    store.write_partition(BLOCKS, DAY, [], run_id="run-2")
    with pytest.raises(ReportError, match="uncommitted"):
        read_committed(store, "kit_blocks", DAY)
    with pytest.raises(ReportError, match="no committed report for 2026-11-26"):
        read_committed(store, "kit_blocks", DAY - timedelta(days=1))


@pytest.mark.unit
def test_a_failed_quality_check_publishes_only_its_record(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path))
    publish(context(store, "run-1"), report("one"), results())
    before = snapshot(tmp_path)

    with pytest.raises(DataQualityError, match=r"kit_series.*expect_column_values_to_be_between.*-5.*nothing was"):
        publish(context(store, "run-2"), report("two", bad=True), results())

    after = snapshot(tmp_path)
    changed = sorted(k for k in after if before.get(k) != after[k])
    # The refusal record, and the marker's note of which run that record comes from.
    assert changed == [f"_commits/{DAG}/report_date={DAY}.json",
                       f"quality_checks/dag_id={DAG}/report_date={DAY}/part-0.parquet"]
    assert set(before) == set(after)
    record = {r["dataset"]: r for r in store.read_partition("quality_checks", DAY, {"dag_id": DAG}).to_pylist()}
    assert record["kit_series"]["success"] is False and record["kit_series"]["run_id"] == "run-2"
    assert any("expect_column_values_to_be_between" in f for f in record["kit_series"]["failures"])
    assert record["kit_blocks"]["success"] is True
    # The last committed set stays whole and readable.
    assert read_commit(store, DAG, DAY)["run_id"] == "run-1"
    assert without_run_id(read_committed(store, "kit_series", DAY)) == series_rows("one")
    assert without_run_id(read_committed(store, "kit_blocks", DAY)) == block_rows("one")
    assert read_committed(store, "run_targets", DAY, dag_id=DAG).column("run_id").unique().to_pylist() == ["run-1"]
    # The refusal is on record and readable; the marker says which run refused.
    refused = read_committed(store, "quality_checks", DAY, dag_id=DAG).to_pylist()
    assert {r["run_id"] for r in refused} == {"run-2"} and not all(r["success"] for r in refused)
    assert read_commit(store, DAG, DAY)["last_refused_run"]["run_id"] == "run-2"


@pytest.mark.unit
def test_local_create_exclusive_never_shows_an_empty_lock(tmp_path: Path) -> None:
    """Competing creators: exactly one wins each round, and a reader never sees a half-written lock."""
    store = ReportStore(str(tmp_path))
    path = store.path("_locks", "d", "x.lock")
    seen: list[bytes] = []

    def create(i: int, barrier: threading.Barrier, wins: list[int]) -> None:
        barrier.wait()
        if store.create_exclusive(path, json.dumps({"who": i, "pad": "x" * 4096}).encode()):
            wins.append(i)
        raw = store.read_file(path)
        if raw is not None:
            seen.append(raw)

    for _ in range(30):
        wins: list[int] = []
        barrier = threading.Barrier(4)
        threads = [threading.Thread(target=create, args=(i, barrier, wins)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1
        store.delete_file(path)
    assert seen and all(json.loads(raw)["pad"] for raw in seen)
    assert sorted(os.listdir(tmp_path / "_locks" / "d")) == []  # no temp files left


# -- S3 (the devstack's moto) ------------------------------------------------------------------------------
@pytest.fixture
def s3_store(devstack: dict[str, str]) -> Iterator[tuple[ReportStore, Any, str]]:
    """A report store in a bucket of its own on the devstack's moto; the bucket is removed afterwards."""
    with report_root_bucket(devstack["DEVSTACK_S3_ENDPOINT"], "kit-publish") as root:
        yield root


def _keys(client: Any, bucket: str) -> list[str]:
    """Object keys, without the empty folder markers pyarrow's S3 delete_file leaves for an emptied folder."""
    return sorted(o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                  for o in page.get("Contents", []) if not (o["Key"].endswith("/") and o["Size"] == 0))


@pytest.mark.integration
def test_publish_to_s3(s3_store: tuple[ReportStore, Any, str]) -> None:
    store, client, bucket = s3_store
    publish(context(store, "run-1"), report("one"), results())
    keys = _keys(client, bucket)
    assert f"reports/_commits/{DAG}/report_date={DAY}.json" in keys
    assert f"reports/kit_series/report_date={DAY}/part-0.parquet" in keys
    assert f"reports/run_targets/dag_id={DAG}/report_date={DAY}/part-0.parquet" in keys
    assert not [k for k in keys if "/_locks/" in k or "/_staging/" in k]
    marker = json.loads(client.get_object(Bucket=bucket, Key=f"reports/_commits/{DAG}/report_date={DAY}.json")
                        ["Body"].read())
    assert marker["run_id"] == "run-1"
    assert without_run_id(read_committed(store, "kit_series", DAY)) == series_rows("one")

    store.write_partition(BLOCKS, DAY, block_rows("two"), run_id="run-2")  # a killed later run's first write
    with pytest.raises(ReportError, match="uncommitted"):
        read_committed(store, "kit_blocks", DAY)

    publish(context(store, "run-3"), report("three"), results())
    assert read_commit(store, DAG, DAY)["run_id"] == "run-3"
    for dataset, rows in ((SERIES, series_rows("three")), (BLOCKS, block_rows("three"))):
        table = read_committed(store, dataset.name, DAY)
        assert set(table.column("run_id").to_pylist()) == {"run-3"} and without_run_id(table) == rows


@pytest.mark.integration
def test_moto_answers_a_conditional_put_with_412(s3_store: tuple[ReportStore, Any, str]) -> None:
    store, client, bucket = s3_store
    client.put_object(Bucket=bucket, Key="probe", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as err:
        client.put_object(Bucket=bucket, Key="probe", Body=b"second", IfNoneMatch="*")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert err.value.response["Error"]["Code"] == "PreconditionFailed"
    assert client.get_object(Bucket=bucket, Key="probe")["Body"].read() == b"first"

    path = store.path("_locks", "probe.lock")
    assert store.create_exclusive(path, b"mine") is True
    assert store.create_exclusive(path, b"theirs") is False
    assert store.read_file(path) == b"mine"


@pytest.mark.integration
def test_s3_lock_waits_for_a_live_holder_and_takes_over_a_stale_one(s3_store: tuple[ReportStore, Any, str]) -> None:
    store, client, bucket = s3_store
    with (publish_lock(store, DAG, DAY, "run-a"),
          pytest.raises(PublishError, match="run 'run-a' has been publishing since"),
          publish_lock(store, DAG, DAY, "run-b", wait=timedelta(seconds=1), poll=0.2)):
        pass
    assert not [k for k in _keys(client, bucket) if "/_locks/" in k]

    # A lock from another host, older than LOCK_STALE_AFTER: its publisher is gone.
    old = datetime.now(UTC) - LOCK_STALE_AFTER - timedelta(minutes=1)
    key = f"reports/_locks/{DAG}/report_date={DAY}.lock"
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps({
        "run_id": "run-old", "token": "t", "host": "another-worker", "pid": 1, "acquired_at": old.isoformat()}))
    with publish_lock(store, DAG, DAY, "run-c", wait=timedelta(seconds=5)):
        assert json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())["run_id"] == "run-c"
    assert not [k for k in _keys(client, bucket) if "/_locks/" in k]
