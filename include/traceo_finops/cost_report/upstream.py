"""What the cost report reads: each upstream dataset's newest committed partition, through the kit only.

Every read goes through :func:`~traceo_finops.kit.publish.committed_partitions` (which dates were
committed) and :func:`~traceo_finops.kit.publish.read_committed` (the committed run's rows), so a
killed or overlapping upstream run is never read. A partition whose schema version is not the one
this report knows is rejected, naming both versions; one older than ``max_input_age`` is stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from typing import Any

import pyarrow as pa

from traceo_finops.cost_report.recommend import Provenance
from traceo_finops.kit.publish import committed_partitions, read_commit, read_committed
from traceo_finops.reports import ReportError, ReportStore
from traceo_finops.shapes import Json

SCHEMA_VERSION_KEY = b"traceo.schema_version"


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
        self.dates: dict[str, list[tuple[date, Mapping[str, Json]]]] = {
            name: sorted((date.fromisoformat(str(e["report_date"])), e) for e in entries)
            for name, entries in index.items() if name in self.versions}
        self._tables: dict[tuple[str, date], pa.Table | str] = {}

    def days(self) -> set[date]:
        return {d for entries in self.dates.values() for d, _ in entries}

    def _read(self, dataset: str, day: date) -> pa.Table | str:
        key = (dataset, day)
        if key not in self._tables:
            try:
                self._tables[key] = read_committed(self.store, dataset, day)
            except ReportError as exc:
                self._tables[key] = str(exc)
        return self._tables[key]

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
            snap.rows[dataset] = table.to_pylist()
            marker = read_commit(self.store, str(entry.get("dag_id")), when) or {}
            snap.provenance[dataset] = Provenance(uri, tuple(str(a) for a in marker.get("artifacts") or []))
            snap.inputs.append(InputRecord(dataset, "used", when, version, table.num_rows, uri))
        return snap
