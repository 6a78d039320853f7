"""Chains, ``_has``, ``_list``, ``_include`` and ``_revinclude`` under the access policy, over HTTP.

Each probe tries to detect a masked document, an invisible-to-patient document or another patient's
data through an inner query of the search executor; none may show in a body, a count or an include.
"""

from __future__ import annotations

from typing import Any

import httpx

from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.security.policy import TRE_A07
from tests.harness import RunningServer
from tests.security.test_auth_http import FHIR_JSON, client_for, ids, secured, world

__all__ = ["secured", "world"]  # module fixtures shared with test_auth_http (one server here)


def _by_mode(resp: httpx.Response) -> dict[str, set[str]]:
    assert resp.status_code == 200, resp.text
    out: dict[str, set[str]] = {}
    for e in resp.json().get("entry", []):
        out.setdefault(e["search"]["mode"], set()).add(f"{e['resource']['resourceType']}/{e['resource'].get('id')}")
    return out


def _count(c: httpx.Client, path: str, params: dict[str, str]) -> int:
    resp = c.get(path, params={**params, "_summary": "count"})
    assert resp.status_code == 200, resp.text
    return int(resp.json()["total"])


def test_practitioner_cannot_detect_masked_document(secured: RunningServer, issuer: DevIssuer,
                                                    world: dict[str, Any]) -> None:
    p1, masked, plain, hidden = world["p1"], world["masked"], world["plain"], world["hidden"]
    masked_label = f"{TRE_A07}|MASQUE_PS"
    with client_for(secured, issuer.mint("dr", "user/*.cruds", fhir_user="Practitioner/dr")) as c:
        # _has whose inner search designates only the masked document
        for inner in ({"_has:DocumentReference:subject:_id": masked},
                      {"_has:DocumentReference:subject:security-label": masked_label}):
            assert ids(c.get("/Patient", params=inner)) == set()
            assert _count(c, "/Patient", inner) == 0
        # ...while the same probe on a visible document does find the patient (the feature works)
        assert ids(c.get("/Patient", params={"_has:DocumentReference:subject:_id": plain})) == {p1}
        # _revinclude: visible documents only
        modes = _by_mode(c.get("/Patient", params={"_id": p1, "_revinclude": "DocumentReference:subject"}))
        assert modes["include"] == {f"DocumentReference/{plain}", f"DocumentReference/{hidden}"}
        # chain into the masked document, from a List that points to it
        lst = world["admin"].post("/List", headers=FHIR_JSON, json={
            "resourceType": "List", "status": "current", "mode": "working",
            "subject": {"reference": f"Patient/{p1}"},
            "entry": [{"item": {"reference": f"DocumentReference/{masked}"}}]})
        assert lst.status_code == 201, lst.text
        list_id = lst.json()["id"]
        chained = {"_id": list_id, "item:DocumentReference.security-label": masked_label}
        assert ids(c.get("/List", params=chained)) == set()
        assert _count(c, "/List", chained) == 0
        # forward include and :iterate never reach the masked document
        modes = _by_mode(c.get("/List", params={"_id": list_id, "_include": "List:item"}))
        assert modes == {"match": {f"List/{list_id}"}}
        # _list hands out only visible items
        assert ids(c.get("/DocumentReference", params={"_list": list_id})) == set()
        body = c.get("/Patient", params={"_id": p1, "_revinclude": "DocumentReference:subject",
                                         "_total": "accurate"}).text
        assert masked not in body


def test_patient_cannot_reach_other_compartments(secured: RunningServer, issuer: DevIssuer,
                                                 world: dict[str, Any]) -> None:
    p1, p2 = world["p1"], world["p2"]
    with client_for(secured, issuer.mint("patient-1", "patient/*.rs", patient=p1)) as c:
        # includes are filtered: the patient gets its own Patient, never another's
        modes = _by_mode(c.get("/DocumentReference", params={"_include": "DocumentReference:subject"}))
        assert modes["match"] == {f"DocumentReference/{world['plain']}", f"DocumentReference/{world['masked']}"}
        assert modes["include"] == {f"Patient/{p1}"}
        modes = _by_mode(c.get("/Patient", params={"_revinclude": "*"}))
        docs = {r for r in modes["include"] if r.startswith("DocumentReference/")}
        assert docs == {f"DocumentReference/{world['plain']}", f"DocumentReference/{world['masked']}"}
        # _has on a document invisible to the patient, or on another patient's document
        for doc in (world["hidden"], world["other"]):
            assert ids(c.get("/Patient", params={"_has:DocumentReference:subject:_id": doc})) == set()
            assert _count(c, "/Patient", {"_has:DocumentReference:subject:_id": doc}) == 0
        # chains: the outer search is already in the compartment, the inner one too
        assert ids(c.get("/DocumentReference", params={"subject.family": f"Beta{world['tag']}"})) == set()
        assert ids(c.get("/DocumentReference", params={"subject.family": f"Alpha{world['tag']}"})) == {
            world["plain"], world["masked"]}
        # a List in another patient's compartment is not readable through _list
        lst = world["admin"].post("/List", headers=FHIR_JSON, json={
            "resourceType": "List", "status": "current", "mode": "working",
            "subject": {"reference": f"Patient/{p2}"}, "entry": [{"item": {"reference": f"Patient/{p1}"}}]})
        assert lst.status_code == 201, lst.text
        assert ids(c.get("/Patient", params={"_list": lst.json()["id"]})) == set()
        # history by type is filtered like the search
        assert world["other"] not in c.get("/DocumentReference/_history").text
