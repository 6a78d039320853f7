"""Type-level search (search.html): compile → wait for pending writes → ES → store → Bundle.

Elasticsearch returns ids only (``_source: false``); resources come from the
store of record by primary key, so a search never serves a version the store
does not hold and the index stays small.

Paging: the first page is a plain sorted search asking one hit more than
``_count``; when there is a next page a point-in-time is opened and the
``next`` link carries it with the ``search_after`` values of the last hit.
Later pages read that snapshot, so concurrent writes never duplicate or skip
rows, and depth is unbounded (no from/size, no 10,000 window). When the
point-in-time has expired (idle > keep-alive) the cursor still works without
the snapshot: same order, same position, current data.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from elasticsearch import NotFoundError

from fhir_server.context import ServerContext
from fhir_server.errors import bad_request
from fhir_server.storage import format_instant, now_us
from search.query import CompiledSearch, SearchError, compile_search

from .paging import decode_cursor, encode_cursor
from .result import Result

PIT_KEEP_ALIVE = "10m"
TOTAL_EXACT_UP_TO = 10_000
# Parameters of the HTTP layer, never search parameters
_TRANSPORT_PARAMS = {"_format", "_pretty", "_cursor"}
_MANDATORY = ("resourceType", "id", "meta")


def _compile(ctx: ServerContext, type_: str, params: list[tuple[str, str]], strict: bool) -> CompiledSearch:
    try:
        return compile_search(ctx.search_parameters, type_, params, base_url=ctx.base_url, strict=strict)
    except SearchError as exc:
        raise bad_request(exc.message, *([exc.expression] if exc.expression else [])) from exc


def _count(ctx: ServerContext, compiled: CompiledSearch) -> int:
    if compiled.count is None:
        return ctx.settings.default_count
    return max(0, min(compiled.count, ctx.settings.max_count))


def _subset(resource: dict[str, Any], compiled: CompiledSearch) -> dict[str, Any]:
    """Apply ``_elements`` / ``_summary=data|text`` and tag the result SUBSETTED."""
    if compiled.elements:
        keep = set(compiled.elements) | set(_MANDATORY)
        out = {k: v for k, v in resource.items() if k in keep}
    elif compiled.summary == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    elif compiled.summary == "text":
        out = {k: v for k, v in resource.items() if k in ("text", *_MANDATORY)}
    else:
        return resource
    meta = dict(out.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    tags.append({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"})
    meta["tag"] = tags
    out["meta"] = meta
    return out


def _run(ctx: ServerContext, alias: str, body: dict[str, Any], cursor: dict[str, Any]) -> dict[str, Any]:
    if cursor.get("pit"):
        try:
            return ctx.es.search(**body, pit={"id": cursor["pit"], "keep_alive": PIT_KEEP_ALIVE}).body
        except NotFoundError:
            cursor.pop("pit", None)  # snapshot expired: continue on current data, same order
    return ctx.es.search(index=alias, **body).body


def search(ctx: ServerContext, type_: str, raw_params: list[tuple[str, str]], *, strict: bool = False) -> Result:
    cursor = decode_cursor(v) if (v := next((v for k, v in raw_params if k == "_cursor"), None)) else {}
    params = [(k, v) for k, v in raw_params if k not in _TRANSPORT_PARAMS]
    compiled = _compile(ctx, type_, params, strict)
    count = _count(ctx, compiled)
    alias = ctx.indices.alias(type_)
    ctx.indexer.wait_until_indexed()

    only_count = compiled.summary == "count" or count == 0
    body: dict[str, Any] = {"query": compiled.query, "sort": compiled.sort, "_source": False,
                            "size": 0 if only_count else count + 1}
    known_total = cursor.get("total")
    if only_count or compiled.total == "accurate":
        body["track_total_hits"] = True
    elif compiled.total == "none" or known_total is not None:
        body["track_total_hits"] = False
    else:
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

    has_next = len(hits) > count and not only_count
    hits = hits[:count] if not only_count else []
    found = ctx.store.read_many(type_, [h["_id"] for h in hits])
    entries: list[dict[str, Any]] = []
    subsetting = bool(compiled.elements) or compiled.summary in ("data", "text")
    for h in hits:
        stored = found.get(h["_id"])
        if stored is None or stored.deleted or stored.content is None:
            continue  # deleted after the search started
        resource: Any = (_subset(stored.resource(), compiled) if subsetting
                         else orjson.Fragment(stored.content))
        entries.append({"fullUrl": f"{ctx.base_url}/{type_}/{stored.id}", "resource": resource,
                        "search": {"mode": "match"}})

    self_query = urlencode(compiled.self_params)
    base = f"{ctx.base_url}/{type_}"
    links = [{"relation": "self", "url": f"{base}?{self_query}" if self_query else base}]
    if has_next:
        pit = cursor.get("pit") or ctx.es.open_point_in_time(index=alias, keep_alive=PIT_KEEP_ALIVE).body["id"]
        state = {"sa": hits[-1]["sort"], "pit": pit, "total": total}
        sep = "&" if self_query else ""
        links.append({"relation": "next", "url": f"{base}?{self_query}{sep}_cursor={encode_cursor(state)}"})

    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset",
                              "meta": {"lastUpdated": format_instant(now_us())}}
    if total is not None and compiled.total != "none":
        bundle["total"] = total
    bundle["link"] = links
    if compiled.summary != "count":
        bundle["entry"] = entries
    return Result(200, bundle)
