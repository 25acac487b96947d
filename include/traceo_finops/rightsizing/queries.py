"""PromQL of the right-sizing workflow, the query resolution and the namespace batches.

Every usage figure is computed by the server and comes back as one number per container: percentiles and
maxima of ``rate(container_cpu_usage_seconds_total[…])`` through ``quantile_over_time`` / ``max_over_time``
over a subquery, the working set's maximum over the raw samples and its p99 over a subquery, and a
``count_over_time`` of the raw CPU samples for coverage. Raw samples never leave the server.

Cost rules learnt on Prometheus 2.42 (measured in docs/benchmarks.md): every statistic is one pass over the
samples, so the cost is the number of statistics × samples; an aggregation (``max by (…)``) *inside* a
subquery costs about four times the rate itself, so subqueries select raw series and duplicates are merged
by an aggregation outside (one value per series); the resolution is the rate window itself (adjacent,
non-overlapping windows: every sample counts once) unless the 11,000-points bound asks for coarser; label
sets (of the batches, of info metrics) come from the series API, which reads the index and no sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from traceo_finops.prometheus import MAX_POINTS_PER_SERIES, literal_regex, quote

# Resolutions a subquery may use, in seconds: the usual scrape intervals and rate windows, then whole hours.
NICE_STEPS = (15, 30, 60, 120, 180, 300, 600, 900, 1200, 1800, 3600)
COMMON_SCRAPE_INTERVALS = (5, 10, 15, 20, 30, 60, 120, 300, 600)
CPU_QUANTILES = (0.5, 0.9, 0.95, 0.99)
MEMORY_QUANTILE = 0.99
# The working-set p99 is read from samples at least history/336 apart (hourly over 14 days): each is the
# working set at an instant, so fewer of them estimate the same p99 (the 4th largest of 336), and every
# point a subquery adds is work on the server (1008 points cost 1.6x what 336 do on Prometheus 2.42).
MEMORY_P99_POINTS = 336
# Containers as cAdvisor labels them; "" is the pod cgroup and "POD" the pause container.
CONTAINER_MATCHERS = 'container!="",container!="POD",pod!=""'
CPU_METRIC = "container_cpu_usage_seconds_total"
MEMORY_METRIC = "container_memory_working_set_bytes"
RESTARTS_METRIC = "kube_pod_container_status_restarts_total"
# The labels an answer is read by (aggregating to them merges duplicate scrapes and leaves the rest — uid,
# node, instance, image, … — on the server: most of an answer's bytes).
CONTAINER_LABELS = "namespace, pod, container"
RESOURCE_LABELS = "namespace, pod, container, resource"
OWNER_LABELS = "namespace, pod, owner_kind, owner_name, owner_is_controller"


def duration(seconds: float) -> str:
    """A PromQL duration in whole seconds (at least 1s)."""
    return f"{max(1, math.ceil(seconds))}s"


def quantile_key(q: float) -> str:
    """Column-style name of a quantile: 0.95 -> ``p95``, 0.999 -> ``p99_9``."""
    text = f"{q * 100:.6g}"
    return "p" + text.replace(".", "_")


# ---- resolution ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """How finely the history is read: subquery step, CPU rate window, points per series."""

    history_seconds: int
    step: int
    rate_window: int
    points: int
    scrape_interval: int | None  # detected on the source, None when it could not be

    def as_dict(self) -> dict[str, Any]:
        return {"history_seconds": self.history_seconds, "step": self.step, "rate_window": self.rate_window,
                "points": self.points, "scrape_interval": self.scrape_interval}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Resolution:
        return cls(**data)


def choose_resolution(history_seconds: float, rate_window: float, scrape_interval: float | None,
                      max_points: int = MAX_POINTS_PER_SERIES) -> Resolution:
    """The subquery step and rate window for a history.

    The rate window is at least 4 × the scrape interval (so every window holds samples even with a missed
    scrape); the step is the smallest nice value at or above both the rate window and ``history/max_points``;
    when the step had to grow past the rate window, the window grows with it (no sample is skipped).
    """
    if history_seconds <= 0:
        raise ValueError(f"history must be positive, got {history_seconds}s")
    max_points = min(max_points, MAX_POINTS_PER_SERIES)
    window = max(float(rate_window), 4.0 * scrape_interval if scrape_interval else 0.0)
    step = nice_step(max(window, history_seconds / max_points))
    window = max(window, step)
    points = int(history_seconds // step)
    return Resolution(int(history_seconds), int(step), math.ceil(window), points,
                      int(scrape_interval) if scrape_interval else None)


def nice_step(floor: float) -> int:
    """The smallest of ``NICE_STEPS`` at or above ``floor`` seconds, else whole hours."""
    return next((s for s in NICE_STEPS if s >= floor), 3600 * math.ceil(floor / 3600))


def memory_p99_step(res: Resolution) -> int:
    """The subquery step of the working-set p99: the usage step, or coarser so it reads ~``MEMORY_P99_POINTS``."""
    return nice_step(max(res.step, res.history_seconds / MEMORY_P99_POINTS))


def nearest_scrape_interval(samples_per_hour: float) -> int | None:
    """The common scrape interval closest (in ratio) to what ``samples_per_hour`` implies."""
    if not samples_per_hour or samples_per_hour <= 1 or not math.isfinite(samples_per_hour):
        return None
    raw = 3600.0 / (samples_per_hour - 1)  # a closed one-hour range holds n+1 samples of an n-per-hour scrape
    return min(COMMON_SCRAPE_INTERVALS, key=lambda s: abs(math.log(s / raw)))


# ---- batches -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """Containers queried together: whole namespaces, or some pods of one namespace."""

    namespaces: tuple[str, ...]
    pods: tuple[str, ...] = ()
    series: int = 0  # container series the planner counted in it

    def __post_init__(self) -> None:
        if not self.namespaces:
            raise ValueError("a batch needs at least one namespace")
        if self.pods and len(self.namespaces) != 1:
            raise ValueError("a batch of pods belongs to exactly one namespace")

    @property
    def label(self) -> str:
        """Short name for logs and the Airflow map index."""
        head = ",".join(self.namespaces[:3]) + (f",+{len(self.namespaces) - 3}" if len(self.namespaces) > 3 else "")
        return f"{head} ({len(self.pods)} pods)" if self.pods else head

    def matchers(self, with_pods: bool = True) -> str:
        """Label matchers selecting the batch (namespace, and pods if it is a pod batch)."""
        ns = (f"namespace={quote(self.namespaces[0])}" if len(self.namespaces) == 1
              else f"namespace=~{quote(literal_regex(self.namespaces))}")
        if with_pods and self.pods:
            return f"{ns},pod=~{quote(literal_regex(self.pods))}"
        return ns

    def split(self) -> tuple[Batch, Batch] | None:
        """Two halves (by namespace, else by pod), or None for a single pod or an unlisted namespace."""
        if len(self.namespaces) > 1:
            mid = len(self.namespaces) // 2
            return (Batch(self.namespaces[:mid], series=self.series // 2),
                    Batch(self.namespaces[mid:], series=self.series - self.series // 2))
        if len(self.pods) > 1:
            mid = len(self.pods) // 2
            return (Batch(self.namespaces, self.pods[:mid], self.series // 2),
                    Batch(self.namespaces, self.pods[mid:], self.series - self.series // 2))
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"namespaces": list(self.namespaces), "pods": list(self.pods), "series": self.series}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Batch:
        return cls(tuple(data["namespaces"]), tuple(data.get("pods") or ()), int(data.get("series", 0)))


def series_budget(max_samples_per_query: int, points: int) -> int:
    """How many container series one query may cover so series × points stays within the budget."""
    return max(1, max_samples_per_query // max(1, points))


def pack_batches(series_by_namespace: dict[str, int], budget: int,
                 pods_of: Any = None) -> list[Batch]:
    """Namespaces packed into batches of at most ``budget`` series (first fit, in name order).

    A namespace larger than the budget is cut into pod batches; ``pods_of(namespace)`` returns its
    ``{pod: series}`` (asked only for such namespaces).
    """
    batches: list[Batch] = []
    current: list[str] = []
    size = 0
    for ns in sorted(series_by_namespace):
        n = series_by_namespace[ns]
        if n > budget and pods_of is not None:
            batches.extend(_pod_batches(ns, pods_of(ns), budget))
            continue
        if current and size + n > budget:
            batches.append(Batch(tuple(current), series=size))
            current, size = [], 0
        current.append(ns)
        size += n
    if current:
        batches.append(Batch(tuple(current), series=size))
    return batches


def _pod_batches(namespace: str, pods: dict[str, int], budget: int) -> list[Batch]:
    out: list[Batch] = []
    chunk: list[str] = []
    size = 0
    for pod in sorted(pods):
        if chunk and size + pods[pod] > budget:
            out.append(Batch((namespace,), tuple(chunk), size))
            chunk, size = [], 0
        chunk.append(pod)
        size += pods[pod]
    if chunk:
        out.append(Batch((namespace,), tuple(chunk), size))
    return out


# ---- usage queries -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageQuery:
    """One server-side statistic over the history, per container series."""

    stat: str  # cpu_p95, cpu_max, cpu_samples, memory_peak, memory_p99, …
    promql: str
    heavy: bool = True  # evaluates a subquery over the whole history (a split candidate)


def cpu_rate(matchers: str, res: Resolution, metric: str = CPU_METRIC) -> str:
    """Per-series CPU rate. No NaN/Inf filter inside the subquery: a binary operator there costs +75 % on
    Prometheus 2.42, and the aggregations cope (a NaN sorts first and max_over_time skips it); a non-finite
    answer is dropped on the client."""
    return f"rate({metric}{{{matchers}}}[{duration(res.rate_window)}])"


def usage_queries(batch: Batch, res: Resolution, quantiles: Sequence[float] = CPU_QUANTILES,
                  chosen: float = 0.95) -> list[UsageQuery]:
    """The usage statistics of a batch, one query each (instant queries at the window end), all at full
    resolution. (Reading the percentiles that are only shown — not ``chosen`` — at a coarser step was tried:
    it saves ~10 %, since a subquery still decodes every sample it steps over; not worth two resolutions.)"""
    sel = f"{batch.matchers()},{CONTAINER_MATCHERS}"
    w = duration(res.history_seconds)
    sub = f"[{w}:{duration(res.step)}]"
    rate = f"({cpu_rate(sel, res)}){sub}"
    mem_step = memory_p99_step(res)
    out = [UsageQuery(f"cpu_{quantile_key(q)}", f"quantile_over_time({q:g}, {rate})")
           for q in sorted({*quantiles, chosen})]
    out += [
        UsageQuery("cpu_max", f"max_over_time({rate})"),
        # Coverage from the raw samples: as good as counting the subquery's points and 5x cheaper.
        UsageQuery("cpu_samples", f"count_over_time({CPU_METRIC}{{{sel}}}[{w}])"),
        # The peak over every raw sample (a subquery could step over it); NaN/Inf answers are re-read below.
        UsageQuery("memory_peak", f"max_over_time({MEMORY_METRIC}{{{sel}}}[{w}])"),
        # The working set at each step: last_over_time over the step rather than the bare selector, which a
        # subquery resolves with a lookback seek per step (1.6x the cost on Prometheus 2.42).
        UsageQuery("memory_p99", f"quantile_over_time({MEMORY_QUANTILE:g}, last_over_time({MEMORY_METRIC}"
                                 f"{{{sel}}}[{duration(mem_step)}])[{w}:{duration(mem_step)}])"),
    ]
    # One answer per container: the same container scraped twice (two cAdvisor jobs) keeps its larger figure.
    # Outside the subquery this aggregation costs one value per series.
    return [UsageQuery(u.stat, f"max by ({CONTAINER_LABELS}) ({u.promql})", u.heavy) for u in out]


def memory_peak_filtered(namespace: str, pods: Sequence[str], res: Resolution, step: int | None = None) -> str:
    """The working-set peak without NaN/Inf samples, at the scrape resolution (for the few series that need it)."""
    step = step or res.scrape_interval or 60
    sel = f"namespace={quote(namespace)},pod=~{quote(literal_regex(pods))},{CONTAINER_MATCHERS}"
    return (f"max_over_time(({MEMORY_METRIC}{{{sel}}} < +Inf)"
            f"[{duration(res.history_seconds)}:{duration(step)}])")


def container_series(namespace_regex: str) -> str:
    """The working-set series of the containers of ``namespace_regex`` (listed with the series API to size the
    batches: index lookups, where a PromQL count over the history would decode every sample)."""
    return f"{MEMORY_METRIC}{{namespace=~{quote(namespace_regex)},{CONTAINER_MATCHERS}}}"


def samples_last_hour(namespace_regex: str) -> str:
    """Median samples per container series in the last hour: the scrape interval, roughly."""
    return (f"quantile(0.5, count_over_time({MEMORY_METRIC}{{namespace=~{quote(namespace_regex)},"
            f"{CONTAINER_MATCHERS}}}[1h]))")


# ---- discovery queries (kube-state-metrics) -------------------------------------------------------------

REQUIRED_METRICS = {
    "kube_pod_owner": "kube-state-metrics: maps every pod to its owner (ReplicaSet, StatefulSet, DaemonSet, Job)",
    "kube_pod_container_resource_requests": "kube-state-metrics: the containers' current requests",
    CPU_METRIC: "cAdvisor (kubelet /metrics/cadvisor): CPU usage",
    MEMORY_METRIC: "cAdvisor (kubelet /metrics/cadvisor): memory working set",
}


def alive_window(res: Resolution) -> int:
    """A pod whose owner series has a sample this close to the window end exists at the end."""
    return max(300, 2 * (res.scrape_interval or 60) + 60)


def discovery_queries(batch: Batch, res: Resolution) -> dict[str, str]:
    pod_sel = batch.matchers()
    ns_sel = batch.matchers(with_pods=False)
    w = duration(res.history_seconds)
    alive = duration(alive_window(res))
    window = res.history_seconds
    scrape = res.scrape_interval or 60
    kinds = (("kube_deployment_spec_replicas", "deployment"), ("kube_statefulset_replicas", "statefulset"),
             ("kube_daemonset_status_desired_number_scheduled", "daemonset"))
    last = " or ".join(f"last_over_time({m}{{{ns_sel}}}[{w}])" for m, _ in kinds)
    avg = " or ".join(f"avg_over_time({m}{{{ns_sel}}}[{w}])" for m, _ in kinds)
    restarts_now = f"last_over_time({RESTARTS_METRIC}{{{pod_sel}}}[{alive}])"
    return {
        # Pod lifetimes from raw sample counts (x scrape interval), and which pods exist at the end: raw ranges
        # are cheap; a subquery with time() or timestamp() over every pod costs more than the CPU statistics.
        "pod_samples": f"max by ({OWNER_LABELS}) (count_over_time(kube_pod_owner{{{pod_sel}}}[{w}]))",
        "pod_alive": f"max by ({OWNER_LABELS}) (last_over_time(kube_pod_owner{{{pod_sel}}}[{alive}]))",
        # Requests and limits of the pods running at the end: a short range, not 14 days of constant samples.
        "requests": f"max by ({RESOURCE_LABELS}) (last_over_time(kube_pod_container_resource_requests"
                    f"{{{pod_sel}}}[{alive}]))",
        "limits": f"max by ({RESOURCE_LABELS}) (last_over_time(kube_pod_container_resource_limits"
                  f"{{{pod_sel}}}[{alive}]))",
        # Restarts in the window of the pods running at the end: the count now less the count at the start
        # (the pod's own counter never resets), both short ranges; pods gone earlier: restarts_of_pods().
        "restarts": (f"max by ({CONTAINER_LABELS}) (({restarts_now} - last_over_time({RESTARTS_METRIC}"
                     f"{{{pod_sel}}}[{alive}] offset {w})) or {restarts_now})"),
        "oom_killed": (f'max_over_time(kube_pod_container_status_last_terminated_reason{{{pod_sel},'
                       f'reason="OOMKilled"}}[{w}])'),
        "replicas_now": f"{last} or last_over_time(kube_job_status_active{{{ns_sel}}}[{w}])",
        # Jobs: active pods integrated over the window (samples x scrape interval / window).
        "replicas_avg": (f"{avg} or sum_over_time(kube_job_status_active{{{ns_sel}}}[{w}]) * "
                         f"{scrape / window:.12g}"),
    }


def discovery_series(batch: Batch) -> dict[str, str]:
    """Info metrics whose labels are all that is read: listed with the series API over the history (index
    lookups; a PromQL range over them decodes every sample)."""
    ns_sel = batch.matchers(with_pods=False)
    return {
        "replicaset_owner": f"kube_replicaset_owner{{{ns_sel}}}",
        "job_owner": f"kube_job_owner{{{ns_sel}}}",
        "hpa": f"kube_horizontalpodautoscaler_info{{{ns_sel}}}",
    }


def restarts_of_pods(batch: Batch, res: Resolution) -> str:
    """Restarts in the window of pods that no longer run at its end (a pod batch)."""
    return (f"max by ({CONTAINER_LABELS}) (increase({RESTARTS_METRIC}{{{batch.matchers()}}}"
            f"[{duration(res.history_seconds)}]))")


def resources_over_window(name: str, batch: Batch, res: Resolution) -> str:
    """Last requests (``name`` = requests) or limits of the batch's pods over the whole window."""
    return (f"max by ({RESOURCE_LABELS}) (last_over_time(kube_pod_container_resource_{name}"
            f"{{{batch.matchers()}}}[{duration(res.history_seconds)}]))")


# ---- the observability stack (processes, not on Kubernetes) ---------------------------------------------


def stack_selector(jobs: Sequence[str]) -> str:
    """Processes of the stack's jobs that do not run as pods (those are sized as containers)."""
    return f'job=~{quote("|".join(f"(?:{j})" for j in jobs))},pod=""'


def stack_queries(jobs: Sequence[str], res: Resolution, quantiles: Sequence[float] = CPU_QUANTILES
                  ) -> list[UsageQuery]:
    sel = stack_selector(jobs)
    w = duration(res.history_seconds)
    sub = f"[{w}:{duration(res.step)}]"
    cpu = f"({cpu_rate(sel, res, 'process_cpu_seconds_total')}){sub}"
    go_need = (f"go_memstats_next_gc_bytes{{{sel}}} + (go_memstats_sys_bytes{{{sel}}} - "
               f"go_memstats_heap_sys_bytes{{{sel}}})")
    out = [UsageQuery(f"cpu_{quantile_key(q)}", f"quantile_over_time({q:g}, {cpu})") for q in sorted(set(quantiles))]
    out += [
        UsageQuery("cpu_max", f"max_over_time({cpu})"),
        UsageQuery("cpu_samples", f"count_over_time({cpu})"),  # points at the resolution: few series here
        UsageQuery("rss_peak", f"max_over_time(process_resident_memory_bytes{{{sel}}}[{w}])"),
        UsageQuery("memory_p99",
                   f"quantile_over_time({MEMORY_QUANTILE:g}, process_resident_memory_bytes{{{sel}}}{sub})"),
        # What the Go runtime needs: the heap it grows to before the next GC plus its non-heap memory.
        # The rest of a Prometheus' RSS is mmapped TSDB chunks: page cache the kernel can drop.
        UsageQuery("go_need_peak", f"max_over_time(({go_need}){sub})"),
        # When each process started (its own clock, so a process up for less than one step is still seen),
        # its last sample on the steps, and its sample now (a process younger than a step has no step yet).
        UsageQuery("first_seen", f"min_over_time(process_start_time_seconds{{{sel}}}[{w}])", heavy=False),
        UsageQuery("last_seen", f"max_over_time((process_resident_memory_bytes{{{sel}}} * 0 + time()){sub})",
                   heavy=False),
        UsageQuery("seen_now", f"timestamp(process_resident_memory_bytes{{{sel}}})", heavy=False),
    ]
    return out
