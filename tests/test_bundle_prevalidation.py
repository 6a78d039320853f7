"""Transactions validate their entries before the store unit, once, and the unit writes what was validated."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from fhir_server.context import ServerContext
from fhir_server.errors import Issue
from fhir_server.interactions import bundle, crud
from fhir_server.storage import ConcurrentWrite, SQLWriteUnit


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The resource types crud.validate_resource was called with, in order."""
    seen: list[str] = []
    real = crud.validate_resource

    def counted(resource: dict[str, Any], settings: Any = None) -> list[Issue]:
        seen.append(str(resource.get("resourceType")))
        return real(resource, settings)

    monkeypatch.setattr(crud, "validate_resource", counted)
    return seen


def _transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def _immunization(patient_ref: str) -> dict[str, Any]:
    return {"resourceType": "Immunization", "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
            "patient": {"reference": patient_ref}, "occurrenceDateTime": "2024-10-01"}


def _ids(result: Any) -> list[str]:
    return [e["response"]["location"].split("/")[1] for e in result.body["entry"]]


def test_each_entry_is_validated_once_and_written_as_validated(ctx: ServerContext, validations: list[str]) -> None:
    p_urn, pid = f"urn:uuid:{uuid.uuid4()}", uuid.uuid4().hex
    result = bundle.process(ctx, _transaction(
        {"fullUrl": p_urn, "resource": {"resourceType": "Patient", "name": [{"family": "Lefèvre"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": _immunization(p_urn) | {"id": pid}, "request": {"method": "PUT", "url": f"Immunization/{pid}"}}),
        "minimal")
    assert sorted(validations) == ["Immunization", "Patient"]  # before the unit, never again inside it
    patient_id, imm_id = _ids(result)
    stored = ctx.store.read("Immunization", imm_id)
    assert stored is not None and stored.resource()["patient"] == {"reference": f"Patient/{patient_id}"}


def test_a_retried_transaction_reuses_the_validation(ctx: ServerContext, validations: list[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real, attempts = ctx.store.unit, []

    @contextmanager
    def collides_once() -> Iterator[SQLWriteUnit]:
        with real() as unit:
            yield unit
            attempts.append(1)
            if len(attempts) == 1:
                raise ConcurrentWrite("a concurrent writer won")  # rolls this attempt back

    monkeypatch.setattr(ctx.store, "unit", collides_once)
    p_urn = f"urn:uuid:{uuid.uuid4()}"
    result = bundle.process(ctx, _transaction(
        {"fullUrl": p_urn, "resource": {"resourceType": "Patient", "gender": "female"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": _immunization(p_urn), "request": {"method": "POST", "url": "Immunization"}}), "minimal")
    assert len(attempts) == 2 and len(validations) == 2
    patient_id, imm_id = _ids(result)
    assert ctx.store.read("Patient", patient_id) is not None
    stored = ctx.store.read("Immunization", imm_id)
    assert stored is not None and stored.resource()["patient"]["reference"] == f"Patient/{patient_id}"


def test_a_reference_to_a_patch_entry_is_rewritten_when_prevalidated(ctx: ServerContext,
                                                                     validations: list[str]) -> None:
    """The pre-validation's fullUrl map holds PATCH entries as the unit's does (it used to call their urn
    dangling, a 400, for a Bundle the unit would have written)."""
    with ctx.store.unit() as unit:
        unit.put("Patient", "patched", {"resourceType": "Patient", "gender": "male"}, method="PUT")
    p_urn = f"urn:uuid:{uuid.uuid4()}"
    patch = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.gender"},
        {"name": "value", "valueCode": "female"}]}]}
    result = bundle.process(ctx, _transaction(
        {"fullUrl": p_urn, "resource": patch, "request": {"method": "PATCH", "url": "Patient/patched"}},
        {"resource": _immunization(p_urn), "request": {"method": "POST", "url": "Immunization"}}), "minimal")
    imm_id = _ids(result)[1]
    stored = ctx.store.read("Immunization", imm_id)
    assert stored is not None and stored.resource()["patient"]["reference"] == "Patient/patched"
    assert validations.count("Immunization") == 1
    assert ctx.store.read("Patient", "patched").resource()["gender"] == "female"  # type: ignore[union-attr]


def test_conditional_entries_are_validated_in_the_unit(ctx: ServerContext, validations: list[str]) -> None:
    system = f"urn:test:{uuid.uuid4().hex}"
    bundle.process(ctx, _transaction(
        {"resource": {"resourceType": "Patient", "identifier": [{"system": system, "value": "1"}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={system}|1"}}), "minimal")
    assert validations == ["Patient"]


def test_only_served_searchable_types_get_an_outbox_row() -> None:
    assert crud.indexed("Patient") and crud.indexed("Consent")
    assert not crud.indexed("Binary") and not crud.indexed("AuditEvent")
    assert not crud.indexed("Observation")  # not served: no index, and the indexer must not create one
