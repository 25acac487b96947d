"""Shared helpers of the S3 tiering tests: a private moto server, hooks that make S3 say no or answer
what moto cannot, a proxy that drops connections, restores.

The S3 tiering tests change lifecycle configurations, so they run on their own moto_server (a
real process over HTTP on 127.0.0.1, seeded by ``devstack.s3_stack`` with the same world as the
devstack) rather than the shared devstack one; it is started once per test process and stopped
at exit.
"""

from __future__ import annotations

import atexit
import http.client
import json
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devstack import s3_stack

_STACK: dict[str, Any] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def private_s3() -> dict[str, Any]:
    """{endpoint_url, truth, state} of this process's moto, seeded once (seed 42, like the devstack)."""
    if not _STACK:
        state = Path(tempfile.mkdtemp(prefix="traceo-s3tiering-"))
        res = s3_stack.up(state, port=free_port(), seed=42)
        _STACK.update(endpoint_url=res["endpoint_url"], truth=res["ground_truth"], state=state)
        atexit.register(s3_stack.down, state)
    return _STACK


def client(endpoint_url: str, attempts: int | None = None) -> Any:
    """A boto3 S3 client; ``attempts`` caps botocore's attempts per request (1: no retry) for fault tests."""
    c = s3_stack.client(endpoint_url)
    if attempts is None:
        return c
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint_url, aws_access_key_id=s3_stack.ACCESS_KEY,
                        aws_secret_access_key=s3_stack.SECRET_KEY, region_name=s3_stack.REGION,
                        config=Config(retries={"total_max_attempts": attempts, "mode": "standard"}, connect_timeout=2,
                                      read_timeout=5))


def closed_port_url() -> str:
    """An endpoint on 127.0.0.1 where nothing listens: every request is refused."""
    return f"http://127.0.0.1:{free_port()}"


def aws_conn_env(endpoint_url: str) -> str:
    """AIRFLOW_CONN_AWS_DEFAULT for the private moto (the devstack's connection format)."""
    return json.dumps({"conn_type": "aws", "login": s3_stack.ACCESS_KEY, "password": s3_stack.SECRET_KEY,
                       "extra": {"endpoint_url": endpoint_url, "region_name": s3_stack.REGION}})


def restore_lifecycles(s3: Any, truth: dict[str, Any]) -> None:
    """Put every seeded bucket's lifecycle configuration back as the ground truth has it."""
    for name, b in truth["buckets"].items():
        if b["lifecycle_rules"] is None:
            s3.delete_bucket_lifecycle(Bucket=name)
        else:
            s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": b["lifecycle_rules"]})


def lifecycle_rules(s3: Any, bucket: str) -> list[dict[str, Any]] | None:
    """The bucket's rules, or None when it has no configuration."""
    try:
        return s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchLifecycleConfiguration":
            return None
        raise


class _Denied:
    """What botocore expects back from a ``before-call`` handler that answers instead of S3."""

    status_code = 403
    headers: dict[str, str] = {}  # noqa: RUF012 - read-only stand-in
    content = b""


@contextmanager
def deny(s3: Any, operation: str) -> Iterator[list[dict[str, Any]]]:
    """Make ``operation`` answer 403 AccessDenied on this client.

    moto cannot deny anything, so a ``before-call`` hook short-circuits the request with an
    AccessDenied response; botocore then raises its own real ``ClientError`` from it, exactly as
    it does for an AWS answer. Yields the list of calls it denied.
    """
    denied: list[dict[str, Any]] = []

    def handler(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        denied.append(params)
        return _Denied(), {"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}

    event = f"before-call.s3.{operation}"
    s3.meta.events.register(event, handler, unique_id=f"deny-{operation}")
    try:
        yield denied
    finally:
        s3.meta.events.unregister(event, unique_id=f"deny-{operation}")


class _Answered:
    """A 200 stand-in for a ``before-call`` handler that answers instead of S3."""

    status_code = 200
    headers: dict[str, str] = {}  # noqa: RUF012 - read-only stand-in
    content = b""


@contextmanager
def answer(s3: Any, operation: str, parsed: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    """Make ``operation`` answer ``parsed`` (what botocore would have parsed from S3's answer).

    For operations moto does not implement (ListBucketIntelligentTieringConfigurations: moto
    answers it with an object listing). Yields the list of calls it answered.
    """
    calls: list[dict[str, Any]] = []

    def handler(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        calls.append(params)
        return _Answered(), {"ResponseMetadata": {"HTTPStatusCode": 200}, **parsed}

    event = f"before-call.s3.{operation}"
    s3.meta.events.register(event, handler, unique_id=f"answer-{operation}")
    try:
        yield calls
    finally:
        s3.meta.events.unregister(event, unique_id=f"answer-{operation}")


class FaultyProxy:
    """An HTTP proxy on 127.0.0.1 in front of moto that drops connections when told to.

    ``fault(method, target)`` (target: path and query) says what to do with each request:
    ``None`` forwards it; ``"drop"`` closes the connection without forwarding (S3 unreachable);
    ``"lose-answer"`` forwards it — it takes effect — then closes the connection instead of
    answering. botocore sees a real ConnectionClosedError either way. ``seen`` records
    ``(method, target, what was done)``.
    """

    def __init__(self, upstream: str, fault: Callable[[str, str], str | None]):
        self.fault = fault
        self.seen: list[tuple[str, str, str]] = []
        up = urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:  # quiet
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                what = proxy.fault(self.command, self.path)
                proxy.seen.append((self.command, self.path, what or "forward"))
                if what == "drop":
                    self.close_connection = True
                    return
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    payload = resp.read()
                finally:
                    conn.close()
                if what == "lose-answer":
                    self.close_connection = True
                    return
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def is_lifecycle_write(method: str, target: str) -> bool:
    return method in ("PUT", "DELETE") and "lifecycle" in urlsplit(target).query


WRITE_OPERATIONS = ("PutBucketLifecycleConfiguration", "DeleteBucketLifecycle", "PutObject", "DeleteObject",
                    "DeleteObjects", "CopyObject", "PutBucketLifecycle")


def record_requests(s3: Any, operations: tuple[str, ...] = WRITE_OPERATIONS) -> list[dict[str, Any]]:
    """Record every request of ``operations`` this client sends (operation, headers, body as text).

    The body is what goes on the wire: the place to check fields moto drops on the floor.
    """
    sent: list[dict[str, Any]] = []

    def make(op: str) -> Callable[..., None]:
        def handler(params: dict[str, Any], **_: Any) -> None:
            body = params.get("body", b"")
            sent.append({"operation": op, "headers": dict(params.get("headers", {})),
                         "body": body.decode() if isinstance(body, bytes) else str(body),
                         "url": params.get("url_path", "")})
        return handler

    for op in operations:
        s3.meta.events.register(f"before-call.s3.{op}", make(op), unique_id=f"record-{op}-{id(sent)}")
    return sent
