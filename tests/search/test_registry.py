from __future__ import annotations

import json
from pathlib import Path

from search.definitions.build import compact
from search.registry import SearchParameterRegistry, split_union
from tests.search.conftest import DATA

DEFS = Path(__file__).parents[2] / "search" / "definitions" / "search-parameters.json"


def test_vendored_file_is_up_to_date() -> None:
    official = json.loads((DATA / "r4-search-parameters.json").read_text(encoding="utf-8"))
    assert json.loads(DEFS.read_text(encoding="utf-8")) == compact(official)


def test_split_union_respects_parentheses_and_strings() -> None:
    assert split_union("Patient.name | Person.name") == ["Patient.name", "Person.name"]
    assert split_union("(A.x as B) | C.where(y = 'a|b')") == ["(A.x as B)", "C.where(y = 'a|b')"]


def test_common_and_type_specific(registry: SearchParameterRegistry) -> None:
    patient = registry.for_type("Patient")
    for code in ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source", "name", "family", "identifier"):
        assert code in patient
    assert patient["name"].expression == "Patient.name"
    assert patient["family"].expression == "Patient.name.family"  # Practitioner part split off
    assert patient["_lastUpdated"].paths[0].expression == "Patient.meta.lastUpdated"
    assert "_text" not in registry.for_type("Binary")  # not a DomainResource
    assert registry.get("Patient", "nope") is None


def test_resolve_is_rewritten_to_target_filter(registry: SearchParameterRegistry) -> None:
    p = registry.get("DocumentReference", "patient")
    assert p is not None
    assert [(x.expression, x.resolve_types) for x in p.paths] == [("DocumentReference.subject", ("Patient",))]
    assert p.target == ("Patient",)
    imm = registry.get("Immunization", "patient")
    assert imm is not None and imm.paths[0].expression == "Immunization.patient"


def test_identifier_multi_path(registry: SearchParameterRegistry) -> None:
    p = registry.get("DocumentReference", "identifier")
    assert p is not None
    assert [x.expression for x in p.paths] == ["DocumentReference.masterIdentifier", "DocumentReference.identifier"]


def test_unsupported_are_known(registry: SearchParameterRegistry) -> None:
    dr = registry.for_type("DocumentReference")
    assert not dr["relationship"].reason_unsupported  # composite, served by search.params.composite
    assert dr["relationship"].component == ("code", "target")
    assert registry.for_type("Patient")["_query"].reason_unsupported
    assert not registry.for_type("Patient")["phonetic"].reason_unsupported  # Soundex
    assert not dr["_text"].reason_unsupported  # full text, top-level fields
    assert registry.get("DocumentReference", "creation") is not None  # IHE MHD
    assert registry.get("List", "designationType") is not None and registry.get("List", "isArchived") is not None


def test_fingerprint_stable_and_type_specific(registry: SearchParameterRegistry) -> None:
    fp = registry.fingerprint("Patient")
    assert fp == SearchParameterRegistry.load_default().fingerprint("Patient")
    assert fp != registry.fingerprint("DocumentReference")
    other = SearchParameterRegistry(
        [d for d in json.loads(DEFS.read_text(encoding="utf-8"))["parameters"] if d["code"] != "family"]
    )
    assert other.fingerprint("Patient") != fp
    assert other.fingerprint("Immunization") == registry.fingerprint("Immunization")


def test_reference_params_are_the_supported_references(registry: SearchParameterRegistry) -> None:
    """What includes follow and /metadata lists: every supported reference parameter, nothing else."""
    for type_ in ("Patient", "DocumentReference", "Immunization", "List"):
        expected = {c for c, p in registry.for_type(type_).items() if p.type == "reference" and p.supported}
        assert set(registry.reference_params(type_)) == expected
    assert {"subject", "patient", "author"} <= set(registry.reference_params("DocumentReference"))
    assert "status" not in registry.reference_params("DocumentReference")
    assert registry.reference_params("List") is registry.reference_params("List")  # computed once
