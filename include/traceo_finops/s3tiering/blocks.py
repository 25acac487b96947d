"""Block facts the plan needs beyond the listing: time ranges (meta.json) and deletion marks.

A listed bucket has every block's meta.json read (in parallel): ``maxTime`` is when retention
deletes the block, and a meta.json that is not what Mimir/Thanos write stops the plan with
:class:`MalformedBlockMeta` naming the key. An inventoried (big) Mimir bucket reads each tenant's
``bucket-index.json.gz`` instead, as the store-gateways do, and meta.json only for blocks the index
does not know yet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from traceo_finops.config import BucketLayout
from traceo_finops.s3tiering.inventory import error_code, s3_error
from traceo_finops.s3tiering.layout import BlockMeta, parse_bucket_index, parse_meta_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockState:
    max_time: int | None  # ms; None: no meta.json (a partial upload) or it vanished meanwhile
    deletion_marked: bool


def _get(client: Any, bucket: str, key: str) -> bytes | None:
    try:
        return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception as exc:  # an S3 answer or a network fault
        if error_code(exc) in ("NoSuchKey", "404"):
            return None  # deleted by the compactor since the listing
        raise s3_error(exc, bucket, "GetObject", key) from None


def _block_dir(layout: BucketLayout, tenant: str, block: str) -> str:
    return f"{tenant}/{block}/" if layout is BucketLayout.MIMIR else f"{block}/"


def read_block_states(client: Any, bucket: str, layout: BucketLayout, blocks: Iterable[tuple[str, str]],
                      deletion_marked: set[tuple[str, str]], *, use_bucket_index: bool = False,
                      workers: int = 16) -> dict[tuple[str, str], BlockState]:
    """``{(tenant, ULID): BlockState}`` for ``blocks`` (those with a meta.json in the listing)."""
    blocks = sorted(set(blocks))
    known: dict[tuple[str, str], tuple[int, int]] = {}
    if use_bucket_index and layout is BucketLayout.MIMIR:
        for tenant in sorted({t for t, _ in blocks}):
            key = f"{tenant}/bucket-index.json.gz"
            body = _get(client, bucket, key)
            if body is None:
                continue
            index = parse_bucket_index(bucket, key, body)
            known.update({(tenant, ulid): rng for ulid, rng in index.blocks.items()})
            deletion_marked = deletion_marked | {(tenant, u) for u in index.deletion_marked}
    todo = [b for b in blocks if b not in known]

    def meta(item: tuple[str, str]) -> tuple[tuple[str, str], BlockMeta | None]:
        tenant, ulid = item
        key = _block_dir(layout, tenant, ulid) + "meta.json"
        body = _get(client, bucket, key)
        return item, None if body is None else parse_meta_json(bucket, key, body, ulid)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo) or 1))) as pool:
        for item, m in pool.map(meta, todo):
            if m is not None:
                known[item] = (m.min_time, m.max_time)
    log.info("bucket %s: time ranges of %d blocks (%d from meta.json)", bucket, len(known), len(todo))
    return {b: BlockState(known[b][1] if b in known else None, b in deletion_marked) for b in blocks}
