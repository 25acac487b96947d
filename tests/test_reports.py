"""The Parquet report writer: layout, readers, atomic replace, and nothing half-written."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from traceo_finops import reports
from traceo_finops.reports import Dataset, ReportError, ReportStore

pytestmark = pytest.mark.unit

DS = Dataset("demo_metrics", 3, pa.schema([
    pa.field("metric", pa.string(), nullable=False),
    pa.field("series", pa.int64(), nullable=False),
    pa.field("cost", pa.float64()),
    pa.field("window_end", pa.timestamp("s", tz="UTC")),
]))
D1, D2 = date(2026, 11, 26), date(2026, 11, 27)


def rows(n: int, tag: str) -> list[dict]:
    return [{"metric": f"{tag}_{i}", "series": i, "cost": i / 10, "window_end": datetime(2026, 11, 27, tzinfo=UTC)}
            for i in range(n)]


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_layout_and_every_reader(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path))
    w1 = store.write_partition(DS, D1, rows(3, "a"), metadata={"run_id": "r1"})
    store.write_partition(DS, D2, rows(5, "b"))
    assert files_under(tmp_path) == [f"demo_metrics/report_date={D1}/part-0.parquet",
                                     f"demo_metrics/report_date={D2}/part-0.parquet"]
    assert w1.rows == 3 and w1.bytes == Path(w1.uri).stat().st_size
    meta = pq.read_schema(w1.uri).metadata
    assert meta[b"traceo.schema_version"] == b"3" and meta[b"traceo.run_id"] == b"r1"

    table = pads.dataset(tmp_path / "demo_metrics", partitioning="hive").to_table()
    assert table.num_rows == 8 and set(table.column("report_date").to_pylist()) == {str(D1), str(D2)}
    frame = pd.read_parquet(tmp_path / "demo_metrics")
    assert len(frame) == 8
    got = duckdb.sql(f"SELECT report_date, count(*), sum(series) FROM read_parquet("
                     f"'{tmp_path}/demo_metrics/*/*.parquet', hive_partitioning=true) GROUP BY 1 ORDER BY 1").fetchall()
    assert got == [(D1, 3, sum(range(3))), (D2, 5, sum(range(5)))]


def test_rerun_replaces_the_partition(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path))
    store.write_partition(DS, D1, rows(10, "old"))
    store.write_partition(DS, D1, rows(2, "new"))
    table = store.read_partition(DS.name, D1)
    assert table.column("metric").to_pylist() == ["new_0", "new_1"]
    assert files_under(tmp_path) == [f"demo_metrics/report_date={D1}/part-0.parquet"]


def test_strays_in_a_partition_are_removed(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path))
    part = tmp_path / "demo_metrics" / f"report_date={D1}"
    part.mkdir(parents=True)
    pq.write_table(DS.table(rows(4, "stray")), part / "part-old-writer.parquet")
    store.write_partition(DS, D1, rows(1, "x"))
    assert pads.dataset(tmp_path / "demo_metrics", partitioning="hive").to_table().num_rows == 1


def test_readers_never_see_half_or_double(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path))
    store.write_partition(DS, D1, rows(1000, "a"))
    seen: set[int] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(pads.dataset(tmp_path / "demo_metrics", partitioning="hive").to_table().num_rows)
            except BaseException as exc:  # any failure to read is the finding
                errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(30):
        store.write_partition(DS, D1, rows(1000 if i % 2 else 400, "b"))
    stop.set()
    t.join()
    assert not errors
    assert seen <= {1000, 400}


def test_schema_errors_write_nothing(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path))
    store.write_partition(DS, D1, rows(2, "keep"))
    before = files_under(tmp_path)
    with pytest.raises(ReportError, match=r"demo_metrics.*unknown column"):
        store.write_partition(DS, D1, [{"metric": "m", "series": 1, "colour": "red"}])
    with pytest.raises(ReportError, match=r"demo_metrics.*do not fit"):
        store.write_partition(DS, D1, [{"metric": "m", "series": "many"}])
    with pytest.raises(ReportError, match="missing"):
        store.write_partition(DS, D1, pa.table({"metric": ["m"]}))
    assert files_under(tmp_path) == before
    assert store.read_partition(DS.name, D1).column("metric").to_pylist() == ["keep_0", "keep_1"]


def test_failure_while_writing_keeps_the_old_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ReportStore(str(tmp_path))
    store.write_partition(DS, D1, rows(3, "old"))

    def crash_midway(self: ReportStore, path: str, payload: bytes) -> None:
        Path(path).write_bytes(payload[: len(payload) // 2])  # a real partial file on disk, then the crash
        raise OSError("disk full")

    monkeypatch.setattr(reports.ReportStore, "_write_bytes", crash_midway)
    with pytest.raises(ReportError, match=r"demo_metrics.*disk full"):
        store.write_partition(DS, D1, rows(5, "new"))
    monkeypatch.undo()
    assert files_under(tmp_path) == [f"demo_metrics/report_date={D1}/part-0.parquet"]
    assert store.read_partition(DS.name, D1).num_rows == 3


def test_report_root_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # Running as root ignores permission bits, so make the root impossible: a path under a file.
    store = ReportStore(str(blocker / "reports"))
    with pytest.raises(ReportError, match=f"report root {blocker}/reports is not writable"):
        store.write_partition(DS, D1, rows(1, "x"))
    assert blocker.read_text() == "not a folder"


def test_unknown_scheme_and_missing_partition(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="only local paths and s3://"):
        ReportStore("gs://bucket/x")
    with pytest.raises(ReportError, match=f"no partition for {D2}"):
        ReportStore(str(tmp_path)).read_partition(DS.name, D2)


def test_artifacts_beside_reports(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path))
    uri = store.write_artifact("cardinality", D1, "relabel.yaml", b"a: 1\n")
    store.write_artifact("cardinality", D1, "relabel.yaml", b"a: 2\n")
    assert Path(uri).read_bytes() == b"a: 2\n" and uri.startswith(str(tmp_path / "_artifacts"))
    with pytest.raises(ReportError, match="plain file name"):
        store.write_artifact("cardinality", D1, "../escape", b"")
    # artifacts live under a '_' folder, so Hive readers of the datasets never see them
    store.write_partition(DS, D1, rows(1, "x"))
    assert pads.dataset(tmp_path / "demo_metrics", partitioning="hive").to_table().num_rows == 1
