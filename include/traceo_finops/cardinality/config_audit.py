"""Config audit of one Prometheus server from ``/api/v1/status/flags`` and ``/api/v1/status/config``.

Checks (``check_id``), each finding with the flag/config value as evidence and a monthly saving:

- ``wal_compression_off``: ``--storage.tsdb.wal-compression=false`` (agent mode:
  ``--storage.agent.wal-compression``).
- ``local_retention_beyond_need``: the server remote-writes to Mimir (a ``remote_write`` URL ending in
  ``/api/v1/push``, or ``/api/prom/push`` as Grafana Cloud and older Cortex spell it) yet keeps more local
  history than needed: more than ``min_local_retention`` (default 2 d) and more than the longest range
  any of its rules reads (``[1d]``, ``offset``, subqueries; from ``rule_queries``).
- ``scrape_interval_below_min``: ``global.scrape_interval`` or a job's ``scrape_interval`` under
  ``min_scrape_interval`` (default 15 s).
- ``ha_pair_without_dedup``: an ``external_labels`` name that marks an HA replica (``__replica__``,
  ``replica``, ``prometheus_replica``, anything containing ``replica``) on a server that remote-writes
  to Mimir, without what Mimir's HA tracker deduplicates on by default: a ``__replica__`` label plus a
  ``cluster`` label. Both replicas' series are then stored (and billed) twice.

- ``tenant_without_series`` (Mimir, from the census rather than flags): Mimir's cardinality API counts
  no series at all for a configured tenant. Mimir accepts any valid tenant ID and answers an unknown one
  with empty counts, so a misspelled tenant looks exactly like a healthy empty one: the finding names
  the tenant and says "no series: misspelled tenant?" instead of letting the run pass as an empty
  success. With ``count_method: active`` it also says how many series the ingesters still hold in
  memory (writes stopped, or a tenant that only receives rule results now and then).

What one server's config and flags cannot show, and is not claimed: a tenant's own HA-tracker label
names (``ha_replica_label``/``ha_cluster_label``) or whether the tracker is on; two servers scraping
the same job without any replica label; Thanos deduplication (query time or compactor); queries from
Grafana that need local history. A job is matched to its series through the ``job`` label of
``scrape_samples_post_metric_relabeling``, i.e. assuming relabelling leaves ``job`` = ``job_name``.

Saving model (monthly USD; ESTIMATES for ranking, not a bill). Inputs come from the price table
(:class:`AuditPrices`) and from the server (:class:`ServerFacts`):

- scrape interval i → m (m = ``min_scrape_interval``) for a job with S series: samples/s drop by
  ``d = S * (1/i - 1/m)`` (10 s → 15 s: a third). That frees Mimir distributor cores ``d /
  distributor_samples_per_second_per_core`` and memory ``d / distributor_samples_per_second_per_gb x
  memory_headroom``, and ingester CPU, which the capacity guide sizes per series at a 15 s interval and
  which scales with the sample rate: ``S x replication_factor / ingester_series_per_core x 15 s x (1/i -
  1/m)`` cores. Cores x ``compute.vcpu_hour`` + GiB x ``compute.gib_hour``, x 730 h. Ingester memory is
  per series and does not change.
- HA pair without dedup: the duplicate copy of this replica's head series, priced at
  ``metrics.self_hosted.per_1k_series_month``.
- local retention r → n days (n = max(min_local_retention, longest rule range)): disk bytes per day =
  samples/s x 86,400 x 1.5 bytes (Prometheus storage docs: "on average … only around 1-2 bytes per
  sample"), times (r - n) days, at the disk price.
- WAL compression: the WAL holds ~3 h of samples (the head's 2-3 h range, docs: "at least two hours of
  raw data") at ~13 bytes per uncompressed sample record (series-ref varint ~4 B, timestamp delta ~1 B,
  8 B value; Robust Perception, "How much space does the WAL take up"); Snappy compression halves it
  ("you can expect the size of the WAL to be halved with little extra CPU load", storage docs). Mostly
  an I/O and disk-size gain: small dollars.

Disk is priced at ``compute.disk_gb_month`` if the price table has that figure, or at the
``disk_gb_month`` given to :meth:`AuditPrices.from_table`; without either, the disk-based savings are 0
and ``saving_model`` says so. Samples/s = Σ over jobs of series / scrape interval (``ServerFacts``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import promql_parser
import pyarrow as pa
import yaml

from traceo_finops.cardinality.collect import CENSUS_MARK
from traceo_finops.cardinality.errors import ConfigAuditError
from traceo_finops.pricing import HOURS_PER_MONTH, PriceTable
from traceo_finops.prometheus import PrometheusClient, sample_int
from traceo_finops.prometheus.promql import LOOKBACK_DELTA, parse_duration
from traceo_finops.prometheus.promql import format_duration as show_duration
from traceo_finops.quality import between, not_null, one_of, unique_together
from traceo_finops.reports import WINDOW_COLUMNS, Dataset

log = logging.getLogger(__name__)

CHECK_WAL = "wal_compression_off"
CHECK_RETENTION = "local_retention_beyond_need"
CHECK_SCRAPE = "scrape_interval_below_min"
CHECK_HA = "ha_pair_without_dedup"
CHECK_NO_SERIES = "tenant_without_series"
CHECK_IDS = (CHECK_WAL, CHECK_RETENTION, CHECK_SCRAPE, CHECK_HA, CHECK_NO_SERIES)
SEVERITIES = ("low", "medium", "high")

MIN_SCRAPE_INTERVAL = timedelta(seconds=15)
MIN_LOCAL_RETENTION = timedelta(days=2)  # rules up to [1d], plus a day to debug locally
DEFAULT_RETENTION = timedelta(days=15)  # Prometheus' default when neither time nor size is set
DEFAULT_SCRAPE_INTERVAL = timedelta(minutes=1)  # Prometheus' global default
MIMIR_PUSH_PATHS = ("/api/v1/push", "/api/prom/push")
REPLICA_LABELS = ("__replica__", "replica", "prometheus_replica")
MIMIR_HA_REPLICA = "__replica__"  # -distributor.ha-tracker.replica default
MIMIR_HA_CLUSTER = "cluster"  # -distributor.ha-tracker.cluster default
DISK_PRICE_PATH = "compute.disk_gb_month"

# Model constants (sources in the module docstring).
BLOCK_BYTES_PER_SAMPLE = 1.5
WAL_BYTES_PER_SAMPLE = 13.0
WAL_HOURS = 3.0
WAL_COMPRESSION_RATIO = 0.5
SECONDS_PER_DAY = 86_400
BYTES_PER_GB = 1e9

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTPE]?i?B)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5, "E": 1024**6}


@dataclass(frozen=True)
class ConfigFinding:
    source: str
    tenant: str
    check_id: str  # one of CHECK_IDS
    severity: str  # low | medium | high
    subject: str  # what is concerned: a flag, "global", "job <name>", "external_labels"
    evidence: str  # the flag/config values that show it
    recommendation: str
    monthly_saving_usd: float  # estimate, >= 0 (see the module docstring)
    saving_model: str  # how the estimate was made, or why it is 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class ServerFacts:
    """Load figures measured on the server, for the savings (absent figures make savings 0)."""

    head_series: int | None = None
    series_by_job: dict[str, int] = field(default_factory=dict)  # job label -> samples per scrape


@dataclass(frozen=True)
class AuditPrices:
    """The price-table figures the saving model needs (``from_table``)."""

    vcpu_hour: float
    gib_hour: float
    series_month_per_1k: float
    replication_factor: float
    ingester_series_per_core: float
    distributor_samples_per_second_per_core: float
    distributor_samples_per_second_per_gb: float
    memory_headroom: float
    model_scrape_interval_s: float
    disk_gb_month: float | None = None
    disk_source: str = ""

    @classmethod
    def from_table(cls, table: PriceTable, disk_gb_month: float | None = None) -> AuditPrices:
        s = "metrics.self_hosted."
        disk_source = "given by the caller" if disk_gb_month is not None else ""
        if disk_gb_month is None and DISK_PRICE_PATH in table.figures:
            disk_gb_month, disk_source = table.value(DISK_PRICE_PATH), table.source_of(DISK_PRICE_PATH)
        return cls(
            vcpu_hour=table.vcpu_hour, gib_hour=table.gib_hour,
            series_month_per_1k=table.series_month_per_1k("self_hosted"),
            replication_factor=table.value(s + "replication_factor"),
            ingester_series_per_core=table.value(s + "ingester_series_per_core"),
            distributor_samples_per_second_per_core=table.value(s + "distributor_samples_per_second_per_core"),
            distributor_samples_per_second_per_gb=table.value(s + "distributor_samples_per_second_per_gb"),
            memory_headroom=table.value(s + "memory_headroom"),
            model_scrape_interval_s=table.value(s + "scrape_interval_seconds"),
            disk_gb_month=disk_gb_month, disk_source=disk_source,
        )


# ---- parsing --------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """A Prometheus byte size (``0B``, ``512MB``, ``10GiB``; base 1024 like Prometheus) in bytes."""
    match = _SIZE.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f"not a Prometheus byte size: {text!r}")
    unit = (match.group(2) or "").upper().replace("I", "")
    return int(float(match.group(1)) * _SIZE_UNITS[unit[:-1] if unit.endswith("B") else unit])


def longest_lookback(expression: str, lookback_delta: timedelta = LOOKBACK_DELTA) -> timedelta:
    """How far back before its evaluation time ``expression`` reads (ranges, offsets, subqueries).

    ``@`` modifiers pin absolute times and are ignored (they read a fixed point, not a window).
    Raises ``ValueError`` if it does not parse.
    """
    try:
        ast = promql_parser.parse(expression)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"cannot parse {expression!r}: {exc}") from None
    return _reach(ast, lookback_delta)


def _reach(node: Any, delta: timedelta) -> timedelta:
    zero = timedelta(0)
    if isinstance(node, promql_parser.MatrixSelector):
        return max(zero, node.vector_selector.offset or zero) + (node.range or zero)
    if isinstance(node, promql_parser.VectorSelector):
        return max(zero, node.offset or zero) + delta
    if isinstance(node, promql_parser.SubqueryExpr):
        return max(zero, node.offset or zero) + (node.range or zero) + _reach(node.expr, delta)
    children: list[Any] = []
    if isinstance(node, promql_parser.BinaryExpr):
        children = [node.lhs, node.rhs]
    elif isinstance(node, promql_parser.Call):
        children = list(node.args)
    elif isinstance(node, promql_parser.AggregateExpr):
        children = [node.expr] + ([node.param] if node.param is not None else [])
    elif isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr):
        children = [node.expr]
    return max((_reach(c, delta) for c in children), default=zero)


def load_config(config: str | Mapping[str, Any], source: str = "") -> dict[str, Any]:
    """``/api/v1/status/config`` YAML text (or an already parsed mapping) as a dict."""
    if isinstance(config, Mapping):
        return dict(config)
    try:
        data = yaml.safe_load(config) if config else {}
    except yaml.YAMLError as exc:
        raise ConfigAuditError(f"source {source!r}: the configuration is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigAuditError(f"source {source!r}: the configuration is not a YAML mapping")
    return data


# ---- the audit --------------------------------------------------------------------------------------


def audit_config(source: str, tenant: str, flags: Mapping[str, str], config: str | Mapping[str, Any],
                 prices: AuditPrices, facts: ServerFacts | None = None, *, rule_queries: Iterable[str] = (),
                 min_scrape_interval: timedelta = MIN_SCRAPE_INTERVAL,
                 min_local_retention: timedelta = MIN_LOCAL_RETENTION) -> list[ConfigFinding]:
    """Every finding for one server, from its flags and loaded config; pure (no network)."""
    cfg = load_config(config, source)
    facts = facts or ServerFacts()
    ctx = _Context(source, tenant, flags, cfg, prices, facts, min_scrape_interval)
    findings = [*_wal(ctx), *_retention(ctx, rule_queries, min_local_retention), *_scrape_intervals(ctx), *_ha(ctx)]
    findings.sort(key=lambda f: (-SEVERITIES.index(f.severity), -f.monthly_saving_usd, f.check_id, f.subject))
    return findings


@dataclass
class _Context:
    source: str
    tenant: str
    flags: Mapping[str, str]
    cfg: dict[str, Any]
    prices: AuditPrices
    facts: ServerFacts
    min_interval: timedelta

    def finding(self, check: str, severity: str, subject: str, evidence: str, recommendation: str,
                saving: float, model: str) -> ConfigFinding:
        return ConfigFinding(self.source, self.tenant, check, severity, subject, evidence, recommendation,
                             round(max(0.0, saving), 4), model)

    @property
    def agent(self) -> bool:
        return "agent" in self.flags.get("enable-feature", "").split(",")

    @property
    def global_interval(self) -> timedelta:
        raw = (self.cfg.get("global") or {}).get("scrape_interval")
        return parse_duration(raw) if raw else DEFAULT_SCRAPE_INTERVAL

    def jobs(self) -> list[tuple[str, timedelta]]:
        out = []
        for job in self.cfg.get("scrape_configs") or []:
            if isinstance(job, Mapping) and job.get("job_name"):
                raw = job.get("scrape_interval")
                out.append((str(job["job_name"]), parse_duration(raw) if raw else self.global_interval))
        return out

    def mimir_remote_writes(self) -> list[str]:
        urls = [str(rw.get("url", "")) for rw in self.cfg.get("remote_write") or [] if isinstance(rw, Mapping)]
        return [u for u in urls if urlsplit(u).path.rstrip("/").endswith(MIMIR_PUSH_PATHS)]

    def samples_per_second(self) -> float | None:
        """Σ series / interval over the jobs the server reports series for; None without figures."""
        if not self.facts.series_by_job:
            return None
        intervals = dict(self.jobs())
        total = 0.0
        for job, series in self.facts.series_by_job.items():
            interval = intervals.get(job, self.global_interval)
            total += series / max(interval.total_seconds(), 0.001)
        return total

    def disk_usd(self, gb: float) -> tuple[float, str]:
        p = self.prices
        if p.disk_gb_month is None:
            return 0.0, (f"{gb:,.1f} GB of disk; not priced: the price table has no {DISK_PRICE_PATH} "
                         "figure (add one, e.g. your block-storage $/GB-month)")
        return gb * p.disk_gb_month, f"{gb:,.1f} GB of disk x ${p.disk_gb_month:g}/GB-month ({p.disk_source})"


def _wal(ctx: _Context) -> list[ConfigFinding]:
    flag = "storage.agent.wal-compression" if ctx.agent else "storage.tsdb.wal-compression"
    value = ctx.flags.get(flag)
    if value is None or value.strip().lower() != "false":
        return []
    rate = ctx.samples_per_second()
    if rate is None:
        saving, model = 0.0, "not estimated: no series per job from the server"
    else:
        wal_gb = rate * WAL_HOURS * 3600 * WAL_BYTES_PER_SAMPLE / BYTES_PER_GB
        saving, disk = ctx.disk_usd(wal_gb * WAL_COMPRESSION_RATIO)
        model = (f"WAL ~ {rate:,.0f} samples/s x {WAL_HOURS:g} h x {WAL_BYTES_PER_SAMPLE:g} B = {wal_gb:,.2f} GB "
                 f"uncompressed; compression saves half: {disk}")
    return [ctx.finding(CHECK_WAL, "low", f"flag {flag}", f"{flag}={value}",
                        f"Set --{flag}=true (the default since Prometheus 2.20): Snappy roughly halves the WAL's "
                        "size and write I/O for little CPU.", saving, model)]


def effective_retention(flags: Mapping[str, str]) -> tuple[timedelta | None, int | None, str]:
    """(time retention or None = unlimited, size retention in bytes or None, the evidence text)."""
    raw_time = flags.get("storage.tsdb.retention.time", "0s") or "0s"
    raw_old = flags.get("storage.tsdb.retention", "0s") or "0s"
    raw_size = flags.get("storage.tsdb.retention.size", "0B") or "0B"
    time_ = parse_duration(raw_time)
    if parse_duration(raw_old):  # the deprecated flag wins when set, as in Prometheus 2.x
        time_ = parse_duration(raw_old)
    size = parse_size(raw_size)
    evidence = f"storage.tsdb.retention.time={raw_time}, storage.tsdb.retention.size={raw_size}"
    if parse_duration(raw_old):
        evidence += f", storage.tsdb.retention={raw_old} (deprecated flag, takes precedence)"
    if not time_ and not size:
        return DEFAULT_RETENTION, None, evidence + f" (neither set: default {show_duration(DEFAULT_RETENTION)})"
    return (time_ or None), (size or None), evidence


def _retention(ctx: _Context, rule_queries: Iterable[str], minimum: timedelta) -> list[ConfigFinding]:
    writes = ctx.mimir_remote_writes()
    if ctx.agent or not writes:
        return []
    time_, size, evidence = effective_retention(ctx.flags)
    longest, unparsable = timedelta(0), 0
    for q in rule_queries:
        try:
            longest = max(longest, longest_lookback(q))
        except ValueError:
            unparsable += 1
    need = max(minimum, timedelta(days=math.ceil(longest / timedelta(days=1))))  # whole days
    rate = ctx.samples_per_second()
    per_day_gb = None if rate is None else rate * SECONDS_PER_DAY * BLOCK_BYTES_PER_SAMPLE / BYTES_PER_GB
    if time_ is not None:
        held = time_
    elif size is not None and per_day_gb:
        held = timedelta(days=size / BYTES_PER_GB / per_day_gb)  # size-only: days the size holds
    else:
        held = None
    if held is not None and held <= need:
        return []
    rules_note = f"; longest rule range {show_duration(longest)}" if longest else ""
    if unparsable:
        rules_note += f" ({unparsable} rule queries did not parse and were not measured)"
    evidence += f"; remote_write to {', '.join(writes)}{rules_note}"
    if held is None or per_day_gb is None:
        saving, model = 0.0, "not estimated: no series per job from the server" if rate is None else \
            "not estimated: size-only retention and no ingestion rate"
    else:
        excess = (held - need) / timedelta(days=1)
        saving, disk = ctx.disk_usd(excess * per_day_gb)
        model = (f"{rate:,.0f} samples/s x 86,400 s x {BLOCK_BYTES_PER_SAMPLE:g} B = {per_day_gb:,.2f} GB/day, "
                 f"x {excess:,.1f} days beyond {show_duration(need)}: {disk}")
    return [ctx.finding(CHECK_RETENTION, "medium", "flag storage.tsdb.retention.time", evidence,
                        f"Mimir keeps the long-term copy: set --storage.tsdb.retention.time={show_duration(need)} "
                        "(covers every local rule's range) once dashboards read history from Mimir.",
                        saving, model)]


def _scrape_saving(ctx: _Context, series: int, interval: timedelta) -> tuple[float, str]:
    p = ctx.prices
    i, m = interval.total_seconds(), ctx.min_interval.total_seconds()
    if i <= 0:
        return 0.0, "not estimated: zero interval"
    d = series * (1 / i - 1 / m)
    dist_cores = d / p.distributor_samples_per_second_per_core
    ingest_cores = series * p.replication_factor / p.ingester_series_per_core * p.model_scrape_interval_s * (
        1 / i - 1 / m)
    gib = d / p.distributor_samples_per_second_per_gb * p.memory_headroom * BYTES_PER_GB / 2**30
    usd = ((dist_cores + ingest_cores) * p.vcpu_hour + gib * p.gib_hour) * HOURS_PER_MONTH
    return usd, (f"{series:,} series: {d:,.1f} fewer samples/s -> {dist_cores + ingest_cores:.4f} cores "
                 f"(distributor {dist_cores:.4f}, ingester {ingest_cores:.4f}) and {gib:.4f} GiB of the Mimir "
                 f"write path at ${p.vcpu_hour:g}/vCPU-h and ${p.gib_hour:g}/GiB-h x {HOURS_PER_MONTH} h")


def _severity_for_interval(interval: timedelta) -> str:
    return "high" if interval <= timedelta(seconds=5) else "medium"


def _scrape_intervals(ctx: _Context) -> list[ConfigFinding]:
    out = []
    low = show_duration(ctx.min_interval)
    glob = ctx.global_interval
    slow_jobs = [(job, iv) for job, iv in ctx.jobs() if iv < ctx.min_interval]
    if glob < ctx.min_interval:
        inheriting = [job for job, iv in slow_jobs if iv == glob]
        out.append(ctx.finding(
            CHECK_SCRAPE, _severity_for_interval(glob), "global",
            f"global.scrape_interval={show_duration(glob)}" + (f" (jobs at that interval: {', '.join(inheriting)})"
                                                               if inheriting else ""),
            f"Raise global.scrape_interval to {low}; give a job a shorter interval only where a dashboard or "
            "alert needs it.", 0.0, "counted in the per-job findings"))
    for job, iv in slow_jobs:
        series = ctx.facts.series_by_job.get(job)
        if series is None:
            saving, model = 0.0, "not estimated: the server reports no series for this job"
        else:
            saving, model = _scrape_saving(ctx, series, iv)
        evidence = f"scrape_configs[job_name={job}].scrape_interval={show_duration(iv)}"
        if series is not None:
            evidence += f" ({series:,} samples per scrape)"
        out.append(ctx.finding(
            CHECK_SCRAPE, _severity_for_interval(iv), f"job {job}", evidence,
            f"Scrape job {job} every {low} (cuts its samples by {1 - iv / ctx.min_interval:.0%}); check that no "
            "alert needs the faster resolution (rate windows must stay >= 4x the interval).", saving, model))
    return out


def _ha(ctx: _Context) -> list[ConfigFinding]:
    external = (ctx.cfg.get("global") or {}).get("external_labels") or {}
    replicas = sorted(k for k in external if k in REPLICA_LABELS or "replica" in str(k).lower())
    writes = ctx.mimir_remote_writes()
    if not replicas or not writes:
        return []
    has_cluster = MIMIR_HA_CLUSTER in external
    if MIMIR_HA_REPLICA in replicas and has_cluster:
        return []
    shown = ", ".join(f"{k}={external[k]!r}" for k in sorted(external))
    missing = [name for name, ok in ((MIMIR_HA_REPLICA, MIMIR_HA_REPLICA in replicas), (MIMIR_HA_CLUSTER, has_cluster))
               if not ok]
    evidence = (f"external_labels {{{shown}}}; remote_write to {', '.join(writes)}; missing Mimir's default "
                f"HA-tracker label(s): {', '.join(missing)}")
    head = ctx.facts.head_series
    if head is None:
        saving, model = 0.0, "not estimated: head series unknown"
    else:
        saving = head / 1000 * ctx.prices.series_month_per_1k
        model = (f"{head:,} head series stored a second time by Mimir x "
                 f"${ctx.prices.series_month_per_1k:g}/1k series-month (self-hosted model)")
    return [ctx.finding(
        CHECK_HA, "medium" if has_cluster else "high", "external_labels", evidence,
        f"Label both replicas with the same '{MIMIR_HA_CLUSTER}' and a distinct '{MIMIR_HA_REPLICA}' external label "
        "and enable Mimir's HA tracker (-distributor.ha-tracker.enable=true and accept_ha_samples for the "
        "tenant) — or, if this tenant sets ha_replica_label/ha_cluster_label to these names, ignore this finding.",
        saving, model)]


def tenant_without_series(source: str, tenant: str, count_method: str,
                          inmemory_series: int | None = None) -> ConfigFinding:
    """The finding for a Mimir tenant whose census counted no series (``tenant`` "" = the connection's own)."""
    who = tenant or "anonymous"
    evidence = (f"Mimir's cardinality API (label_values of __name__, count_method={count_method}) counts 0 series "
                f"for tenant {who!r} of source {source!r}")
    if count_method == "active" and inmemory_series:
        evidence += (f"; the ingesters still hold {inmemory_series:,} in-memory series for it, none written within "
                     "-ingester.active-series-metrics-idle-timeout (writes stopped?)")
    elif count_method == "active" and inmemory_series == 0:
        evidence += "; none in memory either"
    recommendation = (f"no series: misspelled tenant? Compare {who!r} with the X-Scope-OrgID your remote_write "
                      "senders use (Mimir accepts any valid tenant ID and answers an unknown one with empty counts), "
                      "then fix or remove it in sources[].tenants; nothing of this tenant was audited.")
    return ConfigFinding(source, tenant, CHECK_NO_SERIES, "high", f"tenant {who}", evidence, recommendation, 0.0,
                         "not a saving: no series are stored under this tenant")


# ---- from a live server -------------------------------------------------------------------------------

SERIES_BY_JOB = "sum by (job) (scrape_samples_post_metric_relabeling)"


def server_facts(client: PrometheusClient, at: datetime, head_series: int | None = None) -> ServerFacts:
    """Head series (``/api/v1/status/tsdb`` unless given) and samples per scrape by job at ``at``."""
    if head_series is None:
        head_series = int(client.tsdb_status()["headStats"]["numSeries"])
    by_job = {}
    for sample in client.query(CENSUS_MARK + SERIES_BY_JOB, time=at):
        job = sample.get("metric", {}).get("job")
        if job is not None:
            by_job[job] = sample_int(sample)
    return ServerFacts(head_series=head_series, series_by_job=by_job)


def audit_source(client: PrometheusClient, source: str, at: datetime, prices: AuditPrices, tenant: str = "", *,
                 head_series: int | None = None, min_scrape_interval: timedelta = MIN_SCRAPE_INTERVAL,
                 min_local_retention: timedelta = MIN_LOCAL_RETENTION) -> list[ConfigFinding]:
    """Fetch flags, config, rules and load figures of a Prometheus source and audit them.

    A Mimir source has no flags/config endpoints: it yields no findings (logged).
    """
    if client.spec.flavor == "mimir":
        log.info("source %s: the config audit covers Prometheus servers, not Mimir; skipped", source)
        return []
    flags = client.flags()
    config = client.config_yaml()
    queries = [r.get("query", "") for g in client.rules() for r in g.get("rules") or []]
    facts = server_facts(client, at, head_series)
    findings = audit_config(source, tenant, flags, config, prices, facts, rule_queries=queries,
                            min_scrape_interval=min_scrape_interval, min_local_retention=min_local_retention)
    log.info("source %s: %d config findings, about $%.2f/month", source, len(findings),
             sum(f.monthly_saving_usd for f in findings))
    return findings


def audit_config_rows(client: PrometheusClient, source: str, tenant: str, at: datetime,
                      prices: PriceTable | AuditPrices, *, window_start: datetime,
                      disk_gb_month: float | None = None) -> list[dict[str, object]]:
    """:func:`audit_source` as ``config_findings`` rows for the window ``[window_start, at]`` (DAG task)."""
    audit_prices = prices if isinstance(prices, AuditPrices) else AuditPrices.from_table(prices, disk_gb_month)
    return config_finding_rows(audit_source(client, source, at, audit_prices, tenant), window_start, at)


# ---- dataset --------------------------------------------------------------------------------------------

CONFIG_FINDINGS = Dataset(
    name="config_findings",
    version=1,
    description="Configuration findings per source/tenant (Prometheus flags and config, Mimir tenants without "
                "series), with evidence and an estimated saving.",
    schema=pa.schema([
        pa.field("source", pa.string(), nullable=False),
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("check_id", pa.string(), nullable=False),
        pa.field("severity", pa.string(), nullable=False),
        pa.field("subject", pa.string(), nullable=False),
        pa.field("evidence", pa.string(), nullable=False),
        pa.field("recommendation", pa.string(), nullable=False),
        pa.field("monthly_saving_usd", pa.float64(), nullable=False),  # estimate, see saving_model
        pa.field("saving_model", pa.string(), nullable=False),
        *WINDOW_COLUMNS,
    ]),
    expectations=(
        *not_null("source", "tenant", "check_id", "severity", "subject", "evidence", "recommendation",
                  "monthly_saving_usd", "saving_model"),
        one_of("check_id", CHECK_IDS),
        one_of("severity", SEVERITIES),
        between("monthly_saving_usd", min_value=0),
        unique_together("source", "tenant", "check_id", "subject"),
    ),
)


def config_finding_rows(findings: Sequence[ConfigFinding], window_start: object,
                        window_end: object) -> list[dict[str, object]]:
    """Rows of ``config_findings`` for one run's window."""
    return [{**f.as_dict(), "window_start": window_start, "window_end": window_end} for f in findings]
