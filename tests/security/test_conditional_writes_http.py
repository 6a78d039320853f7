"""Conditional update, delete and patch under the access policy: hidden resources never match."""

from __future__ import annotations

from typing import Any

import orjson

from fhir_server.security.dev_issuer import DevIssuer
from tests.harness import RunningServer
from tests.security.test_auth_http import FHIR_JSON, client_for, secured, world

__all__ = ["secured", "world"]  # module fixtures shared with test_auth_http (one server here)

JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def _immunization(patient: str, ident: str) -> dict[str, Any]:
    return {"resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": "x"},
            "identifier": [{"system": "urn:test", "value": ident}],
            "patient": {"reference": f"Patient/{patient}"}, "occurrenceDateTime": "2024-01-01"}


def test_patient_conditional_writes_stay_in_compartment(secured: RunningServer, issuer: DevIssuer,
                                                        world: dict[str, Any]) -> None:
    p1, p2, admin = world["p1"], world["p2"], world["admin"]
    tag = world["tag"]
    other = admin.post("/Immunization", json=_immunization(p2, f"other-{tag}"), headers=FHIR_JSON)
    own = admin.post("/Immunization", json=_immunization(p1, f"own-{tag}"), headers=FHIR_JSON)
    assert other.status_code == 201 and own.status_code == 201
    other_id, own_id = other.json()["id"], own.json()["id"]
    with client_for(secured, issuer.mint("patient-1", "patient/*.cruds", patient=p1)) as c:
        # another patient's resource: no match (404 for patch, no-op delete), untouched
        patch = orjson.dumps([{"op": "replace", "path": "/status", "value": "entered-in-error"}])
        assert c.patch("/Immunization", params={"identifier": f"urn:test|other-{tag}"}, content=patch,
                       headers=JSON_PATCH).status_code == 404
        assert c.delete("/Immunization", params={"identifier": f"urn:test|other-{tag}"}).status_code == 204
        # a conditional update naming another patient is refused before any match
        assert c.put("/Immunization", params={"identifier": f"urn:test|other-{tag}"},
                     json=_immunization(p2, f"other-{tag}"), headers=FHIR_JSON).status_code == 403
        # own resource: conditional update and patch work...
        updated = c.put("/Immunization", params={"identifier": f"urn:test|own-{tag}"},
                        json={**_immunization(p1, f"own-{tag}"), "status": "not-done"}, headers=FHIR_JSON)
        assert updated.status_code == 200 and updated.json()["id"] == own_id
        assert c.patch("/Immunization", params={"identifier": f"urn:test|own-{tag}"}, content=patch,
                       headers=JSON_PATCH).status_code == 200
        # ...but a patch that moves it to another patient is refused
        move = orjson.dumps([{"op": "replace", "path": "/patient/reference", "value": f"Patient/{p2}"}])
        assert c.patch("/Immunization", params={"identifier": f"urn:test|own-{tag}"}, content=move,
                       headers=JSON_PATCH).status_code == 403
        assert c.patch(f"/Immunization/{own_id}", content=move, headers=JSON_PATCH).status_code == 403
        assert c.delete("/Immunization", params={"identifier": f"urn:test|own-{tag}"}).status_code == 204
    kept = admin.get(f"/Immunization/{other_id}")
    assert kept.status_code == 200 and kept.json()["status"] == "completed"
    assert admin.get(f"/Immunization/{own_id}").status_code == 410
