"""PATCH: JSON Patch and FHIRPath Patch, conditional PATCH, the PDSm metadata-update rule (405)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.interactions.patch import apply_fhirpath_patch, apply_json_patch

FHIR_JSON = {"Content-Type": "application/fhir+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
IS_ARCHIVED = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"


def op(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    out = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        key, val = value
        out.append({"name": name, key: val})
    return {"name": "operation", "part": out}


def params(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(ops)}


def docref() -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": "current",
            "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:1.2.{uuid.uuid4().int % 10**9}"},
            "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}],
            "description": "compte rendu",
            "content": [{"attachment": {"contentType": "text/plain", "url": "http://example.org/d"}}]}


def test_json_patch_creates_a_version(client: httpx.Client) -> None:
    p = client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON).json()
    resp = client.patch(f"/Patient/{p['id']}", json=[{"op": "replace", "path": "/gender", "value": "female"},
                                                    {"op": "add", "path": "/name", "value": [{"family": "Roux"}]}],
                        headers=JSON_PATCH)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["gender"] == "female" and body["name"][0]["family"] == "Roux" and body["meta"]["versionId"] == "2"
    assert resp.headers["ETag"] == 'W/"2"'
    history = client.get(f"/Patient/{p['id']}/_history").json()
    assert history["total"] == 2
    # a failing test operation, a bad If-Match, an unknown id
    assert client.patch(f"/Patient/{p['id']}", json=[{"op": "test", "path": "/gender", "value": "male"}],
                        headers=JSON_PATCH).status_code == 422
    assert client.patch(f"/Patient/{p['id']}", json=[], headers={**JSON_PATCH, "If-Match": 'W/"1"'}
                        ).status_code == 412
    assert client.patch("/Patient/unknown", json=[], headers=JSON_PATCH).status_code == 404
    # a patch leaving an invalid resource is refused like an update would be
    assert client.patch(f"/Patient/{p['id']}", json=[{"op": "replace", "path": "/gender", "value": "x"}],
                        headers=JSON_PATCH).status_code == 422


def test_fhirpath_patch_on_document_metadata(client: httpx.Client) -> None:
    doc = client.post("/DocumentReference", json=docref(), headers=FHIR_JSON).json()
    masked = {"system": "https://mos.esante.gouv.fr/NOS/TRE_A07-StatusVisibilite/FHIR/TRE-A07-StatusVisibilite",
              "code": "MASQUE_PS"}
    body = params(op("replace", "DocumentReference.status", value=("valueCode", "superseded")),
                  op("add", "DocumentReference", name=("valueString", "securityLabel"),
                     value=("valueCodeableConcept", {"coding": [masked]})),
                  op("add", "DocumentReference", name=("valueString", "extension"),
                     value=("valueExtension", {"url": IS_ARCHIVED, "valueBoolean": True})))
    resp = client.patch(f"/DocumentReference/{doc['id']}", json=body, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["status"] == "superseded" and out["securityLabel"][0]["coding"][0]["code"] == "MASQUE_PS"
    assert out["extension"] == [{"url": IS_ARCHIVED, "valueBoolean": True}]
    assert out["meta"]["versionId"] == "2"
    # the visibility code is searchable
    found = client.get("/DocumentReference", params={"security-label": "MASQUE_PS", "_id": doc["id"]}).json()
    assert found["total"] == 1


def test_pdsm_rule_refuses_other_changes_with_405(client: httpx.Client) -> None:
    doc = client.post("/DocumentReference", json=docref(), headers=FHIR_JSON).json()
    resp = client.patch(f"/DocumentReference/{doc['id']}",
                        json=[{"op": "replace", "path": "/description", "value": "autre"}], headers=JSON_PATCH)
    assert resp.status_code == 405
    issue = resp.json()["issue"][0]
    assert issue["expression"] == ["DocumentReference.description"]
    assert client.get(f"/DocumentReference/{doc['id']}").json()["meta"]["versionId"] == "1"


def test_conditional_patch_by_identifier(client: httpx.Client) -> None:
    doc = docref()
    client.post("/DocumentReference", json=doc, headers=FHIR_JSON)
    ident = doc["identifier"][0]
    resp = client.patch(f"/DocumentReference?identifier={ident['system']}|{ident['value']}",
                        json=params(op("replace", "DocumentReference.status", value=("valueCode", "superseded"))),
                        headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "superseded"
    missing = client.patch("/DocumentReference?identifier=urn:x|none", json=[], headers=JSON_PATCH)
    assert missing.status_code == 404


def test_patch_media_types(client: httpx.Client) -> None:
    p = client.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON).json()
    assert client.patch(f"/Patient/{p['id']}", content=b"[]", headers={"Content-Type": "text/plain"}
                        ).status_code == 415
    assert client.patch(f"/Patient/{p['id']}", content=b"{nope", headers=JSON_PATCH).status_code == 400
    assert client.patch(f"/Patient/{p['id']}", json={"resourceType": "Patient"}, headers=FHIR_JSON
                        ).status_code == 400


def test_fhirpath_patch_operations_unit() -> None:
    res = {"resourceType": "Patient", "name": [{"family": "A", "given": ["x", "y", "z"]}],
           "identifier": [{"system": "s1", "value": "1"}, {"system": "s2", "value": "2"}]}
    out = apply_fhirpath_patch(res, params(
        op("delete", "Patient.identifier.where(system='s1')"),
        op("insert", "Patient.name[0].given", index=("valueInteger", 0), value=("valueString", "w")),
        op("move", "Patient.name[0].given", source=("valueInteger", 3), destination=("valueInteger", 1)),
        op("add", "Patient", name=("valueString", "gender"), value=("valueCode", "other")),
        op("delete", "Patient.birthDate")))
    assert out["identifier"] == [{"system": "s2", "value": "2"}]
    assert out["name"][0]["given"] == ["w", "z", "x", "y"]
    assert out["gender"] == "other" and res["identifier"][0]["system"] == "s1"  # input untouched


@given(st.dictionaries(st.sampled_from(["gender", "birthDate", "active"]), st.text(max_size=5), max_size=3),
       st.text(max_size=5))
def test_json_patch_replace_round_trips(fields: dict[str, str], value: str) -> None:
    res = {"resourceType": "Patient", **fields}
    out = apply_json_patch(res, [{"op": "add", "path": "/gender", "value": value}])
    back = apply_json_patch(out, [{"op": "remove", "path": "/gender"}] + (
        [{"op": "add", "path": "/gender", "value": fields["gender"]}] if "gender" in fields else []))
    assert back == res
