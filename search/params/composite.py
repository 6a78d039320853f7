"""``composite`` parameters (``relationship=replaces$DocumentReference/1``): components of one element.

The components must match inside the **same** element (one ``relatesTo``), so each element is
indexed as the set of ``key1$key2`` strings in ``pairs``: every match key of its first
component joined with every match key of its second.  Keys per component value:

* token (a code, Coding or CodeableConcept): ``code``, ``system|code`` and, for a code system that
  says it is case-insensitive (:func:`search.params.token.case_insensitive`), ``system|code`` with the
  code lower-cased (a bare code is matched exactly: without its system, folding could match a code of a
  case-sensitive system);
* reference: ``Type/id`` and the bare ``id`` (local references), or the URL as is.

Component expressions are simple element paths relative to the parameter's element (the
only composite of the served types, DocumentReference ``relationship``, uses ``code`` and
``target``); the query side parses each ``$``-separated part the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import product
from typing import Any

from fhir_common.types import EsQuery
from search.errors import SearchError
from search.params.base import (
    KEYWORD,
    FhirValue,
    Fields,
    IndexContext,
    QueryContext,
    add,
    any_of,
    check_modifier,
    field_name,
    keyword_sort,
    split_escaped,
    unescape,
)
from search.params.reference import parse_reference
from search.params.token import case_insensitive, code_systems
from search.registry import SearchParameter

MODIFIERS: frozenset[str] = frozenset()


def modifiers(param: SearchParameter) -> tuple[str, ...]:
    """The modifiers ``compile_query`` accepts on ``param`` (listed by the CapabilityStatement)."""
    return tuple(sorted(MODIFIERS))


def mapping(param: SearchParameter) -> dict[str, Any]:
    return {"pairs": KEYWORD}


def _path(element: Any, path: str) -> list[Any]:
    values = [element]
    for step in path.split("."):
        nxt: list[Any] = []
        for v in values:
            if isinstance(v, dict) and step in v:
                got = v[step]
                nxt.extend(got if isinstance(got, list) else [got])
        values = nxt
    return values


def _keys(value: Any, base_url: str | None) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict) and ("reference" in value or "identifier" in value):
        ref = value.get("reference")
        if isinstance(ref, str) and ref and not ref.startswith("#"):
            norm, _, rid = parse_reference(ref, base_url)
            yield norm
            if rid:
                yield rid
    elif isinstance(value, dict):
        codings = value.get("coding") if "coding" in value else [value]
        for c in codings or []:
            code = c.get("code")
            if isinstance(code, str):
                system = c.get("system")
                yield code
                if system:
                    yield f"{system}|{code}"
                    if case_insensitive(system):
                        yield f"{system}|{code.lower()}"


def index(param: SearchParameter, values: Sequence[FhirValue], ctx: IndexContext) -> Fields:
    fields: Fields = {}
    if not param.component:
        return fields
    for value in values:
        per_component = [
            sorted({k for v in _path(value.data, c) for k in _keys(v, ctx.base_url)}) for c in param.component
        ]
        for combo in product(*per_component):
            add(fields, "pairs", "$".join(combo))
    return fields


def _query_keys(raw: str, ctx: QueryContext) -> list[str]:
    parts = split_escaped(raw, "|")
    if len(parts) == 2:  # a token: system|code or |code (references have no |)
        system, code = unescape(parts[0]), unescape(parts[1])
        if not system:
            return [code]
        keys = [f"{system}|{code}", f"{system}|{code.lower()}"] if case_insensitive(system) else [f"{system}|{code}"]
        if code in code_systems().get(system, {}):
            keys.append(code)  # a bound code (relatesTo.code) carries its system implicitly
        return keys
    value = unescape(raw)
    if "/" in value or value.startswith(("http:", "https:", "urn:")):
        return [parse_reference(value, ctx.base_url)[0]]  # absolute URLs under this server's base made local
    return [value]


def compile_query(
    param: SearchParameter, modifier: str | None, values: Sequence[str], ctx: QueryContext, name: str
) -> EsQuery:
    check_modifier(MODIFIERS, param, modifier, name)
    clauses = []
    for raw in values:
        parts = split_escaped(raw, "$")
        if len(parts) != len(param.component) or not all(parts):
            raise SearchError(f"{param.code} expects {len(param.component)} values separated by $, got {raw!r}", name)
        keys = ["$".join(c) for c in product(*[sorted(set(_query_keys(p, ctx))) for p in parts])]
        clauses.append({"terms": {field_name(param, "pairs"): keys}})
    return any_of(clauses)


def sort(param: SearchParameter, descending: bool) -> list[dict[str, Any]]:
    return keyword_sort(field_name(param, "pairs"), descending)
