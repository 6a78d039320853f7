"""IHE MHD / ANS PDSm document sharing: ITI-65 provide bundles, replacement, ITI-68 retrieval, ITI-105.

The official PDSm4DMP examples are used as-is except for their known defects,
corrected in the test copies (see ``_corrected``): the comprehensive
DocumentReferences lack ``custodian`` (1.. in PDSm) and ``masterIdentifier.use``
(``usual``, 1.. in MHD 4.2.3); the conditional subject reference
``Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|123456789012345`` needs that
patient to exist, so the tests first store the published FR Core INS patient
with that NIR.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

FHIR_JSON = {"Content-Type": "application/fhir+json"}
NIR = "123456789012345"
CUSTODIAN = {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "10000001234"}}


def _corrected(resource: dict[str, Any]) -> dict[str, Any]:
    if resource.get("resourceType") == "DocumentReference" and "masterIdentifier" in resource:
        resource.setdefault("custodian", CUSTODIAN)
        resource["masterIdentifier"].setdefault("use", "usual")
    return resource


@pytest.fixture(scope="module")
def examples(shared_data: Path) -> dict[str, Any]:
    base = shared_data / "fr" / "pdsm4dmp-json"
    out = {p.stem: json.loads(p.read_text()) for p in base.glob("*.json")}
    out["patient"] = json.loads((shared_data / "fr" / "pdsm-published-json" / "Patient-fr-patient-123.json")
                                .read_text())
    return out


@pytest.fixture(scope="module")
def ins_patient(server: Any, examples: dict[str, Any]) -> str:
    pat = copy.deepcopy(examples["patient"])
    pat["id"] = "ins-td2"
    for ident in pat["identifier"]:
        if ident.get("system") == "urn:oid:1.2.250.1.213.1.4.8":
            ident["value"] = NIR
    with httpx.Client(base_url=server.base_url) as c:
        resp = c.put("/Patient/ins-td2", json=pat, headers=FHIR_JSON)
        assert resp.status_code in (200, 201), resp.text
    return "Patient/ins-td2"


def submission(examples: dict[str, Any], master_suffix: str = "") -> dict[str, Any]:
    bundle = copy.deepcopy(examples["Bundle-example-td2-iti65-lot-soumission"])
    for e in bundle["entry"]:
        _corrected(e["resource"])
        if master_suffix and e["resource"]["resourceType"] == "DocumentReference":
            e["resource"]["masterIdentifier"]["value"] += master_suffix
    return bundle


def by_type(bundle: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(e for e in bundle["entry"] if e["resource"]["resourceType"] == type_)


def _count(client: httpx.Client, type_: str, **params: str) -> int:
    total: int = client.get(f"/{type_}", params={"_summary": "count", **params}).json()["total"]
    return total


def test_iti65_submission_then_iti68_retrieval(client: httpx.Client, examples: dict[str, Any],
                                               ins_patient: str) -> None:
    resp = client.post("/", json=submission(examples, ".1"), headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["type"] == "transaction-response"
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created"] * 3
    lst, doc = out["entry"][0]["resource"], out["entry"][1]["resource"]
    assert lst["subject"]["reference"] == ins_patient == doc["subject"]["reference"]
    assert lst["entry"][0]["item"]["reference"] == f"DocumentReference/{doc['id']}"
    url = doc["content"][0]["attachment"]["url"]
    assert url.startswith("Binary/")
    raw = client.get(f"/{url}")  # ITI-68
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("application/xml")
    assert base64.b64encode(raw.content).decode() == by_type(submission(examples), "Binary")["resource"]["data"]
    assert _count(client, "DocumentReference", patient=ins_patient, status="current") >= 1


def test_a_retried_submission_never_stores_the_document_twice(client: httpx.Client, examples: dict[str, Any],
                                                             ins_patient: str) -> None:
    bundle = submission(examples, ".2")
    assert client.post("/", json=bundle, headers=FHIR_JSON).status_code == 200
    lists = _count(client, "List", patient=ins_patient)
    retry = client.post("/", json=bundle, headers=FHIR_JSON)
    assert retry.status_code == 409
    assert retry.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.masterIdentifier"]
    assert _count(client, "List", patient=ins_patient) == lists  # nothing of the retry was kept


@pytest.mark.parametrize(("field", "value"), [("hash", base64.b64encode(b"x" * 20).decode()), ("size", 81)])
def test_size_and_hash_are_checked_against_the_binary(client: httpx.Client, examples: dict[str, Any],
                                                     ins_patient: str, field: str, value: Any) -> None:
    bundle = submission(examples, f".3{field}")
    by_type(bundle, "DocumentReference")["resource"]["content"][0]["attachment"][field] = value
    resp = client.post("/", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 422
    assert resp.json()["issue"][0]["expression"] == [f"Bundle.entry[1].resource.content[0].attachment.{field}"]


def test_the_patient_is_the_same_across_submission_set_and_documents(client: httpx.Client, server: Any,
                                                                     examples: dict[str, Any],
                                                                     ins_patient: str) -> None:
    other = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Autre"}]},
                        headers=FHIR_JSON).json()["id"]
    bundle = submission(examples, ".4")
    by_type(bundle, "DocumentReference")["resource"]["subject"] = {"reference": f"Patient/{other}"}
    resp = client.post("/", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 422
    assert resp.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.subject"]


def _store_doc_x(client: httpx.Client, examples: dict[str, Any]) -> None:
    old = _corrected(copy.deepcopy(examples["DocumentReference-doc-x-id"]))
    old["status"] = "current"  # the example shows it after its replacement
    resp = client.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": old, "request": {"method": "PUT", "url": "DocumentReference/doc-x-id"}}]}, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text


def _replacement(examples: dict[str, Any]) -> dict[str, Any]:
    bundle = copy.deepcopy(examples["Bundle-example-td2-1-remplacement"])
    for e in bundle["entry"]:
        _corrected(e["resource"])
    return bundle


def test_replacement_is_atomic_with_the_new_document(client: httpx.Client, examples: dict[str, Any],
                                                     ins_patient: str) -> None:
    _store_doc_x(client, examples)
    bad = _replacement(examples)
    by_type(bad, "DocumentReference")["resource"]["content"][0]["attachment"]["size"] = 1
    assert client.post("/", json=bad, headers=FHIR_JSON).status_code == 422
    assert client.get("/DocumentReference/doc-x-id").json()["status"] == "current"  # untouched

    resp = client.post("/", json=_replacement(examples), headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    statuses = [e["response"]["status"] for e in resp.json()["entry"]]
    assert statuses == ["201 Created", "201 Created", "200 OK", "201 Created"]
    old = client.get("/DocumentReference/doc-x-id").json()
    assert old["status"] == "superseded" and old["meta"]["versionId"] == "2"
    new = resp.json()["entry"][1]["resource"]
    assert new["relatesTo"][0] == {"code": "replaces", "target": {"reference": "DocumentReference/doc-x-id"}}
    # replacing a superseded document again is refused
    again = _replacement(examples)
    by_type(again, "DocumentReference")["resource"]["masterIdentifier"]["value"] += ".again"
    assert client.post("/", json=again, headers=FHIR_JSON).status_code == 409


def test_replacement_without_patch_entry_supersedes_the_old_document(client: httpx.Client,
                                                                      examples: dict[str, Any],
                                                                      ins_patient: str) -> None:
    first = client.post("/", json=submission(examples, ".5"), headers=FHIR_JSON).json()
    old_id = first["entry"][1]["resource"]["id"]
    bundle = submission(examples, ".6")
    by_type(bundle, "DocumentReference")["resource"]["relatesTo"] = [
        {"code": "replaces", "target": {"reference": f"DocumentReference/{old_id}"}}]
    assert client.post("/", json=bundle, headers=FHIR_JSON).status_code == 200
    assert client.get(f"/DocumentReference/{old_id}").json()["status"] == "superseded"
    missing = submission(examples, ".7")
    by_type(missing, "DocumentReference")["resource"]["relatesTo"] = [
        {"code": "replaces", "target": {"reference": "DocumentReference/not-there"}}]
    assert client.post("/", json=missing, headers=FHIR_JSON).status_code == 404


def test_iti105_simplified_publish_stores_the_bytes_as_a_binary(client: httpx.Client, examples: dict[str, Any],
                                                                ins_patient: str) -> None:
    doc = copy.deepcopy(examples["DocumentReference-example-td2-iti105-publication-simplifiee"])
    doc["subject"] = {"reference": ins_patient}  # conditional references exist only in transactions
    doc["custodian"] = CUSTODIAN
    data = base64.b64decode(doc["content"][0]["attachment"]["data"])
    resp = client.post("/DocumentReference", json=doc, headers=FHIR_JSON)
    assert resp.status_code == 201, resp.text
    att = resp.json()["content"][0]["attachment"]
    assert "data" not in att and att["size"] == len(data) and att["hash"] == "A/hMRrv6Y15BjSM8kMLidrz+mHc="
    raw = client.get(f"/{att['url']}")
    assert raw.content == data and raw.headers["content-type"].startswith("application/xml")
    # wrong declared hash: 422, nothing stored
    doc["masterIdentifier"]["value"] += ".bad"
    doc["content"][0]["attachment"]["hash"] = base64.b64encode(b"0" * 20).decode()
    assert client.post("/DocumentReference", json=doc, headers=FHIR_JSON).status_code == 422


def test_a_document_replaced_in_its_own_transaction_is_found_and_superseded(client: httpx.Client,
                                                                             ins_patient: str) -> None:
    """B replaces A, both created by the same transaction: the target is one of the Bundle's entries (it used to
    be a 404 "the replaced DocumentReference is not known", looked up in the store only)."""
    def doc(**extra: Any) -> dict[str, Any]:
        return {"resourceType": "DocumentReference", "status": "current",
                "subject": {"reference": f"Patient/{ins_patient}"},
                "content": [{"attachment": {"contentType": "text/plain", "url": "http://elsewhere.example/d"}}],
                **extra}

    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:doc-a", "resource": doc(), "request": {"method": "POST", "url": "DocumentReference"}},
        {"fullUrl": "urn:uuid:doc-b", "resource": doc(relatesTo=[{"code": "replaces",
                                                                  "target": {"reference": "urn:uuid:doc-a"}}]),
         "request": {"method": "POST", "url": "DocumentReference"}}]}
    resp = client.post("/", json=bundle, headers={"Content-Type": "application/fhir+json"})
    assert resp.status_code == 200, resp.text
    a_id = resp.json()["entry"][0]["response"]["location"].split("/")[1]
    assert client.get(f"/DocumentReference/{a_id}").json()["status"] == "superseded"
