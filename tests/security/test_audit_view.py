"""``policy.audit_view``: who reads the audit trail, and what a patient or a professional is shown of a record,
for every shape of stored facts (a property test: Bundle entries, probes, searches, anonymous callers)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.audit.events import render
from fhir_server.security.policy import audit_view, visible
from fhir_server.security.scopes import ScopeSet
from fhir_server.security.tokens import OppositionSlot, Principal


def principal(scopes: str, patient: str | None = None, fhir_user: str | None = None) -> Principal:
    return Principal("sub", ScopeSet.parse(scopes), patient=patient, fhir_user=fhir_user,
                     oppositions=OppositionSlot(frozenset()))


def test_who_reads_the_trail() -> None:
    assert audit_view(principal("user/*.cruds", fhir_user="Practitioner/d")) is None  # a wildcard: no
    assert audit_view(principal("user/*.rs", fhir_user="Practitioner/d"), "read") is None
    assert audit_view(principal("user/AuditEvent.rs")) is None  # no fhirUser: no "own" records
    assert audit_view(principal("user/AuditEvent.rs", fhir_user="Patient/p")) is None
    assert audit_view(principal("user/AuditEvent.r", fhir_user="Practitioner/d")) is None  # read, not search
    own = audit_view(principal("user/*.rs user/AuditEvent.read", fhir_user="Practitioner/d"), "read")
    assert own is not None and (own.context, own.agent, own.patient) == ("user", "Practitioner/d", None)
    mine = audit_view(principal("patient/*.rs", patient="p1"))
    assert mine is not None and (mine.context, mine.patient) == ("patient", "p1")
    assert audit_view(principal("patient/*.rs")) is None  # no patient claim
    system = audit_view(principal("system/*.rs user/*.rs", fhir_user="Practitioner/d"))
    assert system is not None and system.context == "system"  # the wildcard user grant does not count


_PATIENTS = st.sampled_from(["Patient/p1", "Patient/p2", "Patient/p3", "http://h/fhir/Patient/p2"])
_REFS = _PATIENTS | st.sampled_from(["DocumentReference/d1", "Binary/b1", "Practitioner/x", "Immunization/i"])
_WHO = st.none() | st.fixed_dictionaries({
    "sub": st.sampled_from(["s1", "s2"]), "iss": st.none() | st.just("https://idp"),
    "user": st.none() | _REFS, "client": st.none() | st.just("app"), "patient": st.none() | st.just("p2")})


@settings(max_examples=400, deadline=None)
@given(code=st.sampled_from(["read", "search-type", "create", "transaction", "delete", "unknown"]),
       status=st.sampled_from([200, 201, 403, 404, 500]), target=st.none() | _REFS,
       patients=st.lists(_PATIENTS, max_size=3, unique=True), who=_WHO, ip=st.none() | st.just("10.1.2.3"),
       query=st.none() | st.just("subject=Patient/p2"), detail=st.none() | st.just("GET Patient/p2"))
def test_redaction_shows_a_patient_nothing_of_others_and_a_professional_nothing_looked_up(
        code: str, status: int, target: str | None, patients: list[str], who: dict[str, Any] | None,
        ip: str | None, query: str | None, detail: str | None) -> None:
    facts: dict[str, Any] = {"v": 1, "t": 1_700_000_000_000_000, "code": code, "s": status, "w": who, "ip": ip,
                             "tgt": target, "pts": sorted(patients)}
    facts.update({k: v for k, v in (("q", query), ("d", detail)) if v is not None})
    event = render(facts, "id-1")
    patient = audit_view(principal("patient/*.rs", patient="p1"))
    assert patient is not None
    shown = patient.redact(event)
    text = orjson.dumps(shown).decode()
    assert "p2" not in text and "p3" not in text and "10.1.2.3" not in text and '"app"' not in text
    assert "query" not in text and "identifier" not in text and len(shown["outcomeDesc"].split()) == 2
    # what the SQL keeps (records whose indexed entities name Patient/p1) the patient reads; nothing else
    assert visible(principal("patient/*.rs", patient="p1"), shown) is ("Patient/p1" in [*patients, target])
    user = audit_view(principal("user/AuditEvent.rs", fhir_user="Practitioner/x"))
    assert user is not None
    own = user.redact(event)
    if status >= 400:  # a refused request's patients were the server's look-up
        assert not any("Patient/" in e.get("what", {}).get("reference", "") for e in own.get("entity", []))
    assert visible(principal("user/AuditEvent.rs", fhir_user="Practitioner/x"), own) is (
        who is not None and who["user"] == "Practitioner/x")
