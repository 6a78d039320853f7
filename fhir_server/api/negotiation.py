"""HTTP conventions around content negotiation that no single route owns.

* ``Vary: Accept`` on every answer under the FHIR base: the format (and for a Binary, raw bytes or the
  resource) follows ``Accept``, so a shared cache must key on it;
* ``OPTIONS [base]`` (not a CORS preflight) is answered with the CapabilityStatement, as DSTU2 specified
  (http.html#capabilities in R4 only names ``GET [base]/metadata``; answering both costs nothing and a 405 helped
  no one): it is served as ``GET [base]/metadata``, so it is public like ``/metadata`` and audited as one;
* ``GET [base]/$versions`` (CapabilityStatement-versions): the one FHIR version served, also the default.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_server.interactions.result import Result

from .content import FHIR_VERSION

BASE = "/fhir"


class NegotiationMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"] == BASE or scope["path"].startswith(BASE + "/")):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and scope["path"].rstrip("/") == BASE \
                and "access-control-request-method" not in Headers(scope=scope):
            path = BASE + "/metadata"
            scope = dict(scope, method="GET", path=path, raw_path=path.encode())

        async def varying_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                MutableHeaders(scope=message).add_vary_header("Accept")
            await send(message)

        await self.app(scope, receive, varying_send)


async def versions(request: Request) -> Result:
    """``$versions``: the versions this endpoint serves (``fhirVersion`` media type parameter) and its default."""
    return Result(200, {"resourceType": "Parameters", "parameter": [
        {"name": "version", "valueCode": FHIR_VERSION}, {"name": "default", "valueCode": FHIR_VERSION}]})
