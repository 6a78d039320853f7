"""The REST routes of http.html, each a thin adapter: HTTP in → interaction → HTTP out.

Interactions are synchronous (SQLAlchemy, the ES client) and run in the
thread pool; the event loop only parses and serialises.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

from elasticsearch import ApiError, TransportError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhir_server.context import ServerContext
from fhir_server.errors import FHIRError, bad_request, not_found
from fhir_server.interactions import capabilities, crud, history, search
from fhir_server.interactions.result import Result
from fhir_server.registry import get_type
from fhir_server.security import authz

from .content import read_resource, response_format
from .responses import error_response, es_error_response, prefer, result_response

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]


def _ctx(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


def _pretty(request: Request) -> bool:
    return request.query_params.get("_pretty", "").lower() == "true"


def _type(request: Request, interaction: str) -> str:
    name = request.path_params["type"]
    rt = get_type(name)
    if rt is None:
        raise not_found(f"Resource type '{name}' is not supported by this server")
    if not rt.supports(interaction):
        raise FHIRError(405, "not-supported", f"{interaction} is not supported for {name}")
    authz.require(authz.principal_of(request), name, interaction)
    return name


async def _check_current(request: Request, type_: str, interaction: str) -> None:
    """Before changing a resource: the caller must be able to see its current version."""
    principal = authz.principal_of(request)
    if principal is None:
        return
    current = await run_in_threadpool(_ctx(request).store.read, type_, request.path_params["id"])
    if current is not None and not current.deleted:
        authz.check_visible(principal, type_, current.content, interaction)


def _if_match(request: Request) -> int | None:
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    value = raw.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if not value.isdigit():
        raise bad_request(f"If-Match must be a version ETag like W/\"3\", got '{raw}'", "If-Match")
    return int(value)


def endpoint(fn: Callable[[Request], Awaitable[Result]], *, write: bool = False) -> Handler:
    """Wrap an interaction adapter with content negotiation and error mapping."""

    async def handle(request: Request) -> Response:
        pretty = _pretty(request)
        try:
            response_format(request)
            result = await fn(request)
        except FHIRError as err:
            return error_response(err, pretty)
        except (TransportError, ApiError) as exc:
            return es_error_response(request, exc)
        except Exception:  # answered here, not re-raised: the connection stays usable
            log.exception("unexpected error on %s %s", request.method, request.url)
            return error_response(FHIRError(500, "exception", "Internal server error"), pretty)
        ctx = _ctx(request)
        return result_response(result, base_url=ctx.base_url, prefer_return=prefer(request.headers.get("prefer"))
                               .get("return"), pretty=pretty, write=write)

    return handle


def _params(request: Request) -> list[tuple[str, str]]:
    return list(request.query_params.multi_items())


async def _metadata(request: Request) -> Result:
    return await run_in_threadpool(capabilities.metadata, _ctx(request))


async def _create(request: Request) -> Result:
    type_ = _type(request, "create")
    resource = await read_resource(request, _ctx(request).settings.max_body_bytes)
    authz.check_writable(authz.principal_of(request), type_, resource, "create")
    return await run_in_threadpool(crud.create, _ctx(request), type_, resource)


async def _search_get(request: Request) -> Result:
    type_ = _type(request, "search-type")
    strict = prefer(request.headers.get("prefer")).get("handling") == "strict"
    params = authz.search_params(authz.principal_of(request), type_, _params(request))
    return await run_in_threadpool(search.search, _ctx(request), type_, params, strict=strict)


async def _search_post(request: Request) -> Result:
    type_ = _type(request, "search-type")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/x-www-form-urlencoded", ""):
        raise FHIRError(415, "not-supported", "POST _search takes application/x-www-form-urlencoded")
    body = (await request.body()).decode("utf-8", errors="replace")
    params = _params(request) + parse_qsl(body, keep_blank_values=True)
    params = authz.search_params(authz.principal_of(request), type_, params)
    strict = prefer(request.headers.get("prefer")).get("handling") == "strict"
    return await run_in_threadpool(search.search, _ctx(request), type_, params, strict=strict)


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
    result = await run_in_threadpool(crud.read, _ctx(request), type_, request.path_params["id"])
    authz.check_visible(authz.principal_of(request), type_, result.raw)
    if _not_modified(request, result):
        return Result(304, None, result.version)
    return result


async def _vread(request: Request) -> Result:
    type_ = _type(request, "vread")
    p = request.path_params
    result = await run_in_threadpool(crud.vread, _ctx(request), type_, p["id"], p["vid"])
    await _check_current(request, type_, "vread")
    authz.check_visible(authz.principal_of(request), type_, result.raw, "vread")
    return result


async def _update(request: Request) -> Result:
    type_ = _type(request, "update")
    if_match = _if_match(request)
    resource = await read_resource(request, _ctx(request).settings.max_body_bytes)
    await _check_current(request, type_, "update")
    authz.check_writable(authz.principal_of(request), type_, resource, "update")
    return await run_in_threadpool(crud.update, _ctx(request), type_, request.path_params["id"], resource, if_match)


async def _delete(request: Request) -> Result:
    type_ = _type(request, "delete")
    await _check_current(request, type_, "delete")
    return await run_in_threadpool(crud.delete, _ctx(request), type_, request.path_params["id"],
                                   _if_match(request))


def _history_params(request: Request) -> dict[str, str]:
    return dict(request.query_params)


async def _history_system(request: Request) -> Result:
    authz.require_system(authz.principal_of(request), "*", "history-system")
    return await run_in_threadpool(history.history, _ctx(request), None, None, _history_params(request))


async def _history_type(request: Request) -> Result:
    type_ = _type(request, "history-type")
    authz.require_system(authz.principal_of(request), type_, "history-type")
    return await run_in_threadpool(history.history, _ctx(request), type_, None, _history_params(request))


async def _history_instance(request: Request) -> Result:
    type_ = _type(request, "history-instance")
    await _check_current(request, type_, "history-instance")
    result = await run_in_threadpool(history.history, _ctx(request), type_, request.path_params["id"],
                                     _history_params(request))
    return authz.filter_history(authz.principal_of(request), result)


async def _bundle(request: Request) -> Result:
    authz.require_system(authz.principal_of(request), "*", "create")
    raise FHIRError(501, "not-supported", "Batch and transaction Bundles are not supported yet")


def _dispatch(table: dict[str, Handler]) -> Handler:
    async def handle(request: Request) -> Response:
        return await table[request.method](request)

    return handle


def build_routes() -> list[Any]:
    return [
        Route("/fhir/metadata", endpoint(_metadata), methods=["GET"]),
        Route("/fhir", endpoint(_bundle, write=True), methods=["POST"]),
        Route("/fhir/", endpoint(_bundle, write=True), methods=["POST"]),
        Route("/fhir/_history", endpoint(_history_system), methods=["GET"]),
        Route("/fhir/{type}", _dispatch({"GET": endpoint(_search_get), "POST": endpoint(_create, write=True)}),
              methods=["GET", "POST"]),
        Route("/fhir/{type}/_search", endpoint(_search_post), methods=["POST"]),
        Route("/fhir/{type}/_history", endpoint(_history_type), methods=["GET"]),
        Route("/fhir/{type}/{id}", _dispatch({"GET": endpoint(_read), "PUT": endpoint(_update, write=True),
                                              "DELETE": endpoint(_delete, write=True)}),
              methods=["GET", "PUT", "DELETE"]),
        Route("/fhir/{type}/{id}/_history", endpoint(_history_instance), methods=["GET"]),
        Route("/fhir/{type}/{id}/_history/{vid}", endpoint(_vread), methods=["GET"]),
    ]
