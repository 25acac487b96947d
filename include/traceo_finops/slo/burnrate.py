"""Multi-window multi-burn-rate (MWMB) alert windows and their burn-rate factors.

Source: Google SRE Workbook, "Alerting on SLOs", table 5-8 (page 1h/5m at 2 % of a 30-day budget, page
6h/30m at 5 %, ticket 3d/6h at 10 %; the short window is 1/12 of the long one), plus Sloth's "ticket quick"
pair 1d/2h at 10 % (slok/sloth defaults). The factor is derived from the period, never copied:

    factor = budget fraction consumed × period / long window      (2 % × 720 h / 1 h = 14.4)

so a 30-day period gives Sloth's 14.4 / 6 / 3 / 1, a 28-day one 13.44 / 5.6 / 2.8 / 0.933.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

Severity = Literal["page", "ticket"]


@dataclass(frozen=True)
class AlertWindow:
    """One window pair of an MWMB alert: both windows must burn faster than ``factor`` × budget."""

    severity: Severity
    long: timedelta
    short: timedelta
    budget_fraction: float  # share of the period's error budget this pair lets burn before it alerts

    def factor(self, period: timedelta) -> float:
        """The burn-rate threshold for ``period`` (rounded to 6 places: 14.4, not 14.399999999999999)."""
        return round(self.budget_fraction * (period / self.long), 6)


ALERT_WINDOWS: tuple[AlertWindow, ...] = (
    AlertWindow("page", timedelta(hours=1), timedelta(minutes=5), 0.02),
    AlertWindow("page", timedelta(hours=6), timedelta(minutes=30), 0.05),
    AlertWindow("ticket", timedelta(days=1), timedelta(hours=2), 0.10),
    AlertWindow("ticket", timedelta(days=3), timedelta(hours=6), 0.10),
)

# Every window an SLI error-ratio recording rule is written for (the period's own comes on top).
SLI_WINDOWS: tuple[timedelta, ...] = tuple(sorted({w.long for w in ALERT_WINDOWS} | {w.short for w in ALERT_WINDOWS}))
LONGEST_ALERT_WINDOW: timedelta = max(w.long for w in ALERT_WINDOWS)


def windows_of(severity: Severity) -> tuple[AlertWindow, ...]:
    return tuple(w for w in ALERT_WINDOWS if w.severity == severity)


def prom_duration(value: timedelta) -> str:
    """``timedelta`` as the largest exact Prometheus unit: 5m, 1h, 3d, 30d."""
    seconds = int(value.total_seconds())
    if seconds <= 0 or seconds != value.total_seconds():
        raise ValueError(f"{value} is not a positive whole number of seconds")
    unit, size = next((u, s) for u, s in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)) if seconds % s == 0)
    return f"{seconds // size}{unit}"


def parse_duration(text: str) -> timedelta:
    """A Prometheus duration with one unit (``30d``, ``28d``, ``7d``, ``6h``, ``5m``) as a ``timedelta``."""
    import re

    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30d, 28d, 7d or 6h")
    size = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[match.group(2)]
    return timedelta(seconds=int(match.group(1)) * size)
