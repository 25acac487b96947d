"""A real ``airflow api-server`` with the project's plugins over a report root, for the FinOps page's tests.

SimpleAuthManager with one viewer of a known password; :func:`api_server` yields its base URL and a token from
``POST /auth/token``, and stops the server (its whole process group) in every case.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "finops-viewer", "known-test-password"


def http(url: str, token: str | None = None, cookie: str | None = None, data: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) of one request, redirects not followed, HTTP errors returned not raised."""
    req = urllib.request.Request(url, data=data, headers=dict(headers or {}))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if cookie:
        req.add_header("Cookie", f"_token={cookie}")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


@contextlib.contextmanager
def api_server(tmp: Path, report_root: Path, startup_timeout: float = 90) -> Iterator[dict[str, str]]:
    """An api-server with ``plugins/`` reading ``report_root``; yields ``{"base", "token"}``; logs to ``tmp``."""
    passwords = tmp / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    port = free_port()
    env = {**os.environ, "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
           "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
           "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager."
                                          "SimpleAuthManager",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:viewer",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
           "AIRFLOW__API_AUTH__JWT_SECRET": "ui-test-secret-" + os.urandom(8).hex(),
           "FINOPS_CONFIG": str(ROOT / "devstack" / "finops.yaml"), "FINOPS_REPORT_ROOT": str(report_root),
           "PYTHONPATH": f"{ROOT / 'include'}:{ROOT}"}
    log_path = tmp / "api-server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "api-server", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if http(f"{base}/api/v2/version")[0] in (200, 401):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        status, body, _ = http(f"{base}/auth/token", data=json.dumps({"username": USER, "password": PASSWORD})
                               .encode(), headers={"Content-Type": "application/json"})
        assert status == 201, body
        yield {"base": base, "token": json.loads(body)["access_token"]}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
