"""Slack digests: a Block Kit message builder and a post per run that says what it can promise.

Two delivery paths, built by ``airflow_adapter.slack_poster`` from the ``slack_finops`` connection:

- **Incoming webhook** (``slackwebhook``): *at least once*. A webhook cannot be asked what it
  already delivered, so a task that dies between the post and its record posts again on retry;
  the run key in the message footer makes such a duplicate recognisable.
- **Bot token** (``slack``): *exactly once*. Each digest is posted with ``chat.postMessage``
  carrying the run's key in the message metadata, and before posting, the channel's recent
  messages (``conversations.history``) are searched for that key.

Either way the delivery is then recorded beside the reports, so a retry after the record skips
Slack altogether.

Files (a chart, a CSV) can only be uploaded with a bot token — an incoming webhook takes messages, not
files. :func:`upload_once` uploads them through Slack's current upload API (``files.getUploadURLExternal``,
a POST of the bytes to the returned URL, ``files.completeUploadExternal`` sharing them into the channel;
``files.upload`` is retired) with the upload's key in the share message, after looking for that key in
the channel's recent history: exactly once, like a digest.

The HTTP clients retry 429 (honouring ``Retry-After``) and 5xx. Secrets (the webhook URL's path is its
token; the bot token) are scrubbed from every log record and error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Protocol, runtime_checkable

from traceo_finops.reports import ReportStore

log = logging.getLogger(__name__)

# Block Kit limits (https://docs.slack.dev/reference/block-kit/blocks): header text 150 chars,
# section text 3000 chars, at most 10 fields per section of 2000 chars each, 50 blocks.
HEADER_MAX = 150
TEXT_MAX = 3000
FIELDS_MAX = 10
SENT_DIR = "slack_digests"
# Message metadata of a digest posted with a bot token (https://docs.slack.dev/messaging/message-metadata).
DIGEST_EVENT_TYPE = "traceo_finops_digest"
# How far back a bot-token post looks for an earlier delivery of the same key. Slack caps
# conversations.history pages (100 messages; 15 for apps distributed outside the Marketplace).
HISTORY_LOOKBACK = timedelta(days=14)
HISTORY_PAGE = 100
HISTORY_PAGES = 5
# Loggers of the HTTP clients a post goes through; the Slack client itself is handed CLIENT_LOGGER.
SCRUBBED_LOGGERS = ("slack_sdk", "urllib3", "airflow.providers.slack", "airflow.task.hooks.airflow.providers.slack")
CLIENT_LOGGER = "traceo_finops.slack.http"


class SlackError(RuntimeError):
    """The digest could not be delivered; the message names the connection and the answer."""


class SlackRejected(SlackError):
    """Slack refused the request for good (bad token or webhook, unknown channel, missing scope): no retry helps."""


# A webhook URL's path is its token: https://hooks.slack.com/services/T…/B…/secret.
_WEBHOOK_PATH = re.compile(r"(/services/)[A-Za-z0-9_]+/[A-Za-z0-9_]+/[A-Za-z0-9_]+")
# Slack tokens: bot xoxb-, user xoxp-, app-level xapp-, and the older xoxa-/xoxr-/xoxs- kinds.
_SLACK_TOKEN = re.compile(r"\b(xox[abposr]|xapp)-[A-Za-z0-9-]+")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every webhook token path, Slack token and given secret replaced by ``***``."""
    variants = set()
    for secret in secrets:
        if secret and len(secret) >= 4:
            for form in (secret, secret.lstrip("/"), urllib.parse.quote(secret), urllib.parse.quote(secret, safe="")):
                if len(form) >= 4:
                    variants.add(form)
    for form in sorted(variants, key=len, reverse=True):
        text = text.replace(form, "***")
    return _SLACK_TOKEN.sub(r"\1-***", _WEBHOOK_PATH.sub(r"\1***", text))


class ScrubFilter(logging.Filter):
    """A logging filter that scrubs secrets from records: message, arguments and traceback.

    A filter added to a *logger* sees only the records created on that very logger, not those its
    child loggers propagate up (``slack_sdk.webhook.client`` skips the filters of ``slack_sdk``).
    :func:`install_scrubber` therefore puts it on every relevant logger and on the root handlers.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: set[str] = {s for s in secrets if s}

    def add(self, secrets: Iterable[str]) -> None:
        self.secrets.update(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave the record to logging's own error report
            return True
        clean = scrub(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[0] is not None:
            # Formatters use exc_text when it is set: format the traceback once, scrubbed.
            text = record.exc_text or "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = scrub(text, self.secrets)
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, self.secrets)
        return True


_SCRUBBER = ScrubFilter()


def install_scrubber(secrets: Iterable[str], prefixes: Sequence[str] = SCRUBBED_LOGGERS) -> logging.Logger:
    """Scrub ``secrets`` from every log record of the HTTP clients; return the logger to give the Slack client.

    One process-wide filter (secrets accumulate; installing twice adds nothing): on the client
    logger, on every existing logger under ``prefixes`` (each child too, see :class:`ScrubFilter`),
    and on the root logger's handlers, which also covers loggers created after this call.
    """
    _SCRUBBER.add(secrets)
    existing = [name for name in list(logging.root.manager.loggerDict)
                if any(name == p or name.startswith(p + ".") for p in prefixes)]
    for name in {CLIENT_LOGGER, *prefixes, *existing}:
        logger = logging.getLogger(name)
        if _SCRUBBER not in logger.filters:
            logger.addFilter(_SCRUBBER)
    for handler in logging.getLogger().handlers:
        if _SCRUBBER not in handler.filters:
            handler.addFilter(_SCRUBBER)
    return logging.getLogger(CLIENT_LOGGER)


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
"""Posts ``(text, blocks)`` once; a webhook poster is this and only this (at least once)."""


@runtime_checkable
class KeyedPoster(Protocol):
    """A poster that can tell whether a key was already delivered (a bot token: exactly once)."""

    def find(self, key: str) -> str | None:
        """The ``ts`` of an earlier message carrying ``key``, or None."""
        ...

    def post_keyed(self, text: str, blocks: list[dict[str, Any]], key: str) -> str:
        """Post with ``key`` in the message metadata; return the message's ``ts``."""
        ...


class WebApi(Protocol):
    """The Web API methods of ``slack_sdk.WebClient`` a bot-token poster uses."""

    def conversations_history(self, *, channel: str, **kwargs: Any) -> Any: ...

    def chat_postMessage(self, *, channel: str, **kwargs: Any) -> Any: ...  # slack_sdk's name

    def files_upload_v2(self, **kwargs: Any) -> Any: ...  # getUploadURLExternal, the POST, completeUploadExternal


@dataclass(frozen=True)
class Upload:
    """One file to share in the channel (a PNG chart, a CSV)."""

    filename: str
    content: bytes
    title: str
    alt_txt: str = ""  # the screen-reader description of an image
    snippet_type: str = ""  # e.g. "csv"


@runtime_checkable
class FileUploader(Protocol):
    """A poster that can upload files, at most once per key (a bot token; a webhook cannot upload)."""

    def find_upload(self, key: str) -> str | None:
        """The ``ts`` of an earlier file share carrying ``key``, or None."""
        ...

    def upload_keyed(self, files: Sequence[Upload], comment: str, key: str) -> list[dict[str, Any]]:
        """Upload ``files`` into the channel in one share whose message carries ``key``; return Slack's files."""
        ...


def upload_comment(comment: str, key: str) -> str:
    """The text of a file share: ``comment`` and the upload key that makes a retry find it."""
    return f"{comment} · upload key {key}"


def find_upload_key(messages: Iterable[Mapping[str, Any]], key: str) -> str | None:
    """The ``ts`` of the first file share whose text carries upload ``key`` (``conversations.history`` shape).

    A file share cannot carry message metadata (``files.completeUploadExternal`` takes none): its
    text, the initial comment, carries the key instead.
    """
    marker = f"upload key {key}"
    for message in messages:
        if message.get("files") and marker in str(message.get("text") or ""):
            return str(message.get("ts", "")) or "?"
    return None


def digest_metadata(key: str) -> dict[str, Any]:
    """The message metadata that marks a digest with its delivery key."""
    return {"event_type": DIGEST_EVENT_TYPE, "event_payload": {"key": key}}


def find_key(messages: Iterable[Mapping[str, Any]], key: str) -> str | None:
    """The ``ts`` of the first message whose metadata carries delivery ``key`` (``conversations.history`` shape)."""
    for message in messages:
        meta = message.get("metadata") or {}
        if meta.get("event_type") == DIGEST_EVENT_TYPE and (meta.get("event_payload") or {}).get("key") == key:
            return str(message.get("ts", "")) or "?"
    return None


@dataclass
class ChannelPoster:
    """Posts digests into one channel with a bot token, so that a key is posted at most once.

    ``find`` reads the channel's recent history with metadata; ``post_keyed`` posts with the key
    in the metadata. Needs the ``chat:write`` and ``channels:history`` (``groups:history`` for a
    private channel) scopes, and the bot in the channel; ``upload_keyed`` also ``files:write`` and
    ``files:read``. A history that cannot be read is an error, not a reason to post blind.
    """

    client: WebApi
    channel: str
    conn_id: str = "slack_finops"
    secrets: Sequence[str] = ()
    lookback: timedelta = HISTORY_LOOKBACK
    page: int = HISTORY_PAGE
    pages: int = HISTORY_PAGES
    now: Callable[[], float] = field(default=time.time, repr=False)

    def _fail(self, what: str, exc: Exception) -> SlackError:
        # slack_sdk's SlackApiError carries the HTTP answer: "ok": false with a 200 (or another 4xx) is final.
        status = getattr(getattr(exc, "response", None), "status_code", None)
        kind = SlackRejected if isinstance(status, int) and status < 500 and status != 429 else SlackError
        return kind(f"Slack connection {self.conn_id!r}: {what} in channel {self.channel} failed: "
                    f"{scrub(str(exc), self.secrets) or type(exc).__name__}")

    def find(self, key: str) -> str | None:
        return self._search(lambda messages: find_key(messages, key), key, "post")

    def find_upload(self, key: str) -> str | None:
        return self._search(lambda messages: find_upload_key(messages, key), key, "upload")

    def _search(self, match: Callable[[list[Mapping[str, Any]]], str | None], key: str, verb: str) -> str | None:
        """Page through the channel's recent history until ``match`` finds the key's message."""
        cursor: str | None = None
        error: Exception | None = None
        for _ in range(self.pages):
            try:
                args: dict[str, Any] = {"channel": self.channel, "include_all_metadata": True, "limit": self.page,
                                        "oldest": f"{self.now() - self.lookback.total_seconds():.6f}"}
                if cursor:
                    args["cursor"] = cursor
                answer = self.client.conversations_history(**args)
            except Exception as exc:  # slack_sdk raises SlackApiError for ok=false, URLError for the network
                error = exc
                break
            ts = match(list(answer.get("messages") or []))
            if ts:
                return ts
            cursor = ((answer.get("response_metadata") or {}).get("next_cursor")) or None
            if not answer.get("has_more") or not cursor:
                return None
        if error is not None:
            # Raised outside the except block: no chained exception carries the unscrubbed text.
            raise self._fail(f"reading the history (to {verb} at most once)", error)
        log.warning("key %s: not found in the last %d pages of %s; going on to %s", key, self.pages, self.channel,
                    verb)
        return None

    def post_keyed(self, text: str, blocks: list[dict[str, Any]], key: str) -> str:
        error: Exception | None = None
        try:
            answer = self.client.chat_postMessage(channel=self.channel, text=text, blocks=blocks,
                                                  metadata=digest_metadata(key))
        except Exception as exc:
            error = exc
        if error is not None:
            raise self._fail("posting the digest", error)
        return str(answer.get("ts", ""))

    def upload_keyed(self, files: Sequence[Upload], comment: str, key: str) -> list[dict[str, Any]]:
        """Upload ``files`` with slack_sdk's ``files_upload_v2`` (getUploadURLExternal, the POST of the bytes,
        completeUploadExternal with ``channel_id``) as one share whose text carries ``key``.

        Needs the ``files:write`` scope (and ``files:read``, which slack_sdk's v2 upload asks for).
        """
        error: Exception | None = None
        uploads = [{"filename": f.filename, "content": f.content, "title": f.title,
                    **({"alt_txt": f.alt_txt} if f.alt_txt else {}),
                    **({"snippet_type": f.snippet_type} if f.snippet_type else {})} for f in files]
        try:
            answer = self.client.files_upload_v2(file_uploads=uploads, channel=self.channel,
                                                 initial_comment=upload_comment(comment, key))
        except Exception as exc:  # SlackApiError (ok=false), SlackRequestError (the upload URL refused), URLError
            error = exc
        if error is not None:
            raise self._fail(f"uploading {', '.join(f.filename for f in files)}", error)
        return [dict(f) for f in (answer.get("files") or [])]

    def __call__(self, text: str, blocks: list[dict[str, Any]]) -> None:
        """A plain post, without a key (e.g. a connection check)."""
        error: Exception | None = None
        try:
            self.client.chat_postMessage(channel=self.channel, text=text, blocks=blocks)
        except Exception as exc:
            error = exc
        if error is not None:
            raise self._fail("posting", error)


def post_once(store: ReportStore, report_date: date, key: str, digest: Digest, post: Poster) -> bool:
    """Post ``digest`` unless this ``key`` was already delivered; return True if it posted now.

    The record of a delivery is written beside the reports after the post succeeds (it also keeps
    the exact payload for audit), so a retry after the record does not post. Between the post and
    the record a crash is possible: a :class:`KeyedPoster` (bot token) then finds the key in the
    channel and only writes the record (exactly once); a plain poster (webhook) posts again, the
    duplicate carrying the same run key (at least once). A post that fails raises and records nothing.
    """
    filename = f"{key}.json"
    if _delivered(store, report_date, filename):
        log.info("digest %s was already posted for this run; not posting again", key)
        return False
    blocks = build_blocks(digest)
    text = fallback_text(digest)
    entry: dict[str, Any] = {"key": key, "text": text, "blocks": blocks}
    if isinstance(post, KeyedPoster):
        found = post.find(key)
        if found:
            log.info("digest %s is already in the channel (message %s); recording it, not posting again", key, found)
            _record(store, report_date, filename, {**entry, "delivery": "exactly_once", "ts": found, "found": True})
            return False
        ts = post.post_keyed(text, blocks, key)
        entry.update(delivery="exactly_once", ts=ts)
    else:
        post(text, blocks)
        entry.update(delivery="at_least_once")
    _record(store, report_date, filename, entry)
    log.info("posted digest %r (%d blocks)", digest.title, len(blocks))
    return True


def upload_once(store: ReportStore, report_date: date, key: str, files: Sequence[Upload], comment: str,
                uploader: FileUploader) -> bool:
    """Upload ``files`` into the channel unless this ``key`` was already shared; return True if it uploaded now.

    The same promise as :func:`post_once` with a bot token: a record beside the reports answers a
    retry without asking Slack; without it, the channel's recent history is searched for the key in a
    file share's text (a task killed between the share and its record does not share twice). Slack
    shares a completed upload asynchronously (within seconds), so a retry minutes later sees it.
    An upload that fails raises and records nothing (an upload never completed is discarded by Slack).
    """
    filename = f"{key}.json"
    if _delivered(store, report_date, filename):
        log.info("files %s were already uploaded for this run; not uploading again", key)
        return False
    entry: dict[str, Any] = {"key": key, "kind": "files", "comment": comment, "delivery": "exactly_once",
                             "files": [{"filename": f.filename, "title": f.title, "bytes": len(f.content),
                                        "sha256": hashlib.sha256(f.content).hexdigest()} for f in files]}
    found = uploader.find_upload(key)
    if found:
        log.info("files %s are already in the channel (message %s); recording it, not uploading again", key, found)
        _record(store, report_date, filename, {**entry, "ts": found, "found": True})
        return False
    shared = uploader.upload_keyed(files, comment, key)
    entry["slack_files"] = [{k: f.get(k) for k in ("id", "name", "title", "mimetype", "size") if k in f}
                            for f in shared]
    _record(store, report_date, filename, entry)
    log.info("uploaded %s", ", ".join(f.filename for f in files))
    return True


def _record(store: ReportStore, report_date: date, filename: str, entry: Mapping[str, Any]) -> None:
    store.write_artifact(SENT_DIR, report_date, filename, json.dumps(entry, ensure_ascii=False).encode())


def _delivered(store: ReportStore, report_date: date, filename: str) -> bool:
    try:
        store.read_artifact(SENT_DIR, report_date, filename)
    except (FileNotFoundError, OSError):
        return False
    return True
