"""The one configuration file of Traceo FinOps, validated with pydantic.

Default path: ``include/config/finops.yaml``; env ``FINOPS_CONFIG`` points elsewhere and
env ``FINOPS_REPORT_ROOT`` overrides ``report_root``. Every key is documented in
``docs/configuration.md``. An invalid file raises :class:`ConfigError` naming the file,
the key and the problem.
"""

from __future__ import annotations

import os
from datetime import timedelta
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import promql_parser
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "include" / "config" / "finops.yaml"


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid."""


def _parse_duration(value: Any) -> timedelta:
    """Accept Prometheus durations (``14d``, ``1h30m``), seconds as a number, or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        try:
            # promql_parser builds an un-normalised timedelta (days=0, seconds>86400) that
            # compares unequal to the same duration; normalise it.
            parsed = timedelta(seconds=promql_parser.parse_duration(value.strip()).total_seconds())
        except ValueError:
            raise ValueError(f"{value!r} is not a duration such as 90m, 1d or 14d") from None
        # promql-parser 0.11 reads "500ms" as 500 µs; nothing here needs sub-second durations.
        if parsed < timedelta(seconds=1):
            raise ValueError(f"{value!r} is shorter than a second; use s, m, h, d, w or y units")
        return parsed
    raise ValueError(f"{value!r} is not a duration such as 90m, 1d or 14d")


def _format_duration(value: timedelta) -> str:
    return promql_parser.display_duration(value)


Duration = Annotated[timedelta, BeforeValidator(_parse_duration), PlainSerializer(_format_duration)]


class _Strict(BaseModel):
    # A misspelt key must fail loudly instead of silently falling back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Flavor(StrEnum):
    PROMETHEUS = "prometheus"
    MIMIR = "mimir"


class Source(_Strict):
    """One Prometheus server or Mimir cluster, reached through an Airflow connection."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    conn_id: str = "prometheus_default"
    flavor: Flavor = Flavor.PROMETHEUS
    tenants: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _tenants_only_for_mimir(self) -> Source:
        if self.tenants and self.flavor is not Flavor.MIMIR:
            raise ValueError("tenants are only meaningful for flavor 'mimir'")
        return self


class Pricing(_Strict):
    """Which price table to use (``include/pricing/<profile>.yaml``) and figures to override."""

    profile: str = "aws-us-east-1"
    # Dotted paths into the price table, e.g. {"compute.vcpu_hour": 0.035}.
    overrides: dict[str, float] = Field(default_factory=dict)


class Slack(_Strict):
    conn_id: str = "slack_finops"
    enabled: bool = True


class CardinalitySettings(_Strict):
    lookback: Duration = timedelta(days=1)
    owner_label: str = "team"
    # Metrics per PromQL count query when completing the top-10 of /status/tsdb.
    metric_chunk_size: int = Field(default=200, ge=1, le=5000)
    top_n_in_digest: int = Field(default=10, ge=1, le=50)


class RightsizingSettings(_Strict):
    history: Duration = timedelta(days=14)
    cpu_percentile: float = Field(default=0.95, gt=0, le=1)
    cpu_margin: float = Field(default=0.15, ge=0)
    memory_margin: float = Field(default=0.15, ge=0)
    oom_bump: float = Field(default=1.2, ge=1)
    min_cpu_cores: float = Field(default=0.010, ge=0)
    min_memory_mib: float = Field(default=64, ge=0)


class SimpleWorkflowSettings(_Strict):
    lookback: Duration = timedelta(days=1)


class S3TieringSettings(_Strict):
    lookback: Duration = timedelta(days=1)
    # Above this many objects a bucket is read from its S3 Inventory instead of ListObjectsV2.
    list_objects_max: int = Field(default=1_000_000, ge=1)


class Workflows(_Strict):
    cardinality: CardinalitySettings = CardinalitySettings()
    recording_rules: SimpleWorkflowSettings = SimpleWorkflowSettings()
    slo: SimpleWorkflowSettings = SimpleWorkflowSettings()
    rightsizing: RightsizingSettings = RightsizingSettings()
    s3_tiering: S3TieringSettings = S3TieringSettings()
    cost_report: SimpleWorkflowSettings = SimpleWorkflowSettings(lookback=timedelta(days=7))


class BucketLayout(StrEnum):
    MIMIR = "mimir"
    THANOS = "thanos"
    GENERIC = "generic"


class BucketRole(StrEnum):
    ONLINE = "online"  # read by store-gateways / queriers: must stay readable in real time
    ARCHIVE = "archive"


class Bucket(_Strict):
    """A metric block bucket the S3 tiering workflow plans for (and, if allowed, applies to)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    conn_id: str = "aws_default"
    layout: BucketLayout = BucketLayout.MIMIR
    role: BucketRole = BucketRole.ONLINE
    apply: bool = False
    retention: Duration | None = None
    deletion_delay: Duration = timedelta(hours=12)
    allow_expiration: bool = False


class FinopsConfig(_Strict):
    """The whole configuration file."""

    report_root: str = "reports"
    # AWS connection used when report_root is an s3:// URI.
    report_conn_id: str = "aws_default"
    default_lookback: Duration = timedelta(days=1)
    sources: list[Source] = Field(min_length=1)
    pricing: Pricing = Pricing()
    slack: Slack = Slack()
    workflows: Workflows = Workflows()
    buckets: list[Bucket] = Field(default_factory=list)

    @field_validator("sources")
    @classmethod
    def _unique_source_names(cls, sources: list[Source]) -> list[Source]:
        names = [s.name for s in sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique, repeated: {', '.join(dupes)}")
        return sources

    @field_validator("buckets")
    @classmethod
    def _unique_bucket_names(cls, buckets: list[Bucket]) -> list[Bucket]:
        names = [b.name for b in buckets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"bucket names must be unique, repeated: {', '.join(dupes)}")
        return buckets

    @cached_property
    def report_root_uri(self) -> str:
        """``report_root`` as an absolute local path or an ``s3://`` URI."""
        root = self.report_root
        if "://" in root:
            return root.rstrip("/")
        path = Path(root).expanduser()
        return str(path if path.is_absolute() else (PROJECT_ROOT / path).resolve())

    def source(self, name: str) -> Source:
        for s in self.sources:
            if s.name == name:
                return s
        raise ConfigError(f"no source named {name!r} in the configuration (known: "
                          f"{', '.join(s.name for s in self.sources)})")

    def bucket(self, name: str) -> Bucket:
        for b in self.buckets:
            if b.name == name:
                return b
        raise ConfigError(f"no bucket named {name!r} in the configuration (known: "
                          f"{', '.join(b.name for b in self.buckets) or 'none'})")


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {key}: {err['msg']}")
    return "\n".join(lines)


def config_path() -> Path:
    """The configuration file in force: env ``FINOPS_CONFIG`` or the project default."""
    return Path(os.environ.get("FINOPS_CONFIG") or DEFAULT_CONFIG_PATH)


def load_config(path: str | Path | None = None) -> FinopsConfig:
    """Read, validate and return the configuration; env ``FINOPS_REPORT_ROOT`` wins over the file."""
    path = Path(path) if path else config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist (set FINOPS_CONFIG or create it)") from None
    except OSError as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {path} must be a YAML mapping, got {type(data).__name__}")
    if os.environ.get("FINOPS_REPORT_ROOT"):
        data["report_root"] = os.environ["FINOPS_REPORT_ROOT"]
    try:
        return FinopsConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"configuration file {path} is invalid:\n{_format_errors(exc)}") from None
