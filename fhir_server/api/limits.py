"""Request-shape limits: each a setting (``FHIR_MAX_*``), each refused with a clear OperationOutcome.

A search with thousands of parameters, a megabyte URL, a ten-level chain or a Bundle of a million
entries is either a mistake or an attack; both get a 4xx naming the limit (and the parameter or
element at fault in ``expression``) instead of tying up the store or Elasticsearch.

* URL length (414) and query parameter count (400 ``too-costly``): :class:`RequestLimitsMiddleware`,
  before any routing or parsing;
* search parameters (count of a POST ``_search`` form too, chain depth, ``_has`` nesting):
  :func:`fhir_server.limits.check_search_params`, on every search path (GET, POST ``_search``, Bundle GET entries);
* Bundle entry count (413 ``too-costly``): :func:`check_bundle`, before any entry is processed;
* body size and JSON/XML nesting depth: where the body is read, :mod:`fhir_server.api.content`;
* ``_count`` is capped at ``max_count``; included resources per page at ``max_included`` (a warning
  says what was left out); each Elasticsearch call at ``es_search_timeout_s`` (then 503 + ``Retry-After``).
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from fhir_common.types import Resource
from fhir_server.errors import FHIRError
from fhir_server.limits import chain_depth, check_search_params, has_depth
from fhir_server.settings import Settings

__all__ = ["RequestLimitsMiddleware", "chain_depth", "check_bundle", "check_search_params", "has_depth"]


class RequestLimitsMiddleware:
    """``max_url_bytes`` / ``max_query_params``: the settings of the same name (their defaults live there)."""

    def __init__(self, app: ASGIApp, max_url_bytes: int, max_query_params: int) -> None:
        self.app = app
        self.max_url_bytes = max_url_bytes
        self.max_query_params = max_query_params

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query: bytes = scope.get("query_string", b"")
            path: bytes = scope.get("raw_path") or scope["path"].encode()
            if len(path) + len(query) > self.max_url_bytes:
                await _refuse(send, FHIRError(414, "too-long", f"URL longer than {self.max_url_bytes} bytes"))
                return
            if query and query.count(b"&") + 1 > self.max_query_params:
                await _refuse(send, FHIRError(400, "too-costly",
                                              f"More than {self.max_query_params} query parameters"))
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, err: FHIRError) -> None:
    body = orjson.dumps(err.outcome())
    await send({"type": "http.response.start", "status": err.status,
                "headers": [(b"content-type", b"application/fhir+json; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def check_bundle(bundle: Resource, settings: Settings) -> None:
    """413 ``too-costly`` for a Bundle with more entries than ``max_bundle_entries`` (checked before any work)."""
    entries = bundle.get("entry")
    if isinstance(entries, list) and len(entries) > settings.max_bundle_entries:
        raise FHIRError(413, "too-costly", f"Bundle has {len(entries)} entries; at most "
                        f"{settings.max_bundle_entries} are processed in one request", ("Bundle.entry",))
