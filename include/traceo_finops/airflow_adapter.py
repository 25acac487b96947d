"""The one thin place where the domain library meets Airflow.

It turns Airflow connections into the library's plain specs, a task's context into a
report window and a run identity, and the slack provider's webhook hook into a poster.
Nothing else in ``traceo_finops`` imports Airflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow.sdk import BaseHook, get_current_context
from airflow.sdk.exceptions import AirflowNotFoundException

from traceo_finops.config import FinopsConfig, load_config
from traceo_finops.prometheus import SourceSpec
from traceo_finops.reports import ReportStore
from traceo_finops.slack import Poster, SlackError
from traceo_finops.window import ReportWindow, report_window


class ConnectionMissing(LookupError):
    """An Airflow connection named in the configuration is not defined."""


@dataclass(frozen=True)
class RunInfo:
    dag_id: str
    run_id: str
    window: ReportWindow


def run_info(lookback: Any, context: Any = None) -> RunInfo:
    """The running task's DAG, run and report window (from the data interval, else ``lookback``)."""
    ctx = context or get_current_context()
    window = report_window(ctx.get("data_interval_start"), ctx.get("data_interval_end") or ctx["logical_date"],
                           lookback)
    return RunInfo(ctx["dag"].dag_id, ctx["run_id"], window)


def connection(conn_id: str) -> Any:
    """The Airflow connection ``conn_id`` (env var, metadata DB or secrets backend)."""
    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        env = "AIRFLOW_CONN_" + conn_id.upper()
        raise ConnectionMissing(f"Airflow connection {conn_id!r} is not defined: set {env} or add it in the "
                                f"Airflow UI (Admin → Connections); see docs/connections.md") from None


def prometheus_spec(conn_id: str, source_name: str, tenant: str | None = None,
                    flavor: str | None = None) -> SourceSpec:
    """A Prometheus/Mimir source spec from its ``http`` connection; ``tenant``/``flavor`` override the extra's."""
    conn = connection(conn_id)
    extra = dict(conn.extra_dejson or {})
    if tenant:
        extra["tenant"] = tenant
    return SourceSpec.from_connection_fields(
        name=source_name, host=conn.host or "", port=conn.port, schema=conn.schema, login=conn.login,
        password=conn.password, extra=extra, flavor=flavor)


def s3_filesystem_options(conn_id: str) -> dict[str, Any]:
    """pyarrow S3FileSystem options from an ``aws`` connection (keys, region, endpoint_url)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    connection(conn_id)  # a clear error for a missing id, before boto's own
    hook = S3Hook(aws_conn_id=conn_id)
    creds = hook.get_credentials()
    options: dict[str, Any] = {"access_key": creds.access_key, "secret_key": creds.secret_key,
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
    cfg = cfg or load_config()
    root = cfg.report_root_uri
    if root.startswith("s3://"):
        return ReportStore(root, s3_options=s3_filesystem_options(cfg.report_conn_id))
    return ReportStore(root)


def slack_poster(conn_id: str) -> Poster:
    """Post through the slack provider's webhook hook, retrying 429 (Retry-After) and 5xx."""
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )

    class AnyServerErrorRetryHandler(ServerErrorRetryHandler):
        # slack_sdk's handler retries only 500 and 503; a proxy in front of a webhook also says 502/504.
        def _can_retry(self, *, state, request, response=None, error=None) -> bool:  # type: ignore[no-untyped-def]
            return response is not None and 500 <= response.status_code < 600

    connection(conn_id)
    hook = SlackWebhookHook(slack_webhook_conn_id=conn_id, timeout=30, retry_handlers=[
        RateLimitErrorRetryHandler(max_retry_count=5),
        AnyServerErrorRetryHandler(max_retry_count=4),
        ConnectionErrorRetryHandler(max_retry_count=3),
    ])

    def post(text: str, blocks: list[dict[str, Any]]) -> None:
        try:
            hook.send(text=text, blocks=blocks)
        except Exception as exc:  # the hook raises AirflowException with status and body
            raise SlackError(f"Slack connection {conn_id!r}: posting the digest failed: {exc}") from None

    return post


def s3_client(conn_id: str) -> Any:
    """A boto3 S3 client from an ``aws`` connection (keys, region, extra ``endpoint_url``), via S3Hook."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    connection(conn_id)  # a clear error for a missing id, before boto's own
    return S3Hook(aws_conn_id=conn_id).get_conn()
