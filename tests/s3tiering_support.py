"""Shared helpers of the S3 tiering tests: a private moto server, hooks that make S3 say no, restores.

The S3 tiering tests change lifecycle configurations, so they run on their own moto_server (a
real process over HTTP on 127.0.0.1, seeded by ``devstack.s3_stack`` with the same world as the
devstack) rather than the shared devstack one; it is started once per test process and stopped
at exit.
"""

from __future__ import annotations

import atexit
import json
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def client(endpoint_url: str) -> Any:
    return s3_stack.client(endpoint_url)


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
