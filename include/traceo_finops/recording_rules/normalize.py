"""One spelling for every way of writing the same PromQL, from promql-parser's AST.

:func:`render` writes an AST back as valid PromQL in a canonical form: label matchers sorted, ``by`` /
``without`` / ``on`` / ``ignoring`` / ``group_x`` labels sorted, durations in Prometheus' own units (``60s`` and
``1m`` are both ``1m``), numbers and strings in one notation, redundant parentheses dropped and every operand of
a binary operator parenthesised when it is itself one. Two texts with the same canonical form run the same
query.

With ``fold=True`` it writes a *group key* instead (not PromQL): what Grafana substitutes per refresh is
replaced by a placeholder — range-vector and subquery durations (``$__rate_interval``, ``$__interval``,
``$__range``), label-matcher values (template variables), the parameter of ``topk``/``quantile`` and the φ of
``histogram_quantile``/``quantile_over_time`` — so one dashboard panel, refreshed over many time ranges and
variable values, is one group.

Node positions are paths of child indexes (:func:`children`): the recommender names the sub-expression it
replaces by its path, and :func:`render` writes a replacement text there.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import timedelta

import promql_parser as pp

from traceo_finops.usage.promql import parse as parse_promql

Path = tuple[int, ...]

RANGE = "<range>"
STEP = "<step>"
VALUE = "<value>"
PARAM = "<param>"
# Functions whose first (scalar) argument a dashboard variable usually sets.
_PARAM_FUNCTIONS = frozenset({"histogram_quantile", "quantile_over_time", "histogram_fraction"})
_MATCH_OPS = {str(pp.MatchOp.Equal): "=", str(pp.MatchOp.NotEqual): "!=", str(pp.MatchOp.Re): "=~",
              str(pp.MatchOp.NotRe): "!~"}
_CARD = {str(pp.VectorMatchCardinality.ManyToOne): "group_left",
         str(pp.VectorMatchCardinality.OneToMany): "group_right"}
_SET_OPERATORS = frozenset({"and", "or", "unless"})


def children(node: object) -> list[object]:
    """The child nodes of ``node`` in path order (aggregation: parameter then expression)."""
    if isinstance(node, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
        return [node.expr]
    if isinstance(node, pp.AggregateExpr):
        return [node.param, node.expr]
    if isinstance(node, pp.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, pp.Call):
        return list(node.args)
    return []


def strip_parens(node: object) -> object:
    while isinstance(node, pp.ParenExpr):
        node = node.expr
    return node


def match_op(matcher: object) -> str:
    return _MATCH_OPS[str(getattr(matcher, "op"))]  # noqa: B009 - promql-parser's Matcher has no stubs


def quote(text: str) -> str:
    """A PromQL double-quoted string (JSON's escapes are a subset of Go's, which PromQL reads)."""
    return json.dumps(text, ensure_ascii=False)


def duration(value: timedelta) -> str:
    """A duration as Prometheus writes it (``1m``, ``2m15s``); negative ones with a minus sign."""
    if value < timedelta(0):
        return "-" + str(pp.display_duration(-value))
    return str(pp.display_duration(value))


def number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def selector_matchers(vs: object) -> tuple[str | None, list[tuple[str, str, str]]]:
    """(metric name, [(label, op, value)]) of a vector selector; ``{__name__="x"}`` names the metric."""
    name: str | None = getattr(vs, "name", None)
    out = []
    for m in vs.matchers.matchers:  # type: ignore[attr-defined]
        op = match_op(m)
        if m.name == "__name__" and op == "=" and name is None:
            name = m.value
        elif not (m.name == "__name__" and op == "=" and m.value == name):
            out.append((m.name, op, m.value))
    return name, sorted(out)


class _Renderer:
    def __init__(self, fold: bool, replace: Mapping[Path, str]) -> None:
        self.fold, self.replace = fold, replace

    def render(self, node: object, path: Path) -> str:
        if path in self.replace:
            return self.replace[path]
        r = self.render
        if isinstance(node, pp.ParenExpr):
            return r(node.expr, (*path, 0))
        if isinstance(node, pp.VectorSelector):
            return self.selector(node) + _modifiers(node)
        if isinstance(node, pp.MatrixSelector):
            vs = node.vector_selector
            window = RANGE if self.fold else duration(node.range)
            return f"{self.selector(vs)}[{window}]{_modifiers(vs)}"
        if isinstance(node, pp.SubqueryExpr):
            inner = r(node.expr, (*path, 0))
            if not isinstance(strip_parens(node.expr), pp.Call | pp.VectorSelector | pp.AggregateExpr):
                inner = f"({inner})"
            step = "" if node.step is None else (STEP if self.fold else duration(node.step))
            window = RANGE if self.fold else duration(node.range or timedelta(0))
            return f"{inner}[{window}:{step}]{_modifiers(node)}"
        if isinstance(node, pp.UnaryExpr):
            inner = r(node.expr, (*path, 0))
            return f"-({inner})" if isinstance(strip_parens(node.expr), pp.BinaryExpr) else f"-{inner}"
        if isinstance(node, pp.AggregateExpr):
            mod = node.modifier
            grouping = ""
            if mod is not None:
                kind = "by" if mod.type == pp.AggModifierType.By else "without"
                grouping = f" {kind} ({', '.join(sorted(mod.labels))})"
            param = ""
            if node.param is not None:
                param = (PARAM if self.fold and isinstance(node.param, pp.NumberLiteral)
                         else r(node.param, (*path, 0))) + ", "
            return f"{node.op}{grouping}{' ' if grouping else ''}({param}{r(node.expr, (*path, 1))})"
        if isinstance(node, pp.BinaryExpr):
            return self.binary(node, path)
        if isinstance(node, pp.Call):
            name = node.func.name
            args = []
            for i, arg in enumerate(node.args):
                if self.fold and i == 0 and name in _PARAM_FUNCTIONS and isinstance(arg, pp.NumberLiteral):
                    args.append(PARAM)
                else:
                    args.append(r(arg, (*path, i)))
            return f"{name}({', '.join(args)})"
        if isinstance(node, pp.NumberLiteral):
            return number(node.val)
        if isinstance(node, pp.StringLiteral):
            return quote(node.val)
        raise TypeError(f"unsupported PromQL node {type(node).__name__}")

    def selector(self, vs: object) -> str:
        name, matchers = selector_matchers(vs)
        groups = getattr(vs.matchers, "or_matchers", None)  # type: ignore[attr-defined]
        if groups:  # {a="1" or b="2"}: each alternative sorted, in written order
            alternatives = [", ".join(sorted(f"{m.name}{match_op(m)}{self.value(m.value)}" for m in g))
                            for g in groups]
            return f"{name or ''}{{{' or '.join(alternatives)}}}"
        body = ", ".join(f"{label}{op}{self.value(value)}" for label, op, value in matchers)
        if name is None:
            return f"{{{body}}}"
        return f"{name}{{{body}}}" if body else name

    def value(self, text: str) -> str:
        return VALUE if self.fold else quote(text)

    def binary(self, node: object, path: Path) -> str:
        op = str(node.op)  # type: ignore[attr-defined]
        sides = []
        for i, side in enumerate((node.lhs, node.rhs)):  # type: ignore[attr-defined]
            text = self.render(side, (*path, i))
            sides.append(f"({text})" if isinstance(strip_parens(side), pp.BinaryExpr) and
                         (*path, i) not in self.replace else text)
        mod = node.modifier  # type: ignore[attr-defined]
        how = []
        if mod is not None:
            if mod.return_bool:
                how.append("bool")
            if mod.matching is not None:
                kind = "on" if mod.matching.type == pp.LabelModifierType.Include else "ignoring"
                how.append(f"{kind} ({', '.join(sorted(mod.matching.labels))})")
            card = _CARD.get(str(mod.card))
            if card is not None and op not in _SET_OPERATORS:
                how.append(f"{card} ({', '.join(sorted(mod.group_labels or []))})")
            fill = getattr(mod, "fill_values", None)
            if fill is not None and (fill.lhs is not None or fill.rhs is not None):
                raise TypeError("fill modifiers are not PromQL that Prometheus runs")
        return " ".join([sides[0], op, *how, sides[1]])


def _modifiers(node: object) -> str:
    out = ""
    offset = getattr(node, "offset", None)
    if offset is not None:
        out += f" offset {duration(offset)}"
    at = getattr(node, "at", None)
    if at is not None:
        if at.type == pp.AtModifierType.Start:
            out += " @ start()"
        elif at.type == pp.AtModifierType.End:
            out += " @ end()"
        else:
            out += f" @ {at.at.timestamp():.3f}"
    return out


def render(node: object, *, fold: bool = False, replace: Mapping[Path, str] | None = None) -> str:
    """``node`` as canonical PromQL (or, with ``fold``, its group key); ``replace`` writes a text at a path."""
    return _Renderer(fold, replace or {}).render(node, ())


def node_at(node: object, path: Sequence[int]) -> object:
    for i in path:
        node = children(node)[i]
    return node


class Normalizer:
    """Parses each distinct text once (a bounded cache, oldest dropped first) and renders its forms."""

    def __init__(self, cache_size: int = 100_000) -> None:
        self._cache: OrderedDict[str, object | ValueError] = OrderedDict()
        self._size = cache_size
        self.parsed = 0
        self.cache_hits = 0

    def parse(self, text: str) -> object:
        """The AST of ``text``; raises ``ValueError`` (the parser's message) when it does not parse."""
        hit = self._cache.get(text)
        if hit is not None:
            self.cache_hits += 1
            self._cache.move_to_end(text)
        else:
            self.parsed += 1
            try:
                if not text.strip():
                    raise ValueError("empty expression")
                hit = parse_promql(text)
                render(hit)  # a node this renderer cannot write is an unreadable query too
            except (ValueError, TypeError, RecursionError) as exc:
                hit = ValueError(str(exc) or type(exc).__name__)
            self._cache[text] = hit
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        if isinstance(hit, ValueError):
            raise hit
        return hit

    def canonical(self, text: str) -> str:
        return render(self.parse(text))

    def group_key(self, text: str) -> str:
        return render(self.parse(text), fold=True)
