"""Conditional interactions on any search criteria (not only identifier/_id): 0/1/many rules,
standalone and in Bundles, chains, errors, and concurrency on a non-identifier criterion."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from tests.harness import RunningServer, in_parallel

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def person(family: str, birth: str = "1970-01-02", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}], "birthDate": birth, **extra}


def fresh() -> str:
    return "Fam" + uuid.uuid4().hex[:12]


def test_conditional_create_on_family_and_birthdate(client: httpx.Client) -> None:
    fam = fresh()
    crit = f"family={fam}&birthdate=1970-01-02"
    hdr = {**FHIR_JSON, "If-None-Exist": crit}
    first = client.post("/Patient", json=person(fam), headers=hdr)
    assert first.status_code == 201, first.text
    # at once (no sleep): the barrier makes the first write visible to the match
    again = client.post("/Patient", json=person(fam, gender="male"), headers=hdr)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert "gender" not in again.json()
    # another birth date does not match; the same family with two dates is then ambiguous without birthdate
    other = client.post("/Patient", json=person(fam, "1980-05-05"),
                        headers={**FHIR_JSON, "If-None-Exist": f"family={fam}&birthdate=1980-05-05"})
    assert other.status_code == 201
    many = client.post("/Patient", json=person(fam), headers={**FHIR_JSON, "If-None-Exist": f"family={fam}"})
    assert many.status_code == 412 and many.json()["resourceType"] == "OperationOutcome"
    # prefixes and modifiers are criteria like any other
    hit = client.post("/Patient", json=person(fam),
                      headers={**FHIR_JSON, "If-None-Exist": f"family:exact={fam}&birthdate=ge1975-01-01"})
    assert hit.status_code == 200 and hit.json()["id"] == other.json()["id"]


def test_conditional_update_delete_patch_on_general_criteria(client: httpx.Client) -> None:
    fam = fresh()
    url = "/Patient?" + urlencode({"family": fam, "gender": "female"})
    created = client.put(url, json=person(fam, gender="female"), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    updated = client.put(url, json=person(fam, "1971-01-01", gender="female"), headers=FHIR_JSON)
    assert updated.status_code == 200 and updated.json()["id"] == pid
    assert updated.json()["meta"]["versionId"] == "2"
    assert client.put(url, json={**person(fam, gender="female"), "id": "x"}, headers=FHIR_JSON).status_code == 400
    patched = client.patch(url, json=[{"op": "add", "path": "/active", "value": True}],
                           headers={"Content-Type": "application/json-patch+json"})
    assert patched.status_code == 200 and patched.json()["active"] is True and patched.json()["id"] == pid
    assert client.patch("/Patient?" + urlencode({"family": fam, "gender": "male"}), json=[],
                        headers={"Content-Type": "application/json-patch+json"}).status_code == 404
    client.post("/Patient", json=person(fam, gender="female"), headers=FHIR_JSON)
    assert client.put(url, json=person(fam, gender="female"), headers=FHIR_JSON).status_code == 412
    assert client.delete(url).status_code == 412
    assert client.delete("/Patient?" + urlencode({"family": fam, "gender": "other"})).status_code == 204
    assert client.delete(f"/Patient?_id={pid}").status_code == 204
    assert client.delete(url).status_code == 204  # one left: deleted
    assert client.get("/Patient", params={"family": fam}).json()["total"] == 0


def test_chained_criteria(client: httpx.Client) -> None:
    system = f"urn:test:{uuid.uuid4().hex}"
    pat = client.post("/Patient", json={"resourceType": "Patient", "identifier": [{"system": system, "value": "p"}]},
                      headers=FHIR_JSON).json()
    doc = {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": f"Patient/{pat['id']}"},
           "content": [{"attachment": {"contentType": "text/plain", "url": "http://example.org/d"}}]}
    crit = f"patient.identifier={system}|p"
    first = client.post("/DocumentReference", json=doc, headers={**FHIR_JSON, "If-None-Exist": crit})
    assert first.status_code == 201, first.text
    again = client.post("/DocumentReference", json=doc, headers={**FHIR_JSON, "If-None-Exist": crit})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]


def test_criteria_errors(client: httpx.Client) -> None:
    for crit in ("nickname=x", "family=x&_include=Patient:link", "birthdate=notadate", "family="):
        resp = client.post("/Patient", json=person("X"), headers={**FHIR_JSON, "If-None-Exist": crit})
        assert resp.status_code == 400, (crit, resp.text)
        assert resp.json()["issue"][0].get("expression"), crit
    resp = client.put("/Patient?nickname=x", json=person("X"), headers=FHIR_JSON)
    assert resp.status_code == 400
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": person("X"), "request": {"method": "POST", "url": "Patient", "ifNoneExist": "nickname=x"}}]}
    resp = client.post("/", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 400 and resp.json()["issue"][0]["expression"][0].startswith("Bundle.entry[0]")


def test_transaction_conditional_reference_and_if_none_exist(client: httpx.Client) -> None:
    fam = fresh()
    pid = client.post("/Patient", json=person(fam), headers=FHIR_JSON).json()["id"]
    ref = f"Patient?{urlencode({'family': fam, 'birthdate': '1970-01-02'})}"
    doc = {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": ref},
           "content": [{"attachment": {"contentType": "text/plain", "url": "http://example.org/d"}}]}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": doc, "request": {"method": "POST", "url": "DocumentReference"}},
        {"resource": person(fam), "request": {"method": "POST", "url": "Patient", "ifNoneExist": ref.split("?")[1]}},
    ]}
    resp = client.post("/", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    entries = resp.json()["entry"]
    assert entries[0]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    assert entries[1]["response"]["status"] == "200 OK" and entries[1]["resource"]["id"] == pid
    # no match: the whole Bundle fails with 404 naming the entry; several: 412
    doc["subject"]["reference"] = f"Patient?family={fresh()}"
    resp = client.post("/", json={**bundle, "entry": bundle["entry"][:1]}, headers=FHIR_JSON)
    assert resp.status_code == 404 and "Bundle.entry[0]" in resp.json()["issue"][0]["diagnostics"]
    client.post("/Patient", json=person(fam), headers=FHIR_JSON)
    doc["subject"]["reference"] = f"Patient?family={fam}"
    assert client.post("/", json={**bundle, "entry": bundle["entry"][:1]}, headers=FHIR_JSON).status_code == 412


def test_general_criteria_see_the_committed_state_not_the_bundle(client: httpx.Client) -> None:
    """Documented choice: general criteria are evaluated on the state before the transaction."""
    fam = fresh()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": person(fam),
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"family={fam}"}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": person(fam),
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"family={fam}"}},
    ]}
    resp = client.post("/", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200
    assert [e["response"]["status"] for e in resp.json()["entry"]] == ["201 Created", "201 Created"]
    # in a batch each entry is its own transaction: the second sees the first
    fam = fresh()
    batch = {**bundle, "type": "batch", "entry": [{**e, "request": {**e["request"], "ifNoneExist": f"family={fam}"},
                                                   "resource": person(fam)} for e in bundle["entry"]]}
    statuses = [e["response"]["status"] for e in client.post("/", json=batch, headers=FHIR_JSON).json()["entry"]]
    assert statuses == ["201 Created", "200 OK"]
    # a resource the transaction deletes no longer matches
    fam = fresh()
    pid = client.post("/Patient", json=person(fam), headers=FHIR_JSON).json()["id"]
    resp = client.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": f"Patient/{pid}"}},
        {"resource": person(fam), "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"family={fam}"}},
    ]}, headers=FHIR_JSON)
    assert resp.status_code == 200 and resp.json()["entry"][1]["response"]["status"] == "201 Created", resp.text


def test_fifty_concurrent_conditional_creates_on_a_name_make_one(server: RunningServer) -> None:
    fam = fresh()
    crit = f"family={fam}&birthdate=1970-01-02"

    def create(c: httpx.Client, _: int) -> httpx.Response:
        return c.post("/Patient", json=person(fam), headers={**FHIR_JSON, "If-None-Exist": crit})

    responses = in_parallel(50, create, server.base_url)
    statuses = [r.status_code for r in responses]
    ids = {r.json()["id"] for r in responses if r.status_code in (200, 201)}
    assert statuses.count(201) == 1 and statuses.count(200) == 49, statuses
    assert len(ids) == 1
    with httpx.Client(base_url=server.base_url) as c:
        assert c.get(f"/Patient?family={quote(fam)}").json()["total"] == 1


def test_transaction_conditional_update_and_delete_on_general_criteria(client: httpx.Client) -> None:
    fam, gone = fresh(), fresh()
    pid = client.post("/Patient", json=person(fam), headers=FHIR_JSON).json()["id"]
    old = client.post("/Patient", json=person(gone), headers=FHIR_JSON).json()["id"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": person(fam, gender="other"),
         "request": {"method": "PUT", "url": f"Patient?family={fam}&birthdate=1970-01-02"}},
        {"request": {"method": "DELETE", "url": f"Patient?family={gone}"}},
        {"resource": person(fresh()), "request": {"method": "PUT", "url": f"Patient?family={fresh()}"}},
    ]}
    resp = client.post("/", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    entries = resp.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK" and entries[0]["resource"]["id"] == pid
    assert entries[1]["response"]["status"] == "204 No Content"
    assert entries[2]["response"]["status"] == "201 Created"
    assert client.get(f"/Patient/{old}").status_code == 410
    assert client.get(f"/Patient/{pid}").json()["gender"] == "other"
    # several matches fail the whole transaction with 412 naming the entry
    client.post("/Patient", json=person(fam), headers=FHIR_JSON)
    resp = client.post("/", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 412 and "Bundle.entry[0]" in resp.json()["issue"][0]["diagnostics"]


def test_parallel_transactions_with_general_if_none_exist_make_one(server: RunningServer) -> None:
    fam = fresh()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:8e7b2c1a-0c1d-4c55-9d7e-3f1f0b6f9a01", "resource": person(fam),
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"family={fam}&birthdate=1970-01-02"}},
        {"resource": {"resourceType": "DocumentReference", "status": "current",
                      "subject": {"reference": "urn:uuid:8e7b2c1a-0c1d-4c55-9d7e-3f1f0b6f9a01"},
                      "content": [{"attachment": {"contentType": "text/plain", "url": "http://example.org/d"}}]},
         "request": {"method": "POST", "url": "DocumentReference"}}]}

    def transact(c: httpx.Client, _: int) -> tuple[int, str | None]:
        resp = c.post("/", json=bundle, headers=FHIR_JSON)
        return resp.status_code, resp.json()["entry"][1]["resource"]["subject"]["reference"] if (
            resp.status_code == 200) else None

    outcomes = in_parallel(20, transact, server.base_url)
    assert {s for s, _ in outcomes} == {200}, outcomes
    assert len({subject for _, subject in outcomes}) == 1  # every document points at the one Patient
    with httpx.Client(base_url=server.base_url) as c:
        assert c.get(f"/Patient?family={quote(fam)}").json()["total"] == 1
