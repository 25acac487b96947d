"""The Airflow adapter against real services: connections from env, S3 report root, Slack hook."""

from __future__ import annotations

import json
import time
import uuid
from datetime import date
from typing import Any

import boto3
import pyarrow as pa
import pytest

from devstack import slack_sink
from tests.support.net import free_port
from traceo_finops.airflow_adapter import ConnectionMissing, prometheus_spec, report_store, slack_poster
from traceo_finops.config import load_config
from traceo_finops.prometheus import PrometheusClient, PrometheusUnavailable
from traceo_finops.reports import Dataset
from traceo_finops.slack import SlackError

pytestmark = pytest.mark.integration

DS = Dataset("adapter_check", 1, pa.schema([("metric", pa.string()), ("series", pa.int64())]))


def test_unknown_connection_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_PROM", raising=False)
    with pytest.raises(ConnectionMissing, match="'no_such_prom' is not defined: set AIRFLOW_CONN_NO_SUCH_PROM"):
        prometheus_spec("no_such_prom", "x")
    with pytest.raises(ConnectionMissing, match="'no_such_slack'"):
        slack_poster("no_such_slack")


def test_prometheus_connection_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MIMIR_TEST", json.dumps({
        "conn_type": "http", "host": "https://mimir.example.com/prometheus", "login": "finops",
        "password": "s3cr3t-value", "extra": {"tenant": "team-a", "timeout": 12, "headers": {"X-Team": "sre"}}}))
    spec = prometheus_spec("mimir_test", "prod", flavor="mimir")
    assert spec.api_url == "https://mimir.example.com/prometheus"
    assert (spec.tenant, spec.login, spec.timeout, spec.flavor) == ("team-a", "finops", 12, "mimir")
    assert spec.headers == {"X-Team": "sre"}
    assert "s3cr3t-value" not in repr(spec) and "s3cr3t-value" not in str(spec)
    assert prometheus_spec("mimir_test", "prod", tenant="team-b").tenant == "team-b"


def test_unreachable_prometheus_names_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # nothing listens on it
    monkeypatch.setenv("AIRFLOW_CONN_DEAD_PROM", json.dumps(
        {"conn_type": "http", "host": f"http://127.0.0.1:{port}", "extra": {"timeout": 2, "retries": 1}}))
    with pytest.raises(PrometheusUnavailable, match=rf"source 'dead': GET http://127.0.0.1:{port}/api/v1/status/tsdb"):
        PrometheusClient(prometheus_spec("dead_prom", "dead")).tsdb_status()


def test_s3_report_root_replaces_partition(devstack: dict[str, str], finops_config: Any,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"adapter-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("FINOPS_REPORT_ROOT", f"s3://finops-reports/{prefix}")
    store = report_store(load_config())
    d = date(2026, 11, 27)
    store.write_partition(DS, d, [{"metric": "a", "series": 1}, {"metric": "b", "series": 2}])
    store.write_partition(DS, d, [{"metric": "c", "series": 3}])
    assert store.read_partition(DS.name, d).to_pylist() == [{"metric": "c", "series": 3}]
    s3 = boto3.client("s3", endpoint_url=devstack["DEVSTACK_S3_ENDPOINT"], aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    listing = s3.list_objects_v2(Bucket="finops-reports", Prefix=f"{prefix}/").get("Contents", [])
    # exactly one object: no staging copies, no folder markers, no second part file
    assert [o["Key"] for o in listing] == [f"{prefix}/adapter_check/report_date={d}/part-0.parquet"]


def _deliveries(url: str) -> list[dict]:
    return [r for r in slack_sink.received(url) if (r.get("body") or {}).get("text") == "adapter check"]


def test_slack_retries_5xx_and_honours_retry_after(devstack: dict[str, str]) -> None:
    url = devstack["DEVSTACK_SLACK_URL"]
    post = slack_poster("slack_finops")
    slack_sink.reset(url)
    slack_sink.script_failures(url, [500, 503])
    post("adapter check", [{"type": "section", "text": {"type": "mrkdwn", "text": "adapter check"}}])
    assert [r["status"] for r in _deliveries(url)] == [500, 503, 200]

    slack_sink.reset(url)
    slack_sink.script_failures(url, [429], retry_after=2)
    t0 = time.monotonic()
    post("adapter check", [])
    assert time.monotonic() - t0 >= 2
    assert [r["status"] for r in _deliveries(url)] == [429, 200]


def test_slack_that_keeps_failing_is_reported(devstack: dict[str, str]) -> None:
    url = devstack["DEVSTACK_SLACK_URL"]
    slack_sink.reset(url)
    slack_sink.script_failures(url, [500] * 10)
    with pytest.raises(SlackError, match="Slack connection 'slack_finops'"):
        slack_poster("slack_finops")("adapter check", [])
    slack_sink.reset(url)
