"""Traceo FinOps cluster policy: each mapped task instance runs in the Airflow pool of its target's server.

Airflow imports ``airflow_local_settings`` from ``sys.path`` at start (scheduler, workers, api-server):
``include/`` is on it wherever the project runs (``PYTHONPATH`` in docker-compose.yaml and the local
stack, the venv's ``.pth`` in development).

Why a policy: a mapped operator's ``pool`` is one of its partial (non-mappable) arguments in Airflow
3.3, so a task mapped over sources cannot name a pool per source in the DAG file, and the sources
are only known at run time (from the configuration, in the upstream ``targets`` task). The scheduler
calls ``task_instance_mutation_hook`` when it expands a mapped task into its task instances
(``models/taskmap.py``) and again whenever it refreshes one (a clear, a retry): the hook reads the
target of the instance's map index from the upstream task's XCom — the list the task is mapped over —
and sets the instance's pool to :func:`traceo_finops.pools.pool_for` of it (``finops_prometheus_<source>``
or ``finops_s3``). A pool that does not exist leaves the instance in its task's pool (the default
pool), with a log line: create the pools with ``python -m traceo_finops pools --output pools.json &&
airflow pools import pools.json`` (docs/production.md, "Pools").

The hook runs inside the scheduler's transaction: it reads with that session (never commits, never
opens another) and never raises — whatever goes wrong, the instance keeps the pool it had.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy.orm import Session

__all__ = ["task_instance_mutation_hook"]  # Airflow copies every other public name into airflow.settings


def task_instance_mutation_hook(task_instance: TaskInstance, dag_run: DagRun | None = None) -> None:
    """Put a mapped task instance of a Traceo FinOps target into its server's pool (see the module doc)."""
    import logging

    log = logging.getLogger("traceo_finops.pools")
    map_index = getattr(task_instance, "map_index", -1)
    if map_index is None or map_index < 0:
        return
    try:
        from sqlalchemy.orm import object_session

        session = object_session(dag_run) if dag_run is not None else object_session(task_instance)
        if session is None:
            return  # not yet in a session (the TaskInstance constructor); the scheduler calls again
        target = _mapped_target(task_instance, map_index, session)
        if target is None:
            return
        from traceo_finops.pools import pool_for

        pool = pool_for(target)
        if not pool or pool == task_instance.pool:
            return
        from airflow.models.pool import Pool
        from sqlalchemy import select

        with session.no_autoflush:
            exists = session.scalar(select(Pool.pool).where(Pool.pool == pool)) is not None
        if not exists:
            log.info("pool %s does not exist: %s.%s[%s] stays in pool %s (create the pools with "
                     "`python -m traceo_finops pools`, docs/production.md)", pool, task_instance.dag_id,
                     task_instance.task_id, map_index, task_instance.pool)
            return
        task_instance.pool = pool
    except Exception as exc:  # a policy must never break scheduling
        log.warning("pool policy skipped %s.%s[%s]: %s: %s", getattr(task_instance, "dag_id", "?"),
                    getattr(task_instance, "task_id", "?"), map_index, type(exc).__name__, exc)


def _mapped_target(task_instance: TaskInstance, map_index: int, session: Session) -> dict[str, Any] | None:
    """The element ``map_index`` of the XCom list the instance's task is mapped over, if it is a target dict."""
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    task = getattr(task_instance, "task", None)
    # A classic operator keeps its expand input in ``expand_input``, a @task one in ``op_kwargs_expand_input``;
    # the serialized operator says which (``_expand_input_attr``).
    attr = getattr(task, "_expand_input_attr", None) or "expand_input"
    value = getattr(getattr(task, attr, None), "value", None)
    if not isinstance(value, dict) or len(value) != 1:
        return None  # the kit's tasks map one argument, ``target``
    arg = next(iter(value.values()))
    upstream, key = getattr(getattr(arg, "operator", None), "task_id", None), getattr(arg, "key", None)
    if not upstream or not key:
        return None  # a literal list, or an XComArg with .map()/.zip() on it
    with session.no_autoflush:
        row = session.scalar(select(XComModel).where(
            XComModel.dag_id == task_instance.dag_id, XComModel.run_id == task_instance.run_id,
            XComModel.task_id == upstream, XComModel.map_index == -1, XComModel.key == key))
    if row is None:
        return None
    items = XComModel.deserialize_value(row)
    if not isinstance(items, list) or map_index >= len(items) or not isinstance(items[map_index], dict):
        return None
    target = items[map_index]
    return target if "kind" in target else None
