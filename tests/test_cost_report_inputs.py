"""The cost report over a real report root (local disk, the kit's publish): any subset of upstream datasets,
"nothing to report yet", an older schema version, stale inputs, week-over-week and anomalies from earlier
partitions, and the quality gate refusing NaN costs while the previous report stays."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from traceo_finops.config import FinopsConfig
from traceo_finops.cost_report import workflow as wf
from traceo_finops.cost_report.dataset import COST_SUMMARY
from traceo_finops.kit.context import RunContext, Target, TargetKind
from traceo_finops.kit.outcome import TargetResult
from traceo_finops.kit.publish import Report, publish, read_committed
from traceo_finops.quality import DataQualityError
from traceo_finops.reports import Dataset, ReportStore
from traceo_finops.s3tiering.dataset import s3_tiering_dataset
from traceo_finops.window import Window

pytestmark = pytest.mark.unit
DAY = date(2026, 12, 6)
SOURCE = Target(TargetKind.SOURCE, "prom", conn_id="prometheus_default")
TIERING = s3_tiering_dataset([])
# The s3_tiering dataset as written, without its (slow) suite: these tests publish many dates of it.
TIERING_FAST = Dataset(TIERING.name, TIERING.version, TIERING.schema)


def cfg() -> FinopsConfig:
    return FinopsConfig.model_validate({"sources": [{"name": "prom"}]})


def ctx(root: Path, dag_id: str, day: date, run: str = "r") -> RunContext:
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    return RunContext(cfg=cfg(), workflow="cost_report", dag_id=dag_id, run_id=f"{run}-{day}",
                      window=Window(end - timedelta(days=1), end), store_factory=lambda _c: ReportStore(str(root)))


def tiering_rows(day: date, cost: float) -> list[dict[str, Any]]:
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    return [{"bucket": "blocks", "tenant": "team-a", "storage_class": "STANDARD", "age_band": "30-60d",
             "size_band": "1-16MB", "objects": 10, "bytes": 10 * 2**20, "current_monthly_usd": cost,
             "projected_monthly_usd": cost / 2, "one_time_transition_usd": 0.0, "proposed_rule_id": "finops-tier-a",
             "break_even_days": 1.0, "net_saving_12m_usd": 6 * cost, "applied": False, "source": "list",
             "window_start": end - timedelta(days=1), "window_end": end}]


def put_tiering(root: Path, day: date, cost: float, dataset: Dataset = TIERING_FAST) -> None:
    publish(ctx(root, "finops_s3_tiering", day), Report(datasets=[(dataset, tiering_rows(day, cost))]))


STORAGE_OK = TargetResult(SOURCE, payload={"kind": "prometheus", "facts": {
    "instances": 1, "blocks_bytes": 5e9, "samples_per_second": 1000.0, "retention_time_seconds": 15 * 86400.0}})
STORAGE_BARE = TargetResult(SOURCE, payload={"kind": "prometheus", "facts": {"retention_time_seconds": 86400.0}})


def cost_report(root: Path, day: date = DAY, storage: TargetResult = STORAGE_OK, run: str = "r") -> tuple[Any, Any]:
    c = ctx(root, "finops_cost_report", day, run)
    report, results = wf.build(c, [storage.as_dict()])
    written = publish(c, report, results)
    return written, wf.digest(c, written)


def rows(root: Path, dataset: str, day: date = DAY) -> list[dict[str, Any]]:
    return read_committed(ReportStore(str(root)), dataset, day).to_pylist()


def test_nothing_to_report_yet(tmp_path: Path) -> None:
    written, digest = cost_report(tmp_path, storage=STORAGE_BARE)
    assert "Nothing to report yet" in digest.summary
    assert {r["status"] for r in rows(tmp_path, "cost_inputs") if r["dataset"] != "storage"} == {"missing"}
    (storage,) = rows(tmp_path, "storage")
    assert storage["status"] == "no_tsdb_metrics"
    assert rows(tmp_path, "actions") == [] and written["datasets"]["actions"]["rows"] == 0
    # Only this run's own storage stats are costed (at $0: nothing measured).
    assert {(r["category"], r["current_monthly_usd"]) for r in rows(tmp_path, "cost_summary")} == {("local_disk", 0)}


def test_an_older_schema_version_is_rejected_and_named(tmp_path: Path) -> None:
    old = Dataset(TIERING.name, TIERING.version - 1, TIERING.schema)
    put_tiering(tmp_path, DAY, 40.0, dataset=old)
    _, digest = cost_report(tmp_path)
    (inp,) = [r for r in rows(tmp_path, "cost_inputs") if r["dataset"] == "s3_tiering"]
    assert inp["status"] == "rejected" and inp["schema_version"] == TIERING.version - 1
    assert f"schema version {TIERING.version - 1}" in inp["reason"] and f"version {TIERING.version}" in inp["reason"]
    assert "object_storage" not in {r["category"] for r in rows(tmp_path, "cost_summary")}
    # The only upstream dataset was rejected: nothing to report, and the digest names the version.
    assert "Nothing to report yet" in digest.summary and f"schema version {TIERING.version - 1}" in digest.summary


def test_a_stale_input_is_not_used(tmp_path: Path) -> None:
    put_tiering(tmp_path, DAY - timedelta(days=20), 40.0)
    cost_report(tmp_path)
    (inp,) = [r for r in rows(tmp_path, "cost_inputs") if r["dataset"] == "s3_tiering"]
    assert inp["status"] == "stale" and str(DAY - timedelta(days=20)) in inp["reason"]


def test_week_over_week_and_a_spike_from_earlier_partitions(tmp_path: Path) -> None:
    for i in range(28, 0, -1):
        put_tiering(tmp_path, DAY - timedelta(days=i), 50.0)
    put_tiering(tmp_path, DAY, 80.0)
    _, digest = cost_report(tmp_path)
    summary = {(r["category"], r["owner"]): r for r in rows(tmp_path, "cost_summary")}
    s3 = summary[("object_storage", "team-a")]
    assert s3["current_monthly_usd"] == 80.0 and s3["previous_monthly_usd"] == 50.0
    assert s3["wow_change_usd"] == pytest.approx(30.0) and s3["wow_change_pct"] == pytest.approx(0.6)
    flagged = {(a["category"], a["owner"], a["method"]) for a in rows(tmp_path, "cost_anomalies")}
    assert ("object_storage", "team-a", "robust_z") in flagged
    assert "+60%" in digest.facts["Anomalies"] and "object_storage/team-a +30.00" in digest.facts["Since last week"]
    (action,) = rows(tmp_path, "actions")
    assert action["kind"] == "lifecycle_rule" and action["monthly_saving_usd"] == pytest.approx(40.0)
    assert "Cost report" in digest.title and "team-a" in str(digest.table_rows)


def test_nan_costs_are_refused_and_the_previous_report_stays(tmp_path: Path) -> None:
    put_tiering(tmp_path, DAY, 50.0)
    cost_report(tmp_path, run="good")
    before = rows(tmp_path, "cost_summary")
    put_tiering(tmp_path, DAY, math.nan)
    with pytest.raises(DataQualityError, match=r"cost_summary.*not_be_null"):
        cost_report(tmp_path, run="corrupt")
    assert rows(tmp_path, "cost_summary") == before
    checks = read_committed(ReportStore(str(tmp_path)), "quality_checks", DAY, "finops_cost_report").to_pylist()
    assert any(not c["success"] and c["dataset"] == "cost_summary" for c in checks)
    assert isinstance(COST_SUMMARY.schema, pa.Schema)
