"""The devstack's Prometheus side, checked through real HTTP against its ground truth.

The integration tests bring a fresh stack up in a temporary state folder on free ports (so a running
devstack is left alone), query the real Prometheus, and stop everything at the end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devstack import proc, prom_stack
from devstack.exporter import HIGH_CARDINALITY_LABEL, UNUSED_METRIC, app_families, app_series_counts
from devstack.history import rolling_rate, workload_truth
from devstack.replayer import dashboard_usage, promql_refs, rule_expressions
from devstack.workloads import build_world
from tests.support.net import free_port

ASSETS = prom_stack.ASSETS
SCRAPE_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                    "scrape_samples_post_metric_relabeling", "scrape_series_added"}


# ---------------------------------------------------------------- helpers


def _api(url: str, path: str, **params: Any) -> Any:
    query = urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(f"{url}{path}?{query}", timeout=60) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]


def _query(url: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"query": expr}
    if at is not None:
        params["time"] = at
    return _api(url, "/api/v1/query", **params)["result"]


def _scalar(url: str, expr: str, at: float | None = None) -> float:
    result = _query(url, expr, at)
    assert len(result) == 1, f"{expr}: {result}"
    return float(result[0]["value"][1])


def _workload(gt: dict[str, Any], profile: str, **match: Any) -> dict[str, Any]:
    for w in gt["workloads"]:
        if w["profile"] == profile and all(w.get(k) == v for k, v in match.items()):
            return w
    raise AssertionError(f"no {profile} workload matching {match}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state = tmp_path_factory.mktemp("devstack")
    t0 = time.monotonic()
    info = prom_stack.up(state, port=free_port(), exporter_port=free_port(), seed=42)
    elapsed = time.monotonic() - t0
    gt = json.loads(Path(info["ground_truth"]).read_text())
    print(f"\nprom_stack.up() took {elapsed:.1f}s; phases: {gt['timings']}; history series "
          f"{gt['history']['series_total']}, samples {gt['history']['samples_total']}")
    yield {"info": info, "gt": gt, "state": state, "elapsed": elapsed, "url": info["url"]}
    prom_stack.down(state)


# ---------------------------------------------------------------- lifecycle


@pytest.mark.integration
def test_up_is_fast_and_idempotent(stack: dict[str, Any]) -> None:
    assert stack["elapsed"] < 180, f"up() took {stack['elapsed']:.1f}s"
    st = prom_stack.status(stack["state"])
    assert st["running"] and st["prometheus"]["url"] == stack["url"]
    t0 = time.monotonic()
    again = prom_stack.up(stack["state"], seed=42)  # other ports on purpose: the running stack wins
    assert time.monotonic() - t0 < 5
    assert again["url"] == stack["url"]
    assert prom_stack.status(stack["state"])["prometheus"]["pid"] == st["prometheus"]["pid"]
    with pytest.raises(ValueError, match="seed"):
        prom_stack.up(stack["state"], seed=7)


@pytest.mark.integration
def test_prometheus_flags_and_config(stack: dict[str, Any]) -> None:
    flags = _api(stack["url"], "/api/v1/status/flags")
    assert flags["storage.tsdb.retention.time"] == "30d"
    assert flags["web.enable-lifecycle"] == "true" and flags["web.enable-admin-api"] == "true"
    assert flags["web.listen-address"].startswith("127.0.0.1:")
    config = _api(stack["url"], "/api/v1/status/config")["yaml"]
    assert "query_log_file" in config and "scrape_interval: 15s" in config


# ---------------------------------------------------------------- history


@pytest.mark.integration
def test_history_series_at_checkpoints_match_truth(stack: dict[str, Any]) -> None:
    url, gt = stack["url"], stack["gt"]
    for cp in gt["history"]["checkpoints"]:
        assert cp["time"] < gt["history"]["end"]
        got = {r["metric"]["__name__"]: int(r["value"][1])
               for r in _query(url, 'count by (__name__) ({__name__=~"kube_.+|container_.+"})', cp["time"])}
        assert got == cp["series_by_metric"]
        requests = _scalar(url, "count(kube_pod_container_resource_requests)", cp["time"])
        assert requests == cp["series_by_metric"]["kube_pod_container_resource_requests"]


@pytest.mark.integration
def test_history_holds_every_backfilled_series(stack: dict[str, Any]) -> None:
    url, history = stack["url"], stack["gt"]["history"]
    for metric, expected in history["series_by_metric"].items():
        series = _api(url, "/api/v1/series", **{"match[]": metric, "start": history["start"], "end": history["end"]})
        assert len(series) == expected, metric


@pytest.mark.integration
def test_cpu_p95_of_overprovisioned_workload_matches_truth(stack: dict[str, Any]) -> None:
    url, gt = stack["url"], stack["gt"]
    w = next(w for w in gt["workloads"] if w["profile"] == "over_provisioned_cpu" and len(w["pods"]) == 1)
    pod, container = w["pods"][0]["name"], w["containers"][0]
    minutes = gt["history"]["minutes"] - 5  # the points with a full 5m rate window
    sel = f'namespace="{w["namespace"]}", pod="{pod}", container="{container["name"]}"'
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        got = _scalar(url, f"quantile_over_time({q}, rate(container_cpu_usage_seconds_total{{{sel}}}[5m])"
                           f"[{minutes}m:1m])", gt["history"]["end"])
        want = container["cpu_cores"][name]
        assert got == pytest.approx(want, rel=0.02), name
    # an over-provisioned container really uses a small share of its request
    assert container["cpu_cores"]["p95"] < 0.3 * container["requests"]["cpu"]
    peak = _scalar(url, f"max_over_time(container_memory_working_set_bytes{{{sel}}}"
                        f"[{gt['history']['minutes']}m])", gt["history"]["end"])
    assert peak == container["memory_bytes"]["max"]


@pytest.mark.integration
def test_oom_kills_are_visible(stack: dict[str, Any]) -> None:
    url, gt = stack["url"], stack["gt"]
    w = _workload(gt, "oom_killed")
    c = w["containers"][0]
    assert c["oom_kills"] >= 2
    window = f"{gt['history']['minutes']}m"
    sel = f'namespace="{w["namespace"]}", container="{c["name"]}", pod=~"{"|".join(p["name"] for p in w["pods"])}"'
    changes = _scalar(url, f"sum(changes(kube_pod_container_status_restarts_total{{{sel}}}[{window}]))",
                      gt["history"]["end"])
    assert changes == c["oom_kills"]
    oom = _query(url, f'kube_pod_container_status_last_terminated_reason{{{sel}, reason="OOMKilled"}}',
                 gt["history"]["end"])
    assert {r["metric"]["pod"] for r in oom} == {e["pod"] for e in c["oom_events"]}
    # the working set approached the limit before each kill
    assert c["memory_bytes"]["max"] > 0.9 * c["limits"]["memory"]


@pytest.mark.integration
def test_hpa_and_short_history(stack: dict[str, Any]) -> None:
    url, gt = stack["url"], stack["gt"]
    end, window = gt["history"]["end"], f"{gt['history']['minutes']}m"
    w = _workload(gt, "hpa_managed")
    hpa = f'kube_horizontalpodautoscaler_status_current_replicas{{namespace="{w["namespace"]}", ' \
          f'horizontalpodautoscaler="{w["name"]}"}}'
    assert _scalar(url, f"max_over_time({hpa}[{window}])", end) == w["hpa"]["max_replicas"] == w["replicas_max"]
    assert _scalar(url, f"min_over_time({hpa}[{window}])", end) == w["hpa"]["min_replicas"] == w["replicas_min"]

    short = _workload(gt, "short_history")
    assert short["short_history"] and end - short["history_start"] == 6 * 3600
    pod = short["pods"][0]["name"]
    samples = _scalar(url, f'count_over_time(kube_pod_info{{namespace="{short["namespace"]}", pod="{pod}"}}'
                           f"[{window}])", end)
    assert samples == (end - short["history_start"]) // gt["history"]["scrape_interval_seconds"] + 1


@pytest.mark.integration
def test_head_continues_history(stack: dict[str, Any]) -> None:
    url, gt = stack["url"], stack["gt"]
    w = next(w for w in gt["workloads"] if w["profile"] == "over_provisioned_cpu" and len(w["pods"]) == 1)
    sel = (f'container_cpu_usage_seconds_total{{namespace="{w["namespace"]}", pod="{w["pods"][0]["name"]}", '
           f'container="{w["containers"][0]["name"]}"}}')
    at_end = _scalar(url, sel, gt["history"]["end"])
    now = _scalar(url, sel)
    assert now > at_end
    assert _scalar(url, f"resets({sel}[30m])") == 0  # the head picks the counter up where history left it
    # its growth since the history end is a plausible CPU usage, not a jump
    elapsed = time.time() - gt["history"]["end"]
    assert 0 < (now - at_end) / elapsed < 3 * w["containers"][0]["cpu_cores"]["max"]


# ---------------------------------------------------------------- head cardinality


@pytest.mark.integration
def test_unused_metric_count(stack: dict[str, Any]) -> None:
    unused = stack["gt"]["cardinality"]["unused_metric"]
    assert unused["name"] == UNUSED_METRIC
    assert _scalar(stack["url"], f"count({unused['name']})") == unused["series"]
    assert stack["gt"]["usage"]["unused_exporter_metrics"] == [unused["name"]]


@pytest.mark.integration
def test_high_cardinality_label(stack: dict[str, Any]) -> None:
    hc = stack["gt"]["cardinality"]["high_cardinality"]
    url = stack["url"]
    assert _scalar(url, f"count(count by ({hc['label']}) ({hc['metric']}))") == hc["distinct_values"]
    assert _scalar(url, f"count({hc['metric']})") == hc["series"]
    # it is by far the label with the most values in the head
    values = _api(url, "/api/v1/status/tsdb")["labelValueCountByLabelName"]
    assert values[0]["name"] == hc["label"] and values[0]["value"] == hc["distinct_values"]
    labels = _api(url, "/api/v1/labels", **{"match[]": hc["metric"]})
    assert set(labels) - {"__name__"} == set(stack["gt"]["cardinality"]["labels_by_metric"][hc["metric"]])


@pytest.mark.integration
def test_exporter_series_counts(stack: dict[str, Any]) -> None:
    gt = stack["gt"]["cardinality"]
    got = {r["metric"]["__name__"]: int(r["value"][1])
           for r in _query(stack["url"], 'count by (__name__) ({job="apps"})')}
    assert {k: v for k, v in got.items() if k not in SCRAPE_SYNTHETIC} == gt["exporter_series_by_metric"]
    head = _scalar(stack["url"], "prometheus_tsdb_head_series")
    assert gt["exporter_series_total"] + gt["k8s_series_total_at_start"] < head < 20_000


@pytest.mark.integration
def test_apps_job_has_a_target_per_replica(stack: dict[str, Any]) -> None:
    """Like a service's pods: the `apps` job scrapes one target per replica (same port, own address), every one
    with the same series, each with its own values; the k8s jobs keep one target."""
    head = stack["gt"]["head"]
    targets = _api(stack["url"], "/api/v1/targets", state="active")["activeTargets"]
    by_job: dict[str, set[str]] = {}
    for t in targets:
        assert t["health"] == "up", t
        by_job.setdefault(t["labels"]["job"], set()).add(t["labels"]["instance"])
    assert {job: sorted(i) for job, i in by_job.items() if job in head["exporter_jobs"]} == \
        {job: sorted(i) for job, i in head["exporter_targets"].items()}
    apps = head["exporter_targets"]["apps"]
    assert len(apps) == head["app_replicas"] > 1 and len({i.rsplit(":", 1)[1] for i in apps}) == 1
    per = {r["metric"]["instance"]: int(r["value"][1])
           for r in _query(stack["url"], 'count by (instance) ({job="apps", __name__!~"up|scrape_.+"})')}
    assert per == dict.fromkeys(apps, stack["gt"]["cardinality"]["exporter_series_per_replica"])
    # The replicas share the traffic: each serves some of every service's requests, and not the same share.
    rates = _query(stack["url"], "sum by (instance) (rate(http_requests_total[1m]))")
    assert len(rates) == len(apps) and all(float(r["value"][1]) > 0 for r in rates)
    assert len({r["value"][1] for r in rates}) > 1


# ---------------------------------------------------------------- rules, query log, usage truth


@pytest.mark.integration
def test_rules_are_loaded(stack: dict[str, Any]) -> None:
    groups = _api(stack["url"], "/api/v1/rules")["groups"]
    expected = rule_expressions(sorted((ASSETS / "rules").glob("*.yml")))
    assert sum(len(g["rules"]) for g in groups) == len(expected)
    assert {g["file"] for g in groups} == {str(Path(stack["info"]["rules_dir"]) / f) for f, _, _ in expected}
    assert not [r["name"] for g in groups for r in g["rules"] if r["health"] == "err"]


@pytest.mark.integration
def test_query_log_has_replayed_queries(stack: dict[str, Any]) -> None:
    entries = [json.loads(line) for line in Path(stack["info"]["query_log"]).read_text().splitlines() if line]
    api = [e for e in entries if "httpRequest" in e]
    assert any("ruleGroup" in e for e in entries)
    report = json.loads((Path(stack["info"]["state_dir"]) / "replay.json").read_text())
    ok = [q for q in report["queries"] if q["status"] == 200]
    assert len(ok) >= 50
    logged = {e["params"]["query"] for e in api}
    assert {q["expr"] for q in ok} <= logged
    ranged = [e for e in api if e["params"].get("step")]
    assert ranged and all(e["params"]["step"] >= 15 for e in ranged)
    assert all("evalTotalTime" in e["stats"]["timings"] for e in api)
    replay = stack["gt"]["replay"]
    assert replay["ok"] == len(ok) and [f["source"] for f in replay["failed"]] == \
        ["devstack-capacity / Unused CPU requests (7d p95)"] * len(replay["failed"])


@pytest.mark.integration
def test_usage_truth_matches_assets(stack: dict[str, Any]) -> None:
    usage = stack["gt"]["usage"]
    hc = stack["gt"]["cardinality"]["high_cardinality"]
    assert hc["label"] not in usage["labels"]
    assert UNUSED_METRIC not in usage["metrics"]
    assert not usage["metrics"][hc["metric"]]["all_labels"]  # only ever aggregated away from session_id
    assert len(usage["unparsable"]) == 1 and usage["unparsable"][0]["dashboard"] == "devstack-capacity"
    assert set(usage["sources"]["queries"]) <= set(usage["metrics"])


# ---------------------------------------------------------------- pure checks (no services)


@pytest.mark.unit
def test_assets_reference_everything_but_the_unused_metric() -> None:
    refs = {}
    for _, _, expr in rule_expressions(sorted((ASSETS / "rules").glob("*.yml"))):
        refs |= promql_refs(expr)
    dashboards = [json.loads(p.read_text()) for p in sorted((ASSETS / "dashboards").glob("*.json"))]
    dash_refs, unparsable = dashboard_usage(dashboards)
    used = set(refs) | set(dash_refs)
    world = build_world(42, 600)
    exposed = set(app_series_counts(42)) | {s.metric for s in world.k8s_series(0, 600)}
    assert exposed - used == {UNUSED_METRIC}
    labels = {label for use in (*refs.values(), *dash_refs.values()) for label in use.labels}
    assert HIGH_CARDINALITY_LABEL not in labels
    assert [u["panel"] for u in unparsable] == ["Unused CPU requests (7d p95)"]


@pytest.mark.unit
def test_rule_files_pass_promtool() -> None:
    files = sorted(str(p) for p in (ASSETS / "rules").glob("*.yml"))
    out = subprocess.run([str(prom_stack.PROMTOOL_BIN), "check", "rules", *files], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.unit
def test_promql_refs_semantics() -> None:
    refs = promql_refs('sum by (service) (rate(x_total{route="/a"}[5m])) / on (service) group_left (team) y')
    assert refs["x_total"].labels == {"service", "route", "team"} and not refs["x_total"].all_labels
    assert refs["y"].all_labels is False  # the "one" side only contributes service and team
    assert promql_refs("topk(3, z)")["z"].all_labels
    assert promql_refs('label_replace(v, "dst", "$1", "src", "(.*)")')["v"].labels == {"src"}


def _relative(obj: Any, anchor: int) -> Any:
    """The truth with every absolute time made relative to ``anchor``."""
    time_keys = {"start", "end", "time", "history_start", "churn_time", "completed_time"}
    if isinstance(obj, dict):
        return {k: (v - anchor if k in time_keys and isinstance(v, int) else _relative(v, anchor))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative(v, anchor) for v in obj]
    return obj


@pytest.mark.unit
def test_same_seed_same_world_other_seed_other_world() -> None:
    a = workload_truth(build_world(42, 1440), 1_700_000_040)
    b = workload_truth(build_world(42, 1440), 1_800_000_000)
    assert _relative(a, 1_700_000_040) == _relative(b, 1_800_000_000)
    c = workload_truth(build_world(7, 1440), 1_700_000_040)
    assert [w["name"] for w in a] == [w["name"] for w in c]  # same catalogue ...
    assert [p["name"] for w in a for p in w["pods"]] != [p["name"] for w in c for p in w["pods"]]  # ... new pods
    labels = [[s.labels for s in f.series] for f in app_families(42)]
    assert labels == [[s.labels for s in f.series] for f in app_families(42)]
    assert labels != [[s.labels for s in f.series] for f in app_families(7)]


@pytest.mark.unit
def test_rolling_rate_is_prometheus_rate_over_5m() -> None:
    usage = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert list(rolling_rate(np.array(usage))) == [4.0, 5.0]  # mean of the 5 minutes before each point


# ---------------------------------------------------------------- teardown (runs last in this file)


@pytest.mark.integration
def test_down_stops_everything(stack: dict[str, Any]) -> None:
    root = Path(stack["info"]["state_dir"])
    pids = [proc.read_pid(root / f"{name}.pid") for name in ("prometheus", "exporter")]
    assert all(pids)
    prom_stack.down(stack["state"])
    st = prom_stack.status(stack["state"])
    assert not st["prometheus"]["running"] and not st["exporter"]["running"]
    for pid in pids:
        assert pid is not None and not proc.pid_alive(pid)
    prom_port = int(stack["url"].rsplit(":", 1)[1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", prom_port)) != 0
    for target in stack["gt"]["head"]["exporter_targets"]["apps"]:  # every replica's address is closed too
        host, port = target.rsplit(":", 1)
        with socket.socket() as s:
            assert s.connect_ex((host, int(port))) != 0, target
    assert os.path.exists(stack["info"]["ground_truth"])  # data stays for inspection
