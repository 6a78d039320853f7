from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from search.errors import SearchError
from search.query import CompiledSearch, compile_search
from search.registry import SearchParameterRegistry
from tests.search.conftest import BASE
from tests.search.test_extract import us

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def compile_(registry: SearchParameterRegistry, rt: str, *params: tuple[str, str], **kw: Any) -> CompiledSearch:
    return compile_search(registry, rt, list(params), base_url=BASE, now=NOW, **kw)


def criteria(c: CompiledSearch) -> list[dict[str, Any]]:
    filters = c.query["bool"]["filter"]
    assert filters[0] == {"term": {"resource_type": c.resource_type}}
    return filters[1:]


def one(registry: SearchParameterRegistry, rt: str, name: str, value: str) -> dict[str, Any]:
    (clause,) = criteria(compile_(registry, rt, (name, value)))
    return clause


def ci(field: str, value: str) -> dict[str, Any]:
    """A case-insensitive token clause: exact (identifiers) or the lower-cased copy (codes)."""
    return {"bool": {"should": [{"term": {field: value}}, {"term": {field + "_ci": value.lower()}}],
                     "minimum_should_match": 1}}


def test_empty_search(registry: SearchParameterRegistry) -> None:
    c = compile_(registry, "Patient")
    assert c.query == {"bool": {"filter": [{"term": {"resource_type": "Patient"}}]}}
    assert c.sort == [{"id": "asc"}]
    assert c.self_params == [] and c.count is None and c.total is None


def test_identifier_and_names(registry: SearchParameterRegistry) -> None:
    assert one(registry, "Patient", "identifier", "urn:oid:1.2.250.1.213.1.4.8|123") == ci(
        "sp.identifier.sys_code", "urn:oid:1.2.250.1.213.1.4.8|123"
    )
    assert one(registry, "Patient", "name", "Hélène ") == {"prefix": {"sp.name.norm": "helene"}}
    assert one(registry, "Patient", "family:exact", "Durand") == {"term": {"sp.family.exact": "Durand"}}
    assert one(registry, "Patient", "family:contains", "ur*") == {"wildcard": {"sp.family.norm": {"value": "*ur\\**"}}}


def test_token_forms(registry: SearchParameterRegistry) -> None:
    assert one(registry, "DocumentReference", "status", "current") == ci("sp.status.code", "current")
    assert one(registry, "DocumentReference", "type", "http://loinc.org|") == {
        "term": {"sp.type.system": "http://loinc.org"}
    }
    assert one(registry, "DocumentReference", "type", "|34108-1") == ci("sp.type.nosys", "34108-1")
    assert one(registry, "Patient", "gender:not", "male") == {"bool": {"must_not": [ci("sp.gender.code", "male")]}}
    # R4 :text: string semantics on the whole text (starts-with after folding), not a word match
    assert one(registry, "DocumentReference", "type:text", "Outpatient") == {"prefix": {"sp.type.text": "outpatient"}}
    assert one(registry, "Patient", "identifier:of-type", "http://t|MR|12345") == {
        "term": {"sp.identifier.of_type": "http://t|MR|12345"}
    }


def test_or_and_escaping(registry: SearchParameterRegistry) -> None:
    c = compile_(registry, "Patient", ("family", "a\\,b,c"), ("family", "d"))
    assert criteria(c) == [
        {
            "bool": {
                "should": [{"prefix": {"sp.family.norm": "a,b"}}, {"prefix": {"sp.family.norm": "c"}}],
                "minimum_should_match": 1,
            }
        },
        {"prefix": {"sp.family.norm": "d"}},
    ]
    assert one(registry, "Patient", "identifier", "sys\\|x|v\\$1") == ci("sp.identifier.sys_code", "sys|x|v$1")


def test_references(registry: SearchParameterRegistry) -> None:
    assert one(registry, "DocumentReference", "patient", "Patient/123") == {"term": {"sp.patient.ref": "Patient/123"}}
    assert one(registry, "DocumentReference", "patient", "123") == {"term": {"sp.patient.id": "123"}}
    assert one(registry, "DocumentReference", "subject", f"{BASE}/Patient/123") == {
        "term": {"sp.subject.ref": "Patient/123"}
    }
    assert one(registry, "DocumentReference", "subject:Patient", "123") == {"term": {"sp.subject.ref": "Patient/123"}}
    assert one(registry, "Immunization", "patient", "Patient/1/_history/4") == {"term": {"sp.patient.ref": "Patient/1"}}
    assert one(registry, "DocumentReference", "subject", "http://other/fhir/Patient/1") == {
        "term": {"sp.subject.ref": "http://other/fhir/Patient/1"}
    }
    assert one(registry, "DocumentReference", "patient:identifier", "urn:oid:1.2.250.1.213.1.4.8|123") == {
        "term": {"sp.patient.identifier": "urn:oid:1.2.250.1.213.1.4.8|123"}
    }


def test_id_last_updated_missing(registry: SearchParameterRegistry) -> None:
    assert one(registry, "Patient", "_id", "a,b") == {"terms": {"id": ["a", "b"]}}
    assert one(registry, "Patient", "_lastUpdated", "ge2020-01-01") == {
        "bool": {
            "should": [
                {"range": {"sp._lastUpdated.range": {"gte": us("2020-01-02T00:00:00.000Z"), "relation": "intersects"}}},
                {
                    "range": {
                        "sp._lastUpdated.range": {
                            "gte": us("2020-01-01T00:00:00.000Z"),
                            "lt": us("2020-01-02T00:00:00.000Z"),
                            "relation": "within",
                        }
                    }
                },
            ],
            "minimum_should_match": 1,
        }
    }
    assert one(registry, "Patient", "birthdate:missing", "true") == {
        "bool": {"must_not": [{"term": {"present": "birthdate"}}]}
    }
    assert one(registry, "Patient", "email:missing", "false") == {"term": {"present": "email"}}


def test_uri(registry: SearchParameterRegistry) -> None:
    assert one(registry, "Patient", "_profile", "http://x/p") == {"term": {"sp._profile.value": "http://x/p"}}
    assert one(registry, "Patient", "_profile:below", "http://x/") == {"prefix": {"sp._profile.value": "http://x/"}}
    assert one(registry, "Patient", "_profile:above", "http://x/a/b") == {
        "terms": {"sp._profile.value": ["http://x", "http://x/a", "http://x/a/b"]}
    }


def test_result_parameters(registry: SearchParameterRegistry) -> None:
    c = compile_(
        registry,
        "DocumentReference",
        ("_count", "10"),
        ("_total", "accurate"),
        ("_summary", "count"),
        ("_elements", "id,status"),
        ("_include", "DocumentReference:subject"),
        ("_revinclude:iterate", "List:item"),
        ("_sort", "-date,status"),
        ("_format", "json"),
    )
    assert (c.count, c.total, c.summary, c.elements) == (10, "accurate", "count", ["id", "status"])
    assert c.includes == ["DocumentReference:subject"] and c.revincludes == ["List:item"]
    assert c.sort == [
        {"sp.date.hi": {"order": "desc", "mode": "max", "missing": "_last"}},
        {"sp.status.code": {"order": "asc", "mode": "min", "missing": "_last"}},
        {"id": "asc"},
    ]
    assert ("_format", "json") not in c.self_params and ("_sort", "-date,status") in c.self_params


def test_sort_special_keys(registry: SearchParameterRegistry) -> None:
    assert compile_(registry, "Patient", ("_sort", "-_lastUpdated")).sort == [
        {"meta.lastUpdated": {"order": "desc", "missing": "_last"}},
        {"id": "asc"},
    ]
    assert compile_(registry, "Patient", ("_sort", "-_id")).sort == [{"id": "desc"}]


def test_unknown_parameters(registry: SearchParameterRegistry) -> None:
    c = compile_(registry, "Patient", ("foo", "1"), ("family", "x"), ("name", ""))
    assert c.self_params == [("family", "x")]
    with pytest.raises(SearchError) as e:
        compile_(registry, "Patient", ("foo", "1"), strict=True)
    assert e.value.expression == "foo"


@pytest.mark.parametrize(
    ("rt", "name", "value"),
    [
        ("Patient", "family:text", "-"),  # :text needs a word
        ("Patient", "gender:below", "http://snomed.info/sct|1"),  # subsumption in an unknown code system
        ("Patient", "gender:below", "male"),  # subsumption needs a system
        ("Patient", "family:below", "x"),
        ("Patient", "gender:in", "http://vs"),
        ("Patient", "gender:above", "x"),
        ("Patient", "birthdate:exact", "2020"),
        ("Patient", "birthdate", "2020-13"),
        ("Patient", "birthdate", "gx2020"),
        ("Patient", "_lastUpdated", "yesterday"),
        ("Patient", "birthdate:missing", "maybe"),
        ("Patient", "identifier", "|"),
        ("Patient", "identifier:of-type", "MR|123"),
        ("Patient", "general-practitioner:Patient", "1"),  # not a target type
        ("Patient", "general-practitioner", "Patient/1"),
        ("Patient", "general-practitioner:Practitioner", "Organization/1"),
        ("Patient", "general-practitioner", "a b"),
        ("Patient", "organization.name", "x"),  # chaining
        ("Patient", "general-practitioner:Practitioner.name", "x"),
        ("Patient", "_has:Observation:patient:code", "x"),
        ("Patient", "phonetic", "123"),  # nothing to match phonetically
        ("DocumentReference", "relationship", "x"),  # composite needs code$target
        ("Patient", "_id:exact", "x"),
        ("Patient", "_count", "-1"),
        ("Patient", "_count", "ten"),
        ("Patient", "_total", "exact"),
        ("Patient", "_summary", "maybe"),
        ("Patient", "_sort", "nope"),
        ("Patient", "_sort:asc", "family"),
        ("Patient", "_include", "subject"),
        ("Patient", "_elements", "a.b"),
        ("Patient", "_profile:contains", "x"),
    ],
)
def test_errors(registry: SearchParameterRegistry, rt: str, name: str, value: str) -> None:
    with pytest.raises(SearchError) as e:
        compile_(registry, rt, (name, value))
    assert e.value.expression == name or name.startswith("_sort")
