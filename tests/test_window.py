"""Report windows come from the data interval, or the lookback when it is empty."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from traceo_finops.window import Window, parse_utc, report_window

pytestmark = pytest.mark.unit


def test_scheduled_interval_is_the_window() -> None:
    start, end = datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC)
    w = report_window(start, end, timedelta(days=7))
    assert (w.start, w.end, w.from_lookback) == (start, end, False)
    assert w.report_date == date(2026, 11, 27)
    assert Window.from_dict(w.as_dict()) == w


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


def test_history_override_keeps_one_utc_rule() -> None:
    w = report_window(datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC), timedelta(days=1))
    sized = w.with_history(timedelta(days=14))
    assert (sized.start, sized.end) == (datetime(2026, 11, 14, tzinfo=UTC), w.end)
    moved = w.with_history(end=parse_utc("2026-05-01T02:00:00+02:00", "param end"))
    assert moved.end == datetime(2026, 5, 1, tzinfo=UTC) and moved.duration == timedelta(days=1)
    with pytest.raises(ValueError, match=r"param end .* no time zone"):
        parse_utc("2026-05-01T00:00:00", "param end")
    with pytest.raises(ValueError, match="not an ISO time"):
        parse_utc("yesterday", "param end")
    with pytest.raises(ValueError, match="history must be positive"):
        w.with_history(timedelta(0))


def test_window_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        Window(datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
