"""Right-sizing reads CPU percentiles from kube-prometheus' recorded CPU rate when the source has it.

Unit tests of the detection (the rule is recognised by its expression, compared as a normalized AST, never by its
name alone) and of the queries. Integration: a Prometheus 2.42 of our own holding part of the devstack world
(backfilled by the devstack's own history code, with cAdvisor's ``image`` label), sized five times on the same
TSDB — without any rule, with kube-prometheus' rule (its history backfilled by evaluating the rule's expression
through the query API, as the rule manager would have, 53 s before each 5-minute step), with a rule of the same
name whose expression differs, with the expression evaluated on the minute (on every step), and with it evaluated
once per 5-minute step (read as a plain range) — and the recommendations compared.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devstack.history import MAX_BLOCK_DURATION, backfill
from devstack.workloads import Series, World, build_world
from tests.support.prometheus import KEEP_HISTORY, PROMTOOL, local_prometheus, om_sample
from traceo_finops.config import FinopsConfig
from traceo_finops.kit.context import RunContext, Target, TargetKind
from traceo_finops.kit.outcome import run_target
from traceo_finops.pricing import HOURS_PER_MONTH
from traceo_finops.prometheus import PrometheusClient, SourceSpec
from traceo_finops.rightsizing import queries as q
from traceo_finops.rightsizing.collect import collect_batch, plan
from traceo_finops.rightsizing.dataset import rows
from traceo_finops.rightsizing.model import merge
from traceo_finops.rightsizing.recommend import Policy, Prices
from traceo_finops.rightsizing.workflow import build
from traceo_finops.window import Window

RULE = "node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m"
# kube-prometheus' rule as its mixin renders it (kubernetes-mixin rules/apps.libsonnet, kube-prometheus' config:
# clusterLabel "cluster", cadvisorSelector job="kubelet", metrics_path="/metrics/cadvisor").
KUBE_PROMETHEUS = """sum by (cluster, namespace, pod, container) (
  rate(container_cpu_usage_seconds_total{job="kubelet", metrics_path="/metrics/cadvisor", image!=""}[5m])
) * on (cluster, namespace, pod) group_left(node) topk by (cluster, namespace, pod) (
  1, max by(cluster, namespace, pod, node) (kube_pod_info{node!=""})
)"""
# The older mixin (no node join), and the devstack's own rule (another name, same series).
PLAIN = ('sum by (namespace, pod, container) (rate(container_cpu_usage_seconds_total{job="kubelet", '
         'metrics_path="/metrics/cadvisor", container!=""}[5m]))')
RES = q.choose_resolution(14 * 86400, 300, 60)  # step = rate window = 5m


def rule(expr: str, name: str = RULE, interval: float | None = 60, health: str = "ok") -> q.RecordingRule:
    return q.RecordingRule(name, expr, "k8s.rules", interval, health)


# ---- detection ------------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("expr", [
    KUBE_PROMETHEUS,
    PLAIN,
    # The same expressions spelt otherwise: `by` after, labels and matchers reordered, 300s, extra parentheses.
    'sum(rate(container_cpu_usage_seconds_total{image!="",job="cadvisor"}[300s])) by (pod, container, namespace)',
    "(" + KUBE_PROMETHEUS.replace("[5m]", "[300s]").replace("cluster, namespace, pod, container",
                                                             "container, pod, namespace, cluster") + ")",
])
def test_kube_prometheus_cpu_rate_is_recognised_by_its_expression(expr: str) -> None:
    found = q.recorded_cpu_rate(rule(expr))
    assert isinstance(found, q.RecordedRate), found
    assert found.window == 300 and {"namespace", "pod", "container"} <= set(found.labels)
    chosen, notes = q.choose_recorded_rate([rule(expr)], RES)
    assert chosen is not None and chosen.rule.name == RULE and notes == []


@pytest.mark.unit
@pytest.mark.parametrize(("expr", "reason"), [
    (KUBE_PROMETHEUS.replace("rate(", "irate("), "irate() (the last two samples"),
    (KUBE_PROMETHEUS.replace("[5m]", "[1m]"), "rate window 1m is not the sizing's 5m"),
    (KUBE_PROMETHEUS.replace("sum by", "avg by", 1), "not a sum by"),
    (KUBE_PROMETHEUS + " * 100", "not a sum by"),
    (PLAIN.replace("namespace, pod, container", "namespace, pod"), "does not keep namespace, pod and container"),
    (PLAIN.replace('container!=""', 'namespace="checkout"'), 'keeps only the series with namespace="checkout"'),
    (PLAIN.replace('job="kubelet", ', ""), 'no job="…" matcher'),
    (PLAIN.replace('job="kubelet"', 'job=~"kubelet|cadvisor"'), 'no job="…" matcher'),
    (PLAIN.replace("[5m]", "[5m] offset 1h"), "is not kube-prometheus' CPU rate"),
    (PLAIN.replace("container_cpu_usage_seconds_total", "container_cpu_system_seconds_total"),
     "rate of container_cpu_system_seconds_total"),
    (KUBE_PROMETHEUS.replace("kube_pod_info", "kube_node_info"), "other than kube_pod_info"),
    (KUBE_PROMETHEUS.replace("group_left(node)", "group_left(node, host_ip)"), "is not kube-prometheus' CPU rate"),
    ("sum by (namespace, pod, container) (rate(container_cpu_usage_seconds_total{job=\"x\"}[5m]", "does not parse"),
])
def test_a_rule_with_kube_prometheus_name_and_another_expression_is_not_used(expr: str, reason: str) -> None:
    chosen, [note] = q.choose_recorded_rate([rule(expr)], RES)
    assert chosen is None and note.expected and reason in note.reason, note.reason
    assert str(note).startswith(f"recording rule {RULE} (group 'k8s.rules') is not used: ")


@pytest.mark.unit
def test_rules_are_chosen_only_when_their_statistics_are_the_sizing_ones() -> None:
    # Evaluated less often than the 5m step: steps would repeat one evaluation.
    assert "evaluated every 10m, less often than the sizing's 5m step" in \
        q.choose_recorded_rate([rule(PLAIN, interval=600)], RES)[1][0].reason
    # A sizing whose rate window grew (a long history at a coarse step): a 5m rule is another statistic.
    coarse = q.choose_resolution(60 * 86400, 300, 60)
    assert coarse.rate_window == 600
    assert "rate window 5m is not the sizing's 10m" in q.choose_recorded_rate([rule(PLAIN)], coarse)[1][0].reason
    # Failing, or recorded twice (two rules of one name mix their series).
    assert "last evaluation failed (boom)" in q.choose_recorded_rate(
        [replace(rule(PLAIN), health="err", last_error="boom")], RES)[1][0].reason
    chosen, notes = q.choose_recorded_rate([rule(PLAIN), rule(KUBE_PROMETHEUS)], RES)
    assert chosen is None and {n.reason for n in notes} == {f"2 rules record {RULE}: its series would mix their "
                                                           "expressions"}
    # Any name: the devstack's own rule is recognised too; kube-prometheus' name wins when both are there.
    other = rule(PLAIN, name="namespace_pod_container:container_cpu_usage_seconds:rate5m")
    assert (q.choose_recorded_rate([other], RES)[0] or pytest.fail()).rule.name == other.name
    assert (q.choose_recorded_rate([other, rule(KUBE_PROMETHEUS)], RES)[0] or pytest.fail()).rule.name == RULE
    # Rules that do not read the CPU counter are not looked at; other CPU rules are noted, not warned about.
    chosen, notes = q.choose_recorded_rate(
        [rule("sum by (namespace) (kube_pod_info)", name="a"),
         rule("sum by (namespace) (rate(container_cpu_usage_seconds_total[5m]))", name="namespace:cpu:rate5m")], RES)
    assert chosen is None and [(n.rule.name, n.expected) for n in notes] == [("namespace:cpu:rate5m", False)]


@pytest.mark.unit
def test_rules_are_read_from_the_rules_api_and_from_mimirs_ruler() -> None:
    api = [{"name": "k8s", "interval": 30, "rules": [
        {"type": "recording", "name": RULE, "query": PLAIN, "health": "ok"},
        {"type": "alerting", "name": "HighCPU", "query": "up == 0"}]}]
    assert q.rules_from_api(api) == [q.RecordingRule(RULE, PLAIN, "k8s", 30.0, "ok")]
    ruler = {"kube-prometheus": [{"name": "k8s", "interval": "1m", "rules": [{"record": RULE, "expr": PLAIN}]},
                                 {"name": "default", "rules": [{"record": "x", "expr": "up"}, {"alert": "A"}]}]}
    assert q.rules_from_ruler(ruler) == [q.RecordingRule(RULE, PLAIN, "kube-prometheus/k8s", 60.0),
                                         q.RecordingRule("x", "up", "kube-prometheus/default", None)]


@pytest.mark.unit
def test_the_recorded_path_reads_the_rules_evaluations_at_the_sizing_step() -> None:
    batch = q.Batch(("checkout",))
    plain = {u.stat: u.promql for u in q.usage_queries(batch, RES)}
    recorded_res = RES.with_cpu_source(RULE, 30)
    recorded = {u.stat: u.promql for u in q.usage_queries(batch, recorded_res)}
    sel = 'namespace="checkout",container!="",container!="POD",pod!=""'
    # Evaluated more often than the step: its latest evaluation at each step (one point per step, as rate()'s).
    assert recorded["cpu_p95"] == (f"max by (namespace, pod, container) (quantile_over_time(0.95, "
                                   f"last_over_time({RULE}{{{sel}}}[300s])[1209600s:300s]))")
    assert recorded["cpu_max"] == (f"max by (namespace, pod, container) (max_over_time("
                                   f"last_over_time({RULE}{{{sel}}}[300s])[1209600s:300s]))")
    assert "rate(" in plain["cpu_p95"] and "rate(" not in recorded["cpu_p95"] + recorded["cpu_max"]
    # Evaluated once per step: its samples are those points; a plain range over the history, no subquery.
    per_step = {u.stat: u.promql for u in q.usage_queries(batch, RES.with_cpu_source(RULE, RES.step))}
    assert per_step["cpu_p95"] == (f"max by (namespace, pod, container) (quantile_over_time(0.95, "
                                   f"{RULE}{{{sel}}}[1209600s]))")
    # Unknown interval (the server's default): read as the finer case, which is right for any interval <= step.
    unknown = {u.stat: u.promql for u in q.usage_queries(batch, RES.with_cpu_source(RULE, None))}
    assert unknown["cpu_p95"] == recorded["cpu_p95"]
    # Coverage is counted over the last step: a rule evaluated every 20 minutes is not missed by a 5-minute lookback.
    assert q.cpu_containers(".+", RULE, 1200) == (
        f'count(count by (namespace, pod, container) (last_over_time({RULE}{{namespace=~".+",{q.CONTAINER_MATCHERS}}}'
        '[1200s])))')
    # Coverage and memory stay on the raw series.
    for stat in ("cpu_samples", "memory_peak", "memory_p99"):
        assert recorded[stat] == plain[stat]
    # The choice travels with the resolution (plan → batches → dataset metadata); old payloads read as rate().
    assert q.Resolution.from_dict(recorded_res.as_dict()) == recorded_res
    assert recorded_res.as_dict()["cpu_rate_source"] == f"recorded:{RULE}" and recorded_res.recorded_metric == RULE
    old = {k: v for k, v in RES.as_dict().items() if not k.startswith("cpu_")}
    assert q.Resolution.from_dict(old).cpu_rate_source == "rate()" and q.Resolution.from_dict(old).recorded_metric \
        is None


# ---- against a real Prometheus --------------------------------------------------------------------------

END = 1_780_272_000  # a whole minute: the last sample of the history
HISTORY_MINUTES = 4 * 1440
START = END - HISTORY_MINUTES * 60
EVAL_OFFSET = 7  # the rule group runs at second 7 of each minute: 53 s before each 5-minute step
ALIGNED = "namespace_pod_container:container_cpu_usage_seconds_total:sum_rate5m"  # any name: found by expression
PER_STEP = "pod_container:container_cpu_usage_seconds_total:sum_rate5m"  # the same, evaluated every 5 minutes
PER_STEP_OFFSET = 127  # its evaluations: 173 s before each 5-minute step
NAMESPACES = ("checkout", "search")
WITHOUT_IMAGE = "search-ranker"  # its containers lack cAdvisor's image label: kube-prometheus' image!="" drops them
PRICES = Prices(0.04, 0.005)
# "Same recommendations within tolerance": each CPU percentile and the recommended CPU request within REL (or 5
# millicores, one rounding step, for tiny ones), the same status; cpu_max (shown, not used) within MAX_REL, being one
# extreme window, and cpu_p99 (shown, not used: the 12th largest of 1,152 windows) within TAIL_REL. Spiky workloads
# (10-minute bursts over a low base) within SPIKY_REL: their p95 sits on the cliff between base and bursts, where a
# shifted window moves most (the devstack tests give them leeway too). Why figures differ at all: each recorded point
# is a 5m rate over a window ending up to one rule interval before the step's (53 s for the 1-minute rule, 173 s for
# the rule evaluated once per step); see test_with_the_rule_evaluated_at_the_steps_the_statistics_are_the_same.
REL, SPIKY_REL, TAIL_REL, MAX_REL, ABS_CORES = 0.05, 0.10, 0.10, 0.15, 0.005
PERCENTILES = ("cpu_p50", "cpu_p90", "cpu_p95", "cpu_p99", "cpu_baseline", "recommended_cpu_request")


@dataclass
class _ImagedWorld(World):
    """The devstack world with cAdvisor's ``image`` label on container series (kube-prometheus selects on it)."""

    def k8s_series(self, k_lo: int, k_hi: int) -> Iterator[Series]:
        for s in super().k8s_series(k_lo, k_hi):
            labels = dict(s.labels)
            if s.metric.startswith("container_") and labels.get("container") and \
                    not labels["pod"].startswith(WITHOUT_IMAGE):
                s = replace(s, labels=tuple(sorted({**labels, "image": f"registry/{labels['container']}:1"}.items())))
            yield s


def _world() -> World:
    full = build_world(42, HISTORY_MINUTES)
    keep = tuple(w for w in full.workloads if w.namespace in NAMESPACES or w.name == "feature-backfill")
    return _ImagedWorld(full.seed, full.history_minutes, full.nodes, keep)


def _rules(expr: str, record: str = RULE, interval: str = "") -> str:
    indented = "\n".join("          " + line for line in expr.splitlines())
    every = f"    interval: {interval}\n" if interval else ""
    return (f"groups:\n  - name: k8s.rules.container_cpu_usage_seconds_total\n{every}    rules:\n"
            f"      - record: {record}\n        expr: |\n{indented}\n")


def _config(rules: Path | None) -> dict[str, Any]:
    return {"global": {"scrape_interval": "1m", "evaluation_interval": "1m"}, "scrape_configs": [],
            **({"rule_files": [str(rules)]} if rules else {})}


def _record(url: str, data: Path, record: str, offset: int, every: int = 60) -> None:
    """The rule's history, as the rule manager would have written it: its expression evaluated every ``every``
    seconds, ``offset`` seconds into each (through the query API: the same engine), written into ``data`` as series
    ``record``.

    Blocks as long as the raw history's (18 h, as devstack.history writes them), as a live TSDB would have compacted
    the rule's series with the raw ones: 2 h blocks would make every read open 48."""
    with PrometheusClient(SourceSpec(name="eval", base_url=url, timeout=120)) as client:
        matrix = client.query_range(KUBE_PROMETHEUS, START + offset, END, every)
    lines = []
    for series in matrix:
        labels = {k: v for k, v in series["metric"].items() if k != "__name__"}  # type: ignore[union-attr]
        for t, v in series["values"]:  # type: ignore[union-attr]
            lines.append(om_sample(record, labels, v, int(t)))
    om = data.parent / f"{record}.om"
    om.write_text("".join(lines) + "# EOF\n")
    done = subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                           f"--max-block-duration={MAX_BLOCK_DURATION}", str(om), str(data)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


class _Logs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def _size(url: str, name: str) -> dict[str, Any]:
    """plan + collect + rows, as the workflow does, with what the plan logged and the CPU queries' timings."""
    spec = SourceSpec(name=name, base_url=url, timeout=120)
    at = datetime.fromtimestamp(END + 30, UTC)
    logs = _Logs()
    logger = logging.getLogger("traceo_finops.rightsizing.collect")
    logger.addHandler(logs)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        p = plan(spec, at, END + 30 - START, rate_window=300, max_points=11_000, max_samples_per_query=5_000_000)
        pieces = [collect_batch(spec, b, p.resolution, at) for b in p.batches]
    finally:
        logger.removeHandler(logs)
        logger.setLevel(old_level)
    containers, workloads = merge(r.as_dict() for r in pieces)
    report, _ = rows(name, "", containers, workloads, Policy(), PRICES, p.resolution,
                     datetime.fromtimestamp(START, UTC), at)
    return {"plan": p, "pieces": pieces, "logs": logs.lines, "cpu_seconds": _cpu_seconds(spec, p, at),
            "rows": {(r["namespace"], r["workload_name"], r["container"]): r for r in report}}


def _cpu_seconds(spec: SourceSpec, p: Any, at: datetime) -> float:
    """Median wall time of the five CPU statistics over every batch (three runs)."""
    runs = []
    with PrometheusClient(spec) as client:
        for _ in range(3):
            t0 = time.perf_counter()
            for b in p.batches:
                for u in q.usage_queries(b, p.resolution):
                    if u.stat.startswith("cpu_") and u.stat != "cpu_samples":
                        client.query(u.promql, time=at)
            runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


@pytest.fixture(scope="module")
def sized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One TSDB, four Prometheus processes on it in turn: no rule; kube-prometheus' rule (its history evaluated at
    second 7 of each minute); the same name with irate(); kube-prometheus' expression under another name, its
    history evaluated on the minute (so at every 5-minute step)."""
    root = tmp_path_factory.mktemp("recorded")
    data = root / "data"
    world = _world()
    backfill(world, START, data, root / "tmp", PROMTOOL, workers=1)
    shutil.rmtree(root / "tmp", ignore_errors=True)
    rules = {"with": _rules(KUBE_PROMETHEUS), "misnamed": _rules(KUBE_PROMETHEUS.replace("rate(", "irate(")),
             "aligned": _rules(KUBE_PROMETHEUS, ALIGNED), "per_step": _rules(KUBE_PROMETHEUS, PER_STEP, "5m")}
    out: dict[str, Any] = {"profiles": {(w.namespace, w.name): w.profile for w in world.workloads}}
    for phase in ("without", "with", "misnamed", "aligned", "per_step"):
        (root / phase).mkdir()
        rule_file = None
        if phase in rules:
            rule_file = root / phase / "k8s.rules.yml"
            rule_file.write_text(rules[phase])
        with local_prometheus(root / phase, _config(rule_file), KEEP_HISTORY, data=data) as url:
            out[phase] = _size(url, phase)
            if phase == "without":  # the rules' histories, from the raw series (then the next process reads them)
                _record(url, data, RULE, EVAL_OFFSET)
                _record(url, data, ALIGNED, 0)
                _record(url, data, PER_STEP, PER_STEP_OFFSET, 300)
    return out


@pytest.mark.integration
def test_the_plan_says_which_cpu_rate_it_reads(sized: dict[str, Any]) -> None:
    without, with_ = sized["without"]["plan"].resolution, sized["with"]["plan"].resolution
    assert without.cpu_rate_source == "rate()" and without.recorded_metric is None
    assert with_.cpu_rate_source == f"recorded:{RULE}" and with_.cpu_rule_interval == 60
    assert replace(with_, cpu_rate_source="rate()", cpu_rule_interval=None) == without  # nothing else changes
    assert any(f"CPU percentiles from recording rule {RULE}" in line for line in sized["with"]["logs"])
    assert any("CPU rate from recorded:" in line for line in sized["with"]["logs"])
    # The dataset's metadata names the source per source/tenant (workflow.build, as the DAG's write_report runs it).
    ctx = RunContext(FinopsConfig.model_construct(), "rightsizing", "finops_rightsizing", "manual__1",
                     Window(datetime.fromtimestamp(START, UTC), datetime.fromtimestamp(END + 30, UTC)))
    pieces = [run_target(Target(TargetKind.BATCH, source=name), lambda name=name, r=r: {
        "source": name, "tenant": "", "resolution": sized[name]["plan"].resolution.as_dict(), **r.as_dict()})
        for name in ("without", "with") for r in sized[name]["pieces"]]
    report, _ = build(ctx, {"plans": [], "batches": []}, pieces, [])
    assert report.metadata["cpu_rate_source"] == f"with=recorded:{RULE},without=rate()"


@pytest.mark.integration
def test_same_recommendations_with_and_without_the_recorded_rate(sized: dict[str, Any]) -> None:
    _assert_same_recommendations(sized, "with")
    print(f"CPU statistics' query time (median of 3): rate() {sized['without']['cpu_seconds']:.3f}s, "
          f"recorded {sized['with']['cpu_seconds']:.3f}s")


@pytest.mark.integration
def test_a_rule_evaluated_once_per_step_is_read_as_a_plain_range_with_the_same_recommendations(
        sized: dict[str, Any]) -> None:
    """kube-prometheus' expression in a group evaluated every 5 minutes (the step): each evaluation is the one point
    of its step, so the percentiles read its raw samples over the history (no subquery), and recommend the same."""
    res = sized["per_step"]["plan"].resolution
    assert res.cpu_rate_source == f"recorded:{PER_STEP}" and res.cpu_rule_interval == res.step == 300
    promql = {u.stat: u.promql for u in q.usage_queries(sized["per_step"]["plan"].batches[0], res)}
    assert f"{PER_STEP}{{" in promql["cpu_p95"] and ":300s]" not in promql["cpu_p95"]
    _assert_same_recommendations(sized, "per_step")
    print(f"CPU statistics' query time (median of 3): rate() {sized['without']['cpu_seconds']:.3f}s, "
          f"recorded every step {sized['per_step']['cpu_seconds']:.3f}s")


def _assert_same_recommendations(sized: dict[str, Any], phase: str) -> None:
    without, with_ = sized["without"]["rows"], sized[phase]["rows"]
    assert set(with_) == set(without) and len(without) >= 15  # the same containers
    worst: dict[str, tuple[float, tuple[str, str, str]]] = {}
    for key, a in without.items():
        b = with_[key]
        # Memory, coverage, current requests, history: read from the raw series either way, so identical.
        for col in ("memory_peak", "memory_p99", "recommended_memory_request", "current_cpu_request",
                    "confidence_days", "pods_seen", "runs", "replicas"):
            assert a[col] == b[col], (key, col)
        spiky = sized["profiles"][key[:2]] == "spiky_cpu"
        for col in (*PERCENTILES, "cpu_max"):
            if a[col] is None:
                assert b[col] is None, (key, col)
                continue
            rel = MAX_REL if col == "cpu_max" else TAIL_REL if col == "cpu_p99" else SPIKY_REL if spiky else REL
            diff = abs(b[col] - a[col]) / max(a[col], 1e-9)
            if diff > worst.get(col, (0.0,))[0]:
                worst[col] = (diff, key)
            assert b[col] == pytest.approx(a[col], rel=rel, abs=ABS_CORES), (key, col, a[col], b[col])
        assert a["status"] == b["status"], key
        # Dollars move with the CPU request only (memory is identical): by its difference at the CPU price.
        moved = abs(b["recommended_cpu_request"] - a["recommended_cpu_request"]) * PRICES.vcpu_hour * \
            a["billed_replicas"] * HOURS_PER_MONTH
        assert abs(b["monthly_saving_usd"] - a["monthly_saving_usd"]) <= moved + 0.01, key
    print(f"\nlargest relative differences with the recorded rate ({phase}):",
          {k: (round(v, 4), "/".join(key[1:])) for k, (v, key) in sorted(worst.items())})


@pytest.mark.integration
def test_with_the_rule_evaluated_at_the_steps_the_statistics_are_the_same(sized: dict[str, Any]) -> None:
    """The rule's evaluations on the minute fall on every 5-minute step: each recorded point is then the very rate()
    the plain path computes, so every container whose pods ran to the window's end has the same figures to float
    precision. The others (HPA scale-downs, Job runs) differ by one point per ended pod: a backfill cannot write the
    staleness marker the live rule manager writes when a series vanishes, so the last evaluation is read once more
    (within the 5-minute lookback)."""
    assert sized["aligned"]["plan"].resolution.cpu_rate_source == f"recorded:{ALIGNED}"
    exact = 0
    for key, a in sized["without"]["rows"].items():
        b = sized["aligned"]["rows"][key]
        for col in ("cpu_p50", "cpu_p90", "cpu_p95", "cpu_p99", "cpu_max"):
            churned = a["pods_seen"] > (a["replicas"] or 0)
            # A Job run has 36 points: one more moves a percentile by up to 1/36 of its spread.
            assert b[col] == pytest.approx(a[col], rel=0.02 if churned else 1e-9), (key, col)
        exact += not churned
    assert exact >= 10


@pytest.mark.integration
def test_containers_the_rule_does_not_hold_are_read_with_rate(sized: dict[str, Any]) -> None:
    """search-ranker's containers have no image label: kube-prometheus' rule drops them; their CPU still comes
    (from rate()), the same as without the rule."""
    skipped = sum(r.skipped.get("containers not in the recorded CPU rate (read with rate())", 0)
                  for r in sized["with"]["pieces"])
    ranker = [k for k in sized["with"]["rows"] if k[1] == WITHOUT_IMAGE]
    assert ranker and skipped >= len(ranker)
    for key in ranker:
        a, b = sized["without"]["rows"][key], sized["with"]["rows"][key]
        assert b["cpu_p95"] is not None and b["cpu_p95"] == pytest.approx(a["cpu_p95"], rel=1e-9)


@pytest.mark.integration
def test_a_rule_of_the_same_name_with_another_expression_is_ignored_and_says_why(sized: dict[str, Any]) -> None:
    misnamed = sized["misnamed"]
    assert misnamed["plan"].resolution.cpu_rate_source == "rate()"
    [warning] = [line for line in misnamed["logs"] if line.startswith("WARNING")]
    assert f"recording rule {RULE}" in warning and "is not used: it sums irate()" in warning
    # Its series is in the TSDB all the same (backfilled): ignoring it gives today's figures exactly.
    for key, row in sized["without"]["rows"].items():
        assert misnamed["rows"][key]["cpu_p95"] == row["cpu_p95"], key
