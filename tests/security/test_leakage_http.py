"""The leakage suite: a masked document, an opposed practitioner (Consent) and another patient's data,
each probed through every path a client has; none may appear in a body, a count, a link or an error.

Paths: read, vread, instance/type/system history, search (plain, chains, ``_has``, ``_include``,
``_revinclude``, ``_total``, ``_summary=count``), batch and transaction entries (GET included),
``$validate`` on the instance, and Binary (ITI-68) downloads.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.security.policy import TRE_A07
from tests.harness import RunningServer
from tests.security.support import client_for, start_secured

FHIR_JSON = {"Content-Type": "application/fhir+json"}
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
FINESS = "urn:oid:1.2.250.1.71.4.2.2"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"


@pytest.fixture(scope="module")
def srv(es_url: str, tmp_path_factory: pytest.TempPathFactory, issuer: DevIssuer) -> Iterator[RunningServer]:
    with start_secured(es_url, tmp_path_factory.mktemp("leak"), issuer) as server:
        yield server


def consent(patient: str, actor: dict[str, Any], **provision: Any) -> dict[str, Any]:
    """The supported shape: active, patient-privacy, top-level deny provision naming the actor."""
    return {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
        "provision": {"type": "deny", "actor": [{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                 "code": "PRCP"}]},
            "reference": actor}], **provision},
    }


class World:
    """What the probes look for, created by a backend token."""

    def __init__(self, srv: RunningServer, issuer: DevIssuer) -> None:
        self.srv, self.issuer = srv, issuer
        self.admin = client_for(srv, issuer.mint("backend", "system/*.cruds"))
        self.tag = uuid.uuid4().hex[:8]

    def create(self, resource: dict[str, Any]) -> str:
        resp = self.admin.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"])

    def patient(self, family: str) -> str:
        return self.create({"resourceType": "Patient", "name": [{"family": f"{family}{self.tag}"}]})

    def record(self, patient: str, label: str | None = None) -> dict[str, str]:
        """A patient's document with its Binary, an Immunization and a List: one of each path's targets."""
        secret = f"secret-{uuid.uuid4().hex}"
        binary = self.create({"resourceType": "Binary", "contentType": "text/plain",
                              "data": base64.b64encode(secret.encode()).decode()})
        doc: dict[str, Any] = {"resourceType": "DocumentReference", "status": "current",
                               "description": secret, "subject": {"reference": f"Patient/{patient}"},
                               "content": [{"attachment": {"contentType": "text/plain", "url": f"Binary/{binary}"}}]}
        if label:
            doc["securityLabel"] = [{"coding": [{"system": TRE_A07, "code": label}]}]
        out = {"patient": patient, "secret": secret, "binary": binary, "doc": self.create(doc)}
        if label is None:
            out["immunization"] = self.create({
                "resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": secret},
                "patient": {"reference": f"Patient/{patient}"}, "occurrenceDateTime": "2024-01-01"})
            out["list"] = self.create({"resourceType": "List", "status": "current", "mode": "working",
                                       "title": secret, "subject": {"reference": f"Patient/{patient}"},
                                       "entry": [{"item": {"reference": f"DocumentReference/{out['doc']}"}}]})
        return out


def one_of_each(srv: RunningServer, issuer: DevIssuer) -> dict[str, Any]:
    """A smaller world for the write probes: p1 with a plain, a masked and an invisible-to-patient record, p2
    with a plain one, p3 opposing ``Practitioner/opposed``."""
    w = World(srv, issuer)
    p1, p2, p3 = w.patient("Alpha"), w.patient("Beta"), w.patient("Gamma")
    out: dict[str, Any] = {"w": w, "p1": p1, "p2": p2, "p3": p3}
    out["own"] = w.record(p1)
    out["masked"] = w.record(p1, "MASQUE_PS")
    out["invisible"] = w.record(p1, "INVISIBLE_PATIENT")
    out["other"] = w.record(p2)
    out["opposing"] = w.record(p3)
    w.create(consent(p3, {"reference": "Practitioner/opposed"}))
    return out


def dr_token(issuer: DevIssuer, *scopes: str) -> str:
    """A practitioner (``Practitioner/dr``) with ``user/*.cruds`` and any extra scopes."""
    return issuer.mint("dr", " ".join(("user/*.cruds", *scopes)), fhir_user="Practitioner/dr")


@pytest.fixture(scope="module")
def world(srv: RunningServer, issuer: DevIssuer) -> dict[str, Any]:
    w = World(srv, issuer)
    p1, p2, p3 = w.patient("Alpha"), w.patient("Beta"), w.patient("Gamma")
    p4, p5 = w.patient("Delta"), w.patient("Epsilon")
    out: dict[str, Any] = {"w": w, "p1": p1, "p2": p2, "p3": p3, "p4": p4, "p5": p5}
    out["own"] = w.record(p1)
    out["masked"] = w.record(p1, "MASQUE_PS")
    out["other"] = w.record(p2)  # another patient's data, for the patient token
    out["opposing"] = w.record(p3)  # p3 opposes Practitioner/opposed
    out["by_rpps"] = w.record(p4)  # p4 opposes the RPPS number of that practitioner
    out["by_org"] = w.record(p5)  # p5 opposes the practitioner's organisation
    # a List of p1 (visible to everyone concerned) pointing at every hidden document: include bait
    out["bait"] = w.create({"resourceType": "List", "status": "current", "mode": "working",
                            "subject": {"reference": f"Patient/{p1}"},
                            "entry": [{"item": {"reference": f"DocumentReference/{out[k]['doc']}"}}
                                      for k in ("masked", "other", "opposing", "by_rpps", "by_org")]})
    out["consent"] = w.create(consent(p3, {"reference": "Practitioner/opposed"}))
    w.create(consent(p4, {"identifier": {"system": RPPS, "value": "810000000042"}}))
    w.create(consent(p5, {"reference": f"{srv.base_url}/Organization/clinic"}))  # absolute, this server
    return out


def opposed_token(issuer: DevIssuer, *scopes: str) -> str:
    return issuer.mint("dr-opposed", " ".join(("user/*.cruds", *scopes)), fhir_user="Practitioner/opposed",
                       extra={"identifier": f"{RPPS}|810000000042", "organization": "Organization/clinic"})


def _probe_texts(c: httpx.Client, hidden: dict[str, str], family: str, world: dict[str, Any],
                 whole_patient: bool = True) -> list[tuple[str, httpx.Response]]:
    """Every path, aimed at one hidden record; the responses that must not reveal it.

    ``whole_patient``: the patient's whole compartment is hidden (not just one masked document)."""
    doc, binary, patient = hidden["doc"], hidden["binary"], hidden["patient"]
    out: list[tuple[str, httpx.Response]] = []

    def get(path: str, **params: str) -> httpx.Response:
        resp = c.get(path, params=params)
        assert resp.status_code < 500, (path, resp.text)
        out.append((f"GET {path} {params}", resp))
        return resp

    for path in (f"/DocumentReference/{doc}", f"/DocumentReference/{doc}/_history/1",
                 f"/DocumentReference/{doc}/_history", f"/DocumentReference/{doc}/$validate",
                 f"/Binary/{binary}", f"/Binary/{binary}/_history/1", f"/Binary/{binary}/_history"):
        assert get(path).status_code == 404, path
    assert get(f"/Binary/{binary}", _format="json").status_code == 404
    for path in ("/DocumentReference/_history", "/Binary/_history", "/_history"):
        resp = get(path, _count="1000")
        assert resp.status_code in (200, 403, 405), (path, resp.text)
    searches: list[tuple[str, dict[str, str], bool]] = [  # (path, params, nothing may match)
        ("/DocumentReference", {"_id": doc}, True),
        ("/DocumentReference", {"subject": f"Patient/{patient}"}, whole_patient),
        ("/DocumentReference", {"description": hidden["secret"]}, True),
        ("/DocumentReference", {"subject:Patient.family": family}, whole_patient),
        ("/DocumentReference", {"location": f"Binary/{binary}"}, True),
        ("/Patient", {"_has:DocumentReference:subject:_id": doc}, True),
        ("/Patient", {"_has:DocumentReference:subject:description": hidden["secret"]}, True),
        ("/List", {"item:DocumentReference.description": hidden["secret"]}, True),
        ("/List", {"_id": world["bait"], "_include": "List:item"}, False),
        ("/List", {"_id": world["bait"], "_include": "List:item", "_include:iterate": "DocumentReference:subject"},
         False),
        ("/Patient", {"_id": world["p1"], "_revinclude": "DocumentReference:subject"}, False),
    ]
    for path, params, empty in searches:
        for extra in ({}, {"_total": "accurate"}, {"_summary": "count"}):
            resp = get(path, **params, **extra)
            assert resp.status_code == 200, (path, params, resp.text)
            if empty:
                assert resp.json().get("total", 0) == 0 and not resp.json().get("entry"), (path, params, extra)
    for kind in ("batch", "transaction"):
        for method, url in (("GET", f"DocumentReference/{doc}"), ("GET", f"DocumentReference/{doc}/_history/1"),
                            ("GET", f"Binary/{binary}"), ("GET", f"DocumentReference?subject=Patient/{patient}"),
                            ("GET", f"DocumentReference?_id={doc}&_summary=count"),
                            ("GET", f"Patient?_has:DocumentReference:subject:_id={doc}"),
                            ("DELETE", f"DocumentReference/{doc}")):
            if kind == "transaction" and "_has" in url:
                continue  # transactions do not run chains or _has in GET entries (400 for everyone)
            bundle = {"resourceType": "Bundle", "type": kind, "entry": [{"request": {"method": method, "url": url}}]}
            resp = c.post("/", json=bundle, headers=FHIR_JSON)
            assert resp.status_code in (200, 403, 404), (kind, url, resp.text)
            out.append((f"{kind} {method} {url}", resp))
            status = resp.json()["entry"][0]["response"]["status"] if kind == "batch" or resp.status_code == 200 \
                else str(resp.status_code)
            if method == "DELETE":  # 403 when the token may not delete at all; else as an unknown id: 204
                assert status[:3] in ("403", "204"), (kind, method, url, resp.text)
                assert world["w"].admin.get(f"/{url}").status_code == 200, "a hidden resource was deleted"
            elif "?" not in url:
                assert status.startswith("404"), (kind, method, url, resp.text)
            elif kind == "batch" and "_has" not in url and (whole_patient or "subject=" not in url):
                assert resp.json()["entry"][0]["resource"].get("total") == 0, (url, resp.text)
    return out


def _assert_hidden(responses: list[tuple[str, httpx.Response]], hidden: dict[str, str], world: dict[str, Any],
                   *ids: str) -> None:
    for what, resp in responses:
        # an error may echo what the client itself sent (as a standalone 404 does), nothing else
        if resp.status_code != 200 and hidden["secret"] not in what:
            assert hidden["secret"] not in resp.text, what
        if resp.status_code == 200:
            for value in (hidden["secret"], hidden["doc"], hidden["binary"], *ids):
                assert value not in _entries_text(resp, world["bait"]), (what, value)


def _entries_text(resp: httpx.Response, bait: str) -> str:
    """What a 200 body reveals besides the client's own request echoed in a self link or an audit record, and
    the bait List, a visible resource whose own data are references to the hidden documents."""
    ctype = resp.headers.get("content-type", "")
    if "json" not in ctype:
        return resp.text
    body = resp.json()
    if body.get("resourceType") != "Bundle":
        return resp.text
    parts = [str(body.get("total", ""))]
    for e in body.get("entry", []):
        res = e.get("resource") or {}
        if res.get("resourceType") == "AuditEvent" or res.get("id") == bait:
            continue  # the caller's own trace names what it asked for: nothing it did not already know
        if res.get("resourceType") == "Bundle":  # a batch entry's search result
            parts.append(str([x.get("resource") for x in res.get("entry", [])]) + str(res.get("total", "")))
        else:
            parts.append(str({k: v for k, v in e.items() if k != "response"}))
    links = [lk["url"] for lk in body.get("link", []) if lk.get("relation") != "self"]
    return "".join(parts) + "".join(links)


def test_opposed_practitioner_sees_nothing_of_the_opposing_patients(srv: RunningServer, issuer: DevIssuer,
                                                                     world: dict[str, Any]) -> None:
    w: World = world["w"]
    with client_for(srv, opposed_token(issuer)) as c:
        for key, family in (("opposing", "Gamma"), ("by_rpps", "Delta"), ("by_org", "Epsilon")):
            hidden = world[key]
            responses = _probe_texts(c, hidden, f"{family}{w.tag}", world)
            for path in (f"/Patient/{hidden['patient']}", f"/Patient/{hidden['patient']}/_history/1",
                         f"/Patient/{hidden['patient']}/$validate", f"/Immunization/{hidden['immunization']}",
                         f"/List/{hidden['list']}"):
                resp = c.get(path)
                assert resp.status_code == 404, (path, resp.text)
                responses.append((path, resp))
            for params in ({"family": f"{family}{w.tag}"}, {"_id": hidden["patient"]}):
                for extra in ({"_total": "accurate"}, {"_summary": "count"}):
                    resp = c.get("/Patient", params={**params, **extra})
                    assert resp.json()["total"] == 0, resp.text
            resp = c.get("/Immunization", params={"patient.family": f"{family}{w.tag}", "_summary": "count"})
            assert resp.json()["total"] == 0
            resp = c.get("/Patient", params={"_id": hidden["patient"], "_revinclude": "Consent:patient"})
            assert not resp.json().get("entry")
            # nor who accessed their record (the audit trail is in their compartment): user/*.rs does not open
            # the trail, and with a scope that does, not even their own searches naming the patient show
            assert c.get("/AuditEvent", params={"patient": f"Patient/{hidden['patient']}"}).status_code == 403
            with client_for(srv, opposed_token(issuer, "user/AuditEvent.rs")) as auditor:
                for extra in ({}, {"_summary": "count"}):
                    resp = auditor.get("/AuditEvent", params={"patient": f"Patient/{hidden['patient']}", **extra})
                    assert resp.status_code == 200 and not resp.json().get("entry"), resp.text
                    assert resp.json().get("total", 0) == 0, resp.text
            _assert_hidden(responses, hidden, world, hidden["patient"], hidden["immunization"], hidden["list"])
        # the opposition itself is in the patient's compartment: invisible too, and out of reach
        assert c.get(f"/Consent/{world['consent']}").status_code == 404
        assert c.get("/Consent", params={"patient": f"Patient/{world['p3']}", "_summary": "count"}).json()[
            "total"] == 0
        assert c.delete(f"/Consent/{world['consent']}").status_code == 403  # no professional writes Consent
        lifted = consent(world["p3"], {"reference": "Practitioner/someone-else"})
        assert c.post("/Consent", json=lifted, headers=FHIR_JSON).status_code == 403
        # the same practitioner still sees everyone else (the feature does not over-block)
        assert c.get(f"/DocumentReference/{world['own']['doc']}").status_code == 200
        assert c.get(f"/Binary/{world['own']['binary']}").content.decode() == world["own"]["secret"]
    # another practitioner, not opposed, sees the record: the probes above are meaningful
    with client_for(srv, issuer.mint("dr-other", "user/*.cruds user/AuditEvent.rs",
                                     fhir_user="Practitioner/other")) as c:
        assert c.get(f"/DocumentReference/{world['opposing']['doc']}").status_code == 200
        assert c.get(f"/Patient/{world['p3']}").status_code == 200
        found = c.get("/DocumentReference", params={"_id": world["opposing"]["doc"], "_summary": "count"})
        assert found.json()["total"] == 1
        trail = c.get("/AuditEvent", params={"patient": f"Patient/{world['p3']}", "_summary": "count"})
        assert trail.json()["total"] > 0


def test_masked_document_is_hidden_from_professionals_everywhere(srv: RunningServer, issuer: DevIssuer,
                                                                 world: dict[str, Any]) -> None:
    w: World = world["w"]
    with client_for(srv, issuer.mint("dr", "user/*.cruds", fhir_user="Practitioner/dr")) as c:
        responses = _probe_texts(c, world["masked"], f"Alpha{w.tag}", world, whole_patient=False)
        _assert_hidden(responses, world["masked"], world)
    with client_for(srv, issuer.mint("patient-1", "patient/*.rs", patient=world["p1"])) as c:
        assert c.get(f"/DocumentReference/{world['masked']['doc']}").status_code == 200  # the patient sees it


def test_patient_never_reaches_another_patients_data(srv: RunningServer, issuer: DevIssuer,
                                                     world: dict[str, Any]) -> None:
    w: World = world["w"]
    with client_for(srv, issuer.mint("patient-1", "patient/*.rs", patient=world["p1"])) as c:
        responses = _probe_texts(c, world["other"], f"Beta{w.tag}", world)
        for path in (f"/Patient/{world['p2']}", f"/Immunization/{world['other']['immunization']}"):
            resp = c.get(path)
            assert resp.status_code == 404
            responses.append((path, resp))
        _assert_hidden(responses, world["other"], world, world["p2"], world["other"]["immunization"])


def test_consent_applies_on_the_next_request_and_is_lifted_by_the_patient(
        srv: RunningServer, issuer: DevIssuer, world: dict[str, Any]) -> None:
    w: World = world["w"]
    p = w.patient("Zeta")
    record = w.record(p)
    patient = client_for(srv, issuer.mint("zeta", "patient/*.cruds", patient=p))
    dr = client_for(srv, issuer.mint("dr-z", "user/*.cruds", fhir_user="Practitioner/z"))
    assert dr.get(f"/DocumentReference/{record['doc']}").status_code == 200  # cached: nobody opposes dr-z
    created = patient.post("/Consent", json=consent(p, {"reference": "Practitioner/z"}), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    assert dr.get(f"/DocumentReference/{record['doc']}").status_code == 404  # the very next request
    assert dr.get("/DocumentReference", params={"subject": f"Patient/{p}", "_summary": "count"}).json()["total"] == 0
    # a patient writes Consent only for themself
    foreign = patient.post("/Consent", json=consent(world["p1"], {"reference": "Practitioner/z"}), headers=FHIR_JSON)
    assert foreign.status_code == 403
    # outside its period, an opposition does not apply
    expired = consent(p, {"reference": "Practitioner/y"}, period={"start": "2001-01-01", "end": "2002-01-01"})
    assert patient.post("/Consent", json=expired, headers=FHIR_JSON).status_code == 201
    dr_y = client_for(srv, issuer.mint("dr-y", "user/*.cruds", fhir_user="Practitioner/y"))
    assert dr_y.get(f"/DocumentReference/{record['doc']}").status_code == 200
    # withdrawn (status inactive): visible again, at once
    consent_id = created.json()["id"]
    withdrawn = {**created.json(), "status": "inactive"}
    assert patient.put(f"/Consent/{consent_id}", json=withdrawn, headers=FHIR_JSON).status_code == 200
    assert dr.get(f"/DocumentReference/{record['doc']}").status_code == 200


def test_bundle_entries_are_authorised_like_standalone_requests(srv: RunningServer, issuer: DevIssuer,
                                                                world: dict[str, Any]) -> None:
    """The scope matrix, for batch and transaction entries."""
    p1 = world["p1"]
    immunization = {"resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": "x"},
                    "patient": {"reference": f"Patient/{p1}"}, "occurrenceDateTime": "2024-01-01"}
    foreign = {**immunization, "patient": {"reference": f"Patient/{world['p2']}"}}
    entries = [
        ("GET", f"Patient/{p1}", None),
        ("GET", f"Immunization?patient=Patient/{p1}", None),
        ("POST", "Immunization", immunization),
        ("POST", "Immunization", foreign),
        ("PUT", f"Immunization/{world['own']['immunization']}",
         {**immunization, "id": world["own"]["immunization"]}),
        ("DELETE", f"List/{world['own']['list']}", None),
    ]
    expected = {  # token -> status of each entry
        "patient/*.rs": ["200", "200", "403", "403", "403", "403"],
        "patient/*.cruds": ["200", "200", "201", "403", "200", "204"],
        "user/Patient.rs": ["200", "403", "403", "403", "403", "403"],
        "user/*.cruds": ["200", "200", "201", "201", "200", "204"],
        "system/*.cruds": ["200", "200", "201", "201", "200", "204"],
    }
    for scopes, statuses in expected.items():
        token = issuer.mint("t", scopes, patient=p1 if scopes.startswith("patient") else None,
                            fhir_user=None if scopes.startswith("patient") else "Practitioner/m")
        with client_for(srv, token) as c:
            bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
                {"request": {"method": m, "url": u}, **({"resource": r} if r else {})} for m, u, r in entries]}
            resp = c.post("/", json=bundle, headers=FHIR_JSON)
            assert resp.status_code == 200, resp.text
            got = [e["response"]["status"].split()[0] for e in resp.json()["entry"]]
            assert got == statuses, (scopes, got, resp.text)
            for e in resp.json()["entry"]:
                if e["response"]["status"].startswith("4"):
                    assert e["response"]["outcome"]["resourceType"] == "OperationOutcome"
            # a transaction with one denied entry fails whole, naming that entry
            denied = statuses.index("403") if "403" in statuses else None
            if denied is not None:
                m, u, r = entries[denied]
                tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
                    {"request": {"method": "GET", "url": f"Patient/{p1}"}},
                    {"request": {"method": m, "url": u}, **({"resource": r} if r else {})}]}
                resp = c.post("/", json=tx, headers=FHIR_JSON)
                assert resp.status_code == 403, resp.text
                issue = resp.json()["issue"][0]
                assert "Bundle.entry[1]" in issue["diagnostics"] and issue["expression"][0].startswith(
                    "Bundle.entry[1]")
        # restore what the writing tokens deleted
        if world["w"].admin.get(f"/List/{world['own']['list']}").status_code == 410:
            restored = world["w"].admin.get(f"/List/{world['own']['list']}/_history/1").json()
            assert world["w"].admin.put(f"/List/{world['own']['list']}", json=restored,
                                        headers=FHIR_JSON).status_code in (200, 201)


def test_a_replacement_cannot_supersede_a_document_the_caller_may_not_see(
        srv: RunningServer, issuer: DevIssuer, world: dict[str, Any]) -> None:
    """ITI-65: a transaction that replaces a document also changes it (superseded): the same rule as an update."""
    masked = world["masked"]["doc"]
    replacement = {"resourceType": "DocumentReference", "status": "current",
                   "subject": {"reference": f"Patient/{world['p1']}"},
                   "relatesTo": [{"code": "replaces", "target": {"reference": f"DocumentReference/{masked}"}}],
                   "content": [{"attachment": {"contentType": "text/plain", "url": "http://x/new"}}]}
    tx = {"resourceType": "Bundle", "type": "transaction",
          "entry": [{"request": {"method": "POST", "url": "DocumentReference"}, "resource": replacement}]}
    with client_for(srv, issuer.mint("dr", "user/*.cruds", fhir_user="Practitioner/dr")) as c:
        resp = c.post("/", json=tx, headers=FHIR_JSON)
        assert resp.status_code == 404, resp.text
        assert world["masked"]["secret"] not in resp.text
    still = world["w"].admin.get(f"/DocumentReference/{masked}")
    assert still.status_code == 200 and still.json()["status"] == "current"


def test_no_audit_record_is_forged_through_a_bundle(srv: RunningServer, issuer: DevIssuer,
                                                    world: dict[str, Any]) -> None:
    """AuditEvent is written by the server only: a Bundle entry is refused as the standalone POST is (405)."""
    forged = {"resourceType": "AuditEvent", "recorded": "2024-01-01T00:00:00Z",
              "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
              "agent": [{"requestor": True}], "source": {"observer": {"display": "x"}}}
    for kind in ("batch", "transaction"):
        bundle = {"resourceType": "Bundle", "type": kind,
                  "entry": [{"request": {"method": "POST", "url": "AuditEvent"}, "resource": forged}]}
        resp = world["w"].admin.post("/", json=bundle, headers=FHIR_JSON)
        status = resp.json()["entry"][0]["response"]["status"] if kind == "batch" else str(resp.status_code)
        assert status.startswith("405"), resp.text


def test_malformed_entries_are_client_errors_for_every_token(srv: RunningServer, issuer: DevIssuer,
                                                             world: dict[str, Any]) -> None:
    odd = {"resourceType": "DocumentReference", "status": "current", "relatesTo": [{"target": "DocumentReference/x"}],
           "subject": {"reference": f"Patient/{world['p1']}"}, "content": [{"attachment": {"url": "http://x"}}]}
    with client_for(srv, issuer.mint("dr", "user/*.cruds", fhir_user="Practitioner/dr")) as c:
        for entry in ({"request": {"method": "POST", "url": "DocumentReference"}, "resource": odd},
                      {"request": {"method": "GET", "url": f"Patient/{world['p1']}/_history/²"}},
                      {"request": {"method": "GET", "url": f"Patient/{world['p1']}/_history/99999999999999999999"}}):
            resp = c.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]},
                          headers=FHIR_JSON)
            assert 400 <= resp.status_code < 500, resp.text


def test_type_history_shows_a_deletion_only_if_the_deleted_version_is_visible(
        srv: RunningServer, issuer: DevIssuer, world: dict[str, Any]) -> None:
    """Deletions carry no content: the filter looks at the version each one deleted, whether that version
    is on the same history page (deleted just after an update) or only in the store (an older page)."""
    w: World = world["w"]
    masked = {"securityLabel": [{"coding": [{"system": TRE_A07, "code": "MASQUE_PS"}]}]}
    docs: dict[str, str] = {}
    for name, patient, extra in (("plain", world["p1"], {}), ("masked", world["p1"], masked),
                                 ("opposing", world["p3"], {})):
        body = {"resourceType": "DocumentReference", "status": "current",
                "subject": {"reference": f"Patient/{patient}"}, "content": [{"attachment": {"url": "http://x/d"}}],
                **extra}
        docs[name] = w.create(body)
        assert w.admin.put(f"/DocumentReference/{docs[name]}", json={**body, "id": docs[name], "status": "superseded"},
                           headers=FHIR_JSON).status_code == 200
    for _ in range(3):  # the deleted versions are now older than a 3-entry page
        w.create({"resourceType": "DocumentReference", "status": "current", "content": [{"attachment": {"url": "x"}}],
                  "subject": {"reference": f"Patient/{world['p1']}"}})
    for name in docs:
        assert w.admin.delete(f"/DocumentReference/{docs[name]}").status_code in (200, 204)
    with client_for(srv, opposed_token(issuer)) as dr:
        for count in ("3", "1000"):  # the deletions' versions on another page, then on the same one
            seen: list[tuple[str, str]] = []
            url: str | None = f"{srv.base_url}/DocumentReference/_history?_count={count}"
            while url:
                resp = dr.get(url)
                assert resp.status_code == 200, resp.text
                seen += [(e["fullUrl"].rsplit("/", 1)[-1], e["request"]["method"]) for e in resp.json()["entry"]]
                url = next((link["url"] for link in resp.json()["link"] if link["relation"] == "next"), None)
            assert (docs["plain"], "DELETE") in seen
            assert not {i for i, _ in seen} & {docs["masked"], docs["opposing"]}, count
