"""A 10,000-container cluster with 14 days of cAdvisor + kube-state-metrics history, as a cached TSDB.

Used by ``bench/bench_rightsizing.py`` (not a benchmark itself: the Makefile runs ``bench/bench_*.py`` only).

The world: ~40 namespaces of Deployments (some rolled out mid-history: pod churn), StatefulSets, DaemonSets,
Jobs and bare pods, one or two containers per pod, ~10,000 containers running at the end of the history,
with right-sizing profiles like the devstack's (over-provisioned CPU or memory, well sized, under-provisioned,
spiky, OOM-killed, no requests). Values follow ``devstack.workloads``' model (daily cycle, per-sample noise,
10-minute bursts, OOM ramps that reset the CPU counter), drawn from a counter-based hash so any window can be
computed on its own; the OpenMetrics writer is copy-adapted from ``devstack.history`` (numpy byte matrices).

Build: one OpenMetrics file per 6-hour window (staged in ``/dev/shm`` when it has room), two ``promtool tsdb
create-blocks-from openmetrics`` at a time while the next window is written; then the bench Prometheus is
started once on the blocks to compact them (as a real Prometheus would have) and stopped. The result is kept
under ``bench/out/rightsizing-<scrape>s-<seed>/`` with ``world.json`` (workload list and, for a sample of
containers, the exact usage statistics) and is reused by later runs.

Scrape interval: ``measure()`` times a slice (1/10 of the containers, one day, 60 s) end to end and
extrapolates; ``choose_interval()`` takes 60 s when the full build is predicted under 30 minutes, else 300 s.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"
PROMTOOL = "/usr/bin/promtool"
PROMETHEUS = "/usr/bin/prometheus"

END = 1_780_272_000  # 2026-06-01T00:00:00Z: a fixed anchor, so the cached TSDB stays valid
DAYS = 14
WINDOW_SECONDS = 6 * 3600
NAMESPACES = 40
NODES = 120
TARGET_CONTAINERS = 10_000
BUILD_BUDGET_SECONDS = 30 * 60
MIB = 1024 * 1024
KSM = 'instance="10.0.0.9:8080",job="kube-state-metrics"'
TRUTH_SAMPLE = 300  # containers whose exact statistics go into world.json
RATE_WINDOW_SECONDS = 300


# ---------------------------------------------------------------- deterministic noise (as devstack.workloads)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _key(*parts: object) -> int:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _uniform(keys: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) for every (row key, column index): splitmix64 of the index xor the key."""
    with np.errstate(over="ignore"):
        x = (idx.astype(np.uint64)[None, :] * _GOLDEN) ^ keys.astype(np.uint64)[:, None]
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _normal(keys: np.ndarray, idx: np.ndarray) -> np.ndarray:
    u1 = _uniform(keys, idx)
    u2 = _uniform(keys ^ 0x5DEECE66D, idx)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


# ---------------------------------------------------------------- the world

PROFILES = {  # profile: share of containers
    "over_provisioned_cpu": 0.28, "over_provisioned_memory": 0.14, "well_sized": 0.33,
    "under_provisioned_cpu": 0.07, "spiky_cpu": 0.09, "oom_killed": 0.03, "no_requests": 0.06,
}
KINDS = {"Deployment": 0.78, "StatefulSet": 0.1, "Job": 0.06, "Pod": 0.06}
DAEMONSETS = 3  # one pod per node each


@dataclass
class Container:
    """One container of one pod: its series labels, sizing and usage model (sizes in cores and bytes)."""

    namespace: str
    pod: str
    name: str
    node: str
    workload: int  # index into World.workloads
    first: int  # first and last sample index (inclusive) with data
    last: int
    profile: str
    cpu_request: float | None
    cpu_limit: float | None
    mem_request: float | None
    mem_limit: float | None
    cpu_mean: float
    diurnal: float
    noise: float
    spike_rate: float
    mem_base: float
    oom_period: int  # samples between OOM kills; 0 = never
    prestart: float  # counter value at the first sample
    key: int


@dataclass
class Pod:
    namespace: str
    name: str
    node: str
    owner_kind: str
    owner_name: str
    workload: int
    first: int
    last: int


@dataclass
class World:
    interval: int
    seed: int
    start: int
    end: int
    workloads: list[dict[str, Any]]
    pods: list[Pod]
    containers: list[Container]
    replicasets: list[tuple[str, str, str, int]]  # namespace, replicaset, deployment, first sample
    truth_sample: list[int] = field(default_factory=list)  # container indexes

    @property
    def samples(self) -> int:
        return (self.end - self.start) // self.interval + 1


def _suffix(n: int, *parts: object) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    k = _key(*parts)
    out = []
    for _ in range(n):
        k, i = divmod(k, len(alphabet))
        out.append(alphabet[i])
    return "".join(out)


def build_world(interval: int, seed: int = 7, target: int = TARGET_CONTAINERS, days: int = DAYS) -> World:
    """The bench cluster: about ``target`` containers running at the end of ``days`` of history."""
    rng = np.random.default_rng(seed)
    start = END - days * 86400
    n = days * 86400 // interval + 1
    nodes = [f"node-{i:03d}" for i in range(NODES)]
    namespaces = [f"team-{i:02d}" for i in range(NAMESPACES)]
    workloads: list[dict[str, Any]] = []
    pods: list[Pod] = []
    containers: list[Container] = []
    replicasets: list[tuple[str, str, str, int]] = []
    running = 0

    def containers_for(w: dict[str, Any]) -> list[dict[str, Any]]:
        specs = []
        for ci in range(w["n_containers"]):
            profile = rng.choice(list(PROFILES), p=list(PROFILES.values())) if ci == 0 else "well_sized"
            cpu_req = float(rng.choice((0.1, 0.25, 0.5, 1.0, 2.0))) if ci == 0 else 0.1
            mem_req = float(rng.choice((256, 512, 1024, 2048))) * MIB if ci == 0 else 128 * MIB
            cpu_util, mem_util = rng.uniform(0.45, 0.6), rng.uniform(0.6, 0.75)
            spike, oom = 0.0, 0
            if profile == "over_provisioned_cpu":
                cpu_util = rng.uniform(0.05, 0.15)
            elif profile == "over_provisioned_memory":
                mem_util = rng.uniform(0.12, 0.25)
            elif profile == "under_provisioned_cpu":
                cpu_util = rng.uniform(1.2, 1.5)
            elif profile == "spiky_cpu":
                cpu_util, spike = rng.uniform(0.12, 0.2), rng.uniform(0.03, 0.06)
            elif profile == "oom_killed":
                mem_util, oom = rng.uniform(0.35, 0.5), int(rng.integers(700, 1500) * 60 // interval)
            spec = {"name": "app" if ci == 0 else "proxy", "profile": profile, "cpu_mean": cpu_util * cpu_req,
                    "diurnal": rng.uniform(0.2, 0.4), "noise": rng.uniform(0.15, 0.3), "spike_rate": spike,
                    "mem_base": mem_util * mem_req, "oom_period": oom,
                    "cpu_request": cpu_req, "cpu_limit": None if rng.random() < 0.5 else 2 * cpu_req,
                    "mem_request": mem_req, "mem_limit": mem_req}
            if profile == "under_provisioned_cpu":
                spec["cpu_limit"] = None
            if profile == "no_requests":
                spec.update(cpu_request=None, cpu_limit=None, mem_request=None, mem_limit=None)
            specs.append(spec)
        return specs

    def add_pod(w: dict[str, Any], wi: int, name: str, owner_kind: str, owner_name: str, first: int,
                last: int) -> None:
        nonlocal running
        node = nodes[_key(seed, name) % len(nodes)]
        pods.append(Pod(w["namespace"], name, node, owner_kind, owner_name, wi, first, last))
        for spec in w["containers"]:
            prestart = spec["cpu_mean"] * 3600 * (1 + _key(seed, name, "up") % 200) if first == 0 else 0.0
            containers.append(Container(
                w["namespace"], name, spec["name"], node, wi, first, last, spec["profile"], spec["cpu_request"],
                spec["cpu_limit"], spec["mem_request"], spec["mem_limit"], spec["cpu_mean"], spec["diurnal"],
                spec["noise"], spec["spike_rate"], spec["mem_base"], spec["oom_period"], prestart,
                _key(seed, w["namespace"], name, spec["name"])))
            if last == n - 1:
                running += 1

    for ds in range(DAEMONSETS):
        w = {"namespace": "kube-system", "kind": "DaemonSet", "name": f"node-agent-{ds}", "replicas": NODES,
             "n_containers": 1, "hpa": False}
        w["containers"] = containers_for(w)
        workloads.append(w)
        for node in nodes:
            add_pod(w, len(workloads) - 1, f"{w['name']}-{_suffix(5, seed, w['name'], node)}", "DaemonSet",
                    w["name"], 0, n - 1)
            pods[-1].node = node
            for c in containers[-w["n_containers"]:]:
                c.node = node

    i = 0
    while running < target:
        i += 1
        ns = namespaces[int(rng.integers(0, len(namespaces)))]
        kind = str(rng.choice(list(KINDS), p=list(KINDS.values())))
        replicas = {"Deployment": int(rng.choice((1, 2, 2, 3, 3, 4, 6))), "StatefulSet": int(rng.integers(1, 4)),
                    "Job": 1, "Pod": 1}[kind]
        name = f"svc-{i:04d}" if kind != "Job" else f"batch-{i:04d}"
        w = {"namespace": ns, "kind": kind, "name": name, "replicas": replicas,
             "n_containers": 1 if rng.random() < 0.65 else 2, "hpa": kind == "Deployment" and rng.random() < 0.05}
        w["containers"] = containers_for(w)
        short = rng.random() < 0.02  # created six hours before the end
        created = n - 1 - 6 * 3600 // interval if short else 0
        w["created"] = created
        workloads.append(w)
        wi = len(workloads) - 1
        if kind == "Deployment":
            rs0 = f"{name}-{_suffix(10, seed, ns, name, 0)}"
            replicasets.append((ns, rs0, name, created))
            churn = int(n * rng.uniform(0.3, 0.8)) if (not short and rng.random() < 0.1) else None
            w["churn"] = churn
            for r in range(replicas):
                if churn is None:
                    add_pod(w, wi, f"{rs0}-{_suffix(5, seed, ns, name, 0, r)}", "ReplicaSet", rs0, created, n - 1)
                else:
                    rs1 = f"{name}-{_suffix(10, seed, ns, name, 1)}"
                    if r == 0:
                        replicasets.append((ns, rs1, name, churn - 2))
                    add_pod(w, wi, f"{rs0}-{_suffix(5, seed, ns, name, 0, r)}", "ReplicaSet", rs0, 0, churn)
                    add_pod(w, wi, f"{rs1}-{_suffix(5, seed, ns, name, 1, r)}", "ReplicaSet", rs1, churn - 2, n - 1)
        elif kind == "StatefulSet":
            for r in range(replicas):
                add_pod(w, wi, f"{name}-{r}", "StatefulSet", name, created, n - 1)
        elif kind == "Job":
            add_pod(w, wi, f"{name}-{_suffix(5, seed, ns, name)}", "Job", name, created, n - 1)
        else:
            add_pod(w, wi, name, "<none>", "<none>", created, n - 1)

    picks = np.random.default_rng(seed + 1).choice(len(containers), size=min(TRUTH_SAMPLE, len(containers)),
                                                   replace=False)
    return World(interval, seed, start, END, workloads, pods, containers, replicasets, sorted(int(p) for p in picks))


# ---------------------------------------------------------------- the usage model, per window


@dataclass
class _State:
    counter: np.ndarray  # CPU counter after the last written sample
    restarts: np.ndarray


def _window_values(world: World, idx: np.ndarray, k0: int, k1: int, state: _State
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Usage (cores), CPU counter, working set and restart count of containers ``idx`` over samples [k0, k1)."""
    cs = [world.containers[i] for i in idx]
    k = np.arange(k0, k1)
    minutes = k * (world.interval / 60.0)
    daily = -np.cos(minutes * (2 * np.pi / 1440))
    keys = np.array([c.key for c in cs], dtype=np.uint64)
    mean = np.array([c.cpu_mean for c in cs])[:, None]
    usage = mean * (1 + np.array([c.diurnal for c in cs])[:, None] * daily[None, :]) * (
        1 + np.array([c.noise for c in cs])[:, None] * _normal(keys ^ np.uint64(1), k))
    spike = np.array([c.spike_rate for c in cs])
    if spike.any():
        slot = (k * world.interval) // 600
        burst = _uniform(keys ^ np.uint64(2), slot) < spike[:, None]
        usage = usage + burst * 5.0 * mean * (0.5 + _uniform(keys ^ np.uint64(3), slot))
    usage = np.maximum(usage, 0.02 * mean)
    limit = np.array([c.cpu_limit or np.inf for c in cs])[:, None]
    usage = np.minimum(usage, limit)
    alive = (k[None, :] >= np.array([c.first for c in cs])[:, None]) & (
        k[None, :] <= np.array([c.last for c in cs])[:, None])
    inc = np.where(alive, usage * world.interval, 0.0)
    base = np.array([c.mem_base for c in cs])[:, None]
    memory = base * (1 + 0.04 * daily[None, :]) * (1 + 0.015 * _normal(keys ^ np.uint64(4), k))
    counter = state.counter[idx][:, None] + np.cumsum(inc, axis=1)
    restarts = np.repeat(state.restarts[idx][:, None], len(k), axis=1)
    for row, c in enumerate(cs):
        if c.oom_period:
            since = k - c.first - (1 + c.key % c.oom_period)
            segment = np.where(since >= 0, since // c.oom_period + 1, 0)
            ramp = np.where(since >= 0, since % c.oom_period, since + c.oom_period) / c.oom_period
            top = 0.97 * (c.mem_limit or 4 * c.mem_base)
            memory[row] = np.minimum((c.mem_base + (top - c.mem_base) * ramp), 0.995 * top)
            restarts[row] = segment
            # A restarted container starts its CPU counter from zero again: a counter reset.
            pos = np.arange(len(k))
            starts = np.diff(np.concatenate([[state.restarts[idx[row]]], segment])) > 0
            last_reset = np.maximum.accumulate(np.where(starts, pos, -1))
            run = np.cumsum(inc[row])
            before = np.where(last_reset > 0, run[np.maximum(last_reset - 1, 0)], 0.0)
            counter[row] = np.where(last_reset >= 0, run - before, state.counter[idx[row]] + run)
        elif c.mem_limit:
            memory[row] = np.minimum(memory[row], 0.9 * c.mem_limit)
    memory = np.round(memory)
    last = np.minimum(np.array([c.last for c in cs]), k1 - 1) - k0
    has = last >= 0
    state.counter[idx[has]] = counter[has, last[has]]
    state.restarts[idx[has]] = restarts[has, last[has]]
    return usage, counter, memory, restarts


# ---------------------------------------------------------------- OpenMetrics byte matrices (as devstack.history)


def _digits(x: np.ndarray, width: int) -> np.ndarray:
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((x[:, None] // powers[None, :]) % 10).astype(np.uint8) + ord("0")


def _value_columns(values: np.ndarray, decimals: int) -> np.ndarray:
    if decimals == 0:
        ints = np.round(values).astype(np.int64)
        return _digits(ints, len(str(int(ints.max()))) if len(ints) else 1)
    scale = 10 ** decimals
    scaled = np.round(values * scale).astype(np.int64)
    whole = scaled // scale
    dot = np.full((len(values), 1), ord("."), np.uint8)
    return np.concatenate([_digits(whole, len(str(int(whole.max())))), dot, _digits(scaled % scale, decimals)], 1)


def _rows(prefix: str, values: np.ndarray | float, ts: np.ndarray, decimals: int = 0) -> bytes:
    if isinstance(values, float):
        text = str(int(values)) if values == int(values) else repr(values)
        head = np.frombuffer(f"{prefix} {text}".encode(), np.uint8)
        rows = np.empty((len(ts), len(head) + ts.shape[1]), np.uint8)
        rows[:, :len(head)] = head
    else:
        vals = _value_columns(values, decimals)
        head = np.frombuffer(f"{prefix} ".encode(), np.uint8)
        rows = np.empty((len(ts), len(head) + vals.shape[1] + ts.shape[1]), np.uint8)
        rows[:, :len(head)] = head
        rows[:, len(head):len(head) + vals.shape[1]] = vals
    rows[:, rows.shape[1] - ts.shape[1]:] = ts
    return rows.tobytes()


def _labels(**labels: str) -> str:
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


def _window_lines(world: World, k0: int, k1: int, state: _State, truth: dict[int, list[np.ndarray]]
                  ) -> Iterator[bytes]:
    """Every series' OpenMetrics lines for samples [k0, k1)."""
    ts_all = world.start + world.interval * np.arange(k0, k1, dtype=np.int64)
    ts = np.concatenate([np.full((len(ts_all), 1), ord(" "), np.uint8), _digits(ts_all, 10),
                         np.full((len(ts_all), 1), ord("\n"), np.uint8)], axis=1)
    idx = np.array([i for i, c in enumerate(world.containers) if c.first < k1 and c.last >= k0], dtype=np.int64)
    wanted = set(world.truth_sample)
    for lo in range(0, len(idx), 2000):  # bounded memory: 2,000 containers at a time
        part = idx[lo:lo + 2000]
        usage, counter, memory, restarts = _window_values(world, part, k0, k1, state)
        for row, ci in enumerate(part):
            c = world.containers[ci]
            a, b = max(c.first, k0) - k0, min(c.last, k1 - 1) - k0
            if ci in wanted:
                truth.setdefault(int(ci), []).append(np.stack([usage[row, a:b + 1], memory[row, a:b + 1],
                                                               (restarts[row, a:b + 1])]))
            t = ts[a:b + 1]
            cad = _labels(container=c.name, instance=f"{c.node}:10250", job="kubelet", namespace=c.namespace,
                          node=c.node, pod=c.pod)
            yield _rows(f"container_cpu_usage_seconds_total{{{cad}}}", counter[row, a:b + 1], t, 3)
            yield _rows(f"container_memory_working_set_bytes{{{cad}}}", memory[row, a:b + 1], t)
            ksm = f'container="{c.name}",{KSM},namespace="{c.namespace}",node="{c.node}",pod="{c.pod}"'
            for metric, cpu, mem in (("kube_pod_container_resource_requests", c.cpu_request, c.mem_request),
                                     ("kube_pod_container_resource_limits", c.cpu_limit, c.mem_limit)):
                if cpu is not None:
                    yield _rows(f'{metric}{{{ksm},resource="cpu",unit="core"}}', float(cpu), t)
                if mem is not None:
                    yield _rows(f'{metric}{{{ksm},resource="memory",unit="byte"}}', float(mem), t)
            r = restarts[row, a:b + 1].astype(np.float64)
            yield _rows(f"kube_pod_container_status_restarts_total{{{ksm}}}",
                        float(r[0]) if r.min() == r.max() else r, t)
            if c.oom_period and r.max() > 0:
                first_oom = int(np.argmax(r > 0))
                yield _rows(f'kube_pod_container_status_last_terminated_reason{{{ksm},reason="OOMKilled"}}', 1.0,
                            t[first_oom:])
    for p in world.pods:
        if p.first < k1 and p.last >= k0:
            t = ts[max(p.first, k0) - k0:min(p.last, k1 - 1) - k0 + 1]
            yield _rows(f'kube_pod_owner{{{KSM},namespace="{p.namespace}",owner_is_controller="true",'
                        f'owner_kind="{p.owner_kind}",owner_name="{p.owner_name}",pod="{p.name}"}}', 1.0, t)
    for ns, rs, deployment, first in world.replicasets:
        if first < k1:
            t = ts[max(first, k0) - k0:]
            yield _rows(f'kube_replicaset_owner{{{KSM},namespace="{ns}",owner_is_controller="true",'
                        f'owner_kind="Deployment",owner_name="{deployment}",replicaset="{rs}"}}', 1.0, t)
    for w in world.workloads:
        first = w.get("created", 0)
        if first >= k1:
            continue
        t = ts[max(first, k0) - k0:]
        ns, name, replicas = w["namespace"], w["name"], float(w["replicas"])
        metric = {"Deployment": ("kube_deployment_spec_replicas", "deployment"),
                  "StatefulSet": ("kube_statefulset_replicas", "statefulset"),
                  "DaemonSet": ("kube_daemonset_status_desired_number_scheduled", "daemonset"),
                  "Job": ("kube_job_status_active", "job_name")}.get(w["kind"])
        if metric:
            yield _rows(f'{metric[0]}{{{KSM},namespace="{ns}",{metric[1]}="{name}"}}', replicas, t)
        if w.get("hpa"):
            yield _rows(f'kube_horizontalpodautoscaler_info{{horizontalpodautoscaler="{name}",{KSM},'
                        f'namespace="{ns}",scaletargetref_kind="Deployment",scaletargetref_name="{name}"}}', 1.0, t)


# ---------------------------------------------------------------- build and cache


def _scratch(need: int) -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > need:
        return Path(tempfile.mkdtemp(prefix="bench-rightsizing-", dir=shm))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="tmp-", dir=OUT_DIR))


def _promtool(path: Path, out: Path) -> None:
    proc = subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                           "--max-block-duration=24h", str(path), str(out)], capture_output=True, text=True)
    path.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"promtool failed on {path.name}: {proc.stderr[-2000:]}")


@dataclass
class BuildStats:
    lines: int
    bytes: int
    seconds: float
    windows: int


def write_blocks(world: World, data_dir: Path, k_range: tuple[int, int] | None = None, workers: int = 2,
                 log: Any = print) -> tuple[BuildStats, dict[int, list[np.ndarray]]]:
    """OpenMetrics per 6 h window → promtool blocks in ``data_dir``; returns stats and the truth sample arrays."""
    t0 = time.monotonic()
    k_lo, k_hi = k_range or (0, world.samples)
    per_window = WINDOW_SECONDS // world.interval
    state = _State(np.array([c.prestart for c in world.containers]), np.zeros(len(world.containers)))
    truth: dict[int, list[np.ndarray]] = {}
    data_dir.mkdir(parents=True, exist_ok=True)
    scratch = _scratch(need=12 * 2**30)
    lines = size = 0
    slots = threading.Semaphore(max(1, workers - 1))  # one promtool while Python writes, `workers` after

    def convert(path: Path) -> None:
        with slots:
            _promtool(path, data_dir)

    futures: list[Future[None]] = []
    windows = 0
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for k0 in range(k_lo, k_hi, per_window):
                k1 = min(k0 + per_window, k_hi)
                path = scratch / f"w{k0:07d}.om"
                with open(path, "wb", buffering=0) as fh:
                    for chunk in _window_lines(world, k0, k1, state, truth):
                        fh.write(chunk)
                        lines += chunk.count(b"\n")
                        size += len(chunk)
                    fh.write(b"# EOF\n")
                windows += 1
                # Never more than two files waiting: /dev/shm is RAM.
                while sum(not f.done() for f in futures) >= workers:
                    time.sleep(0.2)
                futures.append(pool.submit(convert, path))
                log(f"  window {windows}: samples {k0}-{k1} written ({size / 2**30:.1f} GiB so far, "
                    f"{time.monotonic() - t0:.0f} s)")
            if workers > 1:
                slots.release()
            for f in futures:
                f.result()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return BuildStats(lines, size, time.monotonic() - t0, windows), truth


def measure(workers: int = 2, log: Any = print) -> dict[str, float]:
    """Time a slice (a tenth of the containers, one day, 60 s scrape) and extrapolate the full 60 s build."""
    full = build_world(60)
    part = build_world(60, target=TARGET_CONTAINERS // 10)
    with tempfile.TemporaryDirectory(dir=OUT_DIR if OUT_DIR.exists() else None) as tmp:
        day = 86400 // 60
        stats, _ = write_blocks(part, Path(tmp) / "data", (part.samples - day - 1, part.samples - 1), workers,
                                log=lambda *_: None)
    ratio = (len(full.containers) / len(part.containers)) * (full.samples / day)
    predicted = stats.seconds * ratio * 1.15  # +15 %: Prometheus' compaction of the blocks afterwards
    out = {"slice_lines": stats.lines, "slice_seconds": round(stats.seconds, 1),
           "predicted_lines_60s": int(stats.lines * ratio), "predicted_seconds_60s": round(predicted)}
    log(f"measured slice: {stats.lines:,} lines in {stats.seconds:.1f} s → full 60 s build ≈ "
        f"{predicted / 60:.0f} min ({out['predicted_lines_60s']:,} samples)")
    return out


def choose_interval(measurement: dict[str, float]) -> int:
    return 60 if measurement["predicted_seconds_60s"] <= BUILD_BUDGET_SECONDS else 300


def _truth_stats(world: World, truth: dict[int, list[np.ndarray]]) -> list[dict[str, Any]]:
    """Exact statistics of the sampled containers: CPU 5-minute rates (as rate()[5m]), memory max."""
    out = []
    w = max(1, RATE_WINDOW_SECONDS // world.interval)
    for ci in sorted(truth):
        c = world.containers[ci]
        arr = np.concatenate(truth[ci], axis=1)
        usage, memory = arr[0], arr[1]
        csum = np.concatenate([[0.0], np.cumsum(usage)])
        rates = (csum[w + 1:] - csum[1:-w]) / w if len(usage) > w else np.empty(0)
        out.append({"namespace": c.namespace, "pod": c.pod, "container": c.name, "profile": c.profile,
                    "cpu_p95": float(np.quantile(rates, 0.95)) if len(rates) else None,
                    "cpu_max": float(rates.max()) if len(rates) else None,
                    "memory_max": float(memory.max()), "restarts": int(arr[2].max() - arr[2].min())})
    return out


def truth_at(world: World, rate_window_seconds: int) -> dict[tuple[str, str, str], dict[str, float]]:
    """Exact statistics of the sampled containers for a given rate window (recomputed: the model is a pure
    function of the container and the sample index). Keys (namespace, pod, container)."""
    idx = np.array(world.truth_sample, dtype=np.int64)
    state = _State(np.array([c.prestart for c in world.containers]), np.zeros(len(world.containers)))
    usage: list[np.ndarray] = []
    memory: list[np.ndarray] = []
    per = WINDOW_SECONDS // world.interval
    for k0 in range(0, world.samples, per):
        u, _, m, _ = _window_values(world, idx, k0, min(k0 + per, world.samples), state)
        usage.append(u)
        memory.append(m)
    u_all, m_all = np.concatenate(usage, axis=1), np.concatenate(memory, axis=1)
    w = max(1, rate_window_seconds // world.interval)
    out = {}
    for row, ci in enumerate(idx):
        c = world.containers[ci]
        u = u_all[row, c.first:c.last + 1]
        csum = np.concatenate([[0.0], np.cumsum(u)])
        rates = (csum[w + 1:] - csum[1:-w]) / w if len(u) > w else np.empty(0)
        if len(rates):
            out[(c.namespace, c.pod, c.name)] = {"cpu_p95": float(np.quantile(rates, 0.95)),
                                                  "cpu_max": float(rates.max()),
                                                  "memory_max": float(m_all[row, c.first:c.last + 1].max())}
    return out


def cache_dir(interval: int, seed: int = 7, target: int = TARGET_CONTAINERS) -> Path:
    size = "" if target == TARGET_CONTAINERS else f"-{target}c"
    return OUT_DIR / f"rightsizing-{interval}s{size}-seed{seed}"


def ensure_tsdb(interval: int, seed: int = 7, workers: int = 2, log: Any = print,
                target: int = TARGET_CONTAINERS) -> tuple[Path, dict[str, Any]]:
    """The cached TSDB for ``interval`` (built when missing); returns its data dir and world.json."""
    root = cache_dir(interval, seed, target)
    meta_path = root / "world.json"
    if meta_path.exists():
        return root / "data", json.loads(meta_path.read_text())
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    world = build_world(interval, seed, target)
    log(f"building {len(world.containers):,} container histories ({world.samples:,} samples each at "
        f"{interval} s) into {root}")
    stats, truth = write_blocks(world, root / "data", workers=workers, log=log)
    t = time.monotonic()
    compact(root / "data", log)
    compact_seconds = time.monotonic() - t
    running = [c for c in world.containers if c.last == world.samples - 1]
    meta = {
        "interval": interval, "seed": seed, "target": target, "start": world.start, "end": world.end, "days": DAYS,
        "containers_running_at_end": len(running), "container_series": len(world.containers),
        "pods": len(world.pods), "workloads": len(world.workloads),
        "namespaces": sorted({w["namespace"] for w in world.workloads}),
        "workload_containers": sum(w["n_containers"] for w in world.workloads),
        "build": {"lines": stats.lines, "bytes": stats.bytes, "seconds": round(stats.seconds, 1),
                  "compact_seconds": round(compact_seconds, 1), "windows": stats.windows},
        "truth": _truth_stats(world, truth),
        "workload_list": [{"namespace": w["namespace"], "kind": w["kind"], "name": w["name"],
                           "replicas": w["replicas"], "containers": len(w["containers"])} for w in world.workloads],
    }
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return root / "data", meta


def compact(data_dir: Path, log: Any = print, timeout: float = 3600) -> None:
    """Start Prometheus on the blocks once so it compacts them (as it would in production), then stop it."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = data_dir.parent / "compact.yml"
    cfg.write_text("global: {scrape_interval: 1h}\n")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={data_dir}",
                             "--storage.tsdb.retention.time=3650d", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=open(data_dir.parent / "compact.log", "wb"))  # noqa: SIM115
    try:
        deadline = time.monotonic() + timeout
        stable_since, last = time.monotonic(), None
        while time.monotonic() < deadline:
            time.sleep(5)
            blocks = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and len(p.name) == 26)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                running = next((float(line.split()[-1]) for line in text.splitlines()
                                if line.startswith("prometheus_tsdb_compactions_total ")), 0.0)
            except OSError:
                continue
            if (blocks, running) != last:
                stable_since, last = time.monotonic(), (blocks, running)
                log(f"  compaction: {len(blocks)} blocks, {running:.0f} compactions")
            elif time.monotonic() - stable_since > 75:  # the compactor runs once a minute
                return
    finally:
        proc.terminate()
        proc.wait(60)


def expected_minutes(measurement: dict[str, float], interval: int) -> float:
    return measurement["predicted_seconds_60s"] * (60 / interval) / 60


if __name__ == "__main__":  # python bench/rightsizing_data.py [measure|build INTERVAL]
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "build":
        print(ensure_tsdb(int(sys.argv[2]))[1]["build"])
    else:
        m = measure()
        print(m, "→", choose_interval(m), "s", f"({math.ceil(expected_minutes(m, choose_interval(m)))} min)")
