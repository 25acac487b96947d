"""The recommender, dollars, mergeable pieces, patches: pure functions checked against hand-worked figures."""

from __future__ import annotations

import pytest
import yaml

from traceo_finops.config import RightsizingSettings
from traceo_finops.pricing import HOURS_PER_MONTH, load_price_table
from traceo_finops.rightsizing import manifests
from traceo_finops.rightsizing.model import ContainerUsage, WorkloadInfo, merge
from traceo_finops.rightsizing.recommend import (
    Policy,
    Prices,
    Status,
    confidence,
    costs,
    monthly_cost,
    recommend,
    round_cpu,
    round_memory,
)

pytestmark = pytest.mark.unit
MIB, GIB, DAY = 2**20, 2**30, 86400.0


def usage(**kw) -> ContainerUsage:
    """Two weeks of full coverage, requests 1 core / 1 GiB, unless told otherwise."""
    base = dict(namespace="ns", kind="Deployment", name="api", container="app", pods=["api-1"], alive_pods=1,
                cpu={"p50": 0.1, "p90": 0.15, "p95": 0.2, "p99": 0.25, "max": 0.4}, cpu_samples=4032,
                expected_samples=4032.0, pod_seconds=14 * DAY, history_seconds=14 * DAY, memory_peak=400 * MIB,
                memory_p99=380 * MIB, cpu_request=1.0, cpu_limit=None, memory_request=1 * GIB,
                memory_limit=1 * GIB, requests_alive=True)
    base.update(kw)
    return ContainerUsage(**base)


def test_policy_defaults_follow_the_configuration() -> None:
    p = Policy.from_settings(RightsizingSettings())
    assert (p.cpu_percentile, p.cpu_margin, p.memory_margin, p.oom_bump) == (0.95, 0.15, 0.15, 1.2)
    assert p.min_cpu_cores == 0.01 and p.min_memory_bytes == 64 * MIB and p.min_history_days == 1


def test_cpu_is_the_percentile_plus_margin_rounded_up_to_5m() -> None:
    rec = recommend(usage(), Policy())
    assert rec.cpu_baseline == 0.2
    assert rec.cpu_request == pytest.approx(0.23)  # 0.2 × 1.15 = 0.230 exactly on the 5m grid
    assert recommend(usage(cpu={"p95": 0.2011}), Policy()).cpu_request == pytest.approx(0.235)  # 0.2313 → 235m
    assert recommend(usage(cpu={"p90": 0.3, "p95": 0.2}), Policy(cpu_percentile=0.9)).cpu_request == \
        pytest.approx(0.345)


def test_memory_is_peak_plus_margin_rounded_up_to_4mi() -> None:
    rec = recommend(usage(), Policy())
    assert rec.memory_request == rec.memory_limit == pytest.approx(460 * MIB)  # 400 × 1.15 = 460, on the grid
    assert round_memory(461 * MIB) == 464 * MIB and round_memory(460 * MIB) == 460 * MIB


def test_oom_killed_gets_at_least_the_last_limit_times_the_bump() -> None:
    rec = recommend(usage(memory_peak=250 * MIB, memory_limit=256 * MIB, memory_request=256 * MIB, oom_killed=True,
                          last_oom_limit=256 * MIB, restarts=8), Policy())
    assert rec.memory_request == pytest.approx(round_memory(256 * MIB * 1.2))  # 307.2 Mi → 308 Mi
    assert rec.memory_request > 256 * MIB
    assert rec.status is Status.UNDER and "OOM-killed" in rec.reason
    # A peak above the bumped limit wins.
    high = recommend(usage(memory_peak=300 * MIB, oom_killed=True, last_oom_limit=256 * MIB), Policy())
    assert high.memory_request == pytest.approx(round_memory(300 * MIB * 1.15))


def test_minimums_apply() -> None:
    rec = recommend(usage(cpu={"p95": 0.0001}, memory_peak=1 * MIB), Policy())
    assert rec.cpu_request == pytest.approx(0.01) and rec.memory_request == pytest.approx(64 * MIB)
    custom = recommend(usage(cpu={"p95": 0.0001}, memory_peak=1 * MIB),
                       Policy(min_cpu_cores=0.05, min_memory_bytes=128 * MIB))
    assert custom.cpu_request == pytest.approx(0.05) and custom.memory_request == pytest.approx(128 * MIB)


@pytest.mark.parametrize(("cores", "rounded"), [(0.001, 0.005), (0.2301, 0.235), (1.0, 1.0), (1.0000001, 1.005),
                                                (0.2 * 1.15, 0.23), (2.3449, 2.345)])
def test_round_cpu(cores: float, rounded: float) -> None:
    assert round_cpu(cores) == pytest.approx(rounded)


def test_cpu_limit_kept_unless_the_new_request_passes_it() -> None:
    assert recommend(usage(cpu_limit=2.0), Policy()).cpu_limit == 2.0
    # Request 1 core, limit 1.5: the new request 2.3 would pass the limit, which keeps its 1.5 ratio.
    rec = recommend(usage(cpu={"p95": 2.0}, cpu_limit=1.5), Policy())
    assert rec.cpu_request == pytest.approx(2.3) and rec.cpu_limit == pytest.approx(3.45)
    assert recommend(usage(cpu_limit=None), Policy()).cpu_limit is None


def test_confidence_is_history_times_coverage_vpa_style() -> None:
    full = confidence(7 * DAY, 2016, 2016.0)
    assert (full.history_days, full.coverage, full.days) == pytest.approx((7, 1, 7))
    assert full.score == pytest.approx(7 / 8)  # 1 / (1 + 1/7): the inverse of VPA's upper-bound factor
    half = confidence(2 * DAY, 288, 576.0)
    assert (half.coverage, half.days, half.score) == pytest.approx((0.5, 1.0, 0.5))
    assert confidence(None, 0, 0).score == 0 and confidence(DAY, 0, 288.0).days == 0


def test_statuses() -> None:
    p = Policy()
    assert recommend(usage(), p).status is Status.OVER  # 230m of 1 core
    ok = usage(cpu={"p95": 0.8}, memory_peak=800 * MIB)
    assert recommend(ok, p).status is Status.OK  # 920m of 1 core, 920 Mi of 1 GiB
    assert recommend(usage(cpu={"p95": 1.5}), p).status is Status.UNDER
    assert recommend(usage(cpu_request=None), p).status is Status.NO_REQUESTS
    hpa = recommend(ok, p, hpa="api")
    assert hpa.status is Status.HPA and hpa.cpu_request == pytest.approx(0.92)  # flagged, figure still given
    short = recommend(usage(history_seconds=6 * 3600), p)
    assert short.status is Status.INSUFFICIENT and short.cpu_request is not None
    assert recommend(usage(cpu={}, cpu_samples=0), p).status is Status.INSUFFICIENT
    sparse = usage(cpu_samples=400, expected_samples=4032.0)  # 14 days at 10 % coverage = 1.39 days: enough
    assert recommend(sparse, p).status is Status.OVER
    assert recommend(usage(cpu_samples=200), p).status is Status.INSUFFICIENT  # 0.69 days


def test_every_status_that_applies_is_listed_the_first_is_the_status() -> None:
    p = Policy()
    # Short history no longer hides missing requests; the figure it would propose is compared too.
    short = recommend(usage(history_seconds=6 * 3600, memory_request=None), p)
    assert short.statuses == (Status.INSUFFICIENT, Status.NO_REQUESTS, Status.OVER)  # cpu 0.23 of 1 core
    assert short.status is Status.INSUFFICIENT and "no memory request" in short.reason
    # CPU far above its need and memory short of it: both, under first.
    both = recommend(usage(memory_peak=1000 * MIB, memory_request=512 * MIB), p)
    assert both.statuses == (Status.UNDER, Status.OVER) and both.status is Status.UNDER
    hpa = recommend(usage(cpu={"p95": 0.8}, memory_peak=800 * MIB), p, hpa="api")
    assert hpa.statuses == (Status.HPA, Status.OK)
    assert recommend(usage(), p).statuses == (Status.OVER,)
    # OOM kills are evidence even when the history is short.
    oom = recommend(usage(history_seconds=3600, oom_killed=True, last_oom_limit=GIB), p)
    assert oom.statuses == (Status.INSUFFICIENT, Status.UNDER, Status.OVER)
    none = recommend(usage(cpu={}, cpu_samples=0, memory_peak=None, cpu_request=None, memory_request=None), p)
    assert none.statuses == (Status.INSUFFICIENT, Status.NO_REQUESTS) and none.cpu_request is None
    # A request of 0 reserves nothing: missing, not a division by zero.
    zero = recommend(usage(cpu_request=0.0), p)
    assert zero.statuses == (Status.NO_REQUESTS, Status.OVER) and "no cpu request" in zero.reason


def test_dollars_use_the_price_table_and_730_hours() -> None:
    table = load_price_table()
    prices = Prices.from_table(table)
    assert HOURS_PER_MONTH == 730
    assert monthly_cost(1.0, 1 * GIB, 2, prices) == pytest.approx((table.vcpu_hour + table.gib_hour) * 2 * 730)
    c = usage()
    rec = recommend(c, Policy())
    now, after, saving = costs(c, rec, 3, prices)
    assert now == pytest.approx(monthly_cost(1.0, GIB, 3, prices), abs=1e-4)
    assert after == pytest.approx(monthly_cost(0.23, 460 * MIB, 3, prices), abs=1e-4)
    assert saving == pytest.approx(now - after, abs=1e-9) and saving > 0


def test_savings_only_where_a_change_is_proposed() -> None:
    prices = Prices(0.04, 0.005)
    under = usage(cpu={"p95": 1.5})
    assert costs(under, recommend(under, Policy()), 1, prices)[2] < 0  # fixing it costs money
    none = usage(cpu_request=None, memory_request=None)
    now, after, saving = costs(none, recommend(none, Policy()), 1, prices)
    assert now == 0 and saving == -after < 0
    for c, hpa in ((usage(cpu={"p95": 0.8}, memory_peak=800 * MIB), None), (usage(), "api"),
                   (usage(history_seconds=3600), None)):
        now, after, saving = costs(c, recommend(c, Policy(), hpa), 2, prices)
        assert saving == 0 and now == after > 0


def test_pieces_of_one_workload_merge_across_batches() -> None:
    a = usage(pods=["api-1"], alive_pods=0, cpu={"p95": 0.2, "max": 0.5}, cpu_samples=100, expected_samples=100.0,
              pod_seconds=DAY, memory_peak=300 * MIB, cpu_request=2.0, requests_alive=False, oom_killed=True,
              last_oom_limit=256 * MIB, restarts=2)
    b = usage(pods=["api-2"], alive_pods=1, cpu={"p95": 0.3, "max": 0.4}, cpu_samples=50, expected_samples=80.0,
              pod_seconds=2 * DAY, memory_peak=200 * MIB, cpu_request=1.0, requests_alive=True, restarts=1)
    info = WorkloadInfo("ns", "Deployment", "api", 3, 3.0)
    [merged], workloads = merge([{"containers": [a.as_dict()], "workloads": [info.as_dict()]},
                                 {"containers": [b.as_dict()], "workloads": [{**info.as_dict(), "hpa": "api"}]}])
    assert merged.pods == ["api-1", "api-2"] and merged.cpu == {"p95": 0.3, "max": 0.5}
    assert (merged.cpu_samples, merged.expected_samples, merged.memory_peak) == (150, 180.0, 300 * MIB)
    assert (merged.pod_seconds, merged.alive_pods) == (3 * DAY, 1)
    assert merged.cpu_request == 1.0  # from the pod that runs at the end (the newer ReplicaSet)
    assert merged.oom_killed and merged.last_oom_limit == 256 * MIB and merged.restarts == 3
    assert workloads[("ns", "Deployment", "api")].hpa == "api"


def test_patch_is_a_strategic_merge_patch_of_the_pod_template() -> None:
    row = {"namespace": "shop", "workload_kind": "Deployment", "workload_name": "api", "container": "app",
           "status": "over-provisioned", "recommended_cpu_request": 0.23, "recommended_cpu_limit": None,
           "current_cpu_limit": None, "recommended_memory_request": 460 * MIB, "recommended_memory_limit": 460 * MIB,
           "monthly_saving_usd": 12.5}
    cron = {**row, "workload_kind": "CronJob", "workload_name": "nightly"}
    job = {**row, "workload_kind": "Job", "workload_name": "once"}
    ok = {**row, "workload_name": "fine", "status": "ok"}
    files = manifests.patches([row, cron, job, ok])
    assert set(files) == {"shop.deployment.api.patch.yaml", "shop.cronjob.nightly.patch.yaml", "apply-patches.sh"}
    patch = yaml.safe_load(files["shop.deployment.api.patch.yaml"])
    assert patch == {"spec": {"template": {"spec": {"containers": [{"name": "app", "resources": {
        "requests": {"cpu": "230m", "memory": "460Mi"}, "limits": {"memory": "460Mi"}}}]}}}}
    cron_patch = yaml.safe_load(files["shop.cronjob.nightly.patch.yaml"])
    assert cron_patch["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["name"] == "app"
    assert b"kubectl -n shop patch deployment api --type strategic" in files["apply-patches.sh"]
    assert files["shop.deployment.api.patch.yaml"].startswith(b"# Deployment shop/api: over-provisioned;")
    both = {**row, "status": "under-provisioned", "statuses": ["under-provisioned", "over-provisioned"]}
    assert manifests.patches([both])["shop.deployment.api.patch.yaml"].startswith(
        b"# Deployment shop/api: over-provisioned, under-provisioned;")  # every status of its rows
    [vpa] = [d for d in yaml.safe_load_all(manifests.vpa_objects([row])) if d]
    assert vpa["spec"]["updatePolicy"] == {"updateMode": "Off"}
    assert vpa["spec"]["targetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}
