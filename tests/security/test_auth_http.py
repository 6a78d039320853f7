"""Authentication and authorisation over HTTP, against a server running with FHIR_AUTH=jwt.

A leakage probe: a masked document, another patient's data and an unfiltered path are each tried
through read, vread, search, counts and history; none may show up in a body, a count or a link.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.security.policy import TRE_A07
from tests.harness import RunningServer
from tests.security.support import client_for, create_as, start_secured

FHIR_JSON = {"Content-Type": "application/fhir+json"}



@pytest.fixture(scope="module")
def secured(es_url: str, tmp_path_factory: pytest.TempPathFactory, issuer: DevIssuer) -> Iterator[RunningServer]:
    with start_secured(es_url, tmp_path_factory.mktemp("auth"), issuer) as srv:
        yield srv



@pytest.fixture(scope="module")
def world(secured: RunningServer, issuer: DevIssuer) -> dict[str, Any]:
    """Two patients; documents: plain, masked for professionals, invisible to the patient."""
    admin = client_for(secured, issuer.mint("backend", "system/*.cruds"))

    create = partial(create_as, admin)

    tag = uuid.uuid4().hex[:8]
    p1 = create({"resourceType": "Patient", "name": [{"family": f"Alpha{tag}"}]})
    p2 = create({"resourceType": "Patient", "name": [{"family": f"Beta{tag}"}]})

    def doc(patient: str, label: str | None) -> str:
        res: dict[str, Any] = {"resourceType": "DocumentReference", "status": "current",
                               "subject": {"reference": f"Patient/{patient}"},
                               "content": [{"attachment": {"contentType": "text/plain", "url": "http://x/d"}}]}
        if label:
            res["securityLabel"] = [{"coding": [{"system": TRE_A07, "code": label}]}]
        return create(res)

    return {"p1": p1, "p2": p2, "plain": doc(p1, None), "masked": doc(p1, "MASQUE_PS"),
            "hidden": doc(p1, "INVISIBLE_PATIENT"), "other": doc(p2, None), "admin": admin, "tag": tag}


def ids(resp: httpx.Response) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {e["resource"]["id"] for e in resp.json().get("entry", [])}


def test_metadata_is_public_and_everything_else_needs_a_token(secured: RunningServer) -> None:
    with client_for(secured, None) as anon:
        assert anon.get("/metadata").status_code == 200
        for method, path in (("GET", "/Patient"), ("GET", "/Patient/x"), ("POST", "/Patient"), ("GET", "/_history")):
            resp = anon.request(method, path)
            assert resp.status_code == 401, (method, path)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert resp.json()["resourceType"] == "OperationOutcome"
    with client_for(secured, "not-a-jwt") as bad:
        assert bad.get("/Patient").status_code == 401


def test_smart_configuration(secured: RunningServer, issuer: DevIssuer) -> None:
    with client_for(secured, None) as anon:
        conf = anon.get("/.well-known/smart-configuration").json()
    assert conf["issuer"] == issuer.issuer
    assert "permission-v2" in conf["capabilities"]
    with client_for(secured, None) as anon:
        security = anon.get("/metadata").json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert "Consent" in security["description"]


def test_missing_scope_is_403(secured: RunningServer, issuer: DevIssuer, world: dict[str, Any]) -> None:
    with client_for(secured, issuer.mint("u", "user/Patient.rs", fhir_user="Practitioner/1")) as c:
        assert c.get("/Immunization").status_code == 403
        assert c.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON).status_code == 403
        assert c.get(f"/Patient/{world['p1']}").status_code == 200


def test_patient_sees_only_own_compartment(secured: RunningServer, issuer: DevIssuer, world: dict[str, Any]) -> None:
    token = issuer.mint("patient-1", "patient/*.rs", patient=world["p1"])
    with client_for(secured, token) as c:
        assert c.get(f"/Patient/{world['p1']}").status_code == 200
        assert c.get(f"/Patient/{world['p2']}").status_code == 404
        assert c.get(f"/DocumentReference/{world['other']}").status_code == 404
        assert c.get(f"/DocumentReference/{world['other']}/_history/1").status_code == 404
        assert ids(c.get("/Patient", params={"family": f"Beta{world['tag']}"})) == set()
        assert ids(c.get("/Patient")) == {world["p1"]}
        docs = c.get("/DocumentReference", params={"_total": "accurate"})
        assert ids(docs) == {world["plain"], world["masked"]}  # masked for professionals only
        assert docs.json()["total"] == 2
        count = c.get("/DocumentReference", params={"_summary": "count", "subject": f"Patient/{world['p2']}"})
        assert count.json()["total"] == 0
        assert c.get(f"/DocumentReference/{world['hidden']}").status_code == 404
        # writing into another patient's compartment
        foreign = {"resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": "x"},
                   "patient": {"reference": f"Patient/{world['p2']}"}, "occurrenceDateTime": "2024-01-01"}
        assert c.post("/Immunization", json=foreign, headers=FHIR_JSON).status_code == 403
        # type and system history: filtered like a search, never refused nor leaking
        for path in ("/DocumentReference/_history", "/_history"):
            shown = c.get(path, params={"_count": "1000"})
            assert shown.status_code == 200, shown.text
            assert "total" not in shown.json()
            # (the patient's own AuditEvents name the ids they asked for: nothing they did not already know)
            body = str([e for e in shown.json()["entry"] if "/AuditEvent/" not in e["fullUrl"]])
            for hidden in (world["other"], world["hidden"], world["p2"]):
                assert hidden not in body
        assert {e["resource"]["id"] for e in c.get("/DocumentReference/_history").json()["entry"]} == {
            world["plain"], world["masked"]}


def test_practitioner_never_sees_masked_documents(secured: RunningServer, issuer: DevIssuer,
                                                  world: dict[str, Any]) -> None:
    token = issuer.mint("dr", "user/*.cruds", fhir_user="Practitioner/dr")
    with client_for(secured, token) as c:
        assert c.get(f"/DocumentReference/{world['masked']}").status_code == 404
        assert c.get(f"/DocumentReference/{world['masked']}/_history/1").status_code == 404
        assert c.get(f"/DocumentReference/{world['masked']}/_history").status_code == 404
        found = c.get("/DocumentReference", params={"subject": f"Patient/{world['p1']}", "_total": "accurate"})
        assert ids(found) == {world["plain"], world["hidden"]}
        assert found.json()["total"] == 2
        assert world["masked"] not in found.text
        counted = c.get("/DocumentReference", params={"subject": f"Patient/{world['p1']}", "_summary": "count"})
        assert counted.json()["total"] == 2
        # deleting it answers as deleting an unknown id (204), and changes nothing
        assert c.delete(f"/DocumentReference/{world['masked']}").status_code == 204
    assert world["admin"].get(f"/DocumentReference/{world['masked']}").json()["meta"]["versionId"] == "1"


def test_system_token_sees_everything(world: dict[str, Any]) -> None:
    found = world["admin"].get("/DocumentReference", params={"subject": f"Patient/{world['p1']}"})
    assert ids(found) == {world["plain"], world["masked"], world["hidden"]}


def test_expired_token(secured: RunningServer, issuer: DevIssuer) -> None:
    with client_for(secured, issuer.mint("x", "system/*.cruds", ttl_s=-120)) as c:
        assert c.get("/Patient").status_code == 401


def test_dev_issuer_files_are_private(issuer: DevIssuer) -> None:
    assert (Path(issuer.private_key_file).stat().st_mode & 0o077) == 0


def test_conditional_writes_and_validate_do_not_bypass_masking(secured: RunningServer, issuer: DevIssuer,
                                                               world: dict[str, Any]) -> None:
    token = issuer.mint("dr", "user/*.cruds", fhir_user="Practitioner/dr")
    with client_for(secured, token) as c:
        masked = world["masked"]
        assert c.post(f"/DocumentReference/{masked}/$validate").status_code == 404
        # the masked document never matches a conditional write: as if it did not exist
        assert c.delete("/DocumentReference", params={"_id": masked}).status_code == 204
        patch = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]
        resp = c.patch("/DocumentReference", params={"_id": masked}, content=orjson.dumps(patch),
                       headers={"Content-Type": "application/json-patch+json"})
        assert resp.status_code == 404
        created = c.put("/DocumentReference", params={"_id": masked},
                        json={"resourceType": "DocumentReference", "status": "current",
                              "content": [{"attachment": {"url": "http://x/new"}}]}, headers=FHIR_JSON)
        assert created.status_code == 201 and created.json()["id"] != masked
        empty = c.post("/", json={"resourceType": "Bundle", "type": "batch"}, headers=FHIR_JSON)
        assert empty.status_code == 200 and empty.json()["entry"] == []
    still = world["admin"].get(f"/DocumentReference/{world['masked']}")
    assert still.status_code == 200 and still.json()["status"] == "current"
