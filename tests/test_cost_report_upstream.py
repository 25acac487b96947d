"""How the cost report reads upstream partitions (``cost_report.upstream.Lake``) on a real local root written by
the kit's publish: only the committed run's rows, from the index of markers taken once; a partition rewritten by
a run that died before its marker, or one date committed by two DAGs, is not used and the reason says why."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.test_cost_report_inputs import tiering_rows
from traceo_finops.config import FinopsConfig
from traceo_finops.cost_report.upstream import NOT_READ, Lake
from traceo_finops.kit.context import RunContext
from traceo_finops.kit.publish import Report, publish
from traceo_finops.reports import Dataset, ReportStore
from traceo_finops.s3tiering.dataset import s3_tiering_dataset
from traceo_finops.window import Window

pytestmark = pytest.mark.unit
DAY = date(2026, 12, 6)
TIERING = s3_tiering_dataset([])
TIERING_FAST = Dataset(TIERING.name, TIERING.version, TIERING.schema)  # its suite is slow and not under test


def _ctx(root: Path, dag_id: str, run_id: str) -> RunContext:
    end = datetime.combine(DAY + timedelta(days=1), datetime.min.time(), UTC)
    return RunContext(cfg=FinopsConfig.model_validate({"sources": [{"name": "prom"}]}), workflow="cost_report",
                      dag_id=dag_id, run_id=run_id, window=Window(end - timedelta(days=1), end),
                      store_factory=lambda _c: ReportStore(str(root)))


def _tiering_input(lake: Lake) -> Any:
    snap = lake.snapshot(DAY, timedelta(days=8), skip=("storage",))
    (record,) = [i for i in snap.inputs if i.dataset == "s3_tiering"]
    return snap, record


def test_the_committed_rows_are_read_without_run_and_window_columns(tmp_path: Path) -> None:
    publish(_ctx(tmp_path, "finops_s3_tiering", "run-a"), Report(datasets=[(TIERING_FAST, tiering_rows(DAY, 7.5))]))
    snap, record = _tiering_input(Lake(ReportStore(str(tmp_path))))
    assert record.status == "used" and record.rows == 1
    (row,) = snap.rows["s3_tiering"]
    assert row["current_monthly_usd"] == 7.5 and row["tenant"] == "team-a"
    assert not NOT_READ & set(row), "run and window columns are not handed to the cost model"


def test_a_partition_rewritten_by_an_uncommitted_run_is_not_used(tmp_path: Path) -> None:
    publish(_ctx(tmp_path, "finops_s3_tiering", "run-a"), Report(datasets=[(TIERING_FAST, tiering_rows(DAY, 7.5))]))
    lake = Lake(ReportStore(str(tmp_path)))  # the index is taken before the rewrite, as in a build
    ReportStore(str(tmp_path)).write_partition(TIERING_FAST, DAY, tiering_rows(DAY, 999.0), run_id="killed-run")
    snap, record = _tiering_input(lake)
    assert record.status == "rejected" and "s3_tiering" not in snap.rows
    assert "uncommitted" in record.reason and "killed-run" in record.reason and "run-a" in record.reason
    # A new build (a new index) sees the same: the marker still names run-a.
    _, again = _tiering_input(Lake(ReportStore(str(tmp_path))))
    assert again.status == "rejected" and "killed-run" in again.reason


def test_one_date_committed_by_two_dags_is_not_guessed(tmp_path: Path) -> None:
    for dag_id in ("finops_s3_tiering", "finops_s3_tiering_eu"):
        publish(_ctx(tmp_path, dag_id, f"{dag_id}-run"), Report(datasets=[(TIERING_FAST, tiering_rows(DAY, 1.0))]))
    snap, record = _tiering_input(Lake(ReportStore(str(tmp_path))))
    assert record.status == "rejected" and "several DAGs" in record.reason
    assert "finops_s3_tiering_eu" in record.reason and "s3_tiering" not in snap.rows
