"""The CapabilityStatement and ``/openapi.json`` say exactly what works: every item they list is tried over HTTP.

Against a server with authentication and audit off (the default ``server``) and one with the audit trail on; the
authentication side (SMART configuration, security, bearer scheme) is in ``tests/security/test_capabilities_http.py``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from search.params.token import code_systems, value_sets
from tests.conftest import make_settings
from tests.harness import RunningServer, start_server

FHIR_JSON = {"Content-Type": "application/fhir+json"}
FHIR_XML = "application/fhir+xml"
SP = "http://terminology.hl7.org/CodeSystem/"
VALIDATE = "http://hl7.org/fhir/OperationDefinition/Resource-validate"


def samples(tag: str) -> dict[str, dict[str, Any]]:
    """A valid resource of every type the server stores (a new type must be added here: the test says so)."""
    return {
        "Patient": {"resourceType": "Patient", "name": [{"family": f"Cap{tag}"}]},
        "DocumentReference": {"resourceType": "DocumentReference", "status": "current",
                              "content": [{"attachment": {"contentType": "text/plain", "url": "http://x/d"}}]},
        "Immunization": {"resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": "x"},
                         "patient": {"display": "someone"}, "occurrenceDateTime": "2024-01-01"},
        "List": {"resourceType": "List", "status": "current", "mode": "working"},
        "Binary": {"resourceType": "Binary", "contentType": "text/plain", "data": "aGVsbG8="},
        "Consent": {"resourceType": "Consent", "status": "active",
                    "scope": {"coding": [{"system": SP + "consentscope", "code": "patient-privacy"}]},
                    "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                    "policyRule": {"coding": [{"system": SP + "v3-ActCode", "code": "OPTOUT"}]}},
    }


@pytest.fixture(scope="module")
def audited(es_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with start_server(make_settings(es_url, tmp_path_factory.mktemp("cap-audit"), audit="on")) as srv:
        yield srv


def _statement(client: httpx.Client) -> dict[str, Any]:
    resp = client.get("/metadata")
    assert resp.status_code == 200, resp.text
    cs: dict[str, Any] = resp.json()
    return cs


def _resources(cs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["type"]: r for r in cs["rest"][0]["resource"]}


def _interactions(resource: dict[str, Any]) -> set[str]:
    return {i["code"] for i in resource.get("interaction", [])}


def _modifiers(param: dict[str, Any]) -> list[str]:
    """The modifiers a ``searchParam`` entry lists (``modifiers :a, :b; ...`` in its documentation)."""
    m = re.search(r"modifiers ([^;]*)", param.get("documentation", ""))
    return [] if m is None else re.findall(r":([A-Za-z][A-Za-z-]*)", m.group(1))


# -- every listed interaction and operation is routed and works -------------------------------------------------

def _try_interactions(client: httpx.Client, type_: str, codes: set[str], sample: dict[str, Any]) -> dict[str, int]:
    """Each interaction of ``codes`` on a fresh instance of ``type_``: its status."""
    out: dict[str, int] = {}
    created = client.post(f"/{type_}", json=sample, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    id_ = created.json()["id"]
    calls = {
        "create": lambda: created,
        "read": lambda: client.get(f"/{type_}/{id_}"),
        "vread": lambda: client.get(f"/{type_}/{id_}/_history/1"),
        "update": lambda: client.put(f"/{type_}/{id_}", json={**sample, "id": id_}, headers=FHIR_JSON),
        "patch": lambda: client.patch(f"/{type_}/{id_}", json=[{"op": "test", "path": "/id", "value": id_}],
                                      headers={"Content-Type": "application/json-patch+json"}),
        "history-instance": lambda: client.get(f"/{type_}/{id_}/_history"),
        "history-type": lambda: client.get(f"/{type_}/_history"),
        "search-type": lambda: client.get(f"/{type_}", params={"_id": id_}),
        "delete": lambda: client.delete(f"/{type_}/{id_}"),  # last
    }
    assert codes <= set(calls), codes - set(calls)
    for code in (c for c in calls if c in codes):
        out[code] = calls[code]().status_code
    return out


def test_every_listed_interaction_is_routed_and_succeeds(client: httpx.Client) -> None:
    cs = _statement(client)
    resources = _resources(cs)
    stored = {t: r for t, r in resources.items() if _interactions(r)}
    examples = samples(uuid.uuid4().hex[:8])
    assert set(stored) == set(examples), "a stored type without a sample here: add one"
    for type_, resource in stored.items():
        statuses = _try_interactions(client, type_, _interactions(resource), examples[type_])
        failed = {code: s for code, s in statuses.items() if not 200 <= s < 300}
        assert failed == {}, type_
    system = {i["code"] for i in cs["rest"][0]["interaction"]}
    assert system == {"transaction", "batch", "history-system"}
    for kind in ("transaction", "batch"):
        resp = client.post("/", json={"resourceType": "Bundle", "type": kind, "entry": []}, headers=FHIR_JSON)
        assert resp.status_code == 200, resp.text
    assert client.get("/_history").status_code == 200
    assert [op["name"] for op in cs["rest"][0]["operation"]] == ["versions"]
    assert client.get("/$versions").status_code == 200


def test_validate_is_listed_on_every_type_and_works_there(client: httpx.Client) -> None:
    """$validate on each stored type (type and instance level, GET and POST), and on the types validated without
    being stored: a Bundle (ITI-65) is checked and nothing is kept."""
    resources = _resources(_statement(client))
    examples = samples(uuid.uuid4().hex[:8])
    assert {"Bundle", "Practitioner", "Organization"} <= set(resources)
    for type_, resource in resources.items():
        assert {"name": "validate", "definition": VALIDATE} in resource["operation"], type_
        body = examples.get(type_, {"resourceType": type_})
        if type_ == "Bundle":
            body = {"resourceType": "Bundle", "type": "collection"}
        resp = client.post(f"/{type_}/$validate", json=body, headers=FHIR_JSON)
        assert resp.status_code == 200 and resp.json()["resourceType"] == "OperationOutcome", (type_, resp.text)
        if type_ in examples:
            id_ = client.post(f"/{type_}", json=body, headers=FHIR_JSON).json()["id"]
            stored = client.get(f"/{type_}/{id_}/$validate")
            assert stored.status_code == 200 and stored.json()["resourceType"] == "OperationOutcome", stored.text
        else:
            assert not _interactions(resource) and "Not stored" in resource["documentation"]
    marker = uuid.uuid4().hex
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:" + str(uuid.uuid4()), "request": {"method": "POST", "url": "Patient"},
        "resource": {"resourceType": "Patient", "name": [{"family": marker}]}}]}
    verdict = client.post("/Bundle/$validate", json=bundle, headers=FHIR_JSON)
    assert verdict.status_code == 200 and verdict.json()["resourceType"] == "OperationOutcome"
    found = client.get("/Patient", params={"family": marker, "_total": "accurate"}).json()
    assert found["total"] == 0  # validated, never stored
    assert client.get("/Bundle").status_code == 404  # and Bundle is not a stored type


# -- the statement's flags -----------------------------------------------------------------------------------------

def test_conditional_read_is_full_support_and_both_headers_answer_304(client: httpx.Client) -> None:
    resources = _resources(_statement(client))
    for resource in resources.values():
        if "read" in _interactions(resource):
            assert resource["conditionalRead"] == "full-support", resource["type"]
    for type_, sample in samples(uuid.uuid4().hex[:8]).items():
        id_ = client.post(f"/{type_}", json=sample, headers=FHIR_JSON).json()["id"]
        accept = {"Accept": "application/fhir+json"}
        assert client.get(f"/{type_}/{id_}", headers={**accept, "If-None-Match": 'W/"1"'}).status_code == 304
        later = {**accept, "If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}
        assert client.get(f"/{type_}/{id_}", headers=later).status_code == 304


def test_patch_formats_are_listed_and_each_one_patches(client: httpx.Client) -> None:
    cs = _statement(client)
    assert cs["patchFormat"] == ["application/json-patch+json", "application/fhir+json", FHIR_XML]
    pid = client.post("/Patient", json=samples("p")["Patient"], headers=FHIR_JSON).json()["id"]
    bodies = {
        "application/json-patch+json": b'[{"op": "add", "path": "/gender", "value": "female"}]',
        "application/fhir+json": b'{"resourceType": "Parameters", "parameter": [{"name": "operation", "part": ['
                                 b'{"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": '
                                 b'"Patient.gender"}, {"name": "value", "valueCode": "male"}]}]}',
        FHIR_XML: b'<Parameters xmlns="http://hl7.org/fhir"><parameter><name value="operation"/><part><name '
                  b'value="type"/><valueCode value="replace"/></part><part><name value="path"/><valueString '
                  b'value="Patient.gender"/></part><part><name value="value"/><valueCode value="other"/></part>'
                  b'</parameter></Parameters>',
    }
    assert set(bodies) == set(cs["patchFormat"])
    for media, body in bodies.items():
        resp = client.patch(f"/Patient/{pid}", content=body,
                            headers={"Content-Type": media, "Accept": "application/fhir+json"})
        assert resp.status_code == 200, (media, resp.text)
    assert client.get(f"/Patient/{pid}").json()["gender"] == "other"


def test_conditional_writes_and_update_as_create_are_stated_and_work(client: httpx.Client) -> None:
    patient = _resources(_statement(client))["Patient"]
    assert patient["conditionalCreate"] is True and patient["conditionalUpdate"] is True
    assert patient["conditionalDelete"] == "single" and patient["updateCreate"] is True
    tag = uuid.uuid4().hex[:8]
    ident = {"system": "urn:cap", "value": tag}
    body = {"resourceType": "Patient", "identifier": [ident]}
    first = client.post("/Patient", json=body, headers={**FHIR_JSON, "If-None-Exist": f"identifier=urn:cap|{tag}"})
    again = client.post("/Patient", json=body, headers={**FHIR_JSON, "If-None-Exist": f"identifier=urn:cap|{tag}"})
    assert first.status_code == 201 and again.status_code == 200
    updated = client.put(f"/Patient?identifier=urn:cap|{tag}", json={**body, "gender": "male"}, headers=FHIR_JSON)
    assert updated.status_code == 200 and updated.json()["id"] == first.json()["id"]
    assert client.delete(f"/Patient?identifier=urn:cap|{tag}").status_code in (200, 204)
    new_id = f"cap-{tag}"
    assert client.put(f"/Patient/{new_id}", json={**body, "id": new_id}, headers=FHIR_JSON).status_code == 201


def test_formats_and_version(client: httpx.Client) -> None:
    cs = _statement(client)
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["format"] == ["application/fhir+json", "json", FHIR_XML, "xml"]
    assert client.get("/metadata", params={"_format": "xml"}).headers["content-type"].startswith(FHIR_XML)


# -- AuditEvent: served and listed only with the audit trail on -------------------------------------------------

def test_audit_event_is_neither_listed_nor_served_with_audit_off(client: httpx.Client) -> None:
    assert "AuditEvent" not in _resources(_statement(client))
    for path in ("/AuditEvent", "/AuditEvent/x", "/AuditEvent/x/_history/1"):
        resp = client.get(path)
        assert resp.status_code == 404 and "not supported" in resp.text, path
    doc = httpx.get(str(client.base_url).rsplit("/fhir", 1)[0] + "/openapi.json").json()
    assert not [p for p in doc["paths"] if p.startswith("/AuditEvent")]


def test_audit_event_is_listed_and_served_with_audit_on(audited: RunningServer) -> None:
    with httpx.Client(base_url=audited.base_url, timeout=30) as c:
        audit = _resources(_statement(c))["AuditEvent"]
        assert _interactions(audit) == {"read", "vread", "search-type"}
        c.get("/Patient")  # something to trace
        assert audited.ctx.audit is not None and audited.ctx.audit.wait_applied()
        found = c.get("/AuditEvent", params={"_count": "1"})
        assert found.status_code == 200, found.text
        id_ = found.json()["entry"][0]["resource"]["id"]
        assert c.get(f"/AuditEvent/{id_}").status_code == 200
        assert c.get(f"/AuditEvent/{id_}/_history/1").status_code == 200
        assert audit["conditionalRead"] == "full-support"
        assert c.get(f"/AuditEvent/{id_}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
        assert c.post("/AuditEvent/$validate", json={"resourceType": "AuditEvent"},
                      headers=FHIR_JSON).status_code == 200
        doc = httpx.get(audited.base_url.rsplit("/fhir", 1)[0] + "/openapi.json").json()
        assert "/AuditEvent" in doc["paths"]


# -- search modifiers: per parameter, exactly what the compiler accepts -------------------------------------------

def _value_for(param_type: str, modifier: str) -> str:
    """A well-formed value for ``modifier`` (so a 400 can only mean the modifier itself is refused)."""
    system = next(iter(code_systems()))
    if modifier == "missing":
        return "true"
    if modifier in ("in", "not-in"):
        return next(iter(value_sets()))
    if modifier in ("below", "above"):
        return f"{system}|{next(iter(code_systems()[system]))}" if param_type == "token" else "http://x.org/a"
    if modifier == "of-type":
        return f"{SP}v2-0203|MR|123"
    if modifier == "identifier":
        return "urn:x|1"
    return "abc"


def test_listed_modifiers_are_per_parameter(client: httpx.Client) -> None:
    params = {p["name"]: p for p in _resources(_statement(client))["Patient"]["searchParam"]}
    assert _modifiers(params["identifier"]) == ["not", "of-type", "text", "missing"]
    assert "of-type" not in _modifiers(params["gender"]) and "text" not in _modifiers(params["gender"])
    assert {"in", "not-in", "below", "above", "not"} <= set(_modifiers(params["gender"]))
    assert _modifiers(params["telecom"]) == ["not", "missing"]
    assert _modifiers(params["family"]) == ["contains", "exact", "text", "missing"]
    assert _modifiers(params["birthdate"]) == ["missing"]
    assert _modifiers(params["_id"]) == ["not", "missing"]
    assert _modifiers(params["organization"]) == ["identifier", "text", "Organization", "missing"]
    assert _modifiers(params["_text"]) == ["missing"]


def test_every_listed_modifier_is_accepted_by_the_search(client: httpx.Client) -> None:
    refused: list[str] = []
    tried = 0
    for type_, resource in _resources(_statement(client)).items():
        for param in resource.get("searchParam", []):
            if param["type"] == "special":
                continue
            for modifier in _modifiers(param):
                name = f"{param['name']}:{modifier}"
                resp = client.get(f"/{type_}", params={name: _value_for(param["type"], modifier), "_count": "0"})
                tried += 1
                if resp.status_code != 200:
                    refused.append(f"{type_}?{name}: {resp.status_code} {resp.text[:200]}")
    assert refused == [] and tried > 300


# -- /openapi.json -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def openapi(server: RunningServer) -> dict[str, Any]:
    resp = httpx.get(server.base_url.rsplit("/fhir", 1)[0] + "/openapi.json", timeout=30)
    assert resp.status_code == 200
    doc: dict[str, Any] = resp.json()
    return doc


def _header_names(operation: dict[str, Any]) -> set[str]:
    return {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}


def test_openapi_bodies_and_answers_in_json_and_xml(openapi: dict[str, Any]) -> None:
    create = openapi["paths"]["/Patient"]["post"]
    assert {"application/fhir+json", FHIR_XML} <= set(create["requestBody"]["content"])
    assert {"application/fhir+json", FHIR_XML} <= set(openapi["paths"]["/Patient/{id}"]["get"]["responses"]["200"][
        "content"])
    patch = openapi["paths"]["/Patient/{id}"]["patch"]["requestBody"]["content"]
    assert set(patch) == {"application/json-patch+json", "application/fhir+json", FHIR_XML}


def test_openapi_raw_binary(client: httpx.Client, openapi: dict[str, Any]) -> None:
    raw = {"type": "string", "format": "binary"}
    assert openapi["paths"]["/Binary"]["post"]["requestBody"]["content"]["*/*"]["schema"] == raw
    assert openapi["paths"]["/Binary/{id}"]["get"]["responses"]["200"]["content"]["*/*"]["schema"] == raw
    pdf = b"%PDF-1.4 capabilities"
    bid = client.post("/Binary", content=pdf, headers={"Content-Type": "application/pdf"}).json()["id"]
    assert client.get(f"/Binary/{bid}").content == pdf


def test_openapi_headers(openapi: dict[str, Any]) -> None:
    paths = openapi["paths"]
    assert {"If-None-Match", "If-Modified-Since"} <= _header_names(paths["/Patient/{id}"]["get"])
    assert {"If-Match", "Prefer"} <= _header_names(paths["/Patient/{id}"]["put"])
    assert {"If-Match"} <= _header_names(paths["/Patient/{id}"]["delete"])
    assert {"If-Match", "Prefer"} <= _header_names(paths["/Patient/{id}"]["patch"])
    assert {"If-None-Exist", "Prefer"} <= _header_names(paths["/Patient"]["post"])
    assert {"Prefer"} <= _header_names(paths["/Patient"]["get"])
    assert {"Prefer"} <= _header_names(paths["/"]["post"])


def test_openapi_operations(openapi: dict[str, Any]) -> None:
    paths = openapi["paths"]
    assert {"get", "post"} <= set(paths["/Patient/{id}/$validate"])
    assert "post" in paths["/Bundle/$validate"] and "/Bundle" not in paths
    assert "get" in paths["/$versions"]
    assert "securitySchemes" not in openapi["components"] and "security" not in openapi  # authentication off
