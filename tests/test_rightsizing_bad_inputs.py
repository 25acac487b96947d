"""Bad input, each against a real process: a Prometheus 2.42 of our own on a crafted history (series with missing
labels, counter resets, pods that churn mid-window, NaN/Inf samples, Jobs whose pod never started), the same
history behind a Prometheus whose
``--query.max-samples`` refuses whole batches, a Prometheus without kube-state-metrics, and a Mimir-like gateway
answering 401 for a wrong tenant.

No Mimir runs here: the last case is a small local HTTP server that answers like Mimir's auth gateway does.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.net import free_port
from tests.support.prometheus import KEEP_HISTORY, backfill_openmetrics, local_prometheus, om_sample
from tests.support.servers import Answer, LocalServer, Request
from traceo_finops.prometheus import PrometheusAuthError, SourceSpec
from traceo_finops.quality import check
from traceo_finops.rightsizing.collect import collect_batch, plan
from traceo_finops.rightsizing.dataset import RIGHTSIZING, rows
from traceo_finops.rightsizing.errors import MissingMetricError
from traceo_finops.rightsizing.model import merge
from traceo_finops.rightsizing.recommend import Policy, Prices

pytestmark = pytest.mark.integration
MIB = 2**20
END = 1_780_272_000  # a whole minute
STEP = 60
N = 2 * 1440 + 1  # two days of samples
MID = N // 2
START = END - (N - 1) * STEP
RESET_EVERY = 360  # the db container restarts every 6 hours
KSM = {"job": "kube-state-metrics", "instance": "ksm:8080"}
KUBELET = {"job": "kubelet", "instance": "node-1:10250", "node": "node-1"}


def _line(metric: str, labels: dict[str, str], value: float | str, k: int) -> str:
    return om_sample(metric, labels, value, START + k * STEP)


def _history() -> str:
    """Two days of one namespace ``bad`` with every kind of bad input."""
    out: list[str] = []

    def series(metric: str, labels: dict[str, str], values: Any, ks: range = range(N)) -> None:
        for k in ks:
            v = values(k) if callable(values) else values
            out.append(_line(metric, labels, v, k))

    def pod(name: str, kind: str | None, owner: str | None, ks: range, requests: bool = True) -> None:
        labels = {"namespace": "bad", "pod": name, **KSM}
        if kind:
            labels.update(owner_kind=kind, owner_name=owner or "", owner_is_controller="true")
        series("kube_pod_owner", labels, 1, ks)  # an owner series without owner labels: "weird" below
        if requests:
            for resource, unit, value in (("cpu", "core", 1), ("memory", "byte", 1024 * MIB)):
                series("kube_pod_container_resource_requests",
                       {"namespace": "bad", "pod": name, "container": "app" if name != "db-0" else "db",
                        "resource": resource, "unit": unit, **KSM}, value, ks)

    # Deployment "web": its pod is replaced mid-window (a rollout: new ReplicaSet, pods churn).
    for rs, since in (("web-rs1", 0), ("web-rs2", MID - 2)):
        series("kube_replicaset_owner", {"namespace": "bad", "replicaset": rs, "owner_kind": "Deployment",
                                         "owner_name": "web", **KSM}, 1, range(since, N))
    series("kube_deployment_spec_replicas", {"namespace": "bad", "deployment": "web", **KSM}, 1)
    for name, rs, ks in (("web-rs1-a", "web-rs1", range(0, MID + 1)), ("web-rs2-b", "web-rs2", range(MID - 2, N))):
        pod(name, "ReplicaSet", rs, ks)
        series("container_cpu_usage_seconds_total", {"namespace": "bad", "pod": name, "container": "app", **KUBELET},
               lambda k, k0=ks.start: 0.5 * STEP * (k - k0 + 1), ks)
        series("container_memory_working_set_bytes", {"namespace": "bad", "pod": name, "container": "app", **KUBELET},
               300 * MIB, ks)
        # Series with missing labels: the pod cgroup (no container), one without pod, one without namespace.
        series("container_cpu_usage_seconds_total", {"namespace": "bad", "pod": name, **KUBELET},
               lambda k, k0=ks.start: 0.6 * STEP * (k - k0 + 1), ks)
    series("container_cpu_usage_seconds_total", {"namespace": "bad", "container": "app", **KUBELET},
           lambda k: 9.0 * STEP * k)
    series("container_memory_working_set_bytes", {"pod": "web-rs1-a", "container": "app", **KUBELET}, 9000 * MIB)
    series("kube_pod_container_resource_requests", {"namespace": "bad", "pod": "web-rs1-a", "resource": "cpu",
                                                    "unit": "core", **KSM}, 50)  # no container label

    # StatefulSet "db": the container restarts every 6 hours; its CPU counter resets to zero each time.
    series("kube_statefulset_replicas", {"namespace": "bad", "statefulset": "db", **KSM}, 1)
    pod("db-0", "StatefulSet", "db", range(N))
    series("kube_pod_container_status_restarts_total", {"namespace": "bad", "pod": "db-0", "container": "db", **KSM},
           lambda k: k // RESET_EVERY)
    series("container_cpu_usage_seconds_total", {"namespace": "bad", "pod": "db-0", "container": "db", **KUBELET},
           lambda k: 0.3 * STEP * (k % RESET_EVERY))
    series("container_memory_working_set_bytes", {"namespace": "bad", "pod": "db-0", "container": "db", **KUBELET},
           500 * MIB)

    # Deployment "nan": NaN in its CPU counter; NaN and +Inf in its working set (peak of the real samples: 210Mi).
    series("kube_replicaset_owner", {"namespace": "bad", "replicaset": "nan-rs", "owner_kind": "Deployment",
                                     "owner_name": "nan", **KSM}, 1)
    series("kube_deployment_spec_replicas", {"namespace": "bad", "deployment": "nan", **KSM}, 1)
    pod("nan-rs-x", "ReplicaSet", "nan-rs", range(N))
    series("container_cpu_usage_seconds_total", {"namespace": "bad", "pod": "nan-rs-x", "container": "app", **KUBELET},
           lambda k: "NaN" if k % 100 == 50 else 0.2 * STEP * (k + 1))
    series("container_memory_working_set_bytes", {"namespace": "bad", "pod": "nan-rs-x", "container": "app",
                                                  **KUBELET},
           lambda k: "NaN" if k % 97 == 3 else "+Inf" if k % 211 == 7 else 210 * MIB if k in (1000, 1001)
           else 200 * MIB)

    # Deployment "filler": six plain replicas, so that whole-namespace queries hold enough samples to be refused.
    series("kube_replicaset_owner", {"namespace": "bad", "replicaset": "filler-rs", "owner_kind": "Deployment",
                                     "owner_name": "filler", **KSM}, 1)
    series("kube_deployment_spec_replicas", {"namespace": "bad", "deployment": "filler", **KSM}, 6)
    for i in range(6):
        pod(f"filler-rs-{i}", "ReplicaSet", "filler-rs", range(N))
        series("container_cpu_usage_seconds_total", {"namespace": "bad", "pod": f"filler-rs-{i}", "container": "app",
                                                     **KUBELET}, lambda k: 0.05 * STEP * (k + 1))
        series("container_memory_working_set_bytes", {"namespace": "bad", "pod": f"filler-rs-{i}", "container": "app",
                                                      **KUBELET}, 50 * MIB)

    # Job "done": its pod ran for the first day and is gone; its requests are read over the whole window.
    gone = range(0, MID + 60)
    series("kube_job_status_active", {"namespace": "bad", "job_name": "done", **KSM},
           lambda k: 1 if k < MID + 60 else 0)
    pod("done-x", "Job", "done", gone)
    series("container_cpu_usage_seconds_total", {"namespace": "bad", "pod": "done-x", "container": "app", **KUBELET},
           lambda k: 0.4 * STEP * (k + 1), gone)
    series("container_memory_working_set_bytes", {"namespace": "bad", "pod": "done-x", "container": "app",
                                                  **KUBELET}, 100 * MIB, gone)

    # Jobs whose pod never started (unschedulable, image never pulled): no start time, no container series, only
    # kube-state-metrics' owner and requests. "stuck" has job metrics (a pending pod is active), "stuck-quiet" none.
    series("kube_job_status_active", {"namespace": "bad", "job_name": "stuck", **KSM}, 1)
    pod("stuck-p", "Job", "stuck", range(N))
    pod("stuck-quiet-p", "Job", "stuck-quiet", range(N))

    # A pod whose owner series lacks owner labels, and a pod kube-state-metrics never saw: both bare pods.
    pod("weird-1", None, None, range(N))
    for name in ("weird-1", "orphan-1"):
        series("container_cpu_usage_seconds_total", {"namespace": "bad", "pod": name, "container": "app", **KUBELET},
               lambda k: 0.1 * STEP * (k + 1))
        series("container_memory_working_set_bytes", {"namespace": "bad", "pod": name, "container": "app",
                                                      **KUBELET}, 100 * MIB)
    return "".join(out) + "# EOF\n"


@pytest.fixture(scope="module")
def blocks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad-history")
    backfill_openmetrics(_history(), root / "data")
    return root / "data"


@contextmanager
def _prometheus(root: Path, *flags: str) -> Iterator[str]:
    """A Prometheus on ``root/data`` that scrapes only itself."""
    port = free_port()
    config = (f"global: {{scrape_interval: 1s}}\nscrape_configs:\n- job_name: self\n  static_configs:\n"
              f"  - targets: ['127.0.0.1:{port}']\n")
    with local_prometheus(root, config, KEEP_HISTORY, *flags, port=port) as url:
        yield url


@pytest.fixture(scope="module")
def crafted(blocks: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("prom-crafted")
    shutil.copytree(blocks, root / "data")
    with _prometheus(root) as url:
        yield url


@pytest.fixture(scope="module")
def strict(blocks: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same history behind a Prometheus that refuses any query holding more than 6,000 samples at once: one
    series' two days at the scrape resolution pass (2 x 2,881 while filtered), a subquery over the whole namespace
    (12 series x 577 points, twice while filtered) does not."""
    root = tmp_path_factory.mktemp("prom-strict")
    shutil.copytree(blocks, root / "data")
    with _prometheus(root, "--query.max-samples=6000") as url:
        yield url


def _size(url: str, max_samples: int = 5_000_000) -> dict[str, Any]:
    spec = SourceSpec(name="crafted", base_url=url, timeout=30)
    at = datetime.fromtimestamp(END + 30, UTC)
    p = plan(spec, at, END + 30 - START, rate_window=300, max_points=11_000, max_samples_per_query=max_samples)
    results = [collect_batch(spec, b, p.resolution, at) for b in p.batches]
    containers, workloads = merge(r.as_dict() for r in results)
    start = datetime.fromtimestamp(START, UTC)
    report, _ = rows("crafted", "", containers, workloads, Policy(), Prices(0.04, 0.005), p.resolution, start, at)
    return {"plan": p, "results": results, "containers": containers,
            "rows": {(r["workload_kind"], r["workload_name"], r["container"]): r for r in report}}


@pytest.fixture(scope="module")
def sized(crafted: str) -> dict[str, Any]:
    return _size(crafted)


def test_only_real_containers_become_rows(sized: dict[str, Any]) -> None:
    # The pod cgroup, the series without pod / namespace and the requests without container are not rows.
    assert set(sized["rows"]) == {("Deployment", "web", "app"), ("StatefulSet", "db", "db"),
                                  ("Deployment", "nan", "app"), ("Deployment", "filler", "app"),
                                  ("Job", "done", "app"), ("Pod", "weird-1", "app"), ("Pod", "orphan-1", "app"),
                                  ("Job", "stuck", "app"), ("Job", "stuck-quiet", "app")}
    assert sized["rows"][("Deployment", "filler", "app")]["pods_seen"] == 6
    skipped = {k: v for r in sized["results"] for k, v in r.skipped.items()}
    assert skipped["kube_pod_container_resource_requests without labels or value"] >= 1
    web = sized["rows"][("Deployment", "web", "app")]
    assert web["current_cpu_request"] == 1  # not the container-less 50 cores
    assert web["memory_peak"] == 300 * MIB  # not the namespace-less 9000Mi
    assert web["cpu_max"] == pytest.approx(0.5)  # not the pod cgroup's 0.6 nor the pod-less 9 cores
    # Unknown owners and pods kube-state-metrics never saw are bare pods; without requests they say so.
    assert sized["rows"][("Pod", "weird-1", "app")]["current_cpu_request"] == 1
    assert sized["rows"][("Pod", "orphan-1", "app")]["status"] == "no requests set"
    assert sized["rows"][("Pod", "orphan-1", "app")]["statuses"] == ["no requests set"]


def test_pods_churning_mid_window_are_one_workload(sized: dict[str, Any]) -> None:
    web = sized["rows"][("Deployment", "web", "app")]
    assert web["pods_seen"] == 2 and web["replicas"] == 1
    assert web["history_days"] == pytest.approx(2, abs=0.01) and web["coverage"] > 0.99
    assert web["cpu_p95"] == pytest.approx(0.5) and web["status"] == "over-provisioned"


def test_a_workload_whose_pods_are_gone_keeps_its_requests(sized: dict[str, Any]) -> None:
    done = sized["rows"][("Job", "done", "app")]
    assert (done["current_cpu_request"], done["current_memory_request"]) == (1, 1024 * MIB)
    assert done["replicas"] == 0 and done["billed_replicas"] == pytest.approx(0.52, abs=0.01)  # active 52 % of it
    assert done["history_days"] == pytest.approx(1.04, abs=0.01) and done["status"] == "over-provisioned"
    assert done["runs"] == 1 and done["statuses"] == ["over-provisioned"]  # one run, sized as before


def test_a_job_whose_pod_never_started_says_so(sized: dict[str, Any]) -> None:
    """No start time, no container series: a clear status and reason, no recommendation, no saving, no crash."""
    for name in ("stuck", "stuck-quiet"):
        row = sized["rows"][("Job", name, "app")]
        assert row["status"] == "insufficient data" and row["statuses"] == ["insufficient data"], row
        assert "none of its 1 pod ran" in row["reason"] and "never started" in row["reason"]
        assert row["runs"] == 0 and row["pods_seen"] == 1
        assert (row["current_cpu_request"], row["current_memory_request"]) == (1, 1024 * MIB)
        assert row["recommended_cpu_request"] is None and row["recommended_memory_request"] is None
        assert row["cpu_baseline"] is None and row["monthly_saving_usd"] == 0
    # Its requests are held while it is pending (kube_job_status_active counts it); without job metrics the
    # runs' running time prices it, and it never ran.
    assert sized["rows"][("Job", "stuck", "app")]["billed_replicas"] == pytest.approx(1, abs=0.01)
    quiet = sized["rows"][("Job", "stuck-quiet", "app")]
    assert quiet["billed_replicas"] == 0 and quiet["monthly_cost_now_usd"] == 0


def test_counter_resets_do_not_bend_the_rate(sized: dict[str, Any]) -> None:
    db = sized["rows"][("StatefulSet", "db", "db")]
    assert db["cpu_p95"] == pytest.approx(0.3) and db["cpu_max"] == pytest.approx(0.3)
    assert db["cpu_p50"] == pytest.approx(0.3)
    assert db["restarts"] == (N - 1) // RESET_EVERY  # Error restarts, not OOM: memory from the peak
    assert not db["oom_killed"] and db["recommended_memory_request"] == pytest.approx(576 * MIB)  # 500 × 1.15


def test_nan_and_inf_samples_are_left_out(sized: dict[str, Any]) -> None:
    nan = sized["rows"][("Deployment", "nan", "app")]
    assert nan["memory_peak"] == 210 * MIB  # the raw max was +Inf: re-read without NaN/Inf
    assert nan["cpu_p95"] == pytest.approx(0.2) and nan["cpu_max"] == pytest.approx(0.2)
    # NaN sorts first and +Inf last in quantile_over_time: under 1 % of them cannot carry the p99 off the real
    # samples (200Mi, two of 210Mi); which real sample it lands on depends on the steps it is read at.
    assert 200 * MIB <= nan["memory_p99"] <= 210 * MIB
    skipped = {k: v for r in sized["results"] for k, v in r.skipped.items()}
    assert skipped["memory_peak NaN/Inf"] == 1 and skipped["memory_peak re-read without NaN/Inf"] == 1
    # The report of all this passes its Great Expectations gate.
    check(RIGHTSIZING.name, RIGHTSIZING.table(list(sized["rows"].values())), RIGHTSIZING.expectations)


def test_batches_the_server_refuses_are_split_and_retried(strict: str, sized: dict[str, Any]) -> None:
    """--query.max-samples=6000: every subquery over the whole namespace is refused (HTTP 422); the batch is cut
    into pod batches, then smaller ones, and the answers are the same as without the limit."""
    small = _size(strict, max_samples=5_000_000)
    stats = {k: sum(r.stats[k] for r in small["results"]) for k in ("splits", "refused")}
    assert stats["splits"] >= 2 and stats["refused"] >= 2
    assert [c.as_dict() for c in small["containers"]] == [c.as_dict() for c in sized["containers"]]


def test_prometheus_without_kube_state_metrics_names_the_missing_metric(tmp_path: Path) -> None:
    with _prometheus(tmp_path) as url:
        spec = SourceSpec(name="bare", base_url=url)
        with pytest.raises(MissingMetricError, match="missing metrics kube_pod_owner") as err:
            plan(spec, datetime.now(UTC), 86400, rate_window=300, max_points=11_000, max_samples_per_query=10**6)
        assert err.value.metrics == ["kube_pod_owner", "kube_pod_container_resource_requests",
                                     "container_cpu_usage_seconds_total", "container_memory_working_set_bytes"]
        assert "kube-state-metrics" in str(err.value) and "source 'bare'" in str(err.value)


def test_wrong_mimir_tenant_is_a_clear_401(tmp_path: Path) -> None:
    """A stand-in for Mimir's auth gateway (no Mimir runs here): 401 unless the tenant is ``team-a``."""
    seen: list[str] = []

    def gateway(request: Request) -> Answer:
        tenant = request.headers.get("X-Scope-OrgID", "")
        seen.append(tenant)
        body = b"the tenant is not authorized\n" if tenant else b"no org id\n"
        return Answer(401 if tenant != "team-a" else 200, body, "text/plain")

    with LocalServer(gateway) as server:
        spec = SourceSpec(name="prod-mimir", base_url=server.url, flavor="mimir", tenant="team-b", retries=0)
        with pytest.raises(PrometheusAuthError, match=r"HTTP 401 \(not authenticated for tenant 'team-b'") as err:
            plan(spec, datetime.now(UTC), 86400, rate_window=300, max_points=11_000, max_samples_per_query=10**6)
        assert err.value.status == 401 and "/prometheus/api/v1/label/__name__/values" in str(err.value)
        assert seen == ["team-b"]  # not retried: a wrong tenant stays wrong
