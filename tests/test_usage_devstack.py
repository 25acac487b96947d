"""The usage analyzer over the devstack's rules, dashboards and real Prometheus query log, against its ground truth."""

from __future__ import annotations

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
