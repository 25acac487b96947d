"""S3 Inventory: a configured, fresh inventory is what the plan reads (no listing at all), and it plans
exactly like the same bucket listed; a missing or stale one means a listing; bad reports fail clearly,
as that bucket's error only.

moto produces no inventory reports, so the tests write one (Parquet and CSV, as S3 lays them out:
``<prefix>/<bucket>/<config-id>/<YYYY-MM-DDTHH-MMZ>/manifest.json`` and ``data/`` files) from the
bucket's own listing into the moto bucket ``finops-reports`` and read it back over HTTP. Reports are
dated relative to the seeded world's day (the devstack anchors it at today 00:00 UTC).
"""

from __future__ import annotations

import gzip
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from devstack import s3_stack
from tests.support.net import closed_port_url
from tests.support.s3 import client, private_s3, record_requests
from traceo_finops.config import FinopsConfig
from traceo_finops.pricing import load_price_table
from traceo_finops.s3tiering.errors import InventoryError, InventoryMissing, PlanError
from traceo_finops.s3tiering.inventory import iter_inventory, list_objects, read_manifest, resolve_manifest
from traceo_finops.s3tiering.workflow import plan_bucket, plan_or_error

pytestmark = pytest.mark.integration
BUCKET = "mimir-blocks"
DEST = "finops-reports"
PARQUET_SCHEMA = ("message s3.inventory { required binary bucket (STRING); required binary key (STRING); "
                  "optional int64 size; optional int64 last_modified_date (TIMESTAMP(MILLIS,true)); "
                  "optional binary e_tag (STRING); optional binary storage_class (STRING); }")
CSV_SCHEMA = "Bucket, Key, Size, LastModifiedDate, ETag, StorageClass"


def inventory_table(objects: pa.Table) -> pa.Table:
    return pa.table({
        "bucket": pa.array([BUCKET] * objects.num_rows), "key": objects["key"], "size": objects["size"],
        "last_modified_date": objects["last_modified"], "e_tag": pa.array(["0" * 32] * objects.num_rows),
        "storage_class": objects["storage_class"]})


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H-%MZ")


def write_inventory(put: Any, prefix: str, table: pa.Table, fmt: str, parts: int = 3,
                    created: datetime | None = None) -> str:
    """Data files and manifest.json under ``prefix`` (a dated folder); returns the manifest key."""
    files = []
    step = -(-table.num_rows // parts)
    for i in range(parts):
        chunk = table.slice(i * step, step)
        if fmt == "Parquet":
            buf = io.BytesIO()
            pq.write_table(chunk, buf)
            key = f"{prefix}/data/part-{i}.parquet"
        else:
            out = io.BytesIO()
            pacsv.write_csv(chunk.set_column(3, "last_modified_date", pa.array(
                [t.strftime("%Y-%m-%dT%H:%M:%S.000Z") for t in chunk["last_modified_date"].to_pylist()])), out,
                pacsv.WriteOptions(include_header=False, quoting_style="all_valid"))
            buf = io.BytesIO(gzip.compress(out.getvalue()))
            key = f"{prefix}/data/part-{i}.csv.gz"
        body = buf.getvalue()
        put(key, body)
        files.append({"key": key, "size": len(body), "MD5checksum": "0" * 32})
    created_ms = int((created or datetime(2026, 11, 27, 1, tzinfo=UTC)).timestamp() * 1000)
    manifest = {"sourceBucket": BUCKET, "destinationBucket": f"arn:aws:s3:::{DEST}", "version": "2016-11-30",
                "creationTimestamp": str(created_ms), "fileFormat": fmt,
                "fileSchema": PARQUET_SCHEMA if fmt == "Parquet" else CSV_SCHEMA, "files": files}
    put(f"{prefix}/manifest.json", json.dumps(manifest).encode())
    return f"{prefix}/manifest.json"


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    moto = private_s3()
    s3 = client(moto["endpoint_url"])
    objects = list_objects(s3, BUCKET, max_objects=10_000)

    def put(key: str, body: bytes) -> None:
        s3.put_object(Bucket=DEST, Key=key, Body=body)

    as_of = datetime.fromtimestamp(moto["truth"]["anchor_ms"] / 1000, UTC) + timedelta(hours=10)
    fresh = as_of.replace(hour=1, minute=0) - timedelta(days=1)  # yesterday's daily report
    old = fresh - timedelta(days=20)
    base = f"inventory/{BUCKET}"
    table = inventory_table(objects)
    write_inventory(put, f"{base}/daily/{stamp(old)}", table, "Parquet", created=old)
    write_inventory(put, f"{base}/daily/{stamp(fresh)}", table, "Parquet", created=fresh)
    put(f"{base}/daily/2099-01-01T01-00Z/manifest.json", b"not json: after the window, must be ignored")
    put(f"{base}/daily/{stamp(fresh + timedelta(hours=1))}/data/part-0.parquet", b"delivery under way: no manifest")
    write_inventory(put, f"{base}/daily-csv/{stamp(fresh)}", table, "CSV", created=fresh)
    write_inventory(put, f"{base}/stale/{stamp(old)}", table, "Parquet", created=old)
    # A report whose second data file is not Parquet at all (what a half-written or foreign file gives).
    corrupt = write_inventory(put, f"{base}/corrupt/{stamp(fresh)}", table, "Parquet", created=fresh)
    manifest = json.loads(s3.get_object(Bucket=DEST, Key=corrupt)["Body"].read())
    bad = b"PK\x03\x04 this is a zip archive, not Parquet" * 10
    put(manifest["files"][1]["key"], bad)
    manifest["files"][1]["size"] = len(bad)
    put(corrupt, json.dumps(manifest).encode())
    fs = pafs.S3FileSystem(access_key=s3_stack.ACCESS_KEY, secret_key=s3_stack.SECRET_KEY, region=s3_stack.REGION,
                           endpoint_override=moto["endpoint_url"].removeprefix("http://"), scheme="http")
    return {"moto": moto, "s3": s3, "fs": fs, "objects": objects, "as_of": as_of, "fresh": fresh, "old": old,
            "corrupt_file": f"{DEST}/{manifest['files'][1]['key']}"}


def cfg(inventory: str | None, list_max: int = 1_000_000, **extra_buckets: dict[str, Any]) -> FinopsConfig:
    return FinopsConfig.model_validate({
        "sources": [{"name": "x"}], "workflows": {"s3_tiering": {"list_objects_max": list_max}},
        "buckets": [{"name": BUCKET, "layout": "mimir", "retention_overrides": {"team-b": "365d"},
                     **({"inventory": inventory} if inventory else {})},
                    *({"name": n, **b} for n, b in extra_buckets.items())]})


def inv(config_id: str) -> str:
    return f"s3://{DEST}/inventory/{BUCKET}/{config_id}"


@pytest.mark.parametrize("config_id", ["daily", "daily-csv"])
def test_a_configured_fresh_inventory_is_read_without_listing_and_plans_the_same(world, config_id: str) -> None:
    prices = load_price_table()
    listed = cfg(None)
    plan_l = plan_bucket(world["s3"], listed.bucket(BUCKET), listed.workflows.s3_tiering, prices, world["as_of"])
    configured = cfg(inv(config_id))  # far fewer objects than list_objects_max: the inventory is still what is read
    lists = record_requests(world["s3"], ("ListObjectsV2",))
    plan_i = plan_bucket(world["s3"], configured.bucket(BUCKET), configured.workflows.s3_tiering, prices,
                         world["as_of"], inventory_fs=lambda: world["fs"])
    assert lists == []  # not one ListObjectsV2
    assert (plan_l.source, plan_i.source) == ("list", "inventory")
    assert plan_i.source_detail.startswith(f"S3 Inventory s3://{DEST}/inventory/{BUCKET}/{config_id}/"
                                           f"{stamp(world['fresh'])}/manifest.json")
    truth = world["moto"]["truth"]["buckets"][BUCKET]
    assert plan_i.objects == truth["totals"]["count"] and plan_i.bytes == truth["totals"]["bytes"]
    # Same groups, same costs, same rules: block time ranges came from the (version 2) bucket index instead
    # of meta.json.
    assert plan_i.rows == plan_l.rows
    assert plan_i.finops_rules == plan_l.finops_rules


@pytest.mark.parametrize(("config_id", "why"), [
    ("stale", r"stale: s3://finops-reports/inventory/mimir-blocks/stale/.* was made .*, 21\.4 days before the "
              r"window's end \(workflows.s3_tiering.inventory_max_age: 8 d\)"),
    ("nothing-here", r"missing \(no inventory at s3://finops-reports/inventory/mimir-blocks/nothing-here"),
])
def test_a_missing_or_stale_inventory_means_a_listing_and_the_report_says_so(world, config_id: str,
                                                                              why: str) -> None:
    c = cfg(inv(config_id))
    lists = record_requests(world["s3"], ("ListObjectsV2",))
    plan = plan_bucket(world["s3"], c.bucket(BUCKET), c.workflows.s3_tiering, load_price_table(), world["as_of"],
                       inventory_fs=lambda: world["fs"])
    assert plan.source == "list" and lists
    assert re.search(rf"the configured S3 Inventory \(s3://.*\) is not used: {why}", plan.source_detail)
    assert any(re.search(why, w) and w.endswith("the bucket was listed") for w in plan.warnings)
    # Too big to list as well: the error says both.
    small = cfg(inv(config_id), list_max=50)
    with pytest.raises(PlanError, match=rf"has more than 50 objects .*, and the configured S3 Inventory .* is not "
                                        rf"used: {why}"):
        plan_bucket(world["s3"], small.bucket(BUCKET), small.workflows.s3_tiering, load_price_table(),
                    world["as_of"], inventory_fs=lambda: world["fs"])
    # A longer inventory_max_age makes the 20-day-old report usable.
    if config_id == "stale":
        lenient = FinopsConfig.model_validate({**c.model_dump(mode="json"), "workflows": {
            "s3_tiering": {"inventory_max_age": "30d"}}})
        plan = plan_bucket(world["s3"], lenient.bucket(BUCKET), lenient.workflows.s3_tiering, load_price_table(),
                           world["as_of"], inventory_fs=lambda: world["fs"])
        assert plan.source == "inventory"


def test_a_corrupt_inventory_file_is_that_buckets_error_naming_the_file(world) -> None:
    c = cfg(inv("corrupt"), **{"thanos-blocks": {"layout": "thanos", "retention": "365d"}})
    plans = {b.name: plan_or_error(c, b.name, world["as_of"], load_price_table, lambda _b: world["s3"],
                                   inventory_fs=lambda _b: world["fs"]) for b in c.buckets}
    err = plans[BUCKET]["error"]
    assert err.startswith(f"bucket '{BUCKET}': inventory data file s3://{world['corrupt_file']} cannot be read as "
                          "Parquet: ArrowInvalid")
    assert "error" not in plans["thanos-blocks"] and plans["thanos-blocks"]["objects"] > 0  # the others go on


def test_an_unreachable_inventory_is_an_error_not_a_listing(world) -> None:
    dead = pafs.S3FileSystem(access_key=s3_stack.ACCESS_KEY, secret_key=s3_stack.SECRET_KEY, region=s3_stack.REGION,
                             endpoint_override=closed_port_url().removeprefix("http://"), scheme="http",
                             connect_timeout=1, request_timeout=2,
                             retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
    c = cfg(inv("daily"))
    lists = record_requests(world["s3"], ("ListObjectsV2",))
    result = plan_or_error(c, BUCKET, world["as_of"], load_price_table, lambda _b: world["s3"],
                           inventory_fs=lambda _b: dead)
    assert re.match(rf"bucket '{BUCKET}': inventory location s3://{DEST}/inventory/{BUCKET}/daily cannot be listed: ",
                    result["error"])
    assert lists == []


def test_too_many_objects_without_an_inventory_is_a_clear_error(world) -> None:
    small = cfg(None, list_max=50)
    with pytest.raises(PlanError, match=r"'mimir-blocks': bucket 'mimir-blocks': has more than 50 objects .* "
                                        r"configure buckets\[\].inventory"):
        plan_bucket(world["s3"], small.bucket(BUCKET), small.workflows.s3_tiering, load_price_table(),
                    world["as_of"])


def test_the_newest_manifest_not_after_the_window_is_chosen(world) -> None:
    loc = f"{DEST}/inventory/{BUCKET}/daily"
    # The folder of an hour later has data but no manifest.json yet (S3 writes it last): skipped.
    assert resolve_manifest(world["fs"], loc, int(world["as_of"].timestamp() * 1000)) == \
        f"{loc}/{stamp(world['fresh'])}/manifest.json"
    assert resolve_manifest(world["fs"], loc).endswith("2099-01-01T01-00Z/manifest.json")
    with pytest.raises(InventoryMissing, match=r"'mimir-blocks': no dated inventory .* under s3://finops-reports/inv"):
        resolve_manifest(world["fs"], f"{DEST}/inventory/{BUCKET}", None, BUCKET)
    with pytest.raises(InventoryMissing, match=r"'mimir-blocks': no inventory at s3://finops-reports/nothing "):
        resolve_manifest(world["fs"], f"{DEST}/nothing", None, BUCKET)


# -- broken reports, on a local copy --------------------------------------------------------------------------
@pytest.fixture
def local(world, tmp_path: Path) -> dict[str, Any]:
    root = tmp_path / "s3"
    fs = pafs.SubTreeFileSystem(str(root), pafs.LocalFileSystem())

    def put(key: str, body: bytes) -> None:
        path = root / DEST / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)

    manifest = write_inventory(put, "inv/2026-11-27T01-00Z", inventory_table(world["objects"]), "Parquet")
    return {"fs": fs, "root": root / DEST, "path": f"{DEST}/{manifest}", "put": put}


def _rewrite_manifest(local: dict[str, Any], **changes: Any) -> None:
    path = local["root"] / "inv/2026-11-27T01-00Z/manifest.json"
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def test_missing_data_files_are_named(local) -> None:
    (local["root"] / "inv/2026-11-27T01-00Z/data/part-1.parquet").unlink()
    with pytest.raises(InventoryError, match=r"1 of 3 data files unusable: inv/2026-11-27T01-00Z/data/part-1.parquet "
                                             r"is missing") as exc:
        read_manifest(local["fs"], local["path"], BUCKET)
    assert str(exc.value).startswith("bucket 'mimir-blocks': inventory manifest s3://finops-reports/inv/")


def test_a_truncated_data_file_is_named(local) -> None:
    part = local["root"] / "inv/2026-11-27T01-00Z/data/part-2.parquet"
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(InventoryError, match=r"part-2.parquet has 100 bytes, the manifest says \d+"):
        read_manifest(local["fs"], local["path"], BUCKET)


def test_a_data_file_whose_schema_differs_is_named(local) -> None:
    odd = pa.table({"bucket": [BUCKET], "key": ["team-a/x"], "size": [1], "storage_class": ["STANDARD"]})
    buf = io.BytesIO()
    pq.write_table(odd, buf)
    local["put"]("inv/2026-11-27T01-00Z/data/part-0.parquet", buf.getvalue())
    manifest_path = local["root"] / "inv/2026-11-27T01-00Z/manifest.json"
    doc = json.loads(manifest_path.read_text())
    doc["files"][0]["size"] = len(buf.getvalue())
    manifest_path.write_text(json.dumps(doc))
    manifest = read_manifest(local["fs"], local["path"], BUCKET)
    with pytest.raises(InventoryError, match=r"data file s3://finops-reports/inv/2026-11-27T01-00Z/data/part-0.parquet "
                                             r"has columns bucket, key, size, storage_class; its manifest .* says "
                                             r"bucket, key, size, last_modified_date, e_tag, storage_class"):
        list(iter_inventory(local["fs"], manifest))


@pytest.mark.parametrize(("changes", "problem"), [
    ({"sourceBucket": "other-bucket"}, "is the inventory of bucket 'other-bucket', not of this one"),
    ({"fileFormat": "JSON"}, "unsupported fileFormat 'JSON'"),
    ({"fileSchema": "message s3.inventory { required binary bucket (STRING); required binary key (STRING); }"},
     "fileSchema lacks size, lastmodifieddate, storageclass"),
    ({"files": []}, "lists no data files"),
])
def test_a_manifest_that_does_not_fit_is_refused(local, changes: dict, problem: str) -> None:
    _rewrite_manifest(local, **changes)
    with pytest.raises(InventoryError, match=problem):
        read_manifest(local["fs"], local["path"], BUCKET)


def test_a_csv_file_with_other_columns_than_its_manifest(local, world) -> None:
    table = inventory_table(world["objects"]).drop_columns(["e_tag"])
    manifest = write_inventory(local["put"], "csv/2026-11-27T01-00Z", table, "CSV", parts=1)
    parsed = read_manifest(local["fs"], f"{DEST}/{manifest}", BUCKET)  # manifest says 6 columns, files have 5
    with pytest.raises(InventoryError, match=r"part-0.csv.gz does not match the manifest's 6 columns"):
        list(iter_inventory(local["fs"], parsed))
    with pytest.raises(InventoryMissing, match="does not exist"):
        read_manifest(local["fs"], f"{DEST}/nope/manifest.json", BUCKET)


@pytest.mark.parametrize("damage", ["not-parquet", "truncated-footer"])
def test_a_data_file_that_is_not_parquet_is_named(local, damage: str) -> None:
    part = local["root"] / "inv/2026-11-27T01-00Z/data/part-1.parquet"
    data = part.read_bytes()
    # Same size as the manifest says, so only reading it can tell.
    part.write_bytes(b"x" * len(data) if damage == "not-parquet" else data[:-12] + b"\0" * 12)
    manifest = read_manifest(local["fs"], local["path"], BUCKET)
    with pytest.raises(InventoryError, match=r"inventory data file s3://finops-reports/inv/2026-11-27T01-00Z/data/"
                                             r"part-1.parquet cannot be read as Parquet: Arrow"):
        list(iter_inventory(local["fs"], manifest))
