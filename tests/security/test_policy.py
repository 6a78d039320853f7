"""The access policy: compartment and masking, for one resource and as search filters."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.errors import FHIRError
from fhir_server.security.authz import check_visible
from fhir_server.security.policy import (
    PATIENT_COMPARTMENT,
    TRE_A07,
    TRE_A07_ALIASES,
    compartment_patients,
    escape,
    in_patient_compartment,
    mandatory_params,
    visible,
)
from fhir_server.security.scopes import ScopeSet
from fhir_server.security.tokens import OppositionSlot, Principal
from search.params.base import split_escaped, unescape
from search.params.reference import parse_reference

MISSPELT = TRE_A07.replace("StatutVisibilite", "StatusVisibilite")


def principal(scopes: str, patient: str | None = None, fhir_user: str | None = None,
              opposed_by: frozenset[str] | None = frozenset()) -> Principal:
    return Principal("sub", ScopeSet.parse(scopes), patient=patient, fhir_user=fhir_user,
                     oppositions=OppositionSlot(opposed_by))


PATIENT = principal("patient/*.rs", patient="p1")
OTHER_PATIENT = principal("patient/*.rs", patient="p2")
DOCTOR = principal("user/*.cruds", fhir_user="Practitioner/d1")
BACKEND = principal("system/*.cruds")
NO_PATIENT_CLAIM = principal("patient/*.rs")


def doc(subject: str = "Patient/p1", label: str | None = None, system: str = TRE_A07) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "DocumentReference", "id": "d", "status": "current",
                           "subject": {"reference": subject}}
    if label:
        res["securityLabel"] = [{"coding": [{"system": system, "code": label}]}]
    return res


@pytest.mark.parametrize(
    ("who", "resource", "expected"),
    [
        (PATIENT, doc(), True),
        (OTHER_PATIENT, doc(), False),
        (NO_PATIENT_CLAIM, doc(), False),
        (PATIENT, doc(subject="http://localhost/fhir/Patient/p1"), True),
        (PATIENT, doc(label="MASQUE_PS"), True),
        (PATIENT, doc(label="INVISIBLE_PATIENT"), False),
        (PATIENT, doc(label="INVISIBLE_PATIENT", system=MISSPELT), False),
        (DOCTOR, doc(label="MASQUE_PS"), False),
        (DOCTOR, doc(label="MASQUE_PS", system=MISSPELT), False),
        (DOCTOR, doc(label="INVISIBLE_PATIENT"), True),
        (DOCTOR, doc(), True),
        (BACKEND, doc(label="MASQUE_PS"), True),
        (PATIENT, {"resourceType": "Patient", "id": "p1"}, True),
        (PATIENT, {"resourceType": "Patient", "id": "p2"}, False),
        (PATIENT, {"resourceType": "Immunization", "patient": {"reference": "Patient/p1"}}, True),
        (PATIENT, {"resourceType": "Immunization", "patient": {"reference": "Patient/p9"}}, False),
        (PATIENT, {"resourceType": "Binary", "id": "b"}, False),
        (principal("user/Patient.r"), doc(), False),
    ],
)
def test_visible(who: Principal, resource: dict[str, Any], expected: bool) -> None:
    assert visible(who, resource) is expected


def _not_labelled(code: str) -> list[tuple[str, str]]:
    """The label excluded in every spelling of the system ``visible`` honours."""
    return [("security-label:not", f"{system}|{code}") for system in TRE_A07_ALIASES]


def test_mandatory_params() -> None:
    assert mandatory_params(PATIENT, "DocumentReference") == [
        ("subject", "Patient/p1"), *_not_labelled("INVISIBLE_PATIENT")]
    assert mandatory_params(DOCTOR, "DocumentReference") == _not_labelled("MASQUE_PS")
    assert mandatory_params(BACKEND, "DocumentReference") == []
    assert mandatory_params(PATIENT, "Patient") == [("_id", "p1")]
    assert mandatory_params(PATIENT, "Immunization") == [("patient", "Patient/p1")]
    assert mandatory_params(PATIENT, "Binary") is None
    assert mandatory_params(NO_PATIENT_CLAIM, "Patient") is None
    assert mandatory_params(principal("user/Patient.r"), "Patient") is None  # read but not search


def test_least_privileged_context_wins() -> None:
    """A token holding patient and user scopes searches in patient context: never the wider one."""
    both = principal("patient/DocumentReference.rs user/DocumentReference.rs", patient="p1")
    assert mandatory_params(both, "DocumentReference") == [
        ("subject", "Patient/p1"), *_not_labelled("INVISIBLE_PATIENT")]
    assert visible(both, doc(subject="Patient/p2")) is False


_IDS = st.text(alphabet="abP12-.", min_size=1, max_size=4)
_REFS = st.one_of(
    st.builds(lambda i: f"Patient/{i}", _IDS),
    st.builds(lambda b, i: f"{b}/Patient/{i}", st.sampled_from(["http://h/fhir", "", "x"]), _IDS),
    st.builds(lambda i: f"Patient/{i}/_history/2", _IDS),
    st.builds(lambda t, i: f"{t}/{i}", st.sampled_from(["Group", "xPatient", "Practitioner"]), _IDS),
    st.text(alphabet="Patien/1", max_size=12),
)
_VALUES = st.one_of(st.builds(lambda r: {"reference": r}, _REFS), st.none(), st.integers(), st.text(max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["Patient", "DocumentReference", "Immunization", "List", "AuditEvent", "Consent", "Binary"]),
       st.one_of(_VALUES, st.lists(_VALUES, max_size=3)), _IDS, st.frozensets(_IDS, max_size=4))
def test_compartment_patients_reads_references_as_the_search_index_does(type_: str, value: Any, rid: str,
                                                                       candidates: frozenset[str]) -> None:
    """The policy's compartment is the search index's: a relative reference names patient ``x`` exactly when
    the reference parser of search/ reads it as ``Patient`` ``x`` (a ``/_history/n`` dropped); ``.../Patient/x``
    of any base counts too (hiding more, never less). ``in_patient_compartment`` decides from the same set."""
    element = {"DocumentReference": "subject", "List": "subject", "Immunization": "patient",
               "Consent": "patient", "Binary": "securityContext"}.get(type_)
    resource: dict[str, Any] = {"resourceType": type_, "id": rid}
    values = value if isinstance(value, list) else [value]
    if type_ == "AuditEvent":
        resource["entity"] = [{"what": v} for v in values]
    elif element is not None:
        resource[element] = value
    expected: set[str] = set()
    if type_ == "Patient":
        expected = {rid}
    elif type_ in PATIENT_COMPARTMENT:  # a Binary is in no compartment (it follows its DocumentReference)
        for v in values:
            ref = v.get("reference") if isinstance(v, dict) else None
            if not isinstance(ref, str):
                continue
            _, rtype, local = parse_reference(ref, None)
            if local is not None:
                expected |= {local} if rtype == "Patient" else set()
            elif (tail := ref.partition("/_history/")[0]).rpartition("/")[0].endswith("/Patient"):
                expected.add(tail.rpartition("/")[2])
    found = compartment_patients(resource)
    assert {p for p in found if "/" not in p} == {p for p in expected if "/" not in p}
    for candidate in candidates | {rid}:
        assert (candidate in found) is in_patient_compartment(resource, candidate)


def test_a_versioned_subject_is_in_that_patients_compartment() -> None:
    """``Patient/p1/_history/2`` is p1's record: the patient sees it, a practitioner p1 opposes does not."""
    versioned = doc(subject="Patient/p1/_history/2")
    assert visible(PATIENT, versioned) and visible(DOCTOR, versioned)
    assert not visible(principal("user/*.cruds", fhir_user="Practitioner/d1", opposed_by=frozenset({"p1"})),
                       versioned)


def test_a_system_token_sees_a_stored_resource_without_parsing_it() -> None:
    check_visible(BACKEND, "DocumentReference", b"not even JSON")  # nothing to decide: never parsed
    with pytest.raises(FHIRError):
        check_visible(DOCTOR, "DocumentReference", orjson.dumps(doc(label="MASQUE_PS")))
    mixed = principal("user/DocumentReference.rs system/DocumentReference.rs", fhir_user="Practitioner/d1")
    with pytest.raises(FHIRError):  # a user scope for the type: the narrower context decides, so it is parsed
        check_visible(mixed, "DocumentReference", orjson.dumps(doc(label="MASQUE_PS")))


@given(st.text(max_size=40))
def test_an_escaped_id_is_one_search_value_that_reads_back_unchanged(value: str) -> None:
    escaped = escape(value)
    for sep in (",", "|", "$"):
        assert split_escaped(escaped, sep) == [escaped]
    assert unescape(escaped) == value


def test_the_policy_never_turns_a_patient_id_into_a_list() -> None:
    odd = principal("patient/*.rs", patient="a,b|c$d")
    assert mandatory_params(odd, "Patient") == [("_id", "a\\,b\\|c\\$d")]
    assert mandatory_params(odd, "Immunization") == [("patient", "Patient/a\\,b\\|c\\$d")]
