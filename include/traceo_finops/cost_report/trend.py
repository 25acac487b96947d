"""The ``cost_trend`` dataset: the daily totals per category that the FinOps page's trend chart draws, committed
with each cost report so the page reads one file instead of every day's ``cost_summary`` and commit marker.

Built incrementally (:func:`trend_rows`): the newest committed ``cost_trend`` before this report date, kept day by
day while the run it summed is still the committed ``cost_summary`` run of that day, plus this run's totals (a
rerun of the same date replaces its day). A day with no usable earlier trend row (the first report, an earlier
trend of another schema version, a day rerun since that trend was built) is summed from its committed
``cost_summary`` partition. So a rerun of an older date shows in the trend from the next cost report on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

# The span the page draws: the trailing year of report dates (one more day for a leap year).
TREND_DAYS = 366
USD_COLUMNS = ("current_monthly_usd", "projected_monthly_usd", "saving_monthly_usd")


def day_totals(day: date, summary: Iterable[Mapping[str, Any]], run_id: str) -> list[dict[str, Any]]:
    """One row per category of ``day``'s ``cost_summary`` rows (summed over owners), naming the run they are from."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(USD_COLUMNS))
    for r in summary:
        acc = sums[str(r["category"])]
        for i, c in enumerate(USD_COLUMNS):
            acc[i] += float(r[c] or 0.0)
    return [{"day": day, "category": cat, **dict(zip(USD_COLUMNS, vals, strict=True)), "summary_run_id": run_id}
            for cat, vals in sorted(sums.items())]


def trend_rows(day: date, today: Sequence[Mapping[str, Any]], previous: Sequence[Mapping[str, Any]],
               committed: Mapping[date, str], read_summary: Callable[[date], Sequence[Mapping[str, Any]] | None],
               days: int = TREND_DAYS) -> list[dict[str, Any]]:
    """The trend of report date ``day``: the ``days`` trailing days ending ``day``, oldest first.

    ``today``: this run's :func:`day_totals`; ``previous``: the rows of the newest committed ``cost_trend`` before
    ``day`` (empty when there is none or it cannot be used); ``committed``: report date -> committed run of every
    committed ``cost_summary`` (other dates are ignored); ``read_summary``: a date's committed ``cost_summary`` rows,
    or None when it cannot be read (that day then has no point, as on the page).
    """
    start = day - timedelta(days=days - 1)
    kept: dict[date, list[Mapping[str, Any]]] = defaultdict(list)
    for r in previous:
        d = r["day"]
        if isinstance(d, date) and start <= d < day and committed.get(d) == r["summary_run_id"]:
            kept[d].append(r)
    out: list[dict[str, Any]] = []
    for d, run in sorted(committed.items()):
        if not start <= d < day:
            continue
        if d in kept:
            out += [{k: r[k] for k in ("day", "category", *USD_COLUMNS, "summary_run_id")} for r in kept[d]]
            continue
        summary = read_summary(d)
        if summary:
            out += day_totals(d, summary, run)
    out += [dict(r) for r in today]
    return out


def page_points(rows: Iterable[Mapping[str, Any]], days: int = TREND_DAYS) -> list[dict[str, Any]]:
    """The page's trend points from ``cost_trend`` rows: per day the totals over categories, the newest ``days``."""
    sums: dict[date, list[float]] = defaultdict(lambda: [0.0] * len(USD_COLUMNS))
    for r in rows:
        acc = sums[r["day"]]
        for i, c in enumerate(USD_COLUMNS):
            acc[i] += float(r[c] or 0.0)
    return [{"report_date": d.isoformat(), "current": round(v[0], 2), "projected": round(v[1], 2),
             "saving": round(v[2], 2)} for d, v in sorted(sums.items())[-days:] if days > 0]
