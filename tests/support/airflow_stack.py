"""The production-like Airflow stack (``devstack/airflow_stack.py``) for tests, and a small REST API v2 client.

``airflow_stack`` (session fixture) starts one private stack for the whole test session — PostgreSQL,
Redis, api-server, scheduler, dag-processor, triggerer and two Celery workers — in a temporary state
folder on free ports, with the devstack's connections (``prometheus_default``, ``aws_default``,
``slack_finops``) created through the REST API, and stops it at the end. Tests that need it import the
fixture (``from tests.support.airflow_stack import airflow_stack  # noqa: F401``) and use the
:class:`Stack` it yields (pytest makes an imported fixture one per importing module, even a session-scoped
one: the first module's instance starts the stack, every later one yields that same stack): ``stack.api``
(a token-authenticated client), ``stack.trigger(...)``, ``stack.wait(...)``, ``stack.task_instances(...)``,
``stack.report_root``, ``stack.airflow(...)`` (the ``airflow`` CLI against the stack's metadata DB),
``stack.slack_posts(dag_id, run_id)`` (the stack's ``slack_finops`` points at a Slack sink of its own,
``stack.slack_url``: the devstack's is reset by other tests).

Tests of one DAG should use their own logical dates (the stack is shared by the session; a DAG's runs
and its report partitions stay until the session ends).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from devstack import slack_sink
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]
CONNECTIONS = {"prometheus_default": "AIRFLOW_CONN_PROMETHEUS_DEFAULT", "aws_default": "AIRFLOW_CONN_AWS_DEFAULT",
               "slack_finops": "AIRFLOW_CONN_SLACK_FINOPS"}
FINISHED = {"success", "failed"}
TEST_ENV = {
    # Only the runs a test triggers (and backfills): unpausing a DAG must not add a scheduled run that the
    # DAG's max_active_runs=1 would put before the test's own.
    "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    # A task whose worker died is failed (and retried) after 30 s without a heartbeat, not the default 300 s,
    # looked for every 5 s, not 10 s. A live task's supervisor heartbeats every 5 s ([workers]
    # min_heartbeat_interval): the longest gap between two heartbeats of one task in the api-server access
    # logs of 39 stack sessions on the shared 2-core dev machine was 13 s (717 gaps).
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    # The DAGs retry after Airflow's default_task_retry_delay (300 s by default): a retry test need not wait.
    "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "5",
}
BATCH_SAMPLES = 250_000  # right-sizing's max_samples_per_query on the stack: several batches (stack_config)


class Api:
    """Airflow's REST API v2 with a JWT from ``POST /auth/token`` (renewed on 401)."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = {"username": username, "password": password}
        self._session = requests.Session()
        self._token: str | None = None

    def token(self) -> str:
        resp = self._session.post(f"{self.base_url}/auth/token", json=self._auth, timeout=30)
        resp.raise_for_status()
        self._token = str(resp.json()["access_token"])
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        extra = kwargs.pop("headers", {})
        for _ in range(2):
            headers = {**extra, "Authorization": f"Bearer {self._token or self.token()}"}
            resp = self._session.request(method, f"{self.base_url}/api/v2/{path.lstrip('/')}", headers=headers,
                                         timeout=60, **kwargs)
            if resp.status_code != 401:
                return resp
            self._token = None
        return resp

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.request(method, path, **kwargs)
        if resp.status_code >= 400:
            raise AssertionError(f"{method} {path}: HTTP {resp.status_code} {resp.text[:2000]}")
        return resp.json() if resp.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params)


def connection_body(conn_id: str, value: str) -> dict[str, Any]:
    """The REST body of connection ``conn_id`` from its ``AIRFLOW_CONN_*`` JSON value."""
    doc = json.loads(value)
    extra = doc.get("extra")
    return {"connection_id": conn_id, "conn_type": doc["conn_type"], "host": doc.get("host"),
            "login": doc.get("login"), "password": doc.get("password"), "schema": doc.get("schema"),
            "port": doc.get("port"), "extra": json.dumps(extra) if isinstance(extra, dict) else extra}


@dataclass
class Stack:
    """A running stack: where it is, its API client and what the test session's runs need."""

    info: dict[str, Any]
    api: Api
    env: dict[str, str] = field(default_factory=dict)
    slack_url: str = ""  # the stack's own Slack sink (slack_finops points at it)

    def slack_posts(self, dag_id: str, run_id: str, name: str = "digest") -> list[dict[str, Any]]:
        """The messages delivered to the stack's Slack sink for one run's digest (by its delivery key)."""
        from traceo_finops.slack import delivery_key

        key = delivery_key(dag_id, run_id, name)
        return [r for r in slack_sink.received(self.slack_url)
                if r.get("delivered") and key in json.dumps(r.get("body"))]

    @property
    def report_root(self) -> Path:
        return Path(self.info["report_root"])

    @property
    def state_dir(self) -> Path:
        return Path(self.info["state_dir"])

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The ``airflow`` CLI against this stack (its metadata DB, its AIRFLOW_HOME)."""
        from devstack.airflow_stack import VENV_BIN, _clean_env

        return subprocess.run([str(VENV_BIN / "airflow"), *args], capture_output=True, text=True, timeout=timeout,
                              env=_clean_env(self.env), cwd=ROOT, stdin=subprocess.DEVNULL)

    def put_connections(self, env: Mapping[str, str]) -> None:
        """Create (or replace) the devstack's connections in the metadata DB, through the API."""
        for conn_id, var in CONNECTIONS.items():
            body = connection_body(conn_id, env[var])
            resp = self.api.request("PATCH", f"connections/{conn_id}", json=body)
            if resp.status_code == 404:
                self.api.call("POST", "connections", json=body)
            elif resp.status_code >= 400:
                raise AssertionError(f"connection {conn_id}: HTTP {resp.status_code} {resp.text[:500]}")

    def unpause(self, dag_id: str) -> None:
        self.api.call("PATCH", f"dags/{dag_id}", json={"is_paused": False})

    def wait_parsed(self, dag_ids: Iterable[str], timeout: float = 180) -> None:
        """Until the dag-processor has serialised every one of ``dag_ids``."""
        wanted = set(dag_ids)
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while time.monotonic() < deadline:
            seen = {d["dag_id"] for d in self.api.get("dags", limit=100)["dags"]}
            if wanted <= seen:
                return
            time.sleep(1)
        raise AssertionError(f"DAGs not parsed after {timeout:.0f}s: {sorted(wanted - seen)}; import errors: "
                             f"{self.api.get('importErrors')}")

    def trigger(self, dag_id: str, logical_date: datetime | None, conf: Mapping[str, Any] | None = None,
                run_id: str | None = None) -> requests.Response:
        """``POST /dags/{dag_id}/dagRuns`` (the raw answer: a test of a rejection reads it)."""
        body: dict[str, Any] = {"logical_date": logical_date.isoformat() if logical_date else None,
                                "conf": dict(conf or {})}
        if run_id:
            body["dag_run_id"] = run_id
        return self.api.request("POST", f"dags/{dag_id}/dagRuns", json=body)

    def run(self, dag_id: str, logical_date: datetime | None, conf: Mapping[str, Any] | None = None,
            run_id: str | None = None) -> str:
        """Trigger a run; its run id."""
        resp = self.trigger(dag_id, logical_date, conf, run_id)
        assert resp.status_code == 200, f"trigger {dag_id}: HTTP {resp.status_code} {resp.text[:1000]}"
        return str(resp.json()["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.api.get(f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"))

    def wait(self, runs: Iterable[tuple[str, str]], timeout: float = 600) -> dict[tuple[str, str], str]:
        """Until every (dag_id, run_id) has finished; {run: state}. Fails with the unfinished runs' tasks."""
        pending = set(runs)
        states: dict[tuple[str, str], str] = {}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for key in sorted(pending):
                state = self.dag_run(*key)["state"]
                if state in FINISHED:
                    states[key] = state
                    pending.discard(key)
            if pending:
                time.sleep(1)
        if pending:
            detail = {f"{d}/{r}": [(t["task_id"], t["map_index"], t["state"]) for t in self.task_instances(d, r)]
                      for d, r in sorted(pending)}
            raise AssertionError(f"runs not finished after {timeout:.0f}s: {json.dumps(detail)[:4000]}")
        return states

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = self.api.get(f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances", limit=100,
                                offset=len(out))
            out += page["task_instances"]
            if len(out) >= page["total_entries"] or not page["task_instances"]:
                return out

    def failed_tasks_detail(self, dag_id: str, run_id: str) -> str:
        """The failed tasks of a run with the end of their logs (for assertion messages)."""
        lines = []
        for ti in self.task_instances(dag_id, run_id):
            if ti["state"] in ("failed", "upstream_failed"):
                lines.append(f"{ti['task_id']}[{ti['map_index']}] {ti['state']}: {self.log(ti)[-1500:]}")
        return "\n".join(lines)

    def log(self, ti: Mapping[str, Any], try_number: int | None = None) -> str:
        """A task instance's log through the API, as the UI shows it."""
        path = (f"dags/{ti['dag_id']}/dagRuns/{quote(ti['dag_run_id'], safe='')}/taskInstances/{ti['task_id']}"
                f"/logs/{try_number or ti['try_number']}")
        params = {"map_index": ti["map_index"], "full_content": True}
        resp = self.api.request("GET", path, params=params, headers={"Accept": "application/json"})
        if resp.status_code >= 400:
            return f"(log: HTTP {resp.status_code})"
        content = resp.json().get("content")
        if isinstance(content, list):
            return "\n".join(str(c.get("event", c)) if isinstance(c, dict) else str(c) for c in content)
        return str(content)


def stack_config(devstack_env: Mapping[str, str], path: Path) -> Path:
    """The devstack's demo configuration, with right-sizing cut into several namespace batches.

    ``max_samples_per_query`` is lowered so the devstack's few namespaces make several batches of one
    source: several mapped tasks that can run on both workers, and that the source's pool must keep
    apart. The report is the same; only the queries are smaller.
    """
    import yaml

    base = Path(devstack_env.get("FINOPS_CONFIG") or ROOT / "devstack" / "finops.yaml")
    cfg = yaml.safe_load(base.read_text())
    cfg.setdefault("workflows", {}).setdefault("rightsizing", {})["max_samples_per_query"] = BATCH_SAMPLES
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start_stack(devstack_env: Mapping[str, str], state: Path | None = None) -> Stack:
    """A private stack on free ports in ``state`` (a new temporary folder by default), with the connections."""
    from devstack import airflow_stack

    state = state or Path(tempfile.mkdtemp(prefix="traceo-stack-"))
    ports = {"api_port": free_port(), "pg_port": free_port(), "redis_port": free_port(), "log_port": free_port(),
             "health_port": free_port()}
    saved = {k: os.environ.get(k) for k in ("FINOPS_CONFIG", "FINOPS_REPORT_ROOT")}
    os.environ["FINOPS_CONFIG"] = str(stack_config(devstack_env, state / "finops.yaml"))
    os.environ["FINOPS_REPORT_ROOT"] = str(state / "reports")
    try:
        info = airflow_stack.up(state, extra_env=TEST_ENV, **ports)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    stack = Stack(info=info, api=Api(info["api_url"], info["username"], info["password"]), env=info["env"])
    # The stack's digests go to a Slack sink of its own: the devstack's is shared with other tests (and other
    # test sessions on the machine), which reset it. Same sink code, same connection shape, another port.
    sink = slack_sink.up(state / "slack", port=free_port())
    stack.slack_url = sink["url"]
    slack = {**json.loads(devstack_env[CONNECTIONS["slack_finops"]]), "host": sink["url"].removeprefix("http://")}
    stack.put_connections({**devstack_env, CONNECTIONS["slack_finops"]: json.dumps(slack)})
    return stack


_SESSION_STACK: list[Stack] = []  # the one stack of this test session, while it runs


@pytest.fixture(scope="session")
def airflow_stack(devstack: dict[str, str]) -> Iterator[Stack]:
    """One production-like stack for the test session (see the module doc); stopped at the end.

    Every test module imports this fixture, and pytest keeps one instance per importing module: without
    the shared ``_SESSION_STACK`` each module started a stack of its own (four in ``make test``, all
    running until the session's end). The first instance starts and stops it; the others hand it on.
    """
    from devstack import airflow_stack as stack_mod

    if _SESSION_STACK:
        yield _SESSION_STACK[0]
        return
    stack = start_stack(devstack)
    _SESSION_STACK.append(stack)
    try:
        yield stack
    finally:
        _SESSION_STACK.clear()
        stack_mod.down(stack.state_dir)
        slack_sink.down(stack.state_dir / "slack")
