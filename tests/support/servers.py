"""Small real HTTP servers on 127.0.0.1: what a test talks to instead of a Prometheus, a Mimir gateway, an
exporter or S3, when it needs an answer the real service will not give on demand (a 500, a 401, a slow or
dropped answer).

``LocalServer`` answers every request, whatever its method, with what a function says; ``ScriptedServer``
answers per path from a script and records every request. Both are context managers: serving inside the
``with``, shut down and closed on exit.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    """A request as the server received it."""

    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)


@dataclass
class Answer:
    """What the server sends back, after ``delay`` seconds; ``body`` may be computed from the request.

    ``content_type`` None sends no Content-Type header (an answer relayed as it came).
    """

    status: int = 200
    body: bytes | Callable[[Request], bytes] = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reason: str | None = None


Respond = Callable[[Request], Answer | None]  # None: close the connection without answering


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that gave up closed its socket: expected
            super().handle_error(request, client_address)


class LocalServer:
    """A ThreadingHTTPServer on 127.0.0.1:<free port> answering every request with ``respond(request)``.

    ``respond`` returning None closes the connection without an answer (what a dropped connection looks like
    to the client). ``protocol_version="HTTP/1.1"`` keeps connections alive, as a proxy in front of S3 must.
    """

    def __init__(self, respond: Respond, protocol_version: str = "HTTP/1.0") -> None:
        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = Request(self.command, self.path, dict(self.headers.items()), body)
                answer = respond(request)
                if answer is None:
                    self.close_connection = True
                    return
                time.sleep(answer.delay)
                payload = answer.body(request) if callable(answer.body) else answer.body
                self.send_response(answer.status, answer.reason)
                if answer.content_type is not None:
                    self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        Handler.protocol_version = protocol_version
        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


NOT_FOUND = Answer(404, b"404 page not found\n", "text/plain")  # what Prometheus answers for an unknown path


class ScriptedServer(LocalServer):
    """Each path answers its scripted answers in turn (the last one repeats), any other path 404; every
    request is recorded in ``hits``."""

    def __init__(self) -> None:
        self.routes: dict[str, list[Answer]] = {}
        self.hits: list[Request] = []
        super().__init__(self._respond)

    def _respond(self, request: Request) -> Answer:
        self.hits.append(request)
        answers = self.routes.get(request.path) or [NOT_FOUND]
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def __enter__(self) -> ScriptedServer:
        super().__enter__()
        return self

    def route(self, path: str, *answers: Answer) -> None:
        self.routes[path] = list(answers)

    def hits_for(self, path: str) -> list[Request]:
        return [h for h in self.hits if h.path == path]
