"""The cost report's chart (PNG) and ranked actions (CSV): built with the report, committed beside it, and with a
bot-token Slack connection uploaded once per run through Slack's current upload API — against a private instance
of the devstack's Slack sink (devstack/slack_sink.py), through the real slack_sdk client of the kit's poster.
With a webhook connection nothing is uploaded and the digest says why."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from devstack import slack_sink
from tests.support.slack import bot_conn, webhook_conn
from tests.test_cost_report_inputs import DAY, STORAGE_BARE, STORAGE_OK, put_tiering
from tests.test_cost_report_inputs import ctx as report_ctx
from traceo_finops.airflow_adapter import ConnectionMissing, slack_poster
from traceo_finops.config import FinopsConfig
from traceo_finops.cost_report import workflow as wf
from traceo_finops.cost_report.attachments import ACTIONS_FILE, ARTIFACT_DIR, CHART_FILE, PNG_SIGNATURE
from traceo_finops.cost_report.dataset import ACTIONS
from traceo_finops.kit.context import RunContext
from traceo_finops.kit.digest import post_digest
from traceo_finops.kit.publish import publish, read_committed
from traceo_finops.reports import ReportStore
from traceo_finops.slack import SENT_DIR, Upload, delivery_key

RUN = "scheduled__2026-12-06T00:00:00+00:00"
CHANNEL = "C0COSTRPT1"


def slack_ctx(root: Path, conn_id: str, run: str = RUN) -> RunContext:
    c = report_ctx(root, "finops_cost_report", DAY)
    c.cfg = FinopsConfig.model_validate({"sources": [{"name": "prom"}], "slack": {"conn_id": conn_id}})
    c.run_id, c.poster_factory = run, slack_poster
    return c


def build_and_publish(c: RunContext, storage: Any = STORAGE_OK) -> dict[str, Any]:
    report, results = wf.build(c, [storage.as_dict()])
    return dict(publish(c, report, results))


def with_history(root: Path) -> None:
    for i in range(10, 0, -1):
        put_tiering(root, DAY - timedelta(days=i), 40.0 + i)
    put_tiering(root, DAY, 55.0)


def csv_rows(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode("utf-8"))))


def as_csv_cells(row: dict[str, Any]) -> dict[str, str]:
    """A committed actions row as the CSV spells it (no window columns, no run_id; floats exact)."""
    window = {"window_start", "window_end", "run_id"}
    return {k: "" if v is None else repr(v) if isinstance(v, float) else str(v) for k, v in row.items()
            if k not in window}


def api_calls(url: str) -> list[str]:
    return [r.get("api") or "webhook" for r in slack_sink.received(url)]


# -- the files themselves ---------------------------------------------------------------------------------
@pytest.mark.unit
def test_the_chart_is_a_png_and_the_csv_is_the_actions_dataset(tmp_path: Path) -> None:
    with_history(tmp_path)
    c = report_ctx(tmp_path, "finops_cost_report", DAY)
    written = build_and_publish(c)
    store = ReportStore(str(tmp_path))
    png = store.read_artifact(ARTIFACT_DIR, DAY, CHART_FILE)
    assert png.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(png)) as image:
        image.verify()  # a complete, uncorrupted PNG
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 200
    actions = read_committed(store, ACTIONS.name, DAY).to_pylist()
    assert actions  # the lifecycle rule of the tiering report
    assert csv_rows(store.read_artifact(ARTIFACT_DIR, DAY, ACTIONS_FILE)) == [
        as_csv_cells(a) for a in sorted(actions, key=lambda a: a["rank"])]
    # Both belong to the committed set.
    assert {u.rsplit("/", 1)[-1] for u in written["artifacts"]} == {CHART_FILE, ACTIONS_FILE}
    assert set(wf.attachment_uris(written)) == {CHART_FILE, ACTIONS_FILE}


@pytest.mark.unit
def test_nothing_to_report_yet_has_no_chart(tmp_path: Path) -> None:
    written = build_and_publish(report_ctx(tmp_path, "finops_cost_report", DAY), STORAGE_BARE)
    assert written["artifacts"] == [] and wf.attachment_uris(written) == {}


# -- Slack -----------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_a_bot_token_uploads_the_chart_and_the_csv_once(fresh: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    bot_conn(monkeypatch, "slack_cost_bot", fresh, CHANNEL)
    with_history(tmp_path)
    c = slack_ctx(tmp_path, "slack_cost_bot")
    written = build_and_publish(c)
    assert post_digest(c, written, wf.digest) is True
    (digest,) = [r for r in slack_sink.received(fresh) if r.get("api") == "chat.postMessage"]
    assert "The cost chart and the ranked actions (CSV) follow in this channel" in json.dumps(digest["body"])

    assert wf.upload_files(c, written) is True
    shared = slack_sink.shared_files(fresh)
    assert [f["name"] for f in shared] == [f"cost-by-category-{DAY}.png", f"actions-{DAY}.csv"]
    assert {f["channel"] for f in shared} == {CHANNEL}
    key = delivery_key(c.dag_id, c.run_id, "files")
    assert all(f"upload key {key}" in f["text"] for f in shared)
    png, table = shared[0]["content"], shared[1]["content"]
    assert png.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(png)) as image:
        image.verify()
    actions = read_committed(ReportStore(str(tmp_path)), ACTIONS.name, DAY).to_pylist()
    assert csv_rows(table) == [as_csv_cells(a) for a in sorted(actions, key=lambda a: a["rank"])]
    # The bytes Slack received are the committed artifacts, byte for byte.
    store = ReportStore(str(tmp_path))
    assert png == store.read_artifact(ARTIFACT_DIR, DAY, CHART_FILE)
    assert table == store.read_artifact(ARTIFACT_DIR, DAY, ACTIONS_FILE)
    # The current upload API, never the retired files.upload.
    calls = api_calls(fresh)
    assert calls.count("files.getUploadURLExternal") == 2 and calls.count("upload") == 2
    assert calls.count("files.completeUploadExternal") == 1 and "files.upload" not in calls

    # A retry of the task: the record answers, Slack is not asked.
    before = len(slack_sink.received(fresh))
    assert wf.upload_files(c, written) is False
    assert len(slack_sink.received(fresh)) == before
    # A task killed between the share and its record: the retry finds the key in the channel.
    record = Path(store.artifact_dir(SENT_DIR, DAY)) / f"{key}.json"
    record.unlink()
    assert wf.upload_files(c, written) is False
    assert len(slack_sink.shared_files(fresh)) == 2
    assert api_calls(fresh)[before:] == ["conversations.history"]
    assert json.loads(record.read_text())["found"] is True


@pytest.mark.integration
def test_a_webhook_uploads_nothing_and_the_digest_says_why(fresh: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    webhook_conn(monkeypatch, "slack_cost_hook", fresh)
    put_tiering(tmp_path, DAY, 50.0)
    c = slack_ctx(tmp_path, "slack_cost_hook")
    written = build_and_publish(c)
    assert post_digest(c, written, wf.digest) is True
    assert wf.upload_files(c, written) is False
    (post,) = slack_sink.received(fresh)
    summary = post["body"]["blocks"][1]["text"]["text"]
    assert "Chart and actions CSV not uploaded" in summary and "webhooks cannot upload files" in summary
    assert f"_artifacts/{ARTIFACT_DIR}/report_date={DAY}/" in summary  # where they are instead
    assert slack_sink.shared_files(fresh) == []


@pytest.mark.integration
def test_an_upload_answered_429_waits_retry_after_then_succeeds(fresh: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    bot_conn(monkeypatch, "slack_cost_429", fresh, CHANNEL)
    put_tiering(tmp_path, DAY, 50.0)
    c = slack_ctx(tmp_path, "slack_cost_429")
    written = build_and_publish(c)
    slack_sink.script_failures(fresh, [429], retry_after=1)  # the first call: the history read
    assert wf.upload_files(c, written) is True
    records = slack_sink.received(fresh)
    assert [(r["api"], r["status"]) for r in records] == [
        ("conversations.history", 429), ("conversations.history", 200),
        ("files.getUploadURLExternal", 200), ("files.getUploadURLExternal", 200), ("upload", 200), ("upload", 200),
        ("files.completeUploadExternal", 200)]
    assert records[1]["ts"] - records[0]["ts"] >= 1  # Retry-After was honoured
    assert len(slack_sink.shared_files(fresh)) == 2

    # A 429 on the upload API itself: files.getUploadURLExternal is retried after Retry-After too.
    slack_sink.reset(fresh)
    slack_sink.script_failures(fresh, [429], retry_after=1)
    shared = c.poster.upload_keyed([Upload("again.csv", b"a,b\r\n1,2\r\n", "again")], "again", "k" * 32)
    records = slack_sink.received(fresh)
    assert [(r["api"], r["status"]) for r in records] == [
        ("files.getUploadURLExternal", 429), ("files.getUploadURLExternal", 200), ("upload", 200),
        ("files.completeUploadExternal", 200)]
    assert records[1]["ts"] - records[0]["ts"] >= 1
    assert [f["name"] for f in shared] == ["again.csv"]
    assert slack_sink.shared_files(fresh)[0]["content"] == b"a,b\r\n1,2\r\n"


@pytest.mark.integration
def test_a_refused_channel_uploads_nothing_and_names_the_answer(fresh: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from traceo_finops.slack import SlackRejected

    bot_conn(monkeypatch, "slack_cost_nochan", fresh, CHANNEL)
    put_tiering(tmp_path, DAY, 50.0)
    c = slack_ctx(tmp_path, "slack_cost_nochan")
    written = build_and_publish(c)
    slack_sink.script_api_errors(fresh, ["channel_not_found"])  # e.g. the bot was removed from the channel
    with pytest.raises(SlackRejected,
                       match=rf"(?s)'slack_cost_nochan': reading the history \(to upload at most once\) in channel "
                             rf"{CHANNEL} failed: .*channel_not_found"):
        wf.upload_files(c, written)
    assert slack_sink.shared_files(fresh) == []
    assert not Path(ReportStore(str(tmp_path)).artifact_dir(SENT_DIR, DAY)).exists()  # nothing recorded


@pytest.mark.unit
def test_a_missing_slack_connection_is_named_and_the_report_stays(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_SLACK_COST_NONE", raising=False)
    put_tiering(tmp_path, DAY, 50.0)
    c = slack_ctx(tmp_path, "slack_cost_none")
    written = build_and_publish(c)
    with pytest.raises(ConnectionMissing, match="'slack_cost_none' is not defined: set AIRFLOW_CONN_SLACK_COST_NONE"):
        post_digest(c, written, wf.digest)
    # The report was committed whole before Slack was asked; no delivery is on record.
    assert read_committed(ReportStore(str(tmp_path)), ACTIONS.name, DAY).num_rows == written["datasets"]["actions"][
        "rows"]
    assert not Path(ReportStore(str(tmp_path)).artifact_dir(SENT_DIR, DAY)).exists()


@pytest.mark.unit
def test_a_slack_connection_of_another_type_is_refused_by_the_cost_report(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from traceo_finops.config import ConfigError

    monkeypatch.setenv("AIRFLOW_CONN_SLACK_COST_HTTP", json.dumps({"conn_type": "http", "host": "http://127.0.0.1:9"}))
    put_tiering(tmp_path, DAY, 50.0)
    c = slack_ctx(tmp_path, "slack_cost_http")
    written = build_and_publish(c)
    with pytest.raises(ConfigError, match="'slack_cost_http' has conn_type 'http': it must be 'slackwebhook'"):
        post_digest(c, written, wf.digest)
    with pytest.raises(ConfigError, match="conn_type 'http'"):
        wf.upload_files(c, written)
    assert not Path(ReportStore(str(tmp_path)).artifact_dir(SENT_DIR, DAY)).exists()


@pytest.mark.unit
def test_the_refusal_alert_names_the_failed_expectations_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """kit.digest.post_refusal, which the kit's publish step calls when the gate refuses a set (as the DAG does in
    test_cost_report_dag_slack.py); here with an in-memory poster, and one that fails."""
    import math

    from traceo_finops.kit.digest import post_refusal
    from traceo_finops.quality import DataQualityError

    put_tiering(tmp_path, DAY, math.nan)
    sent: list[tuple[str, list[dict[str, Any]]]] = []
    c = report_ctx(tmp_path, "finops_cost_report", DAY)
    c.poster_factory = lambda _conn_id: lambda text, blocks: sent.append((text, blocks))
    with pytest.raises(DataQualityError) as err:
        build_and_publish(c)
    assert post_refusal(c, str(err.value)) is True
    assert post_refusal(c, str(err.value)) is False  # once per run
    ((text, blocks),) = sent
    body = json.dumps(blocks)
    assert text.startswith("finops_cost_report 2026-12-06: report refused by Great Expectations")
    assert "expect_column_values_to_not_be_null(column='current_monthly_usd')" in body and "cost_summary" in body
    assert "The previous report of 2026-12-06 stays in place" in body

    def broken(text: str, blocks: list[dict[str, Any]]) -> None:
        raise RuntimeError("Slack is down")

    other = report_ctx(tmp_path, "finops_cost_report", DAY, run="other")
    other.poster_factory = lambda _conn_id: broken
    with pytest.raises(DataQualityError) as err2:
        build_and_publish(other)
    assert post_refusal(other, str(err2.value)) is False  # logged; the refusal stays the run's error
    assert "the Slack alert of the refused report could not be posted: Slack is down" in caplog.text
