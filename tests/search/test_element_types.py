"""``fhir_common.fhirpath.element_types`` (what the CapabilityStatement's token modifiers are derived from) agrees
with the types extraction actually sees on data, and says "unknown" rather than guess."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_common.fhirpath import element_types
from search.fhirpath import evaluate
from search.params import token
from search.registry import SearchParameterRegistry

CODING = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "X", "display": "x"}
CONCEPT = {"coding": [CODING], "text": "t"}
RESOURCES: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p", "meta": {"security": [CODING], "tag": [CODING]}, "active": True,
     "identifier": [{"system": "urn:s", "value": "1"}], "gender": "male", "address": [{"use": "home"}],
     "telecom": [{"system": "email", "value": "a@b.c"}, {"system": "phone", "value": "1"}],
     "communication": [{"language": CONCEPT}]},
    {"resourceType": "DocumentReference", "status": "current", "masterIdentifier": {"value": "m"},
     "identifier": [{"value": "i"}], "type": CONCEPT, "category": [CONCEPT], "securityLabel": [CONCEPT],
     "relatesTo": [{"code": "replaces", "target": {"reference": "DocumentReference/x"}}],
     "content": [{"attachment": {"contentType": "text/plain", "language": "fr"}, "format": CODING}],
     "context": {"event": [CONCEPT], "facilityType": CONCEPT, "practiceSetting": CONCEPT}},
    {"resourceType": "Immunization", "status": "completed", "identifier": [{"value": "i"}], "vaccineCode": CONCEPT,
     "statusReason": CONCEPT, "reasonCode": [CONCEPT], "protocolApplied": [{"targetDisease": [CONCEPT]}]},
    {"resourceType": "List", "status": "current", "code": CONCEPT, "emptyReason": CONCEPT,
     "identifier": [{"value": "i"}]},
    {"resourceType": "Consent", "status": "active", "scope": CONCEPT, "category": [CONCEPT],
     "identifier": [{"value": "i"}], "provision": {"action": [CONCEPT], "purpose": [CODING],
                                                  "securityLabel": [CODING]}},
]


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r["resourceType"])
def test_static_types_are_the_types_extraction_sees(resource: dict[str, Any]) -> None:
    registry = SearchParameterRegistry.load_default()
    checked = 0
    for param in registry.for_type(resource["resourceType"]).values():
        if param.type != "token" or not param.supported or param.code == "_id":
            continue
        for path in param.paths:
            static = element_types(path.expression)
            seen = {v.type for v in evaluate(path.expression, resource)}
            if static is None or not seen:
                continue
            assert seen == set(static), (param.code, path.expression)
            checked += 1
    assert checked >= 3


def test_what_cannot_be_told_statically_is_unknown_and_keeps_every_modifier() -> None:
    assert element_types("Patient.deceased.exists() and Patient.deceased != false") is None
    assert element_types("List.extension.where(url='x').value") is None  # value[x]
    assert element_types("Patient.communication") is None  # a backbone element
    assert element_types("Patient.nosuchelement") is None
    sp = SearchParameterRegistry.load_default().get("List", "sourceId")
    assert sp is not None and set(token.modifiers(sp)) == token.MODIFIERS
