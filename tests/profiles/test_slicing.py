"""Slicing by every discriminator kind (value/pattern, exists, type, profile), slice cardinality, closed and
ordered slicing, on small profiles written in the vendored rule format."""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir_server.errors import Issue
from profiles import _checker
from profiles.profile import Profile, _rule

FRCORE_PATIENT = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient"


def _profile(rt: str, *rules: dict[str, Any]) -> Profile:
    return Profile(url=f"http://example.org/StructureDefinition/test-{rt}", version="1", name="Test", type=rt,
                   source="test", parent=None, rules=[_rule(r, {}) for r in rules], invariants=(), extra={})


def _errors(profile: Profile, resource: dict[str, Any]) -> list[Issue]:
    return [i for i in _checker().check(profile, resource) if i.severity == "error"]


@cache
def _exists_profile() -> Profile:
    """Telecom sliced by exists(period): at most one open-ended entry, at least one with a period."""
    return _profile("Patient", {"path": "telecom", "slices": [
        {"name": "current", "exists": {"period": False}, "min": 0, "max": "1"},
        {"name": "dated", "exists": {"period": True}, "min": 1, "max": "*"}]})


def test_exists_discriminator() -> None:
    ok = {"resourceType": "Patient", "telecom": [{"value": "1"}, {"value": "2", "period": {"start": "2020"}}]}
    assert _errors(_exists_profile(), ok) == []
    two_current = {"resourceType": "Patient", "telecom": [{"value": "1"}, {"value": "2"}]}
    assert {i.expression for i in _errors(_exists_profile(), two_current)} == {("Patient.telecom",)}


def test_type_discriminator_on_a_choice_element() -> None:
    profile = _profile("Patient", {"path": "extension", "slices": [
        {"name": "dated", "match": {"url": "http://example.org/e"}, "type": {"value[x]": "dateTime"},
         "min": 1, "max": "1"}]})
    dated = {"resourceType": "Patient", "extension": [{"url": "http://example.org/e", "valueDateTime": "2020"}]}
    assert _errors(profile, dated) == []
    text = {"resourceType": "Patient", "extension": [{"url": "http://example.org/e", "valueString": "2020"}]}
    assert [i.expression for i in _errors(profile, text)] == [("Patient.extension",)]


def test_type_and_profile_discriminators_on_resources() -> None:
    """Bundle entries sliced by the type of their resource, and by the profile it conforms to."""
    profile = _profile("Bundle", {"path": "entry", "closed": True, "slices": [
        {"name": "frPatient", "profile": {"resource": FRCORE_PATIENT}, "min": 1, "max": "1"},
        {"name": "documents", "type": {"resource": "DocumentReference"}, "min": 0, "max": "*"}]})
    fr_patient = {"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.3", "value": "1"}],
                  "name": [{"family": "Dupont"}]}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": fr_patient}, {"resource": {"resourceType": "DocumentReference", "status": "current"}}]}
    assert _errors(profile, bundle) == [], _errors(profile, bundle)
    bundle["entry"].append({"resource": {"resourceType": "Binary", "contentType": "text/plain"}})
    assert [i.expression for i in _errors(profile, bundle)] == [("Bundle.entry[2]",)]  # closed
    bundle["entry"][:1] = []
    assert ("Bundle.entry",) in {i.expression for i in _errors(profile, bundle)}  # frPatient min 1


def test_ordered_slicing() -> None:
    profile = _profile("Patient", {"path": "identifier", "ordered": True, "slices": [
        {"name": "a", "match": {"system": "urn:oid:1.1"}},
        {"name": "b", "match": {"system": "urn:oid:1.2"}}]})
    in_order = {"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.1"}, {"system": "urn:oid:1.2"}]}
    assert _errors(profile, in_order) == []
    reversed_ = {"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2"}, {"system": "urn:oid:1.1"}]}
    assert [i.expression for i in _errors(profile, reversed_)] == [("Patient.identifier[1]",)]


def test_slice_max() -> None:
    profile = _profile("Patient", {"path": "name", "slices": [
        {"name": "official", "match": {"use": "official"}, "min": 0, "max": "1"}]})
    two = {"resourceType": "Patient", "name": [{"use": "official", "family": "A"}, {"use": "official",
                                                                                    "family": "B"}]}
    assert [i.expression for i in _errors(profile, two)] == [("Patient.name",)]
