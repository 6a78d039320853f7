"""Opaque page cursors carried in ``next`` links.

A cursor is base64url(JSON). It is opaque to clients but not secret: it only
holds positions (``search_after`` values, a point-in-time id, a log seq); the
query itself is re-read from the link and re-checked on every page, so a
forged cursor can only move within results the client may already request.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from fhir_server.errors import bad_request


def encode_cursor(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(state)).rstrip(b"=").decode("ascii")


def decode_cursor(token: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        state = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError) as exc:
        raise bad_request("Invalid or expired page cursor", "_cursor") from exc
    if not isinstance(state, dict):
        raise bad_request("Invalid page cursor", "_cursor")
    return state


def page_size(raw: str | None, default: int, maximum: int) -> int:
    """``_count`` of a page read from the store (history, the audit trail): ASCII digits (no ``int('²')``),
    capped at ``maximum``; anything else is the client's 400."""
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()):
        raise bad_request(f"_count must be a non-negative integer, got '{raw}'", "_count")
    return min(int(raw), maximum)
