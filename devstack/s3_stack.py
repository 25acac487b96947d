"""A local S3 (moto server) seeded with a deterministic Mimir / Thanos object-store world.

``up()`` starts ``moto_server`` on 127.0.0.1, fills it from ``build_world(seed, anchor_ms)`` and
writes the ground truth to ``<state_dir>/s3/ground_truth.json``. Same seed and anchor give
byte-identical objects and ground truth. The anchor defaults to today's 00:00 UTC, so block ages
("a few days" to "more than a year") stay stable through a day; pass ``anchor_ms`` to pin it.

Buckets
    mimir-blocks    Mimir layout: ``<tenant>/<ULID>/{meta.json,index,chunks/00000N}``, deletion marks
                    written twice (``<tenant>/<ULID>/deletion-mark.json`` and
                    ``<tenant>/markers/<ULID>-deletion-mark.json``), one no-compact mark (also twice),
                    ``<tenant>/bucket-index.json.gz`` (gzip JSON, Mimir bucket index version 2,
                    as current Mimir's compactor writes it),
                    ``__mimir_cluster/mimir_cluster_seed.json`` and two ``tmp/`` scratch objects
                    (not a tenant). Tenants ``team-a`` (2 compactor shards), ``team-b`` (365 d
                    retention: its blocks older than that are deletion-marked), ``anonymous``.
                    Pre-existing lifecycle rules ``expire-tmp`` and ``abort-incomplete-mpu``.
    thanos-blocks   Thanos layout ``<ULID>/...`` incl. 5m / 1h downsampled blocks; no lifecycle config.
    misc-logs       Non-block keys, some shaped like block paths but with invalid ULIDs.
    finops-reports  Empty; meant as an ``s3://`` report root.

Block ULIDs are real (48-bit creation ms + 80 seeded random bits, Crockford base32); a block's
minTime/maxTime end before its creation. Sizes are real bytes, scaled down (KB for GB) but in
realistic ratios; all meta.json / marker objects are < 128 KiB, many chunk segments are larger.
moto cannot back-date objects: ``LastModified`` is the seeding time, so a block's age must be
read from its ULID (``created_ms``), as Mimir and Thanos do themselves. All objects are STANDARD.

ground_truth.json keys
    version, seed, anchor_ms, region, endpoint_url, seeded_at (ISO), seed_seconds,
    size_threshold_bytes (131072), roles (list of role names)
    buckets.<name>:
        layout            "mimir" | "thanos" | "generic" | "empty"
        lifecycle_rules   the Rules list exactly as put, or null when the bucket has no configuration
        totals            {count, bytes} over every object
        by_role           {role: {count, bytes}}; roles: meta.json, index, chunks, markers,
                          bucket-index, other
        blocks            flat list of block records (below); tenant is null for Thanos
        tenants           (mimir only) {tenant: {prefix, retention_days, compactor_shards,
                          by_role, totals, blocks}}
        non_tenant_prefixes (mimir only) top-level prefixes that are not tenants
        objects           every object: {key, size, role, block (ULID or null), tenant (or null)}
    block record: ulid, tenant, dir (key prefix, ends with "/"), created_ms, minTime, maxTime,
        level, resolution (ms, 0 = raw), source, labels, sources (count of source blocks),
        segments, deletion_marked, deletion_time (unix s or null), no_compact, bytes,
        bytes_by_role {role: bytes}
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import random
import socket
import sys
import time
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devstack import proc

REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
DEFAULT_PORT = 19500
SIZE_THRESHOLD = 128 * 1024
ROLES = ("meta.json", "index", "chunks", "markers", "bucket-index", "other")
MIMIR_BUCKET, THANOS_BUCKET, MISC_BUCKET, REPORTS_BUCKET = (
    "mimir-blocks", "thanos-blocks", "misc-logs", "finops-reports")
PROCESS_NAME = "moto"

HOUR = 3_600_000
DAY = 24 * HOUR
# Scaled-down stand-in for the 512 MiB chunk segment limit, so that big blocks get a 000002.
SEGMENT_MAX = 256 * 1024

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

MIMIR_LIFECYCLE_RULES: list[dict[str, Any]] = [
    {"ID": "expire-tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 7}},
    {"ID": "abort-incomplete-mpu", "Filter": {"Prefix": ""}, "Status": "Enabled",
     "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 3}},
]

# history_days: age of the oldest block; scale: series volume relative to team-a.
MIMIR_TENANTS: dict[str, dict[str, Any]] = {
    "team-a": {"history_days": 430, "scale": 1.0, "shards": 2, "retention_days": None, "step": (9, 15)},
    "team-b": {"history_days": 400, "scale": 0.6, "shards": 1, "retention_days": 365, "step": (9, 15)},
    "anonymous": {"history_days": 75, "scale": 0.35, "shards": 1, "retention_days": None, "step": (5, 9)},
}
THANOS_LABELS = {"cluster": "eu-1", "prometheus_replica": "prometheus-0"}
THANOS_RETENTION_DAYS = {0: 365, 300_000: 365, 3_600_000: None}  # by resolution


# ----------------------------------------------------------------------------------------- ULIDs
def encode_ulid(value: int) -> str:
    """Crockford base32 of a 128-bit integer (26 characters, the top 2 bits are padding)."""
    return "".join(CROCKFORD[(value >> (125 - 5 * i)) & 31] for i in range(26))


def make_ulid(ts_ms: int, rng: random.Random) -> str:
    """A ULID created at ``ts_ms`` with 80 random bits drawn from ``rng`` (so it is reproducible)."""
    if not 0 <= ts_ms < 1 << 48:
        raise ValueError(f"timestamp out of ULID range: {ts_ms}")
    return encode_ulid((ts_ms << 80) | rng.getrandbits(80))


def ulid_time_ms(ulid: str) -> int:
    """Creation time (ms) encoded in a ULID; ValueError if it is not a valid ULID."""
    if len(ulid) != 26:
        raise ValueError(f"not a ULID: {ulid!r}")
    value = 0
    for ch in ulid.upper():
        idx = CROCKFORD.find(ch)
        if idx < 0:
            raise ValueError(f"not a ULID: {ulid!r}")
        value = (value << 5) | idx
    if value >> 128:
        raise ValueError(f"ULID overflows 128 bits: {ulid!r}")
    return value >> 80


# ----------------------------------------------------------------------------------------- world
@dataclass
class Obj:
    bucket: str
    key: str
    body: bytes
    role: str
    block: str | None = None
    tenant: str | None = None


@dataclass
class Block:
    ulid: str
    tenant: str | None
    dir: str
    created_ms: int
    min_time: int
    max_time: int
    level: int
    resolution: int
    source: str
    labels: dict[str, str]
    sources: list[str]
    chunk_bytes: int
    index_bytes: int
    deletion_time: int | None = None
    no_compact: bool = False
    segments: list[int] = field(default_factory=list)

    def record(self, objs: list[Obj]) -> dict[str, Any]:
        by_role: dict[str, int] = {}
        for o in objs:
            if o.block == self.ulid:
                by_role[o.role] = by_role.get(o.role, 0) + len(o.body)
        return {
            "ulid": self.ulid, "tenant": self.tenant, "dir": self.dir, "created_ms": self.created_ms,
            "minTime": self.min_time, "maxTime": self.max_time, "level": self.level,
            "resolution": self.resolution, "source": self.source, "labels": self.labels,
            "sources": len(self.sources), "segments": len(self.segments),
            "deletion_marked": self.deletion_time is not None, "deletion_time": self.deletion_time,
            "no_compact": self.no_compact, "bytes": sum(by_role.values()), "bytes_by_role": by_role,
        }


def default_anchor_ms() -> int:
    """Today 00:00 UTC in ms: ages computed from it stay put for a whole day."""
    now = int(time.time() * 1000)
    return now - now % DAY


def _json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, indent="\t").encode()


def _segments(total: int) -> list[int]:
    segs = []
    while total > 0:
        segs.append(min(total, SEGMENT_MAX))
        total -= SEGMENT_MAX
    return segs


class _World:
    def __init__(self, seed: int, anchor_ms: int):
        self.rng = random.Random(seed)
        # Separate stream for payload bytes so object contents never shift the block structure.
        self.byte_rng = random.Random(seed ^ 0x5EED_B17E)
        self.anchor = anchor_ms
        self.objs: list[Obj] = []

    def ulid(self, ts_ms: int) -> str:
        return make_ulid(ts_ms, self.rng)

    def payload(self, n: int) -> bytes:
        return self.byte_rng.randbytes(n)

    def block(self, tenant: str | None, prefix: str, min_t: int, span: int, level: int, source: str,
              chunk_range: tuple[int, int], scale: float, labels: dict[str, str],
              sources: list[str] | None = None, resolution: int = 0, delay: tuple[int, int] = (1, 3),
              created_ms: int | None = None) -> Block:
        max_t = min_t + span
        if created_ms is None:
            created_ms = max_t + self.rng.randint(delay[0] * HOUR, delay[1] * HOUR)
        ulid = self.ulid(created_ms)
        chunks = max(2_000, int(self.rng.randint(*chunk_range) * scale))
        index = max(1_500, int(chunks * self.rng.uniform(0.12, 0.28)))
        return Block(ulid=ulid, tenant=tenant, dir=f"{prefix}{ulid}/", created_ms=created_ms,
                     min_time=min_t, max_time=max_t, level=level, resolution=resolution, source=source,
                     labels=dict(labels), sources=sources if sources is not None else [ulid],
                     chunk_bytes=chunks, index_bytes=index, segments=_segments(chunks))

    def fake_sources(self, min_t: int, span: int) -> list[str]:
        """ULIDs of the (long deleted) 2h blocks a compacted block was built from."""
        return [self.ulid(t + 2 * HOUR + self.rng.randint(HOUR // 2, 2 * HOUR))
                for t in range(min_t, min_t + span, 2 * HOUR)]

    def emit_block(self, bucket: str, b: Block, mimir_prefix: str | None) -> None:
        """Write the block's objects; ``mimir_prefix`` (tenant prefix) also writes global markers."""
        files = [{"rel_path": f"chunks/{i + 1:06d}", "size_bytes": s} for i, s in enumerate(b.segments)]
        files += [{"rel_path": "index", "size_bytes": b.index_bytes}, {"rel_path": "meta.json"}]
        meta = {
            "ulid": b.ulid, "minTime": b.min_time, "maxTime": b.max_time,
            "stats": self._stats(b),
            "compaction": {"level": b.level, "sources": sorted(b.sources)},
            "version": 1,
            "thanos": {"labels": b.labels, "downsample": {"resolution": b.resolution},
                       "source": b.source, "files": files},
        }
        add = self.objs.append
        add(Obj(bucket, b.dir + "meta.json", _json_bytes(meta), "meta.json", b.ulid, b.tenant))
        add(Obj(bucket, b.dir + "index", self.payload(b.index_bytes), "index", b.ulid, b.tenant))
        for i, size in enumerate(b.segments):
            add(Obj(bucket, f"{b.dir}chunks/{i + 1:06d}", self.payload(size), "chunks", b.ulid, b.tenant))
        if b.deletion_time is not None:
            mark = _json_bytes({"id": b.ulid, "deletion_time": b.deletion_time, "version": 1})
            add(Obj(bucket, b.dir + "deletion-mark.json", mark, "markers", b.ulid, b.tenant))
            if mimir_prefix is not None:
                add(Obj(bucket, f"{mimir_prefix}markers/{b.ulid}-deletion-mark.json", mark, "markers",
                        b.ulid, b.tenant))
        if b.no_compact:
            mark = _json_bytes({"id": b.ulid, "version": 1, "details": "index has out-of-order chunks",
                                "no_compact_time": b.created_ms // 1000 + 3600,
                                "reason": "block-index-out-of-order-chunk"})
            add(Obj(bucket, b.dir + "no-compact-mark.json", mark, "markers", b.ulid, b.tenant))
            if mimir_prefix is not None:
                add(Obj(bucket, f"{mimir_prefix}markers/{b.ulid}-no-compact-mark.json", mark, "markers",
                        b.ulid, b.tenant))

    def _stats(self, b: Block) -> dict[str, int]:
        # Roughly 1.3 bytes/sample and 120 samples/chunk, as Prometheus TSDB compresses.
        samples = int(b.chunk_bytes * 1000 / 1.3)
        chunks = max(1, samples // 120)
        series = max(1, int(b.index_bytes * 1000 / 180))
        return {"numSamples": samples, "numSeries": series, "numChunks": max(chunks, series)}


def _index_entry(b: Block, uploaded_at: int) -> dict[str, Any]:
    """A block of a Mimir bucket index as current Mimir writes it (bucketindex.Block, IndexVersion2):
    fields in struct order, the ``omitempty`` ones left out when empty."""
    entry: dict[str, Any] = {"block_id": b.ulid, "min_time": b.min_time, "max_time": b.max_time,
                             "segments_format": "1b6d", "segments_num": len(b.segments), "uploaded_at": uploaded_at}
    shard = b.labels.get("__compactor_shard_id__", "")
    if shard:
        entry["compactor_shard_id"] = shard
    entry["source"] = b.source
    entry["compaction_level"] = b.level
    if b.labels:
        entry["labels"] = dict(b.labels)
    return entry


def _mimir(w: _World) -> dict[str, Any]:
    a, rng = w.anchor, w.rng
    tenants_truth: dict[str, Any] = {}
    for tenant, cfg in MIMIR_TENANTS.items():
        prefix = f"{tenant}/"
        scale, shards = cfg["scale"], cfg["shards"]
        blocks: list[Block] = []
        # Recent: the 2h blocks of day -3 shipped by ingesters; the first half already compacted
        # into a 12h level-2 block, so those six carry deletion marks (as the compactor leaves them).
        day3 = a - 3 * DAY
        recent = [w.block(tenant, prefix, day3 + i * 2 * HOUR, 2 * HOUR, 1, "ingester",
                          (4_000, 30_000), scale, {}, delay=(0, 1)) for i in range(12)]
        first_half = recent[:6]
        merged = w.block(tenant, prefix, day3, 12 * HOUR, 2, "compactor", (40_000, 120_000), scale, {},
                         sources=[b.ulid for b in first_half], delay=(2, 6))
        for b in first_half:
            b.deletion_time = merged.created_ms // 1000 + rng.randint(30, 600)
        blocks += [*recent, merged]
        # 12h level-2 blocks for days -4..-7.
        for d in range(4, 8):
            for half in (0, 1):
                start = a - d * DAY + half * 12 * HOUR
                blocks.append(w.block(tenant, prefix, start, 12 * HOUR, 2, "compactor",
                                      (40_000, 120_000), scale, {}, sources=w.fake_sources(start, 12 * HOUR),
                                      delay=(2, 6)))
        # 24h blocks from day -8 to the oldest, sampled (a contiguous history would be too many bytes).
        days, d = [], 8 + rng.randint(0, 3)
        while d < cfg["history_days"]:
            days.append(d)
            d += rng.randint(*cfg["step"])
        days.append(cfg["history_days"])
        for d in days:
            start = a - d * DAY
            srcs = w.fake_sources(start, DAY)
            created = start + DAY + rng.randint(2 * HOUR, 10 * HOUR)
            for s in range(shards):
                labels = {"__compactor_shard_id__": f"{s + 1}_of_{shards}"} if shards > 1 else {}
                blocks.append(w.block(tenant, prefix, start, DAY, 4 if shards > 1 else 3, "compactor",
                                      (100_000, 300_000), scale,
                                      labels, sources=srcs, created_ms=created + s * rng.randint(1, 90_000)))
        if cfg["retention_days"]:
            cutoff = a - cfg["retention_days"] * DAY
            for b in blocks:
                if b.max_time < cutoff:
                    b.deletion_time = a // 1000 - rng.randint(600, 6 * 3600)
        # One block the compactor refused (out-of-order chunks), a classic operational leftover.
        if tenant == "team-a":
            candidates = [b for b in blocks if b.level == 2 and b.deletion_time is None]
            rng.choice(candidates).no_compact = True
        blocks.sort(key=lambda b: b.ulid)
        for b in blocks:
            w.emit_block(MIMIR_BUCKET, b, prefix)
        index = {
            "version": 2,
            "blocks": [_index_entry(b, b.created_ms // 1000 + rng.randint(5, 120)) for b in blocks],
            "block_deletion_marks": [{"block_id": b.ulid, "deletion_time": b.deletion_time}
                                     for b in blocks if b.deletion_time is not None],
            "updated_at": a // 1000 - rng.randint(60, 900),
        }
        w.objs.append(Obj(MIMIR_BUCKET, f"{prefix}bucket-index.json.gz",
                          gzip.compress(json.dumps(index).encode(), mtime=0), "bucket-index", None, tenant))
        tenants_truth[tenant] = {"prefix": prefix, "retention_days": cfg["retention_days"],
                                 "compactor_shards": shards, "_blocks": blocks}
    seed_doc = {"UID": "%032x" % rng.getrandbits(128),  # noqa: UP031 - fixed-width hex
                "created_at": datetime.fromtimestamp((a - 500 * DAY) / 1000, UTC).isoformat()}
    w.objs.append(Obj(MIMIR_BUCKET, "__mimir_cluster/mimir_cluster_seed.json", _json_bytes(seed_doc),
                      "other"))
    for name in ("compactor-3f1c.tmp", "upload-7a2e.part"):
        w.objs.append(Obj(MIMIR_BUCKET, f"tmp/{name}", w.payload(rng.randint(1_000, 20_000)), "other"))
    return tenants_truth


def _thanos(w: _World) -> list[Block]:
    a, rng = w.anchor, w.rng
    lbl = THANOS_LABELS
    blocks: list[Block] = []
    day3 = a - 3 * DAY
    blocks += [w.block(None, "", day3 + i * 2 * HOUR, 2 * HOUR, 1, "sidecar", (5_000, 30_000), 1.0, lbl,
                       delay=(0, 1)) for i in range(6)]
    for d in (4, 5):
        for k in range(3):
            start = a - d * DAY + k * 8 * HOUR
            blocks.append(w.block(None, "", start, 8 * HOUR, 2, "compactor", (20_000, 80_000), 1.0, lbl,
                                  sources=w.fake_sources(start, 8 * HOUR)))
    spans = [(a - d * DAY, 2 * DAY, 3, (60_000, 160_000)) for d in (8, 10, 12, 14)]
    first14 = a - 14 * DAY
    spans += [(first14 - k * 14 * DAY, 14 * DAY, 4, (150_000, 420_000)) for k in range(1, 28)]
    for start, span, level, chunk_range in spans:
        raw = w.block(None, "", start, span, level, "compactor", chunk_range, 1.0, lbl,
                      sources=w.fake_sources(start, min(span, 2 * DAY)), delay=(2, 12))
        blocks.append(raw)
        # Downsampled copies: 5m once a block is older than 40h, 1h once it spans more than 10 days.
        res_list = [(300_000, (0.12, 0.2))] + ([(3_600_000, (0.02, 0.05))] if span > 10 * DAY else [])
        for res, (lo, hi) in res_list:
            created = raw.created_ms + rng.randint(HOUR, 6 * HOUR)
            ds = w.block(None, "", start, span, level, "compactor", (raw.chunk_bytes, raw.chunk_bytes),
                         rng.uniform(lo, hi), lbl, sources=list(raw.sources), resolution=res,
                         created_ms=created)
            blocks.append(ds)
    for b in blocks:
        keep = THANOS_RETENTION_DAYS[b.resolution]
        if keep and b.max_time < a - keep * DAY:
            b.deletion_time = a // 1000 - rng.randint(600, 6 * 3600)
    rng.choice([b for b in blocks if b.level == 3 and b.resolution == 0]).no_compact = True
    blocks.sort(key=lambda b: b.ulid)
    for b in blocks:
        w.emit_block(THANOS_BUCKET, b, None)
    return blocks


def _misc(w: _World) -> None:
    keys = [
        "README.txt", "exports/usage-2026-10.csv", "exports/usage-2026-11.csv",
        "app/2026/11/25/api-0001.log.gz", "app/2026/11/26/api-0001.log.gz", "app/2026/11/27/api-0001.log.gz",
        "app/2026/11/27/api-0002.log.gz", "not-a-ulid/meta.json",
        "01HZZZZZZZZZZZZZZZZZZZZZZU/index",          # 26 chars but 'U' is not Crockford
        "8ZZZZZZZZZZZZZZZZZZZZZZZZZ/meta.json",      # overflows 128 bits
        "2026-11-01T00:00:00Z/chunks/000001",
    ]
    for key in keys:
        big = key.endswith(".log.gz")
        size = w.rng.randint(140_000, 220_000) if big else w.rng.randint(200, 9_000)
        w.objs.append(Obj(MISC_BUCKET, key, w.payload(size), "other"))


def _role_stats(objs: Iterable[Obj]) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    by_role = {r: {"count": 0, "bytes": 0} for r in ROLES}
    for o in objs:
        by_role[o.role]["count"] += 1
        by_role[o.role]["bytes"] += len(o.body)
    totals = {"count": sum(v["count"] for v in by_role.values()),
              "bytes": sum(v["bytes"] for v in by_role.values())}
    return by_role, totals


def build_world(seed: int = 42, anchor_ms: int | None = None) -> tuple[list[Obj], dict[str, Any]]:
    """All objects to upload and the ground truth describing them (pure, deterministic)."""
    w = _World(seed, default_anchor_ms() if anchor_ms is None else anchor_ms)
    tenants = _mimir(w)
    thanos_blocks = _thanos(w)
    _misc(w)
    objs = w.objs

    def objects(bucket: str) -> list[Obj]:
        return [o for o in objs if o.bucket == bucket]

    buckets: dict[str, Any] = {}
    mimir_objs = objects(MIMIR_BUCKET)
    by_role, totals = _role_stats(mimir_objs)
    tenants_out = {}
    mimir_records = []
    for tenant, info in tenants.items():
        t_objs = [o for o in mimir_objs if o.tenant == tenant]
        recs = [b.record(t_objs) for b in info.pop("_blocks")]
        mimir_records += recs
        t_role, t_tot = _role_stats(t_objs)
        tenants_out[tenant] = {**info, "by_role": t_role, "totals": t_tot, "blocks": recs}
    buckets[MIMIR_BUCKET] = {
        "layout": "mimir", "lifecycle_rules": MIMIR_LIFECYCLE_RULES, "totals": totals, "by_role": by_role,
        "blocks": mimir_records, "tenants": tenants_out, "non_tenant_prefixes": ["__mimir_cluster/", "tmp/"],
    }
    thanos_objs = objects(THANOS_BUCKET)
    by_role, totals = _role_stats(thanos_objs)
    buckets[THANOS_BUCKET] = {"layout": "thanos", "lifecycle_rules": None, "totals": totals,
                              "by_role": by_role, "blocks": [b.record(thanos_objs) for b in thanos_blocks]}
    by_role, totals = _role_stats(objects(MISC_BUCKET))
    buckets[MISC_BUCKET] = {"layout": "generic", "lifecycle_rules": None, "totals": totals,
                            "by_role": by_role, "blocks": []}
    by_role, totals = _role_stats([])
    buckets[REPORTS_BUCKET] = {"layout": "empty", "lifecycle_rules": None, "totals": totals,
                               "by_role": by_role, "blocks": []}
    for name, b in buckets.items():
        b["objects"] = [{"key": o.key, "size": len(o.body), "role": o.role, "block": o.block,
                         "tenant": o.tenant} for o in objects(name)]
    truth = {"version": 1, "seed": seed, "anchor_ms": w.anchor, "region": REGION,
             "size_threshold_bytes": SIZE_THRESHOLD, "roles": list(ROLES), "buckets": buckets}
    return objs, truth


# ----------------------------------------------------------------------------------------- process
def _run_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "s3"


def truth_path(state_dir: Path) -> Path:
    return _run_dir(state_dir) / "ground_truth.json"


def client(endpoint_url: str):  # -> botocore S3 client; untyped to keep boto3 stubs optional
    """A boto3 S3 client for the devstack (dummy credentials, us-east-1)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint_url, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name=REGION,
                        config=Config(max_pool_connections=16, retries={"max_attempts": 3}))


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _moto_argv(port: int) -> list[str]:
    script = proc.PROJECT_ROOT / ".venv" / "bin" / "moto_server"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]
    return [*base, "-H", "127.0.0.1", "-p", str(port)]


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


def _still_seeded(endpoint: str, truth: dict[str, Any]) -> bool:
    """Cheap check that moto still holds the world the ground truth describes."""
    try:
        s3 = client(endpoint)
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=MIMIR_BUCKET)
        count = sum(p.get("KeyCount", 0) for p in pages)
        s3.head_bucket(Bucket=REPORTS_BUCKET)
    except Exception:
        return False
    return count == truth["buckets"][MIMIR_BUCKET]["totals"]["count"]


def seed_world(endpoint_url: str, objs: list[Obj], truth: dict[str, Any], workers: int = 12) -> None:
    """Create the buckets, upload the objects in parallel and put the lifecycle rules."""
    s3 = client(endpoint_url)
    for name in truth["buckets"]:
        s3.create_bucket(Bucket=name)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(s3.put_object, Bucket=o.bucket, Key=o.key, Body=o.body) for o in objs]
        for f in futures:
            f.result()
    for name, b in truth["buckets"].items():
        if b["lifecycle_rules"] is not None:
            s3.put_bucket_lifecycle_configuration(
                Bucket=name, LifecycleConfiguration={"Rules": b["lifecycle_rules"]})


def _result(truth: dict[str, Any], state_dir: Path, pid: int, reused: bool) -> dict[str, Any]:
    return {"endpoint_url": truth["endpoint_url"], "ground_truth": truth,
            "ground_truth_path": str(truth_path(state_dir)), "buckets": list(truth["buckets"]),
            "pid": pid, "reused": reused}


def up(state_dir: Path, port: int = DEFAULT_PORT, seed: int = 42, *, anchor_ms: int | None = None,
       fresh: bool = False, timeout: float = 60.0) -> dict[str, Any]:
    """Start moto on 127.0.0.1:``port`` and seed it; reuse a running, already seeded instance.

    Reuse only checks the object count of mimir-blocks: a test that changed lifecycle rules or
    objects should pass ``fresh=True`` (reset moto and seed again) to get the pristine world back.
    Returns {endpoint_url, ground_truth (dict), ground_truth_path, buckets, pid, reused}.
    """
    run = _run_dir(state_dir)
    run.mkdir(parents=True, exist_ok=True)
    endpoint = f"http://127.0.0.1:{port}"
    pid = proc.read_pid(run / f"{PROCESS_NAME}.pid")
    truth = _load_json(truth_path(state_dir))
    if not fresh and pid and truth and truth.get("endpoint_url") == endpoint and truth.get("seed") == seed \
            and (anchor_ms is None or truth.get("anchor_ms") == anchor_ms) and _still_seeded(endpoint, truth):
        return _result(truth, state_dir, pid, reused=True)
    running = _load_json(run / "stack.json") or {}
    if pid and running.get("port") != port:
        proc.stop(PROCESS_NAME, run)  # running on another port: restart where asked
        pid = None
    if not pid:
        if port_in_use(port):
            raise RuntimeError(f"port {port} is already in use by a process this devstack did not start")
        pid = proc.spawn(PROCESS_NAME, _moto_argv(port), run)
        _write_json(run / "stack.json", {"port": port, "endpoint_url": endpoint, "pid": pid})
    proc.wait_http(f"{endpoint}/moto-api/", timeout=timeout, name="moto_server",
                   log=run / f"{PROCESS_NAME}.log")
    truth_path(state_dir).unlink(missing_ok=True)
    # Start from an empty moto so the contents match the ground truth exactly.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
    t0 = time.monotonic()
    objs, truth = build_world(seed, anchor_ms)
    seed_world(endpoint, objs, truth)
    truth = {**truth, "endpoint_url": endpoint, "seeded_at": datetime.now(UTC).isoformat(timespec="seconds"),
             "seed_seconds": round(time.monotonic() - t0, 2)}
    _write_json(truth_path(state_dir), truth)
    return _result(truth, state_dir, pid, reused=False)


def down(state_dir: Path) -> bool:
    """Stop moto (its data is in memory and goes with it). True if it was running."""
    run = _run_dir(state_dir)
    stopped = proc.stop(PROCESS_NAME, run)
    (run / "stack.json").unlink(missing_ok=True)
    truth_path(state_dir).unlink(missing_ok=True)
    return stopped


def status(state_dir: Path) -> dict[str, Any]:
    """{running, pid, endpoint_url, seeded, objects} for the moto of ``state_dir``."""
    run = _run_dir(state_dir)
    pid = proc.read_pid(run / f"{PROCESS_NAME}.pid")
    info = _load_json(run / "stack.json") or {}
    truth = _load_json(truth_path(state_dir))
    out: dict[str, Any] = {"running": pid is not None, "pid": pid, "endpoint_url": info.get("endpoint_url"),
                           "seeded": False, "ground_truth_path": str(truth_path(state_dir))}
    if pid and truth:
        out["seeded"] = True
        out["objects"] = sum(b["totals"]["count"] for b in truth["buckets"].values())
        out["bytes"] = sum(b["totals"]["bytes"] for b in truth["buckets"].values())
        out["seed"] = truth.get("seed")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devstack.s3_stack")
    ap.add_argument("action", choices=["up", "down", "status"])
    ap.add_argument("--port", type=int, default=DEFAULT_PORT)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    sd = proc.state_dir()
    if args.action == "up":
        res = up(sd, port=args.port, seed=args.seed)
        print(json.dumps({k: v for k, v in res.items() if k != "ground_truth"}, indent=1))
    elif args.action == "down":
        print("stopped" if down(sd) else "not running")
    else:
        print(json.dumps(status(sd), indent=1))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
