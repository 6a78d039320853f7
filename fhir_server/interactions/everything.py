"""``Patient/[id]/$everything`` (patient-operation-everything.html): the patient's compartment, paged.

Built on the type search (:func:`.search.search`), one *segment* at a time: the Patient itself, then each
compartment type (``policy.PATIENT_COMPARTMENT``, AuditEvent excepted: the trail is not the record) with the
compartment parameter, the ``start``/``end`` range on its clinical date parameter (:data:`DATE_PARAMS`; a
second segment ``date:missing=true`` keeps the resources without a date, as the operation says), ``_since``
as ``_lastUpdated=ge``. Each segment is searched with the caller's mandatory parameters and
:class:`~fhir_server.security.policy.AccessPolicy`, exactly as a search of that type: a masked document, an
opposing patient's compartment never appear. The Patient hidden or unknown: 404, one answer.

Paging: a page holds up to ``_count`` matches taken from consecutive segments; its ``next`` link carries an
HMAC cursor (:mod:`.paging`, scoped to this patient and these parameters) holding the segment index and that
segment's own search cursor, so every segment is traversed by its keyset paging. No ``previous`` link and no
``Bundle.total``.

Referenced resources the server holds (a document's Binary via ``attachment.url``, any literal reference to a
served type) are added per page (``search.mode = include``, deduplicated within the page) when the caller may
read them (a Binary follows its ``securityContext``). A type the caller may not search is skipped with a
warning (``search.mode = outcome``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

from fhir_common.types import Resource, SearchParams
from fhir_server.context import ServerContext
from fhir_server.errors import Issue, bad_request, not_found, operation_outcome
from fhir_server.registry import served_types
from fhir_server.security.binary_access import binary_visible
from fhir_server.security.policy import PATIENT_COMPARTMENT, AccessPolicy, escape, mandatory_params, visible
from fhir_server.security.tokens import Principal
from fhir_server.storage import format_instant, now_us
from search.params.reference import parse_reference

from .paging import decode_cursor, encode_cursor, invalid_cursor, is_int, page_size, scope_of
from .result import Result
from .search import search

#: the clinical date parameter ``start``/``end`` apply to, per type (others have none: always included)
DATE_PARAMS = {"DocumentReference": "date", "Immunization": "date"}
#: the parameters of the operation (and of the HTTP layer)
PARAMETERS = {"start", "end", "_since", "_type", "_count", "_cursor", "_format", "_pretty"}
#: most referenced resources read for one page
MAX_REFERENCED = 1000


#: a FHIR date, dateTime or instant (the search compiler checks the values; this keeps ``,`` lists, prefixes
#: and escapes out of a parameter that is one date)
_DATE = re.compile(r"\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?)?)?")


@dataclass(frozen=True)
class Segment:
    type_: str
    params: SearchParams


def _one(params: SearchParams, name: str) -> str | None:
    values = [v for k, v in params if k == name]
    if len(values) > 1:
        raise bad_request(f"{name} may be given once", name)
    return values[0] if values else None


def _date(params: SearchParams, name: str) -> str | None:
    value = _one(params, name)
    if value is not None and not (value.isascii() and _DATE.fullmatch(value)):
        raise bad_request(f"{name} must be a date, dateTime or instant (e.g. 2024-01-31), got '{value}'", name)
    return value


def _types(ctx: ServerContext, raw: str | None) -> list[str]:
    """The compartment types served, in a fixed order, restricted to ``_type`` (400 for a type outside)."""
    served = {rt.name for rt in served_types(ctx.settings) if rt.searchable}
    types = [t for t in PATIENT_COMPARTMENT if t in served]
    if raw is None:
        return types
    wanted = [t.strip() for t in raw.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in types]
    if unknown or not wanted:
        raise bad_request(f"_type must list types of the patient compartment ({', '.join(types)}), "
                          f"got '{raw}'", "_type")
    return [t for t in types if t in wanted]


def _segments(patient_id: str, types: list[str], start: str | None, end: str | None,
              since: str | None) -> list[Segment]:
    out: list[Segment] = []
    for type_ in types:
        param = PATIENT_COMPARTMENT[type_][0]
        base: SearchParams = [(param, escape(patient_id) if param == "_id" else f"Patient/{escape(patient_id)}")]
        if since is not None:
            base.append(("_lastUpdated", f"ge{since}"))
        date = DATE_PARAMS.get(type_)
        if date is None or (start is None and end is None):
            out.append(Segment(type_, base))
            continue
        ranged = base + ([(date, f"ge{start}")] if start else []) + ([(date, f"le{end}")] if end else [])
        out += [Segment(type_, ranged), Segment(type_, [*base, (f"{date}:missing", "true")])]
    return out


def _searchable(principal: Principal | None, type_: str) -> SearchParams | None:
    """The caller's mandatory parameters for ``type_`` (as ``authz.search_params``); None: no scope to search it."""
    return [] if principal is None else mandatory_params(principal, type_)


def _readable(ctx: ServerContext, principal: Principal | None, resource: Resource) -> bool:
    """Whether the caller may read ``resource`` (as ``authz.check_stored``: a Binary follows its document)."""
    if principal is None:
        return True
    type_ = str(resource.get("resourceType"))
    if principal.scopes.contexts_for(type_, "read") == {"system"}:
        return True
    if type_ == "Binary":
        return binary_visible(ctx, principal, resource, "read")
    return visible(principal, resource, "read")


def _inner_cursor(bundle: Resource) -> str | None:
    """The ``_cursor`` of a search Bundle's ``next`` link, if any."""
    for link in bundle.get("link") or []:
        if link.get("relation") == "next":
            return next((v for k, v in parse_qsl(urlsplit(link["url"]).query) if k == "_cursor"), None)
    return None


def _references(value: Any) -> Iterator[str]:
    """Literal references and attachment URLs anywhere in ``value``."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("reference", "url") and isinstance(item, str):
                yield item
            elif isinstance(item, (dict, list)):
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def _referenced(ctx: ServerContext, principal: Principal | None, resources: list[Resource],
                seen: set[tuple[str, str]]) -> tuple[list[Resource], list[Issue]]:
    """The resources of served types ``resources`` reference that the caller may read, not in ``seen``."""
    served = {rt.name for rt in served_types(ctx.settings) if rt.store == "resources"}
    wanted: dict[str, list[str]] = {}
    for resource in resources:
        for ref in _references(resource):
            norm, rtype, rid = parse_reference(ref, ctx.base_url)
            if not rtype or not rid or "/" in rid or "://" in norm or rtype not in served:
                continue
            if (rtype, rid) not in seen:
                seen.add((rtype, rid))
                wanted.setdefault(rtype, []).append(rid)
    out: list[Resource] = []
    issues: list[Issue] = []
    for rtype, ids in wanted.items():
        found = ctx.store.read_many(rtype, ids)
        for rid in ids:
            stored = found.get(rid)
            if stored is None or stored.deleted or stored.content is None:
                continue
            resource = stored.resource()
            if not _readable(ctx, principal, resource):
                continue  # not the caller's to see: as if absent
            if len(out) >= MAX_REFERENCED:
                issues.append(Issue("warning", "too-costly",
                                    f"more than {MAX_REFERENCED} referenced resources on this page; "
                                    "the first ones are included"))
                return out, issues
            out.append(resource)
    return out, issues


def _cursor_state(state: dict[str, Any], segments: int) -> tuple[int, str | None, int]:
    seg, inner, count = state.get("s"), state.get("c"), state.get("n")
    if (not state.keys() <= {"s", "c", "n"} or not is_int(seg, 0, segments) or not is_int(count, 1, 1 << 31)
            or not (inner is None or (isinstance(inner, str) and inner.isascii()))):
        raise invalid_cursor()
    return seg, inner, count


def everything(ctx: ServerContext, patient_id: str, params: SearchParams, *,
               principal: Principal | None = None, policy: AccessPolicy | None = None, client: str = "") -> Result:
    """One page of the patient's record; ``params`` the operation's (query string or Parameters)."""
    unknown = sorted({k for k, _ in params} - PARAMETERS)
    if unknown:
        raise bad_request(f"$everything takes {', '.join(sorted(PARAMETERS - {'_cursor', '_format', '_pretty'}))}; "
                          f"not {', '.join(unknown)}", *unknown)
    start, end, since = _date(params, "start"), _date(params, "end"), _date(params, "_since")
    types = _types(ctx, _one(params, "_type"))
    count = page_size(_one(params, "_count"), ctx.settings.default_count, ctx.settings.max_count)
    token = _one(params, "_cursor")

    # the Patient first, as its search: hidden (masked compartment, Consent) and unknown answer alike
    patient_params = _searchable(principal, "Patient")
    found = None if patient_params is None else search(
        ctx, "Patient", [("_id", escape(patient_id)), *patient_params], policy=policy).body
    if not (found or {}).get("entry"):
        raise not_found(f"Patient/{patient_id} is not known")

    segments = _segments(patient_id, types, start, end, since)
    link_params = [(k, v) for k, v in params if k not in ("_cursor", "_count")] + [("_count", str(count))]
    scope = scope_of(f"everything:Patient/{patient_id}", [*link_params, ("_principal", _who(principal))])
    seg, inner, inner_count = (_cursor_state(decode_cursor(ctx.cursor_key, scope, token), len(segments))
                               if token else (0, None, count))

    entries: list[dict[str, Any]] = []
    matched: list[Resource] = []
    issues: list[Issue] = []
    skipped: set[str] = set()
    next_state: dict[str, Any] | None = None
    while seg < len(segments) and count > 0:
        segment = segments[seg]
        mandatory = _searchable(principal, segment.type_)
        if mandatory is None:
            skipped.add(segment.type_)
            seg, inner = seg + 1, None
            continue
        room = inner_count if inner is not None else count - len(matched)
        page_params = segment.params + mandatory + [("_count", str(room))] + ([("_cursor", inner)] if inner else [])
        bundle = search(ctx, segment.type_, page_params, policy=policy, client=client).body or {}
        for entry in bundle.get("entry") or []:
            if entry.get("search", {}).get("mode") != "match":
                continue
            resource = entry["resource"]
            if isinstance(resource, orjson.Fragment):  # the stored bytes, as the search copies them
                resource = orjson.loads(orjson.dumps(resource))
            matched.append(resource)
            entries.append({"fullUrl": entry["fullUrl"], "resource": resource, "search": {"mode": "match"}})
        following = _inner_cursor(bundle)
        if following is not None:
            next_state = {"s": seg, "c": following, "n": room}
            break
        seg, inner = seg + 1, None
        if len(matched) >= count:
            if seg < len(segments):
                next_state = {"s": seg, "c": None, "n": count}
            break
    if skipped:
        issues.append(Issue("warning", "forbidden", "$everything leaves out the types the token does not grant "
                                                    f"search on: {', '.join(sorted(skipped))}"))

    # the Patient is the first page's match: never included again because the page's resources name it
    seen = {(r["resourceType"], r["id"]) for r in matched} | {("Patient", patient_id)}
    included, more_issues = _referenced(ctx, principal, matched, seen)
    entries += [{"fullUrl": f"{ctx.base_url}/{r['resourceType']}/{r['id']}", "resource": r,
                 "search": {"mode": "include"}} for r in included]
    issues += more_issues
    if issues:
        entries.append({"resource": operation_outcome(issues), "search": {"mode": "outcome"}})

    url = f"{ctx.base_url}/Patient/{patient_id}/$everything"
    query = urlencode(link_params)
    links = [{"relation": "self", "url": f"{url}?{query}"}]
    if next_state is not None:
        links.append({"relation": "next",
                      "url": f"{url}?{query}&_cursor={encode_cursor(ctx.cursor_key, scope, next_state)}"})
    result: Resource = {"resourceType": "Bundle", "type": "searchset",
                        "meta": {"lastUpdated": format_instant(now_us())}, "link": links}
    if entries:
        result["entry"] = entries
    return Result(200, result)


def _who(principal: Principal | None) -> str:
    """Who the cursor is issued to: another caller's cursor is refused (the segments' own ones are too)."""
    return "" if principal is None else principal.subject


def parameters_of(body: Resource) -> SearchParams:
    """The operation's parameters from a POSTed ``Parameters`` resource (each value[x] as its string)."""
    if body.get("resourceType") != "Parameters":
        raise bad_request("POST $everything takes a Parameters resource", "resourceType")
    out: SearchParams = []
    parameters = body.get("parameter") or []
    if not isinstance(parameters, list):
        raise bad_request("Parameters.parameter must be a list", "Parameters.parameter")
    for i, p in enumerate(parameters):
        name = p.get("name") if isinstance(p, dict) else None
        values = [v for k, v in p.items() if k.startswith("value")] if isinstance(p, dict) else []
        if not isinstance(name, str) or len(values) != 1 or not isinstance(values[0], (str, int)) \
                or isinstance(values[0], bool):
            raise bad_request("each parameter needs a name and one primitive value[x]", f"Parameters.parameter[{i}]")
        out.append((name, str(values[0])))
    return out
