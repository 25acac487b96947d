"""PrometheusClient against a real local HTTP server (recorded Mimir/Prometheus answers, scripted
failures) and, marked ``integration``, against the real Debian Prometheus binary."""

from __future__ import annotations

import base64
import json
import logging
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import promql_parser
import pytest
import yaml

from tests.support.mimir import FIXTURES as MIMIR_FIXTURES
from tests.support.net import free_port
from tests.support.prometheus import PROMETHEUS, local_prometheus, prometheus_client
from tests.support.servers import Answer, Request, ScriptedServer
from traceo_finops.prometheus import (
    PrometheusAuthError,
    PrometheusBadResponse,
    PrometheusClient,
    PrometheusError,
    PrometheusHTTPError,
    PrometheusUnavailable,
    SourceSpec,
    literal_regex,
    quote,
    re2_escape,
    selector,
)

FIXTURES = MIMIR_FIXTURES  # ../shared/fixtures/mimir beside the checkout
PASSWORD = "s3cr3t-Pa55w0rd"
LOGIN = "finops"
TOKEN = base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()
TRICKY = 'quote " back\\slash\nnewline\ttab ünï 😀 {a="b"} \u2028'


# ---- a scripted real HTTP server (tests.support.servers) ---------------------------------------------

@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def _index() -> dict[str, tuple[int, str, str]]:
    rows = {}
    for line in (FIXTURES / "index.tsv").read_text().splitlines():
        name, status, ctype, url = line.split("\t")
        rows[name.removesuffix("(.txt)")] = (int(status), ctype, url)
    return rows


INDEX = _index()


@dataclass
class Recorded:
    answer: Answer
    path: str
    query: dict[str, list[str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def recorded(name: str) -> Recorded:
    """A recorded fixture: its exact body and content type, and the path and params it was asked with."""
    status, ctype, url = INDEX[name]
    file = FIXTURES / f"{name}.json"
    body = (file if file.exists() else FIXTURES / f"{name}.txt").read_bytes()
    parts = urlsplit(url)
    return Recorded(Answer(status, body, ctype), parts.path, parse_qs(parts.query), body)


def serve(server: ScriptedServer, name: str) -> Recorded:
    rec = recorded(name)
    server.route(rec.path, rec.answer)
    return rec


def client_for(server: ScriptedServer, path: str = "", **spec: Any) -> PrometheusClient:
    return prometheus_client(server.url + path, **{"name": "devstack", "retries": 2, "backoff_factor": 0, "timeout": 5,
                                                   **spec})


def assert_params_sent(hit: Request, rec: Recorded) -> None:
    """Every parameter the recorder sent was sent the same way by the client."""
    for key, values in rec.query.items():
        assert hit.query.get(key) == values, key


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# ---- SourceSpec and the selector helper ----------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize(("host", "port", "schema", "extra", "base_url", "api_url", "root_url"), [
    ("127.0.0.1", 9090, None, {}, "http://127.0.0.1:9090", "http://127.0.0.1:9090", "http://127.0.0.1:9090"),
    ("https://mimir.example.com/prometheus/", None, "http", {"flavor": "mimir"},
     "https://mimir.example.com/prometheus", "https://mimir.example.com/prometheus", "https://mimir.example.com"),
    ("mimir.internal", "8080", "https", {"flavor": "mimir"},
     "https://mimir.internal:8080", "https://mimir.internal:8080/prometheus", "https://mimir.internal:8080"),
    ("http://gw.example:80/api/prom", 80, None, {"flavor": "mimir"},
     "http://gw.example:80/api/prom", "http://gw.example:80/api/prom", "http://gw.example:80/api/prom"),
])
def test_spec_from_connection_fields_urls(host, port, schema, extra, base_url, api_url, root_url):
    spec = SourceSpec.from_connection_fields("src", host, port, schema, None, None, extra)
    assert (spec.base_url, spec.api_url, spec.root_url) == (base_url, api_url, root_url)


@pytest.mark.unit
def test_spec_from_connection_fields_extras_and_secrets():
    spec = SourceSpec.from_connection_fields(
        "prod", "mimir", 8080, "https", LOGIN, PASSWORD,
        {"flavor": "mimir", "tenant": "team-a", "headers": '{"X-Token": "tok-123456"}', "verify": "false",
         "timeout": "12.5", "retries": 5, "backoff_factor": 0.1})
    assert (spec.tenant, spec.login, spec.password.get_secret_value()) == ("team-a", LOGIN, PASSWORD)
    assert (spec.headers, spec.verify, spec.timeout) == ({"X-Token": "tok-123456"}, False, 12.5)
    assert (spec.retries, spec.backoff_factor) == (5, 0.1)
    ca = SourceSpec.from_connection_fields("x", "h", None, None, None, None, {"verify": "/etc/ca.pem"})
    assert ca.verify == "/etc/ca.pem"
    for text in (repr(spec), str(spec), repr(PrometheusClient(spec))):
        assert PASSWORD not in text and "tok-123456" not in text


@pytest.mark.unit
@pytest.mark.parametrize(("host", "port", "problem"), [
    ("http://h:1", 2, "host has port 1 but the port field says 2"),
    ("", None, "the connection has no host"),
    ("ftp://h", None, "http:// or https://"),
    (f"http://{LOGIN}:{PASSWORD}@h", None, "must not carry credentials"),
])
def test_spec_invalid_connection_names_source(host, port, problem):
    with pytest.raises(ValueError, match=r"^source 'bad': invalid connection settings") as err:
        SourceSpec.from_connection_fields("bad", host, port, None, LOGIN, PASSWORD, {})
    assert problem in str(err.value) and PASSWORD not in str(err.value)


@pytest.mark.unit
def test_selector_escapes_values_so_they_round_trip():
    text = selector("http_requests_total", job=TRICKY, path=("!~", "/api/.*"), **{"class": "x"})
    expr = promql_parser.parse(text)
    assert expr.name == "http_requests_total"
    got = {(m.name, str(m.op), m.value) for m in expr.matchers.matchers}
    assert ("job", "MatchOp.Equal", TRICKY) in got and ("class", "MatchOp.Equal", "x") in got
    assert ("path", "MatchOp.NotRe", "/api/.*") in got
    assert promql_parser.parse(selector("app.requests")).matchers.matchers[0].value == "app.requests"
    for bad in ({"bad-name": "x"}, {"job": ("==", "x")}):
        with pytest.raises(ValueError):
            selector("up", **bad)
    with pytest.raises(ValueError):
        selector()


@pytest.mark.unit
def test_name_regex_escapes_only_metacharacters():
    assert literal_regex(["up", "a.b", "q+(x)", "x|y", "c:d_e"]) == r"up|a\.b|q\+\(x\)|x\|y|c:d_e"
    pattern = re.compile(literal_regex(["a.b", "q+(x)"]))
    assert pattern.fullmatch("a.b") and pattern.fullmatch("q+(x)")
    assert not pattern.fullmatch("axb") and not pattern.fullmatch("qq(x)")


@pytest.mark.unit
@pytest.mark.parametrize("value", ["team.a", "b+c", "x|y", "(a)[b]{c}", "^s$", "a\\b", "q?*", "ünï-😀 ok"])
def test_re2_escape_is_a_literal_for_python_and_promql(value):
    escaped = re2_escape(value)
    assert re.fullmatch(escaped, value) and not re.fullmatch(escaped, value + "x")
    # promql-parser checks the regex with Rust's regex crate (RE2 syntax): it must parse as a matcher value.
    matcher = promql_parser.parse(selector("up", ns=("=~", escaped))).matchers.matchers[0]
    assert matcher.value == escaped


# ---- every recorded answer through the client ----------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize(("method", "fixture"), [
    ("tsdb_status", "prometheus_status_tsdb"),
    ("flags", "prometheus_status_flags"),
    ("runtimeinfo", "prometheus_status_runtimeinfo"),
    ("buildinfo", "prometheus_status_buildinfo"),
])
def test_prometheus_status_fixtures(server, method, fixture):
    rec = serve(server, fixture)
    assert getattr(client_for(server), method)() == rec.json()["data"]
    assert [h.path for h in server.hits] == [rec.path]


@pytest.mark.unit
def test_tsdb_status_sends_limit(server):
    rec = serve(server, "prometheus_status_tsdb")
    assert client_for(server).tsdb_status(limit=50)["headStats"] == rec.json()["data"]["headStats"]
    assert server.hits[0].query == {"limit": ["50"]}


@pytest.mark.unit
@pytest.mark.parametrize(("fixture", "path", "flavor"), [
    ("prometheus_query_count_all", "", "prometheus"),
    ("mimir_query_count_all", "/prometheus", "mimir"),
    ("mimir_query_count_all", "", "mimir"),  # bare Mimir root: the client adds /prometheus
])
def test_query_and_series_count_fixtures(server, fixture, path, flavor):
    rec = serve(server, fixture)
    client = client_for(server, path, flavor=flavor)
    promql = rec.query["query"][0]
    assert client.query(promql) == rec.json()["data"]["result"]
    assert client.series_count('{__name__=~".+"}') == int(rec.json()["data"]["result"][0]["value"][1])
    for hit in server.hits:  # both calls sent exactly the recorded PromQL
        assert_params_sent(hit, rec)


@pytest.mark.unit
@pytest.mark.parametrize("path", ["", "/prometheus"])
def test_mimir_prometheus_api_fixtures(server, path):
    build, labels, job = (serve(server, n) for n in ("mimir_status_buildinfo", "mimir_labels",
                                                     "mimir_label_job_values"))
    client = client_for(server, path, flavor="mimir")
    assert client.buildinfo() == build.json()["data"]
    assert client.labels() == labels.json()["data"]
    assert client.label_values("job") == job.json()["data"]
    assert [h.path for h in server.hits] == [build.path, labels.path, job.path]


@pytest.mark.unit
@pytest.mark.parametrize(("fixture", "call"), [
    ("mimir_cardinality_label_names_limit20", lambda c: c.cardinality_label_names(limit=20)),
    ("mimir_cardinality_label_names_active_job_mimir",
     lambda c: c.cardinality_label_names(selector(job="mimir"), count_method="active", limit=5)),
    ("mimir_cardinality_label_values_name_limit20",
     lambda c: c.cardinality_label_values(["__name__"], limit=20)),
    ("mimir_cardinality_label_values_job_instance",
     lambda c: c.cardinality_label_values(["job", "instance"])),
    ("mimir_cardinality_label_values_job_active",
     lambda c: c.cardinality_label_values(["job"], count_method="active")),
])
def test_cardinality_fixtures(server, fixture, call):
    rec = serve(server, fixture)
    assert call(client_for(server, "/prometheus", flavor="mimir")) == rec.json()
    assert len(server.hits) == 1
    assert_params_sent(server.hits[0], rec)


@pytest.mark.unit
@pytest.mark.parametrize(("fixture", "sel"), [
    ("mimir_cardinality_active_series_up", selector(__name__="up")),
    ("mimir_cardinality_active_series_job", selector(job=("=~", ".+"))),
])
def test_cardinality_active_series_fixtures(server, fixture, sel):
    rec = serve(server, fixture)
    series = client_for(server, flavor="mimir").cardinality_active_series(sel)
    assert series == rec.json()["data"]
    assert server.hits[0].query["selector"] == rec.query["selector"]  # the helper built the recorded text


@pytest.mark.unit
def test_cardinality_label_values_chunks_and_merges(server):
    first, second = recorded("mimir_cardinality_label_values_name_limit20"), \
        recorded("mimir_cardinality_label_values_job_instance")
    server.route(first.path, first.answer, second.answer)
    names = [f"label_{i}" for i in range(150)] + ["label_0"]  # duplicate asked once
    merged = client_for(server, flavor="mimir").cardinality_label_values(names, selector='{job="mimir"}')
    sent = [h.query["label_names[]"] for h in server.hits]
    assert [len(s) for s in sent] == [100, 50] and sent[0] + sent[1] == names[:150]
    assert all(h.query["selector"] == ['{job="mimir"}'] for h in server.hits)
    labels = first.json()["labels"] + second.json()["labels"]
    assert merged["series_count_total"] == max(first.json()["series_count_total"],
                                               second.json()["series_count_total"])
    assert merged["labels"] == sorted(labels, key=lambda x: (-x["series_count"], x["label_name"]))
    assert {x["label_name"] for x in merged["labels"]} == {"__name__", "job", "instance"}


@pytest.mark.unit
@pytest.mark.parametrize(("fixture", "call"), [
    ("mimir_cardinality_active_series_no_selector_err", lambda c: c.cardinality_active_series("{x=\"y\"}")),
    ("mimir_cardinality_label_names_limit501_err", lambda c: c.cardinality_label_names(limit=501)),
    ("mimir_cardinality_label_values_missing_err", lambda c: c.cardinality_label_values(["job"])),
])
def test_mimir_text_plain_errors(server, fixture, call):
    rec = serve(server, fixture)
    with pytest.raises(PrometheusHTTPError) as err:
        call(client_for(server, "/prometheus", flavor="mimir"))
    body = rec.body.decode().strip()
    assert str(err.value) == f"source 'devstack': GET {server.url}{rec.path} answered HTTP 400: {body}"
    assert err.value.status == 400 and len(server.hits) == 1  # a 400 is not retried


@pytest.mark.unit
def test_mimir_user_stats_and_config_at_the_root(server):
    stats = serve(server, "mimir_user_stats")
    diff = (FIXTURES / "mimir_config_diff.yaml").read_bytes()
    server.route("/config", Answer(200, diff, "text/plain; charset=utf-8"))
    client = client_for(server, "/prometheus", flavor="mimir")
    assert client.mimir_user_stats() == stats.json()
    assert client.mimir_config() == yaml.safe_load(diff)
    assert [(h.path, h.query) for h in server.hits] == [("/api/v1/user_stats", {}),
                                                        ("/config", {"mode": ["diff"]})]


@pytest.mark.unit
def test_mimir_ruler_rules(server):
    rule = {"record": "job:up:sum", "expr": f"sum(up{{x={quote(TRICKY)}}})"}
    rules = {"team-a": [{"name": "g1", "rules": [rule]}]}
    server.route("/prometheus/config/v1/rules",
                 Answer(200, yaml.safe_dump(rules, allow_unicode=True).encode(), "application/yaml"),
                 Answer(404, b"no rule groups found\n", "text/plain; charset=utf-8"),
                 Answer(404, b"404 page not found\n", "text/plain; charset=utf-8"))
    client = client_for(server, flavor="mimir", tenant="team-a")
    assert client.mimir_ruler_rules() == rules
    assert client.mimir_ruler_rules() == {}
    with pytest.raises(PrometheusHTTPError, match="answered HTTP 404: 404 page not found"):
        client.mimir_ruler_rules()
    assert {h.headers["X-Scope-OrgID"] for h in server.hits} == {"team-a"}


@pytest.mark.unit
def test_config_yaml_and_rules(server):
    text = (FIXTURES / "prometheus.yml.used").read_text()
    groups = [{"name": "g", "file": "r.yml", "rules": [{"name": "job:up:sum", "query": "sum by (job) (up)",
                                                        "type": "recording", "health": "ok"}]}]
    server.route("/api/v1/status/config", Answer(200, _json({"status": "success", "data": {"yaml": text}})))
    server.route("/api/v1/rules", Answer(200, _json({"status": "success", "data": {"groups": groups}})))
    client = client_for(server)
    assert client.config_yaml() == text
    assert client.rules("record") == groups and server.hits[-1].query == {"type": ["record"]}


@pytest.mark.unit
def test_unicode_label_values_round_trip(server):
    sample = {"metric": {"__name__": "up", "job": TRICKY}, "value": [1795858753.977, "1"]}
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [sample]}},
                      ensure_ascii=False).encode()
    server.route("/api/v1/query", Answer(200, body))
    sel = selector("up", job=TRICKY)
    assert client_for(server).query(sel) == [sample]
    assert server.hits[0].query["query"] == [sel]


@pytest.mark.unit
def test_scalar_and_time_and_range(server):
    server.route("/api/v1/query", Answer(200, _json(
        {"status": "success", "data": {"resultType": "scalar", "result": [1700000000, "42"]}})))
    matrix = [{"metric": {"job": "a"}, "values": [[1700000000, "1"], [1700000060, "2"]]}]
    server.route("/api/v1/query_range", Answer(200, _json(
        {"status": "success", "data": {"resultType": "matrix", "result": matrix}})))
    client = client_for(server)
    at = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert client.query("42", time=at) == [{"metric": {}, "value": [1700000000, "42"]}]
    assert server.hits[0].query["time"] == [str(at.timestamp())]
    assert client.query_range("up", at, at + timedelta(minutes=1), timedelta(seconds=60)) == matrix
    assert {k: v[0] for k, v in server.hits[1].query.items()} == {
        "query": "up", "start": "1700000000", "end": "1700000060", "step": "60.0"}


@pytest.mark.unit
def test_prometheus_flavor_refuses_mimir_endpoints(server):
    with pytest.raises(PrometheusError, match=r"^source 'devstack': the cardinality API exists only on "):
        client_for(server).cardinality_label_names()
    assert server.hits == []


# ---- failures ------------------------------------------------------------------------------------

@pytest.mark.unit
def test_recovers_after_503_and_logs_each_request(server, caplog):
    caplog.set_level(logging.DEBUG, logger="traceo_finops")
    rec = recorded("prometheus_status_tsdb")
    server.route(rec.path, Answer(503, b"busy"), rec.answer)
    assert client_for(server).tsdb_status() == rec.json()["data"]
    assert len(server.hits) == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "traceo_finops.prometheus.client"]
    assert len(lines) == 1 and f"GET {server.url}/api/v1/status/tsdb -> HTTP 200 in" in lines[0]
    assert lines[0].endswith("(1 retries)")


@pytest.mark.unit
def test_always_503_names_url_status_and_retries(server):
    server.route("/api/v1/status/tsdb", Answer(503, b"ingester unavailable\n\n" + b"x" * 500, "text/plain"))
    with pytest.raises(PrometheusHTTPError) as err:
        client_for(server, retries=2).tsdb_status()
    assert str(err.value) == (f"source 'devstack': GET {server.url}/api/v1/status/tsdb answered HTTP 503 "
                              f"after 2 retries: ingester unavailable {'x' * 179}…")
    assert (err.value.status, err.value.url, len(server.hits)) == (503, f"{server.url}/api/v1/status/tsdb", 3)


@pytest.mark.unit
def test_retry_after_is_respected(server):
    rec = recorded("prometheus_status_flags")
    server.route(rec.path, Answer(429, b"slow down", "text/plain", {"Retry-After": "1"}), rec.answer)
    started = time.monotonic()
    assert client_for(server).flags() == rec.json()["data"]
    assert time.monotonic() - started >= 0.9 and len(server.hits) == 2


@pytest.mark.unit
def test_auth_error_names_tenant_and_never_shows_the_password(server, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, urllib3 included
    echo = Answer(401, lambda hit: f"invalid credentials: {hit.headers['Authorization']}".encode(),
                  "text/plain")
    server.route("/api/v1/status/buildinfo", echo)
    server.route("/api/v1/query", Answer(403, _json({"status": "error", "errorType": "forbidden",
                                                     "error": "tenant team-a not allowed"})))
    client = client_for(server, tenant="team-a", login=LOGIN, password=PASSWORD,
                        headers={"X-Api-Key": "k-987654"})
    with pytest.raises(PrometheusAuthError) as err:
        client.buildinfo()
    with pytest.raises(PrometheusAuthError) as err2:
        client.query("up")
    assert str(err.value) == (f"source 'devstack': GET {server.url}/api/v1/status/buildinfo answered "
                              "HTTP 401 (not authenticated for tenant 'team-a'; check the connection's "
                              "login/password and tenant): invalid credentials: Basic ***")
    assert "HTTP 403 (not allowed for tenant 'team-a'" in str(err2.value)
    assert str(err2.value).endswith("forbidden: tenant team-a not allowed")
    assert len(server.hits) == 2  # 401/403 are not retried
    for hit in server.hits:
        assert hit.headers["X-Scope-OrgID"] == "team-a"
        assert hit.headers["Authorization"] == f"Basic {TOKEN}"
        assert hit.headers["X-Api-Key"] == "k-987654"
    shown = [str(err.value), repr(err.value.args), str(err2.value), caplog.text, repr(client)]
    assert caplog.records and not any(s in text for text in shown for s in (PASSWORD, TOKEN, "k-987654"))


@pytest.mark.unit
def test_non_json_success_body(server):
    html = Answer(200, b"<html>login page</html>", "text/html")
    server.route("/api/v1/status/flags", html)
    server.route("/api/v1/query", html)
    client = client_for(server)
    for call, path in ((client.flags, "/api/v1/status/flags"), (lambda: client.query("up"), "/api/v1/query")):
        with pytest.raises(PrometheusBadResponse) as err:
            call()
        assert str(err.value) == (f"source 'devstack': GET {server.url}{path} answered HTTP 200 with a "
                                  "non-JSON body (text/html): <html>login page</html>")


@pytest.mark.unit
def test_status_error_envelope(server):
    envelope = {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "(" '}
    server.route("/api/v1/query", Answer(200, _json(envelope)), Answer(400, _json(envelope)))
    server.route("/api/v1/labels", Answer(200, _json(envelope)))
    client = client_for(server)
    with pytest.raises(PrometheusBadResponse, match=r"/api/v1/query answered status='error': bad_data: "):
        client.query("sum(")
    with pytest.raises(PrometheusHTTPError, match=r"/api/v1/query answered HTTP 400: bad_data: parse error"):
        client.query("sum(")
    with pytest.raises(PrometheusBadResponse, match=r"/api/v1/labels answered status='error': bad_data"):
        client.labels()
    assert len(server.hits) == 3


@pytest.mark.unit
def test_missing_keys(server):
    server.route("/prometheus/api/v1/cardinality/label_names", Answer(200, _json({"cardinality": []})))
    server.route("/api/v1/status/tsdb", Answer(200, _json({"status": "success", "data": {}})))
    with pytest.raises(PrometheusBadResponse, match="/prometheus/api/v1/cardinality/label_names answer lacks "
                                                    "label_values_count_total, label_names_count: "):
        client_for(server, flavor="mimir").cardinality_label_names()
    with pytest.raises(PrometheusBadResponse, match="/api/v1/status/tsdb answer lacks headStats"):
        client_for(server).tsdb_status()


@pytest.mark.unit
def test_connection_refused(caplog):
    caplog.set_level(logging.DEBUG)
    port = free_port()
    client = PrometheusClient(SourceSpec(name="devstack", base_url=f"http://127.0.0.1:{port}", retries=1,
                                         backoff_factor=0, password=PASSWORD, login=LOGIN))
    calls = ((client.tsdb_status, "/api/v1/status/tsdb"), (lambda: client.query("up"), "/api/v1/query"))
    for call, path in calls:
        with pytest.raises(PrometheusUnavailable) as err:
            call()
        assert str(err.value).startswith(
            f"source 'devstack': GET http://127.0.0.1:{port}{path} got no answer after 1 retries: ")
        assert "Connection refused" in str(err.value) and err.value.status is None
    assert "got no answer" in caplog.text and PASSWORD not in caplog.text and TOKEN not in caplog.text


@pytest.mark.unit
def test_slow_answer_times_out(server):
    server.route("/api/v1/status/runtimeinfo", Answer(200, b"{}", delay=2))
    started = time.monotonic()
    with pytest.raises(PrometheusUnavailable) as err:
        client_for(server, timeout=0.3, retries=1).runtimeinfo()
    assert time.monotonic() - started < 1.9
    assert str(err.value).startswith(f"source 'devstack': GET {server.url}/api/v1/status/runtimeinfo "
                                     "timed out (timeout 0.3s) after 1 retries: ")
    assert len(server.hits) == 2


# ---- the real Debian Prometheus ------------------------------------------------------------------

def _eventually(probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


@pytest.mark.integration
def test_real_prometheus(tmp_path):
    port = free_port()
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n- name: finops-test\n  interval: 1s\n  rules:\n"
                     "  - record: job:up:sum\n    expr: sum by (job) (up)\n")
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": [str(rules)],
              "scrape_configs": [{"job_name": "self", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]}
    data = tmp_path / "data"
    with local_prometheus(tmp_path, config, data=data, port=port):
        spec = SourceSpec.from_connection_fields("itest", "127.0.0.1", port, "http", None, None,
                                                 {"timeout": 10, "retries": 1})
        with PrometheusClient(spec) as client:
            up = _eventually(lambda: client.query("up"))
            assert up[0]["metric"] == {"__name__": "up", "instance": f"127.0.0.1:{port}", "job": "self"}
            assert up[0]["value"][1] == "1"

            head = _eventually(lambda: client.tsdb_status()["headStats"]["numSeries"])
            status = client.tsdb_status(limit=5)
            assert head > 0 and {"numSeries", "chunkCount", "minTime", "maxTime"} <= set(status["headStats"])
            assert all({"name", "value"} == set(x) for x in status["seriesCountByMetricName"])

            flags = client.flags()
            assert flags["web.listen-address"] == f"127.0.0.1:{port}"
            assert flags["storage.tsdb.path"] == str(data)
            assert yaml.safe_load(client.config_yaml())["scrape_configs"][0]["job_name"] == "self"
            version = subprocess.run([PROMETHEUS, "--version"], capture_output=True, text=True)
            assert client.buildinfo()["version"] in version.stdout + version.stderr
            assert "storageRetention" in client.runtimeinfo()

            groups = _eventually(lambda: [g for g in client.rules() if g["rules"][0].get("health") == "ok"])
            rule = groups[0]["rules"][0]
            assert (groups[0]["name"], rule["name"], rule["query"], rule["type"]) == \
                ("finops-test", "job:up:sum", "sum by (job) (up)", "recording")

            assert client.series_count(selector("up", job="self")) == 1
            assert client.series_count(selector("up", job="nope")) == 0
            assert "job" in client.labels() and client.label_values("job") == ["self"]
            # start/end go out in whole seconds: the first scrape may be younger than one second.
            matrix = _eventually(lambda: client.query_range(
                "up", datetime.now(UTC) - timedelta(seconds=10), datetime.now(UTC), timedelta(seconds=1)))
            assert matrix[0]["metric"]["job"] == "self" and matrix[0]["values"]

            # A label value with quotes, backslash, newline and unicode survives a real PromQL round trip.
            echoed = client.query(f'label_replace(vector(1), "v", {quote(TRICKY)}, "", "")')
            assert echoed[0]["metric"]["v"] == TRICKY
            with pytest.raises(PrometheusHTTPError, match=r"GET http://127\.0\.0\.1:\d+/api/v1/query "
                                                          r"answered HTTP 400: bad_data: "):
                client.query("sum(")
