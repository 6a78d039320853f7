"""Media types in and out (http.html#mime-type), request bodies and their limits."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from fhir_common.types import Resource
from fhir_server.errors import FHIRError, bad_request
from fhir_server.formats import XMLFormatError, from_xml, numbers
from fhir_server.limits import MAX_DEPTH, depth_ok

JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir", "text/json"}
XML_TYPES = {"application/fhir+xml", "application/xml", "application/xml+fhir", "text/xml"}
FORMAT_ALIASES = {"json": "json", "application/json": "json", "application/fhir+json": "json",
                  "xml": "xml", "text/xml": "xml", "application/xml": "xml", "application/fhir+xml": "xml",
                  "application/json+fhir": "json", "application/xml+fhir": "xml"}
HTML_TYPES = {"text/html", "application/xhtml+xml"}  # a browser's first choice: no HTML rendering here
FHIR_VERSION = "4.0"  # the major.minor of the fhirVersion media type parameter (http.html#version-parameter)


def media_of(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


def _accept_format(media: str) -> str | None:
    if media in ("*/*", "application/*"):
        return "any"
    if media in HTML_TYPES:
        return "html"
    if media in JSON_TYPES or media.endswith("+json"):
        return "json"
    if media in XML_TYPES or media.endswith("+xml"):
        return "xml"
    return None


def _params(part: str) -> dict[str, str]:
    """The parameters of one media type or range, names lower-cased: ``q``, ``fhirVersion``..."""
    out: dict[str, str] = {}
    for param in part.split(";")[1:]:
        key, _, value = param.partition("=")
        out.setdefault(key.strip().lower(), value.strip().strip('"'))
    return out


def _quality(params: dict[str, str]) -> float:
    try:
        q = float(params.get("q", "1"))
    except ValueError:
        return 0.0
    return min(q, 1.0) if q > 0 else 0.0


def fhir_version_ok(params: dict[str, str]) -> bool:
    """No ``fhirVersion`` parameter, or R4's (``4.0``; a patch release ``4.0.1`` is the same version)."""
    version = params.get("fhirversion")
    return version is None or version == FHIR_VERSION or version.startswith(FHIR_VERSION + ".")


def _not_acceptable(accept: str) -> FHIRError:
    return FHIRError(406, "not-supported", f"None of Accept '{accept}' can be served: this server answers "
                     f"application/fhir+json or application/fhir+xml, FHIR version {FHIR_VERSION}")


def response_format(request: Request) -> str:
    """``json`` or ``xml``, or raise 406: ``_format`` wins over ``Accept`` (http.html#mime-type).

    In ``Accept`` the highest q-value wins, the first listed among equals; a type whose ``fhirVersion`` is not
    R4's does not count. With no preference (no ``Accept``, ``*/*``) the answer is in the format of the request
    body, else JSON. A browser listing ``text/html`` first gets that default when it accepts anything else
    (``*/*``); an ``Accept`` with nothing this server can write (``text/csv``, ``text/html`` alone) is a 406.
    """
    fmt = request.query_params.get("_format")
    if fmt is not None:
        key = fmt.strip().lower().replace(" ", "+")
        chosen = FORMAT_ALIASES.get(key)
        if chosen is None:
            raise FHIRError(406, "not-supported", f"Unsupported _format '{fmt}'", ("_format",))
        return chosen
    accept = request.headers.get("accept", "")
    best: tuple[float, str] | None = None
    servable = False
    for part in accept.split(","):
        params = _params(part)
        found = _accept_format(media_of(part))
        q = _quality(params)
        if found is None or q <= 0 or not fhir_version_ok(params):
            continue
        servable = servable or found != "html"
        if best is None or q > best[0]:
            best = (q, found)
    if accept.strip() and not servable:
        raise _not_acceptable(accept)
    if best is not None and best[1] in ("json", "xml"):
        return best[1]
    return "xml" if media_of(request.headers.get("content-type", "")) in XML_TYPES else "json"


def error_format(request: Request) -> str:
    """The format an error answer is written in: the one asked for, JSON when that request was itself wrong."""
    try:
        return response_format(request)
    except FHIRError:
        return "json"


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, or 413 as soon as it exceeds ``max_bytes`` (never buffered beyond the limit).

    A body declared in another FHIR version (``Content-Type: application/fhir+json; fhirVersion=3.0``) is a 415.
    """
    ctype = request.headers.get("content-type", "")
    if not fhir_version_ok(_params(ctype)):
        raise FHIRError(415, "not-supported", f"Content-Type '{ctype}' is not FHIR version {FHIR_VERSION}")
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise FHIRError(413, "too-costly", f"Body larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise FHIRError(413, "too-costly", f"Body larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _loads(raw: bytes) -> Any:
    """JSON with exact decimals (formats/numbers.py), or 400: a property named twice is an error (json.html)."""
    try:
        return numbers.loads(raw)
    except numbers.DuplicateProperty as exc:
        raise bad_request(str(exc), exc.expression) from exc
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"Malformed JSON: {exc}") from exc


async def parse_resource(ctype: str, raw: bytes) -> Resource:
    """FHIR JSON or XML bytes as a JSON object, or 400 with what is wrong."""
    if not raw.strip():
        raise bad_request("The request body is empty")
    if ctype in XML_TYPES:
        try:  # in the thread pool: a large document must not stall the event loop
            data: Any = await run_in_threadpool(from_xml, raw)
        except XMLFormatError as exc:
            raise bad_request(exc.message, *((exc.expression,) if exc.expression else ())) from exc
        if not depth_ok(data, MAX_DEPTH):
            raise bad_request(f"XML nested deeper than {MAX_DEPTH} levels")
        return dict(data)
    data = _loads(raw)
    if not isinstance(data, dict):
        raise bad_request("The body must be a JSON object (a FHIR resource)")
    if not depth_ok(data, MAX_DEPTH):
        raise bad_request(f"JSON nested deeper than {MAX_DEPTH} levels")
    return data


def parse_json(raw: bytes) -> Any:
    """Any JSON body (a JSON Patch array too) within the nesting limit, or 400."""
    data = _loads(raw)
    if not depth_ok(data, MAX_DEPTH):
        raise bad_request(f"JSON nested deeper than {MAX_DEPTH} levels")
    return data


async def read_resource(request: Request, max_bytes: int) -> Resource:
    """The resource in the body (FHIR JSON or XML) as JSON, or a FHIRError with the right status (413, 415, 400)."""
    ctype = media_of(request.headers.get("content-type", ""))
    if ctype not in JSON_TYPES and ctype not in XML_TYPES:
        raise FHIRError(415, "not-supported", f"Unsupported Content-Type '{ctype or '(none)'}'; send "
                        "application/fhir+json or application/fhir+xml")
    return await parse_resource(ctype, await read_body(request, max_bytes))
