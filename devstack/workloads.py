"""The devstack's synthetic Kubernetes world and the per-minute model behind every k8s series.

One :class:`World` (built from a seed and a history length) holds namespaces and their teams, four
nodes and about 50 workloads with varied right-sizing *profiles*. Its model gives, for any minute, the
values of the cAdvisor and kube-state-metrics series those workloads would expose. The backfill
(:mod:`devstack.history`) and the live exporter (:mod:`devstack.exporter`) both read values from
:meth:`World.k8s_series`, so history and head continue each other exactly.

Time axis: integer grid minutes ``k`` since the history start (``k = 0`` is the first backfilled
sample, ``k = history_minutes`` the last). The daily cycle, HPA scaling and OOM schedule are all
relative to that start, so the same seed gives the same data whatever the wall-clock anchor.
Randomness comes from a counter-based hash (``uniform(key, k)``), never from RNG state, so any minute
can be evaluated on its own.

Model per container (cores / bytes):
- ``cpu_usage`` = mean usage over the minute ending at ``k``:
  ``cpu_mean * (1 - cpu_diurnal*cos(2π·k/1440)) * (1 + cpu_noise*N(0,1))`` plus 10-minute bursts for
  spiky profiles, floored at 2 % of the mean and capped at the CPU limit (throttling).
- ``container_cpu_usage_seconds_total`` = running sum of ``60 * cpu_usage`` since the container
  (re)started, starting from a pre-history value for pods that existed before ``k = 0``.
- ``container_memory_working_set_bytes`` = a noisy daily-varying level, or for OOM profiles a ramp that
  reaches the limit every ``oom_period`` minutes; the sample after the ramp shows the restarted container.
- Batch runs (a Job with ``run_minutes``: many completions, one pod after another): each pod is one run of
  its own length and size (``Pod.load`` scales the run's CPU and memory); finished pods stay (Succeeded).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

GRID_SECONDS = 60
DAY_MINUTES = 1440
SHORT_HISTORY_MINUTES = 360
MIB = 1024 * 1024
GIB = 1024 * MIB

KUBELET_LABELS = (("job", "kubelet"), ("metrics_path", "/metrics/cadvisor"))
KSM_LABELS = (("instance", "10.0.3.2:8080"), ("job", "kube-state-metrics"))

# Namespace -> owning team; exposed as kube_namespace_labels{label_team} and as `team` on app metrics.
NAMESPACE_TEAMS: dict[str, str] = {
    "checkout": "payments",
    "payments": "payments",
    "catalog": "discovery",
    "search": "discovery",
    "data-pipeline": "data",
    "monitoring": "platform",
    "kube-system": "platform",
}

PROFILES = (
    "over_provisioned_cpu",
    "over_provisioned_memory",
    "oom_killed",
    "spiky_cpu",
    "well_sized",
    "under_provisioned_cpu",
    "hpa_managed",
    "short_history",
    "no_requests",
)

# Counters whose head value is interpolated inside the minute; everything else is a step function.
COUNTER_METRICS = frozenset({"container_cpu_usage_seconds_total", "kube_pod_container_status_restarts_total"})

_K8S_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generated name suffixes


# ---------------------------------------------------------------- deterministic hashing / noise


def stable_key(*parts: object) -> int:
    """A 63-bit key from any printable parts (stable across processes, unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def name_suffix(length: int, *parts: object) -> str:
    key = stable_key(*parts)
    chars = []
    for _ in range(length):
        key, idx = divmod(key, len(_K8S_ALPHABET))
        chars.append(_K8S_ALPHABET[idx])
    return "".join(chars)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def uniform(key: int, idx: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) numbers, a pure function of ``(key, idx)`` (splitmix64 of the index)."""
    x = idx.astype(np.uint64) * _GOLDEN ^ np.uint64(key)
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def normal(key: int, idx: np.ndarray) -> np.ndarray:
    """Standard normal numbers (Box-Muller on two hash streams), a pure function of ``(key, idx)``."""
    u1 = uniform(key, idx)
    u2 = uniform(key ^ 0x5DEECE66D, idx)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


# ---------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class Node:
    name: str
    ip: str
    cpu_cores: float
    memory_bytes: int


@dataclass(frozen=True)
class ContainerSpec:
    """One container of a workload's pod template, with its usage model parameters."""

    name: str
    image: str
    cpu_request: float | None  # cores
    cpu_limit: float | None
    mem_request: int | None  # bytes
    mem_limit: int | None
    cpu_mean: float  # cores
    cpu_diurnal: float  # relative amplitude of the daily cycle
    cpu_noise: float  # relative sd of the per-minute noise
    cpu_spike_rate: float  # share of 10-minute slots with a burst
    cpu_spike_mult: float  # burst height, in multiples of cpu_mean
    mem_base: float  # bytes
    mem_noise: float  # relative sd
    oom_period: int = 0  # minutes from restart to OOM kill; 0 = never OOM-killed
    initial_restarts: int = 0
    initial_reason: str | None = None  # last terminated reason carried from before the history

    @property
    def oom_top(self) -> float:
        """Working set just before the kernel kills the container."""
        assert self.mem_limit is not None
        return 0.97 * self.mem_limit


@dataclass(frozen=True)
class Pod:
    """One pod (a name) and the grid minutes it exists: ``[start, end)``; ``end`` None = still exists."""

    name: str
    node: Node
    owner_kind: str  # ReplicaSet | StatefulSet | DaemonSet | Job
    owner_name: str
    start: int
    end: int | None
    run_end: int | None = None  # containers stop here (Job completed) but the pod object stays
    prestart_minutes: int = 0  # uptime before k = 0 for pods older than the history
    load: float = 1.0  # batch runs: this run's CPU and memory relative to the template's

    @property
    def last_running(self) -> int | None:
        """Last grid minute the containers run (inclusive), None if open-ended."""
        stop = self.run_end if self.run_end is not None else self.end
        return None if stop is None else stop - 1


@dataclass(frozen=True)
class Workload:
    namespace: str
    team: str
    kind: str  # Deployment | StatefulSet | DaemonSet | Job
    name: str
    profile: str
    containers: tuple[ContainerSpec, ...]
    replicas: int  # fixed replicas, or the HPA minimum
    hpa_max: int | None = None
    created: int = 0  # grid minute the workload appears (short-history workloads: late)
    churn_at: int | None = None  # a rollout replaces every pod (new ReplicaSet) at this minute
    completes_at: int | None = None  # Job finished: containers stop, pod stays with phase Succeeded
    run_minutes: int | None = None  # Jobs with many completions: pods run one after another, about this long
    nodes: tuple[Node, ...] = field(default=(), repr=False)
    seed: int = 0

    # -- replicas and pods

    @property
    def hpa(self) -> bool:
        return self.hpa_max is not None

    def _hpa_window(self, extra: int) -> tuple[int, int]:
        """Minutes of the day [a, b) during which HPA slot ``replicas + extra`` runs.

        Desired replicas follow ``min + (max-min) * (0.5 - 0.5 cos(2π day_phase))``: one bump per
        day, so each extra slot runs once a day in a window centred on mid-day.
        """
        assert self.hpa_max is not None
        span = self.hpa_max - self.replicas
        level = (extra + 0.5) / span
        phase = math.acos(1.0 - 2.0 * level) / (2.0 * math.pi)
        start = math.ceil(phase * DAY_MINUTES)
        return start, DAY_MINUTES - start

    def replicas_at(self, k: np.ndarray) -> np.ndarray:
        """Desired (= current) replicas at each grid minute."""
        k = np.asarray(k)
        if self.kind == "DaemonSet":
            return np.full(k.shape, len(self.nodes))
        base = np.full(k.shape, self.replicas)
        if self.hpa_max is None:
            return base
        minute = k % DAY_MINUTES
        for extra in range(self.hpa_max - self.replicas):
            a, b = self._hpa_window(extra)
            base = base + ((minute >= a) & (minute < b))
        return base

    def replicasets(self) -> list[tuple[str, int]]:
        """Deployments only: (ReplicaSet name, grid minute it appears); a rollout adds a second one."""
        if self.kind != "Deployment":
            return []
        sets = [(f"{self.name}-{name_suffix(10, self.seed, self.namespace, self.name, 'rs', 0)}", self.created)]
        if self.churn_at is not None:
            sets.append(
                (f"{self.name}-{name_suffix(10, self.seed, self.namespace, self.name, 'rs', 1)}", self.churn_at - 2)
            )
        return sets

    def _node_for(self, *parts: object) -> Node:
        return self.nodes[stable_key(self.seed, self.namespace, self.name, *parts) % len(self.nodes)]

    def _prestart(self, *parts: object) -> int:
        if self.created > 0:
            return 0
        return 600 + stable_key(self.seed, self.namespace, self.name, "uptime", *parts) % 20000

    def _runs(self, k_hi: int) -> Iterator[Pod]:
        """A Job of many completions: run ``r`` starts when run ``r - 1`` ends, lasts 0.6-1.4 × ``run_minutes``
        and works on 0.5-1.1 × the template's load; finished pods stay until the Job is deleted."""
        assert self.run_minutes
        ns, name, seed = self.namespace, self.name, self.seed
        start, r = self.created, 0
        while start <= k_hi:
            u_len = stable_key(seed, ns, name, "run-length", r) / 2**63
            u_load = stable_key(seed, ns, name, "run-load", r) / 2**63
            end = start + max(2, round(self.run_minutes * (0.6 + 0.8 * u_len)))
            yield Pod(f"{name}-{name_suffix(5, seed, ns, name, 'run', r)}", self._node_for("run", r), "Job", name,
                      start, None, run_end=end, load=round(0.5 + 0.6 * u_load, 3))
            start, r = end, r + 1

    def pods_between(self, k_lo: int, k_hi: int) -> list[Pod]:
        """Every pod that exists at some minute of ``[k_lo, k_hi]`` (inclusive)."""
        pods = [p for p in self._pods_window(k_lo, k_hi) if p.start <= k_hi and (p.end is None or p.end > k_lo)]
        return sorted(pods, key=lambda p: (p.start, p.name))

    def _pods_window(self, k_lo: int, k_hi: int) -> Iterator[Pod]:
        ns, name, seed = self.namespace, self.name, self.seed
        if self.kind == "StatefulSet":
            for i in range(self.replicas):
                yield Pod(f"{name}-{i}", self._node_for(i), "StatefulSet", name, self.created, None,
                          prestart_minutes=self._prestart(i))
        elif self.kind == "DaemonSet":
            for node in self.nodes:
                suffix = name_suffix(5, seed, ns, name, node.name)
                yield Pod(f"{name}-{suffix}", node, "DaemonSet", name, self.created, None,
                          prestart_minutes=self._prestart(node.name))
        elif self.kind == "Job" and self.run_minutes:
            yield from self._runs(k_hi)
        elif self.kind == "Job":
            suffix = name_suffix(5, seed, ns, name, "job")
            yield Pod(f"{name}-{suffix}", self._node_for("job"), "Job", name, self.created, None,
                      run_end=self.completes_at, prestart_minutes=self._prestart("job"))
        else:  # Deployment
            sets = self.replicasets()
            rs0 = sets[0][0]
            for i in range(self.replicas):
                if self.churn_at is None:
                    yield Pod(f"{rs0}-{name_suffix(5, seed, ns, name, 0, i)}", self._node_for(0, i),
                              "ReplicaSet", rs0, self.created, None, prestart_minutes=self._prestart(i))
                    continue
                # Rolling update: the new pod starts 2 minutes before the old one goes away.
                rs1 = sets[1][0]
                yield Pod(f"{rs0}-{name_suffix(5, seed, ns, name, 0, i)}", self._node_for(0, i),
                          "ReplicaSet", rs0, self.created, self.churn_at + 1, prestart_minutes=self._prestart(i))
                yield Pod(f"{rs1}-{name_suffix(5, seed, ns, name, 1, i)}", self._node_for(1, i),
                          "ReplicaSet", rs1, self.churn_at - 2, None)
            if self.hpa_max is not None:
                for extra in range(self.hpa_max - self.replicas):
                    a, b = self._hpa_window(extra)
                    for day in range(max(k_lo, 0) // DAY_MINUTES, k_hi // DAY_MINUTES + 1):
                        start, end = day * DAY_MINUTES + a, day * DAY_MINUTES + b
                        if start < self.created:
                            continue
                        suffix = name_suffix(5, seed, ns, name, "hpa", extra, day)
                        yield Pod(f"{rs0}-{suffix}", self._node_for("hpa", extra, day), "ReplicaSet", rs0,
                                  start, end)


# ---------------------------------------------------------------- per-container model


@dataclass
class ContainerRun:
    """Model arrays of one container in one pod over grid minutes ``[first, last]`` (inclusive)."""

    first: int
    last: int
    cpu_usage: np.ndarray  # cores, mean over the minute ending at k
    cpu_counter: np.ndarray  # container_cpu_usage_seconds_total
    memory: np.ndarray  # container_memory_working_set_bytes
    restarts: np.ndarray  # kube_pod_container_status_restarts_total (int)
    restart_minutes: list[int]  # grid minutes whose sample first shows a restarted (OOM-killed) container


@dataclass(frozen=True)
class Series:
    """One series over grid minutes ``[first, last]``: ``values`` is an array of that length or a constant."""

    metric: str
    labels: tuple[tuple[str, str], ...]  # sorted by name
    first: int
    last: int
    values: np.ndarray | float

    def value_at(self, k: int) -> float:
        if isinstance(self.values, float):
            return self.values
        return float(self.values[k - self.first])


def _sorted_labels(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if v != ""))


@dataclass
class World:
    """Everything that exists in the synthetic cluster, for one seed and history length."""

    seed: int
    history_minutes: int
    nodes: tuple[Node, ...]
    workloads: tuple[Workload, ...]

    # -- container model

    def container_run(self, w: Workload, pod: Pod, c: ContainerSpec, k_hi: int) -> ContainerRun | None:
        """The container's arrays from its pod's first minute up to ``min(k_hi, last running minute)``."""
        first = max(pod.start, 0)
        last = k_hi if pod.last_running is None else min(k_hi, pod.last_running)
        if last < first:
            return None
        k = np.arange(first, last + 1)
        key = stable_key(self.seed, w.namespace, pod.name, c.name)

        phase = (k % DAY_MINUTES) * (2.0 * np.pi / DAY_MINUTES)
        daily = -np.cos(phase)  # -1 at the day start, +1 at mid-day
        usage = c.cpu_mean * pod.load * (1.0 + c.cpu_diurnal * daily) * (1.0 + c.cpu_noise * normal(key ^ 1, k))
        if c.cpu_spike_rate > 0:
            slot = k // 10
            burst = uniform(key ^ 2, slot) < c.cpu_spike_rate
            usage = usage + burst * c.cpu_spike_mult * c.cpu_mean * (0.5 + uniform(key ^ 3, slot))
        usage = np.maximum(usage, 0.02 * c.cpu_mean)
        if c.cpu_limit is not None:
            usage = np.minimum(usage, c.cpu_limit)

        # OOM schedule: restarts every oom_period minutes, first one `offset` minutes after `first`.
        if c.oom_period > 0:
            period = c.oom_period
            offset = 1 + stable_key(key, "oom-phase") % period
            since = k - first - offset
            segment = np.where(since >= 0, since // period + 1, 0)  # restarts seen so far
            seg_start = np.where(segment > 0, first + offset + (segment - 1) * period, first)
            ramp = np.where(segment > 0, k - seg_start, k - first + (period - offset))
            restart_minutes = list(range(first + offset, last + 1, period))
        else:
            segment = np.zeros(k.shape, dtype=np.int64)
            seg_start = np.full(k.shape, first)
            ramp = None
            restart_minutes = []

        # Counter: per-segment running sum; the first segment continues the pre-history value.
        inc = GRID_SECONDS * usage
        total = np.cumsum(inc)
        rel = seg_start - first
        initial = c.cpu_mean * GRID_SECONDS * pod.prestart_minutes
        counter = np.where(segment > 0, total - total[rel] + inc[rel], total - total[0] + initial)

        mem_noise = 1.0 + c.mem_noise * normal(key ^ 4, k)
        if ramp is not None:
            top = c.oom_top
            memory = (c.mem_base * pod.load + (top - c.mem_base * pod.load) * ramp / c.oom_period) * mem_noise
            memory = np.minimum(memory, 0.995 * (c.mem_limit or top))
        else:
            memory = c.mem_base * pod.load * (1.0 + 0.04 * daily) * mem_noise
            if c.mem_limit is not None:
                memory = np.minimum(memory, 0.9 * c.mem_limit)
        memory = np.round(memory)
        return ContainerRun(first, last, usage, counter, memory, c.initial_restarts + segment, restart_minutes)

    # -- series

    def k8s_series(self, k_lo: int, k_hi: int) -> Iterator[Series]:
        """Every cAdvisor and kube-state-metrics series with a sample in ``[k_lo, k_hi]``, clipped to it."""
        yield from self._cluster_series(k_lo, k_hi)
        for w in self.workloads:
            yield from self._workload_series(w, k_lo, k_hi)
            for pod in w.pods_between(k_lo, k_hi):
                yield from self._pod_series(w, pod, k_lo, k_hi)

    def _cluster_series(self, k_lo: int, k_hi: int) -> Iterator[Series]:
        for ns, team in NAMESPACE_TEAMS.items():
            yield Series("kube_namespace_labels", _sorted_labels(namespace=ns, label_team=team, **dict(KSM_LABELS)),
                         k_lo, k_hi, 1.0)
        for node in self.nodes:
            for resource, unit, value in (("cpu", "core", node.cpu_cores), ("memory", "byte", node.memory_bytes)):
                yield Series("kube_node_status_allocatable",
                             _sorted_labels(node=node.name, resource=resource, unit=unit, **dict(KSM_LABELS)),
                             k_lo, k_hi, float(value))

    def _workload_series(self, w: Workload, k_lo: int, k_hi: int) -> Iterator[Series]:
        lo = max(k_lo, w.created)
        if lo > k_hi:
            return
        ksm = dict(KSM_LABELS)
        ns = w.namespace
        replicas = w.replicas_at(np.arange(lo, k_hi + 1)).astype(np.float64)
        if w.kind == "Deployment":
            for metric in ("kube_deployment_spec_replicas", "kube_deployment_status_replicas_available"):
                yield Series(metric, _sorted_labels(namespace=ns, deployment=w.name, **ksm), lo, k_hi, replicas)
            for rs, since in w.replicasets():
                rs_lo = max(lo, since)
                if rs_lo <= k_hi:
                    yield Series("kube_replicaset_owner",
                                 _sorted_labels(namespace=ns, replicaset=rs, owner_kind="Deployment",
                                                owner_name=w.name, owner_is_controller="true", **ksm),
                                 rs_lo, k_hi, 1.0)
        elif w.kind == "StatefulSet":
            for metric in ("kube_statefulset_replicas", "kube_statefulset_status_replicas_ready"):
                yield Series(metric, _sorted_labels(namespace=ns, statefulset=w.name, **ksm), lo, k_hi, replicas)
        elif w.kind == "DaemonSet":
            for metric in ("kube_daemonset_status_desired_number_scheduled", "kube_daemonset_status_number_ready"):
                yield Series(metric, _sorted_labels(namespace=ns, daemonset=w.name, **ksm), lo, k_hi, replicas)
        elif w.kind == "Job":
            k = np.arange(lo, k_hi + 1)
            done = (k >= w.completes_at) if w.completes_at is not None else np.zeros(k.shape, bool)
            labels = _sorted_labels(namespace=ns, job_name=w.name, **ksm)
            yield Series("kube_job_status_active", labels, lo, k_hi, (~done).astype(np.float64))
            if w.run_minutes:  # completions so far
                ends = np.array([p.run_end for p in w.pods_between(lo, k_hi) if p.run_end is not None])
                done_runs = (ends[None, :] <= k[:, None]).sum(axis=1) if len(ends) else np.zeros(k.shape)
                yield Series("kube_job_status_succeeded", labels, lo, k_hi, done_runs.astype(np.float64))
            else:
                yield Series("kube_job_status_succeeded", labels, lo, k_hi, done.astype(np.float64))
        if w.hpa_max is not None:
            hpa = dict(namespace=ns, horizontalpodautoscaler=w.name, **ksm)
            yield Series("kube_horizontalpodautoscaler_info",
                         _sorted_labels(scaletargetref_api_version="apps/v1", scaletargetref_kind=w.kind,
                                        scaletargetref_name=w.name, **hpa), lo, k_hi, 1.0)
            yield Series("kube_horizontalpodautoscaler_spec_min_replicas", _sorted_labels(**hpa), lo, k_hi,
                         float(w.replicas))
            yield Series("kube_horizontalpodautoscaler_spec_max_replicas", _sorted_labels(**hpa), lo, k_hi,
                         float(w.hpa_max))
            for metric in ("kube_horizontalpodautoscaler_status_current_replicas",
                           "kube_horizontalpodautoscaler_status_desired_replicas"):
                yield Series(metric, _sorted_labels(**hpa), lo, k_hi, replicas)

    def _pod_series(self, w: Workload, pod: Pod, k_lo: int, k_hi: int) -> Iterator[Series]:
        lo = max(k_lo, pod.start, 0)
        hi = k_hi if pod.end is None else min(k_hi, pod.end - 1)
        if lo > hi:
            return
        ns, node = w.namespace, pod.node
        ksm = dict(KSM_LABELS)
        kubelet = dict(KUBELET_LABELS, instance=f"{node.ip}:10250", namespace=ns, node=node.name, pod=pod.name)
        pod_ksm = dict(namespace=ns, pod=pod.name, **ksm)

        yield Series("kube_pod_info", _sorted_labels(node=node.name, host_ip=node.ip, created_by_kind=pod.owner_kind,
                                                     created_by_name=pod.owner_name, **pod_ksm), lo, hi, 1.0)
        yield Series("kube_pod_owner", _sorted_labels(owner_kind=pod.owner_kind, owner_name=pod.owner_name,
                                                      owner_is_controller="true", **pod_ksm), lo, hi, 1.0)
        k = np.arange(lo, hi + 1)
        succeeded = (k >= pod.run_end) if pod.run_end is not None else np.zeros(k.shape, bool)
        for phase in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
            if phase == "Running":
                values: np.ndarray | float = (~succeeded).astype(np.float64)
            elif phase == "Succeeded":
                values = succeeded.astype(np.float64)
            else:
                values = 0.0
            yield Series("kube_pod_status_phase", _sorted_labels(phase=phase, **pod_ksm), lo, hi, values)

        # The pod cgroup (no container label) sums its containers and never resets on a container restart.
        pod_run: ContainerRun | None = None
        pod_usage: np.ndarray | None = None
        pod_memory: np.ndarray | None = None
        pod_initial = 0.0
        for c in w.containers:
            cont_ksm = dict(container=c.name, **pod_ksm)
            yield Series("kube_pod_container_info", _sorted_labels(image=c.image, **cont_ksm), lo, hi, 1.0)
            for metric, cpu, mem in (("kube_pod_container_resource_requests", c.cpu_request, c.mem_request),
                                     ("kube_pod_container_resource_limits", c.cpu_limit, c.mem_limit)):
                if cpu is not None:
                    yield Series(metric, _sorted_labels(node=node.name, resource="cpu", unit="core", **cont_ksm),
                                 lo, hi, float(cpu))
                if mem is not None:
                    yield Series(metric, _sorted_labels(node=node.name, resource="memory", unit="byte", **cont_ksm),
                                 lo, hi, float(mem))

            run = self.container_run(w, pod, c, hi)
            restarts = np.full(k.shape, float(c.initial_restarts))
            if run is not None:
                # restarts keep their last value after the containers stop (completed Job)
                seen = np.minimum(k, run.last) - run.first
                restarts = run.restarts[np.maximum(seen, 0)].astype(np.float64)
            yield Series("kube_pod_container_status_restarts_total", _sorted_labels(**cont_ksm), lo, hi, restarts)
            reason_since: int | None = None
            reason = c.initial_reason
            if run is not None and run.restart_minutes:
                reason, reason_since = "OOMKilled", run.restart_minutes[0]
            elif reason is not None:
                reason_since = lo
            if reason is not None and reason_since is not None and max(lo, reason_since) <= hi:
                yield Series("kube_pod_container_status_last_terminated_reason",
                             _sorted_labels(reason=reason, **cont_ksm), max(lo, reason_since), hi, 1.0)

            if run is None or run.last < lo:
                continue
            s = max(lo, run.first) - run.first
            yield Series("container_cpu_usage_seconds_total", _sorted_labels(container=c.name, **kubelet),
                         run.first + s, run.last, run.cpu_counter[s:])
            yield Series("container_memory_working_set_bytes", _sorted_labels(container=c.name, **kubelet),
                         run.first + s, run.last, run.memory[s:])
            pod_run = run  # every container of a pod runs over the same minutes
            pod_usage = run.cpu_usage if pod_usage is None else pod_usage + run.cpu_usage
            pod_memory = run.memory if pod_memory is None else pod_memory + run.memory
            pod_initial += c.cpu_mean * GRID_SECONDS * pod.prestart_minutes

        if pod_run is not None and pod_usage is not None and pod_memory is not None:
            s = max(lo, pod_run.first) - pod_run.first
            counter = pod_initial + np.concatenate([[0.0], np.cumsum(GRID_SECONDS * pod_usage[1:])])
            yield Series("container_cpu_usage_seconds_total", _sorted_labels(**kubelet),
                         pod_run.first + s, pod_run.last, counter[s:])
            yield Series("container_memory_working_set_bytes", _sorted_labels(**kubelet),
                         pod_run.first + s, pod_run.last, pod_memory[s:] + MIB)  # + pause container


# ---------------------------------------------------------------- building the world

# (namespace, kind, name, profile, replicas, hpa_max, sidecar, flags)
# flags: "churn" (rollout mid-history), "completes" (Job finished mid-history), "error" (old non-OOM restart),
# "runs" (a Job of many completions: RUN_MINUTES-long runs one after another)
_TEMPLATES: tuple[tuple[str, str, str, str, int, int | None, bool, str], ...] = (
    ("checkout", "Deployment", "checkout-api", "over_provisioned_cpu", 1, None, False, ""),
    ("checkout", "Deployment", "checkout-worker", "oom_killed", 2, None, False, ""),
    ("checkout", "Deployment", "cart-service", "hpa_managed", 2, 6, True, ""),
    ("checkout", "Deployment", "checkout-frontend", "well_sized", 2, None, False, ""),
    ("checkout", "Deployment", "promo-engine", "spiky_cpu", 1, None, False, ""),
    ("checkout", "Deployment", "order-events-consumer", "over_provisioned_memory", 2, None, False, ""),
    ("checkout", "StatefulSet", "checkout-redis", "well_sized", 1, None, False, ""),
    ("payments", "Deployment", "payments-api", "hpa_managed", 3, 8, True, ""),
    ("payments", "Deployment", "payments-gateway", "under_provisioned_cpu", 2, None, False, ""),
    ("payments", "Deployment", "fraud-scorer", "spiky_cpu", 2, None, False, ""),
    ("payments", "StatefulSet", "ledger-db", "over_provisioned_memory", 3, None, False, ""),
    ("payments", "Job", "ledger-reconcile", "well_sized", 1, None, False, "completes"),
    ("payments", "Deployment", "invoice-renderer", "no_requests", 1, None, False, ""),
    ("payments", "Job", "payouts-batch", "over_provisioned_cpu", 1, None, False, ""),
    ("payments", "Deployment", "refunds-api", "short_history", 2, None, False, ""),
    ("catalog", "Deployment", "catalog-api", "over_provisioned_cpu", 3, None, True, "churn"),
    ("catalog", "Deployment", "catalog-importer", "oom_killed", 1, None, False, ""),
    ("catalog", "Deployment", "image-resizer", "spiky_cpu", 2, None, False, ""),
    ("catalog", "StatefulSet", "catalog-db", "well_sized", 2, None, False, ""),
    ("catalog", "Deployment", "pricing-service", "over_provisioned_memory", 2, None, False, "churn"),
    ("catalog", "Deployment", "inventory-sync", "well_sized", 1, None, False, "error"),
    ("catalog", "StatefulSet", "catalog-cache", "no_requests", 2, None, False, ""),
    ("search", "Deployment", "search-api", "hpa_managed", 2, 5, False, ""),
    ("search", "StatefulSet", "search-indexer", "over_provisioned_memory", 2, None, False, ""),
    ("search", "Deployment", "query-suggest", "over_provisioned_cpu", 2, None, False, ""),
    ("search", "StatefulSet", "elasticsearch", "well_sized", 3, None, False, ""),
    ("search", "Deployment", "search-ranker", "under_provisioned_cpu", 1, None, False, ""),
    ("search", "Job", "synonym-loader", "short_history", 1, None, False, ""),
    ("search", "Deployment", "search-frontend", "short_history", 1, None, False, ""),
    ("data-pipeline", "StatefulSet", "kafka", "well_sized", 3, None, False, ""),
    ("data-pipeline", "StatefulSet", "zookeeper", "over_provisioned_cpu", 3, None, False, ""),
    ("data-pipeline", "Deployment", "etl-runner", "spiky_cpu", 2, None, False, ""),
    ("data-pipeline", "Deployment", "events-enricher", "oom_killed", 2, None, False, ""),
    ("data-pipeline", "Deployment", "spark-history", "over_provisioned_memory", 1, None, False, ""),
    ("data-pipeline", "Job", "nightly-aggregation", "spiky_cpu", 1, None, False, "completes"),
    ("data-pipeline", "Deployment", "schema-registry", "no_requests", 1, None, False, ""),
    ("data-pipeline", "Deployment", "airbyte-worker", "over_provisioned_cpu", 1, None, False, ""),
    ("monitoring", "StatefulSet", "prometheus-k8s", "over_provisioned_memory", 1, None, True, ""),
    ("monitoring", "Deployment", "grafana", "over_provisioned_cpu", 1, None, False, ""),
    ("monitoring", "StatefulSet", "alertmanager", "over_provisioned_memory", 2, None, False, ""),
    ("monitoring", "DaemonSet", "node-exporter", "well_sized", 1, None, False, ""),
    ("monitoring", "Deployment", "kube-state-metrics", "well_sized", 1, None, False, ""),
    ("monitoring", "StatefulSet", "loki", "spiky_cpu", 1, None, False, ""),
    ("monitoring", "DaemonSet", "promtail", "no_requests", 1, None, False, ""),
    ("kube-system", "Deployment", "coredns", "well_sized", 2, None, False, ""),
    ("kube-system", "DaemonSet", "kube-proxy", "over_provisioned_cpu", 1, None, False, ""),
    ("kube-system", "DaemonSet", "aws-node", "well_sized", 1, None, False, ""),
    ("kube-system", "Deployment", "metrics-server", "over_provisioned_memory", 1, None, False, ""),
    ("kube-system", "Deployment", "cluster-autoscaler", "no_requests", 1, None, False, ""),
    ("kube-system", "DaemonSet", "ebs-csi-node", "well_sized", 1, None, True, ""),
    # Appended last: the random draws of the workloads above stay the same.
    ("data-pipeline", "Job", "feature-backfill", "over_provisioned_cpu", 1, None, False, "runs"),
)
RUN_MINUTES = 180

_CPU_REQUESTS = (0.1, 0.25, 0.5, 1.0, 2.0)
_MEM_REQUESTS = tuple(m * MIB for m in (256, 512, 1024, 2048, 4096))


def _main_container(rng: np.random.Generator, ns: str, name: str, profile: str, flags: str) -> ContainerSpec:
    """The workload's main container, sized and loaded according to its profile."""
    cpu_req = float(rng.choice(_CPU_REQUESTS[1:]))
    mem_req = int(rng.choice(_MEM_REQUESTS[:4]))
    image = f"registry.traceo.dev/{ns}/{name}:1.{int(rng.integers(0, 30))}.{int(rng.integers(0, 10))}"
    cpu_limit: float | None = None if rng.random() < 0.5 else cpu_req * 2
    mem_limit: int | None = mem_req
    cpu_util = rng.uniform(0.45, 0.6)  # mean usage / request for well-sized containers
    mem_util = rng.uniform(0.6, 0.75)
    cpu_noise, diurnal = rng.uniform(0.15, 0.3), rng.uniform(0.2, 0.4)
    spike_rate = spike_mult = 0.0
    oom_period = 0
    if profile == "over_provisioned_cpu":
        cpu_req = float(rng.choice((1.0, 2.0)))
        cpu_limit = None if cpu_limit is None else cpu_req * 2
        cpu_util = rng.uniform(0.06, 0.15)
    elif profile == "over_provisioned_memory":
        mem_req = int(rng.choice(_MEM_REQUESTS[2:]))
        mem_limit = mem_req
        mem_util = rng.uniform(0.12, 0.25)
    elif profile == "oom_killed":
        mem_req = int(rng.choice(_MEM_REQUESTS[:2]))
        mem_limit = mem_req
        mem_util = rng.uniform(0.35, 0.5)
        oom_period = int(rng.integers(700, 1500))
    elif profile == "spiky_cpu":
        cpu_util = rng.uniform(0.12, 0.2)
        spike_rate = rng.uniform(0.03, 0.06)
        spike_mult = rng.uniform(4.0, 7.0)
        cpu_limit = cpu_req * 3
    elif profile == "under_provisioned_cpu":
        cpu_util = rng.uniform(1.2, 1.5)
        cpu_limit = None
    elif profile == "hpa_managed":
        cpu_util = rng.uniform(0.55, 0.7)
    mem_base = mem_util * mem_req
    cpu_mean = cpu_util * cpu_req
    if profile == "no_requests":
        cpu_req, cpu_limit, mem_req, mem_limit = 0.0, None, 0, None
    return ContainerSpec(
        name=name.split("-")[0] if name.startswith(("kafka", "zookeeper", "elasticsearch", "loki")) else "app",
        image=image,
        cpu_request=cpu_req or None, cpu_limit=cpu_limit, mem_request=mem_req or None, mem_limit=mem_limit,
        cpu_mean=round(cpu_mean, 4), cpu_diurnal=round(diurnal, 3), cpu_noise=round(cpu_noise, 3),
        cpu_spike_rate=round(spike_rate, 4), cpu_spike_mult=round(spike_mult, 3),
        mem_base=float(round(mem_base)), mem_noise=0.015, oom_period=oom_period,
        initial_restarts=1 if "error" in flags else 0, initial_reason="Error" if "error" in flags else None,
    )


def _sidecar(rng: np.random.Generator, profile: str) -> ContainerSpec:
    no_req = profile == "no_requests"
    return ContainerSpec(
        name="envoy", image="envoyproxy/envoy:v1.31.2",
        cpu_request=None if no_req else 0.1, cpu_limit=None if no_req else 0.5,
        mem_request=None if no_req else 128 * MIB, mem_limit=None if no_req else 256 * MIB,
        cpu_mean=round(float(rng.uniform(0.03, 0.06)), 4), cpu_diurnal=0.3, cpu_noise=0.2,
        cpu_spike_rate=0.0, cpu_spike_mult=0.0, mem_base=float(round(rng.uniform(60, 90) * MIB)), mem_noise=0.01,
    )


def build_world(seed: int = 42, history_minutes: int = 4 * DAY_MINUTES) -> World:
    """The world for ``seed``: same seed, same names, sizes and model parameters."""
    rng = np.random.default_rng(seed)
    nodes = tuple(Node(f"worker-{i}", f"10.0.1.{10 + i}", 8.0, 32 * GIB) for i in range(1, 5))
    workloads = []
    for ns, kind, name, profile, replicas, hpa_max, sidecar, flags in _TEMPLATES:
        containers = [_main_container(rng, ns, name, profile, flags)]
        if sidecar:
            containers.append(_sidecar(rng, profile))
        created = history_minutes - SHORT_HISTORY_MINUTES if profile == "short_history" else 0
        churn_at = int(history_minutes * rng.uniform(0.4, 0.7)) if "churn" in flags else None
        completes_at = int(history_minutes * rng.uniform(0.3, 0.6)) if "completes" in flags else None
        run_minutes = RUN_MINUTES if "runs" in flags else None
        workloads.append(Workload(
            namespace=ns, team=NAMESPACE_TEAMS[ns], kind=kind, name=name, profile=profile,
            containers=tuple(containers), replicas=replicas, hpa_max=hpa_max, created=created,
            churn_at=churn_at, completes_at=completes_at, run_minutes=run_minutes, nodes=nodes, seed=seed,
        ))
    return World(seed=seed, history_minutes=history_minutes, nodes=nodes, workloads=tuple(workloads))
