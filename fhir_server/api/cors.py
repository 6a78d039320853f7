"""CORS (fetch.spec.whatwg.org#http-cors-protocol), so that a browser app on another origin can call the server.

Off unless ``FHIR_CORS_ORIGINS`` lists origins. It wraps every other middleware: a preflight (``OPTIONS`` with
``Origin`` and ``Access-Control-Request-Method``) is answered before authentication, since browsers never send a
token on one, and the 401, 413 or 414 answers of the inner layers carry the CORS headers a page needs to read them.
Starlette's :class:`CORSMiddleware` does the protocol: for a listed origin it echoes that origin with
``Vary: Origin``; ``*`` is only used without credentials (a ``*`` with credentials is refused at start).
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from fhir_server.settings import Settings

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# What FHIR clients send beyond the CORS-safelisted ones (http.html: Prefer, conditional headers)
REQUEST_HEADERS = ("Authorization", "Content-Type", "Prefer", "If-Match", "If-None-Exist", "If-None-Match",
                   "If-Modified-Since", "Content-Encoding", "X-Request-Id")
# What a page must be able to read: versions, where a create went, why it was refused
EXPOSED_HEADERS = ("ETag", "Location", "Content-Location", "Last-Modified", "Retry-After", "WWW-Authenticate",
                   "X-Security-Context", "X-Request-ID")


def origins(settings: Settings) -> list[str]:
    """The allowed origins of ``FHIR_CORS_ORIGINS`` (comma-separated; trailing slashes dropped: an origin has none)."""
    return [o.strip().rstrip("/") for o in settings.cors_origins.split(",") if o.strip()]


def cors_middleware(settings: Settings) -> list[Middleware]:
    """The CORS layer, or none when no origin is allowed; ValueError for ``*`` with credentials."""
    allowed = origins(settings)
    if not allowed:
        return []
    if "*" in allowed and settings.cors_credentials:
        raise ValueError("FHIR_CORS_ORIGINS='*' with FHIR_CORS_CREDENTIALS=true would let any site act with a "
                         "user's credentials: list the origins instead")
    return [Middleware(CORSMiddleware, allow_origins=allowed, allow_methods=METHODS, allow_headers=REQUEST_HEADERS,
                       allow_credentials=settings.cors_credentials, expose_headers=EXPOSED_HEADERS, max_age=600)]
