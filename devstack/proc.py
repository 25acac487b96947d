"""Start, find and stop the devstack's background processes (pid files, readiness)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def state_dir() -> Path:
    """The devstack state folder: env ``DEVSTACK_DIR`` or ``<project>/.devstack``."""
    return Path(os.environ.get("DEVSTACK_DIR", PROJECT_ROOT / ".devstack")).resolve()


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def read_pid(pidfile: Path) -> int | None:
    """The pid in ``pidfile`` if that process still runs, else None."""
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def spawn(name: str, argv: Sequence[str], run_dir: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> int:
    """Start ``argv`` detached (own session), logging to ``run_dir/<name>.log``; return its pid.

    A process already running under the same pid file is left alone and its pid returned,
    so ``up`` is idempotent.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    pidfile = run_dir / f"{name}.pid"
    running = read_pid(pidfile)
    if running:
        return running
    log = open(run_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        cwd=str(cwd) if cwd else None, env={**os.environ, **(env or {})}, start_new_session=True,
    )
    pidfile.write_text(str(proc.pid))
    return proc.pid


def stop(name: str, run_dir: Path, timeout: float = 15.0) -> bool:
    """Stop the process behind ``run_dir/<name>.pid`` (SIGTERM, then SIGKILL). True if one ran."""
    pidfile = run_dir / f"{name}.pid"
    pid = read_pid(pidfile)
    pidfile.unlink(missing_ok=True)
    if pid is None:
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def wait_http(url: str, timeout: float = 60.0, name: str = "service", log: Path | None = None) -> None:
    """Wait until ``url`` answers 2xx; raise with the log's tail if it does not in time."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.25)
    tail = ""
    if log and log.exists():
        tail = "\n--- last log lines ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise RuntimeError(f"{name} at {url} not ready after {timeout:.0f}s ({last}){tail}")
