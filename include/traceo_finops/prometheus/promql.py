"""PromQL text and Prometheus' own numbers, in one place.

Selectors are built safely (label values are quoted, never pasted into the query text); regexes of
literal values are escaped for RE2; durations are read by promql-parser; the server's defaults and
limits that the workflows plan around are defined once, below, with where they come from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import timedelta

import promql_parser

# ---- Prometheus' own numbers ---------------------------------------------------------------------
# Source for both: the Prometheus server (github.com/prometheus/prometheus, v2.x and v3.x alike).
# cmd/prometheus/main.go: `--query.lookback-delta` defaults to 5m; a plain selector at time t reads the
# latest sample in (t - 5m, t], so a series counts as present at t when it has a sample in that window.
LOOKBACK_DELTA = timedelta(minutes=5)
# web/api/v1/api.go: a range query (or a subquery) over more than 11,000 points per series is refused with
# "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution".
MAX_POINTS_PER_SERIES = 11_000

# These check single names, they do not parse PromQL.
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_MATCH_OPS = ("=", "!=", "=~", "!~")
_ZERO_DURATION = re.compile(r"0|(?:0+(?:ms|[smhdwy]))+")
_RE2_META = frozenset("\\.+*?()|[]{}^$")
# promql-parser 0.11 counts each millisecond as a microsecond ("500ms" -> 500 µs); checked once, so a fixed
# release is read as it is.
_MS_READ_AS_MICROSECONDS = promql_parser.parse_duration("1ms") == timedelta(microseconds=1)


def quote(value: str) -> str:
    """``value`` as a PromQL double-quoted string literal.

    JSON string escapes (``\\"``, ``\\\\``, ``\\n``, ``\\uXXXX``) are a subset of the Go escapes PromQL
    accepts, so quotes, backslashes, newlines and any unicode round-trip unchanged.
    """
    return json.dumps(str(value), ensure_ascii=False)


def selector(metric: str | None = None, /, **matchers: str | tuple[str, str]) -> str:
    """A series selector: ``selector("up", job="api", instance=("=~", "10\\\\..*"))``.

    A plain value matches with ``=``; a ``(op, value)`` tuple picks ``=``, ``!=``, ``=~`` or ``!~``.
    Label names that are Python keywords go through a dict: ``selector("up", **{"class": "x"})``.
    A metric name that is not a classic identifier becomes a ``__name__`` matcher.
    """
    parts: list[str] = []
    head = ""
    if metric is not None:
        if _METRIC_NAME.match(metric):
            head = metric
        else:
            parts.append(f"__name__={quote(metric)}")
    for name, spec in matchers.items():
        if not _LABEL_NAME.match(name):
            raise ValueError(f"invalid label name {name!r}")
        op, value = spec if isinstance(spec, tuple) else ("=", spec)
        if op not in _MATCH_OPS:
            raise ValueError(f"invalid match operator {op!r} for label {name!r}; use one of {_MATCH_OPS}")
        parts.append(f"{name}{op}{quote(value)}")
    if not head and not parts:
        raise ValueError("a selector needs a metric name or at least one matcher")
    return head + ("{" + ",".join(parts) + "}" if parts else "")


def re2_escape(value: str) -> str:
    """``value`` as an RE2 literal: only RE2's metacharacters get a backslash (unlike ``re.escape``).

    So Prometheus still recognises an alternation of such literals as a set of values and looks each one
    up in its postings index instead of running the regex over every value.
    """
    return "".join("\\" + ch if ch in _RE2_META else ch for ch in value)


def literal_regex(values: Iterable[str]) -> str:
    """An RE2 alternation matching exactly ``values`` (Prometheus anchors matcher regexes): ``a|b\\.c``."""
    return "|".join(re2_escape(v) for v in values)


def parse_duration(text: str) -> timedelta:
    """A Prometheus duration (``90s``, ``1h30m``, ``14d``, ``500ms``, ``0s``) read by promql-parser.

    Zero is allowed (flags such as ``--storage.tsdb.retention.time=0s`` use it; a PromQL range never is).
    Raises ``ValueError`` for anything else, e.g. ``1.5h``.
    """
    raw = str(text).strip()
    if raw[-1:].isdigit():  # promql-parser takes "15" as seconds; Prometheus' model.ParseDuration needs a unit
        raise ValueError(f"not a Prometheus duration: {text!r} (needs a unit: ms, s, m, h, d, w, y)")
    try:
        parsed = promql_parser.parse_duration(raw)
    except ValueError:
        if _ZERO_DURATION.fullmatch(raw):  # Prometheus' model.ParseDuration accepts zero, promql-parser does not
            return timedelta(0)
        raise ValueError(f"not a Prometheus duration: {text!r}") from None
    if _MS_READ_AS_MICROSECONDS:
        return timedelta(days=parsed.days, seconds=parsed.seconds, milliseconds=parsed.microseconds)
    return timedelta(seconds=parsed.total_seconds())  # normalised: promql-parser leaves days=0


def format_duration(value: timedelta) -> str:
    """``value`` written as Prometheus writes durations (``1d``, ``1h30m``)."""
    return str(promql_parser.display_duration(value))
