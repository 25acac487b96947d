"""The one digest path: a workflow's Slack digest, once per run, with its coverage stated.

``post_digest(ctx, written, digest_fn)`` builds the workflow's :class:`~traceo_finops.slack.Digest`
from what :func:`~traceo_finops.kit.publish.publish` wrote, adds what every digest must say —
how much of the scope the totals cover ("2 of 3 sources") and which targets failed — and the
run's delivery key, then posts it through :func:`~traceo_finops.slack.post_once`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import date

from traceo_finops.kit.context import RunContext
from traceo_finops.kit.publish import Written
from traceo_finops.slack import Digest, delivery_key, post_once

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
