"""Cardinality audit at scale: a real Prometheus 2.42 with 1,000,000 active head series.

Run: ``.venv/bin/python bench/bench_cardinality.py`` (``make bench`` runs it). Takes a few minutes.

What it does, all under ``bench/out/cardinality/`` (gitignored) and on its own ports:

1. starts a purpose-built exporter (this file, ``exporter`` sub-command) serving 20 targets of exactly
   50,000 series each: 4 jobs x 5 instances, ~75 metrics per job with realistic label shapes (request
   counters by route/method/code, histograms with ``le``, per-tenant and per-queue gauges, a per-instance
   session id and a shared user-id pool as the high-cardinality labels). The exporter writes the exact
   expected series per metric and distinct values per metric and label (``truth.json``);
2. starts Prometheus (``--web.enable-admin-api``) scraping them every 60 s until the head holds the
   1,000,000 series (plus 5 synthetic ``up``/``scrape_*`` series per target);
3. times our audit (``collect_cardinality`` + ``audit_source``) in a child process: wall time, peak RSS
   (``ru_maxrss`` of that child from ``os.wait4``), series/s, queries, and Prometheus' own CPU seconds
   and RSS while it ran; then checks every count against ``truth.json``;
4. side by side in the same run: snapshots the TSDB (``POST /api/v1/admin/tsdb/snapshot``) and times
   ``promtool tsdb analyze`` on the snapshot (wall, peak RSS);
5. prints a Markdown table for ``docs/benchmarks.md`` and stops what it started.

Options: ``--keep`` leaves Prometheus and the exporter running (``--reuse`` attaches to them later).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

OUT = ROOT / "bench" / "out" / "cardinality"
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
PROM_PORT = 19390
EXPORTER_PORT = 19391
JOBS = ("api", "worker", "edge", "billing")
INSTANCES_PER_JOB = 5
SERIES_PER_TARGET = 50_000
SCRAPE_INTERVAL_S = 60
GOAL_WALL_S = 60.0
GOAL_RSS_MB = 1024.0

# ---------------------------------------------------------------- the series (exporter side)

METHODS = ("GET", "POST", "PUT", "DELETE")
CODES = ("200", "201", "400", "404", "500", "503")
LE = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf")
QUANTILES = ("0.5", "0.9", "0.99", "0.999")
MODES = ("user", "system", "idle", "iowait", "irq", "softirq", "steal", "nice")
USER_POOL = 20_000  # user ids per job; each instance sees 8,000 of them (overlapping)
USERS_PER_INSTANCE = 8_000
SESSIONS_PER_INSTANCE = 2_500  # session ids are unique per instance


@dataclass(frozen=True)
class Target:
    job: str
    index: int  # 0..INSTANCES_PER_JOB-1

    @property
    def instance(self) -> str:
        return f"10.{JOBS.index(self.job)}.0.{self.index + 10}:9100"

    @property
    def path(self) -> str:
        return f"/metrics/{self.job}/{self.index}"


def targets() -> list[Target]:
    return [Target(job, i) for job in JOBS for i in range(INSTANCES_PER_JOB)]


def _series(t: Target) -> Iterator[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every (metric, labels) of one target, deterministic; exactly SERIES_PER_TARGET of them."""
    j = t.job
    routes = [f"/{j}/v1/resource{r}" for r in range(20)]
    n = 0

    def emit(metric: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        nonlocal n
        n += 1
        return metric, tuple(sorted(labels.items()))

    for route in routes:
        for method in METHODS:
            for code in CODES:
                yield emit(f"{j}_http_requests_total", route=route, method=method, code=code)
            for le in LE:
                yield emit(f"{j}_http_request_duration_seconds_bucket", route=route, method=method, le=le)
            yield emit(f"{j}_http_request_duration_seconds_sum", route=route, method=method)
            yield emit(f"{j}_http_request_duration_seconds_count", route=route, method=method)
            for q in QUANTILES:
                yield emit(f"{j}_http_response_size_bytes", route=route, method=method, quantile=q)
    for cpu in range(8):
        for mode in MODES:
            yield emit(f"{j}_cpu_seconds_total", cpu=str(cpu), mode=mode)
    for tenant in range(50):
        for code in CODES:
            yield emit(f"{j}_tenant_requests_total", tenant=f"tenant-{tenant:02d}", code=code)
    for queue in range(10):
        for shard in range(16):
            yield emit(f"{j}_queue_depth", queue=f"q{queue}", shard=str(shard))
    for k in range(50):  # many small metrics, as every service has
        for kind in ("a", "b", "c"):
            yield emit(f"{j}_subsystem_{k:02d}_events_total", kind=kind)
    for s in range(SESSIONS_PER_INSTANCE):  # high cardinality: unique per instance
        yield emit(f"{j}_session_bytes", session_id=f"{t.index:02d}-{s:05d}")
    first = t.index * (USER_POOL - USERS_PER_INSTANCE) // max(1, INSTANCES_PER_JOB - 1)
    for u in range(USERS_PER_INSTANCE):  # high cardinality: overlapping windows of a shared pool
        for code in ("200", "500"):
            yield emit(f"{j}_user_requests_total", user_id=f"u{first + u:06d}", code=code)
    # Filler histogram: rpc x le until the target has exactly SERIES_PER_TARGET series.
    left = SERIES_PER_TARGET - n
    if left < 0:
        raise AssertionError(f"catalog has {n} series per target, more than {SERIES_PER_TARGET}")
    for i in range(left):
        yield emit(f"{j}_rpc_duration_seconds_bucket", rpc=f"Service{j}/Method{i // len(LE):04d}", le=LE[i % len(LE)])


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(t: Target) -> bytes:
    lines = []
    for i, (metric, labels) in enumerate(_series(t)):
        body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
        lines.append(f"{metric}{{{body}}} {i % 977}\n")
    return "".join(lines).encode()


def truth() -> dict[str, Any]:
    """Series per metric and distinct values per metric and label (job and instance included)."""
    series: dict[str, int] = {}
    values: dict[str, dict[str, set[str]]] = {}
    for t in targets():
        for metric, labels in _series(t):
            series[metric] = series.get(metric, 0) + 1
            per = values.setdefault(metric, {})
            per.setdefault("job", set()).add(t.job)
            per.setdefault("instance", set()).add(t.instance)
            for k, v in labels:
                per.setdefault(k, set()).add(v)
    return {"series_total": sum(series.values()), "series_by_metric": series,
            "labels_by_metric": {m: {k: len(v) for k, v in sorted(per.items())} for m, per in values.items()}}


def serve(port: int, truth_path: Path) -> None:
    """The exporter process: pre-rendered bodies, one path per target."""
    bodies = {t.path: exposition(t) for t in targets()}
    truth_path.write_text(json.dumps(truth()))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = bodies.get(self.path.split("?")[0])
            if self.path == "/healthz":
                body = b"ok\n"
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.daemon_threads = True
    print(f"exporter: {len(bodies)} targets on :{port}", flush=True)
    httpd.serve_forever()


# ---------------------------------------------------------------- Prometheus (driver side)


def prometheus_config(exporter_port: int) -> str:
    """One scrape job per ``JOBS`` entry; its 5 targets differ by ``__metrics_path__`` and ``instance``."""
    lines = ["global:", f"  scrape_interval: {SCRAPE_INTERVAL_S}s", f"  scrape_timeout: {SCRAPE_INTERVAL_S - 10}s",
             "scrape_configs:"]
    for job in JOBS:
        lines += [f"  - job_name: {job}", "    static_configs:"]
        for t in targets():
            if t.job == job:
                lines += [f'      - targets: ["127.0.0.1:{exporter_port}"]',
                          f'        labels: {{__metrics_path__: "{t.path}", instance: "{t.instance}"}}']
    return "\n".join(lines) + "\n"


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers do not count
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _get_json(url: str, method: str = "GET", timeout: float = 120) -> Any:
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return 200 <= resp.status < 300


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (Prometheus: its whole CPU use, scraping included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _memory_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _measured(argv: list[str]) -> dict[str, Any]:
    """Run ``argv`` to completion: wall seconds, its own peak RSS (``os.wait4``), exit code and output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime,
                "code": proc.returncode, "stdout": out.read().decode(), "stderr": err.read().decode()}


class Stack:
    """The bench Prometheus and exporter: started here (or reused), stopped by pid at the end."""

    def __init__(self, out: Path, reuse: bool) -> None:
        self.out, self.reuse = out, reuse
        self.url = f"http://127.0.0.1:{PROM_PORT}"
        self.truth_path = out / "truth.json"
        self.pids: dict[str, int] = {}
        self.build_s = 0.0

    def _pid(self, name: str) -> int | None:
        try:
            pid = int((self.out / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def start(self) -> None:
        prom, exporter = self._pid("prometheus"), self._pid("exporter")
        if self.reuse and prom and exporter:
            self.pids = {"prometheus": prom, "exporter": exporter}
            print(f"reusing Prometheus pid {prom} and exporter pid {exporter}", flush=True)
            return
        for port in (PROM_PORT, EXPORTER_PORT):
            if not _free(port):
                raise SystemExit(f"port 127.0.0.1:{port} is taken: stop what runs there (or --reuse)")
        shutil.rmtree(self.out / "data", ignore_errors=True)
        self.out.mkdir(parents=True, exist_ok=True)
        self.truth_path.unlink(missing_ok=True)
        (self.out / "prometheus.yml").write_text(prometheus_config(EXPORTER_PORT))
        self.pids["exporter"] = self._spawn("exporter", [sys.executable, __file__, "exporter", "--port",
                                                         str(EXPORTER_PORT), "--truth", str(self.truth_path)])
        self._wait(lambda: self.truth_path.exists() and _http_ok(f"http://127.0.0.1:{EXPORTER_PORT}/healthz"),
                   120, "exporter")
        started = time.monotonic()
        self.pids["prometheus"] = self._spawn("prometheus", [
            PROMETHEUS, f"--config.file={self.out / 'prometheus.yml'}", f"--storage.tsdb.path={self.out / 'data'}",
            f"--web.listen-address=127.0.0.1:{PROM_PORT}", "--web.enable-admin-api",
            "--scrape.discovery-reload-interval=1s"])
        want = SERIES_PER_TARGET * len(targets()) + 5 * len(targets())  # + up/scrape_* per target
        self._wait(lambda: self.head_series() >= want, 600, f"{want:,} head series")
        self.build_s = time.monotonic() - started
        print(f"Prometheus holds {self.head_series():,} head series after {self.build_s:.0f} s", flush=True)

    def _spawn(self, name: str, argv: list[str]) -> int:
        log = open(self.out / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=self.out, start_new_session=True)
        (self.out / f"{name}.pid").write_text(str(proc.pid))
        return proc.pid

    def _wait(self, probe: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if probe():
                    return
            except (OSError, ValueError):
                pass
            time.sleep(1)
        raise SystemExit(f"timed out waiting for {what}; see {self.out}/*.log")

    def head_series(self) -> int:
        return int(_get_json(f"{self.url}/api/v1/status/tsdb")["data"]["headStats"]["numSeries"])

    def stop(self) -> None:
        for name in ("prometheus", "exporter"):
            pid = self.pids.get(name)
            if pid and _alive(pid):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 60
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.2)
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
            (self.out / f"{name}.pid").unlink(missing_ok=True)


# ---------------------------------------------------------------- the measured audit (child process)


def run_audit(url: str, workers: int, snapshot_path: Path, labels: bool = True) -> dict[str, Any]:
    """What the DAG does for one source: collection + config audit. Runs in a child.

    ``labels=False`` counts series per metric only (the chunked PromQL part, for the breakdown).
    """
    from datetime import UTC, datetime

    from traceo_finops.cardinality.collect import collect_series_by_metric
    from traceo_finops.cardinality.config_audit import AuditPrices, audit_source
    from traceo_finops.pricing import load_price_table
    from traceo_finops.prometheus import PrometheusClient, SourceSpec

    started = time.monotonic()
    at = datetime.now(tz=UTC)
    prices = AuditPrices.from_table(load_price_table())
    with PrometheusClient(SourceSpec(name="bench", base_url=url, timeout=300)) as client:
        snap = collect_series_by_metric(client, "bench", at, workers=workers, labels=labels)
        collected = time.monotonic() - started
        findings = audit_source(client, "bench", at, prices, head_series=snap.head_series) if labels else []
    wall = time.monotonic() - started
    snapshot_path.write_text(json.dumps(snap.as_dict()))
    return {"wall_s": wall, "collect_s": collected, "audit_s": wall - collected, "queries": snap.queries,
            "metrics": len(snap.metrics), "series": snap.series_total, "head_series": snap.head_series,
            "findings": [f"{f.check_id}:{f.subject}" for f in findings],
            "vm_hwm_mb": _memory_mb(os.getpid())["VmHWM"]}


def verify(snapshot_path: Path, truth_path: Path) -> list[str]:
    """Differences between what the audit collected and what the exporter serves (empty = exact)."""
    snap = json.loads(snapshot_path.read_text())
    truth_data = json.loads(truth_path.read_text())
    got = {m["metric"]: m for m in snap["metrics"]}
    problems = []
    for metric, n in truth_data["series_by_metric"].items():
        m = got.get(metric)
        if m is None or m["series"] != n:
            problems.append(f"{metric}: series {m and m['series']} != {n}")
        elif m["labels"] != truth_data["labels_by_metric"][metric]:
            problems.append(f"{metric}: labels {m['labels']} != {truth_data['labels_by_metric'][metric]}")
    synthetic = {k: v for k, v in got.items() if k not in truth_data["series_by_metric"]}
    if sorted(synthetic) != sorted(["up", "scrape_duration_seconds", "scrape_samples_scraped",
                                    "scrape_samples_post_metric_relabeling", "scrape_series_added"]):
        problems.append(f"unexpected metrics {sorted(synthetic)}")
    if sum(m["series"] for m in snap["metrics"]) != truth_data["series_total"] + 5 * len(targets()):
        problems.append("total series differ")
    return problems


# ---------------------------------------------------------------- the driver


def _promql_seconds(url: str, query: str) -> float:
    started = time.monotonic()
    _get_json(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": query}), timeout=600)
    return time.monotonic() - started


def bench(args: argparse.Namespace) -> int:
    for binary in (PROMETHEUS, PROMTOOL):
        if not Path(binary).exists():
            raise SystemExit(f"{binary} not found: `make prometheus` installs Debian's prometheus package")
    OUT.mkdir(parents=True, exist_ok=True)
    stack = Stack(OUT, args.reuse)
    results: dict[str, Any] = {"runs": [], "conditions": {}}
    try:
        stack.start()
        prom = stack.pids["prometheus"]
        results["build_s"] = round(stack.build_s, 1)
        results["prometheus_after_ingest_mb"] = _memory_mb(prom)
        for i in range(args.runs):
            load = os.getloadavg()[0]
            cpu0 = _cpu_seconds(prom)
            snap_path = OUT / "snapshot.json"
            run = _measured([sys.executable, __file__, "audit", "--url", stack.url, "--workers", str(args.workers),
                             "--snapshot", str(snap_path)])
            if run["code"] != 0:
                raise SystemExit(f"audit run failed:\n{run['stderr'][-3000:]}")
            inner = json.loads(run["stdout"].strip().splitlines()[-1])
            problems = verify(snap_path, stack.truth_path)
            row = {"run": i + 1, "wall_s": round(run["wall_s"], 2), "peak_rss_mb": round(run["peak_rss_mb"], 1),
                   "cpu_s": round(run["cpu_s"], 2), "prometheus_cpu_s": round(_cpu_seconds(prom) - cpu0, 2),
                   "prometheus_mb": _memory_mb(prom), "load_1m_before": round(load, 2),
                   "exact": not problems, **{k: inner[k] for k in ("collect_s", "audit_s", "queries", "metrics",
                                                                   "series", "head_series", "findings")}}
            row["series_per_s"] = round(row["series"] / run["wall_s"])
            results["runs"].append(row)
            print(json.dumps(row), flush=True)
            if problems:
                print("MISMATCH:\n  " + "\n  ".join(problems[:20]), flush=True)
        # Breakdown: the chunked counts alone (no labels, no config audit).
        counts = _measured([sys.executable, __file__, "audit", "--url", stack.url, "--workers", str(args.workers),
                            "--snapshot", str(OUT / "counts.json"), "--counts-only"])
        inner = json.loads(counts["stdout"].strip().splitlines()[-1])
        results["counts_only"] = {"wall_s": round(counts["wall_s"], 2), "peak_rss_mb": round(counts["peak_rss_mb"], 1),
                                  "queries": inner["queries"], "series": inner["series"]}
        # References, after our runs (they grow Prometheus' heap): the one-query plans we did not take.
        cpu0 = _cpu_seconds(prom)
        results["reference_count_all_s"] = round(
            _promql_seconds(stack.url, 'count by (__name__) ({__name__=~".+"})'), 2)
        results["reference_promql_distinct_instance_s"] = round(_promql_seconds(
            stack.url, 'count by (__name__) (count by (__name__, instance) ({__name__=~".+", instance!=""}))'), 2)
        results["reference_prometheus_cpu_s"] = round(_cpu_seconds(prom) - cpu0, 2)
        results["prometheus_after_references_mb"] = _memory_mb(prom)
        # promtool tsdb analyze on the same data: snapshot the TSDB (head included), then analyze it.
        cpu0, started = _cpu_seconds(prom), time.monotonic()
        name = _get_json(f"{stack.url}/api/v1/admin/tsdb/snapshot", method="POST", timeout=600)["data"]["name"]
        results["snapshot_s"] = round(time.monotonic() - started, 2)
        results["snapshot_prometheus_cpu_s"] = round(_cpu_seconds(prom) - cpu0, 2)
        snap_dir = OUT / "data" / "snapshots" / name
        analyze = _measured([PROMTOOL, "tsdb", "analyze", str(snap_dir)])
        if analyze["code"] != 0:
            raise SystemExit(f"promtool failed:\n{analyze['stderr'][-3000:]}")
        total = next((line for line in analyze["stdout"].splitlines() if line.startswith("Series:")), "")
        results["promtool"] = {"wall_s": round(analyze["wall_s"], 2), "peak_rss_mb": round(analyze["peak_rss_mb"], 1),
                               "cpu_s": round(analyze["cpu_s"], 2), "total_series_line": total.strip()}
        shutil.rmtree(snap_dir, ignore_errors=True)
        results["conditions"] = {"cpus": os.cpu_count(), "load_1m_end": round(os.getloadavg()[0], 2),
                                 "prometheus": subprocess.run([PROMETHEUS, "--version"], capture_output=True,
                                                              text=True).stdout.splitlines()[0],
                                 "scrape_interval_s": SCRAPE_INTERVAL_S, "workers": args.workers}
    finally:
        if not args.keep:
            stack.stop()
            shutil.rmtree(OUT / "data", ignore_errors=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(report(results))
    runs = results["runs"]
    ok = all(r["exact"] and r["wall_s"] <= GOAL_WALL_S and r["peak_rss_mb"] <= GOAL_RSS_MB for r in runs)
    return 0 if ok else 1


def report(results: dict[str, Any]) -> str:
    runs = results["runs"]
    walls = sorted(r["wall_s"] for r in runs)
    median = walls[len(walls) // 2]
    pt = results["promtool"]
    lines = ["| run | wall s | peak RSS MB | series/s | requests | Prometheus CPU s | load before | exact |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['run']} | {r['wall_s']} | {r['peak_rss_mb']} | {r['series_per_s']:,} | {r['queries']} | "
                     f"{r['prometheus_cpu_s']} | {r['load_1m_before']} | {'yes' if r['exact'] else 'NO'} |")
    lines += ["", f"median wall {median} s (goal <= {GOAL_WALL_S:g} s), max peak RSS "
              f"{max(r['peak_rss_mb'] for r in runs)} MB (goal <= {GOAL_RSS_MB:g} MB)",
              f"promtool tsdb analyze on a snapshot: {pt['wall_s']} s wall, {pt['peak_rss_mb']} MB peak RSS "
              f"(+ snapshot {results['snapshot_s']} s); ours/promtool wall ratio {median / pt['wall_s']:.2f} "
              f"({pt['total_series_line']})",
              f"counts only (chunked, {results['counts_only']['queries']} requests): "
              f"{results['counts_only']['wall_s']} s wall; "
              f"references: one unchunked count by (__name__) {results['reference_count_all_s']} s; PromQL distinct "
              f"`instance` per metric over all series {results['reference_promql_distinct_instance_s']} s",
              f"Prometheus RSS after ingest {results['prometheus_after_ingest_mb']}, after the references "
              f"{results['prometheus_after_references_mb']}; build {results['build_s']} s; {results['conditions']}"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd")
    ex = sub.add_parser("exporter")
    ex.add_argument("--port", type=int, default=EXPORTER_PORT)
    ex.add_argument("--truth", type=Path, default=OUT / "truth.json")
    au = sub.add_parser("audit")
    au.add_argument("--url", required=True)
    au.add_argument("--workers", type=int, default=2)
    au.add_argument("--snapshot", type=Path, required=True)
    au.add_argument("--counts-only", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="leave Prometheus and the exporter running")
    parser.add_argument("--reuse", action="store_true", help="attach to a kept Prometheus and exporter")
    args = parser.parse_args()
    if args.cmd == "exporter":
        serve(args.port, args.truth)
        return 0
    if args.cmd == "audit":
        print(json.dumps(run_audit(args.url, args.workers, args.snapshot, labels=not args.counts_only)))
        return 0
    return bench(args)


if __name__ == "__main__":
    raise SystemExit(main())
