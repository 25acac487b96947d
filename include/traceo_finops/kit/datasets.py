"""The kit's own datasets, written by every workflow's publish: ``run_targets`` and ``quality_checks``.

Both are partitioned by ``dag_id`` and ``report_date`` (Hive keys), so each workflow replaces
only its own rows.
"""

from __future__ import annotations

import pyarrow as pa

from traceo_finops.quality import not_null, one_of, unique_together
from traceo_finops.reports import WINDOW_COLUMNS, Dataset

TARGET_OK = "ok"
TARGET_FAILED = "failed"

RUN_TARGETS = Dataset(
    name="run_targets",
    version=2,  # v2: note
    description="Every target of a run (source, tenant, bucket, batch): status, error, rows written, and what "
                "the rows cannot show (no data in the window, a figure read live on a past day).",
    schema=pa.schema([
        pa.field("target", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("bucket", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        pa.field("rows_written", pa.int64(), nullable=False),
        pa.field("note", pa.string(), nullable=False),  # "" when the rows need no caveat
        *WINDOW_COLUMNS,
    ]),
    expectations=(
        *not_null("target", "status"),
        one_of("status", [TARGET_OK, TARGET_FAILED]),
        unique_together("target"),
    ),
)

QUALITY_CHECKS = Dataset(
    name="quality_checks",
    version=1,
    description="The Great Expectations validation of every dataset a run published (or refused to).",
    schema=pa.schema([
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("suite", pa.string(), nullable=False),
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("expectations_run", pa.int64(), nullable=False),
        pa.field("failures", pa.list_(pa.string()), nullable=False),
        pa.field("success", pa.bool_(), nullable=False),
        pa.field("checked_at", pa.timestamp("s", tz="UTC"), nullable=False),
    ]),
    expectations=(*not_null("dataset", "success"), unique_together("dataset")),
)

KIT_DATASETS = (RUN_TARGETS, QUALITY_CHECKS)
