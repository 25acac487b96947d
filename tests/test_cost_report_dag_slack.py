"""finops_cost_report as Airflow runs it (dag.test on SQLite, the devstack's Prometheus for the storage stats) with a
bot-token Slack connection to a private Slack sink (devstack/slack_sink.py):

- one digest and one upload of the chart and the actions CSV per run; the same run again sends nothing more;
- a set the Great Expectations gate refuses (NaN costs upstream) publishes nothing, keeps the previous report and
  alerts Slack naming the failed expectations;
- an asset-triggered run reports on the configured lookback up to the moment it was triggered.

The upstream dataset (s3_tiering) is published into the test's report root through the kit, not by running its DAG:
what is tested here is the cost report's side.
"""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from devstack import slack_sink
from tests.support.dags import load_dag
from tests.support.slack import bot_conn
from tests.test_cost_report_inputs import put_tiering
from traceo_finops.cost_report.attachments import PNG_SIGNATURE
from traceo_finops.kit.publish import read_commit, read_committed
from traceo_finops.reports import ReportStore

pytestmark = [pytest.mark.dag, pytest.mark.integration]
CHANNEL = "C0COSTDAG1"


@pytest.fixture
def dag(airflow_db: Path) -> Any:
    out = load_dag("finops_cost_report")
    for t in out.tasks:  # dag.test() would wait out the production retry delays
        t.retries = 0
    return out


def _now() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0)


def _messages(url: str) -> list[dict[str, Any]]:
    return [r for r in slack_sink.received(url) if r.get("api") == "chat.postMessage" and r.get("delivered")]


def test_one_digest_one_upload_and_a_refused_set_alerts(devstack: dict[str, str], finops_config: Path, dag: Any,
                                                       sink: str, monkeypatch: pytest.MonkeyPatch) -> None:
    slack_sink.reset(sink)
    bot_conn(monkeypatch, "slack_finops", sink, CHANNEL)
    root = finops_config.parent / "reports"
    at = _now() - timedelta(minutes=2)  # the refused run below, a minute later, is still in the past
    if at.time() == datetime.min.time():
        at -= timedelta(minutes=1)  # both runs then end on the same report date
    day = (at - timedelta(microseconds=1)).date()  # the window ends at ``at``
    put_tiering(root, day, 50.0)

    run = dag.test(logical_date=at)
    assert run.state == "success"
    assert {ti.task_id: ti.state for ti in run.get_task_instances()}["upload_files"] == "success"
    (digest,) = _messages(sink)
    assert digest["body"]["text"].startswith("Cost report") and digest["channel"] == CHANNEL
    files = slack_sink.shared_files(sink)
    assert [f["name"] for f in files] == [f"cost-by-category-{day}.png", f"actions-{day}.csv"]
    assert files[0]["content"].startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(files[0]["content"])) as image:
        image.verify()
    store = ReportStore(str(root))
    actions = read_committed(store, "actions", day).to_pylist()
    csv_ids = [line.split(",")[1] for line in files[1]["content"].decode().splitlines()[1:]]
    assert csv_ids == [a["action_id"] for a in sorted(actions, key=lambda a: a["rank"])]
    # The share follows the digest.
    shares = [r for r in slack_sink.received(sink) if r.get("api") == "files.completeUploadExternal"]
    assert float(shares[0]["message"]["ts"]) > float(digest["message"]["ts"])

    # The same run again (cleared in the UI): the partitions are replaced, nothing more reaches Slack.
    rerun = dag.test(run_after=run.run_after, logical_date=at)
    assert rerun.state == "success" and rerun.run_id == run.run_id
    assert len(_messages(sink)) == 1 and len(slack_sink.shared_files(sink)) == 2

    # NaN costs upstream: the gate refuses the set, the report stays, Slack is told which expectations failed.
    before = read_committed(store, "cost_summary", day).to_pylist()
    put_tiering(root, day, math.nan)
    refused = dag.test(logical_date=at + timedelta(minutes=1))  # another run of the same report date
    assert refused.state == "failed"
    states = {ti.task_id: ti.state for ti in refused.get_task_instances()}
    assert states["write_report"] == "failed" and states["upload_files"] != "success"
    assert read_committed(store, "cost_summary", day).to_pylist() == before
    alerts = _messages(sink)[1:]
    assert len(alerts) == 1
    alert = json.dumps(alerts[0]["body"]["blocks"])
    assert "refused by Great Expectations" in alerts[0]["body"]["text"]
    assert "cost_summary" in alert and "expect_column_values_to_not_be_null(column='current_monthly_usd')" in alert
    assert "previous report" in alert and refused.run_id in alert
    assert len(slack_sink.shared_files(sink)) == 2  # nothing uploaded for the refused run


def test_an_asset_triggered_run_reports_on_its_lookback(devstack: dict[str, str], finops_config: Path, dag: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The run is created as the scheduler creates an asset-triggered run (no logical date, no data interval,
    run_type asset_triggered, run_after = when the asset event came): dag.test() itself only makes manual runs,
    so its run factory is replaced by the scheduler's arguments; the tasks then run in real Airflow."""
    import airflow.models.dagrun as dagrun
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    from traceo_finops.config import load_config
    from traceo_finops.kit.context import lookback_of

    def asset_triggered_run(*, dag: Any, run_after: datetime, conf: Any, session: Any, **_: Any) -> Any:
        return dag.create_dagrun(
            run_id=dagrun.DagRun.generate_run_id(run_type=DagRunType.ASSET_TRIGGERED, logical_date=None,
                                                 run_after=run_after),
            logical_date=None, data_interval=None, run_after=run_after, conf=conf,
            run_type=DagRunType.ASSET_TRIGGERED, state=DagRunState.RUNNING,
            triggered_by=DagRunTriggeredByType.ASSET, triggering_user_name=None, start_date=run_after,
            session=session)

    monkeypatch.setattr(dagrun, "get_or_create_dagrun", asset_triggered_run)
    at = _now() - timedelta(minutes=5)
    run = dag.test(logical_date=None, run_after=at, run_conf={"post_to_slack": False})
    assert run.run_type == DagRunType.ASSET_TRIGGERED and run.logical_date is None and run.state == "success"

    lookback = lookback_of(load_config(), "cost_report")
    day = (at - timedelta(microseconds=1)).date()
    marker = read_commit(ReportStore(str(finops_config.parent / "reports")), "finops_cost_report", day)
    assert marker is not None and marker["run_id"] == run.run_id
    window = marker["window"]
    assert datetime.fromisoformat(window["end"]) == at
    assert datetime.fromisoformat(window["start"]) == at - lookback and window["from_lookback"] is True
