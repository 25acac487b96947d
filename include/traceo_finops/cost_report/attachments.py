"""The files beside the cost report, which a bot-token Slack connection also uploads with the digest.

- ``cost-by-category.png``: the monthly cost of each category, day by day over the ``history``
  window (the same daily totals the anomaly detectors read), drawn with matplotlib's Agg canvas
  (no display, no global pyplot state; matplotlib is imported only here, when a report is built);
- ``actions.csv``: the ranked ``actions`` dataset, one row per action, its columns in the dataset's
  order (without the window columns, which every row shares): a FinOps analyst's spreadsheet.

Both are written by the kit's publish with the report's datasets (one committed set) under
``_artifacts/cost_report/report_date=D/``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from traceo_finops.reports import WINDOW_COLUMNS

ARTIFACT_DIR = "cost_report"
CHART_FILE = "cost-by-category.png"
ACTIONS_FILE = "actions.csv"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chart_png(series: Mapping[str, Sequence[tuple[date, float]]], day: date) -> bytes:
    """A PNG line chart of monthly cost per category over the days of ``series`` (category -> points)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas draws the PNG; no display, no pyplot
    ax = fig.add_subplot()
    days = sorted({d for points in series.values() for d, _ in points})
    for category in sorted(series, key=lambda c: -max((v for _, v in series[c]), default=0.0)):
        points = sorted(series[category])
        ax.plot(np.array([d for d, _ in points], dtype="datetime64[D]"), [v for _, v in points], marker="o",
                markersize=3, label=category)
    if days:
        totals = {d: sum(v for points in series.values() for pd, v in points if pd == d) for d in days}
        ax.plot(np.array(days, dtype="datetime64[D]"), [totals[d] for d in days], color="black", linestyle="--",
                marker="s", markersize=3, linewidth=1, label="total")
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]  # matplotlib.dates has no annotations
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    # At least a week wide, so one day (a first report) is a point on a week, not on a decade.
    first = min([*days, day - timedelta(days=6)])
    lo, hi = date2num([first, day])  # type: ignore[no-untyped-call]
    ax.set_xlim(float(lo) - 0.5, float(hi) + 0.5)
    top = max((v for points in series.values() for _, v in points), default=0.0)
    ax.yaxis.set_major_formatter("${x:,.0f}" if top >= 20 else "${x:,.2f}")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("USD per month")
    start = days[0].isoformat() if days else day.isoformat()
    ax.set_title(f"Observability cost by category, {start} to {day.isoformat()}")
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(loc="upper left", fontsize="small", ncols=2)
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": "traceo-finops cost report"})
    return out.getvalue()


def actions_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> bytes:
    """The ranked actions as UTF-8 CSV with a header; floats keep their exact value (``repr``)."""
    names = [c for c in columns if c not in {f.name for f in WINDOW_COLUMNS}]
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(names)
    for row in sorted(rows, key=lambda r: int(r["rank"])):
        writer.writerow(["" if row.get(c) is None else repr(row[c]) if isinstance(row[c], float) else row[c]
                         for c in names])
    return out.getvalue().encode("utf-8")
