"""The price table loader against the real table and against broken copies of it.

No expected prices are hard-coded here: the tests check structure, provenance, overrides, error
messages and the documented orderings between storage classes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from traceo_finops.config import DEFAULT_CONFIG_PATH, load_config
from traceo_finops.pricing import (
    ALL_CLASSES,
    ARCHIVE_CLASSES,
    DEFAULT_PRICING_DIR,
    DEFAULT_PROFILE,
    HOURS_PER_MONTH,
    IT_TIERS,
    REQUIRED_PATHS,
    RESTORE_TIERS,
    TRANSITION_TARGETS,
    PricingError,
    StorageClass,
    available_profiles,
    load_price_table,
)

pytestmark = pytest.mark.unit

REAL_FILE = DEFAULT_PRICING_DIR / f"{DEFAULT_PROFILE}.yaml"
SECTIONS = ("s3", "compute", "metrics")


@pytest.fixture(scope="module")
def table():
    return load_price_table()


def _raw() -> dict[str, Any]:
    return yaml.safe_load(REAL_FILE.read_text(encoding="utf-8"))


def _leaves(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """Every figure mapping (has `value`) and every stray scalar, walked independently of the loader."""
    if isinstance(node, dict) and "value" not in node:
        for key, child in node.items():
            yield from _leaves(child, f"{prefix}.{key}")
    else:
        yield prefix, node


def _write_table(tmp_path: Path, mutate: Callable[[dict[str, Any]], None]) -> Path:
    data = copy.deepcopy(_raw())
    mutate(data)
    (tmp_path / f"{DEFAULT_PROFILE}.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return tmp_path


def _set(data: dict[str, Any], dotted: str, field: str, value: Any) -> None:
    node = data
    for part in dotted.split("."):
        node = node[part]
    node[field] = value


def _drop(data: dict[str, Any], dotted: str, field: str | None = None) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    if field is None:
        del node[last]
    else:
        del node[last][field]


# -- the real table ---------------------------------------------------------------------------------
def test_real_table_has_version_date_and_every_required_figure(table):
    assert table.profile == DEFAULT_PROFILE
    assert table.path == REAL_FILE
    assert table.version.strip()
    assert isinstance(table.as_of, date)
    assert table.currency == "USD"
    assert set(REQUIRED_PATHS) <= set(table.paths())


def test_every_leaf_figure_has_source_and_as_of():
    raw = _raw()
    leaves = [leaf for section in SECTIONS for leaf in _leaves(raw[section], section)]
    assert len(leaves) >= len(REQUIRED_PATHS)
    for path, node in leaves:
        assert isinstance(node, dict), f"{path} is a bare value without source/as_of"
        assert isinstance(node.get("source"), str) and node["source"].strip(), f"{path} has no source"
        assert isinstance(node.get("as_of"), date), f"{path} has no as_of date"
        assert isinstance(node.get("unit"), str) and node["unit"].strip(), f"{path} has no unit"


def test_loaded_figures_keep_their_source(table):
    raw_paths = {path for section in SECTIONS for path, _ in _leaves(_raw()[section], section)}
    assert raw_paths == set(table.paths())
    for fig in table:
        assert fig.as_of <= table.as_of, f"{fig.path} is dated after the table itself"
        cited = table.source_of(fig.path)
        assert fig.source in cited and fig.as_of.isoformat() in cited
        assert not fig.overridden


def test_models_say_they_are_models(table):
    # The compute split and the self-hosted series price are models, and their derivation is in the file.
    for path in ("compute.vcpu_hour", "compute.gib_hour", "metrics.self_hosted.per_1k_series_month"):
        fig = table.figure(path)
        assert "MODEL" in fig.source
        assert fig.derivation
    assert "m6i.xlarge" in table.source_of("compute.instance_hourly")
    assert "grafana.com/pricing" in table.source_of("metrics.hosted.per_1k_series_month")


def test_storage_prices_follow_the_documented_order(table):
    order = ["DEEP_ARCHIVE", "GLACIER", "GLACIER_IR", "ONEZONE_IA", "STANDARD_IA", "STANDARD"]
    prices = [table.storage_gb_month(c) for c in order]
    assert prices == sorted(prices) and len(set(prices)) == len(prices), dict(zip(order, prices, strict=True))


def test_intelligent_tiering_tiers_get_cheaper_and_start_at_the_frequent_rate(table):
    tiers = [table.storage_gb_month("INTELLIGENT_TIERING", tier=t) for t in IT_TIERS]
    assert tiers == sorted(tiers, reverse=True)
    it = "INTELLIGENT_TIERING"
    assert table.storage_gb_month(it) == table.storage_gb_month(it, "frequent")
    with pytest.raises(PricingError, match="only applies to INTELLIGENT_TIERING"):
        table.storage_gb_month("STANDARD", tier="frequent")


def test_every_class_has_every_accessor(table):
    for cls in ALL_CLASSES:
        for value in (
            table.storage_gb_month(cls),
            table.min_storage_days(cls),
            table.min_billable_bytes(cls),
            table.retrieval_per_gb(cls),
            table.retrieval_per_1k(cls),
            table.request_per_1k(cls, "PUT"),
            table.request_per_1k(cls, "GET"),
        ):
            assert value >= 0
        for tier in RESTORE_TIERS.get(cls, ()):
            assert table.retrieval_per_gb(cls, tier) >= 0
    for cls in TRANSITION_TARGETS:
        assert table.transition_per_1k(cls) > 0
    with pytest.raises(PricingError, match="cannot transition objects into STANDARD"):
        table.transition_per_1k("STANDARD")
    with pytest.raises(PricingError, match="'expedited'"):
        table.retrieval_per_gb("DEEP_ARCHIVE", "expedited")
    with pytest.raises(PricingError, match="'GLACIER_DEEP'"):
        table.storage_gb_month("GLACIER_DEEP")
    # Lower-case names from an inventory or a config file work too.
    assert table.storage_gb_month("glacier_ir") == table.storage_gb_month(StorageClass.GLACIER_IR)


def test_minimum_durations_grow_with_coldness(table):
    days = [table.min_storage_days(c) for c in ("STANDARD", "STANDARD_IA", "GLACIER_IR", "DEEP_ARCHIVE")]
    assert days == sorted(days)
    assert table.min_storage_days("STANDARD_IA") == table.min_storage_days("ONEZONE_IA")


def test_object_cost_applies_minimum_size_and_archive_overhead(table):
    for cls in ("STANDARD_IA", "ONEZONE_IA", "GLACIER_IR"):
        minimum = table.min_billable_bytes(cls)
        assert minimum > 0
        assert table.object_storage_month(cls, 1) == table.object_storage_month(cls, minimum)
        at_minimum = table.object_storage_month(cls, minimum)
        assert table.object_storage_month(cls, 2 * minimum) == pytest.approx(2 * at_minimum)
    assert table.object_storage_month("STANDARD", 0) == 0
    for cls in ARCHIVE_CLASSES:
        at_standard, at_own = table.archive_overhead_bytes(cls)
        assert at_standard > 0 and at_own > 0
        empty = table.object_storage_month(cls, 0)
        expected = (at_own * table.storage_gb_month(cls) + at_standard * table.storage_gb_month("STANDARD"))
        assert empty == pytest.approx(expected / table.bytes_per_gb)
    assert table.archive_overhead_bytes("GLACIER_IR") == (0, 0)
    # Below the monitoring threshold Intelligent-Tiering costs exactly what STANDARD costs (frequent rate).
    cost = table.object_storage_month
    small = table.it_min_monitored_bytes - 1
    assert cost("INTELLIGENT_TIERING", small) == cost("STANDARD", small)
    big = table.it_min_monitored_bytes
    monitored = cost("INTELLIGENT_TIERING", big) - cost("STANDARD", big)
    assert monitored == pytest.approx(table.it_monitoring_per_1k_objects / 1000)


def test_compute_split_reproduces_the_instance_price(table):
    v = table.value
    rebuilt = (v("compute.instance_vcpus") * table.vcpu_hour
               + v("compute.instance_memory_gib") * table.gib_hour)
    assert rebuilt == pytest.approx(v("compute.instance_hourly"), rel=1e-4)
    assert table.vcpu_hour / table.gib_hour == pytest.approx(v("compute.vcpu_to_gib_cost_ratio"), rel=1e-4)


def test_series_prices_and_breakdown(table):
    res = table.self_hosted_series_resources()
    assert res.cores > 0 and res.memory_gib > 0
    priced = (res.cores * table.vcpu_hour + res.memory_gib * table.gib_hour) * HOURS_PER_MONTH
    assert table.series_month_per_1k() == pytest.approx(priced, rel=1e-3)
    assert table.series_month_per_1k("hosted") > 0
    with pytest.raises(PricingError, match="'cloud'"):
        table.series_month_per_1k("cloud")


def test_hours_per_month_is_a_twelfth_of_a_year():
    assert HOURS_PER_MONTH == 365 * 24 / 12


# -- overrides --------------------------------------------------------------------------------------
def test_override_replaces_one_figure_and_says_so(table):
    doubled = 2 * table.storage_gb_month("STANDARD")
    t = load_price_table(overrides={"s3.storage.STANDARD": doubled})
    assert t.storage_gb_month("STANDARD") == doubled
    fig = t.figure("s3.storage.STANDARD")
    assert fig.overridden and "pricing.overrides" in t.source_of("s3.storage.STANDARD")
    changed = {p for p in t.paths() if t.value(p) != table.value(p)}
    assert changed == {"s3.storage.STANDARD"}


def test_overriding_an_input_recomputes_what_is_derived_from_it(table):
    t = load_price_table(overrides={"compute.instance_hourly": 2 * table.value("compute.instance_hourly")})
    assert t.vcpu_hour == pytest.approx(2 * table.vcpu_hour, rel=1e-3)
    assert t.gib_hour == pytest.approx(2 * table.gib_hour, rel=1e-3)
    assert t.series_month_per_1k() == pytest.approx(2 * table.series_month_per_1k(), rel=1e-3)
    assert t.series_month_per_1k("hosted") == table.series_month_per_1k("hosted")
    assert "recomputed" in (t.figure("compute.vcpu_hour").note or "")


def test_override_of_a_derived_figure_wins_over_its_inputs(table):
    mine = table.vcpu_hour / 3
    t = load_price_table(overrides={"compute.vcpu_hour": mine, "compute.instance_hourly": 1.0})
    assert t.vcpu_hour == mine
    # The series model follows the overridden price, not the recomputed one.
    res = t.self_hosted_series_resources()
    assert t.series_month_per_1k() == pytest.approx(
        (res.cores * mine + res.memory_gib * t.gib_hour) * HOURS_PER_MONTH, rel=1e-9
    )


def test_replication_factor_override_scales_the_ingester_share(table):
    rf = "metrics.self_hosted.replication_factor"
    one = load_price_table(overrides={rf: 1}).self_hosted_series_resources()
    three = load_price_table(overrides={rf: 3}).self_hosted_series_resources()
    base = table.self_hosted_series_resources()
    assert three == base
    assert one.cores < three.cores and one.memory_gib < three.memory_gib


def test_the_configured_profile_and_overrides_load():
    cfg = load_config(DEFAULT_CONFIG_PATH)  # the shipped file, whatever FINOPS_CONFIG says
    t = load_price_table(cfg.pricing.profile, cfg.pricing.overrides)
    assert t.profile == cfg.pricing.profile


def test_every_profile_in_the_repo_loads():
    profiles = available_profiles()
    assert DEFAULT_PROFILE in profiles
    for profile in profiles:
        load_price_table(profile)


# -- bad input ----------------------------------------------------------------------------------------
def test_unknown_profile_names_the_profile_and_file(tmp_path):
    with pytest.raises(PricingError) as err:
        load_price_table("gcp-mars-1", pricing_dir=tmp_path)
    assert "'gcp-mars-1'" in str(err.value) and str(tmp_path / "gcp-mars-1.yaml") in str(err.value)


def test_profile_cannot_escape_the_pricing_dir(tmp_path):
    _write_table(tmp_path, lambda d: None)
    inner = tmp_path / "inner"
    inner.mkdir()
    with pytest.raises(PricingError, match="unknown pricing profile"):
        load_price_table(f"../{DEFAULT_PROFILE}", pricing_dir=inner)


def test_a_copy_of_the_real_table_loads_from_pricing_dir(tmp_path):
    directory = _write_table(tmp_path, lambda d: _set(d, "s3.storage.STANDARD", "value", 0.5))
    t = load_price_table(pricing_dir=directory)
    assert t.path == directory / f"{DEFAULT_PROFILE}.yaml"
    assert t.storage_gb_month("STANDARD") == 0.5


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"s3.storage.STANDARDD": 0.02}, "s3.storage.STANDARDD"),
        ({"compute": 0.02}, "compute"),
        ({"s3.storage.STANDARD.value": 0.02}, "s3.storage.STANDARD.value"),
        ({"compute.vcpu_hour": -0.01}, "compute.vcpu_hour"),
        ({"metrics.self_hosted.scrape_interval_seconds": 0}, "metrics.self_hosted.scrape_interval_seconds"),
    ],
)
def test_bad_override_names_the_key_and_file(overrides, key):
    with pytest.raises(PricingError) as err:
        load_price_table(overrides=overrides)
    assert f"'{key}'" in str(err.value) and str(REAL_FILE) in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda d: _set(d, "s3.storage.GLACIER", "value", -0.0036), "s3.storage.GLACIER"),
        (lambda d: _set(d, "s3.transition_per_1k.GLACIER", "value", -1), "s3.transition_per_1k.GLACIER"),
        (lambda d: _drop(d, "s3.storage.GLACIER_IR"), "s3.storage.GLACIER_IR"),
        (lambda d: _drop(d, "s3.min_storage_days.DEEP_ARCHIVE"), "s3.min_storage_days.DEEP_ARCHIVE"),
        (lambda d: _drop(d, "s3.retrieval.GLACIER.bulk"), "s3.retrieval.GLACIER.bulk.per_gb"),
        (lambda d: _drop(d, "s3.requests_per_1k.GET.ONEZONE_IA"), "s3.requests_per_1k.GET.ONEZONE_IA"),
        (lambda d: _drop(d, "s3.storage.STANDARD", "source"), "s3.storage.STANDARD"),
        (lambda d: _drop(d, "compute.instance_hourly", "as_of"), "compute.instance_hourly"),
        (lambda d: _set(d, "s3.storage.STANDARD", "as_of", "last year"), "s3.storage.STANDARD"),
        (lambda d: _set(d, "s3.storage.STANDARD", "value", "cheap"), "s3.storage.STANDARD"),
        (lambda d: _set(d, "s3.storage.STANDARD", "sourse", "typo"), "s3.storage.STANDARD"),
        (lambda d: _set(d, "s3.storage", "REDUCED_REDUNDANCY", 0.024), "s3.storage.REDUCED_REDUNDANCY"),
        (lambda d: _set(d, "compute.instance_hourly", "value", 1.0), "compute.gib_hour"),
        (lambda d: _set(d, "compute.instance_vcpus", "value", 0), "compute.instance_vcpus"),
    ],
    ids=[
        "negative-storage", "negative-transition", "missing-class", "missing-duration",
        "missing-restore-tier", "missing-request-fee", "no-source", "no-as_of", "bad-as_of",
        "non-numeric", "unknown-field", "bare-number", "stale-derived", "zero-divisor",
    ],
)
def test_bad_table_names_the_file_and_key(tmp_path, mutate, key):
    directory = _write_table(tmp_path, mutate)
    with pytest.raises(PricingError) as err:
        load_price_table(pricing_dir=directory)
    message = str(err.value)
    assert str(directory / f"{DEFAULT_PROFILE}.yaml") in message
    assert key in message


def test_missing_top_level_version_is_rejected(tmp_path):
    directory = _write_table(tmp_path, lambda d: d.pop("version"))
    with pytest.raises(PricingError, match="'version'"):
        load_price_table(pricing_dir=directory)


def test_every_required_path_is_checked(tmp_path):
    # Removing any one required figure must fail loudly, whatever the section.
    for path in REQUIRED_PATHS[:: max(1, len(REQUIRED_PATHS) // 12)]:
        directory = _write_table(tmp_path, lambda d, p=path: _drop(d, p))
        with pytest.raises(PricingError) as err:
            load_price_table(pricing_dir=directory)
        assert path in str(err.value)


def test_the_real_file_values_are_finite(table):
    assert all(math.isfinite(f.value) for f in table)
