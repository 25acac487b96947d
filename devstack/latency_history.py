"""A day of history for the request-latency histogram the services-red dashboard's heavy panel reads, written as
TSDB blocks with promtool into the devstack Prometheus.

The exporter serves the application metrics live only, so on a devstack made minutes ago the "Latency quantile"
panel (``histogram_quantile(…, sum by (le, route) (rate(http_request_duration_seconds_bucket{…}[…])))`` over 6 h
and 24 h) reads a few minutes of samples, and a recording rule for it has nothing to save: the measured speedup
was fixed overheads against fixed overheads (~2×, by the uptime of the devstack). A real dashboard's histogram has
days of samples behind it. This module writes them: the exporter's ``http_request_duration_seconds`` family
(``_bucket``, ``_sum``, ``_count``) exactly as Prometheus scrapes it (``job="apps"``, ``instance`` = the replica's
address), every 15 s (the live scrape interval, so ``$__rate_interval`` windows hold the samples they would),
over the ``HOURS`` before the k8s history's end — the values the exporter would have served then (its values
are functions of the time since the history start), so history and live head are one series each, without a
seam. Nothing else changes: no new series, label set or metric; every count taken "now" is the same.

Every replica of the `apps` job (``devstack.exporter``: one target per replica, ``instance`` = its
``127.0.0.<r+1>:<port>``) gets its own day, its values as that replica serves them. Each replica's samples are one
OpenMetrics file (~0.5 GB, in RAM when ``/dev/shm`` has room) and one promtool run, two at a time on two cores
while Python writes the next file; never the whole text in memory at once.

Ground truth (``latency_history.json`` beside ``ground_truth.json``, written last):
``{metric, job, instances, start, end, step_seconds, series, series_per_instance, samples, blocks,
seconds_to_write}`` (``series`` and ``samples``: over every instance).
A devstack made before this existed gets it at the next ``up`` (the blocks are loaded without a restart).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from devstack.exporter import APP_JOB, HistogramPart, app_families, labels_text
from devstack.history import (
    _digits,
    _scratch_dir,
    _value_columns,
    default_workers,
    instant_count,
    promtool_blocks,
)

FAMILY = "http_request_duration_seconds"
TRUTH_FILE = "latency_history.json"
HOURS = 24  # the dashboard's longest range (devstack.replayer.DEFAULT_RANGES_S)
STEP_SECONDS = 15  # the devstack Prometheus' scrape interval
LINE_BYTES = 230  # an upper bound of one sample's OpenMetrics line (a bucket with every label)


def write_openmetrics(path: Path, seed: int, history_start: int, stamps: np.ndarray, instance: str, replica: int,
                      replicas: int) -> int:
    """Replica ``replica``'s family at ``stamps`` (unix seconds), labelled ``instance``, as an OpenMetrics file at
    ``path`` (written series by series); returns the number of series."""
    [family] = [f for f in app_families(seed, replica, replicas) if f.name == FAMILY]
    ts = np.concatenate([np.full((len(stamps), 1), ord(" "), np.uint8), _digits(stamps, 10),
                         np.full((len(stamps), 1), ord("\n"), np.uint8)], axis=1)
    elapsed = (stamps - history_start).astype(float)
    with open(path, "wb") as out:
        for s in family.series:
            assert isinstance(s.value, HistogramPart)
            labels = tuple(sorted({**dict(s.labels), "job": APP_JOB, "instance": instance}.items()))
            prefix = np.frombuffer(f"{s.name}{labels_text(labels)} ".encode(), np.uint8)
            values = _value_columns(s.value.over(elapsed))  # the live scrape's values, computed with numpy
            rows = np.empty((len(stamps), len(prefix) + values.shape[1] + ts.shape[1]), np.uint8)
            rows[:, :len(prefix)] = prefix
            rows[:, len(prefix):len(prefix) + values.shape[1]] = values
            rows[:, len(prefix) + values.shape[1]:] = ts
            out.write(rows.tobytes())
        out.write(b"# EOF\n")
    return len(family.series)


def write_blocks(seed: int, history_start: int, stamps: np.ndarray, instances: list[str], data_dir: Path,
                 work_dir: Path, promtool: str) -> tuple[int, int]:
    """Every replica's samples (replica ``r`` labelled ``instances[r]``) as TSDB blocks, made in ``work_dir`` and
    moved into ``data_dir`` only once promtool succeeded for all (a running Prometheus loads them at its next
    reload). Returns (series per instance, blocks)."""
    shutil.rmtree(work_dir, ignore_errors=True)
    staging = work_dir / "blocks"
    staging.mkdir(parents=True)
    [family] = [f for f in app_families(seed, 0, len(instances)) if f.name == FAMILY]
    per_replica = len(stamps) * len(family.series) * LINE_BYTES
    workers = default_workers()
    scratch = _scratch_dir(work_dir, (workers + 1) * per_replica)  # RAM when it has room (~0.5 GB per replica)
    series = 0
    try:
        # promtool (most of the time) on up to `workers` replicas at once, while Python writes the next one
        with ThreadPoolExecutor(max_workers=workers) as pool:
            running: list[Future[None]] = []
            for replica, instance in enumerate(instances):
                om = scratch / f"latency-{replica}.om"
                series = write_openmetrics(om, seed, history_start, stamps, instance, replica, len(instances))
                running.append(pool.submit(promtool_blocks, promtool, om, staging / str(replica),
                                           f"the latency history of {instance}"))
                if len(running) >= workers:
                    running.pop(0).result()
            for job in running:
                job.result()
        blocks = [b for b in staging.glob("*/*") if b.is_dir() and (b / "meta.json").exists()]
        data_dir.mkdir(parents=True, exist_ok=True)
        for block in blocks:
            shutil.move(str(block), data_dir / block.name)
        return series, len(blocks)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(work_dir, ignore_errors=True)


def ensure(root: Path, seed: int, history_start: int, history_end: int, instances: list[str], promtool: str,
           url: str | None = None, timeout: float = 120.0) -> dict[str, Any]:
    """Write the histogram's history ``(history_end - HOURS, history_end]`` of every replica (``instances[r]`` is
    replica ``r``'s target) into ``root/data`` and its truth ``root/latency_history.json``, unless the truth is
    there already. With ``url`` (a running Prometheus), wait until the new blocks answer queries. Returns the
    truth."""
    truth_path = root / TRUTH_FILE
    with open(root / "latency-history.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if truth_path.exists():
            return dict(json.loads(truth_path.read_text()))
        t0 = time.monotonic()
        end = history_end - history_end % STEP_SECONDS
        stamps = np.arange(end - HOURS * 3600 + STEP_SECONDS, end + 1, STEP_SECONDS, dtype=np.int64)
        per_instance, blocks = write_blocks(seed, history_start, stamps, instances, root / "data",
                                            root / "latency-history-tmp", promtool)
        series = per_instance * len(instances)
        truth = {"metric": FAMILY, "job": APP_JOB, "instances": list(instances), "start": int(stamps[0]),
                 "end": int(stamps[-1]), "step_seconds": STEP_SECONDS, "series": series,
                 "series_per_instance": per_instance, "samples": series * len(stamps), "blocks": blocks,
                 "seconds_to_write": round(time.monotonic() - t0, 2)}
        if url is not None:
            _wait_loaded(url, truth, timeout)
        tmp = truth_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(truth, indent=1) + "\n")
        os.replace(tmp, truth_path)
        return truth


def _wait_loaded(url: str, truth: dict[str, Any], timeout: float) -> None:
    """Until the history answers an hour after its start (Prometheus reloads blocks once a minute)."""
    deadline = time.monotonic() + timeout
    query = f'count({{__name__=~"{FAMILY}_.+",job="{APP_JOB}"}})'  # keeps the names: _sum and _count differ
    at = truth["start"] + 3600
    while True:
        got = instant_count(url, query, at)
        if got >= truth["series"]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the latency history blocks were not loaded by {url} within {timeout:.0f}s "
                               f"(series seen an hour after its start: {got}, expected {truth['series']})")
        time.sleep(2)
