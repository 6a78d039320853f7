"""Compile decoded FHIR search parameters into an Elasticsearch query (no I/O).

``compile_search`` takes the raw query pairs (``name[:modifier]``, value) and returns a
:class:`CompiledSearch`: the ES ``query`` (a ``bool.filter`` of one clause per parameter
occurrence, i.e. repetition = AND, commas = OR), the ``sort`` (always ending with the ``id``
tie-break, as ``search_after`` paging needs), and the parsed result parameters.

Policy: unknown parameters are ignored (and left out of ``self_params``) unless ``strict``;
unsupported modifiers, malformed values and known-but-unsupported parameters always raise
:class:`SearchError` (-> 400).  Empty values (``name=``) are ignored, as the spec says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhir_common.types import EsQuery, SearchParams
from search import fulltext
from search.chain import Resolver, chain_clause, has_clause, list_clause
from search.errors import SearchError
from search.params import handler_for
from search.params.base import QueryContext, any_of, split_escaped, unescape
from search.registry import FULLTEXT_CODES, SearchParameter, SearchParameterRegistry

__all__ = ["CompiledSearch", "SearchError", "compile_search", "compile_sort"]

RESULT_PARAMS = frozenset({"_count", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude"})
#: HTTP-level parameters that are not search criteria; tolerated even in strict mode.
IGNORED_PARAMS = frozenset({"_format", "_pretty"})
#: Known FHIR search features not implemented yet (always an error rather than ignored).
UNSUPPORTED_PARAMS = {
    "_filter": "_filter is not supported",
    "_contained": "_contained is not supported",
    "_containedType": "_containedType is not supported",
}

TOTAL_VALUES = frozenset({"none", "estimate", "accurate"})
SUMMARY_VALUES = frozenset({"true", "false", "text", "data", "count"})
TIE_BREAK: dict[str, Any] = {"id": "asc"}

_ELEMENT = re.compile(r"^[A-Za-z][A-Za-z0-9]*(\[x\])?$")
_INCLUDE = re.compile(r"^(\*|[A-Z][A-Za-z]+:(\*|[a-z_][A-Za-z0-9_\-]*)(:[A-Z][A-Za-z]+)?)$")


@dataclass
class CompiledSearch:
    """Everything the HTTP layer needs to run one search against the type's index."""

    resource_type: str
    query: EsQuery
    sort: list[Any]
    count: int | None = None
    total: str | None = None
    summary: str | None = None
    elements: list[str] | None = None
    self_params: SearchParams = field(default_factory=list)
    includes: list[str] = field(default_factory=list)
    revincludes: list[str] = field(default_factory=list)
    #: ``"_include=<value>"`` / ``"_revinclude=<value>"`` given with ``:iterate`` (R4 also accepts ``:recurse``)
    iterating: set[str] = field(default_factory=set)


def compile_search(
    registry: SearchParameterRegistry,
    resource_type: str,
    params: Sequence[tuple[str, str]],
    *,
    base_url: str,
    strict: bool = False,
    now: datetime | None = None,
    resolver: Resolver | None = None,
) -> CompiledSearch:
    """Compile ``params`` (decoded query pairs) for ``resource_type``; raises :class:`SearchError`.

    ``base_url`` is this server's public base (absolute references under it are local);
    ``strict`` mirrors ``Prefer: handling=strict``; ``now`` pins the clock for ``ap`` dates;
    ``resolver`` runs the look-ups of chains, ``_has`` and ``_list`` (see :mod:`search.chain`).
    """
    ctx = QueryContext(base_url.rstrip("/"), now or datetime.now().astimezone())
    known = registry.for_type(resource_type)
    filters: list[EsQuery] = [{"term": {"resource_type": resource_type}}]
    out = CompiledSearch(resource_type, {}, [])
    sort_value: str | None = None
    for name, value in params:
        code, _, modifier = name.partition(":")
        if code in IGNORED_PARAMS:
            continue
        if code in RESULT_PARAMS:
            if _result_param(out, code, modifier or None, value, name):
                out.self_params.append((name, value))
                if code == "_sort":
                    sort_value = value
            continue
        if code in UNSUPPORTED_PARAMS:
            raise SearchError(UNSUPPORTED_PARAMS[code], name)
        if value == "":
            continue  # "name=" is ignored
        if code == "_has":
            filters.append(has_clause(registry, resource_type, name, value, resolver))
            out.self_params.append((name, value))
            continue
        if code == "_list":
            if modifier:
                raise SearchError(f"modifier :{modifier} is not supported on _list", name)
            out.self_params.append((name, value))
            filters.append(list_clause(resource_type, name, [v for v in split_escaped(value, ",") if v], resolver))
            continue
        if "." in name:
            head = name.split(".", 1)[0].split(":", 1)[0]
            chained = known.get(head)
            if chained is not None and chained.type == "reference":
                filters.append(chain_clause(registry, resource_type, name, value, resolver))
                out.self_params.append((name, value))
                continue
            if chained is not None:
                raise SearchError(f"{head} is a {chained.type} parameter: only references can be chained", name)
            _unknown(name, resource_type, strict)
            continue
        param = known.get(code)
        if param is None:
            _unknown(name, resource_type, strict)
            continue
        if param.reason_unsupported:
            raise SearchError(param.reason_unsupported, name)
        values = [v for v in split_escaped(value, ",") if v != ""]
        if not values:
            continue  # "name=" is ignored
        filters.append(_criterion(param, modifier or None, values, ctx, name))
        out.self_params.append((name, value))
    out.query = {"bool": {"filter": filters}}
    out.sort = compile_sort(known, sort_value) if sort_value is not None else [TIE_BREAK]
    return out


def _unknown(name: str, resource_type: str, strict: bool) -> None:
    if strict:
        raise SearchError(f"unknown search parameter {name} for {resource_type}", name)


def _criterion(
    param: SearchParameter, modifier: str | None, values: list[str], ctx: QueryContext, name: str
) -> EsQuery:
    """One parameter occurrence (OR over its comma-separated values)."""
    if modifier == "missing":
        return any_of([_missing(param, v, name) for v in values])
    if param.code in FULLTEXT_CODES:
        return fulltext.compile_query(param.code, modifier, values, name)
    if param.code == "_id":
        if modifier not in (None, "not"):
            raise SearchError(f"modifier :{modifier} is not supported on _id", name)
        ids = {"terms": {"id": [unescape(v) for v in values]}}
        return {"bool": {"must_not": [ids]}} if modifier == "not" else ids
    handler = handler_for(param.type)
    if handler is None:  # registry marks these unsupported; defensive
        raise SearchError(f"search parameters of type {param.type} are not supported yet", name)
    return handler.compile_query(param, modifier, values, ctx, name)


def _missing(param: SearchParameter, value: str, name: str) -> EsQuery:
    if value not in ("true", "false"):
        raise SearchError(f":missing expects true or false, got {value!r}", name)
    if param.code == "_id":
        return {"bool": {"must_not": [{"match_all": {}}]}} if value == "true" else {"match_all": {}}
    has = {"term": {"present": param.code}}
    return {"bool": {"must_not": [has]}} if value == "true" else has


def _result_param(out: CompiledSearch, code: str, modifier: str | None, value: str, name: str) -> bool:
    """Parse one result parameter into ``out``; returns whether it is echoed in ``self_params``."""
    iterate = code in ("_include", "_revinclude") and modifier in ("iterate", "recurse")
    if modifier is not None and not iterate:
        raise SearchError(f"modifier :{modifier} is not supported on {code}", name)
    if code == "_count":
        if not (value.isascii() and value.isdigit()):
            raise SearchError(f"_count must be a non-negative integer, got {value!r}", name)
        out.count = int(value)
    elif code == "_total":
        if value not in TOTAL_VALUES:
            raise SearchError(f"_total must be one of {sorted(TOTAL_VALUES)}", name)
        out.total = value
    elif code == "_summary":
        if value not in SUMMARY_VALUES:
            raise SearchError(f"_summary must be one of {sorted(SUMMARY_VALUES)}", name)
        out.summary = value
    elif code == "_elements":
        elements = [e.strip() for e in value.split(",") if e.strip()]
        bad = [e for e in elements if not _ELEMENT.match(e)]
        if bad:
            raise SearchError(f"invalid _elements entries {bad}", name)
        out.elements = (out.elements or []) + elements
    elif code == "_sort":
        if not value:
            return False
    else:  # _include / _revinclude: parsed, not executed here
        if not _INCLUDE.match(value):
            raise SearchError(f"{code} expects Type:param[:TargetType] or *, got {value!r}", name)
        (out.includes if code == "_include" else out.revincludes).append(value)
        if iterate:
            out.iterating.add(f"{code}={value}")
    return True


def compile_sort(known: Mapping[str, SearchParameter], value: str) -> list[Any]:
    """``_sort=a,-b`` -> ES sort clauses, multi-valued fields by their first value in that order,
    missing values last, ending with the ``id`` tie-break."""
    clauses: list[Any] = []
    for key in (k.strip() for k in value.split(",")):
        if not key:
            continue
        descending = key.startswith("-")
        code = key[1:] if descending else key
        order = "desc" if descending else "asc"
        if code == "_id":
            clauses.append({"id": order})
            continue
        if code == "_lastUpdated":
            clauses.append({"meta.lastUpdated": {"order": order, "missing": "_last"}})
            continue
        param = known.get(code)
        handler = handler_for(param.type) if param is not None else None
        if param is None or handler is None or not param.supported or code in FULLTEXT_CODES:
            raise SearchError(f"cannot sort on {code!r}", "_sort")
        clauses.extend(handler.sort(param, descending))
    if not clauses or not (isinstance(clauses[-1], dict) and "id" in clauses[-1]):
        clauses.append(TIE_BREAK)
    return clauses


def reverse_sort(sort: list[Any]) -> list[Any]:
    """The exact reverse order of ``sort`` (for ``prev`` pages read backwards with ``search_after``).

    Orders flip and missing values move to the other end; ``mode`` is kept, so each document
    keeps the same sort value and the reversed sequence is the original one read backwards.
    """
    out: list[Any] = []
    for clause in sort:
        ((f, spec),) = clause.items()
        if isinstance(spec, str):
            out.append({f: "desc" if spec == "asc" else "asc"})
            continue
        flipped = dict(spec)
        flipped["order"] = "desc" if spec.get("order", "asc") == "asc" else "asc"
        flipped["missing"] = "_first" if spec.get("missing", "_last") == "_last" else "_last"
        out.append({f: flipped})
    return out
