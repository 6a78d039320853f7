"""The ANS PDSm 3.1.1 published examples as an ITI-65 provide bundle and an ITI-105 publication.

Defects corrected in the test copies (``_fix_contained``, ``_provide_bundle``; the
simplified example's contained INS identifier lacks ``use``):
contained resources carry ``meta.versionId``/``lastUpdated`` (dom-4); the
comprehensive DocumentReference's author, authenticator and sourcePatientInfo
are literal references although MHD Comprehensive requires them contained (they
become contained copies); it declares ``size`` 345678 and the SHA-1 of the
empty string for ``Binary/6789``, which the examples do not provide, so the test
bundle carries a Binary and the attachment's size/hash are those of its bytes. References between the examples
(``DocumentReference/exemple-pdsm-documentreference``, ``Binary/6789``) become
the bundle's ``urn:uuid`` fullUrls, as a Document Source would send them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

FHIR_JSON = {"Content-Type": "application/fhir+json"}
PDF = b"%PDF-1.4\n% CR Hospitalisation (test)\n%%EOF\n"


@pytest.fixture(scope="module")
def pdsm(shared_data: Path) -> dict[str, Any]:
    base = shared_data / "fr" / "pdsm-published-json"
    return {p.stem: json.loads(p.read_text()) for p in base.glob("*.json")}


def _fix_contained(resource: dict[str, Any]) -> dict[str, Any]:
    for c in resource.get("contained", []):
        for key in ("versionId", "lastUpdated"):
            c.get("meta", {}).pop(key, None)
    return resource


def _comprehensive(pdsm: dict[str, Any]) -> dict[str, Any]:
    doc = _fix_contained(copy.deepcopy(pdsm["DocumentReference-exemple-pdsm-documentreference"]))
    org = next(c for c in _fix_contained(copy.deepcopy(pdsm["List-ExampleSubmissionSet"]))["contained"]
               if c["resourceType"] == "Organization")
    ins = pdsm["Patient-fr-patient-123"]["identifier"]
    doc["contained"] += [org, {"resourceType": "Patient", "id": "patient-source", "identifier": ins}]
    doc["author"] = [{"reference": "#practitioner-example"}]
    doc["authenticator"] = {"reference": "#org-example"}
    doc["context"]["sourcePatientInfo"] = {"reference": "#patient-source"}
    return doc


def _provide_bundle(pdsm: dict[str, Any]) -> dict[str, Any]:
    doc_url, bin_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    doc = _comprehensive(pdsm)
    doc["masterIdentifier"]["value"] = f"urn:uuid:{uuid.uuid4()}"
    att = doc["content"][0]["attachment"]
    att.update(url=bin_url, size=len(PDF), hash=base64.b64encode(hashlib.sha1(PDF).digest()).decode())
    lists = []
    for name in ("List-ExampleSubmissionSet", "List-ExampleFolder"):
        lst = _fix_contained(copy.deepcopy(pdsm[name]))
        for e in lst.get("entry", []):
            e["item"]["reference"] = doc_url
        lists.append(lst)
    entries = [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": lists[0], "request": {"method": "POST", "url": "List"}},
        {"fullUrl": doc_url, "resource": doc, "request": {"method": "POST", "url": "DocumentReference"}},
        {"fullUrl": bin_url, "resource": {"resourceType": "Binary", "contentType": "application/pdf",
                                          "data": base64.b64encode(PDF).decode()},
         "request": {"method": "POST", "url": "Binary"}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": lists[1], "request": {"method": "POST", "url": "List"}},
    ]
    return {"resourceType": "Bundle", "meta": {"profile": [
        "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-comprehensive-provide-document-bundle"]},
        "type": "transaction", "entry": entries}


@pytest.fixture(scope="module")
def patient(server: Any, pdsm: dict[str, Any]) -> str:
    with httpx.Client(base_url=server.base_url) as c:
        resp = c.put("/Patient/fr-patient-123", json=pdsm["Patient-fr-patient-123"], headers=FHIR_JSON)
        assert resp.status_code in (200, 201), resp.text
    return "Patient/fr-patient-123"


def test_pdsm_examples_as_a_provide_bundle(client: httpx.Client, pdsm: dict[str, Any], patient: str) -> None:
    resp = client.post("/", json=_provide_bundle(pdsm), headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    sset, doc, binary, folder = (e["resource"] for e in resp.json()["entry"])
    doc_ref = f"DocumentReference/{doc['id']}"
    assert sset["entry"][0]["item"]["reference"] == folder["entry"][0]["item"]["reference"] == doc_ref
    assert doc["content"][0]["attachment"]["url"] == f"Binary/{binary['id']}"
    assert client.get(f"/Binary/{binary['id']}").content == PDF
    found = client.get("/List", params={"patient": patient, "code": "submissionset", "_id": sset["id"]}).json()
    assert found["total"] == 1


def test_the_published_size_and_hash_defect_is_refused(client: httpx.Client, pdsm: dict[str, Any],
                                                        patient: str) -> None:
    bundle = _provide_bundle(pdsm)
    published = pdsm["DocumentReference-exemple-pdsm-documentreference"]["content"][0]["attachment"]
    bundle["entry"][1]["resource"]["content"][0]["attachment"]["hash"] = published["hash"]
    resp = client.post("/", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 422
    assert resp.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.content[0].attachment.hash"]


def test_pdsm_simplified_publish_example(client: httpx.Client, pdsm: dict[str, Any], patient: str) -> None:
    doc = copy.deepcopy(pdsm["DocumentReference-PDSmSimplifiedExample"])
    doc["contained"][0]["identifier"][0]["use"] = "official"  # defect: INS identifier without use (FR Core 1..)
    resp = client.post("/DocumentReference", json=doc, headers=FHIR_JSON)
    assert resp.status_code == 201, resp.text
    att = resp.json()["content"][0]["attachment"]
    assert client.get(f"/{att['url']}").content == b"Hello World"
