"""History at instance, type and system level (http.html#history), paged by log position.

Pages are keyset-paged on the version log ``seq`` (newest first), so a page
link stays valid and stable whatever is written meanwhile: new versions land
before the first page, never inside a page already walked. ``Bundle.total``
is given for instance history only; counting a whole type's history is a full
index scan at national scale.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fhir_server.context import ServerContext
from fhir_server.errors import bad_request, not_found
from fhir_server.storage import StoredVersion, format_instant, now_us

from .paging import decode_cursor, encode_cursor
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
    if raw is None:
        return ctx.settings.history_default_count
    if not raw.isdigit():
        raise bad_request(f"_count must be a non-negative integer, got '{raw}'", "_count")
    return min(int(raw), ctx.settings.max_count)


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


def history(ctx: ServerContext, type_: str | None, id_: str | None, params: dict[str, str]) -> Result:
    if id_ is not None and type_ is not None and ctx.store.read(type_, id_) is None:
        raise not_found(f"{type_}/{id_} is not known")
    count = _count(ctx, params.get("_count"))
    since = _parse_since(params["_since"]) if "_since" in params else None
    before = None
    if "_cursor" in params:
        before = int(decode_cursor(params["_cursor"]).get("before", 0)) or None
    versions = ctx.store.history(type_, id_, before_seq=before, since_us=since, count=count + 1)
    has_next = len(versions) > count
    versions = versions[:count]
    path = "/".join(p for p in (type_, id_) if p)
    base = f"{ctx.base_url}/{path}/_history" if path else f"{ctx.base_url}/_history"
    kept = [(k, v) for k, v in params.items() if k in _KNOWN and k != "_cursor"]
    self_params = kept + ([("_cursor", params["_cursor"])] if "_cursor" in params else [])
    links = [{"relation": "self", "url": base + ("?" + urlencode(self_params) if self_params else "")}]
    if has_next and versions:
        token = encode_cursor({"before": versions[-1].seq})
        links.append({"relation": "next", "url": base + "?" + urlencode([*kept, ("_cursor", token)])})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "history",
        "meta": {"lastUpdated": format_instant(now_us())},
    }
    if id_ is not None:
        bundle["total"] = ctx.store.history_total(type_, id_, since_us=since)
    bundle["link"] = links
    bundle["entry"] = [entry(ctx, v) for v in versions]
    return Result(200, bundle)
