"""docker-compose.yaml, checked statically (no Docker engine here): services, shared settings, mounts."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yaml"

LONG_RUNNING = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
CONNECTION_VARS = ("AIRFLOW_CONN_PROMETHEUS_DEFAULT", "AIRFLOW_CONN_AWS_DEFAULT", "AIRFLOW_CONN_SLACK_FINOPS")
SECRET_VARS = ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def common(compose) -> dict[str, Any]:
    return compose["x-airflow-common"]


def _airflow_services(compose) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if name.startswith("airflow-")}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path for bind mounts (host paths starting with . or /)."""
    out = {}
    for spec in service.get("volumes", []):
        host, container = spec.split(":")[:2]
        if host.startswith((".", "/")):
            out[container] = host
    return out


def _host_path_of(container_path: str, mounts: dict[str, str]) -> Path:
    """Resolve a path inside the container to the repo file behind its bind mount."""
    target = PurePosixPath(container_path)
    for container, host in mounts.items():
        if target == PurePosixPath(container) or PurePosixPath(container) in target.parents:
            return (ROOT / host / target.relative_to(container)).resolve()
    raise AssertionError(f"{container_path} is not inside any bind mount ({sorted(mounts)})")


def _requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line.strip())
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_required_services_exist_with_their_commands(compose):
    services = compose["services"]
    for name, command in LONG_RUNNING.items():
        assert name in services, f"missing service {name}"
        assert services[name]["command"] == command
    assert {"airflow-init", "postgres", "redis"} <= set(services)
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"].startswith("redis:7.2")


def test_init_migrates_the_db_and_creates_an_admin(compose):
    init = compose["services"]["airflow-init"]
    env = init["environment"]
    assert env["_AIRFLOW_DB_MIGRATE"] == "true"
    assert env["_AIRFLOW_WWW_USER_CREATE"] == "true"
    assert env["_AIRFLOW_WWW_USER_USERNAME"]
    # A real deployment must not ship a default admin password.
    assert env["_AIRFLOW_WWW_USER_PASSWORD"].startswith("${_AIRFLOW_WWW_USER_PASSWORD:?")
    # The image entrypoint only migrates/creates the user when it runs.
    assert "/entrypoint airflow version" in "\n".join(init["command"])
    for name in LONG_RUNNING:
        depends = compose["services"][name]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully"


def test_image_matches_the_pinned_airflow_and_python():
    compose_text = COMPOSE.read_text(encoding="utf-8")
    pins = _requirement_pins()
    python = re.search(r'requires-python = ">=(\d+\.\d+)', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"apache/airflow:{pins['apache-airflow']}-python{python}" in compose_text


def test_every_airflow_service_shares_the_common_block(compose, common):
    services = _airflow_services(compose)
    assert set(LONG_RUNNING) | {"airflow-init"} <= set(services)
    for name, svc in services.items():
        assert svc["image"] == common["image"], name
        assert svc["volumes"] == common["volumes"], name
        for key, value in common["environment"].items():
            if name == "airflow-init" and key == "_PIP_ADDITIONAL_REQUIREMENTS":
                continue  # init deliberately installs nothing
            assert svc["environment"].get(key) == value, f"{name} lacks {key}"


def test_executor_database_and_broker(common):
    env = common["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    broker = env["AIRFLOW__CELERY__BROKER_URL"]
    assert broker.startswith("redis://") and "@redis:6379" in broker
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("AuthManager")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:8080/")


def test_secrets_come_from_the_environment(common):
    env = common["environment"]
    for var in SECRET_VARS:
        assert env[var].startswith(f"${{{var}:?"), f"{var} must be required from the environment"
    for var in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        assert "${POSTGRES_PASSWORD:?" in env[var]


def test_library_config_and_reports_are_reachable(common):
    env = common["environment"]
    mounts = _mounts(common)
    pythonpath = env["PYTHONPATH"].split(":")
    assert "/opt/airflow/include" in pythonpath
    # The package must sit directly under a PYTHONPATH entry that is a bind mount of include/.
    include_host = _host_path_of("/opt/airflow/include", mounts)
    assert include_host == (ROOT / "include").resolve()
    assert (include_host / "traceo_finops" / "__init__.py").is_file()
    config_host = _host_path_of(env["FINOPS_CONFIG"], mounts)
    assert config_host == (ROOT / "include" / "config" / "finops.yaml").resolve() and config_host.is_file()
    assert _host_path_of(env["FINOPS_REPORT_ROOT"], mounts) == (ROOT / "reports").resolve()


def test_project_directories_are_mounted_and_exist(common):
    mounts = _mounts(common)
    for folder in ("dags", "plugins", "include"):
        container = f"/opt/airflow/{folder}"
        assert container in mounts, f"{folder} is not mounted"
        host = (ROOT / mounts[container]).resolve()
        assert host == (ROOT / folder).resolve() and host.is_dir(), f"{host} does not exist in the repo"


def test_connections_are_passed_through_from_the_host(common):
    env = common["environment"]
    for var in CONNECTION_VARS:
        assert env[var] == f"${{{var}:-}}"


def test_extra_requirements_match_the_pins(common):
    raw = common["environment"]["_PIP_ADDITIONAL_REQUIREMENTS"]
    m = re.fullmatch(r"\$\{_PIP_ADDITIONAL_REQUIREMENTS-(.*)\}", raw)
    assert m, raw
    pins = _requirement_pins()
    wanted = m.group(1).split()
    assert wanted, "the default install list is empty"
    for spec in wanted:
        name, version = spec.split("==")
        assert pins.get(name.lower()) == version, f"{spec} differs from requirements.txt"


def test_backing_services_are_healthchecked_and_awaited(compose):
    services = compose["services"]
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    for name, svc in _airflow_services(compose).items():
        for backing in ("postgres", "redis"):
            assert svc["depends_on"][backing]["condition"] == "service_healthy", f"{name} -> {backing}"
    for name in LONG_RUNNING:
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
        assert services[name]["restart"] == "always"
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


def test_nothing_of_the_devstack_reaches_production(common):
    """The devstack and its demo config stay out of the containers; the shipped config names no devstack path."""
    mounted = {(ROOT / host).resolve() for host in _mounts(common).values()}
    devstack = (ROOT / "devstack").resolve()
    assert all(m != devstack and devstack not in m.parents and m not in devstack.parents for m in mounted)
    assert not (ROOT / "include" / "devstack").exists()
    # Comments may point at the demo's config; no setting may point into the devstack.
    import yaml

    shipped = yaml.safe_load((ROOT / "include" / "config" / "finops.yaml").read_text())
    assert "devstack" not in json.dumps(shipped)
