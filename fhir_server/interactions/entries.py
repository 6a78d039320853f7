"""Bundle entries: what ``Bundle.entry[n].request`` asks for, parsed and checked, and its outcome.

Errors raised while an entry runs are relocated here to name it (``Bundle.entry[n]``, FHIRPaths under
``Bundle.entry[n].resource``); a standalone request keeps the plain error (``__cause__``). The access
protocol (:class:`EntryAccess`) is declared here so the engine stays free of security: the HTTP layer
passes one in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

from fhir_common.types import Resource, SearchParams
from fhir_server.context import ServerContext
from fhir_server.errors import FHIRError, Issue, bad_request, not_found
from fhir_server.registry import served_type
from fhir_server.storage import StoredVersion, UniqueKeyViolation, VersionConflict, version_number

from . import conditional, crud
from .ids import new_id
from .result import Result

#: processing order (http.html#trules): DELETE, then POST, then PUT/PATCH, then GET/HEAD
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
#: a read or vread url: Type/id[/_history/vid]
LITERAL = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?$")

#: reads one resource as the check needs it: the store's committed state, or a write unit's own view
Reader = Callable[[str, str], StoredVersion | None]


class EntryAccess(Protocol):
    """The caller's access policy, applied to each entry as to the equivalent standalone request.

    The HTTP layer passes one in (``security.authz.BundleAccess``), so the interactions stay free of security.
    Every write, standalone or in a Bundle, runs through the engine (:mod:`.transaction`), which asks it about
    each stored resource the write would change, match or reference, inside the store unit: a resource it may
    not see is treated exactly as one that does not exist."""

    def authorize(self, type_: str, interaction: str, id_: str | None, vid: str | None,
                  resource: Resource | None) -> None:
        """Before the entry runs: 403 without a scope for the type and interaction."""

    def sees(self, type_: str, resource: Resource, interaction: str, read: Reader) -> bool:
        """Whether the caller may see this stored resource (``read``: for a Binary's ``securityContext``)."""

    def may_write(self, type_: str, resource: Resource, interaction: str) -> bool:
        """Whether content the caller writes stays within what it may see."""

    def chooses_ids(self, type_: str) -> bool:
        """Whether the caller may create with an id of its choice (update-as-create): only a caller who sees
        every resource of the type, else "hidden" and "unknown" would answer differently."""

    def guard(self, interaction: str) -> Callable[[Resource], bool]:
        """Whether a stored resource (not a Binary) may be seen: :meth:`sees` without a reader."""

    def search(self, type_: str, params: SearchParams) -> Result:
        """A GET search entry, filtered like the caller's own search."""

    @property
    def policy(self) -> Any:
        """The caller's ``AccessPolicy``: conditional criteria (their chains, ``_has``, ``_list``) run under it."""


def policy_of(entry: Entry) -> Any:
    """The policy a search run for ``entry`` carries (None: unrestricted)."""
    return None if entry.access is None else entry.access.policy


#: the interaction of a write method, as scopes and policies name it
INTERACTION = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class Prevalidated:
    """An entry validated before the store unit (``transaction.run`` pre-validates when ids are known)."""

    resource: Resource  # its resource with references rewritten, as the unit writes it when the ids agree
    body: Resource  # what was validated: that resource with its id
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
    resource: Resource | None = None
    if_match: int | None = None
    if_none_exist: str | None = None
    # outcome
    target: str | None = None  # resolved logical id
    status: int = 0
    stored: StoredVersion | None = None
    body: Resource | None = None
    issues: list[Issue] = field(default_factory=list)
    original: Resource | None = None  # the resource as sent (each attempt rewrites from it)
    new_id: str = field(default_factory=new_id)  # stable across retries
    validated: Prevalidated | None = None  # content validated outside the store unit
    # the caller's access policy (None: unrestricted): what it may not see never matches, nor is changed
    access: EntryAccess | None = None
    deferred_read: bool = False  # a read of a type held outside the resource store: answered after commit

    def __post_init__(self) -> None:
        if self.original is None:
            self.original = self.resource

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"

    def reset(self) -> None:
        self.target, self.status, self.stored, self.body, self.issues = None, 0, None, None, []
        self.deferred_read = False
        self.resource = self.original


def located(err: FHIRError, entry: Entry) -> FHIRError:
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
def at(entry: Entry) -> Iterator[None]:
    """Errors raised inside name the entry; the plain error stays available as ``__cause__``."""
    try:
        yield
    except FHIRError as err:
        raise located(err, entry) from err
    except UniqueKeyViolation as exc:
        plain = crud.unique_conflict(exc, show_holder=entry.access is None)
        raise located(plain, entry) from plain
    except VersionConflict as exc:
        plain = FHIRError(412, "conflict", f"If-Match names version {entry.if_match} but the current "
                          f"version is {exc.current}", ("If-Match",))
        raise located(plain, entry) from plain


def _etag_version(raw: Any, where: str) -> int | None:
    if raw is None:
        return None
    number = version_number(str(raw).strip().removeprefix("W/").strip('"'))
    if number is None:
        raise bad_request(f"ifMatch must be a version ETag like W/\"3\", got '{raw}'", where)
    return number


def relative(ctx: ServerContext, url: str) -> str:
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
    if method not in ORDER or not isinstance(url, str) or not url:
        raise bad_request(f"{where}.request needs a method (GET, HEAD, POST, PUT, PATCH, DELETE) and a url",
                          f"{where}.request")
    rel = relative(ctx, url)
    path, _, query = rel.partition("?")
    segments = path.split("/") if path else []
    entry = Entry(index, method, url, segments[0] if segments else "", query=query or None,
                  full_url=raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None)
    resource = raw.get("resource")
    if resource is not None and not isinstance(resource, dict):
        raise bad_request(f"{where}.resource is not a resource", f"{where}.resource")
    entry.resource = entry.original = resource
    with at(entry):
        entry.if_match = _etag_version(request.get("ifMatch"), "If-Match")
    if isinstance(request.get("ifNoneExist"), str):  # [base]/Type?q, Type?q and q all mean q
        entry.if_none_exist = conditional.if_none_exist_query(request["ifNoneExist"], entry.type, ctx.base_url,
                                                              f"{where}.request.ifNoneExist")
    if method in ("GET", "HEAD"):
        return entry  # any read or search URL; checked when it runs
    if served_type(entry.type, ctx.settings) is None:
        raise not_found(f"{where}: resource type '{entry.type}' is not supported by this server",
                        f"{where}.request.url")
    if method == "POST" and query:  # http.html#create: POST [base]/[type]; criteria go in ifNoneExist
        criteria = sorted({k for k, _ in parse_qsl(query, keep_blank_values=True)} - {"_format", "_pretty"})
        if criteria:
            raise bad_request(f"{where}: a create takes no search parameters ({', '.join(criteria)}); a conditional "
                              "create names its criteria in request.ifNoneExist", f"{where}.request.url")
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


def parse_bundle(ctx: ServerContext, bundle: Resource) -> tuple[str, list[Entry]]:
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
