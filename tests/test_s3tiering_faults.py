"""S3 network faults are the failing bucket's error, naming bucket and operation, and never the others'.

Real faults over real sockets on 127.0.0.1: a closed port (connection refused) and a proxy in front of
the private moto_server that closes the connection instead of forwarding a request, or forwards it —
so it takes effect — and closes the connection instead of answering (``FaultyProxy``). botocore's own
retries are off for the faulty clients (``attempts=1``) so each fault is seen once.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.net import closed_port_url
from tests.support.s3 import (
    FaultyProxy,
    client,
    is_lifecycle_write,
    lifecycle_rules,
)
from traceo_finops.config import FinopsConfig
from traceo_finops.pricing import load_price_table
from traceo_finops.reports import ReportStore
from traceo_finops.s3tiering.apply import BackupStore, read_backup
from traceo_finops.s3tiering.workflow import apply_or_rollback, plan_or_error

pytestmark = pytest.mark.integration
REPORT_DATE = date(2026, 11, 28)
RUN = "manual__2026-11-28T10:00:00+00:00"


@pytest.fixture(scope="module")
def as_of(moto: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(moto["truth"]["anchor_ms"] / 1000, UTC) + timedelta(hours=10)


@pytest.fixture
def store(tmp_path: Path) -> ReportStore:
    return ReportStore(str(tmp_path / "reports"))


def cfg() -> FinopsConfig:
    return FinopsConfig.model_validate({"sources": [{"name": "x"}], "buckets": [
        {"name": "mimir-blocks", "layout": "mimir", "apply": True, "retention_overrides": {"team-b": "365d"},
         "verify_size_filters": False},
        {"name": "thanos-blocks", "layout": "thanos", "apply": True, "retention": "365d",
         "verify_size_filters": False}]})


def plans(c: FinopsConfig, as_of: datetime, client_for: Any) -> dict[str, dict[str, Any]]:
    prices = load_price_table()
    return {b.name: plan_or_error(c, b.name, as_of, lambda: prices, client_for) for b in c.buckets}


def test_connection_refused_is_that_buckets_error_the_others_go_on(s3, as_of, store) -> None:
    c = cfg()
    dead = client(closed_port_url(), attempts=1)

    def client_for(b: Any) -> Any:
        return dead if b.name == "mimir-blocks" else s3

    planned = plans(c, as_of, client_for)
    assert re.fullmatch(r"bucket 'mimir-blocks': GetBucketLifecycleConfiguration failed \(EndpointConnectionError: "
                        r"Could not connect to the endpoint URL: .*; S3 could not be reached or did not answer\)",
                        planned["mimir-blocks"]["error"])
    assert "error" not in planned["thanos-blocks"]
    # The apply of a bucket whose endpoint is gone fails alone too, and the others are applied.
    healthy = plans(c, as_of, lambda _b: s3)
    outcomes = {o["bucket"]: o for o in apply_or_rollback(c, list(healthy.values()), apply=True, rollback_uri="",
                                                          client_for=client_for, store=store,
                                                          report_date=REPORT_DATE, run_id=RUN)}
    assert outcomes["mimir-blocks"]["mode"] == "failed"
    assert outcomes["mimir-blocks"]["error"].startswith("bucket 'mimir-blocks': GetBucketLifecycleConfiguration "
                                                        "failed (EndpointConnectionError")
    assert outcomes["thanos-blocks"]["mode"] == "applied" and lifecycle_rules(s3, "thanos-blocks")


def _is(operation: str, method: str, target: str) -> bool:
    query = urlsplit(target).query
    path = urlsplit(target).path
    return {
        "GetBucketLifecycleConfiguration": method == "GET" and query == "lifecycle",
        "ListObjectsV2": method == "GET" and "list-type=2" in query,
        "GetObject": method == "GET" and path.endswith("/meta.json"),
        "ListBucketIntelligentTieringConfigurations": method == "GET" and query.startswith("intelligent-tiering"),
    }[operation]


@pytest.mark.parametrize("operation", ["GetBucketLifecycleConfiguration", "ListObjectsV2", "GetObject",
                                       "ListBucketIntelligentTieringConfigurations"])
def test_a_dropped_connection_on_any_read_is_that_buckets_error(moto, s3, as_of, operation: str) -> None:
    c = cfg()
    with FaultyProxy(moto["endpoint_url"], lambda m, t: "drop" if _is(operation, m, t) else None) as proxy:
        faulty = client(proxy.url, attempts=1)
        planned = plans(c, as_of, lambda b: faulty if b.name == "mimir-blocks" else s3)
    assert any(what == "drop" for _, _, what in proxy.seen), "the fault was never triggered"
    error = planned["mimir-blocks"]["error"]
    assert re.match(rf"bucket 'mimir-blocks': {operation}( \S+)? failed \(ConnectionClosedError: ", error), error
    assert "error" not in planned["thanos-blocks"]


def test_a_put_that_took_effect_but_lost_its_answer_is_applied(moto, s3, as_of, store) -> None:
    c = cfg()
    planned = plans(c, as_of, lambda _b: s3)
    with FaultyProxy(moto["endpoint_url"], lambda m, t: "lose-answer" if is_lifecycle_write(m, t) else None) as p:
        faulty = client(p.url, attempts=1)
        (outcome,) = apply_or_rollback(c, [planned["mimir-blocks"]], apply=True, rollback_uri="",
                                       client_for=lambda _b: faulty, store=store, report_date=REPORT_DATE, run_id=RUN)
    assert [w for m, t, w in p.seen if is_lifecycle_write(m, t)] == ["lose-answer"]
    assert outcome["mode"] == "applied" and outcome["backup_uri"]
    assert any(w.startswith("PutBucketLifecycleConfiguration failed (ConnectionClosedError") and
               w.endswith("but the bucket holds the configuration sent: it took effect") for w in outcome["warnings"])
    assert {r["ID"] for r in lifecycle_rules(s3, "mimir-blocks")} >= set(outcome["in_force"])


def test_a_retry_of_the_run_reports_the_change_an_earlier_attempt_made_with_its_backup(moto, s3, as_of,
                                                                                         store) -> None:
    c = cfg()
    truth = moto["truth"]["buckets"]["mimir-blocks"]
    planned = plans(c, as_of, lambda _b: s3)
    gone = {"put": False}

    def endpoint_dies_after_the_put(method: str, target: str) -> str | None:
        # The PUT reaches S3 and takes effect; the answer and everything after it are lost.
        if gone["put"]:
            return "drop"
        if is_lifecycle_write(method, target):
            gone["put"] = True
            return "lose-answer"
        return None

    with FaultyProxy(moto["endpoint_url"], endpoint_dies_after_the_put) as proxy:
        (first,) = apply_or_rollback(c, [planned["mimir-blocks"]], apply=True, rollback_uri="",
                                     client_for=lambda _b: client(proxy.url, attempts=1), store=store,
                                     report_date=REPORT_DATE, run_id=RUN)
    assert first["mode"] == "failed"
    assert first["error"].startswith("bucket 'mimir-blocks': PutBucketLifecycleConfiguration failed "
                                     "(ConnectionClosedError")
    assert "could not be read back to check" in first["error"] and "a retry of this run reports it" in first["error"]
    (backup,) = BackupStore(store, REPORT_DATE).uris("mimir-blocks")
    assert backup in first["error"] and read_backup(backup, store.fs, store.base)["Rules"] == truth["lifecycle_rules"]
    in_bucket = lifecycle_rules(s3, "mimir-blocks")
    assert in_bucket != truth["lifecycle_rules"]  # the put did take effect

    # Airflow retries the task: same run, the endpoint is back.
    (retry,) = apply_or_rollback(c, [planned["mimir-blocks"]], apply=True, rollback_uri="",
                                 client_for=lambda _b: s3, store=store, report_date=REPORT_DATE, run_id=RUN)
    assert retry["mode"] == "applied" and retry["backup_uri"] == backup and retry["error"] is None
    assert {r["ID"] for r in retry["diff"]["added"]} == {r["ID"] for r in planned["mimir-blocks"]["finops_rules"]}
    assert any(f"applied by an earlier attempt of run {RUN}" in w for w in retry["warnings"])
    assert lifecycle_rules(s3, "mimir-blocks") == in_bucket  # nothing written again
    assert BackupStore(store, REPORT_DATE).uris("mimir-blocks") == [backup]
    # Another run finding the same rules did not make that change: unchanged, no backup.
    (other,) = apply_or_rollback(c, [planned["mimir-blocks"]], apply=True, rollback_uri="",
                                 client_for=lambda _b: s3, store=store, report_date=REPORT_DATE,
                                 run_id="scheduled__2026-11-29T00:00:00+00:00")
    assert other["mode"] == "unchanged" and other["backup_uri"] is None

    # The same for a rollback run whose write lost its answer.
    gone["put"] = False
    rollback_run = "manual__rollback"
    with FaultyProxy(moto["endpoint_url"], endpoint_dies_after_the_put) as proxy:
        (first,) = apply_or_rollback(c, [], apply=False, rollback_uri=backup,
                                     client_for=lambda _b: client(proxy.url, attempts=1), store=store,
                                     report_date=REPORT_DATE, run_id=rollback_run)
    assert first["mode"] == "failed" and "ConnectionClosedError" in first["error"]
    assert lifecycle_rules(s3, "mimir-blocks") == truth["lifecycle_rules"]  # it took effect
    (retry,) = apply_or_rollback(c, [], apply=False, rollback_uri=backup, client_for=lambda _b: s3, store=store,
                                 report_date=REPORT_DATE, run_id=rollback_run)
    assert retry["mode"] == "rolled-back" and retry["backup_uri"] in first["error"]
    assert read_backup(retry["backup_uri"], store.fs, store.base)["Rules"] == in_bucket
