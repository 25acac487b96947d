"""Prometheus / Grafana Mimir: source spec, HTTP client, errors, the query runner every workflow uses, and
PromQL helpers (selectors, RE2 escaping, durations, Prometheus' own limits)."""

from traceo_finops.prometheus.client import PrometheusClient, retry_policy, sample_int, sample_value
from traceo_finops.prometheus.errors import (
    PrometheusAuthError,
    PrometheusBadResponse,
    PrometheusError,
    PrometheusHTTPError,
    PrometheusQueryTooLarge,
    PrometheusUnavailable,
    PrometheusUnreachable,
)
from traceo_finops.prometheus.promql import (
    LOOKBACK_DELTA,
    MAX_POINTS_PER_SERIES,
    format_duration,
    literal_regex,
    parse_duration,
    quote,
    re2_escape,
    selector,
)
from traceo_finops.prometheus.runner import QueryRunner, RunStats, Verdict, classify
from traceo_finops.prometheus.spec import SourceSpec

__all__ = [
    "LOOKBACK_DELTA",
    "MAX_POINTS_PER_SERIES",
    "PrometheusAuthError",
    "PrometheusBadResponse",
    "PrometheusClient",
    "PrometheusError",
    "PrometheusHTTPError",
    "PrometheusQueryTooLarge",
    "PrometheusUnavailable",
    "PrometheusUnreachable",
    "QueryRunner",
    "RunStats",
    "SourceSpec",
    "Verdict",
    "classify",
    "format_duration",
    "literal_regex",
    "parse_duration",
    "quote",
    "re2_escape",
    "retry_policy",
    "sample_int",
    "sample_value",
    "selector",
]
