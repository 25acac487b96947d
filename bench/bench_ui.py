"""Benchmark: the FinOps page's figures (what ``/finops/api/report`` returns) on a year of daily partitions.

Writes a lake shaped like the kit's publish output (partitions with ``run_id`` plus one commit marker per
DAG and day; the Great Expectations step is skipped, it does not change what the page reads): 365 days of
``finops_cost_report`` (``cost_summary`` 60 rows, ``actions`` 400 rows, ``run_targets``, ``quality_checks``)
and three upstream DAGs (a 2,000-row dataset, ``run_targets`` with a failed target, ``quality_checks``).
Then times ``traceo_finops.ui.report_page`` cold (a new process: empty caches, no disk cache) and warm, and its JSON
size. ``bench/bench_cost_report.py`` measures the page on a year of every dataset at the other benchmarks' sizes,
on local disk and on S3.

    .venv/bin/python bench/bench_ui.py [--days 365] [--root bench/out/ui-lake]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from traceo_finops import ui
from traceo_finops.cost_report.dataset import ACTIONS, COST_SUMMARY
from traceo_finops.kit.datasets import QUALITY_CHECKS, RUN_TARGETS
from traceo_finops.kit.publish import commit_path
from traceo_finops.reports import Dataset, ReportStore

CATEGORIES = ("active_series", "local_disk", "object_storage", "stack_compute", "workload_requests", "queries")
UPSTREAM = Dataset("bench_upstream", 1, pa.schema([pa.field("source", pa.string()), pa.field("metric", pa.string()),
                                                    pa.field("series", pa.int64())]))


def _window(day: date) -> dict[str, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return {"window_start": start, "window_end": start + timedelta(days=1)}


def _commit(store: ReportStore, dag_id: str, day: date, run_id: str, parts: list[tuple[Dataset, list[dict]]]) -> None:
    kit = {"dag_id": dag_id}
    written = {}
    for dataset, rows in parts:
        partition = kit if dataset.name in ui.KIT_DATASETS else None
        w = store.write_partition(dataset, day, rows, {"dag_id": dag_id}, run_id=run_id, partition=partition)
        written[dataset.name] = {**w.as_dict(), "run_id": run_id, **({"partition": kit} if partition else {})}
    marker = {"dag_id": dag_id, "run_id": run_id, "report_date": day.isoformat(),
              "committed_at": f"{day.isoformat()}T01:00:00+00:00", "window": {}, "datasets": written,
              "artifacts": [], "coverage": "3 of 3 sources", "failed_targets": []}
    store.write_file(commit_path(store, dag_id, day), json.dumps(marker, default=str).encode())


def _kit_rows(day: date, names: list[str], failed: bool) -> list[tuple[Dataset, list[dict]]]:
    now = datetime(day.year, day.month, day.day, 1, tzinfo=UTC)
    targets = [{"target": f"prom-{i}", "kind": "source", "source": f"prom-{i}", "tenant": "", "bucket": "",
                "status": "failed" if failed and i == 0 else "ok", "error": "HTTP 503" if failed and i == 0 else "",
                "rows_written": 10, "note": "", **_window(day)} for i in range(3)]
    checks = [{"dataset": n, "suite": f"{n}_suite", "rows": 10, "expectations_run": 8, "failures": [],
               "success": True, "checked_at": now} for n in names]
    return [(RUN_TARGETS, targets), (QUALITY_CHECKS, checks)]


def build(root: Path, days: int, end: date) -> ReportStore:
    store = ReportStore(str(root))
    for n in range(days):
        day = end - timedelta(days=days - 1 - n)
        scale = 1 + 0.1 * (n % 30) / 30
        summary = [{"category": c, "owner": f"team-{o}", "current_monthly_usd": 100.0 * scale + o,
                    "projected_monthly_usd": 80.0 * scale, "saving_monthly_usd": 20.0 * scale + o,
                    "previous_monthly_usd": None, "wow_change_usd": None, "wow_change_pct": None, "basis": "bench",
                    "notes": "", **_window(day)} for c in CATEGORIES for o in range(10)]
        actions = [{"rank": r + 1, "action_id": f"a{r}", "workflow": "cardinality", "kind": "drop_metric",
                    "target": f"metric_{r}", "owner": f"team-{r % 10}", "monthly_saving_usd": 1000.0 - r,
                    "effort": "low", "risk": "low", "status": "proposed", "artifact_uri": "", "detail": "",
                    **_window(day)} for r in range(400)]
        _commit(store, ui.COST_DAG, day, f"cost-{day}", [(COST_SUMMARY, summary), (ACTIONS, actions),
                                                        *_kit_rows(day, ["cost_summary", "actions"], False)])
        for u in range(3):
            rows = [{"source": f"prom-{i % 3}", "metric": f"m{i}", "series": i} for i in range(2000)]
            _commit(store, f"finops_upstream_{u}", day, f"up{u}-{day}",
                    [(UPSTREAM, rows), *_kit_rows(day, [UPSTREAM.name], failed=(u == 0))])
    return store


def _time_in_new_process(root: Path, end: date, repeats: int) -> list[float]:
    code = ("import sys,time,json;from datetime import date;from traceo_finops import ui;"
            "from traceo_finops.reports import ReportStore;s=ReportStore(sys.argv[1]);"
            "d=date.fromisoformat(sys.argv[2])\n"
            "out=[]\nfor _ in range(int(sys.argv[3])):\n t=time.perf_counter();p=ui.report_page(s,d);"
            "json.dumps(p);out.append(time.perf_counter()-t)\nprint(json.dumps(out))")
    with tempfile.TemporaryDirectory(prefix="finops-ui-cache-") as cache:  # cold: no disk cache either
        res = subprocess.run([sys.executable, "-c", code, str(root), end.isoformat(), str(repeats)],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "FINOPS_UI_CACHE_DIR": cache})
    return list(json.loads(res.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--root", default=str(Path(__file__).parent / "out" / "ui-lake"))
    args = parser.parse_args()
    root, end = Path(args.root), date(2026, 12, 6)
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    build(root, args.days, end)
    files = sum(1 for p in root.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    print(f"lake: {args.days} days, {files} files, {size / 1e6:.1f} MB, written in {time.perf_counter() - t0:.1f} s")
    times = _time_in_new_process(root, end, 5)
    page = ui.report_page(ReportStore(str(root)), end)
    print(f"report_page: cold {times[0] * 1000:.0f} ms, warm {min(times[1:]) * 1000:.0f} ms "
          f"(median of warm {sorted(times[1:])[len(times[1:]) // 2] * 1000:.0f} ms); trend points "
          f"{len(page['trend'])}, actions {len(page['actions'])}, datasets {len(page['datasets'])}, "
          f"JSON {len(json.dumps(page)) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
