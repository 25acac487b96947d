"""Load discipline: one Airflow pool per Prometheus/Mimir source and one for S3, sized from the configuration.

Every mapped task of a workflow works on one :class:`~traceo_finops.kit.context.Target` (a source, a
Mimir tenant, a namespace batch of a source, or a bucket). The cluster policy in
``include/airflow_local_settings.py`` puts each mapped task instance into the pool of its target's
server — :func:`pool_for` — so that however many workers run, no more than the pool's slots of
tasks query one server at once. :func:`pool_specs` is what ``python -m traceo_finops pools`` prints
for ``airflow pools import``: the slots of a source's pool are the server's query budget
(``--max-queries``) divided by the most queries one task keeps in flight
(``workflows.rightsizing.query_concurrency``; the other workflows' tasks query one at a time).

Pure: no Airflow import (the policy and the CLI call these).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from traceo_finops.config import FinopsConfig
from traceo_finops.shapes import Json

PROMETHEUS_PREFIX = "finops_prometheus_"
S3_POOL = "finops_s3"
DEFAULT_MAX_QUERIES = 4  # concurrent FinOps queries one server accepts; Prometheus' own limit defaults to 20
DEFAULT_S3_SLOTS = 4


def source_pool(source: str) -> str:
    """The pool of Prometheus/Mimir source ``source`` (its tenants and batches share it: one server)."""
    return PROMETHEUS_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "_", source)


def pool_for(target: Mapping[str, Json]) -> str | None:
    """The pool of a mapped task's target (``Target.as_dict()``), or None for something that is not a target."""
    kind = target.get("kind")
    if kind == "bucket":
        return S3_POOL
    source = target.get("source")
    if kind in ("source", "tenant", "batch") and isinstance(source, str) and source:
        return source_pool(source)
    return None


def pool_specs(cfg: FinopsConfig, max_queries: int = DEFAULT_MAX_QUERIES,
               s3_slots: int = DEFAULT_S3_SLOTS) -> dict[str, dict[str, Json]]:
    """``airflow pools import`` JSON: {pool: {slots, description, include_deferred}} for every source, and S3."""
    if max_queries < 1 or s3_slots < 1:
        raise ValueError(f"max_queries and s3_slots must be at least 1, got {max_queries} and {s3_slots}")
    per_task = cfg.workflows.rightsizing.query_concurrency
    slots = max(1, max_queries // per_task)
    out: dict[str, dict[str, Json]] = {}
    for source in cfg.sources:
        out[source_pool(source.name)] = {
            "slots": slots, "include_deferred": False,
            "description": f"Traceo FinOps tasks querying {source.flavor.value} source {source.name!r} at once: "
                           f"{max_queries} queries / {per_task} per task (workflows.rightsizing.query_concurrency)"}
    out[S3_POOL] = {"slots": s3_slots, "include_deferred": False,
                    "description": "Traceo FinOps tasks listing or changing S3 buckets at once"}
    return out
