"""The time window a run reports on, taken from its data interval — never from now()."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta


@dataclass(frozen=True)
class ReportWindow:
    """Half-open window ``[start, end)`` in UTC and the report date it is filed under."""

    start: datetime
    end: datetime
    from_lookback: bool  # True when the run's data interval was empty (manual or asset-triggered run)

    @property
    def report_date(self) -> date:
        """The day the window ends in: a daily run for ``[d, d+1)`` reports ``d``."""
        return (self.end - timedelta(microseconds=1)).date()

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def as_dict(self) -> dict[str, str | bool]:
        """JSON-safe form, for XCom and report metadata."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "report_date": self.report_date.isoformat(), "from_lookback": self.from_lookback}

    @classmethod
    def from_dict(cls, data: dict[str, str | bool]) -> ReportWindow:
        return cls(datetime.fromisoformat(str(data["start"])), datetime.fromisoformat(str(data["end"])),
                   bool(data["from_lookback"]))


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"data interval bound {value.isoformat()} has no time zone")
    # A plain datetime (Airflow hands over pendulum objects, whose arithmetic can drop the zone).
    return datetime.fromtimestamp(value.timestamp(), UTC)


def report_window(interval_start: datetime | None, interval_end: datetime | None,
                  lookback: timedelta) -> ReportWindow:
    """Window of a run from its data interval; an empty interval means ``[end - lookback, end)``.

    Scheduled runs and backfills have real intervals. Manual and asset-triggered runs in
    Airflow 3 have ``start == end`` (the trigger time), so the configured lookback decides.
    """
    if interval_end is None:
        raise ValueError("the run has no data interval end; cannot choose a report window")
    if lookback <= timedelta(0):
        raise ValueError(f"lookback must be positive, got {lookback}")
    end = _utc(interval_end)
    start = _utc(interval_start) if interval_start is not None else end
    if start > end:
        raise ValueError(f"data interval starts after it ends: {start.isoformat()} > {end.isoformat()}")
    if start == end:
        return ReportWindow(end - lookback, end, from_lookback=True)
    return ReportWindow(start, end, from_lookback=False)
