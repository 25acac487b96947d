"""Pure decisions: which logged queries are one group, what to record for them, under which name, and the
rewritten queries. No I/O (see ``collect`` and ``prove``).

1. **Groups.** Every distinct query text is parsed once (:class:`~.normalize.Normalizer`) and filed under its
   group key (its canonical form with Grafana's per-refresh parts folded, see ``normalize``); a group's cost is
   the evaluation seconds of all its executions (or the samples they touched, when the log has them).
2. **Sites.** The sub-expression worth recording is an aggregation (``sum``, ``min``, ``max``, ``count``,
   ``avg``, ``group``; grouped ``by`` or not at all) directly over ``rate``/``irate``/``increase`` of one
   metric's range selector — e.g. ``sum by (le, route) (rate(x_bucket[5m]))``; whatever is outside
   (``histogram_quantile``, a division, a ``topk``) stays in the query. Nothing inside a subquery is taken (a
   subquery evaluates at its own steps, not at the rule's), nor a selector with ``offset`` or ``@``.
3. **What the rule keeps.** A label matcher with the same value in every spelling of the group stays in the
   rule; one whose value varies (a template variable) is lifted: its label joins the rule's ``by`` and the
   matcher moves to the rewritten query, so one rule serves every value. Re-aggregating the finer series gives
   the same numbers: ``sum``/``min``/``max``/``group`` again, ``count`` becomes ``sum``; ``avg`` is recorded only
   as written.
4. **Names** follow https://prometheus.io/docs/practices/rules/: ``level:metric:operations`` — level = the
   rule's ``by`` labels, metric without ``_total`` under a rate, operations newest first with ``_sum``
   omitted (``rate5m``, ``max_rate5m``).
5. **Existing rules and merging.** A site an existing recording rule already serves (its expression, parsed
   and compared as a normalised AST, equal to or finer than what the site needs; a rule with the same name
   and another expression does not count) gets no new rule. Sites one rule can serve share it: the finest
   rule of a family (same aggregation, function, window, metric and kept matchers) serves the coarser ones;
   two rules that would get the same name are merged by lifting the matchers they differ in. A name an
   existing rule already uses for another expression is a conflict: the group is rejected, never given a
   rule that would write a second meaning under that name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Literal

import promql_parser as pp

from traceo_finops.recording_rules.normalize import (
    Normalizer,
    Path,
    children,
    duration,
    node_at,
    quote,
    render,
    selector_matchers,
    strip_parens,
)
from traceo_finops.shapes import Json

RATE_FUNCTIONS = frozenset({"rate", "irate", "increase"})
# Aggregation -> how a finer recording of it is aggregated again to the query's own grouping.
REAGGREGATE = {"sum": "sum", "min": "min", "max": "max", "count": "sum", "group": "group"}
AGGREGATIONS = frozenset({*REAGGREGATE, "avg"})
# Parents that drop the metric name of their argument: a recorded series may stand there bare.
_NAME_DROPPING_CALLS = frozenset({"histogram_quantile", "histogram_fraction", "abs", "ceil", "floor", "round",
                                  "exp", "ln", "log2", "log10", "sqrt", "clamp", "clamp_min", "clamp_max"})
_ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "^", "atan2"})
_SELECTING_AGGREGATIONS = frozenset({"topk", "bottomk", "limitk", "limit_ratio"})
MAX_NAME_MERGES = 5  # rounds of merging same-named rules before the rest is rejected


# -- log statistics per text and groups ---------------------------------------------------------------------
@dataclass
class TextStats:
    """Executions of one distinct query text in the window."""

    count: int = 0
    seconds: float = 0.0  # evaluation seconds of the executions that logged a timing
    timed: int = 0
    samples: int = 0
    sampled: int = 0  # executions that logged samples
    # (range seconds, step seconds) -> evaluation seconds spent in that shape (0,0 = instant query)
    shapes: defaultdict[tuple[float, float], float] = field(default_factory=lambda: defaultdict(float))

    def add(self, range_s: float, step_s: float, seconds: float | None, samples: int | None) -> None:
        self.count += 1
        if seconds is not None:
            self.seconds += seconds
            self.timed += 1
        if samples is not None:
            self.samples += samples
            self.sampled += 1
        # A shape seen without timing still counts, a little: the shape of an untimed log is its most common.
        self.shapes[(range_s, step_s)] += seconds if seconds is not None else 1e-9

    @property
    def shape(self) -> tuple[float, float]:
        return max(self.shapes, key=lambda shape: self.shapes[shape]) if self.shapes else (0.0, 0.0)


@dataclass
class QueryGroup:
    """Every spelling of one query (same group key) and what they cost together."""

    key: str
    texts: list[str] = field(default_factory=list)
    count: int = 0
    seconds: float = 0.0
    timed: int = 0
    samples: int = 0
    sampled: int = 0

    def add(self, text: str, stats: TextStats) -> None:
        self.texts.append(text)
        self.count += stats.count
        self.seconds += stats.seconds
        self.timed += stats.timed
        self.samples += stats.samples
        self.sampled += stats.sampled

    @property
    def mean_seconds(self) -> float:
        return self.seconds / self.timed if self.timed else 0.0

    def cost(self, rank_by: str) -> float:
        if rank_by == "samples" and self.sampled:
            return float(self.samples)
        return self.seconds


@dataclass
class Grouping:
    groups: list[QueryGroup]  # costliest first
    unparsable: list[tuple[str, str, int]] = field(default_factory=list)  # (text, error, executions)
    unparsable_executions: int = 0
    enormous: int = 0  # distinct texts over the length limit (not parsed)
    enormous_executions: int = 0


def group_queries(stats: Mapping[str, TextStats], normalizer: Normalizer, *, max_query_length: int,
                  rank_by: str = "seconds", exclude: Iterable[str] = ()) -> Grouping:
    """Group the distinct texts by their key, costliest group first; unreadable and enormous texts counted."""
    skip = frozenset(exclude)
    groups: dict[str, QueryGroup] = {}
    out = Grouping([])
    for text, s in stats.items():
        if text in skip:
            continue
        if len(text) > max_query_length:
            out.enormous += 1
            out.enormous_executions += s.count
            continue
        try:
            key = normalizer.group_key(text)
        except ValueError as exc:
            out.unparsable.append((text, str(exc), s.count))
            out.unparsable_executions += s.count
            continue
        groups.setdefault(key, QueryGroup(key)).add(text, s)
    out.groups = sorted(groups.values(), key=lambda g: (-g.cost(rank_by), -g.count, g.key))
    return out


def representative(group: QueryGroup, stats: Mapping[str, TextStats]) -> str:
    """The spelling that cost most (then the most run, then the first in text order)."""
    return min(group.texts, key=lambda t: (-stats[t].seconds, -stats[t].count, t))


# -- sites: what can be recorded -----------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Matcher:
    label: str
    op: str
    value: str

    def render(self) -> str:
        return f"{self.label}{self.op}{quote(self.value)}"


def _selector(metric: str, matchers: Iterable[Matcher]) -> str:
    body = ", ".join(m.render() for m in sorted(matchers))
    return f"{metric}{{{body}}}" if body else metric


@dataclass(frozen=True)
class Site:
    """An aggregation over a rate of one metric, at ``path`` in a query's AST."""

    path: Path
    op: str
    by: tuple[str, ...]  # sorted
    func: str
    window: timedelta
    metric: str
    matchers: tuple[Matcher, ...]  # sorted; the metric name is not one

    def expression(self) -> str:
        """The site as canonical PromQL."""
        return RuleSpec(self.op, self.by, self.func, self.window, self.metric, self.matchers).expr


def sites(ast: object) -> list[Site]:
    """Every recordable aggregation in ``ast``, in walk order (outside subqueries)."""
    found: list[Site] = []

    def walk(node: object, path: Path) -> None:
        site = _site(node, path)
        if site is not None:
            found.append(site)
            return
        if isinstance(node, pp.SubqueryExpr):
            return
        for i, child in enumerate(children(node)):
            if child is not None:
                walk(child, (*path, i))

    walk(ast, ())
    return found


def _site(node: object, path: Path) -> Site | None:
    if not isinstance(node, pp.AggregateExpr) or str(node.op) not in AGGREGATIONS or node.param is not None:
        return None
    mod = node.modifier
    if mod is not None and mod.type != pp.AggModifierType.By:
        return None  # without(): the rule's labels (its name's level) are not known from the text
    by = tuple(sorted(set(mod.labels))) if mod is not None else ()
    call = strip_parens(node.expr)
    if not isinstance(call, pp.Call) or call.func.name not in RATE_FUNCTIONS or len(call.args) != 1:
        return None
    matrix = call.args[0]
    if not isinstance(matrix, pp.MatrixSelector):
        return None
    vs = matrix.vector_selector
    if vs.offset is not None or vs.at is not None or vs.matchers.or_matchers or "__name__" in by:
        return None
    name, matchers = selector_matchers(vs)
    if name is None or any(label == "__name__" for label, _, _ in matchers):
        return None
    return Site(path, str(node.op), by, call.func.name, matrix.range, name,
                tuple(Matcher(*m) for m in matchers))


# -- rules -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RuleSpec:
    """A recording rule ``op by (by) (func(metric{kept}[window]))``."""

    op: str
    by: tuple[str, ...]  # sorted
    func: str
    window: timedelta
    metric: str
    kept: tuple[Matcher, ...]  # sorted
    record: str = ""  # an existing rule's own name; new rules are named by the convention

    @property
    def expr(self) -> str:
        grouping = f" by ({', '.join(self.by)}) " if self.by else ""
        return f"{self.op}{grouping}({self.func}({_selector(self.metric, self.kept)}[{duration(self.window)}]))"

    @property
    def name(self) -> str:
        if self.record:
            return self.record
        level = "_".join(self.by)
        metric = self.metric.removesuffix("_total") if self.func in RATE_FUNCTIONS else self.metric
        operations = f"{self.func}{duration(self.window)}"
        if self.op != "sum":  # _sum is omitted (Prometheus naming practice)
            operations = f"{self.op}_{operations}"
        return f"{level}:{metric}:{operations}"

    @property
    def family(self) -> tuple[str, str, timedelta, str, tuple[Matcher, ...]]:
        return self.op, self.func, self.window, self.metric, self.kept

    def lifted(self, site: Site) -> tuple[Matcher, ...] | None:
        """The matchers the rewritten query keeps when this rule serves ``site``; None when it cannot."""
        if (site.metric, site.func, site.window) != (self.metric, self.func, self.window):
            return None
        if not set(self.kept) <= set(site.matchers) or not set(site.by) <= set(self.by):
            return None
        lifted = tuple(sorted(set(site.matchers) - set(self.kept)))
        if not {m.label for m in lifted} <= set(self.by):
            return None
        exact = not lifted and self.by == site.by
        if self.op == site.op and (exact or self.op in REAGGREGATE):
            return lifted
        return None

    def serves(self, site: Site) -> bool:
        return self.lifted(site) is not None

    def replacement(self, site: Site, bare: bool) -> str:
        """What stands in ``site``'s place in the rewritten query (``bare``: the series alone is enough)."""
        lifted = self.lifted(site)
        if lifted is None:
            raise ValueError(f"rule {self.name} cannot serve {site.expression()}")
        if bare and not lifted and self.by == site.by:
            return self.name
        outer = REAGGREGATE.get(site.op, site.op)
        grouping = f" by ({', '.join(site.by)}) " if site.by else ""
        return f"{outer}{grouping}({_selector(self.name, lifted)})"


def spec_of(site: Site, kept: Iterable[Matcher] | None = None) -> RuleSpec:
    """The rule for ``site`` keeping ``kept`` (default: every matcher) and lifting the others into ``by``."""
    keep = tuple(sorted(site.matchers if kept is None else kept))
    lifted = set(site.matchers) - set(keep)
    return RuleSpec(site.op, tuple(sorted(set(site.by) | {m.label for m in lifted})), site.func, site.window,
                    site.metric, keep)


def bare_allowed(ast: object, path: Path) -> bool:
    """Whether a recorded series may stand alone at ``path``: its parent drops the metric name anyway."""
    if not path:
        return False
    up = list(path[:-1])
    parent = node_at(ast, up)
    while isinstance(parent, pp.ParenExpr) and up:
        up.pop()
        parent = node_at(ast, up)
    if isinstance(parent, pp.Call):
        return parent.func.name in _NAME_DROPPING_CALLS
    if isinstance(parent, pp.BinaryExpr):
        return str(parent.op) in _ARITHMETIC
    if isinstance(parent, pp.AggregateExpr):
        return str(parent.op) not in _SELECTING_AGGREGATIONS
    return False


def rewrite(ast: object, serving: Mapping[Path, RuleSpec]) -> str:
    """``ast`` as canonical PromQL with each site at a path of ``serving`` read from its rule's series."""
    by_path = {s.path: s for s in sites(ast)}
    replacements = {}
    for path, rule in serving.items():
        site = by_path.get(path)
        if site is None or not rule.serves(site):
            raise ValueError(f"no recordable site at {path} for rule {rule.name}")
        replacements[path] = rule.replacement(site, bare_allowed(ast, path))
    return render(ast, replace=replacements)


# -- existing rules ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExistingRule:
    """A recording rule the server already evaluates (rules API, Mimir ruler)."""

    name: str
    expr: str
    group: str
    canonical: str | None  # None when its expression does not parse
    spec: RuleSpec | None  # when it is one site with no extra labels: it can serve queries


def existing_rules(rules: Iterable[tuple[str, str, str, Mapping[str, Json] | None]],
                   normalizer: Normalizer) -> list[ExistingRule]:
    """(name, expression, group, labels) of recording rules, parsed once each."""
    out = []
    for name, expr, group, labels in rules:
        try:
            ast = normalizer.parse(expr)
        except ValueError:
            out.append(ExistingRule(name, expr, group, None, None))
            continue
        found = _site(strip_parens(ast), ())
        spec = replace(spec_of(found), record=name) if found is not None and not labels else None
        out.append(ExistingRule(name, expr, group, render(ast), spec))
    return out


def rules_api_recording_rules(groups: Iterable[Mapping[str, Json]]) -> list[tuple[str, str, str, Json]]:
    """(name, query, group, labels) of every recording rule in a ``/api/v1/rules`` answer."""
    out = []
    for g in groups:
        for r in g.get("rules") or []:
            if r.get("type") == "recording" and r.get("name") and isinstance(r.get("query"), str):
                out.append((str(r["name"]), r["query"], str(g.get("name") or ""), r.get("labels") or None))
    return out


def ruler_recording_rules(namespaces: Mapping[str, Iterable[Mapping[str, Json]]]) -> list[tuple[str, str, str, Json]]:
    """The same from Mimir's ruler config API (namespace -> rule groups, rules with ``record``/``expr``)."""
    out = []
    for namespace, groups in namespaces.items():
        for g in groups:
            for r in g.get("rules") or []:
                if r.get("record") and isinstance(r.get("expr"), str):
                    out.append((str(r["record"]), r["expr"], f"{namespace}/{g.get('name') or ''}",
                                r.get("labels") or None))
    return out


# -- the plan ------------------------------------------------------------------------------------------------
Status = Literal["new", "existing", "conflict"]


@dataclass
class SitePlan:
    site: Site  # in the representative spelling
    spec: RuleSpec  # the rule serving it
    status: Status
    existing: str = ""  # the existing rule's name (status existing) or the clashing rule's (conflict)
    reason: str = ""


@dataclass
class GroupPlan:
    """What one group gets: its representative spelling, the rules serving its sites, its rewritten query."""

    group: QueryGroup
    text: str  # the representative spelling
    sites: list[SitePlan]
    rewritten: str = ""
    reason: str = ""  # why the group gets no new rule (before any proof)

    @property
    def new_rules(self) -> list[RuleSpec]:
        return list(dict.fromkeys(p.spec for p in self.sites if p.status == "new"))


def kept_matchers(site: Site, spellings: Sequence[Site]) -> tuple[Matcher, ...]:
    """The matchers of ``site`` with one value in every spelling (``spellings``: the same site in each)."""
    values: dict[tuple[str, str], set[str]] = defaultdict(set)
    for s in spellings:
        for m in s.matchers:
            values[(m.label, m.op)].add(m.value)
    return tuple(m for m in site.matchers if len(values[(m.label, m.op)]) <= 1)


def plan_groups(groups: Sequence[QueryGroup], stats: Mapping[str, TextStats], normalizer: Normalizer,
                existing: Sequence[ExistingRule]) -> list[GroupPlan]:
    """The rules for ``groups`` (costliest first, each with at least one site) against ``existing`` rules."""
    plans: list[GroupPlan] = []
    for g in groups:
        text = representative(g, stats)
        rep = sites(normalizer.parse(text))
        by_path: dict[Path, list[Site]] = defaultdict(list)
        for t in g.texts:
            for s in sites(normalizer.parse(t)):
                by_path[s.path].append(s)
        plans.append(GroupPlan(g, text, [SitePlan(s, spec_of(s, kept_matchers(s, by_path[s.path])), "new")
                                         for s in rep]))
    servers = [r for r in existing if r.spec is not None]
    for p in (sp for plan in plans for sp in plan.sites):
        found = next((r for r in servers if r.spec is not None and r.spec.serves(p.site)), None)
        if found is not None and found.spec is not None:
            p.spec, p.status, p.existing = found.spec, "existing", found.name
    _merge(plans)
    _check_names(plans, existing)
    for plan in plans:
        ast = normalizer.parse(plan.text)
        serving = {p.site.path: p.spec for p in plan.sites}
        conflicts = [p for p in plan.sites if p.status == "conflict"]
        if conflicts:
            plan.reason = "; ".join(p.reason for p in conflicts)
        elif all(p.status == "existing" for p in plan.sites):
            names = ", ".join(sorted({p.existing for p in plan.sites}))
            plan.reason = f"already recorded by the server's rule {names}"
        try:
            plan.rewritten = rewrite(ast, serving)
        except (ValueError, TypeError) as exc:  # a shape the rewriter does not know: no rule, said why
            plan.rewritten = plan.text
            plan.reason = plan.reason or f"the query cannot be rewritten: {exc}"
    return plans


def _merge(plans: Sequence[GroupPlan]) -> None:
    """One rule for every site a finer rule of the same family can serve; same-named rules merged."""
    new = [p for plan in plans for p in plan.sites if p.status == "new"]
    for _ in range(MAX_NAME_MERGES):
        families: dict[object, list[SitePlan]] = defaultdict(list)
        for p in new:
            families[p.spec.family].append(p)
        for members in families.values():
            chosen: list[RuleSpec] = []
            for p in sorted(members, key=lambda p: -len(p.spec.by)):
                finer = next((r for r in chosen if r.serves(p.site)), None)
                if finer is None:
                    chosen.append(p.spec)
                else:
                    p.spec = finer
        by_name: dict[str, set[RuleSpec]] = defaultdict(set)
        for p in new:
            by_name[p.spec.name].add(p.spec)
        clashes = {name: specs for name, specs in by_name.items() if len(specs) > 1}
        if not clashes:
            return
        for specs in clashes.values():
            merged = _generalise(specs)
            for p in new:
                if p.spec in specs and merged is not None and merged.serves(p.site):
                    p.spec = merged
    by_name = defaultdict(set)
    for p in new:
        by_name[p.spec.name].add(p.spec)
    for p in new:  # still clashing after the merges: the rule of the first (costliest) group keeps the name
        if len(by_name[p.spec.name]) > 1:
            keeper = next(q.spec for q in new if q.spec.name == p.spec.name)
            if p.spec != keeper:
                p.status, p.existing = "conflict", keeper.name
                p.reason = (f"rule name {p.spec.name} is taken by another suggested rule ({keeper.expr}) that cannot "
                            f"serve this query ({p.spec.expr})")


def _generalise(specs: Iterable[RuleSpec]) -> RuleSpec | None:
    """One rule serving what each of ``specs`` serves: the matchers they share kept, the others lifted."""
    specs = list(specs)
    first = specs[0]
    if any((s.op, s.func, s.window, s.metric) != (first.op, first.func, first.window, first.metric) for s in specs):
        return None
    common = set(first.kept).intersection(*(set(s.kept) for s in specs[1:]))
    labels = {label for s in specs for label in s.by} | {m.label for s in specs for m in s.kept if m not in common}
    return replace(first, by=tuple(sorted(labels)), kept=tuple(sorted(common)))


def _check_names(plans: Sequence[GroupPlan], existing: Sequence[ExistingRule]) -> None:
    """A new rule whose name an existing rule uses for another expression is a conflict, never suggested."""
    taken: dict[str, list[ExistingRule]] = defaultdict(list)
    for r in existing:
        taken[r.name].append(r)
    for p in (sp for plan in plans for sp in plan.sites):
        if p.status != "new" or p.spec.name not in taken:
            continue
        ours = render(pp.parse(p.spec.expr))
        same = [r for r in taken[p.spec.name] if r.canonical == ours]
        if not same:
            other = taken[p.spec.name][0]
            p.status, p.existing = "conflict", other.name
            p.reason = (f"the server already has a rule named {other.name} (group {other.group}) recording another "
                        f"expression ({other.expr.strip()}) than the one this query needs ({p.spec.expr})")


def rewrites_of(plan: GroupPlan, normalizer: Normalizer, limit: int) -> dict[str, str | None]:
    """Each spelling of a group (up to ``limit``) rewritten to use the group's rules; None when its window (or a
    kept filter) differs from what the rules record."""
    rules = {p.site.path: p.spec for p in plan.sites}
    out: dict[str, str | None] = {}
    for text in sorted(plan.group.texts)[:limit]:
        ast = normalizer.parse(text)
        found = {s.path: s for s in sites(ast)}
        if set(found) != set(rules) or not all(rules[path].serves(s) for path, s in found.items()):
            out[text] = None
            continue
        out[text] = rewrite(ast, rules)
    return out
