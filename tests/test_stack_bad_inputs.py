"""Bad inputs of the production-like stack: a start that cannot complete, a worker killed mid-task, the
scheduler restarted mid-run, a run triggered with an invalid param.

The start failures run a stack of their own (a temporary state folder, free ports) and check that the
error names the part and its port and that nothing of it is left running. The run faults use the
session's stack (``tests/support/airflow_stack.py``).

Order, on purpose: the worker is killed first (the module's first test), and the scheduler only notices
the missing heartbeat after ``[scheduler] task_instance_heartbeat_timeout``; the start failures run while
it waits, and a background thread restarts the scheduler once the task waits for its retry. The tests of
the faulted run come after them. Run alone, each test still gets every fault, only without the overlap.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devstack import airflow_stack as stack_mod
from devstack import proc
from tests.support.airflow_stack import Api, Stack, airflow_stack  # noqa: F401 - the session fixture
from tests.support.net import free_port

# -- runs that meet a fault ---------------------------------------------------------------------------------
DAG = "finops_recording_rules"  # its mapped `mine` task works long enough to be killed half-way


def _wait_task(stack: Stack, run_id: str, task_id: str, states: set[str], timeout: float = 300,
               retry_running: bool = False) -> dict[str, Any]:
    """The first task instance of ``task_id`` in one of ``states`` (or, with ``retry_running``, running a retry)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ti in stack.task_instances(DAG, run_id):
            if ti["task_id"] == task_id and (ti["state"] in states or (
                    retry_running and ti["state"] == "running" and ti["try_number"] >= 2)):
                return ti
        time.sleep(0.5)
    raise AssertionError(f"{DAG}.{task_id} never reached {states}: "
                         f"{[(t['task_id'], t['state']) for t in stack.task_instances(DAG, run_id)]}")


def _restart_scheduler_at_retry(stack: Stack, run_id: str) -> tuple[int | None, int]:
    """Once the scheduler has failed the killed try (no heartbeat) and the task waits for its retry: SIGTERM
    and a new start of the scheduler. (Old pid, new pid.) Runs in a thread, with an API session of its own."""
    own = dataclasses.replace(stack, api=Api(stack.info["api_url"], stack.info["username"], stack.info["password"]))
    # The retry waits ~5 s (TEST_ENV); should a poll slowed by the start failures' load miss that, a retry
    # already running is mid-run too: the restart must not wait for a state that has passed.
    _wait_task(own, run_id, "mine", {"up_for_retry", "failed", "scheduled", "queued"}, timeout=240,
               retry_running=True)
    sd = stack.state_dir
    old = proc.read_pid(sd / "run" / "scheduler.pid")
    return old, stack_mod.restart(sd, "scheduler")


@pytest.fixture(scope="module")
def fault_in_flight(airflow_stack: Stack) -> Iterator[dict[str, Any]]:  # noqa: F811
    """One run whose mapped task's worker is killed half-way (and started again); the scheduler restart that
    follows, while the task waits for its retry, is left to a background thread. Every fault is real: SIGKILL
    to the worker's whole process session (its task processes too), SIGTERM and a new start of the scheduler."""
    stack = airflow_stack
    sd = stack.state_dir
    stack.wait_parsed([DAG])
    run_id = stack.run(DAG, datetime.now(UTC).replace(microsecond=0))
    stack.unpause(DAG)
    ti = _wait_task(stack, run_id, "mine", {"running"})
    time.sleep(2)  # half-way through its queries, not at its first line
    worker = ti["hostname"]
    assert worker in stack.info["workers"], ti
    killed = stack_mod.kill(sd, worker)
    assert len(killed) >= 2, f"killed only {killed}: the worker and its task processes"
    stack_mod.start(sd, worker)
    # The scheduler notices the missing heartbeat and schedules a retry; restart it meanwhile.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scheduler-restart") as pool:
        restart = pool.submit(_restart_scheduler_at_retry, stack, run_id)
        yield {"run_id": run_id, "worker": worker, "killed": killed, "restart": restart}


@pytest.fixture(scope="module")
def faulted_run(airflow_stack: Stack, fault_in_flight: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    """The run of :func:`fault_in_flight` after its scheduler restart, finished."""
    run_id = fault_in_flight["run_id"]
    old, new = fault_in_flight["restart"].result(timeout=600)
    states = airflow_stack.wait([(DAG, run_id)], timeout=600)
    return {"run_id": run_id, "state": states[(DAG, run_id)], "worker": fault_in_flight["worker"],
            "schedulers": (old, new)}


@pytest.mark.dag
@pytest.mark.integration
def test_a_killed_worker_takes_its_task_processes_down_and_is_started_again(
        airflow_stack: Stack, fault_in_flight: dict[str, Any]) -> None:  # noqa: F811
    """The crash the run faults below start from (first in the module: see the module doc)."""
    killed = fault_in_flight["killed"]
    assert len(killed) >= 2, f"killed only {killed}: the worker and its task processes"
    assert [p for p in killed if proc.pid_alive(p)] == [], "a killed process still runs"
    again = proc.read_pid(airflow_stack.state_dir / "run" / f"{fault_in_flight['worker']}.pid")
    assert again is not None and again not in killed, "the killed worker was not started again"


# -- a start that cannot complete ---------------------------------------------------------------------------
@pytest.fixture
def listener() -> Iterator[int]:
    """Something else listening on a port of 127.0.0.1 (what a stray or system service looks like)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def state() -> Iterator[Path]:
    """A state folder the postgres user can reach (pytest's state is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="traceo-stack-bad-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _ports(**taken: int) -> dict[str, int]:
    ports = {"api_port": free_port(), "pg_port": free_port(), "redis_port": free_port(), "log_port": free_port(),
             "health_port": free_port()}
    return {**ports, **taken}


def _nothing_runs(state: Path, ports: dict[str, int]) -> None:
    run = state / "run"
    alive = {p.stem: proc.read_pid(p) for p in run.glob("*.pid") if proc.read_pid(p)}
    assert alive == {}, f"left running: {alive}"
    assert not stack_mod.pg_running(state, ports["pg_port"])
    assert not stack_mod.redis_ping(ports["redis_port"])
    assert stack_mod.health(ports["api_port"]) is None


@pytest.mark.integration
def test_postgres_that_cannot_start_stops_everything(state: Path, listener: int) -> None:
    ports = _ports(pg_port=listener)
    with pytest.raises(stack_mod.StackError, match=rf"PostgreSQL cannot start: 127\.0\.0\.1:{listener} is already"):
        stack_mod.up(state, **ports)
    _nothing_runs(state, ports)


@pytest.mark.integration
def test_broken_postgres_cluster_is_named_with_its_log(state: Path) -> None:
    """A cluster whose data folder is damaged (no global/pg_control): PostgreSQL itself refuses to start."""
    ports = _ports()
    stack_mod.pg_up(state, ports["pg_port"], "pw")  # a real cluster, then damaged
    stack_mod.pg_down(state)
    (state / "pg" / "data" / "global" / "pg_control").unlink()
    with pytest.raises(stack_mod.StackError, match=rf"PostgreSQL could not start on 127\.0\.0\.1:{ports['pg_port']}") \
            as err:
        stack_mod.up(state, **ports)
    assert "last lines of" in str(err.value) and "pg_control" in str(err.value)
    _nothing_runs(state, ports)


@pytest.mark.integration
def test_redis_that_cannot_start_stops_the_postgres_it_started(state: Path, listener: int) -> None:
    ports = _ports(redis_port=listener)
    with pytest.raises(stack_mod.StackError, match=rf"Redis cannot start: 127\.0\.0\.1:{listener} is already"):
        stack_mod.up(state, **ports)
    assert (state / "pg" / "data" / "PG_VERSION").exists(), "PostgreSQL was not even started first"
    _nothing_runs(state, ports)


@pytest.mark.integration
def test_airflow_that_cannot_start_stops_every_part(state: Path, listener: int) -> None:
    """The api-server's port is taken: PostgreSQL, Redis and every Airflow process this start made are stopped."""
    ports = _ports(api_port=listener)
    with pytest.raises(stack_mod.StackError, match=r"Airflow api-server exited while starting|not healthy") as err:
        stack_mod.up(state, timeout=120, **ports)
    assert "last lines of" in str(err.value)
    _nothing_runs(state, ports)


# -- what the faulted run shows -----------------------------------------------------------------------------
@pytest.mark.dag
@pytest.mark.integration
def test_worker_killed_mid_task_the_task_is_retried_and_the_partition_complete(
        airflow_stack: Stack, faulted_run: dict[str, Any]) -> None:  # noqa: F811
    stack, run_id = airflow_stack, faulted_run["run_id"]
    assert faulted_run["state"] == "success", stack.failed_tasks_detail(DAG, run_id)
    mine = [t for t in stack.task_instances(DAG, run_id) if t["task_id"] == "mine"]
    assert mine and all(t["state"] == "success" for t in mine)
    killed = next(t for t in mine if t["try_number"] >= 2)
    first = stack.log(killed, try_number=1)
    assert "(log: HTTP" not in first, first
    # The partition is complete: the commit marker names this run and every dataset's rows carry it.
    import pyarrow.parquet as pq

    markers = [json.loads(p.read_text()) for p in (stack.report_root / "_commits" / DAG).glob("*.json")]
    marker = next((m for m in markers if m["run_id"] == run_id), None)
    assert marker is not None and marker["failed_targets"] == []
    for name, entry in marker["datasets"].items():
        table = pq.read_table(entry["uri"])
        assert table.num_rows == entry["rows"], name
        assert set(table.column("run_id").to_pylist()) <= {run_id}, name
    assert len(stack.slack_posts(DAG, run_id)) == 1


@pytest.mark.dag
@pytest.mark.integration
def test_scheduler_restarted_mid_run_the_run_completes(airflow_stack: Stack,  # noqa: F811
                                                       faulted_run: dict[str, Any]) -> None:
    old, new = faulted_run["schedulers"]
    assert old and new and old != new and not proc.pid_alive(old)
    assert faulted_run["state"] == "success"
    health = stack_mod.health(airflow_stack.info["settings"]["api_port"]) or {}
    assert health.get("scheduler", {}).get("status") == "healthy", health


@pytest.mark.dag
@pytest.mark.integration
@pytest.mark.parametrize(("conf", "param"), [({"history": 5}, "history"), ({"post_to_slack": "yes"}, "post_to_slack")])
def test_invalid_param_is_rejected_with_its_name(airflow_stack: Stack, conf: dict[str, Any],  # noqa: F811
                                                 param: str) -> None:
    stack = airflow_stack
    dag = "finops_rightsizing"
    stack.wait_parsed([dag])
    before = stack.api.get(f"dags/{dag}/dagRuns")["total_entries"]
    resp = stack.trigger(dag, datetime.now(UTC).replace(microsecond=0), conf=conf)
    assert resp.status_code == 400, resp.text
    assert f"param {param}" in resp.json()["detail"], resp.text
    assert stack.api.get(f"dags/{dag}/dagRuns")["total_entries"] == before, "a rejected trigger made a run"
