"""Report windows come from the data interval, or the lookback when it is empty."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from traceo_finops.window import ReportWindow, report_window

pytestmark = pytest.mark.unit


def test_scheduled_interval_is_the_window() -> None:
    start, end = datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC)
    w = report_window(start, end, timedelta(days=7))
    assert (w.start, w.end, w.from_lookback) == (start, end, False)
    assert w.report_date == date(2026, 11, 27)
    assert ReportWindow.from_dict(w.as_dict()) == w


def test_empty_interval_uses_lookback() -> None:
    t = datetime(2026, 11, 28, 10, 30, tzinfo=UTC)
    w = report_window(t, t, timedelta(hours=6))
    assert (w.start, w.end, w.from_lookback) == (t - timedelta(hours=6), t, True)
    assert w.report_date == date(2026, 11, 28)


def test_other_time_zones_are_normalised_to_utc() -> None:
    tz = timezone(timedelta(hours=2))
    w = report_window(datetime(2026, 11, 28, 2, tzinfo=tz), datetime(2026, 11, 29, 2, tzinfo=tz), timedelta(days=1))
    assert w.start == datetime(2026, 11, 28, tzinfo=UTC) and w.start.tzinfo == UTC


@pytest.mark.parametrize(("start", "end", "lookback", "problem"), [
    (datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC), timedelta(days=1), "starts after"),
    (None, None, timedelta(days=1), "no data interval end"),
    (None, datetime(2026, 1, 1), timedelta(days=1), "no time zone"),
    (None, datetime(2026, 1, 1, tzinfo=UTC), timedelta(0), "must be positive"),
])
def test_bad_intervals(start, end, lookback, problem) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=problem):
        report_window(start, end, lookback)
