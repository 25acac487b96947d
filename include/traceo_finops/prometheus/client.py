"""HTTP client for one Prometheus server or Mimir tenant.

PromQL goes through prometheus-api-client's ``PrometheusConnect``; the endpoints it lacks (status,
rules, labels, Mimir ruler, cardinality and user stats) use the same ``requests`` session. So every
call shares the headers (tenant), basic auth, TLS verification, timeout, the urllib3 retry policy
(429/5xx and connect/read errors, with backoff and Retry-After) and the one log line per request.
The workflows send their queries through :class:`~traceo_finops.prometheus.runner.QueryRunner`, which
switches that retry policy off and applies its own rules (split, retry, give up on a dead server).

Paths: Prometheus endpoints hang off ``spec.api_url`` (for Mimir ``…/prometheus``, also when the
spec's ``base_url`` is the bare Mimir root); so does Mimir's ruler config API
(``<prefix>/config/v1/rules``) and the cardinality API. ``/api/v1/user_stats`` and ``/config`` hang
off ``spec.root_url`` (``api_url`` without its ``/prometheus`` end).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from time import monotonic
from typing import NoReturn, TypeVar
from urllib.parse import quote as urlquote
from urllib.parse import urlsplit

import requests
import yaml
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    InvalidHeader,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
)
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from traceo_finops.prometheus.errors import (
    PrometheusAuthError,
    PrometheusBadResponse,
    PrometheusError,
    PrometheusHTTPError,
    PrometheusUnavailable,
    PrometheusUnreachable,
)
from traceo_finops.prometheus.spec import SourceSpec
from traceo_finops.shapes import Json

log = logging.getLogger(__name__)

RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_RETRY_AFTER = 60.0  # seconds: a Retry-After of an hour must not park a worker
CARDINALITY_CHUNK = 100  # Mimir's default cap on label_names[] per label_values request
EXCERPT = 200  # characters of a body quoted in an error message
_SENSITIVE_HEADER_WORDS = ("auth", "token", "key", "secret", "cookie", "password")

Instant = datetime | float | str
# A query parameter as requests sends it (a list repeats the key: ``label_names[]=a&label_names[]=b``).
Param = str | int | float | Sequence[str] | None
T = TypeVar("T")


class _Retry(Retry):
    """urllib3 ``Retry`` that waits at most ``MAX_RETRY_AFTER`` seconds on a Retry-After header."""

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        after = super().get_retry_after(response)
        return None if after is None else min(after, MAX_RETRY_AFTER)


def retry_policy(spec: SourceSpec) -> Retry:
    """429/5xx and connect/read failures retried ``spec.retries`` times; other 4xx answered at once."""
    n = spec.retries
    return _Retry(
        total=n, connect=n, read=n, status=n, backoff_factor=spec.backoff_factor,
        status_forcelist=RETRY_STATUSES, respect_retry_after_header=True,
        raise_on_status=False,  # hand back the last answer so its status and body reach the message
    )


class PrometheusClient:
    """Prometheus HTTP API (and Mimir extensions) for one :class:`SourceSpec`.

    Not thread-safe (one ``requests`` session, the last answer kept for error messages): use one
    client per thread. Results are the decoded JSON (plain dicts/lists), unmodified unless noted.
    """

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self._last: requests.Response | None = None  # the hook's latest answer, for error messages
        session = requests.Session()
        session.verify = spec.verify
        session.headers.update(spec.headers)
        if spec.tenant:
            session.headers["X-Scope-OrgID"] = spec.tenant
        password = spec.password.get_secret_value() if spec.password else ""
        if spec.login or password:
            session.auth = (spec.login or "", password)
        retry = retry_policy(spec)
        adapter = HTTPAdapter(max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.hooks["response"].append(self._on_response)
        self._session = session
        # prometheus-api-client annotates ``timeout`` as int; it hands it to requests, which takes seconds as a float.
        self._prom = PrometheusConnect(url=spec.api_url, session=session, retry=retry,
                                       timeout=spec.timeout)  # type: ignore[arg-type]
        self._secrets = _secrets(spec.login or "", password, spec.headers)

    def __repr__(self) -> str:
        return f"PrometheusClient({self.spec!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- PromQL (PrometheusConnect) -------------------------------------------------------------

    def query(self, promql: str, time: Instant | None = None) -> list[dict[str, Json]]:
        """Instant query: ``data.result``. A scalar/string answer becomes ``[{"metric": {}, "value": …}]``."""
        params: dict[str, float | str] = {} if time is None else {"time": _instant(time)}
        result = self._promql("/api/v1/query", lambda: self._prom.custom_query(promql, params=params))
        if result and not isinstance(result[0], dict):  # scalar/string: [ts, "value"]
            return [{"metric": {}, "value": result}]
        return result

    def query_range(self, promql: str, start: datetime | float, end: datetime | float,
                    step: str | float | timedelta) -> list[dict[str, Json]]:
        """Range query: ``data.result`` (matrix, ``values`` per series); start/end to whole seconds."""
        begin, until = _as_datetime(start), _as_datetime(end)
        step_param = str(step.total_seconds() if isinstance(step, timedelta) else step)
        return self._promql("/api/v1/query_range",
                            lambda: self._prom.custom_query_range(promql, begin, until, step_param))

    def series_count(self, selector: str) -> int:
        """How many series ``selector`` matches now (PromQL ``count``); 0 when none."""
        result = self.query(f"count({selector})")
        return sample_int(result[0]) if result else 0

    # ---- Prometheus API endpoints PrometheusConnect lacks ---------------------------------------

    def tsdb_status(self, limit: int | None = None) -> dict[str, Json]:
        """``/api/v1/status/tsdb`` data: headStats and top lists (always top 10 before Prometheus 2.44)."""
        params = None if limit is None else {"limit": limit}
        return self._data("/api/v1/status/tsdb", params, keys=("headStats",))

    def flags(self) -> dict[str, str]:
        """``/api/v1/status/flags``: every command-line flag, values as strings."""
        return self._data("/api/v1/status/flags")

    def config_yaml(self) -> str:
        """``/api/v1/status/config``: the loaded configuration as YAML text."""
        return self._field("/api/v1/status/config", self._data("/api/v1/status/config", keys=("yaml",)), "yaml", str)

    def buildinfo(self) -> dict[str, Json]:
        return self._data("/api/v1/status/buildinfo", keys=("version",))

    def runtimeinfo(self) -> dict[str, Json]:
        return self._data("/api/v1/status/runtimeinfo")

    def rules(self, rule_type: str | None = None) -> list[dict[str, Json]]:
        """``/api/v1/rules`` groups (with their rules, queries, health); ``rule_type`` record|alert."""
        params = {"type": rule_type} if rule_type else None
        return self._field("/api/v1/rules", self._data("/api/v1/rules", params, keys=("groups",)), "groups", list)

    def labels(self, match: str | None = None, start: datetime | float | None = None,
               end: datetime | float | None = None) -> list[str]:
        """``/api/v1/labels``: label names, optionally of the series matching ``match`` in ``[start, end]``.

        Without a range Prometheus answers from its whole TSDB and Mimir from its default range."""
        return self._data_list("/api/v1/labels", _optional(**{"match[]": match}, **_range(start, end)))

    def series(self, match: str, start: datetime | float, end: datetime | float) -> list[dict[str, str]]:
        """``/api/v1/series``: the label sets of the series ``match`` selects between ``start`` and ``end``.

        Served from the index alone (no sample is decoded), so listing 14 days of series costs a fraction of
        any PromQL over the same range."""
        params: dict[str, Param] = {"match[]": match, "start": _as_datetime(start).timestamp(),
                                    "end": _as_datetime(end).timestamp()}
        return self._data_list("/api/v1/series", params)

    def label_values(self, label: str, match: str | None = None, start: datetime | float | None = None,
                     end: datetime | float | None = None) -> list[str]:
        """``/api/v1/label/<label>/values``, optionally of the series matching ``match`` in ``[start, end]``."""
        path = f"/api/v1/label/{urlquote(label, safe='')}/values"
        return self._data_list(path, _optional(**{"match[]": match}, **_range(start, end)))

    # ---- Grafana Mimir ----------------------------------------------------------------------------

    def mimir_ruler_rules(self) -> dict[str, list[dict[str, Json]]]:
        """Ruler config API ``<prefix>/config/v1/rules``: namespace → rule groups; ``{}`` when none."""
        self._need_mimir("the ruler config API")
        url = self.spec.api_url + "/config/v1/rules"
        resp = self._get(url, allow=(404,))
        if resp.status_code == 404:  # Mimir says 404 "no rule groups found" for a tenant without rules
            if resp.text.strip() == "no rule groups found":
                return {}
            self._raise_status(resp, url)
        return self._yaml_mapping(resp, url)

    def cardinality_label_names(self, selector: str | None = None, count_method: str = "inmemory",
                                limit: int = 20) -> dict[str, Json]:
        """``/api/v1/cardinality/label_names``: ``{label_values_count_total, label_names_count,
        cardinality: [{label_name, label_values_count}]}`` (limit ≤ 500, checked by Mimir)."""
        self._need_mimir("the cardinality API")
        params = {"count_method": count_method, "limit": limit, **_optional(selector=selector)}
        return self._data("/api/v1/cardinality/label_names", params, envelope=False,
                          keys=("label_values_count_total", "label_names_count", "cardinality"))

    def cardinality_label_values(self, label_names: Sequence[str], selector: str | None = None,
                                 count_method: str = "inmemory", limit: int = 20,
                                 chunk_size: int = CARDINALITY_CHUNK) -> dict[str, Json]:
        """``/api/v1/cardinality/label_values`` for any number of labels, ``chunk_size`` per request.

        Merged answer: ``series_count_total`` (series matching ``selector``, the same in every chunk:
        the largest is kept) and ``labels`` ordered as Mimir orders them (series_count desc, name asc).
        """
        self._need_mimir("the cardinality API")
        names = list(dict.fromkeys([label_names] if isinstance(label_names, str) else label_names))
        if not names:
            raise ValueError("cardinality_label_values needs at least one label name")
        total = 0
        labels: list[dict[str, Json]] = []
        for i in range(0, len(names), chunk_size):
            params = {"label_names[]": names[i:i + chunk_size], "count_method": count_method, "limit": limit,
                      **_optional(selector=selector)}
            body = self._data("/api/v1/cardinality/label_values", params, envelope=False,
                              keys=("series_count_total", "labels"))
            total = max(total, body["series_count_total"])
            labels.extend(body["labels"])
        labels.sort(key=lambda item: (-item.get("series_count", 0), item.get("label_name", "")))
        return {"series_count_total": total, "labels": labels}

    def cardinality_active_series(self, selector: str) -> list[dict[str, str]]:
        """``/api/v1/cardinality/active_series``: label sets of the active series matching ``selector``."""
        self._need_mimir("the cardinality API")
        if not selector:
            raise ValueError("cardinality_active_series needs a selector (Mimir requires one)")
        path = "/api/v1/cardinality/active_series"
        return self._field(path, self._data(path, {"selector": selector}, envelope=False, keys=("data",)), "data", list)

    def mimir_user_stats(self) -> dict[str, Json]:
        """``<root>/api/v1/user_stats``: the tenant's numSeries and ingestion rates."""
        self._need_mimir("user stats")
        return self._data("/api/v1/user_stats", envelope=False, keys=("numSeries",), root=True)

    def mimir_config(self, mode: str | None = "diff") -> dict[str, Json]:
        """``<root>/config`` as a mapping; ``mode="diff"`` keeps only the non-default settings."""
        self._need_mimir("the config endpoint")
        url = self.spec.root_url + "/config"
        return self._yaml_mapping(self._get(url, {"mode": mode} if mode else None), url)

    # ---- plumbing -------------------------------------------------------------------------------

    def _on_response(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        """Session hook: remember the answer and log one line per request (no query string, no secrets)."""
        self._last = response
        retries = _retries_used(response)
        level = logging.DEBUG if response.ok and not retries else logging.INFO
        log.log(level, "source %r: %s %s -> HTTP %d in %.0f ms (%d retries)", self.spec.name,
                response.request.method, _public(response.url), response.status_code,
                response.elapsed.total_seconds() * 1000, retries)

    def _promql(self, path: str, call: Callable[[], Json]) -> list[Json]:
        """Run a PrometheusConnect call (it answers ``data.result``) and turn its failures into this module's
        exceptions."""
        url = self.spec.api_url + path
        self._last = None
        started = monotonic()
        try:
            result = call()
        except PrometheusApiClientException:  # non-200; the hook kept the answer
            self._raise_status(self._last, url)
        except (requests.exceptions.JSONDecodeError, KeyError, TypeError):
            self._decode(self._last, url, envelope=True)  # raises the precise PrometheusBadResponse
            self._bad(url, f"answered without data.result: {self._excerpt(self._last)}")
        except requests.RequestException as exc:
            self._raise_network(url, exc, started)
        if not isinstance(result, list):
            self._bad(url, f"answered a data.result that is not a list: {self._excerpt(self._last)}")
        return result

    def _get(self, url: str, params: Mapping[str, Param] | None = None, *,
             allow: Iterable[int] = ()) -> requests.Response:
        self._last = None
        started = monotonic()
        try:
            resp = self._session.get(url, params=params, timeout=self.spec.timeout)
        except requests.RequestException as exc:
            self._raise_network(url, exc, started)
        if not resp.ok and resp.status_code not in allow:
            self._raise_status(resp, url)
        return resp

    def _data(self, path: str, params: Mapping[str, Param] | None = None, *, keys: Sequence[str] = (),
              envelope: bool = True, root: bool = False) -> dict[str, Json]:
        """GET a JSON endpoint that answers an object: the ``data`` of a Prometheus envelope, or the bare body
        (Mimir)."""
        url = (self.spec.root_url if root else self.spec.api_url) + path
        resp = self._get(url, params)
        body = self._decode(resp, url, envelope)
        missing = [k for k in keys if not isinstance(body, dict) or k not in body]
        if missing:
            self._bad(url, f"answer lacks {', '.join(missing)}: {self._excerpt(resp)}")
        if not isinstance(body, dict):
            self._bad(url, f"answered {type(body).__name__} where an object was expected: {self._excerpt(resp)}")
        return body

    def _data_list(self, path: str, params: Mapping[str, Param] | None = None) -> list[Json]:
        """GET a Prometheus endpoint whose ``data`` is a list (label names or values, series)."""
        url = self.spec.api_url + path
        resp = self._get(url, params)
        body = self._decode(resp, url, envelope=True)
        if not isinstance(body, list):
            self._bad(url, f"answered {type(body).__name__} where a list was expected: {self._excerpt(resp)}")
        return body

    def _field(self, path: str, body: dict[str, Json], key: str, kind: type[T]) -> T:
        """``body[key]`` (present: ``_data`` checked), which must be a ``kind``."""
        value = body[key]
        if not isinstance(value, kind):
            self._bad(self.spec.api_url + path, f"answered {key}={_shorten(value)} where a {kind.__name__} "
                                                "was expected")
        return value

    def _decode(self, resp: requests.Response | None, url: str, envelope: bool) -> Json:
        if resp is None:
            self._bad(url, "gave no usable answer")
        try:
            body = resp.json()
        except ValueError:
            ctype = resp.headers.get("Content-Type", "no content type")
            self._bad(url, f"answered HTTP {resp.status_code} with a non-JSON body ({ctype}): "
                           f"{self._excerpt(resp)}", resp.status_code)
        if not envelope:
            return body
        if not isinstance(body, dict) or "status" not in body:
            self._bad(url, f"answered without a status/data envelope: {self._excerpt(resp)}")
        if body["status"] != "success":
            self._bad(url, f"answered status={body['status']!r}: {_envelope_error(body)}", resp.status_code)
        if "data" not in body:
            self._bad(url, f"answer lacks data: {self._excerpt(resp)}")
        return body["data"]

    def _yaml_mapping(self, resp: requests.Response, url: str) -> dict[str, Json]:
        try:
            doc = yaml.safe_load(resp.text)
        except yaml.YAMLError as exc:
            self._bad(url, f"answered with invalid YAML ({exc.__class__.__name__}): {self._excerpt(resp)}")
        if doc is None:
            return {}
        if not isinstance(doc, dict):
            self._bad(url, f"answered YAML that is not a mapping: {self._excerpt(resp)}")
        return doc

    def _raise_status(self, resp: requests.Response | None, url: str) -> NoReturn:
        if resp is None:
            self._fail(PrometheusError, url, "failed without an answer")
        status, retries = resp.status_code, _retries_used(resp)
        problem = f"answered HTTP {status}" + (f" after {retries} retries" if retries else "")
        try:
            detail = _envelope_error(resp.json())
        except ValueError:
            detail = self._excerpt(resp)
        if status in (401, 403):
            who = f"tenant {self.spec.tenant!r}" if self.spec.tenant else "these credentials"
            verdict = "not authenticated" if status == 401 else "not allowed"
            self._fail(PrometheusAuthError, url, f"{problem} ({verdict} for {who}; check the connection's "
                                                 f"login/password and tenant): {detail}", status)
        self._fail(PrometheusHTTPError, url, f"{problem}: {detail}", status,
                   retry_after=_retry_after(resp.headers.get("Retry-After")))

    def _raise_network(self, url: str, exc: requests.RequestException, started: float) -> NoReturn:
        inner: object = exc.args[0] if exc.args else exc
        retried = isinstance(inner, MaxRetryError)  # urllib3 used up the retries
        reason = inner.reason if isinstance(inner, MaxRetryError) and inner.reason is not None else inner
        # urllib3's NewConnectionError (refused, unreachable) subclasses its ConnectTimeoutError.
        timed_out = isinstance(reason, Urllib3Timeout | requests.Timeout | TimeoutError) \
            and not isinstance(reason, NewConnectionError)
        after = f" after {self.spec.retries} retries" if retried and self.spec.retries else ""
        what = f"timed out (timeout {self.spec.timeout:g}s)" if timed_out else "got no answer"
        log.info("source %r: GET %s -> %s in %.0f ms", self.spec.name, _public(url), what,
                 (monotonic() - started) * 1000)
        unreachable = _connect_failure(reason)
        if unreachable is not None:
            raise PrometheusUnreachable(self._message(url, f"{what}{after}: {reason}"), source=self.spec.name,
                                        url=_public(url), reason=unreachable) from exc
        cls = PrometheusUnavailable if isinstance(
            exc, requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError
        ) else PrometheusError
        raise self._error(cls, url, f"{what}{after}: {reason}") from exc

    def _need_mimir(self, what: str) -> None:
        if self.spec.flavor != "mimir":
            raise PrometheusError(f"source {self.spec.name!r}: {what} exists only on Grafana Mimir, but this "
                                  f"source has flavor {self.spec.flavor!r}", source=self.spec.name)

    def _excerpt(self, resp: requests.Response | None) -> str:
        text = " ".join((resp.text if resp is not None else "").split())
        return (text[:EXCERPT] + "…" if len(text) > EXCERPT else text) or "(empty body)"

    def _message(self, url: str, problem: str) -> str:
        message = f"source {self.spec.name!r}: GET {_public(url)} {problem}"
        for secret in self._secrets:  # a proxy may echo the Authorization header into its error body
            message = message.replace(secret, "***")
        return message

    def _error(self, cls: type[PrometheusError], url: str, problem: str, status: int | None = None,
               retry_after: float | None = None) -> PrometheusError:
        return cls(self._message(url, problem), source=self.spec.name, url=_public(url), status=status,
                   retry_after=retry_after)

    def _fail(self, cls: type[PrometheusError], url: str, problem: str,
              status: int | None = None, retry_after: float | None = None) -> NoReturn:
        raise self._error(cls, url, problem, status, retry_after) from None

    def _bad(self, url: str, problem: str, status: int | None = None) -> NoReturn:
        self._fail(PrometheusBadResponse, url, problem, status)


def _secrets(login: str, password: str, headers: dict[str, str]) -> list[str]:
    found = [v for k, v in headers.items() if any(w in k.lower() for w in _SENSITIVE_HEADER_WORDS)]
    if password:
        found.append(password)
        for encoding in ("latin1", "utf-8"):  # requests encodes basic auth as latin1 when it can
            with contextlib.suppress(UnicodeEncodeError):
                found.append(base64.b64encode(f"{login}:{password}".encode(encoding)).decode())
    return [s for s in found if s]


def _public(url: str) -> str:
    """``url`` without user info, query string or fragment: safe for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def sample_value(sample: dict[str, Json]) -> float | None:
    """The value of one sample of an instant-query answer; None when it is NaN, ±Inf or unreadable."""
    try:
        value = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def sample_int(sample: dict[str, Json]) -> int:
    """The value of one sample that is a count (``count(...)``), as an int; raises on a malformed sample."""
    return int(float(sample["value"][1]))


def _connect_failure(reason: object) -> str | None:
    """Why no connection could be made, in a few words; None when the failure came after connecting."""
    if isinstance(reason, NameResolutionError):
        return "DNS lookup failed"
    if isinstance(reason, NewConnectionError):  # refused, no route to host, network unreachable
        cause = reason.__cause__ or reason.__context__
        return str(getattr(cause, "strerror", None) or "no connection").lower()
    if isinstance(reason, ConnectTimeoutError):
        return "connect timed out"
    return None


def _retry_after(header: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header (seconds or an HTTP date), capped at ``MAX_RETRY_AFTER``."""
    if not header:
        return None
    try:
        return min(max(Retry().parse_retry_after(header), 0.0), MAX_RETRY_AFTER)
    except InvalidHeader:
        return None


def _retries_used(resp: requests.Response) -> int:
    retries = getattr(resp.raw, "retries", None)
    return len(retries.history) if retries is not None else 0


def _envelope_error(body: object) -> str:
    """``errorType: error`` of a Prometheus error envelope, else the body itself (shortened)."""
    if isinstance(body, dict) and "error" in body:
        return f"{body.get('errorType', 'error')}: {body['error']}"
    return _shorten(body)


def _shorten(value: object) -> str:
    text = str(value)
    return text[:EXCERPT] + "…" if len(text) > EXCERPT else text


def _optional(**params: Param) -> dict[str, Param]:
    """The params that are set (not None/empty)."""
    return {k: v for k, v in params.items() if v not in (None, "")}


def _range(start: datetime | float | None, end: datetime | float | None) -> dict[str, float | None]:
    return {"start": None if start is None else _as_datetime(start).timestamp(),
            "end": None if end is None else _as_datetime(end).timestamp()}


def _instant(value: Instant) -> float | str:
    return value.timestamp() if isinstance(value, datetime) else value


def _as_datetime(value: datetime | float) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromtimestamp(float(value), tz=UTC)
