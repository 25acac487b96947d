"""A stand-in for Slack incoming webhooks that records every post and can be told to fail.

Run as its own process: ``python -m devstack.slack_sink --port P --record FILE`` (``up()`` does it).

Webhook posts (POST, any path outside ``/_control``) answer like Slack: 200 ``ok`` (text/html).
Like Slack, a body that is not JSON (or a form field ``payload=<json>``) gets 400 ``invalid_payload``
and JSON without ``text``, ``blocks`` or ``attachments`` gets 400 ``no_text``. Each post is one JSON
line in the record file (flushed and fsynced), also when it failed::

    {"seq", "ts" (unix s, float), "method", "path", "headers" (Authorization/Cookie removed),
     "body" (parsed JSON, else text), "status", "delivered" (status == 200), "scripted" (bool),
     "retry_after" (s, 429 only)}

Control endpoints (JSON):
    POST /_control/fail {"statuses": [500, 429], "retry_after": 1}  queue answers for the next posts
    GET  /_control/received       the recorded list (attempts; filter on "delivered" for deliveries)
    POST /_control/reset          clear records (and the file) and pending failures
    GET  /_control/health         200 {"ok": true, "pending_failures": n}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from devstack import proc

DEFAULT_PORT = 19600
WEBHOOK_PATH = "/services/T000/B000/devstack"
PROCESS_NAME = "slack_sink"
HIDDEN_HEADERS = {"authorization", "cookie", "proxy-authorization"}
# Slack's own error bodies for the statuses tests usually script.
ERROR_TEXT = {400: "invalid_payload", 403: "invalid_token", 404: "no_service", 410: "channel_is_archived",
              429: "rate_limited", 500: "rollup_error", 502: "bad_gateway", 503: "service_unavailable"}


class SinkState:
    """Records and scripted failures, shared by the server's threads."""

    def __init__(self, record: Path):
        self.record = record
        self.lock = threading.Lock()
        self.failures: list[tuple[int, int | None]] = []
        self.records: list[dict[str, Any]] = []
        if record.exists():  # a restarted sink keeps serving what its file already holds
            for line in record.read_text().splitlines():
                if line.strip():
                    self.records.append(json.loads(line))
        self.fh = open(record, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the server

    def append(self, rec: dict[str, Any]) -> None:
        with self.lock:
            rec["seq"] = len(self.records) + 1
            self.fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.records.append(rec)

    def next_failure(self) -> tuple[int, int | None] | None:
        with self.lock:
            return self.failures.pop(0) if self.failures else None

    def reset(self) -> None:
        with self.lock:
            self.records.clear()
            self.failures.clear()
            self.fh.truncate(0)
            self.fh.seek(0)
            self.fh.flush()
            os.fsync(self.fh.fileno())


def _parse_body(raw: bytes, content_type: str) -> tuple[Any, bool]:
    """(body, is_json): JSON if possible (also Slack's form field ``payload``), else the text."""
    text = raw.decode("utf-8", errors="replace")
    if "application/x-www-form-urlencoded" in content_type:
        form = urllib.parse.parse_qs(text)
        if "payload" in form:
            text = form["payload"][0]
    try:
        return json.loads(text), True
    except ValueError:
        return text, False


class Handler(BaseHTTPRequestHandler):
    server_version = "devstack-slack-sink/1"
    state: SinkState  # set on the subclass made by serve()

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), format % args))  # noqa: UP031

    def _send(self, status: int, body: str | bytes, ctype: str = "text/html",
              headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, doc: Any) -> None:
        self._send(status, json.dumps(doc), "application/json")

    def _read(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/_control/received":
            with self.state.lock:
                self._json(200, list(self.state.records))
        elif path == "/_control/health":
            self._json(200, {"ok": True, "pending_failures": len(self.state.failures)})
        else:
            self._send(405, "invalid_method")

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        raw = self._read()
        if path.startswith("/_control/"):
            self._control(path, raw)
            return
        body, is_json = _parse_body(raw, self.headers.get("Content-Type", ""))
        scripted = self.state.next_failure()
        extra: dict[str, str] = {}
        retry_after = None
        if scripted:
            status, retry_after = scripted
            text = ERROR_TEXT.get(status, "error")
            if status == 429:
                retry_after = 1 if retry_after is None else retry_after
                extra["Retry-After"] = str(retry_after)
        elif not is_json:
            status, text = 400, "invalid_payload"
        elif not isinstance(body, dict) or not any(body.get(k) for k in ("text", "blocks", "attachments")):
            status, text = 400, "no_text"
        else:
            status, text = 200, "ok"
        rec = {"ts": time.time(), "method": "POST", "path": self.path,
               "headers": {k: v for k, v in self.headers.items() if k.lower() not in HIDDEN_HEADERS},
               "body": body, "status": status, "delivered": status == 200, "scripted": bool(scripted)}
        if "Retry-After" in extra:
            rec["retry_after"] = retry_after
        self.state.append(rec)
        self._send(status, text, headers=extra)

    def _control(self, path: str, raw: bytes) -> None:
        if path == "/_control/fail":
            try:
                doc = json.loads(raw or b"{}")
                statuses = [int(s) for s in doc["statuses"]]
                retry_after = doc.get("retry_after")
                retry_after = None if retry_after is None else int(retry_after)
            except (ValueError, KeyError, TypeError) as exc:
                self._json(400, {"error": f"expected {{'statuses': [int], 'retry_after': int}}: {exc}"})
                return
            with self.state.lock:
                self.state.failures.extend((s, retry_after) for s in statuses)
                pending = len(self.state.failures)
            self._json(200, {"queued": len(statuses), "pending_failures": pending})
        elif path == "/_control/reset":
            self.state.reset()
            self._json(200, {"reset": True})
        else:
            self._json(404, {"error": f"unknown control endpoint {path}"})


def serve(port: int, record: Path, host: str = "127.0.0.1") -> None:
    record.parent.mkdir(parents=True, exist_ok=True)
    handler = type("BoundHandler", (Handler,), {"state": SinkState(record)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    finally:
        server.server_close()


# ----------------------------------------------------------------------------------------- lifecycle
def _run_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "slack"


def record_path(state_dir: Path) -> Path:
    return _run_dir(state_dir) / "received.jsonl"


def _info(state_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((_run_dir(state_dir) / "sink.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def up(state_dir: Path, port: int = DEFAULT_PORT, timeout: float = 30.0) -> dict[str, Any]:
    """Start the sink on 127.0.0.1:``port`` (reuse a running one). Returns {url, webhook_url, record, pid}."""
    from devstack.s3_stack import port_in_use  # same check, one implementation

    run = _run_dir(state_dir)
    run.mkdir(parents=True, exist_ok=True)
    pid = proc.read_pid(run / f"{PROCESS_NAME}.pid")
    if pid and _info(state_dir).get("port") != port:
        proc.stop(PROCESS_NAME, run)
        pid = None
    if not pid:
        if port_in_use(port):
            raise RuntimeError(f"port {port} is already in use by a process this devstack did not start")
        argv = [sys.executable, "-m", "devstack.slack_sink", "--port", str(port),
                "--record", str(record_path(state_dir))]
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(proc.PROJECT_ROOT / "include"),
                                                           os.environ.get("PYTHONPATH")]))}
        pid = proc.spawn(PROCESS_NAME, argv, run, env=env, cwd=proc.PROJECT_ROOT)
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(f"{url}/_control/health", timeout=timeout, name="slack sink",
                   log=run / f"{PROCESS_NAME}.log")
    info = {"url": url, "webhook_url": url + WEBHOOK_PATH, "record": str(record_path(state_dir)),
            "pid": pid, "port": port}
    (run / "sink.json").write_text(json.dumps(info))
    return info


def down(state_dir: Path) -> bool:
    """Stop the sink (the record file stays). True if it was running."""
    run = _run_dir(state_dir)
    stopped = proc.stop(PROCESS_NAME, run)
    (run / "sink.json").unlink(missing_ok=True)
    return stopped


def status(state_dir: Path) -> dict[str, Any]:
    run = _run_dir(state_dir)
    pid = proc.read_pid(run / f"{PROCESS_NAME}.pid")
    info = _info(state_dir)
    out: dict[str, Any] = {"running": pid is not None, "pid": pid, "url": info.get("url"),
                           "record": str(record_path(state_dir))}
    if pid and info.get("url"):
        try:
            out["received"] = len(received(info["url"]))
        except OSError:
            out["received"] = None
    return out


# ----------------------------------------------------------------------------------------- client helpers
def _call(url: str, method: str = "GET", doc: Any = None) -> Any:
    data = None if doc is None else json.dumps(doc).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def received(url: str) -> list[dict[str, Any]]:
    """Everything the sink at ``url`` recorded (attempts; ``delivered`` marks the 200s)."""
    return _call(f"{url}/_control/received")


def script_failures(url: str, statuses: list[int], retry_after: int | None = None) -> dict[str, Any]:
    """Make the next ``len(statuses)`` webhook posts answer these statuses, in order."""
    doc: dict[str, Any] = {"statuses": statuses}
    if retry_after is not None:
        doc["retry_after"] = retry_after
    return _call(f"{url}/_control/fail", "POST", doc)


def reset(url: str) -> dict[str, Any]:
    return _call(f"{url}/_control/reset", "POST", {})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devstack.slack_sink")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT)
    ap.add_argument("--record", type=Path, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args(argv)
    print(f"slack sink on http://{args.host}:{args.port} recording to {args.record}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.port, args.record, args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
