"""Benchmark: fold a 10,000,000-row S3 Inventory (Parquet) with Traceo's reader, side by side with DuckDB.

    .venv/bin/python bench/bench_s3_inventory.py [--rows 10000000] [--regenerate]

1. Generates (once; cached under ``bench/out/s3_inventory/``) an S3 Inventory of a Mimir bucket as
   S3 lays it out: ``<destination>/inventory/<bucket>/bench/<date>/manifest.json`` and Parquet data
   files with S3's columns (bucket, key, size, last_modified_date, e_tag, storage_class,
   is_multipart_uploaded). 40 tenants, ULID blocks from 0 to 400 days old with meta.json, index,
   512 MiB chunk segments and deletion marks, global markers and bucket indexes; a few storage classes.
2. Runs, each in its own subprocess, (a) ``traceo_finops.s3tiering.inventory`` — manifest checks,
   streaming read, vectorised classification, group-by — and (b) DuckDB doing the same aggregation
   in SQL on the same files: groups by tenant, block, role, storage class, size band and age (days).
   Each child's wall time and peak RSS come from ``os.wait4`` (the kernel's rusage of that child);
   the driver imports nothing heavy before both are measured, since a child's peak RSS on Linux
   includes the image of the process it was forked from.
3. Checks both produce identical groups, prints a table, and fails if ours breaks 60 s or 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "s3_inventory"
BUCKET, DEST = "mimir-blocks-bench", "inventory-dest"
PREFIX = f"inventory/{BUCKET}/bench/2026-11-28T01-00Z"
AS_OF = "2026-11-28T10:00:00+00:00"
ROWS_PER_FILE = 1_000_000
LIMIT_S, LIMIT_BYTES = 60.0, 1.5 * 10**9
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
GENERATOR_VERSION = 2  # part of the cache key: bump when generate() changes


# -- generation ------------------------------------------------------------------------------------------------
def _ulids(ts_ms, rng):  # type: ignore[no-untyped-def]
    """Vectorised ULIDs: 48-bit time + 80 random bits, Crockford base32, as a (n,) array of str."""
    import numpy as np

    n = len(ts_ms)
    digits = np.empty((n, 26), dtype=np.uint8)
    t = ts_ms.astype(np.uint64)
    for i in range(9, -1, -1):  # 10 characters of time (the top 2 bits are padding)
        digits[:, i] = (t & np.uint64(31)).astype(np.uint8)
        t >>= np.uint64(5)
    digits[:, 10:] = rng.integers(0, 32, size=(n, 16), dtype=np.uint8)
    alphabet = np.frombuffer(CROCKFORD.encode(), dtype=np.uint8)
    return alphabet[digits].view("S26").ravel().astype(str)


def generate(rows: int) -> Path:
    """Write the inventory; return the manifest's path relative to OUT (the fake S3 root)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rng = np.random.default_rng(2026)
    as_of_ms = 1_795_860_000_000  # AS_OF, 2026-11-28T10:00Z
    tenants = np.array([f"tenant-{i:02d}" for i in range(40)])
    data_dir = OUT / DEST / PREFIX / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    files, written, part = [], 0, 0
    seg = 512 * 2**20
    while written < rows:
        # One batch of blocks: creation times over 400 days, more recent ones denser (compaction).
        nb = 60_000
        age_days = np.minimum(rng.exponential(120, nb), 400)
        created = (as_of_ms - age_days * 86_400_000 - rng.integers(0, 3_600_000, nb)).astype(np.int64)
        ulid = _ulids(created, rng)
        tenant = tenants[rng.integers(0, len(tenants), nb)]
        chunk_bytes = rng.lognormal(np.log(4 * 2**30), 1.0, nb).astype(np.int64) + 10_000
        nseg = (chunk_bytes + seg - 1) // seg
        marked = rng.random(nb) < 0.03
        per_block = 2 + nseg + marked * 2
        # Objects: for each block, meta.json, index, chunks/000001..n, deletion marks (block dir and markers/).
        b = np.repeat(np.arange(nb), per_block)
        pos = np.arange(len(b)) - np.repeat(np.cumsum(per_block) - per_block, per_block)
        n_chunks = nseg[b]
        kind = np.where(pos == 0, 0, np.where(pos == 1, 1, np.where(pos < 2 + n_chunks, 2,
                                                                  np.where(pos == 2 + n_chunks, 3, 4))))
        seg_no = pos - 1
        suffix = np.where(kind == 0, "meta.json", np.where(kind == 1, "index", np.where(
            kind == 3, "deletion-mark.json", "")))
        chunk_names = np.char.add("chunks/", np.char.zfill(seg_no.astype(str), 6))
        suffix = np.where(kind == 2, chunk_names, suffix)
        keys = np.where(kind == 4, np.char.add(np.char.add(np.char.add(tenant[b], "/markers/"), ulid[b]),
                                               "-deletion-mark.json"),
                        np.char.add(np.char.add(np.char.add(tenant[b], "/"), np.char.add(ulid[b], "/")), suffix))
        last_seg = chunk_bytes[b] - (n_chunks - 1) * seg
        size = np.where(kind == 0, rng.integers(900, 60_000, len(b)),
                        np.where(kind == 1, (chunk_bytes[b] * 0.15).astype(np.int64),
                                 np.where(kind == 2, np.where(seg_no == n_chunks, last_seg, seg), 120)))
        lm = created[b] + rng.integers(1_000, 600_000, len(b))
        lm = np.where(kind >= 3, as_of_ms - rng.integers(3_600_000, 40_000_000, len(b)), lm)
        cls = np.where((age_days[b] > 90) & (kind == 2) & (rng.random(len(b)) < 0.3), "GLACIER_IR",
                       np.where((age_days[b] > 30) & (kind == 2) & (rng.random(len(b)) < 0.2), "STANDARD_IA",
                                "STANDARD"))
        # Once: every tenant's bucket index and two objects outside tenants.
        extra_keys = np.concatenate([np.char.add(tenants, "/bucket-index.json.gz"),
                                     ["__mimir_cluster/mimir_cluster_seed.json", "tmp/upload.part"]]) \
            if written == 0 else np.array([], dtype=str)
        keys = np.concatenate([keys, extra_keys])
        size = np.concatenate([size, rng.integers(50_000, 5_000_000, len(extra_keys))])
        lm = np.concatenate([lm, np.full(len(extra_keys), as_of_ms - 600_000)])
        cls = np.concatenate([cls, np.full(len(extra_keys), "STANDARD")])
        order = np.argsort(keys, kind="stable")  # S3 Inventory lists keys in order
        take = min(len(order), rows - written)
        order = order[:take]
        for start in range(0, take, ROWS_PER_FILE):
            sl = order[start:start + ROWS_PER_FILE]
            table = pa.table({
                "bucket": pa.array(np.full(len(sl), BUCKET)),
                "key": pa.array(keys[sl]),
                "size": pa.array(size[sl].astype(np.int64)),
                "last_modified_date": pa.array(lm[sl].astype("datetime64[ms]")).cast(pa.timestamp("ms", tz="UTC")),
                "e_tag": pc.cast(pa.array(rng.integers(0, 2**62, len(sl))), pa.string()),
                "storage_class": pa.array(cls[sl]),
                "is_multipart_uploaded": pa.array(size[sl] > 16 * 2**20),
            })
            path = data_dir / f"part-{part:03d}.parquet"
            pq.write_table(table, path, row_group_size=128 * 1024, compression="snappy")
            files.append({"key": f"{PREFIX}/data/{path.name}", "size": path.stat().st_size,
                          "MD5checksum": "0" * 32})
            part += 1
        written += take
    schema = ("message s3.inventory { required binary bucket (STRING); required binary key (STRING); "
              "optional int64 size; optional int64 last_modified_date (TIMESTAMP(MILLIS,true)); "
              "optional binary e_tag (STRING); optional binary storage_class (STRING); "
              "optional boolean is_multipart_uploaded; }")
    manifest = {"sourceBucket": BUCKET, "destinationBucket": f"arn:aws:s3:::{DEST}", "version": "2016-11-30",
                "creationTimestamp": str(as_of_ms - 9 * 3_600_000), "fileFormat": "Parquet", "fileSchema": schema,
                "files": files}
    path = OUT / DEST / PREFIX / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    (OUT / "rows.txt").write_text(f"{rows} v{GENERATOR_VERSION}")
    return path


# -- the two workers ----------------------------------------------------------------------------------------------
def worker_ours(result: Path) -> None:
    from datetime import datetime

    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from traceo_finops.config import BucketLayout
    from traceo_finops.s3tiering.inventory import aggregate, iter_inventory, read_manifest

    t0 = time.perf_counter()
    fs = pafs.SubTreeFileSystem(str(OUT), pafs.LocalFileSystem())
    manifest = read_manifest(fs, f"{DEST}/{PREFIX}/manifest.json", BUCKET)
    agg = aggregate(iter_inventory(fs, manifest), BucketLayout.MIMIR, datetime.fromisoformat(AS_OF),
                    source="inventory")
    elapsed = time.perf_counter() - t0
    pq.write_table(agg.groups, result)
    print(json.dumps({"compute_s": elapsed, "rows": agg.rows, "groups": agg.groups.num_rows,
                      "deletion_marked_blocks": len(agg.deletion_marked)}))


DUCKDB_SQL = r"""
CREATE MACRO c32(u, i) AS (instr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', substr(u, i, 1)) - 1)::BIGINT;
CREATE MACRO ulid_ms(u) AS (c32(u,1) << 45) + (c32(u,2) << 40) + (c32(u,3) << 35) + (c32(u,4) << 30)
    + (c32(u,5) << 25) + (c32(u,6) << 20) + (c32(u,7) << 15) + (c32(u,8) << 10) + (c32(u,9) << 5) + c32(u,10);
CREATE TABLE result AS
WITH src AS (
  SELECT key, size, storage_class, epoch_ms(last_modified_date) AS lm_ms FROM read_parquet($files)
), parsed AS (
  SELECT size, storage_class, lm_ms,
    regexp_extract(key, '^([^/]+)/', 1) AS tenant,
    regexp_extract(key, '^[^/]+/([0-7][0-9A-HJKMNP-TV-Z]{25})/(.+)$', ['block', 'rest']) AS b,
    regexp_extract(key, '^[^/]+/markers/([0-7][0-9A-HJKMNP-TV-Z]{25})-(?:deletion|no-compact)-mark\.json$', 1) AS gm,
    regexp_matches(key, '^[^/]+/markers/tenant-deletion-mark\.json$') AS tmark,
    regexp_matches(key, '^[^/]+/bucket-index\.json\.gz$') AS bidx
  FROM src
), roles AS (
  SELECT *, CASE WHEN b.block = '' THEN 'other'
                 WHEN b.rest = 'meta.json' THEN 'meta.json' WHEN b.rest = 'index' THEN 'index'
                 WHEN starts_with(b.rest, 'chunks/') THEN 'chunks'
                 WHEN b.rest IN ('deletion-mark.json', 'no-compact-mark.json') THEN 'markers' ELSE 'other' END AS brole
  FROM parsed
), classified AS (
  SELECT tenant, storage_class, size,
    CASE WHEN gm <> '' THEN gm ELSE b.block END AS block,
    CASE WHEN bidx THEN 'bucket-index' WHEN gm <> '' OR tmark THEN 'markers' ELSE brole END AS role,
    CASE WHEN b.block <> '' AND brole <> 'markers' THEN ulid_ms(b.block) ELSE lm_ms END AS created_ms,
    CASE WHEN size < 131072 THEN '<128KB' ELSE '>=128KB' END AS size_band
  FROM roles
), grouped AS (
  SELECT tenant, block, role, storage_class, size_band,
         greatest(($as_of_ms - created_ms) // 86400000, 0)::INTEGER AS age_days,
         count(*)::BIGINT AS objects, sum(size)::BIGINT AS bytes
  FROM classified GROUP BY ALL
), tenants AS (
  SELECT DISTINCT tenant FROM grouped WHERE block <> '' OR role IN ('markers', 'bucket-index')
)
SELECT CASE WHEN t.tenant IS NULL THEN '' ELSE g.tenant END AS tenant, block, role, storage_class, size_band,
       age_days, sum(objects)::BIGINT AS objects, sum(bytes)::BIGINT AS bytes
FROM grouped g LEFT JOIN tenants t ON g.tenant = t.tenant
GROUP BY ALL;
"""


def worker_duckdb(result: Path) -> None:
    from datetime import datetime

    import duckdb

    t0 = time.perf_counter()
    manifest = json.loads((OUT / DEST / PREFIX / "manifest.json").read_text())
    files = [str(OUT / DEST / f["key"]) for f in manifest["files"]]
    as_of_ms = int(datetime.fromisoformat(AS_OF).timestamp() * 1000)
    con = duckdb.connect()
    for statement in [s for s in DUCKDB_SQL.split(";") if s.strip()]:
        params = {k: v for k, v in {"files": files, "as_of_ms": as_of_ms}.items() if f"${k}" in statement}
        con.execute(statement, params)
    rows = con.execute("SELECT sum(objects), count(*) FROM result").fetchone()
    elapsed = time.perf_counter() - t0
    con.execute(f"COPY result TO '{result}' (FORMAT parquet)")
    print(json.dumps({"compute_s": elapsed, "rows": int(rows[0]), "groups": int(rows[1])}))


# -- driver ----------------------------------------------------------------------------------------------------------
def run_child(side: str, result: Path) -> dict:
    """Run one side in a fresh interpreter; wall time and peak RSS of that child from os.wait4."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'include'}:{ROOT}"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--worker", side, "--result", str(result)],
                            stdout=subprocess.PIPE, env=env)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{side} worker failed with exit code {proc.returncode}")
    info = json.loads(out.decode().strip().splitlines()[-1])
    return {**info, "wall_s": wall, "peak_rss_bytes": usage.ru_maxrss * 1024}  # ru_maxrss is KiB on Linux


def same_groups(a: Path, b: Path) -> bool:
    import pyarrow.parquet as pq

    keys = ["tenant", "block", "role", "storage_class", "size_band", "age_days"]
    ta, tb = (pq.read_table(p).select([*keys, "objects", "bytes"]) for p in (a, b))
    tb = tb.cast(ta.schema)
    order = [(k, "ascending") for k in keys]
    return ta.sort_by(order).equals(tb.sort_by(order))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--regenerate", action="store_true")
    ap.add_argument("--worker", choices=["ours", "duckdb", "generate"])
    ap.add_argument("--result", type=Path)
    args = ap.parse_args()
    if args.worker == "ours":
        worker_ours(args.result)
        return 0
    if args.worker == "duckdb":
        worker_duckdb(args.result)
        return 0
    if args.worker == "generate":
        generate(args.rows)
        return 0
    manifest = OUT / DEST / PREFIX / "manifest.json"
    cached = (OUT / "rows.txt").read_text() if (OUT / "rows.txt").exists() else ""
    if args.regenerate or not manifest.exists() or cached != f"{args.rows} v{GENERATOR_VERSION}":
        import shutil

        shutil.rmtree(OUT, ignore_errors=True)
        t0 = time.perf_counter()
        # In a child, like everything heavy: on Linux a child's peak RSS includes the memory of the
        # process it was forked from, so this driver must stay small until both sides are measured.
        subprocess.run([sys.executable, __file__, "--worker", "generate", "--rows", str(args.rows)], check=True,
                       env={**os.environ, "PYTHONPATH": f"{ROOT / 'include'}:{ROOT}"})
        print(f"generated {args.rows:,} rows in {time.perf_counter() - t0:.1f} s under {OUT}")
    size = sum(p.stat().st_size for p in (OUT / DEST / PREFIX / "data").glob("*.parquet"))
    load = os.getloadavg()
    print(f"inventory: {args.rows:,} rows, {len(list((OUT / DEST / PREFIX / 'data').glob('*.parquet')))} Parquet "
          f"files, {size / 2**20:,.0f} MiB; {os.cpu_count()} CPUs; load average before {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}")
    results = {}
    for side in ("ours", "duckdb"):
        results[side] = run_child(side, OUT / f"result_{side}.parquet")
    load_after = os.getloadavg()
    ours, duck = results["ours"], results["duckdb"]
    identical = same_groups(OUT / "result_ours.parquet", OUT / "result_duckdb.parquet")
    print(f"{'':<8}{'wall s':>9}{'compute s':>11}{'peak RSS MiB':>14}{'groups':>11}{'rows':>13}")
    for side, r in results.items():
        print(f"{side:<8}{r['wall_s']:>9.2f}{r['compute_s']:>11.2f}{r['peak_rss_bytes'] / 2**20:>14.0f}"
              f"{r['groups']:>11,}{r['rows']:>13,}")
    print(f"ratio ours/duckdb: wall {ours['wall_s'] / duck['wall_s']:.2f}x, peak RSS "
          f"{ours['peak_rss_bytes'] / duck['peak_rss_bytes']:.2f}x; identical groups: {identical}; "
          f"load average after {load_after[0]:.2f}")
    summary = {"rows": args.rows, "files_mib": size / 2**20, "load_before": load, "load_after": load_after,
               "identical": identical, **{f"{k}_{m}": v for k, r in results.items() for m, v in r.items()}}
    (OUT / "summary.json").write_text(json.dumps(summary, indent=1))
    ok = identical and ours["wall_s"] <= LIMIT_S and ours["peak_rss_bytes"] <= LIMIT_BYTES \
        and ours["rows"] == args.rows
    print("PASS" if ok else f"FAIL (limits: {LIMIT_S:.0f} s, {LIMIT_BYTES / 1e9:.1f} GB, identical groups)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
