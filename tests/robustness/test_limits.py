"""Every request-shape limit of ``fhir_server/api/limits.py``, against a real server with small limits.

Each refusal must be the documented status with an OperationOutcome whose code is ``too-costly`` (or
``too-long``) and whose ``expression`` names the parameter or element at fault where there is one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings
from tests.harness import EsProxy, RunningServer, start_server

FHIR_JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def limited(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = make_settings(es_url, tmp_path_factory.mktemp("limits"), max_url_bytes=2048, max_query_params=10,
                             max_bundle_entries=5, max_chain_depth=2, max_has_depth=1, max_included=2)
    with start_server(settings) as srv:
        yield srv


@pytest.fixture
def http(limited: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=limited.base_url, timeout=30) as c:
        yield c


def _issue(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    issue: dict[str, Any] = body["issue"][0]
    assert issue["code"] == code
    return issue


def test_url_longer_than_the_limit_is_414(http: httpx.Client) -> None:
    _issue(http.get("/Patient", params={"name": "x" * 3000}), 414, "too-long")


def test_too_many_query_parameters_is_400(http: httpx.Client) -> None:
    params = "&".join(f"name=n{i}" for i in range(11))
    within = "&".join(f"name=n{i}" for i in range(10))
    assert http.get("/Patient", params=within).status_code == 200
    _issue(http.get("/Patient", params=params), 400, "too-costly")


def test_too_many_form_parameters_in_post_search_is_400(http: httpx.Client) -> None:
    form = "&".join(f"name=n{i}" for i in range(11))
    resp = http.post("/Patient/_search", content=form,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    _issue(resp, 400, "too-costly")


def test_chain_longer_than_the_limit_is_400_naming_it(http: httpx.Client) -> None:
    name = "subject:Patient.general-practitioner:Practitioner.organization.name"
    issue = _issue(http.get("/DocumentReference", params={name: "x"}), 400, "too-costly")
    assert issue["expression"] == [name]
    # within the limit: an ordinary search
    assert http.get("/DocumentReference", params={"subject:Patient.name": "x"}).status_code == 200


def test_nested_has_beyond_the_limit_is_400_naming_it(http: httpx.Client) -> None:
    name = "_has:DocumentReference:subject:_has:List:item:code"
    issue = _issue(http.get("/Patient", params={name: "x"}), 400, "too-costly")
    assert issue["expression"] == [name]
    assert http.get("/Patient", params={"_has:DocumentReference:subject:status": "current"}).status_code == 200


def test_search_limits_hold_inside_a_batch(http: httpx.Client) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?_has:DocumentReference:subject:_has:List:item:code=x"}}]}
    resp = http.post("/", json=bundle, headers=FHIR_JSON)
    assert resp.status_code == 200, resp.text
    entry = resp.json()["entry"][0]
    assert entry["response"]["status"].startswith("400")  # refused before any inner search runs


def test_bundle_with_too_many_entries_is_413_naming_bundle_entry(http: httpx.Client) -> None:
    entry = {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}
    for kind in ("transaction", "batch"):
        bundle = {"resourceType": "Bundle", "type": kind, "entry": [entry] * 6}
        issue = _issue(http.post("/", json=bundle, headers=FHIR_JSON), 413, "too-costly")
        assert issue["expression"] == ["Bundle.entry"]
    ok = http.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry] * 5},
                   headers=FHIR_JSON)
    assert ok.status_code == 200, ok.text


def test_included_resources_per_page_are_capped_with_a_warning(http: httpx.Client) -> None:
    patient = http.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Fanout"}]},
                        headers=FHIR_JSON).json()
    for _ in range(3):
        doc = {"resourceType": "DocumentReference", "status": "current",
               "subject": {"reference": f"Patient/{patient['id']}"},
               "content": [{"attachment": {"contentType": "text/plain", "data": "aGVsbG8="}}]}
        assert http.post("/DocumentReference", json=doc, headers=FHIR_JSON).status_code == 201
    resp = http.get("/Patient", params={"_id": patient["id"], "_revinclude": "DocumentReference:subject"})
    assert resp.status_code == 200, resp.text
    modes = [e["search"]["mode"] for e in resp.json()["entry"]]
    assert modes.count("include") == 2
    outcome = next(e["resource"] for e in resp.json()["entry"] if e["search"]["mode"] == "outcome")
    assert outcome["issue"][0]["code"] == "too-costly"




@pytest.fixture(scope="module")
def stalling(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, EsProxy]]:
    """A server whose Elasticsearch stops answering on demand; its searches may wait 1 s per call."""
    proxy = EsProxy(es_url)
    srv = start_server(make_settings(proxy.url, tmp_path_factory.mktemp("stalling"), es_search_timeout_s=1.0))
    try:
        yield srv, proxy
    finally:
        proxy.stalled.clear()
        srv.stop()
        proxy.close()


def test_elasticsearch_timeout_is_503_with_retry_after(stalling: tuple[RunningServer, EsProxy]) -> None:
    srv, proxy = stalling
    with httpx.Client(base_url=srv.base_url, timeout=60) as c:
        assert c.get("/Patient", params={"name": "x"}).status_code == 200
        proxy.stalled.set()
        try:
            resp = c.get("/Patient", params={"name": "x"})
            assert resp.status_code in (503, 504), resp.text
            assert resp.headers["Retry-After"]
            assert resp.json()["issue"][0]["code"] == "transient"
            # writes do not wait for the index: they still succeed
            assert c.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON).status_code == 201
        finally:
            proxy.stalled.clear()
        assert c.get("/Patient", params={"name": "x"}).status_code == 200  # the cluster is back
