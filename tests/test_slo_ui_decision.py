"""The deploy decision for deploy pipelines: ``GET /finops/api/slo/decision?service=X`` of the FinOps UI page.

A small lake written by the kit's real publish holds two committed ``finops_slo`` reports a day apart, each with
the decision files the workflow writes (``workflow.decision_files``) for a Prometheus source and a Mimir tenant.
Checked on ``traceo_finops.ui.slo_decision`` and through a real ``airflow api-server`` with the plugin: the
newest report's file is returned as written; a service known to two sources needs ``source``/``tenant`` (409);
an unknown service is 404; the route needs the UI's login like every other (401 without, 403 forged)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.support.ui_server import api_server
from tests.support.ui_server import http as _http
from traceo_finops import ui
from traceo_finops.config import FinopsConfig
from traceo_finops.kit.context import RunContext, Target, TargetKind, slug
from traceo_finops.kit.outcome import TargetResult
from traceo_finops.kit.publish import Report, publish
from traceo_finops.reports import ReportStore
from traceo_finops.slo import workflow
from traceo_finops.slo.dataset import SLO_BUDGET
from traceo_finops.slo.recommend import Budget
from traceo_finops.slo.spec import parse_spec
from traceo_finops.window import Window

ROOT = Path(__file__).resolve().parents[1]
DAYS = (date(2026, 12, 4), date(2026, 12, 5))
PROM = Target(TargetKind.SOURCE, "prom-a", conn_id="prometheus_default")
TEAM_A = Target(TargetKind.TENANT, "mimir", "team-a", conn_id="mimir")
SPEC = """version: prometheus/v1
service: {service}
slos:
  - name: availability
    objective: 99.9
    sli:
      events:
        error_query: sum(rate(reqs_total{{service="{service}",code=~"5.."}}[{{{{.window}}}}]))
        total_query: sum(rate(reqs_total{{service="{service}"}}[{{{{.window}}}}]))
"""


def _publish_slo_report(store: ReportStore, day: date, errors: float) -> dict[str, Any]:
    """One finops_slo report: checkout on both targets, search on the Prometheus source only."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    window = {"window_start": start, "window_end": start + timedelta(days=1)}
    rows, artifacts = [], {}
    for target, services in ((PROM, ("checkout", "search")), (TEAM_A, ("checkout",))):
        mine = []
        for service in services:
            [slo] = parse_spec(SPEC.format(service=service), f"{service}.yml").slos
            budget = Budget(slo.objective, slo.period, errors, 1_000_000.0, {"1h": 1.0})
            mine.append(workflow.budget_row(target, slo, budget, window))
        for name, text in workflow.decision_files(target, mine, start + timedelta(days=1)).items():
            artifacts[(SLO_BUDGET.name, f"{slug(target.source, target.tenant)}-{name}")] = text.encode()
        rows += mine
    ctx = RunContext(cfg=FinopsConfig.model_construct(), workflow="slo", dag_id=ui.SLO_DAG, run_id=f"slo-{day}",
                     window=Window(window["window_start"], window["window_end"]), store_factory=lambda _cfg: store)
    return dict(publish(ctx, Report(datasets=[(SLO_BUDGET, rows)], artifacts=artifacts),
                        [TargetResult(PROM), TargetResult(TEAM_A)]))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("slo-lake")
    store = ReportStore(str(root))
    older = _publish_slo_report(store, DAYS[0], errors=0.0)  # everything deployable
    newer = _publish_slo_report(store, DAYS[1], errors=800.0)  # 20 % of the budget left: no deploy
    return {"root": root, "store": store, "older": older, "newer": newer}


def _file(marker: dict[str, Any], name: str) -> dict[str, Any]:
    [uri] = [u for u in marker["artifacts"] if u.endswith(name)]
    return dict(json.loads(Path(uri.removeprefix("file://")).read_text()))


@pytest.mark.unit
def test_the_newest_reports_decision_file_is_returned_as_written(lake: dict[str, Any]) -> None:
    got = ui.slo_decision(lake["store"], "search")
    written = _file(lake["newer"], "prom-a-search.decision.json")
    assert got == {**written, "report_date": DAYS[1].isoformat()}
    assert (got["decision"], got["deploy_allowed"]) == ("no_deploy", False)  # not the older report's "deploy"
    assert _file(lake["older"], "prom-a-search.decision.json")["decision"] == "deploy"


@pytest.mark.unit
def test_a_service_on_two_targets_needs_source_or_tenant(lake: dict[str, Any]) -> None:
    with pytest.raises(ui.DecisionAmbiguous) as err:
        ui.slo_decision(lake["store"], "checkout")
    assert "source='mimir' tenant='team-a'" in str(err.value) and "source='prom-a' tenant=''" in str(err.value)
    assert ui.slo_decision(lake["store"], "checkout", tenant="team-a")["tenant"] == "team-a"
    assert ui.slo_decision(lake["store"], "checkout", source="prom-a") == {
        **_file(lake["newer"], "prom-a-checkout.decision.json"), "report_date": DAYS[1].isoformat()}


@pytest.mark.unit
def test_unknown_service_and_empty_lake_are_not_found(lake: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ui.DecisionNotFound, match="service 'out' has no SLO decision in the finops_slo report "
                                                  "of 2026-12-05"):
        ui.slo_decision(lake["store"], "out")  # "checkout" ends with "out": the file's own service is checked
    with pytest.raises(ui.DecisionNotFound, match="'search', tenant 'team-a' has no SLO decision"):
        ui.slo_decision(lake["store"], "search", tenant="team-a")
    with pytest.raises(ui.DecisionNotFound, match="no committed finops_slo report"):
        ui.slo_decision(ReportStore(str(tmp_path)), "search")


@pytest.fixture(scope="module")
def server(lake: dict[str, Any], airflow_db: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real api-server with the plugin over the lake; always stopped."""
    with api_server(tmp_path_factory.mktemp("slo-ui-server"), lake["root"]) as srv:
        yield srv


def _decision(server: dict[str, Any], token: str | None = None, **params: str) -> tuple[int, Any, dict[str, str]]:
    status, body, headers = _http(f"{server['base']}/finops/api/slo/decision?{urlencode(params)}", token=token)
    return status, json.loads(body), headers


@pytest.mark.integration
def test_a_deploy_pipeline_reads_the_decision_with_the_ui_login(server: dict[str, Any], lake: dict[str, Any]) -> None:
    assert _http(f"{server['base']}/finops/api/slo/decision?service=search")[0] == 401
    assert _http(f"{server['base']}/finops/api/slo/decision?service=search", token="forged.jwt.token")[0] == 403
    status, body, headers = _decision(server, server["token"], service="search")
    assert status == 200 and headers.get("cache-control", headers.get("Cache-Control")) == "no-store"
    assert body == {**_file(lake["newer"], "prom-a-search.decision.json"), "report_date": DAYS[1].isoformat()}
    status, body, _ = _decision(server, server["token"], service="checkout")
    assert status == 409 and "ask with source" in body["detail"]
    status, body, _ = _decision(server, server["token"], service="checkout", source="mimir", tenant="team-a")
    assert status == 200 and (body["source"], body["tenant"], body["decision"]) == ("mimir", "team-a", "no_deploy")
    status, body, _ = _decision(server, server["token"], service="nope")
    assert status == 404 and "'nope' has no SLO decision" in body["detail"]
    assert _http(f"{server['base']}/finops/api/slo/decision", token=server["token"])[0] == 422  # service is required
