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
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devstack import s3_stack
from tests.support.net import free_port
from tests.support.servers import Answer, LocalServer, Request

_STACK: dict[str, Any] = {}


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


@dataclass(frozen=True)
class _StandIn:
    """The HTTP response botocore expects back from a ``before-call`` handler that answers instead of S3."""

    status_code: int
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""


@contextmanager
def _instead_of_s3(s3: Any, operation: str, status: int, parsed: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    """Answer ``operation`` on this client with ``parsed`` (what botocore parses from an answer) and ``status``,
    through a ``before-call`` hook: the request never leaves. Yields the list of calls it answered."""
    calls: list[dict[str, Any]] = []

    def handler(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        calls.append(params)
        return _StandIn(status), {"ResponseMetadata": {"HTTPStatusCode": status}, **parsed}

    event, unique_id = f"before-call.s3.{operation}", f"instead-{status}-{operation}"
    s3.meta.events.register(event, handler, unique_id=unique_id)
    try:
        yield calls
    finally:
        s3.meta.events.unregister(event, unique_id=unique_id)


def deny(s3: Any, operation: str) -> AbstractContextManager[list[dict[str, Any]]]:
    """Make ``operation`` answer 403 AccessDenied on this client.

    moto cannot deny anything, so a ``before-call`` hook short-circuits the request with an
    AccessDenied response; botocore then raises its own real ``ClientError`` from it, exactly as
    it does for an AWS answer. Yields the list of calls it denied.
    """
    return _instead_of_s3(s3, operation, 403, {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}})


def answer(s3: Any, operation: str, parsed: dict[str, Any]) -> AbstractContextManager[list[dict[str, Any]]]:
    """Make ``operation`` answer ``parsed`` (what botocore would have parsed from S3's answer).

    For operations moto does not implement (ListBucketIntelligentTieringConfigurations: moto
    answers it with an object listing). Yields the list of calls it answered.
    """
    return _instead_of_s3(s3, operation, 200, parsed)


class FaultyProxy(LocalServer):
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
        self._upstream = urlsplit(upstream)
        super().__init__(self._relay, protocol_version="HTTP/1.1")

    def __enter__(self) -> FaultyProxy:
        super().__enter__()
        return self

    def _relay(self, request: Request) -> Answer | None:
        what = self.fault(request.method, request.target)
        self.seen.append((request.method, request.target, what or "forward"))
        if what == "drop":
            return None
        conn = http.client.HTTPConnection(self._upstream.hostname, self._upstream.port, timeout=30)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("connection", "keep-alive")}
            conn.request(request.method, request.target, body=request.body, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        if what == "lose-answer":
            return None
        relayed = {k: v for k, v in resp.getheaders()
                   if k.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server",
                                        "content-type")}
        return Answer(resp.status, payload, resp.getheader("Content-Type"), relayed, reason=resp.reason)


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


@contextmanager
def report_root_bucket(endpoint: str, prefix: str) -> Iterator[tuple[Any, Any, str]]:
    """(ReportStore at ``s3://<bucket>/reports``, boto3 client, bucket): a bucket of its own on the moto at
    ``endpoint`` (named ``<prefix>-<random>``), emptied and removed afterwards."""
    import uuid

    import boto3

    from traceo_finops.reports import ReportStore

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    bucket = f"{prefix}-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    scheme, _, host = endpoint.partition("://")
    store = ReportStore(f"s3://{bucket}/reports", s3_options={
        "access_key": "testing", "secret_key": "testing", "region": "us-east-1", "endpoint_override": host,
        "scheme": scheme})
    try:
        yield store, s3, bucket
    finally:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)
