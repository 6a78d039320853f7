"""``uri`` parameters: exact match, ``:below`` (prefix), ``:above`` (stored URI is a prefix).

Index field under ``sp.<code>``: ``value``, the URI as stored (keyword, case-sensitive, as
URIs are).  A canonical with ``|version`` is stored both with and without the version, so
``_profile=<url>`` matches a versioned profile declaration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhir_common.types import EsQuery
from search.errors import SearchError
from search.params.base import (
    KEYWORD,
    MAX_PREFIX_CHARS,
    MAX_RAW_KEYWORD_CHARS,
    FhirValue,
    Fields,
    IndexContext,
    QueryContext,
    add,
    any_of,
    check_modifier,
    field_name,
    keyword_sort,
    term,
    unescape,
)
from search.registry import SearchParameter

MODIFIERS = frozenset({"below", "above"})


def modifiers(param: SearchParameter) -> tuple[str, ...]:
    """The modifiers ``compile_query`` accepts on ``param`` (listed by the CapabilityStatement)."""
    return tuple(sorted(MODIFIERS))


def mapping(param: SearchParameter) -> dict[str, Any]:
    return {"value": KEYWORD}


def index(param: SearchParameter, values: Sequence[FhirValue], ctx: IndexContext) -> Fields:
    fields: Fields = {}
    for value in values:
        uri = value.data
        if not isinstance(uri, str) or not uri:
            ctx.skip(param, uri, f"not a uri ({value.type})")
            continue
        if len(uri) > MAX_RAW_KEYWORD_CHARS:
            ctx.skip(param, uri[:80], "uri too long")
            continue
        add(fields, "value", uri)
        if "|" in uri:
            add(fields, "value", uri.split("|", 1)[0])
    return fields


def _above_candidates(uri: str) -> list[str]:
    """Every prefix of ``uri`` that ends just before a ``/`` (plus the whole uri)."""
    start = uri.find("://")
    start = start + 3 if start >= 0 else 0
    cands = [uri[:i] for i in range(start, len(uri)) if uri[i] == "/" and i > start]
    return [*cands, uri]


def _clause(param: SearchParameter, modifier: str | None, raw: str, name: str) -> EsQuery:
    uri = unescape(raw)
    if not uri:
        raise SearchError("empty uri", name)
    f = field_name(param, "value")
    if modifier == "below":
        if len(uri) > MAX_PREFIX_CHARS:
            raise SearchError(f"a :below uri is limited to {MAX_PREFIX_CHARS} characters", name)
        return {"prefix": {f: uri}}
    if modifier == "above":
        return {"terms": {f: _above_candidates(uri)}}
    return term(f, uri)


def compile_query(
    param: SearchParameter, modifier: str | None, values: Sequence[str], ctx: QueryContext, name: str
) -> EsQuery:
    check_modifier(MODIFIERS, param, modifier, name)
    return any_of([_clause(param, modifier, v, name) for v in values])


def sort(param: SearchParameter, descending: bool) -> list[dict[str, Any]]:
    return keyword_sort(field_name(param, "value"), descending)
