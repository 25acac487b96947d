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

Where the source already records kube-prometheus' per-container CPU rate (a recording rule whose expression,
compared as a normalized AST, is kube-prometheus' ``sum by (…, namespace, pod, container) (rate(…[5m]))``), the
CPU percentiles read that recorded series at the same step instead of evaluating ``rate()`` at every step: the
same statistic over the same windows, shifted by less than one rule interval (:func:`choose_recorded_rate`,
:func:`cpu_steps`). It saves server work in proportion to the samples it does not decode: little when the rule is
evaluated at every scrape (as many samples as the counter), ~30 % of the whole sizing when once per step.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import promql_parser as pp

from traceo_finops.prometheus import MAX_POINTS_PER_SERIES, format_duration, literal_regex, parse_duration, quote
from traceo_finops.recording_rules.normalize import Normalizer, children, render, selector_matchers, strip_parens
from traceo_finops.shapes import Json

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


RATE_SOURCE = "rate()"  # CPU percentiles over rate() of the raw counter
RECORDED = "recorded:"  # … or over a recorded rate: "recorded:<rule name>"


@dataclass(frozen=True)
class Resolution:
    """How finely the history is read: subquery step, CPU rate window, points per series, and where the CPU rate
    comes from (``rate()``, or ``recorded:<rule>`` with the rule's evaluation interval)."""

    history_seconds: int
    step: int
    rate_window: int
    points: int
    scrape_interval: int | None  # detected on the source, None when it could not be
    cpu_rate_source: str = RATE_SOURCE
    cpu_rule_interval: int | None = None  # seconds between the recording rule's evaluations

    @property
    def recorded_metric(self) -> str | None:
        """The recorded series the CPU percentiles read, or None (``rate()``)."""
        return self.cpu_rate_source.removeprefix(RECORDED) if self.cpu_rate_source.startswith(RECORDED) else None

    def with_cpu_source(self, rule: str | None = None, interval: float | None = None) -> Resolution:
        """The same resolution reading the CPU rate from recording rule ``rule`` (None: ``rate()``)."""
        if rule is None:
            return replace(self, cpu_rate_source=RATE_SOURCE, cpu_rule_interval=None)
        return replace(self, cpu_rate_source=RECORDED + rule,
                       cpu_rule_interval=math.ceil(interval) if interval else None)

    def as_dict(self) -> dict[str, Any]:
        return {"history_seconds": self.history_seconds, "step": self.step, "rate_window": self.rate_window,
                "points": self.points, "scrape_interval": self.scrape_interval,
                "cpu_rate_source": self.cpu_rate_source, "cpu_rule_interval": self.cpu_rule_interval}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Resolution:
        return cls(**data)  # a payload from before the CPU source existed reads as rate()


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


def cpu_steps(sel: str, res: Resolution) -> str:
    """The per-series CPU rate at every step of the history: a range vector the percentiles and the max read.

    From ``rate()`` over the raw counter (a subquery), or — where the plan found kube-prometheus' recording rule —
    the recorded series itself, with no ``rate()`` evaluated at read time. Each recorded point is a
    ``rate(…[window])`` over a window that ends less than one rule interval before the step's, so the statistics
    are those of the same windows, shifted:

    - a rule evaluated once per step (its interval is the step): its raw samples over the history are those
      points, one per step — a plain range, no subquery (a quarter of the counter's samples at a 5-minute scrape
      and a 20-minute step, each decoded once);
    - a rule evaluated more often: at each step its latest evaluation, ``last_over_time(…[step])`` in a subquery
      (a bare selector there costs a lookback seek per step), so the percentile is still over one point per step,
      as with ``rate()``.

    Measured on Prometheus 2.42 (bench/bench_rightsizing.py's world, 2,127 containers × 14 days at a 5-minute
    scrape, one p95 query over all of them, same load): over the ``rate()`` subquery 2.30 s; a rule evaluated every
    scrape read with ``last_over_time`` 1.44 s, with a bare selector 2.19 s; a rule evaluated once per step read
    as a plain range 1.23 s (half of it ``quantile_over_time``'s sort, which every path pays)."""
    w, step = duration(res.history_seconds), duration(res.step)
    recorded = res.recorded_metric
    if recorded is None:
        return f"({cpu_rate(sel, res)})[{w}:{step}]"
    if res.cpu_rule_interval == res.step:
        return f"{recorded}{{{sel}}}[{w}]"
    return f"last_over_time({recorded}{{{sel}}}[{step}])[{w}:{step}]"


def usage_queries(batch: Batch, res: Resolution, quantiles: Sequence[float] = CPU_QUANTILES,
                  chosen: float = 0.95) -> list[UsageQuery]:
    """The usage statistics of a batch, one query each (instant queries at the window end), all at full
    resolution. (Reading the percentiles that are only shown — not ``chosen`` — at a coarser step was tried:
    it saves ~10 %, since a subquery still decodes every sample it steps over; not worth two resolutions.)"""
    sel = f"{batch.matchers()},{CONTAINER_MATCHERS}"
    w = duration(res.history_seconds)
    rate = cpu_steps(sel, res)
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


# ---- the recorded CPU rate (kube-prometheus' recording rule) --------------------------------------------

# kube-prometheus (kubernetes-mixin rules/apps.libsonnet, group k8s.rules.container_cpu_usage_seconds_total)
# records, per container, ``sum by (cluster, namespace, pod, container) (rate(container_cpu_usage_seconds_total
# {<cAdvisor job>, image!=""}[5m]))``, in some versions joined with kube_pod_info to add ``node``; its ``sum_irate``
# twin is irate() (the last two samples of the window: another statistic). Rules are recognised by their
# expression, not their name; these names only make a mismatch worth a warning.
KUBE_PROMETHEUS_CPU_RULES = ("node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m",
                             "node_namespace_pod_container:container_cpu_usage_seconds_total:sum_irate")
# Its expression with the installation's own parts (grouping labels, cAdvisor selector, window) left open.
_RULE_RATE = "sum by ({by}) (rate(" + CPU_METRIC + "{{{selector}}}[{window}]))"
_RULE_NODE_JOIN = (" * on ({pod}) group_left (node) topk by ({pod}) "
                   "(1, max by ({pod}, node) (kube_pod_info{{{info}}}))")
_RULE_NEEDS = ("namespace", "pod", "container")
# Matchers that leave every container in: the scrape job (one job: its sum adds no duplicate), the cAdvisor
# path, and labels that only the pod cgroup and pause container lack or have (excluded here anyway).
_SAME_CONTAINERS = frozenset({("image", "!=", ""), ("container", "!=", ""), ("container", "!=", "POD"),
                              ("pod", "!=", ""), ("namespace", "!=", "")})
_ANY_VALUE = frozenset({("job", "="), ("metrics_path", "=")})
# The recorded series must hold this share of the containers the raw counter has at the window's start and end;
# fewer, and re-reading the rest with rate() costs more than the recorded path saves.
MIN_RECORDED_COVERAGE = 0.9


@dataclass(frozen=True)
class RecordingRule:
    """A recording rule as the rules API (or Mimir's ruler) lists it."""

    name: str
    expr: str
    group: str
    interval: float | None = None  # seconds between evaluations; None: the server's default
    health: str = ""  # ok | err | unknown; "" when the API does not say
    last_error: str = ""


@dataclass(frozen=True)
class RecordedRate:
    """A recording rule that records kube-prometheus' per-container CPU rate."""

    rule: RecordingRule
    window: int  # seconds of its rate()
    labels: tuple[str, ...]  # its ``by`` labels


@dataclass(frozen=True)
class RuleNote:
    """Why a recording rule that reads the CPU counter is not used."""

    rule: RecordingRule
    reason: str

    @property
    def expected(self) -> bool:
        """It has kube-prometheus' name: its expression was expected to match."""
        return self.rule.name in KUBE_PROMETHEUS_CPU_RULES

    def __str__(self) -> str:
        return f"recording rule {self.rule.name} (group {self.rule.group!r}) is not used: {self.reason}"


def rules_from_api(groups: Iterable[Mapping[str, Json]]) -> list[RecordingRule]:
    """The recording rules of a ``/api/v1/rules`` answer (Prometheus, or Mimir's ruler behind its prefix)."""
    out = []
    for g in groups:
        interval = g.get("interval")
        for r in g.get("rules") or []:
            if isinstance(r, dict) and r.get("type") == "recording" and isinstance(r.get("query"), str):
                out.append(RecordingRule(str(r.get("name") or ""), str(r["query"]), str(g.get("name") or ""),
                                         float(interval) if isinstance(interval, int | float) else None,
                                         str(r.get("health") or ""), str(r.get("lastError") or "")))
    return out


def rules_from_ruler(namespaces: Mapping[str, Iterable[Mapping[str, Json]]]) -> list[RecordingRule]:
    """The same from Mimir's ruler config API (namespace → groups with ``interval``, rules with ``record``)."""
    out = []
    for namespace, groups in namespaces.items():
        for g in groups:
            try:
                interval: float | None = parse_duration(str(g["interval"])).total_seconds()
            except (KeyError, ValueError):
                interval = None  # the ruler's evaluation interval (1m unless configured)
            for r in g.get("rules") or []:
                if isinstance(r, dict) and r.get("record") and isinstance(r.get("expr"), str):
                    out.append(RecordingRule(str(r["record"]), str(r["expr"]), f"{namespace}/{g.get('name') or ''}",
                                             interval))
    return out


def recorded_cpu_rate(rule: RecordingRule, normalizer: Normalizer | None = None) -> RecordedRate | str:
    """``rule`` as kube-prometheus' CPU rate, or the reason it is not one.

    The expression is parsed and compared, as canonical PromQL (matcher and label order, spacing, ``by`` before
    or after, ``300s`` or ``5m`` all alike), with kube-prometheus' expression written with the rule's own
    grouping labels, cAdvisor selector and window; any other difference (another function, an offset, a
    factor, a narrower selector, another join) makes it another series."""
    normalizer = normalizer or Normalizer()
    try:
        ast = strip_parens(normalizer.parse(rule.expr))
    except ValueError as exc:
        return f"its expression does not parse ({exc})"
    agg, join = ast, None
    if isinstance(ast, pp.BinaryExpr) and str(ast.op) == "*":
        agg, join = strip_parens(ast.lhs), strip_parens(ast.rhs)
    if not (isinstance(agg, pp.AggregateExpr) and str(agg.op) == "sum" and agg.modifier is not None
            and agg.modifier.type == pp.AggModifierType.By):
        return f"it is not a sum by (…) per container: {render(ast)}"
    labels = tuple(agg.modifier.labels)
    if not set(_RULE_NEEDS) <= set(labels):
        return f"it does not keep namespace, pod and container: {render(agg)}"
    call: Any = strip_parens(agg.expr)  # promql-parser has no type information
    func = call.func.name if isinstance(call, pp.Call) else None
    if func != "rate" or not isinstance(call.args[0], pp.MatrixSelector):
        what = ("irate() (the last two samples of each window: another statistic)" if func == "irate"
                else render(call))
        return f"it sums {what}, not rate() of the counter"
    matrix = call.args[0]
    metric, matchers = selector_matchers(matrix.vector_selector)
    if metric != CPU_METRIC:
        return f"it is the rate of {metric}, not of {CPU_METRIC}"
    if not any(label == "job" and op == "=" for label, op, _ in matchers):
        return ('its selector has no job="…" matcher: a container scraped by two jobs would be summed twice '
                f"({render(matrix.vector_selector)})")
    for label, op, value in matchers:
        if (label, op, value) not in _SAME_CONTAINERS and (label, op) not in _ANY_VALUE:
            return f"its selector keeps only the series with {label}{op}{quote(value)}; right-sizing reads all"
    window = int(matrix.range.total_seconds())
    expected = _RULE_RATE.format(by=", ".join(labels), window=duration(window), selector=_matchers_text(matchers))
    if join is not None:
        info = [vs for vs in _selectors(join) if selector_matchers(vs)[0] == "kube_pod_info"]
        if len(info) != 1:
            return f"it joins the rate with something other than kube_pod_info: {render(join)}"
        pod = ", ".join(x for x in labels if x != "container")
        expected += _RULE_NODE_JOIN.format(pod=pod, info=_matchers_text(selector_matchers(info[0])[1]))
    canonical, reference = render(ast), normalizer.canonical(expected)
    if canonical != reference:
        return f"its expression is not kube-prometheus' CPU rate: {canonical} (expected {reference})"
    return RecordedRate(rule, window, labels)


def _matchers_text(matchers: Iterable[tuple[str, str, str]]) -> str:
    return ", ".join(f"{label}{op}{quote(value)}" for label, op, value in matchers)


def _selectors(node: object) -> list[object]:
    """The vector selectors under ``node``."""
    if isinstance(node, pp.VectorSelector):
        return [node]
    return [s for child in children(node) if child is not None for s in _selectors(child)]


def choose_recorded_rate(rules: Sequence[RecordingRule], res: Resolution,
                         ) -> tuple[RecordedRate | None, list[RuleNote]]:
    """The recording rule the CPU percentiles may be read from at ``res``, and why each other rule that reads
    the CPU counter (or bears kube-prometheus' name) is not used.

    Usable: kube-prometheus' expression (:func:`recorded_cpu_rate`), the only rule recording that name, healthy,
    its rate window the sizing's (a percentile of 5-minute rates is not one of 10-minute rates) and evaluated at
    least once per step (else steps would repeat one evaluation). kube-prometheus' own name is preferred."""
    recorders = Counter(r.name for r in rules)
    normalizer = Normalizer()
    usable: list[RecordedRate] = []
    notes: list[RuleNote] = []
    for rule in rules:
        if rule.name not in KUBE_PROMETHEUS_CPU_RULES and CPU_METRIC not in rule.expr:
            continue
        found = recorded_cpu_rate(rule, normalizer)
        reason = found if isinstance(found, str) else _unusable(found, res, recorders[rule.name])
        if reason:
            notes.append(RuleNote(rule, reason))
        elif isinstance(found, RecordedRate):
            usable.append(found)
    usable.sort(key=lambda r: (r.rule.name not in KUBE_PROMETHEUS_CPU_RULES, r.rule.name))
    return (usable[0] if usable else None), notes


def _unusable(found: RecordedRate, res: Resolution, recorders: int) -> str | None:
    rule = found.rule
    if recorders > 1:
        return f"{recorders} rules record {rule.name}: its series would mix their expressions"
    if rule.health == "err":
        return f"its last evaluation failed ({rule.last_error or 'no error text'})"
    if found.window != res.rate_window:
        return (f"its rate window {_seconds(found.window)} is not the sizing's {_seconds(res.rate_window)} "
                "(percentiles of other windows are other statistics)")
    if rule.interval and rule.interval > res.step:
        return (f"it is evaluated every {_seconds(rule.interval)}, less often than the sizing's "
                f"{_seconds(res.step)} step")
    return None


def _seconds(value: float) -> str:
    return format_duration(timedelta(seconds=value))


def cpu_containers(namespace_regex: str, metric: str = CPU_METRIC, within: int | None = None) -> str:
    """How many containers ``metric`` has now (an instant query: one sample per series), or — ``within`` seconds —
    had a sample in the last ``within`` seconds (a rule evaluated less often than the lookback is still seen)."""
    sel = f"{metric}{{namespace=~{quote(namespace_regex)},{CONTAINER_MATCHERS}}}"
    if within:
        sel = f"last_over_time({sel}[{duration(within)}])"
    return f"count(count by ({CONTAINER_LABELS}) ({sel}))"


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
