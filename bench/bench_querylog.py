"""Recording-rule mining at scale: 1,000,000 Prometheus query-log lines read, normalized and grouped.

    .venv/bin/python bench/bench_querylog.py [--lines 1000000] [--runs 3] [--regenerate]

1. Generates (once; cached under ``bench/out/querylog/``) a query log as Prometheus 2.x/3.x writes it with
   ``query_log_file``: compact JSON lines with ``params`` (query, start, end, step), ``stats.timings``
   (``evalTotalTime`` …; half the lines also ``stats.samples``, as 3.x writes with per-query stats),
   ``ts`` in RFC 3339 with nanoseconds, and either ``httpRequest`` (an API query) or ``ruleGroup`` (a rule
   evaluation). What it holds, over 26 hours (the window is the middle 24):

   - ~84 % dashboard refreshes: 40 Grafana panels viewed by 600 sessions; each session spells its panels its
     own way — the rate window (``$__rate_interval`` expanded as ``1m``, ``60s``, ``2m``, ``4m``, ``5m``…),
     variable values (namespace, job, instance, route, φ), matcher order, ``by`` label order and place,
     whitespace and line breaks — and changes its time range (so its window) now and then;
   - 10 % rule-group evaluations (30 rules, ``ruleGroup``: not user queries);
   - ~5 % a long tail of ad-hoc (Explore) queries, nearly all distinct;
   - ~1 % outside the window (before, after, a clock in the future), ~0.3 % bad lines (truncated, not JSON,
     not UTF-8, no ``params.query``), unparsable PromQL and a few enormous queries.

2. Runs, each in its own fresh interpreter (peak RSS is the kernel's ``os.wait4`` rusage of that child; the
   driver imports nothing heavy), several times: (a) **the floor** — read the file (``open_log``) and
   ``json.loads`` every line, nothing else; (b) **ours** — the recording-rule workflow's own path up to the
   server: ``collect.read_query_logs`` (window, origins, per-text statistics), ``recommend.group_queries``
   (parse and normalize each distinct text, group by key, rank by cost) and the ``sites`` filter on each
   group's representative, as ``workflow.mine_source`` does before it asks the server anything.

3. Prints per run wall time, peak RSS, lines/s, groups and the ratio ours/floor; checks the 40 panels came out
   as 40 groups (every spelling folded) and fails if ours breaks 60 s or 1 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "querylog"
LOG = OUT / "query.log"
LIMIT_S, LIMIT_BYTES = 60.0, 10**9
GENERATOR_VERSION = 2  # part of the cache key: bump when generate() changes
START = "2026-05-01T00:00:00+00:00"  # the run's window: [START, START + 1 day); the log runs from 1 h before
HOT_COUNT = 100  # a panel's group gets thousands of executions; a tail group a handful

# ---- the dashboards ---------------------------------------------------------------------------------------
# A panel: its PromQL with slots — {w} the rate window, {q} a φ, {by:a,b} a grouping (label order and place vary
# per session), {s:metric|label=$var,label2="fixed"} a selector (matcher order varies, $var is a dashboard
# variable). Written as a Grafana user would.
PANELS = [
    "sum {by:namespace,route} (rate({s:http_requests_total|namespace=$ns,job=$job}[{w}]))",
    'sum {by:code} (rate({s:http_requests_total|namespace=$ns,job=$job,code=~"5.."}[{w}]))',
    "histogram_quantile({q}, sum {by:le,route} (rate({s:http_request_duration_seconds_bucket|namespace=$ns,"
    "job=$job}[{w}])))",
    "histogram_quantile({q}, sum {by:le} (rate({s:http_request_duration_seconds_bucket|namespace=$ns}[{w}])))",
    'sum(rate({s:http_requests_total|namespace=$ns,code=~"5.."}[{w}])) / sum(rate({s:http_requests_total|'
    "namespace=$ns}[{w}]))",
    "sum {by:pod} (rate({s:container_cpu_usage_seconds_total|namespace=$ns,container!=\"\"}[{w}]))",
    "sum {by:pod} ({s:container_memory_working_set_bytes|namespace=$ns,container!=\"\"})",
    "sum {by:namespace} (rate({s:container_cpu_usage_seconds_total|container!=\"\"}[{w}]))",
    "sum {by:pod,interface} (rate({s:container_network_receive_bytes_total|namespace=$ns}[{w}]))",
    "sum {by:pod,interface} (rate({s:container_network_transmit_bytes_total|namespace=$ns}[{w}]))",
    "sum {by:instance} (rate({s:node_cpu_seconds_total|mode!=\"idle\",instance=~$instance}[{w}]))",
    "1 - avg {by:instance} (rate({s:node_cpu_seconds_total|mode=\"idle\",instance=~$instance}[{w}]))",
    "{s:node_memory_MemAvailable_bytes|instance=~$instance} / {s:node_memory_MemTotal_bytes|instance=~$instance}",
    "sum {by:instance,device} (rate({s:node_disk_read_bytes_total|instance=~$instance}[{w}]))",
    "sum {by:instance,device} (rate({s:node_disk_written_bytes_total|instance=~$instance}[{w}]))",
    "max {by:instance,mountpoint} (1 - {s:node_filesystem_avail_bytes|instance=~$instance,fstype!=\"tmpfs\"} / "
    "{s:node_filesystem_size_bytes|instance=~$instance,fstype!=\"tmpfs\"})",
    "histogram_quantile({q}, sum {by:le,method} (rate({s:grpc_server_handling_seconds_bucket|job=$job}[{w}])))",
    "sum {by:grpc_method,grpc_code} (rate({s:grpc_server_handled_total|job=$job}[{w}]))",
    "topk(10, sum {by:route} (rate({s:http_requests_total|namespace=$ns}[{w}])))",
    "sum {by:queue} ({s:rabbitmq_queue_messages_ready|namespace=$ns})",
    "sum {by:topic,consumergroup} ({s:kafka_consumergroup_lag|namespace=$ns})",
    "sum {by:topic} (rate({s:kafka_topic_partition_current_offset|namespace=$ns}[{w}]))",
    "histogram_quantile({q}, sum {by:le,operation} (rate({s:db_query_duration_seconds_bucket|job=$job}[{w}])))",
    "sum {by:operation} (rate({s:db_queries_total|job=$job}[{w}]))",
    "sum {by:pool} ({s:db_connections_in_use|job=$job}) / sum {by:pool} ({s:db_connections_max|job=$job})",
    "sum {by:namespace,pod} (increase({s:kube_pod_container_status_restarts_total|namespace=$ns}[{w}]))",
    "sum {by:namespace} ({s:kube_pod_container_resource_requests|namespace=$ns,resource=\"cpu\"})",
    "sum {by:namespace} ({s:kube_pod_container_resource_limits|namespace=$ns,resource=\"memory\"})",
    "count {by:phase} ({s:kube_pod_status_phase|namespace=$ns} > 0)",
    "sum {by:deployment} ({s:kube_deployment_status_replicas_available|namespace=$ns})",
    "histogram_quantile({q}, sum {by:le,handler} (rate({s:prometheus_http_request_duration_seconds_bucket|"
    "job=\"prometheus\"}[{w}])))",
    "sum {by:job} (rate({s:prometheus_tsdb_head_samples_appended_total|job=\"prometheus\"}[{w}]))",
    "sum {by:cache} (rate({s:cache_hits_total|job=$job}[{w}])) / sum {by:cache} (rate({s:cache_requests_total|"
    "job=$job}[{w}]))",
    "max {by:instance} ({s:process_resident_memory_bytes|job=$job})",
    "sum {by:instance} (rate({s:process_cpu_seconds_total|job=$job}[{w}]))",
    "histogram_quantile({q}, sum {by:le} (rate({s:nginx_ingress_controller_request_duration_seconds_bucket|"
    "ingress=$ingress,namespace=$ns}[{w}])))",
    "sum {by:status} (rate({s:nginx_ingress_controller_requests|ingress=$ingress,namespace=$ns}[{w}]))",
    "avg {by:instance} ({s:up|job=$job})",
    "sum {by:reason} (rate({s:errors_total|namespace=$ns,job=$job}[{w}]))",
    "quantile_over_time({q}, {s:queue_depth|namespace=$ns,queue=$queue}[{w}])",
]
VARIABLES = {
    "ns": [f"team-{i:02d}" for i in range(30)],
    "job": ["api", "checkout", "search", "payments", "auth", "catalog", "cart", "ledger", "mailer", "gateway"],
    "instance": [f"10.0.{i // 16}.{i % 16}:9100" for i in range(50)] + [".*", "10.0.1.*"],
    "ingress": [f"ing-{i}" for i in range(12)],
    "queue": [f"q-{i}" for i in range(20)],
}
WINDOWS = ["1m", "60s", "2m", "120s", "4m", "5m", "300s", "10m", "15m", "1h", "30s", "1m30s"]
QUANTILES = ["0.5", "0.9", "0.95", "0.99", "0.999"]
RULES = [  # (group, expression) of the server's own rule evaluations
    (f"group-{i % 6}", f"sum by (job) (rate(metric_{i}_total[5m]))") for i in range(30)]
TAIL_METRICS = [f"{area}_{thing}_{unit}" for area in ("app", "svc", "worker", "batch", "edge", "store")
                for thing in ("requests", "events", "jobs", "bytes", "items", "retries", "queue", "latency")
                for unit in ("total", "count", "sum", "current", "seconds_bucket")]
TAIL_LABELS = ["job", "instance", "namespace", "pod", "service", "route", "method", "status", "team", "zone",
               "node", "tenant", "cluster", "region", "shard"]
TAIL_SHAPES = [
    "{m}{{{l1}=\"{v}\"}}",
    "rate({m}{{{l1}=\"{v}\",{l2}=~\"{v2}.*\"}}[{w}])",
    "sum by ({l1}, {l2}) (rate({m}{{{l3}=\"{v}\"}}[{w}]))",
    "max_over_time({m}{{{l1}=\"{v}\"}}[{w}])",
    "count by ({l1}) ({m}{{{l2}!=\"{v}\"}})",
    "topk({k}, sum by ({l1}) (increase({m}[{w}])))",
    "avg without ({l1}) ({m}{{{l2}=\"{v}\"}}) > {k}",
    "sum by ({l1}) ({m}) / on ({l1}) group_left sum by ({l1}, {l2}) ({m2})",
]


def _expand(template: str, session: dict[str, object], rnd: object) -> str:
    """One spelling of a panel for a session (its variables, window and writing habits)."""
    import random

    assert isinstance(rnd, random.Random)
    out, i = [], 0
    while True:
        j = template.find("{", i)
        if j < 0:
            out.append(template[i:])
            break
        k = template.index("}", j)
        out.append(template[i:j])
        slot = template[j + 1:k]
        i = k + 1
        if slot == "w":
            out.append(str(session["window"]))
        elif slot == "q":
            out.append(str(session["q"]))
        elif slot.startswith("by:"):
            labels = slot[3:].split(",")
            if session["shuffle"]:
                rnd.shuffle(labels)
            out.append(f"by ({session['comma'].join(labels)})")  # type: ignore[attr-defined]
        elif slot.startswith("s:"):
            metric, _, spec = slot[2:].partition("|")
            matchers = []
            for m in spec.split(","):
                for op in ("!=", "=~", "!~", "="):
                    label, sep, value = m.partition(op)
                    if sep:
                        break
                if value.startswith("$"):
                    value = json.dumps(str(session["vars"][value[1:]]))  # type: ignore[index]
                eq = f" {op} " if session["spaced"] else op
                matchers.append(f"{label}{eq}{value}")
            if session["shuffle"]:
                rnd.shuffle(matchers)
            inner = str(session["comma"]).join(matchers)
            out.append(f"{metric}{{ {inner} }}" if session["spaced"] else f"{metric}{{{inner}}}")
        else:
            raise ValueError(f"unknown slot {slot!r}")
    text = "".join(out)
    if session["by_after"]:  # `sum by (x) (…)` written `sum(…) by (x)` where the grouping is the outermost one
        text = _by_after(text)
    if session["multiline"]:
        text = text.replace(" / ", "\n  /\n").replace("(rate(", "(\n  rate(", 1)
    return text


def _by_after(text: str) -> str:
    """``op by (labels) (inner)`` at the start of ``text`` written as ``op(inner) by (labels)``."""
    for op in ("sum", "max", "avg", "count"):
        head = f"{op} by ("
        if text.startswith(head):
            close = text.index(")", len(head))
            labels = text[len(head) - 1:close + 1]
            rest = text[close + 2:]
            depth, end = 0, -1
            for n, c in enumerate(rest):
                depth += c == "("
                depth -= c == ")"
                if depth == 0:
                    end = n
                    break
            if end == len(rest) - 1:
                return f"{op}{rest} by {labels}"
    return text


def generate(lines: int, path: Path) -> dict[str, int]:
    """Write the query log (see the module docstring); returns what it holds, by kind."""
    import random
    from datetime import datetime, timedelta

    rnd = random.Random(11)
    start = datetime.fromisoformat(START) - timedelta(hours=1)
    span = 26 * 3600
    sessions = []
    for _ in range(600):
        sessions.append({
            "panels": rnd.sample(range(len(PANELS)), rnd.randint(4, 14)),
            "vars": {k: rnd.choice(v) for k, v in VARIABLES.items()}, "window": rnd.choice(WINDOWS),
            "q": rnd.choice(QUANTILES), "shuffle": rnd.random() < 0.5, "spaced": rnd.random() < 0.2,
            "comma": rnd.choice((", ", ",", " , ")), "by_after": rnd.random() < 0.25,
            "multiline": rnd.random() < 0.1, "refresh": rnd.choice((15, 30, 60, 300)), "range": 0,
            "weight": rnd.paretovariate(1.1)})
    weights = [float(s["weight"]) for s in sessions]  # type: ignore[arg-type]
    cache: dict[tuple[int, int], str] = {}
    counts = dict.fromkeys(("dashboard", "rule", "tail", "outside", "bad", "unparsable", "enormous"), 0)
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    tail_seen: set[str] = set()

    def iso(t: datetime) -> str:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}{rnd.randrange(1000):03d}Z"

    with path.open("w", encoding="utf-8") as fh:
        for i in range(lines):
            t = start + timedelta(seconds=span * i / lines)
            roll = rnd.random()
            kind = "dashboard"
            http = {"clientIP": f"10.1.{rnd.randrange(8)}.{rnd.randrange(250)}", "method": "POST",
                    "path": "/api/v1/query_range"}
            group = None
            step = rnd.choice((15, 30, 60, 120))
            rng_s = step * rnd.choice((120, 240, 480, 960))
            if roll < 0.10:
                kind = "rule"
                g, query = RULES[i % len(RULES)]
                group = {"file": "/etc/prometheus/rules/app.rules.yml", "name": g}
                http, step, rng_s = None, 0, 0
            elif roll < 0.15:
                kind = "tail"
                while True:
                    l1, l2, l3 = rnd.sample(TAIL_LABELS, 3)
                    query = rnd.choice(TAIL_SHAPES).format(
                        m=rnd.choice(TAIL_METRICS), m2=rnd.choice(TAIL_METRICS), l1=l1, l2=l2, l3=l3,
                        v=f"v{rnd.randrange(10**6)}", v2=f"x{rnd.randrange(100)}", w=rnd.choice(WINDOWS),
                        k=rnd.randrange(1, 20))
                    if query not in tail_seen:
                        tail_seen.add(query)
                        break
                if rnd.random() < 0.5:
                    http["path"], step, rng_s = "/api/v1/query", 0, 0
            else:
                si = rnd.choices(range(len(sessions)), weights)[0]
                session = sessions[si]
                if rnd.random() < 0.002:  # the user picks another time range: another $__rate_interval
                    session["window"] = rnd.choice(WINDOWS)
                    session["range"] = int(session["range"]) + 1  # type: ignore[call-overload]
                    if rnd.random() < 0.3:
                        session["vars"] = {k: rnd.choice(v) for k, v in VARIABLES.items()}
                pi = rnd.choice(session["panels"])  # type: ignore[arg-type]
                key = (si, pi, session["range"])
                query = cache.get(key)  # type: ignore[arg-type]
                if query is None:
                    query = cache[key] = _expand(PANELS[pi], session, rnd)  # type: ignore[index]
            ts = t
            if roll > 0.9995:
                kind, query = "unparsable", "sum(rate(http_requests_total[5m]) by (job"
            elif 0.9990 < roll <= 0.9995:
                kind, ts = "outside", t + timedelta(days=400)  # a clock from the future
            elif 0.99895 < roll <= 0.9990:
                kind = "enormous"
                query = " or ".join(f'up{{job="j{n}"}}' for n in range(2000))
            if kind == "dashboard" and not (start + timedelta(hours=1) <= t < start + timedelta(hours=25)):
                kind = "outside"
            end_t = ts
            entry: dict[str, object] = {}
            if http is not None:
                entry["httpRequest"] = http
            entry["params"] = {"end": iso(end_t), "query": query, "start": iso(end_t - timedelta(seconds=rng_s)),
                               "step": step}
            if group is not None:
                entry["ruleGroup"] = group
            ev = round(rnd.lognormvariate(-4.5, 1.2), 9)
            stats: dict[str, object] = {"timings": {
                "evalTotalTime": ev, "resultSortTime": 0, "queryPreparationTime": round(ev * 0.02, 9),
                "innerEvalTime": round(ev * 0.95, 9), "execQueueTime": 1.1e-05, "execTotalTime": round(ev * 1.03, 9)}}
            if i % 2:
                stats["samples"] = {"totalQueryableSamples": rnd.randrange(10, 10**6), "peakSamples": 512}
            entry["stats"] = stats
            entry["ts"] = iso(ts)
            line = dumps(entry)
            bad = rnd.random()
            if bad < 0.001:
                line = line[: len(line) // 2]  # truncated (a crash while writing)
                kind = "bad"
            elif bad < 0.0015:
                line = "level=warn msg=\"not a query log line\""
                kind = "bad"
            elif bad < 0.0018:
                line = '{"params":{"end":"2026-05-01T00:00:00Z"},"ts":"2026-05-01T00:00:00Z"}'
                kind = "bad"
            elif bad < 0.002:
                fh.flush()
                fh.buffer.write(b'{"params":{"query":"up\xff"}}\n')
                counts["bad"] += 1
                continue
            counts[kind] += 1
            fh.write(line + "\n")
    return counts


# ---- the two sides (each in a child) ---------------------------------------------------------------------
def worker_floor(path: Path) -> dict[str, object]:
    """Read every line and decode its JSON: what any reader of this log pays."""
    from traceo_finops.usage.querylog import open_log

    t0 = time.perf_counter()
    loads, ok, bad = json.loads, 0, 0
    for raw in open_log(path):
        try:
            loads(raw)
            ok += 1
        except ValueError:
            bad += 1
    return {"compute_s": time.perf_counter() - t0, "lines": ok + bad, "bad": bad}


def worker_ours(path: Path) -> dict[str, object]:
    """The workflow's path up to the server (``workflow.mine_source``): read, normalize, group, rank."""
    from datetime import datetime, timedelta

    from traceo_finops.prometheus.spec import Flavor
    from traceo_finops.recording_rules.collect import read_query_logs
    from traceo_finops.recording_rules.normalize import Normalizer
    from traceo_finops.recording_rules.prove import OWN_QUERY_MARK
    from traceo_finops.recording_rules.recommend import group_queries, representative, sites

    start = datetime.fromisoformat(START)
    t0 = time.perf_counter()
    reading = read_query_logs(str(path), Flavor.PROMETHEUS, start, start + timedelta(days=1), root=ROOT)
    t_read = time.perf_counter() - t0
    normalizer = Normalizer()
    own = [t for t in reading.stats if t.lstrip().startswith(OWN_QUERY_MARK)]
    grouping = group_queries(reading.stats, normalizer, max_query_length=20_000, rank_by="seconds", exclude=own)
    with_site = [g for g in grouping.groups if sites(normalizer.parse(representative(g, reading.stats)))]
    considered = [g for g in with_site if g.count >= 2][:10]
    elapsed = time.perf_counter() - t0
    s = reading.summary
    return {"compute_s": elapsed, "read_s": t_read, "lines": s.lines, "in_window": s.in_window,
            "outside_window": s.outside_window, "bad": s.bad_lines, "api_executions": reading.api_executions,
            "rule_evaluations": reading.rule_evaluations, "distinct": len(reading.stats),
            "groups": len(grouping.groups), "hot_groups": sum(1 for g in grouping.groups if g.count >= HOT_COUNT),
            "with_site": len(with_site), "considered": len(considered), "unparsable": len(grouping.unparsable),
            "enormous": grouping.enormous, "parsed": normalizer.parsed,
            "top": [(g.key, len(g.texts), g.count, round(g.seconds, 2)) for g in grouping.groups[:3]]}


# ---- driver ------------------------------------------------------------------------------------------------
def run_child(side: str) -> dict[str, object]:
    """Run one side in a fresh interpreter; wall time and peak RSS of that child from os.wait4."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'include'}:{ROOT}"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--worker", side], stdout=subprocess.PIPE, env=env)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"{side} worker failed with exit code {code}")
    info = json.loads(out.decode().strip().splitlines()[-1])
    return {**info, "wall_s": wall, "peak_rss_bytes": usage.ru_maxrss * 1024,  # ru_maxrss is KiB on Linux
            "cpu_s": usage.ru_utime + usage.ru_stime}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--regenerate", action="store_true")
    ap.add_argument("--worker", choices=["floor", "ours", "generate"])
    args = ap.parse_args()
    if args.worker:
        if args.worker == "generate":
            OUT.mkdir(parents=True, exist_ok=True)
            counts = generate(args.lines, LOG)
            (OUT / "generated.json").write_text(json.dumps({"lines": args.lines, "version": GENERATOR_VERSION,
                                                            "counts": counts}))
        else:
            print(json.dumps((worker_ours if args.worker == "ours" else worker_floor)(LOG)))
        return 0
    meta = json.loads((OUT / "generated.json").read_text()) if (OUT / "generated.json").exists() else {}
    if args.regenerate or not LOG.exists() or (meta.get("lines"), meta.get("version")) != (args.lines,
                                                                                              GENERATOR_VERSION):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--worker", "generate", "--lines", str(args.lines)], check=True)
        print(f"generated {args.lines:,} lines in {time.perf_counter() - t0:.1f} s into {LOG}")
        meta = json.loads((OUT / "generated.json").read_text())
    print(f"log: {LOG.stat().st_size / 2**20:,.0f} MiB, {meta['lines']:,} lines {meta['counts']}; {os.cpu_count()} "
          f"CPUs")
    rows = []
    for run in range(1, args.runs + 1):
        load = os.getloadavg()[0]
        floor, ours = run_child("floor"), run_child("ours")
        rows.append((run, load, floor, ours))
    print(f"{'run':>3} {'load':>5} | {'floor s':>8} {'MiB':>5} {'lines/s':>10} | {'ours s':>7} {'read s':>7} "
          f"{'MiB':>5} {'lines/s':>9} {'distinct':>9} {'groups':>7} {'hot':>4} | {'ours/floor':>10}")
    for run, load, f, o in rows:
        print(f"{run:>3} {load:>5.2f} | {f['wall_s']:>8.2f} {f['peak_rss_bytes'] / 2**20:>5.0f} "
              f"{f['lines'] / f['wall_s']:>10,.0f} | {o['wall_s']:>7.2f} {o['read_s']:>7.2f} "
              f"{o['peak_rss_bytes'] / 2**20:>5.0f} {o['lines'] / o['wall_s']:>9,.0f} {o['distinct']:>9,} "
              f"{o['groups']:>7,} {o['hot_groups']:>4} | {o['wall_s'] / f['wall_s']:>9.2f}x")
    last = rows[-1][3]
    print("ours, last run:", json.dumps({k: v for k, v in last.items() if k not in ("top",)}))
    for key, spellings, count, seconds in last["top"]:  # type: ignore[attr-defined]
        print(f"  top group ({spellings} spellings, {count:,} runs, {seconds} s): {key[:110]}")
    (OUT / "summary.json").write_text(json.dumps([{"run": r, "load": ld, "floor": f, "ours": o}
                                                  for r, ld, f, o in rows], indent=1))
    worst = max(rows, key=lambda r: r[3]["wall_s"])[3]
    peak = max(r[3]["peak_rss_bytes"] for r in rows)
    ok = worst["wall_s"] <= LIMIT_S and peak <= LIMIT_BYTES and all(r[3]["hot_groups"] == len(PANELS)
                                                                       for r in rows)
    print("PASS" if ok else f"FAIL (limits: {LIMIT_S:.0f} s, {LIMIT_BYTES / 1e9:.0f} GB, {len(PANELS)} panel groups)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
