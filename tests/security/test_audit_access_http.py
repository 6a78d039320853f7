"""Who reads which audit record (``policy.audit_view``), over HTTP, on every path: read, vread, search, counts,
pages and Bundle entries.

- ``user/*.rs`` does not open the trail (403); a professional with ``user/AuditEvent.rs`` reads the records of
  their own requests only;
- a patient reads the accesses to their own record without another patient's id, a query, an address or an
  identifier, and without the records of the documents hidden from them (``INVISIBLE_PATIENT``);
- a record the caller may not read answers exactly as an unknown one.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import orjson
import pytest

from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.security.policy import TRE_A07
from tests.harness import RunningServer
from tests.security.support import client_for, create_as, start_secured

FHIR_JSON = {"Content-Type": "application/fhir+json"}
UNKNOWN = "00000000-0000-8000-8000-000000000000"


@pytest.fixture(scope="module")
def srv(es_url: str, tmp_path_factory: pytest.TempPathFactory, issuer: DevIssuer) -> Iterator[RunningServer]:
    with start_secured(es_url, tmp_path_factory.mktemp("audit-access"), issuer, audit="on") as server:
        yield server


def _doc(patient: str, label: str | None, binary: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"resourceType": "DocumentReference", "status": "current",
                           "subject": {"reference": f"Patient/{patient}"},
                           "content": [{"attachment": {"contentType": "text/plain", "url": f"Binary/{binary}"}}]}
    if label:
        doc["securityLabel"] = [{"coding": [{"system": TRE_A07, "code": label}]}]
    return doc


def _entries(resp: httpx.Response) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    return [e["resource"] for e in resp.json().get("entry", [])]


@pytest.fixture(scope="module")
def world(srv: RunningServer, issuer: DevIssuer) -> dict[str, Any]:
    """Patient A with a plain, a masked (MASQUE_PS) and an invisible (INVISIBLE_PATIENT) document, patient B;
    the accesses the issue describes: A reads the masked one, professionals read and search, B probes A."""
    admin = client_for(srv, issuer.mint("backend", "system/*.cruds"))
    create = partial(create_as, admin)
    tag = uuid.uuid4().hex[:8]
    a = create({"resourceType": "Patient", "name": [{"family": f"A{tag}"}]})
    b = create({"resourceType": "Patient", "name": [{"family": f"B{tag}"}]})
    binaries = [create({"resourceType": "Binary", "contentType": "text/plain", "data": "eA=="}) for _ in range(3)]
    plain, masked, invisible = (create(_doc(a, label, binary)) for label, binary in
                                zip((None, "MASQUE_PS", "INVISIBLE_PATIENT"), binaries, strict=True))
    dr_user, dr2_user = f"Practitioner/dr{tag}", f"Practitioner/dr2{tag}"
    dr = client_for(srv, issuer.mint(f"dr{tag}", "user/*.cruds", fhir_user=dr_user))
    dr2 = client_for(srv, issuer.mint(f"dr2{tag}", "user/*.cruds", fhir_user=dr2_user))
    patient_a = client_for(srv, issuer.mint(f"pA{tag}", "patient/*.rs", patient=a, fhir_user=f"Patient/{a}"))
    patient_b = client_for(srv, issuer.mint(f"pB{tag}", "patient/*.rs", patient=b, fhir_user=f"Patient/{b}"))
    assert patient_a.get(f"/DocumentReference/{masked}").status_code == 200  # A reads their masked document
    assert patient_a.get(f"/Binary/{binaries[1]}").status_code == 200
    assert dr.get(f"/DocumentReference/{plain}").status_code == 200
    assert dr.get(f"/DocumentReference/{masked}").status_code == 404  # the professional's probe
    assert dr.get("/DocumentReference", params={"subject": f"Patient/{a},Patient/{b}"}).status_code == 200
    assert dr2.get(f"/DocumentReference/{invisible}").status_code == 200  # hidden from A, not from professionals
    assert patient_b.get(f"/DocumentReference/{plain}").status_code == 404  # B probes A's document

    def record(**params: str) -> dict[str, Any]:
        """The one record matching ``params``, as a backend sees it."""
        found = _entries(admin.get("/AuditEvent", params=params))
        assert len(found) == 1, found
        return found[0]

    return {
        "tag": tag, "a": a, "b": b, "plain": plain, "masked": masked, "invisible": invisible, "binaries": binaries,
        "dr": dr_user, "dr2": dr2_user, "admin": admin, "wildcard": dr, "patient_a": patient_a,
        "auditor": client_for(srv, issuer.mint(f"dr{tag}", "user/*.cruds user/AuditEvent.rs", fhir_user=dr_user)),
        "a_reads_masked": record(entity=f"DocumentReference/{masked}", subtype="read", outcome="0"),
        "dr_search": record(agent=dr_user, subtype="search-type", entity=f"Patient/{b}"),
        "dr2_reads_invisible": record(agent=dr2_user, entity=f"DocumentReference/{invisible}"),
        "b_probe": record(entity=f"DocumentReference/{plain}", outcome="4"),
    }


def _same_as_unknown(hidden: httpx.Response, unknown: httpx.Response, hidden_id: str) -> None:
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.text.replace(hidden_id, UNKNOWN) == unknown.text
    assert hidden.headers.get("content-type") == unknown.headers.get("content-type")


def test_a_wildcard_user_scope_does_not_open_the_trail(world: dict[str, Any]) -> None:
    """``user/*.rs``: the masked document's readers, ids and addresses are out of reach on every path (403
    whatever the id or query, so the answer tells nothing of the trail)."""
    dr: httpx.Client = world["wildcard"]
    masked = f"DocumentReference/{world['masked']}"
    known = world["a_reads_masked"]["id"]
    for params in ({"entity": masked}, {"entity": masked, "_summary": "count"}, {"patient": world["a"]}, {}):
        resp = dr.get("/AuditEvent", params=params)
        assert resp.status_code == 403, resp.text
        assert resp.json()["issue"][0]["code"] == "forbidden"
    for path in (f"/AuditEvent/{known}", f"/AuditEvent/{known}/_history/1"):
        resp, unknown = dr.get(path), dr.get(path.replace(known, UNKNOWN))
        assert resp.status_code == unknown.status_code == 403 and resp.text == unknown.text
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"AuditEvent/{known}"}},
        {"request": {"method": "GET", "url": f"AuditEvent?entity={masked}"}}]}
    resp = dr.post("/", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    assert [e["response"]["status"][:3] for e in resp.json()["entry"]] == ["403", "403"]
    assert world["a"] not in resp.text and world["binaries"][1] not in resp.text


def test_a_professional_reads_only_the_records_of_their_own_requests(world: dict[str, Any]) -> None:
    auditor: httpx.Client = world["auditor"]
    masked = f"DocumentReference/{world['masked']}"
    on_masked = auditor.get("/AuditEvent", params={"entity": masked, "_total": "accurate"})
    events = _entries(on_masked)
    # only their own probe (the patient's reads of the document and of its Binary are not theirs)
    assert [e["agent"][0]["who"]["reference"] for e in events] == [world["dr"]]
    assert on_masked.json()["total"] == 1
    assert auditor.get("/AuditEvent", params={"entity": masked, "_summary": "count"}).json()["total"] == 1
    probe = events[0]
    assert probe["outcome"] == "4"
    # the server looked up whose document they probed: that is not shown, nor findable by patient
    assert [e["what"]["reference"] for e in probe.get("entity", []) if "reference" in e.get("what", {})] == [masked]
    assert world["a"] not in orjson.dumps(probe).decode()
    for ref in (world["binaries"][1], world["a_reads_masked"]["id"]):
        assert ref not in on_masked.text
    by_patient = auditor.get("/AuditEvent", params={"patient": world["a"], "_count": "1000", "_total": "accurate"})
    listed = _entries(by_patient)
    assert by_patient.json()["total"] == len(listed) > 0
    assert all(e["agent"][0]["who"]["reference"] == world["dr"] and e["outcome"] == "0" for e in listed)
    assert world["dr_search"]["id"] in {e["id"] for e in listed}
    count = auditor.get("/AuditEvent", params={"patient": world["a"], "_summary": "count"}).json()["total"]
    assert count == len(listed) + 1  # and the record of that listing, a search of theirs naming A
    # another's record by id, read or vread, standalone or in a Bundle: exactly an unknown one
    other = world["dr2_reads_invisible"]["id"]
    for suffix in ("", "/_history/1"):
        _same_as_unknown(auditor.get(f"/AuditEvent/{other}{suffix}"), auditor.get(f"/AuditEvent/{UNKNOWN}{suffix}"),
                         other)
    assert auditor.get(f"/AuditEvent/{world['dr_search']['id']}").status_code == 200


def test_a_patient_listing_names_no_other_patient_query_address_or_hidden_document(world: dict[str, Any]) -> None:
    patient_a: httpx.Client = world["patient_a"]
    resp = patient_a.get("/AuditEvent", params={"_count": "1000", "_total": "accurate"})
    mine = _entries(resp)
    assert resp.json()["total"] == len(mine)
    count = patient_a.get("/AuditEvent", params={"_summary": "count"}).json()["total"]
    assert count == len(mine) + 1  # and the record of that listing (a patient's search is in their compartment)
    ids = {e["id"] for e in mine}
    # the professional's search touched A and B: it is there, without B and without the query
    assert world["dr_search"]["id"] in ids and world["b_probe"]["id"] in ids
    search = next(e for e in mine if e["id"] == world["dr_search"]["id"])
    assert [e["what"]["reference"] for e in search["entity"]
            if "reference" in e.get("what", {})] == [f"Patient/{world['a']}"]
    assert search["agent"][0]["who"] == {"reference": world["dr"]}
    probe = next(e for e in mine if e["id"] == world["b_probe"]["id"])
    assert probe["agent"][0]["who"] == {"display": "not disclosed"}  # another patient: not who
    text = orjson.dumps(mine).decode()  # the records (the links hold the server's own address)
    for secret in (world["b"], f"pB{world['tag']}", "127.0.0.1", world["invisible"],
                   world["dr2_reads_invisible"]["id"], base64.b64encode(b"subject").decode()[:6]):
        assert secret not in text, secret
    assert not any("query" in e or "network" in a or "altId" in a or "identifier" in a.get("who", {})
                   for ev in mine for e in ev.get("entity", []) for a in ev["agent"])
    assert all(ev["outcomeDesc"].count(" ") <= 1 for ev in mine)  # the HTTP status, no entry URL
    # pages see the same restriction: every record paged through is in the listing or newer than it
    paged, url = [], "/AuditEvent?_count=3"
    while url:
        page = patient_a.get(url)
        paged += _entries(page)
        url = next((lk["url"] for lk in page.json()["link"] if lk["relation"] == "next"), "")
    assert {e["id"] for e in paged} >= ids and world["b"] not in str(paged) and world["invisible"] not in str(paged)


def test_a_patient_never_sees_the_records_of_documents_hidden_from_them(world: dict[str, Any]) -> None:
    patient_a: httpx.Client = world["patient_a"]
    hidden = world["dr2_reads_invisible"]["id"]
    assert f"Patient/{world['a']}" in {e["what"].get("reference") for e in world["dr2_reads_invisible"]["entity"]}
    for suffix in ("", "/_history/1"):  # in their compartment, yet exactly an unknown record
        _same_as_unknown(patient_a.get(f"/AuditEvent/{hidden}{suffix}"),
                         patient_a.get(f"/AuditEvent/{UNKNOWN}{suffix}"), hidden)
    for params in ({"entity": f"DocumentReference/{world['invisible']}"}, {"_id": hidden},
                   {"agent": world["dr2"]}):
        for extra in ({"_total": "accurate"}, {"_summary": "count"}):
            resp = patient_a.get("/AuditEvent", params={**params, **extra})
            assert resp.status_code == 200 and resp.json()["total"] == 0 and "entry" not in resp.json(), resp.text
    # the same record read by a backend: it exists, the patient's 404 is the policy
    assert world["admin"].get(f"/AuditEvent/{hidden}").status_code == 200


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_bundle_reads_of_audit_events_are_filtered_as_standalone_ones(world: dict[str, Any], kind: str) -> None:
    patient_a: httpx.Client = world["patient_a"]
    search_id, hidden = world["dr_search"]["id"], world["dr2_reads_invisible"]["id"]
    urls = [f"AuditEvent/{search_id}", f"AuditEvent/{hidden}", f"AuditEvent/{UNKNOWN}"]
    bundle = {"resourceType": "Bundle", "type": kind, "entry": [{"request": {"method": "GET", "url": u}} for u in urls]}
    resp = patient_a.post("/", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    shown, hidden_entry, unknown = resp.json()["entry"]
    assert shown["resource"] == patient_a.get(f"/AuditEvent/{search_id}").json()  # the same redaction
    assert world["b"] not in orjson.dumps(shown).decode()
    assert not any("query" in e for e in shown["resource"]["entity"])
    assert orjson.dumps(hidden_entry).decode().replace(hidden, UNKNOWN) == orjson.dumps(unknown).decode()
    assert unknown["response"]["status"].startswith("404")
    auditor: httpx.Client = world["auditor"]  # a professional: another's record is unknown, theirs is shown
    resp = auditor.post("/", json={**bundle, "entry": bundle["entry"][:2]}, headers=FHIR_JSON)
    assert [e["response"]["status"][:3] for e in resp.json()["entry"]] == ["200", "404"]
