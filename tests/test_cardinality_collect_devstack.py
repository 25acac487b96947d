"""Cardinality collection against real Prometheus 2.42 servers: the devstack (exact ground truth) and a
throwaway one scraping label values with quotes, backslashes, newlines and unicode."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from devstack.exporter import APP_JOB, app_families
from tests.support.prometheus import local_prometheus, prometheus_client
from tests.support.servers import Answer, LocalServer
from traceo_finops.cardinality.collect import collect_series_by_metric
from traceo_finops.prometheus import quote

pytestmark = pytest.mark.integration


def test_devstack_counts_and_labels_match_ground_truth(devstack: dict[str, str], prom_truth: dict[str, Any]) -> None:
    card = prom_truth["cardinality"]
    at = datetime.now(tz=UTC)
    with prometheus_client(devstack["DEVSTACK_PROM_URL"], timeout=60, retries=1) as client:
        snap = collect_series_by_metric(client, "devstack", at)
        direct = {s["metric"]["__name__"]: int(float(s["value"][1]))
                  for s in client.query('count by (__name__) ({__name__=~".+"})', time=at)}
        sessions = client.query(f"count(count by ({card['high_cardinality']['label']}) "
                                f"({card['high_cardinality']['metric']}))", time=at)

    # The offender: its label's distinct values and its series, exactly as the ground truth says and as the
    # generator makes them (every replica of the `apps` job serves the same label sets).
    instances = prom_truth["head"]["exporter_targets"][APP_JOB]  # one `apps` target per replica
    families = app_families(prom_truth["seed"], 0, len(instances))
    made = Counter(s.name for f in families for s in f.series)
    high = card["high_cardinality"]
    offender = snap.metric(high["metric"])
    assert offender is not None and offender.series == high["series"] == made[high["metric"]] * len(instances)
    sessions_made = {dict(s.labels)[high["label"]] for f in families for s in f.series if s.name == high["metric"]}
    assert offender.labels[high["label"]] == high["distinct_values"] == len(sessions_made) == \
        int(float(sessions[0]["value"][1]))
    unused = snap.metric(card["unused_metric"]["name"])
    assert unused is not None
    assert unused.series == card["unused_metric"]["series"] == made[card["unused_metric"]["name"]] * len(instances)

    # Every exporter metric: series as the ground truth counts them, labels as the generator makes them.
    values: dict[str, dict[str, set[str]]] = {}
    for family in families:
        for s in family.series:
            per = values.setdefault(s.name, {"job": {APP_JOB}, "instance": set(instances)})
            for k, v in s.labels:
                per.setdefault(k, set()).add(v)
    for metric, n in card["exporter_series_by_metric"].items():
        got = snap.metric(metric)
        assert got is not None and got.series == n, metric
        assert got.labels == {k: len(v) for k, v in values[metric].items()}, metric
        assert got.complete

    # Sums are consistent, and the chunked counts equal one unchunked count at the same instant.
    assert {m.metric: m.series for m in snap.metrics} == direct
    assert snap.series_total == sum(direct.values()) <= snap.head_series
    assert abs(sum(m.share for m in snap.metrics) - 1) < 1e-9
    assert snap.head is not None and snap.head.num_series == snap.head_series
    assert len(snap.top["seriesCountByMetricName"]) == 10
    # Every scraped metric carries job; only recording-rule outputs (level:metric:ops) may have dropped it.
    assert [m.metric for m in snap.metrics if "job" not in m.labels and ":" not in m.metric] == []


# ---- a throwaway Prometheus with tricky label values -----------------------------------------------------

TRICKY_VALUES = ('quote " and \\ backslash', "new\nline", "ünïcødé 😀", 'x{a="b"}', "plain")
EXPOSITION_METRICS = ("tricky_a_total", "tricky_b_total", "tricky_c", "tricky_d", "tricky_e", "tricky_f")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _exposition() -> tuple[bytes, list[dict[str, str]]]:
    """6 metrics carry ``weird`` (5 values: per-value requests, values quoted into selectors); ``id`` has
    more values than carriers (per-metric requests); ``const`` has one value."""
    lines, series = [], []
    for i, metric in enumerate(EXPOSITION_METRICS):
        for j, value in enumerate(TRICKY_VALUES[: 2 + i % 4]):
            for k in range(3 if i == 0 else 1):
                labels = {"weird": value, "const": "1", "id": f"{j}-{k}"}
                series.append({"__name__": metric, **labels})
                body = ",".join(f'{n}="{_escape(v)}"' for n, v in labels.items())
                lines.append(f"{metric}{{{body}}} {j + k}\n")
    return "".join(lines).encode(), series


@pytest.fixture(scope="module")
def tricky_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Any:
    body, series = _exposition()
    exposition = Answer(200, body, "text/plain; version=0.0.4")
    with LocalServer(lambda _: exposition) as exporter:
        config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [
            {"job_name": "tricky", "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}]}
        with local_prometheus(tmp_path_factory.mktemp("tricky-prom"), config,
                              "--scrape.discovery-reload-interval=1s") as url:
            with prometheus_client(url, timeout=60, retries=1) as client:
                deadline = time.monotonic() + 30
                while not client.query("count(tricky_a_total)") and time.monotonic() < deadline:
                    time.sleep(0.3)
            yield url, series


def test_tricky_label_values_round_trip(tricky_prometheus: Any) -> None:
    url, series = tricky_prometheus
    with prometheus_client(url, timeout=60, retries=1) as client:
        snap = collect_series_by_metric(client, "tricky", datetime.now(tz=UTC), workers=2)
        # The per-value requests put each tricky value into a selector: PromQL agrees on each.
        for value in TRICKY_VALUES:
            n = client.query(f"count({{weird={quote(value)}}})")
            assert int(float(n[0]["value"][1])) == sum(1 for s in series if s["weird"] == value)
    want = Counter(s["__name__"] for s in series)
    for metric in EXPOSITION_METRICS:
        got = snap.metric(metric)
        mine = [s for s in series if s["__name__"] == metric]
        assert got is not None and got.series == want[metric]
        assert got.labels == {"const": 1, "id": len({s["id"] for s in mine}), "weird": len({s["weird"] for s in mine}),
                              "instance": 1, "job": 1}, metric
    assert snap.metric("up").labels == {"instance": 1, "job": 1}
    assert snap.metric("up").series == 1 and snap.metric("scrape_samples_scraped").series == 1
