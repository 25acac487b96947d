"""Cost anomalies on daily totals (per category and per owner), each with a one-line explanation (pure).

Two detectors look at the newest day of each series against the days before it (up to ``history``):

- **robust z-score**: ``0.6745 * (x - median) / MAD`` (Iglewicz & Hoaglin's modified z-score; |z| > 3.5
  is their outlier rule). Median and MAD ignore the spikes of the baseline itself. A baseline with no
  spread (MAD 0) flags any move larger than ``flat_tolerance`` of its median.
- **IsolationForest** (scikit-learn) on (value, day-over-day change): flags the newest day when the
  forest isolates it as an outlier *and* it moved at least ``min_change`` from the median (a forest
  always isolates something; a cent is not an anomaly).

A series with fewer than ``min_points`` baseline days is not judged (said in no row: it is quiet).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

ROBUST_Z, ISOLATION_FOREST = "robust_z", "isolation_forest"
METHODS = (ROBUST_Z, ISOLATION_FOREST)
Z_THRESHOLD = 3.5  # Iglewicz & Hoaglin (1993), "How to Detect and Handle Outliers"
MAD_SCALE = 0.6745  # the normal distribution's MAD/sigma


@dataclass(frozen=True)
class Rules:
    min_points: int = 7
    z_threshold: float = Z_THRESHOLD
    min_change: float = 0.10  # relative move vs the median an anomaly must have
    flat_tolerance: float = 0.01


def _explain(what: str, value: float, median: float, days: int, why: str) -> str:
    change = (value - median) / median if median else float("inf")
    pct = f"{change:+.0%}" if median else "from $0"
    return f"{what} {pct} vs its {days}-day median (${median:,.2f} → ${value:,.2f}/month); {why}"


def detect(series: Mapping[tuple[str, str], Sequence[tuple[date, float]]], rules: Rules = Rules(),
           drivers: Mapping[tuple[str, str], str] | None = None) -> list[dict[str, Any]]:
    """Anomaly rows for the newest day of each ``(category, owner)`` series of ``(day, monthly $)`` points."""
    out: list[dict[str, Any]] = []
    for (category, owner), points in sorted(series.items()):
        points = sorted(points)
        if len(points) < rules.min_points + 1:
            continue
        *base_points, (day, value) = points
        base = [v for _, v in base_points]
        med = statistics.median(base)
        mad = statistics.median(abs(v - med) for v in base)
        change = abs(value - med) / med if med else (float("inf") if value else 0.0)
        what = f"{category} of {owner}"
        driver = (drivers or {}).get((category, owner))
        hint = f", driven by {driver}" if driver else ""
        if mad > 0:
            z = MAD_SCALE * (value - med) / mad
            z_flag = abs(z) > rules.z_threshold and change >= rules.min_change
        else:
            z = float("inf") if change > rules.flat_tolerance else 0.0
            z_flag = change > rules.flat_tolerance and change >= rules.min_change
        row = {"day": day, "category": category, "owner": owner, "value_usd": value, "baseline_usd": med,
               "change_pct": (value - med) / med if med else None}
        if z_flag:
            out.append({**row, "method": ROBUST_Z, "score": z if abs(z) != float("inf") else None,
                        "explanation": _explain(what, value, med, len(base),
                                                f"robust z {z:+.1f} (> {rules.z_threshold}){hint}")})
        # The forest only flags a day that moved at least min_change: below that, its fit (~0.2 s) is wasted.
        forest = _forest_score([*base, value]) if change >= rules.min_change else None
        if forest is not None and forest < 0:
            out.append({**row, "method": ISOLATION_FOREST, "score": forest,
                        "explanation": _explain(what, value, med, len(base),
                                                f"IsolationForest isolates this day (score {forest:.2f}){hint}")})
    return out


def _forest_score(values: Sequence[float]) -> float | None:
    """The newest point's IsolationForest decision score (< 0: outlier), or None on a flat series."""
    if len(set(values)) < 2:
        return None  # nothing to isolate: every split is empty
    import numpy as np
    from sklearn.ensemble import IsolationForest

    v = np.asarray(values, dtype=float)
    features = np.column_stack([v, np.diff(v, prepend=v[0])])
    forest = IsolationForest(n_estimators=200, contamination="auto", random_state=0).fit(features)
    return float(forest.decision_function(features[-1:])[0])
