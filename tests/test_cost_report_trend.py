"""``cost_trend``: the daily totals the FinOps page's chart draws, committed with each cost report.

A lake of several daily cost reports is built through the real workflow functions (``cost_report.workflow.build``
and the kit's ``publish``, Great Expectations included) over committed ``s3_tiering`` partitions. Expected figures
are summed here with pyarrow from the committed ``cost_summary`` partitions, not taken from the code under test.
Then the page: its trend (one ``cost_trend`` file) must equal the one it drew before this dataset existed (one
``cost_summary`` per day), locally and on the devstack's S3, where the first request on a root never read must
GET one trend file and one cost-report marker, not one of each per day.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.support.reports import count_reads
from tests.support.s3 import report_root_bucket
from traceo_finops import ui
from traceo_finops.config import FinopsConfig
from traceo_finops.cost_report import workflow as wf
from traceo_finops.cost_report.dataset import COST_SUMMARY, COST_TREND, DATASETS
from traceo_finops.cost_report.trend import USD_COLUMNS
from traceo_finops.kit.context import RunContext, Target, TargetKind
from traceo_finops.kit.outcome import TargetResult
from traceo_finops.kit.publish import Report, publish, read_commit, read_committed
from traceo_finops.reports import Dataset, ReportStore
from traceo_finops.s3tiering.dataset import s3_tiering_dataset
from traceo_finops.window import Window

DAYS = [date(2026, 12, 1) + timedelta(days=i) for i in range(5)]
TODAY = DAYS[-1] + timedelta(days=1)
SOURCE = Target(TargetKind.SOURCE, "prom", conn_id="prometheus_default")
TIERING = s3_tiering_dataset([])
# The s3_tiering dataset as written, without its (slow) suite: these tests publish many dates of it.
TIERING_FAST = Dataset(TIERING.name, TIERING.version, TIERING.schema)
STORAGE = TargetResult(SOURCE, payload={"kind": "prometheus", "facts": {
    "instances": 1, "blocks_bytes": 5e9, "samples_per_second": 1000.0, "retention_time_seconds": 15 * 86400.0}})


def ctx(root: Path, dag_id: str, day: date, run: str = "r") -> RunContext:
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    cfg = FinopsConfig.model_validate({"sources": [{"name": "prom"}]})
    return RunContext(cfg=cfg, workflow="cost_report", dag_id=dag_id, run_id=f"{run}-{day}",
                      window=Window(end - timedelta(days=1), end), store_factory=lambda _c: ReportStore(str(root)))


def put_tiering(root: Path, day: date, cost: float) -> None:
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    rows = [{"bucket": "blocks", "tenant": tenant, "storage_class": "STANDARD", "age_band": "30-60d",
             "size_band": "1-16MB", "objects": 10, "bytes": 10 * 2**20, "current_monthly_usd": cost * (i + 1),
             "projected_monthly_usd": cost * (i + 1) / 2, "one_time_transition_usd": 0.0,
             "proposed_rule_id": f"finops-tier-{tenant}", "break_even_days": 1.0, "net_saving_12m_usd": 6 * cost,
             "applied": False, "source": "list", "window_start": end - timedelta(days=1), "window_end": end}
            for i, tenant in enumerate(("team-a", "team-b"))]
    publish(ctx(root, "finops_s3_tiering", day), Report(datasets=[(TIERING_FAST, rows)]))


def cost_report(root: Path, day: date, run: str = "r", with_trend: bool = True) -> None:
    """The DAG's write_report step for ``day``; ``with_trend=False`` publishes what the code before
    ``cost_trend`` published (the same report without that dataset)."""
    c = ctx(root, "finops_cost_report", day, run)
    report, results = wf.build(c, [STORAGE.as_dict()])
    if not with_trend:
        report.datasets = [(d, r) for d, r in report.datasets if d.name != COST_TREND.name]
    publish(c, report, results)


def build_days(root: Path, days: list[date] = DAYS, with_trend: bool = True) -> None:
    for i, day in enumerate(days):
        put_tiering(root, day, 10.0 + 3.5 * i)
        cost_report(root, day, with_trend=with_trend)


def summary_totals(root: Path, day: date) -> dict[str, tuple[float, ...]]:
    """category -> the committed cost_summary's $ columns summed (pyarrow, not the code under test)."""
    table = read_committed(ReportStore(str(root)), COST_SUMMARY.name, day)
    grouped = table.group_by("category").aggregate([(c, "sum") for c in USD_COLUMNS])
    return {r["category"]: tuple(r[f"{c}_sum"] for c in USD_COLUMNS) for r in grouped.to_pylist()}


def trend_totals(root: Path, day: date) -> dict[date, dict[str, tuple[float, ...]]]:
    out: dict[date, dict[str, tuple[float, ...]]] = {}
    for r in read_committed(ReportStore(str(root)), COST_TREND.name, day).to_pylist():
        out.setdefault(r["day"], {})[r["category"]] = tuple(r[c] for c in USD_COLUMNS)
    return out


def assert_same(got: dict[Any, Any], want: dict[Any, Any]) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, dict):
            assert_same(got[key], value)
        else:
            assert got[key] == pytest.approx(value, abs=1e-9), key


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trend-lake")
    build_days(root)
    return root


@pytest.mark.unit
def test_cost_trend_is_a_published_and_checked_dataset(lake: Path) -> None:
    assert COST_TREND in DATASETS and COST_TREND.name == ui.COST_TREND
    marker = read_commit(ReportStore(str(lake)), "finops_cost_report", DAYS[-1])
    assert marker is not None and COST_TREND.name in marker["datasets"]
    checks = read_committed(ReportStore(str(lake)), "quality_checks", DAYS[-1], "finops_cost_report").to_pylist()
    assert {r["dataset"]: r["success"] for r in checks}[COST_TREND.name] is True


@pytest.mark.unit
def test_trend_rows_equal_the_committed_cost_summary_totals(lake: Path) -> None:
    for n, day in enumerate(DAYS):  # each report's trend: every committed day up to its own
        want = {d: summary_totals(lake, d) for d in DAYS[:n + 1]}
        assert_same(trend_totals(lake, day), want)
    runs = {r["day"]: r["summary_run_id"]
            for r in read_committed(ReportStore(str(lake)), COST_TREND.name, DAYS[-1]).to_pylist()}
    assert runs == {d: f"r-{d}" for d in DAYS}


@pytest.mark.unit
def test_a_rerun_replaces_its_day_and_an_older_rerun_shows_from_the_next_report(tmp_path: Path) -> None:
    build_days(tmp_path, DAYS[:4])
    put_tiering(tmp_path, DAYS[3], 99.0)  # the newest date rerun with other costs: its day is replaced
    cost_report(tmp_path, DAYS[3], run="rerun")
    assert_same(trend_totals(tmp_path, DAYS[3]), {d: summary_totals(tmp_path, d) for d in DAYS[:4]})
    before = summary_totals(tmp_path, DAYS[1])
    put_tiering(tmp_path, DAYS[1], 77.0)  # an older date rerun: the newest report's trend keeps the old figures
    cost_report(tmp_path, DAYS[1], run="rerun")
    assert summary_totals(tmp_path, DAYS[1]) != before
    assert_same(trend_totals(tmp_path, DAYS[3])[DAYS[1]], before)
    put_tiering(tmp_path, DAYS[4], 20.0)  # ... and the next report shows the rerun's
    cost_report(tmp_path, DAYS[4])
    assert_same(trend_totals(tmp_path, DAYS[4]), {d: summary_totals(tmp_path, d) for d in DAYS})


@pytest.mark.unit
def test_a_lake_written_before_cost_trend_is_summed_from_cost_summary(tmp_path: Path) -> None:
    build_days(tmp_path, DAYS[:4], with_trend=False)
    assert not (tmp_path / COST_TREND.name).exists()
    page_before = ui.report_page(ReportStore(str(tmp_path)), TODAY)  # the page falls back to each cost_summary
    assert [p["report_date"] for p in page_before["trend"]] == [d.isoformat() for d in DAYS[:4]]
    build_days(tmp_path, DAYS[4:])
    assert_same(trend_totals(tmp_path, DAYS[4]), {d: summary_totals(tmp_path, d) for d in DAYS})


@pytest.mark.unit
def test_an_earlier_trend_of_another_schema_version_is_not_used(tmp_path: Path) -> None:
    """The report of DAYS[2] is republished with a ``cost_trend`` of schema version 0 whose dollars are all 0 (its
    run ids still the committed ones): the next report must sum each day from ``cost_summary`` instead."""
    build_days(tmp_path, DAYS[:3])
    c = ctx(tmp_path, "finops_cost_report", DAYS[2], "v0")
    report, results = wf.build(c, [STORAGE.as_dict()])
    old = Dataset(COST_TREND.name, 0, COST_TREND.schema)
    report.datasets = [(old, [{**r, **dict.fromkeys(USD_COLUMNS, 0.0)} for r in rows]) if d.name == COST_TREND.name
                       else (d, rows) for d, rows in report.datasets]
    publish(c, report, results)
    assert {r["current_monthly_usd"] for r in read_committed(ReportStore(str(tmp_path)), COST_TREND.name,
                                                             DAYS[2]).to_pylist()} == {0.0}
    build_days(tmp_path, DAYS[3:4])
    assert_same(trend_totals(tmp_path, DAYS[3]), {d: summary_totals(tmp_path, d) for d in DAYS[:4]})


def old_trend(store: ReportStore) -> list[dict[str, Any]]:
    """The trend as the page drew it before ``cost_trend``: one point per committed cost report's cost_summary."""
    ui._trend_cache.clear()
    return ui.trend(store, ui.markers_by_dag(store)[ui.COST_DAG])


def same_points(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    # Sums in another order: equal to the cent, not necessarily to the last bit before rounding.
    assert [p["report_date"] for p in got] == [p["report_date"] for p in want]
    for g, w in zip(got, want, strict=True):
        for k in ("current", "projected", "saving"):
            assert g[k] == pytest.approx(w[k], abs=0.011)


@pytest.mark.unit
def test_the_page_trend_equals_the_old_path_and_reads_one_cost_marker(lake: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ui.CACHE_DIR_ENV, "off")
    store = ReportStore(str(lake))
    read = count_reads(store, monkeypatch)
    ui._marker_cache.clear()
    ui._trend_cache.clear()
    page = ui.report_page(store, TODAY)
    cost_markers = [p for p in read if "/_commits/finops_cost_report/" in p]
    summaries = [p for p in read if "/cost_summary/" in p]
    trends = [p for p in read if f"/{COST_TREND.name}/" in p]
    assert len(cost_markers) == 1 and len(summaries) == 1 and len(trends) == 1
    assert len(page["trend"]) == len(DAYS)
    # Against the sums of the committed cost_summary partitions (pyarrow) and the old path.
    want = [{"report_date": d.isoformat(), "current": round(sum(v[0] for v in summary_totals(lake, d).values()), 2),
             "projected": round(sum(v[1] for v in summary_totals(lake, d).values()), 2),
             "saving": round(sum(v[2] for v in summary_totals(lake, d).values()), 2)} for d in DAYS]
    same_points(page["trend"], want)
    same_points(page["trend"], old_trend(store))
    assert ui.trend_svg(page["trend"]).count("<polyline") == 2


@pytest.fixture
def s3_root(devstack: dict[str, str]) -> Iterator[tuple[ReportStore, Any, str]]:
    """A report root in a bucket of its own on the devstack's moto; the bucket is removed afterwards."""
    with report_root_bucket(devstack["DEVSTACK_S3_ENDPOINT"], "ui-trend") as root:
        yield root


@pytest.mark.integration
def test_on_s3_the_first_request_reads_one_trend_file_not_one_per_day(
        lake: Path, tmp_path: Path, s3_root: tuple[ReportStore, Any, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The lake built locally, copied as is to the bucket; a root the page never read (no cache anywhere). GETs are
    counted through boto3's ``before-parameter-build`` event of the page's S3 client."""
    store, client, bucket = s3_root
    local = tmp_path / "lake"
    shutil.copytree(lake, local)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client.put_object(Bucket=bucket, Key=f"reports/{path.relative_to(local).as_posix()}", Body=path.read_bytes())
    monkeypatch.setenv(ui.CACHE_DIR_ENV, "off")
    got: list[str] = []
    ui._s3(store).meta.events.register("before-parameter-build.s3.GetObject",
                                       lambda params, **_: got.append(str(params["Key"])))
    for cache in (ui._marker_cache, ui._trend_cache, ui._listings):
        cache.clear()
    ui._loaded.clear()
    page = ui.report_page(store, TODAY)
    assert len([k for k in got if "/_commits/finops_cost_report/" in k]) == 1
    assert len([k for k in got if f"/{COST_TREND.name}/" in k]) == 1
    assert len([k for k in got if "/cost_summary/" in k]) == 1  # the newest report's totals, not one per day
    local_page = ui.report_page(ReportStore(str(local)), TODAY)
    assert page["trend"] == local_page["trend"] and len(page["trend"]) == len(DAYS)
    same_points(page["trend"], old_trend(ReportStore(str(local))))
    # The S3 object holds what the local file holds (read with pyarrow on S3, not through the page).
    day = DAYS[-1].isoformat()
    s3_table = pq.read_table(f"{store.base}/{COST_TREND.name}/report_date={day}/part-0.parquet", filesystem=store.fs)
    assert pc.sum(s3_table.column("current_monthly_usd")).as_py() == pytest.approx(
        sum(p["current"] for p in page["trend"]), abs=0.011 * len(DAYS))
