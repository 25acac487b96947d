"""`python -m traceo_finops summary` reads only committed sets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from traceo_finops.__main__ import main
from traceo_finops.config import FinopsConfig
from traceo_finops.kit.context import RunContext, Target, TargetKind
from traceo_finops.kit.outcome import TargetResult
from traceo_finops.kit.publish import Report, publish
from traceo_finops.reports import Dataset, ReportStore
from traceo_finops.window import Window

pytestmark = pytest.mark.unit

SERIES = Dataset("cardinality", 1, pa.schema([pa.field("source", pa.string()), pa.field("tenant", pa.string()),
                                              pa.field("metric", pa.string()), pa.field("series", pa.int64())]))
WINDOW = Window(datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC))


def _publish(root: Path, run_id: str, rows: list[dict[str, object]]) -> None:
    cfg = FinopsConfig.model_validate({"sources": [{"name": "a"}], "report_root": str(root)})
    ctx = RunContext(cfg, "cardinality", "finops_cardinality", run_id, WINDOW)
    publish(ctx, Report([(SERIES, rows)]), [TargetResult(Target(TargetKind.SOURCE, "a"))])


def test_summary_counts_committed_rows_and_names_an_uncommitted_date(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "reports"
    config = tmp_path / "finops.yaml"
    config.write_text(f"sources: [{{name: a}}]\nreport_root: {root}\n")
    monkeypatch.setenv("FINOPS_CONFIG", str(config))
    monkeypatch.delenv("FINOPS_REPORT_ROOT", raising=False)

    assert main(["summary"]) == 1
    assert "no committed reports" in capsys.readouterr().out

    rows = [{"source": "a", "tenant": "", "metric": f"m{i}", "series": 10 + i} for i in range(3)]
    _publish(root, "run-1", rows)
    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    assert "- cardinality: 3 rows in 1 committed partition(s) 2026-11-27" in out
    assert f"{sum(r['series'] for r in rows):,} series" in out

    # A later run killed after writing its partition, before its commit marker: not read, and said so.
    ReportStore(str(root)).write_partition(SERIES, WINDOW.report_date, rows[:1], run_id="run-2")
    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    assert "- cardinality: 0 rows in 0 committed partition(s)" in out
    assert "not read: dataset 'cardinality' 2026-11-27 is uncommitted" in out and "run-2" in out
