"""Regenerate ``profiles/definitions/fr-profiles.json``: the French profiles the server implements, as the compact
rule data ``profiles/profile.py`` reads, plus their extensions and value-set extracts.

The FHIR packages of these IGs are not reachable from here (../shared/docs/french-profiles.md §6), so the rules are
transcribed by hand below from the FSH sources (each profile records its source: ``repo@commit:path``), and the
value sets are the extracts of ``shared/data/fr/jdv-summary.json``. Pinned versions:

- FR Core 2.1.0 (Patient, Patient INS; the dependency of PDSm 3.1.1), accepting the 2.2.0 identity-status code
  system and the 2.2.0 INS-NIA ``use`` (official | old) besides 2.1.0's ``temp``;
- FR Core 2.2.0 (Immunization, new in that version);
- PDSm 3.1.1 on IHE MHD 4.2.3 (DocumentReference comprehensive and simplified publish, SubmissionSet and Folder
  List, ITI-65 provide bundle).

Usage: ``python profiles/tools/build_fr_definitions.py ../shared/data/fr/jdv-summary.json``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

FRC = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
FRC_VS = "https://hl7.fr/ig/fhir/core/ValueSet/"
FRC_CS = "https://hl7.fr/ig/fhir/core/CodeSystem/"
V2_0203_FR = FRC_CS + "fr-core-cs-v2-0203"
PDSM = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
MHD = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/"
MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
SMT_VS = "https://smt.esante.gouv.fr/fhir/ValueSet/"
NOS = "https://mos.esante.gouv.fr/NOS/"
J07 = NOS + "JDV_J07-XdsTypeCode-CISIS/FHIR/JDV-J07-XdsTypeCode-CISIS"

SRC_FRCORE_INS = ("Interop-Sante/hl7.fhir.fr.core@bb7f2c4a5d5dd59fe802a5e852f383a249aec459:"
                  "input/fsh/profiles/FRCorePatientINSProfile.fsh")
SRC_FRCORE_PATIENT = "Interop-Sante/hl7.fhir.fr.core@feedd597:input/fsh/profiles/FRCorePatientProfile.fsh (2.1.0 rules)"
SRC_FRCORE_IMM = ("Interop-Sante/hl7.fhir.fr.core@025cdd925978118a21200b05a94d23560eee1f3a:"
                  "input/fsh/profiles/FRCoreImmunizationProfile.fsh")
SRC_PDSM = "ansforge/IG-fhir-partage-de-documents-de-sante@96bc12cfd830a016409e26c58709bb0eeaa5d921:input/fsh/profiles/"
SRC_MHD = "IHE/ITI.MHD@4.2.3:input/fsh/"


def ext_slice(name: str, url: str, lo: int = 0, hi: str = "*", elements: list[Any] | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"name": name, "match": {"url": url}, "min": lo, "max": hi}
    if elements:
        s["elements"] = elements
    return s


def ins_slice(name: str, oid: str, type_code: str, use: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "match": {"system": oid}, "min": 0, "max": "*", "elements": [
        {"path": "use", "min": 1, **use},
        {"path": "type", "min": 1, "pattern": {"coding": [{"system": V2_0203_FR, "code": type_code}]}},
        {"path": "system", "min": 1},
        {"path": "value", "min": 1, "regex": "[0-9]{5}([0-9]{2}|2A|2B)[0-9]{8}"},
    ]}


IDENTITY_STATUS_CHECK = ("extension('https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability')"
                         ".extension('identityStatus').value.exists(code = 'VALI')")
FR_CORE_1 = (f"({IDENTITY_STATUS_CHECK}) implies (identifier.where(system = 'urn:oid:1.2.250.1.213.1.4.8' and use = "
             "'official').exists() or identifier.where(system = 'urn:oid:1.2.250.1.213.1.4.9' and (use = 'temp' or "
             "use = 'official')).exists() or identifier.where(system = 'urn:oid:1.2.250.1.213.1.4.10' and use = "
             "'official').exists() or identifier.where(system = 'urn:oid:1.2.250.1.213.1.4.11' and use = "
             "'official').exists())")
FR_CORE_2 = (f"({IDENTITY_STATUS_CHECK}) implies (identifier.where(use = 'official').count() = 1 or "
             "identifier.where(system = 'urn:oid:1.2.250.1.213.1.4.9' and use = 'temp').exists())")

# 2.2.0 (change notes): a RECUP/VALI/QUAL identity cannot carry the comments DOUT (doubtful) or FICT (fictitious)
COMMENT_REQUIRES_PROV = (
    "extension('https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability').all("
    "(extension('identityStatus').value.code.intersect('RECUP' | 'VALI' | 'QUAL').exists()) implies "
    "((extension('comment').value.code | extension('comment').value.coding.code).intersect('DOUT' | 'FICT')"
    ".empty()))")

PROFILES: list[dict[str, Any]] = [
    {
        "url": FRC + "fr-core-patient", "version": "2.1.0", "name": "FRCorePatientProfile", "type": "Patient",
        "source": SRC_FRCORE_PATIENT,
        "elements": [
            {"path": "extension", "slices": [
                ext_slice("nationality", FRC + "fr-core-patient-nationality"),  # 0..1 in 2.1.0, 0..* in 2.2.0
                ext_slice("identityReliability", FRC + "fr-core-identity-reliability"),
                ext_slice("deathPlace", FRC + "fr-core-patient-death-place", 0, "1"),
                ext_slice("birthdateUpdateIndicator", FRC + "fr-core-patient-birthdate-update-indicator", 0, "1"),
                ext_slice("birthPlace", "http://hl7.org/fhir/StructureDefinition/patient-birthPlace", 0, "1"),
            ]},
            {"path": "name", "slices": [
                {"name": "officialName", "match": {"use": "official"}, "min": 0, "max": "*", "elements": [
                    {"path": "family", "min": 1},
                    {"path": "given", "min": 1},
                    {"path": "extension", "slices": [
                        ext_slice("birth-list-given-name", FRC + "fr-core-patient-birth-list-given-name", 0, "1")]},
                ]},
            ]},
            {"path": "generalPractitioner", "targets": ["Practitioner", "Organization", "PractitionerRole"]},
        ],
        "constraints": [
            {"key": "fr-core-comment-requires-prov", "severity": "error", "expression": COMMENT_REQUIRES_PROV,
             "native": "comment_requires_prov",
             "human": "An identity whose status is RECUP, VALI or QUAL cannot carry the comment DOUT or FICT "
                      "(only a provisional identity can; FR Core 2.2.0)"},
        ],
    },
    {
        "url": FRC + "fr-core-patient-ins", "version": "2.1.0", "name": "FRCorePatientINSProfile", "type": "Patient",
        "parent": FRC + "fr-core-patient", "source": SRC_FRCORE_INS, "extra": {"nir_key": True},
        "elements": [
            {"path": "extension", "min": 1, "slices": [
                ext_slice("identityReliability", FRC + "fr-core-identity-reliability", 1, "*"),
                ext_slice("birthPlace", "http://hl7.org/fhir/StructureDefinition/patient-birthPlace", 1, "1", [
                    {"path": "valueAddress", "min": 1, "elements": [
                        {"path": "extension", "slices": [
                            ext_slice("inseeCode", FRC + "fr-core-address-insee-code", 1, "1", [
                                {"path": "valueCoding", "min": 1, "elements": [
                                    {"path": "code", "min": 1, "regex": "[0-9][0-9AB][0-9]{3}"}]}])]}]}]),
            ]},
            {"path": "identifier", "min": 1, "slices": [
                ins_slice("INS-NIR", "urn:oid:1.2.250.1.213.1.4.8", "INS-NIR",
                          {"binding": ["required", FRC_VS + "fr-core-vs-patient-identifier-use-ins"]}),
                # 2.1.0 fixes use = temp; 2.2.0 binds it to official | old: both are accepted
                ins_slice("INS-NIA", "urn:oid:1.2.250.1.213.1.4.9", "INS-NIA",
                          {"binding": ["required", "urn:fhir-server:vs:ins-nia-use"]}),
                ins_slice("INS-NIR-TEST", "urn:oid:1.2.250.1.213.1.4.10", "INS-NIR-TEST", {"fixed": "official"}),
                ins_slice("INS-NIR-DEMO", "urn:oid:1.2.250.1.213.1.4.11", "INS-NIR-DEMO", {"fixed": "official"}),
            ]},
            {"path": "gender", "min": 1, "binding": ["required", FRC_VS + "fr-core-vs-patient-gender-INS"]},
            {"path": "birthDate", "min": 1},
            {"path": "name", "min": 1, "slices": [
                {"name": "officialName", "match": {"use": "official"}, "min": 1, "max": "1", "elements": [
                    {"path": "given", "max": "1"},
                    {"path": "extension", "slices": [
                        ext_slice("birth-list-given-name", FRC + "fr-core-patient-birth-list-given-name", 1, "1")]},
                ]},
            ]},
        ],
        "constraints": [
            {"key": "fr-core-1", "severity": "error", "expression": FR_CORE_1, "native": "fr_core_1",
             "human": "If identityReliability status = 'VALI', then at least Patient.identifier[INS-NIR] or "
                      "[INS-NIA] or [INS-NIR-TEST] or [INS-NIR-DEMO] SHALL be present"},
            {"key": "fr-core-2", "severity": "error", "expression": FR_CORE_2, "native": "fr_core_2",
             "human": "If identityReliability status = 'VALI', then only one identifier of use official SHALL be "
                      "present"},
        ],
    },
    {
        "url": FRC + "fr-core-immunization", "version": "2.2.0", "name": "FRCoreImmunizationProfile",
        "type": "Immunization", "source": SRC_FRCORE_IMM,
        "elements": [
            {"path": "occurrence[x]", "types": ["dateTime"]},
            {"path": "vaccineCode", "elements": [
                {"path": "coding", "min": 1, "elements": [{"path": "system", "min": 1}], "slices": [
                    {"name": "cis", "match": {"system": "https://smt.esante.gouv.fr/terminologie-bdpm"}, "min": 1,
                     "max": "1", "elements": [{"path": "code", "min": 1, "regex": "[0-9]{8}"}]}]}]},
            {"path": "route", "binding": ["required", SMT_VS + "jdv-immunization-route-code-cisis"]},
            {"path": "site", "binding": ["required", SMT_VS + "jdv-immunization-approach-site-code-cisis"]},
            {"path": "protocolApplied", "elements": [
                {"path": "series", "binding": ["required", SMT_VS +
                                               "jdv-hl7-v3-ActSubstanceAdministrationImmunizationCode-cisis"]}]},
            {"path": "reasonReference", "targets": ["Condition"]},
            {"path": "note", "max": "1"},
            {"path": "extension", "slices": [
                ext_slice("basedOnRequestR5",
                          "http://hl7.org/fhir/5.0/StructureDefinition/extension-Immunization.basedOn", 0, "1",
                          [{"path": "valueReference", "min": 1, "targets": ["MedicationRequest"]}])]},
        ],
    },
    # -- IHE MHD 4.2.3 ---------------------------------------------------------------------------------------
    {
        "url": MHD + "IHE.MHD.Minimal.DocumentReference", "version": "4.2.3", "name": "MinimalDocumentReference",
        "type": "DocumentReference", "source": SRC_MHD + "documentReference.fsh, identifier.fsh",
        "elements": [
            {"path": "modifierExtension", "absent": True},
            {"path": "masterIdentifier", "min": 1, "elements": [
                {"path": "system", "min": 1}, {"path": "value", "min": 1}]},
            {"path": "status", "binding": ["required", "urn:fhir-server:vs:mhd-document-status"]},
            {"path": "docStatus", "absent": True},
            {"path": "content", "min": 1, "max": "1", "elements": [
                {"path": "attachment", "elements": [
                    {"path": "contentType", "min": 1}, {"path": "url", "min": 1}, {"path": "data", "absent": True}]}]},
        ],
    },
    {
        "url": MHD + "IHE.MHD.UnContained.Comprehensive.DocumentReference", "version": "4.2.3",
        "name": "UnContainedComprehensiveDocumentReference", "type": "DocumentReference",
        "parent": MHD + "IHE.MHD.Minimal.DocumentReference", "source": SRC_MHD + "documentReference.fsh",
        "elements": [
            {"path": "type", "min": 1}, {"path": "category", "min": 1, "max": "1"}, {"path": "subject", "min": 1},
            {"path": "securityLabel", "min": 1},
            {"path": "content", "elements": [
                {"path": "attachment", "elements": [{"path": "language", "min": 1}, {"path": "creation", "min": 1}]},
                {"path": "format", "min": 1}]},
            {"path": "context", "min": 1, "elements": [
                {"path": "facilityType", "min": 1}, {"path": "practiceSetting", "min": 1},
                {"path": "sourcePatientInfo", "min": 1}]},
        ],
    },
    {
        "url": MHD + "IHE.MHD.Comprehensive.DocumentReference", "version": "4.2.3",
        "name": "ComprehensiveDocumentReference", "type": "DocumentReference",
        "parent": MHD + "IHE.MHD.UnContained.Comprehensive.DocumentReference",
        "source": SRC_MHD + "documentReference.fsh",
        "elements": [
            {"path": "author", "contained": True}, {"path": "authenticator", "contained": True},
            {"path": "context", "elements": [{"path": "sourcePatientInfo", "contained": True}]},
        ],
    },
    # -- PDSm 3.1.1 ------------------------------------------------------------------------------------------
    {
        "url": PDSM + "pdsm-comprehensive-document-reference", "version": "3.1.1",
        "name": "PDSm_ComprehensiveDocumentReference", "type": "DocumentReference",
        "parent": MHD + "IHE.MHD.Comprehensive.DocumentReference",
        "source": SRC_PDSM + "PDSm_ComprehensiveDocumentReference.fsh",
        "elements": [
            {"path": "contained", "min": 1},
            {"path": "extension", "slices": [ext_slice("isArchived", PDSM + "pdsm-ext-is-archived", 0, "1")]},
            {"path": "type", "binding": ["preferred", J07]},
            {"path": "category", "binding": ["preferred",
                                             NOS + "JDV_J06-XdsClassCode-CISIS/FHIR/JDV-J06-XdsClassCode-CISIS"]},
            {"path": "subject", "targets": ["Patient"]},
            {"path": "custodian", "min": 1}, {"path": "date", "min": 1},
            {"path": "securityLabel", "binding": ["extensible", NOS + "JDV_J08-XdsConfidentialityCode-CISIS/FHIR/"
                                                                      "JDV-J08-XdsConfidentialityCode-CISIS"]},
            {"path": "author", "min": 1, "targets": ["Practitioner", "PractitionerRole", "Device", "Patient"]},
            {"path": "authenticator", "targets": ["Practitioner", "PractitionerRole", "Organization"]},
            {"path": "content", "elements": [
                {"path": "attachment", "elements": [
                    {"path": "size", "min": 1}, {"path": "hash", "min": 1}, {"path": "title", "min": 1}]}]},
            {"path": "context", "elements": [
                {"path": "period", "min": 1, "elements": [{"path": "start", "min": 1}]},
                {"path": "facilityType", "binding": ["preferred", NOS + "JDV_J02-XdsHealthcareFacilityTypeCode-CISIS"
                                                                       "/FHIR/JDV-J02-XdsHealthcareFacilityTypeCode"
                                                                       "-CISIS"]},
                {"path": "practiceSetting", "binding": ["preferred", NOS + "JDV_J04-XdsPracticeSettingCode-CISIS/FHIR"
                                                                          "/JDV-J04-XdsPracticeSettingCode-CISIS"]},
                {"path": "sourcePatientInfo", "targets": ["Patient"]}]},
        ],
    },
    {
        # MHD 4.2.3 (the PDSm 3.1.1 dependency): the differential of the published StructureDefinition
        "url": MHD + "IHE.MHD.SimplifiedPublish.DocumentReference", "version": "4.2.3",
        "name": "SimplifiedPublishDocumentReference", "type": "DocumentReference",
        "source": "IHE/publications@ba318e5:ITI/MHD/4.2.3/StructureDefinition-IHE.MHD.SimplifiedPublish."
                  "DocumentReference (differential)",
        "elements": [
            {"path": "modifierExtension", "absent": True},
            {"path": "masterIdentifier", "min": 1},
            {"path": "identifier", "absent": True},
            {"path": "status", "fixed": "current"},
            {"path": "docStatus", "absent": True},
            {"path": "category", "max": "1"},
            {"path": "subject", "min": 1, "targets": ["Patient"]},
            {"path": "content", "max": "1", "elements": [
                {"path": "attachment", "elements": [
                    {"path": "contentType", "min": 1}, {"path": "data", "min": 1}, {"path": "url", "absent": True}]}]},
        ],
    },
    {
        "url": PDSM + "pdsm-simplified-publish", "version": "3.1.1", "name": "PDSm_SimplifiedPublish",
        "type": "DocumentReference", "source": SRC_PDSM + "PDSm_SimplifiedPublish.fsh",
        "parent": MHD + "IHE.MHD.SimplifiedPublish.DocumentReference",
        "elements": [
            {"path": "status", "min": 1, "fixed": "current"},
            {"path": "type", "binding": ["preferred", J07]},
            {"path": "category", "binding": ["preferred",
                                             NOS + "JDV_J06-XdsClassCode-CISIS/FHIR/JDV-J06-XdsClassCode-CISIS"]},
            {"path": "custodian", "min": 1}, {"path": "subject", "min": 1, "max": "1", "targets": ["Patient"]},
            {"path": "date", "min": 1},
            {"path": "author", "min": 1, "targets": ["PractitionerRole", "Practitioner", "Organization", "Device",
                                                     "Patient", "RelatedPerson"]},
            {"path": "authenticator", "targets": ["Practitioner", "PractitionerRole", "Organization"]},
            {"path": "content", "min": 1, "elements": [
                {"path": "attachment", "elements": [
                    {"path": "contentType", "min": 1}, {"path": "data", "min": 1}, {"path": "url", "absent": True},
                    {"path": "title", "min": 1}]}]},
            {"path": "context", "elements": [{"path": "event", "max": "1"},
                                             {"path": "sourcePatientInfo", "targets": ["Patient"]}]},
        ],
    },
    {
        "url": PDSM + "pdsm-submissionset-comprehensive", "version": "3.1.1",
        "name": "PDSm_SubmissionSetComprehensive", "type": "List",
        "source": SRC_PDSM + "PDSm_SubmissionSetComprehensive.fsh + " + SRC_MHD + "submissionSet.fsh",
        "elements": [
            {"path": "contained", "min": 1},
            {"path": "extension", "min": 2, "slices": [
                ext_slice("sourceId", MHD + "ihe-sourceId", 1, "1"),
                ext_slice("designationType", MHD + "ihe-designationType", 1, "1"),
                ext_slice("isArchived", PDSM + "pdsm-ext-is-archived", 0, "1"),
                ext_slice("intendedRecipient", PDSM + "pdsm-ext-intended-recipient", 0, "*")]},
            {"path": "status", "fixed": "current"}, {"path": "mode", "fixed": "working"},
            {"path": "code", "min": 1, "pattern": {"coding": [{"system": MHD_LIST_TYPES, "code": "submissionset"}]}},
            {"path": "subject", "min": 1, "targets": ["Patient"]},
            {"path": "date", "min": 1},
            {"path": "source", "min": 1, "targets": ["PractitionerRole", "Device", "Patient"]},
            {"path": "encounter", "absent": True}, {"path": "orderedBy", "absent": True},
            {"path": "emptyReason", "absent": True},
            {"path": "entry", "elements": [{"path": "item", "targets": ["DocumentReference", "List"]}]},
        ],
    },
    {
        "url": PDSM + "pdsm-folder-comprehensive", "version": "3.1.1", "name": "PDSm_FolderComprehensive",
        "type": "List", "source": SRC_PDSM + "PDSm_FolderComprehensive.fsh + " + SRC_MHD + "folder.fsh",
        "elements": [
            {"path": "extension", "slices": [
                ext_slice("designationType", MHD + "ihe-designationType", 1, "1"),
                ext_slice("isArchived", PDSM + "pdsm-ext-is-archived", 0, "1")]},
            {"path": "code", "min": 1, "pattern": {"coding": [{"system": MHD_LIST_TYPES, "code": "folder"}]}},
            {"path": "subject", "targets": ["Patient"]},
            {"path": "date", "min": 1},
            {"path": "entry", "min": 1, "elements": [{"path": "item", "targets": ["DocumentReference"]}]},
        ],
    },
    {
        "url": PDSM + "pdsm-comprehensive-provide-document-bundle", "version": "3.1.1",
        "name": "PDSm_ComprehensiveProvideDocumentBundle", "type": "Bundle",
        "source": SRC_PDSM + "PDSm_ComprehensiveProvideDocumentBundle.fsh + " + SRC_MHD + "provideBundle.fsh",
        "extra": {"provide_bundle": True},
        "elements": [
            {"path": "type", "fixed": "transaction"},
            {"path": "entry", "closed": True, "slices": [
                {"name": "SubmissionSet", "min": 1, "max": "1", "match": {
                    "resource": {"resourceType": "List", "code": {"coding": [{"code": "submissionset"}]}},
                    "request": {"method": "POST"}},
                 "elements": [{"path": "resource", "min": 1,
                               "profile": PDSM + "pdsm-submissionset-comprehensive"}]},
                {"name": "DocumentRefs", "min": 1, "max": "*", "match": {
                    "resource": {"resourceType": "DocumentReference"}, "request": {"method": "POST"}},
                 "elements": [{"path": "resource", "min": 1,
                               "profile": PDSM + "pdsm-comprehensive-document-reference"}]},
                {"name": "UpdateDocumentRefs", "min": 0, "max": "*", "match": {
                    "resource": {"resourceType": "Parameters"}, "request": {"method": "PATCH"}}},
                {"name": "Documents", "min": 0, "max": "*", "match": {
                    "resource": {"resourceType": "Binary"}, "request": {"method": "POST"}}},
                {"name": "FhirDocuments", "min": 0, "max": "*", "match": {
                    "resource": {"resourceType": "Bundle"}, "request": {"method": "POST"}}},
                {"name": "Folders", "min": 0, "max": "*", "match": {
                    "resource": {"resourceType": "List", "code": {"coding": [{"code": "folder"}]}}},
                 "elements": [{"path": "resource", "min": 1, "profile": PDSM + "pdsm-folder-comprehensive"}]},
                {"name": "Patient", "min": 0, "max": "1", "match": {"resource": {"resourceType": "Patient"}}},
            ]},
        ],
    },
]


def ext(ctx: list[str], value: dict[str, Any] | None = None, sub: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"ctx": ctx, "v": value}
    if sub:
        out["sub"] = sub
    return out


def val(*types: str, lo: int = 1, binding: list[str] | None = None, refs: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"t": list(types), "n": lo}
    if binding:
        out["b"] = binding
    if refs:
        out["r"] = refs
    return out


def sub(value: dict[str, Any], hi: str = "1", lo: int = 0) -> dict[str, Any]:
    return {"n": lo, "x": hi, "v": value}


EXTENSIONS: dict[str, Any] = {
    FRC + "fr-core-identity-reliability": ext(["Patient"], None, {
        "identityStatus": sub(val("Coding", binding=["required", FRC_VS + "fr-core-vs-identity-status"])),
        "validationDate": sub(val("date")),
        "validationMode": sub(val("Coding")),
        "methodCollection": sub(val("Coding")),
        "dateCollection": sub(val("date")),  # 2.2.0
        "dateInterrogationINSi": sub(val("date")),  # after 2.2.0
        "comment": sub(val("Coding", "CodeableConcept", "string"), "*"),
    }),
    FRC + "fr-core-address-insee-code": ext(["Address"], val("Coding")),
    FRC + "fr-core-patient-birth-list-given-name": ext(["HumanName"], val("string")),
    FRC + "fr-core-patient-birthdate-update-indicator": ext(["Patient"], val("boolean")),
    FRC + "fr-core-patient-death-place": ext(["Patient"], val("string", "Address")),  # string 2.1.0, Address 2.2.0
    FRC + "fr-core-patient-nationality": ext(["Patient"], None, {
        "code": sub(val("CodeableConcept")), "period": sub(val("Period"))}),
    FRC + "fr-core-contact-point-email-type": ext(["ContactPoint"], val("Coding")),
    PDSM + "pdsm-ext-is-archived": ext(["DocumentReference", "List"], val("boolean")),
    PDSM + "pdsm-ext-intended-recipient": ext(["List"], val("Reference", refs=[
        "Practitioner", "PractitionerRole", "Organization", "Patient", "RelatedPerson", "Group"])),
    MHD + "ihe-sourceId": ext(["List"], val("Identifier")),
    MHD + "ihe-designationType": ext(["List"], val("CodeableConcept")),
    MHD + "ihe-authorOrg": ext(["Reference"], val("Reference", refs=["Organization"])),
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Immunization.basedOn": ext(
        ["Immunization"], val("Reference", refs=["CarePlan", "MedicationRequest", "ServiceRequest",
                                                  "ImmunizationRecommendation"])),
}

V2_0445 = ["VIDE", "PROV", "VALI", "DOUB", "DESA", "DPOT", "DOUA", "COLP", "COLV", "FILI", "CACH", "ANOM", "IDVER",
           "RECD", "IDRA", "USUR", "HOMD", "HOMA", "INVA", "FICT", "DOUT"]
LOCAL_VALUESETS: dict[str, Any] = {
    # identity status: 2.1.0 (fr-core-cs-v2-0445) and 2.2.0 (fr-core-cs-identity-status, RNIV) both accepted
    FRC_VS + "fr-core-vs-identity-status": {FRC_CS + "fr-core-cs-v2-0445": V2_0445,
                                            FRC_CS + "fr-core-cs-identity-status": ["PROV", "RECUP", "VALI", "QUAL"]},
    FRC_VS + "fr-core-vs-patient-identifier-use-ins": {"http://hl7.org/fhir/identifier-use": ["official", "old"]},
    "urn:fhir-server:vs:ins-nia-use": {"http://hl7.org/fhir/identifier-use": ["official", "old", "temp"]},
    FRC_VS + "fr-core-vs-patient-gender-INS": {"http://hl7.org/fhir/administrative-gender": ["male", "female",
                                                                                             "unknown"]},
    "urn:fhir-server:vs:mhd-document-status": {"http://hl7.org/fhir/document-reference-status": ["current",
                                                                                                 "superseded"]},
    # whole-system approximations of SMT value sets whose expansions are not vendored ("*" = any code)
    SMT_VS + "jdv-immunization-route-code-cisis": {"https://smt.esante.gouv.fr/terminologie-standardterms": ["*"]},
    SMT_VS + "jdv-immunization-approach-site-code-cisis": {"http://snomed.info/sct": ["*"]},
    SMT_VS + "jdv-hl7-v3-ActSubstanceAdministrationImmunizationCode-cisis": {
        "http://terminology.hl7.org/CodeSystem/v3-ActCode": ["BOOSTER", "IMMUNIZ", "INITIMMUNIZ"]},
}


def main(jdv_summary: Path, out: Path) -> None:
    jdv = json.loads(jdv_summary.read_text(encoding="utf-8"))
    valuesets: dict[str, Any] = dict(LOCAL_VALUESETS)
    for key, entry in jdv.items():
        if key.startswith("JDV_") and isinstance(entry, dict) and isinstance(entry.get("include"), dict):
            valuesets[entry["url"]] = {system: sorted(codes) for system, codes in entry["include"].items()}
    data = {
        "source": "hand transcription of the FSH sources listed per profile; value sets from "
                  "shared/data/fr/jdv-summary.json (ANS SMT extracts)",
        "profiles": PROFILES,
        "extensions": EXTENSIONS,
        "valuesets": valuesets,
    }
    out.write_text(json.dumps(data, separators=(",", ":"), ensure_ascii=False, sort_keys=True), encoding="utf-8")
    print(f"{out}: {len(PROFILES)} profiles, {len(EXTENSIONS)} extensions, {len(valuesets)} value sets, "
          f"{out.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).resolve().parents[1] / "definitions" / "fr-profiles.json")
