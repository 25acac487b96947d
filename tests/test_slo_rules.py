"""Generated SLO rules: promtool accepts them, a generated promtool unit test per SLO proves each alert fires
and stays quiet, the factors follow the period, and Sloth's getting-started example gets Sloth's alerts."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from traceo_finops.slo import prove, rules
from traceo_finops.slo.burnrate import ALERT_WINDOWS
from traceo_finops.slo.spec import SLO, load_specs, parse_spec

DATA = Path(__file__).parent / "data" / "slo"
PROMTOOL = "/usr/bin/promtool"
PAIR = re.compile(r"ratio_rate(\w+)\{[^}]*\} > \(([\d.]+) \*")


def pairs(expr: str) -> list[tuple[str, str, float]]:
    """(short, long, factor) of each window pair of an MWMB alert expression (ours or Sloth's)."""
    found = PAIR.findall(expr)
    assert found and len(found) % 2 == 0, expr
    out = []
    for (short, k1), (long, k2) in zip(found[::2], found[1::2], strict=True):
        assert k1 == k2, expr
        out.append((short, long, float(k1)))
    return out


def alerts_by_severity(groups: list[dict]) -> dict[str, str]:
    return {r["labels"]["sloth_severity"]: r["expr"] for g in groups for r in g["rules"] if "alert" in r}


@pytest.fixture(scope="module")
def tiers() -> list[SLO]:
    return load_specs([DATA / "tiers.yml"])


@pytest.mark.unit
def test_windows_and_factors_match_sloths_generated_alerts_for_its_getting_started_example() -> None:
    """Issue item 6: same window pairs, same factors as Sloth's own output for the same spec."""
    ours = alerts_by_severity(rules.rule_groups(load_specs([DATA / "sloth-getting-started.yml"]))["groups"])
    sloth = alerts_by_severity(yaml.safe_load((DATA / "sloth-getting-started.gen-alerts.yml").read_text()))
    assert set(ours) == set(sloth) == {"page", "ticket"}
    for severity in ("page", "ticket"):
        assert pairs(ours[severity]) == pairs(sloth[severity])
    # ... and the budget they multiply: Sloth's 0.0009999999999999432 is 1 - 0.999 in float64.
    assert float(re.findall(r"\* ([\d.]+)\)", sloth["page"])[0]) == pytest.approx(
        float(re.findall(r"\* ([\d.]+)\)", ours["page"])[0]), rel=1e-9)


@pytest.mark.unit
@pytest.mark.parametrize("days, expected", [
    (30, [14.4, 6.0, 3.0, 1.0]),  # SRE Workbook table 5-8 and Sloth's defaults
    (28, [13.44, 5.6, 2.8, 0.933333]),
    (7, [3.36, 1.4, 0.7, 0.233333]),
])
def test_factors_derive_from_the_period(days: int, expected: list[float]) -> None:
    assert [w.factor(timedelta(days=days)) for w in ALERT_WINDOWS] == pytest.approx(expected)


@pytest.mark.unit
def test_period_ratio_is_request_weighted_for_events_and_says_when_it_is_not(tiers: list[SLO]) -> None:
    groups = rules.rule_groups(tiers)["groups"]
    period = {r["labels"]["sloth_slo"]: r for g in groups for r in g["rules"]
              if r.get("record") == "slo:sli_error:ratio_rate30d"}
    checkout = period["checkout-availability"]
    assert "sum_over_time(slo:sli_error:rate5m" in checkout["expr"]
    assert "sum_over_time(slo:sli_total:rate5m" in checkout["expr"]
    assert "count_over_time" not in checkout["expr"]
    assert checkout["labels"]["slo_ratio"] == "request_weighted"
    assert period["search-latency-ratio"]["labels"]["slo_ratio"] == "mean_of_5m_ratios"
    windows = sorted({r["labels"]["sloth_window"] for g in groups for r in g["rules"]
                      if str(r.get("record", "")).startswith("slo:sli_error:ratio_rate")})
    assert windows == sorted(["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"])


@pytest.mark.unit
def test_traffic_guard_only_where_asked(tiers: list[SLO]) -> None:
    exprs = alerts_by_severity(rules.rule_groups([s for s in tiers if s.name == "refunds-availability"])["groups"])
    assert "slo:sli_total:rate1h{" in exprs["page"] and "* 3600 >= 5000" in exprs["page"]
    assert "* 259200 >= 5000" in exprs["ticket"]
    plain = alerts_by_severity(rules.rule_groups([s for s in tiers if s.name == "cart-availability"])["groups"])
    assert ">= " not in plain["page"]


@pytest.mark.unit
def test_disabled_ticket_alert_is_not_generated() -> None:
    text = """version: prometheus/v1
service: s
slos:
  - name: a
    objective: 99
    sli: {raw: {error_ratio_query: "rate(e[{{.window}}])"}}
    alerting: {name: A, ticket_alert: {disable: true}}
"""
    groups = rules.rule_groups(parse_spec(text, "a.yml").slos)["groups"]
    assert set(alerts_by_severity(groups)) == {"page"}


@pytest.mark.integration
def test_promtool_checks_the_rule_file_and_the_mimir_namespace(tmp_path: Path, tiers: list[SLO]) -> None:
    rule_file = tmp_path / "slo.rules.yml"
    rule_file.write_text(rules.prometheus_rule_file(tiers))
    result = prove.check_rules(rule_file, PROMTOOL)
    assert result.ok, result.output
    assert "SUCCESS" in result.output
    namespace = yaml.safe_load(rules.mimir_namespace(tiers, "slo"))
    assert namespace["namespace"] == "slo"
    assert namespace["groups"] == yaml.safe_load(rule_file.read_text())["groups"]
    broken = tmp_path / "broken.yml"
    broken.write_text(rule_file.read_text().replace("slo:sli_error:ratio_rate5m", "slo:sli_error:ratio rate5m", 1))
    assert not prove.check_rules(broken, PROMTOOL).ok


@pytest.mark.integration
def test_generated_unit_tests_prove_each_slos_alerts(tmp_path: Path, tiers: list[SLO]) -> None:
    slos = [*tiers, *load_specs([DATA / "sloth-getting-started.yml"])]
    for slo in slos:
        test_file = prove.write_proof(slo, tmp_path)
        result = prove.run_rule_tests(test_file, PROMTOOL)
        assert result.ok, f"{slo.id}: {result.output}"
        names = [t["name"] for t in yaml.safe_load(test_file.read_text())["tests"]]
        assert any(": page " in n for n in names) and any(": quiet " in n for n in names)
        assert any(": low traffic " in n for n in names) == (slo.min_events is not None)


@pytest.mark.integration
def test_the_unit_test_fails_when_a_threshold_is_wrong(tmp_path: Path, tiers: list[SLO]) -> None:
    """The proof can fail: a page factor ten times too high never pages on the page scenario."""
    [cart] = [s for s in tiers if s.name == "cart-availability"]
    test_file = prove.write_proof(cart, tmp_path)
    rule_file = tmp_path / f"{cart.id}.proof-rules.yml"
    rule_file.write_text(rule_file.read_text().replace("(14.4 * 0.001)", "(144.0 * 0.001)")
                         .replace("(6.0 * 0.001)", "(60.0 * 0.001)"))
    result = prove.run_rule_tests(test_file, PROMTOOL)
    assert not result.ok
    assert "page" in result.output
