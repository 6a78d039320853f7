"""The audit table over HTTP: AuditEvent read and search from SQL, paging, the patient compartment, the
CapabilityStatement, and the durability settings of the writer's own connection."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import make_url

from fhir_server.audit.applier import row_of
from fhir_server.audit.events import stored_event
from fhir_server.audit.search import PARAMS
from fhir_server.security.dev_issuer import DevIssuer
from fhir_server.storage.audit import AGENT, ENTITY, AuditAppender, AuditLog, audit_id, audit_url
from tests.harness import RunningServer
from tests.security.support import client_for, create_as, start_secured

FHIR_JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def srv(es_url: str, tmp_path_factory: pytest.TempPathFactory, issuer: DevIssuer) -> Iterator[RunningServer]:
    with start_secured(es_url, tmp_path_factory.mktemp("audit-store"), issuer, audit="on") as server:
        yield server


@pytest.fixture(scope="module")
def world(srv: RunningServer, issuer: DevIssuer) -> dict[str, Any]:
    """Two patients, a document of each, read by a practitioner; a patient probe of the other's document."""
    admin = client_for(srv, issuer.mint("backend", "system/*.cruds"))
    tag = uuid.uuid4().hex[:8]

    create = partial(create_as, admin)

    p1 = create({"resourceType": "Patient", "name": [{"family": f"Un{tag}"}]})
    p2 = create({"resourceType": "Patient", "name": [{"family": f"Deux{tag}"}]})
    docs = [create({"resourceType": "DocumentReference", "status": "current", "subject": {"reference": f"Patient/{p}"},
                    "content": [{"attachment": {"contentType": "text/plain", "url": f"http://x/{p}"}}]})
            for p in (p1, p2)]
    dr = client_for(srv, issuer.mint("dr", "user/*.cruds", fhir_user=f"Practitioner/dr{tag}"))
    for _ in range(3):
        assert dr.get(f"/DocumentReference/{docs[0]}").status_code == 200
    assert dr.get(f"/DocumentReference/{docs[1]}").status_code == 200
    assert dr.get("/DocumentReference/nope").status_code == 404
    patient1 = client_for(srv, issuer.mint("p1", "patient/*.rs", patient=p1, fhir_user=f"Patient/{p1}"))
    assert patient1.get(f"/DocumentReference/{docs[1]}").status_code == 404  # a probe of p2's document
    return {"admin": admin, "p1": p1, "p2": p2, "doc1": docs[0], "doc2": docs[1], "dr": f"Practitioner/dr{tag}",
            "patient1": patient1}


def _entries(resp: httpx.Response) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    return [e["resource"] for e in resp.json().get("entry", [])]


def _refs(event: dict[str, Any]) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if "reference" in e.get("what", {})}


def _pages(http: httpx.Client, params: dict[str, str]) -> list[list[dict[str, Any]]]:
    pages = []
    resp = http.get("/AuditEvent", params=params)
    while True:
        pages.append(_entries(resp))
        nxt = next((link["url"] for link in resp.json()["link"] if link["relation"] == "next"), None)
        if nxt is None or len(pages) > 50:
            return pages
        resp = http.get(nxt)


def test_search_by_patient_pages_newest_first_without_gaps(world: dict[str, Any]) -> None:
    admin: httpx.Client = world["admin"]
    everything = _entries(admin.get("/AuditEvent", params={"patient": world["p1"], "_count": "1000"}))
    pages = _pages(admin, {"patient": f"Patient/{world['p1']}", "_count": "2"})
    paged = [e for page in pages for e in page]
    assert len(pages) > 2 and all(len(p) <= 2 for p in pages)
    known = {e["id"] for e in everything}
    assert [e["id"] for e in paged if e["id"] in known] == [e["id"] for e in everything]
    # the only others are the traces of these very searches, newer than the first page's snapshot
    assert all(e["subtype"][0]["code"] == "search-type" for e in paged if e["id"] not in known)
    assert len({e["id"] for e in paged}) == len(paged)
    assert all(f"Patient/{world['p1']}" in _refs(e) for e in paged)
    recorded = [e["recorded"] for e in paged]
    assert recorded == sorted(recorded, reverse=True)
    ascending = _entries(admin.get("/AuditEvent", params={"patient": world["p1"], "_sort": "date", "_count": "1000"}))
    assert [e["id"] for e in ascending if e["id"] in known] == [e["id"] for e in everything][::-1]


def test_search_parameters(world: dict[str, Any]) -> None:
    admin: httpx.Client = world["admin"]
    doc1 = f"DocumentReference/{world['doc1']}"
    reads = _entries(admin.get("/AuditEvent", params={"entity": doc1, "agent": world["dr"], "action": "R",
                                                      "outcome": "0", "subtype": "read"}))
    assert len(reads) == 3 and all(e["agent"][0]["who"]["reference"] == world["dr"] for e in reads)
    failed = _entries(admin.get("/AuditEvent", params={"agent": world["dr"], "outcome": "4"}))
    assert len(failed) == 1 and failed[0]["outcomeDesc"].startswith("HTTP 404")
    system = _entries(admin.get("/AuditEvent", params={
        "agent": world["dr"], "subtype": "http://hl7.org/fhir/restful-interaction|read,http://other|read"}))
    assert len(system) == 5
    assert _entries(admin.get("/AuditEvent", params={"entity": doc1, "date": "lt2000"})) == []
    recent = _entries(admin.get("/AuditEvent", params={"entity": doc1, "date": reads[-1]["recorded"][:10]}))
    assert {e["id"] for e in recent} >= {e["id"] for e in reads}
    before = _entries(admin.get("/AuditEvent", params={"entity": doc1, "date": f"lt{reads[0]['recorded']}"}))
    assert reads[0]["id"] not in {e["id"] for e in before} and reads[1]["id"] in {e["id"] for e in before}
    by_id = _entries(admin.get("/AuditEvent", params={"_id": f"{reads[0]['id']},{reads[2]['id']}"}))
    assert {e["id"] for e in by_id} == {reads[0]["id"], reads[2]["id"]}
    count = admin.get("/AuditEvent", params={"entity": doc1, "agent": world["dr"], "_summary": "count"})
    assert count.json()["total"] == 3 and "entry" not in count.json()
    total = admin.get("/AuditEvent", params={"entity": doc1, "agent": world["dr"], "_total": "accurate", "_count": "1"})
    assert total.json()["total"] == 3 and len(total.json()["entry"]) == 1


@pytest.mark.parametrize(("params", "expression"), [
    ({"date": "yesterday"}, "date"),
    ({"patient:missing": "true"}, "patient:missing"),
    ({"patient.name": "x"}, "patient.name"),
    ({"entity": "no-type"}, "entity"),
    ({"_sort": "outcome"}, "_sort"),
    ({"_count": "-1"}, "_count"),
    ({"_summary": "text"}, "_summary"),
    ({"_cursor": "!!"}, "_cursor"),
])
def test_bad_searches_are_400_with_the_parameter(world: dict[str, Any], params: dict[str, str],
                                                 expression: str) -> None:
    resp = world["admin"].get("/AuditEvent", params=params)
    assert resp.status_code == 400, resp.text
    assert resp.json()["issue"][0]["expression"] == [expression]


def test_unknown_parameters_are_ignored_unless_strict(world: dict[str, Any]) -> None:
    admin: httpx.Client = world["admin"]
    lenient = admin.get("/AuditEvent", params={"site": "x", "_count": "1"})
    assert lenient.status_code == 200 and "site" not in lenient.json()["link"][0]["url"]
    strict = admin.get("/AuditEvent", params={"site": "x"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400 and strict.json()["issue"][0]["expression"] == ["site"]


def _own_and_other(world: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A record in patient 1's compartment (their document read) and one in patient 2's (the practitioner's)."""
    admin: httpx.Client = world["admin"]
    own = _entries(admin.get("/AuditEvent", params={"entity": f"DocumentReference/{world['doc1']}", "_count": "1"}))[0]
    other = _entries(admin.get("/AuditEvent", params={"entity": f"DocumentReference/{world['doc2']}",
                                                      "agent": world["dr"]}))[0]
    return own, other


def _as_patient(world: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """``event`` as patient 1 is shown it in their own listing (redacted: see test_audit_access_http.py)."""
    shown = _entries(world["patient1"].get("/AuditEvent", params={"_id": event["id"]}))
    assert [e["id"] for e in shown] == [event["id"]]
    return shown[0]


def test_read_and_vread_follow_the_patient_compartment(world: dict[str, Any]) -> None:
    admin: httpx.Client = world["admin"]
    patient1: httpx.Client = world["patient1"]
    own, other = _own_and_other(world)
    own = _as_patient(world, own)
    resp = patient1.get(f"/AuditEvent/{own['id']}")
    assert resp.status_code == 200 and resp.json() == own
    assert resp.headers["etag"] == 'W/"1"'
    assert patient1.get(f"/AuditEvent/{own['id']}/_history/1").json() == own
    assert patient1.get(f"/AuditEvent/{own['id']}/_history/2").status_code == 404
    assert patient1.get(f"/AuditEvent/{other['id']}").status_code == 404  # p2's trail: not revealed
    assert admin.get(f"/AuditEvent/{other['id']}").status_code == 200
    assert admin.get("/AuditEvent/unknown").status_code == 404
    assert admin.put(f"/AuditEvent/{own['id']}", json=own, headers=FHIR_JSON).status_code == 405
    assert admin.delete(f"/AuditEvent/{own['id']}").status_code == 405


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_read_and_vread_as_bundle_entries_follow_the_patient_compartment(world: dict[str, Any], kind: str) -> None:
    admin: httpx.Client = world["admin"]
    patient1: httpx.Client = world["patient1"]
    own, other = _own_and_other(world)
    own = _as_patient(world, own)
    urls = [f"AuditEvent/{own['id']}", f"AuditEvent/{own['id']}/_history/1", f"AuditEvent/{own['id']}/_history/2",
            f"AuditEvent/{other['id']}", "AuditEvent/unknown"]
    bundle = {"resourceType": "Bundle", "type": kind,
              "entry": [{"request": {"method": "GET", "url": u}} for u in urls]}
    resp = patient1.post("/", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    entries = resp.json()["entry"]
    assert [e["response"]["status"].split()[0] for e in entries] == ["200", "200", "404", "404", "404"]
    assert entries[0]["resource"] == own and entries[1]["resource"] == own
    assert entries[0]["response"]["etag"] == 'W/"1"'
    hidden, unknown = entries[3], entries[4]  # a hidden record answers exactly as one that does not exist
    assert "resource" not in hidden and "fullUrl" not in hidden
    assert orjson.dumps(hidden).decode().replace(other["id"], "unknown") == orjson.dumps(unknown).decode()
    admin_view = admin.post("/", json={**bundle, "entry": bundle["entry"][3:4]}, headers=FHIR_JSON).json()
    assert admin_view["entry"][0]["resource"] == other


def test_patient_sees_its_own_trail_and_the_probe_of_others_is_not_there(world: dict[str, Any]) -> None:
    patient1: httpx.Client = world["patient1"]
    mine = _entries(patient1.get("/AuditEvent", params={"_count": "1000"}))  # the compartment is implied
    assert mine and all(f"Patient/{world['p1']}" in _refs(e) for e in mine)
    assert sum(f"DocumentReference/{world['doc1']}" in _refs(e) and e["agent"][0]["who"].get("reference") == world["dr"]
               for e in mine) == 3  # the practitioner's three reads
    assert world["p2"] not in orjson.dumps(mine).decode() and world["doc2"] not in orjson.dumps(mine).decode()
    theirs = patient1.get("/AuditEvent", params={"patient": world["p2"], "_summary": "count"})
    assert theirs.status_code == 200 and theirs.json()["total"] == 0


def test_capability_statement_is_truthful_for_audit_event(world: dict[str, Any]) -> None:
    cs = httpx.get(world["admin"].base_url.join("metadata"), timeout=30).json()
    audit = next(r for r in cs["rest"][0]["resource"] if r["type"] == "AuditEvent")
    assert {i["code"] for i in audit["interaction"]} == {"read", "vread", "search-type"}
    assert {p["name"] for p in audit["searchParam"]} == set(PARAMS)
    assert audit["updateCreate"] is False and audit["conditionalCreate"] is False
    assert "searchInclude" not in audit


def test_records_are_neither_versioned_nor_indexed(srv: RunningServer, world: dict[str, Any]) -> None:
    assert srv.ctx.audit is not None and srv.ctx.audit.wait_applied()
    assert AuditLog.of(srv.ctx.store.url).total() > 0
    assert srv.ctx.store.history_total("AuditEvent", None, since_us=None) == 0
    assert "AuditEvent" not in srv.ctx.indices.searchable_types()


def test_on_sqlite_the_trail_has_a_file_and_write_lock_of_its_own(srv: RunningServer, world: dict[str, Any]) -> None:
    store_file = Path(make_url(srv.ctx.store.url).database or "")
    trail_file = store_file.with_name(f"{store_file.stem}-audit{store_file.suffix}")
    assert make_url(audit_url(srv.ctx.store.url)).database == str(trail_file) and trail_file.exists()
    with srv.ctx.store.engine.connect() as conn:  # the store's file holds no trail rows
        assert conn.execute(text("SELECT count(*) FROM audit_event")).scalar_one() == 0
    raw = srv.ctx.store.engine.raw_connection()  # a resource write holding the store's lock...
    try:
        cur = raw.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            before = AuditLog.of(srv.ctx.store.url).total()
            appender = AuditAppender(srv.ctx.store.url)  # what the applier writes with
            ef = {"v": 1, "t": 1_767_225_600_000_000, "code": "read", "s": 200, "w": None, "tgt": None, "pts": []}
            appender.append([row_of(ef, audit_id(1_767_225_600_000_000, b"lock-test", 0))])
            appender.dispose()
            assert AuditLog.of(srv.ctx.store.url).total() == before + 1  # ...does not block the trail
        finally:
            cur.execute("ROLLBACK")
    finally:
        raw.close()


def test_audit_url_of_stores() -> None:
    assert audit_url("sqlite:////data/fhir.sqlite3") == "sqlite:////data/fhir-audit.sqlite3"
    assert audit_url("sqlite://") == "sqlite://"
    pg = "postgresql+psycopg://fhir:secret@db:5432/fhir"
    assert audit_url(pg) == pg


def test_relaxed_sync_stays_on_the_audit_connection(srv: RunningServer, world: dict[str, Any]) -> None:
    appender = AuditAppender(srv.ctx.store.url)  # what the applier writes with
    with appender.engine.connect() as conn:
        assert conn.execute(text("PRAGMA synchronous")).scalar_one() == 1  # NORMAL
    appender.dispose()
    with srv.ctx.store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA synchronous")).scalar_one() == 2  # FULL: resource writes unchanged


def test_ids_keep_request_order_and_rows_index_entities_and_agents() -> None:
    """A request's AuditEvents (its own, then its Bundle entries') sort in order at one instant; ids of
    other requests differ, and a replay of the same journal record gives the same ids."""
    ids = [audit_id(1_700_000_000_000_000, b"slot|3|1200", i) for i in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert ids[0] == audit_id(1_700_000_000_000_000, b"slot|3|1200", 0)
    others = {audit_id(1_700_000_000_000_000, b"slot|3|%d" % n, 0) for n in range(5000)}
    assert len(others) == 5000
    assert audit_id(1_700_000_000_000_000, b"x", 0) < audit_id(1_700_000_000_001_000, b"a", 0)  # time first
    ef = {"v": 1, "t": 1_700_000_000_000_000, "code": "search-type", "s": 200, "ip": "10.0.0.1",
          "w": {"sub": "dr", "iss": "https://idp", "user": "Practitioner/a", "client": None, "patient": None},
          "tgt": None, "pts": ["Patient/1"], "q": "patient=1"}
    row = row_of(ef, ids[0])
    assert row.refs == ((ENTITY, "Patient/1"), (AGENT, "Practitioner/a"))
    assert (row.action, row.outcome, row.subtype, row.recorded_us) == ("E", "0", "search-type", ef["t"])
    stored = stored_event(row.content, row.id)
    assert list(stored)[:3] == ["resourceType", "id", "meta"] and stored["id"] == row.id
    assert stored["meta"] == {"versionId": "1", "lastUpdated": "2023-11-14T22:13:20.000000+00:00"}
    assert stored["entity"][-1]["query"] == "cGF0aWVudD0x" and stored["agent"][0]["network"]["address"] == "10.0.0.1"
    legacy = orjson.dumps({"resourceType": "AuditEvent", "id": "old", "action": "R"})  # rows of earlier versions
    assert stored_event(legacy, "old") == orjson.loads(legacy)


_REF = st.from_regex(r"(Patient|Practitioner|DocumentReference|Organization)/[a-z0-9]{1,8}", fullmatch=True)


@given(code=st.sampled_from(["read", "search-type", "create", "update", "delete", "transaction", "batch",
                             "operation", "vread", "capabilities", "unknown"]),
       status=st.integers(100, 599), target=st.none() | _REF, patients=st.lists(_REF, max_size=4, unique=True),
       user=st.none() | _REF, query=st.none() | st.text(max_size=40))
def test_indexed_references_are_exactly_the_rendered_ones(code: str, status: int, target: str | None,
                                                          patients: list[str], user: str | None,
                                                          query: str | None) -> None:
    """What ``patient=``, ``entity=`` and ``agent=`` find must be what the AuditEvent shows, no more, no less."""
    ef: dict[str, Any] = {"v": 1, "t": 1_700_000_000_000_000, "code": code, "s": status, "ip": None,
                          "w": None if user is None else {"sub": "s", "iss": None, "user": user},
                          "tgt": target, "pts": sorted(patients)}
    if query is not None:
        ef["q"] = query
    row = row_of(ef, "id-1")
    event = stored_event(row.content, row.id)
    shown = [(ENTITY, e["what"]["reference"]) for e in event.get("entity", []) if "what" in e]
    shown += [(AGENT, a["who"]["reference"]) for a in event["agent"] if "reference" in a["who"]]
    assert list(row.refs) == shown
    assert row.action == event["action"] and row.outcome == event["outcome"]
    assert row.subtype == event["subtype"][0]["code"]
