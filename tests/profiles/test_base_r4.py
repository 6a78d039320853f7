"""Base R4 validation: every spec example of the served types is valid; systematic mutations fail with the
exact FHIRPath of the element."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from profiles import validate

from .conftest import SHARED, error_paths, errors, load

TYPES = ("Patient", "DocumentReference", "Immunization", "Binary", "List", "Bundle", "OperationOutcome")
EXAMPLES = sorted(f for t in TYPES for f in (SHARED / "r4-examples").glob(f"{t}-*.json"))


def test_examples_found() -> None:
    assert len(EXAMPLES) > 70


# Spec examples the official HL7 validator rejects too (its Bundle rules: a RESTful fullUrl ends with the entry's
# type/id; every entry outside transactions and batches has a fullUrl): the errors expected of each.
DEFECTIVE = {
    "Bundle-10bb101f-a121-4264-a920-67be9cb82c74.json": {"Bundle.entry[2].fullUrl"},
    "Bundle-3a0707d3-549e-4467-b8b8-5a2ab3800efe.json": {"Bundle.entry[3].fullUrl"},
    "Bundle-lri-example.json": {f"Bundle.entry[{i}].fullUrl" for i in range(1, 17)},
    "Bundle-bundle-search-warning.json": {"Bundle.entry[0]"},
}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_spec_example_is_valid(path: Path) -> None:
    assert {e for i in errors(load(path)) for e in i.expression} == DEFECTIVE.get(path.name, set())


def test_synthea_resources_are_valid(shared: Path) -> None:
    for type_ in ("Patient", "Immunization", "DocumentReference"):
        f = shared / "synthea" / "10-patients" / f"{type_}.000.ndjson"
        for line in f.read_text().splitlines()[:200]:
            if line.strip():
                import json

                assert errors(json.loads(line)) == [], line[:120]


@pytest.fixture()
def patient() -> dict[str, Any]:
    return load(SHARED / "r4-examples" / "Patient-example.json")


def _mutated(resource: dict[str, Any], fn: Any) -> dict[str, Any]:
    r = copy.deepcopy(resource)
    fn(r)
    return r


MUTATIONS = [
    # (description, mutation, expected FHIRPath)
    ("empty string", lambda r: r["identifier"].append({"system": "", "value": "x"}), "Patient.identifier[1].system"),
    ("unknown element", lambda r: r.update(unknownThing=True), "Patient.unknownThing"),
    ("wrong code, required binding", lambda r: r.update(gender="femme"), "Patient.gender"),
    ("wrong primitive type", lambda r: r.update(active="yes"), "Patient.active"),
    ("wrong complex type", lambda r: r.update(maritalStatus="M"), "Patient.maritalStatus"),
    ("array for a single element", lambda r: r.update(birthDate=["1974-12-25"]), "Patient.birthDate"),
    ("single for an array", lambda r: r.update(name={"family": "x"}), "Patient.name"),
    ("empty array", lambda r: r.update(name=[]), "Patient.name"),
    ("empty object", lambda r: r.update(maritalStatus={}), "Patient.maritalStatus"),
    ("invalid date", lambda r: r.update(birthDate="2020-02-30"), "Patient.birthDate"),
    ("dateTime without zone", lambda r: (r.pop("deceasedBoolean"), r.update(deceasedDateTime="2020-01-01T10:00:00")),
     "Patient.deceased.ofType(dateTime)"),
    ("two choice types", lambda r: r.update(deceasedDateTime="2020-01-01"), "Patient.deceasedDateTime"),
    ("required element removed", lambda r: r.update(link=[{"type": "seealso"}]), "Patient.link[0].other"),
    ("broken invariant pat-1", lambda r: r["contact"][0].clear() or r["contact"][0].update(gender="female"),
     "Patient.contact[0]"),
    ("broken invariant per-1", lambda r: r["name"][0].update(period={"start": "2020-01-01", "end": "2019-01-01"}),
     "Patient.name[0].period"),
    ("wrong reference type", lambda r: r.update(managingOrganization={"reference": "Organization/x",
                                                                        "type": "Patient"}),
     "Patient.managingOrganization.type"),
    ("reference with a space", lambda r: r.update(managingOrganization={"reference": "Organization/a b"}),
     "Patient.managingOrganization.reference"),
    ("unknown extension", lambda r: r.update(extension=[{"url": "http://other.org/fhir/ext", "valueString": "x"}]),
     "Patient.extension[0]"),
    ("regular extension as a modifier", lambda r: r.update(modifierExtension=[{
        "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace", "valueAddress": {"city": "Paris"}}]),
     "Patient.modifierExtension[0]"),
    ("invalid OID", lambda r: r["identifier"][0].update(system="urn:oid:1.2.a"), "Patient.identifier[0].system"),
    ("upper-case UUID", lambda r: r["identifier"][0].update(system="urn:uuid:9D1714DA-B7E6-455B-BFD2-69CE0FF5FB12"),
     "Patient.identifier[0].system"),
    ("dangling contained reference", lambda r: r.update(managingOrganization={"reference": "#nope"}),
     "Patient.managingOrganization.reference"),
    ("script in narrative", lambda r: r["text"].update(
        div='<div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></div>'), "Patient.text.div"),
    ("extension with value and children", lambda r: r.update(extension=[
        {"url": "http://example.org/x", "valueString": "a", "extension": [{"url": "y", "valueString": "b"}]}]),
     "Patient.extension[0]"),
    ("extension value of the wrong type", lambda r: r.update(extension=[
        {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace", "valueString": "Paris"}]),
     "Patient.extension[0].value.ofType(string)"),
    ("unknown core extension", lambda r: r.update(extension=[
        {"url": "http://hl7.org/fhir/StructureDefinition/no-such-thing", "valueString": "x"}]),
     "Patient.extension[0].url"),
    ("bad id", lambda r: r.update(id="a b"), "Patient.id"),
    ("language that is not BCP-47", lambda r: r.update(language="french"), "Patient.language"),
    ("relative extension url", lambda r: r.update(extension=[{"url": "foo", "valueString": "x"}]),
     "Patient.extension[0].url"),
    ("local Identifier.system", lambda r: r["identifier"][0].update(system="local"),
     "Patient.identifier[0].system"),
    ("fraction for an integer", lambda r: r["telecom"][0].update(rank=1.5), "Patient.telecom[0].rank"),
    ("unknown code in a complete R4 code system", lambda r: r.update(maritalStatus={"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "ZZ"}]}),
     "Patient.maritalStatus.coding[0].code"),
    ("code with spaces", lambda r: r["telecom"][0].update(system=" phone"), "Patient.telecom[0].system"),
    ("primitive null", lambda r: r["name"][0].update(given=["Peter", None]), "Patient.name[0].given[1]"),
]


@pytest.mark.parametrize(("what", "mutation", "expression"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_mutation_fails_with_expression(patient: dict[str, Any], what: str, mutation: Any, expression: str) -> None:
    assert expression in error_paths(_mutated(patient, mutation)), what


def test_mutations_of_every_served_type_fail() -> None:
    """One removed required element per served type, each reported where it belongs."""
    cases = {
        "Immunization-example.json": ("vaccineCode", "Immunization.vaccineCode"),
        "DocumentReference-example.json": ("content", "DocumentReference.content"),
        "List-example.json": ("status", "List.status"),
        "Binary-example.json": ("contentType", "Binary.contentType"),
        "Bundle-bundle-example.json": ("type", "Bundle.type"),
    }
    for name, (key, expression) in cases.items():
        r = load(SHARED / "r4-examples" / name)
        r.pop(key)
        assert expression in error_paths(r), name


def test_bundle_entry_errors_are_located() -> None:
    bundle = load(SHARED / "r4-examples" / "Bundle-bundle-example.json")
    bundle["entry"][1]["resource"] = {"resourceType": "Patient", "gender": "bogus"}
    bundle["entry"][0]["resource"]["status"] = 12  # a type outside the vendored set: structural check
    assert {"Bundle.entry[1].resource.gender", "Bundle.entry[0].resource.status"} <= error_paths(bundle)


def test_fullurl_mismatch_is_an_error() -> None:
    """As for the HL7 validator: a RESTful fullUrl ends with the entry's type/id; urn: fullUrls are free."""
    bundle = load(SHARED / "r4-examples" / "Bundle-bundle-example.json")
    bundle["entry"][0]["fullUrl"] = "https://example.com/base/MedicationRequest/other"
    assert "Bundle.entry[0].fullUrl" in error_paths(bundle)
    bundle["entry"][0]["fullUrl"] = "urn:uuid:9d1714da-b7e6-455b-bfd2-69ce0ff5fb12"
    assert errors(bundle) == []
    bundle["entry"][0]["fullUrl"] = "MedicationRequest/3123"
    assert "Bundle.entry[0].fullUrl" in error_paths(bundle)
    del bundle["entry"][0]["fullUrl"]
    assert "Bundle.entry[0]" in error_paths(bundle)
    bundle["type"] = "transaction"
    bundle.pop("total", None)
    for e in bundle["entry"]:
        e.pop("search", None)
        e["request"] = {"method": "POST", "url": "MedicationRequest"}
    assert "Bundle.entry[0]" not in error_paths(bundle)


def test_reference_to_a_type_the_element_does_not_allow_is_an_error() -> None:
    """As the HL7 validator (Reference_REF_BadTargetType): Immunization.patient = Practitioner/x, and a
    Reference.type the element does not allow."""
    imm = load(SHARED / "r4-examples" / "Immunization-example.json")
    imm["patient"] = {"reference": "Practitioner/x"}
    assert "Immunization.patient.reference" in error_paths(imm)
    p = load(SHARED / "r4-examples" / "Patient-example.json")
    p["managingOrganization"] = {"reference": "https://example.org/fhir/Patient/x"}
    assert "Patient.managingOrganization.reference" in error_paths(p)
    p["managingOrganization"] = {"reference": "Organization/x", "type": "Patient"}
    assert "Patient.managingOrganization.type" in error_paths(p)
    p["managingOrganization"] = {"reference": "Organization/x"}
    assert not {e for e in error_paths(p) if e.startswith("Patient.managingOrganization")}


def test_issue_order_is_stable(patient: dict[str, Any]) -> None:
    bad = _mutated(patient, lambda r: r.update(gender="x", active="y", zzz=1))
    assert validate(bad) == validate(copy.deepcopy(bad))


def test_extensible_binding_gives_a_warning_not_an_error(patient: dict[str, Any]) -> None:
    r = _mutated(patient, lambda r: r["identifier"][0].update(
        type={"coding": [{"system": "http://example.org/types", "code": "ZZ"}]}))
    issues = [i for i in validate(r) if "Patient.identifier[0].type" in "".join(i.expression)]
    assert issues and all(i.severity == "warning" for i in issues)


def test_native_invariants_agree_with_fhirpath() -> None:
    """Each natively implemented R4 invariant gives fhirpathpy's verdict on the examples and on broken variants."""
    from profiles.invariants import NATIVE, _fhirpath
    from profiles.model import definitions

    models = definitions().models
    invariants = {i.key: i for i in models["Bundle"].invariants}
    entry = models["Bundle"].keys["entry"][0].model
    assert entry is not None
    invariants.update({i.key: i for i in entry.invariants})
    bundles = [load(p) for p in EXAMPLES if p.name.startswith("Bundle-")]
    broken = copy.deepcopy(bundles[0])
    broken.update(type="document", total=1)
    broken["entry"].append(copy.deepcopy(broken["entry"][0]))
    broken["entry"][0]["fullUrl"] = "http://x.org/Patient/1/_history/2"
    broken["entry"].append({})
    bundles.append(broken)
    checked = set()
    for key, inv in invariants.items():
        if key not in NATIVE:
            continue
        slow = _fhirpath(inv.expression.replace("%resource.type", "%context.type"))
        assert slow is not None and inv.check is not None
        for b in bundles:
            for value in (b["entry"] if key in ("bdl-5", "bdl-8") else [b]):
                assert inv.check(value, b) == slow(value, b), (key, b.get("id"))
        checked.add(key)
    assert {"bdl-1", "bdl-3", "bdl-7", "bdl-11"} <= checked


def test_mime_types_are_checked() -> None:
    binary = load(SHARED / "r4-examples" / "Binary-example.json")
    binary["contentType"] = "pdf"
    assert "Binary.contentType" in error_paths(binary)
    binary["contentType"] = "text/plain; charset=UTF-8"
    assert "Binary.contentType" not in error_paths(binary)


def test_extension_policy_follows_the_hl7_validator() -> None:
    """Unknown extensions are errors, except example URLs, the implemented IGs' domains and the cross-version
    extensions (http://hl7.org/fhir/5.0/StructureDefinition/extension-...), as the HL7 validator accepts them."""
    p = load(SHARED / "r4-examples" / "Patient-example.json")
    for url, ok in (("http://other.org/fhir/ext", False), ("http://example.com/ext", False),
                    ("http://example.org/fhir/ext", True), ("http://acme.com/ext", True),
                    ("http://hl7.org/fhir/5.0/StructureDefinition/extension-Patient.x", True),
                    ("https://hl7.fr/ig/fhir/core/StructureDefinition/anything", True)):
        p["extension"] = [{"url": url, "valueString": "x"}]
        assert ("Patient.extension[0]" not in error_paths(p)) is ok, url
