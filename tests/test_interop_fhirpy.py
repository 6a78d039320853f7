"""Interoperability: the server driven by fhirpy's async client (aiohttp), as a third-party app would.

Every test makes its own data under a module-unique family name, so tests are independent of each
other and of the other modules sharing the Elasticsearch node.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import ResourceNotFound

from tests.harness import RunningServer

RUN = uuid.uuid4().hex[:10]
SYSTEM = f"urn:oid:1.2.250.1.213.1.4.8.{int(RUN, 16) % 100000}"
PAGING_TIMEOUT_S = 60
MAX_PAGES = 20  # 25 resources at 10 per page is 3 pages; anything beyond this bound is a paging loop


def family(tag: str) -> str:
    """A family name no other test (or module) uses: letters only, so tokenisers keep it whole."""
    return f"Fhirpy{tag.capitalize()}{RUN}"


@pytest.fixture
def fhir(server: RunningServer) -> AsyncFHIRClient:
    return AsyncFHIRClient(server.base_url, aiohttp_config={"timeout": aiohttp.ClientTimeout(total=30)})


def patient_data(fam: str, **extra: Any) -> dict[str, Any]:
    return {"name": [{"family": fam, "given": ["Zoé", "Marie"]}], "gender": "female", "birthDate": "1984-03-07",
            **extra}


async def test_create_and_read(fhir: AsyncFHIRClient) -> None:
    fam = family("create")
    ident = {"system": SYSTEM, "value": f"create-{RUN}"}
    p = fhir.resource("Patient", **patient_data(fam, identifier=[ident]))
    await p.save()
    assert p.id
    assert p["meta"]["versionId"] == "1"
    assert p["meta"]["lastUpdated"]

    read = await fhir.reference("Patient", p.id).to_resource()
    assert read.id == p.id
    assert read["resourceType"] == "Patient"
    assert read["name"][0]["family"] == fam
    assert read["name"][0]["given"] == ["Zoé", "Marie"]
    assert read["identifier"] == [ident]
    assert read["meta"]["versionId"] == "1"
    assert read.serialize() == p.serialize()

    also = await fhir.get("Patient", p.id)
    assert also["id"] == p.id


async def test_update_bumps_version_and_vread_keeps_old(fhir: AsyncFHIRClient) -> None:
    fam = family("update")
    p = fhir.resource("Patient", **patient_data(fam))
    await p.save()
    pid = p.id

    p["gender"] = "male"
    p["birthDate"] = "1990-01-02"
    await p.save()
    assert p.id == pid
    assert p["meta"]["versionId"] == "2"

    read = await fhir.reference("Patient", pid).to_resource()
    assert read["meta"]["versionId"] == "2"
    assert read["gender"] == "male"
    assert read["birthDate"] == "1990-01-02"

    v1 = await fhir.reference("Patient", pid).execute("_history/1", method="get")
    assert v1["gender"] == "female"
    assert v1["meta"]["versionId"] == "1"
    history = await fhir.reference("Patient", pid).execute("_history", method="get")
    assert history["resourceType"] == "Bundle"
    assert history["type"] == "history"
    assert len(history["entry"]) == 2


async def test_search_paging_returns_every_match_once(fhir: AsyncFHIRClient) -> None:
    fam = family("paging")
    created = await asyncio.gather(
        *(fhir.resource("Patient", **patient_data(fam, birthDate=f"2000-01-{i + 1:02d}")).save() for i in range(25)))
    expected = sorted(p.id for p in created)
    assert len(set(expected)) == 25

    search = fhir.resources("Patient").search(family=fam).limit(10)

    first = await search.fetch_raw()
    assert first["resourceType"] == "Bundle"
    assert first["type"] == "searchset"
    assert first["total"] == 25
    assert len(first["entry"]) == 10
    relations = {link["relation"]: link["url"] for link in first["link"]}
    assert "next" in relations and "_cursor=" in relations["next"]

    seen: list[str] = []

    async def collect() -> None:
        async for p in search:
            seen.append(p.id)
            assert len(seen) <= 10 * MAX_PAGES, "paging does not terminate"

    await asyncio.wait_for(collect(), PAGING_TIMEOUT_S)
    assert len(seen) == len(set(seen)), "a resource came back twice"
    assert sorted(seen) == expected

    everything = await asyncio.wait_for(search.fetch_all(), PAGING_TIMEOUT_S)
    assert sorted(p.id for p in everything) == expected


async def test_count(fhir: AsyncFHIRClient) -> None:
    fam = family("count")
    await asyncio.gather(*(fhir.resource("Patient", **patient_data(fam)).save() for _ in range(3)))
    # fhirpy asks `_count=0&_totalMethod=count` and reads Bundle.total
    assert await fhir.resources("Patient").search(family=fam).count() == 3


async def test_search_by_identifier_and_name(fhir: AsyncFHIRClient) -> None:
    fam = family("ident")
    value = f"ident-{RUN}"
    p = fhir.resource("Patient", **patient_data(fam, identifier=[{"system": SYSTEM, "value": value}]))
    await p.save()

    found = await fhir.resources("Patient").search(identifier=f"{SYSTEM}|{value}").fetch_all()
    assert [r.id for r in found] == [p.id]
    # accent- and case-insensitive prefix on `name`
    found = await fhir.resources("Patient").search(name=fam.lower()[:-2], family=fam).fetch_all()
    assert [r.id for r in found] == [p.id]
    found = await fhir.resources("Patient").search(name="zoe", family=fam).fetch_all()
    assert [r.id for r in found] == [p.id]
    assert await fhir.resources("Patient").search(identifier=f"{SYSTEM}|nope-{RUN}").fetch_all() == []


async def test_reference_search_with_fhirpy_reference(fhir: AsyncFHIRClient) -> None:
    p = fhir.resource("Patient", **patient_data(family("ref")))
    await p.save()
    imm = fhir.resource("Immunization", status="completed",
                        vaccineCode={"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
                        patient=p.to_reference(), occurrenceDateTime="2021-10-01")
    await imm.save()
    assert imm.id

    found = await fhir.resources("Immunization").search(patient=p.to_reference()).fetch_all()
    assert [r.id for r in found] == [imm.id]
    found = await fhir.resources("Immunization").search(patient=p.id).fetch_all()
    assert [r.id for r in found] == [imm.id]
    back = await found[0]["patient"].to_resource()
    assert back.id == p.id


async def test_delete(fhir: AsyncFHIRClient) -> None:
    fam = family("delete")
    p = fhir.resource("Patient", **patient_data(fam))
    await p.save()
    pid = p.id
    assert [r.id for r in await fhir.resources("Patient").search(family=fam).fetch_all()] == [pid]

    await p.delete()

    with pytest.raises(ResourceNotFound):
        await fhir.reference("Patient", pid).to_resource()
    assert await fhir.resources("Patient").search(family=fam).fetch_all() == []
    assert await fhir.resources("Patient").search(_id=pid).fetch_all() == []
