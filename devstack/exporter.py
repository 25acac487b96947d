"""Live synthetic exporter: application metrics plus the current values of the world's k8s series.

Run as ``python -m devstack.exporter --port 19101 --seed 42 --history-start <unix> --history-minutes 5760
--replicas 4``. Endpoints (Prometheus scrapes each as its own job, ``honor_labels: true`` for the k8s ones):
- ``/metrics``                    application metrics (job ``apps``), static label sets, values move with time;
- ``/metrics/cadvisor``           ``container_*`` series of running pods (labels job=kubelet, instance=<node>:10250);
- ``/metrics/kube-state-metrics`` ``kube_*`` series (labels job=kube-state-metrics);
- ``/healthz``.

Replicas. A real service runs as several pods, each scraped as its own target (same port, its own pod IP), so
every application series exists once per pod and a dashboard's ``sum by (le, route)`` folds them. The exporter
plays ``--replicas`` pods (``APP_REPLICAS`` by default): replica ``r`` listens on ``127.0.0.<r+1>`` at the same
port (Linux routes all of 127.0.0.0/8 to loopback; never 0.0.0.0) and serves the whole ``/metrics`` — every
application family is per replica, with the same label sets (Prometheus adds ``instance``); a replica's values
are a deterministic function of (seed, replica, time): its counters carry a share of the service's traffic (the
shares of a service's replicas differ, within ±20 % of an even split, and add up to the whole) and its gauges their
own deterministic noise (so per-pod gauges such as ``shop_cart_items`` or ``kafka_consumer_lag`` add up over the
replicas: a simplification — each pod reports every label set). With one replica the values are exactly those of
the single exporter before replicas.
The k8s endpoints are served on ``127.0.0.1`` only (one kubelet/kube-state-metrics target each, as before).

The k8s values continue the backfilled history's model (:class:`devstack.workloads.World`) at wall-clock
time, so head and history join without a seam. Application label sets depend only on the seed:
- ``shop_cart_items`` carries the one high-cardinality label, ``session_id``, that nothing queries;
- ``legacy_cache_evictions_total`` is the one metric nothing references at all.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from devstack.workloads import COUNTER_METRICS, GRID_SECONDS, NAMESPACE_TEAMS, World, build_world, stable_key

UNUSED_METRIC = "legacy_cache_evictions_total"
HIGH_CARDINALITY_METRIC = "shop_cart_items"
HIGH_CARDINALITY_LABEL = "session_id"
APP_JOB = "apps"
CADVISOR_PATH = "/metrics/cadvisor"
KSM_PATH = "/metrics/kube-state-metrics"
APP_PATH = "/metrics"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# service -> (namespace, [(route, methods)])
HTTP_SERVICES: dict[str, tuple[str, list[tuple[str, tuple[str, ...]]]]] = {
    "checkout-api": ("checkout", [("/api/checkout", ("GET", "POST")), ("/api/checkout/{id}", ("GET",)),
                                  ("/api/checkout/{id}/confirm", ("POST",)), ("/healthz", ("GET",))]),
    "cart-service": ("checkout", [("/api/cart", ("GET",)), ("/api/cart/items", ("GET", "POST")),
                                  ("/api/cart/items/{id}", ("DELETE",))]),
    "checkout-frontend": ("checkout", [("/", ("GET",)), ("/cart", ("GET",)), ("/checkout", ("GET",))]),
    "payments-api": ("payments", [("/v1/payments", ("POST",)), ("/v1/payments/{id}", ("GET",)),
                                  ("/v1/payments/{id}/capture", ("POST",))]),
    "payments-gateway": ("payments", [("/v1/authorize", ("POST",)), ("/v1/settle", ("POST",))]),
    "refunds-api": ("payments", [("/v1/refunds", ("GET", "POST")), ("/v1/refunds/{id}", ("GET",))]),
    "catalog-api": ("catalog", [("/api/products", ("GET",)), ("/api/products/{id}", ("GET", "PUT")),
                                ("/api/categories", ("GET",))]),
    "pricing-service": ("catalog", [("/api/prices", ("GET",)), ("/api/prices/bulk", ("POST",))]),
    "search-api": ("search", [("/search", ("GET",)), ("/search/suggest", ("GET",)), ("/search/facets", ("GET",))]),
    "query-suggest": ("search", [("/suggest", ("GET",))]),
}
WORKER_QUEUES = {  # service -> (namespace, queues)
    "checkout-worker": ("checkout", ("orders", "emails")),
    "order-events-consumer": ("checkout", ("order-events",)),
    "fraud-scorer": ("payments", ("fraud-checks",)),
    "etl-runner": ("data-pipeline", ("ingest", "transform")),
    "events-enricher": ("data-pipeline", ("enrich",)),
}
DB_SERVICES = {"checkout-api": "checkout", "payments-api": "payments", "refunds-api": "payments",
               "catalog-api": "catalog", "pricing-service": "catalog", "inventory-sync": "catalog"}
KAFKA_GROUPS = {  # consumer group -> (namespace, topic, partitions)
    "order-events-consumer": ("checkout", "orders", 12),
    "events-enricher": ("data-pipeline", "clickstream", 12),
    "etl-runner": ("data-pipeline", "cdc.catalog", 6),
}
CACHE_SERVICES = ("checkout-api", "cart-service", "catalog-api", "pricing-service", "search-api", "payments-api")
CACHE_NAMES = ("sessions", "products", "prices", "tokens")
CART_SESSIONS = 1000  # distinct session_id values on shop_cart_items
APP_REPLICAS = 4  # pods per application service: targets of the `apps` job (127.0.0.1 … 127.0.0.<n>, same port)
REPLICA_SPREAD = 0.4  # a replica's traffic share is 1/n × (1 ± REPLICA_SPREAD/2) before the shares are normalised


def replica_host(replica: int) -> str:
    """The loopback address replica ``replica`` (0-based) listens on: its "pod IP"."""
    if not 0 <= replica < 254:
        raise ValueError(f"replica {replica} out of range: the exporter plays at most 254 replicas on 127.0.0.0/24")
    return f"127.0.0.{replica + 1}"


def app_targets(port: int, replicas: int = APP_REPLICAS) -> list[str]:
    """``host:port`` of every replica: the `apps` job's targets, i.e. its ``instance`` label values."""
    return [f"{replica_host(r)}:{port}" for r in range(replicas)]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels_text(labels: tuple[tuple[str, str], ...]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}" if labels else ""


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf"
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(float(value))


def _hash01(key: int, idx: int) -> float:
    """Deterministic uniform [0, 1) for ``(key, idx)``."""
    return stable_key(key, idx) / 2.0**63


def _pool_value(key: int, size: int, state: str) -> Callable[[float], float]:
    def value(t: float) -> float:
        used = int(size * 0.8 * _hash01(key, int(t // 30)))
        return float(used if state == "in_use" else size - used)
    return value


# ---------------------------------------------------------------- application metrics


@dataclass(frozen=True)
class AppSeries:
    name: str  # sample name (histograms: *_bucket / *_sum / *_count)
    labels: tuple[tuple[str, str], ...]
    value: Callable[[float], float]  # seconds since the history start -> value


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    help: str
    series: tuple[AppSeries, ...]


@dataclass(frozen=True)
class _Traffic:
    """A request counter: ``rate * (1 + amplitude sin)`` per second, integrated (monotonic); ``over`` computes
    it for an array of times (the latency history) with numpy, ``__call__`` for one time (the live scrape)."""

    rate: float
    amplitude: float
    period: float = 86400.0

    def __call__(self, t: float) -> float:
        return self.rate * (t + self.amplitude * self.period / (2 * math.pi) *
                            (1 - math.cos(2 * math.pi * t / self.period)))

    def over(self, t: np.ndarray) -> np.ndarray:
        return np.asarray(self.rate * (t + self.amplitude * self.period / (2 * math.pi) *
                                       (1 - np.cos(2 * math.pi * t / self.period))))


def _traffic(rate: float, amplitude: float) -> _Traffic:
    return _Traffic(rate, amplitude)


@dataclass(frozen=True)
class HistogramPart:
    """One series of the latency histogram as a function of time: ``floor(total × share)`` for a bucket (share =
    the fraction of requests under ``le``) or the count (share 1), ``round(total × mean, 3)`` for the sum."""

    total: _Traffic
    factor: float
    is_sum: bool = False

    def __call__(self, t: float) -> float:
        if self.is_sum:
            return round(self.total(t) * self.factor, 3)
        return math.floor(self.total(t) * self.factor)

    def over(self, t: np.ndarray) -> np.ndarray:
        """The same at every time of ``t`` (seconds since the history start)."""
        values = self.total.over(t) * self.factor
        return np.round(values, 3) if self.is_sum else np.floor(values)


def _lbl(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def replica_share(seed: int, service: str, replica: int, replicas: int) -> float:
    """The share of ``service``'s traffic replica ``replica`` serves: the shares of its replicas differ
    (deterministically, by seed and service) and add up to 1; exactly 1 for a single replica."""
    if replicas == 1:
        return 1.0
    weights = [1 + REPLICA_SPREAD * (_hash01(stable_key(seed, service, "replica-share"), r) - 0.5)
               for r in range(replicas)]
    return weights[replica] / sum(weights)


def _rkey(key: int, replica: int) -> int:
    """A gauge's noise key for ``replica``: replica 0 keeps the single exporter's key, the others get their own."""
    return key if replica == 0 else stable_key(key, "replica", replica)


def app_families(seed: int, replica: int = 0, replicas: int = APP_REPLICAS) -> list[Family]:
    """Every application metric family as replica ``replica`` of ``replicas`` serves it: label sets depend only on
    ``seed`` (the same on every replica), values on (seed, replica, time)."""
    if not 0 <= replica < replicas:
        raise ValueError(f"replica {replica} is not one of {replicas} replicas")
    rng = np.random.default_rng(seed + 1)

    def share(service: str) -> float:
        return replica_share(seed, service, replica, replicas)
    families: list[Family] = []

    requests: list[AppSeries] = []
    latency: list[AppSeries] = []
    in_flight: list[AppSeries] = []
    build: list[AppSeries] = []
    for service, (ns, routes) in HTTP_SERVICES.items():
        team = NAMESPACE_TEAMS[ns]
        svc_rate = float(rng.uniform(5, 80))
        for route, methods in routes:
            for method in methods:
                rate = svc_rate * float(rng.uniform(0.2, 1.0))
                total = _traffic(rate * share(service), float(rng.uniform(0.3, 0.6)))
                base = _lbl(namespace=ns, service=service, route=route, method=method, team=team)
                codes = ["200", "500"] + (["404"] if method == "GET" else ["400"])
                if rng.random() < 0.4:
                    codes.append("503")
                error_share = float(rng.uniform(0.002, 0.03))
                shares = {"200": 1.0 - error_share * len(codes[1:])} | {c: error_share for c in codes[1:]}
                for code in sorted(codes):
                    requests.append(AppSeries("http_requests_total", _lbl(status_code=code, **dict(base)),
                                              lambda t, f=total, s=shares[code]: math.floor(f(t) * s)))
                median = float(rng.uniform(0.01, 0.3))
                sigma = float(rng.uniform(0.5, 1.1))
                for le in (*LATENCY_BUCKETS, math.inf):
                    frac = 1.0 if math.isinf(le) else 0.5 * (1 + math.erf(math.log(le / median) / (sigma * 2**0.5)))
                    latency.append(AppSeries("http_request_duration_seconds_bucket",
                                             _lbl(le=_fmt(le) if not math.isinf(le) else "+Inf", **dict(base)),
                                             HistogramPart(total, frac)))
                mean = median * math.exp(sigma**2 / 2)
                latency.append(AppSeries("http_request_duration_seconds_sum", base,
                                         HistogramPart(total, mean, is_sum=True)))
                latency.append(AppSeries("http_request_duration_seconds_count", base, HistogramPart(total, 1.0)))
        key = _rkey(stable_key(seed, service, "inflight"), replica)
        busy = svc_rate * share(service)
        in_flight.append(AppSeries(
            "http_requests_in_flight", _lbl(namespace=ns, service=service, team=team),
            lambda t, k=key, r=busy: float(int(r * 0.05 * (0.5 + _hash01(k, int(t // 15)))))))
        version = f"v1.{int(rng.integers(0, 40))}.{int(rng.integers(0, 9))}"
        build.append(AppSeries("app_build_info", _lbl(namespace=ns, service=service, team=team, version=version),
                               lambda t: 1.0))
    families += [
        Family("http_requests_total", "counter", "HTTP requests served.", tuple(requests)),
        Family("http_request_duration_seconds", "histogram", "HTTP request latency.", tuple(latency)),
        Family("http_requests_in_flight", "gauge", "HTTP requests being served.", tuple(in_flight)),
        Family("app_build_info", "gauge", "Build of the running service.", tuple(build)),
    ]

    depth: list[AppSeries] = []
    processed: list[AppSeries] = []
    for service, (ns, queues) in WORKER_QUEUES.items():
        team = NAMESPACE_TEAMS[ns]
        for queue in queues:
            key = _rkey(stable_key(seed, service, queue, "depth"), replica)
            base = _lbl(namespace=ns, service=service, queue=queue, team=team)
            depth.append(AppSeries("worker_queue_depth", base,
                                   lambda t, k=key: float(int(40 * _hash01(k, int(t // 60)) ** 3 * 30))))
            rate = float(rng.uniform(1, 20))
            for status, status_share in (("success", 0.97), ("failed", 0.01), ("retried", 0.02)):
                total = _traffic(rate * status_share * share(service), 0.4)
                processed.append(AppSeries("worker_jobs_processed_total", _lbl(status=status, **dict(base)),
                                           lambda t, f=total: math.floor(f(t))))
    families += [
        Family("worker_queue_depth", "gauge", "Jobs waiting in the queue.", tuple(depth)),
        Family("worker_jobs_processed_total", "counter", "Jobs processed by outcome.", tuple(processed)),
    ]

    pools: list[AppSeries] = []
    for service, ns in DB_SERVICES.items():
        size = int(rng.choice((10, 20, 50)))
        for pool in ("primary", "replica"):
            key = _rkey(stable_key(seed, service, pool, "pool"), replica)
            for state in ("idle", "in_use"):
                pools.append(AppSeries(
                    "db_pool_connections",
                    _lbl(namespace=ns, service=service, pool=pool, state=state, team=NAMESPACE_TEAMS[ns]),
                    _pool_value(key, size, state)))
    families.append(Family("db_pool_connections", "gauge", "Database pool connections by state.", tuple(pools)))

    lag: list[AppSeries] = []
    for group, (ns, topic, partitions) in KAFKA_GROUPS.items():
        for partition in range(partitions):
            key = _rkey(stable_key(seed, group, topic, partition), replica)
            lag.append(AppSeries("kafka_consumer_lag",
                                 _lbl(namespace=ns, consumergroup=group, topic=topic, partition=str(partition),
                                      team=NAMESPACE_TEAMS[ns]),
                                 lambda t, k=key: float(int(2000 * _hash01(k, int(t // 60)) ** 4))))
    families.append(Family("kafka_consumer_lag", "gauge", "Messages behind the log end, per partition.", tuple(lag)))

    # The high-cardinality label: every open cart session is its own series.
    carts: list[AppSeries] = []
    sessions = [f"{stable_key(seed, 'session', i):016x}" for i in range(CART_SESSIONS)]
    for service, carrying in (("cart-service", 1.0), ("checkout-api", 0.3)):
        for i, session in enumerate(sessions):
            if _hash01(stable_key(seed, service, "cart"), i) >= carrying:
                continue
            key = _rkey(stable_key(seed, service, session), replica)
            carts.append(AppSeries(HIGH_CARDINALITY_METRIC,
                                   _lbl(namespace="checkout", service=service, team="payments",
                                        **{HIGH_CARDINALITY_LABEL: session}),
                                   lambda t, k=key: float(1 + int(11 * _hash01(k, int(t // 300))))))
    families.append(Family(HIGH_CARDINALITY_METRIC, "gauge", "Items in an open shopping cart.", tuple(carts)))

    # The metric nobody uses.
    evictions: list[AppSeries] = []
    for service in CACHE_SERVICES:
        ns = HTTP_SERVICES[service][0]
        for cache in CACHE_NAMES:
            total = _traffic(float(rng.uniform(0.1, 3)) * share(service), 0.5)
            evictions.append(AppSeries(UNUSED_METRIC, _lbl(namespace=ns, service=service, cache=cache,
                                                           team=NAMESPACE_TEAMS[ns]),
                                       lambda t, f=total: math.floor(f(t))))
    families.append(Family(UNUSED_METRIC, "counter", "Evictions from the legacy in-process cache.",
                           tuple(evictions)))
    return families


def app_series_counts(seed: int, replicas: int = APP_REPLICAS) -> dict[str, int]:
    """Exact series count per metric NAME (histogram: the _bucket/_sum/_count names) of the `apps` job: one
    replica's ``/metrics`` (the same label sets on every replica) times ``replicas``."""
    counts: Counter[str] = Counter()
    for fam in app_families(seed, 0, replicas):
        for s in fam.series:
            counts[s.name] += replicas
    return dict(sorted(counts.items()))


def render_app(families: list[Family], t: float) -> str:
    out: list[str] = []
    for fam in families:
        out.append(f"# HELP {fam.name} {fam.help}\n# TYPE {fam.name} {fam.type}\n")
        out.extend(f"{s.name}{labels_text(s.labels)} {_fmt(s.value(t))}\n" for s in fam.series)
    return "".join(out)


# ---------------------------------------------------------------- k8s series, live


@dataclass(frozen=True)
class K8sSample:
    metric: str
    labels: tuple[tuple[str, str], ...]
    now: float  # value at grid minute k
    next: float | None  # value at k + 1 when the series continues (to interpolate counters)


def k8s_snapshot(world: World, k: int) -> list[K8sSample]:
    """Every k8s series that has a sample at grid minute ``k``."""
    out = []
    for s in world.k8s_series(k, k + 1):
        if not s.first <= k <= s.last:
            continue
        nxt = s.value_at(k + 1) if s.last >= k + 1 else None
        out.append(K8sSample(s.metric, s.labels, s.value_at(k), nxt))
    return out


def k8s_series_counts(world: World, k: int) -> dict[str, int]:
    return dict(sorted(Counter(s.metric for s in k8s_snapshot(world, k)).items()))


def render_k8s(samples: list[K8sSample], frac: float, prefix: str) -> str:
    """Exposition text of the samples whose metric starts with ``prefix``, ``frac`` of a minute past k."""
    out: list[str] = []
    for s in samples:
        if not s.metric.startswith(prefix):
            continue
        value = s.now
        if s.metric in COUNTER_METRICS and s.next is not None:
            # inside the minute a counter grows linearly; after a reset it grows from zero
            value = s.now + (s.next - s.now) * frac if s.next >= s.now else s.next * frac
        out.append(f"{s.metric}{labels_text(s.labels)} {_fmt(value)}\n")
    return "".join(out)


class Exporter:
    """The state behind the HTTP handlers: the world, every replica's app families and a per-minute k8s cache."""

    def __init__(self, seed: int, history_start: int, history_minutes: int, replicas: int = APP_REPLICAS) -> None:
        self.world = build_world(seed, history_minutes)
        self.history_start = history_start
        self.families = [app_families(seed, r, replicas) for r in range(replicas)]
        self._lock = threading.Lock()
        self._cached: tuple[int, list[K8sSample]] | None = None

    def _samples(self, k: int) -> list[K8sSample]:
        with self._lock:
            if self._cached is None or self._cached[0] != k:
                self._cached = (k, k8s_snapshot(self.world, k))
            return self._cached[1]

    def render(self, path: str, now: float | None = None, replica: int = 0) -> str | None:
        """The exposition text of ``path`` as replica ``replica`` serves it; None for a path it does not serve
        (the k8s endpoints live on replica 0's address only)."""
        now = time.time() if now is None else now
        elapsed = now - self.history_start
        if path == APP_PATH:
            return render_app(self.families[replica], elapsed)
        if path in (CADVISOR_PATH, KSM_PATH) and replica == 0:
            k, rem = divmod(elapsed, GRID_SECONDS)
            prefix = "container_" if path == CADVISOR_PATH else "kube_"
            return render_k8s(self._samples(int(k)), rem / GRID_SECONDS, prefix)
        return None


def _handler(exporter: Exporter, replica: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                body, ctype = b"ok\n", "text/plain"
            else:
                text = exporter.render(path, replica=replica)
                if text is None:
                    self.send_error(404)
                    return
                body, ctype = text.encode(), "text/plain; version=0.0.4; charset=utf-8"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per scrape would only bloat the log

    return Handler


def serve(port: int, seed: int, history_start: int, history_minutes: int, replicas: int = APP_REPLICAS) -> None:
    """Serve replica ``r`` on ``replica_host(r):port`` for every replica (all bound before any serves, so a taken
    address fails the start), until killed."""
    exporter = Exporter(seed, history_start, history_minutes, replicas)
    servers = []
    for r in range(replicas):
        server = ThreadingHTTPServer((replica_host(r), port), _handler(exporter, r))
        server.daemon_threads = True
        servers.append(server)

    def stop(signum: int, frame: object) -> None:
        # Close every listening socket before the process exits: a multi-threaded process' main thread can look
        # gone (zombie) while its other threads still hold the sockets, and `down` returns once it looks gone.
        for server in servers:
            server.socket.close()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"devstack exporter on {', '.join(f'http://{t}' for t in app_targets(port, replicas))} (seed {seed}, "
          f"history start {history_start}, {replicas} replicas; k8s endpoints on the first)", flush=True)
    servers[0].serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.exporter", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--history-start", type=int, required=True, help="unix seconds of grid minute 0")
    parser.add_argument("--history-minutes", type=int, required=True)
    parser.add_argument("--replicas", type=int, default=APP_REPLICAS,
                        help="application replicas, on 127.0.0.1 … 127.0.0.<n> at --port")
    args = parser.parse_args(argv)
    if not 1 <= args.replicas <= 254:
        parser.error(f"--replicas must be between 1 and 254, not {args.replicas}")
    serve(args.port, args.seed, args.history_start, args.history_minutes, args.replicas)


if __name__ == "__main__":
    main()
