"""Errors of the right-sizing workflow; each message names the source and what to do."""

from __future__ import annotations


class RightsizingError(RuntimeError):
    """Right-sizing cannot go on for a source (the message says why)."""


class MissingMetricError(RightsizingError):
    """A metric the discovery or the usage queries need has no series on the source."""

    def __init__(self, message: str, metrics: list[str]) -> None:
        super().__init__(message)
        self.metrics = metrics
