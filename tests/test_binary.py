"""Binary create/read (binary.html) and ITI-68 retrieval: raw bytes unless a FHIR format is asked."""

from __future__ import annotations

import base64

import httpx

FHIR_JSON = {"Content-Type": "application/fhir+json"}
PDF = b"%PDF-1.4 fake \x00\xff bytes"


def test_raw_binary_round_trip(client: httpx.Client) -> None:
    created = client.post("/Binary", content=PDF, headers={"Content-Type": "application/pdf"})
    assert created.status_code == 201, created.text
    bid = created.json()["id"]
    assert created.headers["Location"].endswith(f"/Binary/{bid}/_history/1")
    raw = client.get(f"/Binary/{bid}", headers={"Accept": "application/pdf"})
    assert raw.status_code == 200 and raw.content == PDF
    assert raw.headers["content-type"] == "application/pdf" and raw.headers["ETag"] == 'W/"1"'
    assert client.get(f"/Binary/{bid}").content == PDF  # no Accept: the document itself
    fhir = client.get(f"/Binary/{bid}", headers={"Accept": "application/fhir+json"})
    assert fhir.headers["content-type"].startswith("application/fhir+json")
    assert base64.b64decode(fhir.json()["data"]) == PDF and fhir.json()["contentType"] == "application/pdf"
    assert client.get(f"/Binary/{bid}", params={"_format": "json"}).json()["resourceType"] == "Binary"


def test_fhir_json_binary_and_errors(client: httpx.Client) -> None:
    body = {"resourceType": "Binary", "contentType": "text/plain", "data": base64.b64encode(b"bonjour").decode()}
    bid = client.post("/Binary", json=body, headers=FHIR_JSON).json()["id"]
    assert client.get(f"/Binary/{bid}").content == b"bonjour"
    assert client.get("/Binary/nope").status_code == 404
    assert client.get("/Binary").status_code == 405  # not searchable
    bad = client.post("/Binary", json={**body, "data": "###"}, headers=FHIR_JSON)
    assert bad.status_code in (400, 422)


def test_binary_is_never_indexed(client: httpx.Client, server: object) -> None:
    ctx = server.ctx  # type: ignore[attr-defined]
    client.post("/Binary", content=b"x", headers={"Content-Type": "text/plain"})
    assert all(e.type != "Binary" for e in ctx.store.outbox.pending(10_000))
