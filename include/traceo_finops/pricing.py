"""Versioned price tables (``include/pricing/<profile>.yaml``) behind a small typed loader.

Every figure in a table carries its ``source`` and ``as_of`` date; :meth:`PriceTable.source_of`
returns them for a report footnote. ``pricing.overrides`` from the configuration replace single
figures by dotted path (``compute.vcpu_hour``, ``s3.storage.STANDARD``); figures derived from an
overridden input (``compute.*_hour``, ``metrics.self_hosted.per_1k_series_month``) are recomputed.
Any problem raises :class:`PricingError` naming the file and the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from traceo_finops.config import read_yaml_mapping

DEFAULT_PRICING_DIR = Path(__file__).resolve().parents[2] / "include" / "pricing"
DEFAULT_PROFILE = "aws-us-east-1"

# A month is 730 hours: 365 days x 24 h / 12 months. AWS prices monthly figures on this basis (the AWS
# Pricing Calculator's "730 hours in a month"), so $/hour x 730 matches an AWS monthly estimate.
# Defined once here; every hourly-to-monthly conversion in the project uses it.
HOURS_PER_MONTH = 730

# Derived figures must agree with their inputs to this relative tolerance (the file rounds them).
_DERIVED_TOLERANCE = 1e-3


class PricingError(ValueError):
    """A price table is missing, malformed, or asked for a figure it does not have."""


class StorageClass(StrEnum):
    """S3 storage classes as the S3 API spells them."""

    STANDARD = "STANDARD"
    INTELLIGENT_TIERING = "INTELLIGENT_TIERING"
    STANDARD_IA = "STANDARD_IA"
    ONEZONE_IA = "ONEZONE_IA"
    GLACIER_IR = "GLACIER_IR"
    GLACIER = "GLACIER"
    DEEP_ARCHIVE = "DEEP_ARCHIVE"


ALL_CLASSES: tuple[StorageClass, ...] = tuple(StorageClass)
# Read in real time (by store-gateways too); the other two need RestoreObject first.
INSTANT_CLASSES = (
    StorageClass.STANDARD,
    StorageClass.INTELLIGENT_TIERING,
    StorageClass.STANDARD_IA,
    StorageClass.ONEZONE_IA,
    StorageClass.GLACIER_IR,
)
ARCHIVE_CLASSES = (StorageClass.GLACIER, StorageClass.DEEP_ARCHIVE)
# Lifecycle rules only move data colder; nothing transitions into STANDARD.
TRANSITION_TARGETS = tuple(c for c in ALL_CLASSES if c is not StorageClass.STANDARD)
IT_TIERS = ("frequent", "infrequent", "archive_instant", "archive", "deep_archive")
RESTORE_TIERS: dict[StorageClass, tuple[str, ...]] = {
    StorageClass.GLACIER: ("expedited", "standard", "bulk"),
    StorageClass.DEEP_ARCHIVE: ("standard", "bulk"),
}
REQUEST_OPS = ("PUT", "GET")
SeriesModel = Literal["self_hosted", "hosted"]

_SELF = "metrics.self_hosted."
# Inputs of the self-hosted series model (metrics.self_hosted.per_1k_series_month).
_SELF_INPUTS = tuple(
    _SELF + k
    for k in (
        "replication_factor",
        "scrape_interval_seconds",
        "ingester_series_per_core",
        "ingester_series_per_gb",
        "distributor_samples_per_second_per_core",
        "distributor_samples_per_second_per_gb",
        "memory_headroom",
    )
)


def _required_paths() -> tuple[str, ...]:
    paths = ["s3.bytes_per_gb", "s3.intelligent_tiering.monitoring_per_1k_objects",
             "s3.intelligent_tiering.min_monitored_object_bytes"]
    paths += [f"s3.storage.{c}" for c in ALL_CLASSES]
    paths += [f"s3.intelligent_tiering.tiers.{t}" for t in IT_TIERS]
    paths += [f"s3.transition_per_1k.{c}" for c in TRANSITION_TARGETS]
    paths += [f"s3.min_storage_days.{c}" for c in ALL_CLASSES]
    paths += [f"s3.min_billable_bytes.{c}" for c in ALL_CLASSES]
    paths += [f"s3.archive_overhead.{c}.{part}" for c in ARCHIVE_CLASSES
              for part in ("standard_bytes", "archive_bytes")]
    for c in ALL_CLASSES:
        for tier in RESTORE_TIERS.get(c, ("standard",)):
            paths += [f"s3.retrieval.{c}.{tier}.per_gb", f"s3.retrieval.{c}.{tier}.per_1k"]
    paths += [f"s3.requests_per_1k.{op}.{c}" for op in REQUEST_OPS for c in ALL_CLASSES]
    paths += [f"compute.{k}" for k in ("instance_hourly", "instance_vcpus", "instance_memory_gib",
                                       "vcpu_to_gib_cost_ratio", "gib_hour", "vcpu_hour")]
    paths += [*_SELF_INPUTS, _SELF + "per_1k_series_month"]
    paths += [f"metrics.hosted.{k}" for k in ("per_1k_series_month", "included_series", "platform_fee_month",
                                              "included_dpm_per_series")]
    return tuple(paths)


REQUIRED_PATHS = _required_paths()

# Figures that divide something: zero would make a derived price infinite.
_POSITIVE_PATHS = frozenset(
    (
        "s3.bytes_per_gb",
        "compute.instance_vcpus",
        "compute.instance_memory_gib",
        "compute.vcpu_to_gib_cost_ratio",
        *_SELF_INPUTS,
    )
)


def _gib_hour(v: Mapping[str, float]) -> float:
    # Solve vcpus * (ratio * g) + memory_gib * g = instance price for g, the $/GiB-hour.
    ratio = v["compute.vcpu_to_gib_cost_ratio"]
    weight = v["compute.instance_vcpus"] * ratio + v["compute.instance_memory_gib"]
    return v["compute.instance_hourly"] / weight


def _vcpu_hour(v: Mapping[str, float]) -> float:
    return v["compute.vcpu_to_gib_cost_ratio"] * v["compute.gib_hour"]


@dataclass(frozen=True)
class SeriesResources:
    """What 1,000 active series take on a self-hosted Mimir write path, and what that costs a month."""

    cores: float
    memory_gib: float
    usd_month: float


def _series_resources(v: Mapping[str, float]) -> SeriesResources:
    in_memory = 1000 * v[_SELF + "replication_factor"]
    samples_per_s = 1000 / v[_SELF + "scrape_interval_seconds"]
    cores = (in_memory / v[_SELF + "ingester_series_per_core"]
             + samples_per_s / v[_SELF + "distributor_samples_per_second_per_core"])
    memory_gb = (
        in_memory / v[_SELF + "ingester_series_per_gb"]
        + samples_per_s / v[_SELF + "distributor_samples_per_second_per_gb"]
    ) * v[_SELF + "memory_headroom"]
    # The capacity guide speaks of GB (10^9 bytes); compute is priced per GiB.
    memory_gib = memory_gb * 1e9 / 2**30
    usd = (cores * v["compute.vcpu_hour"] + memory_gib * v["compute.gib_hour"]) * HOURS_PER_MONTH
    return SeriesResources(cores=cores, memory_gib=memory_gib, usd_month=usd)


# Derived figure -> (its inputs, formula). Evaluated in this order, so later ones see earlier results.
_DERIVED: dict[str, tuple[tuple[str, ...], Callable[[Mapping[str, float]], float]]] = {
    "compute.gib_hour": (
        ("compute.instance_hourly", "compute.instance_vcpus", "compute.instance_memory_gib",
         "compute.vcpu_to_gib_cost_ratio"),
        _gib_hour,
    ),
    "compute.vcpu_hour": (("compute.vcpu_to_gib_cost_ratio", "compute.gib_hour"), _vcpu_hour),
    _SELF + "per_1k_series_month": (
        (*_SELF_INPUTS, "compute.vcpu_hour", "compute.gib_hour"),
        lambda v: _series_resources(v).usd_month,
    ),
}

_FIGURE_KEYS = frozenset({"value", "unit", "source", "as_of", "note", "derivation"})
_METADATA_KEYS = frozenset({"version", "as_of", "currency", "region", "description", "sources"})
_SECTIONS = ("s3", "compute", "metrics")
_PROFILE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class Figure:
    """One price or model input, with where it comes from."""

    path: str
    value: float
    unit: str
    source: str
    as_of: date
    note: str | None = None
    derivation: str | None = None
    overridden: bool = False

    @property
    def citation(self) -> str:
        return f"{self.source} (as of {self.as_of.isoformat()})"


def _cls(storage_class: str | StorageClass) -> StorageClass:
    try:
        return StorageClass(str(storage_class).upper())
    except ValueError:
        raise PricingError(
            f"unknown storage class {storage_class!r} (known: {', '.join(ALL_CLASSES)})"
        ) from None


@dataclass(frozen=True)
class PriceTable:
    """A loaded, validated price table; accessors return plain floats in the table's currency."""

    profile: str
    path: Path
    version: str
    as_of: date
    currency: str
    region: str | None
    figures: Mapping[str, Figure]

    # -- generic access -------------------------------------------------------------------------
    def paths(self) -> tuple[str, ...]:
        """Every figure's dotted path: what ``pricing.overrides`` accepts."""
        return tuple(self.figures)

    def figure(self, path: str) -> Figure:
        try:
            return self.figures[path]
        except KeyError:
            raise PricingError(f"price table {self.path} has no figure {path!r}") from None

    def value(self, path: str) -> float:
        return self.figure(path).value

    def source_of(self, path: str) -> str:
        """Source and date of one figure, e.g. for a report footnote."""
        return self.figure(path).citation

    def __iter__(self) -> Iterator[Figure]:
        return iter(self.figures.values())

    # -- S3 ---------------------------------------------------------------------------------------
    @property
    def bytes_per_gb(self) -> float:
        return self.value("s3.bytes_per_gb")

    def storage_gb_month(self, storage_class: str | StorageClass, tier: str | None = None) -> float:
        """$/GB-month; for INTELLIGENT_TIERING ``tier`` picks an access tier (default: frequent)."""
        cls = _cls(storage_class)
        if tier is None:
            return self.value(f"s3.storage.{cls}")
        if cls is not StorageClass.INTELLIGENT_TIERING:
            raise PricingError(f"access tier {tier!r} only applies to INTELLIGENT_TIERING, not {cls}")
        if tier not in IT_TIERS:
            raise PricingError(f"unknown Intelligent-Tiering tier {tier!r} (known: {', '.join(IT_TIERS)})")
        return self.value(f"s3.intelligent_tiering.tiers.{tier}")

    @property
    def it_monitoring_per_1k_objects(self) -> float:
        return self.value("s3.intelligent_tiering.monitoring_per_1k_objects")

    @property
    def it_min_monitored_bytes(self) -> int:
        return int(self.value("s3.intelligent_tiering.min_monitored_object_bytes"))

    def transition_per_1k(self, storage_class: str | StorageClass) -> float:
        """Lifecycle transition fee per 1,000 objects moved into ``storage_class``."""
        cls = _cls(storage_class)
        if cls not in TRANSITION_TARGETS:
            raise PricingError(f"lifecycle rules cannot transition objects into {cls}")
        return self.value(f"s3.transition_per_1k.{cls}")

    def min_storage_days(self, storage_class: str | StorageClass) -> int:
        return int(self.value(f"s3.min_storage_days.{_cls(storage_class)}"))

    def min_billable_bytes(self, storage_class: str | StorageClass) -> int:
        return int(self.value(f"s3.min_billable_bytes.{_cls(storage_class)}"))

    def archive_overhead_bytes(self, storage_class: str | StorageClass) -> tuple[int, int]:
        """Per-object overhead as (bytes at the STANDARD rate, bytes at the class's own rate)."""
        cls = _cls(storage_class)
        if cls not in ARCHIVE_CLASSES:
            return (0, 0)
        base = f"s3.archive_overhead.{cls}."
        return (int(self.value(base + "standard_bytes")), int(self.value(base + "archive_bytes")))

    def _retrieval(self, storage_class: str | StorageClass, tier: str, unit: str) -> float:
        cls = _cls(storage_class)
        tiers = RESTORE_TIERS.get(cls, ("standard",))
        if tier not in tiers:
            raise PricingError(f"{cls} has no retrieval tier {tier!r} (known: {', '.join(tiers)})")
        return self.value(f"s3.retrieval.{cls}.{tier}.{unit}")

    def retrieval_per_gb(self, storage_class: str | StorageClass, tier: str = "standard") -> float:
        """$/GB read back; GLACIER also has ``expedited``/``bulk``, DEEP_ARCHIVE ``bulk``."""
        return self._retrieval(storage_class, tier, "per_gb")

    def retrieval_per_1k(self, storage_class: str | StorageClass, tier: str = "standard") -> float:
        """Retrieval (restore) requests per 1,000; instant classes pay the GET fee instead (0 here)."""
        return self._retrieval(storage_class, tier, "per_1k")

    def request_per_1k(self, storage_class: str | StorageClass, op: Literal["PUT", "GET"]) -> float:
        """PUT (COPY/POST/LIST) or GET (and other) request fee per 1,000 requests."""
        if op not in REQUEST_OPS:
            raise PricingError(f"unknown request kind {op!r} (known: {', '.join(REQUEST_OPS)})")
        return self.value(f"s3.requests_per_1k.{op}.{_cls(storage_class)}")

    def object_storage_month(self, storage_class: str | StorageClass, size_bytes: int) -> float:
        """What one object of ``size_bytes`` costs to store for a month, with minimum size and overhead.

        Intelligent-Tiering is priced at the frequent tier plus monitoring (objects of 128 KB or more).
        """
        cls = _cls(storage_class)
        if size_bytes < 0:
            raise PricingError(f"object size must be >= 0, got {size_bytes}")
        gb = self.bytes_per_gb
        billable = max(size_bytes, self.min_billable_bytes(cls))
        at_standard, at_own_rate = self.archive_overhead_bytes(cls)
        usd = (billable + at_own_rate) / gb * self.storage_gb_month(cls)
        usd += at_standard / gb * self.storage_gb_month(StorageClass.STANDARD)
        if cls is StorageClass.INTELLIGENT_TIERING and size_bytes >= self.it_min_monitored_bytes:
            usd += self.it_monitoring_per_1k_objects / 1000
        return usd

    # -- compute and series ---------------------------------------------------------------------
    @property
    def vcpu_hour(self) -> float:
        return self.value("compute.vcpu_hour")

    @property
    def gib_hour(self) -> float:
        return self.value("compute.gib_hour")

    def series_month_per_1k(self, model: SeriesModel = "self_hosted") -> float:
        """$ per 1,000 active series per month: the self-hosted model or the hosted list price."""
        if model not in ("self_hosted", "hosted"):
            raise PricingError(f"unknown series cost model {model!r} (known: self_hosted, hosted)")
        return self.value(f"metrics.{model}.per_1k_series_month")

    def self_hosted_series_resources(self) -> SeriesResources:
        """Cores and GiB behind :meth:`series_month_per_1k` ("self_hosted"), at this table's prices."""
        return _series_resources({p: f.value for p, f in self.figures.items()})


# -- loading ----------------------------------------------------------------------------------------
def _as_date(raw: Any, where: str) -> date:
    if isinstance(raw, date):
        return raw
    if isinstance(raw, str):
        try:
            return date.fromisoformat(raw.strip())
        except ValueError:
            pass
    raise PricingError(f"{where}: as_of must be a date such as 2026-11-28, got {raw!r}")


def _parse_figure(file: Path, path: str, node: dict[str, Any]) -> Figure:
    where = f"price table {file}, key {path!r}"
    unknown = sorted(set(node) - _FIGURE_KEYS)
    if unknown:
        allowed = ", ".join(sorted(_FIGURE_KEYS))
        raise PricingError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {allowed})")
    value = node.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PricingError(f"{where}: value must be a finite number, got {value!r}")
    for key in ("unit", "source"):
        if not isinstance(node.get(key), str) or not node[key].strip():
            raise PricingError(f"{where}: missing {key} (every figure needs value, unit, source and as_of)")
    if "as_of" not in node:
        raise PricingError(f"{where}: missing as_of (every figure needs value, unit, source and as_of)")
    return Figure(
        path=path,
        value=float(value),
        unit=node["unit"].strip(),
        source=" ".join(node["source"].split()),
        as_of=_as_date(node["as_of"], where),
        note=str(node["note"]) if node.get("note") is not None else None,
        derivation=" ".join(str(node["derivation"]).split()) if node.get("derivation") is not None else None,
    )


def _walk(file: Path, prefix: str, node: Any, out: dict[str, Figure]) -> None:
    if not isinstance(node, dict) or not node:
        raise PricingError(
            f"price table {file}, key {prefix!r}: expected a figure (value, unit, source, as_of) "
            f"or a group of figures, got {node!r}"
        )
    if "value" in node or {"unit", "source", "as_of"} & set(node):
        out[prefix] = _parse_figure(file, prefix, node)
        return
    for key, child in node.items():
        _walk(file, f"{prefix}.{key}", child, out)


def _check_values(file: Path, values: Mapping[str, float], what: str) -> None:
    for path, v in values.items():
        if v < 0:
            raise PricingError(f"price table {file}, key {path!r}: {what} {v} is negative")
        if path in _POSITIVE_PATHS and v == 0:
            raise PricingError(f"price table {file}, key {path!r}: {what} must be greater than 0")


def _read(file: Path) -> dict[str, Any]:
    return read_yaml_mapping(file, "price table", PricingError)


def available_profiles(pricing_dir: str | Path | None = None) -> tuple[str, ...]:
    """Profiles (file stems) in the pricing directory."""
    directory = Path(pricing_dir) if pricing_dir else DEFAULT_PRICING_DIR
    return tuple(sorted(p.stem for p in directory.glob("*.yaml")))


def load_price_table(
    profile: str = DEFAULT_PROFILE,
    overrides: Mapping[str, float] | None = None,
    pricing_dir: str | Path | None = None,
) -> PriceTable:
    """Load ``<pricing_dir>/<profile>.yaml``, validate it, and apply ``overrides`` (dotted paths)."""
    directory = Path(pricing_dir) if pricing_dir else DEFAULT_PRICING_DIR
    file = directory / f"{profile}.yaml"
    if not _PROFILE_RE.match(profile or "") or not file.is_file():
        known = ", ".join(available_profiles(directory)) or "none"
        raise PricingError(f"unknown pricing profile {profile!r}: no price table {file} (known: {known})")
    data = _read(file)

    unknown = sorted(set(data) - _METADATA_KEYS - set(_SECTIONS))
    if unknown:
        raise PricingError(f"price table {file}: unknown top-level key(s) {', '.join(unknown)}")
    for key in ("version", "as_of", "currency"):
        if data.get(key) in (None, ""):
            raise PricingError(f"price table {file}: missing top-level key {key!r}")

    figures: dict[str, Figure] = {}
    for section in _SECTIONS:
        if section not in data:
            raise PricingError(f"price table {file}: missing section {section!r}")
        _walk(file, section, data[section], figures)

    missing = [p for p in REQUIRED_PATHS if p not in figures]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise PricingError(f"price table {file} is missing key(s): {shown}")

    values = {p: f.value for p, f in figures.items()}
    _check_values(file, values, "value")

    # A stale derived figure means someone edited an input and not the result: refuse it.
    for path, (_deps, formula) in _DERIVED.items():
        expected = formula(values)
        if not math.isclose(values[path], expected, rel_tol=_DERIVED_TOLERANCE):
            raise PricingError(
                f"price table {file}, key {path!r}: stored value {values[path]} disagrees with its "
                f"derivation ({expected:.6g}); update the file"
            )

    overrides = dict(overrides or {})
    for path, raw in overrides.items():
        if path not in figures:
            raise PricingError(
                f"pricing override {path!r} is not a figure of price table {file} "
                f"(see PriceTable.paths() or docs/configuration.md)"
            )
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise PricingError(
                f"pricing override {path!r} for price table {file} must be a number, got {raw!r}"
            )
        old = figures[path]
        figures[path] = replace(
            old,
            value=float(raw),
            source=f"pricing.overrides in the configuration (replaces {old.value:g} from: {old.source})",
            overridden=True,
        )
        values[path] = float(raw)
    _check_values(file, {p: values[p] for p in overrides}, "override")

    # Re-derive what depends on an overridden input, unless the derived figure was overridden itself.
    changed = set(overrides)
    for path, (deps, formula) in _DERIVED.items():
        if path in overrides or not changed.intersection(deps):
            continue
        values[path] = formula(values)
        figures[path] = replace(
            figures[path],
            value=values[path],
            note=f"recomputed: {', '.join(sorted(changed & set(deps)))} changed through pricing.overrides",
        )
        changed.add(path)

    return PriceTable(
        profile=profile,
        path=file,
        version=str(data["version"]),
        as_of=_as_date(data["as_of"], f"price table {file}, key 'as_of'"),
        currency=str(data["currency"]),
        region=str(data["region"]) if data.get("region") else None,
        figures=MappingProxyType(figures),
    )
