"""Errors of the cardinality audit; each message names the source or tenant and the problem."""

from __future__ import annotations


class CardinalityError(RuntimeError):
    """The audit of one source/tenant cannot go on."""


class ConfigAuditError(CardinalityError, ValueError):
    """The flags or configuration cannot be read; the message names the source."""


class CensusSettingError(CardinalityError, ValueError):
    """A census setting (``count_method``, a tenant) is not one the server accepts."""
