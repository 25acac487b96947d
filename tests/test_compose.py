"""docker-compose.yaml, the Dockerfile, .dockerignore and the Helm values example, checked statically.

No Docker engine runs here, so nothing is built or started: the files are parsed (PyYAML; the Dockerfile with
``dockerfile-parse``; the build context with docker-py's own ``.dockerignore`` matcher, which needs no engine) and
checked against each other, against requirements.txt and against the local production stack's settings.
"""

from __future__ import annotations

import io
import json
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HELM_VALUES = ROOT / "docs" / "helm-values.yaml"
AIRFLOW_HOME = PurePosixPath("/opt/airflow")
# What production runs, and what must never reach the image.
SHIPPED_DIRS = ("dags", "plugins", "include")
KEPT_OUT = ("devstack", "tests", "bench", "docs", ".venv", ".airflow", ".devstack", ".stack", "reports", ".git",
            ".artifacts", ".ci")

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


def _requirement_pins(name: str = "requirements.txt") -> dict[str, str]:
    """Canonical package name -> pinned version; any other kind of line than a comment or ``name==version`` fails."""
    pins = {}
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith(("-r ", "-c ")):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[A-Za-z0-9_,\-]+\])?==(\S+)", line)
        assert m, f"{name}: {line!r} is not pinned with =="
        pins[canonicalize_name(m.group(1))] = m.group(3)
    return pins


@pytest.fixture(scope="module")
def dockerfile() -> list[dict[str, Any]]:
    """The Dockerfile's instructions, as dockerfile-parse reads them (continuations joined, comments dropped)."""
    parser = DockerfileParser(fileobj=io.BytesIO(DOCKERFILE.read_bytes()))
    return [i for i in parser.structure if i["instruction"] != "COMMENT"]


@pytest.fixture(scope="module")
def image_env() -> dict[str, str]:
    return DockerfileParser(fileobj=io.BytesIO(DOCKERFILE.read_bytes())).envs


def _copies(dockerfile: list[dict[str, Any]]) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY/ADD; flags such as --chown dropped."""
    out = []
    for ins in dockerfile:
        if ins["instruction"] in ("COPY", "ADD"):
            args = [a for a in shlex.split(ins["value"]) if not a.startswith("--")]
            out.append((args[:-1], args[-1]))
    return out


def _runs(dockerfile: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(command, the USER it runs as) of each RUN; the official image's own USER is ``airflow``."""
    out, user = [], "airflow"
    for ins in dockerfile:
        if ins["instruction"] == "USER":
            user = ins["value"].strip()
        elif ins["instruction"] == "RUN":
            out.append((ins["value"], user))
    return out


def _build_context() -> set[str]:
    """Every path the build sends to the engine, by docker-py's implementation of .dockerignore (no engine used)."""
    from docker.utils.build import exclude_paths

    patterns = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    return exclude_paths(str(ROOT), patterns)


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


def test_compose_runs_the_image_built_from_the_dockerfile(compose, common):
    build = common["build"]
    context, dockerfile = (build, "Dockerfile") if isinstance(build, str) else (
        build["context"], build.get("dockerfile", "Dockerfile"))
    assert (ROOT / context).resolve() == ROOT, "the build context is the repo root (.dockerignore applies there)"
    assert (ROOT / context / dockerfile).resolve() == DOCKERFILE
    assert common["image"], "the built image needs a name for every service to share it"
    for name, svc in _airflow_services(compose).items():
        assert svc["build"] == build and svc["image"] == common["image"], name
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in svc.get("environment", {}), f"{name} pip-installs at start"
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in COMPOSE.read_text(encoding="utf-8")


def test_dockerfile_extends_the_official_image_at_the_pinned_airflow_and_python(dockerfile):
    froms = [i["value"].split() for i in dockerfile if i["instruction"] == "FROM"]
    assert len(froms) == 1, f"one stage expected, got {froms}"
    pins = _requirement_pins()
    python = re.search(r'requires-python = ">=(\d+\.\d+)', (ROOT / "pyproject.toml").read_text()).group(1)
    assert froms[0][0] == f"apache/airflow:{pins['apache-airflow']}-python{python}"
    # The official image runs as `airflow`; leaving it as root would run every task as root.
    users = [i["value"].strip() for i in dockerfile if i["instruction"] == "USER"]
    assert not users or users[-1] == "airflow"


def test_every_airflow_service_shares_the_common_block(compose, common):
    services = _airflow_services(compose)
    assert set(LONG_RUNNING) | {"airflow-init"} <= set(services)
    for name, svc in services.items():
        assert svc["image"] == common["image"], name
        assert svc["volumes"] == common["volumes"], name
        for key, value in common["environment"].items():
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


def test_image_installs_exactly_the_pinned_requirements(dockerfile):
    """One pip install, as the airflow user: requirements.txt held to the lock, Airflow pinned to the image's."""
    copied = {PurePosixPath(dest) / PurePosixPath(src).name if dest.endswith("/") else PurePosixPath(dest): src
              for sources, dest in _copies(dockerfile) for src in sources}
    pip_runs = [(cmd, user) for cmd, user in _runs(dockerfile) if re.search(r"\bpip3? install\b", cmd)]
    assert len(pip_runs) == 1, pip_runs
    cmd, user = pip_runs[0]
    assert user == "airflow", "the image's docs: pip as the airflow user (root installs are refused)"
    install, *after = cmd.split("&&")
    args = shlex.split(install)
    args = args[args.index("install") + 1:]
    # Whatever else runs after the install only checks it (a conflict with the image's other packages fails).
    assert all(shlex.split(part)[:2] == ["pip", "check"] for part in after), after
    assert "--no-cache-dir" in args
    # apache-airflow pinned to the base image's version, so pip fails instead of up- or downgrading Airflow.
    assert "apache-airflow==${AIRFLOW_VERSION}" in args
    files = {flag: [PurePosixPath(args[k + 1]) for k, a in enumerate(args) if a in flags]
             for flag, flags in (("-r", ("-r", "--requirement")), ("-c", ("-c", "--constraint")))}
    assert [copied.get(f) for f in files["-r"]] == ["requirements.txt"], files
    assert [copied.get(f) for f in files["-c"]] == ["requirements-lock.txt"], files
    # Nothing else is installed: every other argument is an option or a file of the flags above.
    listed = {str(f) for fs in files.values() for f in fs}
    extra = [a for a in args if not a.startswith("-") and a not in listed and a != "apache-airflow==${AIRFLOW_VERSION}"]
    assert not extra, f"packages installed besides requirements.txt: {extra}"


def test_requirements_and_their_constraints_agree():
    """The image resolves requirements.txt within the lock: a pin the lock contradicts would fail the build."""
    pins, lock = _requirement_pins(), _requirement_pins("requirements-lock.txt")
    assert pins["apache-airflow"] == lock["apache-airflow"]
    disagree = {name: (version, lock.get(name)) for name, version in pins.items() if lock.get(name) != version}
    assert not disagree, f"requirements.txt vs requirements-lock.txt: {disagree}"


def test_image_carries_library_dags_plugins_and_config_where_compose_mounts_them(dockerfile, common, image_env):
    """Same container paths baked (Dockerfile) and mounted (compose), and the same library/config settings."""
    copies = {src.rstrip("/"): dest.rstrip("/") for sources, dest in _copies(dockerfile) for src in sources}
    mounts = {host.removeprefix("./").rstrip("/"): container for container, host in _mounts(common).items()}
    for folder in SHIPPED_DIRS:
        assert folder in copies, f"the image lacks {folder}/"
        assert copies[folder] == mounts[folder] == str(AIRFLOW_HOME / folder), folder
    env = common["environment"]
    assert image_env["PYTHONPATH"] == env["PYTHONPATH"]
    assert image_env["FINOPS_CONFIG"] == env["FINOPS_CONFIG"]
    # The library finds its default configuration and price tables relative to its own folder (PROJECT_ROOT):
    # baked at /opt/airflow/include, that is /opt/airflow — the configuration compose and the image name.
    from traceo_finops import config, pricing

    include = PurePosixPath(copies["include"])
    assert include.parent == AIRFLOW_HOME and (ROOT / "include").resolve() == config.PROJECT_ROOT / "include"
    assert AIRFLOW_HOME / config.DEFAULT_CONFIG_PATH.relative_to(config.PROJECT_ROOT) == PurePosixPath(
        image_env["FINOPS_CONFIG"])
    assert pricing.DEFAULT_PRICING_DIR.is_relative_to(config.PROJECT_ROOT / "include")
    assert str(include) in image_env["PYTHONPATH"].split(":")
    assert (ROOT / "include" / "traceo_finops" / "__init__.py").is_file()


def test_tools_the_workflows_run_are_installed_as_the_local_stack_installs_them(dockerfile):
    """promtool, prometheus, amtool: the Debian packages devstack/ensure-prometheus.sh installs, where config looks."""
    from traceo_finops.config import RecordingRulesSettings, SloSettings

    script = (ROOT / "devstack" / "ensure-prometheus.sh").read_text(encoding="utf-8")
    provides = dict(re.findall(r'\[([a-z0-9.+-]+)\]="([^"]*)"', re.search(r"PROVIDES=\((.*?)\)\n", script).group(1)))
    assert provides, "devstack/ensure-prometheus.sh names no package"
    apt = [(cmd, user) for cmd, user in _runs(dockerfile) if "apt-get install" in cmd]
    assert len(apt) == 1 and apt[0][1] == "root", apt
    install_args = shlex.split(apt[0][0].split("apt-get install", 1)[1].split("&&")[0])
    installed = {a for a in install_args if not a.startswith("-")}
    assert installed == set(provides), f"image installs {installed}, the local stack {set(provides)}"
    commands = {c for cs in provides.values() for c in cs.split()}
    rr, slo = RecordingRulesSettings(), SloSettings()
    for path in (rr.promtool, rr.prometheus, slo.promtool, slo.amtool):
        # Debian's packages install their commands in /usr/bin, where the configuration looks by default.
        assert PurePosixPath(path).parent == PurePosixPath("/usr/bin") and PurePosixPath(path).name in commands, path


def test_nothing_of_devstack_tests_or_bench_enters_the_image(dockerfile):
    sources = [src for srcs, _ in _copies(dockerfile) for src in srcs]
    assert sources, "the Dockerfile copies nothing"
    for src in sources:
        top = PurePosixPath(src).parts[0] if src not in (".", "./") else "."
        assert top in {*SHIPPED_DIRS, "requirements.txt", "requirements-lock.txt"}, f"COPY {src} is not shipped code"
    assert not any(i["instruction"] == "ADD" for i in dockerfile), "ADD fetches and unpacks: COPY only"
    context = _build_context()
    for folder in KEPT_OUT:
        leaked = sorted(p for p in context if p == folder or p.startswith(folder + "/"))
        assert not leaked, f".dockerignore lets {folder}/ into the build context: {leaked[:5]}"
    assert not [p for p in context if "__pycache__" in p or p.endswith(".pyc")]
    # What the COPYs need is in the context (else the build fails), the library and config included.
    for src in sources:
        assert src.rstrip("/") in context, f"{src} is excluded by .dockerignore but copied"
    for needed in ("include/traceo_finops/__init__.py", "include/config/finops.yaml",
                   "include/airflow_local_settings.py", "dags/finops_cardinality.py"):
        assert needed in context, needed


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


# -- the local production stack (devstack/airflow_stack.py, `make stack-up`) --------------------------------------
# AIRFLOW__ settings only the local stack has, each for a reason of running on one machine without containers.
STACK_ONLY = {
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "its auth manager (see below)",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": "its auth manager (see below)",
    "AIRFLOW__API__BASE_URL": "a non-default port on 127.0.0.1",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "binds 127.0.0.1 only",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": "a non-default port",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "triggerer and workers share one host",
    "AIRFLOW__CORE__DAGS_FOLDER": "the repo's dags/ (in the image: $AIRFLOW_HOME/dags, the default)",
    "AIRFLOW__CORE__PLUGINS_FOLDER": "the repo's plugins/ (in the image: $AIRFLOW_HOME/plugins, the default)",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "two workers on a 2-core machine",
}
# Set by both, to different values on purpose: the FAB provider is not a project requirement, so the venv's stack
# uses Airflow's SimpleAuthManager; the official image ships FAB (both answer POST /auth/token).
DIFFERENT_VALUE = {"AIRFLOW__CORE__AUTH_MANAGER"}
SAME_VALUE = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__LOAD_EXAMPLES", "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION",
              "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK")


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory) -> dict[str, str]:
    """The environment the local stack gives every Airflow process (its own builder; nothing is started)."""
    from devstack import airflow_stack

    keys = {k: f"test-{k}" for k in ("fernet_key", "api_secret_key", "jwt_secret", "pg_password", "admin_password")}
    return airflow_stack.airflow_env(tmp_path_factory.mktemp("stack"), airflow_stack.settings(), keys)


def _relative_entries(pythonpath: str, root: PurePosixPath) -> list[str]:
    return [str(PurePosixPath(p).relative_to(root)) for p in pythonpath.split(":")]


def test_local_stack_sets_the_same_airflow_settings_as_compose(common, stack_env):
    compose_env, names = common["environment"], {k for k in stack_env if k.startswith("AIRFLOW__")}
    compose_names = {k for k in compose_env if k.startswith("AIRFLOW__")}
    assert not compose_names - names, f"compose sets, the local stack does not: {sorted(compose_names - names)}"
    unexplained = names - compose_names - set(STACK_ONLY)
    assert not unexplained, f"the local stack sets, compose does not (say why in STACK_ONLY): {sorted(unexplained)}"
    assert not (set(STACK_ONLY) | DIFFERENT_VALUE) & set(SAME_VALUE)
    for name in SAME_VALUE:
        assert stack_env[name].lower() == str(compose_env[name]).lower(), name
    for name in DIFFERENT_VALUE:
        assert stack_env[name].endswith("AuthManager") and compose_env[name].endswith("AuthManager"), name
    # Same kinds of database, result backend and broker, and the execution API at the same path.
    for name in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND",
                 "AIRFLOW__CELERY__BROKER_URL"):
        assert stack_env[name].split("://")[0] == compose_env[name].split("://")[0], name
    for name in ("AIRFLOW__CORE__EXECUTION_API_SERVER_URL",):
        assert stack_env[name].split("/", 3)[3] == compose_env[name].split("/", 3)[3] == "execution/"
    # The connections: compose passes them through, the stack takes the metadata DB's or the caller's.
    for var in CONNECTION_VARS:
        assert var in compose_env


def test_local_stack_runs_the_same_code_and_airflow_as_the_image(common, stack_env, image_env):
    """Same dags/, plugins/ and library path entries (relative to the project vs to /opt/airflow), same Airflow."""
    import importlib.metadata

    from devstack import airflow_stack

    root = PurePosixPath(airflow_stack.PROJECT_ROOT)
    assert Path(root) == ROOT
    for folder, var in (("dags", "AIRFLOW__CORE__DAGS_FOLDER"), ("plugins", "AIRFLOW__CORE__PLUGINS_FOLDER")):
        assert PurePosixPath(stack_env[var]).relative_to(root) == PurePosixPath(folder)
    assert _relative_entries(stack_env["PYTHONPATH"], root) == _relative_entries(common["environment"]["PYTHONPATH"],
                                                                                 AIRFLOW_HOME) \
        == _relative_entries(image_env["PYTHONPATH"], AIRFLOW_HOME)
    # The stack runs the venv's Airflow and Celery provider: the pins the image installs.
    pins = _requirement_pins()
    for package in ("apache-airflow", "apache-airflow-providers-celery"):
        assert package in pins, f"{package} is not pinned in requirements.txt"
        assert importlib.metadata.version(package) == pins[package], package


# -- the Helm values example (docs/helm-values.yaml, docs/deploy.md) ------------------------------------------------
def test_helm_values_example_parses_and_deploys_the_same_image_and_settings(common, image_env):
    values = yaml.safe_load(HELM_VALUES.read_text(encoding="utf-8"))
    assert isinstance(values, dict), "docs/helm-values.yaml is not a mapping"
    pins = _requirement_pins()
    assert values["airflowVersion"] == pins["apache-airflow"]
    image = values["images"]["airflow"]
    assert image["repository"] and image["tag"].split("-")[0] == pins["apache-airflow"]
    assert values["executor"] == common["environment"]["AIRFLOW__CORE__EXECUTOR"]
    env = {e["name"]: e["value"] for e in values["env"]}
    assert env["PYTHONPATH"] == image_env["PYTHONPATH"] == common["environment"]["PYTHONPATH"]
    # FINOPS_CONFIG points into a mounted ConfigMap; that volume exists and is mounted for every Airflow container.
    mounts = {m["mountPath"]: m["name"] for m in values["volumeMounts"]}
    config_dir = str(PurePosixPath(env["FINOPS_CONFIG"]).parent)
    assert config_dir in mounts and mounts[config_dir] in {v["name"] for v in values["volumes"]}
    # The three connections come from secrets, one AIRFLOW_CONN_* variable each, never a literal value.
    secret_env = {s["envName"]: s for s in values["secret"]}
    assert set(secret_env) == set(CONNECTION_VARS)
    assert all(s["secretName"] and s["secretKey"] for s in secret_env.values())
    assert not set(CONNECTION_VARS) & set(env), "a connection in plain env"
    assert values["dags"]["gitSync"]["enabled"] is False, "the example bakes the DAGs into the image"
    # The cluster policy (pools per server) comes from the image's include/: the chart must not mount its own.
    assert (ROOT / "include" / "airflow_local_settings.py").is_file()
    assert "airflowLocalSettings" in values and values["airflowLocalSettings"] is None
