"""The devstack's seeded S3 (moto) and Slack webhook sink, checked over real HTTP on 127.0.0.1.

Layout checks re-derive everything from the bucket listing and object bodies (own ULID decoder,
own key classifier) and compare with the ground truth file, so they catch a seeder that writes
something other than what it claims.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from devstack import __main__ as devstack_cli
from devstack import proc, s3_stack, slack_sink
from tests.support.net import free_port

pytestmark = pytest.mark.integration

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_RE = r"[0-9A-HJKMNP-TV-Z]{26}"
DAY_MS = 86_400_000
KB128 = 128 * 1024
SPAN_BY_LEVEL_MIMIR = {1: 2 * 3_600_000, 2: 12 * 3_600_000, 3: DAY_MS, 4: DAY_MS}


def decode_ulid_ms(ulid: str) -> int:
    value = 0
    for ch in ulid:
        value = value * 32 + CROCKFORD.index(ch)
    return value >> 80


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def classify(bucket_layout: str, key: str) -> str:
    """Role of a key, from the Mimir/Thanos naming rules alone."""
    if bucket_layout not in ("mimir", "thanos"):
        return "other"
    tenant = r"[^/]+/" if bucket_layout == "mimir" else ""
    if re.fullmatch(rf"{tenant}{ULID_RE}/meta\.json", key):
        return "meta.json"
    if re.fullmatch(rf"{tenant}{ULID_RE}/index", key):
        return "index"
    if re.fullmatch(rf"{tenant}{ULID_RE}/chunks/\d{{6}}", key):
        return "chunks"
    if re.fullmatch(rf"{tenant}{ULID_RE}/(deletion|no-compact)-mark\.json", key):
        return "markers"
    global_mark = rf"[^/]+/markers/{ULID_RE}-(deletion|no-compact)-mark\.json"
    if bucket_layout == "mimir" and re.fullmatch(global_mark, key):
        return "markers"
    if bucket_layout == "mimir" and re.fullmatch(r"[^/]+/bucket-index\.json\.gz", key):
        return "bucket-index"
    return "other"


def list_all(s3, bucket: str) -> dict[str, int]:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["Size"]
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    state = tmp_path_factory.mktemp("devstack")
    s3_port, slack_port = free_port(), free_port()
    s3 = s3_stack.up(state, port=s3_port, seed=7)
    sink = slack_sink.up(state, port=slack_port)
    yield {"state": state, "s3": s3, "sink": sink, "s3_port": s3_port, "slack_port": slack_port,
           "client": s3_stack.client(s3["endpoint_url"])}
    slack_sink.down(state)
    s3_stack.down(state)


@pytest.fixture()
def sink_url(stack):
    url = stack["sink"]["url"]
    slack_sink.reset(url)
    return url


def post(url: str, doc, content_type: str = "application/json"):
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": content_type,
                                                                          "Authorization": "Bearer secret"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


# ----------------------------------------------------------------------------------------- world
@pytest.mark.unit
def test_world_is_deterministic_per_seed_and_anchor():
    anchor = 1_795_824_000_000
    objs_a, truth_a = s3_stack.build_world(11, anchor)
    objs_b, truth_b = s3_stack.build_world(11, anchor)
    objs_c, truth_c = s3_stack.build_world(12, anchor)
    assert truth_a == truth_b
    assert [(o.key, o.body) for o in objs_a] == [(o.key, o.body) for o in objs_b]
    ulids = {b["ulid"] for b in truth_a["buckets"]["mimir-blocks"]["blocks"]}
    assert ulids.isdisjoint({b["ulid"] for b in truth_c["buckets"]["mimir-blocks"]["blocks"]})
    chunks_a = {o.body for o in objs_a if o.role == "chunks"}
    assert chunks_a.isdisjoint({o.body for o in objs_c if o.role == "chunks"})
    total = sum(len(o.body) for o in objs_a)
    assert total < 50 * 1024 * 1024, total


def test_seeded_keys_and_sizes_match_ground_truth(stack):
    s3, truth = stack["client"], stack["s3"]["ground_truth"]
    assert set(stack["s3"]["buckets"]) == {"mimir-blocks", "thanos-blocks", "misc-logs", "finops-reports"}
    on_disk = json.loads(Path(stack["s3"]["ground_truth_path"]).read_text())
    assert on_disk["buckets"].keys() == truth["buckets"].keys() and on_disk["seed"] == 7
    for name, b in truth["buckets"].items():
        listed = list_all(s3, name)
        assert listed == {o["key"]: o["size"] for o in b["objects"]}, name
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for key, size in listed.items():
            role = classify(b["layout"], key)
            counts[role][0] += 1
            counts[role][1] += size
        expected = {r: [v["count"], v["bytes"]] for r, v in b["by_role"].items() if v["count"]}
        assert dict(counts) == expected, name
    assert list_all(s3, "finops-reports") == {}


def test_mimir_tenants_and_roles(stack):
    s3, mimir = stack["client"], stack["s3"]["ground_truth"]["buckets"]["mimir-blocks"]
    top = s3.list_objects_v2(Bucket="mimir-blocks", Delimiter="/")
    prefixes = {p["Prefix"] for p in top["CommonPrefixes"]}
    assert prefixes == {t["prefix"] for t in mimir["tenants"].values()} | set(mimir["non_tenant_prefixes"])
    assert {"team-a/", "team-b/", "anonymous/", "__mimir_cluster/"} <= prefixes
    s3.head_object(Bucket="mimir-blocks", Key="__mimir_cluster/mimir_cluster_seed.json")
    for tenant, info in mimir["tenants"].items():
        keys = list_all(s3, "mimir-blocks").keys()
        tkeys = [k for k in keys if k.startswith(f"{tenant}/")]
        roles = defaultdict(int)
        for k in tkeys:
            roles[classify("mimir", k)] += 1
        assert roles["meta.json"] == roles["index"] == len(info["blocks"]) > 0
        assert roles["chunks"] >= len(info["blocks"])
        assert roles["bucket-index"] == 1
        assert dict(roles) == {r: v["count"] for r, v in info["by_role"].items() if v["count"]}
    # Some blocks have a second chunk segment.
    assert any(k.endswith("/chunks/000002") for k in list_all(s3, "mimir-blocks"))


def test_ulids_meta_json_and_block_times(stack):
    s3, truth = stack["client"], stack["s3"]["ground_truth"]
    anchor = truth["anchor_ms"]
    for bucket in ("mimir-blocks", "thanos-blocks"):
        blocks = truth["buckets"][bucket]["blocks"]
        assert len({b["ulid"] for b in blocks}) == len(blocks)
        for b in blocks:
            assert re.fullmatch(ULID_RE, b["ulid"])
            assert decode_ulid_ms(b["ulid"]) == b["created_ms"]
            meta = json.loads(s3.get_object(Bucket=bucket, Key=b["dir"] + "meta.json")["Body"].read())
            assert meta["ulid"] == b["ulid"] and meta["version"] == 1
            assert (meta["minTime"], meta["maxTime"]) == (b["minTime"], b["maxTime"])
            assert meta["compaction"]["level"] == b["level"] and meta["compaction"]["sources"]
            assert set(meta["stats"]) == {"numSamples", "numSeries", "numChunks"}
            assert meta["thanos"]["downsample"]["resolution"] == b["resolution"]
            assert meta["thanos"]["source"] in ("ingester", "sidecar", "compactor")
            # A block is written after the last sample it holds.
            assert meta["minTime"] < meta["maxTime"] < b["created_ms"]
            if bucket == "mimir-blocks":
                assert meta["maxTime"] - meta["minTime"] == SPAN_BY_LEVEL_MIMIR[b["level"]]
        ages_days = [(anchor - b["created_ms"]) / DAY_MS for b in blocks]
        assert min(ages_days) < 7 and max(ages_days) > 365, bucket
    levels = {b["level"] for b in truth["buckets"]["mimir-blocks"]["blocks"]}
    assert {1, 2, 4} <= levels
    resolutions = {b["resolution"] for b in truth["buckets"]["thanos-blocks"]["blocks"]}
    assert resolutions == {0, 300_000, 3_600_000}


def test_deletion_marks_are_written_twice_and_indexed(stack):
    s3, mimir = stack["client"], stack["s3"]["ground_truth"]["buckets"]["mimir-blocks"]
    keys = set(list_all(s3, "mimir-blocks"))
    for tenant, info in mimir["tenants"].items():
        marked = {b["ulid"] for b in info["blocks"] if b["deletion_marked"]}
        assert marked, tenant
        local = {m.group(1) for k in keys
                 if (m := re.fullmatch(rf"{tenant}/({ULID_RE})/deletion-mark\.json", k))}
        global_ = {m.group(1) for k in keys
                   if (m := re.fullmatch(rf"{tenant}/markers/({ULID_RE})-deletion-mark\.json", k))}
        assert local == global_ == marked
        for ulid in marked:
            mark = json.loads(s3.get_object(Bucket="mimir-blocks",
                                            Key=f"{tenant}/{ulid}/deletion-mark.json")["Body"].read())
            assert mark["id"] == ulid and isinstance(mark["deletion_time"], int)
        raw = s3.get_object(Bucket="mimir-blocks", Key=f"{tenant}/bucket-index.json.gz")["Body"].read()
        index = json.loads(gzip.decompress(raw))
        # Version 2, as current Mimir writes it: compactor_shard_id from the block's shard label, omitted when none.
        assert index["version"] == 2 and isinstance(index["updated_at"], int)
        assert {b["block_id"] for b in index["blocks"]} == {b["ulid"] for b in info["blocks"]}
        shards = {b["ulid"]: b["labels"].get("__compactor_shard_id__") for b in info["blocks"]}
        assert {e["block_id"]: e.get("compactor_shard_id") for e in index["blocks"]} == shards
        assert any(shards.values()) == (info["compactor_shards"] > 1)
        assert {m["block_id"] for m in index["block_deletion_marks"]} == marked
        by_id = {b["ulid"]: b for b in info["blocks"]}
        for entry in index["blocks"]:
            assert (entry["min_time"], entry["max_time"]) == (by_id[entry["block_id"]]["minTime"],
                                                               by_id[entry["block_id"]]["maxTime"])
    # team-b keeps 365 days: every block wholly older than that is marked, nothing younger.
    anchor = stack["s3"]["ground_truth"]["anchor_ms"]
    team_b = mimir["tenants"]["team-b"]
    assert team_b["retention_days"] == 365
    for b in team_b["blocks"]:
        if b["maxTime"] < anchor - 365 * DAY_MS:
            assert b["deletion_marked"], b["ulid"]


def test_size_bands(stack):
    s3 = stack["client"]
    sizes = {**{("mimir", k): v for k, v in list_all(s3, "mimir-blocks").items()},
             **{("thanos", k): v for k, v in list_all(s3, "thanos-blocks").items()}}
    small_roles = {"meta.json", "markers", "bucket-index"}
    chunk_sizes = [v for (layout, k), v in sizes.items() if classify(layout, k) == "chunks"]
    assert all(v < KB128 for (layout, k), v in sizes.items() if classify(layout, k) in small_roles)
    assert sum(v > KB128 for v in chunk_sizes) >= 10 and sum(v < KB128 for v in chunk_sizes) >= 10
    assert sum(sizes.values()) < 50 * 1024 * 1024


def test_lifecycle_rules_preexisting(stack):
    s3, truth = stack["client"], stack["s3"]["ground_truth"]
    got = s3.get_bucket_lifecycle_configuration(Bucket="mimir-blocks")["Rules"]
    want = truth["buckets"]["mimir-blocks"]["lifecycle_rules"]
    assert {r["ID"] for r in got} == {"expire-tmp", "abort-incomplete-mpu"} == {r["ID"] for r in want}
    by_id = {r["ID"]: r for r in got}
    assert all(by_id[r["ID"]] == r for r in want)  # ground truth records the rules exactly as put
    assert by_id["expire-tmp"]["Filter"] == {"Prefix": "tmp/"}
    assert by_id["expire-tmp"]["Expiration"] == {"Days": 7}
    assert by_id["abort-incomplete-mpu"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 3}
    assert any(k.startswith("tmp/") for k in list_all(s3, "mimir-blocks"))
    for bucket in ("thanos-blocks", "misc-logs", "finops-reports"):
        with pytest.raises(ClientError) as err:
            s3.get_bucket_lifecycle_configuration(Bucket=bucket)
        assert err.value.response["Error"]["Code"] == "NoSuchLifecycleConfiguration"
        assert truth["buckets"][bucket]["lifecycle_rules"] is None


def test_misc_bucket_keys_are_not_blocks(stack):
    keys = list_all(stack["client"], "misc-logs")
    assert len(keys) >= 5
    prefixes = {k.split("/")[0] for k in keys}
    assert any(len(p) == 26 for p in prefixes)  # ULID-shaped but invalid
    assert not any(re.fullmatch(ULID_RE, p) and p[0] <= "7" for p in prefixes)


def test_up_again_reuses_the_seeded_moto(stack):
    s3 = stack["client"]
    s3.put_object(Bucket="finops-reports", Key="probe.txt", Body=b"x")
    again = s3_stack.up(stack["state"], port=stack["s3_port"], seed=7)
    assert again["reused"] is True and again["pid"] == stack["s3"]["pid"]
    assert "probe.txt" in list_all(s3, "finops-reports")  # not reset / reseeded
    s3.delete_object(Bucket="finops-reports", Key="probe.txt")
    s3.put_bucket_lifecycle_configuration(Bucket="thanos-blocks", LifecycleConfiguration={"Rules": [
        {"ID": "probe", "Filter": {"Prefix": "x/"}, "Status": "Enabled", "Expiration": {"Days": 1}}]})
    fresh = s3_stack.up(stack["state"], port=stack["s3_port"], seed=7, fresh=True)
    assert fresh["reused"] is False and fresh["pid"] == stack["s3"]["pid"]
    with pytest.raises(ClientError):  # reset and seeded again: the probe rule is gone
        s3.get_bucket_lifecycle_configuration(Bucket="thanos-blocks")
    assert list_all(s3, "thanos-blocks") == {o["key"]: o["size"] for o in
                                             fresh["ground_truth"]["buckets"]["thanos-blocks"]["objects"]}
    st = s3_stack.status(stack["state"])
    assert st["running"] and st["seeded"] and st["objects"] == sum(
        b["totals"]["count"] for b in stack["s3"]["ground_truth"]["buckets"].values())


# ----------------------------------------------------------------------------------------- slack sink
def test_sink_records_a_post(stack, sink_url):
    status, body, _ = post(sink_url + slack_sink.WEBHOOK_PATH, {"text": "hello", "blocks": []})
    assert (status, body) == (200, "ok")
    recs = slack_sink.received(sink_url)
    assert len(recs) == 1
    rec = recs[0]
    assert rec["path"] == slack_sink.WEBHOOK_PATH and rec["body"] == {"text": "hello", "blocks": []}
    assert rec["delivered"] is True and rec["status"] == 200
    assert "Authorization" not in rec["headers"] and rec["headers"]["Content-Type"] == "application/json"
    lines = slack_sink.record_path(stack["state"]).read_text().splitlines()
    assert [json.loads(x)["body"] for x in lines] == [{"text": "hello", "blocks": []}]


def test_scripted_500_then_200(sink_url):
    slack_sink.script_failures(sink_url, [500])
    first = post(sink_url + "/services/a", {"text": "try 1"})
    second = post(sink_url + "/services/a", {"text": "try 2"})
    assert first[0] == 500 and second[:2] == (200, "ok")
    recs = slack_sink.received(sink_url)
    assert [(r["status"], r["delivered"]) for r in recs] == [(500, False), (200, True)]
    assert recs[0]["scripted"] is True


def test_scripted_429_carries_retry_after(sink_url):
    slack_sink.script_failures(sink_url, [429, 429], retry_after=2)
    statuses = [post(sink_url + "/services/a", {"text": f"n{i}"}) for i in range(3)]
    assert [s[0] for s in statuses] == [429, 429, 200]
    assert statuses[0][2]["Retry-After"] == "2" and statuses[0][1] == "rate_limited"
    assert "Retry-After" not in statuses[2][2]
    recs = slack_sink.received(sink_url)
    assert sum(r["delivered"] for r in recs) == 1 and len(recs) == 3


def test_sink_rejects_payloads_slack_would_reject(sink_url):
    assert post(sink_url + "/services/a", b"not json", "text/plain")[:2] == (400, "invalid_payload")
    assert post(sink_url + "/services/a", {"username": "x"})[:2] == (400, "no_text")
    form = b"payload=" + urllib.request.quote(json.dumps({"text": "form"})).encode()
    assert post(sink_url + "/services/a", form, "application/x-www-form-urlencoded")[:2] == (200, "ok")
    assert [r["delivered"] for r in slack_sink.received(sink_url)] == [False, False, True]


def test_reset_clears(sink_url):
    post(sink_url + "/services/a", {"text": "x"})
    slack_sink.script_failures(sink_url, [503])
    slack_sink.reset(sink_url)
    assert slack_sink.received(sink_url) == []
    assert post(sink_url + "/services/a", {"text": "y"})[0] == 200  # pending failure dropped too


def test_slack_provider_hook_posts_to_sink(stack, sink_url, monkeypatch, tmp_path):
    env = devstack_cli.connection_env("http://127.0.0.1:1", stack["s3"]["endpoint_url"], stack["slack_port"])
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_FINOPS", env["AIRFLOW_CONN_SLACK_FINOPS"])
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    hook = SlackWebhookHook(slack_webhook_conn_id="slack_finops")
    assert hook.client.url == f"{sink_url}{slack_sink.WEBHOOK_PATH}"
    hook.send(text="from the provider")
    recs = slack_sink.received(sink_url)
    assert [(r["path"], r["body"]["text"]) for r in recs] == [(slack_sink.WEBHOOK_PATH, "from the provider")]


# ----------------------------------------------------------------------------------------- orchestrator
def test_orchestrator_env_and_cli(stack):
    state = stack["state"]
    res = devstack_cli.up_all(state, ("s3", "slack"), s3_port=stack["s3_port"],
                              slack_port=stack["slack_port"], seed=7, prom_port=19999, quiet=True)
    assert res["s3"]["reused"] is True and res["s3"]["pid"] == stack["s3"]["pid"]
    env = json.loads((state / "env.json").read_text())
    aws = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert aws["extra"]["endpoint_url"] == stack["s3"]["endpoint_url"] and aws["login"] == "testing"
    assert json.loads(env["AIRFLOW_CONN_PROMETHEUS_DEFAULT"])["host"] == "http://127.0.0.1:19999"
    assert Path(env["DEVSTACK_GROUND_TRUTH_S3"]) == Path(stack["s3"]["ground_truth_path"])
    assert Path(env["DEVSTACK_SLACK_RECORD"]) == slack_sink.record_path(state)
    # env.sh round-trips through a real shell to the same values.
    out = subprocess.run(["bash", "-c", f". {state / 'env.sh'} && env -0"], capture_output=True, check=True)
    shell_env = dict(x.split("=", 1) for x in out.stdout.decode().split("\0") if "=" in x)
    assert all(shell_env[k] == v for k, v in env.items())
    cli_env = {**os.environ, "DEVSTACK_DIR": str(state),
               "PYTHONPATH": str(proc.PROJECT_ROOT / "include")}
    st = subprocess.run([sys.executable, "-m", "devstack", "status"], env=cli_env, capture_output=True,
                        text=True, check=True)
    status = json.loads(st.stdout)
    assert status["s3"]["running"] and status["slack"]["running"]
    printed = subprocess.run([sys.executable, "-m", "devstack", "env"], env=cli_env, capture_output=True,
                             text=True, check=True).stdout
    assert printed == (state / "env.sh").read_text()


def test_down_leaves_no_process(stack):
    """Runs last in this module: stops everything and checks nothing is left."""
    state = stack["state"]
    pids = [stack["s3"]["pid"], stack["sink"]["pid"]]
    # In-process: the services are children of this pytest process, and proc.stop reaps them.
    result = devstack_cli.down_all(state)
    assert result["s3"] is True and result["slack"] is True
    for pid in pids:
        assert not proc.pid_alive(pid), pid
    assert not listening(stack["s3_port"]) and not listening(stack["slack_port"])
    assert not s3_stack.status(state)["running"] and not slack_sink.status(state)["running"]
    assert devstack_cli.down_all(state)["s3"] is False  # idempotent
