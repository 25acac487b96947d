"""Right-sizing against the devstack's real Prometheus 2.42 (4 days of backfilled history of ~50 workloads with
known profiles), checked against its ground truth; and a batch that times out, split and retried for real."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from traceo_finops.pricing import HOURS_PER_MONTH, load_price_table
from traceo_finops.prometheus import SourceSpec
from traceo_finops.rightsizing import queries as q
from traceo_finops.rightsizing.collect import BatchRunner, collect_batch, plan
from traceo_finops.rightsizing.dataset import rows
from traceo_finops.rightsizing.model import merge
from traceo_finops.rightsizing.recommend import Policy, Prices

pytestmark = pytest.mark.integration
GIB = 2**30


@pytest.fixture(scope="module")
def sized(devstack: dict[str, str], prom_truth: dict[str, Any]) -> dict[str, Any]:
    """One plan + collect + recommend over exactly the backfilled history (it ends 30 s after the last sample)."""
    h = prom_truth["history"]
    end = datetime.fromtimestamp(h["end"] + 30, UTC)
    spec = SourceSpec(name="devstack", base_url=devstack["DEVSTACK_PROM_URL"])
    p = plan(spec, end, h["end"] + 30 - h["start"], rate_window=300, max_points=11_000,
             max_samples_per_query=5_000_000)
    pieces = [collect_batch(spec, b, p.resolution, end).as_dict() for b in p.batches]
    containers, workloads = merge(pieces)
    prices = Prices.from_table(load_price_table())
    start = datetime.fromtimestamp(h["start"], UTC)
    report, _ = rows("devstack", "", containers, workloads, Policy(), prices, p.resolution, start, end)
    truth = {(w["namespace"], w["name"], c["name"]): (w, c) for w in prom_truth["workloads"] for c in w["containers"]}
    return {"plan": p, "pieces": pieces, "rows": report, "prices": prices, "truth": truth, "spec": spec, "end": end,
            "by_key": {(r["namespace"], r["workload_name"], r["container"]): r for r in report}}


def _rows_of(sized: dict[str, Any], profile: str) -> list[tuple[dict, dict, dict]]:
    return [(r, *sized["truth"][k]) for k, r in sized["by_key"].items() if sized["truth"][k][0]["profile"] == profile]


def test_plan_reads_the_history_within_the_limits(sized: dict[str, Any], prom_truth: dict[str, Any]) -> None:
    res = sized["plan"].resolution
    assert res.scrape_interval == prom_truth["history"]["scrape_interval_seconds"]
    assert res.points <= 11_000 and res.step == res.rate_window == 300
    truth_series = sum(1 for w in prom_truth["workloads"] for c in w["containers"] for _ in c["by_pod"])
    assert sized["plan"].series == truth_series
    # Exactly one row per workload container of the ground truth.
    assert set(sized["by_key"]) == set(sized["truth"])


def test_over_provisioned_found_with_cpu_within_20_percent_of_the_true_p95(sized: dict[str, Any]) -> None:
    found = _rows_of(sized, "over_provisioned_cpu")
    assert len(found) >= 8
    for row, w, c in found:
        if c["name"] != "app":
            continue  # the sidecar of an over-provisioned workload is sized, not over-provisioned
        assert row["status"] == "over-provisioned", (w["name"], row["reason"])
        assert row["recommended_cpu_request"] == pytest.approx(1.15 * c["cpu_cores"]["p95"], rel=0.2), w["name"]
        assert row["monthly_saving_usd"] > 0
    for row, w, _ in _rows_of(sized, "over_provisioned_memory"):
        if row["container"] == "app":
            assert row["status"] == "over-provisioned", (w["name"], row["reason"])
            assert row["recommended_memory_request"] < 0.5 * row["current_memory_request"]


def test_memory_peak_and_restarts_match_the_truth_through_counter_resets(sized: dict[str, Any]) -> None:
    for key, row in sized["by_key"].items():
        _, c = sized["truth"][key]
        assert row["memory_peak"] == pytest.approx(c["memory_bytes"]["max"]), key
        # The p99 is read from fewer, coarser-spaced samples than the truth's every minute: same statistic.
        assert 0.9 * c["memory_bytes"]["p99"] <= row["memory_p99"] <= c["memory_bytes"]["max"], key
        assert row["restarts"] == c["oom_kills"], key
        # OOM kills reset the CPU counter: rate() absorbs it, the percentile stays right.
        if sized["truth"][key][0]["profile"] == "spiky_cpu":
            # Bursts put a cliff between p95 and p99; windows read every `step` (not every minute, as the
            # truth is) land anywhere on it, depending on how the step aligns with the bursts.
            assert c["cpu_cores"]["p90"] * 0.8 <= row["cpu_p95"] <= c["cpu_cores"]["p99"] * 1.2, key
        else:
            assert row["cpu_p95"] == pytest.approx(c["cpu_cores"]["p95"], rel=0.2), key


def test_oom_killed_recommended_above_the_old_limit(sized: dict[str, Any]) -> None:
    found = _rows_of(sized, "oom_killed")
    assert len(found) == 3
    for row, w, c in found:
        assert row["oom_killed"] and row["status"] == "under-provisioned", w["name"]
        assert row["last_oom_limit"] == c["limits"]["memory"]
        assert row["recommended_memory_limit"] >= 1.2 * c["limits"]["memory"] > c["limits"]["memory"]


def test_short_history_is_insufficient_data(sized: dict[str, Any]) -> None:
    found = _rows_of(sized, "short_history")
    assert len(found) == 3
    for row, w, _ in found:
        assert row["status"] == "insufficient data", w["name"]
        assert row["history_days"] == pytest.approx(0.25, abs=0.01) and row["monthly_saving_usd"] == 0
    others = [r for k, r in sized["by_key"].items() if not sized["truth"][k][0]["short_history"]]
    # Completed Jobs ran for part of the window only (less coverage), but long enough.
    assert all(r["status"] != "insufficient data" and r["confidence_days"] > 1 for r in others)


def test_hpa_and_no_requests_flagged(sized: dict[str, Any]) -> None:
    hpa = _rows_of(sized, "hpa_managed")
    assert len(hpa) == 5  # three workloads, two with a sidecar
    for row, w, _ in hpa:
        assert row["status"] == "HPA-managed" and row["hpa"] == w["hpa"]["name"]
        assert row["recommended_cpu_request"] > 0  # the per-pod figure is still given
        assert w["replicas_min"] <= row["billed_replicas"] <= w["replicas_max"]
    none = _rows_of(sized, "no_requests")
    assert len(none) == 5
    for row, _, _ in none:
        assert row["status"] == "no requests set" and row["current_cpu_request"] is None
        assert row["monthly_cost_now_usd"] == 0 and row["monthly_saving_usd"] < 0


def test_churned_pods_belong_to_their_deployment(sized: dict[str, Any], prom_truth: dict[str, Any]) -> None:
    churned = [w for w in prom_truth["workloads"] if w["churn_time"]]
    assert churned
    for w in churned:
        row = sized["by_key"][(w["namespace"], w["name"], w["containers"][0]["name"])]
        assert row["workload_kind"] == "Deployment" and row["pods_seen"] == len(w["pods"]) == 2 * w["replicas"]
        assert row["replicas"] == w["replicas"] and row["coverage"] > 0.95
        assert row["history_days"] == pytest.approx(prom_truth["history"]["days"], abs=0.01)


def test_savings_add_up(sized: dict[str, Any]) -> None:
    report, prices = sized["rows"], sized["prices"]
    total = sum(r["monthly_saving_usd"] for r in report)
    assert total == pytest.approx(sum(r["monthly_cost_now_usd"] for r in report)
                                  - sum(r["monthly_cost_after_usd"] for r in report), abs=1e-6)
    for r in report:
        if r["status"] in ("over-provisioned", "under-provisioned"):
            hourly = ((r["current_cpu_request"] - r["recommended_cpu_request"]) * prices.vcpu_hour
                      + (r["current_memory_request"] - r["recommended_memory_request"]) / GIB * prices.gib_hour)
            assert r["monthly_saving_usd"] == pytest.approx(hourly * r["billed_replicas"] * HOURS_PER_MONTH,
                                                            abs=2e-4), r["workload_name"]
    assert total > 0


def test_a_batch_that_times_out_is_split_and_retried(sized: dict[str, Any]) -> None:
    """A per-request timeout between what the whole batch and what one pod take: the batch times out for real,
    is split (namespaces, then pods) and every piece answered; the union equals the unsplit answer."""
    spec, end, p = sized["spec"], sized["end"], sized["plan"]
    fine = q.choose_resolution(p.resolution.history_seconds, 60, None)  # 1-minute points: a heavier query
    [batch] = p.batches

    def build(b: q.Batch) -> str:
        return next(u.promql for u in q.usage_queries(b, fine) if u.stat == "cpu_p99")

    with BatchRunner(spec, end, concurrency=1, history_seconds=fine.history_seconds) as runner:
        t = time.monotonic()
        whole = runner.batch_query(build, batch)
        t_whole = time.monotonic() - t
        one = q.Batch((batch.namespaces[0],), ("checkout-api-8kps4x95g6-vfls9",))
        t = time.monotonic()
        runner.batch_query(build, one)
        t_pod = time.monotonic() - t
    assert t_whole > 8 * t_pod, (t_whole, t_pod)
    tight = spec.model_copy(update={"timeout": (t_whole * t_pod) ** 0.5})
    with BatchRunner(tight, end, concurrency=1, history_seconds=fine.history_seconds) as runner:
        split = runner.batch_query(build, batch)
        stats = runner.stats.as_dict()
    assert stats["timeouts"] >= 1 and stats["splits"] >= 1
    assert {tuple(sorted(s["metric"].items())): s["value"][1] for s in split} == \
        {tuple(sorted(s["metric"].items())): s["value"][1] for s in whole}


def test_the_observability_stack_is_sized_from_its_own_metrics(devstack: dict[str, str],
                                                               prom_truth: dict[str, Any]) -> None:
    """Prometheus scrapes itself (job "prometheus", not a pod): on the seed's 4-core 16 GiB VM it is over-sized."""
    from traceo_finops.rightsizing.stack import collect_stack

    spec = SourceSpec(name="devstack", base_url=devstack["DEVSTACK_PROM_URL"])
    # Prometheus has scraped itself only since the devstack started: give it a few 60 s steps of history
    # (a bounded wait, usually none: other tests ran meanwhile).
    while time.time() < prom_truth["head"]["start"] + 4 * 60 + 5:
        time.sleep(5)
    end = datetime.fromtimestamp(int(time.time()), UTC)
    start = datetime.fromtimestamp(prom_truth["head"]["start"], UTC)
    res = q.choose_resolution((end - start).total_seconds(), 60, prom_truth["head"]["scrape_interval_seconds"])
    containers, workloads = collect_stack(spec, ["prometheus", "mimir.*"], res, end, {"prometheus": (4.0, 16.0)})
    [proc] = containers
    assert (proc.kind, proc.name, proc.container) == ("Process", "prometheus", devstack["DEVSTACK_PROM_URL"][7:])
    with BatchRunner(spec, end) as runner:
        # Read at the same subquery steps as the sizing, so both see the same instants.
        [inuse] = runner.query(f'max_over_time(go_memstats_heap_inuse_bytes{{job="prometheus"}}'
                               f'[{res.history_seconds}s:{res.step}s])')
    assert proc.memory_peak >= float(inuse["value"][1])  # the Go runtime's need covers its live heap
    assert 0 < proc.cpu["p95"] <= proc.cpu["max"]
    report, _ = rows("devstack", "", containers, {w.key: w for w in workloads}, Policy(min_history_days=0),
                     Prices.from_table(load_price_table()), res, start, end)
    [row] = report
    assert row["status"] == "over-provisioned" and row["current_memory_request"] == 16 * GIB
    assert row["recommended_cpu_request"] < 1 and row["recommended_memory_request"] < 2 * GIB
    assert row["monthly_saving_usd"] == pytest.approx(row["monthly_cost_now_usd"] - row["monthly_cost_after_usd"])
    assert row["monthly_saving_usd"] > 0.9 * row["monthly_cost_now_usd"]
