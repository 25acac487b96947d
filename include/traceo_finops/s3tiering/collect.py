"""Reading a bucket for ``finops_s3_tiering``: its objects (from a fresh S3 Inventory or ListObjectsV2)
folded into groups, and how long each block has left before retention or a deletion mark removes it.

Only reads. The inventory, listing and block-metadata readers themselves are in ``inventory.py``,
``blocks.py`` and ``layout.py``; this module decides which to use for a bucket.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.fs as pafs

from traceo_finops.config import Bucket, BucketLayout, S3TieringSettings
from traceo_finops.s3tiering.blocks import BlockState
from traceo_finops.s3tiering.errors import InventoryMissing, PlanError, TooManyObjects
from traceo_finops.s3tiering.inventory import (
    DAY_MS,
    Aggregate,
    InventoryManifest,
    aggregate,
    check_files_present,
    iter_inventory,
    list_objects,
    read_manifest,
    resolve_manifest,
)
from traceo_finops.shapes import S3Client

log = logging.getLogger(__name__)


def remaining_days(bucket: Bucket, layout: BucketLayout, states: dict[tuple[str, str], BlockState],
                    as_of_ms: int) -> pa.Table:
    """Per block: whole days until retention or a deletion mark removes it (null: no known end)."""
    delay_ms = bucket.deletion_delay.total_seconds() * 1000
    tenants, blocks, remaining = [], [], []
    for (tenant, ulid), st in states.items():
        retention = bucket.retention_overrides.get(tenant, bucket.retention) if layout is BucketLayout.MIMIR \
            else bucket.retention
        if st.deletion_marked:
            days: float | None = 0.0  # gone within the deletion delay
        elif retention is not None and st.max_time is not None:
            end = st.max_time + retention.total_seconds() * 1000 + delay_ms
            days = max(0.0, math.floor((end - as_of_ms) / DAY_MS))
        else:
            days = None
        tenants.append(tenant)
        blocks.append(ulid)
        remaining.append(days)
    return pa.table({"tenant": pa.array(tenants, pa.string()), "block": pa.array(blocks, pa.string()),
                     "remaining_days": pa.array(remaining, pa.float64())})


def _fmt_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def fresh_inventory(bucket: Bucket, location: str, settings: S3TieringSettings, as_of: datetime,
                     fs: pafs.FileSystem | None) -> tuple[InventoryManifest | None, str]:
    """The bucket's configured S3 Inventory if it is there and fresh enough, else why not.

    Missing (nothing at the location, no manifest yet) or older than ``inventory_max_age`` at the
    window's end: ``(None, reason)``, and the caller lists the bucket. An inventory that is there but
    unreadable or inconsistent is an :class:`InventoryError`: the bucket's error, not a silent listing.
    """
    if fs is None:
        return None, "no filesystem was given to read it"
    as_of_ms = int(as_of.timestamp() * 1000)
    try:
        path = resolve_manifest(fs, location, as_of_ms, bucket.name)
        manifest = read_manifest(fs, path, bucket.name, check_files=False)
    except InventoryMissing as exc:
        return None, f"missing ({str(exc).removeprefix(f'bucket {bucket.name!r}: ')})"
    max_age_ms = settings.inventory_max_age.total_seconds() * 1000
    if manifest.creation_ms is None:
        return None, f"s3://{path} says not when it was made (no creationTimestamp): its age is unknown"
    age_ms = as_of_ms - manifest.creation_ms
    if age_ms > max_age_ms:
        return None, (f"stale: s3://{path} was made {_fmt_ms(manifest.creation_ms)}, {age_ms / 86_400_000:.1f} days "
                      f"before the window's end (workflows.s3_tiering.inventory_max_age: "
                      f"{settings.inventory_max_age.total_seconds() / 86400:g} d)")
    check_files_present(fs, manifest)
    return manifest, (f"S3 Inventory s3://{path} of {_fmt_ms(manifest.creation_ms)} ({len(manifest.files)} "
                      f"{manifest.file_format} file(s))")


def objects(client: S3Client, bucket: Bucket, settings: S3TieringSettings, as_of: datetime,
             inventory_fs: Callable[[], pafs.FileSystem] | None) -> tuple[Aggregate, str, list[str]]:
    """The bucket's objects folded into groups, where they came from, and warnings.

    A configured, fresh S3 Inventory is read directly — no ListObjectsV2 at all; the bucket is
    listed (up to ``list_objects_max`` objects) when it has none, or it is missing or stale.
    """
    not_used = ""
    if bucket.inventory:
        fs = inventory_fs() if inventory_fs is not None else None
        manifest, detail = fresh_inventory(bucket, bucket.inventory, settings, as_of, fs)
        if manifest is not None and fs is not None:
            log.info("bucket %s: reading %s", bucket.name, detail)
            return aggregate(iter_inventory(fs, manifest), bucket.layout, as_of, source="inventory"), detail, []
        not_used = f"the configured S3 Inventory ({bucket.inventory}) is not used: {detail}"
        log.warning("bucket %s: %s; listing the bucket instead", bucket.name, not_used)
    try:
        table = list_objects(client, bucket.name, max_objects=settings.list_objects_max)
    except TooManyObjects as exc:
        if not_used:
            raise PlanError(bucket.name, f"{exc}, and {not_used}") from None
        raise PlanError(bucket.name, f"{exc}; configure buckets[].inventory (an S3 Inventory report) for "
                                     "a bucket this big") from None
    detail = "ListObjectsV2" + (f" ({not_used})" if not_used else "")
    warnings = [f"{not_used}; the bucket was listed"] if not_used else []
    return aggregate([table], bucket.layout, as_of, source="list"), detail, warnings
