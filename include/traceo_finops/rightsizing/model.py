"""What discovery and usage queries learn about a workload's containers, in mergeable pieces.

A namespace may be split over several batches (by pods), so a workload's pods can be seen by different
tasks: every figure of :class:`ContainerUsage` merges by max, min or sum, and :func:`merge` folds the pieces
of all batches into one record per workload container. Plain dicts in and out (Airflow XCom).

Batch workloads (Jobs, CronJobs) also keep one :class:`Run` per pod that ran: each pod of a Job or CronJob is
one run of the same task, and the recommender sizes them from the distribution of their runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Workload kinds as the report names them.
DEPLOYMENT, STATEFULSET, DAEMONSET, JOB, CRONJOB, REPLICASET, POD, PROCESS = (
    "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod", "Process")
# Kinds whose replica count comes from a kube-state-metrics spec series.
REPLICA_LABELS = {"deployment": DEPLOYMENT, "statefulset": STATEFULSET, "daemonset": DAEMONSET,
                  "job_name": JOB}
# Kinds whose pods are runs of one task (repeated observations of it), not replicas serving together.
BATCH_KINDS = (JOB, CRONJOB)


@dataclass
class Run:
    """One pod of a batch workload that ran in the window: its own CPU statistics and memory peak."""

    pod: str
    cpu: dict[str, float]  # p50, p90, p95, p99, …, max of this run's CPU rate
    cpu_samples: int  # samples of its CPU counter
    seconds: float  # running time in the window: CPU samples × scrape interval (cAdvisor samples running containers)
    memory_peak: float | None = None


@dataclass
class ContainerUsage:
    """One container of one workload, as far as one batch saw it (sizes in cores and bytes, times in seconds)."""

    namespace: str
    kind: str
    name: str
    container: str
    pods: list[str] = field(default_factory=list)
    alive_pods: int = 0  # pods with this container that exist at the window end
    cpu: dict[str, float] = field(default_factory=dict)  # p50, p90, p95, p99, …, max: max over the pods
    cpu_samples: int = 0  # samples of the CPU counter in the window, summed over the pods
    expected_samples: float = 0.0  # samples the pods' lifetimes allow at the scrape interval
    pod_seconds: float = 0.0  # the pods' lifetimes in the window, summed
    memory_peak: float | None = None
    memory_p99: float | None = None
    cpu_request: float | None = None
    cpu_limit: float | None = None
    memory_request: float | None = None
    memory_limit: float | None = None
    requests_alive: bool = False  # the requests are those of a pod that exists at the window end
    restarts: int = 0
    oom_killed: bool = False
    last_oom_limit: float | None = None
    # Batch workloads: one entry per pod with CPU samples (pods that never ran — no start time — have none).
    runs: list[Run] = field(default_factory=list)
    # Set when the report is built (needs the workload's replicas): calendar time the container was observed.
    history_seconds: float | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.namespace, self.kind, self.name, self.container)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContainerUsage:
        known = {f.name for f in fields(cls)}
        out = cls(**{k: v for k, v in data.items() if k in known})
        out.runs = [r if isinstance(r, Run) else Run(**r) for r in out.runs]
        return out

    def absorb(self, other: ContainerUsage) -> None:
        """Fold another piece of the same workload container into this one."""
        self.pods = sorted(set(self.pods) | set(other.pods))
        self.alive_pods += other.alive_pods
        for k, v in other.cpu.items():
            self.cpu[k] = max(self.cpu.get(k, v), v)
        self.cpu_samples += other.cpu_samples
        self.expected_samples += other.expected_samples
        self.pod_seconds += other.pod_seconds
        self.memory_peak = _max(self.memory_peak, other.memory_peak)
        self.memory_p99 = _max(self.memory_p99, other.memory_p99)
        # Requests: those of the running pods (the newest template) win; among equals, the larger.
        if other.requests_alive and not self.requests_alive:
            self.cpu_request, self.cpu_limit = other.cpu_request, other.cpu_limit
            self.memory_request, self.memory_limit = other.memory_request, other.memory_limit
            self.requests_alive = True
        elif other.requests_alive == self.requests_alive:
            self.cpu_request = _max(self.cpu_request, other.cpu_request)
            self.cpu_limit = _max(self.cpu_limit, other.cpu_limit)
            self.memory_request = _max(self.memory_request, other.memory_request)
            self.memory_limit = _max(self.memory_limit, other.memory_limit)
        self.restarts += other.restarts
        self.oom_killed = self.oom_killed or other.oom_killed
        self.last_oom_limit = _max(self.last_oom_limit, other.last_oom_limit)
        # Runs are pods: the same pod seen twice is one run.
        runs = {r.pod: r for r in self.runs}
        runs.update({r.pod: r for r in other.runs if r.pod not in runs})
        self.runs = sorted(runs.values(), key=lambda r: r.pod)


@dataclass
class WorkloadInfo:
    """Workload-level facts: replicas now, their average over the window, the HPA that scales it."""

    namespace: str
    kind: str
    name: str
    replicas: int | None = None  # desired replicas at the window end (Jobs: active pods)
    avg_replicas: float | None = None  # over the window (Jobs: active pods integrated over the whole window)
    hpa: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.namespace, self.kind, self.name)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def absorb(self, other: WorkloadInfo) -> None:
        self.replicas = self.replicas if self.replicas is not None else other.replicas
        self.avg_replicas = self.avg_replicas if self.avg_replicas is not None else other.avg_replicas
        self.hpa = self.hpa or other.hpa


def merge(pieces: Iterable[dict[str, Any]]) -> tuple[list[ContainerUsage], dict[tuple[str, str, str], WorkloadInfo]]:
    """Fold the outputs of every batch (``{"containers": […], "workloads": […]}``) into one view."""
    containers: dict[tuple[str, str, str, str], ContainerUsage] = {}
    workloads: dict[tuple[str, str, str], WorkloadInfo] = {}
    for piece in pieces:
        for raw in piece.get("containers", []):
            c = ContainerUsage.from_dict(raw)
            if c.key in containers:
                containers[c.key].absorb(c)
            else:
                containers[c.key] = c
        for raw in piece.get("workloads", []):
            w = WorkloadInfo(**raw)
            if w.key in workloads:
                workloads[w.key].absorb(w)
            else:
                workloads[w.key] = w
    return sorted(containers.values(), key=lambda c: c.key), workloads


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)
