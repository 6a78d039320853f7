"""French profiles: the official examples (with their known defects corrected here, each one named) conform;
mutations fail with the exact FHIRPath; the policies (required profiles, unknown profiles) hold."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from profiles import known_profiles, validate
from profiles.french import nir_key_ok

from .conftest import SHARED, error_paths, errors, load

FR = SHARED / "fr"
FRC = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
PDSM = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
ORG = {"reference": "Organization/org-example"}


# -- known defects of the official examples (../shared/docs/french-profiles.md), corrected in our copies ----------

def _no_contained_meta(r: dict[str, Any]) -> None:
    """dom-4: contained resources carry meta.versionId / lastUpdated in the published PDSm examples."""
    for c in r.get("contained", ()):
        for k in ("versionId", "lastUpdated"):
            c.get("meta", {}).pop(k, None)


def _pdsm_comprehensive(r: dict[str, Any]) -> None:
    """Published PDSm DocumentReference: author/authenticator/sourcePatientInfo not contained (MHD Comprehensive)."""
    _no_contained_meta(r)
    patient = load(FR / "pdsm-published-json" / "Patient-fr-patient-123.json")
    patient.pop("meta", None)
    patient.pop("text", None)
    patient["id"] = "source-patient"
    r["contained"].append(patient)
    r["author"] = [{"reference": "#practitioner-example"}]
    r["authenticator"] = {"reference": "#practitioner-example"}
    r["context"]["sourcePatientInfo"] = {"reference": "#source-patient"}


def _simplified(r: dict[str, Any]) -> None:
    """Contained INS patient: INS-NIR-TEST identifier without its required use (official)."""
    r["contained"][0]["identifier"][0]["use"] = "official"


def _custodian(r: dict[str, Any]) -> None:
    """PDSm4DMP examples (written against PDSm 3.1.0) lack custodian, required by PDSm 3.1.1."""
    targets = [e["resource"] for e in r.get("entry", ()) if e.get("resource", {}).get("resourceType") ==
               "DocumentReference"] if r["resourceType"] == "Bundle" else [r]
    for doc in targets:
        doc.setdefault("custodian", ORG)


def _searchset(r: dict[str, Any]) -> None:
    """Relative fullUrls (DocumentReference/x): a fullUrl is absolute (the HL7 validator's Bundle rules)."""
    _custodian(r)
    for e in r["entry"]:
        e["fullUrl"] = "https://example.org/fhir/" + e["fullUrl"]


VALID: dict[str, Callable[[dict[str, Any]], None] | None] = {
    "frcore/Patient-FRCorePatientExample.json": None,
    "frcore/Immunization-FRCoreImmunizationExample.json": None,
    "doccore/Patient-ba499de3-aeae-43c3-82cb-0ba2718cfa41.json": None,
    "pdsm-published-json/Patient-fr-patient-123.json": None,
    "pdsm-published-json/List-ExampleFolder.json": None,
    "pdsm-published-json/List-ExampleSubmissionSet.json": _no_contained_meta,
    "pdsm-published-json/DocumentReference-exemple-pdsm-documentreference.json": _pdsm_comprehensive,
    "pdsm-published-json/DocumentReference-PDSmSimplifiedExample.json": _simplified,
    "pdsm4dmp-json/DocumentReference-doc-x-id.json": _custodian,
    "pdsm4dmp-json/DocumentReference-example-td2-iti105-publication-simplifiee.json": _custodian,
    "pdsm4dmp-json/Bundle-example-td2-iti65-lot-soumission.json": _custodian,
    "pdsm4dmp-json/Bundle-example-td2-1-remplacement.json": _custodian,
    "pdsm4dmp-json/Bundle-example-annexe-searchset-documentreferences.json": _searchset,
    "pdsm4dmp-json/Bundle-example-annexe-fhir-document.json": None,
}


def example(name: str) -> dict[str, Any]:
    r = load(FR / name)
    fix = VALID[name]
    if fix is not None:
        fix(r)
    return r


@pytest.mark.parametrize("name", sorted(VALID))
def test_french_example_conforms(name: str) -> None:
    assert errors(example(name)) == []


def test_uncorrected_defects_are_caught() -> None:
    assert "DocumentReference.author[0]" in error_paths(
        load(FR / "pdsm-published-json/DocumentReference-exemple-pdsm-documentreference.json"))
    assert "DocumentReference.custodian" in error_paths(load(FR / "pdsm4dmp-json/DocumentReference-doc-x-id.json"))


def _m(name: str, fn: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    r = copy.deepcopy(example(name))
    fn(r)
    return r


INS = "frcore/Patient-FRCorePatientExample.json"
IMM = "frcore/Immunization-FRCoreImmunizationExample.json"
DOC = "pdsm-published-json/DocumentReference-exemple-pdsm-documentreference.json"
SIMPLE = "pdsm-published-json/DocumentReference-PDSmSimplifiedExample.json"
ITI65 = "pdsm4dmp-json/Bundle-example-td2-iti65-lot-soumission.json"
SUBSET = "pdsm-published-json/List-ExampleSubmissionSet.json"


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def fn(r: dict[str, Any]) -> None:
        target = r
        for p in path[:-1]:
            target = target[p]
        if value is _DEL:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return fn


_DEL = object()

MUTATIONS = [
    (INS, "birthDate removed", _set(["birthDate"], _DEL), "Patient.birthDate"),
    (INS, "gender other (INS: male|female|unknown)", _set(["gender"], "other"), "Patient.gender"),
    (INS, "identityReliability removed", lambda r: r["extension"].pop(1), "Patient.extension"),
    (INS, "birthPlace INSEE code removed", lambda r: r["extension"][0]["valueAddress"].pop("extension"),
     "Patient.extension[0].valueAddress.extension"),
    (INS, "INS-NIR with a wrong type", _set(["identifier", 0, "type", "coding", 0, "code"], "INS-NIA"),
     "Patient.identifier[0].type"),
    (INS, "INS-NIR use usual", _set(["identifier", 0, "use"], "usual"), "Patient.identifier[0].use"),
    (INS, "INS-NIR malformed", _set(["identifier", 0, "value"], "12345"), "Patient.identifier[0].value"),
    (INS, "INS-NIR empty string", _set(["identifier", 0, "value"], ""), "Patient.identifier[0].value"),
    (INS, "unknown identity status", _set(["extension", 1, "extension", 0, "valueCoding", "code"], "BOGUS"),
     "Patient.extension[1].extension[0].value.ofType(Coding)"),
    (INS, "fr-core-2: two official identifiers with VALI", lambda r: r["identifier"].append(
        {"use": "official", "system": "urn:oid:1.2.250.1.213.1.4.10", "value": "180017505600103",
         "type": {"coding": [{"system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
                              "code": "INS-NIR-TEST"}]}}), "Patient"),
    (INS, "fr-core-1: VALI without an INS", lambda r: r["identifier"][0].update(
        system="urn:oid:1.2.3", use="usual"), "Patient"),
    (INS, "VALI identity commented as fictitious (2.2.0)", lambda r: r["extension"][1]["extension"].append(
        {"url": "comment", "valueCoding": {"system": "https://hl7.fr/ig/fhir/core/CodeSystem/"
                                                     "fr-core-cs-identity-status-comment", "code": "FICT"}}),
     "Patient"),
    (INS, "two given names in the official name", lambda r: r["name"][0]["given"].append("Yves"),
     "Patient.name[0].given"),
    (INS, "birth-list-given-name removed", lambda r: r["name"][0].pop("extension"), "Patient.name[0].extension"),
    (INS, "unknown element", _set(["nickname"], "Pierrot"), "Patient.nickname"),
    (IMM, "CIS coding removed", _set(["vaccineCode", "coding", 0, "system"], "http://example.org"),
     "Immunization.vaccineCode.coding"),
    (IMM, "CIS code malformed", _set(["vaccineCode", "coding", 0, "code"], "VAXI"),
     "Immunization.vaccineCode.coding[0].code"),
    (IMM, "occurrence as a string", lambda r: (r.pop("occurrenceDateTime"), r.update(occurrenceString="hier")),
     "Immunization.occurrence.ofType(string)"),
    (IMM, "series outside the JDV", _set(["protocolApplied", 0, "series"], "RAPPEL"),
     "Immunization.protocolApplied[0].series"),
    (IMM, "route outside EDQM", _set(["route", "coding", 0, "system"], "http://snomed.info/sct"),
     "Immunization.route.coding[0]"),
    (IMM, "wrong primitive type", _set(["lotNumber"], 123), "Immunization.lotNumber"),
    (DOC, "custodian removed", _set(["custodian"], _DEL), "DocumentReference.custodian"),
    (DOC, "hash removed", lambda r: r["content"][0]["attachment"].pop("hash"),
     "DocumentReference.content[0].attachment.hash"),
    (DOC, "status entered-in-error (MHD: current|superseded)", _set(["status"], "entered-in-error"),
     "DocumentReference.status"),
    (DOC, "status outside R4", _set(["status"], "final"), "DocumentReference.status"),
    (DOC, "author not contained", _set(["author"], [{"reference": "Practitioner/x"}]),
     "DocumentReference.author[0]"),
    (DOC, "period start removed", lambda r: r["context"]["period"].pop("start"),
     "DocumentReference.context.period.start"),
    (DOC, "two contents", lambda r: r["content"].append(copy.deepcopy(r["content"][0])), "DocumentReference.content"),
    (SIMPLE, "url instead of data", lambda r: r["content"][0]["attachment"].update(url="Binary/1"),
     "DocumentReference.content[0].attachment.url"),
    (SIMPLE, "status superseded", _set(["status"], "superseded"), "DocumentReference.status"),
    # the MHD 4.2.3 SimplifiedPublish parent: no business identifier from the client, one masterIdentifier
    (SIMPLE, "identifier given (MHD parent)", _set(["identifier"], [{"system": "urn:ietf:rfc:3986",
                                                                    "value": "urn:oid:1.2.3"}]),
     "DocumentReference.identifier"),
    (SIMPLE, "masterIdentifier removed (MHD parent)", _set(["masterIdentifier"], _DEL),
     "DocumentReference.masterIdentifier"),
    (SIMPLE, "two contents (MHD parent)", lambda r: r["content"].append(copy.deepcopy(r["content"][0])),
     "DocumentReference.content"),
    (SUBSET, "designationType removed", lambda r: r.update(extension=[
        e for e in r["extension"] if not e["url"].endswith("ihe-designationType")]), "List.extension"),
    (SUBSET, "mode snapshot", _set(["mode"], "snapshot"), "List.mode"),
    (ITI65, "attachment.url not in the Bundle", lambda r: next(
        e["resource"] for e in r["entry"] if e["resource"]["resourceType"] == "DocumentReference"
    )["content"][0]["attachment"].update(url="urn:uuid:00000000-0000-0000-0000-000000000000"),
     "Bundle.entry[1].resource.content[0].attachment.url"),
    (ITI65, "no SubmissionSet", lambda r: r.update(entry=r["entry"][1:]), "Bundle.entry"),
    (ITI65, "batch instead of transaction", _set(["type"], "batch"), "Bundle.type"),
]


@pytest.mark.parametrize(("name", "what", "mutation", "expression"), MUTATIONS, ids=[m[1] for m in MUTATIONS])
def test_french_mutation_fails_with_expression(name: str, what: str, mutation: Any, expression: str) -> None:
    assert expression in error_paths(_m(name, mutation)), what


def test_nir_key_is_a_warning_and_skipped_for_test_oids() -> None:
    r = example(INS)
    warnings = [i for i in validate(r) if i.severity == "warning" and i.expression == ("Patient.identifier[0].value",)]
    assert warnings and "key" in warnings[0].diagnostics
    r["identifier"][0]["value"] = "180017505600103"
    assert nir_key_ok("180017505600103") and nir_key_ok("279035121518989")
    assert not [i for i in validate(r) if i.expression == ("Patient.identifier[0].value",)]
    simple = example(SIMPLE)  # INS-NIR-TEST with a wrong key: not checked
    assert not [i for i in validate(simple) if "control key" in i.diagnostics]


def test_identity_status_of_2_2_0_is_accepted() -> None:
    r = example(INS)
    r["extension"][1]["extension"][0]["valueCoding"] = {
        "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-identity-status", "code": "QUAL"}
    assert errors(r) == []


def test_required_profiles_apply_without_meta_profile() -> None:
    r = example(DOC)
    del r["meta"]["profile"]
    r.pop("custodian")
    assert errors(r) == []
    required = {"DocumentReference": [PDSM + "pdsm-comprehensive-document-reference"]}
    assert "DocumentReference.custodian" in error_paths(r, required=required)


def test_unknown_profile_policy() -> None:
    r = example(IMM)
    r["meta"]["profile"].append("http://example.org/StructureDefinition/nope")
    issue = [i for i in validate(r) if "nope" in i.diagnostics]
    assert issue and issue[0].severity == "warning" and issue[0].expression == ("Immunization.meta.profile[1]",)
    assert "Immunization.meta.profile[1]" in error_paths(r, unknown_profile="error")
    assert not [i for i in validate(r, unknown_profile="ignore") if "nope" in i.diagnostics]


def test_versioned_canonical_and_explicit_profile() -> None:
    r = example(IMM)
    r["meta"]["profile"] = [FRC + "fr-core-immunization|2.2.0"]
    r["vaccineCode"]["coding"][0]["system"] = "http://example.org"
    assert "Immunization.vaccineCode.coding" in error_paths(r)
    del r["meta"]
    assert "Immunization.vaccineCode.coding" in error_paths(r, profiles=[FRC + "fr-core-immunization"])


def test_known_profiles_carry_versions() -> None:
    versions = {url: version for url, version, _ in known_profiles()}
    assert versions[FRC + "fr-core-patient-ins"] == "2.1.0"
    assert versions[FRC + "fr-core-immunization"] == "2.2.0"
    assert versions[PDSM + "pdsm-comprehensive-document-reference"] == "3.1.1"


def test_native_invariants_agree_with_their_fhirpath() -> None:
    from profiles.invariants import _fhirpath
    from profiles.profile import lookup

    profile = lookup(FRC + "fr-core-patient-ins")
    parent = lookup(FRC + "fr-core-patient")
    assert profile is not None and parent is not None
    cases = [example(INS), example("pdsm-published-json/Patient-fr-patient-123.json")]
    cases += [_m(INS, m[2]) for m in MUTATIONS if m[0] == INS]
    qual = example(INS)
    qual["identifier"][0]["use"] = "temp"
    cases.append(qual)
    for inv in (*profile.invariants, *parent.invariants):
        slow = _fhirpath(inv.expression)
        assert slow is not None
        verdicts = [(inv.check(r, r) if inv.check else None, slow(r, r)) for r in cases]
        assert all(a == b for a, b in verdicts), (inv.key, verdicts)
        assert {a for a, _ in verdicts} == {True, False}, inv.key  # both outcomes exercised


def test_profile_reference_target_is_an_error() -> None:
    """FR Core restricts reasonReference to Condition: a literal reference to another type is an error, as in the
    base rules."""
    r = _m(IMM, _set(["reasonReference"], [{"reference": "Observation/1"}]))
    issues = [i for i in validate(r) if i.expression == ("Immunization.reasonReference[0].reference",)]
    assert issues and {i.severity for i in issues} == {"error"}
