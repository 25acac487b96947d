"""The workflow kit's guarantees under faults, on real Airflow (``dag.test`` on the session's SQLite) and real
processes on 127.0.0.1: the devstack's Prometheus (15 s scrape, 60 s backfilled history), a private Prometheus
2.42 of our own (2 m scrape, a kube-state-metrics/cAdvisor-like history), a closed port, an HTTP server that
answers 500 to everything, a private Slack sink (``devstack.slack_sink``) and the devstack's S3.

- two sources at different scrape intervals: each source's ``rightsizing`` rows carry that source's step and
  rate window, and the report's metadata names each source's step;
- one source down: the other's rows are written, ``run_targets`` names the failure, the digest says
  "1 of 2 sources", and the verdict fails the run without a retry;
- permanent errors (unknown config key, two sources of one name, no source, a bad window override) fail the
  first task at its first try, with the DAG's production retries in place, in seconds;
- a source that refuses every query, and a namespace filter that matches nothing: a clear error, never a
  green run with nothing written; the committed report of the date is left as it was;
- no secret (Prometheus password, Slack webhook token, AWS secret key) in any log of a failing run;
- the window rule: a scheduled (or backfill) run reads its data interval, a manual run its lookback.

Every ``dag.test`` here waits out real retry delays, so tasks a test does not look at run with ``retries=0``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from devstack import slack_sink
from tests.support.dags import load_dag
from tests.support.net import free_port
from tests.support.prometheus import KEEP_HISTORY, backfill_openmetrics, local_prometheus, om_sample
from tests.support.servers import Answer, LocalServer
from tests.support.slack import webhook_conn

MIB = 2**20
EDGE_SCRAPE = 120  # the private Prometheus' scrape interval (s); the devstack's history has one sample a minute
HISTORY = "6h"
NAMESPACES = "checkout|edge"  # one devstack namespace and the private Prometheus' one: small, quick runs


# ---- processes -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def end(prom_truth: dict[str, Any]) -> datetime:
    """The window end of every run here: half a minute after the devstack's last backfilled sample."""
    return datetime.fromtimestamp(int(prom_truth["history"]["end"]) + 30, UTC)


def _edge_history(end: int) -> str:
    """Eight hours of Deployment ``edge/gateway`` (two pods, 0.25 cores and 200Mi each) at a 2 m scrape."""
    ksm = {"job": "kube-state-metrics", "instance": "ksm:8080"}
    kubelet = {"job": "kubelet", "instance": "edge-node:10250", "node": "edge-node"}
    times = range(end - 8 * 3600, end + 1, EDGE_SCRAPE)
    pods = ("gateway-rs-a", "gateway-rs-b")
    families: list[tuple[str, dict[str, str], Any]] = [
        ("kube_replicaset_owner", {"namespace": "edge", "replicaset": "gateway-rs", "owner_kind": "Deployment",
                                   "owner_name": "gateway", **ksm}, 1),
        ("kube_deployment_spec_replicas", {"namespace": "edge", "deployment": "gateway", **ksm}, 2)]
    for pod in pods:
        families += [("kube_pod_owner", {"namespace": "edge", "pod": pod, "owner_kind": "ReplicaSet",
                                         "owner_name": "gateway-rs", "owner_is_controller": "true", **ksm}, 1)]
    for resource, unit, value in (("cpu", "core", 1), ("memory", "byte", 1024 * MIB)):
        families += [("kube_pod_container_resource_requests", {"namespace": "edge", "pod": pod, "container": "app",
                                                               "resource": resource, "unit": unit, **ksm}, value)
                     for pod in pods]
    families += [("container_cpu_usage_seconds_total", {"namespace": "edge", "pod": pod, "container": "app",
                                                        **kubelet}, lambda t: 0.25 * (t - times.start))
                 for pod in pods]
    families += [("container_memory_working_set_bytes", {"namespace": "edge", "pod": pod, "container": "app",
                                                         **kubelet}, 200 * MIB) for pod in pods]
    lines = []
    for metric, labels, value in families:  # OpenMetrics: one family's samples together, in time order
        lines += [om_sample(metric, labels, value(t) if callable(value) else value, t) for t in times]
    return "".join(lines) + "# EOF\n"


@pytest.fixture(scope="module")
def edge_prometheus(end: datetime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Prometheus 2.42 scraping every 2 m, holding the ``edge`` history up to ``end``."""
    root = tmp_path_factory.mktemp("edge-prom")
    backfill_openmetrics(_edge_history(int(end.timestamp()) - 30), root / "data")
    try:
        with local_prometheus(root, f"global: {{scrape_interval: {EDGE_SCRAPE}s}}\nscrape_configs: []\n",
                              KEEP_HISTORY) as url:
            yield url
    finally:
        shutil.rmtree(root / "data", ignore_errors=True)


@pytest.fixture
def refuser() -> Iterator[str]:
    """An HTTP server that answers every request with 500 (a broken proxy in front of a Prometheus)."""
    refuse = Answer(500, b"upstream connect error or disconnect/reset before headers\n", "text/plain")
    with LocalServer(lambda _: refuse) as server:
        yield server.url


# ---- configuration, connections, the DAG ---------------------------------------------------------------


SECRETS = {"prometheus": f"prom-pw-{uuid.uuid4().hex}", "slack": f"hooktoken{uuid.uuid4().hex}",
           "aws": f"aws-secret-{uuid.uuid4().hex}"}


@pytest.fixture
def conns(devstack: dict[str, str], sink: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Connections: a Slack webhook whose path carries a token, a closed port behind basic auth."""
    closed = free_port()
    webhook_conn(monkeypatch, "slack_finops", sink, f"services/T0FAULTS/B0FAULTS/{SECRETS['slack']}")
    monkeypatch.setenv("AIRFLOW_CONN_PROM_DOWN", json.dumps({
        "conn_type": "http", "host": f"http://127.0.0.1:{closed}", "login": "finops",
        "password": SECRETS["prometheus"], "extra": {"timeout": 2, "retries": 0}}))
    slack_sink.reset(sink)
    return {"closed": f"127.0.0.1:{closed}", "sink": sink}


def _configure(config: Path, sources: list[dict[str, Any]], **rightsizing: Any) -> None:
    cfg = yaml.safe_load(config.read_text())
    cfg["sources"] = sources
    cfg["workflows"]["rightsizing"].update({"namespaces": NAMESPACES, "stack_jobs": [], **rightsizing})
    config.write_text(yaml.safe_dump(cfg))


DEVSTACK = {"name": "devstack", "conn_id": "prometheus_default"}


@pytest.fixture
def rightsizing_dag(airflow_db: Path) -> Any:
    return load_dag("finops_rightsizing")


def _no_retries(dag: Any, monkeypatch: pytest.MonkeyPatch, keep: tuple[str, ...] = ()) -> None:
    """``dag.test`` waits out real retry delays: no retries, except on the tasks in ``keep``."""
    for t in dag.tasks:
        if t.task_id not in keep:
            monkeypatch.setattr(t, "retries", 0)


def _run(dag: Any, at: datetime, **conf: str) -> tuple[Any, dict[str, Any]]:
    """A manual run of ``HISTORY`` up to ``at`` (params ``conf`` override); its task instances by task id."""
    run = dag.test(run_conf={"history": HISTORY, "end": at.isoformat(), **conf})
    return run, {ti.task_id: ti for ti in run.get_task_instances() if ti.map_index in (-1, 0)}


def _posts(sink: str) -> list[dict[str, Any]]:
    return [r for r in slack_sink.received(sink) if r.get("delivered")]


def _seed_commit(end: datetime) -> dict[str, Any]:
    """An earlier good run's committed (empty) report of the date, to check a failed run leaves it alone."""
    from traceo_finops.config import load_config
    from traceo_finops.kit.context import RunContext, Target, TargetKind
    from traceo_finops.kit.outcome import TargetResult
    from traceo_finops.kit.publish import Report, publish
    from traceo_finops.rightsizing.dataset import RIGHTSIZING
    from traceo_finops.window import Window

    ctx = RunContext(cfg=load_config(), workflow="rightsizing", dag_id="finops_rightsizing",
                     run_id="earlier-good-run", window=Window(end - timedelta(hours=6), end))
    return publish(ctx, Report(datasets=[(RIGHTSIZING, [])]), [TargetResult(Target(TargetKind.SOURCE, "devstack"))])


def _commit(config: Path, end: datetime) -> dict[str, Any] | None:
    from traceo_finops.kit.publish import read_commit
    from traceo_finops.reports import ReportStore

    return read_commit(ReportStore(str(config.parent / "reports")), "finops_rightsizing", end.date())


# ---- two sources, two scrape intervals -------------------------------------------------------------------


@pytest.mark.dag
@pytest.mark.integration
def test_each_source_rows_carry_their_own_resolution(end: datetime, edge_prometheus: str, conns: dict[str, str],
                                                     finops_config: Path, rightsizing_dag: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PROM_EDGE", json.dumps({"conn_type": "http", "host": edge_prometheus,
                                                             "extra": {"timeout": 30}}))
    _configure(finops_config, [DEVSTACK, {"name": "edge", "conn_id": "prom_edge"}])
    _no_retries(rightsizing_dag, monkeypatch)
    run, tis = _run(rightsizing_dag, end)
    assert run.state == "success", {t: ti.state for t, ti in tis.items()}

    [part] = (finops_config.parent / "reports").glob("rightsizing/report_date=*/part-0.parquet")
    table = pq.read_table(part)
    rows = table.to_pylist()
    by_source: dict[str, set[tuple[int, int]]] = {}
    for r in rows:
        by_source.setdefault(r["source"], set()).add((r["resolution_seconds"], r["rate_window_seconds"]))
    assert set(by_source) == {"devstack", "edge"}
    # One resolution per source, and not the same one: each source at its own scrape interval.
    [(dev_step, dev_window)], [(edge_step, edge_window)] = by_source["devstack"], by_source["edge"]
    assert (dev_step, dev_window) != (edge_step, edge_window)
    # A rate window holds at least 4 scrapes, and the step skips no sample: 2 m scrapes need >= 8 minutes.
    assert edge_window >= 4 * EDGE_SCRAPE and edge_step >= 4 * EDGE_SCRAPE > dev_step
    assert edge_step <= edge_window and dev_step <= dev_window
    # The report says which step each source was read at.
    meta = table.schema.metadata[b"traceo.resolution_seconds"].decode()
    assert dict(kv.split("=") for kv in meta.split(",")) == {"devstack": str(dev_step), "edge": str(edge_step)}
    # The edge rows are the crafted history: two pods of 0.25 cores and 200Mi.
    [gateway] = [r for r in rows if r["source"] == "edge"]
    assert (gateway["workload_kind"], gateway["workload_name"], gateway["pods_seen"]) == ("Deployment", "gateway", 2)
    assert gateway["cpu_p95"] == pytest.approx(0.25, rel=0.01) and gateway["memory_peak"] == 200 * MIB


# ---- one source down ---------------------------------------------------------------------------------------


def _all_logs(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, *more: Path) -> str:
    out, err = capfd.readouterr()
    texts = [out, err, caplog.text, "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)]
    for base in more:  # the task log files, if this Airflow writes any
        for f in sorted(base.rglob("*")) if base.exists() else ():
            if f.is_file():
                texts.append(f.read_bytes().decode(errors="replace"))
    return "\n".join(texts)


def _assert_no_secret(text: str) -> None:
    assert len(text) > 10_000, "no logs were captured: the check would prove nothing"
    for name, secret in SECRETS.items():
        assert secret not in text, f"the {name} secret appears in the logs"


@pytest.mark.dag
@pytest.mark.integration
def test_one_source_down(end: datetime, conns: dict[str, str], finops_config: Path, rightsizing_dag: Any,
                         monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
                         caplog: pytest.LogCaptureFixture, airflow_db: Path) -> None:
    caplog.set_level(logging.DEBUG)
    _configure(finops_config, [DEVSTACK, {"name": "edge-down", "conn_id": "prom_down"}])
    _no_retries(rightsizing_dag, monkeypatch, keep=("verdict",))
    run, tis = _run(rightsizing_dag, end)

    # The run fails at its verdict, without a retry; everything before it went through.
    assert run.state == "failed"
    assert {t: ti.state for t, ti in tis.items()} == {
        "plan": "success", "batches": "success", "collect": "success", "size_stack": "success",
        "write_report": "success", "post_digest": "success", "verdict": "failed"}
    assert rightsizing_dag.get_task("verdict").retries == 0 and tis["verdict"].try_number == 1

    root = finops_config.parent / "reports"
    [part] = root.glob("rightsizing/report_date=*/part-0.parquet")
    assert {r["source"] for r in pq.read_table(part).to_pylist()} == {"devstack"}
    [targets] = root.glob("run_targets/dag_id=finops_rightsizing/report_date=*/part-0.parquet")
    record = {r["target"]: r for r in pq.read_table(targets).to_pylist()}
    assert record["devstack"]["status"] == "ok" and record["devstack"]["rows_written"] > 0
    down = record["edge-down"]
    assert down["status"] == "failed" and down["rows_written"] == 0
    assert "edge-down" in down["error"] and conns["closed"] in down["error"]

    # One digest: it names the failed source and its coverage.
    [post] = _posts(conns["sink"])
    text = json.dumps(post["body"])
    assert "1 of 2 sources" in text and "edge-down" in text and conns["closed"] in text

    _assert_no_secret(_all_logs(capfd, caplog, airflow_db / "logs") + text)


@pytest.mark.dag
@pytest.mark.integration
def test_no_secret_in_the_logs_when_slack_keeps_failing(end: datetime, conns: dict[str, str], finops_config: Path,
                                                        rightsizing_dag: Any, devstack: dict[str, str],
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capfd: pytest.CaptureFixture[str],
                                                        caplog: pytest.LogCaptureFixture, airflow_db: Path) -> None:
    """Unreachable source behind basic auth, reports on S3 with a secret key, a webhook answering 500 that
    echoes its path (the token) in its error body, as some relays do."""
    caplog.set_level(logging.DEBUG)
    aws = json.loads(devstack["AIRFLOW_CONN_AWS_DEFAULT"]) if "AIRFLOW_CONN_AWS_DEFAULT" in devstack else {}
    aws.update(conn_type="aws", login="finops-key-id", password=SECRETS["aws"])
    aws.setdefault("extra", {}).update(endpoint_url=devstack["DEVSTACK_S3_ENDPOINT"], region_name="us-east-1")
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(aws))
    prefix = f"kit-faults-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("FINOPS_REPORT_ROOT", f"s3://finops-reports/{prefix}")
    _configure(finops_config, [DEVSTACK, {"name": "edge-down", "conn_id": "prom_down"}])
    _no_retries(rightsizing_dag, monkeypatch)
    slack_sink.script_failures(conns["sink"], [500] * 20, echo_path=True)
    try:
        run, tis = _run(rightsizing_dag, end)
    finally:
        slack_sink.reset(conns["sink"])
    assert run.state == "failed"
    assert tis["write_report"].state == "success" and tis["post_digest"].state == "failed"

    import boto3

    s3 = boto3.client("s3", endpoint_url=devstack["DEVSTACK_S3_ENDPOINT"], aws_access_key_id="finops-key-id",
                      aws_secret_access_key=SECRETS["aws"], region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="finops-reports", Prefix=prefix).get("Contents", [])]
    assert any("/rightsizing/" in k for k in keys)  # the S3 connection and its secret were used
    logs = _all_logs(capfd, caplog, airflow_db / "logs")
    assert "Slack connection 'slack_finops'" in logs and "rollup_error" in logs  # the failure itself is logged
    _assert_no_secret(logs)


# ---- permanent errors fail fast ------------------------------------------------------------------------


def _unknown_key(config: Path) -> str:
    _configure(config, [DEVSTACK], histroy="4d")
    return "workflows.rightsizing.histroy"


def _twin_sources(config: Path) -> str:
    _configure(config, [DEVSTACK, {"name": "devstack", "conn_id": "prom_down"}])
    return "source names must be unique, repeated: devstack"


def _no_sources(config: Path) -> str:
    _configure(config, [])
    return "sources: List should have at least 1 item"


@pytest.mark.dag
@pytest.mark.integration
@pytest.mark.parametrize("breaks", [_unknown_key, _twin_sources, _no_sources], ids=lambda f: f.__name__[1:])
def test_a_config_error_fails_at_once(breaks: Any, end: datetime, conns: dict[str, str], finops_config: Path,
                                      rightsizing_dag: Any, capfd: pytest.CaptureFixture[str]) -> None:
    """With the DAG's production retries (2, two minutes apart): the first task fails at its first try."""
    expected = breaks(finops_config)
    assert rightsizing_dag.get_task("plan").retries >= 2
    t0 = time.monotonic()
    run, tis = _run(rightsizing_dag, end)
    elapsed = time.monotonic() - t0
    assert run.state == "failed" and tis["plan"].state == "failed" and tis["plan"].try_number == 1
    assert elapsed < 60, f"took {elapsed:.0f} s: was it retried?"
    out, _ = capfd.readouterr()
    assert "ConfigError" in out and expected in out
    assert _commit(finops_config, end) is None and not (finops_config.parent / "reports" / "rightsizing").exists()


@pytest.mark.dag
@pytest.mark.integration
def test_an_unwritable_report_root_fails_before_any_collection(end: datetime, conns: dict[str, str],
                                                              finops_config: Path, rightsizing_dag: Any,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    """A root under a regular file (root may write anywhere, so permissions would prove nothing here)."""
    blocker = finops_config.parent / "not-a-folder"
    blocker.write_text("a file where the report root's parent should be")
    monkeypatch.setenv("FINOPS_REPORT_ROOT", str(blocker / "reports"))
    _configure(finops_config, [DEVSTACK])
    assert rightsizing_dag.get_task("plan").retries >= 2
    run, tis = _run(rightsizing_dag, end)
    assert run.state == "failed" and tis["plan"].state == "failed" and tis["plan"].try_number == 1
    assert {ti.state for t, ti in tis.items() if t != "plan"} == {"upstream_failed"}  # nothing was collected
    out, _ = capfd.readouterr()
    assert "ReportRootUnwritable" in out and f"report root {blocker / 'reports'} is not writable" in out


@pytest.mark.dag
@pytest.mark.integration
@pytest.mark.parametrize(("param", "value", "says"), [
    ("history", "-6h", "param history='-6h'"),
    ("history", "0s", "param history='0s'"),
    ("end", "2026-12-05T23:00:00", "param end 2026-12-05T23:00:00 has no time zone"),
])
def test_a_bad_window_override_fails_at_once(param: str, value: str, says: str, end: datetime, conns: dict[str, str],
                                             finops_config: Path, rightsizing_dag: Any,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    _configure(finops_config, [DEVSTACK])
    _seed_commit(end)
    before = _commit(finops_config, end)
    t0 = time.monotonic()
    run, tis = _run(rightsizing_dag, end, **{param: value})
    assert run.state == "failed" and tis["plan"].state == "failed" and tis["plan"].try_number == 1
    assert time.monotonic() - t0 < 60
    out, _ = capfd.readouterr()
    assert says in out and "PermanentError" in out
    assert before and _commit(finops_config, end) == before


# ---- bad input: nothing to work on --------------------------------------------------------------------


@pytest.mark.dag
@pytest.mark.integration
def test_a_source_that_refuses_every_query(refuser: str, end: datetime, conns: dict[str, str], finops_config: Path,
                                           rightsizing_dag: Any, monkeypatch: pytest.MonkeyPatch,
                                           capfd: pytest.CaptureFixture[str]) -> None:
    """Its only source answers 500 to everything: a clear failure, not a green run that wrote nothing."""
    from traceo_finops.kit.publish import read_committed
    from traceo_finops.reports import ReportStore

    monkeypatch.setenv("AIRFLOW_CONN_PROM_REFUSER", json.dumps(
        {"conn_type": "http", "host": refuser, "extra": {"timeout": 2, "retries": 1, "backoff_factor": 0}}))
    _configure(finops_config, [{"name": "refuser", "conn_id": "prom_refuser"}])
    _seed_commit(end)
    before = _commit(finops_config, end)
    _no_retries(rightsizing_dag, monkeypatch)
    run, tis = _run(rightsizing_dag, end)
    assert run.state == "failed" and tis["plan"].state == "failed" and tis["plan"].try_number == 1
    out, _ = capfd.readouterr()
    assert "TargetsFailed" in out and "every target of finops_rightsizing failed" in out
    assert f"source 'refuser': GET {refuser}/api/v1/" in out and "500" in out

    # The failure is on record; the date's committed report is the earlier one, whole.
    root = finops_config.parent / "reports"
    [targets] = root.glob("run_targets/dag_id=finops_rightsizing/report_date=*/part-0.parquet")
    [row] = pq.read_table(targets).to_pylist()
    assert (row["target"], row["status"]) == ("refuser", "failed") and refuser in row["error"]
    # The marker still names the earlier run for every dataset but the failure record, and says which run failed.
    after = _commit(finops_config, end)
    assert before and after["run_id"] == before["run_id"]
    assert {k: v for k, v in after["datasets"].items() if k != "run_targets"} == \
        {k: v for k, v in before["datasets"].items() if k != "run_targets"}
    assert after["last_failed_run"]["run_id"] == run.run_id
    store = ReportStore(str(root))
    assert read_committed(store, "run_targets", end.date(), dag_id="finops_rightsizing").column(
        "status").to_pylist() == ["failed"]
    committed = read_committed(store, "rightsizing", end.date())
    assert set(committed.column("run_id").to_pylist()) <= {"earlier-good-run"}
    assert committed.schema.metadata[b"traceo.run_id"] == b"earlier-good-run"


@pytest.mark.dag
@pytest.mark.integration
def test_a_namespace_filter_that_matches_nothing(end: datetime, conns: dict[str, str], finops_config: Path,
                                                 rightsizing_dag: Any, capfd: pytest.CaptureFixture[str]) -> None:
    """Right-sizing's target list is its namespace batches: none is a clear error naming the filter and the
    source, at the first try (an empty mapped task would skip the rest and Airflow would call the run a success)."""
    _configure(finops_config, [DEVSTACK], namespaces="no-such-namespace-.*")
    run, tis = _run(rightsizing_dag, end)
    assert run.state == "failed" and tis["plan"].state == "failed" and tis["plan"].try_number == 1
    assert {ti.state for t, ti in tis.items() if t != "plan"} == {"upstream_failed"}
    out, _ = capfd.readouterr()
    assert ("NoTargets: finops_rightsizing: no namespace matching workflows.rightsizing.namespaces "
            "'no-such-namespace-.*' has container series on devstack: nothing to size") in out
    assert _commit(finops_config, end) is None


# ---- the window rule -------------------------------------------------------------------------------------


def _context(run_type: str, logical: datetime | None, start: datetime | None, stop_: datetime | None,
             **params: str) -> dict[str, Any]:
    from airflow.utils.types import DagRunType

    return {"dag_run": SimpleNamespace(run_type=DagRunType(run_type), run_after=logical or stop_),
            "logical_date": logical, "data_interval_start": start, "data_interval_end": stop_,
            "dag": SimpleNamespace(dag_id="finops_rightsizing"), "run_id": f"{run_type}__x", "params": params,
            "ti": SimpleNamespace(try_number=3)}


D = datetime(2026, 11, 27, tzinfo=UTC)


@pytest.mark.unit
@pytest.mark.parametrize("run_type", ["scheduled", "backfill"])
def test_scheduled_and_backfill_runs_read_their_data_interval(run_type: str) -> None:
    from traceo_finops.airflow_adapter import _interval

    ctx = _context(run_type, D, D, D + timedelta(days=1))
    assert _interval(ctx) == (D, D + timedelta(days=1))


@pytest.mark.unit
@pytest.mark.parametrize("run_type", ["manual", "asset_triggered"])
def test_manual_and_asset_runs_read_their_lookback(run_type: str) -> None:
    from traceo_finops.airflow_adapter import _interval

    at = D + timedelta(days=3, hours=7)
    # A manual run of a data-interval timetable is handed the last complete day: not what was asked for.
    assert _interval(_context(run_type, at, D + timedelta(days=2), D + timedelta(days=3))) == (at, at)
    # Triggered without a logical date (Airflow 3): the time it was run after.
    ctx = _context(run_type, None, None, None)
    ctx["dag_run"].run_after = at
    assert _interval(ctx) == (at, at)


@pytest.mark.unit
def test_run_context_builds_one_window_per_run_type(finops_config: Path) -> None:
    from traceo_finops.airflow_adapter import run_context

    _configure(finops_config, [DEVSTACK], history="4d")

    daily = _context("scheduled", D, D, D + timedelta(days=1))
    scheduled = run_context("cardinality", daily).window
    assert (scheduled.start, scheduled.end, scheduled.from_lookback) == (D, D + timedelta(days=1), False)
    assert scheduled.report_date == D.date()
    # Right-sizing reads its history up to the same end.
    sized = run_context("rightsizing", daily)
    assert (sized.window.start, sized.window.end) == (D + timedelta(days=1) - timedelta(days=4), D + timedelta(days=1))
    assert (sized.dag_id, sized.run_id, sized.try_number) == ("finops_rightsizing", "scheduled__x", 3)

    at = D + timedelta(hours=30)
    manual = run_context("cardinality", _context("manual", at, D, D + timedelta(days=1))).window
    # workflows.cardinality.lookback (1d in the demo config) up to the trigger instant.
    assert (manual.start, manual.end, manual.from_lookback) == (at - timedelta(days=1), at, True)
    # The params history/end of a manual right-sizing run.
    override = run_context("rightsizing", _context("manual", at, None, None, history="6h",
                                                   end="2026-11-27T12:00:00Z")).window
    assert (override.start, override.end) == (D + timedelta(hours=6), D + timedelta(hours=12))
