"""What the cost report reads: each upstream dataset's newest committed partition, through the kit only.

Every read goes through the kit's index of commit markers, :func:`~traceo_finops.kit.publish.committed_partitions`
(which dates were committed, by which run), taken once per build; a partition is used only when its rows are the
committed run's — :func:`~traceo_finops.kit.publish.read_committed`'s rule, applied to the index entry in hand
(``read_committed`` itself lists every marker under the root per call: a year of them, ~30 partitions a build).
So a killed or overlapping upstream run is never read. A partition whose schema version is not the one
this report knows is rejected, naming both versions; one older than ``max_input_age`` is stale.

Rows are handed on without the upstream's ``run_id`` and window columns: the cost model never reads them, and
turning a year's worth of timestamps into Python objects was most of the time of reading a day.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from typing import Any

import pyarrow as pa

from traceo_finops.cost_report.recommend import Provenance
from traceo_finops.kit.publish import committed_partitions, read_commit
from traceo_finops.reports import RUN_ID_COLUMN, ReportError, ReportStore
from traceo_finops.shapes import Json

SCHEMA_VERSION_KEY = b"traceo.schema_version"
# Columns of every upstream row that the cost report never reads (which run wrote it, the run's window).
NOT_READ = frozenset({RUN_ID_COLUMN, "window_start", "window_end"})


@cache
def known_versions() -> dict[str, int]:
    """dataset -> the schema version this report reads (the producers' own constants)."""
    from traceo_finops.cardinality.config_audit import CONFIG_FINDINGS
    from traceo_finops.cardinality.dataset import CARDINALITY, SHOWBACK
    from traceo_finops.cost_report.dataset import STORAGE
    from traceo_finops.recording_rules.dataset import RECORDING_RULES
    from traceo_finops.rightsizing.dataset import RIGHTSIZING
    from traceo_finops.s3tiering.dataset import s3_tiering_dataset

    return {d.name: d.version for d in (CARDINALITY, SHOWBACK, CONFIG_FINDINGS, RIGHTSIZING, RECORDING_RULES,
                                        s3_tiering_dataset([]), STORAGE)}


@dataclass
class InputRecord:
    dataset: str
    status: str
    report_date: date | None = None
    schema_version: int | None = None
    rows: int = 0
    uri: str = ""
    reason: str = ""

    def as_row(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "status": self.status, "report_date": self.report_date,
                "schema_version": self.schema_version, "rows": self.rows, "uri": self.uri, "reason": self.reason}


@dataclass
class Snapshot:
    """The rows of every usable upstream dataset as of one day, where they came from, and what was not used."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    provenance: dict[str, Provenance] = field(default_factory=dict)
    inputs: list[InputRecord] = field(default_factory=list)

    @property
    def upstream_used(self) -> list[str]:
        return sorted(d for d in self.rows if d != "storage")


class Lake:
    """The committed partitions under a report root, read once each."""

    def __init__(self, store: ReportStore, versions: Mapping[str, int] | None = None) -> None:
        self.store = store
        self.versions = dict(versions or known_versions())
        index = committed_partitions(store)
        # Every committed dataset (the report's own too: its trend reads them); ``dates``: the upstream ones.
        self.index: dict[str, list[tuple[date, Mapping[str, Json]]]] = {
            name: sorted(((date.fromisoformat(str(e["report_date"])), e) for e in entries), key=lambda de: de[0])
            for name, entries in index.items()}
        self.dates = {name: entries for name, entries in self.index.items() if name in self.versions}
        self._tables: dict[tuple[str, date], pa.Table | str] = {}

    def days(self) -> set[date]:
        return {d for entries in self.dates.values() for d, _ in entries}

    def read(self, dataset: str, day: date) -> pa.Table | str:
        """Any committed dataset's partition of ``day`` (read once), or why it cannot be used."""
        return self._read(dataset, day)

    def _read(self, dataset: str, day: date) -> pa.Table | str:
        key = (dataset, day)
        if key not in self._tables:
            self._tables[key] = self._read_committed(dataset, day)
        return self._tables[key]

    def _read_committed(self, dataset: str, day: date) -> pa.Table | str:
        """The partition if its rows are the committed run's (``read_committed``'s rule), else why not."""
        entries = [e for d, e in self.index.get(dataset, []) if d == day]
        if not entries:
            return f"dataset {dataset!r} has no committed report for {day} under {self.store.uri}"
        if len(entries) > 1:
            return (f"dataset {dataset!r} {day} was committed by several DAGs "
                    f"({', '.join(str(e.get('dag_id')) for e in entries)}): name the dag_id")
        entry = entries[0]
        partition = entry.get("partition")
        try:
            table = self.store.read_partition(dataset, day, {str(k): str(v) for k, v in partition.items()}
                                              if isinstance(partition, dict) else None)
        except (ReportError, OSError) as exc:
            return str(exc)
        # The file's own run id too: an empty partition has no run_id values to compare.
        file_run = (table.schema.metadata or {}).get(b"traceo.run_id", b"").decode()
        runs = ({str(r) for r in table.column(RUN_ID_COLUMN).unique().to_pylist()}
                if RUN_ID_COLUMN in table.column_names else set())
        runs |= {file_run} if file_run else set()
        committed = str(entry.get("run_id"))
        if runs != {committed}:
            return (f"dataset {dataset!r} {day} is uncommitted: the partition comes from run(s) "
                    f"{sorted(runs) or 'unknown'} but the committed run of {entry.get('dag_id')} is {committed!r} "
                    f"(a later run is publishing or was killed); rerun that date")
        return table

    def snapshot(self, day: date, max_age: timedelta, skip: tuple[str, ...] = ()) -> Snapshot:
        """Each dataset's newest committed partition on or before ``day`` (and not older than ``max_age``)."""
        snap = Snapshot()
        for dataset, expected in sorted(self.versions.items()):
            if dataset in skip:
                continue
            entries = [(d, e) for d, e in self.dates.get(dataset, []) if d <= day]
            if not entries:
                snap.inputs.append(InputRecord(dataset, "missing", reason="no committed partition yet"))
                continue
            when, entry = entries[-1]
            uri = str(entry.get("uri", ""))
            if day - when > max_age:
                snap.inputs.append(InputRecord(dataset, "stale", when, uri=uri,
                                               reason=f"newest committed partition is {when}, older than "
                                                      f"{max_age.days}d before {day}"))
                continue
            table = self._read(dataset, when)
            if isinstance(table, str):
                snap.inputs.append(InputRecord(dataset, "rejected", when, uri=uri, reason=table))
                continue
            raw = (table.schema.metadata or {}).get(SCHEMA_VERSION_KEY, b"")
            version = int(raw) if raw.isdigit() else None
            if version != expected:
                snap.inputs.append(InputRecord(
                    dataset, "rejected", when, version, table.num_rows, uri,
                    f"schema version {version if version is not None else 'unknown'} of {dataset} {when}; this "
                    f"report reads version {expected} (rerun {entry.get('dag_id')} for that date)"))
                continue
            snap.rows[dataset] = table.select([c for c in table.column_names if c not in NOT_READ]).to_pylist()
            marker = read_commit(self.store, str(entry.get("dag_id")), when) or {}
            snap.provenance[dataset] = Provenance(uri, tuple(str(a) for a in marker.get("artifacts") or []))
            snap.inputs.append(InputRecord(dataset, "used", when, version, table.num_rows, uri))
        return snap
