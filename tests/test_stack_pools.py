"""Load discipline: an Airflow pool per Prometheus source (and one for S3) bounds the mapped tasks on one server.

Unit part: the pool names of targets and the pools derived from the configuration. Stack part (two Celery
workers, eight task slots): with the source's pool at one slot, right-sizing's namespace batches of that
source never overlap in time; without the pool (deleted: the policy leaves them in the default pool) the
same batches run side by side.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.airflow_stack import Stack, airflow_stack  # noqa: F401 - the session fixture
from traceo_finops.config import FinopsConfig
from traceo_finops.kit.context import Target, TargetKind
from traceo_finops.pools import S3_POOL, pool_for, pool_specs, source_pool

ROOT = Path(__file__).resolve().parents[1]
DAG = "finops_rightsizing"


def _config(**rightsizing: Any) -> FinopsConfig:
    doc = yaml.safe_load((ROOT / "devstack" / "finops.yaml").read_text())
    doc["sources"].append({"name": "mimir-eu", "conn_id": "mimir_eu", "flavor": "mimir", "tenants": ["team-a"]})
    doc["workflows"]["rightsizing"].update(rightsizing)
    return FinopsConfig.model_validate(doc)


@pytest.mark.unit
def test_every_target_kind_has_its_servers_pool() -> None:
    src = Target(TargetKind.SOURCE, "devstack", conn_id="prometheus_default")
    tenant = Target(TargetKind.TENANT, "mimir-eu", "team-a", conn_id="mimir_eu")
    assert pool_for(src.as_dict()) == source_pool("devstack") == "finops_prometheus_devstack"
    # A Mimir tenant and a namespace batch load their cluster / server: the source's pool.
    assert pool_for(tenant.as_dict()) == source_pool("mimir-eu")
    assert pool_for(src.batch("checkout", batch={}).as_dict()) == source_pool("devstack")
    assert pool_for(Target(TargetKind.BUCKET, bucket="mimir-blocks").as_dict()) == S3_POOL
    assert pool_for({"namespace": "x"}) is None and pool_for({"kind": "source"}) is None


@pytest.mark.unit
def test_pool_slots_come_from_the_query_budget_and_the_task_concurrency() -> None:
    specs = pool_specs(_config(query_concurrency=2), max_queries=4)
    assert set(specs) == {source_pool("devstack"), source_pool("mimir-eu"), S3_POOL}
    assert specs[source_pool("devstack")]["slots"] == 2 and specs[source_pool("mimir-eu")]["slots"] == 2
    assert pool_specs(_config(query_concurrency=3), max_queries=4)[source_pool("devstack")]["slots"] == 1
    assert pool_specs(_config(query_concurrency=8), max_queries=4)[source_pool("devstack")]["slots"] == 1
    assert pool_specs(_config(query_concurrency=1), max_queries=6)[source_pool("devstack")]["slots"] == 6
    assert pool_specs(_config(), s3_slots=3)[S3_POOL]["slots"] == 3
    with pytest.raises(ValueError, match="at least 1"):
        pool_specs(_config(), max_queries=0)


@pytest.mark.unit
def test_pools_command_prints_what_airflow_pools_import_reads(tmp_path: Path) -> None:
    out = tmp_path / "pools.json"
    done = subprocess.run([sys.executable, "-m", "traceo_finops", "pools", "--output", str(out), "--max-queries",
                           "6"], capture_output=True, text=True, timeout=60,
                          env={"FINOPS_CONFIG": str(ROOT / "devstack" / "finops.yaml"), "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": f"{ROOT / 'include'}:{ROOT}"})
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    # airflow's pool_import_helper takes entries with "slots" and "description" (include_deferred optional).
    assert all({"slots", "description", "include_deferred"} <= set(v) for v in doc.values())
    assert doc[source_pool("devstack")]["slots"] == 3


def _collect(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    tis = [t for t in stack.task_instances(DAG, run_id) if t["task_id"] == "collect"]
    assert len(tis) >= 2, f"right-sizing made {len(tis)} batches; the stack's config should make several"
    assert all(t["state"] == "success" and t["start_date"] and t["end_date"] for t in tis), tis
    return sorted(tis, key=lambda t: t["start_date"])


def _overlaps(tis: list[dict[str, Any]]) -> list[tuple[int, int]]:
    spans = [(datetime.fromisoformat(t["start_date"]), datetime.fromisoformat(t["end_date"]), t["map_index"])
             for t in tis]
    return [(a[2], b[2]) for i, a in enumerate(spans) for b in spans[i + 1:] if b[0] < a[1] and a[0] < b[1]]


def _run(stack: Stack) -> str:
    time.sleep(1)  # logical dates are unique per DAG: one second apart at least
    run_id = stack.run(DAG, datetime.now(UTC).replace(microsecond=0))
    stack.unpause(DAG)
    assert stack.wait([(DAG, run_id)])[(DAG, run_id)] == "success", stack.failed_tasks_detail(DAG, run_id)
    return run_id


@pytest.fixture
def source_pool_of_one(airflow_stack: Stack) -> Iterator[str]:  # noqa: F811
    """The devstack source's pool (made by the stack from the config) cut to one slot; put back after."""
    name = source_pool("devstack")
    before = airflow_stack.api.get(f"pools/{name}")
    body = {k: before[k] for k in ("name", "slots", "description", "include_deferred")}
    airflow_stack.api.call("PATCH", f"pools/{name}", json={**body, "slots": 1})
    yield name
    resp = airflow_stack.api.request("PATCH", f"pools/{name}", json=body)
    if resp.status_code == 404:
        airflow_stack.api.call("POST", "pools", json=body)


@pytest.mark.dag
@pytest.mark.integration
def test_a_pool_of_one_keeps_a_sources_batches_apart(airflow_stack: Stack, source_pool_of_one: str) -> None:  # noqa: F811
    stack = airflow_stack
    stack.wait_parsed([DAG])
    pooled = _collect(stack, _run(stack))
    assert {t["pool"] for t in pooled} == {source_pool_of_one}
    assert {t["hostname"] for t in pooled} <= set(stack.info["workers"])
    assert _overlaps(pooled) == [], [(t["map_index"], t["hostname"], t["start_date"], t["end_date"]) for t in pooled]

    # Without the pool the policy leaves the batches in the default pool, and the workers run them together.
    stack.api.call("DELETE", f"pools/{source_pool_of_one}")
    free = _collect(stack, _run(stack))
    assert {t["pool"] for t in free} == {"default_pool"}
    assert _overlaps(free), "without the pool the batches never overlapped: this test could not tell them apart"
