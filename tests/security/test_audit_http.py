"""Audit trail over HTTP (FHIR_AUTH=jwt, FHIR_AUDIT=on, fail-closed): every request leaves its AuditEvent.

Completeness is checked against the store of record (the rows of the audit table) right after each
answer: in fail-closed mode the record must already be committed when the client gets the response.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import pytest

from fhir_server.audit.events import interaction, patients_of_query, stored_event
from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.storage.audit import AuditLog
from tests.harness import RunningServer
from tests.security.support import client_for, create_as, start_secured

FHIR_JSON = {"Content-Type": "application/fhir+json"}



@pytest.fixture(scope="module")
def srv(es_url: str, tmp_path_factory: pytest.TempPathFactory, issuer: DevIssuer) -> Iterator[RunningServer]:
    with start_secured(es_url, tmp_path_factory.mktemp("audit"), issuer, audit="on",
                       audit_mode="fail-closed") as server:
        yield server



def audit_count(srv: RunningServer) -> int:
    assert srv.ctx.audit is not None and srv.ctx.audit.wait_applied()  # the journal is in the table
    return AuditLog.of(srv.ctx.store.url).total()


def last_events(srv: RunningServer, n: int) -> list[dict[str, Any]]:
    """The last ``n`` records committed to the audit table, newest first."""
    assert srv.ctx.audit is not None and srv.ctx.audit.wait_applied()
    return [stored_event(c, id_) for id_, c in AuditLog.of(srv.ctx.store.url).recent(n)]


@pytest.fixture(scope="module")
def world(srv: RunningServer, issuer: DevIssuer) -> dict[str, Any]:
    admin = client_for(srv, issuer.mint("backend", "system/*.cruds"))

    create = partial(create_as, admin)

    tag = uuid.uuid4().hex[:8]
    p1 = create({"resourceType": "Patient", "name": [{"family": f"Alpha{tag}"}]})
    p2 = create({"resourceType": "Patient", "name": [{"family": f"Beta{tag}"}]})
    doc = create({"resourceType": "DocumentReference", "status": "current", "subject": {"reference": f"Patient/{p1}"},
                  "content": [{"attachment": {"contentType": "text/plain", "url": "http://x/d"}}]})
    other = create({"resourceType": "DocumentReference", "status": "current",
                    "subject": {"reference": f"Patient/{p2}"},
                    "content": [{"attachment": {"contentType": "text/plain", "url": "http://x/e"}}]})
    return {"p1": p1, "p2": p2, "doc": doc, "other": other, "admin": admin}


def _refs(event: dict[str, Any]) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if "reference" in e.get("what", {})}


def test_each_request_leaves_exactly_one_committed_record(srv: RunningServer, issuer: DevIssuer,
                                                         world: dict[str, Any]) -> None:
    dr = client_for(srv, issuer.mint("dr", "user/*.cruds", fhir_user="Practitioner/dr"))
    anon = client_for(srv, None)
    nurse = client_for(srv, issuer.mint("nurse", "user/Patient.rs", fhir_user="Practitioner/nurse"))  # no history
    cases = [
        (dr, "GET", f"/DocumentReference/{world['doc']}", 200, "read", "R", "0"),
        (dr, "GET", f"/DocumentReference?subject=Patient/{world['p1']}", 200, "search-type", "E", "0"),
        (dr, "GET", "/DocumentReference/does-not-exist", 404, "read", "R", "4"),
        (anon, "GET", f"/Patient/{world['p1']}", 401, "read", "R", "4"),
        (nurse, "GET", "/DocumentReference/_history", 403, "history-type", "R", "4"),
    ]
    for http, method, path, status, code, action, outcome in cases:
        before = audit_count(srv)
        resp = http.request(method, path)
        assert resp.status_code == status, (path, resp.text)
        assert audit_count(srv) == before + 1, path
        event = last_events(srv, 1)[0]
        assert event["subtype"][0]["code"] == code
        assert event["action"] == action and event["outcome"] == outcome
        assert event["outcomeDesc"].startswith(f"HTTP {status}")
        assert event["agent"][0]["requestor"] is True
    read, search = last_events(srv, 5)[::-1][:2]
    assert _refs(read) == {f"DocumentReference/{world['doc']}", f"Patient/{world['p1']}"}
    assert read["agent"][0]["who"]["reference"] == "Practitioner/dr"
    query = next(e for e in search["entity"] if "query" in e)
    assert base64.b64decode(query["query"]).decode() == f"subject=Patient/{world['p1']}"
    assert f"Patient/{world['p1']}" in _refs(search)


def test_post_search_records_its_form_body_as_the_query(srv: RunningServer, issuer: DevIssuer,
                                                        world: dict[str, Any]) -> None:
    dr = client_for(srv, issuer.mint("dr", "user/*.cruds", fhir_user="Practitioner/dr"))
    resp = dr.post("/Immunization/_search", content=f"patient={world['p1']}",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 200, resp.text
    event = last_events(srv, 1)[0]
    query = next(e for e in event["entity"] if "query" in e)
    assert base64.b64decode(query["query"]).decode() == f"patient={world['p1']}"
    assert f"Patient/{world['p1']}" in _refs(event)


def test_writes_and_bundle_entries_are_traced(srv: RunningServer, world: dict[str, Any]) -> None:
    admin: httpx.Client = world["admin"]
    before = audit_count(srv)
    created = admin.post("/Immunization", headers=FHIR_JSON, json={
        "resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": "x"},
        "patient": {"reference": f"Patient/{world['p1']}"}, "occurrenceDateTime": "2024-01-01"})
    assert created.status_code == 201
    assert audit_count(srv) == before + 1
    event = last_events(srv, 1)[0]
    assert event["action"] == "C"
    assert _refs(event) == {f"Immunization/{created.json()['id']}", f"Patient/{world['p1']}"}

    before = audit_count(srv)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": "Gamma"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": f"Patient/{world['p2']}"}},
    ]}
    resp = admin.post("/", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    assert audit_count(srv) == before + 3  # the transaction, then one per entry
    whole, first, second = last_events(srv, 3)[::-1]
    assert whole["subtype"][0]["code"] == "transaction"
    assert first["subtype"][0]["code"] == "create" and first["action"] == "C"
    assert second["subtype"][0]["code"] == "read" and _refs(second) == {f"Patient/{world['p2']}"}


def test_patient_lists_accesses_to_own_data_only(srv: RunningServer, issuer: DevIssuer,
                                                world: dict[str, Any]) -> None:
    p1 = client_for(srv, issuer.mint("patient-1", "patient/*.rs", patient=world["p1"],
                                     fhir_user=f"Patient/{world['p1']}"))
    dr = client_for(srv, issuer.mint("dr2", "user/*.cruds", fhir_user="Practitioner/dr2"))
    assert dr.get(f"/DocumentReference/{world['doc']}").status_code == 200
    assert p1.get(f"/DocumentReference/{world['other']}").status_code == 404  # a probe of p2's data
    mine = p1.get("/AuditEvent", params={"patient": f"Patient/{world['p1']}", "_count": "1000"})
    assert mine.status_code == 200, mine.text
    events = [e["resource"] for e in mine.json()["entry"]]
    assert events and all(f"Patient/{world['p1']}" in _refs(e) for e in events)
    assert any(e["agent"][0]["who"].get("reference") == "Practitioner/dr2" for e in events)
    assert world["p2"] not in mine.text and world["other"] not in mine.text
    theirs = p1.get("/AuditEvent", params={"patient": f"Patient/{world['p2']}"})
    assert theirs.status_code == 200 and theirs.json().get("entry", []) == []
    assert p1.post("/AuditEvent", json={"resourceType": "AuditEvent"}, headers=FHIR_JSON).status_code == 405


def test_pure_mapping() -> None:
    assert interaction("GET", "/fhir/Patient/1/_history/2", {"type": "Patient", "id": "1", "vid": "2"}) == "vread"
    assert interaction("POST", "/fhir/Patient/_search", {"type": "Patient"}) == "search-type"
    assert interaction("GET", "/fhir/_history", {}) == "history-system"
    assert interaction("POST", "/fhir/Patient/$validate", {"type": "Patient"}) == "operation"
    assert patients_of_query("Immunization", "patient=1,Patient/2&date=ge2020") == {"Patient/1", "Patient/2"}
    assert patients_of_query("Patient", "_id=7") == {"Patient/7"}


def test_fail_closed_refuses_the_answer_when_the_record_cannot_be_written(
        srv: RunningServer, world: dict[str, Any]) -> None:
    """Last in the module: it stops the writer, as a dead audit store would."""
    admin: httpx.Client = world["admin"]
    srv.uvicorn_server.config.app.state.audit.stop()  # type: ignore[union-attr]
    resp = admin.get(f"/Patient/{world['p1']}")
    assert resp.status_code == 500
    assert resp.json()["resourceType"] == "OperationOutcome"
    assert "audit" in resp.json()["issue"][0]["diagnostics"]
