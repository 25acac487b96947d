"""The FinOps page's figures with the report root on the devstack's S3 (moto_server over HTTP, a bucket of its own).

The same lake — an upstream workflow with a failed target and an artifact, two committed cost reports a week
apart — is published by the kit's real ``publish`` to a local root and to ``s3://<bucket>/reports``; the page
read from S3 must show what it shows for the local root, and what the Parquet rows on S3 add up to (read here
with pyarrow, not through the code under test). Then the page is read again in a "new process" (the in-memory
caches emptied, the disk cache kept), and once more after a third cost report is published: the cache must not
hide it. No timing here: ``bench/bench_cost_report.py`` measures speed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.support.s3 import report_root_bucket
from tests.test_ui_figures import _ctx, action_rows, summary_rows
from traceo_finops import ui
from traceo_finops.cost_report.dataset import ACTIONS, COST_SUMMARY
from traceo_finops.kit.context import Target, TargetKind
from traceo_finops.kit.outcome import TargetResult
from traceo_finops.kit.publish import Report, publish
from traceo_finops.reports import ReportStore

pytestmark = pytest.mark.integration

TODAY = date(2026, 12, 7)
COST_DAYS = (date(2026, 11, 29), date(2026, 12, 6))
PROM = Target(TargetKind.SOURCE, "prom-a", conn_id="prometheus_default")
TEAM_B = Target(TargetKind.TENANT, "mimir", "team-b", conn_id="mimir")


def publish_cost_report(store: ReportStore, day: date, scale: float, artifact: str) -> None:
    publish(_ctx(store, ui.COST_DAG, day, f"cost-{day}"),
            Report(datasets=[(COST_SUMMARY, summary_rows(scale)), (ACTIONS, action_rows(artifact))]),
            [TargetResult(PROM)])


def build_lake(store: ReportStore) -> None:
    """An upstream set with an artifact and a failed target, then two cost reports (the kit's real publish)."""
    from traceo_finops.cost_report.dataset import STORAGE

    storage = [{"source": "prom-a", "tenant": "", "kind": "prometheus", "status": "ok", "notes": "", "instances": 1,
                "blocks_bytes": 10, "wal_bytes": None, "head_chunks_bytes": None, "local_bytes": 10,
                "object_bytes": None, "object_files": None, "bytes_per_sample": 1.5, "bytes_per_sample_source": "x",
                "retention_time_seconds": 86400.0, "retention_size_bytes": None, "samples_per_second": 1.0,
                "active_series": 5, "disk_needed_bytes": 100, "disk_gb_month_usd": 0.08, "monthly_cost_usd": 1.0,
                "window_start": datetime(2026, 11, 28, tzinfo=UTC), "window_end": datetime(2026, 11, 29, tzinfo=UTC)}]
    up = publish(_ctx(store, "finops_upstream", date(2026, 11, 28), "up-1"),
                 Report(datasets=[(STORAGE, storage)], artifacts={("cardinality", "drop-rules.yaml"): b"- drop: x\n"}),
                 [TargetResult(PROM), TargetResult(TEAM_B, error="mimir/team-b: HTTP 401")])
    for day, scale in zip(COST_DAYS, (1.0, 1.5), strict=True):
        publish_cost_report(store, day, scale, up["artifacts"][0])


@pytest.fixture
def s3_store(devstack: dict[str, str]) -> Iterator[ReportStore]:
    """A report root in a bucket of its own on the devstack's moto; the bucket is removed afterwards."""
    with report_root_bucket(devstack["DEVSTACK_S3_ENDPOINT"], "ui-page") as (store, _client, _bucket):
        yield store


def _shown(page: dict[str, Any]) -> dict[str, Any]:
    """What the page shows, without what names the root (URIs, committed_at clock)."""
    return {"status": page["status"], "report_date": (page["report"] or {}).get("report_date"),
            "coverage": (page["report"] or {}).get("coverage"), "totals": page["totals"],
            "categories": page["categories"], "trend": page["trend"],
            "actions": [(a["rank"], a["kind"], a["target"], a["monthly_saving_usd"], bool(a["artifact_href"]))
                        for a in page["actions"]],
            "datasets": [(d["dataset"], d["dag_id"], d["report_date"], d["rows"], d["quality"])
                         for d in page["datasets"]],
            "failed": [(f["dag_id"], f["target"], f["error"]) for f in page["failed_targets"]]}


def _s3_sum(store: ReportStore, day: date, column: str) -> float:
    path = f"{store.base}/cost_summary/report_date={day.isoformat()}/part-0.parquet"
    table = pq.read_table(path, filesystem=store.fs)
    return float(pc.sum(table.column(column)).as_py())


def _new_process() -> None:
    """Forget what this process cached in memory (the disk cache stays), as a restarted api-server would."""
    ui._marker_cache.clear()
    ui._trend_cache.clear()
    ui._loaded.clear()


def test_the_page_reads_an_s3_root_like_a_local_one(tmp_path: Path, s3_store: ReportStore,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ui.CACHE_DIR_ENV, str(tmp_path / "cache"))
    local = ReportStore(str(tmp_path / "reports"))
    build_lake(local)
    build_lake(s3_store)
    on_disk, on_s3 = ui.report_page(local, TODAY), ui.report_page(s3_store, TODAY)
    assert on_s3["root"] == s3_store.uri and on_s3["status"] == "ok"
    assert _shown(on_s3) == _shown(on_disk)
    # The figures are the Parquet rows on S3.
    for key in ("current", "projected", "saving"):
        assert on_s3["totals"][key] == pytest.approx(_s3_sum(s3_store, COST_DAYS[-1], f"{key}_monthly_usd"), abs=0.005)
    assert [p["report_date"] for p in on_s3["trend"]] == [d.isoformat() for d in COST_DAYS]
    assert on_s3["trend"][0]["current"] == pytest.approx(_s3_sum(s3_store, COST_DAYS[0], "current_monthly_usd"),
                                                         abs=0.005)
    assert on_s3["failed_targets"] and on_s3["failed_targets"][0]["target"] == "mimir/team-b"
    linked = [a for a in on_s3["actions"] if a["artifact_href"]]
    assert linked and linked[0]["artifact_uri"].startswith(f"{s3_store.uri}/_artifacts/")
    assert ui.read_artifact(s3_store, linked[0]["artifact_uri"]) == b"- drop: x\n"
    assert list((tmp_path / "cache").glob("*.json")), "the page keeps its cache on disk"

    # A restarted server: the same page from the disk cache plus what S3 lists now.
    _new_process()
    assert _shown(ui.report_page(s3_store, TODAY)) == _shown(on_s3)

    # A newer cost report is shown at once: a cached listing or marker must not hide it.
    later = date(2026, 12, 7)
    publish_cost_report(s3_store, later, 2.0, "")
    page = ui.report_page(s3_store, TODAY)
    assert page["report"]["report_date"] == later.isoformat()
    assert page["totals"]["current"] == pytest.approx(_s3_sum(s3_store, later, "current_monthly_usd"), abs=0.005)
    assert [p["report_date"] for p in page["trend"]] == [*(d.isoformat() for d in COST_DAYS), later.isoformat()]
    _new_process()
    assert _shown(ui.report_page(s3_store, TODAY)) == _shown(page)


def test_on_s3_the_page_reads_only_the_markers_it_shows(s3_store: ReportStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A root the page never read: older commit markers are listed, not read (GETs counted through boto3's
    ``before-parameter-build`` event of the page's S3 client), and the page equals the one every marker gives.

    Besides the lake: ``finops_upstream`` reports on two more recent dates (only its newest marker is read), and
    ``finops_tiering`` committed three weeks ago and was refused on a recent date (its marker names only the
    ``quality_checks`` record): its folder, listed only from recent dates at first, is listed whole to find the
    older marker the partition shown comes from."""
    import pyarrow as pa

    from traceo_finops.cost_report.dataset import STORAGE
    from traceo_finops.quality import DataQualityError, between
    from traceo_finops.reports import RUN_ID_COLUMN, Dataset

    monkeypatch.setenv(ui.CACHE_DIR_ENV, "off")
    build_lake(s3_store)
    storage = s3_store.read_partition(STORAGE.name, date(2026, 11, 28)).drop_columns([RUN_ID_COLUMN]).to_pylist()
    for day in (date(2026, 12, 2), date(2026, 12, 3)):
        publish(_ctx(s3_store, "finops_upstream", day, f"up-{day}"), Report(datasets=[(STORAGE, storage)]),
                [TargetResult(PROM)])
    blocks = Dataset("s3_tiering", 1, pa.schema([pa.field("bucket", pa.string(), nullable=False),
                                                 pa.field("bytes", pa.int64(), nullable=False)]),
                     expectations=(between("bytes", 0),))
    publish(_ctx(s3_store, "finops_tiering", date(2026, 11, 16), "t-1"),
            Report(datasets=[(blocks, [{"bucket": "b", "bytes": 1}])]), [TargetResult(PROM)])
    with pytest.raises(DataQualityError):
        publish(_ctx(s3_store, "finops_tiering", date(2026, 12, 5), "t-2-bad"),
                Report(datasets=[(blocks, [{"bucket": "b", "bytes": -1}])]), [TargetResult(PROM)])

    got: list[str] = []
    ui._s3(s3_store).meta.events.register("before-parameter-build.s3.GetObject",
                                          lambda params, **_: got.append(str(params["Key"])))

    def cold_page() -> dict[str, Any]:
        _new_process()
        ui._listings.clear()
        got.clear()
        return ui.report_page(s3_store, TODAY)

    page = cold_page()
    markers = sorted(k.split("/_commits/", 1)[1] for k in got if "/_commits/" in k)
    assert markers == ["finops_cost_report/report_date=2026-11-29.json",
                       "finops_cost_report/report_date=2026-12-06.json",
                       "finops_tiering/report_date=2026-11-16.json", "finops_tiering/report_date=2026-12-05.json",
                       "finops_upstream/report_date=2026-12-03.json"]
    tiering = [d for d in page["datasets"] if d["dataset"] == "s3_tiering"]
    assert [(d["report_date"], d["quality"]) for d in tiering] == [("2026-11-16", "failed")]
    monkeypatch.setattr(ui, "page_markers", lambda s, *_a, **_k: ui.markers_by_dag(s))
    every = cold_page()
    assert len([k for k in got if "/_commits/" in k]) == 7
    assert _shown(page) == _shown(every)
