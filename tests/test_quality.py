"""The Great Expectations gate: failures are named, clean reports pass."""

from __future__ import annotations

import pyarrow as pa
import pytest

from traceo_finops.cardinality.dataset import CARDINALITY
from traceo_finops.quality import DataQualityError, Expect, between, check, not_null, one_of, unique_together

pytestmark = pytest.mark.unit


def test_failures_are_named_with_examples() -> None:
    table = pa.table({"metric": ["a", "b", "b"], "series": [1, 2, -3], "status": ["ok", "ok", "weird"]})
    exps = [*not_null("metric"), between("series", 0), one_of("status", ["ok"]), unique_together("metric")]
    with pytest.raises(DataQualityError) as err:
        check("demo", table, exps)
    msg = str(err.value)
    assert "dataset 'demo' failed 3 of 4 expectations" in msg
    assert "expect_column_values_to_be_between(column='series'" in msg and "[-3]" in msg
    assert "expect_column_values_to_be_in_set(column='status'" in msg and "'weird'" in msg
    assert "expect_column_values_to_be_unique(column='metric')" in msg
    result = check("demo", table.slice(0, 1), exps)
    assert result.success and result.checked == 4


def test_unknown_expectation() -> None:
    with pytest.raises(DataQualityError, match="unknown expectation 'ExpectMagic'"):
        check("demo", pa.table({"a": [1]}), [Expect("ExpectMagic")])


def test_cardinality_suite_catches_a_duplicated_metric() -> None:
    row = {"source": "s", "tenant": "", "metric": "up", "series": 2, "share": 1.0, "labels": 2, "usage_rules": 0,
           "usage_dashboards": 1, "usage_queries": 0, "classification": "used", "suggestion": "keep",
           "unneeded_labels": [], "series_after": 2, "series_if_aggregated": None, "blocked_by": "",
           "monthly_cost_usd": 0.1, "monthly_cost_after_usd": 0.1, "monthly_saving_usd": 0.0,
           "window_start": 0, "window_end": 0}
    ok = CARDINALITY.table([row])
    assert check("cardinality", ok, CARDINALITY.expectations).success
    with pytest.raises(DataQualityError, match="compound_columns_to_be_unique"):
        check("cardinality", pa.concat_tables([ok, ok]), CARDINALITY.expectations)
    with pytest.raises(DataQualityError, match="suggestion"):
        check("cardinality", CARDINALITY.table([{**row, "suggestion": "delete_everything"}]), CARDINALITY.expectations)
