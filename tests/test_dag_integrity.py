"""Every DAG parses, follows the team rules, and does no heavy work at parse time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dag

ROOT = Path(__file__).resolve().parents[1]
DAG_FILES = sorted((ROOT / "dags").glob("finops_*.py"))
DATA_INTERVAL_TIMETABLES = ("CronDataIntervalTimetable", "DeltaDataIntervalTimetable")
KNOWN_IDS = {"finops_cardinality", "finops_recording_rules", "finops_slo", "finops_rightsizing",
             "finops_s3_tiering", "finops_cost_report"}


@pytest.fixture(scope="module")
def dagbag():  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_there_are_dags() -> None:
    assert DAG_FILES, "no DAG files in dags/"


def test_no_import_errors(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}


def test_team_rules(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert {Path(f).stem for f in map(str, DAG_FILES)} == set(dagbag.dag_ids)
    for dag_id, dag in dagbag.dags.items():
        assert dag_id in KNOWN_IDS, f"{dag_id} is not one of the product's DAG ids"
        assert "finops" in dag.tags, dag_id
        assert dag.doc_md and len(dag.doc_md) > 200, f"{dag_id} has no real doc_md"
        # Windows come from the data interval: a cron string would be a trigger timetable on 3.3 defaults.
        # Asset scheduling may be added (AssetOrTimeSchedule), its time part still a data-interval timetable.
        timetable = dag.timetable
        if type(timetable).__name__ == "AssetOrTimeSchedule":
            timetable = timetable.timetable
        assert type(timetable).__name__ in DATA_INTERVAL_TIMETABLES, dag_id
        for t in dag.tasks:
            assert t.owner == "traceo-finops", (dag_id, t.task_id)
            # The verdict only reports failures already on record: retrying it cannot change them.
            assert t.retries == 0 if t.task_id == "verdict" else t.retries >= 2, (dag_id, t.task_id)


def test_the_cost_report_listens_to_the_upstream_assets(dagbag) -> None:  # type: ignore[no-untyped-def]
    """Weekly, and on every dataset it reads that another DAG publishes — never on its own outputs."""
    from traceo_finops.cost_report.upstream import known_versions

    dag = dagbag.dags["finops_cost_report"]
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
    assert type(dag.timetable.timetable).__name__ == "CronDataIntervalTimetable"
    assert dag.timetable.timetable.expression == "0 0 * * 1"  # Monday 00:00 UTC
    condition = dag.timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"  # any one fresh upstream report triggers a run
    listened = {a.name for a in condition.objects}
    assert listened == {f"finops.{d}" for d in known_versions()} - {"finops.storage"}
    produced: dict[str, set[str]] = {}
    for dag_id, other in dagbag.dags.items():
        for t in other.tasks:
            for outlet in t.outlets:
                produced.setdefault(outlet.name, set()).add(dag_id)
    for name in listened:  # each is emitted by another DAG, none by the cost report itself
        assert produced.get(name) and "finops_cost_report" not in produced[name], name


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_parse_is_light(path: Path) -> None:
    """Import the file in a fresh interpreter: no pandas, great_expectations, pyarrow, boto3, no sockets."""
    probe = f"""
import json, socket, sys, runpy
def no_network(*a, **k):
    raise RuntimeError("network at parse time")
socket.socket.connect = no_network
runpy.run_path({str(path)!r})
print(json.dumps(sorted(m for m in ("pandas", "great_expectations", "pyarrow", "boto3", "duckdb",
                                      "prometheus_api_client") if m in sys.modules)))
"""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'include'}:{ROOT}"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
