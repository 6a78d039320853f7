"""What real clients send: CORS from browser apps, gzip both ways, Accept negotiation, $versions, OPTIONS.

Over HTTP against real servers: one open (authentication off) allowing two origins with credentials and a
1 MB body limit, one secured (bearer tokens) allowing any origin.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import uuid
import zlib
from collections.abc import Iterator

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.api.cors import cors_middleware
from fhir_server.api.encoding import CHUNK, _Inflater, decoding_receive
from fhir_server.errors import FHIRError
from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.settings import Settings
from tests.conftest import make_settings
from tests.harness import RunningServer, start_server

APP = "https://app.example"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
PATIENT = b'{"resourceType":"Patient","name":[{"family":"Gzip"}]}'
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
MAX_BODY = 1_000_000


@pytest.fixture(scope="module")
def open_srv(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = make_settings(es_url, tmp_path_factory.mktemp("conv"), cors_origins=f"{APP}, https://b.example/",
                             cors_credentials=True, max_body_bytes=MAX_BODY)
    with start_server(settings) as srv:
        yield srv


@pytest.fixture
def http(open_srv: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=open_srv.base_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> DevIssuer:
    dev = DevIssuer(tmp_path_factory.mktemp("issuer"))
    dev.ensure_keys()
    return dev


@pytest.fixture(scope="module")
def secured(es_url: str, tmp_path_factory: pytest.TempPathFactory, issuer: DevIssuer) -> Iterator[RunningServer]:
    settings = make_settings(es_url, tmp_path_factory.mktemp("conv-auth"), auth="jwt", auth_issuer=issuer.issuer,
                             auth_audience=issuer.audience, auth_jwks_file=issuer.jwks_file, cors_origins="*")
    with start_server(settings) as srv:
        yield srv


def _preflight(client: httpx.Client, origin: str, path: str = "/Patient") -> httpx.Response:
    return client.options(path, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, prefer, if-match, if-none-exist, "
                                          "if-none-match"})


def _vary(resp: httpx.Response) -> set[str]:
    return {v.strip().lower() for v in resp.headers.get("vary", "").split(",") if v.strip()}


def _create(client: httpx.Client) -> httpx.Response:
    resp = client.post("/Patient", content=PATIENT, headers=FHIR_JSON)
    assert resp.status_code == 201, resp.text
    return resp


# --- CORS ---------------------------------------------------------------------------------------------------

def test_preflight_is_answered_before_authentication(secured: RunningServer, issuer: DevIssuer) -> None:
    with httpx.Client(base_url=secured.base_url, timeout=30) as anonymous:
        pre = _preflight(anonymous, APP)  # a browser never sends a token on a preflight
        assert pre.status_code == 200, pre.text
        assert pre.headers["access-control-allow-origin"] == "*"
        allowed = {h.strip().lower() for h in pre.headers["access-control-allow-headers"].split(",")}
        assert {"authorization", "content-type", "prefer", "if-match", "if-none-exist", "if-none-match"} <= allowed
        assert "PATCH" in pre.headers["access-control-allow-methods"]
        refused = anonymous.get("/Patient", headers={"Origin": APP})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "*"  # readable
    token = issuer.mint("app", "system/*.cruds")
    with httpx.Client(base_url=secured.base_url, timeout=30, headers={"Authorization": f"Bearer {token}"}) as c:
        created = c.post("/Patient", content=PATIENT, headers={**FHIR_JSON, "Origin": APP})
        assert created.status_code == 201, created.text
        assert created.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in created.headers  # never * with credentials
        exposed = {h.strip().lower() for h in created.headers["access-control-expose-headers"].split(",")}
        assert {"etag", "location", "content-location", "last-modified"} <= exposed


def test_listed_origin_is_echoed_with_credentials_and_vary_origin(http: httpx.Client) -> None:
    for origin in (APP, "https://b.example"):
        resp = http.get("/metadata", headers={"Origin": origin})
        assert resp.headers["access-control-allow-origin"] == origin
        assert resp.headers["access-control-allow-credentials"] == "true"
        assert "origin" in _vary(resp)
        pre = _preflight(http, origin)
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == origin
    other = http.get("/metadata", headers={"Origin": "https://evil.example"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    pre = _preflight(http, "https://evil.example")
    assert pre.status_code == 400 and "access-control-allow-origin" not in pre.headers


def test_cors_is_off_by_default_and_star_with_credentials_refused(client: httpx.Client) -> None:
    resp = client.get("/metadata", headers={"Origin": APP})
    assert "access-control-allow-origin" not in resp.headers
    with pytest.raises(ValueError, match="list the origins"):
        cors_middleware(Settings(cors_origins="*", cors_credentials=True))


# --- gzip ---------------------------------------------------------------------------------------------------

def test_large_answers_are_gzipped_when_accepted(http: httpx.Client) -> None:
    plain = http.get("/metadata", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    zipped = http.get("/metadata", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and "accept-encoding" in _vary(zipped)
    assert int(zipped.headers["content-length"]) < len(plain.content) / 4
    assert zipped.json()["resourceType"] == "CapabilityStatement"  # httpx decoded it
    refused = http.get("/metadata", headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused.headers
    head = http.head("/metadata", headers={"Accept-Encoding": "gzip"})
    assert head.status_code == 200 and head.headers["content-encoding"] == "gzip" and head.content == b""


def test_small_and_not_modified_answers_are_not_gzipped(http: httpx.Client) -> None:
    created = _create(http)
    pid = created.json()["id"]
    small = http.get(f"/Patient/{pid}", headers={"Accept-Encoding": "gzip"})
    assert small.status_code == 200 and "content-encoding" not in small.headers
    cached = http.get(f"/Patient/{pid}", headers={"Accept-Encoding": "gzip", "If-None-Match": created.headers["ETag"]})
    assert cached.status_code == 304 and cached.content == b"" and "content-encoding" not in cached.headers


@pytest.mark.parametrize("coding, encode", [
    ("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress),
    ("deflate", lambda b: (lambda c: c.compress(b) + c.flush())(zlib.compressobj(wbits=-15))),  # raw deflate
    ("identity", lambda b: b)])
def test_compressed_request_bodies_are_decoded(http: httpx.Client, coding: str, encode: object) -> None:
    assert callable(encode)
    resp = http.post("/Patient", content=encode(PATIENT), headers={**FHIR_JSON, "Content-Encoding": coding})
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"][0]["family"] == "Gzip"


def test_unknown_coding_415_and_corrupt_body_400(http: httpx.Client) -> None:
    br = http.post("/Patient", content=PATIENT, headers={**FHIR_JSON, "Content-Encoding": "br"})
    assert br.status_code == 415 and br.json()["resourceType"] == "OperationOutcome"
    assert "gzip" in br.headers["accept-encoding"]
    corrupt = http.post("/Patient", content=b"not gzip at all", headers={**FHIR_JSON, "Content-Encoding": "gzip"})
    assert corrupt.status_code == 400 and corrupt.json()["issue"][0]["code"] == "invalid"
    truncated = http.post("/Patient", content=gzip.compress(PATIENT)[:-12],
                          headers={**FHIR_JSON, "Content-Encoding": "gzip"})
    assert truncated.status_code == 400 and "truncated" in truncated.text


@pytest.mark.parametrize("path, ctype", [("/Patient", "application/fhir+json"),
                                         ("/Patient/_search", "application/x-www-form-urlencoded"),
                                         ("", "application/fhir+json")])
def test_zip_bomb_gets_413(http: httpx.Client, path: str, ctype: str) -> None:
    bomb = gzip.compress(b" " * (50 * MAX_BODY), compresslevel=9)  # ~50 kB on the wire, 50 MB decoded
    assert len(bomb) < MAX_BODY / 10
    resp = http.post(path, content=bomb, headers={"Content-Type": ctype, "Content-Encoding": "gzip"})
    assert resp.status_code == 413, resp.text
    assert resp.json()["issue"][0]["code"] == "too-costly"


def _decode(body: bytes, coding: str, chunk: int, limit: int) -> bytes:
    messages = iter([{"type": "http.request", "body": body[i:i + chunk], "more_body": i + chunk < len(body)}
                     for i in range(0, max(len(body), 1), chunk)])

    async def receive() -> dict[str, object]:
        return next(messages)

    decoded = decoding_receive(receive, _Inflater(coding, limit))

    async def read_all() -> bytes:
        out = []
        while True:
            message = await decoded()
            assert len(message["body"]) <= CHUNK  # never more than a chunk inflated at once
            out.append(message["body"])
            if not message["more_body"]:
                return b"".join(out)

    return asyncio.run(read_all())


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=3000), repeat=st.integers(1, 200), chunk=st.integers(1, 5000),
       coding=st.sampled_from(["gzip", "deflate"]), limit=st.integers(0, 400_000))
def test_decoder_property(data: bytes, repeat: int, chunk: int, coding: str, limit: int) -> None:
    """Any chunking of a valid stream decodes to the original, or to a 413 exactly when it exceeds the limit."""
    plain = data * repeat
    body = gzip.compress(plain) if coding == "gzip" else zlib.compress(plain)
    if len(plain) > limit:
        with pytest.raises(FHIRError) as err:
            _decode(body, coding, chunk, limit)
        assert err.value.status == 413
    else:
        assert _decode(body, coding, chunk, limit) == plain


@settings(max_examples=60, deadline=None)
@given(garbage=st.binary(max_size=200), coding=st.sampled_from(["gzip", "deflate"]))
def test_decoder_garbage_is_400(garbage: bytes, coding: str) -> None:
    try:
        _decode(garbage, coding, 7, 10_000)
    except FHIRError as err:
        assert err.status in (400, 413)


# --- negotiation --------------------------------------------------------------------------------------------

def test_negotiated_answers_vary_on_accept(http: httpx.Client) -> None:
    pid = _create(http).json()["id"]
    for path in (f"/Patient/{pid}", "/Patient", "/metadata", "/Patient/unknown"):
        assert "accept" in _vary(http.get(path)), path


@pytest.mark.parametrize("accept", ["text/csv", "application/fhir+json; fhirVersion=3.0", "text/html",
                                    "application/fhir+xml;fhirVersion=5.0, application/pdf"])
def test_unservable_accept_is_406(http: httpx.Client, accept: str) -> None:
    resp = http.get("/metadata", headers={"Accept": accept})
    assert resp.status_code == 406, resp.text
    assert resp.json()["issue"][0]["code"] == "not-supported"


@pytest.mark.parametrize("fmt", ["html", "text/html"])
def test_format_html_is_406(http: httpx.Client, fmt: str) -> None:
    assert http.get("/metadata", params={"_format": fmt}).status_code == 406


@pytest.mark.parametrize("accept, media", [
    ("*/*", "application/fhir+json"), ("application/json", "application/fhir+json"),
    ("application/xml", "application/fhir+xml"), (BROWSER, "application/fhir+json"),
    ("application/fhir+json; fhirVersion=4.0", "application/fhir+json"),
    ("application/fhir+xml; fhirVersion=4.0.1", "application/fhir+xml"),
    ("application/fhir+xml; fhirVersion=3.0, application/fhir+json; fhirVersion=4.0; q=0.5", "application/fhir+json"),
])
def test_servable_accept_gets_fhir(http: httpx.Client, accept: str, media: str) -> None:
    resp = http.get("/metadata", headers={"Accept": accept})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith(media)


def test_body_in_another_fhir_version_is_415(http: httpx.Client) -> None:
    resp = http.post("/Patient", content=PATIENT, headers={"Content-Type": "application/fhir+json; fhirVersion=3.0"})
    assert resp.status_code == 415, resp.text
    ok = http.post("/Patient", content=PATIENT, headers={"Content-Type": "application/fhir+json; fhirVersion=4.0"})
    assert ok.status_code == 201, ok.text


def test_raw_binary_download_keeps_its_accept(http: httpx.Client) -> None:
    bid = http.post("/Binary", content=b"a,b\n1,2\n", headers={"Content-Type": "text/csv"}).json()["id"]
    raw = http.get(f"/Binary/{bid}", headers={"Accept": "text/csv"})
    assert raw.status_code == 200 and raw.content == b"a,b\n1,2\n" and "accept" in _vary(raw)
    pdf = b"%PDF-1.4 " + bytes(range(256)) * 20  # a compressed format: not gzipped again
    bid = http.post("/Binary", content=pdf, headers={"Content-Type": "application/pdf"}).json()["id"]
    raw = http.get(f"/Binary/{bid}", headers={"Accept": "application/pdf", "Accept-Encoding": "gzip"})
    assert raw.content == pdf and "content-encoding" not in raw.headers


def test_versions_operation(http: httpx.Client) -> None:
    resp = http.get("/$versions")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"resourceType": "Parameters", "parameter": [{"name": "version", "valueCode": "4.0"},
                                                                       {"name": "default", "valueCode": "4.0"}]}
    xml = http.get("/$versions", headers={"Accept": "application/fhir+xml"})
    assert xml.status_code == 200 and b'<valueCode value="4.0"/>' in xml.content
    operations = http.get("/metadata").json()["rest"][0]["operation"]
    assert {"name": "versions", "definition": "http://hl7.org/fhir/OperationDefinition/CapabilityStatement-versions"} \
        in operations


def test_options_on_the_base_is_the_capability_statement(http: httpx.Client, secured: RunningServer) -> None:
    for path in ("", "/"):
        resp = http.options(path)
        assert resp.status_code == 200 and resp.json()["resourceType"] == "CapabilityStatement"
    with httpx.Client(base_url=secured.base_url, timeout=30) as anonymous:  # public, like /metadata
        resp = anonymous.options("")
        assert resp.status_code == 200 and resp.json()["resourceType"] == "CapabilityStatement"


def test_raw_non_ascii_url_is_refused_by_the_http_parser(open_srv: RunningServer) -> None:
    """uvicorn's h11 parser refuses a request-target with bytes outside visible ASCII (RFC 9112 §3.2) before the
    application runs: the answer is still a 400 OperationOutcome (api/transport.py); percent-encoded, the same
    search works."""
    settings_ = open_srv.settings
    with socket.create_connection((settings_.host, settings_.port), timeout=30) as sock:
        sock.sendall(b"GET /fhir/Patient?name=\xc3\xa9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/fhir+json" in head, answer
    outcome = orjson.loads(body)
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["expression"] == ["url"]
    with httpx.Client(base_url=open_srv.base_url, timeout=30) as c:
        assert c.get("/Patient", params={"name": "é"}).status_code == 200


def test_search_links_keep_the_format_asked_for(server: RunningServer) -> None:
    """A client that asks ``_format=xml`` (no Accept) gets XML on the next page too (HAPI found links dropping it)."""
    family = f"Fmt{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        for _ in range(2):
            assert c.post("/Patient", json={"resourceType": "Patient", "name": [{"family": family}]},
                          headers={"Content-Type": "application/fhir+json"}).status_code == 201
        first = c.get("/Patient", params={"family": family, "_count": "1", "_format": "json", "_pretty": "true"})
        links = {lk["relation"]: lk["url"] for lk in first.json()["link"]}
        assert "_format=json" in links["self"] and "_format=json" in links["next"] and "_pretty=true" in links["next"]
        second = httpx.get(links["next"].replace("_format=json", "_format=xml"), timeout=30)
        assert second.status_code == 200 and second.headers["content-type"].startswith("application/fhir+xml")
