"""Conditional create/update/delete (http.html 0/1/many rules) and the masterIdentifier policy."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.harness import RunningServer, in_parallel

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def patient(system: str, value: str, family: str = "Petit") -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": value}],
            "name": [{"family": family}]}


def new_system() -> str:
    return f"urn:test:{uuid.uuid4().hex}"


def test_conditional_create_0_1_many(client: httpx.Client) -> None:
    sys = new_system()
    hdr = {**FHIR_JSON, "If-None-Exist": f"identifier={sys}|1"}
    first = client.post("/Patient", json=patient(sys, "1"), headers=hdr)
    assert first.status_code == 201, first.text
    again = client.post("/Patient", json=patient(sys, "1", "Other"), headers=hdr)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["name"][0]["family"] == "Petit"
    client.post("/Patient", json=patient(sys, "1"), headers=FHIR_JSON)  # plain create: a duplicate
    many = client.post("/Patient", json=patient(sys, "1"), headers=hdr)
    assert many.status_code == 412
    assert many.json()["resourceType"] == "OperationOutcome"


def test_conditional_update_0_1_many(client: httpx.Client) -> None:
    sys = new_system()
    url = f"/Patient?identifier={sys}|9"
    created = client.put(url, json=patient(sys, "9"), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    updated = client.put(url, json=patient(sys, "9", "Grand"), headers=FHIR_JSON)
    assert updated.status_code == 200 and updated.json()["id"] == pid and updated.json()["meta"]["versionId"] == "2"
    wrong_id = client.put(url, json={**patient(sys, "9"), "id": "someone-else"}, headers=FHIR_JSON)
    assert wrong_id.status_code == 400
    client.post("/Patient", json=patient(sys, "9"), headers=FHIR_JSON)
    assert client.put(url, json=patient(sys, "9"), headers=FHIR_JSON).status_code == 412


def test_conditional_delete_0_1_many(client: httpx.Client) -> None:
    sys = new_system()
    assert client.delete(f"/Patient?identifier={sys}|x").status_code == 204  # no match: nothing to do
    pid = client.post("/Patient", json=patient(sys, "x"), headers=FHIR_JSON).json()["id"]
    assert client.delete(f"/Patient?identifier={sys}|x").status_code == 204
    assert client.get(f"/Patient/{pid}").status_code == 410
    client.post("/Patient", json=patient(sys, "y"), headers=FHIR_JSON)
    client.post("/Patient", json=patient(sys, "y"), headers=FHIR_JSON)
    assert client.delete(f"/Patient?identifier={sys}|y").status_code == 412
    # a deleted resource no longer matches
    assert client.post("/Patient", json=patient(sys, "x"), headers={
        **FHIR_JSON, "If-None-Exist": f"identifier={sys}|x"}).status_code == 201


def test_criteria_forms_and_unsupported_criteria(client: httpx.Client) -> None:
    sys = new_system()
    pid = client.post("/Patient", json=patient(sys, "v1"), headers=FHIR_JSON).json()["id"]
    for crit in ("identifier=v1,zzz", f"_id={pid}", f"identifier={sys}|v1&_id={pid}"):
        resp = client.post("/Patient", json=patient(sys, "v1"), headers={**FHIR_JSON, "If-None-Exist": crit})
        assert resp.status_code == 200 and resp.json()["id"] == pid, crit
    # criteria the search compiler does not know are a 400, never an unsafe match
    resp = client.post("/Patient", json=patient(sys, "v1"), headers={**FHIR_JSON, "If-None-Exist": "nickname=P"})
    assert resp.status_code == 400
    assert "nickname" in resp.json()["issue"][0]["diagnostics"]
    resp = client.post("/Patient", json=patient(sys, "v1"),
                       headers={**FHIR_JSON, "If-None-Exist": f"identifier={sys}|v1&_sort=name"})
    assert resp.status_code == 400


def test_fifty_concurrent_identical_conditional_creates_make_one(server: RunningServer) -> None:
    sys = new_system()

    def create(c: httpx.Client, _: int) -> httpx.Response:
        return c.post("/Patient", json=patient(sys, "same"),
                      headers={**FHIR_JSON, "If-None-Exist": f"identifier={sys}|same"})

    responses = in_parallel(50, create, server.base_url)
    statuses = [r.status_code for r in responses]
    ids = {r.json()["id"] for r in responses if r.status_code in (200, 201)}
    assert sorted(set(statuses)) == [200, 201] and statuses.count(201) == 1, statuses
    assert len(ids) == 1
    with httpx.Client(base_url=server.base_url) as c:
        assert c.get("/Patient", params={"identifier": f"{sys}|same"}).json()["total"] == 1


def docref(master: str) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": "current",
            "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": master},
            "content": [{"attachment": {"contentType": "text/plain", "url": "http://example.org/doc"}}]}


def test_master_identifier_is_never_stored_twice(client: httpx.Client) -> None:
    master = f"urn:oid:1.2.3.{uuid.uuid4().int % 10**12}"
    first = client.post("/DocumentReference", json=docref(master), headers=FHIR_JSON)
    assert first.status_code == 201
    retry = client.post("/DocumentReference", json=docref(master), headers=FHIR_JSON)
    assert retry.status_code == 409
    issue = retry.json()["issue"][0]
    assert issue["expression"] == ["DocumentReference.masterIdentifier"]
    assert first.json()["id"] in issue["diagnostics"]
    # the idempotent retry: conditional create on the identifier (covers masterIdentifier)
    idem = client.post("/DocumentReference", json=docref(master),
                       headers={**FHIR_JSON, "If-None-Exist": f"identifier=urn:ietf:rfc:3986|{master}"})
    assert idem.status_code == 200 and idem.json()["id"] == first.json()["id"]
    # updating the holder itself is fine; giving another document the same masterIdentifier is not
    doc = first.json()
    assert client.put(f"/DocumentReference/{doc['id']}", json=doc, headers=FHIR_JSON).status_code == 200
    other = client.post("/DocumentReference", json=docref(master + ".9"), headers=FHIR_JSON).json()
    other["masterIdentifier"]["value"] = master
    assert client.put(f"/DocumentReference/{other['id']}", json=other, headers=FHIR_JSON).status_code == 409
    # in a transaction the whole Bundle fails
    resp = client.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": docref(master), "request": {"method": "POST", "url": "DocumentReference"}}]},
        headers=FHIR_JSON)
    assert resp.status_code == 409
    assert resp.json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.masterIdentifier"]
    # once deleted, the masterIdentifier is free again
    assert client.delete(f"/DocumentReference/{doc['id']}").status_code == 204
    assert client.post("/DocumentReference", json=docref(master), headers=FHIR_JSON).status_code == 201


def test_resources_stored_before_match_keys_are_matched(es_url: str, tmp_path: Any) -> None:
    """A store whose resources predate the match_key rows: the server backfills them when it starts."""
    from sqlalchemy import delete

    from fhir_server.storage import open_store
    from fhir_server.storage.schema import match_key, rules_version
    from tests.conftest import make_settings
    from tests.harness import start_server

    settings = make_settings(es_url, tmp_path)
    sys = new_system()
    store = open_store(settings.db_url)
    with store.unit() as unit:
        unit.put("Patient", "legacy", patient(sys, "old"), method="PUT")
    with store.engine.begin() as conn:
        conn.execute(delete(match_key))
        conn.execute(delete(rules_version))  # and the rules they were derived with
    store.dispose()
    srv = start_server(settings)
    try:
        with httpx.Client(base_url=srv.base_url, timeout=30) as c:
            resp = c.post("/Patient", json=patient(sys, "old"),
                          headers={**FHIR_JSON, "If-None-Exist": f"identifier={sys}|old"})
            assert resp.status_code == 200 and resp.json()["id"] == "legacy", resp.text
            assert c.put(f"/Patient?identifier={sys}|old", json=patient(sys, "old", "Neuf"),
                         headers=FHIR_JSON).json()["id"] == "legacy"
    finally:
        srv.stop()
