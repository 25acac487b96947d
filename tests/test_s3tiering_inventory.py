"""S3 Inventory: a bucket read from its inventory plans exactly like the same bucket listed; bad reports fail clearly.

moto produces no inventory reports, so the tests write one (Parquet and CSV, as S3 lays them out:
``<prefix>/<bucket>/<config-id>/<YYYY-MM-DDTHH-MMZ>/manifest.json`` and ``data/`` files) from the
bucket's own listing into the moto bucket ``finops-reports`` and read it back over HTTP.
"""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from s3tiering_support import client, private_s3

from devstack import s3_stack
from traceo_finops.config import FinopsConfig
from traceo_finops.pricing import load_price_table
from traceo_finops.s3tiering.errors import InventoryError, PlanError
from traceo_finops.s3tiering.inventory import iter_inventory, list_objects, read_manifest, resolve_manifest
from traceo_finops.s3tiering.workflow import plan_bucket

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


def write_inventory(put: Any, prefix: str, table: pa.Table, fmt: str, parts: int = 3) -> str:
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
    manifest = {"sourceBucket": BUCKET, "destinationBucket": f"arn:aws:s3:::{DEST}", "version": "2016-11-30",
                "creationTimestamp": "1795741200000", "fileFormat": fmt,
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

    base = f"inventory/{BUCKET}"
    write_inventory(put, f"{base}/daily/2026-11-27T01-00Z", inventory_table(objects), "Parquet")
    put(f"{base}/daily/2099-01-01T01-00Z/manifest.json", b"not json: after the window, must be ignored")
    write_inventory(put, f"{base}/daily-csv/2026-11-27T01-00Z", inventory_table(objects), "CSV")
    fs = pafs.S3FileSystem(access_key=s3_stack.ACCESS_KEY, secret_key=s3_stack.SECRET_KEY, region=s3_stack.REGION,
                           endpoint_override=moto["endpoint_url"].removeprefix("http://"), scheme="http")
    as_of = datetime.fromtimestamp(moto["truth"]["anchor_ms"] / 1000, UTC) + timedelta(hours=10)
    return {"moto": moto, "s3": s3, "fs": fs, "objects": objects, "as_of": as_of}


def cfg(inventory: str | None, list_max: int) -> FinopsConfig:
    return FinopsConfig.model_validate({
        "sources": [{"name": "x"}], "workflows": {"s3_tiering": {"list_objects_max": list_max}},
        "buckets": [{"name": BUCKET, "layout": "mimir", "retention_overrides": {"team-b": "365d"},
                     **({"inventory": inventory} if inventory else {})}]})


@pytest.mark.parametrize("config_id", ["daily", "daily-csv"])
def test_a_big_bucket_is_read_from_its_inventory_and_plans_the_same(world, config_id: str) -> None:
    prices = load_price_table()
    listed = cfg(None, 1_000_000)
    plan_l = plan_bucket(world["s3"], listed.bucket(BUCKET), listed.workflows.s3_tiering, prices, world["as_of"])
    big = cfg(f"s3://{DEST}/inventory/{BUCKET}/{config_id}", 50)  # 609 objects > 50: use the inventory
    plan_i = plan_bucket(world["s3"], big.bucket(BUCKET), big.workflows.s3_tiering, prices, world["as_of"],
                         inventory_fs=lambda: world["fs"])
    assert (plan_l.source, plan_i.source) == ("list", "inventory")
    truth = world["moto"]["truth"]["buckets"][BUCKET]
    assert plan_i.objects == truth["totals"]["count"] and plan_i.bytes == truth["totals"]["bytes"]
    # Same groups, same costs, same rules: block time ranges came from the bucket index instead of meta.json.
    assert plan_i.rows == plan_l.rows
    assert plan_i.finops_rules == plan_l.finops_rules


def test_too_many_objects_without_an_inventory_is_a_clear_error(world) -> None:
    small = cfg(None, 50)
    with pytest.raises(PlanError, match=r"'mimir-blocks': bucket 'mimir-blocks': has more than 50 objects .* "
                                        r"configure buckets\[\].inventory"):
        plan_bucket(world["s3"], small.bucket(BUCKET), small.workflows.s3_tiering, load_price_table(),
                    world["as_of"])


def test_the_newest_manifest_not_after_the_window_is_chosen(world) -> None:
    loc = f"{DEST}/inventory/{BUCKET}/daily"
    assert resolve_manifest(world["fs"], loc, int(world["as_of"].timestamp() * 1000)) == \
        f"{loc}/2026-11-27T01-00Z/manifest.json"
    assert resolve_manifest(world["fs"], loc).endswith("2099-01-01T01-00Z/manifest.json")
    with pytest.raises(InventoryError, match=r"'mimir-blocks': no dated inventory .* under s3://finops-reports/inv"):
        resolve_manifest(world["fs"], f"{DEST}/inventory/{BUCKET}", None, BUCKET)
    with pytest.raises(InventoryError, match=r"'mimir-blocks': inventory location s3://finops-reports/nothing "
                                             r"cannot be listed"):
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
    with pytest.raises(InventoryError, match="does not exist"):
        read_manifest(local["fs"], f"{DEST}/nope/manifest.json", BUCKET)
