"""The FinOps page in a real ``airflow api-server`` with the plugin, and in headless Chromium.

One api-server (SimpleAuthManager, a viewer with a known password, plugins from ``plugins/``) serves a
small lake written by the kit's publish. Checked: the nav entry and app are registered; every route
refuses a request without a login (401) or with a forged token (403); with a token from
``POST /auth/token`` the JSON equals the Parquet rows; Debian's Chromium, given the UI's ``_token``
cookie (driven over ``--remote-debugging-pipe``, no extra library), renders figures equal to the
Parquet rows; a screenshot is kept in ``.artifacts/ui/``. The server is stopped in every case.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow.compute as pc
import pytest

from tests.support.ui_server import api_server
from tests.support.ui_server import http as _http
from tests.test_ui_figures import COST_DAYS, build_lake, parquet

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / ".artifacts" / "ui"


@pytest.fixture(scope="module")
def server(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real api-server with the plugin over a small lake; always stopped at the end."""
    tmp = tmp_path_factory.mktemp("ui-server")
    lake = tmp / "reports"
    store = build_lake(lake)
    with api_server(tmp, lake, startup_timeout=60) as srv:
        yield {**srv, "lake": lake, "store": store, "tmp": tmp}


@pytest.mark.integration
def test_the_plugin_is_registered_with_a_relative_nav_entry(server: dict[str, Any]) -> None:
    status, body, _ = _http(f"{server['base']}/api/v2/plugins", token=server["token"])
    assert status == 200
    plugin = next(p for p in json.loads(body)["plugins"] if p["name"] == "traceo_finops_ui")
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/finops"]
    (view,) = plugin["external_views"]
    assert view["destination"] == "nav" and view["href"] == "finops/"


@pytest.mark.unit
def test_a_task_process_loading_the_plugins_does_not_build_the_page(tmp_path: Path) -> None:
    """Every task process loads the plugins folder: the page's app (Airflow's API security stack, ~1 s) is built only
    where ``fastapi_apps`` is read (the api-server), so loading the plugins must not import it."""
    code = ("import sys; from airflow import plugins_manager as pm; pm._get_plugins(); "
            "loaded = [p.name for p in pm._get_plugins()[0]]; before = 'finops_ui.app' in sys.modules; "
            "apps, _ = pm.get_fastapi_plugins(); "
            "print(loaded, before, 'finops_ui.app' in sys.modules, [a['url_prefix'] for a in apps])")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
           "PYTHONPATH": f"{ROOT / 'include'}:{ROOT}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.strip().splitlines()[-1]
    assert out == "['traceo_finops_ui'] False True ['/finops']"


@pytest.mark.integration
@pytest.mark.parametrize("path", ["/finops/", "/finops/api/report", "/finops/artifact?uri=x"])
def test_every_route_needs_the_ui_login(server: dict[str, Any], path: str) -> None:
    assert _http(server["base"] + path)[0] == 401
    assert _http(server["base"] + path, token="forged.jwt.token")[0] == 403
    assert _http(server["base"] + path, cookie="forged.jwt.token")[0] == 403


@pytest.mark.integration
def test_the_json_equals_the_parquet_rows(server: dict[str, Any]) -> None:
    status, body, _ = _http(f"{server['base']}/finops/api/report", token=server["token"])
    assert status == 200
    page = json.loads(body)
    table = parquet(server["lake"], "cost_summary", COST_DAYS[-1])
    assert page["report"]["report_date"] == COST_DAYS[-1].isoformat()
    assert page["totals"]["current"] == pytest.approx(pc.sum(table.column("current_monthly_usd")).as_py(), abs=0.005)
    assert page["totals"]["saving"] == pytest.approx(pc.sum(table.column("saving_monthly_usd")).as_py(), abs=0.005)
    actions = parquet(server["lake"], "actions", COST_DAYS[-1]).sort_by("rank").to_pylist()
    assert [(a["rank"], a["action_id"], a["monthly_saving_usd"]) for a in page["actions"]] == \
        [(a["rank"], a["action_id"], a["monthly_saving_usd"]) for a in actions]
    assert [p["report_date"] for p in page["trend"]] == [d.isoformat() for d in COST_DAYS]
    # The artifact link works through the server, with the same login.
    href = next(a["artifact_href"] for a in page["actions"] if a["artifact_href"])
    status, content, _ = _http(f"{server['base']}/finops/{href}", token=server["token"])
    assert (status, content) == (200, b"- drop: http_requests_bucket\n")
    outside = quote(str(server["lake"] / "cost_summary"), safe="")
    assert _http(f"{server['base']}/finops/artifact?uri={outside}", token=server["token"])[0] == 404


_VOID = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "source", "wbr"}


def money(value: float) -> str:
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


class _Dom(HTMLParser):
    """Text by element id, and the cells of every table by its id."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self._open: list[tuple[str, str | None]] = []  # (tag, id) of the elements we are inside
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.svg_points: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id")
            self.tables[self._table or ""] = []
        elif tag == "tr" and self._table is not None and self._cell is None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "svg" and a.get("id") == "trend":
            self.svg_points = int(a.get("data-points") or 0)
        if tag not in _VOID:
            self._open.append((tag, a.get("id")))
        if a.get("id"):
            self.text[str(a["id"])] = ""

    def handle_endtag(self, tag: str) -> None:
        while self._open and tag in (t for t, _ in self._open):
            if self._open.pop()[0] == tag:
                break
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        for _, name in self._open:
            if name:
                self.text[name] += data


def _pipe_fds(read_end: int, write_end: int) -> None:
    """In the child: Chromium reads commands on fd 3 and writes answers on fd 4."""
    high_r, high_w = fcntl.fcntl(read_end, fcntl.F_DUPFD, 10), fcntl.fcntl(write_end, fcntl.F_DUPFD, 10)
    os.dup2(high_r, 3)
    os.dup2(high_w, 4)


def _chromium_page(url: str, token: str, shot: Path) -> str:
    """Load ``url`` in headless Chromium with the UI's ``_token`` cookie; return the DOM, save a screenshot.

    Chromium's DevTools protocol over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out, NUL-separated JSON).
    """
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "Debian's chromium is not installed: run devstack/ensure-chromium.sh"
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    profile = shot.parent / "chromium-profile"
    proc = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1280,1600", "about:blank"],
        pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: _pipe_fds(to_browser_r, from_browser_w), start_new_session=True)
    os.close(to_browser_r)
    os.close(from_browser_w)
    out, buf, ids = os.fdopen(to_browser_w, "wb"), b"", iter(range(1, 10_000))
    events: list[dict[str, Any]] = []

    def send(method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        nonlocal buf
        msg_id = next(ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        out.write(json.dumps(msg).encode() + b"\0")
        out.flush()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == msg_id:
                    assert "error" not in reply, reply
                    return dict(reply.get("result") or {})
                events.append(reply)
            chunk = os.read(from_browser_r, 1 << 20)
            assert chunk, "chromium closed the pipe"
            buf += chunk
        raise AssertionError(f"chromium did not answer {method}")

    try:
        send("Storage.setCookies", cookies=[{"name": "_token", "value": token, "domain": "127.0.0.1", "path": "/",
                                             "httpOnly": True}])
        target = send("Target.createTarget", url="about:blank")["targetId"]
        session = send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        send("Page.enable", session)
        send("Page.navigate", session, url=url)
        deadline = time.monotonic() + 30
        while not any(e.get("method") == "Page.loadEventFired" for e in events):
            assert time.monotonic() < deadline, "the page did not load"
            send("Runtime.evaluate", session, expression="1")  # reads the events that arrived meanwhile
            time.sleep(0.1)
        dom = send("Runtime.evaluate", session, expression="document.documentElement.outerHTML",
                   returnByValue=True)["result"]["value"]
        png = send("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)["data"]
        shot.write_bytes(base64.b64decode(png))
        with contextlib.suppress(AssertionError):
            send("Browser.close")
        return str(dom)
    finally:
        out.close()
        os.close(from_browser_r)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.integration
def test_chromium_shows_the_parquet_figures(server: dict[str, Any]) -> None:
    shot = server["tmp"] / "finops-page.png"
    dom = _chromium_page(f"{server['base']}/finops/", server["token"], shot)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "finops-page.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    parsed = _Dom()
    parsed.feed(dom)
    table = parquet(server["lake"], "cost_summary", COST_DAYS[-1])
    for key in ("current", "projected", "saving"):
        assert parsed.text[f"total-{key}"] == money(pc.sum(table.column(f"{key}_monthly_usd")).as_py())
    by_cat = table.group_by("category").aggregate([("current_monthly_usd", "sum"), ("saving_monthly_usd", "sum")])
    assert {r[0]: (r[1], r[3]) for r in parsed.tables["categories"][1:]} == {
        r["category"]: (money(r["current_monthly_usd_sum"]), money(r["saving_monthly_usd_sum"]))
        for r in by_cat.to_pylist()}
    actions = parquet(server["lake"], "actions", COST_DAYS[-1]).sort_by("rank").to_pylist()
    assert [(r[0], r[2], r[4]) for r in parsed.tables["actions"][1:]] == [
        (str(a["rank"]), a["target"], money(a["monthly_saving_usd"])) for a in actions]
    assert parsed.svg_points == len(COST_DAYS)
    assert [r[2] for r in parsed.tables["failed-targets"][1:]] == ["mimir/team-b"]
    quality = {r[0]: r[6] for r in parsed.tables["datasets"][1:]}
    assert quality["s3_tiering"] == "failed" and quality["cost_summary"] == "passed"
    # The inline script ran in the browser: it filled in how long ago the report was committed.
    assert "ago)" in dom
