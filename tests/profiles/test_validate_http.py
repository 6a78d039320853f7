"""$validate over HTTP against the real server, the write path's 422 with profiles, and the offline CLI."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.cli import main

from .conftest import SHARED, load

FHIR_JSON = {"Content-Type": "application/fhir+json"}
INS = SHARED / "fr" / "frcore" / "Patient-FRCorePatientExample.json"
PDSM = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"


def _issues(resp: httpx.Response) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    issues: list[dict[str, Any]] = body["issue"]
    return issues


def _errors(resp: httpx.Response) -> set[str]:
    return {e for i in _issues(resp) if i["severity"] in ("error", "fatal") for e in i.get("expression", ())}


def test_type_validate_of_a_valid_resource(client: httpx.Client) -> None:
    issues = _issues(client.post("/Patient/$validate", json=load(INS), headers=FHIR_JSON))
    assert not [i for i in issues if i["severity"] in ("error", "fatal")]


def test_type_validate_reports_errors_with_200(client: httpx.Client) -> None:
    bad = load(INS)
    del bad["birthDate"]
    bad["gender"] = "other"
    assert {"Patient.birthDate", "Patient.gender"} <= _errors(
        client.post("/Patient/$validate", json=bad, headers=FHIR_JSON))


def test_parameters_body_with_profile_and_mode(client: httpx.Client) -> None:
    doc = load(SHARED / "r4-examples" / "DocumentReference-example.json")
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": doc}, {"name": "mode", "valueCode": "create"},
        {"name": "profile", "valueUri": PDSM + "pdsm-comprehensive-document-reference"}]}
    errors = _errors(client.post("/DocumentReference/$validate", json=params, headers=FHIR_JSON))
    assert {"DocumentReference.docStatus", "DocumentReference.author[0]"} <= errors


def test_instance_validate_of_stored_resource_and_update_mode(client: httpx.Client) -> None:
    patient = load(INS)
    patient["id"] = "validate-me"
    assert client.put("/Patient/validate-me", json=patient, headers=FHIR_JSON).status_code in (200, 201)
    assert not _errors(client.get("/Patient/validate-me/$validate"))
    other = {**patient, "id": "someone-else"}
    assert "Patient.id" in _errors(client.post("/Patient/validate-me/$validate", json=other, headers=FHIR_JSON))
    assert not _errors(client.post("/Patient/validate-me/$validate?mode=delete"))


def test_validate_rejects_unusable_requests(client: httpx.Client) -> None:
    assert client.post("/Patient/$validate?mode=bogus", json=load(INS), headers=FHIR_JSON).status_code == 400
    assert client.post("/Patient/$validate", content=b"{oops", headers=FHIR_JSON).status_code == 400
    assert client.get("/Patient/nobody-here/$validate").status_code == 404
    mismatch = client.post("/Immunization/$validate", json=load(INS), headers=FHIR_JSON)
    assert "resourceType" in _errors(mismatch)


def test_write_with_profile_errors_is_422_with_expressions(client: httpx.Client) -> None:
    bad = load(INS)
    bad.pop("id")
    bad["identifier"][0]["use"] = "usual"
    resp = client.post("/Patient", json=bad, headers=FHIR_JSON)
    assert resp.status_code == 422
    assert "Patient.identifier[0].use" in {e for i in resp.json()["issue"] for e in i.get("expression", ())}


def test_write_returns_warnings_on_request(client: httpx.Client) -> None:
    good = load(INS)
    good.pop("id")
    resp = client.post("/Patient", json=good, headers={**FHIR_JSON, "Prefer": "return=OperationOutcome"})
    assert resp.status_code == 201
    assert any(i["severity"] == "warning" and i.get("expression") == ["Patient.identifier[0].value"]
               for i in resp.json()["issue"])


def test_cli_validate_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(INS), str(SHARED / "fr" / "frcore")]) == 0
    bad = load(INS)
    bad["gender"] = "other"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    (tmp_path / "many.ndjson").write_text(json.dumps(load(INS)) + "\n" + json.dumps(bad) + "\n")
    assert main(["validate", str(tmp_path / "bad.json")]) == 1
    assert main(["validate", str(tmp_path / "many.ndjson")]) == 1
    out = capsys.readouterr().out
    assert "Patient.gender" in out and "many.ndjson:2: invalid" in out and "many.ndjson:1: valid" in out
    assert main(["validate", str(tmp_path / "missing.json")]) == 2


def test_iti65_bundle_can_be_validated_over_http(client: httpx.Client) -> None:
    from .test_french import ITI65, example

    bundle = example(ITI65)
    assert not _errors(client.post("/Bundle/$validate", json=bundle, headers=FHIR_JSON))
    bundle["entry"] = bundle["entry"][1:]
    assert "Bundle.entry" in _errors(client.post("/Bundle/$validate", json=bundle, headers=FHIR_JSON))
    assert client.post("/Nope/$validate", json={"resourceType": "Nope"}, headers=FHIR_JSON).status_code == 404


def _expressions(resp: httpx.Response) -> set[str]:
    return {e for i in resp.json()["issue"] if i["severity"] in ("error", "fatal") for e in i.get("expression", ())}


def test_conditional_reference_outside_a_transaction_is_refused(client: httpx.Client) -> None:
    imm = load(SHARED / "r4-examples" / "Immunization-example.json")
    imm["patient"] = {"reference": "Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|1234567890123"}
    where = "Immunization.patient.reference"
    assert where in _errors(client.post("/Immunization/$validate", json=imm, headers=FHIR_JSON))
    created = client.post("/Immunization", json=imm, headers=FHIR_JSON)
    assert created.status_code == 422 and where in _expressions(created)
    updated = client.put(f"/Immunization/{imm['id']}", json=imm, headers=FHIR_JSON)
    assert updated.status_code == 422 and where in _expressions(updated)
    assert client.get(f"/Immunization/{imm['id']}").status_code == 404  # nothing stored with a query for a reference
    imm["patient"] = {"reference": "Patient/example"}
    assert where not in _errors(client.post("/Immunization/$validate", json=imm, headers=FHIR_JSON))


def test_conditional_reference_in_a_transaction_is_resolved_before_validation(client: httpx.Client) -> None:
    value = str(uuid.uuid4())
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.3.4.5", "value": value}]}
    imm = load(SHARED / "r4-examples" / "Immunization-example.json")
    imm.pop("id")
    imm["patient"] = {"reference": f"Patient?identifier=urn:oid:1.2.3.4.5|{value}"}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": patient, "request": {"method": "POST", "url": "Patient"}},
        {"resource": imm, "request": {"method": "POST", "url": "Immunization"}}]}
    assert not _errors(client.post("/Bundle/$validate", json=bundle, headers=FHIR_JSON))
    done = client.post("/", json=bundle, headers=FHIR_JSON)
    assert done.status_code == 200, done.text
    pid = done.json()["entry"][0]["response"]["location"].split("/")[1]
    stored = client.get("/" + done.json()["entry"][1]["response"]["location"].split("/_history")[0]).json()
    assert stored["patient"]["reference"] == f"Patient/{pid}"
