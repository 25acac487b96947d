"""Usage from query history: Prometheus's query log (JSON lines) and Mimir query-frontend "query stats" lines.

Both are streamed line by line. :func:`iter_prometheus_query_log` and :func:`iter_mimir_query_stats` yield one
:class:`QueryExecution` per query run in the window ``[start, end)`` — its text, origin (an API request or a
rule evaluation), range and step, evaluation time and samples when the line has them — and count everything
else in a :class:`QueryLogSummary`. :func:`read_prometheus_query_log` and :func:`read_mimir_query_stats` reduce
them to counts per distinct query text, so a million lines cost one pass and each distinct expression is
parsed once later.

Lines that are truncated, not JSON/logfmt or lack a query are counted and the first ``MAX_RECORDED_BAD_LINES``
recorded with their line numbers. Prometheus writes rule evaluations to the same log (with ``ruleGroup``):
they are kept apart (``Origin.RULE``), so a rule is not counted again as an ad-hoc query.

Where logs live (:func:`log_sources`, :func:`open_source`): local paths or globs, and ``s3://bucket/key``
objects or globs; a plain path or key also brings its rotated siblings (``query.log.1``, ``query.log.2.gz``,
``query.log-20260501.gz``). gzip is recognised by its magic bytes, whatever the name, and decompressed as it
is read. A missing or unreadable file is recorded in the summary, never raised.
"""

from __future__ import annotations

import fnmatch
import glob
import gzip
import io
import json
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO

from traceo_finops.shapes import S3Client
from traceo_finops.usage.model import ParseError, SourceKind
from traceo_finops.usage.rules import rule_scope

MAX_RECORDED_BAD_LINES = 100
_EXCERPT = 120
_GZIP_MAGIC = b"\x1f\x8b"
# What follows a log's name in its rotated copies: logrotate's numbered (.1, .2.gz) and dated (-20260501.gz).
_ROTATED_SUFFIX = re.compile(r"^(?:\.\d+|-\d{8,10})(?:\.gz)?$|^\.gz$")


class Origin(StrEnum):
    """Who ran a logged query."""

    API = "api"  # an HTTP API request (a dashboard, a user, a tool): Prometheus' httpRequest, every Mimir line
    RULE = "rule"  # a rule group's evaluation (Prometheus' ruleGroup): not a user query


@dataclass(frozen=True)
class RuleEvaluation:
    """A query Prometheus ran for a rule group: attributed to the group's rule with that expression."""

    scope: str  # the rule file's base name, as in rule ids
    group: str
    query: str


@dataclass(frozen=True, slots=True)
class QueryExecution:
    """One logged query run inside the window."""

    query: str
    ts: datetime
    origin: Origin
    range_seconds: float = 0.0  # end - start of a range query; 0 for an instant query
    step_seconds: float = 0.0  # 0 for an instant query
    eval_seconds: float | None = None  # Prometheus stats.timings.evalTotalTime, Mimir query_wall_time_seconds
    samples: int | None = None  # Prometheus stats.samples.totalQueryableSamples, Mimir samples_processed
    rule: RuleEvaluation | None = None


@dataclass
class QueryLogSummary:
    """What a query log holds for one window: executions per distinct query, and how many lines were what."""

    file: str
    queries: Counter[str] = field(default_factory=Counter)  # ad-hoc (API) query text → executions
    rule_evaluations: Counter[RuleEvaluation] = field(default_factory=Counter)
    lines: int = 0
    in_window: int = 0
    outside_window: int = 0
    before_window: int = 0
    after_window: int = 0  # later than the window's end (a later day, or a clock from the future)
    skipped: int = 0  # well-formed lines that are not query executions (other log messages, label/series calls)
    bad_lines: int = 0  # truncated, not JSON/logfmt, or missing the query or timestamp
    without_timing: int = 0  # counted executions whose line lacks the evaluation time (a field missing)
    errors: list[ParseError] = field(default_factory=list)  # the first MAX_RECORDED_BAD_LINES bad lines
    statuses: Counter[str] = field(default_factory=Counter)  # Mimir: status of counted queries
    files: list[str] = field(default_factory=list)  # the files (objects) read
    unreadable_files: int = 0  # missing, unreadable or corrupt (a gzip cut short): recorded in ``errors``

    def bad(self, line_no: int, reason: str, line: str, file: str | None = None) -> None:
        self.bad_lines += 1
        self._record(f"{file or self.file}:{line_no}", line, reason, file)

    def unreadable(self, file: str, reason: str) -> None:
        """A log file (object) that is missing or could not be read to its end."""
        self.unreadable_files += 1
        self._record(file, "", reason, file)

    def _record(self, location: str, line: str, reason: str, file: str | None) -> None:
        if len(self.errors) < MAX_RECORDED_BAD_LINES:
            excerpt = line if len(line) <= _EXCERPT else line[:_EXCERPT] + "…"
            self.errors.append(ParseError(SourceKind.QUERY, file or self.file, location, excerpt, reason))

    def in_time(self, ts: datetime, start: datetime, end: datetime) -> bool:
        """Whether ``ts`` is in ``[start, end)``; lines outside are counted by side."""
        if ts < start:
            self.outside_window += 1
            self.before_window += 1
            return False
        if ts >= end:
            self.outside_window += 1
            self.after_window += 1
            return False
        self.in_window += 1
        return True

    def count(self, query: str, ts: datetime, start: datetime, end: datetime,
              rule: RuleEvaluation | None = None) -> bool:
        if not self.in_time(ts, start, end):
            return False
        self.tally(query, rule)
        return True

    def tally(self, query: str, rule: RuleEvaluation | None = None) -> None:
        if rule is not None:
            self.rule_evaluations[rule] += 1
        else:
            self.queries[query] += 1


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


def _time_param(value: object) -> datetime | None:
    """A query's start/end/time parameter: RFC 3339 or Unix seconds (what the API accepts)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except ValueError:
            return _timestamp(value)
    return None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def _seconds(value: object) -> float | None:
    """A step or timing: a number of seconds, a numeric string or a duration such as ``1m30s``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _mapping(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _shape(start: object, end: object, step: object) -> tuple[float, float]:
    """(range seconds, step seconds) of a logged query; (0, 0) for an instant query or unreadable params."""
    begin, until, every = _time_param(start), _time_param(end), _seconds(step)
    if begin is None or until is None or not every:
        return 0.0, 0.0
    return max(0.0, (until - begin).total_seconds()), every


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


def iter_prometheus_query_log(lines: Iterable[str | bytes], start: datetime, end: datetime,
                              summary: QueryLogSummary) -> Iterator[QueryExecution]:
    """The queries of a Prometheus query log (one JSON object per line) run in ``[start, end)``.

    Every line is counted in ``summary`` (in/outside the window, bad, without timing); nothing is tallied per
    text there (see :func:`read_prometheus_query_log`).
    """
    _check_window(start, end)
    loads = json.loads
    for n, line, raw in _text_lines(lines):
        summary.lines += 1
        if line is None:
            summary.bad(n, "line is not UTF-8", raw)
            continue
        if not line.strip():
            continue
        try:
            entry = loads(line)
        except ValueError as exc:
            summary.bad(n, f"not JSON (truncated?): {exc}", line)
            continue
        if not isinstance(entry, dict):
            summary.bad(n, f"not a query log entry: a JSON {type(entry).__name__}", line)
            continue
        params = entry.get("params")
        query = params.get("query") if isinstance(params, dict) else None
        if not isinstance(query, str) or not isinstance(params, dict):
            summary.bad(n, "not a query log entry: no params.query", line)
            continue
        ts = _timestamp(entry.get("ts"))
        if ts is None:
            summary.bad(n, f"missing or invalid ts {entry.get('ts')!r}", line)
            continue
        if not summary.in_time(ts, start, end):
            continue
        group = entry.get("ruleGroup")
        rule = None
        if isinstance(group, dict):
            rule = RuleEvaluation(rule_scope(str(group.get("file") or "")), str(group.get("name") or ""), query)
        stats = _mapping(entry.get("stats"))
        seconds = _number(_mapping(stats.get("timings")).get("evalTotalTime"))
        if seconds is None:
            summary.without_timing += 1
        queryable = _number(_mapping(stats.get("samples")).get("totalQueryableSamples"))
        range_s, step_s = _shape(params.get("start"), params.get("end"), params.get("step"))
        yield QueryExecution(query, ts, Origin.RULE if rule is not None else Origin.API, range_s, step_s, seconds,
                             None if queryable is None else int(queryable), rule)


def read_prometheus_query_log(lines: Iterable[str | bytes], start: datetime, end: datetime, *,
                              file: str = "query.log") -> QueryLogSummary:
    """Count the queries of a Prometheus query log (one JSON object per line) run in ``[start, end)``."""
    out = QueryLogSummary(file)
    for ex in iter_prometheus_query_log(lines, start, end, out):
        out.tally(ex.query, ex.rule)
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


def iter_mimir_query_stats(lines: Iterable[str | bytes], start: datetime, end: datetime, summary: QueryLogSummary,
                           *, tenant: str | None = None) -> Iterator[QueryExecution]:
    """The queries of Mimir query-frontend ``msg="query stats"`` logfmt lines run in ``[start, end)``.

    ``tenant`` keeps only that tenant's lines (``user``/``org_id``); other lines are skipped without parsing.
    A line without ``query_wall_time_seconds`` still counts as an execution, without timing
    (``summary.without_timing``); a status other than success is tallied in ``summary.statuses``.
    """
    _check_window(start, end)
    for n, line, raw in _text_lines(lines):
        summary.lines += 1
        if line is None:
            summary.bad(n, "line is not UTF-8", raw)
            continue
        if "query stats" not in line:  # cheap pre-filter: other log messages
            summary.skipped += 1
            continue
        try:
            fields = parse_logfmt(line)
        except LogfmtError as exc:
            summary.bad(n, f"not logfmt (truncated?): {exc}", line)
            continue
        if fields.get("msg") != "query stats":
            summary.skipped += 1
            continue
        if tenant is not None and fields.get("user", fields.get("org_id")) != tenant:
            summary.skipped += 1
            continue
        query = fields.get("param_query")
        if query is None:  # label names/values and series calls are logged too, with param_match[]
            summary.skipped += 1
            continue
        ts = _timestamp(fields.get("ts"))
        if ts is None:
            summary.bad(n, f"missing or invalid ts {fields.get('ts')!r}", line)
            continue
        if not summary.in_time(ts, start, end):
            continue
        summary.statuses[fields.get("status", "")] += 1
        seconds = _seconds(fields.get("query_wall_time_seconds"))
        if seconds is None:
            summary.without_timing += 1
        samples = _seconds(fields.get("samples_processed"))
        range_s, step_s = _shape(fields.get("param_start"), fields.get("param_end"), fields.get("param_step"))
        yield QueryExecution(query, ts, Origin.API, range_s, step_s, seconds,
                             None if samples is None else int(samples))


def read_mimir_query_stats(lines: Iterable[str | bytes], start: datetime, end: datetime, *,
                           file: str = "query-frontend.log", tenant: str | None = None) -> QueryLogSummary:
    """Count the queries of Mimir query-frontend ``msg="query stats"`` logfmt lines in ``[start, end)``.

    ``tenant`` keeps only that tenant's lines (``user``/``org_id``); other lines are skipped without parsing.
    """
    out = QueryLogSummary(file)
    for ex in iter_mimir_query_stats(lines, start, end, out, tenant=tenant):
        out.tally(ex.query)
    return out


# -- where logs live ---------------------------------------------------------------------------------------
class _Prepend(io.RawIOBase):
    """A raw stream that first returns ``head`` (bytes already read to sniff the format), then ``rest``."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head, self._rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]  # io's signature takes a buffer
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _decoded(raw: IO[bytes]) -> io.BufferedIOBase:
    """``raw`` as lines of text bytes: gunzipped when it starts with gzip's magic bytes."""
    head = raw.read(2)
    stream = io.BufferedReader(_Prepend(head, raw), buffer_size=1 << 16)
    return gzip.GzipFile(fileobj=stream) if head == _GZIP_MAGIC else stream


def open_log(path: str | Path) -> Iterator[bytes]:
    """The lines of a log file as bytes (gzip recognised by its magic bytes and decompressed), streamed."""
    with open(Path(path), "rb") as fh, _decoded(fh) as lines:
        yield from lines


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def _rotated(name: str, base: str) -> bool:
    return name.startswith(base) and bool(_ROTATED_SUFFIX.match(name[len(base):]))


def log_sources(pattern: str, root: Path | None = None, s3: S3Client | None = None) -> list[str]:
    """The files or ``s3://`` objects a configured log location stands for, sorted.

    A glob (``*``, ``?``, ``[``) matches what it matches; a plain path or key is itself plus its rotated
    siblings. A plain path that does not exist is still returned (reading it records it as missing), a glob
    that matches nothing returns nothing. Relative local paths are taken from ``root``.
    """
    magic = glob.has_magic(pattern)
    if is_s3(pattern):
        if s3 is None:
            raise ValueError(f"{pattern}: an s3:// log location needs an S3 client")
        bucket, key = _split_s3(pattern)
        cut = min((key.index(c) for c in "*?[" if c in key), default=len(key))
        prefix = key[:cut] if magic else key
        keys: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [obj["Key"] for obj in page.get("Contents") or []]
        found = [k for k in keys if (fnmatch.fnmatchcase(k, key) if magic else k == key or _rotated(k, key))]
        if not magic and key not in found:
            found.append(key)  # reading it says it is missing
        return sorted(f"s3://{bucket}/{k}" for k in found)
    full = pattern if Path(pattern).is_absolute() or root is None else str(root / pattern)
    if magic:
        return sorted(glob.glob(full))
    siblings = [p for p in glob.glob(glob.escape(full) + "*") if _rotated(p, full)]
    return sorted({full, *siblings})


def open_source(uri: str, s3: S3Client | None = None) -> Iterator[bytes]:
    """The lines of one log file or ``s3://`` object, streamed (gzip decompressed on the fly).

    Raises ``OSError`` when it cannot be opened; see :func:`read_sources` for the recorded variant.
    """
    if not is_s3(uri):
        yield from open_log(uri)
        return
    if s3 is None:
        raise ValueError(f"{uri}: an s3:// log location needs an S3 client")
    bucket, key = _split_s3(uri)
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    except Exception as exc:  # botocore's ClientError (NoSuchKey, AccessDenied) and connection errors
        raise OSError(f"cannot read {uri}: {exc}") from exc
    try:
        with _decoded(body) as lines:
            yield from lines
    finally:
        body.close()


def read_logs(uris: Iterable[str], summary: QueryLogSummary,
              read: Callable[[Iterable[bytes], QueryLogSummary], Iterator[QueryExecution]],
              s3: S3Client | None = None) -> Iterator[QueryExecution]:
    """The executions ``read`` finds in every log file/object in turn (``summary.file`` names the one being
    read, so bad lines are located in it). One that is missing, unreadable or cut short (a corrupt gzip) is
    recorded in ``summary`` (``unreadable_files``, ``errors``); what it held up to the fault counts, and the
    other files are still read."""
    for uri in uris:
        summary.file = uri
        summary.files.append(uri)
        try:
            yield from read(open_source(uri, s3), summary)
        except FileNotFoundError:
            summary.unreadable(uri, "log file does not exist")
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            summary.unreadable(uri, f"log file cannot be read: {exc}")
