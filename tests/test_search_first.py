"""First search: the parameters that prove the pipeline store → outbox → Elasticsearch → Bundle."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

FHIR_JSON = {"Content-Type": "application/fhir+json"}
INS = "urn:oid:1.2.250.1.213.1.4.8"


def create(client: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    resp = client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def search(client: httpx.Client, path: str, **params: Any) -> dict[str, Any]:
    resp = client.get(path, params=params)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
    return body


def test_name_is_accent_and_case_insensitive_prefix(client: httpx.Client) -> None:
    family = f"Lefèvre{uuid.uuid4().hex[:6]}"
    p = create(client, {"resourceType": "Patient", "name": [{"family": family, "given": ["Hélène", "Zoé"]}]})
    assert ids(search(client, "/Patient", name="helene", family=family.lower())) == [p["id"]]
    assert ids(search(client, "/Patient", family=family.upper().replace("È", "E"))) == [p["id"]]
    assert ids(search(client, "/Patient", name=family[:5].lower(), given="zo")) != []
    assert ids(search(client, "/Patient", family=family + "x")) == []
    # starts-with, not contains
    assert p["id"] not in ids(search(client, "/Patient", name="elene"))


def test_identifier_system_value(client: httpx.Client) -> None:
    nir = f"2{uuid.uuid4().int % 10**14:014d}"
    p = create(client, {"resourceType": "Patient", "identifier": [{"system": INS, "value": nir}]})
    assert ids(search(client, "/Patient", identifier=f"{INS}|{nir}")) == [p["id"]]
    assert ids(search(client, "/Patient", identifier=nir)) == [p["id"]]
    assert ids(search(client, "/Patient", identifier=f"urn:other|{nir}")) == []


def test_id_and_last_updated(client: httpx.Client) -> None:
    p = create(client, {"resourceType": "Patient", "gender": "other"})
    assert ids(search(client, "/Patient", _id=p["id"])) == [p["id"]]
    assert ids(search(client, "/Patient", _id=p["id"], _lastUpdated="ge2020-01-01")) == [p["id"]]
    assert ids(search(client, "/Patient", _id=p["id"], _lastUpdated="lt2020-01-01")) == []


def test_document_reference_by_patient_subject_status_type(client: httpx.Client) -> None:
    pat = create(client, {"resourceType": "Patient"})
    other = create(client, {"resourceType": "Patient"})
    loinc = "http://loinc.org"
    doc = create(client, {
        "resourceType": "DocumentReference", "status": "current",
        "type": {"coding": [{"system": loinc, "code": "11488-4"}]},
        "subject": {"reference": f"Patient/{pat['id']}"},
        "content": [{"attachment": {"contentType": "text/plain", "url": "http://example.org/doc"}}],
    })
    create(client, {
        "resourceType": "DocumentReference", "status": "superseded",
        "subject": {"reference": f"Patient/{other['id']}"},
        "content": [{"attachment": {"contentType": "text/plain", "url": "http://example.org/doc2"}}],
    })
    assert ids(search(client, "/DocumentReference", patient=f"Patient/{pat['id']}")) == [doc["id"]]
    assert ids(search(client, "/DocumentReference", patient=pat["id"])) == [doc["id"]]
    assert ids(search(client, "/DocumentReference", subject=f"Patient/{pat['id']}", status="current")) == [doc["id"]]
    assert ids(search(client, "/DocumentReference", subject=f"Patient/{pat['id']}", status="superseded")) == []
    assert ids(search(client, "/DocumentReference", patient=pat["id"], type=f"{loinc}|11488-4")) == [doc["id"]]
    assert ids(search(client, "/DocumentReference", patient=pat["id"], type="11488-4")) == [doc["id"]]
    assert ids(search(client, "/DocumentReference", patient=pat["id"], type=f"{loinc}|00000-0")) == []


def test_immunization_by_patient(client: httpx.Client) -> None:
    pat = create(client, {"resourceType": "Patient"})
    imm = create(client, {"resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": "DTP"},
                          "patient": {"reference": f"Patient/{pat['id']}"}, "occurrenceDateTime": "2024-03-01"})
    assert ids(search(client, "/Immunization", patient=f"Patient/{pat['id']}")) == [imm["id"]]


def test_read_your_writes_update_and_delete(client: httpx.Client) -> None:
    family = f"Ryw{uuid.uuid4().hex[:8]}"
    p = create(client, {"resourceType": "Patient", "name": [{"family": family}]})
    assert ids(search(client, "/Patient", family=family)) == [p["id"]]
    p["name"] = [{"family": family + "Renamed"}]
    assert client.put(f"/Patient/{p['id']}", json=p, headers=FHIR_JSON).status_code == 200
    assert ids(search(client, "/Patient", family=family + "renamed")) == [p["id"]]
    assert ids(search(client, "/Patient", family=family, **{"family:exact": family})) == []
    assert client.delete(f"/Patient/{p['id']}").status_code == 204
    assert ids(search(client, "/Patient", family=family)) == []


def test_total_count_and_paging_via_next_links(client: httpx.Client) -> None:
    family = f"Page{uuid.uuid4().hex[:8]}"
    created = {create(client, {"resourceType": "Patient", "name": [{"family": family}]})["id"] for _ in range(23)}
    first = search(client, "/Patient", family=family, _count=10)
    assert first["total"] == 23
    self_link = next(link["url"] for link in first["link"] if link["relation"] == "self")
    assert self_link.startswith("http://") and "family=" in self_link and "_count=10" in self_link
    seen = ids(first)
    url = next((link["url"] for link in first["link"] if link["relation"] == "next"), None)
    pages = 1
    while url:
        assert url.startswith("http://")
        assert "_cursor" in parse_qs(urlparse(url).query)
        page = client.get(url).json()
        seen += ids(page)
        pages += 1
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
        assert pages < 10
    assert pages == 3
    assert len(seen) == 23 and set(seen) == created


def test_paging_on_the_id_serves_each_resource_present_all_along_once(client: httpx.Client) -> None:
    """Keyset paging on the id, without a snapshot (docs/search.md): writes between pages neither skip nor
    repeat a resource that matches all along; one created meanwhile may be served, once."""
    family = f"Stable{uuid.uuid4().hex[:8]}"
    created = [create(client, {"resourceType": "Patient", "name": [{"family": family}]}) for _ in range(12)]
    first = search(client, "/Patient", family=family, _count=5, _sort="_id")
    # writes between pages: an update of a resource not served yet, new matches
    later = next(p for p in created if p["id"] not in ids(first))
    later["name"] = [{"family": family, "given": ["Updated"]}]
    assert client.put(f"/Patient/{later['id']}", json=later, headers=FHIR_JSON).status_code == 200
    new = {create(client, {"resourceType": "Patient", "name": [{"family": family}]})["id"] for _ in range(5)}
    seen = ids(first)
    url = next((link["url"] for link in first["link"] if link["relation"] == "next"), None)
    while url:
        page = client.get(url).json()
        seen += ids(page)
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert len(seen) == len(set(seen))
    assert {p["id"] for p in created} <= set(seen) <= {p["id"] for p in created} | new


def test_unknown_parameter_ignored_and_left_out_of_self_link(client: httpx.Client) -> None:
    body = search(client, "/Patient", foo="bar", _count=1)
    self_link = next(link["url"] for link in body["link"] if link["relation"] == "self")
    assert "foo" not in self_link
    strict = client.get("/Patient", params={"foo": "bar"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert strict.json()["resourceType"] == "OperationOutcome"


def test_bad_modifier_and_value_are_400(client: httpx.Client) -> None:
    for params in ({"family:nonsense": "x"}, {"_lastUpdated": "not-a-date"}, {"_count": "-3"}):
        resp = client.get("/Patient", params=params)
        assert resp.status_code == 400, (params, resp.text)
        assert resp.json()["resourceType"] == "OperationOutcome"


def test_post_search_equals_get(client: httpx.Client) -> None:
    family = f"Post{uuid.uuid4().hex[:8]}"
    p = create(client, {"resourceType": "Patient", "name": [{"family": family}]})
    resp = client.post("/Patient/_search", data={"family": family},
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 200
    assert ids(resp.json()) == [p["id"]] == ids(search(client, "/Patient", family=family))


def test_summary_count(client: httpx.Client) -> None:
    family = f"Cnt{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        create(client, {"resourceType": "Patient", "name": [{"family": family}]})
    body = search(client, "/Patient", family=family, _summary="count")
    assert body["total"] == 3
    assert "entry" not in body


def test_count_zero_gives_the_total_only(client: httpx.Client) -> None:
    family = f"Zero{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        create(client, {"resourceType": "Patient", "name": [{"family": family}]})
    body = search(client, "/Patient", family=family, _count=0)
    assert body["total"] == 2
    assert body.get("entry", []) == []
    assert not any(link["relation"] == "next" for link in body["link"])
