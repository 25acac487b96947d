"""Query logs as users keep them: streamed, gzip'd, rotated, on disk or in S3; who ran each query; what is bad."""

from __future__ import annotations

import gzip
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from traceo_finops.prometheus.spec import Flavor
from traceo_finops.recording_rules.collect import read_query_logs
from traceo_finops.usage.querylog import (
    Origin,
    QueryLogSummary,
    iter_mimir_query_stats,
    iter_prometheus_query_log,
    log_sources,
)

START = datetime(2026, 5, 1, 10, tzinfo=UTC)
END = datetime(2026, 5, 1, 11, tzinfo=UTC)


def entry(query: str, ts: datetime, *, rule: bool = False, seconds: float | None = 0.25,
          samples: int | None = 1000, step: float = 30, range_s: float = 3600) -> str:
    d: dict[str, Any] = {"params": {"query": query, "start": (ts - timedelta(seconds=range_s)).isoformat(),
                                    "end": ts.isoformat(), "step": step}, "ts": ts.isoformat()}
    stats: dict[str, Any] = {}
    if seconds is not None:
        stats["timings"] = {"evalTotalTime": seconds}
    if samples is not None:
        stats["samples"] = {"totalQueryableSamples": samples, "peakSamples": 10}
    if stats:
        d["stats"] = stats
    if rule:
        d["ruleGroup"] = {"file": "/etc/prometheus/rules.yml", "name": "http"}
    else:
        d["httpRequest"] = {"clientIP": "10.0.0.1", "method": "POST", "path": "/api/v1/query_range"}
    return json.dumps(d)


AT = START + timedelta(minutes=5)


@pytest.mark.unit
def test_executions_carry_origin_shape_timing_and_samples() -> None:
    s = QueryLogSummary("q.log")
    lines = [entry("sum(rate(x[5m]))", AT), entry("sum(rate(x[5m]))", AT, rule=True),
             entry("up", AT, seconds=None, samples=None, step=0, range_s=0)]
    got = list(iter_prometheus_query_log(lines, START, END, s))
    assert [(e.origin, e.range_seconds, e.step_seconds, e.eval_seconds, e.samples) for e in got] == [
        (Origin.API, 3600.0, 30.0, 0.25, 1000), (Origin.RULE, 3600.0, 30.0, 0.25, 1000),
        (Origin.API, 0.0, 0.0, None, None)]
    assert got[1].rule is not None and got[1].rule.group == "http"
    assert s.without_timing == 1 and s.in_window == 3


@pytest.mark.unit
def test_the_log_is_streamed_not_loaded() -> None:
    """An endless log: the first executions come out while the input is still being read."""
    def endless() -> Iterator[str]:
        for i in itertools.count():
            yield entry(f"q{i}", AT)

    got = list(itertools.islice(iter_prometheus_query_log(endless(), START, END, QueryLogSummary("x")), 3))
    assert [e.query for e in got] == ["q0", "q1", "q2"]


@pytest.mark.unit
def test_rule_evaluations_are_kept_apart_from_user_queries(tmp_path: Path) -> None:
    log = tmp_path / "query.log"
    log.write_text("\n".join([entry("sum(rate(x[5m]))", AT, rule=True)] * 50 + [entry("sum(rate(x[5m]))", AT)] * 2))
    r = read_query_logs(str(log), Flavor.PROMETHEUS, START, END, root=tmp_path)
    assert r.rule_evaluations == 50 and r.api_executions == 2
    assert r.stats["sum(rate(x[5m]))"].count == 2


@pytest.mark.unit
def test_window_edges_future_lines_and_bad_lines(tmp_path: Path) -> None:
    log = tmp_path / "query.log"
    log.write_text("\n".join([
        entry("a", START - timedelta(seconds=1)), entry("b", START), entry("c", END - timedelta(microseconds=1)),
        entry("d", END), entry("e", END + timedelta(days=400)),  # a clock from the future
        '{"params":{"query":"rate(x[5m]', "not json at all", "[1, 2]", '{"ts": "2026-05-01T10:00:00Z"}',
        entry("f", AT).replace(AT.isoformat(), "yesterday"), "",
    ]) + "\n")
    r = read_query_logs(str(log), Flavor.PROMETHEUS, START, END, root=tmp_path)
    s = r.summary
    assert set(r.stats) == {"b", "c"}
    assert (s.before_window, s.after_window, s.outside_window, s.bad_lines) == (1, 2, 3, 5)
    assert [e.location for e in s.errors] == [f"{log}:{n}" for n in (6, 7, 8, 9, 10)]


@pytest.mark.unit
def test_an_empty_a_missing_and_an_unreadable_log_are_counted_not_raised(tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_text("")
    r = read_query_logs(str(empty), Flavor.PROMETHEUS, START, END, root=tmp_path)
    assert (r.summary.lines, r.api_executions, r.summary.unreadable_files) == (0, 0, 0)
    r = read_query_logs(str(tmp_path / "gone.log"), Flavor.PROMETHEUS, START, END, root=tmp_path)
    assert r.summary.unreadable_files == 1 and r.summary.errors[0].error == "log file does not exist"
    (tmp_path / "dir.log").mkdir()  # exists, cannot be read as a file
    r = read_query_logs(str(tmp_path / "dir.log"), Flavor.PROMETHEUS, START, END, root=tmp_path)
    assert r.summary.unreadable_files == 1 and "cannot be read" in r.summary.errors[0].error
    r = read_query_logs(str(tmp_path / "nothing-*.log"), Flavor.PROMETHEUS, START, END, root=tmp_path)
    assert r.summary.unreadable_files == 1 and r.summary.errors[0].error == "no log file matches"


@pytest.mark.unit
def test_rotated_and_gzipped_logs_are_read_as_users_keep_them(tmp_path: Path) -> None:
    (tmp_path / "query.log").write_text(entry("live", AT) + "\n")
    (tmp_path / "query.log.1").write_text(entry("one", AT) + "\n")
    with gzip.open(tmp_path / "query.log.2.gz", "wt") as fh:
        fh.write(entry("two", AT) + "\n")
    with gzip.open(tmp_path / "query.log-20260501", "wt") as fh:  # gzip'd without the suffix: magic bytes decide
        fh.write(entry("dated", AT) + "\n")
    (tmp_path / "query.log.old.gz").write_text(entry("plain text named .gz", AT) + "\n")  # not a rotation name
    (tmp_path / "query.logger").write_text(entry("another file", AT) + "\n")
    assert [Path(p).name for p in log_sources("query.log", tmp_path)] == [
        "query.log", "query.log-20260501", "query.log.1", "query.log.2.gz"]
    r = read_query_logs("query.log", Flavor.PROMETHEUS, START, END, root=tmp_path)
    assert set(r.stats) == {"live", "one", "two", "dated"}
    r = read_query_logs(str(tmp_path / "query.log*"), Flavor.PROMETHEUS, START, END, root=tmp_path)
    assert set(r.stats) == {"live", "one", "two", "dated", "plain text named .gz", "another file"}


@pytest.mark.unit
def test_a_gzip_cut_short_keeps_what_it_held(tmp_path: Path) -> None:
    data = gzip.compress(("\n".join(entry(f"q{i}", AT) for i in range(2000)) + "\n").encode())
    (tmp_path / "query.log.1.gz").write_bytes(data[: len(data) // 2])
    r = read_query_logs(str(tmp_path / "query.log.1.gz"), Flavor.PROMETHEUS, START, END, root=tmp_path)
    assert r.summary.unreadable_files == 1 and "cannot be read" in r.summary.errors[-1].error
    assert 0 < r.api_executions < 2000


MIMIR_OK = ('ts={ts} caller=handler.go:324 level=info user=tenant-a msg="query stats" component=query-frontend '
            'method=POST path=/prometheus/api/v1/query_range response_time=12ms query_wall_time_seconds=0.5 '
            'fetched_series_count=10 fetched_chunk_bytes=1024 samples_processed=5000 '
            'param_query="sum by (job) (rate(x[5m]))" param_start={start} param_end={ts} param_step=30 status=success')


@pytest.mark.unit
def test_mimir_query_stats_with_missing_fields() -> None:
    ts, start = AT.isoformat(), (AT - timedelta(hours=1)).isoformat()
    lines = [
        MIMIR_OK.format(ts=ts, start=start),
        MIMIR_OK.format(ts=ts, start=start).replace(" query_wall_time_seconds=0.5", ""),  # no timing
        MIMIR_OK.format(ts=ts, start=start).replace(" param_step=30", "").replace(" samples_processed=5000", ""),
        MIMIR_OK.format(ts=ts, start=start).replace(f"ts={ts} ", ""),  # no timestamp: bad
        MIMIR_OK.format(ts=ts, start=start).replace(' param_query="sum by (job) (rate(x[5m]))"', ""),  # no query
        MIMIR_OK.format(ts=ts, start=start).replace("user=tenant-a", "user=tenant-b"),  # another tenant
        'ts=2026-05-01T10:05:00Z msg="query stats" param_query="sum(x', # cut off inside a quoted value
    ]
    s = QueryLogSummary("qf.log")
    got = list(iter_mimir_query_stats(lines, START, END, s, tenant="tenant-a"))
    assert [(e.eval_seconds, e.samples, e.range_seconds, e.step_seconds) for e in got] == [
        (0.5, 5000, 3600.0, 30.0), (None, 5000, 3600.0, 30.0), (0.5, None, 0.0, 0.0)]
    assert {e.origin for e in got} == {Origin.API}
    assert (s.without_timing, s.bad_lines, s.skipped) == (1, 2, 2)


# -- S3 ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    """A moto S3 server of this module's own on 127.0.0.1."""
    import boto3
    from moto.server import ThreadedMotoServer

    from tests.support.net import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket="logs")
    yield client
    server.stop()


@pytest.mark.integration
def test_s3_objects_rotated_and_gzipped_are_streamed(s3: Any) -> None:
    s3.put_object(Bucket="logs", Key="prom-a/query.log", Body=(entry("live", AT) + "\n").encode())
    s3.put_object(Bucket="logs", Key="prom-a/query.log.1.gz",
                  Body=gzip.compress(("\n".join([entry("old", AT)] * 3000) + "\n").encode()))
    s3.put_object(Bucket="logs", Key="prom-a/query.log.2.gz", Body=b"\x1f\x8b not really gzip")
    s3.put_object(Bucket="logs", Key="prom-b/query.log", Body=(entry("other source", AT) + "\n").encode())
    assert log_sources("s3://logs/prom-a/query.log", s3=s3) == [
        "s3://logs/prom-a/query.log", "s3://logs/prom-a/query.log.1.gz", "s3://logs/prom-a/query.log.2.gz"]
    r = read_query_logs("s3://logs/prom-a/query.log", Flavor.PROMETHEUS, START, END, root=Path("/"), s3=lambda: s3)
    assert {t: s.count for t, s in r.stats.items()} == {"live": 1, "old": 3000}
    assert r.summary.unreadable_files == 1 and r.summary.errors[0].location == "s3://logs/prom-a/query.log.2.gz"
    r = read_query_logs("s3://logs/*/query.log", Flavor.PROMETHEUS, START, END, root=Path("/"), s3=lambda: s3)
    assert set(r.stats) == {"live", "other source"}
    r = read_query_logs("s3://logs/prom-c/query.log", Flavor.PROMETHEUS, START, END, root=Path("/"), s3=lambda: s3)
    assert r.summary.unreadable_files == 1 and "cannot be read" in r.summary.errors[0].error
