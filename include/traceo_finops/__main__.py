"""Command line of the library: ``python -m traceo_finops summary``."""

from __future__ import annotations

import argparse
import sys

import pyarrow.dataset as pads
import pyarrow.fs as pafs


def summary() -> int:
    """Print each dataset under ``report_root``: partitions, rows, and where the files are."""
    from traceo_finops.config import load_config
    from traceo_finops.reports import ReportStore

    cfg = load_config()
    if cfg.report_root_uri.startswith("s3://"):
        from traceo_finops.airflow_adapter import report_store

        store = report_store(cfg)
    else:
        store = ReportStore(cfg.report_root_uri)
    infos = store.fs.get_file_info(pafs.FileSelector(store.base, allow_not_found=True))
    datasets = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory
                      and not i.base_name.startswith(("_", ".")))
    if not datasets:
        print(f"no reports under {cfg.report_root_uri} yet")
        return 1
    print(f"Reports under {cfg.report_root_uri}")
    for name in datasets:
        ds = pads.dataset(f"{store.base}/{name}", filesystem=store.fs, partitioning="hive")
        table = ds.to_table()
        dates = sorted(set(table.column("report_date").to_pylist())) if table.num_rows else []
        print(f"- {name}: {table.num_rows} rows in {len(dates)} partition(s) {', '.join(map(str, dates))}")
        print(f"    {store.dataset_uri(name)}/report_date=*/part-0.parquet")
        for line in _highlights(name, table):
            print(f"    {line}")
    print("Query them with DuckDB, e.g.:\n"
          f"  duckdb -c \"SELECT * FROM read_parquet('{cfg.report_root_uri}/cardinality/*/*.parquet', "
          "hive_partitioning=true) ORDER BY series DESC LIMIT 10\"")
    return 0


def _highlights(name: str, table) -> list[str]:  # type: ignore[no-untyped-def]
    if name == "cardinality" and table.num_rows:
        rows = sorted(table.select(["metric", "series", "monthly_cost_usd"]).to_pylist(), key=lambda r: -r["series"])
        total = sum(r["series"] for r in rows)
        cost = sum(r["monthly_cost_usd"] for r in rows)
        top = ", ".join(f"{r['metric']} ({r['series']})" for r in rows[:3])
        return [f"{total} series, ${cost:,.2f}/month; top: {top}"]
    return []


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
