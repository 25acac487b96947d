"""The usage analyzer over the devstack's rules, dashboards and real Prometheus query log, against its ground truth."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from traceo_finops.usage import AllLabels, SourceKind, UsageIndex

pytestmark = pytest.mark.integration


def test_usage_over_devstack_matches_ground_truth(prom_truth: dict[str, Any]) -> None:
    paths = prom_truth["paths"]
    index = UsageIndex()
    rule_files = sorted(Path(paths["rules_dir"]).glob("*.yml"))
    dashboards = sorted(Path(paths["dashboards_dir"]).glob("*.json"))
    assert rule_files and dashboards
    for path in rule_files:
        index.add_rule_file(path)
    for path in dashboards:
        index.add_dashboard_file(path)
    # The replay ran between Prometheus' start and the ground truth being written (whole seconds).
    start = datetime.fromtimestamp(prom_truth["head"]["start"] - 1, UTC)
    end = datetime.fromtimestamp(prom_truth["generated_at"], UTC) + timedelta(seconds=1)
    log = index.add_prometheus_query_log(paths["query_log"], start, end)

    assert log.bad_lines == 0
    assert sum(log.queries.values()) == prom_truth["replay"]["ok"]  # every successful replayed query, once
    # Every rule evaluation Prometheus logged belongs to a rule of the files (none became an ad-hoc query).
    evaluations = index.rule_evaluations()
    assert evaluations and not [rid for rid in evaluations if "/expr:" in rid]

    cardinality = prom_truth["cardinality"]
    unused = cardinality["unused_metric"]["name"]
    assert not index.metric_used(unused) and index.labels_needed(unused) == frozenset()
    offender = cardinality["high_cardinality"]
    need = index.labels_needed(offender["metric"])
    assert index.metric_used(offender["metric"])
    assert not isinstance(need, AllLabels) and offender["label"] not in need
    assert offender["label"] not in index.label_counts(offender["metric"])

    truth = prom_truth["usage"]["metrics"]
    assert set(index.metrics()) == set(truth)
    for metric, expected in truth.items():
        mine = index.labels_needed(metric)
        assert isinstance(mine, AllLabels) == expected["all_labels"], metric
        if not isinstance(mine, AllLabels):
            # The ground truth lists every label named around a selector; what is needed is a subset of it.
            assert mine <= set(expected["labels"]), (metric, mine, expected["labels"])
        sources = {("rules", SourceKind.RULE), ("dashboards", SourceKind.DASHBOARD), ("queries", SourceKind.QUERY)}
        kinds = {u.source.kind for u in index.usages(metric)}
        assert {name for name, kind in sources if kind in kinds} == set(expected["sources"]), metric

    (broken,) = prom_truth["usage"]["unparsable"]
    errors = [e for e in index.errors if e.source_kind == SourceKind.DASHBOARD]
    assert [(e.source_id, e.expression) for e in errors] == [(broken["dashboard"], broken["expr"])]
    assert broken["panel"] in errors[0].location


def test_devstack_broken_panel_holds_back_what_it_names(prom_truth: dict[str, Any]) -> None:
    """The devstack's deliberately broken panel: every metric it names is held back, named in the verdict."""
    from traceo_finops.cardinality.recommend import judge

    paths = prom_truth["paths"]
    index = UsageIndex()
    for path in sorted(Path(paths["dashboards_dir"]).glob("*.json")):
        index.add_dashboard_file(path)
    (broken,) = prom_truth["usage"]["unparsable"]
    (error,) = index.unparsed()
    assert (error.source_id, error.expression) == (broken["dashboard"], broken["expr"])
    assert error.mentions is not None and error.mentions.metrics
    for metric in error.mentions.metrics:
        assert metric in broken["expr"]
        v = judge(_Census(metric, 10, {"job": 1, "namespace": 2}), index, lambda m, kept: 1)
        assert v.suggestion.value == "blocked" and broken["dashboard"] in v.blocked_by
    summary = index.summary()
    assert summary["unparsed_expressions"] == 1 and summary["non_prometheus_targets"] == 0


def test_devstack_scrape_config_protects_the_target_labels(devstack: dict[str, str]) -> None:
    """The live server's loaded configuration (/api/v1/status/config) is where target labels are read from."""
    import yaml

    from traceo_finops.cardinality.recommend import protected_labels, target_labels
    from traceo_finops.prometheus import PrometheusClient
    from traceo_finops.prometheus.spec import SourceSpec

    client = PrometheusClient(SourceSpec.from_connection_fields(
        name="devstack", host=devstack["DEVSTACK_PROM_URL"], port=None, schema=None, login=None, password=None,
        extra={}))
    config = yaml.safe_load(client.config_yaml())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"kubelet", "kube-state-metrics"} <= jobs  # the honor_labels jobs of the devstack
    protected = protected_labels(["le", "quantile"], [], client.config_yaml)
    assert protected == target_labels(config) | {"le", "quantile"}
    assert {"job", "instance", "exported_job", "exported_instance"} <= protected
    assert "instance" not in protected_labels(["le", "quantile"], ["instance"], client.config_yaml)


@dataclass
class _Census:
    metric: str
    series: int
    labels: dict[str, int]
