"""The devstack Slack sink speaks Slack's current file upload API the way slack_sdk and Slack's docs expect:
files.getUploadURLExternal → a POST of the bytes to the upload URL → files.completeUploadExternal, its errors, and
a restart that keeps the channel's file shares (a private instance of devstack/slack_sink.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from devstack import slack_sink
from tests.support.net import free_port

pytestmark = pytest.mark.integration
CHANNEL = "C0FILES001"


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slack-files-sink")


@pytest.fixture(scope="module")
def sink(state: Path) -> Iterator[str]:
    info = slack_sink.up(state, port=free_port())
    try:
        yield info["url"]
    finally:
        slack_sink.down(state)


def client(url: str, token: str | None = "xoxb-1-2-files") -> WebClient:
    return WebClient(token=token, base_url=slack_sink.api_url(url))


def test_the_three_steps_share_files_into_the_channel(fresh: str) -> None:
    png = b"\x89PNG\r\n\x1a\n" + uuid.uuid4().bytes
    answer = client(fresh).files_upload_v2(
        file_uploads=[{"filename": "chart.png", "content": png, "title": "Chart", "alt_txt": "a chart"},
                      {"filename": "rows.csv", "content": "a,b\r\n1,2\r\n", "title": "Rows", "snippet_type": "csv"}],
        channel=CHANNEL, initial_comment="two files")
    files = answer["files"]
    assert [(f["name"], f["title"], f["mimetype"], f["size"]) for f in files] == [
        ("chart.png", "Chart", "image/png", len(png)), ("rows.csv", "Rows", "text/csv", 10)]
    assert all(f["id"].startswith("F") for f in files)
    calls = slack_sink.received(fresh)
    assert [c["api"] for c in calls] == ["files.getUploadURLExternal"] * 2 + ["upload"] * 2 + [
        "files.completeUploadExternal"]
    assert calls[0]["body"]["length"] in (len(png), str(len(png)))  # declared before the bytes are sent
    assert {c["bytes"] for c in calls if c["api"] == "upload"} == {len(png), 10}
    # One share message in the channel, carrying both files and the comment.
    (message,) = client(fresh).conversations_history(channel=CHANNEL)["messages"]
    assert message["text"] == "two files" and [f["id"] for f in message["files"]] == [f["id"] for f in files]
    assert [(f["name"], f["content"]) for f in slack_sink.shared_files(fresh)] == [
        ("chart.png", png), ("rows.csv", b"a,b\r\n1,2\r\n")]


def test_upload_errors_are_slacks(fresh: str) -> None:
    api = client(fresh)
    with pytest.raises(SlackApiError, match="invalid_auth"):
        client(fresh, token="not-a-slack-token").files_getUploadURLExternal(filename="x.csv", length=3)
    with pytest.raises(SlackApiError, match="not_authed"):
        client(fresh, token=None).files_getUploadURLExternal(filename="x.csv", length=3)
    with pytest.raises(SlackApiError, match="invalid_arguments"):
        api.api_call("files.getUploadURLExternal", params={"filename": "x.csv"})  # no length
    with pytest.raises(SlackApiError, match="alt_txt_too_large"):
        api.files_getUploadURLExternal(filename="x.png", length=3, alt_txt="a" * 1001)

    step = api.files_getUploadURLExternal(filename="x.csv", length=3)
    with pytest.raises(SlackApiError, match="file_not_found"):  # completed before its bytes arrived
        api.files_completeUploadExternal(files=[{"id": step["file_id"]}], channel_id=CHANNEL)
    assert requests.post(step["upload_url"], data=b"", timeout=10).status_code == 400  # no bytes
    sent = requests.post(step["upload_url"], data=b"a,b", timeout=10)
    assert (sent.status_code, sent.text) == (200, "OK - 3")
    with pytest.raises(SlackApiError, match="channel_not_found"):
        api.files_completeUploadExternal(files=[{"id": step["file_id"]}], channel_id="#finops")  # a name, not an ID
    api.files_completeUploadExternal(files=[{"id": step["file_id"]}], channel_id=CHANNEL)
    with pytest.raises(SlackApiError, match="file_not_found"):  # the method can be called once per upload
        api.files_completeUploadExternal(files=[{"id": step["file_id"]}], channel_id=CHANNEL)
    assert requests.post(step["upload_url"], data=b"again", timeout=10).status_code == 404  # a used URL
    with pytest.raises(SlackApiError, match="file_not_found"):
        api.files_completeUploadExternal(files=[{"id": "F0NOSUCH00"}], channel_id=CHANNEL)


def test_multipart_bytes_and_private_files(fresh: str) -> None:
    api = client(fresh)
    step = api.files_getUploadURLExternal(filename="m.csv", length=4)
    sent = requests.post(step["upload_url"], files={"file": ("m.csv", b"x\r\n1", "text/csv")}, timeout=10)
    assert (sent.status_code, sent.text) == (200, "OK - 4")
    done = api.files_completeUploadExternal(files=[{"id": step["file_id"], "title": "M"}])  # no channel: private
    assert done["files"][0]["title"] == "M"
    assert api.conversations_history(channel=CHANNEL)["messages"] == []
    (upload,) = [r for r in slack_sink.received(fresh) if r["api"] == "upload"]
    assert upload["bytes"] == 4 and upload["declared_length"] == 4


def test_a_restarted_sink_keeps_the_file_shares(fresh: str, state: Path) -> None:
    client(fresh).files_upload_v2(filename="kept.csv", content="k\r\n", channel=CHANNEL, initial_comment="kept")
    port = int(fresh.rsplit(":", 1)[1])
    slack_sink.down(state)
    slack_sink.up(state, port=port)
    (message,) = client(fresh).conversations_history(channel=CHANNEL)["messages"]
    assert message["text"] == "kept" and message["files"][0]["name"] == "kept.csv"
    assert slack_sink.shared_files(fresh)[0]["content"] == b"k\r\n"
