"""The proof's parts: where a query is proven, how two answers are compared, the history file, promtool."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support.prometheus import PROMTOOL
from traceo_finops.recording_rules.prove import (
    INSTANT_POINTS,
    MAX_POINTS,
    check_rules,
    compare,
    mimir_namespace_yaml,
    openmetrics,
    proof_range,
    rule_file_yaml,
)
from traceo_finops.recording_rules.recommend import RuleSpec


def series(labels: dict[str, str], points: dict[int, str]) -> dict:
    return {"metric": labels, "values": [[t, v] for t, v in sorted(points.items())]}


@pytest.mark.unit
@pytest.mark.parametrize("shape, end, interval, expected", [
    ((21600, 30), 1_000_000_037, 60, (1_000_000_020 - 360 * 60, 1_000_000_020, 60)),  # step raised to the interval
    ((86400, 120), 1_000_000_037, 60, (999_999_960 - 720 * 120, 999_999_960, 120)),  # a multiple stays
    ((86400, 90), 1_000_000_000, 60, (999_999_960 - 720 * 120, 999_999_960, 120)),  # rounded up to 2 intervals
    ((0, 0), 1_000_000_037, 60, (1_000_000_020 - (INSTANT_POINTS - 1) * 60, 1_000_000_020, 60)),  # instant
    ((86400 * 30, 15), 1_000_000_020, 60, (1_000_000_020 - (MAX_POINTS - 1) * 60, 1_000_000_020, 60)),  # capped
])
def test_proof_range_is_the_logged_shape_on_the_rule_grid(shape: tuple[float, float], end: int, interval: int,
                                                          expected: tuple[int, int, int]) -> None:
    pr = proof_range(shape, end, interval)
    assert (pr.start, pr.end, pr.step) == expected
    assert pr.start % interval == 0 and pr.step % interval == 0 and pr.instant == (shape == (0, 0))


@pytest.mark.unit
def test_equal_answers_pass_with_float_noise_and_nan() -> None:
    a = [series({"route": "/"}, {60: "0.1", 120: "NaN", 180: "3"})]
    b = [series({"route": "/"}, {60: repr(0.1 + 1e-17), 120: "NaN", 180: "3.0000000000001"})]
    proof = compare(a, b, 1e-9)
    assert proof.ok and proof.points == 3 and proof.series == 1


@pytest.mark.unit
@pytest.mark.parametrize("rewritten, reason", [
    ([series({"route": "/"}, {60: "0.1", 120: "2.5", 180: "3"})], "values differ for {route=\"/\"} at 120"),
    ([series({"route": "/"}, {60: "0.1", 180: "3"})], "the rewritten answer lacks 1 point(s)"),
    ([series({"route": "/x"}, {60: "0.1", 120: "2", 180: "3"})], "the answers have different series"),
    ([series({"route": "/"}, {60: "0.1", 120: "2", 180: "3", 900: "3"})], "has a point the original lacks"),
])
def test_a_different_answer_fails_with_the_first_difference(rewritten: list[dict], reason: str) -> None:
    original = [series({"route": "/"}, {60: "0.1", 120: "2", 180: "3"})]
    proof = compare(original, rewritten, 1e-9)
    assert not proof.ok and reason in proof.reason


@pytest.mark.unit
def test_points_after_a_series_ends_are_the_backfills_missing_staleness_markers() -> None:
    original = [series({"a": "1"}, {60: "1", 120: "2"})]
    rewritten = [series({"a": "1"}, {60: "1", 120: "2", 180: "2", 240: "2"})]  # lookback over the last sample
    proof = compare(original, rewritten, 1e-9)
    assert proof.ok and proof.stale_extra == 2


@pytest.mark.unit
def test_no_data_proves_nothing() -> None:
    assert compare([], [], 1e-9).reason.startswith("the original query returns no data")
    assert not compare([series({}, {})], [series({}, {})], 1e-9).ok


@pytest.mark.unit
def test_history_is_openmetrics_with_escaped_labels() -> None:
    text, n = openmetrics({"a:b:rate5m": [series({"route": 'x"\\\n', "__name__": "ignored"}, {60: "1.5", 120: "NaN"})],
                           "empty:x:rate5m": []})
    assert n == 2
    assert text == ('# TYPE a:b:rate5m gauge\na:b:rate5m{route="x\\"\\\\\\n"} 1.5 60\n'
                    'a:b:rate5m{route="x\\"\\\\\\n"} NaN 120\n# EOF\n')


RULE = RuleSpec("sum", ("le", "route"), "rate", timedelta(minutes=1), "x_bucket", ())


@pytest.mark.integration
def test_promtool_checks_each_rule_and_names_the_bad_one(tmp_path: Path) -> None:
    bad = RuleSpec("sum", ("a",), "rate", timedelta(minutes=1), "x", (), record="not a valid name")
    assert check_rules(PROMTOOL, [RULE], "g", 60, tmp_path) == {}
    errors = check_rules(PROMTOOL, [RULE, bad], "g", 60, tmp_path)
    assert list(errors) == ["not a valid name"] and "promtool check rules failed" in errors["not a valid name"]


@pytest.mark.integration
def test_rule_files_load(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(rule_file_yaml([RULE], "traceo", 60))
    out = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and "SUCCESS: 1 rules found" in out.stdout
    ns = mimir_namespace_yaml([RULE], "finops", "traceo", 60)
    assert ns.startswith("namespace: finops\ngroups:\n- name: traceo\n  interval: 60s\n")


@pytest.mark.integration
def test_a_source_without_stats_is_timed_by_wall_clock_on_both_sides() -> None:
    import json

    from tests.support.servers import Answer, LocalServer
    from traceo_finops.prometheus import SourceSpec
    from traceo_finops.recording_rules.collect import NoStats, StatsClient

    body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}}).encode()
    with LocalServer(lambda _: Answer(body=body, delay=0.05)) as server, \
            StatsClient(SourceSpec(name="mimir-like", base_url=server.url)) as timer:
        with pytest.raises(NoStats):
            timer.eval_seconds("up", start=0, end=60, step=60)
        assert timer.eval_seconds("up", time=60, wall=True) >= 0.05
