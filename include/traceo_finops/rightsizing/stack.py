"""The observability stack itself: Prometheus, Mimir, Thanos, Loki… processes that do not run on Kubernetes.

Sized like containers, from their own metrics (Prometheus scrapes itself): CPU from the rate of
``process_cpu_seconds_total``; memory from what the Go runtime needs — the heap target of the next GC
(``go_memstats_next_gc_bytes``) plus its non-heap memory (``go_memstats_sys_bytes`` −
``go_memstats_heap_sys_bytes``) — since the rest of a Prometheus' resident memory is mmapped TSDB chunks,
page cache the kernel can drop. A process without Go stats is sized from its resident memory
(``process_resident_memory_bytes``). Series with a ``pod`` label are left out: those are containers.

Each process (job × instance) becomes a :class:`ContainerUsage` of kind ``Process`` (namespace ``""``,
workload = job, container = instance), with its current allocation from ``stack_allocations``.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from traceo_finops.config import RightsizingSettings
from traceo_finops.prometheus import SourceSpec, sample_value
from traceo_finops.rightsizing import queries as q
from traceo_finops.rightsizing.collect import BatchRunner, Series
from traceo_finops.rightsizing.model import PROCESS, ContainerUsage, WorkloadInfo

log = logging.getLogger(__name__)
GIB = 2**30


def collect_stack(spec: SourceSpec, jobs: Sequence[str], res: q.Resolution, at: datetime,
                  allocations: dict[str, tuple[float, float]], cpu_percentile: float = 0.95,
                  concurrency: int = 2) -> tuple[list[ContainerUsage], list[WorkloadInfo]]:
    """One record per stack process found in the window; ``allocations`` maps job → (cores, GiB) now."""
    if not jobs:
        return [], []
    quantiles = sorted({*q.CPU_QUANTILES, cpu_percentile})
    with BatchRunner(spec, at, concurrency) as runner:
        answers: dict[str, Series] = runner.run_all(
            {u.stat: functools.partial(runner.query, u.promql) for u in q.stack_queries(jobs, res, quantiles)})
    stats: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for stat, result in answers.items():
        for sample in result:
            metric = sample.get("metric") or {}
            job, instance, value = metric.get("job"), metric.get("instance"), sample_value(sample)
            if job and instance and value is not None:
                stats[(job, instance)][stat] = value
    end = at.timestamp()
    out, infos = [], []
    for (job, instance), s in sorted(stats.items()):
        if "first_seen" not in s:
            continue
        cores, gib = allocations.get(job, (None, None))
        # A process older than the window counts from the window's start.
        first = max(s["first_seen"], end - res.history_seconds)
        last = max(s.get("last_seen", first), s.get("seen_now", first))
        need = s.get("go_need_peak") or s.get("rss_peak")
        points = int(s.get("cpu_samples", 0))
        alive = last >= end - max(res.step, 2 * (res.scrape_interval or 60)) - 1
        out.append(ContainerUsage(
            "", PROCESS, job, instance, pods=[instance], alive_pods=int(alive),
            cpu={k[4:]: v for k, v in s.items() if k.startswith("cpu_") and k != "cpu_samples"},
            cpu_samples=points, expected_samples=max(float(points), (last - first) / res.step + 1),
            pod_seconds=last - first + res.step, memory_peak=need, memory_p99=s.get("memory_p99"),
            cpu_request=cores, memory_request=gib * GIB if gib else None, requests_alive=True))
        infos.append(WorkloadInfo("", PROCESS, job, replicas=1, avg_replicas=1.0))
    log.info("observability stack: %d processes of jobs %s", len(out), ", ".join(jobs))
    # One WorkloadInfo per job: instances of a job are rows of one "workload".
    unique = {w.key: w for w in infos}
    return out, list(unique.values())


def allocations_from_settings(settings: RightsizingSettings) -> dict[str, tuple[float, float]]:
    return {a.job: (a.cpu_cores, a.memory_gib) for a in settings.stack_allocations}
