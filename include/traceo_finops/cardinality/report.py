"""The ``cardinality`` dataset and its Slack digest."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from traceo_finops.cardinality.collect import SourceSnapshot
from traceo_finops.quality import between, not_null, unique_together
from traceo_finops.reports import Dataset
from traceo_finops.slack import Digest

CARDINALITY = Dataset(
    name="cardinality",
    version=1,
    description="Active series per metric per source/tenant, with its share and monthly cost.",
    schema=pa.schema([
        pa.field("source", pa.string(), nullable=False),
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("series", pa.int64(), nullable=False),
        pa.field("share", pa.float64(), nullable=False),  # of the source/tenant's series, 0..1
        pa.field("monthly_cost_usd", pa.float64(), nullable=False),
        pa.field("window_start", pa.timestamp("s", tz="UTC"), nullable=False),
        pa.field("window_end", pa.timestamp("s", tz="UTC"), nullable=False),
    ]),
    expectations=(
        *not_null("source", "tenant", "metric", "series", "share", "monthly_cost_usd"),
        between("series", min_value=1),
        between("share", min_value=0, max_value=1),
        between("monthly_cost_usd", min_value=0),
        unique_together("source", "tenant", "metric"),
    ),
)


def cardinality_rows(snapshots: Sequence[SourceSnapshot], usd_per_1k_series_month: float,
                     window_start: object, window_end: object) -> list[dict[str, object]]:
    """One row per metric per source/tenant; share is of that source/tenant's counted series."""
    rows: list[dict[str, object]] = []
    for snap in snapshots:
        total = sum(m.series for m in snap.metrics)
        for m in snap.metrics:
            rows.append({
                "source": m.source, "tenant": m.tenant, "metric": m.metric, "series": m.series,
                "share": m.series / total if total else 0.0,
                "monthly_cost_usd": round(m.series / 1000 * usd_per_1k_series_month, 4),
                "window_start": window_start, "window_end": window_end,
            })
    return rows


def cardinality_digest(rows: Sequence[dict[str, object]], report_uri: str, report_date: str,
                       top_n: int) -> Digest:
    """Top metrics by series across all sources, with totals."""
    total_series = sum(int(r["series"]) for r in rows)  # type: ignore[call-overload]
    total_cost = sum(float(r["monthly_cost_usd"]) for r in rows)  # type: ignore[arg-type]
    sources = sorted({f"{r['source']}/{r['tenant']}" if r["tenant"] else str(r["source"]) for r in rows})
    top = sorted(rows, key=lambda r: -int(r["series"]))[:top_n]  # type: ignore[call-overload]
    return Digest(
        title=f"Cardinality audit {report_date}",
        summary=f"*{total_series:,}* active series in *{len(rows):,}* metrics "
                f"cost about *${total_cost:,.2f}/month*.",
        facts={"Sources": ", ".join(sources) or "none", "Metrics": f"{len(rows):,}",
               "Active series": f"{total_series:,}", "Monthly cost": f"${total_cost:,.2f}"},
        table_header=("metric", "series", "share", "$/month"),
        table_rows=[(r["metric"], f"{int(r['series']):,}", f"{float(r['share']):.1%}",  # type: ignore[call-overload,arg-type]
                     f"{float(r['monthly_cost_usd']):,.2f}") for r in top],  # type: ignore[arg-type]
        footer=f"Report: {report_uri}",
    )
