"""The cardinality datasets (``cardinality``, ``cardinality_labels``, ``showback``,
``usage_errors``) and the Slack digest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from traceo_finops.cardinality.config_audit import CHECK_NO_SERIES
from traceo_finops.cardinality.recommend import Classification, Suggestion
from traceo_finops.quality import between, not_null, one_of, unique_together
from traceo_finops.reports import WINDOW_COLUMNS, Dataset
from traceo_finops.slack import Digest

_WHERE = [pa.field("source", pa.string(), nullable=False), pa.field("tenant", pa.string(), nullable=False)]
_USAGE = [pa.field("usage_rules", pa.int64(), nullable=False), pa.field("usage_dashboards", pa.int64(), nullable=False),
          pa.field("usage_queries", pa.int64(), nullable=False)]

CARDINALITY = Dataset(
    name="cardinality",
    version=2,
    description="Per metric per source/tenant: series, usage, classification, safe suggestion and dollars.",
    schema=pa.schema([
        *_WHERE,
        pa.field("metric", pa.string(), nullable=False),
        pa.field("series", pa.int64(), nullable=False),
        pa.field("share", pa.float64(), nullable=False),  # of the source/tenant's series, 0..1
        pa.field("labels", pa.int64(), nullable=False),  # label names on the metric
        *_USAGE,
        pa.field("classification", pa.string(), nullable=False),
        pa.field("suggestion", pa.string(), nullable=False),
        pa.field("unneeded_labels", pa.list_(pa.string()), nullable=False),
        pa.field("series_after", pa.int64(), nullable=False),  # if the suggestion is applied
        pa.field("series_if_aggregated", pa.int64()),  # merging away the unneeded labels (server count)
        pa.field("blocked_by", pa.string(), nullable=False),
        pa.field("monthly_cost_usd", pa.float64(), nullable=False),
        pa.field("monthly_cost_after_usd", pa.float64(), nullable=False),
        pa.field("monthly_saving_usd", pa.float64(), nullable=False),
        *WINDOW_COLUMNS,
    ]),
    expectations=(
        *not_null("source", "tenant", "metric", "series", "classification", "suggestion"),
        between("series", min_value=1),
        between("series_after", min_value=0),
        between("share", min_value=0, max_value=1),
        between("monthly_saving_usd", min_value=0),
        one_of("classification", [c.value for c in Classification]),
        one_of("suggestion", [s.value for s in Suggestion]),
        unique_together("source", "tenant", "metric"),
    ),
)

CARDINALITY_LABELS = Dataset(
    name="cardinality_labels",
    version=1,
    description="Per metric and label: distinct values, who uses the label and how.",
    schema=pa.schema([
        *_WHERE,
        pa.field("metric", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("distinct_values", pa.int64(), nullable=False),
        pa.field("needed", pa.bool_(), nullable=False),  # some usage needs it to keep its result
        *_USAGE,
        pa.field("usage_kinds", pa.list_(pa.string()), nullable=False),  # matcher, by, on, group_left …
        *WINDOW_COLUMNS,
    ]),
    expectations=(
        *not_null("source", "tenant", "metric", "label", "distinct_values", "needed"),
        between("distinct_values", min_value=0),
        unique_together("source", "tenant", "metric", "label"),
    ),
)

SHOWBACK = Dataset(
    name="showback",
    version=1,
    description="Series and monthly cost by owner (a configurable label such as team), with `unattributed`.",
    schema=pa.schema([
        *_WHERE,
        pa.field("owner_label", pa.string(), nullable=False),
        pa.field("owner", pa.string(), nullable=False),
        pa.field("series", pa.int64(), nullable=False),
        pa.field("share", pa.float64(), nullable=False),
        pa.field("monthly_cost_usd", pa.float64(), nullable=False),
        *WINDOW_COLUMNS,
    ]),
    expectations=(
        *not_null("owner", "series", "share", "monthly_cost_usd"),
        between("series", min_value=0),
        between("share", min_value=0, max_value=1),
        unique_together("source", "tenant", "owner_label", "owner"),
    ),
)

USAGE_ERRORS = Dataset(
    name="usage_errors",
    version=1,
    description="Rules, dashboards, log lines and expressions that could not be read: where and why.",
    schema=pa.schema([
        *_WHERE,
        pa.field("source_kind", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("location", pa.string(), nullable=False),
        pa.field("expression", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        *WINDOW_COLUMNS,
    ]),
    expectations=(*not_null("source_kind", "error"),),
)

UNATTRIBUTED = "unattributed"


def cardinality_digest(rows: Sequence[Mapping[str, Any]], showback: Sequence[Mapping[str, Any]],
                       report_uri: str, report_date: str, top_n: int, errors: int,
                       findings: Sequence[Mapping[str, Any]] = ()) -> Digest:
    """Totals, the biggest safe savings, the top owners, and every tenant that has no series at all.

    ``findings`` are ``config_findings`` rows; a ``tenant_without_series`` one is said first in the
    summary, so an audit that found nothing because a tenant is misspelled never reads as a clean run.
    """
    silent = sorted({f"{f['source']}/{f['tenant'] or 'anonymous'}" for f in findings
                     if f.get("check_id") == CHECK_NO_SERIES})
    total_series = sum(int(r["series"]) for r in rows)
    cost = sum(float(r["monthly_cost_usd"]) for r in rows)
    saving = sum(float(r["monthly_saving_usd"]) for r in rows)
    after = sum(int(r["series_after"]) for r in rows)
    by_kind = {c.value: sum(1 for r in rows if r["classification"] == c.value) for c in Classification}
    top = sorted((r for r in rows if r["suggestion"] != Suggestion.KEEP.value),
                 key=lambda r: (-float(r["monthly_saving_usd"]), -int(r["series"])))[:top_n]
    owners = sorted(showback, key=lambda r: -int(r["series"]))[:5]
    reduction = 1 - after / total_series if total_series else 0.0
    return Digest(
        title=f"Cardinality audit {report_date}",
        summary=((f"*No series at all* for {', '.join(silent)}: misspelled tenant? (see config_findings) "
                  if silent else "") +
                 f"*{total_series:,}* active series in *{len(rows):,}* metrics cost about *${cost:,.2f}/month*. "
                 f"Safe changes cut *{total_series - after:,}* series ({reduction:.0%}), "
                 f"saving *${saving:,.2f}/month* without changing any rule, alert, dashboard or logged query."),
        facts={"Unused metrics": str(by_kind["unused"]), "Partially used": str(by_kind["partially_used"]),
               "Used": str(by_kind["used"]), "Monthly saving": f"${saving:,.2f}",
               "Top owners": ", ".join(f"{o['owner']} {int(o['series']):,}" for o in owners) or "n/a",
               "Unreadable expressions": str(errors),
               **({"Tenants without series": ", ".join(silent)} if silent else {})},
        table_header=("metric", "series", "suggestion", "after", "$/month saved"),
        table_rows=[(r["metric"], f"{int(r['series']):,}", r["suggestion"], f"{int(r['series_after']):,}",
                     f"{float(r['monthly_saving_usd']):,.2f}") for r in top],
        footer=f"Report: {report_uri} · relabel configs beside it under _artifacts/cardinality/",
    )
