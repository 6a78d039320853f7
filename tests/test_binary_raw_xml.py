"""Raw XML content (a CDA document) posted to Binary is stored as-is, not parsed as FHIR XML."""

from __future__ import annotations

import httpx

CDA = (b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- a clinical document -->\n'
       b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>Compte rendu</title></ClinicalDocument>')


def test_raw_cda_round_trips_byte_for_byte(client: httpx.Client) -> None:
    resp = client.post("/Binary", content=CDA, headers={"Content-Type": "application/xml"})
    assert resp.status_code == 201, resp.text
    bid = resp.headers["Location"].split("/Binary/")[1].split("/")[0]
    raw = client.get(f"/Binary/{bid}", headers={"Accept": "application/xml"})
    assert raw.status_code == 200
    assert raw.content == CDA
    assert raw.headers["Content-Type"].startswith("application/xml")


def test_fhir_binary_in_xml_is_still_a_resource(client: httpx.Client) -> None:
    body = (b'<Binary xmlns="http://hl7.org/fhir"><contentType value="text/plain"/>'
            b'<data value="aGVsbG8="/></Binary>')
    resp = client.post("/Binary", content=body, headers={"Content-Type": "application/fhir+xml"})
    assert resp.status_code == 201, resp.text
    bid = resp.headers["Location"].split("/Binary/")[1].split("/")[0]
    assert client.get(f"/Binary/{bid}").content == b"hello"


def test_oversized_raw_binary_is_413(client: httpx.Client, server: object) -> None:
    limit = server.settings.max_body_bytes  # type: ignore[attr-defined]
    resp = client.post("/Binary", content=b"x" * (limit + 1), headers={"Content-Type": "application/pdf"})
    assert resp.status_code == 413
