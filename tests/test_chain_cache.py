"""The chain executor caches "does any X refer to a T through p" (``refers_to_type``): never at the cost of a write.

A cached "no" holds only while the store has no newer write; a cached "yes" only lets the exact
resolution run. Both directions are checked here over HTTP, with writes between searches.
"""

from __future__ import annotations

import httpx

from tests.harness import RunningServer

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _ids(client: httpx.Client, query: str) -> set[str]:
    resp = client.get(f"/DocumentReference?{query}")
    assert resp.status_code == 200, resp.text
    return {e["resource"]["id"] for e in resp.json().get("entry", []) if e["search"]["mode"] == "match"}


def _put(client: httpx.Client, resource: dict[str, object]) -> None:
    resp = client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR_JSON)
    assert resp.status_code in (200, 201), resp.text


def test_chain_sees_the_first_reference_to_a_type_and_its_removal(server: RunningServer,
                                                                   client: httpx.Client) -> None:
    _put(client, {"resourceType": "Patient", "id": "cc-p1", "name": [{"family": "Quimper"}]})
    contained = {"resourceType": "DocumentReference", "id": "cc-d1", "status": "current",
                 "contained": [{"resourceType": "Practitioner", "id": "a", "name": [{"family": "Brest"}]}],
                 "author": [{"reference": "#a"}],
                 "content": [{"attachment": {"contentType": "text/plain", "url": "http://x/1"}}]}
    _put(client, contained)
    for _ in range(2):  # the second search may answer "no Patient author" from the cache
        assert _ids(client, "author.family=Quimper") == set()
    assert _ids(client, "author.family=Brest") == {"cc-d1"}
    by_patient = {**contained, "id": "cc-d2", "contained": None, "author": [{"reference": "Patient/cc-p1"}]}
    del by_patient["contained"]
    _put(client, by_patient)  # the first DocumentReference whose author is a Patient
    assert _ids(client, "author.family=Quimper") == {"cc-d2"}
    assert client.delete("/DocumentReference/cc-d2").status_code in (200, 204)
    assert _ids(client, "author.family=Quimper") == set()  # "yes" cached, the resolution stays exact
    _put(client, {**by_patient, "id": "cc-d3"})
    assert _ids(client, "author.family=Quimper") == {"cc-d3"}
