"""Raw Binary answers (ITI-68) cannot become stored XSS: never sniffed, never run, always a download.

A client may store any bytes under any ``contentType`` (text/html, image/svg+xml...). Served raw from the
server's origin they would run in a browser that opens the link, with the user's session; so every raw answer
carries ``nosniff``, a ``sandbox`` CSP and ``Content-Disposition: attachment``, and a ``contentType`` a header
cannot carry as is is served as ``application/octet-stream``. Every other answer carries ``nosniff`` too.
"""

from __future__ import annotations

import base64

import h11
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.api.responses import safe_media_type

SCRIPT = b"<html><body><script>alert(document.cookie)</script></body></html>"
ACTIVE = ["text/html", "text/html; charset=utf-8", "image/svg+xml", "application/xhtml+xml", "text/xml",
          "application/javascript", "application/pdf", "text/plain", "application/octet-stream"]


def assert_inert(r: httpx.Response, bid: str) -> None:
    assert r.headers["x-content-type-options"] == "nosniff"
    csp = [d.strip() for d in r.headers["content-security-policy"].split(";")]
    assert "default-src 'none'" in csp and "sandbox" in csp
    assert r.headers["content-disposition"] == f'attachment; filename="Binary-{bid}"'


@pytest.mark.parametrize("media", ACTIVE)
def test_raw_binary_is_an_inert_download(client: httpx.Client, media: str) -> None:
    created = client.post("/Binary", content=SCRIPT, headers={"Content-Type": media,
                                                               "Accept": "application/fhir+json"})
    assert created.status_code == 201, created.text
    bid = created.json()["id"]
    raw = client.get(f"/Binary/{bid}")
    assert raw.status_code == 200 and raw.content == SCRIPT
    assert raw.headers["content-type"].split(";")[0] == media.split(";")[0]  # the type is kept, made inert
    assert_inert(raw, bid)
    # a conditional read the client's copy satisfies, and HEAD: the same headers
    assert_inert(client.get(f"/Binary/{bid}", headers={"If-None-Match": raw.headers["etag"]}), bid)
    assert_inert(client.head(f"/Binary/{bid}"), bid)


@pytest.mark.parametrize("content_type", ["text/html\r\nX-Injected: 1", "text/html\nSet-Cookie: a=b", "html",
                                          "text/html; charset=\"é\"", "text/html;charset=\u2603", "text /html",
                                          "text/html;"])
def test_a_content_type_no_header_can_carry_is_served_as_octet_stream(client: httpx.Client,
                                                                      content_type: str) -> None:
    body = {"resourceType": "Binary", "contentType": content_type, "data": base64.b64encode(SCRIPT).decode()}
    created = client.post("/Binary", json=body)
    if created.status_code != 201:  # refused at the door is as good, as long as it is the client's error
        assert 400 <= created.status_code < 500, created.text
        return
    bid = created.json()["id"]
    raw = client.get(f"/Binary/{bid}")
    assert raw.status_code == 200 and raw.content == SCRIPT
    assert raw.headers["content-type"] == "application/octet-stream"
    assert "x-injected" not in raw.headers and "set-cookie" not in raw.headers
    assert_inert(raw, bid)


def test_every_answer_is_nosniff(client: httpx.Client) -> None:
    answers = [client.get("/metadata"), client.get("/Patient/unknown"), client.get("/Patient", params={"x": "<b>"}),
               client.post("/Patient", content=b"<html>", headers={"Content-Type": "text/html"}),
               client.get("/nowhere/at/all/really"), client.get("/_history")]
    for r in answers:
        assert r.headers.get("x-content-type-options") == "nosniff", (r.request.url, r.status_code)


@given(st.text(max_size=80))
def test_safe_media_type_is_a_valid_header_value(content_type: str) -> None:
    served = safe_media_type(content_type)
    assert served in (content_type, "application/octet-stream")
    h11.Response(status_code=200, headers=[("content-type", served)])  # raises on CR, LF, NUL, non-latin-1
    assert "/" in served and served.isascii() and "\n" not in served and "\r" not in served
