"""Issue 11's bad inputs, through one source's whole step: counted and reported in the run's summary
(``recording_rules_inputs``), never a crash, never a wrong rule."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.net import closed_port_url
from tests.support.servers import Answer, LocalServer, Request
from traceo_finops.config import load_config
from traceo_finops.kit.context import ConnectionFields, RunContext, Target
from traceo_finops.recording_rules import workflow
from traceo_finops.window import Window

START = datetime(2026, 5, 1, tzinfo=UTC)
END = START + timedelta(days=1)
AT = START + timedelta(hours=3)
GOOD = "histogram_quantile(0.9, sum by (le, service) (rate(http_request_duration_seconds_bucket[5m])))"


def line(query: str, ts: datetime = AT, **extra: Any) -> str:
    return json.dumps({"params": {"query": query, "start": ts.isoformat(), "end": ts.isoformat(), "step": 0},
                       "stats": {"timings": {"evalTotalTime": 0.5}}, "ts": ts.isoformat(),
                       "httpRequest": {"path": "/api/v1/query"}, **extra})


def _mine(tmp_path: Path, log: str, url: str, flavor: str = "prometheus", **settings: Any) -> dict[str, Any]:
    source: dict[str, Any] = {"name": "edge", "flavor": flavor}
    key = "query_log"
    if flavor == "mimir":
        source["tenants"] = ["team-a"]
        key = "mimir_query_stats"
    cfg_path = tmp_path / "finops.yaml"
    cfg_path.write_text(yaml.safe_dump({"sources": [source], "workflows": {"recording_rules": {
        key: log, "speedup_runs": 1, **settings}}}))
    ctx = RunContext(load_config(cfg_path), "recording_rules", "finops_recording_rules", "manual__1",
                     Window(START, END), connections=lambda _: ConnectionFields(host=url, extra={"retries": 0}))
    [target] = [Target.from_dict(t) for t in workflow.targets(ctx)]
    return workflow.mine(ctx, target)


def _write(tmp_path: Path, lines: list[str], name: str = "query.log") -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return str(path)


# Nothing to prove in any of these: the source is never asked anything (nothing listens on its port).
@pytest.mark.unit
@pytest.mark.parametrize("case, lines, counters, error", [
    ("truncated and non-JSON lines", [line(GOOD)[:40], "GET /metrics 200", "[]", line(GOOD)],
     {"bad_lines": 3, "api_queries": 1}, "not JSON (truncated?)"),
    ("unparsable PromQL", [line("sum(rate(x[5m])"), line("sum(rate(x[5m])")],
     {"unparsable_queries": 1, "unparsable_executions": 2, "groups": 0}, "unparsable (2 executions)"),
    ("an enormous query", [line("sum(" + "x + " * 10_000 + "x)")] * 3,
     {"enormous_queries": 1, "groups": 0, "api_queries": 3}, None),
    ("lines outside the window and from the future",
     [line(GOOD, START - timedelta(seconds=1)), line(GOOD, END), line(GOOD, END + timedelta(days=3650))],
     {"before_window": 1, "after_window": 2, "api_queries": 0, "groups": 0}, None),
    ("an empty log", [], {"lines": 0, "groups": 0, "unreadable_files": 0}, None),
])
def test_bad_log_lines_are_counted_and_nothing_is_suggested(tmp_path: Path, case: str, lines: list[str],
                                                            counters: dict[str, int], error: str | None) -> None:
    out = _mine(tmp_path, _write(tmp_path, lines), closed_port_url(), min_count=5)
    inputs = out["inputs"]
    assert {k: inputs[k] for k in counters} == counters, case
    assert out["rows"] == []
    assert yaml.safe_load(out["files"]["recording_rules.yml"])["groups"][0]["rules"] == []
    if error:
        assert any(error in e for e in inputs["errors"]), inputs["errors"]


@pytest.mark.unit
def test_a_missing_and_an_unreadable_log_file(tmp_path: Path) -> None:
    out = _mine(tmp_path, str(tmp_path / "nowhere" / "query.log"), closed_port_url())
    assert out["inputs"]["unreadable_files"] == 1 and out["rows"] == []
    assert any("log file does not exist" in e for e in out["inputs"]["errors"])
    broken = tmp_path / "query.log.1.gz"
    broken.write_bytes(gzip.compress(("\n".join([line(GOOD)] * 500) + "\n").encode())[:200])
    out = _mine(tmp_path, str(broken), closed_port_url(), min_count=10_000)
    assert out["inputs"]["unreadable_files"] == 1
    assert any("cannot be read" in e for e in out["inputs"]["errors"])


@pytest.mark.unit
def test_mimir_lines_with_missing_fields(tmp_path: Path) -> None:
    ts = AT.isoformat()
    ok = (f'ts={ts} level=info user=team-a msg="query stats" path=/prometheus/api/v1/query '
          f'query_wall_time_seconds=0.2 param_query="{GOOD.replace(chr(34), chr(92) + chr(34))}" param_time={ts}')
    log = _write(tmp_path, [
        ok,
        ok.replace(" query_wall_time_seconds=0.2", ""),  # no timing: an execution without seconds
        ok.replace(f"ts={ts} ", ""),  # no timestamp: a bad line
        ok.replace(" param_query=", " param_match[]="),  # no query (a series call): skipped
        ok.replace("user=team-a", "user=team-b"),  # another tenant's
    ], "query-frontend.log")
    out = _mine(tmp_path, log, closed_port_url(), flavor="mimir", min_count=5)
    inputs = out["inputs"]
    assert (inputs["tenant"], inputs["api_queries"], inputs["without_timing"], inputs["bad_lines"]) == (
        "team-a", 2, 1, 1)
    assert out["rows"] == []


@pytest.mark.integration
def test_a_server_rule_with_the_suggested_name_and_another_expression(tmp_path: Path) -> None:
    """The server records another expression under the name our rule would get: reported, no rule."""
    impostor = {"name": "legacy", "file": "legacy.yml", "rules": [{
        "type": "recording", "name": "le_service:http_request_duration_seconds_bucket:rate5m", "health": "ok",
        "query": 'sum by (le, service) (rate(http_request_duration_seconds_bucket{job="legacy"}[5m]))'}]}
    asked: list[str] = []

    def respond(req: Request) -> Answer:
        asked.append(req.path)
        if req.path == "/api/v1/rules":
            return Answer(body=json.dumps({"status": "success", "data": {"groups": [impostor]}}).encode())
        return Answer(500, b"the proof must not run for a conflicting rule")

    with LocalServer(respond) as server:
        out = _mine(tmp_path, _write(tmp_path, [line(GOOD)] * 3), server.url)
    [row] = out["rows"]
    assert row["rule_status"] == "rejected" and not row["validated"]
    assert "already has a rule named le_service:http_request_duration_seconds_bucket:rate5m" in \
        row["rejection_reason"]
    assert out["inputs"]["name_conflicts"] == 1 and out["inputs"]["suggested"] == 0
    assert "le_service" not in out["files"]["recording_rules.yml"]
    assert asked == ["/api/v1/rules"]
