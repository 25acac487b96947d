"""Every DAG through the scheduler of the production-like stack: PostgreSQL, Redis, two Celery workers, REST API v2.

The devstack's connections are created through the API; every DAG is triggered (token auth, ``POST
/api/v2/dags/{id}/dagRuns``) at one logical date, the cost report last (it reads what the others
committed), and the runs are awaited in parallel. Then: every run succeeded; the mapped tasks ran on
both workers; each run committed the datasets its DAG declares (as ``airflow dags test`` does), every
partition carrying the run's id; each run posted its digest to the stack's Slack sink exactly once; the task
logs are readable through the API (what the UI shows); and clearing a run (the way an operator reruns
a logical date through the API) replaces its partitions without a second Slack post.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow.parquet as pq
import pytest

from tests.support.airflow_stack import Stack, airflow_stack  # noqa: F401 - the session fixture

pytestmark = [pytest.mark.dag, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[1]
DAGS = sorted(p.stem for p in (ROOT / "dags").glob("finops_*.py"))
LAST = "finops_cost_report"  # reads the other workflows' committed sets
RERUN = "finops_slo"


def _marker(stack: Stack, dag_id: str, run_id: str) -> tuple[Path, dict[str, Any]]:
    """The commit marker ``_commits/<dag_id>/report_date=D.json`` that names run ``run_id``."""
    folder = stack.report_root / "_commits" / dag_id
    for path in sorted(folder.glob("report_date=*.json")):
        doc = json.loads(path.read_text())
        if doc["run_id"] == run_id:
            return path, doc
    raise AssertionError(f"{dag_id}: no commit marker of run {run_id} under {folder}")


def _declared_datasets(dag_id: str) -> set[str]:
    """The datasets the DAG declares as its tasks' outlets (what `dags test` publishes)."""
    from tests.support.dags import load_dag

    dag = load_dag(dag_id)
    return {o.name.removeprefix("finops.") for t in dag.tasks for o in (t.outlets or [])}


@pytest.fixture(scope="module")
def runs(airflow_stack: Stack) -> dict[str, Any]:  # noqa: F811
    """Every DAG triggered once at one logical date (the cost report after the others), all finished."""
    stack = airflow_stack
    stack.wait_parsed(DAGS)
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    first = [d for d in DAGS if d != LAST]
    ids: dict[str, str] = {}
    for dag_id in first:
        ids[dag_id] = stack.run(dag_id, at)
        stack.unpause(dag_id)
    states = stack.wait([(d, ids[d]) for d in first])
    if LAST in DAGS:
        ids[LAST] = stack.run(LAST, at)
        stack.unpause(LAST)
        states.update(stack.wait([(LAST, ids[LAST])]))
    for d, r in ids.items():
        run = stack.dag_run(d, r)
        tis = stack.task_instances(d, r)
        busy = sum((datetime.fromisoformat(t["end_date"]) - datetime.fromisoformat(t["start_date"])).total_seconds()
                   for t in tis if t["start_date"] and t["end_date"])
        print(f"{d}: queued {run.get('queued_at')} start {run['start_date']} end {run['end_date']} "
              f"tasks {len(tis)} task-seconds {busy:.1f}")
    return {"at": at, "ids": ids, "states": {d: states[(d, ids[d])] for d in ids}}


def test_every_dag_succeeds_through_the_scheduler(airflow_stack: Stack, runs: dict[str, Any]) -> None:  # noqa: F811
    assert set(runs["ids"]) == set(DAGS)
    failed = {d: airflow_stack.failed_tasks_detail(d, r) for d, r in runs["ids"].items()
              if runs["states"][d] != "success"}
    assert not failed, failed
    for dag_id, run_id in runs["ids"].items():
        run = airflow_stack.dag_run(dag_id, run_id)
        assert run["run_type"] == "manual" and run["logical_date"].startswith(runs["at"].date().isoformat())


def test_mapped_tasks_ran_on_both_workers(airflow_stack: Stack, runs: dict[str, Any]) -> None:  # noqa: F811
    tis = [ti for d, r in runs["ids"].items() for ti in airflow_stack.task_instances(d, r)]
    mapped = [ti for ti in tis if ti["map_index"] >= 0]
    assert mapped, "no mapped task instance in any run"
    assert all(ti["state"] == "success" for ti in mapped)
    assert {ti["hostname"] for ti in mapped} == set(airflow_stack.info["workers"]), \
        sorted((ti["dag_id"], ti["task_id"], ti["map_index"], ti["hostname"]) for ti in mapped)
    # Every task instance ran on one of the stack's Celery workers (none in the scheduler, none elsewhere).
    assert {ti["hostname"] for ti in tis} <= set(airflow_stack.info["workers"])


def test_reports_committed_as_with_dags_test(airflow_stack: Stack, runs: dict[str, Any],  # noqa: F811
                                            airflow_db: Path) -> None:
    for dag_id, run_id in runs["ids"].items():
        _, marker = _marker(airflow_stack, dag_id, run_id)
        assert marker["failed_targets"] == [], marker["failed_targets"]
        assert set(marker["datasets"]) == _declared_datasets(dag_id)
        for name, entry in marker["datasets"].items():
            assert entry["run_id"] == run_id
            table = pq.read_table(entry["uri"])
            assert table.num_rows == entry["rows"], f"{dag_id}: {name}"
            if table.num_rows:
                assert set(table.column("run_id").to_pylist()) == {run_id}, f"{dag_id}: {name}"


def test_each_run_posted_its_digest_once(airflow_stack: Stack, runs: dict[str, Any]) -> None:  # noqa: F811
    for dag_id, run_id in runs["ids"].items():
        posts = airflow_stack.slack_posts(dag_id, run_id)
        assert len(posts) == 1, f"{dag_id}: {len(posts)} digests delivered for {run_id}"
        assert dag_id.removeprefix("finops_").split("_")[0] in json.dumps(posts[0]["body"]).lower()


def test_task_logs_readable_through_the_api(airflow_stack: Stack, runs: dict[str, Any]) -> None:  # noqa: F811
    for dag_id, run_id in runs["ids"].items():
        tis = airflow_stack.task_instances(dag_id, run_id)
        ti = next(t for t in tis if t["task_id"] == "post_digest")
        log = airflow_stack.log(ti)
        assert "(log: HTTP" not in log and len(log) > 50, f"{dag_id} post_digest log: {log[:500]}"
        assert "Task instance is in running state" in log or "post_digest" in log or run_id in log, log[:2000]


def test_clearing_a_run_replaces_partitions_without_a_second_post(airflow_stack: Stack,  # noqa: F811
                                                                   runs: dict[str, Any]) -> None:
    """The same logical date again: Airflow refuses a second run of it (409), so an operator clears the run."""
    stack = airflow_stack
    if RERUN not in runs["ids"]:
        pytest.skip(f"{RERUN} is not one of the DAGs")
    run_id = runs["ids"][RERUN]
    again = stack.trigger(RERUN, runs["at"])
    assert again.status_code == 409, again.text
    path, before = _marker(stack, RERUN, run_id)
    assert len(stack.slack_posts(RERUN, run_id)) == 1
    tries = {(t["task_id"], t["map_index"]): t["try_number"] for t in stack.task_instances(RERUN, run_id)}
    stack.api.call("POST", f"dags/{RERUN}/dagRuns/{quote(run_id, safe='')}/clear", json={"dry_run": False})
    assert stack.wait([(RERUN, run_id)])[(RERUN, run_id)] == "success", stack.failed_tasks_detail(RERUN, run_id)
    after = json.loads(path.read_text())
    assert after["run_id"] == run_id and after["report_date"] == before["report_date"]
    assert after["committed_at"] > before["committed_at"], "the partitions were not written again"
    assert set(after["datasets"]) == set(before["datasets"])
    assert len(stack.slack_posts(RERUN, run_id)) == 1, "the rerun posted its digest a second time"
    # Every task ran again (a new try), the digest task included: it found the run's digest already posted.
    again_tries = {(t["task_id"], t["map_index"]): t["try_number"] for t in stack.task_instances(RERUN, run_id)}
    assert all(again_tries[k] > tries[k] for k in tries), (tries, again_tries)
