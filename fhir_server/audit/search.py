"""``AuditEvent`` read and search, served by SQL from the audit table (never Elasticsearch).

Each read or search first waits until the audit journal is applied up to where it was when the
request came (:meth:`.writer.AuditWriter.wait_applied`): a client that got an answer finds that
answer's trace at once.

Who reads what is :func:`fhir_server.security.policy.audit_view`, applied here on every path (read, vread,
search, counts, pages; Bundle entries come through :func:`read` and :func:`search` too): its restriction is
ANDed in SQL (an agent or patient reference, ``NOT EXISTS`` for the Consent exclusions and the patient's hidden
documents), so nothing it hides is counted or paged over; each kept record is rendered through its
redaction, and passes ``policy.allows`` too (defence in depth). A hidden record reads as an unknown one.

Supported: ``_id``, ``date`` (and ``_lastUpdated``, the same instant) with every prefix, ``patient``,
``entity``, ``agent`` (references: ``Type/id``, a bare id for ``patient``, or an absolute URL on this
server), ``action``, ``outcome``, ``subtype`` (tokens, ``code`` or ``system|code``); comma = OR,
repetition = AND; ``_count``, ``_sort=date|-date`` (default ``-date``), ``_total``, ``_summary=count``,
paging by ``next`` links (keyset on time and id). Anything else is ignored (listed out of the self
link) or, with ``Prefer: handling=strict``, a 400.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

from fhir_common.types import Resource, SearchParams
from fhir_server import registry
from fhir_server.errors import FHIRError, bad_request, not_found
from fhir_server.interactions.paging import decode_cursor, encode_cursor, invalid_cursor, is_int, page_size, scope_of
from fhir_server.result import Result
from fhir_server.storage import StoredVersion, format_instant, now_us
from fhir_server.storage.audit import AGENT, ENTITY, AuditLog, AuditQuery
from search.errors import SearchError
from search.params.date import parse_search_value, split_prefix

from .events import INTERACTION_SYSTEM, stored_event

if TYPE_CHECKING:
    from fhir_server.context import ServerContext
    from fhir_server.security.policy import AccessPolicy, AuditView
    from fhir_server.security.tokens import Principal

SP = "http://hl7.org/fhir/SearchParameter/"
ACTION_SYSTEM = "http://hl7.org/fhir/audit-event-action"
OUTCOME_SYSTEM = "http://hl7.org/fhir/audit-event-outcome"
# name → (type, definition, documentation); the CapabilityStatement lists exactly these
PARAMS: dict[str, tuple[str, str, str]] = {
    "_id": ("token", SP + "Resource-id", ""),
    "_lastUpdated": ("date", SP + "Resource-lastUpdated", "= recorded; prefixes eq ne gt lt ge le sa eb ap"),
    "date": ("date", SP + "AuditEvent-date", "recorded; prefixes eq ne gt lt ge le sa eb ap"),
    "patient": ("reference", SP + "AuditEvent-patient",
                "entity.what naming a Patient (a patient agent is never a reference: what a patient did to "
                "other records is not in their compartment); :Patient"),
    "entity": ("reference", SP + "AuditEvent-entity", "entity.what, Type/id"),
    "agent": ("reference", SP + "AuditEvent-agent", "agent.who, Type/id (fhirUser of the token)"),
    "action": ("token", SP + "AuditEvent-action", "C R U D E"),
    "outcome": ("token", SP + "AuditEvent-outcome", "0 4 8"),
    "subtype": ("token", SP + "AuditEvent-subtype", "restful-interaction code"),
}
_TOKEN_SYSTEMS = {"action": ACTION_SYSTEM, "outcome": OUTCOME_SYSTEM, "subtype": INTERACTION_SYSTEM, "_id": None}
_CONTROL = {"_count", "_sort", "_total", "_summary"}
_TRANSPORT = {"_format", "_pretty", "_cursor"}
_NEVER = "!"  # a value no column holds (ids, codes and references never are "!"): matches nothing
_NEVER_US = 1 << 62  # an instant no record has


def _relative(ctx: ServerContext, value: str) -> str:
    base = ctx.base_url + "/"
    return value[len(base):] if value.startswith(base) else value


def _refs(ctx: ServerContext, name: str, value: str) -> list[str]:
    out = []
    for v in (_relative(ctx, v.strip()) for v in value.split(",")):
        if "\x00" in v:  # no stored reference holds one, and PostgreSQL text cannot carry it
            out.append(_NEVER)
        elif name == "patient":
            v = v if "/" in v else f"Patient/{v}"
            out.append(v if v.startswith("Patient/") and v.count("/") == 1 else _NEVER)
        elif v.count("/") == 1 and all(v.split("/")):
            out.append(v)
        else:
            raise bad_request(f"{name} takes a reference Type/id, got '{v}'", name)
    return out


def _tokens(name: str, value: str) -> list[str]:
    system = _TOKEN_SYSTEMS[name]
    out = []
    for v in value.split(","):
        sys_, bar, code = v.partition("|")
        if "\x00" in v:
            out.append(_NEVER)
        elif not bar:
            out.append(v)
        elif sys_ in ("", system) and code:
            out.append(code)
        else:
            out.append(_NEVER)
    return out


def _us(dt: datetime | None) -> int | None:
    return None if dt is None else int((dt - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000)


def _dates(name: str, value: str) -> list[tuple[int | None, int | None]]:
    """Each value's prefix as ranges of the recorded instant (a point), ORed."""
    out: list[tuple[int | None, int | None]] = []
    for raw in value.split(","):
        prefix, text = split_prefix(raw)
        try:
            rng = parse_search_value(text, name)
        except SearchError as exc:
            raise bad_request(exc.message, name) from exc
        lo, hi = _us(rng.lo), _us(rng.hi)
        if prefix == "eq":
            out.append((lo, hi))
        elif prefix == "ne":
            out += [(None, lo)] if lo is not None else []
            out += [(hi, None)] if hi is not None else []
        elif prefix in ("gt", "sa"):
            out.append((hi, None) if hi is not None else (_NEVER_US, None))
        elif prefix in ("lt", "eb"):
            out.append((None, lo) if lo is not None else (None, -_NEVER_US))
        elif prefix == "ge":
            out.append((lo, None))
        elif prefix == "le":
            out.append((None, hi))
        else:  # ap: widened by 10 % of the distance to now (search.html#prefix)
            mid = lo if lo is not None else hi if hi is not None else now_us()
            gap = abs(now_us() - mid) // 10
            out.append((None if lo is None else lo - gap, None if hi is None else hi + gap))
    return out


def _parse(ctx: ServerContext, params: SearchParams, strict: bool) -> tuple[AuditQuery, dict[str, str], SearchParams]:
    q = AuditQuery()
    control: dict[str, str] = {}
    used: SearchParams = []
    for name, value in params:
        base, _, modifier = name.partition(":")
        if base in _TRANSPORT:
            continue
        if base in _CONTROL:
            control[base] = value
            used.append((name, value))
            continue
        if base not in PARAMS:
            if "." in base and base.split(".")[0] in PARAMS:
                raise bad_request(f"Chained parameters are not supported on AuditEvent: '{name}'", name)
            if strict:
                raise bad_request(f"Unknown or unsupported search parameter '{name}' for AuditEvent", name)
            continue
        if modifier and not (base == "patient" and modifier == "Patient"):
            raise bad_request(f"Modifier ':{modifier}' is not supported on AuditEvent.{base}", name)
        if value == "":
            continue
        used.append((name, value))
        if base in ("date", "_lastUpdated"):
            q.dates.append(_dates(name, value))
        elif base in ("patient", "entity"):
            q.refs.append((ENTITY, _refs(ctx, base, value)))
        elif base == "agent":
            q.refs.append((AGENT, _refs(ctx, base, value)))
        else:
            values = _tokens(base, value)
            {"_id": q.ids, "action": q.actions, "outcome": q.outcomes, "subtype": q.subtypes}[base].append(values)
    return q, control, used


def _drive(q: AuditQuery) -> None:
    """Drive the query from one patient reference when there is one: the narrowest index range."""
    q.refs.sort(key=lambda g: (len(g[1]) != 1, g[0] != ENTITY, not g[1][0].startswith("Patient/")))


def _count(ctx: ServerContext, raw: str | None) -> int:
    return page_size(raw, ctx.settings.default_count, ctx.settings.max_count)


def _view(principal: Principal | None, interaction: str) -> AuditView | None:
    """The caller's view of the trail (None: authentication off, all of it); 403 when it grants no record,
    whatever the id or the query (the answer then tells nothing of the trail)."""
    if principal is None:
        return None
    from fhir_server.security.policy import audit_view  # the security package imports the audit events

    view = audit_view(principal, interaction)
    if view is None:
        raise FHIRError(403, "forbidden", f"The token's scopes do not grant {interaction} on AuditEvent (in user "
                                          "context only a scope naming AuditEvent does, for the user's own requests)")
    return view


def _hidden_documents(ctx: ServerContext, params: SearchParams) -> list[str]:
    """``DocumentReference/<id>`` of the documents designated by ``params``, from the search index."""
    from fhir_server.interactions.search_exec import EsResolver  # the interaction layer imports this module

    ctx.indexer.wait_until_indexed()  # a label set before this request hides its records already
    try:
        ids = EsResolver(ctx).matching_ids("DocumentReference", params)
    except SearchError as exc:  # never answer without the exclusion: refuse instead
        raise FHIRError(500, "too-costly", "Too many documents are hidden from this patient to list "
                                           "the accesses to their record") from exc
    return [f"DocumentReference/{i}" for i in ids]


def _restrict(ctx: ServerContext, view: AuditView | None, q: AuditQuery) -> None:
    """AND the view's restriction to ``q``: the SQL decides which records the caller reads and counts."""
    if view is not None and view.agent is not None:
        # a refused request's patients were looked up by the server and are not shown to the professional
        # (``AuditView.redact``): a patient filter matches only the requests that succeeded
        if any(kind == ENTITY and any(v.startswith("Patient/") for v in values) for kind, values in q.refs):
            q.outcomes.append(["0"])
        q.refs.append((AGENT, [view.agent]))
    if view is not None and view.patient is not None:
        q.refs.append((ENTITY, [f"Patient/{view.patient}"]))
    if view is not None:
        q.not_entities += [f"Patient/{p}" for p in sorted(view.excluded_patients())]
        hidden = view.hidden_documents()
        if hidden is not None:
            q.not_entities += _hidden_documents(ctx, hidden)
    _drive(q)


def _caught_up(ctx: ServerContext) -> None:
    """Read-your-writes for the trail: what was journalled before this request is in the table."""
    if ctx.audit is not None and not ctx.audit.wait_applied():
        raise FHIRError(503, "transient", "The audit trail is being written; retry shortly",
                        headers={"Retry-After": "1"})


def search(ctx: ServerContext, raw_params: SearchParams, *, strict: bool = False,
           policy: AccessPolicy | None = None) -> Result:
    """``raw_params``: the client's (``authz.search_params`` adds none for AuditEvent); ``policy``: the caller's,
    whose audit view (``policy.audit_view``) this search applies in its SQL."""
    view = _view(None if policy is None else policy.principal, "search-type")
    _caught_up(ctx)
    q, control, used = _parse(ctx, raw_params, strict)
    _restrict(ctx, view, q)
    sort = control.get("_sort", "-date")
    if sort not in ("date", "-date", "_lastUpdated", "-_lastUpdated"):
        raise bad_request(f"AuditEvent sorts by date or -date only, got '{sort}'", "_sort")
    q.descending = sort.startswith("-")
    summary = control.get("_summary", "false")
    if summary not in ("false", "count"):
        raise bad_request(f"_summary={summary} is not supported on AuditEvent (count and false are)", "_summary")
    total_mode = control.get("_total", "none")
    if total_mode not in ("none", "estimate", "accurate"):
        raise bad_request(f"_total must be none, estimate or accurate, got '{total_mode}'", "_total")
    count = 0 if summary == "count" else _count(ctx, control.get("_count"))
    self_params = [(k, str(count)) if k == "_count" else (k, v) for k, v in used]
    scope = scope_of("audit", self_params)
    cursor_raw = next((v for k, v in raw_params if k == "_cursor"), None)
    if cursor_raw is not None:
        state = decode_cursor(ctx.cursor_key, scope, cursor_raw)
        t, i = state.get("t"), state.get("i")
        if state.keys() != {"t", "i"} or not is_int(t, -(1 << 62) + 1, 1 << 62) or not isinstance(i, str) \
                or not 0 < len(i) <= 64 or "\x00" in i:
            raise invalid_cursor()
        q.after = (t, i)

    log = AuditLog.of(ctx.store.url)
    rows = log.search(q, count + 1) if count else []
    more = len(rows) > count
    rows = rows[:count]
    entries = []
    withheld = False
    for id_, _, content in rows:
        event = stored_event(content, id_) if view is None else view.redact(stored_event(content, id_))
        if policy is not None and not policy.allows(event):
            withheld = True  # defence in depth: the parameters should already have excluded it
            continue
        entries.append({"fullUrl": f"{ctx.base_url}/AuditEvent/{id_}", "resource": event,
                        "search": {"mode": "match"}})

    base = f"{ctx.base_url}/AuditEvent"
    query = urlencode(self_params)
    links = [{"relation": "self", "url": f"{base}?{query}" if query else base}]
    if more and rows:
        last_id, last_t, _ = rows[-1]
        cursor = encode_cursor(ctx.cursor_key, scope, {"t": last_t, "i": last_id})
        links.append({"relation": "next", "url": f"{base}?{query}{'&' if query else ''}_cursor={cursor}"})
    bundle: Resource = {"resourceType": "Bundle", "type": "searchset",
                        "meta": {"lastUpdated": format_instant(now_us())}}
    if (summary == "count" or total_mode != "none") and q.after is None and not withheld:
        bundle["total"] = log.count(q)
    bundle["link"] = links
    if summary != "count" and entries:  # FHIR JSON has no empty arrays
        bundle["entry"] = entries
    return Result(200, bundle)


def read(ctx: ServerContext, id_: str, principal: Principal | None = None, interaction: str = "read") -> Result:
    """One record, if the caller's view has it (the same SQL restriction as a search): a hidden record
    answers as an unknown one."""
    view = _view(principal, interaction)
    _caught_up(ctx)
    within = None
    if view is not None:
        within = AuditQuery()
        _restrict(ctx, view, within)
    found = AuditLog.of(ctx.store.url).read(id_, within)
    if found is None:
        raise not_found(f"AuditEvent/{id_} is not known")
    recorded_us, content = found
    rendered = stored_event(content, id_)
    event = orjson.dumps(rendered if view is None else view.redact(rendered))
    return Result(200, None, StoredVersion(0, "AuditEvent", id_, 1, recorded_us, "POST", False, event), raw=event)


def vread(ctx: ServerContext, id_: str, vid: str, principal: Principal | None = None) -> Result:
    """An AuditEvent has one version, ``1``."""
    result = read(ctx, id_, principal, "vread")
    if vid != "1":
        raise not_found(f"AuditEvent/{id_} has no version {vid}")
    return result


def capability() -> dict[str, Any]:
    """What ``CapabilityStatement.rest.resource`` says of AuditEvent: read-only, one version, SQL search."""
    return {
        "versioning": "versioned",  # meta.versionId is always 1: records are never changed
        "readHistory": False,
        "updateCreate": False,
        "conditionalCreate": False,
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchParam": [{"name": name, "definition": url, "type": type_, **({"documentation": doc} if doc else {})}
                        for name, (type_, url, doc) in PARAMS.items()],
    }



def plug_in() -> None:
    """Serve AuditEvent (``ResourceType.store == "audit"``) from this module: the interactions reach it
    through the type registry, never by name."""
    registry.plug("audit", registry.Store(read=read, vread=vread, search=search, capability=capability))
