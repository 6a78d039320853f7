"""Chained parameters, reverse chaining (``_has``) and ``_list``: criteria that need other searches.

The compiler stays free of I/O: whatever must be looked up is asked of a :class:`Resolver`
(the HTTP layer implements it on Elasticsearch and the store).  Each chain is resolved into the
ids it designates, then into an ordinary ``terms`` clause:

* ``subject:Patient.name=x`` -> ids of Patients with ``name=x`` -> ``sp.subject.ref`` in
  ``Patient/<id>...``; without ``:Type`` every served target type that has the chained
  parameter is tried (the parameter must exist on at least one); chains nest
  (``patient.general-practitioner.name``) because the resolver compiles the rest recursively;
* a chain also matches references to *contained* resources through the ``contained_*``
  fields (``author.given`` on MHD Comprehensive DocumentReferences, whose authors are contained);
* ``_has:Observation:patient:code=x`` -> ids referenced by the ``patient`` parameter of the
  Observations with ``code=x`` -> ``id`` in ...; ``_has`` nests in the same way;
* ``_list=42`` -> the ids of this type among ``List/42``'s ``entry.item``.

A resolution that would exceed :data:`MAX_IDS` ids is refused (``too-costly``), never truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fhir_common.types import EsQuery, SearchParams
from search.errors import SearchError
from search.normalize import normalize_string
from search.params.base import any_of, match_nothing, split_escaped, unescape
from search.params.reference import CONTAINED_CHAINS
from search.registry import SearchParameter, SearchParameterRegistry

#: Most ids one chain, ``_has`` or ``_list`` may resolve to (ES ``terms`` takes up to 65,536).
MAX_IDS = 9_999  # size MAX_IDS + 1 stays within index.max_result_window (10,000)


class Resolver(Protocol):
    """Look-ups the compiler cannot do itself (implemented on ES and the store by the server)."""

    def served_types(self) -> Sequence[str]: ...

    def matching_ids(self, resource_type: str, params: SearchParams) -> list[str]:
        """Ids of ``resource_type`` matching ``params`` (compiled recursively); raise if > MAX_IDS."""
        ...

    def referenced_ids(
        self, source_type: str, ref_param: str, params: SearchParams, target_type: str
    ) -> list[str]:
        """Ids of ``target_type`` referenced through ``ref_param`` by ``source_type`` resources matching ``params``."""
        ...

    def list_items(self, list_id: str) -> list[str]:
        """``Type/id`` references of the items of List ``list_id`` (empty if it does not exist)."""
        ...

    def refers_to_type(self, source_type: str, ref_param: str, target_type: str) -> bool:
        """Whether any ``source_type`` resource refers to a ``target_type`` through ``ref_param``.

        Lets a chain skip the resolution of target types nothing points to (exact: without such a
        reference the target's matches cannot contribute), e.g. MHD ``author.family`` into Patient
        when all authors are contained Practitioners.
        """
        ...


def _need(resolver: Resolver | None, name: str) -> Resolver:
    if resolver is None:
        raise SearchError("this search needs an executor (chains, _has, _list)", name)
    return resolver


def _ref_terms(field: str, refs: list[str]) -> EsQuery:
    return {"terms": {field: refs}} if refs else match_nothing()


def _contained_clause(
    param: SearchParameter, rest: str, type_modifier: str | None, value: str
) -> EsQuery | None:
    code, _, modifier = rest.partition(":")
    spec = CONTAINED_CHAINS.get(code)
    if spec is None or "." in rest or modifier:
        return None
    field, kind = spec
    path = f"sp.{param.code}.{field}"
    clauses = []
    for raw in split_escaped(value, ","):
        if not raw:
            continue
        if kind == "string":
            norm = normalize_string(unescape(raw))
            if norm:
                clauses.append({"prefix": {path: norm}})
        else:
            parts = split_escaped(raw, "|")
            clauses.append({"term": {path: unescape(raw) if len(parts) == 1 else
                                     f"{unescape(parts[0])}|{unescape('|'.join(parts[1:]))}"}})
    if not clauses:
        return None
    clause = any_of(clauses)
    if type_modifier:
        clause = {"bool": {"filter": [clause, {"term": {f"sp.{param.code}.type": type_modifier}}]}}
    return clause


def chain_clause(
    registry: SearchParameterRegistry, resource_type: str, name: str, value: str, resolver: Resolver | None
) -> EsQuery:
    """The clause of one chained parameter occurrence ``head[:Type].rest=value``."""
    head, _, rest = name.partition(".")
    code, _, type_modifier = head.partition(":")
    param = registry.get(resource_type, code)
    if param is None or param.type != "reference":
        raise SearchError(f"{code} is not a reference parameter of {resource_type}: it cannot be chained", name)
    if not rest:
        raise SearchError("empty chained parameter", name)
    if type_modifier and param.target and type_modifier not in param.target:
        raise SearchError(f"{type_modifier} is not a target type of {code} ({', '.join(param.target)})", name)
    res = _need(resolver, name)
    candidates = [type_modifier] if type_modifier else list(param.target)
    served_types = set(res.served_types())
    served = [t for t in candidates if t in served_types]
    rest_code = rest.split(".", 1)[0].split(":", 1)[0]
    applicable = [t for t in served if registry.get(t, rest_code) is not None or rest_code == "_has"]
    clauses: list[EsQuery] = []
    for target in applicable:
        if not res.refers_to_type(resource_type, code, target):
            clauses.append(match_nothing())
            continue
        ids = res.matching_ids(target, [(rest, value)])
        clauses.append(_ref_terms(f"sp.{code}.ref", [f"{target}/{i}" for i in ids]))
    contained = _contained_clause(param, rest, type_modifier, value)
    if contained is not None:
        clauses.append(contained)
    if not clauses:
        raise SearchError(
            f"cannot chain {rest!r} through {code}: no target type held by this server has that parameter"
            + ("" if type_modifier else " (name the target with :Type)"),
            name,
        )
    return any_of(clauses)


def has_clause(
    registry: SearchParameterRegistry, resource_type: str, name: str, value: str, resolver: Resolver | None
) -> EsQuery:
    """``_has:Source:refParam:rest=value`` -> ids of ``resource_type`` referenced by matching Sources."""
    parts = name.split(":")
    if len(parts) < 4 or not all(parts[1:4]):
        raise SearchError("_has expects _has:Type:reference-parameter:parameter=value", name)
    source, ref_code, rest = parts[1], parts[2], ":".join(parts[3:])
    res = _need(resolver, name)
    if source not in res.served_types():
        raise SearchError(f"_has: {source} is not a resource type this server searches", name)
    ref = registry.get(source, ref_code)
    if ref is None or ref.type != "reference":
        raise SearchError(f"_has: {ref_code} is not a reference parameter of {source}", name)
    if ref.target and resource_type not in ref.target:
        raise SearchError(f"_has: {source}.{ref_code} cannot refer to {resource_type}", name)
    ids = res.referenced_ids(source, ref_code, [(rest, value)], resource_type)
    return {"terms": {"id": ids}} if ids else match_nothing()


def list_clause(resource_type: str, name: str, values: list[str], resolver: Resolver | None) -> EsQuery:
    """``_list=a,b``: resources of this type that are items of List a or List b."""
    res = _need(resolver, name)
    ids: list[str] = []
    for raw in values:
        list_id = unescape(raw)
        if list_id.startswith("List/"):
            list_id = list_id[5:]
        for ref in res.list_items(list_id):
            t, _, i = ref.partition("/")
            if t == resource_type and i and i not in ids:
                ids.append(i)
    return {"terms": {"id": ids}} if ids else match_nothing()

