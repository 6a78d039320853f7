"""Authorisation checks the HTTP adapters apply, from the principal set by the authentication middleware.

With authentication off there is no principal and every check passes. Searches (chains, ``_has``,
``_list``, ``_include``/``_revinclude`` included) are filtered by :class:`.policy.AccessPolicy`; history
at every level keeps only the versions the principal may see; each batch or transaction entry is
authorised like the equivalent standalone request (:class:`BundleAccess`).

Consent: :func:`prepare` runs first on every request and gives a user-context principal an empty
:class:`.tokens.OppositionSlot`; the routes enter the thread pool through :func:`run`, whose first hop
fills it (the look-up rides on the interaction's own hop, no hop of its own) before anything else runs
there. A check that would need the oppositions before that raises (``policy.ConsentNotResolved``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, ParamSpec, Protocol, TypeVar

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from fhir_common.types import Resource, SearchParams
from fhir_server.errors import FHIRError, not_found
from fhir_server.result import Result
from fhir_server.storage import governing_version

from .binary_access import binary_visible, security_context
from .consent import opposing_patients, require_identified
from .policy import AccessPolicy, mandatory_params, may_write, visible
from .tokens import OppositionSlot, Principal

if TYPE_CHECKING:
    from fhir_server.context import ServerContext
    from fhir_server.storage import StoredVersion


def principal_of(request: Request) -> Principal | None:
    principal: Principal | None = getattr(request.state, "principal", None)
    return principal


def _forbidden(msg: str) -> FHIRError:
    return FHIRError(403, "forbidden", msg)


P = ParamSpec("P")
T = TypeVar("T")


class Searcher(Protocol):
    """A type search run under a policy (``interactions.search.search``)."""

    def __call__(self, ctx: ServerContext, type_: str, params: SearchParams, /, *,
                 policy: AccessPolicy | None = None) -> Result: ...


def prepare(request: Request) -> None:
    """Before any check of the request: a user-context principal gets this request's own, empty, opposition
    slot (no I/O here; :func:`run` fills it on the request's first thread-pool hop); 403 when its token does
    not identify the professional (no ``fhirUser`` or ``identifier``): oppositions could not be applied."""
    principal = principal_of(request)
    if principal is None or principal.oppositions is not None or not any(
            g.context == "user" for g in principal.scopes.grants):
        return
    ctx: ServerContext = request.app.state.ctx
    require_identified(principal, ctx.base_url)
    request.state.principal = dataclasses.replace(principal, oppositions=OppositionSlot())


def resolve(ctx: ServerContext, principal: Principal | None) -> None:
    """Fill the request's opposition slot if it is still empty (store reads: in a worker thread).

    Called at the start of the request's first hop, so a Consent whose write returned 2xx before this
    request began is seen (the store's Consent marker is read now, on this process or any other)."""
    slot = principal.oppositions if principal is not None else None
    if principal is not None and slot is not None and slot.patients is None:
        slot.patients = opposing_patients(ctx, principal)


async def run(request: Request, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in the thread pool, the request's Consent look-up first in the same hop.

    Every route enters the thread pool through this, so the first hop resolves the oppositions and the
    later ones (and the event loop, after the first) find them resolved: one hop per interaction, as for
    a system token, instead of a hop for the look-up and another for the work."""
    principal = principal_of(request)
    if principal is None or principal.oppositions is None or principal.oppositions.patients is not None:
        return await run_in_threadpool(fn, *args, **kwargs)
    ctx: ServerContext = request.app.state.ctx

    def looked_up() -> T:
        resolve(ctx, principal)
        return fn(*args, **kwargs)

    return await run_in_threadpool(looked_up)


def require(principal: Principal | None, resource_type: str, interaction: str) -> None:
    """403 unless a scope grants ``interaction`` on ``resource_type`` (and, for Consent, the context may write it)."""
    if principal is not None and not principal.scopes.allows(resource_type, interaction):
        raise _forbidden(f"The token's scopes do not grant {interaction} on {resource_type}")
    if principal is not None and not may_write(principal, resource_type, interaction):
        raise _forbidden("Consent is written by the patient (patient context) or a backend (system context) only")


def require_any(principal: Principal | None, interaction: str) -> None:
    """403 unless some scope grants ``interaction`` on some type (system history: filtered per version)."""
    if principal is not None and not any(principal.scopes.contexts_for(g.resource_type, interaction)
                                         for g in principal.scopes.grants):
        raise _forbidden(f"The token's scopes do not grant {interaction} on any type")


def is_system(principal: Principal | None, resource_type: str, interaction: str) -> bool:
    return principal is None or principal.scopes.contexts_for(resource_type, interaction) == {"system"}


def check_visible(principal: Principal | None, resource_type: str, resource: Resource | bytes | None,
                  interaction: str = "read") -> None:
    """404 (not 403: existence is not revealed) when the principal may not see ``resource`` (not a Binary).

    A principal whose only context for the type is ``system`` sees all of it: the stored bytes are not
    even parsed."""
    if principal is None or resource is None or is_system(principal, resource_type, interaction):
        return
    data = orjson.loads(resource) if isinstance(resource, bytes) else resource
    if not visible(principal, data, interaction):
        raise not_found(f"{resource_type}/{data.get('id')} is not known")


def check_stored(ctx: ServerContext, principal: Principal | None, resource_type: str,
                 resource: Resource | bytes | None, interaction: str = "read") -> None:
    """:func:`check_visible`, where a Binary follows its DocumentReference (look-ups: in a worker thread,
    inside the interaction's own hop)."""
    if principal is None or resource is None or is_system(principal, resource_type, interaction):
        return
    if resource_type != "Binary":
        check_visible(principal, resource_type, resource, interaction)
        return
    data = orjson.loads(resource) if isinstance(resource, bytes) else resource
    if not binary_visible(ctx, principal, data, interaction):
        raise not_found(f"Binary/{data.get('id')} is not known")


def search_params(principal: Principal | None, resource_type: str,
                  params: SearchParams) -> SearchParams:
    """The client's parameters ANDed with the policy's mandatory ones."""
    if principal is None:
        return params
    mandatory = mandatory_params(principal, resource_type)
    if mandatory is None:
        raise _forbidden(f"The token's scopes do not grant search on {resource_type}")
    return params + mandatory


def _sees(ctx: ServerContext, principal: Principal, resource_type: str, resource: Resource,
          interaction: str) -> bool:
    """:func:`.policy.visible`, where a Binary follows its DocumentReference (look-ups: call off the event loop)."""
    if resource_type == "Binary":
        return binary_visible(ctx, principal, resource, interaction)
    return visible(principal, resource, interaction)


def search_policy(principal: Principal | None) -> AccessPolicy | None:
    """What the search executor ANDs to its inner queries and includes (None: no authentication)."""
    return None if principal is None else AccessPolicy(principal)


def keeps_binding(ctx: ServerContext, binary: Resource) -> bool:
    """Whether writing ``binary`` leaves a stored Binary bound where it was (its ``securityContext``, or for a
    deleted one, that of its last content); a new id keeps nothing and passes.

    The server binds a Binary to the document that brought it (``mhd.bind_binaries``, ``bind_stored``); a
    caller who may read it today must not move it to a document of their own (by PUT, by re-sending it
    without ``securityContext`` next to such a document, or by deleting and re-creating it), or the content
    would stay readable to them once the original document is masked or its patient opposes them. Only a
    caller who sees every Binary (``system``) may rebind one. Reads the store's committed state: a
    transaction changes a resource once, so the unit holds nothing newer for this id."""
    id_ = binary.get("id")
    stored = governing_version(ctx.store.read("Binary", id_), ctx.store.vread) if isinstance(id_, str) else None
    if stored is None:
        return True
    return security_context(binary, ctx.base_url) == security_context(stored.resource(), ctx.base_url)


def check_governing(ctx: ServerContext, principal: Principal | None, resource_type: str, id_: str,
                    interaction: str) -> None:
    """Before serving any version of a resource (vread, instance history, a deleted resource's 410): 404
    unless the caller may see its governing version (``storage.governing_version``), so a resource hidden now
    shows none of its versions, not even that it was deleted. An unknown resource passes (the interaction
    answers 404 itself, with the same message). In a worker thread (store reads, a Binary's look-ups)."""
    if principal is None or is_system(principal, resource_type, interaction):
        return
    current = ctx.store.read(resource_type, id_)
    if current is None:
        return
    governing = governing_version(current, ctx.store.vread)
    if governing is None:  # no version with content: nothing the caller could be shown
        raise not_found(f"{resource_type}/{id_} is not known")
    check_stored(ctx, principal, resource_type, governing.content, interaction)


def filter_history(principal: Principal | None, result: Result) -> Result:
    """Drop history entries whose version the principal may not see (e.g. a version masked at the time).

    The resource's governing version is checked first (:func:`check_governing`); this drops the versions
    that were hidden then and are visible now."""
    if principal is None or result.body is None:
        return result
    entries = result.body.get("entry", [])
    kept = [e for e in entries if "resource" not in e or visible(principal, e["resource"], "history-instance")]
    if len(kept) != len(entries):
        result.body.pop("total", None)  # a total would count what was withheld
    result.body["entry"] = kept
    return result


def filter_history_stored(ctx: ServerContext, principal: Principal | None, resource_type: str,
                          result: Result) -> Result:
    """:func:`filter_history`, where each Binary version follows its DocumentReference (or securityContext);
    in a worker thread (a Binary's look-ups), inside the history interaction's own hop.

    The current version is not enough: a deleted Binary's earlier versions still hold the content.
    """
    if principal is None or result.body is None or resource_type != "Binary":
        return filter_history(principal, result)
    if is_system(principal, resource_type, "history-instance"):
        return result
    entries = result.body.get("entry", [])
    versions = [e for e in entries if "resource" in e and binary_visible(ctx, principal, e["resource"],
                                                                         "history-instance")]
    if not versions:  # not even its deletions: the id itself is not revealed
        raise not_found("This Binary is not known")
    kept = [e for e in entries if "resource" not in e or any(e is v for v in versions)]
    result.body.pop("total", None)
    result.body["entry"] = kept
    return result


VersionKey = tuple[str, str, int]  # (type, id, version)
ResourceKey = tuple[str, str]  # (type, id)


def _currents(ctx: ServerContext, batch: Sequence[StoredVersion]) -> dict[ResourceKey, StoredVersion]:
    """The current versions of the batch's distinct resources: one store read per type in the batch."""
    ids: dict[str, set[str]] = {}
    for v in batch:
        ids.setdefault(v.type, set()).add(v.id)
    return {(type_, id_): current for type_, wanted in sorted(ids.items())
            for id_, current in ctx.store.read_many(type_, sorted(wanted)).items()}


def _predecessors(ctx: ServerContext, batch: Sequence[StoredVersion],
                  currents: dict[ResourceKey, StoredVersion]) -> dict[VersionKey, StoredVersion]:
    """The versions the deletions of ``batch`` and of the current versions deleted, taken from the batch
    itself when it holds them (a deletion soon after its update, the common case in a page of recent
    history), read from the store otherwise (once per distinct version: the store has no multi-version
    read yet). The store never stores two deletions in a row, so a deletion's predecessor has content."""
    wanted = {(v.type, v.id, v.version - 1) for v in (*batch, *currents.values())
              if (v.deleted or v.content is None) and v.version > 1}
    if not wanted:
        return {}
    found = {key: v for v in (*batch, *currents.values()) if (key := (v.type, v.id, v.version)) in wanted}
    for type_, id_, number in sorted(wanted - found.keys()):
        previous = ctx.store.vread(type_, id_, number)
        if previous is not None:
            found[(type_, id_, number)] = previous
    return found


def history_keep(ctx: ServerContext, principal: Principal | None, resource_type: str | None,
                 interaction: str) -> Callable[[Sequence[StoredVersion]], Iterator[bool]] | None:
    """Which versions of a type or system history the principal may see (None: all, no filtering), as a
    batch filter (``history.Keep``): the store reads once per batch (the current versions of its resources,
    one read per type, and the versions deletions deleted), then one decision per version, lazily (the
    page may fill before the batch ends).

    A version is shown only if the resource's governing version (``storage.governing_version``: the current
    one, or the last before its deletion) is visible AND the version itself is: a resource hidden now
    shows none of its versions, as read, vread and instance history answer 404 for it. A deletion has no
    content: it stands for the version it deleted, so an id the principal may not see never appears, not
    even as a deletion. A Binary follows its DocumentReference."""
    if principal is None or is_system(principal, resource_type or "*", interaction):
        return None

    def keep(batch: Sequence[StoredVersion]) -> Iterator[bool]:
        currents = _currents(ctx, batch)
        previous = _predecessors(ctx, batch, currents)
        decided: dict[VersionKey, bool] = {}  # a version's verdict, once (a Binary's costs a search)

        def content_of(version: StoredVersion | None) -> StoredVersion | None:
            if version is not None and (version.deleted or version.content is None):
                return previous.get((version.type, version.id, version.version - 1))
            return version

        def sees(version: StoredVersion | None) -> bool:
            if version is None or version.deleted or version.content is None:
                return False
            key = (version.type, version.id, version.version)
            if key not in decided:
                decided[key] = _sees(ctx, principal, version.type, version.resource(), interaction)
            return decided[key]

        for version in batch:
            governing = content_of(currents.get((version.type, version.id)))
            yield sees(governing) and sees(content_of(version))

    return keep


class BundleAccess:
    """The principal's policy for every write and every Bundle entry (``bundle.EntryAccess``): one object,
    so a standalone request and the same request as a Bundle entry are decided by the same code.

    Scopes are checked before the entry runs (403); everything about stored resources is asked by the
    write path inside its store unit: a resource the principal may not see is never changed, matched,
    referenced, reported or re-created, and answers exactly as an unknown id. What the principal writes
    must stay visible to it (403); searches carry the policy's parameters and clauses."""

    def __init__(self, ctx: ServerContext, principal: Principal, search: Searcher | None = None) -> None:
        self.ctx = ctx
        self.principal = principal
        self._search = search
        #: what a search run for the caller ANDs to its queries, inner ones included: a GET entry's search, and
        #: the chains, ``_has`` and ``_list`` of conditional criteria (``conditional.search_general``)
        self.policy = AccessPolicy(principal)

    def authorize(self, type_: str, interaction: str, id_: str | None, vid: str | None,
                  resource: Resource | None) -> None:
        require(self.principal, type_, interaction)
        if interaction == "search-type" and mandatory_params(self.principal, type_) is None:
            raise _forbidden(f"The token's scopes do not grant search on {type_}")

    def sees(self, type_: str, resource: Resource, interaction: str,
             read: Callable[[str, str], StoredVersion | None]) -> bool:
        if type_ == "Binary":
            return binary_visible(self.ctx, self.principal, resource, interaction, read)
        return visible(self.principal, resource, interaction)

    def may_write(self, type_: str, resource: Resource, interaction: str) -> bool:
        if type_ == "Binary" and not self.chooses_ids(type_) and not keeps_binding(self.ctx, resource):
            return False
        return visible(self.principal, resource, interaction)

    def chooses_ids(self, type_: str) -> bool:
        return is_system(self.principal, type_, "update")

    def guard(self, interaction: str) -> Callable[[Resource], bool]:
        return lambda resource: visible(self.principal, resource, interaction)

    def search(self, type_: str, params: SearchParams) -> Result:
        if self._search is None:
            raise FHIRError(500, "exception", "No search was given to this access object")
        return self._search(self.ctx, type_, search_params(self.principal, type_, params), policy=self.policy)


def access(ctx: ServerContext, principal: Principal | None, search: Searcher) -> BundleAccess | None:
    """The access object every write and Bundle entry of the request is decided by (None: no authentication).

    ``search``: the type search (``interactions.search.search``), passed in by the HTTP layer: security sits
    below the interactions and never imports them."""
    return None if principal is None else BundleAccess(ctx, principal, search)
