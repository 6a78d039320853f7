"""Binary content (binary.html) and ITI-68 Retrieve Document.

Binary resources live in the store of record only (``searchable=False`` in the
registry: no outbox row, never in Elasticsearch), as FHIR JSON with base64
``data``, so a document commits atomically with the transaction that carries it.
A read answers the raw bytes with the Binary's ``contentType`` unless the client
asks for a FHIR format explicitly (``_format`` or an ``Accept`` naming a FHIR
media type), as binary.html#rest recommends.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from fhir_common.types import Resource
from fhir_server.errors import FHIRError, bad_request

FHIR_MEDIA = {"application/fhir+json", "application/json+fhir", "application/fhir+xml", "application/xml+fhir"}


def decode_data(data: Any, where: str) -> bytes:
    """The bytes of a base64Binary element (400 when it is not base64)."""
    if data is None:
        return b""
    if not isinstance(data, str):
        raise bad_request("base64Binary must be a string", where)
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request(f"Invalid base64 content: {exc}", where) from exc


def sha1_b64(content: bytes) -> str:
    """``Attachment.hash``: base64 of the SHA-1 of the bytes (datatypes.html#Attachment)."""
    return base64.b64encode(hashlib.sha1(content).digest()).decode("ascii")


def make_binary(content_type: str, content: bytes) -> Resource:
    return {"resourceType": "Binary", "contentType": content_type,
            "data": base64.b64encode(content).decode("ascii")}


def raw_content(resource: Resource) -> tuple[str, bytes]:
    """(contentType, bytes) of a stored Binary."""
    content_type = resource.get("contentType")
    if not isinstance(content_type, str) or not content_type:
        raise FHIRError(500, "exception", "Stored Binary without contentType")
    return content_type, decode_data(resource.get("data"), "Binary.data")


def wants_fhir(format_param: str | None, accept: str) -> bool:
    """True when the client asked for the Binary resource rather than its content."""
    if format_param is not None:
        return True
    media = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    return bool(media & FHIR_MEDIA)
