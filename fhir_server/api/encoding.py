"""Content codings (RFC 9110 §8.4): gzip answers for clients that accept them, gzip/deflate request bodies decoded.

A compressed body is decoded as the route reads it, at most :data:`CHUNK` bytes at a time, and the body size
limit (``FHIR_MAX_BODY_BYTES``) applies to the decoded bytes: a small "zip bomb" gets a 413 once the limit is
passed, after at most one chunk more than the limit was inflated. A coding the server cannot decode is a 415
naming the ones it can (RFC 7694); a corrupt or truncated stream is a 400.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import orjson
from starlette.datastructures import Headers
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipResponder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_server.errors import FHIRError, bad_request

CHUNK = 64 * 1024
# wbits: gzip framing (RFC 1952); deflate is zlib framing (RFC 1950) but some clients send raw deflate
_WBITS: dict[str, Callable[[bytes], int]] = {
    "gzip": lambda head: 16 + zlib.MAX_WBITS,
    "x-gzip": lambda head: 16 + zlib.MAX_WBITS,
    "deflate": lambda head: zlib.MAX_WBITS if len(head) >= 2 and (head[0] & 0x0F) == 8
    and (head[0] << 8 | head[1]) % 31 == 0 else -zlib.MAX_WBITS,
}
ACCEPTED = "gzip, deflate"
# already compressed: gzipping them again costs CPU for nothing (raw Binary downloads, ITI-68)
NOT_GZIPPED = (*DEFAULT_EXCLUDED_CONTENT_TYPES, "application/pdf")


def codings(header: str) -> list[str]:
    """The codings of a ``Content-Encoding`` value in the order they were applied, ``identity`` left out."""
    return [c for c in (part.strip().lower() for part in header.split(",")) if c and c != "identity"]


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` value admits gzip (``gzip`` or ``*`` with a non-zero q-value)."""
    found: dict[str, float] = {}
    for part in header.split(","):
        name, *params = (p.strip().lower() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        found[name] = q
    q = found.get("gzip", found.get("x-gzip", found.get("*", 0.0)))
    return q > 0


class _Inflater:
    """Incremental decoder of one coding, handing out at most ``CHUNK`` bytes per call, ``limit`` bytes in all."""

    def __init__(self, coding: str, limit: int) -> None:
        self.coding = coding
        self.limit = limit
        self.total = 0
        self.head = b""  # the first bytes, until there are enough to tell zlib from raw deflate
        self.pending = b""  # input received but not yet decoded (held back while the output was capped)
        self.decoder: zlib._Decompress | None = None

    def feed(self, data: bytes, final: bool) -> bytes:
        """Decoded bytes of ``self.pending + data``, at most CHUNK of them; the rest stays pending."""
        if self.decoder is None:
            self.head += data
            if not self.head or (len(self.head) < 2 and not final):
                return b""
            data, self.head = self.head, b""
            self.decoder = zlib.decompressobj(_WBITS[self.coding](data[:2]))
        data = self.pending + data
        self.pending = b""
        if self.decoder.eof:
            if not data:
                return b""
            if self.coding == "deflate":
                raise bad_request("Data after the end of the deflate stream")
            self.decoder = zlib.decompressobj(_WBITS[self.coding](data[:2]))  # another gzip member (RFC 1952)
        try:
            out = self.decoder.decompress(data, CHUNK)
        except zlib.error as exc:
            raise bad_request(f"The body is not valid {self.coding} data ({exc})") from exc
        self.pending = self.decoder.unconsumed_tail or self.decoder.unused_data
        if not out and data and self.pending == data:  # no progress: never loop on it
            raise bad_request(f"The body is not valid {self.coding} data")
        self.total += len(out)
        if self.total > self.limit:
            raise FHIRError(413, "too-costly", f"Body larger than {self.limit} bytes once decoded")
        return out

    @property
    def eof(self) -> bool:
        return self.decoder is not None and self.decoder.eof and not self.pending

    def finish(self) -> None:
        if self.decoder is not None and not self.eof:  # (an empty body stays empty)
            raise bad_request(f"The {self.coding} body is truncated")


def decoding_receive(receive: Receive, inflater: _Inflater) -> Receive:
    """``receive`` with each body chunk decoded; never more than CHUNK decoded bytes in one message."""
    upstream_done = False

    async def decoded() -> Message:
        nonlocal upstream_done
        while True:
            if inflater.pending or (upstream_done and not inflater.eof):
                out = inflater.feed(b"", upstream_done)  # input already received: decoded further, CHUNK at a time
                if out:
                    return {"type": "http.request", "body": out, "more_body": True}
                if inflater.pending:
                    continue
            if upstream_done:
                inflater.finish()
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] != "http.request":
                return message
            upstream_done = not message.get("more_body", False)
            out = inflater.feed(message.get("body", b""), upstream_done)
            if out:
                return {"type": "http.request", "body": out, "more_body": True}

    return decoded


class RequestDecodingMiddleware:
    """Decodes ``Content-Encoding: gzip|deflate`` request bodies; 415 for other codings."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = Headers(scope=scope).get("content-encoding") if scope["type"] == "http" else None
        applied = codings(header or "")
        if not applied:
            await self.app(scope, receive, send)
            return
        if len(applied) > 1 or applied[0] not in _WBITS:
            await refuse(send, FHIRError(415, "not-supported", f"Unsupported Content-Encoding '{header}'; this "
                                         f"server decodes {ACCEPTED}", headers={"Accept-Encoding": ACCEPTED}))
            return
        decoded = decoding_receive(receive, _Inflater(applied[0], self.max_body_bytes))
        # the route sees the decoded body: no coding left to undo (Content-Length stays the size on the wire)
        inner = dict(scope, headers=[(k, v) for k, v in scope["headers"] if k.lower() != b"content-encoding"])
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(inner, decoded, tracking_send)
        except FHIRError as err:  # raised while a route read the body outside the endpoint's own mapping
            if started:
                raise
            await refuse(send, err)


async def refuse(send: Send, err: FHIRError) -> None:
    body = orjson.dumps(err.outcome())
    headers = [(b"content-type", b"application/fhir+json; charset=utf-8"),
               (b"content-length", str(len(body)).encode()),
               *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in err.headers.items())]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ResponseCompressionMiddleware:
    """gzip answers of at least ``minimum_size`` bytes to clients whose ``Accept-Encoding`` admits gzip.

    Starlette's :class:`GZipResponder` does the work (streamed answers chunk by chunk, 206 and already-encoded
    or compressed media types left alone, bodies under the threshold and 304s untouched, ``Vary:
    Accept-Encoding``); this only reads ``Accept-Encoding`` properly (``gzip;q=0`` means no).
    """

    def __init__(self, app: ASGIApp, minimum_size: int) -> None:
        self.app = app
        self.minimum_size = minimum_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.minimum_size > 0 \
                and accepts_gzip(Headers(scope=scope).get("accept-encoding", "")):
            await GZipResponder(self.app, self.minimum_size, compresslevel=6,
                                exclude_content_types=NOT_GZIPPED)(scope, receive, send)
            return
        await self.app(scope, receive, send)
