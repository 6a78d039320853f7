"""The ASGI hook: one :class:`AuditRecord` per request under the FHIR base, outcome included.

Placed outside authentication so 401s are traced; the principal is read from the shared
``scope["state"]`` after the inner middleware set it. The record is journalled when the response
starts (:meth:`.writer.AuditWriter.record`, a file append on the event loop: no thread hand-off). In
``fail-closed`` mode, if that fails the client gets a 500 OperationOutcome instead of the answer (never
the answer without its trace); with ``FHIR_AUDIT_SYNC=full`` the answer also waits for the journal's
next ``fdatasync``. In ``async`` mode a failure is logged and counted, and the answer goes out.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_server.errors import FHIRError
from fhir_server.storage import now_us

from .events import AuditRecord, params_from_path
from .writer import AuditWriter

log = logging.getLogger(__name__)

SKIPPED_PATHS = frozenset({"/fhir/.well-known/smart-configuration", "/.well-known/smart-configuration"})
AUDIT_STATE = "audit"  # request.state.audit: what the route knows (content, bundle)


def note(state: Any, **details: Any) -> None:
    """Routes call this to add what only they know (``content=``, ``bundle=``, ``query=`` of a POST _search)."""
    current = getattr(state, AUDIT_STATE, None)
    if current is None:
        current = {}
        setattr(state, AUDIT_STATE, current)
    current.update(details)


class AuditMiddleware:
    def __init__(self, app: ASGIApp, writer_of: Any, mode: Literal["fail-closed", "async"]) -> None:
        self.app = app
        self.writer_of = writer_of  # () -> AuditWriter | None: the writer lives in the lifespan
        self.mode = mode

    def _record(self, scope: Scope, status: int, location: str | None = None) -> AuditRecord:
        state = scope.get("state") or {}
        details = state.get(AUDIT_STATE) or {}
        client = scope.get("client")
        return AuditRecord(
            recorded_us=now_us(), method=scope["method"], path=scope["path"],
            query=details.get("query") or scope.get("query_string", b"").decode("latin-1"), status=status,
            path_params={k: str(v) for k, v in scope["path_params"].items()} if scope.get("path_params")
            else params_from_path(scope["path"]),
            principal=state.get("principal"), address=client[0] if client else None,
            content=details.get("content"), bundle=details.get("bundle"), location=location,
            request_id=state.get("request_id"), acted=bool(details.get("acted")),
        )

    async def _trace(self, writer: AuditWriter, record: AuditRecord) -> bool:
        """Journal the record (and wait for the disk with sync=full); False when fail-closed must refuse."""
        try:
            pos = writer.record(record)
            if writer.sync == "full":
                await writer.durable(pos)
        except Exception:
            writer.failures += 1
            log.exception("audit: the record of %s %s could not be journalled", record.method, record.path)
            return self.mode != "fail-closed"
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer: AuditWriter | None = self.writer_of() if scope["type"] == "http" else None
        if writer is None or not scope["path"].startswith("/fhir") or scope["path"] in SKIPPED_PATHS:
            await self.app(scope, receive, send)
            return
        failed = False
        started = False

        async def audited_send(message: Message) -> None:
            nonlocal failed, started
            if failed:
                return  # the body of an answer replaced by the audit failure
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                location = None
                if status == 201:
                    location = next((v.decode("latin-1") for k, v in message.get("headers") or ()
                                     if k.lower() == b"location"), None)
                if not await self._trace(writer, self._record(scope, status, location)):
                    failed = True
                    await _audit_failure(send)
                    return
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            if not started:  # answered 500 by the outer error handler: trace it, then let it answer
                await self._trace(writer, self._record(scope, 500))
            raise


async def _audit_failure(send: Send) -> None:
    err = FHIRError(500, "exception", "The audit record of this request could not be written; "
                    "the request is refused (FHIR_AUDIT_MODE=fail-closed)")
    body = orjson.dumps(err.outcome())
    await send({"type": "http.response.start", "status": 500,
                "headers": [(b"content-type", b"application/fhir+json; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
