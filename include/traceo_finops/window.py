"""The time window a run reports on, taken from its data interval — never from now().

One window type for every workflow, and one UTC rule: every bound must carry a time zone
(a naive time is refused, never guessed) and is converted to a plain UTC ``datetime``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta


def to_utc(value: datetime, what: str = "time") -> datetime:
    """``value`` as a plain UTC datetime; a naive ``value`` is an error naming ``what``."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} {value.isoformat()} has no time zone (e.g. 2026-05-01T00:00:00Z)")
    # A plain datetime: Airflow hands over pendulum objects, whose arithmetic can drop the zone.
    return datetime.fromtimestamp(value.timestamp(), UTC)


def parse_utc(text: str, what: str = "time") -> datetime:
    """An ISO 8601 time with a zone (``Z`` accepted) as UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an ISO time such as 2026-05-01T00:00:00Z") from None
    return to_utc(value, what)


@dataclass(frozen=True)
class Window:
    """Half-open window ``[start, end)`` in UTC and the report date it is filed under."""

    start: datetime
    end: datetime
    # True when the run's data interval was empty (manual or asset-triggered run) and a lookback decided.
    from_lookback: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", to_utc(self.start, "window start"))
        object.__setattr__(self, "end", to_utc(self.end, "window end"))
        if self.start >= self.end:
            raise ValueError(f"window ends before it starts: {self.start.isoformat()} → {self.end.isoformat()}")

    @property
    def report_date(self) -> date:
        """The day the window ends in: a daily run for ``[d, d+1)`` reports ``d``."""
        return (self.end - timedelta(microseconds=1)).date()

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    @property
    def seconds(self) -> float:
        return self.duration.total_seconds()

    def with_history(self, history: timedelta | None = None, end: datetime | None = None) -> Window:
        """``[end - history, end)``: the same end (or ``end``) with a different length, e.g. 14 days of usage."""
        new_end = to_utc(end, "window end") if end is not None else self.end
        if history is not None and history <= timedelta(0):
            raise ValueError(f"history must be positive, got {history}")
        return Window(new_end - (history or self.duration), new_end, self.from_lookback)

    def as_dict(self) -> dict[str, str | bool]:
        """JSON-safe form, for XCom and report metadata."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "report_date": self.report_date.isoformat(), "from_lookback": self.from_lookback}

    @classmethod
    def from_dict(cls, data: dict[str, str | bool]) -> Window:
        return cls(datetime.fromisoformat(str(data["start"])), datetime.fromisoformat(str(data["end"])),
                   bool(data.get("from_lookback", False)))


def report_window(interval_start: datetime | None, interval_end: datetime | None,
                  lookback: timedelta) -> Window:
    """Window of a run from its data interval; an empty interval means ``[end - lookback, end)``.

    Every DAG has an explicit data-interval timetable, so scheduled runs and backfills have real
    intervals. Manual and asset-triggered runs have ``start == end`` (the trigger time), so the
    configured lookback decides.
    """
    if interval_end is None:
        raise ValueError("the run has no data interval end; cannot choose a report window")
    if lookback <= timedelta(0):
        raise ValueError(f"lookback must be positive, got {lookback}")
    end = to_utc(interval_end, "data interval end")
    start = to_utc(interval_start, "data interval start") if interval_start is not None else end
    if start > end:
        raise ValueError(f"data interval starts after it ends: {start.isoformat()} > {end.isoformat()}")
    if start == end:
        return Window(end - lookback, end, from_lookback=True)
    return Window(start, end, from_lookback=False)
