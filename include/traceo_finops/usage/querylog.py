"""Usage from query history: Prometheus's query log (JSON lines) and Mimir query-frontend "query stats" lines.

Both are streamed line by line and reduced to counts per distinct query text, so a million lines cost one
pass and each distinct expression is parsed once later. Only lines whose timestamp falls in the run's
window ``[start, end)`` count. Lines that are truncated, not JSON/logfmt or lack a query are counted and
the first ``MAX_RECORDED_BAD_LINES`` recorded with their line numbers. Prometheus writes rule evaluations
to the same log (with ``ruleGroup``): those are kept apart, to be attributed to rules, so a rule is not
counted again as an ad-hoc query.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from traceo_finops.usage.model import ParseError, SourceKind
from traceo_finops.usage.rules import rule_scope

MAX_RECORDED_BAD_LINES = 100
_EXCERPT = 120


@dataclass(frozen=True)
class RuleEvaluation:
    """A query Prometheus ran for a rule group: attributed to the group's rule with that expression."""

    scope: str  # the rule file's base name, as in rule ids
    group: str
    query: str


@dataclass
class QueryLogSummary:
    """What a query log holds for one window: executions per distinct query, and how many lines were what."""

    file: str
    queries: Counter[str] = field(default_factory=Counter)  # ad-hoc (API) query text → executions
    rule_evaluations: Counter[RuleEvaluation] = field(default_factory=Counter)
    lines: int = 0
    in_window: int = 0
    outside_window: int = 0
    skipped: int = 0  # well-formed lines that are not query executions (other log messages, label/series calls)
    bad_lines: int = 0  # truncated, not JSON/logfmt, or missing the query or timestamp
    errors: list[ParseError] = field(default_factory=list)  # the first MAX_RECORDED_BAD_LINES bad lines
    statuses: Counter[str] = field(default_factory=Counter)  # Mimir: status of counted queries

    def bad(self, line_no: int, reason: str, line: str) -> None:
        self.bad_lines += 1
        if len(self.errors) < MAX_RECORDED_BAD_LINES:
            excerpt = line if len(line) <= _EXCERPT else line[:_EXCERPT] + "…"
            self.errors.append(ParseError(SourceKind.QUERY, self.file, f"{self.file}:{line_no}", excerpt, reason))

    def count(self, query: str, ts: datetime, start: datetime, end: datetime,
              rule: RuleEvaluation | None = None) -> bool:
        if not start <= ts < end:
            self.outside_window += 1
            return False
        self.in_window += 1
        if rule is not None:
            self.rule_evaluations[rule] += 1
        else:
            self.queries[query] += 1
        return True


def _check_window(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("the query-log window needs time-zone-aware bounds")
    if start >= end:
        raise ValueError(f"empty query-log window: {start.isoformat()} >= {end.isoformat()}")


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value)  # Python 3.11 reads RFC 3339 with Z and nanoseconds
    except ValueError:
        return None
    return ts if ts.tzinfo is not None else None


def _text_lines(lines: Iterable[str | bytes]) -> Iterator[tuple[int, str | None, str]]:
    """(line number, text or None when not UTF-8, raw excerpt) for each line."""
    for n, raw in enumerate(lines, 1):
        if isinstance(raw, bytes):
            try:
                yield n, raw.decode("utf-8").rstrip("\r\n"), ""
            except UnicodeDecodeError:
                yield n, None, raw[:_EXCERPT].decode("utf-8", "replace")
        else:
            yield n, raw.rstrip("\r\n"), ""


def read_prometheus_query_log(lines: Iterable[str | bytes], start: datetime, end: datetime, *,
                              file: str = "query.log") -> QueryLogSummary:
    """Count the queries of a Prometheus query log (one JSON object per line) run in ``[start, end)``."""
    _check_window(start, end)
    out = QueryLogSummary(file)
    loads = json.loads
    for n, line, raw in _text_lines(lines):
        out.lines += 1
        if line is None:
            out.bad(n, "line is not UTF-8", raw)
            continue
        if not line.strip():
            continue
        try:
            entry = loads(line)
        except ValueError as exc:
            out.bad(n, f"not JSON (truncated?): {exc}", line)
            continue
        if not isinstance(entry, dict):
            out.bad(n, f"not a query log entry: a JSON {type(entry).__name__}", line)
            continue
        params = entry.get("params")
        query = params.get("query") if isinstance(params, dict) else None
        if not isinstance(query, str):
            out.bad(n, "not a query log entry: no params.query", line)
            continue
        ts = _timestamp(entry.get("ts"))
        if ts is None:
            out.bad(n, f"missing or invalid ts {entry.get('ts')!r}", line)
            continue
        group = entry.get("ruleGroup")
        rule = None
        if isinstance(group, dict):
            rule = RuleEvaluation(rule_scope(str(group.get("file") or "")), str(group.get("name") or ""), query)
        out.count(query, ts, start, end, rule)
    return out


class LogfmtError(ValueError):
    """A logfmt line that cannot be read (e.g. a quoted value cut off)."""


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
            "/": "/", "'": "'"}
# One logfmt pair: a key (no space, '=' or quote), then optionally '=' and a quoted or bare value; group 1 is
# the whole pair, so the line is logfmt all the way through when the pairs' lengths add up to the line's.
_PAIR = re.compile(r'(([^ \t="]+)(?:=(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^ \t"]*)))?[ \t]*)', re.DOTALL)


def _unescape(inner: str) -> str:
    """Decode Go escapes (``strconv.Quote``) in the text between the quotes of a logfmt value."""
    if "\\" not in inner:
        return inner
    try:
        return json.loads(f'"{inner}"')  # type: ignore[no-any-return]  # JSON escapes: the common Go subset
    except ValueError:
        pass
    out: list[str] = []
    j, n = 0, len(inner)
    while j < n:
        k = inner.find("\\", j)
        if k < 0:
            out.append(inner[j:])
            break
        out.append(inner[j:k])
        esc = inner[k + 1] if k + 1 < n else ""
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            j = k + 2
        elif esc in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = inner[k + 2:k + 2 + width]
            try:
                if len(digits) != width:
                    raise ValueError(digits)
                out.append(chr(int(digits, 16)))
            except ValueError:
                raise LogfmtError(f"bad escape \\{esc}{digits}") from None
            j = k + 2 + width
        else:
            raise LogfmtError(f"unknown escape \\{esc}")
    return "".join(out)


def parse_logfmt(line: str) -> dict[str, str]:
    """Key/value pairs of a logfmt line; quoted values may hold spaces, ``\\"``, ``\\n``, ``\\uXXXX``.

    A key without ``=`` gets an empty value. Raises ``LogfmtError`` when the line is not logfmt all the way
    through (e.g. a quoted value cut off by truncation).
    """
    text = line.lstrip(" \t")
    pairs = _PAIR.findall(text)
    if sum(len(p[0]) for p in pairs) != len(text):  # a gap: find where, for the message
        pos = 0
        for m in _PAIR.finditer(text):
            if m.start() != pos:
                break
            pos = m.end()
        what = "unterminated quoted value" if text[pos:pos + 1] == '"' else "unexpected text"
        raise LogfmtError(f"{what} at column {pos + 1 + len(line) - len(text)}")
    return {key: _unescape(quoted) if quoted else bare for _, key, quoted, bare in pairs}


def read_mimir_query_stats(lines: Iterable[str | bytes], start: datetime, end: datetime, *,
                           file: str = "query-frontend.log", tenant: str | None = None) -> QueryLogSummary:
    """Count the queries of Mimir query-frontend ``msg="query stats"`` logfmt lines in ``[start, end)``.

    ``tenant`` keeps only that tenant's lines (``user``/``org_id``); other lines are skipped without parsing.
    """
    _check_window(start, end)
    out = QueryLogSummary(file)
    for n, line, raw in _text_lines(lines):
        out.lines += 1
        if line is None:
            out.bad(n, "line is not UTF-8", raw)
            continue
        if "query stats" not in line:  # cheap pre-filter: other log messages
            out.skipped += 1
            continue
        try:
            fields = parse_logfmt(line)
        except LogfmtError as exc:
            out.bad(n, f"not logfmt (truncated?): {exc}", line)
            continue
        if fields.get("msg") != "query stats":
            out.skipped += 1
            continue
        if tenant is not None and fields.get("user", fields.get("org_id")) != tenant:
            out.skipped += 1
            continue
        query = fields.get("param_query")
        if query is None:  # label names/values and series calls are logged too, with param_match[]
            out.skipped += 1
            continue
        ts = _timestamp(fields.get("ts"))
        if ts is None:
            out.bad(n, f"missing or invalid ts {fields.get('ts')!r}", line)
            continue
        if out.count(query, ts, start, end):
            out.statuses[fields.get("status", "")] += 1
    return out


def open_log(path: str | Path) -> Iterator[bytes]:
    """The lines of a log file as bytes (``.gz`` files are decompressed), streamed."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rb") as fh:
        yield from fh
