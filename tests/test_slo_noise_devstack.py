"""Measured alert noise on the devstack (issue 13 item 4): the generated MWMB page and ticket alerts of the
SLOs in devstack/assets/slo/replay/ and a plain 5-minute threshold, replayed with range queries on the devstack
Prometheus over its 30-day backfilled request history (devstack/slo_history.py), scored against the history's
ground truth (slo_ground_truth.json): every known incident is detected by MWMB (fast burns by a page), every known
blip and low-traffic dip pages the threshold and never MWMB, and the figures follow from the firings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from devstack import slo_history
from tests.support.prometheus import prometheus_client
from traceo_finops.slo import noise
from traceo_finops.slo.rules import RATIO, sli_rules

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def slo_truth(devstack: dict[str, str]) -> dict[str, Any]:
    return json.loads((Path(devstack["DEVSTACK_GROUND_TRUTH_PROM"]).parent / slo_history.TRUTH_FILE).read_text())


@pytest.fixture(scope="module")
def replayed(devstack: dict[str, str], slo_truth: dict[str, Any]) -> dict[str, Any]:
    start = datetime.fromtimestamp(slo_truth["replay_start"], UTC)
    end = datetime.fromtimestamp(slo_truth["replay_end"], UTC)
    events = noise.events_of(slo_truth)
    with prometheus_client(devstack["DEVSTACK_PROM_URL"], timeout=300) as client:
        out = {s.id: noise.replay_slo(client, s, events, start, end) for s in slo_history.slos_of(slo_truth)}
    return {"by_slo": out, "events": events, "start": start, "end": end}


def test_the_history_has_every_tier_incidents_and_noise(slo_truth: dict[str, Any]) -> None:
    assert {s["tier"] for s in slo_truth["slos"]} == {"critical", "high", "standard", "best_effort"}
    assert any(s["min_events"] for s in slo_truth["slos"])  # a low-traffic SLO with a guard
    for s in slo_truth["slos"]:
        mine = [e for e in slo_truth["incidents"] if e["slo_id"] == s["slo_id"]]
        assert {e["kind"] for e in mine} == {"fast_burn", "slow_burn"}
        assert {n["kind"] for n in slo_truth["noise"] if n["slo_id"] == s["slo_id"]} == {"blip", "low_traffic"}
        for e in [*mine, *(n for n in slo_truth["noise"] if n["slo_id"] == s["slo_id"])]:
            assert slo_truth["replay_start"] < e["start"] <= e["end"] < slo_truth["replay_end"]


def test_every_incident_is_detected_by_mwmb_and_fast_burns_page(replayed: dict[str, Any]) -> None:
    incidents = [e for e in replayed["events"] if e.incident]
    assert incidents
    for e in incidents:
        [hit] = [d for d in replayed["by_slo"][e.slo_id].detections if d.event == e and d.method == noise.MWMB]
        assert hit.delay_seconds is not None, f"{e.slo_id}: {e.name} not detected"
        fired = replayed["by_slo"][e.slo_id].fired[noise.MWMB]
        if e.expect == "page":
            assert any(f.start <= e.end + noise.ATTRIBUTION_TAIL.total_seconds() and f.end >= e.start
                       for f in fired.get("page", [])), f"{e.slo_id}: {e.name} did not page"
            # Detected before the fast burn was over: a page is for what is happening now.
            assert e.start + hit.delay_seconds <= e.end + 60, e
        else:
            assert hit.severity in ("page", "ticket")


def test_known_noise_pages_the_threshold_and_never_mwmb(replayed: dict[str, Any]) -> None:
    tail = noise.ATTRIBUTION_TAIL.total_seconds()
    blips = [e for e in replayed["events"] if not e.incident]
    assert {e.kind for e in blips} == {"blip", "low_traffic"}
    for e in blips:
        fired = replayed["by_slo"][e.slo_id].fired
        assert any(f.start <= e.end + tail and f.end >= e.start for f in fired[noise.THRESHOLD].get("page", [])), \
            f"{e.slo_id}: {e.kind} at {e.start} did not page the threshold"
        assert not any(f.start <= e.end + tail and f.end >= e.start for f in fired[noise.MWMB].get("page", [])), \
            f"{e.slo_id}: {e.kind} at {e.start} paged with MWMB"


def test_figures_follow_from_the_firings_and_the_ground_truth(replayed: dict[str, Any],
                                                              slo_truth: dict[str, Any]) -> None:
    days = (replayed["end"] - replayed["start"]) / timedelta(days=1)
    rows = [r for rep in replayed["by_slo"].values() for r in rep.rows]
    guarded = [s["slo_id"] for s in slo_truth["slos"] if s["min_events"]]
    assert len(rows) == 2 * len(slo_truth["slos"]) + len(guarded)  # + the guarded SLOs' rules without the guard
    for slo_id in guarded:
        by = {r["method"]: r for r in rows if r["slo_id"] == slo_id}
        assert by[noise.MWMB]["pages"] <= by[noise.MWMB_NO_GUARD]["pages"]
    for row in rows:
        rep = replayed["by_slo"][row["slo_id"]]
        fired = rep.fired[row["method"]]
        truth_incidents = [e for e in slo_truth["incidents"] if e["slo_id"] == row["slo_id"]]
        assert row["incidents"] == len(truth_incidents)
        assert row["fast_burns"] == sum(1 for e in truth_incidents if e["expect"] == "page")
        assert row["noise_events"] == sum(1 for n in slo_truth["noise"] if n["slo_id"] == row["slo_id"])
        assert row["pages"] == len(fired.get("page", [])) and row["tickets"] == len(fired.get("ticket", []))
        assert row["pages_per_day"] == pytest.approx(row["pages"] / days)
        own = [e for e in replayed["events"] if e.slo_id == row["slo_id"] and e.incident]
        assert row["false_pages"] == len(noise.false_firings(fired.get("page", []), own))
        # Each firing is one pending → firing transition: firings of one alert never overlap; and each fired only
        # once its condition had held for the rule's `for:` (recs-api's page has `for: 2m`).
        holds = {(r.method, r.severity): r.for_.total_seconds() for r in [
            *noise.mwmb_rules(rep.slo), noise.threshold_rule(rep.slo)]}
        for severity, fs in fired.items():
            for a, b in pairwise(sorted(fs, key=lambda f: f.start)):
                assert a.labels != b.labels or a.end < b.active_since, (row["slo_id"], severity)
            hold = holds.get((row["method"], severity), holds.get((noise.MWMB, severity), 0.0))
            assert all(f.start - f.active_since == hold for f in fs), (row["slo_id"], row["method"], severity)
    assert any(r.for_ for s in replayed["by_slo"].values() for r in noise.mwmb_rules(s.slo))
    # The claim under test: MWMB sends fewer alerts than the plain threshold, and no more false ones.
    assert noise.reduction(rows, "pages") > 0
    mwmb = sum(r["false_pages"] + r["false_tickets"] for r in rows if r["method"] == noise.MWMB)
    assert mwmb <= sum(r["false_pages"] for r in rows if r["method"] == noise.THRESHOLD)
    assert noise.NOISE_DATASET.table(rows).num_rows == len(rows)


def test_the_replayed_ratio_is_the_raw_counters_ratio(devstack: dict[str, str], slo_truth: dict[str, Any]) -> None:
    """The inlined recording rule answers what the raw counter samples say (resets handled by hand), at the end
    of the very fast burn of each SLO — so the replay reads the SLI the rule file records."""
    url = devstack["DEVSTACK_PROM_URL"]
    with prometheus_client(url, timeout=120) as client:
        for slo in slo_history.slos_of(slo_truth):
            [event] = [e for e in slo_truth["incidents"] if e["slo_id"] == slo.id and e["name"] == "very fast burn"]
            at = event["end"]
            [rule] = [r for r in sli_rules(slo) if r["record"] == f"{RATIO}1h"]
            [answer] = client.query(noise.inline(f"{RATIO}1h" + _selector(slo), slo), at)
            assert str(rule["expr"]).strip() in noise.inline(f"{RATIO}1h" + _selector(slo), slo)
            errors = requests = 0.0
            for series in client.query(f'{slo_truth["metric"]}{{service="{slo.service}"}}[1h]', at):
                values = [float(v) for _, v in series["values"]]
                increase = sum(b - a if b >= a else b for a, b in pairwise(values))
                requests += increase
                errors += increase if series["metric"]["code"].startswith("5") else 0.0
            assert float(answer["value"][1]) == pytest.approx(errors / requests, rel=1e-6), slo.id


def _selector(slo: Any) -> str:
    return f'{{sloth_id="{slo.id}", sloth_service="{slo.service}", sloth_slo="{slo.name}"}}'
