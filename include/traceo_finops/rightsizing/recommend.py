"""The recommender: requests from usage statistics, a VPA-style confidence, a status and dollars. Pure.

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
- Status: ``insufficient data`` (confidence below ``min_history`` or no samples) › ``no requests set`` ›
  ``HPA-managed`` (flagged; the per-pod figure is still given) › ``under-provisioned`` (OOM-killed, or the
  recommendation is more than ``tolerance`` above the request) › ``over-provisioned`` (more than ``tolerance``
  below) › ``ok``.
- Dollars per month = (CPU cores × $/vCPU-hour + memory GiB × $/GiB-hour) × replicas × 730. The saving is
  what applying the recommendation would save (negative: what fixing under-provisioning or missing requests
  costs); rows where nothing is proposed (ok, insufficient data, HPA-managed: the HPA would change the
  replica count instead) save 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from traceo_finops.pricing import HOURS_PER_MONTH
from traceo_finops.rightsizing.model import ContainerUsage
from traceo_finops.rightsizing.queries import quantile_key

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


# Rows whose recommendation is proposed as a change (a patch) and priced as a saving.
ACTIONABLE = (Status.OVER, Status.UNDER, Status.NO_REQUESTS)


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

    @classmethod
    def from_settings(cls, settings: Any) -> Policy:
        """From ``workflows.rightsizing`` of the configuration."""
        return cls(settings.cpu_percentile, settings.cpu_margin, settings.memory_margin, settings.oom_bump,
                   settings.min_cpu_cores, settings.min_memory_mib * MIB,
                   settings.min_history.total_seconds() / 86400, settings.tolerance)


@dataclass(frozen=True)
class Prices:
    vcpu_hour: float
    gib_hour: float

    @classmethod
    def from_table(cls, table: Any) -> Prices:
        return cls(table.vcpu_hour, table.gib_hour)


@dataclass(frozen=True)
class Confidence:
    history_days: float
    coverage: float
    days: float  # history × coverage: the VPA recommender's confidence
    score: float  # days / (days + 1)


@dataclass(frozen=True)
class Recommendation:
    cpu_request: float | None
    cpu_limit: float | None
    memory_request: float | None
    memory_limit: float | None
    cpu_baseline: float | None  # the percentile the CPU request is built on
    memory_baseline: float | None  # the peak the memory request is built on
    confidence: Confidence
    status: Status
    reason: str


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


def recommend(usage: ContainerUsage, policy: Policy, hpa: str | None = None) -> Recommendation:
    """The recommendation of one workload container."""
    conf = confidence(usage.history_seconds, usage.cpu_samples, usage.expected_samples)
    cpu_base = usage.cpu.get(quantile_key(policy.cpu_percentile))
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

    if cpu is None or mem is None or conf.days < policy.min_history_days:
        status = Status.INSUFFICIENT
        notes.insert(0, f"{conf.history_days:.2f} days of history at {conf.coverage:.0%} coverage "
                        f"(needs {policy.min_history_days:g} days)" if cpu is not None and mem is not None
                     else "no usage samples")
    elif usage.cpu_request is None or usage.memory_request is None:
        status = Status.NO_REQUESTS
        missing = [r for r, v in (("cpu", usage.cpu_request), ("memory", usage.memory_request)) if v is None]
        notes.insert(0, f"no {' and '.join(missing)} request")
    elif hpa:
        status = Status.HPA
        notes.insert(0, f"scaled by HPA {hpa}: new requests change its scaling, not the cost")
    else:
        tol = policy.tolerance
        cpu_ratio, mem_ratio = cpu / usage.cpu_request, mem / usage.memory_request
        if usage.oom_killed or cpu_ratio > 1 + tol or mem_ratio > 1 + tol:
            status = Status.UNDER
            if usage.oom_killed:
                notes.insert(0, "OOM-killed in the history")
        elif cpu_ratio < 1 - tol or mem_ratio < 1 - tol:
            status = Status.OVER
        else:
            status = Status.OK
        notes.insert(0, f"recommended/current: cpu {cpu_ratio:.2f}, memory {mem_ratio:.2f}")
    return Recommendation(cpu, cpu_limit, mem, mem if mem is not None else None, cpu_base, mem_base, conf,
                          status, "; ".join(notes))


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
