"""The one thin place where the domain library meets Airflow — and the workflow kit's DAG side.

DAG files import :func:`workflow_dag`, :func:`assets` and the ``*_step`` functions from here; each
step builds the task's :class:`~traceo_finops.kit.context.RunContext` once and calls the
workflow's own function in ``traceo_finops.<workflow>.workflow``. Here, and nowhere else in
``traceo_finops``, are Airflow imports: connections become the library's plain fields, the task
context becomes a run context, errors that no retry can fix become ``AirflowFailException``,
and the slack provider's webhook hook becomes a poster.

Only ``airflow.sdk`` and the standard library are imported at module load: DAG files import this
module at parse time.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from airflow.sdk import Asset, BaseHook, CronDataIntervalTimetable, Param, XComArg, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from traceo_finops.shapes import Json, JsonObject, S3Client

if TYPE_CHECKING:
    from airflow.sdk import Connection, Context
    from slack_sdk.http_retry.handler import RetryHandler
    from slack_sdk.http_retry.request import HttpRequest
    from slack_sdk.http_retry.response import HttpResponse
    from slack_sdk.http_retry.state import RetryState

    from traceo_finops.config import FinopsConfig
    from traceo_finops.kit.context import ConnectionFields, RunContext
    from traceo_finops.kit.outcome import TargetResultDict
    from traceo_finops.kit.publish import Written
    from traceo_finops.prometheus import SourceSpec
    from traceo_finops.reports import ReportStore
    from traceo_finops.slack import Poster

log = logging.getLogger(__name__)

T = TypeVar("T")

# workflow key (``workflows.<key>`` in the configuration) -> package under traceo_finops
_PACKAGES = {"cardinality": "cardinality", "rightsizing": "rightsizing", "s3_tiering": "s3tiering",
             "recording_rules": "recording_rules", "cost_report": "cost_report", "slo": "slo"}
# "x-": Airflow leaves such URIs as they are; any other scheme makes Asset() load every provider's URI
# handlers at parse time (the amazon provider's imports boto3 into every DAG parse).
ASSET_SCHEME = "x-traceo-finops"


class ConnectionMissing(LookupError):
    """An Airflow connection named in the configuration is not defined."""


# -- the DAG header ----------------------------------------------------------------------------------------
# The delay between retries is Airflow's own [core] default_task_retry_delay (300 s unless the deployment
# sets it), so an operator tunes it in one place for every DAG.
DEFAULT_ARGS: dict[str, str | int | timedelta] = {"owner": "traceo-finops", "retries": 2}


class DagArgs(TypedDict):
    """The ``@dag`` keyword arguments every workflow shares (:func:`workflow_dag`)."""

    dag_id: str
    start_date: datetime
    catchup: bool
    max_active_runs: int
    default_args: dict[str, str | int | timedelta]
    tags: list[str]
    doc_md: str | None
    params: dict[str, Param]


def daily() -> CronDataIntervalTimetable:
    """Every day at 00:00 UTC, each run covering the day before: ``[d, d+1)``.

    An explicit data-interval timetable: on Airflow 3.3 defaults a cron string such as ``@daily``
    becomes a trigger timetable whose runs (and backfills) have no interval, and every report
    window comes from the interval.
    """
    return CronDataIntervalTimetable("0 0 * * *", timezone="UTC")


def weekly() -> CronDataIntervalTimetable:
    """Every Monday at 00:00 UTC, each run covering the week before."""
    return CronDataIntervalTimetable("0 0 * * 1", timezone="UTC")


def workflow_dag(dag_id: str, doc: str | None, *, tags: list[str],
                 params: Mapping[str, Param] | None = None) -> DagArgs:
    """The ``@dag`` arguments every workflow shares (the schedule is written in each DAG file)."""
    return {
        "dag_id": dag_id,
        "start_date": datetime(2026, 1, 1),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": DEFAULT_ARGS,
        "tags": ["finops", *tags],
        "doc_md": doc,
        "params": {"post_to_slack": Param(True, type="boolean",
                                          description="Post the digest to the slack_finops connection."),
                   **(params or {})},
    }


def assets(*datasets: str) -> list[Asset]:
    """The Airflow Assets of report datasets (task outlets): the Assets view shows who produces what."""
    return [Asset(name=f"finops.{name}", uri=f"{ASSET_SCHEME}://reports/{name}", group="finops")
            for name in datasets]


# -- connections ----------------------------------------------------------------------------------------
_SECRET_EXTRA_KEYS = ("password", "token", "secret", "authorization", "api_key", "headers", "aws_secret_access_key",
                      "aws_session_token")


def connection(conn_id: str) -> Connection:
    """The Airflow connection ``conn_id`` (env var, metadata DB or secrets backend), its secrets masked in logs."""
    from airflow.sdk.log import mask_secret

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        env = "AIRFLOW_CONN_" + conn_id.upper()
        raise ConnectionMissing(f"Airflow connection {conn_id!r} is not defined: set {env} or add it in the "
                                f"Airflow UI (Admin → Connections); see docs/connections.md") from None
    if conn.password:
        mask_secret(conn.password)
    for key, value in (conn.extra_dejson or {}).items():
        if value and any(word in key.lower() for word in _SECRET_EXTRA_KEYS):
            mask_secret(value)
    return conn


def connection_fields(conn_id: str) -> ConnectionFields:
    from traceo_finops.kit.context import ConnectionFields

    conn = connection(conn_id)
    return ConnectionFields(host=conn.host, port=conn.port, schema=conn.schema, login=conn.login,
                            password=conn.password, extra=dict(conn.extra_dejson or {}))


def prometheus_spec(conn_id: str, source_name: str, tenant: str | None = None,
                    flavor: str | None = None) -> SourceSpec:
    """A Prometheus/Mimir source spec from its ``http`` connection; ``tenant``/``flavor`` override the extra's."""
    from traceo_finops.kit.context import Target, TargetKind
    from traceo_finops.prometheus.spec import Flavor

    target = Target(TargetKind.TENANT if tenant else TargetKind.SOURCE, source_name, tenant or "", conn_id=conn_id,
                    flavor=Flavor(flavor or connection_fields(conn_id).extra.get("flavor", "prometheus")))
    return target.spec(connection_fields)


def s3_filesystem_options(conn_id: str) -> dict[str, str | None]:
    """pyarrow S3FileSystem options from an ``aws`` connection (keys, region, endpoint_url)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.sdk.log import mask_secret

    connection(conn_id)  # a clear error for a missing id, before boto's own
    hook = S3Hook(aws_conn_id=conn_id)
    creds = hook.get_credentials()
    for secret in (creds.secret_key, creds.token):
        if secret:
            mask_secret(secret)
    options: dict[str, str | None] = {"access_key": creds.access_key, "secret_key": creds.secret_key,
                               "session_token": creds.token}
    if hook.conn_region_name:
        options["region"] = hook.conn_region_name
    endpoint = hook.conn_config.endpoint_url
    if endpoint:
        scheme, _, rest = endpoint.partition("://")
        options["endpoint_override"] = rest or scheme
        options["scheme"] = scheme if rest else "https"
    return options


def report_store(cfg: FinopsConfig | None = None) -> ReportStore:
    """The report store of the configuration's ``report_root`` (S3 credentials from ``report_conn_id``)."""
    from traceo_finops.config import load_config
    from traceo_finops.reports import ReportStore

    cfg = cfg or load_config()
    root = cfg.report_root_uri
    if root.startswith("s3://"):
        return ReportStore(root, s3_options=s3_filesystem_options(cfg.report_conn_id))
    return ReportStore(root)


def slack_poster(conn_id: str) -> Poster:
    """The digest poster of connection ``conn_id``, retrying 429 (Retry-After), 5xx and connection errors.

    ``conn_type`` ``slackwebhook``: the slack provider's webhook hook, *at least once* (the run key in
    the footer makes a duplicate recognisable). ``conn_type`` ``slack`` (a bot token): the provider's
    ``SlackHook`` client posting into ``extra.channel`` with the run key in the message metadata,
    *exactly once* (see :class:`traceo_finops.slack.ChannelPoster`).

    The webhook URL is a secret (its path is the token), as is the bot token: slack_sdk logs the URL
    on retries and a relay may echo it in an error, so every log record of the HTTP clients and every
    error passes through :func:`traceo_finops.slack.scrub` first.
    """
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )

    from traceo_finops.slack import SlackError, SlackRejected, install_scrubber, scrub

    class AnyServerErrorRetryHandler(ServerErrorRetryHandler):
        # slack_sdk's handler retries only 500 and 503; a proxy in front of a webhook also says 502/504.
        def _can_retry(self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
                       error: Exception | None = None) -> bool:
            return response is not None and 500 <= response.status_code < 600

    conn = connection(conn_id)
    secrets = [conn.password] if conn.password else []  # the host is no secret (and a webhook path in it is scrubbed)
    # The hooks hand their client a logger; ours carries the scrub filter (a filter on "slack_sdk"
    # would not see records of its child loggers, nor of the hook's own "airflow.task.hooks…" logger).
    client_log = install_scrubber(secrets)
    retry_handlers: list[RetryHandler] = [RateLimitErrorRetryHandler(max_retry_count=5),
                                          AnyServerErrorRetryHandler(max_retry_count=4),
                                          ConnectionErrorRetryHandler(max_retry_count=3)]
    if conn.conn_type == "slack":
        return _slack_bot_poster(conn, retry_handlers, client_log, secrets)
    if conn.conn_type != "slackwebhook":
        from traceo_finops.config import ConfigError

        raise ConfigError(f"Slack connection {conn_id!r} has conn_type {conn.conn_type!r}: it must be 'slackwebhook' "
                          "(an incoming webhook, the token path in password) or 'slack' (a bot token in password, "
                          "the channel ID in extra.channel); see docs/connections.md")

    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    hook = SlackWebhookHook(slack_webhook_conn_id=conn_id, timeout=30, retry_handlers=retry_handlers,
                            logger=client_log)

    def post(text: str, blocks: list[JsonObject]) -> None:  # Block Kit blocks
        error = ""
        try:
            hook.send(text=text, blocks=blocks)
        except Exception as exc:  # the hook raises AirflowException with status and body
            error = scrub(str(exc), secrets) or type(exc).__name__
        if error:
            # Raised outside the except block, so no chained exception carries the unscrubbed text.
            rejected = re.search(r"status code: 4(?!29)\d\d", error, re.IGNORECASE)
            raise (SlackRejected if rejected else SlackError)(
                f"Slack connection {conn_id!r}: posting the digest failed: {error}")

    return post


def _slack_bot_poster(conn: Connection, retry_handlers: list[RetryHandler], client_log: logging.Logger,
                      secrets: list[str]) -> Poster:
    """A :class:`~traceo_finops.slack.ChannelPoster` on the slack provider's ``SlackHook`` client."""
    from airflow.providers.slack.hooks.slack import SlackHook

    from traceo_finops.config import ConfigError
    from traceo_finops.slack import ChannelPoster

    channel = str((conn.extra_dejson or {}).get("channel") or "").strip()
    if not re.fullmatch(r"[CGD][A-Z0-9]{6,}", channel):
        raise ConfigError(f"Slack connection {conn.conn_id!r} (a bot token) needs extra.channel set to the channel "
                          f"ID (e.g. C0123456789, from the channel's details), got {channel or 'nothing'!r}: "
                          "conversations.history, which keeps a digest from being posted twice, takes no names")
    hook = SlackHook(slack_conn_id=conn.conn_id, timeout=30, retry_handlers=retry_handlers, logger=client_log)
    return ChannelPoster(hook.client, channel, conn.conn_id, secrets)


def s3_client(conn_id: str) -> S3Client:
    """A boto3 S3 client from an ``aws`` connection (keys, region, extra ``endpoint_url``), via S3Hook."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    connection(conn_id)  # a clear error for a missing id, before boto's own
    return S3Hook(aws_conn_id=conn_id).get_conn()


# -- the run context and the steps ---------------------------------------------------------------------
def _permanent_errors() -> tuple[type[BaseException], ...]:
    from traceo_finops.config import ConfigError
    from traceo_finops.kit.outcome import PermanentError
    from traceo_finops.pricing import PricingError
    from traceo_finops.prometheus import PrometheusAuthError
    from traceo_finops.quality import DataQualityError
    from traceo_finops.reports import ReportRootUnwritable

    return (ConfigError, ConnectionMissing, PermanentError, PricingError, PrometheusAuthError, DataQualityError,
            ReportRootUnwritable)


def _fail_fast(call: Callable[[], T]) -> T:
    """Run ``call``; an error that no retry can fix fails the task at once (no retries, ~4 minutes saved)."""
    try:
        return call()
    except _permanent_errors() as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


def finops_page_url() -> str:
    """The FinOps page's URL from Airflow's ``[api] base_url`` ("" when the deployment has not set it)."""
    from airflow.sdk.configuration import conf

    from traceo_finops.ui import URL_PREFIX

    base = str(conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return f"{base}{URL_PREFIX}/" if base else ""


def run_context(workflow: str, context: Context | None = None) -> RunContext:
    """The running task's :class:`RunContext` for ``workflow`` (a key under ``workflows`` in the config)."""
    from traceo_finops.config import load_config
    from traceo_finops.kit.context import RunContext, lookback_of
    from traceo_finops.kit.outcome import PermanentError
    from traceo_finops.window import report_window

    ctx = context or get_current_context()
    cfg = load_config()
    ti = ctx.get("ti")
    try:
        window = report_window(*_interval(ctx), lookback_of(cfg, workflow))
    except ValueError as exc:
        raise PermanentError(f"run {ctx['run_id']}: {exc}") from None
    run = RunContext(cfg=cfg, workflow=workflow, dag_id=ctx["dag"].dag_id, run_id=ctx["run_id"], window=window,
                     params=dict(ctx.get("params") or {}), try_number=int(getattr(ti, "try_number", 1) or 1),
                     connections=connection_fields, store_factory=report_store, poster_factory=slack_poster,
                     # looked up at call time, so tests can wrap them
                     s3_client_factory=lambda conn_id: s3_client(conn_id),
                     s3_options_factory=lambda conn_id: s3_filesystem_options(conn_id), ui_url=finops_page_url())
    # A workflow may read another window than its report window (right-sizing: 14 days of history).
    custom = getattr(_workflow(workflow), "run_window", None)
    if custom is not None:
        run.window = custom(run)
    return run


def _interval(ctx: Context) -> tuple[datetime | None, datetime | None]:
    """The run's data interval; a manual or asset-triggered run reports on its lookback up to its logical date.

    Scheduled runs and backfills have the real interval of the data-interval timetable. A manual run
    of such a timetable is given the last complete interval, but someone who triggers a run by hand
    asks about "now" (or about the logical date they chose), so the configured lookback up to that
    instant decides — an empty interval, as :func:`~traceo_finops.window.report_window` reads it.
    """
    run = ctx.get("dag_run")
    run_type = str(getattr(getattr(run, "run_type", None), "value", getattr(run, "run_type", "")) or "")
    if run_type in ("manual", "asset_triggered"):
        at = ctx.get("logical_date") or getattr(run, "run_after", None)
        return at, at
    return ctx.get("data_interval_start"), ctx.get("data_interval_end") or ctx.get("logical_date")


def register_workflow(workflow: str, package: str) -> None:
    """Serve workflow key ``workflow`` from ``package`` (a dotted path holding a ``workflow`` module).

    The library's own workflows are in ``_PACKAGES``; this is for one that lives elsewhere (the
    example workflow of the tests, a plugin's).
    """
    _PACKAGES[workflow] = package


def _workflow(workflow: str) -> ModuleType:
    from traceo_finops.config import ConfigError

    if workflow not in _PACKAGES:
        raise ConfigError(f"unknown workflow {workflow!r} (known: {', '.join(sorted(_PACKAGES))})")
    package = _PACKAGES[workflow]
    return importlib.import_module(f"{package if '.' in package else 'traceo_finops.' + package}.workflow")


def step(workflow: str, name: str, *args: Json) -> Json:
    """Call ``traceo_finops.<workflow>.workflow.<name>(ctx, *args)`` with this task's run context.

    ``targets``, the first step of every workflow, first checks that the report root is writable: an
    unwritable root fails the run before any collection, not after it.
    """
    def run() -> Json:
        fn = getattr(_workflow(workflow), name)  # an unknown workflow is named before anything else runs
        ctx = run_context(workflow)
        if name == "targets":
            ctx.store.check_writable()
        return fn(ctx, *args)

    return _fail_fast(run)


def target_step(workflow: str, name: str, target: Mapping[str, Json], *args: Json) -> TargetResultDict:
    """One target's step under the failure policy: a failure is that target's recorded error, the run goes on."""
    from traceo_finops.kit.context import Target
    from traceo_finops.kit.outcome import run_target

    ctx = _fail_fast(lambda: run_context(workflow))
    fn = getattr(_workflow(workflow), name)
    tgt = Target.from_dict(target)
    return run_target(tgt, lambda: fn(ctx, tgt, *args), name)


def publish_step(workflow: str, *inputs: Json) -> Written:
    """Build the workflow's report from its targets' results and publish it as one committed set.

    A set the quality gate refuses publishes nothing (the previous report stays): Slack is alerted,
    naming the failed expectations, and the task fails without retries.
    """
    from traceo_finops.kit.digest import post_refusal
    from traceo_finops.kit.publish import publish
    from traceo_finops.quality import DataQualityError

    def run() -> Written:
        ctx = run_context(workflow)
        report, results = _workflow(workflow).build(ctx, *inputs)
        try:
            written = publish(ctx, report, results)
        except DataQualityError as exc:
            post_refusal(ctx, str(exc))
            raise
        _record_asset_events(written)
        return written

    return _fail_fast(run)


def _record_asset_events(written: Written) -> None:
    """Attach where each dataset went to its Asset event (shown in the Assets view)."""
    try:
        events = get_current_context()["outlet_events"]
    except (KeyError, RuntimeError):
        return
    for name, entry in (written.get("datasets") or {}).items():
        asset = assets(name)[0]
        try:
            events[asset].extra = {"uri": entry["uri"], "rows": entry["rows"], "report_date": written["report_date"],
                                   "run_id": written["run_id"], "coverage": written.get("coverage", "")}
        except (KeyError, TypeError, ValueError):
            continue  # not declared as an outlet of this task


def digest_step(workflow: str, written: Written) -> bool:
    """The workflow's Slack digest, once per run, with its coverage and failed targets."""
    from traceo_finops.kit.digest import post_digest

    return bool(_fail_fast(lambda: post_digest(run_context(workflow), written, _workflow(workflow).digest)))


def verdict_step(written: Written) -> None:
    """Fail the run, without retries, when a target failed (its report and digest are already out)."""
    from traceo_finops.kit.outcome import verdict

    _fail_fast(lambda: verdict(written))


def digest_and_verdict(workflow: str, written: XComArg) -> XComArg:
    """The last two tasks of every workflow, after its publish task (``written`` is that task's output).

    ``post_digest``: the run's digest to Slack, once per run, with its coverage and failed targets.
    ``verdict``: fails the run if a target failed, without retries (its error is already in
    ``run_targets`` and the digest; a retry could not change it). Returns ``post_digest``'s output, so
    a DAG can put a task after the digest (the cost report's file upload).
    """
    @task
    def post_digest(written: Any) -> bool:  # Written at run time; Any: Airflow resolves these hints
        """The run's digest to Slack (slack_finops), once per run."""
        return digest_step(workflow, written)

    @task(retries=0)
    def verdict(written: Any) -> None:
        """Fail the run if a target failed; its error is in run_targets and the digest."""
        verdict_step(written)

    posted = post_digest(written)
    posted >> verdict(written)
    return posted

