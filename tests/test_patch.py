"""PATCH: JSON Patch and FHIRPath Patch, conditional PATCH, the PDSm metadata-update rule (405)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.errors import FHIRError
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


def _apply(res: dict[str, Any], *ops: dict[str, Any]) -> dict[str, Any]:
    return apply_fhirpath_patch(res, params(*ops))


def test_fhirpath_patch_paths_are_real_fhirpath() -> None:
    res = {"resourceType": "Patient", "deceasedBoolean": False,
           "name": [{"use": "usual", "family": "A", "given": ["x"]}, {"use": "official", "family": "B"}],
           "contained": [{"resourceType": "Practitioner", "id": "p1", "name": [{"family": "Doc"}]}]}
    out = _apply(res,
                 op("replace", "Patient.name.where(use = 'official' and family.startsWith('B')).family",
                    value=("valueString", "C")),
                 op("replace", "Patient.name.given.last()", value=("valueString", "y")),
                 op("replace", "Patient.contained.ofType(Practitioner).name.family", value=("valueString", "Dr")),
                 op("replace", "Patient.deceased", value=("valueDateTime", "2020-01-01")))
    assert out["name"][1]["family"] == "C" and out["name"][0]["given"] == ["y"]
    assert out["contained"][0]["name"][0]["family"] == "Dr"
    assert out["deceasedDateTime"] == "2020-01-01" and "deceasedBoolean" not in out  # choice type renamed


def test_fhirpath_patch_complex_values_from_parts() -> None:
    res = {"resourceType": "Patient", "identifier": [{"system": "s", "value": "1"}]}
    coding = {"name": "coding", "part": [{"name": "code", "valueCode": "MR"}]}
    ident = {"name": "value", "part": [{"name": "system", "valueUri": "urn:s2"}, {"name": "value", "valueString": "2"},
                                       {"name": "type", "part": [coding, {"name": "text", "valueString": "t"}]}]}
    out = _apply(res, {"name": "operation", "part": [{"name": "type", "valueCode": "add"},
                                                     {"name": "path", "valueString": "Patient"},
                                                     {"name": "name", "valueString": "identifier"}, ident]},
                 {"name": "operation", "part": [{"name": "type", "valueCode": "insert"},
                                                {"name": "path", "valueString": "Patient.identifier"},
                                                {"name": "index", "valueInteger": 0}, ident]},
                 op("add", "Patient", name=("valueString", "deceased"), value=("valueBoolean", True)),
                 op("add", "Patient.identifier[0]", name=("valueString", "use"), value=("valueCode", "official")))
    built = {"system": "urn:s2", "value": "2", "type": {"coding": [{"code": "MR"}], "text": "t"}}
    assert out["identifier"] == [{**built, "use": "official"}, {"system": "s", "value": "1"}, built]
    assert out["deceasedBoolean"] is True
    # insert into a list that does not exist yet, then delete its only item: no empty array is left
    out = _apply(res, op("insert", "Patient.name", index=("valueInteger", 0),
                         value=("valueHumanName", {"family": "Neu"})))
    assert out["name"] == [{"family": "Neu"}]
    out = _apply(out, op("delete", "Patient.name[0].family"))
    assert "name" not in out


def test_fhirpath_patch_errors_are_400_or_422() -> None:
    res = {"resourceType": "Patient", "gender": "male", "name": [{"family": "A"}, {"family": "B"}]}
    cases: list[tuple[dict[str, Any], int]] = [
        (op("replace", "Patient.name.family", value=("valueString", "x")), 422),  # 2 matches
        (op("replace", "Patient.birthDate", value=("valueDate", "2000-01-01")), 422),  # 0 matches
        (op("replace", "Patient.gender", value=("valueBoolean", True)), 422),  # type mismatch
        (op("replace", "Patient.name[0]", value=("valueCoding", {"code": "x"})), 422),
        (op("add", "Patient", name=("valueString", "nickname"), value=("valueString", "x")), 422),
        (op("add", "Patient", name=("valueString", "gender"), value=("valueCode", "female")), 422),  # has one
        (op("insert", "Patient.name", index=("valueInteger", 5), value=("valueHumanName", {})), 422),
        (op("move", "Patient.name", source=("valueInteger", 0), destination=("valueInteger", 2)), 422),
        (op("insert", "Patient.gender", index=("valueInteger", 0), value=("valueCode", "x")), 422),
        (op("replace", "Patient.name.where(", value=("valueString", "x")), 400),  # not FHIRPath
        (op("replace", "1 + 1", value=("valueInteger", 3)), 400),  # not an element
        (op("frobnicate", "Patient.gender"), 400),
        (op("replace", "Patient.gender"), 400),  # no value
        (op("insert", "Patient.name", value=("valueHumanName", {})), 400),  # no index
    ]
    for operation, status in cases:
        try:
            _apply(res, operation)
        except FHIRError as err:
            assert err.status == status, (operation, err)
            assert err.expression == ("Parameters.parameter[0]",), err.expression
        else:
            raise AssertionError(f"no error for {operation}")


@given(st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=6), st.data())
def test_insert_then_delete_round_trips(given_names: list[str], data: st.DataObject) -> None:
    res = {"resourceType": "Patient", "name": [{"given": given_names}]}
    index = data.draw(st.integers(0, len(given_names)))
    out = _apply(res, op("insert", "Patient.name[0].given", index=("valueInteger", index),
                         value=("valueString", "NEW")))
    assert out["name"][0]["given"][index] == "NEW" and len(out["name"][0]["given"]) == len(given_names) + 1
    back = _apply(out, op("delete", f"Patient.name[0].given[{index}]"))
    assert back == res


def test_fhirpath_patch_errors_over_http(client: httpx.Client) -> None:
    p = client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON).json()
    bad = client.patch(f"/Patient/{p['id']}", json=params(op("replace", "Patient.name.where(",
                                                                 value=("valueString", "x"))), headers=FHIR_JSON)
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["Parameters.parameter[0]"]
    wrong = client.patch(f"/Patient/{p['id']}", json=params(op("replace", "Patient.gender",
                                                                   value=("valueBoolean", True))), headers=FHIR_JSON)
    assert wrong.status_code == 422 and wrong.json()["resourceType"] == "OperationOutcome"
    ok = client.patch(f"/Patient/{p['id']}", json=params(
        op("add", "Patient", name=("valueString", "name"), value=("valueHumanName", {"family": "Roux"})),
        op("replace", "Patient.gender", value=("valueCode", "female"))), headers=FHIR_JSON)
    assert ok.status_code == 200 and ok.json()["name"] == [{"family": "Roux"}] and ok.json()["gender"] == "female"
