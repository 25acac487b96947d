"""Cardinality collection against small real HTTP servers on 127.0.0.1.

A fake Prometheus answers the endpoints the collector uses from an in-memory list of label sets (so a
test can make a metric vanish or a server fail between two calls), and a fake Mimir answers the
cardinality API from the recorded ``active_series`` fixture (3,113 real label sets). The fake Mimir is
first checked to reproduce the other recorded Mimir answers byte for byte, then the collector runs
against it; expected numbers come from the recorded fixtures (user_stats, label_names, label_values).
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import promql_parser as pp
import pytest
import requests

from tests.support.mimir import (
    ACTIVE,
    FakeMimir,
    FakeServer,
    Series,
    _fixture,
    _json,
    _matches,
    _mimir_client,
    _ok,
    _select,
    expected_labels,
)
from tests.support.prometheus import prometheus_client
from traceo_finops.cardinality.collect import (
    MetricSeries,
    SourceSnapshot,
    collect_mimir,
    collect_series_by_metric,
    mimir_label_series,
    mimir_series_count,
)
from traceo_finops.prometheus import PrometheusAuthError, PrometheusClient

AT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TRICKY = 'quote " back\\slash\nnewline ünï 😀 {a="b"}'




class FakePrometheus:
    """The endpoints the collector uses, answered from ``self.series`` (mutable between calls).

    ``before(path, query)`` runs before each answer (to mutate the series); ``fail(path, query)`` may
    return an error answer instead.
    """

    def __init__(self, series: list[Series]) -> None:
        self.series = series
        self.before: Callable[[str, dict[str, list[str]]], None] = lambda p, q: None
        self.fail: Callable[[str, dict[str, list[str]]], tuple[int, str, bytes] | None] = lambda p, q: None
        self.server = FakeServer(self.handle)
        self.lock = threading.Lock()

    def handle(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, str, bytes]:
        with self.lock:
            self.before(path, query)
            failure = self.fail(path, query)
            if failure:
                return failure
            series = list(self.series)
        if path == "/api/v1/status/tsdb":
            return _ok(self.tsdb(series))
        if path == "/api/v1/query":
            return _ok({"resultType": "vector", "result": self.count(series, query["query"][0])})
        chosen = series
        if "match[]" in query:
            chosen = [s for sel in query["match[]"] for s in _select(series, sel)]
        if path == "/api/v1/labels":
            return _ok(sorted({k for s in chosen for k in s}))
        label = re.fullmatch(r"/api/v1/label/(.+)/values", path)
        if label:
            return _ok(sorted({s[label.group(1)] for s in chosen if label.group(1) in s}))
        return 404, "text/plain", b"404 page not found\n"

    @staticmethod
    def tsdb(series: list[Series]) -> dict[str, Any]:
        names = Counter(s["__name__"] for s in series)
        values: dict[str, set[str]] = {}
        for s in series:
            for k, v in s.items():
                values.setdefault(k, set()).add(v)

        def top(counter: dict[str, int]) -> list[dict[str, Any]]:
            return [{"name": k, "value": v} for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]

        return {"headStats": {"numSeries": len(series), "numLabelPairs": sum(len(v) for v in values.values()),
                              "chunkCount": len(series), "minTime": 0, "maxTime": 1},
                "seriesCountByMetricName": top(names),
                "labelValueCountByLabelName": top({k: len(v) for k, v in values.items()}),
                "memoryInBytesByLabelName": top({k: sum(map(len, v)) for k, v in values.items()}),
                "seriesCountByLabelValuePair": top(Counter(f"{k}={v}" for s in series for k, v in s.items()))}

    @staticmethod
    def count(series: list[Series], promql: str) -> list[dict[str, Any]]:
        node = pp.parse(promql)
        assert isinstance(node, pp.AggregateExpr) and str(node.op).lower().endswith("count"), promql
        assert list(node.modifier.labels) == ["__name__"], promql
        counts = Counter(s["__name__"] for s in series if _matches(s, list(node.expr.matchers.matchers)))
        return [{"metric": {"__name__": k}, "value": [AT.timestamp(), str(v)]} for k, v in counts.items()]


@pytest.fixture
def fake_prom():
    fakes: list[FakePrometheus] = []

    def make(series: list[Series]) -> FakePrometheus:
        fakes.append(FakePrometheus(series))
        return fakes[-1]

    yield make
    for f in fakes:
        f.server.close()


def _client(url: str, **extra: Any) -> PrometheusClient:
    return prometheus_client(url, "unit", retries=2, backoff_factor=0, timeout=10, **extra)


def _world() -> list[Series]:
    """Label shapes that exercise every path: per-value and per-metric labels, a one-value label, a
    label-less metric, tricky values, metric names with regex metacharacters (UTF-8 names)."""
    out: list[Series] = []
    for i in range(3):  # `code` (2 values) on 6 metrics: counted per value
        for code in ("200", "500"):
            for inst in ("a:1", "b:1"):
                out.append({"__name__": f"http_requests_{i}_total", "code": code, "instance": inst, "job": "api"})
                out.append({"__name__": f"rpc_calls_{i}_total", "code": code, "instance": inst, "job": "api",
                            "tricky": TRICKY})
    for s in range(40):  # high cardinality: counted per metric
        out.append({"__name__": "cart_items", "session_id": f"s{s:03d}", "instance": "a:1", "job": "api",
                    "tricky": TRICKY if s % 2 else "plain"})
    out.append({"__name__": "build_info", "version": "1.2.3", "job": "api", "tricky": 'only "one"\nvalue'})
    out.append({"__name__": "job:requests:sum"})  # a recording rule output without labels
    out.append({"__name__": "a.b", "job": "api"})  # UTF-8 style names: "." must not match any char
    out.append({"__name__": "axb", "job": "api"})
    out.append({"__name__": "axb", "job": "web"})
    out.append({"__name__": "q+(x)", "job": "web"})
    return out


# ---- Prometheus -------------------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("workers", [1, 2])
def test_prometheus_counts_and_labels_exact(fake_prom, workers: int) -> None:
    world = _world()
    fake = fake_prom(world)
    with _client(fake.server.url) as client:
        snap = collect_series_by_metric(client, "unit", AT, workers=workers)
    want_series = Counter(s["__name__"] for s in world)
    assert {m.metric: m.series for m in snap.metrics} == want_series
    assert {m.metric: m.labels for m in snap.metrics} == expected_labels(world)
    assert snap.head_series == len(world) == snap.series_total
    assert snap.metric("axb").series == 2 and snap.metric("a.b").series == 1
    assert snap.metric("cart_items").labels == {"instance": 1, "job": 1, "session_id": 40, "tricky": 2}
    assert snap.metric("job:requests:sum").labels == {} and snap.metric("job:requests:sum").complete
    assert abs(sum(m.share for m in snap.metrics) - 1) < 1e-12
    assert snap.metrics[0].metric == "cart_items" and snap.metrics[0].share == 40 / len(world)
    assert snap.vanished == [] and all(m.complete for m in snap.metrics)
    assert snap.flavor == "prometheus" and snap.at == AT.isoformat() and snap.method == "promql+label_values"
    assert snap.top["seriesCountByMetricName"][0] == ("cart_items", 40)
    assert snap.head is not None and snap.head.num_series == len(world)
    assert snap.queries == len(fake.server.hits)
    # Never /api/v1/series; every label request is bounded to [at - 5m, at].
    assert not fake.server.paths("/api/v1/series")
    for _path, query, _ in fake.server.paths("/api/v1/label"):
        assert float(query["end"][0]) == AT.timestamp() and float(query["start"][0]) == AT.timestamp() - 300
    # `code` (2 values, 6 metrics) went per value, with the values quoted; `session_id` per metric.
    by_value = [q["match[]"][0] for p, q, _ in fake.server.paths("/api/v1/label/__name__/values") if "match[]" in q]
    assert '{code="200"}' in by_value and '{code="500"}' in by_value
    assert '{tricky="quote \\" back\\\\slash\\nnewline ünï 😀 {a=\\"b\\"}"}' in by_value  # 3 values, 5 metrics
    assert fake.server.paths("/api/v1/label/session_id/values")[-1][1]["match[]"] == ["cart_items"]


@pytest.mark.unit
def test_prometheus_chunks_counts_and_splits_refused_chunks(fake_prom) -> None:
    world = _world()
    fake = fake_prom(world)

    def refuse_big(path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes] | None:
        if path == "/api/v1/query" and query["query"][0].count("|") >= 2:  # three or more names
            return _json({"status": "error", "errorType": "execution",
                          "error": "query processing would load too many samples into memory"}, 422)
        return None

    fake.fail = refuse_big
    with _client(fake.server.url) as client:
        snap = collect_series_by_metric(client, "unit", AT, labels=False, max_series_per_query=45,
                                        metric_chunk_size=4)
    assert {m.metric: m.series for m in snap.metrics} == Counter(s["__name__"] for s in world)
    queries = [q["query"][0] for _, q, _ in fake.server.paths("/api/v1/query")]
    refused = [q for q in queries if q.count("|") >= 2]
    assert refused, "chunks of 3-4 names were sent first"
    answered = [q for q in queries if q.count("|") < 2]
    names_answered = sum(q.count("|") + 1 for q in answered)
    assert names_answered == len({s["__name__"] for s in world})  # each name counted exactly once
    assert all(m.labels == {} for m in snap.metrics) and snap.method == "promql"


@pytest.mark.unit
def test_prometheus_503_then_recovers(fake_prom) -> None:
    world = _world()
    fake = fake_prom(world)
    failures = {"left": 2}

    def flaky(path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes] | None:
        if path == "/api/v1/query" and failures["left"]:
            failures["left"] -= 1
            return 503, "text/plain", b"Service Unavailable"
        return None

    fake.fail = flaky
    with _client(fake.server.url) as client:
        snap = collect_series_by_metric(client, "unit", AT, workers=1)
    assert failures["left"] == 0
    assert {m.metric: m.labels for m in snap.metrics} == expected_labels(world)


@pytest.mark.unit
def test_metric_vanishing_between_calls_is_kept_with_what_is_known(fake_prom) -> None:
    world = _world()
    fake = fake_prom(world)
    state = {"counted": False}

    def vanish(path: str, query: dict[str, list[str]]) -> None:
        if path == "/api/v1/query":
            state["counted"] = True
        elif state["counted"] and path == "/api/v1/label/session_id/values" and query.get("match[]"):
            # cart_items disappears after its count and its first labels were read
            fake.series = [s for s in fake.series if s["__name__"] != "cart_items"]
        if state["counted"] and path == "/api/v1/labels" and query.get("match[]") == ["build_info"]:
            raise AssertionError("build_info is in the label lists: no per-metric fallback needed")

    fake.before = vanish
    with _client(fake.server.url) as client:
        snap = collect_series_by_metric(client, "unit", AT, workers=1)
    cart = snap.metric("cart_items")
    assert cart is not None and cart.series == 40 and not cart.complete
    assert snap.vanished == ["cart_items"]
    assert "session_id" not in cart.labels  # asked after it was gone
    assert snap.series_total == len(world)
    others = {m.metric: m.labels for m in snap.metrics if m.metric != "cart_items"}
    want = expected_labels(world)
    assert others == {m: want[m] for m in others}


@pytest.mark.unit
def test_metric_gone_before_labels_and_new_metric_after_count(fake_prom) -> None:
    world = _world()
    fake = fake_prom(world)
    state = {"done": False}

    def churn(path: str, query: dict[str, list[str]]) -> None:
        if path == "/api/v1/labels" and "match[]" not in query and not state["done"]:
            state["done"] = True  # after the count: build_info goes away, a new metric arrives
            fake.series = [s for s in fake.series if s["__name__"] != "build_info"]
            fake.series.append({"__name__": "late_metric", "job": "api"})

    fake.before = churn
    with _client(fake.server.url) as client:
        snap = collect_series_by_metric(client, "unit", AT, workers=2)
    assert snap.metric("late_metric") is None  # not there when the series were counted
    gone = snap.metric("build_info")
    assert gone is not None and gone.series == 1 and gone.labels == {} and not gone.complete
    assert snap.vanished == ["build_info"]


@pytest.mark.unit
def test_snapshot_round_trips_and_stays_dag_compatible(fake_prom) -> None:
    fake = fake_prom(_world())
    with _client(fake.server.url) as client:
        snap = collect_series_by_metric(client, "unit", AT, "t1")
    data = json.loads(json.dumps(snap.as_dict()))  # what an XCom holds
    assert SourceSnapshot.from_dict(data) == snap
    # dags/finops_cardinality.py rebuilds snapshots positionally from these keys
    rebuilt = SourceSnapshot(data["source"], data["tenant"], data["head_series"],
                             [MetricSeries(**m) for m in data["metrics"]])
    assert rebuilt.metrics == snap.metrics and rebuilt.series_total == snap.series_total
    assert all(m.tenant == "t1" and m.source == "unit" for m in rebuilt.metrics)


# ---- Mimir --------------------------------------------------------------------------------------------

@pytest.fixture
def fake_mimir():
    fakes: list[FakeMimir] = []

    def make(series: list[Series], tenants: tuple[str, ...] = ("anonymous",), **kw: Any) -> FakeMimir:
        fakes.append(FakeMimir(series, tenants, **kw))
        return fakes[-1]

    yield make
    for f in fakes:
        f.server.close()





@pytest.mark.unit
@pytest.mark.parametrize(("fixture", "path", "params"), [
    ("mimir_cardinality_label_values_name_limit20.json", "label_values", {"label_names[]": ["__name__"], "limit": 20}),
    ("mimir_cardinality_label_values_job_instance.json", "label_values",
     {"label_names[]": ["job", "instance"], "limit": 20}),
    ("mimir_cardinality_label_names_limit20.json", "label_names", {"limit": 20}),
    ("mimir_cardinality_label_values_job_active.json", "label_values",
     {"label_names[]": ["job"], "count_method": "active"}),
    ("mimir_cardinality_label_names_active_job_mimir.json", "label_names",
     {"selector": '{job="mimir"}', "limit": 5, "count_method": "active"}),
    ("mimir_cardinality_active_series_up.json", "active_series", {"selector": '{__name__="up"}'}),
])
def test_fake_mimir_reproduces_the_recorded_answers(fake_mimir, fixture: str, path: str, params: dict) -> None:
    """The fake computes from the recorded active series exactly what the real Mimir answered."""
    fake = fake_mimir(ACTIVE)
    # The raw answer, in the fake's own order (the client would re-sort label_values).
    got = requests.get(f"{fake.server.url}/prometheus/api/v1/cardinality/{path}", params=params, timeout=10).json()
    if path == "active_series":  # Mimir lists label sets in no particular order
        got = {"data": sorted(got["data"], key=lambda s: sorted(s.items()))}
        want = {"data": sorted(_fixture(fixture)["data"], key=lambda s: sorted(s.items()))}
    else:
        want = _fixture(fixture)
    assert got == want


@pytest.mark.unit
def test_fake_mimir_lists_every_recorded_active_series(fake_mimir) -> None:
    """The whole recorded active_series answer (3,113 label sets) is what the fake holds, and lists."""
    fake = fake_mimir(ACTIVE, stale=[{"__name__": "gone_total", "job": "mimir"}])
    with _mimir_client(fake.server.url) as client:
        listed = client.cardinality_active_series('{job=~".+"}')
        inmemory = client.cardinality_label_values(["__name__"], count_method="inmemory", limit=0)
        active = client.cardinality_label_values(["__name__"], count_method="active", limit=0)
    assert sorted(map(json.dumps, listed)) == sorted(map(json.dumps, ACTIVE))
    assert (inmemory["labels"][0]["series_count"], active["labels"][0]["series_count"]) == (3114, 3113)


@pytest.mark.unit
def test_mimir_collect_pages_past_500_metrics(fake_mimir) -> None:
    fake = fake_mimir(ACTIVE)
    with _mimir_client(fake.server.url) as client:
        snap = collect_series_by_metric(client, "mimir", AT, "", count_method="active")
    # Numbers from other recorded answers: user_stats numSeries, label_names' __name__ count, the top metric.
    assert snap.head_series == _fixture("mimir_user_stats.json")["numSeries"] == 3113
    names = _fixture("mimir_cardinality_label_names_limit20.json")["cardinality"][0]
    assert names["label_name"] == "__name__" and len(snap.metrics) == names["label_values_count"] == 635
    assert snap.series_total == 3113 and abs(sum(m.share for m in snap.metrics) - 1) < 1e-12
    top20 = _fixture("mimir_cardinality_label_values_name_limit20.json")["labels"][0]["cardinality"]
    assert [(m.metric, m.series) for m in snap.metrics[:20]] == [(e["label_value"], e["series_count"]) for e in top20]
    up = _fixture("mimir_cardinality_active_series_up.json")["data"]
    assert snap.metric("up").series == len(up) == 2
    assert snap.metric("up").labels == {k: len({s[k] for s in up}) for k in up[0] if k != "__name__"}
    assert snap.metric("up").labels == {"instance": 2, "job": 2, "recorder": 1}
    assert {m.metric: m.labels for m in snap.metrics} == expected_labels(ACTIVE)
    assert snap.flavor == "mimir" and snap.method == "mimir_cardinality(active)" and snap.vanished == []
    # 635 names > 500: the root page was not enough, prefix pages were asked; every request used `active`.
    root = [q for p, q, _ in fake.server.paths("/prometheus/api/v1/cardinality/label_values") if "selector" not in q]
    pages = [q for p, q, _ in fake.server.paths("/prometheus/api/v1/cardinality/label_values") if "selector" in q]
    assert len(root) == 1 and pages
    assert all(q["count_method"] == ["active"] and q["limit"] == ["500"] for _, q, _ in fake.server.hits)
    per_metric = fake.server.paths("/prometheus/api/v1/cardinality/label_names")
    assert len(per_metric) == 635 and snap.queries == len(fake.server.hits)


@pytest.mark.unit
def test_mimir_prefix_paging_with_unicode_names_and_tiny_pages(fake_mimir, monkeypatch) -> None:
    """Names sharing long prefixes, one being a prefix of others, and non-ASCII ones, with pages of 2."""
    import traceo_finops.cardinality.collect as collect

    names = ["a", "ab", "abc", "abd", "abd_x", "b", "é_total", "日本_requests", "z"]
    series = [{"__name__": n, "job": "j", "k": str(i)} for i, n in enumerate(names)]
    series += [{"__name__": "abc", "job": "j", "k": "other"}]
    fake = fake_mimir(series)
    monkeypatch.setattr(collect, "MIMIR_LIMIT", 2)
    with _mimir_client(fake.server.url) as client:
        snap = collect_mimir(client, "mimir", labels=True, workers=1)
    assert {m.metric: m.series for m in snap.metrics} == dict(Counter(s["__name__"] for s in series))
    # label_names is capped at `limit` too: abc's 3 names (with __name__) do not fit in 2, so it is flagged.
    abc = snap.metric("abc")
    assert abc.labels == {"k": 2} and not abc.complete and snap.vanished == []


@pytest.mark.unit
def test_mimir_tenant_401_names_the_tenant(fake_mimir) -> None:
    fake = fake_mimir(ACTIVE, tenants=("team-a",))
    with _mimir_client(fake.server.url, "team-a") as client:
        assert collect_mimir(client, "mimir", "team-a", labels=False).series_total == 3113
    with _mimir_client(fake.server.url, "team-b") as client, pytest.raises(PrometheusAuthError) as err:
        collect_series_by_metric(client, "mimir", AT, "team-b")
    assert err.value.status == 401 and "tenant 'team-b'" in str(err.value) and "invalid tenant ID" in str(err.value)


@pytest.mark.unit
def test_mimir_metric_vanishing_after_the_count(fake_mimir) -> None:
    series = [dict(s) for s in ACTIVE]
    fake = fake_mimir(series)
    fake.after_root = lambda: setattr(fake, "series", [s for s in series if s["__name__"] != "up"])
    with _mimir_client(fake.server.url) as client:
        snap = collect_mimir(client, "mimir", at=AT, workers=2)
    up = snap.metric("up")
    assert up is not None and up.series == 2 and up.labels == {} and not up.complete
    assert snap.vanished == ["up"] and snap.series_total == 3113


@pytest.mark.unit
def test_mimir_rejects_unknown_count_method(fake_mimir) -> None:
    fake = fake_mimir(ACTIVE)
    with _mimir_client(fake.server.url) as client, pytest.raises(ValueError, match="count_method"):
        collect_mimir(client, "mimir", count_method="everything")
    assert fake.server.hits == []


@pytest.mark.unit
def test_window_follows_lookback(fake_prom) -> None:
    fake = fake_prom(_world())
    with _client(fake.server.url) as client:
        collect_series_by_metric(client, "unit", AT, lookback=timedelta(minutes=1), labels=False)
    _, query, _ = fake.server.paths("/api/v1/label/__name__/values")[0]
    assert float(query["start"][0]) == AT.timestamp() - 60


# ---- Mimir count methods, label paging, tenants ----------------------------------------------------------

STALE = [{"__name__": "thanos_objstore_bucket_operations_total", "job": "mimir", "instance": "10.0.0.9:9009",
          "operation": op, "recorder": "mimir-work", "bucket": "old"} for op in ("get", "upload", "delete")] + \
        [{"__name__": "gone_requests_total", "pod": f"api-{i}", "team": "payments"} for i in range(4)]


@pytest.mark.unit
@pytest.mark.parametrize("count_method", ["inmemory", "active"])
def test_mimir_census_follows_count_method(fake_mimir, count_method: str) -> None:
    """inmemory counts every series the ingesters hold, active only those still written: per metric, per label."""
    fake = fake_mimir(ACTIVE, stale=STALE)
    with _mimir_client(fake.server.url) as client:
        snap = collect_mimir(client, "mimir", count_method=count_method, workers=2)
    pool = ACTIVE + (STALE if count_method == "inmemory" else [])
    assert {m.metric: m.series for m in snap.metrics} == dict(Counter(s["__name__"] for s in pool))
    assert {m.metric: m.labels for m in snap.metrics} == expected_labels(pool)
    assert snap.series_total == snap.head_series == len(pool)
    assert (snap.metric("gone_requests_total") is None) == (count_method == "active")
    assert all(q["count_method"] == [count_method] for _, q, _ in fake.server.hits)
    assert snap.method == f"mimir_cardinality({count_method})"


@pytest.mark.unit
def test_mimir_label_series_pages_past_the_cap_and_counts_carriers(fake_mimir, monkeypatch) -> None:
    """Every value of a label with more values than one page, and the series that carry it at all."""
    import traceo_finops.cardinality.collect as collect

    teams = ["a", "ab", "abc", "b", "é-team", "z"]
    series = [{"__name__": "m", "team": t, "i": str(i)} for i, t in enumerate(teams * 2)] + [{"__name__": "m"}]
    fake = fake_mimir(series, stale=[{"__name__": "old", "team": "gone"}])
    monkeypatch.setattr(collect, "MIMIR_LIMIT", 2)
    with _mimir_client(fake.server.url) as client:
        active = mimir_label_series(client, "team", "active", workers=1)
        inmemory = mimir_label_series(client, "team", "inmemory", workers=1)
        nobody = mimir_label_series(client, "owner", "active", workers=1)
        counts = (mimir_series_count(client, "active"), mimir_series_count(client, "inmemory"))
    assert active.by_value == {t: 2 for t in teams} and active.carrying == 12 and active.total == 13
    assert inmemory.by_value == {**{t: 2 for t in teams}, "gone": 1} and inmemory.total == 14
    assert (nobody.by_value, nobody.carrying, nobody.total) == ({}, 0, 13)
    assert counts == (13, 14)
    assert len([h for h in fake.server.hits if "selector" in h[1]]) > 2  # it did page


@pytest.mark.unit
@pytest.mark.parametrize("tenant", ["équipe-données", "日本", "team a", "a|b", "..", "x" * 151])
def test_mimir_refuses_an_invalid_connection_tenant_before_any_request(fake_mimir, tenant: str) -> None:
    """A tenant from the connection's extra (the config file never sees it) is checked by Mimir's rule."""
    fake = fake_mimir(ACTIVE, open_tenants=True)
    with _mimir_client(fake.server.url, tenant) as client, pytest.raises(ValueError) as err:
        collect_series_by_metric(client, "mimir", AT, tenant)
    assert repr(tenant) in str(err.value) and "a-z A-Z 0-9" in str(err.value) and "150" in str(err.value)
    assert fake.server.hits == []


@pytest.mark.unit
def test_mimir_tenant_header_carries_every_allowed_character(fake_mimir) -> None:
    """Every character Mimir allows in a tenant ID reaches it unchanged in X-Scope-OrgID."""
    tenant = "Team_0-9.prod!*'(x)"
    fake = fake_mimir(ACTIVE, tenants=(tenant,))
    with _mimir_client(fake.server.url, tenant) as client:
        snap = collect_mimir(client, "mimir", tenant, labels=False)
    assert snap.series_total == 3113
    assert {h[2]["X-Scope-OrgID"] for h in fake.server.hits} == {tenant}


@pytest.mark.unit
def test_mimir_tenant_without_series_is_an_empty_snapshot_not_an_error(fake_mimir) -> None:
    fake = fake_mimir(ACTIVE, open_tenants=True)
    with _mimir_client(fake.server.url, "team-typo") as client:
        snap = collect_mimir(client, "mimir", "team-typo")
    assert (snap.metrics, snap.series_total, snap.head_series) == ([], 0, 0)
    assert len(fake.server.hits) == 1  # one label_values answer says it all: no label_names per metric
