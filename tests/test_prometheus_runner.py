"""The one query runner: its split / retry / give-up rules against a real HTTP server on 127.0.0.1, and a dead
server (a closed port) given up on in seconds by every workflow that queries Prometheus."""

from __future__ import annotations

import json
import operator
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.net import free_port
from tests.support.servers import Answer, Request, ScriptedServer
from traceo_finops.cardinality.collect import collect_series_by_metric
from traceo_finops.prometheus import (
    PrometheusAuthError,
    PrometheusClient,
    PrometheusHTTPError,
    PrometheusQueryTooLarge,
    PrometheusUnavailable,
    PrometheusUnreachable,
    QueryRunner,
    SourceSpec,
    classify,
)
from traceo_finops.rightsizing import queries as q
from traceo_finops.rightsizing.collect import collect_batch

pytestmark = pytest.mark.unit
PASSWORD = "runner-s3cr3t"
AT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def _echo(hit: Request) -> bytes:
    """A vector with one sample whose label ``q`` is the query asked: shows which piece each answer is for."""
    sample = {"metric": {"q": hit.query["query"][0]}, "value": [0, "1"]}
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": [sample]}}).encode()


OK = Answer(200, _echo)


def _error(status: int, error_type: str, error: str, **headers: str) -> Answer:
    return Answer(status, json.dumps({"status": "error", "errorType": error_type, "error": error}).encode(),
                  headers=headers)


def _runner(url: str, sleeps: list[float] | None = None, **spec: Any) -> QueryRunner:
    values = {"name": "unit", "base_url": url, "retries": 2, "backoff_factor": 0.1, "timeout": 5, **spec}
    return QueryRunner(SourceSpec(**values), concurrency=1,
                       sleep=sleeps.append if sleeps is not None else time.sleep)


def _ask(runner: QueryRunner, piece: list[str]) -> list[str]:
    """Query the piece (its names joined by ``|``) and split it in halves when the server gives up on it."""
    def halves(p: list[str]) -> tuple[list[str], list[str]] | None:
        return (p[:len(p) // 2], p[len(p) // 2:]) if len(p) > 1 else None

    answer = runner.split(lambda c, p: c.query("|".join(p)), piece, halves, operator.add,
                          describe=lambda p: f"piece {'|'.join(p)}")
    return [s["metric"]["q"] for s in answer]


def _asked(server: ScriptedServer) -> list[str]:
    return [h.query["query"][0] for h in server.hits_for("/api/v1/query")]


# ---- the rules, one verdict per kind of failure ---------------------------------------------------------------

def test_errors_classified_for_split_retry_or_fail() -> None:
    def http(status: int, text: str) -> PrometheusHTTPError:
        return PrometheusHTTPError(text, source="s", status=status)

    assert classify(http(503, "answered HTTP 503: timeout: query timed out in expression evaluation")) == "timeout"
    assert classify(http(504, "gateway timeout")) == "timeout"
    assert classify(http(422, "execution: query processing would load too many samples into memory")) == "refused"
    assert classify(http(422, "the query time range exceeds the limit (err-mimir-max-query-length)")) == "refused"
    assert classify(PrometheusUnavailable("GET … timed out (timeout 0.2s): read timeout", source="s")) == "timeout"
    assert classify(PrometheusUnavailable("GET … got no answer: connection refused", source="s")) == "retry"
    assert classify(http(502, "bad gateway")) == "retry" and classify(http(503, "busy")) == "retry"
    assert classify(http(400, "bad_data: parse error")) == "fatal"
    assert classify(PrometheusAuthError("401 tenant 'x'", source="s", status=401)) == "fatal"


def test_no_connection_is_its_own_verdict() -> None:
    refused = PrometheusUnreachable("GET … got no answer: … Connection refused", source="s",
                                    reason="connection refused")
    assert classify(refused) == "unreachable"
    assert classify(PrometheusHTTPError("answered HTTP 500: too many samples", source="s", status=500)) == "refused"
    assert classify(PrometheusQueryTooLarge("piece x: … cannot be split further", source="s")) == "fatal"


@pytest.mark.parametrize(("failure", "verdict"), [
    (_error(422, "execution", "query processing would load too many samples into memory in query execution"),
     "refused"),
    (_error(503, "timeout", "query timed out in expression evaluation"), "timeout"),
    (Answer(504, b"<html>504 Gateway Time-out</html>", "text/html"), "timeout"),
    (Answer(200, _echo, delay=1.0), "timeout"),  # no answer within the client's timeout (0.3 s)
])
def test_a_piece_the_server_gives_up_on_is_split(server: ScriptedServer, failure: Answer, verdict: str) -> None:
    server.route("/api/v1/query", failure, OK, OK)
    with _runner(server.url, timeout=0.3) as runner:
        assert _ask(runner, ["a", "b", "c", "d"]) == ["a|b", "c|d"]
        stats = runner.stats.as_dict()
    assert _asked(server) == ["a|b|c|d", "a|b", "c|d"]  # split at once: the same query is not sent again
    assert stats == {"queries": 3, "splits": 1, "retries": 0, "timeouts": int(verdict == "timeout"),
                     "refused": int(verdict == "refused")}


def test_a_busy_server_is_retried_honouring_retry_after_not_split(server: ScriptedServer) -> None:
    sleeps: list[float] = []
    server.route("/api/v1/query", Answer(503, b"busy", "text/plain", {"Retry-After": "2"}),
                 Answer(429, b"slow down", "text/plain"), OK)
    with _runner(server.url, sleeps) as runner:
        assert _ask(runner, ["a", "b", "c", "d"]) == ["a|b|c|d"]
        assert runner.stats.as_dict()["splits"] == 0 and runner.stats.retries == 2
    assert _asked(server) == ["a|b|c|d"] * 3
    assert sleeps == [2.0, 0.2]  # Retry-After's 2 s over the first backoff (0.1 s); then the backoff doubles


def test_retry_after_is_honoured_for_real(server: ScriptedServer) -> None:
    server.route("/api/v1/query", Answer(429, b"slow down", "text/plain", {"Retry-After": "1"}), OK)
    started = time.monotonic()
    with _runner(server.url, backoff_factor=0) as runner:
        assert runner.call(lambda c: c.query("up"))[0]["metric"] == {"q": "up"}
    assert time.monotonic() - started >= 0.9 and len(server.hits) == 2


def test_a_503_that_outlasts_its_retries_is_split(server: ScriptedServer) -> None:
    sleeps: list[float] = []
    busy = Answer(503, b"Service Unavailable", "text/plain")
    server.route("/api/v1/query", busy, busy, busy, OK, OK)
    with _runner(server.url, sleeps) as runner:
        assert _ask(runner, ["a", "b", "c"]) == ["a", "b|c"]
        assert (runner.stats.retries, runner.stats.splits) == (2, 1)
    assert _asked(server) == ["a|b|c"] * 3 + ["a", "b|c"]


def test_a_piece_that_cannot_be_split_is_refused_once(server: ScriptedServer) -> None:
    sleeps: list[float] = []
    server.route("/api/v1/query", _error(422, "execution", "query processing would load too many samples"))
    with _runner(server.url, sleeps) as runner, pytest.raises(PrometheusQueryTooLarge) as err:
        _ask(runner, ["a", "b"])
    assert _asked(server) == ["a|b", "a"]  # split, then the lone piece refused: never sent twice
    assert str(err.value).startswith("piece a: the server keeps refusing as too large a query that cannot be split "
                                     "further: source 'unit': GET ")
    assert err.value.status == 422 and sleeps == []


def test_a_lone_piece_that_times_out_is_retried_then_given_up(server: ScriptedServer) -> None:
    sleeps: list[float] = []
    server.route("/api/v1/query", _error(503, "timeout", "query timed out in expression evaluation"))
    with _runner(server.url, sleeps) as runner, pytest.raises(PrometheusQueryTooLarge, match="timing out on"):
        _ask(runner, ["a"])
    assert _asked(server) == ["a"] * 3 and sleeps == [0.1, 0.2]


def test_fatal_answers_are_not_retried(server: ScriptedServer) -> None:
    server.route("/api/v1/query", _error(400, "bad_data", "parse error"))
    with _runner(server.url) as runner, pytest.raises(PrometheusHTTPError, match="HTTP 400: bad_data: parse error"):
        _ask(runner, ["a", "b"])
    assert len(server.hits) == 1


def test_concurrency_is_bounded_and_results_keep_their_order(server: ScriptedServer) -> None:
    lock = threading.Lock()
    running, peak = [0], [0]

    def slow(hit: Request) -> bytes:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.15)
        with lock:
            running[0] -= 1
        return _echo(hit)

    server.route("/api/v1/query", Answer(200, slow))
    spec = SourceSpec(name="unit", base_url=server.url, timeout=5)
    with QueryRunner(spec, concurrency=3) as runner:
        got = runner.call_each(lambda c, name: c.query(name)[0]["metric"]["q"], [f"m{i}" for i in range(9)])
        assert runner.stats.queries == 9
    assert got == [f"m{i}" for i in range(9)] and peak[0] == 3


# ---- a server that takes no connection ------------------------------------------------------------------------

def _dead_spec(**extra: Any) -> SourceSpec:
    return SourceSpec(name="dead", base_url=f"http://127.0.0.1:{free_port()}", login="finops", password=PASSWORD,
                      retries=3, **extra)


def _assert_plain_refusal(err: BaseException, spec: SourceSpec, path: str) -> None:
    """The message says what happened (no connection), where (source and URL), and what comes next."""
    text = str(err)
    assert isinstance(err, PrometheusUnreachable) and err.reason == "connection refused"
    assert re.match(rf"source 'dead': cannot connect to {re.escape(spec.base_url)}{path}: connection refused "
                    r"\(\d+ attempts in \d+\.\d s\)\. ", text), text
    assert "the task's retry will try again later" in text
    assert "split" not in text and PASSWORD not in text


def test_connection_refused_is_said_plainly_and_given_up_in_seconds() -> None:
    spec = _dead_spec()
    started = time.monotonic()
    with QueryRunner(spec) as runner, pytest.raises(PrometheusUnreachable) as err:
        runner.call(lambda c: c.query("up"))
    elapsed = time.monotonic() - started
    _assert_plain_refusal(err.value, spec, "/api/v1/query")
    assert "(4 attempts in " in str(err.value)
    # A few attempts over a few seconds (0.5 + 1 + 2 s of waiting), not spec.retries x its backoff per query.
    assert runner.stats.queries == 4 and 3 <= elapsed < 15


def test_connection_refused_is_no_reason_to_split_and_stops_every_query() -> None:
    spec = _dead_spec()
    started = time.monotonic()
    with QueryRunner(spec, concurrency=2) as runner:
        with pytest.raises(PrometheusUnreachable) as err:
            runner.map(lambda piece: _ask(runner, piece), [["a", "b", "c", "d"]] * 12)
        stats = runner.stats.as_dict()
        with pytest.raises(PrometheusUnreachable):  # given up on: later queries fail at once, without a request
            runner.call(lambda c: c.query("up"))
        assert runner.stats.queries == stats["queries"]
    _assert_plain_refusal(err.value, spec, "/api/v1/query")
    assert stats["splits"] == 0 and stats["queries"] <= 2 * 4  # two workers, four attempts each at most
    assert time.monotonic() - started < 15


def test_a_host_that_does_not_resolve_is_said_plainly() -> None:
    spec = SourceSpec(name="typo", base_url="http://prometheus.finops-test.invalid:9090", retries=3)
    started = time.monotonic()
    with QueryRunner(spec) as runner, pytest.raises(PrometheusUnreachable) as err:
        runner.call(lambda c: c.tsdb_status())
    assert str(err.value).startswith("source 'typo': cannot connect to "
                                     "http://prometheus.finops-test.invalid:9090/api/v1/status/tsdb: DNS lookup failed")
    assert time.monotonic() - started < 15


def test_the_client_alone_tells_refused_from_other_failures(server: ScriptedServer) -> None:
    port = free_port()
    with PrometheusClient(SourceSpec(name="dead", base_url=f"http://127.0.0.1:{port}", retries=0)) as client, \
            pytest.raises(PrometheusUnreachable) as err:
        client.labels()
    assert err.value.reason == "connection refused" and err.value.status is None
    server.route("/api/v1/labels", Answer(200, b"{}", delay=1.0))
    with PrometheusClient(SourceSpec(name="slow", base_url=server.url, retries=0, timeout=0.2)) as client, \
            pytest.raises(PrometheusUnavailable) as slow:
        client.labels()
    assert not isinstance(slow.value, PrometheusUnreachable) and classify(slow.value) == "timeout"


def test_every_workflow_gives_up_on_a_dead_server_in_seconds() -> None:
    """Right-sizing used to retry a dead server for ~70 s per batch and then blame a query that "cannot be split
    further"; the cardinality census used urllib3's retries per request. Both now stop within seconds."""
    spec = _dead_spec()
    res = q.choose_resolution(86_400, 300, 60)
    started = time.monotonic()
    with pytest.raises(PrometheusUnreachable) as sizing:
        collect_batch(spec, q.Batch(("shop", "pay")), res, AT)
    assert time.monotonic() - started < 15
    _assert_plain_refusal(sizing.value, spec, "/api/v1/(query|series)")  # whichever query went first
    started = time.monotonic()
    with PrometheusClient(spec) as client, pytest.raises(PrometheusUnreachable) as census:
        collect_series_by_metric(client, "dead", AT)
    assert time.monotonic() - started < 15
    _assert_plain_refusal(census.value, spec, "/api/v1/status/tsdb")
