"""Red-team probes after the single write path (issue 11): the same mistake looked for where it could recur.

Each probe sends the same request twice, once aimed at something the caller may not see and once at a control
the caller knows nothing of (an unknown id, or a visible resource that lacks the hidden part), and asserts the
two answers are one answer, and that the hidden resource is unchanged.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.security.policy import TRE_A07
from tests.harness import RunningServer
from tests.security.support import client_for, start_secured
from tests.security.test_leakage_http import World, dr_token, one_of_each, opposed_token

FHIR_JSON = {"Content-Type": "application/fhir+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture(scope="module")
def srv(es_url: str, tmp_path_factory: pytest.TempPathFactory, issuer: DevIssuer) -> Iterator[RunningServer]:
    with start_secured(es_url, tmp_path_factory.mktemp("red-team"), issuer) as server:
        yield server


@pytest.fixture(scope="module")
def world(srv: RunningServer, issuer: DevIssuer) -> dict[str, Any]:
    return one_of_each(srv, issuer)



def _status(resp: httpx.Response) -> str:
    """A transaction's answer as one status: the Bundle's own, or its single entry's."""
    if resp.status_code != 200:
        return str(resp.status_code)
    return str(resp.json()["entry"][0]["response"]["status"])[:3]


def _new_doc(patient: str, url: str = "http://elsewhere.example/doc") -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": f"Patient/{patient}"},
            "content": [{"attachment": {"contentType": "text/plain", "url": url}}]}


def _version(world: dict[str, Any], path: str) -> str:
    resp = world["w"].admin.get(path, params={"_format": "json"})  # a Binary too: its resource, not its bytes
    assert resp.status_code == 200, resp.text
    return str(resp.json()["meta"]["versionId"])


# -- 1. conditional criteria run their chains, _has and _list without the caller's policy --------------------

def _probe(world: dict[str, Any], issuer: DevIssuer, name: str) -> tuple[str, str, str, str]:
    """(token, target Patient, criteria that match it only through what the token may not see, the same
    criteria on a control patient that lacks that hidden part). Fresh patients: a probe may write to them."""
    w: World = world["w"]
    target, control = w.patient("Target"), w.patient("Control")
    if name == "list-opposed":  # a List of the opposing patient p3, naming a visible patient
        hidden_list = w.create({"resourceType": "List", "status": "current", "mode": "working",
                                "subject": {"reference": f"Patient/{world['p3']}"},
                                "entry": [{"item": {"reference": f"Patient/{target}"}}]})
        return (opposed_token(issuer), target, f"_id={target}&_list={hidden_list}",
                f"_id={control}&_list={uuid.uuid4()}")
    label = "INVISIBLE_PATIENT" if name == "has-invisible-patient-token" else "MASQUE_PS"
    hidden = w.record(target, label)
    w.record(control)
    if name == "has-invisible-patient-token":  # the patient probes their own record
        token = issuer.mint(target, "patient/*.cruds", patient=target)
        return token, target, _has_label(target, label), _has_label(target, "NOSUCHLABEL")
    if name == "chain-masked":
        secret = hidden["secret"]
        return (dr_token(issuer), target, f"_id={target}&_has:DocumentReference:subject:description={secret}",
                f"_id={control}&_has:DocumentReference:subject:description={secret}")
    return dr_token(issuer), target, _has_label(target, label), _has_label(control, label)


def _has_label(patient: str, label: str) -> str:
    return f"_id={patient}&_has:DocumentReference:subject:security-label={TRE_A07}|{label}"


PROBES = ["has-masked", "has-invisible-patient-token", "chain-masked", "list-opposed"]



@pytest.mark.parametrize("probe", PROBES)
def test_if_none_exist_inner_queries_see_only_what_the_caller_sees(srv: RunningServer, issuer: DevIssuer,
                                                                   world: dict[str, Any], probe: str) -> None:
    """If-None-Exist with ``_has``/``_list`` criteria: 200 (matched, nothing written) for the hidden part and
    201 for the control would say that the patient has a masked document, or what a hidden List holds."""
    token, _, hidden, control = _probe(world, issuer, probe)
    new = {"resourceType": "Patient", "name": [{"family": f"Probe{uuid.uuid4().hex[:6]}"}]}
    with client_for(srv, token) as c:
        answers = [c.post("/Patient", json=new, headers={**FHIR_JSON, "If-None-Exist": q}) for q in (hidden, control)]
    assert answers[0].status_code == answers[1].status_code != 200, [a.text for a in answers]


@pytest.mark.parametrize("probe", PROBES)
def test_conditional_reference_inner_queries_see_only_what_the_caller_sees(
        srv: RunningServer, issuer: DevIssuer, world: dict[str, Any], probe: str) -> None:
    token, target, hidden, control = _probe(world, issuer, probe)
    with client_for(srv, token) as c:
        answers = [c.post("/", headers=FHIR_JSON, json={"resourceType": "Bundle", "type": "transaction", "entry": [{
            "resource": {"resourceType": "List", "status": "current", "mode": "working",
                         "subject": {"reference": f"Patient/{target}"},
                         "entry": [{"item": {"reference": f"Patient?{q}"}}]},
            "request": {"method": "POST", "url": "List"}}]}) for q in (hidden, control)]
    assert _status(answers[0]) == _status(answers[1]) == "404", [a.text for a in answers]
    assert answers[0].text.replace(hidden, "Q") == answers[1].text.replace(control, "Q")


@pytest.mark.parametrize("probe", PROBES)
def test_conditional_patch_update_delete_inner_queries_see_only_what_the_caller_sees(
        srv: RunningServer, issuer: DevIssuer, world: dict[str, Any], probe: str) -> None:
    token, target, hidden, control = _probe(world, issuer, probe)
    before = _version(world, f"/Patient/{target}")
    patch = [{"op": "add", "path": "/language", "value": "fr"}]
    update = {"resourceType": "Patient", "id": target, "language": "fr"}
    with client_for(srv, token) as c:
        patched = [c.patch(f"/Patient?{q}", content=orjson.dumps(patch), headers=JSON_PATCH) for q in (hidden, control)]
        updated = c.put(f"/Patient?{hidden}", json=update, headers=FHIR_JSON)
        deleted = [c.delete(f"/Patient?{q}") for q in (hidden, control)]
    assert [p.status_code for p in patched] == [404, 404], [p.text for p in patched]
    assert patched[0].text.replace(hidden, "Q") == patched[1].text.replace(control, "Q")
    assert updated.status_code != 200, updated.text  # no match: an update-as-create, refused to this token
    assert [d.status_code for d in deleted] == [204, 204] and "etag" not in deleted[0].headers
    assert _version(world, f"/Patient/{target}") == before, "a conditional write matched through a hidden resource"


# -- 2. the audit trail of the caller's own requests ----------------------------------------------------------

@pytest.mark.parametrize("request_kind", ["delete", "validate-delete"])
def test_own_audit_record_of_a_no_op_on_a_hidden_id_is_that_of_an_unknown_id(
        srv: RunningServer, issuer: DevIssuer, world: dict[str, Any], request_kind: str) -> None:
    """DELETE of a hidden id answers 204 and ``$validate?mode=delete`` 200, exactly as for an unknown id; the
    caller's own AuditEvent of that request must not then name the hidden document's patient."""
    patient = world["w"].patient("Audited")
    hidden, unknown = world["w"].record(patient, "MASQUE_PS")["doc"], str(uuid.uuid4())
    with client_for(srv, dr_token(issuer, "user/AuditEvent.rs")) as c:
        for id_ in (hidden, unknown):
            resp = c.delete(f"/DocumentReference/{id_}") if request_kind == "delete" else c.post(
                f"/DocumentReference/{id_}/$validate", params={"mode": "delete"},
                json={"resourceType": "Parameters"}, headers=FHIR_JSON)
            assert resp.status_code in (200, 204), resp.text
        records = {}
        for id_ in (hidden, unknown):
            resp = c.get("/AuditEvent", params={"entity": f"DocumentReference/{id_}"})
            assert resp.status_code == 200, resp.text
            entries = resp.json().get("entry") or []
            assert len(entries) == 1, resp.text
            records[id_] = [e["what"]["reference"] for e in entries[0]["resource"].get("entity", [])
                            if "reference" in e.get("what", {})]
        by_patient = c.get("/AuditEvent", params={"patient": f"Patient/{patient}", "_summary": "count"})
    assert records[hidden] == [f"DocumentReference/{hidden}"], records[hidden]
    assert records[unknown] == [f"DocumentReference/{unknown}"], records[unknown]
    assert by_patient.json()["total"] == 0, "the no-op on a hidden document is listed under its patient"
    assert world["w"].admin.get(f"/DocumentReference/{hidden}").status_code == 200


# -- 3. the other paths: hidden answers as unknown, nothing changed ----------------------------------------------

def _same(hidden: httpx.Response, unknown: httpx.Response, hidden_id: str, unknown_id: str) -> None:
    """One answer: status, the headers a client could compare, and the body once the ids are replaced."""
    assert hidden.status_code == unknown.status_code, (hidden.text, unknown.text)
    for header in ("etag", "last-modified", "location", "content-location"):
        assert (header in hidden.headers) == (header in unknown.headers), (header, hidden.headers, unknown.headers)
    if hidden.status_code >= 300:
        assert hidden.text.replace(hidden_id, "ID") == unknown.text.replace(unknown_id, "ID"), (hidden.text,
                                                                                             unknown.text)


@pytest.mark.parametrize("who", ["practitioner-masked", "patient-invisible", "opposed-practitioner"])
def test_every_instance_path_answers_a_hidden_id_as_an_unknown_one(srv: RunningServer, issuer: DevIssuer,
                                                                    world: dict[str, Any], who: str) -> None:
    token, record = {
        "practitioner-masked": (dr_token(issuer), world["masked"]),
        "patient-invisible": (issuer.mint("p1", "patient/*.cruds", patient=world["p1"]), world["invisible"]),
        "opposed-practitioner": (opposed_token(issuer), world["opposing"]),
    }[who]
    doc, binary = record["doc"], record["binary"]
    versions = {path: _version(world, path) for path in (f"/DocumentReference/{doc}", f"/Binary/{binary}")}
    unknown = str(uuid.uuid4())
    json_patch = orjson.dumps([{"op": "replace", "path": "/status", "value": "entered-in-error"}])
    fhirpath_patch = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "delete"}, {"name": "path", "valueString": "DocumentReference.securityLabel"}]}]}
    with client_for(srv, token) as c:
        def both(fn: Any, type_: str) -> None:
            hidden_id = doc if type_ == "DocumentReference" else binary
            _same(fn(f"/{type_}/{hidden_id}", hidden_id), fn(f"/{type_}/{unknown}", unknown), hidden_id, unknown)

        for type_ in ("DocumentReference", "Binary"):
            both(lambda path, _: c.get(path), type_)
            both(lambda path, _: c.get(path, params={"_format": "json"}), type_)
            both(lambda path, _: c.head(path), type_)
            both(lambda path, _: c.get(path + "/_history"), type_)
            both(lambda path, _: c.get(path + "/_history", params={"_since": "2000-01-01", "_count": "1"}), type_)
            both(lambda path, _: c.get(path + "/_history/1"), type_)
            both(lambda path, _: c.get(path + "/$validate"), type_)
            both(lambda path, _: c.post(path + "/$validate", params={"mode": "delete"},
                                        json={"resourceType": "Parameters"}, headers=FHIR_JSON), type_)
            both(lambda path, _: c.delete(path, headers={"If-Match": 'W/"1"'}), type_)
            both(lambda path, _: c.patch(path, content=json_patch, headers={**JSON_PATCH, "If-Match": 'W/"1"'}),
                 type_)
            both(lambda path, _: c.patch(path, content=json_patch, headers=JSON_PATCH), type_)
            body = ({"resourceType": "Binary", "contentType": "text/plain"} if type_ == "Binary"
                    else _new_doc(world["p1"]))
            both(lambda path, i, body=body: c.put(path, json={**body, "id": i},
                                                  headers={**FHIR_JSON, "If-Match": 'W/"1"'}), type_)
            both(lambda path, i, body=body: c.post(path + "/$validate", params={"mode": "update"},
                                                   headers=FHIR_JSON, json={**body, "id": i}), type_)
        both(lambda path, _: c.patch(path, json=fhirpath_patch, headers=FHIR_JSON), "DocumentReference")
        for kind in ("batch", "transaction"):
            for method, suffix, resource in (("GET", "", None), ("GET", "/_history/1", None), ("DELETE", "", None),
                                             ("PATCH", "", {"resourceType": "Binary", "contentType":
                                                            "application/json-patch+json",
                                                            "data": base64.b64encode(json_patch).decode()})):
                for type_ in ("DocumentReference", "Binary"):
                    def entry(path: str, _: str, method: str = method, suffix: str = suffix,
                              resource: Any = resource, kind: str = kind) -> httpx.Response:
                        e: dict[str, Any] = {"request": {"method": method, "url": path.lstrip("/") + suffix}}
                        if resource is not None:
                            e["resource"] = resource
                        return c.post("/", headers=FHIR_JSON, json={"resourceType": "Bundle", "type": kind,
                                                                    "entry": [e]})
                    both(entry, type_)
    for path, version in versions.items():
        assert _version(world, path) == version, f"{path} was changed"


# -- 4. Binary binding: a professional rebinds content they see now, to keep it once it is masked ----------------

@pytest.mark.parametrize("how", ["put-securityContext", "patch-securityContext", "transaction-rebind",
                                 "delete-then-recreate"])
def test_a_professional_cannot_rebind_a_binary_to_keep_it_after_masking(srv: RunningServer, issuer: DevIssuer,
                                                                         world: dict[str, Any], how: str) -> None:
    """A Binary follows the document that brought it: a professional who may read it today must not move its
    ``securityContext`` to a document of their own, or the content stays readable once the patient has the
    original document masked (MASQUE_PS)."""
    w: World = world["w"]
    patient = w.patient("Rebind")
    record = w.record(patient)
    binary, doc = record["binary"], record["doc"]
    with client_for(srv, dr_token(issuer)) as c:
        mine = c.post("/DocumentReference", json=_new_doc(patient), headers=FHIR_JSON)
        assert mine.status_code == 201, mine.text
        own_ref = {"reference": f"DocumentReference/{mine.json()['id']}"}
        stored = c.get(f"/Binary/{binary}", params={"_format": "json"}).json()
        moved = {k: v for k, v in stored.items() if k != "meta"} | {"securityContext": own_ref}
        if how == "put-securityContext":
            c.put(f"/Binary/{binary}", json=moved, headers=FHIR_JSON)
        elif how == "patch-securityContext":
            c.patch(f"/Binary/{binary}", headers=JSON_PATCH, content=orjson.dumps(
                [{"op": "replace", "path": "/securityContext", "value": own_ref}]))
        elif how == "transaction-rebind":  # the Binary re-sent without securityContext, next to a document naming it
            c.post("/", headers=FHIR_JSON, json={"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": {k: v for k, v in moved.items() if k != "securityContext"},
                 "request": {"method": "PUT", "url": f"Binary/{binary}"}},
                {"resource": _new_doc(patient, url=f"Binary/{binary}"),
                 "request": {"method": "POST", "url": "DocumentReference"}}]})
        else:
            assert c.delete(f"/Binary/{binary}").status_code == 204
            c.put(f"/Binary/{binary}", json=moved, headers=FHIR_JSON)
    # the patient has the original document masked
    current = w.admin.get(f"/DocumentReference/{doc}").json()
    masked = {**current, "securityLabel": [{"coding": [{"system": TRE_A07, "code": "MASQUE_PS"}]}]}
    assert w.admin.put(f"/DocumentReference/{doc}", json=masked, headers=FHIR_JSON).status_code == 200
    with client_for(srv, dr_token(issuer)) as c:
        resp = c.get(f"/Binary/{binary}")
    assert resp.status_code == 404 and record["secret"] not in resp.text, "masked content still readable"


# -- 5. _include of a Binary: read by id, it must follow its document as a read does --------------------------

@pytest.mark.parametrize("who", ["practitioner-masked", "patient-invisible", "opposed-practitioner"])
def test_include_never_returns_a_hidden_binary(srv: RunningServer, issuer: DevIssuer, world: dict[str, Any],
                                              who: str) -> None:
    """``List.item`` is Reference(Any): a List of the caller's naming a hidden Binary must not bring its bytes
    through ``_include`` (nor ``_include:iterate``, nor a Bundle's GET entry)."""
    token, record = {
        "practitioner-masked": (dr_token(issuer), world["masked"]),
        "patient-invisible": (issuer.mint("p1", "patient/*.cruds", patient=world["p1"]), world["invisible"]),
        "opposed-practitioner": (opposed_token(issuer), world["opposing"]),
    }[who]
    bait = world["w"].create({"resourceType": "List", "status": "current", "mode": "working",
                              "subject": {"reference": f"Patient/{world['p1']}"},
                              "entry": [{"item": {"reference": f"Binary/{record['binary']}"}}]})
    secret_b64 = base64.b64encode(record["secret"].encode()).decode()
    with client_for(srv, token) as c:
        answers = [c.get("/List", params={"_id": bait, "_include": "List:item"}),
                   c.get("/List", params={"_id": bait, "_include": "*"}),
                   c.get("/List", params={"_id": bait, "_include:iterate": "List:item"}),
                   c.post("/", headers=FHIR_JSON, json={"resourceType": "Bundle", "type": "batch", "entry": [
                       {"request": {"method": "GET", "url": f"List?_id={bait}&_include=List:item"}}]})]
    for resp in answers:
        assert resp.status_code == 200, resp.text
        assert secret_b64 not in resp.text and record["binary"] not in _resources_text(resp, bait), resp.text


def _resources_text(resp: httpx.Response, bait: str) -> str:
    """The resources a search answered, the bait List itself left out (its own data name the Binary)."""
    body = resp.json()
    if body.get("type") == "batch-response":
        body = body["entry"][0]["resource"]
    return str([e["resource"] for e in body.get("entry") or [] if e["resource"].get("id") != bait])


# -- 6. the TRE_A07 alias system: a read hides the document, a search must too --------------------------------

@pytest.mark.parametrize("who", ["practitioner-masked", "patient-invisible"])
def test_a_label_in_the_alias_system_hides_a_document_from_searches_too(srv: RunningServer, issuer: DevIssuer,
                                                                         world: dict[str, Any], who: str) -> None:
    """``policy.TRE_A07_ALIASES``: the read path honours the label in either spelling of the system
    (StatutVisibilite / StatusVisibilite); the searches' mandatory parameters must exclude both."""
    alias = TRE_A07.replace("StatutVisibilite", "StatusVisibilite")
    label, token = {"practitioner-masked": ("MASQUE_PS", dr_token(issuer)),
                    "patient-invisible": ("INVISIBLE_PATIENT",
                                          issuer.mint("p1", "patient/*.cruds", patient=world["p1"]))}[who]
    secret = f"alias-{uuid.uuid4().hex}"
    doc = world["w"].create({**_new_doc(world["p1"]), "description": secret,
                             "securityLabel": [{"coding": [{"system": alias, "code": label}]}]})
    with client_for(srv, token) as c:
        assert c.get(f"/DocumentReference/{doc}").status_code == 404
        for params in ({"_id": doc}, {"description": secret}, {"subject": f"Patient/{world['p1']}", "_count": "500"},
                       {"_id": doc, "_summary": "count"}):
            resp = c.get("/DocumentReference", params=params)
            assert resp.status_code == 200, resp.text
            assert secret not in str(resp.json().get("entry", [])), (params, resp.text)  # (a self link echoes it)
            if "_id" in params:
                assert resp.json().get("total", 0) == 0, (params, resp.text)
        has = c.get("/Patient", params={"_id": world["p1"], "_has:DocumentReference:subject:description": secret})
        assert has.status_code == 200 and not has.json().get("entry"), has.text


# -- 7. read and search agree on every spelling of a compartment reference ------------------------------------



@pytest.mark.parametrize("spelling", ["relative", "absolute-here", "versioned",
                                      "absolute-elsewhere", "absolute-elsewhere-versioned",
                                      "contained-style"])
def test_read_and_search_agree_on_the_compartment_of_a_reference(srv: RunningServer, issuer: DevIssuer,
                                                                 world: dict[str, Any], spelling: str) -> None:
    """Whatever the spelling of ``subject``, a document the read path hides from the opposed practitioner (or
    shows to its patient) is hidden from (shown by) their searches too: one rule, two implementations."""
    p3 = world["p3"]
    subject = {"relative": f"Patient/{p3}", "absolute-here": f"{srv.base_url}/Patient/{p3}",
               "versioned": f"Patient/{p3}/_history/1",
               "absolute-elsewhere": f"http://elsewhere.example/fhir/Patient/{p3}",
               "absolute-elsewhere-versioned": f"http://elsewhere.example/fhir/Patient/{p3}/_history/1",
               "contained-style": f"Patient/{p3}?x=1"}[spelling]
    doc = world["w"].create({**_new_doc(p3), "subject": {"reference": subject}})
    for token in (opposed_token(issuer), issuer.mint(p3, "patient/*.rs", patient=p3)):
        with client_for(srv, token) as c:
            read = c.get(f"/DocumentReference/{doc}")
            found = c.get("/DocumentReference", params={"_id": doc})
            assert read.status_code in (200, 404) and found.status_code == 200, (read.text, found.text)
            assert (read.status_code == 200) == bool(found.json().get("entry")), (subject, read.text, found.text)


# -- 8. read and search agree on every spelling of a label -------------------------------------------------------

@pytest.mark.parametrize("spelling", ["canonical", "alias", "lower-code", "mixed-code", "upper-system",
                                      "second-coding", "second-label"])
@pytest.mark.parametrize("who", ["practitioner", "patient"])
def test_read_and_search_agree_on_the_spelling_of_a_label(srv: RunningServer, issuer: DevIssuer,
                                                          world: dict[str, Any], spelling: str, who: str) -> None:
    """However the TRE_A07 label is written, the read path and the searches take the same decision on it."""
    code, token = {"practitioner": ("MASQUE_PS", dr_token(issuer)),
                   "patient": ("INVISIBLE_PATIENT", issuer.mint("p1", "patient/*.rs", patient=world["p1"]))}[who]
    alias = TRE_A07.replace("StatutVisibilite", "StatusVisibilite")
    other = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}
    labels = {"canonical": [{"coding": [{"system": TRE_A07, "code": code}]}],
              "alias": [{"coding": [{"system": alias, "code": code}]}],
              "lower-code": [{"coding": [{"system": TRE_A07, "code": code.lower()}]}],
              "upper-system": [{"coding": [{"system": TRE_A07.upper(), "code": code}]}],
              "mixed-code": [{"coding": [{"system": alias, "code": code.capitalize()}]}],
              "second-coding": [{"coding": [other, {"system": TRE_A07, "code": code}]}],
              "second-label": [{"coding": [other]}, {"coding": [{"system": TRE_A07, "code": code}]}]}[spelling]
    doc = world["w"].create({**_new_doc(world["p1"]), "securityLabel": labels})
    with client_for(srv, token) as c:
        read = c.get(f"/DocumentReference/{doc}")
        found = c.get("/DocumentReference", params={"_id": doc})
    assert read.status_code in (200, 404) and found.status_code == 200, (read.text, found.text)
    assert (read.status_code == 200) == bool(found.json().get("entry")), (labels, read.status_code, found.text)
