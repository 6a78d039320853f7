"""Opaque, authenticated page cursors carried in ``next``/``previous`` links.

A cursor is ``base64url(JSON) "." base64url(HMAC-SHA256(key, scope NUL JSON))``. It only holds positions
(``search_after`` values, a point-in-time id, a log seq) and a search's total; the query itself is re-read from
the link and re-checked on every page. The MAC makes a cursor one this server issued *for this query* (the
``scope``: the interaction and its parameters, the access policy's included), so a client can neither forge a
position or a ``Bundle.total`` nor move a cursor to another query or another principal's search. Each caller
still re-validates the decoded content (types, ranges): a validly signed cursor may be stale (an older server
version, a rotated key), and none may ever reach the store or Elasticsearch as an odd value (500).

The key is ``FHIR_CURSOR_SECRET`` when set, else a random secret kept in the store (created on first use), so
every process sharing a store accepts the others' cursors with no configuration.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from typing import Any, TypeGuard
from urllib.parse import urlencode

import orjson

from fhir_server.errors import FHIRError, bad_request

#: Longer tokens are refused before any decoding (a real one: a few hundred characters; a point-in-time id of
#: many shards makes it some thousands).
MAX_TOKEN = 8192
#: The shortest ``FHIR_CURSOR_SECRET`` accepted: a MAC key an attacker holding many signed cursors cannot guess.
MIN_SECRET = 16


def derive_key(secret: bytes) -> bytes:
    """The MAC key of the cursors, from the configured or the store's secret (never used as is elsewhere)."""
    return hmac.new(b"fhir-server page cursor v1", secret, hashlib.sha256).digest()


def configured_key(secret: str) -> bytes:
    if len(secret) < MIN_SECRET:
        raise ValueError(f"FHIR_CURSOR_SECRET must be at least {MIN_SECRET} characters")
    return derive_key(secret.encode("utf-8"))


def scope_of(kind: str, params: Iterable[tuple[str, str]]) -> str:
    """A cursor's scope: ``kind`` (interaction, type, id) and the parameters of the link it travels in, as a set
    (a link repeating a policy parameter the server adds again is the same query)."""
    return f"{kind}?{urlencode(sorted(set(params)))}"


def invalid_cursor() -> FHIRError:
    return bad_request("Invalid or expired page cursor", "_cursor")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, scope: str, payload: bytes) -> bytes:
    return hmac.new(key, scope.encode("utf-8") + b"\x00" + payload, hashlib.sha256).digest()


def encode_cursor(key: bytes, scope: str, state: dict[str, Any]) -> str:
    payload = orjson.dumps(state, option=orjson.OPT_SORT_KEYS)
    return f"{_b64(payload)}.{_b64(_mac(key, scope, payload))}"


def decode_cursor(key: bytes, scope: str, token: str) -> dict[str, Any]:
    """The state :func:`encode_cursor` signed for ``scope``; 400 ``_cursor`` for anything else. The caller
    checks each value it reads."""
    body, dot, tag = token.partition(".")
    if not dot or len(token) > MAX_TOKEN or not token.isascii():
        raise invalid_cursor()
    try:
        payload, mac = _unb64(body), _unb64(tag)
    except (binascii.Error, ValueError) as exc:
        raise invalid_cursor() from exc
    if not hmac.compare_digest(mac, _mac(key, scope, payload)):
        raise invalid_cursor()
    try:
        state = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise invalid_cursor() from exc
    if not isinstance(state, dict):
        raise invalid_cursor()
    return state


def is_int(value: Any, low: int, high: int) -> TypeGuard[int]:
    """``value`` is an integer (not a bool, not a float) in [low, high)."""
    return type(value) is int and low <= value < high


def page_size(raw: str | None, default: int, maximum: int) -> int:
    """``_count`` of a page read from the store (history, the audit trail): ASCII digits (no ``int('²')``),
    capped at ``maximum``; anything else is the client's 400."""
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()):
        raise bad_request(f"_count must be a non-negative integer, got '{raw}'", "_count")
    return min(int(raw), maximum)
