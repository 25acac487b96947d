"""One way to run many queries against one Prometheus server or Mimir tenant, with the same rules everywhere.

Every workflow sends its queries through a :class:`QueryRunner`:

- **Bounded concurrency**: at most ``concurrency`` requests at a time, each worker thread with its own
  :class:`PrometheusClient` (a client is not thread-safe). The clients' own HTTP retries are off: every
  retry is decided here, so a query the server timed out on is split instead of being sent again as is.
- **What a failure means** (:func:`classify`):

  * *split*: the server timed out on the query (HTTP 504; a 5xx whose error says it timed out, which is how
    Prometheus answers past ``--query.timeout``: 503 ``errorType: timeout``; a read timeout) or refused it
    as too large (HTTP 422: Prometheus' ``--query.max-samples``, Mimir's per-query limits). A query over
    less data may pass, so :meth:`QueryRunner.split` asks for each half, and so on. A piece that cannot be
    split further is retried after a timeout, never after a refusal (refused once, refused again).
  * *retry*: 429 and other 5xx, a dropped connection, a garbled answer. Retried ``spec.retries`` times,
    waiting ``spec.backoff_factor`` × 2ⁿ seconds, or longer when ``Retry-After`` asks (at most 60 s). A 503
    that outlasts its retries is overload: a piece that can be split is split.
  * *unreachable*: no connection at all (refused, DNS lookup failed, connect timed out). Not a reason to
    split: smaller queries will not find the server either. Retried for a few seconds
    (``UNREACHABLE_SECONDS``: a restarting server is back by then), then the runner gives the source up:
    this and every later query fail at once with one plain error naming the source and URL, and the
    Airflow task's own retry tries again minutes later.
  * *fatal*: 400, 401/403, 404…: the same request would fail the same way; raised at once.

``stats`` counts the requests sent, the splits, the retries and the timeouts and refusals seen.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Self, TypeVar

from traceo_finops.prometheus.client import MAX_RETRY_AFTER, PrometheusClient
from traceo_finops.prometheus.errors import (
    PrometheusAuthError,
    PrometheusBadResponse,
    PrometheusError,
    PrometheusHTTPError,
    PrometheusQueryTooLarge,
    PrometheusUnavailable,
    PrometheusUnreachable,
)
from traceo_finops.prometheus.spec import SourceSpec

log = logging.getLogger(__name__)

T = TypeVar("T")
Piece = TypeVar("Piece")
Item = TypeVar("Item")

UNREACHABLE_SECONDS = 5.0  # waits between connection attempts add up to at most this: 0.5 + 1 + 2 s, 4 attempts
FIRST_UNREACHABLE_WAIT = 0.5
RETRY_STATUSES = (429, 500, 502, 503)  # transient answers; 504 is a timeout (split)
_TIMEOUT_WORDS = ("timeout", "timed out", "deadline exceeded")
_TOO_LARGE_WORDS = ("too many samples",)  # Prometheus' --query.max-samples, whatever status a proxy turns it into


class Verdict(StrEnum):
    """What to do about a failed request (see the module docstring)."""

    TIMEOUT = "timeout"
    REFUSED = "refused"
    RETRY = "retry"
    UNREACHABLE = "unreachable"
    FATAL = "fatal"


def classify(exc: PrometheusError) -> Verdict:
    """The one rule for every workflow: split (``timeout``, ``refused``), ``retry``, ``unreachable`` or ``fatal``."""
    text = str(exc).lower()
    if isinstance(exc, PrometheusAuthError | PrometheusQueryTooLarge):
        return Verdict.FATAL  # a wrong tenant stays wrong; a piece already split to the end stays too large
    if isinstance(exc, PrometheusUnreachable):
        return Verdict.UNREACHABLE
    if isinstance(exc, PrometheusUnavailable):
        return Verdict.TIMEOUT if "timed out" in text else Verdict.RETRY
    if isinstance(exc, PrometheusHTTPError):
        status = exc.status or 0
        if status == 422 or any(w in text for w in _TOO_LARGE_WORDS):
            return Verdict.REFUSED
        if status == 504 or (status in (500, 502, 503) and any(w in text for w in _TIMEOUT_WORDS)):
            return Verdict.TIMEOUT
        return Verdict.RETRY if status in RETRY_STATUSES else Verdict.FATAL
    if isinstance(exc, PrometheusBadResponse):
        return Verdict.RETRY
    return Verdict.FATAL


@dataclass
class RunStats:
    """Requests sent, pieces split, retries, and answers that were timeouts or refusals (thread-safe)."""

    queries: int = 0
    splits: int = 0
    retries: int = 0
    timeouts: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        return {"queries": self.queries, "splits": self.splits, "retries": self.retries,
                "timeouts": self.timeouts, "refused": self.refused}


@dataclass
class _Attempts:
    """Retries used so far by one request (or one piece of a split)."""

    retries: int = 0
    unreachable: int = 0
    unreachable_waited: float = 0.0
    started: float = field(default_factory=time.monotonic)


class QueryRunner:
    """Requests to one source, ``concurrency`` at a time, retried and split by the rules of :func:`classify`.

    ``retries`` defaults to ``spec.retries``; ``sleep`` is there for tests. Use as a context manager (or call
    :meth:`close`): it owns its clients and worker threads.
    """

    def __init__(self, spec: SourceSpec, *, concurrency: int = 2, retries: int | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.spec = spec.model_copy(update={"retries": 0})  # every retry is decided here, none in urllib3
        self.concurrency = max(1, concurrency)
        self.retries = spec.retries if retries is None else retries
        self.stats = RunStats()
        self._sleep = sleep
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[PrometheusClient] = []
        self._pool: ThreadPoolExecutor | None = None
        self._gone: PrometheusUnreachable | None = None  # set when the source is given up on

    def __repr__(self) -> str:
        return f"QueryRunner({self.spec.name!r}, concurrency={self.concurrency}, retries={self.retries})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        with self._lock:
            for c in self._clients:
                c.close()
            self._clients.clear()

    def client(self) -> PrometheusClient:
        """This thread's client (created on first use)."""
        mine: PrometheusClient | None = getattr(self._local, "client", None)
        if mine is None:
            mine = self._local.client = PrometheusClient(self.spec)
            with self._lock:
                self._clients.append(mine)
        return mine

    # ---- one request --------------------------------------------------------------------------------------

    def call(self, fn: Callable[[PrometheusClient], T]) -> T:
        """``fn(client)`` (one request), retried by the rules; never split. Raises the last error."""
        attempts = _Attempts()
        while True:
            try:
                return self._once(fn)
            except PrometheusError as exc:
                self._sleep(self._wait_or_raise(exc, self._seen(exc), attempts))

    def split(self, fn: Callable[[PrometheusClient, Piece], T], piece: Piece,
              halves: Callable[[Piece], tuple[Piece, Piece] | None], join: Callable[[T, T], T],
              describe: Callable[[Piece], str] = str) -> T:
        """``fn(client, piece)``; when the server times out on it or refuses it as too large, the same for each
        of ``halves(piece)`` (None: it cannot be split), recursively, the answers combined with ``join``.

        Raises :class:`PrometheusQueryTooLarge` for a piece that cannot be split and still fails that way.
        """
        attempts = _Attempts()
        while True:
            try:
                return self._once(lambda c: fn(c, piece))
            except PrometheusError as exc:
                parts = self._halves_or_wait(exc, piece, halves, describe, attempts)
            if parts is not None:
                first = self.split(fn, parts[0], halves, join, describe)
                return join(first, self.split(fn, parts[1], halves, join, describe))

    # ---- many requests ------------------------------------------------------------------------------------

    def map(self, fn: Callable[[Item], T], items: Iterable[Item]) -> list[T]:
        """``fn(item)`` for every item, ``concurrency`` at a time; results in order. The first failure is raised
        and the items not started yet are dropped. (``fn`` sends its requests through :meth:`call` or
        :meth:`split`.) Called from one of the runner's own workers, it runs the items in that worker."""
        todo = list(items)
        if self.concurrency == 1 or len(todo) < 2 or getattr(self._local, "worker", False):
            return [fn(item) for item in todo]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="prometheus")
        futures = [self._pool.submit(self._work, fn, item) for item in todo]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f.exception() for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            for f in futures:
                f.cancel()
            raise failed
        return [f.result() for f in futures]

    def call_each(self, fn: Callable[[PrometheusClient, Item], T], items: Iterable[Item]) -> list[T]:
        """``fn(client, item)`` for every item, one :meth:`call` each, ``concurrency`` at a time; in order."""
        return self.map(lambda item: self.call(lambda c: fn(c, item)), items)

    def run_all(self, jobs: Mapping[str, Callable[[], T]]) -> dict[str, T]:
        """Named jobs through :meth:`map`: ``{name: job()}``."""
        names = list(jobs)
        return dict(zip(names, self.map(lambda name: jobs[name](), names), strict=True))

    # ---- plumbing -----------------------------------------------------------------------------------------

    def _work(self, fn: Callable[[Item], T], item: Item) -> T:
        self._local.worker = True
        return fn(item)

    def _once(self, fn: Callable[[PrometheusClient], T]) -> T:
        if self._gone is not None:  # given up on: no more connection attempts
            raise self._gone_error()
        self.stats.add(queries=1)
        return fn(self.client())

    def _halves_or_wait(self, exc: PrometheusError, piece: Piece, halves: Callable[[Piece], tuple[Piece, Piece] | None],
                        describe: Callable[[Piece], str], attempts: _Attempts) -> tuple[Piece, Piece] | None:
        """The halves to ask for instead of ``piece``, or None after waiting for the next attempt; raises when
        there is neither."""
        verdict = self._seen(exc)
        overloaded = verdict in (Verdict.TIMEOUT, Verdict.REFUSED) or (
            verdict is Verdict.RETRY and exc.status == 503 and attempts.retries >= self.retries)
        parts = halves(piece) if overloaded else None
        if parts is not None:
            self.stats.add(splits=1)
            log.info("%s: %s; splitting it into %s and %s", describe(piece), _short(exc), describe(parts[0]),
                     describe(parts[1]))
            return parts
        if verdict is Verdict.REFUSED or (verdict is Verdict.TIMEOUT and attempts.retries >= self.retries):
            doing = "refusing as too large" if verdict is Verdict.REFUSED else "timing out on"
            raise PrometheusQueryTooLarge(
                f"{describe(piece)}: the server keeps {doing} a query that cannot be split further: {exc}",
                source=exc.source, url=exc.url, status=exc.status) from exc
        self._sleep(self._wait_or_raise(exc, verdict, attempts))
        return None

    def _seen(self, exc: PrometheusError) -> Verdict:
        if self._gone is not None and isinstance(exc, PrometheusUnreachable):
            raise self._gone_error() from exc  # the source was given up on (by this request or another one)
        verdict = classify(exc)
        self.stats.add(timeouts=int(verdict is Verdict.TIMEOUT), refused=int(verdict is Verdict.REFUSED))
        return verdict

    def _wait_or_raise(self, exc: PrometheusError, verdict: Verdict, attempts: _Attempts) -> float:
        """Seconds to wait before the next attempt; raises ``exc`` (or the give-up error) when there is none."""
        if verdict is Verdict.UNREACHABLE:
            return self._unreachable_wait(exc, attempts)
        if verdict in (Verdict.FATAL, Verdict.REFUSED) or attempts.retries >= self.retries:
            raise exc
        attempts.retries += 1
        self.stats.add(retries=1)
        seconds = min(self.spec.backoff_factor * 2.0 ** (attempts.retries - 1), MAX_RETRY_AFTER)
        if exc.retry_after is not None:
            seconds = max(seconds, exc.retry_after)
        log.info("source %r: retry %d/%d in %.1f s after: %s", self.spec.name, attempts.retries, self.retries,
                 seconds, _short(exc))
        return seconds

    def _unreachable_wait(self, exc: PrometheusError, attempts: _Attempts) -> float:
        why = exc.reason if isinstance(exc, PrometheusUnreachable) else ""
        attempts.unreachable += 1
        seconds = FIRST_UNREACHABLE_WAIT * 2.0 ** (attempts.unreachable - 1)
        if self._gone is None and attempts.unreachable_waited + seconds <= UNREACHABLE_SECONDS:
            attempts.unreachable_waited += seconds
            self.stats.add(retries=1)
            log.info("source %r: no connection (%s); trying again in %.1f s", self.spec.name,
                     why or _short(exc), seconds)
            return seconds
        with self._lock:
            if self._gone is None:
                reason = why or "no connection"
                self._gone = PrometheusUnreachable(
                    f"source {self.spec.name!r}: cannot connect to {exc.url or self.spec.api_url}: {reason} "
                    f"({attempts.unreachable} attempts in {time.monotonic() - attempts.started:.1f} s). Is the "
                    "server up, and are the connection's host and port right? Giving up on this source for now; "
                    "the task's retry will try again later.", source=self.spec.name, url=exc.url, reason=reason)
                log.warning("%s", self._gone)
        raise self._gone_error() from exc

    def _gone_error(self) -> PrometheusUnreachable:
        """A fresh copy of the give-up error (one exception object must not be raised in several threads)."""
        gone = self._gone
        assert gone is not None
        return PrometheusUnreachable(str(gone), source=gone.source, url=gone.url, reason=gone.reason)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 160 else text[:157] + "…"
