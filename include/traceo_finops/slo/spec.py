"""SLO specs: Sloth's ``prometheus/v1`` YAML, unchanged, plus Traceo's optional ``tier``, ``team`` and
``period`` keys and a per-SLO ``min_events`` traffic guard.

Field names follow slok/sloth ``pkg/prometheus/api/v1/v1.go`` (``Spec``, ``SLO``, ``SLI``, ``SLIEvents``,
``SLIRaw``, ``SLIPlugin``, ``Alerting``, ``Alert``). Sloth's plugin keys (``slo_plugins``, an alert's ``for``
from its ``alert_for`` contrib plugin) are accepted; an SLI plugin is refused, because its query lives in Go
code we cannot run. Unknown keys are refused so that a typo is an error, not a silently missing alert.

Every problem of a file is reported at once, as ``<file>: SLO '<name>': <problem>``; a spec with any problem
produces nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from traceo_finops.slo.burnrate import (
    ALERT_WINDOWS,
    LONGEST_ALERT_WINDOW,
    SLI_WINDOWS,
    parse_duration,
    prom_duration,
)
from traceo_finops.slo.errors import SpecError

SLOTH_VERSION = "prometheus/v1"
DEFAULT_PERIOD = timedelta(days=30)
WINDOW_VAR = re.compile(r"\{\{\s*\.window\s*\}\}")
# Prometheus label names; Sloth's SLO names end up in label values and rule group names.
SLO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Tier(StrEnum):
    """The seed's four SLO tiers; a tier sets the default objective and how alerts are routed."""

    CRITICAL = "critical"
    HIGH = "high"
    STANDARD = "standard"
    BEST_EFFORT = "best_effort"

    @property
    def objective(self) -> float:
        return TIER_OBJECTIVES[self]

    @classmethod
    def of_objective(cls, objective: float) -> Tier:
        """The strictest tier whose objective ``objective`` meets (an SLO with no ``tier``)."""
        return next((t for t in cls if objective >= TIER_OBJECTIVES[t]), cls.BEST_EFFORT)


TIER_OBJECTIVES: dict[Tier, float] = {Tier.CRITICAL: 99.99, Tier.HIGH: 99.9, Tier.STANDARD: 99.5,
                                      Tier.BEST_EFFORT: 95.0}


class _Sloth(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Alert(_Sloth):
    disable: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    for_: str | None = Field(default=None, alias="for")  # Sloth's contrib alert_for plugin


class Alerting(_Sloth):
    name: str | None = None  # Sloth requires it; Traceo names the alert after the SLO when it is missing
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    page_alert: Alert = Field(default_factory=Alert)
    ticket_alert: Alert = Field(default_factory=Alert)


class SLIEvents(_Sloth):
    error_query: str
    total_query: str


class SLIRaw(_Sloth):
    error_ratio_query: str


class SLIPlugin(_Sloth):
    id: str
    options: dict[str, Any] = Field(default_factory=dict)


class SLI(_Sloth):
    events: SLIEvents | None = None
    raw: SLIRaw | None = None
    plugin: SLIPlugin | None = None


class SLOModel(_Sloth):
    name: str
    objective: float | None = None  # percent; Traceo: defaults to the tier's
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    sli: SLI
    alerting: Alerting = Field(default_factory=Alerting)
    slo_plugins: dict[str, Any] | None = None  # Sloth's SLO plugin chain: accepted, not run
    # Traceo's extensions.
    tier: Tier | None = None
    min_events: int | None = Field(default=None, ge=1)  # fewer events in an alert's long window: no alert


class SpecModel(_Sloth):
    version: str
    service: str
    labels: dict[str, str] = Field(default_factory=dict)
    slos: list[SLOModel] = Field(default_factory=list)
    slo_plugins: dict[str, Any] | None = None
    # Traceo's extensions.
    tier: Tier | None = None
    team: str | None = None
    period: str | None = None


@dataclass(frozen=True)
class SLO:
    """One validated SLO, ready for rule generation and budget queries."""

    file: str
    service: str
    name: str
    objective: float  # percent, 0 < objective < 100
    tier: Tier
    team: str
    period: timedelta
    description: str
    labels: Mapping[str, str]  # the spec's and the SLO's, merged (the SLO's win)
    error_query: str | None  # events SLI, with {{.window}}
    total_query: str | None
    error_ratio_query: str | None  # raw SLI, with {{.window}}
    alert_name: str
    alert_labels: Mapping[str, str]
    alert_annotations: Mapping[str, str]
    page: Alert
    ticket: Alert
    min_events: int | None

    @property
    def id(self) -> str:
        """Sloth's ``sloth_id``: service and SLO name."""
        return f"{self.service}-{self.name}"

    @property
    def budget(self) -> float:
        """The error budget as a ratio (99.9 → 0.001), rounded so that 1 - 0.999 prints as 0.001."""
        return round(1 - self.objective / 100, 12)

    @property
    def events(self) -> bool:
        return self.error_query is not None

    def query(self, template: str, window: timedelta) -> str:
        return WINDOW_VAR.sub(prom_duration(window), template)


@dataclass(frozen=True)
class SpecFile:
    path: str
    service: str
    slos: tuple[SLO, ...]


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", text) if part)


def _check_query(label: str, template: str, problems: list[str]) -> None:
    if not WINDOW_VAR.search(template):
        problems.append(f"{label} has no {{{{.window}}}}")
        return
    for window in (SLI_WINDOWS[0], LONGEST_ALERT_WINDOW):
        try:
            promql_parser.parse(WINDOW_VAR.sub(prom_duration(window), template))
        except ValueError as exc:
            problems.append(f"{label} does not parse as PromQL: {exc}")
            return


def _pydantic_problems(exc: ValidationError, raw: Mapping[str, Any]) -> list[str]:
    problems = []
    names = [s.get("name") if isinstance(s, Mapping) else None for s in raw.get("slos") or []]
    for err in exc.errors():
        loc = list(err["loc"])
        where = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and loc[0] == "slos" and isinstance(loc[1], int) and loc[1] < len(names):
            name = names[loc[1]] or f"#{loc[1] + 1}"
            where = f"SLO {name!r}: " + ".".join(str(p) for p in loc[2:])
        problems.append(f"{where}: {err['msg']}")
    return problems


def parse_spec(text: str, path: str, default_period: timedelta = DEFAULT_PERIOD) -> SpecFile:
    """Validate one spec file's text; raise :class:`SpecError` listing every problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, Mapping):
        raise SpecError(f"{path}: not an SLO spec (expected a mapping with version, service and slos)")
    try:
        model = SpecModel.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{path}: " + "; ".join(_pydantic_problems(exc, raw))) from None

    problems: list[str] = []
    if model.version != SLOTH_VERSION:
        problems.append(f"version {model.version!r} is not {SLOTH_VERSION!r}")
    if not model.slos:
        problems.append("no SLOs")
    period = default_period
    if model.period is not None:
        try:
            period = parse_duration(model.period)
        except ValueError as exc:
            problems.append(f"period: {exc}")
    if period < LONGEST_ALERT_WINDOW:
        problems.append(f"period {prom_duration(period)} is shorter than the longest alert window "
                        f"({prom_duration(LONGEST_ALERT_WINDOW)})")
    seen: set[str] = set()
    slos: list[SLO] = []
    for s in model.slos:
        mine: list[str] = []
        if s.name in seen:
            mine.append("duplicate SLO name")
        seen.add(s.name)
        if not SLO_NAME.match(s.name):
            mine.append("name must start with a letter or digit and hold only letters, digits, '_', '.', '-'")
        tier = s.tier or model.tier
        objective = s.objective if s.objective is not None else (tier.objective if tier else None)
        if objective is None:
            mine.append("no objective and no tier to default it from")
        elif not 0 < objective < 100:
            mine.append(f"objective {objective} must be above 0 and below 100 (100 leaves no error budget)")
        else:
            fastest = max(w.factor(period) for w in ALERT_WINDOWS)
            if fastest * round(1 - objective / 100, 12) >= 1:
                mine.append(f"objective {objective} is too low for MWMB alerting over {prom_duration(period)}: "
                            f"the page threshold {fastest} × budget is not below a 100 % error ratio")
        kinds = [k for k in ("events", "raw", "plugin") if getattr(s.sli, k) is not None]
        if len(kinds) != 1:
            mine.append(f"sli must have exactly one of events, raw or plugin (has {kinds or 'none'})")
        elif s.sli.plugin is not None:
            mine.append(f"SLI plugin {s.sli.plugin.id!r} is not supported (its query is Go code): "
                        "use sli.events or sli.raw")
        if s.sli.events is not None:
            _check_query("sli.events.error_query", s.sli.events.error_query, mine)
            _check_query("sli.events.total_query", s.sli.events.total_query, mine)
        if s.sli.raw is not None:
            _check_query("sli.raw.error_ratio_query", s.sli.raw.error_ratio_query, mine)
            if s.min_events is not None:
                mine.append("min_events needs an events SLI (a raw error ratio has no event count)")
        problems += [f"SLO {s.name!r}: {p}" for p in mine]
        if mine or objective is None:
            continue
        labels = {**model.labels, **s.labels}
        # The SLO's own team label, else the spec's team, else the labels' team or owner, else the service.
        team = s.labels.get("team") or model.team or labels.get("team") or labels.get("owner") or model.service
        slos.append(SLO(
            file=path, service=model.service, name=s.name, objective=objective,
            tier=tier or Tier.of_objective(objective), team=team, period=period, description=s.description,
            labels=labels,
            error_query=s.sli.events.error_query if s.sli.events else None,
            total_query=s.sli.events.total_query if s.sli.events else None,
            error_ratio_query=s.sli.raw.error_ratio_query if s.sli.raw else None,
            alert_name=s.alerting.name or f"{_camel(model.service)}{_camel(s.name)}SLOBurnRate",
            alert_labels=s.alerting.labels, alert_annotations=s.alerting.annotations,
            page=s.alerting.page_alert, ticket=s.alerting.ticket_alert, min_events=s.min_events,
        ))
    if problems:
        raise SpecError(f"{path}: " + "; ".join(problems))
    return SpecFile(path=path, service=model.service, slos=tuple(slos))


def load_specs(paths: Iterable[Path | str], default_period: timedelta = DEFAULT_PERIOD) -> list[SLO]:
    """Every SLO of every file; the first invalid file raises, and SLO ids must be unique across files."""
    slos: list[SLO] = []
    where: dict[str, str] = {}
    for path in paths:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise SpecError(f"{p}: cannot read the spec: {exc.strerror or exc}") from None
        for slo in parse_spec(text, str(p), default_period).slos:
            if slo.id in where:
                raise SpecError(f"{p}: SLO {slo.name!r}: service {slo.service!r} already has an SLO of this name "
                                f"in {where[slo.id]}")
            where[slo.id] = str(p)
            slos.append(slo)
    return slos


def spec_paths(patterns: Sequence[str], root: Path) -> list[Path]:
    """The spec files matching ``patterns`` (paths or globs, relative to ``root`` unless absolute)."""
    import glob

    found: list[Path] = []
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(root / pattern)
        found += [Path(m) for m in sorted(glob.glob(full))] if glob.has_magic(full) else [Path(full)]
    return found
