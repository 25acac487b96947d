"""A Mimir tenant's whole audit against a fake Mimir on 127.0.0.1 built from the recorded answers.

The fake (tests/test_cardinality_collect.py) holds the 3,113 recorded active series plus series that are
still in the ingesters' memory but no longer written, and answers each ``count_method`` as Mimir's
ingester does. What must hold for both methods: the census, the showback and ``series_after`` count the
same series (their totals agree, no PromQL is sent); a merge is judged on series written together; a
tenant with no series is a finding, in the report and the digest; tenant names follow Mimir's rule.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.mimir import ACTIVE, FakeMimir, Series, _fixture, _mimir_client
from traceo_finops.cardinality.config_audit import CHECK_NO_SERIES, CONFIG_FINDINGS
from traceo_finops.cardinality.dataset import CARDINALITY, SHOWBACK, cardinality_digest
from traceo_finops.cardinality.workflow import MimirSeriesCounter, audit_source, build
from traceo_finops.config import CardinalitySettings, ConfigError, FinopsConfig, Source, load_config
from traceo_finops.kit.context import Target, TargetKind
from traceo_finops.kit.outcome import TargetResult
from traceo_finops.quality import check

END = datetime(2026, 11, 28, tzinfo=UTC)
START = END - timedelta(days=1)
USD_PER_1K = 1.0
RULES = """groups:
  - name: api
    rules:
      - record: route:http_requests:rate5m
        expr: sum by (route) (rate(http_requests_total[5m]))
      - record: instance:build_info:sum
        expr: sum by (instance) (build_info)
"""


def _world() -> tuple[list[Series], list[Series]]:
    """(active, stale): the recorded series plus two metrics whose unneeded labels churn.

    ``http_requests_total``: 3 routes x 4 live pods (written now) and 2 routes x 5 old pods (in memory,
    no longer written); the rule needs ``route`` only. ``build_info``: one live series per instance and an
    old ``version`` of one instance still in memory; the rule needs ``instance`` only.
    """
    active = [dict(s) for s in ACTIVE]
    stale: list[Series] = []
    for route in ("r1", "r2", "r3"):
        active += [{"__name__": "http_requests_total", "route": route, "pod": f"p{i}", "job": "api",
                    "instance": "10.0.0.1:80", "team": "payments"} for i in range(4)]
    for route in ("r1", "r2"):
        stale += [{"__name__": "http_requests_total", "route": route, "pod": f"old{i}", "job": "api",
                   "instance": "10.0.0.1:80", "team": "payments"} for i in range(5)]
    active += [{"__name__": "build_info", "instance": i, "job": "api", "version": "2.0", "team": "core"}
               for i in ("i1", "i2")]
    stale += [{"__name__": "build_info", "instance": "i1", "job": "api", "version": "1.9", "team": "core"}]
    return active, stale


@pytest.fixture
def fake_mimir() -> Iterator[Any]:
    fakes: list[FakeMimir] = []

    def make(series: list[Series], tenants: tuple[str, ...], **kw: Any) -> FakeMimir:
        fakes.append(FakeMimir(series, tenants, **kw))
        return fakes[-1]

    yield make
    for f in fakes:
        f.server.close()


@pytest.fixture
def mimir_world(fake_mimir: Any) -> Any:
    active, stale = _world()
    return fake_mimir(active, ("team-a",), stale=stale, open_tenants=True)


def _settings(tmp_path: Path) -> CardinalitySettings:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    return CardinalitySettings(owner_label="team", rule_files=[str(rules)])


def _audit(url: str, tenant: str, count_method: str, tmp_path: Path) -> dict[str, Any]:
    with _mimir_client(url, tenant) as client:
        return audit_source(client, "prod-mimir", tenant, START, END, _settings(tmp_path), USD_PER_1K, tmp_path,
                            count_method)


# ---- one notion of a series per count method ---------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("count_method", ["inmemory", "active"])
def test_census_showback_and_series_after_count_the_same_series(mimir_world: Any, tmp_path: Path,
                                                                count_method: str) -> None:
    active, stale = _world()
    pool = active + (stale if count_method == "inmemory" else [])
    result = _audit(mimir_world.server.url, "team-a", count_method, tmp_path)
    rows = {r["metric"]: r for r in result["cardinality"]}

    # Census: exactly the series of the chosen set, per metric.
    assert {m: r["series"] for m, r in rows.items()} == dict(Counter(s["__name__"] for s in pool))
    # Showback: the same set by owner, series without the owner label unattributed: the totals agree.
    owners = {r["owner"]: r["series"] for r in result["showback"]}
    assert owners == dict(Counter(s.get("team", "unattributed") for s in pool))
    assert sum(owners.values()) == sum(r["series"] for r in rows.values()) == result["series_total"] == len(pool)
    cost = sum(r["monthly_cost_usd"] for r in result["showback"])
    assert cost == pytest.approx(sum(r["monthly_cost_usd"] for r in rows.values()))
    # With `active`, the owner split of the recorded series is the one Mimir itself recorded by job.
    if count_method == "active":
        recorded = _fixture("mimir_cardinality_label_values_job_active.json")["labels"][0]["cardinality"]
        by_job = Counter(s["job"] for s in ACTIVE)
        assert {e["label_value"]: e["series_count"] for e in recorded} == dict(by_job)

    # Every count came from the cardinality API with this count method; PromQL was never asked.
    hits = mimir_world.server.hits
    assert not [h for h in hits if "/api/v1/query" in h[0]]
    counted = [q for p, q, _ in hits if p.endswith(("/label_values", "/label_names"))]
    assert counted and all(q["count_method"] == [count_method] for q in counted)
    assert result["findings"] == []
    table = CARDINALITY.table(result["cardinality"])
    assert check(CARDINALITY.name, table, CARDINALITY.expectations).success
    assert check(SHOWBACK.name, SHOWBACK.table(result["showback"]), SHOWBACK.expectations).success


@pytest.mark.unit
@pytest.mark.parametrize("count_method", ["inmemory", "active"])
def test_series_after_removes_what_the_merge_folds_among_series_written_together(
        mimir_world: Any, tmp_path: Path, count_method: str) -> None:
    active, stale = _world()
    pool = active + (stale if count_method == "inmemory" else [])
    result = _audit(mimir_world.server.url, "team-a", count_method, tmp_path)
    rows = {r["metric"]: r for r in result["cardinality"]}

    # Merging `pod` (and `team`) away folds the 12 live series into 3 (one per route): 9 removed, counted on
    # Mimir's own active listing of the metric. `series_after` is the census minus those 9: exact for
    # `active` (3), a lower bound of the saving for `inmemory` (the 10 old series cannot collide).
    live = [s for s in active if s["__name__"] == "http_requests_total"]
    merged = len({(s["instance"], s["job"], s["route"]) for s in live})
    census = sum(1 for s in pool if s["__name__"] == "http_requests_total")
    h = rows["http_requests_total"]
    assert (h["suggestion"], sorted(h["unneeded_labels"])) == ("aggregate", ["pod", "team"])
    assert h["series"] == census and h["series_after"] == h["series_if_aggregated"] == census - (len(live) - merged)
    assert h["series_after"] == (3 if count_method == "active" else 13)
    assert h["monthly_saving_usd"] == pytest.approx((len(live) - merged) * USD_PER_1K / 1000)

    # build_info: its old version is still in memory, but no two series *written together* differ only in
    # `version`: dropping the label merges nothing (no duplicate samples), whatever the count method.
    b = rows["build_info"]
    assert (b["suggestion"], b["series_after"]) == ("drop_labels", b["series"])
    assert b["series"] == (3 if count_method == "inmemory" else 2)
    listings = [q["selector"][0] for p, q, _ in mimir_world.server.hits if p.endswith("/active_series")]
    assert sorted(listings) == ["build_info", "http_requests_total"]


@pytest.mark.unit
def test_series_counter_never_turns_a_merge_into_no_merge_under_churn(mimir_world: Any) -> None:
    """The listing decides whether series merge; the answer stays below the census even if the census
    (taken a moment earlier) counted fewer series than the listing now shows."""
    kept = ("instance", "job", "route")  # http_requests_total: 12 live series listed, 3 kept, 9 removed
    with _mimir_client(mimir_world.server.url, "team-a") as client:
        counts = {n: MimirSeriesCounter(client, {"http_requests_total": n})("http_requests_total", kept)
                  for n in (5, 11, 12, 22)}
        no_merge = MimirSeriesCounter(client, {"build_info": 3})("build_info", ("instance", "job"))
        unknown = MimirSeriesCounter(client, {})("http_requests_total", kept)
    # Census below the listing: never above the census, never below what the listing keeps.
    assert counts == {5: 3, 11: 3, 12: 3, 22: 13}
    assert no_merge == 3 and unknown == 3


# ---- a tenant without series ---------------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("count_method", ["inmemory", "active"])
def test_tenant_without_series_is_a_finding_in_report_and_digest(mimir_world: Any, tmp_path: Path,
                                                                 count_method: str) -> None:
    result = _audit(mimir_world.server.url, "team-aa", count_method, tmp_path)  # a typo of team-a
    assert result["cardinality"] == [] and result["showback"] == [] and result["series_total"] == 0
    [finding] = result["findings"]
    assert (finding["check_id"], finding["severity"], finding["tenant"]) == (CHECK_NO_SERIES, "high", "team-aa")
    assert finding["recommendation"].startswith("no series: misspelled tenant?")
    assert "'team-aa'" in finding["recommendation"] and "'team-aa'" in finding["evidence"]
    assert f"count_method={count_method}" in finding["evidence"]

    # build(): the finding is a config_findings row next to the other targets' rows, and passes its checks.
    target = Target(TargetKind.TENANT, "prod-mimir", "team-aa")
    ok = _audit(mimir_world.server.url, "team-a", count_method, tmp_path)
    report, results = build(None, [TargetResult(target, payload=result).as_dict(),  # type: ignore[arg-type]
                                   TargetResult(target, payload=ok).as_dict()], [])
    datasets = {d.name: rows for d, rows in report.datasets}
    assert [r["check_id"] for r in datasets[CONFIG_FINDINGS.name]] == [CHECK_NO_SERIES]
    table = CONFIG_FINDINGS.table(datasets[CONFIG_FINDINGS.name])
    assert check(CONFIG_FINDINGS.name, table, CONFIG_FINDINGS.expectations).success
    assert all(r.ok for r in results)

    # The digest says it first, and in its facts.
    digest = cardinality_digest(datasets[CARDINALITY.name], datasets[SHOWBACK.name], "file:///r", "2026-11-28", 5,
                                0, table.to_pylist())
    assert digest.summary.startswith("*No series at all* for prod-mimir/team-aa: misspelled tenant?")
    assert digest.facts["Tenants without series"] == "prod-mimir/team-aa"
    quiet = cardinality_digest(datasets[CARDINALITY.name], datasets[SHOWBACK.name], "file:///r", "2026-11-28", 5, 0)
    assert "Tenants without series" not in quiet.facts and "misspelled" not in quiet.summary


@pytest.mark.unit
def test_active_tenant_without_active_series_says_what_is_in_memory(mimir_world: Any, tmp_path: Path) -> None:
    """A tenant whose writes stopped: no active series, but the ingesters still hold some."""
    mimir_world.stale_by_tenant["team-paused"] = [{"__name__": "x_total", "pod": str(i)} for i in range(7)]
    [finding] = _audit(mimir_world.server.url, "team-paused", "active", tmp_path)["findings"]
    assert "still hold 7 in-memory series" in finding["evidence"]
    [inmemory] = [r for r in _audit(mimir_world.server.url, "team-paused", "inmemory", tmp_path)["cardinality"]]
    assert inmemory["series"] == 7


# ---- configuration: count_method and tenant names -------------------------------------------------------------

def _config(source: dict[str, Any]) -> dict[str, Any]:
    return {"sources": [{"name": "m", **source}]}


@pytest.mark.unit
@pytest.mark.parametrize(("tenant", "shown"), [
    ("équipe-données", "contains 'é'"),
    ("日本", "contains '日', '本'"),
    ("team a", "contains ' '"),
    ("team/a", "contains '/'"),
    ("a|b", "contains '|'"),  # Mimir's separator of federated tenants
    ("..", "is reserved"),
    ("t" * 151, "is 151 characters long"),
    ("", "is empty"),
])
def test_invalid_tenant_is_refused_at_config_time(tmp_path: Path, tenant: str, shown: str) -> None:
    import yaml

    path = tmp_path / "finops.yaml"
    path.write_text(yaml.safe_dump(_config({"flavor": "mimir", "tenants": ["team-a", tenant]}), allow_unicode=True),
                    encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "sources.0.tenants" in message and f"tenant {tenant!r} {shown}" in message
    assert "a-z A-Z 0-9 and ! - _ . * ' ( )" in message and "150" in message and "'team-a'" not in message


@pytest.mark.unit
def test_valid_tenants_and_count_method_are_accepted() -> None:
    source = Source.model_validate({"name": "m", "flavor": "mimir", "tenants": ["team-a", "Org_1.prod!*'(x)"],
                                    "count_method": "active"})
    assert source.count_method == "active" and source.tenants[1] == "Org_1.prod!*'(x)"
    assert Source.model_validate({"name": "m", "flavor": "mimir"}).census_count_method == "inmemory"
    assert FinopsConfig.model_validate(_config({})).sources[0].census_count_method == "inmemory"
    # A valid configuration survives a round trip (dumped defaults are not "set" keys).
    for cfg in (FinopsConfig.model_validate(_config({})),
                FinopsConfig.model_validate({"sources": [{"name": "p"}]})):
        assert FinopsConfig.model_validate(cfg.model_dump(mode="json")) == cfg


@pytest.mark.unit
@pytest.mark.parametrize(("source", "problem"), [
    ({"count_method": "active"}, "count_method is only meaningful for flavor 'mimir'"),
    ({"flavor": "mimir", "count_method": "everything"}, "'inmemory' or 'active'"),
])
def test_count_method_is_validated(source: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        FinopsConfig.model_validate(_config(source))


@pytest.mark.unit
def test_configured_count_method_reaches_the_census(fake_mimir: Any, tmp_path: Path) -> None:
    """The DAG's audit step reads count_method from the tenant's source."""
    import yaml

    from traceo_finops.cardinality import workflow
    from traceo_finops.kit.context import ConnectionFields, RunContext
    from traceo_finops.window import Window

    active, stale = _world()
    fake = fake_mimir(active, ("team-a",), stale=stale)
    cfg_path = tmp_path / "finops.yaml"
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    cfg_path.write_text(yaml.safe_dump({
        "sources": [{"name": "prod-mimir", "flavor": "mimir", "tenants": ["team-a"], "count_method": "active"}],
        "workflows": {"cardinality": {"owner_label": "team", "rule_files": [str(rules)]}}}))
    cfg = load_config(cfg_path)
    ctx = RunContext(cfg, "cardinality", "finops_cardinality", "manual__1", Window(START, END),
                     connections=lambda conn_id: ConnectionFields(host=fake.server.url, extra={"retries": 0}))
    [target] = [Target.from_dict(t) for t in workflow.targets(ctx)]
    result = workflow.audit(ctx, target)
    assert result["series_total"] == len(active)
    assert {q["count_method"][0] for p, q, _ in fake.server.hits if "count_method" in q} == {"active"}
