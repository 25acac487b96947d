"""How Mimir and Thanos lay blocks out in a bucket: ULIDs, object roles, meta.json, bucket index.

Mimir: ``<tenant>/<ULID>/{meta.json,index,chunks/NNNNNN,deletion-mark.json,no-compact-mark.json}``,
``<tenant>/markers/<ULID>-{deletion,no-compact}-mark.json``, ``<tenant>/markers/tenant-deletion-mark.json``,
``<tenant>/bucket-index.json.gz``; anything else at the top (``__mimir_cluster/``, ``tmp/``) is not a
tenant. Thanos: ``<ULID>/...`` as above, no tenants. Generic buckets have no blocks.

A ULID's first 48 bits are its creation time in ms: the block's upload time, which is also what a
lifecycle rule's ``Days`` counts from. meta.json ``minTime``/``maxTime`` say which data a block holds;
retention deletes a block by its ``maxTime``.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from traceo_finops.config import BucketLayout
from traceo_finops.s3tiering.errors import InvalidULID, MalformedBlockMeta

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# 26 Crockford characters; the first is at most 7, else the value overflows 128 bits.
ULID_PATTERN = "[0-7][0-9A-HJKMNP-TV-Z]{25}"
_ULID_RE = re.compile(f"^{ULID_PATTERN}$")

ROLES = ("meta.json", "index", "chunks", "markers", "bucket-index", "other")
# Objects block discovery needs: they must stay in STANDARD, whatever a rule says.
CONTROL_ROLES = frozenset({"meta.json", "markers", "bucket-index"})
# Objects under a tenant or block prefix that Mimir/Thanos themselves write: no block age.
MARKER_FILES = ("deletion-mark.json", "no-compact-mark.json")

_LUT = np.full(256, -1, dtype=np.int64)
for _i, _ch in enumerate(CROCKFORD):
    _LUT[ord(_ch)] = _i


def ulid_time_ms(ulid: str, *, bucket: str = "", key: str | None = None) -> int:
    """Creation time (ms since the epoch) of a ULID; :class:`InvalidULID` names the key if it is not one."""
    if not _ULID_RE.match(ulid):
        why = "is not 26 characters" if len(ulid) != 26 else (
            "overflows 128 bits" if ulid[:1] > "7" and ulid[:1] in CROCKFORD else
            "has characters outside Crockford base32 (0-9, A-Z without I, L, O, U)")
        raise InvalidULID(bucket, key if key is not None else ulid, f"{ulid!r} is not a ULID: it {why}")
    value = 0
    for ch in ulid[:10]:
        value = (value << 5) | CROCKFORD.index(ch)
    return value


def ulid_times_ms(ulids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Creation times of many ULIDs at once; nulls and "" give -1 (the caller validated the rest)."""
    arr = ulids.combine_chunks() if isinstance(ulids, pa.ChunkedArray) else ulids
    valid_mask = pc.fill_null(pc.equal(pc.utf8_length(arr), 26), False)
    valid = valid_mask.to_numpy(zero_copy_only=False)
    prefix = pc.utf8_slice_codeunits(pc.if_else(valid_mask, arr, pa.scalar("0000000000")), 0, 10)
    # Every value is exactly 10 ASCII bytes now: view the data buffer as an (n, 10) byte matrix.
    offsets = np.frombuffer(prefix.buffers()[1], dtype=np.int32)[prefix.offset:prefix.offset + len(prefix) + 1]
    data = np.frombuffer(prefix.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]].reshape(-1, 10)
    ms = (_LUT[data] << np.arange(45, -1, -5, dtype=np.int64)).sum(axis=1)
    return np.where(valid, ms, -1)


# -- key classification ---------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyInfo:
    """What one key is: tenant ("" outside tenants), block ULID ("" outside blocks) and role."""

    tenant: str
    block: str
    role: str
    # The key looks like a block path but its directory is not a valid ULID.
    bad_ulid: bool = False


def _block_role(rest: str) -> str:
    if rest == "meta.json":
        return "meta.json"
    if rest == "index":
        return "index"
    if rest.startswith("chunks/"):
        return "chunks"
    if rest in MARKER_FILES:
        return "markers"
    return "other"


_BLOCKISH = re.compile(r"^(meta\.json|index|chunks/.+|deletion-mark\.json|no-compact-mark\.json)$")
_GLOBAL_MARK = re.compile(rf"^({ULID_PATTERN})-(deletion|no-compact)-mark\.json$")


def classify_key(key: str, layout: BucketLayout | str) -> KeyInfo:
    """Role, tenant and block of one key (the scalar twin of :func:`classify_keys`)."""
    layout = BucketLayout(layout)
    if layout is BucketLayout.GENERIC:
        return KeyInfo("", "", "other")
    parts = key.split("/", 2) if layout is BucketLayout.MIMIR else ["", *key.split("/", 1)]
    if len(parts) < 2:
        return KeyInfo("", "", "other")
    tenant = parts[0]
    if len(parts) == 2:
        if layout is BucketLayout.MIMIR and parts[1] == "bucket-index.json.gz":
            return KeyInfo(tenant, "", "bucket-index")
        return KeyInfo(tenant, "", "other")
    head, rest = parts[1], parts[2]
    if _ULID_RE.match(head):
        return KeyInfo(tenant, head, _block_role(rest))
    if layout is BucketLayout.MIMIR and head == "markers":
        m = _GLOBAL_MARK.match(rest)
        if m:
            return KeyInfo(tenant, m.group(1), "markers")
        if rest == "tenant-deletion-mark.json":
            return KeyInfo(tenant, "", "markers")
    return KeyInfo(tenant, "", "other", bad_ulid=bool(_BLOCKISH.match(rest)) and len(head) > 0)


def _extract(keys: pa.Array, pattern: str) -> pa.StructArray:
    return pc.extract_regex(keys, pattern)


_BLOCKISH_RE = r"(meta\.json|index|chunks/.+|deletion-mark\.json|no-compact-mark\.json)$"


def classify_keys(keys: pa.Array, layout: BucketLayout | str) -> dict[str, pa.Array]:
    """Vectorised :func:`classify_key` over a string array.

    Returns arrays ``tenant`` (string, "" outside tenants), ``block`` (string, "" outside blocks),
    ``role`` (string), ``age_from_block`` (bool: the object's age is its block's ULID time) and
    ``bad_ulid`` (bool: looks like a block file, but the directory is not a ULID).
    """
    layout = BucketLayout(layout)
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    n = len(keys)
    empty = pa.array([""] * n, pa.string())
    false = pa.array(np.zeros(n, dtype=bool))
    if layout is BucketLayout.GENERIC:
        return {"tenant": empty, "block": empty, "role": pa.array(["other"] * n, pa.string()),
                "age_from_block": false, "bad_ulid": false}
    tenant_re = "(?P<tenant>[^/]+)/" if layout is BucketLayout.MIMIR else "(?P<tenant>)"
    m_block = _extract(keys, f"^{tenant_re}(?P<block>{ULID_PATTERN})/(?P<rest>.+)$")
    is_block = pc.is_valid(m_block)
    rest = m_block.field("rest")
    role = pc.case_when(
        pc.make_struct(pc.equal(rest, "meta.json"), pc.equal(rest, "index"), pc.starts_with(rest, "chunks/"),
                       pc.is_in(rest, pa.array(MARKER_FILES))),
        pa.scalar("meta.json"), pa.scalar("index"), pa.scalar("chunks"), pa.scalar("markers"),
        pa.scalar("other"))
    role = pc.fill_null(pc.if_else(is_block, role, pa.scalar("other")), "other")
    block = pc.fill_null(m_block.field("block"), "")
    # Markers are written when a block is marked, not when it is uploaded: their age is their own.
    age_from_block = pc.fill_null(pc.and_(is_block, pc.not_equal(role, "markers")), False)
    tenant = pc.fill_null(m_block.field("tenant"), "") if layout is BucketLayout.MIMIR else empty
    # Everything else is a small minority (markers/, bucket indexes, strays): the remaining patterns
    # run on those keys only and are scattered back.
    others = pc.invert(is_block)
    if not pc.any(others).as_py():
        return {"tenant": tenant, "block": block, "role": role, "age_from_block": age_from_block, "bad_ulid": false}
    okeys = keys.filter(others)
    if layout is BucketLayout.MIMIR:
        o_tenant = pc.fill_null(_extract(okeys, r"^(?P<tenant>[^/]+)/").field("tenant"), "")
        m_mark = _extract(okeys, rf"^[^/]+/markers/(?P<block>{ULID_PATTERN})-(?:deletion|no-compact)-mark\.json$")
        is_gmark = pc.is_valid(m_mark)
        is_tmark = pc.match_substring_regex(okeys, r"^[^/]+/markers/tenant-deletion-mark\.json$")
        is_index = pc.match_substring_regex(okeys, r"^[^/]+/bucket-index\.json\.gz$")
        o_role = pc.if_else(is_index, pa.scalar("bucket-index"),
                            pc.if_else(pc.or_(is_gmark, is_tmark), pa.scalar("markers"), pa.scalar("other")))
        o_block = pc.fill_null(m_mark.field("block"), "")
        o_bad = pc.and_(pc.match_substring_regex(okeys, r"^[^/]+/[^/]+/" + _BLOCKISH_RE),
                        pc.invert(pc.match_substring(okeys, "/markers/")))
        tenant = pc.replace_with_mask(tenant, others, o_tenant)
        role = pc.replace_with_mask(role, others, o_role)
        block = pc.replace_with_mask(block, others, o_block)
    else:
        o_bad = pc.match_substring_regex(okeys, r"^[^/]+/" + _BLOCKISH_RE)
    bad = pc.replace_with_mask(false, others, o_bad)
    return {"tenant": tenant, "block": block, "role": role, "age_from_block": age_from_block, "bad_ulid": bad}


# -- meta.json and bucket index ----------------------------------------------------------------------
@dataclass(frozen=True)
class BlockMeta:
    """What planning needs from a block's meta.json."""

    ulid: str
    min_time: int  # ms
    max_time: int  # ms
    level: int
    resolution: int  # ms, 0 = raw

    def as_dict(self) -> dict[str, int | str]:
        return {"ulid": self.ulid, "min_time": self.min_time, "max_time": self.max_time, "level": self.level,
                "resolution": self.resolution}


def _int(doc: Mapping[str, Any], name: str, bucket: str, key: str) -> int:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedBlockMeta(bucket, key, f"{name} must be an integer, got {value!r}")
    return value


def parse_meta_json(bucket: str, key: str, body: bytes, expected_ulid: str) -> BlockMeta:
    """Parse and check a meta.json; :class:`MalformedBlockMeta` names the bucket, key and problem."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedBlockMeta(bucket, key, f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise MalformedBlockMeta(bucket, key, f"expected a JSON object, got {type(doc).__name__}")
    if doc.get("version") != 1:
        raise MalformedBlockMeta(bucket, key, f"unsupported meta.json version {doc.get('version')!r} (expected 1)")
    if doc.get("ulid") != expected_ulid:
        raise MalformedBlockMeta(bucket, key, f"ulid {doc.get('ulid')!r} differs from its directory {expected_ulid}")
    min_t, max_t = _int(doc, "minTime", bucket, key), _int(doc, "maxTime", bucket, key)
    if min_t > max_t:
        raise MalformedBlockMeta(bucket, key, f"minTime {min_t} is after maxTime {max_t}")
    compaction = doc.get("compaction")
    if not isinstance(compaction, dict):
        raise MalformedBlockMeta(bucket, key, "compaction section is missing")
    level = _int(compaction, "level", bucket, key)
    thanos_doc = doc.get("thanos")
    thanos: dict[str, Any] = thanos_doc if isinstance(thanos_doc, dict) else {}
    downsample_doc = thanos.get("downsample")
    downsample: dict[str, Any] = downsample_doc if isinstance(downsample_doc, dict) else {}
    resolution = downsample.get("resolution", 0)
    if isinstance(resolution, bool) or not isinstance(resolution, int):
        raise MalformedBlockMeta(bucket, key, f"thanos.downsample.resolution must be an integer, got {resolution!r}")
    return BlockMeta(expected_ulid, min_t, max_t, level, resolution)


# Mimir's pkg/storage/tsdb/bucketindex: IndexVersion1, and IndexVersion2 (adds compactor_shard_id) —
# what current Mimir's compactor writes. The block and mark fields this reads are the same in both.
BUCKET_INDEX_VERSIONS = (1, 2)


@dataclass(frozen=True)
class BucketIndex:
    """A Mimir tenant's bucket-index.json.gz: block time ranges and deletion marks."""

    blocks: dict[str, tuple[int, int]]  # ULID -> (min_time, max_time)
    deletion_marked: frozenset[str]
    version: int = 2
    updated_at: int | None = None  # unix seconds


def _entries(doc: Mapping[str, Any], name: str, bucket: str, key: str) -> list[Any]:
    value = doc.get(name)
    if value is None:  # Go writes an empty list as null
        return []
    if not isinstance(value, list):
        raise MalformedBlockMeta(bucket, key, f"{name} must be a list, got {type(value).__name__}")
    return value


def parse_bucket_index(bucket: str, key: str, body: bytes) -> BucketIndex:
    """Parse a Mimir bucket index (gzip JSON, version 1 or 2); :class:`MalformedBlockMeta` if it is not one."""
    try:
        doc = json.loads(gzip.decompress(body))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedBlockMeta(bucket, key, f"not a gzip-compressed JSON bucket index ({exc})") from None
    if not isinstance(doc, dict) or "version" not in doc:
        raise MalformedBlockMeta(bucket, key, "not a Mimir bucket index (a JSON object with a version expected)")
    version = doc["version"]
    if isinstance(version, bool) or version not in BUCKET_INDEX_VERSIONS:
        known = " and ".join(str(v) for v in BUCKET_INDEX_VERSIONS)
        raise MalformedBlockMeta(bucket, key, f"Mimir bucket index version {version!r} is not known (known: "
                                              f"{known}); written by a newer Mimir?")
    blocks: dict[str, tuple[int, int]] = {}
    for entry in _entries(doc, "blocks", bucket, key):
        if not isinstance(entry, dict) or not _ULID_RE.match(str(entry.get("block_id", ""))):
            raise MalformedBlockMeta(bucket, key, f"block entry without a valid block_id: {entry!r}")
        lo, hi = entry.get("min_time"), entry.get("max_time")
        if not isinstance(lo, int) or not isinstance(hi, int) or isinstance(lo, bool) or isinstance(hi, bool) \
                or lo > hi:
            raise MalformedBlockMeta(bucket, key, f"block {entry['block_id']}: bad min_time/max_time {lo!r}/{hi!r}")
        shard = entry.get("compactor_shard_id", "")
        if not isinstance(shard, str):
            raise MalformedBlockMeta(bucket, key, f"block {entry['block_id']}: compactor_shard_id must be a string, "
                                                  f"got {shard!r}")
        blocks[entry["block_id"]] = (lo, hi)
    marks = frozenset(str(m.get("block_id")) for m in _entries(doc, "block_deletion_marks", bucket, key)
                      if isinstance(m, dict))
    updated = doc.get("updated_at")
    return BucketIndex(blocks, marks, version, updated if isinstance(updated, int) else None)
