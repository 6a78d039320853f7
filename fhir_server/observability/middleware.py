"""The outermost layer: a request id for every request, its latency histogram, one access-log line.

``X-Request-ID`` is taken from the client when printable ASCII of at most 128 characters (else replaced by
a new UUID), echoed on every answer, put in ``scope["state"]["request_id"]`` (the audit record's) and in the
:data:`.logs.REQUEST_ID` context variable (every log line of the request). The access line names the route
template (``/fhir/{type}/{id}``), never the raw path or query: those can carry identifiers and patient names.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_server.audit.events import interaction, params_from_path
from fhir_server.errors import FHIRError

from .logs import REQUEST_ID, request_id_of
from .metrics import observe_request

access_log = logging.getLogger("fhir_server.access")
log = logging.getLogger(__name__)

HEADER = b"x-request-id"
UNMEASURED = frozenset({"/livez", "/readyz", "/metrics"})  # probes and scrapes: no latency, no access line


def route_template(scope: Scope) -> str:
    """The matched route's path template; ``-`` when no route matched (a 404's path may name anything)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "-"


def interaction_of(scope: Scope) -> str:
    """The restful interaction of a request (the audit trail's codes; the history ones as ``history``)."""
    path = scope["path"]
    if not path.startswith("/fhir"):
        return "other"
    params = {k: str(v) for k, v in (scope.get("path_params") or {}).items()} or params_from_path(path)
    code = interaction(scope["method"], path, params)
    if code.startswith("history"):
        return "history"
    if code == "transaction":  # the Bundle's own type, when the route read it (routes.audit_note)
        bundle = ((scope.get("state") or {}).get("audit") or {}).get("bundle")
        if bundle and isinstance(bundle[0], dict) and bundle[0].get("type") == "batch":
            return "batch"
    return code


def _subject(scope: Scope) -> str | None:
    principal = (scope.get("state") or {}).get("principal")
    return getattr(principal, "subject", None)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k.lower() == HEADER), None)
        rid = request_id_of(given.decode("latin-1") if given is not None else None)
        scope.setdefault("state", {})["request_id"] = rid
        token = REQUEST_ID.set(rid)
        started = time.perf_counter()
        status = 500
        answered = logged = False

        def done() -> None:
            nonlocal logged
            if not logged and scope["path"] not in UNMEASURED:
                logged = True
                self._done(scope, status, time.perf_counter() - started)

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                answered = True
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers") or () if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, rid.encode("latin-1"))]}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                done()  # before the last bytes go: when the client has the answer, its access line exists
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if answered:
                raise
            # answered here rather than by the outer error handler, so that this 500 carries its request id too
            log.exception("unexpected error on %s %s", scope["method"], route_template(scope))
            await _internal_error(send_with_id)
        finally:
            done()  # a client gone before the end of the answer
            REQUEST_ID.reset(token)

    @staticmethod
    def _done(scope: Scope, status: int, seconds: float) -> None:
        if scope["path"].startswith("/fhir"):
            observe_request(interaction_of(scope), status, seconds)
        fields: dict[str, Any] = {"method": scope["method"], "route": route_template(scope), "status": status,
                                  "duration_ms": round(seconds * 1000, 3)}
        subject = _subject(scope)
        if subject is not None:
            fields["subject"] = subject
        access_log.info("%s %s %d %.1f ms", fields["method"], fields["route"], status, fields["duration_ms"],
                        extra=fields)


async def _internal_error(send: Send) -> None:
    body = orjson.dumps(FHIRError(500, "exception", "Internal server error").outcome())
    await send({"type": "http.response.start", "status": 500,
                "headers": [(b"content-type", b"application/fhir+json; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
