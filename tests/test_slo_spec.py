"""SLO specs: Sloth's prometheus/v1 files load unchanged; Traceo's tier/team/period/min_events; every bad spec
is refused with the file, the SLO and the problem named, and nothing is produced."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from traceo_finops.slo.errors import SpecError
from traceo_finops.slo.spec import Tier, load_specs, parse_spec

DATA = Path(__file__).parent / "data" / "slo"
pytestmark = pytest.mark.unit

GOOD_EVENTS = """
      events:
        error_query: sum(rate(http_requests_total{code=~"5.."}[{{.window}}]))
        total_query: sum(rate(http_requests_total[{{.window}}]))"""


def spec(slos: str, head: str = "") -> str:
    return f'version: "prometheus/v1"\nservice: "svc"\n{head}slos:\n{slos}'


def slo(name: str = "avail", objective: str = "objective: 99.9", sli: str = GOOD_EVENTS, extra: str = "") -> str:
    return f"  - name: {name}\n    {objective}\n{extra}    sli:{sli}\n"


def test_sloth_getting_started_loads_unchanged() -> None:
    [s] = load_specs([DATA / "sloth-getting-started.yml"])
    assert (s.service, s.name, s.objective, s.id) == ("myservice", "requests-availability", 99.9,
                                                      "myservice-requests-availability")
    assert s.budget == 0.001
    assert s.period == timedelta(days=30)
    assert s.alert_name == "MyServiceHighErrorRate"
    assert s.page.labels == {"severity": "pageteam", "routing_key": "myteam"}
    assert s.labels["tier"] == "2"  # Sloth's own label stays a label, not our tier
    assert s.tier is Tier.HIGH and s.team == "myteam"  # tier from the objective, team from the owner label


def test_tier_sets_the_default_objective_and_the_slo_team_label_wins() -> None:
    slos = load_specs([DATA / "tiers.yml"])
    assert {s.name: (s.tier, s.objective) for s in slos} == {
        "checkout-availability": (Tier.CRITICAL, 99.99), "cart-availability": (Tier.HIGH, 99.9),
        "refunds-availability": (Tier.STANDARD, 99.5), "search-latency-ratio": (Tier.BEST_EFFORT, 95.0)}
    assert {s.name: s.team for s in slos}["search-latency-ratio"] == "discovery"
    assert {s.name: s.team for s in slos}["cart-availability"] == "payments"


@pytest.mark.parametrize("period, days", [("28d", 28), ("7d", 7), ("30d", 30)])
def test_period_is_selectable(period: str, days: int) -> None:
    [s] = parse_spec(spec(slo(), head=f"period: {period}\n"), "p.yml").slos
    assert s.period == timedelta(days=days)


@pytest.mark.parametrize("text, problem", [
    (spec(slo(objective="objective: 100")), "objective 100.0 must be above 0 and below 100"),
    (spec(slo(objective="objective: 0")), "objective 0.0 must be above 0 and below 100"),
    (spec(slo(objective="objective: 120")), "objective 120.0 must be above 0 and below 100"),
    (spec(slo(objective="description: no objective")), "no objective and no tier"),
    (spec(slo(objective="objective: 90")), "too low for MWMB alerting"),
    (spec(slo(sli="\n      events:\n        error_query: sum(rate(x[5m]))\n"
                  "        total_query: sum(rate(y[{{.window}}]))")),
     "sli.events.error_query has no {{.window}}"),
    (spec(slo(sli="\n      raw:\n        error_ratio_query: sum(rate(x[{{.window}}])")),
     "sli.raw.error_ratio_query does not parse as PromQL"),
    (spec(slo() + slo()), "SLO 'avail': duplicate SLO name"),
    (spec(slo(), head="period: 2d\n"), "period 2d is shorter than the longest alert window (3d)"),
    (spec(slo(sli="\n      plugin:\n        id: sloth-common/availability")), "SLI plugin 'sloth-common/availability'"),
    (spec(slo(sli=GOOD_EVENTS + "\n      raw:\n        error_ratio_query: x")), "exactly one of events, raw"),
    (spec(slo(extra="    objectve: 99\n")), "SLO 'avail': objectve: Extra inputs are not permitted"),
    (spec(slo(extra="    min_events: 10\n", sli="\n      raw:\n        error_ratio_query: rate(x[{{.window}}])")),
     "min_events needs an events SLI"),
    ('version: "prometheus/v2"\nservice: s\nslos:\n' + slo(), "version 'prometheus/v2' is not 'prometheus/v1'"),
    ("version: [", "not valid YAML"),
    ("- a list", "not an SLO spec"),
])
def test_bad_specs_name_file_slo_and_problem(text: str, problem: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(text, "team/bad.yml")
    message = str(err.value)
    assert message.startswith("team/bad.yml: ")
    assert problem in message


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    text = spec(slo(name="a", objective="objective: 100") + slo(name="b", sli="\n      raw:\n"
                                                                   "        error_ratio_query: rate(x[5m])"))
    with pytest.raises(SpecError) as err:
        parse_spec(text, "x.yml")
    assert "SLO 'a': objective 100.0" in str(err.value)
    assert "SLO 'b': sli.raw.error_ratio_query has no {{.window}}" in str(err.value)


def test_same_slo_in_two_files_is_refused(tmp_path: Path) -> None:
    for name in ("one.yml", "two.yml"):
        (tmp_path / name).write_text(spec(slo()))
    with pytest.raises(SpecError, match=r"two.yml: SLO .avail.: service .svc. already has an SLO .*/one.yml"):
        load_specs([tmp_path / "one.yml", tmp_path / "two.yml"])


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope\.yml: cannot read the spec"):
        load_specs([tmp_path / "nope.yml"])


def test_devstack_example_specs_load() -> None:
    specs = sorted((Path(__file__).parents[1] / "devstack" / "assets" / "slo").glob("*.yml"))
    slos = load_specs(specs)
    assert {(s.service, s.tier, s.team) for s in slos} == {("checkout-api", Tier.HIGH, "payments"),
                                                          ("search-api", Tier.BEST_EFFORT, "discovery")}
