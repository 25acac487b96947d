"""Usage from recording and alerting rules: rule files, Prometheus ``/api/v1/rules``, Mimir's ruler.

A rule is identified as ``<scope>/<group>/<record|alert>:<name>`` where scope is the rule file's base
name (the rules API reports the server-side path, so a rule read from its file and from the API gets the
same id and is counted once) or the Mimir namespace. Rules of one group that share a name get ``#n``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from traceo_finops.usage.model import Mentions, Occurrence, ParseError, Source, SourceKind
from traceo_finops.usage.promql import PromQLAnalyzer


def rule_scope(file: str) -> str:
    """What a rule id starts with for a rule file: its base name."""
    return Path(file).name if file else ""


def _error(source_id: str, location: str, message: str, expression: str = "",
           mentions: Mentions | None = None) -> ParseError:
    return ParseError(SourceKind.RULE, source_id, location, expression, message, mentions)


def rule_groups_occurrences(groups: object, *, scope: str, file: str = "",
                            analyzer: PromQLAnalyzer | None = None) -> Iterator[Occurrence | ParseError]:
    """Usage in rule groups shaped like a rule file's ``groups`` list (``record``/``alert`` + ``expr``)
    or like the rules API's (``name`` + ``query`` + ``type``)."""
    analyzer = analyzer or PromQLAnalyzer()
    where = file or scope or "rules"
    if not isinstance(groups, list):
        yield _error(scope or where, where, f"'groups' is a {type(groups).__name__}, expected a list")
        return
    for g, group in enumerate(groups):
        if not isinstance(group, Mapping):
            yield _error(scope or where, f"{where} group {g}", f"group is a {type(group).__name__}, expected a mapping")
            continue
        gname = str(group.get("name") or f"#{g}")
        gscope = scope or rule_scope(str(group.get("file") or ""))
        rules = group.get("rules")
        if rules is None:
            rules = []
        if not isinstance(rules, list):
            yield _error(f"{gscope}/{gname}", f"{where} group {gname!r}",
                         f"'rules' is a {type(rules).__name__}, expected a list")
            continue
        seen: dict[str, int] = {}
        for r, rule in enumerate(rules):
            location = f"{where} group {gname!r} rule {r}"
            if not isinstance(rule, Mapping):
                yield _error(f"{gscope}/{gname}", location, f"rule is a {type(rule).__name__}, expected a mapping")
                continue
            kind, name, expr = _rule_fields(rule)
            if kind is None or not name:
                yield _error(f"{gscope}/{gname}", location, "rule has neither 'record' nor 'alert' (nor 'name'/'type')",
                             str(expr or ""))
                continue
            rid = f"{gscope}/{gname}/{kind}:{name}"
            seen[rid] = seen.get(rid, 0) + 1
            if seen[rid] > 1:
                rid += f"#{seen[rid]}"
            source = Source(SourceKind.RULE, rid, name, file or str(group.get("file") or ""), gscope, gname)
            location = f"{where} group {gname!r} {kind} {name!r}"
            if expr is None or (isinstance(expr, str) and not expr.strip()):
                yield _error(rid, location, "rule has no expression")
                continue
            text = str(expr)
            analysis = analyzer.analyze(text)
            if not analysis.ok:  # what it names is held back (see ``UsageIndex.unparsed_hold``)
                yield _error(rid, location, str(analysis.error), text, analysis.mentions)
                continue
            yield Occurrence(source, location, analysis)


def _rule_fields(rule: Mapping[str, Any]) -> tuple[str | None, str, object]:
    """(record|alert, name, expression) of a rule file entry or a rules API entry."""
    if "record" in rule:
        return "record", str(rule["record"] or ""), rule.get("expr")
    if "alert" in rule:
        return "alert", str(rule["alert"] or ""), rule.get("expr")
    rtype = rule.get("type")
    kind = {"recording": "record", "alerting": "alert"}.get(str(rtype)) if rtype is not None else None
    return kind, str(rule.get("name") or ""), rule.get("query", rule.get("expr"))


def _yaml(text: str, name: str) -> object | ParseError:
    try:
        data: object = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return _error(rule_scope(name) or name, where, f"rule file is not valid YAML: {problem}")
    return data


def rule_text_occurrences(text: str, *, file: str,
                          analyzer: PromQLAnalyzer | None = None) -> Iterator[Occurrence | ParseError]:
    """Usage in the text of a Prometheus rule file (``groups: [...]``)."""
    data = _yaml(text, file)
    if isinstance(data, ParseError):
        yield data
        return
    if data is None:  # an empty file holds no rules (promtool agrees)
        return
    if not isinstance(data, Mapping) or "groups" not in data:
        shape = type(data).__name__ if not isinstance(data, Mapping) else "mapping without 'groups'"
        yield _error(rule_scope(file), file, f"not a Prometheus rule file: top level is a {shape}")
        return
    yield from rule_groups_occurrences(data["groups"] or [], scope=rule_scope(file), file=file, analyzer=analyzer)


def rule_file_occurrences(path: str | Path,
                          analyzer: PromQLAnalyzer | None = None) -> Iterator[Occurrence | ParseError]:
    """Usage in one rule file; an unreadable file or a YAML error gives one ``ParseError`` naming it."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        yield _error(rule_scope(name), name, f"cannot read rule file: {exc}")
        return
    yield from rule_text_occurrences(text, file=name, analyzer=analyzer)


def rules_api_occurrences(answer: object, *, source: str = "",
                          analyzer: PromQLAnalyzer | None = None) -> Iterator[Occurrence | ParseError]:
    """Usage in a Prometheus ``/api/v1/rules`` answer: the whole JSON, its ``data`` or its ``groups`` list.

    ``source`` (e.g. the Prometheus source name) only appears in locations, not in rule ids.
    """
    groups = answer
    if isinstance(groups, Mapping) and isinstance(groups.get("data"), Mapping):
        groups = groups["data"]
    if isinstance(groups, Mapping):
        groups = groups.get("groups")
    for item in rule_groups_occurrences(groups, scope="", file="", analyzer=analyzer):
        if source and isinstance(item, Occurrence):
            item = replace(item, location=f"{source}: {item.location}")
        yield item


def ruler_occurrences(answer: Mapping[str, Any] | str, *, tenant: str = "",
                      analyzer: PromQLAnalyzer | None = None) -> Iterator[Occurrence | ParseError]:
    """Usage in a Mimir ruler answer (``/prometheus/config/v1/rules``): namespace → rule groups, as a
    mapping or as the YAML text Mimir returns. Rule ids start with ``<tenant>:<namespace>`` when a tenant
    is given."""
    where = f"ruler {tenant}" if tenant else "ruler"
    data: object = answer
    if isinstance(answer, str):
        data = _yaml(answer, where)
        if isinstance(data, ParseError):
            yield data
            return
    if data is None:
        return
    if not isinstance(data, Mapping):
        yield _error(where, where, f"not a ruler answer: top level is a {type(data).__name__}, expected a mapping "
                                   "of namespace to rule groups")
        return
    for namespace, groups in data.items():
        scope = f"{tenant}:{namespace}" if tenant else str(namespace)
        yield from rule_groups_occurrences(groups, scope=scope, file=f"{where} namespace {namespace}",
                                           analyzer=analyzer)

