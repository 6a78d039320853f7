"""Concurrency of writes and Bundles: no duplicates, no deadlock, no lost update."""

from __future__ import annotations

import uuid
from collections import Counter

import httpx

from tests.harness import RunningServer, in_parallel

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def test_parallel_updates_with_if_match_have_one_winner(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url) as c:
        pid = c.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON).json()["id"]

    def update(c: httpx.Client, i: int) -> int:
        body = {"resourceType": "Patient", "id": pid, "name": [{"family": f"W{i}"}]}
        return c.put(f"/Patient/{pid}", json=body, headers={**FHIR_JSON, "If-Match": 'W/"1"'}).status_code

    statuses = Counter(in_parallel(16, update, server.base_url))
    assert statuses[200] == 1 and statuses[200] + statuses[412] + statuses[409] == 16, statuses
    with httpx.Client(base_url=server.base_url) as c:
        assert c.get(f"/Patient/{pid}").json()["meta"]["versionId"] == "2"


def test_parallel_bundles_on_the_same_resources(server: RunningServer) -> None:
    """Each bundle updates two shared patients (in opposite orders) and conditionally creates a third."""
    sys = f"urn:test:{uuid.uuid4().hex}"
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"

    def bundle(c: httpx.Client, i: int) -> int:
        first, second = (a, b) if i % 2 else (b, a)
        entries = [
            {"resource": {"resourceType": "Patient", "id": first, "name": [{"family": f"T{i}"}]},
             "request": {"method": "PUT", "url": f"Patient/{first}"}},
            {"resource": {"resourceType": "Patient", "id": second, "name": [{"family": f"T{i}"}]},
             "request": {"method": "PUT", "url": f"Patient/{second}"}},
            {"resource": {"resourceType": "Patient", "identifier": [{"system": sys, "value": "shared"}]},
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={sys}|shared"}},
        ]
        resp = c.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
                      headers=FHIR_JSON)
        return resp.status_code

    statuses = in_parallel(12, bundle, server.base_url)
    assert set(statuses) <= {200, 409}, statuses
    ok = statuses.count(200)
    assert ok >= 1
    with httpx.Client(base_url=server.base_url) as c:
        pa, pb = c.get(f"/Patient/{a}").json(), c.get(f"/Patient/{b}").json()
        # no lost update: every successful bundle made exactly one version of each shared patient
        assert int(pa["meta"]["versionId"]) == ok == int(pb["meta"]["versionId"])
        # and both hold the same bundle's write (all-or-nothing, serialised)
        assert pa["name"] == pb["name"]
        assert c.get("/Patient", params={"identifier": f"{sys}|shared"}).json()["total"] == 1
