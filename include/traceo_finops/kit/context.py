"""What every step of every workflow is handed: the run context and its targets.

A :class:`RunContext` is built once per task (by ``airflow_adapter.run_context``, or directly in
tests): the configuration, the run's identity, its one :class:`~traceo_finops.window.Window`,
its params, and — built only when first used — the report store, the price table and the
Slack poster. A :class:`Target` is one thing a run works on (a Prometheus source, a Mimir
tenant, a bucket, a batch of namespaces): it travels between tasks as a plain dict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from traceo_finops.prometheus.spec import Flavor
from traceo_finops.shapes import Json, JsonObject, S3Client
from traceo_finops.window import Window

if TYPE_CHECKING:
    from traceo_finops.config import FinopsConfig
    from traceo_finops.pricing import PriceTable
    from traceo_finops.prometheus import SourceSpec
    from traceo_finops.reports import ReportStore, S3Options
    from traceo_finops.slack import Poster


# A scheduled run starts minutes after its window ends, a queued one perhaps hours later; a live read
# more than this after the window's end belongs to a backfill or a rerun of a past day.
LIVE_READ_SLACK = timedelta(hours=6)


class TargetKind(StrEnum):
    SOURCE = "source"  # a Prometheus server (or a Mimir cluster without tenants)
    TENANT = "tenant"  # one tenant of a Mimir cluster
    BUCKET = "bucket"  # one metric block bucket
    BATCH = "batch"  # a slice of a source's work (e.g. a batch of namespaces)


@dataclass(frozen=True)
class ConnectionFields:
    """The parts of an Airflow connection the library reads (no Airflow type here)."""

    host: str | None = None
    port: int | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = None
    extra: Mapping[str, Json] = field(default_factory=dict)  # the connection's extra, decoded


class ConnectionLookup(Protocol):
    def __call__(self, conn_id: str) -> ConnectionFields: ...


@dataclass(frozen=True)
class Target:
    """One source, tenant, bucket or batch a run works on; ``tenant`` is ``""`` when there is none."""

    kind: TargetKind
    source: str = ""
    tenant: str = ""
    bucket: str = ""
    conn_id: str = ""
    flavor: Flavor = Flavor.PROMETHEUS
    # What a batch carries (e.g. its namespaces and query resolution); JSON-safe.
    detail: Mapping[str, Json] = field(default_factory=dict, hash=False)

    @property
    def label(self) -> str:
        """How logs, the Airflow grid and the ``run_targets`` dataset name this target."""
        if self.kind is TargetKind.BUCKET:
            return f"bucket {self.bucket}"
        name = f"{self.source}/{self.tenant}" if self.tenant else self.source
        if self.kind is TargetKind.BATCH and self.detail.get("name"):
            return f"{name} {self.detail['name']}"
        return name

    @property
    def owner(self) -> Target:
        """The source/tenant (or bucket) a batch belongs to: what coverage is counted in."""
        if self.kind is TargetKind.BATCH:
            return Target(TargetKind.TENANT if self.tenant else TargetKind.SOURCE, self.source, self.tenant,
                          conn_id=self.conn_id, flavor=self.flavor)
        return self

    def batch(self, name: str, **detail: Json) -> Target:
        """A batch of this source/tenant's work."""
        return Target(TargetKind.BATCH, self.source, self.tenant, conn_id=self.conn_id, flavor=self.flavor,
                      detail={"name": name, **detail})

    def spec(self, connections: ConnectionLookup) -> SourceSpec:
        """The Prometheus/Mimir source spec of this target, from its connection (tenant and flavor from here)."""
        from traceo_finops.prometheus import SourceSpec

        if self.kind is TargetKind.BUCKET:
            raise ValueError(f"{self.label} is not a Prometheus source")
        conn = connections(self.conn_id)
        extra = dict(conn.extra or {})
        if self.tenant:
            extra["tenant"] = self.tenant
        return SourceSpec.from_connection_fields(
            name=self.source, host=conn.host or "", port=conn.port, schema=conn.schema, login=conn.login,
            password=conn.password, extra=extra, flavor=self.flavor.value)

    def as_dict(self) -> JsonObject:
        """JSON-safe form for XCom; ``label`` is included for map-index templates."""
        return {"kind": self.kind.value, "source": self.source, "tenant": self.tenant, "bucket": self.bucket,
                "conn_id": self.conn_id, "flavor": self.flavor.value, "detail": dict(self.detail),
                "label": self.label}

    @classmethod
    def from_dict(cls, data: Mapping[str, Json]) -> Target:
        return cls(TargetKind(data["kind"]), str(data.get("source", "")), str(data.get("tenant", "")),
                   str(data.get("bucket", "")), str(data.get("conn_id", "")), Flavor(data.get("flavor", "prometheus")),
                   dict(data.get("detail") or {}))


def slug(source: str, tenant: str = "") -> str:
    """``source`` or ``source-tenant``: how a source/tenant is named in file names beside a report."""
    return "-".join(p for p in (source, tenant) if p)


def source_targets(cfg: FinopsConfig) -> list[Target]:
    """One target per Prometheus source and per Mimir tenant, in configuration order."""
    out = []
    for s in cfg.sources:
        if s.tenants:
            out += [Target(TargetKind.TENANT, s.name, t, conn_id=s.conn_id, flavor=s.flavor) for t in s.tenants]
        else:
            out.append(Target(TargetKind.SOURCE, s.name, conn_id=s.conn_id, flavor=s.flavor))
    return out


def bucket_targets(cfg: FinopsConfig) -> list[Target]:
    return [Target(TargetKind.BUCKET, bucket=b.name, conn_id=b.conn_id) for b in cfg.buckets]


def coverage(done: Iterable[Target], failed: Iterable[Target]) -> str:
    """``"2 of 3 sources"``: how much of the run's scope a report covers (batches count as their owner)."""
    ok_owners = {t.owner for t in done}
    failed_owners = {t.owner for t in failed}
    everything = ok_owners | failed_owners
    complete = ok_owners - failed_owners
    kinds = {t.kind for t in everything}
    noun = "buckets" if kinds == {TargetKind.BUCKET} else "tenants" if kinds == {TargetKind.TENANT} \
        else "sources" if TargetKind.BUCKET not in kinds else "targets"
    if len(everything) == 1:
        noun = noun.removesuffix("s")
    return f"{len(complete)} of {len(everything)} {noun}"


@dataclass
class RunContext:
    """The configuration, run identity, window and params of one task, with lazily built services."""

    cfg: FinopsConfig
    workflow: str  # the key under ``workflows`` in the configuration, e.g. "cardinality"
    dag_id: str
    run_id: str
    window: Window
    params: Mapping[str, Json] = field(default_factory=dict)  # the run's params (JSON values)
    try_number: int = 1
    connections: ConnectionLookup | None = None
    store_factory: Callable[[FinopsConfig], ReportStore] | None = None
    poster_factory: Callable[[str], Poster] | None = None
    # conn_id -> a boto3 S3 client; conn_id -> pyarrow S3FileSystem options (buckets, S3 Inventory).
    s3_client_factory: Callable[[str], S3Client] | None = None
    s3_options_factory: Callable[[str], S3Options] | None = None
    ui_url: str = ""  # the FinOps page in the Airflow UI ([api] base_url + /finops/); "" when not configured

    @property
    def settings(self) -> Any:
        """This workflow's settings (``workflows.<name>`` of the configuration).

        Its class depends on the run's workflow key, which no static type follows: typed code reads
        ``ctx.cfg.workflows.<name>`` (e.g. ``RightsizingSettings``) instead.
        """
        return getattr(self.cfg.workflows, self.workflow)

    @property
    def report_date(self) -> date:
        return self.window.report_date

    @cached_property
    def store(self) -> ReportStore:
        if self.store_factory is not None:
            return self.store_factory(self.cfg)
        from traceo_finops.reports import ReportStore

        return ReportStore(self.cfg.report_root_uri)

    @cached_property
    def prices(self) -> PriceTable:
        from traceo_finops.pricing import load_price_table

        return load_price_table(self.cfg.pricing.profile, self.cfg.pricing.overrides)

    @cached_property
    def poster(self) -> Poster:
        if self.poster_factory is None:
            raise RuntimeError("this run context has no Slack poster")
        return self.poster_factory(self.cfg.slack.conn_id)

    def s3_client(self, conn_id: str) -> S3Client:
        if self.s3_client_factory is None:
            raise RuntimeError("this run context has no S3 client factory")
        return self.s3_client_factory(conn_id)

    def s3_options(self, conn_id: str) -> S3Options:
        if self.s3_options_factory is None:
            raise RuntimeError("this run context has no S3 options factory")
        return self.s3_options_factory(conn_id)

    def spec(self, target: Target) -> SourceSpec:
        if self.connections is None:
            raise RuntimeError("this run context has no connection lookup")
        return target.spec(self.connections)

    def param(self, name: str, default: Json = None) -> Json:
        value = self.params.get(name, default)
        return default if value in (None, "") else value

    def post_to_slack(self) -> bool:
        return bool(self.cfg.slack.enabled and self.param("post_to_slack", True))

    def is_past_day(self, at: datetime | None = None) -> bool:
        """Whether the window ended long before ``at`` (now): a backfill or a rerun of a past day."""
        return (at or datetime.now(UTC)) - self.window.end > LIVE_READ_SLACK

    def live_read_note(self, what: str, at: datetime | None = None) -> str:
        """The ``run_targets`` note for ``what``, read live at ``at`` (now) although the window ended long ago.

        "" for a run read close to its window's end. A backfill cannot make a live API (Mimir's
        cardinality API, a bucket listing) answer for a past day: its rows say so instead.
        """
        at = at or datetime.now(UTC)
        if not self.is_past_day(at):
            return ""
        return (f"{what} read live at {at.replace(microsecond=0).isoformat()}, not at the window's end "
                f"{self.window.end.isoformat()}: a past day's value cannot be read back")


def lookback_of(cfg: FinopsConfig, workflow: str) -> timedelta:
    """The window length of a manual run of ``workflow`` (its ``lookback``, else ``default_lookback``)."""
    settings = getattr(cfg.workflows, workflow, None)
    value = getattr(settings, "lookback", None)
    return value if isinstance(value, timedelta) else cfg.default_lookback
