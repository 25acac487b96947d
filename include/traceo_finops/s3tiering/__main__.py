"""Command line of S3 tiering: list lifecycle backups and restore one.

    python -m traceo_finops.s3tiering backups --bucket mimir-blocks
    python -m traceo_finops.s3tiering rollback --bucket mimir-blocks --backup <URI printed by backups>

Run with ``include/`` on ``PYTHONPATH`` and the same configuration (``FINOPS_CONFIG``,
``FINOPS_REPORT_ROOT``) and connections (``AIRFLOW_CONN_*``) as the DAG. A rollback only touches
a bucket listed with ``apply: true``, backs up the configuration it replaces, and verifies the
result; it prints what it did as JSON and exits 1 on any error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any


def _store(cfg: Any) -> Any:
    if cfg.report_root_uri.startswith("s3://"):
        from traceo_finops.airflow_adapter import report_store

        return report_store(cfg)
    from traceo_finops.reports import ReportStore

    return ReportStore(cfg.report_root_uri)


def list_backups(store: Any, bucket: str) -> list[str]:
    """URIs of the bucket's backups of every date, oldest first."""
    from traceo_finops.s3tiering.apply import BackupStore

    return BackupStore(store, None).uris(bucket, all_dates=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m traceo_finops.s3tiering", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="configuration file (default: FINOPS_CONFIG or include/config/finops.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("backups", help="list the lifecycle backups of a bucket under report_root")
    b.add_argument("--bucket", required=True)
    r = sub.add_parser("rollback", help="restore a lifecycle backup on its bucket (allowlisted buckets only)")
    r.add_argument("--bucket", required=True, help="the bucket to restore; must match the backup's")
    r.add_argument("--backup", required=True, help="backup URI (local path or s3://) under report_root")
    args = parser.parse_args(argv)

    from traceo_finops.config import ConfigError, load_config
    from traceo_finops.s3tiering.errors import S3TieringError

    # stdout carries only the answer (JSON, or the backup URIs): whatever else writes to it while we work
    # (Airflow configures its logging to stdout when the connection lookup imports it) goes to stderr.
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        cfg = load_config(args.config)
        bucket = cfg.bucket(args.bucket)
        store = _store(cfg)
        if args.command == "backups":
            for uri in list_backups(store, bucket.name):
                print(uri, file=answer)
            answer.flush()
            return 0
        from traceo_finops.s3tiering.apply import BackupStore, read_backup, rollback

        doc = read_backup(args.backup, store.fs, store.base)
        if doc["bucket"] != bucket.name:  # before importing Airflow for the connection: a quick refusal
            raise S3TieringError(bucket.name, f"backup {args.backup} is of bucket {doc['bucket']!r}; refusing to "
                                              "restore it here")
        from traceo_finops.airflow_adapter import s3_client

        now = datetime.now(UTC)
        # Each command its own run: a retry of a run reports what an earlier attempt did (apply.rollback).
        outcome = rollback(s3_client(bucket.conn_id), bucket, doc, BackupStore(store, now.date()),
                           run_id=f"cli__{now:%Y%m%dT%H%M%S%fZ}", backup_uri=args.backup)
    except (ConfigError, S3TieringError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(outcome.as_dict(), indent=1, default=str), file=answer)
    answer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
