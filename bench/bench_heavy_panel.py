"""Benchmark: the speedup ``finops_recording_rules`` measures for the devstack's heavy dashboard panel (issue 11
item 8: ≥ 5×), repeated, with the machine's load beside each measurement.

The panel is the services-red dashboard's "Latency quantile": ``histogram_quantile(0.99, sum by (le, route)
(rate(http_request_duration_seconds_bucket{service=~…, route=~…}[$__rate_interval])))`` over 6 h and 24 h, on a
day of 15 s history of a histogram served by every replica of the devstack's `apps` job. Each round replays the
dashboard (``devstack.replayer``, the devstack's seed), mines the few seconds around it with the product
(``traceo_finops.recording_rules.workflow.mine``: the rule, its proof on a private Prometheus, and the speedup =
median ``evalTotalTime`` of the original on the devstack ÷ that of the rewritten query on the private server, runs
taken in turns), and reads the heavy panel's row. Side by side in every round: the original's and the rewritten
query's medians; and, once, the samples each reads (the original's ``stats=all`` ``totalQueryableSamples``; the
rewritten one reads one sample per recorded series and step): the work, which does not move with the load. Prints a
table for ``docs/benchmarks.md`` and writes ``heavy_panel.json`` into ``--out``.

    .venv/bin/python -m devstack up
    .venv/bin/python bench/bench_heavy_panel.py [--rounds 5] [--out bench/out/heavy-panel]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT)]

from devstack import replayer  # noqa: E402
from traceo_finops.config import load_config  # noqa: E402
from traceo_finops.kit.context import ConnectionFields, RunContext, Target  # noqa: E402
from traceo_finops.recording_rules import workflow  # noqa: E402
from traceo_finops.window import Window  # noqa: E402

HEAVY = "histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{"
DASHBOARD = ROOT / "devstack" / "assets" / "dashboards" / "services-red.json"


def _load() -> float:
    return os.getloadavg()[0]


def one_round(url: str, truth: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Replay the dashboard, mine the seconds around it, and return the heavy panel's row with the load."""
    load_before = _load()
    start = datetime.now(UTC) - timedelta(seconds=1)
    report = replayer.replay(url, [json.loads(DASHBOARD.read_text())], seed=truth["seed"])
    failed = [q.expr for q in report.queries if q.status != 200]
    if failed:
        raise RuntimeError(f"the devstack answered {len(failed)} of the dashboard's queries with an error: {failed[0]}")
    time.sleep(0.5)  # the query log is written as each query ends
    end = datetime.now(UTC)
    cfg = yaml.safe_load((ROOT / "devstack" / "finops.yaml").read_text())
    cfg["workflows"]["recording_rules"].update(query_log=truth["paths"]["query_log"], top_n=20, min_speedup=0)
    cfg_path = workdir / "finops.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    ctx = RunContext(load_config(cfg_path), "recording_rules", "finops_recording_rules", "manual__bench",
                     Window(start, end), connections=lambda conn_id: ConnectionFields(host=url))
    [target] = [Target.from_dict(t) for t in workflow.targets(ctx)]
    t0 = time.monotonic()
    out = workflow.mine(ctx, target)
    rows = [r for r in out["rows"] if r["example_query"].startswith(HEAVY)]
    if len(rows) != 1 or not rows[0]["validated"]:
        raise RuntimeError(f"the heavy panel has no single proven row in this round: {rows}")
    [row] = rows
    return {"at": end.isoformat(timespec="seconds"), "load_before": round(load_before, 2),
            "load_after": round(_load(), 2), "mine_seconds": round(time.monotonic() - t0, 1),
            "rule_name": row["rule_name"], "example_query": row["example_query"],
            "rewritten_query": row["rewritten_query"], "proof_start": int(row["proof_start"].timestamp()),
            "proof_end": int(row["proof_end"].timestamp()), "proof_step_seconds": int(row["proof_step_seconds"]),
            "proof_points": int(row["proof_points"]), "new_series": int(row["new_series"]),
            "original_ms": row["original_eval_seconds"] * 1000, "rewritten_ms": row["rewritten_eval_seconds"] * 1000,
            "speedup": row["speedup"]}


def samples(url: str, query: str, start: int, end: int, step: int) -> int:
    """``totalQueryableSamples`` of one range query, as the server counts it."""
    r = requests.post(f"{url}/api/v1/query_range", data={"query": query, "start": start, "end": end, "step": step,
                                                         "stats": "all"}, timeout=120)
    r.raise_for_status()
    return int(r.json()["data"]["stats"]["samples"]["totalQueryableSamples"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--truth", type=Path, default=Path(os.environ.get(
        "DEVSTACK_GROUND_TRUTH_PROM", ROOT / ".devstack" / "prometheus" / "ground_truth.json")))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "heavy-panel")
    args = parser.parse_args()
    if not args.truth.exists():
        parser.error(f"{args.truth} not found: start the devstack first (`python -m devstack up`)")
    truth = json.loads(args.truth.read_text())
    url = truth["prometheus"]["url"]
    replicas = truth["head"].get("app_replicas", 1)
    args.out.mkdir(parents=True, exist_ok=True)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-heavy-panel-") as tmp:
        for i in range(args.rounds):
            r = one_round(url, truth, Path(tmp))
            rounds.append(r)
            print(f"round {i + 1}: load {r['load_before']:.1f}→{r['load_after']:.1f}, original "
                  f"{r['original_ms']:.1f} ms, rewritten {r['rewritten_ms']:.1f} ms, speedup {r['speedup']:.2f}x "
                  f"({r['mine_seconds']} s)", flush=True)
    last = rounds[-1]
    original_samples = samples(url, last["example_query"], last["proof_start"], last["proof_end"],
                               last["proof_step_seconds"])
    # The rewritten query reads one sample of each recorded series per step (tests/test_recording_rules_devstack.py
    # counts it on a private server; the proof's is gone by now).
    steps = (last["proof_end"] - last["proof_start"]) // last["proof_step_seconds"] + 1
    rewritten_samples = last["new_series"] * steps
    speedups = [r["speedup"] for r in rounds]
    summary = {"rounds": rounds, "app_replicas": replicas, "speedup_median": statistics.median(speedups),
               "speedup_min": min(speedups), "speedup_max": max(speedups),
               "original_samples": original_samples, "rewritten_samples": rewritten_samples,
               "samples_ratio": original_samples / rewritten_samples if rewritten_samples else None,
               "load": [min(r["load_before"] for r in rounds), max(r["load_after"] for r in rounds)]}
    (args.out / "heavy_panel.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("\n| round | load | original | rewritten | speedup |\n|---|---|---|---|---|")
    for i, r in enumerate(rounds, 1):
        print(f"| {i} | {r['load_before']:.1f}–{r['load_after']:.1f} | {r['original_ms']:.1f} ms "
              f"| {r['rewritten_ms']:.1f} ms | {r['speedup']:.2f}× |")
    print(f"\n{replicas} app replicas; speedup median {summary['speedup_median']:.2f}× "
          f"({summary['speedup_min']:.2f}×–{summary['speedup_max']:.2f}×); samples read over the proof's range: "
          f"original {original_samples:,}, rewritten {rewritten_samples:,} "
          f"({summary['samples_ratio']:.1f}× fewer); written to {args.out / 'heavy_panel.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
