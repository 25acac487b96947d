"""Slack delivery against the devstack Slack sink (a private instance of devstack/slack_sink.py).

- No secret in any log: a webhook token and a bot token appear in no log record (root at DEBUG,
  slack_sdk and urllib3 included), no stderr output and no raised error, whether Slack answers
  errors, a relay echoes the path, or the port is closed.
- Exactly once with a bot token: a digest posted by a task that was killed before recording it is
  found in the channel's metadata by the retry and not posted again. With a webhook the retry posts
  again (at least once), and both messages carry the same run key.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from devstack import slack_sink
from tests.support.net import free_port
from tests.support.slack import bot_conn, webhook_conn
from traceo_finops.airflow_adapter import slack_poster
from traceo_finops.config import ConfigError
from traceo_finops.reports import ReportStore
from traceo_finops.slack import (
    SENT_DIR,
    Digest,
    SlackError,
    SlackRejected,
    delivery_key,
    digest_metadata,
    post_once,
)

ROOT = Path(__file__).resolve().parents[1]
DAG = "kit_slack_dag"
DAY = date(2026, 11, 27)
LOGGERS = ("slack_sdk", "urllib3", "airflow", "traceo_finops")


@pytest.fixture
def all_logs() -> Iterator[io.StringIO]:
    """Every log record of the process at DEBUG (root, slack_sdk, urllib3, airflow), with tracebacks."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in ("", *LOGGERS)}
    root.addHandler(handler)
    for name in ("", *LOGGERS):
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield buf
    root.removeHandler(handler)
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def assert_nowhere(secret: str, *texts: str) -> None:
    distinctive = secret.rsplit("/", 1)[-1].rsplit("-", 1)[-1]  # the random part
    for text in texts:
        assert secret not in text and distinctive not in text


def error_texts(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


# -- no secret in any log ----------------------------------------------------------------------------------
@pytest.mark.integration
def test_webhook_errors_and_relay_echo_leak_no_token(fresh: str, monkeypatch: pytest.MonkeyPatch,
                                                     all_logs: io.StringIO, capfd: pytest.CaptureFixture[str]) -> None:
    token = webhook_conn(monkeypatch, "slack_leak_hook", fresh)
    slack_sink.script_failures(fresh, [429], retry_after=0)
    slack_sink.script_failures(fresh, [500, 404], echo_path=True)  # a relay that echoes the path
    post = slack_poster("slack_leak_hook")
    with pytest.raises(SlackRejected) as err:
        post("secret check", [{"type": "section", "text": {"type": "mrkdwn", "text": "hello"}}])
    out, errout = capfd.readouterr()
    logs = all_logs.getvalue()
    # The token was really in flight, logged on the retries, and echoed back in the error.
    attempts = slack_sink.received(fresh)
    assert [a["status"] for a in attempts] == [429, 500, 404] and all(token in a["path"] for a in attempts)
    assert "RateLimitErrorRetryHandler for POST http://" in logs and "ServerErrorRetryHandler" in logs
    assert "no_service: /***" in str(err.value)
    assert_nowhere(token, logs, out, errout, *error_texts(err.value))


@pytest.mark.integration
def test_closed_port_leaks_no_token(monkeypatch: pytest.MonkeyPatch, all_logs: io.StringIO,
                                    capfd: pytest.CaptureFixture[str]) -> None:
    token = webhook_conn(monkeypatch, "slack_leak_closed", f"127.0.0.1:{free_port()}")
    with pytest.raises(SlackError, match="Connection refused") as err:
        slack_poster("slack_leak_closed")("secret check", [])
    out, errout = capfd.readouterr()
    logs = all_logs.getvalue()
    assert logs.count("Going to retry the same request: POST http://127.0.0.1") == 3
    assert not isinstance(err.value, SlackRejected)  # a network fault: worth the task's retry
    assert_nowhere(token, logs, out, errout, *error_texts(err.value))


@pytest.mark.integration
def test_bot_token_errors_leak_no_token(fresh: str, monkeypatch: pytest.MonkeyPatch, all_logs: io.StringIO,
                                        capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from airflow.sdk._shared.secrets_masker.secrets_masker import redact

    token = bot_conn(monkeypatch, "slack_leak_bot", fresh)
    slack_sink.script_failures(fresh, [429], retry_after=0)
    slack_sink.script_api_errors(fresh, ["invalid_auth"])
    poster = slack_poster("slack_leak_bot")
    with pytest.raises(SlackRejected, match="invalid_auth") as err:
        post_once(ReportStore(str(tmp_path)), DAY, "k" * 32, Digest("T", "S"), poster)
    out, errout = capfd.readouterr()
    logs = all_logs.getvalue()
    assert [a["api"] for a in slack_sink.received(fresh)] == ["conversations.history"] * 2
    assert "Sending a request - url: http://127.0.0.1" in logs  # slack_sdk logged its requests
    assert_nowhere(token, logs, out, errout, *error_texts(err.value))
    assert token not in str(redact(f"Authorization: Bearer {token}"))  # registered with Airflow's masker


# -- delivery promises -------------------------------------------------------------------------------------
TASK = r'''
"""One digest task: post the run's digest through the kit; optionally die before recording it."""
import json, os, signal, sys
from datetime import UTC, datetime

from traceo_finops.airflow_adapter import slack_poster
from traceo_finops.config import FinopsConfig, Slack
from traceo_finops.kit.context import RunContext
from traceo_finops.kit.digest import post_digest
from traceo_finops.reports import ReportStore
from traceo_finops.slack import Digest
from traceo_finops.window import Window

args = json.loads(sys.argv[1])
if args["lose_record"]:
    original = ReportStore.write_artifact

    def write_artifact(self, dataset, *a, **kw):
        if dataset == "slack_digests":
            os.kill(os.getpid(), signal.SIGKILL)  # posted, killed before the delivery is recorded
        return original(self, dataset, *a, **kw)

    ReportStore.write_artifact = write_artifact
store = ReportStore(args["root"])
ctx = RunContext(cfg=FinopsConfig.model_construct(slack=Slack(conn_id=args["conn_id"])), workflow="cardinality",
                 dag_id=args["dag_id"], run_id=args["run_id"],
                 window=Window(datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC)),
                 store_factory=lambda _cfg: store, poster_factory=slack_poster)
written = {"report_date": "2026-11-27", "coverage": "1 of 1 source", "failed_targets": []}
print(json.dumps({"posted": post_digest(ctx, written, lambda c, w: Digest("Cardinality", "*42* series"))}))
'''


def digest_task(tmp_path: Path, conn_id: str, run_id: str, lose_record: bool = False) -> tuple[int, Any]:
    script = tmp_path / "digest_task.py"
    script.write_text(TASK)
    args = {"root": str(tmp_path / "reports"), "conn_id": conn_id, "dag_id": DAG, "run_id": run_id,
            "lose_record": lose_record}
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'include'}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, str(script), json.dumps(args)], env=env, capture_output=True, text=True,
                          timeout=60)
    out = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else done.stderr[-2000:]
    return done.returncode, out


def record_of(tmp_path: Path, key: str) -> Path:
    return tmp_path / "reports" / "_artifacts" / SENT_DIR / f"report_date={DAY}" / f"{key}.json"


@pytest.mark.integration
def test_bot_token_posts_exactly_once_when_the_record_was_lost(fresh: str, monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    bot_conn(monkeypatch, "slack_once_bot", fresh, channel="C0ONCE0001")
    run_id = "scheduled__2026-11-27T00:00:00+00:00"
    key = delivery_key(DAG, run_id, "digest")

    code, _ = digest_task(tmp_path, "slack_once_bot", run_id, lose_record=True)
    assert code == -signal.SIGKILL
    posts = [r for r in slack_sink.received(fresh) if r["delivered"]]
    assert len(posts) == 1 and posts[0]["message"]["metadata"] == digest_metadata(key)
    assert not record_of(tmp_path, key).exists()

    code, out = digest_task(tmp_path, "slack_once_bot", run_id)  # Airflow's retry of the task
    assert (code, out) == (0, {"posted": False})
    assert [r for r in slack_sink.received(fresh) if r["delivered"]] == posts
    assert json.loads(record_of(tmp_path, key).read_text())["ts"] == posts[0]["message"]["ts"]

    calls = len(slack_sink.received(fresh))
    assert digest_task(tmp_path, "slack_once_bot", run_id) == (0, {"posted": False})
    assert len(slack_sink.received(fresh)) == calls  # the record answers; Slack is not asked

    # Another run of the same DAG and date is another digest.
    assert digest_task(tmp_path, "slack_once_bot", "manual__2026-11-28T09:00:00+00:00") == (0, {"posted": True})
    assert len([r for r in slack_sink.received(fresh) if r["delivered"]]) == 2


@pytest.mark.integration
def test_webhook_posts_at_least_once_and_the_duplicate_carries_the_run_key(fresh: str, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    webhook_conn(monkeypatch, "slack_once_hook", fresh)
    run_id = "scheduled__2026-11-27T00:00:00+00:00"
    key = delivery_key(DAG, run_id, "digest")
    assert digest_task(tmp_path, "slack_once_hook", run_id, lose_record=True)[0] == -signal.SIGKILL
    assert digest_task(tmp_path, "slack_once_hook", run_id) == (0, {"posted": True})
    posts = [r["body"] for r in slack_sink.received(fresh) if r["delivered"]]
    assert len(posts) == 2  # a webhook cannot be asked what it delivered
    footers = [b["blocks"][-1]["elements"][0]["text"] for b in posts]
    assert footers[0] == footers[1] and footers[0].endswith(f"run key {key}")


@pytest.mark.unit
def test_a_bot_connection_needs_a_channel_id(monkeypatch: pytest.MonkeyPatch) -> None:
    bot_conn(monkeypatch, "slack_named_channel", "http://127.0.0.1:9", channel="#finops")
    with pytest.raises(ConfigError, match=r"needs extra\.channel set to the channel ID .* got '#finops'"):
        slack_poster("slack_named_channel")


# -- the sink speaks the Web API the way slack_sdk expects -------------------------------------------------
@pytest.mark.integration
def test_sink_web_api_shapes(fresh: str) -> None:
    client = WebClient(token="xoxb-1-2-sinkcheck", base_url=slack_sink.api_url(fresh))
    assert client.auth_test()["bot_id"] == "B000"
    sent = [client.chat_postMessage(channel="C0SHAPES01", text=f"m{i}",
                                    metadata={"event_type": "traceo_finops_digest", "event_payload": {"key": f"k{i}"}})
            for i in range(3)]
    assert [s["channel"] for s in sent] == ["C0SHAPES01"] * 3 and sent[0]["ts"] < sent[1]["ts"] < sent[2]["ts"]

    first = client.conversations_history(channel="C0SHAPES01", limit=2, include_all_metadata=True)
    assert [m["text"] for m in first["messages"]] == ["m2", "m1"] and first["has_more"] is True
    rest = client.conversations_history(channel="C0SHAPES01", limit=2, include_all_metadata=True,
                                        cursor=first["response_metadata"]["next_cursor"])
    assert [m["metadata"]["event_payload"]["key"] for m in rest["messages"]] == ["k0"] and rest["has_more"] is False
    plain = client.conversations_history(channel="C0SHAPES01")
    assert all("metadata" not in m for m in plain["messages"])
    newer = client.conversations_history(channel="C0SHAPES01", oldest=sent[1]["ts"])
    assert [m["text"] for m in newer["messages"]] == ["m2"]

    with pytest.raises(SlackApiError, match="channel_not_found"):
        client.conversations_history(channel="#general")
    with pytest.raises(SlackApiError, match="not_authed"):
        WebClient(base_url=slack_sink.api_url(fresh)).conversations_history(channel="C0SHAPES01")
    assert all("authorization" not in {k.lower() for k in r["headers"]} for r in slack_sink.received(fresh))


@pytest.mark.unit
def test_the_bot_connection_example_in_the_docs_works(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.models.connection import Connection
    from airflow.providers.slack.hooks.slack import SlackHook

    from traceo_finops.slack import ChannelPoster

    text = (ROOT / "docs" / "connections.md").read_text(encoding="utf-8")
    example = json.loads(text.split("```jsonc\n", 1)[1].split("```", 1)[0])
    env_line = next(line for line in text.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
                    if line.startswith("AIRFLOW_CONN_SLACK_FINOPS="))
    assert json.loads(env_line.split("=", 1)[1].strip("'")) == example
    conn = Connection.from_json(json.dumps(example), conn_id="slack_finops")
    assert SlackHook(slack_conn_id="slack_finops")._get_conn_params(conn)["token"] == example["password"]
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_DOC_EXAMPLE", json.dumps(example))
    poster = slack_poster("slack_doc_example")
    assert isinstance(poster, ChannelPoster) and poster.channel == example["extra"]["channel"]
