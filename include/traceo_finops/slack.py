"""Slack digests: a Block Kit message builder and an exactly-once post per run.

The HTTP post itself goes through the slack provider's webhook hook (see
``airflow_adapter.slack_poster``), whose retry handlers honour ``Retry-After`` on 429 and
retry 5xx. This module only builds the message and remembers what was posted, so a task
retried after a successful post does not post the same digest twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from traceo_finops.reports import ReportStore

log = logging.getLogger(__name__)

# Block Kit limits (https://docs.slack.dev/reference/block-kit/blocks): header text 150 chars,
# section text 3000 chars, at most 10 fields per section of 2000 chars each, 50 blocks.
HEADER_MAX = 150
TEXT_MAX = 3000
FIELDS_MAX = 10
SENT_DIR = "slack_digests"


class SlackError(RuntimeError):
    """The digest could not be delivered; the message names the connection and the answer."""


# A webhook URL's path is its token: https://hooks.slack.com/services/T…/B…/secret.
_WEBHOOK_PATH = re.compile(r"(/services/)[A-Za-z0-9_]+/[A-Za-z0-9_]+/[A-Za-z0-9_]+")


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with every webhook token path and every given secret replaced by ``***``."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
        text = text.replace(secret.lstrip("/"), "***")
    return _WEBHOOK_PATH.sub(r"\1***", text)


class ScrubFilter(logging.Filter):
    """A logging filter that scrubs secrets from records (slack_sdk logs request URLs on retries)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return True


@dataclass(frozen=True)
class Digest:
    """What a workflow has to say after a run."""

    title: str
    summary: str
    facts: Mapping[str, str] = field(default_factory=dict)  # shown as two-column fields
    table_header: Sequence[str] = ()
    table_rows: Sequence[Sequence[Any]] = ()
    footer: str = ""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def build_blocks(digest: Digest) -> list[dict[str, Any]]:
    """Block Kit blocks for ``digest``, clipped to Slack's limits."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(digest.title, HEADER_MAX)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(digest.summary, TEXT_MAX)}},
    ]
    facts = list(digest.facts.items())[:FIELDS_MAX]
    if facts:
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": _clip(f"*{k}*\n{v}", 2000)} for k, v in facts]})
    if digest.table_header and digest.table_rows:
        body = _table(digest.table_header, digest.table_rows)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"```{body}```", TEXT_MAX)}})
    if digest.footer:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(digest.footer, TEXT_MAX)}]})
    return blocks


def fallback_text(digest: Digest) -> str:
    """Plain text shown in notifications and by clients that cannot render blocks."""
    return _clip(f"{digest.title}: {digest.summary}", TEXT_MAX)


def delivery_key(dag_id: str, run_id: str, name: str) -> str:
    """Stable id of one digest of one run, safe as a file name."""
    return hashlib.sha256(f"{dag_id}\x00{run_id}\x00{name}".encode()).hexdigest()[:32]


Poster = Callable[[str, list[dict[str, Any]]], None]


def post_once(store: ReportStore, report_date: date, key: str, digest: Digest, post: Poster) -> bool:
    """Post ``digest`` unless this ``key`` was already delivered; return True if it posted now.

    The record of a delivery is written beside the reports after the post succeeds (it
    also keeps the exact payload for audit). A post that fails raises and records nothing,
    so the task's retry posts again.
    """
    filename = f"{key}.json"
    if _delivered(store, report_date, filename):
        log.info("digest %s was already posted for this run; not posting again", key)
        return False
    blocks = build_blocks(digest)
    text = fallback_text(digest)
    post(text, blocks)
    record = json.dumps({"key": key, "text": text, "blocks": blocks}, ensure_ascii=False).encode()
    store.write_artifact(SENT_DIR, report_date, filename, record)
    log.info("posted digest %r (%d blocks)", digest.title, len(blocks))
    return True


def _delivered(store: ReportStore, report_date: date, filename: str) -> bool:
    try:
        store.read_artifact(SENT_DIR, report_date, filename)
    except (FileNotFoundError, OSError):
        return False
    return True
