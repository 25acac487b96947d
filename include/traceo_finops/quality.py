"""Data-quality gate of every report, with Great Expectations 1.x.

A dataset declares its expectations as plain :class:`Expect` records (no GX import at module
load: GX takes seconds to import); :func:`check` builds an ephemeral GX context, runs the
suite on the report's rows and raises :class:`DataQualityError` naming each failed
expectation. Reports are checked before they are written, so a bad report never lands.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

log = logging.getLogger(__name__)


class DataQualityError(ValueError):
    """A report failed its expectations; the message names the dataset and each failure."""


@dataclass(frozen=True)
class Expect:
    """One Great Expectations expectation: its class name in ``gx.expectations`` and its arguments."""

    kind: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.kind}({args})"


@dataclass(frozen=True)
class QualityResult:
    dataset: str
    rows: int
    checked: int
    failed: list[str]

    @property
    def success(self) -> bool:
        return not self.failed


def not_null(*columns: str) -> list[Expect]:
    return [Expect("ExpectColumnValuesToNotBeNull", {"column": c}) for c in columns]


def between(column: str, min_value: float | None = None, max_value: float | None = None) -> Expect:
    return Expect("ExpectColumnValuesToBeBetween", {"column": column, "min_value": min_value,
                                                    "max_value": max_value})


def one_of(column: str, values: Sequence[str]) -> Expect:
    return Expect("ExpectColumnValuesToBeInSet", {"column": column, "value_set": list(values)})


def unique_together(*columns: str) -> Expect:
    if len(columns) == 1:
        return Expect("ExpectColumnValuesToBeUnique", {"column": columns[0]})
    return Expect("ExpectCompoundColumnsToBeUnique", {"column_list": list(columns)})


def check(dataset: str, table: pa.Table, expectations: Sequence[Expect], raise_on_failure: bool = True
          ) -> QualityResult:
    """Run ``expectations`` on ``table``; raise :class:`DataQualityError` listing what failed."""
    if not expectations:
        return QualityResult(dataset, table.num_rows, 0, [])
    # GX phones home and draws progress bars unless told not to.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    frame = table.to_pandas()
    context = gx.get_context(mode="ephemeral")
    source = context.data_sources.add_pandas(name=f"traceo_{dataset}")
    asset = source.add_dataframe_asset(name=dataset)
    batch = asset.add_batch_definition_whole_dataframe(f"{dataset}_whole")
    suite = context.suites.add(gx.ExpectationSuite(name=f"{dataset}_suite"))
    for exp in expectations:
        try:
            suite.add_expectation(getattr(gx.expectations, exp.kind)(**exp.kwargs))
        except AttributeError:
            raise DataQualityError(f"dataset {dataset!r}: unknown expectation {exp.kind!r}") from None
        except ValueError as exc:  # GX validates arguments with pydantic
            raise DataQualityError(f"dataset {dataset!r}: bad expectation {exp.describe()}: {exc}") from None
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(data=batch, suite=suite, name=f"{dataset}_validation"))
    result = definition.run(batch_parameters={"dataframe": frame})
    failed = []
    for res in result.results:  # GX does not keep the suite's order
        if not res.success:
            cfg = res.expectation_config  # always set on a validation result; None only in GX's typing
            kind = cfg.type if cfg is not None else "unknown expectation"
            kwargs = {k: v for k, v in (cfg.kwargs if cfg is not None else {}).items()
                      if k != "batch_id" and v is not None}
            observed = res.result.get("partial_unexpected_list") or res.result.get("observed_value")
            failed.append(f"{kind}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) "
                          f"failed (e.g. {observed!r})")
    failed.sort()
    outcome = QualityResult(dataset, table.num_rows, len(expectations), failed)
    log.info("quality of %s: %d/%d expectations met on %d rows", dataset, len(expectations) - len(failed),
             len(expectations), table.num_rows)
    if failed and raise_on_failure:
        raise DataQualityError(f"dataset {dataset!r} failed {len(failed)} of {len(expectations)} expectations:\n  "
                               + "\n  ".join(failed))
    return outcome
