"""Benchmark: measured alert noise of the generated SLO alerts (issue 13 item 4) — where the seed's "80 % fewer
alerts" and "5 % false positives" are checked.

Replays, on the devstack Prometheus and its 30-day SLO history (``devstack/slo_history.py``: one SLO per tier
plus a low-traffic one, each with two fast burns, two slow burns, four blips and three low-traffic dips), each
SLO's generated MWMB page and ticket alerts and, side by side, a plain threshold on the 5-minute error ratio
(``traceo_finops.slo.noise``), with range queries at the 1-minute evaluation interval honouring ``for:``. Writes
``slo_alert_noise.parquet`` (the ``slo_alert_noise`` dataset) and ``slo_alert_noise_events.json`` (each known
event's detection per method) into ``--out``, and prints the table of ``docs/benchmarks.md``.

    .venv/bin/python -m devstack up            # the history is part of the devstack
    .venv/bin/python bench/bench_slo_noise.py [--out bench/out/slo-noise]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT)]

from devstack import slo_history  # noqa: E402
from traceo_finops.prometheus import PrometheusClient, SourceSpec  # noqa: E402
from traceo_finops.slo import noise  # noqa: E402


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| SLO | tier | method | incidents detected | fast burns paged | slowest fast / slow detection (min) "
             "| pages | tickets | false pages | false tickets | noise events paged | pages/day |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['service']} | {r['tier']} {r['objective']:g} | {r['method']} "
            f"| {r['incidents_detected']}/{r['incidents']} | {r['fast_burns_paged']}/{r['fast_burns']} "
            f"| {_fmt(r['fast_burn_delay_max_minutes'])} / {_fmt(r['slow_burn_delay_max_minutes'])} "
            f"| {r['pages']} | {r['tickets']} | {r['false_pages']} | {r['false_tickets']} "
            f"| {r['noise_events_paged']}/{r['noise_events']} | {r['pages_per_day']:.2f} |")
    return "\n".join(lines)


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for method in (noise.MWMB, noise.THRESHOLD):
        mine = [r for r in rows if r["method"] == method]
        alerts = sum(r["pages"] + r["tickets"] for r in mine)
        false = sum(r["false_pages"] + r["false_tickets"] for r in mine)
        out[method] = {"pages": sum(r["pages"] for r in mine), "tickets": sum(r["tickets"] for r in mine),
                       "alerts": alerts, "false_alerts": false,
                       "false_share": None if not alerts else false / alerts,
                       "incidents_detected": sum(r["incidents_detected"] for r in mine),
                       "incidents": sum(r["incidents"] for r in mine),
                       "noise_events_paged": sum(r["noise_events_paged"] for r in mine),
                       "noise_events": sum(r["noise_events"] for r in mine)}
    m, t = out[noise.MWMB], out[noise.THRESHOLD]
    out["fewer_pages"] = noise.reduction(rows, "pages")
    out["fewer_alerts"] = None if not t["alerts"] else 1 - m["alerts"] / t["alerts"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prom-url", default=os.environ.get("DEVSTACK_PROM_URL", "http://127.0.0.1:19090"))
    parser.add_argument("--truth", type=Path, default=ROOT / ".devstack" / "prometheus" / slo_history.TRUTH_FILE)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "slo-noise")
    args = parser.parse_args()
    if not args.truth.exists():
        print(f"{args.truth}: no SLO history ground truth; run `.venv/bin/python -m devstack up` first",
              file=sys.stderr)
        return 2
    truth = json.loads(args.truth.read_text())
    start = datetime.fromtimestamp(truth["replay_start"], UTC)
    end = datetime.fromtimestamp(truth["replay_end"], UTC)
    events = noise.events_of(truth)
    rows: list[dict[str, Any]] = []
    detections: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    t_all = time.monotonic()
    with PrometheusClient(SourceSpec(name="devstack", base_url=args.prom_url, timeout=600)) as client:
        for slo in slo_history.slos_of(truth):
            t0 = time.monotonic()
            rep = noise.replay_slo(client, slo, events, start, end)
            seconds[slo.id] = round(time.monotonic() - t0, 2)
            rows += rep.rows
            detections += [{"slo_id": d.event.slo_id, "kind": d.event.kind, "name": d.event.name,
                            "start": d.event.start, "end": d.event.end, "method": d.method,
                            "severity": d.severity, "delay_minutes": None if d.delay_seconds is None
                            else d.delay_seconds / 60} for d in rep.detections]
    wall = time.monotonic() - t_all
    args.out.mkdir(parents=True, exist_ok=True)
    pq.write_table(noise.NOISE_DATASET.table(rows), args.out / "slo_alert_noise.parquet")
    summary = {"replay_start": start.isoformat(), "replay_end": end.isoformat(), "seconds": round(wall, 2),
               "seconds_per_slo": seconds, "totals": totals(rows), "detections": detections}
    (args.out / "slo_alert_noise_events.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(table(rows))
    print()
    print(json.dumps({k: v for k, v in summary.items() if k != "detections"}, indent=1))
    print(f"replay of {len(rows)} SLO x method rows in {wall:.1f} s; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; output in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
