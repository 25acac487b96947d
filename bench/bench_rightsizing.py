"""finops_rightsizing at scale: 10,000 containers × 14 days on the real Prometheus 2.42, three ways, same data.

- **ours** — the library's own path (``plan`` + ``collect_batch`` per namespace batch + the recommender):
  server-side statistics, one number per container per query, ``query_concurrency`` 2;
- **(a) VPA-style raw pull** — what the VPA recommender's Prometheus history provider does: raw working-set
  samples (``container_memory_working_set_bytes[…]``) and the CPU rate at the data resolution
  (``rate(…)[…:step]``), folded client-side into VPA-like histograms (exponential buckets 5 % apart, no decay).
  A cluster-wide 14-day pull is refused by Prometheus (``--query.max-samples``, 50M), so it is cut per namespace
  and per day — as any working raw puller must;
- **(b) KRR-style** — robusta-dev/krr's queries: per workload container, pods 50 per regex, ``max by (container,
  pod, job)`` inside the subquery; its simple strategy's loaders (CPU p95, memory max, CPU and memory sample
  counts) plus its OOM loader (``krr``: the feature ours has) or without it (``krr-simple``), 6 workers. Its
  Kubernetes-API discovery is replaced by a kube-state-metrics listing taken before the clock starts.

Each method runs in its own Python process (its peak RSS is its own ``ru_maxrss``); bytes are counted on the
wire (gzip, as Prometheus sends them) and decoded; the Prometheus-side evaluation time is the sum of
``evalTotalTime`` in the query log over the method's queries, and the server's CPU seconds come from /proc.
The history is built once and cached under ``bench/out/`` (see ``bench/rightsizing_data.py``).

Then, with ``--recorded yes`` (the default) or ``only``: the same TSDB gains 14 days of kube-prometheus' recorded
per-container CPU rate (``promtool tsdb create-blocks-from rules``, cached), twice — evaluated every scrape interval
(kube-prometheus as shipped) and evaluated once per sizing step (4 scrape intervals: as a 1-minute rule group over a
15 s scrape), under two names — and, ``--runs`` times, ours runs on a Prometheus without a rule (``rate()``), ours on
one that loads the every-scrape rule, then ours, (b) and (b′) on one that loads the once-per-step rule (ours reads the
CPU percentiles from the recorded series; (b) and (b′) read no rule).

Usage: ``python bench/bench_rightsizing.py [--methods ours,vpa,krr,krr-simple] [--interval 60|300]
[--remeasure] [--containers N] [--recorded yes|no|only] [--runs 3] [--cadences scrape,step] [--no-krr-defaults]``.
Results: printed, and written to ``bench/out/rightsizing-results.json``; copied by hand to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT / "include"), str(BENCH)]

import rightsizing_data as data  # noqa: E402

CHOICE = data.OUT_DIR / "rightsizing-choice.json"
RESULTS = data.OUT_DIR / "rightsizing-results.json"
KRR_WORKERS = 6
KRR_PODS_PER_REGEX = 50


# ---- counting what crosses the wire ----------------------------------------------------------------------

class Wire:
    """Counts every HTTP answer of this process: bytes on the wire (compressed) and decoded, and requests."""

    lock = threading.Lock()
    wire = decoded = requests = 0

    @classmethod
    def install(cls) -> None:
        original = requests.Session.send

        def send(self: requests.Session, request: Any, **kwargs: Any) -> requests.Response:
            kwargs["stream"] = True  # read the raw (compressed) body ourselves to count it
            resp = original(self, request, **kwargs)
            raw = resp.raw.read(decode_content=False)
            encoding = resp.headers.get("Content-Encoding", "")
            body = gzip.decompress(raw) if encoding == "gzip" else zlib.decompress(raw) if encoding == "deflate" \
                else raw
            resp._content = body  # what requests would have decoded
            resp._content_consumed = True
            head = sum(len(k) + len(v) + 4 for k, v in resp.headers.items()) + 17
            with cls.lock:
                cls.wire += len(raw) + head
                cls.decoded += len(body)
                cls.requests += 1
            return resp

        requests.Session.send = send  # type: ignore[method-assign]


def _peak_rss_mib() -> float:
    """This process' own peak RSS: VmHWM (ru_maxrss would include the forking parent's RSS, kept across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_self() -> float:
    """This process' own CPU seconds (user + system): the client's share of the two cores."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---- the three methods (each runs in a child process) -------------------------------------------------------

def run_ours(url: str, meta: dict[str, Any]) -> dict[str, Any]:
    from traceo_finops.prometheus import SourceSpec
    from traceo_finops.rightsizing.collect import collect_batch, plan
    from traceo_finops.rightsizing.dataset import rows
    from traceo_finops.rightsizing.model import merge
    from traceo_finops.rightsizing.recommend import Policy, Prices

    spec = SourceSpec(name="bench", base_url=url, timeout=600)
    end = datetime.fromtimestamp(meta["end"], UTC)
    history = meta["end"] - meta["start"]
    t0 = time.monotonic()
    p = plan(spec, end, history, rate_window=300, max_points=11_000, max_samples_per_query=5_000_000)
    pieces = [collect_batch(spec, b, p.resolution, end, concurrency=2).as_dict() for b in p.batches]
    containers, workloads = merge(pieces)
    start = datetime.fromtimestamp(meta["start"], UTC)
    report, _ = rows("bench", "", containers, workloads, Policy(), Prices(0.0331, 0.0044), p.resolution, start, end)
    wall = time.monotonic() - t0
    stats = defaultdict(int)
    for piece in pieces:
        for k, v in piece["stats"].items():
            stats[k] += v
    return {"wall": wall, "batches": len(p.batches), "resolution": p.resolution.as_dict(), "rows": len(report),
            "stats": dict(stats), "p95": {(r["namespace"], pod, r["container"]): r["cpu_p95"] for r in report
                                          for pod in _pods(containers, r)},
            "memory_peak": {(r["namespace"], pod, r["container"]): r["memory_peak"] for r in report
                            for pod in _pods(containers, r)}}


def _pods(containers: list[Any], row: dict[str, Any]) -> list[str]:
    for c in containers:
        if (c.namespace, c.kind, c.name, c.container) == (row["namespace"], row["workload_kind"],
                                                           row["workload_name"], row["container"]):
            return c.pods if len(c.pods) == 1 else []  # single-pod workloads: comparable with the truth
    return []


class Histogram:
    """VPA-like: exponential buckets 5 % apart from ``first`` up to ``last``; weights 1 (no decay)."""

    def __init__(self, first: float, last: float) -> None:
        n = int(np.ceil(np.log(last / first) / np.log(1.05))) + 1
        self.edges = first * 1.05 ** np.arange(n)
        self.counts: dict[tuple[str, str, str], np.ndarray] = {}

    def add(self, key: tuple[str, str, str], values: np.ndarray) -> None:
        counts = self.counts.get(key)
        if counts is None:
            counts = self.counts[key] = np.zeros(len(self.edges) + 1)
        counts += np.bincount(np.searchsorted(self.edges, values), minlength=len(self.edges) + 1)

    def percentile(self, key: tuple[str, str, str], q: float) -> float:
        c = np.cumsum(self.counts[key])
        i = int(np.searchsorted(c, q * c[-1]))
        return float(self.edges[min(i, len(self.edges) - 1)])


def run_vpa(url: str, meta: dict[str, Any], rate_window: int) -> dict[str, Any]:
    session = requests.Session()
    interval = meta["interval"]
    cpu, mem = Histogram(0.001, 1000.0), Histogram(1e7, 1e12)
    peaks: dict[tuple[str, str, str], float] = {}
    t0 = time.monotonic()
    queries = 0
    for ns in meta["namespaces"]:
        sel = f'namespace="{ns}",container!="",container!="POD",pod!=""'
        for day_end in range(meta["start"] + 86400, meta["end"] + 1, 86400):
            for kind, promql in (("cpu", f"rate(container_cpu_usage_seconds_total{{{sel}}}[{rate_window}s])"
                                         f"[86400s:{interval}s]"),
                                 ("mem", f"container_memory_working_set_bytes{{{sel}}}[86400s]")):
                resp = session.get(f"{url}/api/v1/query", params={"query": promql, "time": day_end}, timeout=600)
                resp.raise_for_status()
                queries += 1
                for s in resp.json()["data"]["result"]:
                    m = s["metric"]
                    key = (m["namespace"], m["pod"], m["container"])
                    values = np.array([float(v) for _, v in s["values"]])
                    values = values[np.isfinite(values)]
                    if not len(values):
                        continue
                    if kind == "cpu":
                        cpu.add(key, values)
                    else:
                        mem.add(key, values)
                        peaks[key] = max(peaks.get(key, 0.0), float(values.max()))
    p95 = {k: cpu.percentile(k, 0.95) for k in cpu.counts}
    wall = time.monotonic() - t0
    return {"wall": wall, "queries": queries, "containers": len(p95), "p95": p95, "memory_peak": peaks}


def run_krr(url: str, meta: dict[str, Any], step: int, oom: bool = True) -> dict[str, Any]:
    session = requests.Session()
    end = meta["end"]
    duration = meta["end"] - meta["start"]
    # Discovery (KRR asks the Kubernetes API): objects = workload × container with their pods, from KSM.
    owners = session.get(f"{url}/api/v1/query", params={
        "query": f"max_over_time(kube_pod_owner[{duration}s])", "time": end}, timeout=600).json()["data"]["result"]
    rs = {(s["metric"]["namespace"], s["metric"]["replicaset"]): s["metric"]["owner_name"] for s in session.get(
        f"{url}/api/v1/query", params={"query": f"max_over_time(kube_replicaset_owner[{duration}s])", "time": end},
        timeout=600).json()["data"]["result"]}
    containers = session.get(f"{url}/api/v1/query", params={
        "query": f'count by (namespace, pod, container) (last_over_time(container_memory_working_set_bytes'
                 f'{{container!=""}}[{duration}s]))', "time": end}, timeout=600).json()["data"]["result"]
    workload_of = {}
    for s in owners:
        m = s["metric"]
        kind, name = m["owner_kind"], m["owner_name"]
        if kind == "ReplicaSet":
            name = rs.get((m["namespace"], name), name)
        workload_of[(m["namespace"], m["pod"])] = name
    objects: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for s in containers:
        m = s["metric"]
        workload = workload_of.get((m["namespace"], m["pod"]), m["pod"])
        objects[(m["namespace"], workload, m["container"])].append(m["pod"])
    Wire.wire = Wire.decoded = Wire.requests = 0  # discovery is not KRR's Prometheus load

    local = threading.local()
    d, s_ = f"{duration}s", f"{step}s"

    def query(promql: str) -> list[dict[str, Any]]:
        sess = getattr(local, "session", None) or requests.Session()
        local.session = sess
        for attempt in range(5):
            try:
                resp = sess.get(f"{url}/api/v1/query", params={"query": promql, "time": end}, timeout=600)
                resp.raise_for_status()
                return resp.json()["data"]["result"]
            except requests.RequestException:
                if attempt == 4:
                    raise
                time.sleep(1)
        return []

    def one(obj: tuple[str, str, str], pods: list[str]) -> dict[str, Any]:
        ns, _, container = obj
        out: dict[str, Any] = {"p95": {}, "memory_peak": {}}
        for i in range(0, len(pods), KRR_PODS_PER_REGEX):
            sel = f'namespace="{ns}",pod=~"{"|".join(pods[i:i + KRR_PODS_PER_REGEX])}",container="{container}"'
            by = "by (container, pod, job)"
            # krr's simple strategy: PercentileCPULoader, MaxMemoryLoader, CPUAmountLoader, MemoryAmountLoader
            # (robusta_krr/strategies/simple.py), and with ``oom`` its MaxOOMKilledMemoryLoader (the feature ours
            # has); the shapes of robusta_krr/core/integrations/prometheus/metrics/{cpu,memory}.py.
            cpu = query(f"quantile_over_time(0.95, max(rate(container_cpu_usage_seconds_total{{{sel}}}[{s_}])) "
                        f"{by}[{d}:{s_}])")
            mem = query(f"max_over_time(max(container_memory_working_set_bytes{{{sel}}}) {by}[{d}:{s_}])")
            query(f"count_over_time(max(container_cpu_usage_seconds_total{{{sel}}}) {by}[{d}:{s_}])")
            query(f"count_over_time(max(container_memory_working_set_bytes{{{sel}}}) {by}[{d}:{s_}])")
            if oom:
                query(f'max_over_time(max(max(kube_pod_container_resource_limits{{resource="memory",{sel}}}) '
                      f'by (pod, container, job) * on (pod, container, job) group_left(reason) '
                      f'max(kube_pod_container_status_last_terminated_reason{{reason="OOMKilled",{sel}}}) '
                      f'by (pod, container, job, reason)) {by}[{d}:{s_}])')
            for r in cpu:
                out["p95"][(ns, r["metric"]["pod"], container)] = float(r["value"][1])
            for r in mem:
                out["memory_peak"][(ns, r["metric"]["pod"], container)] = float(r["value"][1])
        return out

    t0 = time.monotonic()
    p95: dict[Any, float] = {}
    peaks: dict[Any, float] = {}
    with ThreadPoolExecutor(KRR_WORKERS) as pool:
        for res in pool.map(lambda item: one(*item), objects.items()):
            p95.update(res["p95"])
            peaks.update(res["memory_peak"])
    wall = time.monotonic() - t0
    return {"wall": wall, "objects": len(objects), "p95": p95, "memory_peak": peaks}


def worker(method: str, url: str, meta_path: str, out_path: str) -> None:
    Wire.install()
    meta = json.loads(Path(meta_path).read_text())
    res = meta["resolution"]
    if method == "ours":
        result = run_ours(url, meta)
    elif method == "vpa":
        result = run_vpa(url, meta, res["rate_window"])
    else:  # "krr" (with its OOM loader) or "krr-simple" (without), at our resolution or at "…:<step seconds>"
        base, _, step = method.partition(":")
        result = run_krr(url, meta, int(step) if step else res["step"], oom=base != "krr-simple")
    # Accuracy against the model's exact statistics (single-pod containers of the truth sample).
    truth = {tuple(t["key"]): t for t in meta["truth"]}
    ratios = [result["p95"][k] / t["cpu_p95"] for k, t in truth.items()
              if result["p95"].get(k) and t["cpu_p95"]]
    mem_ok = [abs(result["memory_peak"][k] / t["memory_max"] - 1) < 1e-6 for k, t in truth.items()
              if result["memory_peak"].get(k)]
    result.update(p95=None, memory_peak=None, wire_bytes=Wire.wire, json_bytes=Wire.decoded, requests=Wire.requests,
                  peak_rss_mib=round(_peak_rss_mib(), 1), client_cpu_seconds=round(_cpu_self(), 1),
                  accuracy={"containers_checked": len(ratios),
                            "cpu_p95_vs_truth_median": round(float(np.median(ratios)), 4) if ratios else None,
                            "cpu_p95_vs_truth_min_max": [round(min(ratios), 4), round(max(ratios), 4)] if ratios
                            else None,
                            "memory_peak_exact": f"{sum(mem_ok)}/{len(mem_ok)}"})
    Path(out_path).write_text(json.dumps({k: v for k, v in result.items() if v is not None}, default=str))


# ---- the orchestrating process -----------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _eval_seconds(log: Path, offset: int) -> tuple[float, int, int]:
    """Sum of evalTotalTime of the query-log lines after ``offset``; returns (seconds, queries, new offset)."""
    total, n = 0.0, 0
    with log.open("rb") as fh:
        fh.seek(offset)
        for line in fh:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            total += entry.get("stats", {}).get("timings", {}).get("evalTotalTime", 0.0)
            n += 1
        return total, n, fh.tell()


def start_prometheus(data_dir: Path, workdir: Path, rules: Path | None = None
                     ) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = _free_port()
    qlog = workdir / "query.log"
    qlog.unlink(missing_ok=True)
    cfg = workdir / "bench-prometheus.yml"
    rule_files = f"rule_files: [{rules}]\n" if rules else ""
    cfg.write_text(f"global:\n  scrape_interval: 1h\n  query_log_file: {qlog}\n{rule_files}")
    proc = subprocess.Popen([data.PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={data_dir}",
                             "--storage.tsdb.retention.time=3650d", "--query.timeout=10m",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=(workdir / "bench-prometheus.log").open("wb"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if requests.get(f"{url}/-/ready", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    else:
        proc.terminate()
        raise RuntimeError("bench Prometheus did not become ready")
    return proc, url, qlog


def compare(data_dir: Path, world_meta: dict[str, Any], interval: int, methods: list[str],
            rules: Path | None = None, tag: str = "") -> dict[str, Any]:
    """Start a Prometheus on a cached history (loading ``rules`` when given) and run each method in its own
    process, one after the other."""
    from traceo_finops.rightsizing.queries import choose_resolution

    world = data.build_world(interval, target=world_meta.get("target", data.TARGET_CONTAINERS))
    proc, url, qlog = start_prometheus(data_dir, data_dir.parent, rules)
    results: dict[str, Any] = {}
    try:
        res = choose_resolution(world_meta["end"] - world_meta["start"], 300, interval)
        truth = data.truth_at(world, res.rate_window)
        meta = {**{k: world_meta[k] for k in ("start", "end", "interval", "namespaces")}, "resolution": res.as_dict(),
                "truth": [{"key": list(k), **v} for k, v in truth.items()]}
        meta_path = data_dir.parent / "bench-meta.json"
        meta_path.write_text(json.dumps(meta))
        for method in methods:
            time.sleep(3)
            _, _, offset = _eval_seconds(qlog, 0) if qlog.exists() else (0, 0, 0)
            cpu0 = _cpu_seconds(proc.pid)
            out = data_dir.parent / f"bench-{method.replace(':', '-')}{tag}.json"
            print(f"running {method} on {data_dir.parent.name}{' with ' + rules.name if rules else ''}…", flush=True)
            t0 = time.monotonic()
            subprocess.run([sys.executable, __file__, "--worker", method, url, str(meta_path), str(out)], check=True)
            outer = time.monotonic() - t0
            time.sleep(1.5)  # the query log is written after the answer
            ev, n, _ = _eval_seconds(qlog, offset)
            r = json.loads(out.read_text())
            r.update(server_eval_seconds=round(ev, 2), server_queries_logged=n,
                     server_cpu_seconds=round(_cpu_seconds(proc.pid) - cpu0, 1), process_wall=round(outer, 1),
                     wall=round(r["wall"], 2), loadavg_after=[round(x, 2) for x in os.getloadavg()])
            results[method] = r
            print(json.dumps(r), flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
    return results


# ---- the recorded CPU rate (kube-prometheus' recording rule) ----------------------------------------------

RECORDED_GROUP = "k8s.rules.container_cpu_usage_seconds_total"
# How often the rule is evaluated: "scrape" — every scrape interval (kube-prometheus' default: the Prometheus
# Operator evaluates at its scrape interval); "step" — every sizing step, 4 scrape intervals (a quarter of the
# counter's samples, as a 1-minute rule group — Prometheus' and Mimir's ruler's default — over a 15 s scrape).
CADENCES = ("scrape", "step")
STEP_RULE_OFFSET = 437  # the "step" rule runs 437 s after each step (a live group has its own offset; not aligned)


def recorded_rule(rate_window: int, interval: int, cadence: str = "scrape") -> tuple[str, str]:
    """(rule name, rule file) of kube-prometheus' per-container CPU rate at the sizing's rate window.

    kube-prometheus' expression (kubernetes-mixin ``rules/apps.libsonnet``, without the ``kube_pod_info`` join of
    newer versions: the bench world has no ``kube_pod_info``), with the cAdvisor selector the bench's series carry
    (``job="kubelet"``; they have no ``image`` or ``metrics_path`` label) and the sizing's rate window: 5m at a
    60 s scrape (its own name and window), 20m at the bench's 5-minute scrape (4 × scrape, like every method
    here). Evaluated every scrape interval (``scrape``, kube-prometheus' own name) or every sizing step
    (``step``: the same expression as another group, under another name — both histories live in one TSDB and
    the rule is found by its expression)."""
    from datetime import timedelta

    from traceo_finops.recording_rules.normalize import duration

    window = duration(timedelta(seconds=rate_window))  # as Prometheus writes it: 20m
    expr = (f'sum by (cluster, namespace, pod, container) (rate(container_cpu_usage_seconds_total{{job="kubelet", '
            f'container!=""}}[{window}]))')
    if cadence == "scrape":
        name, group, every = (f"node_namespace_pod_container:container_cpu_usage_seconds_total:sum_rate{window}",
                              RECORDED_GROUP, interval)
    else:
        name, group, every = (f"namespace_pod_container:container_cpu_usage_seconds_total:sum_rate{window}",
                              f"{RECORDED_GROUP}.per-step", rate_window)
    text = (f"groups:\n  - name: {group}\n    interval: {every}s\n    rules:\n"
            f"      - record: {name}\n        expr: {json.dumps(expr)}\n")
    return name, text


def ensure_recorded(data_dir: Path, world_meta: dict[str, Any], rate_window: int, cadence: str = "scrape"
                    ) -> tuple[Path, dict[str, Any]]:
    """The rule file, and the rule's 14-day history in ``data_dir`` (built once, then cached).

    The history is what the rule manager would have written: ``promtool tsdb create-blocks-from rules`` evaluates
    the rule through the query API of a Prometheus on the raw history, every ``interval`` from the history's start
    (``scrape``) or from ``STEP_RULE_OFFSET`` after it (``step``), into blocks that are moved into the TSDB; a
    Prometheus start then compacts them with the raw blocks, as a live server would have."""
    root = data_dir.parent
    name, text = recorded_rule(rate_window, world_meta["interval"], cadence)
    suffix = "" if cadence == "scrape" else f"-{cadence}"
    rule_file = root / f"recorded-cpu-rate{suffix}.rules.yml"
    marker = root / f"recorded-cpu-rate{suffix}.json"
    if marker.exists() and json.loads(marker.read_text()).get("rules") == text and rule_file.exists():
        return rule_file, json.loads(marker.read_text())
    if marker.exists():
        raise SystemExit(f"{data_dir} holds another recorded rule's history ({marker}); remove {root} to rebuild")
    rule_file.write_text(text)
    out = root / "recorded-blocks"
    shutil.rmtree(out, ignore_errors=True)
    first = world_meta["start"] + (0 if cadence == "scrape" else STEP_RULE_OFFSET)
    proc, url, _ = start_prometheus(data_dir, root)
    try:
        t0 = time.monotonic()
        done = subprocess.run([data.PROMTOOL, "tsdb", "create-blocks-from", "rules", "--quiet", f"--url={url}",
                               f"--start={first}", f"--end={world_meta['end'] + world_meta['interval']}",
                               f"--output-dir={out}", str(rule_file)], capture_output=True, text=True)
        backfill = time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait(60)
    if done.returncode != 0:
        raise RuntimeError(f"promtool create-blocks-from rules failed: {done.stderr[-2000:]}")
    blocks = [b for b in out.iterdir() if b.is_dir() and len(b.name) == 26]
    for b in blocks:
        shutil.move(str(b), data_dir / b.name)
    shutil.rmtree(out, ignore_errors=True)
    t1 = time.monotonic()
    data.compact(data_dir)
    info = {"rule": name, "cadence": cadence, "rules": text, "blocks": len(blocks),
            "backfill_seconds": round(backfill, 1), "compact_seconds": round(time.monotonic() - t1, 1)}
    marker.write_text(json.dumps(info, indent=1) + "\n")
    print(f"recorded rule {name} ({cadence}): {len(blocks)} blocks backfilled in {backfill:.0f} s, compacted in "
          f"{info['compact_seconds']:.0f} s", flush=True)
    return rule_file, info


def recorded_runs(data_dir: Path, world_meta: dict[str, Any], interval: int, runs: int,
                  cadences: tuple[str, ...] = CADENCES) -> dict[str, Any]:
    """``runs`` times: ours on a Prometheus without the rule (``rate()``); ours on one that loads the rule of each
    cadence but the last (ours finds it in the rules API and reads the CPU percentiles from the recorded series);
    then ours, (b) and (b′) on one that loads the last cadence's rule. Same TSDB; (b) and (b′) read no rule."""
    from traceo_finops.rightsizing.queries import choose_resolution

    res = choose_resolution(world_meta["end"] - world_meta["start"], 300, interval)
    rules = {c: ensure_recorded(data_dir, world_meta, res.rate_window, c) for c in cadences}
    out: dict[str, Any] = {"rules": {c: {k: v for k, v in info.items() if k != "rules"}
                                     for c, (_, info) in rules.items()}, "runs": []}
    for run in range(1, runs + 1):
        load = [round(x, 2) for x in os.getloadavg()]
        r: dict[str, Any] = {"run": run, "loadavg_at_start": load,
                             "ours_rate": compare(data_dir, world_meta, interval, ["ours"], tag="-rate")["ours"]}
        for c in cadences:
            last = c == cadences[-1]
            got = compare(data_dir, world_meta, interval, ["ours", "krr", "krr-simple"] if last else ["ours"],
                          rules[c][0], tag=f"-rule-{c}")
            r[f"ours_rule_{c}"] = got["ours"]
            if last:
                r["krr"], r["krr-simple"] = got["krr"], got["krr-simple"]
        b, b1 = r["krr"], r["krr-simple"]
        line = [f"recorded run {run}: ours with rate() {r['ours_rate']['wall']:.2f} s, (b) {b['wall']:.2f} s, "
                f"(b′) {b1['wall']:.2f} s"]
        for c in cadences:
            o = r[f"ours_rule_{c}"]
            r[f"krr_wall/ours_rule_{c}_wall"] = round(b["wall"] / o["wall"], 2)
            r[f"krr_simple_wall/ours_rule_{c}_wall"] = round(b1["wall"] / o["wall"], 2)
            r[f"ours_rate_wall/ours_rule_{c}_wall"] = round(r["ours_rate"]["wall"] / o["wall"], 2)
            line.append(f"ours with the {c} rule {o['wall']:.2f} s ({o['resolution'].get('cpu_rate_source')}): "
                        f"{r[f'krr_wall/ours_rule_{c}_wall']}× vs (b), {r[f'krr_simple_wall/ours_rule_{c}_wall']}× "
                        "vs (b′)")
        out["runs"].append(r)
        print("; ".join(line), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="ours,vpa,krr,krr-simple")
    ap.add_argument("--interval", type=int, choices=(60, 300))
    ap.add_argument("--remeasure", action="store_true")
    ap.add_argument("--no-krr-defaults", dest="krr_defaults", action="store_false",
                    help="skip KRR at its own defaults on a 60 s history of 1,000 containers")
    ap.add_argument("--containers", type=int, default=data.TARGET_CONTAINERS,
                    help="containers running at the end of the history (default 10,000)")
    ap.add_argument("--recorded", choices=("yes", "no", "only"), default="yes",
                    help="also run with kube-prometheus' recorded CPU rate loaded (only: nothing else)")
    ap.add_argument("--runs", type=int, default=3, help="runs of the recorded comparison")
    ap.add_argument("--cadences", default=",".join(CADENCES),
                    help="the recorded rule's evaluation cadences to run: scrape (every scrape), step (every step)")
    ap.add_argument("--worker", nargs=4, metavar=("METHOD", "URL", "META", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0

    data.OUT_DIR.mkdir(parents=True, exist_ok=True)
    if args.interval:
        choice = {"interval": args.interval, "reason": "--interval"}
    elif CHOICE.exists() and not args.remeasure:
        choice = json.loads(CHOICE.read_text())
    else:
        print("measuring a slice of the 60 s build…", flush=True)
        m = data.measure()
        choice = {"interval": data.choose_interval(m), "measurement": m,
                  "reason": f"60 s predicted {m['predicted_seconds_60s'] / 60:.0f} min "
                            f"(budget {data.BUILD_BUDGET_SECONDS / 60:.0f} min)"}
        CHOICE.write_text(json.dumps(choice, indent=1) + "\n")
    interval = choice["interval"]
    print(f"scrape interval {interval} s ({choice.get('reason')})", flush=True)
    load = os.getloadavg()
    data_dir, world_meta = data.ensure_tsdb(interval, target=args.containers)
    results = compare(data_dir, world_meta, interval, args.methods.split(",")) if args.recorded != "only" else {}
    summary: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "loadavg_at_start": [round(x, 2) for x in load],
                 "prometheus": "2.42 (Debian)"},
        "data": {"interval": interval, "choice": choice, **{k: world_meta[k] for k in (
            "containers_running_at_end", "container_series", "pods", "workloads", "days", "build")}},
        "results": results,
    }
    if {"ours", "vpa", "krr"} <= set(results):
        o, a, b = results["ours"], results["vpa"], results["krr"]
        summary["goals"] = {
            "ours_peak_rss_mib<=1024": o["peak_rss_mib"] <= 1024,
            "krr_wall/ours_wall>=3": round(b["wall"] / o["wall"], 2),
            "vpa_bytes/ours_bytes>=10": round(a["wire_bytes"] / o["wire_bytes"], 1),
            "ours_wall/ours_server_eval<=1.5": round(o["wall"] / o["server_eval_seconds"], 2),
        }
        if "krr-simple" in results:
            summary["goals"]["krr_simple_wall/ours_wall"] = round(results["krr-simple"]["wall"] / o["wall"], 2)
    if args.recorded != "no":
        summary["recorded"] = recorded_runs(data_dir, world_meta, interval, args.runs,
                                            tuple(args.cadences.split(",")))
    if args.krr_defaults and args.recorded != "only":
        # KRR's default step (1.25 min, also its rate window) finds nothing on a 5-minute scrape: compare at its
        # defaults on a 60 s history of a tenth of the cluster (cheap enough to build here).
        small_dir, small_meta = data.ensure_tsdb(60, target=data.TARGET_CONTAINERS // 10)
        small = compare(small_dir, small_meta, 60, ["ours", "krr:75", "krr-simple:75"])
        summary["krr_defaults_60s"] = {
            "data": {k: small_meta[k] for k in ("interval", "containers_running_at_end", "container_series", "pods",
                                                 "workloads", "days", "build")},
            "results": small, "krr_wall/ours_wall": round(small["krr:75"]["wall"] / small["ours"]["wall"], 2),
            "krr_simple_wall/ours_wall": round(small["krr-simple:75"]["wall"] / small["ours"]["wall"], 2)}
    results_path = RESULTS if args.containers == data.TARGET_CONTAINERS and args.recorded != "only" else \
        data.OUT_DIR / f"rightsizing-results-{args.containers}c{'-recorded' if args.recorded == 'only' else ''}.json"
    results_path.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({"goals": summary.get("goals"),
                      "krr_defaults_60s": (summary.get("krr_defaults_60s") or {}).get("krr_wall/ours_wall")}, indent=1))
    print(f"written {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
