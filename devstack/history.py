"""Backfill the world's k8s history into TSDB blocks with ``promtool``, and compute its ground truth.

Speed matters (``up`` must stay well under a minute and a half on 2 cores), so:
- OpenMetrics lines are built as a numpy byte matrix per series (constant label prefix + fixed-width
  zero-padded value + timestamp), never formatted sample by sample in Python;
- the file is cut into one file per promtool block window (``--max-block-duration=24h`` gives 18h
  blocks aligned to multiples of 18h since the epoch), so promtool reads each file only twice instead
  of once per window, and two promtool processes run in parallel while Python writes the next window.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from devstack.workloads import GRID_SECONDS, Series, World

MAX_BLOCK_DURATION = "24h"
BLOCK_SECONDS = 18 * 3600  # what promtool makes of 24h: the largest 2h*3^n range not above it
QUANTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
RATE_WINDOW_MINUTES = 5


# ---------------------------------------------------------------- OpenMetrics byte matrices


def _digits(x: np.ndarray, width: int) -> np.ndarray:
    """(n, width) ASCII digit matrix of non-negative int64 ``x``, zero padded."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((x[:, None] // powers[None, :]) % 10).astype(np.uint8) + ord("0")


def _value_columns(values: np.ndarray) -> np.ndarray:
    """Fixed-width decimal text of ``values`` (zero padded: Prometheus parses 000123.5 fine)."""
    if np.all(values == np.round(values)):
        ints = values.astype(np.int64)
        width = len(str(int(ints.max()))) if len(ints) else 1
        return _digits(ints, width)
    scaled = np.round(values * 1e6).astype(np.int64)
    whole = scaled // 1_000_000
    width = len(str(int(whole.max())))
    dot = np.full((len(values), 1), ord("."), np.uint8)
    return np.concatenate([_digits(whole, width), dot, _digits(scaled % 1_000_000, 6)], axis=1)


def _format_constant(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def label_text(series: Series) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in series.labels)
    return f"{series.metric}{{{inner}}}"


@dataclass
class _Window:
    start: int  # grid minute of the first sample in the window
    stop: int  # grid minute after the last
    path: Path
    ts_block: np.ndarray = field(repr=False)  # (n, 12): " <unix seconds>\n"
    handle: Any = None


def _series_rows(series: Series, window: _Window) -> np.ndarray | None:
    """The series' OpenMetrics lines inside ``window`` as a (lines, bytes) uint8 matrix."""
    lo, hi = max(series.first, window.start), min(series.last, window.stop - 1)
    if lo > hi:
        return None
    n = hi - lo + 1
    ts = window.ts_block[lo - window.start:hi - window.start + 1]
    if isinstance(series.values, float):
        prefix = np.frombuffer(f"{label_text(series)} {_format_constant(series.values)}".encode(), np.uint8)
        rows = np.empty((n, len(prefix) + ts.shape[1]), np.uint8)
        rows[:, :len(prefix)] = prefix
    else:
        values = _value_columns(series.values[lo - series.first:hi - series.first + 1])
        prefix = np.frombuffer(f"{label_text(series)} ".encode(), np.uint8)
        rows = np.empty((n, len(prefix) + values.shape[1] + ts.shape[1]), np.uint8)
        rows[:, :len(prefix)] = prefix
        rows[:, len(prefix):len(prefix) + values.shape[1]] = values
    rows[:, rows.shape[1] - ts.shape[1]:] = ts
    return rows


# ---------------------------------------------------------------- backfill


@dataclass
class BackfillResult:
    series_by_metric: dict[str, int]  # distinct series in the backfilled blocks
    samples: int
    seconds_generate: float
    seconds_total: float
    block_windows: int


def instant_count(url: str, query: str, at: float) -> int:
    """The single value of an instant ``query`` at unix time ``at`` (a count), 0 when empty or unreachable.

    For waiting until Prometheus has loaded backfilled blocks (it looks for new ones once a minute).
    """
    body = urllib.parse.urlencode({"query": query, "time": at}).encode()
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query", body, timeout=30) as resp:
            result = json.loads(resp.read())["data"]["result"]
    except OSError:
        return 0
    return int(float(result[0]["value"][1])) if result else 0


def promtool_blocks(promtool: str, om_file: Path, out_dir: Path, what: str) -> None:
    """``om_file`` (OpenMetrics text) as TSDB blocks in ``out_dir`` with ``promtool tsdb create-blocks-from
    openmetrics``; the text is removed either way (it is large), and a failure names ``what`` was being written."""
    try:
        proc = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
             f"--max-block-duration={MAX_BLOCK_DURATION}", str(om_file), str(out_dir)],
            capture_output=True, text=True, check=False,
        )
    finally:
        om_file.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"promtool failed on {what} ({om_file.name}, rc={proc.returncode}): {proc.stderr[-2000:]}")


def _scratch_dir(fallback: Path, need_bytes: int) -> Path:
    """Where to stage the OpenMetrics files: RAM (``/dev/shm``) when it has room, else ``fallback``."""
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and shutil.disk_usage(shm).free > need_bytes:
            return Path(tempfile.mkdtemp(prefix="devstack-history-", dir=shm))
    except OSError:
        pass
    fallback.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="history-", dir=fallback))


def backfill(world: World, start_unix: int, data_dir: Path, work_dir: Path, promtool: str = "promtool",
             workers: int = 2) -> BackfillResult:
    """Write the history ``[start, start + history_minutes]`` as TSDB blocks into ``data_dir``.

    Python writes one OpenMetrics file per block window while promtool converts the previous ones:
    one promtool at a time while Python still writes (it needs a core too), ``workers`` afterwards.
    """
    t0 = time.monotonic()
    n_minutes = world.history_minutes
    data_dir.mkdir(parents=True, exist_ok=True)
    if start_unix % GRID_SECONDS:
        raise ValueError("history start must be a whole minute")

    series = list(world.k8s_series(0, n_minutes))
    series_by_metric = Counter(s.metric for s in series)
    samples = sum(s.last - s.first + 1 for s in series)
    scratch = _scratch_dir(work_dir, need_bytes=samples * 260 * (workers + 1) // 4)

    # Window boundaries in grid minutes, aligned like promtool aligns its blocks.
    end_unix = start_unix + n_minutes * GRID_SECONDS
    windows: list[_Window] = []
    edge = (start_unix // BLOCK_SECONDS) * BLOCK_SECONDS
    while edge <= end_unix:
        lo_s, hi_s = max(edge, start_unix), min(edge + BLOCK_SECONDS, end_unix + GRID_SECONDS)
        lo, hi = (lo_s - start_unix) // GRID_SECONDS, -(-(hi_s - start_unix) // GRID_SECONDS)
        ts = start_unix + GRID_SECONDS * np.arange(lo, hi, dtype=np.int64)
        block = np.concatenate([np.full((len(ts), 1), ord(" "), np.uint8), _digits(ts, 10),
                                np.full((len(ts), 1), ord("\n"), np.uint8)], axis=1)
        windows.append(_Window(lo, hi, scratch / f"history-{len(windows):02d}.om", block))
        edge += BLOCK_SECONDS

    slots = threading.Semaphore(max(1, workers - 1))

    def convert(path: Path) -> None:
        with slots:
            promtool_blocks(promtool, path, data_dir, "the k8s history")

    futures: list[Future[None]] = []
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for window in windows:
                # unbuffered: the rows are big already, a buffer would only add a copy
                with open(window.path, "wb", buffering=0) as fh:
                    for s in series:
                        rows = _series_rows(s, window)
                        if rows is not None:
                            fh.write(rows.data)
                    fh.write(b"# EOF\n")
                futures.append(pool.submit(convert, window.path))
            t_gen = time.monotonic() - t0
            if workers > 1:
                slots.release()
            for fut in futures:
                fut.result()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return BackfillResult(dict(sorted(series_by_metric.items())), samples, round(t_gen, 2),
                          round(time.monotonic() - t0, 2), len(windows))


def series_alive_at(series: Iterable[Series], k: int) -> dict[str, int]:
    """Per metric, how many series an instant query at grid minute ``k`` + 30 s returns.

    Half a minute past the grid point the 5-minute lookback holds the samples of minutes k-4..k and
    nothing on its boundary, so the count is unambiguous.
    """
    counts: Counter[str] = Counter()
    for s in series:
        if s.first <= k and s.last >= k - (RATE_WINDOW_MINUTES - 1):
            counts[s.metric] += 1
    return dict(sorted(counts.items()))


# ---------------------------------------------------------------- ground truth per workload


def _stats(values: np.ndarray, quantiles: dict[str, float]) -> dict[str, float | int]:
    out: dict[str, float | int] = {name: float(np.quantile(values, q)) for name, q in quantiles.items()}
    out["max"] = float(values.max())
    out["samples"] = len(values)
    return out


def rolling_rate(usage: np.ndarray) -> np.ndarray:
    """What ``rate(counter[5m])`` returns at each grid minute with a full window: the 5-minute mean."""
    window = RATE_WINDOW_MINUTES
    if len(usage) <= window:
        return np.empty(0)
    csum = np.concatenate([[0.0], np.cumsum(usage)])
    # rate at minute i (i >= window, relative to the first sample) averages usage[i-window+1 .. i]
    return (csum[window + 1:] - csum[1:-window]) / window


def workload_truth(world: World, start_unix: int) -> list[dict[str, Any]]:
    """Per workload: identity, sizing, and the true usage statistics over the backfilled history."""
    n = world.history_minutes
    out = []
    for w in world.workloads:
        pods = w.pods_between(0, n)
        replicas = w.replicas_at(np.arange(max(w.created, 0), n + 1))
        containers = []
        for c in w.containers:
            cpu_all: list[np.ndarray] = []
            mem_all: list[np.ndarray] = []
            by_pod: dict[str, dict[str, Any]] = {}
            oom_events: list[dict[str, Any]] = []
            for pod in pods:
                run = world.container_run(w, pod, c, n)
                if run is None:
                    continue
                rate = rolling_rate(run.cpu_usage)
                entry: dict[str, Any] = {"memory_bytes": _stats(run.memory, {"p99": 0.99}),
                                         "running_seconds": GRID_SECONDS * (run.last - run.first + 1)}
                if len(rate):
                    entry["cpu_cores"] = _stats(rate, QUANTILES)
                    cpu_all.append(rate)
                mem_all.append(run.memory)
                by_pod[pod.name] = entry
                oom_events += [{"pod": pod.name, "time": start_unix + GRID_SECONDS * m} for m in run.restart_minutes]
            cpu = np.concatenate(cpu_all) if cpu_all else np.empty(0)
            mem = np.concatenate(mem_all) if mem_all else np.empty(0)
            containers.append({
                "name": c.name,
                "image": c.image,
                "requests": {"cpu": c.cpu_request, "memory": c.mem_request},
                "limits": {"cpu": c.cpu_limit, "memory": c.mem_limit},
                "cpu_cores": _stats(cpu, QUANTILES) if len(cpu) else None,
                "memory_bytes": _stats(mem, {"p99": 0.99}) if len(mem) else None,
                "by_pod": by_pod,
                # Batch workloads: pods whose container ran (each pod of a Job is one run of it).
                "runs": len(by_pod) if w.kind == "Job" else None,
                "oom_events": sorted(oom_events, key=lambda e: (e["time"], e["pod"])),
                "oom_kills": len(oom_events),
            })
        created_unix = start_unix + GRID_SECONDS * max(w.created, 0)
        out.append({
            "namespace": w.namespace,
            "team": w.team,
            "kind": w.kind,
            "name": w.name,
            "profile": w.profile,
            "replicas": int(replicas[-1]),
            "replicas_min": int(replicas.min()),
            "replicas_max": int(replicas.max()),
            "hpa": {"name": w.name, "min_replicas": w.replicas, "max_replicas": w.hpa_max} if w.hpa else None,
            "history_start": created_unix,
            "short_history": w.created > 0,
            "replicasets": [name for name, _ in w.replicasets()],
            "churn_time": None if w.churn_at is None else start_unix + GRID_SECONDS * w.churn_at,
            "completed_time": None if w.completes_at is None else start_unix + GRID_SECONDS * w.completes_at,
            "run_minutes": w.run_minutes,
            "pods": [{
                "name": p.name, "node": p.node.name, "owner_kind": p.owner_kind, "owner_name": p.owner_name,
                "start": start_unix + GRID_SECONDS * max(p.start, 0),
                "end": None if p.end is None or p.end > n else start_unix + GRID_SECONDS * (p.end - 1),
            } for p in pods],
            "containers": containers,
        })
    return out


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))
