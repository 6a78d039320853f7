"""Batch and transaction Bundles (http.html#transaction, bundle.html#references).

A transaction is one store unit: every version, outbox row and match key of the
Bundle commits together or not at all. Processing order is the spec's: DELETE,
then POST, then PUT/PATCH, then GET/HEAD. Before anything is written the server
resolves every entry's identity (conditional create/update/patch matches, new
ids), rewrites ``fullUrl`` references (``urn:uuid:`` and absolute URLs, in any
element, ``attachment.url`` included) and resolves conditional references
(``Patient?identifier=s|v``, exactly one match or the Bundle fails). Matching
reads the store inside the unit plus the Bundle's own earlier entries, so a
Bundle sees its own writes. A unit aborted by a concurrent writer (lock timeout,
unique key race) is retried from scratch, since nothing of it was committed.

A batch runs each entry as its own one-entry transaction and reports each
outcome separately.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

from fhir_server.context import ServerContext
from fhir_server.errors import FHIRError, Issue, bad_request, conflict, not_found, operation_outcome
from fhir_server.registry import get_type
from fhir_server.storage import (
    ConcurrentWrite,
    StoredVersion,
    UniqueKeyViolation,
    VersionConflict,
    WriteUnit,
    format_instant,
    now_us,
    version_number,
)
from fhir_server.storage.keys import MatchKey, extract_keys
from search.query import SearchError, compile_search

from . import conditional, crud, mhd, patch, search
from .result import Result
from .search_exec import SyntaxResolver

ATTEMPTS = 3
_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_CONDITIONAL_REF = re.compile(r"^([A-Z][A-Za-z]+)\?(.+)$")
_LITERAL = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?$")


#: reads one resource as the check needs it: the store's committed state, or a write unit's own view
Reader = Callable[[str, str], StoredVersion | None]


class EntryAccess(Protocol):
    """The caller's access policy, applied to each entry as to the equivalent standalone request.

    The HTTP layer passes one in (``security.authz.BundleAccess``), so this module stays free of security.
    Every write, standalone or in a Bundle, runs through :func:`_execute`, which asks it about each stored
    resource the write would change, match or reference, inside the store unit: a resource it may not see is
    treated exactly as one that does not exist."""

    def authorize(self, type_: str, interaction: str, id_: str | None, vid: str | None,
                  resource: dict[str, Any] | None) -> None:
        """Before the entry runs: 403 without a scope for the type and interaction."""

    def sees(self, type_: str, resource: dict[str, Any], interaction: str, read: Reader) -> bool:
        """Whether the caller may see this stored resource (``read``: for a Binary's ``securityContext``)."""

    def may_write(self, type_: str, resource: dict[str, Any], interaction: str) -> bool:
        """Whether content the caller writes stays within what it may see."""

    def chooses_ids(self, type_: str) -> bool:
        """Whether the caller may create with an id of its choice (update-as-create): only a caller who sees
        every resource of the type, else "hidden" and "unknown" would answer differently."""

    def guard(self, interaction: str) -> Callable[[dict[str, Any]], bool]:
        """Whether a stored resource (not a Binary) may be seen: :meth:`sees` without a reader."""

    def search(self, type_: str, params: list[tuple[str, str]]) -> Result:
        """A GET search entry, filtered like the caller's own search."""


_INTERACTION = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class _Prevalidated:
    """An entry validated before the store unit (:func:`_prevalidate`)."""

    resource: dict[str, Any]  # its resource with references rewritten, as the unit writes it when the ids agree
    body: dict[str, Any]  # what was validated: that resource with its id
    issues: list[Issue]


@dataclass
class Entry:
    """One request entry and, once processed, its outcome."""

    index: int
    method: str
    url: str
    type: str
    id: str | None = None
    vid: str | None = None
    query: str | None = None  # conditional or search criteria
    full_url: str | None = None
    resource: dict[str, Any] | None = None
    if_match: int | None = None
    if_none_exist: str | None = None
    # outcome
    target: str | None = None  # resolved logical id
    status: int = 0
    stored: StoredVersion | None = None
    body: dict[str, Any] | None = None
    issues: list[Issue] = field(default_factory=list)
    original: dict[str, Any] | None = None  # the resource as sent (each attempt rewrites from it)
    new_id: str = field(default_factory=lambda: crud.new_id())  # stable across retries
    validated: _Prevalidated | None = None  # content validated outside the store unit
    # the caller's access policy (None: unrestricted): what it may not see never matches, nor is changed
    access: EntryAccess | None = None
    trail_read: bool = False  # a GET of an AuditEvent: answered from the audit table after commit

    def __post_init__(self) -> None:
        if self.original is None:
            self.original = self.resource

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"

    def reset(self) -> None:
        self.target, self.status, self.stored, self.body, self.issues = None, 0, None, None, []
        self.trail_read = False
        self.resource = self.original


def _located(err: FHIRError, entry: Entry) -> FHIRError:
    """The same error, its message and FHIRPaths naming the failing entry."""
    prefix = f"{entry.where}.resource"

    def relocate(expr: str) -> str:
        if expr.startswith(entry.where):
            return expr
        if entry.resource is not None:
            rtype = str(entry.resource.get("resourceType", entry.type))
            if expr == rtype or expr.startswith(rtype + ".") or expr.startswith(rtype + "["):
                return prefix + expr[len(rtype):]
        return f"{entry.where}.request" if expr in ("If-Match", "If-None-Exist") else f"{entry.where}"

    expressions = tuple(relocate(e) for e in err.expression) or (entry.where,)
    extra = [Issue(i.severity, i.code, i.diagnostics, tuple(relocate(e) for e in i.expression))
             for i in err.extra_issues]
    return FHIRError(err.status, err.code, f"{entry.where} ({entry.method} {entry.url}): {err.diagnostics}",
                     expressions, dict(err.headers), extra)


@contextmanager
def _at(entry: Entry) -> Iterator[None]:
    """Errors raised inside name the entry; the plain error stays available as ``__cause__``."""
    try:
        yield
    except FHIRError as err:
        raise _located(err, entry) from err
    except UniqueKeyViolation as exc:
        plain = crud.unique_conflict(exc, show_holder=entry.access is None)
        raise _located(plain, entry) from plain
    except VersionConflict as exc:
        plain = FHIRError(412, "conflict", f"If-Match names version {entry.if_match} but the current "
                          f"version is {exc.current}", ("If-Match",))
        raise _located(plain, entry) from plain


def _etag_version(raw: Any, where: str) -> int | None:
    if raw is None:
        return None
    number = version_number(str(raw).strip().removeprefix("W/").strip('"'))
    if number is None:
        raise bad_request(f"ifMatch must be a version ETag like W/\"3\", got '{raw}'", where)
    return number


def _relative(ctx: ServerContext, url: str) -> str:
    for base in (ctx.base_url, ctx.base_url.split("://", 1)[-1]):
        if url.startswith(base + "/"):
            return url[len(base) + 1:]
    return url.lstrip("/")


def parse_entry(ctx: ServerContext, raw: Any, index: int) -> Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise bad_request(f"{where} is not an object", where)
    request = raw.get("request")
    if not isinstance(request, dict):
        raise bad_request(f"{where} has no request", f"{where}.request")
    method, url = request.get("method"), request.get("url")
    if method not in _ORDER or not isinstance(url, str) or not url:
        raise bad_request(f"{where}.request needs a method (GET, HEAD, POST, PUT, PATCH, DELETE) and a url",
                          f"{where}.request")
    rel = _relative(ctx, url)
    path, _, query = rel.partition("?")
    segments = path.split("/") if path else []
    entry = Entry(index, method, url, segments[0] if segments else "", query=query or None,
                  full_url=raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None)
    resource = raw.get("resource")
    if resource is not None and not isinstance(resource, dict):
        raise bad_request(f"{where}.resource is not a resource", f"{where}.resource")
    entry.resource = entry.original = resource
    with _at(entry):
        entry.if_match = _etag_version(request.get("ifMatch"), "If-Match")
    if isinstance(request.get("ifNoneExist"), str):  # [base]/Type?q, Type?q and q all mean q
        entry.if_none_exist = conditional.if_none_exist_query(request["ifNoneExist"], entry.type, ctx.base_url,
                                                              f"{where}.request.ifNoneExist")
    if method in ("GET", "HEAD"):
        return entry  # any read or search URL; checked when it runs
    if get_type(entry.type) is None:
        raise not_found(f"{where}: resource type '{entry.type}' is not supported by this server",
                        f"{where}.request.url")
    if len(segments) > 2 or (method == "POST" and len(segments) != 1):
        raise bad_request(f"{where}: '{url}' is not a valid {method} url", f"{where}.request.url")
    entry.id = segments[1] if len(segments) == 2 else None
    if method in ("PUT", "PATCH", "DELETE") and entry.id is None and entry.query is None:
        raise bad_request(f"{where}: {method} needs Type/id or Type?criteria", f"{where}.request.url")
    if method in ("POST", "PUT", "PATCH") and resource is None:
        raise bad_request(f"{where}: {method} needs a resource", f"{where}.resource")
    if method in ("POST", "PUT") and resource is not None and resource.get("resourceType") != entry.type:
        raise bad_request(f"{where}: resourceType '{resource.get('resourceType')}' does not match the url "
                          f"type '{entry.type}'", f"{where}.resource.resourceType")
    if method == "PUT" and entry.id is not None and resource is not None and resource.get("id") not in (
            None, entry.id):
        raise bad_request(f"{where}: resource id '{resource.get('id')}' must equal the url id '{entry.id}'",
                          f"{where}.resource.id")
    return entry


def parse_bundle(ctx: ServerContext, bundle: dict[str, Any]) -> tuple[str, list[Entry]]:
    if bundle.get("resourceType") != "Bundle":
        raise bad_request("POST on the base takes a Bundle", "resourceType")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise bad_request(f"Bundle.type must be transaction or batch, not '{kind}'", "Bundle.type")
    raw = bundle.get("entry") or []
    if not isinstance(raw, list):
        raise bad_request("Bundle.entry must be a list", "Bundle.entry")
    if kind == "batch":
        return kind, [_lenient_parse(ctx, e, i) for i, e in enumerate(raw)]
    return kind, [parse_entry(ctx, e, i) for i, e in enumerate(raw)]


def _lenient_parse(ctx: ServerContext, raw: Any, index: int) -> Entry:
    """Batch: an unparsable entry fails alone."""
    try:
        return parse_entry(ctx, raw, index)
    except FHIRError as err:
        entry = Entry(index, "?", "?", "")
        entry.status, entry.body = err.status, err.outcome()
        return entry


# -- identity resolution -----------------------------------------------------------------------------

@dataclass
class _Pending:
    """Resources the Bundle will write before the entry being resolved (processing order)."""

    keys: dict[tuple[str, str], set[MatchKey]] = field(default_factory=dict)
    deleted: set[tuple[str, str]] = field(default_factory=set)
    # general criteria (conditional.Criteria.key) -> ids Elasticsearch held after the barrier
    general: dict[str, set[str]] = field(default_factory=dict)

    def match(self, type_: str, criteria: tuple[conditional.Criterion, ...]) -> set[str]:
        elements = conditional.elements_of(type_)
        out: set[str] | None = None
        for c in criteria:
            ids: set[str] = set()
            for (t, id_), keys in self.keys.items():
                if t != type_:
                    continue
                for system, value in c.alternatives:
                    if c.name == "_id":
                        if id_ == value:
                            ids.add(id_)
                    elif any(k.element in elements and (value is None or k.value == value)
                             and (system is None or k.system == system) for k in keys):
                        ids.add(id_)
            out = ids if out is None else out & ids
        return out or set()


def _match(unit: WriteUnit, pending: _Pending, crit: conditional.Criteria) -> set[str]:
    """Fast criteria: the store plus the Bundle's own entries; general ones: the committed state
    (Elasticsearch after the barrier, re-read in the store), minus what the Bundle deletes."""
    type_, deleted = crit.type, {id_ for t, id_ in pending.deleted if t == crit.type}
    if crit.fast is None:
        return conditional.verify(unit, type_, pending.general[crit.key]) - deleted
    criteria = crit.fast
    in_store = conditional.match(unit, type_, criteria) - deleted
    # a resource the Bundle rewrites matches by its new identifiers, not its stored ones
    in_store = {i for i in in_store if (type_, i) not in pending.keys}
    return in_store | pending.match(type_, criteria)


def _allowed(unit: WriteUnit, entry: Entry, type_: str, resource: dict[str, Any], interaction: str) -> bool:
    """Whether the entry's caller may see this resource (read inside the unit: a Binary's ``securityContext``
    may be a document of the same transaction)."""
    return entry.access is None or entry.access.sees(type_, resource, interaction, unit.current)


#: what a stored id is to the caller: the same answer for a resource hidden from them as for an unknown id
ABSENT, CURRENT, DELETED = "absent", "current", "deleted"


def _state(unit: WriteUnit, entry: Entry, type_: str, id_: str, interaction: str) -> str:
    """:data:`ABSENT` (unknown, or hidden from the caller: the two must look alike), :data:`CURRENT` (a
    current version the caller sees) or :data:`DELETED` (deleted, and the version it deleted the caller saw).

    A resource's visibility is its last content's: a deleted one hidden from the caller stays unknown to
    them, so they can neither re-create it nor learn that it existed."""
    cur = unit.current(type_, id_)
    if cur is None:
        return ABSENT
    if not cur.deleted and cur.content is not None:
        return CURRENT if _allowed(unit, entry, type_, cur.resource(), interaction) else ABSENT
    if entry.access is None:
        return DELETED
    last = unit.vread(type_, id_, cur.version - 1) if cur.version > 1 else None
    if last is None or last.deleted or last.content is None:
        return ABSENT
    return DELETED if _allowed(unit, entry, type_, last.resource(), interaction) else ABSENT


def _creatable(entry: Entry, type_: str, id_: str) -> None:
    """An update that would create ``type_/id_`` (update-as-create): only for a caller who sees the whole type.

    Anyone else gets the answer an unknown id gets, whether the id is unknown or hidden from them:
    creating it would reveal that a hidden one does not exist, refusing only hidden ids that it does."""
    if entry.access is not None and not entry.access.chooses_ids(type_):
        raise not_found(f"{type_}/{id_} is not known (this token updates existing resources; POST creates)")


def _guarded(unit: WriteUnit, entry: Entry, type_: str, ids: set[str], interaction: str | None = None) -> set[str]:
    """Matches the caller may see: a resource hidden from them is never matched, as if it did not exist
    (so a conditional write neither changes it nor reveals it through 412/200 versus 201/204)."""
    if entry.access is None:
        return ids
    interaction = interaction or _INTERACTION[entry.method]
    kept = set()
    for i in ids:
        current = unit.current(type_, i)
        if current is None or current.deleted or current.content is None or _allowed(
                unit, entry, type_, current.resource(), interaction):
            kept.add(i)  # None: written earlier by this Bundle itself
    return kept


def _one(ids: set[str], type_: str, what: str) -> str | None:
    if len(ids) > 1:
        raise FHIRError(412, "multiple-matches", f"{what} matches {len(ids)} {type_} resources")
    return next(iter(ids), None)


def _resolve_identity(ctx: ServerContext, unit: WriteUnit, entry: Entry, pending: _Pending) -> None:
    type_ = entry.type
    if entry.method == "POST":
        if entry.if_none_exist:
            criteria = conditional.analyse(type_, entry.if_none_exist, "If-None-Exist")
            found = _one(_guarded(unit, entry, type_, _match(unit, pending, criteria)), type_,
                         f"If-None-Exist '{entry.if_none_exist}'")
            if found is not None:
                entry.target, entry.status = found, 200  # already there: nothing is written
                return
        entry.target = entry.new_id
    elif entry.id is not None:
        entry.target = entry.id
        if entry.method == "PUT" and _state(unit, entry, type_, entry.id, "update") == ABSENT:
            _creatable(entry, type_, entry.id)
    else:
        criteria = conditional.analyse(type_, entry.query or "", f"{entry.where}.request.url")
        found = _one(_guarded(unit, entry, type_, _match(unit, pending, criteria)), type_, f"'{entry.url}'")
        rid = entry.resource.get("id") if entry.resource else None
        if entry.method == "PATCH":
            if found is None:
                raise not_found(f"No {type_} matches '{entry.url}'")
            entry.target = found
        elif found is None:
            if isinstance(rid, str) and rid:  # http.html#cond-update: no match, an id given
                state = _state(unit, entry, type_, rid, "update")
                if state == CURRENT:
                    raise conflict(f"No {type_} matches '{entry.url}' and {type_}/{rid} already exists",
                                   f"{type_}.id")
                if state == ABSENT:
                    _creatable(entry, type_, rid)
                entry.target = rid
            else:
                entry.target = entry.new_id
        elif rid not in (None, found):
            raise bad_request(f"The resource id '{rid}' differs from the matched {type_}/{found}", f"{type_}.id")
        else:
            entry.target = found
    if entry.method in ("POST", "PUT") and entry.resource is not None:
        pending.keys[(type_, entry.target)] = extract_keys(entry.resource)
        pending.deleted.discard((type_, entry.target))


# -- reference rewriting -----------------------------------------------------------------------------

def _rewrite(node: Any, urls: dict[str, str], resolve: Any) -> Any:
    """Rewrite ``reference`` and ``url`` (Attachment.url) values naming a fullUrl; other strings that happen to
    equal one (an MHD entryUUID identifier is often the entry's own ``urn:uuid``) are data and stay."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in ("reference", "url") and isinstance(v, str) and v in urls:
                out[k] = urls[v]
            elif k == "reference" and isinstance(v, str):
                out[k] = resolve(v)
            else:
                out[k] = _rewrite(v, urls, resolve)
        return out
    if isinstance(node, list):
        return [_rewrite(v, urls, resolve) for v in node]
    return node


def _reference_resolver(unit: WriteUnit, pending: _Pending, entry: Entry) -> Any:
    def resolve(ref: str) -> str:
        if ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
            raise bad_request(f"Reference '{ref}' names no fullUrl of this Bundle", entry.where)
        m = _CONDITIONAL_REF.match(ref)
        if m is None:
            return ref
        type_ = m.group(1)
        if get_type(type_) is None:
            raise not_found(f"Conditional reference '{ref}': type {type_} is not served here")
        criteria = conditional.analyse(type_, m.group(2), entry.where)
        ids = _guarded(unit, entry, type_, _match(unit, pending, criteria), "search-type")  # a search, filtered
        if not ids:
            raise not_found(f"Conditional reference '{ref}' matches no {type_}")
        found = _one(ids, type_, f"Conditional reference '{ref}'")
        return f"{type_}/{found}"

    return resolve


# -- execution -----------------------------------------------------------------------------------------

def _delete(ctx: ServerContext, unit: WriteUnit, entry: Entry, pending: _Pending) -> None:
    if entry.id is None:
        criteria = conditional.analyse(entry.type, entry.query or "", f"{entry.where}.request.url")
        entry.target = _one(_guarded(unit, entry, entry.type, _match(unit, _Pending(general=pending.general),
                                                                     criteria)),
                            entry.type, f"'{entry.url}'")
    else:
        entry.target = entry.id
        if entry.access is not None and _state(unit, entry, entry.type, entry.id, "delete") == ABSENT:
            # hidden answers as unknown: nothing deleted (204), and If-Match fails as on no resource
            entry.status = 204
            if entry.if_match is not None:
                raise VersionConflict(None)
            return
    entry.status = 204
    if entry.target is None:
        return
    stored = unit.delete(entry.type, entry.target, if_match=entry.if_match, indexed=crud.indexed(entry.type))
    pending.deleted.add((entry.type, entry.target))
    entry.stored = stored


def _same_parts(validated: dict[str, Any], body: dict[str, Any]) -> bool:
    """``body`` is ``validated`` rebuilt from the same parts: each top-level value the same object (strings:
    equal), as when the unit writes the pre-validated rewrite. Neither serialises nor walks the content."""
    return validated.keys() == body.keys() and all(
        v is body[k] or (type(v) is str and type(body[k]) is str and v == body[k]) for k, v in validated.items())


def _validated(ctx: ServerContext, entry: Entry, body: dict[str, Any]) -> list[Issue]:
    """Validation issues of ``body``, reusing the result of the pre-validation when the content is the same."""
    if entry.validated is not None and _same_parts(entry.validated.body, body):
        return entry.validated.issues
    return crud._validate(body, ctx.settings)


def _has_conditionals(entries: list[Entry]) -> bool:
    def refs(node: Any) -> bool:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and _CONDITIONAL_REF.match(ref):
                return True
            return any(refs(v) for v in node.values())
        if isinstance(node, list):
            return any(refs(v) for v in node)
        return False

    return any(e.if_none_exist or (e.query and e.method != "GET") or refs(e.resource) for e in entries)


def _prevalidate(ctx: ServerContext, entries: list[Entry], rewrite: bool = True) -> dict[str, str] | None:
    """Validate before taking the store's write lock, when identities do not depend on the store.

    Without conditional parts every id is known up front (POST: the entry's
    new id, PUT and PATCH: their url), so the rewritten content, and its
    validation, are exactly what the unit will write. Returns the fullUrl map
    used (None: nothing validated); when the unit's map is the same, it writes
    these rewritten resources and reuses their validation. This keeps the
    validator, the costly part, out of the write lock.
    """
    if rewrite and _has_conditionals(entries):
        return None
    urls = {e.full_url: f"{e.type}/{e.new_id if e.method == 'POST' else e.id}" for e in entries
            if e.full_url and e.method in ("POST", "PUT", "PATCH") and (e.method == "POST" or e.id)}
    for e in entries:
        if e.method not in ("POST", "PUT") or e.original is None:
            continue
        target = e.new_id if e.method == "POST" else e.id
        with _at(e):
            res = _rewrite(e.original, urls, _dangling(e)) if rewrite else e.original
            body = {**{k: v for k, v in res.items() if k != "id"}, "id": target} if e.method == "POST" \
                else {**res, "id": target}
            e.validated = _Prevalidated(res, body, crud._validate(body, ctx.settings))
    return urls


def _dangling(entry: Entry) -> Any:
    def resolve(ref: str) -> str:
        if ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
            raise bad_request(f"Reference '{ref}' names no fullUrl of this Bundle", entry.where)
        return ref

    return resolve


def _check_content(entry: Entry, body: dict[str, Any]) -> None:
    """What an entry writes (references rewritten, its id assigned) must stay within what the caller may see."""
    interaction = _INTERACTION[entry.method]
    if entry.access is not None and not entry.access.may_write(entry.type, body, interaction):
        verb = "patched" if entry.method == "PATCH" else "written"
        raise FHIRError(403, "forbidden", f"The {verb} {entry.type} would be outside what the token may {interaction}")


def _authorize(ctx: ServerContext, entry: Entry) -> None:
    """Before anything runs: the interaction must be one the type supports (405, as standalone: no AuditEvent
    is ever written through a Bundle), then the caller's access policy checks scopes and target."""
    if entry.method not in _ORDER:
        return
    if entry.method in ("GET", "HEAD"):
        path = _relative(ctx, entry.url).partition("?")[0]
        m = _LITERAL.match(path)
        type_, id_, vid = (path.split("/")[0], None, None) if m is None else m.groups()
        interaction = "search-type" if m is None else ("vread" if vid else "read")
    else:
        type_, id_, vid, interaction = entry.type, entry.id, None, _INTERACTION[entry.method]
    rt = get_type(type_)
    if rt is None:
        return  # answered 404 when the entry runs, as a standalone request
    if not rt.supports(interaction):
        raise FHIRError(405, "not-supported", f"{interaction} is not supported for {type_}")
    if entry.access is not None:
        entry.access.authorize(type_, interaction, id_, vid, entry.original)


def _write(ctx: ServerContext, unit: WriteUnit, entry: Entry) -> None:
    assert entry.target is not None and entry.resource is not None
    type_, indexed = entry.type, crud.indexed(entry.type)
    if entry.method == "POST":
        body = {k: v for k, v in entry.resource.items() if k != "id"}
        _check_content(entry, {**body, "id": entry.target})
        entry.issues = _validated(ctx, entry, {**body, "id": entry.target})
        # ITI-105 inline data -> a Binary bound to this document
        body = mhd.externalize_inline_data(unit, body, f"{type_}/{entry.target}")
        entry.stored = _put(unit, entry, body, method="POST", must_not_exist=True, indexed=indexed)
        entry.status = 201
        return
    if entry.method == "PUT":
        body = {**entry.resource, "id": entry.target}
        _check_content(entry, body)
        entry.issues = _validated(ctx, entry, body)
        entry.stored = _put(unit, entry, body, method="PUT", if_match=entry.if_match, indexed=indexed)
        entry.status = 201 if entry.stored.version == 1 else 200
        return
    state = _state(unit, entry, type_, entry.target, "patch")  # PATCH
    if state != CURRENT:
        raise not_found(f"{type_}/{entry.target} is not known") if state == ABSENT else FHIRError(
            410, "deleted", f"{type_}/{entry.target} was deleted")
    current = unit.current(type_, entry.target)
    assert current is not None
    if entry.if_match is not None and entry.if_match != current.version:
        raise VersionConflict(current.version)
    patched = patch.apply_patch(current.resource(), entry.resource, "")
    _check_content(entry, patched)
    entry.issues = crud._validate(patched, ctx.settings)
    entry.stored = _put(unit, entry, patched, method="PATCH", if_match=current.version, indexed=indexed)
    entry.status = 200


def _put(unit: WriteUnit, entry: Entry, body: dict[str, Any], **kwargs: Any) -> StoredVersion:
    """``unit.put`` of the entry's target; a unique key held by another resource is a 409 that names the
    holder only when the caller may see it."""
    assert entry.target is not None
    try:
        return unit.put(entry.type, entry.target, body, **kwargs)
    except UniqueKeyViolation as exc:
        holder = unit.current(exc.type, exc.holder_id)
        shown = holder is not None and holder.content is not None and _allowed(
            unit, entry, exc.type, holder.resource(), "read")
        raise crud.unique_conflict(exc, shown) from exc


def _read(ctx: ServerContext, unit: WriteUnit, entry: Entry) -> None:
    """GET/HEAD: read and vread inside the unit (they see the Bundle's writes); searches are checked now and
    run after commit."""
    rel = _relative(ctx, entry.url)
    path, _, query = rel.partition("?")
    m = _LITERAL.match(path)
    if m is None:
        segs = path.split("/")
        if len(segs) != 1 or get_type(segs[0]) is None:
            raise not_found(f"'{entry.url}' is not a read or search this server supports")
        try:
            compile_search(ctx.search_parameters, segs[0], parse_qsl(query, keep_blank_values=True),
                           base_url=ctx.base_url, resolver=SyntaxResolver(ctx))  # chains checked, run later
        except SearchError as exc:
            raise bad_request(exc.message) from exc
        entry.type, entry.query, entry.status = segs[0], query, 200
        return
    type_, id_, vid = m.groups()
    if get_type(type_) is None:
        raise not_found(f"Resource type '{type_}' is not supported by this server")
    if type_ == "AuditEvent":  # the audit trail's own table: read after commit, like a search
        entry.type, entry.target, entry.vid, entry.status, entry.trail_read = type_, id_, vid, 200, True
        return
    unknown = not_found(f"{type_}/{id_}{'/_history/' + vid if vid else ''} is not known")
    interaction = "vread" if vid else "read"
    if _state(unit, entry, type_, id_, interaction) == ABSENT:
        raise unknown  # unknown, or hidden from the caller: one answer
    if vid is None:
        stored = unit.current(type_, id_)
    else:
        number = version_number(vid)
        stored = unit.vread(type_, id_, number) if number is not None else None
    if stored is None or (stored.content is not None and not _allowed(unit, entry, type_, stored.resource(),
                                                                      interaction)):
        raise unknown
    if stored.deleted:
        raise FHIRError(410, "deleted", f"{type_}/{id_} was deleted")
    entry.type, entry.target, entry.stored, entry.status = type_, id_, stored, 200


def _sees(unit: WriteUnit, entries: list[Entry]) -> mhd.Sees:
    """The Bundle's access policy on stored versions, read inside ``unit`` (every entry has the same one)."""
    access = next((e.access for e in entries if e.access is not None), None)
    if access is None:
        return lambda stored, interaction: True
    return lambda stored, interaction: stored.content is not None and access.sees(
        stored.type, stored.resource(), interaction, unit.current)


def _execute(ctx: ServerContext, unit: WriteUnit, entries: list[Entry],
             general: dict[str, set[str]] | None = None, prevalidated: dict[str, str] | None = None,
             transaction_rules: bool = True) -> None:
    pending = _Pending(general=general or {})
    unit.lock_resources([(e.type, e.id) for e in entries if e.id and e.method in ("PUT", "PATCH", "DELETE")])
    for e in entries:  # DELETE first
        if e.method == "DELETE" and e.status == 0:
            with _at(e):
                _delete(ctx, unit, e, pending)
    writes = sorted((e for e in entries if e.method in ("POST", "PUT", "PATCH") and e.status == 0),
                    key=lambda e: (_ORDER[e.method], e.index))
    for e in writes:
        with _at(e):
            _resolve_identity(ctx, unit, e, pending)
    seen: dict[tuple[str, str], Entry] = {}
    for e in entries:
        if e.target is None or e.method in ("GET", "HEAD"):
            continue
        key = (e.type, e.target)
        if key in seen and not (e.method == "POST" and e.status == 200):
            raise _located(bad_request(f"{e.type}/{e.target} is also the target of "
                                       f"{seen[key].where}; a transaction may change a resource only once"), e)
        seen[key] = e
    urls: dict[str, str] = {e.full_url: f"{e.type}/{e.target}" for e in entries
                            if e.full_url and e.target and e.method in ("POST", "PUT", "PATCH")}
    to_write = [e for e in writes if e.status == 0]
    reuse = prevalidated is not None and prevalidated == urls  # the same ids: the same rewritten content
    for e in to_write:
        if reuse and e.validated is not None:
            e.resource = e.validated.resource
        elif e.method in ("POST", "PUT") and e.resource is not None and transaction_rules:
            with _at(e):
                e.resource = _rewrite(e.resource, urls, _reference_resolver(unit, pending, e))
    sees = _sees(unit, entries)
    mhd.bind_binaries(to_write, ctx.base_url)
    supersede = mhd.check_provide_bundle(unit, entries, sees) if transaction_rules else []
    for e in to_write:
        with _at(e):
            _write(ctx, unit, e)
    written = {e.target for e in to_write if e.type == "Binary" and e.target}
    for e in to_write:
        if e.type == "DocumentReference" and e.method in ("POST", "PUT"):
            mhd.bind_stored(unit, e, ctx.base_url, sees, written)
    for where, doc_id in supersede:
        mhd.supersede(unit, doc_id, where)
    for e in entries:
        if e.method in ("GET", "HEAD"):
            with _at(e):
                _read(ctx, unit, e)


def _conditional_urls(entries: list[Entry], references: bool = True) -> Iterator[tuple[Entry, str, str, str]]:
    """(entry, type, criteria, where) of every conditional part of the Bundle: ifNoneExist, conditional
    update/patch/delete urls and conditional references."""
    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and _CONDITIONAL_REF.match(ref):
                yield ref
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for e in entries:
        if e.method == "POST" and e.if_none_exist:
            yield e, e.type, e.if_none_exist, "If-None-Exist"
        if e.method in ("PUT", "PATCH", "DELETE") and e.id is None and e.query is not None:
            yield e, e.type, e.query, f"{e.where}.request.url"
        if e.method in ("POST", "PUT") and references:
            for ref in refs(e.original):
                m = _CONDITIONAL_REF.match(ref)
                assert m is not None
                if get_type(m.group(1)) is not None:
                    yield e, m.group(1), m.group(2), e.where


def _general_criteria(ctx: ServerContext, entries: list[Entry],
                      references: bool = True) -> dict[str, tuple[Entry, conditional.Criteria, str]]:
    """General (non-identifier) criteria of the Bundle by lock key, checked now (400 before any write)."""
    out: dict[str, tuple[Entry, conditional.Criteria, str]] = {}
    for e, type_, query, where in _conditional_urls(entries, references):
        with _at(e):
            crit = conditional.analyse(type_, query, where)
            if crit.fast is None and crit.key not in out:
                conditional.check_general(ctx, crit, where)
                out[crit.key] = (e, crit, where)
    return out


def _run_transaction(ctx: ServerContext, entries: list[Entry], transaction_rules: bool = True) -> None:
    """``transaction_rules``: references resolved (fullUrls, conditional references) and the ITI-65 checks and
    replacements (``mhd.check_provide_bundle``). A plain standalone create or update is neither a transaction
    nor an ITI-65 submission: its resource is written as sent (the access checks apply all the same)."""
    for e in entries:
        with _at(e):
            _authorize(ctx, e)
    general = _general_criteria(ctx, entries, transaction_rules)
    prevalidated = _prevalidate(ctx, entries, transaction_rules)
    with conditional.locked(ctx, list(general)):
        for attempt in range(ATTEMPTS):
            for e in entries:
                e.reset()
            found: dict[str, set[str]] = {}
            if general:  # under the criteria locks: every earlier conditional write is searchable
                ctx.indexer.wait_until_indexed()
                for key, (e, crit, where) in general.items():
                    with _at(e):
                        found[key] = conditional.search_general(ctx, crit, where)
            try:
                with ctx.store.unit() as unit:
                    _execute(ctx, unit, entries, found, prevalidated, transaction_rules)
                return
            except ConcurrentWrite as exc:
                if attempt == ATTEMPTS - 1:
                    raise conflict(f"The transaction collided with concurrent writes ({exc}); retry") from exc


# -- responses -----------------------------------------------------------------------------------------

def _trail_read(ctx: ServerContext, entry: Entry) -> StoredVersion:
    """An AuditEvent read or vread entry, checked by the caller's policy as the standalone read is."""
    from fhir_server.audit import search as audit_search  # the audit package imports this layer

    assert entry.target is not None
    principal = getattr(entry.access, "principal", None)  # the caller's view applies in the audit SQL
    if entry.access is not None and principal is None:  # an access policy with no principal: never guess
        raise not_found(f"AuditEvent/{entry.target} is not known")
    result = audit_search.read(ctx, entry.target, principal) if entry.vid is None else \
        audit_search.vread(ctx, entry.target, entry.vid, principal)
    assert result.version is not None
    if entry.access is not None and not entry.access.guard("read")(result.version.resource()):
        raise not_found(f"AuditEvent/{entry.target} is not known")
    return result.version


def _response_entry(ctx: ServerContext, entry: Entry, prefer_return: str) -> dict[str, Any]:
    if entry.trail_read and entry.status == 200:
        try:
            entry.stored = _trail_read(ctx, entry)
        except FHIRError as err:
            return {"response": {"status": str(err.status), "outcome": err.outcome()}}
    if entry.method in ("GET", "HEAD") and entry.query is not None and entry.status == 200 and entry.target is None:
        try:
            params = parse_qsl(entry.query, keep_blank_values=True)
            result = entry.access.search(entry.type, params) if entry.access is not None else search.search(
                ctx, entry.type, params)
        except FHIRError as err:
            return {"response": {"status": str(err.status), "outcome": err.outcome()}}
        out: dict[str, Any] = {"response": {"status": "200 OK"}}
        if entry.method == "GET":
            out["resource"] = result.body
        return out
    response: dict[str, Any] = {"status": _STATUS_TEXT.get(entry.status, str(entry.status))}
    out = {}
    stored = entry.stored
    if stored is None and entry.status == 200 and entry.target and entry.method == "POST":
        stored = ctx.store.read(entry.type, entry.target)  # conditional create matched an existing one
    if stored is not None:
        out["fullUrl"] = f"{ctx.base_url}/{stored.type}/{stored.id}"
        response["etag"] = f'W/"{stored.version}"'
        response["lastModified"] = format_instant(stored.last_updated_us)
        if entry.method in ("POST", "PUT", "PATCH", "DELETE") and not stored.deleted:
            response["location"] = f"{stored.type}/{stored.id}/_history/{stored.version}"
        if not stored.deleted and (entry.method in ("GET",) or prefer_return == "representation"):
            out["resource"] = stored.resource()
    if prefer_return == "operationoutcome" and entry.method not in ("GET", "HEAD"):
        response["outcome"] = operation_outcome(entry.issues or [Issue("information", "informational", "All OK")])
    out["response"] = response
    return out


def _bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "meta": {"lastUpdated": format_instant(now_us())},
            "entry": entries}


def transaction(ctx: ServerContext, entries: list[Entry], prefer_return: str) -> Result:
    _run_transaction(ctx, entries)
    ctx.indexer.notify()
    return Result(200, _bundle("transaction-response", [_response_entry(ctx, e, prefer_return) for e in entries]))


def batch(ctx: ServerContext, entries: list[Entry], prefer_return: str) -> Result:
    out = []
    for e in entries:
        if e.status:  # failed to parse
            out.append({"response": {"status": str(e.status), "outcome": e.body}})
            continue
        try:
            _run_transaction(ctx, [e])
            ctx.indexer.notify()
            out.append(_response_entry(ctx, e, prefer_return))
        except FHIRError as err:
            out.append({"response": {"status": str(err.status), "outcome": err.outcome()}})
    return Result(200, _bundle("batch-response", out))


def process(ctx: ServerContext, bundle: dict[str, Any], prefer_return: str | None = None,
            access: EntryAccess | None = None) -> Result:
    """POST [base] with a batch or transaction Bundle; ``access``: the caller's policy for each entry."""
    kind, entries = parse_bundle(ctx, bundle)
    for e in entries:
        e.access = access
    if kind == "transaction" and (bundle.get("meta") or {}).get("profile"):
        crud._validate(bundle, ctx.settings)  # e.g. the PDSm provide-bundle profile (closed entry slicing)
    mode = (prefer_return or "representation").lower()
    return transaction(ctx, entries, mode) if kind == "transaction" else batch(ctx, entries, mode)


def _check_standalone(method: str, type_: str, id_: str | None, resource: dict[str, Any]) -> None:
    """The body must be of the URL's type; a PUT's body carries the URL's id (http.html#update)."""
    actual = resource.get("resourceType")
    if actual != type_:
        raise bad_request(f"resourceType '{actual}' does not match the URL type '{type_}'", "resourceType")
    if method == "PUT" and id_ is not None:
        rid = resource.get("id")
        if rid is None:
            raise bad_request(f"The resource has no id: PUT {type_}/{id_} needs {type_}.id = '{id_}'", f"{type_}.id")
        if rid != id_:
            raise bad_request(f"Resource id '{rid}' must equal the URL id '{id_}'", f"{type_}.id")


def single(ctx: ServerContext, method: str, type_: str, *, id_: str | None = None, query: str | None = None,
           resource: dict[str, Any] | None = None, if_match: int | None = None,
           if_none_exist: str | None = None, access: EntryAccess | None = None) -> Result:
    """One create, update, delete or patch (plain or conditional): a one-entry transaction, so every write
    takes the same path and the same access checks as a Bundle entry.

    ``access`` is the caller's policy (None: unrestricted). Errors keep their plain form (no
    ``Bundle.entry`` prefix): the request was not a Bundle.
    """
    if resource is not None and method in ("POST", "PUT"):
        _check_standalone(method, type_, id_, resource)
    url = type_ + (f"/{id_}" if id_ else "") + (f"?{query}" if query else "")
    entry = Entry(0, method, url, type_, id=id_, query=query, resource=resource, if_match=if_match,
                  if_none_exist=if_none_exist, access=access)
    try:
        _run_transaction(ctx, [entry], transaction_rules=query is not None or if_none_exist is not None
                         or method == "PATCH")
    except FHIRError as err:
        cause = err.__cause__
        raise (cause if isinstance(cause, FHIRError) else err) from None
    ctx.indexer.notify()
    stored = entry.stored
    if stored is None and entry.target is not None and method == "POST":
        stored = ctx.store.read(type_, entry.target)  # If-None-Exist matched: the existing resource
    if method == "DELETE" or stored is None:
        result = Result(204 if method == "DELETE" else entry.status, None, stored)
        if stored is not None:
            result.headers["ETag"] = f'W/"{stored.version}"'
        return result
    return Result(entry.status, stored.resource(), stored, location=entry.status == 201, issues=entry.issues,
                  raw=stored.content)
