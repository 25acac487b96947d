"""The Slack digest of a run: what was written, and for every bucket that was not, why."""

from __future__ import annotations

import pytest

from traceo_finops.s3tiering.dataset import tiering_digest

pytestmark = pytest.mark.unit


def row(bucket: str, source: str = "list") -> dict:
    return {"bucket": bucket, "current_monthly_usd": 2.0, "projected_monthly_usd": 1.0,
            "one_time_transition_usd": 0.5, "net_saving_12m_usd": 11.5, "source": source}


def outcome(bucket: str, mode: str, added: int = 0) -> dict:
    return {"bucket": bucket, "mode": mode, "diff": {"added": [{"ID": f"finops-tier-{i}"} for i in range(added)]},
            "error": "boom" if mode == "failed" else None}


def summary(outcomes: list[dict], errors: list[dict] | None = None, rows: list[dict] | None = None) -> str:
    rows = rows if rows is not None else [row(o["bucket"]) for o in outcomes]
    return tiering_digest("2026-12-05", rows, outcomes, errors or [], "uri", []).summary


def test_a_dry_run_says_dry_run() -> None:
    assert summary([outcome("a", "dry-run"), outcome("b", "dry-run")]).endswith(
        "Nothing was written to any bucket (dry run).")


def test_an_apply_run_that_wrote_nothing_says_why_per_bucket() -> None:
    text = summary([outcome("a", "unchanged"), outcome("b", "not-allowlisted"), outcome("c", "not-allowlisted"),
                    outcome("d", "failed")], errors=[{"bucket": "d", "error": "x"}, {"bucket": "e", "error": "y"}])
    assert "dry run" not in text
    assert text.endswith("Nothing was written to any bucket: a already as planned; b, c not allowlisted "
                         "(buckets[].apply: false); d failed (see its error); e could not be planned (see its "
                         "error).")


def test_a_run_that_wrote_some_says_which_and_why_not_the_others() -> None:
    text = summary([outcome("a", "applied", added=2), outcome("b", "unchanged")])
    assert text.endswith("Written: a. Not written: b already as planned.")
    assert summary([outcome("a", "applied", added=1)]).endswith("Written: a.")


def test_the_digest_says_where_the_objects_came_from() -> None:
    digest = tiering_digest("2026-12-05", [row("a", "inventory"), row("b", "list")],
                            [outcome("a", "dry-run"), outcome("b", "dry-run")], [], "uri", [])
    assert digest.facts["Objects from"] == "a: S3 Inventory, b: ListObjectsV2"
    assert [r[-1] for r in digest.table_rows] == ["dry-run", "dry-run"]
