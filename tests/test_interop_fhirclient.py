"""Interoperability: the server driven by the SMART on FHIR ``fhirclient`` library (sync, requests).

fhirclient 4.x models are generated from FHIR 4.0.1 (R4), the version this server speaks, and parse
strictly: any element the models do not know, or a malformed primitive, raises FHIRValidationError,
so simply reading the server's output through them is a conformance check.
"""

from __future__ import annotations

import functools
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fhirclient import client
from fhirclient.models.bundle import Bundle
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.fhirabstractbase import FHIRValidationError
from fhirclient.models.fhirdate import FHIRDate
from fhirclient.models.humanname import HumanName
from fhirclient.models.identifier import Identifier
from fhirclient.models.immunization import Immunization
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRNotFoundException

from tests.harness import RunningServer

RUN = uuid.uuid4().hex[:10]
SYSTEM = f"urn:oid:1.2.250.1.213.1.4.9.{int(RUN, 16) % 100000}"
MAX_PAGES = 20  # 25 resources at 10 per page is 3 pages; more means the next links loop
HTTP_TIMEOUT_S = 30


def family(tag: str) -> str:
    return f"Smart{tag.capitalize()}{RUN}"


@pytest.fixture
def smart(server: RunningServer) -> Iterator[client.FHIRClient]:
    c = client.FHIRClient(settings={"app_id": "test", "api_base": server.base_url})
    session: requests.Session = c.server.session
    # requests has no default timeout; bound every call so a stuck server fails the test instead of hanging
    session.request = functools.partial(session.request, timeout=HTTP_TIMEOUT_S)  # type: ignore[method-assign]
    try:
        yield c
    finally:
        session.close()


def new_patient(fam: str, **extra: Any) -> Patient:
    p = Patient()
    name = HumanName()
    name.family = fam
    name.given = ["Élodie"]
    p.name = [name]
    p.gender = "female"
    for k, v in extra.items():
        setattr(p, k, v)
    return p


def create(smart: client.FHIRClient, resource: Any) -> dict[str, Any]:
    body = resource.create(smart.server)
    assert body is not None, "create returned no body (expected Prefer: return=representation by default)"
    resource.id = body["id"]
    return body


def test_capability_statement_parses_as_r4(smart: client.FHIRClient) -> None:
    cs = smart.server.capabilityStatement
    assert isinstance(cs, CapabilityStatement)
    assert cs.fhirVersion.startswith("4.0")
    types = {r.type for r in cs.rest[0].resource}
    assert {"Patient", "DocumentReference", "Immunization"} <= types


def test_create_and_read(smart: client.FHIRClient) -> None:
    fam = family("create")
    ident = Identifier({"system": SYSTEM, "value": f"create-{RUN}"})
    p = new_patient(fam, identifier=[ident], birthDate=FHIRDate("1984-03-07"))
    body = create(smart, p)
    assert body["meta"]["versionId"] == "1"

    read = Patient.read(p.id, smart.server)
    assert read.id == p.id
    assert read.name[0].family == fam
    assert read.name[0].given == ["Élodie"]
    assert read.identifier[0].system == SYSTEM
    assert read.birthDate.isostring == "1984-03-07"
    assert read.meta.versionId == "1"
    assert read.meta.lastUpdated is not None
    assert read.meta.lastUpdated.datetime is not None  # a valid FHIR instant, timezone included
    assert read.as_json() == Patient(body).as_json()


def test_update_bumps_version(smart: client.FHIRClient) -> None:
    p = new_patient(family("update"))
    create(smart, p)
    read = Patient.read(p.id, smart.server)
    read.gender = "male"
    body = read.update()
    assert body is not None
    assert body["meta"]["versionId"] == "2"
    again = Patient.read(p.id, smart.server)
    assert again.meta.versionId == "2"
    assert again.gender == "male"
    v1 = Patient.read_from(f"Patient/{p.id}/_history/1", smart.server)
    assert v1.gender == "female"


def test_search_paging_returns_every_match_once(smart: client.FHIRClient) -> None:
    fam = family("paging")
    expected = sorted(create(smart, new_patient(fam))["id"] for _ in range(25))
    assert len(set(expected)) == 25

    search = Patient.where(struct={"family": fam, "_count": "10"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # perform() is deprecated in favour of perform_iter()
        first = search.perform(smart.server)
    assert isinstance(first, Bundle)
    assert first.type == "searchset"
    assert first.total == 25
    assert len(first.entry) == 10

    # 1. following the next links by hand
    seen: list[str] = []
    bundle: Bundle | None = first
    for _ in range(MAX_PAGES):
        assert bundle is not None
        seen.extend(e.resource.id for e in bundle.entry or [])
        next_url = next((link.url for link in bundle.link or [] if link.relation == "next"), None)
        if next_url is None:
            break
        assert "_cursor=" in next_url
        bundle = Bundle(smart.server.request_json(next_url))
    else:
        pytest.fail(f"more than {MAX_PAGES} pages for 25 resources")
    assert len(seen) == len(set(seen)), "a resource came back twice"
    assert sorted(seen) == expected

    # 2. the library's own paging helpers
    pages = 0
    ids: list[str] = []
    for page in search.perform_iter(smart.server):
        pages += 1
        assert pages <= MAX_PAGES
        ids.extend(e.resource.id for e in page.entry or [])
    assert pages == 3
    assert sorted(ids) == expected
    resources = list(Patient.where(struct={"family": fam, "_count": "7"}).perform_resources_iter(smart.server))
    assert all(isinstance(r, Patient) for r in resources)
    assert sorted(r.id for r in resources) == expected


def test_search_by_identifier_and_reference(smart: client.FHIRClient) -> None:
    value = f"ident-{RUN}"
    p = new_patient(family("ident"), identifier=[Identifier({"system": SYSTEM, "value": value})])
    create(smart, p)
    found = list(Patient.where(struct={"identifier": f"{SYSTEM}|{value}"}).perform_resources_iter(smart.server))
    assert [r.id for r in found] == [p.id]

    imm = Immunization({"status": "completed", "patient": {"reference": f"Patient/{p.id}"},
                        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
                        "occurrenceDateTime": "2021-10-01"})
    create(smart, imm)
    found_imm = list(Immunization.where(struct={"patient": f"Patient/{p.id}"})
                     .perform_resources_iter(smart.server))
    assert [r.id for r in found_imm] == [imm.id]
    assert isinstance(found_imm[0], Immunization)
    assert found_imm[0].patient.reference == f"Patient/{p.id}"


def test_delete(smart: client.FHIRClient) -> None:
    fam = family("delete")
    p = new_patient(fam)
    create(smart, p)
    read = Patient.read(p.id, smart.server)
    read.delete()
    with pytest.raises((FHIRNotFoundException, requests.HTTPError)) as info:
        Patient.read(p.id, smart.server)
    assert info.value.response.status_code in (404, 410)
    assert list(Patient.where(struct={"family": fam}).perform_resources_iter(smart.server)) == []


def test_strict_models_reject_nothing_the_server_returns(smart: client.FHIRClient) -> None:
    """A search Bundle with resources parses strictly (links, search.mode, fullUrl, meta)."""
    fam = family("strict")
    create(smart, new_patient(fam))
    raw = smart.server.request_json(f"Patient?family={fam}")
    try:
        Bundle(raw, strict=True)
    except FHIRValidationError as exc:  # pragma: no cover - reports what the server emits wrongly
        pytest.fail(f"fhirclient R4 models reject the searchset Bundle: {exc}")
