"""Turning interaction results and errors into HTTP responses (headers, Prefer, _pretty).

:func:`exception_response` is the one place an exception becomes an HTTP answer: the route wrapper
(``routes.endpoint``) and the application's exception handlers both call it, so a failure answers the
same wherever it surfaces. Below this layer errors are raised as :class:`FHIRError` (status, IssueType,
diagnostics, FHIRPath) and never turned into responses.
"""

from __future__ import annotations

import logging
import re
from email.utils import format_datetime
from typing import Any

import orjson
from elasticsearch import ApiError, TransportError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from fhir_common.types import Resource
from fhir_server.errors import FHIRError, Issue, operation_outcome
from fhir_server.formats import numbers, to_xml
from fhir_server.observability.metrics import count_es_error
from fhir_server.result import Result
from fhir_server.storage import ConcurrentWrite

from .content import error_format

FHIR_JSON = "application/fhir+json; charset=utf-8"
FHIR_XML = "application/fhir+xml; charset=utf-8"
log = logging.getLogger(__name__)


def prefer(header: str | None) -> dict[str, str]:
    """``Prefer: return=minimal, handling=strict`` -> {"return": "minimal", "handling": "strict"}."""
    out: dict[str, str] = {}
    for part in (header or "").replace(";", ",").split(","):
        if "=" in part:
            key, _, value = part.partition("=")
            out[key.strip().lower()] = value.strip().strip('"')
    return out


def dump(body: Any, pretty: bool) -> bytes:
    return numbers.dumps(body, option=orjson.OPT_INDENT_2 if pretty else 0)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None, *, pretty: bool = False) -> Response:
    content = b"" if body is None else dump(body, pretty)
    return Response(content, status_code=status, headers=headers, media_type=FHIR_JSON if body is not None else None)


def fhir_response(status: int, body: Any, headers: dict[str, str] | None = None, *, pretty: bool = False,
                  fmt: str = "json") -> Response:
    """``body`` (FHIR JSON, possibly holding ``orjson.Fragment``s) in the negotiated format."""
    if fmt != "xml" or body is None:
        return json_response(status, body, headers, pretty=pretty)
    return Response(to_xml(body, pretty=pretty), status_code=status, headers=headers, media_type=FHIR_XML)


def error_response(err: FHIRError, pretty: bool = False, fmt: str = "json") -> Response:
    return fhir_response(err.status, err.outcome(), dict(err.headers), pretty=pretty, fmt=fmt)


def _information(msg: str) -> Resource:
    return operation_outcome([Issue("information", "informational", msg)])


def result_response(result: Result, *, base_url: str, prefer_return: str | None, pretty: bool,
                    write: bool = False, fmt: str = "json") -> Response:
    headers = dict(result.headers)
    v = result.version
    if v is not None:
        headers["ETag"] = f'W/"{v.version}"'
        headers["Last-Modified"] = format_datetime(v.last_updated, usegmt=True)
        if result.location:
            headers["Location"] = f"{base_url}/{v.type}/{v.id}/_history/{v.version}"
        if write and not v.deleted:
            headers["Content-Location"] = f"{base_url}/{v.type}/{v.id}/_history/{v.version}"
    if write:
        mode = (prefer_return or "representation").lower()
        if mode == "minimal":
            return Response(b"", status_code=result.status, headers=headers)
        if mode == "operationoutcome":
            issues = result.issues or [Issue("information", "informational", "All OK")]
            status = 200 if result.status == 204 else result.status
            return fhir_response(status, operation_outcome(issues), headers, pretty=pretty, fmt=fmt)
        if result.status == 204:
            return Response(b"", status_code=204, headers=headers)
    if result.raw is not None and not pretty and result.body is None and fmt == "json":
        return Response(result.raw, status_code=result.status, headers=headers, media_type=FHIR_JSON)
    body = result.body
    if body is None and result.raw is not None:
        body = numbers.loads(result.raw)
    if body is None:
        return Response(b"", status_code=result.status, headers=headers)
    return fhir_response(result.status, body, headers, pretty=pretty, fmt=fmt)


def _es_error(request: Request, exc: TransportError | ApiError) -> FHIRError:
    """Unreachable or overloaded index: 503. A query Elasticsearch refuses: 400 (the value was not searchable)."""
    status = getattr(exc, "status_code", None) if isinstance(exc, ApiError) else None
    count_es_error(status if isinstance(status, int) else None)
    if isinstance(status, int) and 400 <= status < 500 and status != 429:
        log.warning("Elasticsearch refused the query of %s %s: %s", request.method, request.url.path, exc)
        return FHIRError(400, "invalid", "The search could not be executed with these values")
    log.warning("Elasticsearch failure on %s %s: %s", request.method, request.url.path, exc)
    return FHIRError(503, "transient", "The search index is unavailable; retry shortly", headers={"Retry-After": "5"})


def _routing_error(request: Request, exc: HTTPException) -> FHIRError:
    """Starlette's own refusals (no route, method not allowed) in FHIR terms."""
    if exc.status_code == 405:
        return FHIRError(405, "not-supported", f"{request.method} is not allowed on {request.url.path}",
                         headers=dict(exc.headers or {}))
    if exc.status_code == 404:
        return FHIRError(404, "not-found", f"No FHIR endpoint at {request.url.path}")
    return FHIRError(exc.status_code, "processing", str(exc.detail))


def as_fhir_error(request: Request, exc: BaseException) -> FHIRError:
    """What the client is told of ``exc``: its own status for a :class:`FHIRError` (``StoreBusy`` included), the
    index's state for an Elasticsearch error, 409 for a write that collided with another, 500 for anything else
    (logged with its traceback; the client learns nothing of it)."""
    if isinstance(exc, FHIRError):
        return exc
    if isinstance(exc, (TransportError, ApiError)):
        return _es_error(request, exc)
    if isinstance(exc, HTTPException):
        return _routing_error(request, exc)
    if isinstance(exc, ConcurrentWrite):  # the engine retries these; one that escapes is still the client's to retry
        return FHIRError(409, "conflict", "The request collided with concurrent writes; retry")
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return FHIRError(500, "exception", "Internal server error")


def exception_response(request: Request, exc: BaseException, pretty: bool = False, fmt: str | None = None) -> Response:
    """The one mapping of an exception to an HTTP answer: an OperationOutcome in the format the request asked
    for (``fmt`` overrides it; JSON when the request's format was itself the error)."""
    return error_response(as_fhir_error(request, exc), pretty, fmt or error_format(request))


#: A media type a header may carry as is: ``type/subtype`` tokens, then ``; name=value`` parameters (no CR/LF, no
#: control character). Anything else a client stored is served as ``application/octet-stream``.
_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"
_MEDIA_TYPE = re.compile(rf'{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|"[ !#-\[\]-~]*"))*')

#: Headers of every raw Binary answer: the bytes are a client's, possibly HTML, SVG or XHTML with script. Never
#: sniffed, never allowed to run or load anything (sandbox: a unique origin, no scripts, even if opened in a
#: browser tab), and a download rather than a page of this server's origin (stored XSS).
BINARY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


def safe_media_type(content_type: str) -> str:
    """``content_type`` when a header can carry it unchanged, else ``application/octet-stream``."""
    return content_type if _MEDIA_TYPE.fullmatch(content_type) else "application/octet-stream"


def binary_response(result: Result) -> Response:
    """ITI-68 / binary.html: a Binary read answered with its own bytes and media type, as a download that can
    neither be sniffed into another type nor run script in the server's origin (see :data:`BINARY_HEADERS`)."""
    from fhir_server.interactions.binary import raw_content

    v = result.version
    headers = dict(result.headers)
    headers.update(BINARY_HEADERS)
    name = v.id if v is not None else "content"  # ids are [A-Za-z0-9.-]: safe in a quoted filename
    headers["Content-Disposition"] = f'attachment; filename="Binary-{name}"'
    if v is not None:
        headers["ETag"] = f'W/"{v.version}"'
        headers["Last-Modified"] = format_datetime(v.last_updated, usegmt=True)
    if result.status == 304:  # a conditional read the client's copy satisfies: no body
        return Response(None, status_code=304, headers=headers)
    resource = result.body if result.body is not None else orjson.loads(result.raw or b"{}")
    content_type, content = raw_content(resource)
    if isinstance(resource.get("securityContext"), dict) and resource["securityContext"].get("reference"):
        headers["X-Security-Context"] = resource["securityContext"]["reference"]
    return Response(content, status_code=result.status, headers=headers, media_type=safe_media_type(content_type))
