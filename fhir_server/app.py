"""The ASGI application: routes, error mapping, and the lifespan of the server context."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from elasticsearch import ApiError, TransportError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .api.cors import cors_middleware
from .api.encoding import RequestDecodingMiddleware, ResponseCompressionMiddleware
from .api.headers import NoSniffMiddleware
from .api.health import health_routes
from .api.limits import RequestLimitsMiddleware
from .api.negotiation import NegotiationMiddleware, versions
from .api.responses import error_response, exception_response
from .api.routes import build_routes, endpoint
from .audit import search as audit_search
from .audit.middleware import AuditMiddleware
from .audit.writer import AuditWriter
from .context import ServerContext
from .errors import FHIRError
from .observability.logs import install_record_factory
from .observability.middleware import RequestContextMiddleware
from .security.authn import AuthenticationMiddleware, build_verifier, smart_configuration
from .settings import Settings


async def _failure(request: Request, exc: Exception) -> Response:
    """Whatever escapes a route (routing refusals, errors outside ``routes.endpoint``): the API layer's one
    mapping of exceptions to answers."""
    return exception_response(request, exc)


def create_app(build_context: Callable[[], ServerContext], settings: Settings | None = None) -> Starlette:
    """``build_context`` runs at startup, so importing the app never touches the store or ES.

    ``settings`` enables authentication when ``auth`` is ``jwt`` (see :mod:`fhir_server.security.authn`).
    """
    settings = settings or Settings(auth="off")
    audit_search.plug_in()  # AuditEvent is read and searched in the audit table (registry.ResourceType.store)
    verifier = build_verifier(settings)
    install_record_factory()  # every log line of a request carries its id

    async def smart_config(request: Request) -> Response:
        if settings.auth == "off":
            return error_response(FHIRError(404, "not-found", "Authentication is off on this server"))
        return JSONResponse(smart_configuration(settings))

    audit_box: list[AuditWriter | None] = [None]  # set by the lifespan, read by the audit middleware

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ctx = build_context()
        app.state.ctx = ctx
        writer = AuditWriter(ctx.store, settings.audit_journal, sync=settings.audit_sync,
                             applier=settings.audit_applier, linger_s=settings.audit_linger_s) \
            if settings.audit_enabled else None
        if writer is not None:
            writer.start()
        app.state.audit = audit_box[0] = ctx.audit = writer
        try:
            yield
        finally:
            if writer is not None:
                writer.stop()
            ctx.close()

    smart_routes = [Route(path, smart_config, methods=["GET"])
                    for path in ("/fhir/.well-known/smart-configuration", "/.well-known/smart-configuration")]
    # before /fhir/{type}, which would take "$versions" for a type
    versions_route = Route("/fhir/$versions", endpoint(versions), methods=["GET"])
    app = Starlette(
        routes=[*health_routes(), *smart_routes, versions_route, *build_routes()],
        # outermost first: the request id first of all (every answer and log line has one); CORS answers
        # preflights before authentication and decorates every inner answer
        middleware=[Middleware(RequestContextMiddleware),
                    *cors_middleware(settings),
                    Middleware(NoSniffMiddleware),
                    Middleware(ResponseCompressionMiddleware, minimum_size=settings.gzip_min_bytes),
                    Middleware(NegotiationMiddleware),
                    Middleware(AuditMiddleware, writer_of=lambda: audit_box[0],
                               mode=settings.audit_mode),
                    Middleware(RequestLimitsMiddleware, max_url_bytes=settings.max_url_bytes,
                               max_query_params=settings.max_query_params),
                    Middleware(AuthenticationMiddleware, verifier=verifier),
                    # after authentication: nothing is inflated for an unauthenticated caller
                    Middleware(RequestDecodingMiddleware, max_body_bytes=settings.max_body_bytes)],
        lifespan=lifespan,
        exception_handlers={
            HTTPException: _failure,
            FHIRError: _failure,
            TransportError: _failure,
            ApiError: _failure,
            Exception: _failure,
        },
    )
    app.state.settings = settings  # /metrics reads its token
    return app
