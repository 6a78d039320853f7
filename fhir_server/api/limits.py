"""Request-shape limits checked before any routing or parsing: URL length and query parameter count.

A search with thousands of parameters or a megabyte URL is either a mistake or an attack; both get a
clear OperationOutcome instead of reaching the query compiler. (Body size and JSON depth are checked
where the body is read, in :mod:`fhir_server.api.content`.)
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from fhir_server.errors import FHIRError

MAX_URL_BYTES = 8192
MAX_QUERY_PARAMS = 100


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, max_url_bytes: int = MAX_URL_BYTES,
                 max_query_params: int = MAX_QUERY_PARAMS) -> None:
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
