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

import logging
import posixpath
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from traceo_finops.quality import Expect

log = logging.getLogger(__name__)

PART_FILE = "part-0.parquet"
STAGING_DIR = "_staging"
ARTIFACTS_DIR = "_artifacts"


class ReportError(RuntimeError):
    """A report cannot be built or written; the message names the dataset and the place."""


@dataclass(frozen=True)
class Dataset:
    """A report dataset: its name, its Arrow schema (without the partition column) and version."""

    name: str
    version: int
    schema: pa.Schema
    description: str = ""
    # Checked by Great Expectations (traceo_finops.quality.check) before a partition is written.
    expectations: tuple[Expect, ...] = field(default=())

    def table(self, rows: Iterable[Mapping[str, Any]] | pa.Table) -> pa.Table:
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


@dataclass(frozen=True)
class WrittenPartition:
    dataset: str
    report_date: str
    uri: str
    rows: int
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "report_date": self.report_date, "uri": self.uri,
                "rows": self.rows, "bytes": self.bytes}


class ReportStore:
    """Writes and reads report partitions under one root, local or on S3."""

    def __init__(self, root: str, filesystem: pafs.FileSystem | None = None,
                 s3_options: Mapping[str, Any] | None = None) -> None:
        """``root`` is an absolute local path or ``s3://bucket/prefix``.

        ``s3_options`` are passed to :class:`pyarrow.fs.S3FileSystem` (``access_key``,
        ``secret_key``, ``session_token``, ``region``, ``endpoint_override``, ``scheme``).
        """
        self.uri = root.rstrip("/")
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

    def partition_dir(self, dataset: str, report_date: date) -> str:
        return posixpath.join(self.base, dataset, f"report_date={report_date.isoformat()}")

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
        staging = posixpath.join(self.base, STAGING_DIR, uuid.uuid4().hex)
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

    def write_partition(self, dataset: Dataset, report_date: date, rows: Iterable[Mapping[str, Any]] | pa.Table,
                        metadata: Mapping[str, str] | None = None) -> WrittenPartition:
        """Write (or replace) the partition of ``dataset`` for ``report_date``; return where it went."""
        table = dataset.table(rows)
        meta = {
            "traceo.dataset": dataset.name,
            "traceo.schema_version": str(dataset.version),
            "traceo.report_date": report_date.isoformat(),
            **{f"traceo.{k}": str(v) for k, v in (metadata or {}).items()},
        }
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        final = posixpath.join(self.partition_dir(dataset.name, report_date), PART_FILE)
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

    # -- reading -------------------------------------------------------------------------
    def exists(self, dataset: str, report_date: date) -> bool:
        final = posixpath.join(self.partition_dir(dataset, report_date), PART_FILE)
        return self.fs.get_file_info(final).type == pafs.FileType.File

    def read_partition(self, dataset: str, report_date: date) -> pa.Table:
        final = posixpath.join(self.partition_dir(dataset, report_date), PART_FILE)
        try:
            return pq.read_table(final, filesystem=self.fs)
        except FileNotFoundError:
            raise ReportError(f"dataset {dataset!r} has no partition for {report_date} at "
                              f"{self._uri(final)}") from None

    def read_artifact(self, dataset: str, report_date: date, filename: str) -> bytes:
        path = posixpath.join(self.artifact_dir(dataset, report_date), filename)
        with self.fs.open_input_stream(path) as src:
            return src.read()


def _strip_scheme(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri
