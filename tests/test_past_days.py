"""Runs of a past day (what a backfill does): the rows say what a past day cannot show, and a window before
the source's data is a recorded "no data", not a crash.

Real Airflow (``dag.test`` with a logical date, so the run's data interval is that day), the devstack's real
Prometheus and moto S3. The day chosen lies before the devstack's first sample (its history starts days
before the stack), so the window holds no series.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.support.dags import load_dag

pytestmark = [pytest.mark.dag, pytest.mark.integration]


def _before_the_devstacks_data(prom_truth: dict[str, Any]) -> datetime:
    """A midnight 30 days before the devstack's backfilled history starts."""
    first = datetime.fromtimestamp(prom_truth["history"]["start"], UTC) - timedelta(days=30)
    return datetime.combine(first.date(), datetime.min.time(), UTC)


def _run_targets(root: Path, dag_id: str, day: date) -> list[dict[str, Any]]:
    [part] = (root / "run_targets" / f"dag_id={dag_id}" / f"report_date={day.isoformat()}").glob("*.parquet")
    return pq.read_table(part).to_pylist()


@pytest.mark.parametrize(("dag_id", "why"), [("finops_rightsizing", "before the source's data"),
                                             ("finops_cardinality", "before the source's data"),
                                             ("finops_recording_rules", "no user query in the window")])
def test_a_day_before_the_sources_data_is_recorded_as_no_data(devstack: dict[str, str], prom_truth: dict[str, Any],
                                                              finops_config: Path, airflow_db: Path,
                                                              dag_id: str, why: str) -> None:
    logical = _before_the_devstacks_data(prom_truth)
    run = load_dag(dag_id).test(logical_date=logical, run_conf={"post_to_slack": False})
    assert run.state == "success"
    day = (logical - timedelta(days=1)).date()  # the data interval [logical - 1 day, logical)
    rows = _run_targets(finops_config.parent / "reports", dag_id, day)
    assert rows and all(r["status"] == "ok" for r in rows)
    assert all(why in r["note"] for r in rows), rows
    assert {r["window_end"] for r in rows} == {logical}


def test_a_bucket_read_for_a_past_day_says_it_was_read_live(devstack: dict[str, str], finops_config: Path,
                                                            airflow_db: Path) -> None:
    logical = datetime.combine(date.today() - timedelta(days=3), datetime.min.time(), UTC)
    run = load_dag("finops_s3_tiering").test(logical_date=logical, run_conf={"post_to_slack": False})
    assert run.state == "success"
    rows = _run_targets(finops_config.parent / "reports", "finops_s3_tiering", (logical - timedelta(days=1)).date())
    assert rows and all(r["kind"] == "bucket" for r in rows)
    assert all("read live at" in r["note"] and logical.isoformat() in r["note"] for r in rows), rows
