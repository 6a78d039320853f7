from __future__ import annotations

import copy
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from search.extract import IndexDocumentBuilder
from tests.search.conftest import BASE, load


def us(iso: str) -> int:
    """Microseconds since the epoch of a UTC instant (the unit of the date ``long_range`` fields)."""
    return (datetime.fromisoformat(iso.replace("Z", "+00:00")) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        microseconds=1)


def sp(doc: dict[str, Any], code: str, field: str) -> list[Any]:
    return doc["sp"].get(code, {}).get(field, [])


def test_patient_example(builder: IndexDocumentBuilder) -> None:
    res = load("r4-examples/Patient-example.json")
    res["meta"] = {"versionId": "3", "lastUpdated": "2021-03-04T10:00:00.123456+01:00"}
    before = copy.deepcopy(res)
    doc = builder.build(res)
    assert res == before  # extraction must not mutate the stored resource
    assert doc["resource_type"] == "Patient" and doc["id"] == "example"
    assert doc["meta"] == {"versionId": 3, "lastUpdated": "2021-03-04T09:00:00.123Z"}
    assert sp(doc, "_lastUpdated", "range") == [
        {"gte": us("2021-03-04T09:00:00.123456Z"), "lt": us("2021-03-04T09:00:00.123457Z")}]
    assert sp(doc, "family", "norm") == ["chalmers", "windsor"]
    assert sp(doc, "given", "exact") == ["Peter", "James", "Jim"]
    # name covers every part of every HumanName
    assert set(sp(doc, "name", "norm")) == {"chalmers", "peter", "james", "jim", "windsor"}
    assert sp(doc, "identifier", "sys_code") == ["urn:oid:1.2.36.146.595.217.0.1|12345"]
    assert sp(doc, "identifier", "of_type") == ["http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345"]
    assert sp(doc, "gender", "code") == ["male"] and sp(doc, "gender", "nosys") == ["male"]
    assert sp(doc, "active", "code") == ["true"]
    assert sp(doc, "birthdate", "range") == [
        {"gte": us("1974-12-25T00:00:00.000Z"), "lt": us("1974-12-26T00:00:00.000Z")}]
    assert sp(doc, "organization", "ref") == ["Organization/1"]
    assert sp(doc, "phone", "sys_code")[0] == "phone|(03) 5555 6473"
    assert "email" not in doc["present"] and "email" not in doc["sp"]
    assert "_id" not in doc["sp"]  # _id is the top-level id keyword
    assert set(doc["present"]) == set(doc["sp"]) | {"_text", "_content"}
    assert "peter" in doc["content"].split() and "narrative" in doc


def test_french_patient_accents_and_ins(builder: IndexDocumentBuilder) -> None:
    doc = builder.build(load("fr/frcore/Patient-FRCorePatientExample.json"))
    assert sp(doc, "address-city", "norm") == ["orleans"]
    assert sp(doc, "address-city", "exact") == ["Orléans"]
    assert "367 rue troussier, 45100 orleans, france" in sp(doc, "address", "norm")
    assert sp(doc, "identifier", "sys_code") == ["urn:oid:1.2.250.1.213.1.4.8|123456789012244"]
    assert sp(doc, "identifier", "of_type") == [
        "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203|INS-NIR|123456789012244"
    ]
    assert sp(doc, "_profile", "value") == ["https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins"]


def test_french_patient_email(builder: IndexDocumentBuilder) -> None:
    doc = builder.build(load("fr/doccore/Patient-ba499de3-aeae-43c3-82cb-0ba2718cfa41.json"))
    assert sp(doc, "email", "code") == ["279035121518989@patient.mssante.fr"]
    assert sp(doc, "family", "norm") == ["pat-trois"]
    assert sp(doc, "given", "norm") == ["dominique marie-louise"]


def test_document_reference_example(builder: IndexDocumentBuilder) -> None:
    doc = builder.build(load("r4-examples/DocumentReference-example.json"))
    assert sp(doc, "patient", "ref") == ["Patient/xcda"]
    assert sp(doc, "subject", "ref") == ["Patient/xcda"] and sp(doc, "subject", "id") == ["xcda"]
    assert sp(doc, "status", "code") == ["current"]
    assert sp(doc, "type", "sys_code") == ["http://loinc.org|34108-1"]
    assert sp(doc, "type", "text") == ["outpatient note"]
    assert sp(doc, "author", "ref") == ["Practitioner/xcda1"]  # "#a2" (contained) not indexed
    assert len(sp(doc, "identifier", "code")) == 2  # masterIdentifier + identifier
    assert sp(doc, "date", "range") == [{"gte": us("2005-12-23T22:43:41.000Z"), "lt": us("2005-12-23T22:43:42.000Z")}]
    assert sp(doc, "period", "range") == [{"gte": us("2004-12-22T21:00:00.000Z"), "lt": us("2004-12-22T21:01:01.000Z")}]
    assert sp(doc, "related", "identifier") == ["urn:ietf:rfc:3986|urn:oid:1.3.6.1.4.1.21367.2005.3.7.2345"]
    assert sp(doc, "location", "value") == ["http://example.org/xds/mhd/Binary/07a6483f-732b-461e-86b6-edb665c45510"]
    assert sp(doc, "contenttype", "code") == ["application/hl7-v3+xml"]


def test_patient_param_keeps_only_patient_subjects(builder: IndexDocumentBuilder) -> None:
    base = {"resourceType": "DocumentReference", "id": "d", "status": "current", "content": []}
    group = builder.build({**base, "subject": {"reference": "Group/g1"}})
    assert "patient" not in group["present"] and sp(group, "subject", "ref") == ["Group/g1"]
    typed = builder.build({**base, "subject": {"type": "Patient", "identifier": {"system": "s", "value": "v"}}})
    assert sp(typed, "patient", "identifier") == ["s|v"] and sp(typed, "patient", "type") == ["Patient"]
    contained = builder.build(
        {**base, "contained": [{"resourceType": "Patient", "id": "p"}], "subject": {"reference": "#p"}}
    )
    # contained: not searchable by id, but present (for :missing) and typed, its names indexed for chains
    assert "ref" not in contained["sp"]["patient"] and sp(contained, "patient", "type") == ["Patient"]
    named = builder.build({**base, "contained": [{"resourceType": "Patient", "id": "p", "name": [
        {"family": "Lefèvre", "given": ["Zoé"]}], "identifier": [{"system": "s", "value": "V1"}]}],
        "subject": {"reference": "#p"}})
    assert sp(named, "subject", "contained_family") == ["lefevre"]
    assert sp(named, "subject", "contained_given") == ["zoe"]
    assert sp(named, "subject", "contained_identifier") == ["V1", "s|V1"]


def test_references_normalised(builder: IndexDocumentBuilder) -> None:
    res = {
        "resourceType": "Immunization",
        "id": "i",
        "status": "completed",
        "vaccineCode": {"text": "x"},
        "occurrenceString": "last spring",
        "patient": {"reference": f"{BASE}/Patient/p1/_history/2"},
        "performer": [{"actor": {"reference": "http://other.org/fhir/Practitioner/x"}}],
    }
    doc = builder.build(res)
    assert sp(doc, "patient", "ref") == ["Patient/p1"] and sp(doc, "patient", "id") == ["p1"]
    assert sp(doc, "performer", "ref") == ["http://other.org/fhir/Practitioner/x"]
    assert sp(doc, "performer", "id") == [] and sp(doc, "performer", "type") == ["Practitioner"]
    assert "date" not in doc["present"]  # occurrenceString is not a date
    assert sp(doc, "vaccine-code", "text") == ["x"]


def test_immunization_examples(builder: IndexDocumentBuilder) -> None:
    doc = builder.build(load("r4-examples/Immunization-example.json"))
    assert sp(doc, "patient", "ref") == ["Patient/example"]
    assert sp(doc, "vaccine-code", "sys_code") == ["urn:oid:1.2.36.1.2001.1005.17|FLUVAX"]
    fr = builder.build(load("fr/frcore/Immunization-FRCoreImmunizationExample.json"))
    assert sp(fr, "date", "range") == [{"gte": us("2024-10-15T00:00:00.000Z"), "lt": us("2024-10-16T00:00:00.000Z")}]
    assert sp(fr, "lot-number", "exact") == ["K123AB"] and sp(fr, "series", "norm") == ["immuniz"]
    assert "préremplie" not in " ".join(sp(fr, "vaccine-code", "text"))
    assert any(
        t.startswith("vaxigriptetra, suspension injectable en seringue preremplie")
        for t in sp(fr, "vaccine-code", "text")
    )


def test_extension_only_values_are_missing(builder: IndexDocumentBuilder) -> None:
    doc = builder.build(
        {"resourceType": "Patient", "id": "p", "_birthDate": {"extension": [{"url": "u", "valueCode": "unknown"}]}}
    )
    assert "birthdate" not in doc["present"]


def test_bad_values_are_skipped_and_logged(builder: IndexDocumentBuilder, caplog: pytest.LogCaptureFixture) -> None:
    res = {
        "resourceType": "Patient",
        "id": "p",
        "meta": {"versionId": "v1", "lastUpdated": "yesterday"},
        "birthDate": "1974-13-45",
        "name": [{"family": "Dupont"}],
        "generalPractitioner": [{"reference": "Practitioner/" + "x" * 5000}],
    }
    with caplog.at_level(logging.WARNING, logger="search.index"):
        doc = builder.build(res)
    assert doc["meta"] == {}
    assert "birthdate" not in doc["present"]
    assert "general-practitioner" not in doc["present"]
    assert sp(doc, "family", "norm") == ["dupont"]
    assert "birthdate" in caplog.text and "versionId" in caplog.text


def test_skip_absent_shortcut_extracts_the_same_documents(registry: Any) -> None:
    """The fast path (no FHIRPath evaluation when the first element is absent) changes nothing."""
    import json as _json

    from tests.search.conftest import DATA

    fast = IndexDocumentBuilder(registry, base_url=BASE, skip_absent=True)
    slow = IndexDocumentBuilder(registry, base_url=BASE, skip_absent=False)
    files = [*sorted((DATA / "r4-examples").glob("*.json")), *sorted((DATA / "fr" / "pdsm-published-json").glob("*"))]
    resources = [_json.loads(f.read_text(encoding="utf-8")) for f in files]
    for f in sorted((DATA / "synthea" / "10-patients").glob("*.ndjson"))[:6]:
        resources += [_json.loads(line) for line in f.read_text(encoding="utf-8").splitlines()[:20] if line.strip()]
    served = {"Patient", "DocumentReference", "Immunization", "List"}
    checked = 0
    for res in resources:
        if res.get("resourceType") in served:
            assert fast.build(res) == slow.build(res), res.get("id")
            checked += 1
    assert checked > 40
