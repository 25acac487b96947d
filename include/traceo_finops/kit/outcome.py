"""The one failure policy of every workflow.

A target (source, tenant, bucket, batch) that fails is recorded with its error; the other
targets' results are still written; the digest says which targets failed and the report's
totals state their coverage; and the run then fails, naming them, without retries (its
partial report is already written, and a retry of the verdict could not change it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict, TypeVar

from traceo_finops.kit.context import RunContext, Target, coverage
from traceo_finops.shapes import Json, JsonObject

if TYPE_CHECKING:
    from traceo_finops.kit.publish import Written

log = logging.getLogger(__name__)

W = TypeVar("W")


class WorkflowError(RuntimeError):
    """A run cannot go on; the message names the target or setting and the problem."""


class PermanentError(WorkflowError):
    """Retrying cannot help (a bad configuration, param or target list): the task fails at once."""


class NoTargets(PermanentError):
    """The configuration gives a workflow nothing to work on."""


class TargetsFailed(PermanentError):
    """Some targets failed; the others' results were written. Raised by the run's last step."""


class TargetFailure(TypedDict):
    """One failed target and its error, as reports and digests name it."""

    target: str
    error: str


class TargetResultDict(TypedDict):
    """:meth:`TargetResult.as_dict`: what a target's step returns to Airflow (XCom)."""

    target: JsonObject
    error: str
    payload: Json


@dataclass(frozen=True)
class TargetResult:
    """What one target's step produced, or why it failed."""

    target: Target
    error: str = ""
    payload: Json = None  # the step's JSON-safe result; its workflow knows its shape

    @property
    def ok(self) -> bool:
        return not self.error

    def as_dict(self) -> TargetResultDict:
        return {"target": self.target.as_dict(), "error": self.error, "payload": self.payload}

    @classmethod
    def from_dict(cls, data: Mapping[str, Json]) -> TargetResult:
        return cls(Target.from_dict(data["target"]), str(data.get("error") or ""), data.get("payload"))


def run_target(target: Target, step: Callable[[], Json], what: str = "") -> TargetResultDict:
    """Run one target's ``step``; any failure becomes that target's recorded error (the run goes on)."""
    try:
        payload = step()
    except Exception as exc:  # the failure policy: record, go on, fail the run at the end
        message = str(exc) or type(exc).__name__
        if target.label not in message and (target.source or target.bucket) not in message:
            message = f"{target.label}: {message}"
        log.error("%s%s failed: %s", target.label, f" ({what})" if what else "", message)
        return TargetResult(target, error=message).as_dict()
    return TargetResult(target, payload=payload).as_dict()


def results_of(items: Iterable[Mapping[str, Json]]) -> list[TargetResult]:
    return [TargetResult.from_dict(i) for i in items]


def split(results: Sequence[TargetResult]) -> tuple[list[TargetResult], list[TargetResult]]:
    """(succeeded, failed)."""
    return [r for r in results if r.ok], [r for r in results if not r.ok]


def failures(results: Iterable[TargetResult]) -> list[TargetFailure]:
    """One ``{target, error}`` per failed target, de-duplicated (a target may fail in two steps)."""
    seen: dict[str, str] = {}
    for r in results:
        if not r.ok:
            seen.setdefault(r.target.label, r.error)
    return [{"target": t, "error": e} for t, e in seen.items()]


def coverage_of(results: Sequence[TargetResult]) -> str:
    ok, failed = split(results)
    return coverage([r.target for r in ok], [r.target for r in failed])


def require_work(ctx: RunContext, work: Sequence[W], results: Sequence[TargetResult], nothing: str,
                 no_data: Callable[[], Mapping[str, str]] | None = None) -> list[W]:
    """``work`` (what the DAG maps over), or a clear error: an empty map is never a quiet success.

    Airflow skips a task mapped over an empty list and every task after it, and marks the run
    successful: a source that refuses every query, or a filter that matches nothing, would end
    "green" with nothing written. When every target failed, their errors are recorded in
    ``run_targets`` (as :func:`~traceo_finops.kit.publish.publish` does) and :class:`TargetsFailed`
    names them; otherwise :class:`NoTargets` says ``nothing`` (what matched nothing, where) — unless
    ``no_data`` says why each target has nothing in this window (e.g. a backfill of days before the data:
    target label -> note). Then that is published as the run's ``run_targets`` record and the empty map
    is returned: the run succeeds with nothing else to do.
    """
    if work:
        return list(work)
    if no_data is not None and results and all(r.ok for r in results) and (notes := dict(no_data())):
        from traceo_finops.kit.publish import Report, publish

        publish(ctx, Report(datasets=[], notes=notes), results)
        log.warning("%s: nothing in the window; run_targets says why: %s", ctx.dag_id, "; ".join(notes.values()))
        return []
    failed = failures(results)
    if results and not any(r.ok for r in results):
        from traceo_finops.kit.publish import Report, publish

        publish(ctx, Report(datasets=[]), results)  # records run_targets, then raises TargetsFailed
    raise NoTargets(f"{ctx.dag_id}: {nothing}" + ("; failed: " + "; ".join(
        f"{f['target']}: {f['error']}" for f in failed) if failed else ""))


def verdict(written: Written) -> None:
    """Fail the run (no retries) when a target failed; its error and the others' report are on record."""
    failed = written.get("failed_targets") or []
    if failed:
        raise TargetsFailed(f"{len(failed)} target(s) failed ({written.get('coverage', '')} reported): "
                            + "; ".join(f"{f['target']}: {f['error']}" for f in failed))
