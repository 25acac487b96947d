"""Watching what a report reader reads."""

from __future__ import annotations

import pytest

from traceo_finops.reports import ReportStore


def count_reads(store: ReportStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path ``store.read_file`` is asked for from now on, in order (the list fills as the store is read)."""
    read: list[str] = []
    real_read = store.read_file

    def counting_read(path: str) -> bytes | None:
        read.append(path)
        return real_read(path)

    monkeypatch.setattr(store, "read_file", counting_read)
    return read
