"""``python -m devstack.airflow_stack up|down|status|env``: Airflow as production runs it, on this machine.

Debian's PostgreSQL (metadata DB and Celery result backend) and Redis (Celery broker), then Airflow's
api-server, scheduler, dag-processor, triggerer and two Celery workers from the project venv, configured
like ``docker-compose.yaml``: the CeleryExecutor, the same ``AIRFLOW__…`` variables, the project's
``dags/``, ``plugins/`` and ``include/``. Every process binds to 127.0.0.1; everything lives under one
state folder (env ``AIRFLOW_STACK_DIR``, default ``<project>/.stack``, git-ignored):

    secrets.json      Fernet key, API secret key, JWT secret, the database and admin passwords, generated
                      here on the first ``up`` (mode 0600), never committed
    pg/               the private PostgreSQL cluster (data, socket, log), run as the ``postgres`` user when
                      this runs as root; it never touches a system cluster
    redis/            the private Redis (no persistence)
    airflow/          AIRFLOW_HOME: task logs (``logs/``, shared by both workers, so the UI reads them)
    run/              pid files and the log of each process
    reports/          FINOPS_REPORT_ROOT of the runs (unless set when the stack starts)
    stack.json        where everything is: API URL, admin user, report root, worker names (no secrets but
                      the admin password, which is in secrets.json too)

Ports (env, defaults clear of the devstack's 19090/19101/19500/19600 and of the OS's ephemeral range):
``STACK_API_PORT`` 19880, ``STACK_PG_PORT`` 19532, ``STACK_REDIS_PORT`` 19637, ``STACK_LOG_PORT`` 19893
(worker 1; worker 2 serves its logs on +1, the triggerer on +2), ``STACK_SCHEDULER_HEALTH_PORT`` 19974.

``up`` is idempotent (running parts are kept) and all-or-nothing: when PostgreSQL, Redis or an Airflow
component cannot start, everything this call started is stopped again and a :class:`StackError` names
the part, the port and the tail of its log. Readiness: PostgreSQL answers a query, Redis answers PING,
the api-server's ``/api/v2/monitor/health`` reports the metadatabase, scheduler, triggerer and
dag-processor healthy, and ``celery inspect ping`` hears both workers.

Differences from ``docker-compose.yaml``, on purpose: the auth manager is Airflow's SimpleAuthManager
(the FAB provider is not a project requirement; both answer ``POST /auth/token``), Redis is Debian's
(7.x from the distribution), and PostgreSQL is Debian's major version, run with ``fsync=off`` (a
throwaway local database; the SQL is the same).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devstack import proc

PROJECT_ROOT = proc.PROJECT_ROOT
VENV_BIN = Path(sys.executable).parent
WORKERS = ("worker1", "worker2")
AIRFLOW_PROCS = ("api-server", "scheduler", "dag-processor", "triggerer", *WORKERS)
PORT_ENV = {"api_port": ("STACK_API_PORT", 19880), "pg_port": ("STACK_PG_PORT", 19532),
            "redis_port": ("STACK_REDIS_PORT", 19637), "log_port": ("STACK_LOG_PORT", 19893),
            "health_port": ("STACK_SCHEDULER_HEALTH_PORT", 19974)}
ADMIN = "admin"
WORKER_CONCURRENCY = int(os.environ.get("STACK_WORKER_CONCURRENCY", "4"))
HOSTNAME_ENV = "STACK_WORKER_HOSTNAME"
CONNECTION_VARS = ("AIRFLOW_CONN_PROMETHEUS_DEFAULT", "AIRFLOW_CONN_AWS_DEFAULT", "AIRFLOW_CONN_SLACK_FINOPS")


class StackError(RuntimeError):
    """A part of the stack could not start; nothing this ``up`` started is left running."""


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the stack's workers: the name of the worker running a task.

    Both workers run on this one machine; each records its own name (``worker1``/``worker2``) as the
    task instance's ``hostname``, so a run shows which worker ran which task. Logs are still read by the
    UI from the shared log folder, not by this name.
    """
    return os.environ.get(HOSTNAME_ENV) or socket.getfqdn()


def state_dir() -> Path:
    return Path(os.environ.get("AIRFLOW_STACK_DIR", PROJECT_ROOT / ".stack")).resolve()


def settings(**overrides: int | None) -> dict[str, int]:
    out = {}
    for key, (env, default) in PORT_ENV.items():
        val = overrides.get(key)
        out[key] = int(val) if val is not None else int(os.environ.get(env, default))
    return out


# -- secrets ------------------------------------------------------------------------------------------------
def load_secrets(sd: Path) -> dict[str, str]:
    """The stack's keys and passwords, generated on first use into ``secrets.json`` (0600)."""
    path = sd / "secrets.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    from cryptography.fernet import Fernet

    values = {"fernet_key": Fernet.generate_key().decode(), "api_secret_key": secrets.token_urlsafe(32),
              "jwt_secret": secrets.token_urlsafe(32), "pg_password": secrets.token_hex(16),
              "admin_password": secrets.token_urlsafe(16)}
    sd.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh, indent=1)
    return values


# -- PostgreSQL ---------------------------------------------------------------------------------------------
def _pg_bin() -> Path:
    env = os.environ.get("STACK_PG_BIN")
    if env:
        return Path(env)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if not versions:
        raise StackError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run "
                         "`bash devstack/ensure-postgres-redis.sh` (or `make stack-up`, which does)")
    return versions[-1].parent


def _as_pg_user() -> list[str]:
    """Root may not run PostgreSQL: as root, its commands run as the ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _chown_pg(path: Path) -> None:
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _run(argv: Sequence[str], what: str, timeout: float = 120, env: dict[str, str] | None = None,
         log: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (with exactly ``env`` when given, else this process's environment); StackError on failure."""
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                         env=env if env is not None else dict(os.environ), stdin=subprocess.DEVNULL)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as fh:
            fh.write(f"$ {' '.join(argv[:3])} ...\n{out.stdout}{out.stderr}")
    if out.returncode != 0:
        raise StackError(f"{what} failed (exit {out.returncode}): {(out.stderr or out.stdout).strip()[-1500:]}")
    return out


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return ""
    return "\n--- last lines of " + str(path) + " ---\n" + "\n".join(lines)


def pg_running(sd: Path, port: int) -> bool:
    pg = sd / "pg"
    try:
        pid = int((pg / "data" / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return False
    return proc.pid_alive(pid) and _port_open(port)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pg_up(sd: Path, port: int, password: str) -> bool:
    """Start the private cluster (initialised on first use) with role and database ``airflow``.

    True if this call started it.
    """
    pg = sd / "pg"
    data, sock, log = pg / "data", pg / "run", pg / "postgres.log"
    if pg_running(sd, port):
        return False
    binary = _pg_bin()
    if _port_open(port):
        raise StackError(f"PostgreSQL cannot start: 127.0.0.1:{port} is already taken by another process "
                         "(set STACK_PG_PORT to a free port)")
    if os.geteuid() == 0:  # the postgres user must reach pg/ (mkdtemp makes the state folder 0700)
        sd.mkdir(parents=True, exist_ok=True)
        os.chmod(sd, sd.stat().st_mode | 0o111)
        closed = [p for p in sd.resolve().parents if not p.stat().st_mode & 0o001]
        if closed:
            raise StackError(f"PostgreSQL cannot run under {sd}: the postgres user may not enter {closed[0]}; "
                             "set AIRFLOW_STACK_DIR to a folder it can reach")
    for d in (pg, sock):
        d.mkdir(parents=True, exist_ok=True)
        _chown_pg(d)
    os.chmod(pg, 0o700)
    if not (data / "PG_VERSION").exists():
        # The superuser has no password: it logs in over the private socket only (owner-only directory).
        _run([*_as_pg_user(), str(binary / "initdb"), "-D", str(data), "-U", "postgres", "--no-locale",
              "-E", "UTF8", "--auth-local=trust", "--auth-host=scram-sha-256"], "PostgreSQL initdb",
             log=sd / "run" / "initdb.log")
    opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c max_connections=300 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off")
    try:
        _run([*_as_pg_user(), str(binary / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "30",
              "-o", opts, "start"], f"PostgreSQL start on 127.0.0.1:{port}")
    except (StackError, subprocess.TimeoutExpired) as exc:
        pg_down(sd)
        raise StackError(f"PostgreSQL could not start on 127.0.0.1:{port}: {exc}{_tail(log)}") from None
    psql = [*_as_pg_user(), str(binary / "psql"), "-h", str(sock), "-p", str(port), "-U", "postgres",
            "-v", "ON_ERROR_STOP=1", "-q", "-t", "-A"]
    try:
        def missing(query: str) -> bool:
            return _run([*psql, "-c", query], "PostgreSQL").stdout.strip() != "1"

        if missing("SELECT 1 FROM pg_roles WHERE rolname = 'airflow'"):
            _run([*psql, "-c", f"CREATE ROLE airflow LOGIN PASSWORD '{password}'"], "PostgreSQL: create role")
        if missing("SELECT 1 FROM pg_database WHERE datname = 'airflow'"):
            _run([*psql, "-c", "CREATE DATABASE airflow OWNER airflow"], "PostgreSQL: create database")
    except StackError:
        pg_down(sd)
        raise
    return True


def pg_down(sd: Path) -> bool:
    data = sd / "pg" / "data"
    if not (data / "postmaster.pid").exists():
        return False
    try:
        binary = _pg_bin()
    except StackError:
        return False
    out = subprocess.run([*_as_pg_user(), str(binary / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                          "-t", "30", "stop"], capture_output=True, text=True, timeout=60)
    return out.returncode == 0


# -- Redis --------------------------------------------------------------------------------------------------
def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_up(sd: Path, port: int) -> bool:
    """Start the private Redis (no persistence). True if this call started it."""
    run = sd / "run"
    if proc.read_pid(run / "redis.pid") and redis_ping(port):
        return False
    binary = os.environ.get("STACK_REDIS_BIN") or shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise StackError("Redis is not installed (no redis-server): run `bash devstack/ensure-postgres-redis.sh` "
                         "(or `make stack-up`, which does)")
    if _port_open(port):
        raise StackError(f"Redis cannot start: 127.0.0.1:{port} is already taken by another process "
                         "(set STACK_REDIS_PORT to a free port)")
    (sd / "redis").mkdir(parents=True, exist_ok=True)
    proc.spawn("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(sd / "redis"),
                         "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"], run)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if redis_ping(port):
            return True
        if not proc.read_pid(run / "redis.pid"):
            break
        time.sleep(0.1)
    proc.stop("redis", run)
    raise StackError(f"Redis could not start on 127.0.0.1:{port}{_tail(run / 'redis.log')}")


# -- Airflow ------------------------------------------------------------------------------------------------
def airflow_env(sd: Path, cfg: dict[str, int], keys: dict[str, str], extra: dict[str, str] | None = None,
                pass_connections: bool = False) -> dict[str, str]:
    """The environment of every Airflow process: the variables of docker-compose.yaml, pointed here."""
    db = f"airflow:{keys['pg_password']}@127.0.0.1:{cfg['pg_port']}/airflow"
    home = sd / "airflow"
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager."
                                       "SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "simple_auth_manager_passwords.json"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{db}",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{cfg['redis_port']}/0",
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
        "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "true",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{cfg['api_port']}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{cfg['api_port']}",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "true",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(cfg["health_port"]),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(cfg["log_port"] + len(WORKERS)),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        "PYTHONPATH": f"{PROJECT_ROOT / 'include'}:{PROJECT_ROOT}",
        "FINOPS_CONFIG": os.environ.get("FINOPS_CONFIG") or str(PROJECT_ROOT / "devstack" / "finops.yaml"),
        "FINOPS_REPORT_ROOT": os.environ.get("FINOPS_REPORT_ROOT") or str(sd / "reports"),
    }
    # Connections from the caller's environment, as compose passes them (unset: the metadata DB's are used).
    if pass_connections:
        env.update({k: os.environ[k] for k in CONNECTION_VARS if os.environ.get(k)})
    env.update(extra or {})
    return env


def _clean_env(env: dict[str, str]) -> dict[str, str]:
    """os.environ without the caller's Airflow/connection settings (a test session's SQLite home…), plus ``env``."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_HOME", "_AIRFLOW"))}
    return {**base, **env}


def _spawn(name: str, argv: Sequence[str], run: Path, env: dict[str, str]) -> int:
    """Like :func:`devstack.proc.spawn`, but with exactly ``env`` (no variable of the caller leaks in: a test
    session's ``AIRFLOW_CONN_*`` or SQLite ``AIRFLOW__…`` settings must not reach the stack)."""
    run.mkdir(parents=True, exist_ok=True)
    pidfile = run / f"{name}.pid"
    running = proc.read_pid(pidfile)
    if running:
        return running
    with open(run / f"{name}.log", "ab") as log:
        child = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 cwd=str(PROJECT_ROOT), env=env, start_new_session=True)
    pidfile.write_text(str(child.pid))
    return child.pid


def _airflow(*args: str) -> list[str]:
    return [str(VENV_BIN / "airflow"), *args]


def _commands(cfg: dict[str, int]) -> dict[str, tuple[list[str], dict[str, str]]]:
    out: dict[str, tuple[list[str], dict[str, str]]] = {
        "api-server": (_airflow("api-server", "--host", "127.0.0.1", "--port", str(cfg["api_port"]),
                                "--workers", "1"), {}),
        "scheduler": (_airflow("scheduler"), {}),
        "dag-processor": (_airflow("dag-processor"), {}),
        "triggerer": (_airflow("triggerer"), {}),
    }
    for i, name in enumerate(WORKERS):
        out[name] = (_airflow("celery", "worker", "--celery-hostname", f"{name}@%h",
                              "--concurrency", str(WORKER_CONCURRENCY)),
                     {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(cfg["log_port"] + i),
                      "AIRFLOW__CORE__HOSTNAME_CALLABLE": "devstack.airflow_stack.worker_hostname",
                      HOSTNAME_ENV: name})
    return out


def _migrate(sd: Path, env: dict[str, str]) -> None:
    """``airflow db migrate`` (quick when already migrated), then the admin's password file."""
    log = sd / "run" / "db-migrate.log"
    try:
        _run(_airflow("db", "migrate"), "airflow db migrate", timeout=600, env=_clean_env(env), log=log)
    except subprocess.TimeoutExpired:
        raise StackError(f"airflow db migrate did not finish in 600 s{_tail(log)}") from None


def _write_passwords(sd: Path, env: dict[str, str], keys: dict[str, str]) -> None:
    path = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({ADMIN: keys["admin_password"]}, fh)


def health(api_port: int) -> dict[str, Any] | None:
    """The api-server's ``/api/v2/monitor/health`` answer, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/v2/monitor/health", timeout=3) as resp:
            return dict(json.loads(resp.read()))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _healthy(h: dict[str, Any] | None) -> bool:
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return bool(h) and all((h or {}).get(p, {}).get("status") == "healthy" for p in parts)


def celery_ping(env: dict[str, str], names: Sequence[str] = WORKERS, timeout: float = 10) -> set[str]:
    """The workers among ``names`` that answer ``celery inspect ping``."""
    host = socket.gethostname()
    dest = ",".join(f"{n}@{host}" for n in names)
    out = subprocess.run([str(VENV_BIN / "celery"), "--app", "airflow.providers.celery.executors.celery_executor.app",
                          "inspect", "ping", "-d", dest, "--timeout", str(timeout)],
                         capture_output=True, text=True, timeout=timeout + 60, env=_clean_env(env),
                         stdin=subprocess.DEVNULL)
    return {n for n in names if f"{n}@{host}: OK" in out.stdout or f"-> {n}@{host}: OK" in out.stdout}


def _wait_ready(sd: Path, cfg: dict[str, int], env: dict[str, str], timeout: float) -> None:
    run = sd / "run"
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        dead = [n for n in AIRFLOW_PROCS if not proc.read_pid(run / f"{n}.pid")]
        if dead:
            raise StackError(f"Airflow {dead[0]} exited while starting{_tail(run / f'{dead[0]}.log')}")
        last = health(cfg["api_port"])
        if _healthy(last):
            break
        time.sleep(1)
    else:
        raise StackError(f"Airflow not healthy after {timeout:.0f}s: /api/v2/monitor/health said {last}"
                         f"{_tail(run / 'api-server.log')}")
    missing: set[str] = set(WORKERS)
    while missing and time.monotonic() < deadline:
        missing -= celery_ping(env, sorted(missing))
    if missing:
        name = sorted(missing)[0]
        raise StackError(f"Celery {', '.join(sorted(missing))} did not answer ping{_tail(run / f'{name}.log')}")


def up(sd: Path | None = None, *, timeout: float = 240, quiet: bool = True, extra_env: dict[str, str] | None = None,
       pass_connections: bool = False, **ports: int | None) -> dict[str, Any]:
    """Start what does not run yet; all or nothing. Returns :func:`info`.

    ``extra_env`` adds to (or overrides) every Airflow process's environment, e.g. the tests'
    ``AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False`` (only triggered runs and backfills, no scheduled ones).
    ``pass_connections`` hands the caller's ``AIRFLOW_CONN_PROMETHEUS_DEFAULT``/``_AWS_DEFAULT``/``_SLACK_FINOPS``
    to every process, as docker-compose.yaml does (``make stack-up`` after ``make devstack-up``); without
    it the connections live in the metadata DB (the tests create them through the REST API).
    """
    sd = Path(sd) if sd else state_dir()
    cfg = settings(**ports)
    keys = load_secrets(sd)
    started: list[str] = []

    def say(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    try:
        t0 = time.monotonic()
        if pg_up(sd, cfg["pg_port"], keys["pg_password"]):
            started.append("postgres")
        say(f"  postgres      127.0.0.1:{cfg['pg_port']}  ({time.monotonic() - t0:.1f}s)")
        if redis_up(sd, cfg["redis_port"]):
            started.append("redis")
        say(f"  redis         127.0.0.1:{cfg['redis_port']}")
        env = airflow_env(sd, cfg, keys, extra_env, pass_connections)
        if not all(proc.read_pid(sd / "run" / f"{n}.pid") for n in AIRFLOW_PROCS):
            t1 = time.monotonic()
            _migrate(sd, env)
            say(f"  db migrate    ({time.monotonic() - t1:.1f}s)")
        _write_passwords(sd, env, keys)
        _create_pools(sd, env)
        for name, (argv, own) in _commands(cfg).items():
            if not proc.read_pid(sd / "run" / f"{name}.pid"):
                _spawn(name, argv, sd / "run", _clean_env({**env, **own}))
                started.append(name)
        _wait_ready(sd, cfg, env, timeout)
        say(f"  airflow       http://127.0.0.1:{cfg['api_port']}  ({time.monotonic() - t0:.1f}s in all)")
    except BaseException:
        _stop(sd, started)
        raise
    _save_launch(sd, cfg, env)
    data = info(sd, cfg, env)
    (sd / "stack.json").write_text(json.dumps({k: v for k, v in data.items() if k != "env"}, indent=1) + "\n")
    return data


def info(sd: Path, cfg: dict[str, int], env: dict[str, str]) -> dict[str, Any]:
    keys = load_secrets(sd)
    return {"state_dir": str(sd), "settings": cfg, "api_url": f"http://127.0.0.1:{cfg['api_port']}",
            "username": ADMIN, "password": keys["admin_password"], "report_root": env["FINOPS_REPORT_ROOT"],
            "finops_config": env["FINOPS_CONFIG"], "airflow_home": env["AIRFLOW_HOME"],
            "log_folder": str(Path(env["AIRFLOW_HOME"]) / "logs"), "workers": list(WORKERS),
            "run_dir": str(sd / "run"), "env": env}


def env_of(sd: Path | None = None, **ports: int | None) -> dict[str, str]:
    """The Airflow environment of the stack in ``sd`` (for ``airflow …`` commands against it)."""
    sd = Path(sd) if sd else state_dir()
    return airflow_env(sd, settings(**ports), load_secrets(sd))


def _create_pools(sd: Path, env: dict[str, str]) -> None:
    """The load-discipline pools from the configuration (``python -m traceo_finops pools``), via ``airflow pools``."""
    pools = sd / "run" / "pools.json"
    out = subprocess.run([sys.executable, "-m", "traceo_finops", "pools", "--output", str(pools)],
                         capture_output=True, text=True, timeout=120, env=_clean_env(env), cwd=PROJECT_ROOT)
    if out.returncode != 0:
        if "invalid choice: 'pools'" in out.stderr:
            return  # a library without the pools command
        raise StackError(f"pools from the configuration failed: {out.stderr.strip()[-1500:]}")
    _run(_airflow("pools", "import", str(pools)), "airflow pools import", env=_clean_env(env))


def _stop_together(run: Path, names: Sequence[str], timeout: float = 20) -> dict[str, bool]:
    """SIGTERM every one of ``names`` at once (workers finish warm), SIGKILL what still runs after ``timeout``."""
    import signal

    pids = {name: proc.read_pid(run / f"{name}.pid") for name in names}
    for name, pid in pids.items():
        (run / f"{name}.pid").unlink(missing_ok=True)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(p and proc.pid_alive(p) for p in pids.values()):
        time.sleep(0.1)
    for pid in pids.values():
        if pid and proc.pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    return {name: pid is not None for name, pid in pids.items()}


def _stop(sd: Path, names: Sequence[str]) -> None:
    run = sd / "run"
    _stop_together(run, [n for n in AIRFLOW_PROCS if n in names])
    if "redis" in names:
        proc.stop("redis", run)
    if "postgres" in names:
        pg_down(sd)


def _save_launch(sd: Path, cfg: dict[str, int], env: dict[str, str]) -> None:
    """What the Airflow processes were started with (secrets included: 0600), for :func:`restart`."""
    path = sd / "run" / "launch.json"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"settings": cfg, "env": env}, fh)


def restart(sd: Path, name: str) -> int:
    """Stop one Airflow component (SIGTERM, as an orchestrator restarts it) and start it again; its new pid."""
    launch = json.loads((sd / "run" / "launch.json").read_text())
    argv, own = _commands(launch["settings"])[name]
    proc.stop(name, sd / "run", timeout=30)
    return _spawn(name, argv, sd / "run", _clean_env({**launch["env"], **own}))


def start(sd: Path, name: str) -> int:
    """Start one Airflow component that is not running (after :func:`kill`); its pid."""
    launch = json.loads((sd / "run" / "launch.json").read_text())
    argv, own = _commands(launch["settings"])[name]
    return _spawn(name, argv, sd / "run", _clean_env({**launch["env"], **own}))


def kill(sd: Path, name: str) -> list[int]:
    """SIGKILL a component and every process of its session — a worker with its running tasks: a crash."""
    import signal

    pid = proc.read_pid(sd / "run" / f"{name}.pid")
    if pid is None:
        return []
    sid = os.getsid(pid)
    victims = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == sid:
                    victims.append(int(entry.name))
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(proc.pid_alive(v) for v in victims):
        time.sleep(0.1)
    (sd / "run" / f"{name}.pid").unlink(missing_ok=True)
    return victims


def down(sd: Path | None = None) -> dict[str, bool]:
    """Stop every part (workers and scheduler first, PostgreSQL last); {part: was_running}."""
    sd = Path(sd) if sd else state_dir()
    run = sd / "run"
    result = _stop_together(run, (*WORKERS, "scheduler", "triggerer", "dag-processor", "api-server"))
    result["redis"] = proc.stop("redis", run)
    result["postgres"] = pg_down(sd)
    return result


def status(sd: Path | None = None, **ports: int | None) -> dict[str, Any]:
    sd = Path(sd) if sd else state_dir()
    cfg = settings(**ports)
    run = sd / "run"
    out: dict[str, Any] = {"state_dir": str(sd), "postgres": {"running": pg_running(sd, cfg["pg_port"]),
                                                              "port": cfg["pg_port"]},
                           "redis": {"running": redis_ping(cfg["redis_port"]), "port": cfg["redis_port"]}}
    for name in AIRFLOW_PROCS:
        out[name] = {"pid": proc.read_pid(run / f"{name}.pid")}
    out["api-server"]["url"] = f"http://127.0.0.1:{cfg['api_port']}"
    out["health"] = health(cfg["api_port"])
    return out


def running(sd: Path | None = None, **ports: int | None) -> bool:
    """True when every part runs and the api-server reports healthy."""
    st = status(sd, **ports)
    return (st["postgres"]["running"] and st["redis"]["running"] and all(st[n]["pid"] for n in AIRFLOW_PROCS)
            and _healthy(st["health"]))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devstack.airflow_stack", description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=["up", "down", "status", "env"])
    args = ap.parse_args(argv)
    sd = state_dir()
    if args.action == "up":
        print(f"airflow stack up in {sd}", flush=True)
        try:
            data = up(sd, quiet=False, pass_connections=True)
        except StackError as exc:
            print(f"airflow stack up FAILED (nothing left running): {exc}", file=sys.stderr)
            return 1
        print(f"UI/API {data['api_url']}  user {data['username']}, password in {sd / 'secrets.json'}")
        print(f"reports in {data['report_root']}; task logs in {data['log_folder']}")
    elif args.action == "down":
        for name, was in down(sd).items():
            print(f"  {name:<14} {'stopped' if was else 'not running'}")
    elif args.action == "status":
        print(json.dumps(status(sd), indent=1, default=str))
        return 0 if running(sd) else 3
    else:
        for k, v in env_of(sd).items():
            print(f"export {k}={json.dumps(v)}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
