"""Batch and transaction Bundles (http.html#transaction, http.html#batch): the request Bundle in, the
response Bundle out.

A transaction is one unit of :mod:`.transaction` (all entries or none); a batch runs each entry as its own
one-entry transaction and reports each outcome separately. Reads and searches asked by GET entries are
answered after commit, so they see the Bundle's writes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fhir_common.types import Resource
from fhir_server.context import ServerContext
from fhir_server.errors import FHIRError, Issue, not_found, operation_outcome
from fhir_server.registry import store_of
from fhir_server.storage import StoredVersion, format_instant, now_us

from . import crud, search
from .entries import Entry, EntryAccess, parse_bundle, parse_entry
from .result import Result
from .transaction import run, single

__all__ = ["Entry", "EntryAccess", "batch", "parse_entry", "process", "single", "transaction"]

_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


def _deferred_read(ctx: ServerContext, entry: Entry) -> StoredVersion:
    """A read or vread entry of a type held outside the resource store (AuditEvent), from its plugged-in
    store, checked by the caller's policy as the standalone read is."""
    store = store_of(entry.type)
    assert entry.target is not None and store is not None
    principal = getattr(entry.access, "principal", None)  # the caller's view applies in the store's own query
    if entry.access is not None and principal is None:  # an access policy with no principal: never guess
        raise not_found(f"{entry.type}/{entry.target} is not known")
    result = store.read(ctx, entry.target, principal) if entry.vid is None else \
        store.vread(ctx, entry.target, entry.vid, principal)
    assert result.version is not None
    if entry.access is not None and not entry.access.guard("read")(result.version.resource()):
        raise not_found(f"{entry.type}/{entry.target} is not known")
    return result.version


def _response_entry(ctx: ServerContext, entry: Entry, prefer_return: str) -> dict[str, Any]:
    if entry.deferred_read and entry.status == 200:
        try:
            entry.stored = _deferred_read(ctx, entry)
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


def _bundle(kind: str, entries: list[dict[str, Any]]) -> Resource:
    return {"resourceType": "Bundle", "type": kind, "meta": {"lastUpdated": format_instant(now_us())},
            "entry": entries}


def transaction(ctx: ServerContext, entries: list[Entry], prefer_return: str) -> Result:
    run(ctx, entries)
    ctx.indexer.notify()
    return Result(200, _bundle("transaction-response", [_response_entry(ctx, e, prefer_return) for e in entries]))


def batch(ctx: ServerContext, entries: list[Entry], prefer_return: str) -> Result:
    out = []
    for e in entries:
        if e.status:  # failed to parse
            out.append({"response": {"status": str(e.status), "outcome": e.body}})
            continue
        try:
            run(ctx, [e])
            ctx.indexer.notify()
            out.append(_response_entry(ctx, e, prefer_return))
        except FHIRError as err:
            out.append({"response": {"status": str(err.status), "outcome": err.outcome()}})
    return Result(200, _bundle("batch-response", out))


def process(ctx: ServerContext, bundle: Resource, prefer_return: str | None = None,
            access: EntryAccess | None = None) -> Result:
    """POST [base] with a batch or transaction Bundle; ``access``: the caller's policy for each entry."""
    kind, entries = parse_bundle(ctx, bundle)
    for e in entries:
        e.access = access
    if kind == "transaction" and (bundle.get("meta") or {}).get("profile"):
        crud.validate_resource(bundle, ctx.settings)  # e.g. the PDSm provide-bundle profile (closed entry slicing)
    mode = (prefer_return or "representation").lower()
    return transaction(ctx, entries, mode) if kind == "transaction" else batch(ctx, entries, mode)

