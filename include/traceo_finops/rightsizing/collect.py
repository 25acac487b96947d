"""Talk to Prometheus/Mimir: plan the namespace batches, then discover and measure one batch.

:func:`plan` checks that the source has kube-state-metrics and cAdvisor, detects the scrape interval,
chooses the resolution, looks (rules API) for kube-prometheus' recorded CPU rate to read the CPU percentiles from
(:func:`detect_cpu_rate_source`; the choice is the resolution's ``cpu_rate_source``) and packs namespaces into
batches that stay under the server's limits.
:func:`collect_batch` runs the batch's kube-state-metrics discovery (pod → ReplicaSet → Deployment /
StatefulSet / DaemonSet / Job / CronJob / bare pod, requests, limits, restarts, OOM kills, replicas, HPAs)
and its usage statistics, all as instant queries at the window end, and returns mergeable
:class:`~traceo_finops.rightsizing.model.ContainerUsage` pieces. A query the server times out on or refuses
as too big (``--query.timeout``, ``--query.max-samples``, Mimir's limits) is split in two and retried.
"""

from __future__ import annotations

import functools
import logging
import operator
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import overload

from traceo_finops import prometheus
from traceo_finops.prometheus import (
    PrometheusClient,
    PrometheusError,
    PrometheusQueryTooLarge,
    SourceSpec,
    quote,
    re2_escape,
    sample_value,
)
from traceo_finops.prometheus.spec import Flavor
from traceo_finops.rightsizing import queries as q
from traceo_finops.rightsizing.errors import MissingMetricError
from traceo_finops.rightsizing.model import (
    BATCH_KINDS,
    POD,
    REPLICA_LABELS,
    REPLICASET,
    ContainerUsage,
    Run,
    WorkloadInfo,
)
from traceo_finops.shapes import Json, JsonObject

log = logging.getLogger(__name__)

Series = list[dict[str, Json]]  # samples of an instant-query answer


# ---- running queries ------------------------------------------------------------------------------------


class BatchRunner(prometheus.QueryRunner):
    """The shared :class:`~traceo_finops.prometheus.QueryRunner` (the concurrency, retry and split rules of every
    workflow) bound to the window end: instant queries at ``at``, series listed over the history, and batch
    queries that are split by namespace, then by pod, when the server gives up on them."""

    def __init__(self, spec: SourceSpec, at: datetime | float, concurrency: int = 2, retries: int | None = None,
                 history_seconds: float | None = None, sleep: Callable[[float], None] = time.sleep):
        """``history_seconds``: lets a namespace batch be cut into pod batches (its pods are listed over it)."""
        super().__init__(spec, concurrency=concurrency, retries=retries, sleep=sleep)
        self.at = at.timestamp() if isinstance(at, datetime) else float(at)  # the instant every query is at
        self.history_seconds = history_seconds
        self._pods_cache: dict[str, tuple[str, ...]] = {}
        self._pods_lock = threading.Lock()

    def query(self, promql: str) -> Series:
        """One instant query at ``at``, retried (not split)."""
        return self.call(lambda c: c.query(promql, time=self.at))

    def series(self, selector: str) -> list[dict[str, str]]:
        """The label sets ``selector`` matches over the history, retried (not split)."""
        return self.call(lambda c: self._list(c, selector))

    def _list(self, client: PrometheusClient, selector: str) -> list[dict[str, str]]:
        return client.series(selector, self.at - (self.history_seconds or 3600), self.at)

    def batch_query(self, build: Callable[[q.Batch], str], batch: q.Batch, series_api: bool = False) -> Series:
        """``build(batch)``; when the server gives up on it, the same for each half, and so on down to a pod.

        ``series_api``: ``build`` makes a selector, listed with the series API over the history; each label set
        comes back as a sample of value 1 (the shape of a PromQL answer)."""
        def run(client: PrometheusClient, b: q.Batch) -> Series:
            if series_api:
                return [{"metric": labels, "value": [self.at, "1"]} for labels in self._list(client, build(b))]
            return client.query(build(b), time=self.at)

        return self.split(run, batch, self._halves, operator.add, describe=lambda b: f"batch {b.label}")

    def _halves(self, batch: q.Batch) -> tuple[q.Batch, q.Batch] | None:
        halves = batch.split()
        if halves is None and not batch.pods and self.history_seconds:
            pods = self.pods_of(batch.namespaces[0])
            if len(pods) > 1:
                halves = q.Batch(batch.namespaces, pods, batch.series).split()
        return halves

    def pods_of(self, namespace: str) -> tuple[str, ...]:
        """The pods with container series or an owner series in ``namespace`` over the history (listed once):
        a pod that never started (no start time, no container series) still has its requests to report."""
        with self._pods_lock:
            if namespace not in self._pods_cache:
                listed = self.series(q.container_series(re2_escape(namespace)))
                listed += self.series(f"kube_pod_owner{{namespace={quote(namespace)}}}")
                self._pods_cache[namespace] = tuple(sorted({s["pod"] for s in listed if s.get("pod")}))
            return self._pods_cache[namespace]




def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 160 else text[:157] + "…"


# ---- plan -----------------------------------------------------------------------------------------------


def check_metrics(client: PrometheusClient, required: dict[str, str] | None = None) -> None:
    """Raise :class:`MissingMetricError` naming every required metric the source has no series of."""
    required = required or q.REQUIRED_METRICS
    names = set(client.label_values("__name__", match="{__name__=~" + quote("|".join(required)) + "}"))
    missing = [m for m in required if m not in names]
    if missing:
        what = "; ".join(f"{m} ({required[m]})" for m in missing)
        tenant = f" tenant {client.spec.tenant!r}" if client.spec.tenant else ""
        raise MissingMetricError(
            f"source {client.spec.name!r}{tenant}: missing metric{'s' if len(missing) > 1 else ''} {what}. "
            "Right-sizing reads kube-state-metrics and cAdvisor from the source: check that both are scraped "
            "(and, on Mimir, that this is the tenant they are written to).", missing)


def detect_scrape_interval(runner: BatchRunner, namespaces: str) -> int | None:
    result = runner.query(q.samples_last_hour(namespaces))
    value = sample_value(result[0]) if result else None
    return q.nearest_scrape_interval(value) if value else None


@dataclass(frozen=True)
class Plan:
    resolution: q.Resolution
    batches: list[q.Batch]
    series: int

    def as_dict(self) -> JsonObject:
        return {"resolution": self.resolution.as_dict(), "batches": [b.as_dict() for b in self.batches],
                "series": self.series}


def list_recording_rules(client: PrometheusClient) -> list[q.RecordingRule]:
    """The source's recording rules: the rules API (Prometheus; Mimir's ruler behind its prefix), or on Mimir
    the ruler's config API when the former is not answered."""
    try:
        return q.rules_from_api(client.rules("record"))
    except PrometheusError:
        if client.spec.flavor is not Flavor.MIMIR:
            raise
        return q.rules_from_ruler(client.mimir_ruler_rules())


def detect_cpu_rate_source(runner: BatchRunner, res: q.Resolution, namespaces: str = ".+") -> q.Resolution:
    """``res`` reading the CPU rate from kube-prometheus' recording rule when the source has one that stands in
    for ``rate()`` over this window (:func:`~traceo_finops.rightsizing.queries.choose_recorded_rate`, then
    :func:`recorded_coverage`), else ``res`` as it is. Never fails the plan: without the rule, ``rate()``."""
    name = runner.spec.name
    try:
        rules = runner.call(list_recording_rules)
    except PrometheusError as exc:
        log.info("source %s: recording rules not listed (%s); CPU percentiles from rate()", name, _short(exc))
        return res
    found, notes = q.choose_recorded_rate(rules, res)
    for note in notes:
        # kube-prometheus' name with another expression is worth a warning; other CPU rules are only noted.
        log.log(logging.WARNING if note.expected else logging.DEBUG, "source %s: %s", name, note)
    if found is None:
        log.info("source %s: no recording rule of kube-prometheus' CPU rate usable; CPU percentiles from rate()",
                 name)
        return res
    problem = recorded_coverage(runner, found.rule.name, res, namespaces)
    if problem:
        log.warning("source %s: recording rule %s is not used: %s; CPU percentiles from rate()", name,
                    found.rule.name, problem)
        return res
    interval = found.rule.interval
    log.info("source %s: CPU percentiles from recording rule %s (group %r, %s rate, evaluated every %s)", name,
             found.rule.name, found.rule.group, q.duration(found.window), f"{interval:g}s" if interval else "?")
    return res.with_cpu_source(found.rule.name, interval)


def recorded_coverage(runner: BatchRunner, recorded: str, res: q.Resolution, namespaces: str = ".+") -> str | None:
    """Why the recorded series cannot stand in for ``rate()`` over the window, or None.

    Near the window's start (its second step: a rule's first evaluation needs a rate window of samples, so over a
    history that begins with the window it appears one evaluation late) and at its end it must hold (nearly) every
    container the raw counter has: a rule added during the window has no history before it, a job selector that
    misses a cAdvisor job misses its containers. Four instant queries, each over the last step (the rule runs at
    least once a step, maybe less often than the 5-minute lookback of a bare selector)."""
    for where, t in (("start", runner.at - res.history_seconds + 2 * res.step), ("end", runner.at)):
        raw, held = (_count(runner, q.cpu_containers(namespaces, metric, res.step), t)
                     for metric in (q.CPU_METRIC, recorded))
        if raw and held < q.MIN_RECORDED_COVERAGE * raw:
            when = datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
            return (f"at the window's {where} ({when}) it holds {held} of the {raw} containers the raw counter has"
                    f" (needs {q.MIN_RECORDED_COVERAGE:.0%})")
    return None


def _count(runner: BatchRunner, promql: str, t: float) -> int:
    answer = runner.call(lambda c: c.query(promql, time=t))
    value = sample_value(answer[0]) if answer else None
    return int(value or 0)


def plan(spec: SourceSpec, at: datetime, history_seconds: float, *, rate_window: float, max_points: int,
         max_samples_per_query: int, namespaces: str = ".+") -> Plan:
    """Check the source, choose the resolution and the CPU rate's source, cut the namespaces into batches."""
    with BatchRunner(spec, at, concurrency=1, history_seconds=history_seconds) as runner:
        runner.call(check_metrics)
        scrape = detect_scrape_interval(runner, namespaces)
        res = q.choose_resolution(history_seconds, rate_window, scrape, max_points)
        res = detect_cpu_rate_source(runner, res, namespaces)
        # Container series per namespace and per pod over the history, from the index (no sample decoded).
        listed = runner.series(q.container_series(namespaces))
        per_pod: dict[str, Counter[str]] = defaultdict(Counter)
        for labels in listed:
            if labels.get("namespace") and labels.get("pod"):
                per_pod[labels["namespace"]][labels["pod"]] += 1
        counts = {ns: sum(pods.values()) for ns, pods in per_pod.items()}
        budget = q.series_budget(max_samples_per_query, res.points)
        batches = q.pack_batches(counts, budget, lambda ns: dict(per_pod[ns]))
    log.info("source %s: %d container series in %d namespaces → %d batches (≤ %d series each); scrape "
             "interval %s, step %ss, rate window %ss, %d points, CPU rate from %s", spec.name, sum(counts.values()),
             len(counts), len(batches), budget, f"{scrape}s" if scrape else "unknown", res.step, res.rate_window,
             res.points, res.cpu_rate_source)
    return Plan(res, batches, sum(counts.values()))


# ---- one batch --------------------------------------------------------------------------------------------


@dataclass
class BatchResult:
    containers: list[ContainerUsage]
    workloads: list[WorkloadInfo]
    skipped: dict[str, int]
    stats: dict[str, int]
    seconds: float

    def as_dict(self) -> JsonObject:
        return {"containers": [c.as_dict() for c in self.containers],
                "workloads": [w.as_dict() for w in self.workloads],
                "skipped": self.skipped, "stats": self.stats, "seconds": round(self.seconds, 3)}


def collect_batch(spec: SourceSpec, batch: q.Batch, res: q.Resolution, at: datetime, *,
                  cpu_percentile: float = 0.95, concurrency: int = 2,
                  runner: BatchRunner | None = None) -> BatchResult:
    """Discovery and usage of one batch; every answer is one number per pod, container or workload."""
    t0 = time.monotonic()
    own = runner is None
    runner = runner or BatchRunner(spec, at, concurrency, history_seconds=res.history_seconds)
    try:
        quantiles = sorted({*q.CPU_QUANTILES, cpu_percentile})
        jobs: dict[str, Callable[[], Series]] = {}
        for uq in q.usage_queries(batch, res, quantiles, cpu_percentile):
            jobs[uq.stat] = _usage_job(runner, batch, uq.stat, res, quantiles, cpu_percentile)
        for name in q.discovery_queries(batch, res):
            jobs[name] = _discovery_job(runner, batch, name, lambda b: q.discovery_queries(b, res))
        for name in q.discovery_series(batch):
            jobs[name] = _discovery_job(runner, batch, name, q.discovery_series, series_api=True)
        answers = runner.run_all(jobs)  # the heavy usage queries first: the light ones fill the gaps at the end
        skipped: Counter[str] = Counter()
        usage = _usage_by_container(answers, quantiles, skipped)
        if res.recorded_metric:
            _cpu_of_unrecorded(runner, usage, res, quantiles, cpu_percentile, skipped)
        _refill_memory_peaks(runner, usage, res, skipped)
        pods = _Pods(answers, res, skipped)
        _requests_of_gone_workloads(runner, answers, pods, usage, res)
        _restarts_of_gone_pods(runner, answers, pods, res)
        containers, workloads = _assemble(answers, usage, pods, res, skipped)
    finally:
        if own:
            runner.close()
    if skipped:
        log.info("batch %s: skipped %s", batch.label, dict(skipped))
    return BatchResult(containers, workloads, dict(skipped), runner.stats.as_dict(), time.monotonic() - t0)


def _usage_job(runner: BatchRunner, batch: q.Batch, stat: str, res: q.Resolution, quantiles: Sequence[float],
               chosen: float) -> Callable[[], Series]:
    def build(b: q.Batch) -> str:
        return next(u.promql for u in q.usage_queries(b, res, quantiles, chosen) if u.stat == stat)

    return lambda: runner.batch_query(build, batch)


def _discovery_job(runner: BatchRunner, batch: q.Batch, name: str, build_all: Callable[[q.Batch], dict[str, str]],
                   series_api: bool = False) -> Callable[[], Series]:
    return lambda: runner.batch_query(lambda b: build_all(b)[name], batch, series_api)


# ---- turning answers into containers ------------------------------------------------------------------------

PodKey = tuple[str, str]
ContainerKey = tuple[str, str, str]


@overload
def _labels(sample: dict[str, Json], a: str, b: str, /) -> tuple[str, str] | None: ...
@overload
def _labels(sample: dict[str, Json], a: str, b: str, c: str, /) -> tuple[str, str, str] | None: ...
def _labels(sample: dict[str, Json], *names: str) -> tuple[str, ...] | None:
    """The values of labels ``names`` of a sample; None when one is missing or empty."""
    metric = sample.get("metric") or {}
    values = tuple(metric.get(n) or "" for n in names)
    return None if "" in values else values


def _usage_by_container(answers: dict[str, Series], quantiles: Sequence[float],
                        skipped: Counter[str]) -> dict[ContainerKey, dict[str, float]]:
    stats = [f"cpu_{q.quantile_key(x)}" for x in quantiles] + ["cpu_max", "cpu_samples", "memory_peak",
                                                                "memory_p99"]
    out: dict[ContainerKey, dict[str, float]] = defaultdict(dict)
    for stat in stats:
        for sample in answers.get(stat, []):
            key = _labels(sample, "namespace", "pod", "container")
            if key is None:
                skipped["usage series without namespace/pod/container"] += 1
                continue
            value = sample_value(sample)
            if value is None:
                skipped[f"{stat} NaN/Inf"] += 1
                if stat == "memory_peak":
                    out[key]["memory_peak_invalid"] = 1.0
                continue
            prev = out[key].get(stat)
            # The same container scraped twice (two cAdvisor jobs) is one container: keep the larger figure.
            out[key][stat] = value if prev is None else max(prev, value)
    return out


def _cpu_of_unrecorded(runner: BatchRunner, usage: dict[ContainerKey, dict[str, float]], res: q.Resolution,
                       quantiles: Sequence[float], chosen: float, skipped: Counter[str]) -> None:
    """Containers with CPU samples but no recorded rate (a series the rule's selector leaves out, e.g. another
    cAdvisor job): their CPU figures from ``rate()``, for their pods only."""
    key_stat = f"cpu_{q.quantile_key(chosen)}"
    missing: dict[str, set[str]] = defaultdict(set)
    keys: set[ContainerKey] = set()
    for key, stats in usage.items():
        if stats.get("cpu_samples", 0) >= 2 and key_stat not in stats:  # one sample has no rate either way
            missing[key[0]].add(key[1])
            keys.add(key)
    if not keys:
        return
    plain = res.with_cpu_source(None)
    cpu_stats = [f"cpu_{q.quantile_key(x)}" for x in sorted({*quantiles, chosen})] + ["cpu_max"]
    answers: dict[str, Series] = {}
    _add_for_pods(runner, answers, missing, {stat: functools.partial(_usage_promql, stat, plain, quantiles, chosen)
                                             for stat in cpu_stats})
    for stat in cpu_stats:
        for sample in answers.get(stat, []):
            container = _labels(sample, "namespace", "pod", "container")
            value = sample_value(sample)
            if container in keys and container is not None and value is not None:
                usage[container][stat] = max(value, usage[container].get(stat, value))
    skipped["containers not in the recorded CPU rate (read with rate())"] += len(keys)


def _usage_promql(stat: str, res: q.Resolution, quantiles: Sequence[float], chosen: float, batch: q.Batch) -> str:
    return next(u.promql for u in q.usage_queries(batch, res, quantiles, chosen) if u.stat == stat)


def _refill_memory_peaks(runner: BatchRunner, usage: dict[ContainerKey, dict[str, float]], res: q.Resolution,
                         skipped: Counter[str]) -> None:
    """Containers whose raw working-set peak came back NaN/Inf: read the peak again without those samples."""
    bad: dict[str, list[str]] = defaultdict(list)
    for (ns, pod, _), stats in usage.items():
        if stats.pop("memory_peak_invalid", None) is not None and pod not in bad[ns]:
            bad[ns].append(pod)
    for ns, pods in bad.items():
        # At the scrape resolution if the server lets us, else coarser (a refused query is cut by pods first).
        for step in sorted({res.scrape_interval or 60, 2 * (res.scrape_interval or 60), res.step}):
            try:
                answer = runner.batch_query(_memory_peak_query(res, step), q.Batch((ns,), tuple(pods)))
                break
            except PrometheusQueryTooLarge as exc:
                log.info("re-reading memory peaks at %ss failed (%s); trying coarser", step, _short(exc))
        else:
            skipped["memory_peak unreadable (NaN/Inf samples)"] += len(pods)
            continue
        for sample in answer:
            key = _labels(sample, "namespace", "pod", "container")
            value = sample_value(sample)
            if key is not None and value is not None:
                prev = usage[key].get("memory_peak")
                usage[key]["memory_peak"] = value if prev is None else max(prev, value)
                skipped["memory_peak re-read without NaN/Inf"] += 1


def _memory_peak_query(res: q.Resolution, step: int) -> Callable[[q.Batch], str]:
    return lambda b: q.memory_peak_filtered(b.namespaces[0], b.pods, res, step)


class _Pods:
    """Pod → owner → workload, each pod's lifetime in the window and whether it exists at the end."""

    def __init__(self, answers: dict[str, Series], res: q.Resolution, skipped: Counter[str]) -> None:
        scrape = res.scrape_interval or 60
        self.owners: dict[PodKey, tuple[str, str, bool]] = {}
        self.lifetime: dict[PodKey, float] = {}
        self.alive: set[PodKey] = set()
        for name in ("pod_samples", "pod_alive"):
            for s in answers.get(name, []):
                key = _labels(s, "namespace", "pod")
                value = sample_value(s)
                if key is None or value is None:
                    skipped["kube_pod_owner series without namespace/pod"] += int(name == "pod_samples")
                    continue
                if name == "pod_samples":
                    self.lifetime[key] = max(self.lifetime.get(key, 0.0), min(value * scrape, res.history_seconds))
                else:
                    self.alive.add(key)
                m = s["metric"]
                kind, owner = m.get("owner_kind") or "", m.get("owner_name") or ""
                controller = m.get("owner_is_controller", "true") == "true"
                if key not in self.owners or (controller and not self.owners[key][2]):
                    self.owners[key] = (kind, owner, controller)
        self.rs_owner = self._owners(answers.get("replicaset_owner", []), "replicaset")
        self.job_owner = self._owners(answers.get("job_owner", []), "job_name")

    @staticmethod
    def _owners(series: Series, label: str) -> dict[PodKey, tuple[str, str]]:
        out: dict[PodKey, tuple[str, str]] = {}
        for s in series:
            key = _labels(s, "namespace", label)
            kind_name = _labels(s, "owner_kind", "owner_name")
            if key is not None and kind_name is not None and kind_name[0] != "<none>":
                out[key] = (kind_name[0], kind_name[1])
        return out

    def workload_of(self, ns: str, pod: str) -> tuple[str, str]:
        kind, owner, _ = self.owners.get((ns, pod), ("", "", False))
        if not kind or kind == "<none>" or not owner or owner == "<none>":
            return POD, pod
        if kind == REPLICASET:
            return self.rs_owner.get((ns, owner), (REPLICASET, owner))
        if kind == "Job":
            return self.job_owner.get((ns, owner), ("Job", owner))
        return kind, owner


def _requests_of_gone_workloads(runner: BatchRunner, answers: dict[str, Series], pods: _Pods,
                                usage: dict[ContainerKey, dict[str, float]], res: q.Resolution) -> None:
    """Requests are read for the pods running at the end (a short range: cheap). A workload none of whose pods
    runs at the end (a finished Job whose pods are gone, a scaled-down workload) gets its pods' last requests
    over the whole window instead."""
    workload_pods: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for ns, pod in set(pods.lifetime) | {(k[0], k[1]) for k in usage}:
        workload_pods[(ns, *pods.workload_of(ns, pod))].append(pod)
    gone: dict[str, set[str]] = defaultdict(set)
    for (ns, _, _), members in workload_pods.items():
        if not any((ns, p) in pods.alive for p in members):
            gone[ns].update(members)
    _add_for_pods(runner, answers, gone, {name: functools.partial(q.resources_over_window, name, res=res)
                                          for name in ("requests", "limits")})


def _restarts_of_gone_pods(runner: BatchRunner, answers: dict[str, Series], pods: _Pods,
                           res: q.Resolution) -> None:
    """Restarts are read for the pods running at the end (short ranges); pods gone before the end of the
    window (replaced, finished) get theirs over the whole window."""
    gone: dict[str, set[str]] = defaultdict(set)
    for ns, pod in set(pods.lifetime) - pods.alive:
        gone[ns].add(pod)
    _add_for_pods(runner, answers, gone, {"restarts": lambda b: q.restarts_of_pods(b, res)})


def _add_for_pods(runner: BatchRunner, answers: dict[str, Series], pods: dict[str, set[str]],
                  builds: dict[str, Callable[[q.Batch], str]]) -> None:
    """``builds[name]`` for the given pods of each namespace (pod batches, ``concurrency`` at a time), their
    answers appended to ``answers[name]``."""
    work = [(name, build, q.Batch((ns,), tuple(sorted(members))))
            for ns, members in sorted(pods.items()) for name, build in builds.items()]
    jobs = {str(i): functools.partial(runner.batch_query, build, batch) for i, (_, build, batch) in enumerate(work)}
    answered = runner.run_all(jobs)
    for i, (name, _, _) in enumerate(work):
        answers[name] = answers.get(name, []) + answered[str(i)]


def _assemble(answers: dict[str, Series], usage: dict[ContainerKey, dict[str, float]], pods: _Pods,
              res: q.Resolution, skipped: Counter[str]) -> tuple[list[ContainerUsage], list[WorkloadInfo]]:
    scrape = res.scrape_interval or 60
    lifetime, alive, job_owner, workload_of = pods.lifetime, pods.alive, pods.job_owner, pods.workload_of

    # requests, limits, restarts, OOM kills per container
    resources: dict[ContainerKey, dict[str, float]] = defaultdict(dict)
    for answer, prefix in (("requests", "request"), ("limits", "limit")):
        for s in answers.get(answer, []):
            key = _labels(s, "namespace", "pod", "container")
            resource = (s.get("metric") or {}).get("resource")
            value = sample_value(s)
            if key is None or value is None:
                skipped[f"kube_pod_container_resource_{answer} without labels or value"] += 1
                continue
            if resource in ("cpu", "memory"):
                resources[key][f"{resource}_{prefix}"] = value
    restarts = {k: v for s in answers.get("restarts", [])
                if (k := _labels(s, "namespace", "pod", "container")) and (v := sample_value(s)) is not None}
    oom = {k for s in answers.get("oom_killed", []) if (k := _labels(s, "namespace", "pod", "container"))}

    keys = set(usage) | set(resources)
    pieces: dict[tuple[str, str, str, str], ContainerUsage] = {}
    for ns, pod, container in sorted(keys):
        kind, name = workload_of(ns, pod)
        stats = usage.get((ns, pod, container), {})
        res_ = resources.get((ns, pod, container), {})
        points = int(stats.get("cpu_samples", 0))
        life = lifetime.get((ns, pod))
        if life is None and points:
            # A pod kube-state-metrics never saw: its samples tell how long it lived.
            skipped["pods without kube_pod_owner (lifetime from their samples)"] += 1
            life = points * scrape
        is_alive = (ns, pod) in alive or ((ns, pod) not in lifetime and bool(points))
        oom_here = (ns, pod, container) in oom
        piece = ContainerUsage(
            ns, kind, name, container, pods=[pod], alive_pods=int(is_alive),
            cpu={k[4:]: v for k, v in stats.items() if k.startswith("cpu_") and k != "cpu_samples"},
            cpu_samples=points, expected_samples=max((life or 0.0) / scrape, float(points)),
            pod_seconds=life or 0.0, memory_peak=stats.get("memory_peak"), memory_p99=stats.get("memory_p99"),
            cpu_request=res_.get("cpu_request"), cpu_limit=res_.get("cpu_limit"),
            memory_request=res_.get("memory_request"), memory_limit=res_.get("memory_limit"),
            requests_alive=is_alive, restarts=round(restarts.get((ns, pod, container), 0)),
            oom_killed=oom_here, last_oom_limit=res_.get("memory_limit") if oom_here else None)
        if kind in BATCH_KINDS and piece.cpu and points:
            # Each pod of a Job/CronJob is a run: keep its own figures (a pod that never ran has none).
            piece.runs = [Run(pod, dict(piece.cpu), points, points * scrape, piece.memory_peak)]
        if piece.key in pieces:
            pieces[piece.key].absorb(piece)
        else:
            pieces[piece.key] = piece

    workloads: dict[tuple[str, str, str], WorkloadInfo] = {}

    def info(ns: str, kind: str, name: str) -> WorkloadInfo:
        return workloads.setdefault((ns, kind, name), WorkloadInfo(ns, kind, name))

    for answer, attr in (("replicas_now", "replicas"), ("replicas_avg", "avg_replicas")):
        for s in answers.get(answer, []):
            metric = s.get("metric") or {}
            value = sample_value(s)
            label = next((lbl for lbl in REPLICA_LABELS if metric.get(lbl)), None)
            if label is None or value is None or not metric.get("namespace"):
                continue
            ns, kind, name = metric["namespace"], REPLICA_LABELS[label], metric[label]
            if kind == "Job" and (ns, name) in job_owner:  # a CronJob's jobs add up
                kind, name = job_owner[(ns, name)]
                w = info(ns, kind, name)
                setattr(w, attr, (getattr(w, attr) or 0) + value)
                continue
            setattr(info(ns, kind, name), attr, value)
    for w in workloads.values():
        if w.replicas is not None:
            w.replicas = round(w.replicas)
    for s in answers.get("hpa", []):
        target = _labels(s, "namespace", "scaletargetref_kind", "scaletargetref_name")
        hpa = (s.get("metric") or {}).get("horizontalpodautoscaler")
        if target is not None:
            info(*target).hpa = hpa or target[2]
    return sorted(pieces.values(), key=lambda c: c.key), sorted(workloads.values(), key=lambda w: w.key)

