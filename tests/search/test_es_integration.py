"""The same documents and queries against the session's real Elasticsearch node.

It checks that the mapping is accepted, that
every example document indexes under ``dynamic: strict``, and that ES agrees with the
in-memory simulator used by the unit tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from search.extract import IndexDocumentBuilder
from search.mapping import index_mapping, index_settings
from search.query import compile_search
from search.registry import SearchParameterRegistry
from tests.search.conftest import BASE, DATA, load
from tests.search.es_sim import matches
from tests.search.test_end_to_end import _examples

NOW = datetime(2025, 6, 1, tzinfo=UTC)

QUERIES: dict[str, list[list[tuple[str, str]]]] = {
    "Patient": [
        [("name", "helene")],
        [("name", "edic")],
        [("family", "chalm")],
        [("family:exact", "Chalmers")],
        [("name:contains", "ALM")],
        [("identifier", "urn:oid:1.2.250.1.213.1.4.8|123456789012244")],
        [("identifier", "|12345")],
        [("identifier:of-type", "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203|INS-NIR|123456789012244")],
        [("gender:not", "male")],
        [("birthdate", "1974")],
        [("birthdate", "ge1974-12-25")],
        [("birthdate", "ne1974")],
        [("birthdate", "sa1975")],
        [("birthdate", "eb1975")],
        [("birthdate", "ap1975")],
        [("birthdate:missing", "true")],
        [("_lastUpdated", "ge2020-01-01")],
        [("_lastUpdated", "lt2020-01-01")],
        [("_id", "example,h1")],
        [("_profile:below", "https://hl7.fr/")],
        [("_profile:above", "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins/x")],
        [("organization", "Organization/1")],
        [("address-city", "orle")],
        [("email:missing", "false")],
    ],
    "DocumentReference": [
        [("patient", "xcda")],
        [("subject:Patient", "Patient/xcda")],
        [("status", "current")],
        [("type", "http://loinc.org|")],
        [("type:text", "outpat")],
        [("date", "gt2005")],
        [("period", "2004-12-22")],
        [("period", "lt2004-12-22T21:00:30Z")],
    ],
    "Immunization": [[("patient", "Patient/example")], [("date", "le2013")], [("vaccine-code", "FLUVAX")]],
}


SORTS = {
    "Patient": "-birthdate,family,-gender,organization,_profile",
    "DocumentReference": "date,-period,subject",
    "Immunization": "-date,vaccine-code",
}


@pytest.fixture(scope="module")
def es(es_url: str) -> Iterator[Any]:
    from elasticsearch import Elasticsearch

    client = Elasticsearch(es_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def indexed(
    es: Any, registry: SearchParameterRegistry, builder: IndexDocumentBuilder
) -> Iterator[dict[str, tuple[str, list[dict[str, Any]]]]]:
    prefix = f"search-test-{uuid.uuid4().hex[:8]}-"
    by_type: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    for rt in QUERIES:
        name = prefix + rt.lower()
        es.indices.create(index=name, mappings=index_mapping(registry, rt), settings=index_settings(1, 0))
        by_type[rt] = (name, [])
    for i, path in enumerate(_examples()):
        res = load(str(path.relative_to(DATA)))
        if res["resourceType"] not in by_type:
            continue
        res.setdefault("meta", {}).update(versionId="1", lastUpdated=f"20{10 + i % 15:02d}-06-01T10:00:00Z")
        doc = builder.build(res)
        name, docs = by_type[res["resourceType"]]
        if any(d["id"] == doc["id"] for d in docs):
            continue  # the same example published twice
        es.index(index=name, id=doc["id"], document=doc, version=1, version_type="external")
        docs.append(doc)
    for name, _ in by_type.values():
        es.indices.refresh(index=name)
    yield by_type
    for name, _ in by_type.values():
        es.indices.delete(index=name)


def test_es_agrees_with_simulator(es: Any, registry: SearchParameterRegistry, indexed: Any) -> None:
    nonempty = 0
    for rt, queries in QUERIES.items():
        name, docs = indexed[rt]
        for params in queries:
            c = compile_search(registry, rt, params, base_url=BASE, now=NOW)
            resp = es.search(index=name, query=c.query, sort=c.sort, size=100)
            got = [h["_id"] for h in resp["hits"]["hits"]]
            expected = {d["id"] for d in docs if matches(d, c.query)}
            assert set(got) == expected, (rt, params)
            nonempty += bool(got) and len(got) < len(docs)
        # sorting works on every sortable field type
        for key in ("_lastUpdated", "-_lastUpdated", "_id", SORTS[rt]):
            c = compile_search(registry, rt, [("_sort", key)], base_url=BASE)
            es.search(index=name, query=c.query, sort=c.sort, size=100)
    assert nonempty >= 25  # the comparison is not vacuous
