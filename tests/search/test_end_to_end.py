"""Extraction + compilation together, evaluated by the ES simulator (no node needed)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from search.extract import IndexDocumentBuilder
from search.mapping import index_mapping, index_settings
from search.query import compile_search
from search.registry import SearchParameterRegistry
from tests.search.conftest import BASE, DATA, load
from tests.search.es_sim import matches

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def hit(registry: SearchParameterRegistry, doc: dict[str, Any], *params: tuple[str, str]) -> bool:
    c = compile_search(registry, doc["resource_type"], list(params), base_url=BASE, now=NOW)
    return matches(doc, c.query)


@pytest.fixture(scope="module")
def helene(builder: IndexDocumentBuilder) -> dict[str, Any]:
    return builder.build(
        {
            "resourceType": "Patient",
            "id": "h1",
            "meta": {"versionId": "1", "lastUpdated": "2021-05-01T12:00:00Z"},
            "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "2790351215189"}],
            "name": [
                {"family": "Lefèvre-Dubois", "given": ["Hélène", "Bénédicte"], "prefix": ["Mme"]},
                {"text": "John Smith"},
            ],
            "birthDate": "1979-03",
        }
    )


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("name", "helene")], True),
        ([("name", "HÉLÈNE")], True),
        ([("name", "bene")], True),
        ([("name", "edic")], False),  # starts-with, not contains
        ([("name", "mme")], True),  # prefix is a name part
        ([("name", "john smi")], True),  # whole HumanName.text
        ([("name", "helene benedicte")], False),  # words from different parts
        ([("family", "lefevre")], True),
        ([("family", "dubois")], False),
        ([("family:contains", "DUBO")], True),
        ([("family:exact", "Lefèvre-Dubois")], True),
        ([("family:exact", "lefèvre-dubois")], False),
        ([("given", "zoe,hel")], True),
        ([("given", "zoe"), ("given", "hel")], False),
        ([("identifier", "urn:oid:1.2.250.1.213.1.4.8|2790351215189")], True),
        ([("identifier", "2790351215189")], True),
        ([("identifier", "urn:oid:1.2.250.1.213.1.4.8|")], True),
        ([("identifier", "|2790351215189")], False),  # has a system
        ([("identifier", "other|2790351215189")], False),
        ([("_id", "h1")], True),
        ([("_id", "h2")], False),
        ([("_lastUpdated", "ge2020-01-01")], True),
        ([("_lastUpdated", "lt2021-05-01T12:00:00Z")], False),
        ([("_lastUpdated", "eq2021-05-01")], True),
        ([("_lastUpdated", "ge2021-05-01T14:00:00+02:00")], True),
        ([("_lastUpdated", "ge2021-05-01T14:00:01 02:00")], False),  # '+' decoded as a space
        ([("birthdate", "1979")], True),
        ([("birthdate", "1979-03-15")], False),  # the stored month is not within one day
        ([("birthdate", "ap1979-03-15")], True),
        ([("birthdate", "ge1979-03-15")], True),  # T intersects after S? yes: March ends after the 15th
        ([("gender:missing", "true")], True),
        ([("gender:not", "male")], True),  # :not includes resources without a value
        ([("gender", "male")], False),
        ([("birthdate:missing", "false")], True),
    ],
)
def test_patient_search(registry: SearchParameterRegistry, helene: dict[str, Any], params: Any, expected: bool) -> None:
    assert hit(registry, helene, *params) is expected


@pytest.fixture(scope="module")
def docref(builder: IndexDocumentBuilder) -> dict[str, Any]:
    return builder.build(load("r4-examples/DocumentReference-example.json"))


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("patient", "Patient/xcda")], True),
        ([("patient", "xcda")], True),
        ([("patient", f"{BASE}/Patient/xcda")], True),
        ([("patient", "Patient/other")], False),
        ([("subject", "xcda")], True),
        ([("subject:Patient", "xcda")], True),
        ([("subject:Group", "xcda")], False),
        ([("status", "current")], True),
        ([("status", "superseded,current")], True),
        ([("status:not", "current")], False),
        ([("type", "http://loinc.org|34108-1")], True),
        ([("type", "34108-1")], True),
        ([("type", "http://snomed.info/sct|34108-1")], False),
        ([("type:text", "outpatient")], True),
        ([("date", "2005-12-23")], True),  # 09:43+11:00 is the 23rd in UTC
        ([("date", "2005-12-24")], False),
        ([("period", "2004-12-22")], True),
        ([("related:identifier", "urn:oid:1.3.6.1.4.1.21367.2005.3.7.2345")], True),
        ([("security-label", "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|V")], True),
        ([("encounter", "Encounter/xcda"), ("custodian", "Organization/f001")], True),
    ],
)
def test_document_reference_search(
    registry: SearchParameterRegistry, docref: dict[str, Any], params: Any, expected: bool
) -> None:
    assert hit(registry, docref, *params) is expected


def test_immunization_patient(registry: SearchParameterRegistry, builder: IndexDocumentBuilder) -> None:
    doc = builder.build(load("fr/frcore/Immunization-FRCoreImmunizationExample.json"))
    assert hit(registry, doc, ("patient", "Patient/FRCorePatientINSExample"))
    assert hit(registry, doc, ("patient", "FRCorePatientINSExample"), ("date", "ge2024"))
    assert not hit(registry, doc, ("patient", "Patient/x"))
    assert hit(registry, doc, ("vaccine-code:text", "vaxigriptetra, suspension injectable en seringue prerem"))


# --- the mapping accepts every document the builder produces (dynamic: strict) ---------------

TYPES = ("Patient", "DocumentReference", "Immunization", "List", "Binary")


def _examples() -> list[Path]:
    found = [p for t in TYPES for p in sorted((DATA / "r4-examples").glob(f"{t}-*.json"))]
    found += [p for p in sorted((DATA / "fr").rglob("*.json")) if p.name.split("-")[0] in TYPES]
    return found


def _check(doc: Any, mapping: dict[str, Any], path: str) -> None:
    if "properties" in mapping:
        assert isinstance(doc, dict), path
        for key, value in doc.items():
            assert key in mapping["properties"], f"{path}.{key} not mapped"
            _check(value, mapping["properties"][key], f"{path}.{key}")
        return
    values = doc if isinstance(doc, list) else [doc]
    kind = mapping["type"]
    for v in values:
        if kind == "keyword":
            assert isinstance(v, str) and 0 < len(v) <= 8191, path
        elif kind == "long":
            assert isinstance(v, int), path
        elif kind == "date":
            datetime.strptime(v, "%Y-%m-%dT%H:%M:%S.%fZ")
        elif kind == "long_range":
            assert set(v) <= {"gte", "lt"} and v.get("gte", -(2**63)) < v.get("lt", 2**63), path


def test_every_example_fits_the_strict_mapping(
    registry: SearchParameterRegistry, builder: IndexDocumentBuilder
) -> None:
    examples = _examples()
    assert len(examples) > 20
    for path in examples:
        res = load(str(path.relative_to(DATA)))
        doc = builder.build(res)
        _check(doc, index_mapping(registry, res["resourceType"]), res["resourceType"])
        assert doc["fingerprint"] == index_mapping(registry, res["resourceType"])["_meta"]["fingerprint"]


def test_settings() -> None:
    assert index_settings(2, 1) == {"index": {"number_of_shards": 2, "number_of_replicas": 1}}
