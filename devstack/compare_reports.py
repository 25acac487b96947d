"""Compare two report roots dataset by dataset: the same rows, columns and values before and after a change.

Usage: ``python -m devstack.compare_reports BEFORE AFTER`` (local report roots). For every dataset
of BEFORE: partitions, row counts, the columns added or removed in AFTER, and every value of the
common columns (rows matched after sorting on the common non-float columns; floats compared to a
relative 1e-9). Columns that identify a run (``run_id``) or that AFTER adds are listed, not compared.
Exit status 0 when every dataset of BEFORE is in AFTER with the same rows and values.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

IGNORED = {"run_id"}


def _datasets(root: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for part in sorted(root.glob("*/**/part-0.parquet")):
        name = part.relative_to(root).parts[0]
        if not name.startswith("_"):
            out.setdefault(name, []).append(part)
    return out


def _rows(parts: list[Path]) -> tuple[list[str], list[dict[str, Any]]]:
    tables = [pq.read_table(p) for p in parts]
    columns = list(tables[0].column_names)
    rows = [r for t in tables for r in t.to_pylist()]
    return columns, rows


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def _key(row: dict[str, Any], columns: list[str]) -> tuple[str, ...]:
    return tuple(str(row[c]) for c in columns if not isinstance(row[c], float))


def compare(before: Path, after: Path) -> list[str]:
    """Differences, one line each (empty when the reports agree)."""
    problems: list[str] = []
    old, new = _datasets(before), _datasets(after)
    for name, parts in sorted(old.items()):
        if name not in new:
            problems.append(f"{name}: missing after")
            continue
        cols_b, rows_b = _rows(parts)
        cols_a, rows_a = _rows(new[name])
        common = [c for c in cols_b if c in cols_a and c not in IGNORED]
        added = [c for c in cols_a if c not in cols_b]
        removed = [c for c in cols_b if c not in cols_a]
        print(f"{name}: {len(rows_b)} rows before, {len(rows_a)} after; columns added {added or 'none'}, "
              f"removed {removed or 'none'}")
        if removed:
            problems.append(f"{name}: columns removed {removed}")
        if len(rows_b) != len(rows_a):
            problems.append(f"{name}: {len(rows_b)} rows before, {len(rows_a)} after")
            continue
        rows_b.sort(key=lambda r: _key(r, common))
        rows_a.sort(key=lambda r: _key(r, common))
        for i, (rb, ra) in enumerate(zip(rows_b, rows_a, strict=True)):
            diff = [c for c in common if not _same(rb[c], ra[c])]
            if diff:
                problems.append(f"{name} row {i}: {', '.join(f'{c}: {rb[c]!r} → {ra[c]!r}' for c in diff[:5])}")
                if sum(p.startswith(name) for p in problems) > 10:
                    problems.append(f"{name}: more differences not shown")
                    break
    for name in sorted(set(new) - set(old)):
        print(f"{name}: new dataset ({sum(pa.parquet.read_metadata(p).num_rows for p in new[name])} rows)")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    problems = compare(Path(argv[0]), Path(argv[1]))
    for p in problems:
        print("DIFF", p)
    print("same reports" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
