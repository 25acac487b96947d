"""Proof that the generated rules are valid and that each SLO's alerts fire, and stay quiet, when they should.

``promtool check rules`` validates the rule file. For each SLO, :func:`unit_test` writes a ``promtool test
rules`` file over synthetic request counters: the SLO's rules are generated once more for a *proof twin* —
the same objective, period, window pairs, factors, ``for:``, labels and traffic guard, with the SLI queries
replaced by ``sum(rate(slo_proof_errors_total[w])) / sum(rate(slo_proof_requests_total[w]))`` — because
counters that satisfy an arbitrary user query cannot be synthesised in general. The user's own queries are
checked by parsing (spec) and by ``promtool check rules``. Scenarios, each at a constant error ratio r:

- **page**: r above every page factor × budget → the page and the ticket alert fire;
- **ticket**: r between the lowest ticket and the lowest page threshold → only the ticket alert fires;
- **quiet**: r at half the lowest ticket threshold → nothing fires;
- **low traffic** (with ``min_events``): every request fails, but fewer than ``min_events`` arrive → nothing.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import yaml

from traceo_finops.shapes import Json
from traceo_finops.slo.burnrate import parse_duration, prom_duration, windows_of
from traceo_finops.slo.errors import ToolUnavailable
from traceo_finops.slo.rules import alert_rules, prometheus_rule_file
from traceo_finops.slo.spec import SLO, Alert

PROOF_ERRORS = "slo_proof_errors_total"
PROOF_REQUESTS = "slo_proof_requests_total"
STEP = timedelta(minutes=1)
BASE_RATE = 600.0  # requests per minute of the synthetic service


@dataclass(frozen=True)
class Scenario:
    name: str
    error_ratio: float
    requests_per_minute: float
    fires: tuple[str, ...]  # sloth_severity values expected firing


def twin(slo: SLO) -> SLO:
    """``slo`` with synthetic SLI queries and no user annotations (their templates are not ours to expand)."""
    return replace(
        slo, error_query=f"sum(rate({PROOF_ERRORS}[{{{{.window}}}}]))",
        total_query=f"sum(rate({PROOF_REQUESTS}[{{{{.window}}}}]))", error_ratio_query=None,
        alert_annotations={}, page=slo.page.model_copy(update={"annotations": {}}),
        ticket=slo.ticket.model_copy(update={"annotations": {}}))


def _for(alert: Alert) -> timedelta:
    return parse_duration(alert.for_) if alert.for_ else timedelta(0)


def eval_time(slo: SLO) -> timedelta:
    """Late enough for every alert's ``for:`` to have elapsed, with 15 minutes to spare."""
    return max(_for(slo.page), _for(slo.ticket)) + timedelta(minutes=15)


def scenarios(slo: SLO) -> list[Scenario]:
    b = slo.budget
    page = [w.factor(slo.period) for w in windows_of("page")]
    ticket = [w.factor(slo.period) for w in windows_of("ticket")]
    minutes = eval_time(slo) / STEP
    rate = BASE_RATE if slo.min_events is None else max(BASE_RATE, math.ceil(2 * slo.min_events / minutes))
    top = max(page) * b  # spec validation guarantees top < 1
    out = [
        Scenario("page", min(2 * top, (1 + top) / 2), rate, ("page", "ticket")),
        Scenario("ticket", math.sqrt(min(ticket) * min(page)) * b, rate, ("ticket",)),
        Scenario("quiet", 0.5 * min(ticket) * b, rate, ()),
    ]
    if slo.min_events is not None:
        out.append(Scenario("low traffic", 1.0, slo.min_events / (2 * minutes), ()))
    return out


def _expand(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def unit_test(slo: SLO, rule_file: str) -> dict[str, Json]:
    """The ``promtool test rules`` content for ``slo``, reading the twin's rules from ``rule_file``."""
    proof = twin(slo)
    at = eval_time(slo)
    samples = int(at / STEP) + 1
    name = proof.alert_name
    base = {**proof.labels, "sloth_id": proof.id, "sloth_service": proof.service, "sloth_slo": proof.name}
    expected: dict[str, dict[str, Json]] = {}
    for rule in alert_rules(proof):
        labels = {**base, **rule["labels"]}
        expected[rule["labels"]["sloth_severity"]] = {
            "exp_labels": labels,
            "exp_annotations": {k: _expand(v, labels) for k, v in rule["annotations"].items()}}
    tests: list[Json] = []
    for sc in scenarios(proof):
        errors = sc.requests_per_minute * sc.error_ratio
        tests.append({
            "name": f"{slo.id}: {sc.name} (error ratio {sc.error_ratio:.6g})",
            "interval": prom_duration(STEP),
            "input_series": [
                {"series": PROOF_REQUESTS, "values": f"0+{sc.requests_per_minute!r}x{samples}"},
                {"series": PROOF_ERRORS, "values": f"0+{errors!r}x{samples}"},
            ],
            "alert_rule_test": [{"eval_time": prom_duration(at), "alertname": name,
                                 "exp_alerts": [expected[s] for s in sc.fires if s in expected]}],
        })
    return {"rule_files": [rule_file], "evaluation_interval": prom_duration(STEP), "tests": tests}


def write_proof(slo: SLO, directory: Path) -> Path:
    """The twin's rule file and its test file in ``directory``; returns the test file."""
    directory.mkdir(parents=True, exist_ok=True)
    rules = directory / f"{slo.id}.proof-rules.yml"
    rules.write_text(prometheus_rule_file([twin(slo)]))
    test = directory / f"{slo.id}.test.yml"
    test.write_text(yaml.dump(unit_test(slo, rules.name), Dumper=_NoAliases, sort_keys=False, width=1000))
    return test


class _NoAliases(yaml.SafeDumper):
    """Every expected alert written out in full (no ``&id001`` anchors): the file is read by people too."""

    def ignore_aliases(self, data: object) -> bool:
        return True


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    output: str


def run_tool(args: list[str], cwd: Path | None = None, timeout: float = 60) -> ToolResult:
    if shutil.which(args[0]) is None:
        raise ToolUnavailable(f"{args[0]} is not installed (make prometheus installs promtool and amtool)")
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)
    return ToolResult(done.returncode == 0, (done.stdout + done.stderr).strip())


def check_rules(path: Path, promtool: str = "promtool") -> ToolResult:
    return run_tool([promtool, "check", "rules", str(path)])


def run_rule_tests(test_file: Path, promtool: str = "promtool") -> ToolResult:
    return run_tool([promtool, "test", "rules", test_file.name], cwd=test_file.parent)
