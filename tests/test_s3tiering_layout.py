"""Block layout: ULIDs, key roles (scalar and vectorised agree with the seeded world), meta.json, bucket index."""

from __future__ import annotations

import gzip
import json
import random
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


def test_bucket_index(world) -> None:
    objs, truth = world
    index = next(o for o in objs if o.key == "team-b/bucket-index.json.gz")
    parsed = parse_bucket_index("mimir-blocks", index.key, index.body)
    blocks = truth["buckets"]["mimir-blocks"]["tenants"]["team-b"]["blocks"]
    assert parsed.blocks == {b["ulid"]: (b["minTime"], b["maxTime"]) for b in blocks}
    assert parsed.deletion_marked == {b["ulid"] for b in blocks if b["deletion_marked"]}
    with pytest.raises(MalformedBlockMeta, match="not a gzip-compressed JSON bucket index"):
        parse_bucket_index("mimir-blocks", index.key, b"plain")
    with pytest.raises(MalformedBlockMeta, match="not a version 1 Mimir bucket index"):
        parse_bucket_index("mimir-blocks", index.key, gzip.compress(b'{"version": 7}'))


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
