"""An analyst's backfill, exactly as the README shows it, on the production-like stack.

The README's two blocks (``<!-- analyst-backfill -->`` and ``<!-- analyst-query -->``) are read from
README.md and run as they are with bash, against the session's stack (PostgreSQL, Redis, scheduler, two
Celery workers; ``tests/support/airflow_stack.py``) and the devstack's real services. Checked: every daily
DAG gets one successful backfill run per day, each writes the partition of its own day whose rows carry that
day's window (a data-interval timetable, not the lookback), and the query block prints those days.
"""

from __future__ import annotations

import re
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.parquet as pq
import pytest

from tests.support.airflow_stack import Stack, airflow_stack  # noqa: F401  (the session's stack fixture)

pytestmark = [pytest.mark.dag, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[1]
DAILY = ("finops_cardinality", "finops_rightsizing", "finops_s3_tiering", "finops_recording_rules", "finops_slo")


def readme_block(marker: str) -> str:
    """The fenced bash block that follows ``<!-- marker -->`` in README.md."""
    text = (ROOT / "README.md").read_text()
    found = re.search(rf"<!-- {marker} -->\s*```bash\n(.*?)\n```", text, re.S)
    assert found, f"README.md has no bash block after <!-- {marker} -->"
    return found.group(1)


def shell_env(stack: Stack) -> dict[str, str]:
    """What a user's shell has for the stack: its state folder and ports (``devstack.airflow_stack env`` reads them)."""
    from devstack.airflow_stack import _clean_env

    env = _clean_env(dict(stack.env))
    pg = urlparse(stack.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", "")).port
    redis = urlparse(stack.env["AIRFLOW__CELERY__BROKER_URL"]).port
    env.update({"AIRFLOW_STACK_DIR": str(stack.state_dir), "STACK_API_PORT": str(urlparse(stack.info["api_url"]).port),
                "STACK_PG_PORT": str(pg), "STACK_REDIS_PORT": str(redis),
                "FINOPS_REPORT_ROOT": str(stack.report_root)})
    return env


def run_block(block: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def backfill_runs(stack: Stack, dag_id: str) -> list[dict[str, Any]]:
    runs = stack.api.get(f"dags/{dag_id}/dagRuns", limit=100)["dag_runs"]
    return [r for r in runs if r["run_type"] == "backfill"]


def wait_backfills(stack: Stack, days: int, timeout: float = 900) -> dict[str, list[dict[str, Any]]]:
    """Until every daily DAG has ``days`` finished backfill runs; fails naming the unfinished ones."""
    deadline = time.monotonic() + timeout
    while True:
        runs = {d: backfill_runs(stack, d) for d in DAILY}
        pending = {d: [(r["logical_date"], r["state"]) for r in rs if r["state"] not in ("success", "failed")]
                   for d, rs in runs.items()}
        if all(len(rs) == days for rs in runs.values()) and not any(pending.values()):
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(f"backfills not done after {timeout:.0f}s: "
                                 f"{ {d: len(rs) for d, rs in runs.items()} } runs, pending {pending}")
        time.sleep(1)


def test_the_readme_backfill_writes_one_partition_per_day_with_that_days_window(
        airflow_stack: Stack) -> None:  # noqa: F811
    stack = airflow_stack
    stack.wait_parsed(DAILY)
    env = shell_env(stack)
    done = run_block(readme_block("analyst-backfill"), env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in (3, 2, 1)]  # the block's FROM (3 days ago) … TO (yesterday)
    runs = wait_backfills(stack, len(days))
    for dag_id, rs in runs.items():
        failed = [r["dag_run_id"] for r in rs if r["state"] != "success"]
        assert not failed, f"{dag_id}: " + "\n".join(stack.failed_tasks_detail(dag_id, r) for r in failed)
        assert sorted(datetime.fromisoformat(r["logical_date"]).date() for r in rs) == days
        for r in rs:  # a real interval, whatever create_cron_data_intervals says
            start, end = (datetime.fromisoformat(r[k]) for k in ("data_interval_start", "data_interval_end"))
            assert end - start == timedelta(days=1), (dag_id, r)

    for dag_id in DAILY:
        for day in days:
            rows = _run_targets(stack.report_root, dag_id, day)
            assert rows, f"{dag_id}: no run_targets partition for {day}"
            ends = {r["window_end"] for r in rows}
            assert ends == {datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)}, (dag_id, day, ends)
            if dag_id != "finops_rightsizing":  # right-sizing reads its history up to the window's end
                assert {r["window_start"] for r in rows} == {datetime.combine(day, datetime.min.time(), UTC)}
    # A bucket is listed today: the past days' tiering rows say so.
    s3_notes = [r["note"] for day in days for r in _run_targets(stack.report_root, "finops_s3_tiering", day)]
    assert s3_notes and all("read live at" in n for n in s3_notes), s3_notes

    query = run_block(readme_block("analyst-query"), env)
    assert query.returncode == 0, query.stdout[-3000:] + query.stderr[-3000:]
    for dag_id in DAILY:
        for day in days:
            assert re.search(rf"{dag_id}\s+{day.isoformat()}", query.stdout), (dag_id, day, query.stdout[-3000:])


def _run_targets(root: Path, dag_id: str, day: date) -> list[dict[str, Any]]:
    parts = sorted((root / "run_targets" / f"dag_id={dag_id}" / f"report_date={day.isoformat()}").glob("*.parquet"))
    return [row for p in parts for row in pq.read_table(p).to_pylist()]
