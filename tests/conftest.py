"""Shared fixtures: an isolated Airflow home, the devstack's real services, a test config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its settings at import: point it at a throwaway SQLite home before anything imports it.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="traceo-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ.setdefault("PYTHONPATH", f"{ROOT / 'include'}:{ROOT}")


def _running(status: dict[str, Any]) -> bool:
    return any(isinstance(v, dict) and (v.get("running") or v.get("pid")) for k, v in status.items()
               if k in ("prom", "s3", "slack"))


@pytest.fixture(scope="session")
def devstack() -> Iterator[dict[str, str]]:
    """The devstack's real services on 127.0.0.1 (started if needed); yields its env (connections, truths).

    A stack that was already running (``make devstack-up``) is reused and left running; one this
    session started is stopped at the end.
    """
    from devstack.__main__ import down_all, status_all, up_all

    was_running = _running(status_all())
    info = up_all(quiet=True)
    env: dict[str, str] = info["env"]
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if not was_running:
        down_all()


@pytest.fixture(scope="session")
def prom_truth(devstack: dict[str, str]) -> dict[str, Any]:
    return json.loads(Path(devstack["DEVSTACK_GROUND_TRUTH_PROM"]).read_text())


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB in the session's Airflow home."""
    out = subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return _AIRFLOW_HOME


@pytest.fixture
def finops_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the demo configuration (devstack/finops.yaml), reporting into ``tmp_path/reports``."""
    text = (ROOT / "devstack" / "finops.yaml").read_text()
    path = tmp_path / "finops.yaml"
    path.write_text(text)
    monkeypatch.setenv("FINOPS_CONFIG", str(path))
    monkeypatch.setenv("FINOPS_REPORT_ROOT", str(tmp_path / "reports"))
    return path


@pytest.fixture(scope="module")
def moto() -> dict[str, Any]:
    """The S3 tiering tests' private moto server (``tests.support.s3``): {endpoint_url, truth, state}."""
    from tests.support.s3 import private_s3

    return private_s3()


@pytest.fixture
def s3(moto: dict[str, Any]) -> Iterator[Any]:
    """A boto3 client of the private moto; every seeded bucket's lifecycle configuration is put back after."""
    from tests.support.s3 import client, restore_lifecycles

    c = client(moto["endpoint_url"])
    yield c
    restore_lifecycles(c, moto["truth"])


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Slack sink of the requesting module's own (``tests.support.slack.private_sink``): the devstack's is shared
    with other tests, which reset it and script its failures. Its URL."""
    from tests.support.slack import private_sink

    with private_sink(tmp_path_factory.mktemp("slack-sink")) as url:
        yield url


@pytest.fixture
def fresh(sink: str) -> str:
    """The module's Slack sink, emptied of what earlier tests sent and scripted."""
    from devstack import slack_sink

    slack_sink.reset(sink)
    return sink


KINDS = ("unit", "integration", "dag")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test says what it is: unit, integration or dag (``make test-unit`` relies on it)."""
    unmarked = [item.nodeid for item in items if not any(item.get_closest_marker(k) for k in KINDS)]
    if unmarked:
        raise pytest.UsageError("tests without a unit/integration/dag marker:\n  " + "\n  ".join(unmarked))
