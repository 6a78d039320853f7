"""The :class:`search.chain.Resolver` of the server: chains, ``_has`` and ``_list`` on ES and the store.

Inner searches are compiled with the same compiler (strict: an unknown chained parameter is an
error, not silently ignored) and run without a point-in-time: they happen within the one
request whose read-your-writes barrier has already passed.  Results larger than
:data:`search.chain.MAX_IDS` are refused with ``too-costly`` rather than truncated.

With an :class:`~fhir_server.security.policy.AccessPolicy`, every inner query is ANDed with the
principal's mandatory parameters for its type (a type they may not search matches nothing) and a
``_list`` is read only when the principal may see the List: a masked document cannot be detected
through ``Patient?_has:DocumentReference:subject:...`` nor a hidden List enumerated through ``_list``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhir_common.types import EsQuery, SearchParams
from fhir_server.context import ServerContext
from fhir_server.security.policy import AccessPolicy
from search.chain import MAX_IDS
from search.errors import SearchError
from search.params.base import match_nothing
from search.params.reference import parse_reference
from search.query import CompiledSearch, compile_search

#: First page size of a chain's inner search (a larger one follows only when it is full).
FIRST_TRY = 100


def _no_result_params(compiled: CompiledSearch, params: SearchParams) -> None:
    """An inner search takes criteria only: any other parameter kept off ``self_params`` is refused."""
    if compiled.self_params != [p for p in params if p[1] != ""]:
        raise SearchError("result parameters (_sort, _count...) are not allowed inside a chain or _has",
                          params[0][0])


def policy_query(ctx: ServerContext, policy: AccessPolicy | None, resource_type: str,
                 query: EsQuery) -> EsQuery | None:
    """``query`` restricted to what ``policy`` lets its principal see of ``resource_type``: ANDed with their
    mandatory parameters and with the negation of their Consent exclusions. None: they see none of it.

    The one place an inner query (chain, ``_has``, ``_revinclude``) takes the policy in, so none of them
    can drift from the others."""
    if policy is None:
        return query
    mandatory = policy.params(resource_type)
    if mandatory is None:
        return None
    if mandatory:
        required = compile_search(ctx.search_parameters, resource_type, mandatory, base_url=ctx.base_url,
                                  strict=True).query
        query = {"bool": {"filter": [query, required]}}
    return policy.restrict(ctx.search_parameters, ctx.base_url, resource_type, query)


class EsResolver:
    def __init__(self, ctx: ServerContext, policy: AccessPolicy | None = None) -> None:
        self.ctx = ctx
        self.policy = policy

    def served_types(self) -> Sequence[str]:
        return self.ctx.indices.searchable_types()

    def _query(self, resource_type: str, params: SearchParams) -> EsQuery:
        compiled = compile_search(self.ctx.search_parameters, resource_type, params, base_url=self.ctx.base_url,
                                  strict=True, resolver=self)
        query = policy_query(self.ctx, self.policy, resource_type, compiled.query)
        if query is None:  # validated above, but the principal sees none of this type
            return match_nothing()
        _no_result_params(compiled, params)
        return query

    def matching_ids(self, resource_type: str, params: SearchParams) -> list[str]:
        query = self._query(resource_type, params)
        hits: list[dict[str, Any]] = []
        for size in (FIRST_TRY, MAX_IDS + 1):  # most chains designate a few resources: ask small first
            resp = self.ctx.search_es.search(index=self.ctx.indices.alias(resource_type), query=query, source=False,
                                      size=size, track_total_hits=False, sort=["_doc"]).body
            hits = resp["hits"]["hits"]
            if len(hits) < size:
                break
        if len(hits) > MAX_IDS:
            raise SearchError(f"the chained criteria match more than {MAX_IDS} {resource_type} resources; "
                              "narrow them", params[0][0], code="too-costly")
        return [h["_id"] for h in hits]

    def referenced_ids(self, source_type: str, ref_param: str, params: SearchParams,
                       target_type: str) -> list[str]:
        query = self._query(source_type, params)
        field = f"sp.{ref_param}.ref"
        resp = self.ctx.search_es.search(
            index=self.ctx.indices.alias(source_type), query=query, size=0, track_total_hits=False,
            aggs={"refs": {"terms": {"field": field, "include": f"{target_type}/.*", "size": MAX_IDS + 1}}},
        ).body
        buckets = resp["aggregations"]["refs"]["buckets"]
        if len(buckets) > MAX_IDS:
            raise SearchError(f"_has matches more than {MAX_IDS} {target_type} resources; narrow it",
                              f"_has:{source_type}:{ref_param}", code="too-costly")
        return [b["key"].split("/", 1)[1] for b in buckets]

    def list_items(self, list_id: str) -> list[str]:
        stored = self.ctx.store.read("List", list_id)
        if stored is None or stored.deleted or stored.content is None:
            return []
        resource = stored.resource()
        if self.policy is not None and not self.policy.allows(resource):
            return []  # as if it did not exist
        out: list[str] = []
        for entry in resource.get("entry") or []:
            ref = (entry.get("item") or {}).get("reference") if isinstance(entry, dict) else None
            if isinstance(ref, str):
                norm, rtype, rid = parse_reference(ref, self.ctx.base_url)
                if rtype and rid:
                    out.append(norm)
        return out

    def refers_to_type(self, source_type: str, ref_param: str, target_type: str) -> bool:
        """Cached (an ES round trip per chain otherwise, a third of a ``patient.identifier`` search):
        ``True`` for good, since it only lets the exact resolution run; ``False`` while the store's
        last ``seq`` is the one observed with no outbox row at or below it before the ES query (so
        the index held every write up to it, and none came since)."""
        alias = self.ctx.indices.alias(source_type)
        key = (self.ctx.store.url, alias, ref_param, target_type)
        cached = _REFERS_TO.get(key)
        if cached is True:
            return True
        seq = self.ctx.store.max_seq()
        if cached == seq:
            return False
        settled = not self.ctx.store.outbox.pending_upto(seq)
        resp = self.ctx.search_es.search(index=alias, size=0, track_total_hits=1, terminate_after=1,
                                         query={"term": {f"sp.{ref_param}.type": target_type}}).body
        found = bool(resp["hits"]["total"]["value"])
        if len(_REFERS_TO) > 10_000:
            _REFERS_TO.clear()
        if found or settled:
            _REFERS_TO[key] = True if found else seq
        return found


#: (store, source alias, reference parameter, target type) -> True, or the store seq at which no reference existed
_REFERS_TO: dict[tuple[str, str, str, str], int | bool] = {}


class SyntaxResolver:
    """A resolver that checks chains, ``_has`` and ``_list`` without running them (designates nothing).

    Lets a caller reject a malformed chained search up front (a transaction's GET entries are checked before
    the commit, run after it) with the same strict compiler the :class:`EsResolver` uses.
    """

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def served_types(self) -> Sequence[str]:
        return self.ctx.indices.searchable_types()

    def _check(self, resource_type: str, params: SearchParams) -> None:
        compiled = compile_search(self.ctx.search_parameters, resource_type, params, base_url=self.ctx.base_url,
                                  strict=True, resolver=self)
        _no_result_params(compiled, params)

    def matching_ids(self, resource_type: str, params: SearchParams) -> list[str]:
        self._check(resource_type, params)
        return []

    def referenced_ids(self, source_type: str, ref_param: str, params: SearchParams,
                       target_type: str) -> list[str]:
        self._check(source_type, params)
        return []

    def list_items(self, list_id: str) -> list[str]:
        return []

    def refers_to_type(self, source_type: str, ref_param: str, target_type: str) -> bool:
        return True  # so every branch of a chain is compiled, hence checked
