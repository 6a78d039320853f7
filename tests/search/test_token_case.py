"""Token case rules and token ``:text``, property-tested: index + query (ES simulator) against an oracle
written from the R4 CodeSystems and search.html#token.

* A code matches in any case only in a code system that says ``caseSensitive = false`` (SNOMED CT);
  administrative-gender says ``true``; a system that says nothing (``urn:x``) or no system is exact.
* ``:text`` is string search on the whole text: it starts with the value after case/accent folding.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from search.extract import IndexDocumentBuilder
from search.params.token import case_insensitive
from search.query import compile_search
from search.registry import SearchParameterRegistry
from tests.search.conftest import BASE
from tests.search.es_sim import matches
from tests.search.reference_matcher import fold

SNOMED = "http://snomed.info/sct"
GENDER = "http://hl7.org/fhir/administrative-gender"
SYSTEMS = [SNOMED, GENDER, "urn:x", None]

codes = st.text(alphabet="aAbBéÉ-", min_size=1, max_size=3).filter(lambda c: c.strip("-"))
codings = st.lists(st.tuples(st.sampled_from(SYSTEMS), codes), min_size=1, max_size=3)
texts = st.text(alphabet="aAéÉ bB-", min_size=1, max_size=8)


def test_case_insensitive_systems_come_from_the_r4_code_systems() -> None:
    assert case_insensitive(SNOMED)
    for system in (GENDER, "http://unitsofmeasure.org", "urn:ietf:bcp:13", "http://loinc.org", "urn:x", None):
        assert not case_insensitive(system)


def _document(builder: IndexDocumentBuilder, concept: dict[str, Any]) -> dict[str, Any]:
    return builder.build({"resourceType": "DocumentReference", "id": "d", "status": "current", "type": concept,
                          "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00Z"},
                          "content": [{"attachment": {"url": "http://example.org/x"}}]})


def _hit(registry: SearchParameterRegistry, doc: dict[str, Any], name: str, value: str) -> bool:
    return matches(doc, compile_search(registry, "DocumentReference", [(name, value)], base_url=BASE).query)


def _same(system: str | None, stored: str, query: str) -> bool:
    return stored == query or (system == SNOMED and stored.lower() == query.lower())


@settings(max_examples=300, deadline=None)
@given(codings=codings, system=st.sampled_from([*SYSTEMS, ""]), query=codes)
def test_token_case_follows_the_code_system(registry: SearchParameterRegistry, builder: IndexDocumentBuilder,
                                            codings: list[tuple[str | None, str]], system: str | None,
                                            query: str) -> None:
    concept = {"coding": [{"code": c, **({"system": s} if s else {})} for s, c in codings]}
    doc = _document(builder, concept)
    if system is None:  # code: any system
        expected = any(_same(s, c, query) for s, c in codings)
        value = query
    else:  # system|code, or |code for no system
        expected = any((s or "") == system and _same(s, c, query) for s, c in codings)
        value = f"{system}|{query}"
    assert _hit(registry, doc, "type", value) == expected


@settings(max_examples=300, deadline=None)
@given(text=texts, display=texts, query=texts.filter(lambda q: fold(q)))
def test_token_text_starts_the_whole_text(registry: SearchParameterRegistry, builder: IndexDocumentBuilder,
                                          text: str, display: str, query: str) -> None:
    doc = _document(builder, {"coding": [{"system": "urn:x", "code": "c", "display": display}], "text": text})
    expected = any(fold(t).startswith(fold(query)) for t in (text, display))
    assert _hit(registry, doc, "type:text", query) == expected
