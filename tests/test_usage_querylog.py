"""Query history: the Prometheus query log (JSON lines) and Mimir "query stats" logfmt lines."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from traceo_finops.usage import (
    RuleEvaluation,
    SourceKind,
    parse_logfmt,
    read_mimir_query_stats,
    read_prometheus_query_log,
)
from traceo_finops.usage.querylog import MAX_RECORDED_BAD_LINES, LogfmtError, open_log

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data" / "usage"
START = datetime(2024, 5, 1, 10, tzinfo=UTC)
END = datetime(2024, 5, 1, 11, tzinfo=UTC)


def entry(query: str, ts: str, rule: tuple[str, str] | None = None) -> str:
    d: dict[str, object] = {"params": {"query": query, "start": ts, "end": ts, "step": 0}, "ts": ts}
    if rule:
        d["ruleGroup"] = {"file": rule[0], "name": rule[1]}
    else:
        d["httpRequest"] = {"clientIP": "10.0.0.1", "method": "POST", "path": "/api/v1/query_range"}
    return json.dumps(d)


# --- Prometheus query log -----------------------------------------------------------------------------


def test_fixture_log_window_counts_and_bad_lines() -> None:
    s = read_prometheus_query_log(open_log(DATA / "query.log"), START, END, file="query.log")
    assert s.lines == 16
    # Lines 1-3, 6-8, 13 and 16 are in the window; 4 is before it, 5 is exactly at its (open) end.
    assert s.in_window == 8 and s.outside_window == 2
    assert s.queries == {
        "up": 1,
        "sum by (job) (rate(http_requests_total[5m]))": 2,
        'count(http_requests_total{path="/café \\"quoted\\"\\nline ☃"})': 1,
        "sum(": 1,
    }
    assert s.rule_evaluations == {
        RuleEvaluation("rules.yml", "http", 'sum by (job) (rate(http_requests_total{code!~"5.."}[5m]))'): 1,
        RuleEvaluation("extra.yml", "extra", "sum(go_goroutines)"): 2,
    }
    assert s.bad_lines == 5
    assert [(e.location, e.error.split(":")[0]) for e in s.errors] == [
        ("query.log:9", "not JSON (truncated?)"),
        ("query.log:10", "not JSON (truncated?)"),
        ("query.log:11", "not a query log entry"),
        ("query.log:12", "not a query log entry"),
        ("query.log:14", "missing or invalid ts 'yesterday'"),
    ]
    assert {e.source_kind for e in s.errors} == {SourceKind.QUERY}
    assert s.errors[1].expression == '{"params":{"query":"rate(x[5m]'


def test_window_is_half_open_and_timestamps_any_precision() -> None:
    lines = [entry("a", "2024-05-01T09:59:59.999999999Z"), entry("b", "2024-05-01T10:00:00Z"),
             entry("c", "2024-05-01T12:30:00+02:00"),  # 10:30 UTC
             entry("d", "2024-05-01T10:59:59.999999999Z"), entry("e", "2024-05-01T11:00:00.000Z")]
    s = read_prometheus_query_log(lines, START, END)
    assert s.queries == {"b": 1, "c": 1, "d": 1}
    assert s.outside_window == 2


def test_naive_timestamp_is_a_bad_line() -> None:
    s = read_prometheus_query_log([entry("a", "2024-05-01T10:00:00")], START, END)
    assert s.bad_lines == 1 and "invalid ts" in s.errors[0].error


def test_window_must_be_aware_and_non_empty() -> None:
    with pytest.raises(ValueError, match="time-zone-aware"):
        read_prometheus_query_log([], datetime(2024, 5, 1), END)
    with pytest.raises(ValueError, match="empty query-log window"):
        read_prometheus_query_log([], END, START)


def test_bytes_lines_bad_utf8_and_crlf() -> None:
    lines = [entry("up", "2024-05-01T10:00:00Z").encode() + b"\r\n", b"\xff\xfe not utf-8\n",
             entry("ü", "2024-05-01T10:00:01Z").encode("utf-8")]
    s = read_prometheus_query_log(lines, START, END)
    assert s.queries == {"up": 1, "ü": 1}
    assert s.bad_lines == 1 and s.errors[0].location == "query.log:2" and s.errors[0].error == "line is not UTF-8"


def test_only_the_first_bad_lines_are_listed_all_are_counted() -> None:
    lines = ["{truncated"] * (MAX_RECORDED_BAD_LINES + 50) + [entry("up", "2024-05-01T10:00:00Z")]
    s = read_prometheus_query_log(lines, START, END)
    assert s.bad_lines == MAX_RECORDED_BAD_LINES + 50 and len(s.errors) == MAX_RECORDED_BAD_LINES
    assert s.queries == {"up": 1}


def test_gzipped_log_is_streamed(tmp_path: Path) -> None:
    path = tmp_path / "query.log.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for i in range(100):
            fh.write(entry("up", (START + timedelta(seconds=i)).isoformat()) + "\n")
    s = read_prometheus_query_log(open_log(path), START, END)
    assert s.queries == {"up": 100} and s.lines == 100


# --- logfmt -------------------------------------------------------------------------------------------


def test_logfmt_quoted_values_and_escapes() -> None:
    line = ('level=info msg="query stats" param_query="sum(x{a=\\"b c\\"})\\n" path=/api/v1/query '
            'empty="" bare flag=1 uni="\\u00e9\\t\\\\" raw=é')
    assert parse_logfmt(line) == {"level": "info", "msg": "query stats", "param_query": 'sum(x{a="b c"})\n',
                                  "path": "/api/v1/query", "empty": "", "bare": "", "flag": "1",
                                  "uni": "é\t\\", "raw": "é"}


@pytest.mark.parametrize("line", ['a="unterminated', 'a="x\\', 'a="\\q"', 'a="\\u12"'])
def test_logfmt_errors(line: str) -> None:
    with pytest.raises(LogfmtError):
        parse_logfmt(line)


# --- Mimir query-frontend -----------------------------------------------------------------------------


def test_mimir_query_stats_fixture() -> None:
    s = read_mimir_query_stats(open_log(DATA / "query-frontend.log"), START, END, file="qf.log")
    assert s.lines == 7
    assert s.queries == {
        'sum by (route) (rate(http_requests_total{route="/api \\"v1\\""}[5m]))': 1,
        "up": 1,
        "sum by (job) (\n  rate(process_cpu_seconds_total[5m]))": 1,
    }
    assert s.statuses == {"success": 2, "failed": 1}
    assert s.skipped == 2  # "request timings" and the series call without param_query
    assert s.outside_window == 1
    assert s.bad_lines == 1 and s.errors[0].location == "qf.log:5"
    assert s.errors[0].error.startswith("not logfmt (truncated?): unterminated quoted value")
    assert s.rule_evaluations == {}


def test_mimir_query_stats_for_one_tenant() -> None:
    s = read_mimir_query_stats(open_log(DATA / "query-frontend.log"), START, END, tenant="tenant-b")
    assert s.queries == {"up": 1}


def test_mimir_line_without_ts_is_bad() -> None:
    s = read_mimir_query_stats(['msg="query stats" param_query=up'], START, END)
    assert s.bad_lines == 1 and "invalid ts" in s.errors[0].error
