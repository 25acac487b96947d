"""A PromQL tokenizer for text the parser refuses: which metric and label names it mentions.

When ``promql-parser`` rejects an expression there is no AST to walk, yet the expression still names
metrics someone relies on. This module splits the text into PromQL's lexical tokens as Prometheus' own
lexer (``promql/parser/lex.go``) does — identifiers, strings, numbers and durations, operators,
brackets, comments — and reads names off the token stream with only the context a lexer has (inside
``{…}``, inside a ``by (…)``-style label list, followed by ``(``). It never interprets the expression:
it only decides which words could be names, so a broken expression is over-reported, never
under-reported. Why a tokenizer rather than regexes over the text: a regex cannot tell a name from the
same word inside a string, a comment or a duration (``5m``), and the parser offers no token stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from traceo_finops.usage.model import LabelMatcher, Mentions, NameMatcher, NamePattern

METRIC_NAME_LABEL = "__name__"

# Prometheus' keywords (matched case-insensitively by its lexer), aggregators included: never names.
KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
    "atan2", "inf", "nan", "sum", "avg", "count", "min", "max", "group", "stddev", "stdvar", "topk", "bottomk",
    "count_values", "quantile", "limitk", "limit_ratio",
})
# Keywords followed by a parenthesised list of label names.
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
MATCH_OPS = ("=~", "!~", "!=", "=")
_OPERATORS = ("==", "!=", ">=", "<=", "=~", "!~", "+", "-", "*", "/", "%", "^", "<", ">", "=", ",", "@", ":")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"',
            "'": "'"}


@dataclass(frozen=True)
class Token:
    kind: str  # "ident", "string", "number", "op", "open", "close", "variable" (Grafana's), "other"
    text: str  # as written; for strings the decoded value
    pos: int


def _is_ident_start(c: str) -> bool:
    return c.isascii() and (c.isalpha() or c == "_")


def _is_ident_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in "_:")


def _decode(body: str, quote: str) -> str:
    """The value of a quoted string (Go escapes, as PromQL has them); raw for backquotes."""
    if quote == "`" or "\\" not in body:
        return body
    out: list[str] = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c != "\\" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        e = body[i + 1]
        width = {"x": 2, "u": 4, "U": 8}.get(e)
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif width is not None:
            digits = body[i + 2:i + 2 + width]
            try:
                out.append(chr(int(digits, 16)))
            except ValueError:
                out.append(body[i:i + 2 + width])
            i += 2 + width
        elif e in "01234567":
            digits = body[i + 1:i + 4]
            try:
                out.append(chr(int(digits, 8)))
            except ValueError:
                out.append(body[i:i + 4])
            i += 4
        else:  # an escape PromQL refuses: keep the text, the scan goes on
            out.append(body[i:i + 2])
            i += 2
    return "".join(out)


def _variable_end(text: str, i: int) -> int:
    """End of a Grafana template variable starting at ``i``, or ``i`` when there is none."""
    n = len(text)
    if text.startswith("${", i):
        end = text.find("}", i)
        return end + 1 if end > 0 else i
    if text[i] == "$":
        j = i + 1
        while j < n and _is_ident_char(text[j]) and text[j] != ":":
            j += 1
        return j if j > i + 1 else i
    if text.startswith("[[", i):
        end = text.find("]]", i)
        body = text[i + 2:end] if end > 0 else ""
        if body.strip() and all(_is_ident_char(ch) or ch in ": " for ch in body):
            return end + 2
    return i


def tokens(text: str) -> Iterator[Token]:
    """PromQL tokens of ``text`` (whitespace and comments dropped); never raises, whatever the text."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":  # a comment runs to the end of the line
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif c in "\"'`":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" and c != "`" else 1
            yield Token("string", _decode(text[i + 1:min(j, n)], c), i)  # an unterminated string runs to the end
            i = j + 1
        elif c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            j = i + 1
            while j < n and (text[j].isascii() and (text[j].isalnum() or text[j] in "._")):
                j += 1
            yield Token("number", text[i:j], i)  # numbers, hex, durations (5m, 1h30m): never names
            i = j
        elif _is_ident_start(c) or (c == ":" and i + 1 < n and (_is_ident_start(text[i + 1]) or text[i + 1] == ":")):
            j = i + 1
            while j < n and _is_ident_char(text[j]):
                j += 1
            yield Token("ident", text[i:j], i)
            i = j
        elif (end := _variable_end(text, i)) > i:  # Grafana's $var, ${var…}, [[var]]: a value, not a name
            yield Token("variable", text[i:end], i)
            i = end
        elif c in "([{":
            yield Token("open", c, i)
            i += 1
        elif c in ")]}":
            yield Token("close", c, i)
            i += 1
        else:
            op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
            yield Token("op" if op else "other", op or c, i)
            i += len(op) if op else 1


def mentions(text: str) -> Mentions:
    """Every name ``text`` may use as a metric or label, read from its tokens (see the module docstring).

    Identifiers that are not keywords and not followed by ``(`` (function calls) are metric names
    outside ``{…}`` and label lists, label names inside; a quoted string in ``{…}`` followed by a matcher
    is a label name, otherwise a metric name (``{"my.metric"}``); ``__name__`` matchers give exact names
    or patterns; a ``{…}`` not preceded by a name is a name-less selector, kept with its matchers.
    """
    toks = list(tokens(text))
    metrics: set[str] = set()
    labels: set[str] = set()
    patterns: list[NamePattern] = []
    nameless: list[tuple[LabelMatcher, ...]] = []
    brackets: list[str] = []  # "{" selector braces, "L" label lists, "(" / "[" anything else
    group: list[tuple[str, str, str]] = []  # matchers (label, op, value) of the selector brace being read
    group_named = False
    pending_list = False
    for k, tok in enumerate(toks):
        nxt = toks[k + 1] if k + 1 < len(toks) else None
        prev = toks[k - 1] if k else None
        inside = brackets[-1] if brackets else ""
        if tok.kind == "open":
            if tok.text == "{":
                group, group_named = [], prev is not None and (
                    (prev.kind == "ident" and prev.text.lower() not in KEYWORDS) or prev.kind == "variable")
                brackets.append("{")
            else:
                brackets.append("L" if tok.text == "(" and pending_list else tok.text)
            pending_list = False
            continue
        pending_list = False
        if tok.kind == "close":
            if brackets and brackets[-1] == "{" and tok.text == "}":
                _close_selector(group, group_named, metrics, patterns, nameless)
            if brackets:
                brackets.pop()
            continue
        if tok.kind == "ident":
            word = tok.text
            if word.lower() in KEYWORDS:
                pending_list = word.lower() in LABEL_LIST_KEYWORDS
                continue
            if nxt is not None and nxt.kind == "open" and nxt.text == "(" and inside != "L":
                continue  # a function call
            if inside in ("{", "L"):
                if word != METRIC_NAME_LABEL:
                    labels.add(word)
                if inside == "{":
                    _matcher(toks, k, group)
            else:
                metrics.add(word)
        elif tok.kind == "string" and inside == "{":
            if nxt is not None and nxt.kind == "op" and nxt.text in MATCH_OPS:
                if tok.text and tok.text != METRIC_NAME_LABEL:
                    labels.add(tok.text)
                _matcher(toks, k, group)
            elif tok.text and prev is not None and prev.text in ("{", ",") and not _is_value(toks, k):
                metrics.add(tok.text)  # {"my.metric", ...}: a quoted metric name
                group_named = True
    if brackets and brackets[-1] == "{":  # an unclosed selector still selects
        _close_selector(group, group_named, metrics, patterns, nameless)
    return Mentions(frozenset(metrics), tuple(patterns), tuple(nameless), frozenset(labels))


def _is_value(toks: list[Token], k: int) -> bool:
    """True when the string at ``k`` is the value of a matcher (``label op "value"``)."""
    return k >= 2 and toks[k - 1].kind == "op" and toks[k - 1].text in MATCH_OPS


def _matcher(toks: list[Token], k: int, group: list[tuple[str, str, str]]) -> None:
    """Record ``name op "value"`` starting at token ``k`` into the current selector's matchers."""
    if k + 2 < len(toks) and toks[k + 1].kind == "op" and toks[k + 1].text in MATCH_OPS \
            and toks[k + 2].kind == "string":
        group.append((toks[k].text, toks[k + 1].text, toks[k + 2].text))


def _close_selector(group: list[tuple[str, str, str]], named: bool, metrics: set[str],
                    patterns: list[NamePattern], nameless: list[tuple[LabelMatcher, ...]]) -> None:
    name_matchers = [NameMatcher(op, value) for label, op, value in group if label == METRIC_NAME_LABEL]
    exact = [m.value for m in name_matchers if m.op == "="]
    if named:
        return
    if exact:
        metrics.update(exact)
    elif name_matchers and not NamePattern(tuple(name_matchers)).matches_everything:
        patterns.append(NamePattern(tuple(name_matchers)))
    else:
        nameless.append(tuple(LabelMatcher(label, op, value) for label, op, value in group
                              if label != METRIC_NAME_LABEL))
