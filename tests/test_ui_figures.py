"""The FinOps page's figures (``traceo_finops.ui``) on a small real lake written by the kit's publish.

The lake: two committed cost reports a week apart; an upstream workflow with a failed target and an
artifact; another whose newest set was refused by Great Expectations (its older partition stays, its
quality is ``failed``); an uncommitted partition (a later run killed before its marker). Expected figures
are computed here from the Parquet files with pyarrow, not taken from the code under test.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.support.reports import count_reads
from traceo_finops import ui
from traceo_finops.config import FinopsConfig
from traceo_finops.cost_report.dataset import ACTIONS, COST_SUMMARY
from traceo_finops.kit.context import RunContext, Target, TargetKind
from traceo_finops.kit.outcome import TargetResult
from traceo_finops.kit.publish import Report, publish, read_commit
from traceo_finops.quality import DataQualityError, between, not_null
from traceo_finops.reports import Dataset, ReportStore
from traceo_finops.window import Window

TODAY = date(2026, 12, 7)
COST_DAYS = (date(2026, 11, 29), date(2026, 12, 6))
SERIES = Dataset("cardinality", 1, pa.schema([
    pa.field("source", pa.string(), nullable=False), pa.field("tenant", pa.string(), nullable=False),
    pa.field("metric", pa.string(), nullable=False), pa.field("series", pa.int64(), nullable=False),
]), expectations=(*not_null("metric"), between("series", 0)))
BLOCKS = Dataset("s3_tiering", 1, pa.schema([
    pa.field("bucket", pa.string(), nullable=False), pa.field("bytes", pa.int64(), nullable=False),
]), expectations=(between("bytes", 0),))
PROM = Target(TargetKind.SOURCE, "prom-a", conn_id="prometheus_default")
TEAM_B = Target(TargetKind.TENANT, "mimir", "team-b", conn_id="mimir")
BUCKET = Target(TargetKind.BUCKET, bucket="blocks-eu", conn_id="aws_default")


def _ctx(store: ReportStore, dag_id: str, day: date, run_id: str) -> RunContext:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return RunContext(cfg=FinopsConfig.model_construct(), workflow="cost_report", dag_id=dag_id, run_id=run_id,
                      window=Window(start, start + timedelta(days=1)), store_factory=lambda _cfg: store)


def summary_rows(scale: float) -> list[dict[str, Any]]:
    rows = []
    for i, (cat, owner) in enumerate([("active_series", "team-a"), ("active_series", "team-b"),
                                      ("local_disk", "prom-a"), ("object_storage", "blocks-eu")]):
        current = round(scale * (100.0 + 37.25 * i), 2)
        saving = round(current * (0.1 + 0.05 * i), 2)
        rows.append({"category": cat, "owner": owner, "current_monthly_usd": current,
                     "projected_monthly_usd": round(current - saving, 2), "saving_monthly_usd": saving,
                     "previous_monthly_usd": None, "wow_change_usd": None, "wow_change_pct": None,
                     "basis": "test", "notes": "", "window_start": datetime(2026, 11, 1, tzinfo=UTC),
                     "window_end": datetime(2026, 11, 2, tzinfo=UTC)})
    return rows


def action_rows(artifact: str) -> list[dict[str, Any]]:
    # Given out of rank order: the page must sort them.
    specs = [(2, "lifecycle_rule", "blocks-eu", 41.5, ""), (1, "drop_metric", "http_requests_bucket", 88.25, artifact),
             (3, "config_change", "prom-a", -3.0, "")]
    return [{"rank": r, "action_id": f"a{r}", "workflow": "cardinality", "kind": k, "target": t, "owner": "team-a",
             "monthly_saving_usd": s, "effort": "low", "risk": "medium", "status": "proposed", "artifact_uri": a,
             "detail": "", "window_start": datetime(2026, 11, 1, tzinfo=UTC),
             "window_end": datetime(2026, 11, 2, tzinfo=UTC)} for r, k, t, s, a in specs]


def build_lake(root: Path) -> ReportStore:
    """The lake described in the module docstring, written by the kit's real publish."""
    store = ReportStore(str(root))
    card = publish(_ctx(store, "finops_cardinality", date(2026, 11, 28), "card-1"), Report(
        datasets=[(SERIES, [{"source": "prom-a", "tenant": "", "metric": "m1", "series": 10},
                            {"source": "mimir", "tenant": "team-a", "metric": "m2", "series": 5}])],
        artifacts={("cardinality", "drop-rules.yaml"): b"- drop: http_requests_bucket\n"}),
        [TargetResult(PROM), TargetResult(TEAM_B, error="mimir/team-b: HTTP 401")])
    artifact = card["artifacts"][0]
    for day, scale in zip(COST_DAYS, (1.0, 1.5), strict=True):
        publish(_ctx(store, ui.COST_DAG, day, f"cost-{day}"),
                Report(datasets=[(COST_SUMMARY, summary_rows(scale)), (ACTIONS, action_rows(artifact))]),
                [TargetResult(PROM)])
    publish(_ctx(store, "finops_s3_tiering", date(2026, 11, 20), "s3-1"),
            Report(datasets=[(BLOCKS, [{"bucket": "blocks-eu", "bytes": 100}])]), [TargetResult(BUCKET)])
    with pytest.raises(DataQualityError):
        publish(_ctx(store, "finops_s3_tiering", date(2026, 11, 20), "s3-2-bad"),
                Report(datasets=[(BLOCKS, [{"bucket": "blocks-eu", "bytes": -1}])]), [TargetResult(BUCKET)])
    return store


def parquet(root: Path, dataset: str, day: date) -> pa.Table:
    return pq.read_table(root / dataset / f"report_date={day.isoformat()}" / "part-0.parquet")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ReportStore]:
    root = tmp_path_factory.mktemp("lake")
    return root, build_lake(root)


@pytest.mark.unit
def test_totals_and_categories_equal_the_newest_committed_parquet_rows(lake: tuple[Path, ReportStore]) -> None:
    root, store = lake
    page = ui.report_page(store, TODAY)
    table = parquet(root, "cost_summary", COST_DAYS[-1])
    assert page["status"] == "ok"
    assert page["report"]["report_date"] == COST_DAYS[-1].isoformat()
    for key in ("current", "projected", "saving"):
        assert page["totals"][key] == pytest.approx(pc.sum(table.column(f"{key}_monthly_usd")).as_py(), abs=0.005)
    by_cat = table.group_by("category").aggregate([("saving_monthly_usd", "sum"), ("current_monthly_usd", "sum")])
    expected = {r["category"]: (r["current_monthly_usd_sum"], r["saving_monthly_usd_sum"]) for r in by_cat.to_pylist()}
    shown = {c["category"]: (c["current"], c["saving"]) for c in page["categories"]}
    assert shown.keys() == expected.keys()
    for cat, (current, saving) in expected.items():
        assert shown[cat] == (pytest.approx(current, abs=0.005), pytest.approx(saving, abs=0.005))
    savings = [c["saving"] for c in page["categories"]]
    assert savings == sorted(savings, reverse=True)


@pytest.mark.unit
def test_actions_are_ranked_and_link_their_artifact_under_the_root(lake: tuple[Path, ReportStore]) -> None:
    root, store = lake
    page = ui.report_page(store, TODAY)
    rows = parquet(root, "actions", COST_DAYS[-1]).sort_by("rank").to_pylist()
    assert [(a["rank"], a["target"], a["monthly_saving_usd"]) for a in page["actions"]] == \
        [(r["rank"], r["target"], r["monthly_saving_usd"]) for r in rows]
    linked = [a for a in page["actions"] if a["artifact_href"]]
    assert len(linked) == 1 and linked[0]["rank"] == 1
    uri = linked[0]["artifact_uri"]
    assert ui.read_artifact(store, uri) == b"- drop: http_requests_bucket\n"
    for bad in ("/etc/passwd", f"{root}/_artifacts/../cost_summary/x", f"{root}/cost_summary/report_date=x"):
        assert ui.artifact_href(store, bad) is None
        with pytest.raises(Exception, match="not an artifact"):
            ui.read_artifact(store, bad)


@pytest.mark.unit
def test_trend_has_one_point_per_committed_report(lake: tuple[Path, ReportStore]) -> None:
    root, store = lake
    page = ui.report_page(store, TODAY)
    expected = [{"report_date": d.isoformat(),
                 "current": round(pc.sum(parquet(root, "cost_summary", d).column("current_monthly_usd")).as_py(), 2)}
                for d in COST_DAYS]
    assert [{"report_date": p["report_date"], "current": p["current"]} for p in page["trend"]] == expected
    svg = ui.trend_svg(page["trend"])
    assert 'data-points="2"' in svg and svg.count("<polyline") == 2


@pytest.mark.unit
def test_freshness_quality_and_failed_targets(lake: tuple[Path, ReportStore]) -> None:
    _, store = lake
    page = ui.report_page(store, TODAY)
    ds = {(d["dag_id"], d["dataset"]): d for d in page["datasets"]}
    card = ds[("finops_cardinality", "cardinality")]
    assert (card["report_date"], card["age_days"], card["fresh"], card["quality"], card["rows"]) == \
        ("2026-11-28", 9, False, "passed", 2)
    assert ds[("finops_cost_report", "cost_summary")]["fresh"] is True
    refused = ds[("finops_s3_tiering", "s3_tiering")]
    # The refused run's check is on record; the partition shown is still the older, committed one.
    assert refused["quality"] == "failed" and refused["rows"] == 1
    assert any("bytes" in f for f in refused["failures"])
    failed = [(f["dag_id"], f["target"], f["error"]) for f in page["failed_targets"]]
    assert failed == [("finops_cardinality", "mimir/team-b", "mimir/team-b: HTTP 401")]


@pytest.mark.unit
def test_an_uncommitted_partition_is_not_shown(tmp_path: Path) -> None:
    """A later run that wrote cost_summary but was killed before its marker: the page keeps the committed set."""
    store = build_lake(tmp_path)
    day = COST_DAYS[-1]
    committed = ui.report_page(store, TODAY)["totals"]
    store.write_partition(COST_SUMMARY, day, summary_rows(9.0), {}, run_id="killed-run")
    page = ui.report_page(store, TODAY)
    assert page["status"] == "uncommitted" and page["totals"] is None
    assert "killed-run" in page["message"] and "uncommitted" in page["message"]
    assert "killed-run" in ui.render_html(page)
    marker = read_commit(store, ui.COST_DAG, day)
    assert marker is not None and marker["run_id"] == f"cost-{day}"
    assert committed["current"] > 0
    # The trend skips the uncommitted day instead of mixing runs.
    points = ui.trend(store, ui.markers_by_dag(store)[ui.COST_DAG])
    assert [p["report_date"] for p in points] == [COST_DAYS[0].isoformat()]


@pytest.mark.unit
def test_nothing_to_report_yet(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path / "empty"))
    page = ui.report_page(store, TODAY)
    assert page["status"] == "empty" and page["totals"] is None and page["datasets"] == []
    text = ui.render_html(page)
    assert 'id="nothing"' in text and "Nothing to report yet" in text and "<table" not in text
    json.dumps(page)  # JSON-safe


@pytest.mark.unit
def test_html_shows_the_figures_with_relative_links_only(lake: tuple[Path, ReportStore]) -> None:
    _, store = lake
    page = ui.report_page(store, TODAY)
    text = ui.render_html(page)
    assert f'id="total-current">{ui.usd(page["totals"]["current"])}<' in text
    assert 'href="artifact?uri=' in text and 'href="api/report"' in text
    assert 'href="/' not in text and "src=" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")


@pytest.mark.unit
def test_the_page_reads_only_the_markers_it_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Older commit markers are listed, not read — and the page is the one every marker gives.

    Counted through a wrapper of the store's ``read_file`` (what the page reads a local file with); the lake: three
    daily cardinality reports, two cost reports, and an s3_tiering report whose newer date was refused (its marker
    names only the ``quality_checks`` record, so the older date's marker must be read for the partition shown)."""
    monkeypatch.setenv(ui.CACHE_DIR_ENV, "off")
    store = build_lake(tmp_path)
    for day in (date(2026, 11, 26), date(2026, 11, 27)):  # older than the lake's 2026-11-28 report
        publish(_ctx(store, "finops_cardinality", day, f"card-{day}"), Report(datasets=[
            (SERIES, [{"source": "prom-a", "tenant": "", "metric": "m1", "series": 1}])]), [TargetResult(PROM)])
    with pytest.raises(DataQualityError):
        publish(_ctx(store, "finops_s3_tiering", date(2026, 11, 21), "s3-3-bad"),
                Report(datasets=[(BLOCKS, [{"bucket": "blocks-eu", "bytes": -2}])]), [TargetResult(BUCKET)])
    read = count_reads(store, monkeypatch)

    def fresh_page(trend_days: int) -> dict[str, Any]:
        ui._marker_cache.clear()
        ui._trend_cache.clear()
        read.clear()
        return ui.report_page(store, TODAY, trend_days=trend_days)

    def markers_read() -> list[str]:
        return sorted(str(Path(p).relative_to(tmp_path / "_commits")) for p in read if "/_commits/" in p)

    page = fresh_page(trend_days=1)
    assert markers_read() == ["finops_cardinality/report_date=2026-11-28.json",
                              "finops_cost_report/report_date=2026-12-06.json",
                              "finops_s3_tiering/report_date=2026-11-20.json",
                              "finops_s3_tiering/report_date=2026-11-21.json"]
    assert [p["report_date"] for p in page["trend"]] == ["2026-12-06"]
    with_trend = fresh_page(trend_days=ui.TREND_DAYS)
    assert "finops_cost_report/report_date=2026-11-29.json" in markers_read()
    assert "finops_cardinality/report_date=2026-11-27.json" not in markers_read()
    # The same page as from every marker: the refused date shows the older committed partition, failed.
    monkeypatch.setattr(ui, "page_markers", lambda s, *_a, **_k: ui.markers_by_dag(s))
    every = fresh_page(trend_days=ui.TREND_DAYS)
    assert len(markers_read()) == 7
    assert with_trend == every
    tiering = {d["dataset"]: d for d in every["datasets"] if d["dag_id"] == "finops_s3_tiering"}["s3_tiering"]
    assert (tiering["report_date"], tiering["quality"]) == ("2026-11-20", "failed")
