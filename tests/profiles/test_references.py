"""Rules of the HL7 validator on ids and references: duplicate contained ids, conditional references outside
the Bundles that resolve them, references between the entries of a Bundle, links and searchset entries."""

from __future__ import annotations

import copy
from typing import Any

from profiles import validate

from .conftest import SHARED, error_paths, load

PATIENT = {"resourceType": "Patient", "id": "p1", "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3"
                                                                                       ".org/1999/xhtml\">p</div>"}}


def _warnings(resource: Any) -> set[str]:
    return {e for i in validate(resource) if i.severity == "warning" for e in i.expression}


# -- duplicate contained ids ----------------------------------------------------------------------------------

def test_two_contained_resources_with_the_same_id_are_an_error() -> None:
    org = {"resourceType": "Organization", "id": "o", "name": "A"}
    p = {**PATIENT, "contained": [org, {**org, "name": "B"}], "managingOrganization": {"reference": "#o"}}
    assert "Patient.contained[1].id" in error_paths(p)
    assert "Patient.contained[0].id" not in error_paths(p)
    p["contained"][1]["id"] = "o2"
    p["generalPractitioner"] = [{"reference": "#o2"}]
    assert not {e for e in error_paths(p) if e.startswith("Patient.contained")}


# -- conditional references ---------------------------------------------------------------------------------------

def _imm(ref: str) -> dict[str, Any]:
    imm = load(SHARED / "r4-examples" / "Immunization-example.json")
    imm["patient"] = {"reference": ref}
    return imm


def test_conditional_reference_is_an_error_on_its_own_when_asked() -> None:
    imm = _imm("Patient?identifier=urn:oid:1.2.3|42")
    assert "Immunization.patient.reference" in error_paths(imm, conditional_refs="error")
    assert "Immunization.patient.reference" not in error_paths(imm)  # the default: the caller resolves them
    assert "Immunization.patient.reference" not in error_paths(_imm("Patient/42"), conditional_refs="error")


def test_conditional_reference_is_allowed_in_transaction_and_batch_bundles_only() -> None:
    imm = _imm("Patient?identifier=urn:oid:1.2.3|42")
    for kind in ("transaction", "batch"):
        bundle = {"resourceType": "Bundle", "type": kind, "entry": [
            {"fullUrl": "urn:uuid:0b7c5c0e-1d4a-4d8e-9a57-3f0d4f1b2c11", "resource": imm,
             "request": {"method": "POST", "url": "Immunization"}}]}
        assert not {e for e in error_paths(bundle, conditional_refs="error") if e.endswith("patient.reference")}
    collection = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "https://example.org/fhir/Immunization/example", "resource": imm}]}
    assert "Bundle.entry[0].resource.patient.reference" in error_paths(collection, conditional_refs="error")


# -- references inside a Bundle ----------------------------------------------------------------------------------

def _collection(*entries: tuple[str, dict[str, Any]], kind: str = "collection") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": [{"fullUrl": f, "resource": r} for f, r in entries]}


def _patient(id_: str, version: str | None = None) -> dict[str, Any]:
    p = copy.deepcopy(PATIENT) | {"id": id_}
    if version:
        p["meta"] = {"versionId": version}
    return p


def _referrer(ref: str) -> dict[str, Any]:
    return {"resourceType": "Organization", "id": "o", "name": "O", "text": PATIENT["text"],
            "extension": [{"url": "http://example.org/ext", "valueReference": {"reference": ref}}]}


REF = "Bundle.entry[0].resource.extension[0].valueReference.reference"


def test_a_reference_matching_several_entries_is_an_error() -> None:
    b = _collection(("urn:uuid:0b7c5c0e-0000-4000-8000-000000000001", _referrer("urn:uuid:1b7c5c0e-0000-4000-8000-"
                                                                                "000000000002")),
                    ("urn:uuid:1b7c5c0e-0000-4000-8000-000000000002", _patient("a")),
                    ("urn:uuid:1b7c5c0e-0000-4000-8000-000000000002", _patient("b")))
    assert REF in error_paths(b)
    b["entry"][2]["fullUrl"] = "urn:uuid:1b7c5c0e-0000-4000-8000-000000000003"
    assert REF not in error_paths(b)


def test_relative_references_resolve_from_the_entry_base_and_versions_must_exist() -> None:
    base = "https://example.org/fhir/"
    b = _collection((base + "Organization/o", _referrer("Patient/a/_history/2")),
                    (base + "Patient/a", _patient("a", "1")))
    assert REF in error_paths(b)  # the Bundle holds Patient/a at version 1 only
    b["entry"][1]["resource"]["meta"]["versionId"] = "2"
    assert REF not in error_paths(b)
    del b["entry"][1]["resource"]["meta"]
    assert REF not in error_paths(b) and REF in _warnings(b)  # matched entry without a versionId: a warning
    b["entry"].append({"fullUrl": base + "Patient/a", "resource": _patient("a", "2")})
    b["entry"][1]["resource"]["meta"] = {"versionId": "2"}
    assert REF in error_paths(b)  # two entries of the same fullUrl and version


def test_a_urn_reference_must_name_an_entry_and_match_its_type() -> None:
    b = _collection(("urn:uuid:0b7c5c0e-0000-4000-8000-000000000001", _referrer("urn:uuid:2b7c5c0e-0000-4000-8000-"
                                                                                "000000000009")),
                    ("urn:uuid:1b7c5c0e-0000-4000-8000-000000000002", _patient("a")))
    assert REF in error_paths(b)
    b["entry"][0]["resource"]["extension"][0]["valueReference"]["reference"] = "Patient/1b7c5c0e-0000-4000-8000-" \
                                                                               "000000000002"
    assert REF not in error_paths(b)  # urn base: Patient/{id} is urn:uuid:{id}, a Patient
    b["entry"][0]["resource"]["extension"][0]["valueReference"]["reference"] = "Practitioner/1b7c5c0e-0000-4000-" \
                                                                               "8000-000000000002"
    assert REF in error_paths(b)  # the entry it names is a Patient
    b["entry"][0]["resource"]["extension"][0]["valueReference"]["reference"] = "Patient/x/y"
    assert REF in error_paths(b)  # not [type]/[id]


def test_references_leaving_the_bundle_are_not_resolved() -> None:
    base = "https://example.org/fhir/"
    b = _collection((base + "Organization/o", _referrer("Patient/elsewhere")))
    assert REF not in error_paths(b)


# -- links and searchset entries ------------------------------------------------------------------------------------

def _searchset(*entries: dict[str, Any], links: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset",
            "link": links if links is not None else [{"relation": "self", "url": "https://example.org/fhir/Patient"}],
            "entry": list(entries)}


def _hit(res: dict[str, Any], mode: str = "match") -> dict[str, Any]:
    return {"fullUrl": f"https://example.org/fhir/{res['resourceType']}/{res.get('id', 'x')}", "resource": res,
            "search": {"mode": mode}}


def test_searchset_links_occur_once() -> None:
    self_ = {"relation": "self", "url": "https://example.org/fhir/Patient"}
    first = {"relation": "first", "url": "https://example.org/fhir/Patient?_page=1"}
    assert not {e for e in error_paths(_searchset(_hit(_patient("a")), links=[self_, first])) if ".link" in e}
    assert "Bundle.link[1].relation" in error_paths(_searchset(links=[self_, self_]))
    assert "Bundle.link[2].relation" in error_paths(_searchset(links=[self_, first, first]))
    collection = {"resourceType": "Bundle", "type": "collection", "link": [first]}
    assert "Bundle.link[0].relation" in error_paths(collection)  # paging is for searchsets and histories


def test_searchset_match_entries_need_an_id_and_the_searched_type() -> None:
    anonymous = _patient("a")
    del anonymous["id"]
    hit = {"resource": anonymous, "search": {"mode": "match"}}
    assert "Bundle.entry[0].resource" in error_paths(_searchset(hit))
    assert "Bundle.entry[0].resource" in error_paths(_searchset(_hit({**_referrer("x"), "id": "o"})))
    outcome = {"resource": _patient("a"), "search": {"mode": "outcome"}}
    assert "Bundle.entry[0].resource" in error_paths(_searchset(outcome))
    assert not {e for e in error_paths(_searchset(_hit(_patient("a")))) if e.startswith("Bundle.entry")}
    assert "Bundle.entry[0].resource" not in error_paths(_searchset({"resource": anonymous}))  # no modes: a warning
    assert "Bundle.entry[0].resource" in _warnings(_searchset({"resource": anonymous}))
