"""What a bucket holds: its S3 Inventory when one is configured and fresh, else ListObjectsV2.

Both paths yield Arrow record batches of ``key, size, last_modified, storage_class`` that
:func:`aggregate` folds, batch by batch, into groups by tenant, block, role, storage class, size
band and age (days). Nothing holds the whole object list: an S3 Inventory of tens of millions of
rows is streamed file by file, row group by row group.

S3 Inventory (``manifest.json`` + CSV, Parquet or ORC data files): the manifest is checked first —
its source bucket, format and schema, and that every data file it lists exists with the listed
size — and every data file's own schema is compared with the manifest's before anything is
aggregated, so a half-delivered or mixed-up report is an :class:`InventoryError`, not a plan.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError

from traceo_finops.config import BucketLayout
from traceo_finops.s3tiering.errors import (
    BucketAccessDenied,
    BucketNotFound,
    InventoryError,
    InventoryMissing,
    S3RequestError,
    TooManyObjects,
)
from traceo_finops.s3tiering.layout import classify_keys, ulid_times_ms

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
# The size band boundary: the 128 KiB minimum billable size of the IA classes and GLACIER_IR, and
# the default lifecycle size filter (TransitionDefaultMinimumObjectSize = all_storage_classes_128K).
SIZE_BAND_BYTES = 128 * 1024
SMALL, LARGE = "<128KB", ">=128KB"
SIZE_BANDS = (SMALL, LARGE)

OBJECT_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    pa.field("size", pa.int64(), nullable=False),
    pa.field("last_modified", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("storage_class", pa.string(), nullable=False),
])

GROUP_KEYS = ("tenant", "block", "role", "storage_class", "size_band", "age_days")
GROUP_SCHEMA = pa.schema([
    pa.field("tenant", pa.string()), pa.field("block", pa.string()), pa.field("role", pa.string()),
    pa.field("storage_class", pa.string()), pa.field("size_band", pa.string()), pa.field("age_days", pa.int32()),
    pa.field("objects", pa.int64()), pa.field("bytes", pa.int64()),
])


# -- errors from S3 ------------------------------------------------------------------------------------
def error_code(exc: BaseException) -> str:
    """botocore's error code of an S3 answer ("" when there was no answer: a connection error has
    ``response=None``, and anything that is not a botocore error has no ``response`` at all)."""
    response = getattr(exc, "response", None)
    error = response.get("Error") if isinstance(response, dict) else None
    return str(error.get("Code") or "") if isinstance(error, dict) else ""


def describe(exc: BaseException) -> str:
    """``Code: message`` of an S3 answer, or ``ExceptionType: message`` of a request that got none."""
    code = error_code(exc)
    if code:
        response = getattr(exc, "response", None) or {}
        message = (response.get("Error") or {}).get("Message") or str(exc)
        return f"{code}: {message}"
    if isinstance(exc, BotoCoreError):
        return f"{type(exc).__name__}: {exc}; S3 could not be reached or did not answer"
    return f"{type(exc).__name__}: {exc}"


def s3_error(exc: Exception, bucket: str, operation: str, key: str = "") -> Exception:
    """The domain error for a failed S3 request, naming bucket and operation; other exceptions as they are.

    AccessDenied and NoSuchBucket get their own errors (what to grant, what to check); any other
    answer and every network fault (connection refused or dropped, timeouts) an :class:`S3RequestError`.
    """
    code = error_code(exc)
    if code in ("AccessDenied", "403", "AllAccessDisabled"):
        return BucketAccessDenied(bucket, operation, f"key {key}" if key else "")
    if code == "NoSuchBucket":
        return BucketNotFound(bucket, f"does not exist (NoSuchBucket on {operation}); check buckets[].name "
                                      "and the connection's account and region")
    if isinstance(exc, (ClientError, BotoCoreError)):
        return S3RequestError(bucket, f"{operation} {key}" if key else operation, describe(exc))
    return exc


# -- ListObjectsV2 -----------------------------------------------------------------------------------------
def list_objects(client: Any, bucket: str, *, max_objects: int, workers: int = 8) -> pa.Table:
    """Every object of ``bucket`` as an :data:`OBJECT_SCHEMA` table.

    Pages through ListObjectsV2, one top-level prefix (a tenant, for Mimir) per worker thread.
    Raises :class:`TooManyObjects` past ``max_objects`` (a bucket that big needs its S3 Inventory).
    """
    count = 0
    lock = threading.Lock()

    def page_rows(pages: Iterable[dict[str, Any]]) -> Iterator[list[tuple[str, int, datetime, str]]]:
        nonlocal count
        for page in pages:
            rows = [(o["Key"], o["Size"], o["LastModified"], o.get("StorageClass") or "STANDARD")
                    for o in page.get("Contents", [])]
            with lock:
                count += len(rows)
                if count > max_objects:
                    raise TooManyObjects(bucket, f"has more than {max_objects:,} objects "
                                                 "(workflows.s3_tiering.list_objects_max)")
            yield rows

    def listing(prefix: str, delimiter: str = "") -> Iterator[dict[str, Any]]:
        kwargs = {"Bucket": bucket, "Prefix": prefix, **({"Delimiter": delimiter} if delimiter else {})}
        try:
            yield from client.get_paginator("list_objects_v2").paginate(**kwargs)
        except Exception as exc:  # an S3 answer or a network fault: the bucket's error, naming the operation
            raise s3_error(exc, bucket, "ListObjectsV2") from None

    top = list(listing("", "/"))
    prefixes = [p["Prefix"] for page in top for p in page.get("CommonPrefixes", [])]
    chunks: list[list[tuple[str, int, datetime, str]]] = list(page_rows(top))

    def one_prefix(prefix: str) -> list[list[tuple[str, int, datetime, str]]]:
        return list(page_rows(listing(prefix)))

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(prefixes) or 1))) as pool:
        for result in pool.map(one_prefix, prefixes):
            chunks.extend(result)
    rows = [r for chunk in chunks for r in chunk]
    return pa.Table.from_pydict({
        "key": [r[0] for r in rows], "size": [r[1] for r in rows], "last_modified": [r[2] for r in rows],
        "storage_class": [r[3] for r in rows]}, schema=OBJECT_SCHEMA)


# -- S3 Inventory ------------------------------------------------------------------------------------------
# Field names as S3 Inventory spells them in CSV (fileSchema) -> our column.
_FIELDS = {"key": "key", "size": "size", "lastmodifieddate": "last_modified", "storageclass": "storage_class",
           "islatest": "is_latest", "isdeletemarker": "is_delete_marker", "bucket": "bucket"}
REQUIRED_FIELDS = ("key", "size", "lastmodifieddate", "storageclass")


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True)
class InventoryFile:
    key: str
    size: int


@dataclass(frozen=True)
class InventoryManifest:
    """A parsed and checked ``manifest.json``; ``path`` and file paths are filesystem paths."""

    path: str
    source_bucket: str
    destination_bucket: str
    file_format: str  # CSV | Parquet | ORC
    fields: tuple[str, ...]  # as the manifest names them, in file order
    files: tuple[InventoryFile, ...]
    creation_ms: int | None = None

    def file_path(self, f: InventoryFile) -> str:
        return f"{self.destination_bucket}/{f.key}"

    @property
    def normalized_fields(self) -> tuple[str, ...]:
        return tuple(_norm(f) for f in self.fields)


def _schema_fields(file_format: str, schema: str) -> tuple[str, ...]:
    """Field names from a manifest's fileSchema (CSV list, Parquet message type, or ORC struct)."""
    if file_format == "CSV":
        return tuple(f.strip() for f in schema.split(",") if f.strip())
    if file_format == "Parquet":
        return tuple(re.findall(r"(?:required|optional|repeated)\s+\w+\s+(\w+)", schema))
    inner = schema.strip()
    inner = inner[len("struct<"):-1] if inner.startswith("struct<") and inner.endswith(">") else inner
    return tuple(part.split(":", 1)[0].strip() for part in inner.split(",") if ":" in part)


def _dated(name: str) -> datetime | None:
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})T(\d{2})-(\d{2})Z", name)
    return datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}:{m.group(3)}:00+00:00") if m else None


def resolve_manifest(fs: pafs.FileSystem, location: str, not_after_ms: int | None = None, bucket: str = "?") -> str:
    """The manifest.json to read: ``location`` itself, or the newest dated one under it.

    ``location`` is ``bucket/prefix/…/manifest.json`` or the inventory configuration's folder
    (``bucket/prefix/<source-bucket>/<config-id>``) holding ``YYYY-MM-DDTHH-MMZ/manifest.json``
    folders; dated folders after ``not_after_ms`` (the report window's end), and folders whose
    manifest.json is not there yet (S3 writes it last), are ignored. Nothing there is
    :class:`InventoryMissing`; a location that cannot be read is :class:`InventoryError`.
    """
    location = location.removeprefix("s3://").rstrip("/")
    if location.endswith("manifest.json"):
        return location
    try:
        infos = fs.get_file_info(pafs.FileSelector(location, allow_not_found=False))
    except FileNotFoundError:
        raise InventoryMissing(bucket, f"no inventory at s3://{location} (nothing there)") from None
    except OSError as exc:
        raise InventoryError(bucket, f"inventory location s3://{location} cannot be listed: {exc}") from None
    dated = []
    for info in infos:
        when = _dated(info.base_name)
        if info.type == pafs.FileType.Directory and when is not None \
                and (not_after_ms is None or when.timestamp() * 1000 <= not_after_ms):
            dated.append((when, info.path))
    for _, path in sorted(dated, reverse=True):
        manifest = posixpath.join(path, "manifest.json")
        try:
            if fs.get_file_info(manifest).type == pafs.FileType.File:
                return manifest
        except OSError as exc:
            raise InventoryError(bucket, f"inventory manifest s3://{manifest} cannot be read: {exc}") from None
    raise InventoryMissing(bucket, f"no dated inventory (YYYY-MM-DDTHH-MMZ/manifest.json) under s3://{location}"
                                   + (" up to the report window's end" if not_after_ms is not None else ""))


def read_manifest(fs: pafs.FileSystem, path: str, bucket: str, *, check_files: bool = True) -> InventoryManifest:
    """Read ``manifest.json`` at ``path`` and check it against the bucket (and, with ``check_files``,
    against the data files it lists: :func:`check_files_present`)."""
    where = f"inventory manifest s3://{path}"
    try:
        with fs.open_input_stream(path) as src:
            doc = json.loads(src.read())
    except FileNotFoundError:
        raise InventoryMissing(bucket, f"{where} does not exist") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InventoryError(bucket, f"{where} cannot be read as JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InventoryError(bucket, f"{where} is not a JSON object")
    missing = [k for k in ("sourceBucket", "destinationBucket", "fileFormat", "fileSchema", "files") if k not in doc]
    if missing:
        raise InventoryError(bucket, f"{where} lacks {', '.join(missing)}")
    if doc["sourceBucket"] != bucket:
        raise InventoryError(bucket, f"{where} is the inventory of bucket {doc['sourceBucket']!r}, not of this one")
    fmt = {"csv": "CSV", "parquet": "Parquet", "orc": "ORC"}.get(str(doc["fileFormat"]).lower())
    if fmt is None:
        raise InventoryError(bucket, f"{where}: unsupported fileFormat {doc['fileFormat']!r} (CSV, Parquet, ORC)")
    fields = _schema_fields(fmt, str(doc["fileSchema"]))
    absent = [f for f in REQUIRED_FIELDS if f not in {_norm(x) for x in fields}]
    if absent:
        raise InventoryError(bucket, f"{where}: fileSchema lacks {', '.join(absent)} (have: {', '.join(fields)})")
    files = doc["files"]
    if not isinstance(files, list) or not files:
        raise InventoryError(bucket, f"{where} lists no data files")
    try:
        listed = tuple(InventoryFile(str(f["key"]), int(f["size"])) for f in files)
    except (KeyError, TypeError, ValueError):
        raise InventoryError(bucket, f"{where}: every entry of files needs key and size") from None
    dest = str(doc["destinationBucket"]).rsplit(":", 1)[-1]
    created = doc.get("creationTimestamp")
    if not str(created or "").isdigit():  # S3 always writes it; else the dated folder says when
        when = _dated(posixpath.basename(posixpath.dirname(path)))
        created = int(when.timestamp() * 1000) if when else None
    manifest = InventoryManifest(path, bucket, dest, fmt, fields, listed, int(created) if created else None)
    if check_files:
        check_files_present(fs, manifest)
    return manifest


def check_files_present(fs: pafs.FileSystem, manifest: InventoryManifest) -> None:
    """Every data file the manifest lists exists with the listed size; else :class:`InventoryError`."""
    bucket = manifest.source_bucket
    try:
        infos = fs.get_file_info([manifest.file_path(f) for f in manifest.files])
    except OSError as exc:
        raise InventoryError(bucket, f"inventory manifest s3://{manifest.path}: its data files cannot be "
                                     f"checked: {exc}") from None
    problems = []
    for f, info in zip(manifest.files, infos, strict=True):
        if info.type != pafs.FileType.File:
            problems.append(f"{f.key} is missing")
        elif info.size != f.size:
            problems.append(f"{f.key} has {info.size} bytes, the manifest says {f.size}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise InventoryError(bucket, f"inventory manifest s3://{manifest.path}: {len(problems)} of "
                                     f"{len(manifest.files)} data files unusable: {shown}")


def _unreadable(manifest: InventoryManifest, f: InventoryFile, exc: BaseException) -> InventoryError:
    return InventoryError(manifest.source_bucket, f"inventory data file s3://{manifest.file_path(f)} cannot be "
                                                  f"read as {manifest.file_format}: {type(exc).__name__}: {exc}")


def _file_fields(fs: pafs.FileSystem, manifest: InventoryManifest, f: InventoryFile) -> tuple[str, ...]:
    with fs.open_input_file(manifest.file_path(f)) as src:
        if manifest.file_format == "Parquet":
            return tuple(pq.ParquetFile(src).schema_arrow.names)
        import pyarrow.orc as paorc

        return tuple(paorc.ORCFile(src).schema.names)


def check_data_schemas(fs: pafs.FileSystem, manifest: InventoryManifest) -> None:
    """Every Parquet/ORC data file is one, with the manifest's columns (CSV is checked while it is read)."""
    if manifest.file_format == "CSV":
        return
    expected = manifest.normalized_fields
    for f in manifest.files:
        try:
            names = _file_fields(fs, manifest, f)
        except (pa.ArrowException, OSError) as exc:  # not Parquet/ORC at all, truncated, unreachable
            raise _unreadable(manifest, f, exc) from None
        if tuple(_norm(n) for n in names) != expected:
            raise InventoryError(manifest.source_bucket,
                                 f"inventory data file s3://{manifest.file_path(f)} has columns "
                                 f"{', '.join(names)}; its manifest s3://{manifest.path} says "
                                 f"{', '.join(manifest.fields)}")


def _normalize(batch: pa.RecordBatch, manifest: InventoryManifest, f: InventoryFile) -> pa.RecordBatch:
    cols = {_FIELDS[_norm(n)]: batch.column(i) for i, n in enumerate(batch.schema.names) if _norm(n) in _FIELDS}
    keep = None
    if "is_latest" in cols:  # inventories of versioned buckets list every version
        keep = pc.fill_null(pc.cast(cols["is_latest"], pa.bool_()), True)
    if "is_delete_marker" in cols:
        not_marker = pc.invert(pc.fill_null(pc.cast(cols["is_delete_marker"], pa.bool_()), False))
        keep = not_marker if keep is None else pc.and_(keep, not_marker)
    key = cols["key"].cast(pa.string())
    if manifest.file_format == "CSV" and pc.any(pc.match_substring(key, "%")).as_py():
        key = pa.array([unquote(k) if k is not None else None for k in key.to_pylist()], pa.string())
    try:
        modified = cols["last_modified"]
        if not pa.types.is_timestamp(modified.type):
            modified = pc.strptime(pc.utf8_slice_codeunits(modified.cast(pa.string()), 0, 19),
                                   format="%Y-%m-%dT%H:%M:%S", unit="ms")
        out = pa.RecordBatch.from_arrays([
            key, cols["size"].cast(pa.int64()), modified.cast(pa.timestamp("ms")).cast(pa.timestamp("ms", tz="UTC")),
            pc.fill_null(cols["storage_class"].cast(pa.string()), "STANDARD")], schema=OBJECT_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise InventoryError(manifest.source_bucket, f"inventory data file s3://{manifest.file_path(f)}: values "
                                                     f"do not fit the schema: {exc}") from None
    if keep is not None:
        out = out.filter(keep)
    return out


def iter_inventory(fs: pafs.FileSystem, manifest: InventoryManifest, batch_size: int = 262_144
                   ) -> Iterator[pa.RecordBatch]:
    """Stream the objects of an inventory as :data:`OBJECT_SCHEMA` batches, one data file at a time.

    A data file that cannot be read (not the format the manifest says, cut short, unreachable) is an
    :class:`InventoryError` naming it.
    """
    check_data_schemas(fs, manifest)
    wanted = [n for n in manifest.fields if _norm(n) in _FIELDS]
    for f in manifest.files:
        try:
            yield from _iter_file(fs, manifest, f, wanted, batch_size)
        except (pa.ArrowException, OSError) as exc:
            raise _unreadable(manifest, f, exc) from None


def _iter_file(fs: pafs.FileSystem, manifest: InventoryManifest, f: InventoryFile, wanted: list[str],
               batch_size: int) -> Iterator[pa.RecordBatch]:
    path = manifest.file_path(f)
    if manifest.file_format == "Parquet":
        with fs.open_input_file(path) as src:
            for batch in pq.ParquetFile(src).iter_batches(batch_size=batch_size, columns=wanted):
                yield _normalize(batch, manifest, f)
    elif manifest.file_format == "ORC":
        import pyarrow.orc as paorc

        with fs.open_input_file(path) as src:
            orc = paorc.ORCFile(src)
            for i in range(orc.nstripes):
                yield _normalize(orc.read_stripe(i, columns=wanted), manifest, f)
    else:
        yield from _iter_csv(fs, manifest, f)


def _iter_csv(fs: pafs.FileSystem, manifest: InventoryManifest, f: InventoryFile) -> Iterator[pa.RecordBatch]:
    path = manifest.file_path(f)
    names = [f"c{i}" for i in range(len(manifest.fields))]
    rename = {f"c{i}": n for i, n in enumerate(manifest.fields)}
    # Everything as text first: a column count or type that differs from the manifest is a clear error.
    convert = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()))
    compression = "gzip" if f.key.endswith(".gz") else None
    try:
        with fs.open_input_stream(path, compression=compression) as src:
            reader = pacsv.open_csv(src, read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 24),
                                    convert_options=convert)
            for batch in reader:
                batch = batch.rename_columns([rename[n] for n in batch.schema.names])
                size = batch.column(batch.schema.names.index(_field_name(manifest, "size")))
                batch = batch.set_column(batch.schema.names.index(_field_name(manifest, "size")),
                                         _field_name(manifest, "size"), pc.cast(size, pa.int64()))
                yield _normalize(batch, manifest, f)
    except pa.ArrowInvalid as exc:
        raise InventoryError(manifest.source_bucket, f"inventory data file s3://{path} does not match the "
                                                     f"manifest's {len(manifest.fields)} columns "
                                                     f"({', '.join(manifest.fields)}): {exc}") from None


def _field_name(manifest: InventoryManifest, normalized: str) -> str:
    return next(n for n in manifest.fields if _norm(n) == normalized)


# -- aggregation ---------------------------------------------------------------------------------------------
@dataclass
class Aggregate:
    """Objects folded into groups, plus what the fold noticed along the way."""

    groups: pa.Table  # GROUP_SCHEMA
    rows: int
    deletion_marked: set[tuple[str, str]] = field(default_factory=set)  # (tenant, ULID)
    bad_ulid_count: int = 0
    bad_ulid_examples: list[str] = field(default_factory=list)
    source: str = "list"  # list | inventory


def _fold(batch: pa.RecordBatch, layout: BucketLayout, as_of_ms: int, agg: Aggregate) -> pa.Table:
    keys = batch.column("key")
    info = classify_keys(keys, layout)
    size = batch.column("size")
    created = np.where(info["age_from_block"].to_numpy(zero_copy_only=False),
                       ulid_times_ms(info["block"]),
                       pc.cast(batch.column("last_modified"), pa.int64()).to_numpy(zero_copy_only=False))
    age = np.maximum((as_of_ms - created) // DAY_MS, 0).astype(np.int32)
    band = pc.if_else(pc.less(size, SIZE_BAND_BYTES), pa.scalar(SMALL), pa.scalar(LARGE))
    table = pa.Table.from_arrays(
        [info["tenant"], info["block"], info["role"], batch.column("storage_class"), band, pa.array(age), size],
        names=[*GROUP_KEYS, "size"])
    marks = pc.and_(pc.equal(info["role"], "markers"), pc.ends_with(keys, "deletion-mark.json"))
    marks = pc.and_(marks, pc.not_equal(info["block"], ""))
    if pc.any(marks).as_py():
        marked = table.filter(marks).select(["tenant", "block"]).to_pydict()
        agg.deletion_marked.update(zip(marked["tenant"], marked["block"], strict=True))
    bad = info["bad_ulid"]
    n_bad = pc.sum(pc.cast(bad, pa.int64())).as_py() or 0
    if n_bad:
        agg.bad_ulid_count += n_bad
        room = 5 - len(agg.bad_ulid_examples)
        if room > 0:
            agg.bad_ulid_examples += pc.filter(keys, bad).slice(0, room).to_pylist()
    agg.rows += len(keys)
    out = table.group_by(list(GROUP_KEYS)).aggregate([("size", "count"), ("size", "sum")])
    return out.rename_columns([{"size_count": "objects", "size_sum": "bytes"}.get(n, n) for n in out.schema.names])


def _group(t: pa.Table) -> pa.Table:
    t = t.group_by(list(GROUP_KEYS), use_threads=False).aggregate([("objects", "sum"), ("bytes", "sum")])
    return t.rename_columns([{"objects_sum": "objects", "bytes_sum": "bytes"}.get(n, n) for n in t.schema.names])


class _Partials:
    """Partial groups, kept in partitions by the block ULID's last character (random: 32 even ones).

    A group never spans two partitions (the block is part of its key), so each partition is merged
    on its own: one hash table over millions of string keys costs several hundred MB, one per
    partition a few tens, and each partition's partial rows are freed as soon as it is merged.
    """

    def __init__(self, merge_rows: int = 4_000_000) -> None:
        self.parts: dict[str, list[pa.Table]] = {}
        self.rows = 0
        self.merged_rows = 0
        self.merge_rows = merge_rows

    def add(self, t: pa.Table) -> None:
        key = pc.utf8_slice_codeunits(t["block"], 25, 26)
        for k in pc.unique(key).to_pylist():
            self.parts.setdefault(k, []).append(t.filter(pc.equal(key, k)))
        self.rows += t.num_rows
        # An inventory lists keys in order, so a block's objects fall in one or two batches and
        # partial groups hardly repeat; merge early only when they do (unordered input).
        if self.rows > max(self.merge_rows, 2 * self.merged_rows):
            for k, tables in self.parts.items():
                self.parts[k] = [_group(pa.concat_tables(tables))]
            self.merged_rows = self.rows = sum(t.num_rows for ts in self.parts.values() for t in ts)

    def result(self) -> pa.Table:
        out = [_group(pa.concat_tables(self.parts.pop(k))) for k in sorted(self.parts)]
        if not out:
            return GROUP_SCHEMA.empty_table()
        return pa.concat_tables(out).select(GROUP_SCHEMA.names).cast(GROUP_SCHEMA)


def _combine(parts: list[pa.Table]) -> pa.Table:
    """Merge partial groups (the same group may appear in several parts) into one row per group."""
    partials = _Partials()
    for p in parts:
        partials.add(p)
    return partials.result()


def aggregate(batches: Iterable[pa.RecordBatch | pa.Table], layout: BucketLayout | str, as_of: datetime,
              source: str = "list", merge_rows: int = 4_000_000) -> Aggregate:
    """Fold object batches into :data:`GROUP_SCHEMA` groups; ``as_of`` is the report window's end.

    A block's objects take their age from the block's ULID (upload time, what lifecycle ``Days``
    count from); markers, bucket indexes and everything else from their LastModified. Mimir
    top-level prefixes that hold no block, marker or bucket index (``tmp/``, ``__mimir_cluster/``)
    are not tenants: their objects get tenant "".
    """
    layout = BucketLayout(layout)
    as_of_ms = int(as_of.astimezone(UTC).timestamp() * 1000)
    agg = Aggregate(GROUP_SCHEMA.empty_table(), 0, source=source)
    partials = _Partials(merge_rows)
    for item in batches:
        for batch in item.to_batches(max_chunksize=1 << 20) if isinstance(item, pa.Table) else [item]:
            if batch.num_rows:
                partials.add(_fold(batch, layout, as_of_ms, agg))
    groups = partials.result()
    if layout is BucketLayout.MIMIR and groups.num_rows:
        groups = _drop_non_tenants(groups)
    agg.groups = groups
    return agg


def _drop_non_tenants(groups: pa.Table) -> pa.Table:
    is_tenant_obj = pc.or_(pc.not_equal(groups["block"], ""), pc.is_in(groups["role"], pa.array(
        ["markers", "bucket-index"])))
    tenants = pc.unique(groups.filter(is_tenant_obj)["tenant"])
    keep = pc.is_in(groups["tenant"], tenants)
    if pc.all(keep).as_py():
        return groups
    # Only the rows outside tenants change (their tenant becomes ""): regroup just those.
    outside = pc.or_(pc.invert(keep), pc.equal(groups["tenant"], ""))
    moved = groups.filter(outside)
    moved = moved.set_column(0, "tenant", pa.array([""] * moved.num_rows, pa.string()))
    return pa.concat_tables([groups.filter(pc.invert(outside)), _combine([moved])])
