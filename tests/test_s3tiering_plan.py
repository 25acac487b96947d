"""Cost model and planner on hand-built object groups: what pays off, and what is refused whatever it saves."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from traceo_finops.config import Bucket, BucketLayout, S3TieringSettings
from traceo_finops.pricing import PricingError, load_price_table
from traceo_finops.s3tiering.costs import DAYS_PER_MONTH, CostModel
from traceo_finops.s3tiering.lifecycle import _check_transitions
from traceo_finops.s3tiering.recommend import Rows, age_band_labels, candidate_ladders, plan_rows, report_rows

pytestmark = pytest.mark.unit
GIB = 2**30
KIB = 1024


@pytest.fixture(scope="module")
def prices():
    return load_price_table()


def rows(*groups: dict) -> Rows:
    """Rows from dicts with tenant, role, cls, size (bytes per object), n, age, remaining."""
    def col(name, default=None, dtype=object):
        return np.array([g.get(name, default) for g in groups], dtype=dtype)
    n = col("n", 1, float)
    size = col("size", GIB, float)
    return Rows(tenant=col("tenant", "t"), role=col("role", "chunks"), storage_class=col("cls", "STANDARD"),
                small=size < 128 * KIB, age=col("age", 200, np.int64), objects=n, nbytes=n * size,
                remaining=col("remaining", math.inf, float))


# -- cost model --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ["STANDARD", "STANDARD_IA", "ONEZONE_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE",
                                 "INTELLIGENT_TIERING"])
@pytest.mark.parametrize("size", [1_000, 100 * KIB, 128 * KIB, 5 * GIB])
def test_storage_per_object_agrees_with_the_price_table(prices, cls: str, size: int) -> None:
    # PriceTable.object_storage_month prices one object (minimum size, archive overhead, IT monitoring).
    model = CostModel(prices)
    got = model.storage_month(cls, np.array([3.0]), np.array([3.0 * size]), np.array([size < 128 * KIB]))[0]
    assert got == pytest.approx(3 * prices.object_storage_month(cls, size), rel=1e-12)


def test_reads_fees_and_early_deletion(prices) -> None:
    model = CostModel(prices, monthly_read_ratio=0.5)
    # Half of 10 GiB read back from STANDARD_IA: 5 GB retrieval plus 0.5 x 10 GETs.
    assert model.reads_month("STANDARD_IA", np.array([10.0]), np.array([10.0 * GIB]))[0] == pytest.approx(
        5 * prices.retrieval_per_gb("STANDARD_IA") + 5 / 1000 * prices.request_per_1k("STANDARD_IA", "GET"))
    assert model.transition("GLACIER_IR", np.array([2500.0]))[0] == pytest.approx(2.5 * prices.transition_per_1k(
        "GLACIER_IR"))
    # Deleted 10 days into GLACIER_IR's 90: 80 more days billed.
    early = model.early_deletion("GLACIER_IR", np.array([1.0]), np.array([float(GIB)]), np.array([False]),
                                 np.array([10.0]))[0]
    assert early == pytest.approx(80 / DAYS_PER_MONTH * prices.storage_gb_month("GLACIER_IR"))
    assert model.early_deletion("INTELLIGENT_TIERING", np.array([1.0]), np.array([1.0]), np.array([False]),
                                np.array([0.0]))[0] == 0


# -- planner ---------------------------------------------------------------------------------------------------
def test_a_big_old_bucket_gets_the_rule_that_pays_most_with_exact_figures(prices) -> None:
    bucket = Bucket(name="blocks-a", layout="thanos", monthly_read_ratio=0, storage_classes=["STANDARD_IA"])
    settings = S3TieringSettings(transition_days=[30])
    r = rows({"tenant": "", "n": 1000, "size": GIB, "age": 200})
    decisions, costs = plan_rows(r, BucketLayout.THANOS, bucket, settings, CostModel(prices, 0))
    chosen = decisions[0].chosen
    assert [(s.days, s.storage_class) for s in chosen.steps] == [(30, "STANDARD_IA")]
    assert chosen.current_month == pytest.approx(1000 * prices.storage_gb_month("STANDARD"))
    assert chosen.projected_month == pytest.approx(1000 * prices.storage_gb_month("STANDARD_IA"))
    assert chosen.one_time == pytest.approx(prices.transition_per_1k("STANDARD_IA"))
    saving = 1000 * (prices.storage_gb_month("STANDARD") - prices.storage_gb_month("STANDARD_IA"))
    assert chosen.net_12m == pytest.approx(12 * saving - prices.transition_per_1k("STANDARD_IA"))
    assert chosen.break_even_days == pytest.approx(prices.transition_per_1k("STANDARD_IA") / saving * DAYS_PER_MONTH)
    assert costs["rule_id"].tolist() == ["finops-tier-bucket"]


def test_online_buckets_never_get_archive_classes_even_when_cheapest(prices) -> None:
    old = {"tenant": "t", "n": 100, "size": 10 * GIB, "age": 400}
    online = Bucket(name="blocks-a", layout="mimir", monthly_read_ratio=0)
    archive = Bucket(name="blocks-b", layout="mimir", role="archive", monthly_read_ratio=0)
    settings = S3TieringSettings()
    (d_online,), _ = plan_rows(rows(old), BucketLayout.MIMIR, online, settings, CostModel(prices, 0))
    (d_archive,), _ = plan_rows(rows(old), BucketLayout.MIMIR, archive, settings, CostModel(prices, 0))
    considered = {s.storage_class for c in d_online.candidates for s in c.steps}
    assert considered == {"INTELLIGENT_TIERING", "STANDARD_IA", "GLACIER_IR"}
    assert d_archive.chosen.steps[-1].storage_class == "DEEP_ARCHIVE"  # what it would do if allowed
    assert d_online.chosen.steps[-1].storage_class == "GLACIER_IR"
    with pytest.raises(ValidationError, match="GLACIER cannot be read by store-gateways"):
        Bucket(name="blocks-c", role="online", storage_classes=["STANDARD_IA", "GLACIER"])


def test_archiving_a_big_meta_json_is_refused(prices) -> None:
    bucket = Bucket(name="blocks-b", layout="thanos", role="archive", monthly_read_ratio=0)
    r = rows({"tenant": "", "n": 100, "size": 10 * GIB, "age": 400},
             {"tenant": "", "role": "meta.json", "n": 1, "size": 300 * KIB, "age": 400})
    (d,), _ = plan_rows(r, BucketLayout.THANOS, bucket, S3TieringSettings(), CostModel(prices, 0))
    archive = [c for c in d.candidates if any(s.storage_class in ("GLACIER", "DEEP_ARCHIVE") for s in c.steps)]
    assert archive and all("meta.json/marker/bucket-index" in c.refused for c in archive)
    assert d.chosen.steps[-1].storage_class == "GLACIER_IR"


def test_no_transition_that_retention_deletes_inside_the_minimum_duration(prices) -> None:
    # Blocks live 100 days (retention): GLACIER_IR at 30 d would be deleted at 100, inside its 90 days.
    bucket = Bucket(name="blocks-a", layout="mimir", monthly_read_ratio=0)
    young = [{"n": 100, "size": GIB, "age": a, "remaining": 100 - a} for a in range(0, 100, 10)]
    (d,), costs = plan_rows(rows(*young), BucketLayout.MIMIR, bucket, S3TieringSettings(), CostModel(prices, 0))
    by_steps = {tuple((s.days, s.storage_class) for s in c.steps): c for c in d.candidates}
    assert "inside GLACIER_IR's 90-day minimum" in by_steps[((30, "GLACIER_IR"),)].refused
    assert "inside STANDARD_IA's 30-day minimum" in by_steps[((90, "STANDARD_IA"),)].refused
    assert d.chosen is not None
    for s in d.chosen.steps:  # every object of the chosen ladder outlives the minimum duration
        assert s.days > 100 or s.days + prices.min_storage_days(s.storage_class) <= 100
    # The backlog that does get moved pays its early deletion in the one-time cost.
    assert costs["one_time"].sum() > prices.transition_per_1k(d.chosen.steps[0].storage_class) * 0.1


def test_small_objects_and_fees_that_never_pay_back_get_no_rule(prices) -> None:
    bucket = Bucket(name="blocks-a", layout="mimir", monthly_read_ratio=0.1)
    tiny = rows({"n": 10_000, "size": 200 * KIB, "age": 200}, {"role": "meta.json", "n": 500, "size": 2 * KIB,
                                                                 "age": 200})
    (d,), costs = plan_rows(tiny, BucketLayout.MIMIR, bucket, S3TieringSettings(max_break_even_days=30),
                            CostModel(prices, 0.1))
    assert d.chosen is None and "no ladder pays off" in d.reason
    assert costs["rule_id"].tolist() == [None, None]
    assert np.array_equal(costs["projected"], costs["current"])
    # The < 128 KB band is never matched by a rule (the size filter), whatever the ladder.
    bucket = Bucket(name="blocks-a", layout="mimir", monthly_read_ratio=0)
    (d,), costs = plan_rows(tiny, BucketLayout.MIMIR, bucket, S3TieringSettings(), CostModel(prices, 0))
    assert d.chosen is not None and costs["rule_id"].tolist() == ["finops-tier-t", None]


def test_min_net_saving_threshold(prices) -> None:
    bucket = Bucket(name="blocks-a", layout="thanos", monthly_read_ratio=0)
    r = rows({"tenant": "", "n": 10, "size": GIB, "age": 200})
    (d,), _ = plan_rows(r, BucketLayout.THANOS, bucket, S3TieringSettings(min_net_saving_12m=10),
                        CostModel(prices, 0))
    assert d.chosen is None and "not above min_net_saving_12m 10" in d.reason


def test_every_candidate_ladder_is_one_s3_accepts(prices) -> None:
    classes = ("INTELLIGENT_TIERING", "STANDARD_IA", "ONEZONE_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE")
    ladders = candidate_ladders(classes, [30, 60, 90, 180, 365], CostModel(prices))
    assert len(ladders) > 30
    for steps in ladders:
        assert _check_transitions("candidate", [s.as_dict() for s in steps]) == [], steps


def test_report_rows_by_age_and_size_band(prices) -> None:
    bucket = Bucket(name="blocks-a", layout="mimir", monthly_read_ratio=0)
    r = rows({"n": 10, "size": GIB, "age": 10}, {"n": 10, "size": GIB, "age": 20}, {"n": 5, "size": GIB, "age": 400},
             {"role": "meta.json", "n": 3, "size": 1000, "age": 400})
    _, costs = plan_rows(r, BucketLayout.MIMIR, bucket, S3TieringSettings(), CostModel(prices, 0))
    out = report_rows(r, costs, "blocks-a", [30, 60, 90, 180, 365])
    assert [(x["age_band"], x["size_band"], x["objects"]) for x in out] == [
        ("0-30d", ">=128KB", 20), ("365d+", "<128KB", 3), ("365d+", ">=128KB", 5)]
    assert age_band_labels([30, 60, 90, 180, 365]) == ["0-30d", "30-60d", "60-90d", "90-180d", "180-365d", "365d+"]
    old = out[2]
    assert old["proposed_rule_id"] == "finops-tier-t" and old["projected_monthly_usd"] < old["current_monthly_usd"]
    assert old["net_saving_12m_usd"] == pytest.approx(
        12 * (old["current_monthly_usd"] - old["projected_monthly_usd"]) - old["one_time_transition_usd"])


def test_a_price_table_missing_a_class_is_a_clear_error(prices, tmp_path: Path) -> None:
    # A table file without GLACIER_IR is refused by the loader, naming the key...
    src = Path(prices.path).read_text()
    data = yaml.safe_load(src)
    del data["s3"]["storage"]["GLACIER_IR"]
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(PricingError, match=r"missing key\(s\): s3.storage.GLACIER_IR"):
        load_price_table("broken", pricing_dir=tmp_path)
    # ...and a table object without it (built by hand) stops the planner before it prices anything.
    figures = {k: v for k, v in prices.figures.items() if k != "s3.storage.GLACIER_IR"}
    partial = dataclasses.replace(prices, figures=figures)
    bucket = Bucket(name="blocks-a", layout="mimir")
    with pytest.raises(PricingError, match=r"has no figure 's3\.storage\.GLACIER_IR'"):
        plan_rows(rows({"n": 1}), BucketLayout.MIMIR, bucket, S3TieringSettings(), CostModel(partial, 0.1))


def test_the_dataset_and_its_expectations(prices) -> None:
    from datetime import UTC, datetime

    from traceo_finops.quality import check
    from traceo_finops.s3tiering.dataset import s3_tiering_dataset

    days = [30, 60, 90, 180, 365]
    dataset = s3_tiering_dataset(age_band_labels(days))
    assert dataset.schema.names == [
        "bucket", "tenant", "storage_class", "age_band", "size_band", "objects", "bytes", "current_monthly_usd",
        "proposed_rule_id", "projected_monthly_usd", "one_time_transition_usd", "break_even_days",
        "net_saving_12m_usd", "applied", "source", "window_start", "window_end"]
    bucket = Bucket(name="blocks-a", layout="mimir", monthly_read_ratio=0)
    r = rows({"n": 10, "size": GIB, "age": 200}, {"role": "meta.json", "n": 10, "size": 1000, "age": 200})
    _, costs = plan_rows(r, BucketLayout.MIMIR, bucket, S3TieringSettings(), CostModel(prices, 0))
    window = {"window_start": datetime(2026, 11, 27, tzinfo=UTC), "window_end": datetime(2026, 11, 28, tzinfo=UTC)}
    good = [{**x, "applied": False, "source": "inventory", **window} for x in report_rows(r, costs, "blocks-a", days)]
    assert check(dataset.name, dataset.table(good), dataset.expectations).success
    bad = [dict(good[0], proposed_rule_id="someone-elses", one_time_transition_usd=-1.0, age_band="1-2d",
                source="athena")]
    result = check(dataset.name, dataset.table(bad + good[1:]), dataset.expectations, raise_on_failure=False)
    failed = " ".join(result.failed)
    assert "match_regex(column='proposed_rule_id'" in failed and "someone-elses" in failed
    assert "one_time_transition_usd" in failed and "1-2d" in failed and "athena" in failed


def test_a_class_refused_for_the_bucket_is_never_chosen_whatever_it_saves(prices) -> None:
    # Without the refusal INTELLIGENT_TIERING ladders pay off; refused, every one of them carries the
    # bucket's reason and the rule is built from the other class.
    bucket = Bucket(name="blocks-a", layout="thanos", monthly_read_ratio=0, storage_classes=["INTELLIGENT_TIERING",
                                                                                            "STANDARD_IA"])
    r = rows({"tenant": "", "n": 1000, "size": GIB, "age": 200})
    (free,), _ = plan_rows(r, BucketLayout.THANOS, bucket, S3TieringSettings(), CostModel(prices, 0))
    it = {"INTELLIGENT_TIERING": "configuration 'archive-old' opts in ARCHIVE_ACCESS"}
    (held,), costs = plan_rows(r, BucketLayout.THANOS, bucket, S3TieringSettings(), CostModel(prices, 0),
                               refused_classes=it)
    uses_it = [c for c in held.candidates if any(s.storage_class == "INTELLIGENT_TIERING" for s in c.steps)]
    assert uses_it and all(c.refused == "INTELLIGENT_TIERING refused: configuration 'archive-old' opts in "
                                       "ARCHIVE_ACCESS" for c in uses_it)
    assert held.chosen is not None and "INTELLIGENT_TIERING" not in {s.storage_class for s in held.chosen.steps}
    assert {s.storage_class for c in free.candidates if c.refused is None for s in c.steps} >= {"INTELLIGENT_TIERING"}
    assert costs["rule_id"].tolist() == ["finops-tier-bucket"]
