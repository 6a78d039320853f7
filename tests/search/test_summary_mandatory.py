"""``search.summary.mandatory_elements``, derived from the vendored R4 StructureDefinitions, against the
required elements the R4 specification lists for the served types (written out here, so a wrong derivation
fails: nested elements taken for top-level ones, ``[x]`` kept, max read instead of min...), and a view
(``_summary``, ``_elements``) never dropping them."""

from __future__ import annotations

import pytest

from fhir_server.registry import RESOURCE_TYPES
from search.summary import _mandatory_by_type, mandatory_elements, subset

#: Top-level elements with min >= 1 in R4 (4.0.1), from the resource pages of the specification.
R4_REQUIRED: dict[str, frozenset[str]] = {
    "Patient": frozenset(),
    "DocumentReference": frozenset({"status", "content"}),
    "Immunization": frozenset({"status", "vaccineCode", "patient", "occurrence"}),
    "List": frozenset({"status", "mode"}),
    "Binary": frozenset({"contentType"}),
    "Consent": frozenset({"status", "scope", "category"}),
}


@pytest.mark.parametrize("type_", sorted(R4_REQUIRED))
def test_mandatory_elements_are_the_r4_required_ones(type_: str) -> None:
    assert mandatory_elements(type_) == R4_REQUIRED[type_]


@pytest.mark.parametrize("type_", sorted(t.name for t in RESOURCE_TYPES.values() if t.searchable))
def test_every_searchable_type_is_derived(type_: str) -> None:
    """A searchable type missing from the vendored definitions would silently lose its required elements."""
    assert type_ in _mandatory_by_type()
    assert type_ in R4_REQUIRED


def test_unknown_type_requires_nothing() -> None:
    assert mandatory_elements("NoSuchType") == frozenset()


def test_views_keep_the_required_elements() -> None:
    consent = {"resourceType": "Consent", "id": "c", "status": "active", "scope": {"text": "s"},
               "category": [{"text": "c"}], "patient": {"reference": "Patient/p"}, "dateTime": "2024-01-01"}
    assert set(subset(consent, summary=None, elements=["id"]) or {}) == {"resourceType", "id", "meta", "status",
                                                                          "scope", "category"}
    immunization = {"resourceType": "Immunization", "id": "i", "status": "completed", "vaccineCode": {"text": "v"},
                    "patient": {"reference": "Patient/p"}, "occurrenceDateTime": "2024-01-01", "lotNumber": "L1",
                    "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">i</div>"}}
    assert set(subset(immunization, summary="text", elements=None) or {}) == {
        "resourceType", "id", "meta", "text", "status", "vaccineCode", "patient", "occurrenceDateTime"}
