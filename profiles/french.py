"""French checks that are code rather than data: the NIR/NIA control key (INS).

NIR = 13 characters + a 2-digit key, key = 97 - (NIR13 mod 97), Corsica departments 2A/2B counted as 19/18
(CNAM nir-validation rules). A wrong key is a warning, never an error (official examples carry wrong keys, see
../shared/docs/french-profiles.md §5), and is not checked for the test and demo OIDs.
"""

from __future__ import annotations

import re
from typing import Any

from fhir_common.outcome import Issue
from fhir_common.types import Resource

NIR_OID = "urn:oid:1.2.250.1.213.1.4.8"
NIA_OID = "urn:oid:1.2.250.1.213.1.4.9"
_NIR_RE = re.compile(r"[12378][0-9]{4}(?:[0-9]{2}|2A|2B)[0-9]{8}")


def nir_key_ok(value: str) -> bool:
    """True when ``value`` is 15 characters with a valid key."""
    if not _NIR_RE.fullmatch(value):
        return False
    body = value[:13].replace("2A", "19", 1) if value[5:7] == "2A" else value[:13]
    body = body.replace("2B", "18", 1) if value[5:7] == "2B" else body
    return 97 - int(body) % 97 == int(value[13:])


def nir_key_issues(resource: Resource, root: str) -> list[Issue]:
    issues = []
    for i, ident in enumerate(resource.get("identifier") or ()):
        if not isinstance(ident, dict) or ident.get("system") not in (NIR_OID, NIA_OID):
            continue
        value = ident.get("value")
        if isinstance(value, str) and not nir_key_ok(value):
            issues.append(Issue("warning", "value", f"The INS '{value}' is not a well-formed NIR/NIA with a valid "
                                                    "control key (15 characters, key = 97 - NIR mod 97)",
                                (f"{root}.identifier[{i}].value",)))
    return issues


def _provide_bundle(bundle: Resource, root: str) -> list[Issue]:
    """ITI-65 (PDSm): every attachment.url names a Binary of the Bundle, and the SubmissionSet and the
    DocumentReferences concern the same patient."""
    issues: list[Issue] = []
    entries = [e for e in bundle.get("entry") or () if isinstance(e, dict)]
    binaries: set[str] = set()
    for e in entries:
        res = e.get("resource")
        if isinstance(res, dict) and res.get("resourceType") == "Binary":
            if isinstance(e.get("fullUrl"), str):
                binaries.add(e["fullUrl"])
            if isinstance(res.get("id"), str):
                binaries.add(f"Binary/{res['id']}")
    subjects: dict[str, str] = {}
    for i, e in enumerate(bundle.get("entry") or ()):
        res = e.get("resource") if isinstance(e, dict) else None
        if not isinstance(res, dict):
            continue
        subject = res.get("subject")
        if res.get("resourceType") in ("List", "DocumentReference") and isinstance(subject, dict) and \
                isinstance(subject.get("reference"), str):
            subjects[f"{root}.entry[{i}].resource.subject"] = subject["reference"]
        if res.get("resourceType") != "DocumentReference":
            continue
        for j, content in enumerate(res.get("content") or ()):
            att = content.get("attachment") if isinstance(content, dict) else None
            url = att.get("url") if isinstance(att, dict) else None
            if isinstance(url, str) and url not in binaries:
                issues.append(Issue("error", "business-rule", f"attachment.url '{url}' does not name a Binary of "
                                                              "this Bundle (ITI-65)",
                                    (f"{root}.entry[{i}].resource.content[{j}].attachment.url",)))
    if len(set(subjects.values())) > 1:
        first = next(iter(subjects.values()))
        for where, ref in subjects.items():
            if ref != first:
                issues.append(Issue("error", "business-rule", f"All resources of an ITI-65 Bundle concern one "
                                                              f"patient: {ref} differs from {first}", (where,)))
    return issues


def custom_checks(extra: dict[str, Any], resource: Resource, root: str) -> list[Issue]:
    """The checks a profile's ``extra`` switches on."""
    issues: list[Issue] = []
    if extra.get("nir_key"):
        issues.extend(nir_key_issues(resource, root))
    if extra.get("provide_bundle"):
        issues.extend(_provide_bundle(resource, root))
    return issues


# -- native equivalents of the FR Core invariants (fhirpathpy costs ~1 ms each on a Patient) --------------------
# Each one computes exactly the FHIRPath expression of the same key in definitions/fr-profiles.json;
# tests/profiles/test_french.py checks that both agree on the examples and their mutations.

_RELIABILITY = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
_INS_OIDS = ("urn:oid:1.2.250.1.213.1.4.10", "urn:oid:1.2.250.1.213.1.4.11")


def _validated(patient: Resource) -> bool:
    for ext in patient.get("extension") or ():
        if isinstance(ext, dict) and ext.get("url") == _RELIABILITY:
            for sub in ext.get("extension") or ():
                if isinstance(sub, dict) and sub.get("url") == "identityStatus":
                    value = next((v for k, v in sub.items() if k.startswith("value")), None)
                    if isinstance(value, dict) and value.get("code") == "VALI":
                        return True
    return False


def _identifiers(patient: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in patient.get("identifier") or () if isinstance(i, dict)]


def fr_core_1(patient: Any, _resource: Resource) -> bool:
    if not isinstance(patient, dict) or not _validated(patient):
        return True
    for i in _identifiers(patient):
        system, use = i.get("system"), i.get("use")
        if (system == NIR_OID and use == "official") or (system == NIA_OID and use in ("temp", "official")) or (
                system in _INS_OIDS and use == "official"):
            return True
    return False


def fr_core_2(patient: Any, _resource: Resource) -> bool:
    if not isinstance(patient, dict) or not _validated(patient):
        return True
    ids = _identifiers(patient)
    return sum(1 for i in ids if i.get("use") == "official") == 1 or any(
        i.get("system") == NIA_OID and i.get("use") == "temp" for i in ids)


def _codes(value: Any) -> set[str]:
    if not isinstance(value, dict):
        return set()
    codes = {value["code"]} if isinstance(value.get("code"), str) else set()
    for c in value.get("coding") or ():
        if isinstance(c, dict) and isinstance(c.get("code"), str):
            codes.add(c["code"])
    return codes


def _sub_codes(ext: dict[str, Any], url: str) -> set[str]:
    out: set[str] = set()
    for sub in ext.get("extension") or ():
        if isinstance(sub, dict) and sub.get("url") == url:
            for k, v in sub.items():
                if k.startswith("value"):
                    out |= _codes(v)
    return out


def comment_requires_prov(patient: Any, _resource: Resource) -> bool:
    if not isinstance(patient, dict):
        return True
    for ext in patient.get("extension") or ():
        if isinstance(ext, dict) and ext.get("url") == _RELIABILITY and (
                _sub_codes(ext, "identityStatus") & {"RECUP", "VALI", "QUAL"}) and (
                _sub_codes(ext, "comment") & {"DOUT", "FICT"}):
            return False
    return True


NATIVE_INVARIANTS = {"fr_core_1": fr_core_1, "fr_core_2": fr_core_2, "comment_requires_prov": comment_requires_prov}
