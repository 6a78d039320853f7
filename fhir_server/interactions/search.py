"""Type-level search (search.html): compile → wait for pending writes → ES → store → Bundle.

Elasticsearch returns ids only (``_source: false``); resources come from the
store of record by primary key, so a search never serves a version the store
does not hold and the index stays small.

Paging is keyset paging: each page is a sorted search asking one hit more than ``_count``,
``search_after`` the sort values of the previous page's last hit; the sort always ends with the
unique ``id``, so depth is unbounded (no from/size, no 10,000 window), a link never expires and
every resource that matches all along the traversal and keeps its sort values is on exactly one
page, whatever is written meanwhile. Sorted on the id alone (the default), that is every resource
that matches all along: no snapshot is needed, and none is taken. Sorted on anything else, a
resource whose sort values change could move across the cursor (skipped or seen twice), so the
``next`` link of such a search carries a point-in-time (:mod:`fhir_server.index.pits`) and later
pages read that snapshot, as long as the process and the client are within their caps and the
client comes back within the keep-alive; otherwise they read current data, same order, same
position. The PIT is closed when the last page is served. A ``prev`` link reads the same order
backwards (reversed sort, ``search_after`` the page's first hit).

Chains, ``_has`` and ``_list`` are resolved by :mod:`.search_exec`;
``_include``/``_revinclude`` by :mod:`.includes`; ``_summary``/``_elements``
by :mod:`search.summary`.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

import orjson
from elasticsearch import NotFoundError

from fhir_common.types import EsQuery, EsResponse, Resource, SearchParams
from fhir_server.context import ServerContext
from fhir_server.errors import FHIRError, operation_outcome
from fhir_server.limits import check_search_params
from fhir_server.registry import store_of
from fhir_server.security.policy import AccessPolicy
from fhir_server.storage import format_instant, now_us
from search.query import CompiledSearch, SearchError, compile_search, reverse_sort
from search.summary import subset

from . import includes
from .paging import decode_cursor, encode_cursor, invalid_cursor, is_int, scope_of
from .result import Result
from .search_exec import EsResolver

TOTAL_EXACT_UP_TO = 10_000
# Parameters of the HTTP layer, never search parameters
_TRANSPORT_PARAMS = {"_format", "_pretty", "_cursor"}


def _compile(ctx: ServerContext, type_: str, params: SearchParams, strict: bool,
             policy: AccessPolicy | None) -> CompiledSearch:
    check_search_params(params, ctx.settings)
    try:
        return compile_search(ctx.search_parameters, type_, params, base_url=ctx.base_url, strict=strict,
                              resolver=EsResolver(ctx, policy))
    except SearchError as exc:
        raise FHIRError(400, exc.code, exc.message, (exc.expression,) if exc.expression else ()) from exc


def _count(ctx: ServerContext, compiled: CompiledSearch) -> int:
    if compiled.count is None:
        return ctx.settings.default_count
    return max(0, min(compiled.count, ctx.settings.max_count))


def _run(ctx: ServerContext, alias: str, body: EsQuery, cursor: dict[str, Any]) -> EsResponse:
    """The page, through the cursor's snapshot when it is a live one of this process on ``alias`` (else
    ``pit`` leaves the cursor: current data, same order, same position)."""
    pit = cursor.pop("pit", None)
    if isinstance(pit, str):
        with ctx.pits.reading(pit, alias) as ours:
            if ours:
                try:
                    snapshot = {"id": pit, "keep_alive": ctx.pits.keep_alive}
                    resp: EsResponse = ctx.search_es.search(**body, pit=snapshot).body
                    cursor["pit"] = pit
                    return resp
                except NotFoundError:
                    ctx.pits.forget(pit)  # expired in Elasticsearch
    current: EsResponse = ctx.search_es.search(index=alias, **body).body
    return current


def _moves(sort: list[Any]) -> bool:
    """Whether a resource can change places in ``sort`` (a snapshot then keeps pages exact): not when it
    is on the id alone, which never changes."""
    return any("id" not in clause for clause in sort)


def _snapshot(ctx: ServerContext, alias: str, pit: str | None, client: str, *, more: bool, backwards: bool,
              moves: bool) -> str | None:
    """The point-in-time the links carry: the page's own, closed once the last page is served; or, when
    there are more pages in a sort where resources can move, a new one within the caps."""
    if pit is not None and not more and not backwards:
        ctx.pits.close(pit)
        return None
    if pit is None and more and moves:
        return ctx.pits.open(alias, client)
    return pit


def _sort_value(value: Any) -> bool:
    """A ``search_after`` value Elasticsearch returned: a string, a finite number within 64 bits, a bool, null."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -(1 << 63) <= value < 1 << 64  # unsigned_long sorts reach 2^64 - 1
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= 32_766  # Lucene's longest term (bytes >= characters)


def _cursor_state(state: dict[str, Any], width: int) -> dict[str, Any]:
    """A decoded search cursor, checked value by value (400 ``_cursor`` otherwise): even a validly signed one
    may come from another version of the server, and none may reach Elasticsearch as an odd value."""
    sa, pit, total, direction = state.get("sa"), state.get("pit"), state.get("total"), state.get("dir")
    if (not state.keys() <= {"sa", "pit", "total", "dir"}
            or not (isinstance(sa, list) and len(sa) == width and all(map(_sort_value, sa)))
            or not (pit is None or (isinstance(pit, str) and 0 < len(pit) <= 6000 and pit.isascii()
                                    and pit.isprintable()))
            or not (total is None or is_int(total, 0, 1 << 53))
            or direction not in ("next", "prev")):
        raise invalid_cursor()
    return state


def _entry(ctx: ServerContext, resource: Any, type_: str, id_: str, mode: str) -> dict[str, Any]:
    return {"fullUrl": f"{ctx.base_url}/{type_}/{id_}", "resource": resource, "search": {"mode": mode}}


def search(ctx: ServerContext, type_: str, raw_params: SearchParams, *, strict: bool = False,
           policy: AccessPolicy | None = None, client: str = "") -> Result:
    """``raw_params`` already carry the policy's parameters for ``type_`` (see ``authz.search_params``);
    ``policy`` filters what the executor searches or reads besides: chains, ``_has``, ``_list``, includes.
    ``client`` is who a point-in-time opened for the paging is charged to (its cap)."""
    own = store_of(type_)
    if own is not None:  # a type held outside the resource store (AuditEvent: the audit trail's SQL table)
        return own.search(ctx, raw_params, strict=strict, policy=policy)
    token = next((v for k, v in raw_params if k == "_cursor"), None)
    params = [(k, v) for k, v in raw_params if k not in _TRANSPORT_PARAMS]
    alias = ctx.indices.alias(type_)
    ctx.indexer.wait_until_indexed()  # before compiling: chains and _has read the index too
    compiled = _compile(ctx, type_, params, strict, policy)
    if policy is not None:  # Consent: excluded by a clause, not parameters (links must not name the patients)
        compiled.query = policy.restrict(ctx.search_parameters, ctx.base_url, type_, compiled.query)
    count = _count(ctx, compiled)
    # the links' parameters (the policy's included): a cursor, and the total it carries, is this query's only
    self_params = [(k, str(count)) if k == "_count" else (k, v) for k, v in compiled.self_params]
    scope = scope_of(f"search:{type_}", self_params)
    cursor = _cursor_state(decode_cursor(ctx.cursor_key, scope, token), len(compiled.sort)) if token else {}
    backwards = cursor.get("dir") == "prev"

    only_count = compiled.summary == "count" or count == 0
    sort = reverse_sort(compiled.sort) if backwards else compiled.sort
    body: EsQuery = {"query": compiled.query, "sort": sort, "_source": False,
                     "size": 0 if only_count else count + 1}
    known_total = cursor.get("total")
    if only_count or compiled.total == "accurate":
        body["track_total_hits"] = True
    elif compiled.total == "none" or known_total is not None:
        body["track_total_hits"] = False
    else:  # default and estimate: exact up to 10,000, omitted beyond
        body["track_total_hits"] = TOTAL_EXACT_UP_TO
    if cursor.get("sa") is not None:
        body["search_after"] = cursor["sa"]

    resp = _run(ctx, alias, body, cursor)
    hits = resp["hits"]["hits"]
    total = known_total
    if total is None and isinstance(resp["hits"].get("total"), dict):
        t = resp["hits"]["total"]
        if t.get("relation") == "eq":
            total = t["value"]

    more = len(hits) > count and not only_count
    hits = hits[:count] if not only_count else []
    if backwards:
        hits.reverse()
    has_next = bool(hits) and (backwards or more)
    has_prev = bool(hits) and (more if backwards else cursor.get("sa") is not None)

    found = ctx.store.read_many(type_, [h["_id"] for h in hits])
    subsetting = bool(compiled.elements) or compiled.summary in ("true", "data", "text")
    entries: list[dict[str, Any]] = []
    matched: list[Resource] = []
    for h in hits:
        stored = found.get(h["_id"])
        if stored is None or stored.deleted or stored.content is None:
            continue  # deleted after the search started
        resource: Any = orjson.Fragment(stored.content)  # JSON copies the stored bytes, the XML writer parses them
        if subsetting or compiled.includes or compiled.revincludes:
            full = stored.resource()
            matched.append(full)
            # parsed anyway: the entry carries the parsed form, so an XML answer does not parse the bytes again
            # (JSON then serialises it, ~1 us an entry, where it copied the bytes)
            shown = subset(full, summary=compiled.summary, elements=compiled.elements) if subsetting else None
            resource = shown or full
        entries.append(_entry(ctx, resource, type_, stored.id, "match"))

    included = includes.collect(ctx, type_, compiled, matched, policy)
    for res in included.resources:
        shown = subset(res, summary=compiled.summary, elements=None) if compiled.summary in ("true", "data", "text") \
            else None
        entries.append(_entry(ctx, shown or res, res["resourceType"], res["id"], "include"))
    if included.issues:
        entries.append({"resource": operation_outcome(included.issues), "search": {"mode": "outcome"}})

    # the self link shows the page size actually used (a _count above the maximum is capped)
    # the format asked for follows the links (a client that sent _format and no Accept keeps getting it)
    self_query = urlencode(self_params + [(k, v) for k, v in raw_params if k in ("_format", "_pretty")])
    base = f"{ctx.base_url}/{type_}"
    links = [{"relation": "self", "url": f"{base}?{self_query}" if self_query else base}]
    pit = _snapshot(ctx, alias, cursor.get("pit"), client, more=bool(hits) and more, backwards=backwards,
                    moves=_moves(compiled.sort))
    if has_next or has_prev:
        sep = "&" if self_query else ""
        width = len(compiled.sort)
        for relation, at, direction, wanted in (("next", -1, "next", has_next), ("previous", 0, "prev", has_prev)):
            if wanted:  # both imply a non-empty page
                state = {"sa": hits[at]["sort"][:width], "total": total, "dir": direction}
                if pit is not None:
                    state["pit"] = pit
                token = encode_cursor(ctx.cursor_key, scope, state)
                links.append({"relation": relation, "url": f"{base}?{self_query}{sep}_cursor={token}"})

    bundle: Resource = {"resourceType": "Bundle", "type": "searchset",
                        "meta": {"lastUpdated": format_instant(now_us())}}
    if total is not None and compiled.total != "none":
        bundle["total"] = total
    bundle["link"] = links
    if compiled.summary != "count" and entries:  # FHIR JSON has no empty arrays
        bundle["entry"] = entries
    return Result(200, bundle)
