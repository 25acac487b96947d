"""The one digest path: a workflow's Slack digest, once per run, with its coverage stated.

``post_digest(ctx, written, digest_fn)`` builds the workflow's :class:`~traceo_finops.slack.Digest`
from what :func:`~traceo_finops.kit.publish.publish` wrote, adds what every digest must say —
how much of the scope the totals cover ("2 of 3 sources") and which targets failed — and the
run's delivery key, then posts it through :func:`~traceo_finops.slack.post_once`.

``post_refusal(ctx)`` is the other message a run can send: when the quality gate refused the run's
set (nothing was published, the previous report stays), an alert naming each failed expectation,
read back from the ``quality_checks`` record the refusal wrote.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import date

from traceo_finops.kit.context import RunContext
from traceo_finops.kit.datasets import QUALITY_CHECKS
from traceo_finops.kit.publish import Written, read_committed
from traceo_finops.reports import RUN_ID_COLUMN, ReportError
from traceo_finops.slack import Digest, delivery_key, post_once, scrub

log = logging.getLogger(__name__)

DigestFn = Callable[[RunContext, Written], Digest]


def with_coverage(digest: Digest, written: Written, key: str) -> Digest:
    """``digest`` with the coverage fact, the failed targets and the delivery key added."""
    failed = written.get("failed_targets") or []
    facts = {"Coverage": str(written.get("coverage", "")), **digest.facts}
    summary = digest.summary
    if failed:
        summary = (f":warning: *Partial report — {written.get('coverage')}.* Failed: "
                   + "; ".join(f"`{f['target']}`: {f['error'][:200]}" for f in failed[:5])
                   + (f" (+{len(failed) - 5} more)" if len(failed) > 5 else "") + "\n" + summary)
    # The key makes a duplicate detectable: a webhook post can be delivered twice if the task dies
    # between the post and its record (see slack.post_once).
    footer = f"{digest.footer} · run key {key}" if digest.footer else f"run key {key}"
    return dataclasses.replace(digest, summary=summary, facts=facts, footer=footer)


def post_digest(ctx: RunContext, written: Written, digest_fn: DigestFn) -> bool:
    """Post the workflow's digest for this run once; False when Slack is off for this run or already posted."""
    if not ctx.post_to_slack():
        return False
    key = delivery_key(ctx.dag_id, ctx.run_id, "digest")
    digest = with_coverage(digest_fn(ctx, written), written, key)
    return post_once(ctx.store, date.fromisoformat(str(written["report_date"])), key, digest, ctx.poster)


def refusal_digest(ctx: RunContext, error: str) -> Digest:
    """The alert of a set the quality gate refused: each dataset's failed expectations (from ``quality_checks``)."""
    day = ctx.report_date
    failed: list[tuple[str, str]] = []
    try:
        checks = read_committed(ctx.store, QUALITY_CHECKS.name, day, ctx.dag_id).to_pylist()
    except ReportError:
        checks = []
    for row in checks:
        if row.get(RUN_ID_COLUMN) == ctx.run_id and not row.get("success"):
            failed += [(str(row["dataset"]), str(f)) for f in row.get("failures") or []]
    datasets = sorted({d for d, _ in failed})
    summary = (f":no_entry: *Nothing was published for {day}*: the quality gate refused "
               + (f"{len(failed)} expectation(s) of {', '.join(f'`{d}`' for d in datasets)}" if failed
                  else f"the report ({error[:500]})")
               + f". The previous report of {day} stays in place; run `{ctx.run_id}` failed without retries.")
    return Digest(title=f"{ctx.dag_id} {day}: report refused by Great Expectations", summary=summary,
                  table_header=("dataset", "failed expectation") if failed else (),
                  table_rows=[(d, f[:160]) for d, f in failed],
                  footer=f"The refusal is recorded in `quality_checks` (dag_id={ctx.dag_id}) under "
                         f"{ctx.store.dataset_uri(QUALITY_CHECKS.name)}")


def post_refusal(ctx: RunContext, error: str) -> bool:
    """Alert Slack that the quality gate refused this run's set; True if posted now.

    Never raises: the refusal itself is the run's error, and a Slack failure must not hide it (it is
    logged, its secrets scrubbed). Once per run, like a digest (the task fails without retries).
    """
    if not ctx.post_to_slack():
        return False
    key = delivery_key(ctx.dag_id, ctx.run_id, "quality_refusal")
    try:
        digest = refusal_digest(ctx, error)
        digest = dataclasses.replace(digest, footer=f"{digest.footer} · run key {key}")
        return post_once(ctx.store, ctx.report_date, key, digest, ctx.poster)
    except Exception as exc:  # the refusal must reach the task log whatever Slack says
        log.error("the Slack alert of the refused report could not be posted: %s", scrub(str(exc)) or type(exc))
        return False
