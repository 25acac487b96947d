"""Block layout: ULIDs, key roles (scalar and vectorised agree with the seeded world), meta.json, bucket index."""

from __future__ import annotations

import gzip
import json
import random
import re
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from devstack import s3_stack
from traceo_finops.config import BucketLayout
from traceo_finops.s3tiering.errors import InvalidULID, MalformedBlockMeta
from traceo_finops.s3tiering.inventory import OBJECT_SCHEMA, aggregate
from traceo_finops.s3tiering.layout import (
    classify_key,
    classify_keys,
    parse_bucket_index,
    parse_meta_json,
    ulid_time_ms,
    ulid_times_ms,
)

pytestmark = pytest.mark.unit
ANCHOR = 1_795_824_000_000  # 2026-11-28T00:00Z
LAYOUTS = {"mimir-blocks": BucketLayout.MIMIR, "thanos-blocks": BucketLayout.THANOS, "misc-logs": BucketLayout.GENERIC}


@pytest.fixture(scope="module")
def world() -> tuple[list[s3_stack.Obj], dict]:
    return s3_stack.build_world(42, ANCHOR)


def test_ulid_time_round_trips_the_devstack_encoder() -> None:
    rng = random.Random(3)
    for ts in (0, 1, ANCHOR, (1 << 48) - 1, 1_700_000_000_123):
        ulid = s3_stack.make_ulid(ts, rng)
        assert ulid_time_ms(ulid) == ts
    ulids = [s3_stack.make_ulid(ANCHOR - i * 3_600_000, rng) for i in range(50)]
    got = ulid_times_ms(pa.array([*ulids, None, ""], pa.string()))
    assert got[:50].tolist() == [ANCHOR - i * 3_600_000 for i in range(50)]
    assert got[50:].tolist() == [-1, -1]


@pytest.mark.parametrize(("ulid", "why"), [
    ("01HZZZZZZZZZZZZZZZZZZZZZZU", "Crockford"),  # U is not a Crockford digit
    ("8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "overflows 128 bits"),
    ("not-a-ulid", "26 characters"),
])
def test_invalid_ulid_names_bucket_and_key(ulid: str, why: str) -> None:
    with pytest.raises(InvalidULID, match=why) as exc:
        ulid_time_ms(ulid, bucket="misc-logs", key=f"{ulid}/meta.json")
    assert "bucket 'misc-logs'" in str(exc.value) and f"{ulid}/meta.json" in str(exc.value)


def test_roles_match_the_seeded_world_scalar_and_vectorised(world) -> None:
    _objs, truth = world
    for bucket, layout in LAYOUTS.items():
        expected = truth["buckets"][bucket]["objects"]
        keys = [o["key"] for o in expected]
        vec = classify_keys(pa.array(keys, pa.string()), layout)
        for i, o in enumerate(expected):
            info = classify_key(o["key"], layout)
            assert info.role == o["role"], o["key"]
            assert (info.block or None) == o["block"], o["key"]
            assert (vec["role"][i].as_py(), vec["block"][i].as_py(), vec["bad_ulid"][i].as_py()) == \
                (info.role, info.block, info.bad_ulid), o["key"]
            if layout is BucketLayout.MIMIR and o["tenant"]:
                assert info.tenant == vec["tenant"][i].as_py() == o["tenant"]


def test_keys_that_are_not_ulids_are_flagged_not_taken_for_blocks(world) -> None:
    _, truth = world
    keys = [o["key"] for o in truth["buckets"]["misc-logs"]["objects"]]
    vec = classify_keys(pa.array(keys, pa.string()), BucketLayout.THANOS)
    flagged = sorted(k for k, bad in zip(keys, vec["bad_ulid"].to_pylist(), strict=True) if bad)
    assert flagged == sorted(["not-a-ulid/meta.json", "01HZZZZZZZZZZZZZZZZZZZZZZU/index",
                              "8ZZZZZZZZZZZZZZZZZZZZZZZZZ/meta.json", "2026-11-01T00:00:00Z/chunks/000001"])
    assert set(vec["block"].to_pylist()) == {""}
    assert set(vec["role"].to_pylist()) == {"other"}


def test_meta_json_of_the_seeded_blocks_parses(world) -> None:
    objs, truth = world
    metas = {o.key: o for o in objs if o.role == "meta.json" and o.bucket == "mimir-blocks"}
    for block in truth["buckets"]["mimir-blocks"]["blocks"][:20]:
        key = block["dir"] + "meta.json"
        meta = parse_meta_json("mimir-blocks", key, metas[key].body, block["ulid"])
        assert (meta.min_time, meta.max_time, meta.level) == (block["minTime"], block["maxTime"], block["level"])


@pytest.mark.parametrize(("body", "problem"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (json.dumps({"version": 2}).encode(), "unsupported meta.json version"),
    (json.dumps({"version": 1, "ulid": "01KAAAAAAAAAAAAAAAAAAAAAAA"}).encode(), "differs from its directory"),
    (json.dumps({"version": 1, "ulid": "01K5ZX557QZYKEN7JWHPRTHDRZ", "minTime": "x", "maxTime": 2}).encode(),
     "minTime must be an integer"),
    (json.dumps({"version": 1, "ulid": "01K5ZX557QZYKEN7JWHPRTHDRZ", "minTime": 5, "maxTime": 2,
                 "compaction": {"level": 1}}).encode(), "minTime 5 is after maxTime 2"),
    (json.dumps({"version": 1, "ulid": "01K5ZX557QZYKEN7JWHPRTHDRZ", "minTime": 1, "maxTime": 2}).encode(),
     "compaction section is missing"),
])
def test_malformed_meta_json_names_bucket_key_and_problem(body: bytes, problem: str) -> None:
    key = "team-a/01K5ZX557QZYKEN7JWHPRTHDRZ/meta.json"
    with pytest.raises(MalformedBlockMeta, match=problem) as exc:
        parse_meta_json("mimir-blocks", key, body, "01K5ZX557QZYKEN7JWHPRTHDRZ")
    assert str(exc.value).startswith(f"bucket 'mimir-blocks': {key}: ")


# A tenant's bucket index as current Mimir's compactor writes it (pkg/storage/tsdb/bucketindex: Index with
# Version IndexVersion2, Block fields in struct order, omitempty fields left out when empty): a split-and-merge
# compacted block with its shard, an ingester block with unknown segments, an out-of-order block, a marked one.
MIMIR_V2_INDEX = {
    "version": 2,
    "blocks": [
        {"block_id": "01JDQ4W7B8V0Q6M2Y3N5P7R9ST", "min_time": 1732492800000, "max_time": 1732579200000,
         "segments_format": "1b6d", "segments_num": 3, "uploaded_at": 1732601011, "compactor_shard_id": "2_of_4",
         "source": "compactor", "compaction_level": 4, "labels": {"__compactor_shard_id__": "2_of_4"}},
        {"block_id": "01JDS9X2K4M6P8R0T2V4X6Z8AB", "min_time": 1732665600000, "max_time": 1732672800000,
         "uploaded_at": 1732676620, "source": "ingester", "compaction_level": 1},
        {"block_id": "01JDSA0C3E5G7J9K1M3P5R7T9V", "min_time": 1732665600000, "max_time": 1732672800000,
         "segments_format": "1b6d", "segments_num": 1, "uploaded_at": 1732677000, "source": "compactor",
         "compaction_level": 1, "out_of_order": True},
        {"block_id": "01JCZ0000000000000000000AA", "min_time": 1731283200000, "max_time": 1731369600000,
         "segments_format": "1b6d", "segments_num": 2, "uploaded_at": 1731400000, "compactor_shard_id": "1_of_4",
         "source": "compactor", "compaction_level": 4, "labels": {"__compactor_shard_id__": "1_of_4"}},
    ],
    "block_deletion_marks": [{"block_id": "01JCZ0000000000000000000AA", "deletion_time": 1732700000}],
    "updated_at": 1732701234,
}


def test_a_mimir_version_2_bucket_index_as_current_mimir_writes_it() -> None:
    body = gzip.compress(json.dumps(MIMIR_V2_INDEX).encode())
    parsed = parse_bucket_index("mimir-blocks", "team-a/bucket-index.json.gz", body)
    assert parsed.version == 2 and parsed.updated_at == 1732701234
    assert parsed.blocks == {b["block_id"]: (b["min_time"], b["max_time"]) for b in MIMIR_V2_INDEX["blocks"]}
    assert parsed.deletion_marked == {"01JCZ0000000000000000000AA"}
    # Version 1 (no compactor_shard_id) reads the same; Go's null for an empty list is an empty list.
    v1 = {**MIMIR_V2_INDEX, "version": 1,
          "blocks": [{k: v for k, v in b.items() if k != "compactor_shard_id"} for b in MIMIR_V2_INDEX["blocks"]]}
    assert parse_bucket_index("mimir-blocks", "k", gzip.compress(json.dumps(v1).encode())).blocks == parsed.blocks
    empty = parse_bucket_index("mimir-blocks", "k", gzip.compress(
        json.dumps({"version": 2, "blocks": None, "block_deletion_marks": None, "updated_at": 1}).encode()))
    assert (empty.blocks, empty.deletion_marked) == ({}, frozenset())


def test_the_devstack_writes_what_current_mimir_writes(world) -> None:
    objs, truth = world
    index = next(o for o in objs if o.key == "team-a/bucket-index.json.gz")
    doc = json.loads(gzip.decompress(index.body))
    assert doc["version"] == 2
    blocks = {b["ulid"]: b for b in truth["buckets"]["mimir-blocks"]["tenants"]["team-a"]["blocks"]}
    for entry in doc["blocks"]:
        shard = blocks[entry["block_id"]]["labels"].get("__compactor_shard_id__")
        assert entry.get("compactor_shard_id") == shard  # team-a has 2 compactor shards; omitted when none
        assert list(entry)[:6] == ["block_id", "min_time", "max_time", "segments_format", "segments_num",
                                   "uploaded_at"]
    assert any("compactor_shard_id" in e for e in doc["blocks"]) and any("compactor_shard_id" not in e
                                                                          for e in doc["blocks"])
    parsed = parse_bucket_index("mimir-blocks", index.key, index.body)
    assert parsed.blocks == {u: (b["minTime"], b["maxTime"]) for u, b in blocks.items()}


def test_bucket_index(world) -> None:
    objs, truth = world
    index = next(o for o in objs if o.key == "team-b/bucket-index.json.gz")
    parsed = parse_bucket_index("mimir-blocks", index.key, index.body)
    blocks = truth["buckets"]["mimir-blocks"]["tenants"]["team-b"]["blocks"]
    assert parsed.blocks == {b["ulid"]: (b["minTime"], b["maxTime"]) for b in blocks}
    assert parsed.deletion_marked == {b["ulid"] for b in blocks if b["deletion_marked"]}
    with pytest.raises(MalformedBlockMeta, match="not a gzip-compressed JSON bucket index"):
        parse_bucket_index("mimir-blocks", index.key, b"plain")
    for version in (3, 0, "2", True):
        with pytest.raises(MalformedBlockMeta, match=rf"bucket index version {re.escape(repr(version))} is not known "
                                                     r"\(known: 1 and 2\)") as exc:
            parse_bucket_index("mimir-blocks", index.key, gzip.compress(json.dumps(
                {**MIMIR_V2_INDEX, "version": version}).encode()))
        assert str(exc.value).startswith("bucket 'mimir-blocks': team-b/bucket-index.json.gz: ")
    with pytest.raises(MalformedBlockMeta, match="compactor_shard_id must be a string"):
        bad = {**MIMIR_V2_INDEX, "blocks": [{**MIMIR_V2_INDEX["blocks"][0], "compactor_shard_id": 2}]}
        parse_bucket_index("mimir-blocks", index.key, gzip.compress(json.dumps(bad).encode()))


def test_aggregation_does_not_depend_on_key_order_or_batch_size(world) -> None:
    objs, truth = world
    mimir = [o for o in objs if o.bucket == "mimir-blocks"]
    lm = datetime.fromtimestamp(ANCHOR / 1000, UTC)
    table = pa.Table.from_pylist([{"key": o.key, "size": len(o.body), "last_modified": lm,
                                   "storage_class": "STANDARD"} for o in mimir], schema=OBJECT_SCHEMA)
    as_of = datetime.fromtimestamp((ANCHOR + 36_000_000) / 1000, UTC)
    ordered = aggregate([table], "mimir", as_of)
    shuffled = table.take(pa.array(random.Random(5).sample(range(table.num_rows), table.num_rows)))
    # 7-row batches of shuffled keys, merged every 50 partial rows: the unordered-inventory path.
    pieces = [shuffled.slice(i, 7) for i in range(0, shuffled.num_rows, 7)]
    unordered = aggregate(pieces, "mimir", as_of, merge_rows=50)
    keys = [(k, "ascending") for k in ("tenant", "block", "role", "storage_class", "size_band", "age_days")]
    assert unordered.groups.sort_by(keys).equals(ordered.groups.sort_by(keys))
    assert ordered.groups.num_rows < table.num_rows
    assert sum(ordered.groups["objects"].to_pylist()) == truth["buckets"]["mimir-blocks"]["totals"]["count"]
    assert unordered.deletion_marked == ordered.deletion_marked
    marked = {(b["tenant"], b["ulid"]) for b in truth["buckets"]["mimir-blocks"]["blocks"] if b["deletion_marked"]}
    assert ordered.deletion_marked == marked
    # tmp/ and __mimir_cluster/ hold no blocks: not tenants.
    assert set(ordered.groups["tenant"].to_pylist()) == {"", "team-a", "team-b", "anonymous"}
