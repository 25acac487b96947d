"""The kit's publish guarantees under real faults, with real processes.

- ``kill -9`` of a publisher between two dataset writes: the date reads as the old committed set or as
  a clear "uncommitted" error, never a mix; a rerun (same run id, as an Airflow retry, or another
  run) publishes a whole set and removes the killed run's staging folder.
- Two publishers of one DAG and date at once: every partition comes from the run the marker names.
- A stale lock (old, from the same run, or of a dead process) is taken over; a live one is waited for.

The publisher subprocess runs ``PUBLISHER`` below; its faults are monkeypatched in its own process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from traceo_finops.kit.publish import (
    LOCK_STALE_AFTER,
    PublishError,
    publish_lock,
    read_commit,
    read_committed,
    staging_leftovers,
)
from traceo_finops.reports import ReportError, ReportStore

ROOT = Path(__file__).resolve().parents[1]
DAG = "kit_fault_dag"
DAY = date(2026, 11, 27)
DATASETS = ("kit_series", "kit_showback", "run_targets", "quality_checks")
LOCK = f"_locks/{DAG}/report_date={DAY}.lock"

PUBLISHER = r'''
"""Publish a two-dataset report for one run; optionally die, or go slowly, where the test says."""
import json, os, signal, sys, time
from datetime import UTC, datetime

import pyarrow as pa

from traceo_finops.config import FinopsConfig
from traceo_finops.kit.context import RunContext, Target, TargetKind
from traceo_finops.kit.outcome import TargetResult
from traceo_finops.kit.publish import Report, publish
from traceo_finops.quality import between, check, not_null
from traceo_finops.reports import Dataset, ReportStore
from traceo_finops.window import Window

args = json.loads(sys.argv[1])
run_id = args["run_id"]
SERIES = Dataset("kit_series", 1, pa.schema([("source", pa.string()), ("metric", pa.string()), ("series", pa.int64())]),
                 expectations=(*not_null("metric"), between("series", 0)))
SHOWBACK = Dataset("kit_showback", 1,
                   pa.schema([("source", pa.string()), ("team", pa.string()), ("cost", pa.float64())]),
                   expectations=(between("cost", 0),))
# Each run writes different row counts, so a mixed date is visible in the data too.
n = args["rows"]
series = [{"source": "prom-a", "metric": f"{run_id}_m{i}", "series": i} for i in range(n)]
showback = [{"source": "prom-a", "team": f"team-{i}", "cost": float(n)} for i in range(n + 1)]
check("warm-up", pa.table({"x": [1]}), [between("x", 0)])  # import GX before the start line

original_write = ReportStore.write_partition
original_bytes = ReportStore._write_bytes
state = {"dataset": None, "writes": 0}

def write_partition(self, dataset, *a, **kw):
    state["dataset"] = dataset.name
    if state["writes"] == 0:
        time.sleep(args.get("before", 0))
    out = original_write(self, dataset, *a, **kw)
    state["writes"] += 1
    time.sleep(args.get("between", 0))
    return out

def write_bytes(self, path, payload):
    original_bytes(self, path, payload)
    # Die with the staged copy of this dataset written, before it is renamed into place.
    if state["dataset"] == args.get("kill_in") and "/_staging/" in path:
        os.kill(os.getpid(), signal.SIGKILL)

ReportStore.write_partition = write_partition
ReportStore._write_bytes = write_bytes

store = ReportStore(args["root"])
window = Window(datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC))
ctx = RunContext(cfg=FinopsConfig.model_construct(), workflow="cardinality", dag_id=args["dag_id"], run_id=run_id,
                 window=window, store_factory=lambda _cfg: store)
while time.time() < args.get("start_at", 0):
    time.sleep(0.005)
started_at = time.time()
written = publish(ctx, Report(datasets=[(SERIES, series), (SHOWBACK, showback)]),
                  [TargetResult(Target(TargetKind.SOURCE, "prom-a"))])
print(json.dumps({"run_id": written["run_id"], "started_at": started_at, "finished_at": time.time()}))
'''


def start(tmp_path: Path, run_id: str, rows: int, **options: Any) -> subprocess.Popen[str]:
    script = tmp_path / "publisher.py"
    if not script.exists():
        script.write_text(PUBLISHER)
    args = {"root": str(tmp_path / "reports"), "dag_id": DAG, "run_id": run_id, "rows": rows, **options}
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'include'}{os.pathsep}{ROOT}", "GX_ANALYTICS_ENABLED": "False",
           "TQDM_DISABLE": "1"}
    return subprocess.Popen([sys.executable, str(script), json.dumps(args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def run(tmp_path: Path, run_id: str, rows: int, **options: Any) -> tuple[int, str, str]:
    return finish(start(tmp_path, run_id, rows, **options))


def committed_state(store: ReportStore) -> dict[str, str]:
    """dataset -> the run its committed read returns, or "uncommitted" when read_committed refuses."""
    out = {}
    for name in DATASETS:
        try:
            table = read_committed(store, name, DAY, dag_id=DAG)
        except ReportError as exc:
            assert "uncommitted" in str(exc), exc
            out[name] = "uncommitted"
        else:
            runs = set(table.column("run_id").to_pylist())
            assert len(runs) == 1, runs
            out[name] = runs.pop()
    return out


def raw_runs(store: ReportStore) -> dict[str, set[str]]:
    """dataset -> the run ids in its partition file as it is on disk (column and file metadata)."""
    out = {}
    for name in DATASETS:
        part = {"dag_id": DAG} if name in ("run_targets", "quality_checks") else None
        table = store.read_partition(name, DAY, part)
        out[name] = set(table.column("run_id").to_pylist()) | {table.schema.metadata[b"traceo.run_id"].decode()}
    return out


def assert_whole(store: ReportStore, run_id: str, rows: int) -> None:
    assert read_commit(store, DAG, DAY)["run_id"] == run_id
    assert committed_state(store) == dict.fromkeys(DATASETS, run_id)
    assert read_committed(store, "kit_series", DAY).num_rows == rows
    assert read_committed(store, "kit_showback", DAY).num_rows == rows + 1
    assert staging_leftovers(store) == []
    assert store.read_file(store.path(LOCK)) is None


def lock_body(run_id: str, acquired_at: datetime, pid: int, host: str | None = None) -> bytes:
    return json.dumps({"run_id": run_id, "token": "their-token", "host": host or socket.gethostname(), "pid": pid,
                       "acquired_at": acquired_at.isoformat()}).encode()


# -- kill -9 -----------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_kill_9_between_two_dataset_writes_never_leaves_a_mixed_date(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path / "reports"))
    code, _, err = run(tmp_path, "run-1", rows=3)
    assert code == 0, err[-2000:]
    assert_whole(store, "run-1", 3)

    for killed, rerun in (("run-2", "run-2"), ("run-3", "run-4")):
        code, _, err = run(tmp_path, killed, rows=5, kill_in="kit_showback")
        assert code == -9, err[-2000:]
        # The fault really happened mid-set: kit_series on disk is the killed run's, kit_showback is still
        # the last committed one, and the killed run's staging folder and lock are left behind.
        last = read_commit(store, DAG, DAY)["run_id"]
        on_disk = raw_runs(store)
        assert on_disk["kit_series"] == {killed} and on_disk["kit_showback"] == {last}
        assert staging_leftovers(store), "the kill left no staging folder: the fault was not injected"
        assert json.loads(store.read_file(store.path(LOCK)) or b"{}")["run_id"] == killed
        # A reader gets the old committed set, or a clear "uncommitted" error: never rows of two runs.
        state = committed_state(store)
        assert state["kit_series"] == "uncommitted"
        assert set(state.values()) <= {last, "uncommitted"}

        # The rerun (the same run id, as an Airflow retry; then another run) takes over the dead lock,
        # removes the orphaned staging folder and publishes a whole set.
        started = time.monotonic()
        code, _, err = run(tmp_path, rerun, rows=7)
        assert code == 0, err[-2000:]
        assert time.monotonic() - started < 45
        assert_whole(store, rerun, 7)


# -- two runs at once --------------------------------------------------------------------------------------
@pytest.mark.integration
def test_two_concurrent_runs_of_one_date_never_mix(tmp_path: Path) -> None:
    """A slow and a fast publisher start together; without the lock the fast one's first write is overwritten."""
    store = ReportStore(str(tmp_path / "reports"))
    for attempt in range(3):
        if attempt == 0:
            # Both publishers also find a dead publisher's lock and race to take it over.
            dead = subprocess.Popen([sys.executable, "-c", "pass"])
            dead.wait()
            lock = Path(store.path(LOCK))
            lock.parent.mkdir(parents=True, exist_ok=True)
            lock.write_bytes(lock_body("run-dead", datetime.now(UTC), dead.pid))
        start_at = time.time() + 3.5
        slow = start(tmp_path, f"slow-{attempt}", rows=4, start_at=start_at, between=0.3)
        fast = start(tmp_path, f"fast-{attempt}", rows=9, start_at=start_at, before=0.15)
        outcomes = [finish(slow), finish(fast)]
        assert [o[0] for o in outcomes] == [0, 0], [o[2][-1500:] for o in outcomes]
        assert time.time() > start_at, "the publishers did not reach the start line in time"
        marker = read_commit(store, DAG, DAY)["run_id"]
        assert marker in (f"slow-{attempt}", f"fast-{attempt}")
        assert raw_runs(store) == {name: {marker} for name in DATASETS}
        rows = 4 if marker.startswith("slow") else 9
        assert_whole(store, marker, rows)


# -- stale and live locks ----------------------------------------------------------------------------------
def _write_lock(store: ReportStore, body: bytes) -> None:
    path = Path(store.path(LOCK))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)


@pytest.mark.unit
@pytest.mark.parametrize("case", ["older than LOCK_STALE_AFTER", "same run", "dead process"])
def test_a_stale_lock_is_taken_over(tmp_path: Path, case: str) -> None:
    store = ReportStore(str(tmp_path))
    now = datetime.now(UTC)
    if case == "older than LOCK_STALE_AFTER":
        body = lock_body("run-other", now - LOCK_STALE_AFTER - timedelta(minutes=1), os.getpid())
    elif case == "same run":
        body = lock_body("run-mine", now, os.getpid())
    else:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        body = lock_body("run-other", now, dead.pid)
    _write_lock(store, body)
    started = time.monotonic()
    with publish_lock(store, DAG, DAY, "run-mine", wait=timedelta(seconds=5), poll=0.1):
        assert json.loads(store.read_file(store.path(LOCK)) or b"{}")["run_id"] == "run-mine"
    assert time.monotonic() - started < 2
    assert store.read_file(store.path(LOCK)) is None


@pytest.mark.unit
def test_a_fresh_lock_of_a_live_process_elsewhere_is_not_taken_over(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path))
    body = lock_body("run-other", datetime.now(UTC), 4242, host="another-worker")
    _write_lock(store, body)
    with (pytest.raises(PublishError, match="run 'run-other' has been publishing since"),
          publish_lock(store, DAG, DAY, "run-mine", wait=timedelta(seconds=0.5), poll=0.1)):
        pass
    assert store.read_file(store.path(LOCK)) == body


HOLDER = r'''
import json, sys, time
from datetime import date
from traceo_finops.kit.publish import publish_lock
from traceo_finops.reports import ReportStore
root, dag_id, report_file, hold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
store = ReportStore(root)
lock = store.path("_locks", dag_id, "report_date=2026-11-27.lock")
with publish_lock(store, dag_id, date(2026, 11, 27), "run-holder"):
    acquired = time.time()
    open(report_file + ".acquired", "w").write(str(acquired))
    time.sleep(hold)
    still_mine = json.loads(store.read_file(lock))["run_id"] == "run-holder"
    released = time.time()
json.dump({"acquired": acquired, "released": released, "still_mine": still_mine}, open(report_file, "w"))
'''


@pytest.mark.integration
def test_a_live_lock_makes_the_second_publisher_wait_then_proceed(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path / "reports"))
    script, report = tmp_path / "holder.py", tmp_path / "holder.json"
    script.write_text(HOLDER)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'include'}{os.pathsep}{ROOT}"}
    holder = subprocess.Popen([sys.executable, str(script), str(tmp_path / "reports"), DAG, str(report), "6"],
                              env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not Path(f"{report}.acquired").exists():
        assert holder.poll() is None and time.monotonic() < deadline, holder.stderr.read() if holder.stderr else ""
        time.sleep(0.05)
    code, out, err = run(tmp_path, "run-waiter", rows=2)
    holder.wait(timeout=30)
    assert code == 0, err[-2000:]
    held: Mapping[str, Any] = json.loads(report.read_text())
    assert held["still_mine"] is True  # the holder's lock was not taken from it
    waiter = json.loads(out.strip().splitlines()[-1])
    assert waiter["started_at"] < held["released"] < waiter["finished_at"]
    assert_whole(store, "run-waiter", 2)
