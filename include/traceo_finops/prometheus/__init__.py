"""Prometheus / Grafana Mimir HTTP client: source spec, client, errors and a PromQL selector helper."""

from traceo_finops.prometheus.client import PrometheusClient, retry_policy
from traceo_finops.prometheus.errors import (
    PrometheusAuthError,
    PrometheusBadResponse,
    PrometheusError,
    PrometheusHTTPError,
    PrometheusUnavailable,
)
from traceo_finops.prometheus.promql import quote, selector
from traceo_finops.prometheus.spec import SourceSpec

__all__ = [
    "PrometheusAuthError",
    "PrometheusBadResponse",
    "PrometheusClient",
    "PrometheusError",
    "PrometheusHTTPError",
    "PrometheusUnavailable",
    "SourceSpec",
    "quote",
    "retry_policy",
    "selector",
]
