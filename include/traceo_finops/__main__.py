"""Command line of the library: ``python -m traceo_finops summary`` and ``python -m traceo_finops pools``."""

from __future__ import annotations

import argparse
import sys

import pyarrow as pa


def summary() -> int:
    """Print each committed dataset under ``report_root``: partitions, rows, and where the files are.

    Only committed sets are read (the commit marker names the run of every partition): a date whose
    publish is in progress or was killed is listed as uncommitted, never read half-way.
    """
    from datetime import date

    from traceo_finops.config import load_config
    from traceo_finops.kit.publish import committed_partitions, read_committed
    from traceo_finops.reports import ReportError, ReportStore

    cfg = load_config()
    if cfg.report_root_uri.startswith("s3://"):
        from traceo_finops.airflow_adapter import report_store

        store = report_store(cfg)
    else:
        store = ReportStore(cfg.report_root_uri)
    committed = committed_partitions(store)
    if not committed:
        print(f"no committed reports under {cfg.report_root_uri} yet")
        return 1
    print(f"Reports under {cfg.report_root_uri}")
    for name, parts in sorted(committed.items()):
        tables, dates, problems = [], [], []
        for part in parts:
            day = date.fromisoformat(str(part["report_date"]))
            try:
                tables.append(read_committed(store, name, day, dag_id=str(part["dag_id"])))
                dates.append(day.isoformat())
            except ReportError as exc:
                problems.append(str(exc))
        rows = sum(t.num_rows for t in tables)
        print(f"- {name}: {rows} rows in {len(dates)} committed partition(s) {', '.join(sorted(set(dates)))}")
        print(f"    {store.dataset_uri(name)}/…/report_date=*/part-0.parquet")
        if tables:
            for line in _highlights(name, pa.concat_tables(tables, promote_options="permissive")):
                print(f"    {line}")
        for problem in problems:
            print(f"    not read: {problem}")
    print("Query them with DuckDB (the duckdb Python package is in .venv), e.g.:\n"
          f"  .venv/bin/python -c \"import duckdb; duckdb.sql(\\\"SELECT metric, series, suggestion, "
          f"monthly_saving_usd FROM read_parquet('{cfg.report_root_uri}/cardinality/*/*.parquet', "
          "hive_partitioning=true) ORDER BY series DESC LIMIT 10\\\").show()\"")
    return 0


def _highlights(name: str, table: pa.Table) -> list[str]:
    """One line of totals: series for cardinality, and every dollar column summed."""
    if not table.num_rows:
        return []
    parts = []
    if name == "cardinality":
        rows = sorted(table.select(["metric", "series"]).to_pylist(), key=lambda r: -r["series"])
        parts.append(f"{sum(r['series'] for r in rows):,} series; top: "
                     + ", ".join(f"{r['metric']} ({r['series']:,})" for r in rows[:3]))
    for col in table.column_names:
        if col.endswith("_usd") and ("saving" in col or col == "monthly_cost_usd"):
            total = sum(v for v in table.column(col).to_pylist() if v is not None)
            parts.append(f"{col} = ${total:,.2f}")
    return ["; ".join(parts)] if parts else []


def pools(output: str | None, max_queries: int, s3_slots: int) -> int:
    """Print (or write to ``output``) the pools of the configuration, for ``airflow pools import FILE``."""
    import json

    from traceo_finops.config import load_config
    from traceo_finops.pools import pool_specs

    text = json.dumps(pool_specs(load_config(), max_queries, s3_slots), indent=1) + "\n"
    if output:
        with open(output, "w") as fh:
            fh.write(text)
    else:
        print(text, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    from traceo_finops.pools import DEFAULT_MAX_QUERIES, DEFAULT_S3_SLOTS

    parser = argparse.ArgumentParser(prog="python -m traceo_finops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("summary", help="summarise the Parquet reports under report_root")
    p = sub.add_parser("pools", help="the Airflow pools of the configuration (one per source, one for S3) as "
                                     "JSON for `airflow pools import` (docs/production.md)")
    p.add_argument("--output", help="write the JSON here instead of printing it")
    p.add_argument("--max-queries", type=int, default=DEFAULT_MAX_QUERIES,
                   help=f"concurrent queries one Prometheus/Mimir server may get (default {DEFAULT_MAX_QUERIES})")
    p.add_argument("--s3-slots", type=int, default=DEFAULT_S3_SLOTS,
                   help=f"S3 tasks at once (default {DEFAULT_S3_SLOTS})")
    args = parser.parse_args(argv)
    if args.command == "summary":
        return summary()
    if args.command == "pools":
        return pools(args.output, args.max_queries, args.s3_slots)
    return 2


if __name__ == "__main__":
    sys.exit(main())
