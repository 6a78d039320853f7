"""Media types in and out (http.html#mime-type), request bodies and their limits."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from fhir_server.errors import FHIRError, bad_request

JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir", "text/json"}
XML_TYPES = {"application/fhir+xml", "application/xml", "application/xml+fhir", "text/xml"}
FORMAT_ALIASES = {"json": "json", "application/json": "json", "application/fhir+json": "json",
                  "xml": "xml", "text/xml": "xml", "application/xml": "xml", "application/fhir+xml": "xml",
                  "html": "json", "text/html": "json"}
MAX_DEPTH = 64


def _media_type(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


def response_format(request: Request) -> str:
    """``json`` or raise 406: ``_format`` wins over ``Accept`` (http.html#mime-type)."""
    fmt = request.query_params.get("_format")
    if fmt is not None:
        key = fmt.strip().lower().replace(" ", "+")
        chosen = FORMAT_ALIASES.get(key)
        if chosen is None:
            raise FHIRError(406, "not-supported", f"Unsupported _format '{fmt}'", ("_format",))
        if chosen != "json":
            raise FHIRError(406, "not-supported", "Only JSON is served for now", ("_format",))
        return "json"
    accept = request.headers.get("accept", "")
    if not accept:
        return "json"
    for part in accept.split(","):
        media = _media_type(part)
        if media in JSON_TYPES or media in ("*/*", "application/*", "text/html", "") or media.endswith("+json"):
            return "json"
    if any(_media_type(p) in XML_TYPES for p in accept.split(",")):
        raise FHIRError(406, "not-supported", "Only JSON is served for now (application/fhir+json)")
    return "json"


def _depth_ok(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return True


async def read_resource(request: Request, max_bytes: int) -> dict[str, Any]:
    """The JSON object in the body, or a FHIRError with the right status (413, 415, 400)."""
    ctype = _media_type(request.headers.get("content-type", ""))
    if ctype in XML_TYPES:
        raise FHIRError(415, "not-supported", "XML bodies are not accepted yet; send application/fhir+json")
    if ctype not in JSON_TYPES:
        raise FHIRError(415, "not-supported",
                        f"Unsupported Content-Type '{ctype or '(none)'}'; send application/fhir+json")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise FHIRError(413, "too-costly", f"Body larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise FHIRError(413, "too-costly", f"Body larger than {max_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise bad_request("The request body is empty")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"Malformed JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise bad_request("The body must be a JSON object (a FHIR resource)")
    if not _depth_ok(data, MAX_DEPTH):
        raise bad_request(f"JSON nested deeper than {MAX_DEPTH} levels")
    return data
