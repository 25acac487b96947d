"""The ``example_up`` dataset (one row per source × scrape target) and its digest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from traceo_finops.quality import between, not_null, unique_together
from traceo_finops.reports import Dataset
from traceo_finops.slack import Digest

EXAMPLE_UP = Dataset(
    name="example_up",
    version=1,
    description="Every scrape target of every source, and whether it was up at the window's end.",
    schema=pa.schema([
        pa.field("source", pa.string(), nullable=False),
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("job", pa.string(), nullable=False),
        pa.field("instance", pa.string(), nullable=False),
        pa.field("up", pa.int64(), nullable=False),
        pa.field("window_end", pa.timestamp("s", tz="UTC"), nullable=False),
    ]),
    expectations=(*not_null("source", "job", "instance", "up"), between("up", 0, 1),
                  unique_together("source", "tenant", "job", "instance")),
)


def digest(rows: Sequence[dict[str, Any]], report_date: str) -> Digest:
    down = sorted(f"{r['source']}/{r['job']}/{r['instance']}" for r in rows if not r["up"])
    return Digest(title=f"Scrape targets {report_date}",
                  summary=f"*{len(rows) - len(down)}* of *{len(rows)}* scrape targets up"
                          + (f"; down: {', '.join(down[:10])}" if down else "."),
                  facts={"Targets": str(len(rows)), "Down": str(len(down))})
