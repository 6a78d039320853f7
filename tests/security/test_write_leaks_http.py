"""Writes aimed at what the caller may not see (issue 11): conditional updates with a hidden id in the body,
Binary references the attacker creates, conditional references in transactions, error messages naming hidden
resources, and hidden ids answering differently from unknown ones.

Each probe compares the answer for a hidden target with the answer for an unknown one: status and message
must be identical once the ids are replaced, and the hidden resource must be unchanged afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.security.policy import TRE_A07
from tests.harness import RunningServer
from tests.security.support import client_for, start_secured
from tests.security.test_leakage_http import dr_token, one_of_each, opposed_token

FHIR_JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def srv(es_url: str, tmp_path_factory: pytest.TempPathFactory, issuer: DevIssuer) -> Iterator[RunningServer]:
    with start_secured(es_url, tmp_path_factory.mktemp("writes"), issuer) as server:
        yield server


@pytest.fixture(scope="module")
def world(srv: RunningServer, issuer: DevIssuer) -> dict[str, Any]:
    return one_of_each(srv, issuer)



def _admin(world: dict[str, Any]) -> httpx.Client:
    client: httpx.Client = world["w"].admin
    return client


def _same_answer(hidden: httpx.Response, unknown: httpx.Response, hidden_id: str, unknown_id: str) -> None:
    """The two answers are one answer: status, and body once each id is replaced by a placeholder."""
    assert hidden.status_code == unknown.status_code, (hidden.text, unknown.text)
    if hidden.status_code < 300:
        return  # two new resources: their own ids and times
    assert hidden.text.replace(hidden_id, "ID") == unknown.text.replace(unknown_id, "ID"), (hidden.text, unknown.text)


def _version(world: dict[str, Any], path: str) -> str:
    resp = _admin(world).get(path)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["meta"]["versionId"])


def _doc(patient: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": f"Patient/{patient}"},
            "content": [{"attachment": {"contentType": "text/plain", "url": "http://elsewhere.example/doc"}}],
            **extra}


# -- 1. conditional update with no visible match and a hidden id in the body ------------------------------

@pytest.mark.parametrize("who", ["practitioner-masked", "patient-invisible", "patient-other-immunization",
                                 "opposed-practitioner"])
def test_conditional_update_never_writes_to_a_hidden_id(srv: RunningServer, issuer: DevIssuer,
                                                         world: dict[str, Any], who: str) -> None:
    token, type_, hidden = {
        "practitioner-masked": (dr_token(issuer), "DocumentReference", world["masked"]["doc"]),
        "patient-invisible": (issuer.mint("p1", "patient/*.cruds", patient=world["p1"]), "DocumentReference",
                              world["invisible"]["doc"]),
        "patient-other-immunization": (issuer.mint("p1", "patient/*.cruds", patient=world["p1"]), "Immunization",
                                       world["other"]["immunization"]),
        "opposed-practitioner": (opposed_token(issuer), "DocumentReference", world["opposing"]["doc"]),
    }[who]
    before = _version(world, f"/{type_}/{hidden}")
    # the attacker's own content: their visible patient, no label
    body: dict[str, Any] = _doc(world["p1"]) if type_ == "DocumentReference" else {
        "resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": "x"},
        "patient": {"reference": f"Patient/{world['p1']}"}, "occurrenceDateTime": "2024-01-01"}
    unknown = str(uuid.uuid4())
    query = {"identifier": f"urn:x|nomatch-{uuid.uuid4().hex}"}
    with client_for(srv, token) as c:
        answers = [c.put(f"/{type_}", params=query, json={**body, "id": i}, headers=FHIR_JSON)
                   for i in (hidden, unknown)]
        _same_answer(*answers, hidden, unknown)
        assert answers[0].status_code == 404, answers[0].text
        # the same through a transaction entry
        tx = [c.post("/", headers=FHIR_JSON, json={"resourceType": "Bundle", "type": "transaction", "entry": [{
            "resource": {**body, "id": i}, "request": {"method": "PUT", "url": f"{type_}?identifier=urn:x|none"}}]})
              for i in (hidden, unknown)]
        _same_answer(*tx, hidden, unknown)
        # and a plain PUT on the id: as unknown, no update-as-create for a token that cannot see everything
        plain = [c.put(f"/{type_}/{i}", json={**body, "id": i}, headers=FHIR_JSON) for i in (hidden, unknown)]
        _same_answer(*plain, hidden, unknown)
    assert _version(world, f"/{type_}/{hidden}") == before, "a hidden resource was overwritten"
    assert _admin(world).get(f"/{type_}/{unknown}").status_code == 404  # nor was the unknown id created


def test_conditional_update_no_match_existing_id_is_a_conflict(srv: RunningServer, issuer: DevIssuer,
                                                                world: dict[str, Any]) -> None:
    """http.html#cond-update: no match, an id given that exists: 409 (it used to overwrite that resource)."""
    visible = world["own"]["doc"]
    before = _version(world, f"/DocumentReference/{visible}")
    for c in (_admin(world), client_for(srv, dr_token(issuer))):
        resp = c.put("/DocumentReference", params={"identifier": "urn:x|none"},
                     json={**_doc(world["p1"]), "id": visible}, headers=FHIR_JSON)
        assert resp.status_code == 409, resp.text
        assert resp.json()["issue"][0]["expression"] == ["DocumentReference.id"]
    assert _version(world, f"/DocumentReference/{visible}") == before
    # a system token may still create with an id of its choice when no resource matches
    fresh = str(uuid.uuid4())
    resp = _admin(world).put("/DocumentReference", params={"identifier": "urn:x|none"},
                             json={**_doc(world["p1"]), "id": fresh}, headers=FHIR_JSON)
    assert resp.status_code == 201 and resp.json()["id"] == fresh


# -- 2. Binary references created by the attacker ---------------------------------------------------------

@pytest.mark.parametrize("who", ["practitioner-masked", "patient-invisible", "opposed-practitioner"])
def test_pointing_a_document_at_a_hidden_binary_does_not_reveal_it(srv: RunningServer, issuer: DevIssuer,
                                                                    world: dict[str, Any], who: str) -> None:
    token, record, patient = {
        "practitioner-masked": (dr_token(issuer), world["masked"], world["p1"]),
        "patient-invisible": (issuer.mint("p1", "patient/*.cruds", patient=world["p1"]), world["invisible"],
                              world["p1"]),
        "opposed-practitioner": (opposed_token(issuer), world["opposing"], world["p1"]),
    }[who]
    binary = record["binary"]
    with client_for(srv, token) as c:
        assert c.get(f"/Binary/{binary}").status_code == 404
        unknown = str(uuid.uuid4())
        for url in ("Binary/{}", f"{srv.base_url}/Binary/{{}}"):
            baits = [_doc(patient, content=[{"attachment": {"contentType": "text/plain", "url": url.format(i)}}])
                     for i in (binary, unknown)]
            # as for an unknown Binary: the same answer, and nothing about the Binary revealed
            answers = [c.post("/DocumentReference", json=b, headers=FHIR_JSON) for b in baits]
            _same_answer(*answers, binary, unknown)
            resp = c.get(f"/Binary/{binary}")
            assert resp.status_code == 404 and record["secret"] not in resp.text
            assert c.get(f"/Binary/{binary}", params={"_format": "json"}).status_code == 404
    # the Binary is still bound to the document that brought it
    stored = _admin(world).get(f"/Binary/{binary}", params={"_format": "json"}).json()
    assert stored["securityContext"] == {"reference": f"DocumentReference/{record['doc']}"}


def test_binary_follows_the_document_that_brought_it(srv: RunningServer, issuer: DevIssuer,
                                                      world: dict[str, Any]) -> None:
    """ITI-65 (same transaction) and ITI-105 (inline data) bind the Binary to its document."""
    content = b"masked by ITI-65"
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:b1", "resource": {"resourceType": "Binary", "contentType": "text/plain",
                                                "data": base64.b64encode(content).decode()},
         "request": {"method": "POST", "url": "Binary"}},
        {"fullUrl": "urn:uuid:d1", "resource": _doc(world["p1"], securityLabel=[
            {"coding": [{"system": TRE_A07, "code": "MASQUE_PS"}]}], content=[{"attachment": {
                "contentType": "text/plain", "url": "urn:uuid:b1", "size": len(content),
                "hash": base64.b64encode(hashlib.sha1(content).digest()).decode()}}]),
         "request": {"method": "POST", "url": "DocumentReference"}}]}
    resp = _admin(world).post("/", json=tx, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    bin_id = resp.json()["entry"][0]["response"]["location"].split("/")[1]
    doc_id = resp.json()["entry"][1]["response"]["location"].split("/")[1]
    assert resp.json()["entry"][0]["resource"]["securityContext"] == {"reference": f"DocumentReference/{doc_id}"}
    inline = _admin(world).post("/DocumentReference", headers=FHIR_JSON, json=_doc(world["p1"], content=[
        {"attachment": {"contentType": "text/plain", "data": base64.b64encode(b"inline").decode()}}]))
    assert inline.status_code == 201, inline.text
    inline_bin = inline.json()["content"][0]["attachment"]["url"].split("/")[1]
    with client_for(srv, dr_token(issuer)) as c:
        assert c.get(f"/Binary/{bin_id}").status_code == 404  # masked document: masked content
        assert c.get(f"/Binary/{inline_bin}").content == b"inline"
    with client_for(srv, issuer.mint("p1", "patient/*.rs", patient=world["p1"])) as c:
        assert c.get(f"/Binary/{bin_id}").content == content


# -- 5. conditional references inside transactions ----------------------------------------------------------

def _replacement(patient: str, target: str) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:new", "resource": _doc(patient, relatesTo=[{"code": "replaces", "target": {
            "reference": target}}]), "request": {"method": "POST", "url": "DocumentReference"}}]}


def test_conditional_references_never_resolve_to_hidden_resources(srv: RunningServer, issuer: DevIssuer,
                                                                   world: dict[str, Any]) -> None:
    admin = _admin(world)
    ident = f"urn:masked|{uuid.uuid4().hex}"
    masked = world["w"].create(_doc(world["p1"], identifier=[{"system": ident.split("|")[0],
                                                             "value": ident.split("|")[1]}],
                                    securityLabel=[{"coding": [{"system": TRE_A07, "code": "MASQUE_PS"}]}]))
    unknown = f"urn:masked|{uuid.uuid4().hex}"
    with client_for(srv, dr_token(issuer)) as c:
        answers = [c.post("/", json=_replacement(world["p1"], f"DocumentReference?identifier={i}"), headers=FHIR_JSON)
                   for i in (ident, unknown)]
        _same_answer(*answers, ident, unknown)
        assert answers[0].status_code == 404 and masked not in answers[0].text
    assert admin.get(f"/DocumentReference/{masked}").json()["status"] == "current"  # not superseded
    # one visible and one hidden match: resolves to the visible one, never a 412 revealing the other
    twin_ident = f"urn:twin|{uuid.uuid4().hex}"
    twin = {"identifier": [{"system": "urn:twin", "value": twin_ident.split("|")[1]}]}
    world["w"].create(_doc(world["p1"], **twin, securityLabel=[{"coding": [{"system": TRE_A07, "code": "MASQUE_PS"}]}]))
    shown = world["w"].create(_doc(world["p1"], **twin))
    with client_for(srv, dr_token(issuer)) as c:
        resp = c.post("/", json=_replacement(world["p1"], f"DocumentReference?identifier={twin_ident}"),
                      headers=FHIR_JSON)
        assert resp.status_code == 200, resp.text
        assert resp.json()["entry"][0]["resource"]["relatesTo"][0]["target"]["reference"] == \
            f"DocumentReference/{shown}"
    # a search criterion naming the opposing patient resolves for nobody opposed
    family = f"Gamma{world['w'].tag}"
    ref_tx = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": {"resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": "x"},
                     "patient": {"reference": f"Patient?family={family}"}, "occurrenceDateTime": "2024-01-01"},
        "request": {"method": "POST", "url": "Immunization"}}]}
    with client_for(srv, opposed_token(issuer)) as c:
        hidden_answer = c.post("/", json=ref_tx, headers=FHIR_JSON)
        nobody = {**ref_tx, "entry": [{**ref_tx["entry"][0], "resource": {
            **ref_tx["entry"][0]["resource"], "patient": {"reference": "Patient?family=Nobody" + uuid.uuid4().hex}}}]}
        unknown_answer = c.post("/", json=nobody, headers=FHIR_JSON)
        assert hidden_answer.status_code == unknown_answer.status_code == 404
        assert world["p3"] not in hidden_answer.text


def test_replacing_a_hidden_document_answers_as_an_unknown_one(srv: RunningServer, issuer: DevIssuer,
                                                               world: dict[str, Any]) -> None:
    masked = world["masked"]["doc"]
    unknown = str(uuid.uuid4())
    with client_for(srv, dr_token(issuer)) as c:
        answers = [c.post("/", json=_replacement(world["p1"], f"DocumentReference/{i}"), headers=FHIR_JSON)
                   for i in (masked, unknown)]
        _same_answer(*answers, masked, unknown)
        assert answers[0].status_code == 404
    assert _admin(world).get(f"/DocumentReference/{masked}").json()["status"] == "current"


# -- 6 and 7. error messages -------------------------------------------------------------------------------

def test_duplicate_master_identifier_does_not_name_a_hidden_holder(srv: RunningServer, issuer: DevIssuer,
                                                                    world: dict[str, Any]) -> None:
    uid = {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:1.2.3.{uuid.uuid4().int % 10**12}"}
    holder = world["w"].create(_doc(world["p1"], masterIdentifier=uid, securityLabel=[
        {"coding": [{"system": TRE_A07, "code": "MASQUE_PS"}]}]))
    with client_for(srv, dr_token(issuer)) as c:
        resp = c.post("/DocumentReference", json=_doc(world["p1"], masterIdentifier=uid), headers=FHIR_JSON)
        assert resp.status_code == 409
        assert holder not in resp.text
        assert resp.json()["issue"][0]["expression"] == ["DocumentReference.masterIdentifier"]
    resp = _admin(world).post("/DocumentReference", json=_doc(world["p1"], masterIdentifier=uid), headers=FHIR_JSON)
    assert resp.status_code == 409 and holder in resp.text  # a caller who sees it is told which one


def test_iti65_checks_reveal_nothing_of_a_hidden_binary(srv: RunningServer, issuer: DevIssuer,
                                                         world: dict[str, Any]) -> None:
    hidden = world["masked"]["binary"]
    unknown = str(uuid.uuid4())

    def provide(bin_id: str) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction", "entry": [{
            "fullUrl": "urn:uuid:d", "resource": _doc(world["p1"], content=[{"attachment": {
                "contentType": "text/plain", "url": f"Binary/{bin_id}", "size": 1, "hash": "AAAA"}}]),
            "request": {"method": "POST", "url": "DocumentReference"}}]}

    with client_for(srv, dr_token(issuer)) as c:
        answers = [c.post("/", json=provide(i), headers=FHIR_JSON) for i in (hidden, unknown)]
        _same_answer(*answers, hidden, unknown)
        assert answers[0].status_code == 404
        secret = world["masked"]["secret"].encode()
        assert base64.b64encode(hashlib.sha1(secret).digest()).decode() not in answers[0].text
        assert f"{len(secret)} bytes" not in answers[0].text


# -- 8. hidden and unknown ids answer alike ------------------------------------------------------------------

def test_hidden_and_unknown_ids_answer_alike(srv: RunningServer, issuer: DevIssuer, world: dict[str, Any]) -> None:
    masked = world["masked"]["doc"]
    unknown = str(uuid.uuid4())
    before = _version(world, f"/DocumentReference/{masked}")
    with client_for(srv, dr_token(issuer)) as c:
        for method, path, kwargs in (
                ("DELETE", "/DocumentReference/{}", {}),
                ("DELETE", "/DocumentReference/{}", {"headers": {"If-Match": 'W/"1"'}}),
                ("GET", "/DocumentReference/{}", {}),
                ("GET", "/DocumentReference/{}/_history/1", {}),
                ("GET", "/DocumentReference/{}/_history/999", {}),
                ("GET", "/DocumentReference/{}/_history", {}),
                ("POST", "/DocumentReference/{}/$validate", {"params": {"mode": "delete"}}),
                ("POST", "/DocumentReference/{}/$validate", {"json": {"resourceType": "Parameters", "parameter": [
                    {"name": "mode", "valueCode": "delete"}]}, "headers": FHIR_JSON}),
                ("GET", "/DocumentReference/{}/$validate", {}),
                ("PATCH", "/DocumentReference/{}", {"json": [{"op": "replace", "path": "/status",
                                                              "value": "superseded"}],
                                                     "headers": {"Content-Type": "application/json-patch+json"}})):
            answers = [c.request(method, path.format(i), **kwargs) for i in (masked, unknown)]
            _same_answer(*answers, masked, unknown)
    assert _version(world, f"/DocumentReference/{masked}") == before


def test_a_deleted_hidden_resource_is_unknown(srv: RunningServer, issuer: DevIssuer, world: dict[str, Any]) -> None:
    masked = world["w"].create(_doc(world["p1"], securityLabel=[{"coding": [{"system": TRE_A07,
                                                                             "code": "MASQUE_PS"}]}]))
    assert _admin(world).delete(f"/DocumentReference/{masked}").status_code == 204
    unknown = str(uuid.uuid4())
    with client_for(srv, dr_token(issuer)) as c:
        for path in ("/DocumentReference/{}", "/DocumentReference/{}/_history/2"):
            answers = [c.get(path.format(i)) for i in (masked, unknown)]
            _same_answer(*answers, masked, unknown)
            assert answers[0].status_code == 404


# -- 9. a patient creating a Patient -------------------------------------------------------------------------

def test_patient_cannot_create_a_patient_by_sending_its_own_id(srv: RunningServer, issuer: DevIssuer,
                                                               world: dict[str, Any]) -> None:
    family = f"Clone{uuid.uuid4().hex[:8]}"
    with client_for(srv, issuer.mint("p1", "patient/*.cruds", patient=world["p1"])) as c:
        resp = c.post("/Patient", json={"resourceType": "Patient", "id": world["p1"], "name": [{"family": family}]},
                      headers=FHIR_JSON)
        assert resp.status_code == 403, resp.text
    assert _admin(world).get("/Patient", params={"family": family, "_summary": "count"}).json()["total"] == 0
