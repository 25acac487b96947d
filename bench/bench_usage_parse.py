"""Usage-analysis throughput: PromQL expressions/s and query-log lines/s on a generated 1M-line log.

Run: ``.venv/bin/python bench/bench_usage_parse.py [--lines 1000000] [--distinct 5000] [--expressions 20000]``.
Side by side in the same run, baselines that bound what is possible in Python:
``promql_parser.parse`` alone (no AST walk) for expressions, and a bare ``json.loads`` loop for the log.
Prints wall time, rate and peak RSS for each step.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

import promql_parser  # noqa: E402

from traceo_finops.usage import (  # noqa: E402
    PromQLAnalyzer,
    UsageIndex,
    read_mimir_query_stats,
    read_prometheus_query_log,
)
from traceo_finops.usage.querylog import open_log  # noqa: E402

METRICS = [f"app_{kind}_{i}" for kind in ("requests_total", "latency_seconds_bucket", "queue_depth", "errors_total")
           for i in range(50)]
LABELS = ["job", "instance", "namespace", "pod", "service", "route", "method", "status_code", "team", "zone"]
TEMPLATES = [
    "{m}",
    'rate({m}{{{l1}="{v}"}}[5m])',
    "sum by ({l1}, {l2}) (rate({m}[5m]))",
    'sum without ({l1}) (rate({m}{{{l2}=~"{v}.*"}}[5m]))',
    "histogram_quantile(0.99, sum by (le, {l1}) (rate({m}[5m])))",
    "sum by ({l1}) (rate({m}[5m])) / on ({l1}) group_left ({l2}) sum by ({l1}, {l2}) ({m2})",
    'label_replace(sum by ({l1}) ({m}), "x", "$1", "{l1}", "(.*)")',
    "topk(10, max_over_time(sum by ({l1}) (rate({m}[5m]))[1h:1m]))",
    '{m} > on ({l1}, {l2}) {m2} offset 1d and {m}{{{l2}!="{v}"}}',
    "count(count by ({l1}) ({m}))",
]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def expressions(n: int, rng: random.Random) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        l1, l2 = rng.sample(LABELS, 2)
        out.add(rng.choice(TEMPLATES).format(m=rng.choice(METRICS), m2=rng.choice(METRICS), l1=l1, l2=l2,
                                             v=f"v{rng.randrange(1000)}"))
    return sorted(out)


def write_log(path: Path, lines: int, distinct: list[str], start: datetime, rng: random.Random) -> None:
    span = 2 * 86400  # two days; the window is the second one
    with path.open("w", encoding="utf-8") as fh:
        for i in range(lines):
            ts = (start + timedelta(seconds=span * i / lines)).isoformat().replace("+00:00", "Z")
            # Half from a few hot queries (dashboards refreshing), half from a long tail.
            query = distinct[int(rng.paretovariate(1.2)) % len(distinct) if i % 2 else rng.randrange(len(distinct))]
            entry: dict[str, object] = {
                "params": {"end": ts, "query": query, "start": ts, "step": 30},
                "stats": {"timings": {"evalTotalTime": 0.001, "execQueueTime": 1e-05, "execTotalTime": 0.0011,
                                      "innerEvalTime": 0.0009, "queryPreparationTime": 5e-05, "resultSortTime": 0}},
                "ts": ts}
            if i % 20 == 0:
                entry["ruleGroup"] = {"file": "/etc/prometheus/rules.yml", "name": "g"}
            else:
                entry["httpRequest"] = {"clientIP": "10.0.0.1", "method": "POST", "path": "/api/v1/query_range"}
            line = json.dumps(entry)
            if i % 10_000 == 9_999:
                line = line[: len(line) // 2]  # truncated
            fh.write(line + "\n")


def write_logfmt(path: Path, lines: int, distinct: list[str], start: datetime, rng: random.Random) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(lines):
            ts = (start + timedelta(seconds=2 * 86400 * i / lines)).isoformat().replace("+00:00", "Z")
            if i % 4 == 3:  # other query-frontend messages
                fh.write(f'level=info ts={ts} caller=handler.go:100 msg="request timings" org_id=t path=/x\n')
                continue
            query = json.dumps(rng.choice(distinct))  # Go-style quoting: \" and \\ escapes
            fh.write(f'level=info ts={ts} caller=handler.go:324 org_id=t msg="query stats" component=query-frontend '
                     f"method=POST path=/prometheus/api/v1/query_range response_time=12.3ms "
                     f"query_wall_time_seconds=0.01 fetched_series_count=3 fetched_chunk_bytes=1024 "
                     f"param_end={ts} param_query={query} param_start={ts} param_step=60 status=success\n")


def timed(label: str, fn, count: int, unit: str):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    result = fn()
    dt = time.perf_counter() - t0
    print(f"{label:<44} {dt:8.2f} s  {count / dt:>12,.0f} {unit}/s   peak RSS {rss_mb():7.0f} MB")
    return result, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--distinct", type=int, default=5_000)
    ap.add_argument("--expressions", type=int, default=20_000)
    ap.add_argument("--mimir-lines", type=int, default=200_000)
    args = ap.parse_args()
    rng = random.Random(7)

    exprs = expressions(args.expressions, rng)
    print(f"{len(exprs):,} distinct expressions, e.g. {exprs[len(exprs) // 2]!r}")
    _, base = timed("baseline: promql_parser.parse only", lambda: [promql_parser.parse(e) for e in exprs],
                    len(exprs), "expr")
    analyzer = PromQLAnalyzer()
    results, walk = timed("analyze (parse + walk + fingerprint)", lambda: [analyzer.analyze(e) for e in exprs],
                          len(exprs), "expr")
    assert all(r.ok for r in results)
    print(f"{'analyze / parse-only':<44} {walk / base:8.2f} x")

    start = datetime(2024, 5, 1, tzinfo=UTC)
    window = (start + timedelta(days=1), start + timedelta(days=2))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "query.log"
        distinct = exprs[: args.distinct]
        timed("generate log", lambda: write_log(path, args.lines, distinct, start, rng), args.lines, "line")
        print(f"log: {path.stat().st_size / 1e6:,.0f} MB, {args.lines:,} lines")

        def baseline() -> int:
            n = 0
            for raw in open_log(path):
                try:
                    json.loads(raw)
                except ValueError:
                    continue
                n += 1
            return n

        _, base_log = timed("baseline: json.loads every line", baseline, args.lines, "line")
        summary, read = timed("read_prometheus_query_log (window, counts)",
                              lambda: read_prometheus_query_log(open_log(path), *window, file=str(path)),
                              args.lines, "line")
        print(f"{'read / json.loads-only':<44} {read / base_log:8.2f} x")
        print(f"  in window {summary.in_window:,}, outside {summary.outside_window:,}, bad {summary.bad_lines:,}, "
              f"distinct ad-hoc {len(summary.queries):,}, rule evaluations {sum(summary.rule_evaluations.values()):,}")
        index = UsageIndex()
        timed("UsageIndex.add_prometheus_query_log (all)",
              lambda: index.add_prometheus_query_log(path, *window), args.lines, "line")
        timed("labels_needed for every metric", lambda: [index.labels_needed(m) for m in index.metrics()],
              len(index.metrics()), "metric")
        print(f"  expressions parsed: {index.analyzer.parsed:,} for {args.lines:,} lines; "
              f"metrics {len(index.metrics())}")

        mimir = Path(tmp) / "query-frontend.log"
        timed("generate Mimir logfmt", lambda: write_logfmt(mimir, args.mimir_lines, distinct, start, rng),
              args.mimir_lines, "line")
        stats, _ = timed("read_mimir_query_stats (logfmt)", lambda: read_mimir_query_stats(open_log(mimir), *window),
                         args.mimir_lines, "line")
        print(f"  in window {stats.in_window:,}, skipped {stats.skipped:,}, bad {stats.bad_lines:,}")


if __name__ == "__main__":
    main()
