"""PromQL, resolution and batches of the right-sizing workflow (pure; the queries are parsed by promql-parser)."""

from __future__ import annotations

import promql_parser
import pytest

from traceo_finops.rightsizing import queries as q

pytestmark = pytest.mark.unit
DAY = 86400


@pytest.mark.parametrize(("history", "rate_window", "scrape", "step", "window"), [
    (14 * DAY, 300, 60, 300, 300),  # the rate window tiles the history: 4,032 points
    (14 * DAY, 300, 15, 300, 300),
    (14 * DAY, 300, 300, 1200, 1200),  # 5-minute scrape: 4 x scrape = 20m windows
    (4 * DAY, 300, None, 300, 300),  # scrape interval unknown: the configured window
    (90 * DAY, 300, 60, 900, 900),  # 90 d / 11,000 = 707 s: the step grows, the window with it
    (400 * DAY, 60, 15, 3600, 3600),  # 9,600 points
])
def test_resolution(history: int, rate_window: int, scrape: int | None, step: int, window: int) -> None:
    res = q.choose_resolution(history, rate_window, scrape)
    assert (res.step, res.rate_window) == (step, window)
    assert res.points == history // step <= 11_000
    assert res.rate_window >= res.step and (scrape is None or res.rate_window >= 4 * scrape)


def test_resolution_obeys_a_lower_point_limit() -> None:
    res = q.choose_resolution(14 * DAY, 60, 15, max_points=1000)
    assert res.points <= 1000 and res.step == 1800


@pytest.mark.parametrize(("per_hour", "interval"), [(61, 60), (60, 60), (13, 300), (12, 300), (241, 15),
                                                    (121, 30), (0, None), (1, None)])
def test_scrape_interval_from_samples_per_hour(per_hour: float, interval: int | None) -> None:
    assert q.nearest_scrape_interval(per_hour) == interval


def test_batch_selectors_escape_names() -> None:
    b = q.Batch(("team.a", "b+c"))
    assert b.matchers() == r'namespace=~"team\\.a|b\\+c"'
    one = q.Batch(("shop",), ("api-1", "api-2"))
    assert one.matchers() == 'namespace="shop",pod=~"api-1|api-2"'
    assert one.matchers(with_pods=False) == 'namespace="shop"'
    with pytest.raises(ValueError):
        q.Batch(("a", "b"), ("p",))


def test_batches_split_by_namespace_then_by_pod() -> None:
    left, right = q.Batch(("a", "b", "c"), series=30).split()  # type: ignore[misc]
    assert (left.namespaces, right.namespaces) == (("a",), ("b", "c"))
    assert q.Batch(("a",)).split() is None  # a namespace needs its pod list first
    p1, p2 = q.Batch(("a",), ("p1", "p2", "p3")).split()  # type: ignore[misc]
    assert (p1.pods, p2.pods) == (("p1",), ("p2", "p3"))
    assert q.Batch(("a",), ("p1",)).split() is None
    assert q.Batch.from_dict(p2.as_dict()) == p2


def test_pack_batches_respects_the_budget() -> None:
    counts = {"a": 400, "b": 300, "c": 500, "d": 2500, "e": 10}
    pods = {f"p{i:02d}": 100 for i in range(25)}
    batches = q.pack_batches(counts, budget=1000, pods_of=lambda ns: pods)
    assert all(b.series <= 1000 for b in batches)
    assert [b.namespaces for b in batches if not b.pods] == [("a", "b"), ("c", "e")]
    big = [b for b in batches if b.pods]
    assert {b.namespaces for b in big} == {("d",)} and sorted(p for b in big for p in b.pods) == sorted(pods)
    assert q.series_budget(5_000_000, 4032) == 1240


def test_every_query_parses_and_reads_no_raw_samples_back() -> None:
    res = q.choose_resolution(14 * DAY, 300, 60)
    batch = q.Batch(("shop", "pay"))
    usage = q.usage_queries(batch, res, [0.5, 0.9, 0.95, 0.99, 0.8])
    assert [u.stat for u in usage] == ["cpu_p50", "cpu_p80", "cpu_p90", "cpu_p95", "cpu_p99", "cpu_max",
                                       "cpu_samples", "memory_peak", "memory_p99"]
    texts = [u.promql for u in usage] + list(q.discovery_queries(batch, res).values())
    texts += [u.promql for u in q.stack_queries(["prometheus", "mimir-.*"], res)]
    texts += [q.container_series(".+"), q.samples_last_hour(".+"), q.memory_peak_filtered("shop", ["a", "b"], res),
              q.restarts_of_pods(q.Batch(("shop",), ("a", "b")), res), *q.discovery_series(batch).values()]
    for text in texts:
        # Every answer is an instant vector: one value per series, never a range of raw samples.
        assert not _returns_a_range(promql_parser.parse(text)), text
    cpu = usage[3].promql
    assert cpu == ('max by (namespace, pod, container) (quantile_over_time(0.95, (rate(container_cpu_usage_seconds_'
                   'total{namespace=~"shop|pay",container!="",container!="POD",pod!=""}[300s]))[1209600s:300s]))')
    for u in usage:
        # One answer per container, merged outside the subquery: an aggregation inside costs 4x the rate itself.
        top = promql_parser.parse(u.promql)
        assert isinstance(top, promql_parser.AggregateExpr) and str(top.modifier) == "by (namespace, pod, container)"
        assert not _has_aggregation(top.expr), u.promql


def _has_aggregation(expr: object) -> bool:
    if isinstance(expr, promql_parser.AggregateExpr):
        return True
    children = [getattr(expr, name) for name in ("expr", "lhs", "rhs") if hasattr(expr, name)]
    children += list(getattr(expr, "args", None) or [])
    return any(_has_aggregation(c) for c in children)


def _returns_a_range(expr: object) -> bool:
    if isinstance(expr, promql_parser.MatrixSelector | promql_parser.SubqueryExpr):
        return True
    if isinstance(expr, promql_parser.ParenExpr):
        return _returns_a_range(expr.expr)
    if isinstance(expr, promql_parser.BinaryExpr):
        return _returns_a_range(expr.lhs) or _returns_a_range(expr.rhs)
    return False


def test_quantile_keys() -> None:
    assert [q.quantile_key(x) for x in (0.5, 0.95, 0.99, 0.999)] == ["p50", "p95", "p99", "p99_9"]

