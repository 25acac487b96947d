"""The cost model, the ranked actions and the cost report's quality gate, on hand-made upstream rows."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from traceo_finops.cost_report.dataset import ACTIONS, COST_SUMMARY
from traceo_finops.cost_report.model import by_category, cost_summary, totals
from traceo_finops.cost_report.recommend import Provenance, actions
from traceo_finops.quality import check

pytestmark = pytest.mark.unit
WINDOW = {"window_start": datetime(2026, 11, 30, tzinfo=UTC), "window_end": datetime(2026, 12, 7, tzinfo=UTC)}


def card(metric: str, now: float, after: float, suggestion: str, tenant: str = "") -> dict[str, Any]:
    return {"source": "prom", "tenant": tenant, "metric": metric, "series": 1000, "series_after": 10,
            "classification": "unused" if suggestion == "drop_metric" else "used", "suggestion": suggestion,
            "unneeded_labels": [], "monthly_cost_usd": now, "monthly_cost_after_usd": after,
            "monthly_saving_usd": now - after}


UPSTREAM: dict[str, list[dict[str, Any]]] = {
    "cardinality": [card("a", 10.0, 0.0, "drop_metric"), card("b", 30.0, 20.0, "drop_labels"),
                    card("c", 5.0, 5.0, "keep")],
    "showback": [{"source": "prom", "tenant": "", "owner": "payments", "monthly_cost_usd": 27.0},
                 {"source": "prom", "tenant": "", "owner": "search", "monthly_cost_usd": 18.0}],
    "storage": [{"source": "prom", "tenant": "", "kind": "prometheus", "status": "ok", "monthly_cost_usd": 8.0}],
    "config_findings": [{"source": "prom", "tenant": "", "check_id": "wal_compression_off", "subject": "wal",
                         "recommendation": "turn it on", "monthly_saving_usd": 3.0,
                         "saving_model": "37.5 GB of disk x $0.08/GB-month"}],
    "s3_tiering": [{"bucket": "blocks", "tenant": "team-a", "current_monthly_usd": 50.0,
                    "projected_monthly_usd": 30.0, "proposed_rule_id": "finops-tier-team-a", "applied": False},
                   {"bucket": "blocks", "tenant": "team-a", "current_monthly_usd": 4.0,
                    "projected_monthly_usd": 4.0, "proposed_rule_id": None, "applied": False}],
    "rightsizing": [{"namespace": "shop", "workload_name": "api", "container": "app", "status": "over-provisioned",
                     "reason": "p95 far below", "monthly_cost_now_usd": 40.0, "monthly_cost_after_usd": 15.0,
                     "monthly_saving_usd": 25.0},
                    {"namespace": "", "workload_name": "prometheus", "container": "prometheus",
                     "status": "under-provisioned", "reason": "OOM", "monthly_cost_now_usd": 20.0,
                     "monthly_cost_after_usd": 26.0, "monthly_saving_usd": -6.0}],
    "recording_rules": [{"source": "prom", "tenant": "", "rule_name": "job:x:rate5m", "rule_status": "suggested",
                         "monthly_cost_usd": 0.5, "new_series": 12, "speedup": 8.0}] * 2,
}


def _by(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["category"], r["owner"]): r for r in rows}


def test_every_category_from_its_dataset_and_totals_add_up() -> None:
    rows = _by(cost_summary(UPSTREAM))
    # Showback splits the cardinality place (45 now, 25 after) by owner, at the place's after/now ratio.
    assert rows[("active_series", "payments")]["current_monthly_usd"] == pytest.approx(27.0)
    assert rows[("active_series", "payments")]["projected_monthly_usd"] == pytest.approx(27.0 * 25 / 45)
    # The WAL finding is a disk saving: taken from the source's local disk.
    assert rows[("local_disk", "prom")]["saving_monthly_usd"] == pytest.approx(3.0)
    assert rows[("object_storage", "team-a")]["current_monthly_usd"] == pytest.approx(54.0)
    assert rows[("object_storage", "team-a")]["saving_monthly_usd"] == pytest.approx(20.0)
    assert rows[("workload_requests", "shop")]["saving_monthly_usd"] == pytest.approx(25.0)
    assert rows[("stack_compute", "stack:prometheus")]["saving_monthly_usd"] == pytest.approx(-6.0)
    # One rule serving two query groups adds its series once; query compute itself is not priced.
    assert rows[("queries", "prom")]["current_monthly_usd"] == 0
    assert rows[("queries", "prom")]["projected_monthly_usd"] == pytest.approx(0.5)
    t = totals(rows.values())
    assert t["current"] == pytest.approx(27 + 18 + 8 + 54 + 40 + 20)
    assert t["saving"] == pytest.approx(t["current"] - t["projected"])
    assert set(by_category(rows.values())) == {"active_series", "local_disk", "object_storage", "workload_requests",
                                              "stack_compute", "queries"}


def test_any_subset_works_and_nothing_gives_nothing() -> None:
    assert cost_summary({}) == []
    only_s3 = cost_summary({"s3_tiering": UPSTREAM["s3_tiering"]})
    assert {r["category"] for r in only_s3} == {"object_storage"}
    # Cardinality without showback is owned by the tenant/source.
    no_showback = _by(cost_summary({"cardinality": UPSTREAM["cardinality"]}))
    assert no_showback[("active_series", "prom")]["saving_monthly_usd"] == pytest.approx(20.0)
    # A disk finding without a disk cost on record is not taken from anything.
    assert cost_summary({"config_findings": UPSTREAM["config_findings"]}) == []


def test_actions_are_ranked_with_owner_effort_risk_status_and_artifact() -> None:
    prov = {"s3_tiering": Provenance("s3://r/s3_tiering/report_date=2026-12-06/part-0.parquet",
                                     ("s3://r/_artifacts/s3_tiering/report_date=2026-12-06/blocks.lifecycle.json",))}
    ranked = actions(UPSTREAM, prov)
    assert [a["rank"] for a in ranked] == list(range(1, len(ranked) + 1))
    savings = [a["monthly_saving_usd"] for a in ranked]
    assert savings == sorted(savings, reverse=True)
    kinds = {a["kind"] for a in ranked}
    assert kinds == {"drop_metric", "drop_labels", "config_change", "request_patch", "lifecycle_rule",
                     "recording_rule"}
    (rule,) = [a for a in ranked if a["kind"] == "lifecycle_rule"]
    assert rule["monthly_saving_usd"] == pytest.approx(20.0) and rule["owner"] == "team-a"
    assert rule["artifact_uri"].endswith("blocks.lifecycle.json") and rule["status"] == "proposed"
    assert len([a for a in ranked if a["kind"] == "recording_rule"]) == 1
    table = ACTIONS.table([{**a, **WINDOW} for a in ranked])
    assert check("actions", table, ACTIONS.expectations, raise_on_failure=False).success


def _summary_table(mutate: Any = None) -> Any:
    rows = [{**r, "previous_monthly_usd": None, "wow_change_usd": None, "wow_change_pct": None, **WINDOW}
            for r in cost_summary(UPSTREAM)]
    if mutate:
        mutate(rows)
    return COST_SUMMARY.table(rows)


def test_the_gate_passes_a_good_summary() -> None:
    assert check("cost_summary", _summary_table(), COST_SUMMARY.expectations, raise_on_failure=False).success


@pytest.mark.parametrize(("name", "mutate", "expectation"), [
    ("nan cost", lambda rows: rows[0].update(current_monthly_usd=math.nan), "expect_column_values_to_not_be_null"),
    ("negative cost", lambda rows: rows[0].update(projected_monthly_usd=-1.0), "expect_column_values_to_be_between"),
    ("saving above cost", lambda rows: rows[0].update(saving_monthly_usd=rows[0]["current_monthly_usd"] + 1),
     "expect_column_pair_values_a_to_be_greater_than_b"),
    ("duplicate key", lambda rows: rows.append(dict(rows[0])), "expect_compound_columns_to_be_unique"),
    ("implausible", lambda rows: rows[0].update(current_monthly_usd=1e12), "expect_column_values_to_be_between"),
])
def test_the_gate_refuses_corrupted_summaries(name: str, mutate: Any, expectation: str) -> None:
    result = check("cost_summary", _summary_table(mutate), COST_SUMMARY.expectations, raise_on_failure=False)
    assert not result.success, name
    assert any(f.startswith(expectation) for f in result.failed), result.failed
