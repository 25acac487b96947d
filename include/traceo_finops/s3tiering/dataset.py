"""The ``s3_tiering`` dataset and the Slack digest of a run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from traceo_finops.pricing import ALL_CLASSES
from traceo_finops.quality import Expect, between, not_null, one_of, unique_together
from traceo_finops.s3tiering.inventory import SIZE_BANDS
from traceo_finops.slack import Digest

DATASET_NAME = "s3_tiering"
SOURCES = ("list", "inventory")
# Why a bucket was not written, by outcome mode (a digest that wrote nothing says why).
NOT_WRITTEN = {
    "dry-run": "dry run (the run's apply param is false)",
    "not-allowlisted": "not allowlisted (buckets[].apply: false)",
    "unchanged": "already as planned",
    "failed": "failed (see its error)",
}


def s3_tiering_dataset(age_band_labels: Sequence[str]) -> Any:
    """The dataset; its age bands follow ``workflows.s3_tiering.transition_days``."""
    from traceo_finops.reports import Dataset

    return Dataset(
        name=DATASET_NAME,
        version=2,  # v2: source
        description="Objects, bytes and monthly cost per bucket, tenant, storage class, age band and size band, "
                    "with the proposed lifecycle rule, its projected cost, one-time cost, break-even and "
                    "12-month net saving, whether the rule is in force, and where the object counts came "
                    "from (ListObjectsV2 or the bucket's S3 Inventory).",
        schema=pa.schema([
            pa.field("bucket", pa.string(), nullable=False),
            pa.field("tenant", pa.string(), nullable=False),  # "" outside tenants (Thanos, generic, tmp/)
            pa.field("storage_class", pa.string(), nullable=False),
            pa.field("age_band", pa.string(), nullable=False),
            pa.field("size_band", pa.string(), nullable=False),
            pa.field("objects", pa.int64(), nullable=False),
            pa.field("bytes", pa.int64(), nullable=False),
            pa.field("current_monthly_usd", pa.float64(), nullable=False),
            pa.field("proposed_rule_id", pa.string(), nullable=True),
            pa.field("projected_monthly_usd", pa.float64(), nullable=False),
            pa.field("one_time_transition_usd", pa.float64(), nullable=False),
            pa.field("break_even_days", pa.float64(), nullable=True),  # null: the row saves nothing
            pa.field("net_saving_12m_usd", pa.float64(), nullable=False),
            pa.field("applied", pa.bool_(), nullable=False),  # the proposed rule is in force on the bucket
            pa.field("source", pa.string(), nullable=False),  # list (ListObjectsV2) | inventory (S3 Inventory)
            pa.field("window_start", pa.timestamp("s", tz="UTC"), nullable=False),
            pa.field("window_end", pa.timestamp("s", tz="UTC"), nullable=False),
        ]),
        expectations=(
            *not_null("bucket", "tenant", "storage_class", "age_band", "size_band", "objects", "bytes",
                      "current_monthly_usd", "projected_monthly_usd", "one_time_transition_usd",
                      "net_saving_12m_usd", "applied", "source", "window_start", "window_end"),
            between("objects", min_value=1),
            between("bytes", min_value=0),
            between("current_monthly_usd", min_value=0),
            between("projected_monthly_usd", min_value=0),
            between("one_time_transition_usd", min_value=0),
            between("break_even_days", min_value=0),
            one_of("storage_class", [str(c) for c in ALL_CLASSES]),
            one_of("age_band", list(age_band_labels)),
            one_of("size_band", list(SIZE_BANDS)),
            one_of("source", list(SOURCES)),
            Expect("ExpectColumnValuesToMatchRegex", {"column": "proposed_rule_id", "regex": r"^finops-"}),
            unique_together("bucket", "tenant", "storage_class", "age_band", "size_band"),
        ),
    )


def usd(value: float) -> str:
    """Dollars readable at any scale (the devstack's buckets cost micro-dollars)."""
    if value == 0:
        return "$0"
    if abs(value) >= 100:
        return f"${value:,.0f}"
    if abs(value) >= 0.01:
        return f"${value:,.2f}"
    return f"${value:.2g}"


def _written_summary(outcomes: Sequence[dict[str, Any]], errors: Sequence[dict[str, str]]) -> str:
    """What was written, and for every other bucket why not."""
    applied = [o["bucket"] for o in outcomes if o.get("mode") in ("applied", "rolled-back")]
    why: dict[str, list[str]] = {}
    for o in outcomes:
        if o.get("mode") in NOT_WRITTEN:
            why.setdefault(NOT_WRITTEN[o["mode"]], []).append(o["bucket"])
    seen = {o["bucket"] for o in outcomes}
    unplanned = sorted({e["bucket"] for e in errors} - seen)
    if unplanned:
        why.setdefault("could not be planned (see its error)", []).extend(unplanned)
    if not applied and list(why) == [NOT_WRITTEN["dry-run"]]:
        return "Nothing was written to any bucket (dry run)."
    reasons = "; ".join(f"{', '.join(sorted(b))} {reason}" for reason, b in why.items())
    if applied:
        return f"Written: {', '.join(applied)}." + (f" Not written: {reasons}." if reasons else "")
    return f"Nothing was written to any bucket: {reasons}." if reasons else "Nothing was written (no bucket)."


def tiering_digest(report_date: str, rows: Sequence[dict[str, Any]], outcomes: Sequence[dict[str, Any]],
                   errors: Sequence[dict[str, str]], report_uri: str, artifact_uris: Sequence[str]) -> Digest:
    """Per bucket: cost now and planned, 12-month net saving, the rule diff, and what was written (or why not)."""
    by_bucket: dict[str, dict[str, float]] = {}
    sources: dict[str, str] = {}
    for r in rows:
        b = by_bucket.setdefault(r["bucket"], {"current": 0.0, "projected": 0.0, "one_time": 0.0, "net": 0.0})
        b["current"] += r["current_monthly_usd"]
        b["projected"] += r["projected_monthly_usd"]
        b["one_time"] += r["one_time_transition_usd"]
        b["net"] += r["net_saving_12m_usd"]
        if r.get("source"):
            sources[r["bucket"]] = r["source"]
    modes = {o["bucket"]: o for o in outcomes}
    table = []
    for bucket, b in sorted(by_bucket.items()):
        o = modes.get(bucket, {})
        d = o.get("diff") or {}
        rules = f"+{len(d.get('added', []))} ~{len(d.get('changed', []))} -{len(d.get('removed', []))}"
        table.append((bucket, usd(b["current"]), usd(b["projected"]), usd(b["net"]), rules, o.get("mode", "-")))
    total_now = sum(b["current"] for b in by_bucket.values())
    total_net = sum(b["net"] for b in by_bucket.values())
    summary = (f"*{len(by_bucket)}* bucket(s) cost *{usd(total_now)}/month*; the planned lifecycle rules save "
               f"*{usd(total_net)}* over 12 months, fees included. ")
    summary += _written_summary(outcomes, errors)
    facts = {"Report date": report_date, "Buckets": str(len(by_bucket))}
    read = {"inventory": "S3 Inventory", "list": "ListObjectsV2"}
    if sources:
        facts["Objects from"] = ", ".join(f"{b}: {read.get(s, s)}" for b, s in sorted(sources.items()))
    for o in outcomes:
        d = o.get("diff") or {}
        changes = [f"+{r['ID']}" for r in d.get("added", [])] + [f"~{c['after']['ID']}" for c in d.get("changed", [])] \
            + [f"-{r['ID']}" for r in d.get("removed", [])]
        if changes:
            facts[f"{o['bucket']} ({o.get('mode')})"] = " ".join(changes)[:300]
    for e in errors:
        facts[f"{e['bucket']}: error"] = e["error"][:300]
    return Digest(
        title=f"S3 tiering plan {report_date}",
        summary=summary,
        facts=facts,
        table_header=("bucket", "now/month", "planned/month", "12m net", "rules", "mode"),
        table_rows=table,
        footer=f"Report: {report_uri}" + (f" · lifecycle JSON: {', '.join(artifact_uris)}" if artifact_uris else ""),
    )
