"""``docs/add-a-workflow.md`` kept true: its DAG file, run as written on real Airflow (``dag.test``) with the
example package ``tests/example_workflow`` (built only from the kit) against the devstack's Prometheus, does
what the page promises — one committed set, ``run_targets``, ``quality_checks``, Assets, one digest stating its
coverage, and the failure policy when a source is down."""

from __future__ import annotations

import ast
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack import slack_sink
from tests.support.net import free_port
from tests.support.slack import webhook_conn

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "add-a-workflow.md"
WORKFLOW, PACKAGE, DAG_ID = "example", "tests.example_workflow", "finops_example"


def _doc_dag() -> str:
    """The code block under "## The DAG file"."""
    section = DOC.read_text().split("## The DAG file", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/add-a-workflow.md has no python block under '## The DAG file'"
    return match.group(1)


@pytest.fixture
def example_dag(airflow_db: Path, devstack: dict[str, str], finops_config: Path, sink: str, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Any:
    """The doc's DAG file, parsed from a file of its own, its workflow key served by the example package."""
    from airflow.dag_processing.dagbag import DagBag

    from traceo_finops import airflow_adapter

    monkeypatch.setattr(airflow_adapter, "_PACKAGES", dict(airflow_adapter._PACKAGES))  # restored after the test
    airflow_adapter.register_workflow(WORKFLOW, PACKAGE)
    webhook_conn(monkeypatch, "slack_finops", sink, "services/T0EXAMPLE/B0EXAMPLE/example")
    slack_sink.reset(sink)
    path = tmp_path / "dags" / f"{DAG_ID}.py"
    path.parent.mkdir()
    path.write_text(_doc_dag())
    bag = DagBag(dag_folder=str(path))
    assert bag.import_errors == {}
    # dag.test() runs only serialized DAGs: file this one under the configured bundle, as the processor would.
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(bag, "dags-folder", None)
    dag = bag.get_dag(DAG_ID)
    for t in dag.tasks:  # dag.test() waits out real retry delays; the verdict keeps its own (none)
        if t.task_id != "verdict":
            monkeypatch.setattr(t, "retries", 0)
    return dag


def _at() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)


def _up_now(url: str, at: datetime) -> set[tuple[str, str, int]]:
    """What the devstack's Prometheus says ``up`` is at ``at``, asked directly."""
    from traceo_finops.prometheus import PrometheusClient, SourceSpec, sample_value

    with PrometheusClient(SourceSpec(name="direct", base_url=url)) as client:
        return {(s["metric"]["job"], s["metric"]["instance"], int(sample_value(s) or 0))
                for s in client.query("up", time=at)}


def _table(root: Path, dataset: str, day: Any) -> list[dict[str, Any]]:
    from traceo_finops.kit.publish import read_committed
    from traceo_finops.reports import ReportStore

    return read_committed(ReportStore(str(root)), dataset, day, DAG_ID).to_pylist()


@pytest.mark.unit
def test_the_doc_dag_is_wiring_only() -> None:
    code = _doc_dag()
    tree = ast.parse(code)
    docstring = ast.get_docstring(tree) or ""
    assert docstring.startswith("### finops_example")
    lines = [ln for ln in code.split('"""', 2)[2].splitlines() if ln.strip()]
    assert len(lines) <= 30, f"the DAG file has {len(lines)} lines of code besides its docstring"
    imports = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imports == {"__future__", "airflow.sdk", "traceo_finops"}
    # Every kit function the page names exists, and the example package has every function of the contract.
    from traceo_finops import airflow_adapter
    from traceo_finops.kit import outcome, publish

    text = DOC.read_text()
    for name in set(re.findall(r"\bkit\.(\w+)\(", text)):
        assert hasattr(airflow_adapter, name), f"kit.{name} is named in the doc but does not exist"
    for module, name in re.findall(r"kit\.(outcome|publish)\.(\w+)", text):
        assert hasattr({"outcome": outcome, "publish": publish}[module], name), f"kit.{module}.{name}"
    import importlib

    for package in (PACKAGE, "traceo_finops.cardinality", "traceo_finops.rightsizing"):
        workflow = importlib.import_module(f"{package}.workflow")
        assert all(callable(getattr(workflow, f, None)) for f in ("targets", "build", "digest")), package
    for role in ("workflow.py", "collect.py", "recommend.py", "dataset.py", "errors.py"):
        assert f"| `{role}` |" in text
        assert (ROOT / "include" / "traceo_finops" / "rightsizing" / role).exists(), role


@pytest.mark.dag
@pytest.mark.integration
def test_the_doc_dag_runs_and_publishes_one_committed_set(example_dag: Any, devstack: dict[str, str],
                                                          finops_config: Path, sink: str) -> None:
    from airflow.sdk import Asset, CronDataIntervalTimetable

    from tests.example_workflow.dataset import EXAMPLE_UP
    from traceo_finops.slack import delivery_key

    # The header every workflow shares.
    assert isinstance(example_dag.timetable, CronDataIntervalTimetable)
    assert example_dag.default_args["retries"] == 2
    assert example_dag.get_task("verdict").retries == 0 and "finops" in example_dag.tags
    outlets = {a.name for a in example_dag.get_task("write_report").outlets if isinstance(a, Asset)}
    assert outlets == {"finops.example_up", "finops.run_targets", "finops.quality_checks"}

    at = _at()
    run = example_dag.test(logical_date=at)
    assert run.state == "success"
    root = finops_config.parent / "reports"
    rows = _table(root, "example_up", at.date())
    # The report is what the server says, and every row carries this run's id.
    assert {(r["job"], r["instance"], r["up"]) for r in rows} == _up_now(devstack["DEVSTACK_PROM_URL"], at)
    assert {r["source"] for r in rows} == {"devstack"} and {r["run_id"] for r in rows} == {run.run_id}
    assert {r["window_end"] for r in rows} == {at}
    [target] = _table(root, "run_targets", at.date())
    assert (target["target"], target["status"], target["rows_written"]) == ("devstack", "ok", len(rows))
    # A manual run: the configured lookback (default_lookback, the example has no settings) up to its date.
    assert target["window_start"] == at - timedelta(days=1) and target["window_end"] == at
    checks = {r["dataset"]: r for r in _table(root, "quality_checks", at.date())}
    assert set(checks) == {"example_up", "run_targets"} and all(c["success"] for c in checks.values())
    assert checks["example_up"]["expectations_run"] == len(EXAMPLE_UP.expectations) and checks["example_up"]["rows"]

    [post] = [r for r in slack_sink.received(sink) if r.get("delivered")]
    text = json.dumps(post["body"])
    assert f"Scrape targets {at.date()}" in text and "1 of 1 source" in text
    assert f"run key {delivery_key(DAG_ID, run.run_id, 'digest')}" in text


@pytest.mark.dag
@pytest.mark.integration
def test_the_doc_dag_keeps_the_failure_policy(example_dag: Any, finops_config: Path, sink: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    closed = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIRFLOW_CONN_PROM_GONE", json.dumps(
        {"conn_type": "http", "host": f"http://{closed}", "extra": {"timeout": 2, "retries": 0}}))
    cfg = yaml.safe_load(finops_config.read_text())
    cfg["sources"].append({"name": "gone", "conn_id": "prom_gone"})
    finops_config.write_text(yaml.safe_dump(cfg))

    at = _at()
    run = example_dag.test(logical_date=at)
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["write_report"] == states["post_digest"] == "success" and states["verdict"] == "failed"
    root = finops_config.parent / "reports"
    assert {r["source"] for r in _table(root, "example_up", at.date())} == {"devstack"}
    record = {r["target"]: r for r in _table(root, "run_targets", at.date())}
    assert record["devstack"]["status"] == "ok" and record["gone"]["status"] == "failed"
    assert closed in record["gone"]["error"] and "gone" in record["gone"]["error"]
    [post] = [r for r in slack_sink.received(sink) if r.get("delivered")]
    text = json.dumps(post["body"])
    assert "1 of 2 sources" in text and "`gone`" in text


@pytest.mark.unit
def test_an_unknown_workflow_key_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from traceo_finops import airflow_adapter as kit

    monkeypatch.setattr(kit, "_PACKAGES", dict(kit._PACKAGES))
    known = ", ".join(sorted(kit._PACKAGES))
    assert {"cardinality", "rightsizing", "s3_tiering"} <= set(kit._PACKAGES)
    with pytest.raises(AirflowFailException, match=re.escape(f"ConfigError: unknown workflow 'exampel' (known: "
                                                             f"{known})")):
        kit.step("exampel", "targets")
    kit.register_workflow(WORKFLOW, PACKAGE)
    assert kit._workflow(WORKFLOW).__name__ == f"{PACKAGE}.workflow"
    assert kit._workflow("rightsizing").__name__ == "traceo_finops.rightsizing.workflow"
