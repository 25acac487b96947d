"""A Slack sink of a test module's own: the devstack's is shared with other tests, which reset it and script
its failures."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
