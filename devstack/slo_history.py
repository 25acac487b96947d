"""30 days of request counters for SLOs of each tier, with known incidents and known noise, written as TSDB
blocks with promtool into the devstack Prometheus — the history the alert-noise replay runs on (issue 13 item 4).

The SLOs are the specs in ``devstack/assets/slo/replay/`` (one service per tier, plus a low-traffic service
with a ``min_events`` guard); their objectives come from those files, so the incidents are sized against the
real budgets. Each service has one counter ``slo_history_http_requests_total{job, service, route, code}``
per route and code (200, 500), one sample a minute on the whole minute (so a window ``[t-w, t]`` of a query
evaluated on the minute sees exactly the minutes ``(t-w, t]``), a diurnal traffic curve (Poisson requests),
a baseline error ratio of 0.1 × the budget (Poisson), and one counter reset (a restart). On top, at fixed
times, the same for every service:

- **incidents** (errors spread evenly on the main route, so their shape is exact): a *very fast burn* (up to
  200 × the budget, 3 % of the period's budget spent), a *fast burn* (up to 36 ×, 5 % spent) — both should
  page — and two *slow burns* (3.5 × for 24 h, 1.8 × for 60 h) that should open a ticket; a burn is capped at
  95 % errors;
- **noise**: *blips* (10 minutes at 15 × the budget: a 5-minute threshold pages, no window pair of the
  multi-window multi-burn-rate rules can) and *low-traffic minutes* (traffic drops to 2 requests a minute
  for 15 minutes at night and 3 of them fail).

The series carry their own metric name and end 15 minutes before the k8s history, so nothing else of the
devstack (its exporter's ``http_requests_total``, every count taken "now", the k8s ground truth) changes.
The replay starts ``WARMUP`` after the first sample: the longest alert window (3 d) is then full even if
Prometheus' 30-day retention has dropped the first block.

Ground truth (``slo_ground_truth.json`` beside ``ground_truth.json``; times are unix seconds)::

    {version, seed, metric, job, start, end, step_seconds, replay_start, replay_end, spec_files,
     slos: [{slo_id, service, tier, objective, budget, min_events, spec_file, routes, peak_rpm, trough_rpm,
             requests, errors}],          # requests/errors: per-minute counts summed from replay_start on
     incidents: [{slo_id, kind: fast_burn|slow_burn, name, start, end, burn_rate, budget_spent, expect}],
     noise: [{slo_id, kind: blip|low_traffic, start, end, burn_rate | requests_per_minute, errors}],
     counter_resets: [{slo_id, time}]}

An incident's ``expect`` is the alert severity that should catch it (``page`` or ``ticket``); ``end`` is the
last minute of the event (its errors counted in the sample at ``end``).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from devstack.history import BLOCK_SECONDS, _digits, _value_columns, instant_count, promtool_blocks
from devstack.workloads import GRID_SECONDS
from traceo_finops.slo.spec import SLO, load_specs

METRIC = "slo_history_http_requests_total"
JOB = "slo-history"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
SPEC_DIR = PROJECT_ROOT / "devstack" / "assets" / "slo" / "replay"
TRUTH_FILE = "slo_ground_truth.json"
DAYS = 30
WARMUP_DAYS = 4
END_GAP_MINUTES = 15  # before the k8s history's end: stale (invisible to any "now" query) when up() returns
BASELINE_BURN = 0.1
MAX_ERROR_RATIO = 0.95
DAY = 1440  # minutes


@dataclass(frozen=True)
class Traffic:
    peak_rpm: float  # requests per minute at 16:00
    trough_rpm: float  # at 04:00
    routes: tuple[tuple[str, float], ...]  # (route, share of the traffic)


TRAFFIC: dict[str, Traffic] = {
    "payments-api": Traffic(3000, 600, (("/charge", 0.7), ("/refund", 0.3))),
    "checkout-web": Traffic(1200, 200, (("/cart", 0.6), ("/order", 0.4))),
    "catalog-api": Traffic(500, 80, (("/items", 0.5), ("/search", 0.5))),
    "recs-api": Traffic(200, 30, (("/recommend", 0.8), ("/similar", 0.2))),
    "backoffice-api": Traffic(30, 1, (("/users", 0.5), ("/reports", 0.5))),
}

# (kind, name, day, minute of day, burn rate, budget share spent | duration in minutes, expected severity)
INCIDENTS: tuple[tuple[str, str, int, int, float, float, str], ...] = (
    ("fast_burn", "very fast burn", 6, 14 * 60, 200.0, 0.03, "page"),
    ("fast_burn", "fast burn", 10, 10 * 60, 36.0, 0.05, "page"),
    ("slow_burn", "slow burn 3.5x for 24h", 14, 6 * 60, 3.5, 24 * 60, "ticket"),
    ("slow_burn", "slow burn 1.8x for 60h", 20, 0, 1.8, 60 * 60, "ticket"),
)
BLIPS: tuple[tuple[int, int], ...] = ((8, 13 * 60), (12, 15 * 60), (18, 11 * 60), (25, 14 * 60))
BLIP_BURN, BLIP_MINUTES = 15.0, 10
LOW_TRAFFIC: tuple[tuple[int, int], ...] = ((9, 3 * 60), (17, 2 * 60 + 30), (26, 3 * 60 + 30))
LOW_TRAFFIC_RPM, LOW_TRAFFIC_MINUTES, LOW_TRAFFIC_ERROR_MINUTES = 2, 15, (2, 4, 7)
RESET = (16, 9 * 60 + 13)  # every service restarts once: all its counters start again from 0


def spec_files() -> list[Path]:
    return sorted(SPEC_DIR.glob("*.yml"))


def _diurnal(traffic: Traffic, minutes: np.ndarray, start_unix: int) -> np.ndarray:
    hour = ((start_unix // 60 + minutes) % DAY) / 60.0
    shape = 0.5 - 0.5 * np.cos(2 * np.pi * (hour - 4) / 24)  # 0 at 04:00, 1 at 16:00
    return traffic.trough_rpm + (traffic.peak_rpm - traffic.trough_rpm) * shape


def _spread(expected: np.ndarray) -> np.ndarray:
    """Whole errors per minute whose running sum follows ``expected``'s (evenly spread, no randomness)."""
    return np.diff(np.floor(np.cumsum(expected) + 1e-9), prepend=0.0)


def _at(day: int, minute_of_day: int, start_unix: int) -> int:
    """Grid minute (from the history start) of ``day`` days after the start's midnight, at ``minute_of_day``."""
    midnight = (start_unix // 86400) * 86400
    return (midnight - start_unix) // 60 + day * DAY + minute_of_day


@dataclass
class Plan:
    """The generated history: counters per series and the ground truth of what was injected."""

    start: int
    minutes: int
    series: list[tuple[str, np.ndarray]]  # (label text, counter values per minute)
    truth: dict[str, Any]


def plan(seed: int, end_unix: int, days: int = DAYS) -> Plan:
    """Counters and ground truth for ``days`` of history ending at ``end_unix`` (a whole minute)."""
    if end_unix % GRID_SECONDS:
        raise ValueError("the SLO history must end on a whole minute")
    n = days * DAY
    start = end_unix - (n - 1) * GRID_SECONDS
    ts = np.arange(n)
    rng = np.random.default_rng(seed + 13)
    slos = load_specs(spec_files())
    series: list[tuple[str, np.ndarray]] = []
    incidents: list[dict[str, Any]] = []
    noise: list[dict[str, Any]] = []
    resets: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    replay_start = start + WARMUP_DAYS * 86400
    for slo in slos:
        traffic = TRAFFIC[slo.service]
        rpm = _diurnal(traffic, ts, start)
        burn = np.full(n, BASELINE_BURN)  # baseline: Poisson errors at this burn rate
        exact = np.zeros(n)  # injected: evenly spread errors per minute (expected value)
        cap = MAX_ERROR_RATIO / slo.budget
        for kind, name, day, at, rate, size, expect in INCIDENTS:
            b = min(rate, cap)
            length = math.ceil(size * slo.period.total_seconds() / 60 / b) if kind == "fast_burn" else int(size)
            first = _at(day, at, start)
            sl = slice(first, first + length)
            burn[sl] = 0.0
            exact[sl] = rpm[sl] * b * slo.budget
            incidents.append({"slo_id": slo.id, "kind": kind, "name": name, "start": start + 60 * first,
                              "end": start + 60 * (first + length - 1), "burn_rate": b,
                              "budget_spent": round(b * length / (slo.period.total_seconds() / 60), 4),
                              "expect": expect})
        for day, at in BLIPS:
            first = _at(day, at, start)
            sl = slice(first, first + BLIP_MINUTES)
            burn[sl] = 0.0
            exact[sl] = rpm[sl] * BLIP_BURN * slo.budget
            noise.append({"slo_id": slo.id, "kind": "blip", "start": start + 60 * first,
                          "end": start + 60 * (first + BLIP_MINUTES - 1), "burn_rate": BLIP_BURN})
        dips: list[int] = []
        for day, at in LOW_TRAFFIC:
            first = _at(day, at, start)
            sl = slice(first, first + LOW_TRAFFIC_MINUTES)
            rpm[sl] = np.minimum(rpm[sl], LOW_TRAFFIC_RPM)
            burn[sl] = 0.0
            dips += [first + m for m in LOW_TRAFFIC_ERROR_MINUTES]
            noise.append({"slo_id": slo.id, "kind": "low_traffic", "start": start + 60 * first,
                          "end": start + 60 * (first + LOW_TRAFFIC_MINUTES - 1),
                          "requests_per_minute": LOW_TRAFFIC_RPM, "errors": len(LOW_TRAFFIC_ERROR_MINUTES)})
        reset = _at(*RESET, start)
        resets.append({"slo_id": slo.id, "time": start + 60 * reset})
        in_replay = ts >= (replay_start - start) // 60
        total_req = total_err = 0.0
        injected = _spread(exact)  # on the first (main) route: a few errors a minute stay whole errors
        injected[dips] += 1
        for i, (route, share) in enumerate(traffic.routes):
            requests = rng.poisson(rpm * share).astype(np.float64)
            errors = rng.poisson(requests * burn * slo.budget).astype(np.float64)
            if i == 0:
                errors += injected
                requests = np.maximum(requests, np.ceil(errors / MAX_ERROR_RATIO))
            errors = np.minimum(errors, requests)
            total_req += float(requests[in_replay].sum())
            total_err += float(errors[in_replay].sum())
            for code, per_minute in (("200", requests - errors), ("500", errors)):
                counter = np.cumsum(per_minute)
                counter[reset:] -= counter[reset - 1]  # the restart: the counter starts again from 0
                labels = f'code="{code}",job="{JOB}",route="{route}",service="{slo.service}"'
                series.append((f"{METRIC}{{{labels}}}", counter))
        rows.append({"slo_id": slo.id, "service": slo.service, "tier": str(slo.tier), "objective": slo.objective,
                     "budget": slo.budget, "min_events": slo.min_events, "spec_file": _relative(slo.file),
                     "routes": [r for r, _ in traffic.routes], "peak_rpm": traffic.peak_rpm,
                     "trough_rpm": traffic.trough_rpm, "requests": total_req, "errors": total_err})
    truth = {"version": 1, "seed": seed, "metric": METRIC, "job": JOB, "start": start, "end": end_unix,
             "step_seconds": GRID_SECONDS, "replay_start": replay_start, "replay_end": end_unix,
             "spec_files": [_relative(str(p)) for p in spec_files()], "slos": rows, "incidents": incidents,
             "noise": noise, "counter_resets": resets}
    return Plan(start, n, series, truth)


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return path


def _openmetrics(p: Plan, lo: int, hi: int) -> bytes:
    """OpenMetrics lines of grid minutes ``[lo, hi)`` of every series, series after series."""
    ts = p.start + GRID_SECONDS * np.arange(lo, hi, dtype=np.int64)
    tail = np.concatenate([np.full((len(ts), 1), ord(" "), np.uint8), _digits(ts, 10),
                           np.full((len(ts), 1), ord("\n"), np.uint8)], axis=1)
    out = []
    for labels, values in p.series:
        prefix = np.frombuffer(f"{labels} ".encode(), np.uint8)
        digits = _value_columns(values[lo:hi])
        rows = np.empty((hi - lo, len(prefix) + digits.shape[1] + tail.shape[1]), np.uint8)
        rows[:, :len(prefix)] = prefix
        rows[:, len(prefix):len(prefix) + digits.shape[1]] = digits
        rows[:, len(prefix) + digits.shape[1]:] = tail
        out.append(rows.tobytes())
    return b"".join(out) + b"# EOF\n"


def write_blocks(p: Plan, data_dir: Path, work_dir: Path, promtool: str, workers: int = 2) -> int:
    """The plan as TSDB blocks: one OpenMetrics file and promtool run per block window, made in ``work_dir``
    and moved into ``data_dir`` only once all succeeded (a running Prometheus loads them at its next reload).
    Returns the number of blocks."""
    staging = work_dir / "blocks"
    shutil.rmtree(work_dir, ignore_errors=True)
    staging.mkdir(parents=True)
    windows = []
    edge = (p.start // BLOCK_SECONDS) * BLOCK_SECONDS
    end = p.start + GRID_SECONDS * p.minutes
    while edge < end:
        lo = max(0, (edge - p.start + GRID_SECONDS - 1) // GRID_SECONDS)
        hi = min(p.minutes, (edge + BLOCK_SECONDS - p.start + GRID_SECONDS - 1) // GRID_SECONDS)
        if hi > lo:
            windows.append((lo, hi))
        edge += BLOCK_SECONDS

    def convert(i: int, lo: int, hi: int) -> None:
        om = work_dir / f"slo-{i:02d}.om"
        om.write_bytes(_openmetrics(p, lo, hi))
        promtool_blocks(promtool, om, staging, f"the SLO history window {i}")

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for fut in [pool.submit(convert, i, lo, hi) for i, (lo, hi) in enumerate(windows)]:
                fut.result()
        blocks = [b for b in staging.iterdir() if b.is_dir() and (b / "meta.json").exists()]
        data_dir.mkdir(parents=True, exist_ok=True)
        for block in blocks:
            os.rename(block, data_dir / block.name)
        return len(blocks)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def ensure(root: Path, seed: int, history_end: int, promtool: str, url: str | None = None,
           timeout: float = 120.0) -> dict[str, Any]:
    """Write the SLO history into ``root/data`` and its ground truth ``root/slo_ground_truth.json``, unless the
    truth is there already (it is written last). With ``url`` (a running Prometheus), wait until the new blocks
    answer queries. Returns the ground truth."""
    truth_path = root / TRUTH_FILE
    with open(root / "slo-history.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if truth_path.exists():
            return dict(json.loads(truth_path.read_text()))
        end = history_end - END_GAP_MINUTES * GRID_SECONDS
        p = plan(seed, end - end % GRID_SECONDS)
        t0 = time.monotonic()
        blocks = write_blocks(p, root / "data", root / "slo-history-tmp", promtool)
        p.truth["blocks"] = blocks
        p.truth["seconds_to_write"] = round(time.monotonic() - t0, 2)
        if url is not None:
            _wait_loaded(url, p.truth, timeout)
        tmp = truth_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(p.truth, indent=1) + "\n")
        os.replace(tmp, truth_path)
        return p.truth


def _wait_loaded(url: str, truth: dict[str, Any], timeout: float) -> None:
    """Until the first and the last hour of the history answer (Prometheus reloads blocks once a minute)."""
    deadline = time.monotonic() + timeout
    want = len(truth["slos"]) * 2 * 2
    checks = [(f"count(count_over_time({METRIC}[1h]))", t) for t in (truth["replay_start"], truth["end"])]
    while True:
        got = [instant_count(url, query, at) for query, at in checks]
        if all(g >= want for g in got):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the SLO history blocks were not loaded by {url} within {timeout:.0f}s "
                               f"(series seen at replay start / end: {got}, expected {want})")
        time.sleep(2)


def slos_of(truth: dict[str, Any]) -> list[SLO]:
    """The SLOs of the history, loaded from its spec files."""
    return load_specs([PROJECT_ROOT / f for f in truth["spec_files"]])
