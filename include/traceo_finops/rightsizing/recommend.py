"""The recommender: requests from usage statistics, a VPA-style confidence, the statuses and dollars. Pure.

Per container of a workload (figures are the max across its replicas):

- CPU request = the chosen percentile of the 5-minute CPU rate (default p95) × (1 + ``cpu_margin``), at least
  ``min_cpu_cores``, rounded up to 5m. A CPU limit is kept as it is unless the new request would pass it
  (the API server refuses request > limit): then it keeps its old limit/request ratio above the new request.
- Memory request = limit = max(peak working set × (1 + ``memory_margin``), memory limit at the last OOM kill
  × ``oom_bump``), at least ``min_memory_mib``, rounded up to 4 MiB.
- Confidence (as the VPA recommender's): days of history × sample coverage; ``confidence`` = d / (d + 1), the
  inverse of the VPA's upper-bound factor 1 + 1/d (0.5 after a day, 0.875 after a week). Days of history =
  the pods' summed lifetimes in the window / the workload's average replicas (a rollout or an HPA does not
  shorten it; a workload created six hours ago has 0.25 days), at most the window.
- Batch workloads (Jobs, CronJobs): each pod is a *run* of one task, not a replica. Each CPU percentile is
  that percentile, over the runs' running time, of the runs' own percentile (the request covers the chosen
  percentile for 95 % of the time the job runs; a rare heavier run is throttled, not killed); memory is the
  largest run's peak (a run over its limit is OOM-killed and retried). A run counts as a day of evidence:
  with n runs, n / (n + 1) is the chance that the next run stays within the largest of the n seen (the
  same d / (d + 1) form); a batch workload has enough data with ``min_runs`` runs or ``min_history`` days.
- Statuses: every one that applies, in this order; the first is the row's ``status``: ``insufficient data``
  (too little evidence, or no samples) › ``no requests set`` › ``HPA-managed`` (flagged; the per-pod figure is
  still given) › ``under-provisioned`` (OOM-killed, or a recommendation more than ``tolerance`` above its
  request) › ``over-provisioned`` (more than ``tolerance`` below; CPU over and memory under is both) ›
  ``ok`` (both requests set and within ``tolerance``).
- Dollars per month = (CPU cores × $/vCPU-hour + memory GiB × $/GiB-hour) × replicas × 730. The saving is
  what applying the recommendation would save (negative: what fixing under-provisioning or missing requests
  costs); rows where nothing is proposed (ok, insufficient data, HPA-managed: the HPA would change the
  replica count instead) save 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from traceo_finops.pricing import HOURS_PER_MONTH, PriceTable
from traceo_finops.rightsizing.model import BATCH_KINDS, ContainerUsage, Run
from traceo_finops.rightsizing.queries import quantile_key

if TYPE_CHECKING:
    from traceo_finops.config import RightsizingSettings

MIB = 2**20
GIB = 2**30
CPU_ROUND = 0.005  # 5m
MEMORY_ROUND = 4 * MIB


class Status(StrEnum):
    OVER = "over-provisioned"
    UNDER = "under-provisioned"
    OK = "ok"
    INSUFFICIENT = "insufficient data"
    HPA = "HPA-managed"
    NO_REQUESTS = "no requests set"


# The order statuses are listed in; the first that applies is the row's status.
PRECEDENCE = (Status.INSUFFICIENT, Status.NO_REQUESTS, Status.HPA, Status.UNDER, Status.OVER, Status.OK)
# Rows whose recommendation is proposed as a change (a patch) and priced as a saving.
ACTIONABLE = (Status.OVER, Status.UNDER, Status.NO_REQUESTS)
DEFAULT_MIN_RUNS = 3


@dataclass(frozen=True)
class Policy:
    cpu_percentile: float = 0.95
    cpu_margin: float = 0.15
    memory_margin: float = 0.15
    oom_bump: float = 1.2
    min_cpu_cores: float = 0.010
    min_memory_bytes: float = 64 * MIB
    min_history_days: float = 1.0
    tolerance: float = 0.3
    min_runs: int = DEFAULT_MIN_RUNS  # batch workloads: runs that are enough evidence (or min_history_days)

    @classmethod
    def from_settings(cls, settings: RightsizingSettings) -> Policy:
        """From ``workflows.rightsizing`` of the configuration."""
        return cls(settings.cpu_percentile, settings.cpu_margin, settings.memory_margin, settings.oom_bump,
                   settings.min_cpu_cores, settings.min_memory_mib * MIB,
                   settings.min_history.total_seconds() / 86400, settings.tolerance,
                   int(settings.min_runs))


@dataclass(frozen=True)
class Prices:
    vcpu_hour: float
    gib_hour: float

    @classmethod
    def from_table(cls, table: PriceTable) -> Prices:
        return cls(table.vcpu_hour, table.gib_hour)


@dataclass(frozen=True)
class Confidence:
    history_days: float
    coverage: float
    days: float  # history × coverage: the VPA recommender's confidence (batch workloads: at least their runs)
    score: float  # days / (days + 1)
    runs: int | None = None  # batch workloads: pods that ran
    sample_days: float | None = None  # history × coverage alone (what ``days`` is for other workloads)


@dataclass(frozen=True)
class Recommendation:
    cpu_request: float | None
    cpu_limit: float | None
    memory_request: float | None
    memory_limit: float | None
    cpu_baseline: float | None  # the percentile the CPU request is built on
    memory_baseline: float | None  # the peak the memory request is built on
    confidence: Confidence
    status: Status  # the first of ``statuses``
    reason: str
    statuses: tuple[Status, ...] = ()
    cpu: dict[str, float] = field(default_factory=dict)  # the CPU figures behind it (batch: from the runs)


def round_cpu(cores: float) -> float:
    """Up to the next 5 millicores."""
    return round(math.ceil(round(cores / CPU_ROUND, 9)) * CPU_ROUND, 3)


def round_memory(nbytes: float) -> float:
    """Up to the next 4 MiB."""
    return float(math.ceil(round(nbytes / MEMORY_ROUND, 9)) * MEMORY_ROUND)


def confidence(history_seconds: float | None, points: int, expected_samples: float) -> Confidence:
    """Days of history (calendar time the container was observed) discounted by the share of expected samples."""
    if not history_seconds or points <= 0:
        return Confidence(0.0, 0.0, 0.0, 0.0)
    days = max(0.0, history_seconds) / 86400
    coverage = min(1.0, points / expected_samples) if expected_samples > 0 else 0.0
    d = days * coverage
    return Confidence(days, coverage, d, d / (d + 1))


def with_runs(conf: Confidence, runs: int) -> Confidence:
    """A batch workload's confidence: a run counts as a day, n / (n + 1) being the chance that the next run
    stays within the largest of the n seen (for runs alike, the rank of the next among n + 1 is uniform)."""
    d = max(conf.days, float(runs))
    return Confidence(conf.history_days, conf.coverage, d, d / (d + 1), runs, conf.days)


def quantile_of(key: str) -> float | None:
    """The quantile a column-style key names (``p95`` -> 0.95, ``p99_9`` -> 0.999); None for ``max``."""
    if not key.startswith("p"):
        return None
    try:
        q = float(key[1:].replace("_", ".")) / 100
    except ValueError:
        return None
    return q if 0 < q <= 1 else None


def weighted_quantile(pairs: Iterable[tuple[float, float]], q: float) -> float | None:
    """The smallest value whose cumulative weight reaches ``q`` of the total (values are not interpolated:
    the answer is a figure one run really had); None without positive weights."""
    ordered = sorted((v, w) for v, w in pairs if w > 0)
    total = sum(w for _, w in ordered)
    if not ordered:
        return None
    acc = 0.0
    for value, weight in ordered:
        acc += weight
        if acc >= q * total * (1 - 1e-12):
            return value
    return ordered[-1][0]


def run_cpu(runs: Sequence[Run]) -> dict[str, float]:
    """A batch workload's CPU figures from its runs: ``pXX`` = the XX-th percentile, weighted by running time,
    of the runs' own ``pXX``; ``max`` = the largest run's max."""
    out: dict[str, float] = {}
    for key in sorted({k for r in runs for k in r.cpu}):
        values = [(r.cpu[key], r.seconds) for r in runs if key in r.cpu]
        q = quantile_of(key)
        figure = max(v for v, _ in values) if q is None else weighted_quantile(values, q)
        if figure is not None:
            out[key] = figure
    return out


def recommend(usage: ContainerUsage, policy: Policy, hpa: str | None = None) -> Recommendation:
    """The recommendation of one workload container."""
    conf = confidence(usage.history_seconds, usage.cpu_samples, usage.expected_samples)
    batch = usage.kind in BATCH_KINDS
    runs = [r for r in usage.runs if r.cpu and r.seconds > 0] if batch else []
    if batch:
        conf = with_runs(conf, len(runs))
    # Batch workloads collected without runs (pieces of an older collector) keep the max across pods.
    cpu_stats = run_cpu(runs) if runs else dict(usage.cpu)
    cpu_base = cpu_stats.get(quantile_key(policy.cpu_percentile))
    mem_base = usage.memory_peak
    cpu = mem = cpu_limit = None
    notes: list[str] = []
    if cpu_base is not None:
        cpu = round_cpu(max(cpu_base * (1 + policy.cpu_margin), policy.min_cpu_cores))
        cpu_limit = usage.cpu_limit
        if cpu_limit is not None and cpu > cpu_limit:
            ratio = cpu_limit / usage.cpu_request if usage.cpu_request else 1.0
            cpu_limit = round_cpu(cpu * max(1.0, ratio))
            notes.append("CPU limit raised above the new request")
    if mem_base is not None:
        mem = mem_base * (1 + policy.memory_margin)
        if usage.oom_killed and usage.last_oom_limit:
            bumped = usage.last_oom_limit * policy.oom_bump
            if bumped > mem:
                mem = bumped
                notes.append(f"OOM-killed: memory from the limit at the kill × {policy.oom_bump:g}")
        mem = round_memory(max(mem, policy.min_memory_bytes))

    sample_days = conf.days if conf.sample_days is None else conf.sample_days
    enough = sample_days >= policy.min_history_days or (batch and len(runs) >= policy.min_runs)
    statuses: list[Status] = []
    head: list[str] = []  # notes that explain the statuses, in their order
    if cpu is None or mem is None:
        statuses.append(Status.INSUFFICIENT)
        head.append(f"no usage samples: none of its {_count(len(usage.pods), 'pod')} ran in the window (no "
                    "container samples: a pod without a start time never started)" if batch and usage.pods and not runs
                    else "no usage samples")
    elif not enough:
        statuses.append(Status.INSUFFICIENT)
        needs = f"{policy.min_history_days:g} days" + (f" or {policy.min_runs} runs" if batch else "")
        runs_text = f", {_count(len(runs), 'run')}" if batch else ""
        head.append(f"{conf.history_days:.2f} days of history at {conf.coverage:.0%} coverage{runs_text} "
                    f"(needs {needs})")
    # A request of 0 reserves nothing: it is missing as much as an unset one (and no ratio can be taken).
    missing = [r for r, v in (("cpu", usage.cpu_request), ("memory", usage.memory_request)) if not v]
    if missing:
        statuses.append(Status.NO_REQUESTS)
        head.append(f"no {' and '.join(missing)} request")
    if hpa:
        statuses.append(Status.HPA)
        head.append(f"scaled by HPA {hpa}: new requests change its scaling, not the cost")
    tol = policy.tolerance
    ratios = {name: new / now for name, new, now in (("cpu", cpu, usage.cpu_request),
                                                      ("memory", mem, usage.memory_request))
              if new is not None and now}
    under = usage.oom_killed or any(r > 1 + tol for r in ratios.values())
    over = any(r < 1 - tol for r in ratios.values())
    if under:
        statuses.append(Status.UNDER)
        if usage.oom_killed:
            head.append("OOM-killed in the history")
    if over:
        statuses.append(Status.OVER)
    if not under and not over and not missing and len(ratios) == 2:
        statuses.append(Status.OK)
    if ratios:
        head.append("recommended/current: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    if batch and runs:
        never = len(set(usage.pods) - {r.pod for r in runs})
        head.append(f"sized from {_count(len(runs), 'run')}"
                    + (f" ({_count(never, 'more pod')} never ran)" if never else ""))
    statuses.sort(key=PRECEDENCE.index)
    return Recommendation(cpu, cpu_limit, mem, mem if mem is not None else None, cpu_base, mem_base, conf,
                          statuses[0], "; ".join(head + notes), tuple(statuses), cpu_stats)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def monthly_cost(cpu_cores: float | None, memory_bytes: float | None, replicas: float, prices: Prices) -> float:
    """What the requests reserve per month: (cores × $/vCPU-h + GiB × $/GiB-h) × replicas × 730."""
    hourly = (cpu_cores or 0.0) * prices.vcpu_hour + (memory_bytes or 0.0) / GIB * prices.gib_hour
    return hourly * replicas * HOURS_PER_MONTH


def costs(usage: ContainerUsage, rec: Recommendation, replicas: float, prices: Prices) -> tuple[float, float, float]:
    """(monthly cost now, after, saving), rounded to 1/100 cent; saving = now - after exactly."""
    now = round(monthly_cost(usage.cpu_request, usage.memory_request, replicas, prices), 4)
    after = now
    if rec.status in ACTIONABLE:
        after = round(monthly_cost(rec.cpu_request, rec.memory_request, replicas, prices), 4)
    return now, after, round(now - after, 4)
