"""History at instance, type and system level (http.html#history), paged by log position.

Pages are keyset-paged on the version log ``seq`` (newest first), so a page
link stays valid and stable whatever is written meanwhile: new versions land
before the first page, never inside a page already walked. ``Bundle.total``
is given for instance history only; counting a whole type's history is a full
index scan at national scale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fhir_common.types import Resource
from fhir_server.context import ServerContext
from fhir_server.errors import bad_request, not_found
from fhir_server.storage import StoredVersion, format_instant, now_us

from .paging import decode_cursor, encode_cursor, invalid_cursor, is_int, page_size, scope_of
from .result import Result

_KNOWN = {"_count", "_since", "_at", "_cursor", "_format", "_pretty"}


def _parse_since(value: str) -> int:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise bad_request(f"_since must be a FHIR instant, got '{value}'", "_since") from exc
    if dt.tzinfo is None:
        raise bad_request("_since must carry a time zone (it is an instant)", "_since")
    return int(dt.timestamp() * 1_000_000)


def _count(ctx: ServerContext, raw: str | None) -> int:
    return page_size(raw, ctx.settings.history_default_count, ctx.settings.max_count)


def entry(ctx: ServerContext, v: StoredVersion) -> dict[str, Any]:
    url = f"{v.type}/{v.id}"
    e: dict[str, Any] = {"fullUrl": f"{ctx.base_url}/{url}"}
    if not v.deleted:
        e["resource"] = v.resource()
    request_url = url if v.method != "POST" else v.type
    e["request"] = {"method": v.method, "url": request_url}
    status = "201 Created" if v.version == 1 and not v.deleted else ("204 No Content" if v.deleted else "200 OK")
    e["response"] = {"status": status, "etag": f'W/"{v.version}"', "lastModified": format_instant(v.last_updated_us)}
    return e


#: Most versions one page may read past when ``keep`` hides them (the page then ends early, with a next link).
SCAN_BUDGET = 2000

#: The caller's access policy on one batch of versions read from the log: a decision per version, in order.
#: Given the whole batch, so look-ups it needs (the versions deletions deleted) are made once per batch;
#: consumed lazily, so versions past a full page are never decided.
Keep = Callable[[Sequence[StoredVersion]], Iterator[bool]]


def _page(ctx: ServerContext, type_: str | None, id_: str | None, before: int | None, since: int | None,
          count: int, keep: Keep | None) -> tuple[list[StoredVersion], int | None]:
    """Up to ``count`` versions older than ``before`` that ``keep`` accepts, and the cursor of the next page.

    Hidden versions are skipped while filling the page, so neither a page nor its links reveal them; at
    most :data:`SCAN_BUDGET` are read per page (a shorter page with a next link past them, never a gap)."""
    if count == 0:
        return [], None
    kept: list[StoredVersion] = []
    scanned, last_seq = 0, before
    while True:
        batch = ctx.store.history(type_, id_, before_seq=last_seq, since_us=since, count=count + 1)
        decisions = keep(batch) if keep is not None else None
        for v in batch:
            last_seq = v.seq
            scanned += 1
            if decisions is None or next(decisions):
                kept.append(v)
                if len(kept) > count:
                    return kept[:count], kept[count - 1].seq
        if len(batch) < count + 1:
            return kept, None
        if keep is None or scanned >= SCAN_BUDGET:
            return kept, last_seq


def _before(state: dict[str, Any]) -> int:
    """The log position of a decoded cursor: a seq the store can hold (a 64-bit key), nothing else."""
    before = state.get("before")
    if state.keys() != {"before"} or not is_int(before, 1, 1 << 63):
        raise invalid_cursor()
    return before


def history(ctx: ServerContext, type_: str | None, id_: str | None, params: dict[str, str],
            keep: Keep | None = None) -> Result:
    """``keep`` is the caller's access policy on each version (None: every version is shown)."""
    if id_ is not None and type_ is not None and ctx.store.read(type_, id_) is None:
        raise not_found(f"{type_}/{id_} is not known")
    count = _count(ctx, params.get("_count"))
    since = _parse_since(params["_since"]) if "_since" in params else None
    path = "/".join(p for p in (type_, id_) if p)
    scope = scope_of(f"history:{path}", ())  # a position in the log: bound to the level, not to _count or _since
    before = _before(decode_cursor(ctx.cursor_key, scope, params["_cursor"])) if "_cursor" in params else None
    versions, next_before = _page(ctx, type_, id_, before, since, count, keep)
    base = f"{ctx.base_url}/{path}/_history" if path else f"{ctx.base_url}/_history"
    kept = [(k, v) for k, v in params.items() if k in _KNOWN and k != "_cursor"]
    self_params = kept + ([("_cursor", params["_cursor"])] if "_cursor" in params else [])
    links = [{"relation": "self", "url": base + ("?" + urlencode(self_params) if self_params else "")}]
    if next_before is not None:
        token = encode_cursor(ctx.cursor_key, scope, {"before": next_before})
        links.append({"relation": "next", "url": base + "?" + urlencode([*kept, ("_cursor", token)])})
    bundle: Resource = {
        "resourceType": "Bundle",
        "type": "history",
        "meta": {"lastUpdated": format_instant(now_us())},
    }
    if id_ is not None:
        bundle["total"] = ctx.store.history_total(type_, id_, since_us=since)
    bundle["link"] = links
    bundle["entry"] = [entry(ctx, v) for v in versions]
    return Result(200, bundle)
