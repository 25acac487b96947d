"""The one Parquet report writer of every workflow.

Layout: ``<report_root>/<dataset>/report_date=YYYY-MM-DD/part-0.parquet`` (Hive-style), readable
as-is by pyarrow.dataset, pandas and DuckDB. Each dataset has an explicit Arrow schema with a
schema version stored in the file metadata. A partition is always exactly one file, serialised
in memory and then published in one step: on a local disk written under
``<report_root>/_staging/`` and renamed over the old file, on S3 one PUT (an object becomes
visible only when its upload completes). Either way a reader sees the old report or the new
one, never half of one and never both, and rerunning a data interval replaces its partition.
Names starting with ``_`` are ignored by Hive-style readers.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import posixpath
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import TypeAlias, TypedDict

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from traceo_finops.quality import Expect

log = logging.getLogger(__name__)

PART_FILE = "part-0.parquet"
STAGING_DIR = "_staging"
ARTIFACTS_DIR = "_artifacts"
RUN_ID_COLUMN = "run_id"  # added to every row at write time: which run a row comes from

# What a dataset is built from: rows (one mapping of column -> value each) or an Arrow table.
TableRows: TypeAlias = Iterable[Mapping[str, object]] | pa.Table
# Keyword arguments of pyarrow.fs.S3FileSystem (access_key, secret_key, region, endpoint_override, …).
S3Options: TypeAlias = Mapping[str, object]


def column(name: str, kind: pa.DataType, nullable: bool = False) -> pa.Field:
    """A dataset column; not nullable unless said."""
    return pa.field(name, kind, nullable=nullable)


# The run's window, on every row of a dataset that reports on one.
WINDOW_COLUMNS = (column("window_start", pa.timestamp("s", tz="UTC")),
                  column("window_end", pa.timestamp("s", tz="UTC")))


class ReportError(RuntimeError):
    """A report cannot be built or written; the message names the dataset and the place."""


class ReportRootUnwritable(ReportError):
    """Nothing can be written under the report root; retrying will not help until it is fixed."""


@dataclass(frozen=True)
class Dataset:
    """A report dataset: its name, its Arrow schema (without the partition column) and version."""

    name: str
    version: int
    schema: pa.Schema
    description: str = ""
    # Checked by Great Expectations (traceo_finops.quality.check) before a partition is written.
    expectations: tuple[Expect, ...] = field(default=())

    def table(self, rows: TableRows) -> pa.Table:
        """Rows (dicts) or a table, checked against and cast to the dataset's schema."""
        if isinstance(rows, pa.Table):
            table = rows
        else:
            rows = list(rows)
            unknown = sorted({k for r in rows for k in r} - set(self.schema.names))
            if unknown:
                raise ReportError(f"dataset {self.name!r}: unknown column(s) {', '.join(unknown)}")
            try:
                return pa.Table.from_pylist(rows, schema=self.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise ReportError(f"dataset {self.name!r}: rows do not fit the schema: {exc}") from None
        missing = [n for n in self.schema.names if n not in table.column_names]
        extra = [n for n in table.column_names if n not in self.schema.names]
        if missing or extra:
            raise ReportError(f"dataset {self.name!r}: columns differ from schema v{self.version} "
                              f"(missing: {missing or 'none'}, unexpected: {extra or 'none'})")
        try:
            return table.select(self.schema.names).cast(self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise ReportError(f"dataset {self.name!r}: cannot cast to schema v{self.version}: {exc}") from None


class PartitionDict(TypedDict):
    """Where a partition went (:meth:`WrittenPartition.as_dict`)."""

    dataset: str
    report_date: str
    uri: str
    rows: int
    bytes: int


@dataclass(frozen=True)
class WrittenPartition:
    dataset: str
    report_date: str
    uri: str
    rows: int
    bytes: int

    def as_dict(self) -> PartitionDict:
        return {"dataset": self.dataset, "report_date": self.report_date, "uri": self.uri,
                "rows": self.rows, "bytes": self.bytes}


class ReportStore:
    """Writes and reads report partitions under one root, local or on S3."""

    def __init__(self, root: str, filesystem: pafs.FileSystem | None = None,
                 s3_options: S3Options | None = None) -> None:
        """``root`` is an absolute local path or ``s3://bucket/prefix``.

        ``s3_options`` are passed to :class:`pyarrow.fs.S3FileSystem` (``access_key``,
        ``secret_key``, ``session_token``, ``region``, ``endpoint_override``, ``scheme``).
        """
        self.uri = root.rstrip("/")
        self.s3_options = dict(s3_options or {})
        self.staging_scope: tuple[str, ...] = ()
        if filesystem is not None:
            self.fs, self.base = filesystem, _strip_scheme(self.uri)
        elif self.uri.startswith("s3://"):
            self.fs = pafs.S3FileSystem(**dict(s3_options or {}))
            self.base = self.uri[len("s3://"):]
        elif "://" in self.uri and not self.uri.startswith("file://"):
            raise ReportError(f"report_root {root!r}: only local paths and s3:// URIs are supported")
        else:
            self.fs, self.base = pafs.LocalFileSystem(), _strip_scheme(self.uri)

    # -- paths ---------------------------------------------------------------------------
    def _uri(self, path: str) -> str:
        return f"s3://{path}" if isinstance(self.fs, pafs.S3FileSystem) else path

    def partition_dir(self, dataset: str, report_date: date, partition: Mapping[str, str] | None = None) -> str:
        """``<dataset>/[k=v/…]report_date=D``: Hive-style keys before the report date (e.g. ``dag_id``)."""
        keys = [f"{k}={v}" for k, v in (partition or {}).items()]
        return posixpath.join(self.base, dataset, *keys, f"report_date={report_date.isoformat()}")

    def path(self, *parts: str) -> str:
        """A path under the root (for markers and locks)."""
        return posixpath.join(self.base, *parts)

    def uri_of(self, path: str) -> str:
        return self._uri(path)

    def scoped(self, *scope: str) -> ReportStore:
        """The same store whose staging folders live under ``_staging/<scope…>`` (one publisher's own)."""
        clone = copy.copy(self)
        clone.staging_scope = tuple(scope)
        return clone

    @property
    def staging_root(self) -> str:
        return posixpath.join(self.base, STAGING_DIR, *self.staging_scope)

    def dataset_uri(self, dataset: str) -> str:
        return self._uri(posixpath.join(self.base, dataset))

    def artifact_dir(self, dataset: str, report_date: date) -> str:
        """Where files that go beside a report (YAML patches, lifecycle JSON) live."""
        return posixpath.join(self.base, ARTIFACTS_DIR, dataset, f"report_date={report_date.isoformat()}")

    # -- writing -------------------------------------------------------------------------
    @property
    def is_s3(self) -> bool:
        return isinstance(self.fs, pafs.S3FileSystem)

    def _write_bytes(self, path: str, payload: bytes) -> None:
        with self.fs.open_output_stream(path) as out:
            out.write(payload)

    def _publish(self, final: str, payload: bytes) -> None:
        """Make ``payload`` the content of ``final`` in one step: readers see the old or the new file.

        Local disk: write under ``_staging/`` on the same filesystem, then rename over ``final``
        (rename replaces atomically). S3: one PUT of the finished bytes — S3 makes an object
        visible only once its upload completed, replacing the old one whole — so no staging
        copy, and no folder-marker objects, are needed there.
        """
        if self.is_s3:
            self._write_bytes(final, payload)
            return
        staging = posixpath.join(self.staging_root, uuid.uuid4().hex)
        try:
            self.fs.create_dir(staging, recursive=True)
        except OSError as exc:
            raise ReportError(f"report root {self.uri} is not writable: {exc}") from None
        staged = posixpath.join(staging, posixpath.basename(final))
        try:
            self._write_bytes(staged, payload)
            self.fs.create_dir(posixpath.dirname(final), recursive=True)
            self.fs.move(staged, final)
        finally:
            try:
                self.fs.delete_dir(staging)
            except OSError:
                log.warning("could not remove staging folder %s", staging)

    def write_partition(self, dataset: Dataset, report_date: date, rows: TableRows,
                        metadata: Mapping[str, str] | None = None, *, run_id: str | None = None,
                        partition: Mapping[str, str] | None = None) -> WrittenPartition:
        """Write (or replace) the partition of ``dataset`` for ``report_date``; return where it went.

        With ``run_id`` every row carries it in a ``run_id`` column (and the file in its metadata), so
        a reader can tell which run each partition comes from.
        """
        table = dataset.table(rows)
        if run_id is not None:
            table = table.append_column(pa.field(RUN_ID_COLUMN, pa.string(), nullable=False),
                                        pa.array([run_id] * table.num_rows, pa.string()))
            metadata = {**(metadata or {}), "run_id": run_id}
        meta = {
            "traceo.dataset": dataset.name,
            "traceo.schema_version": str(dataset.version),
            "traceo.report_date": report_date.isoformat(),
            **{f"traceo.{k}": str(v) for k, v in (metadata or {}).items()},
        }
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        final = posixpath.join(self.partition_dir(dataset.name, report_date, partition), PART_FILE)
        # Serialise in memory first: a failure here leaves nothing anywhere.
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        payload = sink.getvalue().to_pybytes()
        try:
            self._publish(final, payload)
        except OSError as exc:
            raise ReportError(f"dataset {dataset.name!r}: writing {self._uri(final)} failed: {exc}") from None
        self._remove_strays(posixpath.dirname(final))
        log.info("wrote %s rows of %s (schema v%s) to %s", table.num_rows, dataset.name, dataset.version,
                 self._uri(final))
        return WrittenPartition(dataset.name, report_date.isoformat(), self._uri(final), table.num_rows,
                                len(payload))

    def _remove_strays(self, partition: str) -> None:
        # A partition holds exactly one file; anything else (an older writer's file) would be read twice.
        for info in self.fs.get_file_info(pafs.FileSelector(partition)):
            if info.base_name != PART_FILE:
                if info.type == pafs.FileType.Directory:
                    self.fs.delete_dir(info.path)
                else:
                    self.fs.delete_file(info.path)

    def write_artifact(self, dataset: str, report_date: date, filename: str, content: bytes) -> str:
        """Write a file beside a report, replacing it atomically the same way; return its URI."""
        if "/" in filename or filename.startswith("."):
            raise ReportError(f"artifact name {filename!r} must be a plain file name")
        final = posixpath.join(self.artifact_dir(dataset, report_date), filename)
        try:
            self._publish(final, content)
        except OSError as exc:
            raise ReportError(f"artifact {filename!r} of {dataset!r}: writing {self._uri(final)} "
                              f"failed: {exc}") from None
        return self._uri(final)

    def write_file(self, path: str, content: bytes) -> str:
        """Replace the file at ``path`` (under the root) atomically, as partitions are; return its URI."""
        try:
            self._publish(path, content)
        except OSError as exc:
            raise ReportError(f"writing {self._uri(path)} failed: {exc}") from None
        return self._uri(path)

    def check_writable(self) -> None:
        """Write and remove a small probe file under the root, so an unwritable root fails before any work."""
        probe = posixpath.join(self.base, STAGING_DIR, f"probe-{uuid.uuid4().hex}")
        try:
            if not self.is_s3:
                self.fs.create_dir(posixpath.dirname(probe), recursive=True)
            self._write_bytes(probe, b"")
            self.fs.delete_file(probe)
        except OSError as exc:
            raise ReportRootUnwritable(f"report root {self.uri} is not writable: {exc}") from None

    def create_exclusive(self, path: str, content: bytes) -> bool:
        """Create ``path`` only if it does not exist (atomically); False when it already exists.

        Local disk: ``O_CREAT | O_EXCL``. S3: a conditional PUT (``If-None-Match: *``), which S3
        answers 412 when the key exists.
        """
        if self.is_s3:
            return _s3_put_if_absent(self.s3_options, path, content)
        os.makedirs(posixpath.dirname(path), exist_ok=True)
        # Written whole beside it, then hard-linked into place (link fails if the name exists): an
        # O_EXCL create would show a competing reader an empty file, which reads as a corrupt lock.
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as out:
            out.write(content)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links
            return _create_excl(path, content)
        finally:
            os.unlink(tmp)
        return True

    def delete_file(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(path)

    def read_file(self, path: str) -> bytes | None:
        """The content of ``path`` under the root, or None when it does not exist."""
        try:
            with self.fs.open_input_stream(path) as src:
                return bytes(src.read())
        except FileNotFoundError:
            return None

    # -- reading -------------------------------------------------------------------------
    def exists(self, dataset: str, report_date: date, partition: Mapping[str, str] | None = None) -> bool:
        final = posixpath.join(self.partition_dir(dataset, report_date, partition), PART_FILE)
        return bool(self.fs.get_file_info(final).type == pafs.FileType.File)

    def read_partition(self, dataset: str, report_date: date, partition: Mapping[str, str] | None = None) -> pa.Table:
        final = posixpath.join(self.partition_dir(dataset, report_date, partition), PART_FILE)
        try:
            return pq.read_table(final, filesystem=self.fs)
        except FileNotFoundError:
            raise ReportError(f"dataset {dataset!r} has no partition for {report_date} at "
                              f"{self._uri(final)}") from None

    def read_artifact(self, dataset: str, report_date: date, filename: str) -> bytes:
        path = posixpath.join(self.artifact_dir(dataset, report_date), filename)
        with self.fs.open_input_stream(path) as src:
            return bytes(src.read())


def _create_excl(path: str, content: bytes) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    return True


def _s3_put_if_absent(options: S3Options, path: str, content: bytes) -> bool:
    """One conditional PUT with boto3 (pyarrow's S3 filesystem cannot send If-None-Match)."""
    import boto3
    from botocore.exceptions import ClientError

    endpoint = options.get("endpoint_override")
    client = boto3.client(
        "s3", aws_access_key_id=options.get("access_key"), aws_secret_access_key=options.get("secret_key"),
        aws_session_token=options.get("session_token"), region_name=options.get("region"),
        endpoint_url=f"{options.get('scheme', 'https')}://{endpoint}" if endpoint else None)
    bucket, _, key = path.partition("/")
    try:
        client.put_object(Bucket=bucket, Key=key, Body=content, IfNoneMatch="*")
    except ClientError as exc:
        if (exc.response or {}).get("Error", {}).get("Code") in ("PreconditionFailed", "412",
                                                                 "ConditionalRequestConflict"):
            return False
        raise ReportError(f"creating s3://{path} failed: {exc}") from None
    return True


def _strip_scheme(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri
