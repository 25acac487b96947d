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
from typing import Annotated, Any, Literal

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

from traceo_finops.prometheus.promql import MAX_POINTS_PER_SERIES, format_duration, parse_duration
from traceo_finops.prometheus.spec import Flavor

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
            parsed = parse_duration(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a duration such as 90m, 1d or 14d") from None
        if parsed < timedelta(seconds=1):  # nothing here is configured in fractions of a second
            raise ValueError(f"{value!r} is shorter than a second; use s, m, h, d, w or y units")
        return parsed
    raise ValueError(f"{value!r} is not a duration such as 90m, 1d or 14d")


def _format_duration(value: timedelta) -> str:
    return format_duration(value)


Duration = Annotated[timedelta, BeforeValidator(_parse_duration), PlainSerializer(_format_duration)]


class _Strict(BaseModel):
    # A misspelt key must fail loudly instead of silently falling back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)



# Mimir's tenant ID rule (dskit tenant.ValidTenantID; docs "About tenant IDs"): these ASCII characters only,
# at most 150 bytes, and not "." or "..". So a valid tenant always fits the X-Scope-OrgID header as is.
MIMIR_TENANT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!-_.*'()")
MIMIR_TENANT_MAX_BYTES = 150
MIMIR_TENANT_RULE = ("Mimir tenant IDs may only use a-z A-Z 0-9 and ! - _ . * ' ( ), at most "
                     f"{MIMIR_TENANT_MAX_BYTES} characters, and may not be '.' or '..'")


def mimir_tenant_problem(tenant: str) -> str | None:
    """Why ``tenant`` is not a valid Mimir tenant ID (naming it and the rule), or None when it is."""
    bad = sorted({ch for ch in tenant if ch not in MIMIR_TENANT_CHARS}, key=tenant.index)
    if not tenant:
        problem = "is empty"
    elif bad:
        problem = "contains " + ", ".join(repr(ch) for ch in bad)
    elif len(tenant) > MIMIR_TENANT_MAX_BYTES:
        problem = f"is {len(tenant)} characters long"
    elif tenant in (".", ".."):
        problem = "is reserved"
    else:
        return None
    return f"tenant {tenant!r} {problem}: {MIMIR_TENANT_RULE}"


class Source(_Strict):
    """One Prometheus server or Mimir cluster, reached through an Airflow connection."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    conn_id: str = "prometheus_default"
    flavor: Flavor = Flavor.PROMETHEUS
    tenants: list[str] = Field(default_factory=list)
    # Which series Mimir's cardinality API counts (docs/cardinality.md): every series in the ingesters'
    # memory, or only those written within -ingester.active-series-metrics-idle-timeout. None: inmemory
    # (Mimir's own default); only a Mimir source may set it.
    count_method: Literal["inmemory", "active"] | None = None

    @field_validator("tenants")
    @classmethod
    def _valid_tenants(cls, tenants: list[str]) -> list[str]:
        problems = [p for p in map(mimir_tenant_problem, tenants) if p]
        if problems:
            raise ValueError("; ".join(problems))
        return tenants

    @property
    def census_count_method(self) -> Literal["inmemory", "active"]:
        """The count_method of the census (``inmemory`` unless set)."""
        return self.count_method or "inmemory"

    @model_validator(mode="after")
    def _tenants_only_for_mimir(self) -> Source:
        if self.tenants and self.flavor is not Flavor.MIMIR:
            raise ValueError("tenants are only meaningful for flavor 'mimir'")
        if self.count_method is not None and self.flavor is not Flavor.MIMIR:
            raise ValueError("count_method is only meaningful for flavor 'mimir' (Mimir's cardinality API)")
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
    # Where usage is read from, besides the server's rules API / Mimir ruler (paths or globs,
    # relative to the project root unless absolute).
    rules_api: bool = True
    rule_files: list[str] = Field(default_factory=list)
    dashboards: list[str] = Field(default_factory=list)
    query_log: str | None = None
    mimir_query_stats: str | None = None
    # Labels no suggestion removes (job names the scrape; le/quantile shape histograms/summaries).
    protected_labels: list[str] = Field(default_factory=lambda: ["job", "le", "quantile"])
    # Target labels (job, instance, what target relabeling attaches) are protected too, except these.
    allow_target_labels: list[str] = Field(default_factory=list)


class RightsizingSettings(_Strict):
    history: Duration = timedelta(days=14)
    cpu_percentile: float = Field(default=0.95, gt=0, le=1)
    cpu_margin: float = Field(default=0.15, ge=0)
    memory_margin: float = Field(default=0.15, ge=0)
    oom_bump: float = Field(default=1.2, ge=1)
    min_cpu_cores: float = Field(default=0.010, ge=0)
    min_memory_mib: float = Field(default=64, ge=0)
    # Below this much history (discounted by sample coverage) a row is "insufficient data".
    min_history: Duration = timedelta(days=1)
    # A Job/CronJob with this many runs in the history has enough data, however short each run was.
    min_runs: int = Field(default=3, ge=1)
    # A request is over-/under-provisioned when the recommendation differs from it by more than this share.
    tolerance: float = Field(default=0.3, ge=0, lt=1)
    # CPU rate() window; raised to 4x the detected scrape interval and to the query resolution.
    rate_window: Duration = timedelta(minutes=5)
    # Points per series of a subquery (Prometheus refuses range queries above 11,000).
    max_points: int = Field(default=MAX_POINTS_PER_SERIES, ge=100, le=MAX_POINTS_PER_SERIES)
    # Series x points one query may hold (Prometheus' --query.max-samples defaults to 50 million).
    max_samples_per_query: int = Field(default=5_000_000, ge=10_000)
    query_concurrency: int = Field(default=2, ge=1, le=16)
    # RE2 regex of the namespaces to size.
    namespaces: str = ".+"
    # RE2 regexes of the `job`s whose processes (not on Kubernetes) are sized as the observability stack.
    stack_jobs: list[str] = Field(default_factory=lambda: ["prometheus", "mimir.*", "cortex.*", "thanos.*",
                                                           "loki.*", "alertmanager"])

    class StackAllocation(_Strict):
        """What one stack process has now (its VM, its systemd slice): the basis of its current cost."""

        job: str = Field(min_length=1)
        cpu_cores: float = Field(gt=0)
        memory_gib: float = Field(gt=0)

    stack_allocations: list[StackAllocation] = Field(default_factory=list)
    vpa_objects: bool = False
    top_n_in_digest: int = Field(default=10, ge=1, le=50)

    @field_validator("namespaces", "stack_jobs")
    @classmethod
    def _valid_regex(cls, value: str | list[str]) -> str | list[str]:
        import re

        for pattern in [value] if isinstance(value, str) else value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from None
        return value

    @field_validator("stack_allocations")
    @classmethod
    def _unique_jobs(cls, value: list[StackAllocation]) -> list[StackAllocation]:
        jobs = [a.job for a in value]
        if len(jobs) != len(set(jobs)):
            raise ValueError(f"stack_allocations lists a job twice: {jobs}")
        return value


class SimpleWorkflowSettings(_Strict):
    lookback: Duration = timedelta(days=1)


class RecordingRulesSettings(_Strict):
    """``finops_recording_rules``: where the query logs are, which groups to consider, how rules are proven."""

    lookback: Duration = timedelta(days=1)
    # Prometheus query_log_file of each Prometheus source / Mimir query-frontend log of each tenant: a path or
    # glob (relative to the project root unless absolute) or an s3:// URI or glob; `{source}` and `{tenant}`
    # are filled in. A plain path also reads its rotated siblings (query.log.1, query.log.2.gz, ...).
    query_log: str | None = None
    mimir_query_stats: str | None = None
    # AWS connection for s3:// log locations.
    log_conn_id: str = "aws_default"
    # Compare with the recording rules the server already has (rules API / Mimir ruler).
    rules_api: bool = True
    # The costliest groups with a recordable aggregation that are proven, and how often a group must run.
    top_n: int = Field(default=10, ge=1, le=200)
    min_count: int = Field(default=2, ge=1)
    rank_by: Literal["seconds", "samples"] = "seconds"
    # Evaluation interval of the suggested rule group.
    interval: Duration = timedelta(minutes=1)
    # Timed runs of the original and the rewritten query (the median counts), and the least speedup suggested.
    speedup_runs: int = Field(default=5, ge=1, le=50)
    min_speedup: float = Field(default=2.0, ge=0)
    # A rule adding more series than this is not suggested.
    max_new_series: int = Field(default=10_000, ge=1)
    # Relative float tolerance of the equivalence proof.
    float_tolerance: float = Field(default=1e-9, gt=0, le=0.01)
    # Longer query texts are counted and not parsed.
    max_query_length: int = Field(default=20_000, ge=100)
    group_name: str = Field(default="traceo_finops_recording_rules", min_length=1)
    mimir_namespace: str = Field(default="traceo-finops", min_length=1)
    # The binaries of the proof: promtool writes the rules' history, a private Prometheus serves it.
    promtool: str = "/usr/bin/promtool"
    prometheus: str = "/usr/bin/prometheus"
    top_n_in_digest: int = Field(default=10, ge=1, le=50)

    @field_validator("interval")
    @classmethod
    def _whole_seconds(cls, value: timedelta) -> timedelta:
        if value.total_seconds() != int(value.total_seconds()):
            raise ValueError("the rule interval must be a whole number of seconds")
        return value


class SloTeamReceivers(_Strict):
    """The Alertmanager receivers of one team's SLO alerts (defined in the user's alertmanager.yml)."""

    team: str = Field(min_length=1)
    pager: str = Field(min_length=1)
    tickets: str = Field(min_length=1)


class SloSettings(_Strict):
    """``finops_slo``: which SLO specs apply to which source/tenant, their default period, the receivers."""

    lookback: Duration = timedelta(days=1)
    # Sloth prometheus/v1 spec files: paths or globs relative to the project root unless absolute; `{source}` and
    # `{tenant}` are filled in. A source/tenant whose patterns match no file has no SLOs and is not a target.
    specs: list[str] = Field(default_factory=list)
    # The period of the SLOs whose spec sets none (a spec's own `period` wins); null: 30d.
    period: Duration | None = None
    # Team -> receivers; null: named placeholders (<team>-pager, <team>-tickets). When set, every team needs one.
    receivers: list[SloTeamReceivers] | None = None
    mimir_namespace: str = Field(default="traceo-finops-slo", min_length=1)
    promtool: str = "/usr/bin/promtool"
    amtool: str = "/usr/bin/amtool"
    top_n_in_digest: int = Field(default=20, ge=1, le=50)

    @field_validator("period")
    @classmethod
    def _period_covers_the_alert_windows(cls, value: timedelta | None) -> timedelta | None:
        from traceo_finops.slo.burnrate import LONGEST_ALERT_WINDOW

        if value is not None and value < LONGEST_ALERT_WINDOW:
            raise ValueError(f"the period must be at least the longest alert window ({LONGEST_ALERT_WINDOW.days}d)")
        return value

    @field_validator("receivers")
    @classmethod
    def _one_entry_per_team(cls, value: list[SloTeamReceivers] | None) -> list[SloTeamReceivers] | None:
        teams = [r.team for r in value or []]
        if len(teams) != len(set(teams)):
            raise ValueError(f"receivers lists a team twice: {teams}")
        return value


class S3TieringSettings(_Strict):
    lookback: Duration = timedelta(days=1)
    # A bucket without a usable S3 Inventory is listed with ListObjectsV2 up to this many objects.
    list_objects_max: int = Field(default=1_000_000, ge=1)
    # A configured S3 Inventory older than this at the window's end is stale: the bucket is listed
    # instead. 8 days: a weekly inventory plus a day of delivery delay.
    inventory_max_age: Duration = timedelta(days=8)
    # Object ages (days) a rule may transition at; they are also the report's age bands. At least 30:
    # compaction rewrites younger blocks, and the IA classes refuse anything earlier.
    transition_days: list[int] = Field(default_factory=lambda: [30, 60, 90, 180, 365], min_length=1)
    # A rule is proposed only if it saves more than this over 12 months, fees included (USD).
    min_net_saving_12m: float = Field(default=0.0, ge=0)
    # ...and if its one-time cost is paid back within this many days.
    max_break_even_days: int = Field(default=365, ge=1)

    @field_validator("transition_days")
    @classmethod
    def _sorted_days(cls, days: list[int]) -> list[int]:
        if any(d < 30 for d in days):
            raise ValueError("transition days must be at least 30 (younger blocks are still being compacted)")
        return sorted(set(days))


class CostReportSettings(_Strict):
    """``finops_cost_report``: which upstream partitions it reads, the anomaly baseline, the digest."""

    lookback: Duration = timedelta(days=7)
    # An upstream partition older than this before the report date is stale: not used, and said so.
    max_input_age: Duration = timedelta(days=8)
    # Days of daily totals behind the anomaly baseline and the week-over-week comparison.
    history: Duration = timedelta(days=28)
    # A day must move at least this share of its baseline median to be an anomaly.
    anomaly_min_change: float = Field(default=0.10, ge=0, le=10)
    top_n_in_digest: int = Field(default=5, ge=1, le=50)


class Workflows(_Strict):
    cardinality: CardinalitySettings = CardinalitySettings()
    recording_rules: RecordingRulesSettings = RecordingRulesSettings()
    slo: SloSettings = SloSettings()
    rightsizing: RightsizingSettings = RightsizingSettings()
    s3_tiering: S3TieringSettings = S3TieringSettings()
    cost_report: CostReportSettings = CostReportSettings()


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
    # Mimir per-tenant compactor_blocks_retention_period (tenant -> duration), overriding `retention`.
    retention_overrides: dict[str, Duration] = Field(default_factory=dict)
    # Classes a rule may move objects to; None = by role (online: instant-read classes only).
    storage_classes: list[str] | None = None
    # Share of the stored bytes read back per month: retrieval and GET fees of colder classes.
    monthly_read_ratio: float = Field(default=0.1, ge=0, le=1)
    # Days after which incomplete multipart uploads are aborted by a finops rule; None = no such rule.
    abort_incomplete_multipart_days: int | None = Field(default=7, ge=1)
    # S3 Inventory of the bucket: s3://dest/prefix/<bucket>/<config-id> or a manifest.json URI.
    inventory: str | None = Field(default=None, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
    # False only for S3-compatible servers that do not echo ObjectSizeGreaterThan/LessThan (moto).
    verify_size_filters: bool = True

    @field_validator("storage_classes")
    @classmethod
    def _known_classes(cls, classes: list[str] | None) -> list[str] | None:
        if classes is None:
            return None
        known = ("INTELLIGENT_TIERING", "STANDARD_IA", "ONEZONE_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE")
        bad = [c for c in classes if c not in known]
        if bad:
            raise ValueError(f"unknown or non-target storage class(es) {', '.join(bad)} "
                             f"(choose from {', '.join(known)})")
        return list(dict.fromkeys(classes))

    @model_validator(mode="after")
    def _online_stays_readable(self) -> Bucket:
        archived = [c for c in self.storage_classes or () if c in ("GLACIER", "DEEP_ARCHIVE")]
        if archived and self.role is BucketRole.ONLINE:
            raise ValueError(f"bucket {self.name}: {', '.join(archived)} cannot be read by store-gateways or "
                             "queriers (thanos#7975); an online bucket may not use them")
        return self


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


def read_yaml_mapping(path: Path, what: str, error: type[Exception], missing_hint: str = "") -> dict[str, Any]:
    """A YAML file that must hold a mapping; ``error`` names ``what`` and ``path`` for every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist{missing_hint}") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{what} {path} must be a YAML mapping, got {type(data).__name__}")
    return data


def config_path() -> Path:
    """The configuration file in force: env ``FINOPS_CONFIG`` or the project default."""
    return Path(os.environ.get("FINOPS_CONFIG") or DEFAULT_CONFIG_PATH)


def load_config(path: str | Path | None = None) -> FinopsConfig:
    """Read, validate and return the configuration; env ``FINOPS_REPORT_ROOT`` wins over the file."""
    path = Path(path) if path else config_path()
    data = read_yaml_mapping(path, "configuration file", ConfigError, " (set FINOPS_CONFIG or create it)")
    if os.environ.get("FINOPS_REPORT_ROOT"):
        data["report_root"] = os.environ["FINOPS_REPORT_ROOT"]
    try:
        return FinopsConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"configuration file {path} is invalid:\n{_format_errors(exc)}") from None
