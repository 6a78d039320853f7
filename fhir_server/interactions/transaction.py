"""The write engine: every write, standalone or in a Bundle, is one store unit run here.

A transaction is one store unit: every version, outbox row and match key of the
Bundle commits together or not at all. Processing order is the spec's: DELETE,
then POST, then PUT/PATCH, then GET/HEAD. Before anything is written the server
resolves every entry's identity (conditional create/update/patch matches, new
ids), rewrites ``fullUrl`` references (:mod:`.references`) and resolves
conditional references (exactly one match or the Bundle fails). Matching
reads the store inside the unit plus the Bundle's own earlier entries, so a
Bundle sees its own writes. A unit aborted by a concurrent writer (lock timeout,
unique key race) is retried from scratch, since nothing of it was committed.

The caller's access policy (:class:`.entries.EntryAccess`) is asked, inside the
unit, about each stored resource a write would change, match or reference: a
resource it may not see is treated exactly as one that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fhir_common.types import Resource
from fhir_server.context import ServerContext
from fhir_server.errors import FHIRError, Issue, bad_request, conflict, not_found
from fhir_server.registry import RESOURCES, served_type
from fhir_server.storage import (
    ConcurrentWrite,
    StoredVersion,
    UniqueKeyViolation,
    VersionConflict,
    WriteUnit,
    governing_version,
    version_number,
)
from fhir_server.storage.keys import MatchKey, extract_keys
from search.query import SearchError, compile_search

from . import conditional, crud, mhd, patch, references
from .entries import INTERACTION, LITERAL, ORDER, Entry, EntryAccess, Prevalidated, at, located, policy_of, relative
from .references import conditional_urls, one
from .result import Result
from .search_exec import SyntaxResolver

ATTEMPTS = 3


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


def _allowed(unit: WriteUnit, entry: Entry, type_: str, resource: Resource, interaction: str) -> bool:
    """Whether the entry's caller may see this resource (read inside the unit: a Binary's ``securityContext``
    may be a document of the same transaction)."""
    return entry.access is None or entry.access.sees(type_, resource, interaction, unit.current)


#: what a stored id is to the caller: the same answer for a resource hidden from them as for an unknown id
ABSENT, CURRENT, DELETED = "absent", "current", "deleted"


def _state(unit: WriteUnit, entry: Entry, type_: str, id_: str, interaction: str,
           current: StoredVersion | None = None) -> str:
    """:data:`ABSENT` (unknown, or hidden from the caller: the two must look alike), :data:`CURRENT` (a
    current version the caller sees) or :data:`DELETED` (deleted, and the version it deleted the caller saw).

    A resource's visibility is its last content's: a deleted one hidden from the caller stays unknown to
    them, so they can neither re-create it nor learn that it existed. ``current``: already read by the caller."""
    cur = current if current is not None else unit.current(type_, id_)
    if cur is None:
        return ABSENT
    state = CURRENT if not cur.deleted and cur.content is not None else DELETED
    if entry.access is None:
        return state
    shown = cur if state == CURRENT else governing_version(cur, unit.vread)
    return state if shown is not None and _allowed(unit, entry, type_, shown.resource(), interaction) else ABSENT


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
    interaction = interaction or INTERACTION[entry.method]
    kept = set()
    for i in ids:
        current = unit.current(type_, i)
        if current is None or current.deleted or current.content is None or _allowed(
                unit, entry, type_, current.resource(), interaction):
            kept.add(i)  # None: written earlier by this Bundle itself
    return kept


def _resolve_identity(ctx: ServerContext, unit: WriteUnit, entry: Entry, pending: _Pending) -> None:
    type_ = entry.type
    if entry.method == "POST":
        if entry.if_none_exist:
            criteria = conditional.analyse(type_, entry.if_none_exist, "If-None-Exist")
            found = one(_guarded(unit, entry, type_, _match(unit, pending, criteria)), type_,
                         f"If-None-Exist '{entry.if_none_exist}'")
            if found is not None:
                entry.target, entry.status = found, 200  # already there: nothing is written
                return
        entry.target = entry.new_id
    elif entry.id is not None:
        entry.target = entry.id
        # unrestricted callers may create at any id: no read needed (the write itself reads the head)
        if entry.method == "PUT" and entry.access is not None and _state(unit, entry, type_, entry.id,
                                                                         "update") == ABSENT:
            _creatable(entry, type_, entry.id)
    else:
        criteria = conditional.analyse(type_, entry.query or "", f"{entry.where}.request.url")
        found = one(_guarded(unit, entry, type_, _match(unit, pending, criteria)), type_, f"'{entry.url}'")
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




def _reference_resolver(unit: WriteUnit, pending: _Pending, entry: Entry) -> Any:
    """Conditional references match like a search by the caller: in the unit, filtered."""
    return references.resolver(entry, lambda type_, criteria: _guarded(
        unit, entry, type_, _match(unit, pending, criteria), "search-type"))


# -- execution -----------------------------------------------------------------------------------------

def _delete(ctx: ServerContext, unit: WriteUnit, entry: Entry, pending: _Pending) -> None:
    if entry.id is None:
        criteria = conditional.analyse(entry.type, entry.query or "", f"{entry.where}.request.url")
        entry.target = one(_guarded(unit, entry, entry.type, _match(unit, _Pending(general=pending.general),
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


def _same_parts(validated: Resource, body: Resource) -> bool:
    """``body`` is ``validated`` rebuilt from the same parts: each top-level value the same object (strings:
    equal), as when the unit writes the pre-validated rewrite. Neither serialises nor walks the content."""
    return validated.keys() == body.keys() and all(
        v is body[k] or (type(v) is str and type(body[k]) is str and v == body[k]) for k, v in validated.items())


def _validated(ctx: ServerContext, entry: Entry, body: Resource) -> list[Issue]:
    """Validation issues of ``body``, reusing the result of the pre-validation when the content is the same."""
    if entry.validated is not None and _same_parts(entry.validated.body, body):
        return entry.validated.issues
    return crud.validate_resource(body, ctx.settings)


def _prevalidate(ctx: ServerContext, entries: list[Entry], rewrite: bool = True) -> dict[str, str] | None:
    """Validate before taking the store's write lock, when identities do not depend on the store.

    Without conditional parts every id is known up front (POST: the entry's
    new id, PUT and PATCH: their url), so the rewritten content, and its
    validation, are exactly what the unit will write. Returns the fullUrl map
    used (None: nothing validated); when the unit's map is the same, it writes
    these rewritten resources and reuses their validation. This keeps the
    validator, the costly part, out of the write lock.
    """
    if rewrite and references.has_conditionals(entries):
        return None
    urls = {e.full_url: f"{e.type}/{e.new_id if e.method == 'POST' else e.id}" for e in entries
            if e.full_url and e.method in ("POST", "PUT", "PATCH") and (e.method == "POST" or e.id)}
    for e in entries:
        if e.method not in ("POST", "PUT") or e.original is None:
            continue
        target = e.new_id if e.method == "POST" else e.id
        with at(e):
            res = references.rewrite(e.original, urls, references.dangling(e)) if rewrite else e.original
            body = {**{k: v for k, v in res.items() if k != "id"}, "id": target} if e.method == "POST" \
                else {**res, "id": target}
            e.validated = Prevalidated(res, body, crud.validate_resource(body, ctx.settings))
    return urls




def _check_content(entry: Entry, body: Resource) -> None:
    """What an entry writes (references rewritten, its id assigned) must stay within what the caller may see."""
    interaction = INTERACTION[entry.method]
    if entry.access is not None and not entry.access.may_write(entry.type, body, interaction):
        verb = "patched" if entry.method == "PATCH" else "written"
        raise FHIRError(403, "forbidden", f"The {verb} {entry.type} would be outside what the token may {interaction}")


def _authorize(ctx: ServerContext, entry: Entry) -> None:
    """Before anything runs: the interaction must be one the type supports (405, as standalone: no AuditEvent
    is ever written through a Bundle), then the caller's access policy checks scopes and target."""
    if entry.method not in ORDER:
        return
    if entry.method in ("GET", "HEAD"):
        path = relative(ctx, entry.url).partition("?")[0]
        m = LITERAL.match(path)
        type_, id_, vid = (path.split("/")[0], None, None) if m is None else m.groups()
        interaction = "search-type" if m is None else ("vread" if vid else "read")
    else:
        type_, id_, vid, interaction = entry.type, entry.id, None, INTERACTION[entry.method]
    rt = served_type(type_, ctx.settings)
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
    current = unit.current(type_, entry.target)  # PATCH
    state = _state(unit, entry, type_, entry.target, "patch", current)
    if state != CURRENT or current is None:
        raise not_found(f"{type_}/{entry.target} is not known") if state == ABSENT else FHIRError(
            410, "deleted", f"{type_}/{entry.target} was deleted")
    if entry.if_match is not None and entry.if_match != current.version:
        raise VersionConflict(current.version)
    patched = patch.apply_patch(current.resource(), entry.resource, "")
    _check_content(entry, patched)
    entry.issues = crud.validate_resource(patched, ctx.settings)
    entry.stored = _put(unit, entry, patched, method="PATCH", if_match=current.version, indexed=indexed)
    entry.status = 200


def _put(unit: WriteUnit, entry: Entry, body: Resource, **kwargs: Any) -> StoredVersion:
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
    rel = relative(ctx, entry.url)
    path, _, query = rel.partition("?")
    m = LITERAL.match(path)
    if m is None:
        segs = path.split("/")
        if len(segs) != 1 or served_type(segs[0], ctx.settings) is None:
            raise not_found(f"'{entry.url}' is not a read or search this server supports")
        try:
            compile_search(ctx.search_parameters, segs[0], parse_qsl(query, keep_blank_values=True),
                           base_url=ctx.base_url, resolver=SyntaxResolver(ctx))  # chains checked, run later
        except SearchError as exc:
            raise bad_request(exc.message) from exc
        entry.type, entry.query, entry.status = segs[0], query, 200
        return
    type_, id_, vid = m.groups()
    rt = served_type(type_, ctx.settings)
    if rt is None:
        raise not_found(f"Resource type '{type_}' is not supported by this server")
    if rt.store != RESOURCES:  # held outside the resource store (AuditEvent): read after commit, like a search
        entry.type, entry.target, entry.vid, entry.status, entry.deferred_read = type_, id_, vid, 200, True
        return
    unknown = not_found(f"{type_}/{id_}{'/_history/' + vid if vid else ''} is not known")
    interaction = "vread" if vid else "read"
    current = unit.current(type_, id_)
    if _state(unit, entry, type_, id_, interaction, current) == ABSENT:
        raise unknown  # unknown, or hidden from the caller: one answer
    if vid is None:
        stored = current
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
            with at(e):
                _delete(ctx, unit, e, pending)
    writes = sorted((e for e in entries if e.method in ("POST", "PUT", "PATCH") and e.status == 0),
                    key=lambda e: (ORDER[e.method], e.index))
    for e in writes:
        with at(e):
            _resolve_identity(ctx, unit, e, pending)
    seen: dict[tuple[str, str], Entry] = {}
    for e in entries:
        if e.target is None or e.method in ("GET", "HEAD"):
            continue
        key = (e.type, e.target)
        if key in seen and not (e.method == "POST" and e.status == 200):
            raise located(bad_request(f"{e.type}/{e.target} is also the target of "
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
            with at(e):
                e.resource = references.rewrite(e.resource, urls, _reference_resolver(unit, pending, e))
    sees = _sees(unit, entries)
    mhd.bind_binaries(to_write, ctx.base_url)
    supersede = mhd.check_provide_bundle(unit, entries, sees) if transaction_rules else []
    for e in to_write:
        with at(e):
            _write(ctx, unit, e)
    written = {e.target for e in to_write if e.type == "Binary" and e.target}
    for e in to_write:
        if e.type == "DocumentReference" and e.method in ("POST", "PUT"):
            mhd.bind_stored(unit, e, ctx.base_url, sees, written)
    for where, doc_id in supersede:
        mhd.supersede(unit, doc_id, where)
    for e in entries:
        if e.method in ("GET", "HEAD"):
            with at(e):
                _read(ctx, unit, e)


def _general_criteria(ctx: ServerContext, entries: list[Entry],
                      references: bool = True) -> dict[str, tuple[Entry, conditional.Criteria, str]]:
    """General (non-identifier) criteria of the Bundle by lock key, checked now (400 before any write)."""
    out: dict[str, tuple[Entry, conditional.Criteria, str]] = {}
    for e, type_, query, where in conditional_urls(entries, references):
        with at(e):
            crit = conditional.analyse(type_, query, where)
            if crit.fast is None and crit.key not in out:
                conditional.check_general(ctx, crit, where, policy_of(e))
                out[crit.key] = (e, crit, where)
    return out


def run(ctx: ServerContext, entries: list[Entry], transaction_rules: bool = True) -> None:
    """``transaction_rules``: references resolved (fullUrls, conditional references) and the ITI-65 checks and
    replacements (``mhd.check_provide_bundle``). A plain standalone create or update is neither a transaction
    nor an ITI-65 submission: its resource is written as sent (the access checks apply all the same)."""
    for e in entries:
        with at(e):
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
                    with at(e):
                        found[key] = conditional.search_general(ctx, crit, where, policy_of(e))
            try:
                with ctx.store.unit() as unit:
                    _execute(ctx, unit, entries, found, prevalidated, transaction_rules)
                return
            except ConcurrentWrite as exc:
                if attempt == ATTEMPTS - 1:
                    raise conflict(f"The transaction collided with concurrent writes ({exc}); retry") from exc


def _check_standalone(method: str, type_: str, id_: str | None, resource: Resource) -> None:
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
           resource: Resource | None = None, if_match: int | None = None,
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
        run(ctx, [entry], transaction_rules=query is not None or if_none_exist is not None
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
