"""The SLO workflow's errors."""

from __future__ import annotations

from traceo_finops.kit.outcome import PermanentError


class SpecError(PermanentError):
    """An SLO spec file is invalid; the message names the file, the SLO and every problem found."""


class RoutingError(PermanentError):
    """The Alertmanager routing cannot be generated (e.g. a team with no receiver); nothing is written."""


class ToolUnavailable(RuntimeError):
    """promtool or amtool is missing: the generated files cannot be checked here."""


class ProofFailed(PermanentError):
    """A generated file failed its check (``promtool check rules``/``test rules``, ``amtool check-config``)."""


class NoSpecs(PermanentError):
    """No source/tenant has an SLO spec: there is nothing to do."""
