"""The Prometheus side of the devstack: a real Prometheus 2.42 with days of backfilled k8s history, a live
synthetic exporter, rules, dashboards, a replayed query log, and a ground truth to test against.

Public API (used by ``python -m devstack up|down``)::

    up(state_dir, port=19090, exporter_port=19101, seed=42, history_days=4, app_replicas=APP_REPLICAS) -> dict
        Idempotent (a running devstack made with another number of app replicas is made again). Returns
        {"url", "ground_truth", "query_log", "rules_dir", "dashboards_dir", "exporter_url", "state_dir", "seed",
        "up_seconds"}.
    down(state_dir) -> None        stop Prometheus and the exporter (files stay for inspection)
    status(state_dir) -> dict      {"prometheus": {...}, "exporter": {...}, "running": bool, ...}

Everything lives in ``state_dir/"prometheus"``: ``prometheus.yml``, ``data/`` (TSDB), ``rules/*.yml``,
``dashboards/*.json``, ``query.log``, ``{prometheus,exporter}.{pid,log}``, ``replay.json`` (every replayed
request), ``stack.json`` (how it was started) and ``ground_truth.json``.

What ``up`` does when nothing runs: wipe the folder, start the exporter, write the history as TSDB blocks
with promtool (``devstack.history``), start Prometheus (scrape interval 15 s, 30 d retention, lifecycle and
admin APIs, query log on), wait until every target of every exporter job was scraped twice, replay dashboard and
right-sizing queries (``devstack.replayer``), then write the ground truth.

The `apps` job has ``app_replicas`` targets (``devstack.exporter.APP_REPLICAS``, 4), as a service's pods are:
``127.0.0.1:<exporter_port>`` … ``127.0.0.<n>:<exporter_port>``, each serving every application family with the
same label sets and its own values, so its series exist once per ``instance`` and every application count is
``n`` × one replica's. ``instance`` and ``job`` are target labels (the cardinality analysis does not judge them).
The kubelet and kube-state-metrics jobs keep one target, ``127.0.0.1:<exporter_port>``.

Ground truth (``ground_truth.json``). Times are unix seconds; same seed gives the same file apart from
values that are absolute times (and ``generated_at``, ``timings``, ``prometheus``, ``paths``). Sizes are
cores and bytes; ``null`` = not set.

- ``seed``, ``generated_at``, ``prometheus {url, port, exporter_url, exporter_port}``, ``paths {...}``.
- ``history``: ``start``, ``end`` (first / last backfilled sample; end is a few minutes before up()),
  ``days``, ``minutes``, ``scrape_interval_seconds`` (60: one sample per minute), ``max_block_duration``,
  ``series_total``, ``samples_total``, ``series_by_metric`` (distinct series in the blocks),
  ``checkpoints``: ``[{time, series_by_metric}]`` = what ``count by (__name__)`` over the k8s metrics
  returns at that instant (chosen half a minute past a sample, so the 5 m lookback is unambiguous).
- ``head``: ``scrape_interval_seconds`` (15), ``exporter_jobs``, ``exporter_targets`` {job: [instance, ...]} (the
  `apps` job: one per replica), ``app_replicas``, ``start`` (when Prometheus started).
- Series notes (history and head): like a real kubelet, cAdvisor also has one pod-level series per pod
  without a ``container`` label (the pod cgroup: sum of its containers, never reset) — filter
  ``container!=""``; ``kube_pod_status_phase`` has all five phases per pod (0/1);
  ``kube_pod_container_status_last_terminated_reason`` exists only after a termination.
- ``namespaces`` {namespace: team}, ``nodes`` [{name, ip, cpu_cores, memory_bytes}],
  ``profiles`` {profile: ["namespace/name", ...]}.
- ``workloads``: list of {``namespace``, ``team``, ``kind`` (Deployment|StatefulSet|DaemonSet|Job), ``name``,
  ``profile``, ``replicas`` (at history end), ``replicas_min``, ``replicas_max``, ``hpa`` (null or
  {name, min_replicas, max_replicas}), ``history_start`` (first sample of the workload; later than
  ``history.start`` for short-history ones), ``short_history``, ``replicasets``, ``churn_time`` (rollout
  that replaced every pod, or null), ``completed_time`` (Job finished; pods stay, phase Succeeded),
  ``pods`` [{name, node, owner_kind, owner_name, start, end}] (``end`` = last sample, null = still exists),
  ``containers``: [{``name``, ``image``, ``requests`` {cpu, memory}, ``limits`` {cpu, memory},
  ``cpu_cores`` {p50, p90, p95, p99, max, samples}, ``memory_bytes`` {p99, max, samples}, ``by_pod``
  {pod: {cpu_cores, memory_bytes}}, ``oom_events`` [{pod, time}], ``oom_kills``}]}.
  ``cpu_cores`` are exact statistics of ``rate(container_cpu_usage_seconds_total[5m])`` evaluated on
  every history minute that has a full 5-minute window (quantiles interpolated like Prometheus'
  ``quantile_over_time``), pooled over the workload's pods (``by_pod``: per pod). ``memory_bytes`` are
  over every backfilled ``container_memory_working_set_bytes`` sample. An OOM event's ``time`` is the first
  sample showing the restarted container (restart counter +1, reason OOMKilled). Statistics cover the
  backfilled history only, not the live head.
- ``cardinality``: ``unused_metric`` {name, series} (the one exporter metric nothing references),
  ``high_cardinality`` {metric, label, distinct_values, series} (the one label nothing references; its values
  are the same on every replica, its series ``app_replicas`` × one replica's),
  ``exporter_series_by_metric`` / ``exporter_series_total`` (``/metrics`` of every replica, job ``apps``:
  static label sets, so exactly ``count(metric)`` in the head; ``app_replicas`` × one replica's),
  ``exporter_series_per_replica`` (one replica's total), ``k8s_series_by_metric_at_start`` /
  ``k8s_series_total_at_start`` (cAdvisor + KSM series the exporter exposed when up() ran; HPA pods come
  and go, so the head count drifts over the day), ``labels_by_metric`` {metric: label names, job and
  instance included} for every exporter and backfilled metric.
- ``usage`` (see ``devstack.replayer.usage_summary``): ``metrics`` {metric: {labels, all_labels, sources}},
  ``labels`` (every referenced label name), ``sources`` {rules|dashboards|queries: {metric: {labels,
  all_labels}}} — ``queries`` = PromQL the replayer sent successfully (what the query log shows besides
  rule evaluations), ``unparsable`` [{dashboard, panel, expr, error}] (one panel is broken on purpose),
  ``unused_exporter_metrics`` (exporter metrics no rule/dashboard/query references: just
  ``cardinality.unused_metric.name``). Prometheus' own ``prometheus_*``/``go_*`` metrics are not covered.
- ``replay``: ``queries``, ``ok``, ``failed`` [{expr, source, status, error}], ``label_value_calls``.
- ``timings``: seconds spent per phase of up().

``slo_ground_truth.json`` (beside it): the 30-day request history of the SLO alert-noise replay, its own
series (``slo_history_http_requests_total``) with known incidents and noise — see ``devstack.slo_history``.
A devstack made before it existed gets it at the next ``up`` (the blocks are loaded without a restart).

``latency_history.json`` (beside it): a day of history, every 15 s, of the exporter's own
``http_request_duration_seconds`` histogram on every replica (``instances``; the dashboard's heavy panel reads it;
the same series as the live head, nothing new "now") — see ``devstack.latency_history``; added to an older devstack
at the next ``up`` too.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from devstack import latency_history, proc, slo_history
from devstack.exporter import (
    APP_JOB,
    APP_REPLICAS,
    CADVISOR_PATH,
    HIGH_CARDINALITY_LABEL,
    HIGH_CARDINALITY_METRIC,
    KSM_PATH,
    UNUSED_METRIC,
    app_families,
    app_series_counts,
    app_targets,
    k8s_series_counts,
    replica_host,
)
from devstack.history import MAX_BLOCK_DURATION, backfill, default_workers, series_alive_at, workload_truth
from devstack.replayer import replay, usage_summary
from devstack.workloads import DAY_MINUTES, GRID_SECONDS, NAMESPACE_TEAMS, World, build_world

PROMETHEUS_BIN = Path("/usr/bin/prometheus")
PROMTOOL_BIN = Path("/usr/bin/promtool")
ASSETS = Path(__file__).resolve().parent / "assets"
SCRAPE_INTERVAL_S = 15
HISTORY_GAP_MINUTES = 2  # history ends this long before up(), so it never collides with the head
EXPORTER_JOBS = ("kubelet", "kube-state-metrics", APP_JOB)


# ---------------------------------------------------------------- helpers


def _root(state_dir: Path) -> Path:
    return Path(state_dir).resolve() / "prometheus"


def _python() -> str:
    venv = proc.PROJECT_ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _check_binaries() -> None:
    missing = [str(p) for p in (PROMETHEUS_BIN, PROMTOOL_BIN) if not p.exists()]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not found: install Debian's Prometheus with `apt-get install prometheus` "
            "(`make` does it) — the devstack runs the real Prometheus 2.42 and promtool from /usr/bin."
        )


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _get_json(url: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _instant(url: str, query: str) -> list[dict[str, Any]]:
    return _get_json(f"{url}/api/v1/query", {"query": query})["data"]["result"]


def exporter_targets(exporter_port: int, app_replicas: int = APP_REPLICAS) -> dict[str, list[str]]:
    """Every exporter job's targets (``host:port``, the ``instance`` label): one per app replica for `apps`."""
    k8s = [f"{replica_host(0)}:{exporter_port}"]
    return {"kubelet": k8s, "kube-state-metrics": k8s, APP_JOB: app_targets(exporter_port, app_replicas)}


def prometheus_config(root: Path, port: int, exporter_port: int, app_replicas: int = APP_REPLICAS) -> str:
    """prometheus.yml: 15 s scrapes of Prometheus itself, the exporter's k8s endpoints and every app replica."""
    exporter = f"{replica_host(0)}:{exporter_port}"
    apps = ", ".join(f'"{t}"' for t in exporter_targets(exporter_port, app_replicas)[APP_JOB])
    return f"""# Generated by devstack.prom_stack — edits are lost on the next `up`.
global:
  scrape_interval: {SCRAPE_INTERVAL_S}s
  scrape_timeout: 10s
  evaluation_interval: 30s
  query_log_file: {root / "query.log"}
  external_labels:
    cluster: devstack

rule_files:
  - {root / "rules"}/*.yml

scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:{port}"]

  # cAdvisor and kube-state-metrics series carry their own job/instance labels, as if
  # scraped from the kubelets and from kube-state-metrics.
  - job_name: kubelet
    honor_labels: true
    metrics_path: {CADVISOR_PATH}
    static_configs:
      - targets: ["{exporter}"]

  - job_name: kube-state-metrics
    honor_labels: true
    metrics_path: {KSM_PATH}
    static_configs:
      - targets: ["{exporter}"]

  # One target per replica of the applications, like pods: same port, their own (loopback) address.
  - job_name: {APP_JOB}
    metrics_path: /metrics
    static_configs:
      - targets: [{apps}]
"""


def _wait_scraped(url: str, targets: dict[str, list[str]], times: int = 2, timeout: float = 90.0) -> None:
    """Wait until every target of every exporter job (``targets``: job -> instances) has been scraped successfully
    ``times`` times.

    Watches ``lastScrape`` in ``/api/v1/targets`` (not PromQL, so the polling stays out of the query log).
    """
    scrapes: dict[tuple[str, str], set[str]] = {(job, i): set() for job, instances in targets.items()
                                                for i in instances}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            active = _get_json(f"{url}/api/v1/targets", {"state": "active"})["data"]["activeTargets"]
        except OSError:
            active = []
        for t in active:
            key = (t["labels"].get("job", ""), t["labels"].get("instance", ""))
            if key in scrapes and t.get("health") == "up" and not t["lastScrape"].startswith("0001"):
                scrapes[key].add(t["lastScrape"])
        if all(len(seen) >= times for seen in scrapes.values()):
            return
        time.sleep(0.5)
    counts = {f"{job} {instance}": len(seen) for (job, instance), seen in scrapes.items()}
    raise RuntimeError(f"exporter targets not scraped {times} times within {timeout:.0f}s: {counts}")


def _rightsizing_queries(world: World, truth: list[dict[str, Any]], at: int, minutes: int) -> list[
        tuple[str, str, float]]:
    """krr-style queries (server-side quantiles over the history) for a few workloads."""
    picks: list[dict[str, Any]] = []
    for profile in ("over_provisioned_cpu", "oom_killed", "hpa_managed", "spiky_cpu"):
        picks += [w for w in truth if w["profile"] == profile and w["kind"] == "Deployment"][:1]
    duration = f"{minutes}m"
    out = []
    for w in picks:
        pods = "|".join(p["name"] for p in w["pods"][:50])
        container = w["containers"][0]["name"]
        sel = f'namespace="{w["namespace"]}", pod=~"{pods}", container="{container}"'
        label = f"rightsizing {w['namespace']}/{w['name']}"
        out += [
            (label, f"quantile_over_time(0.95, max by (container, pod, job) "
                    f"(rate(container_cpu_usage_seconds_total{{{sel}}}[5m]))[{duration}:1m])", at),
            (label, f"max_over_time(max by (container, pod, job) "
                    f"(container_memory_working_set_bytes{{{sel}}})[{duration}:1m])", at),
            (label, f"count_over_time(max by (container, pod, job) "
                    f"(container_memory_working_set_bytes{{{sel}}})[{duration}:1m])", at),
            (label, f'max_over_time((kube_pod_container_resource_limits{{resource="memory", {sel}}} '
                    f"* on (pod, container, job) group_left (reason) "
                    f'kube_pod_container_status_last_terminated_reason{{reason="OOMKilled", {sel}}})[{duration}:1m])',
             at),
        ]
    return out


# ---------------------------------------------------------------- public API


def status(state_dir: Path) -> dict[str, Any]:
    """Which processes run, and where."""
    root = _root(state_dir)
    stack = _read_json(root / "stack.json") or {}
    out: dict[str, Any] = {"state_dir": str(root)}
    for name in ("prometheus", "exporter"):
        pid = proc.read_pid(root / f"{name}.pid")
        out[name] = {"running": pid is not None, "pid": pid, "log": str(root / f"{name}.log")}
    out["prometheus"]["url"] = stack.get("url")
    out["exporter"]["url"] = stack.get("exporter_url")
    out["running"] = out["prometheus"]["running"] and out["exporter"]["running"]
    gt = root / "ground_truth.json"
    out["ground_truth"] = str(gt) if gt.exists() else None
    return out


def down(state_dir: Path) -> bool:
    """Stop Prometheus and the exporter (True if either ran); the data stays until the next ``up``."""
    root = _root(state_dir)
    stopped_prometheus = proc.stop("prometheus", root)
    stopped_exporter = proc.stop("exporter", root)
    return stopped_prometheus or stopped_exporter


def up(state_dir: Path, port: int = 19090, exporter_port: int = 19101, seed: int = 42,
       history_days: float = 4, app_replicas: int = APP_REPLICAS) -> dict[str, Any]:
    """Bring the Prometheus side up (or return the running one); see the module docstring."""
    _check_binaries()
    if not 1 <= app_replicas <= 254:
        raise ValueError(f"app_replicas must be between 1 and 254 (127.0.0.1 … 127.0.0.254), not {app_replicas}")
    t_start = time.monotonic()
    root = _root(state_dir)
    stack = _read_json(root / "stack.json")
    st = status(state_dir)
    if st["prometheus"]["running"] and stack and (root / "ground_truth.json").exists():
        if stack["seed"] != seed:
            raise ValueError(f"the running devstack Prometheus uses seed {stack['seed']}, not {seed}: down() first")
        replicas = stack.get("app_replicas", 1)  # a devstack made before replicas existed had one
        if replicas == app_replicas:
            return _keep_running(root, stack, t_start)
        print(f"devstack: the running Prometheus side has {replicas} app replica(s), not {app_replicas}: "
              "making it again", file=sys.stderr, flush=True)

    down(state_dir)
    for host, p in [(replica_host(0), port), *((replica_host(r), exporter_port) for r in range(app_replicas))]:
        if not _port_free(p, host):
            raise RuntimeError(f"port {host}:{p} is taken by another process; pick other ports")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    try:
        return _fresh_up(root, port, exporter_port, seed, history_days, app_replicas, t_start)
    except BaseException:
        down(state_dir)
        raise


def _keep_running(root: Path, stack: dict[str, Any], t_start: float) -> dict[str, Any]:
    """The running devstack, with what an older one lacks added (an exporter that died is started again)."""
    if proc.read_pid(root / "exporter.pid") is None:
        _spawn_exporter(root, stack["exporter_port"], stack["seed"], stack["history_start"],
                        stack["history_minutes"], stack.get("app_replicas", 1))
        proc.wait_http(f"{stack['exporter_url']}/healthz", 30, "exporter", root / "exporter.log")
    if not (root / slo_history.TRUTH_FILE).exists():  # a devstack made before the SLO history existed
        slo_history.ensure(root, stack["seed"], stack["history_end"], str(PROMTOOL_BIN), url=stack["url"])
    if not (root / latency_history.TRUTH_FILE).exists():  # made before the latency histogram had history
        latency_history.ensure(root, stack["seed"], stack["history_start"], stack["history_end"],
                               app_targets(stack["exporter_port"], stack.get("app_replicas", 1)), str(PROMTOOL_BIN),
                               url=stack["url"])
    return _info(root, stack, time.monotonic() - t_start)


def _fresh_up(root: Path, port: int, exporter_port: int, seed: int, history_days: float, app_replicas: int,
              t_start: float) -> dict[str, Any]:
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.monotonic()
        timings[name] = round(now - since, 2)
        return now

    minutes = round(history_days * DAY_MINUTES)
    history_end = (int(time.time()) // GRID_SECONDS) * GRID_SECONDS - HISTORY_GAP_MINUTES * GRID_SECONDS
    history_start = history_end - minutes * GRID_SECONDS
    url, exporter_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{exporter_port}"
    world = build_world(seed, minutes)

    shutil.copytree(ASSETS / "rules", root / "rules")
    shutil.copytree(ASSETS / "dashboards", root / "dashboards")
    (root / "prometheus.yml").write_text(prometheus_config(root, port, exporter_port, app_replicas))
    targets = exporter_targets(exporter_port, app_replicas)
    stack = {"seed": seed, "url": url, "port": port, "exporter_url": exporter_url, "exporter_port": exporter_port,
             "app_replicas": app_replicas, "history_start": history_start, "history_end": history_end,
             "history_minutes": minutes}
    (root / "stack.json").write_text(json.dumps(stack, indent=2) + "\n")

    # Backfill before Prometheus starts: a running Prometheus would only see new blocks after its
    # next minutely reload, and a restart would pay the scrape manager's start-up delay twice. The
    # exporter starts first so it has imported numpy by the first scrape.
    t = time.monotonic()
    _spawn_exporter(root, exporter_port, seed, history_start, minutes, app_replicas)
    result = backfill(world, history_start, root / "data", root / "tmp", str(PROMTOOL_BIN), default_workers())
    shutil.rmtree(root / "tmp", ignore_errors=True)
    t = lap("history", t)
    slo_history.ensure(root, seed, history_end, str(PROMTOOL_BIN))  # its own series and ground truth
    t = lap("slo_history", t)
    # The heavy dashboard panel's histogram: a day of its samples, as the live exporter would have served them.
    latency_history.ensure(root, seed, history_start, history_end, targets[APP_JOB], str(PROMTOOL_BIN))
    t = lap("latency_history", t)

    proc.wait_http(f"{exporter_url}/healthz", 30, "exporter", root / "exporter.log")
    _spawn_prometheus(root, port)
    head_start = int(time.time())
    proc.wait_http(f"{url}/-/ready", 60, "prometheus", root / "prometheus.log")
    t = lap("prometheus_ready", t)

    # While the first scrapes happen: the truth that needs no Prometheus.
    truth = workload_truth(world, history_start)
    k_now = (int(time.time()) - history_start) // GRID_SECONDS
    k8s_counts = k8s_series_counts(world, k_now)
    all_series = list(world.k8s_series(0, minutes))
    labels_by_metric: dict[str, set[str]] = {}
    for series in all_series:
        labels_by_metric.setdefault(series.metric, set()).update(name for name, _ in series.labels)
    families = app_families(seed, 0, app_replicas)  # the same label sets on every replica
    for family in families:
        for app in family.series:
            labels_by_metric.setdefault(app.name, {"job", "instance"}).update(name for name, _ in app.labels)
    checkpoints = []
    for k in (minutes // 2, minutes - 60):
        checkpoints.append({"time": history_start + k * GRID_SECONDS + GRID_SECONDS // 2,
                            "series_by_metric": series_alive_at(all_series, k)})
    del all_series
    t = lap("truth", t)

    _wait_scraped(url, targets)
    t = lap("scrapes", t)

    dashboards = [json.loads(p.read_text()) for p in sorted((root / "dashboards").glob("*.json"))]
    report = replay(url, dashboards, seed=seed,
                    extra=_rightsizing_queries(world, truth, history_end, minutes - 5))
    (root / "replay.json").write_text(json.dumps(report.to_json(), indent=1) + "\n")
    t = lap("replay", t)

    usage = usage_summary(sorted((root / "rules").glob("*.yml")), dashboards, [q.expr for q in report.ok])
    app_counts = app_series_counts(seed, app_replicas)
    usage["unused_exporter_metrics"] = sorted((set(app_counts) | set(result.series_by_metric))
                                              - set(usage["metrics"]))
    sessions = {dict(s.labels)[HIGH_CARDINALITY_LABEL] for f in families for s in f.series
                if s.name == HIGH_CARDINALITY_METRIC}
    profiles: dict[str, list[str]] = {}
    for w in truth:
        profiles.setdefault(w["profile"], []).append(f"{w['namespace']}/{w['name']}")

    ground_truth = {
        "version": 1,
        "seed": seed,
        "generated_at": int(time.time()),
        "prometheus": {"url": url, "port": port, "exporter_url": exporter_url, "exporter_port": exporter_port},
        "paths": {"state_dir": str(root), "query_log": str(root / "query.log"), "rules_dir": str(root / "rules"),
                  "dashboards_dir": str(root / "dashboards"), "replay": str(root / "replay.json")},
        "history": {
            "start": history_start, "end": history_end, "days": history_days, "minutes": minutes,
            "scrape_interval_seconds": GRID_SECONDS, "max_block_duration": MAX_BLOCK_DURATION,
            "series_total": sum(result.series_by_metric.values()), "samples_total": result.samples,
            "series_by_metric": result.series_by_metric, "checkpoints": checkpoints,
        },
        "head": {"scrape_interval_seconds": SCRAPE_INTERVAL_S, "exporter_jobs": list(EXPORTER_JOBS),
                 "exporter_targets": targets, "app_replicas": app_replicas, "start": head_start},
        "namespaces": dict(NAMESPACE_TEAMS),
        "nodes": [{"name": n.name, "ip": n.ip, "cpu_cores": n.cpu_cores, "memory_bytes": n.memory_bytes}
                  for n in world.nodes],
        "profiles": profiles,
        "workloads": truth,
        "cardinality": {
            "unused_metric": {"name": UNUSED_METRIC, "series": app_counts[UNUSED_METRIC]},
            "high_cardinality": {"metric": HIGH_CARDINALITY_METRIC, "label": HIGH_CARDINALITY_LABEL,
                                 "distinct_values": len(sessions), "series": app_counts[HIGH_CARDINALITY_METRIC]},
            "exporter_series_by_metric": app_counts,
            "exporter_series_total": sum(app_counts.values()),
            "exporter_series_per_replica": sum(app_counts.values()) // app_replicas,
            "k8s_series_by_metric_at_start": k8s_counts,
            "k8s_series_total_at_start": sum(k8s_counts.values()),
            "labels_by_metric": {m: sorted(labels) for m, labels in sorted(labels_by_metric.items())},
        },
        "usage": usage,
        "replay": {
            "queries": len(report.queries), "ok": len(report.ok), "label_value_calls": report.label_value_calls,
            "failed": [{"expr": q.expr, "source": q.source, "status": q.status, "error": q.error}
                       for q in report.queries if q.status != 200],
        },
        "timings": timings,
    }
    lap("ground_truth", t)
    timings["total"] = round(time.monotonic() - t_start, 2)
    timings["history_generate"] = result.seconds_generate
    (root / "ground_truth.json").write_text(json.dumps(ground_truth, indent=1) + "\n")
    return _info(root, stack, time.monotonic() - t_start)


def _spawn_prometheus(root: Path, port: int) -> int:
    return proc.spawn("prometheus", [
        str(PROMETHEUS_BIN),
        f"--config.file={root / 'prometheus.yml'}",
        f"--storage.tsdb.path={root / 'data'}",
        "--storage.tsdb.retention.time=30d",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--web.enable-admin-api",
        # hidden flag (default 5s): apply the static targets sooner, the first scrapes come earlier
        "--scrape.discovery-reload-interval=1s",
    ], root, cwd=root)


def _spawn_exporter(root: Path, port: int, seed: int, history_start: int, minutes: int, app_replicas: int) -> int:
    return proc.spawn("exporter", [
        _python(), "-m", "devstack.exporter", "--port", str(port), "--seed", str(seed),
        "--history-start", str(history_start), "--history-minutes", str(minutes), "--replicas", str(app_replicas),
    ], root, env={"PYTHONPATH": str(proc.PROJECT_ROOT / "include")}, cwd=proc.PROJECT_ROOT)


def _info(root: Path, stack: dict[str, Any], seconds: float) -> dict[str, Any]:
    return {
        "url": stack["url"],
        "exporter_url": stack["exporter_url"],
        "ground_truth": str(root / "ground_truth.json"),
        "slo_ground_truth": str(root / slo_history.TRUTH_FILE),
        "query_log": str(root / "query.log"),
        "rules_dir": str(root / "rules"),
        "dashboards_dir": str(root / "dashboards"),
        "state_dir": str(root),
        "seed": stack["seed"],
        "up_seconds": round(seconds, 2),
        "pid": proc.read_pid(root / "prometheus.pid"),
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
