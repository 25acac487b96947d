"""The cost report's errors."""

from __future__ import annotations

from traceo_finops.kit.outcome import PermanentError, WorkflowError


class CostReportError(WorkflowError):
    """The cost report cannot be built; the message names the dataset or source and the problem."""


class SchemaVersionRejected(CostReportError):
    """An upstream partition has a schema version this report cannot read (named in the message)."""


class StorageStatsMissing(CostReportError):
    """A source answered but has none of the TSDB self-metrics (reported as a row status, never raised out)."""


class BadCostReportSettings(PermanentError):
    """``workflows.cost_report`` asks for something impossible."""
