"""A stand-in for Slack (incoming webhooks and a few Web API methods) that records every request and can fail.

Run as its own process: ``python -m devstack.slack_sink --port P --record FILE`` (``up()`` does it).

Webhook posts (POST, any path outside ``/_control``) answer like Slack: 200 ``ok`` (text/html).
Like Slack, a body that is not JSON (or a form field ``payload=<json>``) gets 400 ``invalid_payload``
and JSON without ``text``, ``blocks`` or ``attachments`` gets 400 ``no_text``. Each post is one JSON
line in the record file (flushed and fsynced), also when it failed::

    {"seq", "ts" (unix s, float), "method", "path", "headers" (Authorization/Cookie removed),
     "body" (parsed JSON, else text), "status", "delivered" (status == 200), "scripted" (bool),
     "retry_after" (s, 429 only)}

Web API (a bot token; the client's ``base_url`` is ``<url>/api/``), the methods the digest poster
uses, with Slack's request and response shapes (https://docs.slack.dev/reference/methods/):

    auth.test              {"ok", "url", "team", "user", "team_id", "user_id", "bot_id"}
    chat.postMessage       JSON or form; ``channel`` (an ID, or a name mapped to a stable ID), ``text``
                           and/or ``blocks``, optional ``metadata`` {"event_type", "event_payload"} →
                           {"ok", "channel", "ts", "message"}
    conversations.history  ``channel`` (an ID), ``limit`` (default 100, max 999), ``oldest``/``latest``
                           (``inclusive``), ``cursor``, ``include_all_metadata`` → {"ok", "messages"
                           (newest first; ``metadata`` only with include_all_metadata), "has_more",
                           "pin_count", "response_metadata": {"next_cursor"}}

Files, with Slack's current upload API (``files.upload`` is retired; slack_sdk's ``files_upload_v2``):

    files.getUploadURLExternal   ``filename``, ``length`` (bytes, > 0), optional ``alt_txt`` (≤ 1000
                                 chars, else ``alt_txt_too_large``), ``snippet_type`` → {"ok", "upload_url"
                                 (``<url>/upload/v1/<id>``, no token needed), "file_id" ("F…")}; a missing
                                 or bad filename/length → ``invalid_arguments``
    POST <upload_url>            the bytes, raw or as a multipart form's file part → 200 ``OK - <bytes>``
                                 (text/plain); an unknown or already completed URL → 404; an empty body → 400
    files.completeUploadExternal ``files`` (a JSON array, also as a form string) of {"id", "title"},
                                 optional ``channel_id`` (an ID), ``initial_comment``, ``thread_ts`` →
                                 {"ok", "files": [file objects: id, name, title, mimetype, filetype, size,
                                 …]}; an unknown id, or one whose bytes never arrived → ``file_not_found``;
                                 a completed id → ``file_not_found`` too (the method can be called once);
                                 a channel that is no ID → ``channel_not_found``. With ``channel_id`` the
                                 files are shared in one message (text = ``initial_comment``, ``files``,
                                 ``upload``: true) that ``conversations.history`` returns, as Slack does
                                 (a share with ``thread_ts`` is a thread reply, not in the history).

The record of an upload POST has "api": "upload", "file_id", "bytes", "sha256", "content_b64" (the bytes
received, so tests can check them) and "declared_length"; a completed share's record has "channel",
"message" and "delivered": true.

Like Slack, an API error is HTTP 200 with {"ok": false, "error": …}: ``not_authed`` without a
``Bearer xox…`` token, ``invalid_auth`` for another one, ``channel_not_found``, ``no_text``,
``invalid_metadata_format``, ``unknown_method``. Channel histories live in memory and are rebuilt
from the record file on a restart. Records of API calls also carry "api" (the method), and
"channel"/"message" for a posted message ("delivered" is true for it).

Control endpoints (JSON):
    POST /_control/fail {"statuses": [500, 429], "retry_after": 1, "echo_path": false}
                                  queue answers for the next requests (webhook posts and API calls);
                                  ``echo_path`` puts the request path in the error body, as some relays do
    POST /_control/fail {"api_errors": ["invalid_auth"]}  the next API calls answer 200 {"ok": false, …}
    GET  /_control/received       the recorded list (attempts; filter on "delivered" for deliveries)
    POST /_control/reset          clear records (and the file), channel histories and pending failures
    GET  /_control/health         200 {"ok": true, "pending_failures": n}
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import email.parser
import email.policy
import hashlib
import json
import os
import re
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
API_PREFIX = "/api/"
UPLOAD_PREFIX = "/upload/v1/"
ALT_TXT_MAX = 1000
MIMETYPES = {"png": "image/png", "csv": "text/csv", "txt": "text/plain", "json": "application/json",
             "jpg": "image/jpeg", "jpeg": "image/jpeg", "pdf": "application/pdf"}
CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{6,}")
BOT = {"team": "devstack", "team_id": "T000", "user": "finops-bot", "user_id": "U000", "bot_id": "B000",
       "app_id": "A000"}


class Failure(dict[str, Any]):
    """One scripted answer: {"status", "retry_after", "error" (an API error), "echo_path"}."""


class SinkState:
    """Records and scripted failures, shared by the server's threads."""

    def __init__(self, record: Path):
        self.record = record
        self.lock = threading.Lock()
        self.failures: list[Failure] = []
        self.records: list[dict[str, Any]] = []
        self.channels: dict[str, list[dict[str, Any]]] = {}  # channel id -> messages, oldest first
        # file id -> {"filename", "length", "alt_txt", "snippet_type", "bytes" (None until uploaded), "done"}
        self.files: dict[str, dict[str, Any]] = {}
        self.last_ts = 0.0
        if record.exists():  # a restarted sink keeps serving what its file already holds
            for line in record.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    self.records.append(rec)
                    self._replay(rec)
        self.fh = open(record, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the server

    def _replay(self, rec: dict[str, Any]) -> None:
        """Rebuild channel histories and pending uploads from one record of the file."""
        api = rec.get("api")
        if api in ("chat.postMessage", "files.completeUploadExternal") and rec.get("delivered") \
                and rec.get("message"):
            if not rec["message"].get("thread_ts"):
                self.channels.setdefault(rec["channel"], []).append(rec["message"])
            self.last_ts = max(self.last_ts, float(rec["message"]["ts"]))
        if api == "files.getUploadURLExternal" and rec.get("ok") and rec.get("file"):
            self.files[rec["file"]["id"]] = dict(rec["file"], bytes=None, done=False)
        elif api == "upload" and rec.get("status") == 200 and rec.get("file_id") in self.files:
            self.files[rec["file_id"]]["bytes"] = base64.b64decode(rec["content_b64"])
        elif api == "files.completeUploadExternal" and rec.get("ok"):
            for fid in rec.get("file_ids") or []:
                if fid in self.files:
                    self.files[fid]["done"] = True

    def append(self, rec: dict[str, Any]) -> None:
        with self.lock:
            rec["seq"] = len(self.records) + 1
            self.fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.records.append(rec)

    def next_failure(self) -> Failure | None:
        with self.lock:
            return self.failures.pop(0) if self.failures else None

    def next_ts(self) -> str:
        """A message ts ("seconds.micros"), unique and increasing like Slack's."""
        with self.lock:
            self.last_ts = max(time.time(), self.last_ts + 0.000001)
            return f"{self.last_ts:.6f}"

    def add_message(self, channel: str, message: dict[str, Any]) -> None:
        with self.lock:
            self.channels.setdefault(channel, []).append(message)

    def history(self, channel: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.channels.get(channel, []))

    def reset(self) -> None:
        with self.lock:
            self.records.clear()
            self.failures.clear()
            self.channels.clear()
            self.files.clear()
            self.fh.truncate(0)
            self.fh.seek(0)
            self.fh.flush()
            os.fsync(self.fh.fileno())


def channel_id(name: str) -> str:
    """The ID of a channel given by ID or by name (``#finops`` and ``finops`` map to one stable ID)."""
    if CHANNEL_ID.fullmatch(name):
        return name
    return "C" + hashlib.sha1(name.lstrip("#").encode()).hexdigest()[:10].upper()


def _flag(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes")


def _api_params(raw: bytes, content_type: str, query: str) -> dict[str, Any]:
    """A Web API call's arguments: query string, then a JSON or form body (form values that hold JSON decoded)."""
    params: dict[str, Any] = {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}
    text = raw.decode("utf-8", errors="replace")
    if "application/json" in content_type and text.strip():
        with contextlib.suppress(ValueError):
            body = json.loads(text)
            if isinstance(body, dict):
                params.update(body)
    elif text.strip():
        for k, v in urllib.parse.parse_qs(text).items():
            params[k] = v[-1]
            if k in ("blocks", "metadata", "attachments"):
                with contextlib.suppress(ValueError):
                    params[k] = json.loads(v[-1])
    return params


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
        if path.startswith(API_PREFIX):
            self._api(path[len(API_PREFIX):], b"")
        elif path == "/_control/received":
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
        if path.startswith(API_PREFIX):
            self._api(path[len(API_PREFIX):], raw)
            return
        if path.startswith(UPLOAD_PREFIX):
            self._upload(path[len(UPLOAD_PREFIX):], raw)
            return
        body, is_json = _parse_body(raw, self.headers.get("Content-Type", ""))
        scripted = self.state.next_failure()
        extra: dict[str, str] = {}
        retry_after = None
        if scripted and scripted.get("error"):
            status, text = 400, str(scripted["error"])
        elif scripted:
            status, retry_after = scripted["status"], scripted.get("retry_after")
            text = ERROR_TEXT.get(status, "error")
            if scripted.get("echo_path"):
                text = f"{text}: {self.path}"  # what some relays and proxies answer
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

    # -- Web API ------------------------------------------------------------------------------
    def _api(self, method: str, raw: bytes) -> None:
        """One Web API call: recorded, then answered like Slack (errors are 200 with ok=false)."""
        split = urllib.parse.urlsplit(self.path)
        params = _api_params(raw, self.headers.get("Content-Type", ""), split.query)
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else str(params.pop("token", "") or "")
        params.pop("token", None)
        rec: dict[str, Any] = {"ts": time.time(), "method": self.command, "path": split.path, "api": method,
                               "headers": {k: v for k, v in self.headers.items() if k.lower() not in HIDDEN_HEADERS},
                               "body": params, "scripted": False}
        status, doc, extra = 200, self._api_answer(method, params, token, rec), {}
        scripted = rec.pop("_scripted", None)
        if scripted and not scripted.get("error"):
            status = scripted["status"]
            doc = {"ok": False, "error": "ratelimited" if status == 429 else ERROR_TEXT.get(status, "error")}
            if status == 429:
                retry_after = scripted.get("retry_after")
                extra["Retry-After"] = str(1 if retry_after is None else retry_after)
                rec["retry_after"] = int(extra["Retry-After"])
        rec.update(status=status, ok=bool(doc.get("ok")), error=doc.get("error"),
                   delivered=bool(doc.get("ok")) and method in ("chat.postMessage", "files.completeUploadExternal")
                   and bool(rec.get("message")))
        if rec["delivered"] and not rec["message"].get("thread_ts"):  # a thread reply is not in the history
            self.state.add_message(rec["channel"], rec["message"])
        self.state.append(rec)
        self._send(status, json.dumps(doc), "application/json; charset=utf-8", headers=extra)

    def _api_answer(self, method: str, params: dict[str, Any], token: str, rec: dict[str, Any]) -> dict[str, Any]:
        scripted = self.state.next_failure()
        if scripted:
            rec["scripted"] = True
            if scripted.get("error"):
                return {"ok": False, "error": scripted["error"]}
            rec["_scripted"] = scripted
            return {"ok": False}
        if not token:
            return {"ok": False, "error": "not_authed"}
        if not token.startswith("xox"):
            return {"ok": False, "error": "invalid_auth"}
        if method == "auth.test":
            return {"ok": True, "url": "https://devstack.slack.com/", **{k: BOT[k] for k in
                                                                         ("team", "user", "team_id", "user_id",
                                                                          "bot_id")}}
        if method == "chat.postMessage":
            return self._post_message(params, rec)
        if method == "conversations.history":
            return self._history(params)
        if method == "files.getUploadURLExternal":
            return self._upload_url(params, rec)
        if method == "files.completeUploadExternal":
            return self._complete_upload(params, rec)
        return {"ok": False, "error": "unknown_method"}

    # -- files ---------------------------------------------------------------------------------
    def _base_url(self) -> str:
        host = self.headers.get("Host") or "%s:%d" % self.server.server_address[:2]  # noqa: UP031
        return f"http://{host}"

    def _upload_url(self, params: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
        filename = str(params.get("filename") or "").strip()
        try:
            length = int(params.get("length"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            length = 0
        if not filename or length <= 0:
            return {"ok": False, "error": "invalid_arguments"}
        alt_txt = str(params.get("alt_txt") or "")
        if len(alt_txt) > ALT_TXT_MAX:
            return {"ok": False, "error": "alt_txt_too_large"}
        file_id = "F" + hashlib.sha1(f"{filename}{time.time_ns()}{os.getpid()}".encode()).hexdigest()[:10].upper()
        info = {"id": file_id, "filename": filename, "length": length, "alt_txt": alt_txt,
                "snippet_type": str(params.get("snippet_type") or "")}
        with self.state.lock:
            self.state.files[file_id] = dict(info, bytes=None, done=False)
        rec["file"] = info
        return {"ok": True, "upload_url": f"{self._base_url()}{UPLOAD_PREFIX}{file_id}", "file_id": file_id}

    def _upload(self, file_id: str, raw: bytes) -> None:
        """POST of a file's bytes to its upload URL: raw, or a multipart form's file part."""
        scripted = self.state.next_failure()
        ctype = self.headers.get("Content-Type", "")
        content = raw
        if ctype.startswith("multipart/form-data"):
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {ctype}\r\n\r\n".encode() + raw)
            parts = [p for p in msg.iter_parts() if p.get_filename()
                     or p.get_param("name", header="content-disposition") in ("file", "filename")]
            content = bytes(parts[0].get_payload(decode=True) or b"") if parts else b""
        with self.state.lock:
            pending = self.state.files.get(file_id)
            known = pending is not None and not pending["done"]
        rec: dict[str, Any] = {"ts": time.time(), "method": "POST", "path": UPLOAD_PREFIX + file_id, "api": "upload",
                               "file_id": file_id, "headers": {k: v for k, v in self.headers.items()
                                                               if k.lower() not in HIDDEN_HEADERS},
                               "scripted": bool(scripted)}
        extra: dict[str, str] = {}
        if scripted:
            status = int(scripted.get("status") or 500)
            text = ERROR_TEXT.get(status, "error")
            if status == 429:
                extra["Retry-After"] = str(1 if scripted.get("retry_after") is None else scripted["retry_after"])
        elif not known:
            status, text = 404, "file_not_found"
        elif not content:
            status, text = 400, "no_file_data"
        else:
            status, text = 200, f"OK - {len(content)}"
            with self.state.lock:
                self.state.files[file_id]["bytes"] = content
        rec.update(status=status, ok=status == 200, delivered=False, bytes=len(content),
                   sha256=hashlib.sha256(content).hexdigest(),
                   declared_length=(pending or {}).get("length"),
                   content_b64=base64.b64encode(content).decode() if status == 200 else "")
        self.state.append(rec)
        self._send(status, text, "text/plain; charset=utf-8", headers=extra)

    def _complete_upload(self, params: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
        files = params.get("files")
        if isinstance(files, str):
            try:
                files = json.loads(files)
            except ValueError:
                return {"ok": False, "error": "invalid_arguments"}
        if not isinstance(files, list) or not files or not all(isinstance(f, dict) and f.get("id") for f in files):
            return {"ok": False, "error": "invalid_arguments"}
        channel = str(params.get("channel_id") or "").strip()
        if channel and not CHANNEL_ID.fullmatch(channel):
            return {"ok": False, "error": "channel_not_found"}
        with self.state.lock:
            pending = [self.state.files.get(str(f["id"])) for f in files]
            if any(p is None or p["done"] or p["bytes"] is None for p in pending):
                return {"ok": False, "error": "file_not_found"}
            for p in pending:
                p["done"] = True  # type: ignore[index]
        ts = self.state.next_ts()
        shared = []
        for f, p in zip(files, pending, strict=True):
            assert p is not None
            ext = p["filename"].rsplit(".", 1)[-1].lower() if "." in p["filename"] else ""
            shared.append({
                "id": p["id"], "created": int(float(ts)), "timestamp": int(float(ts)), "name": p["filename"],
                "title": str(f.get("title") or p["filename"]),
                "mimetype": MIMETYPES.get(ext, "application/octet-stream"),
                "filetype": ext or "binary", "pretty_type": ext.upper() or "Binary", "user": BOT["user_id"],
                "user_team": BOT["team_id"], "editable": False, "size": len(p["bytes"]), "mode": "hosted",
                "is_external": False, "external_type": "", "is_public": bool(channel), "public_url_shared": False,
                "display_as_bot": False, "username": "", "alt_txt": p["alt_txt"] or None,
                "url_private": f"{self._base_url()}/files-pri/{BOT['team_id']}-{p['id']}/{p['filename']}",
                "permalink": f"https://devstack.slack.com/files/{BOT['user_id']}/{p['id']}/{p['filename']}",
                "shares": {"public": {channel: [{"ts": ts}]}} if channel else {},
                "channels": [channel] if channel else [], "groups": [], "ims": [], "has_rich_preview": False})
        rec["file_ids"] = [p["id"] for p in pending if p is not None]
        if channel:
            message: dict[str, Any] = {"type": "message", "text": str(params.get("initial_comment") or ""),
                                       "files": shared, "upload": True, "user": BOT["user_id"],
                                       "bot_id": BOT["bot_id"], "app_id": BOT["app_id"], "team": BOT["team_id"],
                                       "display_as_bot": False, "ts": ts}
            if params.get("thread_ts"):
                message["thread_ts"] = str(params["thread_ts"])
            rec.update(channel=channel, message=message)
        return {"ok": True, "files": [{k: v for k, v in f.items() if k not in ("shares", "channels")}
                                      for f in shared]}

    def _post_message(self, params: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
        name = str(params.get("channel") or "").strip()
        if not name:
            return {"ok": False, "error": "channel_not_found"}
        if not any(params.get(k) for k in ("text", "blocks", "attachments")):
            return {"ok": False, "error": "no_text"}
        metadata = params.get("metadata")
        if metadata is not None and not (isinstance(metadata, dict) and isinstance(metadata.get("event_type"), str)
                                         and isinstance(metadata.get("event_payload"), dict)):
            return {"ok": False, "error": "invalid_metadata_format"}
        channel = channel_id(name)
        message: dict[str, Any] = {"type": "message", "subtype": "bot_message", "text": str(params.get("text") or ""),
                                   "ts": self.state.next_ts(), "bot_id": BOT["bot_id"], "app_id": BOT["app_id"],
                                   "user": BOT["user_id"], "team": BOT["team_id"]}
        if params.get("blocks"):
            message["blocks"] = params["blocks"]
        if metadata is not None:
            message["metadata"] = metadata
        rec.update(channel=channel, message=message)
        return {"ok": True, "channel": channel, "ts": message["ts"], "message": message}

    def _history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel") or "")
        if not CHANNEL_ID.fullmatch(channel):
            return {"ok": False, "error": "channel_not_found"}
        try:
            limit = max(1, min(int(params.get("limit") or 100), 999))
            oldest = float(params.get("oldest") or 0)
            latest = float(params["latest"]) if params.get("latest") else float("inf")
            start = int(base64.b64decode(str(params["cursor"])).decode().removeprefix("offset:")) \
                if params.get("cursor") else 0
        except (ValueError, TypeError):
            return {"ok": False, "error": "invalid_arguments"}
        inclusive = _flag(params.get("inclusive"))
        with_meta = _flag(params.get("include_all_metadata"))
        selected = [m for m in reversed(self.state.history(channel))
                    if (oldest <= float(m["ts"]) <= latest if inclusive else oldest < float(m["ts"]) < latest)]
        page = selected[start:start + limit]
        more = start + limit < len(selected)
        messages = [m if with_meta else {k: v for k, v in m.items() if k != "metadata"} for m in page]
        return {"ok": True, "messages": messages, "has_more": more, "pin_count": 0, "channel_actions_ts": None,
                "channel_actions_count": 0, "response_metadata": {
                    "next_cursor": base64.b64encode(f"offset:{start + limit}".encode()).decode() if more else ""}}

    def _control(self, path: str, raw: bytes) -> None:
        if path == "/_control/fail":
            try:
                doc = json.loads(raw or b"{}")
                statuses = [int(s) for s in doc.get("statuses") or []]
                api_errors = [str(e) for e in doc.get("api_errors") or []]
                retry_after = doc.get("retry_after")
                retry_after = None if retry_after is None else int(retry_after)
                if not statuses and not api_errors:
                    raise KeyError("statuses")
            except (ValueError, KeyError, TypeError) as exc:
                self._json(400, {"error": "expected {'statuses': [int], 'retry_after': int, 'echo_path': bool} or "
                                          f"{{'api_errors': [str]}}: {exc}"})
                return
            queued = [Failure(status=s, retry_after=retry_after, echo_path=bool(doc.get("echo_path")))
                      for s in statuses] + [Failure(status=200, error=e) for e in api_errors]
            with self.state.lock:
                self.state.failures.extend(queued)
                pending = len(self.state.failures)
            self._json(200, {"queued": len(queued), "pending_failures": pending})
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


def script_failures(url: str, statuses: list[int], retry_after: int | None = None,
                    echo_path: bool = False) -> dict[str, Any]:
    """Make the next ``len(statuses)`` requests (webhook posts, API calls) answer these statuses, in order.

    ``echo_path``: the error body repeats the request path (a webhook's token), as some relays do.
    """
    doc: dict[str, Any] = {"statuses": statuses, "echo_path": echo_path}
    if retry_after is not None:
        doc["retry_after"] = retry_after
    return _call(f"{url}/_control/fail", "POST", doc)


def script_api_errors(url: str, errors: list[str]) -> dict[str, Any]:
    """Make the next ``len(errors)`` Web API calls answer 200 {"ok": false, "error": e}, in order."""
    return _call(f"{url}/_control/fail", "POST", {"api_errors": errors})


def shared_files(url: str) -> list[dict[str, Any]]:
    """Every file shared by ``files.completeUploadExternal`` at the sink at ``url``, oldest first:
    {"id", "name", "title", "channel", "text" (the share's message), "thread_ts", "content" (bytes received)}."""
    records = received(url)
    content = {r["file_id"]: base64.b64decode(r["content_b64"]) for r in records
               if r.get("api") == "upload" and r.get("status") == 200}
    out = []
    for r in records:
        if r.get("api") == "files.completeUploadExternal" and r.get("ok"):
            message = r.get("message") or {}
            for fid in r.get("file_ids") or []:
                meta = next((f for f in message.get("files") or [] if f["id"] == fid), {})
                out.append({"id": fid, "name": meta.get("name"), "title": meta.get("title"),
                            "channel": r.get("channel"), "text": message.get("text"),
                            "thread_ts": message.get("thread_ts"), "content": content.get(fid)})
    return out


def api_url(url: str) -> str:
    """The Web API base URL of the sink at ``url`` (a Slack connection's ``extra.base_url``)."""
    return url.rstrip("/") + API_PREFIX


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
