"""Batch workloads (Jobs, CronJobs) sized from their runs, priced from their running time, with every status.

Unit tests on :class:`ContainerUsage` pieces with hand-worked figures; integration tests against a Prometheus 2.42
of our own holding (a) the devstack world's Jobs, backfilled by the devstack's own history code, checked against
its ground truth, and (b) a crafted CronJob of 48 hourly runs without job metrics (``kube_job_status_active``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from devstack.history import backfill, workload_truth
from devstack.workloads import World, build_world
from tests.support.prometheus import KEEP_HISTORY, PROMTOOL, backfill_openmetrics, local_prometheus, om_sample
from traceo_finops.prometheus import SourceSpec
from traceo_finops.quality import check
from traceo_finops.rightsizing.collect import collect_batch, plan
from traceo_finops.rightsizing.dataset import RIGHTSIZING, rows
from traceo_finops.rightsizing.model import ContainerUsage, Run, WorkloadInfo, merge
from traceo_finops.rightsizing.queries import choose_resolution
from traceo_finops.rightsizing.recommend import (
    Policy,
    Prices,
    Status,
    recommend,
    round_cpu,
    round_memory,
    run_cpu,
    weighted_quantile,
)

MIB, GIB, DAY = 2**20, 2**30, 86400.0
PRICES = Prices(0.04, 0.005)


def run(i: int, p95: float, seconds: float = 600.0, peak: float = 300 * MIB, **cpu: float) -> Run:
    figures = {"p50": p95 / 2, "p90": p95 * 0.9, "p95": p95, "p99": p95 * 1.05, "max": p95 * 1.2, **cpu}
    return Run(f"job-{i}", figures, int(seconds // 60), seconds, peak)


def cron(runs: list[Run], **kw: Any) -> ContainerUsage:
    """A CronJob's container as collect_batch builds it: the max across pods, plus one Run per pod."""
    base: dict[str, Any] = dict(
        namespace="ns", kind="CronJob", name="report", container="app", pods=[r.pod for r in runs], alive_pods=3,
        cpu={k: max(r.cpu[k] for r in runs) for k in runs[0].cpu} if runs else {},
        cpu_samples=sum(r.cpu_samples for r in runs), expected_samples=float(sum(r.cpu_samples for r in runs)) * 6,
        pod_seconds=sum(r.seconds for r in runs) * 6, memory_peak=max((r.memory_peak for r in runs), default=None),
        cpu_request=1.0, memory_request=1 * GIB, memory_limit=1 * GIB, requests_alive=True, runs=runs,
        history_seconds=sum(r.seconds for r in runs) * 6)
    base.update(kw)
    return ContainerUsage(**base)


# ---- the rule -----------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_weighted_quantile_is_the_value_where_the_cumulative_weight_reaches_q() -> None:
    assert weighted_quantile([(1.0, 1), (2.0, 1), (3.0, 1), (4.0, 1)], 0.5) == 2.0  # 2/4 reached at 2
    assert weighted_quantile([(1.0, 1), (2.0, 1), (3.0, 1), (4.0, 1)], 0.51) == 3.0
    assert weighted_quantile([(4.0, 1), (1.0, 1), (3.0, 1), (2.0, 1)], 0.95) == 4.0  # order does not matter
    assert weighted_quantile([(1.0, 9), (5.0, 1)], 0.9) == 1.0 and weighted_quantile([(1.0, 9), (5.0, 1)], 0.91) == 5
    assert weighted_quantile([(0.1 * i, 1) for i in range(1, 101)], 0.95) == pytest.approx(9.5)  # the 95th of 100
    assert weighted_quantile([], 0.95) is None and weighted_quantile([(1.0, 0)], 0.5) is None


@pytest.mark.unit
def test_cpu_is_the_time_weighted_p95_of_the_runs_p95_not_the_worst_run() -> None:
    # 99 runs of 10 minutes at 0.2 cores, one at 3 cores: the max across pods would ask 3.45 cores of every run.
    runs = [run(i, 0.2) for i in range(99)] + [run(99, 3.0)]
    rec = recommend(cron(runs), Policy())
    assert rec.cpu_baseline == pytest.approx(0.2) and rec.cpu_request == pytest.approx(0.23)
    assert rec.cpu["max"] == pytest.approx(3.6)  # the largest run's max is still shown
    # Six heavy runs of a hundred (6 % of the running time) are more than the 5 % the p95 leaves out.
    runs = [run(i, 0.2) for i in range(94)] + [run(94 + i, 1.0 + i / 10) for i in range(6)]
    assert recommend(cron(runs), Policy()).cpu_baseline == pytest.approx(1.0)  # 95th of 100: the 1st heavy one
    runs = [run(i, 0.2) for i in range(95)] + [run(95 + i, 1.0 + i / 10) for i in range(5)]
    assert recommend(cron(runs), Policy()).cpu_baseline == pytest.approx(0.2)  # 5 % heavy: left to throttling
    # One long heavy run among short light ones is half the running time: it sets the request.
    runs = [run(i, 0.1, seconds=300) for i in range(23)] + [run(23, 1.0, seconds=2 * 3600)]
    assert recommend(cron(runs), Policy()).cpu_baseline == pytest.approx(1.0)


@pytest.mark.unit
def test_every_percentile_column_is_that_percentile_over_the_runs() -> None:
    runs = [run(i, 0.1 * (i + 1), p50=0.01 * (i + 1)) for i in range(20)]  # p95 0.1 … 2.0, p50 0.01 … 0.2
    figures = run_cpu(runs)
    assert figures["p95"] == pytest.approx(1.9)  # the 19th of 20 equal runs reaches 95 %
    assert figures["p50"] == pytest.approx(0.10)  # the 10th reaches 50 %
    assert figures["max"] == pytest.approx(2.4) and figures["p50"] <= figures["p95"] <= figures["max"]
    # A differently chosen percentile: p90 of the runs' p90.
    rec = recommend(cron(runs), Policy(cpu_percentile=0.9))
    assert rec.cpu_baseline == pytest.approx(0.9 * 1.8)  # the 18th run's p90


@pytest.mark.unit
def test_memory_is_the_largest_runs_peak_plus_margin() -> None:
    runs = [run(i, 0.2, peak=(300 + i) * MIB) for i in range(30)] + [run(30, 0.2, peak=700 * MIB)]
    rec = recommend(cron(runs), Policy())
    assert rec.memory_baseline == 700 * MIB and rec.memory_request == round_memory(700 * MIB * 1.15)  # 808Mi
    assert rec.memory_limit == rec.memory_request


@pytest.mark.unit
def test_one_long_run_is_sized_as_before() -> None:
    """A Job with one pod: the percentile of one run is that run's, and its days of samples are the evidence."""
    [only] = runs = [run(0, 0.4, seconds=3 * DAY)]
    job = cron(runs, kind="Job", name="migrate", history_seconds=3 * DAY, expected_samples=float(only.cpu_samples))
    rec = recommend(job, Policy())
    assert rec.cpu_baseline == 0.4 and rec.cpu_request == round_cpu(0.4 * 1.15)
    assert rec.confidence.runs == 1 and rec.confidence.days == pytest.approx(3.0)
    assert rec.status is Status.OVER


@pytest.mark.unit
def test_confidence_counts_runs() -> None:
    """n runs: n / (n + 1); min_runs (3) runs are enough where the pods' samples add up to minutes."""
    short = [run(i, 0.2, seconds=300) for i in range(2)]  # 10 minutes of samples in all
    two = recommend(cron(short), Policy())
    assert two.status is Status.INSUFFICIENT and two.confidence.runs == 2
    assert "2 runs (needs 1 days or 3 runs)" in two.reason
    three = recommend(cron([*short, run(2, 0.2, seconds=300)]), Policy())
    assert three.status is Status.OVER and three.confidence.score == pytest.approx(3 / 4)
    many = recommend(cron([run(i, 0.2, seconds=300) for i in range(47)]), Policy())
    assert many.confidence.days == 47 and many.confidence.score == pytest.approx(47 / 48)
    assert many.confidence.sample_days < 1  # its samples alone: not a day
    assert recommend(cron([*short, run(2, 0.2, seconds=300)]), Policy(min_runs=4)).status is Status.INSUFFICIENT
    # Runs are a batch workload's evidence only: a Deployment's pods are replicas.
    deploy = recommend(cron([run(i, 0.2, seconds=300) for i in range(47)], kind="Deployment"), Policy())
    assert deploy.status is Status.INSUFFICIENT and deploy.confidence.runs is None


@pytest.mark.unit
def test_no_requests_is_not_hidden_by_insufficient_data() -> None:
    rec = recommend(cron([run(0, 0.2, seconds=300)], cpu_request=None, memory_request=None), Policy())
    assert rec.statuses == (Status.INSUFFICIENT, Status.NO_REQUESTS) and rec.status is Status.INSUFFICIENT
    assert "no cpu and memory request" in rec.reason


@pytest.mark.unit
def test_pods_that_never_ran_are_no_runs_and_say_so() -> None:
    """Pods without a start time have no container samples: no run, no figure, a clear reason."""
    pending = cron([], pods=["job-0", "job-1"], cpu_samples=0, expected_samples=0.0, history_seconds=DAY)
    rec = recommend(pending, Policy())
    assert rec.statuses == (Status.INSUFFICIENT,) and rec.cpu_request is None and rec.memory_request is None
    assert "none of its 2 pods ran" in rec.reason
    some = cron([run(i, 0.2) for i in range(5)], pods=[f"job-{i}" for i in range(7)])
    assert recommend(some, Policy()).status is Status.OVER and "(2 more pods never ran)" in recommend(
        some, Policy()).reason


@pytest.mark.unit
def test_runs_seen_by_two_batches_merge_once_each() -> None:
    a = cron([run(0, 0.2), run(1, 0.3)])
    b = cron([run(1, 0.3), run(2, 0.4)], pods=["job-1", "job-2"])
    [merged], _ = merge([{"containers": [a.as_dict()]}, {"containers": [b.as_dict()]}])
    assert [r.pod for r in merged.runs] == ["job-0", "job-1", "job-2"]
    assert all(isinstance(r, Run) for r in merged.runs) and merged.runs[2].cpu["p95"] == 0.4


@pytest.mark.unit
def test_jobs_are_priced_from_running_time_without_job_metrics() -> None:
    """No kube_job_status_active: the runs' running time over the window; with it, the active pods' average."""
    start, end = datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 5, 15, tzinfo=UTC)
    window = (end - start).total_seconds()
    runs = [run(i, 0.2, seconds=1800) for i in range(14 * 24)]  # hourly, 30 minutes each
    res = choose_resolution(window, 300, 60)
    [row], _ = rows("s", "", [cron(runs)], {}, Policy(), PRICES, res, start, end)
    assert row["billed_replicas"] == pytest.approx(14 * 24 * 1800 / window) == 0.5
    assert row["monthly_cost_now_usd"] == pytest.approx((0.04 + 0.005) * 0.5 * 730)
    assert row["runs"] == 336 and row["statuses"] == ["over-provisioned"] and row["monthly_saving_usd"] > 0
    info = WorkloadInfo("ns", "CronJob", "report", replicas=0, avg_replicas=0.25)
    [metered], _ = rows("t", "", [cron(runs)], {info.key: info}, Policy(), PRICES, res, start, end)
    assert metered["billed_replicas"] == 0.25 and metered["replicas"] == 0
    # The rows pass the dataset's gate (v2: statuses, runs).
    assert RIGHTSIZING.version == 2
    check(RIGHTSIZING.name, RIGHTSIZING.table([row, metered]), RIGHTSIZING.expectations)


# ---- against a real Prometheus ------------------------------------------------------------------------------

END = 1_780_272_000  # a whole minute: the last sample of the history
HISTORY_MINUTES = 4 * 1440  # the devstack's history
START = END - HISTORY_MINUTES * 60
CRON_RUNS, CRON_MINUTES, KEEP = 48, 30, 3  # hourly runs of the last two days; successfulJobsHistoryLimit 3
CRON_START = END - CRON_RUNS * 3600
OUTLIER = 20
KSM = {"job": "kube-state-metrics", "instance": "ksm:8080"}
KUBELET = {"job": "kubelet", "instance": "node-1:10250", "node": "node-1"}


def _cron_rate(r: int) -> float:
    return 2.0 if r == OUTLIER else 0.3 if r % 6 == 0 else 0.1  # 39 light runs, 8 heavier, 1 outlier


def _cron_history() -> str:
    """CronJob ``batch/hourly-report``: Job ``hourly-report-<minute>`` per run, one pod each, a constant CPU rate
    per run, kept for three more runs; kube_job_owner but no kube_job_status_active."""
    lines: list[str] = []

    def line(metric: str, labels: dict[str, str], value: float, t: int) -> None:
        lines.append(om_sample(metric, labels, value, t))

    for r in range(CRON_RUNS):
        t0 = CRON_START + r * 3600
        job = f"hourly-report-{t0 // 60}"
        pod = f"{job}-x{r:02d}"
        kept = range(t0, min(t0 + KEEP * 3600 + CRON_MINUTES * 60, END + 60), 60)  # gone when run r+3 is done
        for t in kept:
            line("kube_job_owner", {"namespace": "batch", "job_name": job, "owner_kind": "CronJob",
                                    "owner_name": "hourly-report", "owner_is_controller": "true", **KSM}, 1, t)
            line("kube_pod_owner", {"namespace": "batch", "pod": pod, "owner_kind": "Job", "owner_name": job,
                                    "owner_is_controller": "true", **KSM}, 1, t)
            for resource, unit, value in (("cpu", "core", 1), ("memory", "byte", GIB)):
                line("kube_pod_container_resource_requests", {"namespace": "batch", "pod": pod, "container": "app",
                                                              "resource": resource, "unit": unit, **KSM}, value, t)
        for i in range(CRON_MINUTES + 1):
            t = t0 + 60 * i
            labels = {"namespace": "batch", "pod": pod, "container": "app", **KUBELET}
            line("container_cpu_usage_seconds_total", labels, round(_cron_rate(r) * 60 * i, 6), t)
            line("container_memory_working_set_bytes", labels, (700 if r == OUTLIER else 300) * MIB, t)
    lines.sort(key=lambda s: (s.split(" ")[0], int(s.rsplit(" ", 1)[1])))
    return "".join(lines) + "# EOF\n"


def _jobs_world() -> World:
    """The devstack world's Jobs (same seed, same history length, so the same figures as on the devstack)."""
    full = build_world(42, HISTORY_MINUTES)
    return World(full.seed, full.history_minutes, full.nodes, tuple(w for w in full.workloads if w.kind == "Job"))


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, World]]:
    root = tmp_path_factory.mktemp("jobs")
    world = _jobs_world()
    backfill(world, START, root / "data", root / "tmp", PROMTOOL, workers=1)
    backfill_openmetrics(_cron_history(), root / "data")
    shutil.rmtree(root / "tmp", ignore_errors=True)
    with local_prometheus(root, "global: {scrape_interval: 1m}\nscrape_configs: []\n", KEEP_HISTORY) as url:
        yield url, world


@pytest.fixture(scope="module")
def sized(prometheus: tuple[str, World]) -> dict[str, Any]:
    url, world = prometheus
    spec = SourceSpec(name="jobs", base_url=url, timeout=60)
    at = datetime.fromtimestamp(END + 30, UTC)
    start = datetime.fromtimestamp(START, UTC)
    p = plan(spec, at, END + 30 - START, rate_window=300, max_points=11_000, max_samples_per_query=5_000_000)
    pieces = [collect_batch(spec, b, p.resolution, at).as_dict() for b in p.batches]
    containers, workloads = merge(pieces)
    report, _ = rows("jobs", "", containers, workloads, Policy(), PRICES, p.resolution, start, at)
    return {"rows": {(r["namespace"], r["workload_name"], r["container"]): r for r in report}, "report": report,
            "truth": workload_truth(world, START), "window": (at - start).total_seconds()}


def _time_weighted(values: list[tuple[float, float]], q: float) -> float:
    """An independent reading of the rule: sort by value, the first whose running share of time reaches q."""
    values = sorted(values)
    total, acc = sum(w for _, w in values), 0.0
    return next(v for v, w in values if (acc := acc + w) >= q * total - 1e-9)


@pytest.mark.integration
def test_a_cronjob_is_sized_from_its_runs(sized: dict[str, Any]) -> None:
    row = sized["rows"][("batch", "hourly-report", "app")]
    assert row["workload_kind"] == "CronJob" and row["runs"] == row["pods_seen"] == CRON_RUNS
    # 39 runs at 0.1 cores, 8 at 0.3, one at 2: the p95 over the runs is 0.3; the outlier is throttled.
    assert row["cpu_baseline"] == pytest.approx(0.3, rel=0.01)
    assert row["recommended_cpu_request"] == pytest.approx(0.345) and row["cpu_max"] == pytest.approx(2.0, rel=0.01)
    assert row["memory_peak"] == 700 * MIB and row["recommended_memory_request"] == round_memory(700 * MIB * 1.15)
    assert row["statuses"] == ["over-provisioned"] and row["monthly_saving_usd"] > 0
    # Each run counts: 48 runs, where its samples alone (24 hours of 30-minute runs) are not a day.
    assert row["confidence_days"] == CRON_RUNS and row["confidence"] == pytest.approx(48 / 49, abs=1e-4)
    assert "sized from 48 runs" in row["reason"]


@pytest.mark.integration
def test_a_cronjob_without_job_metrics_is_priced_from_its_running_time(sized: dict[str, Any]) -> None:
    row = sized["rows"][("batch", "hourly-report", "app")]
    running = CRON_RUNS * (CRON_MINUTES + 1) * 60  # every run's CPU samples × the 60 s scrape
    assert row["billed_replicas"] == pytest.approx(running / sized["window"], abs=1e-4)
    assert row["monthly_cost_now_usd"] == pytest.approx((0.04 + 0.005) * row["billed_replicas"] * 730, abs=1e-3)
    assert row["replicas"] == KEEP  # the finished pods that still exist at the end: shown, not billed


@pytest.mark.integration
def test_the_devstack_jobs_match_their_ground_truth(sized: dict[str, Any]) -> None:
    jobs = [w for w in sized["truth"] if w["kind"] == "Job"]
    many = [w for w in jobs if w["run_minutes"]]
    assert many, "the devstack world has a Job of many runs"
    for w in jobs:
        [c] = w["containers"]
        row = sized["rows"][(w["namespace"], w["name"], c["name"])]
        assert row["workload_kind"] == "Job" and row["runs"] == c["runs"] == len(c["by_pod"]), w["name"]
        assert row["memory_peak"] == pytest.approx(c["memory_bytes"]["max"]), w["name"]  # the largest run's
        expected = _time_weighted([(p["cpu_cores"]["p95"], p["running_seconds"]) for p in c["by_pod"].values()
                                   if "cpu_cores" in p], 0.95)
        if w["profile"] != "spiky_cpu":  # bursts: a step-sampled p95 lands anywhere on the cliff (as for services)
            assert row["cpu_baseline"] == pytest.approx(expected, rel=0.15), w["name"]
        if w["short_history"]:
            assert row["statuses"] == ["insufficient data", "over-provisioned"] or row["status"] == \
                "insufficient data", w["name"]
            assert "1 run (needs 1 days or 3 runs)" in row["reason"] and row["monthly_saving_usd"] == 0
        else:
            assert "insufficient data" not in row["statuses"] and row["confidence_days"] > 1, w["name"]
    for w in many:
        [c] = w["containers"]
        row = sized["rows"][(w["namespace"], w["name"], c["name"])]
        assert c["runs"] >= 20 and row["confidence_days"] >= c["runs"]
        assert row["billed_replicas"] == pytest.approx(1, abs=0.01)  # one run after another: one pod active
        assert row["status"] == "over-provisioned" and row["monthly_saving_usd"] > 0
        # Not the worst run: below the largest run's p95, which the max across pods would have taken.
        worst = max(p["cpu_cores"]["p95"] for p in c["by_pod"].values())
        assert row["cpu_baseline"] < worst


@pytest.mark.integration
def test_the_report_passes_its_gate(sized: dict[str, Any]) -> None:
    check(RIGHTSIZING.name, RIGHTSIZING.table(sized["report"]), RIGHTSIZING.expectations)
    for r in sized["report"]:
        assert r["statuses"][0] == r["status"] and len(set(r["statuses"])) == len(r["statuses"])
        assert set(r["statuses"]) <= {s.value for s in Status}

