"""Build PromQL selectors safely: label values are quoted, never pasted into the query text."""

from __future__ import annotations

import json
import re

# These check single names, they do not parse PromQL.
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_MATCH_OPS = ("=", "!=", "=~", "!~")


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
