"""A Slack sink of a test module's own (the devstack's is shared with other tests, which reset it and script its
failures), and the Airflow connections that point at it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devstack import slack_sink
from tests.support.net import free_port


@contextmanager
def private_sink(state: Path) -> Iterator[str]:
    """``devstack/slack_sink.py`` on a free port, its state in ``state``; yields its URL, stopped on exit."""
    info = slack_sink.up(state, port=free_port())
    try:
        yield info["url"]
    finally:
        slack_sink.down(state)


def webhook_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, sink: str, token: str | None = None) -> str:
    """Airflow connection ``conn_id``: a Slack incoming webhook on ``sink`` (a URL or host:port) whose path is
    ``token`` (a fresh secret-looking one by default). Returns the token."""
    token = token or f"services/TSECRET0/BSECRET0/{uuid.uuid4().hex}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
        {"conn_type": "slackwebhook", "schema": "http", "host": sink.removeprefix("http://"), "password": token}))
    return token


def bot_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, sink: str, channel: str = "C0FINOPS01") -> str:
    """Airflow connection ``conn_id``: a Slack bot token posting to ``channel`` through the sink's Web API. Returns
    the token."""
    token = f"xoxb-1111-2222-{uuid.uuid4().hex}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
        {"conn_type": "slack", "password": token, "extra": {"channel": channel, "base_url": slack_sink.api_url(sink)}}))
    return token
