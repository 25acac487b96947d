"""Which metrics and labels a PromQL expression uses, from the real parser's AST (never regexes).

The walk goes top-down and carries a *demand*: the labels of the current sub-expression's result that
the rest of the expression (and whoever reads the final result) depends on. The final result of a
panel, rule or query is read whole, so the walk starts from "every label". Operators then change the
demand on their operands:

- ``sum by (a, b) (X)`` needs only ``a, b`` of X; ``sum (X)`` needs none; ``sum without (x) (X)`` needs
  all but ``x``. This holds for every aggregator whatever the outer demand, because e.g. ``count`` over
  the inner result depends on how many groups it has. (Whether the *values* survive a reduction depends
  on the aggregator that consumes the series — ``SelectorUsage.consumer``, the innermost one — and on the
  functions and operators between it and the selector, ``SelectorUsage.consumer_path``: operators further
  out only see the consumer's output. ``SelectorUsage.aggregations`` lists every one, for counts.)
- ``topk``/``bottomk``/``limitk``/``limit_ratio`` return input series unchanged: outer demand plus grouping.
- Binary operators between vectors: ``on (S)`` needs S on both sides, ``ignoring (X)`` all but X, no
  modifier all labels (matching uses every label); the "many" side of ``group_left/right`` and the left
  side of ``and/or/unless`` also pass the outer demand through (their series are the result), the "one"
  side adds the ``group_x (extra)`` labels it copies over. Vector-scalar operators pass the demand through.
- ``label_replace``/``label_join`` add their source labels; ``histogram_quantile``/``histogram_fraction``
  add ``le``; ``sort_by_label`` adds its labels; ``scalar(X)`` needs all of X (its value depends on X
  having exactly one series); ``absent(X)`` needs none (only existence matters); any other function
  keeps series apart and passes the demand through.
- Label matchers are always needed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import promql_parser as pp

from traceo_finops.usage import lexer
from traceo_finops.usage.model import (
    ALL,
    AllLabels,
    ExpressionAnalysis,
    LabelMatcher,
    LabelNeed,
    NameMatcher,
    NamePattern,
    SelectorUsage,
    UsageKind,
)

METRIC_NAME_LABEL = "__name__"

# The enum members are not hashable: key by their text.
_MATCH_OPS = {str(pp.MatchOp.Equal): "=", str(pp.MatchOp.NotEqual): "!=", str(pp.MatchOp.Re): "=~",
              str(pp.MatchOp.NotRe): "!~"}
# Aggregators whose output series are (a subset of) their input series, labels untouched.
_SELECTING_AGGREGATORS = frozenset({"topk", "bottomk", "limitk", "limit_ratio"})
_SET_OPERATORS = frozenset({"and", "or", "unless"})
_HISTOGRAM_LE_FUNCTIONS = frozenset({"histogram_quantile", "histogram_fraction"})
_EXISTENCE_FUNCTIONS = frozenset({"absent", "absent_over_time"})

Kinds = frozenset[UsageKind]


@dataclass(frozen=True)
class _Demand:
    """Labels of a sub-expression's result that matter: ``needed`` (with why), or all but ``excluded``."""

    all: bool = False
    excluded: frozenset[str] = frozenset()
    needed: Mapping[str, Kinds] = field(default_factory=dict)
    mentions: Mapping[str, Kinds] = field(default_factory=dict)  # named but not needed (without, ignoring ...)


_NOTHING = _Demand()
_EVERYTHING = _Demand(all=True)


def _merge(a: Mapping[str, Kinds], b: Mapping[str, Kinds]) -> dict[str, Kinds]:
    out = dict(a)
    for label, kinds in b.items():
        out[label] = out.get(label, frozenset()) | kinds
    return out


def _union(a: _Demand, b: _Demand) -> _Demand:
    needed = _merge(a.needed, b.needed)
    mentions = _merge(a.mentions, b.mentions)
    if a.all and b.all:
        return _Demand(True, a.excluded & b.excluded, needed, mentions)
    if a.all or b.all:
        excluded = (a.excluded if a.all else b.excluded) - needed.keys()
        return _Demand(True, excluded, needed, mentions)
    return _Demand(False, frozenset(), needed, mentions)


def _labels(labels: Iterable[str]) -> list[str]:
    return [label for label in labels if label and label != METRIC_NAME_LABEL]


def _only(labels: Iterable[str], kind: UsageKind, outer: _Demand) -> _Demand:
    """Exactly ``labels`` (why: ``kind`` plus whatever the outer demand said about them)."""
    needed = {label: outer.needed.get(label, frozenset()) | {kind} for label in _labels(labels)}
    return _Demand(False, frozenset(), needed, {})


def _all_but(labels: Iterable[str], kind: UsageKind, outer: _Demand) -> _Demand:
    """Every label except ``labels``, which are recorded as mentioned with ``kind``."""
    excluded = frozenset(_labels(labels))
    needed = {label: kinds for label, kinds in outer.needed.items() if label not in excluded}
    mentions = _merge({k: v for k, v in outer.mentions.items() if k not in excluded},
                      {label: frozenset({kind}) for label in excluded})
    return _Demand(True, excluded, needed, mentions)


def _mention(d: _Demand, labels: Iterable[str], kind: UsageKind) -> _Demand:
    return _Demand(d.all, d.excluded, d.needed, _merge(d.mentions, {label: frozenset({kind})
                                                                     for label in _labels(labels)}))


def _is_scalar(node: object) -> bool:
    """True for expressions without series labels (numbers, strings, scalar functions and their arithmetic)."""
    if isinstance(node, pp.NumberLiteral | pp.StringLiteral):
        return True
    if isinstance(node, pp.Call):
        return node.func.return_type in (pp.ValueType.Scalar, pp.ValueType.String)
    if isinstance(node, pp.ParenExpr | pp.UnaryExpr):
        return _is_scalar(node.expr)
    if isinstance(node, pp.BinaryExpr):
        return _is_scalar(node.lhs) and _is_scalar(node.rhs)
    return False


def _string_arg(args: list[object], index: int) -> str | None:
    arg = args[index] if index < len(args) else None
    return str(arg.val) if isinstance(arg, pp.StringLiteral) else None


@dataclass(frozen=True)
class _Path:
    """What lies between the root and the node being visited."""

    aggs: tuple[str, ...] = ()  # aggregations, root first
    funcs: tuple[str, ...] = ()  # functions, root first
    steps: tuple[str, ...] = ()  # functions and operators below the innermost aggregation so far, root first
    existence: bool = False  # under absent() or the right side of and/unless: only existence matters

    def aggregate(self, op: str) -> _Path:
        return _Path((*self.aggs, op), self.funcs, (), self.existence)

    def call(self, name: str) -> _Path:
        return _Path(self.aggs, (*self.funcs, name), (*self.steps, name), self.existence)

    def step(self, text: str, existence: bool = False) -> _Path:
        return _Path(self.aggs, self.funcs, (*self.steps, text), self.existence or existence)


def _operand_step(op: str, node: pp.BinaryExpr, lhs: bool, other_scalar: bool) -> str:
    """How a binary operator treats one operand, e.g. ``series / scalar`` for the left side of ``x / 2``."""
    other = "scalar" if other_scalar else "vector"
    mod = node.modifier
    op = f"{op} bool" if mod is not None and mod.return_bool else op
    return f"series {op} {other}" if lhs else f"{other} {op} series"


class _Walker:
    def __init__(self) -> None:
        self.selectors: list[SelectorUsage] = []

    def visit(self, node: object, d: _Demand, path: _Path) -> None:
        if isinstance(node, pp.VectorSelector):
            self._selector(node, d, path)
        elif isinstance(node, pp.MatrixSelector):
            self._selector(node.vector_selector, d, path)
        elif isinstance(node, pp.SubqueryExpr | pp.ParenExpr):
            self.visit(node.expr, d, path)
        elif isinstance(node, pp.UnaryExpr):
            self.visit(node.expr, d, path.step("-series"))
        elif isinstance(node, pp.AggregateExpr):
            self._aggregate(node, d, path)
        elif isinstance(node, pp.BinaryExpr):
            self._binary(node, d, path)
        elif isinstance(node, pp.Call):
            self._call(node, d, path)
        elif isinstance(node, pp.NumberLiteral | pp.StringLiteral) or node is None:
            return
        else:  # a node type this parser version added: say so instead of silently missing usage
            raise TypeError(f"unsupported PromQL node {type(node).__name__}")

    def _aggregate(self, node: pp.AggregateExpr, d: _Demand, path: _Path) -> None:
        op = str(node.op)
        if node.param is not None:
            self.visit(node.param, _NOTHING, path.step(f"{op} parameter"))
        mod = node.modifier
        grouping: _Demand
        if mod is None:
            grouping = _NOTHING
        elif mod.type == pp.AggModifierType.By:
            grouping = _only(mod.labels, UsageKind.BY, d)
        else:
            grouping = _all_but(mod.labels, UsageKind.WITHOUT, d)
        inner = _union(d, grouping) if op in _SELECTING_AGGREGATORS else grouping
        self.visit(node.expr, inner, path.aggregate(op))

    def _binary(self, node: pp.BinaryExpr, d: _Demand, path: _Path) -> None:
        op = str(node.op)
        lhs_scalar, rhs_scalar = _is_scalar(node.lhs), _is_scalar(node.rhs)
        lhs_path = path.step(_operand_step(op, node, True, rhs_scalar))
        # The right side of and/unless only filters the left one: its values never reach the result.
        rhs_path = path.step(_operand_step(op, node, False, lhs_scalar), existence=op in ("and", "unless"))
        if lhs_scalar or rhs_scalar:
            # The vector side's series are the result; a scalar side has no labels to match.
            self.visit(node.lhs, _NOTHING if lhs_scalar else d, lhs_path)
            self.visit(node.rhs, _NOTHING if rhs_scalar else d, rhs_path)
            return
        mod = node.modifier
        matching = mod.matching if mod is not None else None
        if matching is None:
            match = _union(d, _EVERYTHING)  # matching compares every label
        elif matching.type == pp.LabelModifierType.Include:
            match = _only(matching.labels, UsageKind.ON, d)
        else:
            match = _all_but(matching.labels, UsageKind.IGNORING, d)
        card = mod.card if mod is not None else pp.VectorMatchCardinality.OneToOne
        group = list(mod.group_labels or []) if mod is not None else []
        if op in _SET_OPERATORS or card == pp.VectorMatchCardinality.ManyToMany:
            lhs = _union(d, match)
            rhs = _union(d, match) if op == "or" else match  # `or` also returns right-hand series
        elif card == pp.VectorMatchCardinality.ManyToOne:
            lhs = _union(d, match)
            rhs = _union(match, _only(group, UsageKind.GROUP_LEFT, d))
        elif card == pp.VectorMatchCardinality.OneToMany:
            lhs = _union(match, _only(group, UsageKind.GROUP_RIGHT, d))
            rhs = _union(d, match)
        else:  # one-to-one: the result has the matching labels only (on) or all but the ignored ones
            lhs = rhs = match
        self.visit(node.lhs, lhs, lhs_path)
        self.visit(node.rhs, rhs, rhs_path)

    def _call(self, node: pp.Call, d: _Demand, path: _Path) -> None:
        name = node.func.name
        args = list(node.args)
        arg_types = list(node.func.arg_types)
        vector_demand = d
        inner = path.call(name)
        if name == "label_replace":
            dst, src = _string_arg(args, 1), _string_arg(args, 3)
            vector_demand = _union(d, _only([src or ""], UsageKind.LABEL_REPLACE_SRC, d))
            vector_demand = _mention(vector_demand, [dst or ""], UsageKind.LABEL_REPLACE_DST)
        elif name == "label_join":
            dst = _string_arg(args, 1)
            srcs = [_string_arg(args, i) or "" for i in range(3, len(args))]
            vector_demand = _union(d, _only(srcs, UsageKind.LABEL_JOIN_SRC, d))
            vector_demand = _mention(vector_demand, [dst or ""], UsageKind.LABEL_JOIN_DST)
        elif name in ("sort_by_label", "sort_by_label_desc"):
            labels = [_string_arg(args, i) or "" for i in range(1, len(args))]
            vector_demand = _union(d, _only(labels, UsageKind.SORT_BY_LABEL, d))
        elif name in _HISTOGRAM_LE_FUNCTIONS:
            vector_demand = _union(d, _only(["le"], UsageKind.HISTOGRAM_LE, d))
        elif name == "scalar":
            vector_demand = _EVERYTHING  # its value depends on the input having exactly one series
        elif name in _EXISTENCE_FUNCTIONS:
            vector_demand = _NOTHING
            inner = _Path(inner.aggs, inner.funcs, inner.steps, True)
        for i, arg in enumerate(args):
            arg_type = arg_types[min(i, len(arg_types) - 1)] if arg_types else pp.ValueType.Vector
            vector_arg = arg_type in (pp.ValueType.Vector, pp.ValueType.Matrix) and not _is_scalar(arg)
            self.visit(arg, vector_demand if vector_arg else _NOTHING,
                       inner if vector_arg else inner.step(f"{name} parameter"))

    def _selector(self, node: pp.VectorSelector, d: _Demand, path: _Path) -> None:
        groups = node.matchers.or_matchers or [node.matchers.matchers]
        for group in groups:
            name: str | None = node.name
            name_matchers: list[NameMatcher] = []
            label_matchers: list[LabelMatcher] = []
            for m in group:
                op = _MATCH_OPS[str(m.op)]
                if m.name == METRIC_NAME_LABEL:
                    if op == "=" and name is None:
                        name = m.value
                    else:
                        name_matchers.append(NameMatcher(op, m.value))
                else:
                    label_matchers.append(LabelMatcher(m.name, op, m.value))
            pattern = NamePattern(tuple(name_matchers)) if name is None and name_matchers else None
            self.selectors.append(_usage(name, pattern, d, tuple(label_matchers), path))


def _usage(name: str | None, pattern: NamePattern | None, d: _Demand, matchers: tuple[LabelMatcher, ...],
           path: _Path) -> SelectorUsage:
    needed = _merge(d.needed, {m.label: frozenset({UsageKind.MATCHER}) for m in matchers})
    need: LabelNeed = AllLabels(d.excluded - needed.keys()) if d.all else frozenset(needed)
    kinds: set[UsageKind] = set()
    if d.all:
        kinds.add(UsageKind.ALL_LABELS)
    if path.aggs:
        kinds.add(UsageKind.AGGREGATED)
    if pattern is not None:
        kinds.add(UsageKind.NAME_PATTERN)
    if path.existence:
        kinds.add(UsageKind.EXISTENCE)
    return SelectorUsage(metric=name, pattern=pattern, need=need, labels=_merge(d.mentions, needed),
                         matchers=matchers, aggregations=tuple(reversed(path.aggs)),
                         functions=tuple(reversed(path.funcs)), kinds=frozenset(kinds),
                         consumer=path.aggs[-1] if path.aggs else None,
                         consumer_path=tuple(reversed(path.steps)))


def _parse_message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 500 else text[:500] + "…"


def analyze_ast(expression: str, ast: object, top: LabelNeed = ALL) -> ExpressionAnalysis:
    """Usage of an already parsed expression whose result is read with ``top`` labels needed."""
    walker = _Walker()
    if isinstance(top, AllLabels):
        start = _Demand(True, top.excluded)
    else:
        start = _Demand(False, frozenset(), {label: frozenset() for label in top})
    walker.visit(ast, start, _Path())
    return ExpressionAnalysis(expression, tuple(walker.selectors), canonical=fingerprint(ast))


def fingerprint(node: object) -> str:
    """A rendering of the AST that ignores layout and matcher order.

    Prometheus logs a rule's query as its own rendering of the parsed rule (matchers sorted, spacing
    normalised); comparing fingerprints finds the rule a logged evaluation belongs to.
    """
    f = fingerprint
    if isinstance(node, pp.VectorSelector):
        groups = node.matchers.or_matchers or [node.matchers.matchers]
        body = " or ".join(",".join(sorted(str(m) for m in g)) for g in groups)
        return f"{node.name or ''}{{{body}}}{_modifiers(node)}"
    if isinstance(node, pp.MatrixSelector):
        vs = node.vector_selector
        groups = vs.matchers.or_matchers or [vs.matchers.matchers]
        body = " or ".join(",".join(sorted(str(m) for m in g)) for g in groups)
        return f"{vs.name or ''}{{{body}}}[{node.range}]{_modifiers(vs)}"
    if isinstance(node, pp.SubqueryExpr):
        return f"{f(node.expr)}[{node.range}:{node.step}]{_modifiers(node)}"
    if isinstance(node, pp.ParenExpr):
        return f"({f(node.expr)})"
    if isinstance(node, pp.UnaryExpr):
        return f"-{f(node.expr)}"
    if isinstance(node, pp.AggregateExpr):
        mod = node.modifier
        grouping = f" {mod.type}({','.join(mod.labels)})" if mod is not None else ""
        param = f"{f(node.param)}," if node.param is not None else ""
        return f"{node.op}{grouping}({param}{f(node.expr)})"
    if isinstance(node, pp.BinaryExpr):
        bmod = node.modifier
        how = ""
        if bmod is not None:
            matching = bmod.matching
            on = f"{matching.type}({','.join(matching.labels)})" if matching is not None else ""
            how = f"{'bool' if bmod.return_bool else ''}{on}{bmod.card}({','.join(bmod.group_labels or [])})"
        return f"{f(node.lhs)} {node.op}{how} {f(node.rhs)}"
    if isinstance(node, pp.Call):
        return f"{node.func.name}({','.join(f(a) for a in node.args)})"
    if isinstance(node, pp.StringLiteral):
        return repr(node.val)
    return str(node)


def _modifiers(node: object) -> str:
    offset, at = getattr(node, "offset", None), getattr(node, "at", None)
    return (f" offset {offset}" if offset is not None else "") + (f" @ {at.type}:{at.at}" if at is not None else "")


# The Rust parser overflows its stack (a segfault, not an exception) somewhere past ~5,000 nested levels.
MAX_STRUCTURE_TOKENS = 2_000
_OPERATOR_CHARS = frozenset("([{+-*/%^<>=!")
_OPERATOR_WORDS = frozenset({"and", "or", "unless", "atan2"})


def structure_tokens(expression: str) -> int:
    """Brackets and operators outside string literals: an upper bound on how deep the AST can be.

    A safety limit, not an analysis: it only decides whether handing the text to the parser is safe.
    """
    count = 0
    quote: str | None = None
    i, n = 0, len(expression)
    while i < n:
        c = expression[i]
        if quote is not None:
            if c == "\\" and quote != "`":
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c in _OPERATOR_CHARS:
            count += 1
        elif c.isalpha():
            j = i
            while j < n and (expression[j].isalnum() or expression[j] == "_"):
                j += 1
            count += expression[i:j].lower() in _OPERATOR_WORDS
            i = j
            continue
        i += 1
    return count


def parse(expression: str) -> object:
    """The parser's AST; raises ``ValueError`` with the parser's message (or when too deeply nested)."""
    if len(expression) > MAX_STRUCTURE_TOKENS:  # shorter texts cannot hold that many tokens
        tokens = structure_tokens(expression)
        if tokens > MAX_STRUCTURE_TOKENS:
            raise ValueError(f"expression too deeply nested to analyse safely ({tokens} operators and brackets, "
                             f"limit {MAX_STRUCTURE_TOKENS})")
    try:
        return pp.parse(expression)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # the Rust extension reports panics as a BaseException subclass
        raise ValueError(_parse_message(exc)) from exc


def unparsed(expression: str, error: str) -> ExpressionAnalysis:
    """The analysis of an expression the parser refused: the error, and the names a token scan finds."""
    return ExpressionAnalysis(expression, error=error, mentions=lexer.mentions(expression))


class PromQLAnalyzer:
    """Analyses expressions, each distinct text once (the cache is bounded, oldest dropped first)."""

    def __init__(self, cache_size: int = 200_000) -> None:
        self._cache: OrderedDict[str, ExpressionAnalysis] = OrderedDict()
        self._cache_size = cache_size
        self.parsed = 0
        self.cache_hits = 0

    def analyze(self, expression: str) -> ExpressionAnalysis:
        """Usage of ``expression`` as the whole result of a panel, rule or query (all labels read)."""
        cached = self._cache.get(expression)
        if cached is not None:
            self.cache_hits += 1
            self._cache.move_to_end(expression)
            return cached
        result = self._analyze(expression)
        self._cache[expression] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    def _analyze(self, expression: str) -> ExpressionAnalysis:
        self.parsed += 1
        if not expression.strip():
            return ExpressionAnalysis(expression, error="empty expression")
        try:
            ast = parse(expression)
            return analyze_ast(expression, ast)
        except (ValueError, TypeError, RecursionError) as exc:
            return unparsed(expression, _parse_message(exc))


_DEFAULT = PromQLAnalyzer()


def analyze_expression(expression: str) -> ExpressionAnalysis:
    """Usage of one PromQL expression read whole (cached); never raises — see ``ExpressionAnalysis.error``."""
    return _DEFAULT.analyze(expression)


def analyze_selector(expression: str, labels: Iterable[str], kind: UsageKind) -> ExpressionAnalysis:
    """Usage of a series selector of which only ``labels`` (and its matchers) are read, e.g. Grafana's
    ``label_values(up{job="x"}, instance)``. The text must be a selector (a function is also accepted)."""
    try:
        ast = parse(expression)
        top = frozenset(_labels(labels))
        analysis = analyze_ast(expression, ast, top)
    except (ValueError, TypeError, RecursionError) as exc:
        return unparsed(expression, _parse_message(exc))
    marked = tuple(_with_kind(s, top, kind) for s in analysis.selectors)
    return ExpressionAnalysis(expression, marked)


def _with_kind(s: SelectorUsage, labels: frozenset[str], kind: UsageKind) -> SelectorUsage:
    merged = _merge(s.labels, {label: frozenset({kind}) for label in labels})
    return replace(s, labels=merged, kinds=s.kinds | {kind})
