"""``fhir_common.r4model``, the one R4 model: what its three readers (XML conversion, validation, ``_summary``) rely on,
checked against the R4 specification pages written out here, so a wrong generation or loader fails."""

from __future__ import annotations

import pytest

from fhir_common import r4model
from fhir_server.formats import model as formats_model
from fhir_server.registry import RESOURCE_TYPES
from profiles.model import definitions


@pytest.mark.parametrize("type_", sorted(t.name for t in RESOURCE_TYPES.values() if t.supports("create")))
def test_every_writable_type_is_validated_by_the_engine(type_: str) -> None:
    """A type clients write that is outside the validated closure would silently get the structural check only
    (AuditEvent is written by the server alone)."""
    assert type_ in r4model.validated_types()
    assert type_ in r4model.resource_types()
    assert definitions().is_resource(type_)


def test_patient_as_the_specification_defines_it() -> None:
    """patient.html: element order, cardinalities, choice types, summary flags, bindings, backbone children."""
    names = [el.name for el in r4model.children("Patient") or ()]
    assert names[:12] == ["id", "meta", "implicitRules", "language", "text", "contained", "extension",
                          "modifierExtension", "identifier", "active", "name", "telecom"]
    assert names[-3:] == ["generalPractitioner", "managingOrganization", "link"]
    deceased = r4model.element("Patient.deceased[x]")
    assert deceased is not None and deceased.choice and deceased.types == ("boolean", "dateTime") and deceased.summary
    gender = r4model.element("Patient.gender")
    assert gender is not None and gender.binding == ("required", "http://hl7.org/fhir/ValueSet/administrative-gender")
    link = r4model.element("Patient.link")
    assert link is not None and link.modifier and link.many and link.min == 0
    other = r4model.element("Patient.link.other")
    assert other is not None and other.min == 1 and other.max == 1 and set(other.targets) == {"Patient",
                                                                                              "RelatedPerson"}
    assert [el.name for el in r4model.children("Patient.link") or ()] == [
        "id", "extension", "modifierExtension", "other", "type"]
    assert r4model.element("Patient.nosuch") is None and r4model.children("Patient.nosuch") is None
    assert r4model.type_def("NoSuchType") is None


def test_xml_attributes_and_content_references() -> None:
    ext = r4model.children("Extension") or ()
    assert [(el.name, el.xml_attr) for el in ext[:3]] == [("id", True), ("extension", False), ("url", True)]
    item = r4model.element("Questionnaire.item.item")
    assert item is not None and item.content_ref == "Questionnaire.item"


def test_primitives_and_their_json_kinds() -> None:
    kinds = r4model.primitive_json_kinds()
    assert kinds["boolean"] == "boolean" and kinds["positiveInt"] == "integer" and kinds["decimal"] == "decimal"
    assert kinds["dateTime"] == "string" and "HumanName" not in kinds
    date = r4model.type_def("date")
    assert date is not None and date.kind == "primitive-type" and date.regex


@pytest.mark.parametrize("type_", r4model.type_names())
def test_every_type_converts(type_: str) -> None:
    """The XML table derives from every type and backbone element without an unexpected shape."""
    info = formats_model.type_info(type_)
    if type_ in r4model.primitive_json_kinds():
        assert info is None
        return
    assert info is not None
    for child in info.children:
        if child.kind == formats_model.COMPLEX and "." in child.types[0]:
            assert formats_model.type_info(child.types[0]) is not None, child
