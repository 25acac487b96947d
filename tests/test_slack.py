"""Slack digests: Block Kit shape and limits, and one post per run."""

from __future__ import annotations

import io
import json
import logging
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from traceo_finops.reports import ReportStore
from traceo_finops.slack import (
    FIELDS_MAX,
    HEADER_MAX,
    SENT_DIR,
    TEXT_MAX,
    ChannelPoster,
    Digest,
    SlackError,
    build_blocks,
    delivery_key,
    digest_metadata,
    fallback_text,
    find_key,
    install_scrubber,
    post_once,
    scrub,
)

pytestmark = pytest.mark.unit


def test_blocks_shape() -> None:
    d = Digest("Cardinality", "*3* series", {"Sources": "a"}, ("metric", "series"), [("up", 3), ("x_total", 10)],
               footer="Report: /r")
    blocks = build_blocks(d)
    assert [b["type"] for b in blocks] == ["header", "section", "section", "section", "context"]
    table = blocks[3]["text"]["text"]
    assert table.startswith("```") and "x_total" in table and table.splitlines()[1].startswith("-")
    assert fallback_text(d) == "Cardinality: *3* series"


def test_limits_are_respected() -> None:
    d = Digest("t" * 500, "s" * 10_000, {f"k{i}": "v" * 3000 for i in range(25)}, ("a",), [("x" * 200,)] * 200)
    blocks = build_blocks(d)
    assert len(blocks[0]["text"]["text"]) == HEADER_MAX
    assert len(blocks[1]["text"]["text"]) == TEXT_MAX
    assert len(blocks[2]["fields"]) == FIELDS_MAX and all(len(f["text"]) <= 2000 for f in blocks[2]["fields"])
    assert len(blocks[3]["text"]["text"]) <= TEXT_MAX


def test_posts_once_per_key(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path))
    sent: list[tuple[str, list]] = []
    key = delivery_key("finops_cardinality", "manual__2026-11-28T10:00:00+00:00", "cardinality")
    d = Digest("T", "S")
    assert post_once(store, date(2026, 11, 28), key, d, lambda t, b: sent.append((t, b))) is True
    assert post_once(store, date(2026, 11, 28), key, d, lambda t, b: sent.append((t, b))) is False
    assert len(sent) == 1
    other = delivery_key("finops_cardinality", "scheduled__2026-11-28", "cardinality")
    assert other != key
    assert post_once(store, date(2026, 11, 28), other, d, lambda t, b: sent.append((t, b))) is True
    assert len(sent) == 2


def test_failed_post_records_nothing(tmp_path: Path) -> None:
    store = ReportStore(str(tmp_path))

    def fail(text: str, blocks: list) -> None:
        raise RuntimeError("HTTP 500")

    key = delivery_key("d", "r", "n")
    with pytest.raises(RuntimeError):
        post_once(store, date(2026, 11, 28), key, Digest("T", "S"), fail)
    sent: list = []
    assert post_once(store, date(2026, 11, 28), key, Digest("T", "S"), lambda t, b: sent.append(t)) is True
    assert sent == ["T: S"]


# -- secrets ---------------------------------------------------------------------------------------------
def test_scrub_removes_webhook_paths_slack_tokens_and_given_secrets() -> None:
    text = ("POST https://hooks.slack.com/services/T0AB/B0CD/sEcReT123 with xoxb-1234-5678-AbCdEf; "
            "relay said /my%2Fpass%2Fword and my/pass/word")
    clean = scrub(text, ["my/pass/word"])
    assert "sEcReT123" not in clean and "AbCdEf" not in clean and "pass" not in clean
    assert clean.count("***") == 4 and "/services/***" in clean and "xoxb-***" in clean


def test_scrubber_reaches_child_loggers_and_tracebacks() -> None:
    """A filter on "slack_sdk" alone misses records of "slack_sdk.webhook.client": install_scrubber must not."""
    import slack_sdk.webhook.client  # noqa: F401 - its module logger must exist, as in a real post

    secret = "tok-" + "9f3a1c7e5b"
    early, late = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    before = root.level
    early_handler = logging.StreamHandler(early)
    root.addHandler(early_handler)
    root.setLevel(logging.DEBUG)
    try:
        client_logger = install_scrubber([secret])
        late_handler = logging.StreamHandler(late)  # added after the install, as a reconfigured handler would be
        root.addHandler(late_handler)
        logging.getLogger("slack_sdk.webhook.client").info("Going to retry the same request: POST http://h/%s", secret)
        logging.getLogger("slack_sdk").debug("url http://h/services/%s", secret)
        client_logger.debug("Sending a request - url: http://h/%s", secret)
        logging.getLogger("urllib3.connectionpool").warning("boom", exc_info=ValueError(f"refused http://h/{secret}"))
        logging.getLogger("slack_sdk.created_later").info("later %s", secret)
        root.removeHandler(late_handler)
    finally:
        root.removeHandler(early_handler)
        root.setLevel(before)
    assert "Going to retry the same request: POST http://h/***" in early.getvalue()
    assert "ValueError: refused http://h/***" in early.getvalue() and "later ***" in early.getvalue()
    assert secret not in early.getvalue()
    # A handler the filter was not installed on still gets scrubbed records from the known loggers.
    assert "POST http://h/***" in late.getvalue() and "Sending a request - url: http://h/***" in late.getvalue()
    assert secret not in "\n".join(line for line in late.getvalue().splitlines() if "later" not in line)


# -- exactly once with a bot token -----------------------------------------------------------------------
class FakeWebApi:
    """conversations.history and chat.postMessage of one workspace, in memory (newest message first)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self.fail_history: Exception | None = None

    def conversations_history(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("conversations.history")
        if self.fail_history:
            raise self.fail_history
        assert kwargs["include_all_metadata"] is True
        return {"ok": True, "messages": list(reversed(self.messages)), "has_more": False}

    def chat_postMessage(self, **kwargs: Any) -> dict[str, Any]:  # slack_sdk's name
        self.calls.append("chat.postMessage")
        ts = f"{1_800_000_000 + len(self.messages)}.000100"
        self.messages.append({"type": "message", "ts": ts, "text": kwargs["text"], "metadata": kwargs.get("metadata")})
        return {"ok": True, "channel": kwargs["channel"], "ts": ts}


def test_a_bot_token_post_whose_record_was_lost_is_not_posted_again(tmp_path: Path) -> None:
    store, api = ReportStore(str(tmp_path)), FakeWebApi()
    poster = ChannelPoster(api, "C0FINOPS1", "slack_bot")
    key = delivery_key("finops_cardinality", "scheduled__2026-11-27", "digest")
    assert post_once(store, date(2026, 11, 28), key, Digest("T", "S"), poster) is True
    assert [m["metadata"] for m in api.messages] == [digest_metadata(key)]
    assert digest_metadata(key) == {"event_type": "traceo_finops_digest", "event_payload": {"key": key}}

    record = Path(store.artifact_dir(SENT_DIR, date(2026, 11, 28))) / f"{key}.json"
    record.unlink()  # the task died between the post and its record
    assert post_once(store, date(2026, 11, 28), key, Digest("T", "S"), poster) is False
    assert len(api.messages) == 1
    assert json.loads(record.read_text())["ts"] == api.messages[0]["ts"]
    calls = len(api.calls)
    assert post_once(store, date(2026, 11, 28), key, Digest("T", "S"), poster) is False
    assert len(api.calls) == calls  # the record answers without asking Slack


def test_an_unreadable_history_posts_nothing(tmp_path: Path) -> None:
    api = FakeWebApi()
    api.fail_history = RuntimeError("missing_scope: needed channels:history for xoxb-1-2-SECRETxyz")
    poster = ChannelPoster(api, "C0FINOPS1", "slack_bot", secrets=["xoxb-1-2-SECRETxyz"])
    with pytest.raises(SlackError, match=r"'slack_bot': reading the history .* C0FINOPS1 failed: missing_scope") as err:
        post_once(ReportStore(str(tmp_path)), date(2026, 11, 28), "k" * 32, Digest("T", "S"), poster)
    assert "SECRETxyz" not in str(err.value) and err.value.__context__ is None
    assert api.calls == ["conversations.history"]


def test_find_key_matches_only_our_event_and_key() -> None:
    messages = [{"ts": "3", "metadata": {"event_type": "other_app", "event_payload": {"key": "k1"}}},
                {"ts": "2", "metadata": {"event_type": "traceo_finops_digest", "event_payload": {"key": "k2"}}},
                {"ts": "1", "text": "run key k1 (a webhook post: text, no metadata)"}]
    assert find_key(messages, "k1") is None
    assert find_key(messages, "k2") == "2"
