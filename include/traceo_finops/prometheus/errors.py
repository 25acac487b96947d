"""One exception hierarchy for every Prometheus/Mimir failure.

Each message names the source, the request (method and URL without credentials or query string)
and the problem, e.g. ``source 'devstack': GET http://127.0.0.1:9090/api/v1/status/tsdb answered
HTTP 503 after 3 retries: busy``. Secrets never appear in messages (the client scrubs them).
"""

from __future__ import annotations


class PrometheusError(Exception):
    """Base class; ``source``, ``url`` and ``status`` (None without an HTTP answer) are attributes.

    ``retry_after``: the seconds the server's ``Retry-After`` header asked for, None without one.
    """

    def __init__(self, message: str, *, source: str, url: str | None = None, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.source = source
        self.url = url
        self.status = status
        self.retry_after = retry_after


class PrometheusUnavailable(PrometheusError):
    """No HTTP answer: connection refused, reset or timed out (after the retries)."""


class PrometheusUnreachable(PrometheusUnavailable):
    """No connection could be made at all: refused, DNS lookup failed, connect timed out.

    ``reason`` says which in a few words (``connection refused``). Not a reason to split a query: the
    server is not there, and smaller queries will not find it either.
    """

    def __init__(self, message: str, *, source: str, url: str | None = None, reason: str = "") -> None:
        super().__init__(message, source=source, url=url)
        self.reason = reason


class PrometheusHTTPError(PrometheusError):
    """The server answered with an error status (after the retries for 429/5xx)."""


class PrometheusAuthError(PrometheusHTTPError):
    """HTTP 401/403: wrong credentials, or a tenant (X-Scope-OrgID) they do not cover."""


class PrometheusBadResponse(PrometheusError):
    """A success status but an unusable body: not JSON/YAML, status=error envelope or missing keys."""


class PrometheusQueryTooLarge(PrometheusError):
    """The server keeps timing out on, or refusing as too large, a query that cannot be split any further."""
