"""Fake Prometheus/Mimir answers over real HTTP on 127.0.0.1, from lists of label sets.

``FakeMimir`` answers Mimir's cardinality API (label_names, label_values, active_series) with Mimir's
validation, tenant handling and ``count_method`` semantics, from the recorded ``active_series``
fixture (3,113 real label sets) or any list; the tests first check that it reproduces the recorded
answers byte for byte. ``FakeServer`` is the scripted server underneath, also used by a fake Prometheus.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import promql_parser as pp

from tests.support.servers import Answer, LocalServer, Request
from traceo_finops.prometheus import PrometheusClient, SourceSpec

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "mimir"

Series = dict[str, str]


# ---- label-set helpers (the definition of what the servers hold) ---------------------------------------

def _python_regex(pattern: str) -> str:
    """RE2 ``\\x{HHHH}`` escapes in Python's spelling."""
    return re.sub(r"\\x\{([0-9a-fA-F]+)\}", lambda m: f"\\U{int(m.group(1), 16):08x}", pattern)


def _matches(series: Series, matchers: list[Any]) -> bool:
    for m in matchers:
        value = series.get(m.name, "")
        if m.op == pp.MatchOp.Equal:
            ok = value == m.value
        elif m.op == pp.MatchOp.NotEqual:
            ok = value != m.value
        else:
            found = re.fullmatch(_python_regex(m.value), value, flags=re.DOTALL) is not None
            ok = found if m.op == pp.MatchOp.Re else not found
        if not ok:
            return False
    return True


def _select(all_series: list[Series], selector_text: str) -> list[Series]:
    node = pp.parse(selector_text)
    matchers = list(node.matchers.matchers)
    if node.name:
        matchers.append(pp.parse(f'{{__name__="{node.name}"}}').matchers.matchers[0])
    return [s for s in all_series if _matches(s, matchers)]


def expected_labels(all_series: list[Series]) -> dict[str, dict[str, int]]:
    values: dict[str, dict[str, set[str]]] = {}
    for s in all_series:
        per = values.setdefault(s["__name__"], {})
        for k, v in s.items():
            if k != "__name__":
                per.setdefault(k, set()).add(v)
    return {m: {k: len(v) for k, v in per.items()} for m, per in values.items()}


class FakeServer:
    """``handler(path, query, headers) -> (status, content_type, body)`` on a :class:`LocalServer`; every
    request is recorded in ``hits`` as ``(path, query, headers)``."""

    def __init__(self, handler: Callable[[str, dict[str, list[str]], dict[str, str]], tuple[int, str, bytes]]):
        self.handler = handler
        self.hits: list[tuple[str, dict[str, list[str]], dict[str, str]]] = []

        def respond(request: Request) -> Answer:
            path = unquote(request.path)
            query = parse_qs(urlsplit(request.target).query, keep_blank_values=True)
            self.hits.append((path, query, request.headers))
            status, ctype, body = self.handler(path, query, request.headers)
            return Answer(status, body, ctype)

        self._local = LocalServer(respond).__enter__()
        self.url = self._local.url

    def close(self) -> None:
        self._local.__exit__()

    def paths(self, prefix: str) -> list[tuple[str, dict[str, list[str]], dict[str, str]]]:
        return [h for h in self.hits if h[0].startswith(prefix)]


def _json(body: Any, status: int = 200) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


def _ok(data: Any) -> tuple[int, str, bytes]:
    return _json({"status": "success", "data": data})


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


ACTIVE = _fixture("mimir_cardinality_active_series_job.json")["data"]


class FakeMimir:
    """Mimir's cardinality API over lists of label sets, with Mimir's validation and tenant handling.

    ``series`` are active (written within the idle timeout); ``stale`` are still in the ingesters' memory
    but no longer written. As in Mimir's ingester, ``count_method=inmemory`` counts both, ``active`` and
    ``/active_series`` only the first; ``series_count_total`` is the tenant's total (Mimir takes it from
    the user stats, whatever the selector). Unknown tenants get 401, or — ``open_tenants``, like a Mimir
    with multitenancy and no auth gateway — empty answers. ``stale_by_tenant`` gives a known tenant
    stale series only. PromQL is not served: the census must not need it.
    """

    def __init__(self, series: list[Series], tenants: tuple[str, ...] = ("anonymous",), *,
                 stale: list[Series] | None = None, open_tenants: bool = False) -> None:
        self.series = series
        self.stale = stale or []
        self.tenants = tenants
        self.open_tenants = open_tenants
        self.stale_by_tenant: dict[str, list[Series]] = {}
        self.after_root: Callable[[], None] = lambda: None
        self.server = FakeServer(self.handle)

    def _pools(self, tenant: str) -> tuple[list[Series], list[Series]] | None:
        if tenant in self.stale_by_tenant:
            return [], self.stale_by_tenant[tenant]
        if tenant in self.tenants:
            return self.series, self.stale
        return ([], []) if self.open_tenants else None

    def handle(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, str, bytes]:
        tenant = headers.get("X-Scope-OrgID", "anonymous")
        pools = self._pools(tenant)
        if pools is None:
            return 401, "text/plain; charset=utf-8", b"invalid tenant ID\n"
        active, stale = pools
        if path == "/prometheus/config/v1/rules":
            return 404, "text/plain; charset=utf-8", b"no rule groups found\n"
        if path == "/prometheus/api/v1/cardinality/active_series":
            if "selector" not in query:
                error = FIXTURES / "mimir_cardinality_active_series_no_selector_err.txt"
                return 400, "text/plain; charset=utf-8", error.read_bytes()
            return _json({"data": _select(active, query["selector"][0])})
        method = query.get("count_method", ["inmemory"])[0]
        if method not in ("inmemory", "active"):
            return 400, "text/plain; charset=utf-8", (f"invalid 'count_method' param '{method}'. valid options are: "
                                                       "[active,inmemory]\n").encode()
        pool = active if method == "active" else active + stale
        limit = int(query.get("limit", ["20"])[0])
        if limit > 500:
            return 400, "text/plain; charset=utf-8", (FIXTURES / "mimir_cardinality_label_names_limit501_err.txt"
                                                       ).read_bytes()
        chosen = _select(pool, query["selector"][0]) if query.get("selector") else list(pool)
        if path == "/prometheus/api/v1/cardinality/label_names":
            return _json(self.label_names(chosen, limit))
        if path == "/prometheus/api/v1/cardinality/label_values":
            if "label_names[]" not in query:
                return 400, "text/plain; charset=utf-8", b"'label_names[]' param is required\n"
            body = self.label_values(chosen, query["label_names[]"], limit, total=len(pool))
            if query["label_names[]"] == ["__name__"] and not query.get("selector"):
                self.after_root()
            return _json(body)
        return 404, "text/plain", b"404 page not found\n"

    @staticmethod
    def label_names(series: list[Series], limit: int) -> dict[str, Any]:
        values: dict[str, set[str]] = {}
        for s in series:
            for k, v in s.items():
                values.setdefault(k, set()).add(v)
        ranked = sorted(((k, len(v)) for k, v in values.items()), key=lambda kv: (-kv[1], kv[0]))
        return {"label_values_count_total": sum(len(v) for v in values.values()), "label_names_count": len(values),
                "cardinality": [{"label_name": k, "label_values_count": n} for k, n in ranked[:limit]]}

    @staticmethod
    def label_values(series: list[Series], names: list[str], limit: int, total: int) -> dict[str, Any]:
        labels = []
        for name in names:
            counts = Counter(s[name] for s in series if name in s)
            if not counts:  # Mimir lists only labels some series carries
                continue
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            labels.append({"label_name": name, "label_values_count": len(counts), "series_count": sum(counts.values()),
                           "cardinality": [{"label_value": v, "series_count": n} for v, n in ranked[:limit]]})
        labels.sort(key=lambda e: (-e["series_count"], e["label_name"]))
        return {"series_count_total": total, "labels": labels}


def _mimir_client(url: str, tenant: str | None = None) -> PrometheusClient:
    return PrometheusClient(SourceSpec(name="mimir", base_url=url, flavor="mimir", tenant=tenant, retries=0,
                                       timeout=10))
