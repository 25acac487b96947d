"""One exception hierarchy for every Prometheus/Mimir failure.

Each message names the source, the request (method and URL without credentials or query string)
and the problem, e.g. ``source 'devstack': GET http://127.0.0.1:9090/api/v1/status/tsdb answered
HTTP 503 after 3 retries: busy``. Secrets never appear in messages (the client scrubs them).
"""

from __future__ import annotations


class PrometheusError(Exception):
    """Base class; ``source``, ``url`` and ``status`` (None without an HTTP answer) are attributes."""

    def __init__(self, message: str, *, source: str, url: str | None = None, status: int | None = None):
        super().__init__(message)
        self.source = source
        self.url = url
        self.status = status


class PrometheusUnavailable(PrometheusError):
    """No HTTP answer: connection refused, reset or timed out (after the retries)."""


class PrometheusHTTPError(PrometheusError):
    """The server answered with an error status (after the retries for 429/5xx)."""


class PrometheusAuthError(PrometheusHTTPError):
    """HTTP 401/403: wrong credentials, or a tenant (X-Scope-OrgID) they do not cover."""


class PrometheusBadResponse(PrometheusError):
    """A success status but an unusable body: not JSON/YAML, status=error envelope or missing keys."""
