"""Robustness against a real server: schemathesis on ``/openapi.json`` and hypothesis-generated FHIR-shaped
requests (``tests/robustness/fuzz.py``) on every endpoint. Never a 5xx; every 4xx is an OperationOutcome.

CI runs a small count (``FHIR_FUZZ_EXAMPLES``, default 150 per test); ``bench/fuzz.py`` runs ≥ 10,000.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from fhir_server.api.openapi import openapi_document, openapi_json
from search.registry import SearchParameterRegistry
from tests.conftest import make_settings
from tests.harness import RunningServer, start_server
from tests.robustness.fuzz import FuzzRequest, problem, problem_of, requests, seed, send

EXAMPLES = int(os.environ.get("FHIR_FUZZ_EXAMPLES", "150"))
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                         phases=[Phase.generate, Phase.shrink],
                         suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def audited(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Audit on, fail-closed: the audit facts of every generated request are read on the request path too."""
    with start_server(make_settings(es_url, tmp_path_factory.mktemp("fuzz"), audit="on")) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(audited: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=audited.base_url, timeout=60) as c:
        seed(c)
        yield c


def test_openapi_lists_every_type_and_interaction(http: httpx.Client) -> None:
    doc = http.get(http.base_url.join("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert "post" in doc["paths"]["/Patient"] and "get" in doc["paths"]["/Patient"]
    assert {"get", "put", "patch", "delete"} <= set(doc["paths"]["/DocumentReference/{id}"])
    names = {p["name"] for p in doc["paths"]["/DocumentReference"]["get"]["parameters"]}
    assert {"subject", "status", "_has", "_count", "_include"} <= names
    assert doc["components"]["schemas"]["Patient"]["properties"]["resourceType"]["enum"] == ["Patient"]
    audit = {p["name"] for p in doc["paths"]["/AuditEvent"]["get"]["parameters"]}  # served from the audit table
    assert {"patient", "date", "agent", "_count"} <= audit and "post" not in doc["paths"]["/AuditEvent"]


def test_openapi_is_built_once_per_registry_and_base() -> None:
    """Derived from fixed registries only, so served as bytes built once (not rebuilt on every request)."""
    registry = SearchParameterRegistry.load_default()
    first = openapi_json(registry, "http://a.example/fhir")
    assert openapi_json(registry, "http://a.example/fhir") is first
    assert first == orjson.dumps(openapi_document(registry, "http://a.example/fhir"))
    assert orjson.loads(openapi_json(registry, "http://b.example/fhir"))["servers"] == [
        {"url": "http://b.example/fhir"}]


@FUZZ_SETTINGS
@given(req=requests())
def test_fhir_shaped_requests_never_5xx(http: httpx.Client, req: FuzzRequest) -> None:
    resp = send(http, req)
    if resp is not None:
        found = problem_of(resp)
        assert found is None, f"{found}\nrequest: {req.describe()}"


def test_schemathesis_on_openapi(http: httpx.Client) -> None:
    """Every operation of /openapi.json, a few generated cases each, through schemathesis' own strategies."""
    base = str(http.base_url).rstrip("/")
    schema = schemathesis.openapi.from_url(str(http.base_url.join("/openapi.json")))
    per_operation = max(2, EXAMPLES // 50)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]

        @settings(max_examples=per_operation, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            resp = case.call(base_url=base, timeout=60)
            found = problem(resp.status_code, resp.headers.get("content-type", [""])[0], resp.content, case.method)
            if found is not None:
                failures.append(f"{case.method} {case.formatted_path} query={case.query} body={case.body!r:.300}"
                                f" -> {found}")

        check()
    assert not failures, "\n".join(failures[:10])
