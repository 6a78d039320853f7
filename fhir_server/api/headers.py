"""Headers every answer of the server carries, whatever produced it (routes, error handlers, middleware)."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class NoSniffMiddleware:
    """``X-Content-Type-Options: nosniff`` on every answer: a browser must take a FHIR JSON/XML body, an
    OperationOutcome echoing a client's value or a Binary's bytes for the type they are declared as, never
    sniff them into HTML and run what a client wrote."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).setdefault("X-Content-Type-Options", "nosniff")
            await send(message)

        await self.app(scope, receive, send_nosniff)
