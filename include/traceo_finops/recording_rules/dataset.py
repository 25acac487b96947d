"""The ``recording_rules`` datasets and the Slack digest.

- ``recording_rules``: one row per considered query group and the rule serving it (a group whose query
  aggregates two rates gets two rows): the group's cost in the log, the rule, the rewritten query, the proof
  (validated, or the rejection reason), the measured speedup and the series the rule adds with their cost.
- ``recording_rules_inputs``: one row per source/tenant: what the query logs held (lines read, rule
  evaluations kept apart, bad lines, unparsable and enormous queries, lines outside the window, unreadable
  files) and what came of it — every bad input counted here, never a crash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from traceo_finops.quality import between, not_null, one_of, unique_together
from traceo_finops.reports import WINDOW_COLUMNS, Dataset
from traceo_finops.reports import column as _f
from traceo_finops.slack import Digest

F64, I64, STR, BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()
SUGGESTED, REJECTED, ALREADY_RECORDED = "suggested", "rejected", "already_recorded"





RECORDING_RULES = Dataset(
    name="recording_rules",
    version=1,
    description="Costliest logged query groups: the recording rule serving each, its rewritten query, the proof "
                "(same result on a real Prometheus), the measured speedup and the series it adds with their cost.",
    schema=pa.schema([
        _f("source", STR), _f("tenant", STR),
        _f("rank", I64),  # 1 = the costliest group of the source/tenant
        _f("group_key", STR),  # canonical form, Grafana's per-refresh parts folded
        _f("example_query", STR),  # the spelling that cost most
        _f("spellings", I64),  # distinct texts in the group
        _f("count", I64),  # executions in the window
        _f("total_eval_seconds", F64), _f("mean_eval_seconds", F64),
        _f("total_samples", I64, True),  # when the log has them
        _f("rule_name", STR), _f("rule_expr", STR),
        _f("rule_status", STR),  # suggested | rejected | already_recorded
        _f("rewritten_query", STR),
        _f("new_series", I64, True), _f("monthly_cost_usd", F64, True),
        _f("original_eval_seconds", F64, True), _f("rewritten_eval_seconds", F64, True),  # medians
        _f("speedup", F64, True),
        _f("proof_points", I64),  # points compared
        _f("proof_start", pa.timestamp("s", tz="UTC"), True), _f("proof_end", pa.timestamp("s", tz="UTC"), True),
        _f("proof_step_seconds", I64, True),
        _f("validated", BOOL),
        _f("rejection_reason", STR),
        *WINDOW_COLUMNS,
    ]),
    expectations=(
        *not_null("source", "group_key", "example_query", "rule_name", "rule_expr", "rule_status", "validated",
                  "rewritten_query"),
        one_of("rule_status", [SUGGESTED, REJECTED, ALREADY_RECORDED]),
        between("count", min_value=1),
        between("rank", min_value=1),
        between("new_series", min_value=0),
        between("speedup", min_value=0),
        unique_together("source", "tenant", "group_key", "rule_name"),
    ),
)

RECORDING_RULES_INPUTS = Dataset(
    name="recording_rules_inputs",
    version=1,
    description="Per source/tenant: what its query logs held for the window and what came of it.",
    schema=pa.schema([
        _f("source", STR), _f("tenant", STR),
        _f("log_location", STR), _f("log_files", pa.list_(STR)),
        _f("lines", I64), _f("in_window", I64), _f("before_window", I64), _f("after_window", I64),
        _f("bad_lines", I64),  # truncated, not JSON/logfmt, no query or timestamp
        _f("without_timing", I64),  # executions whose line lacks the evaluation time
        _f("unreadable_files", I64),  # missing, unreadable, cut short
        _f("api_queries", I64),  # user/dashboard executions
        _f("rule_evaluations", I64),  # rule-group evaluations: not user queries, not counted
        _f("distinct_queries", I64),
        _f("unparsable_queries", I64), _f("unparsable_executions", I64),
        _f("enormous_queries", I64),  # longer than max_query_length: not parsed
        _f("groups", I64), _f("groups_with_site", I64), _f("groups_considered", I64),
        _f("suggested", I64), _f("rejected", I64), _f("already_recorded", I64), _f("name_conflicts", I64),
        _f("errors", pa.list_(STR)),  # the first recorded problems: file:line and why
        *WINDOW_COLUMNS,
    ]),
    expectations=(*not_null("source", "lines", "bad_lines"), between("lines", min_value=0),
                  unique_together("source", "tenant")),
)


def recording_rules_digest(rows: Sequence[Mapping[str, Any]], inputs: Sequence[Mapping[str, Any]],
                           report_uri: str, report_date: str, top_n: int) -> Digest:
    """The suggested rules with their speedup and cost, and what the logs held."""
    suggested = [r for r in rows if r["rule_status"] == SUGGESTED]
    rules = {r["rule_name"]: r for r in sorted(suggested, key=lambda r: int(r["rank"]))}
    cost = sum(float(r["monthly_cost_usd"] or 0) for r in rules.values())
    series = sum(int(r["new_series"] or 0) for r in rules.values())
    top = sorted(suggested, key=lambda r: (int(r["rank"]), r["rule_name"]))[:top_n]
    total = {k: sum(int(i[k]) for i in inputs) for k in (
        "lines", "api_queries", "rule_evaluations", "bad_lines", "unparsable_queries", "enormous_queries",
        "before_window", "after_window", "unreadable_files", "name_conflicts", "without_timing")}
    rejected = sum(1 for r in rows if r["rule_status"] == REJECTED)
    recorded = sum(1 for r in rows if r["rule_status"] == ALREADY_RECORDED)
    speedups = [float(r["speedup"]) for r in suggested if r["speedup"]]
    summary = (f"*{len(rules)}* recording rule(s) serve *{len({r['group_key'] for r in suggested})}* of the costliest "
               f"query groups, each proven to return the same result"
               + (f", *{min(speedups):.1f}×–{max(speedups):.1f}×* faster" if speedups else "")
               + f"; they add *{series:,}* series (about *${cost:,.2f}/month*). "
               f"{rejected} candidate(s) rejected, {recorded} already recorded by the server.")
    if not rows:
        summary = "No logged query group needs a new recording rule in this window."
    return Digest(
        title=f"Recording rules {report_date}",
        summary=summary,
        facts={"Log lines read": f"{total['lines']:,}", "User queries": f"{total['api_queries']:,}",
               "Rule evaluations (not counted)": f"{total['rule_evaluations']:,}",
               "Bad lines": f"{total['bad_lines']:,}",
               "Unparsable / enormous queries": f"{total['unparsable_queries']:,} / {total['enormous_queries']:,}",
               "Lines outside the window": f"{total['before_window'] + total['after_window']:,}",
               "Unreadable log files": f"{total['unreadable_files']:,}",
               "Rule name conflicts": f"{total['name_conflicts']:,}"},
        table_header=("rule", "speedup", "new series", "$/month", "queries"),
        table_rows=[(r["rule_name"], f"{float(r['speedup'] or 0):.1f}×", f"{int(r['new_series'] or 0):,}",
                     f"{float(r['monthly_cost_usd'] or 0):,.2f}", f"{int(r['count']):,}") for r in top],
        footer=f"Report: {report_uri} · rule files beside it under _artifacts/recording_rules/",
    )
