"""The recording-rule workflow's errors."""

from __future__ import annotations

from traceo_finops.kit.outcome import PermanentError, WorkflowError


class RecordingRulesError(WorkflowError):
    """A source/tenant's recording-rule run cannot go on; the message says why."""


class ProofUnavailable(RecordingRulesError):
    """The proof cannot run here: promtool or prometheus missing, or the private Prometheus did not start."""


class NoQueryLog(PermanentError):
    """The configuration names no query log for any source: there is nothing to mine."""
