"""Command line of the library: ``python -m traceo_finops summary``."""

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m traceo_finops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("summary", help="summarise the Parquet reports under report_root")
    args = parser.parse_args(argv)
    if args.command == "summary":
        return summary()
    return 2


if __name__ == "__main__":
    sys.exit(main())
