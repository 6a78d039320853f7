"""The REST routes of http.html, each a thin adapter: HTTP in → interaction → HTTP out.

Interactions are synchronous (SQLAlchemy, the ES client) and run in the
thread pool; the event loop only parses and serialises.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhir_common.types import Resource, SearchParams
from fhir_server.audit.middleware import note as audit_note
from fhir_server.context import ServerContext
from fhir_server.errors import FHIRError, bad_request, not_found, unprocessable
from fhir_server.formats import numbers
from fhir_server.interactions import (
    binary,
    bundle,
    capabilities,
    conditional,
    crud,
    everything,
    history,
    patch,
    search,
    transaction,
)
from fhir_server.interactions.result import Result
from fhir_server.registry import served_type, store_of
from fhir_server.security import authz
from fhir_server.storage.base import version_number
from profiles import conditional_references

from .content import (
    JSON_TYPES,
    XML_TYPES,
    media_of,
    parse_json,
    parse_resource,
    read_body,
    read_resource,
    response_format,
)
from .limits import check_bundle
from .responses import binary_response, exception_response, prefer, result_response

Handler = Callable[[Request], Awaitable[Response]]


def _ctx(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


def _pretty(request: Request) -> bool:
    return request.query_params.get("_pretty", "").lower() == "true"


def _type(request: Request, interaction: str) -> str:
    name: str = request.path_params["type"]
    rt = served_type(name, _ctx(request).settings)
    if rt is None:
        raise not_found(f"Resource type '{name}' is not supported by this server")
    if not rt.supports(interaction):
        raise FHIRError(405, "not-supported", f"{interaction} is not supported for {name}")
    authz.require(authz.principal_of(request), name, interaction)
    return name


def _if_match(request: Request) -> int | None:
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    value = raw.strip()
    if value.startswith("W/"):
        value = value[2:]
    version = version_number(value.strip('"'))
    if version is None:
        raise bad_request(f"If-Match must be a version ETag like W/\"3\", got '{raw}'", "If-Match")
    return version


def endpoint(fn: Callable[[Request], Awaitable[Result]], *, write: bool = False) -> Handler:
    """Wrap an interaction adapter with content negotiation and error mapping."""

    async def handle(request: Request) -> Response:
        pretty = _pretty(request)
        fmt = "json"
        try:
            fmt = response_format(request)
            authz.prepare(request)  # the slot for the caller's Consent oppositions, before any check
            result = await fn(request)
            # acted: a stored version was read or written (a no-op on an unknown or hidden id has none)
            audit_note(request.state, content=result.raw if result.raw is not None else result.body,
                       acted=result.version is not None)
        except Exception as exc:  # answered here, not re-raised: the connection stays usable
            return exception_response(request, exc, pretty, fmt)
        ctx = _ctx(request)
        respond = partial(result_response, result, base_url=ctx.base_url, pretty=pretty, write=write, fmt=fmt,
                          prefer_return=prefer(request.headers.get("prefer")).get("return"))
        # XML is written in Python, not by orjson: off the event loop
        return await run_in_threadpool(respond) if fmt == "xml" else respond()

    return handle


def _params(request: Request) -> SearchParams:
    return list(request.query_params.multi_items())


def _client(request: Request) -> str:
    """Who a search's point-in-time is charged to: the token's subject, else the peer address (behind a
    proxy, every anonymous client is one: the per-client cap then acts as a second global one)."""
    principal = authz.principal_of(request)
    if principal is not None:
        return f"sub:{principal.subject}"
    return f"ip:{request.client.host}" if request.client is not None else "ip:"


async def _metadata(request: Request) -> Result:
    return await run_in_threadpool(capabilities.metadata, _ctx(request))


async def _search_get(request: Request) -> Result:
    type_ = _type(request, "search-type")
    strict = prefer(request.headers.get("prefer")).get("handling") == "strict"
    principal = authz.principal_of(request)
    params = authz.search_params(principal, type_, _params(request))
    return await authz.run(request, search.search, _ctx(request), type_, params, strict=strict,
                           policy=authz.search_policy(principal), client=_client(request))


async def _search_post(request: Request) -> Result:
    type_ = _type(request, "search-type")
    ctype = _media(request)
    if ctype not in ("application/x-www-form-urlencoded", ""):
        raise FHIRError(415, "not-supported", "POST _search takes application/x-www-form-urlencoded")
    body = (await request.body()).decode("utf-8", errors="replace")
    audit_note(request.state, query="&".join(q for q in (request.url.query, body) if q))
    params = _params(request) + parse_qsl(body, keep_blank_values=True)
    principal = authz.principal_of(request)
    params = authz.search_params(principal, type_, params)
    strict = prefer(request.headers.get("prefer")).get("handling") == "strict"
    return await authz.run(request, search.search, _ctx(request), type_, params, strict=strict,
                           policy=authz.search_policy(principal), client=_client(request))


async def _everything(request: Request) -> Result:
    """Patient/[id]/$everything, GET or POST (a Parameters body): each type searched under the caller's policy."""
    # routed as [type]/[id]/$everything, so the audit trail records Patient/[id] as its target
    if _type(request, "search-type") != "Patient":
        raise not_found(f"$everything is an operation on Patient, not {request.path_params['type']}")
    params = _params(request)
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if request.method == "POST" and has_body:
        params += everything.parameters_of(await read_resource(request, _ctx(request).settings.max_body_bytes))
    principal = authz.principal_of(request)
    return await authz.run(request, everything.everything, _ctx(request), request.path_params["id"], params,
                           principal=principal, policy=authz.search_policy(principal), client=_client(request))


def _not_modified(request: Request, result: Result) -> bool:
    """Conditional read (http.html#cread): ``If-None-Match`` first, else ``If-Modified-Since``."""
    v = result.version
    if v is None:
        return False
    inm = request.headers.get("if-none-match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/").strip('"') for t in inm.split(",")}
        return "*" in tags or str(v.version) in tags
    ims = request.headers.get("if-modified-since")
    if ims is not None:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False  # an unparsable date is ignored, as RFC 9110 says
        return since.tzinfo is not None and v.last_updated.replace(microsecond=0) <= since
    return False


async def _read(request: Request) -> Result:
    type_ = _type(request, "read")
    ctx, principal, id_ = _ctx(request), authz.principal_of(request), request.path_params["id"]
    own = store_of(type_)  # a type held outside the resource store (AuditEvent): the caller's view applied there
    read = partial(own.read, principal=principal) if own is not None else partial(crud.read, type_=type_)

    def read_visible() -> Result:  # one hop: the read and its check (and the Consent look-up, authz.run)
        try:
            result = read(ctx, id_=id_)
        except FHIRError as err:
            if err.status == 410:  # deleted: a 410 would reveal a resource the caller may not see
                authz.check_governing(ctx, principal, type_, id_, "read")
            raise
        authz.check_stored(ctx, principal, type_, result.raw)
        return result

    result = await authz.run(request, read_visible)
    if _not_modified(request, result):
        return Result(304, None, result.version)
    return result


async def _vread(request: Request) -> Result:
    type_ = _type(request, "vread")
    p = request.path_params
    ctx, principal = _ctx(request), authz.principal_of(request)
    own = store_of(type_)
    vread = partial(own.vread, principal=principal) if own is not None else partial(crud.vread, type_=type_)

    def vread_visible() -> Result:  # one hop: the resource's visibility, then the version, checked too
        try:
            authz.check_governing(ctx, principal, type_, p["id"], "vread")  # before revealing any version
            result = vread(ctx, id_=p["id"], vid=p["vid"])
            authz.check_stored(ctx, principal, type_, result.raw, "vread")
        except FHIRError as err:
            if err.status != 404:
                raise
            # one answer for an unknown id, an unknown version and a hidden one
            raise not_found(f"{type_}/{p['id']}/_history/{p['vid']} is not known") from None
        return result

    return await authz.run(request, vread_visible)


def _access(request: Request) -> authz.BundleAccess | None:
    return authz.access(_ctx(request), authz.principal_of(request), search.search)


_ENTRY = "Bundle.entry[0]"


def _standalone(err: FHIRError, type_: str) -> FHIRError:
    """``err`` without the ``Bundle.entry[0]`` its one-entry transaction put in some expressions (URL criteria,
    conditional references): no Bundle was sent. The URL's criteria are named ``url``, the body ``Type``."""

    def plain(expr: str) -> str:
        if expr == f"{_ENTRY}.request.url":
            return "url"
        if expr == _ENTRY or expr.startswith(f"{_ENTRY}.resource"):
            return type_ + expr[len(f"{_ENTRY}.resource"):] if expr != _ENTRY else type_
        return expr

    if not any(e.startswith(_ENTRY) for e in err.expression):
        return err
    return FHIRError(err.status, err.code, err.diagnostics, tuple(plain(e) for e in err.expression),
                     err.headers, err.extra_issues)


async def _write(request: Request, method: str, type_: str, **kwargs: Any) -> Result:
    """Every write goes through the transaction path (``transaction.single``), its access checks included."""
    try:
        return await authz.run(request, transaction.single, _ctx(request), method, type_, access=_access(request),
                               **kwargs)
    except FHIRError as err:
        raise _standalone(err, type_) from None


def _no_conditional_references(resource: Resource) -> None:
    """A plain create or update resolves no conditional reference (only the transaction path does, which
    conditional create and update take): such a reference would be stored as a query. 422."""
    issues = conditional_references(resource)
    if issues:
        raise unprocessable(issues)


async def _update(request: Request) -> Result:
    type_ = _type(request, "update")
    if_match = _if_match(request)
    resource = await read_resource(request, _ctx(request).settings.max_body_bytes)
    _no_conditional_references(resource)
    return await _write(request, "PUT", type_, id_=request.path_params["id"], resource=resource, if_match=if_match)


async def _delete(request: Request) -> Result:
    type_ = _type(request, "delete")
    return await _write(request, "DELETE", type_, id_=request.path_params["id"], if_match=_if_match(request))


def _history_params(request: Request) -> dict[str, str]:
    return dict(request.query_params)


async def _history_system(request: Request) -> Result:
    principal = authz.principal_of(request)
    authz.require_any(principal, "history-system")
    keep = authz.history_keep(_ctx(request), principal, None, "history-system")  # only what the caller may see
    return await authz.run(request, history.history, _ctx(request), None, None, _history_params(request), keep)


async def _history_type(request: Request) -> Result:
    type_ = _type(request, "history-type")
    keep = authz.history_keep(_ctx(request), authz.principal_of(request), type_, "history-type")
    return await authz.run(request, history.history, _ctx(request), type_, None, _history_params(request), keep)


async def _history_instance(request: Request) -> Result:
    type_ = _type(request, "history-instance")
    ctx, principal, id_ = _ctx(request), authz.principal_of(request), request.path_params["id"]

    def visible_history() -> Result:  # one hop: the governing version checked, the history, its filter
        authz.check_governing(ctx, principal, type_, id_, "history-instance")
        result = history.history(ctx, type_, id_, _history_params(request))
        return authz.filter_history_stored(ctx, principal, type_, result)

    return await authz.run(request, visible_history)


async def _validate_op(request: Request) -> Result:
    """$validate on type or instance: 200 + OperationOutcome (interactions/validate.py)."""
    from fhir_server.interactions import validate as validate_op

    name = request.path_params["type"]
    served = served_type(name, _ctx(request).settings)
    if served is None and "id" not in request.path_params and validate_op.validatable(name):
        type_ = name  # e.g. an ITI-65 Bundle: validated, never stored, so no type registration needed
    else:
        type_ = _type(request, "read")
    body = None
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if request.method == "POST" and has_body:
        body = await read_resource(request, _ctx(request).settings.max_body_bytes)
    q = request.query_params
    access = _access(request)
    ctx = _ctx(request)
    # no verdict on what the caller may not see: a hidden instance answers as an unknown one
    sees = None if access is None else (lambda r: access.sees(type_, r, "read", ctx.store.read))
    return await authz.run(request, validate_op.validate, ctx, type_, request.path_params.get("id"), body,
                           q.get("profile"), q.get("mode"), sees)


async def _bundle(request: Request) -> Result:
    body = await read_resource(request, _ctx(request).settings.max_body_bytes)
    check_bundle(body, _ctx(request).settings)
    # each entry is authorised like its standalone request, by the same access object
    result = await authz.run(request, bundle.process, _ctx(request), body,
                             prefer(request.headers.get("prefer")).get("return"), _access(request))
    audit_note(request.state, bundle=(body, result.body or {}))
    return result


def _media(request: Request) -> str:
    return media_of(request.headers.get("content-type", ""))


def _criteria(request: Request, method: str, type_: str) -> str:
    """The URL criteria of a conditional update, delete or patch; 400 when the URL has none at all."""
    query = request.url.query
    if not query.strip():
        raise bad_request(f"{method} {type_} needs criteria ({method} {type_}?identifier=system|value) or an id "
                          f"({method} {type_}/[id])", "url")
    return query


async def _conditional_update(request: Request) -> Result:
    type_ = _type(request, "update")
    resource = await read_resource(request, _ctx(request).settings.max_body_bytes)
    return await _write(request, "PUT", type_, query=_criteria(request, "PUT", type_), resource=resource,
                        if_match=_if_match(request))


async def _conditional_delete(request: Request) -> Result:
    type_ = _type(request, "delete")
    return await _write(request, "DELETE", type_, query=_criteria(request, "DELETE", type_),
                        if_match=_if_match(request))


async def _patch_body(request: Request) -> Any:
    media = _media(request)
    if media in XML_TYPES:  # FHIRPath Patch Parameters in XML
        return await read_resource(request, _ctx(request).settings.max_body_bytes)
    if media not in patch.JSON_PATCH_TYPES and media not in ("application/fhir+json", "application/json"):
        raise FHIRError(415, "not-supported", "PATCH takes application/json-patch+json (JSON Patch) or "
                        "application/fhir+json (FHIRPath Patch Parameters)")
    return parse_json(await read_body(request, _ctx(request).settings.max_body_bytes))


async def _patch(request: Request) -> Result:
    type_ = _type(request, "patch")
    body = await _patch_body(request)
    id_ = request.path_params.get("id")
    query = None if id_ is not None else _criteria(request, "PATCH", type_)
    if isinstance(body, list) or _media(request) in patch.JSON_PATCH_TYPES:
        body = binary.make_binary("application/json-patch+json", numbers.dumps(body))
    return await _write(request, "PATCH", type_, id_=id_, query=query, resource=body, if_match=_if_match(request))


_XML_ROOT = re.compile(rb"^(?:\s|<\?.*?\?>|<!--.*?-->)*<\s*([A-Za-z_][\w.:-]*)([^>]*)>", re.S)


def _is_fhir_xml(body: bytes) -> bool:
    """A FHIR Binary resource in XML, as opposed to raw XML content (a CDA document) to store as-is."""
    m = _XML_ROOT.match(body[:4096])
    if m is None:
        return True  # not even XML: let the FHIR parser give its 400
    name = m.group(1).decode("ascii", "replace").rsplit(":", 1)[-1]
    return name == "Binary" and b"http://hl7.org/fhir" in m.group(2)


#: what a create URL may carry: how to answer, never what to create (http.html#create: ``POST [base]/[type]``)
_CREATE_PARAMETERS = {"_format", "_pretty"}


def _no_create_parameters(request: Request, type_: str) -> None:
    """400 for ``POST [base]/Type?identifier=...`` (a get-or-create style): ignoring the parameters would create
    a resource each time; a conditional create sends its criteria in ``If-None-Exist``."""
    names = sorted({name for name, _ in request.query_params.multi_items()} - _CREATE_PARAMETERS)
    if names:
        raise bad_request(f"POST {type_} takes no search parameters ({', '.join(names)}): a conditional create "
                          f"sends its criteria in the If-None-Exist header", *names)


async def _create_dispatch(request: Request) -> Result:
    """POST [type]: If-None-Exist makes it conditional; a Binary may come as raw bytes of any media type.

    Raw XML content (a CDA document posted as ``application/xml``) is stored as-is in a Binary: only a
    root ``Binary`` element in the FHIR namespace is read as a FHIR resource (binary.html).
    """
    type_ = _type(request, "create")
    _no_create_parameters(request, type_)
    media = _media(request)
    ctx = _ctx(request)
    raw_binary = False  # raw content (any media type) is created as-is: never a conditional create
    if type_ == "Binary" and media and media not in JSON_TYPES:
        raw = await read_body(request, ctx.settings.max_body_bytes)
        raw_binary = media not in XML_TYPES or not _is_fhir_xml(raw)
        resource = binary.make_binary(media, raw) if raw_binary else await parse_resource(media, raw)
    else:
        resource = await read_resource(request, ctx.settings.max_body_bytes)
    if_none_exist = None if raw_binary else request.headers.get("if-none-exist")
    if if_none_exist:  # [base]/Type?q (the HAPI client), Type?q and q all mean q
        if_none_exist = conditional.if_none_exist_query(if_none_exist, type_, ctx.base_url, "If-None-Exist")
    else:
        _no_conditional_references(resource)
    return await _write(request, "POST", type_, resource=resource, if_none_exist=if_none_exist or None)


async def _read_dispatch(request: Request) -> Response:
    """GET [type]/[id]: a Binary answers its raw bytes unless a FHIR format is asked (ITI-68)."""
    if request.path_params["type"] != "Binary" or binary.wants_fhir(request.query_params.get("_format"),
                                                                    request.headers.get("accept", "")):
        return await endpoint(_read)(request)
    try:
        authz.prepare(request)
        result = await _read(request)
    except FHIRError as err:
        return exception_response(request, err, fmt="json")
    return binary_response(result)


def _dispatch(table: dict[str, Handler]) -> Handler:
    async def handle(request: Request) -> Response:
        # Starlette routes HEAD wherever GET is allowed: answer it as the GET (the server drops the body)
        handler = table.get("GET" if request.method == "HEAD" else request.method)
        if handler is None:
            return exception_response(request, FHIRError(405, "not-supported", f"{request.method} is not allowed "
                                                         f"on {request.url.path}"))
        return await handler(request)

    return handle


async def _openapi(request: Request) -> Response:
    from .openapi import openapi_json

    ctx = _ctx(request)
    settings = ctx.settings
    return Response(openapi_json(ctx.search_parameters, ctx.base_url, auth=settings.auth != "off",
                                 audit=settings.audit_enabled), media_type="application/json")


def build_routes() -> list[Any]:
    return [
        Route("/openapi.json", _openapi, methods=["GET"]),
        Route("/fhir/metadata", endpoint(_metadata), methods=["GET"]),
        Route("/fhir", endpoint(_bundle), methods=["POST"]),
        Route("/fhir/", endpoint(_bundle), methods=["POST"]),
        Route("/fhir/_history", endpoint(_history_system), methods=["GET"]),
        Route("/fhir/{type}", _dispatch({"GET": endpoint(_search_get), "POST": endpoint(_create_dispatch, write=True),
                                         "PUT": endpoint(_conditional_update, write=True),
                                         "DELETE": endpoint(_conditional_delete, write=True),
                                         "PATCH": endpoint(_patch, write=True)}),
              methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        Route("/fhir/{type}/$validate", endpoint(_validate_op), methods=["POST"]),
        Route("/fhir/{type}/{id}/$validate", endpoint(_validate_op), methods=["GET", "POST"]),
        Route("/fhir/{type}/{id}/$everything", endpoint(_everything), methods=["GET", "POST"]),
        Route("/fhir/{type}/_search", endpoint(_search_post), methods=["POST"]),
        Route("/fhir/{type}/_history", endpoint(_history_type), methods=["GET"]),
        Route("/fhir/{type}/{id}", _dispatch({"GET": _read_dispatch, "PUT": endpoint(_update, write=True),
                                              "DELETE": endpoint(_delete, write=True),
                                              "PATCH": endpoint(_patch, write=True)}),
              methods=["GET", "PUT", "DELETE", "PATCH"]),
        Route("/fhir/{type}/{id}/_history", endpoint(_history_instance), methods=["GET"]),
        Route("/fhir/{type}/{id}/_history/{vid}", endpoint(_vread), methods=["GET"]),
    ]
